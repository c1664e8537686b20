/*  =========================================================================
    kvt_paged_attention - paged decode attention (GQA, split-KV) on the GPU

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Versions (compared in tools/bench/kvt_bench_kernels.c):
    v1  one CTA of 4 warps per (split, kv head, head chunk, sequence). A
        token's row is read by head_dim/8 lanes, 16 bytes each, so one warp
        step covers 2 (hd128) or 4 (hd64) tokens; 4 steps are loaded before
        any is used, so each lane has 8 loads of 16 bytes in flight. The
        query heads of one GQA group live in registers and share each K/V
        row read, so KV bytes cross HBM once. Each lane group keeps its own
        online softmax (log2 domain); warps merge through shared memory,
        and splits merge in a second kernel by log-sum-exp.
@end
*/

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include "kvt_paged_attention.cuh"

#define S_WARPS     4               //  Warps per CTA
#define S_UNROLL    4               //  Warp steps loaded before use
#define S_SPLIT_ALIGN 64            //  Split lengths are multiples of this

namespace {

//  Read 16 bytes that no one writes while the kernel runs; stream past L1
__device__ __forceinline__ uint4
s_load_stream (const void *address)
{
    uint4 r;
    asm volatile ("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                  : "=r" (r.x), "=r" (r.y), "=r" (r.z), "=r" (r.w) : "l" (address));
    return r;
}

//  Eight packed elements -> eight floats
template <typename T> __device__ __forceinline__ void s_unpack (uint4 raw, float *f);

template <> __device__ __forceinline__ void
s_unpack<__nv_bfloat16> (uint4 raw, float *f)
{
    const uint32_t w [4] = { raw.x, raw.y, raw.z, raw.w };
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f [2 * i]     = __uint_as_float (w [i] << 16);
        f [2 * i + 1] = __uint_as_float (w [i] & 0xffff0000u);
    }
}

template <> __device__ __forceinline__ void
s_unpack<__half> (uint4 raw, float *f)
{
    const uint32_t w [4] = { raw.x, raw.y, raw.z, raw.w };
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 h = *reinterpret_cast <const __half2 *> (&w [i]);
        float2 pair = __half22float2 (h);
        f [2 * i] = pair.x;
        f [2 * i + 1] = pair.y;
    }
}

template <typename T> __device__ __forceinline__ T s_from_float (float value);
template <> __device__ __forceinline__ __nv_bfloat16
s_from_float<__nv_bfloat16> (float value) { return __float2bfloat16_rn (value); }
template <> __device__ __forceinline__ __half
s_from_float<__half> (float value) { return __float2half_rn (value); }

//  exp2 (a - b) that is 0, not NaN, when a is -inf
__device__ __forceinline__ float
s_rescale (float a, float b)
{
    return a == -INFINITY? 0.0f: exp2f (a - b);
}

//  --------------------------------------------------------------------------
//  Decode kernel. grid = (splits, kv_heads * head_chunks, seqs).

template <typename T, int D, int GT>
__global__ void __launch_bounds__ (S_WARPS * 32)
s_decode_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                 int head_chunks, float *ws_out, float *ws_lse)
{
    constexpr int LPT = D / 8;              //  Lanes per token row
    constexpr int TPW = 32 / LPT;           //  Tokens per warp step
    constexpr int TOKENS = TPW * S_UNROLL;  //  Tokens per warp iteration
    __shared__ float sm_m [S_WARPS][GT];
    __shared__ float sm_l [S_WARPS][GT];
    __shared__ float sm_acc [S_WARPS][GT][D];

    const int split = blockIdx.x;
    const int kv_head = blockIdx.y / head_chunks;
    const int chunk = blockIdx.y % head_chunks;
    const int seq = blockIdx.z;
    const int group = a.heads / a.kv_heads;
    const int head0 = kv_head * group + chunk * GT;
    const int nheads = min (GT, group - chunk * GT);
    const int len = a.seq_lens [seq];
    const int start = split * split_len;
    const int end = min (len, start + split_len);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int sub = lane / LPT;
    const int part = lane % LPT;

    //  Queries, pre-scaled into the log2 domain
    const float qscale = a.scale * 1.4426950408889634f;
    float q [GT][8];
#pragma unroll
    for (int g = 0; g < GT; g++) {
        if (g < nheads) {
            const T *qp = (const T *) a.q + ((size_t) seq * a.heads + head0 + g) * D + part * 8;
            s_unpack<T> (*(const uint4 *) qp, q [g]);
#pragma unroll
            for (int i = 0; i < 8; i++)
                q [g][i] *= qscale;
        }
        else {
#pragma unroll
            for (int i = 0; i < 8; i++)
                q [g][i] = 0.0f;
        }
    }
    float m [GT], l [GT], acc [GT][8];
#pragma unroll
    for (int g = 0; g < GT; g++) {
        m [g] = -INFINITY;
        l [g] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++)
            acc [g][i] = 0.0f;
    }
    const int32_t *table = a.block_table + (size_t) seq * a.max_blocks_per_seq;
    const char *k_base = (const char *) a.k + kv_head * a.head_stride_bytes + part * 16;
    const char *v_base = (const char *) a.v + kv_head * a.head_stride_bytes + part * 16;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    const int bt_mask = a.block_tokens - 1;

    for (int t0 = start + warp * TOKENS; t0 < end; t0 += S_WARPS * TOKENS) {
        uint4 k_raw [S_UNROLL], v_raw [S_UNROLL];
#pragma unroll
        for (int u = 0; u < S_UNROLL; u++) {
            int t = t0 + u * TPW + sub;
            if (t < end) {
                int64_t block = table [t >> log2_bt];
                int64_t offset = block * a.block_stride_bytes
                               + (int64_t) (t & bt_mask) * a.token_stride_bytes;
                k_raw [u] = s_load_stream (k_base + offset);
                v_raw [u] = s_load_stream (v_base + offset);
            }
            else {
                k_raw [u] = make_uint4 (0, 0, 0, 0);
                v_raw [u] = make_uint4 (0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int u = 0; u < S_UNROLL; u++) {
            float kf [8];
            s_unpack<T> (k_raw [u], kf);
            float s [GT];
#pragma unroll
            for (int g = 0; g < GT; g++) {
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++)
                    dot = fmaf (q [g][i], kf [i], dot);
                s [g] = dot;
            }
#pragma unroll
            for (int offset = LPT / 2; offset > 0; offset >>= 1) {
#pragma unroll
                for (int g = 0; g < GT; g++)
                    s [g] += __shfl_xor_sync (0xffffffffu, s [g], offset);
            }
            int t = t0 + u * TPW + sub;
            if (t < end) {
                float vf [8];
                s_unpack<T> (v_raw [u], vf);
#pragma unroll
                for (int g = 0; g < GT; g++) {
                    if (s [g] > m [g]) {
                        float c = exp2f (m [g] - s [g]);
                        l [g] *= c;
#pragma unroll
                        for (int i = 0; i < 8; i++)
                            acc [g][i] *= c;
                        m [g] = s [g];
                    }
                    float p = exp2f (s [g] - m [g]);
                    l [g] += p;
#pragma unroll
                    for (int i = 0; i < 8; i++)
                        acc [g][i] = fmaf (p, vf [i], acc [g][i]);
                }
            }
        }
    }
    //  Merge the TPW lane groups of this warp
#pragma unroll
    for (int offset = LPT; offset < 32; offset <<= 1) {
#pragma unroll
        for (int g = 0; g < GT; g++) {
            float m_o = __shfl_xor_sync (0xffffffffu, m [g], offset);
            float l_o = __shfl_xor_sync (0xffffffffu, l [g], offset);
            float top = fmaxf (m [g], m_o);
            float c1 = s_rescale (m [g], top);
            float c2 = s_rescale (m_o, top);
            l [g] = l [g] * c1 + l_o * c2;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float a_o = __shfl_xor_sync (0xffffffffu, acc [g][i], offset);
                acc [g][i] = acc [g][i] * c1 + a_o * c2;
            }
            m [g] = top;
        }
    }
    if (sub == 0) {
#pragma unroll
        for (int g = 0; g < GT; g++) {
#pragma unroll
            for (int i = 0; i < 8; i++)
                sm_acc [warp][g][part * 8 + i] = acc [g][i];
            if (part == 0) {
                sm_m [warp][g] = m [g];
                sm_l [warp][g] = l [g];
            }
        }
    }
    __syncthreads ();
    //  Merge the warps; write the output or this split's partial
    for (int index = threadIdx.x; index < GT * D; index += blockDim.x) {
        int g = index / D;
        int d = index % D;
        if (g >= nheads)
            break;
        float top = -INFINITY;
#pragma unroll
        for (int w = 0; w < S_WARPS; w++)
            top = fmaxf (top, sm_m [w][g]);
        float sum = 0.0f, out = 0.0f;
#pragma unroll
        for (int w = 0; w < S_WARPS; w++) {
            float c = s_rescale (sm_m [w][g], top);
            sum += sm_l [w][g] * c;
            out += sm_acc [w][g][d] * c;
        }
        out = sum > 0.0f? out / sum: 0.0f;
        int head = head0 + g;
        if (splits == 1)
            ((T *) a.out) [((size_t) seq * a.heads + head) * D + d] = s_from_float<T> (out);
        else {
            size_t row = ((size_t) seq * a.heads + head) * splits + split;
            ws_out [row * D + d] = out;
            if (d == 0)
                ws_lse [row] = sum > 0.0f? top + log2f (sum): -INFINITY;
        }
    }
}

//  --------------------------------------------------------------------------
//  Merge kernel: grid = (heads, seqs), D threads; weights are 2^lse.

template <typename T, int D>
__global__ void __launch_bounds__ (D)
s_merge_kernel (const kvt_paged_attention_args_t a, int splits, const float *ws_out,
                const float *ws_lse)
{
    const int head = blockIdx.x;
    const int seq = blockIdx.y;
    const int d = threadIdx.x;
    size_t row0 = ((size_t) seq * a.heads + head) * splits;
    float top = -INFINITY;
    for (int s = 0; s < splits; s++)
        top = fmaxf (top, ws_lse [row0 + s]);
    float sum = 0.0f, out = 0.0f;
    if (top != -INFINITY) {
        for (int s = 0; s < splits; s++) {
            float w = s_rescale (ws_lse [row0 + s], top);
            sum += w;
            out = fmaf (w, ws_out [(row0 + s) * D + d], out);
        }
        out /= sum;
    }
    ((T *) a.out) [((size_t) seq * a.heads + head) * D + d] = s_from_float<T> (out);
}

template <typename T, int D, int GT>
int
s_launch (const kvt_paged_attention_args_t *a, int split_len, int splits, int head_chunks,
          cudaStream_t stream)
{
    float *ws_out = (float *) a->workspace;
    float *ws_lse = ws_out? ws_out + (size_t) a->seqs * a->heads * splits * D: NULL;
    dim3 grid (splits, a->kv_heads * head_chunks, a->seqs);
    s_decode_kernel<T, D, GT> <<<grid, S_WARPS * 32, 0, stream>>> (
        *a, split_len, splits, head_chunks, ws_out, ws_lse);
    if (splits > 1) {
        dim3 merge_grid (a->heads, a->seqs);
        s_merge_kernel<T, D> <<<merge_grid, D, 0, stream>>> (*a, splits, ws_out, ws_lse);
    }
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

template <typename T, int D>
int
s_launch_group (const kvt_paged_attention_args_t *a, int split_len, int splits,
                cudaStream_t stream)
{
    int group = a->heads / a->kv_heads;
    int gt = group <= 1? 1: group <= 2? 2: group <= 4? 4: 8;
    int head_chunks = (group + gt - 1) / gt;
    switch (gt) {
        case 1:  return s_launch<T, D, 1> (a, split_len, splits, head_chunks, stream);
        case 2:  return s_launch<T, D, 2> (a, split_len, splits, head_chunks, stream);
        case 4:  return s_launch<T, D, 4> (a, split_len, splits, head_chunks, stream);
        default: return s_launch<T, D, 8> (a, split_len, splits, head_chunks, stream);
    }
}

int
s_sm_count (void)
{
    int device, count;
    if (cudaGetDevice (&device) != cudaSuccess
    ||  cudaDeviceGetAttribute (&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return KVT_ECUDA;
    return count;
}

}   //  namespace

//  --------------------------------------------------------------------------
//  Split count on the current device.

int
kvt_paged_attention_plan (const kvt_paged_attention_args_t *args)
{
    if (args->splits > 0)
        return args->splits;
    int sm_count = s_sm_count ();
    if (sm_count < 0)
        return sm_count;
    return kvt_paged_attention_splits (args, sm_count);
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
    if (args->seqs > 65535 || (int64_t) args->heads * args->kv_heads > 65535 * 8)
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
        return bf16? s_launch_group<__nv_bfloat16, 128> (args, split_len, splits, stream)
                   : s_launch_group<__half, 128> (args, split_len, splits, stream);
    else
        return bf16? s_launch_group<__nv_bfloat16, 64> (args, split_len, splits, stream)
                   : s_launch_group<__half, 64> (args, split_len, splits, stream);
}
