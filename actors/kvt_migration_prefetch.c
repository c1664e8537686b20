/*  =========================================================================
    kvt_migration_prefetch - staging a waiting request's disk prefix to host

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_migration_int.h"

//  PREFETCH: a request waiting for GPU room has part of its cached prefix
//  on disk. Stage those blocks into the host tier now, so that once the
//  request is admitted its promotion is host -> GPU only. The index claims
//  the blocks (pinned and moving, as victims are: nobody else moves them
//  and IDX_MATCH cuts a prefix there meanwhile); they are read into host
//  slots, moved in the index, and left pinned for the caller, who unpins
//  them once its request has pinned them itself. The caller bounds how
//  many (its share of the host tier); host room is made like any other,
//  by demoting unpinned host blocks, never blocks a request holds.

typedef struct {
    size_t count;                   //  Blocks claimed
    uint64_t *hashes;               //  Their hashes
    uint64_t *nvme_slots;           //  Their disk slots
    kvt_migration_ensure_t *staging;    //  Host slots, one per block
    bool *failed;                   //  Per block: could not be read
} s_prefetch_t;

static void
s_prefetch_free (self_t *self, s_prefetch_t *job)
{
    kvt_migration_ensure_free (self, &job->staging, false);
    free (job->hashes);
    free (job->nvme_slots);
    free (job->failed);
    free (job);
}

//  Answer with the blocks staged (possibly none).
static void
s_prefetch_reply (self_t *self, const uint64_t *hashes, size_t count)
{
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_PREFETCH_OK);
    kvt_msg_set_array (reply, KVT_MIG_PREFETCH_OK_HASHES, hashes, count);
    kvt_migration_job_reply (self, &reply);
}

//  The index has the staged blocks on the host tier: free their disk slots
//  and answer. On failure, nothing is known to have moved: give up.
static void
s_prefetch_moved (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    (void) reply_p;
    s_prefetch_t *job = (s_prefetch_t *) arg;
    if (kvt_migration_await_late (self, rc, s_prefetch_moved, job))
        return;
    uint64_t *hashes = kvt_migration_u64s (job->count), *nvme = kvt_migration_u64s (job->count);
    uint64_t *host = kvt_migration_u64s (job->count);
    size_t n = 0;
    for (size_t k = 0; k < job->count; k++)
        if (!job->failed [k]) {
            hashes [n] = job->hashes [k];
            host [n] = job->staging->slots [k];
            nvme [n++] = job->nvme_slots [k];
        }
    if (rc) {
        kvt_log_warn ("migration: prefetch IDX_MOVE failed: %s", kvt_strerror (rc));
        kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                                  hashes, n, "IDX_UNPIN");
        kvt_migration_free_slots (self, KVT_TIER_HOST, host, n);
        n = 0;
    }
    else {
        kvt_migration_free_slots (self, KVT_TIER_NVME, nvme, n);
        kvt_actor_count (self->actor, "prefetch_staged", n);
        kvt_actor_count (self->actor, "bytes_nvme_to_host", kvt_migration_cold_bytes (self, n));
    }
    kvt_migration_ensure_free (self, &job->staging, false);  //  Slots handed on or freed
    s_prefetch_free (self, job);
    s_prefetch_reply (self, hashes, n);
    free (hashes);
    free (nvme);
    free (host);
}

//  Every read is answered: forget the blocks that failed their checksum
//  (the request recomputes them), move the others in the index.
static void
s_prefetch_read_all (self_t *self, s_prefetch_t *job)
{
    uint64_t *gone = kvt_migration_u64s (job->count), *gone_nvme = kvt_migration_u64s (job->count);
    uint64_t *gone_host = kvt_migration_u64s (job->count);
    uint64_t *moved = kvt_migration_u64s (job->count), *moved_slots = kvt_migration_u64s (job->count);
    size_t gone_n = 0, moved_n = 0;
    for (size_t k = 0; k < job->count; k++)
        if (job->failed [k]) {
            gone [gone_n] = job->hashes [k];
            gone_nvme [gone_n] = job->nvme_slots [k];
            gone_host [gone_n++] = job->staging->slots [k];
        }
        else {
            moved [moved_n] = job->hashes [k];
            moved_slots [moved_n++] = job->staging->slots [k];
        }
    kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES,
                              gone, gone_n, "IDX_REMOVE");
    kvt_migration_free_slots (self, KVT_TIER_NVME, gone_nvme, gone_n);
    kvt_migration_free_slots (self, KVT_TIER_HOST, gone_host, gone_n);
    kvt_actor_count (self->actor, "prefetch_misses", gone_n);
    if (moved_n) {
        //  Answer once the index knows: a request matching right after
        //  our reply then finds the blocks on the host tier
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MOVE);
        kvt_msg_set_array (msg, KVT_IDX_MOVE_HASHES, moved, moved_n);
        kvt_msg_set_u64 (msg, KVT_IDX_MOVE_TIER, KVT_TIER_HOST);
        kvt_msg_set_array (msg, KVT_IDX_MOVE_SLOTS, moved_slots, moved_n);
        kvt_actor_call (self->actor, "prefix_index", &msg, s_prefetch_moved, job);
    }
    else {
        s_prefetch_free (self, job);
        s_prefetch_reply (self, NULL, 0);
    }
    free (gone); free (gone_nvme); free (gone_host); free (moved); free (moved_slots);
}

//  One chunk of a prefetch is read: note the blocks that failed
static void
s_prefetch_chunk_read (self_t *self, void *arg, size_t first, size_t count, const bool *bad)
{
    (void) self;
    s_prefetch_t *job = (s_prefetch_t *) arg;
    for (size_t k = 0; k < count; k++)
        if (bad [k])
            job->failed [first + k] = true;
}

static void
s_prefetch_chunks_done (self_t *self, void *arg, int rc)
{
    (void) rc;
    s_prefetch_read_all (self, (s_prefetch_t *) arg);
}

static void
s_prefetch_have_staging (self_t *self, void *arg, int rc)
{
    s_prefetch_t *job = (s_prefetch_t *) arg;
    if (rc) {
        //  No host room (everything pinned) or no answer: the blocks stay
        //  on disk, unclaimed; the request will stream them when admitted
        kvt_actor_count (self->actor, "prefetch_no_room", job->count);
        kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                                  job->hashes, job->count, "IDX_UNPIN");
        kvt_migration_ensure_free (self, &job->staging, true);
        s_prefetch_free (self, job);
        s_prefetch_reply (self, NULL, 0);
        return;
    }
    if (kvt_migration_read_chunks (self, job->nvme_slots, job->hashes, job->staging->slots,
                                   job->count, s_prefetch_chunk_read, s_prefetch_chunks_done,
                                   job) == 0)
        s_prefetch_read_all (self, job);
}

static void
s_prefetch_claimed (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    if (kvt_migration_await_late (self, rc, s_prefetch_claimed, arg))
        return;
    if (rc) {
        kvt_migration_job_error (self, rc, "cannot claim the blocks to prefetch");
        return;
    }
    size_t count;
    const uint64_t *hashes = kvt_msg_array (*reply_p, KVT_IDX_CLAIM_OK_HASHES, &count);
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_IDX_CLAIM_OK_SLOTS, NULL);
    if (count == 0) {               //  Moved, pinned or gone since the caller looked
        s_prefetch_reply (self, NULL, 0);
        return;
    }
    s_prefetch_t *job = (s_prefetch_t *) kvt_zmalloc (sizeof (s_prefetch_t));
    job->count = count;
    job->hashes = kvt_migration_u64s (count);
    job->nvme_slots = kvt_migration_u64s (count);
    job->failed = (bool *) kvt_zmalloc ((count + 1) * sizeof (bool));
    memcpy (job->hashes, hashes, count * sizeof (uint64_t));
    memcpy (job->nvme_slots, slots, count * sizeof (uint64_t));
    job->staging = kvt_migration_ensure (self, KVT_TIER_HOST, count, s_prefetch_have_staging, job);
}

void
kvt_migration_start_prefetch (self_t *self)
{
    size_t count;
    const uint64_t *hashes = kvt_msg_array (self->current, KVT_MIG_PREFETCH_HASHES, &count);
    uint64_t max_blocks = kvt_msg_u64 (self->current, KVT_MIG_PREFETCH_MAX_BLOCKS);
    //  Never more than half the host tier at once, as for promotion's
    //  staging: room the tier can always make by demoting
    uint64_t room = self->capacity [KVT_TIER_HOST] / 2;
    if (max_blocks > room)
        max_blocks = room;
    if (count == 0 || max_blocks == 0) {
        s_prefetch_reply (self, NULL, 0);
        return;
    }
    kvt_actor_count (self->actor, "prefetches", 1);
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_CLAIM);
    kvt_msg_set_array (msg, KVT_IDX_CLAIM_HASHES, hashes, count);
    kvt_msg_set_u64 (msg, KVT_IDX_CLAIM_TIER, KVT_TIER_NVME);
    kvt_msg_set_u64 (msg, KVT_IDX_CLAIM_MAX_BLOCKS, max_blocks);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_prefetch_claimed, NULL);
}
