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
    other CTA splits and the one-grid pair with 1 and 3 CTAs per SM;
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
#include "kvt_block_copy.cuh"
#include "kvt_paged_attention.cuh"

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
    int pair_ctas;                  //  kvt_block_copy_pair's grid (0 = its default)
    unsigned long long *pair_counter;   //  Its unit counter (device)
    kvt_block_stage_t *stages [2];  //  Staged path: host->GPU, GPU->host staging
} s_bench_t;

//  mode bits: 1 = host->GPU, 2 = GPU->host. path: 0 memcpy of 1 GiB,
//  1 kernel, 2 copy engines, 3 kernel host->GPU + engines GPU->host, 4 the
//  reverse, 5 both in one grid (kvt_block_copy_pair, mode 3 only), 6 the
//  staged path (ce_h2d / ce_d2h arguments, host slots in runs).
//  Returns the median GB/s over 'reps' runs, counting the bytes of every
//  direction run, from the first start to the last stop. If 'dir_rates'
//  is not NULL and two streams ran, it gets each stream's median GB/s
//  over its own span (how the pair shared the link).
static double
s_measure (s_bench_t *self, int mode, int path, kvt_block_copy_args_t *args_h2d,
           kvt_block_copy_args_t *args_d2h, kvt_block_copy_args_t *ce_h2d,
           kvt_block_copy_args_t *ce_d2h, int reps, double *dir_rates)
{
    double *rates = (double *) malloc ((reps + 2) * sizeof (double));
    double *own [2] = { (double *) malloc ((reps + 2) * sizeof (double)),
                        (double *) malloc ((reps + 2) * sizeof (double)) };
    int streams = path == 5? 1: mode;                       //  Stream bits used
    for (int rep = -2; rep < reps; rep++) {                 //  Two warm-ups
        S_CHECK (cudaDeviceSynchronize ());
        for (int dir = 0; dir < 2; dir++) {
            if (!(streams & (1 << dir)))
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
            if (path == 5)
                rc = kvt_block_copy_pair (args_h2d, args_d2h, self->pair_ctas,
                                          self->pair_counter, stream);
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
            S_CHECK (cudaEventRecord (self->stop [dir], stream));
        }
        S_CHECK (cudaDeviceSynchronize ());
        //  Span from the earliest start to the latest stop
        float span_ms = 0;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                if (!(streams & (1 << a)) || !(streams & (1 << b)))
                    continue;
                float ms;
                S_CHECK (cudaEventElapsedTime (&ms, self->start [a], self->stop [b]));
                if (ms > span_ms)
                    span_ms = ms;
                if (a == b && rep >= 0)
                    own [a][rep] = (double) S_MOVE_BYTES / (ms * 1e-3) / 1e9;
            }
        int directions = (mode & 1) + ((mode >> 1) & 1);
        if (rep >= 0)
            rates [rep] = (double) S_MOVE_BYTES * directions / (span_ms * 1e-3) / 1e9;
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
//  Attention beside a transfer (issue #3): paged decode attention on one
//  stream while host->GPU blocks stream on another, and the layer-by-layer
//  decode step that overlaps the two.

#define S_HEADS      32             //  Query heads (8B shape)
#define S_KV_HEADS   8              //  KV heads
#define S_DIM        128            //  Head dim
#define S_BT         16             //  Tokens per block
#define S_LAYERS     32             //  Layers of the 8B shape
#define S_CHUNK      ((int64_t) 2 * S_KV_HEADS * S_BT * S_DIM * 2)     //  One layer of one block: 64 KiB

//  Fill 'bytes' of device memory with random bf16 in [-1, 1) from a 64 MiB
//  host pattern.
static void
s_fill_device (void *device, size_t bytes, uint64_t *seed)
{
    size_t pattern_bytes = 64u << 20;
    if (pattern_bytes > bytes)
        pattern_bytes = bytes;
    void *host = malloc (pattern_bytes);
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, host, pattern_bytes / 2, 1.0f, seed);
    for (size_t done = 0; done < bytes; done += pattern_bytes) {
        size_t n = bytes - done < pattern_bytes? bytes - done: pattern_bytes;
        S_CHECK (cudaMemcpy ((char *) device + done, host, n, cudaMemcpyHostToDevice));
    }
    free (host);
}

//  Queue one host->GPU batch on 'stream': path 1 kernel, 2 copy engines,
//  3 staged through 'stage' (ce_args' host slots then come in runs).
static void
s_copy (int path, kvt_block_copy_args_t *kernel_args, kvt_block_copy_args_t *ce_args,
        kvt_block_stage_t *stage, cudaStream_t stream)
{
    int rc = path == 1? kvt_block_copy (kernel_args, stream)
           : path == 2? kvt_block_copy_ce (ce_args, stream)
           : kvt_block_copy_staged (stage, ce_args, false, stream);
    if (rc) {
        fprintf (stderr, "transfer failed: %d\n", rc);
        exit (1);
    }
}

//  Queue one paged decode attention on 'stream'; exits on failure.
static void
s_attention (const kvt_paged_attention_args_t *args, cudaStream_t stream)
{
    int rc = kvt_paged_attention (args, stream);
    if (rc) {
        fprintf (stderr, "attention failed: %d\n", rc);
        exit (1);
    }
}

//  Milliseconds between two completed events.
static float
s_elapsed_ms (cudaEvent_t from, cudaEvent_t to)
{
    float ms;
    S_CHECK (cudaEventElapsedTime (&ms, from, to));
    return ms;
}

//  Figure 1: decode attention (16 x 32K) alone and beside a host->GPU
//  stream of 64 KiB / 2 MiB blocks through the kernel and the copy engines.
static void
s_bench_beside (kvt_bench_report_t *report, s_bench_t *self, int reps, uint64_t *seed)
{
    const int seqs = 16, len = 32768;
    int blocks_per_seq = len / S_BT;
    int64_t blocks = (int64_t) seqs * blocks_per_seq;
    void *d_kv, *d_q, *d_out, *d_ws = NULL;
    int32_t *d_table, *d_lens;
    S_CHECK (cudaMalloc (&d_kv, blocks * S_CHUNK));
    S_CHECK (cudaMalloc (&d_q, (size_t) seqs * S_HEADS * S_DIM * 2));
    S_CHECK (cudaMalloc (&d_out, (size_t) seqs * S_HEADS * S_DIM * 2));
    S_CHECK (cudaMalloc ((void **) &d_table, blocks * 4));
    S_CHECK (cudaMalloc ((void **) &d_lens, seqs * 4));
    s_fill_device (d_kv, blocks * S_CHUNK, seed);
    s_fill_device (d_q, (size_t) seqs * S_HEADS * S_DIM * 2, seed);
    int64_t *order = (int64_t *) malloc (blocks * sizeof (int64_t));
    s_shuffle (order, blocks, seed);
    int32_t *table = (int32_t *) malloc (blocks * sizeof (int32_t));
    for (int64_t i = 0; i < blocks; i++)
        table [i] = (int32_t) order [i];
    S_CHECK (cudaMemcpy (d_table, table, blocks * 4, cudaMemcpyHostToDevice));
    int32_t lens [16];
    for (int s = 0; s < seqs; s++)
        lens [s] = len;
    S_CHECK (cudaMemcpy (d_lens, lens, sizeof (lens), cudaMemcpyHostToDevice));
    free (table);
    free (order);
    //  Runtime block layout with one layer: [K,V][kv_head][token][dim]
    kvt_paged_attention_args_t att = {
        .dtype = KVT_KDTYPE_BF16, .q = d_q, .k = d_kv, .v = (char *) d_kv + S_CHUNK / 2,
        .block_stride_bytes = S_CHUNK, .head_stride_bytes = S_BT * S_DIM * 2,
        .token_stride_bytes = S_DIM * 2, .block_table = d_table, .seq_lens = d_lens,
        .out = d_out, .seqs = seqs, .heads = S_HEADS, .kv_heads = S_KV_HEADS, .head_dim = S_DIM,
        .block_tokens = S_BT, .max_blocks_per_seq = blocks_per_seq, .max_seq_len = len,
        .scale = 1.0f / sqrtf ((float) S_DIM)
    };
    int splits = kvt_paged_attention_plan (&att);
    att.workspace_bytes = kvt_paged_attention_workspace_bytes (&att, splits);
    if (att.workspace_bytes)
        S_CHECK (cudaMalloc (&d_ws, att.workspace_bytes));
    att.workspace = d_ws;
    char text [128];
    snprintf (text, sizeof (text), "decode %d x %d, 32q/8kv hd128 bf16 bt16, %d splits; "
              "h2d 1 GiB per transfer batch", seqs, len, splits);
    kvt_bench_report_note (report, "beside", text);

    cudaStream_t sa = self->streams [0], sb = self->streams [1];
    const int att_reps = reps < 15? 15: reps > 80? 80: reps;
    cudaEvent_t ev [2][80 + 1], t_start, t_stop;
    for (int i = 0; i <= 80; i++) {
        S_CHECK (cudaEventCreate (&ev [0][i]));
        S_CHECK (cudaEventCreate (&ev [1][i]));
    }
    S_CHECK (cudaEventCreate (&t_start));
    S_CHECK (cudaEventCreate (&t_stop));
    double *times = (double *) malloc (80 * sizeof (double));

    //  Attention alone: median of att_reps launches after 3 warm-ups
    for (int i = 0; i < 3; i++)
        s_attention (&att, sa);
    for (int i = 0; i < att_reps; i++) {
        S_CHECK (cudaEventRecord (ev [0][i], sa));
        s_attention (&att, sa);
        S_CHECK (cudaEventRecord (ev [1][i], sa));
    }
    S_CHECK (cudaStreamSynchronize (sa));
    for (int i = 0; i < att_reps; i++)
        times [i] = s_elapsed_ms (ev [0][i], ev [1][i]) * 1000.0;
    qsort (times, att_reps, sizeof (double), kvt_bench_compare_double);
    double att_alone_us = times [att_reps / 2];

    static const int64_t block_sizes [] = { 64 << 10, 2 << 20 };
    static const char *labels [] = { "64KiB", "2MiB" };
    //  Variants: the kernel with one CTA per SM (its default), with 32 and
    //  8 CTAs (SMs left to attention), the copy engines, and the staged
    //  path with the host slots in one run (as a demoted batch's)
    static const char *variants [] = { "kernel", "kernel32", "kernel8", "ce", "staged" };
    static const int variant_ctas [] = { 0, 32, 8, 0, 0 };
    for (int s = 0; s < 2; s++) {
        int64_t block = block_sizes [s];
        int64_t count = S_MOVE_BYTES / block;
        int64_t slots = S_SLAB_BYTES / block;
        int64_t *host_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        int64_t *dev_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        s_shuffle (host_slots, slots, seed);
        s_shuffle (dev_slots, slots, seed);
        int64_t *d_slots;
        S_CHECK (cudaMalloc ((void **) &d_slots, 2 * count * sizeof (int64_t)));
        S_CHECK (cudaMemcpy (d_slots, host_slots, count * sizeof (int64_t), cudaMemcpyHostToDevice));
        S_CHECK (cudaMemcpy (d_slots + count, dev_slots, count * sizeof (int64_t),
                             cudaMemcpyHostToDevice));
        kvt_block_copy_args_t h2d = {
            .dst = self->device, .src = self->host_dev, .dst_slots = d_slots + count,
            .src_slots = d_slots, .dst_slot_bytes = block, .src_slot_bytes = block,
            .block_bytes = block, .count = (int) count
        };
        kvt_block_copy_args_t ce = h2d;
        ce.src = self->host;
        ce.src_slots = host_slots;
        ce.dst_slots = dev_slots;
        int64_t *run_slots = (int64_t *) malloc (count * sizeof (int64_t));
        for (int64_t k = 0; k < count; k++)
            run_slots [k] = k;
        kvt_block_copy_args_t staged = ce;
        staged.src_slots = run_slots;
        for (int v = 0; v < 5; v++) {
            if (v == 4 && !self->stages [0])
                break;
            int path = v == 4? 3: v == 3? 2: 1;
            h2d.max_ctas = variant_ctas [v];
            char figure [64], baseline [64];
            //  Transfer alone: median of 5 batches of 1 GiB after one warm-up
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            double rates [5];
            for (int r = 0; r < 5; r++) {
                S_CHECK (cudaEventRecord (t_start, sb));
                s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
                S_CHECK (cudaEventRecord (t_stop, sb));
                S_CHECK (cudaEventSynchronize (t_stop));
                rates [r] = (double) S_MOVE_BYTES / (s_elapsed_ms (t_start, t_stop) * 1e-3) / 1e9;
            }
            qsort (rates, 5, sizeof (double), kvt_bench_compare_double);
            double xfer_alone = rates [2];

            //  Attention beside: three 1 GiB batches first on B, then the
            //  attention launches on A, all inside the transfer's span
            S_CHECK (cudaEventRecord (t_start, sb));
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            S_CHECK (cudaEventRecord (t_stop, sb));
            s_attention (&att, sa);
            for (int i = 0; i < att_reps; i++) {
                S_CHECK (cudaEventRecord (ev [0][i], sa));
                s_attention (&att, sa);
                S_CHECK (cudaEventRecord (ev [1][i], sa));
            }
            S_CHECK (cudaDeviceSynchronize ());
            for (int i = 0; i < att_reps; i++)
                times [i] = s_elapsed_ms (ev [0][i], ev [1][i]) * 1000.0;
            //  Margins: transfer start before the first attention start,
            //  transfer end after the last attention end (both must be > 0)
            float lead_ms = s_elapsed_ms (t_start, ev [0][0]);
            float tail_ms = s_elapsed_ms (ev [1][att_reps - 1], t_stop);
            double span_us = s_elapsed_ms (ev [0][0], ev [1][att_reps - 1]) * 1000.0 / att_reps;
            qsort (times, att_reps, sizeof (double), kvt_bench_compare_double);
            double att_beside_us = times [att_reps / 2];
            snprintf (figure, sizeof (figure), "attn_beside_%s_%s_us", variants [v], labels [s]);
            kvt_bench_report_add (report, figure, att_beside_us, "us", "attn_alone_16x32K_us",
                                  att_alone_us);
            //  The same launches timed as one window (queueing included)
            snprintf (figure, sizeof (figure), "attn_beside_%s_%s_span_us", variants [v],
                      labels [s]);
            kvt_bench_report_add (report, figure, span_us, "us", "attn_alone_16x32K_us",
                                  att_alone_us);

            //  Transfer beside: the attention launches first on A (longer
            //  than the transfer), then one 1 GiB batch on B
            S_CHECK (cudaEventRecord (ev [0][0], sa));
            for (int i = 0; i < 80; i++)
                s_attention (&att, sa);
            S_CHECK (cudaEventRecord (ev [1][0], sa));
            S_CHECK (cudaEventRecord (t_start, sb));
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            S_CHECK (cudaEventRecord (t_stop, sb));
            S_CHECK (cudaDeviceSynchronize ());
            double xfer_beside = (double) S_MOVE_BYTES
                               / (s_elapsed_ms (t_start, t_stop) * 1e-3) / 1e9;
            float lead2_ms = s_elapsed_ms (ev [0][0], t_start);
            float tail2_ms = s_elapsed_ms (t_stop, ev [1][0]);
            snprintf (figure, sizeof (figure), "h2d_beside_attn_%s_%s_GBps", variants [v],
                      labels [s]);
            snprintf (baseline, sizeof (baseline), "h2d_alone_%s_%s_GBps", variants [v],
                      labels [s]);
            kvt_bench_report_add (report, figure, xfer_beside, "GB/s", baseline, xfer_alone);
            if (lead_ms <= 0 || tail_ms <= 0 || lead2_ms <= 0 || tail2_ms <= 0) {
                snprintf (figure, sizeof (figure), "beside_%s_%s", variants [v], labels [s]);
                snprintf (text, sizeof (text), "NOT OVERLAPPED: attn window lead %.2f tail "
                          "%.2f ms, xfer window lead %.2f tail %.2f ms", lead_ms, tail_ms,
                          lead2_ms, tail2_ms);
                kvt_bench_report_note (report, figure, text);
            }
        }
        cudaFree (d_slots);
        free (host_slots);
        free (run_slots);
        free (dev_slots);
    }
    for (int i = 0; i <= 80; i++) {
        cudaEventDestroy (ev [0][i]);
        cudaEventDestroy (ev [1][i]);
    }
    cudaEventDestroy (t_start);
    cudaEventDestroy (t_stop);
    free (times);
    cudaFree (d_kv);
    cudaFree (d_q);
    cudaFree (d_out);
    cudaFree (d_table);
    cudaFree (d_lens);
    cudaFree (d_ws);
}

typedef struct {
    int path;                       //  1 kernel, 2 copy engines
    kvt_block_copy_args_t kernel [S_LAYERS];   //  Per-layer copy, kernel path
    kvt_block_copy_args_t ce [S_LAYERS];       //  Per-layer copy, copy-engine path
    kvt_paged_attention_args_t att [S_LAYERS]; //  Per-layer attention
    cudaStream_t compute;           //  Attention stream
    cudaStream_t transfer;          //  Copy stream
    cudaEvent_t copied [S_LAYERS];  //  Layer l's blocks are on the GPU
    cudaEvent_t attended [S_LAYERS];    //  Layer l's attention finished
    cudaEvent_t start;              //  Step start
    cudaEvent_t stop;               //  Step end
} s_step_t;

//  One decode step: copy of layer l+1 on the transfer stream beside the
//  attention of layer l; attention l waits on copy l, and copy l+1 waits on
//  attention l-1 (a two-slot staging ring). Returns the step in us.
static double
s_step_overlapped (s_step_t *self)
{
    S_CHECK (cudaEventRecord (self->start, self->compute));
    S_CHECK (cudaStreamWaitEvent (self->transfer, self->start, 0));
    s_copy (self->path, &self->kernel [0], &self->ce [0], NULL, self->transfer);
    S_CHECK (cudaEventRecord (self->copied [0], self->transfer));
    for (int l = 0; l < S_LAYERS; l++) {
        if (l + 1 < S_LAYERS) {
            if (l >= 1)
                S_CHECK (cudaStreamWaitEvent (self->transfer, self->attended [l - 1], 0));
            s_copy (self->path, &self->kernel [l + 1], &self->ce [l + 1], NULL, self->transfer);
            S_CHECK (cudaEventRecord (self->copied [l + 1], self->transfer));
        }
        S_CHECK (cudaStreamWaitEvent (self->compute, self->copied [l], 0));
        s_attention (&self->att [l], self->compute);
        S_CHECK (cudaEventRecord (self->attended [l], self->compute));
    }
    S_CHECK (cudaEventRecord (self->stop, self->compute));
    S_CHECK (cudaEventSynchronize (self->stop));
    return s_elapsed_ms (self->start, self->stop) * 1000.0;
}

//  All layers' attention with every block resident. Returns us.
static double
s_step_attention (s_step_t *self)
{
    S_CHECK (cudaEventRecord (self->start, self->compute));
    for (int l = 0; l < S_LAYERS; l++)
        s_attention (&self->att [l], self->compute);
    S_CHECK (cudaEventRecord (self->stop, self->compute));
    S_CHECK (cudaEventSynchronize (self->stop));
    return s_elapsed_ms (self->start, self->stop) * 1000.0;
}

//  All layers' copies, back to back. Returns us.
static double
s_step_transfer (s_step_t *self)
{
    S_CHECK (cudaEventRecord (self->start, self->transfer));
    for (int l = 0; l < S_LAYERS; l++)
        s_copy (self->path, &self->kernel [l], &self->ce [l], NULL, self->transfer);
    S_CHECK (cudaEventRecord (self->stop, self->transfer));
    S_CHECK (cudaEventSynchronize (self->stop));
    return s_elapsed_ms (self->start, self->stop) * 1000.0;
}

//  Figure 2: a decode step of 32 layers for 'seqs' sequences of 'len'
//  tokens whose first 'streamed' tokens each live in pinned host memory
//  (runtime block layout, 2 MiB blocks of 32 layers); per layer the 64 KiB
//  layer slices of those blocks are copied up. Reports step vs
//  max (attention only, transfer only), both paths, and checks that the
//  overlapped step's outputs equal the attention-only outputs.
static int
s_bench_step (kvt_bench_report_t *report, int seqs, int len, int streamed, int reps,
              uint64_t *seed)
{
    int blocks_per_seq = len / S_BT;
    int streamed_per_seq = streamed / S_BT;
    int64_t blocks = (int64_t) seqs * blocks_per_seq;
    int count = seqs * streamed_per_seq;
    int64_t block_bytes = S_CHUNK * S_LAYERS;               //  2 MiB
    size_t out_bytes = (size_t) seqs * S_HEADS * S_DIM * 2;
    void *d_slab, *d_q, *d_out, *d_ws = NULL, *host, *host_dev;
    int32_t *d_table, *d_lens;
    S_CHECK (cudaMalloc (&d_slab, blocks * block_bytes));
    S_CHECK (cudaMalloc (&d_q, out_bytes));
    S_CHECK (cudaMalloc (&d_out, 2 * S_LAYERS * out_bytes));
    S_CHECK (cudaMalloc ((void **) &d_table, blocks * 4));
    S_CHECK (cudaMalloc ((void **) &d_lens, seqs * 4));
    S_CHECK (cudaHostAlloc (&host, (size_t) count * block_bytes,
                            cudaHostAllocMapped | cudaHostAllocPortable));
    S_CHECK (cudaHostGetDevicePointer (&host_dev, host, 0));
    s_fill_device (d_slab, blocks * block_bytes, seed);
    s_fill_device (d_q, out_bytes, seed);
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, host, (size_t) count * block_bytes / 2, 1.0f, seed);
    int64_t *order = (int64_t *) malloc (blocks * sizeof (int64_t));
    s_shuffle (order, blocks, seed);
    int32_t *table = (int32_t *) malloc (blocks * sizeof (int32_t));
    for (int64_t i = 0; i < blocks; i++)
        table [i] = (int32_t) order [i];
    S_CHECK (cudaMemcpy (d_table, table, blocks * 4, cudaMemcpyHostToDevice));
    int32_t *lens = (int32_t *) malloc (seqs * sizeof (int32_t));
    for (int s = 0; s < seqs; s++)
        lens [s] = len;
    S_CHECK (cudaMemcpy (d_lens, lens, seqs * 4, cudaMemcpyHostToDevice));
    free (lens);
    //  Streamed block i = sequence i / streamed_per_seq, its block i % ...
    //  host slot i; GPU slot = its table entry. Per layer, slot units of 64 KiB.
    int64_t *src = (int64_t *) malloc ((size_t) S_LAYERS * count * sizeof (int64_t));
    int64_t *dst = (int64_t *) malloc ((size_t) S_LAYERS * count * sizeof (int64_t));
    for (int l = 0; l < S_LAYERS; l++)
        for (int i = 0; i < count; i++) {
            int s = i / streamed_per_seq, b = i % streamed_per_seq;
            src [(size_t) l * count + i] = (int64_t) i * S_LAYERS + l;
            dst [(size_t) l * count + i] = (int64_t) table [(int64_t) s * blocks_per_seq + b]
                                         * S_LAYERS + l;
        }
    int64_t *d_src, *d_dst;
    S_CHECK (cudaMalloc ((void **) &d_src, (size_t) S_LAYERS * count * sizeof (int64_t)));
    S_CHECK (cudaMalloc ((void **) &d_dst, (size_t) S_LAYERS * count * sizeof (int64_t)));
    S_CHECK (cudaMemcpy (d_src, src, (size_t) S_LAYERS * count * sizeof (int64_t),
                         cudaMemcpyHostToDevice));
    S_CHECK (cudaMemcpy (d_dst, dst, (size_t) S_LAYERS * count * sizeof (int64_t),
                         cudaMemcpyHostToDevice));

    s_step_t *self = (s_step_t *) calloc (1, sizeof (s_step_t));
    S_CHECK (cudaStreamCreateWithFlags (&self->compute, cudaStreamNonBlocking));
    S_CHECK (cudaStreamCreateWithFlags (&self->transfer, cudaStreamNonBlocking));
    S_CHECK (cudaEventCreate (&self->start));
    S_CHECK (cudaEventCreate (&self->stop));
    int splits = 0;
    for (int l = 0; l < S_LAYERS; l++) {
        S_CHECK (cudaEventCreateWithFlags (&self->copied [l], cudaEventDisableTiming));
        S_CHECK (cudaEventCreateWithFlags (&self->attended [l], cudaEventDisableTiming));
        kvt_block_copy_args_t copy = {
            .dst = d_slab, .src = host_dev, .dst_slots = d_dst + (size_t) l * count,
            .src_slots = d_src + (size_t) l * count, .dst_slot_bytes = S_CHUNK,
            .src_slot_bytes = S_CHUNK, .block_bytes = S_CHUNK, .count = count
        };
        self->kernel [l] = copy;
        copy.src = host;
        copy.dst_slots = dst + (size_t) l * count;
        copy.src_slots = src + (size_t) l * count;
        self->ce [l] = copy;
        kvt_paged_attention_args_t att = {
            .dtype = KVT_KDTYPE_BF16, .q = d_q, .k = (char *) d_slab + l * S_CHUNK,
            .v = (char *) d_slab + l * S_CHUNK + S_CHUNK / 2,
            .block_stride_bytes = block_bytes, .head_stride_bytes = S_BT * S_DIM * 2,
            .token_stride_bytes = S_DIM * 2, .block_table = d_table, .seq_lens = d_lens,
            .out = (char *) d_out + l * out_bytes, .seqs = seqs, .heads = S_HEADS,
            .kv_heads = S_KV_HEADS, .head_dim = S_DIM, .block_tokens = S_BT,
            .max_blocks_per_seq = blocks_per_seq, .max_seq_len = len,
            .scale = 1.0f / sqrtf ((float) S_DIM)
        };
        if (l == 0) {
            splits = kvt_paged_attention_plan (&att);
            att.workspace_bytes = kvt_paged_attention_workspace_bytes (&att, splits);
            if (att.workspace_bytes)
                S_CHECK (cudaMalloc (&d_ws, att.workspace_bytes));
        }
        att.workspace = d_ws;
        att.workspace_bytes = kvt_paged_attention_workspace_bytes (&att, splits);
        self->att [l] = att;
    }
    free (table);
    free (order);
    char label [32], text [128], figure [64], baseline [64];
    snprintf (label, sizeof (label), "%dx%dK_%d", seqs, len >> 10, streamed);
    double layer_mib = (double) count * S_CHUNK / 1048576.0;
    snprintf (text, sizeof (text), "%d seqs x %d tokens, first %d of each from host: "
              "%.1f MiB/layer in %d x 64 KiB, %d layers, %d splits", seqs, len, streamed,
              layer_mib, count, S_LAYERS, splits);
    snprintf (figure, sizeof (figure), "step_%s", label);
    kvt_bench_report_note (report, figure, text);

    //  Correctness: the copy puts the host bytes in place; attention over
    //  them is the reference. Then clobber the streamed slices on the GPU
    //  (the check must see the difference) and run the overlapped step.
    int failed = 0;
    self->path = 1;
    s_step_transfer (self);
    s_step_attention (self);
    S_CHECK (cudaMemcpy ((char *) d_out + S_LAYERS * out_bytes, d_out, S_LAYERS * out_bytes,
                         cudaMemcpyDeviceToDevice));
    for (int path = 1; path <= 2 && !failed; path++) {
        for (int i = 0; i < count; i++) {
            int64_t slot = dst [i] / S_LAYERS;              //  Layer-0 entry: the block
            S_CHECK (cudaMemset ((char *) d_slab + slot * block_bytes, 0x11, block_bytes));
        }
        s_step_attention (self);
        char *got = (char *) malloc (S_LAYERS * out_bytes);
        char *want = (char *) malloc (S_LAYERS * out_bytes);
        S_CHECK (cudaMemcpy (got, d_out, S_LAYERS * out_bytes, cudaMemcpyDeviceToHost));
        S_CHECK (cudaMemcpy (want, (char *) d_out + S_LAYERS * out_bytes, S_LAYERS * out_bytes,
                             cudaMemcpyDeviceToHost));
        bool sensitive = memcmp (got, want, S_LAYERS * out_bytes) != 0;
        self->path = path;
        s_step_overlapped (self);
        S_CHECK (cudaMemcpy (got, d_out, S_LAYERS * out_bytes, cudaMemcpyDeviceToHost));
        bool equal = memcmp (got, want, S_LAYERS * out_bytes) == 0;
        snprintf (text, sizeof (text), "%s path: overlapped outputs %s attention-only outputs "
                  "(clobbered KV %s)", path == 1? "kernel": "ce", equal? "EQUAL": "DIFFER from",
                  sensitive? "differs, as it must": "DID NOT DIFFER");
        snprintf (figure, sizeof (figure), "check_%s_%s", label, path == 1? "kernel": "ce");
        kvt_bench_report_note (report, figure, text);
        if (!equal || !sensitive)
            failed = 1;
        free (got);
        free (want);
    }
    //  Timing: attention only, transfer only and the overlapped step,
    //  interleaved, medians over 'reps' after one warm-up of each
    static const char *variants [] = { "kernel", "kernel32", "kernel8", "ce" };
    static const int variant_ctas [] = { 0, 32, 8, 0 };
    for (int v = 0; v < 4; v++) {
        int path = v == 3? 2: 1;
        self->path = path;
        for (int l = 0; l < S_LAYERS; l++)
            self->kernel [l].max_ctas = variant_ctas [v];
        double *t = (double *) malloc (3 * (reps + 1) * sizeof (double));
        for (int r = 0; r <= reps; r++) {
            t [r] = s_step_attention (self);
            t [reps + 1 + r] = s_step_transfer (self);
            t [2 * (reps + 1) + r] = s_step_overlapped (self);
        }
        for (int k = 0; k < 3; k++)
            qsort (t + k * (reps + 1) + 1, reps, sizeof (double), kvt_bench_compare_double);
        double att_us = t [1 + reps / 2];
        double xfer_us = t [reps + 2 + reps / 2];
        double step_us = t [2 * (reps + 1) + 1 + reps / 2];
        const char *name = variants [v];
        snprintf (figure, sizeof (figure), "step_%s_%s_us", label, name);
        snprintf (baseline, sizeof (baseline), "max_attn_%.0f_xfer_%.0f_us", att_us, xfer_us);
        kvt_bench_report_add (report, figure, step_us, "us", baseline,
                              att_us > xfer_us? att_us: xfer_us);
        snprintf (figure, sizeof (figure), "step_%s_%s_us", label, name);
        kvt_bench_report_add (report, figure, step_us, "us", "attn_plus_xfer_serial_us",
                              att_us + xfer_us);
        snprintf (figure, sizeof (figure), "step_%s_%s", label, name);
        snprintf (text, sizeof (text), "attention only %.1f us, transfer only %.1f us "
                  "(%.1f GB/s), overlapped step %.1f us", att_us, xfer_us,
                  (double) S_LAYERS * count * S_CHUNK / (xfer_us * 1e-6) / 1e9, step_us);
        kvt_bench_report_note (report, figure, text);
        free (t);
    }
    for (int l = 0; l < S_LAYERS; l++) {
        cudaEventDestroy (self->copied [l]);
        cudaEventDestroy (self->attended [l]);
    }
    cudaEventDestroy (self->start);
    cudaEventDestroy (self->stop);
    cudaStreamDestroy (self->compute);
    cudaStreamDestroy (self->transfer);
    free (self);
    free (src);
    free (dst);
    cudaFree (d_src);
    cudaFree (d_dst);
    cudaFree (d_slab);
    cudaFree (d_q);
    cudaFree (d_out);
    cudaFree (d_table);
    cudaFree (d_lens);
    cudaFree (d_ws);
    cudaFreeHost (host);
    return failed;
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
    S_CHECK (cudaMalloc ((void **) &self.pair_counter, sizeof (unsigned long long)));
    memset (self.host, 0x5a, S_SLAB_BYTES);                 //  Touch every page
    S_CHECK (cudaMemset (self.device, 0x3c, S_SLAB_BYTES));
    for (int dir = 0; dir < 2; dir++) {
        S_CHECK (cudaStreamCreateWithFlags (&self.streams [dir], cudaStreamNonBlocking));
        S_CHECK (cudaEventCreate (&self.start [dir]));
        S_CHECK (cudaEventCreate (&self.stop [dir]));
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
            double own [2];
            double both_rate = s_measure (&self, 3, path, &h2d, &d2h, &ce_h2d, &ce_d2h, reps,
                                          own);
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
        //  Staged (issue #3): host slots in runs of 64 blocks at random
        //  run-aligned places, GPU slots scattered as above
        if (!kernel_only) {
            const int64_t run = 64;
            int64_t *run_order = (int64_t *) malloc (slots / run * sizeof (int64_t));
            int64_t *run_slots = (int64_t *) malloc (slots * sizeof (int64_t));
            s_shuffle (run_order, slots / run, &seed);
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
        s_bench_beside (report, &self, reps < 15? 15: reps, &seed);
    int failed = 0;
    if (!only || strcmp (only, "step") == 0) {
        //  Release the block slabs first: the step needs up to 16 GiB
        cudaFree (self.device);
        self.device = NULL;
        failed |= s_bench_step (report, 4, 32768, 512, reps, &seed);
        failed |= s_bench_step (report, 1, 65536, 1024, reps, &seed);
    }
    for (int dir = 0; dir < 2; dir++) {
        kvt_block_stage_destroy (&self.stages [dir]);
        cudaStreamDestroy (self.streams [dir]);
        cudaEventDestroy (self.start [dir]);
        cudaEventDestroy (self.stop [dir]);
    }
    cudaFree (self.device);
    cudaFree (self.pair_counter);
    cudaFreeHost (self.host);
    kvt_bench_report_finish (&report);
    return failed? 1: 0;
}
#endif
