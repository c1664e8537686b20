/*  =========================================================================
    test_prefetch_waiting - a job waiting for GPU room stages its disk prefix

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The GPU tier holds one 8-block prompt at a time. A prompt Q is computed
    and pushed down to NVMe. Then a prompt X and Q again are sent together:
    X runs, Q waits for GPU room. With scheduler/prefetch_waiting = 1 the
    scheduler has migration stage Q's NVMe blocks into the host tier while
    it waits, so Q is served from the host tier (GENERATE_OK from_host = 8,
    from_nvme = 0: the blocks were on the host tier when Q's admission
    match found them) and the counters say 8 blocks staged and 8 used.
    With prefetch off, Q streams from NVMe. With a budget of 3 host blocks
    (scheduler/prefetch_host_percent = 5) the leading 3 are staged and the
    other 5 stream. The output tokens are the same every way, and the same
    as Q's first, uncached run. Nothing stays pinned afterwards.
    A prefetch whose answer comes after the scheduler's call timed out
    (migration/test_hold_job = prefetch, test_hold_at = reply): its blocks
    are staged and pinned, but the scheduler no longer waits for them. Q
    starts when the call fails and is served from the host tier all the
    same; the late answer's staged pins are released
    (scheduler.prefetch_released_late), so nothing stays pinned either.
@end
*/

#include "testutil.h"

#define S_BLOCKS 8                  //  Full blocks per prompt
#define S_CALL_MS 2000              //  runtime/call_timeout_ms of the late run
#define S_HOLD_MS 3000              //  Its prefetch's answer comes this late: past
                                    //  the call, within one more for Q's promotion
                                    //  queued behind it

typedef struct {
    kvt_client_generate_t q_first;  //  Q computed from scratch
    uint64_t x_tokens [512];        //  X's output
    size_t x_count;                 //  Tokens in x_tokens
    uint64_t q_tokens [512];        //  Q's output, served from cache
    size_t q_count;                 //  Tokens in q_tokens
    uint64_t q_from [3];            //  Q's prefix blocks per tier
    uint64_t q_computed;            //  Q's blocks computed
    uint64_t prefetched;            //  scheduler.prefetched_blocks
    uint64_t hits;                  //  scheduler.prefetch_hits
    uint64_t delayed;               //  scheduler.prefetch_delayed_starts
    uint64_t failures;              //  scheduler.prefetch_failures
    uint64_t released_late;         //  scheduler.prefetch_released_late
} s_run_t;

static kvt_msg_t *
s_generate (const uint64_t *tokens, size_t count, uint64_t max_new, uint64_t request_id)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_GENERATE);
    kvt_msg_set_str (msg, KVT_GENERATE_TENANT, "");
    kvt_msg_set_array (msg, KVT_GENERATE_TOKENS, tokens, count);
    kvt_msg_set_u64 (msg, KVT_GENERATE_MAX_NEW_TOKENS, max_new);
    kvt_msg_set_request_id (msg, request_id);
    return msg;
}

//  One run; 'percent' is scheduler/prefetch_host_percent (of 64 blocks);
//  'late': the prefetch's answer comes after its call timed out.
static void
s_run (bool prefetch, int percent, bool late, s_run_t *run)
{
    char share [64], call [64], hold [64];
    snprintf (share, sizeof (share), "scheduler/prefetch_host_percent=%d", percent);
    snprintf (call, sizeof (call), "runtime/call_timeout_ms=%d", late? S_CALL_MS: 10000);
    snprintf (hold, sizeof (hold), "migration/test_hold_ms=%d", late? S_HOLD_MS: 0);
    const char *overrides [] = { "tier_gpu/capacity_blocks=12", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", share,
        prefetch? "scheduler/prefetch_waiting=1": "scheduler/prefetch_waiting=0", call,
        "migration/test_hold_job=prefetch", "migration/test_hold_at=reply", hold, NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_prefetch_waiting", &hello));
    size_t count = S_BLOCKS * hello.block_tokens + 5;
    uint64_t *q = t_tokens (count, hello.vocab, 3);
    uint64_t *x = t_tokens (count, hello.vocab, 4);

    //  Q computed, then pushed down to disk
    t_ok (kvt_client_generate (client, "", q, count, 6, &run->q_first));
    t_check (run->q_first.computed == S_BLOCKS);
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == S_BLOCKS);
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_check (moved == S_BLOCKS);
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (client, "", q, count, &where));
    t_check (where.matched_blocks == S_BLOCKS && where.tiers [0] == KVT_TIER_NVME);
    kvt_client_lookup_fini (&where);

    //  X and Q at once: X takes the GPU tier, Q waits
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    t_check (dealer);
    t_check (zsock_connect (dealer, "%s", kvt_runtime_ipc_endpoint (runtime)) == 0);
    kvt_msg_t *msg = s_generate (x, count, 300, 1);    //  Long enough to make Q wait
    t_ok (kvt_msg_send (&msg, dealer));
    msg = s_generate (q, count, 6, 2);
    t_ok (kvt_msg_send (&msg, dealer));
    zsock_set_rcvtimeo (dealer, 30000);
    for (int k = 0; k < 2; k++) {
        kvt_msg_t *reply = NULL;
        t_ok (kvt_msg_recv (dealer, &reply));
        t_check (kvt_msg_id (reply) == KVT_MSG_GENERATE_OK);
        size_t tokens_count;
        const uint64_t *tokens = kvt_msg_array (reply, KVT_GENERATE_OK_TOKENS, &tokens_count);
        t_check (tokens_count <= 512);
        if (kvt_msg_request_id (reply) == 1) {
            memcpy (run->x_tokens, tokens, tokens_count * sizeof (uint64_t));
            run->x_count = tokens_count;
        }
        else {
            t_check (kvt_msg_request_id (reply) == 2);
            memcpy (run->q_tokens, tokens, tokens_count * sizeof (uint64_t));
            run->q_count = tokens_count;
            run->q_from [KVT_TIER_GPU] = kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_GPU);
            run->q_from [KVT_TIER_HOST] = kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_HOST);
            run->q_from [KVT_TIER_NVME] = kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_NVME);
            run->q_computed = kvt_msg_u64 (reply, KVT_GENERATE_OK_COMPUTED);
        }
        kvt_msg_destroy (&reply);
    }
    zsock_destroy (&dealer);

    kvt_client_stats_t stats;
    t_ok (kvt_client_stats (client, &stats));
    uint64_t waited = 0;
    kvt_client_stats_find (&stats, "scheduler.prefetched_blocks", &run->prefetched);
    kvt_client_stats_find (&stats, "scheduler.prefetch_hits", &run->hits);
    kvt_client_stats_find (&stats, "scheduler.us_waiting_admission", &waited);
    kvt_client_stats_find (&stats, "scheduler.prefetch_delayed_starts", &run->delayed);
    kvt_client_stats_find (&stats, "scheduler.prefetch_failures", &run->failures);
    t_check (waited > 0);           //  Someone did wait for admission
    kvt_client_stats_fini (&stats);
    if (late) {
        //  The late answer comes, and its staged pins go
        t_check (t_wait_stat (client, "scheduler.late_answers", 1) == 1);
        run->released_late = t_stat (client, "scheduler.prefetch_released_late");
    }
    //  Nothing is left pinned: every block of both prompts can be pushed
    //  down to disk
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    const uint64_t *prompts [2] = { q, x };
    for (int p = 0; p < 2; p++) {
        t_ok (kvt_client_lookup (client, "", prompts [p], count, &where));
        t_check (where.matched_blocks == S_BLOCKS);
        for (size_t k = 0; k < S_BLOCKS; k++)
            t_check (where.tiers [k] == KVT_TIER_NVME);
        kvt_client_lookup_fini (&where);
    }

    free (q);
    free (x);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

int
main (void)
{
    s_run_t on = { 0 }, off = { 0 }, part = { 0 }, late = { 0 };
    s_run (true, 25, false, &on);
    s_run (false, 25, false, &off);
    s_run (true, 5, false, &part);  //  3 blocks of budget: the first 3 are staged
    s_run (true, 25, true, &late);
    printf ("prefetch on:  Q from host %" PRIu64 ", from NVMe %" PRIu64 ", computed %" PRIu64
            "; staged %" PRIu64 ", used %" PRIu64 "; admitted before staging ended %" PRIu64
            "\n", on.q_from [1], on.q_from [2], on.q_computed, on.prefetched, on.hits, on.delayed);
    printf ("prefetch off: Q from host %" PRIu64 ", from NVMe %" PRIu64 ", computed %" PRIu64
            "; staged %" PRIu64 ", used %" PRIu64 "\n", off.q_from [1], off.q_from [2],
            off.q_computed, off.prefetched, off.hits);
    //  On: staged while waiting, so the admission match found it on host
    t_check (on.prefetched == S_BLOCKS && on.hits == S_BLOCKS);
    t_check (on.q_from [KVT_TIER_HOST] == S_BLOCKS && on.q_from [KVT_TIER_NVME] == 0);
    t_check (on.q_computed == 0);
    //  Off: it streams from disk once admitted
    t_check (off.prefetched == 0 && off.hits == 0);
    t_check (off.q_from [KVT_TIER_NVME] == S_BLOCKS && off.q_computed == 0);
    //  Same outputs either way, and the same as computing Q from scratch
    t_check (on.q_count == off.q_count && on.x_count == off.x_count);
    t_check (memcmp (on.q_tokens, off.q_tokens, on.q_count * sizeof (uint64_t)) == 0);
    t_check (memcmp (on.x_tokens, off.x_tokens, on.x_count * sizeof (uint64_t)) == 0);
    t_check (on.q_count == on.q_first.token_count);
    t_check (memcmp (on.q_tokens, on.q_first.tokens, on.q_count * sizeof (uint64_t)) == 0);
    //  A budget of 3 host blocks stages the leading 3; the rest streams
    printf ("prefetch 5%%:  Q from host %" PRIu64 ", from NVMe %" PRIu64 "; staged %" PRIu64
            ", used %" PRIu64 "\n", part.q_from [1], part.q_from [2], part.prefetched, part.hits);
    t_check (part.prefetched == 3 && part.hits == 3);
    t_check (part.q_from [KVT_TIER_HOST] == 3 && part.q_from [KVT_TIER_NVME] == S_BLOCKS - 3);
    t_check (memcmp (part.q_tokens, on.q_tokens, on.q_count * sizeof (uint64_t)) == 0);
    //  Late: the call failed, Q went on without it and found the blocks
    //  the prefetch had staged on the host tier; their staging pins went
    //  with the late answer (else Q's blocks could not be pushed down)
    printf ("prefetch late: Q from host %" PRIu64 ", from NVMe %" PRIu64 "; failed %" PRIu64
            ", staged pins released late %" PRIu64 "\n", late.q_from [1], late.q_from [2],
            late.failures, late.released_late);
    t_check (late.failures == 1 && late.prefetched == 0 && late.hits == 0);
    t_check (late.q_from [KVT_TIER_HOST] == S_BLOCKS && late.q_computed == 0);
    t_check (late.released_late == S_BLOCKS);
    t_check (memcmp (late.q_tokens, on.q_tokens, on.q_count * sizeof (uint64_t)) == 0);
    t_check (memcmp (late.x_tokens, on.x_tokens, on.x_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&late.q_first);
    kvt_client_generate_fini (&on.q_first);
    kvt_client_generate_fini (&off.q_first);
    kvt_client_generate_fini (&part.q_first);
    printf ("test_prefetch_waiting: OK\n");
    return T_EXIT_PASS;
}
