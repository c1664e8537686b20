/*  =========================================================================
    kvt_nvme_store - checksummed KV blocks in O_DIRECT files through io_uring

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A plain class (not an actor) that the tier_nvme actor drives from its
    loop. Blocks live at numbered slots inside a few large files per
    directory; consecutive slots go to consecutive files, and files are
    spread over the directories, so several directories (devices) are
    striped like RAID-0. Files are opened O_DIRECT and read and written
    with io_uring, with registered files and registered buffers, up to
    'queue_depth' block I/Os in flight, submissions batched by the caller
    (prep ... prep, submit once). Completions wake the caller's loop through
    an eventfd (kvt_nvme_store_eventfd); the caller then reaps.

    Only open (recovery), destroy (drain, flush) and kvt_nvme_store_wait
    (for tools and tests) block. Prep, submit and reap never wait on I/O;
    prep_write and reap (for reads) compute xxh3 checksums on the caller's
    thread, and reap looks at no more completions than it was asked for.
    With checksum_threads > 1 the checksums (and bounce copies) run on a
    pool of worker threads instead (kvt_nvme_checksum: lock-free rings,
    results signalled on the same eventfd): a write's I/O starts when its
    checksum comes back, a read completes when its payload is verified,
    and the caller's thread does only bookkeeping. With checksum_threads
    0 (auto) the store has a pool where the machine has 8 cores or more
    and uses it only while hashing every block inline would take over
    half of the caller's thread (kvt_hash_load): a job's trip through the
    pool costs more than hashing a 64 KiB block.
@discuss
    On disk. Slot s lives in file (s mod F), F = dir_count x files_per_dir,
    at offset (s div F) x stride; file f is in directory (f mod dir_count).
    stride = 4096 (header) + block_bytes rounded up to 4096. The 4 KiB
    header holds magic, block hash, slot, generation, payload length,
    payload checksum (xxh3-64) and a checksum of the header itself.
    The payload length is block_bytes, or less for a block written with
    kvt_nvme_prep_write_len (the slot keeps its full stride; only that
    length, rounded up to 4096, is written and read back).
    Layer groups (format version 2, issue #4). A block's payload is
    [layer][K,V][kv_head][token][head_dim], so layers [a, b) are one
    contiguous byte range. With config.layer_groups = G > 1 (and 'layers'
    given) the payload is cut into G groups, group g being layers
    [g x layers / G, (g + 1) x layers / G); every group must start on a
    4096-byte boundary and block_bytes be a multiple of 4096 (O_DIRECT),
    else the store uses G = 1 (kvt_nvme_layer_groups says which). A
    full-length block written by such a store has a version 2 header:
    header layout (64 bytes) = magic, block hash, slot, generation,
    payload checksum, length (u32), version (u32) = 2, group_count (u32)
    = G, reserved (u32), header checksum; then, at byte 64 of the header
    area, G uint64 xxh3-64 checksums, one per group's bytes; the header
    checksum is xxh3-64 of the first 56 bytes seeded with xxh3-64 of that
    table (version 1: unseeded, group_count 0, no table). A block written
    with a shorter length (_len, e.g. FP8) is always version 1.
    kvt_nvme_prep_read_group reads one group: the 4 KiB header (into the
    store's staging) and the group's byte range (into the caller's block
    buffer at the group's offset, by DMA when registered), two I/Os, no
    state kept between groups. The header must match as for any read
    (magic, hash, slot, generation, length, and its payload checksum the
    one the journal recorded) and the group's bytes its checksum in the
    table, else the read completes with KVT_ECHECKSUM / KVT_EMISS and the
    block is dropped exactly as for a whole-block read. A version 1 block
    (written before layer groups, or with another G) is read whole instead
    by that same op (stats.group_fallbacks): correct, G times the bytes.
    A read whose header or payload does not match (magic, hash, slot,
    generation, length, checksum) completes with KVT_ECHECKSUM (bytes do
    not match their checksum: torn or flipped) or KVT_EMISS (the slot
    holds another block): the bytes are never handed out as valid, the
    failure is counted and logged, and the slot is dropped from the index.

    Manifest (kvt_nvme_journal). dirs[0]/kvt-nvme.journal is an
    append-only journal of 40-byte records (slot, hash, generation,
    payload checksum, record checksum). A write's record is appended only
    after its data write has completed (and, with sync_on_ack, synced),
    and the write is acknowledged only after its record write has
    completed. Open replays the journal (latest generation per slot wins,
    records that fail their checksum - a torn tail, a hole - are skipped and
    counted) and rewrites it compacted (write to a temporary file, fsync,
    rename) when it holds much more than the live set. While running, the
    journal is compacted every journal_compact_bytes of appends without
    blocking: the store opens dirs[0]/kvt-nvme.journal.next, switches
    appends to it, appends a snapshot of the index in slices of 64k slots
    (interleaved with new records), renames it over the journal and closes
    the old one, all through io_uring. Until the rename, open replays both
    files, which is correct at every step since the latest generation of
    a slot wins wherever it is. Recovery reads
    only the journal, never the block headers, so 1M blocks come back in
    well under a second (53 ms measured); a block that was torn after its
    record was written (an overwrite in flight at a crash) is caught by its
    checksum at its first read. A recovered block may be one whose
    acknowledgement the caller never saw (its record landed just before
    the crash); its bytes are then exactly those written.

    What "acknowledged" guarantees. A write is acknowledged when
    kvt_nvme_reap returns it with rc 0. At that moment:
    - sync_on_ack false: the data write (O_DIRECT) has been completed by
      the device and the journal record is in the kernel's page cache.
      The block survives the death of the process (kill -9, crash) but not
      a power loss or kernel crash: the device's volatile write cache and
      the page cache are not flushed.
    - sync_on_ack true: the data write has been made durable and so has
      its journal record (written with RWF_DSYNC). The block survives
      power loss, to the extent the device honours FUA/flush. How the data
      is made durable is group commit (kvt_nvme_journal.h): writes whose
      data completes while a sync is in flight form the next group; one
      fdatasync per data file the group touched (in parallel), then its
      records go into the next journal append, and all are acknowledged
      when that append completes. N writes completing together cost one
      flush per file touched, not N (stats.syncs, stats.sync_groups),
      and the sync of a group overlaps the append of the one before. A
      failed fdatasync fails every write of its group. With
      sync_per_write (a baseline) data files are opened O_DSYNC instead,
      each O_DIRECT write then carrying its own FUA or flush.
    Overwriting a slot gives up its previous block as soon as the write
    is prepared; a slot being written cannot be read, nor a slot being
    read written (-EBUSY). A read that fails with an I/O error leaves the
    block in place (it may be retried); one that fails its checks drops it.
    destroy waits for I/O in flight, appends the pending journal records
    and fdatasyncs the data files and the journal: after a clean close,
    everything acknowledged is on stable storage whatever sync_on_ack.

    Buffers. src/dst of prep_write/prep_read are caller memory, block_bytes
    each. If they lie inside a region registered with
    kvt_nvme_store_register_buffer (before open), are 4096-aligned and
    block_bytes is a multiple of 4096, the payload moves by DMA straight
    from/to caller memory ("direct"): a write is one vectored I/O (header
    from the staging, payload from the caller: one request at the disk,
    as a raw write of the slot would be; split_writes makes it two fixed
    I/Os, header then payload, which a virtio disk received as up to 1.8
    requests a block where the block layer did not merge them, session
    30), a read is one fixed I/O of the payload alone, checked
    against the checksum the journal recorded (the header is not read, so
    a misdirected block shows as KVT_ECHECKSUM rather than KVT_EMISS).
    Otherwise ("bounce") the block is copied through the store's own
    registered staging buffers: one fixed I/O of header + payload, and
    reads check the header too. Measured on a virtual disk, one
    contiguous I/O per block is the fastest pattern; the copy costs CPU
    (memcpy), which matters on writes above ~2 GB/s per core. Where the
    caller memory is on 4 KiB pages, the direct path's DMA takes a segment
    a page (a virtual disk spends a descriptor on each), while the staging
    is on huge pages: kvt_nvme_direct_reads says when reads should bounce
    anyway (config bounce_reads).

    Errors. Prep returns -ERANGE for slot >= capacity_blocks, -EAGAIN when
    queue_depth operations are outstanding (reap first), -EBUSY for a slot
    with a write in flight, KVT_EMISS for a read of a slot that does not
    hold 'block_hash'. Completions carry -ENOSPC, -EIO or any other -errno
    of the device (a failed write is not acknowledged, and its slot holds
    nothing afterwards); the store keeps serving after any of them. A
    missing directory fails open with -ENOENT, a file system refusing
    O_DIRECT with -EINVAL unless buffered_fallback is set.

    kvt_nvme_store_inject_fault is for tests only: it is always compiled
    and costs one branch per completion.
@end
*/

#ifndef KVT_NVME_STORE_H_INCLUDED
#define KVT_NVME_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_nvme_store_t kvt_nvme_store_t;

typedef struct {
    const char *const *dirs;        //  One or more directories, striped RAID-0 style
    int dir_count;                  //  Entries in dirs
    size_t block_bytes;             //  Payload bytes per block (padded to 4096 on disk)
    uint64_t capacity_blocks;       //  Slots across all files; never exceeded
    int queue_depth;                //  Most block operations outstanding (1..4096)
    int files_per_dir;              //  Data files per directory (>= 1)
    bool sync_on_ack;               //  Durable (data and record) before ack; see above
    bool buffered_fallback;         //  If O_DIRECT is refused (EINVAL), open buffered + warn
    uint64_t journal_compact_bytes; //  Journal bytes appended between compactions (0: 64 MiB)
    bool sync_per_write;            //  With sync_on_ack: O_DSYNC per data write instead of
                                    //  group commit (the old way; a baseline for benches)
    int checksum_threads;           //  Threads computing checksums: 1 = the caller's own
                                    //  (no pool), N > 1 = a pool of N for every job, 0 =
                                    //  auto (a pool for every write, and for reads under
                                    //  load: kvt_hash_load)
    bool checksum_under_load;       //  With N > 1 too: reads go to the pool only under load
    int layer_groups;               //  Layer groups per block, 0 or 1 = none (see above)
    int layers;                     //  Layers of a block (needed for layer_groups > 1)
    bool bounce_reads;              //  Reads through the staging even into registered
                                    //  memory (kvt_nvme_direct_reads); writes stay direct
    bool split_writes;              //  A direct write as two fixed-buffer SQEs (header,
                                    //  payload) for the block layer to merge, not one
                                    //  vectored write (see above)
    size_t submit_hold_bytes;       //  Most bytes hashed inline while a prepared I/O waits
                                    //  for the caller's kvt_nvme_submit (0: the default,
                                    //  KVT_NVME_SUBMIT_HOLD_BYTES)
} kvt_nvme_store_config_t;

//  A write's checksum (and a bounced write's copy) is computed before its
//  I/O can start, so a caller that prepares many writes and then submits
//  them once makes the first wait for all the later ones' hashing: a
//  demotion of 64 blocks of 2 MiB would hash 128 MiB (13 ms at 10 GB/s)
//  before the disk saw a byte, and tier_nvme's first refill of a 256 KiB
//  demotion kept the H200 machine's disk idle 2-4 ms (RESULTS.md, session
//  29). So before hashing inline the store submits what is waiting once
//  the hashing since it was queued would pass this many bytes: 4-13 us of
//  xxh3 on the machines measured, while small blocks still go out several
//  to a submission (each costs a syscall, and on a virtual disk an exit).
#define KVT_NVME_SUBMIT_HOLD_BYTES (128u << 10)

#define KVT_NVME_MAX_GROUPS 64      //  Most layer groups per block

typedef struct {
    uint64_t tag;                   //  Caller's tag from prep
    int rc;                         //  0, KVT_ECHECKSUM, KVT_EMISS, -EIO, -ENOSPC, -errno
} kvt_nvme_done_t;

typedef struct {
    uint64_t reads;                 //  Reads completed with rc 0
    uint64_t writes;                //  Writes acknowledged (rc 0)
    uint64_t read_bytes;            //  Payload bytes of those reads
    uint64_t write_bytes;           //  Payload bytes of those writes
    uint64_t checksum_failures;     //  Reads refused: bytes did not match their checksum
    uint64_t misses;                //  Reads refused: slot held another block
    uint64_t io_errors;             //  Operations failed by the device or file system
                                    //  (each write of a failed journal append counts)
    uint64_t enospc;                //  Of those, failed for lack of space
    uint64_t journal_writes;        //  Journal appends completed
    uint64_t journal_append_us;     //  Time those appends were in flight, summed
    uint64_t journal_records;       //  Records in those appends
    uint64_t direct_ops;            //  Operations that moved payload without a copy
    uint64_t bounce_ops;            //  Operations copied through staging buffers
    uint64_t short_requeues;        //  Short transfers resubmitted
    uint64_t recovered_blocks;      //  Valid blocks found at open
    uint64_t recovery_skipped;      //  Journal records dropped at open (bad checksum)
    uint64_t recovery_us;           //  Time open spent on recovery
    uint64_t journal_rotations;     //  Compactions done while running
    uint64_t syncs;                 //  Device flushes asked for before acks: group
                                    //  fdatasyncs, or O_DSYNC data writes (sync_per_write)
    uint64_t sync_groups;           //  Group commits: data syncs shared by writes
    uint64_t checksum_jobs;         //  Checksums handed to the worker pool
    uint64_t checksum_inline;       //  Checksums computed on the caller's thread
    uint64_t early_submits;         //  Submissions made before an inline checksum, so the
                                    //  I/Os prepared before it need not wait for it
    uint64_t staging_bytes;         //  The staging buffers' size...
    uint64_t staging_large_bytes;   //  ...and how much of it 2 MiB pages back (at open;
                                    //  UINT64_MAX where the kernel does not say)
    uint64_t group_reads;           //  Layer group reads completed with rc 0
    uint64_t group_fallbacks;       //  Group reads that found a v1 block and read it whole
    uint64_t group_header_hits;     //  Group reads that skipped the header: its group
                                    //  checksums were kept from an earlier group's read
} kvt_nvme_store_stats_t;

typedef enum {
    KVT_NVME_FAULT_READ = 0,        //  Block read completions
    KVT_NVME_FAULT_WRITE = 1,       //  Block write completions
    KVT_NVME_FAULT_JOURNAL = 2,     //  Journal append completions
    KVT_NVME_FAULT_SYNC = 3,        //  Group commit data syncs (sync_on_ack)
    KVT_NVME_FAULT_SHORT = 4,       //  Block transfers that report about half their bytes
                                    //  (whole 4 KiB pages): the rest goes again, as after
                                    //  a real short transfer ('err' unused)
    KVT_NVME_FAULT_KINDS = 5        //  Number of kinds
} kvt_nvme_fault_t;

//  Create a store; touches no file. Cannot fail beyond OOM (aborts). The
//  config is copied, dirs included.
kvt_nvme_store_t *
    kvt_nvme_store_new (const kvt_nvme_store_config_t *config);

//  Register caller memory (e.g. the host tier's whole arena) so payloads
//  move without a copy. Call before open; base page-aligned. Returns 0,
//  -EINVAL (bad arguments or already open) or -ENOSPC (too many regions).
int
    kvt_nvme_store_register_buffer (kvt_nvme_store_t *self, void *base, size_t bytes);

//  Reads prepared from now on go through the staging (true) or straight
//  into registered memory where they can (false): config.bounce_reads,
//  changed while running (tier_nvme's kvt_read_path learns which is
//  faster). Reads in flight keep the path they were prepared with.
void
    kvt_nvme_store_set_bounce_reads (kvt_nvme_store_t *self, bool bounce);

//  Whether reads should land by DMA straight in registered caller memory
//  (tier_nvme/direct): mode "on" or "off" decides; "auto" says yes for
//  memory on 2 MiB pages, and for 4 KiB pages only where the store's
//  staging cannot be on huge pages either (transparent huge pages off:
//  bouncing would buy nothing then and cost a copy). Why: a DMA into
//  4 KiB pages is a segment a page; both virtual disks measured (the CI
//  VM's, the H200 machine's) read 64-512 KiB blocks up to 2x faster into
//  huge pages, and the bounce path's copy is fused with the check the
//  block needs anyway (tools/bench/RESULTS.md, session 26). Writes are
//  not weighed: into 4 KiB pages the bounce copy cost more than the
//  segments on the 2-core VM (the caller registers memory unless "off").
//  Returns 1 (direct), 0 (through the staging: config bounce_reads) or
//  -EINVAL for a mode that is none of the three.
int
    kvt_nvme_direct_reads (const char *mode, bool caller_large_pages,
                           bool staging_large_pages);

//  Open or create the files, set up io_uring (registered files and
//  buffers, eventfd) and recover the journal. Blocks. Returns 0 or -errno
//  (-ENOENT: a directory is missing; -EINVAL: bad config or O_DIRECT
//  refused); the reason is logged. A failed open may be retried.
int
    kvt_nvme_store_open (kvt_nvme_store_t *self);

//  Return the eventfd that becomes readable when completions are ready,
//  or -1 before open. Owned by the store; reap drains it. A wake-up can be
//  stale (its completion was taken by an earlier reap): reap then returns
//  0, which is not an error.
int
    kvt_nvme_store_eventfd (kvt_nvme_store_t *self);

//  Prepare writing 'block_bytes' from 'src' as block 'block_hash' at
//  'slot'. Computes the checksum now, or with a checksum pool hands it to
//  a worker (the I/O is then queued when it comes back, at a later submit
//  or reap); 'src' must not change until the completion for 'tag' is
//  reaped. Returns 0, -ERANGE, -EAGAIN, -EBUSY, or -EBADF before open. I/O
//  starts at kvt_nvme_submit (the ring is sized so prep never has to
//  submit early).
int
    kvt_nvme_prep_write (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                         const void *src, uint64_t tag);

//  Prepare reading block 'block_hash' from 'slot' into 'dst' (block_bytes).
//  'dst' is written only by this operation until 'tag' is reaped, and
//  holds valid bytes only if that completion's rc is 0. Returns 0,
//  -ERANGE, -EAGAIN, -EBUSY, KVT_EMISS (slot does not hold that block),
//  or -EBADF before open.
int
    kvt_nvme_prep_read (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                        void *dst, uint64_t tag);

//  As prep_write and prep_read, moving only the first 'bytes' of the block
//  (0 < bytes <= block_bytes; e.g. an FP8 block in a bf16-sized slot):
//  the header records the length, the checksum covers those bytes, and the
//  I/O is that length rounded up to 4096 (so 'dst' may be written up to
//  there, never past block_bytes). A read whose length differs from the
//  block's written length fails its checks (KVT_EMISS or KVT_ECHECKSUM):
//  a block is never read back in another form than it was written.
//  Returns as prep_write/prep_read, or -EINVAL for a bad length.
int
    kvt_nvme_prep_write_len (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                             const void *src, size_t bytes, uint64_t tag);
int
    kvt_nvme_prep_read_len (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                            void *dst, size_t bytes, uint64_t tag);

//  Read layer group 'group' (0 <= group < kvt_nvme_store_group_count) of
//  block 'block_hash' at 'slot' into its place in 'dst', the block's
//  whole buffer (block_bytes): only bytes [offset, end) of the group are
//  written (the whole buffer for a version 1 block, read whole). Valid
//  only if the completion's rc is 0. Returns as prep_read, or -EINVAL
//  for a group out of range (a store without groups has one, group 0,
//  read as a whole block).
int
    kvt_nvme_prep_read_group (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                              void *dst, int group, uint64_t tag);

//  Return the layer groups a store with this geometry uses (1: none):
//  'wanted' if every group of layers [g x layers / wanted, ...) starts at
//  a multiple of 4096 bytes and block_bytes is one, else 1. 'offsets'
//  (may be NULL) gets the G + 1 group boundaries in bytes.
int
    kvt_nvme_layer_groups (size_t block_bytes, int layers, int wanted, uint64_t *offsets);

//  Return the layer groups of the store's blocks (1: none).
int
    kvt_nvme_store_group_count (kvt_nvme_store_t *self);

//  Forget the block at 'slot' (the tier evicted it): the slot reads as a
//  miss from now on and after a restart. Returns 0, -ERANGE, -EBUSY.
int
    kvt_nvme_forget (kvt_nvme_store_t *self, uint64_t slot);

//  Submit everything prepared since the last submit. Does not wait.
//  Returns the number of SQEs submitted or -errno.
int
    kvt_nvme_submit (kvt_nvme_store_t *self);

//  Collect up to 'max_done' finished operations into 'done' without
//  waiting; may submit follow-up I/O (journal appends, short-transfer
//  remainders, writes whose checksum came back). Reads are verified here
//  (xxh3 of the payload; with a pool, handed to it and finished at a
//  later reap), and only as many completions are looked at as max_done
//  needs, so a small max_done keeps each call short. Returns the count (0 if none) or
//  -errno. Call until it returns fewer than max_done: the eventfd fires
//  once per batch of completions, not per reaped entry.
int
    kvt_nvme_reap (kvt_nvme_store_t *self, kvt_nvme_done_t *done, int max_done);

//  Return the number of operations prepared and not yet reaped.
int
    kvt_nvme_store_inflight (kvt_nvme_store_t *self);

//  Return the number of operations whose transfers are at the device now:
//  prepared with data in flight, or writes whose checksum is being
//  computed in the pool (their I/O starts when it is done), less the
//  completions the ring holds that no reap has taken yet (about: a
//  two-part write's completions count twice). Reads being verified and
//  finished operations not reaped do not count. A caller that keeps more
//  operations than the depth it wants at the device (queue_depth above
//  that depth) compares with this before preparing more, so the device
//  stays full while completions are checked.
int
    kvt_nvme_store_device_inflight (kvt_nvme_store_t *self);

//  Operations a caller that keeps 'depth' transfers at the device should
//  give the store beyond that depth (queue_depth = depth + this): reads
//  whose bytes have landed but are being checked or wait to be reaped,
//  and writes waiting for their journal record, so that none of them
//  holds room at the device. With half a depth, writes through tier_nvme
//  ran at 0.87-0.91 of raw writes on the H100 machine's disk; with two
//  depths, 0.93-1.17 (tools/bench/RESULTS.md).
#define KVT_NVME_COMPLETION_SLACK(depth) (2 * (depth))

//  Submit what is prepared, then wait until a completion is ready or
//  'timeout_ms' passes (-1: forever). For tools and tests; actors poll the
//  eventfd instead. Returns 0, -ETIME on timeout, -EAGAIN if nothing is in
//  flight, or -errno.
int
    kvt_nvme_store_wait (kvt_nvme_store_t *self, int timeout_ms);

//  Return the number of valid blocks found by open.
uint64_t
    kvt_nvme_store_recovered_count (kvt_nvme_store_t *self);

//  Give the i-th block found by open (0 <= i < recovered_count). Returns
//  0 or -ERANGE.
int
    kvt_nvme_store_recovered (kvt_nvme_store_t *self, uint64_t index, uint64_t *slot,
                              uint64_t *block_hash);

//  Return true if 'slot' holds a block with a completed, acknowledged write.
bool
    kvt_nvme_store_has (kvt_nvme_store_t *self, uint64_t slot, uint64_t *block_hash);

//  Copy the counters into 'stats'.
void
    kvt_nvme_store_stats (kvt_nvme_store_t *self, kvt_nvme_store_stats_t *stats);

//  Return the bytes one slot takes on disk (header + padded payload).
size_t
    kvt_nvme_store_stride (kvt_nvme_store_t *self);

//  Give the data file path and byte offset of 'slot' (its header; the
//  payload follows at +4096). For tests, benches and inspection tools.
//  Returns 0 or -ERANGE.
int
    kvt_nvme_store_slot_location (kvt_nvme_store_t *self, uint64_t slot, char *path,
                                  size_t path_size, uint64_t *offset);

//  TEST ONLY: make the next 'count' completions of 'kind' fail with
//  -err (the I/O itself still runs). count 0 disarms.
void
    kvt_nvme_store_inject_fault (kvt_nvme_store_t *self, kvt_nvme_fault_t kind, int err,
                                 int count);

//  Wait for I/O in flight, append pending journal records, fdatasync the
//  data files and the journal, close everything. Blocks. Operations not
//  yet reaped are dropped. Safe on NULL, on a store never opened or half
//  opened; nulls the caller's pointer.
void
    kvt_nvme_store_destroy (kvt_nvme_store_t **self_p);

//  Self test.
int
    kvt_nvme_store_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
