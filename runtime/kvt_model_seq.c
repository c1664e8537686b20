/*  =========================================================================
    kvt_model_seq - the CPU model's sequences: begin, prefill, batched decode

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The sequence API of the CPU model (kvt_model.h): a sequence is begun
    with its prompt and blocks, prefilled in slices of KVT_MODEL_CHUNK-row
    chunks, then decoded one token per step together with the other
    sequences of the step; kvt_model_generate is one sequence run whole.
    The arithmetic is kvt_model.c's (kvt_model_int.h).
@end
*/

#include "kvt_model_int.h"

//  Largest K/V mirror kept for the next sequence (K and V each)
#define S_SPARE_MAX_BYTES ((size_t) 256 << 20)

//  --------------------------------------------------------------------------
//  Begin a sequence: check the input, copy prompt and block table, read
//  the cached blocks that are in place into its mirror; those with a host
//  copy in 'host_src' are copied (or, FP8 forms, dequantized) in layer by
//  layer during the prefill.

int
kvt_model_seq_begin (kvt_model_t *self, const uint32_t *tokens, size_t token_count,
                     void *const *blocks, size_t cached_blocks, void *const *host_src,
                     size_t max_new_tokens, uint32_t *out_tokens, kvt_model_seq_t **seq_p)
{
    assert (self);
    return kvt_model_seq_begin_split (self, tokens, token_count, blocks, NULL,
                                      self->shape.layers, cached_blocks, host_src,
                                      max_new_tokens, out_tokens, seq_p);
}

//  --------------------------------------------------------------------------
//  Begin a sequence whose blocks are kept split by layer (static layer
//  sharding, issue #5): as kvt_model_seq_begin, each layer's slice read
//  and written in its own part.

int
kvt_model_seq_begin_split (kvt_model_t *self, const uint32_t *tokens, size_t token_count,
                           void *const *blocks, void *const *shards, int gpu_layers,
                           size_t cached_blocks, void *const *host_src,
                           size_t max_new_tokens, uint32_t *out_tokens, kvt_model_seq_t **seq_p)
{
    assert (self);
    assert (seq_p);
    *seq_p = NULL;
    const kvt_model_shape_t *shape = &self->shape;
    if (gpu_layers < 1 || gpu_layers > shape->layers)
        return -EINVAL;
    if (gpu_layers < shape->layers && !shards)
        return -EINVAL;
    const size_t block_tokens = (size_t) shape->block_tokens;
    if (!tokens || token_count == 0)
        return -EINVAL;
    if (max_new_tokens > 0 && !out_tokens)
        return -EINVAL;
    for (size_t i = 0; i < token_count; i++)
        if (tokens [i] >= (uint32_t) shape->vocab)
            return -EINVAL;
    const size_t full_blocks = token_count / block_tokens;
    if (cached_blocks > full_blocks)
        return -EINVAL;
    if (full_blocks > 0 && !blocks)
        return -EINVAL;
    for (size_t b = 0; b < full_blocks; b++)
        if (!blocks [b] || (gpu_layers < shape->layers && !shards [b]))
            return -EINVAL;
    if (token_count + max_new_tokens < token_count)
        return -EINVAL;             //  Overflow
    for (size_t b = 0; self->host_fp8 && host_src && b < cached_blocks; b++)
        if (host_src [b]
        &&  ((uintptr_t) blocks [b] % 16
             || (gpu_layers < shape->layers && (uintptr_t) shards [b] % 16)
             || kvt_model_fp8_layer (shape, host_src [b], NULL, 0) != 0))
            return -EINVAL;         //  The FP8 form cannot be dequantized there
    kvt_model_seq_t *seq = (kvt_model_seq_t *) kvt_zmalloc (sizeof (kvt_model_seq_t));
    seq->model = self;
    int rc = kvt_model_seq_reserve (seq, token_count + max_new_tokens);
    if (rc) {
        kvt_model_seq_destroy (&seq);
        return rc;
    }
    seq->tokens = (uint32_t *) kvt_zmalloc (token_count * sizeof (uint32_t));
    memcpy (seq->tokens, tokens, token_count * sizeof (uint32_t));
    seq->token_count = token_count;
    seq->blocks = (void **) kvt_zmalloc ((full_blocks + 1) * sizeof (void *));
    if (full_blocks)
        memcpy (seq->blocks, blocks, full_blocks * sizeof (void *));
    seq->full_blocks = full_blocks;
    seq->gpu_layers = gpu_layers;
    const kvt_block_shape_t geometry = kvt_model_block_shape (self);
    seq->slice_bytes = kvt_block_bytes (&geometry) / (size_t) geometry.layers;
    if (gpu_layers < shape->layers) {
        seq->shards = (void **) kvt_zmalloc ((full_blocks + 1) * sizeof (void *));
        if (full_blocks)
            memcpy (seq->shards, shards, full_blocks * sizeof (void *));
    }
    seq->cached_blocks = cached_blocks;
    seq->max_new = max_new_tokens;
    seq->out = out_tokens;
    seq->host_fp8 = self->host_fp8;
    seq->host_src = (void **) kvt_zmalloc ((cached_blocks + 1) * sizeof (void *));
    for (size_t b = 0; b < cached_blocks; b++) {
        if (host_src && host_src [b]) {
            seq->host_src [b] = host_src [b];
            seq->streamed_blocks++;
        }
        else
            kvt_model_load_block (seq, b);
    }
    if (seq->streamed_blocks == 0)
        seq->layers_streamed = shape->layers;
    //  Compute from the first uncached position, but at least the last
    //  prompt token: its hidden state gives the first output token. A
    //  recomputed cached position goes to the mirror only.
    seq->pos = cached_blocks * block_tokens;
    if (seq->pos >= token_count)
        seq->pos = token_count - 1;
    *seq_p = seq;
    return 0;
}

//  --------------------------------------------------------------------------
//  Compute up to 'max_tokens' prompt positions (0: all) in chunks of
//  KVT_MODEL_CHUNK; sample the first output token when the prompt is done.

int
kvt_model_seq_prefill (kvt_model_t *self, kvt_model_seq_t *seq, size_t max_tokens)
{
    assert (self);
    assert (seq && seq->model == self);
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    if (max_tokens == 0)
        max_tokens = SIZE_MAX;
    kvt_model_row_t row [KVT_MODEL_CHUNK];
    while (seq->pos < seq->token_count && max_tokens > 0) {
        if (self->cancel_fn && self->cancel_fn (self->cancel_arg))
            return -ECANCELED;
        size_t rows = seq->token_count - seq->pos;
        if (rows > KVT_MODEL_CHUNK)
            rows = KVT_MODEL_CHUNK;
        if (rows > max_tokens)
            rows = max_tokens;
        for (size_t r = 0; r < rows; r++) {
            const size_t pos = seq->pos + r;
            const size_t block = pos / block_tokens;
            bool writes = block >= seq->cached_blocks && block < seq->full_blocks;
            row [r] = (kvt_model_row_t) {
                .seq = seq, .pos = pos, .token = seq->tokens [pos],
                .dest = writes? (uint8_t *) seq->blocks [block]: NULL,
                .dest_shard = writes && seq->shards? (uint8_t *) seq->shards [block]: NULL };
        }
        kvt_model_forward_rows (self, row, (int) rows);
        assert (seq->layers_streamed == self->shape.layers);
        seq->pos += rows;
        max_tokens -= rows;
        if (seq->pos == seq->token_count && seq->max_new > 0) {
            kvt_model_sample_rows (self, (int) rows - 1, 1, &seq->out [0]);
            seq->emitted = 1;
        }
    }
    return (int) (seq->token_count - seq->pos < INT_MAX? seq->token_count - seq->pos: INT_MAX);
}

//  --------------------------------------------------------------------------
//  One decode step: one row per sequence, KVT_MODEL_CHUNK rows at a time.

int
kvt_model_decode (kvt_model_t *self, kvt_model_seq_t *const *seqs, size_t seq_count)
{
    assert (self);
    if (seq_count > 0 && !seqs)
        return -EINVAL;
    const uint64_t stamp = ++self->steps;
    for (size_t s = 0; s < seq_count; s++) {
        kvt_model_seq_t *seq = seqs [s];
        if (!seq || seq->model != self || !kvt_model_seq_decoding (seq)
        ||  seq->stamp == stamp)
            return -EINVAL;         //  Not ready, done, or twice in the batch
        seq->stamp = stamp;
    }
    kvt_model_row_t row [KVT_MODEL_CHUNK];
    uint32_t best [KVT_MODEL_CHUNK];
    for (size_t first = 0; first < seq_count; first += KVT_MODEL_CHUNK) {
        size_t rows = seq_count - first;
        if (rows > KVT_MODEL_CHUNK)
            rows = KVT_MODEL_CHUNK;
        for (size_t r = 0; r < rows; r++) {
            kvt_model_seq_t *seq = seqs [first + r];
            row [r] = (kvt_model_row_t) { .seq = seq, .pos = seq->token_count + seq->emitted - 1,
                                  .token = seq->out [seq->emitted - 1], .dest = NULL };
        }
        kvt_model_forward_rows (self, row, (int) rows);
        kvt_model_sample_rows (self, 0, (int) rows, best);
        for (size_t r = 0; r < rows; r++) {
            kvt_model_seq_t *seq = seqs [first + r];
            seq->out [seq->emitted++] = best [r];
        }
    }
    return 0;
}

//  Output tokens written so far.
size_t
kvt_model_seq_emitted (const kvt_model_seq_t *seq)
{
    assert (seq);
    return seq->emitted;
}

//  Prefill done and tokens still owed.
bool
kvt_model_seq_decoding (const kvt_model_seq_t *seq)
{
    assert (seq);
    return seq->pos == seq->token_count && seq->emitted > 0 && seq->emitted < seq->max_new;
}

//  Destroy; NULL-safe, nulls the caller's pointer.
void
kvt_model_seq_destroy (kvt_model_seq_t **seq_p)
{
    assert (seq_p);
    kvt_model_seq_t *seq = *seq_p;
    if (seq) {
        kvt_freen (seq->scores);
        kvt_model_t *model = seq->model;
        if (seq->kt && seq->vv
        &&  seq->kv_cap * (size_t) model->shape.layers * model->kv_dim * sizeof (float)
            <= S_SPARE_MAX_BYTES) {
            //  Kept for the next sequence (kvt_model_seq_reserve)
            free (model->spare_kt);
            free (model->spare_vv);
            model->spare_kt = seq->kt;
            model->spare_vv = seq->vv;
            model->spare_cap = seq->kv_cap;
            seq->kt = seq->vv = NULL;
        }
        kvt_freen (seq->vv);
        kvt_freen (seq->kt);
        kvt_freen (seq->host_src);
        kvt_freen (seq->shards);
        kvt_freen (seq->blocks);
        kvt_freen (seq->tokens);
        kvt_freen (seq);
        *seq_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Run one request: a sequence prefilled whole, then decoded alone.
//  Returns 0, -EINVAL, -ENOMEM or -ECANCELED. Blocks the call runs.

int
kvt_model_generate (kvt_model_t *self, const uint32_t *tokens, size_t token_count,
                    void *const *blocks, size_t cached_blocks,
                    size_t max_new_tokens, uint32_t *out_tokens, int64_t *ttft_us)
{
    assert (self);
    const int64_t start_us = kvt_now_us ();
    kvt_model_seq_t *seq;
    int rc = kvt_model_seq_begin (self, tokens, token_count, blocks, cached_blocks, NULL,
                                  max_new_tokens, out_tokens, &seq);
    if (rc)
        return rc;
    rc = kvt_model_seq_prefill (self, seq, 0);
    if (rc == 0 && ttft_us)
        *ttft_us = kvt_now_us () - start_us;
    while (rc == 0 && kvt_model_seq_decoding (seq)) {
        if (self->cancel_fn && self->cancel_fn (self->cancel_arg))
            rc = -ECANCELED;
        else
            rc = kvt_model_decode (self, &seq, 1);
    }
    kvt_model_seq_destroy (&seq);
    return rc < 0? rc: 0;
}
