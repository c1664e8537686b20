/*  =========================================================================
    kvt_model_test - the CPU model's selftest, against a plain reference

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvt_model_test: a plain reference model (one token at a time, loops
    straight from the definitions, its own bf16 K/V) beside the CPU model
    (kvt_model.c, kvt_model_seq.c), and the determinism, batch-invariance
    and streaming contracts of kvt_model.h checked against it.
@end
*/

#include "kvt_model_int.h"

//  --------------------------------------------------------------------------
//  Selftest helpers

//  Plain reference: one token at a time, dot-product loops straight from
//  the definitions, its own bf16 K/V. Feeds 'fed' tokens (prompt, then the
//  outputs to check) and leaves the logits of the last one in 'logits'
//  and every position's K/V in kv [pos][layer][K/V][kv_dim].

static void
t_reference (kvt_model_t *m, const uint32_t *fed, size_t fed_count, float *logits,
             kvt_bf16_t *kv)
{
    const kvt_model_shape_t *s = &m->shape;
    const int hidden = s->hidden, hd = s->head_dim, qd = m->q_dim, kvd = m->kv_dim;
    float *x = (float *) kvt_zmalloc (hidden * sizeof (float));
    float *xn = (float *) kvt_zmalloc (hidden * sizeof (float));
    float *q = (float *) kvt_zmalloc (qd * sizeof (float));
    float *k = (float *) kvt_zmalloc (kvd * sizeof (float));
    float *v = (float *) kvt_zmalloc (kvd * sizeof (float));
    float *att = (float *) kvt_zmalloc (qd * sizeof (float));
    float *hmid = (float *) kvt_zmalloc (s->intermediate * sizeof (float));
    float *sc = (float *) kvt_zmalloc (fed_count * sizeof (float));
    const size_t kv_stride = (size_t) s->layers * 2 * kvd;   //  Per position
    for (size_t pos = 0; pos < fed_count; pos++) {
        for (int i = 0; i < hidden; i++)
            x [i] = m->embed [(size_t) fed [pos] * hidden + i];
        for (int l = 0; l < s->layers; l++) {
            const kvt_model_layer_t *w = &m->layer [l];
            kvt_model_rmsnorm (xn, x, w->attn_norm, hidden);
            for (int j = 0; j < qd; j++) {
                float acc = 0.0f;
                for (int i = 0; i < hidden; i++)
                    acc += xn [i] * w->wq [(size_t) i * qd + j];
                q [j] = acc;
            }
            for (int j = 0; j < kvd; j++) {
                float acc_k = 0.0f, acc_v = 0.0f;
                for (int i = 0; i < hidden; i++) {
                    acc_k += xn [i] * w->wk [(size_t) i * kvd + j];
                    acc_v += xn [i] * w->wv [(size_t) i * kvd + j];
                }
                k [j] = acc_k;
                v [j] = acc_v;
            }
            for (int i = 0; i < hd / 2; i++) {
                double angle = (double) pos * pow (500000.0, -2.0 * i / hd);
                float c = (float) cos (angle), sn = (float) sin (angle);
                for (int h = 0; h < s->heads + s->kv_heads; h++) {
                    float *head = h < s->heads? q + h * hd: k + (h - s->heads) * hd;
                    float x0 = head [i], x1 = head [i + hd / 2];
                    head [i] = x0 * c - x1 * sn;
                    head [i + hd / 2] = x1 * c + x0 * sn;
                }
            }
            kvt_bf16_t *mine = kv + pos * kv_stride + (size_t) l * 2 * kvd;
            for (int j = 0; j < kvd; j++) {
                mine [j] = kvt_float_to_bf16 (k [j]);
                mine [kvd + j] = kvt_float_to_bf16 (v [j]);
            }
            for (int h = 0; h < s->heads; h++) {
                int g = h / (s->heads / s->kv_heads);
                float max = -INFINITY, sum = 0.0f;
                for (size_t p = 0; p <= pos; p++) {
                    const kvt_bf16_t *kp = kv + p * kv_stride + (size_t) l * 2 * kvd + g * hd;
                    float dot = q [h * hd] * kvt_bf16_to_float (kp [0]);
                    for (int d = 1; d < hd; d++)
                        dot += q [h * hd + d] * kvt_bf16_to_float (kp [d]);
                    sc [p] = dot * (1.0f / sqrtf ((float) hd));
                    max = sc [p] > max? sc [p]: max;
                }
                for (size_t p = 0; p <= pos; p++) {
                    sc [p] = expf (sc [p] - max);
                    sum += sc [p];
                }
                for (int d = 0; d < hd; d++) {
                    float acc = 0.0f;
                    for (size_t p = 0; p <= pos; p++)
                        acc += sc [p] * kvt_bf16_to_float (
                            kv [p * kv_stride + (size_t) l * 2 * kvd + kvd + g * hd + d]);
                    att [h * hd + d] = acc / sum;
                }
            }
            for (int j = 0; j < hidden; j++) {
                float acc = 0.0f;
                for (int i = 0; i < qd; i++)
                    acc += att [i] * w->wo [(size_t) i * hidden + j];
                x [j] += acc;
            }
            kvt_model_rmsnorm (xn, x, w->mlp_norm, hidden);
            for (int j = 0; j < s->intermediate; j++) {
                float gate = 0.0f, up = 0.0f;
                for (int i = 0; i < hidden; i++) {
                    gate += xn [i] * w->w_gate [(size_t) i * s->intermediate + j];
                    up += xn [i] * w->w_up [(size_t) i * s->intermediate + j];
                }
                hmid [j] = gate / (1.0f + expf (-gate)) * up;
            }
            for (int j = 0; j < hidden; j++) {
                float acc = 0.0f;
                for (int i = 0; i < s->intermediate; i++)
                    acc += hmid [i] * w->w_down [(size_t) i * hidden + j];
                x [j] += acc;
            }
        }
    }
    kvt_model_rmsnorm (xn, x, m->final_norm, hidden);
    for (int j = 0; j < s->vocab; j++) {
        float acc = 0.0f;
        for (int i = 0; i < hidden; i++)
            acc += xn [i] * m->lm_head [(size_t) i * s->vocab + j];
        logits [j] = acc;
    }
    free (sc);
    free (hmid);
    free (att);
    free (v);
    free (k);
    free (q);
    free (xn);
    free (x);
}

//  Pseudo-random prompt of 'count' tokens below 'vocab'.
static void
t_prompt (uint32_t *tokens, size_t count, int vocab, uint64_t seed)
{
    for (size_t i = 0; i < count; i++)
        tokens [i] = (uint32_t) (kvt_splitmix64 (&seed) % (uint64_t) vocab);
}

//  'count' blocks of 'bytes' in one allocation, filled with 'fill', plus
//  the pointer table generate takes. Free both with free ().
static uint8_t *
t_blocks_new (size_t count, size_t bytes, int fill, void ***table_p)
{
    uint8_t *data = (uint8_t *) kvt_zmalloc (count * bytes);
    memset (data, fill, count * bytes);
    void **table = (void **) kvt_zmalloc ((count + 1) * sizeof (void *));
    for (size_t b = 0; b < count; b++)
        table [b] = data + b * bytes;
    *table_p = table;
    return data;
}

//  Run 'count' prompt tokens with cached_blocks = 0, then with every
//  cached_blocks = 1..full fed from the first run's blocks: same output
//  tokens, byte-identical blocks, cached blocks untouched. Copies the first
//  run's tokens to 'out' (room for new_count) and returns its blocks.
static uint8_t *
t_check_prefix_cache (kvt_model_t *m, const uint32_t *prompt, size_t count,
                      size_t new_count, uint32_t *out, bool verbose)
{
    kvt_block_shape_t bs = kvt_model_block_shape (m);
    const size_t bytes = kvt_block_bytes (&bs);
    const size_t full = count / (size_t) bs.block_tokens;
    void **table0, **table;
    uint8_t *first = t_blocks_new (full, bytes, 0xA5, &table0);
    int64_t ttft = -1;
    int rc = kvt_model_generate (m, prompt, count, table0, 0, new_count, out, &ttft);
    assert (rc == 0);
    assert (ttft >= 0);
    //  Every written block was overwritten: no 0xA5 run survives in it
    for (size_t b = 0; b < full; b++) {
        uint8_t fill [8];
        memset (fill, 0xA5, sizeof (fill));
        assert (memcmp (first + b * bytes, fill, sizeof (fill)) != 0);
    }
    uint32_t *again = (uint32_t *) kvt_zmalloc ((new_count + 1) * sizeof (uint32_t));
    for (size_t cached = 0; cached <= full; cached++) {
        uint8_t *data = t_blocks_new (full, bytes, 0x5A, &table);
        memcpy (data, first, cached * bytes);
        rc = kvt_model_generate (m, prompt, count, table, cached, new_count, again, &ttft);
        assert (rc == 0);
        assert (memcmp (again, out, new_count * sizeof (uint32_t)) == 0);
        assert (memcmp (data, first, full * bytes) == 0);
        if (verbose)
            printf ("\n   prompt %zu, cached %zu/%zu: ttft %" PRId64 " us", count, cached,
                    full, ttft);
        free (table);
        free (data);
    }
    free (again);
    free (table0);
    return first;
}

//  --------------------------------------------------------------------------
//  Selftest

int
kvt_model_test (bool verbose)
{
    //  @selftest
    kvt_model_shape_t shape = {
        .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 16, .hidden = 64,
        .intermediate = 172, .vocab = 512, .block_tokens = 16, .seed = 42
    };
    kvt_model_t *model = kvt_model_new (&shape);
    assert (model);
    kvt_block_shape_t block_shape = kvt_model_block_shape (model);
    assert (block_shape.layers == 2 && block_shape.kv_heads == 2);
    assert (block_shape.head_dim == 16 && block_shape.block_tokens == 16);
    assert (block_shape.dtype_bytes == 2);
    const size_t block_bytes = kvt_block_bytes (&block_shape);

    //  (1) Prefix cache: 70 tokens = 4 full blocks + 6 in scratch; the
    //  cached/computed split crosses the 32-token chunks at every offset
    uint32_t prompt [200];
    t_prompt (prompt, 200, shape.vocab, 7);
    uint32_t out [8], out2 [8];
    uint8_t *blocks = t_check_prefix_cache (model, prompt, 70, 8, out, verbose);

    //  The model matches a plain reference: logits of the last fed token
    //  and the K/V of every full block
    {
        uint32_t fed [77];
        memcpy (fed, prompt, 70 * sizeof (uint32_t));
        memcpy (fed + 70, out, 7 * sizeof (uint32_t));
        float *ref = (float *) kvt_zmalloc (shape.vocab * sizeof (float));
        size_t kv_stride = (size_t) shape.layers * 2 * model->kv_dim;
        kvt_bf16_t *kv = (kvt_bf16_t *) kvt_zmalloc (77 * kv_stride * sizeof (kvt_bf16_t));
        t_reference (model, fed, 77, ref, kv);
        //  model->logits still holds the last decode step's logits
        int best = 0;
        for (int id = 0; id < shape.vocab; id++) {
            float diff = fabsf (ref [id] - model->logits [id]);
            assert (diff <= 1e-3f + 1e-3f * fabsf (ref [id]));
            best = ref [id] > ref [best]? id: best;
        }
        assert ((uint32_t) best == out [7]);
        size_t mismatches = 0;
        for (size_t pos = 0; pos < 64; pos++)
            for (int l = 0; l < shape.layers; l++)
                for (int kvi = 0; kvi < 2; kvi++)
                    for (int g = 0; g < shape.kv_heads; g++)
                        for (int d = 0; d < shape.head_dim; d++) {
                            const uint8_t *block = blocks + (pos / 16) * block_bytes;
                            float got = kvt_bf16_to_float (kvt_model_get_bf16 (block,
                                kvt_model_block_index (&shape, l, kvi, g, (int) (pos % 16), d)));
                            float want = kvt_bf16_to_float (kv [pos * kv_stride
                                + (size_t) (l * 2 + kvi) * model->kv_dim + g * 16 + d]);
                            if (got != want) {
                                mismatches++;
                                assert (fabsf (got - want) <= 1e-2f * fabsf (want) + 1e-3f);
                            }
                        }
        if (verbose)
            printf ("\n   reference: %zu bf16 K/V values off by one rounding", mismatches);
        free (kv);
        free (ref);
    }

    //  A cached block is really read: corrupting it changes what follows
    {
        void **table;
        uint8_t *data = t_blocks_new (4, block_bytes, 0, &table);
        memcpy (data, blocks, block_bytes);
        for (size_t i = 1; i < block_bytes / 2; i += 6)
            data [i] ^= 0x40;       //  Exponent bits of layer 0's K and V
        int rc = kvt_model_generate (model, prompt, 70, table, 1, 8, out2, NULL);
        assert (rc == 0);
        assert (memcmp (data, blocks, block_bytes) != 0);           //  Left as given
        assert (memcmp (data + block_bytes, blocks + block_bytes, 3 * block_bytes) != 0);
        free (table);
        free (data);
    }

    //  max_new_tokens = 0 still writes the same blocks
    {
        void **table;
        uint8_t *data = t_blocks_new (4, block_bytes, 0, &table);
        int64_t ttft = -1;
        int rc = kvt_model_generate (model, prompt, 70, table, 0, 0, NULL, &ttft);
        assert (rc == 0 && ttft >= 0);
        assert (memcmp (data, blocks, 4 * block_bytes) == 0);
        free (table);
        free (data);
    }

    //  (5) Exact multiple of block_tokens, fully cached: the last token is
    //  recomputed into scratch and its block left alone
    uint32_t out_exact [5];
    uint8_t *exact = t_check_prefix_cache (model, prompt, 64, 5, out_exact, verbose);
    assert (memcmp (exact, blocks, 4 * block_bytes) == 0);      //  Same prefix
    free (exact);

    //  A prompt shorter than one block, and a one-token prompt
    uint32_t out_short [3];
    free (t_check_prefix_cache (model, prompt, 5, 3, out_short, verbose));
    free (t_check_prefix_cache (model, prompt, 1, 3, out_short, verbose));

    //  (3) Bad input
    {
        void **table;
        uint8_t *data = t_blocks_new (4, block_bytes, 0, &table);
        uint32_t bad [70];
        memcpy (bad, prompt, sizeof (bad));
        bad [69] = (uint32_t) shape.vocab;
        assert (kvt_model_generate (model, prompt, 0, table, 0, 1, out2, NULL) == -EINVAL);
        assert (kvt_model_generate (model, NULL, 70, table, 0, 1, out2, NULL) == -EINVAL);
        assert (kvt_model_generate (model, bad, 70, table, 0, 1, out2, NULL) == -EINVAL);
        assert (kvt_model_generate (model, prompt, 70, table, 5, 1, out2, NULL) == -EINVAL);
        assert (kvt_model_generate (model, prompt, 70, NULL, 0, 1, out2, NULL) == -EINVAL);
        assert (kvt_model_generate (model, prompt, 70, table, 0, 1, NULL, NULL) == -EINVAL);
        table [2] = NULL;
        assert (kvt_model_generate (model, prompt, 70, table, 0, 1, out2, NULL) == -EINVAL);
        assert (kvt_model_generate (model, prompt, 15, NULL, 0, SIZE_MAX / 2, out2, NULL)
                == -ENOMEM);        //  Scratch for that many tokens cannot exist
        //  A prompt shorter than a block needs no block table at all
        assert (kvt_model_generate (model, prompt, 15, NULL, 0, 1, out2, NULL) == 0);
        free (table);
        free (data);

        kvt_model_shape_t wrong = shape;
        wrong.kv_heads = 3;
        assert (kvt_model_new (&wrong) == NULL);
        wrong = shape;
        wrong.head_dim = 15;
        wrong.hidden = 60;
        assert (kvt_model_new (&wrong) == NULL);
        wrong = shape;
        wrong.vocab = 1;
        assert (kvt_model_new (&wrong) == NULL);
        wrong = shape;
        wrong.layers = 0;
        assert (kvt_model_new (&wrong) == NULL);
        wrong = shape;
        wrong.block_tokens = -1;
        assert (kvt_model_new (&wrong) == NULL);
    }

    //  (2) Another seed is another model: other tokens, other KV
    {
        kvt_model_shape_t other = shape;
        other.seed = 43;
        kvt_model_t *model2 = kvt_model_new (&other);
        assert (model2);
        uint8_t *blocks2 = t_check_prefix_cache (model2, prompt, 70, 8, out2, false);
        assert (memcmp (out, out2, sizeof (out)) != 0);
        assert (memcmp (blocks, blocks2, 4 * block_bytes) != 0);
        free (blocks2);
        kvt_model_destroy (&model2);
    }

    //  (4) GQA ratio 1 (MHA), and 4 with blocks that do not divide the chunk
    {
        kvt_model_shape_t mha = shape;
        mha.kv_heads = 4;
        kvt_model_t *model2 = kvt_model_new (&mha);
        assert (model2);
        free (t_check_prefix_cache (model2, prompt, 70, 4, out2, false));
        kvt_model_destroy (&model2);

        kvt_model_shape_t gqa = {
            .layers = 3, .heads = 8, .kv_heads = 2, .head_dim = 8, .hidden = 48,
            .intermediate = 96, .vocab = 300, .block_tokens = 5, .seed = 9
        };
        model2 = kvt_model_new (&gqa);
        assert (model2);
        uint32_t small [47];
        t_prompt (small, 47, gqa.vocab, 11);
        free (t_check_prefix_cache (model2, small, 47, 4, out2, false));
        free (t_check_prefix_cache (model2, small, 45, 4, out2, false));
        kvt_model_destroy (&model2);
    }

    //  (6) Batch invariance: five sequences (some cached, one all cached,
    //  one a single token) prefilled in odd slices while the others
    //  decode, joining and leaving the batch at different steps, give the
    //  tokens and blocks each gives alone. Every other cached block is
    //  streamed from a host copy: it is not touched at begin, arrives
    //  layer by layer during the prefill, and ends equal to its copy
    {
        const size_t lengths [] = { 70, 64, 1, 37, 150 };
        const size_t cached_of [] = { 0, 4, 0, 1, 3 };
        const size_t news [] = { 9, 4, 12, 1, 6 };
        uint32_t alone [5][16], batched [5][16];
        uint8_t *data [5], *data_alone [5];
        void **table [5], **table_alone [5];
        void *host_src [5][4] = { { NULL } };
        kvt_model_seq_t *seq [5];
        for (int i = 0; i < 5; i++) {
            size_t full = lengths [i] / 16;
            data_alone [i] = t_blocks_new (full, block_bytes, 0x11, &table_alone [i]);
            data [i] = t_blocks_new (full, block_bytes, 0x22, &table [i]);
            memcpy (data_alone [i], blocks, cached_of [i] * block_bytes);
            assert (cached_of [i] <= 4);
            for (size_t b = 0; b < cached_of [i]; b++)
                if (b % 2)          //  Streamed from the host copy in 'blocks'
                    host_src [i][b] = blocks + b * block_bytes;
                else                //  In place: a prefix block of 'prompt'
                    memcpy (data [i] + b * block_bytes, blocks + b * block_bytes, block_bytes);
            assert (kvt_model_generate (model, prompt, lengths [i], table_alone [i],
                                        cached_of [i], news [i], alone [i], NULL) == 0);
            assert (kvt_model_seq_begin (model, prompt, lengths [i], table [i], cached_of [i],
                                         host_src [i], news [i], batched [i], &seq [i]) == 0);
            for (size_t b = 1; b < cached_of [i]; b += 2)
                assert (data [i][b * block_bytes] == 0x22
                     && data [i][(b + 1) * block_bytes - 1] == 0x22);
        }
        size_t steps = 0, rows = 0;
        bool busy = true;
        for (int turn = 0; busy; turn++) {
            busy = false;
            //  Sequence i starts prefilling at turn 2i, 7 positions per turn
            for (int i = 0; i < 5; i++)
                if (seq [i] && turn >= 2 * i && kvt_model_seq_emitted (seq [i]) == 0) {
                    int left = kvt_model_seq_prefill (model, seq [i], 7);
                    assert (left >= 0);
                }
            kvt_model_seq_t *batch [5];
            size_t count = 0;
            for (int i = 0; i < 5; i++)
                if (seq [i] && kvt_model_seq_decoding (seq [i]))
                    batch [count++] = seq [i];
            if (count > 0)
                assert (kvt_model_decode (model, batch, count) == 0);
            steps += count > 0;
            rows += count;
            for (int i = 0; i < 5; i++) {
                if (seq [i] && kvt_model_seq_emitted (seq [i]) == news [i])
                    kvt_model_seq_destroy (&seq [i]);
                busy = busy || seq [i];
            }
        }
        assert (rows > steps);      //  Some steps ran more than one sequence
        for (int i = 0; i < 5; i++) {
            assert (memcmp (alone [i], batched [i], news [i] * sizeof (uint32_t)) == 0);
            assert (memcmp (data [i], data_alone [i], lengths [i] / 16 * block_bytes) == 0);
            free (table [i]);
            free (data [i]);
            free (table_alone [i]);
            free (data_alone [i]);
        }
        if (verbose)
            printf ("\n   batch: %zu decode steps, %zu rows", steps, rows);

        //  Bad decode input: a sequence twice, one still prefilling, one done
        kvt_model_seq_t *a, *b;
        assert (kvt_model_seq_begin (model, prompt, 20, NULL, 0, NULL, 3, out2, &a) == -EINVAL);
        assert (kvt_model_seq_begin (model, prompt, 15, NULL, 0, NULL, 3, out2, &a) == 0);
        assert (kvt_model_seq_begin (model, prompt, 9, NULL, 0, NULL, 3, out, &b) == 0);
        kvt_model_seq_t *twice [] = { a, a };
        assert (kvt_model_decode (model, twice, 1) == -EINVAL);     //  Not prefilled
        assert (kvt_model_seq_prefill (model, a, 0) == 0);
        assert (kvt_model_seq_prefill (model, b, 4) == 5);
        assert (kvt_model_decode (model, twice, 2) == -EINVAL);
        kvt_model_seq_t *pair [] = { a, b };
        assert (kvt_model_decode (model, pair, 2) == -EINVAL);      //  b not prefilled
        assert (kvt_model_decode (model, twice, 1) == 0);
        assert (kvt_model_decode (model, twice, 1) == 0);
        assert (!kvt_model_seq_decoding (a) && kvt_model_seq_emitted (a) == 3);
        assert (kvt_model_decode (model, twice, 1) == -EINVAL);     //  Done
        kvt_model_seq_destroy (&a);
        kvt_model_seq_destroy (&b);
        kvt_model_seq_destroy (&b);
        assert (b == NULL);
    }

    //  (7) Blocks kept split by layer (static layer sharding, issue #5):
    //  layers [0, gpu) in one part, the rest in another. Whatever the
    //  split and whichever blocks were cached (in place or streamed from a
    //  host copy), the tokens are the unsplit run's and the two parts put
    //  together are its blocks, byte for byte
    {
        kvt_model_shape_t three = shape;
        three.layers = 3;
        kvt_model_t *model3 = kvt_model_new (&three);
        assert (model3);
        kvt_block_shape_t bs3 = kvt_model_block_shape (model3);
        const size_t bytes = kvt_block_bytes (&bs3), slice = bytes / 3;
        uint32_t ref_out [6], split_out [6];
        uint8_t *ref = t_check_prefix_cache (model3, prompt, 70, 6, ref_out, false);
        for (int gpu = 1; gpu <= 3; gpu++)
            for (size_t cached = 0; cached <= 4; cached += 2) {
                void **parts, **shards;
                uint8_t *part_data = t_blocks_new (4, gpu * slice, 0x33, &parts);
                uint8_t *shard_data = gpu < 3
                                    ? t_blocks_new (4, (3 - gpu) * slice, 0x44, &shards): NULL;
                if (gpu == 3)
                    shards = NULL;
                void *host_src [4] = { NULL };
                for (size_t b = 0; b < cached; b++)
                    if (b % 2)      //  Streamed layer by layer from the host copy
                        host_src [b] = ref + b * bytes;
                    else {          //  In place, split
                        memcpy (parts [b], ref + b * bytes, gpu * slice);
                        if (shards)
                            memcpy (shards [b], ref + b * bytes + gpu * slice,
                                    (3 - gpu) * slice);
                    }
                kvt_model_seq_t *seq;
                int rc = kvt_model_seq_begin_split (model3, prompt, 70, parts, shards, gpu,
                                                    cached, host_src, 6, split_out, &seq);
                assert (rc == 0);
                assert (kvt_model_seq_prefill (model3, seq, 0) == 0);
                while (kvt_model_seq_decoding (seq))
                    assert (kvt_model_decode (model3, &seq, 1) == 0);
                kvt_model_seq_destroy (&seq);
                assert (memcmp (split_out, ref_out, sizeof (ref_out)) == 0);
                for (size_t b = 0; b < 4; b++) {
                    assert (memcmp (parts [b], ref + b * bytes, gpu * slice) == 0);
                    if (shards)
                        assert (memcmp (shards [b], ref + b * bytes + gpu * slice,
                                        (3 - gpu) * slice) == 0);
                }
                free (parts);
                free (part_data);
                if (shards) {
                    free (shards);
                    free (shard_data);
                }
            }
        //  Bad split arguments
        kvt_model_seq_t *seq;
        void *one [1] = { ref };
        assert (kvt_model_seq_begin_split (model3, prompt, 16, one, NULL, 0, 0, NULL, 0, NULL,
                                           &seq) == -EINVAL);
        assert (kvt_model_seq_begin_split (model3, prompt, 16, one, NULL, 4, 0, NULL, 0, NULL,
                                           &seq) == -EINVAL);
        assert (kvt_model_seq_begin_split (model3, prompt, 16, one, NULL, 2, 0, NULL, 0, NULL,
                                           &seq) == -EINVAL);
        void *no_shard [1] = { NULL };
        assert (kvt_model_seq_begin_split (model3, prompt, 16, one, no_shard, 2, 0, NULL, 0,
                                           NULL, &seq) == -EINVAL);
        free (ref);
        kvt_model_destroy (&model3);
        if (verbose)
            printf ("\n   layer split: 1-3 of 3 layers in the first part, identical");
    }

    free (blocks);
    kvt_model_destroy (&model);
    kvt_model_destroy (&model);     //  Twice is safe
    assert (model == NULL);
    //  @end
    return 0;
}
