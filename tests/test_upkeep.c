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
    Then a storm: S_CLIENTS clients at once, each a conversation of
    S_TURNS turns (each turn's prompt extends the one before; all share a
    system prompt) through tiers small enough that the upkeep runs after
    nearly every job, beside the others' promotions and reservations
    (overlap_upkeep = 2, no delay). Every output must equal the one the
    same prompt gave in a runtime of overlap_upkeep = 0 run one request at
    a time, with no job failing and no copy error.
@end
*/

#include <pthread.h>
#include "testutil.h"

#define S_CLIENTS 4                 //  Conversations of the storm, one client each
#define S_TURNS 6                   //  Turns per conversation
#define S_MAX_OUT 8                 //  Tokens each turn generates

#define S_DELAY_MS 1000             //  How long each upkeep is held back
#define S_A_BLOCKS 8                //  Prompt A's full blocks (50% of the GPU tier)
#define S_B_BLOCKS 4                //  Prompt B's

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
    t_check (t_wait_stat (client, "migration.demoted_gpu_to_host", want) == want);
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

//  --------------------------------------------------------------------------
//  The storm

typedef struct {
    const char *endpoint;           //  The runtime's front door
    int conversation;               //  Which one this client speaks
    uint64_t vocab;                 //  Token range
    size_t block_tokens;            //  Tokens per block
    uint64_t out [S_TURNS][S_MAX_OUT];  //  Each turn's output
    size_t out_count [S_TURNS];     //  Tokens in each
    uint64_t from_cache;            //  Prefix blocks found cached, all turns
    int rc;                         //  First failure, or 0
} s_talker_t;

//  Turn 'turn' of conversation 'c': a 2-block system prompt, then 3 blocks
//  more per turn, then 5 tokens of the turn's own (not a full block).
static uint64_t *
s_turn_tokens (const s_talker_t *talker, int turn, size_t *count)
{
    size_t system = 2 * talker->block_tokens;
    size_t body = (size_t) (turn + 1) * 3 * talker->block_tokens;
    *count = system + body + 5;
    uint64_t *tokens = t_tokens (*count, talker->vocab, 99);
    uint64_t *mine = t_tokens (body, talker->vocab, 100 + (uint64_t) talker->conversation);
    uint64_t *tail = t_tokens (5, talker->vocab, 1000 + 10 * (uint64_t) talker->conversation
                                                 + (uint64_t) turn);
    memcpy (tokens + system, mine, body * sizeof (uint64_t));
    memcpy (tokens + system + body, tail, 5 * sizeof (uint64_t));
    free (mine);
    free (tail);
    return tokens;
}

static void *
s_talk (void *arg)
{
    s_talker_t *talker = (s_talker_t *) arg;
    kvt_client_t *client = kvt_client_new (talker->endpoint, 60000);
    for (int turn = 0; client && talker->rc == 0 && turn < S_TURNS; turn++) {
        size_t count;
        uint64_t *tokens = s_turn_tokens (talker, turn, &count);
        kvt_client_generate_t out;
        talker->rc = kvt_client_generate (client, "", tokens, count, S_MAX_OUT, &out);
        if (talker->rc)
            fprintf (stderr, "conversation %d turn %d: %s %s\n", talker->conversation, turn,
                     kvt_client_error_name (client), kvt_client_error_detail (client));
        else {
            talker->out_count [turn] = out.token_count < S_MAX_OUT? out.token_count: S_MAX_OUT;
            memcpy (talker->out [turn], out.tokens, talker->out_count [turn] * sizeof (uint64_t));
            talker->from_cache += out.from_gpu + out.from_host + out.from_nvme;
            kvt_client_generate_fini (&out);
        }
        free (tokens);
    }
    if (!client)
        talker->rc = -EIO;
    kvt_client_destroy (&client);
    return NULL;
}

//  Every conversation through a runtime of 'mode': one client after the
//  other ('together' false) or all at once.
static void
s_storm (int mode, bool together, s_talker_t *talkers, uint64_t *beside)
{
    char overlap [64];
    snprintf (overlap, sizeof (overlap), "migration/overlap_upkeep=%d", mode);
    const char *overrides [] = { "tier_gpu/capacity_blocks=48", "tier_host/capacity_blocks=40",
        "tier_nvme/capacity_blocks=512", "migration/high_watermark=50",
        "migration/low_watermark=25", overlap, NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_upkeep storm", 60000);
    pthread_t threads [S_CLIENTS];
    for (int c = 0; c < S_CLIENTS; c++) {
        memset (&talkers [c], 0, sizeof (s_talker_t));
        talkers [c].endpoint = kvt_runtime_ipc_endpoint (session.runtime);
        talkers [c].conversation = c;
        talkers [c].vocab = session.hello.vocab;
        talkers [c].block_tokens = session.hello.block_tokens;
        if (together)
            t_check (pthread_create (&threads [c], NULL, s_talk, &talkers [c]) == 0);
        else
            s_talk (&talkers [c]);
    }
    for (int c = 0; together && c < S_CLIENTS; c++)
        pthread_join (threads [c], NULL);
    for (int c = 0; c < S_CLIENTS; c++)
        t_check (talkers [c].rc == 0);
    t_check (t_stat (session.client, "migration.copy_errors") == 0);
    *beside = t_stat (session.client, "migration.jobs_beside_upkeep");
    printf ("storm, overlap_upkeep = %d: %" PRIu64 " reservations waited for the upkeep's "
            "blocks in motion\n", mode, t_stat (session.client, "migration.waits_for_upkeep"));
    t_session_end (&session);
}

int
main (void)
{
    s_run (2);
    s_run (1);
    static s_talker_t reference [S_CLIENTS], storm [S_CLIENTS];
    uint64_t beside_reference, beside;
    s_storm (0, false, reference, &beside_reference);
    s_storm (2, true, storm, &beside);
    uint64_t cached = 0;
    for (int c = 0; c < S_CLIENTS; c++) {
        cached += storm [c].from_cache;
        for (int turn = 0; turn < S_TURNS; turn++) {
            t_check (storm [c].out_count [turn] == reference [c].out_count [turn]);
            t_check (memcmp (storm [c].out [turn], reference [c].out [turn],
                             reference [c].out_count [turn] * sizeof (uint64_t)) == 0);
        }
    }
    printf ("storm: %d clients x %d turns, the same tokens as one at a time; %" PRIu64
            " prefix blocks from cache, %" PRIu64 " jobs beside an upkeep\n", S_CLIENTS,
            S_TURNS, cached, beside);
    t_check (beside_reference == 0);
    t_check (beside > 0 && cached > 0);
    printf ("test_upkeep: OK\n");
    return T_EXIT_PASS;
}
