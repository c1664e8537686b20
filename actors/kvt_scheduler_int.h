/*  =========================================================================
    kvt_scheduler_int - what the scheduler actor's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The scheduler is one actor in two files: kvt_scheduler.c (the front
    door, one handler per client message, STATS, the life cycle) and
    kvt_scheduler_jobs.c (a request's job: admission by GPU room,
    prefetch while waiting, fetch or recompute, planning the prefix
    through the index and migration, reserving and inserting blocks).
    This header is for those files only.
@end
*/

#ifndef KVT_SCHEDULER_INT_H_INCLUDED
#define KVT_SCHEDULER_INT_H_INCLUDED

#include "kvt_classes.h"
#include "kvt_actors.h"
#include "kvt_sim.h"

#define KVT_SCHEDULER_MAX_NEW_TOKENS 4096   //  Longest decode one request may ask

typedef struct _self_t self_t;

typedef struct _job_t {
    self_t *self;                   //  Owner
    kvt_msg_t *request;             //  Client request, with its envelope
    int64_t admitted_us;            //  When it arrived
    int64_t phase_us;               //  When its current phase began
    uint32_t *tokens;               //  Prompt
    size_t token_count;             //  Tokens in prompt
    uint64_t *hashes;               //  Chained hash of each full block
    size_t block_count;             //  Full blocks in the prompt
    uint64_t *tiers;                //  Where each matched block was
    uint64_t *slots;                //  GPU slot of every full block (after planning)
    size_t matched;                 //  Leading blocks found in cache
    size_t pinned;                  //  Leading hashes pinned in the index
    size_t reserved_from;           //  slots [reserved_from..] came from MIG_RESERVE
    size_t reserved_count;          //  How many (given back on failure)
    uint64_t from_tier [KVT_TIER_COUNT];   //  Prefix blocks served per tier
    kvt_msg_t *result;              //  COMP_RUN_OK, kept for the reply
    int pending;                    //  STATS: peers not yet answered
    size_t gpu_budget;              //  GPU blocks this job was admitted with
    void (*start) (struct _job_t *job);   //  What to run once admitted
    bool admitted;                  //  Left the waiting list?
    bool prefetching;               //  A prefetch lookup or MIG_PREFETCH is under way
    bool start_deferred;            //  Admitted during the prefetch: start when it ends
    size_t prefetch_reserved;       //  Host blocks of the prefetch budget asked for
    uint64_t *staged;               //  Hashes migration staged for us (pinned for us)
    size_t staged_count;            //  Entries in staged
    bool *prestaged;                //  Per block: staged by our prefetch
    uint64_t *host_slots;           //  Stream promotion: host slot per matched block
    uint64_t *stream_old;           //  Stream promotion: each block's slot in its tier
    uint64_t *stream_gpu;           //  Stream promotion: its reserved GPU slot
    bool stream_open;               //  A stream promotion awaits MIG_PROMOTE_END
    uint64_t stream_ticket;         //  Its layer-group ticket for compute (0: none, #4)
    bool stream_retried;            //  Recomputed once after a block failed mid-run
    int kv_field;                   //  STORE, STORE_TAIL: field holding the KV bytes
    size_t kv_first;                //  STORE_TAIL: first block the KV bytes hold (else 0)
} job_t;

struct _self_t {
    kvt_actor_t *actor;             //  Our skeleton
    zsock_t *frontdoor;             //  ROUTER for clients
    char *endpoint;                 //  tcp:// front door
    char *ipc_endpoint;             //  ipc:// front door
    size_t max_frame;               //  Larger client frames get EMSGSIZE
    size_t max_queue;               //  Jobs in flight beyond this get EBUSY
    size_t jobs;                    //  Jobs in flight
    bool caching;                   //  Reuse cached blocks?
    kvt_block_shape_t shape;        //  Block geometry
    size_t block_bytes;             //  Bytes per block
    int vocab;                      //  Token ids are < vocab
    kvt_arena_t *gpu;               //  GPU slab, for STORE and LOAD bytes
    kvt_arena_t *gpu_shard;         //  Its host-held layers (layer sharding, #5), or NULL
    size_t gpu_capacity;            //  Blocks in the GPU tier
    size_t gpu_admitted;            //  GPU blocks held by admitted jobs
    zlist_t *waiting;               //  Jobs waiting for GPU room, in arrival order
    int64_t compute_timeout_ms;     //  Longest wait for one model run
    bool prefetch_waiting;          //  Stage waiting jobs' NVMe blocks into host?
    size_t prefetch_budget;         //  Host blocks waiting jobs may hold staged
    size_t prefetch_held;           //  Host blocks staged or being staged for them
    bool fetch_by_cost;             //  fetch_policy = cost
    double fetch_us [KVT_TIER_COUNT];   //  Modeled time to bring one block to the GPU
    double prefill_tokens_per_s;    //  EWMA of the measured prefill rate
    bool prefill_measured;          //  Has compute reported a rate yet?
    bool stream_promotion;          //  Prefixes stream to compute layer by layer
    size_t plan_piece_blocks;       //  A longer prefix is planned in pieces of this
                                    //  many blocks (0: never; kvt_scheduler_plan.c)
    bool promotions_overlap;        //  Migration runs the next job beside a copy
};

//  A job's next step, once the previous one is done.
typedef void (kvt_scheduler_step_fn) (job_t *job);

//  A job for the client request *request_p (taken); counted in flight.
job_t *
    kvt_scheduler_job_new (self_t *self, kvt_msg_t **request_p);

//  Run job->start once the GPU has room for the job's blocks (at once,
//  or when running jobs end); a waiting job may prefetch meanwhile.
void
    kvt_scheduler_admit (job_t *job, void (*start) (job_t *job));

//  Add the time since the job's last phase change to counter 'phase'.
void
    kvt_scheduler_phase (job_t *job, const char *phase);

//  Free a job's memory (no messages).
void
    kvt_scheduler_job_free (job_t *job);

//  Send MIG_PROMOTE_END for matched blocks [first, last) of the job's
//  stream promotion: commit, or undo. 'cb' (may be NULL) gets the answer.
void
    kvt_scheduler_stream_end (job_t *job, size_t first, size_t last, bool commit,
                              kvt_actor_reply_fn *cb);

//  Send a message of one array field to 'peer', answer unawaited
//  (nothing for count 0).
void
    kvt_scheduler_fire (self_t *self, const char *peer, int id, int field,
                        const uint64_t *values, size_t count);

//  Drop the pins of the blocks our prefetch staged (our own match holds
//  its own pins on them by now, or the job is over).
void
    kvt_scheduler_prefetch_release (job_t *job);

//  From the reply function of a migration call about the job's prefix
//  that timed out (MIG_PROMOTE, or its stream commit): the job's first
//  job->pinned blocks stay pinned (pins_quarantined, job->pinned = 0)
//  until the late answer, then are unpinned (and a stream promotion
//  undone). If no answer can come (the request was never sent), nothing
//  changes: the job's end unpins them as usual.
void
    kvt_scheduler_expect_late (job_t *job);

//  From the reply function of the job's COMP_RUN, timed out: what
//  compute may still touch (reserved GPU slots, pinned prefix, an open
//  stream promotion) stays held (slots_quarantined) until compute's late
//  answer, then goes back (slots_released_late).
void
    kvt_scheduler_compute_late (job_t *job);

//  Release what the job holds (pins, reserved slots) and free it.
void
    kvt_scheduler_job_end (job_t *job, bool release_reserved);

//  A stream promotion's run failed because a block failed its checksum
//  after compute began (layer-group reads, #4): undo the promotion,
//  unpin the prefix, give back the reserved slots, and start again from
//  the reservation with nothing cached (the whole prompt recomputed).
void
    kvt_scheduler_job_recompute (job_t *job, kvt_scheduler_step_fn *next);

//  Send a reply (consumed) to the client on the front door.
void
    kvt_scheduler_send_client (self_t *self, kvt_msg_t **reply_p);

//  Answer the client ERROR 'rc' with 'what'; release what the job holds.
void
    kvt_scheduler_job_fail (job_t *job, int rc, const char *what);

//  Ask the index where the job's blocks are (IDX_MATCH), pinning them or
//  not; 'fn' gets the answer with 'arg'. With 'part_blocks' > 0 the
//  answer comes in parts (IDX_MATCH_PARTS): 'fn' gets an IDX_MATCH_PART
//  for each part matched while more follow (part_blocks, smaller at
//  both ends of the prefix: kvt_prefix_index_part_size), then
//  IDX_MATCH_PARTS_OK with the rest (its fields are IDX_MATCH_OK's).
void
    kvt_scheduler_match (job_t *job, bool pin, size_t part_blocks,
                         kvt_actor_reply_fn *fn, void *arg);

//  Validate the tokens of a request and hash its full blocks.
int
    kvt_scheduler_job_prepare (job_t *job, int tenant_field, int tokens_field);

//  Fold one compute run into the prefill rate: 'tokens' prefilled in
//  steps that took 'prefill_us'. Short runs say little: skipped.
void
    kvt_scheduler_prefill_measured (self_t *self, size_t tokens, uint64_t prefill_us);

//  Match the job's prefix (pinned), bring its host and NVMe blocks to
//  the GPU (or open a stream promotion), then call 'next'.
void
    kvt_scheduler_plan (job_t *job, kvt_scheduler_step_fn *next);

//  Reserve GPU slots for blocks [matched, block_count), then 'next'.
void
    kvt_scheduler_reserve (job_t *job, kvt_scheduler_step_fn *next);

//  Insert blocks [matched, block_count) as GPU-resident in the index.
void
    kvt_scheduler_insert_computed (job_t *job);

#endif
