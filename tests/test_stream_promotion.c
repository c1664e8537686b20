/*  =========================================================================
    test_stream_promotion - cached prefixes stream into compute layer by layer

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Issue #3 on the CPU model. With migration/stream_promotion = 1 a
    GENERATE whose cached prefix lies on the host tier (all of it, or the
    part past a GPU-resident head) or on NVMe is not promoted by copy:
    migration reserves GPU slots (and stages NVMe blocks into host slots),
    compute copies each layer's slices in just before that layer runs, and
    MIG_PROMOTE_END then moves the blocks to the GPU in the index. The
    same scenario runs with streaming off on a second runtime: output
    tokens, where each block was served from, and the KV bytes LOAD reads
    back are identical request by request; the counters show every
    streamed block and byte (compute.streamed_blocks / streamed_bytes,
    migration.stream_promoted_blocks, bytes_host_to_gpu) with streaming
    on, and none with it off; after each streamed request the prefix is
    on the GPU tier. Then bad host_slots sent to compute itself get the
    right ERROR. Last, the undo: a stream MIG_PROMOTE sent to migration
    itself (prefix on host, its head on NVMe) names each block's host or
    staging slot and holds GPU slots for all; MIG_PROMOTE_END with commit
    = 0 gives back the GPU and staging slots and leaves the index as it
    was, and the prefix then serves from host and NVMe as before.
@end
*/

#include "testutil.h"

#define S_BLOCKS   12               //  Full blocks of the prompt
#define S_REQUESTS 6                //  Steps of the scenario

typedef struct {
    kvt_client_generate_t result [S_REQUESTS];  //  Each step's answer
    kvt_client_load_t kv [S_REQUESTS];          //  KV LOAD read after it
    uint64_t streamed_blocks;                   //  compute.streamed_blocks at the end
    uint64_t streamed_bytes;                    //  compute.streamed_bytes
    uint64_t stream_promoted;                   //  migration.stream_promoted_blocks
    uint64_t host_to_gpu;                       //  migration.bytes_host_to_gpu
    size_t block_bytes;                         //  From HELLO
} s_run_t;

//  Where the prompt's first block lies now
static uint64_t
s_first_tier (kvt_client_t *client, const uint64_t *tokens, size_t count)
{
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (client, "t", tokens, count, &where));
    t_check (where.matched_blocks == S_BLOCKS);
    uint64_t tier = where.tiers [0];
    kvt_client_lookup_fini (&where);
    return tier;
}

//  Wait (up to a second) until gauge 'key' reads 'want'; fail otherwise
static void
s_gauge_is (kvt_client_t *client, const char *key, uint64_t want)
{
    uint64_t value = 0;
    for (int tries = 0; tries < 100; tries++) {
        value = t_stat (client, key);
        if (value == want)
            return;
        zclock_sleep (10);
    }
    fprintf (stderr, "%s is %" PRIu64 ", expected %" PRIu64 "\n", key, value, want);
    t_check (false);
}

//  Stream promotion undone: GPU and staging slots come back, the index
//  does not move, the prefix still serves from where it was
static void
s_undo (void)
{
    const char *const overrides [] = {
        "migration/stream_promotion=1", "compute/device=cpu", "model/layers=2",
        "model/heads=4", "model/kv_heads=2", "model/head_dim=16", "model/hidden=64",
        "model/intermediate=128", "model/vocab=256", "tier_gpu/capacity_blocks=64",
        "tier_host/capacity_blocks=64", "tier_nvme/capacity_blocks=256", NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    t_check (client);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_stream_promotion", &hello));
    const size_t count = S_BLOCKS * hello.block_tokens;
    uint64_t *tokens = t_tokens (count, hello.vocab, 5);
    kvt_client_generate_t first, again;
    t_ok (kvt_client_generate (client, "u", tokens, count, 4, &first));
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 4, &moved));
    t_check (moved == 4);
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (client, "u", tokens, count, &where));
    t_check (where.matched_blocks == S_BLOCKS && where.hash_count == S_BLOCKS);
    const uint64_t gpu_used = t_stat (client, "tier_gpu.used_blocks");
    const uint64_t host_used = t_stat (client, "tier_host.used_blocks");

    //  Match (pinned), as the scheduler does
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MATCH);
    kvt_msg_set_array (msg, KVT_IDX_MATCH_HASHES, where.hashes, S_BLOCKS);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PIN, 1);
    kvt_msg_t *match = t_call (runtime, "prefix_index", msg);
    t_check (kvt_msg_id (match) == KVT_MSG_IDX_MATCH_OK);
    size_t matched;
    const uint64_t *tiers = kvt_msg_array (match, KVT_IDX_MATCH_OK_TIERS, &matched);
    const uint64_t *slots = kvt_msg_array (match, KVT_IDX_MATCH_OK_SLOTS, NULL);
    t_check (matched == S_BLOCKS);
    size_t on_disk = 0;
    for (size_t k = 0; k < matched; k++)
        on_disk += tiers [k] == KVT_TIER_NVME;
    t_check (on_disk == 4);

    //  Stream promotion: slots named, nothing moved
    msg = kvt_msg_new (KVT_MSG_MIG_PROMOTE);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_HASHES, where.hashes, S_BLOCKS);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_TIERS, tiers, S_BLOCKS);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_SLOTS, slots, S_BLOCKS);
    kvt_msg_set_u64 (msg, KVT_MIG_PROMOTE_STREAM, 1);
    kvt_msg_t *promoted = t_call (runtime, "migration", msg);
    t_check (kvt_msg_id (promoted) == KVT_MSG_MIG_PROMOTE_OK);
    size_t gpu_count, failed_count, host_count;
    const uint64_t *gpu_slots = kvt_msg_array (promoted, KVT_MIG_PROMOTE_OK_GPU_SLOTS, &gpu_count);
    kvt_msg_array (promoted, KVT_MIG_PROMOTE_OK_FAILED, &failed_count);
    const uint64_t *host_slots = kvt_msg_array (promoted, KVT_MIG_PROMOTE_OK_HOST_SLOTS,
                                                &host_count);
    t_check (gpu_count == S_BLOCKS && failed_count == 0 && host_count == S_BLOCKS);
    for (size_t k = 0; k < S_BLOCKS; k++) {
        t_check (gpu_slots [k] < 64 && host_slots [k] < 64);
        if (tiers [k] == KVT_TIER_HOST)
            t_check (host_slots [k] == slots [k]);
    }
    s_gauge_is (client, "tier_gpu.used_blocks", gpu_used + S_BLOCKS);
    s_gauge_is (client, "tier_host.used_blocks", host_used + on_disk);    //  Staging

    //  Undo: the GPU and staging slots come back, the index never moved
    msg = kvt_msg_new (KVT_MSG_MIG_PROMOTE_END);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HASHES, where.hashes, S_BLOCKS);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_TIERS, tiers, S_BLOCKS);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_SLOTS, slots, S_BLOCKS);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_GPU_SLOTS, gpu_slots, S_BLOCKS);
    kvt_msg_set_array (msg, KVT_MIG_PROMOTE_END_HOST_SLOTS, host_slots, S_BLOCKS);
    kvt_msg_set_u64 (msg, KVT_MIG_PROMOTE_END_COMMIT, 0);
    kvt_msg_t *ended = t_call (runtime, "migration", msg);
    t_check (kvt_msg_id (ended) == KVT_MSG_MIG_PROMOTE_END_OK);
    t_check (kvt_msg_u64 (ended, KVT_MIG_PROMOTE_END_OK_MOVED) == 0);
    s_gauge_is (client, "tier_gpu.used_blocks", gpu_used);
    s_gauge_is (client, "tier_host.used_blocks", host_used);
    t_check (t_stat (client, "migration.stream_promotions_undone") == 1);
    kvt_client_lookup_t after;
    t_ok (kvt_client_lookup (client, "u", tokens, count, &after));
    t_check (after.matched_blocks == S_BLOCKS);
    t_check (memcmp (after.tiers, where.tiers, S_BLOCKS * sizeof (uint64_t)) == 0);
    kvt_client_lookup_fini (&after);
    msg = kvt_msg_new (KVT_MSG_IDX_UNPIN);
    kvt_msg_set_array (msg, KVT_IDX_UNPIN_HASHES, where.hashes, S_BLOCKS);
    kvt_msg_t *unpinned = t_call (runtime, "prefix_index", msg);
    t_check (kvt_msg_id (unpinned) == KVT_MSG_IDX_UNPIN_OK);

    //  And the prefix serves as before, streamed from host and NVMe
    t_ok (kvt_client_generate (client, "u", tokens, count, 4, &again));
    t_check (again.from_host == S_BLOCKS - 4 && again.from_nvme == 4);
    t_check (memcmp (first.tokens, again.tokens, 4 * sizeof (uint64_t)) == 0);
    printf ("test_stream_promotion: a stream promotion undone gives its GPU and staging "
            "slots back and leaves the index as it was: OK\n");
    kvt_msg_destroy (&unpinned);
    kvt_msg_destroy (&ended);
    kvt_msg_destroy (&promoted);
    kvt_msg_destroy (&match);
    kvt_client_generate_fini (&again);
    kvt_client_generate_fini (&first);
    kvt_client_lookup_fini (&where);
    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

//  The scenario, streaming on or off: computed; all on host; the tail on
//  host past a GPU head; all on NVMe; on NVMe past a host head; again
//  from the GPU.
static void
s_scenario (bool stream, s_run_t *run)
{
    const char *const overrides [] = {
        stream? "migration/stream_promotion=1": "migration/stream_promotion=0",
        "compute/device=cpu", "model/layers=3", "model/heads=4", "model/kv_heads=2",
        "model/head_dim=16", "model/hidden=64", "model/intermediate=128", "model/vocab=256",
        "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256",
        //  The placements below (which blocks a partial demotion takes)
        //  assume the host tier orders its blocks as the GPU tier does
        "migration/lower_policy=", NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    t_check (client);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_stream_promotion", &hello));
    run->block_bytes = hello.block_bytes;
    const size_t count = S_BLOCKS * hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, hello.vocab, 3);
    uint64_t moved;
    for (int step = 0; step < S_REQUESTS; step++) {
        //  Place the prefix for this step
        if (step == 1)              //  All of it on host
            t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
        if (step == 2) {            //  Head on the GPU (LRU: the first blocks go first)
            t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 5, &moved));
            t_check (moved == 5);
        }
        if (step == 3 || step == 4) {
            t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
            t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME,
                                     step == 3? 1000: 7, &moved));
            t_check (s_first_tier (client, tokens, count) == KVT_TIER_NVME);
        }
        t_ok (kvt_client_generate (client, "t", tokens, count, 7, &run->result [step]));
        t_check (run->result [step].token_count == 7);
        //  Wherever it came from, the prefix is on the GPU tier now
        t_check (s_first_tier (client, tokens, count) == KVT_TIER_GPU);
        t_ok (kvt_client_load (client, "t", tokens, count, &run->kv [step]));
        t_check (run->kv [step].blocks == S_BLOCKS);
    }
    const kvt_client_generate_t *r = run->result;
    t_check (r [0].computed == S_BLOCKS);
    t_check (r [1].from_host == S_BLOCKS && r [1].computed == 0);
    t_check (r [2].from_gpu == S_BLOCKS - 5 && r [2].from_host == 5);
    t_check (r [3].from_nvme == S_BLOCKS);
    t_check (r [4].from_nvme == 7 && r [4].from_host == S_BLOCKS - 7);
    t_check (r [5].from_gpu == S_BLOCKS);
    run->streamed_blocks = t_stat (client, "compute.streamed_blocks");
    run->streamed_bytes = t_stat (client, "compute.streamed_bytes");
    run->stream_promoted = t_stat (client, "migration.stream_promoted_blocks");
    run->host_to_gpu = t_stat (client, "migration.bytes_host_to_gpu");
    t_check (t_stat (client, "migration.copy_errors") == 0);
    t_check (t_stat (client, "compute.run_errors") == 0);
    t_check (t_stat (client, "scheduler.stream_end_errors") == 0);

    if (stream) {
        //  Bad host_slots straight to compute: wrong length, out of range
        zsock_t *dealer = t_dealer (runtime, "compute");
        uint64_t slots [S_BLOCKS], host_slots [S_BLOCKS];
        for (size_t k = 0; k < S_BLOCKS; k++) {
            slots [k] = k;
            host_slots [k] = UINT64_MAX;
        }
        for (int bad = 0; bad < 2; bad++) {
            host_slots [1] = bad? 1u << 30: UINT64_MAX;
            kvt_msg_t *msg = kvt_msg_new (KVT_MSG_COMP_RUN);
            kvt_msg_set_array (msg, KVT_COMP_RUN_TOKENS, tokens, count);
            kvt_msg_set_array (msg, KVT_COMP_RUN_SLOTS, slots, S_BLOCKS);
            kvt_msg_set_u64 (msg, KVT_COMP_RUN_CACHED_BLOCKS, 4);
            kvt_msg_set_u64 (msg, KVT_COMP_RUN_MAX_NEW_TOKENS, 1);
            kvt_msg_set_array (msg, KVT_COMP_RUN_HOST_SLOTS, host_slots, bad? 4: 3);
            kvt_msg_set_request_id (msg, 9);
            t_ok (kvt_msg_send (&msg, dealer));
            kvt_msg_t *reply = NULL;
            t_ok (kvt_msg_recv (dealer, &reply));
            t_check (kvt_msg_id (reply) == KVT_MSG_ERROR);
            t_check (kvt_msg_i64 (reply, KVT_ERROR_CODE) == (bad? -ERANGE: -EINVAL));
            kvt_msg_destroy (&reply);
        }
        zsock_destroy (&dealer);
    }
    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

int
main (void)
{
    static s_run_t on, off;
    s_scenario (true, &on);
    s_scenario (false, &off);
    for (int step = 0; step < S_REQUESTS; step++) {
        const kvt_client_generate_t *a = &on.result [step], *b = &off.result [step];
        t_check (a->token_count == b->token_count);
        t_check (memcmp (a->tokens, b->tokens, a->token_count * sizeof (uint64_t)) == 0);
        t_check (a->from_gpu == b->from_gpu && a->from_host == b->from_host
              && a->from_nvme == b->from_nvme && a->computed == b->computed);
        t_check (on.kv [step].kv_bytes == off.kv [step].kv_bytes);
        t_check (memcmp (on.kv [step].kv, off.kv [step].kv, on.kv [step].kv_bytes) == 0);
        //  And every step reads back the KV computed at step 0
        t_check (memcmp (on.kv [step].kv, on.kv [0].kv, on.kv [0].kv_bytes) == 0);
    }
    //  Blocks that came up from host or NVMe: steps 1 to 4
    uint64_t came_up = 0;
    for (int step = 1; step <= 4; step++)
        came_up += on.result [step].from_host + on.result [step].from_nvme;
    printf ("test_stream_promotion: streaming on: %" PRIu64 " blocks (%" PRIu64 " bytes) "
            "streamed layer by layer, %" PRIu64 " came up from host or NVMe\n",
            on.streamed_blocks, on.streamed_bytes, came_up);
    t_check (on.streamed_blocks == came_up);
    t_check (on.streamed_bytes == came_up * on.block_bytes);
    t_check (on.stream_promoted == came_up);
    t_check (on.host_to_gpu == came_up * on.block_bytes);
    t_check (off.streamed_blocks == 0 && off.streamed_bytes == 0 && off.stream_promoted == 0);
    t_check (off.host_to_gpu == came_up * off.block_bytes);
    for (int step = 0; step < S_REQUESTS; step++) {
        kvt_client_generate_fini (&on.result [step]);
        kvt_client_generate_fini (&off.result [step]);
        kvt_client_load_fini (&on.kv [step]);
        kvt_client_load_fini (&off.kv [step]);
    }
    printf ("test_stream_promotion: streamed and copied promotions give the same tokens, "
            "placement and KV bytes: OK\n");
    s_undo ();
    return T_EXIT_PASS;
}
