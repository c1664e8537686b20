/*  =========================================================================
    kvt_bench_nvme_store - `kvtier bench nvme` drives the store as
    tier_nvme does

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Opening a kvt_nvme_store for a bench run (the buffered fallback where
    the file system refuses O_DIRECT, said loudly) and moving blocks once
    through it at a given depth at the device, the way kvt_tier_nvme.c
    keeps it fed: used by the block-size runs beside raw io_uring, by the
    layer groups, and by the sync_on_ack and restart runs.
@end
*/

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_error.h"
#include "kvt_nvme_store.h"
#include "kvt_bench_nvme_int.h"

#define S_REAP_BATCH 4              //  Completions per reap before refilling

//  Operations (and caller buffers) a store kept at 'depth' transfers at the
//  device holds: tier_nvme's way (kvt_tier_nvme.c), the depth plus room for
//  completions being checked or waiting to be reaped, so that checking
//  never keeps the device below the depth raw io_uring runs at.
int
kvt_bench_nvme_store_ops (int depth)
{
    return depth + KVT_NVME_COMPLETION_SLACK (depth);
}

//  Move 'blocks' blocks once through the store, 'depth' transfers at the
//  device, as tier_nvme drives it: a new operation is prepared whenever
//  fewer than 'depth' are at the device (kvt_nvme_store_device_inflight),
//  each into a buffer of its own in 'buf' (kvt_bench_nvme_store_ops (depth) of them).
//  Returns GB/s of payload.
double
kvt_bench_nvme_store_run (kvt_nvme_store_t *store, uint64_t blocks, bool write, uint8_t *buf,
                          size_t block_bytes, int depth)
{
    uint64_t next = 0, done = 0;
    int ops = kvt_bench_nvme_store_ops (depth);
    int *free_bufs = (int *) malloc ((size_t) ops * sizeof (int));
    int free_count = ops;
    for (int i = 0; i < ops; i++)
        free_bufs [i] = i;
    double start = kvt_bench_nvme_seconds ();
    while (done < blocks) {
        size_t batch_bytes = 0;
        while (next < blocks && free_count > 0
        &&     kvt_nvme_store_device_inflight (store) < depth) {
            int buf_index = free_bufs [free_count - 1];
            uint8_t *addr = buf + (size_t) buf_index * block_bytes;
            uint64_t hash = 0xB10C000000000000ULL + next;
            int rc = write? kvt_nvme_prep_write (store, next, hash, addr, (uint64_t) buf_index):
                            kvt_nvme_prep_read (store, next, hash, addr, (uint64_t) buf_index);
            if (rc == -EBUSY || rc == -EAGAIN)
                break;
            if (rc) {
                fprintf (stderr, "kvtier bench nvme: prep: %s\n", kvt_strerror (rc));
                exit (1);
            }
            free_count--;
            next++;
            //  Start the device on what is ready while we checksum the rest
            batch_bytes += block_bytes;
            if (batch_bytes >= KVT_BENCH_NVME_SUBMIT_BYTES) {
                kvt_nvme_submit (store);
                batch_bytes = 0;
            }
        }
        int rc = kvt_nvme_submit (store);
        if (rc < 0) {
            fprintf (stderr, "kvtier bench nvme: submit: %s\n", kvt_strerror (rc));
            exit (1);
        }
        //  Reap a few, then refill: the device never waits for a long
        //  run of read verifications. After a wait, refill first: the
        //  reads that landed no longer count as at the device
        kvt_nvme_done_t completions [S_REAP_BATCH];
        int n = kvt_nvme_reap (store, completions, S_REAP_BATCH);
        if (n == 0)
            kvt_nvme_store_wait (store, 1000);
        if (n > 0) {
            for (int i = 0; i < n; i++) {
                if (completions [i].rc) {
                    fprintf (stderr, "kvtier bench nvme: store %s into buffer %" PRIu64
                             ": %s\n", write? "write": "read", completions [i].tag,
                             kvt_strerror (completions [i].rc));
                    exit (1);
                }
                free_bufs [free_count++] = (int) completions [i].tag;
            }
            done += (uint64_t) n;
        }
    }
    double seconds = kvt_bench_nvme_seconds () - start;
    free (free_bufs);
    return (double) blocks * (double) block_bytes / seconds / 1e9;
}

kvt_nvme_store_t *
kvt_bench_nvme_store_open (kvt_bench_nvme_opts_t *opts, const char *dir, size_t block_bytes,
                           uint64_t capacity, int qd, void *region, size_t region_bytes)
{
    const char *dirs [1] = { dir };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = block_bytes,
        .capacity_blocks = capacity, .queue_depth = kvt_bench_nvme_store_ops (qd),
        .files_per_dir = opts->files_per_dir, .sync_on_ack = opts->sync_on_ack,
        .buffered_fallback = opts->buffered, .sync_per_write = opts->sync_per_write,
        .checksum_threads = opts->checksum_threads, .split_writes = opts->split_writes
    };
    kvt_nvme_store_t *store = kvt_nvme_store_new (&config);
    if (region)
        kvt_nvme_store_register_buffer (store, region, region_bytes);
    int rc = kvt_nvme_store_open (store);
    if (rc == -EINVAL && !opts->buffered) {
        fprintf (stderr, "kvtier bench nvme: WARNING: %s refuses O_DIRECT; measuring "
                 "BUFFERED I/O (page cache) instead - use --dir on a real disk\n", dir);
        opts->buffered = true;
        kvt_nvme_store_destroy (&store);
        return kvt_bench_nvme_store_open (opts, dir, block_bytes, capacity, qd, region,
                                          region_bytes);
    }
    if (rc) {
        fprintf (stderr, "kvtier bench nvme: cannot open the store in %s: %s\n", dir,
                 kvt_strerror (rc));
        exit (1);
    }
    return store;
}
