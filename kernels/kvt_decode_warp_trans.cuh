/*  =========================================================================
    kvt_decode_warp_trans - a decode warp's tile math with the tokens as the
    mma rows (S^T = K Q^T, O^T = V^T P^T)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The same interface as kvt_decode_warp_t (kvt_paged_attention_int.cuh),
    for up to 8 query heads a KV head: a tile's 16 tokens are the M of mma
    m16n8k16 and the heads its N, so S^T takes D / 16 mma instead of D / 8
    and O^T += V^T P^T D / 16 instead of D / 8; O^T is D / 16 fragments
    (4 D / 16 floats a lane instead of D / 2) and Q^T D / 8 registers
    instead of D / 4. Lane (g, t) loads the tile as kvt_dev_tile_registers
    does: chunks t + 4p of tokens g and g + 8.
    K as A: k-step 2p + h takes words 2h, 2h + 1 of chunk p (dims 8 (t +
    4p) + 4h + {0, 1} and + {2, 3}), so Q^T's B fragment of that step is
    head g's dims 8 (t + 4p) + 4h .. + 3. S^T's accumulators: token g, g + 8
    by heads 2t, 2t + 1. P^T as B: each 8x8 of P (tokens x heads) packed and
    transposed with movmatrix. V^T as A: V's 8x8 pieces (tokens g by the
    word i of chunk p) transposed with movmatrix give rows of dim
    8 ((g >> 1) + 4p) + 2i + (g & 1); O^T fragment 2p + j takes words 2j
    (rows g) and 2j + 1 (rows g + 8).
    v4 and v5 use it where kvt_decode_plan_trans says so (the figures are in
    kvt_paged_attention.cu's history); test_gpu_paged_attention checks both
    against the CPU twin, and v5's forced splits against v4 bit for bit.
@end
*/

#ifndef KVT_DECODE_WARP_TRANS_CUH_INCLUDED
#define KVT_DECODE_WARP_TRANS_CUH_INCLUDED

#include "kvt_paged_attention_int.cuh"

template <typename T, int D>
struct kvt_decode_warp_trans_t {
    static constexpr int PC = D / 32;
    uint32_t qb [D / 16][2];            //  Q^T B fragments, k-step 2p + h
    float o [D / 16][4];                //  O^T: dims x heads 2t, 2t + 1
    float m [2];                        //  Heads 2t, 2t + 1: running max (log2 units)
    float l [2];                        //  Their sums over this lane's tokens
    float scale_log2;

    //  The dim of O^T row g of word i of chunk p
    static __device__ __forceinline__ int
    dim_of (int g, int p, int i)
    {
        return 8 * ((g >> 1) + 4 * p) + 2 * i + (g & 1);
    }

    __device__ __forceinline__ void
    begin (const kvt_paged_attention_args_t &a, const kvt_decode_cta_t &c)
    {
        const T *row = (const T *) a.q + ((size_t) c.seq * a.heads + c.head0 + c.g) * D;
        bool valid = c.g < c.nheads;
#pragma unroll
        for (int p = 0; p < PC; p++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int d0 = 8 * (c.t + 4 * p) + 4 * h;
                qb [2 * p + h][0] = valid? *(const uint32_t *) (row + d0): 0u;
                qb [2 * p + h][1] = valid? *(const uint32_t *) (row + d0 + 2): 0u;
            }
        kvt_decode_state_reset (o, m, l, scale_log2, a.scale);
    }

    __device__ __forceinline__ void
    tile (const uint4 (&k_raw) [2][D / 32], const uint4 (&v_raw) [2][D / 32], int t0, int end,
          int t)
    {
        (void) t;
        const int g = (threadIdx.x & 31) >> 2;
        //  S^T = K Q^T, even and odd k-steps as two chains
        float s [4] = { 0.0f, 0.0f, 0.0f, 0.0f }, s_odd [4] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
        for (int p = 0; p < PC; p++) {
            const uint32_t even [4] = { k_raw [0][p].x, k_raw [1][p].x, k_raw [0][p].y,
                                        k_raw [1][p].y };
            const uint32_t odd [4] = { k_raw [0][p].z, k_raw [1][p].z, k_raw [0][p].w,
                                       k_raw [1][p].w };
            kvt_dev_mma<T> (s, even, qb [2 * p][0], qb [2 * p][1]);
            kvt_dev_mma<T> (s_odd, odd, qb [2 * p + 1][0], qb [2 * p + 1][1]);
        }
        //  Online softmax per head (column): tokens g, g + 8 here, the rest
        //  over the lanes of the same t
        bool first = t0 + g < end, second = t0 + g + 8 < end;
        float v [4];
        v [0] = first? (s [0] + s_odd [0]) * scale_log2: -INFINITY;
        v [1] = first? (s [1] + s_odd [1]) * scale_log2: -INFINITY;
        v [2] = second? (s [2] + s_odd [2]) * scale_log2: -INFINITY;
        v [3] = second? (s [3] + s_odd [3]) * scale_log2: -INFINITY;
        float alpha [2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float top = fmaxf (v [e], v [e + 2]);
#pragma unroll
            for (int offset = 4; offset < 32; offset <<= 1)
                top = fmaxf (top, __shfl_xor_sync (0xffffffffu, top, offset));
            float m_new = fmaxf (m [e], top);      //  Finite: token t0 is in every tile
            alpha [e] = kvt_dev_exp2 (m [e] - m_new);
            m [e] = m_new;
            v [e] = kvt_dev_exp2 (v [e] - m_new);
            v [e + 2] = kvt_dev_exp2 (v [e + 2] - m_new);
            l [e] = l [e] * alpha [e] + v [e] + v [e + 2];
        }
        if (alpha [0] != 1.0f || alpha [1] != 1.0f) {
#pragma unroll
            for (int n = 0; n < D / 16; n++) {
                o [n][0] *= alpha [0];
                o [n][1] *= alpha [1];
                o [n][2] *= alpha [0];
                o [n][3] *= alpha [1];
            }
        }
        //  P^T as B: tokens 2t, 2t + 1 (then + 8) of head g
        uint32_t pb0 = kvt_dev_movmatrix_trans (kvt_dev_pack<T> (v [0], v [1]));
        uint32_t pb1 = kvt_dev_movmatrix_trans (kvt_dev_pack<T> (v [2], v [3]));
        //  O^T += V^T P^T
#pragma unroll
        for (int p = 0; p < PC; p++) {
            uint32_t w0 [4], w1 [4];
            kvt_dev_words (v_raw [0][p], w0);
            kvt_dev_words (v_raw [1][p], w1);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const uint32_t av [4] = { kvt_dev_movmatrix_trans (w0 [2 * j]),
                                          kvt_dev_movmatrix_trans (w0 [2 * j + 1]),
                                          kvt_dev_movmatrix_trans (w1 [2 * j]),
                                          kvt_dev_movmatrix_trans (w1 [2 * j + 1]) };
                kvt_dev_mma<T> (o [2 * p + j], av, pb0, pb1);
            }
        }
    }

    //  What the CTA's merge reads of this warp, as kvt_decode_warp_t::store
    //  writes it: each head's sum over the lanes of its column, head h's
    //  max and sum in m_row [h], l_row [h] (from the lanes of g = 0), its
    //  output at acc [h * (D + 1) + dim] for the heads below nheads
    __device__ __forceinline__ void
    store (const kvt_decode_cta_t &c, float *m_row, float *l_row, float *acc)
    {
#pragma unroll
        for (int e = 0; e < 2; e++)
#pragma unroll
            for (int offset = 4; offset < 32; offset <<= 1)
                l [e] += __shfl_xor_sync (0xffffffffu, l [e], offset);
        if (c.g == 0) {
            m_row [2 * c.t] = m [0];
            m_row [2 * c.t + 1] = m [1];
            l_row [2 * c.t] = l [0];
            l_row [2 * c.t + 1] = l [1];
        }
        const bool first = 2 * c.t < c.nheads, second = 2 * c.t + 1 < c.nheads;
#pragma unroll
        for (int p = 0; p < PC; p++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                int d0 = dim_of (c.g, p, 2 * j), d1 = dim_of (c.g, p, 2 * j + 1);
                if (first) {
                    acc [(2 * c.t) * (D + 1) + d0] = o [2 * p + j][0];
                    acc [(2 * c.t) * (D + 1) + d1] = o [2 * p + j][2];
                }
                if (second) {
                    acc [(2 * c.t + 1) * (D + 1) + d0] = o [2 * p + j][1];
                    acc [(2 * c.t + 1) * (D + 1) + d1] = o [2 * p + j][3];
                }
            }
    }

    //  store () into slot 'slot', then the merge of the CTA's WARPS
    //  computing warps and its write (kvt_dev_decode_combine, which stores
    //  the row stats again from lane (g, 0): head g's, fetched here)
    template <int WARPS>
    __device__ __forceinline__ void
    finish (const kvt_paged_attention_args_t &a, const kvt_decode_cta_t &c, int slot, int splits,
            float (*sm_m) [16], float (*sm_l) [16], float (*sm_acc) [16][D + 1],
            float *ws_out, float *ws_lse)
    {
        store (c, sm_m [slot], sm_l [slot], &sm_acc [slot][0][0]);
        int from = c.g >> 1;                //  A lane whose t is head g's pair
        float m0 = __shfl_sync (0xffffffffu, m [0], from);
        float m1 = __shfl_sync (0xffffffffu, m [1], from);
        float l0 = __shfl_sync (0xffffffffu, l [0], from);
        float l1 = __shfl_sync (0xffffffffu, l [1], from);
        const float mh [2] = { (c.g & 1)? m1: m0, -INFINITY };
        const float lh [2] = { (c.g & 1)? l1: l0, 0.0f };
        kvt_dev_decode_combine<T, D, WARPS> (sm_m, sm_l, sm_acc, mh, lh, slot, c.g, c.t,
                                             c.nheads, c.head0, a.heads, c.seq, c.split,
                                             splits, a.out, ws_out, ws_lse);
    }
};

#endif
