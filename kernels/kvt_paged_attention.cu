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
        H200, 2026-11-28: 4.0 / 4.08 / 3.6 TB/s; cuDNN moves from call to
        call, and at 16x32K it is ahead in most (ours 0.94-0.95x): more
        bytes in flight per SM than 8 warps with one K tile ahead in
        registers give is the next step (an L2 bulk prefetch and V one
        tile ahead were tried and were slower; tools/bench/RESULTS.md).
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
//  Decode kernel. grid = (splits, kv_heads * head_chunks, seqs).
//  Each warp takes 16-token tiles. Lane (g = lane / 4, t = lane % 4) loads
//  16-byte chunks t + 4p (p < D / 32) of tokens g and g + 8 for K and V.
//  S = Q K^T runs on mma m16n8k16 with the query heads as the 16 rows and
//  head_dim permuted so each loaded chunk is a B fragment as it stands:
//  kstep 2p + h takes words 2h, 2h + 1 of chunk p. For O += P V, V's 8x8
//  pieces (tokens x 8 permuted dims) are transposed in registers with
//  movmatrix into B fragments; P comes straight from S's accumulators.
//  Output column pair of piece (p, i), lane t: d = 8t + 32p + 2i.

template <typename T, int D>
__global__ void __launch_bounds__ (S_WARPS * 32)
s_decode_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                 int head_chunks, float *ws_out, float *ws_lse)
{
    constexpr int PC = D / 32;              //  Chunks per lane per token row
    constexpr int KSTEPS = D / 16;          //  mma k-steps over head_dim
    constexpr int NT = D / 8;               //  Output n-tiles (8x8 pieces)
    __shared__ float sm_m [S_WARPS][16];
    __shared__ float sm_l [S_WARPS][16];
    __shared__ float sm_acc [S_WARPS][16][D + 1];

    const int split = blockIdx.x;
    const int kv_head = blockIdx.y / head_chunks;
    const int chunk = blockIdx.y % head_chunks;
    const int seq = blockIdx.z;
    const int group = a.heads / a.kv_heads;
    const int head0 = kv_head * group + chunk * 16;
    const int nheads = min (16, group - chunk * 16);
    const int len = a.seq_lens [seq];
    const int start = split * split_len;
    const int end = min (len, start + split_len);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int g = lane >> 2;
    const int t = lane & 3;

    //  Q as A fragments: rows are heads g and g + 8, columns permuted
    uint32_t qf [KSTEPS][4];
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ks++) {
        int d0 = 8 * t + 32 * (ks >> 1) + 4 * (ks & 1);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int row = g + 8 * (i & 1);
            int d = d0 + 2 * (i >> 1);
            qf [ks][i] = row < nheads
                ? *(const uint32_t *) ((const T *) a.q
                                       + ((size_t) seq * a.heads + head0 + row) * D + d)
                : 0u;
        }
    }
    float o [NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++)
        o [n][0] = o [n][1] = o [n][2] = o [n][3] = 0.0f;
    float m [2] = { -INFINITY, -INFINITY };
    float l [2] = { 0.0f, 0.0f };
    const float scale_log2 = a.scale * 1.4426950408889634f;
    const int32_t *table = a.block_table + (size_t) seq * a.max_blocks_per_seq;
    const char *k_base = (const char *) a.k + kv_head * a.head_stride_bytes + t * 16;
    const char *v_base = (const char *) a.v + kv_head * a.head_stride_bytes + t * 16;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    const int bt_mask = a.block_tokens - 1;

    //  Loads for the 16 tokens at t0: lane reads tokens t0 + g and t0 + g + 8
    auto load_rows = [&] (uint4 (*raw) [PC], const char *base, int t0) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int token = t0 + g + 8 * half;
            if (token < end) {
                int64_t offset = (int64_t) table [token >> log2_bt] * a.block_stride_bytes
                               + (int64_t) (token & bt_mask) * a.token_stride_bytes;
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
    load_rows (k_raw, k_base, start + warp * 16);
    for (int t0 = start + warp * 16; t0 < end; t0 += step) {
        load_rows (v_raw, v_base, t0);
        if (t0 + step < end)
            load_rows (k_next, k_base, t0 + step);     //  In flight while this tile computes
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
            for (int n = 0; n < NT; n++) {
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
#pragma unroll
        for (int half = 0; half < 2; half++)
#pragma unroll
            for (int p = 0; p < PC; p++)
                k_raw [half][p] = k_next [half][p];
    }
    //  Row sums over the quad; then merge warps through shared memory
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l [r] += __shfl_xor_sync (0xffffffffu, l [r], 1);
        l [r] += __shfl_xor_sync (0xffffffffu, l [r], 2);
    }
#pragma unroll
    for (int p = 0; p < PC; p++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int d = 8 * t + 32 * p + 2 * i;
            sm_acc [warp][g][d] = o [4 * p + i][0];
            sm_acc [warp][g][d + 1] = o [4 * p + i][1];
            sm_acc [warp][g + 8][d] = o [4 * p + i][2];
            sm_acc [warp][g + 8][d + 1] = o [4 * p + i][3];
        }
    }
    kvt_dev_decode_combine<T, D, S_WARPS> (sm_m, sm_l, sm_acc, m, l, warp, g, t, nheads, head0,
                                           a.heads, seq, split, splits, a.out, ws_out, ws_lse);
}

template <typename T, int D>
int
s_launch (const kvt_paged_attention_args_t *a, int split_len, int splits, cudaStream_t stream)
{
    int group = a->heads / a->kv_heads;
    int head_chunks = (group + 15) / 16;
    float *ws_out = (float *) a->workspace;
    float *ws_lse = ws_out? ws_out + (size_t) a->seqs * a->heads * splits * D: NULL;
    dim3 grid (splits, a->kv_heads * head_chunks, a->seqs);
    s_decode_kernel<T, D> <<<grid, S_WARPS * 32, 0, stream>>> (
        *a, split_len, splits, head_chunks, ws_out, ws_lse);
    if (splits > 1) {
        dim3 merge_grid (a->heads, a->seqs);
        kvt_decode_merge_kernel<T, D> <<<merge_grid, D, 0, stream>>> (a->out, a->heads, splits,
                                                                   ws_out, ws_lse);
    }
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  Decode CTAs that run at once on the current device
int
s_cta_slots (const kvt_paged_attention_args_t *a)
{
    int device, sm_count, per_sm = 0;
    if (cudaGetDevice (&device) != cudaSuccess
    ||  cudaDeviceGetAttribute (&sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return KVT_ECUDA;
    cudaError_t err;
    if (a->head_dim == 128)
        err = a->dtype == KVT_KDTYPE_BF16
            ? cudaOccupancyMaxActiveBlocksPerMultiprocessor (
                  &per_sm, s_decode_kernel<__nv_bfloat16, 128>, S_WARPS * 32, 0)
            : cudaOccupancyMaxActiveBlocksPerMultiprocessor (
                  &per_sm, s_decode_kernel<__half, 128>, S_WARPS * 32, 0);
    else
        err = a->dtype == KVT_KDTYPE_BF16
            ? cudaOccupancyMaxActiveBlocksPerMultiprocessor (
                  &per_sm, s_decode_kernel<__nv_bfloat16, 64>, S_WARPS * 32, 0)
            : cudaOccupancyMaxActiveBlocksPerMultiprocessor (
                  &per_sm, s_decode_kernel<__half, 64>, S_WARPS * 32, 0);
    if (err != cudaSuccess)
        return KVT_ECUDA;
    return sm_count * (per_sm > 0? per_sm: 1);
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
    int slots = s_cta_slots (args);
    if (slots < 0)
        return slots;
    return kvt_paged_attention_splits (args, slots);
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
    int splits = kvt_paged_attention_plan (args);
    if (splits < 0)
        return splits;
    int max_len = args->max_seq_len > 0? args->max_seq_len: 1;
    int split_len = (max_len + splits - 1) / splits;
    split_len = (split_len + S_SPLIT_ALIGN - 1) / S_SPLIT_ALIGN * S_SPLIT_ALIGN;
    splits = (max_len + split_len - 1) / split_len;
    if (splits > 1
    &&  (!args->workspace
    ||   args->workspace_bytes < kvt_paged_attention_workspace_bytes (args, splits)))
        return -EINVAL;
    bool bf16 = args->dtype == KVT_KDTYPE_BF16;
    if (args->head_dim == 128)
        return bf16? s_launch<__nv_bfloat16, 128> (args, split_len, splits, stream)
                   : s_launch<__half, 128> (args, split_len, splits, stream);
    else
        return bf16? s_launch<__nv_bfloat16, 64> (args, split_len, splits, stream)
                   : s_launch<__half, 64> (args, split_len, splits, stream);
}
