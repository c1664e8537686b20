/*  =========================================================================
    kvt_bench_kernels - `kvtier bench kernels`: our GPU kernels beside
    their same-run baselines

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Paged decode attention, bf16, 32 query / 8 KV heads, head_dim 128,
    16-token blocks in shuffled order, at batch x context 64x4K, 16x32K and
    1x128K. Each figure is the KV bytes read per second (TB/s); baselines
    are a device-to-device cudaMemcpy of the same run (read + write
    counted) and, with --torch FILE, PyTorch SDPA (cuDNN, flash) on
    contiguous KV as measured by tools/bench/gpu/baseline_sdpa.py in the
    same device session. The same KV quantized to e4m3 (kvt_fp8_quantize,
    per-block per-head scales) is read by kvt_fp8_attention: its TB/s
    counts the fp8 bytes and scales it reads, and its time is set beside
    the bf16 decode's time on the same shape (ratio = fp8 / bf16 time).
    16x32K runs twice more: with each head's KV contiguous and its blocks
    in order (the bytes cuDNN reads, through the same paged kernel), and
    with 64-token blocks, shuffled: what the paged access pattern costs.
    Then a mixed batch: one 128K-token context and 63 of 1K-8K tokens
    (decode_mixed; no torch baseline), where a CTA per sequence and head
    waits on the long one and the default runs decode v5.
    Paged prefill over a cached prefix is compared with PyTorch's flash
    and cuDNN backends in TFLOP/s (causal FLOPs).
    --quick skips prefill; --splits N forces the decode split count;
    --prefill-variants 0,2 times those prefill kernel versions (default 0);
    --decode-variants 0,2 those bf16 decode versions, on the same KV (the
    fp8 decode is set beside the first); --shapes 64x4K,mixed runs those
    decode shapes alone (names as in the figures: 64x4K, 16x32K, 1x128K,
    16x32K_contiguous, 16x32K_bt64, mixed), so that a profiler's launch
    counts stay simple; any other "<seqs>x<tokens>[K]" there (66x4K) adds
    that batch of equal sequences in shuffled 16-token blocks, to see the
    shapes whose CTAs or splits do not divide evenly. --kv-layout block
    or head places each block's V beside its K as the runtime's block does
    (block) or each head's V right after its K (head) instead of in an
    allocation of its own (separate, the default).
    Usage: kvtier bench kernels [--json] [--torch FILE] [--reps N] [--quick] [--splits N]
                                [--prefill-variants LIST] [--decode-variants LIST]
                                [--shapes LIST] [--kv-layout separate|block|head]
@end
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kvt_bench.h"
#include "kvt_util.h"

#ifndef KVT_WITH_CUDA

int
kvt_bench_kernels_main (int argc, char **argv)
{
    (void) argc;
    (void) argv;
    fprintf (stderr, "kvtier bench kernels: needs a CUDA build "
             "(configure with -DKVT_CUDA=ON on a machine with nvcc)\n");
    return 2;
}

#else

#include "kvt_fp8.cuh"
#include "kvt_fp8_attention.cuh"
#include "kvt_paged_attention.cuh"
#include "kvt_paged_prefill.cuh"

#define S_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

#define S_MAX_TORCH 64

typedef struct {
    char name [64];                 //  Baseline key, e.g. sdpa_cudnn_64x4K_us
    double value;                   //  Its value
} s_torch_t;

typedef struct {
    s_torch_t entries [S_MAX_TORCH];    //  Baselines read from --torch
    int count;                      //  Entries read
} s_torch_file_t;

static void
s_torch_load (s_torch_file_t *file, const char *path)
{
    file->count = 0;
    FILE *handle = path? fopen (path, "r"): NULL;
    if (!handle) {
        if (path)
            fprintf (stderr, "kvtier bench kernels: cannot read %s\n", path);
        return;
    }
    char line [256];
    while (fgets (line, sizeof (line), handle) && file->count < S_MAX_TORCH) {
        s_torch_t *entry = &file->entries [file->count];
        if (line [0] != '#' && sscanf (line, "%63s %lf", entry->name, &entry->value) == 2)
            file->count++;
    }
    fclose (handle);
}

static double
s_torch_get (const s_torch_file_t *file, const char *name)
{
    for (int i = 0; i < file->count; i++)
        if (strcmp (file->entries [i].name, name) == 0)
            return file->entries [i].value;
    return 0;
}

//  Report 'figure' beside each PyTorch backend that torch.txt timed for
//  'label' ("<kind><backend>_<label>_us" there), as the rate 'work' per
//  second in 'unit' (baseline "torch_<kind><backend>_<label>_<tag>").
//  Returns how many baselines it found.
static int
s_add_torch_baselines (kvt_bench_report_t *report, const s_torch_file_t *torch,
                       const char *figure, double rate, const char *unit, const char *tag,
                       const char *kind, const char *const *backends, int backend_count,
                       const char *label, double work)
{
    int found = 0;
    char name [64];
    for (int b = 0; b < backend_count; b++) {
        snprintf (name, sizeof (name), "%s%s_%s_us", kind, backends [b], label);
        double torch_us = s_torch_get (torch, name);
        if (torch_us > 0) {
            snprintf (name, sizeof (name), "torch_%s%s_%s_%s", kind, backends [b], label, tag);
            kvt_bench_report_add (report, figure, rate, unit, name, work / (torch_us * 1e-6));
            found++;
        }
    }
    return found;
}

typedef int (s_launch_fn) (void *context, cudaStream_t stream);

//  Launches timed together: queued back to back between two events, so
//  that the host's cost of each call (argument checks, the split plan,
//  the launch itself) overlaps the device's work, as in a serving loop,
//  and the figure is the device's time. tools/bench/gpu/baseline_sdpa.py
//  times the PyTorch baselines the same way. (Until session 20 each launch
//  was timed alone, host cost included on both sides.)
#define S_BATCH 4

//  Median over 'reps' batches of the time per launch, after 3 warm-ups.
static double
s_time_us (s_launch_fn *launch, void *context, cudaStream_t stream, int reps)
{
    cudaEvent_t start, stop;
    S_CHECK (cudaEventCreate (&start));
    S_CHECK (cudaEventCreate (&stop));
    for (int i = 0; i < 3; i++)
        if (launch (context, stream)) {
            fprintf (stderr, "launch failed\n");
            exit (1);
        }
    double *times = (double *) malloc (reps * sizeof (double));
    for (int i = 0; i < reps; i++) {
        S_CHECK (cudaEventRecord (start, stream));
        int rc = 0;
        for (int b = 0; b < S_BATCH && rc == 0; b++)
            rc = launch (context, stream);
        S_CHECK (cudaEventRecord (stop, stream));
        S_CHECK (cudaEventSynchronize (stop));
        if (rc) {
            fprintf (stderr, "launch failed: %d\n", rc);
            exit (1);
        }
        float ms;
        S_CHECK (cudaEventElapsedTime (&ms, start, stop));
        times [i] = ms * 1000.0 / S_BATCH;
    }
    qsort (times, reps, sizeof (double), kvt_bench_compare_double);
    double median = times [reps / 2];
    free (times);
    cudaEventDestroy (start);
    cudaEventDestroy (stop);
    return median;
}

//  Fill 'bytes' of device memory with random bf16 in [-1, 1) from a 64 MiB
//  host pattern (random, never zeros; repetition does not change the cost).
//  Shared with the transfer bench (kvt_bench.h).
void
kvt_bench_fill_device (void *device, size_t bytes, uint64_t *seed)
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

typedef struct {
    void *dst;                      //  memcpy destination
    const void *src;                //  memcpy source
    size_t bytes;                   //  Bytes per copy
} s_memcpy_ctx_t;

static int
s_memcpy_launch (void *context, cudaStream_t stream)
{
    s_memcpy_ctx_t *self = (s_memcpy_ctx_t *) context;
    return cudaMemcpyAsync (self->dst, self->src, self->bytes, cudaMemcpyDeviceToDevice,
                            stream) != cudaSuccess;
}

static int
s_decode_launch (void *context, cudaStream_t stream)
{
    return kvt_paged_attention ((const kvt_paged_attention_args_t *) context, stream);
}

static int
s_fp8_decode_launch (void *context, cudaStream_t stream)
{
    return kvt_fp8_attention ((const kvt_fp8_attention_args_t *) context, stream);
}

//  Quantize 'blocks' blocks of 'block_bytes' bf16 bytes into e4m3 with one
//  scale per (block, kv head) plane, on the GPU
static void
s_quantize_device (const void *wide, void *fp8, float *scales, size_t blocks,
                   size_t block_bytes, int kv_heads, cudaStream_t stream)
{
    int64_t *slots = (int64_t *) malloc (blocks * sizeof (int64_t));
    int64_t *d_slots;
    for (size_t i = 0; i < blocks; i++)
        slots [i] = (int64_t) i;
    S_CHECK (cudaMalloc ((void **) &d_slots, blocks * sizeof (int64_t)));
    S_CHECK (cudaMemcpy (d_slots, slots, blocks * sizeof (int64_t), cudaMemcpyHostToDevice));
    for (size_t first = 0; first < blocks; first += 65535) {
        kvt_fp8_args_t args = {
            .dtype = KVT_KDTYPE_BF16, .src = wide, .dst = fp8, .scales = scales,
            .src_slots = d_slots + first, .dst_slots = d_slots + first,
            .src_slot_bytes = (int64_t) block_bytes, .dst_slot_bytes = (int64_t) block_bytes / 2,
            .planes = kv_heads, .plane_elems = (int) (block_bytes / 2 / kv_heads),
            .count = (int) (blocks - first < 65535? blocks - first: 65535)
        };
        if (kvt_fp8_quantize (&args, stream)) {
            fprintf (stderr, "kvt_fp8_quantize failed\n");
            exit (1);
        }
    }
    S_CHECK (cudaStreamSynchronize (stream));
    cudaFree (d_slots);
    free (slots);
}

//  NMSE between two bf16 device arrays of 'count' elements
static double
s_device_nmse (const void *a, const void *b, size_t count)
{
    uint16_t *x = (uint16_t *) malloc (count * 2), *y = (uint16_t *) malloc (count * 2);
    S_CHECK (cudaMemcpy (x, a, count * 2, cudaMemcpyDeviceToHost));
    S_CHECK (cudaMemcpy (y, b, count * 2, cudaMemcpyDeviceToHost));
    double err2 = 0, ref2 = 0;
    for (size_t i = 0; i < count; i++) {
        double u = kvt_kdtype_load (KVT_KDTYPE_BF16, x, i);
        double v = kvt_kdtype_load (KVT_KDTYPE_BF16, y, i);
        err2 += (u - v) * (u - v);
        ref2 += v * v;
    }
    free (x);
    free (y);
    return ref2 > 0? err2 / ref2: err2;
}

//  Shuffled block table: sequence s, block b gets a random distinct block.
static int32_t *
s_shuffled_table (int seqs, int blocks_per_seq, uint64_t *seed)
{
    int total = seqs * blocks_per_seq;
    int32_t *table = (int32_t *) malloc ((size_t) total * sizeof (int32_t));
    for (int i = 0; i < total; i++)
        table [i] = i;
    for (int i = total - 1; i > 0; i--) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        int j = (int) (*seed % (uint64_t) (i + 1));
        int32_t tmp = table [i]; table [i] = table [j]; table [j] = tmp;
    }
    return table;
}

//  How a decode shape's KV lies in memory
typedef enum {
    S_KV_SHUFFLED,                  //  [blocks][kv_heads][bt][dim], each sequence's blocks
                                    //  in random order (a paged cache after churn)
    S_KV_CONTIGUOUS                 //  [kv_heads][blocks][bt][dim], blocks in order: one
                                    //  stream per (sequence, head), as cuDNN's [B, H, L, D]
} s_kv_layout_t;

//  Where a shuffled shape's V lies beside its K (--kv-layout): 'separate'
//  (the default) puts K and V in two allocations of [blocks][kv_heads][bt]
//  [dim]; 'block' is the runtime's block, [K, V][kv_heads][bt][dim] (one
//  layer), so a block's V follows its K heads; 'head' puts each head's K
//  and V side by side, [kv_heads][K, V][bt][dim], so that the two 4 KiB
//  reads of a 16-token block's head are one 8 KiB run of memory. The
//  kernel reads each through its strides; the figures of the last two
//  carry the suffix _kvblock or _kvhead.
typedef enum { S_KV_SEPARATE, S_KV_BLOCK, S_KV_HEAD } s_kv_pairing_t;
static s_kv_pairing_t s_kv_pairing = S_KV_SEPARATE;
static const char *const s_kv_pairing_suffix [] = { "", "_kvblock", "_kvhead" };


typedef struct {
    int seqs, len, bt;
    s_kv_layout_t layout;
    const char *label;              //  The torch baseline's label ("16x32K")
    const char *suffix;             //  Added to our figures' names ("" for the main shapes)
    bool mixed;                     //  Sequence 0 has 'len' tokens, the others 1K-8K (a long
                                    //  context batched with chats); no torch baseline
} s_decode_shape_t;

//  The same KV (shuffled, 16-token blocks) in e4m3 with per-block, per-head
//  scales through kvt_fp8_attention, its time set beside the bf16 decode's
//  ('bf16_us'; d_out holds the bf16 output, the NMSE's reference)
static void
s_bench_decode_fp8 (kvt_bench_report_t *report, const kvt_paged_attention_args_t *args,
                    const s_decode_shape_t *shape, double bf16_us, double memcpy_tbps,
                    int reps, cudaStream_t stream)
{
    int kv_heads = args->kv_heads, dim = args->head_dim, bt = shape->bt;
    int blocks_per_seq = args->max_blocks_per_seq;
    size_t blocks = (size_t) args->seqs * blocks_per_seq;
    size_t block_bytes = (size_t) args->block_stride_bytes;
    double kv_bytes = 2.0 * args->seqs * (double) shape->len * kv_heads * dim * 2;
    void *d_k8, *d_v8, *d_out8, *d_ws8 = NULL;
    float *d_ks, *d_vs;
    size_t scale_count = blocks * kv_heads;
    size_t out_elems = (size_t) args->seqs * args->heads * dim;
    S_CHECK (cudaMalloc (&d_k8, blocks * block_bytes / 2));
    S_CHECK (cudaMalloc (&d_v8, blocks * block_bytes / 2));
    S_CHECK (cudaMalloc ((void **) &d_ks, scale_count * sizeof (float)));
    S_CHECK (cudaMalloc ((void **) &d_vs, scale_count * sizeof (float)));
    S_CHECK (cudaMalloc (&d_out8, out_elems * 2));
    s_quantize_device (args->k, d_k8, d_ks, blocks, block_bytes, kv_heads, stream);
    s_quantize_device (args->v, d_v8, d_vs, blocks, block_bytes, kv_heads, stream);
    kvt_fp8_attention_args_t fp8 = {
        .dtype = KVT_KDTYPE_BF16, .q = args->q, .k = d_k8, .v = d_v8, .k_scales = d_ks,
        .v_scales = d_vs, .block_stride_bytes = (int64_t) block_bytes / 2,
        .head_stride_bytes = bt * dim, .token_stride_bytes = dim,
        .scale_block_stride = kv_heads, .scale_head_stride = 1,
        .block_table = args->block_table, .seq_lens = args->seq_lens, .out = d_out8,
        .seqs = args->seqs, .heads = args->heads, .kv_heads = kv_heads, .head_dim = dim,
        .block_tokens = bt, .max_blocks_per_seq = blocks_per_seq,
        .max_seq_len = args->max_seq_len, .scale = args->scale, .splits = args->splits
    };
    int splits8 = kvt_fp8_attention_plan (&fp8);
    fp8.workspace_bytes = kvt_fp8_attention_workspace_bytes (&fp8, splits8);
    if (fp8.workspace_bytes)
        S_CHECK (cudaMalloc (&d_ws8, fp8.workspace_bytes));
    fp8.workspace = d_ws8;
    double us8 = s_time_us (s_fp8_decode_launch, &fp8, stream, reps);
    S_CHECK (cudaStreamSynchronize (stream));
    double nmse = s_device_nmse (d_out8, args->out, out_elems);
    double fp8_bytes = kv_bytes / 2 + 2.0 * scale_count * sizeof (float);
    char figure [64], baseline [64], note [160];
    snprintf (note, sizeof (note), "%d splits, %.1f us, %.0f MiB fp8 KV + scales, "
              "output NMSE vs bf16 decode %.2g", splits8, us8, fp8_bytes / 1048576, nmse);
    snprintf (figure, sizeof (figure), "decode_fp8_%s", shape->label);
    kvt_bench_report_note (report, figure, note);
    snprintf (figure, sizeof (figure), "decode_fp8_%s_TBps", shape->label);
    kvt_bench_report_add (report, figure, fp8_bytes / (us8 * 1e-6) / 1e12, "TB/s",
                          "memcpy_d2d_rw_TBps", memcpy_tbps);
    snprintf (figure, sizeof (figure), "decode_fp8_%s_us", shape->label);
    snprintf (baseline, sizeof (baseline), "decode_bf16_%s_us", shape->label);
    kvt_bench_report_add (report, figure, us8, "us", baseline, bf16_us);
    cudaFree (d_k8);
    cudaFree (d_v8);
    cudaFree (d_ks);
    cudaFree (d_vs);
    cudaFree (d_out8);
    cudaFree (d_ws8);
}

//  One bf16 decode version on 'args': its time (also the host's cost of
//  a call, which 32 layers a step pay 32 times), figures against memcpy
//  and torch. Leaves its output in args->out.
static double
s_bench_decode_variant (kvt_bench_report_t *report, const s_torch_file_t *torch,
                        kvt_paged_attention_args_t *args, const s_decode_shape_t *shape,
                        double tokens, double memcpy_tbps, int reps, cudaStream_t stream)
{
    int splits = kvt_paged_attention_plan (args);
    int64_t need = kvt_paged_attention_workspace_need (args);
    if (splits < 0 || need < 0) {
        fprintf (stderr, "decode variant %d: plan %d, workspace %lld\n", args->variant, splits,
                 (long long) need);
        exit (1);
    }
    args->workspace_bytes = (size_t) need;
    args->workspace = NULL;
    if (args->workspace_bytes)
        S_CHECK (cudaMalloc (&args->workspace, args->workspace_bytes));
    double us = s_time_us (s_decode_launch, args, stream, reps);
    struct timespec host_start, host_stop;
    clock_gettime (CLOCK_MONOTONIC, &host_start);
    for (int i = 0; i < 32; i++)
        s_decode_launch (args, stream);
    clock_gettime (CLOCK_MONOTONIC, &host_stop);
    double host_us = ((host_stop.tv_sec - host_start.tv_sec) * 1e9
                    + (host_stop.tv_nsec - host_start.tv_nsec)) / 1e3 / 32;
    S_CHECK (cudaStreamSynchronize (stream));
    cudaFree (args->workspace);
    args->workspace = NULL;
    double kv_bytes = 2.0 * tokens * args->kv_heads * args->head_dim * 2;
    double tbps = kv_bytes / (us * 1e-6) / 1e12;
    char figure [64], note [200], name [48];
    const char *pairing = shape->layout == S_KV_SHUFFLED? s_kv_pairing_suffix [s_kv_pairing]: "";
    if (args->variant)
        snprintf (name, sizeof (name), "%s%s%s_v%d", shape->label, shape->suffix, pairing,
                  args->variant);
    else
        snprintf (name, sizeof (name), "%s%s%s", shape->label, shape->suffix, pairing);
    snprintf (note, sizeof (note), "%d seqs x %s%d tokens, 32q/8kv hd128 bf16, bt%d %s, "
              "kernel variant %d, %d splits, %.1f us, %.0f MiB KV, host %.1f us a call",
              args->seqs, shape->mixed? "1K-8K and one of ": "", shape->len, shape->bt,
              shape->layout == S_KV_SHUFFLED? "shuffled": "contiguous per head",
              args->variant, splits, us, kv_bytes / 1048576, host_us);
    snprintf (figure, sizeof (figure), "decode_%s", name);
    kvt_bench_report_note (report, figure, note);
    snprintf (figure, sizeof (figure), "decode_%s_TBps", name);
    kvt_bench_report_add (report, figure, tbps, "TB/s", "memcpy_d2d_rw_TBps", memcpy_tbps);
    static const char *const backends [] = { "cudnn", "flash", "efficient", "best" };
    s_add_torch_baselines (report, torch, figure, tbps, "TB/s", "TBps", "sdpa_", backends, 4,
                           shape->label, kv_bytes / 1e12);
    return us;
}

//  One decode shape: every listed version on the same KV, then (for the
//  main shapes) the fp8 decode beside the first.
static void
s_bench_decode (kvt_bench_report_t *report, const s_torch_file_t *torch,
                const s_decode_shape_t *shape, double memcpy_tbps, int reps, int forced_splits,
                const int *variants, int variant_count, cudaStream_t stream, uint64_t *seed)
{
    const int heads = 32, kv_heads = 8, dim = 128;
    int seqs = shape->seqs, bt = shape->bt;
    int blocks_per_seq = (shape->len + bt - 1) / bt;
    size_t blocks = (size_t) seqs * blocks_per_seq;
    size_t block_bytes = (size_t) kv_heads * bt * dim * 2;
    void *d_k, *d_v, *d_q, *d_out;
    int32_t *d_table, *d_lens;
    int64_t head_bytes = (int64_t) bt * dim * 2;
    const s_kv_pairing_t pairing = shape->layout == S_KV_SHUFFLED? s_kv_pairing: S_KV_SEPARATE;
    int64_t block_stride = shape->layout == S_KV_SHUFFLED? (int64_t) block_bytes: head_bytes;
    int64_t head_stride = shape->layout == S_KV_SHUFFLED? head_bytes
                                                        : head_bytes * (int64_t) blocks;
    if (pairing == S_KV_SEPARATE) {
        S_CHECK (cudaMalloc (&d_k, blocks * block_bytes));
        S_CHECK (cudaMalloc (&d_v, blocks * block_bytes));
        kvt_bench_fill_device (d_k, blocks * block_bytes, seed);
        kvt_bench_fill_device (d_v, blocks * block_bytes, seed);
    }
    else {
        S_CHECK (cudaMalloc (&d_k, 2 * blocks * block_bytes));
        kvt_bench_fill_device (d_k, 2 * blocks * block_bytes, seed);
        block_stride = 2 * (int64_t) block_bytes;
        if (pairing == S_KV_HEAD)
            head_stride = 2 * head_bytes;
        d_v = (char *) d_k + (pairing == S_KV_HEAD? head_bytes: (int64_t) block_bytes);
    }
    S_CHECK (cudaMalloc (&d_q, (size_t) seqs * heads * dim * 2));
    S_CHECK (cudaMalloc (&d_out, (size_t) seqs * heads * dim * 2));
    S_CHECK (cudaMalloc ((void **) &d_table, blocks * 4));
    S_CHECK (cudaMalloc ((void **) &d_lens, seqs * 4));
    kvt_bench_fill_device (d_q, (size_t) seqs * heads * dim * 2, seed);
    int32_t *table = s_shuffled_table (seqs, blocks_per_seq, seed);
    if (shape->layout == S_KV_CONTIGUOUS)
        for (size_t i = 0; i < blocks; i++)
            table [i] = (int32_t) i;
    S_CHECK (cudaMemcpy (d_table, table, blocks * 4, cudaMemcpyHostToDevice));
    free (table);
    int *lens = (int *) malloc (seqs * sizeof (int));
    double tokens = 0;
    for (int s = 0; s < seqs; s++) {
        lens [s] = shape->mixed && s > 0? 1024 + (int) (kvt_splitmix64 (seed) % 7169)
                                        : shape->len;
        tokens += lens [s];
    }
    S_CHECK (cudaMemcpy (d_lens, lens, seqs * 4, cudaMemcpyHostToDevice));
    free (lens);
    kvt_paged_attention_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .q = d_q, .k = d_k, .v = d_v,
        .block_stride_bytes = block_stride, .head_stride_bytes = head_stride,
        .token_stride_bytes = dim * 2, .block_table = d_table, .seq_lens = d_lens,
        .out = d_out, .seqs = seqs, .heads = heads, .kv_heads = kv_heads, .head_dim = dim,
        .block_tokens = bt, .max_blocks_per_seq = blocks_per_seq, .max_seq_len = shape->len,
        .scale = 1.0f / sqrtf ((float) dim), .splits = forced_splits,
        .total_tokens = (int64_t) tokens
    };
    //  The first version last, so that d_out holds its output for the fp8 NMSE
    double first_us = 0;
    for (int v = variant_count - 1; v >= 0; v--) {
        args.variant = variants [v];
        first_us = s_bench_decode_variant (report, torch, &args, shape, tokens, memcpy_tbps,
                                           reps, stream);
    }
    //  (fp8 reads its own copy in the separate layout's strides)
    if (shape->layout == S_KV_SHUFFLED && *shape->suffix == 0 && !shape->mixed
    &&  pairing == S_KV_SEPARATE)
        s_bench_decode_fp8 (report, &args, shape, first_us, memcpy_tbps, reps, stream);
    cudaFree (d_k);
    if (pairing == S_KV_SEPARATE)
        cudaFree (d_v);
    cudaFree (d_q);
    cudaFree (d_out);
    cudaFree (d_table);
    cudaFree (d_lens);
}

static int
s_prefill_launch (void *context, cudaStream_t stream)
{
    return kvt_paged_prefill ((const kvt_paged_prefill_args_t *) context, stream);
}

//  Prefill of whole prompts (no cached prefix) and of a half-cached prompt
//  over pages of 'bt' tokens, compared in TFLOP/s with torch flash and
//  cuDNN on the whole causal prompt in contiguous K/V ('label' names it).
static void
s_bench_prefill (kvt_bench_report_t *report, const s_torch_file_t *torch, int seqs, int len,
                 int cached, int bt, const char *label, int variant, int reps,
                 cudaStream_t stream, uint64_t *seed)
{
    const int heads = 32, kv_heads = 8, dim = 128;
    int q_len = len - cached;
    int blocks_per_seq = (len + bt - 1) / bt;
    size_t blocks = (size_t) seqs * blocks_per_seq;
    size_t block_bytes = (size_t) kv_heads * bt * dim * 2;
    size_t q_bytes = (size_t) seqs * q_len * heads * dim * 2;
    void *d_k, *d_v, *d_q, *d_out;
    int32_t *d_table, *d_lens, *d_qstart;
    S_CHECK (cudaMalloc (&d_k, blocks * block_bytes));
    S_CHECK (cudaMalloc (&d_v, blocks * block_bytes));
    S_CHECK (cudaMalloc (&d_q, q_bytes));
    S_CHECK (cudaMalloc (&d_out, q_bytes));
    S_CHECK (cudaMalloc ((void **) &d_table, blocks * 4));
    S_CHECK (cudaMalloc ((void **) &d_lens, seqs * 4));
    S_CHECK (cudaMalloc ((void **) &d_qstart, (seqs + 1) * 4));
    kvt_bench_fill_device (d_k, blocks * block_bytes, seed);
    kvt_bench_fill_device (d_v, blocks * block_bytes, seed);
    kvt_bench_fill_device (d_q, q_bytes, seed);
    int32_t *table = s_shuffled_table (seqs, blocks_per_seq, seed);
    S_CHECK (cudaMemcpy (d_table, table, blocks * 4, cudaMemcpyHostToDevice));
    free (table);
    int32_t *lens = (int32_t *) malloc ((seqs + 1) * sizeof (int32_t));
    for (int s = 0; s < seqs; s++)
        lens [s] = len;
    S_CHECK (cudaMemcpy (d_lens, lens, seqs * 4, cudaMemcpyHostToDevice));
    for (int s = 0; s <= seqs; s++)
        lens [s] = s * q_len;
    S_CHECK (cudaMemcpy (d_qstart, lens, (seqs + 1) * 4, cudaMemcpyHostToDevice));
    free (lens);
    kvt_paged_prefill_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .q = d_q, .q_start = d_qstart, .k = d_k, .v = d_v,
        .block_stride_bytes = (int64_t) block_bytes, .head_stride_bytes = bt * dim * 2,
        .token_stride_bytes = dim * 2, .block_table = d_table, .seq_lens = d_lens,
        .out = d_out, .seqs = seqs, .heads = heads, .kv_heads = kv_heads, .head_dim = dim,
        .block_tokens = bt, .max_blocks_per_seq = blocks_per_seq, .max_q_len = q_len,
        .scale = 1.0f / sqrtf ((float) dim), .variant = variant
    };
    double us = s_time_us (s_prefill_launch, &args, stream, reps);
    //  Causal FLOPs: each new token at position p attends to p + 1 keys
    double pairs = 0;
    for (int i = 0; i < q_len; i++)
        pairs += cached + i + 1;
    double flops = 4.0 * seqs * heads * dim * pairs;
    double tflops = flops / (us * 1e-6) / 1e12;
    char figure [64], note [128], name [48], pages [16] = "";
    if (bt != 16)
        snprintf (pages, sizeof (pages), "_bt%d", bt);
    if (variant)
        snprintf (name, sizeof (name), "%s%s_v%d", label, pages, variant);
    else
        snprintf (name, sizeof (name), "%s%s", label, pages);
    snprintf (figure, sizeof (figure), "prefill_%s", name);
    snprintf (note, sizeof (note), "%d seqs x %d tokens (%d cached), 32q/8kv hd128 bf16, "
              "bt%d shuffled, kernel variant %d, %.1f us", seqs, len, cached, bt, variant, us);
    kvt_bench_report_note (report, figure, note);
    snprintf (figure, sizeof (figure), "prefill_%s_TFLOPs", name);
    //  Beside PyTorch's flash backend (the floor) and cuDNN's (its aim)
    static const char *const backends [] = { "flash", "cudnn" };
    if (!s_add_torch_baselines (report, torch, figure, tflops, "TFLOP/s", "TFLOPs", "",
                                backends, 2, label, flops / 1e12))
        kvt_bench_report_add (report, figure, tflops, "TFLOP/s", "none (no --torch)", 0);
    cudaFree (d_k);
    cudaFree (d_v);
    cudaFree (d_q);
    cudaFree (d_out);
    cudaFree (d_table);
    cudaFree (d_lens);
    cudaFree (d_qstart);
}

//  --------------------------------------------------------------------------
//  Kernel versions from a comma list such as "0,2" into 'variants' (up to
//  'limit' of them, each below 'limit'); returns the count, at least 1 (0)
static int
s_parse_variants (char *list, int *variants, int limit)
{
    int count = 0;
    for (char *item = strtok (list, ","); item && count < limit; item = strtok (NULL, ","))
        if (atoi (item) >= 0 && atoi (item) < limit)
            variants [count++] = atoi (item);
    if (count == 0)
        variants [count++] = 0;
    return count;
}

//  The three shapes, then 16x32K with the same KV laid out as
//  cuDNN reads it and with 64-token blocks: what paging costs; then a 128K
//  context batched with 63 chats of 1K-8K tokens
static const s_decode_shape_t s_shapes [] = {
    { 64, 4096, 16, S_KV_SHUFFLED, "64x4K", "", false },
    { 16, 32768, 16, S_KV_SHUFFLED, "16x32K", "", false },
    { 1, 131072, 16, S_KV_SHUFFLED, "1x128K", "", false },
    { 16, 32768, 16, S_KV_CONTIGUOUS, "16x32K", "_contiguous", false },
    { 16, 32768, 64, S_KV_SHUFFLED, "16x32K", "_bt64", false },
    { 64, 131072, 16, S_KV_SHUFFLED, "mixed", "", true },
};
#define S_SHAPE_COUNT (sizeof (s_shapes) / sizeof (s_shapes [0]))

//  A shape's name in the figures and in --shapes ("16x32K_bt64")
static const char *
s_shape_name (size_t index)
{
    static char names [S_SHAPE_COUNT][48];
    if (!*names [index])
        snprintf (names [index], sizeof (names [index]), "%s%s", s_shapes [index].label,
                  s_shapes [index].suffix);
    return names [index];
}

//  Up to this many "<seqs>x<tokens>[K]" shapes from --shapes
#define S_EXTRA_SHAPES 16

//  A --shapes item that names no shape of the table: "<seqs>x<tokens>" or
//  "<seqs>x<tokens>K" (66x4K), equal sequences in shuffled 16-token
//  blocks, at most the mixed batch's 8M tokens (its KV is allocated whole).
//  'label' keeps the name. False if the item is not of that form.
static bool
s_parse_shape (const char *item, size_t length, s_decode_shape_t *shape, char *label,
               size_t label_size)
{
    if (length == 0 || length >= label_size)
        return false;
    memcpy (label, item, length);
    label [length] = 0;
    int seqs, tokens, used = 0;
    char k = 0;
    int fields = sscanf (label, "%dx%d%n%c", &seqs, &tokens, &used, &k);
    if (fields < 2 || (fields == 3 && (k != 'K' || used + 1 != (int) length))
    ||  (fields == 2 && used != (int) length))
        return false;
    int64_t len = (int64_t) tokens * (k == 'K'? 1024: 1);
    if (seqs < 1 || len < 1 || (int64_t) seqs * len > 64 * 131072)
        return false;
    *shape = (s_decode_shape_t) { seqs, (int) len, 16, S_KV_SHUFFLED, label, "", false };
    return true;
}

//  True if 'name' is an item of the comma list 'list' (NULL: every name)
static bool
s_listed (const char *list, const char *name)
{
    if (!list)
        return true;
    size_t length = strlen (name);
    for (const char *at = list; *at; ) {
        size_t item = strcspn (at, ",");
        if (item == length && strncmp (at, name, length) == 0)
            return true;
        at += item + (at [item] == ',');
    }
    return false;
}

//  kvtier bench kernels [--json] [--torch FILE] [--reps N] [--quick] ...

int
kvt_bench_kernels_main (int argc, char **argv)
{
    bool json = false, quick = false;
    const char *torch_path = NULL, *shape_list = NULL;
    int reps = 20, splits = 0;
    int variants [KVT_PAGED_PREFILL_VARIANTS] = { 0 }, variant_count = 1;
    int decode_variants [KVT_PAGED_ATTENTION_VARIANTS] = { 0 }, decode_variant_count = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv [i], "--json") == 0)
            json = true;
        else
        if (strcmp (argv [i], "--quick") == 0)
            quick = true;
        else
        if (strcmp (argv [i], "--torch") == 0 && i + 1 < argc)
            torch_path = argv [++i];
        else
        if (strcmp (argv [i], "--reps") == 0 && i + 1 < argc)
            reps = atoi (argv [++i]) > 0? atoi (argv [i]): 20;
        else
        if (strcmp (argv [i], "--splits") == 0 && i + 1 < argc)
            splits = atoi (argv [++i]) > 0? atoi (argv [i]): 0;
        else
        if (strcmp (argv [i], "--prefill-variants") == 0 && i + 1 < argc)
            variant_count = s_parse_variants (argv [++i], variants, KVT_PAGED_PREFILL_VARIANTS);
        else
        if (strcmp (argv [i], "--decode-variants") == 0 && i + 1 < argc)
            decode_variant_count = s_parse_variants (argv [++i], decode_variants,
                                                     KVT_PAGED_ATTENTION_VARIANTS);
        else
        if (strcmp (argv [i], "--shapes") == 0 && i + 1 < argc)
            shape_list = argv [++i];
        else
        if (strcmp (argv [i], "--kv-layout") == 0 && i + 1 < argc
        &&  (strcmp (argv [i + 1], "separate") == 0 || strcmp (argv [i + 1], "block") == 0
             || strcmp (argv [i + 1], "head") == 0)) {
            i++;
            s_kv_pairing = strcmp (argv [i], "block") == 0? S_KV_BLOCK
                         : strcmp (argv [i], "head") == 0? S_KV_HEAD: S_KV_SEPARATE;
        }
        else {
            fprintf (stderr, "usage: kvtier bench kernels [--json] [--torch FILE] "
                     "[--reps N] [--quick] [--splits N] [--prefill-variants 0,1,..] "
                     "[--decode-variants 0,1,..] [--shapes 64x4K,16x32K,..] "
                     "[--kv-layout separate|block|head]\n");
            return 2;
        }
    }
    //  Every name in --shapes must be a shape: a typo would time nothing
    s_decode_shape_t extra [S_EXTRA_SHAPES];
    char extra_labels [S_EXTRA_SHAPES][24];
    int extra_count = 0;
    for (const char *at = shape_list; at && *at; ) {
        size_t item = strcspn (at, ",");
        bool known = false;
        for (size_t i = 0; i < S_SHAPE_COUNT && !known; i++)
            known = strlen (s_shape_name (i)) == item && strncmp (s_shape_name (i), at, item) == 0;
        if (!known && extra_count < S_EXTRA_SHAPES
        &&  s_parse_shape (at, item, &extra [extra_count], extra_labels [extra_count],
                           sizeof (extra_labels [0]))) {
            extra [extra_count].label = extra_labels [extra_count];
            extra_count++;
            known = true;
        }
        if (!known) {
            fprintf (stderr, "kvtier bench kernels: no decode shape '%.*s' (64x4K, 16x32K, "
                     "1x128K, 16x32K_contiguous, 16x32K_bt64, mixed, or <seqs>x<tokens>[K] "
                     "up to 8M tokens, %d of those)\n", (int) item, at, S_EXTRA_SHAPES);
            return 2;
        }
        at += item + (at [item] == ',');
    }
    int device_count = 0;
    if (cudaGetDeviceCount (&device_count) != cudaSuccess || device_count == 0) {
        fprintf (stderr, "kvtier bench kernels: no GPU\n");
        return 2;
    }
    s_torch_file_t torch;
    s_torch_load (&torch, torch_path);
    kvt_bench_report_t *report = kvt_bench_report_new ("kernels", json);
    struct cudaDeviceProp prop;
    S_CHECK (cudaGetDeviceProperties (&prop, 0));
    char text [128];
    snprintf (text, sizeof (text), "%.64s, %d SMs, %d MiB L2", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
    kvt_bench_report_note (report, "device", text);
    kvt_bench_report_note (report, "torch baselines", torch.count? torch_path: "none");
    cudaStream_t stream;
    S_CHECK (cudaStreamCreateWithFlags (&stream, cudaStreamNonBlocking));
    uint64_t seed = 0xbe4c4;

    //  Roofline baseline: 1 GiB device-to-device copy, read + write counted
    s_memcpy_ctx_t copy = { .bytes = 1u << 30 };
    S_CHECK (cudaMalloc (&copy.dst, copy.bytes));
    S_CHECK (cudaMalloc ((void **) &copy.src, copy.bytes));
    kvt_bench_fill_device ((void *) copy.src, copy.bytes, &seed);
    double copy_us = s_time_us (s_memcpy_launch, &copy, stream, reps);
    double memcpy_tbps = 2.0 * copy.bytes / (copy_us * 1e-6) / 1e12;
    cudaFree (copy.dst);
    cudaFree ((void *) copy.src);
    snprintf (text, sizeof (text), "%.3f TB/s (1 GiB, %.1f us)", memcpy_tbps, copy_us);
    kvt_bench_report_note (report, "memcpy_d2d_rw", text);

    for (size_t i = 0; i < S_SHAPE_COUNT; i++)
        if (s_listed (shape_list, s_shape_name (i)))
            s_bench_decode (report, &torch, &s_shapes [i], memcpy_tbps, reps, splits,
                            decode_variants, decode_variant_count, stream, &seed);
    for (int i = 0; i < extra_count; i++)
        s_bench_decode (report, &torch, &extra [i], memcpy_tbps, reps, splits, decode_variants,
                        decode_variant_count, stream, &seed);
    for (int v = 0; v < (quick? 0: variant_count); v++) {
        s_bench_prefill (report, &torch, 1, 8192, 0, 16, "1x8K", variants [v], reps / 4 + 3,
                         stream, &seed);
        s_bench_prefill (report, &torch, 4, 4096, 0, 16, "4x4K", variants [v], reps / 4 + 3,
                         stream, &seed);
        s_bench_prefill (report, &torch, 1, 8192, 4096, 16, "1x8K_half_cached", variants [v],
                         reps / 4 + 3, stream, &seed);
        //  The same prompt over 64-token pages: a fourth of the copies a
        //  tile, so what the pages cost the kernel shows beside the above
        s_bench_prefill (report, &torch, 1, 8192, 0, 64, "1x8K", variants [v], reps / 4 + 3,
                         stream, &seed);
    }
    cudaStreamDestroy (stream);
    kvt_bench_report_finish (&report);
    return 0;
}
#endif
