/*  =========================================================================
    test_nvme_restart - blocks on disk survive a restart of the runtime

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A runtime with tier_nvme/dir set to a folder of its own computes some
    prompts and pushes their blocks down to disk, then stops. A new
    runtime on the same folder finds them: LOOKUP reports them on NVMe,
    GENERATE serves them from NVMe with the same output tokens, and LOAD
    returns the same KV bytes as before the restart. The disk tier runs
    with sync_on_ack (group commit) and 2 checksum threads.
@end
*/

#include "testutil.h"

#define S_PROMPTS 4

int
main (void)
{
    char dir [] = "/var/tmp/kvt-restart-XXXXXX";
    t_check (mkdtemp (dir));
    char option [256];
    snprintf (option, sizeof (option), "tier_nvme/dir=%s", dir);
    const char *overrides [] = { option, "tier_gpu/capacity_blocks=64",
                                 "tier_host/capacity_blocks=64", "tier_nvme/sync_on_ack=1",
                                 "tier_nvme/checksum_threads=2", NULL };
    kvt_config_t *config = t_config (overrides);

    kvt_client_generate_t first [S_PROMPTS];
    kvt_client_load_t kv [S_PROMPTS];
    uint64_t *tokens [S_PROMPTS];
    size_t count [S_PROMPTS];
    kvt_client_hello_t hello;
    {
        kvt_runtime_t *runtime = t_start_runtime (config);
        kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
        t_ok (kvt_client_hello (client, "test_nvme_restart", &hello));
        for (int p = 0; p < S_PROMPTS; p++) {
            count [p] = (size_t) (3 + p) * hello.block_tokens + 5;
            tokens [p] = t_tokens (count [p], hello.vocab, (uint64_t) (100 + p));
            t_ok (kvt_client_generate (client, "", tokens [p], count [p], 4, &first [p]));
            t_ok (kvt_client_load (client, "", tokens [p], count [p], &kv [p]));
            t_check (kv [p].blocks == (uint64_t) (3 + p));
        }
        uint64_t moved;
        t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
        t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
        t_check (moved == 3 + 4 + 5 + 6);
        kvt_client_destroy (&client);
        kvt_runtime_destroy (&runtime);
    }
    //  A new runtime on the same folder
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    t_ok (kvt_client_hello (client, "test_nvme_restart", &hello));
    //  Recovery is announced to the index asynchronously at start; give it
    //  a moment before asking
    kvt_client_lookup_t where = { 0 };
    for (int tries = 0; tries < 100; tries++) {
        kvt_client_lookup_fini (&where);
        t_ok (kvt_client_lookup (client, "", tokens [S_PROMPTS - 1], count [S_PROMPTS - 1],
                                 &where));
        if (where.matched_blocks == (uint64_t) (3 + S_PROMPTS - 1))
            break;
        zclock_sleep (20);
    }
    t_check (where.matched_blocks == (uint64_t) (3 + S_PROMPTS - 1));
    for (size_t b = 0; b < where.tier_count; b++)
        t_check (where.tiers [b] == KVT_TIER_NVME);
    kvt_client_lookup_fini (&where);
    for (int p = 0; p < S_PROMPTS; p++) {
        kvt_client_generate_t again;
        t_ok (kvt_client_generate (client, "", tokens [p], count [p], 4, &again));
        t_check (again.from_nvme == (uint64_t) (3 + p) && again.computed == 0);
        t_check (again.token_count == first [p].token_count);
        t_check (memcmp (again.tokens, first [p].tokens,
                         again.token_count * sizeof (uint64_t)) == 0);
        kvt_client_generate_fini (&again);
        kvt_client_load_t loaded;
        t_ok (kvt_client_load (client, "", tokens [p], count [p], &loaded));
        t_check (loaded.kv_bytes == kv [p].kv_bytes);
        t_check (memcmp (loaded.kv, kv [p].kv, kv [p].kv_bytes) == 0);
        kvt_client_load_fini (&loaded);
        kvt_client_load_fini (&kv [p]);
        kvt_client_generate_fini (&first [p]);
        free (tokens [p]);
    }
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    char command [512];
    snprintf (command, sizeof (command), "rm -rf %s", dir);
    t_check (system (command) == 0);
    printf ("test_nvme_restart: OK\n");
    return T_EXIT_PASS;
}
