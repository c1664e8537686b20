/*  =========================================================================
    kvt_model - a Llama-shaped model with seeded random weights (CPU path)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The synthetic model of the compute actor: real RMSNorm, RoPE, GQA
    attention over paged KV blocks, SwiGLU MLP and greedy sampling, with
    weights drawn from a seeded generator. Its tokens mean nothing; its
    cost and its KV are real.
@discuss
    Determinism contract: for the same weights and prompt, the output tokens
    and every byte of every full block's KV are identical whether 0, some or
    all of the prompt's blocks were supplied from cache. This is what lets
    a block read back from any tier be compared with the block computed.
    To keep it, every token is computed with the same loop order however
    the prompt is split, and attention always reads K/V rounded to bf16.
@end
*/

#ifndef KVT_MODEL_H_INCLUDED
#define KVT_MODEL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt_block.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int layers;                     //  Transformer layers
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads (GQA when < heads)
    int head_dim;                   //  Elements per head
    int hidden;                     //  Model width (usually heads x head_dim)
    int intermediate;               //  MLP width
    int vocab;                      //  Vocabulary size
    int block_tokens;               //  Tokens per KV block
    uint64_t seed;                  //  Weight seed
} kvt_model_shape_t;

typedef struct _kvt_model_t kvt_model_t;

//  Create the model with seeded random weights. Returns NULL and logs why
//  if the shape is invalid (kv_heads must divide heads, sizes > 0).
kvt_model_t *
    kvt_model_new (const kvt_model_shape_t *shape);

//  Destroy; NULL-safe, nulls the caller's pointer.
void
    kvt_model_destroy (kvt_model_t **self_p);

//  The geometry of this model's KV blocks.
kvt_block_shape_t
    kvt_model_block_shape (const kvt_model_t *self);

//  Have kvt_model_generate ask 'cancel_fn (arg)' between chunks of work and
//  return -ECANCELED when it says true (a shutdown must not wait for a
//  long prefill). The blocks of an interrupted run are not valid.
void
    kvt_model_set_cancel (kvt_model_t *self, bool (*cancel_fn) (void *arg), void *arg);

//  Run one request. 'blocks' has one pointer per full block of the prompt
//  (token_count / block_tokens). The first 'cached_blocks' already hold KV
//  and are only read; the model writes the KV of the others. The partial
//  last block lives in model scratch and is not written to 'blocks'. Then
//  greedy-decodes 'max_new_tokens' tokens into 'out_tokens'. Sets
//  *ttft_us to the time until the first output token (ttft_us may be NULL;
//  out_tokens may be NULL when max_new_tokens is 0). Returns 0, -EINVAL
//  for an empty prompt, a token outside the vocabulary, cached_blocks
//  larger than the number of full blocks, or a NULL block pointer, or
//  -ENOMEM if the model's scratch cannot grow to the request's length.
int
    kvt_model_generate (kvt_model_t *self, const uint32_t *tokens, size_t token_count,
                        void *const *blocks, size_t cached_blocks,
                        size_t max_new_tokens, uint32_t *out_tokens, int64_t *ttft_us);

#ifdef __cplusplus
}
#endif
#endif
