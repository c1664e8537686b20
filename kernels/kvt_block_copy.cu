/*  =========================================================================
    kvt_block_copy - block gather/scatter kernel and batched copy-engine path

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Versions (compared in tools/bench/kvt_bench_transfer.c):
    v1  kernel: a persistent grid (one CTA per SM) walks units of up to
        64 KiB of one block; each thread loads 8 x 16 bytes before storing
        them, so a CTA of 256 threads keeps 32 KiB in flight. Slots are
        read once per unit (broadcast). On the H100 (2026-11-27) 8 loads
        per thread gave 77-80 GB/s both ways at once against 75-76 for 4;
        each direction alone 92-95% of a 1 GiB pinned cudaMemcpy either way.
        Tried and dropped: more CTAs (2 per SM, or caps of 264/396), and a
        bulk-copy (TMA) ring through shared memory, one thread per CTA
        driving 4 x 16 KiB stages: no better both ways (76-81 GB/s), worse
        host->GPU at 16 KiB (46 GB/s).
    ce  copy engines: one cudaMemcpyBatchAsync of the blocks, adjacent
        slots merged into one copy; falls back to one cudaMemcpyAsync per
        run on the legacy default stream or where batching is refused.
@end
*/

#include <stdlib.h>
#include <string.h>
#include "kvt_block_copy.cuh"

#define S_THREADS    256            //  Threads per CTA
#ifndef S_UNROLL
#   define S_UNROLL  8              //  16-byte loads in flight per thread
#endif
#ifndef S_CTAS_PER_SM
#   define S_CTAS_PER_SM 1          //  Default grid: CTAs per SM
#endif
#define S_PASS_BYTES (S_THREADS * S_UNROLL * 16)   //  Bytes a CTA moves per pass
#define S_UNIT_BYTES (64 * 1024)    //  Bytes of one block a CTA takes at a time

namespace {

__device__ __forceinline__ uint4
s_load (const void *address)
{
    uint4 r;
    asm volatile ("ld.global.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                  : "=r" (r.x), "=r" (r.y), "=r" (r.z), "=r" (r.w) : "l" (address));
    return r;
}

__device__ __forceinline__ void
s_store (void *address, uint4 r)
{
    asm volatile ("st.global.cs.v4.u32 [%0], {%1,%2,%3,%4};"
                  :: "l" (address), "r" (r.x), "r" (r.y), "r" (r.z), "r" (r.w) : "memory");
}

__global__ void __launch_bounds__ (S_THREADS)
s_copy_kernel (const kvt_block_copy_args_t a, int64_t units_per_block, int64_t unit_bytes,
               int64_t units)
{
    for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
        int64_t block = unit / units_per_block;
        int64_t piece = unit % units_per_block;
        int64_t dst_slot = a.dst_slots [block];
        int64_t src_slot = a.src_slots [block];
        if (dst_slot < 0 || src_slot < 0)
            continue;
        int64_t first = piece * unit_bytes;
        int64_t bytes = min (unit_bytes, a.block_bytes - first);
        const char *src = (const char *) a.src + src_slot * a.src_slot_bytes + first;
        char *dst = (char *) a.dst + dst_slot * a.dst_slot_bytes + first;
        for (int64_t pass = 0; pass < bytes; pass += S_PASS_BYTES) {
            uint4 r [S_UNROLL];
#pragma unroll
            for (int u = 0; u < S_UNROLL; u++) {
                int64_t offset = pass + ((int64_t) u * S_THREADS + threadIdx.x) * 16;
                if (offset < bytes)
                    r [u] = s_load (src + offset);
            }
#pragma unroll
            for (int u = 0; u < S_UNROLL; u++) {
                int64_t offset = pass + ((int64_t) u * S_THREADS + threadIdx.x) * 16;
                if (offset < bytes)
                    s_store (dst + offset, r [u]);
            }
        }
    }
}


}   //  namespace

//  --------------------------------------------------------------------------
//  Queue the gather/scatter kernel on 'stream'.

int
kvt_block_copy (const kvt_block_copy_args_t *args, cudaStream_t stream)
{
    int rc = kvt_block_copy_check (args);
    if (rc)
        return rc;
    if (args->count == 0)
        return 0;
    int64_t unit_bytes = args->block_bytes < S_UNIT_BYTES? args->block_bytes: S_UNIT_BYTES;
    int64_t units_per_block = (args->block_bytes + unit_bytes - 1) / unit_bytes;
    int64_t units = units_per_block * args->count;
    int max_ctas = args->max_ctas;
    if (max_ctas == 0) {
        int device;
        if (cudaGetDevice (&device) != cudaSuccess
        ||  cudaDeviceGetAttribute (&max_ctas, cudaDevAttrMultiProcessorCount, device)
            != cudaSuccess)
            return KVT_ECUDA;
        max_ctas *= S_CTAS_PER_SM;
    }
    int grid = units < max_ctas? (int) units: max_ctas;
    s_copy_kernel<<<grid, S_THREADS, 0, stream>>> (*args, units_per_block, unit_bytes, units);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  --------------------------------------------------------------------------
//  Queue the copies on the copy engines in one batch.

int
kvt_block_copy_ce (const kvt_block_copy_args_t *args, cudaStream_t stream)
{
    int rc = kvt_block_copy_check (args);
    if (rc)
        return rc;
    if (args->count == 0)
        return 0;
    void **dsts = (void **) malloc (args->count * sizeof (void *));
    const void **srcs = (const void **) malloc (args->count * sizeof (void *));
    size_t *sizes = (size_t *) malloc (args->count * sizeof (size_t));
    if (!dsts || !srcs || !sizes) {
        free (dsts);
        free (srcs);
        free (sizes);
        return -ENOMEM;
    }
    size_t runs = 0;
    for (int i = 0; i < args->count; i++) {
        if (args->dst_slots [i] < 0 || args->src_slots [i] < 0)
            continue;
        char *dst = (char *) args->dst + args->dst_slots [i] * args->dst_slot_bytes;
        const char *src = (const char *) args->src + args->src_slots [i] * args->src_slot_bytes;
        if (runs > 0
        &&  (char *) dsts [runs - 1] + sizes [runs - 1] == dst
        &&  (const char *) srcs [runs - 1] + sizes [runs - 1] == src)
            sizes [runs - 1] += (size_t) args->block_bytes;     //  Adjacent: extend the run
        else {
            dsts [runs] = dst;
            srcs [runs] = src;
            sizes [runs] = (size_t) args->block_bytes;
            runs++;
        }
    }
    cudaError_t err = cudaErrorNotSupported;
    if (runs > 1 && stream != 0) {
        cudaMemcpyAttributes attr;
        memset (&attr, 0, sizeof (attr));
        attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
        size_t attr_index = 0;
        err = cudaMemcpyBatchAsync (dsts, srcs, sizes, runs, &attr, &attr_index, 1, stream);
        if (err != cudaSuccess)
            (void) cudaGetLastError ();     //  Clear it; the fallback below decides
    }
    if (err != cudaSuccess) {
        err = cudaSuccess;
        for (size_t i = 0; i < runs && err == cudaSuccess; i++)
            err = cudaMemcpyAsync (dsts [i], srcs [i], sizes [i], cudaMemcpyDefault, stream);
    }
    free (dsts);
    free (srcs);
    free (sizes);
    return err == cudaSuccess? 0: KVT_ECUDA;
}
