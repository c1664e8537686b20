/*  =========================================================================
    test_kernels_ref - the kernels' CPU twins, checked on the CPU alone

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The GPU tests trust the CPU twins, so the twins are checked here,
    where CI runs (no GPU): paged decode against a dense double-precision
    attention over the same tokens (shuffled tables, the runtime layout,
    partial blocks, GQA); prefill with one new token against decode, and
    causality (changing future tokens leaves earlier outputs alone); block
    copy; fp8 round-trip bounds; the fp8 decode twin against dense double
    attention over the dequantized KV and, bounded, against bf16 attention
    over the unquantized KV; the layer twins on inputs with known answers;
    the split planner; argument refusals.
@end
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_block_copy.cuh"
#include "kvt_dtype.h"
#include "kvt_fp8.cuh"
#include "kvt_fp8_attention.cuh"
#include "kvt_layers.cuh"
#include "kvt_paged_attention.cuh"
#include "kvt_paged_prefill.cuh"

static int s_failures = 0;

#define T_ASSERT(cond) do { if (!(cond)) { \
    fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    s_failures++; } } while (0)

static uint32_t
t_rand (uint64_t *seed)
{
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    return (uint32_t) ((*seed * 0x2545f4914f6cdd1dull) >> 32);
}

//  A paged cache in the runtime layout (layers x K/V x kv_heads planes)
typedef struct {
    int layers;                     //  Layers per block
    int layer;                      //  The layer attention reads
    int kv_heads;                   //  KV heads per layer
    int dim;                        //  head_dim
    int bt;                         //  Tokens per block
    int blocks;                     //  Blocks in the slab (some unused)
    size_t head_elems;              //  bt * dim
    size_t block_elems;             //  Elements per block, all layers
    uint16_t *slab;                 //  [blocks][layers][2][kv_heads][bt][dim] bf16
    int32_t *table;                 //  [max_blocks] shuffled ids
    int max_blocks;                 //  Table length
} t_cache_t;

static void
t_cache_init (t_cache_t *c, int len, int kv_heads, int dim, int bt, uint64_t *seed)
{
    c->layers = 3;
    c->layer = 2;
    c->kv_heads = kv_heads;
    c->dim = dim;
    c->bt = bt;
    c->max_blocks = (len + bt - 1) / bt;
    c->blocks = c->max_blocks + 3;
    c->head_elems = (size_t) bt * dim;
    c->block_elems = (size_t) c->layers * 2 * kv_heads * c->head_elems;
    c->slab = (uint16_t *) malloc (c->block_elems * c->blocks * 2);
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, c->slab, c->block_elems * c->blocks, 1.0f, seed);
    int *perm = (int *) malloc (c->blocks * sizeof (int));
    for (int i = 0; i < c->blocks; i++)
        perm [i] = i;
    for (int i = c->blocks - 1; i > 0; i--) {
        int j = (int) (t_rand (seed) % (i + 1));
        int tmp = perm [i]; perm [i] = perm [j]; perm [j] = tmp;
    }
    c->table = (int32_t *) malloc (c->max_blocks * sizeof (int32_t));
    for (int i = 0; i < c->max_blocks; i++)
        c->table [i] = perm [i];
    free (perm);
}

//  Element d of K (kv = 0) or V (kv = 1) of token t, kv head h
static float
t_cache_get (const t_cache_t *c, int kv, int h, int t, int d)
{
    size_t index = (size_t) c->table [t / c->bt] * c->block_elems
                 + ((size_t) (c->layer * 2 + kv) * c->kv_heads + h) * c->head_elems
                 + (size_t) (t % c->bt) * c->dim + d;
    return kvt_bf16_to_float (c->slab [index]);
}

static void
t_cache_strides (const t_cache_t *c, const void **k, const void **v, int64_t *block_stride,
                 int64_t *head_stride, int64_t *token_stride)
{
    *k = c->slab + (size_t) (c->layer * 2 + 0) * c->kv_heads * c->head_elems;
    *v = c->slab + (size_t) (c->layer * 2 + 1) * c->kv_heads * c->head_elems;
    *block_stride = (int64_t) c->block_elems * 2;
    *head_stride = (int64_t) c->head_elems * 2;
    *token_stride = c->dim * 2;
}

static void
t_cache_fini (t_cache_t *c)
{
    free (c->slab);
    free (c->table);
}

//  Decode twin against dense attention in double precision
static void
t_decode_vs_dense (uint64_t *seed)
{
    const int heads = 12, kv_heads = 3, dim = 64, bt = 16, len = 203;
    t_cache_t cache;
    t_cache_init (&cache, len, kv_heads, dim, bt, seed);
    uint16_t q [12 * 64], out [12 * 64];
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, q, heads * dim, 4.0f, seed);
    int32_t lens [1] = { len };
    kvt_paged_attention_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .q = q, .block_table = cache.table, .seq_lens = lens,
        .out = out, .seqs = 1, .heads = heads, .kv_heads = kv_heads, .head_dim = dim,
        .block_tokens = bt, .max_blocks_per_seq = cache.max_blocks, .max_seq_len = len,
        .scale = 0.125f
    };
    t_cache_strides (&cache, &args.k, &args.v, &args.block_stride_bytes,
                     &args.head_stride_bytes, &args.token_stride_bytes);
    T_ASSERT (kvt_paged_attention_ref (&args) == 0);
    double worst = 0;
    for (int h = 0; h < heads; h++) {
        int kvh = h / (heads / kv_heads);
        double scores [203], top = -INFINITY, sum = 0;
        for (int t = 0; t < len; t++) {
            double dot = 0;
            for (int d = 0; d < dim; d++)
                dot += (double) kvt_bf16_to_float (q [h * dim + d])
                     * t_cache_get (&cache, 0, kvh, t, d);
            scores [t] = dot * 0.125;
            top = scores [t] > top? scores [t]: top;
        }
        for (int t = 0; t < len; t++)
            sum += exp (scores [t] - top);
        for (int d = 0; d < dim; d++) {
            double acc = 0;
            for (int t = 0; t < len; t++)
                acc += exp (scores [t] - top) / sum * t_cache_get (&cache, 1, kvh, t, d);
            double got = kvt_bf16_to_float (out [h * dim + d]);
            double err = fabs (got - acc) / (fabs (acc) + 1e-3);
            worst = err > worst? err: worst;
        }
    }
    printf ("  decode twin vs dense double: worst relative error %.2g\n", worst);
    T_ASSERT (worst < 1.0 / 128);
    t_cache_fini (&cache);
}

//  Prefill twin: one new token equals decode; earlier rows ignore later tokens
static void
t_prefill_checks (uint64_t *seed)
{
    const int heads = 8, kv_heads = 2, dim = 128, bt = 32, len = 90, q_len = 20;
    t_cache_t cache;
    t_cache_init (&cache, len, kv_heads, dim, bt, seed);
    uint16_t *q = (uint16_t *) malloc ((size_t) q_len * heads * dim * 2);
    uint16_t *out = (uint16_t *) malloc ((size_t) q_len * heads * dim * 2);
    uint16_t *out2 = (uint16_t *) malloc ((size_t) q_len * heads * dim * 2);
    uint16_t decode_out [8 * 128];
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, q, (size_t) q_len * heads * dim, 2.0f, seed);
    int32_t q_start [2] = { 0, q_len }, lens [1] = { len };
    kvt_paged_prefill_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .q = q, .q_start = q_start, .block_table = cache.table,
        .seq_lens = lens, .out = out, .seqs = 1, .heads = heads, .kv_heads = kv_heads,
        .head_dim = dim, .block_tokens = bt, .max_blocks_per_seq = cache.max_blocks,
        .max_q_len = q_len, .scale = 1.0f / sqrtf (128.0f)
    };
    t_cache_strides (&cache, &args.k, &args.v, &args.block_stride_bytes,
                     &args.head_stride_bytes, &args.token_stride_bytes);
    T_ASSERT (kvt_paged_prefill_ref (&args) == 0);
    //  Row 4 sits at position len - q_len + 4: decode over that many + 1 tokens
    int32_t decode_len [1] = { len - q_len + 4 + 1 };
    kvt_paged_attention_args_t decode = {
        .dtype = KVT_KDTYPE_BF16, .q = q + (size_t) 4 * heads * dim, .k = args.k, .v = args.v,
        .block_stride_bytes = args.block_stride_bytes, .head_stride_bytes = args.head_stride_bytes,
        .token_stride_bytes = args.token_stride_bytes, .block_table = cache.table,
        .seq_lens = decode_len, .out = decode_out, .seqs = 1, .heads = heads,
        .kv_heads = kv_heads, .head_dim = dim, .block_tokens = bt,
        .max_blocks_per_seq = cache.max_blocks, .max_seq_len = len, .scale = args.scale
    };
    T_ASSERT (kvt_paged_attention_ref (&decode) == 0);
    T_ASSERT (memcmp (decode_out, out + (size_t) 4 * heads * dim, sizeof (decode_out)) == 0);
    //  Change the last token's K and V: rows before it must not move
    for (int kv = 0; kv < 2; kv++)
        for (int h = 0; h < kv_heads; h++) {
            int t = len - 1;
            size_t index = (size_t) cache.table [t / bt] * cache.block_elems
                         + ((size_t) (cache.layer * 2 + kv) * kv_heads + h) * cache.head_elems
                         + (size_t) (t % bt) * dim;
            for (int d = 0; d < dim; d++)
                cache.slab [index + d] = kvt_float_to_bf16 (5.0f);
        }
    args.out = out2;
    T_ASSERT (kvt_paged_prefill_ref (&args) == 0);
    size_t row = (size_t) heads * dim;
    T_ASSERT (memcmp (out, out2, (q_len - 1) * row * 2) == 0);
    T_ASSERT (memcmp (out + (q_len - 1) * row, out2 + (q_len - 1) * row, row * 2) != 0);
    free (q);
    free (out);
    free (out2);
    t_cache_fini (&cache);
}

static void
t_block_copy_checks (void)
{
    uint8_t src [4 * 64], dst [4 * 64];
    for (int i = 0; i < (int) sizeof (src); i++)
        src [i] = (uint8_t) i;
    memset (dst, 0xee, sizeof (dst));
    int64_t src_slots [3] = { 3, 0, 2 }, dst_slots [3] = { 1, -1, 3 };
    kvt_block_copy_args_t args = {
        .dst = dst, .src = src, .dst_slots = dst_slots, .src_slots = src_slots,
        .dst_slot_bytes = 64, .src_slot_bytes = 64, .block_bytes = 48, .count = 3
    };
    T_ASSERT (kvt_block_copy_ref (&args) == 0);
    T_ASSERT (memcmp (dst + 64, src + 3 * 64, 48) == 0);
    T_ASSERT (dst [64 + 48] == 0xee);               //  Past the block: untouched
    T_ASSERT (memcmp (dst + 3 * 64, src + 2 * 64, 48) == 0);
    T_ASSERT (dst [0] == 0xee && dst [2 * 64] == 0xee);     //  Skipped and unused slots
    args.block_bytes = 40;
    T_ASSERT (kvt_block_copy_ref (&args) == -EINVAL);
    args.block_bytes = 128;
    T_ASSERT (kvt_block_copy_ref (&args) == -EINVAL);
}

static void
t_fp8_checks (uint64_t *seed)
{
    enum { PLANES = 4, ELEMS = 256 };
    static uint16_t wide [PLANES * ELEMS], back [PLANES * ELEMS];
    static uint8_t fp8 [PLANES * ELEMS] __attribute__ ((aligned (16)));
    float scales [PLANES];
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, wide, PLANES * ELEMS, 3.0f, seed);
    for (int e = 0; e < ELEMS; e++)
        wide [ELEMS + e] = kvt_float_to_bf16 (0.0f);           //  Plane 1: zeros
    wide [2 * ELEMS + 7] = kvt_float_to_bf16 (-896.0f);         //  Plane 2: outlier
    int64_t slot = 0;
    kvt_fp8_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .src = wide, .dst = fp8, .scales = scales,
        .src_slots = &slot, .dst_slots = &slot, .src_slot_bytes = sizeof (wide),
        .dst_slot_bytes = sizeof (fp8), .planes = PLANES, .plane_elems = ELEMS, .count = 1
    };
    T_ASSERT (kvt_fp8_quantize_ref (&args) == 0);
    T_ASSERT (scales [1] == 1.0f);
    T_ASSERT (scales [2] == 2.0f);                  //  896 / 448
    T_ASSERT (fp8 [2 * ELEMS + 7] == 0xfe);         //  -448: the largest magnitude
    kvt_fp8_args_t inverse = args;
    inverse.src = fp8;
    inverse.dst = back;
    inverse.src_slot_bytes = sizeof (fp8);
    inverse.dst_slot_bytes = sizeof (wide);
    T_ASSERT (kvt_fp8_dequantize_ref (&inverse) == 0);
    for (int p = 0; p < PLANES; p++)
        for (int e = 0; e < ELEMS; e++) {
            float x = kvt_bf16_to_float (wide [p * ELEMS + e]);
            float y = kvt_bf16_to_float (back [p * ELEMS + e]);
            T_ASSERT (fabsf (x - y) <= fabsf (x) / 16 + scales [p] / 1024 + fabsf (y) / 256);
        }
    T_ASSERT (kvt_bf16_to_float (back [2 * ELEMS + 7]) == -896.0f);
}

//  fp8 decode twin: quantize the cache with kvt_fp8_quantize_ref, then
//  (1) against dense double attention over e4m3 * scale, (2) against bf16
//  attention over the unquantized cache, bounded
static void
t_fp8_attention_checks (uint64_t *seed)
{
    const int heads = 8, kv_heads = 2, dim = 128, bt = 16, len = 333;
    t_cache_t cache;
    t_cache_init (&cache, len, kv_heads, dim, bt, seed);
    int planes = cache.layers * 2 * kv_heads;
    //  Give planes amplitudes 1/8 .. 2 so the scales differ from block to block
    for (size_t p = 0; p < (size_t) planes * cache.blocks; p++) {
        float amplitude = ldexpf (1.0f, (int) (t_rand (seed) % 5) - 3);
        for (size_t e = 0; e < cache.head_elems; e++) {
            size_t index = p * cache.head_elems + e;
            cache.slab [index] = kvt_float_to_bf16 (kvt_bf16_to_float (cache.slab [index])
                                                    * amplitude);
        }
    }
    uint8_t *fp8 = (uint8_t *) malloc (cache.block_elems * cache.blocks);
    float *scales = (float *) malloc ((size_t) planes * cache.blocks * sizeof (float));
    int64_t *slots = (int64_t *) malloc (cache.blocks * sizeof (int64_t));
    for (int i = 0; i < cache.blocks; i++)
        slots [i] = i;
    kvt_fp8_args_t quant = {
        .dtype = KVT_KDTYPE_BF16, .src = cache.slab, .dst = fp8, .scales = scales,
        .src_slots = slots, .dst_slots = slots,
        .src_slot_bytes = (int64_t) cache.block_elems * 2,
        .dst_slot_bytes = (int64_t) cache.block_elems, .planes = planes,
        .plane_elems = (int) cache.head_elems, .count = cache.blocks
    };
    T_ASSERT (kvt_fp8_quantize_ref (&quant) == 0);
    size_t k_plane = (size_t) (cache.layer * 2 + 0) * kv_heads;
    size_t v_plane = (size_t) (cache.layer * 2 + 1) * kv_heads;
    uint16_t q [8 * 128], out [8 * 128], wide_out [8 * 128];
    int32_t lens [1] = { len };
    const float q_amps [2] = { 1.0f, 4.0f };
    for (int trial = 0; trial < 2; trial++) {
        kvt_kdtype_fill_random (KVT_KDTYPE_BF16, q, heads * dim, q_amps [trial], seed);
        kvt_fp8_attention_args_t args = {
            .dtype = KVT_KDTYPE_BF16, .q = q, .k = fp8 + k_plane * cache.head_elems,
            .v = fp8 + v_plane * cache.head_elems, .k_scales = scales + k_plane,
            .v_scales = scales + v_plane, .block_stride_bytes = (int64_t) cache.block_elems,
            .head_stride_bytes = (int64_t) cache.head_elems, .token_stride_bytes = dim,
            .scale_block_stride = planes, .scale_head_stride = 1,
            .block_table = cache.table, .seq_lens = lens, .out = out, .seqs = 1,
            .heads = heads, .kv_heads = kv_heads, .head_dim = dim, .block_tokens = bt,
            .max_blocks_per_seq = cache.max_blocks, .max_seq_len = len,
            .scale = 1.0f / sqrtf ((float) dim)
        };
        T_ASSERT (kvt_fp8_attention_ref (&args) == 0);
        //  (1) dense double over the dequantized values
        double worst = 0;
        for (int h = 0; h < heads; h++) {
            int kvh = h / (heads / kv_heads);
            double scores [333], top = -INFINITY, sum = 0;
            for (int t = 0; t < len; t++) {
                size_t block = (size_t) cache.table [t / bt];
                size_t row = block * cache.block_elems + (t % bt) * dim;
                double k_scale = scales [block * planes + k_plane + kvh];
                double dot = 0;
                for (int d = 0; d < dim; d++)
                    dot += (double) kvt_bf16_to_float (q [h * dim + d]) * k_scale
                         * kvt_fp8_e4m3_to_float (fp8 [row + (k_plane + kvh)
                                                       * cache.head_elems + d]);
                scores [t] = dot * args.scale;
                top = scores [t] > top? scores [t]: top;
            }
            for (int t = 0; t < len; t++)
                sum += exp (scores [t] - top);
            for (int d = 0; d < dim; d++) {
                double acc = 0;
                for (int t = 0; t < len; t++) {
                    size_t block = (size_t) cache.table [t / bt];
                    size_t index = block * cache.block_elems + (v_plane + kvh) * cache.head_elems
                                 + (t % bt) * dim + d;
                    acc += exp (scores [t] - top) / sum * scales [block * planes + v_plane + kvh]
                         * kvt_fp8_e4m3_to_float (fp8 [index]);
                }
                double got = kvt_bf16_to_float (out [h * dim + d]);
                double err = fabs (got - acc) / (fabs (acc) + 1e-3);
                worst = err > worst? err: worst;
            }
        }
        //  (2) bf16 attention over the unquantized cache
        kvt_paged_attention_args_t wide = {
            .dtype = KVT_KDTYPE_BF16, .q = q, .block_table = cache.table, .seq_lens = lens,
            .out = wide_out, .seqs = 1, .heads = heads, .kv_heads = kv_heads, .head_dim = dim,
            .block_tokens = bt, .max_blocks_per_seq = cache.max_blocks, .max_seq_len = len,
            .scale = args.scale
        };
        t_cache_strides (&cache, &wide.k, &wide.v, &wide.block_stride_bytes,
                         &wide.head_stride_bytes, &wide.token_stride_bytes);
        T_ASSERT (kvt_paged_attention_ref (&wide) == 0);
        double err2 = 0, ref2 = 0, max_abs = 0;
        for (int i = 0; i < heads * dim; i++) {
            double x = kvt_bf16_to_float (out [i]), y = kvt_bf16_to_float (wide_out [i]);
            err2 += (x - y) * (x - y);
            ref2 += y * y;
            max_abs = fabs (x - y) > max_abs? fabs (x - y): max_abs;
        }
        printf ("  fp8 decode twin (q_amp %g): vs dense double %.2g relative, "
                "vs unquantized bf16 NMSE %.3g, max |err| %.3g\n", q_amps [trial], worst,
                err2 / ref2, max_abs);
        T_ASSERT (worst < 1.0 / 128);
        T_ASSERT (err2 / ref2 < 4e-3);
        T_ASSERT (max_abs < 0.16);
    }
    //  Refusals: blocks under 16 tokens, missing scales
    kvt_fp8_attention_args_t bad = {
        .dtype = KVT_KDTYPE_BF16, .q = q, .k = fp8, .v = fp8, .k_scales = scales,
        .v_scales = NULL, .block_table = cache.table, .seq_lens = lens, .out = out, .seqs = 1,
        .heads = heads, .kv_heads = kv_heads, .head_dim = dim, .block_tokens = bt,
        .max_blocks_per_seq = cache.max_blocks, .max_seq_len = len, .token_stride_bytes = dim
    };
    T_ASSERT (kvt_fp8_attention_check (&bad) == -EINVAL);
    bad.v_scales = scales;
    T_ASSERT (kvt_fp8_attention_check (&bad) == 0);
    bad.block_tokens = 8;
    bad.max_blocks_per_seq = 64;
    T_ASSERT (kvt_fp8_attention_check (&bad) == -EINVAL);
    bad.block_tokens = bt;
    bad.max_blocks_per_seq = cache.max_blocks;
    bad.splits = 3;
    T_ASSERT (kvt_fp8_attention_splits (&bad, 264) == 3);
    T_ASSERT (kvt_fp8_attention_workspace_bytes (&bad, 3) == (size_t) heads * 3 * 129 * 4);
    free (fp8);
    free (scales);
    free (slots);
    t_cache_fini (&cache);
}

static void
t_layer_checks (uint64_t *seed)
{
    //  RMSNorm of a constant row with unit weight is +-1
    uint16_t x [16], w [16], out [16];
    for (int i = 0; i < 16; i++) {
        x [i] = kvt_float_to_bf16 (i % 2? -3.0f: 3.0f);
        w [i] = kvt_float_to_bf16 (1.0f);
    }
    kvt_rmsnorm_args_t norm = { KVT_KDTYPE_BF16, x, w, out, 1, 16, 0.0f };
    T_ASSERT (kvt_rmsnorm_ref (&norm) == 0);
    for (int i = 0; i < 16; i++)
        T_ASSERT (kvt_bf16_to_float (out [i]) == (i % 2? -1.0f: 1.0f));
    //  RoPE: position 0 is the identity; any position keeps each pair's norm
    float inv_freq [8];
    kvt_rope_inv_freq (inv_freq, 16, 10000.0);
    T_ASSERT (inv_freq [0] == 1.0f);
    uint16_t r [2 * 16], r0 [2 * 16];
    kvt_kdtype_fill_random (KVT_KDTYPE_FP16, r, 32, 1.0f, seed);
    memcpy (r0, r, sizeof (r));
    int32_t positions [2] = { 0, 777 };
    kvt_rope_args_t rope = { KVT_KDTYPE_FP16, r, positions, inv_freq, 2, 1, 16 };
    T_ASSERT (kvt_rope_ref (&rope) == 0);
    T_ASSERT (memcmp (r, r0, 32) == 0);
    for (int i = 0; i < 8; i++) {
        float a1 = kvt_fp16_to_float (r0 [16 + i]), a2 = kvt_fp16_to_float (r0 [24 + i]);
        float b1 = kvt_fp16_to_float (r [16 + i]), b2 = kvt_fp16_to_float (r [24 + i]);
        T_ASSERT (fabsf ((a1 * a1 + a2 * a2) - (b1 * b1 + b2 * b2)) < 4e-3f);
    }
    //  SwiGLU: silu (0) = 0, silu (g) ~ g for large g
    uint16_t gu [4] = { kvt_float_to_bf16 (0.0f), kvt_float_to_bf16 (20.0f),
                        kvt_float_to_bf16 (5.0f), kvt_float_to_bf16 (0.5f) };
    uint16_t sw [2];
    kvt_swiglu_args_t swiglu = { KVT_KDTYPE_BF16, gu, sw, 1, 2 };
    T_ASSERT (kvt_swiglu_ref (&swiglu) == 0);
    T_ASSERT (kvt_bf16_to_float (sw [0]) == 0.0f);
    T_ASSERT (kvt_bf16_to_float (sw [1]) == 10.0f);
    //  Argmax: first of equal maxima
    uint16_t logits [6] = { kvt_float_to_bf16 (1), kvt_float_to_bf16 (7), kvt_float_to_bf16 (2),
                            kvt_float_to_bf16 (7), kvt_float_to_bf16 (-1), kvt_float_to_bf16 (0) };
    int32_t best = -1;
    kvt_argmax_args_t argmax = { KVT_KDTYPE_BF16, logits, &best, 1, 6 };
    T_ASSERT (kvt_argmax_ref (&argmax) == 0 && best == 1);
    //  GEMM with an identity weight copies the activations
    uint16_t a [2 * 4], eye [4 * 4], c [2 * 4];
    kvt_kdtype_fill_random (KVT_KDTYPE_BF16, a, 8, 1.0f, seed);
    for (int i = 0; i < 16; i++)
        eye [i] = kvt_float_to_bf16 (i % 5 == 0? 1.0f: 0.0f);
    kvt_gemm_args_t gemm = { KVT_KDTYPE_BF16, a, eye, c, 2, 4, 4, NULL };
    T_ASSERT (kvt_gemm_ref (&gemm) == 0);
    T_ASSERT (memcmp (a, c, sizeof (a)) == 0);
}

static void
t_planner_and_refusals (void)
{
    kvt_paged_attention_args_t args = {
        .seqs = 64, .heads = 32, .kv_heads = 8, .head_dim = 128, .block_tokens = 16,
        .max_blocks_per_seq = 256, .max_seq_len = 4096
    };
    T_ASSERT (kvt_paged_attention_splits (&args, 264) == 1);
    args.seqs = 1;
    args.max_seq_len = 131072;
    args.max_blocks_per_seq = 8192;
    T_ASSERT (kvt_paged_attention_splits (&args, 264) == 33);
    //  One CTA a SM on 132 SMs: 16 splits of 8 heads fill one wave; 17
    //  would start a second for 4 CTAs
    T_ASSERT (kvt_paged_attention_splits (&args, 132) == 16);
    args.seqs = 16;
    args.max_seq_len = 32768;
    args.max_blocks_per_seq = 2048;
    T_ASSERT (kvt_paged_attention_splits (&args, 264) == 2);       //  256 CTAs
    T_ASSERT (kvt_paged_attention_splits (&args, 132) == 1);       //  128 CTAs
    args.seqs = 1;
    args.max_seq_len = 300;                         //  At least 256 tokens a split
    T_ASSERT (kvt_paged_attention_splits (&args, 264) == 1);
    args.splits = 5;
    T_ASSERT (kvt_paged_attention_splits (&args, 264) == 5);
    T_ASSERT (kvt_paged_attention_workspace_bytes (&args, 5) == 32 * 5 * 129 * 4);
    T_ASSERT (kvt_paged_attention_workspace_bytes (&args, 1) == 0);
    T_ASSERT (kvt_paged_attention_check (&args) == -EINVAL);        //  NULL pointers
    kvt_paged_prefill_args_t prefill = { .head_dim = 128 };
    T_ASSERT (kvt_paged_prefill_check (&prefill) == -EINVAL);
    kvt_fp8_args_t fp8 = { .count = 1 };
    T_ASSERT (kvt_fp8_check (&fp8) == -EINVAL);
}

int
main (void)
{
    uint64_t seed = 0x5eed00ff;
    t_decode_vs_dense (&seed);
    t_prefill_checks (&seed);
    t_block_copy_checks ();
    t_fp8_checks (&seed);
    t_fp8_attention_checks (&seed);
    t_layer_checks (&seed);
    t_planner_and_refusals ();
    printf ("test_kernels_ref: %d failures\n", s_failures);
    return s_failures? 1: 0;
}
