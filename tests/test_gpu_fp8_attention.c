/*  =========================================================================
    test_gpu_fp8_attention - paged decode attention over an e4m3 KV cache,
    GPU against CPU twin, and against bf16 attention of the unquantized KV

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Fresh random inputs per case: bf16 or fp16 K/V whose blocks and heads
    have amplitudes from 1/8 to 2 (so scales differ between the tiles of
    one sequence) and now and then an all-zero plane (scale 1), quantized
    by kvt_fp8_quantize_ref into e4m3 with per-block, per-head scales.
    Shape matrix: ragged lengths (and a length of 0), partly filled last
    blocks, shuffled block tables with garbage in unused blocks, GQA ratios
    1, 4, 5, 8, 12 and 20 (two head chunks), head_dim 64/128, block sizes
    16/32/64, forced and automatic split-KV, the vLLM layout and the
    runtime's multi-layer block layout. The output is poisoned with NaN
    before each launch. Each case checks the kernel against
    kvt_fp8_attention_ref (same function: tight bounds), then measures the
    error of the fp8 result against kvt_paged_attention_ref on the
    unquantized bf16/fp16 KV and bounds it. Exit 77 without a GPU or in a
    CPU-only build.
@end
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_fp8.cuh"
#include "kvt_fp8_attention.cuh"
#include "kvt_paged_attention.cuh"

#ifndef KVT_KERNELS_GPU
int
main (void)
{
    printf ("test_gpu_fp8_attention: CPU-only build, skipped\n");
    return 77;
}
#else

#define T_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

//  Bounds of the fp8 result against attention on the unquantized KV. The
//  twin on these very cases (CPU, 2026-11-27) measured NMSE up to 3.8e-3
//  and max |err| up to 0.16 (of |v| <= 2) with q_amp 4 (peaky softmax:
//  K's 2^-4 relative rounding moves the scores), ~7e-4 / 0.01 with q_amp 1
#define T_FP8_NMSE_MAX  1e-2
#define T_FP8_ABS_MAX   0.15        //  Times the largest |v| amplitude (2)

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of q, out and the unquantized KV
    int seqs;                       //  Sequences
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads
    int head_dim;                   //  64 or 128
    int block_tokens;               //  Tokens per block
    int max_len;                    //  Longest sequence
    int splits;                     //  0 = automatic
    bool runtime_layout;            //  [layer][K,V][kv_head][token][dim] blocks
    float q_amp;                    //  Query amplitude (peakier softmax when large)
} t_case_t;

static uint32_t
t_rand (uint64_t *seed)
{
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    return (uint32_t) ((*seed * 0x2545f4914f6cdd1dull) >> 32);
}

//  Random planes with amplitudes 2^-3 .. 2^1; about one plane in 40 is zero
static void
t_fill_planes (kvt_kdtype_t dtype, void *base, size_t planes, size_t plane_elems,
               uint64_t *seed)
{
    kvt_kdtype_fill_random (dtype, base, planes * plane_elems, 1.0f, seed);
    for (size_t p = 0; p < planes; p++) {
        uint32_t r = t_rand (seed);
        float amplitude = r % 40 == 0? 0.0f: ldexpf (1.0f, (int) (r % 5) - 3);
        for (size_t e = 0; e < plane_elems; e++) {
            size_t index = p * plane_elems + e;
            kvt_kdtype_store (dtype, base, index,
                              kvt_kdtype_load (dtype, base, index) * amplitude);
        }
    }
}

//  Quantize a slab of 'blocks' blocks of 'planes' planes (slots 0..blocks-1)
static int
t_quantize (kvt_kdtype_t dtype, const void *wide, uint8_t *fp8, float *scales, int blocks,
            int planes, int plane_elems)
{
    int64_t *slots = (int64_t *) malloc (blocks * sizeof (int64_t));
    for (int i = 0; i < blocks; i++)
        slots [i] = i;
    kvt_fp8_args_t args = {
        .dtype = dtype, .src = wide, .dst = fp8, .scales = scales, .src_slots = slots,
        .dst_slots = slots, .src_slot_bytes = (int64_t) planes * plane_elems * 2,
        .dst_slot_bytes = (int64_t) planes * plane_elems, .planes = planes,
        .plane_elems = plane_elems, .count = blocks
    };
    int rc = kvt_fp8_quantize_ref (&args);
    free (slots);
    return rc;
}

//  NMSE and max |a - b| of two dtype arrays
static void
t_error (kvt_kdtype_t dtype, const void *a, const void *b, size_t count, double *nmse,
         double *max_abs)
{
    double err2 = 0, ref2 = 0, worst = 0;
    for (size_t i = 0; i < count; i++) {
        double x = kvt_kdtype_load (dtype, a, i), y = kvt_kdtype_load (dtype, b, i);
        double err = isfinite (x)? fabs (x - y): INFINITY;
        err2 += err * err;
        ref2 += y * y;
        worst = err > worst? err: worst;
    }
    *nmse = ref2 > 0? err2 / ref2: err2;
    *max_abs = worst;
}

static int
t_run_case (const t_case_t *c, uint64_t *seed, bool verbose, double *worst_nmse)
{
    const int layers = 3, layer = 1;                //  Runtime layout: read layer 1 of 3
    int dim = c->head_dim, bt = c->block_tokens;
    int *lens = (int *) calloc (c->seqs, sizeof (int));
    int total_blocks = 0, max_blocks = (c->max_len + bt - 1) / bt;
    if (max_blocks == 0)
        max_blocks = 1;
    for (int s = 0; s < c->seqs; s++) {
        lens [s] = s == 0? c->max_len: (int) (t_rand (seed) % (c->max_len + 1));
        if (s == 2)
            lens [s] = 0;                           //  An empty sequence
        total_blocks += (lens [s] + bt - 1) / bt;
    }
    total_blocks += 7;                              //  Unused blocks full of garbage
    int *perm = (int *) malloc (total_blocks * sizeof (int));
    for (int i = 0; i < total_blocks; i++)
        perm [i] = i;
    for (int i = total_blocks - 1; i > 0; i--) {
        int j = (int) (t_rand (seed) % (i + 1));
        int tmp = perm [i]; perm [i] = perm [j]; perm [j] = tmp;
    }
    int32_t *table = (int32_t *) malloc ((size_t) c->seqs * max_blocks * sizeof (int32_t));
    int next = 0;
    for (int s = 0; s < c->seqs; s++)
        for (int b = 0; b < max_blocks; b++)
            table [s * max_blocks + b] = b < (lens [s] + bt - 1) / bt? perm [next++]: -1;

    //  Unquantized slabs, then their fp8 copies and scales
    int head_elems = bt * dim;
    int planes = c->runtime_layout? layers * 2 * c->kv_heads: c->kv_heads;
    size_t block_elems = (size_t) planes * head_elems;
    size_t kv_elems = block_elems * total_blocks;
    size_t q_elems = (size_t) c->seqs * c->heads * dim;
    size_t scale_count = (size_t) planes * total_blocks;
    void *h_k = malloc (kv_elems * 2);
    void *h_v = c->runtime_layout? h_k: malloc (kv_elems * 2);
    uint8_t *h_k8 = (uint8_t *) malloc (kv_elems);
    uint8_t *h_v8 = c->runtime_layout? h_k8: (uint8_t *) malloc (kv_elems);
    float *h_ks = (float *) malloc (scale_count * sizeof (float));
    float *h_vs = c->runtime_layout? h_ks: (float *) malloc (scale_count * sizeof (float));
    void *h_q = malloc (q_elems * 2);
    void *h_twin = malloc (q_elems * 2);
    void *h_wide = malloc (q_elems * 2);
    void *h_out = malloc (q_elems * 2);
    t_fill_planes (c->dtype, h_k, (size_t) planes * total_blocks, head_elems, seed);
    if (!c->runtime_layout)
        t_fill_planes (c->dtype, h_v, (size_t) planes * total_blocks, head_elems, seed);
    kvt_kdtype_fill_random (c->dtype, h_q, q_elems, c->q_amp, seed);
    int rc = t_quantize (c->dtype, h_k, h_k8, h_ks, total_blocks, planes, head_elems);
    if (!rc && !c->runtime_layout)
        rc = t_quantize (c->dtype, h_v, h_v8, h_vs, total_blocks, planes, head_elems);
    if (rc) {
        fprintf (stderr, "quantize failed: %d\n", rc);
        return -1;
    }
    size_t k_plane = 0, v_plane = 0;                //  First plane of layer's K and V
    if (c->runtime_layout) {
        k_plane = (size_t) (layer * 2 + 0) * c->kv_heads;
        v_plane = (size_t) (layer * 2 + 1) * c->kv_heads;
    }
    kvt_fp8_attention_args_t args = {
        .dtype = c->dtype, .q = h_q, .k = h_k8 + k_plane * head_elems,
        .v = h_v8 + v_plane * head_elems, .k_scales = h_ks + k_plane,
        .v_scales = h_vs + v_plane, .block_stride_bytes = (int64_t) block_elems,
        .head_stride_bytes = head_elems, .token_stride_bytes = dim,
        .scale_block_stride = planes, .scale_head_stride = 1,
        .block_table = table, .seq_lens = lens, .out = h_twin,
        .seqs = c->seqs, .heads = c->heads, .kv_heads = c->kv_heads, .head_dim = dim,
        .block_tokens = bt, .max_blocks_per_seq = max_blocks, .max_seq_len = c->max_len,
        .scale = 1.0f / sqrtf ((float) dim), .splits = c->splits
    };
    kvt_paged_attention_args_t wide = {
        .dtype = c->dtype, .q = h_q, .k = (char *) h_k + k_plane * head_elems * 2,
        .v = (char *) h_v + v_plane * head_elems * 2,
        .block_stride_bytes = (int64_t) block_elems * 2, .head_stride_bytes = head_elems * 2,
        .token_stride_bytes = dim * 2, .block_table = table, .seq_lens = lens,
        .out = h_wide, .seqs = c->seqs, .heads = c->heads, .kv_heads = c->kv_heads,
        .head_dim = dim, .block_tokens = bt, .max_blocks_per_seq = max_blocks,
        .max_seq_len = c->max_len, .scale = args.scale
    };
    if (kvt_fp8_attention_ref (&args) || kvt_paged_attention_ref (&wide)) {
        fprintf (stderr, "reference failed\n");
        return -1;
    }
    //  Device copies
    void *d_k8, *d_v8, *d_q, *d_out, *d_ws = NULL;
    float *d_ks, *d_vs;
    int32_t *d_table, *d_lens;
    T_CHECK (cudaMalloc (&d_k8, kv_elems));
    T_CHECK (cudaMalloc ((void **) &d_ks, scale_count * sizeof (float)));
    d_v8 = d_k8;
    d_vs = d_ks;
    if (!c->runtime_layout) {
        T_CHECK (cudaMalloc (&d_v8, kv_elems));
        T_CHECK (cudaMalloc ((void **) &d_vs, scale_count * sizeof (float)));
        T_CHECK (cudaMemcpy (d_v8, h_v8, kv_elems, cudaMemcpyHostToDevice));
        T_CHECK (cudaMemcpy (d_vs, h_vs, scale_count * sizeof (float), cudaMemcpyHostToDevice));
    }
    T_CHECK (cudaMemcpy (d_k8, h_k8, kv_elems, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_ks, h_ks, scale_count * sizeof (float), cudaMemcpyHostToDevice));
    T_CHECK (cudaMalloc (&d_q, q_elems * 2));
    T_CHECK (cudaMalloc (&d_out, q_elems * 2));
    T_CHECK (cudaMalloc ((void **) &d_table, (size_t) c->seqs * max_blocks * 4));
    T_CHECK (cudaMalloc ((void **) &d_lens, c->seqs * 4));
    T_CHECK (cudaMemcpy (d_q, h_q, q_elems * 2, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_table, table, (size_t) c->seqs * max_blocks * 4,
                         cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_lens, lens, c->seqs * 4, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemset (d_out, 0xff, q_elems * 2));           //  NaN poison
    args.q = d_q;
    args.k = (uint8_t *) d_k8 + k_plane * head_elems;
    args.v = (uint8_t *) d_v8 + v_plane * head_elems;
    args.k_scales = d_ks + k_plane;
    args.v_scales = d_vs + v_plane;
    args.block_table = d_table;
    args.seq_lens = d_lens;
    args.out = d_out;
    int splits = kvt_fp8_attention_plan (&args);
    args.workspace_bytes = kvt_fp8_attention_workspace_bytes (&args, splits);
    if (args.workspace_bytes)
        T_CHECK (cudaMalloc (&d_ws, args.workspace_bytes));
    args.workspace = d_ws;
    rc = kvt_fp8_attention (&args, 0);
    T_CHECK (cudaDeviceSynchronize ());
    if (rc) {
        fprintf (stderr, "kvt_fp8_attention: %d\n", rc);
        return -1;
    }
    T_CHECK (cudaMemcpy (h_out, d_out, q_elems * 2, cudaMemcpyDeviceToHost));
    char what [160];
    snprintf (what, sizeof (what), "fp8 %s seqs=%d heads=%d/%d hd=%d bt=%d len<=%d splits=%d%s "
              "q_amp=%g", c->dtype == KVT_KDTYPE_BF16? "bf16": "fp16", c->seqs, c->heads,
              c->kv_heads, dim, bt, c->max_len, splits, c->runtime_layout? " runtime": " vllm",
              c->q_amp);
    bool bf16 = c->dtype == KVT_KDTYPE_BF16;
    //  Against the twin: the GPU rounds P (times the V scale ratio) to fp16
    //  and bf16 queries to fp16, then the output's own rounding; |v| <= 2
    rc = kvt_kdtype_compare (what, c->dtype, h_out, h_twin, q_elems, bf16? 6e-3: 1e-3,
                             bf16? 1.0 / 64: 1.0 / 512, bf16? 1e-4: 1e-5, verbose);
    //  Against attention on the unquantized KV: the quantization error
    double nmse, max_abs;
    t_error (c->dtype, h_out, h_wide, q_elems, &nmse, &max_abs);
    if (nmse > *worst_nmse)
        *worst_nmse = nmse;
    if (verbose || nmse > T_FP8_NMSE_MAX || max_abs > T_FP8_ABS_MAX * 2)
        printf ("  %s: vs unquantized NMSE %.3g, max |err| %.3g\n", what, nmse, max_abs);
    if (nmse > T_FP8_NMSE_MAX || max_abs > T_FP8_ABS_MAX * 2)
        rc = -1;
    cudaFree (d_k8);
    cudaFree (d_ks);
    if (!c->runtime_layout) {
        cudaFree (d_v8);
        cudaFree (d_vs);
        free (h_v);
        free (h_v8);
        free (h_vs);
    }
    cudaFree (d_q);
    cudaFree (d_out);
    cudaFree (d_table);
    cudaFree (d_lens);
    cudaFree (d_ws);
    free (h_k);
    free (h_k8);
    free (h_ks);
    free (h_q);
    free (h_twin);
    free (h_wide);
    free (h_out);
    free (table);
    free (perm);
    free (lens);
    return rc;
}

//  Shapes the launcher must refuse with -EINVAL, never crash on
static int
t_check_refusals (void)
{
    static int32_t table [4];
    static int32_t lens [1] = { 10 };
    static float scales [16];
    static uint16_t data [4096] __attribute__ ((aligned (16)));
    kvt_fp8_attention_args_t good = {
        .dtype = KVT_KDTYPE_BF16, .q = data, .k = data, .v = data, .k_scales = scales,
        .v_scales = scales, .block_stride_bytes = 4096, .head_stride_bytes = 2048,
        .token_stride_bytes = 128, .scale_block_stride = 2, .scale_head_stride = 1,
        .block_table = table, .seq_lens = lens, .out = data, .seqs = 1, .heads = 4,
        .kv_heads = 2, .head_dim = 128, .block_tokens = 16, .max_blocks_per_seq = 4,
        .max_seq_len = 64, .scale = 1, .splits = 2
    };
    int failures = 0;
    kvt_fp8_attention_args_t bad = good;
    bad.head_dim = 96;
    failures += kvt_fp8_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.block_tokens = 8;                           //  Under one 16-token tile
    failures += kvt_fp8_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.heads = 5;
    failures += kvt_fp8_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.v_scales = NULL;
    failures += kvt_fp8_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.max_seq_len = 65;                           //  More than the table holds
    failures += kvt_fp8_attention (&bad, 0) != -EINVAL;
    bad = good;                                     //  Split without a workspace
    bad.max_seq_len = 1024;
    bad.max_blocks_per_seq = 64;
    failures += kvt_fp8_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.token_stride_bytes = 100;
    failures += kvt_fp8_attention (&bad, 0) != -EINVAL;
    if (failures)
        fprintf (stderr, "refusals: %d shapes were not refused\n", failures);
    return failures? -1: 0;
}

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    int device_count = 0;
    if (cudaGetDeviceCount (&device_count) != cudaSuccess || device_count == 0) {
        printf ("test_gpu_fp8_attention: no GPU, skipped\n");
        return 77;
    }
    uint64_t seed = 0x5eed0f08;
    int failures = t_check_refusals () != 0;
    static const int groups [][2] = { { 8, 8 }, { 32, 8 }, { 10, 2 }, { 32, 4 }, { 24, 2 },
                                      { 40, 2 } };
    static const int block_sizes [] = { 16, 32, 64 };
    static const int lens [] = { 1, 17, 100, 700, 2500, 1200 };
    static const int splits [] = { 0, 1, 3, 7 };
    bool quick = getenv ("KVT_TEST_QUICK") != NULL;    //  Under compute-sanitizer
    int cases = 0;
    double worst_nmse = 0;
    for (int i = 0; i < (quick? 16: 40); i++) {
        t_case_t c = {
            .dtype = i % 2? KVT_KDTYPE_FP16: KVT_KDTYPE_BF16,
            .seqs = 1 + (int) (t_rand (&seed) % 6),
            .heads = groups [i % 6][0], .kv_heads = groups [i % 6][1],
            .head_dim = (i / 2) % 2? 64: 128,
            .block_tokens = block_sizes [i % 3],
            .max_len = lens [(i / 3) % 6],
            .splits = splits [(i / 4) % 4],
            .runtime_layout = (i / 3) % 2,
            .q_amp = (i / 5) % 2? 4.0f: 1.0f
        };
        cases++;
        failures += t_run_case (&c, &seed, verbose, &worst_nmse) != 0;
    }
    t_case_t long_cases [] = {
        { KVT_KDTYPE_BF16, 1, 32, 8, 128, 16, 40000, 0, true, 2.0f },
        { KVT_KDTYPE_FP16, 2, 16, 2, 64, 64, 20000, 0, false, 4.0f },
        { KVT_KDTYPE_BF16, 3, 32, 8, 128, 32, 9000, 0, false, 1.0f },
    };
    for (size_t i = 0; i < (quick? 1: sizeof (long_cases) / sizeof (long_cases [0])); i++) {
        cases++;
        failures += t_run_case (&long_cases [i], &seed, verbose, &worst_nmse) != 0;
    }
    printf ("test_gpu_fp8_attention: %d cases, %d failed, worst NMSE vs unquantized %.3g\n",
            cases, failures, worst_nmse);
    return failures? 1: 0;
}
#endif
