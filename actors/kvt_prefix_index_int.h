/*  =========================================================================
    kvt_prefix_index_int - what the prefix index actor's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The prefix index is one actor in three files: kvt_prefix_index.c (the
    actor: the hash table, the tiers' LRU lists, the ghost history, the
    life cycle, IDX_MATCH, IDX_INSERT, IDX_MOVE, IDX_UNPIN, IDX_REMOVE),
    kvt_prefix_index_policy.c (hosting the tiers' eviction policies:
    their events, a remote policy's glue, and the blocks handed to a
    mover, IDX_VICTIMS and IDX_CLAIM) and kvt_prefix_index_log.c (local
    policies' events, logged and applied after the answer). This header
    is for those files only.
@end
*/

#ifndef KVT_PREFIX_INDEX_INT_H_INCLUDED
#define KVT_PREFIX_INDEX_INT_H_INCLUDED

#include "kvt_classes.h"
#include "kvt_actors.h"
#include "kvt_policy.h"
#include "kvt_policy_remote.h"

#define KVT_PREFIX_INDEX_NIL     UINT32_MAX //  No entry
#define KVT_PREFIX_INDEX_PENDING 4096       //  Requests whose next block's depth we remember
#define KVT_PREFIX_INDEX_NO_TIER UINT8_MAX  //  A request's hit whose access no policy hears

//  One cached block
typedef struct {
    uint64_t hash;                  //  Chained block hash; 0 = free entry
    uint64_t slot;                  //  Slot in its tier
    uint64_t last_use;              //  Logical clock of the last match or insert
    uint64_t parent;                //  Hash of the block before it; 0 = none or unknown
    uint32_t prev, next;            //  Neighbours on the tier's LRU list
    uint32_t pins;                  //  Holders that need it to stay put
    uint32_t depth;                 //  Blocks before it in its sequence (best known)
    uint32_t reuses;                //  Requests that found it cached (pinned matches)
    uint32_t offers;                //  Times it (or its request) came back after a drop
    uint8_t tier;                   //  KVT_TIER_*
    bool moving;                    //  Handed out by IDX_VICTIMS, not yet moved back in
    bool promoting;                 //  Found off the GPU by a pinning IDX_MATCH: its
                                    //  requester promotes it (until IDX_MOVE or its last
                                    //  pin goes)
    bool in_policy;                 //  Its tier's policy was told it is cached there
} kvt_prefix_index_entry_t;

//  Where a request's first uncached block sits: IDX_INSERT carries only
//  the new blocks, so IDX_MATCH leaves their starting depth here.
typedef struct {
    uint64_t hash;                  //  First block the match did not find; 0 = empty
    uint64_t parent;                //  The block before it; 0 = none
    uint32_t depth;                 //  Its position in the request
} kvt_prefix_index_pending_t;

//  A dropped block, remembered so that its next insert counts as an offer.
typedef struct {
    uint64_t hash;                  //  Hash of a removed block; 0 = empty
    uint32_t offers;                //  Its offers when it was removed
} kvt_prefix_index_ghost_t;

//  A tier's blocks in order of last use
typedef struct {
    uint32_t head, tail;            //  Oldest and newest entries
    uint64_t count;                 //  Entries on the list
} kvt_prefix_index_list_t;

//  Policy events not applied yet (kvt_prefix_index_policy.c)
typedef struct _kvt_prefix_index_log_t kvt_prefix_index_log_t;

//  What a pinning match saw of each block it found, taken in the match's
//  own loop while the entry is in cache: a long prefix's entries do not
//  stay there for a second pass (65536 blocks' entries are 4 MiB; the
//  second pass cost as much as the match, issue #3)
typedef struct {
    uint32_t entry;                 //  Its entry
    uint32_t sharers;               //  Its pins, this match's included
    uint8_t hit_tier;               //  The tier whose policy hears its access, or
                                    //  KVT_PREFIX_INDEX_NO_TIER
} kvt_prefix_index_hit_t;

//  --------------------------------------------------------------------------
//  Structure of our actor

typedef struct {
    kvt_actor_t *actor;             //  Our skeleton
    uint64_t max_blocks;            //  From config
    kvt_prefix_index_entry_t *entries;  //  Entry pool
    uint32_t *free_entries;         //  Stack of unused entry numbers
    uint64_t free_count;            //  Entries on that stack
    uint32_t *table;                //  Open addressing: entry number or KVT_PREFIX_INDEX_NIL
    uint64_t table_mask;            //  Table size - 1 (a power of two)
    kvt_prefix_index_list_t lists [KVT_TIER_COUNT];
    uint64_t clock;                 //  Logical time
    uint64_t requests;              //  Requests begun (IDX_MATCH with pin): policy 'now'
    uint32_t block_tokens;          //  From model/block_tokens, told to policies
    char *policy_name;              //  migration/policy, owned copy
    char *lower_policy_name;        //  migration/lower_policy, owned copy ("": the same)
    char *policy_options;           //  migration/policy_options, owned copy
    int policy_timeout_ms;          //  migration/policy_timeout_ms
    int policy_retry_ms;            //  migration/policy_retry_ms
    uint64_t capacity [KVT_TIER_COUNT];         //  Blocks each tier holds, from config
    kvt_policy_t *policies [KVT_TIER_COUNT];    //  One per tier; NULL when remote
    kvt_policy_remote_t *remote;    //  Outside-process policy, or NULL
    kvt_prefix_index_log_t *policy_log; //  Local policies' events not applied yet
    int64_t policy_slice_us;        //  prefix_index/policy_slice_us: longest slice of
                                    //  log events applied at once (0 = only before
                                    //  a decision)
    uint64_t test_refuse_gpu_moves; //  TEST ONLY: IDX_MOVEs to the GPU still to refuse
    int64_t test_hold_parts_ms;     //  TEST ONLY: stall after the first IDX_MATCH_PART
    int64_t test_log_chunk_events;  //  TEST ONLY: events per chunk of the policy log (0:
                                    //  the default), so that tests cross chunks
    int64_t test_log_max_calls;     //  TEST ONLY: waiting calls past which new events
                                    //  catch up (0: the default), so that tests reach it
    bool test_decide_in_steps;      //  TEST ONLY: events wait for a victims call, which
                                    //  applies them in steps (kvt_prefix_index_log_long)
    kvt_prefix_index_pending_t pending [KVT_PREFIX_INDEX_PENDING];
                                    //  Depth of the next insert, by first hash
    kvt_prefix_index_ghost_t *ghosts;   //  Direct-mapped history of dropped blocks
    uint64_t ghost_mask;            //  Ghost table size - 1 (a power of two)
} self_t;

//  Bucket of 'hash' in the open-addressing table.
static inline uint64_t
kvt_prefix_index_bucket (const self_t *self, uint64_t hash)
{
    return (hash * 0x9e3779b97f4a7c15ULL >> 17) & self->table_mask;
}

//  Entry number of 'hash', or KVT_PREFIX_INDEX_NIL.
static inline uint32_t
kvt_prefix_index_find (const self_t *self, uint64_t hash)
{
    for (uint64_t b = kvt_prefix_index_bucket (self, hash); ; b = (b + 1) & self->table_mask) {
        uint32_t e = self->table [b];
        if (e == KVT_PREFIX_INDEX_NIL || self->entries [e].hash == hash)
            return e;
    }
}

//  Most IDX_MATCH_PARTs one match sends (parts grow to stay within it):
//  well under a socket's high-water mark, so they never block the sender
#define KVT_PREFIX_INDEX_MAX_PARTS 256

//  Blocks in the next IDX_MATCH_PART of a match in parts of 'part_blocks',
//  'parts' answered so far, 'left' blocks still to match: parts
//  ramp up from part_blocks / 8 (x2 a part) and down again to it at the
//  end of the prefix (each half of what is left). Each part is a
//  promotion, and the first one's per-block work (the match, reserving
//  its GPU slots, queueing its copy) comes before the link has anything
//  to carry, the last one's (its IDX_MOVE, its answer) after the link is
//  done: small end parts keep both short, full parts between keep the
//  per-promotion work low (issue #3). At most 7 parts more than
//  left / part_blocks.
size_t
    kvt_prefix_index_part_size (size_t part_blocks, size_t parts, size_t left);

//  How far ahead a loop over a request's hashes prefetches their buckets,
//  and (the bucket being in cache by then) their entries. A 16384-block
//  prefix's hashes land in random buckets of a table and an entry pool
//  of megabytes: each lookup is two cache misses, and most of the cost
//  of IDX_MATCH and IDX_MOVE (issue #3). Prefetched ahead they overlap.
#define KVT_PREFIX_INDEX_AHEAD 16

//  Prefetch the cache line at 'p'. GCC 12 at -O2 drops a __builtin_prefetch
//  whose address a later iteration of the loop loads, which is exactly
//  ours: on x86-64 the instruction is written out instead.
static inline void
kvt_prefix_index_prefetch_line (const void *p)
{
#if defined (__x86_64__) || defined (__i386__)
    __asm__ volatile ("prefetcht0 %0" : : "m" (*(const char *) p));
#else
    __builtin_prefetch (p);
#endif
}

//  Prefetch for a loop over 'hashes' [0, count) now at 'k': the bucket of
//  hash k + AHEAD, and the first entry of the bucket of hash k + AHEAD / 2.
//  A hint only: never changes what a lookup finds.
static inline void
kvt_prefix_index_prefetch (const self_t *self, const uint64_t *hashes, size_t count, size_t k)
{
    if (k + KVT_PREFIX_INDEX_AHEAD < count)
        kvt_prefix_index_prefetch_line (&self->table [kvt_prefix_index_bucket (
                                            self, hashes [k + KVT_PREFIX_INDEX_AHEAD])]);
    if (k + KVT_PREFIX_INDEX_AHEAD / 2 < count) {
        uint32_t e = self->table [kvt_prefix_index_bucket (
                         self, hashes [k + KVT_PREFIX_INDEX_AHEAD / 2])];
        if (e != KVT_PREFIX_INDEX_NIL)
            kvt_prefix_index_prefetch_line (&self->entries [e]);
    }
}

//  Is 'tier' a tier number?
static inline bool
kvt_prefix_index_valid_tier (uint64_t tier)
{
    return tier < KVT_TIER_COUNT;
}

//  Slot of 'hash' in the pending table.
static inline kvt_prefix_index_pending_t *
kvt_prefix_index_pending (self_t *self, uint64_t hash)
{
    return &self->pending [(hash * 0x9e3779b97f4a7c15ULL >> 40) % KVT_PREFIX_INDEX_PENDING];
}

//  The tiers' policies: every call to a policy object, or every event to
//  a remote one, goes through these functions (kvt_prefix_index_policy.c).

//  Entry 'e' now lives in its tier: tell that tier's policy, with the
//  KVT_POLICY_BLOCK_* 'flags'. The entry must not be in its policy.
void
    kvt_prefix_index_policy_insert (self_t *self, uint32_t e, uint32_t flags);

//  Entry 'e' leaves (or is about to leave) its tier: tell its policy once.
void
    kvt_prefix_index_policy_evict (self_t *self, uint32_t e);

//  End of one index request: a local policy gets its waiting events now
//  if they are few, else after the answer (the policy log); a remote
//  policy gets its events, never waiting; dropped events are counted.
void
    kvt_prefix_index_policy_flush (self_t *self);

//  Create the tiers' policies from migration/policy. Returns 0 or
//  KVT_ECONFIG (logged, naming the key).
int
    kvt_prefix_index_policy_start (self_t *self);

//  The log of local policies' events (kvt_prefix_index_log.c): each
//  event is logged with what the policy is told, in order, and applied
//  later, never out of order.
//  Create the log (local policies only).
void
    kvt_prefix_index_log_start (self_t *self);

//  Drop the log (events still waiting are not told); before the policies
//  are destroyed. Safe to call twice, and without a log.
void
    kvt_prefix_index_log_stop (self_t *self);

//  Log on_insert (after admit) of 'block' in 'tier''s policy.
void
    kvt_prefix_index_log_insert (self_t *self, uint8_t tier, const kvt_policy_block_t *block);

//  Log on_evict of 'id' in 'tier''s policy.
void
    kvt_prefix_index_log_evict (self_t *self, uint8_t tier, uint64_t id);

//  Log a request of 'count' blocks ('ids': their hashes, in order), the
//  first 'hits' cached: begin_request in the GPU tier's policy, on_access
//  of hit k in policy hit [k].hit_tier (or none: KVT_PREFIX_INDEX_NO_TIER)
//  with hit [k].sharers, end_request; 'now' is the logical clock it began
//  at. Takes both arrays. The kvt_policy_block_t array begin_request
//  needs (56 bytes a block) is built when the event is applied, off the
//  match's answer (issue #3: 3.6 MB for a 65536-block prefix).
void
    kvt_prefix_index_log_request (self_t *self, uint64_t *ids, size_t count, size_t hits,
                                  kvt_prefix_index_hit_t *hit, int64_t now);

//  End of an index request: apply what waits now if it is little, else
//  after the answer, in slices of prefix_index/policy_slice_us.
void
    kvt_prefix_index_log_answer (self_t *self);

//  Apply every waiting event now (before a policy decides).
void
    kvt_prefix_index_log_apply (self_t *self);

//  Whether more waits than an answer applies at once (a decision then
//  applies it in slices first: kvt_prefix_index_log_slice).
bool
    kvt_prefix_index_log_long (self_t *self);

//  Apply one slice (prefix_index/policy_slice_us) of what waits; true if
//  nothing waits any more.
bool
    kvt_prefix_index_log_slice (self_t *self);

//  While 'direct', events are applied as they are logged (a victims call).
void
    kvt_prefix_index_log_direct (self_t *self, bool direct);

//  What a pinning match records of a block it found (entry 'e', at 'depth'
//  after 'parent', 0 for none): the block's place in the request, and its
//  policy fields into 'hit'.
void
    kvt_prefix_index_policy_hit (self_t *self, uint32_t e, uint64_t parent, size_t depth,
                                 kvt_prefix_index_hit_t *hit);

//  A request began with 'matched' of its 'count' blocks cached ('hits'
//  from kvt_prefix_index_policy_hit, taken): tell the policies, and
//  remember where its first new block sits for the IDX_INSERT that follows.
void
    kvt_prefix_index_policy_request (self_t *self, const uint64_t *hashes, size_t count,
                                     size_t matched, kvt_prefix_index_hit_t *hits);

//  IDX_VICTIMS: blocks of a tier for a mover, chosen by the tier's policy,
//  the rest from its LRU list; pinned and moving until IDX_MOVE.
int
    kvt_prefix_index_handle_victims (void *self_ptr, kvt_msg_t **msg_p);

//  IDX_CLAIM: blocks of a request's leading cached run in a tier, for a
//  mover, pinned and moving as victims are.
int
    kvt_prefix_index_handle_claim (void *self_ptr, kvt_msg_t **msg_p);

#endif
