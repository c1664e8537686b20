/*  =========================================================================
    kvt_migration_through - write-through: shadow copies on the host tier

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    With migration/write_through = 1, blocks new on the GPU tier are also
    copied to the host tier at once, in the background, as shadow copies:
    host slots that migration allocates and owns, holding the block's cold
    form, that the prefix index does not know (the block lives on the GPU).
    When the GPU tier later evicts such a block, its demotion is an
    IDX_MOVE to the shadow's slot: no bytes move then, on the eviction
    path. Shadows are the first room the host tier gives up: a host
    allocation that finds the tier full takes shadows' slots (newest
    first, no bytes move) before any host block is demoted to disk, and
    the host watermark counts them as free.
@discuss
    The scheduler sends MIG_WRITE_THROUGH {hashes} after the index
    accepted its computed blocks. The job is background work (the
    prefetch queue): it asks the index where the blocks are (IDX_MATCH
    without pin: no use is counted), takes the free host slots there are
    (never demoting for a shadow: skipped, counted), copies the blocks
    still on the GPU into them and records the shadows.
    A shadow is never stale: blocks are immutable by hash, and a block on
    the GPU tier leaves it only through this actor (demotion, or a drop
    once the host tier has no room, which never happens to a shadowed
    block: its shadow is its room), so its GPU slot is not freed or
    reused while a job of ours copies from it. A shadow leaves the table
    when its block is demoted into it, or when its slot is taken for room.
    A block promoted from the host tier back to the GPU keeps its host
    slot as its shadow (kvt_migration_shadow_adopt: shadows_adopted), so
    a block that goes up and down between the two tiers is copied down
    once, not at each eviction.
    Counters: write_through_copies (blocks shadowed), through_bytes (their
    bytes, also in bytes_gpu_to_host), write_through_skipped (no free host
    slot), write_through_gone (not on the GPU by the job's turn, or
    shadowed already), demotions_from_shadow, shadows_dropped; gauge
    shadows.
@end
*/

#include "kvt_migration_int.h"

//  --------------------------------------------------------------------------
//  The shadow table: hash -> shadow, with the shadows in order of making

//  The table's keys are pointers to a shadow's hash: spread its bits.
static size_t
s_key_hash (const void *key)
{
    return (size_t) ((*(const uint64_t *) key * 0x9e3779b97f4a7c15ULL) >> 17);
}

//  Order two keys (pointers to hashes) by the hashes.
static int
s_key_compare (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y? -1: x > y;
}

//  shadow_order's destructor: it owns the shadows.
static void
s_shadow_destroy (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

void
kvt_migration_shadows_new (self_t *self)
{
    self->shadows = zhashx_new ();
    zhashx_set_key_hasher (self->shadows, s_key_hash);
    zhashx_set_key_comparator (self->shadows, s_key_compare);
    zhashx_set_key_duplicator (self->shadows, NULL);    //  The key lives in the shadow
    zhashx_set_key_destructor (self->shadows, NULL);
    self->shadow_order = zlistx_new ();
    zlistx_set_destructor (self->shadow_order, s_shadow_destroy);
}

void
kvt_migration_shadows_destroy (self_t *self)
{
    zhashx_destroy (&self->shadows);
    zlistx_destroy (&self->shadow_order);
}

size_t
kvt_migration_shadow_count (self_t *self)
{
    return self->shadows? zhashx_size (self->shadows): 0;
}

//  Publish the number of shadows (STATS migration.shadows).
static void
s_shadow_gauge (self_t *self)
{
    kvt_actor_gauge (self->actor, "shadows", kvt_migration_shadow_count (self));
}

//  Record a shadow of 'hash' in host slot 'slot'. False if it has one.
static bool
s_shadow_add (self_t *self, uint64_t hash, uint64_t slot)
{
    if (zhashx_lookup (self->shadows, &hash))
        return false;
    kvt_migration_shadow_t *shadow =
        (kvt_migration_shadow_t *) kvt_zmalloc (sizeof (kvt_migration_shadow_t));
    shadow->hash = hash;
    shadow->slot = slot;
    shadow->handle = zlistx_add_end (self->shadow_order, shadow);
    zhashx_insert (self->shadows, &shadow->hash, shadow);
    return true;
}

//  A block moving host -> GPU with write-through on keeps its host slot
//  as its shadow (see kvt_migration_int.h).
bool
kvt_migration_shadow_adopt (self_t *self, uint64_t hash, uint64_t slot)
{
    if (!self->write_through || !s_shadow_add (self, hash, slot))
        return false;
    kvt_actor_count (self->actor, "shadows_adopted", 1);
    s_shadow_gauge (self);
    return true;
}

//  Take the shadow 'shadow' out of the table (freed); returns its slot.
static uint64_t
s_shadow_take (self_t *self, kvt_migration_shadow_t *shadow)
{
    uint64_t slot = shadow->slot;
    zhashx_delete (self->shadows, &shadow->hash);
    zlistx_delete (self->shadow_order, shadow->handle);
    return slot;
}

size_t
kvt_migration_shadow_reclaim (self_t *self, uint64_t *slots, size_t want)
{
    size_t got = 0;
    while (got < want && kvt_migration_shadow_count (self)) {
        kvt_migration_shadow_t *shadow =
            (kvt_migration_shadow_t *) zlistx_last (self->shadow_order);
        slots [got++] = s_shadow_take (self, shadow);
    }
    if (got) {
        kvt_actor_count (self->actor, "shadows_dropped", got);
        s_shadow_gauge (self);
    }
    return got;
}

//  --------------------------------------------------------------------------
//  Demotion into shadows

typedef struct {
    uint64_t *hashes;               //  Shadowed victims
    uint64_t *gpu_slots;            //  Their GPU slots
    uint64_t *host_slots;           //  Their shadows' host slots
    size_t count;                   //  Entries in each
    size_t *moved;                  //  Grows by 'count' once moved
    kvt_migration_cont_fn *cont;    //  Called once, with 0
    void *cont_arg;                 //  Its argument
} s_shadow_demote_t;

//  The index has them on the host tier: unpin, free the GPU slots. On
//  failure nothing is known to have moved: the blocks stay on the GPU
//  and the shadows' slots are given back.
static void
s_shadow_moved (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    (void) reply_p;
    s_shadow_demote_t *job = (s_shadow_demote_t *) arg;
    kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                              job->hashes, job->count, "IDX_UNPIN");
    if (rc == 0) {
        kvt_migration_free_slots (self, KVT_TIER_GPU, job->gpu_slots, job->count);
        kvt_actor_count (self->actor, "demoted_gpu_to_host", job->count);
        kvt_actor_count (self->actor, "demotions_from_shadow", job->count);
        *job->moved += job->count;
    }
    else {
        kvt_log_warn ("migration: IDX_MOVE into shadows failed: %s", kvt_strerror (rc));
        kvt_actor_count (self->actor, "housekeeping_failures", 1);
        kvt_migration_free_slots (self, KVT_TIER_HOST, job->host_slots, job->count);
    }
    kvt_migration_cont_fn *cont = job->cont;
    void *cont_arg = job->cont_arg;
    free (job->hashes);
    free (job->gpu_slots);
    free (job->host_slots);
    free (job);
    cont (self, cont_arg, 0);
}

void
kvt_migration_shadow_demote (self_t *self, uint64_t *hashes, uint64_t *slots, size_t *count,
                             size_t *moved, kvt_migration_cont_fn *cont, void *arg)
{
    size_t total = *count;
    if (kvt_migration_shadow_count (self) == 0 || total == 0) {
        cont (self, arg, 0);
        return;
    }
    s_shadow_demote_t *job = (s_shadow_demote_t *) kvt_zmalloc (sizeof (s_shadow_demote_t));
    job->hashes = kvt_migration_u64s (total);
    job->gpu_slots = kvt_migration_u64s (total);
    job->host_slots = kvt_migration_u64s (total);
    size_t kept = 0;
    for (size_t k = 0; k < total; k++) {
        kvt_migration_shadow_t *shadow =
            (kvt_migration_shadow_t *) zhashx_lookup (self->shadows, &hashes [k]);
        if (shadow) {
            job->hashes [job->count] = hashes [k];
            job->gpu_slots [job->count] = slots [k];
            job->host_slots [job->count++] = s_shadow_take (self, shadow);
            continue;
        }
        hashes [kept] = hashes [k];
        slots [kept++] = slots [k];
    }
    *count = kept;
    if (job->count == 0) {
        free (job->hashes);
        free (job->gpu_slots);
        free (job->host_slots);
        free (job);
        cont (self, arg, 0);
        return;
    }
    s_shadow_gauge (self);
    job->moved = moved;
    job->cont = cont;
    job->cont_arg = arg;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MOVE);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_HASHES, job->hashes, job->count);
    kvt_msg_set_u64 (msg, KVT_IDX_MOVE_TIER, KVT_TIER_HOST);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_SLOTS, job->host_slots, job->count);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_shadow_moved, job);
}

//  --------------------------------------------------------------------------
//  MIG_WRITE_THROUGH: shadow the blocks still on the GPU

typedef struct {
    uint64_t *hashes;               //  Blocks to shadow
    uint64_t *gpu_slots;            //  Their GPU slots
    uint64_t *host_slots;           //  Host slots got for them
    size_t count;                   //  Entries in hashes and gpu_slots
    size_t got;                     //  Entries in host_slots
} s_through_t;

//  Answer the current MIG_WRITE_THROUGH with 'shadowed'; frees 'job'.
static void
s_through_reply (self_t *self, s_through_t *job, size_t shadowed)
{
    if (job) {
        free (job->hashes);
        free (job->gpu_slots);
        free (job->host_slots);
        free (job);
    }
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_WRITE_THROUGH_OK);
    kvt_msg_set_u64 (reply, KVT_MIG_WRITE_THROUGH_OK_SHADOWED, shadowed);
    kvt_migration_job_reply (self, &reply);
}

//  The bytes are in the host slots (in their cold form): record them.
static void
s_through_copied (self_t *self, void *arg, int rc)
{
    s_through_t *job = (s_through_t *) arg;
    if (rc) {                       //  Logged and counted by the copy
        kvt_migration_free_slots (self, KVT_TIER_HOST, job->host_slots, job->got);
        s_through_reply (self, job, 0);
        return;
    }
    size_t shadowed = 0;
    for (size_t k = 0; k < job->got; k++)
        if (s_shadow_add (self, job->hashes [k], job->host_slots [k]))
            shadowed++;
        else                        //  Shadowed meanwhile: this copy is spare
            kvt_migration_free_slots (self, KVT_TIER_HOST, &job->host_slots [k], 1);
    kvt_actor_count (self->actor, "write_through_copies", shadowed);
    kvt_actor_count (self->actor, "through_bytes", kvt_migration_cold_bytes (self, shadowed));
    s_shadow_gauge (self);
    s_through_reply (self, job, shadowed);
}

//  Free host slots, possibly fewer than asked: shadow that many blocks.
//  A shadow never makes room for itself: a block without a free slot is
//  skipped.
static void
s_through_allocated (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_through_t *job = (s_through_t *) arg;
    size_t count = 0;
    const uint64_t *slots = rc? NULL: kvt_msg_array (*reply_p, KVT_TIER_ALLOC_OK_SLOTS, &count);
    job->got = count < job->count? count: job->count;
    if (job->got)
        memcpy (job->host_slots, slots, job->got * sizeof (uint64_t));
    if (count > job->got)           //  More than asked: not ours to keep
        kvt_migration_free_slots (self, KVT_TIER_HOST, slots + job->got, count - job->got);
    kvt_actor_count (self->actor, "write_through_skipped", job->count - job->got);
    if (job->got == 0) {
        s_through_reply (self, job, 0);
        return;
    }
    //  Our job runs alone, also with overlap_upkeep = 2 (s_next_job holds
    //  a write-through while an upkeep runs): nothing frees or reuses these
    //  GPU slots before the copy is done (the block leaves the GPU only
    //  through us)
    kvt_migration_copy_blocks (self, KVT_TIER_GPU, job->gpu_slots, KVT_TIER_HOST, job->host_slots,
                               job->got, s_through_copied, job);
}

//  Where the blocks are now: those still on the GPU, without a shadow,
//  get one. IDX_MATCH without pin counts no use and changes nothing.
static void
s_through_matched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    (void) arg;
    if (rc) {
        kvt_migration_job_error (self, rc, "write-through lookup failed");
        return;
    }
    size_t asked, matched;
    const uint64_t *hashes = kvt_msg_array (self->current, KVT_MIG_WRITE_THROUGH_HASHES, &asked);
    const uint64_t *tiers = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_TIERS, &matched);
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_SLOTS, NULL);
    s_through_t *job = (s_through_t *) kvt_zmalloc (sizeof (s_through_t));
    job->hashes = kvt_migration_u64s (matched);
    job->gpu_slots = kvt_migration_u64s (matched);
    job->host_slots = kvt_migration_u64s (matched);
    for (size_t k = 0; k < matched && k < asked; k++)
        if (tiers [k] == KVT_TIER_GPU && !zhashx_lookup (self->shadows, &hashes [k])) {
            job->hashes [job->count] = hashes [k];
            job->gpu_slots [job->count++] = slots [k];
        }
    kvt_actor_count (self->actor, "write_through_gone", asked - job->count);
    if (job->count == 0) {
        s_through_reply (self, job, 0);
        return;
    }
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_TIER_ALLOC);
    kvt_msg_set_u64 (msg, KVT_TIER_ALLOC_COUNT, job->count);
    kvt_actor_call (self->actor, "tier_host", &msg, s_through_allocated, job);
}

void
kvt_migration_start_write_through (self_t *self)
{
    size_t count;
    const uint64_t *hashes = kvt_msg_array (self->current, KVT_MIG_WRITE_THROUGH_HASHES, &count);
    if (!self->write_through || count == 0) {
        s_through_reply (self, NULL, 0);
        return;
    }
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MATCH);
    kvt_msg_set_array (msg, KVT_IDX_MATCH_HASHES, hashes, count);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PIN, 0);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_through_matched, NULL);
}
