/*  =========================================================================
    kvt_scheduler_plan - a request's cached prefix brought to the GPU:
    match (pin) -> fetch or recompute -> promote -> continue

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@discuss
    A plan matches the request's prefix in the index (pinning it), keeps
    what is cheaper to fetch than to recompute (scheduler/fetch_policy),
    has migration bring the blocks off the GPU to it (MIG_PROMOTE: copied,
    or opened as a stream promotion that compute copies in layer by
    layer), and then calls the job's next step.
    In pieces (issue #3): a long prefix is matched with IDX_MATCH_PARTS,
    and the index answers each scheduler/plan_piece_kib of KV matched (at
    least plan_piece_min_blocks; an eighth of that at both ends of the
    prefix, kvt_prefix_index_part_size) as an IDX_MATCH_PART as soon as
    it has it. Each piece with blocks off the GPU goes to migration as its own
    MIG_PROMOTE at once, so the copy of the first piece starts while the
    index still matches the rest (a 1 GiB prefix of 64 KiB blocks: the
    match, ~1.5 ms, sat on the path before anything could cross). The
    match is still one request and one turn of the index's loop: the
    policy hears one request (its depths and its clock), and every block
    of the prefix is pinned before the index serves the victims call that
    makes room for the first piece, so a piece's promotion never evicts
    the request's own later blocks. Session 12's pieces, each a request
    of its own, had both wrong and shipped off. The floor in blocks: what
    pieces hide is per-block work, and a prefix of few large blocks has
    too little of it to pay a promotion's overhead per piece. Pieces pay
    only where migration runs the next job beside a promotion's copy
    (migration/overlap_upkeep = 2): else each piece's promotion waits
    for the last one's, and the link idles between them. They are not
    used for a stream promotion (one ticket for the whole run), nor where
    fetch_policy = cost could cut the prefix (that takes the whole match:
    here every tier's fetch costs no more than recomputing, so the cut is
    always the whole match). A piece's promotion that fails, or times
    out, fails the request once every piece out has answered, and the
    blocks of a piece whose answer is late stay pinned until it comes
    (kvt_scheduler_expect_late). Counters: plan_pieces (pieces answered
    in plans that went in pieces), plan_piece_promotes; us_plan_matching
    (from the match asked to its last answer) and us_plan_to_first_promote
    (to the plan's first MIG_PROMOTE), summed over plans.
@end
*/

#include "kvt_scheduler_int.h"

//  --------------------------------------------------------------------------
//  Fetch or recompute: the leading 'matched' blocks of a prompt are cached
//  in 'tiers' (the index's answer). Return how many of them to fetch: the
//  cut c minimising
//  fetch time of blocks [0, c) + recompute time of blocks [c, matched),
//  the larger c on a tie. O(matched).

//  Modeled time to compute one block again, in microseconds
static double
s_recompute_us (const self_t *self)
{
    return (double) self->shape.block_tokens / self->prefill_tokens_per_s * 1e6;
}

static size_t
s_fetch_cut (self_t *self, const uint64_t *tiers, size_t matched)
{
    double per_block = s_recompute_us (self);
    double fetch = 0, best = (double) matched * per_block;   //  c = 0: recompute all
    size_t cut = 0;
    for (size_t c = 1; c <= matched; c++) {
        uint64_t tier = tiers [c - 1];
        fetch += tier < KVT_TIER_COUNT? self->fetch_us [tier]: 0;
        double cost = fetch + (double) (matched - c) * per_block;
        if (cost <= best) {
            best = cost;
            cut = c;
        }
    }
    return cut;
}

//  A promotion (or a stream promotion's commit) that outlived the
//  scheduler's call: its prefix stays pinned until migration's late
//  answer says what it did (kvt_scheduler_expect_late).
typedef struct {
    uint64_t *hashes;               //  The prefix, pinned
    uint64_t *tiers;                //  Where each block was
    uint64_t *slots;                //  Its slot there
    size_t count;                   //  Entries in each
} s_late_t;

//  The late answer: release the prefix once nothing migration still does
//  can touch it. A stream promotion reserved GPU slots and staged its
//  NVMe blocks for a compute run that will not come: undone first
//  (MIG_PROMOTE_END commit 0 frees only slots the index does not know,
//  so the unpin need not wait for it). A copied promotion moved its
//  blocks in the index before answering; an ERROR moved nothing. At
//  shutdown (-ECANCELED) there is nothing left to release into.
static void
s_late_answered (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_late_t *late = (s_late_t *) arg;
    if (rc == -ECANCELED)
        ;                           //  Shutting down: nothing to release into
    else {
        size_t count = 0, host_count = 0;
        const uint64_t *gpu_slots = NULL, *host_slots = NULL;
        if (rc == 0 && kvt_msg_id (*reply_p) == KVT_MSG_MIG_PROMOTE_OK) {
            gpu_slots = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_GPU_SLOTS, &count);
            host_slots = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_HOST_SLOTS, &host_count);
        }
        if (host_count > 0 && host_count == late->count && count == late->count) {
            kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_PROMOTE_END);
            kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HASHES, late->hashes, count);
            kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_TIERS, late->tiers, count);
            kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_SLOTS, late->slots, count);
            kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_GPU_SLOTS, gpu_slots, count);
            kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HOST_SLOTS, host_slots, count);
            kvt_msg_set_u64 (msg, KVT_MIG_PROMOTE_END_COMMIT, 0);
            kvt_actor_call (self->actor, "migration", &msg, NULL, NULL);
        }
        kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                            late->hashes, late->count);
        kvt_actor_count (self->actor, "pins_released_late", late->count);
    }
    free (late->hashes);
    free (late->tiers);
    free (late->slots);
    free (late);
}

//  --------------------------------------------------------------------------
//  The plan

//  Leading blocks kept pinned for a late answer: [first, first + count)
typedef struct {
    size_t first, count;
} s_range_t;

typedef struct {
    job_t *job;                     //  The job being planned
    kvt_scheduler_step_fn *next;    //  What to do once the prefix is on the GPU
    size_t piece;                   //  Blocks per piece (0: one piece, the whole prefix)
    bool matching;                  //  The IDX_MATCH is out
    size_t promotes;                //  MIG_PROMOTEs out
    size_t cut;                     //  First block that came back a miss (SIZE_MAX: none)
    int rc;                         //  First failure: the job fails once nothing is out
    const char *what;               //  Its message
    s_range_t *late;                //  Pieces whose promotion answers late, held pinned
    size_t late_n;                  //  Entries in late
    int64_t started_us;             //  When the match was asked
    bool promoted_any;              //  A MIG_PROMOTE went out
} s_plan_t;

//  One piece's MIG_PROMOTE
typedef struct {
    s_plan_t *plan;
    size_t first, count;            //  Its blocks [first, first + count)
} s_promote_call_t;

//  Keep blocks [first, first + count) pinned until migration's late
//  answer to the call that just timed out (from its reply function).
//  Returns true if they are now the late answer's to release.
static bool
s_expect_late_range (job_t *job, size_t first, size_t count)
{
    self_t *self = job->self;
    s_late_t *late = (s_late_t *) kvt_zmalloc (sizeof (s_late_t));
    late->count = count;
    late->hashes = kvt_u64s_dup (job->hashes + first, count);
    late->tiers = kvt_u64s_dup (job->tiers + first, count);
    late->slots = kvt_u64s_dup ((job->stream_old? job->stream_old: job->slots) + first, count);
    if (kvt_actor_call_expect_late (self->actor, s_late_answered, late,
                                    KVT_ACTOR_UNTIL_ANSWERED) == 0) {
        kvt_actor_count (self->actor, "pins_quarantined", count);
        return true;
    }
    free (late->hashes);
    free (late->tiers);
    free (late->slots);
    free (late);
    return false;
}

void
kvt_scheduler_expect_late (job_t *job)
{
    if (s_expect_late_range (job, 0, job->pinned))
        job->pinned = 0;            //  The late answer's to release now
}

//  Record the plan's first failure
static void
s_plan_failed (s_plan_t *plan, int rc, const char *what)
{
    if (!plan->rc) {
        plan->rc = rc;
        plan->what = what;
    }
}

static int
s_range_compare (const void *a, const void *b)
{
    size_t x = ((const s_range_t *) a)->first, y = ((const s_range_t *) b)->first;
    return x < y? -1: x > y;
}

//  Fail the job: unpin its prefix but the pieces held for late answers
static void
s_plan_fail (s_plan_t *plan)
{
    job_t *job = plan->job;
    size_t from = 0;
    if (plan->late_n > 1)
        qsort (plan->late, plan->late_n, sizeof (s_range_t), s_range_compare);
    for (size_t k = 0; k < plan->late_n; k++) {
        kvt_scheduler_fire (job->self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                            job->hashes + from, plan->late [k].first - from);
        from = plan->late [k].first + plan->late [k].count;
    }
    if (plan->late_n) {
        kvt_scheduler_fire (job->self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                            job->hashes + from, job->pinned > from? job->pinned - from: 0);
        job->pinned = 0;
    }
    kvt_scheduler_job_fail (job, plan->rc, plan->what);
}

//  Every answer is in: serve blocks [0, cut) from the GPU, recompute the
//  rest, and go on (or fail).
static void
s_plan_end (s_plan_t *plan)
{
    job_t *job = plan->job;
    kvt_scheduler_step_fn *next = plan->next;
    size_t cut = plan->cut < job->matched? plan->cut: job->matched;
    if (plan->rc) {
        s_plan_fail (plan);
        free (plan->late);
        free (plan);
        return;
    }
    free (plan->late);
    free (plan);
    kvt_actor_mark (job->self->actor, "at_plan_end");
    if (cut < job->matched) {
        //  Stream promotion: the blocks past the cut stay where they are
        if (job->stream_open)
            kvt_scheduler_stream_end (job, cut, job->matched, false, NULL);
        //  A block failed its checksum: recompute from there on. Blocks
        //  after it that did arrive stay cached for others, unpinned.
        kvt_actor_count (job->self->actor, "prefix_cut_by_misses", 1);
        kvt_scheduler_fire (job->self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
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
s_plan_advance (s_plan_t *plan)
{
    if (!plan->matching && plan->promotes == 0)
        s_plan_end (plan);
}

static void
s_plan_promoted (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) self_ptr;
    s_promote_call_t *call = (s_promote_call_t *) arg;
    s_plan_t *plan = call->plan;
    job_t *job = plan->job;
    size_t first = call->first, blocks = call->count;
    free (call);
    plan->promotes--;
    if (rc == -ETIMEDOUT) {
        //  Migration may still be promoting the piece: copying from its
        //  host slots, staging its NVMe blocks, and at its end moving it
        //  in the index and freeing the old slots. Unpinned, the blocks
        //  lose their promoting mark: a demotion could take them from
        //  under the copy, and the next request matching them would
        //  promote the same slots again (GPU slots leaked, host slots
        //  freed twice). Keep them pinned instead, until migration's late
        //  answer says what it did (s_late_answered: then released, a
        //  stream promotion undone); later matches cut there and
        //  recompute meanwhile.
        if (s_expect_late_range (job, first, blocks)) {
            plan->late = (s_range_t *) realloc (plan->late,
                                                (plan->late_n + 1) * sizeof (s_range_t));
            if (!plan->late)
                abort ();
            plan->late [plan->late_n++] = (s_range_t) { first, blocks };
        }
        s_plan_failed (plan, rc, "cannot bring the cached prefix to the GPU: "
                       "migration did not answer within runtime/call_timeout_ms");
    }
    else
    if (rc)
        s_plan_failed (plan, rc, "cannot bring the cached prefix to the GPU");
    else {
        size_t count, failed_count, host_count;
        const uint64_t *gpu_slots = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_GPU_SLOTS,
                                                   &count);
        const uint64_t *failed = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_FAILED,
                                                &failed_count);
        const uint64_t *host_slots = kvt_msg_array (*reply_p, KVT_MIG_PROMOTE_OK_HOST_SLOTS,
                                                    &host_count);
        for (size_t k = 0; k < failed_count; k++)
            if (first + failed [k] < plan->cut)
                plan->cut = first + failed [k];
        if (host_count > 0 && host_count == blocks && count == blocks) {
            //  Stream promotion (one piece): nothing moved yet; compute
            //  streams the blocks
            assert (first == 0 && blocks == job->matched);
            job->host_slots = kvt_u64s_dup (host_slots, count);
            job->stream_old = kvt_u64s_dup (job->slots, count);
            job->stream_gpu = kvt_u64s_dup (gpu_slots, count);
            job->stream_open = true;
            job->stream_ticket = kvt_msg_u64 (*reply_p, KVT_MIG_PROMOTE_OK_TICKET);
        }
        for (size_t k = 0; k < count && k < blocks; k++)
            job->slots [first + k] = gpu_slots [k];
    }
    s_plan_advance (plan);
}

//  Piece [first, first + count) is matched: have migration bring what of
//  it is off the GPU ('stream': as a stream promotion). Returns whether
//  it had any such block.
static bool
s_plan_promote (s_plan_t *plan, size_t first, size_t count, bool stream)
{
    job_t *job = plan->job;
    bool all_on_gpu = true;
    for (size_t k = first; k < first + count; k++)
        all_on_gpu = all_on_gpu && job->tiers [k] == KVT_TIER_GPU;
    if (count == 0 || all_on_gpu)
        return false;
    s_promote_call_t *call = (s_promote_call_t *) kvt_zmalloc (sizeof (s_promote_call_t));
    *call = (s_promote_call_t) { plan, first, count };
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_PROMOTE);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_HASHES, job->hashes + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_TIERS, job->tiers + first, count);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_SLOTS, job->slots + first, count);
    kvt_msg_set_u64 (msg, KVT_MIG_PROMOTE_STREAM, stream);
    plan->promotes++;
    if (plan->piece)
        kvt_actor_count (job->self->actor, "plan_piece_promotes", 1);
    if (!plan->promoted_any) {
        //  How long a promotion waits for the match: what pieces hide
        plan->promoted_any = true;
        kvt_actor_count (job->self->actor, "us_plan_to_first_promote",
                         (uint64_t) (kvt_now_us () - plan->started_us));
        kvt_actor_mark (job->self->actor, "at_plan_first_promote");
    }
    kvt_actor_call (job->self->actor, "migration", &msg, s_plan_promoted, call);
    return true;
}

//  The leading blocks of a pinning IDX_MATCH whose call timed out, from
//  'first' on: the index may still pin what it finds, and its late answer
//  (parts, then the rest) says what. Those are unpinned, else they stay
//  pinned, and promoting, for good.
typedef struct {
    uint64_t *hashes;               //  The blocks asked, from 'first'
    size_t first;                   //  Block of hashes [0]
    size_t next;                    //  Where the late answer's next blocks start
    size_t count;                   //  Entries in hashes
} s_match_late_t;

static void
s_match_late (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_match_late_t *late = (s_match_late_t *) arg;
    bool part = rc == 0 && kvt_msg_id (*reply_p) == KVT_MSG_IDX_MATCH_PART;
    bool final = rc == 0 && (kvt_msg_id (*reply_p) == KVT_MSG_IDX_MATCH_OK
                             || kvt_msg_id (*reply_p) == KVT_MSG_IDX_MATCH_PARTS_OK);
    if (part || final) {
        size_t matched;
        //  (IDX_MATCH_OK and IDX_MATCH_PARTS_OK share their fields)
        kvt_msg_array (*reply_p, part? KVT_IDX_MATCH_PART_TIERS: KVT_IDX_MATCH_OK_TIERS,
                       &matched);
        size_t from = part? (size_t) kvt_msg_u64 (*reply_p, KVT_IDX_MATCH_PART_FIRST)
                          : late->next;
        size_t end = from + matched, limit = late->first + late->count;
        from = from > late->first? from: late->first;     //  (Told before the timeout)
        end = end < limit? end: limit;
        if (end > from) {
            kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                                late->hashes + (from - late->first), end - from);
            kvt_actor_count (self->actor, "pins_released_late", end - from);
        }
        late->next = end > late->next? end: late->next;
        if (part)
            return;                 //  The rest of the answer follows
    }
    free (late->hashes);
    free (late);
}

//  The index answered blocks [job->matched, + count) of the prefix:
//  record them and have migration bring those off the GPU ('stream': as a
//  stream promotion)
static void
s_plan_took (s_plan_t *plan, const uint64_t *tiers, const uint64_t *slots, size_t count,
             bool stream)
{
    job_t *job = plan->job;
    size_t first = job->matched, hits = 0;
    for (size_t k = 0; k < count; k++) {
        job->tiers [first + k] = tiers [k];
        job->slots [first + k] = slots [k];
        if (tiers [k] < KVT_TIER_COUNT)
            job->from_tier [tiers [k]]++;
        hits += job->prestaged && job->prestaged [first + k] && tiers [k] == KVT_TIER_HOST;
    }
    job->matched = job->pinned = first + count;
    kvt_actor_count (job->self->actor, "prefetch_hits", hits);
    if (plan->piece && count)
        kvt_actor_count (job->self->actor, "plan_pieces", 1);
    if (!plan->rc)
        s_plan_promote (plan, first, count, stream);
}

static void
s_plan_matched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_plan_t *plan = (s_plan_t *) arg;
    job_t *job = plan->job;
    if (rc == 0 && kvt_msg_id (*reply_p) == KVT_MSG_IDX_MATCH_PART) {
        //  A piece, in order; the rest is still being matched
        size_t count;
        const uint64_t *tiers = kvt_msg_array (*reply_p, KVT_IDX_MATCH_PART_TIERS, &count);
        const uint64_t *slots = kvt_msg_array (*reply_p, KVT_IDX_MATCH_PART_SLOTS, NULL);
        assert (kvt_msg_u64 (*reply_p, KVT_IDX_MATCH_PART_FIRST) == job->matched);
        s_plan_took (plan, tiers, slots, count, false);
        return;
    }
    plan->matching = false;
    kvt_actor_count (self->actor, "us_plan_matching", (uint64_t) (kvt_now_us () - plan->started_us));
    if (rc == -ETIMEDOUT) {
        s_match_late_t *late = (s_match_late_t *) kvt_zmalloc (sizeof (s_match_late_t));
        late->first = late->next = job->matched;
        late->count = job->block_count - job->matched;
        late->hashes = kvt_u64s_dup (job->hashes + job->matched, late->count);
        if (kvt_actor_call_expect_late (self->actor, s_match_late, late,
                                        KVT_ACTOR_UNTIL_ANSWERED) != 0) {
            free (late->hashes);
            free (late);
        }
    }
    if (rc) {
        s_plan_failed (plan, rc, "prefix lookup failed");
        s_plan_advance (plan);
        return;
    }
    //  IDX_MATCH_OK, or IDX_MATCH_PARTS_OK with the blocks after the last
    //  part (the two share their fields)
    size_t count;
    const uint64_t *tiers = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_TIERS, &count);
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_IDX_MATCH_OK_SLOTS, NULL);
    if (!plan->piece && self->fetch_by_cost && kvt_msg_id (job->request) == KVT_MSG_GENERATE) {
        size_t cut = s_fetch_cut (self, tiers, count);
        if (cut < count) {
            //  Cheaper to compute the rest again than to bring it up
            kvt_actor_count (self->actor, "blocks_recomputed_by_choice", count - cut);
            kvt_scheduler_fire (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                                job->hashes + cut, count - cut);
            count = cut;
        }
    }
    kvt_scheduler_prefetch_release (job);   //  Our own pins hold the staged blocks now
    //  Only GENERATE runs compute, which can stream the blocks in itself
    s_plan_took (plan, tiers, slots, count, !plan->piece && self->stream_promotion
                                            && kvt_msg_id (job->request) == KVT_MSG_GENERATE);
    s_plan_advance (plan);
}

//  Can the plan of 'job' go in pieces? (See the header.)
static bool
s_plan_in_pieces (self_t *self, const job_t *job)
{
    if (self->plan_piece_blocks == 0 || self->plan_piece_blocks >= job->block_count
    ||  !self->promotions_overlap)
        return false;
    if (self->stream_promotion && kvt_msg_id (job->request) == KVT_MSG_GENERATE)
        return false;
    if (self->fetch_by_cost && kvt_msg_id (job->request) == KVT_MSG_GENERATE) {
        for (int tier = 0; tier < KVT_TIER_COUNT; tier++)
            if (self->fetch_us [tier] > s_recompute_us (self))
                return false;
    }
    return true;
}

void
kvt_scheduler_plan (job_t *job, kvt_scheduler_step_fn *next)
{
    self_t *self = job->self;
    if (!self->caching || job->block_count == 0) {
        next (job);                 //  Nothing to reuse
        return;
    }
    s_plan_t *plan = (s_plan_t *) kvt_zmalloc (sizeof (s_plan_t));
    plan->job = job;
    plan->next = next;
    plan->cut = SIZE_MAX;
    plan->matching = true;
    plan->started_us = kvt_now_us ();
    kvt_actor_mark (self->actor, "at_plan_start");
    if (s_plan_in_pieces (self, job))
        plan->piece = self->plan_piece_blocks;
    kvt_scheduler_match (job, true, plan->piece, s_plan_matched, plan);
}
