/*  =========================================================================
    kvt_nvme_journal - the NVMe store's manifest: an append-only journal of
    checksummed records, replayed at open and compacted while running

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A plain class owned by kvt_nvme_store (see kvt_nvme_store.h for what
    the journal guarantees). It keeps the file dirs[0]/kvt-nvme.journal:
    a 64-byte header (magic, geometry, seed) then 40-byte records (slot,
    hash, generation, payload checksum, record checksum). It owns:
    - replay at open: latest generation per slot wins, records that fail
      their checksum (a torn tail, a hole) are skipped and counted, and the
      file is rewritten compacted (tmp, fsync, rename) when worthwhile;
    - appends while running, all through the store's io_uring ring: at
      most one append in flight, records added meanwhile go out together
      in the next one (so appends batch themselves under load);
    - compaction while running (rotation): open the next journal, switch
      appends to it, append a snapshot of the index in slices, rename it
      over the journal, close the old one, each step one SQE;
    - group commit: with 'sync' the appends are written RWF_DSYNC, and
      with 'group_sync' a write's record first waits for a data sync: the
      writes added while a sync is in flight form the next group, whose
      data files (those it touched) are fdatasync'ed together, one SQE
      per file, in parallel; when all are done its records join the next
      append. The sync of one group overlaps the append of the one
      before, so a group costs one flush per file touched plus its share
      of one append, whatever its size. A failed fdatasync fails every
      write of its group.
    The index (an array of kvt_nvme_slot_t, capacity_blocks entries) is
    the store's: replay fills it, compaction reads it. Records that carry
    an op index are acknowledged through the ack callback when their
    append completes.
@discuss
    Never blocks except in open (replay, rewrite) and flush. Each
    function does a bounded slice: a snapshot step looks at 64k slots.
    user_data values >= KVT_NVME_JOURNAL_UD_MIN on the ring are the
    journal's; the store hands those completions to _complete.
@end
*/

#ifndef KVT_NVME_JOURNAL_H_INCLUDED
#define KVT_NVME_JOURNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_NVME_JOURNAL_UD_MIN (UINT64_MAX - 2)    //  Lowest user_data the journal uses

typedef struct _kvt_nvme_journal_t kvt_nvme_journal_t;
struct io_uring;

typedef enum {
    KVT_NVME_SLOT_EMPTY = 0,        //  Holds nothing we would hand out
    KVT_NVME_SLOT_VALID = 1,        //  Holds an acknowledged block
    KVT_NVME_SLOT_WRITING = 2       //  A write is in flight
} kvt_nvme_slot_state_t;

//  One index entry: what the store believes slot s holds
typedef struct {
    uint64_t block_hash;            //  Hash of the block held
    uint64_t generation;            //  Generation of the block held (0: never)
    uint64_t checksum;              //  Payload checksum of the block held
    uint32_t state;                 //  kvt_nvme_slot_state_t
    uint32_t readers;               //  Reads in flight (the store's)
} kvt_nvme_slot_t;

typedef struct {
    const char *dir;                //  Where the journal lives (dirs [0]); copied
    int dir_count;                  //  Geometry, checked at replay
    int files_per_dir;              //  Geometry, checked at replay
    size_t block_bytes;             //  Geometry, checked at replay
    uint64_t capacity_blocks;       //  Entries in the index
    uint64_t compact_bytes;         //  Appends between compactions (0: 64 MiB)
    bool sync;                      //  Appends written RWF_DSYNC
    bool group_sync;                //  fdatasync dirty data files before each append
    int data_file_count;            //  Registered data files (fixed indices 0..n-1)
} kvt_nvme_journal_config_t;

typedef struct {
    uint64_t writes;                //  Appends completed
    uint64_t records;               //  Records in those appends
    uint64_t append_us;             //  Time appends were in flight, summed (their
                                    //  ops' acknowledgements wait on them)
    uint64_t rotations;             //  Compactions done while running
    uint64_t failed_ops;            //  Writes not acknowledged: their append failed
    uint64_t failed_enospc;         //  Of those, for lack of space
    uint64_t syncs;                 //  Data file fdatasyncs issued (group commit)
    uint64_t sync_groups;           //  Appends that carried fdatasyncs
    uint64_t recovery_skipped;      //  Records dropped at replay (bad checksum)
    uint64_t replayed_records;      //  Records read at replay
} kvt_nvme_journal_stats_t;

//  Called once per acknowledged-or-failed record that carries an op
//  index, when its append completes: rc 0 (on disk) or -errno.
typedef void (kvt_nvme_journal_ack_fn) (void *arg, int op_index, int rc);

//  Create a journal over 'slots' (borrowed, capacity_blocks entries) that
//  appends through 'ring' (borrowed; may be initialised after open).
//  Touches no file. Cannot fail beyond OOM.
kvt_nvme_journal_t *
    kvt_nvme_journal_new (const kvt_nvme_journal_config_t *config, kvt_nvme_slot_t *slots,
                          struct io_uring *ring, kvt_nvme_journal_ack_fn *ack, void *ack_arg);

//  Replay the journal (and the next journal of a rotation cut short) into
//  the index, which must be zeroed; rewrite it compacted when worthwhile.
//  Blocks. Returns 0 or -errno; a journal that cannot be compacted (full
//  disk) is kept and appended to.
int
    kvt_nvme_journal_open (kvt_nvme_journal_t *self);

//  Return the first generation a new write may use after open: past every
//  record replayed, with room for writes whose record never landed.
uint64_t
    kvt_nvme_journal_next_generation (kvt_nvme_journal_t *self);

//  Queue a record for the next append. op_index >= 0 is acknowledged
//  through the callback; -1 for forgets and drops. data_file >= 0 is the
//  data file the write went to (fdatasync'ed first under group_sync), -1
//  if none. Does no I/O.
void
    kvt_nvme_journal_add (kvt_nvme_journal_t *self, uint64_t slot, uint64_t block_hash,
                          uint64_t generation, uint64_t payload_checksum, bool drop,
                          int op_index, int data_file);

//  Start an append of the queued records if none is in flight, and move a
//  compaction along. Queues SQEs; the caller submits. Returns 0 or -errno
//  (records stay queued for the next kick).
int
    kvt_nvme_journal_kick (kvt_nvme_journal_t *self);

//  Handle a completion whose user_data is the journal's.
void
    kvt_nvme_journal_complete (kvt_nvme_journal_t *self, uint64_t user_data, int res);

//  True if an append, a sync or a compaction step is in flight.
bool
    kvt_nvme_journal_busy (kvt_nvme_journal_t *self);

//  Return the records queued and not yet in an append.
size_t
    kvt_nvme_journal_pending (kvt_nvme_journal_t *self);

//  Start no new compaction step from now on (the store is closing).
void
    kvt_nvme_journal_set_closing (kvt_nvme_journal_t *self);

//  fdatasync the journal file. Blocks. Returns 0 or -errno.
int
    kvt_nvme_journal_flush (kvt_nvme_journal_t *self);

//  Copy the counters into 'stats'.
void
    kvt_nvme_journal_stats (kvt_nvme_journal_t *self, kvt_nvme_journal_stats_t *stats);

//  TEST ONLY: the next 'count' appends that carry writes (not a rotation's
//  snapshot slices) fail with -err without landing.
void
    kvt_nvme_journal_inject_fault (kvt_nvme_journal_t *self, int err, int count);

//  TEST ONLY: the next 'count' group data syncs fail with -err (the
//  fdatasyncs still run).
void
    kvt_nvme_journal_inject_sync_fault (kvt_nvme_journal_t *self, int err, int count);

//  Close the journal's files (no flush; see _flush). Safe on NULL; nulls
//  the caller's pointer. Appends still in flight must have completed.
void
    kvt_nvme_journal_destroy (kvt_nvme_journal_t **self_p);

//  Self test.
int
    kvt_nvme_journal_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
