/*  =========================================================================
    kvt_nvme_store - checksummed KV blocks in O_DIRECT files through io_uring

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    See kvt_nvme_store.h for the on-disk layout, the journal and what an
    acknowledgement guarantees. This file: open and recovery, the op pool,
    the completion state machine (data parts -> journal append -> done),
    journal rotation (compaction while running), fault injection, destroy,
    and the selftest.
@end
*/

#include "kvt_classes.h"
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <poll.h>

#define S_HEADER_BYTES      4096                    //  On-disk header area per slot
#define S_ALIGN             4096                    //  O_DIRECT alignment we honour
#define S_BLOCK_MAGIC       0x31454D564E54564BULL   //  "KVTNVME1"
#define S_JOURNAL_MAGIC     0x314C4E524A54564BULL   //  "KVTJRNL1"
#define S_JOURNAL_VERSION   1                       //  Journal format version
#define S_JOURNAL_NAME      "kvt-nvme.journal"      //  In dirs [0]
#define S_JOURNAL_TMP       "kvt-nvme.journal.tmp"  //  Compaction target before rename
#define S_DROP_FLAG         (1ULL << 63)            //  Journal record: slot forgotten
#define S_JOURNAL_NEXT      "kvt-nvme.journal.next" //  Journal being built by a rotation
#define S_JOURNAL_UD        UINT64_MAX              //  user_data of journal appends
#define S_ROTATE_UD         (UINT64_MAX - 1)        //  user_data of rotation steps
#define S_JOURNAL_LIMIT     (64ULL << 20)           //  Default appends between compactions
#define S_SNAPSHOT_SCAN     65536                   //  Slots a rotation looks at per append
#define S_MAX_REGIONS       64                      //  Caller buffer regions
#define S_REGION_MAX_BYTES  (1ULL << 30)            //  Kernel limit per registered iovec
#define S_LOG_FIRST         10                      //  I/O errors logged before thinning
#define S_GENERATION_SKIP   (1ULL << 20)            //  Generations skipped at each open

//  Header at the start of every slot on disk (first 64 of its 4096 bytes)
typedef struct {
    uint64_t magic;                 //  S_BLOCK_MAGIC
    uint64_t block_hash;            //  Caller's block hash
    uint64_t slot;                  //  Slot it was written to (catches misdirected I/O)
    uint64_t generation;            //  Store-wide write sequence number
    uint64_t payload_checksum;      //  xxh3-64 of the block_bytes payload
    uint32_t length;                //  Payload bytes (low 32 bits of block_bytes)
    uint32_t version;               //  Format version, 1
    uint64_t reserved;              //  Zero
    uint64_t header_checksum;       //  xxh3-64 of the 56 bytes above
} s_block_header_t;

//  One journal record: a completed write or a forget
typedef struct {
    uint64_t slot;                  //  Slot; S_DROP_FLAG set for a forget
    uint64_t block_hash;            //  Block hash (0 for a forget)
    uint64_t generation;            //  Write sequence number; latest wins
    uint64_t payload_checksum;      //  xxh3 of the payload (0 for a forget)
    uint64_t record_checksum;       //  xxh3 of the 32 bytes above, seeded per journal
} s_journal_record_t;

//  Journal file header, at offset 0; records follow at sizeof header
typedef struct {
    uint64_t magic;                 //  S_JOURNAL_MAGIC
    uint32_t version;               //  S_JOURNAL_VERSION
    uint32_t dir_count;             //  Geometry: must match to replay
    uint64_t block_bytes;           //  Geometry: must match to replay
    uint64_t capacity_blocks;       //  Informative; records past capacity are dropped
    uint32_t files_per_dir;         //  Geometry: must match to replay
    uint32_t reserved;              //  Zero
    uint64_t seed;                  //  Seeds record checksums of this journal
    uint64_t header_checksum;       //  xxh3 of the 48 bytes above
} s_journal_header_t;

typedef enum {
    S_SLOT_EMPTY = 0,               //  Holds nothing we would hand out
    S_SLOT_VALID = 1,               //  Holds an acknowledged block
    S_SLOT_WRITING = 2              //  A write is in flight
} s_slot_state_t;

typedef struct {
    uint64_t block_hash;            //  Hash of the block held
    uint64_t generation;            //  Generation of the block held (0: never)
    uint64_t checksum;              //  Payload checksum of the block held
    uint32_t state;                 //  s_slot_state_t
    uint32_t readers;               //  Reads in flight
} s_slot_t;

typedef enum {
    S_OP_FREE = 0,                  //  On the free list
    S_OP_IO = 1,                    //  Data parts in flight
    S_OP_JOURNAL = 2,               //  Waiting for its journal record
    S_OP_DONE = 3                   //  In the done FIFO, waiting for reap
} s_op_state_t;

//  Journal rotation (compaction while running): open the next journal,
//  write its header, switch appends to it, append a snapshot of the index
//  in slices, rename it over the journal, close the old one.
typedef enum {
    S_ROT_IDLE = 0,                 //  Appending; rotate past journal_limit
    S_ROT_OPENING = 1,              //  openat of the next journal in flight
    S_ROT_SWITCH = 2,               //  Opened: waiting for appends to pause
    S_ROT_HEADER = 3,               //  Its header write in flight
    S_ROT_SNAPSHOT = 4,             //  Appending the index in slices
    S_ROT_FLUSH = 5,                //  Last slice in flight
    S_ROT_RENAME = 6,               //  Snapshot appended: rename next
    S_ROT_RENAMING = 7,             //  renameat in flight
    S_ROT_CLOSING = 8,              //  close of the old journal in flight
    S_ROT_DISABLED = 9              //  Gave up after an error it cannot undo
} s_rotate_state_t;

typedef struct {
    int file_index;                 //  Registered file index
    int buf_index;                  //  Registered buffer index
    uint8_t *addr;                  //  Start of the transfer
    uint32_t bytes;                 //  Length of the transfer
    uint32_t done_bytes;            //  Transferred so far (short transfers)
    uint64_t offset;                //  File offset of the transfer
} s_part_t;

typedef struct {
    int state;                      //  s_op_state_t
    bool is_write;                  //  Write or read
    bool direct;                    //  Payload moves from/to caller memory
    int part_count;                 //  1, or 2 for a direct write (header, payload)
    int pending;                    //  Parts not yet complete
    int rc;                         //  First error seen
    uint64_t tag;                   //  Caller's tag
    uint64_t slot;                  //  Target slot
    uint64_t block_hash;            //  Block hash
    uint64_t generation;            //  Write: new generation; read: expected
    uint64_t checksum;              //  Write: payload checksum
    void *caller;                   //  src or dst in caller memory
    uint8_t *stage;                 //  This op's staging buffer (header + payload)
    s_part_t parts [2];             //  The transfers of this op
} s_op_t;

typedef struct {
    s_journal_record_t *records;    //  Records of this batch
    int *ops;                       //  Op index per record, -1 for a forget
    size_t count;                   //  Records in the batch
    size_t capacity;                //  Allocated entries
} s_batch_t;

typedef struct {
    uint8_t *base;                  //  Start of a registered caller region
    size_t bytes;                   //  Its length (<= S_REGION_MAX_BYTES)
} s_region_t;

struct _kvt_nvme_store_t {
    //  Config (owned copies)
    char **dirs;                    //  Directories, owned strings
    int dir_count;                  //  Entries in dirs
    size_t block_bytes;             //  Payload bytes per block
    uint64_t capacity_blocks;       //  Slots
    int queue_depth;                //  Ops in the pool
    int files_per_dir;              //  Data files per directory
    bool sync_on_ack;               //  O_DSYNC / RWF_DSYNC
    bool buffered_fallback;         //  Allow non-O_DIRECT files
    //  Geometry
    size_t payload_io_bytes;        //  block_bytes rounded up to S_ALIGN
    size_t stride;                  //  S_HEADER_BYTES + payload_io_bytes
    int file_count;                 //  dir_count x files_per_dir
    uint64_t slots_per_file;        //  ceil (capacity / file_count)
    //  Resources (open)
    bool opened;                    //  open succeeded
    bool ring_ready;                //  ring initialised
    struct io_uring ring;           //  The ring
    int *fds;                       //  file_count data files (registered), -1 if closed
    char **paths;                   //  Data file paths
    char *journal_path;             //  dirs[0]/S_JOURNAL_NAME
    char *journal_next_path;        //  dirs[0]/S_JOURNAL_NEXT
    int journal_fd;                 //  Journal appended to (plain fd), -1 if none
    int journal_old_fd;             //  Previous journal during a rotation, or -1
    int event_fd;                   //  Completion eventfd, -1 if none
    uint8_t *staging;               //  queue_depth x stride, registered buffer 0
    size_t staging_bytes;           //  Mapping length
    s_region_t regions [S_MAX_REGIONS]; //  Caller regions, buffers 1..region_count
    int region_count;               //  Registered caller regions
    bool direct_io;                 //  Files are O_DIRECT
    //  State
    s_slot_t *slots;                //  Index, capacity_blocks entries
    uint64_t next_generation;       //  Next write's generation
    s_op_t *ops;                    //  queue_depth ops
    int *free_ops;                  //  Stack of free op indices
    int free_count;                 //  Entries on the stack
    int *done_fifo;                 //  Ring of finished op indices
    int done_head;                  //  Oldest entry
    int done_count;                 //  Entries in the FIFO
    s_batch_t pending;              //  Records waiting to be appended
    s_batch_t inflight;             //  Records being appended
    bool journal_busy;              //  An append is in flight
    uint32_t journal_done_bytes;    //  Progress of that append (short writes)
    uint64_t journal_write_offset;  //  Offset of that append
    uint64_t journal_end;           //  Next append offset
    bool journal_faulted;           //  The append in flight is an injected failure
    bool journal_pause;             //  No new appends: a rotation is switching files
    bool snapshot_in_flight;        //  The append in flight ends the snapshot
    uint64_t journal_limit;         //  Bytes appended between compactions
    uint64_t journal_base;          //  journal_end when the last compaction ended
    int rotate_state;               //  s_rotate_state_t
    bool rotate_busy;               //  A rotation step (open, header, rename, close) in flight
    int rotate_fd;                  //  Next journal once opened, until switched, or -1
    uint64_t rotate_seed;           //  Record checksum seed of the next journal
    uint64_t rotate_cursor;         //  Next slot the snapshot looks at
    s_journal_header_t rotate_header;   //  Header of the next journal, written from here
    bool closing;                   //  destroy is draining: start no new rotation step
    uint64_t journal_seed;          //  Record checksum seed
    uint64_t *recovered;            //  Slots found valid at open
    uint64_t recovered_count;       //  Entries in recovered
    //  Faults and counters
    int fault_errno [KVT_NVME_FAULT_KINDS];   //  Errno to inject
    int fault_count [KVT_NVME_FAULT_KINDS];   //  Completions left to fail
    uint64_t logged_errors;         //  I/O errors seen, for log thinning
    kvt_nvme_store_stats_t stats;   //  Counters
};

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

static uint64_t
s_header_checksum (const s_block_header_t *header)
{
    return XXH3_64bits (header, offsetof (s_block_header_t, header_checksum));
}

static uint64_t
s_record_checksum (const s_journal_record_t *record, uint64_t seed)
{
    return XXH3_64bits_withSeed (record, offsetof (s_journal_record_t, record_checksum), seed);
}

static uint64_t
s_journal_header_checksum (const s_journal_header_t *header)
{
    return XXH3_64bits (header, offsetof (s_journal_header_t, header_checksum));
}

//  Log an I/O failure: the first few, then one in a thousand.
static void
s_log_io_error (kvt_nvme_store_t *self, const char *what, uint64_t slot, int rc)
{
    self->logged_errors++;
    if (self->logged_errors <= S_LOG_FIRST || self->logged_errors % 1000 == 0)
        kvt_log_warn ("nvme store: %s slot %" PRIu64 " failed: %s (%" PRIu64 " so far)",
                      what, slot, kvt_strerror (rc), self->logged_errors);
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
    self->buffered_fallback = config->buffered_fallback;
    self->journal_limit = config->journal_compact_bytes? config->journal_compact_bytes:
                                                         S_JOURNAL_LIMIT;
    self->event_fd = -1;
    self->journal_fd = -1;
    self->journal_old_fd = -1;
    self->rotate_fd = -1;
    self->payload_io_bytes = s_round_up (self->block_bytes? self->block_bytes: 1, S_ALIGN);
    self->stride = S_HEADER_BYTES + self->payload_io_bytes;
    return self;
}


//  --------------------------------------------------------------------------
//  Register caller memory for zero-copy payloads. Before open only.

int
kvt_nvme_store_register_buffer (kvt_nvme_store_t *self, void *base, size_t bytes)
{
    assert (self);
    if (self->opened || !base || bytes == 0 || (uintptr_t) base % S_ALIGN)
        return -EINVAL;
    uint8_t *cursor = (uint8_t *) base;
    size_t left = bytes;
    while (left > 0) {
        if (self->region_count == S_MAX_REGIONS)
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
    int *journal_fds [3] = { &self->journal_fd, &self->journal_old_fd, &self->rotate_fd };
    for (int i = 0; i < 3; i++)
        if (*journal_fds [i] >= 0) {
            close (*journal_fds [i]);
            *journal_fds [i] = -1;
        }
    if (self->paths) {
        for (int i = 0; i < self->file_count; i++)
            kvt_freen (self->paths [i]);
        kvt_freen (self->paths);
    }
    kvt_freen (self->journal_path);
    kvt_freen (self->journal_next_path);
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
    kvt_freen (self->pending.records);
    kvt_freen (self->pending.ops);
    kvt_freen (self->inflight.records);
    kvt_freen (self->inflight.ops);
    memset (&self->pending, 0, sizeof (self->pending));
    memset (&self->inflight, 0, sizeof (self->inflight));
    kvt_freen (self->recovered);
    self->recovered_count = 0;
    self->opened = false;
}

//  Open one data file, O_DIRECT unless refused and fallback allowed.
static int
s_open_data_file (kvt_nvme_store_t *self, const char *path)
{
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (self->sync_on_ack? O_DSYNC: 0);
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

static void
s_journal_header_fill (kvt_nvme_store_t *self, s_journal_header_t *header, uint64_t seed)
{
    memset (header, 0, sizeof (*header));
    header->magic = S_JOURNAL_MAGIC;
    header->version = S_JOURNAL_VERSION;
    header->dir_count = (uint32_t) self->dir_count;
    header->block_bytes = self->block_bytes;
    header->capacity_blocks = self->capacity_blocks;
    header->files_per_dir = (uint32_t) self->files_per_dir;
    header->seed = seed;
    header->header_checksum = s_journal_header_checksum (header);
}

//  Write a fresh journal holding the valid slots, fsync it, rename it over
//  the journal and fsync the directory. Blocks (open only). Leaves the
//  new journal open in fds [file_count] with journal_end set.
static int
s_journal_rewrite (kvt_nvme_store_t *self)
{
    char *tmp_path = s_sprintf ("%s/%s", self->dirs [0], S_JOURNAL_TMP);
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
    s_journal_header_t header;
    s_journal_header_fill (self, &header, seed);
    size_t chunk_records = 65536;
    s_journal_record_t *chunk = (s_journal_record_t *)
        kvt_zmalloc (chunk_records * sizeof (s_journal_record_t));
    rc = s_write_full (fd, &header, sizeof (header), 0);
    off_t offset = sizeof (header);
    size_t filled = 0;
    for (uint64_t slot = 0; rc == 0 && slot <= self->capacity_blocks; slot++) {
        if (filled == chunk_records || (slot == self->capacity_blocks && filled > 0)) {
            rc = s_write_full (fd, chunk, filled * sizeof (s_journal_record_t), offset);
            offset += (off_t) (filled * sizeof (s_journal_record_t));
            filled = 0;
        }
        if (slot == self->capacity_blocks || self->slots [slot].state != S_SLOT_VALID)
            continue;
        s_journal_record_t *record = &chunk [filled++];
        record->slot = slot;
        record->block_hash = self->slots [slot].block_hash;
        record->generation = self->slots [slot].generation;
        record->payload_checksum = self->slots [slot].checksum;
        record->record_checksum = s_record_checksum (record, seed);
    }
    free (chunk);
    if (rc == 0 && fsync (fd) != 0)
        rc = -errno;
    if (rc == 0 && rename (tmp_path, self->journal_path) != 0)
        rc = -errno;
    if (rc == 0) {
        int dir_fd = open (self->dirs [0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
        if (self->journal_fd >= 0)
            close (self->journal_fd);
        self->journal_fd = fd;
        self->journal_seed = seed;
        self->journal_end = (uint64_t) offset;
        self->journal_base = self->journal_end;
    }
    kvt_freen (tmp_path);
    return rc;
}

//  Apply one journal file to the index. Blocks (open only). Visits every
//  record once: one sequential read of the file. Returns 1 if the file
//  was valid and applied (its fd kept in *fd_p if fd_p, else closed), 0
//  if it is missing or unusable, or -errno.
static int
s_journal_read (kvt_nvme_store_t *self, const char *path, int *fd_p, uint64_t *records_p,
                uint64_t *skipped_p, uint64_t *seed_p)
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
    s_journal_header_t header;
    ssize_t got = pread (fd, &header, sizeof (header), 0);
    bool header_ok = fstat (fd, &st) == 0 && got == (ssize_t) sizeof (header)
        && header.magic == S_JOURNAL_MAGIC
        && header.version == S_JOURNAL_VERSION
        && header.header_checksum == s_journal_header_checksum (&header);
    if (!header_ok)
        kvt_log_warn ("nvme store: %s has no valid header; ignored", path);
    else
    if (header.block_bytes != self->block_bytes
    ||  header.dir_count != (uint32_t) self->dir_count
    ||  header.files_per_dir != (uint32_t) self->files_per_dir) {
        kvt_log_warn ("nvme store: %s was written for block_bytes %" PRIu64
                      ", %u dirs x %u files; config says %zu, %d x %d: ignored",
                      path, header.block_bytes, header.dir_count, header.files_per_dir,
                      self->block_bytes, self->dir_count, self->files_per_dir);
        header_ok = false;
    }
    if (!header_ok) {
        close (fd);
        return 0;
    }
    size_t body = (size_t) st.st_size - sizeof (header);
    uint64_t record_total = body / sizeof (s_journal_record_t);
    uint64_t skipped = body % sizeof (s_journal_record_t)? 1: 0;   //  A torn tail
    size_t chunk_records = 65536;
    s_journal_record_t *chunk = (s_journal_record_t *)
        kvt_zmalloc (chunk_records * sizeof (s_journal_record_t));
    uint64_t done = 0;
    while (done < record_total) {
        size_t want = record_total - done < chunk_records?
            (size_t) (record_total - done): chunk_records;
        off_t offset = (off_t) (sizeof (header) + done * sizeof (s_journal_record_t));
        ssize_t rc = pread (fd, chunk, want * sizeof (s_journal_record_t), offset);
        if (rc < 0 && errno == EINTR)
            continue;
        size_t read_records = rc > 0? (size_t) rc / sizeof (s_journal_record_t): 0;
        if (read_records == 0) {
            kvt_log_warn ("nvme store: short read of %s at %jd; rest ignored", path,
                          (intmax_t) offset);
            skipped += record_total - done;
            break;
        }
        for (size_t i = 0; i < read_records; i++) {
            s_journal_record_t *record = &chunk [i];
            if (record->record_checksum != s_record_checksum (record, header.seed)) {
                skipped++;
                continue;
            }
            uint64_t slot = record->slot & ~S_DROP_FLAG;
            if (record->generation >= self->next_generation)
                self->next_generation = record->generation + 1;
            if (slot >= self->capacity_blocks)
                continue;               //  Capacity shrank since
            s_slot_t *entry = &self->slots [slot];
            if (record->generation <= entry->generation)
                continue;               //  Superseded: latest generation wins
            entry->generation = record->generation;
            if (record->slot & S_DROP_FLAG) {
                entry->state = S_SLOT_EMPTY;
                entry->block_hash = 0;
                entry->checksum = 0;
            }
            else {
                entry->state = S_SLOT_VALID;
                entry->block_hash = record->block_hash;
                entry->checksum = record->payload_checksum;
            }
        }
        done += read_records;
    }
    free (chunk);
    *records_p += record_total;
    *skipped_p += skipped;
    if (seed_p)
        *seed_p = header.seed;
    if (fd_p)
        *fd_p = fd;
    else
        close (fd);
    return 1;
}

//  Replay the journal, and the next journal of an unfinished rotation,
//  into the index; compact when worthwhile. Blocks (open only).
static int
s_journal_replay (kvt_nvme_store_t *self)
{
    int64_t started = kvt_now_us ();
    uint64_t record_total = 0, skipped = 0, seed = 0;
    int main_rc = s_journal_read (self, self->journal_path, &self->journal_fd, &record_total,
                                  &skipped, &seed);
    if (main_rc < 0)
        return main_rc;
    int next_rc = s_journal_read (self, self->journal_next_path, NULL, &record_total,
                                  &skipped, NULL);
    if (next_rc < 0)
        return next_rc;
    struct stat st;
    bool next_exists = stat (self->journal_next_path, &st) == 0;
    if (main_rc == 1) {
        self->journal_seed = seed;
        if (fstat (self->journal_fd, &st) == 0
        &&  (uint64_t) st.st_size >= sizeof (s_journal_header_t))
            self->journal_end = sizeof (s_journal_header_t)
                + ((uint64_t) st.st_size - sizeof (s_journal_header_t))
                / sizeof (s_journal_record_t) * sizeof (s_journal_record_t);
        self->journal_base = self->journal_end;
    }
    //  Writes whose data landed but whose record did not may carry
    //  generations past the last record (at most 2 x queue_depth of them):
    //  skip well past them so no new block shares a generation with one.
    self->next_generation += S_GENERATION_SKIP;
    uint64_t live = 0;
    for (uint64_t slot = 0; slot < self->capacity_blocks; slot++)
        if (self->slots [slot].state == S_SLOT_VALID)
            live++;
    self->recovered = (uint64_t *) kvt_zmalloc ((live? live: 1) * sizeof (uint64_t));
    for (uint64_t slot = 0; slot < self->capacity_blocks; slot++)
        if (self->slots [slot].state == S_SLOT_VALID)
            self->recovered [self->recovered_count++] = slot;
    //  Compact when there is no usable journal, when replay found damage
    //  (so appends never follow garbage), when a rotation was cut short,
    //  or when the journal is mostly superseded records.
    bool rewrite = main_rc != 1 || next_exists || skipped > 0
                || record_total > 2 * live + 65536;
    int rc = rewrite? s_journal_rewrite (self): 0;
    if (rc == 0 && next_exists && unlink (self->journal_next_path) != 0)
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
    self->stats.recovered_blocks = live;
    self->stats.recovery_skipped = skipped;
    self->stats.recovery_us = (uint64_t) (kvt_now_us () - started);
    if (skipped)
        kvt_log_warn ("nvme store: journal had %" PRIu64 " damaged records (torn tail or "
                      "failed append); dropped", skipped);
    kvt_log_info ("nvme store: recovered %" PRIu64 " blocks from %" PRIu64
                  " journal records in %.3f s%s", live, record_total,
                  self->stats.recovery_us / 1e6, rewrite? " (journal rewritten)": "");
    return rc;
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
    self->journal_path = s_sprintf ("%s/%s", self->dirs [0], S_JOURNAL_NAME);
    self->journal_next_path = s_sprintf ("%s/%s", self->dirs [0], S_JOURNAL_NEXT);
    self->slots = (s_slot_t *) kvt_zmalloc (sizeof (s_slot_t) * self->capacity_blocks);
    self->next_generation = 0;
    self->journal_seed = 0;
    self->journal_end = 0;
    self->journal_busy = false;
    self->journal_faulted = false;
    self->journal_pause = false;
    self->snapshot_in_flight = false;
    self->rotate_state = S_ROT_IDLE;
    self->rotate_busy = false;
    self->closing = false;
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
        rc = s_journal_replay (self);

    //  Ops, staging buffers (registered buffer 0), caller regions (1..)
    if (rc == 0) {
        int qd = self->queue_depth;
        self->ops = (s_op_t *) kvt_zmalloc (sizeof (s_op_t) * (size_t) qd);
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
        unsigned entries = (unsigned) (2 * self->queue_depth + 8);
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
        struct iovec iov [S_MAX_REGIONS + 1];
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
    if (rc) {
        s_close_all (self);
        return rc;
    }
    self->opened = true;
    kvt_log_info ("nvme store: %d files in %d dirs, %" PRIu64 " slots of %zu bytes "
                  "(stride %zu), queue depth %d%s%s", self->file_count, self->dir_count,
                  self->capacity_blocks, self->block_bytes, self->stride, self->queue_depth,
                  self->direct_io? ", O_DIRECT": ", buffered",
                  self->sync_on_ack? ", sync on ack": "");
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

//  Find the registered region holding [addr, addr + bytes); -1 if none.
static int
s_region_of (kvt_nvme_store_t *self, const void *addr, size_t bytes)
{
    const uint8_t *p = (const uint8_t *) addr;
    for (int i = 0; i < self->region_count; i++) {
        const s_region_t *region = &self->regions [i];
        if (p >= region->base && p + bytes <= region->base + region->bytes)
            return i + 1;
    }
    return -1;
}

static int
s_get_sqe (kvt_nvme_store_t *self, struct io_uring_sqe **sqe_p)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe (&self->ring);
    if (!sqe) {
        int rc = io_uring_submit (&self->ring);
        if (rc < 0)
            return rc;
        sqe = io_uring_get_sqe (&self->ring);
        if (!sqe)
            return -EBUSY;
    }
    *sqe_p = sqe;
    return 0;
}

//  Queue (the rest of) one part of an op as a fixed-buffer SQE.
static int
s_queue_part (kvt_nvme_store_t *self, int op_index, int part_index)
{
    s_op_t *op = &self->ops [op_index];
    s_part_t *part = &op->parts [part_index];
    struct io_uring_sqe *sqe;
    int rc = s_get_sqe (self, &sqe);
    if (rc)
        return rc;
    uint8_t *addr = part->addr + part->done_bytes;
    unsigned bytes = part->bytes - part->done_bytes;
    uint64_t offset = part->offset + part->done_bytes;
    if (op->is_write)
        io_uring_prep_write_fixed (sqe, part->file_index, addr, bytes, offset, part->buf_index);
    else
        io_uring_prep_read_fixed (sqe, part->file_index, addr, bytes, offset, part->buf_index);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64 (sqe, ((uint64_t) op_index << 1) | (uint64_t) part_index);
    return 0;
}

//  Fill an op's parts for 'slot' with payload at 'caller'.
static void
s_op_layout (kvt_nvme_store_t *self, s_op_t *op, void *caller)
{
    int file = (int) (op->slot % (uint64_t) self->file_count);
    uint64_t base = (op->slot / (uint64_t) self->file_count) * self->stride;
    int region = -1;
    if (self->block_bytes % S_ALIGN == 0 && (uintptr_t) caller % S_ALIGN == 0)
        region = s_region_of (self, caller, self->block_bytes);
    memset (op->parts, 0, sizeof (op->parts));
    op->direct = region > 0;
    if (op->direct && !op->is_write) {
        //  Direct read: the payload alone, checked against the checksum
        //  the index holds (from the journal). One I/O, like raw.
        op->part_count = 1;
        op->parts [0] = (s_part_t) { file, region, (uint8_t *) caller,
                                     (uint32_t) self->block_bytes, 0, base + S_HEADER_BYTES };
        self->stats.direct_ops++;
    }
    else
    if (op->direct) {
        //  Header first: ascending offsets keep the stream sequential
        //  for the device (and a virtual disk's host-side read-ahead)
        op->part_count = 2;
        op->parts [0] = (s_part_t) { file, 0, op->stage, S_HEADER_BYTES, 0, base };
        op->parts [1] = (s_part_t) { file, region, (uint8_t *) caller,
                                     (uint32_t) self->block_bytes, 0, base + S_HEADER_BYTES };
        self->stats.direct_ops++;
    }
    else {
        op->part_count = 1;
        op->parts [0] = (s_part_t) { file, 0, op->stage, (uint32_t) self->stride, 0, base };
        self->stats.bounce_ops++;
    }
    op->pending = op->part_count;
    op->rc = 0;
    op->caller = caller;
}

//  Common checks and op allocation for prep_*.
static int
s_op_take (kvt_nvme_store_t *self, uint64_t slot, s_op_t **op_p, int *index_p)
{
    if (!self->opened)
        return -EBADF;
    if (slot >= self->capacity_blocks)
        return -ERANGE;
    if (self->slots [slot].state == S_SLOT_WRITING)
        return -EBUSY;
    if (self->free_count == 0)
        return -EAGAIN;
    int index = self->free_ops [--self->free_count];
    *op_p = &self->ops [index];
    *index_p = index;
    return 0;
}

static void
s_op_release (kvt_nvme_store_t *self, int index)
{
    self->ops [index].state = S_OP_FREE;
    self->free_ops [self->free_count++] = index;
}

static int
s_op_submit_parts (kvt_nvme_store_t *self, int index)
{
    s_op_t *op = &self->ops [index];
    //  Take every SQE or none, so a released op never has I/O queued
    if (io_uring_sq_space_left (&self->ring) < (unsigned) op->part_count) {
        int rc = io_uring_submit (&self->ring);
        if (rc < 0)
            return rc;
        if (io_uring_sq_space_left (&self->ring) < (unsigned) op->part_count)
            return -EAGAIN;
    }
    for (int p = 0; p < op->part_count; p++) {
        int rc = s_queue_part (self, index, p);
        if (rc)
            return rc;              //  Ring sized for every part; only on ring failure
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Prepare a block write. Checksums 'src' now. See header for codes.

int
kvt_nvme_prep_write (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                     const void *src, uint64_t tag)
{
    assert (self);
    assert (src);
    s_op_t *op;
    int index;
    int rc = s_op_take (self, slot, &op, &index);
    if (rc)
        return rc;
    if (self->slots [slot].readers > 0) {
        s_op_release (self, index);
        return -EBUSY;
    }
    op->state = S_OP_IO;
    op->is_write = true;
    op->tag = tag;
    op->slot = slot;
    op->block_hash = block_hash;
    op->generation = self->next_generation++;
    op->checksum = XXH3_64bits (src, self->block_bytes);
    s_op_layout (self, op, (void *) src);

    s_block_header_t *header = (s_block_header_t *) op->stage;
    memset (header, 0, sizeof (*header));
    header->magic = S_BLOCK_MAGIC;
    header->block_hash = block_hash;
    header->slot = slot;
    header->generation = op->generation;
    header->payload_checksum = op->checksum;
    header->length = (uint32_t) self->block_bytes;
    header->version = 1;
    header->header_checksum = s_header_checksum (header);
    if (!op->direct)
        memcpy (op->stage + S_HEADER_BYTES, src, self->block_bytes);

    //  From here the slot's previous block is given up
    s_slot_t *entry = &self->slots [slot];
    entry->state = S_SLOT_WRITING;
    rc = s_op_submit_parts (self, index);
    if (rc) {
        entry->state = S_SLOT_EMPTY;
        s_op_release (self, index);
    }
    return rc;
}


//  --------------------------------------------------------------------------
//  Prepare a block read into 'dst'. See header for codes.

int
kvt_nvme_prep_read (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                    void *dst, uint64_t tag)
{
    assert (self);
    assert (dst);
    s_op_t *op;
    int index;
    int rc = s_op_take (self, slot, &op, &index);
    if (rc)
        return rc;
    s_slot_t *entry = &self->slots [slot];
    if (entry->state != S_SLOT_VALID || entry->block_hash != block_hash) {
        s_op_release (self, index);
        return KVT_EMISS;
    }
    op->state = S_OP_IO;
    op->is_write = false;
    op->tag = tag;
    op->slot = slot;
    op->block_hash = block_hash;
    op->generation = entry->generation;
    op->checksum = entry->checksum;
    s_op_layout (self, op, dst);
    rc = s_op_submit_parts (self, index);
    if (rc)
        s_op_release (self, index);
    else
        entry->readers++;
    return rc;
}

static void
s_batch_push (s_batch_t *batch, const s_journal_record_t *record, int op_index)
{
    if (batch->count == batch->capacity) {
        size_t capacity = batch->capacity? batch->capacity * 2: 64;
        s_journal_record_t *records = (s_journal_record_t *)
            realloc (batch->records, capacity * sizeof (s_journal_record_t));
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


//  Drop 'slot' from the index and journal a drop record.
static void
s_drop (kvt_nvme_store_t *self, uint64_t slot)
{
    s_slot_t *entry = &self->slots [slot];
    entry->state = S_SLOT_EMPTY;
    entry->block_hash = 0;
    entry->checksum = 0;
    entry->generation = self->next_generation++;
    s_journal_record_t record = {
        .slot = slot | S_DROP_FLAG, .block_hash = 0,
        .generation = entry->generation, .payload_checksum = 0
    };
    s_batch_push (&self->pending, &record, -1);
}


//  --------------------------------------------------------------------------
//  Forget the block at 'slot'; journals a drop record.

int
kvt_nvme_forget (kvt_nvme_store_t *self, uint64_t slot)
{
    assert (self);
    if (!self->opened)
        return -EBADF;
    if (slot >= self->capacity_blocks)
        return -ERANGE;
    s_slot_t *entry = &self->slots [slot];
    if (entry->state == S_SLOT_WRITING || entry->readers > 0)
        return -EBUSY;
    s_drop (self, slot);
    return 0;
}

//  Take the next step of a journal rotation if one is due and none is in
//  flight. Never waits: each step is one SQE, finished in s_rotate_done.
static void
s_rotate_step (kvt_nvme_store_t *self)
{
    if (self->rotate_busy)
        return;
    struct io_uring_sqe *sqe;
    if (self->rotate_state == S_ROT_IDLE) {
        if (self->closing || self->journal_end - self->journal_base < self->journal_limit
        ||  s_get_sqe (self, &sqe))
            return;
        io_uring_prep_openat (sqe, AT_FDCWD, self->journal_next_path,
                              O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        self->rotate_state = S_ROT_OPENING;
    }
    else
    if (self->rotate_state == S_ROT_SWITCH) {
        self->journal_pause = true; //  No new appends to the old journal
        if (self->closing) {
            //  Not worth finishing now: drop the empty next journal
            close (self->rotate_fd);
            self->rotate_fd = -1;
            self->journal_pause = false;
            self->rotate_state = S_ROT_IDLE;
            return;
        }
        if (self->journal_busy || s_get_sqe (self, &sqe))
            return;                 //  Switch once the append in flight is done
        uint64_t entropy [3] = { (uint64_t) kvt_now_us (), self->journal_seed,
                                 self->journal_end };
        self->rotate_seed = XXH3_64bits (entropy, sizeof (entropy)) | 1;
        s_journal_header_fill (self, &self->rotate_header, self->rotate_seed);
        io_uring_prep_write (sqe, self->rotate_fd, &self->rotate_header,
                             sizeof (self->rotate_header), 0);
        if (self->sync_on_ack)
            sqe->rw_flags = RWF_DSYNC;
        self->rotate_state = S_ROT_HEADER;
    }
    else
    if (self->rotate_state == S_ROT_RENAME) {
        if (s_get_sqe (self, &sqe))
            return;
        io_uring_prep_renameat (sqe, AT_FDCWD, self->journal_next_path, AT_FDCWD,
                                self->journal_path, 0);
        self->rotate_state = S_ROT_RENAMING;
    }
    else
        return;
    io_uring_sqe_set_data64 (sqe, S_ROTATE_UD);
    self->rotate_busy = true;
}

//  A rotation step completed with 'res'.
static void
s_rotate_done (kvt_nvme_store_t *self, int res)
{
    self->rotate_busy = false;
    if (self->rotate_state == S_ROT_OPENING) {
        if (res < 0) {
            kvt_log_warn ("nvme store: cannot open %s: %s; journal not compacted",
                          self->journal_next_path, strerror (-res));
            self->rotate_state = S_ROT_IDLE;
            self->journal_base = self->journal_end;     //  Try again later
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
                          self->journal_next_path, res < 0? strerror (-res): "short write");
            close (self->rotate_fd);    //  An empty file: nothing to flush
            self->rotate_fd = -1;
            self->rotate_state = S_ROT_IDLE;
            self->journal_base = self->journal_end;
        }
        else {
            //  From here appends go to the next journal; open replays both
            self->journal_old_fd = self->journal_fd;
            self->journal_fd = self->rotate_fd;
            self->rotate_fd = -1;
            self->journal_seed = self->rotate_seed;
            self->journal_end = sizeof (self->rotate_header);
            self->rotate_cursor = 0;
            self->rotate_state = S_ROT_SNAPSHOT;
        }
        self->journal_pause = false;
    }
    else
    if (self->rotate_state == S_ROT_RENAMING) {
        struct io_uring_sqe *sqe;
        if (res < 0) {
            //  Both files stay: open replays both. Rotating again would
            //  truncate the next journal, which now holds the newest records.
            kvt_log_error ("nvme store: cannot rename %s: %s; journal compaction off "
                           "until restart", self->journal_next_path, strerror (-res));
            self->rotate_state = S_ROT_DISABLED;
        }
        else
        if (s_get_sqe (self, &sqe) == 0) {
            //  The old journal is unlinked now; its last close frees it
            io_uring_prep_close (sqe, self->journal_old_fd);
            io_uring_sqe_set_data64 (sqe, S_ROTATE_UD);
            self->journal_old_fd = -1;
            self->rotate_busy = true;
            self->rotate_state = S_ROT_CLOSING;
        }
        else {
            close (self->journal_old_fd);
            self->journal_old_fd = -1;
            self->rotate_state = S_ROT_CLOSING;
            s_rotate_done (self, 0);
        }
    }
    else
    if (self->rotate_state == S_ROT_CLOSING) {
        self->rotate_state = S_ROT_IDLE;
        self->journal_base = self->journal_end;
        self->stats.journal_rotations++;
        kvt_log_debug ("nvme store: journal compacted to %" PRIu64 " bytes", self->journal_end);
    }
}

//  Add the next slice of the index to the pending batch, as records of
//  the next journal. Looks at S_SNAPSHOT_SCAN slots at most.
static void
s_snapshot_slice (kvt_nvme_store_t *self)
{
    uint64_t end = self->rotate_cursor + S_SNAPSHOT_SCAN;
    if (end > self->capacity_blocks)
        end = self->capacity_blocks;
    for (uint64_t slot = self->rotate_cursor; slot < end; slot++) {
        s_slot_t *entry = &self->slots [slot];
        if (entry->state != S_SLOT_VALID)
            continue;               //  Writes in flight bring their own record
        s_journal_record_t record = {
            .slot = slot, .block_hash = entry->block_hash,
            .generation = entry->generation, .payload_checksum = entry->checksum
        };
        s_batch_push (&self->pending, &record, -1);
    }
    self->rotate_cursor = end;
    if (end == self->capacity_blocks)
        self->rotate_state = S_ROT_FLUSH;
}

//  Start a journal append of the pending batch if none is in flight, and
//  move a rotation along. Record checksums are taken here, with the seed
//  of the journal the batch goes to.
static int
s_journal_kick (kvt_nvme_store_t *self)
{
    s_rotate_step (self);
    if (self->journal_busy || self->journal_pause)
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
    struct io_uring_sqe *sqe;
    int rc = s_get_sqe (self, &sqe);
    if (rc)
        return rc;                  //  Records stay pending for the next try
    s_batch_t swap = self->inflight;
    self->inflight = self->pending;
    self->pending = swap;
    self->pending.count = 0;
    for (size_t i = 0; i < self->inflight.count; i++)
        self->inflight.records [i].record_checksum =
            s_record_checksum (&self->inflight.records [i], self->journal_seed);
    self->snapshot_in_flight = self->rotate_state == S_ROT_FLUSH;
    self->journal_busy = true;
    self->journal_done_bytes = 0;
    self->journal_write_offset = self->journal_end;
    self->journal_end += self->inflight.count * sizeof (s_journal_record_t);
    if (self->fault_count [KVT_NVME_FAULT_JOURNAL] > 0) {
        //  Injected fault: the append must not land, as with a real ENOSPC
        self->fault_count [KVT_NVME_FAULT_JOURNAL]--;
        self->journal_faulted = true;
        io_uring_prep_nop (sqe);
    }
    else {
        io_uring_prep_write (sqe, self->journal_fd, self->inflight.records,
                             (unsigned) (self->inflight.count * sizeof (s_journal_record_t)),
                             self->journal_write_offset);
        if (self->sync_on_ack)
            sqe->rw_flags = RWF_DSYNC;
    }
    io_uring_sqe_set_data64 (sqe, S_JOURNAL_UD);
    return 0;
}

static int
s_journal_requeue (kvt_nvme_store_t *self)
{
    struct io_uring_sqe *sqe;
    int rc = s_get_sqe (self, &sqe);
    if (rc)
        return rc;
    uint32_t total = (uint32_t) (self->inflight.count * sizeof (s_journal_record_t));
    io_uring_prep_write (sqe, self->journal_fd,
                         (uint8_t *) self->inflight.records + self->journal_done_bytes,
                         total - self->journal_done_bytes,
                         self->journal_write_offset + self->journal_done_bytes);
    if (self->sync_on_ack)
        sqe->rw_flags = RWF_DSYNC;
    io_uring_sqe_set_data64 (sqe, S_JOURNAL_UD);
    return 0;
}

static void
s_op_done (kvt_nvme_store_t *self, int index, int rc)
{
    s_op_t *op = &self->ops [index];
    op->rc = rc;
    op->state = S_OP_DONE;
    int tail = (self->done_head + self->done_count) % self->queue_depth;
    self->done_fifo [tail] = index;
    self->done_count++;
}

//  Count and classify a failed operation.
static void
s_count_error (kvt_nvme_store_t *self, const char *what, uint64_t slot, int rc,
               uint64_t op_count)
{
    self->stats.io_errors += op_count;
    if (rc == -ENOSPC || rc == -EDQUOT)
        self->stats.enospc += op_count;
    s_log_io_error (self, what, slot, rc);
}

//  Check a read's header and payload; copy out of staging. Returns 0,
//  KVT_ECHECKSUM or KVT_EMISS.
static int
s_verify_read (kvt_nvme_store_t *self, s_op_t *op)
{
    if (op->direct) {
        //  No header was read: the payload must hash to what the journal
        //  recorded for this slot's current block
        uint64_t checksum = XXH3_64bits (op->caller, self->block_bytes);
        return checksum == op->checksum? 0: KVT_ECHECKSUM;
    }
    const s_block_header_t *header = (const s_block_header_t *) op->stage;
    const uint8_t *payload = op->stage + S_HEADER_BYTES;
    if (header->magic != S_BLOCK_MAGIC || header->header_checksum != s_header_checksum (header))
        return KVT_ECHECKSUM;
    if (header->block_hash != op->block_hash || header->slot != op->slot
    ||  header->generation != op->generation || header->length != (uint32_t) self->block_bytes)
        return KVT_EMISS;
    uint64_t checksum = XXH3_64bits (payload, self->block_bytes);
    if (checksum != header->payload_checksum || checksum != op->checksum)
        return KVT_ECHECKSUM;
    memcpy (op->caller, payload, self->block_bytes);
    return 0;
}

//  All data parts of an op have completed.
static void
s_op_io_complete (kvt_nvme_store_t *self, int index)
{
    s_op_t *op = &self->ops [index];
    s_slot_t *entry = &self->slots [op->slot];
    kvt_nvme_fault_t kind = op->is_write? KVT_NVME_FAULT_WRITE: KVT_NVME_FAULT_READ;
    if (op->rc == 0 && self->fault_count [kind] > 0) {
        self->fault_count [kind]--;
        op->rc = -self->fault_errno [kind];
    }
    if (op->is_write) {
        if (op->rc) {
            s_count_error (self, "write", op->slot, op->rc, 1);
            entry->state = S_SLOT_EMPTY;
            s_op_done (self, index, op->rc);
            return;
        }
        s_journal_record_t record = {
            .slot = op->slot, .block_hash = op->block_hash,
            .generation = op->generation, .payload_checksum = op->checksum
        };
        op->state = S_OP_JOURNAL;
        s_batch_push (&self->pending, &record, index);
        return;
    }
    entry->readers--;
    int rc = op->rc;
    if (rc)
        s_count_error (self, "read", op->slot, rc, 1);
    else {
        rc = s_verify_read (self, op);
        if (rc) {
            if (rc == KVT_ECHECKSUM)
                self->stats.checksum_failures++;
            else
                self->stats.misses++;
            kvt_log_warn ("nvme store: slot %" PRIu64 " block %016" PRIx64 " refused: %s; "
                          "dropped, will be recomputed", op->slot, op->block_hash,
                          kvt_strerror (rc));
            //  Drop it from the index unless a newer write took the slot
            if (entry->state == S_SLOT_VALID && entry->generation == op->generation)
                s_drop (self, op->slot);
        }
        else {
            self->stats.reads++;
            self->stats.read_bytes += self->block_bytes;
        }
    }
    s_op_done (self, index, rc);
}

//  The journal append in flight completed with 'res'.
static void
s_journal_complete (kvt_nvme_store_t *self, int res)
{
    uint32_t total = (uint32_t) (self->inflight.count * sizeof (s_journal_record_t));
    if (self->journal_faulted) {
        self->journal_faulted = false;
        res = -self->fault_errno [KVT_NVME_FAULT_JOURNAL];
    }
    if (res == -EAGAIN || res == -EINTR) {
        if (s_journal_requeue (self) == 0)
            return;
        res = -EIO;
    }
    if (res > 0 && self->journal_done_bytes + (uint32_t) res < total) {
        self->journal_done_bytes += (uint32_t) res;
        self->stats.short_requeues++;
        if (s_journal_requeue (self) == 0)
            return;
        res = -EIO;
    }
    if (res == 0 && total > 0)
        res = -EIO;
    int rc = res < 0? res: 0;
    if (rc) {
        uint64_t failed_ops = 0;
        for (size_t i = 0; i < self->inflight.count; i++)
            failed_ops += self->inflight.ops [i] >= 0;
        s_count_error (self, "journal append for", self->inflight.count?
                       self->inflight.records [0].slot & ~S_DROP_FLAG: 0, rc, failed_ops);
    }
    else {
        self->stats.journal_writes++;
        self->stats.journal_records += self->inflight.count;
    }
    for (size_t i = 0; i < self->inflight.count; i++) {
        int index = self->inflight.ops [i];
        if (index < 0)
            continue;               //  A forget: nothing to acknowledge
        s_op_t *op = &self->ops [index];
        s_slot_t *entry = &self->slots [op->slot];
        if (rc == 0) {
            entry->state = S_SLOT_VALID;
            entry->block_hash = op->block_hash;
            entry->generation = op->generation;
            entry->checksum = op->checksum;
            self->stats.writes++;
            self->stats.write_bytes += self->block_bytes;
        }
        else
            entry->state = S_SLOT_EMPTY;
        s_op_done (self, index, rc);
    }
    self->inflight.count = 0;
    self->journal_busy = false;
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

//  Handle one CQE.
static void
s_handle_cqe (kvt_nvme_store_t *self, uint64_t user_data, int res)
{
    if (user_data == S_JOURNAL_UD) {
        s_journal_complete (self, res);
        return;
    }
    if (user_data == S_ROTATE_UD) {
        s_rotate_done (self, res);
        return;
    }
    int index = (int) (user_data >> 1);
    int part_index = (int) (user_data & 1);
    assert (index >= 0 && index < self->queue_depth);
    s_op_t *op = &self->ops [index];
    assert (op->state == S_OP_IO);
    s_part_t *part = &op->parts [part_index];
    if (res == -EAGAIN || res == -EINTR) {
        if (s_queue_part (self, index, part_index) == 0)
            return;
        res = -EIO;
    }
    if (res > 0) {
        part->done_bytes += (uint32_t) res;
        if (part->done_bytes < part->bytes) {
            self->stats.short_requeues++;
            if (s_queue_part (self, index, part_index) == 0)
                return;
            res = -EIO;
        }
    }
    else
    if (res == 0)
        res = -EIO;                 //  End of file inside a slot: the file shrank
    if (res < 0 && op->rc == 0)
        op->rc = res;
    if (--op->pending == 0)
        s_op_io_complete (self, index);
}

//  Process CQEs ready now until 'want_done' operations are finished
//  (a read's checksum is verified here, so this bounds the slice of CPU
//  one reap takes); returns how many CQEs.
static int
s_process_cqes (kvt_nvme_store_t *self, int want_done)
{
    int seen = 0;
    while (self->done_count < want_done) {
        struct io_uring_cqe *cqe;
        if (io_uring_peek_cqe (&self->ring, &cqe) != 0 || !cqe)
            break;
        uint64_t user_data = io_uring_cqe_get_data64 (cqe);
        int res = cqe->res;
        io_uring_cqe_seen (&self->ring, cqe);
        s_handle_cqe (self, user_data, res);
        seen++;
    }
    return seen;
}


//  --------------------------------------------------------------------------
//  Submit everything prepared. Returns SQEs submitted or -errno.

int
kvt_nvme_submit (kvt_nvme_store_t *self)
{
    assert (self);
    if (!self->opened)
        return -EBADF;
    int rc = s_journal_kick (self);
    if (rc)
        return rc;
    if (io_uring_sq_ready (&self->ring) == 0)
        return 0;
    return io_uring_submit (&self->ring);
}


//  --------------------------------------------------------------------------
//  Collect finished operations without waiting.

int
kvt_nvme_reap (kvt_nvme_store_t *self, kvt_nvme_done_t *done, int max_done)
{
    assert (self);
    assert (done || max_done == 0);
    if (!self->opened)
        return -EBADF;
    uint64_t value;
    //  Drain the eventfd first so a completion posted after we look still
    //  leaves it readable.
    if (read (self->event_fd, &value, sizeof (value)) < 0 && errno != EAGAIN)
        return -errno;
    s_process_cqes (self, max_done);
    int rc = s_journal_kick (self);
    if (rc == 0 && io_uring_sq_ready (&self->ring) > 0)
        rc = io_uring_submit (&self->ring);
    if (rc < 0)
        kvt_log_error ("nvme store: io_uring_submit: %s", strerror (-rc));
    int count = 0;
    while (count < max_done && self->done_count > 0) {
        int index = self->done_fifo [self->done_head];
        self->done_head = (self->done_head + 1) % self->queue_depth;
        self->done_count--;
        done [count].tag = self->ops [index].tag;
        done [count].rc = self->ops [index].rc;
        count++;
        s_op_release (self, index);
    }
    return count;
}


//  --------------------------------------------------------------------------
//  Operations prepared and not yet reaped.

int
kvt_nvme_store_inflight (kvt_nvme_store_t *self)
{
    assert (self);
    return self->opened? self->queue_depth - self->free_count: 0;
}


//  --------------------------------------------------------------------------
//  Wait for a completion (tests and tools). 0, -ETIME, -EAGAIN if idle.

int
kvt_nvme_store_wait (kvt_nvme_store_t *self, int timeout_ms)
{
    assert (self);
    if (!self->opened)
        return -EBADF;
    if (self->done_count > 0)
        return 0;
    int rc = kvt_nvme_submit (self);
    if (rc < 0)
        return rc;
    if (self->free_count == self->queue_depth && !self->journal_busy && !self->rotate_busy)
        return -EAGAIN;
    struct io_uring_cqe *cqe;
    if (timeout_ms < 0)
        return io_uring_wait_cqe (&self->ring, &cqe);
    struct __kernel_timespec ts = {
        .tv_sec = timeout_ms / 1000, .tv_nsec = (long long) (timeout_ms % 1000) * 1000000
    };
    return io_uring_wait_cqe_timeout (&self->ring, &cqe, &ts);
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
    ||  self->slots [slot].state != S_SLOT_VALID)
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
        self->closing = true;
        while (true) {
            (void) s_journal_kick (self);   //  Failure shows up as a stuck drain below
            if (io_uring_sq_ready (&self->ring) > 0)
                (void) io_uring_submit (&self->ring);  //  Ditto
            bool io_busy = false, journal_wait = false;
            for (int i = 0; i < self->queue_depth; i++) {
                io_busy |= self->ops [i].state == S_OP_IO;
                journal_wait |= self->ops [i].state == S_OP_JOURNAL;
            }
            if (!io_busy && !self->journal_busy && !self->rotate_busy) {
                if (journal_wait || self->pending.count > 0)
                    kvt_log_error ("nvme store: close: %zu journal records could not be "
                                   "appended; those writes were never acknowledged",
                                   self->pending.count);
                break;              //  Nothing left that could complete
            }
            struct io_uring_cqe *cqe;
            int rc = io_uring_wait_cqe (&self->ring, &cqe);
            if (rc < 0 && rc != -EINTR) {
                kvt_log_error ("nvme store: drain at close: %s", strerror (-rc));
                break;
            }
            s_process_cqes (self, INT_MAX);
        }
        //  A clean close leaves everything acknowledged on stable storage
        for (int i = 0; i < self->file_count; i++)
            if (self->fds [i] >= 0 && fdatasync (self->fds [i]) != 0)
                kvt_log_warn ("nvme store: fdatasync %s: %s", self->paths [i],
                              strerror (errno));
        if (self->journal_fd >= 0 && fdatasync (self->journal_fd) != 0)
            kvt_log_warn ("nvme store: fdatasync journal: %s", strerror (errno));
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
