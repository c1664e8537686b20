/*  =========================================================================
    kvt_bench_host_raw - the raw disk baseline of `kvtier bench host`:
    io_uring O_DIRECT block reads of the NVMe tier's own data files

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Registered files and buffer, block-sized reads of slots' payloads
    (slot s: file s mod F, offset (s div F) x stride + 4096, the layout
    kvt_nvme_store documents), 'qd' in flight. Used by kvt_bench_host.c.
    The plain baseline cycles its reads through a buffer of qd blocks; a
    "spread" one (kvt_bench_host_raw_open_spread) gives block k its own
    place in a buffer of many blocks, as the NVMe tier's reads land in one
    host slot each (issue #4: on the CPU VM that alone cost raw reads
    about a fifth of their rate; tools/bench/RESULTS.md).
@end
*/

#ifndef KVT_BENCH_HOST_RAW_H_INCLUDED
#define KVT_BENCH_HOST_RAW_H_INCLUDED

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVT_BENCH_HOST_MAX_FILES 64     //  Data files the raw baseline opens
#define KVT_BENCH_HOST_ALIGN 4096       //  O_DIRECT alignment (and the store's header)
#define KVT_BENCH_HOST_RAW_WRITE_FILES 4    //  Scratch files of the raw writer (the
                                            //  NVMe tier's files_per_dir)

typedef struct {
    struct io_uring ring;           //  Ring with registered files and buffer
    int fds [KVT_BENCH_HOST_MAX_FILES];          //  kvt-nvme-NNN.dat, O_DIRECT, in file order
    int file_count;                 //  Entries in fds
    size_t stride;                  //  Bytes per slot on disk
    size_t block_bytes;             //  Payload per read
    int qd;                         //  Reads in flight
    uint8_t *buffer;                //  buffer_blocks x block_bytes, aligned, registered
    size_t buffer_blocks;           //  qd, or more for a spread baseline
    bool ring_ready;                //  Ring initialised
    bool write;                     //  Writes scratch files instead of reading the store's
} kvt_bench_host_raw_t;

//  Open the store's data files in 'dir' for reads of 'block_bytes' with
//  'qd' in flight. Returns 0 or a negative code (reason printed).
int
    kvt_bench_host_raw_open (kvt_bench_host_raw_t *raw, const char *dir, size_t block_bytes,
                             int qd);

//  The same with a buffer of 'buffer_blocks' blocks (at least qd, at most
//  1 GiB in all: io_uring's limit for one registered buffer): slot s is
//  read into block s mod buffer_blocks of it.
int
    kvt_bench_host_raw_open_spread (kvt_bench_host_raw_t *raw, const char *dir,
                                    size_t block_bytes, int qd, size_t buffer_blocks);

//  The raw write baseline: 4 scratch files kvt-raw-NNN.dat in 'dir', laid
//  out as the store's (slot s in file s mod 4, payload after a 4 KiB
//  header place), each slot written once before any timed run, from a
//  buffer of 'buffer_blocks' blocks as a reader's (qd: plain; more: slot s
//  from block s mod buffer_blocks, as a demotion's payloads come from a
//  host slot each). Writers of one folder share its files. Returns 0 or a
//  negative code (reason printed).
int
    kvt_bench_host_raw_open_writer (kvt_bench_host_raw_t *raw, const char *dir,
                                    size_t block_bytes, int qd, uint64_t blocks,
                                    size_t buffer_blocks);

//  Read (a writer: write) the payloads of slots 0..blocks-1; *us gets the
//  time. Returns 0 or a negative code (reason printed).
int
    kvt_bench_host_raw_run (kvt_bench_host_raw_t *raw, uint64_t blocks, double *us);

//  The same with 'depth' in flight, 1 to the qd it was opened with (a
//  sweep of depths on one set of files and buffers). Returns 0 or a
//  negative code (-EINVAL for a depth out of that range).
int
    kvt_bench_host_raw_run_at (kvt_bench_host_raw_t *raw, uint64_t blocks, int depth,
                               double *us);

//  Wait until the device holds every write to the data files (fdatasync
//  of each): a timed read phase then starts from a quiet disk, not beside
//  the write-back of a demotion the tier has just acknowledged (a virtual
//  disk may acknowledge from its host's cache). *us gets the wait.
//  Returns 0 or -errno.
int
    kvt_bench_host_raw_settle (kvt_bench_host_raw_t *raw, double *us);

//  Close files and ring, free the buffer; safe on a zeroed or half-open one.
void
    kvt_bench_host_raw_close (kvt_bench_host_raw_t *raw);

#endif
