/*  =========================================================================
    kvt_tier_mem - tier_gpu and tier_host: the slot owners of memory tiers

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    One actor per memory tier. It owns which slots of its arena are in use
    and hands them out and takes them back; it never copies KV itself (the
    migration and compute actors move bytes by DMA, kernels or memcpy into
    slots they were given). tier_gpu's slab is HBM on a GPU build with a
    device, or the "gpu" shared-memory arena otherwise; tier_host's is the
    "host" arena.
    Static layer sharding (tier_gpu/layer_fraction < 1, issue #5): tier_gpu
    hands out floor (capacity_blocks x layers / Lg) slots, each holding a
    block's first Lg layers in its slab and the rest in the "gpu_shard"
    arena (kvt_layer_shard.h). STATS gauges: capacity_blocks (slots),
    slot_bytes and slab_bytes (bytes per slot and in all of the slab),
    shard_bytes (host bytes of the shard), gpu_layers (Lg).
    Accepts: TIER_ALLOC {count} -> TIER_ALLOC_OK {slots} (possibly fewer),
             TIER_FREE {slots} -> TIER_FREE_OK {freed}, STATS.
@discuss
    A free of a slot out of range or not in use is refused with ERROR
    (-ERANGE / -EINVAL) and nothing changes: a confused peer cannot corrupt
    the free list. Non-goal: choosing victims (prefix_index and migration).
@end
*/

#include "kvt_classes.h"
#include "kvt_actors.h"
#include "kvt_tier_slots.h"
#include "kvt_layer_shard.h"

typedef struct {
    kvt_actor_t *actor;             //  Our skeleton
    const char *arena_name;         //  "gpu" or "host"
    const char *capacity_key;       //  Config key of our capacity
    uint64_t capacity;              //  Slots, from config
    kvt_slots_t *slots;             //  Free and used slots; NULL until START
} self_t;

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config, const char *arena_name,
            const char *capacity_key)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->arena_name = arena_name;
    self->capacity_key = capacity_key;
    self->capacity = streq (arena_name, "gpu")? (uint64_t) kvt_layer_shard_gpu_slots (config)
                                              : (uint64_t) kvt_config_int (config, capacity_key);
    return self;
}

static void *
s_gpu_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    return s_self_new (actor, config, "gpu", "tier_gpu/capacity_blocks");
}

static void *
s_host_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    return s_self_new (actor, config, "host", "tier_host/capacity_blocks");
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        kvt_slots_destroy (&self->slots);
        free (self);
        *self_p = NULL;
    }
}

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    kvt_arena_t *arena = kvt_arena_find (self->arena_name);
    if (!arena || kvt_arena_block_count (arena) < self->capacity) {
        kvt_log_error ("%s: no arena '%s' of %" PRIu64 " blocks in this process",
                       kvt_actor_name (self->actor), self->arena_name, self->capacity);
        return -ENOENT;
    }
    kvt_arena_t *shard = streq (self->arena_name, "gpu")
                       ? kvt_arena_find (KVT_LAYER_SHARD_ARENA): NULL;
    if (shard && kvt_arena_block_count (shard) < self->capacity) {
        kvt_log_error ("%s: the layer shard arena holds %zu slots, not %" PRIu64,
                       kvt_actor_name (self->actor), kvt_arena_block_count (shard),
                       self->capacity);
        return -ENOENT;
    }
    self->slots = kvt_slots_new (self->capacity);
    kvt_actor_gauge (self->actor, "capacity_blocks", self->capacity);
    if (streq (self->arena_name, "gpu")) {
        //  What the GPU tier's memory holds (issue #5: layer sharding)
        kvt_layer_shard_t geometry;
        int rc = kvt_layer_shard_from_config (kvt_actor_config (self->actor), &geometry,
                                              NULL, 0);
        if (rc == 0)
            kvt_actor_gauge (self->actor, "gpu_layers", (uint64_t) geometry.gpu_layers);
        size_t slot_bytes = kvt_arena_block_bytes (arena);
        kvt_actor_gauge (self->actor, "slot_bytes", slot_bytes);
        kvt_actor_gauge (self->actor, "slab_bytes", self->capacity * slot_bytes);
        kvt_actor_gauge (self->actor, "shard_bytes",
                         shard? self->capacity * kvt_arena_block_bytes (shard): 0);
    }
    kvt_actor_gauge (self->actor, "used_blocks", 0);
    return 0;
}

static int
s_handle_alloc (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    return kvt_tier_slots_alloc (self->actor, self->slots, *msg_p, true);
}

static int
s_handle_free (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    return kvt_tier_slots_free (self->actor, self->slots, *msg_p, NULL, NULL);
}

const kvt_actor_def_t kvt_tier_gpu_def = {
    .name = "tier_gpu",
    .create = s_gpu_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .handlers = {
        [KVT_MSG_TIER_ALLOC] = s_handle_alloc,
        [KVT_MSG_TIER_FREE]  = s_handle_free,
    },
};

const kvt_actor_def_t kvt_tier_host_def = {
    .name = "tier_host",
    .create = s_host_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .handlers = {
        [KVT_MSG_TIER_ALLOC] = s_handle_alloc,
        [KVT_MSG_TIER_FREE]  = s_handle_free,
    },
};
