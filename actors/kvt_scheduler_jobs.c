/*  =========================================================================
    kvt_scheduler_jobs - a request's way through the runtime: admission,
    prefetch, fetch or recompute, planning, reservation, insertion

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_scheduler_int.h"

job_t *
kvt_scheduler_job_new (self_t *self, kvt_msg_t **request_p)
{
    job_t *job = (job_t *) kvt_zmalloc (sizeof (job_t));
    job->self = self;
    job->request = *request_p;
    *request_p = NULL;
    job->admitted_us = job->phase_us = kvt_now_us ();
    self->jobs++;
    return job;
}

void
kvt_scheduler_fire (self_t *self, const char *peer, int id, int field, const uint64_t *values,
                    size_t count)
{
    if (count == 0)
        return;
    kvt_msg_t *msg = kvt_msg_new (id);
    kvt_msg_set_array (msg, field, values, count);
    kvt_actor_call (self->actor, peer, &msg, NULL, NULL);
}

//  --------------------------------------------------------------------------
//  Admission: a job that will hold N blocks on the GPU (its whole prompt,
//  pinned prefix plus reserved suffix) starts only when the blocks held by
//  running jobs leave room for it; otherwise it waits, in arrival order.
//  Without this, concurrent long prompts pin each other's room away and
//  fail with ENOSPC although each fits alone.

static void
s_admit_waiting (self_t *self)
{
    job_t *job;
    while ((job = (job_t *) zlist_first (self->waiting))
    &&     (self->gpu_admitted == 0
            || self->gpu_admitted + job->block_count <= self->gpu_capacity)) {
        zlist_pop (self->waiting);
        job->admitted = true;
        job->gpu_budget = job->block_count;
        self->gpu_admitted += job->gpu_budget;
        kvt_actor_gauge (self->actor, "jobs_waiting", zlist_size (self->waiting));
        if (job->prefetching)
            job->start_deferred = true;     //  Starts when its prefetch ends
        else
            job->start (job);
    }
}

static void s_prefetch (job_t *job);

void
kvt_scheduler_admit (job_t *job, void (*start) (job_t *job))
{
    self_t *self = job->self;
    if (job->block_count > self->gpu_capacity) {
        char detail [160];
        snprintf (detail, sizeof (detail), "the prompt needs %zu blocks on the GPU tier, "
                  "which holds %zu (tier_gpu/capacity_blocks)", job->block_count,
                  self->gpu_capacity);
        kvt_scheduler_job_fail (job, -ENOSPC, detail);
        return;
    }
    job->start = start;
    zlist_append (self->waiting, job);
    s_admit_waiting (self);
    //  An admitted job may have run to its end (and been freed) inside
    //  s_admit_waiting: look for it in the list, never through it
    if (zlist_exists (self->waiting, job) && self->prefetch_waiting && self->caching
    &&  job->block_count)
        s_prefetch (job);
}

//  Add the time since the job's last phase change to counter 'phase'.
void
kvt_scheduler_phase (job_t *job, const char *phase)
{
    int64_t now = kvt_now_us ();
    kvt_actor_count (job->self->actor, phase, (uint64_t) (now - job->phase_us));
    job->phase_us = now;
}

//  Drop the pins of the blocks our prefetch staged (our own match holds
//  its own pins on them by now, or the job is over).
void
kvt_scheduler_prefetch_release (job_t *job)
{
    self_t *self = job->self;
    kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES, job->staged,
                        job->staged_count);
    self->prefetch_held -= job->staged_count;
    job->staged_count = 0;
    kvt_freen (job->staged);
}

//  Free a job's memory (no messages).
void
kvt_scheduler_job_free (job_t *job)
{
    kvt_msg_destroy (&job->request);
    kvt_msg_destroy (&job->result);
    free (job->tokens);
    free (job->hashes);
    free (job->tiers);
    free (job->slots);
    free (job->staged);
    free (job->prestaged);
    free (job->host_slots);
    free (job->stream_old);
    free (job->stream_gpu);
    free (job);
}

//  MIG_PROMOTE_END for matched blocks [first, last) of the job's stream
//  promotion: commit, or undo.
static kvt_msg_t *
s_stream_end_msg (job_t *job, size_t first, size_t last, bool commit)
{
    size_t count = last - first;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_PROMOTE_END);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HASHES, job->hashes + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_TIERS, job->tiers + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_SLOTS, job->stream_old + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_GPU_SLOTS, job->stream_gpu + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HOST_SLOTS, job->host_slots + first, count);
    kvt_msg_set_u64 (msg, KVT_MIG_PROMOTE_END_COMMIT, commit);
    return msg;
}

//  Send MIG_PROMOTE_END for matched blocks [first, last) of the job's
//  stream promotion: commit, or undo. 'cb' (may be NULL) gets the answer.
void
kvt_scheduler_stream_end (job_t *job, size_t first, size_t last, bool commit, kvt_actor_reply_fn *cb)
{
    if (last <= first)
        return;
    kvt_msg_t *msg = s_stream_end_msg (job, first, last, commit);
    kvt_actor_call (job->self->actor, "migration", &msg, cb, job);
}

//  A compute run that outlived runtime/compute_timeout_ms: what compute
//  may still write (the reserved GPU slots) or read (the pinned prefix,
//  a stream promotion's staging) is held until its late answer.
typedef struct {
    uint64_t *pins;                 //  Prefix hashes pinned
    size_t pin_count;               //  Entries in pins
    uint64_t *reserved;             //  GPU slots reserved for the computed blocks
    size_t reserved_count;          //  Entries in reserved
    kvt_msg_t *stream_undo;         //  MIG_PROMOTE_END commit 0 of an open stream, or NULL
} s_compute_late_t;

//  Compute's late answer (done with the run, whatever it says): release.
static void
s_compute_late (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) reply_p;
    self_t *self = (self_t *) self_ptr;
    s_compute_late_t *late = (s_compute_late_t *) arg;
    if (rc != -ECANCELED) {
        if (late->stream_undo)
            kvt_actor_call (self->actor, "migration", &late->stream_undo, NULL, NULL);
        kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                            late->pins, late->pin_count);
        kvt_scheduler_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                            late->reserved, late->reserved_count);
        kvt_actor_count (self->actor, "slots_released_late", late->reserved_count);
    }
    kvt_msg_destroy (&late->stream_undo);
    free (late->pins);
    free (late->reserved);
    free (late);
}

void
kvt_scheduler_compute_late (job_t *job)
{
    s_compute_late_t *late = (s_compute_late_t *) kvt_zmalloc (sizeof (s_compute_late_t));
    late->pins = kvt_u64s_dup (job->hashes, job->pinned);
    late->pin_count = job->pinned;
    late->reserved = kvt_u64s_dup (job->slots + job->reserved_from, job->reserved_count);
    late->reserved_count = job->reserved_count;
    if (job->stream_open && job->matched > 0)
        late->stream_undo = s_stream_end_msg (job, 0, job->matched, false);
    if (kvt_actor_call_expect_late (job->self->actor, s_compute_late, late,
                                    KVT_ACTOR_UNTIL_ANSWERED) != 0) {
        s_compute_late (job->self, -ECANCELED, NULL, late);     //  Frees only
        return;                     //  Never sent: the job's end releases all
    }
    kvt_actor_count (job->self->actor, "slots_quarantined", job->block_count);
    job->reserved_count = 0;
    job->pinned = 0;
    job->stream_open = false;
}

//  Undo the stream promotion and recompute the whole prompt.
void
kvt_scheduler_job_recompute (job_t *job, kvt_scheduler_step_fn *next)
{
    self_t *self = job->self;
    if (job->stream_open) {
        kvt_scheduler_stream_end (job, 0, job->matched, false, NULL);
        job->stream_open = false;
    }
    kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES, job->hashes,
                        job->pinned);
    kvt_scheduler_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                        job->slots + job->reserved_from, job->reserved_count);
    job->pinned = 0;
    job->reserved_count = 0;
    job->matched = 0;
    job->stream_ticket = 0;
    memset (job->from_tier, 0, sizeof (job->from_tier));
    kvt_scheduler_reserve (job, next);
}

//  Release what the job holds (pins, reserved slots) and free it.
void
kvt_scheduler_job_end (job_t *job, bool release_reserved)
{
    self_t *self = job->self;
    if (job->stream_open) {
        //  The blocks never reached compute (or it failed): undo the move
        kvt_scheduler_stream_end (job, 0, job->matched, false, NULL);
        job->stream_open = false;
    }
    kvt_scheduler_prefetch_release (job);
    kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES, job->hashes,
                        job->pinned);
    if (release_reserved)
        kvt_scheduler_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                            job->slots + job->reserved_from, job->reserved_count);
    self->gpu_admitted -= job->gpu_budget;
    kvt_scheduler_job_free (job);
    self->jobs--;
    s_admit_waiting (self);
}

void
kvt_scheduler_send_client (self_t *self, kvt_msg_t **reply_p)
{
    if (kvt_msg_send (reply_p, self->frontdoor))
        kvt_actor_count (self->actor, "replies_undelivered", 1);   //  Client left
}

void
kvt_scheduler_job_fail (job_t *job, int rc, const char *what)
{
    kvt_msg_t *reply = kvt_msg_error_new (job->request, rc, "%s", what);
    kvt_actor_count (job->self->actor, "errors", 1);
    kvt_scheduler_send_client (job->self, &reply);
    kvt_scheduler_job_end (job, true);
}

//  Ask the index where the job's prefix is (IDX_MATCH), pinning it or
//  not; 'fn' gets the answer with 'arg'.
void
kvt_scheduler_match (job_t *job, bool pin, size_t part_blocks,
                     kvt_actor_reply_fn *fn, void *arg)
{
    kvt_msg_t *msg;
    if (part_blocks) {
        msg = kvt_msg_new (KVT_MSG_IDX_MATCH_PARTS);
        kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PARTS_PART_BLOCKS, part_blocks);
    }
    else
        msg = kvt_msg_new (KVT_MSG_IDX_MATCH);
    //  (The two requests share their first fields)
    kvt_msg_set_array (msg, KVT_IDX_MATCH_HASHES, job->hashes, job->block_count);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PIN, pin? 1: 0);
    kvt_actor_call (job->self->actor, "prefix_index", &msg, fn, arg);
}

//  Validate the tokens of a request and hash its full blocks.
int
kvt_scheduler_job_prepare (job_t *job, int tenant_field, int tokens_field)
{
    self_t *self = job->self;
    size_t count;
    const uint64_t *tokens = kvt_msg_array (job->request, tokens_field, &count);
    for (size_t k = 0; k < count; k++)
        if (tokens [k] >= (uint64_t) self->vocab)
            return -EINVAL;
    job->tokens = (uint32_t *) kvt_zmalloc ((count + 1) * sizeof (uint32_t));
    for (size_t k = 0; k < count; k++)
        job->tokens [k] = (uint32_t) tokens [k];
    job->token_count = count;
    size_t blocks = count / (size_t) self->shape.block_tokens;
    job->hashes = (uint64_t *) kvt_zmalloc ((blocks + 1) * sizeof (uint64_t));
    job->tiers = (uint64_t *) kvt_zmalloc ((blocks + 1) * sizeof (uint64_t));
    job->slots = (uint64_t *) kvt_zmalloc ((blocks + 1) * sizeof (uint64_t));
    uint64_t salt = kvt_block_tenant_salt (kvt_msg_str (job->request, tenant_field));
    job->block_count = kvt_block_hash_chain (job->tokens, count, self->shape.block_tokens,
                                             salt, job->hashes);
    return 0;
}

//  --------------------------------------------------------------------------
//  Prefetch for a job waiting admission: look its prefix up (no pin), and
//  have migration stage the NVMe part into the host tier, within the
//  budget all waiting jobs share. The job keeps those blocks pinned until
//  its own match pins them (s_plan_matched) or it ends.

//  The prefetch is over (or never went out): start the job if it was
//  admitted meanwhile.
static void
s_prefetch_done (job_t *job, int rc)
{
    job->prefetching = false;
    if (job->start_deferred) {
        job->start_deferred = false;
        kvt_actor_count (job->self->actor, "prefetch_delayed_starts", 1);
        if (rc == -ECANCELED)       //  Shutting down: do not start new work
            kvt_scheduler_job_fail (job, rc, "the server is stopping");
        else
            job->start (job);
    }
}

//  Late answers of calls that timed out, for what migration did after all
//  (kvt_actor_call_expect_late; the call's own reply function moved on):
//  a prefetch's staged blocks are pinned for a job that no longer waits
//  for them, a reservation's GPU slots belong to nobody. Released here.
//  Late answers are awaited until they come (a bounded wait that ran out
//  would leave what the answer carries held for good), or the actor ends.
//  A prefetch keeps its share of the prefetch budget ('arg') until then.
static void
s_prefetch_late (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    size_t *reserved = (size_t *) arg;
    self->prefetch_held -= *reserved;
    free (reserved);
    if (rc || kvt_msg_id (*reply_p) != KVT_MSG_MIG_PREFETCH_OK)
        return;
    size_t count;
    const uint64_t *staged = kvt_msg_array (*reply_p, KVT_MIG_PREFETCH_OK_HASHES, &count);
    kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES, staged,
                        count);
    kvt_actor_count (self->actor, "prefetch_released_late", count);
}

static void
s_reserve_late (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) arg;
    self_t *self = (self_t *) self_ptr;
    if (rc || kvt_msg_id (*reply_p) != KVT_MSG_MIG_RESERVE_OK)
        return;
    size_t count;
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_MIG_RESERVE_OK_SLOTS, &count);
    kvt_scheduler_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS, slots, count);
    kvt_actor_count (self->actor, "reserved_released_late", count);
}

static void
s_prefetched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    job_t *job = (job_t *) arg;
    if (rc == -ETIMEDOUT) {
        //  Migration may still stage the blocks: their room stays counted
        //  until its late answer releases them
        size_t *reserved = (size_t *) kvt_zmalloc (sizeof (size_t));
        *reserved = job->prefetch_reserved;
        if (kvt_actor_call_expect_late (self->actor, s_prefetch_late, reserved,
                                        KVT_ACTOR_UNTIL_ANSWERED) == 0)
            job->prefetch_reserved = 0;
        else
            free (reserved);
    }
    self->prefetch_held -= job->prefetch_reserved;
    job->prefetch_reserved = 0;
    if (rc == 0) {
        size_t count;
        const uint64_t *staged = kvt_msg_array (*reply_p, KVT_MIG_PREFETCH_OK_HASHES, &count);
        job->staged = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
        memcpy (job->staged, staged, count * sizeof (uint64_t));
        job->staged_count = count;
        self->prefetch_held += count;
        //  Staged blocks come in prefix order: mark their positions
        job->prestaged = (bool *) kvt_zmalloc ((job->block_count + 1) * sizeof (bool));
        for (size_t k = 0, s = 0; k < job->block_count && s < count; k++)
            if (job->hashes [k] == staged [s]) {
                job->prestaged [k] = true;
                s++;
            }
        kvt_actor_count (self->actor, "prefetched_blocks", count);
    }
    else
        kvt_actor_count (self->actor, "prefetch_failures", 1);
    s_prefetch_done (job, rc);
}

static void
s_prefetch_matched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    job_t *job = (job_t *) arg;
    if (rc) {
        s_prefetch_done (job, rc);
        return;
    }
    size_t matched, on_disk = 0, last = 0;
    const uint64_t *tiers = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_TIERS, &matched);
    for (size_t k = 0; k < matched; k++)
        if (tiers [k] == KVT_TIER_NVME) {
            on_disk++;
            last = k;
        }
    size_t room = self->prefetch_budget > self->prefetch_held
                ? self->prefetch_budget - self->prefetch_held: 0;
    if (on_disk && room == 0)
        kvt_actor_count (self->actor, "prefetch_skipped_budget", on_disk);
    //  Admitted meanwhile: its own promotion streams the disk blocks
    //  straight to the GPU, which beats staging them first
    if (on_disk == 0 || room == 0 || job->admitted) {
        s_prefetch_done (job, 0);
        return;
    }
    job->prefetch_reserved = on_disk < room? on_disk: room;
    self->prefetch_held += job->prefetch_reserved;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_PREFETCH);
    kvt_msg_set_array (msg, KVT_MIG_PREFETCH_HASHES, job->hashes, last + 1);
    kvt_msg_set_u64 (msg, KVT_MIG_PREFETCH_MAX_BLOCKS, job->prefetch_reserved);
    kvt_actor_call (self->actor, "migration", &msg, s_prefetched, job);
}

static void
s_prefetch (job_t *job)
{
    job->prefetching = true;
    kvt_scheduler_match (job, false, 0, s_prefetch_matched, job);
}

//  --------------------------------------------------------------------------
//  Fetch or recompute: the rate the scheduler weighs fetching against
//  (kvt_scheduler_plan.c)

//  Fold one compute run into the prefill rate: 'tokens' prefilled in
//  steps that took 'prefill_us' (compute's own time, not the wait in its
//  queue). Short runs say little: skipped.
void
kvt_scheduler_prefill_measured (self_t *self, size_t tokens, uint64_t prefill_us)
{
    if (tokens < (size_t) self->shape.block_tokens || prefill_us == 0)
        return;
    double rate = (double) tokens / ((double) prefill_us / 1e6);
    self->prefill_tokens_per_s = self->prefill_measured
        ? 0.8 * self->prefill_tokens_per_s + 0.2 * rate: rate;
    self->prefill_measured = true;
    kvt_actor_gauge (self->actor, "prefill_tokens_per_s", (uint64_t) self->prefill_tokens_per_s);
}

//  A job and its step after a call
typedef struct {
    job_t *job;
    kvt_scheduler_step_fn *next;
} s_step_t;

//  Reserve GPU slots for blocks [matched, block_count), then 'next'.
static void
s_reserved (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) self_ptr;
    s_step_t *step = (s_step_t *) arg;
    job_t *job = step->job;
    kvt_scheduler_step_fn *next = step->next;
    free (step);
    if (rc == -ETIMEDOUT)
        kvt_actor_call_expect_late (job->self->actor, s_reserve_late, NULL,
                                    KVT_ACTOR_UNTIL_ANSWERED);
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "cannot reserve GPU blocks");
        return;
    }
    size_t count;
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_MIG_RESERVE_OK_SLOTS, &count);
    job->reserved_from = job->matched;
    job->reserved_count = count;
    for (size_t k = 0; k < count; k++)
        job->slots [job->matched + k] = slots [k];
    if (count != job->block_count - job->matched) {
        kvt_scheduler_job_fail (job, -ENOSPC, "GPU reservation came back short");
        return;
    }
    next (job);
}

void
kvt_scheduler_reserve (job_t *job, kvt_scheduler_step_fn *next)
{
    s_step_t *step = (s_step_t *) kvt_zmalloc (sizeof (s_step_t));
    step->job = job;
    step->next = next;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_RESERVE);
    kvt_msg_set_u64 (msg, KVT_MIG_RESERVE_COUNT, job->block_count - job->matched);
    kvt_actor_call (job->self->actor, "migration", &msg, s_reserved, step);
}

//  Insert blocks [matched, block_count) as GPU-resident; free duplicates.
//  'arg' is a copy of the inserted slots, [0] = how many follow, then as
//  many hashes. With migration/write_through = 1, migration then shadows
//  the blocks on the host tier (MIG_WRITE_THROUGH, background work).
static void
s_inserted (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    uint64_t *slots = (uint64_t *) arg;
    if (rc == 0) {
        //  Blocks another request inserted first: the index kept that copy,
        //  so ours are spare
        size_t count;
        const uint64_t *duplicates = kvt_msg_array (*reply_p, KVT_IDX_INSERT_OK_DUPLICATES,
                                                    &count);
        uint64_t *spare = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
        size_t spare_count = 0;
        for (size_t k = 0; k < count; k++)
            if (duplicates [k] < slots [0])
                spare [spare_count++] = slots [1 + duplicates [k]];
        kvt_scheduler_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS, spare,
                            spare_count);
        kvt_actor_count (self->actor, "duplicate_blocks", spare_count);
        free (spare);
        if (kvt_config_int (kvt_actor_config (self->actor), "migration/write_through"))
            kvt_scheduler_fire (self, "migration", KVT_MSG_MIG_WRITE_THROUGH,
                                KVT_MIG_WRITE_THROUGH_HASHES, slots + 1 + slots [0],
                                (size_t) slots [0]);
    }
    //  On failure the slots' fate is unknown: leaving them allocated is safe
    free (slots);
}

void
kvt_scheduler_insert_computed (job_t *job)
{
    self_t *self = job->self;
    size_t count = job->block_count - job->matched;
    if (!self->caching || count == 0) {
        kvt_scheduler_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                            job->slots + job->matched, count);
        return;
    }
    //  A block another request inserted first is a duplicate: the index
    //  keeps the first copy and says which of ours to free (s_inserted)
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_INSERT);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_HASHES, job->hashes + job->matched, count);
    kvt_msg_set_u64 (msg, KVT_IDX_INSERT_TIER, KVT_TIER_GPU);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_SLOTS, job->slots + job->matched, count);
    uint64_t *slots = (uint64_t *) kvt_zmalloc ((2 * count + 1) * sizeof (uint64_t));
    slots [0] = count;
    memcpy (slots + 1, job->slots + job->matched, count * sizeof (uint64_t));
    memcpy (slots + 1 + count, job->hashes + job->matched, count * sizeof (uint64_t));
    kvt_actor_call (self->actor, "prefix_index", &msg, s_inserted, slots);
}
