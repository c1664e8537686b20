/*  =========================================================================
    test_copy_stop - the runtime ends while copies between tiers are queued

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    On a GPU a copy between the GPU and host tiers reports done from
    migration's loop once its stream gets there, and the job that queued
    it (a promotion, a demotion, a write-through) waits for that report.
    When the runtime ends first, the job's continuation must still run,
    told -ECANCELED, so that the job is freed along its failure path:
    session 8 found a promotion's job leaked at every shutdown with a copy
    in flight. The CPU build copies at once, so migration/test_hold_copies
    keeps one direction's continuations back, as a stuck stream would (on
    a GPU the copy runs and its signal is never queued, so the end waits
    for the stream too): each case starts such a copy, sees it held
    (migration.copies_held), and ends the runtime. Under ASan (CI) LeakSanitizer fails the test if
    any job, copy record or closure is left; migration also asserts at
    destroy that no continuation is still waiting. In every case the
    runtime keeps answering (HELLO, STATS) while the copy is held.
@end
*/

#include "testutil.h"

#define S_BLOCKS 8                  //  Full blocks of the prompt
#define S_CALL_MS 1500              //  runtime/call_timeout_ms: a held promotion's call
#define S_CLIENT_MS 20000           //  The client's own wait

typedef enum {
    S_PROMOTION,                    //  Host -> GPU copy of a promotion, held
    S_DEMOTION,                     //  GPU -> host copy of a demotion, held
    S_WRITE_THROUGH                 //  GPU -> host copy of a write-through shadow, held
} s_case_t;

static void
s_run (s_case_t which)
{
    const char *name = which == S_PROMOTION? "promotion":
                       which == S_DEMOTION? "demotion": "write-through";
    char call [64];
    snprintf (call, sizeof (call), "runtime/call_timeout_ms=%d", S_CALL_MS);
    const char *overrides [] = { "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", "migration/stream_promotion=0", call,
        which == S_PROMOTION? "migration/test_hold_copies=to_gpu"
                            : "migration/test_hold_copies=to_host",
        which == S_WRITE_THROUGH? "migration/write_through=1": NULL, NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_copy_stop", S_CLIENT_MS);
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 777);

    kvt_client_generate_t out;
    t_ok (kvt_client_generate (client, "", tokens, count, 2, &out));
    t_check (out.computed == S_BLOCKS);
    kvt_client_generate_fini (&out);
    if (which == S_PROMOTION) {
        //  On the host tier, then asked for again: its copy back is held,
        //  so the scheduler's call to migration times out
        uint64_t moved;
        t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
        t_check (moved >= S_BLOCKS);
        int rc = kvt_client_generate (client, "", tokens, count, 2, &out);
        t_check (rc == -ETIMEDOUT);
        t_check (t_stat (client, "migration.copies_held") >= 1);
    }
    else
    if (which == S_DEMOTION) {
        //  Its copy down is held: migration's answer never comes
        uint64_t moved;
        kvt_client_t *short_wait = kvt_client_new (kvt_runtime_ipc_endpoint (session.runtime),
                                                   S_CALL_MS);
        t_check (short_wait);
        int rc = kvt_client_demote (short_wait, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved);
        t_check (rc == -ETIMEDOUT);
        kvt_client_destroy (&short_wait);
        t_check (t_wait_stat (client, "migration.copies_held", 1) >= 1);
    }
    else
        //  The new blocks' shadow copies are held (background work)
        t_check (t_wait_stat (client, "migration.copies_held", 1) >= 1);

    //  Still answering, every actor (STATS asks each one)
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_copy_stop", &hello));
    printf ("%s: %" PRIu64 " copies held at the end\n", name,
            t_stat (client, "migration.copies_held"));
    free (tokens);
    t_session_end (&session);
}

int
main (void)
{
    kvt_log_set_level (KVT_LOG_ERROR);
    s_run (S_PROMOTION);
    s_run (S_DEMOTION);
    s_run (S_WRITE_THROUGH);
    printf ("test_copy_stop: OK\n");
    return 0;
}
