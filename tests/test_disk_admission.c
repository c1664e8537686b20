/*  =========================================================================
    test_disk_admission - which evicted host blocks are written to disk

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A prompt is computed, pushed down (GPU -> host -> NVMe), computed again
    and pushed down again, never found cached in between: it is used twice
    but every use is a miss.
      migration/disk_admission = all:       written both times;
      migration/disk_admission = reused:    never written (no request
                                            found it cached), so the third
                                            request computes it again;
      migration/disk_admission = predicted: dropped the first time, but its
                                            second offer is in the index's
                                            ghost history, so it is written
                                            the second time and the third
                                            request reads it from disk.
    The outputs are the same in every case.
    Then, predicted, with a longer second prompt (the same 8 blocks and 4
    new ones, as a conversation's next turn): the 4 new blocks come with
    blocks that came back from the ghost history, so they are written too.
@end
*/

#include "testutil.h"

#define S_BLOCKS 8                  //  Full blocks in the prompt

//  Push everything ('blocks' of it) down to disk; return the blocks that
//  reached it.
static uint64_t
s_push_down_n (kvt_client_t *client, uint64_t blocks)
{
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == blocks);
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    return moved;
}

static uint64_t
s_push_down (kvt_client_t *client)
{
    return s_push_down_n (client, S_BLOCKS);
}

//  predicted: a conversation's next turn, after its first turn was dropped
static void
s_next_turn (void)
{
    const char *overrides [] = { "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", "migration/disk_admission=predicted", NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_disk_admission", &hello));
    size_t first_count = S_BLOCKS * hello.block_tokens;
    size_t count = (S_BLOCKS + 4) * hello.block_tokens + 1;
    uint64_t *tokens = t_tokens (count, hello.vocab, 33);
    kvt_client_generate_t run, again;
    t_ok (kvt_client_generate (client, "", tokens, first_count, 4, &run));
    kvt_client_generate_fini (&run);
    t_check (s_push_down (client) == 0);
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &run));
    t_check (run.computed == S_BLOCKS + 4);
    t_check (s_push_down_n (client, S_BLOCKS + 4) == S_BLOCKS + 4);
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &again));
    t_check (again.from_nvme == S_BLOCKS + 4 && again.computed == 0);
    t_check (memcmp (run.tokens, again.tokens, run.token_count * sizeof (uint64_t)) == 0);
    printf ("disk_admission predicted, next turn: written %d blocks (%d came back, 4 new)\n",
            S_BLOCKS + 4, S_BLOCKS);
    kvt_client_generate_fini (&run);
    kvt_client_generate_fini (&again);
    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

static void
s_run (const char *admission, uint64_t expect_first, uint64_t expect_second,
       kvt_client_generate_t *reference)
{
    char key [128];
    snprintf (key, sizeof (key), "migration/disk_admission=%s", admission);
    const char *overrides [] = { "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", key, NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_disk_admission", &hello));
    size_t count = S_BLOCKS * hello.block_tokens + 2;
    uint64_t *tokens = t_tokens (count, hello.vocab, 21);

    kvt_client_generate_t run;
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &run));
    t_check (run.computed == S_BLOCKS);
    if (!reference->tokens)
        *reference = run;
    else {
        t_check (run.token_count == reference->token_count);
        t_check (memcmp (run.tokens, reference->tokens, run.token_count * sizeof (uint64_t)) == 0);
        kvt_client_generate_fini (&run);
    }
    uint64_t first = s_push_down (client);

    t_ok (kvt_client_generate (client, "", tokens, count, 4, &run));
    //  Written the first time: read back; else computed again
    t_check (first? run.from_nvme == S_BLOCKS: run.computed == S_BLOCKS);
    t_check (memcmp (run.tokens, reference->tokens, run.token_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&run);
    uint64_t second = s_push_down (client);

    t_ok (kvt_client_generate (client, "", tokens, count, 4, &run));
    t_check (second? run.from_nvme == S_BLOCKS: run.computed == S_BLOCKS);
    t_check (memcmp (run.tokens, reference->tokens, run.token_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&run);

    kvt_client_stats_t stats;
    t_ok (kvt_client_stats (client, &stats));
    uint64_t by_offer = 0, ghost_hits = 0;
    kvt_client_stats_find (&stats, "migration.disk_admitted_by_offer", &by_offer);
    kvt_client_stats_find (&stats, "prefix_index.ghost_hits", &ghost_hits);
    kvt_client_stats_fini (&stats);
    printf ("disk_admission %-9s written %" PRIu64 " then %" PRIu64 " blocks; admitted by offer %"
            PRIu64 ", ghost hits %" PRIu64 "\n", admission, first, second, by_offer, ghost_hits);
    t_check (first == expect_first && second == expect_second);
    if (streq (admission, "predicted"))
        t_check (by_offer == S_BLOCKS && ghost_hits == S_BLOCKS);

    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

int
main (void)
{
    kvt_client_generate_t reference = { 0 };
    s_run ("all", S_BLOCKS, S_BLOCKS, &reference);
    s_run ("reused", 0, 0, &reference);
    s_run ("predicted", 0, S_BLOCKS, &reference);
    kvt_client_generate_fini (&reference);
    s_next_turn ();
    printf ("test_disk_admission: OK\n");
    return T_EXIT_PASS;
}
