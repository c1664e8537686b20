/*  =========================================================================
    kvt_bench_host_ttft - `kvtier bench host --ttft`: time to first token of
    a request whose prefix lives on NVMe, read in layer groups or whole
    blocks (issue #4)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Used by kvt_bench_host.c; kvt_bench_host_ttft.c says what it measures.
@end
*/

#ifndef KVT_BENCH_HOST_TTFT_H_INCLUDED
#define KVT_BENCH_HOST_TTFT_H_INCLUDED

#include <stdbool.h>

typedef struct {
    const char *dir;                //  Parent of the work folder (NVMe tier files)
    int reps;                       //  Timed repetitions per config (median)
    int qd;                         //  tier_nvme and raw baseline queue depth
    int prefix_mib;                 //  Prefix on NVMe, MiB (0 = the shape's default)
    int fresh;                      //  New prompt tokens after it (0 = the shape's default)
    int groups;                     //  migration/nvme_layer_groups of "ours"
    bool json;                      //  JSON report
    bool verbose;                   //  Per-rep figures on stderr
    bool compute_prefix;            //  Fill the prefixes by GENERATE even where STORE fits
} kvt_bench_host_ttft_opts_t;

//  Run the TTFT part: the prefix on NVMe under 'groups' layer groups and
//  under 1 (whole blocks), two runtimes one after the other, beside raw
//  disk read alone and compute alone. Returns the exit code (0 or 1).
int
    kvt_bench_host_ttft_run (const kvt_bench_host_ttft_opts_t *opts);

#endif
