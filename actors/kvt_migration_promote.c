/*  =========================================================================
    kvt_migration_promote - bringing host and NVMe blocks to the GPU tier

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_migration_int.h"

//  PROMOTE: host and NVMe blocks to the GPU. NVMe blocks stage through
//  host slots: disk -> host (io_uring) -> GPU (copy).
//  With 'stream' set (scheduler, migration/stream_promotion; issue #3)
//  the GPU slots are reserved and NVMe blocks staged as above, but nothing
//  is copied and the index is not touched: the reply names the host slot
//  each block's bytes lie in, compute copies them in layer by layer while
//  it runs, and MIG_PROMOTE_END then commits the move (index to the GPU,
//  host, staging and disk slots freed) or undoes it (reserved GPU and
//  staging slots freed). Between the two the blocks stay pinned by the
//  scheduler's match, so no demotion touches their host slots.
//  With cold_dtype = fp8 the same holds: the host (and staging) slots
//  named in the reply hold the blocks' FP8 form (kvt_migration_copy.c),
//  and compute's model dequantizes layer l of each into its GPU slot just
//  before layer l runs (kvt_model.h, FP8 host copies), so the prefill
//  overlaps the promotion as with bf16; the bytes that crossed are the
//  FP8 form's (bytes_host_to_gpu at MIG_PROMOTE_END). Layer groups stay
//  1 with fp8 (kvt_runtime_nvme_layer_groups).
//  Where a promotion's time goes, summed over jobs in microseconds:
//  us_promote_reserving (getting its GPU slots, demotions included),
//  us_promote_copying (the host-resident blocks' copy, queued to done),
//  us_promoting (start to answer, plain promotions),
//  us_promote_copied_to_answer (its last copy done to its answer).
//
//  Layer groups (issue #4; migration/nvme_layer_groups = G > 1, in effect
//  when a group of the block is 4096-byte aligned and cold_dtype is bf16,
//  see kvt_nvme_layer_groups): a stream promotion does not wait for its
//  last NVMe block to leave the disk. On disk a block is
//  [layer][K,V][kv_head][token][head_dim], so layers [a, b) are one byte
//  range with its own checksum in the block's v2 header; the blocks are
//  read group-major (group 0 of every block, then group 1, ...; TIER_READ
//  layer_group), the scheduler is answered once group 0 of every block is
//  staged (MIG_PROMOTE_OK.ticket), and compute is told per group
//  (MIG_LAYERS_READY {ticket, layers_ready}) so it copies layer l in as
//  soon as layer l of every block is on the host, while the disk reads
//  the later layers. A block failing group 0 is a miss as before; one
//  failing a later group, after compute may have used its first layers,
//  makes the run fail (MIG_LAYERS_READY failed = 1 -> compute answers
//  KVT_ECHECKSUM -> the scheduler undoes the promotion and recomputes the
//  request), the block is forgotten and its disk slot freed; nothing of
//  the failed run is cached. The job outlives its answer until every
//  group is read (self->streams): staging slots that MIG_PROMOTE_END gives
//  back meanwhile are freed only then. Counters: stream_layer_group_jobs,
//  stream_early_replies, layer_group_reads, layers_ready_sent,
//  layers_ready_failed, stream_late_misses, stream_staging_deferred.

typedef struct {
    size_t count;                   //  Blocks asked
    uint64_t *hashes;               //  Their hashes
    uint64_t *tiers;                //  Where each is now
    uint64_t *slots;                //  Its slot there
    kvt_migration_ensure_t *gpu;    //  GPU slots, one per block
    kvt_migration_ensure_t *staging;    //  Host slots for the NVMe blocks
    size_t nvme_count;              //  Blocks coming from NVMe
    uint64_t *nvme_index;           //  Which blocks those are
    bool *failed;                   //  Per block: could not be read (a miss)
    bool *skipped;                  //  Per block: left on disk, no host room to stage it
    bool gpu_resident_swapped;      //  gpu->slots has one slot per block, GPU-resident
                                    //  blocks' their own (else: the reserved ones only)
    bool stream;                    //  Reserve and stage only; compute streams the copies
    //  Layer-group stream (issue #4; groups > 1 only)
    int groups;                     //  Layer groups the NVMe blocks are read in (0/1: whole)
    uint64_t ticket;                //  Names the run to compute (MIG_LAYERS_READY)
    size_t *group_pending;          //  Per group: chunks not yet answered
    int groups_done;                //  Leading groups read for every block
    int groups_sent;                //  Of those, announced to compute
    size_t reads_left;              //  Chunks not yet answered, all groups
    bool replied;                   //  PROMOTE_OK sent (group 0 of every block was read)
    bool late_failed;               //  A block failed a group after the reply: run fails
    bool *late;                     //  Per block: failed a group after the reply
    bool *released;                 //  Per staging slot: PROMOTE_END gave it back meanwhile
    zlist_t *held;                  //  TEST ONLY: reads held back (test_group_delay_ms)
    self_t *owner;                  //  TEST ONLY: for the timer that sends them
    kvt_msg_t *request;             //  Set once the job gave up the job slot (detached,
                                    //  overlap_upkeep = 2): its request, answered at finish
    int64_t started_us;             //  When the job started (us_promote_* counters)
    int64_t copy_us;                //  When the host blocks' copy was queued
    int64_t copied_us;              //  When its last copy was done (0: none yet)
    //  Pieces (plain promotions, issue #3): blocks whose bytes are on the
    //  GPU are moved in the index while the later ones still cross
    uint64_t *ready;                //  Blocks copied, not yet in an IDX_MOVE
    size_t ready_n;                 //  Entries in ready
    size_t piece_blocks;            //  An IDX_MOVE goes once this many are ready
    size_t moves_pending;           //  IDX_MOVEs not answered yet
    bool copied;                    //  Every copy is done: finish once no move is pending
    int move_rc;                    //  The index refused a piece: the job's error
} s_promote_t;

static void
s_promote_free (self_t *self, s_promote_t *job, bool release)
{
    if (release && job->gpu) {
        //  Give back only the slots reserved for this job: a block already
        //  on the GPU kept its own slot, which the index still owns
        uint64_t *reserved = kvt_migration_u64s (job->gpu->have);
        size_t count = 0;
        for (size_t k = 0; k < job->gpu->have; k++)
            if (!job->gpu_resident_swapped || job->tiers [k] != KVT_TIER_GPU)
                reserved [count++] = job->gpu->slots [k];
        kvt_migration_free_slots (self, KVT_TIER_GPU, reserved, count);
        free (reserved);
    }
    kvt_migration_ensure_free (self, &job->gpu, false);
    kvt_migration_ensure_free (self, &job->staging, true);  //  Staging always goes back
    free (job->hashes);
    free (job->tiers);
    free (job->slots);
    free (job->nvme_index);
    free (job->failed);
    free (job->skipped);
    free (job->group_pending);
    free (job->late);
    free (job->released);
    free (job->ready);
    if (job->held) {
        kvt_msg_t *msg;
        while ((msg = (kvt_msg_t *) zlist_pop (job->held))) {
            free (zlist_pop (job->held));  //  Its chunk
            kvt_msg_destroy (&msg);
        }
        zlist_destroy (&job->held);
    }
    free (job);
}

static void
s_promote_fail (self_t *self, s_promote_t *job, int rc, const char *what)
{
    assert (!job->request);         //  No failure after the job slot is given up
    s_promote_free (self, job, true);
    kvt_migration_job_error (self, rc, what);
}

//  A block's slot before the promotion goes back, unless write-through
//  keeps a host block as its shadow copy ('moved': the index has it on
//  the GPU now). The caller frees what it collects, in one message per
//  tier.
static void
s_old_slot_free (self_t *self, s_promote_t *job, size_t k, bool moved, uint64_t *host_free,
                 size_t *host_n, uint64_t *nvme_free, size_t *nvme_n)
{
    if (job->tiers [k] == KVT_TIER_HOST) {
        if (!moved || !kvt_migration_shadow_adopt (self, job->hashes [k], job->slots [k]))
            host_free [(*host_n)++] = job->slots [k];
    }
    else
    if (job->tiers [k] == KVT_TIER_NVME)
        nvme_free [(*nvme_n)++] = job->slots [k];
}

//  Every copy is done and every piece moved: free what is left, reply.
//  A block that failed is forgotten (IDX_REMOVE) with its slots; a
//  skipped one stays on disk and in the index, the scheduler recomputes
//  from it. The blocks stay pinned until the requester has our answer,
//  which comes only after the index answered every IDX_MOVE: on it the
//  requester unpins them.
static void
s_promote_finish (self_t *self, s_promote_t *job)
{
    uint64_t *failed = kvt_migration_u64s (job->count), *gpu_slots = kvt_migration_u64s (job->count);
    uint64_t *host_free = kvt_migration_u64s (job->count), *nvme_free = kvt_migration_u64s (job->count);
    uint64_t *gone = kvt_migration_u64s (job->count), *gpu_unused = kvt_migration_u64s (job->count);
    size_t failed_n = 0, host_n = 0, nvme_n = 0, gone_n = 0, unused_n = 0;
    for (size_t k = 0; k < job->count; k++) {
        gpu_slots [k] = job->gpu->slots [k];
        if (!job->skipped [k] && !job->failed [k])
            continue;               //  On the GPU: resident, or moved by its piece
        failed [failed_n++] = k;
        gpu_slots [k] = UINT64_MAX;
        gpu_unused [unused_n++] = job->gpu->slots [k];
        if (job->failed [k]) {
            gone [gone_n++] = job->hashes [k];
            if (job->tiers [k] == KVT_TIER_HOST)
                host_free [host_n++] = job->slots [k];
            else
                nvme_free [nvme_n++] = job->slots [k];
        }
    }
    kvt_actor_count (self->actor, "promote_misses", failed_n);
    kvt_msg_t *request = job->request? job->request: self->current;
    kvt_msg_t *reply;
    if (job->move_rc)
        reply = kvt_msg_error_new (request, job->move_rc, "migration: the index refused to "
                                   "move the blocks: %s", kvt_strerror (job->move_rc));
    else {
        reply = kvt_msg_reply_new (request, KVT_MSG_MIG_PROMOTE_OK);
        kvt_msg_set_array (reply, KVT_MIG_PROMOTE_OK_GPU_SLOTS, gpu_slots, job->count);
        kvt_msg_set_array (reply, KVT_MIG_PROMOTE_OK_FAILED, failed, failed_n);
    }
    kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES, gone, gone_n,
                  "IDX_REMOVE");
    kvt_migration_free_slots (self, KVT_TIER_HOST, host_free, host_n);
    kvt_migration_free_slots (self, KVT_TIER_NVME, nvme_free, nvme_n);
    kvt_migration_free_slots (self, KVT_TIER_GPU, gpu_unused, unused_n);
    int64_t now = kvt_now_us ();
    kvt_actor_count (self->actor, "us_promoting", (uint64_t) (now - job->started_us));
    if (job->copied_us)             //  The tail: the last piece's IDX_MOVE, then this
        kvt_actor_count (self->actor, "us_promote_copied_to_answer",
                         (uint64_t) (now - job->copied_us));
    free (failed); free (gpu_slots); free (host_free); free (nvme_free); free (gone);
    free (gpu_unused);
    kvt_msg_t *detached = job->request;
    s_promote_free (self, job, false);
    kvt_actor_mark (self->actor, "at_promote_answered");
    kvt_migration_answer (self, &reply, detached);
}

static void
s_promote_finish_when_moved (self_t *self, s_promote_t *job)
{
    if (job->copied && job->moves_pending == 0)
        s_promote_finish (self, job);
}

//  A piece in its IDX_MOVE
typedef struct {
    s_promote_t *job;               //  The promotion
    uint64_t *blocks;               //  Indices (into the job) of the piece's blocks
    size_t count;                   //  Entries in blocks
} s_piece_t;

//  A piece's IDX_MOVE is answered: its blocks' old slots go back (a host
//  slot kept as a write-through shadow, if moved). A refusal has made the
//  index forget the blocks and freed their GPU slots: their old slots go
//  back too, no shadow is kept for a block the index no longer has, none
//  is counted promoted, and the job answers the error.
static void
s_piece_moved (self_t *self, void *arg, int rc)
{
    s_piece_t *piece = (s_piece_t *) arg;
    s_promote_t *job = piece->job;
    uint64_t *host_free = kvt_migration_u64s (piece->count);
    uint64_t *nvme_free = kvt_migration_u64s (piece->count);
    size_t host_n = 0, nvme_n = 0;
    for (size_t j = 0; j < piece->count; j++)
        s_old_slot_free (self, job, piece->blocks [j], rc == 0, host_free, &host_n, nvme_free,
                         &nvme_n);
    kvt_migration_free_slots (self, KVT_TIER_HOST, host_free, host_n);
    kvt_migration_free_slots (self, KVT_TIER_NVME, nvme_free, nvme_n);
    if (rc == 0)
        kvt_actor_count (self->actor, "promoted", piece->count);
    else
    if (!job->move_rc)
        job->move_rc = rc;
    free (host_free); free (nvme_free); free (piece->blocks); free (piece);
    job->moves_pending--;
    s_promote_finish_when_moved (self, job);
}

//  The ready blocks' bytes are in their GPU slots: move them there in the
//  index while the later pieces still cross the link (issue #3: a long
//  prefix's IDX_MOVE used to follow its whole copy, 0.8-2 ms for 16384
//  blocks); their old slots go back once it is answered. Safe before the
//  rest arrives: another request matching one of these blocks on the GPU
//  finds its bytes there, and the requester's pins keep them until it
//  has our answer.
static void
s_piece_move (self_t *self, s_promote_t *job)
{
    if (job->ready_n == 0)
        return;
    uint64_t *hashes = kvt_migration_u64s (job->ready_n), *slots = kvt_migration_u64s (job->ready_n);
    for (size_t j = 0; j < job->ready_n; j++) {
        size_t k = job->ready [j];
        hashes [j] = job->hashes [k];
        slots [j] = job->gpu->slots [k];
    }
    s_piece_t *piece = (s_piece_t *) kvt_zmalloc (sizeof (s_piece_t));
    *piece = (s_piece_t) { job, kvt_u64s_dup (job->ready, job->ready_n), job->ready_n };
    kvt_actor_count (self->actor, "promote_pieces", 1);
    job->moves_pending++;
    size_t count = job->ready_n;
    job->ready_n = 0;
    kvt_migration_move_blocks (self, hashes, slots, count, KVT_TIER_GPU, s_piece_moved, piece);
    free (hashes); free (slots);
}

//  One copy of the job, into GPU slots: the blocks of an NVMe chunk, or a
//  piece of the host-resident blocks; the last copy queued ends the job
//  (copies finish in the order queued).
typedef struct {
    s_promote_t *job;               //  The promotion
    uint64_t *blocks;               //  Indices (into the job) of the copy's blocks
    size_t count;                   //  Entries in blocks
    bool last;                      //  The job's last copy
} s_chunk_copy_t;

//  A copy is done: its blocks are ready to move (or misses, if it
//  failed: their GPU slots hold nothing valid, the scheduler recomputes
//  them). A full piece, or the last copy, sends an IDX_MOVE.
static void
s_chunk_copied (self_t *self, void *arg, int rc)
{
    s_chunk_copy_t *copy = (s_chunk_copy_t *) arg;
    s_promote_t *job = copy->job;
    for (size_t j = 0; j < copy->count; j++) {
        size_t k = copy->blocks [j];
        if (rc)
            job->failed [k] = true;
        else
            job->ready [job->ready_n++] = k;
    }
    if (job->ready_n >= job->piece_blocks || copy->last)
        s_piece_move (self, job);
    if (copy->last) {
        job->copied_us = kvt_now_us ();
        kvt_actor_mark (self->actor, "at_promote_copied");
        kvt_actor_count (self->actor, "us_promote_copying",
                         (uint64_t) (job->copied_us - job->copy_us));
        job->copied = true;
        s_promote_finish_when_moved (self, job);
    }
    free (copy->blocks);
    free (copy);
}

//  Queue the copy of 'count' blocks (indices into the job, from host
//  slots 'from' to their GPU slots).
static void
s_chunk_copy (self_t *self, s_promote_t *job, const uint64_t *blocks, const uint64_t *from,
              size_t count, bool last)
{
    s_chunk_copy_t *copy = (s_chunk_copy_t *) kvt_zmalloc (sizeof (s_chunk_copy_t));
    *copy = (s_chunk_copy_t) { job, kvt_u64s_dup (blocks, count), count, last };
    uint64_t *to = kvt_migration_u64s (count);
    for (size_t j = 0; j < count; j++)
        to [j] = job->gpu->slots [blocks [j]];
    kvt_migration_copy_blocks (self, KVT_TIER_HOST, from, KVT_TIER_GPU, to, count, s_chunk_copied,
                               copy);
    free (to);
}

//  A stream promotion has its GPU slots and its NVMe blocks staged:
//  answer with the host slot of each block, drop what failed, keep the
//  rest (host slots, staging slots, reserved GPU slots) for
//  MIG_PROMOTE_END.
static void
s_promote_stream_reply (self_t *self, s_promote_t *job)
{
    uint64_t *gpu_slots = kvt_migration_u64s (job->count), *host_slots = kvt_migration_u64s (job->count);
    uint64_t *failed = kvt_migration_u64s (job->count), *gone = kvt_migration_u64s (job->count);
    uint64_t *gpu_unused = kvt_migration_u64s (job->count), *host_free = kvt_migration_u64s (job->count);
    uint64_t *nvme_free = kvt_migration_u64s (job->count);
    size_t failed_n = 0, gone_n = 0, unused_n = 0, host_n = 0, nvme_n = 0, streamed = 0;
    for (size_t k = 0; k < job->count; k++)
        host_slots [k] = UINT64_MAX;
    for (size_t j = 0; job->staging && j < job->nvme_count; j++)
        host_slots [job->nvme_index [j]] = job->staging->slots [j];
    for (size_t k = 0; k < job->count; k++) {
        gpu_slots [k] = job->gpu->slots [k];
        if (job->skipped [k] || job->failed [k]) {
            failed [failed_n++] = k;
            gpu_unused [unused_n++] = job->gpu->slots [k];
            gpu_slots [k] = UINT64_MAX;
            if (job->failed [k]) {
                //  Failed its checksum: forgotten, its slots freed (a
                //  layer-group read frees its disk slot once every
                //  group's read is over: s_groups_end)
                gone [gone_n++] = job->hashes [k];
                if (job->tiers [k] == KVT_TIER_NVME && job->groups <= 1)
                    nvme_free [nvme_n++] = job->slots [k];
                if (job->tiers [k] == KVT_TIER_HOST)
                    host_free [host_n++] = job->slots [k];
            }
            if (job->tiers [k] == KVT_TIER_NVME && host_slots [k] != UINT64_MAX
            &&  job->groups <= 1)
                host_free [host_n++] = host_slots [k];      //  Its staging slot
            host_slots [k] = UINT64_MAX;
            continue;
        }
        if (job->tiers [k] == KVT_TIER_HOST)
            host_slots [k] = job->slots [k];
        streamed += job->tiers [k] != KVT_TIER_GPU;
    }
    kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES, gone,
                              gone_n, "IDX_REMOVE");
    kvt_migration_free_slots (self, KVT_TIER_HOST, host_free, host_n);
    kvt_migration_free_slots (self, KVT_TIER_NVME, nvme_free, nvme_n);
    kvt_migration_free_slots (self, KVT_TIER_GPU, gpu_unused, unused_n);
    if (job->staging)
        job->staging->have = 0;     //  The kept staging slots go back at MIG_PROMOTE_END
    kvt_actor_count (self->actor, "stream_promotions", 1);
    kvt_actor_count (self->actor, "stream_promoted_blocks", streamed);
    kvt_actor_count (self->actor, "promote_misses", failed_n);
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_PROMOTE_OK);
    kvt_msg_set_array (reply, KVT_MIG_PROMOTE_OK_GPU_SLOTS, gpu_slots, job->count);
    kvt_msg_set_array (reply, KVT_MIG_PROMOTE_OK_FAILED, failed, failed_n);
    kvt_msg_set_array (reply, KVT_MIG_PROMOTE_OK_HOST_SLOTS, host_slots, job->count);
    kvt_msg_set_u64 (reply, KVT_MIG_PROMOTE_OK_TICKET, job->ticket);
    free (gpu_slots); free (host_slots); free (failed); free (gone);
    free (gpu_unused); free (host_free); free (nvme_free);
    if (job->groups <= 1)
        s_promote_free (self, job, false);
    //  else: the later groups are still being read (s_groups_end frees it)
    kvt_migration_job_reply (self, &reply);
}

//  Copy the host-resident blocks to their GPU slots (the NVMe ones were
//  copied chunk by chunk as they arrived), in pieces of piece_blocks in
//  prefix order, each moved in the index as soon as it is across; then
//  finish. A stream promotion copies nothing: it answers with the host
//  slots instead.
static void
s_promote_copy (self_t *self, s_promote_t *job)
{
    if (job->stream) {
        s_promote_stream_reply (self, job);
        return;
    }
    uint64_t *blocks = kvt_migration_u64s (job->count), *from = kvt_migration_u64s (job->count);
    size_t n = 0;
    job->copy_us = kvt_now_us ();
    for (size_t k = 0; k < job->count; k++)
        if (job->tiers [k] == KVT_TIER_HOST && !job->failed [k]) {
            blocks [n] = k;
            from [n++] = job->slots [k];
        }
    //  With overlap_upkeep = 2 the job gives up the job slot now and
    //  answers when the copy is done: the next job (another request's
    //  promotion) reserves and queues its copy while this one crosses the
    //  link, instead of after. Nothing the next job does touches this
    //  one's blocks: they are pinned by the requester's match (and
    //  promoting: no other request promotes them), its GPU slots are
    //  reserved, its host slots freed only once moved. (A CPU build's copy
    //  is a memcpy done before the call returns: the same path, no gain.)
    if (self->overlap_upkeep == KVT_MIGRATION_UPKEEP_BESIDE && n > 0)
        job->request = kvt_migration_job_detach (self);
    //  Even with nothing to copy, the last (empty) copy goes through the
    //  stream, after the NVMe chunks' copies queued before it
    size_t first = 0;
    do {
        size_t count = n - first < job->piece_blocks? n - first: job->piece_blocks;
        s_chunk_copy (self, job, blocks + first, from + first, count, first + count == n);
        first += count;
    } while (first < n);
    free (blocks);
    free (from);
}

//  --------------------------------------------------------------------------
//  Layer-group stream reads (issue #4). With migration/nvme_layer_groups
//  G > 1 a stream promotion reads its NVMe blocks group-major: group 0
//  (layers [0, L / G)) of every block, then group 1, ..., each group in
//  chunks of KVT_MIGRATION_CHUNK_BYTES, every TIER_READ sent at once (tier_nvme
//  serves them in order). Once group 0 of every block is read the
//  scheduler gets its answer (blocks that failed so far are misses, as
//  before), with a ticket it passes to compute in COMP_RUN; each time the
//  next group of every block is read, compute gets MIG_LAYERS_READY
//  {ticket, layers_ready}, and copies those layers in. A block failing a
//  group after the answer: MIG_LAYERS_READY {failed = 1}, compute fails
//  the run (the scheduler then recomputes the request), the block is
//  forgotten. The job lives until its last read is answered: only then
//  are the disk and staging slots of failed blocks freed, and staging
//  slots the scheduler's MIG_PROMOTE_END gave back meanwhile.

typedef struct {
    s_promote_t *job;               //  The promotion
    int group;                      //  Its layer group
    size_t first;                   //  Index of its first block in the NVMe blocks
    size_t count;                   //  Blocks in the chunk
} s_group_chunk_t;

static void s_groups_end (self_t *self, s_promote_t *job);

//  Tell compute that layers [0, layers) of the run are on the host, or
//  that the run must fail.
static void
s_layers_ready (self_t *self, s_promote_t *job, uint64_t layers, bool failed)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_MIG_LAYERS_READY);
    kvt_msg_set_u64 (msg, KVT_MIG_LAYERS_READY_TICKET, job->ticket);
    kvt_msg_set_u64 (msg, KVT_MIG_LAYERS_READY_LAYERS_READY, layers);
    kvt_msg_set_u64 (msg, KVT_MIG_LAYERS_READY_FAILED, failed);
    kvt_actor_call (self->actor, "compute", &msg, NULL, NULL);
    kvt_actor_count (self->actor, failed? "layers_ready_failed": "layers_ready_sent", 1);
}

//  Move on as far as the groups read allow: answer the scheduler after
//  group 0, announce each further group, end after the last read.
static void
s_groups_advance (self_t *self, s_promote_t *job)
{
    while (job->groups_done < job->groups && job->group_pending [job->groups_done] == 0)
        job->groups_done++;
    if (!job->replied && job->groups_done > 0) {
        job->replied = true;
        kvt_actor_count (self->actor, "stream_early_replies", job->groups_done < job->groups);
        s_promote_stream_reply (self, job);
    }
    if (job->replied && !job->late_failed && job->groups_done > job->groups_sent) {
        job->groups_sent = job->groups_done;
        s_layers_ready (self, job, (uint64_t) (job->groups_done * self->layers / job->groups),
                        false);
    }
    if (job->reads_left == 0)
        s_groups_end (self, job);
}

static void
s_group_chunk_read (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_group_chunk_t *chunk = (s_group_chunk_t *) arg;
    s_promote_t *job = chunk->job;
    if (rc)
        kvt_log_warn ("migration: NVMe read of layer group %d failed: %s", chunk->group,
                      kvt_strerror (rc));
    bool *bad = kvt_migration_read_misses (rc, *reply_p, chunk->count);
    size_t good = 0;
    for (size_t k = 0; k < chunk->count; k++) {
        size_t block = job->nvme_index [chunk->first + k];
        if (!bad [k]) {
            good++;
            continue;
        }
        if (job->failed [block] || job->late [block])
            continue;               //  Known already
        if (!job->replied) {
            job->failed [block] = true;     //  A miss in the answer, never used
            continue;
        }
        //  Compute may have used earlier layers of it: the run must fail
        kvt_log_warn ("migration: block %016" PRIx64 " failed layer group %d after the "
                      "run started; the request is recomputed", job->hashes [block],
                      chunk->group);
        job->late [block] = true;
        kvt_actor_count (self->actor, "stream_late_misses", 1);
        kvt_migration_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE,
                                  KVT_IDX_REMOVE_HASHES, &job->hashes [block], 1, "IDX_REMOVE");
        if (!job->late_failed) {
            job->late_failed = true;
            s_layers_ready (self, job, 0, true);
        }
    }
    kvt_actor_count (self->actor, "layer_group_reads", chunk->count);
    kvt_actor_count (self->actor, "bytes_nvme_to_host",
                     good * kvt_arena_block_bytes (self->arenas [KVT_TIER_HOST])
                     / (size_t) job->groups);
    job->group_pending [chunk->group]--;
    job->reads_left--;
    free (bad);
    free (chunk);
    s_groups_advance (self, job);
}

//  Send one chunk's TIER_READ of one layer group, or hold it (test delay).
static void
s_group_chunk_send (self_t *self, s_promote_t *job, int group, size_t first, size_t count,
                    const uint64_t *nvme_slots, const uint64_t *hashes)
{
    s_group_chunk_t *chunk = (s_group_chunk_t *) kvt_zmalloc (sizeof (s_group_chunk_t));
    *chunk = (s_group_chunk_t) { job, group, first, count };
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_TIER_READ);
    kvt_msg_set_array (msg, KVT_TIER_READ_SLOTS, nvme_slots + first, count);
    kvt_msg_set_array (msg, KVT_TIER_READ_HASHES, hashes + first, count);
    kvt_msg_set_array (msg, KVT_TIER_READ_DST_SLOTS, job->staging->slots + first, count);
    kvt_msg_set_u64 (msg, KVT_TIER_READ_LAYER_GROUP, (uint64_t) group + 1);
    if (group > 0 && job->held) {
        zlist_append (job->held, msg);
        zlist_append (job->held, chunk);
        return;
    }
    kvt_actor_call (self->actor, "tier_nvme", &msg, s_group_chunk_read, chunk);
}

//  TEST ONLY: the held reads go out now.
static int
s_groups_release_held (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    s_promote_t *job = (s_promote_t *) arg;
    kvt_msg_t *msg;
    while ((msg = (kvt_msg_t *) zlist_pop (job->held))) {
        s_group_chunk_t *chunk = (s_group_chunk_t *) zlist_pop (job->held);
        kvt_actor_call (job->owner->actor, "tier_nvme", &msg, s_group_chunk_read, chunk);
    }
    return 0;
}

//  Read the job's NVMe blocks into their staging slots, group-major.
static void
s_read_groups (self_t *self, s_promote_t *job)
{
    job->groups = self->layer_groups;
    job->ticket = ++self->next_ticket;
    job->group_pending = (size_t *) kvt_zmalloc ((size_t) job->groups * sizeof (size_t));
    job->late = (bool *) kvt_zmalloc (job->count + 1);
    job->released = (bool *) kvt_zmalloc (job->nvme_count + 1);
    size_t group_bytes = kvt_arena_block_bytes (self->arenas [KVT_TIER_HOST])
                       / (size_t) job->groups;
    size_t per_chunk = KVT_MIGRATION_CHUNK_BYTES / (group_bytes? group_bytes: 1);
    if (per_chunk == 0)
        per_chunk = 1;
    uint64_t *nvme_slots = kvt_migration_u64s (job->nvme_count);
    uint64_t *hashes = kvt_migration_u64s (job->nvme_count);
    for (size_t k = 0; k < job->nvme_count; k++) {
        nvme_slots [k] = job->slots [job->nvme_index [k]];
        hashes [k] = job->hashes [job->nvme_index [k]];
    }
    size_t chunks = (job->nvme_count + per_chunk - 1) / per_chunk;
    for (int g = 0; g < job->groups; g++)
        job->group_pending [g] = chunks;
    job->reads_left = chunks * (size_t) job->groups;
    zlist_append (self->streams, job);
    if (self->test_group_delay_ms > 0) {
        job->held = zlist_new ();
        job->owner = self;
    }
    kvt_actor_count (self->actor, "stream_chunks", job->reads_left);
    kvt_actor_count (self->actor, "stream_layer_group_jobs", 1);
    for (int g = 0; g < job->groups; g++)
        for (size_t first = 0; first < job->nvme_count; first += per_chunk)
            s_group_chunk_send (self, job, g, first,
                                job->nvme_count - first < per_chunk? job->nvme_count - first
                                                                   : per_chunk,
                                nvme_slots, hashes);
    if (job->held)
        zloop_timer (kvt_actor_loop (self->actor), (size_t) self->test_group_delay_ms, 1,
                     s_groups_release_held, job);
    free (nvme_slots);
    free (hashes);
}

//  Every group's read is answered: free what failed blocks held (disk
//  slots; staging slots the scheduler never got) and the staging slots
//  PROMOTE_END gave back meanwhile, then the job.
static void
s_groups_end (self_t *self, s_promote_t *job)
{
    uint64_t *nvme_free = kvt_migration_u64s (job->nvme_count);
    uint64_t *host_free = kvt_migration_u64s (job->nvme_count);
    size_t nvme_n = 0, host_n = 0;
    for (size_t j = 0; j < job->nvme_count; j++) {
        size_t block = job->nvme_index [j];
        if (job->failed [block] || job->late [block])
            nvme_free [nvme_n++] = job->slots [block];
        if (job->failed [block] || job->released [j])
            host_free [host_n++] = job->staging->slots [j];
    }
    kvt_migration_free_slots (self, KVT_TIER_NVME, nvme_free, nvme_n);
    kvt_migration_free_slots (self, KVT_TIER_HOST, host_free, host_n);
    free (nvme_free);
    free (host_free);
    zlist_remove (self->streams, job);
    s_promote_free (self, job, false);
}

bool
kvt_migration_staging_busy (self_t *self, uint64_t slot)
{
    for (s_promote_t *job = (s_promote_t *) zlist_first (self->streams); job;
         job = (s_promote_t *) zlist_next (self->streams))
        for (size_t j = 0; j < job->nvme_count; j++)
            if (job->staging->slots [j] == slot && !job->released [j]) {
                job->released [j] = true;
                return true;
            }
    return false;
}

void
kvt_migration_streams_destroy (self_t *self)
{
    s_promote_t *job;
    while (self->streams && (job = (s_promote_t *) zlist_pop (self->streams))) {
        job->staging->have = 0;
        job->gpu->have = 0;
        s_promote_free (self, job, false);
    }
}

//  All of a promotion's chunks are answered
static void
s_promote_chunks_done (self_t *self, void *arg, int rc)
{
    (void) rc;
    s_promote_copy (self, (s_promote_t *) arg);
}

//  One chunk of a promotion is read: its good blocks go on to the GPU
//  (or stay staged for compute, in a stream promotion)
static void
s_promote_chunk_read (self_t *self, void *arg, size_t first, size_t count, const bool *bad)
{
    s_promote_t *job = (s_promote_t *) arg;
    uint64_t *blocks = kvt_migration_u64s (count), *from = kvt_migration_u64s (count);
    size_t n = 0;
    for (size_t k = 0; k < count; k++) {
        size_t block = job->nvme_index [first + k];
        if (bad [k]) {
            job->failed [block] = true;
            continue;
        }
        blocks [n] = block;
        from [n++] = job->staging->slots [first + k];
    }
    kvt_actor_count (self->actor, "bytes_nvme_to_host", kvt_migration_cold_bytes (self, n));
    if (!job->stream)               //  (Else staged, left for compute to stream)
        s_chunk_copy (self, job, blocks, from, n, false);
    free (blocks);
    free (from);
}

static void
s_promote_have_staging (self_t *self, void *arg, int rc)
{
    s_promote_t *job = (s_promote_t *) arg;
    if (rc == -ENOSPC) {
        //  The host tier is full of pinned blocks: leave the NVMe blocks
        //  on disk; the request recomputes them instead of failing
        for (size_t k = 0; k < job->nvme_count; k++)
            job->skipped [job->nvme_index [k]] = true;
        kvt_actor_count (self->actor, "nvme_blocks_not_staged", job->nvme_count);
        kvt_migration_ensure_free (self, &job->staging, true);
        job->nvme_count = 0;
        s_promote_copy (self, job);
        return;
    }
    if (rc) {
        s_promote_fail (self, job, rc, "no host room to stage NVMe blocks");
        return;
    }
    if (job->stream && self->layer_groups > 1) {
        s_read_groups (self, job);      //  Answers after group 0 (s_groups_advance)
        return;
    }
    uint64_t *nvme_slots = kvt_migration_u64s (job->nvme_count);
    uint64_t *hashes = kvt_migration_u64s (job->nvme_count);
    for (size_t k = 0; k < job->nvme_count; k++) {
        nvme_slots [k] = job->slots [job->nvme_index [k]];
        hashes [k] = job->hashes [job->nvme_index [k]];
    }
    size_t chunks = kvt_migration_read_chunks (self, nvme_slots, hashes, job->staging->slots,
                                               job->nvme_count, s_promote_chunk_read,
                                               s_promote_chunks_done, job);
    kvt_actor_count (self->actor, "stream_chunks", chunks);
    free (nvme_slots);
    free (hashes);
    if (chunks == 0)
        s_promote_copy (self, job);     //  Nothing to read
}

//  Any reserved GPU slot may take any block: give the host-resident
//  blocks theirs in the order of their host slots (lowest host slot, lowest
//  GPU slot). A prefix demoted leaf first sits in descending host slots,
//  and its reserved GPU slots ascend; matched this way, every run of
//  adjacent host slots lands in a run of adjacent GPU slots, so compute's
//  layer-by-layer stream copies it as one strided copy-engine copy per
//  layer instead of one per block (kvt_model_cuda_seq.c), and a plain
//  promotion's staged copy scatters into adjacent slots.
static void
s_gpu_slots_follow_host (s_promote_t *job)
{
    //  Key: a host-resident block's host slot, value: the block; and the
    //  GPU slots reserved for those blocks, lowest first
    kvt_pair_t *order = (kvt_pair_t *) kvt_zmalloc ((job->count + 1) * sizeof (kvt_pair_t));
    kvt_pair_t *reserved = (kvt_pair_t *) kvt_zmalloc ((job->count + 1) * sizeof (kvt_pair_t));
    size_t n = 0;
    for (size_t k = 0; k < job->count; k++)
        if (job->tiers [k] == KVT_TIER_HOST) {
            order [n] = (kvt_pair_t) { job->slots [k], k };
            reserved [n++] = (kvt_pair_t) { job->gpu->slots [k], 0 };
        }
    kvt_pairs_sort (order, n);
    kvt_pairs_sort (reserved, n);
    for (size_t k = 0; k < n; k++)
        job->gpu->slots [order [k].value] = reserved [k].key;
    free (order);
    free (reserved);
}

static void
s_promote_have_gpu (self_t *self, void *arg, int rc)
{
    s_promote_t *job = (s_promote_t *) arg;
    if (rc) {
        s_promote_fail (self, job, rc, "cannot free enough GPU blocks");
        return;
    }
    kvt_actor_count (self->actor, "us_promote_reserving",
                     (uint64_t) (kvt_now_us () - job->started_us));
    //  One GPU slot per block, in block order: a block already on the GPU
    //  keeps its own, the others take the reserved ones
    uint64_t *slots = kvt_migration_u64s (job->count);
    size_t next = 0;
    for (size_t k = 0; k < job->count; k++)
        slots [k] = job->tiers [k] == KVT_TIER_GPU? job->slots [k]: job->gpu->slots [next++];
    assert (next == job->gpu->have);
    free (job->gpu->slots);
    job->gpu->slots = slots;
    job->gpu->want = job->gpu->have = job->count;
    job->gpu_resident_swapped = true;
    s_gpu_slots_follow_host (job);
    //  NVMe blocks stage through host slots, all at once: at most half the
    //  host tier, so staging never needs more room than the tier can make.
    //  The prefix's tail beyond that stays on disk and is recomputed.
    size_t room = self->capacity [KVT_TIER_HOST] / 2? self->capacity [KVT_TIER_HOST] / 2: 1;
    if (job->nvme_count > room) {
        for (size_t k = room; k < job->nvme_count; k++)
            job->skipped [job->nvme_index [k]] = true;
        kvt_actor_count (self->actor, "nvme_blocks_not_staged", job->nvme_count - room);
        job->nvme_count = room;
    }
    if (job->nvme_count)
        job->staging = kvt_migration_ensure (self, KVT_TIER_HOST, job->nvme_count,
                                 s_promote_have_staging, job);
    else
        s_promote_copy (self, job);
}

void
kvt_migration_start_promote (self_t *self)
{
    size_t count, tier_count, slot_count;
    const uint64_t *hashes = kvt_msg_array (self->current, KVT_MIG_PROMOTE_HASHES, &count);
    const uint64_t *tiers = kvt_msg_array (self->current, KVT_MIG_PROMOTE_TIERS, &tier_count);
    const uint64_t *slots = kvt_msg_array (self->current, KVT_MIG_PROMOTE_SLOTS, &slot_count);
    if (tier_count != count || slot_count != count) {
        kvt_migration_job_error (self, -EINVAL, "hashes, tiers and slots differ in length");
        return;
    }
    for (size_t k = 0; k < count; k++)
        if (tiers [k] >= KVT_TIER_COUNT
        ||  (tiers [k] < 2 && slots [k] >= kvt_arena_block_count (self->arenas [tiers [k]]))) {
            kvt_migration_job_error (self, -ERANGE, "tier or slot out of range");
            return;
        }
    if (count == 0 || count > kvt_arena_block_count (self->arenas [KVT_TIER_GPU])) {
        kvt_migration_job_error (self, count? -ENOSPC: -EINVAL, count? "more blocks than the GPU tier holds"
                                                         : "nothing to promote");
        return;
    }
    s_promote_t *job = (s_promote_t *) kvt_zmalloc (sizeof (s_promote_t));
    job->count = count;
    job->hashes = kvt_migration_u64s (count);
    job->tiers = kvt_migration_u64s (count);
    job->slots = kvt_migration_u64s (count);
    job->nvme_index = kvt_migration_u64s (count);
    job->failed = (bool *) kvt_zmalloc ((count + 1) * sizeof (bool));
    job->skipped = (bool *) kvt_zmalloc ((count + 1) * sizeof (bool));
    memcpy (job->hashes, hashes, count * sizeof (uint64_t));
    memcpy (job->tiers, tiers, count * sizeof (uint64_t));
    memcpy (job->slots, slots, count * sizeof (uint64_t));
    for (size_t k = 0; k < count; k++)
        if (tiers [k] == KVT_TIER_NVME)
            job->nvme_index [job->nvme_count++] = k;
    job->stream = kvt_msg_u64 (self->current, KVT_MIG_PROMOTE_STREAM) != 0;
    job->started_us = kvt_now_us ();
    kvt_actor_mark (self->actor, "at_promote_start");
    job->ready = job->stream? NULL: kvt_migration_u64s (count);
    size_t block_bytes = kvt_migration_cold_bytes (self, 1);
    //  Each piece costs one IDX_MOVE and one completion on the copy stream
    //  (~10-20 us); the request waits after its copy only for the last
    //  piece's IDX_MOVE, ~0.1 ms for 1024 blocks
    job->piece_blocks = self->promote_piece_bytes / (block_bytes? block_bytes: 1);
    if (job->piece_blocks == 0)
        job->piece_blocks = 1;
    //  GPU slots for the blocks not on the GPU yet, only: asking for one
    //  per block would need room for the resident ones twice over
    size_t needed = 0;
    for (size_t k = 0; k < count; k++)
        needed += tiers [k] != KVT_TIER_GPU;
    job->gpu = kvt_migration_ensure_new (KVT_TIER_GPU, needed, s_promote_have_gpu, job);
    if (needed == 0)
        s_promote_have_gpu (self, job, 0);
    else
        kvt_migration_ensure_start (self, job->gpu);
}
