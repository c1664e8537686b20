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
    v2 (variant 1) is the default.
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
        (kvt_paged_attention_splits). Not yet the default: the session's
        device time ended before the runtime tests, the 4- and 8-token
        block cases and the demo had run with it on the card.
@end
*/

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include "kvt_paged_attention.cuh"
#include "kvt_device.cuh"
#include "kvt_decode_merge.cuh"

#define S_WARPS     4               //  Warps per CTA
#define S_SPLIT_ALIGN 64            //  Split lengths are multiples of this

namespace {

//  --------------------------------------------------------------------------
//  Both decode kernels: grid = (splits, kv_heads * head_chunks, seqs).
//  Each warp takes 16-token tiles. Lane (g = lane / 4, t = lane % 4) holds
//  16-byte chunks t + 4p (p < D / 32) of tokens g and g + 8 for K and V.
//  S = Q K^T runs on mma m16n8k16 with the query heads as the 16 rows and
//  head_dim permuted so each chunk is a B fragment as it stands: kstep
//  2p + h takes words 2h, 2h + 1 of chunk p. For O += P V, V's 8x8 pieces
//  (tokens x 8 permuted dims) are transposed in registers with movmatrix
//  into B fragments; P comes straight from S's accumulators. Output column
//  pair of piece (p, i), lane t: d = 8t + 32p + 2i. The kernels differ
//  only in how a tile's chunks reach the registers.

//  What one CTA works on, and where this lane sits in it
struct s_cta_t {
    int split, kv_head, seq, head0, nheads, start, end, warp, lane, g, t;
};

__device__ __forceinline__ s_cta_t
s_cta (const kvt_paged_attention_args_t &a, int split_len, int head_chunks)
{
    s_cta_t c;
    c.split = blockIdx.x;
    c.kv_head = blockIdx.y / head_chunks;
    int chunk = blockIdx.y % head_chunks;
    c.seq = blockIdx.z;
    int group = a.heads / a.kv_heads;
    c.head0 = c.kv_head * group + chunk * 16;
    c.nheads = min (16, group - chunk * 16);
    c.start = c.split * split_len;
    c.end = min (a.seq_lens [c.seq], c.start + split_len);
    c.lane = threadIdx.x & 31;
    c.warp = threadIdx.x >> 5;
    c.g = c.lane >> 2;
    c.t = c.lane & 3;
    return c;
}

//  A warp's running state: Q as A fragments (rows are heads g and g + 8,
//  columns permuted), the unnormalised output, row max and row sum
template <typename T, int D>
struct s_warp_t {
    uint32_t qf [D / 16][4];
    float o [D / 8][4];
    float m [2];
    float l [2];
    float scale_log2;

    __device__ __forceinline__ void
    begin (const kvt_paged_attention_args_t &a, const s_cta_t &c)
    {
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            int d0 = 8 * c.t + 32 * (ks >> 1) + 4 * (ks & 1);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int row = c.g + 8 * (i & 1);
                int d = d0 + 2 * (i >> 1);
                qf [ks][i] = row < c.nheads
                    ? *(const uint32_t *) ((const T *) a.q
                                           + ((size_t) c.seq * a.heads + c.head0 + row) * D + d)
                    : 0u;
            }
        }
#pragma unroll
        for (int n = 0; n < D / 8; n++)
            o [n][0] = o [n][1] = o [n][2] = o [n][3] = 0.0f;
        m [0] = m [1] = -INFINITY;
        l [0] = l [1] = 0.0f;
        scale_log2 = a.scale * 1.4426950408889634f;
    }

    //  One 16-token tile at t0 (tokens at or past 'end' are masked out)
    __device__ __forceinline__ void
    tile (const uint4 (&k_raw) [2][D / 32], const uint4 (&v_raw) [2][D / 32], int t0, int end,
          int t)
    {
        constexpr int PC = D / 32;
        //  S = Q K^T: n-tile 'half' holds tokens 8 * half + 2t, + 1
        float s [2][4];
#pragma unroll
        for (int half = 0; half < 2; half++) {
            s [half][0] = s [half][1] = s [half][2] = s [half][3] = 0.0f;
#pragma unroll
            for (int p = 0; p < PC; p++) {
                kvt_dev_mma<T> (s [half], qf [2 * p], k_raw [half][p].x, k_raw [half][p].y);
                kvt_dev_mma<T> (s [half], qf [2 * p + 1], k_raw [half][p].z, k_raw [half][p].w);
            }
        }
        //  Online softmax; rows g (e < 2) and g + 8 (e >= 2), quad-uniform max
        float top [2] = { -INFINITY, -INFINITY };
#pragma unroll
        for (int half = 0; half < 2; half++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int token = t0 + 8 * half + 2 * t + (e & 1);
                float value = token < end? s [half][e] * scale_log2: -INFINITY;
                s [half][e] = value;
                top [e >> 1] = fmaxf (top [e >> 1], value);
            }
        }
        float alpha [2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            top [r] = fmaxf (top [r], __shfl_xor_sync (0xffffffffu, top [r], 1));
            top [r] = fmaxf (top [r], __shfl_xor_sync (0xffffffffu, top [r], 2));
            float m_new = fmaxf (m [r], top [r]);
            alpha [r] = kvt_dev_exp2 (m [r] - m_new);     //  0 on the first tile
            m [r] = m_new;
            l [r] *= alpha [r];
        }
#pragma unroll
        for (int half = 0; half < 2; half++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = kvt_dev_exp2 (s [half][e] - m [e >> 1]);
                s [half][e] = p;
                l [e >> 1] += p;
            }
        }
        if (alpha [0] != 1.0f || alpha [1] != 1.0f) {
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                o [n][0] *= alpha [0];
                o [n][1] *= alpha [0];
                o [n][2] *= alpha [1];
                o [n][3] *= alpha [1];
            }
        }
        uint32_t pa [4];
        pa [0] = kvt_dev_pack<T> (s [0][0], s [0][1]);
        pa [1] = kvt_dev_pack<T> (s [0][2], s [0][3]);
        pa [2] = kvt_dev_pack<T> (s [1][0], s [1][1]);
        pa [3] = kvt_dev_pack<T> (s [1][2], s [1][3]);
        //  O += P V over 8x8 pieces (p, i) of V
#pragma unroll
        for (int p = 0; p < PC; p++) {
            const uint32_t w0 [4] = { v_raw [0][p].x, v_raw [0][p].y, v_raw [0][p].z,
                                      v_raw [0][p].w };
            const uint32_t w1 [4] = { v_raw [1][p].x, v_raw [1][p].y, v_raw [1][p].z,
                                      v_raw [1][p].w };
#pragma unroll
            for (int i = 0; i < 4; i++)
                kvt_dev_mma<T> (o [4 * p + i], pa, kvt_dev_movmatrix_trans (w0 [i]),
                                kvt_dev_movmatrix_trans (w1 [i]));
        }
    }

    //  Row sums over the quad, the warp's output into sm_acc [slot], then
    //  the merge of the CTA's WARPS computing warps and its write
    template <int WARPS>
    __device__ __forceinline__ void
    finish (const kvt_paged_attention_args_t &a, const s_cta_t &c, int slot, int splits,
            float (*sm_m) [16], float (*sm_l) [16], float (*sm_acc) [16][D + 1],
            float *ws_out, float *ws_lse)
    {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l [r] += __shfl_xor_sync (0xffffffffu, l [r], 1);
            l [r] += __shfl_xor_sync (0xffffffffu, l [r], 2);
        }
#pragma unroll
        for (int p = 0; p < D / 32; p++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int d = 8 * c.t + 32 * p + 2 * i;
                sm_acc [slot][c.g][d] = o [4 * p + i][0];
                sm_acc [slot][c.g][d + 1] = o [4 * p + i][1];
                sm_acc [slot][c.g + 8][d] = o [4 * p + i][2];
                sm_acc [slot][c.g + 8][d + 1] = o [4 * p + i][3];
            }
        }
        kvt_dev_decode_combine<T, D, WARPS> (sm_m, sm_l, sm_acc, m, l, slot, c.g, c.t,
                                             c.nheads, c.head0, a.heads, c.seq, c.split,
                                             splits, a.out, ws_out, ws_lse);
    }
};

//  Byte offset of token 'token' of a sequence, from its block table row
__device__ __forceinline__ int64_t
s_token_offset (const kvt_paged_attention_args_t &a, const int32_t *table, int token,
                int log2_bt, int bt_mask)
{
    return (int64_t) table [token >> log2_bt] * a.block_stride_bytes
         + (int64_t) (token & bt_mask) * a.token_stride_bytes;
}

//  --------------------------------------------------------------------------
//  v2: loads straight into registers; the next tile's K is loaded while
//  the current tile computes.

template <typename T, int D>
__global__ void __launch_bounds__ (S_WARPS * 32)
s_decode_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                 int head_chunks, float *ws_out, float *ws_lse)
{
    constexpr int PC = D / 32;              //  Chunks per lane per token row
    __shared__ float sm_m [S_WARPS][16];
    __shared__ float sm_l [S_WARPS][16];
    __shared__ float sm_acc [S_WARPS][16][D + 1];
    kvt_dev_launch_dependents ();
    const s_cta_t c = s_cta (a, split_len, head_chunks);
    s_warp_t<T, D> w;
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
                int64_t offset = s_token_offset (a, table, token, log2_bt, bt_mask);
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
    const int step = S_WARPS * 16;
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
    w.template finish<S_WARPS> (a, c, c.warp, splits, sm_m, sm_l, sm_acc, ws_out, ws_lse);
}

//  --------------------------------------------------------------------------
//  v3 (variant 2): a ring filled by the copy engine of the SM (cp.async.bulk, the
//  TMA's 1D form) instead of the load/store units. Lane 0 of each warp
//  copies a tile's K and V into a stage and the stage's mbarrier counts
//  the bytes in; the warp waits on it and reads its fragments from shared
//  memory. Why: on the H200 a read of the shuffled 16x32K KV with no math
//  at all reaches 4.10-4.20 TB/s through 16-byte loads however they are
//  arranged or how many are in flight, and 4.40-4.45 through bulk copies
//  (tools/bench/RESULTS.md, session 20). A tile whose 16 rows are one
//  contiguous run (blocks of 16 tokens or more, rows of exactly D
//  elements) is one copy each for K and V; otherwise each valid row is its
//  own copy. Rows at or past 'end' may hold anything: their scores are
//  masked and their V is zeroed in registers. Stage layout [K, V][row]
//  [D] as in global memory; fragment reads meet 2-way bank conflicts
//  (rows g and g + 1 of a quarter warp share banks), a small cost beside
//  the bytes. After the loop the ring becomes the merge buffer.

//  Dynamic shared memory of a ring kernel: its stages, or the merge
//  buffer that takes their place after the loop, whichever is larger
template <int D, int STAGES>
constexpr int
s_ring_bytes ()
{
    return S_WARPS * STAGES * 2 * 16 * D * 2 > S_WARPS * 16 * (D + 1) * 4
         ? S_WARPS * STAGES * 2 * 16 * D * 2: S_WARPS * 16 * (D + 1) * 4;
}

__device__ __forceinline__ void
s_bar_init (uint32_t bar)
{
    asm volatile ("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r" (bar) : "memory");
}

__device__ __forceinline__ void
s_bar_expect (uint32_t bar, uint32_t bytes)
{
    asm volatile ("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
                  :: "r" (bar), "r" (bytes) : "memory");
}

__device__ __forceinline__ void
s_bulk_copy (uint32_t smem, const void *global, uint32_t bytes, uint32_t bar)
{
    asm volatile ("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
                  " [%0], [%1], %2, [%3];"
                  :: "r" (smem), "l" (global), "r" (bytes), "r" (bar) : "memory");
}

__device__ __forceinline__ void
s_bar_wait (uint32_t bar, uint32_t parity)
{
    asm volatile ("{\n.reg .pred done;\nWAIT:\n"
                  "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                  "@!done bra WAIT;\n}\n" :: "r" (bar), "r" (parity) : "memory");
}

template <typename T, int D, int STAGES, int MIN_CTAS>
__global__ void __launch_bounds__ (S_WARPS * 32, MIN_CTAS)
s_decode_bulk_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                      int head_chunks, float *ws_out, float *ws_lse)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int PC = D / 32;
    constexpr int ROW = D * 2;              //  Bytes of a token row
    constexpr int STAGE = 2 * 16 * ROW;     //  K and V of 16 rows
    __shared__ float sm_m [S_WARPS][16];
    __shared__ float sm_l [S_WARPS][16];
    __shared__ __align__ (8) uint64_t sm_bar [S_WARPS][STAGES];
    extern __shared__ __align__ (16) unsigned char sm_ring [];
    kvt_dev_launch_dependents ();
    const s_cta_t c = s_cta (a, split_len, head_chunks);
    s_warp_t<T, D> w;
    w.begin (a, c);
    const int32_t *table = a.block_table + (size_t) c.seq * a.max_blocks_per_seq;
    const char *k_head = (const char *) a.k + c.kv_head * a.head_stride_bytes;
    const char *v_head = (const char *) a.v + c.kv_head * a.head_stride_bytes;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    const int bt_mask = a.block_tokens - 1;
    const bool whole_tiles = a.block_tokens >= 16 && a.token_stride_bytes == ROW;
    unsigned char *ring = sm_ring + c.warp * STAGES * STAGE;
    const uint32_t ring_smem = (uint32_t) __cvta_generic_to_shared (ring);
    const uint32_t bar0 = (uint32_t) __cvta_generic_to_shared (&sm_bar [c.warp][0]);
    if (c.lane == 0)
        for (int stage = 0; stage < STAGES; stage++)
            s_bar_init (bar0 + 8 * stage);
    asm volatile ("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncwarp ();
    //  Tile at t0 (< end) into 'stage'. Tiles are issued in order, one
    //  step apart, so lane 0 looks up the next tile's block as it issues
    //  this one: the table read's latency falls outside the loop's path
    const int step = S_WARPS * 16;
    const int first = c.start + c.warp * 16;
    int32_t pending = 0;                    //  Lane 0: block of the next tile to issue
    if (whole_tiles && c.lane == 0 && first < c.end)
        pending = table [first >> log2_bt];
    auto issue = [&] (int t0, int stage) {
        uint32_t bar = bar0 + 8 * stage;
        uint32_t dst = ring_smem + stage * STAGE;
        if (whole_tiles) {
            if (c.lane == 0) {
                int64_t offset = (int64_t) pending * a.block_stride_bytes
                               + (int64_t) (t0 & bt_mask) * a.token_stride_bytes;
                if (t0 + step < c.end)
                    pending = table [(t0 + step) >> log2_bt];
                s_bar_expect (bar, STAGE);
                s_bulk_copy (dst, k_head + offset, 16 * ROW, bar);
                s_bulk_copy (dst + 16 * ROW, v_head + offset, 16 * ROW, bar);
            }
        }
        else {
            int rows = min (16, c.end - t0);
            if (c.lane == 0)
                s_bar_expect (bar, 2 * rows * ROW);
            __syncwarp ();
            if (c.lane < rows) {
                int64_t offset = s_token_offset (a, table, t0 + c.lane, log2_bt, bt_mask);
                s_bulk_copy (dst + c.lane * ROW, k_head + offset, ROW, bar);
                s_bulk_copy (dst + 16 * ROW + c.lane * ROW, v_head + offset, ROW, bar);
            }
        }
    };
#pragma unroll
    for (int j = 0; j < STAGES; j++)
        if (first + j * step < c.end)
            issue (first + j * step, j);
    int stage = 0;
    uint32_t parity = 0;
    for (int t0 = first; t0 < c.end; t0 += step) {
        s_bar_wait (bar0 + 8 * stage, parity);
        const unsigned char *tile = ring + stage * STAGE;
        uint4 k_raw [2][PC], v_raw [2][PC];
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int row = c.g + 8 * half;
            bool valid = t0 + row < c.end;
#pragma unroll
            for (int p = 0; p < PC; p++) {
                int column = (c.t + 4 * p) * 16;
                k_raw [half][p] = *(const uint4 *) (tile + row * ROW + column);
                v_raw [half][p] = valid? *(const uint4 *) (tile + 16 * ROW + row * ROW + column)
                                       : make_uint4 (0, 0, 0, 0);
            }
        }
        //  The tile is in registers: its stage takes the tile STAGES ahead
        //  now, not after the math, so every stage is in flight while the
        //  warp computes (bulk copies need ~190 KiB in flight a SM)
        __syncwarp ();
        if (t0 + STAGES * step < c.end)
            issue (t0 + STAGES * step, stage);
        if (++stage == STAGES) {
            stage = 0;
            parity ^= 1;
        }
        w.tile (k_raw, v_raw, t0, c.end, c.t);
    }
    __syncthreads ();                       //  Every warp is done with its ring
    w.template finish<S_WARPS> (a, c, c.warp, splits, sm_m, sm_l,
                                (float (*) [16][D + 1]) sm_ring, ws_out, ws_lse);
#else
    __trap ();                              //  Never launched below sm_90 (s_kernel)
#endif
}

//  --------------------------------------------------------------------------
//  v4 (variant 3): v3 warp-specialised. One producer warp issues every
//  tile's bulk copies into a ring shared by the CTA, up to S_WS_BYTES of
//  stages ahead, looking up 32 tiles' blocks at a time; S_WS_CONSUMERS
//  warps compute, consumer w taking tiles w, w + 7, ... Each stage has a
//  "full" mbarrier (the producer's expected bytes land) and an "empty" one
//  (the consumer has its tile in registers): a stage is refilled while its
//  last tile is still being computed, so all of the ring but the tiles
//  being copied to registers is in flight. Deadlock-free for any stage
//  count: the producer issues in tile order and waits only for the
//  release of the tile a ring behind, which its consumer reaches first.
//  One CTA a SM (256 threads; 9 warps, at 187 registers each, were refused
//  at launch as "too many resources").

#define S_WS_CONSUMERS 7                //  With the producer, 8 warps: 255 registers a thread
#define S_WS_BYTES (208 * 1024)             //  Ring bytes; the merge buffer fits in it

template <int D>
constexpr int
s_ws_stages ()
{
    return S_WS_BYTES / (2 * 16 * D * 2);
}

__device__ __forceinline__ void
s_bar_arrive (uint32_t bar)
{
    asm volatile ("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r" (bar) : "memory");
}

template <typename T, int D>
__global__ void __launch_bounds__ ((S_WS_CONSUMERS + 1) * 32, 1)
s_decode_ws_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                    int head_chunks, float *ws_out, float *ws_lse)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int PC = D / 32;
    constexpr int ROW = D * 2;
    constexpr int STAGE = 2 * 16 * ROW;
    constexpr int STAGES = s_ws_stages<D> ();
    __shared__ float sm_m [S_WS_CONSUMERS + 1][16];     //  Row S_WS_CONSUMERS: the
    __shared__ float sm_l [S_WS_CONSUMERS + 1][16];     //  producer's, never merged
    __shared__ __align__ (8) uint64_t sm_full [STAGES];
    __shared__ __align__ (8) uint64_t sm_empty [STAGES];
    extern __shared__ __align__ (16) unsigned char sm_ring [];
    kvt_dev_launch_dependents ();
    const s_cta_t c = s_cta (a, split_len, head_chunks);
    const int tiles = c.end > c.start? (c.end - c.start + 15) / 16: 0;
    const uint32_t ring_smem = (uint32_t) __cvta_generic_to_shared (sm_ring);
    const uint32_t full0 = (uint32_t) __cvta_generic_to_shared (&sm_full [0]);
    const uint32_t empty0 = (uint32_t) __cvta_generic_to_shared (&sm_empty [0]);
    if (threadIdx.x == 0)
        for (int stage = 0; stage < STAGES; stage++) {
            s_bar_init (full0 + 8 * stage);
            s_bar_init (empty0 + 8 * stage);
        }
    asm volatile ("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncthreads ();
    const int32_t *table = a.block_table + (size_t) c.seq * a.max_blocks_per_seq;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    const int bt_mask = a.block_tokens - 1;
    float (*sm_acc) [16][D + 1] = (float (*) [16][D + 1]) sm_ring;
    if (c.warp == S_WS_CONSUMERS) {
        //  Producer
        const char *k_head = (const char *) a.k + c.kv_head * a.head_stride_bytes;
        const char *v_head = (const char *) a.v + c.kv_head * a.head_stride_bytes;
        const bool whole_tiles = a.block_tokens >= 16 && a.token_stride_bytes == ROW;
        int stage = 0;
        uint32_t phase = 0;
        for (int j0 = 0; j0 < tiles; j0 += 32) {
            int32_t block = 0;              //  Lane l: block of tile j0 + l
            if (whole_tiles && j0 + c.lane < tiles)
                block = table [(c.start + 16 * (j0 + c.lane)) >> log2_bt];
            for (int j = j0; j < min (tiles, j0 + 32); j++) {
                int t0 = c.start + 16 * j;
                int32_t tile_block = __shfl_sync (0xffffffffu, block, j - j0);
                if (j >= STAGES)            //  The tile a ring behind has been taken
                    s_bar_wait (empty0 + 8 * stage, phase ^ 1);
                uint32_t bar = full0 + 8 * stage;
                uint32_t dst = ring_smem + stage * STAGE;
                if (whole_tiles) {
                    if (c.lane == 0) {
                        int64_t offset = (int64_t) tile_block * a.block_stride_bytes
                                       + (int64_t) (t0 & bt_mask) * a.token_stride_bytes;
                        s_bar_expect (bar, STAGE);
                        s_bulk_copy (dst, k_head + offset, 16 * ROW, bar);
                        s_bulk_copy (dst + 16 * ROW, v_head + offset, 16 * ROW, bar);
                    }
                }
                else {
                    int rows = min (16, c.end - t0);
                    if (c.lane == 0)
                        s_bar_expect (bar, 2 * rows * ROW);
                    __syncwarp ();
                    if (c.lane < rows) {
                        int64_t offset = s_token_offset (a, table, t0 + c.lane, log2_bt, bt_mask);
                        s_bulk_copy (dst + c.lane * ROW, k_head + offset, ROW, bar);
                        s_bulk_copy (dst + 16 * ROW + c.lane * ROW, v_head + offset, ROW, bar);
                    }
                }
                if (++stage == STAGES) {
                    stage = 0;
                    phase ^= 1;
                }
            }
        }
        __syncthreads ();                   //  Every tile computed: the ring is free
        const float m [2] = { -INFINITY, -INFINITY }, l [2] = { 0.0f, 0.0f };
        kvt_dev_decode_combine<T, D, S_WS_CONSUMERS> (sm_m, sm_l, sm_acc, m, l, S_WS_CONSUMERS,
                                                      c.g, c.t, c.nheads, c.head0, a.heads,
                                                      c.seq, c.split, splits, a.out, ws_out,
                                                      ws_lse);
        return;
    }
    //  Consumers
    s_warp_t<T, D> w;
    w.begin (a, c);
    int stage = c.warp;
    uint32_t phase = 0;
    for (int j = c.warp; j < tiles; j += S_WS_CONSUMERS) {
        int t0 = c.start + 16 * j;
        s_bar_wait (full0 + 8 * stage, phase);
        const unsigned char *tile = sm_ring + stage * STAGE;
        uint4 k_raw [2][PC], v_raw [2][PC];
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int row = c.g + 8 * half;
            bool valid = t0 + row < c.end;
#pragma unroll
            for (int p = 0; p < PC; p++) {
                int column = (c.t + 4 * p) * 16;
                k_raw [half][p] = *(const uint4 *) (tile + row * ROW + column);
                v_raw [half][p] = valid? *(const uint4 *) (tile + 16 * ROW + row * ROW + column)
                                       : make_uint4 (0, 0, 0, 0);
            }
        }
        __syncwarp ();                      //  Every lane has its tile: release the stage
        if (c.lane == 0)
            s_bar_arrive (empty0 + 8 * stage);
        stage += S_WS_CONSUMERS;
        if (stage >= STAGES) {
            stage -= STAGES;
            phase ^= 1;
        }
        w.tile (k_raw, v_raw, t0, c.end, c.t);
    }
    __syncthreads ();                       //  Every tile computed: the ring is free
    w.template finish<S_WS_CONSUMERS> (a, c, c.warp, splits, sm_m, sm_l, sm_acc, ws_out, ws_lse);
#else
    __trap ();                              //  Never launched below sm_90 (s_plan)
#endif
}

//  --------------------------------------------------------------------------
//  The kernel of a variant, and what it needs on a device, asked of the
//  driver once per device: asking at every call (SM count, occupancy,
//  attributes) cost 6-11 us of host time a call on the H200, and a decode
//  step makes one call a layer.

typedef void (*s_kernel_t) (const kvt_paged_attention_args_t, int, int, int, float *,
                            float *);

//  Version 1 = v2, 2 = v3, 3 = v4 (s_plan maps variant 0 to a version)
template <typename T, int D>
s_kernel_t
s_kernel (int version, int *smem, int *threads)
{
    *threads = S_WARPS * 32;
    if (version == 2) {
        *smem = s_ring_bytes<D, 3> ();
        return s_decode_bulk_kernel<T, D, 3, 2>;
    }
    if (version == 3) {
        *smem = s_ws_stages<D> () * 2 * 16 * D * 2;
        *threads = (S_WS_CONSUMERS + 1) * 32;
        return s_decode_ws_kernel<T, D>;
    }
    *smem = 0;
    return s_decode_kernel<T, D>;
}

//  CTA slots of each kernel on each device (kvt_dev_decode_slots)
int s_slots [2 * 2 * KVT_PAGED_ATTENTION_VARIANTS][64];

struct s_plan_t {
    s_kernel_t kernel;
    int threads;                            //  A CTA's
    int smem;                               //  Dynamic shared memory bytes
    int slots;                              //  CTAs that run at once on the device
};

//  CTAs a SM of plan's kernel. The ring kernels take all of the SM's
//  unified memory as shared memory: two rings a SM.
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

//  Kernel, shared memory and CTA slots for 'a' on the current device. The
//  default is v2; below sm_90 (no bulk copies, no mbarriers) every variant
//  is v2.
int
s_plan (const kvt_paged_attention_args_t *a, s_plan_t *plan)
{
    int device;
    if (cudaGetDevice (&device) != cudaSuccess)
        return KVT_ECUDA;
    bool hopper = kvt_dev_compute_major (device) >= 9;     //  Bulk copies, mbarriers
    int version = a->variant == 0 || !hopper? 1: a->variant;
    bool bf16 = a->dtype == KVT_KDTYPE_BF16;
    plan->kernel = a->head_dim == 128
        ? (bf16? s_kernel<__nv_bfloat16, 128> (version, &plan->smem, &plan->threads)
               : s_kernel<__half, 128> (version, &plan->smem, &plan->threads))
        : (bf16? s_kernel<__nv_bfloat16, 64> (version, &plan->smem, &plan->threads)
               : s_kernel<__half, 64> (version, &plan->smem, &plan->threads));
    int index = (bf16 * 2 + (a->head_dim == 128)) * KVT_PAGED_ATTENTION_VARIANTS + version;
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
                                                                  splits, ws_out, ws_lse, stream)
                   : kvt_decode_merge_launch<__half, 128> (a->out, a->seqs, a->heads, splits,
                                                           ws_out, ws_lse, stream))
            : (bf16? kvt_decode_merge_launch<__nv_bfloat16, 64> (a->out, a->seqs, a->heads,
                                                                 splits, ws_out, ws_lse, stream)
                   : kvt_decode_merge_launch<__half, 64> (a->out, a->seqs, a->heads, splits,
                                                          ws_out, ws_lse, stream));
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
    s_plan_t plan;
    rc = s_plan (args, &plan);
    return rc? rc: kvt_paged_attention_splits (args, plan.slots);
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
    s_plan_t plan;
    rc = s_plan (args, &plan);
    if (rc)
        return rc;
    int splits = args->splits > 0? args->splits: kvt_paged_attention_splits (args, plan.slots);
    int max_len = args->max_seq_len > 0? args->max_seq_len: 1;
    int split_len = (max_len + splits - 1) / splits;
    split_len = (split_len + S_SPLIT_ALIGN - 1) / S_SPLIT_ALIGN * S_SPLIT_ALIGN;
    splits = (max_len + split_len - 1) / split_len;
    if (splits > 1
    &&  (!args->workspace
    ||   args->workspace_bytes < kvt_paged_attention_workspace_bytes (args, splits)))
        return -EINVAL;
    return s_launch (args, &plan, split_len, splits, stream);
}
