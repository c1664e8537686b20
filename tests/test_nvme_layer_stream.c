/*  =========================================================================
    test_nvme_layer_stream - a prefix on NVMe streams into compute by layer group

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Issue #4 on the CPU model (4 layers of 16 KiB per block, so 4 layer
    groups of one layer each); `test_nvme_layer_stream cuda` runs the same
    on the GPU model (skips without a GPU), where the run starts at once
    and each layer's copy waits on the GPU for its gate word
    (compute.gate_waits instead of runs_held). A GENERATE's prefix is demoted to NVMe and
    asked again, with migration/nvme_layer_groups = 4 and the groups past
    the first held back 200 ms (migration/test_group_delay_ms), so the
    order is observable without sleeps in the test:
    - tier_nvme reads group-major (group_reads = blocks x 4, no inversion),
      migration answers the scheduler after group 0 (stream_early_replies),
      and COMP_RUN reaches compute before the last group is read
      (compute.runs_gated, runs_held: the CPU model holds it until every
      layer is there), then MIG_LAYERS_READY arrives (layers_ready_msgs);
    - output tokens and the KV read back are byte-identical to a cache-off
      run and to a run with nvme_layer_groups = 1;
    - a byte flipped on disk in the LAST group of one block: the block is
      refused late (migration.stream_late_misses, tier_nvme.checksum_failures),
      compute fails the run (runs_aborted), the scheduler recomputes it
      (stream_runs_recomputed) and the answer and the KV cached afterwards
      are still right; one flipped in group 0 is a plain miss (the prefix
      cut there) and the staging slots given back past the cut wait for
      their later groups' reads (stream_staging_deferred);
    - blocks written by a store without groups (version 1 headers, written
      with nvme_layer_groups = 1 into a kept directory) read back after a
      restart with groups (tier_nvme.group_fallbacks) with the same output.
@end
*/

#include "testutil.h"
#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#endif

#define S_BLOCKS   8                //  Full blocks of the prompt
#define S_NEW      5                //  Tokens generated
#define S_GROUPS   4                //  Layer groups (one per layer here)
#define S_LAYER_BYTES 16384         //  2 x 2 kv_heads x 16 tokens x 128 x bf16

typedef struct {
    kvt_client_generate_t first;    //  Computed
    kvt_client_generate_t again;    //  Prefix from NVMe
    kvt_client_load_t kv;           //  KV read back after 'again'
} s_out_t;

static bool s_cuda;                 //  Run on the GPU model

static const char *const s_model [] = {
    "model/layers=4", "model/heads=4", "model/kv_heads=2",
    "model/head_dim=128", "model/hidden=512", "model/intermediate=512", "model/vocab=256",
    "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
    "tier_nvme/capacity_blocks=256", "migration/stream_promotion=1",
    "migration/nvme_group_min_kib=16" };   //  16 KiB groups: one layer each
#define S_MODEL_KEYS (sizeof (s_model) / sizeof (s_model [0]))

//  A config: the model above, then 'extra' (NULL-terminated)
static kvt_config_t *
s_config (const char *const *extra)
{
    const char *all [S_MODEL_KEYS + 8];
    size_t n = 0;
    all [n++] = s_cuda? "compute/device=cuda": "compute/device=cpu";
    for (size_t k = 0; k < S_MODEL_KEYS; k++)
        all [n++] = s_model [k];
    for (size_t k = 0; extra && extra [k]; k++)
        all [n++] = extra [k];
    all [n] = NULL;
    return t_config (all);
}

//  Generate; demote everything to NVMe (flip a byte of block 'flip_block'
//  at 'flip_offset' of its payload if asked); generate again; LOAD.
static void
s_scenario (kvt_client_t *client, kvt_runtime_t *runtime, s_out_t *out, int flip_block,
            size_t flip_offset)
{
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_nvme_layer_stream", &hello));
    t_check (hello.block_bytes == S_GROUPS * S_LAYER_BYTES);
    const size_t count = S_BLOCKS * hello.block_tokens + 3;
    uint64_t *tokens = t_tokens (count, hello.vocab, 11);
    t_ok (kvt_client_generate (client, "t", tokens, count, S_NEW, &out->first));
    kvt_client_load_t before;
    t_ok (kvt_client_load (client, "t", tokens, count, &before));
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    if (flip_block >= 0 && before.blocks == S_BLOCKS)
        t_check (t_flip_on_disk (runtime, before.kv + (size_t) flip_block * hello.block_bytes
                                                    + flip_offset));
    t_ok (kvt_client_generate (client, "t", tokens, count, S_NEW, &out->again));
    t_ok (kvt_client_load (client, "t", tokens, count, &out->kv));
    if (before.blocks == S_BLOCKS) {
        //  What is cached afterwards is what was computed
        t_check (out->kv.blocks == S_BLOCKS);
        t_check (memcmp (out->kv.kv, before.kv, before.kv_bytes) == 0);
    }
    kvt_client_load_fini (&before);
    free (tokens);
}

static void
s_out_fini (s_out_t *out)
{
    kvt_client_generate_fini (&out->first);
    kvt_client_generate_fini (&out->again);
    kvt_client_load_fini (&out->kv);
}

//  Same tokens
static void
s_same (const s_out_t *a, const s_out_t *b)
{
    t_check (a->first.token_count == S_NEW && b->first.token_count == S_NEW);
    t_check (a->again.token_count == S_NEW && b->again.token_count == S_NEW);
    t_check (memcmp (a->first.tokens, b->first.tokens, S_NEW * sizeof (uint64_t)) == 0);
    t_check (memcmp (a->again.tokens, b->again.tokens, S_NEW * sizeof (uint64_t)) == 0);
    t_check (memcmp (a->first.tokens, a->again.tokens, S_NEW * sizeof (uint64_t)) == 0);
}

//  Start a runtime with 'extra' keys, run the scenario, check the counters
//  in 'check' (may be NULL), stop.
typedef void (s_check_fn) (kvt_client_t *client, const s_out_t *out);

static void
s_run (const char *const *extra, s_out_t *out, int flip_block, size_t flip_offset,
       uint64_t run_errors, s_check_fn *check)
{
    t_session_t session;
    t_session_start (&session, s_config (extra), "test_nvme_layer_stream", 30000);
    kvt_client_t *client = session.client;
    kvt_runtime_t *runtime = session.runtime;
    s_scenario (client, runtime, out, flip_block, flip_offset);
    t_check (t_stat (client, "compute.run_errors") == run_errors);
    t_check (t_stat (client, "scheduler.errors") == 0);
    if (check)
        check (client, out);
    t_session_end (&session);
}

//  Wait (up to a second) until counter 'key' reads 'want'
static void
s_stat_is (kvt_client_t *client, const char *key, uint64_t want)
{
    uint64_t value = 0;
    for (int tries = 0; tries < 100 && (value = t_stat (client, key)) != want; tries++)
        zclock_sleep (10);
    if (value != want)
        fprintf (stderr, "%s is %" PRIu64 ", expected %" PRIu64 "\n", key, value, want);
    t_check (value == want);
}

static void
s_check_groups (kvt_client_t *client, const s_out_t *out)
{
    t_check (out->again.from_nvme == S_BLOCKS);
    //  Group-major: every block's group 0, then group 1, ...
    t_check (t_stat (client, "tier_nvme.group_reads") == S_BLOCKS * S_GROUPS);
    t_check (t_stat (client, "tier_nvme.group_order_inversions") == 0);
    t_check (t_stat (client, "migration.stream_layer_group_jobs") == 1);
    t_check (t_stat (client, "migration.layer_group_reads") == S_BLOCKS * S_GROUPS);
    //  Answered after group 0, the others still held back
    t_check (t_stat (client, "migration.stream_early_replies") == 1);
    //  COMP_RUN reached compute before the last group was read; the CPU
    //  model held it until all were, the GPU model started it at once with
    //  a gate (or held it too, on a driver without stream wait-value)
    t_check (t_stat (client, "compute.runs_gated") == 1);
    t_check (t_stat (client, "compute.runs_held") + t_stat (client, "compute.gate_waits") == 1);
    if (!s_cuda)
        t_check (t_stat (client, "compute.runs_held") == 1);
    else
        printf ("test_nvme_layer_stream: GPU: %s\n", t_stat (client, "compute.gate_waits")
                ? "the run started at once, its copies gated on the GPU"
                : "no stream wait-value: the run waited for all its layers");
    t_check (t_stat (client, "compute.layers_ready_msgs") >= 1);
    t_check (t_stat (client, "migration.layers_ready_sent") >= 1);
    t_check (t_stat (client, "compute.streamed_blocks") == S_BLOCKS);
    t_check (t_stat (client, "migration.promote_misses") == 0);
    s_stat_is (client, "tier_host.used_blocks", 0);     //  Staging all given back
    printf ("test_nvme_layer_stream: %d blocks read in %d layer groups group-major; "
            "compute had the run before the last group: OK\n", S_BLOCKS, S_GROUPS);
}

static void
s_check_whole (kvt_client_t *client, const s_out_t *out)
{
    t_check (out->again.from_nvme == S_BLOCKS);
    t_check (t_stat (client, "tier_nvme.group_reads") == 0);
    t_check (t_stat (client, "migration.stream_layer_group_jobs") == 0);
    t_check (t_stat (client, "compute.runs_gated") == 0);
    t_check (t_stat (client, "compute.streamed_blocks") == S_BLOCKS);
}

static void
s_check_flip (kvt_client_t *client, const s_out_t *out)
{
    //  Recomputed whole after the late miss
    t_check (out->again.computed == S_BLOCKS);
    t_check (t_stat (client, "tier_nvme.checksum_failures") == 1);
    t_check (t_stat (client, "migration.stream_late_misses") == 1);
    t_check (t_stat (client, "migration.layers_ready_failed") == 1);
    t_check (t_stat (client, "compute.runs_aborted") == 1);
    t_check (t_stat (client, "scheduler.stream_runs_recomputed") == 1);
    t_check (t_stat (client, "migration.stream_promotions_undone") == 1);
    s_stat_is (client, "tier_host.used_blocks", 0);
    printf ("test_nvme_layer_stream: a byte flipped in the last layer group: late miss, "
            "run recomputed, same tokens and KV: OK\n");
}

static void
s_check_early (kvt_client_t *client, const s_out_t *out)
{
    //  Block 5 failed group 0: a miss in the answer, the prefix cut there
    t_check (out->again.from_nvme == 5 && out->again.computed == S_BLOCKS - 5);
    t_check (t_stat (client, "migration.promote_misses") == 1);
    t_check (t_stat (client, "migration.stream_late_misses") == 0);
    t_check (t_stat (client, "scheduler.prefix_cut_by_misses") == 1);
    t_check (t_stat (client, "compute.runs_aborted") == 0);
    //  Blocks 6 and 7 were given back past the cut while their later
    //  groups were still being read: their staging slots waited for that
    t_check (t_stat (client, "migration.stream_staging_deferred") == 2);
    //  And every staging slot came back in the end
    s_stat_is (client, "tier_host.used_blocks", 0);
    printf ("test_nvme_layer_stream: a byte flipped in layer group 0: a miss, the prefix "
            "cut there, staging given back once its reads ended: OK\n");
}

static void
s_check_stalled (kvt_client_t *client, const s_out_t *out)
{
    //  Groups past the first held back longer than compute waits: the run
    //  fails on the watchdog and is recomputed whole
    t_check (out->again.computed == S_BLOCKS);
    t_check (t_stat (client, "compute.layer_waits_timed_out") == 1);
    t_check (t_stat (client, "scheduler.stream_runs_recomputed") == 1);
    t_check (t_stat (client, "migration.stream_promotions_undone") == 1);
    printf ("test_nvme_layer_stream: later layer groups stalled past compute/layers_wait_ms: "
            "the run failed on the watchdog, was recomputed, same tokens and KV: OK\n");
}

static void
s_check_v1 (kvt_client_t *client, const s_out_t *out)
{
    (void) out;
    t_check (t_stat (client, "tier_nvme.group_fallbacks") == S_BLOCKS * S_GROUPS);
    t_check (t_stat (client, "tier_nvme.checksum_failures") == 0);
}

//  A gated run that needs a longer block table than any run before it
//  (its prefix on disk plus S_LONGER_BLOCKS new blocks): the GPU model
//  grows its table while later layer groups are still held back. A grow
//  that waited for the GPU would wait on copies behind a gate only
//  compute's loop can open. Its new tokens are three prefill chunks, so on
//  the GPU they run layer-major behind the gates (compute/layer_major =
//  gated). Tokens as with caching off ('caching').
#define S_LONGER_BLOCKS 72

static void
s_longer_than_before (const char *caching, uint64_t *tokens_out)
{
    const char *const extra [] = { "migration/nvme_layer_groups=4",
                                   "migration/test_group_delay_ms=200",
                                   "tier_gpu/capacity_blocks=128", caching, NULL };
    t_session_t session;
    t_session_start (&session, s_config (extra), "test_nvme_layer_stream", 30000);
    kvt_client_t *client = session.client;
    const kvt_client_hello_t hello = session.hello;
    const size_t prefix = S_BLOCKS * hello.block_tokens;
    const size_t count = prefix + S_LONGER_BLOCKS * hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, hello.vocab, 13);
    kvt_client_generate_t first, longer;
    t_ok (kvt_client_generate (client, "t", tokens, prefix, S_NEW, &first));
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_ok (kvt_client_generate (client, "t", tokens, count, S_NEW, &longer));
    t_check (longer.token_count == S_NEW);
    memcpy (tokens_out, longer.tokens, S_NEW * sizeof (uint64_t));
    if (streq (caching, "scheduler/caching=1")) {
        t_check (longer.from_nvme == S_BLOCKS);
        t_check (t_stat (client, "migration.layers_ready_sent") >= 1);
    }
    kvt_client_generate_fini (&first);
    kvt_client_generate_fini (&longer);
    free (tokens);
    t_session_end (&session);
}

int
main (int argc, char **argv)
{
    static s_out_t reference, grouped, whole, flipped, early, stall, restarted;
    s_cuda = argc > 1 && streq (argv [1], "cuda");
    if (s_cuda) {
#ifdef KVT_WITH_CUDA
        int devices = 0;
        if (cudaGetDeviceCount (&devices) != cudaSuccess || devices == 0) {
            printf ("test_nvme_layer_stream: no GPU, skipped\n");
            return T_EXIT_SKIP;
        }
#else
        printf ("test_nvme_layer_stream: not a CUDA build, skipped\n");
        return T_EXIT_SKIP;
#endif
    }
    //  Cache off: everything computed
    const char *const off [] = { "scheduler/caching=0", NULL };
    s_run (off, &reference, -1, 0, 0, NULL);
    t_check (reference.again.computed == S_BLOCKS + 0);

    const char *const groups [] = { "migration/nvme_layer_groups=4",
                                    "migration/test_group_delay_ms=200", NULL };
    s_run (groups, &grouped, -1, 0, 0, s_check_groups);
    s_same (&grouped, &reference);

    const char *const one [] = { "migration/nvme_layer_groups=1", NULL };
    s_run (one, &whole, -1, 0, 0, s_check_whole);
    s_same (&whole, &reference);
    t_check (whole.kv.kv_bytes == grouped.kv.kv_bytes);
    t_check (memcmp (whole.kv.kv, grouped.kv.kv, whole.kv.kv_bytes) == 0);
    printf ("test_nvme_layer_stream: same tokens and KV as cache off and as whole blocks: OK\n");

    //  Block 5's last layer group (layer 3) flipped on disk
    s_run (groups, &flipped, 5, 3 * S_LAYER_BYTES, 1, s_check_flip);
    s_same (&flipped, &reference);
    //  Block 5's first layer group flipped
    s_run (groups, &early, 5, 0, 0, s_check_early);
    s_same (&early, &reference);
    //  The later groups stall (a migration that died mid-stream)
    const char *const stalled [] = { "migration/nvme_layer_groups=4",
                                     "migration/test_group_delay_ms=2000",
                                     "compute/layers_wait_ms=200", NULL };
    s_run (stalled, &stall, -1, 0, 1, s_check_stalled);
    s_same (&stall, &reference);

    //  Version 1 blocks: written without groups into a kept directory, read
    //  with groups after a restart
    char dir [] = "/var/tmp/kvt-layer-stream-XXXXXX";
    t_check (mkdtemp (dir));
    char option [128];
    snprintf (option, sizeof (option), "tier_nvme/dir=%s", dir);
    const char *const write_v1 [] = { "migration/nvme_layer_groups=1", option, NULL };
    {
        t_session_t session;
        t_session_start (&session, s_config (write_v1), "test_nvme_layer_stream", 30000);
        kvt_client_t *client = session.client;
        const kvt_client_hello_t hello = session.hello;
        const size_t count = S_BLOCKS * hello.block_tokens + 3;
        uint64_t *tokens = t_tokens (count, hello.vocab, 11);
        kvt_client_generate_t result;
        t_ok (kvt_client_generate (client, "t", tokens, count, S_NEW, &result));
        uint64_t moved;
        t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
        t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
        t_check (moved == S_BLOCKS);
        kvt_client_generate_fini (&result);
        free (tokens);
        t_session_end (&session);
    }
    const char *const read_v2 [] = { "migration/nvme_layer_groups=4", option, NULL };
    {
        t_session_t session;
        t_session_start (&session, s_config (read_v2), "test_nvme_layer_stream", 30000);
        kvt_client_t *client = session.client;
        const kvt_client_hello_t hello = session.hello;
        const size_t count = S_BLOCKS * hello.block_tokens + 3;
        uint64_t *tokens = t_tokens (count, hello.vocab, 11);
        t_ok (kvt_client_generate (client, "t", tokens, count, S_NEW, &restarted.again));
        t_check (restarted.again.from_nvme == S_BLOCKS);
        t_check (memcmp (restarted.again.tokens, reference.again.tokens,
                         S_NEW * sizeof (uint64_t)) == 0);
        s_check_v1 (client, &restarted);
        free (tokens);
        t_session_end (&session);
    }
    char command [sizeof (dir) + 16];
    snprintf (command, sizeof (command), "rm -rf '%s'", dir);
    t_check (system (command) == 0);
    printf ("test_nvme_layer_stream: version 1 blocks read whole by group reads after a "
            "restart, same tokens: OK\n");

    uint64_t longer_off [S_NEW], longer_on [S_NEW];
    s_longer_than_before ("scheduler/caching=0", longer_off);
    s_longer_than_before ("scheduler/caching=1", longer_on);
    t_check (memcmp (longer_off, longer_on, sizeof (longer_on)) == 0);
    printf ("test_nvme_layer_stream: a streamed run longer than any before (its block "
            "table grows while groups are held back): same tokens as cache off: OK\n");

    s_out_fini (&reference);
    s_out_fini (&grouped);
    s_out_fini (&whole);
    s_out_fini (&flipped);
    s_out_fini (&early);
    s_out_fini (&stall);
    s_out_fini (&restarted);
    return T_EXIT_PASS;
}
