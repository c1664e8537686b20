/*  =========================================================================
    test_fetch_cost - fetch a cached prefix or compute it again, by cost

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    With scheduler/fetch_policy = cost the scheduler weighs, per request,
    bringing the cached prefix up from its tier against prefilling it
    again. A prompt is computed and pushed down to NVMe (or to the host
    tier), then asked again:
      - over an absurdly slow link (1 KB/s) the scheduler recomputes every
        block (blocks_recomputed_by_choice, GENERATE_OK computed = 8);
      - over a very fast one it fetches them (from_nvme / from_host = 8);
      - with fetch_policy = always it fetches, however slow the link;
      - a calibration file (scheduler/calibration) with a slow disk gives
        its rate when the key is not set.
    With the prompt's first 3 blocks left on the GPU tier and the other 5
    on disk, a slow link cuts the prefix after the GPU blocks. The output
    tokens are the same every time. A bad rate is refused at start.
@end
*/

#include "testutil.h"

#define S_BLOCKS 8                  //  Full blocks in the prompt

typedef struct {
    const char *policy;             //  scheduler/fetch_policy
    const char *rate_key;           //  Which link is set
    const char *rate;               //  Its rate in GB/s
    int tier;                       //  Where the prefix is pushed down to
    bool fetch;                     //  Expect a fetch (else a recompute)
    size_t keep;                    //  Leading blocks left on the GPU tier
} s_case_t;

static void
s_run (const s_case_t *test, kvt_client_generate_t *reference)
{
    char rate [256], policy [128];
    snprintf (rate, sizeof (rate), "scheduler/%s=%s", test->rate_key, test->rate);
    snprintf (policy, sizeof (policy), "scheduler/fetch_policy=%s", test->policy);
    //  lru-leaf evicts the deepest blocks first: a partial push-down
    //  leaves the prompt's leading blocks on the GPU tier
    const char *overrides [] = { "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", "migration/policy=lru-leaf", policy, rate, NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_fetch_cost", &hello));
    size_t count = S_BLOCKS * hello.block_tokens + 3;
    uint64_t *tokens = t_tokens (count, hello.vocab, 9);
    kvt_client_generate_t first, again;
    t_ok (kvt_client_generate (client, "", tokens, count, 5, &first));
    t_check (first.computed == S_BLOCKS);
    uint64_t moved, down = S_BLOCKS - test->keep;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, down, &moved));
    t_check (moved == down);
    if (test->tier == KVT_TIER_NVME) {
        t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, down, &moved));
        t_check (moved == down);
    }
    t_ok (kvt_client_generate (client, "", tokens, count, 5, &again));
    uint64_t from = test->tier == KVT_TIER_NVME? again.from_nvme: again.from_host;
    kvt_client_stats_t stats;
    t_ok (kvt_client_stats (client, &stats));
    uint64_t by_choice = 0;
    kvt_client_stats_find (&stats, "scheduler.blocks_recomputed_by_choice", &by_choice);
    kvt_client_stats_fini (&stats);
    printf ("fetch_policy %-6s %s=%-8s %zu blocks on GPU, %" PRIu64 " on %s: fetched %" PRIu64
            ", computed %" PRIu64 ", recomputed by choice %" PRIu64 "\n", test->policy,
            test->rate_key, test->rate, test->keep, down,
            test->tier == KVT_TIER_NVME? "NVMe": "host", from, again.computed, by_choice);
    t_check (again.from_gpu == test->keep);
    if (test->fetch)
        t_check (from == down && again.computed == 0 && by_choice == 0);
    else            //  The prefix is cut after the GPU blocks, which cost nothing
        t_check (from == 0 && again.computed == down && by_choice == down);
    //  Same output whichever way the prefix came back, and in every case
    t_check (again.token_count == first.token_count);
    t_check (memcmp (again.tokens, first.tokens, first.token_count * sizeof (uint64_t)) == 0);
    if (reference->tokens) {
        t_check (first.token_count == reference->token_count);
        t_check (memcmp (first.tokens, reference->tokens,
                         first.token_count * sizeof (uint64_t)) == 0);
        kvt_client_generate_fini (&first);
    }
    else
        *reference = first;
    kvt_client_generate_fini (&again);
    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

int
main (void)
{
    //  A calibration file (as `kvtier bench host --calibration` writes)
    //  with a slow disk: its rate is used when the key is not set
    char calibration [64];
    snprintf (calibration, sizeof (calibration), "/tmp/kvt_fetch_cost_%d.json", (int) getpid ());
    FILE *file = fopen (calibration, "w");
    t_check (file);
    fprintf (file, "{\"kvtier_calibration\": 1, \"nvme_read_GBps\": 0.000001}\n");
    fclose (file);
    const s_case_t cases [] = {
        { "cost",   "calibration",    calibration, KVT_TIER_NVME, false, 0 },
        { "cost",   "nvme_read_GBps", "0.000001", KVT_TIER_NVME, false, 0 },
        { "cost",   "nvme_read_GBps", "1000",     KVT_TIER_NVME, true,  0 },
        { "always", "nvme_read_GBps", "0.000001", KVT_TIER_NVME, true,  0 },
        { "cost",   "h2d_GBps",       "0.000001", KVT_TIER_HOST, false, 0 },
        { "cost",   "h2d_GBps",       "1000",     KVT_TIER_HOST, true,  0 },
        { "cost",   "nvme_read_GBps", "0.000001", KVT_TIER_NVME, false, 3 },
        { "cost",   "nvme_read_GBps", "1000",     KVT_TIER_NVME, true,  3 },
    };
    kvt_client_generate_t reference = { 0 };
    for (size_t k = 0; k < sizeof (cases) / sizeof (cases [0]); k++)
        s_run (&cases [k], &reference);
    kvt_client_generate_fini (&reference);
    unlink (calibration);

    //  A rate that is not a positive number stops the server at start
    static const char *const bad [] = { "scheduler/fetch_policy=cost",
                                        "scheduler/nvme_read_GBps=fast", NULL };
    kvt_config_t *config = t_config (bad);
    kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
    t_check (kvt_runtime_start (runtime) != 0);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    printf ("test_fetch_cost: OK\n");
    return T_EXIT_PASS;
}
