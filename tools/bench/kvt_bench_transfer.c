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
    Both ways: each stream's own GB/s (a note), and the one-grid pair
    (kvt_block_copy_pair: both directions in one launch). --explore adds notes on the both-ways kernel pair with
    other CTA splits and the one-grid pair with 1 and 3 CTAs per SM,
    and rows of the pair on the same blocks with each direction's host
    slots sorted by address (host_sorted) and in sequence (host_seq):
    what scattering the host slots costs the kernel (issue #3);
    --kernel-only skips the copy-engine paths.
    Staged (issue #3, kvt_block_copy_staged): the same 1 GiB per
    direction, but the host slots come in runs of 64 adjacent blocks (as
    a batch demoted together gets adjacent host slots), each run at a
    random run-aligned place of the host slab (host->GPU takes the first
    half of the shuffled runs, GPU->host the second); GPU slots stay
    fully scattered. Kernel gather/scatter through a GPU staging buffer
    (--staging-mib, default 64, one per direction), copy engines one copy
    per host run. h2d, d2h, both at once (two streams, two stages), beside
    the same 1 GiB memcpy baselines.
    Hybrid (issue #3, kvt_block_copy_hybrid): both ways at once with the
    fully scattered slots above, the one-grid pair and the engines'
    per-block copies at the same time, the engines taking the share
    engines / (engines + pair) of each direction (both-ways rates of the
    same run and size); and each direction alone through it (the share
    from that direction's engine and kernel rates alone, the other copy
    empty). --explore adds split rows at 16, 64 and 256 KiB: the
    engines' share swept over 0-50%, one or two engine streams per
    direction, the pair at 1 CTA per SM, with when each part ended;
    and rows where the engines take a share of the GPU->host blocks
    only (suffix _d2h: the pair keeps every host->GPU block).
    Beside (issue #3): paged decode attention (bf16, 32 q / 8 kv heads,
    head_dim 128, 16-token blocks, 16 x 32K) alone and while 64 KiB or
    2 MiB host->GPU blocks stream on a second stream through the kernel
    or the copy engines; the transfer's GB/s alone and beside attention.
    Step: one decode step of a 32-layer model whose older blocks live in
    pinned host memory (2 MiB runtime blocks); layer l+1's 64 KiB slices
    are copied while layer l's attention runs, ordered by events only;
    step time beside max (attention only, transfer only), both paths, and
    a check that the step's outputs equal the attention-only outputs.
    Usage: kvtier bench transfer [--json] [--reps N] [--explore]
                                 [--kernel-only] [--only blocks|beside|step]
                                 [--staging-mib N]
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

#include <math.h>
#include <time.h>
#include "kvt_bench_transfer_int.h"


//  mode bits: 1 = host->GPU, 2 = GPU->host. path: 0 memcpy of 1 GiB,
//  1 kernel, 2 copy engines, 3 kernel host->GPU + engines GPU->host, 4 the
//  reverse, 5 both in one grid (kvt_block_copy_pair, mode 3 only), 6 the
//  staged path (ce_h2d / ce_d2h arguments, host slots in runs), 7 the
//  hybrid path (kvt_block_copy_hybrid, ce_* arguments, the engines'
//  share self->hybrid_share; both ways at once in one call).
//  Returns the median GB/s over 'reps' runs, counting the bytes of every
//  direction run, from the first start to the last stop. If 'dir_rates'
//  is not NULL and two streams ran, it gets each stream's median GB/s
//  over its own span (how the pair shared the link).
static double
s_measure (kvt_bench_transfer_t *self, int mode, int path, kvt_block_copy_args_t *args_h2d,
           kvt_block_copy_args_t *args_d2h, kvt_block_copy_args_t *ce_h2d,
           kvt_block_copy_args_t *ce_d2h, int reps, double *dir_rates)
{
    double *rates = (double *) malloc ((reps + 2) * sizeof (double));
    double *own [2] = { (double *) malloc ((reps + 2) * sizeof (double)),
                        (double *) malloc ((reps + 2) * sizeof (double)) };
    int streams = path == 5 || (path == 7 && mode == 3)? 1: mode;  //  Stream bits used
    for (int rep = -2; rep < reps; rep++) {                 //  Two warm-ups
        KVT_BENCH_CUDA_CHECK (cudaDeviceSynchronize ());
        for (int dir = 0; dir < 2; dir++) {
            if (!(streams & (1 << dir)))
                continue;
            cudaStream_t stream = self->streams [dir];
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->start [dir], stream));
            int rc = 0;
            if (path == 0) {
                //  Contiguous halves, so both directions use disjoint memory
                char *host = (char *) self->host + dir * KVT_BENCH_MOVE_BYTES;
                char *device = (char *) self->device + dir * KVT_BENCH_MOVE_BYTES;
                rc = dir == 0
                   ? cudaMemcpyAsync (device, host, KVT_BENCH_MOVE_BYTES, cudaMemcpyHostToDevice, stream)
                   : cudaMemcpyAsync (host, device, KVT_BENCH_MOVE_BYTES, cudaMemcpyDeviceToHost, stream);
            }
            else
            if (path == 5)
                rc = kvt_block_copy_pair (args_h2d, args_d2h, self->pair_ctas,
                                          self->pair_counter, stream);
            else
            if (path == 7) {
                //  One direction alone: the other copy is empty
                kvt_block_copy_args_t none = *(dir == 0? ce_d2h: ce_h2d);
                none.count = 0;
                rc = kvt_block_copy_hybrid (self->hybrid, mode & 1? ce_h2d: &none,
                                            mode & 2? ce_d2h: &none, self->hybrid_share,
                                            stream);
            }
            else
            if (path == 6)
                rc = kvt_block_copy_staged (self->stages [dir], dir == 0? ce_h2d: ce_d2h,
                                            dir == 1, stream);
            else
            if (path == 1 || (path == 3 && dir == 0) || (path == 4 && dir == 1))
                rc = kvt_block_copy (dir == 0? args_h2d: args_d2h, stream);
            else
                rc = kvt_block_copy_ce (dir == 0? ce_h2d: ce_d2h, stream);
            if (rc) {
                fprintf (stderr, "transfer failed: %d\n", rc);
                exit (1);
            }
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->stop [dir], stream));
        }
        KVT_BENCH_CUDA_CHECK (cudaDeviceSynchronize ());
        //  Span from the earliest start to the latest stop
        float span_ms = 0;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                if (!(streams & (1 << a)) || !(streams & (1 << b)))
                    continue;
                float ms;
                KVT_BENCH_CUDA_CHECK (cudaEventElapsedTime (&ms, self->start [a], self->stop [b]));
                if (ms > span_ms)
                    span_ms = ms;
                if (a == b && rep >= 0)
                    own [a][rep] = (double) KVT_BENCH_MOVE_BYTES / (ms * 1e-3) / 1e9;
            }
        int directions = (mode & 1) + ((mode >> 1) & 1);
        if (rep >= 0)
            rates [rep] = (double) KVT_BENCH_MOVE_BYTES * directions / (span_ms * 1e-3) / 1e9;
    }
    qsort (rates, reps, sizeof (double), kvt_bench_compare_double);
    double median = rates [reps / 2];
    if (dir_rates && streams == 3)
        for (int dir = 0; dir < 2; dir++) {
            qsort (own [dir], reps, sizeof (double), kvt_bench_compare_double);
            dir_rates [dir] = own [dir][reps / 2];
        }
    free (rates);
    free (own [0]);
    free (own [1]);
    return median;
}

//  A note of the hybrid and split rows: printed at once in text mode
//  (the reporter keeps 32 notes and --explore fills them before these
//  rows), a report note in JSON.
static void
s_note (kvt_bench_report_t *report, bool json, const char *key, const char *text)
{
    if (json)
        kvt_bench_report_note (report, key, text);
    else {
        printf ("# %s: %s\n", key, text);
        fflush (stdout);
    }
}

//  Median of 'count' values (sorts them).
static double
s_median (double *values, int count)
{
    qsort (values, count, sizeof (double), kvt_bench_compare_double);
    return values [count / 2];
}

//  One split row: the engines' share, their streams per direction, the
//  pair's CTAs per SM (0 = its default), and whether the share is of the
//  GPU->host copy only (the pair keeps every host->GPU block).
typedef struct {
    double share;                   //  Engines' share of each direction's blocks
    int streams;                    //  Engine streams per direction
    int per_sm;                     //  Pair CTAs per SM, 0 = default
    int d2h_only;                   //  1: the engines take GPU->host blocks only
} s_split_t;

//  Split rows (issue #3, --explore): one both-ways batch of fully
//  scattered blocks, the one-grid pair (kvt_block_copy_pair) copying the
//  first (1 - share [dir]) of each direction's blocks (share [0]
//  host->GPU, share [1] GPU->host) on streams [0] while the copy
//  engines copy the rest at once (kvt_block_copy_ce, per block),
//  split over 'engine_streams' streams per direction (1 or 2). Returns
//  the median GB/s of the whole batch (2 x 1 GiB over the span from the
//  common start to the last end). 'parts' gets medians: ms of the kernel
//  share, of the engines' host->GPU share, of their GPU->host share (each
//  from the common start), and ms of host time to queue it all.
static double
s_measure_split (kvt_bench_transfer_t *self, const kvt_block_copy_args_t *h2d,
                 const kvt_block_copy_args_t *d2h, const kvt_block_copy_args_t *ce_h2d,
                 const kvt_block_copy_args_t *ce_d2h, const double share [2],
                 int engine_streams, int reps, double parts [4])
{
    int count = h2d->count;
    int engine_blocks [2] = { (int) (share [0] * count + 0.5),
                              (int) (share [1] * count + 0.5) };
    kvt_block_copy_args_t kernel [2] = { *h2d, *d2h };
    kernel [0].count = count - engine_blocks [0];
    kernel [1].count = count - engine_blocks [1];
    const kvt_block_copy_args_t *engine [2] = { ce_h2d, ce_d2h };
    double *rates = (double *) malloc ((reps + 2) * sizeof (double));
    double *ms [4];
    for (int k = 0; k < 4; k++)
        ms [k] = (double *) calloc (reps + 2, sizeof (double));
    cudaStream_t lead = self->streams [0];
    for (int rep = -2; rep < reps; rep++) {                 //  Two warm-ups
        KVT_BENCH_CUDA_CHECK (cudaDeviceSynchronize ());
        struct timespec t0, t1;
        clock_gettime (CLOCK_MONOTONIC, &t0);
        KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->start [0], lead));
        int rc = kvt_block_copy_pair (&kernel [0], &kernel [1], self->pair_ctas,
                                      self->pair_counter, lead);
        KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->pair_stop, lead));
        for (int dir = 0; dir < 2 && rc == 0; dir++)
            for (int e = 0; e < engine_streams && rc == 0; e++) {
                int first = count - engine_blocks [dir]
                          + (int) ((int64_t) engine_blocks [dir] * e / engine_streams);
                int last = count - engine_blocks [dir]
                         + (int) ((int64_t) engine_blocks [dir] * (e + 1) / engine_streams);
                kvt_block_copy_args_t slice = *engine [dir];
                slice.dst_slots += first;
                slice.src_slots += first;
                slice.count = last - first;
                cudaStream_t stream = self->engines [dir * 2 + e];
                KVT_BENCH_CUDA_CHECK (cudaStreamWaitEvent (stream, self->start [0], 0));
                rc = kvt_block_copy_ce (&slice, stream);
                KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->engine_stop [dir * 2 + e], stream));
                KVT_BENCH_CUDA_CHECK (cudaStreamWaitEvent (lead, self->engine_stop [dir * 2 + e],
                                                           0));
            }
        if (rc) {
            fprintf (stderr, "split transfer failed: %d\n", rc);
            exit (1);
        }
        KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->stop [0], lead));
        clock_gettime (CLOCK_MONOTONIC, &t1);
        KVT_BENCH_CUDA_CHECK (cudaDeviceSynchronize ());
        if (rep < 0)
            continue;
        float span, part;
        KVT_BENCH_CUDA_CHECK (cudaEventElapsedTime (&span, self->start [0], self->stop [0]));
        rates [rep] = 2.0 * (double) KVT_BENCH_MOVE_BYTES / (span * 1e-3) / 1e9;
        KVT_BENCH_CUDA_CHECK (cudaEventElapsedTime (&part, self->start [0], self->pair_stop));
        ms [0][rep] = part;
        for (int dir = 0; dir < 2; dir++)
            for (int e = 0; e < engine_streams; e++) {
                KVT_BENCH_CUDA_CHECK (cudaEventElapsedTime (&part, self->start [0],
                                                            self->engine_stop [dir * 2 + e]));
                if (part > ms [1 + dir][rep])
                    ms [1 + dir][rep] = part;
            }
        ms [3][rep] = (double) (t1.tv_sec - t0.tv_sec) * 1e3
                    + (double) (t1.tv_nsec - t0.tv_nsec) * 1e-6;
    }
    double median = s_median (rates, reps);
    for (int k = 0; k < 4; k++) {
        parts [k] = s_median (ms [k], reps);
        free (ms [k]);
    }
    free (rates);
    return median;
}

//  qsort order of int64_t values, ascending.
static int
s_compare_int64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y? -1: x > y;
}

//  Host order rows (issue #3, --explore): the one-grid pair on the
//  blocks of 'h2d' / 'd2h' (host slots host_slots [0, count) and
//  [count, 2 count), GPU slots as given), first with each direction's
//  host slots sorted by address, then with host slots 0 .. 2 count - 1
//  in sequence. Adds both_pair_<label>_host_sorted_GBps and
//  both_pair_<label>_host_seq_GBps.
static void
s_measure_host_order (kvt_bench_transfer_t *self, kvt_bench_report_t *report,
                      const char *label, const kvt_block_copy_args_t *h2d,
                      const kvt_block_copy_args_t *d2h, const int64_t *host_slots,
                      int64_t count, int reps, double base_both)
{
    int64_t *order = (int64_t *) malloc (2 * count * sizeof (int64_t));
    int64_t *d_order;
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_order, 2 * count * sizeof (int64_t)));
    static const char *names [] = { "host_sorted", "host_seq" };
    for (int k = 0; k < 2; k++) {
        for (int64_t i = 0; i < 2 * count; i++)
            order [i] = k == 0? host_slots [i]: i;
        if (k == 0) {
            qsort (order, count, sizeof (int64_t), s_compare_int64);
            qsort (order + count, count, sizeof (int64_t), s_compare_int64);
        }
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_order, order, 2 * count * sizeof (int64_t),
                                          cudaMemcpyHostToDevice));
        kvt_block_copy_args_t to_gpu = *h2d, to_host = *d2h;
        to_gpu.src_slots = d_order;
        to_host.dst_slots = d_order + count;
        double rate = s_measure (self, 3, 5, &to_gpu, &to_host, NULL, NULL, reps, NULL);
        char figure [64];
        snprintf (figure, sizeof (figure), "both_pair_%s_%s_GBps", label, names [k]);
        kvt_bench_report_add (report, figure, rate, "GB/s", "memcpy_1GiB_both_GBps", base_both);
    }
    cudaFree (d_order);
    free (order);
}

//  Fill 'slots' with a random permutation of 0..count - 1 (xorshift).
void
kvt_bench_transfer_shuffle (int64_t *slots, int64_t count, uint64_t *seed)
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
    bool json = false, explore = false, kernel_only = false;
    const char *only = NULL;
    int reps = 7;
    int staging_mib = 64;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv [i], "--json") == 0)
            json = true;
        else
        if (strcmp (argv [i], "--explore") == 0)
            explore = true;
        else
        if (strcmp (argv [i], "--kernel-only") == 0)
            kernel_only = true;
        else
        if (strcmp (argv [i], "--reps") == 0 && i + 1 < argc)
            reps = atoi (argv [++i]) > 0? atoi (argv [i]): 7;
        else
        if (strcmp (argv [i], "--staging-mib") == 0 && i + 1 < argc)
            staging_mib = atoi (argv [++i]) > 0? atoi (argv [i]): 64;
        else
        if (strcmp (argv [i], "--only") == 0 && i + 1 < argc
        &&  (strcmp (argv [i + 1], "blocks") == 0 || strcmp (argv [i + 1], "beside") == 0
        ||   strcmp (argv [i + 1], "step") == 0))
            only = argv [++i];
        else {
            fprintf (stderr, "usage: kvtier bench transfer [--json] [--reps N] [--explore] "
                     "[--kernel-only] [--only blocks|beside|step] [--staging-mib N]\n");
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
    KVT_BENCH_CUDA_CHECK (cudaGetDeviceProperties (&prop, 0));
    char text [160];
    snprintf (text, sizeof (text), "%.64s, %d SMs, %d copy engines", prop.name,
              prop.multiProcessorCount, prop.asyncEngineCount);
    kvt_bench_report_note (report, "device", text);

    kvt_bench_transfer_t self;
    memset (&self, 0, sizeof (self));
    KVT_BENCH_CUDA_CHECK (cudaHostAlloc (&self.host, KVT_BENCH_SLAB_BYTES, cudaHostAllocMapped | cudaHostAllocPortable));
    KVT_BENCH_CUDA_CHECK (cudaHostGetDevicePointer (&self.host_dev, self.host, 0));
    KVT_BENCH_CUDA_CHECK (cudaMalloc (&self.device, KVT_BENCH_SLAB_BYTES));
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &self.pair_counter, sizeof (unsigned long long)));
    KVT_BENCH_CUDA_CHECK (cudaEventCreate (&self.pair_stop));
    self.hybrid = kvt_block_hybrid_new ();
    if (!self.hybrid) {
        fprintf (stderr, "kvtier bench transfer: kvt_block_hybrid_new failed\n");
        return 1;
    }
    memset (self.host, 0x5a, KVT_BENCH_SLAB_BYTES);                 //  Touch every page
    KVT_BENCH_CUDA_CHECK (cudaMemset (self.device, 0x3c, KVT_BENCH_SLAB_BYTES));
    for (int dir = 0; dir < 2; dir++) {
        KVT_BENCH_CUDA_CHECK (cudaStreamCreateWithFlags (&self.streams [dir], cudaStreamNonBlocking));
        KVT_BENCH_CUDA_CHECK (cudaEventCreate (&self.start [dir]));
        KVT_BENCH_CUDA_CHECK (cudaEventCreate (&self.stop [dir]));
        for (int e = 0; e < 2; e++) {
            KVT_BENCH_CUDA_CHECK (cudaStreamCreateWithFlags (&self.engines [dir * 2 + e],
                                                             cudaStreamNonBlocking));
            KVT_BENCH_CUDA_CHECK (cudaEventCreate (&self.engine_stop [dir * 2 + e]));
        }
        self.stages [dir] = kvt_block_stage_new ((size_t) staging_mib << 20);
        if (!self.stages [dir]) {
            fprintf (stderr, "kvtier bench transfer: cannot allocate %d MiB of staging\n",
                     staging_mib);
            return 1;
        }
    }
    //  Baselines
    double base_h2d = s_measure (&self, 1, 0, NULL, NULL, NULL, NULL, reps, NULL);
    double base_d2h = s_measure (&self, 2, 0, NULL, NULL, NULL, NULL, reps, NULL);
    double base_both = s_measure (&self, 3, 0, NULL, NULL, NULL, NULL, reps, NULL);
    snprintf (text, sizeof (text), "h2d %.1f GB/s, d2h %.1f GB/s, both %.1f GB/s",
              base_h2d, base_d2h, base_both);
    kvt_bench_report_note (report, "memcpy_1GiB_pinned", text);

    static const int64_t block_sizes [] = { 16 << 10, 64 << 10, 256 << 10, 2 << 20 };
    uint64_t seed = 0x7a45f;
    for (int s = 0; s < 4 && (!only || strcmp (only, "blocks") == 0); s++) {
        int64_t block = block_sizes [s];
        int64_t count = KVT_BENCH_MOVE_BYTES / block;
        int64_t slots = KVT_BENCH_SLAB_BYTES / block;
        //  Disjoint random slots: the first half of each shuffle for
        //  host->GPU, the second for GPU->host
        int64_t *host_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        int64_t *dev_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        kvt_bench_transfer_shuffle (host_slots, slots, &seed);
        kvt_bench_transfer_shuffle (dev_slots, slots, &seed);
        int64_t *d_host_slots, *d_dev_slots;
        KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_host_slots, slots * sizeof (int64_t)));
        KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_dev_slots, slots * sizeof (int64_t)));
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_host_slots, host_slots, slots * sizeof (int64_t),
                             cudaMemcpyHostToDevice));
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_dev_slots, dev_slots, slots * sizeof (int64_t),
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
        double pair_both = 0, engines_both = 0;    //  Same-run rates for the split rule
        double alone [2][2] = { { 0, 0 }, { 0, 0 } };  //  Kernel / engines: h2d, d2h alone
        static const char *paths [] = { "", "kernel", "ce" };
        for (int path = 1; path <= (kernel_only? 1: 2); path++) {
            double h2d_rate = s_measure (&self, 1, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps,
                                         NULL);
            snprintf (figure, sizeof (figure), "h2d_%s_%s_GBps", paths [path], label);
            kvt_bench_report_add (report, figure, h2d_rate, "GB/s", "memcpy_1GiB_h2d_GBps",
                                  base_h2d);
            double d2h_rate = s_measure (&self, 2, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps,
                                         NULL);
            snprintf (figure, sizeof (figure), "d2h_%s_%s_GBps", paths [path], label);
            kvt_bench_report_add (report, figure, d2h_rate, "GB/s", "memcpy_1GiB_d2h_GBps",
                                  base_d2h);
            alone [path - 1][0] = h2d_rate;
            alone [path - 1][1] = d2h_rate;
            double own [2];
            double both_rate = s_measure (&self, 3, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps,
                                          own);
            if (path == 2)
                engines_both = both_rate;
            snprintf (figure, sizeof (figure), "both_%s_%s_GBps", paths [path], label);
            kvt_bench_report_add (report, figure, both_rate, "GB/s", "memcpy_1GiB_both_GBps",
                                  base_both);
            snprintf (text, sizeof (text), "each stream over its own span: h2d %.1f GB/s, "
                      "d2h %.1f GB/s", own [0], own [1]);
            snprintf (figure, sizeof (figure), "both_%s_%s_streams", paths [path], label);
            kvt_bench_report_note (report, figure, text);
            if (path == 1) {
                //  Both directions in one grid, units from one counter
                both_rate = s_measure (&self, 3, 5, &h2d, &d2h, NULL, NULL, reps, NULL);
                pair_both = both_rate;
                snprintf (figure, sizeof (figure), "both_pair_%s_GBps", label);
                kvt_bench_report_add (report, figure, both_rate, "GB/s",
                                      "memcpy_1GiB_both_GBps", base_both);
            }
            if (path == 1 && explore) {
                //  How the kernel pair shares PCIe with fewer CTAs each
                //  (host->GPU CTAs, GPU->host CTAs)
                static const int caps [][2] = { { 64, 64 }, { 264, 264 }, { 264, 33 },
                                                { 264, 66 }, { 132, 33 }, { 396, 66 },
                                                { 132, 99 }, { 99, 132 }, { 66, 132 } };
                for (int c = 0; c < 9; c++) {
                    h2d.max_ctas = caps [c][0];
                    d2h.max_ctas = caps [c][1];
                    double rate = s_measure (&self, 3, path, &h2d, &d2h, NULL, NULL, reps,
                                             own);
                    snprintf (text, sizeof (text), "%.1f GB/s (streams: h2d %.1f, d2h %.1f)",
                              rate, own [0], own [1]);
                    snprintf (figure, sizeof (figure), "both_kernel_%s_ctas%d_%d", label,
                              caps [c][0], caps [c][1]);
                    kvt_bench_report_note (report, figure, text);
                }
                h2d.max_ctas = d2h.max_ctas = 0;
                //  Issue #3, session 6: the pair with the same blocks but
                //  the host slots of each direction in address order
                //  (sorted), and in sequence (one contiguous GiB per
                //  direction): what scattering the host slots costs
                s_measure_host_order (&self, report, label, &h2d, &d2h, host_slots, count,
                                      reps, base_both);
                //  The one-grid pair with one and three CTAs per SM
                for (int per_sm = 1; per_sm <= 3; per_sm += 2) {
                    self.pair_ctas = per_sm * prop.multiProcessorCount;
                    double rate = s_measure (&self, 3, 5, &h2d, &d2h, NULL, NULL, reps, NULL);
                    snprintf (text, sizeof (text), "%.1f GB/s", rate);
                    snprintf (figure, sizeof (figure), "both_pair_%s_ctas%d", label,
                              self.pair_ctas);
                    kvt_bench_report_note (report, figure, text);
                }
                self.pair_ctas = 0;
            }
        }
        //  Both ways with one path per direction: the kernel's small reads
        //  of host memory beside the engines' large writes, and the reverse
        static const char *mixes [] = { "", "", "", "kernel_h2d_ce_d2h", "ce_h2d_kernel_d2h" };
        for (int path = 3; path <= (kernel_only? 2: 4); path++) {
            double both_rate = s_measure (&self, 3, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps,
                                          NULL);
            snprintf (figure, sizeof (figure), "both_%s_%s_GBps", mixes [path], label);
            kvt_bench_report_add (report, figure, both_rate, "GB/s", "memcpy_1GiB_both_GBps",
                                  base_both);
        }
        //  Hybrid (issue #3): kvt_block_copy_hybrid, fully scattered host
        //  slots, the engines' share by the rule from this run's both-ways
        //  rates of the engines and the pair (kvt_block_copy_hybrid_share)
        if (!kernel_only && pair_both > 0) {
            self.hybrid_share = kvt_block_copy_hybrid_share (engines_both, pair_both);
            double rate = s_measure (&self, 3, 7, NULL, NULL, &ce_h2d, &ce_d2h, reps, NULL);
            snprintf (figure, sizeof (figure), "both_hybrid_%s_GBps", label);
            kvt_bench_report_add (report, figure, rate, "GB/s", "memcpy_1GiB_both_GBps",
                                  base_both);
            snprintf (text, sizeof (text), "engines' share %.3f = engines both %.1f / "
                      "(engines %.1f + pair %.1f GB/s); vs the pair alone %.3f",
                      self.hybrid_share, engines_both, engines_both, pair_both,
                      rate / pair_both);
            snprintf (figure, sizeof (figure), "both_hybrid_%s_share", label);
            s_note (report, json, figure, text);
            //  Each direction alone, the share from that direction's rates
            for (int dir = 0; dir < 2; dir++) {
                self.hybrid_share = kvt_block_copy_hybrid_share (alone [1][dir], alone [0][dir]);
                rate = s_measure (&self, 1 << dir, 7, NULL, NULL, &ce_h2d, &ce_d2h, reps, NULL);
                snprintf (figure, sizeof (figure), "%s_hybrid_%s_GBps", dir? "d2h": "h2d", label);
                kvt_bench_report_add (report, figure, rate, "GB/s", dir? "memcpy_1GiB_d2h_GBps":
                                      "memcpy_1GiB_h2d_GBps", dir? base_d2h: base_h2d);
                snprintf (text, sizeof (text), "engines' share %.3f (engines %.1f, kernel %.1f "
                          "GB/s alone); vs the kernel alone %.3f", self.hybrid_share,
                          alone [1][dir], alone [0][dir], rate / alone [0][dir]);
                snprintf (figure, sizeof (figure), "%s_hybrid_%s_share", dir? "d2h": "h2d",
                          label);
                s_note (report, json, figure, text);
            }
        }
        //  Split (issue #3): the one-grid pair and the engines at once on
        //  one both-ways batch of fully scattered blocks, the engines
        //  taking a share f of each direction; f swept, and f by the rule
        //  engines / (engines + pair) from this run's both-ways rates
        if (explore && !kernel_only && block <= (256 << 10) && pair_both > 0) {
            static const double shares [] = { 0, 0.05, 0.10, 0.20, 0.30, 0.50 };
            double rule = engines_both / (engines_both + pair_both);
            s_split_t splits [32];
            int n = 0;
            for (int e = 1; e <= 2; e++)
                for (int k = 0; k < 6; k++)
                    if (e == 1 || shares [k] > 0)
                        splits [n++] = (s_split_t) { shares [k], e, 0, 0 };
            splits [n++] = (s_split_t) { rule, 1, 0, 0 };
            splits [n++] = (s_split_t) { rule, 2, 0, 0 };
            splits [n++] = (s_split_t) { rule, 1, 1, 0 };
            splits [n++] = (s_split_t) { 0.10, 1, 1, 0 };
            //  Session 6: the engines take GPU->host blocks only (their
            //  per-copy cost is ~1 us that way, ~4 us host->GPU), so the
            //  SMs carry less of the traffic. Measured: no gain over the
            //  pair alone (tools/bench/RESULTS.md, session 6)
            static const double d2h_shares [] = { 0.05, 0.10, 0.20, 0.30 };
            for (int e = 1; e <= 2; e++)
                for (int k = 0; k < 4; k++)
                    splits [n++] = (s_split_t) { d2h_shares [k], e, 0, 1 };
            snprintf (text, sizeof (text), "engines both %.1f GB/s, pair both %.1f GB/s: "
                      "f = %.3f", engines_both, pair_both, rule);
            snprintf (figure, sizeof (figure), "split_%s_rule", label);
            s_note (report, json, figure, text);
            for (int k = 0; k < n; k++) {
                self.pair_ctas = splits [k].per_sm * prop.multiProcessorCount;
                double parts [4];
                double share [2] = { splits [k].d2h_only? 0: splits [k].share,
                                     splits [k].share };
                const char *tail = splits [k].per_sm? "_ctas1": splits [k].d2h_only? "_d2h": "";
                double rate = s_measure_split (&self, &h2d, &d2h, &ce_h2d, &ce_d2h, share,
                                               splits [k].streams, reps, parts);
                snprintf (figure, sizeof (figure), "both_split_%s_f%03d_e%d%s_GBps", label,
                          (int) (splits [k].share * 1000 + 0.5), splits [k].streams, tail);
                kvt_bench_report_add (report, figure, rate, "GB/s", "memcpy_1GiB_both_GBps",
                                      base_both);
                snprintf (text, sizeof (text), "ends (ms from start): kernel %.2f, engines "
                          "h2d %.2f, d2h %.2f; host queueing %.2f ms", parts [0], parts [1],
                          parts [2], parts [3]);
                snprintf (figure, sizeof (figure), "both_split_%s_f%03d_e%d%s_parts", label,
                          (int) (splits [k].share * 1000 + 0.5), splits [k].streams, tail);
                s_note (report, json, figure, text);
            }
            self.pair_ctas = 0;
        }
        //  Staged (issue #3): host slots in runs of 64 blocks at random
        //  run-aligned places, GPU slots scattered as above
        if (!kernel_only) {
            const int64_t run = 64;
            int64_t *run_order = (int64_t *) malloc (slots / run * sizeof (int64_t));
            int64_t *run_slots = (int64_t *) malloc (slots * sizeof (int64_t));
            kvt_bench_transfer_shuffle (run_order, slots / run, &seed);
            for (int64_t i = 0; i < slots; i++)
                run_slots [i] = run_order [i / run] * run + i % run;
            kvt_block_copy_args_t st_h2d = {
                .dst = self.device, .src = self.host, .dst_slots = dev_slots,
                .src_slots = run_slots, .dst_slot_bytes = block, .src_slot_bytes = block,
                .block_bytes = block, .count = (int) count
            };
            kvt_block_copy_args_t st_d2h = {
                .dst = self.host, .src = self.device, .dst_slots = run_slots + count,
                .src_slots = dev_slots + count, .dst_slot_bytes = block,
                .src_slot_bytes = block, .block_bytes = block, .count = (int) count
            };
            kvt_block_stage_plan_t plan;
            if (kvt_block_copy_stage_plan (&st_h2d, kvt_block_stage_bytes (self.stages [0]),
                                           false, &plan) == 0) {
                snprintf (text, sizeof (text), "host runs of %d blocks (%.2f MiB), GPU "
                          "scattered; staging %d MiB: %lld pieces of %lld blocks, %d in "
                          "flight; suits staging: %s", (int) run,
                          (double) (run * block) / 1048576.0, staging_mib,
                          (long long) plan.pieces, (long long) plan.piece_blocks, plan.ring,
                          kvt_block_copy_stage_suits (&st_h2d, false)? "yes": "no");
                snprintf (figure, sizeof (figure), "staged_%s_layout", label);
                kvt_bench_report_note (report, figure, text);
            }
            double rate = s_measure (&self, 1, 6, NULL, NULL, &st_h2d, &st_d2h, reps, NULL);
            snprintf (figure, sizeof (figure), "h2d_staged_%s_GBps", label);
            kvt_bench_report_add (report, figure, rate, "GB/s", "memcpy_1GiB_h2d_GBps",
                                  base_h2d);
            rate = s_measure (&self, 2, 6, NULL, NULL, &st_h2d, &st_d2h, reps, NULL);
            snprintf (figure, sizeof (figure), "d2h_staged_%s_GBps", label);
            kvt_bench_report_add (report, figure, rate, "GB/s", "memcpy_1GiB_d2h_GBps",
                                  base_d2h);
            double own [2];
            rate = s_measure (&self, 3, 6, NULL, NULL, &st_h2d, &st_d2h, reps, own);
            snprintf (figure, sizeof (figure), "both_staged_%s_GBps", label);
            kvt_bench_report_add (report, figure, rate, "GB/s", "memcpy_1GiB_both_GBps",
                                  base_both);
            snprintf (text, sizeof (text), "each stream over its own span: h2d %.1f GB/s, "
                      "d2h %.1f GB/s", own [0], own [1]);
            snprintf (figure, sizeof (figure), "both_staged_%s_streams", label);
            kvt_bench_report_note (report, figure, text);
            free (run_order);
            free (run_slots);
        }
        cudaFree (d_host_slots);
        cudaFree (d_dev_slots);
        free (host_slots);
        free (dev_slots);
    }
    if (!only || strcmp (only, "beside") == 0)
        kvt_bench_transfer_beside (report, &self, reps < 15? 15: reps, &seed);
    int failed = 0;
    if (!only || strcmp (only, "step") == 0) {
        //  Release the block slabs first: the step needs up to 16 GiB
        cudaFree (self.device);
        self.device = NULL;
        failed |= kvt_bench_transfer_step (report, 4, 32768, 512, reps, &seed);
        failed |= kvt_bench_transfer_step (report, 1, 65536, 1024, reps, &seed);
    }
    for (int dir = 0; dir < 2; dir++) {
        kvt_block_stage_destroy (&self.stages [dir]);
        cudaStreamDestroy (self.streams [dir]);
        cudaEventDestroy (self.start [dir]);
        cudaEventDestroy (self.stop [dir]);
        for (int e = 0; e < 2; e++) {
            cudaStreamDestroy (self.engines [dir * 2 + e]);
            cudaEventDestroy (self.engine_stop [dir * 2 + e]);
        }
    }
    cudaEventDestroy (self.pair_stop);
    kvt_block_hybrid_destroy (&self.hybrid);
    cudaFree (self.device);
    cudaFree (self.pair_counter);
    cudaFreeHost (self.host);
    kvt_bench_report_finish (&report);
    return failed? 1: 0;
}
#endif
