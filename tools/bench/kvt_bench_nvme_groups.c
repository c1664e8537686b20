/*  =========================================================================
    kvt_bench_nvme_groups - `kvtier bench nvme`'s layer-group figure: the
    store reading blocks in layer groups, group-major, as a stream
    promotion does (issue #4), beside whole-block reads of the same blocks

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "kvt_error.h"
#include "kvt_nvme_store.h"
#include "kvt_bench_nvme_int.h"

#define S_BLOCK_BYTES   (2u << 20)  //  A 16-token block of Llama-3-8B
#define S_LAYERS        32          //  Its layers
#define S_GROUPS        4           //  migration/nvme_layer_groups' default
#define S_MAX_BLOCKS    512         //  1 GiB of blocks at most

//  Write every block once (groups -1), or read every block once: whole
//  (groups 0) or group-major in 'groups' groups (group 0 of every block,
//  then group 1, ...); at most 'qd' I/Os in flight, each block from or into
//  its own place in 'buf'. Returns GB/s of block bytes.
static double
s_run_all (kvt_nvme_store_t *store, uint64_t blocks, uint8_t *buf, int groups, int qd)
{
    uint64_t items = blocks * (uint64_t) (groups > 0? groups: 1), next = 0, done = 0;
    int in_flight = 0;
    double start = kvt_bench_nvme_seconds ();
    while (done < items) {
        while (next < items && in_flight < qd) {
            uint64_t block = next % blocks;
            uint8_t *at = buf + block * S_BLOCK_BYTES;
            uint64_t hash = 0x6B0C000000000000ULL + block;
            int rc = groups < 0? kvt_nvme_prep_write (store, block, hash, at, next)
                   : groups == 0? kvt_nvme_prep_read (store, block, hash, at, next)
                   : kvt_nvme_prep_read_group (store, block, hash, at, (int) (next / blocks),
                                               next);
            if (rc == -EBUSY || rc == -EAGAIN)
                break;
            if (rc) {
                fprintf (stderr, "kvtier bench nvme: groups: prep: %s\n", kvt_strerror (rc));
                exit (1);
            }
            next++;
            in_flight++;
        }
        kvt_nvme_submit (store);
        kvt_nvme_store_wait (store, 1000);
        kvt_nvme_done_t completions [16];
        int n = kvt_nvme_reap (store, completions, 16);
        for (int i = 0; i < n; i++)
            if (completions [i].rc) {
                fprintf (stderr, "kvtier bench nvme: groups: %s\n",
                         kvt_strerror (completions [i].rc));
                exit (1);
            }
        if (n > 0) {
            in_flight -= n;
            done += (uint64_t) n;
        }
    }
    return (double) blocks * S_BLOCK_BYTES / (kvt_bench_nvme_seconds () - start) / 1e9;
}

void
kvt_bench_nvme_groups (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts)
{
    uint64_t blocks = opts->data_bytes / S_BLOCK_BYTES;
    blocks = blocks < (uint64_t) opts->qd? (uint64_t) opts->qd
           : blocks > S_MAX_BLOCKS? S_MAX_BLOCKS: blocks;
    size_t bytes = blocks * S_BLOCK_BYTES;
    uint8_t *buf = (uint8_t *) kvt_bench_nvme_map (bytes);      //  The "host arena"
    kvt_bench_nvme_fill (buf, bytes, 41);
    char dir [1024];
    snprintf (dir, sizeof (dir), "%s/groups", opts->dir);
    mkdir (dir, 0755);
    const char *dirs [1] = { dir };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = S_BLOCK_BYTES, .capacity_blocks = blocks,
        .queue_depth = opts->qd, .files_per_dir = opts->files_per_dir,
        .buffered_fallback = true, .checksum_threads = opts->checksum_threads,
        .layers = S_LAYERS, .layer_groups = S_GROUPS
    };
    kvt_nvme_store_t *store = kvt_nvme_store_new (&config);
    kvt_nvme_store_register_buffer (store, buf, bytes);
    int rc = kvt_nvme_store_open (store);
    if (rc) {
        fprintf (stderr, "kvtier bench nvme: groups: cannot open the store in %s: %s\n", dir,
                 kvt_strerror (rc));
        exit (1);
    }
    s_run_all (store, blocks, buf, -1, opts->qd);
    int reps = opts->reps;
    double *whole = (double *) calloc ((size_t) reps, sizeof (double));
    double *grouped = (double *) calloc ((size_t) reps, sizeof (double));
    kvt_nvme_store_stats_t before, after;
    kvt_nvme_store_stats (store, &before);
    for (int rep = 0; rep < reps; rep++) {
        //  Alternate which goes first, so the device's drift favours neither
        if (rep % 2 == 0) {
            whole [rep] = s_run_all (store, blocks, buf, 0, opts->qd);
            grouped [rep] = s_run_all (store, blocks, buf, S_GROUPS, opts->qd);
        }
        else {
            grouped [rep] = s_run_all (store, blocks, buf, S_GROUPS, opts->qd);
            whole [rep] = s_run_all (store, blocks, buf, 0, opts->qd);
        }
    }
    kvt_nvme_store_stats (store, &after);
    if (after.checksum_failures != before.checksum_failures || after.group_fallbacks) {
        fprintf (stderr, "kvtier bench nvme: groups: checksum failures or fallbacks\n");
        exit (1);
    }
    char note [160];
    snprintf (note, sizeof (note), "%" PRIu64 " blocks of 2 MiB, %d layers in %d groups, "
              "qd %d; %.2f of %d group reads per block skipped the header", blocks, S_LAYERS,
              S_GROUPS, opts->qd,
              (double) (after.group_header_hits - before.group_header_hits)
              / (double) (blocks * (uint64_t) reps), S_GROUPS);
    kvt_bench_report_note (report, "groups", note);
    kvt_bench_report_add (report, "store_read_groups4_2m_gbps",
                          kvt_bench_nvme_median (grouped, reps), "GB/s",
                          "store_read_whole_2m_gbps", kvt_bench_nvme_median (whole, reps));
    free (whole);
    free (grouped);
    kvt_nvme_store_destroy (&store);
    kvt_bench_nvme_unmap (buf, bytes);
    char command [1100];
    snprintf (command, sizeof (command), "rm -rf '%s'", dir);
    if (system (command) != 0)
        fprintf (stderr, "kvtier bench nvme: cannot remove %s\n", dir);
}
