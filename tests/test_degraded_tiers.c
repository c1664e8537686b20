/*  =========================================================================
    test_degraded_tiers - a missing disk tier and tiny tiers keep serving

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    With tier_nvme pointed at a folder that does not exist, the runtime
    starts (the disk tier disabled, reported in STATS) and keeps serving
    under pressure: blocks that cannot go down are dropped, never block a
    request. With every tier small, no tier ever holds more blocks than its
    capacity, and outputs stay those of an uncached run.
@end
*/

#include "testutil.h"

//  Run 30 prompts sharing prefixes; return a digest of all output tokens.
static uint64_t
s_workload (kvt_client_t *client, uint64_t vocab, uint64_t block_tokens)
{
    uint64_t digest = 0;
    for (int k = 0; k < 30; k++) {
        size_t count = (size_t) (4 + k % 7) * block_tokens + (size_t) k % 5;
        uint64_t *tokens = t_tokens (count, vocab, (uint64_t) (k % 4));
        kvt_client_generate_t out;
        t_ok (kvt_client_generate (client, "", tokens, count, 2, &out));
        for (size_t t = 0; t < out.token_count; t++)
            digest = digest * 31 + out.tokens [t];
        kvt_client_generate_fini (&out);
        free (tokens);
    }
    return digest;
}

int
main (void)
{
    //  Reference: no caching at all
    static const char *const uncached [] = { "scheduler/caching=0", NULL };
    kvt_config_t *config = t_config (uncached);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_degraded_tiers", &hello));
    uint64_t expected = s_workload (client, hello.vocab, hello.block_tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);

    //  No disk tier: served anyway, blocks dropped off the host tier
    static const char *const no_disk [] = { "tier_gpu/capacity_blocks=16",
        "tier_host/capacity_blocks=8", "tier_nvme/dir=/nonexistent/kvtier-test", NULL };
    config = t_config (no_disk);
    runtime = t_start_runtime (config);
    client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    t_check (s_workload (client, hello.vocab, hello.block_tokens) == expected);
    t_check (t_stat (client, "tier_nvme.disabled") == 1);
    t_check (t_stat (client, "migration.dropped_no_room_below") > 0);
    t_check (t_stat (client, "tier_host.used_blocks") <= 8);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);

    //  Tiny tiers everywhere: capacity is a hard cap, outputs unchanged
    static const char *const tiny [] = { "tier_gpu/capacity_blocks=12",
        "tier_host/capacity_blocks=6", "tier_nvme/capacity_blocks=10", NULL };
    config = t_config (tiny);
    runtime = t_start_runtime (config);
    client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    t_check (s_workload (client, hello.vocab, hello.block_tokens) == expected);
    t_check (t_stat (client, "tier_gpu.used_blocks") <= 12);
    t_check (t_stat (client, "tier_host.used_blocks") <= 6);
    t_check (t_stat (client, "tier_nvme.used_blocks") <= 10);
    t_check (t_stat (client, "migration.dropped") > 0);       //  Fell off the disk tier
    t_check (t_stat (client, "prefix_index.blocks_nvme") <= 10);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    //  Write on second hit: only blocks found cached since they were made
    //  reach the disk; the others are forgotten when the host tier evicts
    static const char *const second_hit [] = { "migration/disk_admission=reused", NULL };
    config = t_config (second_hit);
    runtime = t_start_runtime (config);
    client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    size_t count = 4 * hello.block_tokens;
    uint64_t *reused = t_tokens (count, hello.vocab, 41), *once = t_tokens (count, hello.vocab, 42);
    kvt_client_generate_t out;
    for (int k = 0; k < 2; k++) {
        t_ok (kvt_client_generate (client, "", reused, count, 1, &out));
        kvt_client_generate_fini (&out);
    }
    t_ok (kvt_client_generate (client, "", once, count, 1, &out));
    kvt_client_generate_fini (&out);
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == 8);
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_check (moved == 4);           //  Only the reused prompt's blocks
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (client, "", reused, count, &where));
    t_check (where.matched_blocks == 4 && where.tiers [0] == KVT_TIER_NVME);
    kvt_client_lookup_fini (&where);
    t_ok (kvt_client_lookup (client, "", once, count, &where));
    t_check (where.matched_blocks == 0);
    kvt_client_lookup_fini (&where);
    t_check (t_stat (client, "migration.disk_declined_unreused") == 4);
    free (reused);
    free (once);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    //  A prefix on disk longer than the host tier can stage: the request
    //  still succeeds, takes what fits (half the host tier) from disk and
    //  recomputes the rest, with the same output
    static const char *const small_host [] = { "tier_host/capacity_blocks=8", NULL };
    config = t_config (small_host);
    runtime = t_start_runtime (config);
    client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    count = 20 * hello.block_tokens;
    uint64_t *long_prompt = t_tokens (count, hello.vocab, 43);
    kvt_client_generate_t first_run, second_run;
    t_ok (kvt_client_generate (client, "", long_prompt, count, 3, &first_run));
    for (int round = 0; round < 3; round++) {     //  Host -> disk in host-sized steps
        t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 6, &moved));
        t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 8, &moved));
    }
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 6, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 8, &moved));
    t_ok (kvt_client_lookup (client, "", long_prompt, count, &where));
    t_check (where.matched_blocks == 20 && where.tiers [19] == KVT_TIER_NVME);
    kvt_client_lookup_fini (&where);
    t_ok (kvt_client_generate (client, "", long_prompt, count, 3, &second_run));
    t_check (second_run.from_nvme == 4 && second_run.computed == 16);
    t_check (second_run.token_count == first_run.token_count);
    t_check (memcmp (second_run.tokens, first_run.tokens,
                     first_run.token_count * sizeof (uint64_t)) == 0);
    t_check (t_stat (client, "migration.nvme_blocks_not_staged") == 16);
    kvt_client_generate_fini (&first_run);
    kvt_client_generate_fini (&second_run);
    free (long_prompt);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    printf ("test_degraded_tiers: OK\n");
    return T_EXIT_PASS;
}
