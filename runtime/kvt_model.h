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
    Batch invariance: many sequences run at once (kvt_model_seq_begin,
    kvt_model_seq_prefill, kvt_model_decode): a sequence's output tokens
    and blocks are the same whichever other sequences share its decode
    steps and however its prefill is cut into slices. On the CPU every
    row's arithmetic is the same whatever the row count; on the GPU every
    decode GEMM runs on KVT_MODEL_MAX_BATCH rows (padded) and decode
    attention splits each context at fixed KVT_MODEL_DECODE_SPLIT-token
    boundaries, so one sequence's numbers never depend on the batch.
    (The GPU's first token, sampled from prefill, and its decode steps
    use other GEMM shapes than the old one-row decode: GPU tokens are
    not those of earlier versions.)
    Streamed cached blocks (host_src, issue #3): a cached block may still
    lie in host memory when its sequence begins; the model copies it in
    one layer's slice at a time (a block is [layer][K,V][kv_head][token]
    [head_dim], so a layer's slice is contiguous) just before that layer
    first touches the sequence's KV: on the GPU on a copy stream with one
    event per layer that the compute stream waits on, on the CPU by
    memcpy at the same point. Tokens and blocks are the same as with the
    blocks copied in first.
    FP8 host copies (kvt_model_set_host_fp8, kvt_model_cuda_set_host_fp8;
    migration/cold_dtype = fp8): each host copy is then a block's FP8 form
    (kernels/kvt_fp8.cuh: planes x plane_elems e4m3 bytes, plane-major,
    then one float scale per plane), so layer l is the contiguous run of
    planes [l x 2 x kv_heads, (l + 1) x 2 x kv_heads) and their scales;
    the model dequantizes that run into the block's layer-l slice at the
    same point instead of copying it (kvt_fp8_dequantize on the copy
    stream, reading the mapped pinned host slots over PCIe, or
    kvt_fp8_dequantize_ref on the CPU: the same bytes), and the prefill
    overlaps the promotion as with bf16.
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

//  Say whether the host copies later sequences stream in (host_src of
//  kvt_model_seq_begin) are FP8 forms (true: migration/cold_dtype = fp8,
//  each dequantized layer by layer; see @header) or plain blocks (false,
//  the default). Applies to sequences begun after the call.
void
    kvt_model_set_host_fp8 (kvt_model_t *self, bool fp8);

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

//  --------------------------------------------------------------------------
//  Many sequences at once (continuous batching). A sequence is begun with
//  its prompt and blocks, prefilled in slices of any size, then decoded
//  one token per kvt_model_decode call, together with any other decoding
//  sequences of the same model.

#define KVT_MODEL_MAX_BATCH 64          //  Most sequences in one decode step
//  GPU decode attention: tokens per KV split. 448 is 28 16-token tiles,
//  4 for each of decode v5's 7 computing warps: every warp works the same
//  and they merge once per 448 tokens (256 gave 2-3 tiles a warp; the 8B
//  model at batch 64 ran 8.6% faster at 448, tools/bench/RESULTS.md
//  session 24). A build may set another, a multiple of 64 so that every
//  block size divides it, to measure it.
#ifndef KVT_MODEL_DECODE_SPLIT
#   define KVT_MODEL_DECODE_SPLIT 448
#endif
#if KVT_MODEL_DECODE_SPLIT <= 0 || KVT_MODEL_DECODE_SPLIT % 64 != 0
#   error "KVT_MODEL_DECODE_SPLIT must be a positive multiple of 64 (the kernels' split alignment)"
#endif

typedef struct _kvt_model_seq_t kvt_model_seq_t;

//  Begin a sequence: checks the input as kvt_model_generate does (same
//  codes), copies 'tokens' and the block table, reads the cached blocks
//  into the sequence's own scratch. 'host_src' (NULL: none) has one entry
//  per cached block: NULL if the block already holds its KV, else a host
//  copy of it that the model copies into the block layer by layer, each
//  layer's slice just before the prefill first needs that layer (CPU twin
//  of the GPU path's streaming; with kvt_model_set_host_fp8 each is a
//  block's FP8 form, dequantized layer by layer instead); the copies are
//  borrowed until the prefill is done, and the block holds them by then.
//  -EINVAL also for an FP8 copy or block not 16-byte aligned or a shape
//  the FP8 form does not take (block_tokens x head_dim a multiple of 8). 'out_tokens' (room
//  for max_new_tokens, NULL when that is 0) is borrowed until the sequence
//  is destroyed. Returns 0 and sets *seq_p, or a negative code.
int
    kvt_model_seq_begin (kvt_model_t *self, const uint32_t *tokens, size_t token_count,
                         void *const *blocks, size_t cached_blocks, void *const *host_src,
                         size_t max_new_tokens, uint32_t *out_tokens, kvt_model_seq_t **seq_p);

//  As kvt_model_seq_begin, for blocks kept split by layer (static layer
//  sharding, tier_gpu/layer_fraction, issue #5): layers [0, gpu_layers) of
//  block b are a contiguous run of layer slices at blocks [b], layers
//  [gpu_layers, layers) at shards [b] (a layer's slice is block_bytes /
//  layers, [K,V][kv_head][token][head_dim]). Cached loads, streamed
//  layer copies (and FP8 dequantization) and prefill writes each go to the
//  layer's own part; tokens and the bytes of every layer are those of
//  kvt_model_seq_begin. gpu_layers = layers (shards may then be NULL) is
//  kvt_model_seq_begin. -EINVAL also for gpu_layers outside [1, layers]
//  or a NULL shard where one is needed.
int
    kvt_model_seq_begin_split (kvt_model_t *self, const uint32_t *tokens, size_t token_count,
                               void *const *blocks, void *const *shards, int gpu_layers,
                               size_t cached_blocks, void *const *host_src,
                               size_t max_new_tokens, uint32_t *out_tokens,
                               kvt_model_seq_t **seq_p);

//  Compute up to 'max_tokens' more prompt positions (0: all that are
//  left), writing the blocks that were not cached. When the prompt is
//  done the first output token is sampled (if max_new_tokens > 0).
//  Returns the prompt positions still to compute (0: prefill done), or
//  -ECANCELED (the cancel hook said so; the sequence is then unusable).
int
    kvt_model_seq_prefill (kvt_model_t *self, kvt_model_seq_t *seq, size_t max_tokens);

//  One decode step over 'seq_count' sequences: each must be prefilled and
//  still owe tokens (kvt_model_seq_decoding), each at most once. Feeds
//  every sequence its last output token and samples the next. Returns 0
//  or -EINVAL.
int
    kvt_model_decode (kvt_model_t *self, kvt_model_seq_t *const *seqs, size_t seq_count);

//  Output tokens written so far.
size_t
    kvt_model_seq_emitted (const kvt_model_seq_t *seq);

//  True once prefill is done and the sequence still owes output tokens.
bool
    kvt_model_seq_decoding (const kvt_model_seq_t *seq);

//  Destroy; NULL-safe, nulls the caller's pointer.
void
    kvt_model_seq_destroy (kvt_model_seq_t **seq_p);

//  --------------------------------------------------------------------------
//  The GPU path (runtime/kvt_model_cuda.c, CUDA builds only): the same
//  shape and contract, bf16 weights drawn on the device from the seed
//  (not the CPU model's numbers), KV blocks in a device slab addressed by
//  slot. Same determinism contract: output tokens and written blocks do
//  not depend on how many blocks were cached.

#define KVT_MODEL_MAX_NEW_TOKENS 4096   //  Longest decode one request may ask

//  Spare slab blocks the GPU model needs, per sequence in flight, past
//  its full blocks: its partial tail and decoded tokens, plus one copy of
//  a cached last block (an upper bound for any prompt length).
#define KVT_MODEL_CUDA_SPARE_BLOCKS(block_tokens, max_new_tokens) \
    (3 + ((size_t) (max_new_tokens) + (size_t) (block_tokens) - 1) / (size_t) (block_tokens))

//  Spare blocks one sequence of 'token_count' prompt tokens and
//  'max_new_tokens' needs exactly: the blocks past its full ones up to its
//  last decoded token, plus one copy of a cached last block. Never more
//  than KVT_MODEL_CUDA_SPARE_BLOCKS (block_tokens, max_new_tokens).
#define KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS(block_tokens, token_count, max_new_tokens) \
    (((size_t) (token_count) + (size_t) (max_new_tokens) + (size_t) (block_tokens) - 1) \
     / (size_t) (block_tokens) - (size_t) (token_count) / (size_t) (block_tokens) + 1)

typedef struct _kvt_model_cuda_t kvt_model_cuda_t;
typedef struct _kvt_model_cuda_seq_t kvt_model_cuda_seq_t;

//  True if the GPU path supports 'shape' (head_dim 128, block_tokens a
//  power of two, ...). Defined in every build, so the runtime can decide.
bool
    kvt_model_cuda_supports (const kvt_model_shape_t *shape);

//  Create the model on the current CUDA device. Returns NULL and logs why
//  for an invalid shape (head_dim must be 128, block_tokens a power of
//  two, plus kvt_model_new's rules) or when device memory is short.
kvt_model_cuda_t *
    kvt_model_cuda_new (const kvt_model_shape_t *shape);

//  Destroy; NULL-safe, nulls the caller's pointer. Waits for the streams
//  first: a step in flight runs to its end and its eventfd signal has
//  been written when this returns (close the fd after).
void
    kvt_model_cuda_destroy (kvt_model_cuda_t **self_p);

//  The geometry of this model's KV blocks.
kvt_block_shape_t
    kvt_model_cuda_block_shape (const kvt_model_cuda_t *self);

//  As kvt_model_set_cancel.
void
    kvt_model_cuda_set_cancel (kvt_model_cuda_t *self, bool (*cancel_fn) (void *arg), void *arg);

//  As kvt_model_set_host_fp8, for kvt_model_cuda_seq_begin's host_src:
//  'host_slot_bytes' 0 (the default) means plain blocks; else each host
//  copy is an FP8 form at the start of a host arena slot, the slots
//  'host_slot_bytes' apart (a multiple of 16 of at least the FP8 form's
//  length; the scales, at byte planes x plane_elems of each slot, are
//  read in place). Applies to sequences begun after the call.
void
    kvt_model_cuda_set_host_fp8 (kvt_model_cuda_t *self, size_t host_slot_bytes);

//  When the GPU model prefills a slice layer-major (every chunk's layer l
//  before layer l + 1) instead of chunk by chunk: never, for runs whose
//  cached layers still stream in (the default: their first layers then
//  overlap the disk, issue #4), or always (tests and A/B benches). The
//  bytes computed are the same either way.
typedef enum {
    KVT_MODEL_CUDA_LAYER_MAJOR_OFF,         //  Chunk by chunk
    KVT_MODEL_CUDA_LAYER_MAJOR_GATED,       //  A run whose layers still stream in (default)
    KVT_MODEL_CUDA_LAYER_MAJOR_ALWAYS       //  Those, and any prompt of more than one chunk
} kvt_model_cuda_layer_major_t;

void
    kvt_model_cuda_set_layer_major (kvt_model_cuda_t *self, kvt_model_cuda_layer_major_t when);

//  Static layer sharding (tier_gpu/layer_fraction < 1, issue #5): keep
//  layers [gpu_layers, layers) of every block of the slab in 'shard'
//  instead, block b's at shard + b x shard_bytes (a contiguous run of
//  layer slices), mapped pinned host memory the device reaches (e.g. a
//  registered arena): decode and prefill write those layers' K/V there
//  over PCIe and (staging, the default: kvt_model_cuda_set_shard_staging)
//  read copies of each layer's slices made ahead of it on the copy
//  engines, or read them in place, streamed host copies (and FP8
//  dequantization) land there, and the slab's blocks need hold only
//  layers [0, gpu_layers) (block_bytes of the begin calls at least that).
//  Every block id, spares included, needs its shard block. gpu_layers =
//  layers turns it off. Set it before the first sequence is begun.
//  Returns 0, -EINVAL (gpu_layers outside [1, layers], a shard that is
//  NULL, not 16-byte aligned, or blocks too small or not a multiple of 16)
//  or KVT_ECUDA (no staging stream or events).
int
    kvt_model_cuda_set_layer_shard (kvt_model_cuda_t *self, int gpu_layers, void *shard,
                                    size_t shard_bytes);

//  Decode steps and prefill chunks of a sharded model
//  (compute/shard_staging, #5): 'on' (the default) copies each host-held
//  layer's slices of the step's blocks into a device ring on a copy
//  stream ahead of compute, and attention reads them there (a decode
//  step stays a CUDA graph where a buffer per host-held layer fits,
//  kvt_model_cuda_stage.c); off, attention reads the shard in place
//  over PCIe. Same tokens and KV bytes either way.
void
    kvt_model_cuda_set_shard_staging (kvt_model_cuda_t *self, bool on);

//  As kvt_model_generate, over a device slab of equal blocks of
//  'block_bytes' at 'slab': 'slots' has one block id per full block of the
//  prompt, 'spare' 'spare_count' ids the model may overwrite for its
//  scratch (at least KVT_MODEL_CUDA_SPARE_BLOCKS (block_tokens,
//  max_new_tokens)). Returns 0, -EINVAL (also for too few spares or a
//  slot past INT32_MAX), -ECANCELED, -ENOMEM or KVT_ECUDA.
int
    kvt_model_cuda_generate (kvt_model_cuda_t *self, const uint32_t *tokens,
                             size_t token_count, void *slab, size_t block_bytes,
                             const uint64_t *slots, size_t cached_blocks,
                             const uint64_t *spare, size_t spare_count,
                             size_t max_new_tokens, uint32_t *out_tokens, int64_t *ttft_us);

//  As kvt_model_seq_begin, over the device slab: 'slots' and 'spare' as
//  kvt_model_cuda_generate ('spare_count' at least
//  KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS; the sequence owns those spares until
//  destroyed). Every sequence of one decode step must use the same slab
//  and block_bytes. 'host_src' (NULL: none) as kvt_model_seq_begin, each
//  entry a device-reachable pinned host address (mapped, registered
//  memory under UVA, e.g. a block of the host tier's arena): the copies
//  are queued at once on the model's copy stream, one launch per layer
//  (copy kernel for slices under 64 KiB, copy engines above), with one
//  event per layer; the compute stream waits on layer l's event before
//  its first kernel that touches layer l's KV, never the host. With
//  kvt_model_cuda_set_host_fp8 each layer is one kvt_fp8_dequantize launch
//  instead (every block's layer-l planes and scales, read from the mapped
//  host slots), then layer l's event; the host copies must then be slots
//  of one arena (a fixed host_slot_bytes apart, 16-byte aligned), else
//  -EINVAL. The copies are done when the prefill returns 0. Returns 0,
//  -EINVAL, -ENOMEM or KVT_ECUDA.
int
    kvt_model_cuda_seq_begin (kvt_model_cuda_t *self, const uint32_t *tokens,
                              size_t token_count, void *slab, size_t block_bytes,
                              const uint64_t *slots, size_t cached_blocks,
                              const void *const *host_src,
                              const uint64_t *spare, size_t spare_count,
                              size_t max_new_tokens, uint32_t *out_tokens,
                              kvt_model_cuda_seq_t **seq_p);

//  As kvt_model_seq_prefill; also KVT_ECUDA, -EBUSY. A step launched and
//  finished at once: returns after the stream drained.
int
    kvt_model_cuda_seq_prefill (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq,
                                size_t max_tokens);

//  As kvt_model_decode, at most KVT_MODEL_MAX_BATCH sequences; also
//  KVT_ECUDA, -EBUSY. A step launched and finished at once: returns after
//  the stream drained.
int
    kvt_model_cuda_decode (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs,
                           size_t seq_count);

//  Queue one step on the model's stream and return without waiting for
//  it (issue #3): a prefill slice of up to 'max_tokens' positions of
//  'prefill' (NULL: none; 0: all that are left), then one decode step over
//  'seqs' (as kvt_model_cuda_decode; seq_count may be 0), then the copy of
//  the sampled tokens into pinned host memory, then, when 'event_fd' >= 0,
//  a host function that adds 1 to that eventfd (from a CUDA thread). The
//  sequences' output tokens are not written until
//  kvt_model_cuda_step_finish; the prefill's position already counts the
//  slice. One step in flight per model. Returns 0 once queued (the fd
//  will fire), -EBUSY (a step is in flight), -EINVAL, -ECANCELED (the
//  cancel hook said so), -ENOMEM or KVT_ECUDA; on an error nothing is in
//  flight, the fd does not fire, and the step's sequences are unusable.
int
    kvt_model_cuda_step_launch (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *prefill,
                                size_t max_tokens, kvt_model_cuda_seq_t *const *seqs,
                                size_t seq_count, int event_fd);

//  Finish the step in flight: waits for the stream (no wait once the fd
//  fired), writes each sequence's sampled token and advances it. Returns
//  the prefill's prompt positions still to compute (0: done or none),
//  KVT_ECUDA (the step's sequences are unusable), or -EINVAL when no step
//  is in flight. A sequence destroyed meanwhile is skipped.
int
    kvt_model_cuda_step_finish (kvt_model_cuda_t *self);

//  True while a step is launched and not finished.
bool
    kvt_model_cuda_step_busy (const kvt_model_cuda_t *self);

//  As kvt_model_seq_emitted.
size_t
    kvt_model_cuda_seq_emitted (const kvt_model_cuda_seq_t *seq);

//  As kvt_model_seq_decoding.
bool
    kvt_model_cuda_seq_decoding (const kvt_model_cuda_seq_t *seq);

//  Destroy; NULL-safe, nulls the caller's pointer. Waits for the model's
//  streams (a step in flight included: its finish then skips this
//  sequence), so the sequence's spares (and host copies) may be given to
//  another at once.
void
    kvt_model_cuda_seq_destroy (kvt_model_cuda_seq_t **seq_p);

//  Layer gates (issue #4; kvt_model_cuda_gate.c): a sequence's streamed
//  copies of layer l wait, on the GPU's copy stream, until a pinned host
//  word the caller writes reads >= l + 1 (cuStreamWaitValue32), so a run
//  starts while its later layers are still coming from disk. A pool of
//  gates (NULL from _new where the driver cannot wait on a value: the
//  caller then holds the run until all its layers are there).
typedef struct _kvt_model_cuda_gates_t kvt_model_cuda_gates_t;
#define KVT_MODEL_CUDA_GATE_OPEN 0x7FFFFFFFu   //  Word value that lets every layer through

//  Create a pool of 256 gates, or NULL (no wait-value, or CUDA failed).
kvt_model_cuda_gates_t *
    kvt_model_cuda_gates_new (void);

//  Open every gate, wait for the device, free the pool; NULL-safe.
void
    kvt_model_cuda_gates_destroy (kvt_model_cuda_gates_t **self_p);

//  Take a gate, closed (no layer ready). Returns its id or -ENOSPC.
int
    kvt_model_cuda_gate_open (kvt_model_cuda_gates_t *self);

//  Let layers [0, layers_ready) through (KVT_MODEL_CUDA_GATE_OPEN: all,
//  e.g. on abort: the GPU must never wait forever). Never lowers it.
void
    kvt_model_cuda_gate_set (kvt_model_cuda_gates_t *self, int gate, uint32_t layers_ready);

//  Give a gate back (opened) once its sequence is destroyed.
void
    kvt_model_cuda_gate_close (kvt_model_cuda_gates_t *self, int gate);

//  The next kvt_model_cuda_seq_begin on this thread gates its streamed
//  copies on 'gate'; -1 (or a NULL pool) disarms. Arm just before
//  seq_begin, disarm just after.
void
    kvt_model_cuda_gate_arm (kvt_model_cuda_gates_t *self, int gate);

#ifdef __cplusplus
}
#endif
#endif
