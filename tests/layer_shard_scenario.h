/*  =========================================================================
    layer_shard_scenario - test_layer_shard's scenario, shared with
    test_gpu_layer_shard (static layer sharding, issue #5)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    One server at a layer fraction takes a prompt through every path a
    GPU-tier block has: computed, hit on the GPU tier, demoted to the host
    tier and promoted back, on to NVMe and back, and a client's KV stored
    and loaded; s_same then compares two servers' tokens and LOAD bytes.
    The CPU test runs it on the CPU model, the GPU test with the model on
    a device; each names its model shape.
@end
*/

#ifndef KVT_LAYER_SHARD_SCENARIO_H_INCLUDED
#define KVT_LAYER_SHARD_SCENARIO_H_INCLUDED

#include "testutil.h"
#include "kvt_layer_shard.h"

#define S_BLOCKS 6                  //  Full blocks in the prompt
#define S_NEW 4                     //  Tokens decoded per request
#define S_GPU_BLOCKS 16             //  tier_gpu/capacity_blocks: the GPU memory budget

//  What one server answered, to compare across fractions
typedef struct {
    kvt_client_generate_t run [4];  //  Computed, GPU hit, from host, from NVMe
    kvt_client_load_t load [3];     //  LOAD after the GPU hit, after host, after NVMe
    uint64_t capacity;              //  tier_gpu.capacity_blocks
    uint64_t slab_bytes;            //  tier_gpu.slab_bytes
    uint64_t shard_bytes;           //  tier_gpu.shard_bytes
    uint64_t slot_bytes;            //  tier_gpu.slot_bytes
    uint64_t gpu_layers;            //  tier_gpu.gpu_layers
    uint64_t to_host_bytes;         //  migration.bytes_gpu_to_host after the first demotion
} s_result_t;

static void
s_result_fini (s_result_t *self)
{
    for (int k = 0; k < 4; k++)
        kvt_client_generate_fini (&self->run [k]);
    for (int k = 0; k < 3; k++)
        kvt_client_load_fini (&self->load [k]);
}

static void
s_load (kvt_client_t *client, const uint64_t *tokens, size_t count, kvt_client_load_t *load)
{
    t_ok (kvt_client_load (client, "", tokens, count, load));
    t_check (load->blocks == S_BLOCKS && load->kv_bytes > 0);
}

//  One server at 'fraction' ('model' holds the test's model keys, "path=
//  value" strings, NULL-terminated; 'name' and 'timeout_ms' its session):
//  every path a GPU-tier block takes.
static void
s_serve (const char *const *model, const char *name, int timeout_ms, const char *fraction,
         const char *cold, bool stream, bool processes, s_result_t *result)
{
    char fraction_key [64], cold_key [64], stream_key [64], capacity_key [64];
    snprintf (fraction_key, sizeof (fraction_key), "%s=%s", KVT_LAYER_SHARD_KEY, fraction);
    snprintf (cold_key, sizeof (cold_key), "migration/cold_dtype=%s", cold);
    snprintf (stream_key, sizeof (stream_key), "migration/stream_promotion=%d", stream);
    snprintf (capacity_key, sizeof (capacity_key), "tier_gpu/capacity_blocks=%d", S_GPU_BLOCKS);
    const char *overrides [32] = { capacity_key, "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", fraction_key, cold_key, stream_key };
    size_t keys = 6;
    for (const char *const *key = model; *key && keys < 26; key++)
        overrides [keys++] = *key;
    if (processes) {                //  The shard arena must reach actor processes too
        overrides [keys++] = "migration/mode=process";
        overrides [keys++] = "compute/mode=process";
        overrides [keys++] = "tier_gpu/mode=process";
        overrides [keys++] = "tier_host/mode=process";
    }
    overrides [keys] = NULL;
    t_session_t session;
    t_session_start (&session, t_config (overrides), name, timeout_ms);
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 2;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 31);
    memset (result, 0, sizeof (*result));
    result->capacity = t_stat (client, "tier_gpu.capacity_blocks");
    result->slab_bytes = t_stat (client, "tier_gpu.slab_bytes");
    result->shard_bytes = t_stat (client, "tier_gpu.shard_bytes");
    result->slot_bytes = t_stat (client, "tier_gpu.slot_bytes");
    result->gpu_layers = t_stat (client, "tier_gpu.gpu_layers");

    //  Computed, then found on the GPU tier
    t_ok (kvt_client_generate (client, "", tokens, count, S_NEW, &result->run [0]));
    t_check (result->run [0].computed == S_BLOCKS);
    t_ok (kvt_client_generate (client, "", tokens, count, S_NEW, &result->run [1]));
    t_check (result->run [1].from_gpu == S_BLOCKS && result->run [1].computed == 0);
    s_load (client, tokens, count, &result->load [0]);

    //  Demoted to the host tier, found there (promoted back to the GPU)
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == S_BLOCKS);
    result->to_host_bytes = t_stat (client, "migration.bytes_gpu_to_host");
    t_ok (kvt_client_generate (client, "", tokens, count, S_NEW, &result->run [2]));
    t_check (result->run [2].from_host == S_BLOCKS && result->run [2].computed == 0);
    s_load (client, tokens, count, &result->load [1]);

    //  Down to NVMe, found there (streamed back through host staging)
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == S_BLOCKS);
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_check (moved == S_BLOCKS);
    t_ok (kvt_client_generate (client, "", tokens, count, S_NEW, &result->run [3]));
    t_check (result->run [3].from_nvme == S_BLOCKS && result->run [3].computed == 0);
    s_load (client, tokens, count, &result->load [2]);

    //  A client's KV stored into the GPU tier comes back byte for byte
    uint64_t *other = t_tokens (count, session.hello.vocab, 32);
    size_t kv_bytes = result->load [0].kv_bytes;
    uint8_t *kv = (uint8_t *) malloc (kv_bytes);
    kvt_client_fill_bytes (kv, kv_bytes, 77);
    kvt_client_store_t stored;
    t_ok (kvt_client_store (client, "", other, count, kv, kv_bytes, &stored));
    t_check (stored.stored_blocks == S_BLOCKS);
    kvt_client_load_t back;
    s_load (client, other, count, &back);
    t_check (back.kv_bytes == kv_bytes && memcmp (back.kv, kv, kv_bytes) == 0);
    kvt_client_load_fini (&back);
    free (kv);
    free (other);
    free (tokens);
    t_session_end (&session);
}

//  Same tokens and same LOAD bytes at every step.
static void
s_same (const s_result_t *a, const s_result_t *b)
{
    for (int k = 0; k < 4; k++) {
        t_check (a->run [k].token_count == S_NEW && b->run [k].token_count == S_NEW);
        t_check (memcmp (a->run [k].tokens, b->run [k].tokens, S_NEW * sizeof (uint64_t)) == 0);
    }
    for (int k = 0; k < 3; k++) {
        t_check (a->load [k].kv_bytes == b->load [k].kv_bytes);
        t_check (memcmp (a->load [k].kv, b->load [k].kv, a->load [k].kv_bytes) == 0);
    }
    t_check (a->to_host_bytes == b->to_host_bytes);     //  Whole blocks either way
}

//  A bf16 cold tier is lossless: with 'cold' "bf16", every run of
//  'result' gives its first run's tokens.
static void
s_check_lossless (const char *cold, const s_result_t *result)
{
    if (strcmp (cold, "bf16") == 0)
        for (int k = 1; k < 4; k++)
            t_check (memcmp (result->run [k].tokens, result->run [0].tokens,
                             S_NEW * sizeof (uint64_t)) == 0);
}

#endif
