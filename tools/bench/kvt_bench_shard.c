/*  =========================================================================
    kvt_bench_shard - `kvtier bench shard`: what static layer sharding
    (tier_gpu/layer_fraction, issue #5) costs a request, beside F = 1

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvtier bench shard [--fractions F,F,..] [--prompt N] [--new N]
                       [--config FILE] [-o KEY=VALUE].. [--dir DIR] [--json]
                       [--calibration FILE]
    One runtime in this process per layer fraction, one after the other:
    F = 1 first (the baseline: whole blocks on the GPU tier), then each F
    of --fractions (default 0.5,0.25). Each runtime gets the same prompt
    (--prompt tokens of kvt_client_random_tokens, seed 1: the ids of
    `kvtier client generate --random N --seed 1`) three times, decoding
    --new tokens each time, after an untimed warm-up request (another
    prompt of up to S_WARM_TOKENS tokens, 2 new: the runtime's first
    request pays one-time costs, cuBLAS and workspace set-up, that would
    otherwise land in the computed run's TTFT of whichever F runs first):
      computed: nothing cached, the prompt is prefilled;
      hit, hit: every full block of the prompt found on the GPU tier
                (checked: all from the GPU tier, none computed).
    Figures per F, each beside the F = 1 figure of the same run: TTFT of
    the computed run, TTFT of the hit runs (mean of two), decode time per
    token of the hit runs ((total_us - ttft_us) / (new - 1), the server's
    timings as the client gets them in GENERATE_OK). Notes: the blocks
    the GPU tier holds (tier_gpu.capacity_blocks, its slots), slab and
    shard bytes, the layers kept on the GPU, whether every run's output
    tokens are those of F = 1 (they must be: exit 1 if not), and the host
    read rate the extra decode time implies: per step the kernels read
    layers [Lg, layers) of the whole context from host memory, (layers -
    Lg) x (prompt + new / 2) tokens x bytes of one token's K and V of one
    layer, in the extra time per token over F = 1.
    Shape: on a CUDA build with a device, the Llama-3-8B shape of
    configs/gpu-h100.cfg (32 layers, 2 MiB blocks, fetch_policy cost,
    disk_admission predicted, overlap_upkeep 1) with a 2 GiB GPU tier
    (capacity_blocks 1024, host 512, NVMe 64, compute/spare_blocks 512):
    the options of the RESULTS.md entry "Static layer sharding, live";
    defaults 4096 prompt tokens, 256 new. Else a tiny shape on the CPU
    model (8 layers, 4 KV heads, 128 KiB blocks; 256 prompt tokens, 16
    new): a check of the path, not the GPU's figures. --config and -o
    overlay the shape's options (the fraction and endpoints stay ours).
    Exit 0, 1 (failed, or outputs differ), 2 (usage).
    --calibration FILE writes the simulator's decode keys measured here
    (decode_ms_per_token from F = 1, decode_shard_step_ms from the other
    fractions' excess over the model's max (compute, copy); kvt_sim.h)
    and the model's block_bytes (512 tokens) into FILE, keeping its other keys (`kvtier bench host --calibration`
    writes the links).
@end
*/

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "kvt.h"
#include "kvt_actors.h"
#include "kvt_layer_shard.h"
#include "kvt_sim.h"
#include "kvt_bench.h"

#define S_TENANT "bench-shard"      //  Tenant of every request
#define S_MAX_FRACTIONS 8           //  Fractions after the baseline, at most
#define S_MAX_OPTIONS 32            //  -o options, at most
#define S_WARM_TOKENS 1024          //  Most tokens of the warm-up prompt
#define S_RUNS 3                    //  Requests per runtime: computed, hit, hit
#define S_PROMPT_SEED 1             //  Seed of the prompt's tokens

//  A model shape and its defaults, as config options.
typedef struct {
    const char *name;               //  What to call it in the report
    const char *const *options;     //  NULL-terminated "key=value" list
    int prompt;                     //  Default prompt tokens
    int fresh;                      //  Default tokens decoded
} s_shape_t;

static const char *const s_options_8b [] = {
    //  configs/gpu-h100.cfg ...
    "model/layers=32", "model/heads=32", "model/kv_heads=8", "model/head_dim=128",
    "model/hidden=4096", "model/intermediate=14336", "model/vocab=128256",
    "model/block_tokens=16", "model/seed=1", "compute/device=cuda",
    "scheduler/fetch_policy=cost", "migration/disk_admission=predicted",
    "migration/overlap_upkeep=1",
    //  ... with the RESULTS.md entry's capacity overrides: a 2 GiB GPU tier
    "tier_gpu/capacity_blocks=1024", "tier_host/capacity_blocks=512",
    "tier_nvme/capacity_blocks=64", "compute/spare_blocks=512", NULL };
static const s_shape_t s_shape_8b = {
    "Llama-3-8B shape of configs/gpu-h100.cfg, bf16, GPU model, 2 GiB GPU tier in HBM",
    s_options_8b, 4096, 256 };

static const char *const s_options_tiny [] = {
    "model/layers=8", "model/heads=4", "model/kv_heads=4", "model/head_dim=128",
    "model/hidden=512", "model/intermediate=512", "model/vocab=256",
    "model/block_tokens=16", "model/seed=1", "compute/device=cpu",
    "tier_gpu/capacity_blocks=512", "tier_host/capacity_blocks=512",
    "tier_nvme/capacity_blocks=64", NULL };
static const s_shape_t s_shape_tiny = {
    "tiny shape on the CPU model (no CUDA device): a check of the path, not the GPU figures",
    s_options_tiny, 256, 16 };

//  The command's options.
typedef struct {
    double fractions [S_MAX_FRACTIONS + 1];     //  [0] = 1 (baseline), then --fractions
    int fraction_count;             //  Entries in fractions
    int prompt;                     //  Prompt tokens
    int fresh;                      //  Tokens decoded per request
    const char *config_file;        //  --config, or NULL
    const char *overrides [S_MAX_OPTIONS];  //  -o KEY=VALUE
    int override_count;             //  Entries in overrides
    const char *dir;                //  Parent of our work folder
    const char *calibration;        //  --calibration FILE, or NULL
    bool json;                      //  JSON report
} s_opts_t;

//  What one runtime (one F) measured.
typedef struct {
    double fraction;                //  tier_gpu/layer_fraction
    double ttft_us [S_RUNS];        //  GENERATE_OK ttft_us per request
    double decode_us [S_RUNS];      //  Per token after the first, per request
    uint64_t *tokens [S_RUNS];      //  Owned: output tokens per request
    size_t token_count [S_RUNS];    //  Entries in tokens
    uint64_t capacity_blocks;       //  tier_gpu.capacity_blocks (slots)
    uint64_t slab_bytes;            //  tier_gpu.slab_bytes
    uint64_t shard_bytes;           //  tier_gpu.shard_bytes
    uint64_t gpu_layers;            //  tier_gpu.gpu_layers (layers when not sharded)
    kvt_client_hello_t hello;       //  The server's model
} s_fraction_run_t;

//  Print the usage text.
static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: kvtier bench shard [--fractions F,F,..] [--prompt N] [--new N]\n"
        "                          [--config FILE] [-o KEY=VALUE].. [--dir DIR] [--json]\n"
        "                          [--calibration FILE]\n"
        "  One runtime per tier_gpu/layer_fraction: F = 1 (baseline), then each F in\n"
        "  (0, 1] of --fractions (default 0.5,0.25, at most %d). The prompt (--prompt\n"
        "  tokens, >= 16) is computed, then hit twice on the GPU tier, --new tokens (>= 2)\n"
        "  decoded each time; TTFT and decode per token beside F = 1. Defaults: the 8B\n"
        "  shape with a CUDA device (4096 / 256), else a tiny CPU shape (256 / 16).\n"
        "  --calibration FILE: write the decode keys measured here into the file that\n"
        "  `kvtier replay --simulate --calibration FILE` reads (its other keys kept).\n",
        S_MAX_FRACTIONS);
}

//  Parse "0.5,0.25" into opts->fractions after the baseline. 0 or -EINVAL.
static int
s_parse_fractions (s_opts_t *opts, const char *text)
{
    char *copy = strdup (text);
    if (!copy)
        abort ();
    int rc = 0;
    opts->fraction_count = 1;
    char *save = NULL;
    for (char *item = strtok_r (copy, ",", &save); item && rc == 0;
         item = strtok_r (NULL, ",", &save)) {
        double fraction;
        if (opts->fraction_count > S_MAX_FRACTIONS || kvt_layer_shard_parse (item, &fraction))
            rc = -EINVAL;
        else
            opts->fractions [opts->fraction_count++] = fraction;
    }
    if (opts->fraction_count < 2)
        rc = -EINVAL;
    free (copy);
    return rc;
}

//  Parse a whole decimal integer in [low, high]. 0 or -EINVAL.
static int
s_parse_int (const char *text, long low, long high, int *value)
{
    char *end = NULL;
    errno = 0;
    long number = strtol (text, &end, 10);
    if (errno || end == text || *end || number < low || number > high)
        return -EINVAL;
    *value = (int) number;
    return 0;
}

//  The config of 'shape' with layer fraction 'fraction', its NVMe tier in
//  'nvme_dir', --config and -o over the shape's options; validated.
//  Returns it, or NULL with the reason in 'error'.
static kvt_config_t *
s_config_new (const s_opts_t *opts, const s_shape_t *shape, double fraction,
              const char *nvme_dir, char *error, size_t error_size)
{
    kvt_config_t *config = kvt_config_new ();
    int rc = 0;
    for (const char *const *option = shape->options; *option && rc == 0; option++)
        rc = kvt_config_set_option (config, *option, error, error_size);
    if (rc == 0 && opts->config_file)
        rc = kvt_config_load (config, opts->config_file, error, error_size);
    for (int k = 0; k < opts->override_count && rc == 0; k++)
        rc = kvt_config_set_option (config, opts->overrides [k], error, error_size);
    //  Ours whatever the overlays say: no TCP port, a fresh NVMe folder,
    //  the fraction under test
    char option [1200];
    if (rc == 0)
        rc = kvt_config_set_option (config, "scheduler/endpoint=", error, error_size);
    snprintf (option, sizeof (option), "tier_nvme/dir=%s", nvme_dir);
    if (rc == 0)
        rc = kvt_config_set_option (config, option, error, error_size);
    snprintf (option, sizeof (option), "%s=%.17g", KVT_LAYER_SHARD_KEY, fraction);
    if (rc == 0)
        rc = kvt_config_set_option (config, option, error, error_size);
    if (rc == 0)
        rc = kvt_config_validate (config, error, error_size);
    if (rc)
        kvt_config_destroy (&config);
    return config;
}

//  Start a runtime of 'shape' with layer fraction 'fraction', its NVMe tier
//  in 'nvme_dir'. Returns the runtime, or NULL with the reason printed.
static kvt_runtime_t *
s_start_runtime (const s_opts_t *opts, const s_shape_t *shape, double fraction,
                 const char *nvme_dir)
{
    char error [256] = "";
    kvt_config_t *config = s_config_new (opts, shape, fraction, nvme_dir, error,
                                         sizeof (error));
    if (!config) {
        fprintf (stderr, "kvtier bench shard: config: %s\n", error);
        return NULL;
    }
    char who [64];
    snprintf (who, sizeof (who), "kvtier bench shard (layer fraction %g)", fraction);
    kvt_runtime_t *runtime = kvt_bench_runtime_start (config, who);
    kvt_config_destroy (&config);
    return runtime;
}

//  GENERATE the prompt, decoding opts->fresh tokens, as request 'k' of
//  'run'; 'hit' requests must find every full block on the GPU tier.
//  Returns 0 or a negative code (reason printed).
static int
s_generate (kvt_client_t *client, const s_opts_t *opts, const uint64_t *prompt,
            s_fraction_run_t *run, int k, bool hit)
{
    kvt_client_generate_t result;
    int rc = kvt_client_generate (client, S_TENANT, prompt, (size_t) opts->prompt,
                                  (uint64_t) opts->fresh, &result);
    if (rc) {
        fprintf (stderr, "kvtier bench shard: GENERATE (layer fraction %g, request %d) failed: "
                 "%s %s\n", run->fraction, k, kvt_client_error_name (client),
                 kvt_client_error_detail (client));
        return rc;
    }
    uint64_t blocks = (uint64_t) opts->prompt / run->hello.block_tokens;
    if (result.token_count != (size_t) opts->fresh || result.total_us < result.ttft_us
    ||  (hit && (result.from_gpu != blocks || result.computed != 0))) {
        fprintf (stderr, "kvtier bench shard: layer fraction %g, request %d: %zu tokens out "
                 "(asked %d), %" PRIu64 "/%" PRIu64 "/%" PRIu64 " blocks from gpu/host/nvme, %"
                 PRIu64 " computed%s\n", run->fraction, k, result.token_count, opts->fresh,
                 result.from_gpu, result.from_host, result.from_nvme, result.computed,
                 hit? ", expected every full block from the GPU tier": "");
        rc = -EIO;
    }
    else {
        run->ttft_us [k] = (double) result.ttft_us;
        run->decode_us [k] = (double) (result.total_us - result.ttft_us) / (opts->fresh - 1);
        run->tokens [k] = result.tokens;
        run->token_count [k] = result.token_count;
        result.tokens = NULL;       //  Kept
        result.token_count = 0;
    }
    kvt_client_generate_fini (&result);
    return rc;
}

//  GENERATE an untimed warm-up prompt (seed S_PROMPT_SEED + 1, up to
//  S_WARM_TOKENS tokens, 2 new). Returns 0 or a negative code (printed).
static int
s_warm_up (kvt_client_t *client, const s_opts_t *opts, const s_fraction_run_t *run)
{
    size_t tokens = opts->prompt < S_WARM_TOKENS? (size_t) opts->prompt: S_WARM_TOKENS;
    uint64_t *prompt = (uint64_t *) zmalloc (tokens * sizeof (uint64_t));
    kvt_client_random_tokens (prompt, tokens, run->hello.vocab, S_PROMPT_SEED + 1);
    kvt_client_generate_t result;
    int rc = kvt_client_generate (client, S_TENANT, prompt, tokens, 2, &result);
    free (prompt);
    if (rc)
        fprintf (stderr, "kvtier bench shard: the warm-up GENERATE (layer fraction %g) "
                 "failed: %s %s\n", run->fraction, kvt_client_error_name (client),
                 kvt_client_error_detail (client));
    else
        kvt_client_generate_fini (&result);
    return rc;
}

//  One runtime at run->fraction: a warm-up, the prompt computed, then hit twice, and
//  tier_gpu's gauges. Returns 0 or a negative code (reason printed).
static int
s_fraction_run (const s_opts_t *opts, const s_shape_t *shape, const char *work_dir,
                s_fraction_run_t *run, int index)
{
    char nvme_dir [1100];
    snprintf (nvme_dir, sizeof (nvme_dir), "%s/nvme-%d", work_dir, index);
    if (mkdir (nvme_dir, 0700) && errno != EEXIST) {
        int rc = -errno;
        fprintf (stderr, "kvtier bench shard: cannot create %s: %s\n", nvme_dir,
                 strerror (-rc));
        return rc;
    }
    kvt_runtime_t *runtime = s_start_runtime (opts, shape, run->fraction, nvme_dir);
    if (!runtime)
        return -EIO;
    int rc = 0;
    //  Two minutes a call: a request that hangs fails the bench visibly
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 120000);
    if (!client || kvt_client_hello (client, "bench-shard", &run->hello)
    ||  run->hello.block_tokens == 0 || run->hello.layers == 0) {
        fprintf (stderr, "kvtier bench shard: no HELLO from the runtime\n");
        rc = -EPROTO;
    }
    else
    if ((uint64_t) opts->prompt < run->hello.block_tokens) {
        fprintf (stderr, "kvtier bench shard: --prompt %d is under one block (%" PRIu64
                 " tokens)\n", opts->prompt, run->hello.block_tokens);
        rc = -EINVAL;
    }
    uint64_t *prompt = NULL;
    if (rc == 0) {
        prompt = (uint64_t *) zmalloc ((size_t) opts->prompt * sizeof (uint64_t));
        kvt_client_random_tokens (prompt, (size_t) opts->prompt, run->hello.vocab,
                                  S_PROMPT_SEED);
    }
    if (rc == 0)
        rc = s_warm_up (client, opts, run);
    for (int k = 0; k < S_RUNS && rc == 0; k++)
        rc = s_generate (client, opts, prompt, run, k, k > 0);
    free (prompt);
    if (rc == 0) {
        kvt_client_stats_t stats;
        rc = kvt_client_stats (client, &stats);
        if (rc)
            fprintf (stderr, "kvtier bench shard: STATS failed: %s %s\n",
                     kvt_client_error_name (client), kvt_client_error_detail (client));
        else {
            run->gpu_layers = run->hello.layers;    //  The gauge is there when sharded
            kvt_client_stats_find (&stats, "tier_gpu.capacity_blocks", &run->capacity_blocks);
            kvt_client_stats_find (&stats, "tier_gpu.slab_bytes", &run->slab_bytes);
            kvt_client_stats_find (&stats, "tier_gpu.shard_bytes", &run->shard_bytes);
            kvt_client_stats_find (&stats, "tier_gpu.gpu_layers", &run->gpu_layers);
            kvt_client_stats_fini (&stats);
            if (run->capacity_blocks == 0) {
                fprintf (stderr, "kvtier bench shard: no tier_gpu.capacity_blocks in STATS\n");
                rc = -EPROTO;
            }
        }
    }
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    return rc;
}

//  True when request 'k' of 'run' output the same tokens as request 'j'
//  of 'other'.
static bool
s_same_tokens (const s_fraction_run_t *run, int k, const s_fraction_run_t *other, int j)
{
    return run->token_count [k] == other->token_count [j]
        && memcmp (run->tokens [k], other->tokens [j],
                   run->token_count [k] * sizeof (uint64_t)) == 0;
}

//  Mean of the hit requests' (k = 1..) values of one field.
static double
s_hit_mean (const double *values)
{
    double sum = 0;
    for (int k = 1; k < S_RUNS; k++)
        sum += values [k];
    return sum / (S_RUNS - 1);
}

//  Put the decode keys of the simulator's cost model measured here into
//  opts->calibration, keeping the file's other keys (kvt_sim.h has the
//  model): decode_ms_per_token from F = 1's decode time per token at the
//  mean context 'context', decode_shard_step_ms as what the sharded runs
//  took over the model's max (compute, copy) at the file's h2d_GBps (the
//  median over fractions, not below 0), and block_bytes of this model's
//  512-token block, which those rates go with. Notes what it wrote.
//  Returns 0, or -1 when the file does not load or cannot be written.
static int
s_calibration_write (const s_opts_t *opts, const s_fraction_run_t *runs, double context,
                     kvt_bench_report_t *report)
{
    kvt_sim_calibration_t calibration;
    char *error = NULL;
    if (kvt_sim_calibration_load_existing (&calibration, opts->calibration, &error) != 0) {
        fprintf (stderr, "kvtier bench shard: %s\n", error? error: opts->calibration);
        free (error);
        kvt_bench_report_note (report, "calibration", "not written: the file does not load");
        return -1;
    }
    const s_fraction_run_t *base = &runs [0];
    const double equal = calibration.decode_attention_equal_tokens;
    const double growth = equal > 0? 1 + context / equal: 1;
    const double compute_ms = s_hit_mean (base->decode_us) / 1e3;
    calibration.decode_ms_per_token = compute_ms / growth;
    //  K and V of one token, every layer: what a step copies per token of
    //  context for a host-held share 1 - Lg / layers
    const double token_bytes = (double) base->hello.block_bytes
                             / (double) base->hello.block_tokens;
    double extra [S_MAX_FRACTIONS];
    int count = 0;
    for (int f = 1; f < opts->fraction_count; f++) {
        const s_fraction_run_t *run = &runs [f];
        double held = 1 - (double) run->gpu_layers / (double) run->hello.layers;
        double copy_ms = held * context * token_bytes / (calibration.h2d_GBps * 1e6);
        double model_ms = copy_ms > compute_ms? copy_ms: compute_ms;
        double over = s_hit_mean (run->decode_us) / 1e3 - model_ms;
        extra [count++] = over > 0? over: 0;
    }
    if (count > 0)
        calibration.decode_shard_step_ms = kvt_bench_median (extra, (size_t) count);
    //  The model these rates belong to: the simulator's blocks are 512 tokens
    calibration.block_bytes = token_bytes * 512;
    char note [200];
    const int written = kvt_sim_calibration_save (&calibration, opts->calibration);
    if (written == 0)
        snprintf (note, sizeof (note), "wrote decode_ms_per_token %.3f, "
                  "decode_shard_step_ms %.3f (at h2d_GBps %.1f) and block_bytes %.0f to %s",
                  calibration.decode_ms_per_token, calibration.decode_shard_step_ms,
                  calibration.h2d_GBps, calibration.block_bytes, opts->calibration);
    else
        snprintf (note, sizeof (note), "could not write %s", opts->calibration);
    kvt_bench_report_note (report, "calibration", note);
    return written == 0? 0: -1;
}

//  The report. Returns the exit code: 0, or 1 when some output differs.
static int
s_report (const s_opts_t *opts, const s_shape_t *shape, const s_fraction_run_t *runs)
{
    const s_fraction_run_t *base = &runs [0];
    kvt_bench_report_t *report = kvt_bench_report_new ("shard", opts->json);
    char note [128], key [64], figure [64];
    kvt_bench_report_note (report, "shape", shape->name);
    snprintf (note, sizeof (note), "%d random tokens (seed %d) computed, then hit twice on "
              "the GPU tier; %d tokens decoded each", opts->prompt, S_PROMPT_SEED, opts->fresh);
    kvt_bench_report_note (report, "request", note);
    snprintf (note, sizeof (note), "one runtime per F, F = 1 first; TTFT and decode from "
              "GENERATE_OK (server-side ttft_us, total_us)");
    kvt_bench_report_note (report, "method", note);
    //  One token's K and V of one layer; the mean context while decoding
    size_t token_layer_bytes = (size_t) (base->hello.block_bytes / base->hello.block_tokens
                                         / base->hello.layers);
    double context = opts->prompt + opts->fresh / 2.0;
    double base_ttft_hit = s_hit_mean (base->ttft_us);
    double base_decode = s_hit_mean (base->decode_us);
    bool all_same = true;
    for (int f = 0; f < opts->fraction_count; f++) {
        const s_fraction_run_t *run = &runs [f];
        snprintf (key, sizeof (key), "F=%g tier_gpu", run->fraction);
        snprintf (note, sizeof (note), "%" PRIu64 " blocks (%.2fx F=1), %" PRIu64 "/%" PRIu64
                  " layers on GPU, slab %.2f GiB, shard %.2f GiB", run->capacity_blocks,
                  (double) run->capacity_blocks / (double) base->capacity_blocks,
                  run->gpu_layers, run->hello.layers, (double) run->slab_bytes / (1 << 30),
                  (double) run->shard_bytes / (1 << 30));
        kvt_bench_report_note (report, key, note);
        if (f == 0) {
            //  Within F = 1: a hit gives the computed run's tokens?
            bool same = true;
            for (int k = 1; k < S_RUNS; k++)
                same = same && s_same_tokens (run, k, run, 0);
            snprintf (note, sizeof (note), "baseline; hit runs' tokens %s the computed run's",
                      same? "identical to": "DIFFER from");
            kvt_bench_report_note (report, "F=1 outputs", note);
            continue;
        }
        bool same = true;
        for (int k = 0; k < S_RUNS; k++)
            same = same && s_same_tokens (run, k, base, k);
        all_same = all_same && same;
        snprintf (key, sizeof (key), "F=%g outputs", run->fraction);
        kvt_bench_report_note (report, key, same? "identical to F=1 (all 3 requests)"
                                                : "DIFFER from F=1");
        snprintf (figure, sizeof (figure), "f%g_ttft_computed_ms", run->fraction);
        kvt_bench_report_add (report, figure, run->ttft_us [0] / 1e3, "ms",
                              "f1_ttft_computed_ms", base->ttft_us [0] / 1e3);
        snprintf (figure, sizeof (figure), "f%g_ttft_gpu_hit_ms", run->fraction);
        kvt_bench_report_add (report, figure, s_hit_mean (run->ttft_us) / 1e3, "ms",
                              "f1_ttft_gpu_hit_ms", base_ttft_hit / 1e3);
        snprintf (figure, sizeof (figure), "f%g_decode_per_token_ms", run->fraction);
        double decode = s_hit_mean (run->decode_us);
        kvt_bench_report_add (report, figure, decode / 1e3, "ms", "f1_decode_per_token_ms",
                              base_decode / 1e3);
        //  Host-held bytes one decode step reads: layers past Lg, whole context
        double host_layers = (double) run->hello.layers - (double) run->gpu_layers;
        double step_bytes = host_layers * context * (double) token_layer_bytes;
        double extra_us = decode - base_decode;
        //  Read in place (compute/shard_staging = 0) the extra time is the
        //  read: its rate is the link's. Staged, the copies run under the
        //  compute, so the rate over the whole step says how busy the link is
        snprintf (key, sizeof (key), "F=%g host read", run->fraction);
        if (step_bytes > 0 && decode > 0)
            snprintf (note, sizeof (note), "%.0f MiB/step (%.0f layers x %.0f tokens x %zu B): "
                      "%.1f GB/s of the step, %.1f of its +%.3f ms over F=1",
                      step_bytes / (1 << 20), host_layers, context, token_layer_bytes,
                      step_bytes / decode / 1e3, extra_us > 0? step_bytes / extra_us / 1e3: 0,
                      extra_us / 1e3);
        else
            snprintf (note, sizeof (note), "no host-held layers");
        kvt_bench_report_note (report, key, note);
    }
    const bool written = !opts->calibration || !all_same
                      || s_calibration_write (opts, runs, context, report) == 0;
    kvt_bench_report_finish (&report);
    if (!all_same)
        fprintf (stderr, "kvtier bench shard: output tokens differ from F = 1\n");
    return all_same && written? 0: 1;
}

//  `kvtier bench shard`: returns the exit code (0, 1 failed, 2 usage).
int
kvt_bench_shard_main (int argc, char **argv)
{
    static const struct option options [] = {
        { "json",      no_argument,       NULL, 'j' },
        { "fractions", required_argument, NULL, 'f' },
        { "prompt",    required_argument, NULL, 'p' },
        { "new",       required_argument, NULL, 'n' },
        { "config",    required_argument, NULL, 'c' },
        { "option",    required_argument, NULL, 'o' },
        { "dir",       required_argument, NULL, 'd' },
        { "calibration", required_argument, NULL, 'C' },
        { "help",      no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    s_opts_t opts = { .fractions = { 1.0, 0.5, 0.25 }, .fraction_count = 3, .dir = "/var/tmp" };
    bool bad = false;
    optind = 1;
    int opt;
    while ((opt = getopt_long (argc, argv, "o:", options, NULL)) != -1) {
        switch (opt) {
            case 'j': opts.json = true; break;
            case 'f': bad |= s_parse_fractions (&opts, optarg) != 0; break;
            case 'p': bad |= s_parse_int (optarg, 16, 1 << 20, &opts.prompt) != 0; break;
            case 'n': bad |= s_parse_int (optarg, 2, 1 << 16, &opts.fresh) != 0; break;
            case 'c': opts.config_file = optarg; break;
            case 'o':
                if (opts.override_count == S_MAX_OPTIONS || !strchr (optarg, '='))
                    bad = true;
                else
                    opts.overrides [opts.override_count++] = optarg;
                break;
            case 'd': opts.dir = optarg; break;
            case 'C': opts.calibration = optarg; break;
            case 'h': s_usage (stdout); return 0;
            default: s_usage (stderr); return 2;
        }
    }
    if (bad || optind < argc || !*opts.dir) {
        s_usage (stderr);
        return 2;
    }
    const s_shape_t *shape = kvt_runtime_gpu_count () > 0? &s_shape_8b: &s_shape_tiny;
    if (!opts.prompt)
        opts.prompt = shape->prompt;
    if (!opts.fresh)
        opts.fresh = shape->fresh;
    //  A bad --config or -o is a usage error, found before any runtime starts
    char error [256] = "";
    for (int f = 0; f < opts.fraction_count; f++) {
        kvt_config_t *config = s_config_new (&opts, shape, opts.fractions [f], opts.dir, error,
                                             sizeof (error));
        if (!config) {
            fprintf (stderr, "kvtier bench shard: config: %s\n", error);
            s_usage (stderr);
            return 2;
        }
        kvt_config_destroy (&config);
    }
    zsys_init ();
    zsys_handler_set (NULL);
    char work_dir [1024];
    snprintf (work_dir, sizeof (work_dir), "%s/kvt-bench-shard-XXXXXX", opts.dir);
    if (!mkdtemp (work_dir)) {
        fprintf (stderr, "kvtier bench shard: cannot create a folder in %s: %s\n", opts.dir,
                 strerror (errno));
        return 1;
    }
    s_fraction_run_t runs [S_MAX_FRACTIONS + 1];
    memset (runs, 0, sizeof (runs));
    int rc = 0;
    for (int f = 0; f < opts.fraction_count && rc == 0; f++) {
        runs [f].fraction = opts.fractions [f];
        rc = s_fraction_run (&opts, shape, work_dir, &runs [f], f);
        if (rc == 0 && f > 0 && (runs [f].hello.block_bytes != runs [0].hello.block_bytes
                             ||  runs [f].hello.layers != runs [0].hello.layers)) {
            fprintf (stderr, "kvtier bench shard: the model changed between runtimes\n");
            rc = -EPROTO;
        }
    }
    char command [1200];
    snprintf (command, sizeof (command), "rm -rf '%s'", work_dir);
    if (system (command) != 0)
        fprintf (stderr, "kvtier bench shard: could not remove %s\n", work_dir);
    int status = rc? 1: s_report (&opts, shape, runs);
    for (int f = 0; f < opts.fraction_count; f++)
        for (int k = 0; k < S_RUNS; k++)
            free (runs [f].tokens [k]);
    return status;
}
