/*  =========================================================================
    kvt_fp8_attention - one decode step of attention over a paged e4m3 KV cache

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The decode step of kvt_paged_attention for a KV cache held in fp8
    (e4m3) with one float scale per (block, kv head) for K and one for V,
    as kvt_fp8_quantize writes them: the kernel reads the fp8 bytes and the
    scales and dequantizes in registers, so each token costs half the bytes
    of bf16. Queries and output are bf16 or fp16; GQA with any ratio;
    head_dim 64 or 128; power-of-two block sizes of at least 16 tokens;
    ragged lengths, a partly filled last block, tables in any order,
    split-KV for long contexts (same planner and workspace as
    kvt_paged_attention).
    Addressing: token t of kv head h in block b has its head_dim e4m3 bytes
    at k + b * block_stride + h * head_stride + (t % bs) * token_stride
    and its scale at k_scales [b * scale_block_stride + h * scale_head_stride]
    (V alike). For the runtime's block layout quantized by kvt_fp8
    (planes = layers * 2 * kv_heads, plane = (layer * 2 + K/V) * kv_heads
    + h, scales [slot * planes + plane]):
        k = slab + ((layer * 2 + 0) * kv_heads) * block_tokens * head_dim,
        k_scales = scales + (layer * 2 + 0) * kv_heads,
        v = ..., v_scales = scales + (layer * 2 + 1) * kv_heads,
        block_stride = fp8 slot bytes, head_stride = block_tokens * head_dim,
        token_stride = head_dim, scale_block_stride = planes,
        scale_head_stride = 1.
    The value of a K element is e4m3_to_float (byte) * k_scale; the kernel
    applies k_scale to each dot product q . k_fp8 and v_scale to each
    softmax weight, which is the same function (see kvt_fp8_attention_ref).
@discuss
    The tensor cores take fp16 operands: e4m3 widens to fp16 exactly, and
    bf16 queries are rounded to fp16 (exact for |q| in [2^-14, 65504];
    smaller components lose relative precision, larger ones overflow).
@end
*/

#ifndef KVT_FP8_ATTENTION_CUH_INCLUDED
#define KVT_FP8_ATTENTION_CUH_INCLUDED

#include "kvt_kernels.cuh"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of q and out (bf16 or fp16)
    const void *q;                  //  [seqs, heads, head_dim]
    const void *k;                  //  e4m3 K, addressed as in kvt_paged_attention
    const void *v;                  //  e4m3 V, same strides as k
    const float *k_scales;          //  K scale of (block b, kv head h) at
                                    //  k_scales [b * scale_block_stride + h * scale_head_stride]
    const float *v_scales;          //  V scales, same strides
    int64_t block_stride_bytes;     //  Bytes between consecutive blocks
    int64_t head_stride_bytes;      //  Bytes between kv heads of one block
    int64_t token_stride_bytes;     //  Bytes between tokens of one head (>= head_dim)
    int64_t scale_block_stride;     //  Floats between the scales of consecutive blocks
    int64_t scale_head_stride;      //  Floats between the scales of kv heads of one block
    const int32_t *block_table;     //  [seqs, max_blocks_per_seq] block ids
    const int32_t *seq_lens;        //  [seqs] tokens per sequence, <= max_seq_len
    void *out;                      //  [seqs, heads, head_dim]
    int seqs;                       //  Sequences in this batch
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads; heads % kv_heads == 0
    int head_dim;                   //  64 or 128
    int block_tokens;               //  Tokens per block, a power of two >= 16
    int max_blocks_per_seq;         //  Row length of block_table
    int max_seq_len;                //  Upper bound of seq_lens (sizes the split)
    float scale;                    //  Usually 1 / sqrt (head_dim)
    int splits;                     //  KV splits per sequence; 0 = choose from SM count
    void *workspace;                //  Device scratch for splits > 1 (GPU only)
    size_t workspace_bytes;         //  Its size; see kvt_fp8_attention_workspace_bytes
} kvt_fp8_attention_args_t;

//  Check the shape: returns 0, or -EINVAL for an argument set that no
//  path supports (NULL pointers, head_dim other than 64/128, block_tokens
//  not a power of two or under 16, heads not a multiple of kv_heads,
//  strides that are not multiples of 16 bytes, negative scale strides).
int
    kvt_fp8_attention_check (const kvt_fp8_attention_args_t *args);

//  Return the split count for a device that runs 'cta_slots' decode CTAs
//  at once (same rule as kvt_paged_attention_splits).
int
    kvt_fp8_attention_splits (const kvt_fp8_attention_args_t *args, int cta_slots);

//  Return the workspace bytes needed with 'splits' KV splits (0 if 1).
size_t
    kvt_fp8_attention_workspace_bytes (const kvt_fp8_attention_args_t *args, int splits);

//  CPU twin on host pointers: for each token, score = (q . e4m3 (k)) *
//  k_scale * scale, weight = exp (score - max) and acc += weight * v_scale
//  * e4m3 (v), all in fp32; the output is rounded once to the dtype.
//  Returns 0, -EINVAL or -ENOMEM. Slow on purpose.
int
    kvt_fp8_attention_ref (const kvt_fp8_attention_args_t *args);

#ifdef KVT_KERNELS_GPU
//  Queue the fp8 decode kernel (and the merge kernel when split) on
//  'stream' and return at once. Pointers are device-accessible. When
//  args->splits is 0 the split count comes from the current device (see
//  kvt_fp8_attention_plan), and args->workspace must hold
//  kvt_fp8_attention_workspace_bytes (args, kvt_fp8_attention_plan (args)).
//  Returns 0, -EINVAL for an unsupported shape or a short workspace, or
//  KVT_ECUDA.
int
    kvt_fp8_attention (const kvt_fp8_attention_args_t *args, cudaStream_t stream);

//  Return the split count kvt_fp8_attention will use on the current
//  device, or a negative code if the device cannot be queried.
int
    kvt_fp8_attention_plan (const kvt_fp8_attention_args_t *args);
#endif

#ifdef __cplusplus
}
#endif
#endif
