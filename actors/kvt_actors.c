/*  =========================================================================
    kvt_actors - the actor definitions of kvtier, in start order

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_actors.h"

static const kvt_actor_def_t *const s_all [] = {
    &kvt_prefix_index_def,
    &kvt_tier_gpu_def,
    &kvt_tier_host_def,
    &kvt_tier_nvme_def,
    &kvt_compute_def,
    &kvt_migration_def,
    &kvt_scheduler_def,
    NULL
};

const kvt_actor_def_t *const *
kvt_actors_all (void)
{
    return s_all;
}
