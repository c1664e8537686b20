/*  =========================================================================
    kvt_bench_transfer - `kvtier bench transfer`: host<->GPU block movement
    with scattered slots, beside 1 GiB pinned cudaMemcpy of the same run

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Moves 1 GiB as blocks of 16 KiB, 64 KiB, 256 KiB and 2 MiB between
    randomly chosen slots of a 2 GiB mapped pinned host slab and a 2 GiB
    GPU slab, through the gather/scatter kernel and through the batched
    copy-engine path: host->GPU, GPU->host, and both at once on two
    streams (to disjoint slots). Baselines: one 1 GiB pinned cudaMemcpyAsync
    each way, and one each way at once. GB/s = 1e9 bytes per second.
    --explore adds notes on the both-ways kernel pair with fewer CTAs.
    Usage: kvtier bench transfer [--json] [--reps N] [--explore]
@end
*/

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_bench.h"

#ifndef KVT_WITH_CUDA

int
kvt_bench_transfer_main (int argc, char **argv)
{
    (void) argc;
    (void) argv;
    fprintf (stderr, "kvtier bench transfer: needs a CUDA build "
             "(configure with -DKVT_CUDA=ON on a machine with nvcc)\n");
    return 2;
}

#else

#include "kvt_block_copy.cuh"

#define S_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

#define S_MOVE_BYTES  (1ull << 30)  //  Bytes moved per direction per run
#define S_SLAB_BYTES  (2ull << 30)  //  Each slab; slots are picked at random

typedef struct {
    void *host;                     //  Mapped pinned host slab
    void *host_dev;                 //  Its device-side address
    void *device;                   //  GPU slab
    cudaStream_t streams [2];       //  Host->GPU, GPU->host
    cudaEvent_t start [2];          //  Per-stream start events
    cudaEvent_t stop [2];           //  Per-stream stop events
} s_bench_t;

static int
s_compare_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y? -1: x > y;
}

//  mode bits: 1 = host->GPU, 2 = GPU->host. path: 0 memcpy of 1 GiB,
//  1 kernel, 2 copy engines. Returns the median GB/s over 'reps' runs,
//  counting the bytes of every direction run, from the first start to
//  the last stop.
static double
s_measure (s_bench_t *self, int mode, int path, kvt_block_copy_args_t *args_h2d,
           kvt_block_copy_args_t *args_d2h, kvt_block_copy_args_t *ce_h2d,
           kvt_block_copy_args_t *ce_d2h, int reps)
{
    double *rates = (double *) malloc ((reps + 2) * sizeof (double));
    for (int rep = -2; rep < reps; rep++) {                 //  Two warm-ups
        S_CHECK (cudaDeviceSynchronize ());
        for (int dir = 0; dir < 2; dir++) {
            if (!(mode & (1 << dir)))
                continue;
            cudaStream_t stream = self->streams [dir];
            S_CHECK (cudaEventRecord (self->start [dir], stream));
            int rc = 0;
            if (path == 0) {
                //  Contiguous halves, so both directions use disjoint memory
                char *host = (char *) self->host + dir * S_MOVE_BYTES;
                char *device = (char *) self->device + dir * S_MOVE_BYTES;
                rc = dir == 0
                   ? cudaMemcpyAsync (device, host, S_MOVE_BYTES, cudaMemcpyHostToDevice, stream)
                   : cudaMemcpyAsync (host, device, S_MOVE_BYTES, cudaMemcpyDeviceToHost, stream);
            }
            else
            if (path == 1)
                rc = kvt_block_copy (dir == 0? args_h2d: args_d2h, stream);
            else
                rc = kvt_block_copy_ce (dir == 0? ce_h2d: ce_d2h, stream);
            if (rc) {
                fprintf (stderr, "transfer failed: %d\n", rc);
                exit (1);
            }
            S_CHECK (cudaEventRecord (self->stop [dir], stream));
        }
        S_CHECK (cudaDeviceSynchronize ());
        //  Span from the earliest start to the latest stop
        float span_ms = 0;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                if (!(mode & (1 << a)) || !(mode & (1 << b)))
                    continue;
                float ms;
                S_CHECK (cudaEventElapsedTime (&ms, self->start [a], self->stop [b]));
                if (ms > span_ms)
                    span_ms = ms;
            }
        int directions = (mode & 1) + ((mode >> 1) & 1);
        if (rep >= 0)
            rates [rep] = (double) S_MOVE_BYTES * directions / (span_ms * 1e-3) / 1e9;
    }
    qsort (rates, reps, sizeof (double), s_compare_double);
    double median = rates [reps / 2];
    free (rates);
    return median;
}

static void
s_shuffle (int64_t *slots, int64_t count, uint64_t *seed)
{
    for (int64_t i = 0; i < count; i++)
        slots [i] = i;
    for (int64_t i = count - 1; i > 0; i--) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        int64_t j = (int64_t) (*seed % (uint64_t) (i + 1));
        int64_t tmp = slots [i]; slots [i] = slots [j]; slots [j] = tmp;
    }
}

//  --------------------------------------------------------------------------
//  kvtier bench transfer [--json] [--reps N]

int
kvt_bench_transfer_main (int argc, char **argv)
{
    bool json = false, explore = false;
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv [i], "--json") == 0)
            json = true;
        else
        if (strcmp (argv [i], "--explore") == 0)
            explore = true;
        else
        if (strcmp (argv [i], "--reps") == 0 && i + 1 < argc)
            reps = atoi (argv [++i]) > 0? atoi (argv [i]): 7;
        else {
            fprintf (stderr, "usage: kvtier bench transfer [--json] [--reps N] [--explore]\n");
            return 2;
        }
    }
    int device_count = 0;
    if (cudaGetDeviceCount (&device_count) != cudaSuccess || device_count == 0) {
        fprintf (stderr, "kvtier bench transfer: no GPU\n");
        return 2;
    }
    kvt_bench_report_t *report = kvt_bench_report_new ("transfer", json);
    struct cudaDeviceProp prop;
    S_CHECK (cudaGetDeviceProperties (&prop, 0));
    char text [160];
    snprintf (text, sizeof (text), "%.64s, %d SMs, %d copy engines", prop.name,
              prop.multiProcessorCount, prop.asyncEngineCount);
    kvt_bench_report_note (report, "device", text);

    s_bench_t self;
    memset (&self, 0, sizeof (self));
    S_CHECK (cudaHostAlloc (&self.host, S_SLAB_BYTES, cudaHostAllocMapped | cudaHostAllocPortable));
    S_CHECK (cudaHostGetDevicePointer (&self.host_dev, self.host, 0));
    S_CHECK (cudaMalloc (&self.device, S_SLAB_BYTES));
    memset (self.host, 0x5a, S_SLAB_BYTES);                 //  Touch every page
    S_CHECK (cudaMemset (self.device, 0x3c, S_SLAB_BYTES));
    for (int dir = 0; dir < 2; dir++) {
        S_CHECK (cudaStreamCreateWithFlags (&self.streams [dir], cudaStreamNonBlocking));
        S_CHECK (cudaEventCreate (&self.start [dir]));
        S_CHECK (cudaEventCreate (&self.stop [dir]));
    }
    //  Baselines
    double base_h2d = s_measure (&self, 1, 0, NULL, NULL, NULL, NULL, reps);
    double base_d2h = s_measure (&self, 2, 0, NULL, NULL, NULL, NULL, reps);
    double base_both = s_measure (&self, 3, 0, NULL, NULL, NULL, NULL, reps);
    snprintf (text, sizeof (text), "h2d %.1f GB/s, d2h %.1f GB/s, both %.1f GB/s",
              base_h2d, base_d2h, base_both);
    kvt_bench_report_note (report, "memcpy_1GiB_pinned", text);

    static const int64_t block_sizes [] = { 16 << 10, 64 << 10, 256 << 10, 2 << 20 };
    uint64_t seed = 0x7a45f;
    for (int s = 0; s < 4; s++) {
        int64_t block = block_sizes [s];
        int64_t count = S_MOVE_BYTES / block;
        int64_t slots = S_SLAB_BYTES / block;
        //  Disjoint random slots: the first half of each shuffle for
        //  host->GPU, the second for GPU->host
        int64_t *host_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        int64_t *dev_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        s_shuffle (host_slots, slots, &seed);
        s_shuffle (dev_slots, slots, &seed);
        int64_t *d_host_slots, *d_dev_slots;
        S_CHECK (cudaMalloc ((void **) &d_host_slots, slots * sizeof (int64_t)));
        S_CHECK (cudaMalloc ((void **) &d_dev_slots, slots * sizeof (int64_t)));
        S_CHECK (cudaMemcpy (d_host_slots, host_slots, slots * sizeof (int64_t),
                             cudaMemcpyHostToDevice));
        S_CHECK (cudaMemcpy (d_dev_slots, dev_slots, slots * sizeof (int64_t),
                             cudaMemcpyHostToDevice));
        kvt_block_copy_args_t h2d = {
            .dst = self.device, .src = self.host_dev, .dst_slots = d_dev_slots,
            .src_slots = d_host_slots, .dst_slot_bytes = block, .src_slot_bytes = block,
            .block_bytes = block, .count = (int) count
        };
        kvt_block_copy_args_t d2h = {
            .dst = self.host_dev, .src = self.device, .dst_slots = d_host_slots + count,
            .src_slots = d_dev_slots + count, .dst_slot_bytes = block,
            .src_slot_bytes = block, .block_bytes = block, .count = (int) count
        };
        kvt_block_copy_args_t ce_h2d = h2d, ce_d2h = d2h;
        ce_h2d.src = self.host;
        ce_h2d.dst_slots = dev_slots;
        ce_h2d.src_slots = host_slots;
        ce_d2h.dst = self.host;
        ce_d2h.dst_slots = host_slots + count;
        ce_d2h.src_slots = dev_slots + count;
        char figure [64], label [16];
        if (block < (1 << 20))
            snprintf (label, sizeof (label), "%dKiB", (int) (block >> 10));
        else
            snprintf (label, sizeof (label), "%dMiB", (int) (block >> 20));
        static const char *paths [] = { "", "kernel", "ce" };
        for (int path = 1; path <= 2; path++) {
            double h2d_rate = s_measure (&self, 1, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps);
            snprintf (figure, sizeof (figure), "h2d_%s_%s_GBps", paths [path], label);
            kvt_bench_report_add (report, figure, h2d_rate, "GB/s", "memcpy_1GiB_h2d_GBps",
                                  base_h2d);
            double d2h_rate = s_measure (&self, 2, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps);
            snprintf (figure, sizeof (figure), "d2h_%s_%s_GBps", paths [path], label);
            kvt_bench_report_add (report, figure, d2h_rate, "GB/s", "memcpy_1GiB_d2h_GBps",
                                  base_d2h);
            double both_rate = s_measure (&self, 3, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps);
            snprintf (figure, sizeof (figure), "both_%s_%s_GBps", paths [path], label);
            kvt_bench_report_add (report, figure, both_rate, "GB/s", "memcpy_1GiB_both_GBps",
                                  base_both);
            if (path == 1 && explore) {
                //  How the kernel pair shares PCIe with fewer CTAs each
                //  (host->GPU CTAs, GPU->host CTAs)
                static const int caps [][2] = { { 64, 64 }, { 264, 264 }, { 264, 33 },
                                                { 264, 66 }, { 132, 33 }, { 396, 66 } };
                for (int c = 0; c < 6; c++) {
                    h2d.max_ctas = caps [c][0];
                    d2h.max_ctas = caps [c][1];
                    double rate = s_measure (&self, 3, path, &h2d, &d2h, NULL, NULL, reps);
                    snprintf (text, sizeof (text), "%.1f GB/s", rate);
                    snprintf (figure, sizeof (figure), "both_kernel_%s_ctas%d_%d", label,
                              caps [c][0], caps [c][1]);
                    kvt_bench_report_note (report, figure, text);
                }
                h2d.max_ctas = d2h.max_ctas = 0;
            }
        }
        cudaFree (d_host_slots);
        cudaFree (d_dev_slots);
        free (host_slots);
        free (dev_slots);
    }
    for (int dir = 0; dir < 2; dir++) {
        cudaStreamDestroy (self.streams [dir]);
        cudaEventDestroy (self.start [dir]);
        cudaEventDestroy (self.stop [dir]);
    }
    cudaFree (self.device);
    cudaFreeHost (self.host);
    kvt_bench_report_finish (&report);
    return 0;
}
#endif
