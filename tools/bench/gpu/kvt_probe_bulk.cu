/*  =========================================================================
    kvt_probe_bulk - how fast decode's bulk-copy ring reads scattered pages,
    with no math, by copy size

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A diagnostic, not a bench of kvtier: decode v4's ring as it stands (one
    CTA a SM, one producer warp whose lane 0 issues a tile's two bulk
    copies, 7 warps taking tiles round-robin, a ring of up to 208 KiB) with
    the computing warps releasing each stage as soon as it lands. The tile's
    two copies come from two random pages of S bytes of a 2 GiB pool, as
    decode's K and V of one KV head come from a shuffled block table (at 16
    and 32 KiB the ring holds 6 and 3 stages, taken by as many warps). What
    it reads per S is the ceiling of that ring for copies of S bytes: a
    decode kernel that reaches it is bound by its copies, not its math.
    Then the same ring with 2 and 4 producer warps (p2, p4; 6 and 4 takers,
    so that each taker's tiles come from one producer). Beside it, a 1 GiB
    device-to-device memcpy in the same run. H200, session 25
    (tools/bench/RESULTS.md): 2.84 / 4.25-4.30 / 4.39-4.43 / 4.49-4.50 /
    4.52 TB/s at 2 / 4 / 8 / 16 / 32 KiB, memcpy 4.22-4.25: 4 KiB copies
    (16-token blocks of one KV head) cap the ring under cuDNN's decode
    (4.28-4.54); 16 KiB and more (four KV heads of a block at once) reach
    it. Session 27: with two producers 4 KiB copies read 4.38-4.40 (one:
    4.23-4.24), with four 4.46: the cap is one warp's issue, not the copies.
    Usage: kvt_probe_bulk (sm_90 or later)
@end
*/

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>
#include "kvt_decode_bulk.cuh"

namespace {

#define S_CONSUMERS 7                   //  As decode v4
#define S_MAX_PRODUCERS 4
#define S_RING_BYTES (208 * 1024)
#define S_MAX_STAGES 64
#define S_POOL_BYTES ((size_t) 2 << 30)
#define S_REPS 7                        //  The first is a warm-up

//  Tiles [begin, end) of 'tiles' go to CTA blockIdx.x; tile i reads pages
//  pages [2i] and pages [2i + 1] of 'bytes' each into one stage. With
//  'producers' warps issuing, warp p issues tiles p, p + producers, ...;
//  'stages' and 'takers' are multiples of 'producers', so each stage and
//  each taker has one producer, and the ring's waits stay exact
//  (tests/test_decode_ring.c: with 7 takers and 2 producers they are not)
__global__ void __launch_bounds__ ((S_CONSUMERS + S_MAX_PRODUCERS) * 32, 1)
s_probe_kernel (const char *pool, const int *pages, long tiles, int bytes, int stages,
                int takers, int producers, unsigned *sink)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    __shared__ __align__ (8) uint64_t sm_full [S_MAX_STAGES];
    __shared__ __align__ (8) uint64_t sm_empty [S_MAX_STAGES];
    extern __shared__ __align__ (128) unsigned char sm_ring [];
    const long begin = tiles * blockIdx.x / gridDim.x;
    const int count = (int) (tiles * (blockIdx.x + 1) / gridDim.x - begin);
    const uint32_t ring = (uint32_t) __cvta_generic_to_shared (sm_ring);
    const uint32_t full0 = (uint32_t) __cvta_generic_to_shared (sm_full);
    const uint32_t empty0 = (uint32_t) __cvta_generic_to_shared (sm_empty);
    kvt_dev_ring_init (full0, empty0, stages);         //  Decode's own
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= S_CONSUMERS) {
        //  Producer: 32 tiles' pages looked up at a time, as decode's table
        const int p = warp - S_CONSUMERS;
        const int span = 32 * producers;
        int stage = p;
        uint32_t phase = 0;
        for (int j0 = p; j0 < count; j0 += span) {
            int k_page = 0, v_page = 0;
            if (j0 + lane * producers < count) {
                k_page = pages [2 * (begin + j0 + lane * producers)];
                v_page = pages [2 * (begin + j0 + lane * producers) + 1];
            }
            for (int j = j0; j < min (count, j0 + span); j += producers) {
                int k = __shfl_sync (0xffffffffu, k_page, (j - j0) / producers);
                int v = __shfl_sync (0xffffffffu, v_page, (j - j0) / producers);
                if (j >= stages)
                    kvt_dev_bar_wait (empty0 + 8 * stage, phase ^ 1);
                if (lane == 0) {
                    uint32_t bar = full0 + 8 * stage;
                    uint32_t dst = ring + stage * 2 * bytes;
                    kvt_dev_bar_expect (bar, 2 * bytes);
                    kvt_dev_bulk_copy (dst, pool + (size_t) k * bytes, bytes, bar);
                    kvt_dev_bulk_copy (dst + bytes, pool + (size_t) v * bytes, bytes, bar);
                }
                stage += producers;     //  Stages are a multiple of producers
                if (stage >= stages) {
                    stage -= stages;
                    phase ^= 1;
                }
            }
        }
        return;
    }
    //  Takers (the first 'takers' <= stages warps, so that a parity wait
    //  is never two phases behind): decode v4's waits (the release a ring
    //  before, then the fill), one word read so the stage is really used,
    //  then release
    if (warp >= takers)
        return;
    unsigned seen = 0;
    int stage = warp;
    uint32_t phase = 0;
    for (int j = warp; j < count; j += takers) {
        if (j >= stages)
            kvt_dev_bar_wait (empty0 + 8 * stage, phase ^ 1);
        kvt_dev_bar_wait (full0 + 8 * stage, phase);
        seen ^= *(const unsigned *) (sm_ring + stage * 2 * bytes + lane * 16);
        kvt_dev_fence_reads_before_refill ();
        __syncwarp ();
        if (lane == 0)
            kvt_dev_bar_arrive (empty0 + 8 * stage);
        stage += takers;
        if (stage >= stages) {
            stage -= stages;
            phase ^= 1;
        }
    }
    if (seen == 0x9e3779b9u)            //  Keeps the reads; never true for the pool's bytes
        *sink = seen;
#else
    __trap ();
#endif
}

//  Best and worst TB/s of S_REPS - 1 timed runs of 'launch' moving 'bytes'
template <typename F>
static void
s_time (F launch, double bytes, double *best, double *worst)
{
    cudaEvent_t start, stop;
    cudaEventCreate (&start);
    cudaEventCreate (&stop);
    *best = 0.0;
    *worst = 1e30;
    for (int rep = 0; rep < S_REPS; rep++) {
        cudaEventRecord (start);
        launch ();
        cudaEventRecord (stop);
        cudaEventSynchronize (stop);
        float ms;
        cudaEventElapsedTime (&ms, start, stop);
        double rate = bytes / (ms * 1e-3) / 1e12;
        if (rep > 0) {
            *best = std::max (*best, rate);
            *worst = std::min (*worst, rate);
        }
    }
    cudaEventDestroy (start);
    cudaEventDestroy (stop);
}

}   //  namespace

int
main (void)
{
    int device, major, sms;
    if (cudaGetDevice (&device) != cudaSuccess
    ||  cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess
    ||  major < 9) {
        fprintf (stderr, "kvt_probe_bulk: needs an sm_90 or later GPU\n");
        return 2;
    }
    cudaDeviceGetAttribute (&sms, cudaDevAttrMultiProcessorCount, device);
    char *pool;
    unsigned *sink;
    if (cudaMalloc (&pool, S_POOL_BYTES) != cudaSuccess || cudaMalloc (&sink, 4) != cudaSuccess) {
        fprintf (stderr, "kvt_probe_bulk: no 2 GiB of device memory\n");
        return 1;
    }
    cudaMemset (pool, 1, S_POOL_BYTES);
    double best, worst;
    const size_t half = S_POOL_BYTES / 2;
    s_time ([&] { cudaMemcpyAsync (pool + half, pool, half, cudaMemcpyDeviceToDevice); },
            2.0 * half, &best, &worst);
    printf ("memcpy_d2d_1GiB_TBps %.3f (read + write; slowest %.3f)\n", best, worst);
    setvbuf (stdout, NULL, _IOLBF, 0);
    for (int producers = 1; producers <= S_MAX_PRODUCERS; producers *= 2)
    for (int bytes : { 2048, 4096, 8192, 16384, 32768 }) {
        if (producers > 1 && bytes > 8192)
            continue;                   //  Too few stages to share
        long count = (long) (S_POOL_BYTES / bytes);
        std::vector<int> order (count);
        for (long i = 0; i < count; i++)
            order [i] = (int) i;
        std::mt19937 rng (25);
        std::shuffle (order.begin (), order.end (), rng);
        int *pages;
        cudaMalloc (&pages, count * sizeof (int));
        cudaMemcpy (pages, order.data (), count * sizeof (int), cudaMemcpyHostToDevice);
        int stages = std::min (S_MAX_STAGES, S_RING_BYTES / (2 * bytes)) / producers * producers;
        int takers = std::min (S_CONSUMERS / producers * producers, stages);
        int smem = stages * 2 * bytes;
        cudaFuncSetAttribute (s_probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        long tiles = count / 2;
        s_time ([&] {
                    s_probe_kernel<<<sms, (S_CONSUMERS + producers) * 32, smem>>> (
                        pool, pages, tiles, bytes, stages, takers, producers, sink);
                }, (double) tiles * 2 * bytes, &best, &worst);
        cudaError_t error = cudaDeviceSynchronize ();
        printf ("bulk_ring_%dk_p%d_TBps %.3f (slowest %.3f; %d stages, %d takers) %s\n",
                bytes / 1024, producers, best, worst, stages, takers,
                error == cudaSuccess? "": cudaGetErrorString (error));
        cudaFree (pages);
        if (error != cudaSuccess)
            return 1;
    }
    return 0;
}
