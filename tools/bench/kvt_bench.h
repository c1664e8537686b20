/*  =========================================================================
    kvt_bench - shared reporting for every `kvtier bench` subcommand

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Every figure is printed on one line beside its baseline from the same
    run and their ratio:
        lookup_rtt_ipc_us        31.20 us   baseline zmq_reqrep_ipc_us  24.10 us   ratio 1.29
    With --json the same figures come out as one JSON document on stdout.
    Whether a higher or lower value is better is part of the figure.
@end
*/

#ifndef KVT_BENCH_H_INCLUDED
#define KVT_BENCH_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _kvt_bench_report_t kvt_bench_report_t;

//  Start a report for bench 'name'; json selects the output format.
kvt_bench_report_t *
    kvt_bench_report_new (const char *name, bool json);

//  Add one figure: 'value' in 'unit' beside 'baseline' (same unit) named
//  'baseline_name'. ratio = value / baseline. Printed at once in text mode.
void
    kvt_bench_report_add (kvt_bench_report_t *self, const char *figure, double value,
                          const char *unit, const char *baseline_name, double baseline);

//  Add a note (context such as sizes, device, config) to the report.
void
    kvt_bench_report_note (kvt_bench_report_t *self, const char *key, const char *value);

//  Print the JSON document (json mode) and destroy; nulls the pointer.
void
    kvt_bench_report_finish (kvt_bench_report_t **self_p);

//  Subcommand entry points: `kvtier bench <what> [options]`.
//  Helpers every bench uses: monotonic time in microseconds; qsort order
//  for doubles (ascending); the median of 'count' values (sorted in
//  place; 0 for none).
double
    kvt_bench_now_us (void);
int
    kvt_bench_compare_double (const void *a, const void *b);
double
    kvt_bench_median (double *values, size_t count);

//  Benches that time the runtime (kvt_bench_start.c): start every actor
//  in this process on 'config' (not kept); 'who' names the bench in the
//  error. Returns the runtime, or NULL with the reason printed.
typedef struct _kvt_config_t kvt_config_t;
typedef struct _kvt_runtime_t kvt_runtime_t;
kvt_runtime_t *
    kvt_bench_runtime_start (const kvt_config_t *config, const char *who);

#ifdef KVT_WITH_CUDA
//  GPU benches (kvt_bench_kernels.c): fill 'bytes' of device memory with
//  random bf16 in [-1, 1) drawn from 'seed'; exits on a CUDA failure.
void
    kvt_bench_fill_device (void *device, size_t bytes, uint64_t *seed);
#endif

int kvt_bench_runtime_main (int argc, char **argv);    //  LOOKUP round trip vs raw ZeroMQ
int kvt_bench_kernels_main (int argc, char **argv);    //  GPU kernels vs cuDNN/cuBLAS
int kvt_bench_transfer_main (int argc, char **argv);   //  host<->GPU block movement
int kvt_bench_nvme_main (int argc, char **argv);       //  tier_nvme vs raw io_uring
int kvt_bench_host_main (int argc, char **argv);       //  host tier vs memcpy
int kvt_bench_model_main (int argc, char **argv);      //  GPU model: prefill, batching, streaming
int kvt_bench_shard_main (int argc, char **argv);      //  layer sharding: TTFT, decode vs F = 1

#endif
