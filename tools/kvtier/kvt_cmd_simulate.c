/*  =========================================================================
    kvt_cmd_simulate - kvtier replay --simulate / --list-policies / --curve

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvtier replay [TRACE] --simulate [--policy NAME[,NAME...]|all]
                  [--capacity C[,C...]] [--host-capacity C] [--nvme-capacity C]
                  [--lower-policy NAME] [--write back|through|second-hit]
                  [--no-prefetch] [--options K=V,...] [--gpu-layer-fraction F]
                  [--decode-batch B] [--calibration FILE]
                  [--requests N] [--json]
    kvtier replay --list-policies
    kvtier replay [TRACE] --curve [--policy ...] [--capacities C,C,...]
                  [--out PREFIX]          writes PREFIX.csv and PREFIX.svg
    TRACE defaults to $KVT_SOURCE_DIR/../shared/traces/mooncake_conversation.jsonl.
    Every run replays the trace through the real policy code (kvt_sim).
    --gpu-layer-fraction F models the live key tier_gpu/layer_fraction
    (static layer sharding, issue #5): the host-held layers of hit blocks
    are charged once per request into TTFT, and every decode step copies
    the host-held layers of the whole context host -> GPU under the
    compute (kvt_sim.h). Each row reports the modeled time per output
    token (TPOT) and decode seconds beside the same model at F = 1;
    --decode-batch B decodes B sequences a step (they share the weights'
    read, not their contexts' copies).
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_sim.h"
#include "kvt_cmd.h"

#define S_MAX_LIST 64               //  Policies or capacities per run

typedef struct {
    const char *trace_path;         //  Trace to replay
    const char *policies [S_MAX_LIST];  //  Policy names
    size_t policy_count;            //  Entries in policies
    size_t capacities [S_MAX_LIST]; //  GPU capacities
    size_t capacity_count;          //  Entries in capacities
    kvt_sim_config_t config;        //  Everything else
    bool json;                      //  JSON output
    bool curve;                     //  --curve
    bool list;                      //  --list-policies
    const char *out;                //  Curve file prefix
    char *owned [8];                //  Copies that list items point into
    size_t owned_count;             //  Entries in owned
} s_args_t;

//  Print the usage text.
static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: kvtier replay [TRACE] --simulate [--policy NAME[,NAME..]|all] [--capacity C[,C..]]\n"
        "         [--host-capacity C] [--nvme-capacity C] [--lower-policy NAME]\n"
        "         [--write back|through|second-hit] [--no-prefetch] [--options K=V,..]\n"
        "         [--gpu-layer-fraction F] [--decode-batch B] [--calibration FILE]\n"
        "         [--requests N] [--json]\n"
        "       kvtier replay --list-policies\n"
        "       kvtier replay [TRACE] --curve [--policy ..] [--capacities C,C,..] [--out PREFIX]\n"
        "  Capacities are in blocks of %d tokens. Policies may be plugin:/path/to.so.\n"
        "  --gpu-layer-fraction F: static layer sharding, F in (0, 1] the share of each\n"
        "  block's layers kept on the GPU (the live key tier_gpu/layer_fraction): the GPU\n"
        "  tier holds capacity/F blocks; a GPU hit streams its host-held layers under the\n"
        "  prefill (TTFT); and each decode step copies the host-held layers of the whole\n"
        "  context host -> GPU under the compute, as the runtime stages them:\n"
        "    step = max (decode_ms_per_token x (1 + context / decode_attention_equal_tokens),\n"
        "                (1 - F) x context x block_bytes / %d / h2d) + decode_shard_step_ms\n"
        "  over output_length - 1 steps per request (the first token is the prefill's).\n"
        "  --decode-batch B: B sequences a decode step (default 1): they share the\n"
        "  weights' read (decode_ms_per_token / B each), not their contexts' copies.\n"
        "  tpot_ms is the mean time per output token, F1_tpot the same model at F = 1.\n"
        "  --calibration FILE: JSON of link rates and compute rates (kvt_sim.h, POLICIES.md).\n",
        KVT_TRACE_BLOCK_TOKENS, KVT_TRACE_BLOCK_TOKENS);
}

//  Split a comma list into 'items', which point into a copy that 'args'
//  keeps until s_args_free. Returns 0 or -E2BIG.
static int
s_split (s_args_t *args, const char *text, const char **items, size_t *count)
{
    if (args->owned_count == sizeof (args->owned) / sizeof (args->owned [0]))
        return -E2BIG;
    char *copy = strdup (text);
    if (!copy)
        abort ();
    args->owned [args->owned_count++] = copy;
    char *save = NULL;
    for (char *token = strtok_r (copy, ",", &save); token; token = strtok_r (NULL, ",", &save)) {
        if (*count >= S_MAX_LIST)
            return -E2BIG;
        items [(*count)++] = token;
    }
    return 0;
}

//  Free what s_parse allocated.
static void
s_args_free (s_args_t *args)
{
    for (size_t i = 0; i < args->owned_count; i++)
        free (args->owned [i]);
    args->owned_count = 0;
}

static int
s_parse_count (const char *text, size_t *value)
{
    char *end;
    errno = 0;
    double parsed = strtod (text, &end);
    if (end == text || errno || parsed < 0 || parsed > 1e12)
        return -EINVAL;
    if (*end == 'k' || *end == 'K') {
        parsed *= 1000;
        end++;
    }
    if (*end)
        return -EINVAL;
    *value = (size_t) parsed;
    return 0;
}

//  Parse arguments; returns 0, or 2 for a usage error (printed).
static int
s_parse (int argc, char **argv, s_args_t *args)
{
    memset (args, 0, sizeof (*args));
    kvt_sim_config_defaults (&args->config, 0);
    args->out = "kvt_curve";
    const char *calibration = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv [i];
        const char *value = i + 1 < argc? argv [i + 1]: NULL;
        #define S_NEED_VALUE() do { if (!value) { fprintf (stderr, "replay: %s needs a value\n", arg); return 2; } i++; } while (0)
        if (streq (arg, "--simulate"))
            ;
        else
        if (streq (arg, "--list-policies"))
            args->list = true;
        else
        if (streq (arg, "--curve"))
            args->curve = true;
        else
        if (streq (arg, "--json"))
            args->json = true;
        else
        if (streq (arg, "--no-prefetch"))
            args->config.prefetch = false;
        else
        if (streq (arg, "--policy")) {
            S_NEED_VALUE ();
            if (streq (value, "all")) {
                for (size_t p = 0; p < kvt_policy_builtin_count () && p < S_MAX_LIST; p++)
                    args->policies [args->policy_count++] = kvt_policy_builtin (p)->name;
            }
            else
            if (s_split (args, value, args->policies, &args->policy_count)) {
                fprintf (stderr, "replay: too many policies\n");
                return 2;
            }
        }
        else
        if (streq (arg, "--capacity") || streq (arg, "--capacities")) {
            S_NEED_VALUE ();
            const char *items [S_MAX_LIST];
            size_t count = 0;
            if (s_split (args, value, items, &count)) {
                fprintf (stderr, "replay: too many capacities\n");
                return 2;
            }
            for (size_t c = 0; c < count; c++)
                if (s_parse_count (items [c], &args->capacities [args->capacity_count++])
                ||  args->capacities [args->capacity_count - 1] == 0) {
                    fprintf (stderr, "replay: bad capacity '%s'\n", items [c]);
                    return 2;
                }
        }
        else
        if (streq (arg, "--host-capacity") || streq (arg, "--nvme-capacity")) {
            S_NEED_VALUE ();
            size_t *slot = &args->config.capacity [streq (arg, "--host-capacity")? 1: 2];
            if (s_parse_count (value, slot)) {
                fprintf (stderr, "replay: bad %s '%s'\n", arg, value);
                return 2;
            }
        }
        else
        if (streq (arg, "--gpu-layer-fraction")) {
            S_NEED_VALUE ();
            char *end;
            double fraction = strtod (value, &end);
            if (*end || !(fraction > 0 && fraction <= 1)) {
                fprintf (stderr, "replay: --gpu-layer-fraction takes a number in (0, 1]\n");
                return 2;
            }
            args->config.gpu_layer_fraction = fraction;
        }
        else
        if (streq (arg, "--decode-batch")) {
            S_NEED_VALUE ();
            char *end;
            long batch = strtol (value, &end, 10);
            if (*end || end == value || batch < 1 || batch > 4096) {
                fprintf (stderr, "replay: --decode-batch takes a whole number in [1, 4096]\n");
                return 2;
            }
            args->config.decode_batch = (int) batch;
        }
        else
        if (streq (arg, "--lower-policy")) {
            S_NEED_VALUE ();
            args->config.lower_policy = value;
        }
        else
        if (streq (arg, "--options")) {
            S_NEED_VALUE ();
            args->config.options = value;
        }
        else
        if (streq (arg, "--write")) {
            S_NEED_VALUE ();
            if (streq (value, "back"))
                args->config.write = KVT_SIM_WRITE_BACK;
            else
            if (streq (value, "through"))
                args->config.write = KVT_SIM_WRITE_THROUGH;
            else
            if (streq (value, "second-hit"))
                args->config.write = KVT_SIM_WRITE_SECOND_HIT;
            else {
                fprintf (stderr, "replay: --write takes back, through or second-hit\n");
                return 2;
            }
        }
        else
        if (streq (arg, "--calibration")) {
            S_NEED_VALUE ();
            calibration = value;
        }
        else
        if (streq (arg, "--requests")) {
            S_NEED_VALUE ();
            if (s_parse_count (value, &args->config.request_limit)) {
                fprintf (stderr, "replay: bad --requests '%s'\n", value);
                return 2;
            }
        }
        else
        if (streq (arg, "--out")) {
            S_NEED_VALUE ();
            args->out = value;
        }
        else
        if (streq (arg, "--trace")) {
            S_NEED_VALUE ();
            args->trace_path = value;
        }
        else
        if (streq (arg, "--help") || streq (arg, "-h")) {
            s_usage (stdout);
            return 1;
        }
        else
        if (arg [0] != '-' && !args->trace_path)
            args->trace_path = arg;
        else {
            fprintf (stderr, "replay: unknown option '%s'\n", arg);
            s_usage (stderr);
            return 2;
        }
        #undef S_NEED_VALUE
    }
    if (calibration) {
        char *error = NULL;
        if (kvt_sim_calibration_load (&args->config.calibration, calibration, &error)) {
            fprintf (stderr, "replay: %s\n", error? error: "bad calibration file");
            free (error);
            return 2;
        }
    }
    if (args->policy_count == 0) {
        for (size_t p = 0; p < kvt_policy_builtin_count () && p < S_MAX_LIST; p++)
            args->policies [args->policy_count++] = kvt_policy_builtin (p)->name;
    }
    if (args->capacity_count == 0) {
        static const size_t curve [] = { 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000 };
        static const size_t single [] = { 1000, 4000, 16000 };
        const size_t *list = args->curve? curve: single;
        size_t count = args->curve? 9: 3;
        for (size_t c = 0; c < count; c++)
            args->capacities [args->capacity_count++] = list [c];
    }
    return 0;
}

//  Print one result as a JSON object (no newline); 'u', if not NULL, is
//  the same run at F = 1.
static void
s_print_result_json (FILE *out, const char *policy, const kvt_sim_config_t *config,
                     const kvt_sim_result_t *r, const kvt_sim_result_t *u)
{
    fprintf (out, "{\"policy\": \"%s\", \"capacity\": %zu, \"host_capacity\": %zu, "
             "\"nvme_capacity\": %zu, \"hit_ratio\": %.6f, "
             "\"tier_hit_ratio\": {\"gpu\": %.6f, \"host\": %.6f, \"nvme\": %.6f}, "
             "\"bytes\": {\"h2d\": %.0f, \"d2h\": %.0f, \"nvme_read\": %.0f, \"nvme_write\": %.0f}, "
             "\"ttft_ms\": {\"mean\": %.3f, \"p50\": %.3f, \"p99\": %.3f, \"nocache_mean\": %.3f}, "
             "\"requests\": %zu, \"blocks\": %" PRIu64 ", \"accesses_per_s\": %.0f, "
             "\"accesses_per_cpu_s\": %.0f, "
             "\"decode\": {\"gpu_layer_fraction\": %.6g, \"batch\": %d, "
             "\"tokens\": %" PRIu64 ", "
             "\"tpot_mean_ms\": %.4f, \"seconds\": %.3f, "
             "\"unsharded_tpot_mean_ms\": %.4f, \"unsharded_seconds\": %.3f, "
             "\"h2d_bytes\": %.0f, \"copy_bound_share\": %.6f}",
             policy, config->capacity [0], config->capacity [1], config->capacity [2],
             r->hit_ratio, r->tier_hit_ratio [0], r->tier_hit_ratio [1], r->tier_hit_ratio [2],
             r->bytes_h2d, r->bytes_d2h, r->bytes_nvme_read, r->bytes_nvme_write,
             r->ttft_mean_ms, r->ttft_p50_ms, r->ttft_p99_ms, r->ttft_nocache_mean_ms,
             r->request_count, r->block_count, r->accesses_per_s, r->accesses_per_cpu_s,
             config->gpu_layer_fraction, config->decode_batch, r->decode_tokens,
             r->tpot_mean_ms, r->decode_s,
             r->tpot_unsharded_mean_ms, r->decode_unsharded_s, r->bytes_decode_h2d,
             r->decode_copy_bound);
    if (u)
        fprintf (out, ", \"unsharded\": {\"hit_ratio\": %.6f, \"ttft_mean_ms\": %.3f, "
                 "\"tpot_mean_ms\": %.4f, \"decode_seconds\": %.3f}",
                 u->hit_ratio, u->ttft_mean_ms, u->tpot_mean_ms, u->decode_s);
    fprintf (out, "}");
}

//  Offline policies (they read the future) are drawn dashed.
static bool
s_is_oracle (const char *name)
{
    return streq (name, "belady") || streq (name, "oracle-reuse");
}

//  Colour of series 'index' in the SVG
static const char *
s_colour (size_t index)
{
    static const char *colours [] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                      "#9467bd", "#8c564b", "#e377c2", "#7f7f7f" };
    return colours [index % 8];
}

//  --------------------------------------------------------------------------
//  Write hit ratio vs capacity (log x) as an SVG line chart.

static int
s_write_svg (const char *path, const s_args_t *args, const double *ratios, const char *title)
{
    FILE *file = fopen (path, "w");
    if (!file)
        return -errno;
    const double width = 760, height = 480, left = 70, right = 170, top = 40, bottom = 60;
    double plot_w = width - left - right, plot_h = height - top - bottom;
    double log_min = log10 ((double) args->capacities [0]);
    double log_max = log10 ((double) args->capacities [args->capacity_count - 1]);
    if (log_max <= log_min)
        log_max = log_min + 1;
    double y_max = 0;
    for (size_t i = 0; i < args->policy_count * args->capacity_count; i++)
        y_max = fmax (y_max, ratios [i]);
    y_max = ceil (y_max * 10 + 0.5) / 10;
    fprintf (file, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
             "font-family=\"sans-serif\" font-size=\"12\">\n"
             "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
             "<text x=\"%.0f\" y=\"22\" font-size=\"14\">%s</text>\n",
             width, height, left, title);
    for (int tick = 0; tick <= 5; tick++) {
        double value = y_max * tick / 5;
        double y = top + plot_h - plot_h * value / y_max;
        fprintf (file, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                 "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                 left, y, left + plot_w, y, left - 6, y + 4, value);
    }
    for (size_t c = 0; c < args->capacity_count; c++) {
        double x = left + plot_w * (log10 ((double) args->capacities [c]) - log_min)
                        / (log_max - log_min);
        fprintf (file, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                 "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%zu</text>\n",
                 x, top, x, top + plot_h, x, top + plot_h + 16, args->capacities [c]);
    }
    fprintf (file, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"black\"/>\n"
             "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">capacity (blocks of %d tokens, log scale)</text>\n"
             "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" text-anchor=\"middle\">prefix hit ratio</text>\n",
             left, top, plot_w, plot_h, left + plot_w / 2, height - 18, KVT_TRACE_BLOCK_TOKENS,
             top + plot_h / 2, top + plot_h / 2);
    for (size_t p = 0; p < args->policy_count; p++) {
        fprintf (file, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                 s_colour (p), s_is_oracle (args->policies [p])? " stroke-dasharray=\"6 4\"": "");
        for (size_t c = 0; c < args->capacity_count; c++) {
            double x = left + plot_w * (log10 ((double) args->capacities [c]) - log_min)
                            / (log_max - log_min);
            double y = top + plot_h - plot_h * ratios [p * args->capacity_count + c] / y_max;
            fprintf (file, "%.1f,%.1f ", x, y);
        }
        fprintf (file, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n",
                 left + plot_w + 12, top + 16 + 18.0 * (double) p, s_colour (p), args->policies [p]);
    }
    fprintf (file, "</svg>\n");
    return fclose (file)? -errno: 0;
}

//  --------------------------------------------------------------------------
//  kvtier replay --simulate / --list-policies / --curve. argv [0] is the
//  subcommand name. Returns the process exit code.

int
kvt_simulate_main (int argc, char **argv)
{
    s_args_t args;
    int rc = s_parse (argc, argv, &args);
    if (rc) {
        s_args_free (&args);
        return rc == 1? 0: rc;
    }
    if (args.list) {
        for (size_t p = 0; p < kvt_policy_builtin_count (); p++)
            printf ("%-16s %s\n", kvt_policy_builtin (p)->name, kvt_policy_builtin (p)->summary);
        printf ("%-16s %s\n", "plugin:PATH", "a shared object exporting " KVT_POLICY_PLUGIN_SYMBOL);
        s_args_free (&args);
        return 0;
    }
    char default_path [4096];
    if (!args.trace_path) {
        const char *source = getenv ("KVT_SOURCE_DIR");
        snprintf (default_path, sizeof (default_path),
                  "%s/../shared/traces/mooncake_conversation.jsonl", source? source: KVT_SOURCE_DIR);
        args.trace_path = default_path;
    }
    char *error = NULL;
    int64_t load_start = kvt_now_us ();
    kvt_trace_t *trace = kvt_trace_load (args.trace_path, &error);
    if (!trace) {
        fprintf (stderr, "replay: %s\n", error? error: "cannot load trace");
        free (error);
        s_args_free (&args);
        return 1;
    }
    double load_ms = (double) (kvt_now_us () - load_start) / 1000;
    kvt_sim_t *sim = kvt_sim_new (trace);
    size_t runs = args.policy_count * args.capacity_count;
    kvt_sim_result_t *results = (kvt_sim_result_t *) kvt_zmalloc (runs * sizeof (kvt_sim_result_t));
    //  With layer sharding, each run again at F = 1 (whole blocks on the GPU)
    //  so every row shows what sharding buys in hits beside what it costs
    bool sharded = args.config.gpu_layer_fraction < 1 && !args.curve;
    kvt_sim_result_t *unsharded = sharded
        ? (kvt_sim_result_t *) kvt_zmalloc (runs * sizeof (kvt_sim_result_t)): NULL;
    double *ratios = (double *) kvt_zmalloc (runs * sizeof (double));
    double accesses = 0, seconds = 0, cpu_seconds = 0;
    int status = 0;
    for (size_t p = 0; p < args.policy_count && !status; p++)
        for (size_t c = 0; c < args.capacity_count && !status; c++) {
            kvt_sim_config_t config = args.config;
            config.policy = args.policies [p];
            config.capacity [0] = args.capacities [c];
            size_t at = p * args.capacity_count + c;
            if (kvt_sim_run (sim, &config, &results [at])) {
                fprintf (stderr, "replay: policy '%s' could not run\n", args.policies [p]);
                status = 1;
                break;
            }
            ratios [at] = results [at].hit_ratio;
            if (sharded) {
                config.gpu_layer_fraction = 1;
                if (kvt_sim_run (sim, &config, &unsharded [at])) {
                    status = 1;
                    break;
                }
            }
            accesses += (double) results [at].block_count;
            seconds += results [at].elapsed_s;
            cpu_seconds += results [at].cpu_s;
        }
    if (!status && args.json) {
        printf ("{\"trace\": \"%s\", \"requests\": %zu, \"load_ms\": %.1f, "
                "\"accesses_per_s\": %.0f, \"accesses_per_cpu_s\": %.0f, "
                "\"write\": \"%s\", \"prefetch\": %s, \"gpu_layer_fraction\": %.6g, "
                "\"hit_ratio\": %.6f, \"results\": [\n",
                args.trace_path, results [0].request_count, load_ms,
                seconds > 0? accesses / seconds: 0, cpu_seconds > 0? accesses / cpu_seconds: 0,
                args.config.write == KVT_SIM_WRITE_BACK? "back"
                : args.config.write == KVT_SIM_WRITE_THROUGH? "through": "second-hit",
                args.config.prefetch? "true": "false", args.config.gpu_layer_fraction,
                results [0].hit_ratio);
        for (size_t p = 0; p < args.policy_count; p++)
            for (size_t c = 0; c < args.capacity_count; c++) {
                kvt_sim_config_t config = args.config;
                config.capacity [0] = args.capacities [c];
                size_t at = p * args.capacity_count + c;
                printf ("  ");
                s_print_result_json (stdout, args.policies [p], &config, &results [at],
                                     sharded? &unsharded [at]: NULL);
                printf ("%s\n", at + 1 < runs? ",": "");
            }
        printf ("]}\n");
    }
    else
    if (!status && !args.curve) {
        printf ("trace %s: %zu requests, loaded in %.1f ms; write-%s, prefetch %s\n",
                args.trace_path, results [0].request_count, load_ms,
                args.config.write == KVT_SIM_WRITE_BACK? "back"
                : args.config.write == KVT_SIM_WRITE_THROUGH? "through": "second-hit",
                args.config.prefetch? "on": "off");
        printf ("%-16s %8s %7s %7s %7s %7s %9s %9s %9s %9s %9s %9s %8s %8s %10s\n",
                "policy", "gpu_cap", "hit", "gpu", "host", "nvme", "h2d_GB", "d2h_GB",
                "nvmeR_GB", "nvmeW_GB", "ttft_ms", "p99_ms", "tpot_ms", "F1_tpot", "access/s");
        for (size_t p = 0; p < args.policy_count; p++)
            for (size_t c = 0; c < args.capacity_count; c++) {
                const kvt_sim_result_t *r = &results [p * args.capacity_count + c];
                printf ("%-16s %8zu %7.4f %7.4f %7.4f %7.4f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f"
                        " %8.3f %8.3f %10.3g\n",
                        args.policies [p], args.capacities [c], r->hit_ratio,
                        r->tier_hit_ratio [0], r->tier_hit_ratio [1], r->tier_hit_ratio [2],
                        r->bytes_h2d / 1e9, r->bytes_d2h / 1e9, r->bytes_nvme_read / 1e9,
                        r->bytes_nvme_write / 1e9, r->ttft_mean_ms, r->ttft_p99_ms,
                        r->tpot_mean_ms, r->tpot_unsharded_mean_ms, r->accesses_per_s);
            }
        //  Gap closed between LRU and Belady, when both ran
        size_t lru = SIZE_MAX, belady = SIZE_MAX;
        for (size_t p = 0; p < args.policy_count; p++) {
            if (streq (args.policies [p], "lru"))
                lru = p;
            if (streq (args.policies [p], "belady"))
                belady = p;
        }
        if (lru != SIZE_MAX && belady != SIZE_MAX) {
            printf ("gap closed, (policy - lru) / (belady - lru):\n");
            for (size_t p = 0; p < args.policy_count; p++) {
                printf ("  %-14s", args.policies [p]);
                for (size_t c = 0; c < args.capacity_count; c++) {
                    double low = ratios [lru * args.capacity_count + c];
                    double high = ratios [belady * args.capacity_count + c];
                    double mine = ratios [p * args.capacity_count + c];
                    printf (" %8zu: %6.3f", args.capacities [c],
                            high > low? (mine - low) / (high - low): 0);
                }
                printf ("\n");
            }
        }
        printf ("simulator speed: %.3g block accesses/s wall, %.3g per CPU second, over %zu runs\n",
                seconds > 0? accesses / seconds: 0,
                cpu_seconds > 0? accesses / cpu_seconds: 0, runs);
        printf ("cost model: block %.0f MiB, h2d %.1f GB/s, d2h %.1f GB/s, nvme r/w %.1f/%.1f GB/s, "
                "prefill %.0f tok/s; no-cache mean TTFT %.1f ms\n",
                args.config.calibration.block_bytes / 1048576, args.config.calibration.h2d_GBps,
                args.config.calibration.d2h_GBps, args.config.calibration.nvme_read_GBps,
                args.config.calibration.nvme_write_GBps,
                args.config.calibration.prefill_tokens_per_s, results [0].ttft_nocache_mean_ms);
        const kvt_sim_result_t *r = &results [0];
        const kvt_sim_calibration_t *cal = &args.config.calibration;
        char growth [64] = " (flat)";
        if (cal->decode_attention_equal_tokens > 0)
            snprintf (growth, sizeof (growth), " x (1 + context / %.0f)",
                      cal->decode_attention_equal_tokens);
        printf ("decode model: %.2f ms/token compute%s%s, %d sequence%s a step; "
                "F = %.4g: %" PRIu64 " tokens after the first, TPOT %.3f ms vs %.3f ms at F = 1 "
                "(%.3fx), decode %.1f s vs %.1f s, %.1f GB staged h2d, %.1f%% of steps copy-bound "
                "(the same for every policy and capacity)\n",
                cal->decode_ms_per_token, growth,
                args.config.gpu_layer_fraction < 1? "": ", nothing crosses PCIe",
                args.config.decode_batch, args.config.decode_batch > 1? "s": "",
                args.config.gpu_layer_fraction, r->decode_tokens, r->tpot_mean_ms,
                r->tpot_unsharded_mean_ms,
                r->tpot_unsharded_mean_ms > 0? r->tpot_mean_ms / r->tpot_unsharded_mean_ms: 0,
                r->decode_s, r->decode_unsharded_s, r->bytes_decode_h2d / 1e9,
                100 * r->decode_copy_bound);
        if (args.config.gpu_layer_fraction < 1)
            printf ("  a sharded step: max (compute, %.4g x context x %.0f B / %.1f GB/s) + %.2f ms\n",
                    1 - args.config.gpu_layer_fraction, cal->block_bytes / KVT_TRACE_BLOCK_TOKENS,
                    cal->h2d_GBps, cal->decode_shard_step_ms);
        if (sharded) {
            printf ("sharding trade-off: F = %.4g against F = 1 at the same GPU capacity "
                    "(request = TTFT + decode, mean per request):\n",
                    args.config.gpu_layer_fraction);
            printf ("  %-16s %8s %7s %7s %9s %9s %8s %8s %9s %9s\n", "policy", "gpu_cap",
                    "hit", "F1_hit", "ttft_ms", "F1_ttft", "tpot_ms", "F1_tpot",
                    "request_s", "F1_req_s");
            for (size_t p = 0; p < args.policy_count; p++)
                for (size_t c = 0; c < args.capacity_count; c++) {
                    size_t at = p * args.capacity_count + c;
                    const kvt_sim_result_t *f = &results [at], *u = &unsharded [at];
                    double n = f->request_count? (double) f->request_count: 1;
                    printf ("  %-16s %8zu %7.4f %7.4f %9.1f %9.1f %8.3f %8.3f %9.3f %9.3f\n",
                            args.policies [p], args.capacities [c], f->hit_ratio, u->hit_ratio,
                            f->ttft_mean_ms, u->ttft_mean_ms, f->tpot_mean_ms, u->tpot_mean_ms,
                            f->ttft_mean_ms / 1000 + f->decode_s / n,
                            u->ttft_mean_ms / 1000 + u->decode_s / n);
                }
        }
    }
    if (!status && args.curve) {
        char path [4096];
        snprintf (path, sizeof (path), "%s.csv", args.out);
        FILE *csv = fopen (path, "w");
        if (!csv) {
            fprintf (stderr, "replay: cannot write %s: %s\n", path, strerror (errno));
            status = 1;
        }
        else {
            fprintf (csv, "capacity");
            for (size_t p = 0; p < args.policy_count; p++)
                fprintf (csv, ",%s", args.policies [p]);
            fprintf (csv, "\n");
            for (size_t c = 0; c < args.capacity_count; c++) {
                fprintf (csv, "%zu", args.capacities [c]);
                for (size_t p = 0; p < args.policy_count; p++)
                    fprintf (csv, ",%.6f", ratios [p * args.capacity_count + c]);
                fprintf (csv, "\n");
            }
            if (fclose (csv))
                status = 1;
            if (!args.json)
                printf ("wrote %s\n", path);
        }
        snprintf (path, sizeof (path), "%s.svg", args.out);
        char title [512];
        const char *base = strrchr (args.trace_path, '/');
        snprintf (title, sizeof (title), "prefix hit ratio vs GPU capacity: %s",
                  base? base + 1: args.trace_path);
        if (!status && s_write_svg (path, &args, ratios, title)) {
            fprintf (stderr, "replay: cannot write %s\n", path);
            status = 1;
        }
        else
        if (!status && !args.json)
            printf ("wrote %s\n", path);
    }
    free (ratios);
    free (unsharded);
    free (results);
    kvt_sim_destroy (&sim);
    kvt_trace_destroy (&trace);
    s_args_free (&args);
    return status;
}
