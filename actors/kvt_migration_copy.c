/*  =========================================================================
    kvt_migration_copy - moving bytes between the GPU and host tier slabs

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_migration_int.h"

//  With cold_dtype = fp8 (issue #3) the host slot of a block holds its FP8
//  form (kvt_fp8.cuh): planes x plane_elems e4m3 bytes, then one float
//  scale per plane, kvt_fp8_block_bytes in all, about half the slot; the
//  slot keeps its full size. GPU -> host quantizes on the way (the fp8
//  kernel writing the mapped, pinned host slot directly, or the C twin on
//  CPU builds: the same bytes), host -> GPU dequantizes into the GPU slot.
//  Only that length crosses PCIe and, through tier_nvme, the disk. A
//  stream promotion copies nothing here: compute's model dequantizes the
//  host slots' FP8 forms layer by layer itself (kvt_migration_promote.c).

uint64_t
kvt_migration_cold_bytes (self_t *self, size_t count)
{
    size_t block = self->cold_fp8? self->cold_bytes
                                 : kvt_arena_block_bytes (self->arenas [KVT_TIER_HOST]);
    return (uint64_t) count * block;
}

//  The kernels' slot lists: 'from_slots' then 'to_slots' in one array of
//  2 x count int64 (freed by the caller), so they upload as one copy.
static int64_t *
s_slot_pairs (const uint64_t *from_slots, const uint64_t *to_slots, size_t count)
{
    int64_t *slots = (int64_t *) kvt_zmalloc (2 * count * sizeof (int64_t));
    for (size_t k = 0; k < count; k++) {
        slots [k] = (int64_t) from_slots [k];
        slots [count + k] = (int64_t) to_slots [k];
    }
    return slots;
}

//  Fill the fp8 kernel's arguments for blocks moving 'from' the GPU
//  (quantize) or from the host (dequantize); the scales live in the host
//  slots, right after the payload. With layer sharding (#5) a GPU-tier
//  block is two parts: 'part' 0 is the slab's planes (all of them when
//  sharding is off), part 1 the shard's, which follow them in the host
//  slot's FP8 form (planes are layer-major, so the split falls between
//  planes: the same bytes and scales as one whole-block call).
static void
s_fp8_args (self_t *self, int from, const int64_t *from_slots, const int64_t *to_slots,
            size_t count, int part, kvt_fp8_args_t *args)
{
    kvt_arena_t *gpu = self->arenas [KVT_TIER_GPU], *host = self->arenas [KVT_TIER_HOST];
    char *host_base = (char *) kvt_arena_base (host);
    int64_t host_bytes = (int64_t) kvt_arena_block_bytes (host);
    int64_t gpu_bytes = (int64_t) kvt_arena_block_bytes (gpu);
    float *scales = (float *) (host_base + (size_t) self->fp8_planes * self->fp8_plane_elems);
    //  Planes in the slab: every plane is plane_elems bf16 values
    int slab_planes = (int) (gpu_bytes / ((int64_t) self->fp8_plane_elems * 2));
    int first = part == 0? 0: slab_planes;
    int planes = part == 0? slab_planes: self->fp8_planes - slab_planes;
    char *gpu_base = (char *) kvt_arena_base (gpu);
    if (part == 1) {
        gpu_base = (char *) kvt_arena_base (self->gpu_shard);
        gpu_bytes = (int64_t) kvt_arena_block_bytes (self->gpu_shard);
    }
    host_base += (size_t) first * self->fp8_plane_elems;
    bool quantize = from == KVT_TIER_GPU;
    *args = (kvt_fp8_args_t) {
        .dtype = KVT_KDTYPE_BF16,
        .src = quantize? gpu_base: host_base,
        .dst = quantize? host_base: gpu_base,
        .scales = scales + first,
        .src_slots = from_slots, .dst_slots = to_slots,
        .src_slot_bytes = quantize? gpu_bytes: host_bytes,
        .dst_slot_bytes = quantize? host_bytes: gpu_bytes,
        .planes = planes, .plane_elems = self->fp8_plane_elems,
        .count = (int) count, .scale_stride = host_bytes / 4 };
}

//  A copy queued on a stream (or held by migration/test_hold_copies),
//  waiting to be reported done.
typedef struct {
    kvt_migration_cont_fn *cont;    //  Called once the copy is done, or NULL
    void *arg;                      //  Its argument
    int rc;                         //  Status of queueing the copy
} s_copy_wait_t;

//  TEST ONLY (migration/test_hold_copies): a copy whose done is never
//  reported, as behind a stuck stream: 'cont' waits for the actor's end
//  (kvt_migration_copy_stop)
static void
s_copy_hold (self_t *self, kvt_migration_cont_fn *cont, void *arg, int rc)
{
    s_copy_wait_t *wait = (s_copy_wait_t *) kvt_zmalloc (sizeof (s_copy_wait_t));
    *wait = (s_copy_wait_t) { cont, arg, rc };
    zlist_append (self->copies_held, wait);
    kvt_actor_count (self->actor, "copies_held", 1);
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
#define S_FP8_LAUNCH_MAX 65535u    //  Most blocks one fp8 kernel launch takes
//  Staging of the staged path (issue #3, kvt_block_copy_staged): a batch
//  between the host arena and the GPU slab whose host slots come in long
//  runs (kvt_block_copy_stage_suits: mean run >= 256 KiB and two blocks,
//  as kvt_slots hands a demoted batch adjacent slots) moves as one
//  copy-engine copy per host run through this much GPU staging, the
//  scattered GPU side by a device-to-device kernel: 1.00 of memcpy each
//  way and 93-97 GB/s both ways at 16 KiB - 2 MiB on the H100, where the
//  copy kernel gives 0.93 and 80-83, the engines per block 0.68-0.84 at
//  64-256 KiB (tools/bench/RESULTS.md). Allocated at the first such batch;
//  64 MiB is 4 pieces in flight of 16 MiB, enough to keep the engines busy;
//  each direction's lane has its own.
#define S_STAGING_BYTES ((size_t) 64 << 20)
//  From this block size up the staged path is not taken: the engines'
//  per-block copies already move at the link's rate there (54.1 GB/s at
//  2 MiB against 55.0 for one 1 GiB memcpy, and 88 both ways), and beside
//  attention they cost it 7-8% where the staged path's HBM gather costs
//  15% (RESULTS.md, "attention beside a transfer" and the staged rows).
#define S_STAGE_MAX_BLOCK_BYTES ((size_t) 2 << 20)

//  Copies run on two lanes, one per direction (issue #3): host -> GPU
//  and GPU -> host each have their own stream, so a demotion's copy and
//  a promotion's run at once, both ways over the link, where one stream
//  would queue one behind the other. Every ordering the actor relies on
//  is within one direction (a promotion's chunk copies before its final
//  copy); across directions a slot changes hands only in a continuation,
//  after its copy is done. After each copy, a host function (run by CUDA
//  on its own thread) adds 1 to the lane's eventfd; our zloop reads it and
//  calls the continuations of that many copies of the lane, oldest first.
//  The actor's thread never waits on the GPU. The host function runs on a
//  stream of its own, after an event of the copy stream: on the copy
//  stream it would hold the next copy until CUDA's thread had run it, a
//  gap in the link's use at every copy (a promotion moved in pieces
//  queues one copy a piece).
enum { S_LANE_TO_GPU, S_LANE_TO_HOST, S_LANES };

typedef struct {
    self_t *owner;                  //  The actor, for the continuations
    cudaStream_t stream;            //  This direction's copies run here, in order
    cudaStream_t notify;            //  Their host functions, each after its copy
    cudaEvent_t copied;             //  Recorded on stream after each copy
    int event_fd;                   //  Counts finished copies; polled by our zloop
    zlist_t *waiting;               //  s_copy_wait_t, in stream order
    int64_t busy_us;                //  Since when copies have been queued without a break
    const char *busy_counter;       //  Where those spans are summed
    const char *busy_mark, *idle_mark;  //  Marks of the last span's start and end
    kvt_block_stage_t *stage;       //  Staged path's GPU staging, or NULL until needed
    bool stage_failed;              //  Staging could not be allocated: never staged
} s_lane_t;

struct _kvt_migration_copy_t {
    s_lane_t lanes [S_LANES];
};

void
kvt_migration_copy_destroy (kvt_migration_copy_t **self_p)
{
    kvt_migration_copy_t *self = *self_p;
    if (self) {
        for (int k = 0; k < S_LANES; k++) {
            s_lane_t *lane = &self->lanes [k];
            if (lane->stream) {
                cudaStreamSynchronize (lane->stream);
                cudaStreamDestroy (lane->stream);
            }
            if (lane->notify) {
                cudaStreamSynchronize (lane->notify);
                cudaStreamDestroy (lane->notify);
            }
            if (lane->copied)
                cudaEventDestroy (lane->copied);
            kvt_block_stage_destroy (&lane->stage);
            if (lane->event_fd >= 0)
                close (lane->event_fd);
            //  kvt_migration_copy_stop called every continuation: none waits
            assert (!lane->waiting || zlist_size (lane->waiting) == 0);
            zlist_destroy (&lane->waiting);
        }
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

//  A lane's copies keep its stream busy from the first queued after a
//  break to the last one done: us_lane_busy_to_gpu / _to_host sum those
//  spans. Beside a phase's own time they say how long the link waited on
//  the actors that feed it, which no profiler on the GPU machine shows
//  (issue #3).
static void
s_lane_queued (s_lane_t *lane, int64_t queued_us)
{
    if (zlist_size (lane->waiting) == 0) {
        lane->busy_us = queued_us;
        kvt_actor_gauge (lane->owner->actor, lane->busy_mark, (uint64_t) queued_us);
    }
}

static void
s_lane_idle (s_lane_t *lane)
{
    kvt_actor_count (lane->owner->actor, lane->busy_counter,
                     (uint64_t) (kvt_now_us () - lane->busy_us));
    kvt_actor_mark (lane->owner->actor, lane->idle_mark);
}

//  Our zloop: copies of one lane finished; run their continuations in order.
static int
s_gpu_copy_done (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    s_lane_t *lane = (s_lane_t *) arg;
    uint64_t done = 0;
    if (read (item->fd, &done, sizeof (done)) != sizeof (done))
        return 0;                   //  Spurious wake-up
    int64_t start = kvt_now_us ();
    for (; done > 0; done--) {
        s_copy_wait_t *wait = (s_copy_wait_t *) zlist_pop (lane->waiting);
        if (!wait)
            break;
        if (zlist_size (lane->waiting) == 0)
            s_lane_idle (lane);     //  (Before a continuation queues the next)
        if (wait->cont)
            wait->cont (lane->owner, wait->arg, wait->rc);
        free (wait);
    }
    kvt_actor_turn_end (lane->owner->actor, "", "copies_done", start);
    return 0;
}

static int
s_gpu_copy_new (self_t *self)
{
    kvt_migration_copy_t *copy = (kvt_migration_copy_t *) kvt_zmalloc (sizeof (kvt_migration_copy_t));
    int rc = 0;
    for (int k = 0; k < S_LANES; k++) {
        s_lane_t *lane = &copy->lanes [k];
        lane->owner = self;
        lane->busy_counter = k == S_LANE_TO_GPU? "us_lane_busy_to_gpu": "us_lane_busy_to_host";
        lane->busy_mark = k == S_LANE_TO_GPU? "at_lane_busy_to_gpu": "at_lane_busy_to_host";
        lane->idle_mark = k == S_LANE_TO_GPU? "at_lane_idle_to_gpu": "at_lane_idle_to_host";
        lane->waiting = zlist_new ();
        lane->event_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
        zmq_pollitem_t item = { NULL, lane->event_fd, ZMQ_POLLIN, 0 };
        if (rc == 0 && cudaStreamCreateWithFlags (&lane->stream, cudaStreamNonBlocking)
                       != cudaSuccess) {
            lane->stream = NULL;
            rc = KVT_ECUDA;
        }
        if (rc == 0 && cudaStreamCreateWithFlags (&lane->notify, cudaStreamNonBlocking)
                       != cudaSuccess) {
            lane->notify = NULL;
            rc = KVT_ECUDA;
        }
        if (rc == 0 && cudaEventCreateWithFlags (&lane->copied, cudaEventDisableTiming)
                       != cudaSuccess) {
            lane->copied = NULL;
            rc = KVT_ECUDA;
        }
        if (rc == 0
        &&  (lane->event_fd < 0
             || zloop_poller (kvt_actor_loop (self->actor), &item, s_gpu_copy_done, lane) != 0))
            rc = KVT_ECUDA;
    }
    if (rc) {
        for (int k = 0; k < S_LANES; k++)
            if (copy->lanes [k].event_fd >= 0) {
                zmq_pollitem_t item = { NULL, copy->lanes [k].event_fd, ZMQ_POLLIN, 0 };
                zloop_poller_end (kvt_actor_loop (self->actor), &item);
            }
        kvt_migration_copy_destroy (&copy);
        return rc;
    }
    self->gpu_copy = copy;
    return 0;
}

//  Queue the copy 'args' (its slot lists in host memory, 'count' blocks
//  of args->block_bytes) on the copy stream: the staged path when
//  'staged' (host side 'host_is_dst'), else kernel or copy engines by
//  block size. Returns 0 once queued, or an error.
static int
s_copy_args_queue (self_t *self, s_lane_t *lane, kvt_block_copy_args_t *args, size_t count,
                   bool staged, bool host_is_dst)
{
    size_t bytes = (size_t) args->block_bytes;
    int rc;
    if (staged && !lane->stage) {
        lane->stage = kvt_block_stage_new (S_STAGING_BYTES);
        if (!lane->stage) {
            kvt_log_warn ("migration: no %zu MiB of GPU staging; small blocks stay on the "
                          "copy kernel", S_STAGING_BYTES >> 20);
            lane->stage_failed = true;
            staged = false;
        }
    }
    if (staged) {
        rc = kvt_block_copy_staged (lane->stage, args, host_is_dst, lane->stream);
        kvt_actor_count (self->actor, "copy_staged_batches", 1);
    }
    else
    if (bytes < S_KERNEL_COPY_MAX_BYTES) {
        //  The kernel reads the slot lists from device memory, allocated
        //  and freed in stream order; the host list is staged by the call
        int64_t *d_slots = NULL;
        rc = cudaMallocAsync ((void **) &d_slots, 2 * count * sizeof (int64_t), lane->stream)
             == cudaSuccess? 0: KVT_ECUDA;
        //  One upload when the lists lie back to back (they do here)
        bool joined = args->dst_slots == args->src_slots + count;
        if (rc == 0 && (cudaMemcpyAsync (d_slots, args->src_slots,
                                         (joined? 2: 1) * count * sizeof (int64_t),
                                         cudaMemcpyHostToDevice, lane->stream) != cudaSuccess
                        || (!joined && cudaMemcpyAsync (d_slots + count, args->dst_slots,
                                                        count * sizeof (int64_t),
                                                        cudaMemcpyHostToDevice,
                                                        lane->stream) != cudaSuccess)))
            rc = KVT_ECUDA;
        if (rc == 0) {
            kvt_block_copy_args_t on_device = *args;
            on_device.src_slots = d_slots;
            on_device.dst_slots = d_slots + count;
            rc = kvt_block_copy (&on_device, lane->stream);
        }
        if (d_slots)
            cudaFreeAsync (d_slots, lane->stream);
        kvt_actor_count (self->actor, "copy_kernel_launches", 1);
    }
    else {
        rc = kvt_block_copy_ce (args, lane->stream);
        kvt_actor_count (self->actor, "copy_ce_batches", 1);
    }
    return rc;
}

//  Queue 'count' block copies between a device slab and the pinned host
//  slab (or inside the device) on the copy stream: kernel or copy engines by
//  block size, or the staged path when the batch's host slots come in
//  runs ('host_runs', from s_host_runs). With layer sharding (#5) the GPU
//  tier's slab holds a block's first layers only: that part, then the
//  shard's (mapped host memory, reached through the same stream) to or
//  from the rest of the host slot. Returns 0 once queued, or an error.
static int
s_copy_blocks_queue (self_t *self, s_lane_t *lane, kvt_arena_t *src, const uint64_t *from_slots,
                     kvt_arena_t *dst, const uint64_t *to_slots, size_t count, bool host_runs)
{
    if (count == 0)
        return 0;
    bool host_is_dst = !kvt_arena_on_device (dst);
    int64_t *slots = s_slot_pairs (from_slots, to_slots, count);
    //  The GPU tier's part: the whole block unless the layers are sharded
    size_t bytes = kvt_arena_block_bytes (self->arenas [KVT_TIER_GPU]);
    kvt_block_copy_args_t args = {
        .dst = kvt_arena_base (dst), .src = kvt_arena_base (src),
        .dst_slots = slots + count, .src_slots = slots,
        .dst_slot_bytes = (int64_t) kvt_arena_block_bytes (dst),
        .src_slot_bytes = (int64_t) kvt_arena_block_bytes (src), .block_bytes = (int64_t) bytes,
        .count = (int) count };
    //  Host arena <-> GPU slab with long host runs of blocks under 2 MiB:
    //  the staged path
    bool staged = host_runs && !lane->stage_failed && bytes < S_STAGE_MAX_BLOCK_BYTES
               && kvt_arena_on_device (src) != kvt_arena_on_device (dst);
    int rc = s_copy_args_queue (self, lane, &args, count, staged, host_is_dst);
    if (rc == 0 && self->gpu_shard) {
        //  The shard's layers follow the slab's in the host slot
        kvt_arena_t *host = self->arenas [KVT_TIER_HOST];
        size_t shard_bytes = kvt_arena_block_bytes (self->gpu_shard);
        char *host_rest = (char *) kvt_arena_base (host) + bytes;
        bool to_host = src == self->arenas [KVT_TIER_GPU];
        kvt_block_copy_args_t rest = {
            .dst = to_host? host_rest: (char *) kvt_arena_base (self->gpu_shard),
            .src = to_host? (char *) kvt_arena_base (self->gpu_shard): host_rest,
            .dst_slots = slots + count, .src_slots = slots,
            .dst_slot_bytes = (int64_t) (to_host? kvt_arena_block_bytes (host): shard_bytes),
            .src_slot_bytes = (int64_t) (to_host? shard_bytes: kvt_arena_block_bytes (host)),
            .block_bytes = (int64_t) shard_bytes, .count = (int) count };
        rc = s_copy_args_queue (self, lane, &rest, count, false, to_host);
    }
    free (slots);
    return rc;
}

//  Queue the fp8 kernel for 'count' blocks between the GPU slab and the
//  pinned host slab (which it reads or writes over PCIe): quantize from
//  the GPU, dequantize to it. Returns 0 once queued, or an error.
static int
s_fp8_queue (self_t *self, s_lane_t *lane, int from, const uint64_t *from_slots,
             const uint64_t *to_slots, size_t count)
{
    if (count == 0)
        return 0;
    int64_t *slots = s_slot_pairs (from_slots, to_slots, count);
    int64_t *d_slots = NULL;
    int rc = cudaMallocAsync ((void **) &d_slots, 2 * count * sizeof (int64_t), lane->stream)
             == cudaSuccess? 0: KVT_ECUDA;
    if (rc == 0 && cudaMemcpyAsync (d_slots, slots, 2 * count * sizeof (int64_t),
                                    cudaMemcpyHostToDevice, lane->stream) != cudaSuccess)
        rc = KVT_ECUDA;
    //  One launch per S_FP8_LAUNCH_MAX blocks (the kernels' grid limit),
    //  per part: the slab's planes, then (layer sharding, #5) the shard's
    for (int part = 0; part < (self->gpu_shard? 2: 1); part++)
        for (size_t first = 0; rc == 0 && first < count; first += S_FP8_LAUNCH_MAX) {
            size_t n = count - first < S_FP8_LAUNCH_MAX? count - first: S_FP8_LAUNCH_MAX;
            kvt_fp8_args_t args;
            s_fp8_args (self, from, d_slots + first, d_slots + count + first, n, part, &args);
            rc = from == KVT_TIER_GPU? kvt_fp8_quantize (&args, lane->stream)
                                     : kvt_fp8_dequantize (&args, lane->stream);
        }
    if (d_slots)
        cudaFreeAsync (d_slots, lane->stream);
    kvt_actor_count (self->actor, "fp8_kernel_launches", 1);
    free (slots);
    return rc;
}
#endif

//  CPU twin of s_fp8_queue: the same bytes, before this returns. With
//  layer sharding (#5), the slab's planes, then the shard's.
static int
s_fp8_ref (self_t *self, int from, const uint64_t *from_slots, const uint64_t *to_slots,
           size_t count)
{
    if (count == 0)
        return 0;
    int64_t *slots = s_slot_pairs (from_slots, to_slots, count);
    int rc = 0;
    for (int part = 0; rc == 0 && part < (self->gpu_shard? 2: 1); part++) {
        kvt_fp8_args_t args;
        s_fp8_args (self, from, slots, slots + count, count, part, &args);
        rc = from == KVT_TIER_GPU? kvt_fp8_quantize_ref (&args): kvt_fp8_dequantize_ref (&args);
    }
    free (slots);
    return rc;
}

//  Whether a batch's host slots come in runs: what the staged path needs
//  (kvt_block_copy_stage_suits). Counted in every build, so that a run
//  under pressure shows how often the host tier still has free runs
//  (blocks of such batches: copy_blocks_host_runs, of the others:
//  copy_blocks_host_scattered; issue #3).
static bool
s_host_runs (self_t *self, int from, const uint64_t *from_slots, const uint64_t *to_slots,
             size_t count)
{
    kvt_arena_t *src = self->arenas [from];
    kvt_arena_t *dst = self->arenas [from == KVT_TIER_GPU? KVT_TIER_HOST: KVT_TIER_GPU];
    //  Slots are below 2^63: their int64_t view is the same numbers
    kvt_block_copy_args_t args = {
        .dst_slots = (const int64_t *) to_slots, .src_slots = (const int64_t *) from_slots,
        .dst_slot_bytes = (int64_t) kvt_arena_block_bytes (dst),
        .src_slot_bytes = (int64_t) kvt_arena_block_bytes (src),
        .block_bytes = (int64_t) kvt_arena_block_bytes (self->arenas [KVT_TIER_GPU]),
        .count = (int) count };
    bool runs = count > 0 && count <= INT_MAX
             && kvt_block_copy_stage_suits (&args, from == KVT_TIER_GPU);
    kvt_actor_count (self->actor, runs? "copy_blocks_host_runs": "copy_blocks_host_scattered",
                     count);
    return runs;
}

//  The batch's pairs in host slot order: new arrays (caller frees). The
//  blocks of a copy are independent, so their order is free; in host slot
//  order, blocks whose host slots fill a range in any order (a demotion
//  takes its victims leaf first, so a prompt's blocks often sit in
//  descending host slots) form runs, which the staged path moves as a few
//  large copy-engine copies instead of one per block (issue #3).
static void
s_sort_by_host (bool host_is_from, const uint64_t *from_slots, const uint64_t *to_slots,
                size_t count, uint64_t **from_p, uint64_t **to_p)
{
    //  Key: the host slot; value: the other side's
    kvt_pair_t *pairs = (kvt_pair_t *) kvt_zmalloc ((count + 1) * sizeof (kvt_pair_t));
    for (size_t k = 0; k < count; k++)
        pairs [k] = host_is_from? (kvt_pair_t) { from_slots [k], to_slots [k] }
                                : (kvt_pair_t) { to_slots [k], from_slots [k] };
    kvt_pairs_sort (pairs, count);
    *from_p = kvt_migration_u64s (count);
    *to_p = kvt_migration_u64s (count);
    for (size_t k = 0; k < count; k++) {
        (*from_p) [k] = host_is_from? pairs [k].key: pairs [k].value;
        (*to_p) [k] = host_is_from? pairs [k].value: pairs [k].key;
    }
    free (pairs);
}

//  Copy blocks between the two memory slabs (GPU tier <-> host tier), then
//  call 'cont' (may be NULL) with the status. memcpy when both are host
//  memory: 'cont' runs before this returns. CUDA copies when the GPU
//  tier's slab is device memory: 'cont' runs from our loop once the copy
//  (and every copy queued before it in the same direction) is done; a
//  failed copy is logged, counted and reported to 'cont'.
static void
s_copy_sorted (self_t *self, int from, const uint64_t *from_slots, int to,
               const uint64_t *to_slots, size_t count, kvt_migration_cont_fn *cont, void *arg);

void
kvt_migration_copy_blocks (self_t *self, int from, const uint64_t *from_slots, int to,
               const uint64_t *to_slots, size_t count, kvt_migration_cont_fn *cont, void *arg)
{
    uint64_t *from_sorted, *to_sorted;
    s_sort_by_host (from == KVT_TIER_HOST, from_slots, to_slots, count, &from_sorted, &to_sorted);
    s_copy_sorted (self, from, from_sorted, to, to_sorted, count, cont, arg);
    free (from_sorted);
    free (to_sorted);
}

//  kvt_migration_copy_blocks, the batch in host slot order.
static void
s_copy_sorted (self_t *self, int from, const uint64_t *from_slots, int to,
               const uint64_t *to_slots, size_t count, kvt_migration_cont_fn *cont, void *arg)
{
    //  Bytes crossing between the slabs: the host side's form (whole
    //  blocks, also when layer sharding keeps part of them in the shard)
    uint64_t moved = kvt_migration_cold_bytes (self, count);
    int rc = 0;
    const char *direction = from == KVT_TIER_GPU? "bytes_gpu_to_host": "bytes_host_to_gpu";
    bool host_runs = count > 0 && s_host_runs (self, from, from_slots, to_slots, count);
#ifdef KVT_WITH_CUDA
    kvt_arena_t *src = self->arenas [from], *dst = self->arenas [to];
    if (kvt_arena_on_device (src) || kvt_arena_on_device (dst)) {
        //  Even an empty copy goes through its direction's stream, so
        //  that 'cont' comes after the copies queued that way before it
        rc = self->gpu_copy? 0: s_gpu_copy_new (self);
        //  The lane of this direction: the copy and its continuation's wait
        s_lane_t *lane = self->gpu_copy? &self->gpu_copy->lanes [from == KVT_TIER_GPU
                                                                 ? S_LANE_TO_HOST
                                                                 : S_LANE_TO_GPU]: NULL;
        int64_t queued_us = kvt_now_us ();     //  The link is busy from the first copy
        if (rc == 0)
            rc = self->cold_fp8? s_fp8_queue (self, lane, from, from_slots, to_slots, count)
                               : s_copy_blocks_queue (self, lane, src, from_slots, dst, to_slots,
                                                     count, host_runs);
        if (rc) {
            kvt_log_error ("migration: copying %zu blocks %s failed: %s", count,
                           from == KVT_TIER_GPU? "GPU -> host": "host -> GPU", kvt_strerror (rc));
            kvt_actor_count (self->actor, "copy_errors", 1);
        }
        else
            kvt_actor_count (self->actor, direction, moved);
        if (lane && from == self->test_hold_copies_from) {
            s_copy_hold (self, cont, arg, rc);      //  Queued, its signal never
            return;
        }
        if (lane) {
            s_copy_wait_t *wait = (s_copy_wait_t *) kvt_zmalloc (sizeof (s_copy_wait_t));
            *wait = (s_copy_wait_t) { cont, arg, rc };
            //  (One event serves every copy: a wait takes the record made
            //  before it, and the notify stream keeps the copies' order)
            if (cudaEventRecord (lane->copied, lane->stream) == cudaSuccess
            &&  cudaStreamWaitEvent (lane->notify, lane->copied, 0) == cudaSuccess
            &&  cudaLaunchHostFunc (lane->notify, s_gpu_copy_signal,
                                    (void *) (intptr_t) lane->event_fd) == cudaSuccess) {
                s_lane_queued (lane, queued_us);
                zlist_append (lane->waiting, wait);
                return;
            }
            //  No signal from CUDA: wait for the copy here, then signal it
            //  ourselves. Its continuation still comes from the loop, after
            //  those of the copies queued before it, whose signals are on
            //  the eventfd by then: a caller counts on that order (a
            //  promotion's last copy ends the job).
            kvt_log_error ("migration: cannot queue the copy's signal; waiting for it here");
            if (cudaStreamSynchronize (lane->stream) != cudaSuccess
            ||  cudaStreamSynchronize (lane->notify) != cudaSuccess)
                wait->rc = rc? rc: KVT_ECUDA;
            s_lane_queued (lane, queued_us);
            zlist_append (lane->waiting, wait);
            s_gpu_copy_signal ((void *) (intptr_t) lane->event_fd);
            return;
        }
        if (cont)
            cont (self, arg, rc);
        return;
    }
#endif
    (void) host_runs;               //  Host memory on both sides: memcpy, counted only
    (void) to;                      //  The other memory tier: 'from' says which way
    if (self->cold_fp8) {
        rc = s_fp8_ref (self, from, from_slots, to_slots, count);
        if (rc) {
            kvt_log_error ("migration: FP8 %s of %zu blocks failed: %s",
                           from == KVT_TIER_GPU? "quantization": "dequantization", count,
                           kvt_strerror (rc));
            kvt_actor_count (self->actor, "copy_errors", 1);
        }
    }
    else {
        //  Whole blocks on the host side; on the GPU tier's side the
        //  slab's part, then (layer sharding, #5) the shard's part
        kvt_arena_t *gpu = self->arenas [KVT_TIER_GPU], *host = self->arenas [KVT_TIER_HOST];
        size_t gpu_bytes = kvt_arena_block_bytes (gpu);
        size_t shard_bytes = self->gpu_shard? kvt_arena_block_bytes (self->gpu_shard): 0;
        bool to_host = from == KVT_TIER_GPU;
        for (size_t k = 0; k < count; k++) {
            uint64_t gpu_slot = to_host? from_slots [k]: to_slots [k];
            uint8_t *host_block = (uint8_t *) kvt_arena_block (host, to_host? to_slots [k]
                                                                            : from_slots [k]);
            uint8_t *gpu_block = (uint8_t *) kvt_arena_block (gpu, gpu_slot);
            uint8_t *shard_block = shard_bytes
                                 ? (uint8_t *) kvt_arena_block (self->gpu_shard, gpu_slot): NULL;
            if (to_host) {
                memcpy (host_block, gpu_block, gpu_bytes);
                if (shard_block)
                    memcpy (host_block + gpu_bytes, shard_block, shard_bytes);
            }
            else {
                memcpy (gpu_block, host_block, gpu_bytes);
                if (shard_block)
                    memcpy (shard_block, host_block + gpu_bytes, shard_bytes);
            }
        }
    }
    if (rc == 0)
        kvt_actor_count (self->actor, direction, moved);
    if (from == self->test_hold_copies_from)
        s_copy_hold (self, cont, arg, rc);
    else
    if (cont)
        cont (self, arg, rc);
}

//  The actor ends (its stop hook): every copy still waiting to be reported
//  done is waited for on its stream, then reported failed, -ECANCELED: a
//  continuation frees the job that queued it (a promotion's, a demotion's,
//  a write-through's) along its failure path. Copies their continuations
//  queue wait for the next call. Returns how many were reported.
size_t
kvt_migration_copy_stop (self_t *self)
{
    zlist_t *ended = zlist_new ();
    s_copy_wait_t *wait;
#ifdef KVT_WITH_CUDA
    for (int k = 0; self->gpu_copy && k < S_LANES; k++) {
        s_lane_t *lane = &self->gpu_copy->lanes [k];
        if (zlist_size (lane->waiting) == 0
        &&  (!self->copies_held || zlist_size (self->copies_held) == 0))
            continue;
        //  (The bytes the copies read and write stay mapped until destroy;
        //  wait so that no copy still runs when their jobs are freed)
        cudaStreamSynchronize (lane->stream);
        cudaStreamSynchronize (lane->notify);
        while ((wait = (s_copy_wait_t *) zlist_pop (lane->waiting)))
            zlist_append (ended, wait);
    }
#endif
    while (self->copies_held && (wait = (s_copy_wait_t *) zlist_pop (self->copies_held)))
        zlist_append (ended, wait);
    size_t count = zlist_size (ended);
    while ((wait = (s_copy_wait_t *) zlist_pop (ended))) {
        if (wait->cont)
            wait->cont (self, wait->arg, wait->rc? wait->rc: -ECANCELED);
        free (wait);
    }
    zlist_destroy (&ended);
    if (count)
        kvt_actor_count (self->actor, "copies_cancelled", count);
    return count;
}

