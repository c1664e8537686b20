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
    compute timeout quarantines the lot, as it does the GPU slots.
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
    tokens / ttft_us of each run), starting from the calibration's
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

#include "kvt_classes.h"
#include "kvt_actors.h"
#include "kvt_sim.h"

#define S_MAX_NEW_TOKENS 4096       //  Longest decode one request may ask

typedef struct _self_t self_t;

typedef struct _s_job_t_ {
    self_t *self;                   //  Owner
    kvt_msg_t *request;             //  Client request, with its envelope
    int64_t admitted_us;            //  When it arrived
    int64_t phase_us;               //  When its current phase began
    uint32_t *tokens;               //  Prompt
    size_t token_count;             //  Tokens in prompt
    uint64_t *hashes;               //  Chained hash of each full block
    size_t block_count;             //  Full blocks in the prompt
    uint64_t *tiers;                //  Where each matched block was
    uint64_t *slots;                //  GPU slot of every full block (after planning)
    size_t matched;                 //  Leading blocks found in cache
    size_t pinned;                  //  Leading hashes pinned in the index
    size_t reserved_from;           //  slots [reserved_from..] came from MIG_RESERVE
    size_t reserved_count;          //  How many (given back on failure)
    uint64_t from_tier [KVT_TIER_COUNT];   //  Prefix blocks served per tier
    kvt_msg_t *result;              //  COMP_RUN_OK, kept for the reply
    int pending;                    //  STATS: peers not yet answered
    size_t gpu_budget;              //  GPU blocks this job was admitted with
    void (*start) (struct _s_job_t_ *job);   //  What to run once admitted
    bool admitted;                  //  Left the waiting list?
    bool prefetching;               //  A prefetch lookup or MIG_PREFETCH is under way
    bool start_deferred;            //  Admitted during the prefetch: start when it ends
    size_t prefetch_reserved;       //  Host blocks of the prefetch budget asked for
    uint64_t *staged;               //  Hashes migration staged for us (pinned for us)
    size_t staged_count;            //  Entries in staged
    bool *prestaged;                //  Per block: staged by our prefetch
    uint64_t *host_slots;           //  Stream promotion: host slot per matched block
    uint64_t *stream_old;           //  Stream promotion: each block's slot in its tier
    uint64_t *stream_gpu;           //  Stream promotion: its reserved GPU slot
    bool stream_open;               //  A stream promotion awaits MIG_PROMOTE_END
} s_job_t;

struct _self_t {
    kvt_actor_t *actor;             //  Our skeleton
    zsock_t *frontdoor;             //  ROUTER for clients
    char *endpoint;                 //  tcp:// front door
    char *ipc_endpoint;             //  ipc:// front door
    size_t max_frame;               //  Larger client frames get EMSGSIZE
    size_t max_queue;               //  Jobs in flight beyond this get EBUSY
    size_t jobs;                    //  Jobs in flight
    bool caching;                   //  Reuse cached blocks?
    kvt_block_shape_t shape;        //  Block geometry
    size_t block_bytes;             //  Bytes per block
    int vocab;                      //  Token ids are < vocab
    kvt_arena_t *gpu;               //  GPU slab, for STORE and LOAD bytes
    size_t gpu_capacity;            //  Blocks in the GPU tier
    size_t gpu_admitted;            //  GPU blocks held by admitted jobs
    zlist_t *waiting;               //  Jobs waiting for GPU room, in arrival order
    int64_t compute_timeout_ms;     //  Longest wait for one model run
    bool prefetch_waiting;          //  Stage waiting jobs' NVMe blocks into host?
    size_t prefetch_budget;         //  Host blocks waiting jobs may hold staged
    size_t prefetch_held;           //  Host blocks staged or being staged for them
    bool fetch_by_cost;             //  fetch_policy = cost
    double fetch_us [KVT_TIER_COUNT];   //  Modeled time to bring one block to the GPU
    double prefill_tokens_per_s;    //  EWMA of the measured prefill rate
    bool prefill_measured;          //  Has compute reported a rate yet?
    bool stream_promotion;          //  Prefixes stream to compute layer by layer
};

static const char *const s_peers [] = {
    "prefix_index", "migration", "compute", "tier_gpu", "tier_host", "tier_nvme", NULL };
#define S_PEER_COUNT 6

//  --------------------------------------------------------------------------
//  Jobs

static s_job_t *
s_job_new (self_t *self, kvt_msg_t **request_p)
{
    s_job_t *job = (s_job_t *) kvt_zmalloc (sizeof (s_job_t));
    job->self = self;
    job->request = *request_p;
    *request_p = NULL;
    job->admitted_us = job->phase_us = kvt_now_us ();
    self->jobs++;
    return job;
}

static void
s_fire (self_t *self, const char *peer, int id, int field, const uint64_t *values, size_t count)
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
    s_job_t *job;
    while ((job = (s_job_t *) zlist_first (self->waiting))
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

static void s_job_fail (s_job_t *job, int rc, const char *what);
static void s_prefetch (s_job_t *job);

static void
s_admit (s_job_t *job, void (*start) (s_job_t *job))
{
    self_t *self = job->self;
    if (job->block_count > self->gpu_capacity) {
        char detail [160];
        snprintf (detail, sizeof (detail), "the prompt needs %zu blocks on the GPU tier, "
                  "which holds %zu (tier_gpu/capacity_blocks)", job->block_count,
                  self->gpu_capacity);
        s_job_fail (job, -ENOSPC, detail);
        return;
    }
    job->start = start;
    zlist_append (self->waiting, job);
    s_admit_waiting (self);
    if (!job->admitted && self->prefetch_waiting && self->caching && job->block_count)
        s_prefetch (job);
}

//  Add the time since the job's last phase change to counter 'phase'.
static void
s_phase (s_job_t *job, const char *phase)
{
    int64_t now = kvt_now_us ();
    kvt_actor_count (job->self->actor, phase, (uint64_t) (now - job->phase_us));
    job->phase_us = now;
}

//  Drop the pins of the blocks our prefetch staged (our own match holds
//  its own pins on them by now, or the job is over).
static void
s_prefetch_release (s_job_t *job)
{
    self_t *self = job->self;
    s_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES, job->staged,
            job->staged_count);
    self->prefetch_held -= job->staged_count;
    job->staged_count = 0;
    kvt_freen (job->staged);
}

//  Free a job's memory (no messages).
static void
s_job_free (s_job_t *job)
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

//  Send MIG_PROMOTE_END for matched blocks [first, last) of the job's
//  stream promotion: commit, or undo. 'cb' (may be NULL) gets the answer.
static void
s_stream_end (s_job_t *job, size_t first, size_t last, bool commit, kvt_actor_reply_fn *cb)
{
    if (last <= first)
        return;
    size_t count = last - first;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_PROMOTE_END);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HASHES, job->hashes + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_TIERS, job->tiers + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_SLOTS, job->stream_old + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_GPU_SLOTS, job->stream_gpu + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HOST_SLOTS, job->host_slots + first, count);
    kvt_msg_set_u64 (msg, KVT_MIG_PROMOTE_END_COMMIT, commit);
    kvt_actor_call (job->self->actor, "migration", &msg, cb, job);
}

//  Release what the job holds (pins, reserved slots) and free it.
static void
s_job_end (s_job_t *job, bool release_reserved)
{
    self_t *self = job->self;
    if (job->stream_open) {
        //  The blocks never reached compute (or it failed): undo the move
        s_stream_end (job, 0, job->matched, false, NULL);
        job->stream_open = false;
    }
    s_prefetch_release (job);
    s_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES, job->hashes,
            job->pinned);
    if (release_reserved)
        s_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                job->slots + job->reserved_from, job->reserved_count);
    self->gpu_admitted -= job->gpu_budget;
    s_job_free (job);
    self->jobs--;
    s_admit_waiting (self);
}

static void
s_send_client (self_t *self, kvt_msg_t **reply_p)
{
    if (kvt_msg_send (reply_p, self->frontdoor))
        kvt_actor_count (self->actor, "replies_undelivered", 1);   //  Client left
}

static void
s_job_fail (s_job_t *job, int rc, const char *what)
{
    kvt_msg_t *reply = kvt_msg_error_new (job->request, rc, "%s", what);
    kvt_actor_count (job->self->actor, "errors", 1);
    s_send_client (job->self, &reply);
    s_job_end (job, true);
}

//  Validate the tokens of a request and hash its full blocks.
static int
s_job_prepare (s_job_t *job, int tenant_field, int tokens_field)
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
s_prefetch_done (s_job_t *job, int rc)
{
    job->prefetching = false;
    if (job->start_deferred) {
        job->start_deferred = false;
        kvt_actor_count (job->self->actor, "prefetch_delayed_starts", 1);
        if (rc == -ECANCELED)       //  Shutting down: do not start new work
            s_job_fail (job, rc, "the server is stopping");
        else
            job->start (job);
    }
}

static void
s_prefetched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_job_t *job = (s_job_t *) arg;
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
    s_job_t *job = (s_job_t *) arg;
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
s_prefetch (s_job_t *job)
{
    job->prefetching = true;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MATCH);
    kvt_msg_set_array (msg, KVT_IDX_MATCH_HASHES, job->hashes, job->block_count);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PIN, 0);
    kvt_actor_call (job->self->actor, "prefix_index", &msg, s_prefetch_matched, job);
}

//  --------------------------------------------------------------------------
//  Fetch or recompute: the leading 'matched' blocks of 'job' are cached
//  in job->tiers. Return how many of them to fetch: the cut c minimising
//  fetch time of blocks [0, c) + recompute time of blocks [c, matched),
//  the larger c on a tie. O(matched).

static size_t
s_fetch_cut (self_t *self, const s_job_t *job, size_t matched)
{
    double per_block = (double) self->shape.block_tokens / self->prefill_tokens_per_s * 1e6;
    double fetch = 0, best = (double) matched * per_block;   //  c = 0: recompute all
    size_t cut = 0;
    for (size_t c = 1; c <= matched; c++) {
        uint64_t tier = job->tiers [c - 1];
        fetch += tier < KVT_TIER_COUNT? self->fetch_us [tier]: 0;
        double cost = fetch + (double) (matched - c) * per_block;
        if (cost <= best) {
            best = cost;
            cut = c;
        }
    }
    return cut;
}

//  Fold one compute run into the prefill rate: 'tokens' computed before
//  the first token, which took 'ttft_us'. Short runs say little: skipped.
static void
s_prefill_measured (self_t *self, size_t tokens, uint64_t ttft_us)
{
    if (tokens < (size_t) self->shape.block_tokens || ttft_us == 0)
        return;
    double rate = (double) tokens / ((double) ttft_us / 1e6);
    self->prefill_tokens_per_s = self->prefill_measured
        ? 0.8 * self->prefill_tokens_per_s + 0.2 * rate: rate;
    self->prefill_measured = true;
    kvt_actor_gauge (self->actor, "prefill_tokens_per_s", (uint64_t) self->prefill_tokens_per_s);
}

//  --------------------------------------------------------------------------
//  Planning shared by GENERATE, LOAD and STORE:
//  match (pin) -> promote what is not on the GPU -> continue.

typedef void (s_step_fn) (s_job_t *job);

typedef struct {
    s_job_t *job;                   //  The job being planned
    s_step_fn *next;                //  What to do once the prefix is on the GPU
} s_plan_t;

static void
s_plan_promoted (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) self_ptr;
    s_plan_t *plan = (s_plan_t *) arg;
    s_job_t *job = plan->job;
    s_step_fn *next = plan->next;
    free (plan);
    if (rc) {
        s_job_fail (job, rc, "cannot bring the cached prefix to the GPU");
        return;
    }
    size_t count, failed_count;
    const uint64_t *gpu_slots = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_GPU_SLOTS, &count);
    const uint64_t *failed = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_FAILED, &failed_count);
    size_t cut = job->matched;
    for (size_t k = 0; k < failed_count; k++)
        if (failed [k] < cut)
            cut = failed [k];
    size_t host_count;
    const uint64_t *host_slots = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_HOST_SLOTS,
                                                &host_count);
    if (host_count > 0 && host_count == job->matched && count == job->matched) {
        //  Stream promotion: nothing moved yet; compute streams the blocks
        job->host_slots = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
        job->stream_old = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
        job->stream_gpu = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
        memcpy (job->host_slots, host_slots, count * sizeof (uint64_t));
        memcpy (job->stream_old, job->slots, count * sizeof (uint64_t));
        memcpy (job->stream_gpu, gpu_slots, count * sizeof (uint64_t));
        job->stream_open = true;
    }
    for (size_t k = 0; k < count && k < job->matched; k++)
        job->slots [k] = gpu_slots [k];
    if (cut < job->matched) {
        //  Stream promotion: the blocks past the cut stay where they are
        if (job->stream_open)
            s_stream_end (job, cut, job->matched, false, NULL);
        //  A block failed its checksum: recompute from there on. Blocks
        //  after it that did arrive stay cached for others, unpinned.
        kvt_actor_count (job->self->actor, "prefix_cut_by_misses", 1);
        s_fire (job->self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                job->hashes + cut, job->matched - cut);
        job->pinned = cut;
        job->matched = cut;
        //  Only the blocks before the cut are served from cache
        memset (job->from_tier, 0, sizeof (job->from_tier));
        for (size_t k = 0; k < cut; k++)
            if (job->tiers [k] < KVT_TIER_COUNT)
                job->from_tier [job->tiers [k]]++;
    }
    next (job);
}

static void
s_plan_matched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) self_ptr;
    s_plan_t *plan = (s_plan_t *) arg;
    s_job_t *job = plan->job;
    if (rc) {
        free (plan);
        s_job_fail (job, rc, "prefix lookup failed");
        return;
    }
    self_t *self = job->self;
    size_t matched;
    const uint64_t *tiers = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_TIERS, &matched);
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_SLOTS, NULL);
    job->matched = job->pinned = matched;
    for (size_t k = 0; k < matched; k++) {
        job->tiers [k] = tiers [k];
        job->slots [k] = slots [k];
    }
    if (self->fetch_by_cost && kvt_msg_id (job->request) == KVT_MSG_GENERATE) {
        size_t cut = s_fetch_cut (self, job, matched);
        if (cut < matched) {
            //  Cheaper to compute the rest again than to bring it up
            kvt_actor_count (self->actor, "blocks_recomputed_by_choice", matched - cut);
            s_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                    job->hashes + cut, matched - cut);
            job->matched = job->pinned = matched = cut;
        }
    }
    bool all_on_gpu = true;
    size_t hits = 0;
    for (size_t k = 0; k < matched; k++) {
        if (job->tiers [k] < KVT_TIER_COUNT)
            job->from_tier [job->tiers [k]]++;
        all_on_gpu = all_on_gpu && job->tiers [k] == KVT_TIER_GPU;
        hits += job->prestaged && job->prestaged [k] && job->tiers [k] == KVT_TIER_HOST;
    }
    kvt_actor_count (self->actor, "prefetch_hits", hits);
    //  Our own pins hold the staged blocks now
    s_prefetch_release (job);
    if (all_on_gpu) {
        s_step_fn *next = plan->next;
        free (plan);
        next (job);
        return;
    }
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_PROMOTE);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_HASHES, job->hashes, matched);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_TIERS, job->tiers, matched);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_SLOTS, job->slots, matched);
    //  Only GENERATE runs compute, which can stream the blocks in itself
    kvt_msg_set_u64 (msg, KVT_MIG_PROMOTE_STREAM,
                     self->stream_promotion && kvt_msg_id (job->request) == KVT_MSG_GENERATE);
    kvt_actor_call (job->self->actor, "migration", &msg, s_plan_promoted, plan);
}

static void
s_plan (s_job_t *job, s_step_fn *next)
{
    if (!job->self->caching || job->block_count == 0) {
        next (job);                 //  Nothing to reuse
        return;
    }
    s_plan_t *plan = (s_plan_t *) kvt_zmalloc (sizeof (s_plan_t));
    plan->job = job;
    plan->next = next;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MATCH);
    kvt_msg_set_array (msg, KVT_IDX_MATCH_HASHES, job->hashes, job->block_count);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PIN, 1);
    kvt_actor_call (job->self->actor, "prefix_index", &msg, s_plan_matched, plan);
}

//  Reserve GPU slots for blocks [matched, block_count), then 'next'.
static void
s_reserved (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) self_ptr;
    s_plan_t *plan = (s_plan_t *) arg;
    s_job_t *job = plan->job;
    s_step_fn *next = plan->next;
    free (plan);
    if (rc) {
        s_job_fail (job, rc, "cannot reserve GPU blocks");
        return;
    }
    size_t count;
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_MIG_RESERVE_OK_SLOTS, &count);
    job->reserved_from = job->matched;
    job->reserved_count = count;
    for (size_t k = 0; k < count; k++)
        job->slots [job->matched + k] = slots [k];
    if (count != job->block_count - job->matched) {
        s_job_fail (job, -ENOSPC, "GPU reservation came back short");
        return;
    }
    next (job);
}

static void
s_reserve (s_job_t *job, s_step_fn *next)
{
    s_plan_t *plan = (s_plan_t *) kvt_zmalloc (sizeof (s_plan_t));
    plan->job = job;
    plan->next = next;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_RESERVE);
    kvt_msg_set_u64 (msg, KVT_MIG_RESERVE_COUNT, job->block_count - job->matched);
    kvt_actor_call (job->self->actor, "migration", &msg, s_reserved, plan);
}

//  Insert blocks [matched, block_count) as GPU-resident; free duplicates.
//  'arg' is a copy of the inserted slots, [0] = how many follow.
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
        s_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS, spare, spare_count);
        kvt_actor_count (self->actor, "duplicate_blocks", spare_count);
        free (spare);
    }
    //  On failure the slots' fate is unknown: leaving them allocated is safe
    free (slots);
}

static void
s_insert_computed (s_job_t *job)
{
    self_t *self = job->self;
    size_t count = job->block_count - job->matched;
    if (!self->caching || count == 0) {
        s_fire (self, "tier_gpu", KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                job->slots + job->matched, count);
        return;
    }
    //  A block another request inserted first is a duplicate: the index
    //  keeps the first copy and says which of ours to free (s_inserted)
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_INSERT);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_HASHES, job->hashes + job->matched, count);
    kvt_msg_set_u64 (msg, KVT_IDX_INSERT_TIER, KVT_TIER_GPU);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_SLOTS, job->slots + job->matched, count);
    uint64_t *slots = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    slots [0] = count;
    memcpy (slots + 1, job->slots + job->matched, count * sizeof (uint64_t));
    kvt_actor_call (self->actor, "prefix_index", &msg, s_inserted, slots);
}

//  --------------------------------------------------------------------------
//  GENERATE

static void s_generate_answer (self_t *self, s_job_t *job, kvt_msg_t *result);
static void s_generate_stream_ended (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg);

static void
s_generate_computed (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_job_t *job = (s_job_t *) arg;
    if (rc == -ETIMEDOUT) {
        //  Compute may still be writing into the job's slots: they must
        //  not be reused. Keep them (and the prefix pins) out of
        //  circulation for good rather than risk a torn block.
        kvt_actor_count (self->actor, "slots_quarantined", job->block_count);
        job->reserved_count = 0;
        job->pinned = 0;
        job->stream_open = false;   //  Its host and staging slots too
        s_job_fail (job, rc, "compute did not answer within runtime/compute_timeout_ms");
        return;
    }
    if (rc) {
        s_job_fail (job, rc, "compute failed");
        return;
    }
    if (job->stream_open && job->matched == 0)
        job->stream_open = false;   //  Cut to nothing: nothing to end
    if (job->stream_open) {
        //  The streamed blocks are in their GPU slots: commit the move
        //  before anything unpins them, then answer
        s_phase (job, "us_computing");
        job->stream_open = false;
        job->result = *reply_p;
        *reply_p = NULL;
        s_stream_end (job, 0, job->matched, true, s_generate_stream_ended);
        return;
    }
    s_phase (job, "us_computing");
    s_generate_answer (self, job, *reply_p);
}

//  MIG_PROMOTE_END answered: answer the client from the kept COMP_RUN_OK.
static void
s_generate_stream_ended (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) reply_p;
    self_t *self = (self_t *) self_ptr;
    s_job_t *job = (s_job_t *) arg;
    if (rc) {
        //  The tokens are good; where the streamed blocks stand is not
        kvt_log_warn ("scheduler: ending a stream promotion failed: %s", kvt_strerror (rc));
        kvt_actor_count (self->actor, "stream_end_errors", 1);
    }
    kvt_msg_t *result = job->result;
    job->result = NULL;
    s_generate_answer (self, job, result);
    kvt_msg_destroy (&result);
}

//  Compute answered 'result' (borrowed): insert the computed blocks,
//  answer the client, end the job.
static void
s_generate_answer (self_t *self, s_job_t *job, kvt_msg_t *result)
{
    s_insert_computed (job);
    job->reserved_count = 0;        //  Owned by the index (or freed) now
    size_t count;
    const uint64_t *tokens = kvt_msg_array (result, KVT_COMP_RUN_OK_TOKENS, &count);
    uint64_t compute_ttft = kvt_msg_u64 (result, KVT_COMP_RUN_OK_TTFT_US);
    uint64_t compute_total = kvt_msg_u64 (result, KVT_COMP_RUN_OK_TOTAL_US);
    s_prefill_measured (self, job->token_count - job->matched * (size_t) self->shape.block_tokens,
                        compute_ttft);
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
    s_send_client (self, &reply);
    s_job_end (job, false);
}

static void
s_generate_run (s_job_t *job)
{
    s_phase (job, "us_reserving_gpu");
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
        kvt_actor_count (job->self->actor, "blocks_streamed", streamed);
    }
    kvt_actor_call_timeout (job->self->actor, "compute", &msg, s_generate_computed, job,
                            job->self->compute_timeout_ms);
}

static void
s_generate_planned (s_job_t *job)
{
    s_phase (job, "us_finding_prefix");
    s_reserve (job, s_generate_run);
}

static void
s_generate_admitted (s_job_t *job)
{
    s_phase (job, "us_waiting_admission");
    s_plan (job, s_generate_planned);
}

static int
s_handle_generate (self_t *self, kvt_msg_t **msg_p)
{
    size_t count;
    kvt_msg_array (*msg_p, KVT_GENERATE_TOKENS, &count);
    const char *why = count == 0? "GENERATE needs at least one prompt token":
        kvt_msg_u64 (*msg_p, KVT_GENERATE_MAX_NEW_TOKENS) > S_MAX_NEW_TOKENS?
            "max_new_tokens is above 4096": NULL;
    if (why) {
        kvt_msg_t *reply = kvt_msg_error_new (*msg_p, -EINVAL, "%s", why);
        s_send_client (self, &reply);
        kvt_actor_count (self->actor, "rejected", 1);
        return 0;
    }
    s_job_t *job = s_job_new (self, msg_p);
    int rc = s_job_prepare (job, KVT_GENERATE_TENANT, KVT_GENERATE_TOKENS);
    if (rc) {
        s_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    s_admit (job, s_generate_admitted);
    return 0;
}

//  --------------------------------------------------------------------------
//  LOOKUP: where is the cached prefix? (no pins, no moves)

static void
s_lookup_matched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_job_t *job = (s_job_t *) arg;
    if (rc) {
        s_job_fail (job, rc, "prefix lookup failed");
        return;
    }
    size_t matched;
    const uint64_t *tiers = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_TIERS, &matched);
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_LOOKUP_OK);
    kvt_msg_set_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS, matched);
    kvt_msg_set_array (reply, KVT_LOOKUP_OK_TIERS, tiers, matched);
    kvt_msg_set_array (reply, KVT_LOOKUP_OK_HASHES, job->hashes, matched);
    s_send_client (self, &reply);
    s_job_end (job, false);
}

static int
s_handle_lookup (self_t *self, kvt_msg_t **msg_p)
{
    s_job_t *job = s_job_new (self, msg_p);
    int rc = s_job_prepare (job, KVT_LOOKUP_TENANT, KVT_LOOKUP_TOKENS);
    if (rc) {
        s_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MATCH);
    kvt_msg_set_array (msg, KVT_IDX_MATCH_HASHES, job->hashes, job->block_count);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PIN, 0);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_lookup_matched, job);
    return 0;
}

//  --------------------------------------------------------------------------
//  LOAD: the KV bytes of the cached prefix, through the GPU tier

static void
s_load_planned (s_job_t *job)
{
    self_t *self = job->self;
    size_t bytes = job->matched * self->block_bytes;
    void *kv = kvt_zmalloc (bytes + 1);
    //  memcpy, or cudaMemcpy when the GPU tier's slab is device memory
    for (size_t k = 0; k < job->matched; k++)
        if (kvt_arena_copy (self->gpu, (char *) kv + k * self->block_bytes,
                            kvt_arena_block (self->gpu, job->slots [k]), self->block_bytes)) {
            kvt_log_error ("scheduler: LOAD could not copy a block from the GPU tier");
            kvt_actor_count (self->actor, "copy_errors", 1);
        }
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_LOAD_OK);
    kvt_msg_set_u64 (reply, KVT_LOAD_OK_BLOCKS, job->matched);
    kvt_msg_set_bin_owned (reply, KVT_LOAD_OK_KV, &kv, bytes);
    kvt_msg_set_array (reply, KVT_LOAD_OK_TIERS, job->tiers, job->matched);
    kvt_actor_count (self->actor, "loaded_blocks", job->matched);
    s_send_client (self, &reply);
    s_job_end (job, false);
}

static void
s_load_admitted (s_job_t *job)
{
    s_plan (job, s_load_planned);
}

static int
s_handle_load (self_t *self, kvt_msg_t **msg_p)
{
    s_job_t *job = s_job_new (self, msg_p);
    int rc = s_job_prepare (job, KVT_LOAD_TENANT, KVT_LOAD_TOKENS);
    if (rc) {
        s_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    s_admit (job, s_load_admitted);
    return 0;
}

//  --------------------------------------------------------------------------
//  STORE: a client's KV for blocks not cached yet goes into the GPU tier

static void
s_store_reserved (s_job_t *job)
{
    self_t *self = job->self;
    const uint8_t *kv = (const uint8_t *) kvt_msg_bin (job->request, KVT_STORE_KV, NULL);
    for (size_t k = job->matched; k < job->block_count; k++)
        if (kvt_arena_copy (self->gpu, kvt_arena_block (self->gpu, job->slots [k]),
                            kv + k * self->block_bytes, self->block_bytes)) {
            kvt_log_error ("scheduler: STORE could not copy a block into the GPU tier");
            kvt_actor_count (self->actor, "copy_errors", 1);
        }
    size_t stored = job->block_count - job->matched;
    s_insert_computed (job);
    job->reserved_count = 0;
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_STORE_OK);
    kvt_msg_set_u64 (reply, KVT_STORE_OK_STORED_BLOCKS, self->caching? stored: 0);
    kvt_msg_set_u64 (reply, KVT_STORE_OK_PRESENT_BLOCKS, job->matched);
    kvt_actor_count (self->actor, "stored_blocks", stored);
    s_send_client (self, &reply);
    s_job_end (job, false);
}

static void
s_store_planned (s_job_t *job)
{
    s_reserve (job, s_store_reserved);
}

static void
s_store_admitted (s_job_t *job)
{
    s_plan (job, s_store_planned);
}

static int
s_handle_store (self_t *self, kvt_msg_t **msg_p)
{
    size_t tokens, bytes;
    kvt_msg_array (*msg_p, KVT_STORE_TOKENS, &tokens);
    kvt_msg_bin (*msg_p, KVT_STORE_KV, &bytes);
    size_t blocks = tokens / (size_t) self->shape.block_tokens;
    if (bytes != blocks * self->block_bytes) {
        kvt_msg_t *reply = kvt_msg_error_new (*msg_p, -EINVAL,
            "STORE of %zu full blocks needs %zu bytes of KV, got %zu", blocks,
            blocks * self->block_bytes, bytes);
        s_send_client (self, &reply);
        return 0;
    }
    s_job_t *job = s_job_new (self, msg_p);
    int rc = s_job_prepare (job, KVT_STORE_TENANT, KVT_STORE_TOKENS);
    if (rc) {
        s_job_fail (job, rc, "token id outside the vocabulary (model/vocab)");
        return 0;
    }
    s_admit (job, s_store_admitted);
    return 0;
}

//  --------------------------------------------------------------------------
//  DEMOTE (admin): move least-recently-used blocks one tier down

static void
s_demoted (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_job_t *job = (s_job_t *) arg;
    if (rc) {
        s_job_fail (job, rc, "demotion failed");
        return;
    }
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_DEMOTE_OK);
    kvt_msg_set_u64 (reply, KVT_DEMOTE_OK_MOVED, kvt_msg_u64 (*reply_p, KVT_MIG_DEMOTE_OK_MOVED));
    s_send_client (self, &reply);
    s_job_end (job, false);
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
        s_send_client (self, &reply);
        kvt_actor_count (self->actor, "rejected", 1);
        return 0;
    }
    s_job_t *job = s_job_new (self, msg_p);
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
    s_job_t *job = (s_job_t *) arg;
    if (rc == 0)
        for (size_t k = 0; k < kvt_msg_map_size (*reply_p, KVT_STATS_OK_COUNTERS); k++)
            kvt_msg_map_add (job->result, KVT_STATS_OK_COUNTERS,
                             kvt_msg_map_key (*reply_p, KVT_STATS_OK_COUNTERS, k),
                             kvt_msg_map_value (*reply_p, KVT_STATS_OK_COUNTERS, k));
    if (--job->pending == 0) {
        kvt_msg_t *reply = job->result;
        job->result = NULL;
        s_send_client (self, &reply);
        s_job_end (job, false);
    }
}

static int
s_handle_stats (self_t *self, kvt_msg_t **msg_p)
{
    s_job_t *job = s_job_new (self, msg_p);
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
    s_send_client (self, &reply);
    return 0;
}

//  --------------------------------------------------------------------------
//  Front door

typedef int (s_client_fn) (self_t *self, kvt_msg_t **msg_p);

static s_client_fn *const s_client_handlers [KVT_MSG_COUNT] = {
    [KVT_MSG_HELLO]    = s_handle_hello,
    [KVT_MSG_LOOKUP]   = s_handle_lookup,
    [KVT_MSG_STORE]    = s_handle_store,
    [KVT_MSG_LOAD]     = s_handle_load,
    [KVT_MSG_GENERATE] = s_handle_generate,
    [KVT_MSG_STATS]    = s_handle_stats,
    [KVT_MSG_DEMOTE]   = s_handle_demote,
};

static int
s_frontdoor_ready (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void) loop;
    self_t *self = (self_t *) arg;
    kvt_msg_t *msg = NULL;
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
        s_send_client (self, &reply);
    }
    kvt_msg_destroy (&msg);
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
    self->shape = (kvt_block_shape_t) {
        (int) kvt_config_int (config, "model/layers"),
        (int) kvt_config_int (config, "model/kv_heads"),
        (int) kvt_config_int (config, "model/head_dim"),
        (int) kvt_config_int (config, "model/block_tokens"), 2 };
    self->block_bytes = kvt_block_bytes (&self->shape);
    self->vocab = (int) kvt_config_int (config, "model/vocab");
    self->gpu_capacity = (size_t) kvt_config_int (config, "tier_gpu/capacity_blocks");
    self->compute_timeout_ms = kvt_config_int (config, "runtime/compute_timeout_ms");
    self->waiting = zlist_new ();
    self->prefetch_waiting = kvt_config_int (config, "scheduler/prefetch_waiting") != 0;
    self->stream_promotion = kvt_config_int (config, "migration/stream_promotion") != 0;
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
        s_job_t *job;
        while ((job = (s_job_t *) zlist_pop (self->waiting)))
            s_job_free (job);
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
