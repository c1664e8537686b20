/*  =========================================================================
    kvt_bench_diskstat - what the block device under a folder was asked to
    do (see the header)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_bench_diskstat.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

void
kvt_bench_diskstat_read (const char *dir, kvt_bench_diskstat_t *stat)
{
    memset (stat, 0, sizeof (*stat));
    struct stat info;
    if (!dir || lstat (dir, &info) != 0)
        return;
    //  A partition has its own stat file under the same name
    char path [96];
    snprintf (path, sizeof (path), "/sys/dev/block/%u:%u/stat", major (info.st_dev),
              minor (info.st_dev));
    FILE *file = fopen (path, "r");
    if (!file)
        return;
    //  Documentation/block/stat.rst: reads (4 fields), writes (4), in
    //  flight, io_ticks, time in queue, discards (4), flushes (2)
    uint64_t field [17] = { 0 };
    int got = 0;
    while (got < 17 && fscanf (file, "%" SCNu64, &field [got]) == 1)
        got++;
    fclose (file);
    if (got < 11)
        return;
    *stat = (kvt_bench_diskstat_t) {
        .known = true,
        .reads = field [0], .read_merges = field [1], .read_sectors = field [2],
        .read_ms = field [3],
        .writes = field [4], .write_merges = field [5], .write_sectors = field [6],
        .write_ms = field [7],
        .busy_ms = field [9], .flushes = got >= 16? field [15]: 0
    };
}

void
kvt_bench_diskstat_add (kvt_bench_diskstat_t *sum, const kvt_bench_diskstat_t *before,
                        const kvt_bench_diskstat_t *after)
{
    sum->known = sum->known && before->known && after->known;
    if (!sum->known)
        return;
    sum->reads += after->reads - before->reads;
    sum->read_merges += after->read_merges - before->read_merges;
    sum->read_sectors += after->read_sectors - before->read_sectors;
    sum->read_ms += after->read_ms - before->read_ms;
    sum->writes += after->writes - before->writes;
    sum->write_merges += after->write_merges - before->write_merges;
    sum->write_sectors += after->write_sectors - before->write_sectors;
    sum->write_ms += after->write_ms - before->write_ms;
    sum->busy_ms += after->busy_ms - before->busy_ms;
    sum->flushes += after->flushes - before->flushes;
}

void
kvt_bench_diskstat_print (const char *phase, const kvt_bench_diskstat_t *before,
                          const kvt_bench_diskstat_t *after)
{
    if (!before->known || !after->known)
        return;
    uint64_t writes = after->writes - before->writes;
    uint64_t reads = after->reads - before->reads;
    fprintf (stderr, "  %-6s disk: %" PRIu64 " writes of %.0f KiB (%" PRIu64 " merged, %"
             PRIu64 " ms at the device), %" PRIu64 " reads of %.0f KiB (%" PRIu64
             " merged, %" PRIu64 " ms), %" PRIu64 " flushes, busy %" PRIu64 " ms\n", phase,
             writes, writes? (after->write_sectors - before->write_sectors) / 2.0 / writes: 0,
             after->write_merges - before->write_merges, after->write_ms - before->write_ms,
             reads, reads? (after->read_sectors - before->read_sectors) / 2.0 / reads: 0,
             after->read_merges - before->read_merges, after->read_ms - before->read_ms,
             after->flushes - before->flushes, after->busy_ms - before->busy_ms);
}
