/*  =========================================================================
    test_nvme_checksum_pool - the store with checksums on a pool of worker
    threads (checksum_threads = 2) reads and writes exactly as without

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Drives kvt_nvme_store the way the tier_nvme actor does (poll its
    eventfd, reap, refill), with checksum_threads 2, over {direct, bounce}
    x {sync_on_ack off, on}:
    - 600 writes then 600 reads, 32 in flight, through the pool
      (stats.checksum_jobs = one per write and per read): every block
      reads back byte-exact, also after a restart;
    - a payload byte flipped on disk: the pool's check refuses the read
      (KVT_ECHECKSUM), the caller's buffer is not written in the bounce
      path, the slot is dropped;
    - destroy with writes still waiting for their checksum: the store
      drains them (checksum, I/O, journal), and a restart finds every
      one of those new blocks intact;
    - the pool under load only (checksum_under_load, as auto runs it):
      every block exact, each checksum run once, every write's through
      the pool, the first reads' inline.
    Directory: $KVT_TEST_NVME_DIR or a temp dir under /var/tmp.
    Exit 0 pass, 1 fail, 77 skip.
@end
*/

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sys/stat.h>
#include "nvme_test_util.h"

#define T_COUNT      600            //  Blocks per storm
#define T_QD         32             //  Queue depth

static uint64_t s_hash [T_COUNT];   //  Block hash each slot is written and read with

static kvt_nvme_store_t *
t_open_with (const char *dir, size_t block_bytes, bool sync_on_ack, uint8_t *arena,
             size_t arena_bytes, bool under_load)
{
    const char *dirs [1] = { dir };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = block_bytes, .capacity_blocks = T_COUNT,
        .queue_depth = T_QD, .files_per_dir = 2, .sync_on_ack = sync_on_ack,
        .buffered_fallback = true, .checksum_threads = 2, .journal_compact_bytes = 8192,
        .checksum_under_load = under_load
    };
    return t_store_open (&config, arena, arena_bytes);
}

static kvt_nvme_store_t *
t_open (const char *dir, size_t block_bytes, bool sync_on_ack, uint8_t *arena,
        size_t arena_bytes)
{
    return t_open_with (dir, block_bytes, sync_on_ack, arena, arena_bytes, false);
}

//  Write or read slots 0..T_COUNT-1 through buffers bufs [slot], as an
//  actor does: poll the eventfd, reap, refill. rc per slot into rcs.
static void
t_storm (kvt_nvme_store_t *store, bool write, uint8_t *bufs, size_t block_bytes, int *rcs)
{
    int next = 0, done_total = 0, inflight = 0;
    while (done_total < T_COUNT) {
        bool prepared = false;
        while (next < T_COUNT && inflight < T_QD) {
            uint8_t *buf = bufs + (size_t) next * block_bytes;
            int rc = write? kvt_nvme_prep_write (store, (uint64_t) next, s_hash [next], buf,
                                                 (uint64_t) next)
                          : kvt_nvme_prep_read (store, (uint64_t) next, s_hash [next], buf,
                                                (uint64_t) next);
            if (rc) {
                rcs [next++] = rc;
                done_total++;
                continue;
            }
            next++;
            inflight++;
            prepared = true;
        }
        if (prepared)
            kvt_nvme_submit (store);
        struct pollfd item = { kvt_nvme_store_eventfd (store), POLLIN, 0 };
        if (poll (&item, 1, 5000) != 1) {
            t_check (false, "no wake-up in 5 s with %d in flight", inflight);
            return;
        }
        kvt_nvme_done_t done [8];
        int n;
        do {
            n = kvt_nvme_reap (store, done, 8);
            for (int i = 0; i < n; i++)
                rcs [done [i].tag] = done [i].rc;
            done_total += n > 0? n: 0;
            inflight -= n > 0? n: 0;
        } while (n == 8);
    }
}

//  Write every block from src (each write must succeed), read them all
//  back into a zeroed dst; return how many came back exact.
static int
t_write_read (kvt_nvme_store_t *store, const uint8_t *src, uint8_t *dst, size_t block_bytes,
              int *rcs)
{
    t_storm (store, true, (uint8_t *) src, block_bytes, rcs);
    for (int s = 0; s < T_COUNT; s++)
        t_check (rcs [s] == 0, "write %d: %s", s, kvt_strerror (rcs [s]));
    memset (dst, 0, (size_t) T_COUNT * block_bytes);
    t_storm (store, false, dst, block_bytes, rcs);
    int exact = 0;
    for (int s = 0; s < T_COUNT; s++)
        exact += rcs [s] == 0 && memcmp (src + (size_t) s * block_bytes,
                                         dst + (size_t) s * block_bytes, block_bytes) == 0;
    return exact;
}

static void
t_case (const char *dir, bool direct, bool sync_on_ack)
{
    size_t block_bytes = direct? 65536: 65536 + 200;
    size_t arena_bytes = (size_t) T_COUNT * (65536 + 4096) * 2;
    uint8_t *arena = t_arena_new (arena_bytes);
    uint8_t *src = arena;
    uint8_t *dst = arena + (size_t) T_COUNT * 65536;
    if (!direct)
        dst = src + (size_t) T_COUNT * block_bytes;
    for (int s = 0; s < T_COUNT; s++) {
        s_hash [s] = 7000 + (uint64_t) s;
        t_fill (src + (size_t) s * block_bytes, block_bytes, s_hash [s]);
    }
    kvt_nvme_store_t *store = t_open (dir, block_bytes, sync_on_ack, direct? arena: NULL,
                                      arena_bytes);
    static int rcs [T_COUNT];
    int exact = t_write_read (store, src, dst, block_bytes, rcs);
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (exact == T_COUNT, "%d of %d read back exact", exact, T_COUNT);
    t_check (stats.checksum_jobs == 2 * T_COUNT && stats.checksum_inline == 0,
             "checksum_jobs %" PRIu64 ", inline %" PRIu64, stats.checksum_jobs,
             stats.checksum_inline);
    t_check ((stats.direct_ops > 0) == direct && stats.checksum_failures == 0, "path");

    //  Corrupt slot 5's payload on disk: the pool's check refuses it
    char path [512];
    uint64_t offset;
    kvt_nvme_store_slot_location (store, 5, path, sizeof (path), &offset);
    int fd = open (path, O_RDWR);
    uint8_t byte = 0;
    bool poked = fd >= 0 && pread (fd, &byte, 1, (off_t) (offset + 4096 + 999)) == 1;
    byte ^= 0x10;
    poked = poked && pwrite (fd, &byte, 1, (off_t) (offset + 4096 + 999)) == 1;
    if (fd >= 0)
        close (fd);
    t_check (poked, "cannot poke %s", path);
    uint8_t *target = dst + 5 * block_bytes;
    memset (target, 0xEE, block_bytes);
    int rc = kvt_nvme_prep_read (store, 5, 7005, target, 5);
    t_check (rc == 0, "prep_read: %s", kvt_strerror (rc));
    kvt_nvme_submit (store);
    kvt_nvme_done_t done [1];
    int n = 0;
    for (int tries = 0; tries < 100 && n == 0; tries++) {
        kvt_nvme_store_wait (store, 100);
        n = kvt_nvme_reap (store, done, 1);
    }
    t_check (n == 1 && done [0].rc == KVT_ECHECKSUM, "corrupt read: %s",
             n == 1? kvt_strerror (done [0].rc): "no completion");
    t_check (direct || target [0] == 0xEE, "bounce read wrote a refused block");
    t_check (!kvt_nvme_store_has (store, 5, NULL), "refused slot still held");

    //  Destroy with writes waiting for their checksums (never reaped)
    for (int s = 10; s < 10 + T_QD; s++) {
        s_hash [s] = 9000 + (uint64_t) s;
        t_fill (src + (size_t) s * block_bytes, block_bytes, s_hash [s]);
        rc = kvt_nvme_prep_write (store, (uint64_t) s, s_hash [s],
                                  src + (size_t) s * block_bytes, 0);
        t_check (rc == 0, "prep_write %d: %s", s, kvt_strerror (rc));
    }
    kvt_nvme_store_destroy (&store);
    store = t_open (dir, block_bytes, sync_on_ack, direct? arena: NULL, arena_bytes);
    memset (dst, 0, (size_t) T_COUNT * block_bytes);
    t_storm (store, false, dst, block_bytes, rcs);
    int back = 0;
    for (int s = 0; s < T_COUNT; s++) {
        bool ok = rcs [s] == 0 && memcmp (src + (size_t) s * block_bytes,
                                          dst + (size_t) s * block_bytes, block_bytes) == 0;
        if (s == 5)
            t_check (rcs [s] == KVT_EMISS, "dropped slot 5: %s", kvt_strerror (rcs [s]));
        else
            t_check (ok, "slot %d after restart: %s", s, kvt_strerror (rcs [s]));
        back += ok;
    }
    printf ("  %-6s sync_on_ack=%d: %d writes + %d reads checked on 2 threads, corrupt "
            "block refused, %d blocks back after restart\n", direct? "direct": "bounce",
            sync_on_ack, T_COUNT, T_COUNT, back);
    kvt_nvme_store_destroy (&store);
    munmap (arena, arena_bytes);
}

//  The pool under load (what checksum_threads = 0 gives from 8 cores):
//  every block still reads back exact, each checksum ran once, on one side
//  or the other: every write's on the pool, and the first reads' on the
//  store's thread (a window has to pass before the load can send reads to
//  the pool; kvt_hash_load's selftest drives the rule itself)
static void
t_case_under_load (const char *dir)
{
    size_t block_bytes = 65536;
    size_t arena_bytes = (size_t) T_COUNT * block_bytes * 2;
    uint8_t *arena = t_arena_new (arena_bytes);
    uint8_t *src = arena, *dst = arena + (size_t) T_COUNT * block_bytes;
    for (int s = 0; s < T_COUNT; s++) {
        s_hash [s] = 5000 + (uint64_t) s;
        t_fill (src + (size_t) s * block_bytes, block_bytes, s_hash [s]);
    }
    kvt_nvme_store_t *store = t_open_with (dir, block_bytes, false, arena, arena_bytes, true);
    static int rcs [T_COUNT];
    //  Writes: every checksum on the pool, whatever the load
    t_storm (store, true, src, block_bytes, rcs);
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (stats.checksum_jobs == T_COUNT && stats.checksum_inline == 0,
             "under load, writes: %" PRIu64 " pooled + %" PRIu64 " inline",
             stats.checksum_jobs, stats.checksum_inline);
    int exact = t_write_read (store, src, dst, block_bytes, rcs);
    kvt_nvme_store_stats (store, &stats);
    t_check (exact == T_COUNT, "under load: %d of %d read back exact", exact, T_COUNT);
    t_check (stats.checksum_jobs + stats.checksum_inline == 3 * T_COUNT
             && stats.checksum_jobs >= 2 * T_COUNT && stats.checksum_inline > 0,
             "under load: %" PRIu64 " pooled + %" PRIu64 " inline",
             stats.checksum_jobs, stats.checksum_inline);
    printf ("  under load: %d writes + %d reads exact, %" PRIu64 " checksums inline, %"
            PRIu64 " through the pool\n", T_COUNT, T_COUNT, stats.checksum_inline,
            stats.checksum_jobs);
    kvt_nvme_store_destroy (&store);
    munmap (arena, arena_bytes);
}

int
main (void)
{
    t_quiet_log ();
    char path [512];
    char *dir = t_scratch_new ("test_nvme_checksum_pool", "pool", path, sizeof (path));
    if (!dir)
        return T_EXIT_SKIP;
    for (int mask = 0; mask < 4; mask++) {
        char sub [600];
        snprintf (sub, sizeof (sub), "%s/%d", dir, mask);
        mkdir (sub, 0755);
        t_case (sub, mask & 1, (mask >> 1) & 1);
    }
    char sub [600];
    snprintf (sub, sizeof (sub), "%s/under-load", dir);
    mkdir (sub, 0755);
    t_case_under_load (sub);
    t_scratch_remove ("test_nvme_checksum_pool", dir);
    return t_verdict ("test_nvme_checksum_pool");
}
