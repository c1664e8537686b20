/*  =========================================================================
    kvt_migration_int - what the migration actor's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The migration actor is one actor in eight files: kvt_migration.c (the
    actor: its job queue, reservation, demotion requests, watermark
    upkeep), kvt_migration_room.c (free slots in a tier, demoting when
    short), kvt_migration_through.c (write-through: shadow copies on the
    host tier, MIG_WRITE_THROUGH), kvt_migration_promote.c (bringing
    blocks to the GPU, with NVMe blocks streamed in chunks or layer
    groups), kvt_migration_promote_end.c (committing or undoing a stream
    promotion), kvt_migration_prefetch.c (staging a waiting request's NVMe
    blocks into the host tier, MIG_PREFETCH), kvt_migration_read.c (the
    chunked NVMe reader of both) and kvt_migration_copy.c (moving bytes
    between the GPU and host slabs: memcpy, or CUDA copies on one stream
    per direction, completing through eventfds). This header is for those
    files only.
@end
*/

#ifndef KVT_MIGRATION_INT_H_INCLUDED
#define KVT_MIGRATION_INT_H_INCLUDED

#include "kvt_classes.h"
#include "kvt_actors.h"

typedef struct _self_t self_t;
typedef void (kvt_migration_cont_fn) (self_t *self, void *arg, int rc);
typedef struct _kvt_migration_copy_t kvt_migration_copy_t;  //  CUDA copy state (CUDA builds)

#include "kvt_fp8.cuh"
#include "kvt_block_copy.cuh"
#include "kvt_layer_shard.h"

#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#   include <sys/eventfd.h>
#endif

//  migration/disk_admission: which blocks evicted from the host tier are
//  written to disk (the rest are forgotten)
#define KVT_MIGRATION_DISK_ALL        0     //  Every one (write-back)
#define KVT_MIGRATION_DISK_REUSED     1     //  Found cached by a request at least once
#define KVT_MIGRATION_DISK_PREDICTED  2     //  Reused, or offered again after a drop

//  migration/overlap_upkeep: what waits for the watermark upkeep after a job
#define KVT_MIGRATION_UPKEEP_AFTER    0     //  The job's reply
#define KVT_MIGRATION_UPKEEP_BEFORE   1     //  The next job (the reply goes first)
#define KVT_MIGRATION_UPKEEP_BESIDE   2     //  Nothing: the next jobs run beside it

//  migration/test_hold_at (TEST ONLY): what a held job does late
#define KVT_MIGRATION_HOLD_START      0     //  Starts: its work is late
#define KVT_MIGRATION_HOLD_REPLY      1     //  Answers: its work is done, its answer late
#define KVT_MIGRATION_HOLD_FAIL       2     //  Answers ERROR -ETIMEDOUT, as if a call of its
                                            //  own had timed out, without running

static const char *const kvt_migration_tier_actor [KVT_TIER_COUNT] = { "tier_gpu", "tier_host", "tier_nvme" };


struct _self_t {
    kvt_actor_t *actor;             //  Our skeleton
    kvt_arena_t *arenas [2];        //  GPU and host slabs (borrowed)
    kvt_arena_t *gpu_shard;         //  The GPU tier's host-held layers (borrowed; NULL
                                    //  unless tier_gpu/layer_fraction < 1, issue #5)
    size_t capacity [KVT_TIER_COUNT];   //  Blocks each tier holds
    zlist_t *queue;                 //  Top-level requests waiting their turn
    zlist_t *background;            //  MIG_PREFETCH requests: run when queue is empty
    size_t jobs_since_background;   //  Jobs from 'queue' since the last prefetch
    kvt_msg_t *current;             //  The request being served, or NULL
    int high_watermark;             //  Percent used that starts background demotion
    int low_watermark;              //  Percent used it demotes down to
    uint64_t background_batch;      //  Most blocks one background job moves
    size_t promote_piece_bytes;     //  A plain promotion's IDX_MOVE piece (promote_piece_kib)
    int overlap_upkeep;             //  KVT_MIGRATION_UPKEEP_*: what waits for the upkeep
    bool upkeep_running;            //  An upkeep runs beside the jobs (UPKEEP_BESIDE)
    bool upkeep_again;              //  A job ended meanwhile: one more upkeep after it
    int test_upkeep_delay_ms;       //  TEST ONLY: each upkeep starts this late
    int test_hold_id;               //  TEST ONLY: message id of the job kind held
                                    //  (migration/test_hold_job), or -1
    int test_hold_at;               //  TEST ONLY: KVT_MIGRATION_HOLD_*: what is held
    int test_hold_ms;               //  TEST ONLY: for this long, the first such job only
    void (*test_held_start) (self_t *self);     //  TEST ONLY: the held job's start
    kvt_msg_t *test_held_reply;     //  TEST ONLY: the held job's reply
    int test_hold_copies_from;      //  TEST ONLY (migration/test_hold_copies): copies
                                    //  from this tier (GPU or host) are held, or -1
    zlist_t *copies_held;           //  TEST ONLY: their continuations, waiting for the
                                    //  actor's end as a stuck GPU copy's would
    zlist_t *upkeep_waiters;        //  Ensure jobs that found every victim in motion,
                                    //  retried when the running upkeep ends
    uint64_t upkeeps_ended;         //  Upkeeps beside the jobs that ended so far
    int disk_admission;             //  KVT_MIGRATION_DISK_*: which host victims go to disk
    kvt_msg_t *held_reply;          //  Reply waiting for the upkeep to finish
    kvt_migration_copy_t *gpu_copy; //  Copy stream and completions, made at the first GPU copy
    bool cold_fp8;                  //  migration/cold_dtype = fp8: host and NVMe blocks are FP8
    int fp8_planes;                 //  FP8 scale planes per block (layers x 2 x kv_heads)
    int fp8_plane_elems;            //  Elements per plane (block_tokens x head_dim)
    size_t cold_bytes;              //  Bytes a host or NVMe block uses (its form's length)
    int layers;                     //  Layers of a block (model shape)
    int layer_groups;               //  Layer groups a stream promotion reads NVMe blocks
                                    //  in (migration/nvme_layer_groups; 1 = whole blocks)
    int test_group_delay_ms;        //  TEST ONLY: groups past the first read this late
    uint64_t next_ticket;           //  Last ticket given to a layer-group stream promotion
    zlist_t *streams;               //  Stream promotions whose reads outlive their reply
    bool write_through;             //  migration/write_through: shadow new GPU blocks on host
    zhashx_t *shadows;              //  Shadow copies by hash (kvt_migration_shadow_t, not owned)
    zlistx_t *shadow_order;         //  The same shadows, oldest first (owns them)
};

//  A shadow copy (write-through): the host slot, owned by migration and
//  unknown to the index, that holds the cold form of a block the index
//  has on the GPU tier. (kvt_migration_through.c)
typedef struct {
    uint64_t hash;                  //  The block (the table's key points here)
    uint64_t slot;                  //  Its host slot
    void *handle;                   //  Its place in shadow_order
} kvt_migration_shadow_t;

//  Names of the tier actors, by tier number.
extern const char *const kvt_migration_tier_actor [KVT_TIER_COUNT];

//  ensure: get 'want' free slots in 'tier', demoting from it when short.
typedef struct {
    int tier;                       //  Where slots are wanted
    size_t want;                    //  How many
    uint64_t *slots;                //  Got so far (owned until handed over)
    size_t have;                    //  Entries in slots
    int rounds;                     //  Demotion rounds tried
    bool for_upkeep;                //  Room for the upkeep's own demotion: never waits for it
    uint64_t upkeeps_seen;          //  self->upkeeps_ended when it last asked the tier
    kvt_migration_cont_fn *cont;    //  Called once with the outcome
    void *cont_arg;                 //  Its argument
} kvt_migration_ensure_t;

//  A zeroed array of 'count' (+1) slots or hashes; aborts on OOM.
uint64_t *
    kvt_migration_u64s (size_t count);

//  Fire-and-check call answer: logs and counts a failure.
void
    kvt_migration_expect_ok (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg);

//  Move 'count' blocks to 'slots' of 'tier' in the index, then call
//  'cont' with 0, or with the index's refusal: then the index forgets the
//  blocks and their new slots go back (moves_refused), since their old
//  slots are taken as freed. A move that times out is awaited until its
//  answer comes.
void
    kvt_migration_move_blocks (self_t *self, const uint64_t *hashes, const uint64_t *slots,
                               size_t count, int tier, kvt_migration_cont_fn *cont,
                               void *arg);

//  Answer a job with 'reply' (consumed): the current job's, or when
//  'request' is given (consumed) that detached job's.
void
    kvt_migration_answer (self_t *self, kvt_msg_t **reply_p, kvt_msg_t *request);

//  Move 'count' blocks to 'slots' of 'tier' in the index, then answer the
//  job with 'reply' (consumed): the current job's, or when 'request' is
//  given (consumed) that detached job's. The answer waits for the index:
//  the requester unpins the blocks on it, and a block unpinned while the
//  index still named its old slot, freed by then, could be matched and
//  promoted again from a slot that holds another block. If the index
//  refuses the move, it forgets the blocks, their new slots go back and
//  the answer becomes an ERROR (moves_refused).
void
    kvt_migration_move_then_reply (self_t *self, const uint64_t *hashes,
                                   const uint64_t *slots, size_t count, int tier,
                                   kvt_msg_t **reply_p, kvt_msg_t *request);

//  From a reply function told 'rc': whether the call timed out and its
//  late answer will come to 'fn' with 'arg' after all (counted:
//  answers_awaited_late). A call that moves, claims or frees blocks in
//  the index has an unknown outcome when it times out: the index may
//  still apply it, and would then point at slots taken as free, or keep
//  blocks claimed for good. Its job waits for the answer instead.
bool
    kvt_migration_await_late (self_t *self, int rc, kvt_actor_reply_fn *fn, void *arg);

//  Send message 'id' with one array field to 'peer', answer unchecked
//  beyond kvt_migration_expect_ok. Nothing is sent for an empty array.
void
    kvt_migration_send_array (self_t *self, const char *peer, int id, int field,
                              const uint64_t *values, size_t count, const char *what);

//  Give 'count' slots back to the actor of 'tier'.
void
    kvt_migration_free_slots (self_t *self, int tier, const uint64_t *slots, size_t count);

//  Start getting 'want' free slots in 'tier'; 'cont' is called once with
//  the outcome and then owns the returned job (take its slots, free it
//  with kvt_migration_ensure_free).
kvt_migration_ensure_t *
    kvt_migration_ensure (self_t *self, int tier, size_t want, kvt_migration_cont_fn *cont,
                          void *arg);

//  An ensure job not started yet (kvt_migration_ensure_start starts it;
//  a job of 'want' 0 need not be started). (kvt_migration_room.c)
kvt_migration_ensure_t *
    kvt_migration_ensure_new (int tier, size_t want, kvt_migration_cont_fn *cont, void *arg);

//  Ask the tier for the slots an ensure job still lacks (again: after
//  waiting for the upkeep, kvt_migration.c), demoting when it is short.
void
    kvt_migration_ensure_start (self_t *self, kvt_migration_ensure_t *job);

//  Demote up to 'count' of tier 'tier''s victims one tier down (off the
//  last: dropped), then call 'cont' with the outcome (-ENOSPC: no victim,
//  all pinned); *moved_out (if set) gets how many moved. 'for_upkeep':
//  the watermark upkeep's own demotion, whose room below never waits for
//  the upkeep. (kvt_migration_room.c)
void
    kvt_migration_demote (self_t *self, int tier, size_t count, bool for_upkeep,
                          size_t *moved_out, kvt_migration_cont_fn *cont, void *arg);

//  Free an ensure job, giving its slots back if 'release_slots'.
void
    kvt_migration_ensure_free (self_t *self, kvt_migration_ensure_t **job_p, bool release_slots);

//  Answer the current job (reply consumed) or fail it; the next job starts
//  after the watermark upkeep, or beside it (overlap_upkeep = 2).
void
    kvt_migration_job_reply (self_t *self, kvt_msg_t **reply_p);
void
    kvt_migration_job_error (self_t *self, int rc, const char *what);

//  overlap_upkeep = 2: the current job gives up the job slot before it is
//  answered (its upkeep and the next job start now); returns its request,
//  which the job answers (kvt_actor_reply) and destroys itself. Only for
//  a job that needs no more of the actor's exclusive state.
kvt_msg_t *
    kvt_migration_job_detach (self_t *self);

//  Copy 'count' blocks between the GPU tier's and host tier's slabs, then
//  call 'cont' (may be NULL) with the status: at once for two host slabs,
//  from the actor's loop once a CUDA copy is done (and every copy queued
//  before it in the same direction: the two directions complete apart;
//  the blocks of one call may be copied in any order). With cold_fp8 a block
//  going GPU -> host is quantized into its host slot and one coming back
//  dequantized into its GPU slot. (kvt_migration_copy.c)
void
    kvt_migration_copy_blocks (self_t *self, int from, const uint64_t *from_slots, int to,
                               const uint64_t *to_slots, size_t count,
                               kvt_migration_cont_fn *cont, void *arg);

//  Bytes of 'count' blocks as they cross between host and NVMe or the
//  GPU: block_bytes, or the FP8 form's length with cold_dtype = fp8.
uint64_t
    kvt_migration_cold_bytes (self_t *self, size_t count);

//  At the actor's end: wait for the copies still queued, then call their
//  continuations with -ECANCELED (also those migration/test_hold_copies
//  keeps); returns how many. (kvt_migration_copy.c)
size_t
    kvt_migration_copy_stop (self_t *self);

//  Release the CUDA copy stream and its eventfd, after
//  kvt_migration_copy_stop; NULL-safe.
void
    kvt_migration_copy_destroy (kvt_migration_copy_t **self_p);

//  Start the current MIG_PROMOTE job. (kvt_migration_promote.c)
void
    kvt_migration_start_promote (self_t *self);

//  Start the current MIG_PROMOTE_END job: commit or undo a stream
//  promotion. (kvt_migration_promote_end.c)
void
    kvt_migration_start_promote_end (self_t *self);

//  PROMOTE_END gives back 'slot' (host tier): if a layer-group read still
//  writes into it, it is kept until that read is over (and freed then).
//  Returns true if kept. (kvt_migration_promote.c)
bool
    kvt_migration_staging_busy (self_t *self, uint64_t slot);

//  --------------------------------------------------------------------------
//  The chunked NVMe reader (kvt_migration_read.c), shared by PROMOTE and
//  PREFETCH: blocks are read into host slots in chunks of
//  KVT_MIGRATION_CHUNK_BYTES, every chunk's TIER_READ sent at once
//  (tier_nvme serves them in order), so that disk, checksums and the
//  caller's copies of a read chunk overlap. chunk_fn sees each chunk as it
//  is answered (bad [k]: block first + k could not be read, a miss);
//  done_fn runs after the last.

#define KVT_MIGRATION_CHUNK_BYTES (4u << 20)    //  Bytes per chunk read

typedef void (kvt_migration_chunk_fn) (self_t *self, void *arg, size_t first, size_t count,
                                       const bool *bad);

//  Which of a TIER_READ's 'count' blocks are misses, from its answer
//  (rc and reply): a new array of count + 1 flags (all set when the read
//  failed as a whole); the caller frees it.
bool *
    kvt_migration_read_misses (int rc, kvt_msg_t *reply, size_t count);

//  Read 'count' blocks (disk slots, hashes) into host slots 'host_slots'.
//  Returns the number of chunks (0 for no blocks: done_fn is then not
//  called).
size_t
    kvt_migration_read_chunks (self_t *self, const uint64_t *nvme_slots, const uint64_t *hashes,
                               const uint64_t *host_slots, size_t count,
                               kvt_migration_chunk_fn *chunk_fn, kvt_migration_cont_fn *done_fn,
                               void *arg);

//  Free the stream promotions still reading at shutdown (their slots are
//  not given back: the tiers are going too). (kvt_migration_promote.c)
void
    kvt_migration_streams_destroy (self_t *self);

//  --------------------------------------------------------------------------
//  Write-through (kvt_migration_through.c)

//  Make the (empty) shadow table; free it at shutdown (the shadows' host
//  slots are not given back: the tiers are going too).
void
    kvt_migration_shadows_new (self_t *self);
void
    kvt_migration_shadows_destroy (self_t *self);

//  Shadows held now.
size_t
    kvt_migration_shadow_count (self_t *self);

//  A block moving host -> GPU ('hash', its host 'slot'): with write-through
//  on, keep the slot as the block's shadow (it holds the block's cold form
//  already; no bytes move) and return true; else (or if the block has a
//  shadow already) return false and the caller frees the slot.
bool
    kvt_migration_shadow_adopt (self_t *self, uint64_t hash, uint64_t slot);

//  Drop up to 'want' shadows, newest first, and hand their host slots to
//  the caller in 'slots' (no bytes move). Returns how many.
size_t
    kvt_migration_shadow_reclaim (self_t *self, uint64_t *slots, size_t want);

//  Demote the GPU victims among hashes/slots [0, *count) that have a
//  shadow: the index moves them to their shadows' host slots (no copy),
//  they are unpinned and their GPU slots freed. They leave the arrays (the
//  rest keep their order), '*moved' grows by their number, and 'cont' is
//  called once with 0 (at once if none has a shadow).
void
    kvt_migration_shadow_demote (self_t *self, uint64_t *hashes, uint64_t *slots, size_t *count,
                                 size_t *moved, kvt_migration_cont_fn *cont, void *arg);

//  Start the current MIG_WRITE_THROUGH job.
void
    kvt_migration_start_write_through (self_t *self);

//  Start the current MIG_PREFETCH job: NVMe blocks of a waiting request
//  staged into the host tier. (kvt_migration_prefetch.c)
void
    kvt_migration_start_prefetch (self_t *self);

#endif
