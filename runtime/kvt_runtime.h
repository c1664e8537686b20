/*  =========================================================================
    kvt_runtime - the supervisor: starts actors in order, watches, stops

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The supervisor owns the run folder (endpoints, the effective config for
    actor processes), the shared-memory arenas, and every actor. It starts
    actors in the order of the definition table, each as a thread or as its
    own process (`<section>/mode`), and waits for each START before the
    next. It stops them in reverse order: the scheduler (front door) first,
    then the workers, then the tiers.
@discuss
    Actor processes are `kvtier actor NAME ...` started with fork and exec;
    they inherit the arena descriptors, die with the supervisor
    (PR_SET_PDEATHSIG), report START through a pipe, and are reaped by
    kvt_runtime_poll, which logs and counts any that die.
@end
*/

#ifndef KVT_RUNTIME_H_INCLUDED
#define KVT_RUNTIME_H_INCLUDED

#include "kvt_actor.h"
#include "kvt_config.h"
#include "kvt_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_runtime_t kvt_runtime_t;

//  The model of the config's model/ section (every actor that runs,
//  stores or sizes KV reads it from here).
kvt_model_shape_t
    kvt_runtime_model_shape (const kvt_config_t *config);

//  The KV block geometry of the config's model/ section (bf16).
kvt_block_shape_t
    kvt_runtime_block_shape (const kvt_config_t *config);

//  Layer groups to ask the NVMe store for (kvt_nvme_layer_groups then
//  applies its alignment rule): migration/nvme_layer_groups, capped so a
//  group holds at least migration/nvme_group_min_kib, and 1 for FP8 cold
//  blocks (read whole). tier_nvme and migration both ask here, so they
//  agree on the geometry.
int
    kvt_runtime_nvme_layer_groups (const kvt_config_t *config);

//  I/Os tier_nvme keeps at the device for blocks of 'block_bytes':
//  tier_nvme/queue_depth, or more so that tier_nvme/queue_mib MiB are in
//  flight (at most 1024). The bench's raw baselines ask here too.
int
    kvt_runtime_nvme_queue_depth (const kvt_config_t *config, size_t block_bytes);

//  Create a runtime for 'config' (copied) and the actor definitions 'defs'
//  (NULL-terminated, in start order). Cannot fail.
kvt_runtime_t *
    kvt_runtime_new (const kvt_config_t *config, const kvt_actor_def_t *const *defs);

//  Keep freed heap memory for reuse, per runtime/malloc_keep_mib (see the
//  definition for why). kvt_runtime_start and actor processes call it.
void
    kvt_runtime_malloc_setup (const kvt_config_t *config);

//  Create the run folder and arenas and start every actor. Returns 0, or a
//  negative code with the reason logged; destroy the runtime either way.
int
    kvt_runtime_start (kvt_runtime_t *self);

//  Reap actor processes that died since the last call; logs each one.
//  Returns how many died (0 when all is well).
int
    kvt_runtime_poll (kvt_runtime_t *self);

//  Total actor processes that died since start.
int
    kvt_runtime_deaths (const kvt_runtime_t *self);

//  The ipc:// endpoint of the front door (valid after start).
const char *
    kvt_runtime_ipc_endpoint (const kvt_runtime_t *self);

//  The run folder (valid after start).
const char *
    kvt_runtime_run_dir (const kvt_runtime_t *self);

//  Pid of actor 'name' if it runs as a process, else 0.
int
    kvt_runtime_actor_pid (const kvt_runtime_t *self, const char *name);

//  Number of CUDA devices this build can use (0 without CUDA or a GPU).
int
    kvt_runtime_gpu_count (void);

//  Bytes of memory of GPU 0, or 0 without a GPU (or a CUDA build).
size_t
    kvt_runtime_gpu_memory (void);

//  Stop every actor (reverse order), remove the run folder, free all.
void
    kvt_runtime_destroy (kvt_runtime_t **self_p);

//  Body of `kvtier actor NAME`: run one actor in this process until
//  SIGTERM or the supervisor's death. argv: NAME --config F --run-dir D
//  --ready-fd N [--arena name=fd]... Returns the exit code.
int
    kvt_runtime_actor_process (int argc, char **argv, const kvt_actor_def_t *const *defs);

#ifdef __cplusplus
}
#endif
#endif
