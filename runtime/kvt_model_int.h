/*  =========================================================================
    kvt_model_int - what the CPU model's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The CPU model (kvt_model.h) is one class in three files: kvt_model.c
    (weights, the model's life, the arithmetic: matmul, RMSNorm, RoPE,
    attention over the per-sequence K/V mirror, a forward chunk of rows,
    sampling), kvt_model_seq.c (the sequence API: begin, prefill slices,
    batched decode steps, kvt_model_generate) and kvt_model_test.c (a plain
    reference model and the selftest against it). This header is for
    those files only.
@end
*/

#ifndef KVT_MODEL_INT_H_INCLUDED
#define KVT_MODEL_INT_H_INCLUDED

#include "kvt_classes.h"
#include "kvt_dtype.h"
#include "kvt_fp8.cuh"

#define KVT_MODEL_CHUNK      32         //  Prompt tokens per forward chunk
#define KVT_MODEL_ROPE_THETA 500000.0   //  Llama 3 RoPE base
#define KVT_MODEL_NORM_EPS   1e-5f      //  RMSNorm epsilon
#define KVT_MODEL_MAX_DIM    (1 << 20)  //  Largest accepted single dimension
#define KVT_MODEL_MAX_WEIGHTS ((double) (1u << 31))  //  Largest weight count

//  --------------------------------------------------------------------------
//  Structure of one transformer layer's weights (fp32 holding bf16 values)

typedef struct {
    float *attn_norm;               //  [hidden] RMSNorm weight before attention
    float *wq;                      //  [hidden][heads * head_dim]
    float *wk;                      //  [hidden][kv_heads * head_dim]
    float *wv;                      //  [hidden][kv_heads * head_dim]
    float *wo;                      //  [heads * head_dim][hidden]
    float *mlp_norm;                //  [hidden] RMSNorm weight before the MLP
    float *w_gate;                  //  [hidden][intermediate]
    float *w_up;                    //  [hidden][intermediate]
    float *w_down;                  //  [intermediate][hidden]
} kvt_model_layer_t;

//  --------------------------------------------------------------------------
//  Structure of our class

struct _kvt_model_t {
    kvt_model_shape_t shape;        //  Validated copy of the caller's shape
    bool (*cancel_fn) (void *arg);  //  Asked between chunks: stop now?
    void *cancel_arg;               //  Its argument
    int q_dim;                      //  heads * head_dim
    int kv_dim;                     //  kv_heads * head_dim
    int group;                      //  Query heads per KV head
    float *embed;                   //  [vocab][hidden]
    kvt_model_layer_t *layer;               //  [layers]
    float *final_norm;              //  [hidden]
    float *lm_head;                 //  [hidden][vocab]
    double *rope_freq;              //  [head_dim / 2] theta^(-2i / head_dim)
    uint64_t steps;                 //  Decode steps run (stamps their sequences)
    bool host_fp8;                  //  Host copies (host_src) are FP8 forms (kvt_fp8.cuh)
    //  Activations of one chunk of rows (prefill of one sequence, or one
    //  decode row per sequence)
    float *x;                       //  [CHUNK][hidden] residual stream
    float *xn;                      //  [CHUNK][hidden] normalised stream
    float *q;                       //  [CHUNK][q_dim]
    float *k;                       //  [CHUNK][kv_dim]
    float *v;                       //  [CHUNK][kv_dim]
    float *att;                     //  [CHUNK][q_dim] attention output
    float *proj;                    //  [CHUNK][hidden] Wo or W_down output
    float *gate;                    //  [CHUNK][intermediate]
    float *up;                      //  [CHUNK][intermediate]
    float *rope_cos;                //  [CHUNK][head_dim / 2]
    float *rope_sin;                //  [CHUNK][head_dim / 2]
    float *logits;                  //  [CHUNK][vocab]
    //  The K/V mirror of the last sequence destroyed, kept for the next
    //  one (kvt_model_seq_reserve): freeing and mapping a large mirror per
    //  request cost 12-29 ms of munmap and TLB shootdowns a request
    float *spare_kt;                //  Its K, or NULL
    float *spare_vv;                //  Its V
    size_t spare_cap;               //  Positions it holds
};

//  One sequence: its prompt, blocks, progress and its own K/V mirror
struct _kvt_model_seq_t {
    kvt_model_t *model;             //  The model it was begun on
    uint32_t *tokens;               //  Copy of the prompt
    size_t token_count;             //  Prompt tokens
    void **blocks;                  //  Copy of the block table [full_blocks]
    void **shards;                  //  Their layers past gpu_layers [full_blocks], or NULL
    int gpu_layers;                 //  Layers in 'blocks' (the rest in 'shards'; issue #5)
    size_t slice_bytes;             //  One layer's slice of a block
    size_t full_blocks;             //  Full blocks of the prompt
    size_t cached_blocks;           //  Leading blocks only read
    void **host_src;                //  [cached_blocks] host copy still to move in, or NULL
    size_t streamed_blocks;         //  Cached blocks that arrive layer by layer
    int layers_streamed;            //  Layers whose streamed slices are in place
    bool host_fp8;                  //  Its host copies are FP8 forms (dequantized per layer)
    size_t max_new;                 //  Output tokens to produce
    uint32_t *out;                  //  Caller's output array (borrowed)
    size_t emitted;                 //  Output tokens written so far
    size_t pos;                     //  Next prompt position to compute
    size_t kv_cap;                  //  Positions the mirror holds (multiple of 8)
    float *kt;                      //  [layer][kv_head][kv_cap/8][head_dim][8] K, widened bf16
    float *vv;                      //  [layer][kv_head][kv_cap][head_dim] V, widened bf16
    float *scores;                  //  [kv_cap] attention weights of one head
    uint64_t stamp;                 //  Last decode step that took it (duplicate check)
};

//  One row of a forward chunk
typedef struct {
    kvt_model_seq_t *seq;           //  Whose row
    size_t pos;                     //  Its position
    uint32_t token;                 //  Token fed at that position
    uint8_t *dest;                  //  Block to write its K/V into, or NULL
    uint8_t *dest_shard;            //  Its layers past gpu_layers (layer sharding), or NULL
} kvt_model_row_t;

//  Start of layer 'l''s slice of a block of 'seq' kept as 'block' (layers
//  [0, gpu_layers)) and 'shard' (the others; static layer sharding, issue
//  #5). A layer's slice is [K,V][kv_head][token][head_dim]: index it with
//  kvt_model_block_index (shape, 0, ...).
static inline uint8_t *
kvt_model_seq_slice (const kvt_model_seq_t *seq, void *block, void *shard, int l)
{
    return l < seq->gpu_layers? (uint8_t *) block + (size_t) l * seq->slice_bytes
                              : (uint8_t *) shard + (size_t) (l - seq->gpu_layers)
                                                    * seq->slice_bytes;
}

//  Store/load one bf16 through memcpy: caller blocks need no alignment.
static inline void
kvt_model_put_bf16 (uint8_t *base, size_t index, kvt_bf16_t value)
{
    memcpy (base + index * 2, &value, 2);
}

//  Load the bf16 at 'index' of a caller block.
static inline kvt_bf16_t
kvt_model_get_bf16 (const uint8_t *base, size_t index)
{
    kvt_bf16_t value;
    memcpy (&value, base + index * 2, 2);
    return value;
}

//  Index of (layer, K=0/V=1, kv_head, token, d) inside one block.
static inline size_t
kvt_model_block_index (const kvt_model_shape_t *shape, int layer, int kv, int kv_head,
                       int token, int d)
{
    return ((((size_t) layer * 2 + kv) * shape->kv_heads + kv_head) * shape->block_tokens
            + token) * shape->head_dim + d;
}

//  y = x / rms (x) * weight over 'n' elements, summed in ascending order.
void
    kvt_model_rmsnorm (float *restrict y, const float *restrict x,
                       const float *restrict weight, int n);

//  Give 'seq' a K/V mirror and scores for 'positions'. Returns 0 or
//  -ENOMEM (also when that many positions cannot be sized).
int
    kvt_model_seq_reserve (kvt_model_seq_t *seq, size_t positions);

//  Widen every layer of cached block 'block_index' (seq->blocks and
//  seq->shards) into the sequence's mirror.
void
    kvt_model_load_block (kvt_model_seq_t *seq, size_t block_index);

//  Dequantize layer 'l' of the FP8 form at 'fp8' (a host copy, 16-byte
//  aligned) into 'slice', that layer's slice of a bf16 block (16-byte
//  aligned); with 'slice' NULL only check that it can. Returns 0 or
//  -EINVAL.
int
    kvt_model_fp8_layer (const kvt_model_shape_t *shape, const void *fp8, void *slice, int l);

//  Run 'rows' (at most KVT_MODEL_CHUNK) rows, each one token of one
//  sequence at its own position, through every layer (see kvt_model.c).
void
    kvt_model_forward_rows (kvt_model_t *self, const kvt_model_row_t *row, int rows);

//  Greedy tokens of rows first..first + rows - 1 of the residual stream
//  into best [0 .. rows - 1].
void
    kvt_model_sample_rows (kvt_model_t *self, int first, int rows, uint32_t *best);

#endif
