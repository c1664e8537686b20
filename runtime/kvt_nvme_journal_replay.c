/*  =========================================================================
    kvt_nvme_journal_replay - the journal at open: replay and rewrite

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Part of kvt_nvme_journal (see kvt_nvme_journal.h): reads the journal
    files into the index at open, and rewrites the journal compacted when
    worthwhile. Blocks; runs at open only.
@end
*/

#include "kvt_classes.h"
#include "kvt_nvme_journal.h"
#include "kvt_nvme_journal_int.h"

static int
s_write_full (int fd, const void *buf, size_t bytes, off_t offset)
{
    const uint8_t *cursor = (const uint8_t *) buf;
    while (bytes > 0) {
        ssize_t rc = pwrite (fd, cursor, bytes, offset);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return -errno;
        if (rc == 0)
            return -EIO;
        cursor += rc;
        bytes -= (size_t) rc;
        offset += rc;
    }
    return 0;
}


//  Write a fresh journal holding the valid slots, fsync it, rename it over
//  the journal and fsync the directory. Blocks (open only). Leaves the
//  new journal open as fd with end set.
static int
s_rewrite (kvt_nvme_journal_t *self)
{
    char *tmp_path = kvt_sprintf ("%s/%s", self->dir, S_JOURNAL_TMP);
    int rc = 0;
    int fd = open (tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        kvt_log_error ("nvme store: cannot create %s: %s", tmp_path, strerror (errno));
        kvt_freen (tmp_path);
        return rc;
    }
    uint64_t entropy [3] = { (uint64_t) kvt_now_us (), (uint64_t) getpid (),
                             (uint64_t) (uintptr_t) &entropy };
    uint64_t seed = XXH3_64bits (entropy, sizeof (entropy)) | 1;   //  Never 0
    s_header_t header;
    s_header_fill (self, &header, seed);
    s_record_t *chunk = (s_record_t *) kvt_zmalloc (S_CHUNK_RECORDS * sizeof (s_record_t));
    rc = s_write_full (fd, &header, sizeof (header), 0);
    off_t offset = sizeof (header);
    size_t filled = 0;
    uint64_t capacity = self->config.capacity_blocks;
    for (uint64_t slot = 0; rc == 0 && slot <= capacity; slot++) {
        if (filled == S_CHUNK_RECORDS || (slot == capacity && filled > 0)) {
            rc = s_write_full (fd, chunk, filled * sizeof (s_record_t), offset);
            offset += (off_t) (filled * sizeof (s_record_t));
            filled = 0;
        }
        if (slot == capacity || self->slots [slot].state != KVT_NVME_SLOT_VALID)
            continue;
        s_record_t *record = &chunk [filled++];
        record->slot = slot;
        record->block_hash = self->slots [slot].block_hash;
        record->generation = self->slots [slot].generation;
        record->payload_checksum = self->slots [slot].checksum;
        record->record_checksum = s_record_checksum (record, seed);
    }
    free (chunk);
    if (rc == 0 && fsync (fd) != 0)
        rc = -errno;
    if (rc == 0 && rename (tmp_path, self->path) != 0)
        rc = -errno;
    if (rc == 0) {
        int dir_fd = open (self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd >= 0) {
            (void) fsync (dir_fd);      //  Best effort: the rename is already visible
            close (dir_fd);
        }
    }
    if (rc) {
        kvt_log_error ("nvme store: cannot write journal %s: %s", tmp_path, kvt_strerror (rc));
        close (fd);
        unlink (tmp_path);
    }
    else {
        if (self->fd >= 0)
            close (self->fd);
        self->fd = fd;
        self->seed = seed;
        self->end = (uint64_t) offset;
        self->base = self->end;
    }
    kvt_freen (tmp_path);
    return rc;
}

//  Apply one record read at replay to the index.
static void
s_replay_record (kvt_nvme_journal_t *self, const s_record_t *record)
{
    uint64_t slot = record->slot & ~S_DROP_FLAG;
    if (record->generation >= self->next_generation)
        self->next_generation = record->generation + 1;
    if (slot >= self->config.capacity_blocks)
        return;                     //  Capacity shrank since
    kvt_nvme_slot_t *entry = &self->slots [slot];
    if (record->generation <= entry->generation)
        return;                     //  Superseded: latest generation wins
    entry->generation = record->generation;
    if (record->slot & S_DROP_FLAG) {
        entry->state = KVT_NVME_SLOT_EMPTY;
        entry->block_hash = 0;
        entry->checksum = 0;
    }
    else {
        entry->state = KVT_NVME_SLOT_VALID;
        entry->block_hash = record->block_hash;
        entry->checksum = record->payload_checksum;
    }
}

//  Apply one journal file to the index. Blocks (open only). Visits every
//  record once: one sequential read of the file. Returns 1 if the file
//  was valid and applied (its fd kept in *fd_p if fd_p, else closed), 0
//  if it is missing or unusable, or -errno.
static int
s_read_file (kvt_nvme_journal_t *self, const char *path, int *fd_p, uint64_t *seed_p)
{
    int fd = open (path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0) {
        int rc = -errno;
        kvt_log_error ("nvme store: cannot open %s: %s", path, strerror (errno));
        return rc;
    }
    struct stat st;
    s_header_t header;
    ssize_t got = pread (fd, &header, sizeof (header), 0);
    bool header_ok = fstat (fd, &st) == 0 && got == (ssize_t) sizeof (header)
        && header.magic == S_JOURNAL_MAGIC
        && header.version == S_JOURNAL_VERSION
        && header.header_checksum == s_header_checksum (&header);
    if (!header_ok)
        kvt_log_warn ("nvme store: %s has no valid header; ignored", path);
    else
    if (header.block_bytes != self->config.block_bytes
    ||  header.dir_count != (uint32_t) self->config.dir_count
    ||  header.files_per_dir != (uint32_t) self->config.files_per_dir) {
        kvt_log_warn ("nvme store: %s was written for block_bytes %" PRIu64
                      ", %u dirs x %u files; config says %zu, %d x %d: ignored",
                      path, header.block_bytes, header.dir_count, header.files_per_dir,
                      self->config.block_bytes, self->config.dir_count,
                      self->config.files_per_dir);
        header_ok = false;
    }
    if (!header_ok) {
        close (fd);
        return 0;
    }
    size_t body = (size_t) st.st_size - sizeof (header);
    uint64_t record_total = body / sizeof (s_record_t);
    uint64_t skipped = body % sizeof (s_record_t)? 1: 0;   //  A torn tail
    s_record_t *chunk = (s_record_t *) kvt_zmalloc (S_CHUNK_RECORDS * sizeof (s_record_t));
    uint64_t done = 0;
    while (done < record_total) {
        size_t want = record_total - done < S_CHUNK_RECORDS?
            (size_t) (record_total - done): S_CHUNK_RECORDS;
        off_t offset = (off_t) (sizeof (header) + done * sizeof (s_record_t));
        ssize_t rc = pread (fd, chunk, want * sizeof (s_record_t), offset);
        if (rc < 0 && errno == EINTR)
            continue;
        size_t read_records = rc > 0? (size_t) rc / sizeof (s_record_t): 0;
        if (read_records == 0) {
            kvt_log_warn ("nvme store: short read of %s at %jd; rest ignored", path,
                          (intmax_t) offset);
            skipped += record_total - done;
            break;
        }
        for (size_t i = 0; i < read_records; i++) {
            if (chunk [i].record_checksum != s_record_checksum (&chunk [i], header.seed))
                skipped++;
            else
                s_replay_record (self, &chunk [i]);
        }
        done += read_records;
    }
    free (chunk);
    self->stats.replayed_records += record_total;
    self->stats.recovery_skipped += skipped;
    if (seed_p)
        *seed_p = header.seed;
    if (fd_p)
        *fd_p = fd;
    else
        close (fd);
    return 1;
}


//  --------------------------------------------------------------------------
//  Replay the journal, and the next journal of an unfinished rotation,
//  into the index; compact when worthwhile. Blocks.

int
kvt_nvme_journal_open (kvt_nvme_journal_t *self)
{
    assert (self);
    assert (self->fd < 0);
    uint64_t seed = 0;
    int main_rc = s_read_file (self, self->path, &self->fd, &seed);
    if (main_rc < 0)
        return main_rc;
    int next_rc = s_read_file (self, self->next_path, NULL, NULL);
    if (next_rc < 0)
        return next_rc;
    struct stat st;
    bool next_exists = stat (self->next_path, &st) == 0;
    if (main_rc == 1) {
        self->seed = seed;
        if (fstat (self->fd, &st) == 0 && (uint64_t) st.st_size >= sizeof (s_header_t))
            self->end = sizeof (s_header_t)
                + ((uint64_t) st.st_size - sizeof (s_header_t))
                / sizeof (s_record_t) * sizeof (s_record_t);
        self->base = self->end;
    }
    //  Writes whose data landed but whose record did not may carry
    //  generations past the last record (at most 2 x queue_depth of them):
    //  skip well past them so no new block shares a generation with one.
    self->next_generation += S_GENERATION_SKIP;
    uint64_t live = 0;
    for (uint64_t slot = 0; slot < self->config.capacity_blocks; slot++)
        if (self->slots [slot].state == KVT_NVME_SLOT_VALID)
            live++;
    //  Compact when there is no usable journal, when replay found damage
    //  (so appends never follow garbage), when a rotation was cut short,
    //  or when the journal is mostly superseded records.
    bool rewrite = main_rc != 1 || next_exists || self->stats.recovery_skipped > 0
                || self->stats.replayed_records > 2 * live + 65536;
    int rc = rewrite? s_rewrite (self): 0;
    if (rc == 0 && next_exists && unlink (self->next_path) != 0)
        rc = -errno;
    if (rc && main_rc == 1) {
        //  No room to compact (a full disk): the old journal still works,
        //  since replay skips damaged records wherever they are. A next
        //  journal left by a rotation must then stay as it is.
        kvt_log_warn ("nvme store: journal not compacted (%s); appending to it",
                      kvt_strerror (rc));
        if (next_exists)
            self->rotate_state = S_ROT_DISABLED;
        rc = 0;
    }
    if (self->stats.recovery_skipped)
        kvt_log_warn ("nvme store: journal had %" PRIu64 " damaged records (torn tail or "
                      "failed append); dropped", self->stats.recovery_skipped);
    if (rewrite && rc == 0)
        kvt_log_debug ("nvme store: journal rewritten with %" PRIu64 " records", live);
    return rc;
}

uint64_t
kvt_nvme_journal_next_generation (kvt_nvme_journal_t *self)
{
    assert (self);
    return self->next_generation;
}


