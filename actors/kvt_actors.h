/*  =========================================================================
    kvt_actors - the actor definitions of kvtier, in start order

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_ACTORS_H_INCLUDED
#define KVT_ACTORS_H_INCLUDED

#include "kvt_actor.h"

extern const kvt_actor_def_t kvt_prefix_index_def;
extern const kvt_actor_def_t kvt_tier_gpu_def;
extern const kvt_actor_def_t kvt_tier_host_def;
extern const kvt_actor_def_t kvt_tier_nvme_def;
extern const kvt_actor_def_t kvt_compute_def;
extern const kvt_actor_def_t kvt_migration_def;
extern const kvt_actor_def_t kvt_scheduler_def;

//  Every actor, in start order (tiers and index first, the front door
//  last), NULL-terminated. The supervisor stops them in reverse.
const kvt_actor_def_t *const *
    kvt_actors_all (void);

#endif
