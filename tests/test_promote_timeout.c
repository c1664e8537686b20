/*  =========================================================================
    test_promote_timeout - a promotion that outlives the scheduler's call

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A prompt of S_BLOCKS blocks is computed and demoted to the host tier.
    Migration holds the start of its first MIG_PROMOTE for S_DELAY_MS
    (migration/test_hold_job = promote), longer than the scheduler waits for
    an actor (runtime/call_timeout_ms = S_CALL_MS), so the prompt's next
    GENERATE (1) gets an ERROR: its promotion timed out, but is still to
    come. The scheduler must keep the prefix pinned meanwhile
    (scheduler.pins_quarantined): the blocks keep their promoting mark,
    so the same prompt sent at once again (2) cuts its match at block 0
    (prefix_index.match_cut_promoting) and computes the whole prompt,
    with the tokens it gave when first computed. Without that quarantine,
    (2) matched the unpinned host blocks and promoted them a second time,
    from the host slots the first promotion frees when it ends: its call
    waited behind the held promotion and timed out too, the GPU tier
    leaked the first promotion's slots (the index only knows the second's)
    and the host tier refused the second free of the same slots
    (tier_host.bad_frees). The scheduler waits for the late promotion's
    answer all the same, and then releases the prefix
    (scheduler.pins_released_late): a copied promotion
    (migration/stream_promotion = 0) has moved the blocks to the GPU by
    then, a streamed one (1) only reserved GPU slots for a compute run
    that never came, and is undone. Either way the same prompt (3) then
    finds all its blocks cached (GPU, or host promoted again) and gives
    the same tokens, and every tier holds exactly the blocks the index
    has there: no GPU slot stays reserved, none is freed twice.
    A stream promotion's commit (MIG_PROMOTE_END) held the same way: the
    tokens are good, so (1) is answered; the prefix stays pinned until the
    late commit has moved it to the GPU, so (2) cuts its match there and
    (3) finds it on the GPU.
    Also a MIG_RESERVE held past its call (test_hold_job = reserve):
    the GPU slots of its late answer go back (reserved_released_late).
    And a promotion answered in time with ERROR ETIMEDOUT (a call of
    migration's own timed out, test_hold_at = fail): an answer, so the
    prefix is released at once and the prompt promoted from host next.
    Both also with the plan in pieces of a block (scheduler/plan_piece_kib
    = 1, plan_piece_min_blocks = 1, kvt_scheduler_plan.c): every piece's
    blocks held until its own late answer; only the first piece failing,
    the rest promoted.
    And a compute run past runtime/compute_timeout_ms: its reserved GPU
    slots are held until compute's late answer, then released.
    Timing: (2) is sent once (1) has failed (S_CALL_MS), and its calls to
    migration wait until the held promotion is done (S_DELAY_MS): margins
    of S_DELAY_MS - S_CALL_MS for (2)'s match to come before the late
    promotion, and 2 S_CALL_MS - S_DELAY_MS for (2)'s reservation to be
    answered in time.
@end
*/

#include "testutil.h"

#define S_BLOCKS 8                  //  Full blocks of the prompt
#define S_CALL_MS 3000              //  runtime/call_timeout_ms
#define S_DELAY_MS 4500             //  migration/test_hold_ms
#define S_CLIENT_MS 30000           //  The client's own wait, well past both

//  Checks that do not stop the test, so that one run shows every symptom
static int s_failures;
#define s_expect(cond) \
    do { if (!(cond)) { \
        fprintf (stderr, "%s:%d: expected: %s\n", __FILE__, __LINE__, #cond); \
        s_failures++; } } while (0)

//  GENERATE 'tokens'; on success check the output equals 'first''s.
static int
s_generate (kvt_client_t *client, const uint64_t *tokens, size_t count,
            const kvt_client_generate_t *first, kvt_client_generate_t *out)
{
    int rc = kvt_client_generate (client, "", tokens, count, 4, out);
    if (rc == 0 && first) {
        s_expect (out->token_count == first->token_count);
        s_expect (out->token_count == first->token_count
                  && memcmp (out->tokens, first->tokens,
                             first->token_count * sizeof (uint64_t)) == 0);
    }
    if (rc)
        fprintf (stderr, "GENERATE answered %s (%s)\n", kvt_client_error_name (client),
                 kvt_client_error_detail (client));
    return rc;
}

//  As s_start, with three more overrides (or NULL).
static void
s_start_with (t_session_t *session, const char *held, const char *at, int ms, bool stream,
              const char *extra1, const char *extra2, const char *extra3)
{
    char call [64], job [96], hold_at [64], delay [64];
    snprintf (call, sizeof (call), "runtime/call_timeout_ms=%d", S_CALL_MS);
    snprintf (job, sizeof (job), "migration/test_hold_job=%s", held);
    snprintf (hold_at, sizeof (hold_at), "migration/test_hold_at=%s", at);
    snprintf (delay, sizeof (delay), "migration/test_hold_ms=%d", ms);
    const char *overrides [] = { "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256",
        stream? "migration/stream_promotion=1": "migration/stream_promotion=0", call, job,
        hold_at, delay, extra1, extra2, extra3, NULL };
    t_session_start (session, t_config (overrides), "test_promote_timeout", S_CLIENT_MS);
}

//  Start a runtime whose calls time out after S_CALL_MS and whose
//  migration holds its first job of one kind ('held', as
//  migration/test_hold_job names it) at 'at' (test_hold_at) for 'ms'.
static void
s_start (t_session_t *session, const char *held, const char *at, int ms, bool stream)
{
    s_start_with (session, held, at, ms, stream, NULL, NULL, NULL);
}

//  Which job migration holds in s_run
typedef enum {
    S_PROMOTE,                      //  The promotion (copied or streamed)
    S_COMMIT                        //  The stream promotion's commit
} s_held_t;

//  'pieces': the plan goes in pieces of a block (scheduler/plan_piece_kib
//  = 1, plan_piece_min_blocks = 1, migration/overlap_upkeep = 2): the
//  first piece's MIG_PROMOTE is
//  held, the others wait behind it in migration, and every piece's call
//  times out; each piece's blocks stay pinned until its own late answer.
static void
s_run (s_held_t held, bool stream, bool pieces)
{
    t_session_t session;
    s_start_with (&session, held == S_COMMIT? "promote_end": "promote", "start", S_DELAY_MS,
                  stream, pieces? "scheduler/plan_piece_kib=1": NULL,
                  pieces? "migration/overlap_upkeep=2": NULL,
                  pieces? "scheduler/plan_piece_min_blocks=1": NULL);
    const char *what = held == S_COMMIT? "stream commit":
                       stream? "stream promotion":
                       pieces? "copied promotion, in pieces": "copied promotion";
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 4242);
    int failures_before = s_failures;

    //  Computed, then demoted to the host tier
    kvt_client_generate_t first;
    t_ok (s_generate (client, tokens, count, NULL, &first));
    t_check (first.computed == S_BLOCKS);
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved >= S_BLOCKS);
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (client, "", tokens, count, &where));
    t_check (where.matched_blocks == S_BLOCKS);
    for (size_t k = 0; k < S_BLOCKS; k++)
        t_check (where.tiers [k] == KVT_TIER_HOST);
    kvt_client_lookup_fini (&where);

    //  (1) Its promotion (or its commit) is held past the scheduler's
    //  call timeout
    kvt_client_generate_t out = { 0 };
    int64_t start = zclock_mono ();
    int rc = s_generate (client, tokens, count, held == S_COMMIT? &first: NULL, &out);
    int64_t waited_ms = zclock_mono () - start;
    if (held == S_COMMIT)
        //  Computed from the streamed blocks: good tokens, answered
        s_expect (rc == 0 && out.from_host == S_BLOCKS && out.computed == 0);
    else {
        s_expect (rc == -ETIMEDOUT);
        //  The server's ERROR, not the client's own timeout
        s_expect (streq (kvt_client_error_name (client), "ETIMEDOUT"));
        s_expect (strstr (kvt_client_error_detail (client), "runtime/call_timeout_ms") != NULL);
    }
    s_expect (waited_ms >= S_CALL_MS && waited_ms < S_DELAY_MS);
    kvt_client_generate_fini (&out);
    //  The runtime keeps serving
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_promote_timeout", &hello));

    //  (2) At once again: cut at the quarantined blocks, all computed
    rc = s_generate (client, tokens, count, &first, &out);
    s_expect (rc == 0);
    s_expect (rc || (out.computed == S_BLOCKS && out.from_host == 0 && out.from_nvme == 0));
    kvt_client_generate_fini (&out);
    uint64_t cut_after_2 = t_stat (client, "prefix_index.match_cut_promoting");
    s_expect (cut_after_2 == 1);

    //  The held job runs to its end; its late answer releases the prefix
    if (held == S_PROMOTE)
        s_expect (t_wait_stat (client, stream? "migration.stream_promotions": "migration.promoted",
                               stream? 1: S_BLOCKS) >= (stream? 1: S_BLOCKS));
    s_expect (t_wait_stat (client, "scheduler.pins_released_late", S_BLOCKS) == S_BLOCKS);
    s_expect (t_stat (client, "scheduler.late_answers") == (pieces? S_BLOCKS: 1));
    if (pieces)
        s_expect (t_stat (client, "scheduler.plan_piece_promotes") >= S_BLOCKS);
    s_expect (t_stat (client, "scheduler.replies_stale") == 0);

    //  (3) The same tokens again, every block cached: on the GPU where the
    //  late promotion (copied) or commit put them, or promoted from the
    //  host again now that the undone stream promotion let them go
    rc = s_generate (client, tokens, count, &first, &out);
    s_expect (rc == 0);
    if (stream && held == S_PROMOTE)
        s_expect (rc || (out.computed == 0 && out.from_host == S_BLOCKS));
    else
        s_expect (rc || (out.computed == 0 && out.from_gpu == S_BLOCKS));
    kvt_client_generate_fini (&out);

    //  Every slot in use is a block the index knows, on its tier (the
    //  undone stream promotion's reserved GPU slots went back);
    //  consistent for three polls 500 ms apart (a late promotion run a
    //  second time would land meanwhile and break it for good)
    uint64_t gpu_extra = 0;
    bool settled = t_tiers_settle (client, gpu_extra, 500, 20000);
    uint64_t gpu_used = t_stat (client, "tier_gpu.used_blocks");
    uint64_t host_used = t_stat (client, "tier_host.used_blocks");
    uint64_t index_gpu = t_stat (client, "prefix_index.blocks_gpu");
    uint64_t index_host = t_stat (client, "prefix_index.blocks_host");
    printf ("%s: GPU tier %" PRIu64 " used, index %" PRIu64 "; host tier %" PRIu64
            " used, index %" PRIu64 "\n", what, gpu_used, index_gpu, host_used, index_host);
    s_expect (settled);
    s_expect (gpu_used == index_gpu + gpu_extra);
    s_expect (host_used == index_host);
    s_expect (gpu_used <= 64 && host_used <= 64);
    //  Copied by the late promotion, committed late, or streamed by (3):
    //  on the GPU now
    s_expect (index_gpu == S_BLOCKS);
    s_expect (index_host == 0);
    //  No slot freed twice, nothing else failed
    s_expect (t_stat (client, "tier_gpu.bad_frees") == 0);
    s_expect (t_stat (client, "tier_host.bad_frees") == 0);
    s_expect (t_stat (client, "migration.housekeeping_failures") == 0);
    s_expect (t_stat (client, "migration.copy_errors") == 0);
    //  One timed-out promotion, its prefix held until the late answer;
    //  only (2) cut its match there
    uint64_t quarantined = t_stat (client, "scheduler.pins_quarantined");
    uint64_t released = t_stat (client, "scheduler.pins_released_late");
    s_expect (quarantined == S_BLOCKS && released == S_BLOCKS);
    uint64_t cut = t_stat (client, "prefix_index.match_cut_promoting");
    s_expect (cut == 1);
    printf ("%s: %" PRIu64 " pins held, %" PRIu64 " released late, %" PRIu64
            " matches cut at them: %s\n", what, quarantined, released, cut,
            s_failures == failures_before? "OK": "FAILED");

    kvt_client_generate_fini (&first);
    free (tokens);
    t_session_end (&session);
}

//  A reservation that outlives its call: the first MIG_RESERVE held past
//  the call timeout fails its GENERATE; the GPU slots it then reserves
//  are given back when its late answer comes (reserved_released_late),
//  and the same prompt is served again.
static void
s_run_reserve (void)
{
    t_session_t session;
    s_start (&session, "reserve", "start", S_DELAY_MS, true);
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 4343);
    int failures_before = s_failures;
    kvt_client_generate_t out = { 0 };
    int rc = s_generate (client, tokens, count, NULL, &out);
    s_expect (rc == -ETIMEDOUT);
    s_expect (strstr (kvt_client_error_detail (client), "reserve") != NULL);
    kvt_client_generate_fini (&out);
    //  The late reservation's slots go back: nothing on the GPU tier but
    //  what the index holds (nothing yet)
    uint64_t released = t_wait_stat (client, "scheduler.reserved_released_late", 1);
    s_expect (released >= S_BLOCKS);
    uint64_t used = t_stat (client, "tier_gpu.used_blocks");
    s_expect (used == t_stat (client, "prefix_index.blocks_gpu"));
    //  And the prompt is served
    rc = s_generate (client, tokens, count, NULL, &out);
    s_expect (rc == 0 && out.computed == S_BLOCKS);
    kvt_client_generate_fini (&out);
    printf ("reservation: %" PRIu64 " GPU slots released late, %" PRIu64 " in use: %s\n",
            released, used, s_failures == failures_before? "OK": "FAILED");
    free (tokens);
    t_session_end (&session);
}

//  A promotion that fails in time because a call of migration's own
//  timed out (migration/test_hold_at = fail): an answer, not a silence.
//  Migration is done with the job, so the prefix is released at once,
//  not quarantined: the same prompt is then promoted from the host tier.
//  In pieces (as s_run): only the first piece fails; the request fails
//  once every piece out has answered, and the same prompt then finds the
//  first block on the host and the others on the host or the GPU.
static void
s_run_failed (bool pieces)
{
    t_session_t session;
    s_start_with (&session, "promote", "fail", 100, false,
                  pieces? "scheduler/plan_piece_kib=1": NULL,
                  pieces? "migration/overlap_upkeep=2": NULL,
                  pieces? "scheduler/plan_piece_min_blocks=1": NULL);
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 4444);
    int failures_before = s_failures;
    kvt_client_generate_t first, out = { 0 };
    t_ok (s_generate (client, tokens, count, NULL, &first));
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved >= S_BLOCKS);
    int rc = s_generate (client, tokens, count, NULL, &out);
    s_expect (rc != 0 && rc != -ETIMEDOUT);
    s_expect (streq (kvt_client_error_name (client), "ETIMEOUT_PEER"));
    s_expect (strstr (kvt_client_error_detail (client), "cached prefix") != NULL);
    kvt_client_generate_fini (&out);
    //  Released, not held: promoted from the host tier now
    rc = s_generate (client, tokens, count, &first, &out);
    if (pieces)                     //  The failed piece's blocks still on the host (at
                                    //  least block 0), the others promoted by their pieces
        s_expect (rc == 0 && out.from_host >= 1 && out.from_host + out.from_gpu == S_BLOCKS
                  && out.computed == 0);
    else
        s_expect (rc == 0 && out.from_host == S_BLOCKS && out.computed == 0);
    kvt_client_generate_fini (&out);
    uint64_t quarantined = t_stat (client, "scheduler.pins_quarantined");
    s_expect (quarantined == 0);
    s_expect (t_stat (client, "scheduler.calls_awaited_late") == 0);
    s_expect (t_stat (client, "prefix_index.match_cut_promoting") == 0);
    s_expect (t_tiers_settle (client, 0, 50, 5000));
    printf ("promotion failed in time%s: %" PRIu64 " pins held, then served from host: %s\n",
            pieces? " (its first piece)": "", quarantined,
            s_failures == failures_before? "OK": "FAILED");
    kvt_client_generate_fini (&first);
    free (tokens);
    t_session_end (&session);
}

//  A compute run that outlives runtime/compute_timeout_ms (its answer
//  held, compute/test_answer_delay_ms): the request fails, but the GPU
//  slots reserved for its blocks stay held until compute's late answer
//  (compute may still write them), then go back (slots_released_late).
static void
s_run_compute (void)
{
    t_session_t session;
    char timeout [64], delay [64];
    snprintf (timeout, sizeof (timeout), "runtime/compute_timeout_ms=%d", S_CALL_MS);
    snprintf (delay, sizeof (delay), "compute/test_answer_delay_ms=%d", S_DELAY_MS);
    s_start_with (&session, "", "start", 0, false, timeout, delay, NULL);
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 4545);
    int failures_before = s_failures;
    kvt_client_generate_t out = { 0 }, again = { 0 };
    int rc = s_generate (client, tokens, count, NULL, &out);
    s_expect (rc == -ETIMEDOUT);
    s_expect (strstr (kvt_client_error_detail (client), "compute_timeout_ms") != NULL);
    kvt_client_generate_fini (&out);
    //  Held while compute may still write them
    uint64_t held = t_stat (client, "tier_gpu.used_blocks")
                  - t_stat (client, "prefix_index.blocks_gpu");
    s_expect (held == S_BLOCKS);
    s_expect (t_stat (client, "scheduler.slots_quarantined") == S_BLOCKS);
    //  Released once compute answers
    uint64_t released = t_wait_stat (client, "scheduler.slots_released_late", S_BLOCKS);
    s_expect (released == S_BLOCKS);
    s_expect (t_tiers_settle (client, 0, 50, 5000));
    //  And the prompt is served, computed again
    rc = s_generate (client, tokens, count, NULL, &again);
    s_expect (rc == 0 && again.computed == S_BLOCKS);
    kvt_client_generate_fini (&again);
    s_expect (t_tiers_settle (client, 0, 50, 5000));
    printf ("compute run past its timeout: %" PRIu64 " GPU slots held, %" PRIu64
            " released late: %s\n", held, released,
            s_failures == failures_before? "OK": "FAILED");
    free (tokens);
    t_session_end (&session);
}

int
main (void)
{
    s_run (S_PROMOTE, false, false);
    s_run (S_PROMOTE, true, false);
    s_run (S_COMMIT, true, false);
    s_run (S_PROMOTE, false, true);
    s_run_reserve ();
    s_run_failed (false);
    s_run_failed (true);
    s_run_compute ();
    if (s_failures) {
        fprintf (stderr, "test_promote_timeout: %d checks failed\n", s_failures);
        return T_EXIT_FAIL;
    }
    printf ("test_promote_timeout: OK\n");
    return T_EXIT_PASS;
}
