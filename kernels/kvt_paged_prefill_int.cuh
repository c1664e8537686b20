/*  =========================================================================
    kvt_paged_prefill_int - what the prefill kernel files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The paged prefill attention is two files: kvt_paged_prefill.cu (v1 and
    v2 on mma.sync, the dispatch, the public entry) and
    kvt_paged_prefill_wgmma.cu (v3 on wgmma, built for sm_90a). This header
    gives both the device helpers they share and the v3 launcher. For
    those two files only.
@end
*/

#ifndef KVT_PAGED_PREFILL_INT_CUH_INCLUDED
#define KVT_PAGED_PREFILL_INT_CUH_INCLUDED

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <type_traits>
#include "kvt_paged_prefill.cuh"

#define S_D      128                //  head_dim

namespace kvt_paged_prefill_detail {

__device__ __forceinline__ void
s_cp_async16 (void *smem, const void *global)
{
    uint32_t address = (uint32_t) __cvta_generic_to_shared (smem);
    asm volatile ("cp.async.cg.shared.global [%0], [%1], 16;" :: "r" (address), "l" (global));
}

__device__ __forceinline__ void
s_ldsm_x4 (uint32_t *r, const void *smem)
{
    uint32_t address = (uint32_t) __cvta_generic_to_shared (smem);
    asm volatile ("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                  : "=r" (r [0]), "=r" (r [1]), "=r" (r [2]), "=r" (r [3]) : "r" (address));
}

__device__ __forceinline__ void
s_ldsm_x4_trans (uint32_t *r, const void *smem)
{
    uint32_t address = (uint32_t) __cvta_generic_to_shared (smem);
    asm volatile ("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                  : "=r" (r [0]), "=r" (r [1]), "=r" (r [2]), "=r" (r [3]) : "r" (address));
}

//  2^x on the special-function unit; 2^-inf = 0
__device__ __forceinline__ float
s_exp2 (float x)
{
    float r;
    asm ("ex2.approx.ftz.f32 %0, %1;" : "=f" (r) : "f" (x));
    return r;
}

template <typename T> __device__ __forceinline__ void
s_mma (float *c, const uint32_t *a, uint32_t b0, uint32_t b1);

template <> __device__ __forceinline__ void
s_mma<__nv_bfloat16> (float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                  "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                  : "+f" (c [0]), "+f" (c [1]), "+f" (c [2]), "+f" (c [3])
                  : "r" (a [0]), "r" (a [1]), "r" (a [2]), "r" (a [3]), "r" (b0), "r" (b1));
}

template <> __device__ __forceinline__ void
s_mma<__half> (float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                  "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                  : "+f" (c [0]), "+f" (c [1]), "+f" (c [2]), "+f" (c [3])
                  : "r" (a [0]), "r" (a [1]), "r" (a [2]), "r" (a [3]), "r" (b0), "r" (b1));
}

template <typename T> __device__ __forceinline__ uint32_t s_pack (float lo, float hi);

template <> __device__ __forceinline__ uint32_t
s_pack<__nv_bfloat16> (float lo, float hi)
{
    __nv_bfloat162 pair = __floats2bfloat162_rn (lo, hi);
    return *reinterpret_cast <uint32_t *> (&pair);
}

template <> __device__ __forceinline__ uint32_t
s_pack<__half> (float lo, float hi)
{
    __half2 pair = __floats2half2_rn (lo, hi);
    return *reinterpret_cast <uint32_t *> (&pair);
}

}   //  namespace kvt_paged_prefill_detail

//  True when this binary holds the sm_90a build of v3 (BN keys per tile);
//  instantiated for bf16 and fp16, BN 64 and 128.
template <typename T, int BN>
bool
    kvt_paged_prefill_have_wgmma ();

//  Queue v3 on 'stream' (only when kvt_paged_prefill_have_wgmma). Returns
//  0 or KVT_ECUDA.
template <typename T, int BN>
int
    kvt_paged_prefill_launch_wgmma (const kvt_paged_prefill_args_t *a, cudaStream_t stream);

#endif
