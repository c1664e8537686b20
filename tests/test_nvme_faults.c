/*  =========================================================================
    test_nvme_faults - corruption on disk, I/O errors, a full file system

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Drives kvt_nvme_store through what a disk does wrong:
    - bytes flipped under a stored block (payload, header), a block copied
      over another (misdirected write), a zeroed header (lost write): the
      next read is a miss (KVT_ECHECKSUM or KVT_EMISS) with its counter,
      the slot is dropped and stays dropped after a restart, the other
      blocks read back byte-exact;
    - EIO and ENOSPC injected on reads, writes and journal appends: no
      crash, a failed write is never acknowledged nor recovered, every
      acknowledged block survives a restart byte-exact;
    - a real full file system (a 1 MiB tmpfs mounted for the test when we
      are root and may mount; otherwise that part is skipped with a
      message): writes fail with -ENOSPC, acknowledged blocks stay
      readable, the store reopens on the full disk and recovers them;
    - config errors: missing directory (-ENOENT), a file given as a
      directory (-ENOTDIR), zero capacity (-EINVAL), slot past capacity
      (-ERANGE), prep before open (-EBADF).
    Directory: $KVT_TEST_NVME_DIR or a temp dir under /var/tmp.
    Exit 0 pass, 1 fail, 77 skip.
@end
*/

#include <fcntl.h>
#include <inttypes.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include "kvt_util.h"
#include "nvme_test_util.h"

#define T_BLOCK      65536          //  Payload bytes per block
#define T_CAPACITY   64             //  Slots per store
#define T_QD         8              //  Queue depth

static int s_checksum_threads = 1;  //  Store config of this pass: 1 inline, 2 a pool

static kvt_nvme_store_t *
t_open (const char *dir, uint8_t *arena, size_t arena_bytes, int *rc_p)
{
    const char *dirs [1] = { dir };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = T_BLOCK,
        .capacity_blocks = T_CAPACITY, .queue_depth = T_QD, .files_per_dir = 2,
        .checksum_threads = s_checksum_threads
    };
    return t_store_try_open (&config, arena, arena_bytes, rc_p);
}

//  Run 'count' ops (writes or reads) of slots [first ..) through the
//  queue; rc per op into rcs. Returns 0 or the first prep error.
static int
t_run (kvt_nvme_store_t *store, bool write, const uint64_t *slots, const uint64_t *hashes,
       uint8_t *bufs, int count, int *rcs)
{
    int next = 0, done_total = 0, inflight = 0;
    while (done_total < count) {
        while (next < count && inflight < T_QD) {
            uint8_t *buf = bufs + (size_t) next * T_BLOCK;
            int rc = write? kvt_nvme_prep_write (store, slots [next], hashes [next], buf, next):
                            kvt_nvme_prep_read (store, slots [next], hashes [next], buf, next);
            if (rc) {
                rcs [next] = rc;    //  Refused at prep: counts as done
                next++;
                done_total++;
                continue;
            }
            next++;
            inflight++;
        }
        if (inflight == 0)
            continue;
        int rc = kvt_nvme_submit (store);
        if (rc < 0)
            return rc;
        kvt_nvme_store_wait (store, 5000);
        kvt_nvme_done_t done [T_QD];
        int n = kvt_nvme_reap (store, done, T_QD);
        if (n < 0)
            return n;
        for (int i = 0; i < n; i++)
            rcs [done [i].tag] = done [i].rc;
        inflight -= n;
        done_total += n;
    }
    return 0;
}

//  Overwrite 'bytes' at 'offset' of 'path' with 'data'.
static void
t_poke (const char *path, uint64_t offset, const void *data, size_t bytes)
{
    int fd = open (path, O_RDWR);
    t_check (fd >= 0, "open %s: %s", path, strerror (errno));
    if (fd < 0)
        return;
    t_check (pwrite (fd, data, bytes, (off_t) offset) == (ssize_t) bytes, "poke %s", path);
    close (fd);
}

static void
t_peek (const char *path, uint64_t offset, void *data, size_t bytes)
{
    int fd = open (path, O_RDONLY);
    t_check (fd >= 0, "open %s: %s", path, strerror (errno));
    if (fd < 0)
        return;
    t_check (pread (fd, data, bytes, (off_t) offset) == (ssize_t) bytes, "peek %s", path);
    close (fd);
}

//  Bytes flipped on disk, misdirected and lost writes.
static void
t_corruption (const char *dir)
{
    size_t arena_bytes = (size_t) T_CAPACITY * T_BLOCK;
    uint8_t *arena = (uint8_t *) malloc (arena_bytes);
    uint8_t *expect = (uint8_t *) malloc (arena_bytes);
    int rc;
    kvt_nvme_store_t *store = t_open (dir, NULL, 0, &rc);
    t_check (rc == 0, "open: %s", kvt_strerror (rc));
    uint64_t slots [10], hashes [10];
    int rcs [10];
    for (int i = 0; i < 10; i++) {
        slots [i] = (uint64_t) i;
        hashes [i] = 0xAB00 + (uint64_t) i;
        t_fill (expect + (size_t) i * T_BLOCK, T_BLOCK, hashes [i]);
    }
    memcpy (arena, expect, 10 * T_BLOCK);
    rc = t_run (store, true, slots, hashes, arena, 10, rcs);
    t_check (rc == 0, "writes: %s", kvt_strerror (rc));
    for (int i = 0; i < 10; i++)
        t_check (rcs [i] == 0, "write %d: %s", i, kvt_strerror (rcs [i]));

    char path [512], path_b [512];
    uint64_t offset, offset_b;
    uint8_t byte;
    //  Slot 1: one payload bit flipped
    kvt_nvme_store_slot_location (store, 1, path, sizeof (path), &offset);
    t_peek (path, offset + 4096 + 31337, &byte, 1);
    byte ^= 0x01;
    t_poke (path, offset + 4096 + 31337, &byte, 1);
    //  Slot 2: header byte flipped (inside the block hash)
    kvt_nvme_store_slot_location (store, 2, path, sizeof (path), &offset);
    t_peek (path, offset + 9, &byte, 1);
    byte ^= 0x80;
    t_poke (path, offset + 9, &byte, 1);
    //  Slot 4: slot 3's whole on-disk image copied over it (misdirected write)
    size_t stride = kvt_nvme_store_stride (store);
    uint8_t *image = (uint8_t *) malloc (stride);
    kvt_nvme_store_slot_location (store, 3, path, sizeof (path), &offset);
    kvt_nvme_store_slot_location (store, 4, path_b, sizeof (path_b), &offset_b);
    t_peek (path, offset, image, stride);
    t_poke (path_b, offset_b, image, stride);
    //  Slot 5: header zeroed (a write that never happened, a trim)
    memset (image, 0, 4096);
    kvt_nvme_store_slot_location (store, 5, path, sizeof (path), &offset);
    t_poke (path, offset, image, 4096);
    free (image);

    memset (arena, 0, 10 * T_BLOCK);
    rc = t_run (store, false, slots, hashes, arena, 10, rcs);
    t_check (rc == 0, "reads: %s", kvt_strerror (rc));
    t_check (rcs [1] == KVT_ECHECKSUM, "flipped payload: %s", kvt_strerror (rcs [1]));
    t_check (rcs [2] == KVT_ECHECKSUM, "flipped header: %s", kvt_strerror (rcs [2]));
    t_check (rcs [4] == KVT_EMISS, "misdirected: %s", kvt_strerror (rcs [4]));
    t_check (rcs [5] == KVT_ECHECKSUM, "zeroed header: %s", kvt_strerror (rcs [5]));
    for (int i = 0; i < 10; i++)
        if (i != 1 && i != 2 && i != 4 && i != 5) {
            t_check (rcs [i] == 0, "intact slot %d: %s", i, kvt_strerror (rcs [i]));
            t_check (memcmp (arena + (size_t) i * T_BLOCK, expect + (size_t) i * T_BLOCK,
                             T_BLOCK) == 0, "intact slot %d: wrong bytes", i);
        }
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (stats.checksum_failures == 3, "checksum_failures %" PRIu64,
             stats.checksum_failures);
    t_check (stats.misses == 1, "misses %" PRIu64, stats.misses);
    //  Dropped: the next read is refused at prep
    rc = kvt_nvme_prep_read (store, 1, hashes [1], arena, 0);
    t_check (rc == KVT_EMISS, "re-read of a dropped slot: %s", kvt_strerror (rc));
    kvt_nvme_store_destroy (&store);

    //  After a restart the dropped slots stay dropped
    store = t_open (dir, NULL, 0, &rc);
    t_check (rc == 0, "reopen: %s", kvt_strerror (rc));
    t_check (kvt_nvme_store_recovered_count (store) == 6, "recovered %" PRIu64 " of 6",
             kvt_nvme_store_recovered_count (store));
    for (int i = 0; i < 10; i++) {
        bool dropped = i == 1 || i == 2 || i == 4 || i == 5;
        t_check (kvt_nvme_store_has (store, (uint64_t) i, NULL) == !dropped,
                 "slot %d after restart", i);
    }
    uint64_t keep_slots [6] = { 0, 3, 6, 7, 8, 9 }, keep_hashes [6];
    for (int i = 0; i < 6; i++)
        keep_hashes [i] = hashes [keep_slots [i]];
    memset (arena, 0, 6 * T_BLOCK);
    t_run (store, false, keep_slots, keep_hashes, arena, 6, rcs);
    for (int i = 0; i < 6; i++) {
        t_check (rcs [i] == 0, "slot %" PRIu64 " after restart: %s", keep_slots [i],
                 kvt_strerror (rcs [i]));
        t_check (memcmp (arena + (size_t) i * T_BLOCK,
                         expect + (size_t) keep_slots [i] * T_BLOCK, T_BLOCK) == 0,
                 "slot %" PRIu64 " after restart: wrong bytes", keep_slots [i]);
    }
    kvt_nvme_store_destroy (&store);
    free (arena);
    free (expect);
    printf ("  corruption: flipped payload, flipped header, misdirected, zeroed: all misses\n");
}

//  Injected EIO / ENOSPC on every kind of completion.
static void
t_injected (const char *dir)
{
    size_t arena_bytes = (size_t) T_CAPACITY * T_BLOCK;
    uint8_t *arena = t_arena_new (arena_bytes);
    uint8_t *expect = (uint8_t *) malloc (arena_bytes);
    bool acked [T_CAPACITY] = { false };
    int rc;
    kvt_nvme_store_t *store = t_open (dir, arena, arena_bytes, &rc);
    t_check (rc == 0, "open: %s", kvt_strerror (rc));
    uint64_t slots [T_CAPACITY], hashes [T_CAPACITY];
    int rcs [T_CAPACITY];
    for (int i = 0; i < T_CAPACITY; i++) {
        slots [i] = (uint64_t) i;
        hashes [i] = 0xF00D0000 + (uint64_t) i;
        t_fill (expect + (size_t) i * T_BLOCK, T_BLOCK, hashes [i]);
    }
    memcpy (arena, expect, arena_bytes);
    //  Four rounds of 16 writes: EIO on writes, ENOSPC on writes, EIO and
    //  ENOSPC on journal appends
    struct { kvt_nvme_fault_t kind; int err; } faults [4] = {
        { KVT_NVME_FAULT_WRITE, EIO }, { KVT_NVME_FAULT_WRITE, ENOSPC },
        { KVT_NVME_FAULT_JOURNAL, EIO }, { KVT_NVME_FAULT_JOURNAL, ENOSPC }
    };
    int failed_total = 0;
    for (int round = 0; round < 4; round++) {
        bool journal = faults [round].kind == KVT_NVME_FAULT_JOURNAL;
        kvt_nvme_store_inject_fault (store, faults [round].kind, faults [round].err,
                                     journal? 1: 3);
        int first = round * 16;
        rc = t_run (store, true, slots + first, hashes + first,
                    arena + (size_t) first * T_BLOCK, 16, rcs + first);
        t_check (rc == 0, "round %d: %s", round, kvt_strerror (rc));
        kvt_nvme_store_inject_fault (store, faults [round].kind, 0, 0);
        int failed = 0;
        for (int i = first; i < first + 16; i++) {
            acked [i] = rcs [i] == 0;
            if (!acked [i]) {
                failed++;
                t_check (rcs [i] == -faults [round].err, "slot %d failed with %s", i,
                         kvt_strerror (rcs [i]));
            }
            t_check (kvt_nvme_store_has (store, (uint64_t) i, NULL) == acked [i],
                     "slot %d: index disagrees with its ack", i);
        }
        //  Write faults hit exactly 3 ops; a journal fault fails one whole
        //  append, which carries 1..T_QD records (at most T_QD in flight)
        if (!journal)
            t_check (failed == 3, "round %d: %d writes failed, expected 3", round, failed);
        else
            t_check (failed >= 1 && failed <= T_QD, "round %d: %d writes failed", round,
                     failed);
        failed_total += failed;
    }
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (stats.enospc > 0 && stats.io_errors == (uint64_t) failed_total,
             "counters: io_errors %" PRIu64 " enospc %" PRIu64, stats.io_errors, stats.enospc);
    //  Read errors: two reads fail, then the same blocks read fine
    uint64_t read_slots [8], read_hashes [8];
    int n = 0;
    for (int i = 0; i < T_CAPACITY && n < 8; i++)
        if (acked [i]) {
            read_slots [n] = (uint64_t) i;
            read_hashes [n] = hashes [i];
            n++;
        }
    kvt_nvme_store_inject_fault (store, KVT_NVME_FAULT_READ, EIO, 2);
    memset (arena, 0, arena_bytes);
    t_run (store, false, read_slots, read_hashes, arena, n, rcs);
    int read_failed = 0;
    for (int i = 0; i < n; i++)
        if (rcs [i] == -EIO)
            read_failed++;
        else
            t_check (rcs [i] == 0 && memcmp (arena + (size_t) i * T_BLOCK,
                     expect + read_slots [i] * T_BLOCK, T_BLOCK) == 0, "read %d", i);
    t_check (read_failed == 2, "%d reads failed, expected 2", read_failed);
    t_run (store, false, read_slots, read_hashes, arena, n, rcs);
    for (int i = 0; i < n; i++)
        t_check (rcs [i] == 0, "re-read after EIO %d: %s", i, kvt_strerror (rcs [i]));
    kvt_nvme_store_destroy (&store);

    //  Restart: exactly the acknowledged blocks, byte-exact
    store = t_open (dir, arena, arena_bytes, &rc);
    t_check (rc == 0, "reopen: %s", kvt_strerror (rc));
    int acked_count = 0;
    uint64_t ack_slots [T_CAPACITY], ack_hashes [T_CAPACITY];
    for (int i = 0; i < T_CAPACITY; i++) {
        t_check (kvt_nvme_store_has (store, (uint64_t) i, NULL) == acked [i],
                 "slot %d after restart: recovered %d, acked %d", i,
                 kvt_nvme_store_has (store, (uint64_t) i, NULL), acked [i]);
        if (acked [i]) {
            ack_slots [acked_count] = (uint64_t) i;
            ack_hashes [acked_count] = hashes [i];
            acked_count++;
        }
    }
    memset (arena, 0, arena_bytes);
    t_run (store, false, ack_slots, ack_hashes, arena, acked_count, rcs);
    for (int i = 0; i < acked_count; i++)
        t_check (rcs [i] == 0 && memcmp (arena + (size_t) i * T_BLOCK,
                 expect + ack_slots [i] * T_BLOCK, T_BLOCK) == 0,
                 "slot %" PRIu64 " after restart", ack_slots [i]);
    //  A flipped byte under a block read on the direct path (payload only,
    //  checked against the journal's checksum) is a miss as well
    char path [512];
    uint64_t offset;
    uint8_t byte;
    kvt_nvme_store_slot_location (store, ack_slots [0], path, sizeof (path), &offset);
    t_peek (path, offset + 4096 + 4242, &byte, 1);
    byte ^= 0x10;
    t_poke (path, offset + 4096 + 4242, &byte, 1);
    t_run (store, false, ack_slots, ack_hashes, arena, 1, rcs);
    t_check (rcs [0] == KVT_ECHECKSUM, "direct read of a flipped block: %s",
             kvt_strerror (rcs [0]));
    kvt_nvme_store_stats_t after;
    kvt_nvme_store_stats (store, &after);
    t_check (after.checksum_failures == 1 && after.direct_ops > 0,
             "direct checksum failure counted: %" PRIu64, after.checksum_failures);
    kvt_nvme_store_destroy (&store);
    munmap (arena, arena_bytes);
    free (expect);
    printf ("  injected: %d of 64 writes failed (EIO, ENOSPC, journal), 2 reads EIO; "
            "%d acknowledged blocks all back after restart\n", failed_total, acked_count);
}

//  A real full file system: a 1 MiB tmpfs.
static void
t_full_disk (const char *dir)
{
    char mnt [1024];
    snprintf (mnt, sizeof (mnt), "%s/full", dir);
    if (mkdir (mnt, 0755) != 0 || geteuid () != 0
    ||  mount ("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0) {
        printf ("  full disk: skipped (cannot mount a small tmpfs: %s)\n",
                geteuid ()? "not root": strerror (errno));
        return;
    }
    size_t arena_bytes = (size_t) T_CAPACITY * T_BLOCK;
    uint8_t *arena = (uint8_t *) malloc (arena_bytes);
    uint8_t *expect = (uint8_t *) malloc (arena_bytes);
    int rc;
    kvt_nvme_store_t *store = t_open (mnt, NULL, 0, &rc);
    t_check (rc == 0, "open on tmpfs: %s", kvt_strerror (rc));
    if (rc) {
        kvt_nvme_store_destroy (&store);
        umount (mnt);
        free (arena);
        free (expect);
        return;
    }
    uint64_t slots [T_CAPACITY], hashes [T_CAPACITY];
    int rcs [T_CAPACITY];
    for (int i = 0; i < T_CAPACITY; i++) {
        slots [i] = (uint64_t) i;
        hashes [i] = 0xF011000 + (uint64_t) i;
        t_fill (expect + (size_t) i * T_BLOCK, T_BLOCK, hashes [i]);
    }
    memcpy (arena, expect, arena_bytes);
    rc = t_run (store, true, slots, hashes, arena, T_CAPACITY, rcs);
    t_check (rc == 0, "writes: %s", kvt_strerror (rc));
    int acked = 0, enospc = 0;
    uint64_t ack_slots [T_CAPACITY], ack_hashes [T_CAPACITY];
    for (int i = 0; i < T_CAPACITY; i++) {
        if (rcs [i] == 0) {
            ack_slots [acked] = slots [i];
            ack_hashes [acked] = hashes [i];
            acked++;
        }
        else {
            t_check (rcs [i] == -ENOSPC, "write %d on a full disk: %s", i,
                     kvt_strerror (rcs [i]));
            enospc++;
        }
    }
    t_check (enospc > 0 && acked > 0, "1 MiB tmpfs: %d acked, %d ENOSPC", acked, enospc);
    //  Still serving: acknowledged blocks read back on the full disk
    memset (arena, 0, arena_bytes);
    t_run (store, false, ack_slots, ack_hashes, arena, acked, rcs);
    for (int i = 0; i < acked; i++)
        t_check (rcs [i] == 0 && memcmp (arena + (size_t) i * T_BLOCK,
                 expect + ack_slots [i] * T_BLOCK, T_BLOCK) == 0,
                 "slot %" PRIu64 " on a full disk", ack_slots [i]);
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (stats.enospc == (uint64_t) enospc, "enospc counter %" PRIu64 " vs %d",
             stats.enospc, enospc);
    kvt_nvme_store_destroy (&store);
    //  Reopen on the still-full disk
    store = t_open (mnt, NULL, 0, &rc);
    t_check (rc == 0, "reopen on a full disk: %s", kvt_strerror (rc));
    if (rc == 0) {
        t_check (kvt_nvme_store_recovered_count (store) == (uint64_t) acked,
                 "recovered %" PRIu64 " of %d", kvt_nvme_store_recovered_count (store), acked);
        memset (arena, 0, arena_bytes);
        t_run (store, false, ack_slots, ack_hashes, arena, acked, rcs);
        for (int i = 0; i < acked; i++)
            t_check (rcs [i] == 0 && memcmp (arena + (size_t) i * T_BLOCK,
                     expect + ack_slots [i] * T_BLOCK, T_BLOCK) == 0,
                     "slot %" PRIu64 " after reopen on a full disk", ack_slots [i]);
    }
    kvt_nvme_store_destroy (&store);
    int tries = 0;
    while (umount (mnt) != 0 && errno == EBUSY && ++tries < 50)
        usleep (20000);             //  The kernel may still hold a closed ring's files
    if (tries == 50 && umount2 (mnt, MNT_DETACH) != 0)
        fprintf (stderr, "test_nvme_faults: umount %s: %s\n", mnt, strerror (errno));
    free (arena);
    free (expect);
    printf ("  full disk (1 MiB tmpfs): %d writes acknowledged, %d ENOSPC; all acknowledged "
            "blocks read back, also after reopen\n", acked, enospc);
}

static void
t_config_errors (const char *dir)
{
    int rc;
    char path [1024];
    snprintf (path, sizeof (path), "%s/no-such-dir", dir);
    kvt_nvme_store_t *store = t_open (path, NULL, 0, &rc);
    t_check (rc == -ENOENT, "missing dir: %s", kvt_strerror (rc));
    uint8_t block [16];
    rc = kvt_nvme_prep_read (store, 0, 0, block, 0);
    t_check (rc == -EBADF, "prep before open: %s", kvt_strerror (rc));
    t_check (kvt_nvme_store_eventfd (store) == -1, "eventfd before open");
    kvt_nvme_store_destroy (&store);
    snprintf (path, sizeof (path), "%s/plain-file", dir);
    int fd = open (path, O_CREAT | O_WRONLY, 0644);
    close (fd);
    store = t_open (path, NULL, 0, &rc);
    t_check (rc == -ENOTDIR, "file as dir: %s", kvt_strerror (rc));
    kvt_nvme_store_destroy (&store);
    const char *dirs [1] = { dir };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = 4096, .capacity_blocks = 0,
        .queue_depth = 4, .files_per_dir = 1
    };
    store = t_store_try_open (&config, NULL, 0, &rc);
    t_check (rc == -EINVAL, "zero capacity: %s", kvt_strerror (rc));
    kvt_nvme_store_destroy (&store);
    store = t_open (dir, NULL, 0, &rc);
    t_check (rc == 0, "open: %s", kvt_strerror (rc));
    uint8_t *buf = (uint8_t *) calloc (1, T_BLOCK);
    rc = kvt_nvme_prep_write (store, T_CAPACITY, 1, buf, 0);
    t_check (rc == -ERANGE, "slot == capacity: %s", kvt_strerror (rc));
    rc = kvt_nvme_prep_read (store, UINT64_MAX, 1, buf, 0);
    t_check (rc == -ERANGE, "slot max: %s", kvt_strerror (rc));
    t_check (kvt_nvme_store_inflight (store) == 0, "refused preps hold no op");
    free (buf);
    kvt_nvme_store_destroy (&store);
    printf ("  config errors: ENOENT, ENOTDIR, EINVAL, ERANGE, EBADF\n");
}

int
main (void)
{
    t_quiet_log ();
    char path [512];
    char *dir = t_scratch_new ("test_nvme_faults", "faults", path, sizeof (path));
    if (!dir)
        return T_EXIT_SKIP;
    //  Every scenario with checksums on the caller's thread, then on a pool
    for (s_checksum_threads = 1; s_checksum_threads <= 2; s_checksum_threads++) {
        printf ("  checksum_threads %d:\n", s_checksum_threads);
        char sub [4][600];   //  Paths under dir
        for (int i = 0; i < 4; i++) {
            snprintf (sub [i], sizeof (sub [i]), "%s/%d-%d", dir, s_checksum_threads, i);
            mkdir (sub [i], 0755);
        }
        t_corruption (sub [0]);
        t_injected (sub [1]);
        t_full_disk (sub [3]);
        t_config_errors (sub [2]);
    }
    t_scratch_remove ("test_nvme_faults", dir);
    return t_verdict ("test_nvme_faults");
}
