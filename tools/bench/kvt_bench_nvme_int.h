/*  =========================================================================
    kvt_bench_nvme_int - what the files of `kvtier bench nvme` share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    `kvtier bench nvme` is two files: kvt_bench_nvme.c (options, the store
    beside raw io_uring at each block size, sync_on_ack, restart) and
    kvt_bench_nvme_checksum.c (xxh3 on one core and the store's checksum
    pool on many, beside memcpy). For those two files only.
@end
*/

#ifndef KVT_BENCH_NVME_INT_H_INCLUDED
#define KVT_BENCH_NVME_INT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt_bench.h"

#define KVT_BENCH_NVME_MAX_THREADS 64     //  Largest --threads

typedef struct {
    const char *dir;                //  Directory under test
    size_t data_bytes;              //  Bytes per run per direction
    int qd;                         //  Queue depth, store and raw
    int reps;                       //  Runs per figure (median)
    int files_per_dir;              //  Data files
    bool sync_on_ack;               //  Store and raw writes with O_DSYNC
    bool buffered;                  //  O_DIRECT refused: buffered fallback
    bool json;                      //  JSON output
    bool verbose;                   //  Every run's GB/s on stderr
    int threads;                    //  Checksum pool sizes 1..threads
    size_t sync_bytes;              //  Bytes per sync_on_ack write run
    size_t sync_block_bytes;        //  Block size of those runs
    int sync_qd;                    //  Queue depth of those runs
    const char *only;               //  NULL, "checksum", "sync", "groups" or "sizes"
    bool sync_per_write;            //  Store: O_DSYNC per write, no group commit
    int checksum_threads;           //  Store: checksum threads (0 auto, 1 inline)
} kvt_bench_nvme_opts_t;

//  Layer groups (kvt_bench_nvme_groups.c): 2 MiB blocks read in 4 layer
//  groups, group-major, beside whole-block reads, same store, same run.
void
    kvt_bench_nvme_groups (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts);

//  Monotonic time in seconds.
double
    kvt_bench_nvme_seconds (void);

//  Median of 'count' values (sorts them in place).
double
    kvt_bench_nvme_median (double *values, int count);

//  Fill 'bytes' of 'buf' with a deterministic pattern from 'seed'.
void
    kvt_bench_nvme_fill (uint8_t *buf, size_t bytes, uint64_t seed);

//  Map 'bytes' of prefaulted anonymous memory (on huge pages with
//  --hugepages); exits if it cannot.
void *
    kvt_bench_nvme_map (size_t bytes);

//  Unmap what kvt_bench_nvme_map (bytes) returned.
void
    kvt_bench_nvme_unmap (void *p, size_t bytes);

//  xxh3-64 and memcpy on one core over 64 MiB out of cache.
void
    kvt_bench_nvme_hash (kvt_bench_report_t *report);

//  The store's checksum pool on 1..opts->threads workers beside memcpy on
//  as many threads, 256 MiB out of cache in 1 MiB jobs.
void
    kvt_bench_nvme_checksum_pool (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts);

#endif
