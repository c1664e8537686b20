/*  =========================================================================
    kvt_device - the PTX wrappers and conversions the attention kernels share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Small __device__ helpers, each one instruction or close to it, used by
    the paged decode (bf16 and FP8), paged prefill, FP8 and layer kernels:
    streaming loads, cp.async, ldmatrix / movmatrix, the m16n8k16
    tensor-core MMA, packing two floats into a bf16 or fp16 pair,
    conversions, and ex2. Everything is force-inlined, so a kernel compiles
    to the same code as with its own copies (the PTX of every kernel was
    compared before and after they moved here: identical). For the kernels
    of this folder only.
@end
*/

#ifndef KVT_DEVICE_CUH_INCLUDED
#define KVT_DEVICE_CUH_INCLUDED

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#ifdef KVT_WS_WATCHDOG
#   include <stdio.h>
#endif

//  Read 16 bytes that no one writes while the kernel runs; stream past L1
__device__ __forceinline__ uint4
kvt_dev_load_stream (const void *address)
{
    uint4 r;
    asm volatile ("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                  : "=r" (r.x), "=r" (r.y), "=r" (r.z), "=r" (r.w) : "l" (address));
    return r;
}

//  Copy 16 bytes global -> shared without registers (cp.async, L2 only)
__device__ __forceinline__ void
kvt_dev_cp_async16 (void *smem, const void *global)
{
    uint32_t address = (uint32_t) __cvta_generic_to_shared (smem);
    asm volatile ("cp.async.cg.shared.global [%0], [%1], 16;" :: "r" (address), "l" (global));
}

//  Four 8x8 b16 matrices from shared memory into MMA fragments
__device__ __forceinline__ void
kvt_dev_ldsm_x4 (uint32_t *r, const void *smem)
{
    uint32_t address = (uint32_t) __cvta_generic_to_shared (smem);
    asm volatile ("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                  : "=r" (r [0]), "=r" (r [1]), "=r" (r [2]), "=r" (r [3]) : "r" (address));
}

//  As kvt_dev_ldsm_x4, each matrix transposed
__device__ __forceinline__ void
kvt_dev_ldsm_x4_trans (uint32_t *r, const void *smem)
{
    uint32_t address = (uint32_t) __cvta_generic_to_shared (smem);
    asm volatile ("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                  : "=r" (r [0]), "=r" (r [1]), "=r" (r [2]), "=r" (r [3]) : "r" (address));
}

//  The four 32-bit words of a 16-byte chunk a lane holds (a stage's tile
//  rows as uint4), for the mma fragments built from them
__device__ __forceinline__ void
kvt_dev_words (const uint4 &chunk, uint32_t (&words) [4])
{
    words [0] = chunk.x;
    words [1] = chunk.y;
    words [2] = chunk.z;
    words [3] = chunk.w;
}

//  Transpose an 8x8 b16 matrix held across the warp
__device__ __forceinline__ uint32_t
kvt_dev_movmatrix_trans (uint32_t value)
{
    uint32_t r;
    asm volatile ("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r" (r) : "r" (value));
    return r;
}

//  2^x on the special-function unit; 2^-inf = 0
__device__ __forceinline__ float
kvt_dev_exp2 (float x)
{
    float r;
    asm ("ex2.approx.ftz.f32 %0, %1;" : "=f" (r) : "f" (x));
    return r;
}

//  exp2 (a - b) that is 0, not NaN, when a is -inf
__device__ __forceinline__ float
kvt_dev_rescale (float a, float b)
{
    return a == -INFINITY? 0.0f: exp2f (a - b);
}

//  c += a b on the tensor cores: m16n8k16, T = bf16 or fp16 inputs, fp32 c
template <typename T> __device__ __forceinline__ void
kvt_dev_mma (float *c, const uint32_t *a, uint32_t b0, uint32_t b1);

template <> __device__ __forceinline__ void
kvt_dev_mma<__nv_bfloat16> (float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                  "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                  : "+f" (c [0]), "+f" (c [1]), "+f" (c [2]), "+f" (c [3])
                  : "r" (a [0]), "r" (a [1]), "r" (a [2]), "r" (a [3]), "r" (b0), "r" (b1));
}

template <> __device__ __forceinline__ void
kvt_dev_mma<__half> (float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                  "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                  : "+f" (c [0]), "+f" (c [1]), "+f" (c [2]), "+f" (c [3])
                  : "r" (a [0]), "r" (a [1]), "r" (a [2]), "r" (a [3]), "r" (b0), "r" (b1));
}

//  Two floats as one T pair (round to nearest), in 32 bits
template <typename T> __device__ __forceinline__ uint32_t kvt_dev_pack (float lo, float hi);

template <> __device__ __forceinline__ uint32_t
kvt_dev_pack<__nv_bfloat16> (float lo, float hi)
{
    __nv_bfloat162 pair = __floats2bfloat162_rn (lo, hi);
    return *reinterpret_cast <uint32_t *> (&pair);
}

template <> __device__ __forceinline__ uint32_t
kvt_dev_pack<__half> (float lo, float hi)
{
    __half2 pair = __floats2half2_rn (lo, hi);
    return *reinterpret_cast <uint32_t *> (&pair);
}

//  A T as float
template <typename T> __device__ __forceinline__ float kvt_dev_to_float (T value);
template <> __device__ __forceinline__ float
kvt_dev_to_float<__nv_bfloat16> (__nv_bfloat16 value) { return __bfloat162float (value); }
template <> __device__ __forceinline__ float
kvt_dev_to_float<__half> (__half value) { return __half2float (value); }

//  A float as T (round to nearest)
template <typename T> __device__ __forceinline__ T kvt_dev_from_float (float value);
template <> __device__ __forceinline__ __nv_bfloat16
kvt_dev_from_float<__nv_bfloat16> (float value) { return __float2bfloat16_rn (value); }
template <> __device__ __forceinline__ __half
kvt_dev_from_float<__half> (float value) { return __float2half_rn (value); }


//  mbarriers in shared memory and bulk copies (sm_90; callers guard the
//  architecture). 'bar' is the barrier's shared-memory address.
__device__ __forceinline__ void
kvt_dev_bar_init (uint32_t bar, uint32_t count)
{
    asm volatile ("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r" (bar), "r" (count) : "memory");
}

//  Order this thread's earlier generic-proxy reads of shared memory before
//  later async-proxy writes (bulk copies) to it: a decode ring's consumer
//  runs it after copying a stage to registers and before giving the stage
//  back, since the stage's refill is a bulk copy. Without it the refill
//  could land under loads still in flight: session 23 found decode v5 at
//  forced splits and an 8-stage ring giving other bits on the second of
//  two runs (64 x 1027 tokens), and the 8B model's decode losing batch
//  invariance at 26 stages; with it, 2 x 150 runs gave the same bits.
__device__ __forceinline__ void
kvt_dev_fence_reads_before_refill (void)
{
    asm volatile ("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void
kvt_dev_bar_arrive (uint32_t bar)
{
    asm volatile ("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r" (bar) : "memory");
}

//  Arrive, and expect 'bytes' more from bulk copies in this phase
__device__ __forceinline__ void
kvt_dev_bar_expect (uint32_t bar, uint32_t bytes)
{
    asm volatile ("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
                  :: "r" (bar), "r" (bytes) : "memory");
}

//  'bytes' (a multiple of 16) from global to shared memory by the SM's copy
//  engine, counted on 'bar' as they land
__device__ __forceinline__ void
kvt_dev_bulk_copy (uint32_t smem, const void *global, uint32_t bytes, uint32_t bar)
{
    asm volatile ("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
                  " [%0], [%1], %2, [%3];"
                  :: "r" (smem), "l" (global), "r" (bytes), "r" (bar) : "memory");
}

//  Until the phase of parity 'parity' has completed. Built with
//  -DKVT_WS_WATCHDOG, a wait that spins 4M times prints who waits where
//  and traps: that is how prefill v4's first deadlock was found (every
//  consumer on tile 1's full barrier, the producer on tile 0's empty one).
__device__ __forceinline__ void
kvt_dev_bar_wait (uint32_t bar, uint32_t parity)
{
#ifdef KVT_WS_WATCHDOG
    for (long spins = 0; ; spins++) {
        uint32_t done;
        asm volatile ("{\n.reg .pred p;\n"
                      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                      "selp.u32 %0, 1, 0, p;\n}\n" : "=r" (done) : "r" (bar), "r" (parity) : "memory");
        if (done)
            return;
        if (spins == (1l << 22)) {
            printf ("WS hang: block %d,%d,%d thread %d bar %u parity %u\n", blockIdx.x, blockIdx.y,
                    blockIdx.z, threadIdx.x, bar & 0xffff, parity);
            __trap ();
        }
    }
#else
    asm volatile ("{\n.reg .pred done;\nWAIT:\n"
                  "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                  "@!done bra WAIT;\n}\n" :: "r" (bar), "r" (parity) : "memory");
#endif
}

#endif
