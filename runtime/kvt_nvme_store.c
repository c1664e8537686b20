/*  =========================================================================
    kvt_nvme_store - checksummed KV blocks in O_DIRECT files through io_uring

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    See kvt_nvme_store.h for the on-disk layout, the journal and what an
    acknowledgement guarantees, and kvt_nvme_int.h for how the class is
    split. This file: new, open (files, ring, buffers, journal replay,
    checksum pool), the accessors, destroy, and the selftest.
@end
*/

#include "kvt_nvme_int.h"
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <poll.h>

#define S_REGION_MAX_BYTES  (1ULL << 30)            //  Kernel limit per registered iovec

//  Formatted string for bookkeeping: aborts on OOM like kvt_zmalloc.
static char *
s_sprintf (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    char *text = NULL;
    int rc = vasprintf (&text, format, args);
    va_end (args);
    if (rc < 0)
        abort ();
    return text;
}

static size_t
s_round_up (size_t value, size_t unit)
{
    return (value + unit - 1) / unit * unit;
}

//  --------------------------------------------------------------------------
//  Create a store; copies the config. Cannot fail beyond OOM.

kvt_nvme_store_t *
kvt_nvme_store_new (const kvt_nvme_store_config_t *config)
{
    assert (config);
    kvt_nvme_store_t *self = (kvt_nvme_store_t *) kvt_zmalloc (sizeof (kvt_nvme_store_t));
    self->dir_count = config->dirs? config->dir_count: 0;
    if (self->dir_count < 0)
        self->dir_count = 0;
    self->dirs = (char **) kvt_zmalloc (sizeof (char *) * (size_t) (self->dir_count + 1));
    for (int i = 0; i < self->dir_count; i++)
        self->dirs [i] = config->dirs [i]? strdup (config->dirs [i]): NULL;
    self->block_bytes = config->block_bytes;
    self->capacity_blocks = config->capacity_blocks;
    self->queue_depth = config->queue_depth;
    self->files_per_dir = config->files_per_dir;
    self->sync_on_ack = config->sync_on_ack;
    self->sync_per_write = config->sync_per_write;
    self->buffered_fallback = config->buffered_fallback;
    self->journal_compact_bytes = config->journal_compact_bytes;
    self->checksum_threads = config->checksum_threads;
    self->event_fd = -1;
    self->payload_io_bytes = s_round_up (self->block_bytes? self->block_bytes: 1,
                                         KVT_NVME_ALIGN);
    self->stride = KVT_NVME_HEADER_BYTES + self->payload_io_bytes;
    return self;
}


//  --------------------------------------------------------------------------
//  Register caller memory for zero-copy payloads. Before open only.

int
kvt_nvme_store_register_buffer (kvt_nvme_store_t *self, void *base, size_t bytes)
{
    assert (self);
    if (self->opened || !base || bytes == 0 || (uintptr_t) base % KVT_NVME_ALIGN)
        return -EINVAL;
    uint8_t *cursor = (uint8_t *) base;
    size_t left = bytes;
    while (left > 0) {
        if (self->region_count == KVT_NVME_MAX_REGIONS)
            return -ENOSPC;
        size_t chunk = left > S_REGION_MAX_BYTES? S_REGION_MAX_BYTES: left;
        self->regions [self->region_count].base = cursor;
        self->regions [self->region_count].bytes = chunk;
        self->region_count++;
        cursor += chunk;
        left -= chunk;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Release everything open created; leaves the config. Blocks nowhere.

static void
s_close_all (kvt_nvme_store_t *self)
{
    //  First: its workers may still read staging and caller memory
    kvt_nvme_checksum_destroy (&self->checksum);
    if (self->ring_ready) {
        //  Unregister first: queue_exit drops the ring's file references
        //  lazily, which would keep the file system busy after we return.
        (void) io_uring_unregister_files (&self->ring);    //  Fails only if none
        (void) io_uring_unregister_buffers (&self->ring);  //  Ditto
        io_uring_queue_exit (&self->ring);
        self->ring_ready = false;
    }
    if (self->fds) {
        for (int i = 0; i < self->file_count; i++)
            if (self->fds [i] >= 0)
                close (self->fds [i]);
        kvt_freen (self->fds);
    }
    kvt_nvme_journal_destroy (&self->journal);
    if (self->paths) {
        for (int i = 0; i < self->file_count; i++)
            kvt_freen (self->paths [i]);
        kvt_freen (self->paths);
    }
    if (self->event_fd >= 0) {
        close (self->event_fd);
        self->event_fd = -1;
    }
    if (self->staging) {
        munmap (self->staging, self->staging_bytes);
        self->staging = NULL;
    }
    kvt_freen (self->slots);
    kvt_freen (self->ops);
    kvt_freen (self->free_ops);
    kvt_freen (self->done_fifo);
    kvt_freen (self->recovered);
    self->recovered_count = 0;
    self->opened = false;
}

//  Open one data file, O_DIRECT unless refused and fallback allowed.
static int
s_open_data_file (kvt_nvme_store_t *self, const char *path)
{
    //  O_DSYNC only when every write is to flush on its own (sync_per_write);
    //  otherwise sync_on_ack is met by the journal's group commit.
    bool dsync = self->sync_on_ack && self->sync_per_write;
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (dsync? O_DSYNC: 0);
    int fd = open (path, flags | O_DIRECT, 0644);
    if (fd < 0 && errno == EINVAL) {
        if (!self->buffered_fallback) {
            kvt_log_error ("nvme store: %s: the file system refuses O_DIRECT "
                           "(tmpfs or overlay?); choose a directory on a disk", path);
            return -EINVAL;
        }
        kvt_log_warn ("nvme store: %s: O_DIRECT refused, falling back to buffered I/O "
                      "(figures will include the page cache)", path);
        fd = open (path, flags, 0644);
        self->direct_io = false;
    }
    if (fd < 0) {
        int rc = -errno;
        kvt_log_error ("nvme store: cannot open %s: %s", path, strerror (errno));
        return rc;
    }
    return fd;
}

//  Replay the journal into the index; list what came back. Blocks.
static int
s_recover (kvt_nvme_store_t *self)
{
    int64_t started = kvt_now_us ();
    int rc = kvt_nvme_journal_open (self->journal);
    if (rc)
        return rc;
    self->next_generation = kvt_nvme_journal_next_generation (self->journal);
    uint64_t live = 0;
    for (uint64_t slot = 0; slot < self->capacity_blocks; slot++)
        if (self->slots [slot].state == KVT_NVME_SLOT_VALID)
            live++;
    self->recovered = (uint64_t *) kvt_zmalloc ((live? live: 1) * sizeof (uint64_t));
    for (uint64_t slot = 0; slot < self->capacity_blocks; slot++)
        if (self->slots [slot].state == KVT_NVME_SLOT_VALID)
            self->recovered [self->recovered_count++] = slot;
    kvt_nvme_journal_stats_t journal;
    kvt_nvme_journal_stats (self->journal, &journal);
    self->stats.recovered_blocks = live;
    self->stats.recovery_us = (uint64_t) (kvt_now_us () - started);
    kvt_log_info ("nvme store: recovered %" PRIu64 " blocks from %" PRIu64
                  " journal records in %.3f s", live, journal.replayed_records,
                  self->stats.recovery_us / 1e6);
    return 0;
}


//  --------------------------------------------------------------------------
//  Open files, ring, buffers, eventfd; recover. Blocks. 0 or -errno.

int
kvt_nvme_store_open (kvt_nvme_store_t *self)
{
    assert (self);
    if (self->opened)
        return -EALREADY;
    if (self->dir_count < 1 || self->block_bytes == 0 || self->capacity_blocks == 0
    ||  self->queue_depth < 1 || self->queue_depth > 4096 || self->files_per_dir < 1
    ||  self->block_bytes > (1ULL << 31)) {
        kvt_log_error ("nvme store: bad config (dirs %d, block_bytes %zu, capacity %" PRIu64
                       ", queue_depth %d, files_per_dir %d)", self->dir_count,
                       self->block_bytes, self->capacity_blocks, self->queue_depth,
                       self->files_per_dir);
        return -EINVAL;
    }
    for (int i = 0; i < self->dir_count; i++) {
        struct stat st;
        if (!self->dirs [i]) {
            kvt_log_error ("nvme store: directory %d is not set", i);
            return -EINVAL;
        }
        if (stat (self->dirs [i], &st) != 0) {
            int rc = -errno;
            kvt_log_error ("nvme store: directory %s: %s", self->dirs [i], strerror (errno));
            return rc;
        }
        if (!S_ISDIR (st.st_mode)) {
            kvt_log_error ("nvme store: %s is not a directory", self->dirs [i]);
            return -ENOTDIR;
        }
    }
    self->file_count = self->dir_count * self->files_per_dir;
    self->slots_per_file = (self->capacity_blocks + (uint64_t) self->file_count - 1)
                         / (uint64_t) self->file_count;
    self->direct_io = true;
    self->fds = (int *) kvt_zmalloc (sizeof (int) * (size_t) self->file_count);
    for (int i = 0; i < self->file_count; i++)
        self->fds [i] = -1;
    self->paths = (char **) kvt_zmalloc (sizeof (char *) * (size_t) self->file_count);
    self->slots = (kvt_nvme_slot_t *) kvt_zmalloc (sizeof (kvt_nvme_slot_t)
                                                   * self->capacity_blocks);
    kvt_nvme_journal_config_t journal_config = {
        .dir = self->dirs [0], .dir_count = self->dir_count,
        .files_per_dir = self->files_per_dir, .block_bytes = self->block_bytes,
        .capacity_blocks = self->capacity_blocks,
        .compact_bytes = self->journal_compact_bytes, .sync = self->sync_on_ack,
        .group_sync = self->sync_on_ack && !self->sync_per_write,
        .data_file_count = self->file_count
    };
    self->journal = kvt_nvme_journal_new (&journal_config, self->slots, &self->ring,
                                          kvt_nvme_io_journal_ack, self);
    kvt_nvme_journal_inject_fault (self->journal, self->fault_errno [KVT_NVME_FAULT_JOURNAL],
                                   self->fault_count [KVT_NVME_FAULT_JOURNAL]);
    kvt_nvme_journal_inject_sync_fault (self->journal, self->fault_errno [KVT_NVME_FAULT_SYNC],
                                        self->fault_count [KVT_NVME_FAULT_SYNC]);
    memset (&self->stats, 0, sizeof (self->stats));

    int rc = 0;
    off_t file_bytes = (off_t) (self->slots_per_file * self->stride);
    for (int f = 0; f < self->file_count && rc == 0; f++) {
        self->paths [f] = s_sprintf ("%s/kvt-nvme-%03d.dat", self->dirs [f % self->dir_count],
                                        f / self->dir_count);
        int fd = s_open_data_file (self, self->paths [f]);
        if (fd < 0) {
            rc = fd;
            break;
        }
        self->fds [f] = fd;
        struct stat st;
        if (fstat (fd, &st) != 0)
            rc = -errno;
        else
        if (st.st_size < file_bytes && ftruncate (fd, file_bytes) != 0) {
            rc = -errno;
            kvt_log_error ("nvme store: cannot size %s to %jd bytes: %s", self->paths [f],
                           (intmax_t) file_bytes, strerror (errno));
        }
    }
    if (rc == 0)
        rc = s_recover (self);

    //  Ops, staging buffers (registered buffer 0), caller regions (1..)
    if (rc == 0) {
        int qd = self->queue_depth;
        self->ops = (kvt_nvme_op_t *) kvt_zmalloc (sizeof (kvt_nvme_op_t) * (size_t) qd);
        self->free_ops = (int *) kvt_zmalloc (sizeof (int) * (size_t) qd);
        self->done_fifo = (int *) kvt_zmalloc (sizeof (int) * (size_t) qd);
        for (int i = 0; i < qd; i++)
            self->free_ops [i] = qd - 1 - i;
        self->free_count = qd;
        self->done_head = 0;
        self->done_count = 0;
        self->staging_bytes = (size_t) qd * self->stride;
        void *staging = mmap (NULL, self->staging_bytes, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (staging == MAP_FAILED) {
            rc = -errno;
            kvt_log_error ("nvme store: cannot map %zu bytes of staging: %s",
                           self->staging_bytes, strerror (errno));
        }
        else {
            self->staging = (uint8_t *) staging;
            for (int i = 0; i < qd; i++)
                self->ops [i].stage = self->staging + (size_t) i * self->stride;
        }
    }
    if (rc == 0) {
        //  Two parts per op, plus a journal append behind its group fdatasyncs
        unsigned entries = (unsigned) (2 * self->queue_depth + 8 + self->file_count);
        rc = io_uring_queue_init (entries, &self->ring, 0);
        if (rc)
            kvt_log_error ("nvme store: io_uring_queue_init (%u): %s", entries,
                           strerror (-rc));
        else
            self->ring_ready = true;
    }
    if (rc == 0) {
        rc = io_uring_register_files (&self->ring, self->fds, (unsigned) self->file_count);
        if (rc)
            kvt_log_error ("nvme store: io_uring_register_files: %s", strerror (-rc));
    }
    if (rc == 0) {
        struct iovec iov [KVT_NVME_MAX_REGIONS + 1];
        iov [0].iov_base = self->staging;
        iov [0].iov_len = self->staging_bytes;
        for (int i = 0; i < self->region_count; i++) {
            iov [i + 1].iov_base = self->regions [i].base;
            iov [i + 1].iov_len = self->regions [i].bytes;
        }
        rc = io_uring_register_buffers (&self->ring, iov, (unsigned) self->region_count + 1);
        if (rc)
            kvt_log_error ("nvme store: io_uring_register_buffers (%d regions): %s",
                           self->region_count + 1, strerror (-rc));
    }
    if (rc == 0) {
        self->event_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (self->event_fd < 0) {
            rc = -errno;
            kvt_log_error ("nvme store: eventfd: %s", strerror (errno));
        }
        else {
            rc = io_uring_register_eventfd (&self->ring, self->event_fd);
            if (rc)
                kvt_log_error ("nvme store: io_uring_register_eventfd: %s", strerror (-rc));
        }
    }
    int threads = self->checksum_threads > 0? self->checksum_threads
                                            : kvt_nvme_checksum_auto_threads ();
    if (rc == 0 && threads > 1) {
        //  One job per op at most: the rings never fill
        self->checksum = kvt_nvme_checksum_new (threads, self->queue_depth, self->event_fd);
        if (!self->checksum)
            rc = -EAGAIN;
    }
    if (rc) {
        s_close_all (self);
        return rc;
    }
    self->opened = true;
    kvt_log_info ("nvme store: %d files in %d dirs, %" PRIu64 " slots of %zu bytes "
                  "(stride %zu), queue depth %d%s%s, checksums on %d thread%s",
                  self->file_count, self->dir_count, self->capacity_blocks, self->block_bytes,
                  self->stride, self->queue_depth, self->direct_io? ", O_DIRECT": ", buffered",
                  !self->sync_on_ack? "": self->sync_per_write? ", sync on ack (each write)"
                                                             : ", sync on ack (group commit)",
                  threads > 1? threads: 1, threads > 1? "s": " (inline)");
    return 0;
}


//  --------------------------------------------------------------------------
//  Return the completion eventfd, or -1 before open.

int
kvt_nvme_store_eventfd (kvt_nvme_store_t *self)
{
    assert (self);
    return self->opened? self->event_fd: -1;
}

//  --------------------------------------------------------------------------
//  Recovery results.

uint64_t
kvt_nvme_store_recovered_count (kvt_nvme_store_t *self)
{
    assert (self);
    return self->recovered_count;
}

int
kvt_nvme_store_recovered (kvt_nvme_store_t *self, uint64_t index, uint64_t *slot,
                          uint64_t *block_hash)
{
    assert (self);
    if (index >= self->recovered_count)
        return -ERANGE;
    uint64_t found = self->recovered [index];
    if (slot)
        *slot = found;
    if (block_hash)
        *block_hash = self->slots [found].block_hash;
    return 0;
}


//  --------------------------------------------------------------------------
//  True if 'slot' holds an acknowledged block; gives its hash.

bool
kvt_nvme_store_has (kvt_nvme_store_t *self, uint64_t slot, uint64_t *block_hash)
{
    assert (self);
    if (!self->opened || slot >= self->capacity_blocks
    ||  self->slots [slot].state != KVT_NVME_SLOT_VALID)
        return false;
    if (block_hash)
        *block_hash = self->slots [slot].block_hash;
    return true;
}


//  --------------------------------------------------------------------------
//  Copy the counters.

void
kvt_nvme_store_stats (kvt_nvme_store_t *self, kvt_nvme_store_stats_t *stats)
{
    assert (self);
    assert (stats);
    *stats = self->stats;
    if (self->journal) {
        //  A failed append fails each write it carried
        kvt_nvme_journal_stats_t journal;
        kvt_nvme_journal_stats (self->journal, &journal);
        stats->io_errors += journal.failed_ops;
        stats->enospc += journal.failed_enospc;
        stats->journal_writes = journal.writes;
        stats->journal_records = journal.records;
        stats->journal_rotations = journal.rotations;
        stats->recovery_skipped = journal.recovery_skipped;
        stats->syncs += journal.syncs;
        stats->sync_groups = journal.sync_groups;
    }
}


//  --------------------------------------------------------------------------
//  Bytes per slot on disk.

size_t
kvt_nvme_store_stride (kvt_nvme_store_t *self)
{
    assert (self);
    return self->stride;
}


//  --------------------------------------------------------------------------
//  File path and offset of a slot's header.

int
kvt_nvme_store_slot_location (kvt_nvme_store_t *self, uint64_t slot, char *path,
                              size_t path_size, uint64_t *offset)
{
    assert (self);
    if (!self->opened || slot >= self->capacity_blocks)
        return -ERANGE;
    int file = (int) (slot % (uint64_t) self->file_count);
    if (path)
        snprintf (path, path_size, "%s", self->paths [file]);
    if (offset)
        *offset = (slot / (uint64_t) self->file_count) * self->stride;
    return 0;
}


//  --------------------------------------------------------------------------
//  TEST ONLY: fail the next 'count' completions of 'kind' with -err.

void
kvt_nvme_store_inject_fault (kvt_nvme_store_t *self, kvt_nvme_fault_t kind, int err,
                             int count)
{
    assert (self);
    assert (kind >= 0 && kind < KVT_NVME_FAULT_KINDS);
    self->fault_errno [kind] = err < 0? -err: err;
    self->fault_count [kind] = count;
    if (kind == KVT_NVME_FAULT_JOURNAL && self->journal)
        kvt_nvme_journal_inject_fault (self->journal, err, count);
    if (kind == KVT_NVME_FAULT_SYNC && self->journal)
        kvt_nvme_journal_inject_sync_fault (self->journal, err, count);
}


//  --------------------------------------------------------------------------
//  Drain, flush the journal, close. Blocks. NULL-safe.

void
kvt_nvme_store_destroy (kvt_nvme_store_t **self_p)
{
    assert (self_p);
    kvt_nvme_store_t *self = *self_p;
    if (!self)
        return;
    if (self->opened) {
        //  Finish what is in flight so no DMA targets freed memory, and
        //  append the records of writes that completed.
        kvt_nvme_io_drain (self);
        //  A clean close leaves everything acknowledged on stable storage
        for (int i = 0; i < self->file_count; i++)
            if (self->fds [i] >= 0 && fdatasync (self->fds [i]) != 0)
                kvt_log_warn ("nvme store: fdatasync %s: %s", self->paths [i],
                              strerror (errno));
        (void) kvt_nvme_journal_flush (self->journal);     //  Logs a failure
    }
    s_close_all (self);
    for (int i = 0; i < self->dir_count; i++)
        kvt_freen (self->dirs [i]);
    kvt_freen (self->dirs);
    kvt_freen (self);
    *self_p = NULL;
}


//  --------------------------------------------------------------------------
//  Selftest

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

int
kvt_nvme_store_test (bool verbose)
{
    //  @selftest
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
        kvt_nvme_submit (store);
        t_reap_all (store, 8, rc_by_tag);
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
    munmap (arena, arena_bytes);

    free (src);
    free (dst);
    kvt_log_set_level (saved_level);
    char *command = s_sprintf ("rm -rf '%s'", dir);
    rc = system (command);
    assert (rc == 0);
    kvt_freen (command);
    //  @end
    return 0;
}
