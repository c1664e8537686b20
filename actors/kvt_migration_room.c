/*  =========================================================================
    kvt_migration_room - making room in a tier: free slots, demoting its
    least wanted blocks down the hierarchy when it is short

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_migration_int.h"

//  An ensure job asks the tier actor for free slots; when the tier is
//  short it demotes victims (chosen and pinned by the prefix index) one
//  tier down, round after round, and asks again. A demotion gets room one
//  tier down the same way, so a full host tier cascades to disk, and the
//  last tier drops its victims. With overlap_upkeep = 2 an ensure job that
//  finds every victim in motion waits for the running upkeep's end
//  (kvt_migration.c): the room it is making is the room the job needs.

static void
s_unpin (self_t *self, const uint64_t *hashes, size_t count)
{
    kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                  hashes, count, "IDX_UNPIN");
}

//  --------------------------------------------------------------------------
//  ensure: get 'want' free slots in 'tier', demoting from it when short.



static void
s_ensure_demoted (self_t *self, void *arg, int rc)
{
    kvt_migration_ensure_t *job = (kvt_migration_ensure_t *) arg;
    if (rc && rc != -ENOSPC) {
        job->cont (self, job->cont_arg, rc);
        return;
    }
    if (rc == -ENOSPC && !job->for_upkeep && ++job->rounds <= 1024) {
        //  No victim left but the upkeep's, in motion (overlap_upkeep = 2):
        //  their slots are free once it ends; try again then, or now if it
        //  ended since this job last asked the tier
        if (self->upkeep_running) {
            zlist_append (self->upkeep_waiters, job);
            kvt_actor_count (self->actor, "waits_for_upkeep", 1);
            return;
        }
        if (self->upkeeps_ended != job->upkeeps_seen) {
            kvt_migration_ensure_start (self, job);
            return;
        }
    }
    if (rc == -ENOSPC || ++job->rounds > 1024) {
        //  Everything is pinned: for a job an error (the upkeep then drops
        //  its victims instead, as expected)
        if (!job->for_upkeep)
            kvt_log_info ("migration: %s short of %zu of %zu slots, every block pinned "
                          "(%d rounds)", kvt_migration_tier_actor [job->tier],
                          job->want - job->have, job->want, job->rounds);
        job->cont (self, job->cont_arg, -ENOSPC);
        return;
    }
    kvt_migration_ensure_start (self, job);
}

static void
s_ensure_allocated (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    kvt_migration_ensure_t *job = (kvt_migration_ensure_t *) arg;
    if (rc) {
        job->cont (self, job->cont_arg, rc);
        return;
    }
    size_t count;
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_TIER_ALLOC_OK_SLOTS, &count);
    for (size_t k = 0; k < count && job->have < job->want; k++)
        job->slots [job->have++] = slots [k];
    if (job->tier == KVT_TIER_HOST)     //  Shadows are the first room to give up
        job->have += kvt_migration_shadow_reclaim (self, job->slots + job->have,
                                                   job->want - job->have);
    if (job->have == job->want)
        job->cont (self, job->cont_arg, 0);
    else {
        //  Demote in batches the tier below can take in one go (a quarter
        //  of it), so a request larger than the next tier still fits by
        //  cascading batches down the hierarchy, round after round
        size_t batch = job->want - job->have;
        if (job->tier < KVT_TIER_NVME) {
            size_t below = self->capacity [job->tier + 1] / 4;
            if (batch > below)
                batch = below? below: 1;
        }
        kvt_migration_demote (self, job->tier, batch, job->for_upkeep, NULL, s_ensure_demoted,
                              job);
    }
}

void
kvt_migration_ensure_start (self_t *self, kvt_migration_ensure_t *job)
{
    job->upkeeps_seen = self->upkeeps_ended;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_TIER_ALLOC);
    kvt_msg_set_u64 (msg, KVT_TIER_ALLOC_COUNT, job->want - job->have);
    kvt_actor_call (self->actor, kvt_migration_tier_actor [job->tier], &msg, s_ensure_allocated, job);
}

//  Start an ensure job; the continuation owns 'job' afterwards (it must
//  take job->slots and free the job with kvt_migration_ensure_free).
kvt_migration_ensure_t *
kvt_migration_ensure_new (int tier, size_t want, kvt_migration_cont_fn *cont, void *arg)
{
    kvt_migration_ensure_t *job = (kvt_migration_ensure_t *) kvt_zmalloc (sizeof (kvt_migration_ensure_t));
    job->tier = tier;
    job->want = want;
    job->slots = kvt_migration_u64s (want);
    job->cont = cont;
    job->cont_arg = arg;
    return job;
}

kvt_migration_ensure_t *
kvt_migration_ensure (self_t *self, int tier, size_t want, kvt_migration_cont_fn *cont, void *arg)
{
    kvt_migration_ensure_t *job = kvt_migration_ensure_new (tier, want, cont, arg);
    if (want == 0) {
        cont (self, arg, 0);
        return job;
    }
    kvt_migration_ensure_start (self, job);
    return job;
}

//  Give back the slots an ensure job got (on failure) and free the job.
void
kvt_migration_ensure_free (self_t *self, kvt_migration_ensure_t **job_p, bool release_slots)
{
    kvt_migration_ensure_t *job = *job_p;
    if (!job)
        return;
    if (release_slots)
        kvt_migration_free_slots (self, job->tier, job->slots, job->have);
    free (job->slots);
    free (job);
    *job_p = NULL;
}

//  --------------------------------------------------------------------------
//  demote: move up to 'count' least-recently-used unpinned blocks of
//  'tier' one tier down (off the last tier: drop them).

typedef struct {
    int tier;                       //  Where the victims are
    size_t count;                   //  How many were asked
    uint64_t *hashes;               //  Victims (pinned by IDX_VICTIMS)
    uint64_t *slots;                //  Their slots in 'tier'
    size_t victims;                 //  Entries in hashes/slots
    size_t from_shadow;             //  Victims moved into their shadows (write-through)
    kvt_migration_ensure_t *room;               //  Slots one tier down
    size_t *moved_out;              //  If set, receives 'victims' on success
    bool for_upkeep;                //  Part of the upkeep (its room below never waits for it)
    kvt_migration_cont_fn *cont;                //  Called once with the outcome
    void *cont_arg;                 //  Its argument
} s_demote_t;

static void s_demote_drop (self_t *self, s_demote_t *job);
static void s_demote_rest (self_t *self, void *arg, int rc);

static void
s_demote_finish (self_t *self, s_demote_t *job, int rc)
{
    kvt_migration_cont_fn *cont = job->cont;
    void *cont_arg = job->cont_arg;
    kvt_actor_mark (self->actor, job->tier == KVT_TIER_GPU? "at_demote_gpu_end"
                                                          : "at_demote_host_end");
    if (rc == 0 && job->moved_out)
        *job->moved_out = job->victims + job->from_shadow;
    kvt_migration_ensure_free (self, &job->room, rc != 0);
    free (job->hashes);
    free (job->slots);
    free (job);
    cont (self, cont_arg, rc);
}

//  After the index has the new locations: unpin, free the old slots.
static void
s_demote_moved (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    (void) reply_p;
    s_demote_t *job = (s_demote_t *) arg;
    if (kvt_migration_await_late (self, rc, s_demote_moved, job))
        return;
    s_unpin (self, job->hashes, job->victims);
    if (rc) {
        s_demote_finish (self, job, rc);
        return;
    }
    kvt_migration_free_slots (self, job->tier, job->slots, job->victims);
    kvt_actor_count (self->actor, job->tier == KVT_TIER_GPU? "demoted_gpu_to_host"
                                                           : "demoted_host_to_nvme", job->victims);
    if (job->tier == KVT_TIER_HOST)
        kvt_actor_count (self->actor, "bytes_host_to_nvme",
                         kvt_migration_cold_bytes (self, job->victims));
    kvt_migration_ensure_free (self, &job->room, false);
    s_demote_finish (self, job, 0);
}

static void
s_demote_update_index (self_t *self, s_demote_t *job, const uint64_t *new_slots)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MOVE);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_HASHES, job->hashes, job->victims);
    kvt_msg_set_u64 (msg, KVT_IDX_MOVE_TIER, (uint64_t) job->tier + 1);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_SLOTS, new_slots, job->victims);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_demote_moved, job);
}

//  tier_nvme wrote (or failed to write) the host blocks.
static void
s_demote_written (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_demote_t *job = (s_demote_t *) arg;
    kvt_actor_mark (self->actor, "at_demote_written");
    if (rc) {
        //  The disk tier failed the whole write: forget the blocks rather
        //  than keep the host tier full
        kvt_actor_count (self->actor, "nvme_write_failures", job->victims);
        kvt_migration_ensure_free (self, &job->room, true);
        s_demote_drop (self, job);
        return;
    }
    size_t failed_count;
    const uint64_t *failed = kvt_msg_array (*reply_p, KVT_TIER_WRITE_OK_FAILED, &failed_count);
    if (failed_count) {
        //  Blocks that did not reach the disk (ENOSPC, EIO) are forgotten:
        //  the index drops them and both their slots are freed
        kvt_actor_count (self->actor, "nvme_write_failures", failed_count);
        uint64_t *lost = kvt_migration_u64s (job->victims);
        for (size_t k = 0; k < failed_count; k++)
            if (failed [k] < job->victims)
                lost [failed [k]] = 1;
        uint64_t *gone = kvt_migration_u64s (failed_count), *host_slots = kvt_migration_u64s (failed_count);
        uint64_t *disk_slots = kvt_migration_u64s (failed_count);
        size_t kept = 0, gone_count = 0;
        for (size_t k = 0; k < job->victims; k++) {
            if (lost [k]) {
                gone [gone_count] = job->hashes [k];
                host_slots [gone_count] = job->slots [k];
                disk_slots [gone_count++] = job->room->slots [k];
                continue;
            }
            job->hashes [kept] = job->hashes [k];
            job->slots [kept] = job->slots [k];
            job->room->slots [kept] = job->room->slots [k];
            kept++;
        }
        kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES,
                      gone, gone_count, "IDX_REMOVE");
        kvt_migration_free_slots (self, KVT_TIER_HOST, host_slots, gone_count);
        kvt_migration_free_slots (self, KVT_TIER_NVME, disk_slots, gone_count);
        kvt_actor_count (self->actor, "dropped", gone_count);
        job->victims = kept;
        job->room->have = kept;
        free (lost);
        free (gone);
        free (host_slots);
        free (disk_slots);
        if (kept == 0) {
            s_demote_finish (self, job, 0);
            return;
        }
    }
    s_demote_update_index (self, job, job->room->slots);
}

//  The victims' bytes are in their host slots: update the index. If the
//  copy failed (logged and counted by kvt_migration_copy_blocks), the host slots hold
//  nothing valid: forget the victims rather than point the index at them.
static void
s_demote_copied (self_t *self, void *arg, int rc)
{
    s_demote_t *job = (s_demote_t *) arg;
    if (rc) {
        kvt_migration_ensure_free (self, &job->room, true);
        s_demote_drop (self, job);
        return;
    }
    s_demote_update_index (self, job, job->room->slots);
}

//  Room one tier down is ready: move the bytes. If the tier below cannot
//  take them (full of pinned blocks, or the disk tier is disabled), drop
//  them instead: a cache may always forget, and a full lower tier must
//  never stop the GPU tier from making room.
static void
s_demote_have_room (self_t *self, void *arg, int rc)
{
    s_demote_t *job = (s_demote_t *) arg;
    if (rc == -ENOSPC) {
        kvt_migration_ensure_free (self, &job->room, true);
        kvt_actor_count (self->actor, "dropped_no_room_below", job->victims);
        s_demote_drop (self, job);
        return;
    }
    if (rc) {
        s_unpin (self, job->hashes, job->victims);
        s_demote_finish (self, job, rc);
        return;
    }
    if (job->tier == KVT_TIER_GPU)
        kvt_migration_copy_blocks (self, KVT_TIER_GPU, job->slots, KVT_TIER_HOST, job->room->slots,
                       job->victims, s_demote_copied, job);
    else {
        kvt_actor_mark (self->actor, "at_demote_write_out");
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_TIER_WRITE);
        kvt_msg_set_array (msg, KVT_TIER_WRITE_SLOTS, job->room->slots, job->victims);
        kvt_msg_set_array (msg, KVT_TIER_WRITE_HASHES, job->hashes, job->victims);
        kvt_msg_set_array (msg, KVT_TIER_WRITE_SRC_SLOTS, job->slots, job->victims);
        kvt_actor_call (self->actor, "tier_nvme", &msg, s_demote_written, job);
    }
}

//  Dropped off the last tier: the index forgot them, free their slots.
static void
s_demote_dropped (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    (void) reply_p;
    s_demote_t *job = (s_demote_t *) arg;
    if (kvt_migration_await_late (self, rc, s_demote_dropped, job))
        return;
    if (rc == 0) {
        kvt_migration_free_slots (self, job->tier, job->slots, job->victims);
        kvt_actor_count (self->actor, "dropped", job->victims);
    }
    s_demote_finish (self, job, rc);
}

//  Forget the victims: the index drops them, then their slots are freed.
static void
s_demote_drop (self_t *self, s_demote_t *job)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_REMOVE);
    kvt_msg_set_array (msg, KVT_IDX_REMOVE_HASHES, job->hashes, job->victims);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_demote_dropped, job);
}

static void
s_demote_have_victims (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_demote_t *job = (s_demote_t *) arg;
    if (kvt_migration_await_late (self, rc, s_demote_have_victims, job))
        return;
    if (rc) {
        s_demote_finish (self, job, rc);
        return;
    }
    size_t count;
    const uint64_t *hashes = kvt_msg_array (*reply_p, KVT_IDX_VICTIMS_OK_HASHES, &count);
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_IDX_VICTIMS_OK_SLOTS, NULL);
    if (count == 0) {
        s_demote_finish (self, job, -ENOSPC);       //  All pinned
        return;
    }
    job->victims = count;
    job->hashes = kvt_migration_u64s (count);
    job->slots = kvt_migration_u64s (count);
    memcpy (job->hashes, hashes, count * sizeof (uint64_t));
    memcpy (job->slots, slots, count * sizeof (uint64_t));
    if (job->tier == KVT_TIER_HOST && self->disk_admission != KVT_MIGRATION_DISK_ALL) {
        //  Write on second hit: a block no request has found cached since
        //  it was made (reused), and, for predicted, that did not come back
        //  after being dropped (offers), is forgotten instead of written to
        //  disk. Most blocks are never reused; writing them all costs disk
        //  bandwidth and wear for nothing
        const uint64_t *reuses = kvt_msg_array (*reply_p, KVT_IDX_VICTIMS_OK_REUSES, NULL);
        const uint64_t *offers = kvt_msg_array (*reply_p, KVT_IDX_VICTIMS_OK_OFFERS, NULL);
        bool predicted = self->disk_admission == KVT_MIGRATION_DISK_PREDICTED;
        uint64_t *gone = kvt_migration_u64s (count), *gone_slots = kvt_migration_u64s (count);
        size_t kept = 0, gone_count = 0;
        for (size_t k = 0; k < count; k++) {
            if (predicted && reuses [k] == 0 && offers [k] > 0)
                kvt_actor_count (self->actor, "disk_admitted_by_offer", 1);
            if (reuses [k] == 0 && !(predicted && offers [k] > 0)) {
                gone [gone_count] = job->hashes [k];
                gone_slots [gone_count++] = job->slots [k];
                continue;
            }
            job->hashes [kept] = job->hashes [k];
            job->slots [kept++] = job->slots [k];
        }
        kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES,
                      gone, gone_count, "IDX_REMOVE");
        kvt_migration_free_slots (self, KVT_TIER_HOST, gone_slots, gone_count);
        kvt_actor_count (self->actor, "disk_declined_unreused", gone_count);
        free (gone);
        free (gone_slots);
        job->victims = kept;
        if (kept == 0) {
            s_demote_finish (self, job, 0);
            return;
        }
    }
    if (job->tier == KVT_TIER_GPU)  //  Victims with a shadow need neither room nor a copy
        kvt_migration_shadow_demote (self, job->hashes, job->slots, &job->victims,
                                     &job->from_shadow, s_demote_rest, job);
    else
        s_demote_rest (self, job, 0);
}

//  The victims left (without a shadow) go one tier down, or off the last.
static void
s_demote_rest (self_t *self, void *arg, int rc)
{
    s_demote_t *job = (s_demote_t *) arg;
    (void) rc;
    if (job->victims == 0)
        s_demote_finish (self, job, 0);
    else
    if (job->tier == KVT_TIER_NVME)
        s_demote_drop (self, job);
    else {
        job->room = kvt_migration_ensure (self, job->tier + 1, job->victims, s_demote_have_room, job);
        if (job->room)              //  Its first answer comes from the loop, later
            job->room->for_upkeep = job->for_upkeep;
    }
}

void
kvt_migration_demote (self_t *self, int tier, size_t count, bool for_upkeep, size_t *moved_out,
                      kvt_migration_cont_fn *cont, void *arg)
{
    kvt_actor_mark (self->actor, tier == KVT_TIER_GPU? "at_demote_gpu_start"
                                                      : "at_demote_host_start");
    s_demote_t *job = (s_demote_t *) kvt_zmalloc (sizeof (s_demote_t));
    job->tier = tier;
    job->count = count;
    job->for_upkeep = for_upkeep;
    job->moved_out = moved_out;
    job->cont = cont;
    job->cont_arg = arg;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_VICTIMS);
    kvt_msg_set_u64 (msg, KVT_IDX_VICTIMS_TIER, (uint64_t) tier);
    kvt_msg_set_u64 (msg, KVT_IDX_VICTIMS_COUNT, count);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_demote_have_victims, job);
}
