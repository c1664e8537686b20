/*  =========================================================================
    kvt_migration - moves blocks between tiers: demote, promote, reserve

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The only actor that moves KV bytes between tiers. GPU <-> host bytes
    move by copies between the tiers' slabs (memcpy on the CPU path; the
    CUDA path uses the gather/scatter kernels of kernels/); host <-> NVMe
    bytes move by tier_nvme's io_uring, into or out of host slots.
    Accepts: MIG_RESERVE {count} -> MIG_RESERVE_OK {slots}: free GPU slots,
               demoting least-recently-used blocks down the hierarchy;
             MIG_PROMOTE {hashes, tiers, slots, stream} -> MIG_PROMOTE_OK
               {gpu_slots, failed, host_slots}: bring host and NVMe blocks
               to the GPU; with stream = 1 reserve and stage only, and
               name the host slot of each block for compute to stream
               layer by layer (kvt_migration_promote.c);
             MIG_PROMOTE_END {hashes, tiers, slots, gpu_slots, host_slots,
               commit} -> MIG_PROMOTE_END_OK {moved}: commit or undo a
               stream promotion;
             MIG_DEMOTE {from_tier, to_tier, max_blocks} -> MIG_DEMOTE_OK {moved};
             MIG_PREFETCH {hashes, max_blocks} -> MIG_PREFETCH_OK {hashes}:
               stage up to max_blocks NVMe blocks of a request's cached
               prefix into the host tier, left pinned for the caller;
             MIG_WRITE_THROUGH {hashes} -> MIG_WRITE_THROUGH_OK {shadowed}:
               copy blocks new on the GPU tier to host shadow slots
               (migration/write_through = 1; kvt_migration_through.c).
@discuss
    Cold form (migration/cold_dtype, issue #3): bf16 (default) moves
    blocks as they are. fp8 keeps every block of the host and NVMe tiers
    in FP8 e4m3 with one scale per (layer, K/V, kv_head) plane: quantized
    when demoted GPU -> host, dequantized when promoted back, the FP8
    form (half the bytes, plus the scales) kept as is between host and
    disk (kvt_migration_copy.c). The form of a block follows from its
    tier: GPU slots hold bf16, host and disk slots the cold form; the disk
    store records each block's length and checksums only that length, so
    a block written in the other form (a restart with cold_dtype changed)
    reads as a miss, never as wrong bytes. The round trip adds at most
    2^-4 |x| + 2^-10 scale per element (kvt_fp8.cuh). With fp8, a stream
    promotion answers with the host and staging slots' FP8 forms and
    compute's model dequantizes each layer just before it runs
    (kvt_model.h); a plain promotion dequantizes into the GPU slots here.
    Tiers are exclusive: a moved block leaves its old slot. A block read
    back from NVMe whose checksum fails is a miss: it is removed from the
    index, reported in 'failed', and the scheduler recomputes it.
    Demotion off the last tier drops the block (counted). What goes to disk
    is chosen by migration/disk_admission: every evicted block (all, write-
    back), only blocks a request has found cached since they were made
    (reused: write on second hit, sparing disk bandwidth and wear), or
    blocks the index predicts will be reused (predicted): found cached at
    least once, or offered again after the index had dropped them (its
    ghost history), or made by a request that offered such a block again
    (IDX_VICTIMS_OK.offers). "reused" can never write a block whose reuses
    all come after it left the memory tiers; "predicted" writes it on its
    second offer.
    Write policies to the host tier: write-back (default) copies a block
    GPU -> host when the GPU tier evicts it. Write-through
    (migration/write_through = 1) copies each new GPU block to a host
    shadow slot at once, in the background (MIG_WRITE_THROUGH, sent by the
    scheduler after IDX_INSERT_OK); a later eviction of a shadowed block
    is only an IDX_MOVE into its shadow (demotions_from_shadow, no bytes
    then). Shadows count against the host tier's capacity but are the
    first room it gives up (shadows_dropped): a host allocation short of
    free slots takes them before demoting host blocks, the host watermark
    does not count them, and a write-through that finds no free host slot
    is skipped (write_through_skipped), never making room for itself. A
    write on second hit to disk is disk_admission = reused, above.
    The actor is seven files sharing kvt_migration_int.h: this one (job
    queue, reservation, demotion requests, upkeep), kvt_migration_room.c
    (free slots in a tier, demoting when short), kvt_migration_through.c
    (write-through shadows), kvt_migration_promote.c,
    kvt_migration_prefetch.c, kvt_migration_read.c (their chunked NVMe
    reader) and kvt_migration_copy.c (the bytes between the GPU and host
    slabs).
    Top-level jobs run one at a time, in arrival order; each is a chain of
    asynchronous calls to the index and the tiers, so the loop never waits.
    The watermark upkeep after a job runs before its reply, before the
    next job, or beside the next jobs (migration/overlap_upkeep 0, 1, 2;
    "Watermark upkeep" below). With 2, a copied promotion also gives up
    the job slot once its copy is queued (kvt_migration_job_detach) and
    answers when the copy is done.
    MIG_PREFETCH and MIG_WRITE_THROUGH jobs wait in a queue of their own
    (gauge queued_prefetches) and run when no other job waits, or after
    S_BACKGROUND_EVERY other jobs in a row: the promotions and
    reservations of running requests come first, and a prefetch its (by
    then admitted) request waits for is never starved.
    Victims are chosen by the prefix index's per-tier LRU order and are
    pinned while they move, as are the blocks a request is using.
@end
*/

#include "kvt_classes.h"
#include "kvt_actors.h"

#include "kvt_migration_int.h"

#define S_BACKGROUND_EVERY 4        //  Other jobs in a row before a prefetch may go


//  --------------------------------------------------------------------------
//  Small helpers

uint64_t *
kvt_migration_u64s (size_t count)
{
    return (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
}

//  Fire-and-check call: the answer only matters if it fails.
void
kvt_migration_expect_ok (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    (void) reply_p;
    if (rc) {
        kvt_actor_count (self->actor, "housekeeping_failures", 1);
        kvt_log_warn ("migration: %s failed: %s", (const char *) arg, kvt_strerror (rc));
    }
}

bool
kvt_migration_await_late (self_t *self, int rc, kvt_actor_reply_fn *fn, void *arg)
{
    if (rc != -ETIMEDOUT
    ||  kvt_actor_call_expect_late (self->actor, fn, arg, KVT_ACTOR_UNTIL_ANSWERED) != 0)
        return false;
    kvt_actor_count (self->actor, "answers_awaited_late", 1);
    return true;
}

//  An IDX_MOVE waiting for its answer
typedef struct {
    kvt_migration_cont_fn *cont;    //  Told the outcome
    void *arg;                      //  Its argument
    uint64_t *hashes;               //  The blocks moved (for a refusal)
    uint64_t *slots;                //  Their new slots
    size_t count;                   //  Entries in each
    int tier;                       //  Of the new slots
} s_move_t;

static void
s_moved (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_move_t *move = (s_move_t *) arg;
    if (kvt_migration_await_late (self, rc, s_moved, move))
        return;
    kvt_migration_expect_ok (self, rc, reply_p, (void *) "IDX_MOVE");
    if (rc == -ECANCELED)
        rc = 0;                     //  We are ending: nothing is served after this
    if (rc) {
        //  The index kept the blocks at their old slots, which are freed
        //  by now: it must not name them. It forgets the blocks and their
        //  new slots go back; the caller's requester hears the move failed
        //  (its blocks are recomputed) instead of using what the index lost.
        kvt_actor_count (self->actor, "moves_refused", move->count);
        kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE,
                                  KVT_IDX_REMOVE_HASHES, move->hashes, move->count,
                                  "IDX_REMOVE");
        kvt_migration_free_slots (self, move->tier, move->slots, move->count);
    }
    move->cont (self, move->arg, rc);
    free (move->hashes);
    free (move->slots);
    free (move);
}

void
kvt_migration_move_blocks (self_t *self, const uint64_t *hashes, const uint64_t *slots,
                           size_t count, int tier, kvt_migration_cont_fn *cont, void *arg)
{
    if (count == 0) {
        cont (self, arg, 0);
        return;
    }
    s_move_t *move = (s_move_t *) kvt_zmalloc (sizeof (s_move_t));
    *move = (s_move_t) { cont, arg, kvt_u64s_dup (hashes, count), kvt_u64s_dup (slots, count),
                         count, tier };
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MOVE);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_HASHES, hashes, count);
    kvt_msg_set_u64 (msg, KVT_IDX_MOVE_TIER, (uint64_t) tier);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_SLOTS, slots, count);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_moved, move);
}

//  An answer waiting for the index's IDX_MOVE_OK
typedef struct {
    kvt_msg_t *reply;               //  The job's answer
    kvt_msg_t *request;             //  A detached job's request, or NULL: the current job
} s_answer_after_t;

static void
s_moved_then_reply (self_t *self, void *arg, int rc)
{
    s_answer_after_t *after = (s_answer_after_t *) arg;
    kvt_msg_t *request = after->request? after->request: self->current;
    if (rc) {
        kvt_msg_destroy (&after->reply);
        after->reply = kvt_msg_error_new (request, rc, "migration: the index refused to move "
                                          "the blocks: %s", kvt_strerror (rc));
    }
    kvt_migration_answer (self, &after->reply, after->request);
    free (after);
}

void
kvt_migration_answer (self_t *self, kvt_msg_t **reply_p, kvt_msg_t *request)
{
    if (request) {                  //  Done with the job slot already
        kvt_actor_reply (self->actor, reply_p);
        kvt_msg_destroy (&request);
    }
    else
        kvt_migration_job_reply (self, reply_p);
}

void
kvt_migration_move_then_reply (self_t *self, const uint64_t *hashes, const uint64_t *slots,
                               size_t count, int tier, kvt_msg_t **reply_p, kvt_msg_t *request)
{
    s_answer_after_t *after = (s_answer_after_t *) kvt_zmalloc (sizeof (s_answer_after_t));
    after->reply = *reply_p;
    after->request = request;
    *reply_p = NULL;
    kvt_migration_move_blocks (self, hashes, slots, count, tier, s_moved_then_reply, after);
}

void
kvt_migration_send_array (self_t *self, const char *peer, int id, int field, const uint64_t *values,
              size_t count, const char *what)
{
    if (count == 0)
        return;
    kvt_msg_t *msg = kvt_msg_new (id);
    kvt_msg_set_array (msg, field, values, count);
    kvt_actor_call (self->actor, peer, &msg, kvt_migration_expect_ok, (void *) what);
}

void
kvt_migration_free_slots (self_t *self, int tier, const uint64_t *slots, size_t count)
{
    kvt_migration_send_array (self, kvt_migration_tier_actor [tier], KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                  slots, count, "TIER_FREE");
}

//  --------------------------------------------------------------------------
//  Top-level jobs, one at a time

static void s_next_job (self_t *self);
static void s_upkeep_beside (self_t *self);
static void s_job_done (self_t *self);

//  Whether a job of message 'id' took memory-tier room, so that the
//  watermark upkeep follows it.
static bool
s_takes_room (self_t *self, int id)
{
    return self->high_watermark < 100
        && (id == KVT_MSG_MIG_RESERVE || id == KVT_MSG_MIG_PROMOTE || id == KVT_MSG_MIG_PREFETCH);
}

//  A job is answered: the reply goes out now, or after the watermark
//  upkeep (s_job_done) when upkeep must not overlap the requester's work.
static void
s_job_reply (self_t *self, kvt_msg_t **reply_p)
{
    assert (!self->held_reply);
    if (self->overlap_upkeep != KVT_MIGRATION_UPKEEP_AFTER)
        kvt_actor_reply (self->actor, reply_p);
    else {
        self->held_reply = *reply_p;
        *reply_p = NULL;
    }
    s_job_done (self);
}

//  TEST ONLY (migration/test_hold_at = reply): the held reply goes now.
static int
s_held_reply (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    self_t *self = (self_t *) arg;
    s_job_reply (self, &self->test_held_reply);
    return 0;
}

//  Whether the current job is the first of the kind a test holds, at
//  'at' (KVT_MIGRATION_HOLD_*). Each hold applies once.
static bool
s_test_holds (self_t *self, int at)
{
    if (self->test_hold_ms <= 0 || self->test_hold_at != at
    ||  kvt_msg_id (self->current) != self->test_hold_id)
        return false;
    self->test_hold_ms = 0;
    return true;
}

void
kvt_migration_job_reply (self_t *self, kvt_msg_t **reply_p)
{
    int hold_ms = self->test_hold_ms;
    if (s_test_holds (self, KVT_MIGRATION_HOLD_REPLY)) {
        //  The job's work is done; its answer comes late, and it keeps
        //  the job slot meanwhile, as a slow job would
        self->test_held_reply = *reply_p;
        *reply_p = NULL;
        zloop_timer (kvt_actor_loop (self->actor), (size_t) hold_ms, 1, s_held_reply, self);
        return;
    }
    s_job_reply (self, reply_p);
}

kvt_msg_t *
kvt_migration_job_detach (self_t *self)
{
    assert (self->overlap_upkeep == KVT_MIGRATION_UPKEEP_BESIDE && self->current);
    kvt_msg_t *request = self->current;
    self->current = NULL;
    kvt_actor_count (self->actor, "jobs_detached", 1);
    //  What s_job_done does for an answered job in this mode
    if (s_takes_room (self, kvt_msg_id (request)))
        s_upkeep_beside (self);
    s_next_job (self);
    return request;
}

void
kvt_migration_job_error (self_t *self, int rc, const char *what)
{
    kvt_actor_count (self->actor, "errors", 1);
    kvt_msg_t *reply = kvt_msg_error_new (self->current, rc, "migration: %s", what);
    kvt_migration_job_reply (self, &reply);
}

//  RESERVE

static void
s_reserve_done (self_t *self, void *arg, int rc)
{
    kvt_migration_ensure_t *job = *(kvt_migration_ensure_t **) arg;
    free (arg);
    if (rc) {
        kvt_migration_ensure_free (self, &job, true);
        kvt_migration_job_error (self, rc, "cannot free enough GPU blocks");
        return;
    }
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_RESERVE_OK);
    kvt_msg_set_array (reply, KVT_MIG_RESERVE_OK_SLOTS, job->slots, job->have);
    kvt_migration_ensure_free (self, &job, false);
    kvt_migration_job_reply (self, &reply);
}

static void
s_start_reserve (self_t *self)
{
    uint64_t count = kvt_msg_u64 (self->current, KVT_MIG_RESERVE_COUNT);
    if (count > kvt_arena_block_count (self->arenas [KVT_TIER_GPU])) {
        kvt_migration_job_error (self, -ENOSPC, "more blocks than the GPU tier holds");
        return;
    }
    //  The continuation needs the job, which kvt_migration_ensure returns only after
    //  it may already have run (count 0): pass a cell it fills in.
    kvt_migration_ensure_t **cell = (kvt_migration_ensure_t **) kvt_zmalloc (sizeof (kvt_migration_ensure_t *));
    *cell = kvt_migration_ensure_new (KVT_TIER_GPU, count, s_reserve_done, cell);
    if (count == 0)
        s_reserve_done (self, cell, 0);
    else
        kvt_migration_ensure_start (self, *cell);
}

//  DEMOTE (admin)

static void
s_demote_request_done (self_t *self, void *arg, int rc)
{
    size_t *moved = (size_t *) arg;
    size_t count = rc? 0: *moved;
    free (moved);
    if (rc && rc != -ENOSPC) {      //  ENOSPC here: nothing unpinned to move
        kvt_migration_job_error (self, rc, "demotion failed");
        return;
    }
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_DEMOTE_OK);
    kvt_msg_set_u64 (reply, KVT_MIG_DEMOTE_OK_MOVED, count);
    kvt_migration_job_reply (self, &reply);
}

static void
s_start_demote (self_t *self)
{
    uint64_t from = kvt_msg_u64 (self->current, KVT_MIG_DEMOTE_FROM_TIER);
    uint64_t to = kvt_msg_u64 (self->current, KVT_MIG_DEMOTE_TO_TIER);
    uint64_t max_blocks = kvt_msg_u64 (self->current, KVT_MIG_DEMOTE_MAX_BLOCKS);
    if (from >= KVT_TIER_NVME || to != from + 1) {
        kvt_migration_job_error (self, -EINVAL, "demotion goes one tier down: 0->1 or 1->2");
        return;
    }
    size_t *moved = (size_t *) kvt_zmalloc (sizeof (size_t));
    kvt_migration_demote (self, (int) from, max_blocks, false, moved, s_demote_request_done,
                          moved);
}

//  --------------------------------------------------------------------------
//  Queue of top-level requests

//  TEST ONLY (migration/test_hold_at = start | fail): the held job starts
//  now, or fails as a job whose own call timed out does.
static int
s_held_start (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    self_t *self = (self_t *) arg;
    if (self->test_held_start)
        self->test_held_start (self);
    else
        kvt_migration_job_error (self, -ETIMEDOUT, "a call of ours timed out "
                                 "(migration/test_hold_at = fail)");
    return 0;
}

//  Start the current job with 'start'; when a test holds this kind of
//  job, the first such job only migration/test_hold_ms later. It keeps
//  the job slot meanwhile, as a slow job would: the scheduler's call can
//  time out while the job is still to come.
static void
s_start_job (self_t *self, void (*start) (self_t *self))
{
    int hold_ms = self->test_hold_ms;
    bool fails = s_test_holds (self, KVT_MIGRATION_HOLD_FAIL);
    if (fails || s_test_holds (self, KVT_MIGRATION_HOLD_START)) {
        self->test_held_start = fails? NULL: start;
        zloop_timer (kvt_actor_loop (self->actor), (size_t) hold_ms, 1, s_held_start, self);
    }
    else
        start (self);
}

static void
s_next_job (self_t *self)
{
    if (self->current)
        return;
    //  A write-through never runs beside the upkeep: it reads GPU slots of
    //  blocks it does not pin, which the upkeep may be demoting
    //  (kvt_migration_through.c); it waits for the upkeep's end
    kvt_msg_t *background = (kvt_msg_t *) zlist_first (self->background);
    bool background_ready = background
        && !(self->upkeep_running && kvt_msg_id (background) == KVT_MSG_MIG_WRITE_THROUGH);
    bool prefetch_turn = background_ready
                      && (zlist_size (self->queue) == 0
                          || self->jobs_since_background >= S_BACKGROUND_EVERY);
    if (prefetch_turn) {
        self->current = (kvt_msg_t *) zlist_pop (self->background);
        self->jobs_since_background = 0;
    }
    else {
        self->current = (kvt_msg_t *) zlist_pop (self->queue);
        self->jobs_since_background += self->current != NULL;
    }
    if (!self->current)
        return;
    if (self->upkeep_running)
        kvt_actor_count (self->actor, "jobs_beside_upkeep", 1);
    switch (kvt_msg_id (self->current)) {
        case KVT_MSG_MIG_RESERVE:  s_start_job (self, s_start_reserve); break;
        case KVT_MSG_MIG_PROMOTE:  s_start_job (self, kvt_migration_start_promote); break;
        case KVT_MSG_MIG_DEMOTE:   s_start_job (self, s_start_demote); break;
        case KVT_MSG_MIG_PREFETCH: s_start_job (self, kvt_migration_start_prefetch); break;
        case KVT_MSG_MIG_PROMOTE_END: s_start_job (self, kvt_migration_start_promote_end); break;
        case KVT_MSG_MIG_WRITE_THROUGH:
            s_start_job (self, kvt_migration_start_write_through);
            break;
        default: assert (false);
    }
}

//  --------------------------------------------------------------------------
//  Watermark upkeep. After each job that took GPU or host room, a memory
//  tier fuller than the high watermark gets its oldest blocks demoted, in
//  one batch, down to the low watermark. Later requests then find free GPU
//  slots instead of paying for small evictions (and their disk writes) one
//  request at a time. migration/overlap_upkeep says what waits for it:
//    0  the job's reply (default): no migration work runs beside the
//       requester's next steps, and the same requests in the same order
//       give the same placement, whether actors are threads or processes;
//    1  the next job: the reply goes first, so the upkeep overlaps the
//       request's compute;
//    2  nothing: the next jobs start at once and run beside it, so a
//       promotion's host -> GPU copy and the upkeep's GPU -> host copy
//       cross the link both ways at once (each direction has its own copy
//       stream, kvt_migration_copy.c). One upkeep runs at a time; a job
//       that ends meanwhile asks for one more after it.
//  1 and 2 make placement depend on timing; it stays correct: victims are
//  pinned while they move, so a job beside the upkeep picks others, and
//  the index cuts a prefix at a block in motion.

static void s_upkeep (self_t *self, int tier);
static void s_upkeep_cancelled (self_t *self);

static void
s_upkeep_demoted (self_t *self, void *arg, int rc)
{
    int tier = (int) (intptr_t) arg;
    if (rc == -ECANCELED) {
        s_upkeep_cancelled (self);  //  The actor is going away
        return;
    }
    if (rc && rc != -ENOSPC)
        kvt_log_warn ("migration: upkeep demotion failed: %s", kvt_strerror (rc));
    s_upkeep (self, tier + 1);
}

static void
s_upkeep_probed (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    int tier = (int) (intptr_t) arg;
    if (rc == -ECANCELED) {
        s_upkeep_cancelled (self);
        return;
    }
    uint64_t used = 0, capacity = 0;
    for (size_t k = 0; rc == 0 && k < kvt_msg_map_size (*reply_p, KVT_STATS_OK_COUNTERS); k++) {
        const char *key = kvt_msg_map_key (*reply_p, KVT_STATS_OK_COUNTERS, k);
        const char *dot = strchr (key, '.');
        if (dot && streq (dot + 1, "used_blocks"))
            used = kvt_msg_map_value (*reply_p, KVT_STATS_OK_COUNTERS, k);
        if (dot && streq (dot + 1, "capacity_blocks"))
            capacity = kvt_msg_map_value (*reply_p, KVT_STATS_OK_COUNTERS, k);
    }
    if (tier == KVT_TIER_HOST)      //  Shadows are room the tier can take back at once
        used -= used < kvt_migration_shadow_count (self)? used: kvt_migration_shadow_count (self);
    if (capacity && used * 100 >= capacity * (uint64_t) self->high_watermark) {
        uint64_t excess = used - capacity * (uint64_t) self->low_watermark / 100;
        if (excess > self->background_batch)
            excess = self->background_batch;
        kvt_actor_count (self->actor, "upkeep_demotions", 1);
        kvt_migration_demote (self, tier, excess, true, NULL, s_upkeep_demoted,
                              (void *) (intptr_t) tier);
    }
    else
        s_upkeep (self, tier + 1);
}

static void s_upkeep_beside (self_t *self);

//  The current job is over: its reply goes if held, the next job starts.
static void
s_job_end (self_t *self)
{
    if (self->held_reply)
        kvt_actor_reply (self->actor, &self->held_reply);
    kvt_msg_destroy (&self->current);
    s_next_job (self);
}

//  Check memory tier 'tier' and the ones below it; then end the job, or
//  (overlap_upkeep = 2) this upkeep.
static void
s_upkeep (self_t *self, int tier)
{
    if (tier <= KVT_TIER_HOST) {
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_STATS);
        kvt_actor_call (self->actor, kvt_migration_tier_actor [tier], &msg, s_upkeep_probed,
                        (void *) (intptr_t) tier);
        return;
    }
    if (self->overlap_upkeep == KVT_MIGRATION_UPKEEP_BESIDE) {
        self->upkeep_running = false;
        kvt_actor_gauge (self->actor, "upkeep_running", 0);
        self->upkeeps_ended++;
        //  Jobs that waited for the room in motion try again
        kvt_migration_ensure_t *waiter;
        while ((waiter = (kvt_migration_ensure_t *) zlist_pop (self->upkeep_waiters)))
            kvt_migration_ensure_start (self, waiter);
        if (self->upkeep_again) {
            self->upkeep_again = false;
            s_upkeep_beside (self);
        }
        else
            s_next_job (self);      //  A write-through may have waited for us
    }
    else
        s_job_end (self);
}

//  The upkeep's call was cancelled (the actor is stopping): it ends here,
//  and the jobs waiting for it fail, inside the cancellation, so that
//  their chains free what they hold.
static void
s_upkeep_cancelled (self_t *self)
{
    self->upkeep_running = false;
    kvt_migration_ensure_t *waiter;
    while ((waiter = (kvt_migration_ensure_t *) zlist_pop (self->upkeep_waiters)))
        waiter->cont (self, waiter->cont_arg, -ECANCELED);
}

//  TEST ONLY (test_upkeep_delay_ms): the held-back upkeep starts now.
static int
s_upkeep_delayed (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    s_upkeep ((self_t *) arg, KVT_TIER_GPU);
    return 0;
}

//  Start the upkeep, after test_upkeep_delay_ms when a test asks.
static void
s_upkeep_start (self_t *self)
{
    if (self->test_upkeep_delay_ms > 0)
        zloop_timer (kvt_actor_loop (self->actor), (size_t) self->test_upkeep_delay_ms, 1,
                     s_upkeep_delayed, self);
    else
        s_upkeep (self, KVT_TIER_GPU);
}

//  overlap_upkeep = 2: run the upkeep beside the jobs, one at a time.
static void
s_upkeep_beside (self_t *self)
{
    if (self->upkeep_running) {
        self->upkeep_again = true;      //  Once more when this one ends
        return;
    }
    self->upkeep_running = true;
    kvt_actor_gauge (self->actor, "upkeep_running", 1);
    s_upkeep_start (self);
}

//  Called when a job is answered (or its reply held): upkeep if the job
//  took memory-tier room, then the next job (at once with overlap_upkeep
//  = 2, after the upkeep otherwise).
static void
s_job_done (self_t *self)
{
    bool upkeep = s_takes_room (self, kvt_msg_id (self->current));
    if (upkeep && self->overlap_upkeep != KVT_MIGRATION_UPKEEP_BESIDE)
        s_upkeep_start (self);
    else {
        if (upkeep)
            s_upkeep_beside (self);
        s_job_end (self);
    }
}

static int
s_handle_job (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    bool background = kvt_msg_id (*msg_p) == KVT_MSG_MIG_PREFETCH
                   || kvt_msg_id (*msg_p) == KVT_MSG_MIG_WRITE_THROUGH;
    zlist_append (background? self->background: self->queue, *msg_p);
    *msg_p = NULL;                  //  Answered when its turn comes
    kvt_actor_gauge (self->actor, "queued", zlist_size (self->queue));
    kvt_actor_gauge (self->actor, "queued_prefetches", zlist_size (self->background));
    s_next_job (self);
    return 0;
}

//  TEST ONLY: migration/test_hold_job names the job kind held (its
//  message without MIG_, lower case: promote, reserve, prefetch,
//  promote_end, demote, write_through), test_hold_at = start | reply |
//  fail.
static void
s_test_hold_config (self_t *self, const kvt_config_t *config)
{
    static const int jobs [] = { KVT_MSG_MIG_RESERVE, KVT_MSG_MIG_PROMOTE, KVT_MSG_MIG_DEMOTE,
        KVT_MSG_MIG_PREFETCH, KVT_MSG_MIG_PROMOTE_END, KVT_MSG_MIG_WRITE_THROUGH };
    const char *job = kvt_config_str (config, "migration/test_hold_job");
    self->test_hold_id = -1;
    for (size_t k = 0; k < sizeof (jobs) / sizeof (jobs [0]); k++) {
        //  "MIG_PROMOTE_END" -> "promote_end"
        char name [32];
        snprintf (name, sizeof (name), "%s", kvt_msg_name (jobs [k]) + 4);
        for (char *c = name; *c; c++)
            *c = (char) tolower ((unsigned char) *c);
        if (streq (job, name))
            self->test_hold_id = jobs [k];
    }
    if (*job && self->test_hold_id < 0)
        kvt_log_warn ("migration: test_hold_job '%s' names no job; nothing held", job);
    const char *at = kvt_config_str (config, "migration/test_hold_at");
    self->test_hold_at = streq (at, "reply")? KVT_MIGRATION_HOLD_REPLY:
                         streq (at, "fail")?  KVT_MIGRATION_HOLD_FAIL:
                                              KVT_MIGRATION_HOLD_START;
    self->test_hold_ms = self->test_hold_id < 0? 0:
                         (int) kvt_config_int (config, "migration/test_hold_ms");
}

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->queue = zlist_new ();
    self->background = zlist_new ();
    self->high_watermark = (int) kvt_config_int (config, "migration/high_watermark");
    self->low_watermark = (int) kvt_config_int (config, "migration/low_watermark");
    self->background_batch = (uint64_t) kvt_config_int (config, "migration/background_batch");
    self->promote_piece_bytes = (size_t) kvt_config_int (config, "migration/promote_piece_kib")
                              << 10;
    self->overlap_upkeep = (int) kvt_config_int (config, "migration/overlap_upkeep");
    self->test_upkeep_delay_ms = (int) kvt_config_int (config, "migration/test_upkeep_delay_ms");
    s_test_hold_config (self, config);
    const char *held_copies = kvt_config_str (config, "migration/test_hold_copies");
    self->test_hold_copies_from = streq (held_copies, "to_gpu")? KVT_TIER_HOST:
                                  streq (held_copies, "to_host")? KVT_TIER_GPU: -1;
    if (self->test_hold_copies_from >= 0)
        self->copies_held = zlist_new ();
    else
    if (*held_copies)
        kvt_log_warn ("migration: test_hold_copies '%s' is not to_gpu or to_host; nothing held",
                      held_copies);
    const char *admission = kvt_config_str (config, "migration/disk_admission");
    self->disk_admission = streq (admission, "reused")? KVT_MIGRATION_DISK_REUSED:
                           streq (admission, "predicted")? KVT_MIGRATION_DISK_PREDICTED:
                                                           KVT_MIGRATION_DISK_ALL;
    self->capacity [KVT_TIER_GPU] = kvt_layer_shard_gpu_slots (config);     //  #5
    self->capacity [KVT_TIER_HOST] = (size_t) kvt_config_int (config, "tier_host/capacity_blocks");
    self->capacity [KVT_TIER_NVME] = (size_t) kvt_config_int (config, "tier_nvme/capacity_blocks");
    self->cold_fp8 = streq (kvt_config_str (config, "migration/cold_dtype"), "fp8");
    self->fp8_planes = (int) (kvt_config_int (config, "model/layers") * 2
                              * kvt_config_int (config, "model/kv_heads"));
    self->fp8_plane_elems = (int) (kvt_config_int (config, "model/block_tokens")
                                   * kvt_config_int (config, "model/head_dim"));
    self->cold_bytes = kvt_fp8_block_bytes (self->fp8_planes, self->fp8_plane_elems);
    //  Layer groups as tier_nvme's store has them (the same geometry rule)
    kvt_block_shape_t shape = kvt_runtime_block_shape (config);
    self->layers = shape.layers;
    self->layer_groups = kvt_nvme_layer_groups (kvt_block_bytes (&shape), shape.layers,
                                                kvt_runtime_nvme_layer_groups (config), NULL);
    self->test_group_delay_ms = (int) kvt_config_int (config, "migration/test_group_delay_ms");
    self->streams = zlist_new ();
    self->upkeep_waiters = zlist_new ();
    self->write_through = kvt_config_int (config, "migration/write_through") != 0;
    kvt_migration_shadows_new (self);
    return self;
}

//  The actor ends: the copies still queued are reported failed, so that
//  their jobs are freed (the open calls fail next, in the skeleton).
static size_t
s_self_stop (void *self_ptr)
{
    return kvt_migration_copy_stop ((self_t *) self_ptr);
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        kvt_msg_t *msg;
        while ((msg = (kvt_msg_t *) zlist_pop (self->queue)))
            kvt_msg_destroy (&msg);
        zlist_destroy (&self->queue);
        while ((msg = (kvt_msg_t *) zlist_pop (self->background)))
            kvt_msg_destroy (&msg);
        zlist_destroy (&self->background);
        kvt_msg_destroy (&self->current);
        kvt_msg_destroy (&self->held_reply);
        kvt_msg_destroy (&self->test_held_reply);
        //  Waiters the cancelled upkeep did not release (it was waiting on a
        //  copy, not a call) go with the actor, as queued copies' do
        kvt_migration_ensure_t *waiter;
        while ((waiter = (kvt_migration_ensure_t *) zlist_pop (self->upkeep_waiters)))
            kvt_migration_ensure_free (self, &waiter, false);
        zlist_destroy (&self->upkeep_waiters);
        kvt_migration_streams_destroy (self);
        zlist_destroy (&self->streams);
        kvt_migration_shadows_destroy (self);
#ifdef KVT_WITH_CUDA
        kvt_migration_copy_destroy (&self->gpu_copy);
#endif
        assert (!self->copies_held || zlist_size (self->copies_held) == 0);
        zlist_destroy (&self->copies_held);
        free (self);
        *self_p = NULL;
    }
}

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    self->arenas [KVT_TIER_GPU] = kvt_arena_find ("gpu");
    self->arenas [KVT_TIER_HOST] = kvt_arena_find ("host");
    self->gpu_shard = kvt_arena_find (KVT_LAYER_SHARD_ARENA);    //  Layer sharding (#5)
    if (!self->arenas [0] || !self->arenas [1]) {
        kvt_log_error ("migration: the GPU and host arenas are not mapped in this process");
        return -ENOENT;
    }
    const char *admission = kvt_config_str (kvt_actor_config (self->actor), "migration/disk_admission");
    if (!streq (admission, "all") && !streq (admission, "reused")
    &&  !streq (admission, "predicted")) {
        kvt_log_error ("migration: config key 'migration/disk_admission' must be all, reused "
                       "or predicted, not '%s'", admission);
        return KVT_ECONFIG;
    }
    const char *through = kvt_config_str (kvt_actor_config (self->actor), "migration/write_through");
    if (!streq (through, "0") && !streq (through, "1")) {
        kvt_log_error ("migration: config key 'migration/write_through' must be 0 or 1, "
                       "not '%s'", through);
        return KVT_ECONFIG;
    }
    const char *cold = kvt_config_str (kvt_actor_config (self->actor), "migration/cold_dtype");
    if (!streq (cold, "bf16") && !streq (cold, "fp8")) {
        kvt_log_error ("migration: config key 'migration/cold_dtype' must be bf16 or fp8, "
                       "not '%s'", cold);
        return KVT_ECONFIG;
    }
    size_t block_bytes = kvt_arena_block_bytes (self->arenas [KVT_TIER_HOST]);
    if (self->cold_fp8
    &&  (self->fp8_plane_elems % 8 || block_bytes % 16
         || kvt_arena_block_bytes (self->arenas [KVT_TIER_GPU])
            + (self->gpu_shard? kvt_arena_block_bytes (self->gpu_shard): 0) != block_bytes
         || (size_t) self->fp8_planes * self->fp8_plane_elems * 2 != block_bytes)) {
        kvt_log_error ("migration: cold_dtype = fp8 needs bf16 blocks of block_tokens x "
                       "head_dim a multiple of 8");
        return KVT_ECONFIG;
    }
    if (self->overlap_upkeep < KVT_MIGRATION_UPKEEP_AFTER
    ||  self->overlap_upkeep > KVT_MIGRATION_UPKEEP_BESIDE) {
        kvt_log_error ("migration: config key 'migration/overlap_upkeep' must be 0, 1 or 2, "
                       "not %d", self->overlap_upkeep);
        return KVT_ECONFIG;
    }
    if (self->low_watermark >= self->high_watermark || self->high_watermark > 100) {
        kvt_log_error ("migration: need low_watermark < high_watermark <= 100");
        return KVT_ECONFIG;
    }
    return 0;
}

static const char *const s_peers [] = { "prefix_index", "tier_gpu", "tier_host", "tier_nvme",
                                        "compute", NULL };

const kvt_actor_def_t kvt_migration_def = {
    .name = "migration",
    .create = s_self_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .stop = s_self_stop,
    .peers = s_peers,
    .handlers = {
        [KVT_MSG_MIG_RESERVE] = s_handle_job,
        [KVT_MSG_MIG_PROMOTE] = s_handle_job,
        [KVT_MSG_MIG_DEMOTE]  = s_handle_job,
        [KVT_MSG_MIG_PREFETCH] = s_handle_job,
        [KVT_MSG_MIG_PROMOTE_END] = s_handle_job,
        [KVT_MSG_MIG_WRITE_THROUGH] = s_handle_job,
    },
};
