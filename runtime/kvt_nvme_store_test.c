/*  =========================================================================
    kvt_nvme_store_test - the NVMe block store's selftest: writes, reads,
    restart, corruption, faults and short (FP8) lengths through the store

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_nvme_int.h"
#include <poll.h>

static void
t_fill (uint8_t *buf, size_t bytes, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < bytes; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy (buf + i, &x, bytes - i < 8? bytes - i: 8);
    }
}

//  Reap until 'expect' completions are collected; stores rc by tag.
static void
t_reap_all (kvt_nvme_store_t *store, int expect, int *rc_by_tag)
{
    kvt_nvme_done_t done [16];
    int got = 0;
    while (got < expect) {
        int rc = kvt_nvme_store_wait (store, 5000);
        assert (rc == 0 || rc == -ETIME || rc == -EAGAIN);
        int n = kvt_nvme_reap (store, done, 16);
        assert (n >= 0);
        for (int i = 0; i < n; i++)
            rc_by_tag [done [i].tag] = done [i].rc;
        got += n;
    }
}

//  Fill blocks 0..count-1 of 'arena' (seed + i) and prepare their writes
//  to slots 0..count-1; the caller submits.
static void
t_prep_writes (kvt_nvme_store_t *store, uint8_t *arena, size_t block_bytes, int count,
               uint64_t seed)
{
    for (int i = 0; i < count; i++) {
        t_fill (arena + i * block_bytes, block_bytes, seed + (uint64_t) i);
        int rc = kvt_nvme_prep_write (store, (uint64_t) i, seed + (uint64_t) i,
                                      arena + i * block_bytes, (uint64_t) i);
        assert (rc == 0);
    }
}

//  Submit the writes t_prep_writes prepared, wait for them, read the
//  blocks back into arena blocks 4.. and check every byte.
static void
t_finish_and_read_back (kvt_nvme_store_t *store, uint8_t *arena, size_t block_bytes, int count,
                        uint64_t seed)
{
    int rc_by_tag [8];
    assert (count <= 4);
    kvt_nvme_submit (store);
    t_reap_all (store, count, rc_by_tag);
    memset (arena + 4 * block_bytes, 0, (size_t) count * block_bytes);
    for (int i = 0; i < count; i++) {
        assert (rc_by_tag [i] == 0);
        int rc = kvt_nvme_prep_read (store, (uint64_t) i, seed + (uint64_t) i,
                                     arena + (4 + i) * block_bytes, (uint64_t) i);
        assert (rc == 0);
    }
    kvt_nvme_submit (store);
    t_reap_all (store, count, rc_by_tag);
    for (int i = 0; i < count; i++)
        assert (rc_by_tag [i] == 0);
    assert (memcmp (arena, arena + 4 * block_bytes, (size_t) count * block_bytes) == 0);
}

//  A store in a new folder 'name' under 'dir' with 'config' (one folder,
//  'arena' registered), opened
static kvt_nvme_store_t *
t_open_in (const char *dir, const char *name, kvt_nvme_store_config_t config, uint8_t *arena,
           size_t arena_bytes)
{
    char path [300];
    snprintf (path, sizeof (path), "%s/%s", dir, name);
    int rc = mkdir (path, 0755);
    assert (rc == 0);
    const char *dirs [1] = { path };        //  The store keeps its own copy
    config.dirs = dirs;
    config.dir_count = 1;
    kvt_nvme_store_t *store = kvt_nvme_store_new (&config);
    rc = kvt_nvme_store_register_buffer (store, arena, arena_bytes);
    assert (rc == 0);
    rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    return store;
}

//  Flip one byte of 'slot' at payload offset 'at' on disk.
static void
t_flip (kvt_nvme_store_t *store, uint64_t slot, uint64_t at)
{
    char path [512];
    uint64_t offset;
    int rc = kvt_nvme_store_slot_location (store, slot, path, sizeof (path), &offset);
    assert (rc == 0);
    int fd = open (path, O_RDWR);
    assert (fd >= 0);
    uint8_t byte;
    ssize_t io = pread (fd, &byte, 1, (off_t) (offset + 4096 + at));
    assert (io == 1);
    byte ^= 0x5A;
    io = pwrite (fd, &byte, 1, (off_t) (offset + 4096 + at));
    assert (io == 1);
    close (fd);
}

//  Layer groups (issue #4): a v2 block read group by group, by DMA into
//  a registered buffer and through the staging into a loose one; a
//  flipped byte in one group refuses that group (and drops the block); a
//  v1 block written by a store without groups reads whole; geometries
//  whose groups are not 4096-aligned get one group. 'threads': checksum
//  threads (1: inline, 2: a pool).
static void
t_layer_groups (const char *dir, int threads)
{
    //  Geometry
    uint64_t offsets [KVT_NVME_MAX_GROUPS + 1];
    assert (kvt_nvme_layer_groups (32768, 4, 4, offsets) == 4);
    assert (offsets [0] == 0 && offsets [1] == 8192 && offsets [3] == 24576
            && offsets [4] == 32768);
    assert (kvt_nvme_layer_groups (32768, 4, 3, offsets) == 3);
    assert (offsets [1] == 8192 && offsets [2] == 16384 && offsets [3] == 32768);
    assert (kvt_nvme_layer_groups (8192, 4, 4, NULL) == 1);        //  2 KiB layers
    assert (kvt_nvme_layer_groups (32768 + 100, 4, 4, NULL) == 1);
    assert (kvt_nvme_layer_groups (32768, 4, 1, NULL) == 1);
    assert (kvt_nvme_layer_groups (32768, 4, 9, NULL) == 4);       //  At most one per layer
    kvt_nvme_layer_groups (32768, 4, 4, offsets);

    const char *dirs [1] = { dir };
    const size_t block_bytes = 32768;
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = block_bytes, .capacity_blocks = 8,
        .queue_depth = 8, .files_per_dir = 1, .layers = 4, .layer_groups = 0,
        .checksum_threads = threads
    };
    int rc_by_tag [16];
    uint8_t *src = (uint8_t *) malloc (3 * block_bytes);
    uint8_t *loose = (uint8_t *) malloc (block_bytes + 1);
    size_t arena_bytes = 4 * block_bytes;
    uint8_t *arena = (uint8_t *) mmap (NULL, arena_bytes, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert (src && loose && arena != MAP_FAILED);
    for (int i = 0; i < 3; i++)
        t_fill (src + i * block_bytes, block_bytes, 500 + i);

    //  A v1 block, written by a store without groups
    kvt_nvme_store_t *store = kvt_nvme_store_new (&config);
    int rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    assert (kvt_nvme_store_group_count (store) == 1);
    rc = kvt_nvme_prep_write (store, 5, 905, src + 2 * block_bytes, 0);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [0] == 0);
    rc = kvt_nvme_prep_read_group (store, 5, 905, loose, 1, 0);    //  No group 1 here
    assert (rc == -EINVAL);
    kvt_nvme_store_destroy (&store);

    config.layer_groups = 4;
    store = kvt_nvme_store_new (&config);
    rc = kvt_nvme_store_register_buffer (store, arena, arena_bytes);
    assert (rc == 0);
    rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    assert (kvt_nvme_store_group_count (store) == 4);
    assert (kvt_nvme_store_recovered_count (store) == 1);
    rc = kvt_nvme_prep_read_group (store, 5, 905, loose, 4, 0);
    assert (rc == -EINVAL);
    for (int i = 0; i < 2; i++) {
        rc = kvt_nvme_prep_write (store, (uint64_t) i, 900 + (uint64_t) i,
                                  src + i * block_bytes, (uint64_t) i);
        assert (rc == 0);
    }
    kvt_nvme_submit (store);
    t_reap_all (store, 2, rc_by_tag);
    assert (rc_by_tag [0] == 0 && rc_by_tag [1] == 0);
    //  Group by group, highest first: each lands at its own offset only
    memset (arena, 0, arena_bytes);
    memset (loose, 0, block_bytes);
    kvt_nvme_store_stats_t before, after;
    kvt_nvme_store_stats (store, &before);
    for (int g = 3; g >= 0; g--) {
        rc = kvt_nvme_prep_read_group (store, 0, 900, arena, g, 0);
        assert (rc == 0);
        rc = kvt_nvme_prep_read_group (store, 1, 901, loose, g, 1);
        assert (rc == 0);
        kvt_nvme_submit (store);
        t_reap_all (store, 2, rc_by_tag);
        assert (rc_by_tag [0] == 0 && rc_by_tag [1] == 0);
        assert (memcmp (arena + offsets [g], src + offsets [g], 8192) == 0);
        assert (memcmp (loose + offsets [g], src + block_bytes + offsets [g], 8192) == 0);
        for (size_t k = 0; k < offsets [g]; k++)
            assert (arena [k] == 0 && loose [k] == 0);
    }
    assert (memcmp (arena, src, block_bytes) == 0);
    kvt_nvme_store_stats (store, &after);
    assert (after.group_reads == before.group_reads + 8);
    //  Each block's first group read its header; the other three used the
    //  checksums kept from it (one I/O each, no header)
    assert (after.group_header_hits == before.group_header_hits + 6);
    //  With a pool, the pool verified them
    assert (threads == 1 || after.checksum_jobs >= before.checksum_jobs + 8);
    assert (after.direct_ops >= before.direct_ops + 4);
    assert (after.bounce_ops >= before.bounce_ops + 4);
    //  The whole-block read still works on a v2 block
    memset (arena, 0, block_bytes);
    rc = kvt_nvme_prep_read (store, 0, 900, arena, 0);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [0] == 0 && memcmp (arena, src, block_bytes) == 0);
    //  A flipped byte in group 2: groups 0, 1 and 3 still read; group 2
    //  is refused and the block dropped
    t_flip (store, 1, offsets [2] + 77);
    for (int g = 0; g < 4; g++) {
        if (g == 2)
            continue;
        rc = kvt_nvme_prep_read_group (store, 1, 901, arena + block_bytes, g, (uint64_t) g);
        assert (rc == 0);
    }
    kvt_nvme_submit (store);
    t_reap_all (store, 3, rc_by_tag);
    assert (rc_by_tag [0] == 0 && rc_by_tag [1] == 0 && rc_by_tag [3] == 0);
    rc = kvt_nvme_prep_read_group (store, 1, 901, arena + block_bytes, 2, 2);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [2] == KVT_ECHECKSUM);
    assert (!kvt_nvme_store_has (store, 1, NULL));
    rc = kvt_nvme_prep_read_group (store, 1, 901, arena + block_bytes, 0, 0);
    assert (rc == KVT_EMISS);
    kvt_nvme_store_stats (store, &after);
    assert (after.checksum_failures == before.checksum_failures + 1);
    //  The v1 block: a group read reads it whole
    memset (arena, 0, block_bytes);
    rc = kvt_nvme_prep_read_group (store, 5, 905, arena, 1, 0);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [0] == 0);
    assert (memcmp (arena, src + 2 * block_bytes, block_bytes) == 0);
    kvt_nvme_store_stats (store, &after);
    assert (after.group_fallbacks == before.group_fallbacks + 1);
    //  A flipped byte in the v1 block: the fallback read refuses it
    t_flip (store, 5, 3);
    rc = kvt_nvme_prep_read_group (store, 5, 905, loose, 3, 0);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [0] == KVT_ECHECKSUM);
    kvt_nvme_store_destroy (&store);

    //  Groups not 4096-aligned: one group, group reads of group 0 only
    config.block_bytes = 8192;
    store = kvt_nvme_store_new (&config);
    assert (kvt_nvme_store_group_count (store) == 1);
    kvt_nvme_store_destroy (&store);
    munmap (arena, arena_bytes);
    free (loose);
    free (src);
}

int
kvt_nvme_store_test (bool verbose)
{
    //  @selftest
    //  Reads into registered memory: auto bounces 4 KiB pages through
    //  huge-page staging, and only then; on and off decide alone
    for (int large = 0; large < 2; large++)
        for (int staging = 0; staging < 2; staging++) {
            assert (kvt_nvme_direct_reads ("on", large, staging) == 1);
            assert (kvt_nvme_direct_reads ("off", large, staging) == 0);
            assert (kvt_nvme_direct_reads ("auto", large, staging) == (large || !staging));
        }
    assert (kvt_nvme_direct_reads ("yes", true, true) == -EINVAL);
    assert (kvt_nvme_direct_reads ("", true, true) == -EINVAL);
    assert (kvt_nvme_direct_reads (NULL, true, true) == -EINVAL);
    char dir_template [] = "/var/tmp/kvt-nvme-selftest-XXXXXX";
    char *dir = mkdtemp (dir_template);
    assert (dir);
    char sub [2][256];
    snprintf (sub [0], sizeof (sub [0]), "%s/a", dir);
    snprintf (sub [1], sizeof (sub [1]), "%s/b", dir);
    int rc = mkdir (sub [0], 0755);
    assert (rc == 0);
    rc = mkdir (sub [1], 0755);
    assert (rc == 0);
    const char *dirs [2] = { sub [0], sub [1] };
    size_t block_bytes = 16384 + 100;       //  Not a multiple of 4096: padded
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 2, .block_bytes = block_bytes, .capacity_blocks = 64,
        .queue_depth = 8, .files_per_dir = 2, .sync_on_ack = false
    };
    kvt_log_level_t saved_level = kvt_log_level ();
    if (!verbose)
        kvt_log_set_level (KVT_LOG_ERROR);

    //  Missing directory: -ENOENT, store still destroyable
    const char *missing [1] = { "/var/tmp/kvt-nvme-no-such-dir/x" };
    kvt_nvme_store_config_t bad = config;
    bad.dirs = missing;
    bad.dir_count = 1;
    kvt_nvme_store_t *store = kvt_nvme_store_new (&bad);
    rc = kvt_nvme_store_open (store);
    assert (rc == -ENOENT);
    assert (kvt_nvme_store_eventfd (store) == -1);
    kvt_nvme_store_destroy (&store);
    assert (store == NULL);
    kvt_nvme_store_destroy (&store);        //  Twice is fine

    //  Write 16 blocks (bounce path: unaligned size), read them back
    store = kvt_nvme_store_new (&config);
    rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    assert (kvt_nvme_store_eventfd (store) >= 0);
    assert (kvt_nvme_store_recovered_count (store) == 0);
    assert (kvt_nvme_store_stride (store) == 4096 + 20480);
    uint8_t *src = (uint8_t *) malloc (16 * block_bytes);
    uint8_t *dst = (uint8_t *) malloc (16 * block_bytes);
    assert (src && dst);
    int rc_by_tag [64];
    for (int i = 0; i < 16; i++)
        t_fill (src + i * block_bytes, block_bytes, 1000 + i);
    for (int i = 0; i < 8; i++) {
        rc = kvt_nvme_prep_write (store, (uint64_t) i * 3, 1000 + i, src + i * block_bytes, i);
        assert (rc == 0);
    }
    //  Queue full, slot busy, out of range
    rc = kvt_nvme_prep_write (store, 60, 1, src, 99);
    assert (rc == -EAGAIN);
    rc = kvt_nvme_prep_write (store, 64, 1, src, 99);
    assert (rc == -ERANGE);
    assert (kvt_nvme_store_inflight (store) == 8);
    rc = kvt_nvme_submit (store);
    assert (rc >= 1);
    memset (rc_by_tag, 0x7f, sizeof (rc_by_tag));
    t_reap_all (store, 8, rc_by_tag);
    for (int i = 0; i < 8; i++)
        assert (rc_by_tag [i] == 0);
    for (int i = 8; i < 16; i++) {
        rc = kvt_nvme_prep_write (store, (uint64_t) i * 3, 1000 + i, src + i * block_bytes, i);
        assert (rc == 0);
    }
    kvt_nvme_submit (store);
    t_reap_all (store, 8, rc_by_tag);
    for (int i = 0; i < 16; i++) {
        uint64_t hash;
        assert (kvt_nvme_store_has (store, (uint64_t) i * 3, &hash));
        assert (hash == 1000 + (uint64_t) i);
    }
    memset (dst, 0, 16 * block_bytes);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 8; i++) {
            int b = round * 8 + i;
            rc = kvt_nvme_prep_read (store, (uint64_t) b * 3, 1000 + b,
                                     dst + b * block_bytes, b);
            assert (rc == 0);
        }
        //  Prepared reads count as at the device until their completion
        //  is in the ring, and not at all once reaped
        assert (kvt_nvme_store_device_inflight (store) == 8);
        kvt_nvme_submit (store);
        t_reap_all (store, 8, rc_by_tag);
        assert (kvt_nvme_store_device_inflight (store) == 0);
    }
    for (int i = 0; i < 16; i++)
        assert (rc_by_tag [i] == 0);
    assert (memcmp (src, dst, 16 * block_bytes) == 0);
    //  Wrong hash and empty slot: miss at prep
    rc = kvt_nvme_prep_read (store, 0, 12345, dst, 0);
    assert (rc == KVT_EMISS);
    rc = kvt_nvme_prep_read (store, 1, 0, dst, 0);
    assert (rc == KVT_EMISS);

    //  The eventfd wakes a poller when a completion is ready
    rc = kvt_nvme_prep_read (store, 9, 1003, dst, 7);
    assert (rc == 0);
    rc = kvt_nvme_submit (store);
    assert (rc == 1);
    kvt_nvme_done_t one [4];
    int got = 0;
    for (int tries = 0; tries < 100 && got == 0; tries++) {
        //  A wake-up may be stale (a CQE seen by an earlier reap): reap 0
        struct pollfd item = { kvt_nvme_store_eventfd (store), POLLIN, 0 };
        rc = poll (&item, 1, 5000);
        assert (rc == 1 && (item.revents & POLLIN));
        got = kvt_nvme_reap (store, one, 4);
        assert (got >= 0);
    }
    assert (got == 1 && one [0].tag == 7 && one [0].rc == 0);
    rc = kvt_nvme_reap (store, one, 4);
    assert (rc == 0);                       //  Nothing more, and no wait
    assert (kvt_nvme_store_inflight (store) == 0);

    //  Overwrite slot 0, forget slot 3
    t_fill (src, block_bytes, 5000);
    rc = kvt_nvme_prep_write (store, 0, 5000, src, 0);
    assert (rc == 0);
    rc = kvt_nvme_prep_read (store, 0, 1000, dst, 1);
    assert (rc == -EBUSY);                  //  Slot being written
    rc = kvt_nvme_forget (store, 3);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [0] == 0);
    assert (!kvt_nvme_store_has (store, 3, NULL));

    //  Flip a byte on disk under slot 6: the read is a checksum miss
    char path [512];
    uint64_t offset;
    rc = kvt_nvme_store_slot_location (store, 6, path, sizeof (path), &offset);
    assert (rc == 0);
    int fd = open (path, O_RDWR);
    assert (fd >= 0);
    uint8_t byte;
    ssize_t io = pread (fd, &byte, 1, (off_t) (offset + 4096 + 777));
    assert (io == 1);
    byte ^= 0x40;
    io = pwrite (fd, &byte, 1, (off_t) (offset + 4096 + 777));
    assert (io == 1);
    close (fd);
    rc = kvt_nvme_prep_read (store, 6, 1002, dst, 2);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [2] == KVT_ECHECKSUM);
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    assert (stats.checksum_failures == 1);
    assert (!kvt_nvme_store_has (store, 6, NULL));

    //  Injected faults: a write EIO is not acknowledged; the store goes on
    kvt_nvme_store_inject_fault (store, KVT_NVME_FAULT_WRITE, EIO, 1);
    rc = kvt_nvme_prep_write (store, 50, 50, src + block_bytes, 3);
    assert (rc == 0);
    rc = kvt_nvme_prep_write (store, 51, 51, src + block_bytes, 4);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 2, rc_by_tag);
    assert ((rc_by_tag [3] == -EIO) != (rc_by_tag [4] == -EIO));
    assert (rc_by_tag [3] == 0 || rc_by_tag [4] == 0);
    kvt_nvme_store_inject_fault (store, KVT_NVME_FAULT_JOURNAL, ENOSPC, 1);
    rc = kvt_nvme_prep_write (store, 52, 52, src + block_bytes, 5);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 1, rc_by_tag);
    assert (rc_by_tag [5] == -ENOSPC);
    assert (!kvt_nvme_store_has (store, 52, NULL));
    kvt_nvme_store_stats (store, &stats);
    assert (stats.io_errors == 2 && stats.enospc == 1);
    kvt_nvme_store_destroy (&store);

    //  Reopen: every acknowledged block is back, forgotten ones are not
    store = kvt_nvme_store_new (&config);
    rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    uint64_t expect_count = 16 - 2 + 1;     //  16, -3 forgotten, -6 dropped, +50 or 51
    assert (kvt_nvme_store_recovered_count (store) == expect_count);
    for (uint64_t i = 0; i < kvt_nvme_store_recovered_count (store); i++) {
        uint64_t slot, hash;
        rc = kvt_nvme_store_recovered (store, i, &slot, &hash);
        assert (rc == 0);
        assert (slot != 3 && slot != 6 && slot != 52);
        if (slot == 0)
            assert (hash == 5000);
        else
        if (slot < 48)
            assert (hash == 1000 + slot / 3);
        else
            assert (hash == slot);
    }
    rc = kvt_nvme_store_recovered (store, expect_count, NULL, NULL);
    assert (rc == -ERANGE);
    rc = kvt_nvme_prep_read (store, 0, 5000, dst, 0);
    assert (rc == 0);
    rc = kvt_nvme_prep_read (store, 9, 1003, dst + block_bytes, 1);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 2, rc_by_tag);
    assert (rc_by_tag [0] == 0 && rc_by_tag [1] == 0);
    assert (memcmp (dst, src, block_bytes) == 0);
    t_fill (src + 3 * block_bytes, block_bytes, 1003);
    assert (memcmp (dst + block_bytes, src + 3 * block_bytes, block_bytes) == 0);
    kvt_nvme_store_destroy (&store);

    //  Journal compaction while running: a tiny limit forces rotations
    //  among writes, overwrites and forgets; a restart sees the same index
    kvt_nvme_store_config_t rotating = config;
    rotating.dir_count = 1;
    rotating.files_per_dir = 1;
    rotating.block_bytes = 4096;
    rotating.capacity_blocks = 300;
    rotating.journal_compact_bytes = 2048;  //  About 50 records
    char rot_dir [300];
    snprintf (rot_dir, sizeof (rot_dir), "%s/rot", dir);
    rc = mkdir (rot_dir, 0755);
    assert (rc == 0);
    const char *rot_dirs [1] = { rot_dir };
    rotating.dirs = rot_dirs;
    store = kvt_nvme_store_new (&rotating);
    rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    uint64_t expect_hash [300] = { 0 };     //  0: slot must be empty
    for (int round = 0; round < 6; round++) {
        for (uint64_t slot = 0; slot < 300; slot++) {
            if ((slot + (uint64_t) round) % 7 == 0) {
                if (expect_hash [slot]) {
                    rc = kvt_nvme_forget (store, slot);
                    assert (rc == 0);
                    expect_hash [slot] = 0;
                }
                continue;
            }
            uint64_t hash = (uint64_t) round << 32 | slot | 1ULL << 48;
            rc = kvt_nvme_prep_write (store, slot, hash, src, 0);
            while (rc == -EAGAIN) {
                t_reap_all (store, 1, rc_by_tag);   //  Every tag is 0
                assert (rc_by_tag [0] == 0);
                rc = kvt_nvme_prep_write (store, slot, hash, src, 0);
            }
            assert (rc == 0);
            expect_hash [slot] = hash;
            kvt_nvme_submit (store);
        }
        while (kvt_nvme_store_inflight (store) > 0) {
            t_reap_all (store, 1, rc_by_tag);
            assert (rc_by_tag [0] == 0);
        }
    }
    kvt_nvme_store_stats (store, &stats);
    if (verbose)
        printf ("journal rotations %" PRIu64 "\n", stats.journal_rotations);
    assert (stats.journal_rotations >= 3);
    assert (stats.io_errors == 0);
    kvt_nvme_store_destroy (&store);
    store = kvt_nvme_store_new (&rotating);
    rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    for (uint64_t slot = 0; slot < 300; slot++) {
        uint64_t hash = 0;
        bool has = kvt_nvme_store_has (store, slot, &hash);
        assert (has == (expect_hash [slot] != 0));
        assert (!has || hash == expect_hash [slot]);
    }
    kvt_nvme_store_stats (store, &stats);
    assert (stats.recovery_skipped == 0);
    kvt_nvme_store_destroy (&store);

    //  Direct path: registered, aligned caller memory, 4096-multiple blocks
    kvt_nvme_store_config_t aligned = config;
    aligned.block_bytes = 32768;
    aligned.dir_count = 1;
    aligned.files_per_dir = 1;
    aligned.sync_on_ack = true;
    size_t arena_bytes = 8 * aligned.block_bytes;
    uint8_t *arena = (uint8_t *) mmap (NULL, arena_bytes, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert (arena != MAP_FAILED);
    store = kvt_nvme_store_new (&aligned);
    rc = kvt_nvme_store_register_buffer (store, arena, arena_bytes);
    assert (rc == 0);
    rc = kvt_nvme_store_open (store);
    assert (rc == 0);
    assert (kvt_nvme_store_recovered_count (store) == 0);   //  Geometry changed: empty
    for (int i = 0; i < 4; i++) {
        t_fill (arena + i * aligned.block_bytes, aligned.block_bytes, 7000 + i);
        rc = kvt_nvme_prep_write (store, (uint64_t) i, 7000 + i,
                                  arena + i * aligned.block_bytes, i);
        assert (rc == 0);
    }
    kvt_nvme_submit (store);
    t_reap_all (store, 4, rc_by_tag);
    for (int i = 0; i < 4; i++) {
        assert (rc_by_tag [i] == 0);
        rc = kvt_nvme_prep_read (store, (uint64_t) i, 7000 + i,
                                 arena + (4 + i) * aligned.block_bytes, i);
        assert (rc == 0);
    }
    kvt_nvme_submit (store);
    t_reap_all (store, 4, rc_by_tag);
    for (int i = 0; i < 4; i++)
        assert (rc_by_tag [i] == 0);
    assert (memcmp (arena, arena + 4 * aligned.block_bytes, 4 * aligned.block_bytes) == 0);
    kvt_nvme_store_stats (store, &stats);
    assert (stats.direct_ops == 8 && stats.bounce_ops == 0);
    assert (stats.writes == 4 && stats.reads == 4);

    //  Short payloads (_len): only that length is written, checksummed and
    //  read back, direct (arena) or bounced (malloc'd); a read with another
    //  length is refused, never handed out
    size_t short_bytes = 9000;
    uint8_t *loose = (uint8_t *) malloc (aligned.block_bytes);
    t_fill (loose, aligned.block_bytes, 8100);
    rc = kvt_nvme_prep_write_len (store, 6, 8000, arena, short_bytes, 0);
    assert (rc == 0);
    rc = kvt_nvme_prep_write_len (store, 7, 8100, loose, short_bytes, 1);
    assert (rc == 0);
    assert (kvt_nvme_prep_write_len (store, 5, 1, arena, 0, 2) == -EINVAL);
    assert (kvt_nvme_prep_write_len (store, 5, 1, arena, aligned.block_bytes + 1, 2) == -EINVAL);
    kvt_nvme_submit (store);
    t_reap_all (store, 2, rc_by_tag);
    assert (rc_by_tag [0] == 0 && rc_by_tag [1] == 0);
    kvt_nvme_store_stats_t before;
    kvt_nvme_store_stats (store, &before);
    assert (before.write_bytes == 4 * aligned.block_bytes + 2 * short_bytes);
    memset (arena + 4 * aligned.block_bytes, 0, 2 * aligned.block_bytes);
    rc = kvt_nvme_prep_read_len (store, 6, 8000, arena + 4 * aligned.block_bytes, short_bytes, 0);
    assert (rc == 0);
    uint8_t *back = (uint8_t *) calloc (1, aligned.block_bytes);
    rc = kvt_nvme_prep_read_len (store, 7, 8100, back, short_bytes, 1);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 2, rc_by_tag);
    assert (rc_by_tag [0] == 0 && rc_by_tag [1] == 0);
    assert (memcmp (arena + 4 * aligned.block_bytes, arena, short_bytes) == 0);
    assert (memcmp (back, loose, short_bytes) == 0);
    kvt_nvme_store_stats (store, &stats);
    assert (stats.read_bytes == before.read_bytes + 2 * short_bytes);
    //  Read with the full length: the block is refused (and dropped)
    rc = kvt_nvme_prep_read (store, 6, 8000, arena + 4 * aligned.block_bytes, 0);
    assert (rc == 0);
    rc = kvt_nvme_prep_read (store, 7, 8100, back, 1);
    assert (rc == 0);
    kvt_nvme_submit (store);
    t_reap_all (store, 2, rc_by_tag);
    assert (rc_by_tag [0] == KVT_ECHECKSUM);        //  Direct: payload checksum
    assert (rc_by_tag [1] == KVT_EMISS);            //  Bounce: header length
    assert (!kvt_nvme_store_has (store, 6, NULL) && !kvt_nvme_store_has (store, 7, NULL));
    free (loose);
    free (back);
    kvt_nvme_store_destroy (&store);

    //  bounce_reads: registered memory is written direct and read through
    //  the staging, byte-exact (tier_nvme/direct = auto on 4 KiB pages)
    kvt_nvme_store_config_t bouncing = aligned;
    bouncing.bounce_reads = true;
    store = t_open_in (dir, "bounce-reads", bouncing, arena, arena_bytes);
    t_prep_writes (store, arena, aligned.block_bytes, 2, 9100);
    t_finish_and_read_back (store, arena, aligned.block_bytes, 2, 9100);
    kvt_nvme_store_stats (store, &stats);
    assert (stats.direct_ops == 2 && stats.bounce_ops == 2);
    kvt_nvme_store_destroy (&store);

    //  Direct writes, one vectored I/O (default) or two (split_writes),
    //  whose transfers come back short: the rest goes again until the
    //  block is whole. Eight short completions each way, every byte exact,
    //  the header too (a bounced read, into unregistered memory, checks it)
    for (int split = 0; split < 2; split++) {
        kvt_nvme_store_config_t shorts = aligned;
        shorts.split_writes = split;
        store = t_open_in (dir, split? "short-split": "short-vectored", shorts, arena,
                           arena_bytes);
        kvt_nvme_store_inject_fault (store, KVT_NVME_FAULT_SHORT, 0, 8);
        t_prep_writes (store, arena, aligned.block_bytes, 2, 9300);
        t_finish_and_read_back (store, arena, aligned.block_bytes, 2, 9300);
        kvt_nvme_store_stats (store, &stats);
        assert (stats.short_requeues == 8);
        assert (stats.direct_ops == 4 && stats.bounce_ops == 0);
        uint8_t *whole = (uint8_t *) malloc (aligned.block_bytes);
        int bounced_rc [2];
        for (int i = 0; i < 2; i++) {
            rc = kvt_nvme_prep_read (store, (uint64_t) i, 9300 + (uint64_t) i, whole,
                                     (uint64_t) i);
            assert (rc == 0);
            kvt_nvme_submit (store);
            t_reap_all (store, 1, bounced_rc);
            assert (bounced_rc [i] == 0);
            assert (memcmp (whole, arena + i * aligned.block_bytes, aligned.block_bytes) == 0);
        }
        kvt_nvme_store_stats (store, &stats);
        assert (stats.bounce_ops == 2 && stats.checksum_failures == 0 && stats.misses == 0);
        free (whole);
        kvt_nvme_store_destroy (&store);
    }

    //  Inline checksums do not hold the writes prepared before them: past
    //  submit_hold_bytes of hashing the store submits them itself (with 1,
    //  before every hash but the first), the caller's submit sends the
    //  rest; by default (128 KiB) four 32 KiB blocks wait for the caller
    for (int eager = 0; eager < 2; eager++) {
        kvt_nvme_store_config_t holding = aligned;
        holding.checksum_threads = 1;
        holding.submit_hold_bytes = eager? 1: 0;
        store = t_open_in (dir, eager? "hold-eager": "hold-default", holding, arena,
                           arena_bytes);
        t_prep_writes (store, arena, aligned.block_bytes, 4, 9200);
        kvt_nvme_store_stats (store, &stats);
        assert (stats.checksum_inline == 4);
        assert (stats.early_submits == (eager? 3: 0));
        assert (kvt_nvme_submit (store) >= 1);     //  The last write's I/O at least
        t_finish_and_read_back (store, arena, aligned.block_bytes, 4, 9200);
        kvt_nvme_store_destroy (&store);
    }
    //  Writes whose checksums are in the pool hold their room at the
    //  device: a caller that fills the device up to a depth must not
    //  prepare a depth more behind them (session 31: the card's disk saw
    //  up to three depths of writes at once)
    kvt_nvme_store_config_t pooled = aligned;
    pooled.checksum_threads = 2;
    store = t_open_in (dir, "pooled-depth", pooled, arena, arena_bytes);
    t_prep_writes (store, arena, aligned.block_bytes, 4, 9400);
    kvt_nvme_store_stats (store, &stats);
    assert (stats.checksum_jobs == 4 && stats.checksum_inline == 0);
    assert (kvt_nvme_store_device_inflight (store) == 4);
    t_finish_and_read_back (store, arena, aligned.block_bytes, 4, 9400);
    assert (kvt_nvme_store_device_inflight (store) == 0);
    kvt_nvme_store_destroy (&store);
    munmap (arena, arena_bytes);

    //  Layer groups, in a directory of their own
    for (int threads = 1; threads <= 2; threads++) {
        char group_dir [300];
        snprintf (group_dir, sizeof (group_dir), "%s/groups%d", dir, threads);
        rc = mkdir (group_dir, 0755);
        assert (rc == 0);
        t_layer_groups (group_dir, threads);
    }

    free (src);
    free (dst);
    kvt_log_set_level (saved_level);
    char command [sizeof (dir_template) + 16];
    snprintf (command, sizeof (command), "rm -rf '%s'", dir);
    rc = system (command);
    assert (rc == 0);
    //  @end
    return 0;
}
