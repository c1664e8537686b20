/*  =========================================================================
    kvt_bench_transfer_attn - `kvtier bench transfer --only beside | step`:
    attention beside a host->GPU transfer, and the layer-streamed decode step

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    See kvt_bench_transfer.c's @header ("Beside", "Step"); issue #3.
@end
*/

#include "kvt_bench_transfer_int.h"

#ifdef KVT_WITH_CUDA

#include <math.h>
#include <string.h>
#include "kvt_paged_attention.cuh"

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
    KVT_BENCH_CUDA_CHECK (cudaEventElapsedTime (&ms, from, to));
    return ms;
}

//  Figure 1: decode attention (16 x 32K) alone and beside a host->GPU
//  stream of 64 KiB / 2 MiB blocks through the kernel and the copy engines.
void
kvt_bench_transfer_beside (kvt_bench_report_t *report, kvt_bench_transfer_t *self, int reps,
                           uint64_t *seed)
{
    const int seqs = 16, len = 32768;
    int blocks_per_seq = len / S_BT;
    int64_t blocks = (int64_t) seqs * blocks_per_seq;
    void *d_kv, *d_q, *d_out, *d_ws = NULL;
    int32_t *d_table, *d_lens;
    KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_kv, blocks * S_CHUNK));
    KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_q, (size_t) seqs * S_HEADS * S_DIM * 2));
    KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_out, (size_t) seqs * S_HEADS * S_DIM * 2));
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_table, blocks * 4));
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_lens, seqs * 4));
    kvt_bench_fill_device (d_kv, blocks * S_CHUNK, seed);
    kvt_bench_fill_device (d_q, (size_t) seqs * S_HEADS * S_DIM * 2, seed);
    int64_t *order = (int64_t *) malloc (blocks * sizeof (int64_t));
    kvt_bench_transfer_shuffle (order, blocks, seed);
    int32_t *table = (int32_t *) malloc (blocks * sizeof (int32_t));
    for (int64_t i = 0; i < blocks; i++)
        table [i] = (int32_t) order [i];
    KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_table, table, blocks * 4, cudaMemcpyHostToDevice));
    int32_t lens [16];
    for (int s = 0; s < seqs; s++)
        lens [s] = len;
    KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_lens, lens, sizeof (lens), cudaMemcpyHostToDevice));
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
        KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_ws, att.workspace_bytes));
    att.workspace = d_ws;
    char text [128];
    snprintf (text, sizeof (text), "decode %d x %d, 32q/8kv hd128 bf16 bt16, %d splits; "
              "h2d 1 GiB per transfer batch", seqs, len, splits);
    kvt_bench_report_note (report, "beside", text);

    cudaStream_t sa = self->streams [0], sb = self->streams [1];
    const int att_reps = reps < 15? 15: reps > 80? 80: reps;
    cudaEvent_t ev [2][80 + 1], t_start, t_stop;
    for (int i = 0; i <= 80; i++) {
        KVT_BENCH_CUDA_CHECK (cudaEventCreate (&ev [0][i]));
        KVT_BENCH_CUDA_CHECK (cudaEventCreate (&ev [1][i]));
    }
    KVT_BENCH_CUDA_CHECK (cudaEventCreate (&t_start));
    KVT_BENCH_CUDA_CHECK (cudaEventCreate (&t_stop));
    double *times = (double *) malloc (80 * sizeof (double));

    //  Attention alone: median of att_reps launches after 3 warm-ups
    for (int i = 0; i < 3; i++)
        s_attention (&att, sa);
    for (int i = 0; i < att_reps; i++) {
        KVT_BENCH_CUDA_CHECK (cudaEventRecord (ev [0][i], sa));
        s_attention (&att, sa);
        KVT_BENCH_CUDA_CHECK (cudaEventRecord (ev [1][i], sa));
    }
    KVT_BENCH_CUDA_CHECK (cudaStreamSynchronize (sa));
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
        int64_t count = KVT_BENCH_MOVE_BYTES / block;
        int64_t slots = KVT_BENCH_SLAB_BYTES / block;
        int64_t *host_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        int64_t *dev_slots = (int64_t *) malloc (slots * sizeof (int64_t));
        kvt_bench_transfer_shuffle (host_slots, slots, seed);
        kvt_bench_transfer_shuffle (dev_slots, slots, seed);
        int64_t *d_slots;
        KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_slots, 2 * count * sizeof (int64_t)));
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_slots, host_slots, count * sizeof (int64_t), cudaMemcpyHostToDevice));
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_slots + count, dev_slots, count * sizeof (int64_t),
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
                KVT_BENCH_CUDA_CHECK (cudaEventRecord (t_start, sb));
                s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
                KVT_BENCH_CUDA_CHECK (cudaEventRecord (t_stop, sb));
                KVT_BENCH_CUDA_CHECK (cudaEventSynchronize (t_stop));
                rates [r] = (double) KVT_BENCH_MOVE_BYTES / (s_elapsed_ms (t_start, t_stop) * 1e-3) / 1e9;
            }
            qsort (rates, 5, sizeof (double), kvt_bench_compare_double);
            double xfer_alone = rates [2];

            //  Attention beside: three 1 GiB batches first on B, then the
            //  attention launches on A, all inside the transfer's span
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (t_start, sb));
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (t_stop, sb));
            s_attention (&att, sa);
            for (int i = 0; i < att_reps; i++) {
                KVT_BENCH_CUDA_CHECK (cudaEventRecord (ev [0][i], sa));
                s_attention (&att, sa);
                KVT_BENCH_CUDA_CHECK (cudaEventRecord (ev [1][i], sa));
            }
            KVT_BENCH_CUDA_CHECK (cudaDeviceSynchronize ());
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
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (ev [0][0], sa));
            for (int i = 0; i < 80; i++)
                s_attention (&att, sa);
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (ev [1][0], sa));
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (t_start, sb));
            s_copy (path, &h2d, v == 4? &staged: &ce, self->stages [0], sb);
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (t_stop, sb));
            KVT_BENCH_CUDA_CHECK (cudaDeviceSynchronize ());
            double xfer_beside = (double) KVT_BENCH_MOVE_BYTES
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

//  End a timed step on 'stream' (it began with self->start): wait for it
//  and return its microseconds.
static double
s_step_end_us (s_step_t *self, cudaStream_t stream)
{
    KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->stop, stream));
    KVT_BENCH_CUDA_CHECK (cudaEventSynchronize (self->stop));
    return s_elapsed_ms (self->start, self->stop) * 1000.0;
}

//  One decode step: copy of layer l+1 on the transfer stream beside the
//  attention of layer l; attention l waits on copy l, and copy l+1 waits on
//  attention l-1 (a two-slot staging ring). Returns the step in us.
static double
s_step_overlapped (s_step_t *self)
{
    KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->start, self->compute));
    KVT_BENCH_CUDA_CHECK (cudaStreamWaitEvent (self->transfer, self->start, 0));
    s_copy (self->path, &self->kernel [0], &self->ce [0], NULL, self->transfer);
    KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->copied [0], self->transfer));
    for (int l = 0; l < S_LAYERS; l++) {
        if (l + 1 < S_LAYERS) {
            if (l >= 1)
                KVT_BENCH_CUDA_CHECK (cudaStreamWaitEvent (self->transfer, self->attended [l - 1], 0));
            s_copy (self->path, &self->kernel [l + 1], &self->ce [l + 1], NULL, self->transfer);
            KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->copied [l + 1], self->transfer));
        }
        KVT_BENCH_CUDA_CHECK (cudaStreamWaitEvent (self->compute, self->copied [l], 0));
        s_attention (&self->att [l], self->compute);
        KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->attended [l], self->compute));
    }
    return s_step_end_us (self, self->compute);
}

//  All layers' attention with every block resident. Returns us.
static double
s_step_attention (s_step_t *self)
{
    KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->start, self->compute));
    for (int l = 0; l < S_LAYERS; l++)
        s_attention (&self->att [l], self->compute);
    return s_step_end_us (self, self->compute);
}

//  All layers' copies, back to back. Returns us.
static double
s_step_transfer (s_step_t *self)
{
    KVT_BENCH_CUDA_CHECK (cudaEventRecord (self->start, self->transfer));
    for (int l = 0; l < S_LAYERS; l++)
        s_copy (self->path, &self->kernel [l], &self->ce [l], NULL, self->transfer);
    return s_step_end_us (self, self->transfer);
}

//  Figure 2: a decode step of 32 layers for 'seqs' sequences of 'len'
//  tokens whose first 'streamed' tokens each live in pinned host memory
//  (runtime block layout, 2 MiB blocks of 32 layers); per layer the 64 KiB
//  layer slices of those blocks are copied up. Reports step vs
//  max (attention only, transfer only), both paths, and checks that the
//  overlapped step's outputs equal the attention-only outputs.
int
kvt_bench_transfer_step (kvt_bench_report_t *report, int seqs, int len, int streamed, int reps,
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
    KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_slab, blocks * block_bytes));
    KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_q, out_bytes));
    KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_out, 2 * S_LAYERS * out_bytes));
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_table, blocks * 4));
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_lens, seqs * 4));
    KVT_BENCH_CUDA_CHECK (cudaHostAlloc (&host, (size_t) count * block_bytes,
                            cudaHostAllocMapped | cudaHostAllocPortable));
    KVT_BENCH_CUDA_CHECK (cudaHostGetDevicePointer (&host_dev, host, 0));
    kvt_bench_fill_device (d_slab, blocks * block_bytes, seed);
    kvt_bench_fill_device (d_q, out_bytes, seed);
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, host, (size_t) count * block_bytes / 2, 1.0f, seed);
    int64_t *order = (int64_t *) malloc (blocks * sizeof (int64_t));
    kvt_bench_transfer_shuffle (order, blocks, seed);
    int32_t *table = (int32_t *) malloc (blocks * sizeof (int32_t));
    for (int64_t i = 0; i < blocks; i++)
        table [i] = (int32_t) order [i];
    KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_table, table, blocks * 4, cudaMemcpyHostToDevice));
    int32_t *lens = (int32_t *) malloc (seqs * sizeof (int32_t));
    for (int s = 0; s < seqs; s++)
        lens [s] = len;
    KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_lens, lens, seqs * 4, cudaMemcpyHostToDevice));
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
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_src, (size_t) S_LAYERS * count * sizeof (int64_t)));
    KVT_BENCH_CUDA_CHECK (cudaMalloc ((void **) &d_dst, (size_t) S_LAYERS * count * sizeof (int64_t)));
    KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_src, src, (size_t) S_LAYERS * count * sizeof (int64_t),
                         cudaMemcpyHostToDevice));
    KVT_BENCH_CUDA_CHECK (cudaMemcpy (d_dst, dst, (size_t) S_LAYERS * count * sizeof (int64_t),
                         cudaMemcpyHostToDevice));

    s_step_t *self = (s_step_t *) calloc (1, sizeof (s_step_t));
    KVT_BENCH_CUDA_CHECK (cudaStreamCreateWithFlags (&self->compute, cudaStreamNonBlocking));
    KVT_BENCH_CUDA_CHECK (cudaStreamCreateWithFlags (&self->transfer, cudaStreamNonBlocking));
    KVT_BENCH_CUDA_CHECK (cudaEventCreate (&self->start));
    KVT_BENCH_CUDA_CHECK (cudaEventCreate (&self->stop));
    int splits = 0;
    for (int l = 0; l < S_LAYERS; l++) {
        KVT_BENCH_CUDA_CHECK (cudaEventCreateWithFlags (&self->copied [l], cudaEventDisableTiming));
        KVT_BENCH_CUDA_CHECK (cudaEventCreateWithFlags (&self->attended [l], cudaEventDisableTiming));
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
                KVT_BENCH_CUDA_CHECK (cudaMalloc (&d_ws, att.workspace_bytes));
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
    KVT_BENCH_CUDA_CHECK (cudaMemcpy ((char *) d_out + S_LAYERS * out_bytes, d_out, S_LAYERS * out_bytes,
                         cudaMemcpyDeviceToDevice));
    for (int path = 1; path <= 2 && !failed; path++) {
        for (int i = 0; i < count; i++) {
            int64_t slot = dst [i] / S_LAYERS;              //  Layer-0 entry: the block
            KVT_BENCH_CUDA_CHECK (cudaMemset ((char *) d_slab + slot * block_bytes, 0x11, block_bytes));
        }
        s_step_attention (self);
        char *got = (char *) malloc (S_LAYERS * out_bytes);
        char *want = (char *) malloc (S_LAYERS * out_bytes);
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (got, d_out, S_LAYERS * out_bytes, cudaMemcpyDeviceToHost));
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (want, (char *) d_out + S_LAYERS * out_bytes, S_LAYERS * out_bytes,
                             cudaMemcpyDeviceToHost));
        bool sensitive = memcmp (got, want, S_LAYERS * out_bytes) != 0;
        self->path = path;
        s_step_overlapped (self);
        KVT_BENCH_CUDA_CHECK (cudaMemcpy (got, d_out, S_LAYERS * out_bytes, cudaMemcpyDeviceToHost));
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


#endif
