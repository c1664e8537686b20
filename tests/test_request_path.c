/*  =========================================================================
    test_request_path - one request end to end, through every tier

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    GENERATE computes a prompt's blocks; the same request again is served
    from the GPU tier, then (after DEMOTE) from host, then from NVMe, and
    gives the same output tokens each time. LOAD returns the same KV bytes
    whichever tier the blocks come from, and they equal what STORE put in
    for another tenant. Bytes flipped on disk make the block a miss: the
    request is recomputed with the same output and the checksum failure is
    counted.
@end
*/

#include "testutil.h"
#include "kvt_nvme_store.h"

static void
s_same_tokens (const kvt_client_generate_t *a, const kvt_client_generate_t *b)
{
    t_check (a->token_count == b->token_count);
    t_check (memcmp (a->tokens, b->tokens, a->token_count * sizeof (uint64_t)) == 0);
}

//  Flip one byte in the payload of every block file's first block area.
static int
s_corrupt_disk (const char *nvme_dir)
{
    int corrupted = 0;
    DIR *dir = opendir (nvme_dir);
    t_check (dir);
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        if (!strstr (entry->d_name, ".dat") || strstr (entry->d_name, "journal"))
            continue;
        char path [1400];
        snprintf (path, sizeof (path), "%s/%s", nvme_dir, entry->d_name);
        FILE *file = fopen (path, "r+b");
        t_check (file);
        fseek (file, 0, SEEK_END);
        long size = ftell (file);
        //  Flip a byte inside every 4 KiB page after the first header
        for (long offset = 4096 + 100; offset < size; offset += 4096) {
            fseek (file, offset, SEEK_SET);
            int byte = fgetc (file);
            fseek (file, offset, SEEK_SET);
            fputc (byte ^ 0x5a, file);
            corrupted++;
        }
        fclose (file);
    }
    closedir (dir);
    return corrupted;
}

int
main (void)
{
    static const char *const overrides [] = {
        "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    t_check (client);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_request_path", &hello));
    t_check (hello.block_tokens == 16 && hello.protocol == KVT_PROTOCOL_VERSION);

    //  10 full blocks and a partial one
    size_t count = 10 * hello.block_tokens + 7;
    uint64_t *tokens = t_tokens (count, hello.vocab, 1);
    kvt_client_generate_t first, again;
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &first));
    t_check (first.computed == 10 && first.from_gpu == 0 && first.token_count == 6);

    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &again));
    t_check (again.from_gpu == 10 && again.computed == 0);
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    //  Another tenant never sees alice's blocks
    t_ok (kvt_client_generate (client, "bob", tokens, count, 6, &again));
    t_check (again.computed == 10);
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    kvt_client_load_t gpu_kv;
    t_ok (kvt_client_load (client, "alice", tokens, count, &gpu_kv));
    t_check (gpu_kv.blocks == 10 && gpu_kv.kv_bytes == 10 * hello.block_bytes);

    //  Down to host: same output, same bytes
    uint64_t moved = 0;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved == 20);          //  alice's and bob's blocks
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (client, "alice", tokens, count, &where));
    t_check (where.matched_blocks == 10 && where.tiers [0] == KVT_TIER_HOST);
    kvt_client_lookup_fini (&where);
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &again));
    t_check (again.from_host == 10 && again.computed == 0);
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    //  Down to NVMe (GPU -> host -> NVMe): same output, same bytes
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_check (moved == 20);
    kvt_client_load_t nvme_kv;
    t_ok (kvt_client_lookup (client, "alice", tokens, count, &where));
    t_check (where.matched_blocks == 10 && where.tiers [9] == KVT_TIER_NVME);
    kvt_client_lookup_fini (&where);
    t_ok (kvt_client_load (client, "alice", tokens, count, &nvme_kv));
    t_check (nvme_kv.blocks == 10 && nvme_kv.tiers [0] == KVT_TIER_NVME);
    t_check (memcmp (nvme_kv.kv, gpu_kv.kv, gpu_kv.kv_bytes) == 0);
    kvt_client_load_fini (&nvme_kv);
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &again));
    t_check (again.from_gpu == 10);  //  LOAD promoted them
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    //  STORE: a client's KV goes in and comes back byte for byte
    size_t store_count = 4 * hello.block_tokens;
    uint64_t *store_tokens = t_tokens (store_count, hello.vocab, 99);
    size_t store_bytes = 4 * hello.block_bytes;
    void *kv = malloc (store_bytes);
    kvt_client_fill_bytes (kv, store_bytes, 7);
    kvt_client_store_t stored;
    t_ok (kvt_client_store (client, "carol", store_tokens, store_count, kv, store_bytes, &stored));
    t_check (stored.stored_blocks == 4 && stored.present_blocks == 0);
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    kvt_client_load_t loaded;
    t_ok (kvt_client_load (client, "carol", store_tokens, store_count, &loaded));
    t_check (loaded.blocks == 4 && memcmp (loaded.kv, kv, store_bytes) == 0);
    kvt_client_load_fini (&loaded);
    //  A STORE with the wrong amount of KV is refused, clearly
    t_check (kvt_client_store (client, "carol", store_tokens, store_count, kv, 100, &stored)
             == -EINVAL);

    //  STORE_TAIL: the conversation grows by 3 blocks; only their KV goes up
    size_t long_count = 7 * hello.block_tokens;
    uint64_t *long_tokens = t_tokens (long_count, hello.vocab, 98);
    memcpy (long_tokens, store_tokens, store_count * sizeof (uint64_t));
    size_t tail_bytes = 3 * hello.block_bytes;
    void *tail = malloc (tail_bytes);
    kvt_client_fill_bytes (tail, tail_bytes, 8);
    t_ok (kvt_client_store_tail (client, "carol", long_tokens, long_count, 4, tail, tail_bytes,
                                 &stored));
    t_check (stored.stored_blocks == 3 && stored.present_blocks == 4);
    t_ok (kvt_client_load (client, "carol", long_tokens, long_count, &loaded));
    t_check (loaded.blocks == 7 && memcmp (loaded.kv, kv, store_bytes) == 0
             && memcmp ((uint8_t *) loaded.kv + store_bytes, tail, tail_bytes) == 0);
    kvt_client_load_fini (&loaded);
    //  A tail whose prefix is not cached, past the prompt, or of the
    //  wrong size is refused, and nothing of it is stored
    t_check (kvt_client_store_tail (client, "dave", long_tokens, long_count, 4, tail,
                                    tail_bytes, &stored) == -ENOENT);
    t_check (kvt_client_store_tail (client, "carol", long_tokens, long_count, 8, tail, 0,
                                    &stored) == -EINVAL);
    t_check (kvt_client_store_tail (client, "carol", long_tokens, long_count, 5, tail,
                                    tail_bytes, &stored) == -EINVAL);
    t_ok (kvt_client_lookup (client, "dave", long_tokens, long_count, &where));
    t_check (where.matched_blocks == 0);
    kvt_client_lookup_fini (&where);
    free (tail);
    free (long_tokens);

    //  Corruption on disk: the block is a miss, recomputed, same output
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    char nvme_dir [1024];
    snprintf (nvme_dir, sizeof (nvme_dir), "%s/nvme", kvt_runtime_run_dir (runtime));
    t_check (s_corrupt_disk (nvme_dir) > 0);
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &again));
    t_check (again.computed > 0);
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);
    kvt_client_stats_t stats;
    t_ok (kvt_client_stats (client, &stats));
    uint64_t failures = 0;
    t_check (kvt_client_stats_find (&stats, "tier_nvme.checksum_failures", &failures));
    t_check (failures > 0);
    kvt_client_stats_fini (&stats);
    //  And the recomputed blocks are byte-identical to the first ones
    t_ok (kvt_client_load (client, "alice", tokens, count, &loaded));
    t_check (loaded.blocks == 10 && memcmp (loaded.kv, gpu_kv.kv, gpu_kv.kv_bytes) == 0);
    kvt_client_load_fini (&loaded);

    free (kv);
    free (store_tokens);
    kvt_client_load_fini (&gpu_kv);
    kvt_client_generate_fini (&first);
    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    printf ("test_request_path: OK\n");
    return T_EXIT_PASS;
}
