/*  =========================================================================
    kvt_migration_read - the chunked NVMe reader of promotion and prefetch

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_migration_int.h"

//  Which of a TIER_READ's 'count' blocks are misses (see kvt_migration_int.h).
bool *
kvt_migration_read_misses (int rc, kvt_msg_t *reply, size_t count)
{
    bool *bad = (bool *) kvt_zmalloc (count + 1);
    if (rc) {
        //  The disk tier failed the read as a whole: every block is a miss
        for (size_t k = 0; k < count; k++)
            bad [k] = true;
        return bad;
    }
    size_t failed_count;
    const uint64_t *failed = kvt_msg_array (reply, KVT_TIER_READ_OK_FAILED, &failed_count);
    for (size_t k = 0; k < failed_count; k++)
        if (failed [k] < count)
            bad [failed [k]] = true;
    return bad;
}

//  One read of many blocks, and one of its chunks
typedef struct {
    size_t pending;                 //  Chunks not yet answered
    kvt_migration_chunk_fn *chunk_fn;   //  Called per chunk
    kvt_migration_cont_fn *done_fn; //  Called once, after the last chunk
    void *arg;                      //  For both
} s_reader_t;

typedef struct {
    s_reader_t *reader;             //  The read this chunk belongs to
    size_t first;                   //  Index of its first block in the read
    size_t count;                   //  Blocks in the chunk
} s_chunk_t;

static void
s_chunk_read (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    self_t *self = (self_t *) self_ptr;
    s_chunk_t *chunk = (s_chunk_t *) arg;
    s_reader_t *reader = chunk->reader;
    if (rc)
        kvt_log_warn ("migration: NVMe read failed: %s", kvt_strerror (rc));
    bool *bad = kvt_migration_read_misses (rc, *reply_p, chunk->count);
    reader->chunk_fn (self, reader->arg, chunk->first, chunk->count, bad);
    free (bad);
    free (chunk);
    if (--reader->pending == 0) {
        reader->done_fn (self, reader->arg, 0);
        free (reader);
    }
}

//  Read blocks into host slots in chunks (see kvt_migration_int.h).
size_t
kvt_migration_read_chunks (self_t *self, const uint64_t *nvme_slots, const uint64_t *hashes,
                           const uint64_t *host_slots, size_t count,
                           kvt_migration_chunk_fn *chunk_fn, kvt_migration_cont_fn *done_fn,
                           void *arg)
{
    size_t per_chunk = KVT_MIGRATION_CHUNK_BYTES
                     / kvt_arena_block_bytes (self->arenas [KVT_TIER_HOST]);
    if (per_chunk == 0)
        per_chunk = 1;
    if (count == 0)
        return 0;
    s_reader_t *reader = (s_reader_t *) kvt_zmalloc (sizeof (s_reader_t));
    *reader = (s_reader_t) { (count + per_chunk - 1) / per_chunk, chunk_fn, done_fn, arg };
    size_t chunks = reader->pending;
    for (size_t first = 0; first < count; first += per_chunk) {
        s_chunk_t *chunk = (s_chunk_t *) kvt_zmalloc (sizeof (s_chunk_t));
        chunk->reader = reader;
        chunk->first = first;
        chunk->count = count - first < per_chunk? count - first: per_chunk;
        kvt_msg_t *msg = kvt_msg_new (KVT_MSG_TIER_READ);
        kvt_msg_set_array (msg, KVT_TIER_READ_SLOTS, nvme_slots + first, chunk->count);
        kvt_msg_set_array (msg, KVT_TIER_READ_HASHES, hashes + first, chunk->count);
        kvt_msg_set_array (msg, KVT_TIER_READ_DST_SLOTS, host_slots + first, chunk->count);
        kvt_actor_call (self->actor, "tier_nvme", &msg, s_chunk_read, chunk);
    }
    return chunks;
}
