/*  =========================================================================
    kvt_bench_host_runtime - `kvtier bench host`'s side of the runtime: its
    configuration, the prefix stored as prompts, and the requests a phase
    sends (DEMOTE, GENERATE, STATS)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_actors.h"
#include "kvt_config.h"
#include "kvt_error.h"
#include "kvt_bench.h"
#include "kvt_bench_host_int.h"
#include "kvt_arena.h"
#include "kvt_huge.h"

//  --------------------------------------------------------------------------
//  Talking to the runtime

//  STATS into *counters; with 'keep', the whole reply too (caller finis).
//  Returns 0 or the client's error.
int
kvt_bench_host_counters_read (kvt_client_t *client, kvt_bench_host_counters_t *counters,
                              kvt_client_stats_t *keep)
{
    kvt_client_stats_t stats;
    int rc = kvt_client_stats (client, &stats);
    if (rc) {
        fprintf (stderr, "kvtier bench host: STATS failed: %s %s\n",
                 kvt_client_error_name (client), kvt_client_error_detail (client));
        return rc;
    }
    memset (counters, 0, sizeof (*counters));
    //  A counter never bumped is absent: it reads as 0
    kvt_client_stats_find (&stats, "scheduler.us_finding_prefix", &counters->us_finding_prefix);
    kvt_client_stats_find (&stats, "scheduler.us_computing", &counters->us_computing);
    kvt_client_stats_find (&stats, "scheduler.us_reserving_gpu", &counters->us_reserving_gpu);
    kvt_client_stats_find (&stats, "scheduler.us_waiting_admission",
                           &counters->us_waiting_admission);
    kvt_client_stats_find (&stats, "migration.bytes_host_to_gpu", &counters->bytes_host_to_gpu);
    kvt_client_stats_find (&stats, "migration.bytes_nvme_to_host", &counters->bytes_nvme_to_host);
    kvt_client_stats_find (&stats, "migration.promoted", &counters->promoted);
    kvt_client_stats_find (&stats, "migration.promote_misses", &counters->promote_misses);
    if (keep)
        *keep = stats;
    else
        kvt_client_stats_fini (&stats);
    return 0;
}

//  A mark (kvt_actor_mark) and when it happened
typedef struct {
    const char *key;
    int64_t at_us;
} s_mark_t;

static int
s_mark_compare (const void *a, const void *b)
{
    int64_t x = ((const s_mark_t *) a)->at_us, y = ((const s_mark_t *) b)->at_us;
    return (x > y) - (x < y);
}

//  Print every counter that moved between two STATS (verbose profiling;
//  gauges named *_last as their value), then the marks set meanwhile
//  ("<actor>.at_<event>", kvt_actor_mark) in the order they happened, in
//  microseconds after the last plan began (scheduler.at_plan_start), or
//  after the first mark where no plan began meanwhile (a demotion): one
//  request's timeline across the actors.
void
kvt_bench_host_counters_print_delta (const char *phase, const kvt_client_stats_t *before,
                                     const kvt_client_stats_t *after)
{
    s_mark_t *marks = (s_mark_t *) calloc (after->count + 1, sizeof (s_mark_t));
    size_t mark_count = 0;
    for (size_t k = 0; k < after->count; k++) {
        uint64_t old = 0;
        kvt_client_stats_find (before, after->keys [k], &old);
        if (after->values [k] == old)
            continue;
        if (strstr (after->keys [k], ".at_"))
            marks [mark_count++] = (s_mark_t) { after->keys [k], (int64_t) after->values [k] };
        else
        if (strstr (after->keys [k], "_last"))       //  A gauge: its value
            fprintf (stderr, "  %-6s %-40s =%" PRIu64 "\n", phase, after->keys [k],
                     after->values [k]);
        else
            fprintf (stderr, "  %-6s %-40s %+" PRId64 "\n", phase, after->keys [k],
                     (int64_t) (after->values [k] - old));
    }
    //  From the plan's start where a request ran in the phase, else from
    //  its first mark (a demotion)
    qsort (marks, mark_count, sizeof (s_mark_t), s_mark_compare);
    uint64_t start = 0, plan_before = 0;
    bool planned = kvt_client_stats_find (after, "scheduler.at_plan_start", &start);
    kvt_client_stats_find (before, "scheduler.at_plan_start", &plan_before);
    if (mark_count > 0 && (!planned || start == plan_before)) {
        start = (uint64_t) marks [0].at_us;
        planned = true;
    }
    if (marks && planned) {
        for (size_t k = 0; k < mark_count; k++)
            fprintf (stderr, "  %-6s timeline %-31s %+" PRId64 " us\n", phase, marks [k].key,
                     marks [k].at_us - (int64_t) start);
    }
    free (marks);
}

//  Move every block from tier 'from' to the tier below; fails unless
//  exactly 'expected' moved.
int
kvt_bench_host_demote (kvt_client_t *client, uint64_t from, uint64_t expected)
{
    uint64_t moved = 0;
    int rc = kvt_client_demote (client, from, from + 1, expected + 1, &moved);
    if (rc == 0 && moved != expected)
        rc = -EIO;
    if (rc)
        fprintf (stderr, "kvtier bench host: DEMOTE %" PRIu64 " -> %" PRIu64 " moved %" PRIu64
                 " of %" PRIu64 " blocks: %s %s\n", from, from + 1, moved, expected,
                 kvt_client_error_name (client), kvt_client_error_detail (client));
    return rc;
}

//  GENERATE every prompt with max_new_tokens 0; each whole prefix must
//  come from tier 'tier'. Returns 0 or a negative code; adds the client's
//  wall time to *wall_us.
int
kvt_bench_host_generate_all (kvt_client_t *client, kvt_bench_host_prompt_t *prompts,
                             int prompt_count, uint64_t tier, double *wall_us)
{
    for (int p = 0; p < prompt_count; p++) {
        kvt_client_generate_t result;
        double start = kvt_bench_now_us ();
        int rc = kvt_client_generate (client, KVT_BENCH_HOST_TENANT, prompts [p].tokens,
                                      prompts [p].token_count, 0, &result);
        *wall_us += kvt_bench_now_us () - start;
        if (rc) {
            fprintf (stderr, "kvtier bench host: GENERATE failed: %s %s\n",
                     kvt_client_error_name (client), kvt_client_error_detail (client));
            return rc;
        }
        uint64_t from [KVT_TIER_COUNT] = { result.from_gpu, result.from_host, result.from_nvme };
        bool whole = from [tier] == prompts [p].blocks && result.computed == 0;
        kvt_client_generate_fini (&result);
        if (!whole) {
            fprintf (stderr, "kvtier bench host: prompt %d: %" PRIu64 "/%" PRIu64 "/%" PRIu64
                     " blocks from gpu/host/nvme, expected all %zu from tier %" PRIu64 "\n",
                     p, from [0], from [1], from [2], prompts [p].blocks, tier);
            return -EIO;
        }
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Runtime set-up

//  Model geometry for 'block_kib' KiB blocks (16 x 2^j, j = 0..7): 4
//  layers x 8 KV heads x head_dim 128 x 16 tokens x bf16 = 256 KiB;
//  fewer layers below that (and fewer KV heads, GQA, below 64 KiB), more
//  tokens per block above.
int
kvt_bench_host_geometry (int block_kib, int *layers, int *kv_heads, int *block_tokens)
{
    *kv_heads = 8;
    *block_tokens = 16;
    switch (block_kib) {
        case 16:   *layers = 1; *kv_heads = 2; return 0;
        case 32:   *layers = 1; *kv_heads = 4; return 0;
        case 64:   *layers = 1; return 0;
        case 128:  *layers = 2; return 0;
        case 256:  *layers = 4; return 0;
        case 512:  *layers = 4; *block_tokens = 32; return 0;
        case 1024: *layers = 4; *block_tokens = 64; return 0;
        case 2048: *layers = 4; *block_tokens = 128; return 0;
        default:   return -EINVAL;
    }
}

//  Blocks one STORE carries: --prompt-mib of KV, at most the prefix.
int
kvt_bench_host_piece_blocks (const kvt_bench_host_opts_t *opts)
{
    int blocks = opts->prompt_mib * 1024 / opts->block_kib;
    if (blocks < 1)
        blocks = 1;
    return blocks < opts->blocks? blocks: opts->blocks;
}

//  Blocks one GENERATE promotes: the whole prefix, or one piece (--split).
int
kvt_bench_host_prompt_blocks (const kvt_bench_host_opts_t *opts)
{
    return opts->split? kvt_bench_host_piece_blocks (opts): opts->blocks;
}

//  Start every actor in this process with our geometry and tiers, the
//  NVMe tier in 'nvme_dir', then 'extra' options ("section/key=value",
//  NULL-terminated; NULL for none) over them. Returns the runtime, or
//  NULL with the reason.
kvt_runtime_t *
kvt_bench_host_start_runtime (const kvt_bench_host_opts_t *opts, const char *nvme_dir,
                              const char *const *extra)
{
    int layers, kv_heads, block_tokens;
    int rc = kvt_bench_host_geometry (opts->block_kib, &layers, &kv_heads, &block_tokens);
    assert (rc == 0);               //  Checked with the options
    //  Memory tiers hold the whole prefix under the low watermark (80%),
    //  so no upkeep demotion runs inside a measured phase
    int memory_blocks = opts->blocks + opts->blocks / 2 + 16;
    //  Migration stages at most half the host tier at once, and a prompt's
    //  prefix that does not fit is partly recomputed: room for a whole one
    int host_blocks = memory_blocks;
    if (host_blocks < 2 * kvt_bench_host_prompt_blocks (opts) + 16)
        host_blocks = 2 * kvt_bench_host_prompt_blocks (opts) + 16;
    char option [32][1200];
    int count = 0;
    snprintf (option [count++], 1200, "scheduler/endpoint=");
    snprintf (option [count++], 1200, "model/layers=%d", layers);
    snprintf (option [count++], 1200, "model/heads=8");
    snprintf (option [count++], 1200, "model/kv_heads=%d", kv_heads);
    snprintf (option [count++], 1200, "model/head_dim=128");
    snprintf (option [count++], 1200, "model/hidden=1024");
    snprintf (option [count++], 1200, "model/intermediate=1024");
    snprintf (option [count++], 1200, "model/vocab=512");
    snprintf (option [count++], 1200, "model/block_tokens=%d", block_tokens);
    snprintf (option [count++], 1200, "tier_gpu/capacity_blocks=%d", memory_blocks);
    snprintf (option [count++], 1200, "tier_host/capacity_blocks=%d", host_blocks);
    snprintf (option [count++], 1200, "tier_nvme/capacity_blocks=%d", 2 * opts->blocks);
    snprintf (option [count++], 1200, "tier_nvme/queue_depth=%d", opts->qd);
    snprintf (option [count++], 1200, "tier_nvme/queue_mib=0");     //  Exactly qd, as raw
    snprintf (option [count++], 1200, "tier_nvme/dir=%s", nvme_dir);
    //  Promotion completes in migration before compute starts, so the
    //  phase timed here holds the whole move (with streaming on, the copy
    //  to the GPU happens under compute, layer by layer: test_gpu_request_path
    //  --bench-stream measures that path)
    snprintf (option [count++], 1200, "migration/stream_promotion=0");
    kvt_config_t *config = kvt_config_new ();
    char error [256] = "";
    for (int k = 0; k < count && rc == 0; k++)
        rc = kvt_config_set_option (config, option [k], error, sizeof (error));
    for (; rc == 0 && extra && *extra; extra++)
        rc = kvt_config_set_option (config, *extra, error, sizeof (error));
    kvt_runtime_t *runtime = NULL;
    if (rc)
        fprintf (stderr, "kvtier bench host: config: %s\n", error);
    else
        runtime = kvt_bench_runtime_start (config, "kvtier bench host");
    kvt_config_destroy (&config);
    return runtime;
}

//  STORE the prefix, in pieces of 'per_piece' blocks of deterministic
//  tokens and KV bytes: one prompt (a STORE, then a STORE_TAIL per further
//  piece), or with 'split' one prompt per piece. *prompts_p and *count_p
//  get the prompts (caller frees, also on failure). Returns 0 or a
//  negative code.
int
kvt_bench_host_store_prefix (kvt_client_t *client, const kvt_client_hello_t *hello,
                             int blocks, size_t per_piece, bool split,
                             kvt_bench_host_prompt_t **prompts_p, int *count_p)
{
    int piece_count = (int) (((size_t) blocks + per_piece - 1) / per_piece);
    int prompt_count = split? piece_count: 1;
    kvt_bench_host_prompt_t *prompts = (kvt_bench_host_prompt_t *)
        zmalloc ((size_t) prompt_count * sizeof (kvt_bench_host_prompt_t));
    for (int p = 0; p < prompt_count; p++) {
        kvt_bench_host_prompt_t *prompt = &prompts [p];
        size_t first = (size_t) p * per_piece;
        prompt->blocks = split && (size_t) blocks - first > per_piece? per_piece
                       : (size_t) blocks - first;
        prompt->token_count = prompt->blocks * hello->block_tokens;
        prompt->tokens = (uint64_t *) zmalloc (prompt->token_count * sizeof (uint64_t));
        kvt_client_random_tokens (prompt->tokens, prompt->token_count, hello->vocab,
                                  (uint64_t) (1000 + p));
    }
    *prompts_p = prompts;
    *count_p = prompt_count;
    void *kv = malloc (per_piece * hello->block_bytes);
    if (!kv)
        abort ();
    int rc = 0;
    for (int piece = 0; piece < piece_count && rc == 0; piece++) {
        //  The piece's blocks [from, to) of its prompt
        kvt_bench_host_prompt_t *prompt = &prompts [split? piece: 0];
        size_t from = split? 0: (size_t) piece * per_piece;
        size_t to = from + per_piece < prompt->blocks? from + per_piece: prompt->blocks;
        size_t kv_bytes = (to - from) * hello->block_bytes;
        kvt_client_fill_bytes (kv, kv_bytes, (uint64_t) (2000 + piece));
        kvt_client_store_t stored;
        size_t tokens = to * hello->block_tokens;
        const char *tenant = KVT_BENCH_HOST_TENANT;
        rc = from == 0? kvt_client_store (client, tenant, prompt->tokens, tokens, kv, kv_bytes,
                                          &stored)
                      : kvt_client_store_tail (client, tenant, prompt->tokens, tokens, from, kv,
                                               kv_bytes, &stored);
        if (rc == 0 && stored.stored_blocks != to - from)
            rc = -EIO;
        if (rc)
            fprintf (stderr, "kvtier bench host: STORE of piece %d (%zu blocks) failed: "
                     "%s %s\n", piece, to - from, kvt_client_error_name (client),
                     kvt_client_error_detail (client));
    }
    free (kv);
    return rc;
}

//  A disk's DMA takes a segment per page, which costs virtual disks
//  (tier_nvme/direct); and tier_nvme/direct = auto learns its read path
//  (kvt_read_path): say what this run had.
void
kvt_bench_host_runtime_notes (kvt_client_t *client, kvt_bench_report_t *report)
{
    char note [256];
    const kvt_arena_t *host_arena = kvt_arena_find ("host");
    if (host_arena) {
        size_t arena_bytes = kvt_arena_block_count (host_arena)
                           * kvt_arena_block_bytes (host_arena);
        size_t large = kvt_huge_large_bytes (kvt_arena_base (host_arena), arena_bytes);
        if (large == SIZE_MAX)
            snprintf (note, sizeof (note), "the kernel does not say which pages back it");
        else
            snprintf (note, sizeof (note), "%.2f of its %zu MiB on 2 MiB pages",
                      (double) large / (double) arena_bytes, arena_bytes >> 20);
        kvt_bench_report_note (report, "host arena", note);
    }
    kvt_client_stats_t stats;
    if (kvt_client_stats (client, &stats) != 0)
        return;
    uint64_t bounce = 0, rounds = 0, switches = 0, other = 0;
    bool learned = kvt_client_stats_find (&stats, "tier_nvme.read_path_rounds", &rounds);
    kvt_client_stats_find (&stats, "tier_nvme.read_path_bounce", &bounce);
    kvt_client_stats_find (&stats, "tier_nvme.read_path_switches", &switches);
    kvt_client_stats_find (&stats, "tier_nvme.read_path_other_per_mille", &other);
    if (learned && rounds == 0)
        snprintf (note, sizeof (note), "%s, 0 rounds (reads never queued beyond the disk's "
                  "depth for a whole round)", bounce? "bounce": "direct");
    else
    if (learned)
        snprintf (note, sizeof (note), "%s after %" PRIu64 " rounds (%" PRIu64 " switches); "
                  "the other way at %.3f of its rate", bounce? "bounce": "direct", rounds,
                  switches, (double) other / 1000.0);
    if (learned)
        kvt_bench_report_note (report, "read path", note);
    kvt_client_stats_fini (&stats);
}
