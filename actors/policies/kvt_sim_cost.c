/*  =========================================================================
    kvt_sim_cost - the simulator's cost model: its calibration file and
    the decode sum

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The numbers `kvtier replay --simulate` turns hits and bytes into time
    with (kvt_sim.h has the model and the file's keys): the calibration
    defaults, the file that `kvtier bench host --calibration` and `kvtier
    bench shard --calibration` write and the replay reads, and the closed
    form of a request's modeled decode time. kvt_sim.c replays; its
    selftest covers these too.
@end
*/

#include "kvt_classes.h"
#include <unistd.h>
#include "kvt_sim.h"

#define S_GB 1e9                    //  Bytes per GB in bandwidth figures

//  --------------------------------------------------------------------------
//  Fill 'calibration' with the defaults (DESIGN.md H100 table, 8B block).

void
kvt_sim_calibration_defaults (kvt_sim_calibration_t *calibration)
{
    assert (calibration);
    calibration->block_bytes = 32.0 * 8 * 128 * 2 * 2 * 512;  //  Llama-3-8B bf16
    calibration->h2d_GBps = 54.9;               //  Pinned 1 GiB copy, measured
    calibration->d2h_GBps = 55.1;               //  Measured
    calibration->nvme_read_GBps = 1.8;          //  Virtual disk, 1.5-2.2 measured
    calibration->nvme_write_GBps = 1.5;         //  Assumed below reads
    calibration->prefill_tokens_per_s = 10000;  //  Assumed 8B prefill on one H100
    calibration->attention_equal_tokens = 30000;    //  8B: 16 GF/token = attention at 30K
    calibration->request_overhead_us = 0;
    //  Decode, measured on the H100 runtime (RESULTS.md, "Layer sharding:
    //  decode stages the host-held layers"): 6.97 ms/token at F = 1 and a
    //  4224-token context = 6.75 x (1 + 4224 / 122500)
    calibration->decode_ms_per_token = 6.75;
    //  16.06 GB of 8B bf16 weights / 128 KiB of KV per token: the context
    //  where reading the KV from HBM costs as much as reading the weights
    calibration->decode_attention_equal_tokens = 122500;
    //  What a staged step costs over max (compute, copy) on the H100:
    //  7.69-7.70 ms/token at F = 0.5 (CUDA graphs; the copy, 5 ms, hides
    //  under the 6.97-7.08 of compute but shares its HBM) against 7.08
    calibration->decode_shard_step_ms = 0.5;
}

//  Keys of the calibration file, with where each value goes
typedef struct {
    const char *key;                //  JSON key
    size_t offset;                  //  offsetof in kvt_sim_calibration_t, or SIZE_MAX
} s_cal_key_t;

static const s_cal_key_t s_cal_keys [] = {
    { "kvtier_calibration", SIZE_MAX },
    { "block_bytes", offsetof (kvt_sim_calibration_t, block_bytes) },
    { "h2d_GBps", offsetof (kvt_sim_calibration_t, h2d_GBps) },
    { "d2h_GBps", offsetof (kvt_sim_calibration_t, d2h_GBps) },
    { "nvme_read_GBps", offsetof (kvt_sim_calibration_t, nvme_read_GBps) },
    { "nvme_write_GBps", offsetof (kvt_sim_calibration_t, nvme_write_GBps) },
    { "prefill_tokens_per_s", offsetof (kvt_sim_calibration_t, prefill_tokens_per_s) },
    { "attention_equal_tokens", offsetof (kvt_sim_calibration_t, attention_equal_tokens) },
    { "request_overhead_us", offsetof (kvt_sim_calibration_t, request_overhead_us) },
    { "decode_ms_per_token", offsetof (kvt_sim_calibration_t, decode_ms_per_token) },
    { "decode_attention_equal_tokens",
      offsetof (kvt_sim_calibration_t, decode_attention_equal_tokens) },
    { "decode_shard_step_ms", offsetof (kvt_sim_calibration_t, decode_shard_step_ms) },
    { NULL, 0 }
};

//  Record a calibration error with the file and byte offset.
static int
s_cal_error (char **error, const char *path, const char *data, const char *at,
             const char *problem)
{
    int line = 1;
    for (const char *p = data; p < at; p++)
        line += *p == '\n';
    if (error && asprintf (error, "%s:%d: %s", path, line, problem) < 0)
        *error = NULL;
    return -EINVAL;
}

//  --------------------------------------------------------------------------
//  Defaults, then an existing file over them (see header).

int
kvt_sim_calibration_load_existing (kvt_sim_calibration_t *calibration, const char *path,
                                   char **error)
{
    assert (calibration && path);
    kvt_sim_calibration_defaults (calibration);
    if (error)
        *error = NULL;
    if (access (path, F_OK) != 0)
        return 0;
    return kvt_sim_calibration_load (calibration, path, error);
}

//  --------------------------------------------------------------------------
//  Read a calibration file over the values already in 'calibration': one
//  flat JSON object of "key": number. Returns 0 or -errno / -EINVAL with
//  a malloc'd message in *error.

int
kvt_sim_calibration_load (kvt_sim_calibration_t *calibration, const char *path, char **error)
{
    assert (calibration && path);
    if (error)
        *error = NULL;
    FILE *file = fopen (path, "r");
    if (!file) {
        int rc = -errno;
        if (error && asprintf (error, "%s: cannot read: %s", path, strerror (-rc)) < 0)
            *error = NULL;
        return rc;
    }
    char data [8192];
    size_t size = fread (data, 1, sizeof (data) - 1, file);
    bool too_big = !feof (file);
    fclose (file);
    data [size] = 0;
    if (too_big)
        return s_cal_error (error, path, data, data, "file larger than 8 KiB");
    kvt_sim_calibration_t values = *calibration;
    const char *p = data;
    #define S_WS() while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++
    S_WS ();
    if (*p++ != '{')
        return s_cal_error (error, path, data, p - 1, "expected '{'");
    S_WS ();
    bool first = true;
    while (*p != '}') {
        if (!first) {
            if (*p++ != ',')
                return s_cal_error (error, path, data, p - 1, "expected ',' or '}'");
            S_WS ();
        }
        first = false;
        if (*p++ != '"')
            return s_cal_error (error, path, data, p - 1, "expected a key string");
        const char *key = p;
        while (*p && *p != '"')
            p++;
        if (!*p)
            return s_cal_error (error, path, data, p, "unterminated key");
        size_t key_length = (size_t) (p - key);
        p++;
        S_WS ();
        if (*p++ != ':')
            return s_cal_error (error, path, data, p - 1, "expected ':'");
        S_WS ();
        char *end;
        errno = 0;
        double value = strtod (p, &end);
        if (end == p || errno || !isfinite (value) || value < 0)
            return s_cal_error (error, path, data, p, "expected a non-negative number");
        p = end;
        const s_cal_key_t *known = s_cal_keys;
        while (known->key && !(strlen (known->key) == key_length
                               && memcmp (known->key, key, key_length) == 0))
            known++;
        if (!known->key)
            return s_cal_error (error, path, data, key, "unknown key");
        if (known->offset != SIZE_MAX)
            *(double *) ((char *) &values + known->offset) = value;
        S_WS ();
        if (!*p)
            return s_cal_error (error, path, data, p, "missing '}'");
    }
    p++;
    S_WS ();
    if (*p)
        return s_cal_error (error, path, data, p, "trailing characters");
    #undef S_WS
    if (values.block_bytes <= 0 || values.h2d_GBps <= 0 || values.d2h_GBps <= 0
    ||  values.nvme_read_GBps <= 0 || values.nvme_write_GBps <= 0
    ||  values.prefill_tokens_per_s <= 0 || values.attention_equal_tokens <= 0)
        return s_cal_error (error, path, data, p, "sizes and rates must be > 0");
    *calibration = values;
    return 0;
}

//  --------------------------------------------------------------------------
//  Write 'calibration' as a calibration file. Returns 0 or -errno.

int
kvt_sim_calibration_save (const kvt_sim_calibration_t *calibration, const char *path)
{
    FILE *file = fopen (path, "w");
    if (!file)
        return -errno;
    fprintf (file, "{\"kvtier_calibration\": 1");
    for (const s_cal_key_t *known = s_cal_keys; known->key; known++)
        if (known->offset != SIZE_MAX)
            fprintf (file, ",\n \"%s\": %.17g", known->key,
                     *(const double *) ((const char *) calibration + known->offset));
    fprintf (file, "}\n");
    return fclose (file)? -errno: 0;
}

//  Sum of (u + v x) over the integers x in [p, q]; 0 if q < p.
static double
s_linear_sum (double u, double v, uint64_t p, uint64_t q)
{
    if (q < p)
        return 0;
    double n = (double) (q - p + 1);
    return n * u + v * ((double) p + (double) q) * n / 2;
}

//  --------------------------------------------------------------------------
//  Modeled decode time in ms of one request: the sum over its decode steps
//  k = 1 .. output_tokens - 1 of
//      max (a + b x, d x) + o,     x = input_tokens + k
//  where a + b x is its share of a step's compute (a = decode_ms_per_token
//  / batch: the weights are read once for the batch; b = decode_ms_per_
//  token / equal tokens: its own context), d x the copy of its host-held
//  layers of x tokens at the h2d rate, o its share of the fixed cost of a
//  sharded step. Both sides are linear in x,
//  so the steps split at the first x where d x >= a + b x: compute below,
//  copy from there on. O(1) whatever the output length.

double
kvt_sim_decode_ms (const kvt_sim_calibration_t *calibration, double gpu_layer_fraction,
                   int batch, uint64_t input_tokens, uint64_t output_tokens,
                   uint64_t *copy_bound_steps)
{
    assert (calibration && batch >= 1);
    if (copy_bound_steps)
        *copy_bound_steps = 0;
    if (output_tokens < 2)
        return 0;
    uint64_t first = input_tokens + 1;
    uint64_t last = input_tokens + output_tokens - 1;
    double shard = gpu_layer_fraction > 0 && gpu_layer_fraction < 1? 1 - gpu_layer_fraction: 0;
    double a = calibration->decode_ms_per_token / batch;
    double b = calibration->decode_attention_equal_tokens > 0
             ? calibration->decode_ms_per_token / calibration->decode_attention_equal_tokens: 0;
    double d = shard * calibration->block_bytes / KVT_TRACE_BLOCK_TOKENS
             / (calibration->h2d_GBps * S_GB) * 1e3;
    double o = shard > 0? calibration->decode_shard_step_ms / batch: 0;
    double steps = (double) (last - first + 1);
    //  First context where the copy bounds the step (last + 1 = never)
    uint64_t split = last + 1;
    if (d > b) {
        double cross = ceil (a / (d - b));
        if (cross <= (double) first)
            split = first;
        else
        if (cross <= (double) last)
            split = (uint64_t) cross;
    }
    if (copy_bound_steps)
        *copy_bound_steps = last + 1 - split;
    return s_linear_sum (a, b, first, split - 1) + s_linear_sum (0, d, split, last)
         + steps * o;
}

