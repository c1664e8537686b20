/*  =========================================================================
    kvt_policy_prefix_value - placeholder

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"

//  --------------------------------------------------------------------------
//  "prefix-value": keyed heap, key = (last request clock, -depth)

typedef struct {
    kvt_idmap_t map;                //  id -> node
    kvt_keyheap_t heap;             //  Cached nodes by eviction key
    uint64_t *ids;                  //  ids [node]
    uint32_t *free_nodes;           //  Stack of unused node indices
    size_t free_count;              //  Entries in free_nodes
    size_t node_max;                //  Entries in ids
} s_pv_t;

static void *
s_pv_create (const kvt_policy_args_t *args)
{
    s_pv_t *self = (s_pv_t *) kvt_zmalloc (sizeof (s_pv_t));
    self->node_max = args->capacity + 1;
    kvt_idmap_init (&self->map, self->node_max);
    kvt_keyheap_init (&self->heap, self->node_max);
    self->ids = (uint64_t *) kvt_zmalloc (self->node_max * sizeof (uint64_t));
    self->free_nodes = (uint32_t *) kvt_zmalloc (self->node_max * sizeof (uint32_t));
    for (size_t node = 0; node < self->node_max; node++)
        self->free_nodes [self->free_count++] = (uint32_t) (self->node_max - 1 - node);
    return self;
}

static void
s_pv_destroy (void **state_p)
{
    s_pv_t *self = (s_pv_t *) *state_p;
    if (self) {
        kvt_idmap_fini (&self->map);
        kvt_keyheap_fini (&self->heap);
        free (self->ids);
        free (self->free_nodes);
        free (self);
        *state_p = NULL;
    }
}

static void
s_pv_on_access (void *state, const kvt_policy_block_t *block)
{
    s_pv_t *self = (s_pv_t *) state;
    uint32_t node = kvt_idmap_get (&self->map, block->id);
    if (node != KVT_IDMAP_NONE)
        kvt_keyheap_set (&self->heap, node,
                         (kvt_heapkey_t) { block->now, -(int64_t) block->depth });
}

static void
s_pv_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_pv_t *self = (s_pv_t *) state;
    if (kvt_idmap_get (&self->map, block->id) == KVT_IDMAP_NONE) {
        if (self->free_count == 0) {
            size_t more = self->node_max;
            self->ids = (uint64_t *) realloc (self->ids, (self->node_max + more) * sizeof (uint64_t));
            self->free_nodes = (uint32_t *) realloc (self->free_nodes,
                                                     (self->node_max + more) * sizeof (uint32_t));
            if (!self->ids || !self->free_nodes)
                abort ();
            for (size_t node = 0; node < more; node++)
                self->free_nodes [self->free_count++] = (uint32_t) (self->node_max + more - 1 - node);
            self->node_max += more;
        }
        uint32_t node = self->free_nodes [--self->free_count];
        self->ids [node] = block->id;
        kvt_idmap_put (&self->map, block->id, node);
    }
    s_pv_on_access (state, block);
}

static void
s_pv_on_evict (void *state, uint64_t id)
{
    s_pv_t *self = (s_pv_t *) state;
    uint32_t node = kvt_idmap_remove (&self->map, id);
    if (node == KVT_IDMAP_NONE)
        return;
    kvt_keyheap_remove (&self->heap, node);
    self->free_nodes [self->free_count++] = node;
}

static uint64_t
s_pv_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_pv_t *self = (s_pv_t *) state;
    uint32_t node = kvt_keyheap_top (&self->heap);
    return node != KVT_IDMAP_NONE? self->ids [node]: incoming->id;
}

const kvt_policy_ops_t kvt_policy_prefix_value_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "prefix-value",
    .summary = "leaf-first LRU over the prefix tree (SGLang radix cache)",
    .create = s_pv_create,
    .destroy = s_pv_destroy,
    .on_access = s_pv_on_access,
    .choose_victim = s_pv_choose_victim,
    .on_insert = s_pv_on_insert,
    .on_evict = s_pv_on_evict,
};
