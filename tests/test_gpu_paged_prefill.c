/*  =========================================================================
    test_gpu_paged_prefill - causal paged prefill, GPU against CPU twin

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Fresh random inputs per case: ragged prompt lengths (one sequence with
    no new tokens), cached prefixes from 0 to a few hundred tokens that end
    mid-block, shuffled block tables with garbage in unused blocks, GQA
    ratios 1, 3 and 4, block sizes 16/32/64, bf16 and fp16, the vLLM and
    the runtime's multi-layer layouts. Output poisoned with NaN first.
    P is rounded to the dtype before P.V on the GPU (as FlashAttention
    does), so the bounds allow a few units in the last place more than the
    decode test. Every kernel version (args.variant) runs on every case. Exit 77 without a GPU or in a CPU-only build.
@end
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_paged_prefill.cuh"

#ifndef KVT_KERNELS_GPU
int
main (void)
{
    printf ("test_gpu_paged_prefill: CPU-only build, skipped\n");
    return 77;
}
#else

#define T_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

static uint32_t
t_rand (uint64_t *seed)
{
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    return (uint32_t) ((*seed * 0x2545f4914f6cdd1dull) >> 32);
}

typedef struct {
    kvt_kdtype_t dtype;             //  Element type
    int seqs;                       //  Sequences
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads
    int block_tokens;               //  Tokens per block
    int max_q;                      //  Longest new-token run
    int max_cached;                 //  Longest cached prefix
    bool runtime_layout;            //  Multi-layer block layout
    float q_amp;                    //  Query amplitude
} t_case_t;

static int
t_run_case (const t_case_t *c, uint64_t *seed, bool verbose)
{
    const int dim = 128, layers = 2, layer = 1;
    int bt = c->block_tokens;
    int32_t *q_start = (int32_t *) calloc (c->seqs + 1, sizeof (int32_t));
    int32_t *lens = (int32_t *) calloc (c->seqs, sizeof (int32_t));
    int max_q = 0, max_len = 1, total_blocks = 7;
    for (int s = 0; s < c->seqs; s++) {
        int q_len = s == 0? c->max_q: (int) (t_rand (seed) % (c->max_q + 1));
        if (s == 1)
            q_len = 0;                              //  Nothing new for this one
        int cached = (int) (t_rand (seed) % (c->max_cached + 1));
        q_start [s + 1] = q_start [s] + q_len;
        lens [s] = cached + q_len;
        max_q = q_len > max_q? q_len: max_q;
        max_len = lens [s] > max_len? lens [s]: max_len;
        total_blocks += (lens [s] + bt - 1) / bt;
    }
    int max_blocks = (max_len + bt - 1) / bt;
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
    size_t q_elems = (size_t) (q_start [c->seqs] + 1) * c->heads * dim;
    void *h_k = malloc (kv_elems * 2);
    void *h_v = malloc (kv_elems * 2);
    void *h_q = malloc (q_elems * 2);
    void *h_ref = malloc (q_elems * 2);
    void *h_out = malloc (q_elems * 2);
    kvt_kdtype_fill_random (c->dtype, h_k, kv_elems, 1.0f, seed);
    kvt_kdtype_fill_random (c->dtype, h_v, kv_elems, 1.0f, seed);
    kvt_kdtype_fill_random (c->dtype, h_q, q_elems, c->q_amp, seed);
    memset (h_ref, 0, q_elems * 2);
    size_t k_offset = 0, v_offset = 0;
    if (c->runtime_layout) {
        k_offset = (size_t) (layer * 2 + 0) * c->kv_heads * head_elems * 2;
        v_offset = (size_t) (layer * 2 + 1) * c->kv_heads * head_elems * 2;
    }
    kvt_paged_prefill_args_t args = {
        .dtype = c->dtype, .q = h_q, .q_start = q_start,
        .k = (char *) h_k + k_offset, .v = (char *) (c->runtime_layout? h_k: h_v) + v_offset,
        .block_stride_bytes = (int64_t) block_elems * 2,
        .head_stride_bytes = (int64_t) head_elems * 2, .token_stride_bytes = dim * 2,
        .block_table = table, .seq_lens = lens, .out = h_ref, .seqs = c->seqs,
        .heads = c->heads, .kv_heads = c->kv_heads, .head_dim = dim, .block_tokens = bt,
        .max_blocks_per_seq = max_blocks, .max_q_len = max_q,
        .scale = 1.0f / sqrtf ((float) dim)
    };
    if (kvt_paged_prefill_ref (&args))
        return -1;
    void *d_k, *d_v, *d_q, *d_out;
    int32_t *d_table, *d_lens, *d_qstart;
    T_CHECK (cudaMalloc (&d_k, kv_elems * 2));
    T_CHECK (cudaMalloc (&d_v, kv_elems * 2));
    T_CHECK (cudaMalloc (&d_q, q_elems * 2));
    T_CHECK (cudaMalloc (&d_out, q_elems * 2));
    T_CHECK (cudaMalloc ((void **) &d_table, (size_t) c->seqs * max_blocks * 4));
    T_CHECK (cudaMalloc ((void **) &d_lens, c->seqs * 4));
    T_CHECK (cudaMalloc ((void **) &d_qstart, (c->seqs + 1) * 4));
    T_CHECK (cudaMemcpy (d_k, h_k, kv_elems * 2, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_v, h_v, kv_elems * 2, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_q, h_q, q_elems * 2, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_table, table, (size_t) c->seqs * max_blocks * 4,
                         cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_lens, lens, c->seqs * 4, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_qstart, q_start, (c->seqs + 1) * 4, cudaMemcpyHostToDevice));
    args.q = d_q;
    args.q_start = d_qstart;
    args.k = (char *) d_k + k_offset;
    args.v = (char *) (c->runtime_layout? d_k: d_v) + v_offset;
    args.block_table = d_table;
    args.seq_lens = d_lens;
    args.out = d_out;
    int rc = 0;
    //  The default (v5) loads K/V by TMA where v4 (variant 7) loads them by
    //  cp.async; the math is the same, so are the bits
    uint16_t *h_default = (uint16_t *) malloc (q_elems * 2);
    for (int variant = 0; variant < KVT_PAGED_PREFILL_VARIANTS; variant++) {
        T_CHECK (cudaMemset (d_out, 0xff, q_elems * 2));
        T_CHECK (cudaMemset ((char *) d_out + (q_elems - c->heads * dim) * 2, 0,
                             c->heads * dim * 2));     //  Spare row the kernel never writes
        args.variant = variant;
        int launched = kvt_paged_prefill (&args, 0);
        T_CHECK (cudaDeviceSynchronize ());
        if (launched) {
            fprintf (stderr, "kvt_paged_prefill variant %d: %d\n", variant, launched);
            return -1;
        }
        T_CHECK (cudaMemcpy (h_out, d_out, q_elems * 2, cudaMemcpyDeviceToHost));
        char what [160];
        snprintf (what, sizeof (what), "v%d %s seqs=%d heads=%d/%d bt=%d q<=%d cached<=%d%s "
                  "q_amp=%g", variant, c->dtype == KVT_KDTYPE_BF16? "bf16": "fp16", c->seqs,
                  c->heads, c->kv_heads, bt, c->max_q, c->max_cached,
                  c->runtime_layout? " runtime": " vllm", c->q_amp);
        bool bf16 = c->dtype == KVT_KDTYPE_BF16;
        if (kvt_kdtype_compare (what, c->dtype, h_out, h_ref, q_elems, bf16? 4e-3: 1e-3,
                                bf16? 1.0 / 32: 1.0 / 256, bf16? 2e-4: 2e-5, verbose))
            rc = -1;
        if (variant == 0)
            memcpy (h_default, h_out, q_elems * 2);
        if (variant == 7 && memcmp (h_default, h_out, q_elems * 2) != 0) {
            fprintf (stderr, "%s: the default (v5, TMA) differs from v4's bits\n", what);
            rc = -1;
        }
    }
    free (h_default);
    cudaFree (d_k);
    cudaFree (d_v);
    cudaFree (d_q);
    cudaFree (d_out);
    cudaFree (d_table);
    cudaFree (d_lens);
    cudaFree (d_qstart);
    free (h_k);
    free (h_v);
    free (h_q);
    free (h_ref);
    free (h_out);
    free (table);
    free (perm);
    free (lens);
    free (q_start);
    return rc;
}

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    int device_count = 0;
    if (cudaGetDeviceCount (&device_count) != cudaSuccess || device_count == 0) {
        printf ("test_gpu_paged_prefill: no GPU, skipped\n");
        return 77;
    }
    uint64_t seed = 0x5eed0003;
    static const int groups [][2] = { { 4, 4 }, { 8, 2 }, { 6, 2 } };
    static const int block_sizes [] = { 16, 32, 64 };
    static const int q_lens [] = { 1, 37, 130, 300 };
    static const int cached [] = { 0, 21, 200, 333 };
    bool quick = getenv ("KVT_TEST_QUICK") != NULL;    //  Under compute-sanitizer
    int failures = 0, cases = 0;
    for (int i = 0; i < (quick? 10: 24); i++) {
        t_case_t c = {
            .dtype = i % 2? KVT_KDTYPE_FP16: KVT_KDTYPE_BF16,
            .seqs = 1 + (int) (t_rand (&seed) % 4),
            .heads = groups [i % 3][0], .kv_heads = groups [i % 3][1],
            .block_tokens = block_sizes [(i / 2) % 3],
            .max_q = q_lens [(i / 3) % 4], .max_cached = cached [(i / 6) % 4],
            .runtime_layout = (i / 4) % 2, .q_amp = (i / 5) % 2? 6.0f: 1.0f
        };
        cases++;
        failures += t_run_case (&c, &seed, verbose) != 0;
    }
    //  Pages smaller than the row groups the kernels load at once (4, and
    //  8 for v3), and larger than a K/V tile (256)
    static const int odd_pages [] = { 4, 8, 256 };
    for (int i = 0; i < 3; i++) {
        t_case_t c = {
            .dtype = i % 2? KVT_KDTYPE_FP16: KVT_KDTYPE_BF16,
            .seqs = 2, .heads = 8, .kv_heads = 2, .block_tokens = odd_pages [i],
            .max_q = 300, .max_cached = 333, .runtime_layout = i % 2, .q_amp = 1.0f
        };
        cases++;
        failures += t_run_case (&c, &seed, verbose) != 0;
    }
    kvt_paged_prefill_args_t bad = { .head_dim = 64 };
    failures += kvt_paged_prefill (&bad, 0) != -EINVAL;
    bad.head_dim = 128;
    bad.variant = KVT_PAGED_PREFILL_VARIANTS;
    failures += kvt_paged_prefill (&bad, 0) != -EINVAL;
    printf ("test_gpu_paged_prefill: %d cases, %d failed\n", cases + 1, failures);
    return failures? 1: 0;
}
#endif
