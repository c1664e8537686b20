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
             MIG_PROMOTE {hashes, tiers, slots} -> MIG_PROMOTE_OK
               {gpu_slots, failed}: bring host and NVMe blocks to the GPU;
             MIG_DEMOTE {from_tier, to_tier, max_blocks} -> MIG_DEMOTE_OK {moved}.
@discuss
    Tiers are exclusive: a moved block leaves its old slot. A block read
    back from NVMe whose checksum fails is a miss: it is removed from the
    index, reported in 'failed', and the scheduler recomputes it.
    Demotion off the last tier drops the block (counted). What goes to disk
    is chosen by migration/disk_admission: every evicted block (all, write-
    back), or only blocks a request has found cached since they were made
    (reused: write on second hit, sparing disk bandwidth and wear).
    Top-level jobs run one at a time, in arrival order; each is a chain of
    asynchronous calls to the index and the tiers, so the loop never waits.
    Victims are chosen by the prefix index's per-tier LRU order and are
    pinned while they move, as are the blocks a request is using.
@end
*/

#include "kvt_classes.h"
#include "kvt_actors.h"

typedef struct _self_t self_t;
typedef void (s_cont_fn) (self_t *self, void *arg, int rc);
typedef struct _s_gpu_copy_t s_gpu_copy_t;     //  CUDA copy state (CUDA builds)

#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#   include <sys/eventfd.h>
#   include "kvt_block_copy.cuh"
#endif

static const char *const s_tier_actor [KVT_TIER_COUNT] = { "tier_gpu", "tier_host", "tier_nvme" };


struct _self_t {
    kvt_actor_t *actor;             //  Our skeleton
    kvt_arena_t *arenas [2];        //  GPU and host slabs (borrowed)
    size_t capacity [KVT_TIER_COUNT];   //  Blocks each tier holds
    zlist_t *queue;                 //  Top-level requests waiting their turn
    kvt_msg_t *current;             //  The request being served, or NULL
    int high_watermark;             //  Percent used that starts background demotion
    int low_watermark;              //  Percent used it demotes down to
    uint64_t background_batch;      //  Most blocks one background job moves
    bool overlap_upkeep;            //  Reply before the watermark upkeep?
    bool disk_admits_reused_only;   //  Write on second hit: only reused blocks go to disk
    kvt_msg_t *held_reply;          //  Reply waiting for the upkeep to finish
    s_gpu_copy_t *gpu_copy;         //  Copy stream and its completions, made on first GPU copy
};

//  --------------------------------------------------------------------------
//  Small helpers

static uint64_t *
s_u64s (size_t count)
{
    return (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
}

//  Fire-and-check call: the answer only matters if it fails.
static void
s_expect_ok (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    (void) reply_p;
    if (rc) {
        kvt_actor_count (self->actor, "housekeeping_failures", 1);
        kvt_log_warn ("migration: %s failed: %s", (const char *) arg, kvt_strerror (rc));
    }
}

static void
s_send_array (self_t *self, const char *peer, int id, int field, const uint64_t *values,
              size_t count, const char *what)
{
    if (count == 0)
        return;
    kvt_msg_t *msg = kvt_msg_new (id);
    kvt_msg_set_array (msg, field, values, count);
    kvt_actor_call (self->actor, peer, &msg, s_expect_ok, (void *) what);
}

static void
s_free_slots (self_t *self, int tier, const uint64_t *slots, size_t count)
{
    s_send_array (self, s_tier_actor [tier], KVT_MSG_TIER_FREE, KVT_TIER_FREE_SLOTS,
                  slots, count, "TIER_FREE");
}

static void
s_unpin (self_t *self, const uint64_t *hashes, size_t count)
{
    s_send_array (self, "prefix_index", KVT_MSG_IDX_UNPIN, KVT_IDX_UNPIN_HASHES,
                  hashes, count, "IDX_UNPIN");
}

#ifdef KVT_WITH_CUDA
//  Blocks smaller than this move with the copy kernel (SMs issue the PCIe
//  traffic, one launch for all blocks); larger ones on the copy engines.
//  Measured on the H100 (tools/bench/RESULTS.md, "attention beside a
//  transfer"): the kernel alone is faster up to 256 KiB, but it takes SMs
//  that attention needs (attention 1.5x slower beside it even at 8 CTAs),
//  while the copy engines cost attention 7-9%. Migration runs beside
//  compute, so the engines win from 64 KiB; below that they crawl
//  (3.7 GB/s at 16 KiB) and the kernel stays.
#define S_KERNEL_COPY_MAX_BYTES (64u << 10)

//  A copy queued on the stream, waiting for its completion event.
typedef struct {
    s_cont_fn *cont;                //  Called once the copy is done, or NULL
    void *arg;                      //  Its argument
    int rc;                         //  Status of queueing the copy
} s_copy_wait_t;

//  Copies run on one stream, in order. After each, a host function (run
//  by CUDA on its own thread) adds 1 to an eventfd; our zloop reads it and
//  calls the continuations of that many copies, oldest first. The actor's
//  thread never waits on the GPU.
struct _s_gpu_copy_t {
    cudaStream_t stream;            //  Copies run here
    int event_fd;                   //  Counts finished copies; polled by our zloop
    zlist_t *waiting;               //  s_copy_wait_t, in stream order
};

static void
s_gpu_copy_destroy (s_gpu_copy_t **self_p)
{
    s_gpu_copy_t *self = *self_p;
    if (self) {
        if (self->stream) {
            cudaStreamSynchronize (self->stream);
            cudaStreamDestroy (self->stream);
        }
        if (self->event_fd >= 0)
            close (self->event_fd);
        s_copy_wait_t *wait;        //  Continuations of copies still queued are dropped
        while (self->waiting && (wait = (s_copy_wait_t *) zlist_pop (self->waiting)))
            free (wait);
        zlist_destroy (&self->waiting);
        free (self);
        *self_p = NULL;
    }
}

//  CUDA's host function after a copy: count it on the eventfd. Runs on a
//  CUDA thread, so it makes no CUDA call and touches nothing of ours.
static void CUDART_CB
s_gpu_copy_signal (void *fd_ptr)
{
    uint64_t one = 1;
    if (write ((int) (intptr_t) fd_ptr, &one, sizeof (one)) != sizeof (one))
        kvt_log_error ("migration: cannot signal a finished copy: %s", strerror (errno));
}

//  Our zloop: copies finished; run their continuations in order.
static int
s_gpu_copy_done (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    self_t *self = (self_t *) arg;
    uint64_t done = 0;
    if (read (item->fd, &done, sizeof (done)) != sizeof (done))
        return 0;                   //  Spurious wake-up
    for (; done > 0; done--) {
        s_copy_wait_t *wait = (s_copy_wait_t *) zlist_pop (self->gpu_copy->waiting);
        if (!wait)
            break;
        if (wait->cont)
            wait->cont (self, wait->arg, wait->rc);
        free (wait);
    }
    return 0;
}

static int
s_gpu_copy_new (self_t *self)
{
    s_gpu_copy_t *copy = (s_gpu_copy_t *) kvt_zmalloc (sizeof (s_gpu_copy_t));
    copy->waiting = zlist_new ();
    copy->event_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    zmq_pollitem_t item = { NULL, copy->event_fd, ZMQ_POLLIN, 0 };
    if (copy->event_fd < 0
    ||  cudaStreamCreateWithFlags (&copy->stream, cudaStreamNonBlocking) != cudaSuccess
    ||  zloop_poller (kvt_actor_loop (self->actor), &item, s_gpu_copy_done, self) != 0) {
        copy->stream = NULL;
        s_gpu_copy_destroy (&copy);
        return KVT_ECUDA;
    }
    self->gpu_copy = copy;
    return 0;
}

//  Queue 'count' block copies between a device slab and the pinned host
//  slab (or inside the device) on the copy stream: kernel or copy engines
//  by block size. Returns 0 once queued, or an error.
static int
s_copy_blocks_queue (self_t *self, kvt_arena_t *src, const uint64_t *from_slots,
                     kvt_arena_t *dst, const uint64_t *to_slots, size_t count)
{
    if (count == 0)
        return 0;
    s_gpu_copy_t *copy = self->gpu_copy;
    int64_t *slots = (int64_t *) kvt_zmalloc (2 * count * sizeof (int64_t));
    for (size_t k = 0; k < count; k++) {
        slots [k] = (int64_t) from_slots [k];
        slots [count + k] = (int64_t) to_slots [k];
    }
    size_t bytes = kvt_arena_block_bytes (src);
    kvt_block_copy_args_t args = {
        .dst = kvt_arena_base (dst), .src = kvt_arena_base (src),
        .dst_slots = slots + count, .src_slots = slots,
        .dst_slot_bytes = (int64_t) kvt_arena_block_bytes (dst),
        .src_slot_bytes = (int64_t) bytes, .block_bytes = (int64_t) bytes,
        .count = (int) count };
    int rc;
    if (bytes < S_KERNEL_COPY_MAX_BYTES) {
        //  The kernel reads the slot lists from device memory, allocated
        //  and freed in stream order; the host list is staged by the call
        int64_t *d_slots = NULL;
        rc = cudaMallocAsync ((void **) &d_slots, 2 * count * sizeof (int64_t), copy->stream)
             == cudaSuccess? 0: KVT_ECUDA;
        if (rc == 0 && cudaMemcpyAsync (d_slots, slots, 2 * count * sizeof (int64_t),
                                        cudaMemcpyHostToDevice, copy->stream) != cudaSuccess)
            rc = KVT_ECUDA;
        if (rc == 0) {
            args.src_slots = d_slots;
            args.dst_slots = d_slots + count;
            rc = kvt_block_copy (&args, copy->stream);
        }
        if (d_slots)
            cudaFreeAsync (d_slots, copy->stream);
        kvt_actor_count (self->actor, "copy_kernel_launches", 1);
    }
    else {
        rc = kvt_block_copy_ce (&args, copy->stream);
        kvt_actor_count (self->actor, "copy_ce_batches", 1);
    }
    free (slots);
    return rc;
}
#endif

//  Copy blocks between the two memory slabs (GPU tier <-> host tier), then
//  call 'cont' (may be NULL) with the status. memcpy when both are host
//  memory: 'cont' runs before this returns. CUDA copies when the GPU
//  tier's slab is device memory: 'cont' runs from our loop once the copy
//  (and every copy queued before it) is done; a failed copy is logged,
//  counted and reported to 'cont'.
static void
s_copy_blocks (self_t *self, int from, const uint64_t *from_slots, int to,
               const uint64_t *to_slots, size_t count, s_cont_fn *cont, void *arg)
{
    kvt_arena_t *src = self->arenas [from], *dst = self->arenas [to];
    size_t bytes = kvt_arena_block_bytes (src);
    int rc = 0;
    const char *direction = from == KVT_TIER_GPU? "bytes_gpu_to_host": "bytes_host_to_gpu";
#ifdef KVT_WITH_CUDA
    if (kvt_arena_on_device (src) || kvt_arena_on_device (dst)) {
        //  Even an empty copy goes through the stream, so that 'cont'
        //  comes after the copies queued before it
        rc = self->gpu_copy? 0: s_gpu_copy_new (self);
        if (rc == 0)
            rc = s_copy_blocks_queue (self, src, from_slots, dst, to_slots, count);
        if (rc) {
            kvt_log_error ("migration: copying %zu blocks %s failed: %s", count,
                           from == KVT_TIER_GPU? "GPU -> host": "host -> GPU", kvt_strerror (rc));
            kvt_actor_count (self->actor, "copy_errors", 1);
        }
        else
            kvt_actor_count (self->actor, direction, bytes * count);
        if (self->gpu_copy) {
            s_copy_wait_t *wait = (s_copy_wait_t *) kvt_zmalloc (sizeof (s_copy_wait_t));
            *wait = (s_copy_wait_t) { cont, arg, rc };
            if (cudaLaunchHostFunc (self->gpu_copy->stream, s_gpu_copy_signal,
                                    (void *) (intptr_t) self->gpu_copy->event_fd) == cudaSuccess) {
                zlist_append (self->gpu_copy->waiting, wait);
                return;
            }
            free (wait);
            kvt_log_error ("migration: cudaLaunchHostFunc failed; waiting for the copy here");
            cudaStreamSynchronize (self->gpu_copy->stream);
            rc = rc? rc: KVT_ECUDA;
        }
        if (cont)
            cont (self, arg, rc);
        return;
    }
#endif
    for (size_t k = 0; k < count; k++)
        memcpy (kvt_arena_block (dst, to_slots [k]), kvt_arena_block (src, from_slots [k]), bytes);
    kvt_actor_count (self->actor, direction, bytes * count);
    if (cont)
        cont (self, arg, rc);
}

//  --------------------------------------------------------------------------
//  ensure: get 'want' free slots in 'tier', demoting from it when short.

typedef struct {
    int tier;                       //  Where slots are wanted
    size_t want;                    //  How many
    uint64_t *slots;                //  Got so far (owned until handed over)
    size_t have;                    //  Entries in slots
    int rounds;                     //  Demotion rounds tried
    s_cont_fn *cont;                //  Called once with the outcome
    void *cont_arg;                 //  Its argument
} s_ensure_t;

static void s_ensure_alloc (self_t *self, s_ensure_t *job);
static void s_demote (self_t *self, int tier, size_t count, s_cont_fn *cont, void *arg);

static void
s_ensure_demoted (self_t *self, void *arg, int rc)
{
    s_ensure_t *job = (s_ensure_t *) arg;
    if (rc && rc != -ENOSPC) {
        job->cont (self, job->cont_arg, rc);
        return;
    }
    if (rc == -ENOSPC || ++job->rounds > 1024) {
        job->cont (self, job->cont_arg, -ENOSPC);   //  Everything is pinned
        return;
    }
    s_ensure_alloc (self, job);
}

static void
s_ensure_allocated (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_ensure_t *job = (s_ensure_t *) arg;
    if (rc) {
        job->cont (self, job->cont_arg, rc);
        return;
    }
    size_t count;
    const uint64_t *slots = kvt_msg_array (*reply_p, KVT_TIER_ALLOC_OK_SLOTS, &count);
    for (size_t k = 0; k < count && job->have < job->want; k++)
        job->slots [job->have++] = slots [k];
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
        s_demote (self, job->tier, batch, s_ensure_demoted, job);
    }
}

static void
s_ensure_alloc (self_t *self, s_ensure_t *job)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_TIER_ALLOC);
    kvt_msg_set_u64 (msg, KVT_TIER_ALLOC_COUNT, job->want - job->have);
    kvt_actor_call (self->actor, s_tier_actor [job->tier], &msg, s_ensure_allocated, job);
}

//  Start an ensure job; the continuation owns 'job' afterwards (it must
//  take job->slots and free the job with s_ensure_free).
static s_ensure_t *
s_ensure (self_t *self, int tier, size_t want, s_cont_fn *cont, void *arg)
{
    s_ensure_t *job = (s_ensure_t *) kvt_zmalloc (sizeof (s_ensure_t));
    job->tier = tier;
    job->want = want;
    job->slots = s_u64s (want);
    job->cont = cont;
    job->cont_arg = arg;
    if (want == 0) {
        cont (self, arg, 0);
        return job;
    }
    s_ensure_alloc (self, job);
    return job;
}

//  Give back the slots an ensure job got (on failure) and free the job.
static void
s_ensure_free (self_t *self, s_ensure_t **job_p, bool release_slots)
{
    s_ensure_t *job = *job_p;
    if (!job)
        return;
    if (release_slots)
        s_free_slots (self, job->tier, job->slots, job->have);
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
    s_ensure_t *room;               //  Slots one tier down
    size_t *moved_out;              //  If set, receives 'victims' on success
    s_cont_fn *cont;                //  Called once with the outcome
    void *cont_arg;                 //  Its argument
} s_demote_t;

static void s_demote_drop (self_t *self, s_demote_t *job);

static void
s_demote_finish (self_t *self, s_demote_t *job, int rc)
{
    s_cont_fn *cont = job->cont;
    void *cont_arg = job->cont_arg;
    if (rc == 0 && job->moved_out)
        *job->moved_out = job->victims;
    s_ensure_free (self, &job->room, rc != 0);
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
    s_unpin (self, job->hashes, job->victims);
    if (rc) {
        s_demote_finish (self, job, rc);
        return;
    }
    s_free_slots (self, job->tier, job->slots, job->victims);
    kvt_actor_count (self->actor, job->tier == KVT_TIER_GPU? "demoted_gpu_to_host"
                                                           : "demoted_host_to_nvme", job->victims);
    s_ensure_free (self, &job->room, false);
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
    if (rc) {
        //  The disk tier failed the whole write: forget the blocks rather
        //  than keep the host tier full
        kvt_actor_count (self->actor, "nvme_write_failures", job->victims);
        s_ensure_free (self, &job->room, true);
        s_demote_drop (self, job);
        return;
    }
    size_t failed_count;
    const uint64_t *failed = kvt_msg_array (*reply_p, KVT_TIER_WRITE_OK_FAILED, &failed_count);
    if (failed_count) {
        //  Blocks that did not reach the disk (ENOSPC, EIO) are forgotten:
        //  the index drops them and both their slots are freed
        kvt_actor_count (self->actor, "nvme_write_failures", failed_count);
        uint64_t *lost = s_u64s (job->victims);
        for (size_t k = 0; k < failed_count; k++)
            if (failed [k] < job->victims)
                lost [failed [k]] = 1;
        uint64_t *gone = s_u64s (failed_count), *host_slots = s_u64s (failed_count);
        uint64_t *disk_slots = s_u64s (failed_count);
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
        s_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES,
                      gone, gone_count, "IDX_REMOVE");
        s_free_slots (self, KVT_TIER_HOST, host_slots, gone_count);
        s_free_slots (self, KVT_TIER_NVME, disk_slots, gone_count);
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
//  copy failed (logged and counted by s_copy_blocks), the host slots hold
//  nothing valid: forget the victims rather than point the index at them.
static void
s_demote_copied (self_t *self, void *arg, int rc)
{
    s_demote_t *job = (s_demote_t *) arg;
    if (rc) {
        s_ensure_free (self, &job->room, true);
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
        s_ensure_free (self, &job->room, true);
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
        s_copy_blocks (self, KVT_TIER_GPU, job->slots, KVT_TIER_HOST, job->room->slots,
                       job->victims, s_demote_copied, job);
    else {
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
    if (rc == 0) {
        s_free_slots (self, job->tier, job->slots, job->victims);
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
    job->hashes = s_u64s (count);
    job->slots = s_u64s (count);
    memcpy (job->hashes, hashes, count * sizeof (uint64_t));
    memcpy (job->slots, slots, count * sizeof (uint64_t));
    if (job->tier == KVT_TIER_HOST && self->disk_admits_reused_only) {
        //  Write on second hit: a block no request has found cached since
        //  it was made is forgotten instead of written to disk. Most blocks
        //  are never reused; writing them all costs disk bandwidth and wear
        //  for nothing
        const uint64_t *reuses = kvt_msg_array (*reply_p, KVT_IDX_VICTIMS_OK_REUSES, NULL);
        uint64_t *gone = s_u64s (count), *gone_slots = s_u64s (count);
        size_t kept = 0, gone_count = 0;
        for (size_t k = 0; k < count; k++) {
            if (reuses [k] == 0) {
                gone [gone_count] = job->hashes [k];
                gone_slots [gone_count++] = job->slots [k];
                continue;
            }
            job->hashes [kept] = job->hashes [k];
            job->slots [kept++] = job->slots [k];
        }
        s_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES,
                      gone, gone_count, "IDX_REMOVE");
        s_free_slots (self, KVT_TIER_HOST, gone_slots, gone_count);
        kvt_actor_count (self->actor, "disk_declined_unreused", gone_count);
        free (gone);
        free (gone_slots);
        job->victims = kept;
        if (kept == 0) {
            s_demote_finish (self, job, 0);
            return;
        }
    }
    if (job->tier == KVT_TIER_NVME)
        s_demote_drop (self, job);
    else
        job->room = s_ensure (self, job->tier + 1, job->victims, s_demote_have_room, job);
}

static void
s_demote (self_t *self, int tier, size_t count, s_cont_fn *cont, void *arg)
{
    s_demote_t *job = (s_demote_t *) kvt_zmalloc (sizeof (s_demote_t));
    job->tier = tier;
    job->count = count;
    job->cont = cont;
    job->cont_arg = arg;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_VICTIMS);
    kvt_msg_set_u64 (msg, KVT_IDX_VICTIMS_TIER, (uint64_t) tier);
    kvt_msg_set_u64 (msg, KVT_IDX_VICTIMS_COUNT, count);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_demote_have_victims, job);
}

//  --------------------------------------------------------------------------
//  Top-level jobs, one at a time

static void s_next_job (self_t *self);
static void s_job_done (self_t *self);

//  A job is answered: the reply goes out now, or after the watermark
//  upkeep (s_job_done) when upkeep must not overlap the requester's work.
static void
s_job_reply (self_t *self, kvt_msg_t **reply_p)
{
    assert (!self->held_reply);
    if (self->overlap_upkeep)
        kvt_actor_reply (self->actor, reply_p);
    else {
        self->held_reply = *reply_p;
        *reply_p = NULL;
    }
    s_job_done (self);
}

static void
s_job_error (self_t *self, int rc, const char *what)
{
    kvt_actor_count (self->actor, "errors", 1);
    kvt_msg_t *reply = kvt_msg_error_new (self->current, rc, "migration: %s", what);
    s_job_reply (self, &reply);
}

//  RESERVE

static void
s_reserve_done (self_t *self, void *arg, int rc)
{
    s_ensure_t *job = *(s_ensure_t **) arg;
    free (arg);
    if (rc) {
        s_ensure_free (self, &job, true);
        s_job_error (self, rc, "cannot free enough GPU blocks");
        return;
    }
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_RESERVE_OK);
    kvt_msg_set_array (reply, KVT_MIG_RESERVE_OK_SLOTS, job->slots, job->have);
    s_ensure_free (self, &job, false);
    s_job_reply (self, &reply);
}

static void
s_start_reserve (self_t *self)
{
    uint64_t count = kvt_msg_u64 (self->current, KVT_MIG_RESERVE_COUNT);
    if (count > kvt_arena_block_count (self->arenas [KVT_TIER_GPU])) {
        s_job_error (self, -ENOSPC, "more blocks than the GPU tier holds");
        return;
    }
    //  The continuation needs the job, which s_ensure returns only after
    //  it may already have run (count 0): pass a cell it fills in.
    s_ensure_t **cell = (s_ensure_t **) kvt_zmalloc (sizeof (s_ensure_t *));
    s_ensure_t *job = (s_ensure_t *) kvt_zmalloc (sizeof (s_ensure_t));
    job->tier = KVT_TIER_GPU;
    job->want = count;
    job->slots = s_u64s (count);
    job->cont = s_reserve_done;
    job->cont_arg = cell;
    *cell = job;
    if (count == 0)
        s_reserve_done (self, cell, 0);
    else
        s_ensure_alloc (self, job);
}

//  DEMOTE (admin)

static void
s_demote_request_done (self_t *self, void *arg, int rc)
{
    size_t *moved = (size_t *) arg;
    size_t count = rc? 0: *moved;
    free (moved);
    if (rc && rc != -ENOSPC) {      //  ENOSPC here: nothing unpinned to move
        s_job_error (self, rc, "demotion failed");
        return;
    }
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_DEMOTE_OK);
    kvt_msg_set_u64 (reply, KVT_MIG_DEMOTE_OK_MOVED, count);
    s_job_reply (self, &reply);
}

static void
s_start_demote (self_t *self)
{
    uint64_t from = kvt_msg_u64 (self->current, KVT_MIG_DEMOTE_FROM_TIER);
    uint64_t to = kvt_msg_u64 (self->current, KVT_MIG_DEMOTE_TO_TIER);
    uint64_t max_blocks = kvt_msg_u64 (self->current, KVT_MIG_DEMOTE_MAX_BLOCKS);
    if (from >= KVT_TIER_NVME || to != from + 1) {
        s_job_error (self, -EINVAL, "demotion goes one tier down: 0->1 or 1->2");
        return;
    }
    s_demote_t *job = (s_demote_t *) kvt_zmalloc (sizeof (s_demote_t));
    job->tier = (int) from;
    job->count = max_blocks;
    job->moved_out = (size_t *) kvt_zmalloc (sizeof (size_t));
    job->cont = s_demote_request_done;
    job->cont_arg = job->moved_out;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_VICTIMS);
    kvt_msg_set_u64 (msg, KVT_IDX_VICTIMS_TIER, from);
    kvt_msg_set_u64 (msg, KVT_IDX_VICTIMS_COUNT, max_blocks);
    kvt_actor_call (self->actor, "prefix_index", &msg, s_demote_have_victims, job);
}

//  PROMOTE: host and NVMe blocks to the GPU. NVMe blocks stage through
//  host slots: disk -> host (io_uring) -> GPU (copy).

typedef struct {
    size_t count;                   //  Blocks asked
    uint64_t *hashes;               //  Their hashes
    uint64_t *tiers;                //  Where each is now
    uint64_t *slots;                //  Its slot there
    s_ensure_t *gpu;                //  GPU slots, one per block
    s_ensure_t *staging;            //  Host slots for the NVMe blocks
    size_t nvme_count;              //  Blocks coming from NVMe
    uint64_t *nvme_index;           //  Which blocks those are
    bool *failed;                   //  Per block: could not be read (a miss)
    bool gpu_resident_swapped;      //  GPU-resident blocks' own slots are in gpu->slots
    size_t chunks_pending;          //  NVMe chunk reads not yet answered
} s_promote_t;

static void
s_promote_free (self_t *self, s_promote_t *job, bool release)
{
    if (release && job->gpu) {
        //  Give back only the slots reserved for this job: a block already
        //  on the GPU kept its own slot, which the index still owns
        uint64_t *reserved = s_u64s (job->gpu->have);
        size_t count = 0;
        for (size_t k = 0; k < job->gpu->have; k++)
            if (!job->gpu_resident_swapped || job->tiers [k] != KVT_TIER_GPU)
                reserved [count++] = job->gpu->slots [k];
        s_free_slots (self, KVT_TIER_GPU, reserved, count);
        free (reserved);
    }
    s_ensure_free (self, &job->gpu, false);
    s_ensure_free (self, &job->staging, true);      //  Staging is always given back
    free (job->hashes);
    free (job->tiers);
    free (job->slots);
    free (job->nvme_index);
    free (job->failed);
    free (job);
}

static void
s_promote_fail (self_t *self, s_promote_t *job, int rc, const char *what)
{
    s_promote_free (self, job, true);
    s_job_error (self, rc, what);
}

//  Everything has its bytes: update the index, free old slots, reply.
static void
s_promote_finish (self_t *self, s_promote_t *job)
{
    uint64_t *moved_hashes = s_u64s (job->count), *moved_slots = s_u64s (job->count);
    uint64_t *host_free = s_u64s (job->count), *nvme_free = s_u64s (job->count);
    uint64_t *gone = s_u64s (job->count), *gpu_unused = s_u64s (job->count);
    uint64_t *failed = s_u64s (job->count), *gpu_slots = s_u64s (job->count);
    size_t moved = 0, host_n = 0, nvme_n = 0, gone_n = 0, unused_n = 0, failed_n = 0;
    for (size_t k = 0; k < job->count; k++) {
        gpu_slots [k] = job->gpu->slots [k];
        if (job->failed [k]) {
            failed [failed_n++] = k;
            gone [gone_n++] = job->hashes [k];
            gpu_unused [unused_n++] = job->gpu->slots [k];
            gpu_slots [k] = UINT64_MAX;
            continue;
        }
        if (job->tiers [k] == KVT_TIER_GPU)
            continue;               //  Already there; its slot was passed through
        moved_hashes [moved] = job->hashes [k];
        moved_slots [moved++] = job->gpu->slots [k];
        if (job->tiers [k] == KVT_TIER_HOST)
            host_free [host_n++] = job->slots [k];
        else
            nvme_free [nvme_n++] = job->slots [k];
    }
    if (moved) {
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MOVE);
        kvt_msg_set_array (msg, KVT_IDX_MOVE_HASHES, moved_hashes, moved);
        kvt_msg_set_u64 (msg, KVT_IDX_MOVE_TIER, KVT_TIER_GPU);
        kvt_msg_set_array (msg, KVT_IDX_MOVE_SLOTS, moved_slots, moved);
        kvt_actor_call (self->actor, "prefix_index", &msg, s_expect_ok, (void *) "IDX_MOVE");
    }
    //  A block that failed its checksum is forgotten, and its disk slot
    //  freed: the scheduler recomputes it
    s_send_array (self, "prefix_index", KVT_MSG_IDX_REMOVE, KVT_IDX_REMOVE_HASHES, gone, gone_n,
                  "IDX_REMOVE");
    for (size_t k = 0; k < job->count; k++)
        if (job->failed [k]) {     //  Its old slot, in whichever tier it was
            if (job->tiers [k] == KVT_TIER_NVME)
                nvme_free [nvme_n++] = job->slots [k];
            else
            if (job->tiers [k] == KVT_TIER_HOST)
                host_free [host_n++] = job->slots [k];
        }
    s_free_slots (self, KVT_TIER_HOST, host_free, host_n);
    s_free_slots (self, KVT_TIER_NVME, nvme_free, nvme_n);
    s_free_slots (self, KVT_TIER_GPU, gpu_unused, unused_n);
    kvt_actor_count (self->actor, "promoted", moved);
    kvt_actor_count (self->actor, "promote_misses", failed_n);

    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_PROMOTE_OK);
    kvt_msg_set_array (reply, KVT_MIG_PROMOTE_OK_GPU_SLOTS, gpu_slots, job->count);
    kvt_msg_set_array (reply, KVT_MIG_PROMOTE_OK_FAILED, failed, failed_n);
    free (moved_hashes); free (moved_slots); free (host_free); free (nvme_free);
    free (gone); free (gpu_unused); free (failed); free (gpu_slots);
    s_promote_free (self, job, false);
    s_job_reply (self, &reply);
}

//  Every copy of the job is done (copies finish in the order queued, so
//  the NVMe chunks' too): finish. If this last copy (the host-resident
//  blocks) failed, those blocks are misses: their GPU slots hold nothing
//  valid, so the scheduler must recompute them.
static void
s_promote_copied (self_t *self, void *arg, int rc)
{
    s_promote_t *job = (s_promote_t *) arg;
    if (rc)
        for (size_t k = 0; k < job->count; k++)
            if (job->tiers [k] == KVT_TIER_HOST)
                job->failed [k] = true;
    s_promote_finish (self, job);
}

//  A chunk's copy to the GPU failed: its blocks are misses.
typedef struct {
    s_promote_t *job;               //  The promotion
    uint64_t *blocks;               //  Indices (into the job) of the chunk's blocks
    size_t count;                   //  Entries in blocks
} s_chunk_copy_t;

static void
s_chunk_copied (self_t *self, void *arg, int rc)
{
    (void) self;
    s_chunk_copy_t *copy = (s_chunk_copy_t *) arg;
    if (rc)
        for (size_t k = 0; k < copy->count; k++)
            copy->job->failed [copy->blocks [k]] = true;
    free (copy->blocks);
    free (copy);
}

//  Copy the host-resident blocks to their GPU slots (the NVMe ones were
//  copied chunk by chunk as they arrived), then finish.
static void
s_promote_copy (self_t *self, s_promote_t *job)
{
    uint64_t *from = s_u64s (job->count), *to = s_u64s (job->count);
    size_t n = 0;
    for (size_t k = 0; k < job->count; k++)
        if (job->tiers [k] == KVT_TIER_HOST) {
            from [n] = job->slots [k];
            to [n++] = job->gpu->slots [k];
        }
    s_copy_blocks (self, KVT_TIER_HOST, from, KVT_TIER_GPU, to, n, s_promote_copied, job);
    free (from);
    free (to);
}

//  NVMe blocks stream to the GPU in chunks: every chunk's TIER_READ is sent
//  at once, tier_nvme serves them in order, and each chunk is copied on to
//  its GPU slots as soon as it is read and checked, while the disk is
//  already reading the next. Disk, checksums and copies then overlap
//  instead of running one after the other.
#define S_STREAM_CHUNK_BYTES (4u << 20)   //  Bytes per chunk read

typedef struct {
    s_promote_t *job;               //  The promotion this chunk belongs to
    size_t first;                   //  Index of its first block in nvme_index
    size_t count;                   //  Blocks in the chunk
} s_chunk_t;

static void
s_promote_chunk_read (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_chunk_t *chunk = (s_chunk_t *) arg;
    s_promote_t *job = chunk->job;
    bool *bad = (bool *) kvt_zmalloc (chunk->count + 1);
    if (rc) {
        //  The disk tier failed the read as a whole: every block is a miss
        kvt_log_warn ("migration: NVMe read failed: %s", kvt_strerror (rc));
        for (size_t k = 0; k < chunk->count; k++)
            bad [k] = true;
    }
    else {
        size_t failed_count;
        const uint64_t *failed = kvt_msg_array (*reply_p, KVT_TIER_READ_OK_FAILED, &failed_count);
        for (size_t k = 0; k < failed_count; k++)
            if (failed [k] < chunk->count)
                bad [failed [k]] = true;
    }
    uint64_t *from = s_u64s (chunk->count), *to = s_u64s (chunk->count);
    size_t n = 0;
    for (size_t k = 0; k < chunk->count; k++) {
        size_t block = job->nvme_index [chunk->first + k];
        if (bad [k]) {
            job->failed [block] = true;
            continue;
        }
        from [n] = job->staging->slots [chunk->first + k];
        to [n++] = job->gpu->slots [block];
    }
    kvt_actor_count (self->actor, "bytes_nvme_to_host", n * kvt_arena_block_bytes (self->arenas [1]));
    s_chunk_copy_t *copy = (s_chunk_copy_t *) kvt_zmalloc (sizeof (s_chunk_copy_t));
    copy->job = job;
    copy->blocks = s_u64s (chunk->count);
    for (size_t k = 0; k < chunk->count; k++)
        if (!bad [k])
            copy->blocks [copy->count++] = job->nvme_index [chunk->first + k];
    s_copy_blocks (self, KVT_TIER_HOST, from, KVT_TIER_GPU, to, n, s_chunk_copied, copy);
    free (from);
    free (to);
    free (bad);
    free (chunk);
    if (--job->chunks_pending == 0)
        s_promote_copy (self, job);
}

static void
s_promote_have_staging (self_t *self, void *arg, int rc)
{
    s_promote_t *job = (s_promote_t *) arg;
    if (rc) {
        s_promote_fail (self, job, rc, "no host room to stage NVMe blocks");
        return;
    }
    size_t per_chunk = S_STREAM_CHUNK_BYTES / kvt_arena_block_bytes (self->arenas [1]);
    if (per_chunk == 0)
        per_chunk = 1;
    job->chunks_pending = (job->nvme_count + per_chunk - 1) / per_chunk;
    kvt_actor_count (self->actor, "stream_chunks", job->chunks_pending);
    for (size_t first = 0; first < job->nvme_count; first += per_chunk) {
        s_chunk_t *chunk = (s_chunk_t *) kvt_zmalloc (sizeof (s_chunk_t));
        chunk->job = job;
        chunk->first = first;
        chunk->count = job->nvme_count - first < per_chunk? job->nvme_count - first: per_chunk;
        uint64_t *nvme_slots = s_u64s (chunk->count), *hashes = s_u64s (chunk->count);
        for (size_t k = 0; k < chunk->count; k++) {
            nvme_slots [k] = job->slots [job->nvme_index [first + k]];
            hashes [k] = job->hashes [job->nvme_index [first + k]];
        }
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_TIER_READ);
        kvt_msg_set_array (msg, KVT_TIER_READ_SLOTS, nvme_slots, chunk->count);
        kvt_msg_set_array (msg, KVT_TIER_READ_HASHES, hashes, chunk->count);
        kvt_msg_set_array (msg, KVT_TIER_READ_DST_SLOTS, job->staging->slots + first, chunk->count);
        kvt_actor_call (self->actor, "tier_nvme", &msg, s_promote_chunk_read, chunk);
        free (nvme_slots);
        free (hashes);
    }
}

static void
s_promote_have_gpu (self_t *self, void *arg, int rc)
{
    s_promote_t *job = (s_promote_t *) arg;
    if (rc) {
        s_promote_fail (self, job, rc, "cannot free enough GPU blocks");
        return;
    }
    //  Blocks already on the GPU keep their slot: put it back in place
    //  of the one reserved for them, which is released at finish
    for (size_t k = 0; k < job->count; k++)
        if (job->tiers [k] == KVT_TIER_GPU) {
            uint64_t spare = job->gpu->slots [k];
            job->gpu->slots [k] = job->slots [k];
            s_free_slots (self, KVT_TIER_GPU, &spare, 1);
        }
    job->gpu_resident_swapped = true;
    if (job->nvme_count)
        job->staging = s_ensure (self, KVT_TIER_HOST, job->nvme_count,
                                 s_promote_have_staging, job);
    else
        s_promote_copy (self, job);
}

static void
s_start_promote (self_t *self)
{
    size_t count, tier_count, slot_count;
    const uint64_t *hashes = kvt_msg_array (self->current, KVT_MIG_PROMOTE_HASHES, &count);
    const uint64_t *tiers = kvt_msg_array (self->current, KVT_MIG_PROMOTE_TIERS, &tier_count);
    const uint64_t *slots = kvt_msg_array (self->current, KVT_MIG_PROMOTE_SLOTS, &slot_count);
    if (tier_count != count || slot_count != count) {
        s_job_error (self, -EINVAL, "hashes, tiers and slots differ in length");
        return;
    }
    for (size_t k = 0; k < count; k++)
        if (tiers [k] >= KVT_TIER_COUNT
        ||  (tiers [k] < 2 && slots [k] >= kvt_arena_block_count (self->arenas [tiers [k]]))) {
            s_job_error (self, -ERANGE, "tier or slot out of range");
            return;
        }
    if (count == 0 || count > kvt_arena_block_count (self->arenas [KVT_TIER_GPU])) {
        s_job_error (self, count? -ENOSPC: -EINVAL, count? "more blocks than the GPU tier holds"
                                                         : "nothing to promote");
        return;
    }
    s_promote_t *job = (s_promote_t *) kvt_zmalloc (sizeof (s_promote_t));
    job->count = count;
    job->hashes = s_u64s (count);
    job->tiers = s_u64s (count);
    job->slots = s_u64s (count);
    job->nvme_index = s_u64s (count);
    job->failed = (bool *) kvt_zmalloc ((count + 1) * sizeof (bool));
    memcpy (job->hashes, hashes, count * sizeof (uint64_t));
    memcpy (job->tiers, tiers, count * sizeof (uint64_t));
    memcpy (job->slots, slots, count * sizeof (uint64_t));
    for (size_t k = 0; k < count; k++)
        if (tiers [k] == KVT_TIER_NVME)
            job->nvme_index [job->nvme_count++] = k;
    job->gpu = s_ensure (self, KVT_TIER_GPU, count, s_promote_have_gpu, job);
}

//  --------------------------------------------------------------------------
//  Queue of top-level requests

static void
s_next_job (self_t *self)
{
    if (self->current)
        return;
    self->current = (kvt_msg_t *) zlist_pop (self->queue);
    if (!self->current)
        return;
    switch (kvt_msg_id (self->current)) {
        case KVT_MSG_MIG_RESERVE: s_start_reserve (self); break;
        case KVT_MSG_MIG_PROMOTE: s_start_promote (self); break;
        case KVT_MSG_MIG_DEMOTE:  s_start_demote (self); break;
        default: assert (false);
    }
}

//  --------------------------------------------------------------------------
//  Watermark upkeep. After each job that took GPU or host room, a memory
//  tier fuller than the high watermark gets its oldest blocks demoted, in
//  one batch, down to the low watermark. Later requests then find free GPU
//  slots instead of paying for small evictions (and their disk writes) one
//  request at a time. By default the job's reply waits for the upkeep, so
//  no migration work runs beside the requester's next steps and the same
//  requests in the same order give the same placement, whether actors are
//  threads or processes. With migration/overlap_upkeep = 1 the reply goes
//  first and the upkeep overlaps the request's compute: lower latency, but
//  placement then depends on timing (still correct: the index cuts a
//  prefix at a block in motion).

static void s_upkeep (self_t *self, int tier);

static void
s_upkeep_demoted (self_t *self, void *arg, int rc)
{
    int tier = (int) (intptr_t) arg;
    if (rc && rc != -ENOSPC)
        kvt_log_warn ("migration: upkeep demotion failed: %s", kvt_strerror (rc));
    s_upkeep (self, tier + 1);
}

static void
s_upkeep_probed (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    int tier = (int) (intptr_t) arg;
    uint64_t used = 0, capacity = 0;
    for (size_t k = 0; rc == 0 && k < kvt_msg_map_size (*reply_p, KVT_STATS_OK_COUNTERS); k++) {
        const char *key = kvt_msg_map_key (*reply_p, KVT_STATS_OK_COUNTERS, k);
        const char *dot = strchr (key, '.');
        if (dot && streq (dot + 1, "used_blocks"))
            used = kvt_msg_map_value (*reply_p, KVT_STATS_OK_COUNTERS, k);
        if (dot && streq (dot + 1, "capacity_blocks"))
            capacity = kvt_msg_map_value (*reply_p, KVT_STATS_OK_COUNTERS, k);
    }
    if (capacity && used * 100 >= capacity * (uint64_t) self->high_watermark) {
        uint64_t excess = used - capacity * (uint64_t) self->low_watermark / 100;
        if (excess > self->background_batch)
            excess = self->background_batch;
        kvt_actor_count (self->actor, "upkeep_demotions", 1);
        s_demote (self, tier, excess, s_upkeep_demoted, (void *) (intptr_t) tier);
    }
    else
        s_upkeep (self, tier + 1);
}

//  Check memory tier 'tier' and the ones below it; then finish the job.
static void
s_upkeep (self_t *self, int tier)
{
    if (tier <= KVT_TIER_HOST) {
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_STATS);
        kvt_actor_call (self->actor, s_tier_actor [tier], &msg, s_upkeep_probed,
                        (void *) (intptr_t) tier);
        return;
    }
    if (self->held_reply)
        kvt_actor_reply (self->actor, &self->held_reply);
    kvt_msg_destroy (&self->current);
    s_next_job (self);
}

//  Called when a job is answered (or its reply held): upkeep if the job
//  took memory-tier room, then the next job.
static void
s_job_done (self_t *self)
{
    int id = kvt_msg_id (self->current);
    if (self->high_watermark < 100 && (id == KVT_MSG_MIG_RESERVE || id == KVT_MSG_MIG_PROMOTE))
        s_upkeep (self, KVT_TIER_GPU);
    else {
        if (self->held_reply)
            kvt_actor_reply (self->actor, &self->held_reply);
        kvt_msg_destroy (&self->current);
        s_next_job (self);
    }
}

static int
s_handle_job (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    zlist_append (self->queue, *msg_p);
    *msg_p = NULL;                  //  Answered when its turn comes
    kvt_actor_gauge (self->actor, "queued", zlist_size (self->queue));
    s_next_job (self);
    return 0;
}

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->queue = zlist_new ();
    self->high_watermark = (int) kvt_config_int (config, "migration/high_watermark");
    self->low_watermark = (int) kvt_config_int (config, "migration/low_watermark");
    self->background_batch = (uint64_t) kvt_config_int (config, "migration/background_batch");
    self->overlap_upkeep = kvt_config_int (config, "migration/overlap_upkeep") != 0;
    self->disk_admits_reused_only = streq (kvt_config_str (config, "migration/disk_admission"),
                                           "reused");
    self->capacity [KVT_TIER_GPU] = (size_t) kvt_config_int (config, "tier_gpu/capacity_blocks");
    self->capacity [KVT_TIER_HOST] = (size_t) kvt_config_int (config, "tier_host/capacity_blocks");
    self->capacity [KVT_TIER_NVME] = (size_t) kvt_config_int (config, "tier_nvme/capacity_blocks");
    return self;
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
        kvt_msg_destroy (&self->current);
        kvt_msg_destroy (&self->held_reply);
#ifdef KVT_WITH_CUDA
        s_gpu_copy_destroy (&self->gpu_copy);
#endif
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
    if (!self->arenas [0] || !self->arenas [1]) {
        kvt_log_error ("migration: the GPU and host arenas are not mapped in this process");
        return -ENOENT;
    }
    const char *admission = kvt_config_str (kvt_actor_config (self->actor), "migration/disk_admission");
    if (!streq (admission, "all") && !streq (admission, "reused")) {
        kvt_log_error ("migration: config key 'migration/disk_admission' must be all or reused, "
                       "not '%s'", admission);
        return KVT_ECONFIG;
    }
    if (self->low_watermark >= self->high_watermark || self->high_watermark > 100) {
        kvt_log_error ("migration: need low_watermark < high_watermark <= 100");
        return KVT_ECONFIG;
    }
    return 0;
}

static const char *const s_peers [] = { "prefix_index", "tier_gpu", "tier_host", "tier_nvme", NULL };

const kvt_actor_def_t kvt_migration_def = {
    .name = "migration",
    .create = s_self_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .peers = s_peers,
    .handlers = {
        [KVT_MSG_MIG_RESERVE] = s_handle_job,
        [KVT_MSG_MIG_PROMOTE] = s_handle_job,
        [KVT_MSG_MIG_DEMOTE]  = s_handle_job,
    },
};
