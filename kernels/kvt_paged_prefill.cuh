/*  =========================================================================
    kvt_paged_prefill - causal prefill attention over a paged KV cache

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Each sequence brings q_len new tokens (rows q_start [s] .. q_start
    [s + 1] - 1 of q) whose K and V the caller has already written into the
    paged cache at positions seq_lens [s] - q_len .. seq_lens [s] - 1, after
    a cached prefix of seq_lens [s] - q_len tokens. New token i attends
    causally to every token at position <= seq_lens [s] - q_len + i, read
    through the block table. K/V addressing is the same as
    kvt_paged_attention's (base pointers plus byte strides), so the
    runtime's multi-layer block layout and a vLLM layout both work.
    bf16 or fp16, head_dim 128 (tensor-core path), any GQA ratio, any
    power-of-two block size. The default kernel uses wgmma and needs an
    sm_90a build (nvcc -gencode=arch=compute_90a,code=sm_90a); a plain
    sm_90 build runs the mma.sync kernel instead (about 0.77x as fast).
@end
*/

#ifndef KVT_PAGED_PREFILL_CUH_INCLUDED
#define KVT_PAGED_PREFILL_CUH_INCLUDED

#include "kvt_kernels.cuh"

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_PAGED_PREFILL_VARIANTS 8    //  Kernel versions kept for benchmarks

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of q, k, v and out
    const void *q;                  //  [q_start [seqs], heads, head_dim] new tokens
    const int32_t *q_start;         //  [seqs + 1] first q row of each sequence
    const void *k;                  //  Paged K, addressed as in kvt_paged_attention
    const void *v;                  //  Paged V, same strides
    int64_t block_stride_bytes;     //  Bytes between consecutive blocks
    int64_t head_stride_bytes;      //  Bytes between kv heads of one block
    int64_t token_stride_bytes;     //  Bytes between tokens of one head
    const int32_t *block_table;     //  [seqs, max_blocks_per_seq] block ids
    const int32_t *seq_lens;        //  [seqs] cached + new tokens per sequence
    void *out;                      //  [q_start [seqs], heads, head_dim]
    int seqs;                       //  Sequences
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads; heads % kv_heads == 0
    int head_dim;                   //  128
    int block_tokens;               //  Tokens per block, a power of two
    int max_blocks_per_seq;         //  Row length of block_table
    int max_q_len;                  //  Upper bound of new tokens per sequence
    float scale;                    //  Usually 1 / sqrt (head_dim)
    int variant;                    //  Kernel version, for benchmarks and tests: 0 = the
                                    //  default, 1 .. KVT_PAGED_PREFILL_VARIANTS - 1 = the
                                    //  others kvt_paged_prefill.cu lists
} kvt_paged_prefill_args_t;

//  Check the shape: 0 or -EINVAL.
int
    kvt_paged_prefill_check (const kvt_paged_prefill_args_t *args);

//  CPU reference on host pointers: plain loops, fp32 accumulation, output
//  rounded once. Returns 0, -EINVAL or -ENOMEM. Slow on purpose.
int
    kvt_paged_prefill_ref (const kvt_paged_prefill_args_t *args);

#ifdef KVT_KERNELS_GPU
//  Queue the prefill kernel on 'stream'. Returns 0, -EINVAL or KVT_ECUDA.
int
    kvt_paged_prefill (const kvt_paged_prefill_args_t *args, cudaStream_t stream);
#endif

#ifdef __cplusplus
}
#endif
#endif
