/*  =========================================================================
    kvt_paged_attention_balanced - decode v5: the batch's tiles cut evenly
    over persistent CTAs

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    v5 (variant 4) of the decode kernel: v4's warp-specialised bulk-copy
    ring (kvt_paged_attention_bulk.cu) in one CTA a SM that stays for the
    whole batch. The batch's 16-token tiles, in order (unit = kv_head x
    head chunk, sequence, tile), are cut into as many equal ranges as there
    are CTAs; a CTA walks its range one (unit, sequence) segment at a time,
    its producer running on into the next segment while the computing warps
    merge the last. Why: v4 gives each (sequence, unit, split) a CTA and
    sizes the split from max_seq_len, so a batch whose lengths differ waits
    on its longest sequence's CTAs: a 128K context decoded with 63 chats of
    1K-8K tokens took 1.83 ms in v4 (0.93 TB/s) and 0.42 ms here (4.11-4.15
    TB/s, 4.4x) on the H200. Where every sequence is as long, v4's plan is
    already even and v5 is 0.94-0.98x of it (tools/bench/RESULTS.md, session
    22), so the launcher's default picks v5 only for batches whose lengths
    differ (kvt_paged_attention_args_t.total_tokens).
@discuss
    The CTAs are a multiple of the units where the SMs allow (128 of 132 for
    8 KV heads): then the ranges of every unit start at the same sequence
    and tile, so the CTAs reading one block's KV heads run in step, as v4's
    do. A segment that is a whole unit of a sequence is written to the
    output there. One cut by a range end (at most a range's first and last)
    leaves a partial softmax state in the workspace, slot 0 for the range's
    first segment, slot 1 for its last; the merge kernel, a programmatic
    dependent launch, finds a unit's pieces by arithmetic on the ranges,
    merges them by log-sum-exp and writes zeros for empty sequences. The
    workspace depends on seqs and the device only, not on the lengths, so a
    CUDA graph replays with other lengths: kvt_decode_balanced_workspace.
    The cut, the walk and the merge's rule for finding pieces are plain C in
    kvt_decode_plan.h, which tests/test_decode_plan.c runs on the CPU.
    With a forced split count (FIXED: the model's fixed-length splits,
    which keep a sequence's numbers independent of its batch) a range holds
    whole splits, those whose first tile lies in it; the computing warps
    take a split's tiles round-robin from the split's start and its state
    goes to v4's workspace row, for v4's merge kernel: the output is v4's
    bit for bit (test_gpu_paged_attention), without v4's CTA for every
    split up to max_seq_len of every sequence. On the H200 (session 23)
    that is 1.30x v4 at 64x4K, 16x32K and 1x128K and 2.2x on the mixed
    batch; the 8B model's decode at 64 chats of 1K went from 6878 to 7108
    tokens/s (7188 to 7586 as graphs).
    Whole splits balance only as finely as a split: where the in-step
    count of CTAs would give some range a sixteenth more splits than 132
    CTAs could, fewer splits a range win over the step (kvt_decode_plan_ctas;
    H200, session 30: one split a sequence, 33 x 8K 3.39 -> 4.23-4.25 TB/s,
    65 and 66 x 4K 3.75-3.78 -> 4.20-4.24; four splits +2-5%).
    Measured and not understood: on uniform batches, where v5's ranges are
    v4's CTAs exactly (16 x 32K), it runs 3% slower with the same hot loop
    (307 vs 308 SASS instructions a tile); ncu shows 17% L2 hits for v4 and
    0.4% for v5 and 4 points less DRAM throughput. Numbering the CTAs as
    v4's grid does (a unit's neighbours adjacent) changed nothing. Session
    24: both read exactly the KV's 2.15 GB from DRAM and send half of it
    over the L2 fabric; v4's hits are 25% of its SMs' read sectors. All
    132 SMs instead of 128 (ctas = slots): the same at 16x32K, +0.5% at
    64x4K, +2% at 1x128K.
@end
*/

#include "kvt_decode_bulk.cuh"
#include "kvt_decode_plan.h"
#include "kvt_decode_warp_trans.cuh"

namespace {

#define S_CONSUMERS 8                   //  Computing warps; with the producers, 10
#define S_PRODUCERS 2                   //  Divides S_CONSUMERS and the stages (kvt_dev_ring_issue);
                                        //  four were 1% slower here (session 28)
#define S_RING_BYTES (208 * 1024)       //  The ring, at most (v4's)
#define S_MAX_STAGES 64                 //  Barrier pairs: 208 KiB of 4 KiB stages (D = 64)
#define S_MERGE_BATCH 8                 //  Pieces the merge kernel loads at once

//  Warp-collective: the tiles of one unit over the batch's sequences
__device__ __forceinline__ int64_t
s_unit_batch_tiles (const int32_t *seq_lens, int seqs, int lane)
{
    int64_t sum = 0;
    for (int seq = lane; seq < seqs; seq += 32)
        sum += kvt_decode_plan_unit_tiles (seq_lens, seq);
    for (int offset = 16; offset > 0; offset >>= 1)
        sum += __shfl_xor_sync (0xffffffffu, sum, offset);
    return sum;
}

//  Warp-collective: a walk of [begin, end) (begin < the batch's tiles, a
//  unit having 'unit_tiles' of them), starting at the (unit, sequence) that
//  holds 'begin', the sequence found by a scan of 32 sequences a step
__device__ __forceinline__ kvt_decode_plan_walk_t
s_walk_start (const int32_t *seq_lens, int seqs, int64_t unit_tiles, int64_t begin, int64_t end,
              int lane)
{
    kvt_decode_plan_walk_t walk = { begin, end, begin, (int) (begin / unit_tiles), seqs, 0, 0, 0 };
    int64_t before = walk.unit * unit_tiles;
    for (int seq0 = 0; seq0 < seqs; seq0 += 32) {
        int seq = seq0 + lane;
        int64_t mine = seq < seqs? kvt_decode_plan_unit_tiles (seq_lens, seq): 0;
        int64_t upto = mine;
        for (int offset = 1; offset < 32; offset <<= 1) {
            int64_t below = __shfl_up_sync (0xffffffffu, upto, offset);
            if (lane >= offset)
                upto += below;
        }
        unsigned holds = __ballot_sync (0xffffffffu, seq < seqs && before + upto > begin);
        if (holds) {
            int at = __ffs (holds) - 1;
            walk.seq = seq0 + at;
            walk.first = before + __shfl_sync (0xffffffffu, upto - mine, at);
            walk.tiles = kvt_decode_plan_unit_tiles (seq_lens, walk.seq);
            return walk;
        }
        before += __shfl_sync (0xffffffffu, upto, 31);
    }
    return walk;
}

//  A segment as the decode helpers take a CTA's work
__device__ __forceinline__ kvt_decode_cta_t
s_segment_cta (const kvt_paged_attention_args_t &a, const kvt_decode_plan_segment_t &segment,
               int head_chunks)
{
    return kvt_decode_cta_of (a, segment.unit, head_chunks, segment.seq, segment.slot,
                              segment.tile0 * 16, (segment.tile0 + segment.count) * 16);
}

//  The workspace: the batch's tiles, each CTA's first tile (so that the
//  merge tells empty ranges by a load), each sequence's first tile in unit
//  0, then two partial states a CTA ([ctas][2][16] rows of D floats, then
//  their lse)
struct s_workspace_t {
    int64_t *batch_tiles;
    int64_t *range_begin;
    int64_t *seq_first;
    float *out;
    float *lse;
};

__host__ __device__ __forceinline__ s_workspace_t
s_workspace (void *base, int seqs, int ctas, int dim)
{
    s_workspace_t ws;
    ws.batch_tiles = (int64_t *) base;
    ws.range_begin = ws.batch_tiles + 1;
    ws.seq_first = ws.range_begin + ctas;
    ws.out = (float *) (ws.seq_first + seqs);
    ws.lse = ws.out + (size_t) ctas * 2 * 16 * dim;
    return ws;
}

//  With forced splits: v4's workspace, a row of D floats a (sequence,
//  head, split), then their lse, which v4's merge kernel reads
__device__ __forceinline__ s_workspace_t
s_split_workspace (void *base, const kvt_paged_attention_args_t &a, int splits, int dim)
{
    s_workspace_t ws = {};
    ws.out = (float *) base;
    ws.lse = ws.out + (size_t) a.seqs * a.heads * splits * dim;
    return ws;
}

//  Named barrier 1 over the computing warps (the producer never merges)
__device__ __forceinline__ void
s_consumers_sync (void)
{
    asm volatile ("bar.sync 1, %0;" :: "n" (S_CONSUMERS * 32) : "memory");
}

//  The computing warps' merge of one segment: each warp's state into
//  shared memory (rows below nheads only: 'rows' a warp), then the
//  segment's result to the output, or to its workspace slot
template <typename T, int D, bool FIXED, typename W>
__device__ __forceinline__ void
s_merge (W &w, const kvt_paged_attention_args_t &a, const kvt_decode_cta_t &c,
         const kvt_decode_plan_segment_t &segment, int range, int rows, int splits,
         float (*sm_m) [16], float (*sm_l) [16], float *sm_acc, const s_workspace_t &ws)
{
    w.store (c, sm_m [c.warp], sm_l [c.warp], sm_acc + (size_t) c.warp * rows * (D + 1));
    s_consumers_sync ();
    for (int index = threadIdx.x; index < c.nheads * D; index += S_CONSUMERS * 32) {
        int h = index / D;
        int d = index % D;
        float top, sum;
        float acc = kvt_dev_merge_warps<S_CONSUMERS> (
            sm_m, sm_l, h,
            [=] (int warp) { return sm_acc [((size_t) warp * rows + h) * (D + 1) + d]; },
            top, sum);
        if (FIXED? splits == 1: segment.whole)
            ((T *) a.out) [((size_t) c.seq * a.heads + c.head0 + h) * D + d]
                = kvt_dev_from_float<T> (acc);
        else {
            //  A forced split's row is v4's, for v4's merge kernel
            size_t row = FIXED
                ? ((size_t) c.seq * a.heads + c.head0 + h) * splits + segment.split
                : ((size_t) range * 2 + segment.slot) * 16 + h;
            ws.out [row * D + d] = acc;
            if (d == 0)
                ws.lse [row] = sum > 0.0f? top + log2f (sum): -INFINITY;
        }
    }
    s_consumers_sync ();                //  sm_acc is free for the next segment
}

//  The kernel: grid = the device's CTA slots (one a SM), 10 warps. The ring
//  protocol is v4's (kvt_paged_attention_bulk.cu, tested on a model in
//  tests/test_decode_ring.c), over the range's tiles in order: tile k of
//  the range goes to stage k % stages and to computing warp k % 8, across
//  units, so the producers fill the next unit's tiles while the warps
//  still compute or merge the last one.
template <typename T, int D, bool FIXED, typename W>
__global__ void __launch_bounds__ ((S_CONSUMERS + S_PRODUCERS) * 32, 1)
s_decode_balanced_kernel (const kvt_paged_attention_args_t a, int head_chunks, int stages,
                          int rows, int split_len, int splits, void *workspace)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int PC = D / 32;
    constexpr int ROW = D * 2;
    constexpr int STAGE = 2 * 16 * ROW;
    __shared__ float sm_m [S_CONSUMERS][16];
    __shared__ float sm_l [S_CONSUMERS][16];
    __shared__ __align__ (8) uint64_t sm_full [S_MAX_STAGES];
    __shared__ __align__ (8) uint64_t sm_empty [S_MAX_STAGES];
    extern __shared__ __align__ (16) unsigned char sm_ring [];
    float *sm_acc = (float *) (sm_ring + stages * STAGE);   //  [S_CONSUMERS][rows][D + 1]
    kvt_dev_launch_dependents ();
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int units = a.kv_heads * head_chunks;
    const s_workspace_t ws = FIXED? s_split_workspace (workspace, a, splits, D)
                                        : s_workspace (workspace, a.seqs, gridDim.x, D);
    const int64_t unit_tiles = s_unit_batch_tiles (a.seq_lens, a.seqs, lane);
    const int64_t batch_tiles = unit_tiles * units;
    const int range = blockIdx.x;
    const int64_t begin = kvt_decode_plan_range_start (range, batch_tiles, gridDim.x);
    const int64_t end = kvt_decode_plan_range_start (range + 1, batch_tiles, gridDim.x);
    if (FIXED && splits == 1)
        //  No merge kernel runs to write an empty sequence's zeros: v4's CTA
        //  of it does, so the CTAs share them out
        for (int seq = range; seq < a.seqs; seq += gridDim.x)
            if (a.seq_lens [seq] <= 0)
                for (int index = threadIdx.x; index < a.heads * D; index += blockDim.x)
                    ((T *) a.out) [(size_t) seq * a.heads * D + index]
                        = kvt_dev_from_float<T> (0.0f);
    if (threadIdx.x == 0 && !FIXED) {
        ws.range_begin [range] = begin;
        if (range == 0)
            *ws.batch_tiles = batch_tiles;
    }
    if (begin >= end)
        return;                         //  The whole CTA: the range is the same for all
    const uint32_t ring_smem = (uint32_t) __cvta_generic_to_shared (sm_ring);
    const uint32_t full0 = (uint32_t) __cvta_generic_to_shared (&sm_full [0]);
    const uint32_t empty0 = (uint32_t) __cvta_generic_to_shared (&sm_empty [0]);
    kvt_dev_ring_init (full0, empty0, stages);
    const int log2_bt = __ffs (a.block_tokens) - 1;
    kvt_decode_plan_walk_t walk = s_walk_start (a.seq_lens, a.seqs, unit_tiles, begin, end, lane);
    walk.chunk_tiles = FIXED? split_len / 16: 0;
    kvt_decode_plan_walk_snap (&walk);
    kvt_decode_plan_segment_t segment;
    if (warp >= S_CONSUMERS) {
        //  Producers: every tile of the range in order, a ring ahead at most
        const bool whole_tiles = a.block_tokens >= 16 && a.token_stride_bytes == ROW;
        int k = 0;                      //  Tiles of the range before the segment
        while (kvt_decode_plan_walk_next (&walk, a.seq_lens, a.seqs, &segment)) {
            const kvt_decode_cta_t c = s_segment_cta (a, segment, head_chunks);
            if (segment.seq_start && lane == 0 && !FIXED)
                ws.seq_first [segment.seq] = walk.first;
            const int32_t *table = a.block_table + (size_t) c.seq * a.max_blocks_per_seq;
            const char *k_head = (const char *) a.k + c.kv_head * a.head_stride_bytes;
            const char *v_head = (const char *) a.v + c.kv_head * a.head_stride_bytes;
            kvt_dev_ring_issue<D, S_PRODUCERS> (a, c, table, k_head, v_head, log2_bt, whole_tiles,
                                                c.start, segment.count, ring_smem, full0, empty0,
                                                stages, warp - S_CONSUMERS, k);
        }
        return;
    }
    //  Computing warps: tiles k = warp, warp + 8, ... of the range
    W w;
    while (kvt_decode_plan_walk_next (&walk, a.seq_lens, a.seqs, &segment)) {
        const kvt_decode_cta_t c = s_segment_cta (a, segment, head_chunks);
        w.begin (a, c);
        //  This warp's first tile j of the segment, k = local + j in the
        //  range: round-robin over the range, or over the split as in v4's
        //  CTA of it when splits are forced (the same state, bit for bit)
        int j = FIXED? warp
                          : (warp - segment.local % S_CONSUMERS + S_CONSUMERS) % S_CONSUMERS;
        int k = segment.local + j;
        int stage = k % stages;
        uint32_t phase = (uint32_t) (k / stages) & 1;
        const int release_from = stages - segment.local;    //  j where k reaches stages
        for (; j < segment.count; j += S_CONSUMERS) {
            int t0 = c.start + 16 * j;
            uint4 k_raw [2][PC], v_raw [2][PC];
            kvt_dev_ring_take<D> (sm_ring, full0, empty0, stages, j >= release_from, t0, c.end,
                                  c, S_CONSUMERS, stage, phase, k_raw, v_raw);
            w.tile (k_raw, v_raw, t0, c.end, c.t);
        }
        s_merge<T, D, FIXED> (w, a, c, segment, range, rows, splits, sm_m, sm_l, sm_acc, ws);
    }
#else
    __trap ();                          //  Never launched below sm_90 (s_plan)
#endif
}


//  Merge kernel: grid = (heads, seqs), D threads. Finds the CTAs whose
//  ranges cut this head's unit and merges their slots by 2^lse; a unit
//  one CTA held was written by it; an empty sequence gets zeros.
template <typename T, int D>
__global__ void __launch_bounds__ (D)
s_balanced_merge_kernel (const int32_t *seq_lens, void *out, int heads, int kv_heads,
                         int head_chunks, int ctas, void *workspace)
{
    kvt_dev_wait_primary ();
    const int head = blockIdx.x;
    const int seq = blockIdx.y;
    const int d = threadIdx.x;
    T *row_out = (T *) out + ((size_t) seq * heads + head) * D;
    const int tiles = kvt_decode_plan_unit_tiles (seq_lens, seq);
    if (tiles == 0) {
        row_out [d] = kvt_dev_from_float<T> (0.0f);
        return;
    }
    const s_workspace_t ws = s_workspace (workspace, gridDim.y, ctas, D);
    int group = heads / kv_heads;
    int within = head % group;
    int unit = (head / group) * head_chunks + within / 16;
    int h = within % 16;
    int64_t batch_tiles = *ws.batch_tiles;
    int64_t first = batch_tiles / (kv_heads * head_chunks) * unit + ws.seq_first [seq];
    int c0 = kvt_decode_plan_range_owner (first, batch_tiles, ctas);
    int c1 = kvt_decode_plan_range_owner (first + tiles - 1, batch_tiles, ctas);
    if (c0 == c1)
        return;
    //  The piece of CTA c is in its slot 0 (its range's first unit) unless
    //  the unit starts inside c's range, which only c0's can: slot 1 (its
    //  last). With fewer tiles than CTAs some ranges are empty and wrote
    //  nothing (ws.range_begin tells them); otherwise the rows need no load.
    //  One pass, rescaling as the max grows, so the loads of every piece
    //  are independent.
    const int c0_slot = kvt_decode_plan_piece_slot (c0, c0, first, batch_tiles, ctas);
    const bool empties = batch_tiles < ctas;
    float top = -INFINITY, sum = 0.0f, acc = 0.0f;
    for (int base = c0; base <= c1; base += S_MERGE_BATCH) {
        //  A batch of pieces' loads in flight at once: one L2 round trip a
        //  batch, not a piece (1x128K cuts a unit into 17)
        float lse [S_MERGE_BATCH], value [S_MERGE_BATCH];
#pragma unroll
        for (int i = 0; i < S_MERGE_BATCH; i++) {
            int c = base + i;
            bool live = c <= c1
                     && !(empties && ws.range_begin [c]
                                     == (c + 1 < ctas? ws.range_begin [c + 1]: batch_tiles));
            size_t row = ((size_t) c * 2 + (c == c0? c0_slot: 0)) * 16 + h;
            lse [i] = live? ws.lse [row]: -INFINITY;
            value [i] = live? ws.out [row * D + d]: 0.0f;
        }
        float next = top;
#pragma unroll
        for (int i = 0; i < S_MERGE_BATCH; i++)
            next = fmaxf (next, lse [i]);
        if (next == -INFINITY)
            continue;
        float shrink = kvt_dev_rescale (top, next);     //  0 while top is -inf
        sum *= shrink;
        acc *= shrink;
#pragma unroll
        for (int i = 0; i < S_MERGE_BATCH; i++) {
            float weight = kvt_dev_rescale (lse [i], next);
            sum += weight;
            acc = fmaf (weight, value [i], acc);
        }
        top = next;
    }
    row_out [d] = kvt_dev_from_float<T> (sum > 0.0f? acc / sum: 0.0f);
}

//  Per device: CTA slots, and the dynamic shared memory a CTA may take
//  (index: (2 bf16 + (head_dim 128)) x 4, + 2 with forced splits, + 1 with
//  the tokens as mma rows: s_launch_any)
int s_slots [16][KVT_DEV_MAX_DEVICES];
int s_dynamic_max [16][KVT_DEV_MAX_DEVICES];

//  The kernel kvt_decode_balanced_slots asks about (both tile maths give
//  one CTA a SM): the heads-as-rows one, at index (kind) x 4
#define S_WARP(T, D) kvt_decode_warp_t<T, D>

struct s_kernel_t {
    const void *kernel;
    int *dynamic_max;
};

//  kvt_dev_decode_slots' question: let the kernel take all the shared
//  memory a CTA can have, and say how many CTAs a SM run (1)
int
s_ask (void *context)
{
    s_kernel_t *k = (s_kernel_t *) context;
    int device, optin, per_sm = 0;
    cudaFuncAttributes attributes;
    if (cudaGetDevice (&device) != cudaSuccess
    ||  cudaDeviceGetAttribute (&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)
        != cudaSuccess
    ||  cudaFuncGetAttributes (&attributes, k->kernel) != cudaSuccess)
        return KVT_ECUDA;
    int dynamic = optin - (int) attributes.sharedSizeBytes;
    if (cudaFuncSetAttribute (k->kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic)
        != cudaSuccess
    ||  cudaOccupancyMaxActiveBlocksPerMultiprocessor (&per_sm, k->kernel,
                                                       (S_CONSUMERS + S_PRODUCERS) * 32, dynamic)
        != cudaSuccess)
        return KVT_ECUDA;
    __atomic_store_n (&k->dynamic_max [device], dynamic, __ATOMIC_RELEASE);
    return per_sm;
}

template <typename T, int D, bool FIXED, typename W>
int
s_launch (const kvt_paged_attention_args_t *a, int index, int split_len, int splits,
          cudaStream_t stream)
{
    int device;
    if (cudaGetDevice (&device) != cudaSuccess || device >= KVT_DEV_MAX_DEVICES)
        return KVT_ECUDA;
    s_kernel_t k = { (const void *) s_decode_balanced_kernel<T, D, FIXED, W>,
                     s_dynamic_max [index] };
    int slots = kvt_dev_decode_slots (s_slots [index], device, s_ask, &k);
    if (slots < 0)
        return slots;
    size_t need = FIXED? kvt_paged_attention_workspace_bytes (a, splits)
                            : kvt_decode_balanced_workspace (a, slots);
    if (need > 0 && (!a->workspace || a->workspace_bytes < need))
        return -EINVAL;
    int group = a->heads / a->kv_heads;
    int head_chunks = (group + 15) / 16;
    int units = a->kv_heads * head_chunks;
    int ctas = kvt_decode_plan_ctas (units, slots,
                                     FIXED? (int64_t) a->seqs * units * splits: 0);
    int rows = group < 16? group: 16;
    int merge_bytes = S_CONSUMERS * rows * (D + 1) * 4;
    int stage_bytes = 2 * 16 * D * 2;
    int ring = __atomic_load_n (&s_dynamic_max [index][device], __ATOMIC_ACQUIRE) - merge_bytes;
    if (ring > S_RING_BYTES)
        ring = S_RING_BYTES;
    int stages = ring / stage_bytes;
    if (stages > S_MAX_STAGES)
        stages = S_MAX_STAGES;
    stages -= stages % S_PRODUCERS;     //  Each stage one producer's
    if (stages < S_CONSUMERS)
        return -EINVAL;                 //  Not on any sm_90 part: 227 KiB a CTA
    s_decode_balanced_kernel<T, D, FIXED, W> <<<ctas, (S_CONSUMERS + S_PRODUCERS) * 32,
                                                stages * stage_bytes + merge_bytes, stream>>>
        (*a, head_chunks, stages, rows, split_len, splits, a->workspace);
    if (FIXED) {
        //  v4's merge of v4's split rows
        float *ws_out = (float *) a->workspace;
        float *ws_lse = ws_out + (size_t) a->seqs * a->heads * splits * D;
        if (splits > 1
        &&  kvt_decode_merge_launch<T, D> (a->out, a->seqs, a->heads, splits, a->seq_lens,
                                           split_len, ws_out, ws_lse, stream) != cudaSuccess)
            return KVT_ECUDA;
        return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
    }
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3 (a->heads, a->seqs);
    config.blockDim = dim3 (D);
    config.stream = stream;
    cudaLaunchAttribute attribute = {};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    if (cudaLaunchKernelEx (&config, s_balanced_merge_kernel<T, D>, a->seq_lens, a->out,
                            a->heads, a->kv_heads, head_chunks, ctas, a->workspace)
        != cudaSuccess)
        return KVT_ECUDA;
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

}   //  namespace

size_t
kvt_decode_balanced_workspace (const kvt_paged_attention_args_t *a, int ctas)
{
    return sizeof (int64_t) * (1 + (size_t) ctas + a->seqs)
         + (size_t) ctas * 2 * 16 * (a->head_dim + 1) * sizeof (float);
}

int
kvt_decode_balanced_slots (const kvt_paged_attention_args_t *a)
{
    int device;
    if (cudaGetDevice (&device) != cudaSuccess || device >= KVT_DEV_MAX_DEVICES)
        return KVT_ECUDA;
    bool bf16 = a->dtype == KVT_KDTYPE_BF16;
    int index = (bf16 * 2 + (a->head_dim == 128)) * 4;
    s_kernel_t k = { a->head_dim == 128
                     ? (bf16? (const void *) s_decode_balanced_kernel<__nv_bfloat16, 128, false,
                                                                      S_WARP (__nv_bfloat16, 128)>
                            : (const void *) s_decode_balanced_kernel<__half, 128, false,
                                                                      S_WARP (__half, 128)>)
                     : (bf16? (const void *) s_decode_balanced_kernel<__nv_bfloat16, 64, false,
                                                                      S_WARP (__nv_bfloat16, 64)>
                            : (const void *) s_decode_balanced_kernel<__half, 64, false,
                                                                      S_WARP (__half, 64)>),
                     s_dynamic_max [index] };
    return kvt_dev_decode_slots (s_slots [index], device, s_ask, &k);
}

namespace {

//  v5 as asked: cut at forced splits, or by itself; the tile math with the
//  tokens as mma rows where a KV head has at most 8 query heads
template <typename T, int D>
int
s_launch_any (const kvt_paged_attention_args_t *a, int index, int split_len, int splits,
              cudaStream_t stream)
{
    using Trans = kvt_decode_warp_trans_t<T, D>;
    using Rows = kvt_decode_warp_t<T, D>;
    bool trans = kvt_decode_plan_trans (a);
    int slot = index * 4 + (splits > 0) * 2 + trans;
    if (trans)
        return splits > 0? s_launch<T, D, true, Trans> (a, slot, split_len, splits, stream)
                         : s_launch<T, D, false, Trans> (a, slot, 0, 0, stream);
    return splits > 0? s_launch<T, D, true, Rows> (a, slot, split_len, splits, stream)
                     : s_launch<T, D, false, Rows> (a, slot, 0, 0, stream);
}

}   //  namespace

int
kvt_decode_balanced (const kvt_paged_attention_args_t *a, int split_len, int splits,
                     cudaStream_t stream)
{
    bool bf16 = a->dtype == KVT_KDTYPE_BF16;
    int index = bf16 * 2 + (a->head_dim == 128);
    return a->head_dim == 128
        ? (bf16? s_launch_any<__nv_bfloat16, 128> (a, index, split_len, splits, stream)
               : s_launch_any<__half, 128> (a, index, split_len, splits, stream))
        : (bf16? s_launch_any<__nv_bfloat16, 64> (a, index, split_len, splits, stream)
               : s_launch_any<__half, 64> (a, index, split_len, splits, stream));
}
