/*  =========================================================================
    kvt_scheduler - the front door: admits client requests, plans, replies

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Clients talk to the scheduler's ROUTER (scheduler/endpoint, tcp:// by
    default, and scheduler/ipc_endpoint) in the client messages of
    messages/PROTOCOL.md: HELLO, LOOKUP, STORE, LOAD, GENERATE, STATS,
    DEMOTE. Each request becomes a job that walks the other actors:
      GENERATE: hash the prompt's blocks -> prefix_index IDX_MATCH (pins the
        cached prefix) -> migration MIG_PROMOTE for blocks on host or NVMe
        -> MIG_RESERVE GPU slots for the rest -> compute COMP_RUN -> index
        IDX_INSERT the computed blocks -> unpin -> GENERATE_OK.
    Many jobs are in flight at once; each reply goes to whoever asked.
    Stream promotion (migration/stream_promotion = 1, issue #3): GENERATE
    asks MIG_PROMOTE with stream = 1, so migration reserves GPU slots and
    stages NVMe blocks into host slots but copies nothing; COMP_RUN
    carries the host slot of each cached block still off the GPU, and
    compute copies them in layer by layer under its prefill. After
    COMP_RUN_OK the scheduler sends MIG_PROMOTE_END commit = 1 (index
    moves the blocks to the GPU, host/staging/disk slots freed) and waits
    for it before unpinning; on any failure, commit = 0 (undo). A
    compute run that outlives runtime/compute_timeout_ms fails the
    request, but its GPU slots, pins and stream stay held
    (slots_quarantined) until compute's late answer says it is done with
    them (slots_released_late).
    A MIG_PROMOTE (or MIG_PROMOTE_END commit) that migration does not
    answer within runtime/call_timeout_ms may still be running: the
    request fails (or, for the commit, is answered) but its prefix stays
    pinned (pins_quarantined), so no demotion or second promotion touches
    slots the late promotion still reads or frees; later requests cut
    their match there and recompute. The scheduler keeps waiting for the
    late answer (kvt_actor_call_expect_late, until it comes or the
    runtime stops): then a stream promotion is undone and the pins go
    (pins_released_late). Late MIG_RESERVE and MIG_PREFETCH answers give
    back what they carry the same way (reserved_released_late,
    prefetch_released_late).
    With layer groups (migration/nvme_layer_groups, #4) MIG_PROMOTE_OK
    comes once group 0 of every NVMe block is read and carries a ticket,
    passed on in COMP_RUN: compute then copies each group's layers in as
    migration says they are read. If a block fails a later group, compute
    fails the run with KVT_ECHECKSUM (or KVT_ETIMEOUT_PEER when no group
    came for compute/layers_wait_ms); the scheduler undoes the promotion
    and runs the request again with nothing cached (once;
    stream_runs_recomputed), so the answer stays right.
    A job that must wait for GPU room (admission, below) looks its prefix
    up at once (IDX_MATCH without pin) and, if part of it is on NVMe, asks
    migration to stage those blocks into the host tier (MIG_PREFETCH),
    so that its promotion is host -> GPU only when its turn comes
    (scheduler/prefetch_waiting). Staged blocks stay pinned for the job
    until its own match pins them; all waiting jobs together hold at most
    scheduler/prefetch_host_percent of the host tier that way. A job
    admitted while its prefetch is still under way starts when it ends.
    Counters: prefetched_blocks, prefetch_hits (staged blocks the job
    then found on the host tier), prefetch_skipped_budget.
    Fetch or recompute (scheduler/fetch_policy = cost): for GENERATE, the
    matched prefix is cut where fetching the rest would cost more than
    computing it again: fetch = block bytes over the link of the block's
    tier (host: host->GPU; NVMe: NVMe read plus host->GPU), from
    scheduler/h2d_GBps, scheduler/nvme_read_GBps, or the calibration file
    scheduler/calibration, else DESIGN.md's figures; recompute = tokens
    over the prefill rate, an EWMA of what compute reports (prefill
    tokens / prefill_us of each run: the time of the steps that ran its
    prefill, not its wait in compute's queue), starting from the calibration's
    prefill_tokens_per_s. The cut minimises fetch (before it) + recompute
    (after it), ties fetched; blocks given up are counted in
    blocks_recomputed_by_choice. The default is 'always' (fetch every
    matched block): the measured rate depends on timing, so with 'cost'
    two runs of the same requests may place blocks differently.
@discuss
    Bad input on the front door - undecodable frames, a wrong version, an
    unknown or internal message id, oversize frames, tokens outside the
    vocabulary, out-of-range tiers - is answered with ERROR and counted;
    the scheduler keeps serving everyone else. A client that vanished
    gets its reply dropped and counted (ROUTER_MANDATORY).
    A block that failed its checksum on the way back from disk is
    recomputed: the cached prefix is cut at the first block that could
    not be promoted.
    With scheduler/caching = 0 nothing is reused or kept: the baseline of
    the demo's comparison.
@end
*/

#include "kvt_scheduler_int.h"
#include "kvt_layer_shard.h"

static const char *const s_peers [] = {
    "prefix_index", "migration", "compute", "tier_gpu", "tier_host", "tier_nvme", NULL };
#define S_PEER_COUNT 6

//  --------------------------------------------------------------------------
//  GENERATE

static void s_generate_answer (self_t *self, job_t *job, kvt_msg_t *result);
static void s_generate_stream_ended (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg);
static void s_generate_run (job_t *job);

static void
s_generate_computed (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    job_t *job = (job_t *) arg;
    if (rc == -ETIMEDOUT) {
        //  Compute may still be writing into the job's slots: they must
        //  not be reused until it says it is done (nor its prefix moved)
        kvt_scheduler_compute_late (job);
        kvt_scheduler_job_fail (job, rc, "compute did not answer within runtime/compute_timeout_ms");
        return;
    }
    if ((rc == KVT_ECHECKSUM || rc == KVT_ETIMEOUT_PEER) && job->stream_open
    &&  !job->stream_retried) {
        //  A streamed block failed a late layer group's checksum while
        //  compute ran on its first layers, or its later groups stopped
        //  coming (compute/layers_wait_ms) (#4): recompute the request
        kvt_actor_count (self->actor, "stream_runs_recomputed", 1);
        job->stream_retried = true;
        kvt_scheduler_job_recompute (job, s_generate_run);
        return;
    }
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "compute failed");
        return;
    }
    if (job->stream_open && job->matched == 0)
        job->stream_open = false;   //  Cut to nothing: nothing to end
    if (job->stream_open) {
        //  The streamed blocks are in their GPU slots: commit the move
        //  before anything unpins them, then answer
        kvt_scheduler_phase (job, "us_computing");
        job->stream_open = false;
        job->result = *reply_p;
        *reply_p = NULL;
        kvt_scheduler_stream_end (job, 0, job->matched, true, s_generate_stream_ended);
        return;
    }
    kvt_scheduler_phase (job, "us_computing");
    s_generate_answer (self, job, *reply_p);
}

//  MIG_PROMOTE_END answered: answer the client from the kept COMP_RUN_OK.
static void
s_generate_stream_ended (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) reply_p;
    self_t *self = (self_t *) self_ptr;
    job_t *job = (job_t *) arg;
    if (rc) {
        //  The tokens are good; where the streamed blocks stand is not
        kvt_log_warn ("scheduler: ending a stream promotion failed: %s", kvt_strerror (rc));
        kvt_actor_count (self->actor, "stream_end_errors", 1);
    }
    if (rc == -ETIMEDOUT) {
        //  Migration may still commit the move (index to the GPU, host
        //  and disk slots freed): unpinned meanwhile, the blocks could be
        //  demoted or promoted again from the slots it frees. Keep them
        //  pinned until its late answer, as s_plan_promoted does.
        kvt_scheduler_expect_late (job);
    }
    kvt_msg_t *result = job->result;
    job->result = NULL;
    s_generate_answer (self, job, result);
    kvt_msg_destroy (&result);
}

//  Compute answered 'result' (borrowed): insert the computed blocks,
//  answer the client, end the job.
static void
s_generate_answer (self_t *self, job_t *job, kvt_msg_t *result)
{
    kvt_scheduler_insert_computed (job);
    job->reserved_count = 0;        //  Owned by the index (or freed) now
    size_t count;
    const uint64_t *tokens = kvt_msg_array (result, KVT_COMP_RUN_OK_TOKENS, &count);
    uint64_t compute_ttft = kvt_msg_u64 (result, KVT_COMP_RUN_OK_TTFT_US);
    uint64_t compute_total = kvt_msg_u64 (result, KVT_COMP_RUN_OK_TOTAL_US);
    kvt_scheduler_prefill_measured (self, job->token_count
                                    - job->matched * (size_t) self->shape.block_tokens,
                                    kvt_msg_u64 (result, KVT_COMP_RUN_OK_PREFILL_US));
    int64_t now = kvt_now_us ();
    int64_t total_us = now - job->admitted_us;
    //  Time to first token: everything before compute's first token
    int64_t ttft_us = total_us - (int64_t) (compute_total - compute_ttft);
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_GENERATE_OK);
    kvt_msg_set_array (reply, KVT_GENERATE_OK_TOKENS, tokens, count);
    kvt_msg_set_u64 (reply, KVT_GENERATE_OK_TTFT_US, (uint64_t) (ttft_us > 0? ttft_us: 0));
    kvt_msg_set_u64 (reply, KVT_GENERATE_OK_TOTAL_US, (uint64_t) total_us);
    kvt_msg_set_u64 (reply, KVT_GENERATE_OK_FROM_GPU, job->from_tier [KVT_TIER_GPU]);
    kvt_msg_set_u64 (reply, KVT_GENERATE_OK_FROM_HOST, job->from_tier [KVT_TIER_HOST]);
    kvt_msg_set_u64 (reply, KVT_GENERATE_OK_FROM_NVME, job->from_tier [KVT_TIER_NVME]);
    kvt_msg_set_u64 (reply, KVT_GENERATE_OK_COMPUTED, job->block_count - job->matched);
    kvt_actor_count (self->actor, "generated", 1);
    kvt_actor_count (self->actor, "blocks_from_gpu", job->from_tier [KVT_TIER_GPU]);
    kvt_actor_count (self->actor, "blocks_from_host", job->from_tier [KVT_TIER_HOST]);
    kvt_actor_count (self->actor, "blocks_from_nvme", job->from_tier [KVT_TIER_NVME]);
    kvt_actor_count (self->actor, "blocks_computed", job->block_count - job->matched);
    kvt_scheduler_send_client (self, &reply);
    kvt_scheduler_job_end (job, false);
}

static void
s_generate_run (job_t *job)
{
    kvt_scheduler_phase (job, "us_reserving_gpu");
    //  The request's own token array, already validated, goes on as it is
    const uint64_t *tokens = kvt_msg_array (job->request, KVT_GENERATE_TOKENS, NULL);
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_COMP_RUN);
    kvt_msg_set_array (msg, KVT_COMP_RUN_TOKENS, tokens, job->token_count);
    kvt_msg_set_array (msg, KVT_COMP_RUN_SLOTS, job->slots, job->block_count);
    kvt_msg_set_u64 (msg, KVT_COMP_RUN_CACHED_BLOCKS, job->matched);
    kvt_msg_set_u64 (msg, KVT_COMP_RUN_MAX_NEW_TOKENS,
                     kvt_msg_u64 (job->request, KVT_GENERATE_MAX_NEW_TOKENS));
    if (job->stream_open) {
        size_t streamed = 0;
        for (size_t k = 0; k < job->matched; k++)
            streamed += job->host_slots [k] != UINT64_MAX;
        kvt_msg_set_array (msg, KVT_COMP_RUN_HOST_SLOTS, job->host_slots, job->matched);
        kvt_msg_set_u64 (msg, KVT_COMP_RUN_TICKET, job->stream_ticket);
        kvt_actor_count (job->self->actor, "blocks_streamed", streamed);
    }
    kvt_actor_call_timeout (job->self->actor, "compute", &msg, s_generate_computed, job,
                            job->self->compute_timeout_ms);
}

static void
s_generate_planned (job_t *job)
{
    kvt_scheduler_phase (job, "us_finding_prefix");
    kvt_scheduler_reserve (job, s_generate_run);
}

static void
s_generate_admitted (job_t *job)
{
    kvt_scheduler_phase (job, "us_waiting_admission");
    kvt_scheduler_plan (job, s_generate_planned);
}

static int
s_handle_generate (self_t *self, kvt_msg_t **msg_p)
{
    size_t count;
    kvt_msg_array (*msg_p, KVT_GENERATE_TOKENS, &count);
    const char *why = count == 0? "GENERATE needs at least one prompt token":
        kvt_msg_u64 (*msg_p, KVT_GENERATE_MAX_NEW_TOKENS) > KVT_SCHEDULER_MAX_NEW_TOKENS?
            "max_new_tokens is above 4096": NULL;
    if (why) {
        kvt_msg_t *reply = kvt_msg_error_new (*msg_p, -EINVAL, "%s", why);
        kvt_scheduler_send_client (self, &reply);
        kvt_actor_count (self->actor, "rejected", 1);
        return 0;
    }
    job_t *job = kvt_scheduler_job_new (self, msg_p);
    int rc = kvt_scheduler_job_prepare (job, KVT_GENERATE_TENANT, KVT_GENERATE_TOKENS);
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    kvt_scheduler_admit (job, s_generate_admitted);
    return 0;
}

//  --------------------------------------------------------------------------
//  LOOKUP: where is the cached prefix? (no pins, no moves)

static void
s_lookup_matched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    job_t *job = (job_t *) arg;
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "prefix lookup failed");
        return;
    }
    size_t matched;
    const uint64_t *tiers = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_TIERS, &matched);
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_LOOKUP_OK);
    kvt_msg_set_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS, matched);
    kvt_msg_set_array (reply, KVT_LOOKUP_OK_TIERS, tiers, matched);
    kvt_msg_set_array (reply, KVT_LOOKUP_OK_HASHES, job->hashes, matched);
    kvt_scheduler_send_client (self, &reply);
    kvt_scheduler_job_end (job, false);
}

static int
s_handle_lookup (self_t *self, kvt_msg_t **msg_p)
{
    job_t *job = kvt_scheduler_job_new (self, msg_p);
    int rc = kvt_scheduler_job_prepare (job, KVT_LOOKUP_TENANT, KVT_LOOKUP_TOKENS);
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    kvt_scheduler_match (job, false, 0, s_lookup_matched, job);
    return 0;
}

//  --------------------------------------------------------------------------
//  LOAD: the KV bytes of the cached prefix, through the GPU tier

static void
s_load_planned (job_t *job)
{
    self_t *self = job->self;
    size_t bytes = job->matched * self->block_bytes;
    void *kv = kvt_zmalloc (bytes + 1);
    //  memcpy, or cudaMemcpy when the GPU tier's slab is device memory;
    //  with layer sharding (#5) each block's other layers from the shard
    for (size_t k = 0; k < job->matched; k++)
        if (kvt_layer_shard_read (self->gpu, self->gpu_shard, job->slots [k],
                                  (char *) kv + k * self->block_bytes)) {
            kvt_log_error ("scheduler: LOAD could not copy a block from the GPU tier");
            kvt_actor_count (self->actor, "copy_errors", 1);
        }
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_LOAD_OK);
    kvt_msg_set_u64 (reply, KVT_LOAD_OK_BLOCKS, job->matched);
    kvt_msg_set_bin_owned (reply, KVT_LOAD_OK_KV, &kv, bytes);
    kvt_msg_set_array (reply, KVT_LOAD_OK_TIERS, job->tiers, job->matched);
    kvt_actor_count (self->actor, "loaded_blocks", job->matched);
    kvt_scheduler_send_client (self, &reply);
    kvt_scheduler_job_end (job, false);
}

static void
s_load_admitted (job_t *job)
{
    kvt_scheduler_plan (job, s_load_planned);
}

static int
s_handle_load (self_t *self, kvt_msg_t **msg_p)
{
    job_t *job = kvt_scheduler_job_new (self, msg_p);
    int rc = kvt_scheduler_job_prepare (job, KVT_LOAD_TENANT, KVT_LOAD_TOKENS);
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    kvt_scheduler_admit (job, s_load_admitted);
    return 0;
}

//  --------------------------------------------------------------------------
//  STORE: a client's KV for blocks not cached yet goes into the GPU tier;
//  STORE_TAIL the same for a prompt whose leading blocks are cached, so a
//  growing conversation never sends its prefix's KV again

static void
s_store_reserved (job_t *job)
{
    self_t *self = job->self;
    //  The request's bytes start at block kv_first; blocks before
    //  'matched' were cached already and keep their bytes
    const uint8_t *kv = (const uint8_t *) kvt_msg_bin (job->request, job->kv_field, NULL);
    for (size_t k = job->matched; k < job->block_count; k++)
        if (kvt_layer_shard_write (self->gpu, self->gpu_shard, job->slots [k],
                                   kv + (k - job->kv_first) * self->block_bytes)) {
            kvt_log_error ("scheduler: STORE could not copy a block into the GPU tier");
            kvt_actor_count (self->actor, "copy_errors", 1);
        }
    size_t stored = job->block_count - job->matched;
    kvt_scheduler_insert_computed (job);
    job->reserved_count = 0;
    bool tail = kvt_msg_id (job->request) == KVT_MSG_STORE_TAIL;
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, tail? KVT_MSG_STORE_TAIL_OK
                                                            : KVT_MSG_STORE_OK);
    kvt_msg_set_u64 (reply, tail? KVT_STORE_TAIL_OK_STORED_BLOCKS: KVT_STORE_OK_STORED_BLOCKS,
                     self->caching? stored: 0);
    kvt_msg_set_u64 (reply, tail? KVT_STORE_TAIL_OK_PRESENT_BLOCKS: KVT_STORE_OK_PRESENT_BLOCKS,
                     job->matched);
    kvt_actor_count (self->actor, "stored_blocks", stored);
    kvt_scheduler_send_client (self, &reply);
    kvt_scheduler_job_end (job, false);
}

static void
s_store_planned (job_t *job)
{
    //  A tail needs every block before it cached, or its bytes would
    //  describe a prefix the server cannot serve
    if (job->matched < job->kv_first) {
        char detail [160];
        snprintf (detail, sizeof (detail), "STORE_TAIL from block %zu, but only the first %zu "
                  "blocks of the prompt are cached", job->kv_first, job->matched);
        kvt_scheduler_job_fail (job, -ENOENT, detail);
        return;
    }
    kvt_scheduler_reserve (job, s_store_reserved);
}

static void
s_store_admitted (job_t *job)
{
    kvt_scheduler_plan (job, s_store_planned);
}

//  STORE (the KV of every full block) and STORE_TAIL (the KV of the full
//  blocks from 'first' on; the ones before must be cached).
static int
s_store_start (self_t *self, kvt_msg_t **msg_p, int tenant_field, int tokens_field,
               int kv_field, uint64_t first)
{
    size_t tokens, bytes;
    kvt_msg_array (*msg_p, tokens_field, &tokens);
    kvt_msg_bin (*msg_p, kv_field, &bytes);
    size_t blocks = tokens / (size_t) self->shape.block_tokens;
    const char *name = kvt_msg_name (kvt_msg_id (*msg_p));
    if (first > blocks) {
        kvt_msg_t *reply = kvt_msg_error_new (*msg_p, -EINVAL,
            "%s from block %" PRIu64 " of a prompt of %zu full blocks", name, first, blocks);
        kvt_scheduler_send_client (self, &reply);
        return 0;
    }
    if (bytes != (blocks - first) * self->block_bytes) {
        kvt_msg_t *reply = kvt_msg_error_new (*msg_p, -EINVAL,
            "%s of %zu full blocks needs %zu bytes of KV, got %zu", name,
            blocks - (size_t) first, (blocks - (size_t) first) * self->block_bytes, bytes);
        kvt_scheduler_send_client (self, &reply);
        return 0;
    }
    job_t *job = kvt_scheduler_job_new (self, msg_p);
    job->kv_field = kv_field;
    job->kv_first = (size_t) first;
    int rc = kvt_scheduler_job_prepare (job, tenant_field, tokens_field);
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    if (first > 0 && !self->caching) {
        kvt_scheduler_job_fail (job, -ENOENT, "STORE_TAIL needs a cached prefix, and this "
                                "server runs with scheduler/caching = 0");
        return 0;
    }
    kvt_scheduler_admit (job, s_store_admitted);
    return 0;
}

static int
s_handle_store (self_t *self, kvt_msg_t **msg_p)
{
    return s_store_start (self, msg_p, KVT_STORE_TENANT, KVT_STORE_TOKENS, KVT_STORE_KV, 0);
}

static int
s_handle_store_tail (self_t *self, kvt_msg_t **msg_p)
{
    return s_store_start (self, msg_p, KVT_STORE_TAIL_TENANT, KVT_STORE_TAIL_TOKENS,
                          KVT_STORE_TAIL_KV,
                          kvt_msg_u64 (*msg_p, KVT_STORE_TAIL_FROM_BLOCK));
}

//  --------------------------------------------------------------------------
//  DEMOTE (admin): move least-recently-used blocks one tier down

static void
s_demoted (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    job_t *job = (job_t *) arg;
    if (rc) {
        kvt_scheduler_job_fail (job, rc, "demotion failed");
        return;
    }
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_DEMOTE_OK);
    kvt_msg_set_u64 (reply, KVT_DEMOTE_OK_MOVED, kvt_msg_u64 (*reply_p, KVT_MIG_DEMOTE_OK_MOVED));
    kvt_scheduler_send_client (self, &reply);
    kvt_scheduler_job_end (job, false);
}

static int
s_handle_demote (self_t *self, kvt_msg_t **msg_p)
{
    uint64_t from = kvt_msg_u64 (*msg_p, KVT_DEMOTE_FROM_TIER);
    uint64_t to = kvt_msg_u64 (*msg_p, KVT_DEMOTE_TO_TIER);
    if (from >= KVT_TIER_NVME || to != from + 1) {
        kvt_msg_t *reply = kvt_msg_error_new (*msg_p, -EINVAL, "DEMOTE moves one tier down: "
            "from_tier 0 to_tier 1, or from_tier 1 to_tier 2 (got %" PRIu64 " -> %" PRIu64 ")",
            from, to);
        kvt_scheduler_send_client (self, &reply);
        kvt_actor_count (self->actor, "rejected", 1);
        return 0;
    }
    job_t *job = kvt_scheduler_job_new (self, msg_p);
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_DEMOTE);
    kvt_msg_set_u64 (msg, KVT_MIG_DEMOTE_FROM_TIER, from);
    kvt_msg_set_u64 (msg, KVT_MIG_DEMOTE_TO_TIER, to);
    kvt_msg_set_u64 (msg, KVT_MIG_DEMOTE_MAX_BLOCKS, kvt_msg_u64 (job->request,
                                                                  KVT_DEMOTE_MAX_BLOCKS));
    kvt_actor_call (self->actor, "migration", &msg, s_demoted, job);
    return 0;
}

//  --------------------------------------------------------------------------
//  STATS: our counters and every actor's, in one map

static void
s_stats_part (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    job_t *job = (job_t *) arg;
    if (rc == 0)
        for (size_t k = 0; k < kvt_msg_map_size (*reply_p, KVT_STATS_OK_COUNTERS); k++)
            kvt_msg_map_add (job->result, KVT_STATS_OK_COUNTERS,
                             kvt_msg_map_key (*reply_p, KVT_STATS_OK_COUNTERS, k),
                             kvt_msg_map_value (*reply_p, KVT_STATS_OK_COUNTERS, k));
    if (--job->pending == 0) {
        kvt_msg_t *reply = job->result;
        job->result = NULL;
        kvt_scheduler_send_client (self, &reply);
        kvt_scheduler_job_end (job, false);
    }
}

static int
s_handle_stats (self_t *self, kvt_msg_t **msg_p)
{
    job_t *job = kvt_scheduler_job_new (self, msg_p);
    job->result = kvt_msg_reply_new (job->request, KVT_MSG_STATS_OK);
    kvt_actor_gauge (self->actor, "jobs_in_flight", self->jobs - 1);
    kvt_actor_add_counters (self->actor, job->result, KVT_STATS_OK_COUNTERS);
    job->pending = S_PEER_COUNT;
    for (int k = 0; k < S_PEER_COUNT; k++) {
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_STATS);
        kvt_actor_call (self->actor, s_peers [k], &msg, s_stats_part, job);
    }
    return 0;
}

static int
s_handle_hello (self_t *self, kvt_msg_t **msg_p)
{
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_HELLO_OK);
    kvt_msg_set_str (reply, KVT_HELLO_OK_SERVER, "kvtier 0.1.0");
    kvt_msg_set_u64 (reply, KVT_HELLO_OK_PROTOCOL, KVT_PROTOCOL_VERSION);
    kvt_msg_set_u64 (reply, KVT_HELLO_OK_BLOCK_TOKENS, (uint64_t) self->shape.block_tokens);
    kvt_msg_set_u64 (reply, KVT_HELLO_OK_BLOCK_BYTES, self->block_bytes);
    kvt_msg_set_u64 (reply, KVT_HELLO_OK_LAYERS, (uint64_t) self->shape.layers);
    kvt_msg_set_u64 (reply, KVT_HELLO_OK_KV_HEADS, (uint64_t) self->shape.kv_heads);
    kvt_msg_set_u64 (reply, KVT_HELLO_OK_HEAD_DIM, (uint64_t) self->shape.head_dim);
    kvt_msg_set_u64 (reply, KVT_HELLO_OK_VOCAB, (uint64_t) self->vocab);
    kvt_msg_set_str (reply, KVT_HELLO_OK_DTYPE, "bf16");
    kvt_scheduler_send_client (self, &reply);
    return 0;
}

//  --------------------------------------------------------------------------
//  Front door

typedef int (s_client_fn) (self_t *self, kvt_msg_t **msg_p);

static s_client_fn *const s_client_handlers [KVT_MSG_COUNT] = {
    [KVT_MSG_HELLO]      = s_handle_hello,
    [KVT_MSG_LOOKUP]     = s_handle_lookup,
    [KVT_MSG_STORE]      = s_handle_store,
    [KVT_MSG_STORE_TAIL] = s_handle_store_tail,
    [KVT_MSG_LOAD]       = s_handle_load,
    [KVT_MSG_GENERATE]   = s_handle_generate,
    [KVT_MSG_STATS]      = s_handle_stats,
    [KVT_MSG_DEMOTE]     = s_handle_demote,
};

static int
s_frontdoor_ready (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void) loop;
    self_t *self = (self_t *) arg;
    kvt_msg_t *msg = NULL;
    int64_t start = kvt_now_us ();
    int rc = kvt_msg_recv_limited (sock, &msg, self->max_frame);
    if (rc == -EINTR)
        return 0;
    kvt_actor_count (self->actor, "requests", 1);
    int id = msg? kvt_msg_id (msg): 0;
    s_client_fn *handler = rc == 0? s_client_handlers [id]: NULL;
    if (rc == 0 && !handler)
        rc = -ENOTSUP;
    if (rc == 0 && self->jobs >= self->max_queue)
        rc = -EBUSY;
    if (rc == 0)
        rc = handler (self, &msg);
    if (rc && msg) {
        kvt_actor_count (self->actor, "rejected", 1);
        const char *why = rc == -EBADMSG? "malformed request (not a valid kvtier message)":
                          rc == KVT_EVERSION? "unsupported protocol version":
                          rc == -ENOTSUP? "unknown or non-client message type":
                          rc == -EMSGSIZE? "frame larger than scheduler/max_frame_bytes":
                          rc == -EBUSY? "too many requests in flight": "invalid request";
        kvt_msg_t *reply = kvt_msg_error_new (msg, rc, "%s", why);
        kvt_scheduler_send_client (self, &reply);
    }
    kvt_msg_destroy (&msg);
    kvt_actor_turn_end (self->actor, "client_", kvt_msg_name (id), start);
    return 0;
}

//  --------------------------------------------------------------------------
//  Life cycle

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->endpoint = strdup (kvt_config_str (config, "scheduler/endpoint"));
    self->ipc_endpoint = strdup (kvt_config_str (config, "scheduler/ipc_endpoint"));
    self->max_frame = (size_t) kvt_config_int (config, "scheduler/max_frame_bytes");
    self->max_queue = (size_t) kvt_config_int (config, "scheduler/max_queue");
    self->caching = kvt_config_int (config, "scheduler/caching") != 0;
    self->shape = kvt_runtime_block_shape (config);
    self->block_bytes = kvt_block_bytes (&self->shape);
    self->vocab = (int) kvt_config_int (config, "model/vocab");
    self->gpu_capacity = kvt_layer_shard_gpu_slots (config);     //  Slots (#5: layer sharding)
    self->compute_timeout_ms = kvt_config_int (config, "runtime/compute_timeout_ms");
    self->waiting = zlist_new ();
    self->prefetch_waiting = kvt_config_int (config, "scheduler/prefetch_waiting") != 0;
    self->stream_promotion = kvt_config_int (config, "migration/stream_promotion") != 0;
    //  A plan piece: plan_piece_kib of KV, at least plan_piece_min_blocks
    int64_t piece_kib = kvt_config_int (config, "scheduler/plan_piece_kib");
    int64_t min_blocks = kvt_config_int (config, "scheduler/plan_piece_min_blocks");
    size_t piece = ((size_t) (piece_kib > 0? piece_kib: 0) << 10) / self->block_bytes;
    size_t least = min_blocks > 1? (size_t) min_blocks: 1;
    self->plan_piece_blocks = piece_kib <= 0? 0: piece < least? least: piece;
    self->promotions_overlap = kvt_config_int (config, "migration/overlap_upkeep") == 2;
    int64_t percent = kvt_config_int (config, "scheduler/prefetch_host_percent");
    self->prefetch_budget = (size_t) (percent > 0? percent: 0)
                          * (size_t) kvt_config_int (config, "tier_host/capacity_blocks") / 100;
    return self;
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        zsock_destroy (&self->frontdoor);
        //  Jobs still waiting for admission never started: nothing to release
        job_t *job;
        while ((job = (job_t *) zlist_pop (self->waiting)))
            kvt_scheduler_job_free (job);
        zlist_destroy (&self->waiting);
        //  A front door bound to a file leaves no file behind
        if (strncmp (self->ipc_endpoint, "ipc://", 6) == 0)
            unlink (self->ipc_endpoint + 6);
        free (self->endpoint);
        free (self->ipc_endpoint);
        free (self);
        *self_p = NULL;
    }
}

//  Read a rate key: "" keeps 'fallback'; else a number > 0. Returns 0 or
//  KVT_ECONFIG (logged, naming the key).
static int
s_rate_key (const kvt_config_t *config, const char *path, double fallback, double *rate)
{
    const char *text = kvt_config_str (config, path);
    *rate = fallback;
    if (!*text)
        return 0;
    char *end;
    *rate = strtod (text, &end);
    if (*end || !(*rate > 0)) {
        kvt_log_error ("scheduler: config key '%s' needs a number > 0 or \"\", not '%s'",
                       path, text);
        return KVT_ECONFIG;
    }
    return 0;
}

//  The fetch-or-recompute cost model, from config and the calibration file.
static int
s_cost_model_start (self_t *self)
{
    const kvt_config_t *config = kvt_actor_config (self->actor);
    const char *policy = kvt_config_str (config, "scheduler/fetch_policy");
    if (!streq (policy, "always") && !streq (policy, "cost")) {
        kvt_log_error ("scheduler: config key 'scheduler/fetch_policy' must be always or cost, "
                       "not '%s'", policy);
        return KVT_ECONFIG;
    }
    self->fetch_by_cost = streq (policy, "cost");
    kvt_sim_calibration_t calibration;
    kvt_sim_calibration_defaults (&calibration);
    const char *path = kvt_config_str (config, "scheduler/calibration");
    char *error = NULL;
    if (*path && kvt_sim_calibration_load (&calibration, path, &error)) {
        kvt_log_error ("scheduler: config key 'scheduler/calibration': %s", error);
        free (error);
        return KVT_ECONFIG;
    }
    double h2d, nvme;
    if (s_rate_key (config, "scheduler/h2d_GBps", calibration.h2d_GBps, &h2d)
    ||  s_rate_key (config, "scheduler/nvme_read_GBps", calibration.nvme_read_GBps, &nvme))
        return KVT_ECONFIG;
    double bytes = (double) self->block_bytes;
    self->fetch_us [KVT_TIER_GPU] = 0;
    self->fetch_us [KVT_TIER_HOST] = bytes / (h2d * 1e3);         //  GB/s = 1e3 bytes/us
    self->fetch_us [KVT_TIER_NVME] = bytes / (nvme * 1e3) + self->fetch_us [KVT_TIER_HOST];
    self->prefill_tokens_per_s = calibration.prefill_tokens_per_s > 0
                               ? calibration.prefill_tokens_per_s: 10000;
    return 0;
}

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    int rc = s_cost_model_start (self);
    if (rc)
        return rc;
    self->gpu = kvt_arena_find ("gpu");
    self->gpu_shard = kvt_arena_find (KVT_LAYER_SHARD_ARENA);   //  NULL unless sharded (#5)
    if (!self->gpu)
        return -ENOENT;
    self->frontdoor = zsock_new (ZMQ_ROUTER);
    assert (self->frontdoor);
    zsock_set_router_mandatory (self->frontdoor, 1);
    zsock_set_sndtimeo (self->frontdoor, 100);
    //  Protect memory from absurd frames before we even see them
    zsock_set_maxmsgsize (self->frontdoor, (int64_t) self->max_frame * 2 + 4096);
    const char *endpoints [] = { self->endpoint, self->ipc_endpoint };
    for (int k = 0; k < 2; k++) {
        if (!*endpoints [k])
            continue;
        if (zsock_bind (self->frontdoor, "%s", endpoints [k]) < 0) {
            kvt_log_error ("scheduler: cannot bind the front door %s: %s", endpoints [k],
                           zmq_strerror (errno));
            return -errno? -errno: -EADDRINUSE;
        }
    }
    zloop_reader (kvt_actor_loop (self->actor), self->frontdoor, s_frontdoor_ready, self);
    kvt_log_info ("scheduler: serving on %s and %s", self->endpoint, self->ipc_endpoint);
    return 0;
}

const kvt_actor_def_t kvt_scheduler_def = {
    .name = "scheduler",
    .create = s_self_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .peers = s_peers,
};
