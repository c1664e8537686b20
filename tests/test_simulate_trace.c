/*  =========================================================================
    test_simulate_trace - policies on the first 2000 Mooncake requests

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Replays the first 2000 requests of ../shared/traces/
    mooncake_conversation.jsonl (from KVT_SOURCE_DIR, else the source dir
    compiled in) at a few GPU capacities and asserts
    lru < prefix-adaptive <= belady. Then layer sharding's decode cost on
    the same requests: every output token after the first is one decode
    step; TPOT grows as F falls (1 > 0.5 > 0.25), the F = 1 figure beside
    it does not move; 16 sequences a step make F = 1 much cheaper per
    token and F = 0.5's ratio to it larger; and `kvtier replay --json`
    (when $KVTIER names the binary) reports both. Where the team's trace folder is not
    beside the checkout, it replays the bundled first 800 requests of the
    same trace (tools/demo/trace_slice.jsonl) at smaller capacities.
@end
*/

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "kvt_trace.h"
#include "kvt_policy.h"
#include "kvt_sim.h"

//  Replay the first 2000 requests with one GPU tier of 'capacity' at layer
//  fraction 'fraction', 'batch' sequences a decode step. Returns 0 or an
//  error.
static int
s_decode_run (kvt_sim_t *sim, size_t capacity, double fraction, int batch,
              kvt_sim_result_t *result)
{
    kvt_sim_config_t config;
    kvt_sim_config_defaults (&config, capacity);
    config.request_limit = 2000;
    config.gpu_layer_fraction = fraction;
    config.decode_batch = batch;
    return kvt_sim_run (sim, &config, result);
}

int
main (void)
{
    const char *source = getenv ("KVT_SOURCE_DIR");
#ifdef KVT_SOURCE_DIR
    if (!source)
        source = KVT_SOURCE_DIR;
#endif
    if (!source)
        return 77;
    char path [4096];
    snprintf (path, sizeof (path), "%s/../shared/traces/mooncake_conversation.jsonl", source);
    bool whole = access (path, R_OK) == 0;
    if (!whole) {
        snprintf (path, sizeof (path), "%s/tools/demo/trace_slice.jsonl", source);
        printf ("test_simulate_trace: no ../shared/traces here; the bundled slice %s\n", path);
    }
    char *error = NULL;
    kvt_trace_t *trace = kvt_trace_load (path, &error);
    if (!trace) {
        fprintf (stderr, "test_simulate_trace: %s\n", error);
        return 1;
    }
    kvt_sim_t *sim = kvt_sim_new (trace);
    //  The slice has 2/5 of the requests: capacities scaled alike
    static const size_t capacities_whole [] = { 500, 1000, 2000 };
    static const size_t capacities_slice [] = { 200, 400, 800 };
    const size_t *capacities = whole? capacities_whole: capacities_slice;
    int status = 0;
    for (size_t c = 0; c < 3; c++) {
        kvt_sim_config_t config;
        kvt_sim_config_defaults (&config, capacities [c]);
        config.request_limit = 2000;
        kvt_sim_result_t lru, ours, belady;
        config.policy = "lru";
        status |= kvt_sim_run (sim, &config, &lru);
        config.policy = "prefix-adaptive";
        status |= kvt_sim_run (sim, &config, &ours);
        config.policy = "belady";
        status |= kvt_sim_run (sim, &config, &belady);
        printf ("capacity %5zu: lru %.4f  prefix-adaptive %.4f  belady %.4f  (%.3g accesses/s)\n",
                capacities [c], lru.hit_ratio, ours.hit_ratio, belady.hit_ratio,
                ours.accesses_per_s);
        if (status || !(lru.hit_ratio < ours.hit_ratio && ours.hit_ratio <= belady.hit_ratio)) {
            fprintf (stderr, "test_simulate_trace: expected lru < prefix-adaptive <= belady\n");
            status = 1;
        }
    }
    //  Layer sharding's decode cost on the same 2000 requests
    uint64_t steps = 0;
    for (size_t r = 0; r < 2000 && r < kvt_trace_size (trace); r++) {
        uint32_t output = kvt_trace_request (trace, r)->output_length;
        steps += output > 1? output - 1: 0;
    }
    static const double fractions [] = { 1, 0.5, 0.25 };
    kvt_sim_result_t decode [3];
    for (size_t f = 0; f < 3; f++) {
        status |= s_decode_run (sim, capacities [1], fractions [f], 1, &decode [f]);
        printf ("F = %.2f: hit %.4f, TPOT %.3f ms (F = 1: %.3f), decode %.1f s, %.0f%% copy-bound\n",
                fractions [f], decode [f].hit_ratio, decode [f].tpot_mean_ms,
                decode [f].tpot_unsharded_mean_ms, decode [f].decode_s,
                100 * decode [f].decode_copy_bound);
    }
    if (status || steps == 0
    ||  decode [0].decode_tokens != steps || decode [1].decode_tokens != steps
    ||  decode [0].tpot_mean_ms != decode [0].tpot_unsharded_mean_ms
    ||  decode [0].bytes_decode_h2d != 0
    ||  decode [1].tpot_unsharded_mean_ms != decode [0].tpot_mean_ms
    ||  decode [2].decode_unsharded_s != decode [0].decode_s
    ||  !(decode [0].tpot_mean_ms < decode [1].tpot_mean_ms
          && decode [1].tpot_mean_ms < decode [2].tpot_mean_ms)
    ||  !(decode [0].hit_ratio < decode [2].hit_ratio)) {
        fprintf (stderr, "test_simulate_trace: decode figures out of order (%" PRIu64 " steps)\n",
                 steps);
        status = 1;
    }
    //  16 sequences a step share the weights' read, not their contexts'
    //  copies: F = 1 gets much cheaper per token, F = 0.5 less so, and its
    //  ratio to F = 1 grows; hits do not change
    kvt_sim_result_t batched [2];
    for (size_t f = 0; f < 2; f++)
        status |= s_decode_run (sim, capacities [1], fractions [f], 16, &batched [f]);
    printf ("16 sequences a step: TPOT %.3f ms at F = 1, %.3f at F = 0.5\n",
            batched [0].tpot_mean_ms, batched [1].tpot_mean_ms);
    if (status || !(batched [0].tpot_mean_ms < 0.5 * decode [0].tpot_mean_ms)
    ||  !(batched [1].tpot_mean_ms < decode [1].tpot_mean_ms)
    ||  !(batched [1].tpot_mean_ms / batched [0].tpot_mean_ms
          > decode [1].tpot_mean_ms / decode [0].tpot_mean_ms)
    ||  batched [1].hit_ratio != decode [1].hit_ratio) {
        fprintf (stderr, "test_simulate_trace: batched decode figures out of order\n");
        status = 1;
    }
    kvt_sim_destroy (&sim);
    kvt_trace_destroy (&trace);
    //  The command prints the same model in --json
    const char *kvtier = getenv ("KVTIER");
    if (!status && kvtier && access (kvtier, X_OK) == 0) {
        char command [8192];
        snprintf (command, sizeof (command), "'%s' replay '%s' --simulate --policy lru "
                  "--capacity %zu --requests 2000 --gpu-layer-fraction 0.5 --json",
                  kvtier, path, capacities [1]);
        FILE *pipe = popen (command, "r");
        static char output [65536];
        size_t size = pipe? fread (output, 1, sizeof (output) - 1, pipe): 0;
        output [size] = 0;
        int rc = pipe? pclose (pipe): -1;
        char expect [128];
        snprintf (expect, sizeof (expect), "\"tpot_mean_ms\": %.4f", decode [1].tpot_mean_ms);
        if (rc != 0 || !strstr (output, "\"hit_ratio\": ") || !strstr (output, expect)
        ||  !strstr (output, "\"unsharded\": {\"hit_ratio\": ")) {
            fprintf (stderr, "test_simulate_trace: %s\n  printed no %s:\n%s\n",
                     command, expect, output);
            status = 1;
        }
        else
            printf ("kvtier replay --json: %s\n", expect);
        //  A bad fraction or batch is a usage error (exit 2), named
        static const char *bad [] = { "--gpu-layer-fraction 0", "--gpu-layer-fraction 1.5",
                                      "--decode-batch 0", "--decode-batch 16x",
                                      "--decode-batch 5000" };
        for (size_t b = 0; b < sizeof (bad) / sizeof (bad [0]); b++) {
            snprintf (command, sizeof (command), "'%s' replay '%s' --simulate --requests 10 "
                      "--capacity 10 %s > /dev/null 2>&1", kvtier, path, bad [b]);
            int rc = system (command);
            if (!WIFEXITED (rc) || WEXITSTATUS (rc) != 2) {
                fprintf (stderr, "test_simulate_trace: %s exited %d, not 2\n", command, rc);
                status = 1;
            }
        }
    }
    return status? 1: 0;
}
