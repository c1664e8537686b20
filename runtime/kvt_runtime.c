/*  =========================================================================
    kvt_runtime - the supervisor: starts actors in order, watches, stops

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_runtime.h"
#include "kvt_layer_shard.h"
#include <sys/prctl.h>
#include <malloc.h>
#include <poll.h>
#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#endif

#define S_MAX_ACTORS 16             //  Actors one runtime can hold

typedef struct {
    const kvt_actor_def_t *def;     //  What it runs
    zactor_t *thread;               //  When it runs as a thread
    pid_t pid;                      //  When it runs as a process, until reaped
    bool died;                      //  Reaped unexpectedly
} s_actor_t;

struct _kvt_runtime_t {
    kvt_config_t *config;           //  Own copy
    char run_dir [256];             //  Endpoints and the saved config
    bool own_run_dir;               //  Created by us, removed at destroy
    char ipc_endpoint [300];        //  Front door for local clients
    s_actor_t actors [S_MAX_ACTORS];
    int actor_count;                //  Entries started (or tried)
    const kvt_actor_def_t *defs [S_MAX_ACTORS + 1];     //  NULL-terminated
    int def_count;                  //  Entries in defs
    int deaths;                     //  Actor processes that died
    bool arenas_registered;         //  We filled the arena registry
};

kvt_runtime_t *
kvt_runtime_new (const kvt_config_t *config, const kvt_actor_def_t *const *defs)
{
    kvt_runtime_t *self = (kvt_runtime_t *) kvt_zmalloc (sizeof (kvt_runtime_t));
    self->config = kvt_config_dup (config);
    for (; *defs && self->def_count < S_MAX_ACTORS; defs++)
        self->defs [self->def_count++] = *defs;
    return self;
}

kvt_block_shape_t
kvt_runtime_block_shape (const kvt_config_t *config)
{
    return (kvt_block_shape_t) {
        (int) kvt_config_int (config, "model/layers"),
        (int) kvt_config_int (config, "model/kv_heads"),
        (int) kvt_config_int (config, "model/head_dim"),
        (int) kvt_config_int (config, "model/block_tokens"), 2 };
}

static size_t
s_block_bytes (const kvt_config_t *config)
{
    kvt_block_shape_t shape = kvt_runtime_block_shape (config);
    return kvt_block_bytes (&shape);
}

//  Each group read carries its own 4 KiB header and is one I/O: groups of
//  a few KiB would multiply a block's I/Os and bytes for little overlap,
//  so a group is at least nvme_group_min_kib (the default 256 KiB: the
//  header is then under 2% of a group, and 2 MiB blocks of an 8B model
//  still split in 4).
int
kvt_runtime_nvme_layer_groups (const kvt_config_t *config)
{
    int64_t groups = kvt_config_int (config, "migration/nvme_layer_groups");
    int64_t min_bytes = kvt_config_int (config, "migration/nvme_group_min_kib") * 1024;
    size_t block_bytes = s_block_bytes (config);
    if (min_bytes > 0 && groups > (int64_t) (block_bytes / (size_t) min_bytes))
        groups = (int64_t) (block_bytes / (size_t) min_bytes);
    if (streq (kvt_config_str (config, "migration/cold_dtype"), "fp8"))
        groups = 1;
    return groups > 1? (int) groups: 1;
}

//  A read or write costs tier_nvme a fixed time besides its bytes (its
//  completion is reaped, checked and answered before the next goes out),
//  so a disk kept busy by queue_depth reads of 256 KiB idles between
//  reads of 64 KiB: on the H100 machine's disk, 64 KiB promotions ran at
//  0.81-0.89 of raw reads at 64 in flight and 0.96-1.0 at 256, where raw
//  itself gained nothing (tools/bench/RESULTS.md). Bytes in flight is
//  what keeps a disk busy, so the depth grows as blocks shrink.
int
kvt_runtime_nvme_queue_depth (const kvt_config_t *config, size_t block_bytes)
{
    int64_t depth = kvt_config_int (config, "tier_nvme/queue_depth");
    int64_t mib = kvt_config_int (config, "tier_nvme/queue_mib");
    if (mib > 0 && block_bytes > 0) {
        int64_t by_bytes = (int64_t) (((size_t) mib << 20) + block_bytes - 1)
                         / (int64_t) block_bytes;
        if (by_bytes > depth)
            depth = by_bytes;
    }
    return depth > 1024? 1024: (int) depth;
}

//  Spare blocks past the GPU tier's slab, the compute actor's scratch for
//  the partial tails and decoded tokens of the sequences it runs at once:
//  compute/spare_blocks, or (0) enough for one request of the longest
//  decode and for compute/max_batch requests of 512 new tokens each.
//  A request that finds too few spares free waits in compute's queue.
static size_t
s_spare_blocks (const kvt_config_t *config)
{
    int64_t spare = kvt_config_int (config, "compute/spare_blocks");
    if (spare > 0)
        return (size_t) spare;
    int block_tokens = (int) kvt_config_int (config, "model/block_tokens");
    size_t longest = KVT_MODEL_CUDA_SPARE_BLOCKS (block_tokens, KVT_MODEL_MAX_NEW_TOKENS);
    size_t batch = (size_t) kvt_config_int (config, "compute/max_batch")
                 * KVT_MODEL_CUDA_SPARE_BLOCKS (block_tokens, 512);
    return longest > batch? longest: batch;
}

int
kvt_runtime_gpu_count (void)
{
    int count = 0;
#ifdef KVT_WITH_CUDA
    if (cudaGetDeviceCount (&count) != cudaSuccess)
        count = 0;
#endif
    return count;
}

size_t
kvt_runtime_gpu_memory (void)
{
    size_t bytes = 0;
#ifdef KVT_WITH_CUDA
    struct cudaDeviceProp prop;
    if (kvt_runtime_gpu_count () > 0 && cudaGetDeviceProperties (&prop, 0) == cudaSuccess)
        bytes = prop.totalGlobalMem;
#endif
    return bytes;
}

kvt_model_shape_t
kvt_runtime_model_shape (const kvt_config_t *config)
{
    return (kvt_model_shape_t) {
        .layers = (int) kvt_config_int (config, "model/layers"),
        .heads = (int) kvt_config_int (config, "model/heads"),
        .kv_heads = (int) kvt_config_int (config, "model/kv_heads"),
        .head_dim = (int) kvt_config_int (config, "model/head_dim"),
        .hidden = (int) kvt_config_int (config, "model/hidden"),
        .intermediate = (int) kvt_config_int (config, "model/intermediate"),
        .vocab = (int) kvt_config_int (config, "model/vocab"),
        .block_tokens = (int) kvt_config_int (config, "model/block_tokens"),
        .seed = (uint64_t) kvt_config_int (config, "model/seed") };
}

//  Where the GPU tier's slab goes: device memory when this is a CUDA build
//  and compute/device is cuda, or auto with a GPU present and a model shape
//  the GPU path runs; shared host memory otherwise. Returns 1 (device), 0
//  (host) or KVT_ECONFIG.
static int
s_gpu_slab_on_device (const kvt_config_t *config)
{
    const char *device = kvt_config_str (config, "compute/device");
    if (streq (device, "cpu"))
        return 0;
    kvt_model_shape_t shape = kvt_runtime_model_shape (config);
    if (kvt_runtime_gpu_count () > 0) {
        if (kvt_model_cuda_supports (&shape))
            return 1;
        if (streq (device, "auto")) {
            kvt_log_warn ("runtime: a GPU is present but the GPU path does not run this model "
                          "shape (it needs model/head_dim = 128); computing on the CPU");
            return 0;
        }
        kvt_log_error ("runtime: config key 'compute/device' is cuda, but the GPU path does not "
                       "run this model shape (it needs model/head_dim = 128)");
        return KVT_ECONFIG;
    }
    if (streq (device, "cuda")) {
        kvt_log_error ("runtime: config key 'compute/device' is cuda, but %s",
#ifdef KVT_WITH_CUDA
                       "no CUDA device is present");
#else
                       "this build has no CUDA (configure with -DKVT_CUDA=ON)");
#endif
        return KVT_ECONFIG;
    }
    return 0;
}

//  The actors that touch the GPU tier's slab; in process mode they open a
//  device slab by its CUDA IPC handle.
static bool
s_gpu_slab_user (const char *actor)
{
    return streq (actor, "tier_gpu") || streq (actor, "migration") || streq (actor, "compute");
}

//  The definitions among 'defs' (NULL-terminated) of the guests of actor
//  'host' (mode "with:<host>"), into 'guests' (room for S_MAX_ACTORS + 1),
//  NULL-terminated. Returns how many.
static int
s_guests_of (const kvt_config_t *config, const kvt_actor_def_t *const *defs, const char *host,
             const kvt_actor_def_t **guests)
{
    int count = 0;
    for (; *defs && count < S_MAX_ACTORS; defs++) {
        char guest_key [64];
        snprintf (guest_key, sizeof (guest_key), "%s/mode", (*defs)->name);
        const char *guest_mode = kvt_config_str (config, guest_key);
        if (strncmp (guest_mode, "with:", 5) == 0 && streq (guest_mode + 5, host))
            guests [count++] = *defs;
    }
    guests [count] = NULL;
    return count;
}

//  Whether actor 'host' or one of its guests touches the GPU tier's slab
static bool
s_process_uses_gpu_slab (const kvt_config_t *config, const kvt_actor_def_t *const *defs,
                         const char *host)
{
    const kvt_actor_def_t *guests [S_MAX_ACTORS + 1];
    s_guests_of (config, defs, host, guests);
    bool uses = s_gpu_slab_user (host);
    for (int k = 0; guests [k]; k++)
        uses = uses || s_gpu_slab_user (guests [k]->name);
    return uses;
}

//  The arenas every runtime has: the GPU tier's slab (device memory when
//  the model runs on a GPU, else shared host memory) and the host tier's
//  slab (registered with CUDA when the GPU slab is on the device).
//  With static layer sharding (tier_gpu/layer_fraction < 1, issue #5) a
//  third arena, "gpu_shard", holds the GPU tier's host-held layers: a
//  slot per GPU slab slot (its device spares included when the slab is
//  on the device), each the block's layers past the slab's. Arena 'k''s
//  (0 gpu, 1 host, 2 gpu_shard) slots and slot bytes.
static void
s_arena_geometry (const kvt_layer_shard_t *shard, const kvt_config_t *config, int k,
                  bool on_device, size_t *block_count, size_t *block_bytes)
{
    *block_count = k == 1? (size_t) kvt_config_int (config, "tier_host/capacity_blocks")
                 : k == 2 && on_device? shard->gpu_slots + s_spare_blocks (config)
                 : shard->gpu_slots;
    *block_bytes = k == 0? shard->gpu_bytes: k == 1? shard->block_bytes: shard->shard_bytes;
}

//  Whether every actor runs as a thread of this process (none as a process,
//  nor as a guest of one): then no other process maps the arenas
static bool
s_all_threads (const kvt_runtime_t *self)
{
    for (int k = 0; k < self->def_count; k++) {
        char mode_key [64];
        snprintf (mode_key, sizeof (mode_key), "%s/mode", self->defs [k]->name);
        if (streq (kvt_config_str (self->config, mode_key), "process"))
            return false;
    }
    return true;
}

static int
s_create_arenas (kvt_runtime_t *self)
{
    static const char *const names [] = { "gpu", "host", KVT_LAYER_SHARD_ARENA };
    kvt_layer_shard_t shard;
    char error [256];
    if (kvt_layer_shard_from_config (self->config, &shard, error, sizeof (error))) {
        kvt_log_error ("runtime: %s", error);
        return KVT_ECONFIG;
    }
    bool hugepages = kvt_config_int (self->config, "tier_host/hugepages") != 0;
    int on_device = s_gpu_slab_on_device (self->config);
    if (on_device < 0)
        return on_device;
    int arena_count = kvt_layer_shard_on (&shard)? 3: 2;
    bool all_threads = s_all_threads (self);
    for (int k = 0; k < arena_count; k++) {
        if (kvt_arena_find (names [k])) {
            kvt_log_error ("runtime: an arena named %s already exists in this process "
                           "(one runtime per process)", names [k]);
            return -EEXIST;
        }
        size_t block_count, block_bytes;
        s_arena_geometry (&shard, self->config, k, on_device, &block_count, &block_bytes);
        kvt_arena_t *arena;
        if (k == 0 && on_device) {
            arena = kvt_arena_new_device (names [k], block_count, block_bytes,
                                          s_spare_blocks (self->config));
        }
        else
        if (all_threads)                    //  No other process maps it
            arena = kvt_arena_new_private (names [k], block_count, block_bytes, hugepages);
        else
            arena = kvt_arena_new (names [k], block_count, block_bytes, hugepages);
        if (!arena)
            return -ENOMEM;
        if (k == 1) {
            //  The host tier next to the GPU it feeds: tier_host/numa_node,
            //  or (auto, -1) the GPU's node when the machine says
            int node = (int) kvt_config_int (self->config, "tier_host/numa_node");
            if (node < 0 && on_device)
                node = kvt_arena_gpu_numa_node ();
            if (node >= 0) {
                int rc = kvt_arena_bind_numa (arena, node);
                if (rc == -EINVAL || (rc && kvt_config_int (self->config,
                                                            "tier_host/numa_node") >= 0)) {
                    kvt_log_error ("runtime: config key 'tier_host/numa_node' = %d: %s", node,
                                   kvt_strerror (rc));
                    kvt_arena_destroy (&arena);
                    return KVT_ECONFIG;
                }
            }
        }
        //  Onto 2 MiB pages where none are reserved (a memfd arena, or a
        //  private one whose faults found memory too fragmented for
        //  them): a DMA segment (disk or GPU) a 2 MiB page, not a 4 KiB one
        kvt_arena_collapse (arena);
        if (k >= 1 && on_device) {
            //  The host slab and the layer shard: the device reaches both
            int rc = kvt_arena_pin (arena);
            if (rc) {
                kvt_arena_destroy (&arena);
                return rc;
            }
        }
        int rc = kvt_arena_register (&arena);
        if (rc) {
            kvt_arena_destroy (&arena);
            return rc;
        }
        self->arenas_registered = true;
    }
    return 0;
}

static const char *
s_kvtier_path (void)
{
    const char *path = getenv ("KVTIER");
    return path && *path? path: "/proc/self/exe";
}

//  An actor process's `--arena` value: "name=fd", ",large" after it where
//  the memory is on 2 MiB pages (the process cannot tell from the
//  descriptor), "name=-1" for an arena that does not exist
static void
s_arena_arg (char *text, size_t size, const char *name, const kvt_arena_t *arena)
{
    snprintf (text, size, "%s=%d%s", name, arena? kvt_arena_fd (arena): -1,
              arena && kvt_arena_large_pages (arena)? ",large": "");
}

//  Fork and exec `kvtier actor NAME`; wait for its START status on a pipe.
static int
s_start_process (kvt_runtime_t *self, s_actor_t *actor, const char *config_path)
{
    int ready [2];
    if (pipe (ready) != 0)
        return -errno;
    char ready_fd [16], gpu_arena [32 + KVT_ARENA_IPC_HEX], host_arena [32], shard_arena [32];
    snprintf (ready_fd, sizeof (ready_fd), "%d", ready [1]);
    kvt_arena_t *gpu = kvt_arena_find ("gpu");
    if (kvt_arena_on_device (gpu)) {
        //  A device slab travels as its CUDA IPC handle, to the actors
        //  that touch it; the others get no GPU context
        char hex [KVT_ARENA_IPC_HEX];
        int rc = s_process_uses_gpu_slab (self->config, self->defs, actor->def->name)
               ? kvt_arena_ipc_handle (gpu, hex, sizeof (hex)): -ENOENT;
        if (rc == 0)
            snprintf (gpu_arena, sizeof (gpu_arena), "gpu=ipc:%s", hex);
        else
            snprintf (gpu_arena, sizeof (gpu_arena), "gpu=-1");
        if (rc && rc != -ENOENT) {
            kvt_log_error ("runtime: no CUDA IPC handle for the GPU tier's device slab, so "
                           "config key '%s/mode' must be thread", actor->def->name);
            close (ready [0]);
            close (ready [1]);
            return KVT_ECONFIG;
        }
    }
    else
        s_arena_arg (gpu_arena, sizeof (gpu_arena), "gpu", gpu);
    s_arena_arg (host_arena, sizeof (host_arena), "host", kvt_arena_find ("host"));
    //  Static layer sharding: the GPU tier's host-held layers (issue #5)
    s_arena_arg (shard_arena, sizeof (shard_arena), KVT_LAYER_SHARD_ARENA,
                 kvt_arena_find (KVT_LAYER_SHARD_ARENA));
    const char *kvtier = s_kvtier_path ();
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid < 0) {
        close (ready [0]);
        close (ready [1]);
        return -errno;
    }
    if (pid == 0) {
        //  Child: die with the supervisor, then become the actor process
        prctl (PR_SET_PDEATHSIG, SIGTERM);
        if (getppid () != parent)
            _exit (1);
        close (ready [0]);
        char *argv [] = { "kvtier", "actor", (char *) actor->def->name, "--config",
            (char *) config_path, "--run-dir", self->run_dir, "--ready-fd", ready_fd,
            "--arena", gpu_arena, "--arena", host_arena, "--arena", shard_arena, NULL };
        execv (kvtier, argv);
        fprintf (stderr, "kvtier: cannot exec %s: %s\n", kvtier, strerror (errno));
        _exit (127);
    }
    close (ready [1]);
    actor->pid = pid;
    struct pollfd item = { ready [0], POLLIN, 0 };
    int timeout_ms = (int) kvt_config_int (self->config, "runtime/start_timeout_ms");
    int rc = poll (&item, 1, timeout_ms);
    char status = 1;
    bool reported = rc == 1 && read (ready [0], &status, 1) == 1;
    if (reported)
        rc = status == 0? 0: -EIO;
    else
        rc = rc == 0? -ETIMEDOUT: -EIO;     //  Timed out, or died before reporting
    close (ready [0]);
    if (!reported)
        //  Most often a program that embeds the runtime with KVTIER unset:
        //  its own binary (/proc/self/exe) is not kvtier, so never reports
        //  (a test binary would run its tests again)
        kvt_log_error ("runtime: '%s actor %s' exited or timed out before its start status; "
                       "KVTIER names the kvtier binary (unset: this program's own)",
                       kvtier, actor->def->name);
    return rc;
}

//  A long prefix's bookkeeping arrays (hashes, tiers, slots: 8 bytes a
//  block, so 512 KiB for 65536 blocks) are allocated and freed at every
//  request. glibc maps each such array fresh and unmaps it at free, so
//  every request faulted its pages in again on the thread it waited on:
//  ~0.3 ms for the hashes of a 1 GiB prefix of 16 KiB blocks on a 2-core
//  VM, before the match could begin (tools/bench/RESULTS.md, session 16).
//  Below runtime/malloc_keep_mib, arrays come from the heap and freed
//  memory stays there for the next request. Process-wide, like malloc
//  itself; 0 leaves glibc's own thresholds.
void
kvt_runtime_malloc_setup (const kvt_config_t *config)
{
#ifdef M_MMAP_THRESHOLD
    int64_t keep_mib = kvt_config_int (config, "runtime/malloc_keep_mib");
    if (keep_mib <= 0 || getenv ("GLIBC_TUNABLES"))
        return;                     //  Off, or the user tunes malloc already
    int64_t keep = keep_mib < 1024? keep_mib << 20: (int64_t) 1 << 30;
    //  (glibc refuses a mapping threshold above 32 MiB on 64-bit)
    int64_t map_above = keep < (32 << 20)? keep: (32 << 20);
    mallopt (M_MMAP_THRESHOLD, (int) map_above);
    mallopt (M_TRIM_THRESHOLD, (int) keep);
#else
    (void) config;
#endif
}

int
kvt_runtime_start (kvt_runtime_t *self)
{
    char error [256];
    int rc = kvt_config_validate (self->config, error, sizeof (error));
    if (rc) {
        kvt_log_error ("runtime: %s", error);
        return rc;
    }
    kvt_runtime_malloc_setup (self->config);
    const char *run_dir = kvt_config_str (self->config, "runtime/run_dir");
    if (*run_dir)
        snprintf (self->run_dir, sizeof (self->run_dir), "%s", run_dir);
    else {
        snprintf (self->run_dir, sizeof (self->run_dir), "/tmp/kvtier-%d-XXXXXX", (int) getpid ());
        if (!mkdtemp (self->run_dir)) {
            kvt_log_error ("runtime: cannot create %s: %s", self->run_dir, strerror (errno));
            return -errno;
        }
        self->own_run_dir = true;
    }
    if (mkdir (self->run_dir, 0700) != 0 && errno != EEXIST) {
        kvt_log_error ("runtime: cannot create %s: %s", self->run_dir, strerror (errno));
        return -errno;
    }
    const char *ipc = kvt_config_str (self->config, "scheduler/ipc_endpoint");
    if (*ipc)
        snprintf (self->ipc_endpoint, sizeof (self->ipc_endpoint), "%s", ipc);
    else
        snprintf (self->ipc_endpoint, sizeof (self->ipc_endpoint), "ipc://%s/scheduler.ipc",
                  self->run_dir);
    kvt_config_set (self->config, "scheduler/ipc_endpoint", self->ipc_endpoint,
                    error, sizeof (error));
    if (!*kvt_config_str (self->config, "tier_nvme/dir")) {
        char nvme_dir [300];
        snprintf (nvme_dir, sizeof (nvme_dir), "%s/nvme", self->run_dir);
        kvt_config_set (self->config, "tier_nvme/dir", nvme_dir, error, sizeof (error));
    }
    rc = s_create_arenas (self);
    if (rc)
        return rc;
    char config_path [300];
    snprintf (config_path, sizeof (config_path), "%s/config.zpl", self->run_dir);
    rc = kvt_config_save (self->config, config_path);
    if (rc)
        return rc;

    for (int k = 0; k < self->def_count; k++) {
        const kvt_actor_def_t *def = self->defs [k];
        char mode_key [64];
        snprintf (mode_key, sizeof (mode_key), "%s/mode", def->name);
        const char *mode = kvt_config_str (self->config, mode_key);
        if (strncmp (mode, "with:", 5) == 0)
            continue;               //  Started in its host's thread
        s_actor_t *actor = &self->actors [self->actor_count++];
        actor->def = def;
        //  Guests: actors whose mode is "with:<this actor>" (in an actor
        //  process, that process starts them)
        const kvt_actor_def_t *guests [S_MAX_ACTORS + 1];
        s_guests_of (self->config, self->defs, def->name, guests);
        if (streq (mode, "process"))
            rc = s_start_process (self, actor, config_path);
        else {
            kvt_actor_args_t args = { actor->def, self->config, self->run_dir, false, guests };
            actor->thread = zactor_new (kvt_actor_main, &args);
            assert (actor->thread);
            zstr_send (actor->thread, "START");
            rc = zsock_wait (actor->thread) == 0? 0: -EIO;
        }
        if (rc) {
            kvt_log_error ("runtime: actor %s did not start: %s", actor->def->name,
                           kvt_strerror (rc));
            return rc;
        }
        kvt_log_info ("runtime: %s started as a %s", actor->def->name,
                      actor->thread? "thread": "process");
    }
    return 0;
}

int
kvt_runtime_poll (kvt_runtime_t *self)
{
    int died = 0;
    for (int k = 0; k < self->actor_count; k++) {
        s_actor_t *actor = &self->actors [k];
        if (actor->pid <= 0)
            continue;
        int status;
        pid_t pid = waitpid (actor->pid, &status, WNOHANG);
        if (pid == actor->pid) {
            if (WIFSIGNALED (status))
                kvt_log_error ("runtime: actor %s (pid %d) died by signal %d", actor->def->name,
                               (int) pid, WTERMSIG (status));
            else
                kvt_log_error ("runtime: actor %s (pid %d) exited with status %d",
                               actor->def->name, (int) pid, WEXITSTATUS (status));
            actor->pid = 0;
            actor->died = true;
            died++;
        }
    }
    self->deaths += died;
    return died;
}

int
kvt_runtime_deaths (const kvt_runtime_t *self)
{
    return self->deaths;
}

const char *
kvt_runtime_ipc_endpoint (const kvt_runtime_t *self)
{
    return self->ipc_endpoint;
}

const char *
kvt_runtime_run_dir (const kvt_runtime_t *self)
{
    return self->run_dir;
}

int
kvt_runtime_actor_pid (const kvt_runtime_t *self, const char *name)
{
    for (int k = 0; k < self->actor_count; k++)
        if (streq (self->actors [k].def->name, name))
            return self->actors [k].pid;
    return 0;
}

//  Stop an actor process: SIGTERM, then SIGKILL if it lingers past 5 s.
static void
s_stop_process (s_actor_t *actor)
{
    kill (actor->pid, SIGTERM);
    for (int waited_ms = 0; waited_ms < 5000; waited_ms += 10) {
        if (waitpid (actor->pid, NULL, WNOHANG) == actor->pid) {
            actor->pid = 0;
            return;
        }
        zclock_sleep (10);
    }
    kvt_log_warn ("runtime: actor %s ignored SIGTERM; killing it", actor->def->name);
    kill (actor->pid, SIGKILL);
    waitpid (actor->pid, NULL, 0);
    actor->pid = 0;
}

//  Remove the run folder and what we put in it (one level of folders).
static void
s_remove_run_dir (const char *path, int depth)
{
    DIR *dir = opendir (path);
    if (!dir)
        return;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        if (streq (entry->d_name, ".") || streq (entry->d_name, ".."))
            continue;
        char child [512];
        snprintf (child, sizeof (child), "%s/%s", path, entry->d_name);
        if (entry->d_type == DT_DIR && depth < 2)
            s_remove_run_dir (child, depth + 1);
        else
            unlink (child);
    }
    closedir (dir);
    rmdir (path);
}

void
kvt_runtime_destroy (kvt_runtime_t **self_p)
{
    assert (self_p);
    kvt_runtime_t *self = *self_p;
    if (!self)
        return;
    for (int k = self->actor_count - 1; k >= 0; k--) {
        s_actor_t *actor = &self->actors [k];
        if (actor->thread)
            zactor_destroy (&actor->thread);
        if (actor->pid > 0)
            s_stop_process (actor);
    }
    if (self->arenas_registered)
        kvt_arena_registry_clear ();
    if (self->own_run_dir)
        s_remove_run_dir (self->run_dir, 0);
    kvt_config_destroy (&self->config);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  One actor alone in this process.

int
kvt_runtime_actor_process (int argc, char **argv, const kvt_actor_def_t *const *defs)
{
    const char *name = argc > 1? argv [1]: NULL;
    const char *config_path = NULL, *run_dir = NULL;
    int ready_fd = -1;
    for (int k = 2; k + 1 < argc; k += 2) {
        if (streq (argv [k], "--config"))
            config_path = argv [k + 1];
        else
        if (streq (argv [k], "--run-dir"))
            run_dir = argv [k + 1];
        else
        if (streq (argv [k], "--ready-fd"))
            ready_fd = atoi (argv [k + 1]);
    }
    const kvt_actor_def_t *def = NULL;
    for (const kvt_actor_def_t *const *each = defs; name && *each; each++)
        if (streq ((*each)->name, name))
            def = *each;
    if (!def || !config_path || !run_dir || ready_fd < 0) {
        fprintf (stderr, "usage: kvtier actor NAME --config FILE --run-dir DIR --ready-fd N "
                 "[--arena name=fd[,large]]...\n(started by the supervisor, not by hand)\n");
        return 2;
    }
    char error [256];
    kvt_config_t *config = kvt_config_new ();
    if (kvt_config_load (config, config_path, error, sizeof (error))) {
        fprintf (stderr, "kvtier actor %s: %s\n", name, error);
        kvt_config_destroy (&config);
        return 1;
    }
    kvt_log_level_t level;
    if (kvt_log_parse_level (kvt_config_str (config, "runtime/log_level"), &level) == 0)
        kvt_log_set_level (level);
    kvt_runtime_malloc_setup (config);
    kvt_layer_shard_t shard;
    if (kvt_layer_shard_from_config (config, &shard, error, sizeof (error))) {
        fprintf (stderr, "kvtier actor %s: %s\n", name, error);
        kvt_config_destroy (&config);
        return 1;
    }
    for (int k = 2; k + 1 < argc; k += 2)
        if (streq (argv [k], "--arena") && strncmp (argv [k + 1], "gpu=ipc:", 8) == 0) {
            //  The GPU tier's slab in device memory, by CUDA IPC handle
            kvt_arena_t *arena = kvt_arena_attach_device ("gpu", argv [k + 1] + 8,
                shard.gpu_slots, shard.gpu_bytes, s_spare_blocks (config));
            if (arena)
                kvt_arena_register (&arena);
        }
        else
        if (streq (argv [k], "--arena")) {
            char arena_name [32];
            int fd;
            if (sscanf (argv [k + 1], "%31[^=]=%d", arena_name, &fd) != 2 || fd < 0)
                continue;           //  fd -1: a device slab, not for this process
            int which = streq (arena_name, "gpu")? 0: streq (arena_name, "host")? 1: 2;
            size_t block_count, block_bytes;
            kvt_arena_t *gpu = kvt_arena_find ("gpu");     //  Its --arena comes first
            s_arena_geometry (&shard, config, which, gpu && kvt_arena_on_device (gpu),
                              &block_count, &block_bytes);
            bool large = strstr (argv [k + 1], ",large") != NULL;
            kvt_arena_t *arena = kvt_arena_attach (arena_name, fd, block_count, block_bytes,
                                                   large);
            if (arena)
                kvt_arena_register (&arena);
        }
    //  Migration copies between a device slab and the host slab: the host
    //  slab must be registered with CUDA in its process too
    kvt_arena_t *gpu = kvt_arena_find ("gpu"), *host = kvt_arena_find ("host");
    kvt_arena_t *shard_arena = kvt_arena_find (KVT_LAYER_SHARD_ARENA);     //  #5
    if (gpu && host && kvt_arena_on_device (gpu) && streq (def->name, "migration")
    &&  (kvt_arena_pin (host) != 0 || (shard_arena && kvt_arena_pin (shard_arena) != 0))) {
        char failed = 1;            //  Logged by kvt_arena_pin
        if (write (ready_fd, &failed, 1) != 1)
            kvt_log_error ("kvtier actor %s: the supervisor is gone", name);
        close (ready_fd);
        kvt_arena_registry_clear ();
        kvt_config_destroy (&config);
        return 1;
    }
    const kvt_actor_def_t *guests [S_MAX_ACTORS + 1];
    s_guests_of (config, defs, def->name, guests);
    kvt_actor_args_t args = { def, config, run_dir, true, guests };
    zactor_t *actor = zactor_new (kvt_actor_main, &args);
    zstr_send (actor, "START");
    char status = zsock_wait (actor) == 0? 0: 1;
    if (write (ready_fd, &status, 1) != 1)
        status = 1;                 //  Supervisor is gone
    close (ready_fd);
    //  Serve until SIGTERM (CZMQ's handler sets zsys_interrupted) or
    //  until the supervisor is gone
    pid_t parent = getppid ();
    while (!zsys_interrupted && getppid () == parent && status == 0)
        zclock_sleep (50);
    zactor_destroy (&actor);
    kvt_arena_registry_clear ();
    kvt_config_destroy (&config);
    return status;
}
