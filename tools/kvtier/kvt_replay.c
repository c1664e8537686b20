/*  =========================================================================
    kvt_replay - drive a server with a Mooncake trace and account for it

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvt_xxh.h"
#include "kvt_replay.h"
#include "kvt_trace.h"
#include "kvt_util.h"

//  Build the prompt of one trace request: tokens_per_hash tokens per hash
//  id, the last block cut in proportion to the trace's input length.
static size_t
s_prompt (const kvt_trace_request_t *request, int tokens_per_hash, int vocab, uint64_t **tokens_p)
{
    size_t blocks = request->hash_count;
    size_t tail_tokens = (size_t) tokens_per_hash;
    if (blocks > 0 && request->input_length > 0) {
        size_t tail = request->input_length - (blocks - 1) * KVT_TRACE_BLOCK_TOKENS;
        if (tail > 0 && tail <= KVT_TRACE_BLOCK_TOKENS)
            tail_tokens = (tail * (size_t) tokens_per_hash + KVT_TRACE_BLOCK_TOKENS - 1)
                        / KVT_TRACE_BLOCK_TOKENS;
    }
    size_t count = blocks? (blocks - 1) * (size_t) tokens_per_hash + tail_tokens: 0;
    uint64_t *tokens = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    uint32_t *block = (uint32_t *) kvt_zmalloc ((size_t) tokens_per_hash * sizeof (uint32_t));
    for (size_t b = 0; b < blocks; b++) {
        kvt_trace_block_tokens (request->hash_ids [b], block, (size_t) tokens_per_hash, vocab);
        size_t take = b + 1 == blocks? tail_tokens: (size_t) tokens_per_hash;
        for (size_t t = 0; t < take; t++)
            tokens [b * (size_t) tokens_per_hash + t] = block [t];
    }
    free (block);
    *tokens_p = tokens;
    return count;
}

static void
s_progress (size_t done, size_t total, double elapsed_s)
{
    int width = 40;
    int filled = total? (int) (width * done / total): width;
    fprintf (stderr, "\r[%.*s%*s] %zu/%zu requests  %.1fs", filled,
             "########################################", width - filled, "", done, total,
             elapsed_s);
    if (done == total)
        fprintf (stderr, "\n");
}

int
kvt_replay_run (const char *endpoint, const kvt_trace_t *trace,
                const kvt_replay_options_t *options, kvt_replay_result_t *result)
{
    memset (result, 0, sizeof (*result));
    kvt_client_t *client = kvt_client_new (endpoint, 120000);
    if (!client)
        return -EINVAL;
    kvt_client_hello_t hello;
    int rc = kvt_client_hello (client, "kvtier-replay", &hello);
    if (rc) {
        kvt_client_destroy (&client);
        return rc;
    }
    size_t total = kvt_trace_size (trace);
    if (options->max_requests && options->max_requests < total)
        total = options->max_requests;
    result->ttft_us = (int64_t *) kvt_zmalloc ((total + 1) * sizeof (int64_t));
    XXH3_state_t *digest = XXH3_createState ();
    XXH3_64bits_reset (digest);
    bool bar = options->progress && isatty (STDERR_FILENO);
    int64_t started = kvt_now_us ();
    for (size_t k = 0; k < total; k++) {
        const kvt_trace_request_t *request = kvt_trace_request (trace, k);
        uint64_t *tokens;
        size_t count = s_prompt (request, options->tokens_per_hash, (int) hello.vocab, &tokens);
        uint64_t max_new = request->output_length;
        if (options->max_new_tokens > 0 && max_new > (uint64_t) options->max_new_tokens)
            max_new = (uint64_t) options->max_new_tokens;
        kvt_client_generate_t out;
        rc = count? kvt_client_generate (client, "", tokens, count, max_new, &out): -EINVAL;
        free (tokens);
        result->requests++;
        result->prompt_tokens += count;
        if (rc == -ETIMEDOUT || rc == -EINTR) {
            kvt_client_destroy (&client);
            XXH3_freeState (digest);
            return rc;
        }
        if (rc) {
            //  Say why, for the first few: an error in a replay is a finding
            if (result->errors++ < 3)
                fprintf (stderr, "kvtier replay: request %zu: %s: %s\n", k,
                         kvt_client_error_name (client), kvt_client_error_detail (client));
            continue;
        }
        result->from_tier [0] += out.from_gpu;
        result->from_tier [1] += out.from_host;
        result->from_tier [2] += out.from_nvme;
        result->computed += out.computed;
        result->ttft_us [k] = (int64_t) out.ttft_us;
        XXH3_64bits_update (digest, out.tokens, out.token_count * sizeof (uint64_t));
        kvt_client_generate_fini (&out);
        if (bar && (k % 8 == 0 || k + 1 == total))
            s_progress (k + 1, total, (double) (kvt_now_us () - started) / 1e6);
    }
    result->wall_s = (double) (kvt_now_us () - started) / 1e6;
    result->output_digest = XXH3_64bits_digest (digest);
    XXH3_freeState (digest);
    rc = kvt_client_stats (client, &result->stats);
    kvt_client_destroy (&client);
    return rc;
}

void
kvt_replay_result_fini (kvt_replay_result_t *result)
{
    free (result->ttft_us);
    kvt_client_stats_fini (&result->stats);
    memset (result, 0, sizeof (*result));
}

static int
s_compare_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

int64_t
kvt_replay_ttft_percentile (const kvt_replay_result_t *result, double percentile)
{
    if (result->requests == 0)
        return 0;
    int64_t *sorted = (int64_t *) kvt_zmalloc (result->requests * sizeof (int64_t));
    memcpy (sorted, result->ttft_us, result->requests * sizeof (int64_t));
    qsort (sorted, result->requests, sizeof (int64_t), s_compare_i64);
    size_t index = (size_t) (percentile / 100.0 * (double) (result->requests - 1) + 0.5);
    int64_t value = sorted [index];
    free (sorted);
    return value;
}

double
kvt_replay_ttft_mean (const kvt_replay_result_t *result)
{
    double sum = 0;
    for (size_t k = 0; k < result->requests; k++)
        sum += (double) result->ttft_us [k];
    return result->requests? sum / (double) result->requests: 0.0;
}

static uint64_t
s_counter (const kvt_replay_result_t *result, const char *key)
{
    uint64_t value = 0;
    kvt_client_stats_find (&result->stats, key, &value);
    return value;
}

static void
s_row_u (const char *name, uint64_t a, const kvt_replay_result_t *baseline, uint64_t b)
{
    if (baseline)
        printf ("  %-34s %14" PRIu64 " %14" PRIu64 "\n", name, a, b);
    else
        printf ("  %-34s %14" PRIu64 "\n", name, a);
}

static void
s_row_f (const char *name, double a, const kvt_replay_result_t *baseline, double b)
{
    if (baseline)
        printf ("  %-34s %14.2f %14.2f\n", name, a, b);
    else
        printf ("  %-34s %14.2f\n", name, a);
}

void
kvt_replay_print_report (const char *title, const kvt_replay_result_t *r,
                         const char *baseline_title, const kvt_replay_result_t *b)
{
    static const kvt_replay_result_t zero;
    const kvt_replay_result_t *z = b? b: &zero;
    printf ("\n  %-34s %14s", "", title);
    if (b)
        printf (" %14s", baseline_title);
    printf ("\n");
    s_row_u ("requests", r->requests, b, z->requests);
    s_row_u ("errors", r->errors, b, z->errors);
    s_row_u ("prompt tokens", r->prompt_tokens, b, z->prompt_tokens);
    s_row_u ("prefix blocks from GPU", r->from_tier [0], b, z->from_tier [0]);
    s_row_u ("prefix blocks from host", r->from_tier [1], b, z->from_tier [1]);
    s_row_u ("prefix blocks from NVMe", r->from_tier [2], b, z->from_tier [2]);
    s_row_u ("blocks computed", r->computed, b, z->computed);
    uint64_t all = r->from_tier [0] + r->from_tier [1] + r->from_tier [2] + r->computed;
    uint64_t all_b = z->from_tier [0] + z->from_tier [1] + z->from_tier [2] + z->computed;
    s_row_f ("prefix hit ratio", all? (double) (all - r->computed) / (double) all: 0.0, b,
             all_b? (double) (all_b - z->computed) / (double) all_b: 0.0);
    s_row_f ("MB moved GPU -> host", s_counter (r, "migration.bytes_gpu_to_host") / 1e6, b,
             s_counter (z, "migration.bytes_gpu_to_host") / 1e6);
    s_row_f ("MB moved host -> GPU", s_counter (r, "migration.bytes_host_to_gpu") / 1e6, b,
             s_counter (z, "migration.bytes_host_to_gpu") / 1e6);
    //  Blocks that crossed in batches whose host slots run together (the
    //  staged copy path's condition; kvt_migration_copy.c)
    uint64_t in_runs = s_counter (r, "migration.copy_blocks_host_runs");
    uint64_t blocks = in_runs + s_counter (r, "migration.copy_blocks_host_scattered");
    uint64_t in_runs_b = s_counter (z, "migration.copy_blocks_host_runs");
    uint64_t blocks_b = in_runs_b + s_counter (z, "migration.copy_blocks_host_scattered");
    s_row_f ("% host<->GPU blocks in host runs", blocks? 100.0 * in_runs / blocks: 0.0, b,
             blocks_b? 100.0 * in_runs_b / blocks_b: 0.0);
    s_row_f ("MB written host -> NVMe", s_counter (r, "tier_nvme.write_bytes") / 1e6, b,
             s_counter (z, "tier_nvme.write_bytes") / 1e6);
    s_row_f ("MB read NVMe -> host", s_counter (r, "tier_nvme.read_bytes") / 1e6, b,
             s_counter (z, "tier_nvme.read_bytes") / 1e6);
    s_row_u ("NVMe checksum failures", s_counter (r, "tier_nvme.checksum_failures"), b,
             s_counter (z, "tier_nvme.checksum_failures"));
    s_row_f ("TTFT p50 (ms)", (double) kvt_replay_ttft_percentile (r, 50) / 1e3, b,
             (double) kvt_replay_ttft_percentile (z, 50) / 1e3);
    s_row_f ("TTFT mean (ms)", kvt_replay_ttft_mean (r) / 1e3, b,
             kvt_replay_ttft_mean (z) / 1e3);
    s_row_f ("TTFT p99 (ms)", (double) kvt_replay_ttft_percentile (r, 99) / 1e3, b,
             (double) kvt_replay_ttft_percentile (z, 99) / 1e3);
    s_row_f ("wall time (s)", r->wall_s, b, z->wall_s);
    printf ("  %-34s %14" PRIx64, "output digest (xxh3)", r->output_digest);
    if (b)
        printf (" %14" PRIx64, z->output_digest);
    printf ("\n");
}
