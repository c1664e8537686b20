/*  =========================================================================
    kvt_bench_host_both - `kvtier bench host --both`: promotions and the
    watermark upkeep's demotions crossing the link both ways at once,
    through the runtime, beside a pinned memcpy pair (issue #3)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvtier bench host --both [--blocks N] [--block-kib K] [--reps R] [--clients C]
                             [--json]
    A stream of requests whose prefixes are on the host tier, under GPU
    pressure: each request promotes its prefix host -> GPU, and the
    watermark upkeep after it demotes the prefix before it GPU -> host.
    Set-up: --blocks N blocks (default 16384 of 256 KiB, 4 GiB) STOREd as
    8 prompts of P = N / 8 blocks, then all demoted to the host tier. The
    GPU tier holds 4 P blocks with high / low watermarks 50 / 25%, so
    when a request has promoted its P blocks beside the P of the request
    before, the upkeep demotes exactly those P (the oldest), and the next
    request finds P free slots. Timed: the 8 GENERATEs (max_new_tokens 0),
    one after the other, client wall time; then, untimed, everything goes
    back to host for the next rep.
    Once with migration/overlap_upkeep = 1 (the next job waits for the
    upkeep: one direction at a time) and once with 2 (the next job runs
    beside the upkeep: both directions at once, each on its own copy
    stream), a fresh runtime each, in the same process, reps taking turns.
    Baseline, same process: a pinned cudaMemcpy pair (P blocks' bytes
    host -> GPU on one stream and GPU -> host on another, at once, 8
    times) when the GPU tier is device memory; on a CPU build memcpy of
    the same bytes both ways, one after the other (migration's copy there
    is a memcpy on its own thread, one direction at a time).
    With --clients C, C clients run at once, 8 prompts each (N / 8 C
    blocks a prompt; GPU tier 4 C P blocks): the requests overlap as a
    server's do, and migration always has a promotion to run beside the
    upkeep.
    Figures: both-ways GB/s = (bytes host -> GPU + bytes GPU -> host that
    the migration counters moved within the timed window) / wall, for 1
    and 2, and 2 against the memcpy pair; the wall time of 2 against 1.
@end
*/

#include <czmq.h>
#include <pthread.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt.h"
#include "kvt_actors.h"
#include "kvt_arena.h"
#include "kvt_bench.h"
#include "kvt_bench_host_int.h"
#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#endif

#define S_PROMPTS 8                 //  Requests per client per timed round
#define S_MAX_CLIENTS 16            //  Most --clients
#define S_MODES 2                   //  overlap_upkeep = 1, 2

//  One timed round.
typedef struct {
    double wall_us;                 //  The GENERATEs, client wall time
    uint64_t h2d_bytes;             //  migration.bytes_host_to_gpu in the window
    uint64_t d2h_bytes;             //  migration.bytes_gpu_to_host in the window
    uint64_t beside;                //  migration.jobs_beside_upkeep in the window
    uint64_t finding_us;            //  scheduler.us_finding_prefix: match + promotion
    uint64_t computing_us;          //  scheduler.us_computing: the one token each computes
    uint64_t runs_blocks;           //  migration.copy_blocks_host_runs: copied in host runs
    uint64_t scattered_blocks;      //  migration.copy_blocks_host_scattered: the others
} s_round_t;

//  A runtime of one overlap_upkeep mode, its client and prompts.
typedef struct {
    int mode;                       //  migration/overlap_upkeep
    kvt_runtime_t *runtime;
    kvt_client_t *client;
    kvt_client_hello_t hello;
    kvt_bench_host_prompt_t *prompts;
    int prompt_count;
    char dir [1024];                //  Its NVMe tier's folder
} s_side_t;

static uint64_t
s_stat (const kvt_client_stats_t *stats, const char *key)
{
    uint64_t value = 0;
    kvt_client_stats_find (stats, key, &value);
    return value;
}

//  How much counter 'key' moved from 'before' to 'after'.
static uint64_t
s_delta (const kvt_client_stats_t *before, const kvt_client_stats_t *after, const char *key)
{
    return s_stat (after, key) - s_stat (before, key);
}

//  Move every GPU block to the host tier (untimed), whatever the upkeep
//  has already moved.
static int
s_all_to_host (s_side_t *side)
{
    uint64_t moved = 0;
    int rc = kvt_client_demote (side->client, KVT_TIER_GPU, KVT_TIER_HOST, 1u << 30, &moved);
    if (rc) {
        fprintf (stderr, "kvtier bench host --both: DEMOTE failed: %s %s\n",
                 kvt_client_error_name (side->client), kvt_client_error_detail (side->client));
        return rc;
    }
    //  An upkeep beside the DEMOTE may still be moving its last blocks
    for (int k = 0; k < 1000; k++) {
        kvt_client_stats_t stats;
        rc = kvt_client_stats (side->client, &stats);
        if (rc)
            return rc;
        uint64_t used = s_stat (&stats, "tier_gpu.used_blocks");
        kvt_client_stats_fini (&stats);
        if (used == 0)
            return 0;
        zclock_sleep (10);
    }
    fprintf (stderr, "kvtier bench host --both: the GPU tier did not empty\n");
    return -EIO;
}

static int
s_side_start (s_side_t *side, const kvt_bench_host_opts_t *opts, const char *work_dir, int mode)
{
    int clients = opts->clients;
    int per_prompt = opts->blocks / (S_PROMPTS * clients);
    side->mode = mode;
    snprintf (side->dir, sizeof (side->dir), "%s/mode%d", work_dir, mode);
    if (zsys_dir_create ("%s", side->dir)) {
        fprintf (stderr, "kvtier bench host --both: cannot create %s\n", side->dir);
        return -EIO;
    }
    char extra [8][128];
    //  Each client's requests hold P blocks at a time; the upkeep demotes
    //  from 2 P a client down to P a client
    snprintf (extra [0], 128, "tier_gpu/capacity_blocks=%d", 4 * clients * per_prompt);
    //  The watermarks apply to the host tier too: there every block stays
    //  under the high one, so none goes on to disk
    snprintf (extra [1], 128, "tier_host/capacity_blocks=%d", 2 * opts->blocks + 16);
    snprintf (extra [2], 128, "migration/high_watermark=50");
    snprintf (extra [3], 128, "migration/low_watermark=25");
    snprintf (extra [4], 128, "migration/background_batch=%d", 2 * clients * per_prompt);
    snprintf (extra [5], 128, "migration/overlap_upkeep=%d", mode);
    //  Then the user's -o overrides, which win
    const char *options [6 + KVT_BENCH_HOST_OVERRIDES + 1] = {
        extra [0], extra [1], extra [2], extra [3], extra [4], extra [5] };
    for (int k = 0; k < opts->override_count; k++)
        options [6 + k] = opts->overrides [k];
    side->runtime = kvt_bench_host_start_runtime (opts, side->dir, options);
    if (!side->runtime)
        return -EIO;
    side->client = kvt_client_new (kvt_runtime_ipc_endpoint (side->runtime), 600000);
    int rc = side->client? kvt_client_hello (side->client, "kvtier bench host --both",
                                             &side->hello): -EIO;
    if (rc == 0)
        rc = kvt_bench_host_store_prefix (side->client, &side->hello, opts->blocks,
                                          (size_t) per_prompt, true, &side->prompts,
                                          &side->prompt_count);
    if (rc == 0)
        rc = s_all_to_host (side);
    return rc;
}

static void
s_side_stop (s_side_t *side)
{
    for (int p = 0; side->prompts && p < side->prompt_count; p++)
        free (side->prompts [p].tokens);
    free (side->prompts);
    side->prompts = NULL;
    kvt_client_destroy (&side->client);
    kvt_runtime_destroy (&side->runtime);
}

//  One client of a round: its S_PROMPTS prompts, one after the other.
typedef struct {
    const char *endpoint;           //  The runtime's front door
    kvt_bench_host_prompt_t *prompts;   //  Its prompts
    int rc;                         //  Outcome
} s_client_t;

static void *
s_client_run (void *arg)
{
    s_client_t *client = (s_client_t *) arg;
    kvt_client_t *session = kvt_client_new (client->endpoint, 600000);
    double wall_us = 0;
    client->rc = session? kvt_bench_host_generate_all (session, client->prompts, S_PROMPTS,
                                                       KVT_TIER_HOST, &wall_us): -EIO;
    kvt_client_destroy (&session);
    return NULL;
}

//  One timed round: every client's prompts promoted from host, upkeep
//  demoting behind, the clients at once; then all back to host, untimed.
static int
s_round (s_side_t *side, int clients, s_round_t *round)
{
    kvt_client_stats_t before, after;
    int rc = kvt_client_stats (side->client, &before);
    if (rc)
        return rc;
    s_client_t runs [S_MAX_CLIENTS];
    pthread_t threads [S_MAX_CLIENTS];
    double start = kvt_bench_now_us ();
    for (int c = 0; c < clients; c++) {
        runs [c] = (s_client_t) { kvt_runtime_ipc_endpoint (side->runtime),
                                  side->prompts + c * S_PROMPTS, 0 };
        if (pthread_create (&threads [c], NULL, s_client_run, &runs [c]))
            abort ();
    }
    for (int c = 0; c < clients; c++) {
        pthread_join (threads [c], NULL);
        rc = rc? rc: runs [c].rc;
    }
    double wall_us = kvt_bench_now_us () - start;
    if (rc == 0)
        rc = kvt_client_stats (side->client, &after);
    if (rc == 0) {
        round->wall_us = wall_us;
        round->h2d_bytes = s_delta (&before, &after, "migration.bytes_host_to_gpu");
        round->d2h_bytes = s_delta (&before, &after, "migration.bytes_gpu_to_host");
        round->beside = s_delta (&before, &after, "migration.jobs_beside_upkeep");
        round->finding_us = s_delta (&before, &after, "scheduler.us_finding_prefix");
        round->computing_us = s_delta (&before, &after, "scheduler.us_computing");
        round->runs_blocks = s_delta (&before, &after, "migration.copy_blocks_host_runs");
        round->scattered_blocks = s_delta (&before, &after,
                                           "migration.copy_blocks_host_scattered");
        kvt_client_stats_fini (&after);
    }
    kvt_client_stats_fini (&before);
    if (rc == 0)
        rc = s_all_to_host (side);
    return rc;
}

//  Baseline: 'rounds' x (P blocks' bytes each way). On a GPU tier in
//  device memory a pinned cudaMemcpy pair on two streams at once; else
//  memcpy both ways, one after the other. Returns microseconds, or < 0.
static double
s_baseline_us (size_t bytes, int rounds, bool device)
{
    double us = -1;
#ifdef KVT_WITH_CUDA
    if (device) {
        void *host = NULL, *gpu = NULL;
        cudaStream_t streams [2] = { NULL, NULL };
        if (cudaHostAlloc (&host, 2 * bytes, cudaHostAllocDefault) == cudaSuccess
        &&  cudaMalloc (&gpu, 2 * bytes) == cudaSuccess
        &&  cudaStreamCreateWithFlags (&streams [0], cudaStreamNonBlocking) == cudaSuccess
        &&  cudaStreamCreateWithFlags (&streams [1], cudaStreamNonBlocking) == cudaSuccess) {
            memset (host, 1, 2 * bytes);
            bool ok = true;
            double start = kvt_bench_now_us ();
            for (int r = 0; r < rounds && ok; r++)
                ok = cudaMemcpyAsync (gpu, host, bytes, cudaMemcpyHostToDevice, streams [0])
                     == cudaSuccess
                  && cudaMemcpyAsync ((char *) host + bytes, (char *) gpu + bytes, bytes,
                                      cudaMemcpyDeviceToHost, streams [1]) == cudaSuccess;
            ok = ok && cudaStreamSynchronize (streams [0]) == cudaSuccess
                    && cudaStreamSynchronize (streams [1]) == cudaSuccess;
            if (ok)
                us = kvt_bench_now_us () - start;
        }
        for (int k = 0; k < 2; k++)
            if (streams [k])
                cudaStreamDestroy (streams [k]);
        cudaFree (gpu);
        cudaFreeHost (host);
        return us;
    }
#endif
    (void) device;
    char *a = (char *) malloc (bytes), *b = (char *) malloc (bytes);
    if (a && b) {
        memset (a, 1, bytes);
        memset (b, 2, bytes);
        double start = kvt_bench_now_us ();
        for (int r = 0; r < rounds; r++) {
            memcpy (b, a, bytes);
            memcpy (a, b, bytes);
        }
        us = kvt_bench_now_us () - start;
        if (a [bytes / 2] != b [bytes / 2])     //  Keeps the copies
            us = -1;
    }
    free (a);
    free (b);
    return us;
}

static int
s_compare_rounds (const void *a, const void *b)
{
    double x = ((const s_round_t *) a)->wall_us, y = ((const s_round_t *) b)->wall_us;
    return x < y? -1: x > y;
}

static double
s_gbps (uint64_t bytes, double us)
{
    return us > 0? (double) bytes / us / 1e3: 0;
}

int
kvt_bench_host_both_run (const kvt_bench_host_opts_t *opts, const char *work_dir)
{
    //  A prompt goes up in one STORE frame
    int prompts = S_PROMPTS * (opts->clients > 0? opts->clients: 1);
    size_t prompt_mib = ((size_t) opts->blocks / (size_t) prompts * (size_t) opts->block_kib)
                        >> 10;
    if (opts->clients < 1 || opts->clients > S_MAX_CLIENTS || opts->blocks < prompts * 4
    ||  prompt_mib > KVT_BENCH_HOST_MAX_PROMPT_MIB) {
        fprintf (stderr, "kvtier bench host --both: needs --clients 1..%d, --blocks >= 4 x "
                 "%d x clients and a prompt (blocks / (%d x clients)) of at most %d MiB\n",
                 S_MAX_CLIENTS, S_PROMPTS, S_PROMPTS, KVT_BENCH_HOST_MAX_PROMPT_MIB);
        return 2;
    }
    s_side_t sides [S_MODES] = { { 0 }, { 0 } };
    s_round_t *rounds [S_MODES] = { NULL, NULL };
    int rc = 0;
    for (int m = 0; m < S_MODES; m++)
        rounds [m] = (s_round_t *) zmalloc ((size_t) (opts->reps + 1) * sizeof (s_round_t));
    //  One runtime at a time (each maps the arenas by name): a warm-up round
    //  and the reps of mode 1, then of mode 2
    bool device = false;
    size_t block_bytes = 0;
    for (int m = 0; m < S_MODES && rc == 0; m++) {
        rc = s_side_start (&sides [m], opts, work_dir, m + 1);
        if (rc == 0) {
            kvt_arena_t *gpu = kvt_arena_find ("gpu");
            device = gpu && kvt_arena_on_device (gpu);
            block_bytes = sides [m].hello.block_bytes;
        }
        for (int r = 0; r <= opts->reps && rc == 0; r++)
            rc = s_round (&sides [m], opts->clients, &rounds [m] [r]);
        if (rc == 0 && opts->verbose)
            for (int r = 0; r <= opts->reps; r++)
                fprintf (stderr, "  mode %d round %d: %.1f ms, %.1f + %.1f MiB, %" PRIu64
                         " jobs beside the upkeep%s\n", m + 1, r, rounds [m] [r].wall_us / 1e3,
                         rounds [m] [r].h2d_bytes / 1048576.0,
                         rounds [m] [r].d2h_bytes / 1048576.0, rounds [m] [r].beside,
                         r == 0? " (warm-up)": "");
        s_side_stop (&sides [m]);
    }
    if (rc) {
        fprintf (stderr, "kvtier bench host --both: failed: %s\n", kvt_strerror (rc));
        for (int m = 0; m < S_MODES; m++)
            free (rounds [m]);
        return 1;
    }
    size_t per_prompt_bytes = (size_t) (opts->blocks / prompts) * block_bytes;
    double *base = (double *) zmalloc ((size_t) opts->reps * sizeof (double));
    for (int r = 0; r < opts->reps; r++)
        base [r] = s_baseline_us (per_prompt_bytes, prompts, device);
    qsort (base, (size_t) opts->reps, sizeof (double), kvt_bench_compare_double);
    double base_us = base [opts->reps / 2];
    free (base);
    //  Medians by wall time, warm-up left out
    s_round_t med [S_MODES];
    for (int m = 0; m < S_MODES; m++) {
        qsort (rounds [m] + 1, (size_t) opts->reps, sizeof (s_round_t), s_compare_rounds);
        med [m] = rounds [m] [1 + opts->reps / 2];
        free (rounds [m]);
    }
    uint64_t base_bytes = 2 * (uint64_t) per_prompt_bytes * (uint64_t) prompts;
    double both_gbps [S_MODES];
    for (int m = 0; m < S_MODES; m++)
        both_gbps [m] = s_gbps (med [m].h2d_bytes + med [m].d2h_bytes, med [m].wall_us);

    kvt_bench_report_t *report = kvt_bench_report_new ("host --both", opts->json);
    char note [320];
    snprintf (note, sizeof (note), "%d client(s) at once x %d prompts x %d blocks x %zu KiB, "
              "GPU tier %d blocks, watermarks 50/25%%", opts->clients, S_PROMPTS,
              opts->blocks / prompts, block_bytes >> 10,
              4 * opts->clients * (opts->blocks / prompts));
    kvt_bench_report_note (report, "shape", note);
    snprintf (note, sizeof (note), "median of %d rounds by wall time (one warm-up round left "
              "out); GB/s = 1e9 B/s of both directions over the GENERATEs' wall time",
              opts->reps);
    kvt_bench_report_note (report, "method", note);
    snprintf (note, sizeof (note), device
              ? "pinned cudaMemcpy pair: host -> GPU and GPU -> host on two streams at once"
              : "CPU build: memcpy both ways, one after the other (the GPU tier is host memory)");
    kvt_bench_report_note (report, "baseline", note);
    for (int m = 0; m < S_MODES; m++) {
        snprintf (note, sizeof (note), "%.1f ms; %.1f MiB host -> GPU, %.1f MiB GPU -> host; "
                  "%" PRIu64 " jobs ran beside an upkeep; of the wall, %.1f ms finding "
                  "prefixes (match + promotion), %.1f ms computing; %.0f%% of the blocks "
                  "copied in host runs", med [m].wall_us / 1e3,
                  med [m].h2d_bytes / 1048576.0, med [m].d2h_bytes / 1048576.0, med [m].beside,
                  med [m].finding_us / 1e3, med [m].computing_us / 1e3,
                  100.0 * (double) med [m].runs_blocks
                  / (double) (med [m].runs_blocks + med [m].scattered_blocks + !med [m].runs_blocks));
        kvt_bench_report_note (report, m == 0? "overlap_upkeep 1": "overlap_upkeep 2", note);
    }
    double base_gbps = s_gbps (base_bytes, base_us);
    kvt_bench_report_add (report, "both_ways_beside_gbps", both_gbps [1], "GB/s",
                          device? "memcpy_pair_gbps": "memcpy_gbps", base_gbps);
    kvt_bench_report_add (report, "both_ways_after_gbps", both_gbps [0], "GB/s",
                          device? "memcpy_pair_gbps": "memcpy_gbps", base_gbps);
    kvt_bench_report_add (report, "requests_beside_ms", med [1].wall_us / 1e3, "ms",
                          "requests_after_ms", med [0].wall_us / 1e3);
    kvt_bench_report_finish (&report);
    return 0;
}
