/*  =========================================================================
    kvt_bench_host_ttft - `kvtier bench host --ttft`: time to first token of
    a request whose prefix lives on NVMe, read in layer groups or whole
    blocks (issue #4)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvtier bench host --ttft [--prefix-mib M] [--new N] [--groups G]
                             [--reps R] [--qd Q] [--dir DIR] [--json] [--verbose]
    Issue #4: "a request whose prefix lives on NVMe starts computing on its
    first layers' blocks before its last blocks have left the disk". One
    request = a prefix of P blocks on the NVMe tier (--prefix-mib of KV)
    plus N new prompt tokens (--new), GENERATE with max_new_tokens 1, the
    time to first token taken at the client (wall time of the GENERATE).
    Three runtimes in this process, one after the other, the same requests:
      ours:  migration/nvme_layer_groups = G (default 4): migration reads the
             NVMe blocks group-major, answers after group 0, and compute's
             copies of later layers wait on the GPU for their group; the
             new tokens prefill layer-major (compute/layer_major = gated:
             every 512-token chunk's layer l before layer l + 1), so all
             chunks' first layers run while later groups are read;
      whole: nvme_layer_groups = 1: every block read whole, compute starts
             after the last one left the disk;
      chunk: groups as ours, compute/layer_major = off: chunk by chunk, so
             only the first chunk's layers overlap the reads (the A/B of
             the layer-major prefill).
    Both with migration/stream_promotion = 1 (host -> GPU copies layer by
    layer under the prefill), fetch_policy always.
    Each runtime: computes one model warm-up request (fresh tokens, P x 16
    + N + 32 long: the GPU model's buffers then have their final size
    before any timed run, so no rep pays for growing them), puts R + 1
    prefixes on the GPU tier (fresh tokens each; the first is a warm-up
    rep) - STORE of constant bf16 KV (0x3c3c) when the
    prefix fits one frame (<= 192 MiB), else (or with --compute-prefix)
    GENERATE max_new_tokens 0 of the prefix alone, which computes and
    caches it - DEMOTEs them all GPU -> host -> NVMe, then per prefix:
      disk alone:    raw io_uring O_DIRECT block reads of P slots' payloads
                     from the store's data files (slots 0..P-1, where the
                     warm-up request's first blocks lie: least recently
                     used, demoted first; kvt_bench_host_raw, --qd in flight);
      TTFT:          GENERATE prefix + N new tokens, prefix from NVMe (checked:
                     all P blocks from NVMe);
      compute alone: GENERATE the same prefix + N other new tokens, the
                     prefix now on the GPU tier (checked): the same request
                     with no disk in it.
    Figures: medians over the R timed reps; disk and compute alone pooled
    over the runtimes' reps. TTFT_groups beside TTFT_whole, TTFT_chunk, 
    max (disk alone, compute alone) (the overlap bound) and beside
    disk + compute (no overlap at all).
    Shape: on a CUDA build with a device, the Llama-3-8B shape of
    configs/gpu-h100.cfg (32 layers, 8 KV heads, 2 MiB blocks; default
    256 MiB prefix = 128 blocks, 4096 new tokens), the GPU tier in HBM.
    Else the CPU model at a tiny shape (8 layers, 4 KV heads, 256 KiB
    blocks; default 16 MiB prefix, 64 new tokens): it checks the path, its
    figures are not the GPU's story.
@end
*/

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "kvt.h"
#include "kvt_actors.h"
#include "kvt_bench.h"
#include "kvt_bench_host_raw.h"
#include "kvt_bench_host_ttft.h"

#define S_TENANT "bench-host-ttft"  //  Tenant of every request
#define S_MAX_STORE_MIB 192         //  Larger prefixes are computed, not STOREd (the
                                    //  codec's frame limit, KVT_MSG_MAX_FRAME, is 256 MiB)

//  A model shape and its defaults.
typedef struct {
    const char *name;               //  What to call it in the report
    const char *device;             //  compute/device
    int layers;                     //  model/layers
    int heads;                      //  model/heads
    int kv_heads;                   //  model/kv_heads
    int head_dim;                   //  model/head_dim
    int hidden;                     //  model/hidden
    int intermediate;               //  model/intermediate
    int vocab;                      //  model/vocab
    int group_min_kib;              //  migration/nvme_group_min_kib
    int prefix_mib;                 //  Default prefix, MiB
    int fresh;                      //  Default new tokens
} s_shape_t;

static const s_shape_t s_shape_8b = {
    "Llama-3-8B shape of configs/gpu-h100.cfg, bf16, GPU model, GPU tier in HBM", "cuda",
    32, 32, 8, 128, 4096, 14336, 128256, 256, 256, 4096 };
static const s_shape_t s_shape_tiny = {
    "tiny shape on the CPU model (no CUDA device): a check of the path, not the GPU figures",
    "cpu", 8, 4, 4, 128, 512, 512, 256, 32, 16, 64 };

#define S_BLOCK_TOKENS 16           //  Tokens per block, both shapes
#define S_WARM_EXTRA 32             //  The model warm-up is this many tokens longer
                                    //  than a timed request

//  What one timed repetition measured.
typedef struct {
    double ttft_us;                 //  Client wall time, prefix on NVMe
    double server_ttft_us;          //  GENERATE_OK ttft_us of the same request
    double compute_us;              //  Client wall time, prefix on the GPU tier
    double disk_us;                 //  Raw O_DIRECT read of P blocks
} s_sample_t;

//  Counters that show the layer groups at work (sum over the timed reps).
typedef struct {
    uint64_t group_jobs;            //  migration.stream_layer_group_jobs
    uint64_t early_replies;         //  migration.stream_early_replies
    uint64_t layers_ready;          //  migration.layers_ready_sent
    uint64_t group_reads;           //  tier_nvme.group_reads
    uint64_t nvme_bytes;            //  migration.bytes_nvme_to_host
} s_groups_t;

//  One runtime's run.
typedef struct {
    const char *name;               //  ours, whole, chunk
    int groups_asked;               //  migration/nvme_layer_groups
    const char *layer_major;        //  compute/layer_major
    int groups;                     //  In effect (kvt_runtime_nvme_layer_groups)
    s_sample_t *samples;            //  One per timed rep
    s_groups_t counters;            //  Deltas over the timed reps
} s_config_run_t;

//  Median of one field ('offset' bytes into s_sample_t) over 'count'
//  samples of each of 'run_count' runs.
static double
s_median_field (const s_config_run_t *runs, int run_count, int count, size_t offset)
{
    double *values = (double *) zmalloc ((size_t) (count * run_count) * sizeof (double));
    for (int r = 0; r < run_count; r++)
        for (int k = 0; k < count; k++)
            values [r * count + k] = *(const double *) ((const char *) &runs [r].samples [k]
                                                        + offset);
    double median = kvt_bench_median (values, (size_t) (count * run_count));
    free (values);
    return median;
}

//  Bytes of one block of 'shape'.
static size_t
s_block_bytes (const s_shape_t *shape)
{
    return (size_t) shape->layers * 2 * shape->kv_heads * S_BLOCK_TOKENS * shape->head_dim * 2;
}

//  Read the layer-group counters into *groups. Returns 0 or the client's error.
static int
s_groups_read (kvt_client_t *client, s_groups_t *groups)
{
    kvt_client_stats_t stats;
    int rc = kvt_client_stats (client, &stats);
    if (rc) {
        fprintf (stderr, "kvtier bench host --ttft: STATS failed: %s %s\n",
                 kvt_client_error_name (client), kvt_client_error_detail (client));
        return rc;
    }
    memset (groups, 0, sizeof (*groups));
    kvt_client_stats_find (&stats, "migration.stream_layer_group_jobs", &groups->group_jobs);
    kvt_client_stats_find (&stats, "migration.stream_early_replies", &groups->early_replies);
    kvt_client_stats_find (&stats, "migration.layers_ready_sent", &groups->layers_ready);
    kvt_client_stats_find (&stats, "tier_nvme.group_reads", &groups->group_reads);
    kvt_client_stats_find (&stats, "migration.bytes_nvme_to_host", &groups->nvme_bytes);
    kvt_client_stats_fini (&stats);
    return 0;
}

//  Start a runtime with 'shape', its NVMe tier in 'nvme_dir', reading NVMe
//  blocks in 'groups' layer groups; *effective gets the groups in effect.
//  Returns the runtime, or NULL with the reason printed.
static kvt_runtime_t *
s_start_runtime (const kvt_bench_host_ttft_opts_t *opts, const s_shape_t *shape,
                 const char *nvme_dir, int groups, const char *layer_major,
                 size_t prefix_blocks, size_t fresh, int *effective)
{
    size_t prefixes = (size_t) opts->reps + 1;
    //  The GPU tier holds every prefix (STORE) and every request's new
    //  blocks under the low watermark (80%), so no upkeep demotion runs
    //  inside a timed request
    size_t new_blocks = 2 * prefixes * (fresh / S_BLOCK_TOKENS + 1);
    size_t warm_blocks = prefix_blocks + (fresh + S_WARM_EXTRA) / S_BLOCK_TOKENS + 1;
    size_t gpu_blocks = (prefixes * prefix_blocks + warm_blocks + new_blocks + 64) * 5 / 4;
    //  The host tier takes them all on the way down, plus a prefix's staging
    size_t host_blocks = (prefixes * prefix_blocks + warm_blocks) * 5 / 4 + prefix_blocks + 64;
    char option [32][1200];
    int count = 0;
    snprintf (option [count++], 1200, "scheduler/endpoint=");
    snprintf (option [count++], 1200, "scheduler/fetch_policy=always");
    snprintf (option [count++], 1200, "compute/device=%s", shape->device);
    snprintf (option [count++], 1200, "model/layers=%d", shape->layers);
    snprintf (option [count++], 1200, "model/heads=%d", shape->heads);
    snprintf (option [count++], 1200, "model/kv_heads=%d", shape->kv_heads);
    snprintf (option [count++], 1200, "model/head_dim=%d", shape->head_dim);
    snprintf (option [count++], 1200, "model/hidden=%d", shape->hidden);
    snprintf (option [count++], 1200, "model/intermediate=%d", shape->intermediate);
    snprintf (option [count++], 1200, "model/vocab=%d", shape->vocab);
    snprintf (option [count++], 1200, "model/block_tokens=%d", S_BLOCK_TOKENS);
    snprintf (option [count++], 1200, "model/seed=1");
    snprintf (option [count++], 1200, "tier_gpu/capacity_blocks=%zu", gpu_blocks);
    snprintf (option [count++], 1200, "tier_host/capacity_blocks=%zu", host_blocks);
    snprintf (option [count++], 1200, "tier_nvme/capacity_blocks=%zu",
              2 * (prefixes * prefix_blocks + warm_blocks) + 64);
    snprintf (option [count++], 1200, "tier_nvme/queue_depth=%d", opts->qd);
    snprintf (option [count++], 1200, "tier_nvme/queue_mib=0");     //  Exactly qd, as raw
    snprintf (option [count++], 1200, "tier_nvme/dir=%s", nvme_dir);
    snprintf (option [count++], 1200, "migration/disk_admission=all");
    snprintf (option [count++], 1200, "migration/overlap_upkeep=0");
    snprintf (option [count++], 1200, "migration/stream_promotion=1");
    snprintf (option [count++], 1200, "migration/nvme_layer_groups=%d", groups);
    snprintf (option [count++], 1200, "compute/layer_major=%s", layer_major);
    snprintf (option [count++], 1200, "migration/nvme_group_min_kib=%d", shape->group_min_kib);
    kvt_config_t *config = kvt_config_new ();
    char error [256] = "";
    int rc = 0;
    for (int k = 0; k < count && rc == 0; k++)
        rc = kvt_config_set_option (config, option [k], error, sizeof (error));
    kvt_runtime_t *runtime = NULL;
    if (rc)
        fprintf (stderr, "kvtier bench host --ttft: config: %s\n", error);
    else {
        *effective = kvt_runtime_nvme_layer_groups (config);
        runtime = kvt_bench_runtime_start (config, "kvtier bench host --ttft");
    }
    kvt_config_destroy (&config);
    return runtime;
}

//  Tokens of request 'k': prefix 'p' (seed 7000 + p, prefix_tokens) then
//  'fresh' new ones from 'fresh_seed'. Caller frees.
static uint64_t *
s_tokens (size_t prefix_tokens, int p, size_t fresh, uint64_t fresh_seed, uint64_t vocab)
{
    uint64_t *tokens = (uint64_t *) zmalloc ((prefix_tokens + fresh) * sizeof (uint64_t));
    kvt_client_random_tokens (tokens, prefix_tokens, vocab, (uint64_t) (7000 + p));
    if (fresh)
        kvt_client_random_tokens (tokens + prefix_tokens, fresh, vocab, fresh_seed);
    return tokens;
}

//  GENERATE 'tokens' with max_new_tokens 1; the first 'prefix_blocks' must
//  all come from 'tier'. *wall_us gets the client's wall time, *server_us
//  the server's ttft_us. Returns 0 or a negative code (reason printed).
static int
s_generate (kvt_client_t *client, const uint64_t *tokens, size_t count, size_t prefix_blocks,
            uint64_t tier, double *wall_us, double *server_us)
{
    kvt_client_generate_t result;
    double start = kvt_bench_now_us ();
    int rc = kvt_client_generate (client, S_TENANT, tokens, count, 1, &result);
    *wall_us = kvt_bench_now_us () - start;
    if (rc) {
        fprintf (stderr, "kvtier bench host --ttft: GENERATE failed: %s %s\n",
                 kvt_client_error_name (client), kvt_client_error_detail (client));
        return rc;
    }
    if (server_us)
        *server_us = (double) result.ttft_us;
    uint64_t from [KVT_TIER_COUNT] = { result.from_gpu, result.from_host, result.from_nvme };
    bool whole = from [tier] == prefix_blocks && result.token_count == 1;
    if (!whole)
        fprintf (stderr, "kvtier bench host --ttft: %" PRIu64 "/%" PRIu64 "/%" PRIu64
                 " prefix blocks from gpu/host/nvme, %" PRIu64 " computed, %zu tokens out; "
                 "expected all %zu from tier %" PRIu64 "\n", from [0], from [1], from [2],
                 result.computed, result.token_count, prefix_blocks, tier);
    kvt_client_generate_fini (&result);
    return whole? 0: -EIO;
}

//  Move every block from tier 'from' to the one below; fails unless at
//  least 'expected' moved. *moved gets how many did.
static int
s_demote (kvt_client_t *client, uint64_t from, uint64_t expected, uint64_t *moved_p)
{
    uint64_t moved = 0;
    int rc = kvt_client_demote (client, from, from + 1, UINT32_MAX, &moved);
    if (rc == 0 && moved < expected)
        rc = -EIO;
    *moved_p = moved;
    if (rc)
        fprintf (stderr, "kvtier bench host --ttft: DEMOTE %" PRIu64 " -> %" PRIu64 " moved %"
                 PRIu64 " of %" PRIu64 " blocks: %s %s\n", from, from + 1, moved, expected,
                 kvt_client_error_name (client), kvt_client_error_detail (client));
    return rc;
}

//  One runtime with 'run->groups_asked' layer groups: store, demote, then
//  the timed reps into run->samples. Returns 0 or a negative code.
static int
s_config_run (const kvt_bench_host_ttft_opts_t *opts, const s_shape_t *shape,
              const char *work_dir, size_t prefix_blocks, size_t fresh, s_config_run_t *run)
{
    char nvme_dir [1100];
    snprintf (nvme_dir, sizeof (nvme_dir), "%s/%s", work_dir, run->name);
    if (mkdir (nvme_dir, 0700) && errno != EEXIST) {
        int rc = -errno;
        fprintf (stderr, "kvtier bench host --ttft: cannot create %s: %s\n", nvme_dir,
                 strerror (-rc));
        return rc;
    }
    double started = kvt_bench_now_us ();
    kvt_runtime_t *runtime = s_start_runtime (opts, shape, nvme_dir, run->groups_asked,
                                              run->layer_major, prefix_blocks, fresh,
                                              &run->groups);
    if (!runtime)
        return -EIO;
    double start_s = (kvt_bench_now_us () - started) / 1e6;
    if (opts->verbose)
        fprintf (stderr, "groups %d: runtime started in %.2f s\n", run->groups_asked, start_s);
    int rc = 0;
    kvt_bench_host_raw_t raw = { .file_count = 0 };
    //  Two minutes a call: a request that hangs fails the bench visibly
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 120000);
    kvt_client_hello_t hello;
    size_t block_bytes = s_block_bytes (shape);
    if (!client || kvt_client_hello (client, "bench-host-ttft", &hello)
    ||  hello.block_bytes != block_bytes || hello.block_tokens != S_BLOCK_TOKENS) {
        fprintf (stderr, "kvtier bench host --ttft: no HELLO, or blocks not of %zu bytes\n",
                 block_bytes);
        rc = -EPROTO;
    }
    //  R + 1 prefixes, the warm-up rep's first
    int prefixes = opts->reps + 1;
    size_t prefix_tokens = prefix_blocks * S_BLOCK_TOKENS;
    size_t kv_bytes = prefix_blocks * block_bytes;
    //  A prefix goes in as one STORE of KV bytes when its frame fits, else
    //  the runtime computes it (GENERATE max_new_tokens 0 caches its blocks)
    bool by_compute = opts->compute_prefix || kv_bytes > ((size_t) S_MAX_STORE_MIB << 20);
    void *kv = rc == 0 && !by_compute? malloc (kv_bytes): NULL;
    if (rc == 0 && !by_compute && !kv)
        rc = -ENOMEM;
    if (kv)
        memset (kv, 0x3c, kv_bytes);    //  Small finite bf16 values (~0.0115)
    //  Model warm-up: one request a little longer than the timed ones,
    //  computed, so the GPU model's block table and buffers have their
    //  final size before any timed run (growing them inside a gated run
    //  once deadlocked it; fixed in s_table_reserve, and tested by
    //  test_nvme_layer_stream; here it only keeps growth out of the reps).
    //  Its blocks are the least recently used: they go to NVMe first and
    //  hold slots 0..P-1, which the raw baseline reads.
    double store_start = kvt_bench_now_us ();
    if (rc == 0) {
        size_t warm_count = prefix_tokens + fresh + S_WARM_EXTRA;
        uint64_t *tokens = (uint64_t *) zmalloc (warm_count * sizeof (uint64_t));
        kvt_client_random_tokens (tokens, warm_count, hello.vocab, 6000);
        double ignored;
        rc = s_generate (client, tokens, warm_count, 0, KVT_TIER_GPU, &ignored, NULL);
        free (tokens);
    }
    double warm_s = (kvt_bench_now_us () - store_start) / 1e6;
    if (opts->verbose)
        fprintf (stderr, "groups %d: model warm-up request (%zu tokens) %.2f s\n",
                 run->groups, prefix_tokens + fresh + S_WARM_EXTRA, warm_s);
    store_start = kvt_bench_now_us ();
    for (int p = 0; p < prefixes && rc == 0; p++) {
        uint64_t *tokens = s_tokens (prefix_tokens, p, 0, 0, hello.vocab);
        if (by_compute) {
            kvt_client_generate_t result;
            rc = kvt_client_generate (client, S_TENANT, tokens, prefix_tokens, 0, &result);
            if (rc == 0 && result.computed != prefix_blocks)
                rc = -EIO;
            kvt_client_generate_fini (&result);
        }
        else {
            kvt_client_store_t stored;
            rc = kvt_client_store (client, S_TENANT, tokens, prefix_tokens, kv, kv_bytes,
                                   &stored);
            if (rc == 0 && stored.stored_blocks != prefix_blocks)
                rc = -EIO;
        }
        if (rc)
            fprintf (stderr, "kvtier bench host --ttft: %s of prefix %d failed: %s %s\n",
                     by_compute? "GENERATE": "STORE", p, kvt_client_error_name (client),
                     kvt_client_error_detail (client));
        free (tokens);
    }
    free (kv);
    double store_s = (kvt_bench_now_us () - store_start) / 1e6;
    double demote_start = kvt_bench_now_us ();
    uint64_t on_gpu = 0, on_host = 0;
    if (rc == 0)
        rc = s_demote (client, KVT_TIER_GPU, (uint64_t) prefixes * prefix_blocks, &on_gpu);
    if (rc == 0)
        rc = s_demote (client, KVT_TIER_HOST, on_gpu, &on_host);
    double demote_s = (kvt_bench_now_us () - demote_start) / 1e6;
    if (opts->verbose)
        fprintf (stderr, "groups %d: %d prefixes %s in %.2f s, %" PRIu64 " blocks demoted to "
                 "NVMe in %.2f s\n", run->groups, prefixes, by_compute? "computed": "stored",
                 store_s, on_host, demote_s);
    if (rc == 0)
        rc = kvt_bench_host_raw_open (&raw, nvme_dir, block_bytes, opts->qd);
    s_groups_t before = { 0 }, after = { 0 };
    for (int p = 0; p < prefixes && rc == 0; p++) {
        //  p = 0 is the warm-up: timed like the others, not kept
        s_sample_t sample = { 0 };
        if (p == 1)
            rc = s_groups_read (client, &before);
        if (rc == 0)
            rc = kvt_bench_host_raw_run (&raw, prefix_blocks, &sample.disk_us);
        uint64_t *tokens = s_tokens (prefix_tokens, p, fresh, (uint64_t) (8000 + p), hello.vocab);
        if (rc == 0)
            rc = s_generate (client, tokens, prefix_tokens + fresh, prefix_blocks,
                             KVT_TIER_NVME, &sample.ttft_us, &sample.server_ttft_us);
        free (tokens);
        tokens = s_tokens (prefix_tokens, p, fresh, (uint64_t) (9000 + p), hello.vocab);
        double ignored;
        if (rc == 0)
            rc = s_generate (client, tokens, prefix_tokens + fresh, prefix_blocks,
                             KVT_TIER_GPU, &sample.compute_us, &ignored);
        free (tokens);
        if (rc == 0 && p > 0)
            run->samples [p - 1] = sample;
        if (rc == 0 && opts->verbose)
            fprintf (stderr, "groups %d, %s %d: disk alone %.1f ms, TTFT %.1f ms (server "
                     "%.1f), compute alone %.1f ms\n", run->groups, p? "rep": "warm-up", p,
                     sample.disk_us / 1e3, sample.ttft_us / 1e3,
                     sample.server_ttft_us / 1e3, sample.compute_us / 1e3);
    }
    if (rc == 0)
        rc = s_groups_read (client, &after);
    if (rc == 0) {
        run->counters.group_jobs = after.group_jobs - before.group_jobs;
        run->counters.early_replies = after.early_replies - before.early_replies;
        run->counters.layers_ready = after.layers_ready - before.layers_ready;
        run->counters.group_reads = after.group_reads - before.group_reads;
        run->counters.nvme_bytes = after.nvme_bytes - before.nvme_bytes;
        //  Every timed request read its whole prefix from disk
        if (run->counters.nvme_bytes < (uint64_t) opts->reps * kv_bytes) {
            fprintf (stderr, "kvtier bench host --ttft: %" PRIu64 " bytes NVMe -> host over "
                     "%d reps, expected %zu each\n", run->counters.nvme_bytes, opts->reps,
                     kv_bytes);
            rc = -EIO;
        }
    }

    kvt_bench_host_raw_close (&raw);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    return rc;
}

//  Run the TTFT part. Returns the exit code (0 or 1).
int
kvt_bench_host_ttft_run (const kvt_bench_host_ttft_opts_t *opts)
{
    const s_shape_t *shape = kvt_runtime_gpu_count () > 0? &s_shape_8b: &s_shape_tiny;
    size_t block_bytes = s_block_bytes (shape);
    int prefix_mib = opts->prefix_mib? opts->prefix_mib: shape->prefix_mib;
    size_t fresh = (size_t) (opts->fresh? opts->fresh: shape->fresh);
    size_t prefix_blocks = ((size_t) prefix_mib << 20) / block_bytes;
    if (prefix_blocks < 1) {
        fprintf (stderr, "kvtier bench host --ttft: --prefix-mib %d is under one block "
                 "(%zu KiB)\n", prefix_mib, block_bytes >> 10);
        return 1;
    }
    char work_dir [1024];
    snprintf (work_dir, sizeof (work_dir), "%s/kvt-bench-ttft-XXXXXX", opts->dir);
    if (!mkdtemp (work_dir)) {
        fprintf (stderr, "kvtier bench host --ttft: cannot create a folder in %s: %s\n",
                 opts->dir, strerror (errno));
        return 1;
    }
    //  runs [0] ours (--groups), runs [1] whole blocks, runs [2] ours
    //  chunk by chunk
    s_config_run_t runs [3] = {
        { .name = "ours", .groups_asked = opts->groups, .layer_major = "gated" },
        { .name = "whole", .groups_asked = 1, .layer_major = "gated" },
        { .name = "chunk", .groups_asked = opts->groups, .layer_major = "off" } };
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        runs [k].samples = (s_sample_t *) zmalloc ((size_t) opts->reps * sizeof (s_sample_t));
        rc = s_config_run (opts, shape, work_dir, prefix_blocks, fresh, &runs [k]);
        if (rc)
            fprintf (stderr, "kvtier bench host --ttft: run '%s' (%d layer group(s)) "
                     "failed: %s\n", runs [k].name, runs [k].groups_asked, kvt_strerror (rc));
    }
    char command [1200];
    snprintf (command, sizeof (command), "rm -rf '%s'", work_dir);
    if (system (command) != 0)
        fprintf (stderr, "kvtier bench host --ttft: could not remove %s\n", work_dir);
    if (rc) {
        for (int k = 0; k < 3; k++)
            free (runs [k].samples);
        return 1;
    }
    int reps = opts->reps;
    double ttft_groups = s_median_field (&runs [0], 1, reps, offsetof (s_sample_t, ttft_us));
    double ttft_whole = s_median_field (&runs [1], 1, reps, offsetof (s_sample_t, ttft_us));
    double ttft_chunk = s_median_field (&runs [2], 1, reps, offsetof (s_sample_t, ttft_us));
    double disk = s_median_field (runs, 3, reps, offsetof (s_sample_t, disk_us));
    double compute = s_median_field (runs, 3, reps, offsetof (s_sample_t, compute_us));
    //  Per runtime, for the notes
    double disk_of [3], compute_of [3], server_of [3];
    for (int k = 0; k < 3; k++) {
        disk_of [k] = s_median_field (&runs [k], 1, reps, offsetof (s_sample_t, disk_us));
        compute_of [k] = s_median_field (&runs [k], 1, reps, offsetof (s_sample_t, compute_us));
        server_of [k] = s_median_field (&runs [k], 1, reps,
                                        offsetof (s_sample_t, server_ttft_us));
    }
    double bound = disk > compute? disk: compute;
    double serial = disk + compute;
    size_t kv_bytes = prefix_blocks * block_bytes;

    kvt_bench_report_t *report = kvt_bench_report_new ("host --ttft", opts->json);
    //  Notes stay under the reporter's 128 characters
    char note [128];
    kvt_bench_report_note (report, "shape", shape->name);
    snprintf (note, sizeof (note), "%zu blocks x %zu KiB = %.0f MiB (%zu tokens) on NVMe",
              prefix_blocks, block_bytes >> 10, (double) kv_bytes / (1 << 20),
              prefix_blocks * S_BLOCK_TOKENS);
    kvt_bench_report_note (report, "prefix", note);
    snprintf (note, sizeof (note), "prefix + %zu new tokens, GENERATE max_new_tokens 1, TTFT at "
              "the client; median of %d reps after a warm-up", fresh, reps);
    kvt_bench_report_note (report, "request", note);
    snprintf (note, sizeof (note), "three runtimes in a row: nvme_layer_groups %d (in effect "
              "%d), 1 (%d), %d chunk by chunk; stream_promotion 1; compute %s",
              runs [0].groups_asked, runs [0].groups, runs [1].groups, runs [2].groups,
              shape->device);
    kvt_bench_report_note (report, "configs", note);
    snprintf (note, sizeof (note), "raw io_uring O_DIRECT reads of %zu payloads, qd %d: %.1f / "
              "%.1f / %.1f ms in the three runtimes, %.2f GB/s pooled", prefix_blocks, opts->qd,
              disk_of [0] / 1e3, disk_of [1] / 1e3, disk_of [2] / 1e3,
              (double) kv_bytes / disk / 1e3);
    kvt_bench_report_note (report, "disk alone", note);
    snprintf (note, sizeof (note), "same request, prefix already on the GPU tier: %.1f / %.1f / "
              "%.1f ms in the three runtimes", compute_of [0] / 1e3, compute_of [1] / 1e3,
              compute_of [2] / 1e3);
    kvt_bench_report_note (report, "compute alone", note);
    snprintf (note, sizeof (note), "server-side ttft_us: ours %.1f ms, whole %.1f ms, chunk by "
              "chunk %.1f ms", server_of [0] / 1e3, server_of [1] / 1e3, server_of [2] / 1e3);
    kvt_bench_report_note (report, "server", note);
    for (int k = 0; k < 3; k++) {
        char key [32];
        snprintf (key, sizeof (key), "counters %s", runs [k].name);
        snprintf (note, sizeof (note), "group jobs %" PRIu64 ", early replies %" PRIu64
                  ", layers_ready %" PRIu64 ", group reads %" PRIu64 ", %.1f MiB read",
                  runs [k].counters.group_jobs, runs [k].counters.early_replies,
                  runs [k].counters.layers_ready, runs [k].counters.group_reads,
                  (double) runs [k].counters.nvme_bytes / (1 << 20));
        kvt_bench_report_note (report, key, note);
    }
    kvt_bench_report_add (report, "ttft_groups_ms", ttft_groups / 1e3, "ms",
                          "ttft_whole_blocks_ms", ttft_whole / 1e3);
    kvt_bench_report_add (report, "ttft_groups_ms", ttft_groups / 1e3, "ms",
                          "ttft_groups_chunk_by_chunk_ms", ttft_chunk / 1e3);
    kvt_bench_report_add (report, "ttft_groups_ms", ttft_groups / 1e3, "ms",
                          "max_disk_compute_ms", bound / 1e3);
    kvt_bench_report_add (report, "ttft_groups_ms", ttft_groups / 1e3, "ms",
                          "sum_disk_compute_ms", serial / 1e3);
    kvt_bench_report_add (report, "ttft_whole_blocks_ms", ttft_whole / 1e3, "ms",
                          "max_disk_compute_ms", bound / 1e3);
    kvt_bench_report_add (report, "ttft_whole_blocks_ms", ttft_whole / 1e3, "ms",
                          "sum_disk_compute_ms", serial / 1e3);
    kvt_bench_report_add (report, "disk_alone_ms", disk / 1e3, "ms", "compute_alone_ms",
                          compute / 1e3);
    //  Of the time overlap could save (sum - max), how much it saved
    double saved = serial - bound > 0? (ttft_whole - ttft_groups) / (serial - bound): 0;
    snprintf (note, sizeof (note), "groups saved %.1f ms against whole blocks: %.0f%% of what "
              "overlap could save (sum - max = %.1f ms)",
              (ttft_whole - ttft_groups) / 1e3, saved * 100, (serial - bound) / 1e3);
    kvt_bench_report_note (report, "reading", note);
    kvt_bench_report_finish (&report);
    for (int k = 0; k < 3; k++)
        free (runs [k].samples);
    return 0;
}
