/*  =========================================================================
    kvt_nvme_journal - the NVMe store's manifest: an append-only journal of
    checksummed records, replayed at open and compacted while running

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    See kvt_nvme_journal.h. This file: the on-disk format, replay and
    rewrite at open, appends (with group commit), rotation, the selftest.
@end
*/

#include "kvt_classes.h"
#include "kvt_nvme_journal.h"
#include "kvt_nvme_journal_int.h"

static int
s_get_sqe (struct io_uring *ring, struct io_uring_sqe **sqe_p)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe (ring);
    if (!sqe) {
        int rc = io_uring_submit (ring);
        if (rc < 0)
            return rc;
        sqe = io_uring_get_sqe (ring);
        if (!sqe)
            return -EBUSY;
    }
    *sqe_p = sqe;
    return 0;
}

static void
s_batch_push (s_batch_t *batch, const s_record_t *record, int op_index)
{
    if (batch->count == batch->capacity) {
        size_t capacity = batch->capacity? batch->capacity * 2: 64;
        s_record_t *records = (s_record_t *) realloc (batch->records,
                                                      capacity * sizeof (s_record_t));
        int *ops = (int *) realloc (batch->ops, capacity * sizeof (int));
        if (!records || !ops)
            abort ();               //  Bookkeeping allocation: OOM aborts
        batch->records = records;
        batch->ops = ops;
        batch->capacity = capacity;
    }
    batch->records [batch->count] = *record;
    batch->ops [batch->count] = op_index;
    batch->count++;
}



//  --------------------------------------------------------------------------
//  Create a journal; touches no file. Cannot fail beyond OOM.

kvt_nvme_journal_t *
kvt_nvme_journal_new (const kvt_nvme_journal_config_t *config, kvt_nvme_slot_t *slots,
                      struct io_uring *ring, kvt_nvme_journal_ack_fn *ack, void *ack_arg)
{
    assert (config && config->dir);
    assert (slots || config->capacity_blocks == 0);
    kvt_nvme_journal_t *self = (kvt_nvme_journal_t *) kvt_zmalloc (sizeof (*self));
    self->config = *config;
    self->dir = strdup (config->dir);
    self->config.dir = self->dir;
    self->path = kvt_sprintf ("%s/%s", self->dir, S_JOURNAL_NAME);
    self->next_path = kvt_sprintf ("%s/%s", self->dir, S_JOURNAL_NEXT);
    self->slots = slots;
    self->ring = ring;
    self->ack = ack;
    self->ack_arg = ack_arg;
    self->fd = -1;
    self->old_fd = -1;
    self->rotate_fd = -1;
    self->limit = config->compact_bytes? config->compact_bytes: S_JOURNAL_LIMIT;
    int files = config->data_file_count > 0? config->data_file_count: 1;
    self->dirty = (bool *) kvt_zmalloc (sizeof (bool) * (size_t) files);
    return self;
}

//  --------------------------------------------------------------------------
//  Queue a record for the next append.

void
kvt_nvme_journal_add (kvt_nvme_journal_t *self, uint64_t slot, uint64_t block_hash,
                      uint64_t generation, uint64_t payload_checksum, bool drop,
                      int op_index, int data_file)
{
    assert (self);
    s_record_t record = {
        .slot = slot | (drop? S_DROP_FLAG: 0), .block_hash = block_hash,
        .generation = generation, .payload_checksum = payload_checksum
    };
    bool sync_first = self->config.group_sync && op_index >= 0 && data_file >= 0
                   && data_file < self->config.data_file_count;
    //  Replay orders records by generation, not by place: a write's record
    //  may land after a later forget's, and the latest still wins
    s_batch_push (sync_first? &self->unsynced: &self->pending, &record, op_index);
    if (sync_first)
        self->dirty [data_file] = true;
}

static void s_sync_done (kvt_nvme_journal_t *self, int rc);

//  Group commit, first stage: if no data sync is in flight, fdatasync
//  every data file the unsynced writes touched, all at once (one SQE per
//  file, run in parallel); their records move on to the append when all
//  are done. Takes every SQE or none.
static int
s_sync_step (kvt_nvme_journal_t *self)
{
    if (self->syncs_inflight > 0 || self->unsynced.count == 0)
        return 0;
    int files = 0;
    for (int f = 0; f < self->config.data_file_count; f++)
        files += self->dirty [f];
    if (io_uring_sq_space_left (self->ring) < (unsigned) files) {
        int rc = io_uring_submit (self->ring);
        if (rc < 0)
            return rc;
        if (io_uring_sq_space_left (self->ring) < (unsigned) files)
            return -EAGAIN;
    }
    for (int f = 0; f < self->config.data_file_count; f++) {
        if (!self->dirty [f])
            continue;
        struct io_uring_sqe *sqe = io_uring_get_sqe (self->ring);
        io_uring_prep_fsync (sqe, f, IORING_FSYNC_DATASYNC);
        sqe->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data64 (sqe, S_SYNC_UD);
        self->dirty [f] = false;
    }
    s_batch_t swap = self->syncing;
    self->syncing = self->unsynced;
    self->unsynced = swap;
    self->unsynced.count = 0;
    self->syncs_inflight = files;
    self->sync_rc = 0;
    if (self->sync_fault_count > 0) {
        self->sync_fault_count--;
        self->sync_rc = -self->sync_fault_errno;
    }
    self->stats.syncs += (uint64_t) files;
    self->stats.sync_groups++;
    if (files == 0)
        s_sync_done (self, self->sync_rc);  //  Nothing to flush (not expected)
    return 0;
}

//  The syncing group's data is durable (rc 0): on to the append. Or it
//  is not: its writes fail.
static void
s_sync_done (kvt_nvme_journal_t *self, int rc)
{
    if (rc) {
        self->stats.failed_ops += self->syncing.count;
        if (rc == -ENOSPC || rc == -EDQUOT)
            self->stats.failed_enospc += self->syncing.count;
        kvt_log_warn ("nvme store: fdatasync of a group of %zu writes failed: %s; not "
                      "acknowledged", self->syncing.count, kvt_strerror (rc));
    }
    for (size_t i = 0; i < self->syncing.count; i++)
        if (rc == 0)
            s_batch_push (&self->pending, &self->syncing.records [i], self->syncing.ops [i]);
        else
        if (self->ack)
            self->ack (self->ack_arg, self->syncing.ops [i], rc);
    self->syncing.count = 0;
}

//  Take the next step of a journal rotation if one is due and none is in
//  flight. Never waits: each step is one SQE, finished in s_rotate_done.
static void
s_rotate_step (kvt_nvme_journal_t *self)
{
    if (self->rotate_busy)
        return;
    struct io_uring_sqe *sqe;
    if (self->rotate_state == S_ROT_IDLE) {
        if (self->closing || self->end - self->base < self->limit
        ||  s_get_sqe (self->ring, &sqe))
            return;
        io_uring_prep_openat (sqe, AT_FDCWD, self->next_path,
                              O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        self->rotate_state = S_ROT_OPENING;
    }
    else
    if (self->rotate_state == S_ROT_SWITCH) {
        self->pause = true;         //  No new appends to the old journal
        if (self->closing) {
            //  Not worth finishing now: drop the empty next journal
            close (self->rotate_fd);
            self->rotate_fd = -1;
            self->pause = false;
            self->rotate_state = S_ROT_IDLE;
            return;
        }
        if (self->busy || s_get_sqe (self->ring, &sqe))
            return;                 //  Switch once the append in flight is done
        uint64_t entropy [3] = { (uint64_t) kvt_now_us (), self->seed, self->end };
        self->rotate_seed = XXH3_64bits (entropy, sizeof (entropy)) | 1;
        s_header_fill (self, &self->rotate_header, self->rotate_seed);
        io_uring_prep_write (sqe, self->rotate_fd, &self->rotate_header,
                             sizeof (self->rotate_header), 0);
        if (self->config.sync)
            sqe->rw_flags = RWF_DSYNC;
        self->rotate_state = S_ROT_HEADER;
    }
    else
    if (self->rotate_state == S_ROT_RENAME) {
        if (s_get_sqe (self->ring, &sqe))
            return;
        io_uring_prep_renameat (sqe, AT_FDCWD, self->next_path, AT_FDCWD, self->path, 0);
        self->rotate_state = S_ROT_RENAMING;
    }
    else
        return;
    io_uring_sqe_set_data64 (sqe, S_ROTATE_UD);
    self->rotate_busy = true;
}

//  A rotation step completed with 'res'.
static void
s_rotate_done (kvt_nvme_journal_t *self, int res)
{
    self->rotate_busy = false;
    if (self->rotate_state == S_ROT_OPENING) {
        if (res < 0) {
            kvt_log_warn ("nvme store: cannot open %s: %s; journal not compacted",
                          self->next_path, strerror (-res));
            self->rotate_state = S_ROT_IDLE;
            self->base = self->end;             //  Try again later
        }
        else {
            self->rotate_fd = res;
            self->rotate_state = S_ROT_SWITCH;
        }
    }
    else
    if (self->rotate_state == S_ROT_HEADER) {
        if (res != (int) sizeof (self->rotate_header)) {
            kvt_log_warn ("nvme store: cannot write %s: %s; journal not compacted",
                          self->next_path, res < 0? strerror (-res): "short write");
            close (self->rotate_fd);    //  An empty file: nothing to flush
            self->rotate_fd = -1;
            self->rotate_state = S_ROT_IDLE;
            self->base = self->end;
        }
        else {
            //  From here appends go to the next journal; open replays both
            self->old_fd = self->fd;
            self->fd = self->rotate_fd;
            self->rotate_fd = -1;
            self->seed = self->rotate_seed;
            self->end = sizeof (self->rotate_header);
            self->rotate_cursor = 0;
            self->rotate_state = S_ROT_SNAPSHOT;
        }
        self->pause = false;
    }
    else
    if (self->rotate_state == S_ROT_RENAMING) {
        struct io_uring_sqe *sqe;
        if (res < 0) {
            //  Both files stay: open replays both. Rotating again would
            //  truncate the next journal, which now holds the newest records.
            kvt_log_error ("nvme store: cannot rename %s: %s; journal compaction off "
                           "until restart", self->next_path, strerror (-res));
            self->rotate_state = S_ROT_DISABLED;
        }
        else
        if (s_get_sqe (self->ring, &sqe) == 0) {
            //  The old journal is unlinked now; its last close frees it
            io_uring_prep_close (sqe, self->old_fd);
            io_uring_sqe_set_data64 (sqe, S_ROTATE_UD);
            self->old_fd = -1;
            self->rotate_busy = true;
            self->rotate_state = S_ROT_CLOSING;
        }
        else {
            close (self->old_fd);
            self->old_fd = -1;
            self->rotate_state = S_ROT_CLOSING;
            s_rotate_done (self, 0);
        }
    }
    else
    if (self->rotate_state == S_ROT_CLOSING) {
        self->rotate_state = S_ROT_IDLE;
        self->base = self->end;
        self->stats.rotations++;
        kvt_log_debug ("nvme store: journal compacted to %" PRIu64 " bytes", self->end);
    }
}

//  Add the next slice of the index to the pending batch, as records of
//  the next journal. Looks at S_SNAPSHOT_SCAN slots at most.
static void
s_snapshot_slice (kvt_nvme_journal_t *self)
{
    uint64_t capacity = self->config.capacity_blocks;
    uint64_t end = self->rotate_cursor + S_SNAPSHOT_SCAN;
    if (end > capacity)
        end = capacity;
    for (uint64_t slot = self->rotate_cursor; slot < end; slot++) {
        kvt_nvme_slot_t *entry = &self->slots [slot];
        if (entry->state != KVT_NVME_SLOT_VALID)
            continue;               //  Writes in flight bring their own record
        s_record_t record = {
            .slot = slot, .block_hash = entry->block_hash,
            .generation = entry->generation, .payload_checksum = entry->checksum
        };
        s_batch_push (&self->pending, &record, -1);
    }
    self->rotate_cursor = end;
    if (end == capacity)
        self->rotate_state = S_ROT_FLUSH;
}

//  Queue the append (or its remainder after a short write) as one SQE.
static int
s_queue_append (kvt_nvme_journal_t *self)
{
    struct io_uring_sqe *sqe;
    int rc = s_get_sqe (self->ring, &sqe);
    if (rc)
        return rc;
    if (self->faulted)
        io_uring_prep_nop (sqe);    //  Injected: the append must not land
    else {
        uint32_t total = (uint32_t) (self->inflight.count * sizeof (s_record_t));
        io_uring_prep_write (sqe, self->fd, (uint8_t *) self->inflight.records
                             + self->done_bytes, total - self->done_bytes,
                             self->write_offset + self->done_bytes);
        if (self->config.sync)
            sqe->rw_flags = RWF_DSYNC;
    }
    io_uring_sqe_set_data64 (sqe, S_APPEND_UD);
    return 0;
}


//  --------------------------------------------------------------------------
//  Start a group's data sync and an append of the pending batch if none
//  is in flight, and move a rotation along. Record checksums are taken
//  here, with the seed of the journal the batch goes to.

int
kvt_nvme_journal_kick (kvt_nvme_journal_t *self)
{
    assert (self);
    int rc = s_sync_step (self);
    if (rc)
        return rc;
    s_rotate_step (self);
    if (self->busy || self->pause || self->fd < 0)
        return 0;
    if (self->rotate_state == S_ROT_SNAPSHOT && !self->closing) {
        s_snapshot_slice (self);
        if (self->rotate_state == S_ROT_FLUSH && self->pending.count == 0) {
            self->rotate_state = S_ROT_RENAME;      //  Nothing left to append
            s_rotate_step (self);
            return 0;
        }
    }
    if (self->pending.count == 0)
        return 0;
    s_batch_t swap = self->inflight;
    self->inflight = self->pending;
    self->pending = swap;
    self->pending.count = 0;
    for (size_t i = 0; i < self->inflight.count; i++)
        self->inflight.records [i].record_checksum =
            s_record_checksum (&self->inflight.records [i], self->seed);
    self->done_bytes = 0;
    self->write_offset = self->end;
    //  An injected fault fails the next append that carries writes, not a
    //  rotation's snapshot slice (whether one is due depends on timing)
    bool carries_writes = false;
    for (size_t i = 0; i < self->inflight.count; i++)
        carries_writes |= self->inflight.ops [i] >= 0;
    self->faulted = self->fault_count > 0 && carries_writes;
    rc = s_queue_append (self);
    if (rc) {
        //  Undo: the records go back to pending for the next try
        swap = self->pending;
        self->pending = self->inflight;
        self->inflight = swap;
        self->inflight.count = 0;
        self->faulted = false;
        return rc;
    }
    if (self->faulted)
        self->fault_count--;
    self->snapshot_in_flight = self->rotate_state == S_ROT_FLUSH;
    self->busy = true;
    self->append_start_us = kvt_now_us ();
    self->end += self->inflight.count * sizeof (s_record_t);
    return 0;
}

//  The append and its syncs are all done: acknowledge or fail its ops.
static void
s_append_done (kvt_nvme_journal_t *self, int rc)
{
    if (rc) {
        uint64_t failed_ops = 0;
        for (size_t i = 0; i < self->inflight.count; i++)
            failed_ops += self->inflight.ops [i] >= 0;
        self->stats.failed_ops += failed_ops;
        if (rc == -ENOSPC || rc == -EDQUOT)
            self->stats.failed_enospc += failed_ops;
        kvt_log_warn ("nvme store: journal append of %zu records failed: %s; %" PRIu64
                      " writes not acknowledged", self->inflight.count, kvt_strerror (rc),
                      failed_ops);
    }
    else {
        self->stats.writes++;
        self->stats.records += self->inflight.count;
    }
    self->stats.append_us += (uint64_t) (kvt_now_us () - self->append_start_us);
    for (size_t i = 0; i < self->inflight.count; i++)
        if (self->inflight.ops [i] >= 0 && self->ack)
            self->ack (self->ack_arg, self->inflight.ops [i], rc);
    self->inflight.count = 0;
    self->busy = false;
    if (self->snapshot_in_flight) {
        //  The last slice of a rotation's snapshot: on to the rename
        self->snapshot_in_flight = false;
        self->rotate_state = rc == 0? S_ROT_RENAME: S_ROT_SNAPSHOT;
        if (rc)
            self->rotate_cursor = 0;
    }
    else
    if (rc && self->rotate_state == S_ROT_SNAPSHOT)
        self->rotate_cursor = 0;    //  A slice may be lost: snapshot again
}

//  The append completed with 'res': requeue a short or interrupted
//  write, else finish.
static void
s_append_settle (kvt_nvme_journal_t *self, int res)
{
    uint32_t total = (uint32_t) (self->inflight.count * sizeof (s_record_t));
    if (self->faulted) {
        self->faulted = false;
        res = -self->fault_errno;
    }
    else
    if (res == -EAGAIN || res == -EINTR) {
        if (s_queue_append (self) == 0)
            return;
        res = -EIO;
    }
    else
    if (res > 0 && self->done_bytes + (uint32_t) res < total) {
        self->done_bytes += (uint32_t) res;
        if (s_queue_append (self) == 0)
            return;
        res = -EIO;
    }
    if (res == 0 && total > 0)
        res = -EIO;
    self->faulted = false;
    s_append_done (self, res < 0? res: 0);
}


//  --------------------------------------------------------------------------
//  Handle one of the journal's completions.

void
kvt_nvme_journal_complete (kvt_nvme_journal_t *self, uint64_t user_data, int res)
{
    assert (self);
    if (user_data == S_ROTATE_UD)
        s_rotate_done (self, res);
    else
    if (user_data == S_SYNC_UD) {
        assert (self->syncs_inflight > 0);
        if (res < 0 && self->sync_rc == 0)
            self->sync_rc = res;
        if (--self->syncs_inflight == 0)
            s_sync_done (self, self->sync_rc);
    }
    else {
        assert (user_data == S_APPEND_UD && self->busy);
        s_append_settle (self, res);
    }
}

bool
kvt_nvme_journal_busy (kvt_nvme_journal_t *self)
{
    assert (self);
    return self->busy || self->rotate_busy || self->syncs_inflight > 0;
}

size_t
kvt_nvme_journal_pending (kvt_nvme_journal_t *self)
{
    assert (self);
    return self->pending.count + self->unsynced.count;
}

void
kvt_nvme_journal_set_closing (kvt_nvme_journal_t *self)
{
    assert (self);
    self->closing = true;
}

int
kvt_nvme_journal_flush (kvt_nvme_journal_t *self)
{
    assert (self);
    if (self->fd >= 0 && fdatasync (self->fd) != 0) {
        int rc = -errno;
        kvt_log_warn ("nvme store: fdatasync journal: %s", strerror (errno));
        return rc;
    }
    return 0;
}

void
kvt_nvme_journal_stats (kvt_nvme_journal_t *self, kvt_nvme_journal_stats_t *stats)
{
    assert (self);
    assert (stats);
    *stats = self->stats;
}

void
kvt_nvme_journal_inject_fault (kvt_nvme_journal_t *self, int err, int count)
{
    assert (self);
    self->fault_errno = err < 0? -err: err;
    self->fault_count = count;
}

void
kvt_nvme_journal_inject_sync_fault (kvt_nvme_journal_t *self, int err, int count)
{
    assert (self);
    self->sync_fault_errno = err < 0? -err: err;
    self->sync_fault_count = count;
}


//  --------------------------------------------------------------------------
//  Close the files. NULL-safe.

void
kvt_nvme_journal_destroy (kvt_nvme_journal_t **self_p)
{
    assert (self_p);
    kvt_nvme_journal_t *self = *self_p;
    if (!self)
        return;
    int *fds [3] = { &self->fd, &self->old_fd, &self->rotate_fd };
    for (int i = 0; i < 3; i++)
        if (*fds [i] >= 0)
            close (*fds [i]);
    free (self->pending.records);
    free (self->pending.ops);
    free (self->inflight.records);
    free (self->inflight.ops);
    free (self->unsynced.records);
    free (self->unsynced.ops);
    free (self->syncing.records);
    free (self->syncing.ops);
    free (self->dirty);
    free (self->path);
    free (self->next_path);
    free (self->dir);
    free (self);
    *self_p = NULL;
}


//  --------------------------------------------------------------------------
//  Selftest

typedef struct {
    kvt_nvme_slot_t *slots;         //  The index the acks update
    uint64_t *hash_of_op;           //  What each op index wrote
    uint64_t *generation_of_op;     //  ...and with which generation
    int acks;                       //  Acks with rc 0
    int failures;                   //  Acks with rc < 0
    int last_rc;                    //  rc of the last failure
} t_acks_t;

static void
t_ack (void *arg, int op_index, int rc)
{
    t_acks_t *acks = (t_acks_t *) arg;
    if (rc) {
        acks->failures++;
        acks->last_rc = rc;
        return;
    }
    acks->acks++;
    kvt_nvme_slot_t *entry = &acks->slots [op_index];     //  Op index = slot here
    entry->state = KVT_NVME_SLOT_VALID;
    entry->block_hash = acks->hash_of_op [op_index];
    entry->generation = acks->generation_of_op [op_index];
    entry->checksum = entry->block_hash ^ 0x5555;
}

//  Handle what the ring has; with 'block', wait until the journal is idle.
static void
t_pump (kvt_nvme_journal_t *journal, struct io_uring *ring, bool block)
{
    do {
        int rc = kvt_nvme_journal_kick (journal);
        assert (rc == 0);
        io_uring_submit (ring);
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe (ring, &cqe) == 0 && cqe) {
            uint64_t user_data = io_uring_cqe_get_data64 (cqe);
            int res = cqe->res;
            io_uring_cqe_seen (ring, cqe);
            kvt_nvme_journal_complete (journal, user_data, res);
        }
        if (block && kvt_nvme_journal_busy (journal)) {
            //  Completions above may have queued SQEs (a rotation's next
            //  step, a requeued append): submit them, then wait
            rc = io_uring_submit_and_wait (ring, 1);
            assert (rc >= 0);
        }
    } while (block && (kvt_nvme_journal_busy (journal) || kvt_nvme_journal_pending (journal)));
}

int
kvt_nvme_journal_test (bool verbose)
{
    //  @selftest
    char dir_template [] = "/var/tmp/kvt-nvme-journal-test-XXXXXX";
    char *dir = mkdtemp (dir_template);
    assert (dir);
    enum { CAPACITY = 300 };
    kvt_log_level_t saved_level = kvt_log_level ();
    if (!verbose)
        kvt_log_set_level (KVT_LOG_ERROR);
    char *data_path = kvt_sprintf ("%s/data", dir);
    int data_fd = open (data_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    assert (data_fd >= 0);
    struct io_uring ring;
    int rc = io_uring_queue_init (64, &ring, 0);
    assert (rc == 0);
    rc = io_uring_register_files (&ring, &data_fd, 1);
    assert (rc == 0);
    kvt_nvme_journal_config_t config = {
        .dir = dir, .dir_count = 1, .files_per_dir = 1, .block_bytes = 4096,
        .capacity_blocks = CAPACITY, .compact_bytes = 2048, .sync = true,
        .group_sync = true, .data_file_count = 1
    };
    kvt_nvme_slot_t slots [CAPACITY];
    uint64_t hash_of_op [CAPACITY], generation_of_op [CAPACITY];
    memset (slots, 0, sizeof (slots));
    t_acks_t acks = { slots, hash_of_op, generation_of_op, 0, 0, 0 };
    kvt_nvme_journal_t *journal = kvt_nvme_journal_new (&config, slots, &ring, t_ack, &acks);
    rc = kvt_nvme_journal_open (journal);
    assert (rc == 0);
    uint64_t generation = kvt_nvme_journal_next_generation (journal);
    assert (generation >= S_GENERATION_SKIP);

    //  Writes done close together share appends and their fdatasyncs;
    //  rotations run among them; forgets are journaled too
    int written = 0;
    for (int round = 0; round < 6; round++)
        for (int slot = 0; slot < CAPACITY; slot++) {
            if ((slot + round) % 7 == 0) {
                if (slots [slot].state == KVT_NVME_SLOT_VALID) {
                    memset (&slots [slot], 0, sizeof (slots [slot]));
                    slots [slot].generation = generation;
                    kvt_nvme_journal_add (journal, (uint64_t) slot, 0, generation++, 0, true,
                                          -1, -1);
                }
                continue;
            }
            hash_of_op [slot] = (uint64_t) round << 32 | (uint64_t) slot | 1;
            generation_of_op [slot] = generation;
            slots [slot].state = KVT_NVME_SLOT_WRITING;
            kvt_nvme_journal_add (journal, (uint64_t) slot, hash_of_op [slot], generation++,
                                  hash_of_op [slot] ^ 0x5555, false, slot, 0);
            written++;
            if (slot % 10 == 0)
                t_pump (journal, &ring, false);
            if (slot % 100 == 0)    //  Let appends land sometimes
                t_pump (journal, &ring, true);
        }
    t_pump (journal, &ring, true);
    kvt_nvme_journal_stats_t stats;
    kvt_nvme_journal_stats (journal, &stats);
    if (verbose)
        printf ("journal: %d writes, %" PRIu64 " appends, %" PRIu64 " syncs, %" PRIu64
                " rotations\n", written, stats.writes, stats.syncs, stats.rotations);
    assert (acks.acks == written && acks.failures == 0);
    assert (stats.syncs == stats.sync_groups);          //  One data file
    assert (stats.syncs > 0 && stats.syncs * 4 < (uint64_t) written);
    assert (stats.rotations >= 3);

    //  A failed append fails its writes and lands nothing
    kvt_nvme_journal_inject_fault (journal, ENOSPC, 1);
    hash_of_op [5] = 0xBAD;
    generation_of_op [5] = generation;
    kvt_nvme_journal_add (journal, 5, 0xBAD, generation++, 0xBAD ^ 0x5555, false, 5, 0);
    t_pump (journal, &ring, true);
    assert (acks.failures == 1 && acks.last_rc == -ENOSPC);
    kvt_nvme_journal_stats (journal, &stats);
    assert (stats.failed_ops == 1 && stats.failed_enospc == 1);
    kvt_nvme_journal_set_closing (journal);
    rc = kvt_nvme_journal_flush (journal);
    assert (rc == 0);
    kvt_nvme_journal_destroy (&journal);
    assert (journal == NULL);

    //  Replay gives the same index; a torn tail is skipped and compacted
    for (int pass = 0; pass < 2; pass++) {
        kvt_nvme_slot_t again [CAPACITY];
        memset (again, 0, sizeof (again));
        journal = kvt_nvme_journal_new (&config, again, &ring, NULL, NULL);
        rc = kvt_nvme_journal_open (journal);
        assert (rc == 0);
        assert (kvt_nvme_journal_next_generation (journal) >= generation);
        for (int slot = 0; slot < CAPACITY; slot++) {
            bool valid = slots [slot].state == KVT_NVME_SLOT_VALID;
            assert ((again [slot].state == KVT_NVME_SLOT_VALID) == valid);
            assert (!valid || (again [slot].block_hash == slots [slot].block_hash
                               && again [slot].checksum == slots [slot].checksum));
        }
        kvt_nvme_journal_stats (journal, &stats);
        assert (stats.recovery_skipped == (pass == 1? 1: 0));
        kvt_nvme_journal_destroy (&journal);
        char *path = kvt_sprintf ("%s/%s", dir, S_JOURNAL_NAME);
        int fd = open (path, O_WRONLY | O_APPEND);
        assert (fd >= 0);
        ssize_t io = write (fd, "garbage", 7);
        assert (io == 7);
        close (fd);
        kvt_freen (path);
    }

    //  Another geometry: the journal is ignored, the index stays empty
    kvt_nvme_journal_config_t other = config;
    other.block_bytes = 8192;
    kvt_nvme_slot_t empty [CAPACITY];
    memset (empty, 0, sizeof (empty));
    journal = kvt_nvme_journal_new (&other, empty, &ring, NULL, NULL);
    rc = kvt_nvme_journal_open (journal);
    assert (rc == 0);
    for (int slot = 0; slot < CAPACITY; slot++)
        assert (empty [slot].state == KVT_NVME_SLOT_EMPTY);
    kvt_nvme_journal_destroy (&journal);
    kvt_nvme_journal_destroy (&journal);

    io_uring_queue_exit (&ring);
    close (data_fd);
    kvt_freen (data_path);
    kvt_log_set_level (saved_level);
    char *command = kvt_sprintf ("rm -rf '%s'", dir);
    rc = system (command);
    assert (rc == 0);
    kvt_freen (command);
    //  @end
    return 0;
}
