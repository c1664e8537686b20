/*  =========================================================================
    kvt_bench_nvme_durability - `kvtier bench nvme`: what acknowledged
    writes cost, and how long a restart takes to find them

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    sync_on_ack writes with group commit beside one sync per write, same
    store options, same run; and a restart's index rebuild with a given
    count of blocks on disk (issue #4: 1 million blocks back in under 5 s).
@end
*/

#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "kvt_error.h"
#include "kvt_nvme_store.h"
#include "kvt_bench_nvme_int.h"

void
kvt_bench_nvme_sync (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts)
{
    size_t block_bytes = opts->sync_block_bytes;
    int qd = opts->sync_qd;
    uint64_t blocks = opts->sync_bytes / block_bytes;
    if (blocks < (uint64_t) qd)
        blocks = (uint64_t) qd;
    size_t set_bytes = (size_t) kvt_bench_nvme_store_ops (qd) * block_bytes;
    uint8_t *registered = (uint8_t *) kvt_bench_nvme_map (set_bytes);
    for (int i = 0; i < kvt_bench_nvme_store_ops (qd); i++)
        kvt_bench_nvme_fill (registered + (size_t) i * block_bytes, block_bytes, (uint64_t) i + 5);
    kvt_bench_nvme_opts_t mode [2] = { *opts, *opts };  //  0: grouped, 1: per write
    kvt_nvme_store_t *stores [2];
    char dirs [2][1024];
    for (int m = 0; m < 2; m++) {
        mode [m].sync_on_ack = true;
        mode [m].sync_per_write = m == 1;
        snprintf (dirs [m], sizeof (dirs [m]), "%s/sync-%s", opts->dir,
                  m? "per-write": "grouped");
        mkdir (dirs [m], 0755);
        stores [m] = kvt_bench_nvme_store_open (&mode [m], dirs [m], block_bytes, blocks, qd,
                                                registered, set_bytes);
        //  Allocate
        kvt_bench_nvme_store_run (stores [m], blocks, true, registered, block_bytes, qd);
    }
    double *v [2];
    kvt_nvme_store_stats_t before [2], after [2];
    for (int m = 0; m < 2; m++) {
        v [m] = (double *) calloc ((size_t) opts->reps, sizeof (double));
        kvt_nvme_store_stats (stores [m], &before [m]);
    }
    for (int rep = 0; rep < opts->reps; rep++)
        for (int k = 0; k < 2; k++) {
            int m = (rep + k) % 2;
            v [m][rep] = kvt_bench_nvme_store_run (stores [m], blocks, true, registered,
                                                   block_bytes, qd);
        }
    char note [256], size_name [32], figure [96], base [96];
    double syncs_per_write [2];
    for (int m = 0; m < 2; m++) {
        kvt_nvme_store_stats (stores [m], &after [m]);
        uint64_t writes = after [m].writes - before [m].writes;
        syncs_per_write [m] = (double) (after [m].syncs - before [m].syncs)
                            / (double) (writes? writes: 1);
        if (opts->verbose)
            for (int rep = 0; rep < opts->reps; rep++)
                fprintf (stderr, "# sync %s: %.3f GB/s\n", m? "per write": "grouped",
                         v [m][rep]);
    }
    snprintf (size_name, sizeof (size_name), "%zuk", block_bytes >> 10);
    snprintf (note, sizeof (note), "%" PRIu64 " blocks of %s x %d runs, queue depth %d, "
              "direct; flushes per write: grouped %.3f (%.1f writes per group), per write "
              "%.3f", blocks, size_name, opts->reps, qd, syncs_per_write [0],
              (double) (after [0].writes - before [0].writes)
              / (double) (after [0].sync_groups - before [0].sync_groups + 1e-9),
              syncs_per_write [1]);
    kvt_bench_report_note (report, "sync_on_ack", note);
    snprintf (figure, sizeof (figure), "store_write_sync_grouped_%s_gbps", size_name);
    snprintf (base, sizeof (base), "store_write_sync_per_write_%s_gbps", size_name);
    kvt_bench_report_add (report, figure, kvt_bench_nvme_median (v [0], opts->reps), "GB/s", base,
                          kvt_bench_nvme_median (v [1], opts->reps));
    for (int m = 0; m < 2; m++) {
        kvt_nvme_store_destroy (&stores [m]);
        free (v [m]);
        kvt_bench_nvme_remove_tree (dirs [m]);
    }
    kvt_bench_nvme_unmap (registered, set_bytes);
}

//  Restart with 'count' 4 KiB blocks on disk.
void
kvt_bench_nvme_recover (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts, uint64_t count)
{
    char dir [1024];
    snprintf (dir, sizeof (dir), "%s/recover", opts->dir);
    mkdir (dir, 0755);
    size_t block_bytes = 4096;
    int qd = 256;
    size_t set_bytes = (size_t) kvt_bench_nvme_store_ops (qd) * block_bytes;
    uint8_t *buf = (uint8_t *) kvt_bench_nvme_map (set_bytes);
    kvt_bench_nvme_fill (buf, set_bytes, 3);
    kvt_nvme_store_t *store = kvt_bench_nvme_store_open (opts, dir, block_bytes, count, qd, buf,
                                                         set_bytes);
    double start = kvt_bench_nvme_seconds ();
    double rate = kvt_bench_nvme_store_run (store, count, true, buf, block_bytes, qd);
    double fill_s = kvt_bench_nvme_seconds () - start;
    kvt_nvme_store_destroy (&store);
    char note [128];
    snprintf (note, sizeof (note), "%" PRIu64 " blocks of 4 KiB written in %.1f s "
              "(%.0f blocks/s, %.2f GB/s)", count, fill_s, count / fill_s, rate);
    kvt_bench_report_note (report, "recover_fill", note);
    //  Cold start where allowed: drop the page cache so the journal comes off the disk
    int drop = open ("/proc/sys/vm/drop_caches", O_WRONLY);
    bool cold = false;
    if (drop >= 0) {
        sync ();
        cold = write (drop, "3", 1) == 1;
        close (drop);
    }
    kvt_nvme_store_t *again = kvt_bench_nvme_store_open (opts, dir, block_bytes, count, qd,
                                                         NULL, 0);
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (again, &stats);
    uint64_t recovered = kvt_nvme_store_recovered_count (again);
    kvt_nvme_store_destroy (&again);
    if (recovered != count) {
        fprintf (stderr, "kvtier bench nvme: recovered %" PRIu64 " of %" PRIu64 " blocks\n",
                 recovered, count);
        exit (1);
    }
    //  Baseline: read the journal file sequentially, cold as well
    char journal [1100];
    snprintf (journal, sizeof (journal), "%s/kvt-nvme.journal", dir);
    drop = open ("/proc/sys/vm/drop_caches", O_WRONLY);
    if (drop >= 0) {
        if (write (drop, "3", 1) != 1)
            cold = false;
        close (drop);
    }
    int fd = open (journal, O_RDONLY);
    size_t chunk = 8u << 20;
    uint8_t *tmp = (uint8_t *) malloc (chunk);
    start = kvt_bench_nvme_seconds ();
    ssize_t got;
    uint64_t journal_bytes = 0;
    while (fd >= 0 && (got = read (fd, tmp, chunk)) > 0)
        journal_bytes += (uint64_t) got;
    double read_s = kvt_bench_nvme_seconds () - start;
    if (fd >= 0)
        close (fd);
    free (tmp);
    snprintf (note, sizeof (note), "%s, journal %.1f MB, budget 5 s",
              cold? "page cache dropped before each": "page cache NOT dropped (not root)",
              journal_bytes / 1e6);
    kvt_bench_report_note (report, "recover_conditions", note);
    char figure [96];
    snprintf (figure, sizeof (figure), "recover_%" PRIu64 "_blocks_s", count);
    kvt_bench_report_add (report, figure, stats.recovery_us / 1e6, "s",
                          "read_journal_file_s", read_s);
    kvt_bench_nvme_unmap (buf, set_bytes);
    kvt_bench_nvme_remove_tree (dir);
}
