/*  =========================================================================
    test_upkeep - what waits for the watermark upkeep (migration/overlap_upkeep)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The GPU tier holds 16 blocks and its high watermark is 50%. Prompt A
    (8 blocks) fills it to the watermark, so the job that reserved A's
    slots is followed by an upkeep, which migration/test_upkeep_delay_ms
    holds back for S_DELAY_MS. Prompt B (4 blocks) is sent as soon as A is
    answered. Then:
      overlap_upkeep = 2 (beside): B's reservation runs at once, beside
        the waiting upkeep: B is answered before the upkeep has demoted
        anything (migration.jobs_beside_upkeep counts it);
      overlap_upkeep = 1 (before the next job): B's reservation waits for
        the upkeep, so when B is answered A's blocks are already on host.
    Either way the upkeep then demotes down to the low watermark (10%, one
    block): 7 of A's blocks (1), or 11 of A's and B's (2), every block of
    A and B is found by LOOKUP, none lost, and A and B give the same
    tokens again, from cache, as they did when computed.
@end
*/

#include "testutil.h"

#define S_DELAY_MS 1000             //  How long each upkeep is held back
#define S_A_BLOCKS 8                //  Prompt A's full blocks (50% of the GPU tier)
#define S_B_BLOCKS 4                //  Prompt B's

//  Wait until STATS counter 'key' reaches 'want' (at most 20 s).
static uint64_t
s_wait_stat (kvt_client_t *client, const char *key, uint64_t want)
{
    uint64_t value = 0;
    for (int k = 0; k < 400 && (value = t_stat (client, key)) < want; k++)
        zclock_sleep (50);
    return value;
}

//  Blocks of prompt 'tokens' found cached, and how many on 'tier'.
static size_t
s_found (kvt_client_t *client, const uint64_t *tokens, size_t count, int tier, size_t *on_tier)
{
    kvt_client_lookup_t found;
    t_ok (kvt_client_lookup (client, "", tokens, count, &found));
    *on_tier = 0;
    for (size_t k = 0; k < found.matched_blocks; k++)
        *on_tier += found.tiers [k] == (uint64_t) tier;
    size_t matched = found.matched_blocks;
    kvt_client_lookup_fini (&found);
    return matched;
}

//  Generate 'tokens' again and check the output equals 'first''s.
static void
s_same_again (kvt_client_t *client, const uint64_t *tokens, size_t count,
              const kvt_client_generate_t *first, size_t blocks)
{
    kvt_client_generate_t again;
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &again));
    t_check (again.computed == 0 && again.from_gpu + again.from_host + again.from_nvme == blocks);
    t_check (again.token_count == first->token_count);
    t_check (memcmp (again.tokens, first->tokens, first->token_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&again);
}

static void
s_run (int mode)
{
    char overlap [64], delay [64];
    snprintf (overlap, sizeof (overlap), "migration/overlap_upkeep=%d", mode);
    snprintf (delay, sizeof (delay), "migration/test_upkeep_delay_ms=%d", S_DELAY_MS);
    const char *overrides [] = { "tier_gpu/capacity_blocks=16", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", "migration/high_watermark=50",
        "migration/low_watermark=10", overlap, delay, NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_upkeep", 30000);
    kvt_client_t *client = session.client;
    size_t a_count = S_A_BLOCKS * session.hello.block_tokens + 3;
    size_t b_count = S_B_BLOCKS * session.hello.block_tokens + 3;
    uint64_t *a = t_tokens (a_count, session.hello.vocab, 11);
    uint64_t *b = t_tokens (b_count, session.hello.vocab, 12);

    kvt_client_generate_t a_first, b_first;
    t_ok (kvt_client_generate (client, "", a, a_count, 4, &a_first));
    t_check (a_first.computed == S_A_BLOCKS);
    int64_t start = zclock_mono ();
    t_ok (kvt_client_generate (client, "", b, b_count, 4, &b_first));
    int64_t b_ms = zclock_mono () - start;
    t_check (b_first.computed == S_B_BLOCKS);
    uint64_t beside = t_stat (client, "migration.jobs_beside_upkeep");
    uint64_t demoted = t_stat (client, "migration.demoted_gpu_to_host");
    printf ("overlap_upkeep = %d: B answered in %" PRId64 " ms, %" PRIu64 " jobs beside the "
            "upkeep, %" PRIu64 " blocks demoted by then\n", mode, b_ms, beside, demoted);
    if (mode == 2) {
        //  B did not wait for the upkeep, which had not demoted yet
        t_check (beside >= 1);
        t_check (demoted == 0);
        t_check (b_ms < S_DELAY_MS);
    }
    else {
        //  B's reservation waited for the upkeep, which demoted A's blocks
        t_check (beside == 0);
        t_check (demoted == S_A_BLOCKS - 1);
    }
    //  The upkeep demotes down to the low watermark (1 block): A's blocks
    //  but one when it ran before B (1), A's and B's but one beside B (2)
    uint64_t want = mode == 2? S_A_BLOCKS + S_B_BLOCKS - 1: S_A_BLOCKS - 1;
    t_check (s_wait_stat (client, "migration.demoted_gpu_to_host", want) == want);
    size_t a_host, b_host;
    t_check (s_found (client, a, a_count, KVT_TIER_HOST, &a_host) == S_A_BLOCKS);
    t_check (s_found (client, b, b_count, KVT_TIER_HOST, &b_host) == S_B_BLOCKS);
    t_check (a_host + b_host == want);
    if (mode == 1)
        t_check (b_host == 0);
    s_same_again (client, a, a_count, &a_first, S_A_BLOCKS);
    s_same_again (client, b, b_count, &b_first, S_B_BLOCKS);
    t_check (t_stat (client, "migration.copy_errors") == 0);

    kvt_client_generate_fini (&a_first);
    kvt_client_generate_fini (&b_first);
    free (a);
    free (b);
    t_session_end (&session);
}

int
main (void)
{
    s_run (2);
    s_run (1);
    printf ("test_upkeep: OK\n");
    return T_EXIT_PASS;
}
