/*  =========================================================================
    kvt_model_ops - the GPU model's small glue kernels: seeded weights,
    embedding gather and K/V writes into paged blocks

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Three kernels the GPU path of the synthetic model needs beside the
    layer, attention and GEMM kernels:
    - fill: bf16 (offset + scale x U) with U in [-1, 1) from a counter
      hash of (seed, tensor id, index), so weights are made on the device
      in one pass, independent of launch shape;
    - embed: out [r] = table [tokens [r]] (bf16 rows);
    - qkv: from the fused projection's rows [q heads | k heads | v heads],
      RoPE (rotate half) on q into a contiguous [rows, heads, head_dim]
      buffer, RoPE on k, and K and V written into the runtime's block
      layout [layer][K,V][kv_head][token][head_dim] at (block id, token in
      block) per row, in a slab of equal blocks.
    All are exact copies or exact functions of their inputs: no reduction,
    no dependence on grid size.
@end
*/

#ifndef KVT_MODEL_OPS_CUH_INCLUDED
#define KVT_MODEL_OPS_CUH_INCLUDED

#include "kvt_kernels.cuh"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const void *qkv;                //  [rows, (heads + 2 x kv_heads) x head_dim] bf16
    void *q;                        //  [rows, heads, head_dim] rotated q (out)
    const int32_t *positions;       //  [rows] position of each token
    const float *inv_freq;          //  [head_dim / 2] from kvt_rope_inv_freq
    void *slab;                     //  Base of the block slab (device)
    int64_t block_bytes;            //  Bytes between blocks
    const int32_t *dest_block;      //  [rows] block id in the slab; < 0: keep no K/V
                                    //  for that row (a decode graph's padding row)
    const int32_t *dest_token;      //  [rows] token index inside the block
    int rows;                       //  Rows
    int layer;                      //  Layer of these K/V
    int heads;                      //  Query heads
    int kv_heads;                   //  KV heads
    int head_dim;                   //  Elements per head, even, <= 1024
    int block_tokens;               //  Tokens per block
} kvt_qkv_args_t;

#ifdef KVT_KERNELS_GPU
//  Fill 'count' bf16 values at 'out' (device) with offset + scale x U,
//  U uniform in [-1, 1) from (seed, tensor_id, index). Returns 0 or KVT_ECUDA.
int
    kvt_model_fill_bf16 (void *out, size_t count, uint64_t seed, uint64_t tensor_id,
                         float offset, float scale, cudaStream_t stream);

//  out [r, :] = table [tokens [r], :] for r < rows; rows of 'dim' bf16
//  ('dim' a multiple of 8). Returns 0, -EINVAL or KVT_ECUDA.
int
    kvt_model_embed (void *out, const void *table, const int32_t *tokens, int rows,
                     int dim, cudaStream_t stream);

//  Rotate q and k, write K and V into paged blocks (see above). Returns
//  0, -EINVAL or KVT_ECUDA.
int
    kvt_model_qkv (const kvt_qkv_args_t *args, cudaStream_t stream);
#endif

#ifdef __cplusplus
}
#endif
#endif
