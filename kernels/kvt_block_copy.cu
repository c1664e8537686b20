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
        Also tried (issue #3, H100, 2026-11-27, both ways at once at 16
        and 64 KiB; tools/bench/RESULTS.md): L2::128B / L2::256B
        prefetch-size qualifiers and ld.global.nc on the loads, st.global
        (wb) or .wt stores instead of .cs, and a bulk L2 prefetch of each
        CTA's next unit. All within run-to-run noise (+-2 GB/s) both ways
        and each way alone, so none was kept.
    pair (kvt_block_copy_pair): both
        directions in one grid, CTAs taking units from one counter and
        alternating between the copies while both have units left. Two
        kernels on two streams end unevenly (the faster stream finishes
        first, the rest runs alone); the pair does not: +3 to +11 GB/s at
        16 KiB (78.7-83.3), +1 to +8 at 64 KiB (80.8-83.9), 19 of 19 runs.
        Its ceiling does not depend on where the host slots are (session
        6, H100, tools/bench/RESULTS.md): host slots in sequence, sorted
        or scattered over 2 GiB, 4 KiB or 2 MiB host pages, 1-4 CTAs per
        SM, 4-16 loads per thread, 4-64 KiB units: 79-84 GB/s both ways
        at 16 KiB - 2 MiB (mixes other than alternating units are
        lower), where the copy engines reach 90-95 with large copies.
        Sorting a batch by host slot gains ~1-2%.
    ce  copy engines: one cudaMemcpyBatchAsync of the blocks, adjacent
        slots merged into one copy; falls back to one cudaMemcpyAsync per
        run on the legacy default stream or where batching is refused.
        The runs come from kvt_block_copy_runs (kvt_block_copy_ref.c),
        shared with the staged path and its CPU twin.
    staged (kvt_block_copy_staged, issue #3): host runs on the engines,
        scattered GPU blocks by a device-to-device kernel (s_stage_kernel:
        the copy loop above, GPU slots of the piece in __grid_constant__
        parameters, so no slot list goes to the GPU first) through a ring
        of KVT_BLOCK_STAGE_RING staging pieces; events order each piece's
        kernel and engine copy, the caller's stream waits for the engine
        stream at the end. Untimed as of writing (tools/bench/RESULTS.md).
    hybrid (kvt_block_copy_hybrid, issue #3): both ways at once with fully
        scattered host slots, the pair and the engines' per-block copies
        at the same time; the engines take the last blocks of each copy
        (kvt_block_copy_hybrid_split, shared with the CPU twin) on one
        stream per copy, the pair the rest, the kernel's slot lists
        copied to the GPU in stream order (cudaMallocAsync). H100,
        2026-11-27, three processes, share by the rule from same-run
        rates (tools/bench/RESULTS.md): 256 KiB 85.6 / 87.5 / 88.3 GB/s
        both ways (pair 80.3-83.4, engines 74.2-86.2); 64 KiB 81.6-83.7
        (pair 75.7-82.4); 2 MiB no better than the engines alone; 16 KiB
        far worse (48.6-59.6 against the pair's 76-82): the engines'
        per-block copies cost ~4.5 us each to queue host->GPU and slow
        down under the kernel's traffic, while the kernel's span barely
        shrinks. Both paths share the link: it is not spare capacity.
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
#ifndef S_PAIR_CTAS_PER_SM
#   define S_PAIR_CTAS_PER_SM 2     //  kvt_block_copy_pair's default grid
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

//  The CTA copies 'bytes' from 'src' to 'dst' (16-byte aligned).
__device__ __forceinline__ void
s_copy_span (char *dst, const char *src, int64_t bytes)
{
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

//  The CTA copies one unit: 'unit_bytes' of block unit / units_per_block.
__device__ __forceinline__ void
s_copy_unit (const kvt_block_copy_args_t &a, int64_t unit, int64_t units_per_block,
             int64_t unit_bytes)
{
    int64_t block = unit / units_per_block;
    int64_t piece = unit % units_per_block;
    int64_t dst_slot = a.dst_slots [block];
    int64_t src_slot = a.src_slots [block];
    if (dst_slot < 0 || src_slot < 0)
        return;
    int64_t first = piece * unit_bytes;
    int64_t bytes = min (unit_bytes, a.block_bytes - first);
    s_copy_span ((char *) a.dst + dst_slot * a.dst_slot_bytes + first,
                 (const char *) a.src + src_slot * a.src_slot_bytes + first, bytes);
}

__global__ void __launch_bounds__ (S_THREADS)
s_copy_kernel (const kvt_block_copy_args_t a, int64_t units_per_block, int64_t unit_bytes,
               int64_t units)
{
    for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x)
        s_copy_unit (a, unit, units_per_block, unit_bytes);
}

//  Both directions in one grid (kvt_block_copy_pair): CTAs take units
//  from one counter, alternating between the two copies while both have
//  units left, so neither finishes early and leaves the other alone on
//  the link.
__global__ void __launch_bounds__ (S_THREADS)
s_pair_kernel (const kvt_block_copy_args_t a0, int64_t units_per_block0, int64_t unit_bytes0,
               int64_t units0, const kvt_block_copy_args_t a1, int64_t units_per_block1,
               int64_t unit_bytes1, int64_t units1, unsigned long long *next)
{
    __shared__ int64_t s_next;
    int64_t shared = 2 * min (units0, units1);      //  Alternating part
    int64_t total = units0 + units1;
    for (;;) {
        if (threadIdx.x == 0)
            s_next = (int64_t) atomicAdd (next, 1ull);
        __syncthreads ();
        int64_t k = s_next;
        __syncthreads ();
        if (k >= total)
            break;
        bool first;
        int64_t unit;
        if (k < shared) {
            first = (k & 1) == 0;
            unit = k >> 1;
        }
        else {
            first = units0 > units1;
            unit = (k - shared) + shared / 2;
        }
        if (first)
            s_copy_unit (a0, unit, units_per_block0, unit_bytes0);
        else
            s_copy_unit (a1, unit, units_per_block1, unit_bytes1);
    }
}

//  One piece of a staged copy: the GPU half, its GPU slots carried in
//  the kernel parameters (the slot lists stay host memory). Block k of
//  the piece sits at staging + k * block_bytes.
typedef struct {
    char *staging;                  //  The piece's staging
    char *gpu;                      //  GPU slab base
    int64_t gpu_slot_bytes;         //  Bytes between GPU slots
    int64_t block_bytes;            //  Bytes per block
    int64_t unit_bytes;             //  Bytes per CTA unit
    int64_t units_per_block;        //  Units per block
    int count;                      //  Blocks in the piece
    int to_staging;                 //  1: GPU slab -> staging, 0: the reverse
    int32_t gpu_slots [KVT_BLOCK_STAGE_PIECE_BLOCKS];   //  GPU slot per block, -1 skips
} s_stage_piece_t;

__global__ void __launch_bounds__ (S_THREADS)
s_stage_kernel (const __grid_constant__ s_stage_piece_t p)
{
    int64_t units = (int64_t) p.count * p.units_per_block;
    for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
        int64_t block = unit / p.units_per_block;
        int64_t slot = p.gpu_slots [block];
        if (slot < 0)
            continue;
        int64_t first = (unit % p.units_per_block) * p.unit_bytes;
        int64_t bytes = min (p.unit_bytes, p.block_bytes - first);
        char *stage = p.staging + block * p.block_bytes + first;
        char *gpu = p.gpu + slot * p.gpu_slot_bytes + first;
        if (p.to_staging)
            s_copy_span (stage, gpu, bytes);
        else
            s_copy_span (gpu, stage, bytes);
    }
}

}   //  namespace

//  Units of one copy: up to S_UNIT_BYTES of one block each.
static void
s_plan (const kvt_block_copy_args_t *args, int64_t *unit_bytes, int64_t *units_per_block,
        int64_t *units)
{
    *unit_bytes = args->block_bytes < S_UNIT_BYTES? args->block_bytes: S_UNIT_BYTES;
    *units_per_block = (args->block_bytes + *unit_bytes - 1) / *unit_bytes;
    *units = *units_per_block * args->count;
}

//  SMs of the current device, or 0 on error.
static int
s_sm_count (void)
{
    int device, sms;
    if (cudaGetDevice (&device) != cudaSuccess
    ||  cudaDeviceGetAttribute (&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return 0;
    return sms;
}

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
    int64_t unit_bytes, units_per_block, units;
    s_plan (args, &unit_bytes, &units_per_block, &units);
    int max_ctas = args->max_ctas;
    if (max_ctas == 0) {
        max_ctas = s_sm_count ();
        if (max_ctas == 0)
            return KVT_ECUDA;
        max_ctas *= S_CTAS_PER_SM;
    }
    int grid = units < max_ctas? (int) units: max_ctas;
    s_copy_kernel<<<grid, S_THREADS, 0, stream>>> (*args, units_per_block, unit_bytes, units);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  --------------------------------------------------------------------------
//  Queue both copies in one grid (see kvt_block_copy.cuh).

int
kvt_block_copy_pair (const kvt_block_copy_args_t *first, const kvt_block_copy_args_t *second,
                     int ctas, unsigned long long *counter, cudaStream_t stream)
{
    int rc = kvt_block_copy_check (first);
    if (rc == 0)
        rc = kvt_block_copy_check (second);
    if (rc == 0 && !counter)
        rc = -EINVAL;
    if (rc)
        return rc;
    int64_t unit_bytes0 = 0, units_per_block0 = 1, units0 = 0;
    int64_t unit_bytes1 = 0, units_per_block1 = 1, units1 = 0;
    if (first->count > 0)
        s_plan (first, &unit_bytes0, &units_per_block0, &units0);
    if (second->count > 0)
        s_plan (second, &unit_bytes1, &units_per_block1, &units1);
    if (units0 + units1 == 0)
        return 0;
    if (ctas == 0) {
        ctas = s_sm_count () * S_PAIR_CTAS_PER_SM;
        if (ctas == 0)
            return KVT_ECUDA;
    }
    int grid = units0 + units1 < ctas? (int) (units0 + units1): ctas;
    if (cudaMemsetAsync (counter, 0, sizeof (*counter), stream) != cudaSuccess)
        return KVT_ECUDA;
    s_pair_kernel<<<grid, S_THREADS, 0, stream>>> (*first, units_per_block0, unit_bytes0,
        units0, *second, units_per_block1, unit_bytes1, units1, counter);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  Queue 'count' runs of 'args' (kvt_block_copy_runs) on the copy
//  engines: one batch, or one cudaMemcpyAsync per run on the legacy
//  default stream or where batching is refused. Returns 0, -ENOMEM or
//  KVT_ECUDA.
static int
s_ce_queue (const kvt_block_copy_args_t *args, const kvt_block_run_t *runs, size_t count,
            cudaStream_t stream)
{
    if (count == 0)
        return 0;
    void **dsts = (void **) malloc (count * sizeof (void *));
    const void **srcs = (const void **) malloc (count * sizeof (void *));
    size_t *sizes = (size_t *) malloc (count * sizeof (size_t));
    if (!dsts || !srcs || !sizes) {
        free (dsts);
        free (srcs);
        free (sizes);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        dsts [i] = (char *) args->dst + runs [i].dst_offset;
        srcs [i] = (const char *) args->src + runs [i].src_offset;
        sizes [i] = (size_t) runs [i].bytes;
    }
    cudaError_t err = cudaErrorNotSupported;
    if (count > 1 && stream != 0) {
        cudaMemcpyAttributes attr;
        memset (&attr, 0, sizeof (attr));
        attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
        size_t attr_index = 0;
        err = cudaMemcpyBatchAsync (dsts, srcs, sizes, count, &attr, &attr_index, 1, stream);
        if (err != cudaSuccess)
            (void) cudaGetLastError ();     //  Clear it; the fallback below decides
    }
    if (err != cudaSuccess) {
        err = cudaSuccess;
        for (size_t i = 0; i < count && err == cudaSuccess; i++)
            err = cudaMemcpyAsync (dsts [i], srcs [i], sizes [i], cudaMemcpyDefault, stream);
    }
    free (dsts);
    free (srcs);
    free (sizes);
    return err == cudaSuccess? 0: KVT_ECUDA;
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
    kvt_block_run_t *runs = (kvt_block_run_t *) malloc (args->count * sizeof (kvt_block_run_t));
    if (!runs)
        return -ENOMEM;
    rc = s_ce_queue (args, runs, kvt_block_copy_runs (args, runs), stream);
    free (runs);
    return rc;
}

//  --------------------------------------------------------------------------
//  Staged copies (issue #3): the stage, then the copy

struct _kvt_block_stage_t {
    void *staging;                  //  GPU staging buffer
    size_t staging_bytes;           //  Its size
    cudaStream_t engine;            //  The host halves (copy engines) run here
    cudaEvent_t start;              //  The caller's stream reached the copy
    cudaEvent_t done;               //  The engine stream finished the copy
    cudaEvent_t kernel_done [KVT_BLOCK_STAGE_RING];  //  Piece's GPU half done, per ring slot
    cudaEvent_t engine_done [KVT_BLOCK_STAGE_RING];  //  Piece's host half done, per ring slot
};

kvt_block_stage_t *
kvt_block_stage_new (size_t staging_bytes)
{
    kvt_block_stage_t *self = (kvt_block_stage_t *) calloc (1, sizeof (kvt_block_stage_t));
    if (!self)
        return NULL;
    self->staging_bytes = staging_bytes;
    bool ok = staging_bytes > 0
           && cudaMalloc (&self->staging, staging_bytes) == cudaSuccess
           && cudaStreamCreateWithFlags (&self->engine, cudaStreamNonBlocking) == cudaSuccess
           && cudaEventCreateWithFlags (&self->start, cudaEventDisableTiming) == cudaSuccess
           && cudaEventCreateWithFlags (&self->done, cudaEventDisableTiming) == cudaSuccess;
    for (int k = 0; ok && k < KVT_BLOCK_STAGE_RING; k++)
        ok = cudaEventCreateWithFlags (&self->kernel_done [k], cudaEventDisableTiming)
             == cudaSuccess
          && cudaEventCreateWithFlags (&self->engine_done [k], cudaEventDisableTiming)
             == cudaSuccess;
    if (!ok) {
        (void) cudaGetLastError ();
        kvt_block_stage_destroy (&self);
    }
    return self;
}

void
kvt_block_stage_destroy (kvt_block_stage_t **self_p)
{
    kvt_block_stage_t *self = *self_p;
    if (self) {
        if (self->engine) {
            cudaStreamSynchronize (self->engine);
            cudaStreamDestroy (self->engine);
        }
        for (int k = 0; k < KVT_BLOCK_STAGE_RING; k++) {
            if (self->engine_done [k])
                cudaEventDestroy (self->engine_done [k]);
            if (self->kernel_done [k])
                cudaEventDestroy (self->kernel_done [k]);
        }
        if (self->done)
            cudaEventDestroy (self->done);
        if (self->start)
            cudaEventDestroy (self->start);
        cudaFree (self->staging);
        free (self);
        *self_p = NULL;
    }
}

size_t
kvt_block_stage_bytes (const kvt_block_stage_t *self)
{
    return self->staging_bytes;
}

//  Queue the GPU half of a piece: one kernel, GPU slots as parameters.
static int
s_stage_kernel_queue (const kvt_block_copy_args_t *half, bool to_staging, cudaStream_t stream)
{
    s_stage_piece_t p;
    p.staging = (char *) (to_staging? half->dst: half->src);
    p.gpu = (char *) (to_staging? half->src: half->dst);
    p.gpu_slot_bytes = to_staging? half->src_slot_bytes: half->dst_slot_bytes;
    p.block_bytes = half->block_bytes;
    p.count = half->count;
    p.to_staging = to_staging;
    const int64_t *stage_slots = to_staging? half->dst_slots: half->src_slots;
    const int64_t *gpu_slots = to_staging? half->src_slots: half->dst_slots;
    for (int k = 0; k < half->count; k++)
        p.gpu_slots [k] = stage_slots [k] < 0? -1: (int32_t) gpu_slots [k];
    kvt_block_copy_args_t plan_args = *half;
    int64_t units;
    s_plan (&plan_args, &p.unit_bytes, &p.units_per_block, &units);
    int max_ctas = half->max_ctas;
    if (max_ctas == 0) {
        max_ctas = s_sm_count () * S_CTAS_PER_SM;
        if (max_ctas == 0)
            return KVT_ECUDA;
    }
    int grid = units < max_ctas? (int) units: max_ctas;
    if (grid == 0)
        return 0;
    s_stage_kernel<<<grid, S_THREADS, 0, stream>>> (p);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  --------------------------------------------------------------------------
//  Queue a host <-> GPU copy through the stage (see kvt_block_copy.cuh).

int
kvt_block_copy_staged (kvt_block_stage_t *stage, const kvt_block_copy_args_t *args,
                       bool host_is_dst, cudaStream_t stream)
{
    if (!stage)
        return -EINVAL;
    kvt_block_stage_plan_t plan;
    int rc = kvt_block_copy_stage_plan (args, stage->staging_bytes, host_is_dst, &plan);
    if (rc || plan.pieces == 0)
        return rc;
    int64_t *stage_slots = (int64_t *) malloc (plan.piece_blocks * sizeof (int64_t));
    kvt_block_run_t *runs = (kvt_block_run_t *) malloc (plan.piece_blocks
                                                        * sizeof (kvt_block_run_t));
    if (!stage_slots || !runs) {
        free (stage_slots);
        free (runs);
        return -ENOMEM;
    }
    //  The engine stream starts after the work queued before on 'stream'
    if (cudaEventRecord (stage->start, stream) != cudaSuccess
    ||  cudaStreamWaitEvent (stage->engine, stage->start, 0) != cudaSuccess)
        rc = KVT_ECUDA;
    for (int64_t piece = 0; piece < plan.pieces && rc == 0; piece++) {
        int slot = (int) (piece % plan.ring);
        bool reuse = piece >= plan.ring;            //  This staging held an earlier piece
        char *base = (char *) stage->staging + slot * plan.piece_blocks * args->block_bytes;
        kvt_block_copy_args_t host_half, gpu_half;
        kvt_block_copy_stage_piece (args, host_is_dst, &plan, piece, base, stage_slots,
                                    &host_half, &gpu_half);
        size_t count = kvt_block_copy_runs (&host_half, runs);
        if (host_is_dst) {
            //  GPU -> staging (kernel, once the engines emptied this
            //  staging), then staging -> host runs (engines)
            if (reuse && cudaStreamWaitEvent (stream, stage->engine_done [slot], 0) != cudaSuccess)
                rc = KVT_ECUDA;
            if (rc == 0)
                rc = s_stage_kernel_queue (&gpu_half, true, stream);
            if (rc == 0
            &&  (cudaEventRecord (stage->kernel_done [slot], stream) != cudaSuccess
            ||   cudaStreamWaitEvent (stage->engine, stage->kernel_done [slot], 0) != cudaSuccess))
                rc = KVT_ECUDA;
            if (rc == 0)
                rc = s_ce_queue (&host_half, runs, count, stage->engine);
            if (rc == 0 && cudaEventRecord (stage->engine_done [slot], stage->engine) != cudaSuccess)
                rc = KVT_ECUDA;
        }
        else {
            //  Host runs -> staging (engines, once the kernel emptied this
            //  staging), then staging -> GPU (kernel)
            if (reuse
            &&  cudaStreamWaitEvent (stage->engine, stage->kernel_done [slot], 0) != cudaSuccess)
                rc = KVT_ECUDA;
            if (rc == 0)
                rc = s_ce_queue (&host_half, runs, count, stage->engine);
            if (rc == 0
            &&  (cudaEventRecord (stage->engine_done [slot], stage->engine) != cudaSuccess
            ||   cudaStreamWaitEvent (stream, stage->engine_done [slot], 0) != cudaSuccess))
                rc = KVT_ECUDA;
            if (rc == 0)
                rc = s_stage_kernel_queue (&gpu_half, false, stream);
            if (rc == 0 && cudaEventRecord (stage->kernel_done [slot], stream) != cudaSuccess)
                rc = KVT_ECUDA;
        }
    }
    //  Work queued on 'stream' later waits for the engine stream too (even
    //  after an error, so the staging is not reused under a running copy)
    if (cudaEventRecord (stage->done, stage->engine) != cudaSuccess
    ||  cudaStreamWaitEvent (stream, stage->done, 0) != cudaSuccess)
        rc = rc? rc: KVT_ECUDA;
    free (stage_slots);
    free (runs);
    return rc;
}

//  --------------------------------------------------------------------------
//  Hybrid copies (issue #3): the pair and the copy engines at once

struct _kvt_block_hybrid_t {
    unsigned long long *counter;    //  The pair's unit counter (device)
    cudaStream_t engines [2];       //  Engine part of the first / second copy
    cudaEvent_t start;              //  The caller's stream reached the copy
    cudaEvent_t done [2];           //  Each engine stream finished its part
};

kvt_block_hybrid_t *
kvt_block_hybrid_new (void)
{
    kvt_block_hybrid_t *self = (kvt_block_hybrid_t *) calloc (1, sizeof (kvt_block_hybrid_t));
    if (!self)
        return NULL;
    bool ok = cudaMalloc ((void **) &self->counter, sizeof (*self->counter)) == cudaSuccess
           && cudaEventCreateWithFlags (&self->start, cudaEventDisableTiming) == cudaSuccess;
    for (int k = 0; ok && k < 2; k++)
        ok = cudaStreamCreateWithFlags (&self->engines [k], cudaStreamNonBlocking) == cudaSuccess
          && cudaEventCreateWithFlags (&self->done [k], cudaEventDisableTiming) == cudaSuccess;
    if (!ok) {
        (void) cudaGetLastError ();
        kvt_block_hybrid_destroy (&self);
    }
    return self;
}

void
kvt_block_hybrid_destroy (kvt_block_hybrid_t **self_p)
{
    kvt_block_hybrid_t *self = *self_p;
    if (self) {
        for (int k = 0; k < 2; k++) {
            if (self->engines [k]) {
                cudaStreamSynchronize (self->engines [k]);
                cudaStreamDestroy (self->engines [k]);
            }
            if (self->done [k])
                cudaEventDestroy (self->done [k]);
        }
        if (self->start)
            cudaEventDestroy (self->start);
        cudaFree (self->counter);
        free (self);
        *self_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Queue both copies, split between the pair and the engines (see
//  kvt_block_copy.cuh).

int
kvt_block_copy_hybrid (kvt_block_hybrid_t *self, const kvt_block_copy_args_t *first,
                       const kvt_block_copy_args_t *second, double share, cudaStream_t stream)
{
    if (!self)
        return -EINVAL;
    int rc = kvt_block_copy_check (first);
    if (rc == 0)
        rc = kvt_block_copy_check (second);
    if (rc)
        return rc;
    kvt_block_copy_args_t kernel [2], engine [2];
    kvt_block_copy_hybrid_split (first, share, &kernel [0], &engine [0]);
    kvt_block_copy_hybrid_split (second, share, &kernel [1], &engine [1]);
    //  The engine streams start with this copy, after the work queued
    //  before on 'stream'
    if (cudaEventRecord (self->start, stream) != cudaSuccess
    ||  cudaStreamWaitEvent (self->engines [0], self->start, 0) != cudaSuccess
    ||  cudaStreamWaitEvent (self->engines [1], self->start, 0) != cudaSuccess)
        return KVT_ECUDA;
    //  The kernel's slot lists to the GPU: source then destination slots
    //  of each copy, allocated and freed in stream order
    size_t slots = 2 * (size_t) (kernel [0].count + kernel [1].count);
    int64_t *d_slots = NULL;
    if (slots > 0) {
        int64_t *h_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        if (!h_slots)
            return -ENOMEM;
        size_t at = 0;
        for (int c = 0; c < 2; c++) {
            memcpy (h_slots + at, kernel [c].src_slots, kernel [c].count * sizeof (int64_t));
            memcpy (h_slots + at + kernel [c].count, kernel [c].dst_slots,
                    kernel [c].count * sizeof (int64_t));
            at += 2 * (size_t) kernel [c].count;
        }
        if (cudaMallocAsync ((void **) &d_slots, slots * sizeof (int64_t), stream) != cudaSuccess
        ||  cudaMemcpyAsync (d_slots, h_slots, slots * sizeof (int64_t), cudaMemcpyHostToDevice,
                             stream) != cudaSuccess)
            rc = KVT_ECUDA;
        free (h_slots);
        at = 0;
        for (int c = 0; c < 2 && rc == 0; c++) {
            kernel [c].src_slots = d_slots + at;
            kernel [c].dst_slots = d_slots + at + kernel [c].count;
            at += 2 * (size_t) kernel [c].count;
        }
    }
    if (rc == 0 && slots > 0)
        rc = kvt_block_copy_pair (&kernel [0], &kernel [1], 0, self->counter, stream);
    if (d_slots && cudaFreeAsync (d_slots, stream) != cudaSuccess)
        rc = rc? rc: KVT_ECUDA;
    bool joined [2] = { false, false };
    for (int c = 0; c < 2 && rc == 0; c++) {
        if (engine [c].count == 0)
            continue;
        rc = kvt_block_copy_ce (&engine [c], self->engines [c]);
        if (rc == 0
        &&  (cudaEventRecord (self->done [c], self->engines [c]) != cudaSuccess
        ||   cudaStreamWaitEvent (stream, self->done [c], 0) != cudaSuccess))
            rc = KVT_ECUDA;
        joined [c] = rc == 0;
    }
    //  After an error, 'stream' still waits for whatever the engines queued
    for (int c = 0; c < 2; c++)
        if (!joined [c] && engine [c].count > 0
        &&  (cudaEventRecord (self->done [c], self->engines [c]) != cudaSuccess
        ||   cudaStreamWaitEvent (stream, self->done [c], 0) != cudaSuccess))
            rc = rc? rc: KVT_ECUDA;
    return rc;
}
