/*  =========================================================================
    test_gpu_layer_shard - static layer sharding with the model on a GPU (#5)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    test_layer_shard's scenario on a CUDA build with a GPU: the GPU tier's
    slab is device memory and keeps the first ceil (F x layers) layers of
    each block; the others live in the "gpu_shard" arena, pinned host
    memory the GPU model reads and writes over PCIe every step. At F = 0.5
    and 0.25 the output tokens and the KV bytes (LOAD) are those of F = 1:
    computed, hit on the GPU tier, demoted to host and promoted back
    (streamed into compute, or copied by migration: copy kernel for 16-32
    KiB parts, copy engines for 128 KiB), on to NVMe and back, stored and
    loaded; with cold_dtype = fp8 too; with tier_gpu, migration and
    compute as processes. The slab holds 1/F times the blocks in the same
    bytes. Skips (77) without CUDA or a GPU.
@end
*/

#include "testutil.h"
#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#   include "layer_shard_scenario.h"
#endif

#ifdef KVT_WITH_CUDA

//  The scenario's model on the device: 'kv_heads' KV heads, so slab parts
//  of 16-32 KiB (copy kernel) and 128 KiB (copy engines) at F = 0.5
static void
s_serve_gpu (const char *fraction, const char *cold, bool stream, int kv_heads, bool processes,
             s_result_t *result)
{
    char heads_key [64];
    snprintf (heads_key, sizeof (heads_key), "model/kv_heads=%d", kv_heads);
    const char *model [] = { "compute/device=cuda", "model/layers=4", "model/heads=8",
        heads_key, "model/head_dim=128", "model/hidden=1024", "model/intermediate=2048",
        "model/vocab=4096", NULL };
    s_serve (model, "test_gpu_layer_shard", 60000, fraction, cold, stream, processes, result);
}

#endif

int
main (void)
{
#ifndef KVT_WITH_CUDA
    printf ("test_gpu_layer_shard: not a CUDA build, skipped\n");
    return T_EXIT_SKIP;
#else
    int devices = 0;
    if (cudaGetDeviceCount (&devices) != cudaSuccess || devices == 0) {
        printf ("test_gpu_layer_shard: no CUDA device, skipped\n");
        return T_EXIT_SKIP;
    }
    bool processes = getenv ("KVTIER") != NULL;     //  kvtier runs actor processes
    struct { const char *cold; bool stream; int kv_heads; bool quarter; } modes [] = {
        { "bf16", true, 2, true }, { "bf16", false, 8, false }, { "fp8", true, 8, false },
        { "fp8", false, 2, false } };
    for (size_t m = 0; m < sizeof (modes) / sizeof (modes [0]); m++) {
        s_result_t whole, half, quarter;
        s_serve_gpu ("1.0", modes [m].cold, modes [m].stream, modes [m].kv_heads, false, &whole);
        s_serve_gpu ("0.5", modes [m].cold, modes [m].stream, modes [m].kv_heads, false, &half);
        t_check (whole.capacity == S_GPU_BLOCKS && whole.shard_bytes == 0);
        t_check (half.capacity == 2 * S_GPU_BLOCKS && half.gpu_layers == 2);
        t_check (half.slab_bytes == whole.slab_bytes && half.shard_bytes == whole.slab_bytes);
        t_check (half.slot_bytes * 2 == whole.slot_bytes);
        s_same (&whole, &half);
        if (modes [m].quarter) {
            s_serve_gpu ("0.25", modes [m].cold, modes [m].stream, modes [m].kv_heads, false,
                     &quarter);
            t_check (quarter.capacity == 4 * S_GPU_BLOCKS && quarter.gpu_layers == 1);
            t_check (quarter.slab_bytes == whole.slab_bytes);
            s_same (&whole, &quarter);
            s_result_fini (&quarter);
        }
        s_check_lossless (modes [m].cold, &whole);
        if (processes && m == 0) {
            s_result_t apart;
            s_serve_gpu ("0.5", modes [m].cold, modes [m].stream, modes [m].kv_heads, true, &apart);
            t_check (apart.capacity == 2 * S_GPU_BLOCKS);
            s_same (&whole, &apart);
            s_result_fini (&apart);
            printf ("test_gpu_layer_shard: F = 0.5 with tier_gpu, migration and compute as "
                    "processes: same tokens and KV\n");
        }
        printf ("test_gpu_layer_shard: cold %s, stream promotion %d, %d KV heads (%" PRIu64
                "-byte slab slots at F = 0.5): tokens and KV of F = 1: OK\n", modes [m].cold,
                modes [m].stream, modes [m].kv_heads, half.slot_bytes);
        s_result_fini (&whole);
        s_result_fini (&half);
    }
    return T_EXIT_PASS;
#endif
}
