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
    checksum pool), the accessors and destroy; kvt_nvme_store_test.c holds
    the selftest.
@end
*/

#include "kvt_nvme_int.h"
#include "kvt_huge.h"
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <poll.h>

#define S_REGION_MAX_BYTES  (1ULL << 30)            //  Kernel limit per registered iovec

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
    self->bounce_reads = config->bounce_reads;
    self->split_writes = config->split_writes;
    self->submit_hold_bytes = config->submit_hold_bytes? config->submit_hold_bytes
                                                       : KVT_NVME_SUBMIT_HOLD_BYTES;
    self->journal_compact_bytes = config->journal_compact_bytes;
    self->checksum_threads = config->checksum_threads;
    self->pool_under_load = config->checksum_threads <= 0 || config->checksum_under_load;
    self->event_fd = -1;
    self->payload_io_bytes = s_round_up (self->block_bytes? self->block_bytes: 1,
                                         KVT_NVME_ALIGN);
    self->stride = KVT_NVME_HEADER_BYTES + self->payload_io_bytes;
    self->group_count = kvt_nvme_layer_groups (self->block_bytes, config->layers,
                                               config->layer_groups, self->group_offset);
    return self;
}


//  --------------------------------------------------------------------------
//  Layer groups a geometry allows: 'wanted', or 1 when a group would not
//  start on a 4096-byte boundary.

int
kvt_nvme_layer_groups (size_t block_bytes, int layers, int wanted, uint64_t *offsets)
{
    int groups = wanted;
    if (groups > layers)
        groups = layers;
    if (groups > KVT_NVME_MAX_GROUPS)
        groups = KVT_NVME_MAX_GROUPS;
    if (groups < 2 || block_bytes == 0 || block_bytes % KVT_NVME_ALIGN
    ||  block_bytes % (size_t) layers)
        groups = 1;
    size_t layer_bytes = groups > 1? block_bytes / (size_t) layers: 0;
    for (int g = 1; g < groups; g++)
        if ((size_t) (g * layers / groups) * layer_bytes % KVT_NVME_ALIGN) {
            groups = 1;
            break;
        }
    if (offsets) {
        for (int g = 0; g < groups; g++)
            offsets [g] = (uint64_t) (g * layers / groups) * layer_bytes;
        offsets [groups] = block_bytes;
    }
    return groups;
}


//  --------------------------------------------------------------------------
//  Layer groups of the store's blocks.

int
kvt_nvme_store_group_count (kvt_nvme_store_t *self)
{
    assert (self);
    return self->group_count;
}


//  --------------------------------------------------------------------------
//  Whether reads land straight in registered memory (see header).

int
kvt_nvme_direct_reads (const char *mode, bool caller_large_pages, bool staging_large_pages)
{
    if (!mode)
        return -EINVAL;
    if (strcmp (mode, "on") == 0)
        return 1;
    if (strcmp (mode, "off") == 0)
        return 0;
    if (strcmp (mode, "auto") == 0)
        return caller_large_pages || !staging_large_pages;
    return -EINVAL;
}


//  --------------------------------------------------------------------------
//  Register caller memory for zero-copy payloads. Before open only.

void
kvt_nvme_store_set_bounce_reads (kvt_nvme_store_t *self, bool bounce)
{
    assert (self);
    self->bounce_reads = bounce;
}

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
        kvt_huge_free (self->staging, self->staging_bytes);
        self->staging = NULL;
    }
    kvt_freen (self->slots);
    kvt_freen (self->group_cache);
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

//  Give a new data file its full size: reserved on the disk (fallocate),
//  so the tier's capacity is there when it fills and its first writes do
//  not allocate; where the file system cannot reserve it (no room,
//  tmpfs, no fallocate), sparse (ftruncate) with a warning, and a write
//  may then meet a full disk (ENOSPC, handled). Returns 0 or -1 (errno).
static int
s_reserve (const char *path, int fd, off_t bytes)
{
    if (fallocate (fd, 0, 0, bytes) == 0)
        return 0;
    kvt_log_warn ("nvme store: cannot reserve %jd bytes for %s (%s): the file stays sparse, "
                  "and writes may find the disk full", (intmax_t) bytes, path, strerror (errno));
    return ftruncate (fd, bytes);
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
    if (self->group_count > 1)
        self->group_cache = (uint64_t *) kvt_zmalloc (sizeof (uint64_t) * KVT_NVME_GROUP_CACHE
                                                      * (2 + (size_t) self->group_count));
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
        self->paths [f] = kvt_sprintf ("%s/kvt-nvme-%03d.dat", self->dirs [f % self->dir_count],
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
        if (st.st_size < file_bytes && s_reserve (self->paths [f], fd, file_bytes) != 0) {
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
        //  On huge pages where allowed: a bounce read is then one segment
        //  for the disk, not one per 4 KiB page (kvt_huge.h)
        void *staging = kvt_huge_alloc (self->staging_bytes, true);
        if (!staging) {
            rc = -errno;
            kvt_log_error ("nvme store: cannot map %zu bytes of staging: %s",
                           self->staging_bytes, strerror (errno));
        }
        else {
            self->staging = (uint8_t *) staging;
            self->stats.staging_bytes = self->staging_bytes;
            size_t large = kvt_huge_large_bytes (staging, self->staging_bytes);
            self->stats.staging_large_bytes = large == SIZE_MAX? UINT64_MAX: large;
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
        kvt_hash_load_init (&self->hash_load);
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
        stats->journal_append_us = journal.append_us;
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
