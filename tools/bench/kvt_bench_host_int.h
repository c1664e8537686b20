/*  =========================================================================
    kvt_bench_host_int - what `kvtier bench host`'s files share: options,
    the prefix's prompts, and the calls that start and talk to the runtime

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_BENCH_HOST_INT_H_INCLUDED
#define KVT_BENCH_HOST_INT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt_client.h"
#include "kvt_runtime.h"

#define KVT_BENCH_HOST_TENANT "bench-host"  //  Tenant of every request
#define KVT_BENCH_HOST_MAX_PROMPT_MIB 192   //  Largest --prompt-mib (frames stay under the
                                            //  scheduler's default max_frame_bytes, 256 MiB)

#define KVT_BENCH_HOST_OVERRIDES 8     //  Most -o options one run takes

//  The command's options.
typedef struct {
    int blocks;                     //  Blocks in the cached prefix
    int block_kib;                  //  KiB per block
    const char *dir;                //  Parent of our work folder
    int reps;                       //  Repetitions per figure (median)
    int qd;                         //  Raw baseline and tier_nvme queue depth
    int prompt_mib;                 //  KV bytes one STORE (or STORE_TAIL) carries at most
    bool split;                     //  The prefix as separate prompts of prompt_mib each
    bool no_settle;                 //  Skip the fdatasync before each timed disk phase
    bool json;                      //  JSON report
    bool verbose;                   //  Per-rep figures and counter deltas on stderr
    const char *calibration;        //  Write the simulator's calibration file here, or NULL
    bool ttft;                      //  Run the TTFT part (kvt_bench_host_ttft.c) instead
    bool both;                      //  Run the both-ways part (kvt_bench_host_both.c) instead
    int clients;                    //  --both: clients at once
    const char *overrides [KVT_BENCH_HOST_OVERRIDES];   //  -o section/key=value: over the
                                    //  bench's own config
    int override_count;             //  Entries in overrides
    int prefix_mib;                 //  --ttft: prefix on NVMe, MiB (0 = the shape's default)
    int fresh;                      //  --ttft: new prompt tokens (0 = the shape's default)
    int groups;                     //  --ttft: nvme_layer_groups of "ours"
    bool compute_prefix;            //  --ttft: fill prefixes by GENERATE, not STORE
} kvt_bench_host_opts_t;

//  The counters a phase reads, before and after.
typedef struct {
    uint64_t us_finding_prefix;     //  scheduler: match + promote, microseconds
    uint64_t us_computing;          //  scheduler: COMP_RUN round trips
    uint64_t us_reserving_gpu;      //  scheduler: MIG_RESERVE round trips
    uint64_t us_waiting_admission;  //  scheduler: waiting for GPU room
    uint64_t bytes_host_to_gpu;     //  migration: bytes copied host -> GPU
    uint64_t bytes_nvme_to_host;    //  migration: bytes read NVMe -> host
    uint64_t promoted;              //  migration: blocks promoted
    uint64_t promote_misses;        //  migration: blocks that failed on the way
} kvt_bench_host_counters_t;

//  One prompt of the prefix.
typedef struct {
    uint64_t *tokens;               //  Its tokens (full blocks only)
    size_t token_count;             //  Tokens
    size_t blocks;                  //  Full blocks
} kvt_bench_host_prompt_t;

#define KVT_BENCH_HOST_SWEEP 4      //  Depths of the raw sweep: qd/4, qd/2, qd, 2 x qd

//  What one repetition measured.
typedef struct {
    double host_us;                 //  Promotion host -> GPU (us_finding_prefix delta)
    double host_net_us;             //  Same minus the match alone (prefix on GPU)
    double match_us;                //  us_finding_prefix with the prefix on the GPU
    double compute_us;              //  us_computing with the prefix on the GPU
    double nvme_us;                 //  Promotion NVMe -> GPU
    double nvme_net_us;             //  Same minus the match alone
    double host_wall_us;            //  Client-side wall time of the host GENERATEs
    double gpu_wall_us;             //  The same GENERATEs, prefix already on the GPU
    double nvme_wall_us;            //  Client-side wall time of the NVMe GENERATEs
    double memcpy_us;               //  Baseline: memcpy of the same bytes
    double disk_us;                 //  Baseline: raw io_uring reads of the same bytes
    double disk_spread_us;          //  Profile: the same reads, each block to its own place
    double shm_copy_us;             //  Profile: block-wise memcpy between two arenas
    double xxh3_us;                 //  Profile: xxh3-64 of every block (one core)
    double settle_us;               //  fdatasync of the data files before the disk phases
    double demote_us;               //  DEMOTE host -> NVMe of the prefix (client wall time)
    double disk_write_us;           //  Baseline: raw io_uring writes of the same payloads
    double disk_write_spread_us;    //  Profile: the same writes, each block from its own place
    double sweep_read_us [KVT_BENCH_HOST_SWEEP];     //  Raw reads at each depth of the sweep
    double sweep_write_us [KVT_BENCH_HOST_SWEEP];    //  Raw writes at each depth of the sweep
} kvt_bench_host_rep_t;

//  What the figures of a run are of, beside its reps.
typedef struct {
    const kvt_bench_host_opts_t *opts;
    kvt_client_t *client;           //  For the notes on what the runtime ran on
    uint64_t block_bytes;           //  Bytes a block
    size_t bytes;                   //  Bytes in the prefix
    int prompt_count;               //  Prompts the prefix was stored as
    int layers, kv_heads, block_tokens;     //  The blocks' geometry
    bool device;                    //  The GPU tier is device memory (pinned PCIe baseline)
    const char *link;               //  What the host -> GPU baseline is, in words
    int raw_files;                  //  Data files the raw baseline reads and writes
    const int *sweep_qd;            //  Depths of the raw sweep
    int sweep_count;                //  Entries in sweep_qd (1: --no-sweep)
} kvt_bench_host_run_t;

//  Report the medians of opts->reps reps: figures beside their baselines,
//  the notes, the verdicts, the paired ratio, and the simulator's
//  calibration file where --calibration asks for it
//  (kvt_bench_host_figures.c).
void
    kvt_bench_host_figures (const kvt_bench_host_run_t *run, const kvt_bench_host_rep_t *reps);

//  STATS into *counters; with 'keep', the whole reply too (caller finis).
//  Returns 0 or the client's error.
int
    kvt_bench_host_counters_read (kvt_client_t *client, kvt_bench_host_counters_t *counters,
                                  kvt_client_stats_t *keep);

//  Notes on what the runtime ran on: the host arena's share on 2 MiB pages
//  (as this process maps it) and which way tier_nvme's reads went.
void
    kvt_bench_host_runtime_notes (kvt_client_t *client, kvt_bench_report_t *report);

//  Print every counter that moved between two STATS (verbose profiling).
void
    kvt_bench_host_counters_print_delta (const char *phase, const kvt_client_stats_t *before,
                                         const kvt_client_stats_t *after);

//  Move every block from tier 'from' to the tier below; fails unless
//  exactly 'expected' moved.
int
    kvt_bench_host_demote (kvt_client_t *client, uint64_t from, uint64_t expected);

//  GENERATE every prompt with max_new_tokens 0; each whole prefix must
//  come from tier 'tier'. Returns 0 or a negative code; adds the client's
//  wall time to *wall_us.
int
    kvt_bench_host_generate_all (kvt_client_t *client, kvt_bench_host_prompt_t *prompts,
                                 int prompt_count, uint64_t tier, double *wall_us);

//  Model geometry for 'block_kib' KiB blocks (16 x 2^j, j = 0..7): 4
//  layers x 8 KV heads x head_dim 128 x 16 tokens x bf16 = 256 KiB;
//  fewer layers below that (and fewer KV heads below 64 KiB), more tokens
//  per block above. 0 or -EINVAL.
int
    kvt_bench_host_geometry (int block_kib, int *layers, int *kv_heads, int *block_tokens);

//  Blocks one STORE carries: --prompt-mib of KV, at most the prefix.
int
    kvt_bench_host_piece_blocks (const kvt_bench_host_opts_t *opts);

//  Blocks one GENERATE promotes: the whole prefix, or one piece (--split).
int
    kvt_bench_host_prompt_blocks (const kvt_bench_host_opts_t *opts);

//  Start every actor in this process with our geometry and tiers, the
//  NVMe tier in 'nvme_dir', then 'extra' options ("section/key=value",
//  NULL-terminated; NULL for none) over them. Returns the runtime, or
//  NULL with the reason.
kvt_runtime_t *
    kvt_bench_host_start_runtime (const kvt_bench_host_opts_t *opts, const char *nvme_dir,
                                  const char *const *extra);

//  The --both part (kvt_bench_host_both.c, issue #3): promotions beside
//  the upkeep's demotions, both ways at once, in folder 'work_dir'.
//  Returns the command's exit status.
int
    kvt_bench_host_both_run (const kvt_bench_host_opts_t *opts, const char *work_dir);

//  STORE the prefix, in pieces of 'per_piece' blocks of deterministic
//  tokens and KV bytes: one prompt (a STORE, then a STORE_TAIL per further
//  piece), or with 'split' one prompt per piece. *prompts_p and *count_p
//  get the prompts (caller frees, also on failure). Returns 0 or a
//  negative code.
int
    kvt_bench_host_store_prefix (kvt_client_t *client, const kvt_client_hello_t *hello,
                                 int blocks, size_t per_piece, bool split,
                                 kvt_bench_host_prompt_t **prompts_p, int *count_p);

#endif
