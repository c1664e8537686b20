/*  =========================================================================
    test_gpu_paged_attention - paged decode attention, GPU against CPU twin

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Fresh random inputs per case over a shape matrix that breaks paging:
    ragged lengths (and a length of 0), partly filled last blocks, shuffled
    block tables with garbage in unused blocks, GQA ratios 1, 4, 5, 8,
    12 and 20 (two head chunks), head_dim 64/128, block sizes 4/8/16/32/64, forced and automatic
    split-KV, the vLLM layout and the runtime's multi-layer block layout;
    every kernel version (args.variant) on each case. With a forced split
    count on sm_90, v5 (and the default, which runs it) must give v4's
    output bit for bit, and the first half of a batch alone the same bits
    as in the whole batch: the model's batch invariance rests on both.
    The output is poisoned with NaN before each launch. Exit 77 without a
    GPU or in a CPU-only build.
@end
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_paged_attention.cuh"

#ifndef KVT_KERNELS_GPU
int
main (void)
{
    printf ("test_gpu_paged_attention: CPU-only build, skipped\n");
    return 77;
}
#else

#define T_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

typedef struct {
    kvt_kdtype_t dtype;             //  Element type
    int seqs;                       //  Sequences
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads
    int head_dim;                   //  64 or 128
    int block_tokens;               //  Tokens per block
    int max_len;                    //  Longest sequence
    int splits;                     //  0 = automatic
    bool runtime_layout;            //  [layer][K,V][kv_head][token][dim] blocks
    float q_amp;                    //  Query amplitude (peakier softmax when large)
    bool uniform;                   //  Every sequence max_len long (the model's steps)
} t_case_t;

static uint32_t
t_rand (uint64_t *seed)
{
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    return (uint32_t) ((*seed * 0x2545f4914f6cdd1dull) >> 32);
}

static bool s_hopper;                //  sm_90 or later: v3-v5 run, not v2

static int
t_run_case (const t_case_t *c, uint64_t *seed, bool verbose)
{
    const int layers = 3, layer = 1;                //  Runtime layout: read layer 1 of 3
    int dim = c->head_dim, bt = c->block_tokens;
    int *lens = (int *) calloc (c->seqs, sizeof (int));
    int total_blocks = 0, max_blocks = (c->max_len + bt - 1) / bt;
    if (max_blocks == 0)
        max_blocks = 1;
    for (int s = 0; s < c->seqs; s++) {
        lens [s] = s == 0 || c->uniform? c->max_len: (int) (t_rand (seed) % (c->max_len + 1));
        if (s == 2 && !c->uniform)
            lens [s] = 0;                           //  An empty sequence
        total_blocks += (lens [s] + bt - 1) / bt;
    }
    total_blocks += 7;                              //  Unused blocks full of garbage
    //  Shuffled block ids
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

    size_t head_elems = (size_t) bt * dim;
    size_t block_elems = c->runtime_layout? (size_t) layers * 2 * c->kv_heads * head_elems
                                          : (size_t) c->kv_heads * head_elems;
    size_t kv_elems = block_elems * total_blocks;
    size_t kv_bytes = kv_elems * 2;
    size_t q_elems = (size_t) c->seqs * c->heads * dim;
    void *h_k = malloc (kv_bytes);
    void *h_v = c->runtime_layout? h_k: malloc (kv_bytes);
    void *h_q = malloc (q_elems * 2);
    void *h_ref = malloc (q_elems * 2);
    void *h_out = malloc (q_elems * 2);
    kvt_kdtype_fill_random (c->dtype, h_k, kv_elems, 1.0f, seed);
    if (!c->runtime_layout)
        kvt_kdtype_fill_random (c->dtype, h_v, kv_elems, 1.0f, seed);
    kvt_kdtype_fill_random (c->dtype, h_q, q_elems, c->q_amp, seed);

    kvt_paged_attention_args_t args = {
        .dtype = c->dtype, .q = h_q, .k = h_k, .v = h_v,
        .block_stride_bytes = (int64_t) block_elems * 2,
        .head_stride_bytes = (int64_t) head_elems * 2,
        .token_stride_bytes = (int64_t) dim * 2,
        .block_table = table, .seq_lens = lens, .out = h_ref,
        .seqs = c->seqs, .heads = c->heads, .kv_heads = c->kv_heads, .head_dim = dim,
        .block_tokens = bt, .max_blocks_per_seq = max_blocks, .max_seq_len = c->max_len,
        .scale = 1.0f / sqrtf ((float) dim), .splits = c->splits
    };
    size_t k_offset = 0, v_offset = 0;
    if (c->runtime_layout) {
        k_offset = (size_t) (layer * 2 + 0) * c->kv_heads * head_elems * 2;
        v_offset = (size_t) (layer * 2 + 1) * c->kv_heads * head_elems * 2;
        args.k = (char *) h_k + k_offset;
        args.v = (char *) h_k + v_offset;
    }
    int rc = kvt_paged_attention_ref (&args);
    if (rc) {
        fprintf (stderr, "reference failed: %d\n", rc);
        return -1;
    }
    //  Device copies
    void *d_k, *d_v, *d_q, *d_out;
    int32_t *d_table, *d_lens;
    T_CHECK (cudaMalloc (&d_k, kv_bytes));
    d_v = d_k;
    if (!c->runtime_layout)
        T_CHECK (cudaMalloc (&d_v, kv_bytes));
    T_CHECK (cudaMalloc (&d_q, q_elems * 2));
    T_CHECK (cudaMalloc (&d_out, q_elems * 2));
    T_CHECK (cudaMalloc ((void **) &d_table, (size_t) c->seqs * max_blocks * 4));
    T_CHECK (cudaMalloc ((void **) &d_lens, c->seqs * 4));
    T_CHECK (cudaMemcpy (d_k, h_k, kv_bytes, cudaMemcpyHostToDevice));
    if (!c->runtime_layout)
        T_CHECK (cudaMemcpy (d_v, h_v, kv_bytes, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_q, h_q, q_elems * 2, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_table, table, (size_t) c->seqs * max_blocks * 4,
                         cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_lens, lens, c->seqs * 4, cudaMemcpyHostToDevice));
    args.q = d_q;
    args.k = (char *) d_k + k_offset;
    args.v = (char *) (c->runtime_layout? d_k: d_v) + v_offset;
    args.block_table = d_table;
    args.seq_lens = d_lens;
    args.out = d_out;
    bool bf16 = c->dtype == KVT_KDTYPE_BF16;
    void *outs [KVT_PAGED_ATTENTION_VARIANTS] = { NULL };
    //  Every kernel version on the same inputs, each against the reference
    for (int variant = 0; variant < KVT_PAGED_ATTENTION_VARIANTS && rc == 0; variant++) {
        args.variant = variant;
        T_CHECK (cudaMemset (d_out, 0xff, q_elems * 2));       //  NaN poison
        int splits = kvt_paged_attention_plan (&args);
        int64_t need = kvt_paged_attention_workspace_need (&args);
        if (splits < 0 || need < 0) {
            fprintf (stderr, "variant %d: plan %d, workspace %lld\n", variant, splits,
                     (long long) need);
            rc = -1;
            break;
        }
        args.workspace_bytes = (size_t) need;
        args.workspace = NULL;
        if (args.workspace_bytes)
            T_CHECK (cudaMalloc (&args.workspace, args.workspace_bytes));
        rc = kvt_paged_attention (&args, 0);
        T_CHECK (cudaDeviceSynchronize ());
        //  The same bits on every run (the model's uniform steps): a race
        //  in a ring shows here first
        for (int again = 0; rc == 0 && c->uniform && again < 20; again++) {
            T_CHECK (cudaMemcpy (h_out, d_out, q_elems * 2, cudaMemcpyDeviceToHost));
            T_CHECK (cudaMemset (d_out, 0xff, q_elems * 2));
            rc = kvt_paged_attention (&args, 0);
            T_CHECK (cudaDeviceSynchronize ());
            void *next = malloc (q_elems * 2);
            T_CHECK (cudaMemcpy (next, d_out, q_elems * 2, cudaMemcpyDeviceToHost));
            if (rc == 0 && memcmp (next, h_out, q_elems * 2) != 0) {
                size_t at = 0;
                while (((uint16_t *) next) [at] == ((uint16_t *) h_out) [at])
                    at++;
                fprintf (stderr, "seqs=%d len<=%d splits=%d variant %d: run %d gave other bits "
                         "(first at sequence %zu)\n", c->seqs, c->max_len, c->splits, variant,
                         again + 1, at / ((size_t) c->heads * dim));
                rc = -1;
            }
            free (next);
        }
        cudaFree (args.workspace);
        if (rc) {
            fprintf (stderr, "kvt_paged_attention (variant %d): %d\n", variant, rc);
            rc = -1;
            break;
        }
        T_CHECK (cudaMemcpy (h_out, d_out, q_elems * 2, cudaMemcpyDeviceToHost));
        outs [variant] = malloc (q_elems * 2);
        memcpy (outs [variant], h_out, q_elems * 2);
        char what [160];
        snprintf (what, sizeof (what), "%s seqs=%d heads=%d/%d hd=%d bt=%d len<=%d splits=%d%s "
                  "q_amp=%g v%d", bf16? "bf16": "fp16", c->seqs, c->heads, c->kv_heads, dim, bt,
                  c->max_len, splits, c->runtime_layout? " runtime": " vllm", c->q_amp, variant);
        //  The GPU rounds softmax weights to the dtype before P.V (as
        //  FlashAttention does): up to 2^-9 (bf16) or 2^-12 (fp16) of max |v|
        //  absolute, then the output's own rounding (2 ulps allowed)
        rc = kvt_kdtype_compare (what, c->dtype, h_out, h_ref, q_elems, bf16? 3e-3: 5e-4,
                                 bf16? 1.0 / 64: 1.0 / 512, bf16? 1e-4: 1e-5, verbose);
    }
    //  Forced splits: v5 and the default are v4 bit for bit (variant 3)
    for (int variant = 0; rc == 0 && s_hopper && c->splits > 0 && variant < 5; variant += 4)
        if (memcmp (outs [variant], outs [3], q_elems * 2) != 0) {
            fprintf (stderr, "%s seqs=%d heads=%d/%d hd=%d bt=%d len<=%d splits=%d: variant %d "
                     "differs from v4's bits\n", bf16? "bf16": "fp16", c->seqs, c->heads,
                     c->kv_heads, dim, bt, c->max_len, c->splits, variant);
            rc = -1;
        }
    //  Batch invariance with forced splits (what the model relies on): the
    //  first half of the batch alone gives its rows of the whole batch's
    //  output, bit for bit, in the default (v5) and in v4
    for (int variant = 0; rc == 0 && c->splits > 0 && c->seqs > 1 && variant < 4; variant += 3) {
        kvt_paged_attention_args_t half = args;
        half.seqs = c->seqs / 2;
        half.variant = variant;
        half.workspace_bytes = (size_t) kvt_paged_attention_workspace_need (&half);
        half.workspace = NULL;
        if (half.workspace_bytes)
            T_CHECK (cudaMalloc (&half.workspace, half.workspace_bytes));
        T_CHECK (cudaMemset (d_out, 0xff, q_elems * 2));
        rc = kvt_paged_attention (&half, 0);
        T_CHECK (cudaDeviceSynchronize ());
        cudaFree (half.workspace);
        T_CHECK (cudaMemcpy (h_out, d_out, q_elems * 2, cudaMemcpyDeviceToHost));
        size_t half_bytes = (size_t) half.seqs * c->heads * dim * 2;
        if (rc == 0 && outs [variant] && memcmp (h_out, outs [variant], half_bytes) != 0) {
            fprintf (stderr, "%s seqs=%d heads=%d/%d hd=%d bt=%d len<=%d splits=%d: variant %d "
                     "gives the first %d sequences other bits alone\n", bf16? "bf16": "fp16",
                     c->seqs, c->heads, c->kv_heads, dim, bt, c->max_len, c->splits, variant,
                     half.seqs);
            rc = -1;
        }
    }
    for (int variant = 0; variant < KVT_PAGED_ATTENTION_VARIANTS; variant++)
        free (outs [variant]);
    cudaFree (d_k);
    if (!c->runtime_layout)
        cudaFree (d_v);
    cudaFree (d_q);
    cudaFree (d_out);
    cudaFree (d_table);
    cudaFree (d_lens);
    free (h_k);
    if (!c->runtime_layout)
        free (h_v);
    free (h_q);
    free (h_ref);
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
    static uint16_t data [4096] __attribute__ ((aligned (16)));
    kvt_paged_attention_args_t good = {
        .dtype = KVT_KDTYPE_BF16, .q = data, .k = data, .v = data,
        .block_stride_bytes = 4096, .head_stride_bytes = 4096, .token_stride_bytes = 256,
        .block_table = table, .seq_lens = lens, .out = data, .seqs = 1, .heads = 4,
        .kv_heads = 2, .head_dim = 128, .block_tokens = 16, .max_blocks_per_seq = 4,
        .max_seq_len = 64, .scale = 1, .splits = 2
    };
    int failures = 0;
    kvt_paged_attention_args_t bad = good;
    bad.head_dim = 96;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.block_tokens = 24;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.heads = 5;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.max_seq_len = 65;                           //  More than the table holds
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;                                     //  Split without a workspace
    bad.max_seq_len = 1024;
    bad.max_blocks_per_seq = 64;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;                                     //  v5 without a workspace
    bad.variant = 4;
    bad.splits = 0;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;                                     //  v5, forced splits, the same
    bad.variant = 4;
    bad.max_seq_len = 1024;
    bad.max_blocks_per_seq = 64;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.token_stride_bytes = 200;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad = good;
    bad.variant = KVT_PAGED_ATTENTION_VARIANTS;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
    bad.variant = -1;
    failures += kvt_paged_attention (&bad, 0) != -EINVAL;
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
        printf ("test_gpu_paged_attention: no GPU, skipped\n");
        return 77;
    }
    uint64_t seed = 0x5eed0001;
    int major = 0;
    T_CHECK (cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, 0));
    s_hopper = major >= 9;
    int failures = t_check_refusals () != 0;
    static const int groups [][2] = { { 8, 8 }, { 32, 8 }, { 10, 2 }, { 32, 4 }, { 24, 2 },
                                      { 40, 2 } };
    static const int block_sizes [] = { 16, 32, 64 };
    static const int lens [] = { 1, 17, 100, 700, 2500, 1200 };
    static const int splits [] = { 0, 1, 3, 7 };
    bool quick = getenv ("KVT_TEST_QUICK") != NULL;    //  Under compute-sanitizer
    int cases = 0;
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
            .q_amp = (i / 5) % 2? 8.0f: 1.0f
        };
        cases++;
        failures += t_run_case (&c, &seed, verbose) != 0;
    }
    //  Long contexts: many automatic splits, and a single sequence
    t_case_t long_cases [] = {
        { KVT_KDTYPE_BF16, 1, 32, 8, 128, 16, 40000, 0, true, 2.0f, false },
        { KVT_KDTYPE_FP16, 2, 16, 2, 64, 64, 20000, 0, false, 4.0f, false },
        { KVT_KDTYPE_BF16, 3, 32, 8, 128, 32, 9000, 0, false, 1.0f, false },
        //  Blocks under 16 tokens: the bulk-copy versions copy row by row
        { KVT_KDTYPE_BF16, 3, 32, 8, 128, 8, 3000, 0, false, 1.0f, false },
        { KVT_KDTYPE_FP16, 2, 8, 8, 64, 4, 1500, 3, true, 2.0f, false },
        //  More sequences than a warp scans at once and more units than
        //  CTAs: v5's ranges hold many units and cut some
        { KVT_KDTYPE_BF16, 200, 32, 8, 128, 16, 700, 0, false, 1.0f, false },
        { KVT_KDTYPE_FP16, 70, 40, 2, 64, 32, 300, 0, true, 1.0f, false },
        //  The model's forced splits (kvt_model_cuda.c: fixed-length splits
        //  whatever the batch) over ragged batches: v5 cuts the batch at
        //  them and must match v4 bit for bit (256- and 448-token splits)
        { KVT_KDTYPE_BF16, 40, 32, 8, 128, 16, 4096, 16, true, 2.0f, false },
        { KVT_KDTYPE_BF16, 9, 32, 8, 128, 16, 9408, 21, false, 1.0f, false },
        { KVT_KDTYPE_FP16, 33, 24, 2, 64, 64, 3000, 5, false, 4.0f, false },
        { KVT_KDTYPE_BF16, 64, 32, 8, 128, 16, 1280, 5, true, 1.0f, false },
        //  The 8B model's decode step: 64 chats of one length
        { KVT_KDTYPE_BF16, 64, 32, 8, 128, 16, 1027, 5, true, 1.0f, true },
        { KVT_KDTYPE_BF16, 64, 32, 8, 128, 16, 1025, 5, true, 1.0f, true },
        { KVT_KDTYPE_BF16, 64, 32, 8, 128, 16, 1025, 0, true, 1.0f, true },
    };
    for (size_t i = 0; i < (quick? 1: sizeof (long_cases) / sizeof (long_cases [0])); i++) {
        cases++;
        failures += t_run_case (&long_cases [i], &seed, verbose) != 0;
    }
    printf ("test_gpu_paged_attention: %d cases, %d failed\n", cases, failures);
    return failures? 1: 0;
}
#endif
