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
    lru < prefix-adaptive <= belady. Where the team's trace folder is not
    beside the checkout, it replays the bundled first 800 requests of the
    same trace (tools/demo/trace_slice.jsonl) at smaller capacities.
@end
*/

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvt_trace.h"
#include "kvt_policy.h"
#include "kvt_sim.h"

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
    kvt_sim_destroy (&sim);
    kvt_trace_destroy (&trace);
    return status? 1: 0;
}
