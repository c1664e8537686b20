/*  =========================================================================
    kvt_paged_attention_int - the decode kernels' shared warp math

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    What v2 (kvt_paged_attention.cu), v3 and v4 (kvt_paged_attention_bulk.cu)
    have in common: where a CTA and a lane sit, a warp's running softmax
    state with its per-tile math on mma.sync, and the CTA's merge. Force-
    inlined; the kernels differ only in how a tile's K and V reach the
    registers. For this folder only.
@end
*/

#ifndef KVT_PAGED_ATTENTION_INT_CUH_INCLUDED
#define KVT_PAGED_ATTENTION_INT_CUH_INCLUDED

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include "kvt_paged_attention.cuh"
#include "kvt_device.cuh"
#include "kvt_decode_merge.cuh"

#define KVT_DECODE_WARPS 4          //  Warps a CTA of v2 and v3

//  --------------------------------------------------------------------------
//  Every decode kernel: grid = (splits, kv_heads * head_chunks, seqs).
//  Each warp takes 16-token tiles. Lane (g = lane / 4, t = lane % 4) holds
//  16-byte chunks t + 4p (p < D / 32) of tokens g and g + 8 for K and V.
//  S = Q K^T runs on mma m16n8k16 with the query heads as the 16 rows and
//  head_dim permuted so each chunk is a B fragment as it stands: kstep
//  2p + h takes words 2h, 2h + 1 of chunk p. For O += P V, V's 8x8 pieces
//  (tokens x 8 permuted dims) are transposed in registers with movmatrix
//  into B fragments; P comes straight from S's accumulators. Output column
//  pair of piece (p, i), lane t: d = 8t + 32p + 2i. The kernels differ
//  only in how a tile's chunks reach the registers (v2 in
//  kvt_paged_attention.cu, v3 and v4 in kvt_paged_attention_bulk.cu).
//  v4 and v5 take the same chunks into kvt_decode_warp_trans_t, the tokens
//  as the mma rows, where a KV head has at most 8 query heads
//  (kvt_decode_plan_trans).

//  What one CTA works on, and where this lane sits in it
struct kvt_decode_cta_t {
    int split, kv_head, seq, head0, nheads, start, end, warp, lane, g, t;
};

//  The work of unit 'unit' (KV head x head chunk) of sequence 'seq',
//  tokens [start, min (its length, stop)), as split 'split'
__device__ __forceinline__ kvt_decode_cta_t
kvt_decode_cta_of (const kvt_paged_attention_args_t &a, int unit, int head_chunks, int seq,
                   int split, int start, int stop)
{
    kvt_decode_cta_t c;
    c.split = split;
    c.kv_head = unit / head_chunks;
    int chunk = unit % head_chunks;
    c.seq = seq;
    int group = a.heads / a.kv_heads;
    c.head0 = c.kv_head * group + chunk * 16;
    c.nheads = min (16, group - chunk * 16);
    c.start = start;
    c.end = min (a.seq_lens [c.seq], stop);
    c.lane = threadIdx.x & 31;
    c.warp = threadIdx.x >> 5;
    c.g = c.lane >> 2;
    c.t = c.lane & 3;
    return c;
}

//  This CTA's: grid = (splits, units, seqs)
__device__ __forceinline__ kvt_decode_cta_t
kvt_decode_cta (const kvt_paged_attention_args_t &a, int split_len, int head_chunks)
{
    int split = blockIdx.x;
    int start = split * split_len;
    return kvt_decode_cta_of (a, (int) blockIdx.y, head_chunks, (int) blockIdx.z, split, start,
                              start + split_len);
}

//  A warp's softmax state at the start of a unit: no output, max -inf, sum
//  0, and the scale in log2 units (both tile maths: NT output fragments)
template <int NT>
__device__ __forceinline__ void
kvt_decode_state_reset (float (&o) [NT][4], float (&m) [2], float (&l) [2], float &scale_log2,
                        float scale)
{
#pragma unroll
    for (int n = 0; n < NT; n++)
        o [n][0] = o [n][1] = o [n][2] = o [n][3] = 0.0f;
    m [0] = m [1] = -INFINITY;
    l [0] = l [1] = 0.0f;
    scale_log2 = scale * 1.4426950408889634f;
}

//  A warp's running state: Q as A fragments (rows are heads g and g + 8,
//  columns permuted), the unnormalised output, row max and row sum
template <typename T, int D>
struct kvt_decode_warp_t {
    uint32_t qf [D / 16][4];
    float o [D / 8][4];
    float m [2];
    float l [2];
    float scale_log2;

    __device__ __forceinline__ void
    begin (const kvt_paged_attention_args_t &a, const kvt_decode_cta_t &c)
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
        kvt_decode_state_reset (o, m, l, scale_log2, a.scale);
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
        float alpha [2];
        kvt_dev_tile_max (s, scale_log2, t0, end, t, m, l, alpha);
#pragma unroll
        for (int half = 0; half < 2; half++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = kvt_dev_exp2 (s [half][e] - m [e >> 1]);
                s [half][e] = p;
                l [e >> 1] += p;
            }
        }
        kvt_dev_rescale_rows<D / 8> (o, alpha);
        uint32_t pa [4];
        kvt_dev_pack_probs<T> (s, pa);
        //  O += P V over 8x8 pieces (p, i) of V
#pragma unroll
        for (int p = 0; p < PC; p++) {
            uint32_t w0 [4], w1 [4];
            kvt_dev_words (v_raw [0][p], w0);
            kvt_dev_words (v_raw [1][p], w1);
#pragma unroll
            for (int i = 0; i < 4; i++)
                kvt_dev_mma<T> (o [4 * p + i], pa, kvt_dev_movmatrix_trans (w0 [i]),
                                kvt_dev_movmatrix_trans (w1 [i]));
        }
    }

    //  What the CTA's merge reads of this warp (v5's, kvt_paged_attention_
    //  balanced.cu): the row sums over the quad, then head h's row max and
    //  sum in m_row [h], l_row [h] and its unnormalised output at
    //  acc [h * (D + 1) + d], for the heads below nheads. Once a segment
    //  (it sums l in place).
    __device__ __forceinline__ void
    store (const kvt_decode_cta_t &c, float *m_row, float *l_row, float *acc)
    {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l [r] += __shfl_xor_sync (0xffffffffu, l [r], 1);
            l [r] += __shfl_xor_sync (0xffffffffu, l [r], 2);
        }
        if (c.t == 0) {
            m_row [c.g] = m [0];
            m_row [c.g + 8] = m [1];
            l_row [c.g] = l [0];
            l_row [c.g + 8] = l [1];
        }
#pragma unroll
        for (int p = 0; p < D / 32; p++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int d = 8 * c.t + 32 * p + 2 * i;
                if (c.g < c.nheads) {
                    acc [c.g * (D + 1) + d] = o [4 * p + i][0];
                    acc [c.g * (D + 1) + d + 1] = o [4 * p + i][1];
                }
                if (c.g + 8 < c.nheads) {
                    acc [(c.g + 8) * (D + 1) + d] = o [4 * p + i][2];
                    acc [(c.g + 8) * (D + 1) + d + 1] = o [4 * p + i][3];
                }
            }
        }
    }

    //  Row sums over the quad, the warp's output into sm_acc [slot] (all 16
    //  rows: store () writes only those below nheads, which would change
    //  v2's, v3's and v4's code, proven on the card as it is), then the
    //  merge of the CTA's WARPS computing warps and its write
    template <int WARPS>
    __device__ __forceinline__ void
    finish (const kvt_paged_attention_args_t &a, const kvt_decode_cta_t &c, int slot, int splits,
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
kvt_decode_token_offset (const kvt_paged_attention_args_t &a, const int32_t *table, int token,
                int log2_bt, int bt_mask)
{
    return (int64_t) table [token >> log2_bt] * a.block_stride_bytes
         + (int64_t) (token & bt_mask) * a.token_stride_bytes;
}

//  A decode kernel, as the launcher takes it
typedef void (*kvt_decode_kernel_t) (const kvt_paged_attention_args_t, int, int, int, float *,
                                     float *);

//  v3 (version 2) or v4 (version 3) for the dtype and head_dim: the kernel,
//  its dynamic shared memory and threads a CTA (kvt_paged_attention_bulk.cu)
kvt_decode_kernel_t
    kvt_decode_bulk_kernel (bool bf16, int head_dim, int version, bool trans, int *smem,
                            int *threads);

//  v5 (kvt_paged_attention_balanced.cu): the CTAs it runs on the current
//  device (one a SM) or a negative code; the workspace it needs with
//  'ctas' CTAs; and the launch of it and its merge on 'stream' (0, -EINVAL
//  for a short workspace, or KVT_ECUDA). With 'splits' > 0 (forced, of
//  'split_len' tokens, a multiple of 64) it computes v4's split rows in v4's
//  workspace and runs v4's merge; with 0 it cuts the batch itself.
int
    kvt_decode_balanced_slots (const kvt_paged_attention_args_t *a);
size_t
    kvt_decode_balanced_workspace (const kvt_paged_attention_args_t *a, int ctas);
int
    kvt_decode_balanced (const kvt_paged_attention_args_t *a, int split_len, int splits,
                         cudaStream_t stream);

#endif
