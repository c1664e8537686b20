/*  =========================================================================
    kvt_fp8 - FP8 (e4m3) quantization of KV blocks on the GPU

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Versions:
    v1  one CTA of 256 threads per (plane, block): 16-byte loads, a block
        reduction for the plane's amax, then one conversion pass (the
        plane is re-read from L1/L2). Dequantization is one pass.
@end
*/

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include "kvt_fp8.cuh"
#include "kvt_device.cuh"

#define S_THREADS 256               //  Threads per CTA
#define S_FP8_MAX 448.0f            //  Largest finite e4m3 value

namespace {

//  grid = (planes, count)
template <typename T>
__global__ void __launch_bounds__ (S_THREADS)
s_quantize_kernel (const kvt_fp8_args_t a)
{
    __shared__ float sm_max [S_THREADS / 32];
    const int plane = blockIdx.x;
    const int block = blockIdx.y;
    const int64_t src_slot = a.src_slots [block];
    const int64_t dst_slot = a.dst_slots [block];
    const T *src = (const T *) ((const char *) a.src + src_slot * a.src_slot_bytes)
                 + (size_t) plane * a.plane_elems;
    uint8_t *dst = (uint8_t *) a.dst + dst_slot * a.dst_slot_bytes
                 + (size_t) plane * a.plane_elems;
    float amax = 0.0f;
    for (int e = threadIdx.x * 8; e < a.plane_elems; e += S_THREADS * 8) {
        uint4 raw = *(const uint4 *) (src + e);
        const T *values = (const T *) &raw;
#pragma unroll
        for (int i = 0; i < 8; i++)
            amax = fmaxf (amax, fabsf (kvt_dev_to_float<T> (values [i])));
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        amax = fmaxf (amax, __shfl_xor_sync (0xffffffffu, amax, offset));
    if ((threadIdx.x & 31) == 0)
        sm_max [threadIdx.x >> 5] = amax;
    __syncthreads ();
    amax = 0.0f;
#pragma unroll
    for (int w = 0; w < S_THREADS / 32; w++)
        amax = fmaxf (amax, sm_max [w]);
    const float inverse = amax > 0.0f? S_FP8_MAX / amax: 1.0f;
    const int64_t stride = a.scale_stride? a.scale_stride: a.planes;
    if (threadIdx.x == 0)
        a.scales [dst_slot * stride + plane] = amax > 0.0f? amax / S_FP8_MAX: 1.0f;
    for (int e = threadIdx.x * 8; e < a.plane_elems; e += S_THREADS * 8) {
        uint4 raw = *(const uint4 *) (src + e);
        const T *values = (const T *) &raw;
        uint8_t q [8];
#pragma unroll
        for (int i = 0; i < 8; i++)
            q [i] = (uint8_t) __nv_cvt_float_to_fp8 (kvt_dev_to_float<T> (values [i]) * inverse,
                                                     __NV_SATFINITE, __NV_E4M3);
        *(uint2 *) (dst + e) = *(const uint2 *) q;
    }
}

template <typename T>
__global__ void __launch_bounds__ (S_THREADS)
s_dequantize_kernel (const kvt_fp8_args_t a)
{
    const int plane = blockIdx.x;
    const int block = blockIdx.y;
    const int64_t src_slot = a.src_slots [block];
    const int64_t dst_slot = a.dst_slots [block];
    const uint8_t *src = (const uint8_t *) a.src + src_slot * a.src_slot_bytes
                       + (size_t) plane * a.plane_elems;
    T *dst = (T *) ((char *) a.dst + dst_slot * a.dst_slot_bytes)
           + (size_t) plane * a.plane_elems;
    const int64_t stride = a.scale_stride? a.scale_stride: a.planes;
    const float scale = a.scales [src_slot * stride + plane];
    for (int e = threadIdx.x * 8; e < a.plane_elems; e += S_THREADS * 8) {
        uint2 raw = *(const uint2 *) (src + e);
        const uint8_t *q = (const uint8_t *) &raw;
        uint4 out;
        T *values = (T *) &out;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            __half_raw h = __nv_cvt_fp8_to_halfraw (q [i], __NV_E4M3);
            values [i] = kvt_dev_from_float<T> (__half2float (__half (h)) * scale);
        }
        *(uint4 *) (dst + e) = out;
    }
}

int
s_check_launch (const kvt_fp8_args_t *args)
{
    int rc = kvt_fp8_check (args);
    if (rc)
        return rc;
    if (args->count > 65535)
        return -EINVAL;
    return 0;
}

}   //  namespace

//  --------------------------------------------------------------------------
//  Queue quantization on 'stream'.

int
kvt_fp8_quantize (const kvt_fp8_args_t *args, cudaStream_t stream)
{
    int rc = s_check_launch (args);
    if (rc || args->count == 0)
        return rc;
    dim3 grid (args->planes, args->count);
    if (args->dtype == KVT_KDTYPE_BF16)
        s_quantize_kernel<__nv_bfloat16> <<<grid, S_THREADS, 0, stream>>> (*args);
    else
        s_quantize_kernel<__half> <<<grid, S_THREADS, 0, stream>>> (*args);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  --------------------------------------------------------------------------
//  Queue dequantization on 'stream'.

int
kvt_fp8_dequantize (const kvt_fp8_args_t *args, cudaStream_t stream)
{
    int rc = s_check_launch (args);
    if (rc || args->count == 0)
        return rc;
    dim3 grid (args->planes, args->count);
    if (args->dtype == KVT_KDTYPE_BF16)
        s_dequantize_kernel<__nv_bfloat16> <<<grid, S_THREADS, 0, stream>>> (*args);
    else
        s_dequantize_kernel<__half> <<<grid, S_THREADS, 0, stream>>> (*args);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}
