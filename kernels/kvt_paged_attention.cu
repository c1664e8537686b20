/*  =========================================================================
    kvt_paged_attention - paged decode attention (GQA, split-KV) on the GPU

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Versions (compared in tools/bench/kvt_bench_kernels.c):
    v1  fp32 FMA: head_dim/8 lanes per token row, a GQA group's queries in
        registers, shuffles to reduce each dot product. 3.06 / 3.20 / 2.84
        TB/s at 64x4K / 16x32K / 1x128K on an H200 (2026-11-27): bound by
        instruction issue (about 66 instructions per token per warp).
    v2  tensor cores (this file): a warp takes 16-token tiles; S = QK^T and
        O += PV on mma.sync m16n8k16 with up to 16 query heads of one KV
        head as the rows, so each K/V byte crosses HBM once for the whole
        group; head_dim is permuted so 16-byte loads are B fragments as
        they stand, V is transposed in registers (movmatrix), P goes from
        the S accumulators into A fragments (rounded to the dtype, as
        FlashAttention does). About 12 instructions per token per warp.
        The next tile's K is loaded while the current tile computes (+2%
        at 16x32K, +4% at 1x128K on the H100). Splits merge in a second
        kernel by log-sum-exp. H100, 2026-11-27: 2.94 / 2.96 / 2.76 TB/s at
        64x4K / 16x32K / 1x128K, 0.98-1.03x cuDNN SDPA on contiguous KV.
        H200, 2026-11-28 (session 20, device time, launches queued back to
        back as PyTorch's are): 4.03-4.07 / 4.08-4.16 / 3.69-3.78 TB/s,
        0.93-0.97x cuDNN (4.19-4.38 / 4.34-4.46 / 3.75-4.02). The split
        merge is a programmatic dependent launch (kvt_decode_merge.cuh).
    Why v2 stops near 4.15 TB/s on the H200 (tools/bench/RESULTS.md,
    session 20): a read of the same paged KV with no math at all reaches
    4.10-4.20 TB/s through 16-byte loads, and a flat 1 GiB read 4.17-4.20,
    however the loads are arranged or how many are in flight; through bulk
    copies (cp.async.bulk, the TMA engine) the same read reaches 4.40-4.45,
    which is where cuDNN is. Tried and removed: per-warp cp.async rings of
    2 or 3 tiles, per lane or whole rows an instruction (0.88-0.98x v2).
    v2 (variant 1) is the default below sm_90.
    v3  (variant 2) v2's math on tiles that a ring of bulk copies (one
        ring a warp, lane 0 issuing) brings into shared memory: correct on
        every test case, but 3.5-3.6 TB/s; ncu finds its warps waiting on
        the stage barrier (31% of samples) and on the block table (13%):
        each warp's own copies wait behind its math.
    v4  (variant 3) v3 warp-specialised: one
        producer warp keeps a 208 KiB ring shared by 7 computing warps
        full, fetching the block table 32 tiles at a time; a computing
        warp frees its stage once its tile is in registers. H200, session
        20: 4.11 / 4.33 TB/s at 64x4K / 16x32K against v2's 4.06 / 4.13
        in the same calls (1.01 / 1.05x); at 1x128K the split planner then
        made a second wave of 4 CTAs (0.61x), so it now stops at one
        (kvt_paged_attention_splits). The default on sm_90 and later since
        session 21 (H200, 2026-11-29, same call as cuDNN SDPA): 4.09 / 4.33
        / 4.05 TB/s at 64x4K / 16x32K / 1x128K, 0.98 / 0.99 / 1.05x cuDNN
        (4.16 / 4.36 / 3.84), against v2's 0.97 / 0.94 / 0.98x. Session
        21 also fixed a race between a computing warp and a stage's previous
        fill (kvt_paged_attention_bulk.cu); after it, 4.13-4.15 / 4.36 /
        4.03 TB/s in two runs, 0.95-0.96 / 0.99 / 1.01x cuDNN in that call
        (4.34 / 4.43 / 3.98: cuDNN's 64x4K moved 4.12-4.34 between calls).
    v5  (variant 4, kvt_paged_attention_balanced.cu) v4's ring in one
        persistent CTA a SM, the batch's tiles cut evenly over them. H200,
        session 22: a 128K context with 63 chats of 1K-8K tokens 4.11-4.15
        TB/s against v4's 0.93 (4.4x: v4 waits on the long sequence's 8
        CTAs); 0.94-0.98x of v4 on the uniform shapes. The default on sm_90
        for a batch of several sequences whose lengths differ or are not
        told (args.total_tokens), else v4 (s_version). Since session 23
        also for a forced split count (the model's fixed splits): cut at
        the splits, it gives v4's bits at 1.30x v4's speed (2.2x on the
        mixed batch). Session 23 also fenced every ring's reads before a
        stage's refill (kvt_dev_fence_reads_before_refill): without it the
        bulk copy could land under loads in flight.
    Where v4 and v5 stand (session 24, tools/bench/RESULTS.md): under ncu's
    base clocks cuDNN's decode is 17-19% faster than v4, at boost clocks
    4-7%, so ours is bound on the SM side, not the DRAM's. What moves it
    is the producer's path per tile: the same tile as four 2 KiB copies
    instead of two 4 KiB ones cost 15%, issued by two lanes 5%; batching
    four tiles a pass (a lane each) gave v4 +3% at 64x4K and -3% at
    1x128K. The stages' 2-way bank conflicts cost about 1%. Session 25
    measured the ring itself (tools/bench/gpu/kvt_probe_bulk.cu, no math):
    4.25-4.30 TB/s with 4 KiB copies, 4.39-4.43 with 8, 4.49-4.52 with 16
    and 32, so v4 at 16x32K (4.31) is at the ceiling of its copies, and
    cuDNN's 4.44-4.54 there needs four KV heads of a block a copy. Its
    computing warps wait on fills half of the time; v7's (two heads a copy,
    three warps a head, branch wip/pair-balanced) 20-24%, with its producer
    waiting on a full ring a third of the time: there the math binds.
    So since session 25 v4 and v5 compute a tile with the tokens as the
    mma rows (kvt_decode_warp_trans.cuh) where a KV head has at most 8
    query heads (kvt_decode_plan_trans): 16 mma a tile instead of 32, 136
    and 171 registers instead of 190 and 216 (D = 128). Same speed, as the
    copies bind (H200: v4 within 0.5%, v5 0.3-0.8% under, the 8B model's
    decode even), every GPU test and memcheck clean: the headroom a kernel
    taking four KV heads of a block needs.
    Session 27 measured one warp's issue rate as the ring's cap (4 KiB
    copies: 4.23 TB/s from one producer warp, 4.39 from two); since
    session 28 four producer warps fill v4's ring and two v5's (warp p
    the tiles p mod P; 8 computing warps; kvt_dev_ring_issue). H200: two
    producers gave 0.97-0.98 / 0.97-0.98 / 0.97-0.99x cuDNN at 64x4K /
    16x32K / 1x128K against one producer's 0.94-0.95 / 0.97 / 1.00x in the
    same call; four in v4 then 0.99 / 1.00 / 1.02-1.03x against two's
    0.99 / 0.98 / 1.00x (another machine); in v5 four cost 1%.
@end
*/

#include "kvt_paged_attention_int.cuh"
#include "kvt_decode_plan.h"

#define S_SPLIT_ALIGN 64            //  Split lengths are multiples of this

namespace {

//  --------------------------------------------------------------------------
//  v2: loads straight into registers; the next tile's K is loaded while
//  the current tile computes.

template <typename T, int D>
__global__ void __launch_bounds__ (KVT_DECODE_WARPS * 32)
s_decode_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                 int head_chunks, float *ws_out, float *ws_lse)
{
    constexpr int PC = D / 32;              //  Chunks per lane per token row
    __shared__ float sm_m [KVT_DECODE_WARPS][16];
    __shared__ float sm_l [KVT_DECODE_WARPS][16];
    __shared__ float sm_acc [KVT_DECODE_WARPS][16][D + 1];
    kvt_dev_launch_dependents ();
    const kvt_decode_cta_t c = kvt_decode_cta (a, split_len, head_chunks);
    if (splits > 1 && c.end <= c.start)
        return;                             //  A split past the sequence's end: the merge skips it
    kvt_decode_warp_t<T, D> w;
    w.begin (a, c);
    const int32_t *table = a.block_table + (size_t) c.seq * a.max_blocks_per_seq;
    const char *k_base = (const char *) a.k + c.kv_head * a.head_stride_bytes + c.t * 16;
    const char *v_base = (const char *) a.v + c.kv_head * a.head_stride_bytes + c.t * 16;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    const int bt_mask = a.block_tokens - 1;

    //  Loads for the 16 tokens at t0: lane reads tokens t0 + g and t0 + g + 8
    auto load_rows = [&] (uint4 (*raw) [PC], const char *base, int t0) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int token = t0 + c.g + 8 * half;
            if (token < c.end) {
                int64_t offset = kvt_decode_token_offset (a, table, token, log2_bt, bt_mask);
#pragma unroll
                for (int p = 0; p < PC; p++)
                    raw [half][p] = kvt_dev_load_stream (base + offset + p * 64);
            }
            else {
#pragma unroll
                for (int p = 0; p < PC; p++)
                    raw [half][p] = make_uint4 (0, 0, 0, 0);
            }
        }
    };
    const int step = KVT_DECODE_WARPS * 16;
    uint4 k_raw [2][PC], v_raw [2][PC];
    uint4 k_next [2][PC];
    load_rows (k_raw, k_base, c.start + c.warp * 16);
    for (int t0 = c.start + c.warp * 16; t0 < c.end; t0 += step) {
        load_rows (v_raw, v_base, t0);
        if (t0 + step < c.end)
            load_rows (k_next, k_base, t0 + step);     //  In flight while this tile computes
        w.tile (k_raw, v_raw, t0, c.end, c.t);
#pragma unroll
        for (int half = 0; half < 2; half++)
#pragma unroll
            for (int p = 0; p < PC; p++)
                k_raw [half][p] = k_next [half][p];
    }
    w.template finish<KVT_DECODE_WARPS> (a, c, c.warp, splits, sm_m, sm_l, sm_acc, ws_out, ws_lse);
}

//  --------------------------------------------------------------------------
//  The kernel of a variant, and what it needs on a device (SM count,
//  occupancy, attributes), asked of the driver once per device, not at
//  every call: a decode step makes one call a layer. (A call still costs
//  4.5-11 us of host time on the H200: the launches themselves.)

//  CTA slots of each kernel on each device (kvt_dev_decode_slots): by
//  dtype, head_dim, version and tile math (kvt_decode_plan_trans)
int s_slots [2 * 2 * KVT_PAGED_ATTENTION_VARIANTS * 2][KVT_DEV_MAX_DEVICES];

struct s_plan_t {
    kvt_decode_kernel_t kernel;
    int threads;                            //  A CTA's
    int smem;                               //  Dynamic shared memory bytes
    int slots;                              //  CTAs that run at once on the device
};

//  CTAs a SM of plan's kernel. The bulk kernels take all of the SM's
//  unified memory as shared memory (v3: two CTAs' rings a SM, v4: one).
int
s_ask_per_sm (void *context)
{
    const s_plan_t *plan = (const s_plan_t *) context;
    int per_sm = 0;
    if ((plan->smem > 0
    &&   (cudaFuncSetAttribute ((const void *) plan->kernel,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                plan->smem) != cudaSuccess
    ||    cudaFuncSetAttribute ((const void *) plan->kernel,
                                cudaFuncAttributePreferredSharedMemoryCarveout,
                                cudaSharedmemCarveoutMaxShared) != cudaSuccess))
    ||  cudaOccupancyMaxActiveBlocksPerMultiprocessor (&per_sm, plan->kernel, plan->threads,
                                                       plan->smem) != cudaSuccess)
        return KVT_ECUDA;
    return per_sm;
}

//  The version a call runs on the current device: 1 = v2, 2 = v3, 3 = v4,
//  4 = v5 (kvt_paged_attention_balanced.cu), or a negative code. The
//  default on sm_90+ is v5 where lengths differ or may (args.total_tokens),
//  and for a forced split count (cut at the splits, v4's bits), v4 for one
//  sequence or equal lengths; below sm_90
//  (no bulk copies, no mbarriers) every variant is v2.
int
s_version (const kvt_paged_attention_args_t *a)
{
    int device;
    if (cudaGetDevice (&device) != cudaSuccess)
        return KVT_ECUDA;
    return kvt_decode_plan_version (a, kvt_dev_compute_major (device) >= 9);
}

//  Kernel, shared memory and CTA slots of v2, v3 or v4 for 'a' on the
//  current device (v5 plans itself: kvt_decode_balanced)
int
s_plan (const kvt_paged_attention_args_t *a, s_plan_t *plan)
{
    int device;
    if (cudaGetDevice (&device) != cudaSuccess)
        return KVT_ECUDA;
    int version = s_version (a);
    if (version < 0)
        return version;
    bool bf16 = a->dtype == KVT_KDTYPE_BF16;
    if (version >= 2)                       //  v3, v4
        plan->kernel = kvt_decode_bulk_kernel (bf16, a->head_dim, version,
                                               kvt_decode_plan_trans (a), &plan->smem,
                                               &plan->threads);
    else {
        plan->kernel = a->head_dim == 128
            ? (bf16? s_decode_kernel<__nv_bfloat16, 128>: s_decode_kernel<__half, 128>)
            : (bf16? s_decode_kernel<__nv_bfloat16, 64>: s_decode_kernel<__half, 64>);
        plan->smem = 0;
        plan->threads = KVT_DECODE_WARPS * 32;
    }
    int index = ((bf16 * 2 + (a->head_dim == 128)) * KVT_PAGED_ATTENTION_VARIANTS + version) * 2
              + kvt_decode_plan_trans (a);
    plan->slots = kvt_dev_decode_slots (s_slots [index], device, s_ask_per_sm, plan);
    return plan->slots < 0? plan->slots: 0;
}

int
s_launch (const kvt_paged_attention_args_t *a, const s_plan_t *plan, int split_len, int splits,
          cudaStream_t stream)
{
    int group = a->heads / a->kv_heads;
    int head_chunks = (group + 15) / 16;
    int dim = a->head_dim;
    float *ws_out = (float *) a->workspace;
    float *ws_lse = ws_out? ws_out + (size_t) a->seqs * a->heads * splits * dim: NULL;
    dim3 grid (splits, a->kv_heads * head_chunks, a->seqs);
    plan->kernel <<<grid, plan->threads, plan->smem, stream>>> (*a, split_len, splits,
                                                                head_chunks, ws_out, ws_lse);
    if (splits > 1) {
        bool bf16 = a->dtype == KVT_KDTYPE_BF16;
        cudaError_t err = dim == 128
            ? (bf16? kvt_decode_merge_launch<__nv_bfloat16, 128> (a->out, a->seqs, a->heads,
                                                                  splits, a->seq_lens, split_len,
                                                                  ws_out, ws_lse, stream)
                   : kvt_decode_merge_launch<__half, 128> (a->out, a->seqs, a->heads, splits,
                                                           a->seq_lens, split_len, ws_out,
                                                           ws_lse, stream))
            : (bf16? kvt_decode_merge_launch<__nv_bfloat16, 64> (a->out, a->seqs, a->heads,
                                                                 splits, a->seq_lens, split_len,
                                                                 ws_out, ws_lse, stream)
                   : kvt_decode_merge_launch<__half, 64> (a->out, a->seqs, a->heads, splits,
                                                          a->seq_lens, split_len, ws_out,
                                                          ws_lse, stream));
        if (err != cudaSuccess)
            return KVT_ECUDA;
    }
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

}   //  namespace

//  --------------------------------------------------------------------------
//  Split count on the current device.

int
kvt_paged_attention_plan (const kvt_paged_attention_args_t *args)
{
    if (args->splits > 0)
        return args->splits;
    int rc = kvt_paged_attention_check (args);
    if (rc)
        return rc;
    int version = s_version (args);
    if (version < 0 || version == 4)    //  v5 cuts the batch itself
        return version < 0? version: 1;
    s_plan_t plan;
    rc = s_plan (args, &plan);
    return rc? rc: kvt_paged_attention_splits (args, plan.slots);
}

int64_t
kvt_paged_attention_workspace_need (const kvt_paged_attention_args_t *args)
{
    int rc = kvt_paged_attention_check (args);
    if (rc)
        return rc;
    int version = s_version (args);
    if (version < 0)
        return version;
    if (version == 4 && args->splits == 0) {
        int ctas = kvt_decode_balanced_slots (args);
        return ctas < 0? ctas: (int64_t) kvt_decode_balanced_workspace (args, ctas);
    }
    int splits = kvt_paged_attention_plan (args);
    return splits < 0? splits: (int64_t) kvt_paged_attention_workspace_bytes (args, splits);
}

//  --------------------------------------------------------------------------
//  Queue decode (+ merge) on 'stream'.

int
kvt_paged_attention (const kvt_paged_attention_args_t *args, cudaStream_t stream)
{
    int rc = kvt_paged_attention_check (args);
    if (rc)
        return rc;
    if (args->seqs == 0)
        return 0;
    if (args->seqs > 65535 || args->heads > 65535)
        return -EINVAL;
    int version = s_version (args);
    if (version == 4 && args->splits == 0)
        return kvt_decode_balanced (args, 0, 0, stream);
    s_plan_t plan = {};
    if (version != 4 && (rc = s_plan (args, &plan)) != 0)
        return rc;
    int splits = args->splits > 0? args->splits: kvt_paged_attention_splits (args, plan.slots);
    int max_len = args->max_seq_len > 0? args->max_seq_len: 1;
    int split_len = (max_len + splits - 1) / splits;
    split_len = (split_len + S_SPLIT_ALIGN - 1) / S_SPLIT_ALIGN * S_SPLIT_ALIGN;
    splits = (max_len + split_len - 1) / split_len;
    if (version == 4)                   //  Forced splits, cut over persistent CTAs
        return kvt_decode_balanced (args, split_len, splits, stream);
    if (splits > 1
    &&  (!args->workspace
    ||   args->workspace_bytes < kvt_paged_attention_workspace_bytes (args, splits)))
        return -EINVAL;
    return s_launch (args, &plan, split_len, splits, stream);
}
