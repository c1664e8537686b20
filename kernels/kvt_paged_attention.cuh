/*  =========================================================================
    kvt_paged_attention - one decode step of attention over a paged KV cache

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    One query token per sequence attends to that sequence's cached keys and
    values, read through a per-sequence block table. bf16 or fp16; GQA with
    any heads / kv_heads ratio; head_dim 64 or 128; any power-of-two block
    size; ragged lengths, a partly filled last block, tables in any order.
    K and V are addressed through a base pointer and three byte strides, so
    the same kernel reads the runtime's block layout
        block = [layer][K=0,V=1][kv_head][token][head_dim]
    (k = slab + ((layer * 2 + 0) * kv_heads) * block_tokens * head_dim * 2,
     block_stride = kvt_block_bytes (shape), head_stride = block_tokens *
     head_dim * 2, token_stride = head_dim * 2) and a vLLM-like
    [blocks, kv_heads, block_tokens, head_dim] layout.
    Query heads of one KV head (up to 16 per CTA) share every K/V byte read.
    Long contexts and small batches split each sequence's tokens over
    several CTAs (split-KV); a second kernel merges the partial results by
    their log-sum-exp. The split count is chosen from the SM count unless
    the caller sets it; split-KV needs a workspace from the caller.
@discuss
    A sequence of length 0 gets a zero output. Tokens at or past
    seq_lens [s] are never read, so table entries past the last block may
    hold anything (-1 by convention).
@end
*/

#ifndef KVT_PAGED_ATTENTION_CUH_INCLUDED
#define KVT_PAGED_ATTENTION_CUH_INCLUDED

#include "kvt_kernels.cuh"

#define KVT_PAGED_ATTENTION_VARIANTS 5  //  Kernel versions kept for benchmarks

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of q, k, v and out
    const void *q;                  //  [seqs, heads, head_dim]
    const void *k;                  //  K of token t of kv head h in block b at
                                    //  k + b*block_stride + h*head_stride + (t%bs)*token_stride
    const void *v;                  //  V, same strides as k
    int64_t block_stride_bytes;     //  Bytes between consecutive blocks
    int64_t head_stride_bytes;      //  Bytes between kv heads of one block
    int64_t token_stride_bytes;     //  Bytes between tokens of one head (>= head_dim * 2)
    const int32_t *block_table;     //  [seqs, max_blocks_per_seq] block ids
    const int32_t *seq_lens;        //  [seqs] tokens per sequence, <= max_seq_len
    void *out;                      //  [seqs, heads, head_dim]
    int seqs;                       //  Sequences in this batch
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads; heads % kv_heads == 0
    int head_dim;                   //  64 or 128
    int block_tokens;               //  Tokens per block, a power of two
    int max_blocks_per_seq;         //  Row length of block_table
    int max_seq_len;                //  Upper bound of seq_lens (sizes the split)
    float scale;                    //  Usually 1 / sqrt (head_dim)
    int splits;                     //  KV splits per sequence; 0 = choose from SM count
    void *workspace;                //  Device scratch for splits > 1 (GPU only)
    size_t workspace_bytes;         //  Its size; see kvt_paged_attention_workspace_bytes
    int variant;                    //  Kernel version, for benchmarks and tests: 0 = the
                                    //  default (v4 or v5 on sm_90+, see total_tokens;
                                    //  else v2), 1 = v2
                                    //  (loads into registers), 2 = v3 (a bulk-copy
                                    //  ring a warp), 3 = v4 (v3 warp-specialised),
                                    //  4 = v5 (v4 persistent, the batch's tiles cut
                                    //  evenly over the SMs); 2 to 4 are v2 below
                                    //  sm_90. kvt_paged_attention.cu
    int64_t total_tokens;           //  Sum of seq_lens if the caller knows it, else 0.
                                    //  Variant 0 on sm_90+ runs v5 for a batch of
                                    //  several sequences whose total is unknown or under
                                    //  90% of seqs x max_seq_len (lengths differ: v4's
                                    //  CTA a (sequence, KV head, split) would wait on the
                                    //  longest), else v4; a forced split count runs v5
                                    //  cut at the splits, which gives v4's bits (the
                                    //  model's batch-invariant decode)
} kvt_paged_attention_args_t;

//  Check the shape: returns 0, or -EINVAL for an argument set that no
//  path supports (NULL pointers, head_dim other than 64/128, block_tokens
//  not a power of two, heads not a multiple of kv_heads, strides that are
//  not multiples of 16 bytes, a variant out of range).
int
    kvt_paged_attention_check (const kvt_paged_attention_args_t *args);

//  Return the split count the GPU path uses for 'args' on a device that
//  runs 'cta_slots' decode CTAs at once: args->splits if set, else as many
//  as fill those slots at most once, with at least 256 tokens per split.
int
    kvt_paged_attention_splits (const kvt_paged_attention_args_t *args, int cta_slots);

//  Return the workspace bytes needed with 'splits' KV splits (0 if 1).
size_t
    kvt_paged_attention_workspace_bytes (const kvt_paged_attention_args_t *args, int splits);

//  CPU reference on host pointers: plain loops, fp32 accumulation, natural
//  exp, output rounded once to the dtype. Returns 0 or -EINVAL. Slow on purpose.
int
    kvt_paged_attention_ref (const kvt_paged_attention_args_t *args);

#ifdef KVT_KERNELS_GPU
//  Queue the decode kernel (and the merge kernel when split, or always
//  after v5) on 'stream' and return at once. Pointers are device-
//  accessible. When args->splits is 0 the split count (or v5) comes from
//  the current device (see kvt_paged_attention_plan); args->workspace must
//  hold kvt_paged_attention_workspace_need (args). Returns 0, -EINVAL for
//  an unsupported shape or a short workspace, or KVT_ECUDA.
int
    kvt_paged_attention (const kvt_paged_attention_args_t *args, cudaStream_t stream);

//  Return the split count kvt_paged_attention will use on the current
//  device, or a negative code if the device cannot be queried.
int
    kvt_paged_attention_plan (const kvt_paged_attention_args_t *args);

//  Return the workspace bytes kvt_paged_attention needs for 'args' on the
//  current device (0 if none), or a negative code if the device cannot be
//  queried. It covers every variant: v5's (variant 4) does not depend on
//  the split count or the lengths, only on seqs, head_dim and the device.
int64_t
    kvt_paged_attention_workspace_need (const kvt_paged_attention_args_t *args);
#endif

#ifdef __cplusplus
}
#endif
#endif
