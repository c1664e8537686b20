/*  =========================================================================
    test_policy_live - the configured policy decides what a live tier evicts

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Runs the whole runtime in this process with a tiny GPU tier, once with
    migration/policy = lru and once with the test plugin (MRU, built as
    kvt_test_policy_plugin.so; path from KVT_TEST_POLICY_PLUGIN or beside
    this program), and shows through the C client that the plugin, not
    the index's LRU list, chose the victims:
      - DEMOTE of 8 blocks after prompts A then B (8 blocks each): lru
        moves all of A to host, the plugin all of B, also when the
        index holds every policy event back until the decision
        (prefix_index/policy_slice_us = 0);
      - a third prompt C that does not fit: lru makes room from A's head,
        the plugin from B's tail;
      - the plain-path spelling (PATH.so) loads the same plugin;
      - every built-in policy serves a workload whose tiers all evict,
        with the outputs of lru;
      - the same when the victims call applies the waiting events in
        steps before it decides (prefix_index/test_decide_in_steps);
      - a policy that does not exist stops the runtime from starting.
    Exit 0 pass, 1 fail, 77 skip when the plugin was not built.
@end
*/

#include <libgen.h>
#include <limits.h>
#include <unistd.h>
#include "testutil.h"
#include "kvt_policy.h"

#define T_BLOCKS 8                  //  Full blocks per prompt

//  Tiers of prompt 'seed''s cached blocks, as a string ("00001111"; '-'
//  for a block not found).
static void
s_placement (kvt_client_t *client, const kvt_client_hello_t *hello, uint64_t seed,
             char *out)
{
    size_t count = T_BLOCKS * hello->block_tokens + 3;
    uint64_t *tokens = t_tokens (count, hello->vocab, seed);
    kvt_client_lookup_t found;
    t_ok (kvt_client_lookup (client, "", tokens, count, &found));
    for (size_t k = 0; k < T_BLOCKS; k++)
        out [k] = k < found.matched_blocks? (char) ('0' + found.tiers [k]): '-';
    out [T_BLOCKS] = 0;
    kvt_client_lookup_fini (&found);
    free (tokens);
}

static void
s_generate (kvt_client_t *client, const kvt_client_hello_t *hello, uint64_t seed)
{
    size_t count = T_BLOCKS * hello->block_tokens + 3;
    uint64_t *tokens = t_tokens (count, hello->vocab, seed);
    kvt_client_generate_t out;
    t_ok (kvt_client_generate (client, "", tokens, count, 1, &out));
    t_check (out.token_count == 1);
    kvt_client_generate_fini (&out);
    free (tokens);
}

//  A runtime under 'overrides' that has run prompts A (seed 1) and B (seed 2)
typedef struct {
    kvt_config_t *config;
    kvt_runtime_t *runtime;
    kvt_client_t *client;
    kvt_client_hello_t hello;
} s_live_t;

static void
s_live_start (s_live_t *live, const char **overrides)
{
    live->config = t_config (overrides);
    live->runtime = t_start_runtime (live->config);
    live->client = kvt_client_new (kvt_runtime_ipc_endpoint (live->runtime), 30000);
    t_ok (kvt_client_hello (live->client, "test_policy_live", &live->hello));
    s_generate (live->client, &live->hello, 1);
    s_generate (live->client, &live->hello, 2);
}

static void
s_live_end (s_live_t *live)
{
    kvt_client_destroy (&live->client);
    kvt_runtime_destroy (&live->runtime);
    kvt_config_destroy (&live->config);
}

//  prefix_index.policy_log_overflows, policy_decision_slices and
//  policy_decisions_stepped of the last s_scenario
static uint64_t s_log_overflows, s_decision_slices, s_decisions_stepped;

//  Run prompts A (seed 1) and B (seed 2) on a GPU tier of 'gpu_blocks'
//  under 'policy' (and up to 3 config options 'extra', NULL-terminated,
//  or NULL); then DEMOTE 8 blocks (demote true) or run prompt C (seed 3).
//  Fills the placements of A and B; returns the value of
//  prefix_index.policy_fallbacks.
static uint64_t
s_scenario (const char *policy, int gpu_blocks, bool demote, const char *const *extra,
            char *a, char *b)
{
    char policy_option [PATH_MAX + 64];
    char gpu_option [64];
    snprintf (policy_option, sizeof (policy_option), "migration/policy=%s", policy);
    snprintf (gpu_option, sizeof (gpu_option), "tier_gpu/capacity_blocks=%d", gpu_blocks);
    const char *overrides [8] = {
        policy_option, gpu_option, "migration/high_watermark=100", NULL
    };
    for (int k = 0; extra && extra [k]; k++) {
        assert (k < 3);
        overrides [3 + k] = extra [k];
    }
    s_live_t live;
    s_live_start (&live, overrides);
    kvt_client_t *client = live.client;
    kvt_client_hello_t hello = live.hello;
    s_placement (client, &hello, 1, a);
    s_placement (client, &hello, 2, b);
    t_check (streq (a, "00000000") && streq (b, "00000000"));
    if (demote) {
        uint64_t moved = 0;
        t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, T_BLOCKS, &moved));
        t_check (moved == T_BLOCKS);
    }
    else {
        s_generate (client, &hello, 3);
        char c [T_BLOCKS + 1];
        s_placement (client, &hello, 3, c);
        t_check (streq (c, "00000000"));
    }
    s_placement (client, &hello, 1, a);
    s_placement (client, &hello, 2, b);
    t_check (t_stat (client, "prefix_index.policy_decisions") > 0);
    uint64_t fallbacks = t_stat (client, "prefix_index.policy_fallbacks");
    s_log_overflows = t_stat (client, "prefix_index.policy_log_overflows");
    s_decision_slices = t_stat (client, "prefix_index.policy_decision_slices");
    s_decisions_stepped = t_stat (client, "prefix_index.policy_decisions_stepped");
    printf ("test_policy_live: %-8s gpu %2d %-7s A %s B %s fallbacks %" PRIu64 "\n",
            strncmp (policy, "plugin:", 7) == 0? "plugin": policy[0] == '/'? "path.so": policy,
            gpu_blocks, demote? "demote": "fill", a, b, fallbacks);
    s_live_end (&live);
    return fallbacks;
}

//  The host tier's order comes from migration/lower_policy ('lower'):
//  under the plugin (MRU) on the GPU, prompts A and B go down to the
//  host whole, then 8 blocks on to NVMe. Fills their placements.
static void
s_lower_scenario (const char *plugin, const char *lower, char *a, char *b)
{
    char policy_option [PATH_MAX + 64], lower_option [PATH_MAX + 64];
    snprintf (policy_option, sizeof (policy_option), "migration/policy=%s", plugin);
    snprintf (lower_option, sizeof (lower_option), "migration/lower_policy=%s", lower);
    const char *overrides [] = {
        policy_option, lower_option, "tier_gpu/capacity_blocks=32",
        "migration/high_watermark=100", NULL
    };
    s_live_t live;
    s_live_start (&live, overrides);
    kvt_client_t *client = live.client;
    uint64_t moved = 0;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 2 * T_BLOCKS, &moved));
    t_check (moved == 2 * T_BLOCKS);
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, T_BLOCKS, &moved));
    t_check (moved == T_BLOCKS);
    s_placement (client, &live.hello, 1, a);
    s_placement (client, &live.hello, 2, b);
    printf ("test_policy_live: plugin, lower_policy '%s': A %s B %s\n", lower, a, b);
    s_live_end (&live);
}

//  Under 'policy', run 24 prompts of 4 conversations (28 blocks) over
//  tiers of 10 + 6 + 6 blocks, so that every tier evicts (GPU, host and
//  NVMe), with watermark upkeep on. A policy with catch_up ('catches_up')
//  is called it after each request's begin and after its end, at least
//  once each; one without never. Returns a digest of the outputs, which
//  no placement may change.
static uint64_t
s_workload (const char *policy, bool catches_up)
{
    char policy_option [PATH_MAX + 64];
    snprintf (policy_option, sizeof (policy_option), "migration/policy=%s", policy);
    const char *overrides [] = {
        policy_option, "tier_gpu/capacity_blocks=10", "tier_host/capacity_blocks=6",
        "tier_nvme/capacity_blocks=6", "migration/lower_policy=", NULL   //  Every tier
    };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_policy_live", &hello));
    uint64_t digest = 0, cached = 0;
    for (int k = 0; k < 24; k++) {
        //  Four conversations: each turn repeats its head and grows
        size_t count = (size_t) (2 + k / 4) * hello.block_tokens + (size_t) k % 3;
        uint64_t *tokens = t_tokens (count, hello.vocab, (uint64_t) (k % 4) + 100);
        kvt_client_generate_t out;
        t_ok (kvt_client_generate (client, "", tokens, count, 2, &out));
        for (size_t j = 0; j < out.token_count; j++)
            digest = digest * 31 + out.tokens [j];
        cached += out.from_gpu + out.from_host + out.from_nvme;
        kvt_client_generate_fini (&out);
        free (tokens);
    }
    uint64_t decisions = t_stat (client, "prefix_index.policy_decisions");
    uint64_t fallbacks = t_stat (client, "prefix_index.policy_fallback_blocks");
    uint64_t unusable = t_stat (client, "prefix_index.policy_unusable");
    uint64_t removed = t_stat (client, "prefix_index.removed");
    uint64_t steps = t_stat (client, "prefix_index.policy_catch_up_steps");
    printf ("test_policy_live: %-16s cached %3" PRIu64 " decisions %3" PRIu64
            " fallback blocks %3" PRIu64 " unusable %" PRIu64 " dropped %3" PRIu64
            " catch-up steps %3" PRIu64 "\n",
            policy, cached, decisions, fallbacks, unusable, removed, steps);
    t_check (decisions > 0);
    t_check (cached > 0);
    t_check (removed > 0);          //  The NVMe tier evicted too
    t_check (catches_up? steps >= 2 * 24: steps == 0);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    return digest;
}

int
main (int argc, char *argv [])
{
    (void) argc;
    char path [PATH_MAX + 16];
    const char *env = getenv ("KVT_TEST_POLICY_PLUGIN");
    if (env)
        snprintf (path, sizeof (path), "%s", env);
    else {
        char self [PATH_MAX];
        ssize_t length = readlink ("/proc/self/exe", self, sizeof (self) - 1);
        if (length <= 0)
            snprintf (self, sizeof (self), "%s", argv [0]);
        else
            self [length] = 0;
        snprintf (path, sizeof (path), "%s/kvt_test_policy_plugin.so", dirname (self));
    }
    if (access (path, R_OK)) {
        fprintf (stderr, "test_policy_live: %s not built, skipping\n", path);
        return T_EXIT_SKIP;
    }
    char plugin [PATH_MAX + 32];
    snprintf (plugin, sizeof (plugin), "plugin:%s", path);
    char a [T_BLOCKS + 1], b [T_BLOCKS + 1];

    //  DEMOTE: LRU takes the older prompt, the plugin (MRU) the newer
    t_check (s_scenario ("lru", 32, true, NULL, a, b) == 0);
    t_check (streq (a, "11111111") && streq (b, "00000000"));
    t_check (s_scenario (plugin, 32, true, NULL, a, b) == 0);
    t_check (streq (a, "00000000") && streq (b, "11111111"));

    //  The same when the policy's events all wait in the index's log until
    //  the decision (prefix_index/policy_slice_us = 0): the decision
    //  applies them first, so the plugin still hears of B before it picks
    const char *held [] = { "prefix_index/policy_slice_us=0", NULL };
    t_check (s_scenario (plugin, 32, true, held, a, b) == 0);
    t_check (streq (a, "00000000") && streq (b, "11111111"));

    //  The same with a log of 3-event chunks that catches up past 4 calls
    //  waiting: each new event makes the oldest first, in order, across
    //  chunks, and the plugin still hears every event before it picks
    const char *small_log [] = { "prefix_index/policy_slice_us=0",
        "prefix_index/test_log_chunk_events=3", "prefix_index/test_log_max_calls=4", NULL };
    t_check (s_scenario (plugin, 32, true, small_log, a, b) == 0);
    t_check (streq (a, "00000000") && streq (b, "11111111"));
    t_check (s_log_overflows > 0);
    t_check (s_scenario ("lru", 32, true, small_log, a, b) == 0);
    t_check (streq (a, "11111111") && streq (b, "00000000"));

    //  The same when the victims call finds events waiting and applies
    //  them a slice a turn before it decides (kvt_actor_continue), as it
    //  does past 512 waiting calls: here every event waits for it, in
    //  slices of 1 us (one step each)
    const char *stepped [] = { "prefix_index/test_decide_in_steps=1",
                               "prefix_index/policy_slice_us=1", NULL };
    t_check (s_scenario (plugin, 32, true, stepped, a, b) == 0);
    t_check (streq (a, "00000000") && streq (b, "11111111"));
    t_check (s_decision_slices > 1 && s_decisions_stepped > 0);
    t_check (s_scenario ("lru", 32, true, stepped, a, b) == 0);
    t_check (streq (a, "11111111") && streq (b, "00000000"));

    //  The same through a plain path ending in .so
    t_check (s_scenario (path, 32, true, NULL, a, b) == 0);
    t_check (streq (a, "00000000") && streq (b, "11111111"));

    //  A full tier: room for C comes from A's head under LRU, from B's
    //  tail under the plugin; the other prompt stays whole on the GPU
    t_check (s_scenario ("lru", 20, false, NULL, a, b) == 0);
    t_check (a [0] == '1' && streq (b, "00000000"));
    t_check (s_scenario (plugin, 20, false, NULL, a, b) == 0);
    t_check (streq (a, "00000000") && b [T_BLOCKS - 1] == '1');

    //  Every built-in (and the plugin) serves a live server whose tiers all
    //  evict, and the outputs never depend on the policy
    uint64_t digest = s_workload ("lru", false);
    for (size_t index = 1; index < kvt_policy_builtin_count (); index++) {
        const kvt_policy_ops_t *ops = kvt_policy_builtin (index);
        t_check (s_workload (ops->name, ops->catch_up != NULL) == digest);
    }
    t_check (s_workload (plugin, false) == digest);

    //  The host tier follows migration/lower_policy: the plugin (MRU) on
    //  the GPU sends B down first, then A; lru (the default) on the host
    //  sends on to NVMe the blocks that came down first (B), the plugin
    //  on every tier ("") the ones that came down last (A)
    s_lower_scenario (plugin, "lru", a, b);
    char a_own [T_BLOCKS + 1], b_own [T_BLOCKS + 1];
    s_lower_scenario (plugin, "", a_own, b_own);
    t_check (streq (a, "11111111") && streq (b, "22222222"));
    t_check (streq (a_own, "22222222") && streq (b_own, "11111111"));

    //  A policy that does not exist stops the runtime at START, on any
    //  tier, and so does a remote one for the lower tiers alone
    const char *bads [] = { "migration/policy=no-such-policy",
                            "migration/lower_policy=no-such-policy",
                            "migration/lower_policy=remote:ipc:///tmp/kvt-no-such-policy" };
    for (size_t k = 0; k < sizeof (bads) / sizeof (bads [0]); k++) {
        const char *bad [] = { bads [k], NULL };
        kvt_config_t *config = t_config (bad);
        kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
        t_check (kvt_runtime_start (runtime) != 0);
        kvt_runtime_destroy (&runtime);
        kvt_config_destroy (&config);
    }

    printf ("test_policy_live: OK\n");
    return T_EXIT_PASS;
}
