/*  =========================================================================
    kvt_nvme_io - the NVMe store's operations: prep, submit, reap, verify

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Part of kvt_nvme_store (see kvt_nvme_store.h and kvt_nvme_int.h): the
    op pool and the completion state machine. A write goes
        [HASH: checksum job in the pool] -> IO (data parts) -> JOURNAL
        (record appended, with the group commit when sync_on_ack) -> DONE;
    a read goes IO -> [VERIFY: checksum job in the pool] -> DONE. The
    bracketed states exist only with a checksum pool; without one the
    checksum is computed here, on the caller's thread, as before.
@end
*/

#include "kvt_nvme_int.h"
#include <poll.h>

#define S_LOG_FIRST         10      //  I/O errors logged before thinning
#define S_RESULT_BATCH      64      //  Checksum results collected per call

//  Log an I/O failure: the first few, then one in a thousand.
static void
s_log_io_error (kvt_nvme_store_t *self, const char *what, uint64_t slot, int rc)
{
    self->logged_errors++;
    if (self->logged_errors <= S_LOG_FIRST || self->logged_errors % 1000 == 0)
        kvt_log_warn ("nvme store: %s slot %" PRIu64 " failed: %s (%" PRIu64 " so far)",
                      what, slot, kvt_strerror (rc), self->logged_errors);
}

//  Whether a checksum job of 'bytes' goes to the worker pool: every job
//  where checksum_threads asked for a pool; else (auto, or
//  checksum_under_load) every write, and a read only while hashing reads
//  inline would load this thread (kvt_hash_load). A read waits for its
//  check (a request wants its prefix), and for a 64 KiB block a worker's
//  wake-up costs more than the hash. A write's hash waits for nobody, but
//  inline it holds the thread while completions queue behind it, and
//  any read that comes then waits too: the card's host -> NVMe demotion
//  (256 KiB blocks, about a third of a core's xxh3) kept tier_nvme's
//  thread busy 62-87 ms of 150-200, in 31 slices of a millisecond or
//  more, with 48-54 writes at the device against raw's 64; with the
//  writes on the pool, 14-18 ms, no such slice, 55-60 at the device
//  (tools/bench/RESULTS.md, session 31).
static bool
s_to_pool (kvt_nvme_store_t *self, size_t bytes, bool write)
{
    if (!self->checksum)
        return false;
    if (!self->pool_under_load || write)
        return true;
    return kvt_hash_load_offload (&self->hash_load, bytes, kvt_hash_load_now_ns ());
}

//  Run a checksum job on this thread; where the pool waits for load, time
//  it for the choice. I/Os prepared before it go to the device first if
//  it would hold them too long (KVT_NVME_SUBMIT_HOLD_BYTES).
static uint64_t
s_hash_inline (kvt_nvme_store_t *self, const kvt_nvme_checksum_job_t *job)
{
    if (io_uring_sq_ready (&self->ring) > 0) {
        self->held_hash_bytes += job->bytes;
        if (self->held_hash_bytes > self->submit_hold_bytes
        &&  kvt_nvme_io_submit_ring (self) > 0)
            self->stats.early_submits++;
    }
    self->stats.checksum_inline++;
    if (!self->checksum || !self->pool_under_load)
        return kvt_nvme_checksum_run (job);
    uint64_t start_ns = kvt_hash_load_now_ns ();
    uint64_t checksum = kvt_nvme_checksum_run (job);
    kvt_hash_load_measured (&self->hash_load, job->bytes, kvt_hash_load_now_ns () - start_ns);
    return checksum;
}

//  Count and classify a failed operation.
static void
s_count_error (kvt_nvme_store_t *self, const char *what, uint64_t slot, int rc)
{
    self->stats.io_errors++;
    if (rc == -ENOSPC || rc == -EDQUOT)
        self->stats.enospc++;
    s_log_io_error (self, what, slot, rc);
}

//  Common checks and op allocation for prep_*.
static int
s_op_take (kvt_nvme_store_t *self, uint64_t slot, kvt_nvme_op_t **op_p, int *index_p)
{
    if (!self->opened)
        return -EBADF;
    if (slot >= self->capacity_blocks)
        return -ERANGE;
    if (self->slots [slot].state == KVT_NVME_SLOT_WRITING)
        return -EBUSY;
    if (self->free_count == 0)
        return -EAGAIN;
    int index = self->free_ops [--self->free_count];
    *op_p = &self->ops [index];
    *index_p = index;
    return 0;
}

void
kvt_nvme_io_op_release (kvt_nvme_store_t *self, int index)
{
    self->ops [index].state = KVT_NVME_OP_FREE;
    self->free_ops [self->free_count++] = index;
}

static void
s_op_done (kvt_nvme_store_t *self, int index, int rc)
{
    kvt_nvme_op_t *op = &self->ops [index];
    op->rc = rc;
    op->state = KVT_NVME_OP_DONE;
    int tail = (self->done_head + self->done_count) % self->queue_depth;
    self->done_fifo [tail] = index;
    self->done_count++;
}

//  A write's checksum is known: write its header, queue its data parts.
static int
s_write_start (kvt_nvme_store_t *self, int index)
{
    kvt_nvme_op_t *op = &self->ops [index];
    kvt_nvme_block_header_t *header = (kvt_nvme_block_header_t *) op->stage;
    memset (header, 0, sizeof (*header));
    header->magic = KVT_NVME_BLOCK_MAGIC;
    header->block_hash = op->block_hash;
    header->slot = op->slot;
    header->generation = op->generation;
    header->payload_checksum = op->checksum;
    header->length = op->bytes;
    header->version = 1;
    uint64_t seed = 0;
    if (self->group_count > 1 && op->bytes == self->block_bytes) {
        //  Version 2: a checksum per layer group (computed with the
        //  payload's, into the table: prep_write_len), the table under the
        //  header's own checksum (see kvt_nvme_int.h)
        uint64_t *groups = kvt_nvme_block_groups (header);
        header->version = 2;
        header->group_count = (uint32_t) self->group_count;
        seed = XXH3_64bits (groups, (size_t) self->group_count * sizeof (uint64_t));
    }
    header->header_checksum = XXH3_64bits_withSeed (header, offsetof (kvt_nvme_block_header_t,
                                                                      header_checksum), seed);
    return kvt_nvme_io_submit_parts (self, index);
}


//  --------------------------------------------------------------------------
//  Prepare a block write. Checksums 'src' now, or hands it to the pool.

int
kvt_nvme_prep_write (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                     const void *src, uint64_t tag)
{
    assert (self);
    return kvt_nvme_prep_write_len (self, slot, block_hash, src, self->block_bytes, tag);
}

//  Prepare writing the first 'bytes' of a block (0 < bytes <= block_bytes).

int
kvt_nvme_prep_write_len (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                         const void *src, size_t bytes, uint64_t tag)
{
    assert (self);
    assert (src);
    if (bytes == 0 || bytes > self->block_bytes)
        return -EINVAL;
    kvt_nvme_op_t *op;
    int index;
    int rc = s_op_take (self, slot, &op, &index);
    if (rc)
        return rc;
    if (self->slots [slot].readers > 0) {
        kvt_nvme_io_op_release (self, index);
        return -EBUSY;
    }
    op->is_write = true;
    op->group = -1;
    op->header_known = false;
    op->bytes = (uint32_t) bytes;
    op->tag = tag;
    op->slot = slot;
    op->block_hash = block_hash;
    op->generation = self->next_generation++;
    kvt_nvme_io_layout (self, op, (void *) src);
    kvt_nvme_checksum_job_t job = {
        .id = (uint64_t) index, .src = src,
        .dst = op->direct? NULL: op->stage + KVT_NVME_HEADER_BYTES,
        .bytes = op->bytes,
        .kind = op->direct? KVT_NVME_CHECKSUM_HASH: KVT_NVME_CHECKSUM_COPY_HASH,
        //  A full-length block with layer groups: their checksums too,
        //  straight into the header's table (version 2)
        .group_count = op->bytes == self->block_bytes? self->group_count: 1,
        .group_offsets = self->group_offset,
        .group_sums = kvt_nvme_block_groups (op->stage)
    };
    //  From here the slot's previous block is given up
    kvt_nvme_slot_t *entry = &self->slots [slot];
    entry->state = KVT_NVME_SLOT_WRITING;
    if (s_to_pool (self, job.bytes, true) && kvt_nvme_checksum_post (self->checksum, &job) == 0) {
        op->state = KVT_NVME_OP_HASH;
        self->hashing_writes++;
        self->stats.checksum_jobs++;
        return 0;                   //  I/O starts when the checksum comes back
    }
    op->checksum = s_hash_inline (self, &job);
    rc = s_write_start (self, index);
    if (rc) {
        entry->state = KVT_NVME_SLOT_EMPTY;
        kvt_nvme_io_op_release (self, index);
    }
    return rc;
}


//  --------------------------------------------------------------------------
//  Take an op for reading 'slot', which must hold 'block_hash', and fill
//  what every read has: 'tag', the slot's generation and whole-payload
//  checksum, no group. Returns 0, or KVT_EMISS (no such block there) or
//  s_op_take's error.
int
kvt_nvme_io_read_op_take (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                          uint64_t tag, kvt_nvme_op_t **op_p, int *index_p)
{
    int rc = s_op_take (self, slot, op_p, index_p);
    if (rc)
        return rc;
    const kvt_nvme_slot_t *entry = &self->slots [slot];
    if (entry->state != KVT_NVME_SLOT_VALID || entry->block_hash != block_hash) {
        kvt_nvme_io_op_release (self, *index_p);
        return KVT_EMISS;
    }
    kvt_nvme_op_t *op = *op_p;
    op->is_write = false;
    op->group = -1;
    op->header_known = false;
    op->tag = tag;
    op->slot = slot;
    op->block_hash = block_hash;
    op->generation = entry->generation;
    op->checksum = entry->checksum;
    return 0;
}

//  Prepare a block read into 'dst'. See header for codes.

int
kvt_nvme_prep_read (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                    void *dst, uint64_t tag)
{
    assert (self);
    return kvt_nvme_prep_read_len (self, slot, block_hash, dst, self->block_bytes, tag);
}

//  Prepare reading a block written with length 'bytes' into 'dst'.

int
kvt_nvme_prep_read_len (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                        void *dst, size_t bytes, uint64_t tag)
{
    assert (self);
    assert (dst);
    if (bytes == 0 || bytes > self->block_bytes)
        return -EINVAL;
    kvt_nvme_op_t *op;
    int index;
    int rc = kvt_nvme_io_read_op_take (self, slot, block_hash, tag, &op, &index);
    if (rc)
        return rc;
    kvt_nvme_slot_t *entry = &self->slots [slot];
    op->bytes = (uint32_t) bytes;
    kvt_nvme_io_layout (self, op, dst);
    rc = kvt_nvme_io_submit_parts (self, index);
    if (rc)
        kvt_nvme_io_op_release (self, index);
    else
        entry->readers++;
    return rc;
}

//  Drop 'slot' from the index and journal a drop record.
static void
s_drop (kvt_nvme_store_t *self, uint64_t slot)
{
    kvt_nvme_slot_t *entry = &self->slots [slot];
    entry->state = KVT_NVME_SLOT_EMPTY;
    entry->block_hash = 0;
    entry->checksum = 0;
    entry->generation = self->next_generation++;
    kvt_nvme_journal_add (self->journal, slot, 0, entry->generation, 0, true, -1, -1);
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
    kvt_nvme_slot_t *entry = &self->slots [slot];
    if (entry->state == KVT_NVME_SLOT_WRITING || entry->readers > 0)
        return -EBUSY;
    s_drop (self, slot);
    return 0;
}

//  True if a header has the magic and its checksum (v1 or v2) holds.
static bool
s_header_sound (const kvt_nvme_block_header_t *header)
{
    if (header->magic != KVT_NVME_BLOCK_MAGIC)
        return false;
    uint64_t seed = 0;
    if (header->version == 2) {
        if (header->group_count < 2 || header->group_count > KVT_NVME_MAX_GROUPS)
            return false;
        seed = XXH3_64bits (kvt_nvme_block_groups (header),
                            header->group_count * sizeof (uint64_t));
    }
    return header->header_checksum
        == XXH3_64bits_withSeed (header, offsetof (kvt_nvme_block_header_t, header_checksum),
                                 seed);
}

//  Check a bounce read's header (the payload is checked apart). Returns
//  0, KVT_ECHECKSUM or KVT_EMISS.
static int
s_verify_header (kvt_nvme_op_t *op)
{
    const kvt_nvme_block_header_t *header = (const kvt_nvme_block_header_t *) op->stage;
    if (!s_header_sound (header))
        return KVT_ECHECKSUM;
    if (header->block_hash != op->block_hash || header->slot != op->slot
    ||  header->generation != op->generation || header->length != op->bytes)
        return KVT_EMISS;
    //  The payload must hash to both; if they differ it cannot
    return header->payload_checksum == op->checksum? 0: KVT_ECHECKSUM;
}

//  A read is over, with the I/O's rc or (verified) the check's.
static void
s_read_finish (kvt_nvme_store_t *self, int index, int rc, bool verified)
{
    kvt_nvme_op_t *op = &self->ops [index];
    kvt_nvme_slot_t *entry = &self->slots [op->slot];
    entry->readers--;
    if (rc && !verified)
        s_count_error (self, "read", op->slot, rc);
    else
    if (rc) {
        if (rc == KVT_ECHECKSUM)
            self->stats.checksum_failures++;
        else
            self->stats.misses++;
        kvt_log_warn ("nvme store: slot %" PRIu64 " block %016" PRIx64 " refused: %s; "
                      "dropped, will be recomputed", op->slot, op->block_hash,
                      kvt_strerror (rc));
        //  Drop it from the index unless a newer write took the slot
        if (entry->state == KVT_NVME_SLOT_VALID && entry->generation == op->generation)
            s_drop (self, op->slot);
    }
    else {
        self->stats.reads++;
        self->stats.read_bytes += op->bytes;
        self->stats.group_reads += op->group >= 0;
    }
    s_op_done (self, index, rc);
}

//  A read's data has arrived: check it here, or hand the payload to the
//  pool (the header, cheap, is checked here either way).
static void s_group_fallback (kvt_nvme_store_t *self, int index);

static void
s_read_verify (kvt_nvme_store_t *self, int index)
{
    kvt_nvme_op_t *op = &self->ops [index];
    size_t offset = 0;
    int rc = 0;
    if (op->group >= 0 && op->header_known)
        offset = self->group_offset [op->group];    //  op->checksum is the group's
    else
    if (op->group >= 0) {
        //  A layer group: its header holds the group's checksum
        const kvt_nvme_block_header_t *header = (const kvt_nvme_block_header_t *) op->stage;
        if (!s_header_sound (header))
            rc = KVT_ECHECKSUM;
        else
        if (header->block_hash != op->block_hash || header->slot != op->slot
        ||  header->generation != op->generation || header->length != self->block_bytes)
            rc = KVT_EMISS;
        else
        if (header->payload_checksum != op->checksum)
            rc = KVT_ECHECKSUM;
        else
        if (header->version != 2 || header->group_count != (uint32_t) self->group_count) {
            s_group_fallback (self, index);     //  Written without our groups: read it whole
            return;
        }
        else {
            kvt_nvme_group_sums_keep (self, op->slot, op->generation,
                                      kvt_nvme_block_groups (header));
            op->checksum = kvt_nvme_block_groups (header) [op->group];
            offset = self->group_offset [op->group];
        }
    }
    else
    if (!op->direct)
        rc = s_verify_header (op);
    if (rc) {
        s_read_finish (self, index, rc, true);
        return;
    }
    kvt_nvme_checksum_job_t job = {
        .id = (uint64_t) index, .bytes = op->bytes, .expect = op->checksum,
        .src = op->direct? (uint8_t *) op->caller + offset
                         : op->stage + KVT_NVME_HEADER_BYTES + offset,
        .dst = op->direct? NULL: (uint8_t *) op->caller + offset,
        .kind = op->direct? KVT_NVME_CHECKSUM_HASH: KVT_NVME_CHECKSUM_HASH_COPY
    };
    if (s_to_pool (self, job.bytes, false) && kvt_nvme_checksum_post (self->checksum, &job) == 0) {
        op->state = KVT_NVME_OP_VERIFY;
        self->stats.checksum_jobs++;
        return;
    }
    uint64_t checksum = s_hash_inline (self, &job);
    s_read_finish (self, index, checksum == op->checksum? 0: KVT_ECHECKSUM, true);
}

//  A group read found a block without our layer groups (version 1, or
//  another G): the same op goes on as a whole-block read into the
//  caller's buffer, checked against the whole payload's checksum.
static void
s_group_fallback (kvt_nvme_store_t *self, int index)
{
    kvt_nvme_op_t *op = &self->ops [index];
    self->stats.group_fallbacks++;
    op->group = -1;
    op->bytes = (uint32_t) self->block_bytes;
    kvt_nvme_io_layout (self, op, op->caller);
    int rc = kvt_nvme_io_submit_parts (self, index);
    if (rc)
        s_read_finish (self, index, rc, false);
}

//  All data parts of an op have completed.
static void
s_op_io_complete (kvt_nvme_store_t *self, int index)
{
    kvt_nvme_op_t *op = &self->ops [index];
    kvt_nvme_slot_t *entry = &self->slots [op->slot];
    kvt_nvme_fault_t kind = op->is_write? KVT_NVME_FAULT_WRITE: KVT_NVME_FAULT_READ;
    self->io_ops--;
    if (op->rc == 0 && self->fault_count [kind] > 0) {
        self->fault_count [kind]--;
        op->rc = -self->fault_errno [kind];
    }
    if (!op->is_write) {
        if (op->rc)
            s_read_finish (self, index, op->rc, false);
        else
            s_read_verify (self, index);
        return;
    }
    if (op->rc) {
        s_count_error (self, "write", op->slot, op->rc);
        entry->state = KVT_NVME_SLOT_EMPTY;
        s_op_done (self, index, op->rc);
        return;
    }
    if (self->sync_on_ack && self->sync_per_write)
        self->stats.syncs += (uint64_t) op->part_count;     //  Each part was O_DSYNC
    op->state = KVT_NVME_OP_JOURNAL;
    kvt_nvme_journal_add (self->journal, op->slot, op->block_hash, op->generation,
                          op->checksum, false, index, op->parts [0].file_index);
}


//  --------------------------------------------------------------------------
//  The journal acknowledges a write (rc 0) or gives it up.

void
kvt_nvme_io_journal_ack (void *self_ptr, int index, int rc)
{
    kvt_nvme_store_t *self = (kvt_nvme_store_t *) self_ptr;
    assert (index >= 0 && index < self->queue_depth);
    kvt_nvme_op_t *op = &self->ops [index];
    assert (op->state == KVT_NVME_OP_JOURNAL);
    kvt_nvme_slot_t *entry = &self->slots [op->slot];
    if (rc == 0) {
        entry->state = KVT_NVME_SLOT_VALID;
        entry->block_hash = op->block_hash;
        entry->generation = op->generation;
        entry->checksum = op->checksum;
        self->stats.writes++;
        self->stats.write_bytes += op->bytes;
    }
    else
        entry->state = KVT_NVME_SLOT_EMPTY;     //  Counted by the journal
    s_op_done (self, index, rc);
}

//  Handle one CQE.
static void
s_handle_cqe (kvt_nvme_store_t *self, uint64_t user_data, int res)
{
    if (user_data >= KVT_NVME_JOURNAL_UD_MIN) {
        kvt_nvme_journal_complete (self->journal, user_data, res);
        return;
    }
    int index = (int) (user_data >> 1);
    int part_index = (int) (user_data & 1);
    assert (index >= 0 && index < self->queue_depth);
    kvt_nvme_op_t *op = &self->ops [index];
    assert (op->state == KVT_NVME_OP_IO);
    kvt_nvme_part_t *part = &op->parts [part_index];
    if (res == -EAGAIN || res == -EINTR) {
        if (kvt_nvme_io_queue_part (self, index, part_index) == 0)
            return;
        res = -EIO;
    }
    uint32_t left = part->bytes + part->tail_bytes - part->done_bytes;
    if (res > 2 * KVT_NVME_ALIGN && (uint32_t) res == left
    &&  self->fault_count [KVT_NVME_FAULT_SHORT] > 0) {
        self->fault_count [KVT_NVME_FAULT_SHORT]--;
        res = res / 2 / KVT_NVME_ALIGN * KVT_NVME_ALIGN;
    }
    if (res > 0) {
        part->done_bytes += (uint32_t) res;
        if (part->done_bytes < part->bytes + part->tail_bytes) {
            self->stats.short_requeues++;
            if (kvt_nvme_io_queue_part (self, index, part_index) == 0)
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

//  Take every checksum result ready: hashed writes start their I/O,
//  verified reads finish. Returns how many.
static int
s_collect_checksums (kvt_nvme_store_t *self)
{
    if (!self->checksum)
        return 0;
    kvt_nvme_checksum_result_t results [S_RESULT_BATCH];
    int total = 0, count;
    while ((count = kvt_nvme_checksum_collect (self->checksum, results, S_RESULT_BATCH)) > 0) {
        for (int i = 0; i < count; i++) {
            int index = (int) results [i].id;
            kvt_nvme_op_t *op = &self->ops [index];
            if (!op->is_write) {
                assert (op->state == KVT_NVME_OP_VERIFY);
                s_read_finish (self, index, results [i].checksum == op->checksum?
                                            0: KVT_ECHECKSUM, true);
                continue;
            }
            assert (op->state == KVT_NVME_OP_HASH);
            self->hashing_writes--;
            op->checksum = results [i].checksum;
            int rc = s_write_start (self, index);
            if (rc) {
                s_count_error (self, "write", op->slot, rc);
                self->slots [op->slot].state = KVT_NVME_SLOT_EMPTY;
                s_op_done (self, index, rc);
            }
        }
        total += count;
    }
    return total;
}


//  --------------------------------------------------------------------------
//  Process completions ready now until 'want_done' ops are finished (a
//  read's checksum, without a pool, is verified here, so this bounds the
//  slice of CPU one reap takes); returns how many were handled.

int
kvt_nvme_io_process (kvt_nvme_store_t *self, int want_done)
{
    int seen = s_collect_checksums (self);
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
//  At close: drain every op, append and checksum job in flight. Blocks.

void
kvt_nvme_io_drain (kvt_nvme_store_t *self)
{
    kvt_nvme_journal_set_closing (self->journal);
    while (true) {
        s_collect_checksums (self);
        (void) kvt_nvme_journal_kick (self->journal);  //  Failure shows as a stuck drain
        (void) kvt_nvme_io_submit_ring (self);          //  Ditto
        bool io_busy = false, journal_wait = false;
        for (int i = 0; i < self->queue_depth; i++) {
            int state = self->ops [i].state;
            io_busy |= state == KVT_NVME_OP_IO || state == KVT_NVME_OP_HASH
                    || state == KVT_NVME_OP_VERIFY;
            journal_wait |= state == KVT_NVME_OP_JOURNAL;
        }
        if (!io_busy && !kvt_nvme_journal_busy (self->journal)) {
            size_t pending = kvt_nvme_journal_pending (self->journal);
            if (journal_wait || pending > 0)
                kvt_log_error ("nvme store: close: %zu journal records could not be "
                               "appended; those writes were never acknowledged", pending);
            break;                  //  Nothing left that could complete
        }
        if (self->checksum && kvt_nvme_checksum_outstanding (self->checksum) > 0) {
            //  Workers and the ring both signal the eventfd
            struct pollfd item = { self->event_fd, POLLIN, 0 };
            if (io_uring_cq_ready (&self->ring) == 0
            &&  !kvt_nvme_checksum_ready (self->checksum))
                (void) poll (&item, 1, 1000);          //  A timeout only loops again
            uint64_t value;
            (void) !read (self->event_fd, &value, sizeof (value));    //  Empty: fine
        }
        else {
            struct io_uring_cqe *cqe;
            int rc = io_uring_wait_cqe (&self->ring, &cqe);
            if (rc < 0 && rc != -EINTR) {
                kvt_log_error ("nvme store: drain at close: %s", strerror (-rc));
                break;
            }
        }
        kvt_nvme_io_process (self, INT_MAX);
    }
}


//  --------------------------------------------------------------------------
//  Submit everything prepared. Returns SQEs submitted or -errno.

int
kvt_nvme_submit (kvt_nvme_store_t *self)
{
    assert (self);
    if (!self->opened)
        return -EBADF;
    s_collect_checksums (self);
    int rc = kvt_nvme_journal_kick (self->journal);
    if (rc)
        return rc;
    return kvt_nvme_io_submit_ring (self);
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
    kvt_nvme_io_process (self, max_done);
    int rc = kvt_nvme_journal_kick (self->journal);
    if (rc == 0)
        rc = kvt_nvme_io_submit_ring (self);
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
        kvt_nvme_io_op_release (self, index);
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
//  Operations whose transfers are at the device now (see header).

int
kvt_nvme_store_device_inflight (kvt_nvme_store_t *self)
{
    assert (self);
    if (!self->opened)
        return 0;
    //  A write whose checksum is in the pool goes to the device the moment
    //  the checksum comes back, so it holds its room there already: not
    //  counting it let a caller prepare a depth more behind it, and the
    //  card's disk then saw up to three depths of writes at once, merged
    //  neighbours into 1 MiB requests, and ran 512 KiB writes at 0.81-0.93
    //  of raw (tools/bench/RESULTS.md, session 31)
    int at_device = self->io_ops + self->hashing_writes
                  - (int) io_uring_cq_ready (&self->ring);
    return at_device > 0? at_device: 0;
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
    if (self->free_count == self->queue_depth && !kvt_nvme_journal_busy (self->journal))
        return -EAGAIN;
    if (self->checksum) {
        //  Results come through the eventfd as well as CQEs: wait on it
        if (io_uring_cq_ready (&self->ring) > 0 || kvt_nvme_checksum_ready (self->checksum))
            return 0;
        struct pollfd item = { self->event_fd, POLLIN, 0 };
        rc = poll (&item, 1, timeout_ms);
        return rc > 0? 0: rc == 0? -ETIME: errno == EINTR? 0: -errno;
    }
    struct io_uring_cqe *cqe;
    if (timeout_ms < 0)
        return io_uring_wait_cqe (&self->ring, &cqe);
    struct __kernel_timespec ts = {
        .tv_sec = timeout_ms / 1000, .tv_nsec = (long long) (timeout_ms % 1000) * 1000000
    };
    return io_uring_wait_cqe_timeout (&self->ring, &cqe, &ts);
}
