/*  =========================================================================
    kvt_policy_s3fifo - S3-FIFO: small FIFO, main CLOCK-ish FIFO, ghosts

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    S3-FIFO (Yang et al., SOSP'23) over blocks. New blocks enter a small
    FIFO S (10% of capacity, option small=0.1). A block leaving S that was
    used while there moves to the main FIFO M; otherwise it is evicted and
    its id kept in a ghost FIFO G (as many ids as M holds blocks). A block
    offered while its id is in G goes straight to M: admission by proven
    reuse. M reinserts a block with uses left (up to 3) instead of
    evicting it, spending one use each time.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"

#define S_QUEUE_SMALL 0             //  Node is in S
#define S_QUEUE_MAIN  1             //  Node is in M

typedef struct {
    kvt_nodelink_t link;            //  In its queue (first: see kvt_nodelist)
    uint64_t id;                    //  Block id
    uint8_t queue;                  //  S_QUEUE_*
    uint8_t uses;                   //  Uses since insert or last pass, <= 3
} s_node_t;

typedef struct {
    kvt_idmap_t map;                //  id -> node, cached blocks
    s_node_t *nodes;                //  Node pool
    kvt_nodepool_t pool;            //  Owns the records above and their free list
    kvt_nodelist_t small;           //  S, newest at the front
    kvt_nodelist_t main;            //  M, newest at the front
    size_t small_target;            //  Capacity share of S
    kvt_idring_t ghosts;            //  G: ids evicted from S, oldest forgotten first
} s_self_t;

//  Create; NULL if option small is not in (0, 1).
static void *
s_create (const kvt_policy_args_t *args)
{
    double small = 0.1;
    int rc = kvt_policy_option (args->options, "small", &small);
    if (rc == -EINVAL || small <= 0 || small >= 1) {
        kvt_log_error ("s3fifo: option small must be in (0, 1)");
        return NULL;
    }
    s_self_t *self = (s_self_t *) kvt_zmalloc (sizeof (s_self_t));
    kvt_nodepool_init (&self->pool, args->capacity + 1, sizeof (s_node_t));
    self->nodes = (s_node_t *) self->pool.items;
    kvt_idmap_init (&self->map, self->pool.node_max);
    kvt_nodelist_init (&self->small);
    kvt_nodelist_init (&self->main);
    self->small_target = (size_t) (small * (double) args->capacity);
    if (self->small_target == 0)
        self->small_target = 1;
    size_t ghost_max = args->capacity > self->small_target? args->capacity - self->small_target: 1;
    kvt_idring_init (&self->ghosts, ghost_max);
    return self;
}

//  Destroy; nulls *state_p.
static void
s_destroy (void **state_p)
{
    s_self_t *self = (s_self_t *) *state_p;
    if (self) {
        kvt_idmap_fini (&self->map);
        kvt_idring_fini (&self->ghosts);
        kvt_nodepool_fini (&self->pool);
        free (self);
        *state_p = NULL;
    }
}

//  Queue S or M.
static kvt_nodelist_t *
s_queue (s_self_t *self, uint8_t queue)
{
    return queue == S_QUEUE_SMALL? &self->small: &self->main;
}

//  Take 'node' out of its queue.
static void
s_unlink (s_self_t *self, uint32_t node)
{
    kvt_nodelist_unlink (s_queue (self, self->nodes [node].queue), &self->pool, node);
}

//  Put 'node' at the front (newest end) of queue 'queue'.
static void
s_push (s_self_t *self, uint32_t node, uint8_t queue)
{
    self->nodes [node].queue = queue;
    kvt_nodelist_push_front (s_queue (self, queue), &self->pool, node);
}

//  A cached block was used: one more use, up to 3.
static void
s_on_access (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    uint32_t node = kvt_idmap_get (&self->map, block->id);
    if (node != KVT_IDMAP_NONE && self->nodes [node].uses < 3)
        self->nodes [node].uses++;
}

//  A new block enters S, or M if its id is a ghost.
static void
s_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    if (kvt_idmap_get (&self->map, block->id) != KVT_IDMAP_NONE) {
        s_on_access (state, block);
        return;
    }
    uint32_t node = kvt_nodepool_take (&self->pool);
    self->nodes = (s_node_t *) self->pool.items;   //  May have moved
    self->nodes [node].id = block->id;
    self->nodes [node].uses = 0;
    kvt_idmap_put (&self->map, block->id, node);
    bool ghost = kvt_idring_forget (&self->ghosts, block->id);
    s_push (self, node, ghost? S_QUEUE_MAIN: S_QUEUE_SMALL);
}

//  The host dropped 'id'; a block leaving S becomes a ghost.
static void
s_on_evict (void *state, uint64_t id)
{
    s_self_t *self = (s_self_t *) state;
    uint32_t node = kvt_idmap_remove (&self->map, id);
    if (node == KVT_IDMAP_NONE)
        return;
    if (self->nodes [node].queue == S_QUEUE_SMALL)
        (void) kvt_idring_add (&self->ghosts, id);  //  Only the id matters: no slot data
    s_unlink (self, node);
    kvt_nodepool_put (&self->pool, node);
}

//  --------------------------------------------------------------------------
//  Pick the victim: from S while S is over its share (promoting used
//  blocks to M), else from M (reinserting blocks with uses left). Each
//  pass spends a use or moves a block, so the loop ends.

static uint64_t
s_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_self_t *self = (s_self_t *) state;
    while (self->small.count + self->main.count > 0) {
        if (self->small.count >= self->small_target || self->main.count == 0) {
            uint32_t node = self->small.back;
            if (self->nodes [node].uses > 0) {
                s_unlink (self, node);
                self->nodes [node].uses = 0;
                s_push (self, node, S_QUEUE_MAIN);
                continue;
            }
            return self->nodes [node].id;
        }
        uint32_t node = self->main.back;
        if (self->nodes [node].uses > 0) {
            s_unlink (self, node);
            self->nodes [node].uses--;
            s_push (self, node, S_QUEUE_MAIN);
            continue;
        }
        return self->nodes [node].id;
    }
    return incoming->id;
}

const kvt_policy_ops_t kvt_policy_s3fifo_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "s3fifo",
    .summary = "S3-FIFO: small probation FIFO, main FIFO with reinsertion, ghost admission",
    .create = s_create,
    .destroy = s_destroy,
    .on_access = s_on_access,
    .choose_victim = s_choose_victim,
    .on_insert = s_on_insert,
    .on_evict = s_on_evict,
};
