/*  =========================================================================
    test_write_through - new GPU blocks shadowed on the host tier (#5)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    migration/write_through = 1: a computed prompt's blocks are copied to
    host shadow slots in the background; evicting them from the GPU is
    then an index move without bytes (demotions_from_shadow, and
    bytes_gpu_to_host does not grow), and the next request finds them on
    the host tier, with the same output as with caching off. The same
    with cold_dtype = fp8 gives the output of write-back fp8 (the shadow
    holds the cold form). With write_through = 0 nothing is shadowed.
    Write-through again with migration and tier_host as processes (when
    the kvtier binary is there: KVTIER).
    Under pressure (small GPU and host tiers, many prompts) the host tier
    never holds more than its capacity, every host slot in use is an
    index block or a shadow, and every prompt's output is still right;
    the same with the upkeep beside the jobs (overlap_upkeep = 2).
@end
*/

#include "testutil.h"

#define S_BLOCKS 8                  //  Full blocks in the prompt

//  Wait until the write-through jobs for 'blocks' blocks are done: each
//  block is copied, skipped or found gone (STATS). Fails after 10 s.
static void
s_settle (kvt_client_t *client, uint64_t blocks)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint64_t done = t_stat (client, "migration.write_through_copies")
                      + t_stat (client, "migration.write_through_skipped")
                      + t_stat (client, "migration.write_through_gone");
        if (done >= blocks) {
            t_check (done == blocks);
            return;
        }
        zclock_sleep (10);
    }
    fprintf (stderr, "test_write_through: write-through jobs did not finish\n");
    exit (T_EXIT_FAIL);
}

//  Wait until no upkeep runs beside the jobs (overlap_upkeep = 2), so that
//  the tiers' counts and the index's agree. Fails after 10 s.
static void
s_upkeep_idle (kvt_client_t *client)
{
    for (int tries = 0; tries < 1000; tries++) {
        if (t_stat (client, "migration.upkeep_running") == 0)
            return;
        zclock_sleep (10);
    }
    fprintf (stderr, "test_write_through: the upkeep did not end\n");
    exit (T_EXIT_FAIL);
}

static void
s_generate (kvt_client_t *client, const uint64_t *tokens, size_t count, kvt_client_generate_t *run)
{
    t_ok (kvt_client_generate (client, "", tokens, count, 4, run));
}

//  One prompt computed, evicted to host, asked again. Returns the second
//  answer's tokens in *out (the caller frees them).
static void
s_round_trip (const char *cold, bool through, bool processes,
              const kvt_client_generate_t *reference, kvt_client_generate_t *out)
{
    char cold_key [64], through_key [64];
    snprintf (cold_key, sizeof (cold_key), "migration/cold_dtype=%s", cold);
    snprintf (through_key, sizeof (through_key), "migration/write_through=%d", through);
    const char *overrides [] = { "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", cold_key, through_key,
        processes? "migration/mode=process": NULL, "tier_host/mode=process", NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_write_through", 30000);
    kvt_client_t *client = session.client;
    const kvt_client_hello_t hello = session.hello;
    size_t count = S_BLOCKS * hello.block_tokens + 2;
    uint64_t *tokens = t_tokens (count, hello.vocab, 21);

    kvt_client_generate_t run;
    s_generate (client, tokens, count, &run);
    t_check (run.computed == S_BLOCKS);
    t_check (run.token_count == reference->token_count);
    t_check (memcmp (run.tokens, reference->tokens, run.token_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&run);
    if (through) {
        s_settle (client, S_BLOCKS);
        t_check (t_stat (client, "migration.write_through_copies") == S_BLOCKS);
        t_check (t_stat (client, "migration.shadows") == S_BLOCKS);
        //  Shadows use host slots the index does not know
        t_check (t_stat (client, "tier_host.used_blocks") == S_BLOCKS);
        t_check (t_stat (client, "prefix_index.blocks_host") == 0);
    }
    else {
        zclock_sleep (50);
        t_check (t_stat (client, "migration.shadows") == 0);
        t_check (t_stat (client, "migration.write_through_copies") == 0);
        t_check (t_stat (client, "tier_host.used_blocks") == 0);
    }
    uint64_t bytes_before = t_stat (client, "migration.bytes_gpu_to_host");
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == S_BLOCKS);
    uint64_t bytes_after = t_stat (client, "migration.bytes_gpu_to_host");
    uint64_t from_shadow = t_stat (client, "migration.demotions_from_shadow");
    t_check (t_stat (client, "prefix_index.blocks_host") == S_BLOCKS);
    t_check (t_stat (client, "tier_host.used_blocks") == S_BLOCKS);
    t_check (t_stat (client, "migration.shadows") == 0);
    if (through) {
        t_check (from_shadow == S_BLOCKS);
        t_check (bytes_after == bytes_before);      //  No bytes on eviction
        t_check (t_stat (client, "migration.through_bytes") == bytes_before);
    }
    else {
        t_check (from_shadow == 0);
        t_check (bytes_after > bytes_before);
    }

    s_generate (client, tokens, count, out);
    t_check (out->from_host == S_BLOCKS && out->computed == 0);
    //  Promoted back to the GPU, the blocks keep their host slots as
    //  shadows: evicted again, they move by index only
    t_check (t_stat (client, "prefix_index.blocks_host") == 0);
    if (through) {
        t_check (t_stat (client, "migration.shadows_adopted") == S_BLOCKS);
        t_check (t_stat (client, "migration.shadows") == S_BLOCKS);
        t_check (t_stat (client, "tier_host.used_blocks") == S_BLOCKS);
    }
    else {
        t_check (t_stat (client, "migration.shadows") == 0);
        t_check (t_stat (client, "tier_host.used_blocks") == 0);
    }
    uint64_t bytes_again = t_stat (client, "migration.bytes_gpu_to_host");
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == S_BLOCKS);
    t_check (t_stat (client, "prefix_index.blocks_host") == S_BLOCKS);
    t_check (t_stat (client, "tier_host.used_blocks") == S_BLOCKS);
    if (through) {
        t_check (t_stat (client, "migration.demotions_from_shadow") == 2 * S_BLOCKS);
        t_check (t_stat (client, "migration.bytes_gpu_to_host") == bytes_again);
    }
    else
        t_check (t_stat (client, "migration.bytes_gpu_to_host") > bytes_again);
    if (streq (cold, "bf16")) {
        t_check (out->token_count == reference->token_count);
        t_check (memcmp (out->tokens, reference->tokens,
                         out->token_count * sizeof (uint64_t)) == 0);
    }
    printf ("write_through=%d cold=%s%s: shadowed %" PRIu64 ", demoted from shadow %" PRIu64
            ", bytes GPU->host on eviction %" PRIu64 "\n", through, cold,
            processes? " (migration and tier_host as processes)": "",
            t_stat (client, "migration.write_through_copies"), from_shadow,
            bytes_after - bytes_before);
    free (tokens);
    t_session_end (&session);
}

#define S_PROMPTS 12                //  Prompts of the pressure test
#define S_PROMPT_BLOCKS 4           //  Full blocks in each
#define S_HOST_BLOCKS 8             //  Host tier's capacity there

//  Small tiers, many prompts: capacity is kept and outputs stay right,
//  with the upkeep before the next job (overlap_upkeep 0) or beside it
//  (2: a write-through then waits for the upkeep's end, never beside it).
static void
s_pressure (int overlap)
{
    //  The answers with caching off
    const char *off [] = { "scheduler/caching=0", NULL };
    t_session_t session;
    t_session_start (&session, t_config (off), "test_write_through", 30000);
    kvt_client_t *client = session.client;
    const kvt_client_hello_t hello = session.hello;
    size_t count = S_PROMPT_BLOCKS * hello.block_tokens + 3;
    uint64_t *tokens [S_PROMPTS];
    kvt_client_generate_t reference [S_PROMPTS];
    for (int p = 0; p < S_PROMPTS; p++) {
        tokens [p] = t_tokens (count, hello.vocab, 100 + p);
        s_generate (client, tokens [p], count, &reference [p]);
    }
    t_session_end (&session);

    char overlap_key [64];
    snprintf (overlap_key, sizeof (overlap_key), "migration/overlap_upkeep=%d", overlap);
    const char *overrides [] = { "tier_gpu/capacity_blocks=16", "tier_host/capacity_blocks=8",
        "tier_nvme/capacity_blocks=64", "migration/write_through=1", overlap_key, NULL };
    t_session_start (&session, t_config (overrides), "test_write_through", 30000);
    client = session.client;
    uint64_t inserted = 0;
    for (int round = 0; round < 2; round++)
        for (int p = 0; p < S_PROMPTS; p++) {
            kvt_client_generate_t run;
            s_generate (client, tokens [p], count, &run);
            t_check (run.token_count == reference [p].token_count);
            t_check (memcmp (run.tokens, reference [p].tokens,
                             run.token_count * sizeof (uint64_t)) == 0);
            inserted += run.computed;
            kvt_client_generate_fini (&run);
            s_settle (client, inserted);
            s_upkeep_idle (client);
            uint64_t used = t_stat (client, "tier_host.used_blocks");
            uint64_t host = t_stat (client, "prefix_index.blocks_host");
            uint64_t shadows = t_stat (client, "migration.shadows");
            t_check (used <= S_HOST_BLOCKS);
            t_check (host + shadows == used);   //  No host slot lost or shared
        }
    uint64_t copies = t_stat (client, "migration.write_through_copies");
    uint64_t from_shadow = t_stat (client, "migration.demotions_from_shadow");
    uint64_t dropped = t_stat (client, "migration.shadows_dropped");
    uint64_t skipped = t_stat (client, "migration.write_through_skipped");
    printf ("pressure, overlap_upkeep %d: %" PRIu64 " blocks computed, %" PRIu64 " shadowed, "
            "%" PRIu64 " demoted from shadow, %" PRIu64 " shadows dropped, %" PRIu64 " skipped\n",
            overlap, inserted, copies, from_shadow, dropped, skipped);
    t_check (copies > 0 && from_shadow > 0);
    t_check (dropped + skipped > 0);            //  The host tier was short
    for (int p = 0; p < S_PROMPTS; p++) {
        free (tokens [p]);
        kvt_client_generate_fini (&reference [p]);
    }
    t_session_end (&session);
}

int
main (void)
{
    //  The answer with caching off
    const char *off [] = { "scheduler/caching=0", NULL };
    t_session_t session;
    t_session_start (&session, t_config (off), "test_write_through", 30000);
    kvt_client_t *client = session.client;
    const kvt_client_hello_t hello = session.hello;
    size_t count = S_BLOCKS * hello.block_tokens + 2;
    uint64_t *tokens = t_tokens (count, hello.vocab, 21);
    kvt_client_generate_t reference;
    s_generate (client, tokens, count, &reference);
    free (tokens);
    t_session_end (&session);

    kvt_client_generate_t out;
    s_round_trip ("bf16", false, false, &reference, &out);
    kvt_client_generate_fini (&out);
    s_round_trip ("bf16", true, false, &reference, &out);
    kvt_client_generate_fini (&out);
    //  FP8: the shadow holds what write-back would have made
    kvt_client_generate_t back, through;
    s_round_trip ("fp8", false, false, &reference, &back);
    s_round_trip ("fp8", true, false, &reference, &through);
    t_check (back.token_count == through.token_count);
    t_check (memcmp (back.tokens, through.tokens, back.token_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&back);
    kvt_client_generate_fini (&through);
    if (getenv ("KVTIER")) {        //  The kvtier binary runs actor processes
        s_round_trip ("bf16", true, true, &reference, &out);
        kvt_client_generate_fini (&out);
    }
    kvt_client_generate_fini (&reference);

    s_pressure (0);
    s_pressure (2);
    printf ("test_write_through: OK\n");
    return T_EXIT_PASS;
}
