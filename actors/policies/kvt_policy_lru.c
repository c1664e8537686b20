/*  =========================================================================
    kvt_policy_lru - LRU (vLLM) and leaf-first LRU (SGLang radix cache)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    "lru": one recency list; every use moves a block to the front, in the
    order the request uses its blocks, so a request's first block is its
    least recent. Victim = the back of the list. This is the order of a
    free-block queue that frees blocks in prefix order.
    "lru-leaf": the eviction order of a radix tree that evicts leaves by
    last access time (SGLang): key = (request clock of last use, -depth),
    smallest first. A parent is used whenever a child is, so its key is
    never below a child's and only leaves are ever chosen; within one
    request the deepest block goes first.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"

//  --------------------------------------------------------------------------
//  "lru": intrusive doubly-linked list over a node pool

typedef struct {
    kvt_nodelink_t link;            //  On the recency list (first: see kvt_nodelist)
    uint64_t id;                    //  Block id
} s_lru_node_t;

typedef struct {
    kvt_idmap_t map;                //  id -> node
    s_lru_node_t *nodes;            //  Node pool, capacity + 1 entries
    kvt_nodepool_t pool;            //  Owns the records above and their free list
    kvt_nodelist_t recency;         //  Most recent at the front
} s_lru_t;

//  Create an empty LRU for 'capacity' blocks.
static void *
s_lru_create (const kvt_policy_args_t *args)
{
    s_lru_t *self = (s_lru_t *) kvt_zmalloc (sizeof (s_lru_t));
    kvt_nodepool_init (&self->pool, args->capacity + 1, sizeof (s_lru_node_t));
    self->nodes = (s_lru_node_t *) self->pool.items;
    kvt_idmap_init (&self->map, self->pool.node_max);
    kvt_nodelist_init (&self->recency);
    return self;
}

//  Destroy; nulls *state_p.
static void
s_lru_destroy (void **state_p)
{
    s_lru_t *self = (s_lru_t *) *state_p;
    if (self) {
        kvt_idmap_fini (&self->map);
        kvt_nodepool_fini (&self->pool);
        free (self);
        *state_p = NULL;
    }
}

//  A cached block was used: it becomes the most recent.
static void
s_lru_on_access (void *state, const kvt_policy_block_t *block)
{
    s_lru_t *self = (s_lru_t *) state;
    uint32_t node = kvt_idmap_get (&self->map, block->id);
    if (node == KVT_IDMAP_NONE || node == self->recency.front)
        return;
    kvt_nodelist_unlink (&self->recency, &self->pool, node);
    kvt_nodelist_push_front (&self->recency, &self->pool, node);
}

//  Track a new block as the most recent (grows the pool if needed).
static void
s_lru_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_lru_t *self = (s_lru_t *) state;
    if (kvt_idmap_get (&self->map, block->id) != KVT_IDMAP_NONE) {
        s_lru_on_access (state, block);
        return;
    }
    uint32_t node = kvt_nodepool_take (&self->pool);
    self->nodes = (s_lru_node_t *) self->pool.items;   //  May have moved
    self->nodes [node].id = block->id;
    kvt_idmap_put (&self->map, block->id, node);
    kvt_nodelist_push_front (&self->recency, &self->pool, node);
}

//  The host dropped 'id'.
static void
s_lru_on_evict (void *state, uint64_t id)
{
    s_lru_t *self = (s_lru_t *) state;
    uint32_t node = kvt_idmap_remove (&self->map, id);
    if (node == KVT_IDMAP_NONE)
        return;
    kvt_nodelist_unlink (&self->recency, &self->pool, node);
    kvt_nodepool_put (&self->pool, node);
}

//  The least recent block.
static uint64_t
s_lru_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_lru_t *self = (s_lru_t *) state;
    uint32_t back = self->recency.back;
    return back != KVT_IDMAP_NONE? self->nodes [back].id: incoming->id;
}

const kvt_policy_ops_t kvt_policy_lru_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "lru",
    .summary = "least recently used, blocks touched in prefix order (vLLM free queue)",
    .create = s_lru_create,
    .destroy = s_lru_destroy,
    .on_access = s_lru_on_access,
    .choose_victim = s_lru_choose_victim,
    .on_insert = s_lru_on_insert,
    .on_evict = s_lru_on_evict,
};

//  --------------------------------------------------------------------------
//  "lru-leaf": keyed heap, key = (last request clock, -depth)

typedef struct {
    kvt_keyorder_t order;           //  Cached blocks by eviction key
} s_leaf_t;

//  Create an empty leaf-first order for 'capacity' blocks.
static void *
s_leaf_create (const kvt_policy_args_t *args)
{
    s_leaf_t *self = (s_leaf_t *) kvt_zmalloc (sizeof (s_leaf_t));
    kvt_keyorder_init (&self->order, args->capacity);
    return self;
}

//  Destroy; nulls *state_p.
static void
s_leaf_destroy (void **state_p)
{
    s_leaf_t *self = (s_leaf_t *) *state_p;
    if (self) {
        kvt_keyorder_fini (&self->order);
        free (self);
        *state_p = NULL;
    }
}

//  Re-key a cached block: (request clock, -depth).
static void
s_leaf_on_access (void *state, const kvt_policy_block_t *block)
{
    s_leaf_t *self = (s_leaf_t *) state;
    uint32_t node = kvt_keyorder_node (&self->order, block->id);
    if (node != KVT_IDMAP_NONE)
        kvt_keyorder_set (&self->order, node,
                          (kvt_heapkey_t) { block->now, -(int64_t) block->depth });
}

//  Track a new block, then key it as on_access does.
static void
s_leaf_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_leaf_t *self = (s_leaf_t *) state;
    kvt_keyorder_track (&self->order, block->id);
    s_leaf_on_access (state, block);
}

//  The host dropped 'id'.
static void
s_leaf_on_evict (void *state, uint64_t id)
{
    s_leaf_t *self = (s_leaf_t *) state;
    kvt_keyorder_remove (&self->order, id);
}

//  The smallest key: deepest block of the oldest request.
static uint64_t
s_leaf_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_leaf_t *self = (s_leaf_t *) state;
    return kvt_keyorder_first_id (&self->order, incoming->id);
}

const kvt_policy_ops_t kvt_policy_lru_leaf_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "lru-leaf",
    .summary = "leaf-first LRU over the prefix tree (SGLang radix cache)",
    .create = s_leaf_create,
    .destroy = s_leaf_destroy,
    .on_access = s_leaf_on_access,
    .choose_victim = s_leaf_choose_victim,
    .on_insert = s_leaf_on_insert,
    .on_evict = s_leaf_on_evict,
};

//  --------------------------------------------------------------------------
//  "token-age": leaf-first, aged in tokens. The clock advances by every
//  prompt token the tier sees, so a block's age is the work done since it
//  was last used; a long prompt ages everything more than a short one.

typedef struct {
    s_leaf_t leaf;                  //  Same order machinery as lru-leaf
    int64_t tokens;                 //  Token clock: prompt tokens seen so far
} s_token_t;

//  Create a leaf-first order whose clock counts prompt tokens.
static void *
s_token_create (const kvt_policy_args_t *args)
{
    s_leaf_t *leaf = (s_leaf_t *) s_leaf_create (args);
    s_token_t *self = (s_token_t *) kvt_zmalloc (sizeof (s_token_t));
    self->leaf = *leaf;
    free (leaf);
    return self;
}

//  Advance the token clock by the request's prompt tokens.
static void
s_token_begin_request (void *state, const kvt_policy_block_t *blocks, size_t block_count,
                       size_t hit_count)
{
    (void) hit_count;
    s_token_t *self = (s_token_t *) state;
    for (size_t j = 0; j < block_count; j++)
        self->tokens += blocks [j].block_tokens? blocks [j].block_tokens: 1;
}

//  Rank by token clock instead of request clock.
static void
s_token_on_access (void *state, const kvt_policy_block_t *block)
{
    s_token_t *self = (s_token_t *) state;
    kvt_policy_block_t aged = *block;
    aged.now = self->tokens;
    s_leaf_on_access (&self->leaf, &aged);
}

//  Track a new block on the token clock.
static void
s_token_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_token_t *self = (s_token_t *) state;
    kvt_policy_block_t aged = *block;
    aged.now = self->tokens;
    s_leaf_on_insert (&self->leaf, &aged);
}

const kvt_policy_ops_t kvt_policy_token_age_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "token-age",
    .summary = "leaf-first, age counted in prompt tokens seen since last use",
    .create = s_token_create,
    .destroy = s_leaf_destroy,      //  s_token_t starts with its s_leaf_t
    .begin_request = s_token_begin_request,
    .on_access = s_token_on_access,
    .choose_victim = s_leaf_choose_victim,
    .on_insert = s_token_on_insert,
    .on_evict = s_leaf_on_evict,
};
