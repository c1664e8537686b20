/*  =========================================================================
    kvt_layers - RMSNorm, RoPE, SwiGLU, argmax kernels and the cuBLAS GEMM

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Versions:
    v1  rmsnorm: one CTA of 256 threads per row, 16-byte loads, fp32 sum
        of squares reduced through shared memory, second pass re-reads the
        row from cache. rope: one thread per rotated pair. swiglu: one
        thread per output. argmax: one CTA per row, (value, index) pairs
        reduced with the lower index winning ties. gemm: cublasGemmEx,
        fp32 compute, on the caller's stream.
@end
*/

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include "kvt_layers.cuh"
#include "kvt_device.cuh"

#define S_THREADS 256               //  Threads per CTA

namespace {

template <typename T>
__global__ void __launch_bounds__ (S_THREADS)
s_rmsnorm_kernel (const kvt_rmsnorm_args_t a)
{
    __shared__ float sm_sum [S_THREADS / 32];
    const T *x = (const T *) a.x + (size_t) blockIdx.x * a.dim;
    T *out = (T *) a.out + (size_t) blockIdx.x * a.dim;
    const T *w = (const T *) a.weight;
    float sum = 0.0f;
    for (int e = threadIdx.x * 8; e < a.dim; e += S_THREADS * 8) {
        uint4 raw = *(const uint4 *) (x + e);
        const T *v = (const T *) &raw;
#pragma unroll
        for (int i = 0; i < 8; i++)
            sum += kvt_dev_to_float<T> (v [i]) * kvt_dev_to_float<T> (v [i]);
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        sum += __shfl_xor_sync (0xffffffffu, sum, offset);
    if ((threadIdx.x & 31) == 0)
        sm_sum [threadIdx.x >> 5] = sum;
    __syncthreads ();
    sum = 0.0f;
#pragma unroll
    for (int i = 0; i < S_THREADS / 32; i++)
        sum += sm_sum [i];
    const float inv = 1.0f / sqrtf (sum / a.dim + a.eps);
    for (int e = threadIdx.x * 8; e < a.dim; e += S_THREADS * 8) {
        uint4 raw = *(const uint4 *) (x + e);
        uint4 wraw = *(const uint4 *) (w + e);
        const T *v = (const T *) &raw;
        const T *wv = (const T *) &wraw;
        uint4 result;
        T *r = (T *) &result;
#pragma unroll
        for (int i = 0; i < 8; i++)
            r [i] = kvt_dev_from_float<T> (kvt_dev_to_float<T> (v [i]) * inv * kvt_dev_to_float<T> (wv [i]));
        *(uint4 *) (out + e) = result;
    }
}

template <typename T>
__global__ void
s_rope_kernel (const kvt_rope_args_t a)
{
    const int half = a.head_dim / 2;
    const int64_t total = (int64_t) a.tokens * a.heads * half;
    for (int64_t index = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; index < total;
         index += (int64_t) gridDim.x * blockDim.x) {
        int i = (int) (index % half);
        int64_t row = index / half;                 //  token * heads + head
        int token = (int) (row / a.heads);
        T *x = (T *) a.x + row * a.head_dim;
        float angle = (float) a.positions [token] * a.inv_freq [i];
        float s, c;
        sincosf (angle, &s, &c);
        float x1 = kvt_dev_to_float<T> (x [i]);
        float x2 = kvt_dev_to_float<T> (x [i + half]);
        x [i] = kvt_dev_from_float<T> (x1 * c - x2 * s);
        x [i + half] = kvt_dev_from_float<T> (x2 * c + x1 * s);
    }
}

template <typename T>
__global__ void
s_swiglu_kernel (const kvt_swiglu_args_t a)
{
    const int64_t total = (int64_t) a.rows * a.inter;
    for (int64_t index = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; index < total;
         index += (int64_t) gridDim.x * blockDim.x) {
        int64_t r = index / a.inter;
        int i = (int) (index % a.inter);
        const T *row = (const T *) a.gate_up + r * 2 * a.inter;
        float g = kvt_dev_to_float<T> (row [i]);
        float u = kvt_dev_to_float<T> (row [a.inter + i]);
        ((T *) a.out) [index] = kvt_dev_from_float<T> (g / (1.0f + expf (-g)) * u);
    }
}

__device__ __forceinline__ void
s_better (float &value, int &index, float other_value, int other_index)
{
    if (other_value > value || (other_value == value && other_index < index)) {
        value = other_value;
        index = other_index;
    }
}

template <typename T>
__global__ void __launch_bounds__ (S_THREADS)
s_argmax_kernel (const kvt_argmax_args_t a)
{
    __shared__ float sm_value [S_THREADS / 32];
    __shared__ int sm_index [S_THREADS / 32];
    const T *logits = (const T *) a.logits + (size_t) blockIdx.x * a.vocab;
    float value = -INFINITY;
    int index = a.vocab;                            //  Loses every tie
    for (int i = threadIdx.x; i < a.vocab; i += S_THREADS)
        s_better (value, index, kvt_dev_to_float<T> (logits [i]), i);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        float other_value = __shfl_xor_sync (0xffffffffu, value, offset);
        int other_index = __shfl_xor_sync (0xffffffffu, index, offset);
        s_better (value, index, other_value, other_index);
    }
    if ((threadIdx.x & 31) == 0) {
        sm_value [threadIdx.x >> 5] = value;
        sm_index [threadIdx.x >> 5] = index;
    }
    __syncthreads ();
    if (threadIdx.x == 0) {
        for (int w = 1; w < S_THREADS / 32; w++)
            s_better (value, index, sm_value [w], sm_index [w]);
        a.out [blockIdx.x] = index < a.vocab? index: 0;    //  All -inf: first
    }
}

int
s_grid (int64_t total)
{
    int64_t blocks = (total + S_THREADS - 1) / S_THREADS;
    return blocks > 65536? 65536: blocks < 1? 1: (int) blocks;
}

int
s_status (void)
{
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

}   //  namespace

//  --------------------------------------------------------------------------
//  RMSNorm on 'stream'.

int
kvt_rmsnorm (const kvt_rmsnorm_args_t *args, cudaStream_t stream)
{
    if (!args || !args->x || !args->weight || !args->out || args->rows < 0
    ||  args->dim <= 0 || args->dim % 8)
        return -EINVAL;
    if (args->rows == 0)
        return 0;
    if (args->dtype == KVT_KDTYPE_BF16)
        s_rmsnorm_kernel<__nv_bfloat16> <<<args->rows, S_THREADS, 0, stream>>> (*args);
    else
        s_rmsnorm_kernel<__half> <<<args->rows, S_THREADS, 0, stream>>> (*args);
    return s_status ();
}

//  --------------------------------------------------------------------------
//  RoPE in place on 'stream'.

int
kvt_rope (const kvt_rope_args_t *args, cudaStream_t stream)
{
    if (!args || !args->x || !args->positions || !args->inv_freq || args->tokens < 0
    ||  args->heads <= 0 || args->head_dim <= 0 || args->head_dim % 2)
        return -EINVAL;
    int64_t total = (int64_t) args->tokens * args->heads * (args->head_dim / 2);
    if (total == 0)
        return 0;
    if (args->dtype == KVT_KDTYPE_BF16)
        s_rope_kernel<__nv_bfloat16> <<<s_grid (total), S_THREADS, 0, stream>>> (*args);
    else
        s_rope_kernel<__half> <<<s_grid (total), S_THREADS, 0, stream>>> (*args);
    return s_status ();
}

//  --------------------------------------------------------------------------
//  SwiGLU on 'stream'.

int
kvt_swiglu (const kvt_swiglu_args_t *args, cudaStream_t stream)
{
    if (!args || !args->gate_up || !args->out || args->rows < 0 || args->inter <= 0)
        return -EINVAL;
    int64_t total = (int64_t) args->rows * args->inter;
    if (total == 0)
        return 0;
    if (args->dtype == KVT_KDTYPE_BF16)
        s_swiglu_kernel<__nv_bfloat16> <<<s_grid (total), S_THREADS, 0, stream>>> (*args);
    else
        s_swiglu_kernel<__half> <<<s_grid (total), S_THREADS, 0, stream>>> (*args);
    return s_status ();
}

//  --------------------------------------------------------------------------
//  Argmax per row on 'stream'.

int
kvt_argmax (const kvt_argmax_args_t *args, cudaStream_t stream)
{
    if (!args || !args->logits || !args->out || args->rows < 0 || args->vocab <= 0)
        return -EINVAL;
    if (args->rows == 0)
        return 0;
    if (args->dtype == KVT_KDTYPE_BF16)
        s_argmax_kernel<__nv_bfloat16> <<<args->rows, S_THREADS, 0, stream>>> (*args);
    else
        s_argmax_kernel<__half> <<<args->rows, S_THREADS, 0, stream>>> (*args);
    return s_status ();
}

//  --------------------------------------------------------------------------
//  c [m, n] = a [m, k] . w [n, k]^T through cuBLAS (column-major view:
//  c^T = w . a^T), fp32 compute.

int
kvt_gemm (const kvt_gemm_args_t *args, cudaStream_t stream)
{
    if (!args || !args->a || !args->w || !args->c || !args->cublas || args->m < 0
    ||  args->n <= 0 || args->k <= 0)
        return -EINVAL;
    if (args->m == 0)
        return 0;
    cublasHandle_t handle = (cublasHandle_t) args->cublas;
    cudaDataType_t type = args->dtype == KVT_KDTYPE_BF16? CUDA_R_16BF: CUDA_R_16F;
    const float alpha = 1.0f, beta = 0.0f;
    if (cublasSetStream (handle, stream) != CUBLAS_STATUS_SUCCESS)
        return KVT_ECUDA;
    cublasStatus_t status = cublasGemmEx (handle, CUBLAS_OP_T, CUBLAS_OP_N, args->n, args->m,
                                          args->k, &alpha, args->w, type, args->k, args->a,
                                          type, args->k, &beta, args->c, type, args->n,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return status == CUBLAS_STATUS_SUCCESS? 0: KVT_ECUDA;
}
