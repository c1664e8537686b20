/*  =========================================================================
    kvt_policy_belady - Belady's offline optimum (simulation only)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Evicts, among all cached blocks and the offered one, the block whose
    next use (next request that contains it, block->next_use) is farthest;
    ties go to the block used least recently, and an offered block is
    declined only when its next use is strictly farther than every cached
    block's. This is the convention that gives 0.179 / 0.320 / 0.366 on
    the Mooncake conversation trace at 1000 / 4000 / 16000 blocks.
    Needs an oracle: with next_use unknown (-1) it degrades to LRU.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"

typedef struct {
    kvt_keyorder_t order;           //  key = (-next_use, touch order)
    int64_t touches;                //  Touch counter, the tie-break
} s_belady_t;

//  Create for 'capacity' blocks (more if the host holds more).
static void *
s_create (const kvt_policy_args_t *args)
{
    s_belady_t *self = (s_belady_t *) kvt_zmalloc (sizeof (s_belady_t));
    kvt_keyorder_init (&self->order, args->capacity);
    return self;
}

//  Destroy; nulls *state_p.
static void
s_destroy (void **state_p)
{
    s_belady_t *self = (s_belady_t *) *state_p;
    if (self) {
        kvt_keyorder_fini (&self->order);
        free (self);
        *state_p = NULL;
    }
}

//  Next use as a sort key: unknown counts as "now" (so it degrades to LRU)
static inline int64_t
s_next (const kvt_policy_block_t *block)
{
    return block->next_use < 0? block->now: block->next_use;
}

//  Re-key a cached block by its next use and touch order.
static void
s_on_access (void *state, const kvt_policy_block_t *block)
{
    s_belady_t *self = (s_belady_t *) state;
    uint32_t node = kvt_keyorder_node (&self->order, block->id);
    if (node != KVT_IDMAP_NONE)
        kvt_keyorder_set (&self->order, node, (kvt_heapkey_t) { -s_next (block), self->touches++ });
}

//  Start tracking a block, then key it as on_access does.
static void
s_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_belady_t *self = (s_belady_t *) state;
    kvt_keyorder_track (&self->order, block->id);
    s_on_access (state, block);
}

//  The host dropped 'id'.
static void
s_on_evict (void *state, uint64_t id)
{
    s_belady_t *self = (s_belady_t *) state;
    kvt_keyorder_remove (&self->order, id);
}

//  The farthest next use, or the incoming block if it is strictly farther.
static uint64_t
s_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_belady_t *self = (s_belady_t *) state;
    uint32_t node = kvt_keyheap_top (&self->order.heap);
    if (node == KVT_IDMAP_NONE || s_next (incoming) > -self->order.heap.keys [node].major)
        return incoming->id;
    return kvt_keyorder_id (&self->order, node);
}

const kvt_policy_ops_t kvt_policy_belady_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "belady",
    .summary = "offline optimum: evict the farthest next use (simulation only, the ceiling)",
    .create = s_create,
    .destroy = s_destroy,
    .on_access = s_on_access,
    .choose_victim = s_choose_victim,
    .on_insert = s_on_insert,
    .on_evict = s_on_evict,
};

//  --------------------------------------------------------------------------
//  "oracle-reuse": leaf-first LRU that knows only whether a block will
//  ever be used again (next_use != NEVER): blocks with no future are
//  declined, and ranked first to go once their last use has passed.
//  Not a ceiling like belady, but it measures how much of the gap to
//  belady is knowing *whether* a block is reused rather than *when*.

//  Blocks with no future go first; the others in leaf-first LRU order.
static void
s_oracle_on_access (void *state, const kvt_policy_block_t *block)
{
    s_belady_t *self = (s_belady_t *) state;
    uint32_t node = kvt_keyorder_node (&self->order, block->id);
    if (node != KVT_IDMAP_NONE)
        kvt_keyorder_set (&self->order, node, (kvt_heapkey_t) {
            block->next_use == KVT_POLICY_NEVER? INT64_MIN / 2: block->now,
            -(int64_t) block->depth });
}

//  Start tracking a block, then key it as s_oracle_on_access does.
static void
s_oracle_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_belady_t *self = (s_belady_t *) state;
    kvt_keyorder_track (&self->order, block->id);
    s_oracle_on_access (state, block);
}

//  Decline blocks that are never used again.
static bool
s_oracle_admit (void *state, const kvt_policy_block_t *block)
{
    (void) state;
    return block->next_use != KVT_POLICY_NEVER;
}

//  The first block in the order.
static uint64_t
s_oracle_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_belady_t *self = (s_belady_t *) state;
    return kvt_keyorder_first_id (&self->order, incoming->id);
}

const kvt_policy_ops_t kvt_policy_oracle_reuse_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "oracle-reuse",
    .summary = "leaf-first LRU told only whether a block is ever reused (simulation only)",
    .create = s_create,
    .destroy = s_destroy,
    .on_access = s_oracle_on_access,
    .admit = s_oracle_admit,
    .choose_victim = s_oracle_choose_victim,
    .on_insert = s_oracle_on_insert,
    .on_evict = s_on_evict,
};
