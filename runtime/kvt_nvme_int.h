/*  =========================================================================
    kvt_nvme_int - what the NVMe store's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The store (kvt_nvme_store.h) is one class in six files:
    kvt_nvme_store.c (open, close, accessors), kvt_nvme_store_test.c (its
    selftest), kvt_nvme_io.c (the op pool and the completion state
    machine: prep, submit, reap, verify), kvt_nvme_parts.c (an op's
    transfers and their SQEs), kvt_nvme_group.c (layer-group
    reads and the group checksums kept from their headers) and, through
    their own classes, kvt_nvme_journal (manifest) and kvt_nvme_checksum
    (checksum worker pool). This header is for the
    store's files only: the on-disk block header and the store's state.
@end
*/

#ifndef KVT_NVME_INT_H_INCLUDED
#define KVT_NVME_INT_H_INCLUDED

#include "kvt_classes.h"
#include "kvt_nvme_journal.h"
#include "kvt_nvme_checksum.h"
#include "kvt_hash_load.h"

#define KVT_NVME_HEADER_BYTES   4096                    //  On-disk header area per slot
#define KVT_NVME_ALIGN          4096                    //  O_DIRECT alignment we honour
#define KVT_NVME_BLOCK_MAGIC    0x31454D564E54564BULL   //  "KVTNVME1"
#define KVT_NVME_MAX_REGIONS    64                      //  Caller buffer regions
#define KVT_NVME_GROUP_CACHE    4096                    //  Headers whose group sums we keep

//  Header at the start of every slot on disk (first 64 of its 4096 bytes).
//  Version 1: group_count 0, nothing after these 64 bytes, header_checksum
//  = xxh3-64 of the 56 bytes before it. Version 2 (a full-length block
//  written by a store with layer groups): group_count G > 1, then G
//  uint64 xxh3-64 checksums, one per layer group's payload bytes, at
//  byte 64 of the header area (kvt_nvme_block_groups), and
//  header_checksum = xxh3-64 (first 56 bytes, seed = xxh3-64 of the G
//  group checksums), so the group table is covered too.
typedef struct {
    uint64_t magic;                 //  KVT_NVME_BLOCK_MAGIC
    uint64_t block_hash;            //  Caller's block hash
    uint64_t slot;                  //  Slot it was written to (catches misdirected I/O)
    uint64_t generation;            //  Store-wide write sequence number
    uint64_t payload_checksum;      //  xxh3-64 of the 'length' payload bytes
    uint32_t length;                //  Payload bytes written (block_bytes, or less: _len)
    uint32_t version;               //  Format version, 1 or 2
    uint32_t group_count;           //  v2: layer groups in the table after us; v1: 0
    uint32_t reserved;              //  Zero
    uint64_t header_checksum;       //  See above
} kvt_nvme_block_header_t;

//  The group checksum table of a v2 header
#define kvt_nvme_block_groups(header) ((uint64_t *) ((uint8_t *) (header) + 64))

typedef enum {
    KVT_NVME_OP_FREE = 0,           //  On the free list
    KVT_NVME_OP_IO = 1,             //  Data parts in flight
    KVT_NVME_OP_JOURNAL = 2,        //  Waiting for its journal record
    KVT_NVME_OP_DONE = 3,           //  In the done FIFO, waiting for reap
    KVT_NVME_OP_HASH = 4,           //  Write: checksum job in flight, no I/O yet
    KVT_NVME_OP_VERIFY = 5          //  Read: I/O done, checksum job in flight
} kvt_nvme_op_state_t;

typedef struct {
    int file_index;                 //  Registered file index
    int buf_index;                  //  Registered buffer index
    uint8_t *addr;                  //  Start of the transfer
    uint32_t bytes;                 //  Length of the transfer (of its first piece)
    uint32_t done_bytes;            //  Transferred so far (short transfers)
    uint64_t offset;                //  File offset of the transfer
    uint8_t *tail;                  //  A vectored write's second piece, or NULL: 'bytes'
                                    //  at addr, then tail_bytes at tail, one SQE
    uint32_t tail_bytes;            //  Its length
} kvt_nvme_part_t;

typedef struct {
    int state;                      //  kvt_nvme_op_state_t
    bool is_write;                  //  Write or read
    bool direct;                    //  Payload moves from/to caller memory
    int part_count;                 //  1, or 2 for a direct write (header, payload)
    int pending;                    //  Parts not yet complete
    int rc;                         //  First error seen
    uint64_t tag;                   //  Caller's tag
    uint64_t slot;                  //  Target slot
    uint64_t block_hash;            //  Block hash
    uint64_t generation;            //  Write: new generation; read: expected
    uint64_t checksum;              //  Write: payload checksum; read: expected
    uint32_t bytes;                 //  Payload length moved and checksummed (<= block_bytes)
    int group;                      //  Read of one layer group, or -1 (whole payload)
    bool header_known;              //  Group read: its header's checksums were cached,
                                    //  so only the group's bytes are read
    void *caller;                   //  src or dst in caller memory
    uint8_t *stage;                 //  This op's staging buffer (header + payload)
    kvt_nvme_part_t parts [2];      //  The transfers of this op
    struct iovec iov [2];           //  A vectored part's pieces, for its SQE
} kvt_nvme_op_t;

typedef struct {
    uint8_t *base;                  //  Start of a registered caller region
    size_t bytes;                   //  Its length (<= 1 GiB, the kernel's limit)
} kvt_nvme_region_t;

struct _kvt_nvme_store_t {
    //  Config (owned copies)
    char **dirs;                    //  Directories, owned strings
    int dir_count;                  //  Entries in dirs
    size_t block_bytes;             //  Payload bytes per block
    uint64_t capacity_blocks;       //  Slots
    int queue_depth;                //  Ops in the pool
    int files_per_dir;              //  Data files per directory
    bool sync_on_ack;               //  Durable before ack
    bool sync_per_write;            //  ...by O_DSYNC per data write, not group commit
    bool buffered_fallback;         //  Allow non-O_DIRECT files
    bool bounce_reads;              //  Registered memory is direct for writes only
    bool split_writes;              //  Direct writes as two SQEs (header, payload), not one
                                    //  vectored write
    uint64_t journal_compact_bytes; //  Given to the journal
    int checksum_threads;           //  As configured (0: auto)
    bool pool_under_load;           //  The pool takes jobs only under load (auto, or asked)
    size_t submit_hold_bytes;       //  See KVT_NVME_SUBMIT_HOLD_BYTES
    size_t held_hash_bytes;         //  Bytes hashed inline since the oldest SQE not yet
                                    //  submitted was queued
    //  Geometry
    int group_count;                //  Layer groups per block (1: none; see layer_groups)
    uint64_t group_offset [KVT_NVME_MAX_GROUPS + 1];   //  Group g: [offset [g], offset [g + 1])
    uint64_t *group_cache;          //  Verified v2 headers' group checksums, direct-mapped
                                    //  by slot: KVT_NVME_GROUP_CACHE rows of {slot + 1,
                                    //  generation, group_count sums}; NULL without groups
    size_t payload_io_bytes;        //  block_bytes rounded up to KVT_NVME_ALIGN
    size_t stride;                  //  KVT_NVME_HEADER_BYTES + payload_io_bytes
    int file_count;                 //  dir_count x files_per_dir
    uint64_t slots_per_file;        //  ceil (capacity / file_count)
    //  Resources (open)
    bool opened;                    //  open succeeded
    bool ring_ready;                //  ring initialised
    struct io_uring ring;           //  The ring
    int *fds;                       //  file_count data files (registered), -1 if closed
    char **paths;                   //  Data file paths
    int event_fd;                   //  Completion eventfd (ring and checksum pool), or -1
    uint8_t *staging;               //  queue_depth x stride, registered buffer 0
    size_t staging_bytes;           //  Mapping length
    kvt_nvme_region_t regions [KVT_NVME_MAX_REGIONS];   //  Caller regions, buffers 1..
    int region_count;               //  Registered caller regions
    bool direct_io;                 //  Files are O_DIRECT
    kvt_nvme_journal_t *journal;    //  The manifest
    kvt_nvme_checksum_t *checksum;  //  Worker pool, NULL when checksums run inline
    kvt_hash_load_t hash_load;      //  Auto: whether the pool takes a job (kvt_hash_load)
    //  State
    kvt_nvme_slot_t *slots;         //  Index, capacity_blocks entries
    uint64_t next_generation;       //  Next write's generation
    kvt_nvme_op_t *ops;             //  queue_depth ops
    int *free_ops;                  //  Stack of free op indices
    int free_count;                 //  Entries on the stack
    int *done_fifo;                 //  Ring of finished op indices
    int done_head;                  //  Oldest entry
    int done_count;                 //  Entries in the FIFO
    int io_ops;                     //  Ops in state IO: transfers queued or at the device
    int hashing_writes;             //  Ops in state HASH: writes bound for the device next
    uint64_t *recovered;            //  Slots found valid at open
    uint64_t recovered_count;       //  Entries in recovered
    //  Faults and counters
    int fault_errno [KVT_NVME_FAULT_KINDS];     //  Errno to inject
    int fault_count [KVT_NVME_FAULT_KINDS];     //  Completions left to fail
    uint64_t logged_errors;         //  I/O errors seen, for log thinning
    kvt_nvme_store_stats_t stats;   //  Counters (journal's merged in on read)
};

//  kvt_nvme_parts.c: submit what the ring holds (SQEs submitted or
//  -errno); the registered region holding [addr, addr + bytes) (1-based
//  buffer index), or -1; fill an op's parts for its slot, bytes and
//  direction with the payload at 'caller' (direct where that is
//  registered memory); queue (the rest of) part 'part_index' of op
//  'op_index' as one SQE (0, or an error of the ring); queue all an op's
//  parts, or none (0 or an error).
int
    kvt_nvme_io_submit_ring (kvt_nvme_store_t *self);
int
    kvt_nvme_io_region_of (kvt_nvme_store_t *self, const void *addr, size_t bytes);
void
    kvt_nvme_io_layout (kvt_nvme_store_t *self, kvt_nvme_op_t *op, void *caller);
int
    kvt_nvme_io_queue_part (kvt_nvme_store_t *self, int op_index, int part_index);
int
    kvt_nvme_io_submit_parts (kvt_nvme_store_t *self, int index);

//  kvt_nvme_io.c, for kvt_nvme_group.c: take an op for reading 'slot',
//  which must hold 'block_hash', filled as a whole-block read tagged 'tag'
//  but for its bytes and layout (0, KVT_EMISS, -EBADF, -ERANGE, -EBUSY,
//  -EAGAIN); give an op back to the pool.
int
    kvt_nvme_io_read_op_take (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                              uint64_t tag, kvt_nvme_op_t **op_p, int *index_p);
void
    kvt_nvme_io_op_release (kvt_nvme_store_t *self, int index);

//  kvt_nvme_group.c: keep a verified v2 header's group checksums ('sums',
//  group_count of them) for 'slot' at 'generation', so that later group
//  reads of that block skip its header.
void
    kvt_nvme_group_sums_keep (kvt_nvme_store_t *self, uint64_t slot, uint64_t generation,
                              const uint64_t *sums);

//  kvt_nvme_io.c: the journal's acknowledgement of op 'op_index' (rc 0:
//  its record is on disk).
void
    kvt_nvme_io_journal_ack (void *self, int op_index, int rc);

//  kvt_nvme_io.c: process completions ready now, ring and checksum pool,
//  until 'want_done' ops are finished. Returns how many were handled.
int
    kvt_nvme_io_process (kvt_nvme_store_t *self, int want_done);

//  kvt_nvme_io.c: at close, wait until no op, append or checksum job is
//  in flight, appending the records of writes that completed. Blocks.
void
    kvt_nvme_io_drain (kvt_nvme_store_t *self);

#endif
