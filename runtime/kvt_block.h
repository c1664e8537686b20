/*  =========================================================================
    kvt_block - block geometry and chained block hashes

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A block holds the KV of 'block_tokens' consecutive tokens for every
    layer, laid out [layer][K=0,V=1][kv_head][token][head_dim] in bf16.
    A block's hash covers its parent's hash, its tokens and the tenant salt
    (xxh3-64), so equal hashes mean equal prefixes of equal tenants.
@end
*/

#ifndef KVT_BLOCK_H_INCLUDED
#define KVT_BLOCK_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int layers;                     //  Transformer layers
    int kv_heads;                   //  KV heads per layer
    int head_dim;                   //  Elements per head
    int block_tokens;               //  Tokens per block
    int dtype_bytes;                //  2 for bf16/fp16
} kvt_block_shape_t;

//  Bytes one block occupies: layers x 2 x kv_heads x block_tokens x head_dim x dtype.
size_t
    kvt_block_bytes (const kvt_block_shape_t *shape);

//  Return the salt of a tenant name (xxh3 of the name; 0 for "" or NULL).
uint64_t
    kvt_block_tenant_salt (const char *tenant);

//  Hash one block: parent hash (0 for the first block), its tokens, salt.
uint64_t
    kvt_block_hash (uint64_t parent, const uint32_t *tokens, size_t token_count,
                    uint64_t salt);

//  Hash every full block of 'tokens' into 'hashes' (room for token_count /
//  block_tokens entries). Returns the number of full blocks.
size_t
    kvt_block_hash_chain (const uint32_t *tokens, size_t token_count, int block_tokens,
                          uint64_t salt, uint64_t *hashes);

#ifdef __cplusplus
}
#endif
#endif
