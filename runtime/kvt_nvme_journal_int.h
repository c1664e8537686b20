/*  =========================================================================
    kvt_nvme_journal_int - what the journal's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The journal is one class in two files: kvt_nvme_journal.c (appends,
    group commit, rotation, selftest) and kvt_nvme_journal_replay.c
    (replay and rewrite at open). This header is for those files only:
    the on-disk format and the class's state.
@end
*/

#ifndef KVT_NVME_JOURNAL_INT_H_INCLUDED
#define KVT_NVME_JOURNAL_INT_H_INCLUDED

#define S_JOURNAL_MAGIC     0x314C4E524A54564BULL   //  "KVTJRNL1"
#define S_JOURNAL_VERSION   1                       //  Journal format version
#define S_JOURNAL_NAME      "kvt-nvme.journal"      //  In dirs [0]
#define S_JOURNAL_TMP       "kvt-nvme.journal.tmp"  //  Compaction target before rename
#define S_JOURNAL_NEXT      "kvt-nvme.journal.next" //  Journal being built by a rotation
#define S_DROP_FLAG         (1ULL << 63)            //  Record: slot forgotten
#define S_APPEND_UD         UINT64_MAX              //  user_data of appends
#define S_ROTATE_UD         (UINT64_MAX - 1)        //  user_data of rotation steps
#define S_SYNC_UD           (UINT64_MAX - 2)        //  user_data of group fdatasyncs
#define S_JOURNAL_LIMIT     (64ULL << 20)           //  Default appends between compactions
#define S_SNAPSHOT_SCAN     65536                   //  Slots a rotation looks at per append
#define S_CHUNK_RECORDS     65536                   //  Records per read/write at open
#define S_GENERATION_SKIP   (1ULL << 20)            //  Generations skipped at each open

//  One journal record: a completed write or a forget
typedef struct {
    uint64_t slot;                  //  Slot; S_DROP_FLAG set for a forget
    uint64_t block_hash;            //  Block hash (0 for a forget)
    uint64_t generation;            //  Write sequence number; latest wins
    uint64_t payload_checksum;      //  xxh3 of the payload (0 for a forget)
    uint64_t record_checksum;       //  xxh3 of the 32 bytes above, seeded per journal
} s_record_t;

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
} s_header_t;

//  Journal rotation (compaction while running): open the next journal,
//  write its header, switch appends to it, append a snapshot of the index
//  in slices, rename it over the journal, close the old one.
typedef enum {
    S_ROT_IDLE = 0,                 //  Appending; rotate past the limit
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
    s_record_t *records;            //  Records of this batch
    int *ops;                       //  Op index per record, -1 for none
    size_t count;                   //  Records in the batch
    size_t capacity;                //  Allocated entries
} s_batch_t;

struct _kvt_nvme_journal_t {
    kvt_nvme_journal_config_t config;   //  Copy; dir owned below
    char *dir;                      //  Owned copy of config.dir
    char *path;                     //  dir/S_JOURNAL_NAME
    char *next_path;                //  dir/S_JOURNAL_NEXT
    kvt_nvme_slot_t *slots;         //  The store's index (borrowed)
    struct io_uring *ring;          //  The store's ring (borrowed)
    kvt_nvme_journal_ack_fn *ack;   //  Acknowledges ops
    void *ack_arg;                  //  Its argument
    int fd;                         //  Journal appended to, -1 if none
    int old_fd;                     //  Previous journal during a rotation, or -1
    uint64_t seed;                  //  Record checksum seed of fd's journal
    uint64_t end;                   //  Next append offset
    uint64_t base;                  //  end when the last compaction ended
    uint64_t limit;                 //  Bytes appended between compactions
    uint64_t next_generation;       //  Past every generation replayed
    s_batch_t unsynced;             //  Group commit: writes waiting for a data sync
    s_batch_t syncing;              //  Group commit: writes whose data is being synced
    s_batch_t pending;              //  Records waiting to be appended
    s_batch_t inflight;             //  Records being appended
    bool *dirty;                    //  Data files written by unsynced records
    int syncs_inflight;             //  fdatasyncs of the syncing group not completed
    int sync_rc;                    //  First error of those
    int sync_fault_errno;           //  Errno to inject into group syncs
    int sync_fault_count;           //  Group syncs left to fail
    bool busy;                      //  An append in flight
    int64_t append_start_us;        //  When the append in flight was queued
    uint32_t done_bytes;            //  Progress of the append (short writes)
    uint64_t write_offset;          //  Offset of the append
    bool faulted;                   //  The append in flight is an injected failure
    bool pause;                     //  No new appends: a rotation is switching files
    bool snapshot_in_flight;        //  The append in flight ends the snapshot
    int rotate_state;               //  s_rotate_state_t
    bool rotate_busy;               //  A rotation step in flight
    int rotate_fd;                  //  Next journal once opened, until switched, or -1
    uint64_t rotate_seed;           //  Record checksum seed of the next journal
    uint64_t rotate_cursor;         //  Next slot the snapshot looks at
    s_header_t rotate_header;       //  Header of the next journal, written from here
    bool closing;                   //  Start no new rotation step
    int fault_errno;                //  Errno to inject into appends
    int fault_count;                //  Appends left to fail
    kvt_nvme_journal_stats_t stats; //  Counters
};

static inline uint64_t
s_record_checksum (const s_record_t *record, uint64_t seed)
{
    return XXH3_64bits_withSeed (record, offsetof (s_record_t, record_checksum), seed);
}

static inline uint64_t
s_header_checksum (const s_header_t *header)
{
    return XXH3_64bits (header, offsetof (s_header_t, header_checksum));
}

static inline void
s_header_fill (kvt_nvme_journal_t *self, s_header_t *header, uint64_t seed)
{
    memset (header, 0, sizeof (*header));
    header->magic = S_JOURNAL_MAGIC;
    header->version = S_JOURNAL_VERSION;
    header->dir_count = (uint32_t) self->config.dir_count;
    header->block_bytes = self->config.block_bytes;
    header->capacity_blocks = self->config.capacity_blocks;
    header->files_per_dir = (uint32_t) self->config.files_per_dir;
    header->seed = seed;
    header->header_checksum = s_header_checksum (header);
}

#endif
