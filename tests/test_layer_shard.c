/*  =========================================================================
    test_layer_shard - static layer sharding of the GPU tier, live (#5)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    tier_gpu/layer_fraction = F < 1 keeps the first ceil (F x layers)
    layers of each GPU-tier block in the GPU tier's slab and the rest in
    the "gpu_shard" host arena. With the same prompts, a server at F = 0.5
    (and 0.25) gives the same output tokens and the same KV bytes (LOAD)
    as one at F = 1: computed, hit on the GPU tier, demoted to the host
    tier and promoted back (streamed layer by layer into compute, or
    copied by migration), demoted on to NVMe and streamed back, stored by
    a client and loaded again; with cold_dtype = fp8 too. Its GPU tier
    holds 1/F times the blocks in the same slab bytes (tier_gpu STATS).
    The same with the actors as processes (when KVTIER names the kvtier
    binary). Bad fractions (0, -1, 1.5, abc, "") are refused at start.
@end
*/

#include "layer_shard_scenario.h"

//  The CPU model's shape for the scenario
static const char *const s_model [] = { "model/layers=4", NULL };

//  A runtime at this fraction does not start.
static void
s_refused (const char *fraction)
{
    char key [64];
    snprintf (key, sizeof (key), "%s=%s", KVT_LAYER_SHARD_KEY, fraction);
    const char *overrides [] = { key, NULL };
    kvt_config_t *config = t_config (overrides);
    char error [256] = "";
    kvt_layer_shard_t shard;
    t_check (kvt_layer_shard_from_config (config, &shard, error, sizeof (error)) == KVT_ECONFIG);
    t_check (strstr (error, KVT_LAYER_SHARD_KEY) && strstr (error, "(0, 1]"));
    kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
    t_check (kvt_runtime_start (runtime) == KVT_ECONFIG);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    printf ("%s = '%s' refused: %s\n", KVT_LAYER_SHARD_KEY, fraction, error);
}

int
main (void)
{
    //  (d) Bad values never start a server
    const char *bad [] = { "0", "-1", "1.5", "abc", "", "0.5.1", NULL };
    for (const char *const *value = bad; *value; value++)
        s_refused (*value);

    bool processes = getenv ("KVTIER") != NULL;     //  kvtier runs actor processes
    struct { const char *cold; bool stream; } modes [] = {
        { "bf16", true }, { "bf16", false }, { "fp8", true }, { "fp8", false } };
    for (size_t m = 0; m < sizeof (modes) / sizeof (modes [0]); m++) {
        s_result_t whole, half, quarter;
        s_serve (s_model, "test_layer_shard", 30000, "1.0", modes [m].cold,
                 modes [m].stream, false, &whole);
        s_serve (s_model, "test_layer_shard", 30000, "0.5", modes [m].cold,
                 modes [m].stream, false, &half);
        s_serve (s_model, "test_layer_shard", 30000, "0.25", modes [m].cold,
                 modes [m].stream, false, &quarter);
        //  (b) The same slab bytes hold 1/F times the blocks; the other
        //  layers are in host memory
        t_check (whole.capacity == S_GPU_BLOCKS && whole.shard_bytes == 0);
        t_check (whole.gpu_layers == 4);
        t_check (half.capacity == 2 * S_GPU_BLOCKS && half.gpu_layers == 2);
        t_check (quarter.capacity == 4 * S_GPU_BLOCKS && quarter.gpu_layers == 1);
        t_check (half.slab_bytes == whole.slab_bytes && quarter.slab_bytes == whole.slab_bytes);
        t_check (half.slot_bytes * 2 == whole.slot_bytes);
        t_check (quarter.slot_bytes * 4 == whole.slot_bytes);
        t_check (half.shard_bytes == whole.slab_bytes);
        t_check (quarter.shard_bytes == 3 * whole.slab_bytes);
        //  (a) and (c) Same tokens and bytes on every path
        s_same (&whole, &half);
        s_same (&whole, &quarter);
        s_check_lossless (modes [m].cold, &whole);
        if (processes && m == 0) {
            //  The shard arena reaches actor processes too
            s_result_t apart;
            s_serve (s_model, "test_layer_shard", 30000, "0.5", modes [m].cold,
                 modes [m].stream, true, &apart);
            t_check (apart.capacity == 2 * S_GPU_BLOCKS);
            s_same (&whole, &apart);
            s_result_fini (&apart);
            printf ("F = 0.5 with the actors as processes: same tokens and KV\n");
        }
        printf ("cold %s, stream promotion %d: F = 1, 0.5, 0.25 hold %" PRIu64 ", %" PRIu64
                ", %" PRIu64 " blocks in %" PRIu64 " slab bytes; tokens and KV identical\n",
                modes [m].cold, modes [m].stream, whole.capacity, half.capacity,
                quarter.capacity, whole.slab_bytes);
        s_result_fini (&whole);
        s_result_fini (&half);
        s_result_fini (&quarter);
    }
    return T_EXIT_PASS;
}
