/*  =========================================================================
    kvt_fp8_attention - paged decode attention over an e4m3 KV cache (GPU)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Versions (compared in tools/bench/kvt_bench_kernels.c):
    v1  the bf16 decode kernel's structure (kvt_paged_attention v2) with
        fp8 loads: a warp takes 16-token tiles, lane (g, t) loads 16-byte
        chunks t + 4f of tokens g and g + 8 (16 e4m3 values each), and
        cvt.rn.f16x2.e4m3x2 widens each pair exactly into an fp16 B
        fragment; head_dim is permuted so that word j of chunk f is k-step
        4f + j as it stands. S = QK^T and O += PV run on mma.sync
        m16n8k16 in fp16 (queries rounded to fp16 once per CTA). Scales:
        a 16-token tile lies in one block, so each tile has one K scale
        (folded into the softmax's log2 scale) and one V scale. The V
        scale multiplies P before it is rounded to fp16, relative to the
        largest V scale the warp has seen (so P stays <= 1 and never
        overflows); O is rescaled when that largest scale grows. The next
        tile's K and V are loaded while the current tile computes.
        H100, 2026-11-27: 2.57 / 2.63 / 2.35 TB/s of fp8 KV at 64x4K /
        16x32K / 1x128K, 0.57 / 0.56 / 0.59 of the bf16 decode's time.
        Tried (compile-time options, default off): S_FP8_MIN_CTAS=3 (168
        registers, spills) 0.84 / 0.63 / 1.00 of bf16; S_FP8_STAGES=3, a
        per-warp cp.async ring of 3 tiles in shared memory instead of the
        register prefetch: +3.5% / +1.6% / -1.2%, not worth the default.
@end
*/

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include "kvt_fp8_attention.cuh"
#include "kvt_device.cuh"
#include "kvt_decode_merge.cuh"

#define S_WARPS     4               //  Warps per CTA
#ifndef S_FP8_MIN_CTAS
#   define S_FP8_MIN_CTAS 1         //  __launch_bounds__ floor (3 caps registers at 168)
#endif
#ifndef S_FP8_STAGES
#   define S_FP8_STAGES 0           //  0: next tile prefetched into registers;
#endif                              //  N: a cp.async ring of N tiles per warp
#define S_SPLIT_ALIGN 64            //  Split lengths are multiples of this

namespace {

#if S_FP8_STAGES > 0
__device__ __forceinline__ void
s_cp_async4 (void *smem, const void *global)
{
    uint32_t address = (uint32_t) __cvta_generic_to_shared (smem);
    asm volatile ("cp.async.ca.shared.global [%0], [%1], 4;" :: "r" (address), "l" (global));
}
#endif

//  Dynamic shared memory of the decode kernel: the cp.async ring
template <int D>
constexpr int
s_ring_bytes ()
{
    return S_FP8_STAGES * S_WARPS * (2 * 2 * (D / 64) * 32 * 16 + 2 * 32 * 4);
}

//  Two query elements as an fp16 pair
template <typename T> __device__ __forceinline__ uint32_t s_to_half2 (uint32_t bits);

template <> __device__ __forceinline__ uint32_t
s_to_half2<__half> (uint32_t bits)
{
    return bits;
}

template <> __device__ __forceinline__ uint32_t
s_to_half2<__nv_bfloat16> (uint32_t bits)
{
    __nv_bfloat162 pair = *reinterpret_cast <__nv_bfloat162 *> (&bits);
    float2 wide = __bfloat1622float2 (pair);
    __half2 narrow = __floats2half2_rn (wide.x, wide.y);
    return *reinterpret_cast <uint32_t *> (&narrow);
}

//  Four e4m3 values (byte i = element i) as two fp16 pairs, exactly
__device__ __forceinline__ void
s_e4m3x4_to_half2x2 (uint32_t word, uint32_t &lo, uint32_t &hi)
{
    asm ("{\n\t.reg .b16 l, h;\n\t"
         "mov.b32 {l, h}, %2;\n\t"
         "cvt.rn.f16x2.e4m3x2 %0, l;\n\t"
         "cvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
         : "=r" (lo), "=r" (hi) : "r" (word));
}

//  --------------------------------------------------------------------------
//  Decode kernel. grid = (splits, kv_heads * head_chunks, seqs).
//  Lane (g = lane / 4, t = lane % 4) loads 16-byte chunks t + 4f (f < D / 64)
//  of tokens g and g + 8. k-step 4f + j of S = Q K^T takes word j of chunk
//  f: dims 16t + 64f + 4j + {0, 1} (b0) and + {2, 3} (b1); Q's A fragments
//  follow the same permutation. For O += P V, the fp16 pair k (0, 1) of
//  word j of chunk f is an 8x8 piece (tokens x pairs) that movmatrix
//  transposes into a B fragment; output n-tile 8f + 2j + k, lane t holds
//  dims 16t + 64f + 4j + 2k + {0, 1}.

template <typename T, int D>
__global__ void __launch_bounds__ (S_WARPS * 32, S_FP8_MIN_CTAS)
s_fp8_decode_kernel (const kvt_fp8_attention_args_t a, int split_len, int splits,
                     int head_chunks, float *ws_out, float *ws_lse)
{
    kvt_dev_launch_dependents ();
    constexpr int FC = D / 64;              //  16-byte chunks per lane per token row
    constexpr int KSTEPS = D / 16;          //  mma k-steps over head_dim
    constexpr int NT = D / 8;               //  Output n-tiles
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
    if (splits > 1 && end <= start)
        return;                             //  A split past the sequence's end: the merge skips it
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int g = lane >> 2;
    const int t = lane & 3;

    //  Q as fp16 A fragments: rows are heads g and g + 8, columns permuted
    uint32_t qf [KSTEPS][4];
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ks++) {
        int d0 = 16 * t + 64 * (ks >> 2) + 4 * (ks & 3);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int row = g + 8 * (i & 1);
            int d = d0 + 2 * (i >> 1);
            qf [ks][i] = row < nheads
                ? s_to_half2<T> (*(const uint32_t *) ((const T *) a.q
                                 + ((size_t) seq * a.heads + head0 + row) * D + d))
                : 0u;
        }
    }
    float o [NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++)
        o [n][0] = o [n][1] = o [n][2] = o [n][3] = 0.0f;
    float m [2] = { -INFINITY, -INFINITY };
    float l [2] = { 0.0f, 0.0f };
    float v_top = 0.0f;                     //  Largest V scale so far: O is in its units
    const float scale_log2 = a.scale * 1.4426950408889634f;
    const int32_t *table = a.block_table + (size_t) seq * a.max_blocks_per_seq;
    const char *k_base = (const char *) a.k + kv_head * a.head_stride_bytes + t * 16;
    const char *v_base = (const char *) a.v + kv_head * a.head_stride_bytes + t * 16;
    const int64_t scale_head = kv_head * a.scale_head_stride;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    const int bt_mask = a.block_tokens - 1;

#if S_FP8_STAGES == 0
    //  Loads for the 16 tokens at t0 (one block): K and V rows g, g + 8, scales
    auto load_tile = [&] (uint4 (*k_raw) [FC], uint4 (*v_raw) [FC], float &k_scale,
                          float &v_scale, int t0) {
        int64_t block = table [t0 >> log2_bt];
        k_scale = __ldg (a.k_scales + block * a.scale_block_stride + scale_head);
        v_scale = __ldg (a.v_scales + block * a.scale_block_stride + scale_head);
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int token = t0 + g + 8 * half;
            if (token < end) {
                int64_t offset = block * a.block_stride_bytes
                               + (int64_t) (token & bt_mask) * a.token_stride_bytes;
#pragma unroll
                for (int f = 0; f < FC; f++) {
                    k_raw [half][f] = kvt_dev_load_stream (k_base + offset + f * 64);
                    v_raw [half][f] = kvt_dev_load_stream (v_base + offset + f * 64);
                }
            }
            else {
#pragma unroll
                for (int f = 0; f < FC; f++) {
                    k_raw [half][f] = make_uint4 (0, 0, 0, 0);
                    v_raw [half][f] = make_uint4 (0, 0, 0, 0);
                }
            }
        }
    };
#endif
    const int step = S_WARPS * 16;
    uint4 k_raw [2][FC], v_raw [2][FC];
    float k_scale = 0.0f, v_scale = 0.0f;
#if S_FP8_STAGES == 0
    uint4 k_next [2][FC], v_next [2][FC];
    float k_scale_next = 0.0f, v_scale_next = 0.0f;
    if (start + warp * 16 < end)
        load_tile (k_raw, v_raw, k_scale, v_scale, start + warp * 16);
#else
    //  Ring slot: [K, V][half][f][lane] 16-byte chunks, then [K, V][lane] scales
    extern __shared__ __align__ (16) unsigned char sm_ring [];
    constexpr int SLOT_BYTES = 2 * 2 * FC * 32 * 16 + 2 * 32 * 4;
    unsigned char *ring = sm_ring + warp * S_FP8_STAGES * SLOT_BYTES;
    auto ring_chunk = [&] (int slot, int kv, int half, int f) {
        return (uint4 *) (ring + slot * SLOT_BYTES) + ((kv * 2 + half) * FC + f) * 32 + lane;
    };
    auto scale_at = [&] (int slot, int kv) {
        return (float *) (ring + slot * SLOT_BYTES + 2 * 2 * FC * 32 * 16) + kv * 32 + lane;
    };
    //  Each lane copies (and later reads) only its own chunks and scales
    auto issue_tile = [&] (int t0, int slot) {
        if (t0 < end) {
            int64_t block = table [t0 >> log2_bt];
            s_cp_async4 (scale_at (slot, 0),
                         a.k_scales + block * a.scale_block_stride + scale_head);
            s_cp_async4 (scale_at (slot, 1),
                         a.v_scales + block * a.scale_block_stride + scale_head);
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int token = t0 + g + 8 * half;
                int64_t offset = block * a.block_stride_bytes
                               + (int64_t) (token & bt_mask) * a.token_stride_bytes;
#pragma unroll
                for (int f = 0; f < FC; f++) {
                    if (token < end) {
                        kvt_dev_cp_async16 (ring_chunk (slot, 0, half, f), k_base + offset + f * 64);
                        kvt_dev_cp_async16 (ring_chunk (slot, 1, half, f), v_base + offset + f * 64);
                    }
                    else {
                        *ring_chunk (slot, 0, half, f) = make_uint4 (0, 0, 0, 0);
                        *ring_chunk (slot, 1, half, f) = make_uint4 (0, 0, 0, 0);
                    }
                }
            }
        }
        asm volatile ("cp.async.commit_group;");
    };
#pragma unroll
    for (int j = 0; j < S_FP8_STAGES - 1; j++)
        issue_tile (start + warp * 16 + j * step, j);
    int slot = 0;
#endif
    for (int t0 = start + warp * 16; t0 < end; t0 += step) {
#if S_FP8_STAGES == 0
        if (t0 + step < end)                        //  In flight while this tile computes
            load_tile (k_next, v_next, k_scale_next, v_scale_next, t0 + step);
#else
        issue_tile (t0 + (S_FP8_STAGES - 1) * step,
                    slot == 0? S_FP8_STAGES - 1: slot - 1);
        asm volatile ("cp.async.wait_group %0;" :: "n" (S_FP8_STAGES - 1) : "memory");
#pragma unroll
        for (int half = 0; half < 2; half++)
#pragma unroll
            for (int f = 0; f < FC; f++) {
                k_raw [half][f] = *ring_chunk (slot, 0, half, f);
                v_raw [half][f] = *ring_chunk (slot, 1, half, f);
            }
        k_scale = *scale_at (slot, 0);
        v_scale = *scale_at (slot, 1);
        slot = slot == S_FP8_STAGES - 1? 0: slot + 1;
#endif
        //  S = Q K^T: n-tile 'half' holds tokens 8 * half + 2t, + 1
        float s [2][4];
#pragma unroll
        for (int half = 0; half < 2; half++) {
            s [half][0] = s [half][1] = s [half][2] = s [half][3] = 0.0f;
#pragma unroll
            for (int f = 0; f < FC; f++) {
                const uint32_t w [4] = { k_raw [half][f].x, k_raw [half][f].y,
                                         k_raw [half][f].z, k_raw [half][f].w };
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    uint32_t b0, b1;
                    s_e4m3x4_to_half2x2 (w [j], b0, b1);
                    kvt_dev_mma<__half> (s [half], qf [4 * f + j], b0, b1);
                }
            }
        }
        //  Online softmax; rows g (e < 2) and g + 8 (e >= 2), quad-uniform max
        float alpha [2];
        kvt_dev_tile_max (s, k_scale * scale_log2, t0, end, t, m, l, alpha);
        //  V scale relative to the largest so far (P * ratio <= 1 in fp16)
        float v_ratio = 1.0f;
        if (v_scale > v_top) {
            alpha [0] *= v_top / v_scale;           //  O moves to the new units
            alpha [1] *= v_top / v_scale;
            v_top = v_scale;
        }
        else
        if (v_scale < v_top)
            v_ratio = __fdividef (v_scale, v_top);
#pragma unroll
        for (int half = 0; half < 2; half++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = kvt_dev_exp2 (s [half][e] - m [e >> 1]);
                s [half][e] = p * v_ratio;
                l [e >> 1] += p;
            }
        }
        kvt_dev_rescale_rows<NT> (o, alpha);
        uint32_t pa [4];
        kvt_dev_pack_probs<__half> (s, pa);
        //  O += P V over the 8x8 pieces (f, j, k) of V
#pragma unroll
        for (int f = 0; f < FC; f++) {
            uint32_t w0 [4], w1 [4];
            kvt_dev_words (v_raw [0][f], w0);
            kvt_dev_words (v_raw [1][f], w1);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t a0, a1, c0, c1;
                s_e4m3x4_to_half2x2 (w0 [j], a0, a1);
                s_e4m3x4_to_half2x2 (w1 [j], c0, c1);
                kvt_dev_mma<__half> (o [8 * f + 2 * j], pa, kvt_dev_movmatrix_trans (a0),
                           kvt_dev_movmatrix_trans (c0));
                kvt_dev_mma<__half> (o [8 * f + 2 * j + 1], pa, kvt_dev_movmatrix_trans (a1),
                           kvt_dev_movmatrix_trans (c1));
            }
        }
#if S_FP8_STAGES == 0
#pragma unroll
        for (int half = 0; half < 2; half++)
#pragma unroll
            for (int f = 0; f < FC; f++) {
                k_raw [half][f] = k_next [half][f];
                v_raw [half][f] = v_next [half][f];
            }
        k_scale = k_scale_next;
        v_scale = v_scale_next;
#endif
    }
#if S_FP8_STAGES > 0
    asm volatile ("cp.async.wait_group 0;" ::: "memory");
#endif
    //  Row sums over the quad; then merge warps through shared memory
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l [r] += __shfl_xor_sync (0xffffffffu, l [r], 1);
        l [r] += __shfl_xor_sync (0xffffffffu, l [r], 2);
    }
#pragma unroll
    for (int f = 0; f < FC; f++) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
#pragma unroll
            for (int k = 0; k < 2; k++) {
                int n = 8 * f + 2 * j + k;
                int d = 16 * t + 64 * f + 4 * j + 2 * k;
                sm_acc [warp][g][d] = o [n][0] * v_top;
                sm_acc [warp][g][d + 1] = o [n][1] * v_top;
                sm_acc [warp][g + 8][d] = o [n][2] * v_top;
                sm_acc [warp][g + 8][d + 1] = o [n][3] * v_top;
            }
        }
    }
    kvt_dev_decode_combine<T, D, S_WARPS> (sm_m, sm_l, sm_acc, m, l, warp, g, t, nheads, head0,
                                           a.heads, seq, split, splits, a.out, ws_out, ws_lse);
}

template <typename T, int D>
int
s_launch (const kvt_fp8_attention_args_t *a, int split_len, int splits, cudaStream_t stream)
{
    int group = a->heads / a->kv_heads;
    int head_chunks = (group + 15) / 16;
    float *ws_out = (float *) a->workspace;
    float *ws_lse = ws_out? ws_out + (size_t) a->seqs * a->heads * splits * D: NULL;
    dim3 grid (splits, a->kv_heads * head_chunks, a->seqs);
    if (s_ring_bytes<D> () > 0) {
        static bool configured = false;             //  Idempotent; a race only repeats it
        if (!configured) {
            if (cudaFuncSetAttribute (s_fp8_decode_kernel<T, D>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      s_ring_bytes<D> ()) != cudaSuccess)
                return KVT_ECUDA;
            configured = true;
        }
    }
    s_fp8_decode_kernel<T, D> <<<grid, S_WARPS * 32, s_ring_bytes<D> (), stream>>> (
        *a, split_len, splits, head_chunks, ws_out, ws_lse);
    if (splits > 1
    &&  kvt_decode_merge_launch<T, D> (a->out, a->seqs, a->heads, splits, a->seq_lens,
                                       split_len, ws_out, ws_lse, stream) != cudaSuccess)
        return KVT_ECUDA;
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

template <typename T, int D>
cudaError_t
s_occupancy (int *per_sm)
{
    if (s_ring_bytes<D> () > 0
    &&  cudaFuncSetAttribute (s_fp8_decode_kernel<T, D>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              s_ring_bytes<D> ()) != cudaSuccess)
        return cudaErrorInvalidValue;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor (per_sm, s_fp8_decode_kernel<T, D>,
                                                          S_WARPS * 32, s_ring_bytes<D> ());
}

//  CTA slots of each kernel on each device (kvt_dev_decode_slots)
int s_slots [2 * 2][KVT_DEV_MAX_DEVICES];

int
s_ask_per_sm (void *context)
{
    const kvt_fp8_attention_args_t *a = (const kvt_fp8_attention_args_t *) context;
    int per_sm = 0;
    bool bf16 = a->dtype == KVT_KDTYPE_BF16;
    cudaError_t err = a->head_dim == 128
        ? (bf16? s_occupancy<__nv_bfloat16, 128> (&per_sm): s_occupancy<__half, 128> (&per_sm))
        : (bf16? s_occupancy<__nv_bfloat16, 64> (&per_sm): s_occupancy<__half, 64> (&per_sm));
    return err == cudaSuccess? per_sm: KVT_ECUDA;
}

//  Decode CTAs that run at once on the current device
int
s_cta_slots (const kvt_fp8_attention_args_t *a)
{
    int device;
    if (cudaGetDevice (&device) != cudaSuccess)
        return KVT_ECUDA;
    int index = (a->dtype == KVT_KDTYPE_BF16) * 2 + (a->head_dim == 128);
    return kvt_dev_decode_slots (s_slots [index], device, s_ask_per_sm, (void *) a);
}

}   //  namespace

//  --------------------------------------------------------------------------
//  Split count on the current device.

int
kvt_fp8_attention_plan (const kvt_fp8_attention_args_t *args)
{
    if (args->splits > 0)
        return args->splits;
    int rc = kvt_fp8_attention_check (args);
    if (rc)
        return rc;
    int slots = s_cta_slots (args);
    if (slots < 0)
        return slots;
    return kvt_fp8_attention_splits (args, slots);
}

//  --------------------------------------------------------------------------
//  Queue decode (+ merge) on 'stream'.

int
kvt_fp8_attention (const kvt_fp8_attention_args_t *args, cudaStream_t stream)
{
    int rc = kvt_fp8_attention_check (args);
    if (rc)
        return rc;
    if (args->seqs == 0)
        return 0;
    if (args->seqs > 65535 || args->heads > 65535)
        return -EINVAL;
    int splits = kvt_fp8_attention_plan (args);
    if (splits < 0)
        return splits;
    int max_len = args->max_seq_len > 0? args->max_seq_len: 1;
    int split_len = (max_len + splits - 1) / splits;
    split_len = (split_len + S_SPLIT_ALIGN - 1) / S_SPLIT_ALIGN * S_SPLIT_ALIGN;
    splits = (max_len + split_len - 1) / split_len;
    if (splits > 1
    &&  (!args->workspace
    ||   args->workspace_bytes < kvt_fp8_attention_workspace_bytes (args, splits)))
        return -EINVAL;
    bool bf16 = args->dtype == KVT_KDTYPE_BF16;
    if (args->head_dim == 128)
        return bf16? s_launch<__nv_bfloat16, 128> (args, split_len, splits, stream)
                   : s_launch<__half, 128> (args, split_len, splits, stream);
    else
        return bf16? s_launch<__nv_bfloat16, 64> (args, split_len, splits, stream)
                   : s_launch<__half, 64> (args, split_len, splits, stream);
}
