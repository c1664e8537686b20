/*  =========================================================================
    kvt_tier_slots - TIER_ALLOC and TIER_FREE, shared by every tier actor

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_tier_slots.h"

int
kvt_tier_slots_alloc (kvt_actor_t *actor, kvt_slots_t *slots, kvt_msg_t *request, bool enabled)
{
    uint64_t count = enabled? kvt_msg_u64 (request, KVT_TIER_ALLOC_COUNT): 0;
    if (count > kvt_slots_capacity (slots))
        count = kvt_slots_capacity (slots);
    uint64_t *taken = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    size_t got = kvt_slots_alloc (slots, taken, count);
    kvt_msg_t *reply = kvt_msg_reply_new (request, KVT_MSG_TIER_ALLOC_OK);
    kvt_msg_set_array (reply, KVT_TIER_ALLOC_OK_SLOTS, taken, got);
    free (taken);
    kvt_actor_count (actor, "allocated", got);
    if (got < count)
        kvt_actor_count (actor, "alloc_short", 1);
    kvt_actor_gauge (actor, "used_blocks", kvt_slots_used (slots));
    return kvt_actor_reply (actor, &reply);
}

int
kvt_tier_slots_free (kvt_actor_t *actor, kvt_slots_t *slots, kvt_msg_t *request,
                     void (*on_free) (uint64_t slot, void *arg), void *arg)
{
    size_t count;
    const uint64_t *list = kvt_msg_array (request, KVT_TIER_FREE_SLOTS, &count);
    for (size_t k = 0; k < count; k++)
        if (!kvt_slots_in_use (slots, list [k])) {
            kvt_actor_count (actor, "bad_frees", 1);
            return list [k] >= kvt_slots_capacity (slots)? -ERANGE: -EINVAL;
        }
    size_t freed = 0;
    for (size_t k = 0; k < count; k++)
        if (kvt_slots_free (slots, list [k]) == 0) {     //  A slot listed twice frees once
            if (on_free)
                on_free (list [k], arg);
            freed++;
        }
    kvt_actor_count (actor, "freed", freed);
    kvt_actor_gauge (actor, "used_blocks", kvt_slots_used (slots));
    kvt_msg_t *reply = kvt_msg_reply_new (request, KVT_MSG_TIER_FREE_OK);
    kvt_msg_set_u64 (reply, KVT_TIER_FREE_OK_FREED, freed);
    return kvt_actor_reply (actor, &reply);
}
