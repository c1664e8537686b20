/*  =========================================================================
    kvt_cmd_demo - `kvtier demo`: the bundled trace, with and without cache

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <czmq.h>
#include "kvt_cmd.h"
#include "kvt_cmd_options.h"
#include "kvt_replay.h"
#include "kvt_trace.h"
#include "kvt_actors.h"

//  On a machine with a GPU (and compute/device = auto) the demo runs the GPU
//  path. The embedded default model is a CPU-sized shape the GPU kernels do
//  not run (head_dim 16), so a GPU shape replaces it there. A small model
//  shows nothing on a GPU: a 16-token block of it computes in ~0.05 ms, less
//  than the caching path's own actor hops (caching lost: TTFT p50 1.79 vs
//  1.12 ms on an H100). So a card that holds it runs configs/gpu-h100.cfg
//  (the Llama-3-8B shape, fetch-or-recompute, disk admission) with GPU and
//  host tiers of 16 GiB, which keep most of the slice's 21K blocks. Longer
//  prompts (demo/tokens_per_hash 64) were tried and lose: the slice's
//  blocks then outgrow the tiers (4% hits, 159 GB demoted). A smaller card,
//  or a build without its source tree, gets a small shape.
static const char *s_gpu_demo_8b_tiers =
    "tier_gpu\n    capacity_blocks = 8192\n"
    "tier_host\n    capacity_blocks = 8192\n";
static const char *s_gpu_demo_small =
    "model\n    layers = 4\n    heads = 16\n    kv_heads = 4\n    head_dim = 128\n"
    "    hidden = 2048\n    intermediate = 5632\n    vocab = 32000\n";
#define S_GPU_DEMO_8B_BYTES (48ull << 30)  //  8B weights 16 GB + tier 16 GiB + scratch

//  Put the GPU demo's shape into 'config'; says which on stdout.
static void
s_gpu_demo_config (kvt_config_t *config)
{
    char path [1024], error [256];
    snprintf (path, sizeof (path), "%s/configs/gpu-h100.cfg", KVT_SOURCE_DIR);
    if (kvt_runtime_gpu_memory () >= S_GPU_DEMO_8B_BYTES
    &&  kvt_config_load (config, path, error, sizeof (error)) == 0) {
        int rc = kvt_config_load_text (config, s_gpu_demo_8b_tiers, error, sizeof (error));
        assert (rc == 0);           //  Our own text, keys of the default
        printf ("kvtier demo: GPU found, running the GPU path (%s with 16 GiB GPU and host "
                "tiers: the Llama-3-8B shape)\n", path);
        return;
    }
    int rc = kvt_config_load_text (config, s_gpu_demo_small, error, sizeof (error));
    assert (rc == 0);
    printf ("kvtier demo: GPU found, running the GPU path (model: 4 layers, 16/4 heads, "
            "head_dim 128, hidden 2048)\n");
}

static const char *s_help =
    "usage: kvtier demo [--config FILE] [-o PATH=VALUE]...\n"
    "Start the runtime in this process (on the embedded default config unless\n"
    "told otherwise), replay the bundled slice of the Mooncake conversation trace\n"
    "(tools/demo/trace_slice.jsonl, or demo/trace), then replay it again with\n"
    "caching off, and print both reports side by side.\n"
    KVT_CMD_CONFIG_HELP;

//  One replay on a fresh runtime. Returns 0 or a negative code.
static int
s_run (const kvt_config_t *base, bool caching, const kvt_trace_t *trace,
       kvt_replay_result_t *result)
{
    kvt_config_t *config = kvt_config_dup (base);
    char error [256];
    kvt_config_set (config, "scheduler/caching", caching? "1": "0", error, sizeof (error));
    //  The demo's front door is its private ipc:// endpoint only, so it
    //  runs beside a server that holds the default tcp port
    kvt_config_set (config, "scheduler/endpoint", "", error, sizeof (error));
    kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
    int rc = kvt_runtime_start (runtime);
    if (rc == 0) {
        kvt_replay_options_t options = {
            (size_t) kvt_config_int (config, "demo/requests"),
            (int) kvt_config_int (config, "demo/tokens_per_hash"),
            (int) kvt_config_int (config, "demo/max_new_tokens"), true };
        printf ("replaying %zu requests, caching %s\n",
                options.max_requests? options.max_requests: kvt_trace_size (trace),
                caching? "on": "off");
        fflush (stdout);
        rc = kvt_replay_run (kvt_runtime_ipc_endpoint (runtime), trace, &options, result);
        if (kvt_runtime_poll (runtime) || kvt_runtime_deaths (runtime))
            rc = -ECHILD;           //  An actor process died under us
    }
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    return rc;
}

int
kvt_cmd_demo (int argc, char **argv)
{
    for (int k = 1; k < argc; k++)
        if (streq (argv [k], "--help") || streq (argv [k], "-h")) {
            fputs (s_help, stdout);
            return 0;
        }
    kvt_config_t *config = kvt_cmd_config_from_args (&argc, argv);
    if (!config)
        return 2;
    kvt_cmd_apply_log_level (config);
    if (kvt_runtime_gpu_count () > 0 && streq (kvt_config_str (config, "compute/device"), "auto")
    &&  kvt_config_int (config, "model/head_dim") != 128)
        s_gpu_demo_config (config);
    char path [1024];
    const char *trace_path = kvt_config_str (config, "demo/trace");
    if (!*trace_path) {
        snprintf (path, sizeof (path), "%s/tools/demo/trace_slice.jsonl", KVT_SOURCE_DIR);
        trace_path = path;
    }
    char *error = NULL;
    kvt_trace_t *trace = kvt_trace_load (trace_path, &error);
    if (!trace) {
        fprintf (stderr, "kvtier demo: %s\n", error? error: "cannot load the trace");
        free (error);
        kvt_config_destroy (&config);
        return 1;
    }
    printf ("kvtier demo: %s\n", trace_path);
    kvt_replay_result_t cached, uncached;
    int rc = s_run (config, true, trace, &cached);
    if (rc == 0)
        rc = s_run (config, false, trace, &uncached);
    if (rc == 0) {
        kvt_replay_print_report ("cache on", &cached, "cache off", &uncached);
        bool same = cached.output_digest == uncached.output_digest;
        printf ("\n  outputs identical with and without the cache: %s\n", same? "yes": "NO");
        if (cached.from_tier [0] + cached.from_tier [1] + cached.from_tier [2] > 0
        &&  uncached.wall_s > 0)
            printf ("  prefill avoided: %.1f%% of blocks; TTFT p50 %.2f ms vs %.2f ms, "
                    "mean %.2f ms vs %.2f ms\n",
                    100.0 * (double) (cached.from_tier [0] + cached.from_tier [1]
                                    + cached.from_tier [2])
                          / (double) (uncached.computed? uncached.computed: 1),
                    (double) kvt_replay_ttft_percentile (&cached, 50) / 1e3,
                    (double) kvt_replay_ttft_percentile (&uncached, 50) / 1e3,
                    kvt_replay_ttft_mean (&cached) / 1e3, kvt_replay_ttft_mean (&uncached) / 1e3);
        if (!same || cached.errors || uncached.errors)
            rc = -EPROTO;
        kvt_replay_result_fini (&uncached);
    }
    else
        fprintf (stderr, "kvtier demo: %s\n", kvt_strerror (rc));
    kvt_replay_result_fini (&cached);
    kvt_trace_destroy (&trace);
    kvt_config_destroy (&config);
    return rc? 1: 0;
}
