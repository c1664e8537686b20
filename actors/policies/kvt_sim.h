/*  =========================================================================
    kvt_sim - replays a trace through real policy code, moving no bytes

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The engine behind `kvtier replay --simulate`. For each request of a
    Mooncake trace, in order:
      1. hit = the longest run of its leading blocks held by any tier; each
         hit block is served by the highest tier holding it;
      2. the modeled TTFT = time to bring hit blocks from lower tiers
         (link bandwidths) and to prefill the missed tokens (compute rate,
         with attention cost growing with depth); with prefetch the fetch
         overlaps the prefill, without it they add;
      3. its blocks are offered to the GPU tier in prefix order through the
         tier's policy (kvt_policy.h protocol); a block evicted from a tier
         is written down to the next tier if it has no copy there (write-
         back), or copies are written at insert (write-through) or at a
         block's second use, its first prefix hit (second-hit; then an
         evicted block without a copy below is dropped).
    Hit ratio = hit blocks / all blocks over all requests. The next-use
    oracle (next request containing each block) is computed once per trace
    and handed to policies in block->next_use, which only "belady" reads.
    Static layer sharding (gpu_layer_fraction f < 1): the GPU keeps the
    first f of every block's layers and host memory the rest, so the GPU
    tier holds capacity / f blocks, every GPU hit streams (1 - f) of its
    bytes host->GPU under the prefill, and every new block writes (1 - f)
    of its bytes GPU->host. Host space for those layers is assumed
    reserved apart from the host tier. Live, the same F is the config key
    tier_gpu/layer_fraction (runtime/kvt_layer_shard.h).
    Decode (every request, sharded or not): a request of output_length n
    decodes n - 1 tokens after the first (which prefill makes, in TTFT);
    step k = 1 .. n - 1 attends over context x = input_length + k tokens.
    As the live runtime stages it (compute/shard_staging = 1), a step of a
    sharded model copies the host-held layers of the whole context to the
    GPU on the copy engines under the compute of the GPU-held layers:
      step_ms (x) = max (compute (x), copy (x)) + (f < 1? decode_shard_step_ms: 0)
      compute (x) = decode_ms_per_token * (1 + x / decode_attention_equal_tokens)
      copy (x)    = (1 - f) * x * block_bytes / 512 / h2d
    summed over the steps in closed form (both sides are linear in x, so
    the sum splits at the one context where the copy overtakes the
    compute): O(1) per request. At f = 1 nothing crosses and a step is
    compute (x). Each result carries the same model at f = 1 beside it
    (decode_unsharded_s), so sharding's cost per token can be read
    against the hits its capacity buys. Batching (decode_batch B, 1 by
    default, as `kvtier bench shard` measures): a step of B sequences
    reads the weights once and every sequence's context, so a
    sequence's share of it is
      max (decode_ms_per_token x (1 / B + x / decode_attention_equal_tokens),
           copy (x)) + (f < 1? decode_shard_step_ms / B: 0)
    (the copy is per sequence: each one's host-held context crosses).
    Queueing between requests is not modeled, and the decode cost does
    not depend on the policy.
@discuss
    Calibration file (JSON, one flat object of numbers; every key optional,
    unknown keys are refused so a typo is not silently ignored):
      {"kvtier_calibration": 1, "block_bytes": 67108864,
       "h2d_GBps": 54.9, "d2h_GBps": 55.1, "nvme_read_GBps": 1.8,
       "nvme_write_GBps": 1.5, "prefill_tokens_per_s": 10000,
       "attention_equal_tokens": 30000, "request_overhead_us": 0,
       "decode_ms_per_token": 6.75, "decode_attention_equal_tokens": 122500,
       "decode_shard_step_ms": 0.5}
    Defaults are DESIGN.md's measured H100 links and a Llama-3-8B-shaped
    bf16 block (32 layers x 8 KV heads x 128 dims x 2 x 2 B x 512 tokens).
    Decode defaults (tools/bench/RESULTS.md, "Layer sharding: decode stages
    the host-held layers"): the H100 runtime decodes the 8B at F = 1 in
    6.97 ms/token at a 4224-token context, one sequence, CUDA graphs;
    attention's share grows by context / 122500 (16.06 GB of bf16 weights
    against 128 KiB of KV per token, both read from HBM each step), so
    6.75 ms at short context; a staged step costs ~0.5 ms more than
    max (compute, copy) (7.69 ms/token at F = 0.5, where the copy hides
    under the compute). `kvtier bench host --calibration` writes
    h2d_GBps and nvme_read_GBps; `kvtier bench shard --calibration`
    writes decode_ms_per_token, decode_shard_step_ms (at the file's
    h2d_GBps, so run bench host first) and block_bytes of the model it
    ran; each keeps the file's other keys.
@end
*/

#ifndef KVT_SIM_H_INCLUDED
#define KVT_SIM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt_trace.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_SIM_TIERS 3             //  GPU, host, NVMe

typedef enum {
    KVT_SIM_WRITE_BACK = 0,         //  Write down a block when it is evicted
    KVT_SIM_WRITE_THROUGH = 1,      //  Write every new block to every lower tier
    KVT_SIM_WRITE_SECOND_HIT = 2    //  Write down at a block's second use only
} kvt_sim_write_t;

typedef struct {
    double block_bytes;             //  KV bytes of one full block
    double h2d_GBps;                //  Host -> GPU
    double d2h_GBps;                //  GPU -> host
    double nvme_read_GBps;          //  NVMe -> host
    double nvme_write_GBps;         //  Host -> NVMe
    double prefill_tokens_per_s;    //  Prefill rate at short context
    double attention_equal_tokens;  //  Context where attention costs as much as the rest
    double request_overhead_us;     //  Fixed cost per request
    double decode_ms_per_token;     //  Decode step compute at short context, whole model
    double decode_attention_equal_tokens;   //  Context where a decode step's attention
                                    //  costs as much as the rest (0 = not modeled)
    double decode_shard_step_ms;    //  Fixed extra per decode step when f < 1
} kvt_sim_calibration_t;

typedef struct {
    const char *policy;             //  GPU tier policy (name or plugin:PATH)
    const char *lower_policy;       //  Host and NVMe tier policy; NULL = "lru"
    const char *options;            //  Policy options "k=v,..." or NULL
    size_t capacity [KVT_SIM_TIERS];    //  Blocks per tier; 0 = no such tier
    kvt_sim_write_t write;          //  When lower tiers get copies
    bool prefetch;                  //  Promote lower-tier hits at admission
    double gpu_layer_fraction;      //  Static layer sharding: share of each block's
                                    //  layers kept on GPU (1 = whole blocks)
    int decode_batch;               //  Sequences per decode step (1 = one at a time)
    size_t request_limit;           //  Replay only the first N requests (0 = all)
    kvt_sim_calibration_t calibration;  //  Cost model
} kvt_sim_config_t;

typedef struct {
    size_t request_count;           //  Requests replayed
    uint64_t block_count;           //  Blocks over all requests
    uint64_t hit_blocks [KVT_SIM_TIERS];    //  Prefix-hit blocks served per tier
    double hit_ratio;               //  All tiers: hit blocks / blocks
    double tier_hit_ratio [KVT_SIM_TIERS];  //  Per tier: served there / blocks
    double bytes_h2d;               //  Host -> GPU (promotions)
    double bytes_d2h;               //  GPU -> host (demotions, copies)
    double bytes_nvme_read;         //  NVMe -> host
    double bytes_nvme_write;        //  Host -> NVMe
    double ttft_mean_ms;            //  Modeled time to first token, mean
    double ttft_p50_ms;             //  Median
    double ttft_p99_ms;             //  99th percentile
    double ttft_nocache_mean_ms;    //  Same model with no cache at all
    double elapsed_s;               //  Wall time of the replay loop
    double accesses_per_s;          //  Block accesses replayed per wall second
    double cpu_s;                   //  CPU time of the replay loop (this thread)
    uint64_t bad_victims;           //  Victims a policy named that were not held
    double accesses_per_cpu_s;      //  Block accesses per CPU second (load-proof)
    uint64_t decode_tokens;         //  Decode steps: output tokens after each first
    double decode_s;                //  Modeled decode time, all requests, at f
    double decode_unsharded_s;      //  Same model at f = 1 (nothing crosses PCIe)
    double tpot_mean_ms;            //  decode_s / decode_tokens (time per output token)
    double tpot_unsharded_mean_ms;  //  decode_unsharded_s / decode_tokens
    double bytes_decode_h2d;        //  Host-held layers staged host -> GPU by decode
    double decode_copy_bound;       //  Share of decode steps where the copy > compute
} kvt_sim_result_t;

typedef struct _kvt_sim_t kvt_sim_t;

//  Fill 'calibration' with the defaults (DESIGN.md H100 table, 8B block).
void
    kvt_sim_calibration_defaults (kvt_sim_calibration_t *calibration);

//  Read a calibration file over the values already in 'calibration'.
//  Returns 0, or a negative code with a malloc'd message in *error.
int
    kvt_sim_calibration_load (kvt_sim_calibration_t *calibration, const char *path,
                              char **error);

//  What a bench that writes some keys starts from: the defaults, then the
//  file at 'path' over them where it exists, so that its other keys are
//  kept. Returns 0 (also for no file), or the load's negative code and
//  message when the file exists and does not load: the caller must not
//  write over it then.
int
    kvt_sim_calibration_load_existing (kvt_sim_calibration_t *calibration, const char *path,
                                       char **error);

//  Write 'calibration' as a calibration file (what `kvtier bench` does).
//  Returns 0 or -errno.
int
    kvt_sim_calibration_save (const kvt_sim_calibration_t *calibration, const char *path);

//  Modeled decode time in ms of one request under 'calibration' with a
//  share 'gpu_layer_fraction' of its layers on the GPU, decoded in steps
//  of 'batch' sequences (its share of each step): the sum over its
//  output_tokens - 1 decode steps of the staged step model (see @header),
//  in closed form. If 'copy_bound_steps' is not NULL, stores how many of
//  those steps the copy bounds. 0 when output_tokens < 2.
double
    kvt_sim_decode_ms (const kvt_sim_calibration_t *calibration, double gpu_layer_fraction,
                       int batch, uint64_t input_tokens, uint64_t output_tokens,
                       uint64_t *copy_bound_steps);

//  Fill 'config' with defaults: policy "lru", one GPU tier of 'capacity'.
void
    kvt_sim_config_defaults (kvt_sim_config_t *config, size_t capacity);

//  Prepare a simulator for 'trace' (borrowed; must outlive the simulator):
//  computes the next-use oracle once.
kvt_sim_t *
    kvt_sim_new (const kvt_trace_t *trace);

//  Destroy; NULL-safe, nulls the caller's pointer.
void
    kvt_sim_destroy (kvt_sim_t **self_p);

//  Replay the trace under 'config' into 'result'. Returns 0, or -EINVAL
//  if a policy could not be created (logged).
int
    kvt_sim_run (kvt_sim_t *self, const kvt_sim_config_t *config, kvt_sim_result_t *result);

//  Selftest
int
    kvt_sim_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
