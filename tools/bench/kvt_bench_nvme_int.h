/*  =========================================================================
    kvt_bench_nvme_int - what the files of `kvtier bench nvme` share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    `kvtier bench nvme` is kvt_bench_nvme.c (options, the store beside raw
    io_uring at each block size), kvt_bench_nvme_store.c (the store opened
    and driven as tier_nvme drives it), kvt_bench_nvme_durability.c
    (sync_on_ack, restart), kvt_bench_nvme_groups.c (layer groups) and
    kvt_bench_nvme_checksum.c (xxh3 on one core and the store's checksum
    pool on many, beside memcpy). For those files only.
@end
*/

#ifndef KVT_BENCH_NVME_INT_H_INCLUDED
#define KVT_BENCH_NVME_INT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt_bench.h"
#include "kvt_nvme_store.h"

#define KVT_BENCH_NVME_MAX_THREADS 64     //  Largest --threads
#define KVT_BENCH_NVME_SUBMIT_BYTES (1u << 20)    //  Submit once this much is prepared

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
    bool split_writes;              //  Store: direct writes as two I/Os (header, payload)
    int checksum_threads;           //  Store: checksum threads (0 auto, 1 inline)
} kvt_bench_nvme_opts_t;

//  Remove what a bench made under the directory (its data files are big).
void
    kvt_bench_nvme_remove_tree (const char *path);
//  Operations (and caller buffers) a store kept at 'depth' transfers at the
//  device holds (kvt_bench_nvme_store.c).
int
    kvt_bench_nvme_store_ops (int depth);
//  A store in 'dir' for 'capacity' blocks of 'block_bytes' at depth 'qd',
//  with 'region' registered (may be NULL); falls back to buffered I/O
//  (and sets opts->buffered) where O_DIRECT is refused; exits on failure.
kvt_nvme_store_t *
    kvt_bench_nvme_store_open (kvt_bench_nvme_opts_t *opts, const char *dir,
                               size_t block_bytes, uint64_t capacity, int qd, void *region,
                               size_t region_bytes);
//  Move 'blocks' blocks once through the store, 'depth' transfers at the
//  device, each into its own buffer of 'buf'. Returns GB/s of payload.
double
    kvt_bench_nvme_store_run (kvt_nvme_store_t *store, uint64_t blocks, bool write,
                              uint8_t *buf, size_t block_bytes, int depth);
//  sync_on_ack writes: group commit beside one sync per write
//  (kvt_bench_nvme_durability.c).
void
    kvt_bench_nvme_sync (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts);
//  Restart with 'count' 4 KiB blocks on disk: the index rebuild's time.
void
    kvt_bench_nvme_recover (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts,
                            uint64_t count);
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
