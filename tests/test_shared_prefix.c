/*  =========================================================================
    test_shared_prefix - requests at once over one host-resident prefix

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A prompt of S_BLOCKS blocks is computed, demoted to the host tier, and
    then S_CLIENTS clients send it at once, S_ROUNDS times (a fresh prompt
    each round), with copied promotions (migration/stream_promotion = 0)
    and with streamed ones (1). Only one of the requests may promote a
    block off the GPU: the others' matches cut there (prefix_index
    match_cut_promoting) and they compute the rest. Before that rule, each
    request promoted the shared blocks from the same host slots: GPU slots
    leaked (the tier held 96 blocks for an index of 16), host slots were
    freed twice, and the tier ran out (ENOSPC). Checked: every request
    succeeds with the tokens the prompt gave when computed, and the GPU
    and host tiers hold exactly the blocks the index has there. Also with
    migration/overlap_upkeep = 2, where a copied promotion gives up the
    job slot at its copy and the next request's promotion runs beside it.
@end
*/

#include <pthread.h>
#include "testutil.h"

#define S_BLOCKS 16                 //  Full blocks of each prompt
#define S_CLIENTS 4                 //  Requests at once
#define S_ROUNDS 5                  //  Prompts, one after the other

typedef struct {
    const char *endpoint;           //  The runtime's front door
    const uint64_t *tokens;         //  The prompt
    size_t count;                   //  Its tokens
    kvt_client_generate_t out;      //  The answer
    int rc;                         //  Its status
} s_request_t;

static void *
s_send (void *arg)
{
    s_request_t *request = (s_request_t *) arg;
    kvt_client_t *client = kvt_client_new (request->endpoint, 30000);
    request->rc = client? kvt_client_generate (client, "", request->tokens, request->count, 4,
                                               &request->out): -EIO;
    kvt_client_destroy (&client);
    return NULL;
}

static void
s_run (bool stream, int overlap)
{
    char overlap_key [64];
    snprintf (overlap_key, sizeof (overlap_key), "migration/overlap_upkeep=%d", overlap);
    const char *overrides [] = { "tier_gpu/capacity_blocks=96", "tier_host/capacity_blocks=96",
        "tier_nvme/capacity_blocks=256",
        stream? "migration/stream_promotion=1": "migration/stream_promotion=0", overlap_key,
        NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_shared_prefix", 30000);
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    for (int round = 0; round < S_ROUNDS; round++) {
        uint64_t *tokens = t_tokens (count, session.hello.vocab, 500 + (uint64_t) round);
        kvt_client_generate_t first;
        t_ok (kvt_client_generate (session.client, "", tokens, count, 4, &first));
        uint64_t moved;
        t_ok (kvt_client_demote (session.client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
        t_check (moved >= S_BLOCKS);
        s_request_t requests [S_CLIENTS];
        pthread_t threads [S_CLIENTS];
        for (int c = 0; c < S_CLIENTS; c++) {
            requests [c] = (s_request_t) { kvt_runtime_ipc_endpoint (session.runtime), tokens,
                                           count, { 0 }, 0 };
            t_check (pthread_create (&threads [c], NULL, s_send, &requests [c]) == 0);
        }
        for (int c = 0; c < S_CLIENTS; c++) {
            pthread_join (threads [c], NULL);
            t_ok (requests [c].rc);
            t_check (requests [c].out.token_count == first.token_count);
            t_check (memcmp (requests [c].out.tokens, first.tokens,
                             first.token_count * sizeof (uint64_t)) == 0);
            kvt_client_generate_fini (&requests [c].out);
        }
        kvt_client_generate_fini (&first);
        free (tokens);
    }
    //  Every slot in use is a block the index knows, on its tier
    t_check (t_stat (session.client, "tier_gpu.used_blocks")
             == t_stat (session.client, "prefix_index.blocks_gpu"));
    t_check (t_stat (session.client, "tier_host.used_blocks")
             == t_stat (session.client, "prefix_index.blocks_host"));
    t_check (t_stat (session.client, "migration.copy_errors") == 0);
    uint64_t cut = t_stat (session.client, "prefix_index.match_cut_promoting");
    uint64_t detached = t_stat (session.client, "migration.jobs_detached");
    printf ("stream_promotion = %d, overlap_upkeep = %d: %d x %d requests at once, the same "
            "tokens, no slot lost; %" PRIu64 " matches cut at a block another request was "
            "promoting, %" PRIu64 " promotions answered after giving up the job slot\n", stream,
            overlap, S_ROUNDS, S_CLIENTS, cut, detached);
    //  With 2, a copied promotion answers once its copy is done, after the
    //  next job started (kvt_migration_promote.c)
    t_check (detached > 0 || stream || overlap != 2);
    t_session_end (&session);
}

int
main (void)
{
    s_run (false, 0);
    s_run (true, 0);
    s_run (false, 2);               //  Promotions give up the job slot at their copy
    s_run (true, 2);
    printf ("test_shared_prefix: OK\n");
    return T_EXIT_PASS;
}
