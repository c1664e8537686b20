/*  =========================================================================
    kvt_tier_slots - TIER_ALLOC and TIER_FREE, shared by every tier actor

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_TIER_SLOTS_H_INCLUDED
#define KVT_TIER_SLOTS_H_INCLUDED

#include "kvt_actor.h"
#include "kvt_slots.h"

//  Answer TIER_ALLOC {count} with up to 'count' free slots (none when the
//  tier is not 'enabled'). Never more than the tier holds. Returns 0.
int
    kvt_tier_slots_alloc (kvt_actor_t *actor, kvt_slots_t *slots, kvt_msg_t *request,
                          bool enabled);

//  Answer TIER_FREE {slots}. Every slot is checked first, so a bad request
//  (out of range: -ERANGE, not in use: -EINVAL) changes nothing and the
//  caller's skeleton answers ERROR. 'on_free' (may be NULL) is called for
//  each slot freed, for tiers that must also forget the bytes.
int
    kvt_tier_slots_free (kvt_actor_t *actor, kvt_slots_t *slots, kvt_msg_t *request,
                         void (*on_free) (uint64_t slot, void *arg), void *arg);

#endif
