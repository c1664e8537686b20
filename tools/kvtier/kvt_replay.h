/*  =========================================================================
    kvt_replay - drive a server with a Mooncake trace and account for it

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_REPLAY_H_INCLUDED
#define KVT_REPLAY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt.h"
#include "kvt_trace.h"

typedef struct {
    size_t max_requests;            //  0 = the whole trace
    int tokens_per_hash;            //  Tokens made per trace block id (512 in the trace)
    int max_new_tokens;             //  Cap on decode steps per request (0 = trace's own)
    bool progress;                  //  Draw a progress bar on stderr
} kvt_replay_options_t;

typedef struct {
    size_t requests;                //  Requests sent
    size_t errors;                  //  Requests answered with ERROR
    uint64_t from_tier [3];         //  Prefix blocks served from GPU, host, NVMe
    uint64_t computed;              //  Blocks prefilled
    uint64_t prompt_tokens;         //  Tokens sent
    uint64_t output_digest;         //  xxh3 over every output token, in order
    int64_t *ttft_us;               //  Per request (owned)
    double wall_s;                  //  Wall time of the replay
    kvt_client_stats_t stats;       //  Server counters after the replay (owned)
} kvt_replay_result_t;

//  Replay 'trace' against the server at 'endpoint', one request at a time
//  in trace order (so results are reproducible). Returns 0 or a negative
//  code if the server could not be reached.
int
    kvt_replay_run (const char *endpoint, const kvt_trace_t *trace,
                    const kvt_replay_options_t *options, kvt_replay_result_t *result);

//  Free what a result owns.
void
    kvt_replay_result_fini (kvt_replay_result_t *result);

//  TTFT percentile (0..100) in microseconds.
int64_t
    kvt_replay_ttft_percentile (const kvt_replay_result_t *result, double percentile);

//  Mean TTFT in microseconds (0 without requests). Where a cache's hits
//  fall on a minority of requests, the median does not see them; the mean
//  carries every prefill the cache avoided.
double
    kvt_replay_ttft_mean (const kvt_replay_result_t *result);

//  Print the report of one or two runs side by side ('baseline' may be NULL).
void
    kvt_replay_print_report (const char *title, const kvt_replay_result_t *result,
                             const char *baseline_title, const kvt_replay_result_t *baseline);

#endif
