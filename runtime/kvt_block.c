/*  =========================================================================
    kvt_block - block geometry and chained block hashes

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"

size_t
kvt_block_bytes (const kvt_block_shape_t *shape)
{
    return (size_t) shape->layers * 2 * shape->kv_heads * shape->block_tokens
         * shape->head_dim * shape->dtype_bytes;
}

uint64_t
kvt_block_tenant_salt (const char *tenant)
{
    if (!tenant || !*tenant)
        return 0;
    return XXH3_64bits (tenant, strlen (tenant));
}

//  --------------------------------------------------------------------------
//  Hash = xxh3 of the tokens (little-endian u32), seeded with the parent
//  hash mixed with the tenant salt. Hash 0 is reserved for "no parent",
//  so a (vanishingly rare) zero result becomes 1.

uint64_t
kvt_block_hash (uint64_t parent, const uint32_t *tokens, size_t token_count, uint64_t salt)
{
    uint64_t seed = parent ^ (salt * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
    uint64_t hash = XXH3_64bits_withSeed (tokens, token_count * sizeof (uint32_t), seed);
    return hash? hash: 1;
}

size_t
kvt_block_hash_chain (const uint32_t *tokens, size_t token_count, int block_tokens,
                      uint64_t salt, uint64_t *hashes)
{
    assert (block_tokens > 0);
    size_t blocks = token_count / (size_t) block_tokens;
    uint64_t parent = 0;
    for (size_t b = 0; b < blocks; b++) {
        parent = kvt_block_hash (parent, tokens + b * block_tokens, block_tokens, salt);
        hashes [b] = parent;
    }
    return blocks;
}

int
kvt_block_test (bool verbose)
{
    (void) verbose;
    kvt_block_shape_t shape = { 2, 2, 16, 16, 2 };
    assert (kvt_block_bytes (&shape) == 2 * 2 * 2 * 16 * 16 * 2);

    uint32_t a [40], b [40];
    for (int i = 0; i < 40; i++)
        a [i] = b [i] = (uint32_t) (i * 7 + 1);
    b [20] ^= 1;                    //  Differs in the second block
    uint64_t ha [2], hb [2], hc [2];
    assert (kvt_block_hash_chain (a, 40, 16, 0, ha) == 2);
    assert (kvt_block_hash_chain (b, 40, 16, 0, hb) == 2);
    assert (ha [0] == hb [0]);      //  Same first block, same hash
    assert (ha [1] != hb [1]);      //  Chain diverges with the tokens
    uint64_t salt = kvt_block_tenant_salt ("acme");
    assert (salt != 0 && kvt_block_tenant_salt ("") == 0);
    kvt_block_hash_chain (a, 40, 16, salt, hc);
    assert (hc [0] != ha [0]);      //  Tenants never share blocks
    //  A block's hash depends on its parent: same tokens, other parent
    assert (kvt_block_hash (ha [0], a, 16, 0) != kvt_block_hash (0, a, 16, 0));
    return 0;
}
