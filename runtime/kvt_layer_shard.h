/*  =========================================================================
    kvt_layer_shard - static layer sharding of the GPU tier (issue #5)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    tier_gpu/layer_fraction = F (0 < F <= 1, default 1 = off): the GPU
    tier keeps layers [0, Lg) of each of its blocks, Lg = ceil (F x layers),
    in its slab (the "gpu" arena, slot stride Lg x layer bytes) and layers
    [Lg, layers) of the same slot id in host memory (the "gpu_shard" arena,
    stride (layers - Lg) x layer bytes). A block is [layer][K,V][kv_head]
    [token][head_dim], so each part is a contiguous run of whole layers.
    The GPU memory budget, tier_gpu/capacity_blocks whole blocks, then
    holds floor (capacity_blocks x layers / Lg) slots. This class is the
    geometry, the config check, and the copy of a whole block out of or
    into its two parts.
@discuss
    The simulator's --gpu-layer-fraction F has the same meaning
    (actors/policies/POLICIES.md); live, F is rounded up to whole layers.
@end
*/

#ifndef KVT_LAYER_SHARD_H_INCLUDED
#define KVT_LAYER_SHARD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt_config.h"
#include "kvt_arena.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_LAYER_SHARD_KEY "tier_gpu/layer_fraction"   //  Its config key
#define KVT_LAYER_SHARD_ARENA "gpu_shard"               //  Arena of the host-held layers

typedef struct {
    double fraction;                //  F as configured, in (0, 1]
    int layers;                     //  Layers of a block
    int gpu_layers;                 //  Lg: leading layers kept in the GPU slab
    size_t layer_bytes;             //  One layer's slice of a block
    size_t block_bytes;             //  A whole block (layers x layer_bytes)
    size_t gpu_bytes;               //  A GPU slab slot (gpu_layers x layer_bytes)
    size_t shard_bytes;             //  A shard slot (the other layers; 0 when off)
    size_t capacity_blocks;         //  tier_gpu/capacity_blocks: the GPU budget in blocks
    size_t gpu_slots;               //  Slots of the GPU tier (and of the shard)
} kvt_layer_shard_t;

//  Parse a layer fraction: a decimal number in (0, 1], nothing after it.
//  Returns 0 and sets *fraction, or -EINVAL.
int
    kvt_layer_shard_parse (const char *text, double *fraction);

//  Fill 'shard' from 'config' (model shape, tier_gpu/capacity_blocks,
//  tier_gpu/layer_fraction). Returns 0, or KVT_ECONFIG with the reason,
//  naming the key, in 'error' (may be NULL).
int
    kvt_layer_shard_from_config (const kvt_config_t *config, kvt_layer_shard_t *shard,
                                 char *error, size_t error_size);

//  Slots of the GPU tier under 'config': floor (capacity_blocks x layers
//  / Lg), or capacity_blocks when sharding is off or the fraction is bad
//  (the runtime refuses a bad one at start).
size_t
    kvt_layer_shard_gpu_slots (const kvt_config_t *config);

//  True when some layers live in the shard (Lg < layers).
bool
    kvt_layer_shard_on (const kvt_layer_shard_t *shard);

//  Copy GPU-tier block 'slot' into 'dst' (host memory, one whole block):
//  its slab part (kvt_arena_copy: cudaMemcpy for a device slab), then, with
//  'shard' (NULL: sharding off) its shard part right after it. Returns 0
//  or KVT_ECUDA.
int
    kvt_layer_shard_read (const kvt_arena_t *gpu, const kvt_arena_t *shard, uint64_t slot,
                          void *dst);

//  Copy one whole block at 'src' (host memory) into GPU-tier block 'slot'
//  and its shard part, as kvt_layer_shard_read the other way.
int
    kvt_layer_shard_write (const kvt_arena_t *gpu, const kvt_arena_t *shard, uint64_t slot,
                           const void *src);

//  Self test.
int
    kvt_layer_shard_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
