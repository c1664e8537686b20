/*  =========================================================================
    test_nvme_group_commit - with sync_on_ack, writes that complete
    together share their flushes, and an ack still means durable

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Drives kvt_nvme_store with sync_on_ack on, queue depth 64, 4 data
    files, both payload paths (direct, bounce):
    - group commit: 2000 writes, 64 in flight, in batches that complete
      together on the device (so the check holds on any disk): every one
      acknowledged,
      and far fewer flushes than writes: at least 8 writes per group
      commit, each group flushing at most the 4 data files, so at least 4
      writes per fdatasync; then 2000 more as a continuous storm;
    - the baseline, sync_per_write: one flush per data part (syncs >=
      writes), the same blocks acknowledged;
    - a journal append that fails (ENOSPC injected) fails every write of
      its group and no other, and so does a group data sync that fails
      (EIO injected; grouped mode only); none of those comes back after a
      restart;
    - restart: every acknowledged block is recovered and reads back
      byte-exact.
    (That an ack survives the death of the process mid-storm, with group
    commit, is test_nvme_crash's sync_on_ack rounds.)
    Directory: $KVT_TEST_NVME_DIR or a temp dir under /var/tmp.
    Exit 0 pass, 1 fail, 77 skip.
@end
*/

#include <inttypes.h>
#include <sys/stat.h>
#include "nvme_test_util.h"

#define T_BLOCK      16384          //  Payload bytes per block
#define T_COUNT      2000           //  Writes per storm
#define T_QD         64             //  Queue depth
#define T_FILES      4              //  Data files

static kvt_nvme_store_t *
t_open (const char *dir, bool sync_per_write, uint8_t *arena, size_t arena_bytes)
{
    const char *dirs [1] = { dir };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = T_BLOCK, .capacity_blocks = T_COUNT,
        .queue_depth = T_QD, .files_per_dir = T_FILES, .sync_on_ack = true,
        .sync_per_write = sync_per_write, .buffered_fallback = true
    };
    return t_store_open (&config, arena, arena_bytes);
}

//  Write (or read back and compare) slots 0..T_COUNT-1, T_QD in flight;
//  block s holds seed s + 'version'. rc per slot into rcs. With
//  'batches', a full queue is submitted, left 20 ms to complete on the
//  device before the first reap, and refilled only once all of it is
//  reaped: its writes complete together whatever the device's speed.
static void
t_storm (kvt_nvme_store_t *store, bool write, uint8_t *bufs, uint64_t version, int *rcs,
         bool batches)
{
    int next = 0, done_total = 0;
    int free_bufs [T_QD], free_count = T_QD;
    int buf_of [T_COUNT];
    for (int i = 0; i < T_QD; i++)
        free_bufs [i] = i;
    while (done_total < T_COUNT) {
        bool refill = !batches || free_count == T_QD;
        int prepared = 0;
        while (refill && next < T_COUNT && free_count > 0) {
            int b = free_bufs [--free_count];
            uint8_t *buf = bufs + (size_t) b * T_BLOCK;
            uint64_t hash = (uint64_t) next << 16 | version;
            int rc;
            if (write) {
                t_fill (buf, T_BLOCK, (uint64_t) next + version);
                rc = kvt_nvme_prep_write (store, (uint64_t) next, hash, buf, (uint64_t) next);
            }
            else
                rc = kvt_nvme_prep_read (store, (uint64_t) next, hash, buf, (uint64_t) next);
            if (rc) {
                rcs [next++] = rc;  //  A miss at prep (a write that failed)
                free_bufs [free_count++] = b;
                done_total++;
                continue;
            }
            buf_of [next++] = b;
            prepared++;
        }
        kvt_nvme_submit (store);
        if (batches && prepared)
            usleep (20000);
        kvt_nvme_store_wait (store, 5000);
        kvt_nvme_done_t done [16];
        int n = kvt_nvme_reap (store, done, 16);
        for (int i = 0; i < n; i++) {
            int s = (int) done [i].tag;
            rcs [s] = done [i].rc;
            uint8_t *buf = bufs + (size_t) buf_of [s] * T_BLOCK;
            if (!write && done [i].rc == 0) {
                uint8_t expect [T_BLOCK];
                t_fill (expect, T_BLOCK, (uint64_t) s + version);
                t_check (memcmp (buf, expect, T_BLOCK) == 0, "slot %d read back wrong", s);
            }
            free_bufs [free_count++] = buf_of [s];
        }
        done_total += n > 0? n: 0;
    }
}

//  One mode on one payload path. Returns the syncs the storm asked for.
static uint64_t
t_mode (const char *dir, bool sync_per_write, bool direct)
{
    size_t arena_bytes = (size_t) T_QD * T_BLOCK;
    uint8_t *arena = t_arena_new (arena_bytes);
    kvt_nvme_store_t *store = t_open (dir, sync_per_write, direct? arena: NULL, arena_bytes);
    static int rcs [T_COUNT];
    t_storm (store, true, arena, 1, rcs, true);
    int acked = 0;
    for (int s = 0; s < T_COUNT; s++)
        acked += rcs [s] == 0;
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (acked == T_COUNT && stats.writes == T_COUNT, "%d acked", acked);
    t_check ((stats.direct_ops > 0) == direct, "payload path");
    if (sync_per_write)
        t_check (stats.syncs >= stats.writes && stats.sync_groups == 0,
                 "per write: %" PRIu64 " syncs for %" PRIu64 " writes", stats.syncs,
                 stats.writes);
    else {
        t_check (stats.sync_groups * 8 <= stats.writes && stats.sync_groups > 0
                 && stats.syncs <= stats.sync_groups * T_FILES
                 && stats.syncs * 4 <= stats.writes,
                 "grouped: %" PRIu64 " syncs in %" PRIu64 " groups for %" PRIu64 " writes",
                 stats.syncs, stats.sync_groups, stats.writes);
    }
    uint64_t syncs = stats.syncs;
    printf ("  %-6s %-9s: %" PRIu64 " writes acknowledged, %" PRIu64 " syncs in %" PRIu64
            " groups, %" PRIu64 " journal appends\n", direct? "direct": "bounce",
            sync_per_write? "per write": "grouped", stats.writes, stats.syncs,
            stats.sync_groups, stats.journal_writes);

    //  A failed append fails its whole group, and only that group; so
    //  does a failed group data sync (there is none in per-write mode)
    kvt_nvme_store_inject_fault (store, KVT_NVME_FAULT_JOURNAL, ENOSPC, 1);
    kvt_nvme_store_inject_fault (store, KVT_NVME_FAULT_SYNC, EIO, 1);
    t_storm (store, true, arena, 2, rcs, false);
    int enospc = 0, eio = 0, other = 0;
    for (int s = 0; s < T_COUNT; s++) {
        enospc += rcs [s] == -ENOSPC;
        eio += rcs [s] == -EIO;
        other += rcs [s] != 0 && rcs [s] != -ENOSPC && rcs [s] != -EIO;
    }
    int failed = enospc + eio;
    kvt_nvme_store_stats (store, &stats);
    t_check (enospc > 0 && other == 0 && (sync_per_write? eio == 0: eio > 0)
             && stats.enospc == (uint64_t) enospc && stats.io_errors == (uint64_t) failed,
             "%d ENOSPC, %d EIO, %d other, counters enospc %" PRIu64 " io_errors %" PRIu64,
             enospc, eio, other, stats.enospc, stats.io_errors);
    static int failed_before [T_COUNT];
    memcpy (failed_before, rcs, sizeof (rcs));
    kvt_nvme_store_destroy (&store);

    //  Restart: the acknowledged version 2 blocks are back, byte-exact;
    //  the failed ones are not (their slot's last record is version 1,
    //  whose bytes were overwritten: listed, then refused at first read)
    store = t_open (dir, sync_per_write, direct? arena: NULL, arena_bytes);
    uint64_t version_2 = 0;
    for (uint64_t i = 0; i < kvt_nvme_store_recovered_count (store); i++) {
        uint64_t slot, hash;
        kvt_nvme_store_recovered (store, i, &slot, &hash);
        version_2 += (hash & 0xFFFF) == 2;
    }
    t_check (version_2 == (uint64_t) (T_COUNT - failed), "recovered %" PRIu64 " of %d",
             version_2, T_COUNT - failed);
    t_storm (store, false, arena, 2, rcs, false);
    for (int s = 0; s < T_COUNT; s++)
        t_check (failed_before [s]? rcs [s] == KVT_EMISS: rcs [s] == 0,
                 "slot %d: %s after restart", s, kvt_strerror (rcs [s]));
    printf ("  %-6s %-9s: a failed append failed %d writes, a failed group sync %d; "
            "after restart %" PRIu64 " blocks back, byte-exact\n", direct? "direct": "bounce",
            sync_per_write? "per write": "grouped", enospc, eio, version_2);
    kvt_nvme_store_destroy (&store);
    munmap (arena, arena_bytes);
    return syncs;
}

int
main (void)
{
    t_quiet_log ();
    char path [512];
    char *dir = t_scratch_new ("test_nvme_group_commit", "group", path, sizeof (path));
    if (!dir)
        return T_EXIT_SKIP;
    for (int mask = 0; mask < 4; mask++) {
        bool direct = mask & 1, per_write = (mask >> 1) & 1;
        char sub [600];
        snprintf (sub, sizeof (sub), "%s/%d", dir, mask);
        mkdir (sub, 0755);
        t_mode (sub, per_write, direct);
    }
    t_scratch_remove ("test_nvme_group_commit", dir);
    return t_verdict ("test_nvme_group_commit");
}
