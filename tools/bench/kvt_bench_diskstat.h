/*  =========================================================================
    kvt_bench_diskstat - what the block device under a folder was asked to
    do: requests, merges, sectors and busy time from /sys/dev/block

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Two of a device's counter snapshots, taken around a timed phase, say
    how the kernel carried the phase's I/O to the disk: how many write
    requests for how many bytes (so how many the block layer merged), and
    how long they were at the device. `bench host --verbose` prints them
    for the demotion and for raw writes side by side, so a gap between the
    two can be read in requests and bytes, not guessed at (issue #4).
@end
*/

#ifndef KVT_BENCH_DISKSTAT_H_INCLUDED
#define KVT_BENCH_DISKSTAT_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    bool known;                     //  The kernel said (a block device under the folder)
    uint64_t reads, read_merges, read_sectors, read_ms;
    uint64_t writes, write_merges, write_sectors, write_ms;
    uint64_t busy_ms;               //  io_ticks: time with any request at the device
    uint64_t flushes;               //  Flush requests (kernels from 5.5)
} kvt_bench_diskstat_t;

//  The counters of the device holding 'dir' into *stat (known = false
//  where there is none: tmpfs, overlay on no device, no /sys).
void
    kvt_bench_diskstat_read (const char *dir, kvt_bench_diskstat_t *stat);

//  Add the counts between two snapshots to *sum (sum->known stays true
//  only while every pair was known; a zeroed sum with known = true starts).
void
    kvt_bench_diskstat_add (kvt_bench_diskstat_t *sum, const kvt_bench_diskstat_t *before,
                            const kvt_bench_diskstat_t *after);

//  One line for the phase between two snapshots: requests, their mean
//  size, merges, flushes, busy time; nothing where either is unknown.
void
    kvt_bench_diskstat_print (const char *phase, const kvt_bench_diskstat_t *before,
                              const kvt_bench_diskstat_t *after);

#endif
