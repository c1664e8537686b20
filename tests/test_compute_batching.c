/*  =========================================================================
    test_compute_batching - concurrent requests decode together, same output

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Continuous batching in the compute actor, on the CPU model. Seven
    prompts (one of 1500 tokens, prefilled 16 tokens per loop turn) run one
    at a time on a fresh runtime, then all at once from seven clients on
    another: each gets byte-identical output tokens and the KV LOAD reads
    back is byte-identical, while the counters show decode steps of more
    than one sequence and decode steps run between two slices of a
    prefill. Then the same requests again at once, now fully cached: same
    tokens. Then with compute/max_batch = 2 (the rest wait their turn):
    same tokens, batches never larger than 2; bad COMP_RUNs sent to the
    compute actor itself get ERROR with the right code and leave it
    serving; then, while one request decodes 1500 tokens, STATS sent to
    the compute actor answers between two steps (steps complete through
    the actor's eventfd: compute.steps_async moves on), and a short
    COMP_RUN sent meanwhile joins the batch and is answered first, with
    its tokens. Last, seven long decodes are
    cut by stopping the runtime: STATS answers between decode steps, and
    the runtime stops at once.
@end
*/

#include "testutil.h"
#include <pthread.h>

#define S_PROMPTS   7               //  Requests in the batch
#define S_MAX_NEW   200             //  Tokens each decodes
#define S_LONG      1500            //  Tokens of the long prompt

static const size_t s_lengths [S_PROMPTS] = { 37, 80, 150, 21, 64, 200, S_LONG };

typedef struct {
    const char *endpoint;           //  The runtime's ipc endpoint
    uint64_t *tokens;               //  The prompt
    size_t count;                   //  Its length
    int64_t delay_us;               //  Wait this long before asking
    pthread_barrier_t *start;       //  Everyone starts together
    uint64_t max_new;               //  Tokens to ask
    int timeout_ms;                 //  Client timeout
    bool cut;                       //  The runtime stops before the answer
    kvt_client_generate_t result;   //  The answer
} s_request_t;

static void *
s_client_thread (void *arg)
{
    s_request_t *request = (s_request_t *) arg;
    kvt_client_t *client = kvt_client_new (request->endpoint, request->timeout_ms);
    t_check (client);
    pthread_barrier_wait (request->start);
    if (request->delay_us)
        zclock_sleep ((int) (request->delay_us / 1000));
    int rc = kvt_client_generate (client, "batch", request->tokens, request->count,
                                  request->max_new, &request->result);
    if (request->cut) {
        if (rc == 0)
            kvt_client_generate_fini (&request->result);
    }
    else
        t_ok (rc);
    kvt_client_destroy (&client);
    return NULL;
}

//  Send compute a COMP_RUN; return the ERROR code, or 0 for COMP_RUN_OK
//  with 'max_new' tokens
static int64_t
s_comp_run (zsock_t *dealer, const uint64_t *tokens, size_t count, const uint64_t *slots,
            size_t slot_count, uint64_t cached, uint64_t max_new)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_COMP_RUN);
    kvt_msg_set_array (msg, KVT_COMP_RUN_TOKENS, tokens, count);
    kvt_msg_set_array (msg, KVT_COMP_RUN_SLOTS, slots, slot_count);
    kvt_msg_set_u64 (msg, KVT_COMP_RUN_CACHED_BLOCKS, cached);
    kvt_msg_set_u64 (msg, KVT_COMP_RUN_MAX_NEW_TOKENS, max_new);
    kvt_msg_set_request_id (msg, 7);
    t_ok (kvt_msg_send (&msg, dealer));
    kvt_msg_t *reply = NULL;
    t_ok (kvt_msg_recv (dealer, &reply));
    t_check (kvt_msg_request_id (reply) == 7);
    int64_t code = 0;
    if (kvt_msg_id (reply) == KVT_MSG_ERROR)
        code = kvt_msg_i64 (reply, KVT_ERROR_CODE);
    else {
        t_check (kvt_msg_id (reply) == KVT_MSG_COMP_RUN_OK);
        size_t out_count;
        kvt_msg_array (reply, KVT_COMP_RUN_OK_TOKENS, &out_count);
        t_check (out_count == max_new);
        //  The prefill's own time: some, and inside the run's total
        uint64_t prefill_us = kvt_msg_u64 (reply, KVT_COMP_RUN_OK_PREFILL_US);
        t_check (prefill_us > 0);
        t_check (prefill_us <= kvt_msg_u64 (reply, KVT_COMP_RUN_OK_TOTAL_US));
    }
    kvt_msg_destroy (&reply);
    return code;
}

//  Send compute a COMP_RUN as request 'id' and do not wait
static void
s_comp_send (zsock_t *dealer, const uint64_t *tokens, size_t count, const uint64_t *slots,
             size_t slot_count, uint64_t max_new, uint32_t id)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_COMP_RUN);
    kvt_msg_set_array (msg, KVT_COMP_RUN_TOKENS, tokens, count);
    kvt_msg_set_array (msg, KVT_COMP_RUN_SLOTS, slots, slot_count);
    kvt_msg_set_u64 (msg, KVT_COMP_RUN_CACHED_BLOCKS, 0);
    kvt_msg_set_u64 (msg, KVT_COMP_RUN_MAX_NEW_TOKENS, max_new);
    kvt_msg_set_request_id (msg, id);
    t_ok (kvt_msg_send (&msg, dealer));
}

//  The next reply on 'dealer': must be request 'id' of type 'type'
static kvt_msg_t *
s_next_reply (zsock_t *dealer, uint32_t id, int type)
{
    kvt_msg_t *reply = NULL;
    t_ok (kvt_msg_recv (dealer, &reply));
    if (kvt_msg_request_id (reply) != id || kvt_msg_id (reply) != type) {
        fprintf (stderr, "test_compute_batching: got reply %u type %d, want %u type %d\n",
                 (unsigned) kvt_msg_request_id (reply), (int) kvt_msg_id (reply),
                 (unsigned) id, type);
        t_check (false);
    }
    return reply;
}

//  Ask compute for STATS as request 'id'; the values of the counters
//  'keys' (NULL-terminated) into 'values'; the first one's is returned
static uint64_t
s_actor_stats (zsock_t *dealer, uint32_t id, const char *const *keys, uint64_t *values,
               int64_t *took_us)
{
    int64_t asked = zclock_usecs ();
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_STATS);
    kvt_msg_set_request_id (msg, id);
    t_ok (kvt_msg_send (&msg, dealer));
    kvt_msg_t *reply = s_next_reply (dealer, id, KVT_MSG_STATS_OK);
    if (took_us)
        *took_us = zclock_usecs () - asked;
    for (int i = 0; keys [i]; i++) {
        values [i] = 0;
        size_t size = strlen (keys [i]);
        for (size_t k = 0; k < kvt_msg_map_size (reply, KVT_STATS_OK_COUNTERS); k++) {
            const char *name = kvt_msg_map_key (reply, KVT_STATS_OK_COUNTERS, k);
            size_t length = strlen (name);
            if (length >= size && streq (name + length - size, keys [i]))
                values [i] = kvt_msg_map_value (reply, KVT_STATS_OK_COUNTERS, k);
        }
    }
    kvt_msg_destroy (&reply);
    return values [0];
}

//  As s_actor_stats, one counter
static uint64_t
s_actor_stat (zsock_t *dealer, uint32_t id, const char *key, int64_t *took_us)
{
    const char *const keys [] = { key, NULL };
    uint64_t value;
    return s_actor_stats (dealer, id, keys, &value, took_us);
}

//  A config on a model big enough that a decode step takes a while
static kvt_config_t *
s_config (const char *max_batch)
{
    const char *const overrides [] = {
        "compute/device=cpu", "model/layers=4", "model/heads=8", "model/kv_heads=2",
        "model/head_dim=32", "model/hidden=256", "model/intermediate=512",
        "model/vocab=1024", "compute/prefill_chunk=16", max_batch,
        "tier_gpu/capacity_blocks=400", NULL };
    return t_config (overrides);
}

//  Start every prompt at once on 'runtime' (answers in requests [].result)
static void
s_start_together (kvt_runtime_t *runtime, uint64_t **prompts, s_request_t *requests,
                  pthread_barrier_t *start, pthread_t *threads, uint64_t max_new, bool cut)
{
    pthread_barrier_init (start, NULL, S_PROMPTS);
    for (int i = 0; i < S_PROMPTS; i++) {
        requests [i] = (s_request_t) {
            .endpoint = kvt_runtime_ipc_endpoint (runtime), .tokens = prompts [i],
            .count = s_lengths [i], .start = start, .max_new = max_new,
            .timeout_ms = cut? 3000: 120000, .cut = cut,
            .delay_us = s_lengths [i] == S_LONG? 20000: 0 };    //  Long one joins late
        t_check (pthread_create (&threads [i], NULL, s_client_thread, &requests [i]) == 0);
    }
}

//  Wait for the requests s_start_together started
static void
s_join (pthread_barrier_t *start, pthread_t *threads)
{
    for (int i = 0; i < S_PROMPTS; i++)
        pthread_join (threads [i], NULL);
    pthread_barrier_destroy (start);
}

//  Run every prompt at once on 'runtime'; answers in requests [].result
static void
s_run_together (kvt_runtime_t *runtime, uint64_t **prompts, s_request_t *requests)
{
    pthread_barrier_t start;
    pthread_t threads [S_PROMPTS];
    s_start_together (runtime, prompts, requests, &start, threads, S_MAX_NEW, false);
    s_join (&start, threads);
}

int
main (void)
{
    uint64_t *prompts [S_PROMPTS];
    for (int i = 0; i < S_PROMPTS; i++)
        prompts [i] = t_tokens (s_lengths [i], 1024, 500 + (uint64_t) i);

    //  One at a time: the reference tokens and KV
    kvt_client_generate_t alone [S_PROMPTS];
    kvt_client_load_t alone_kv [S_PROMPTS];
    {
        kvt_config_t *config = s_config ("compute/max_batch=64");
        kvt_runtime_t *runtime = t_start_runtime (config);
        kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 120000);
        t_check (client);
        for (int i = 0; i < S_PROMPTS; i++) {
            t_ok (kvt_client_generate (client, "batch", prompts [i], s_lengths [i], S_MAX_NEW,
                                       &alone [i]));
            t_check (alone [i].token_count == S_MAX_NEW);
            t_ok (kvt_client_load (client, "batch", prompts [i], s_lengths [i], &alone_kv [i]));
            t_check (alone_kv [i].blocks == s_lengths [i] / 16);
        }
        t_check (t_stat (client, "compute.batched_rows")
                 == t_stat (client, "compute.decode_steps"));   //  Batches of one
        kvt_client_destroy (&client);
        kvt_runtime_destroy (&runtime);
        kvt_config_destroy (&config);
    }

    //  All at once, twice (the second time every block is cached)
    {
        kvt_config_t *config = s_config ("compute/max_batch=64");
        kvt_runtime_t *runtime = t_start_runtime (config);
        kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 120000);
        t_check (client);
        s_request_t requests [S_PROMPTS];
        for (int round = 0; round < 2; round++) {
            s_run_together (runtime, prompts, requests);
            for (int i = 0; i < S_PROMPTS; i++) {
                kvt_client_generate_t *got = &requests [i].result;
                t_check (got->token_count == S_MAX_NEW);
                t_check (memcmp (got->tokens, alone [i].tokens,
                                 S_MAX_NEW * sizeof (uint64_t)) == 0);
                if (round == 0)
                    t_check (got->computed == s_lengths [i] / 16);
                else
                    t_check (got->computed == 0 && got->from_gpu == s_lengths [i] / 16);
                kvt_client_generate_fini (got);
                kvt_client_load_t kv;
                t_ok (kvt_client_load (client, "batch", prompts [i], s_lengths [i], &kv));
                t_check (kv.blocks == alone_kv [i].blocks && kv.kv_bytes == alone_kv [i].kv_bytes);
                t_check (memcmp (kv.kv, alone_kv [i].kv, kv.kv_bytes) == 0);
                kvt_client_load_fini (&kv);
            }
        }
        uint64_t steps = t_stat (client, "compute.decode_steps");
        uint64_t rows = t_stat (client, "compute.batched_rows");
        uint64_t mixed = t_stat (client, "compute.mixed_steps");
        uint64_t slices = t_stat (client, "compute.prefill_slices");
        printf ("test_compute_batching: %" PRIu64 " decode steps, %" PRIu64 " rows (mean "
                "batch %.2f), %" PRIu64 " prefill slices, %" PRIu64 " steps beside a prefill\n",
                steps, rows, steps? (double) rows / (double) steps: 0.0, slices, mixed);
        t_check (rows == 2 * S_PROMPTS * (S_MAX_NEW - 1));
        t_check (rows > steps + S_MAX_NEW);         //  Real batches, not just an overlap
        t_check (slices >= S_LONG / 16);            //  The long prompt came in slices
        t_check (mixed > 0);                        //  ... between decode steps
        kvt_client_destroy (&client);
        kvt_runtime_destroy (&runtime);
        kvt_config_destroy (&config);
    }

    //  max_batch 2: the others wait, same answers
    {
        kvt_config_t *config = s_config ("compute/max_batch=2");
        kvt_runtime_t *runtime = t_start_runtime (config);
        kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 120000);
        t_check (client);
        s_request_t requests [S_PROMPTS];
        s_run_together (runtime, prompts, requests);
        for (int i = 0; i < S_PROMPTS; i++) {
            t_check (memcmp (requests [i].result.tokens, alone [i].tokens,
                             S_MAX_NEW * sizeof (uint64_t)) == 0);
            kvt_client_generate_fini (&requests [i].result);
        }
        uint64_t steps = t_stat (client, "compute.decode_steps");
        uint64_t rows = t_stat (client, "compute.batched_rows");
        t_check (rows <= 2 * steps && rows > steps);
        t_check (t_stat (client, "compute.seqs_waiting") == 0);

        //  Bad COMP_RUNs straight to the compute actor
        zsock_t *dealer = t_dealer (runtime, "compute");
        uint64_t slots [3] = { 0, 1, 2 }, far [2] = { 0, 400 };
        uint64_t bad_token [40];
        memcpy (bad_token, prompts [1], sizeof (bad_token));     //  80 tokens
        bad_token [39] = 1024;
        t_check (s_comp_run (dealer, prompts [0], 0, NULL, 0, 0, 4) == -EINVAL);
        t_check (s_comp_run (dealer, prompts [0], 37, slots, 3, 0, 4) == -EINVAL);
        t_check (s_comp_run (dealer, prompts [0], 37, slots, 2, 3, 4) == -EINVAL);
        t_check (s_comp_run (dealer, prompts [0], 37, far, 2, 0, 4) == -ERANGE);
        t_check (s_comp_run (dealer, bad_token, 40, slots, 2, 0, 4) == -EINVAL);
        t_check (s_comp_run (dealer, prompts [0], 37, slots, 2, 0, 4097) == -EINVAL);
        //  ... and it still serves: prompt 0 into free slots, five tokens
        t_check (s_comp_run (dealer, prompts [0], 37, slots, 2, 0, 5) == 0);

        //  A long decode: STATS answers at once while it runs (steps end
        //  through the eventfd, the loop reads its inbox between), and a
        //  short COMP_RUN sent meanwhile joins the batch and ends first
        uint64_t steps_before = s_actor_stat (dealer, 20, "steps_async", NULL);
        t_check (steps_before > 0);
        s_comp_send (dealer, prompts [0], 37, slots, 2, 1500, 21);
        zclock_sleep (20);
        int64_t stats_us = 0;
        uint64_t steps_mid = s_actor_stat (dealer, 22, "steps_async", &stats_us);
        s_comp_send (dealer, prompts [3], 21, slots + 2, 1, 5, 23);
        kvt_msg_t *reply = s_next_reply (dealer, 23, KVT_MSG_COMP_RUN_OK);
        size_t out_count;
        const uint64_t *out = kvt_msg_array (reply, KVT_COMP_RUN_OK_TOKENS, &out_count);
        t_check (out_count == 5 && memcmp (out, alone [3].tokens, 5 * sizeof (uint64_t)) == 0);
        kvt_msg_destroy (&reply);
        const char *const keys [] = { "steps_async", "runs_mid_step", "launch_us",
                                      "finish_us", "busy_us", NULL };
        uint64_t values [5];
        uint64_t steps_after = s_actor_stats (dealer, 24, keys, values, NULL);
        uint64_t mid_step = values [1], launch_us = values [2], finish_us = values [3];
        uint64_t busy_us = values [4];
        reply = s_next_reply (dealer, 21, KVT_MSG_COMP_RUN_OK);
        kvt_msg_array (reply, KVT_COMP_RUN_OK_TOKENS, &out_count);
        t_check (out_count == 1500);
        kvt_msg_destroy (&reply);
        printf ("test_compute_batching: STATS in %.1f ms during a 1500-token decode; "
                "steps_async %" PRIu64 " -> %" PRIu64 " -> %" PRIu64 ", runs_mid_step %"
                PRIu64 ", launch %.1f ms + finish %.1f ms\n", stats_us / 1000.0,
                steps_before, steps_mid, steps_after, mid_step, launch_us / 1000.0,
                finish_us / 1000.0);
        t_check (steps_mid < steps_after);      //  STATS came between steps
        t_check (steps_after >= steps_mid + 5); //  The short one's five tokens ran meanwhile
        t_check (stats_us < 1000000);
        t_check (busy_us == launch_us + finish_us);
        zsock_destroy (&dealer);
        kvt_client_destroy (&client);
        kvt_runtime_destroy (&runtime);
        kvt_config_destroy (&config);
    }

    //  Stopping mid-batch: long decodes in flight, STATS still answers
    //  between steps, the runtime stops at once
    {
        kvt_config_t *config = s_config ("compute/max_batch=64");
        kvt_runtime_t *runtime = t_start_runtime (config);
        kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 120000);
        t_check (client);
        s_request_t requests [S_PROMPTS];
        pthread_barrier_t start;
        pthread_t threads [S_PROMPTS];
        s_start_together (runtime, prompts, requests, &start, threads, 4000, true);
        int64_t slowest_us = 0, waited = zclock_usecs ();
        while (t_stat (client, "compute.batched_rows") < 50) {
            t_check (zclock_usecs () - waited < 60 * 1000000);
            int64_t asked = zclock_usecs ();
            t_stat (client, "compute.decode_steps");
            int64_t took = zclock_usecs () - asked;
            slowest_us = took > slowest_us? took: slowest_us;
            zclock_sleep (5);
        }
        t_check (t_stat (client, "compute.seqs_active") > 1);
        t_check (t_stat (client, "compute.runs") == 0);     //  All still decoding
        kvt_client_destroy (&client);
        int64_t stopping = zclock_usecs ();
        kvt_runtime_destroy (&runtime);
        int64_t stop_us = zclock_usecs () - stopping;
        printf ("test_compute_batching: STATS within %.1f ms while decoding, stopped "
                "mid-batch in %.1f ms\n", slowest_us / 1000.0, stop_us / 1000.0);
        t_check (slowest_us < 1000000);
        t_check (stop_us < 5000000);
        s_join (&start, threads);
        kvt_config_destroy (&config);
    }

    for (int i = 0; i < S_PROMPTS; i++) {
        kvt_client_generate_fini (&alone [i]);
        kvt_client_load_fini (&alone_kv [i]);
        free (prompts [i]);
    }
    printf ("test_compute_batching: OK\n");
    return T_EXIT_PASS;
}
