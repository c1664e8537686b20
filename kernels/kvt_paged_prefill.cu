/*  =========================================================================
    kvt_paged_prefill - causal prefill attention over a paged KV cache

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Versions (args->variant selects one; all are checked by
    test_gpu_paged_prefill and timed by `bench kernels --prefill-variants`):
    v1  (variant 1) FlashAttention-2 shape on mma.sync m16n8k16: 8 warps x
        16 query rows, Q in registers, 64-key K/V tiles through cp.async
        into padded shared memory, two deep. H100: 220 / 217 TFLOP/s causal
        at 1x8K / 4x4K, 0.69 / 0.67x PyTorch flash (FA2).
    v2  (variants 2, 3) FA2's warp shape: each warp owns two 16-row m-tiles
        (every ldmatrix'd K/V fragment feeds two MMAs), Q in shared memory;
        tiles that need no causal mask run code without masking (ncu/SASS
        of the masked-everywhere version: ~300 of 1175 instructions per
        tile were mask ISETP/FSEL/PLOP3), O rescaled only when a row max
        moved. 4 warps x 32 rows (2 CTAs/SM) 250 / 256, 8 warps x 32 rows
        (1 CTA/SM) 269 / 268 TFLOP/s: still issue/latency bound with 2
        warps per scheduler at 255 registers (tensor pipe 36% busy in ncu).
    v3  (variants 5, 4) wgmma, in kvt_paged_prefill_wgmma.cu: BN = 128 keys per tile 351 / 340
        TFLOP/s on the H100 (1.09 / 1.05x flash; the default until session
        18), BN = 64 320 / 306. Needs the sm_90a build; elsewhere they run v2
        with 8 warps, as do variants 0, 6 and 7.
    v4  (variants 7, 6) v3 warp-specialized, in the same file: a producer
        warpgroup loads K/V into three stages of 128 keys (variant 7, the
        default until session 26) or four of 64 (6) and hands them over
        through mbarriers;
        the two consumer warpgroups compute as v3 does, taking turns to
        issue their GEMMs (FA3's ping-pong). H200, session 19: 435-439 /
        414-417 TFLOP/s at 1x8K / 4x4K, 1.08x the session-18 v4, 1.22x
        v3, about 1.25x flash and 0.71x cuDNN in the same runs; with two
        stages (the producer one tile ahead) it was 0.77x v3.
    v5  (variant 0, the default) v4 whose producer loads whole tiles by TMA
        (one 4-D box per page and head_dim half, counted on the stage's
        mbarrier in bytes) and the sequence's last tile by cp.async with
        zeros; pages under 16 tokens, or strides the tensor-map encoder
        refuses, run v4. H200, session 26: 473 / 442 TFLOP/s at 1x8K /
        4x4K, 1.08 / 1.07x v4 and 0.79 / 0.75x cuDNN in the same calls.
    Tried on the way to v3 (numbers in tools/bench/RESULTS.md): wgmma with
    S waited before the softmax (205, 1 CTA/SM), the same at 2 CTAs/SM
    (233, ptxas serializes wgmma for lack of registers), next tile's S
    issued before this tile's softmax (292; the first version wrote the
    softmax into an S accumulator array and ptxas serialized the pipeline,
    C7515).
@end
*/

#include "kvt_paged_prefill_int.cuh"

#ifndef S_WARPS
#   define S_WARPS 8                //  Warps per CTA
#endif
#define S_BM     (16 * S_WARPS)     //  Query rows per CTA
#ifndef S_BN
#   define S_BN  64                 //  Keys per tile
#endif
#define S_ROW    (S_D + 8)          //  Padded shared-memory row, in elements
#define S_SMEM_BYTES (2 * 2 * S_BN * S_ROW * 2)   //  K and V, two buffers each

namespace {

//  grid = (query tiles, heads, seqs); S_WARPS * 32 threads
template <typename T>
__global__ void __launch_bounds__ (S_WARPS * 32)
s_prefill_kernel (const kvt_paged_prefill_args_t a)
{
    extern __shared__ __align__ (16) unsigned char smem [];
    T *sk = (T *) smem;                             //  [2][S_BN][S_ROW]
    T *sv = sk + 2 * S_BN * S_ROW;                  //  [2][S_BN][S_ROW]

    const kvt_prefill_cta_t cta = kvt_prefill_cta ();   //  Heaviest first
    const int seq = cta.seq;
    const int head = cta.head;
    const int q_tile = cta.q_tile;
    const int q_first = a.q_start [seq];
    const int q_len = a.q_start [seq + 1] - q_first;
    if (q_tile * S_BM >= q_len)
        return;
    const int len = a.seq_lens [seq];
    const int cached = len - q_len;
    const int kv_head = head / (a.heads / a.kv_heads);
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;
    const int t = lane & 3;
    const int r0 = q_tile * S_BM + warp * 16;       //  First query row of this warp

    //  Q fragments for the whole head_dim, kept for every tile
    uint32_t qf [S_D / 16][4];
#pragma unroll
    for (int ks = 0; ks < S_D / 16; ks++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int row = r0 + g + 8 * (i & 1);
            int col = ks * 16 + 2 * t + 8 * (i >> 1);
            qf [ks][i] = row < q_len
                ? *(const uint32_t *) ((const T *) a.q
                                       + ((size_t) (q_first + row) * a.heads + head) * S_D + col)
                : 0u;
        }
    }
    const int kv_end = min (len, cached + min (q_len, (q_tile + 1) * S_BM));
    const int tiles = (kv_end + S_BN - 1) / S_BN;
    const kvt_prefill_pages_t pages = kvt_prefill_pages (a, seq, kv_head);

    auto load_tile = [&] (int tile, int buffer) {
        for (int c = threadIdx.x; c < S_BN * (S_D / 8); c += S_WARPS * 32) {
            int row = c / (S_D / 8);
            int chunk = c % (S_D / 8);
            int token = tile * S_BN + row;
            kvt_prefill_copy_row_chunk (a, pages, token, kv_end, chunk * 16,
                                        sk + (buffer * S_BN + row) * S_ROW + chunk * 8,
                                        sv + (buffer * S_BN + row) * S_ROW + chunk * 8);
        }
        asm volatile ("cp.async.commit_group;");
    };

    float o [S_D / 8][4];
#pragma unroll
    for (int i = 0; i < S_D / 8; i++)
        o [i][0] = o [i][1] = o [i][2] = o [i][3] = 0.0f;
    float m [2] = { -INFINITY, -INFINITY };
    float l [2] = { 0.0f, 0.0f };                   //  Per-lane partial row sums
    const float scale_log2 = a.scale * 1.4426950408889634f;
    const int pos [2] = { cached + r0 + g, cached + r0 + g + 8 };

    load_tile (0, 0);
    for (int tile = 0; tile < tiles; tile++) {
        int buffer = tile & 1;
        if (tile + 1 < tiles) {
            load_tile (tile + 1, buffer ^ 1);
            asm volatile ("cp.async.wait_group 1;" ::: "memory");
        }
        else
            asm volatile ("cp.async.wait_group 0;" ::: "memory");
        __syncthreads ();
        const T *kt = sk + buffer * S_BN * S_ROW;
        const T *vt = sv + buffer * S_BN * S_ROW;

        //  S = Q K^T for 64 keys: 8 n-tiles of 8
        float s [S_BN / 8][4];
#pragma unroll
        for (int i = 0; i < S_BN / 8; i++)
            s [i][0] = s [i][1] = s [i][2] = s [i][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < S_D / 16; ks++) {
#pragma unroll
            for (int np = 0; np < S_BN / 16; np++) {
                uint32_t b [4];
                int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                int col = ks * 16 + ((lane >> 3) & 1) * 8;
                kvt_dev_ldsm_x4 (b, kt + row * S_ROW + col);
                kvt_dev_mma<T> (s [2 * np], qf [ks], b [0], b [1]);
                kvt_dev_mma<T> (s [2 * np + 1], qf [ks], b [2], b [3]);
            }
        }
        //  Mask (only tiles that cross the diagonal or the end), online
        //  softmax in the log2 domain: p = 2^(s * scale_log2 - m)
        const bool masked = tile * S_BN + S_BN - 1 > pos [0] || tile * S_BN + S_BN > len;
        float top [2] = { -INFINITY, -INFINITY };
#pragma unroll
        for (int nt = 0; nt < S_BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int h = e >> 1;
                if (masked) {
                    int token = tile * S_BN + nt * 8 + 2 * t + (e & 1);
                    if (token > pos [h] || token >= len)
                        s [nt][e] = -INFINITY;
                }
                top [h] = fmaxf (top [h], s [nt][e]);
            }
        }
        float alpha [2], m_scaled [2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            top [h] = fmaxf (top [h], __shfl_xor_sync (0xffffffffu, top [h], 1));
            top [h] = fmaxf (top [h], __shfl_xor_sync (0xffffffffu, top [h], 2));
            float m_new = fmaxf (m [h], top [h] * scale_log2);
            alpha [h] = kvt_dev_exp2 (m [h] - m_new);     //  0 on the first tile
            m [h] = m_new;
            m_scaled [h] = -m_new;
            l [h] *= alpha [h];
        }
#pragma unroll
        for (int nt = 0; nt < S_BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = kvt_dev_exp2 (fmaf (s [nt][e], scale_log2, m_scaled [e >> 1]));
                s [nt][e] = p;
                l [e >> 1] += p;
            }
        }
#pragma unroll
        for (int dt = 0; dt < S_D / 8; dt++) {
            o [dt][0] *= alpha [0];
            o [dt][1] *= alpha [0];
            o [dt][2] *= alpha [1];
            o [dt][3] *= alpha [1];
        }
        //  O += P V: P from the S accumulators, V through ldmatrix.trans
#pragma unroll
        for (int kk = 0; kk < S_BN / 16; kk++) {
            uint32_t pa [4];
            pa [0] = kvt_dev_pack<T> (s [2 * kk][0], s [2 * kk][1]);
            pa [1] = kvt_dev_pack<T> (s [2 * kk][2], s [2 * kk][3]);
            pa [2] = kvt_dev_pack<T> (s [2 * kk + 1][0], s [2 * kk + 1][1]);
            pa [3] = kvt_dev_pack<T> (s [2 * kk + 1][2], s [2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < S_D / 16; dp++) {
                uint32_t b [4];
                int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                int col = dp * 16 + (lane >> 4) * 8;
                kvt_dev_ldsm_x4_trans (b, vt + row * S_ROW + col);
                kvt_dev_mma<T> (o [2 * dp], pa, b [0], b [1]);
                kvt_dev_mma<T> (o [2 * dp + 1], pa, b [2], b [3]);
            }
        }
        __syncthreads ();                           //  Buffer is free for tile + 2
    }
    //  Normalize and store
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l [h] += __shfl_xor_sync (0xffffffffu, l [h], 1);
        l [h] += __shfl_xor_sync (0xffffffffu, l [h], 2);
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int row = r0 + g + 8 * h;
        if (row >= q_len)
            continue;
        float inv = l [h] > 0.0f? 1.0f / l [h]: 0.0f;
        T *out = (T *) a.out + ((size_t) (q_first + row) * a.heads + head) * S_D;
#pragma unroll
        for (int dt = 0; dt < S_D / 8; dt++)
            *(uint32_t *) (out + dt * 8 + 2 * t) = kvt_dev_pack<T> (o [dt][2 * h] * inv,
                                                              o [dt][2 * h + 1] * inv);
    }
}

template <typename T>
int
s_launch (const kvt_paged_prefill_args_t *a, cudaStream_t stream)
{
    static bool configured = false;                 //  Idempotent; a race only repeats it
    if (!configured) {
        if (cudaFuncSetAttribute (s_prefill_kernel<T>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  S_SMEM_BYTES) != cudaSuccess)
            return KVT_ECUDA;
        configured = true;
    }
    dim3 grid ((a->max_q_len + S_BM - 1) / S_BM, a->heads, a->seqs);
    s_prefill_kernel<T> <<<grid, S_WARPS * 32, S_SMEM_BYTES, stream>>> (*a);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  --------------------------------------------------------------------------
//  v2: FA2's warp shape. A CTA of WARPS warps takes 32 * WARPS query rows;
//  each warp owns two 16-row m-tiles, so every K/V fragment that ldmatrix
//  brings from shared memory feeds two MMAs (one per m-tile). Q waits in
//  shared memory (the registers hold O for 32 rows) and its A fragments are
//  reloaded per k-step. BN-key K/V tiles, two deep, through cp.async. A
//  warp whose rows all precede a tile's first key skips the tile.
//  grid = (query tiles, heads, seqs).

template <int WARPS, int BN>
constexpr int
s_v2_smem_bytes ()
{
    return (32 * WARPS + 4 * BN) * S_ROW * 2;
}

template <typename T, int WARPS, int BN>
__global__ void __launch_bounds__ (WARPS * 32, 8 / WARPS)
s_prefill2_kernel (const kvt_paged_prefill_args_t a)
{
    constexpr int BM = 32 * WARPS;                  //  Query rows per CTA
    constexpr int NT = BN / 8;                      //  S n-tiles per m-tile
    extern __shared__ __align__ (16) unsigned char smem [];
    T *sq = (T *) smem;                             //  [BM][S_ROW]
    T *sk = sq + BM * S_ROW;                        //  [2][BN][S_ROW]
    T *sv = sk + 2 * BN * S_ROW;                    //  [2][BN][S_ROW]

    const kvt_prefill_cta_t cta = kvt_prefill_cta ();   //  Heaviest first
    const int seq = cta.seq;
    const int head = cta.head;
    const int q_tile = cta.q_tile;
    const int q_first = a.q_start [seq];
    const int q_len = a.q_start [seq + 1] - q_first;
    if (q_tile * BM >= q_len)
        return;
    const int len = a.seq_lens [seq];
    const int cached = len - q_len;
    const int kv_head = head / (a.heads / a.kv_heads);
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;
    const int t = lane & 3;
    const int w0 = warp * 32;                       //  First row of this warp in the tile
    const int r0 = q_tile * BM + w0;                //  Its first query row

    //  Q tile into shared memory (rows past q_len are zeros)
    for (int c = threadIdx.x; c < BM * (S_D / 8); c += WARPS * 32) {
        int row = c / (S_D / 8);
        int chunk = c % (S_D / 8);
        int q_row = q_tile * BM + row;
        T *dq = sq + row * S_ROW + chunk * 8;
        if (q_row < q_len)
            kvt_dev_cp_async16 (dq, (const T *) a.q
                              + ((size_t) (q_first + q_row) * a.heads + head) * S_D + chunk * 8);
        else
            *(uint4 *) dq = make_uint4 (0, 0, 0, 0);
    }
    const int kv_end = min (len, cached + min (q_len, (q_tile + 1) * BM));
    const int tiles = (kv_end + BN - 1) / BN;
    const kvt_prefill_pages_t pages = kvt_prefill_pages (a, seq, kv_head);

    auto load_chunk = [&] (int tile, int buffer, int c) {
        int row = c / (S_D / 8);
        int chunk = c % (S_D / 8);
        int token = tile * BN + row;
        kvt_prefill_copy_row_chunk (a, pages, token, kv_end, chunk * 16,
                                    sk + (buffer * BN + row) * S_ROW + chunk * 8,
                                    sv + (buffer * BN + row) * S_ROW + chunk * 8);
    };
    auto load_tile = [&] (int tile, int buffer) {
#pragma unroll 1
        for (int c = 0; c < BN * (S_D / 8); c += WARPS * 32)
            load_chunk (tile, buffer, c + threadIdx.x);
        asm volatile ("cp.async.commit_group;");
    };

    float o [2][S_D / 8][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int i = 0; i < S_D / 8; i++)
            o [mt][i][0] = o [mt][i][1] = o [mt][i][2] = o [mt][i][3] = 0.0f;
    float m [2][2] = { { -INFINITY, -INFINITY }, { -INFINITY, -INFINITY } };
    float l [2][2] = { { 0.0f, 0.0f }, { 0.0f, 0.0f } };
    const float scale_log2 = a.scale * 1.4426950408889634f;
    const int pos0 = cached + r0 + g;               //  Position of row g of m-tile 0

    load_tile (0, 0);                               //  Same group as Q
    for (int tile = 0; tile < tiles; tile++) {
        int buffer = tile & 1;
        if (tile + 1 < tiles) {
            load_tile (tile + 1, buffer ^ 1);
            asm volatile ("cp.async.wait_group 1;" ::: "memory");
        }
        else
            asm volatile ("cp.async.wait_group 0;" ::: "memory");
        __syncthreads ();
        const T *kt = sk + buffer * BN * S_ROW;
        const T *vt = sv + buffer * BN * S_ROW;
        //  One tile for this warp; MASK: some key of it lies past some row's
        //  position or past the end (tiles without get code without masking)
        auto process = [&] (auto mask_tag) {
            constexpr bool MASK = decltype (mask_tag)::value;
            float s [2][NT][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int i = 0; i < NT; i++)
                    s [mt][i][0] = s [mt][i][1] = s [mt][i][2] = s [mt][i][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < S_D / 16; ks++) {
                uint32_t qa [2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
                    kvt_dev_ldsm_x4 (qa [mt], sq + (w0 + mt * 16 + (lane & 15)) * S_ROW
                                        + ks * 16 + (lane >> 4) * 8);
#pragma unroll
                for (int np = 0; np < BN / 16; np++) {
                    uint32_t b [4];
                    int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                    int col = ks * 16 + ((lane >> 3) & 1) * 8;
                    kvt_dev_ldsm_x4 (b, kt + row * S_ROW + col);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        kvt_dev_mma<T> (s [mt][2 * np], qa [mt], b [0], b [1]);
                        kvt_dev_mma<T> (s [mt][2 * np + 1], qa [mt], b [2], b [3]);
                    }
                }
            }
            uint32_t pa [2][BN / 16][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int pos [2] = { pos0 + 16 * mt, pos0 + 16 * mt + 8 };
                const bool masked = MASK && (tile * BN + BN - 1 > cached + r0 + 16 * mt
                                             || tile * BN + BN > len);
                float top [2] = { -INFINITY, -INFINITY };
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int h = e >> 1;
                        if (masked) {
                            int token = tile * BN + nt * 8 + 2 * t + (e & 1);
                            if (token > pos [h] || token >= len)
                                s [mt][nt][e] = -INFINITY;
                        }
                        top [h] = fmaxf (top [h], s [mt][nt][e]);
                    }
                }
                float alpha [2], m_scaled [2];
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    top [h] = fmaxf (top [h], __shfl_xor_sync (0xffffffffu, top [h], 1));
                    top [h] = fmaxf (top [h], __shfl_xor_sync (0xffffffffu, top [h], 2));
                    float m_new = fmaxf (m [mt][h], top [h] * scale_log2);
                    //  A row with no key yet (m_new = -inf) keeps alpha 1, p 0
                    alpha [h] = m_new == -INFINITY? 1.0f: kvt_dev_exp2 (m [mt][h] - m_new);
                    m [mt][h] = m_new;
                    m_scaled [h] = m_new == -INFINITY? 0.0f: -m_new;
                    l [mt][h] *= alpha [h];
                }
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float p = kvt_dev_exp2 (fmaf (s [mt][nt][e], scale_log2, m_scaled [e >> 1]));
                        s [mt][nt][e] = p;
                        l [mt][e >> 1] += p;
                    }
                }
                //  Rescale O only when some row's max moved (warp-uniform branch)
                if (__any_sync (0xffffffffu, alpha [0] != 1.0f || alpha [1] != 1.0f)) {
#pragma unroll
                    for (int dt = 0; dt < S_D / 8; dt++) {
                        o [mt][dt][0] *= alpha [0];
                        o [mt][dt][1] *= alpha [0];
                        o [mt][dt][2] *= alpha [1];
                        o [mt][dt][3] *= alpha [1];
                    }
                }
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++) {
                    pa [mt][kk][0] = kvt_dev_pack<T> (s [mt][2 * kk][0], s [mt][2 * kk][1]);
                    pa [mt][kk][1] = kvt_dev_pack<T> (s [mt][2 * kk][2], s [mt][2 * kk][3]);
                    pa [mt][kk][2] = kvt_dev_pack<T> (s [mt][2 * kk + 1][0], s [mt][2 * kk + 1][1]);
                    pa [mt][kk][3] = kvt_dev_pack<T> (s [mt][2 * kk + 1][2], s [mt][2 * kk + 1][3]);
                }
            }
            //  O += P V: one V fragment for both m-tiles
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) {
#pragma unroll
                for (int dp = 0; dp < S_D / 16; dp++) {
                    uint32_t b [4];
                    int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    int col = dp * 16 + (lane >> 4) * 8;
                    kvt_dev_ldsm_x4_trans (b, vt + row * S_ROW + col);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        kvt_dev_mma<T> (o [mt][2 * dp], pa [mt][kk], b [0], b [1]);
                        kvt_dev_mma<T> (o [mt][2 * dp + 1], pa [mt][kk], b [2], b [3]);
                    }
                }
            }
        };
        if (tile * BN <= cached + r0 + 31) {        //  Some row of this warp sees the tile
            bool mask = tile * BN + BN - 1 > cached + r0 || tile * BN + BN > len;
            if (mask)
                process (std::true_type ());
            else
                process (std::false_type ());
        }
        __syncthreads ();                           //  Buffer is free for tile + 2
    }
    //  Normalize and store
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float sum = l [mt][h];
            sum += __shfl_xor_sync (0xffffffffu, sum, 1);
            sum += __shfl_xor_sync (0xffffffffu, sum, 2);
            int row = r0 + 16 * mt + g + 8 * h;
            if (row >= q_len)
                continue;
            float inv = sum > 0.0f? 1.0f / sum: 0.0f;
            T *out = (T *) a.out + ((size_t) (q_first + row) * a.heads + head) * S_D;
#pragma unroll
            for (int dt = 0; dt < S_D / 8; dt++)
                *(uint32_t *) (out + dt * 8 + 2 * t) = kvt_dev_pack<T> (o [mt][dt][2 * h] * inv,
                                                                  o [mt][dt][2 * h + 1] * inv);
        }
    }
}

template <typename T, int WARPS, int BN>
int
s_launch2 (const kvt_paged_prefill_args_t *a, cudaStream_t stream)
{
    constexpr int smem = s_v2_smem_bytes<WARPS, BN> ();
    static bool configured = false;                 //  Idempotent; a race only repeats it
    if (!configured) {
        if (cudaFuncSetAttribute (s_prefill2_kernel<T, WARPS, BN>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  smem) != cudaSuccess)
            return KVT_ECUDA;
        configured = true;
    }
    dim3 grid ((a->max_q_len + 32 * WARPS - 1) / (32 * WARPS), a->heads, a->seqs);
    s_prefill2_kernel<T, WARPS, BN> <<<grid, WARPS * 32, smem, stream>>> (*a);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

template <typename T>
int
s_dispatch (const kvt_paged_prefill_args_t *a, cudaStream_t stream)
{
    switch (a->variant) {
        case 1: return s_launch<T> (a, stream);
        case 2: return s_launch2<T, 4, 64> (a, stream);
        case 3: return s_launch2<T, 8, 64> (a, stream);
        case 4: return kvt_paged_prefill_have_wgmma<T, 64, false> ()
                     ? kvt_paged_prefill_launch_wgmma<T, 64, false> (a, stream)
                     : s_launch2<T, 8, 64> (a, stream);
        case 5: return kvt_paged_prefill_have_wgmma<T, 128, false> ()
                     ? kvt_paged_prefill_launch_wgmma<T, 128, false> (a, stream)
                     : s_launch2<T, 8, 64> (a, stream);
        case 6: return kvt_paged_prefill_have_wgmma<T, 64, true> ()
                     ? kvt_paged_prefill_launch_wgmma<T, 64, true> (a, stream)
                     : s_launch2<T, 8, 64> (a, stream);
        case 7: return kvt_paged_prefill_have_wgmma<T, 128, true> ()
                     ? kvt_paged_prefill_launch_wgmma<T, 128, true> (a, stream)
                     : s_launch2<T, 8, 64> (a, stream);
        default: return kvt_paged_prefill_have_wgmma<T, 128, true, true> ()
                      ? kvt_paged_prefill_launch_wgmma<T, 128, true, true> (a, stream)
                      : s_launch2<T, 8, 64> (a, stream);
    }
}

}   //  namespace

//  --------------------------------------------------------------------------
//  Queue the prefill kernel on 'stream'.

int
kvt_paged_prefill (const kvt_paged_prefill_args_t *args, cudaStream_t stream)
{
    int rc = kvt_paged_prefill_check (args);
    if (rc)
        return rc;
    if (args->seqs == 0 || args->max_q_len == 0)
        return 0;
    if (args->seqs > 65535 || args->heads > 65535)
        return -EINVAL;
    return args->dtype == KVT_KDTYPE_BF16? s_dispatch<__nv_bfloat16> (args, stream)
                                         : s_dispatch<__half> (args, stream);
}
