/*  =========================================================================
    kvt_prefix_index - where every cached block lives, and who holds it

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Maps a chained block hash (runtime/kvt_block.h: parent hash, tokens,
    tenant salt) to its location {tier, slot}, a pin count and its last
    use. Because hashes are chained, the longest cached prefix of a request
    is its leading run of hashes found here.
    Accepts: IDX_MATCH {hashes, pin}   -> IDX_MATCH_OK {tiers, slots}
             IDX_MATCH_PARTS {hashes, pin, part_blocks} -> IDX_MATCH_PART
                                    {first, tiers, slots} for each
                                    part matched while the match goes
                                    on past it (parts of part_blocks,
                                    ramped at both ends, at most
                                    KVT_PREFIX_INDEX_MAX_PARTS), then
                                    IDX_MATCH_PARTS_OK {tiers, slots} of
                                    the rest
             IDX_INSERT {hashes, tier, slots} -> IDX_INSERT_OK {inserted, duplicates}
             IDX_MOVE {hashes, tier, slots}   -> IDX_MOVE_OK {moved}
             IDX_UNPIN {hashes}     -> IDX_UNPIN_OK {unpinned}
             IDX_VICTIMS {tier, count} -> IDX_VICTIMS_OK {hashes, slots,
                                          reuses, offers}
             IDX_CLAIM {hashes, tier, max_blocks} -> IDX_CLAIM_OK {hashes, slots}
             IDX_REMOVE {hashes}    -> IDX_REMOVE_OK {tiers, slots}
             STATS.
@discuss
    The eviction order of each tier comes from a policy object hosted
    here: migration/policy names the GPU tier's (a built-in such as "lru",
    "plugin:PATH" or PATH.so for a shared object, or "remote:ENDPOINT" for
    a process of any language; actors/policies/POLICIES.md),
    migration/lower_policy the host and NVMe tiers' ("": the same),
    migration/policy_options passes its options. The index hosts it, not the migration actor,
    because only the index sees every event a policy learns from - each
    use (IDX_MATCH with pin), insert, move and removal, from every actor -
    and because it alone knows which blocks are pinned or moving, which
    the policy must never pick. Each tier has its own instance (or, for a
    remote policy, its own tier number in the events).
    What the policy is told, as kvt_policy_block_t {id = hash, parent =
    previous hash, depth = position in the request, sharers = pins, now =
    requests begun}:
        IDX_MATCH pin: begin_request on the GPU tier's policy with the whole
                       request, on_access to each matched block's tier,
                       end_request;
        IDX_INSERT:    admit (its answer only counted: the bytes are
                       already in the tier) then on_insert;
        IDX_MOVE:      on_evict in the old tier (unless already told),
                       on_insert in the new one (flag DEMOTED going down);
        IDX_REMOVE:    on_evict;
        IDX_VICTIMS:   on_evict for each block handed out.
    A local policy may hear these a little later, never out of order:
    they wait in a log; a request that leaves a few hundred waiting has
    them applied before its answer, a larger one after it, in slices of
    at most prefix_index/policy_slice_us between socket turns, and the
    whole log before any victims decision (kvt_prefix_index_log.c): a
    victims call that finds more than a few hundred calls waiting applies
    them a slice a turn first, held meanwhile (kvt_actor_continue), so the
    actors sharing the thread run between the slices.
    So a large IDX_MOVE or IDX_MATCH answers without waiting for the
    policy's bookkeeping.
    Victims: choose_victim is asked again and again (incoming id 0: there
    is no incoming block) until enough unpinned blocks are found. A pinned
    block it names is told on_evict and set aside, so the policy cannot
    name it twice, and is given back with on_insert when the call ends: a
    pinned block is in use right now, so it comes back as a fresh use. An
    answer that is not a cached, unmoving block of the tier (counted
    policy_unusable), or the incoming id 0 (policy_declined: the index
    cannot decline, migration needs the room), ends the questions; the
    rest comes from the tier's LRU list, below (policy_fallbacks per
    decision, policy_fallback_blocks per block). A victim stays pinned and
    marked moving until IDX_MOVE; if the mover gives up (IDX_UNPIN of a
    moving block) it goes back into its tier's policy with on_insert.
    A remote policy gets the same events as POLICY_EVENTS, one message per
    index request, and answers POLICY_VICTIMS {tier, count, candidates =
    the tier's unpinned blocks, least recent first} within
    migration/policy_timeout_ms; a dead, late or garbage-speaking process
    costs at most that, and the decision comes from the LRU list (the
    order of the built-in lru): policy_fallbacks, policy_remote_*.
    Each tier also keeps its blocks on a list in order of last use, oldest
    at the head: the fallback order. A block's place on its new list after
    a move keeps its age (sorted insert walking back from the tail, where
    demoted blocks almost always belong: O(1) in the steady state).
    A victim is marked moving until IDX_MOVE (or the mover's IDX_UNPIN):
    IDX_MATCH cuts a prefix at a moving block, because the slot it would
    report is about to be freed; the request recomputes from there. A
    pinning IDX_MATCH also cuts at a block off the GPU that another
    pinning match found (promoting, until IDX_MOVE or until its last pin
    goes): its requester promotes it next, and a second request
    promoting it too would copy from, and free, a host slot the first
    promotion frees (two requests sharing a host-resident prefix at once:
    GPU slots leaked and host slots freed twice, before this rule). A
    lookup (no pin) still reports it where it is.
    IDX_CLAIM hands a mover chosen blocks instead of the policy's: those
    of the request's leading cached run (cut where IDX_MATCH would cut)
    that live in 'tier', unpinned and not moving, at most max_blocks,
    pinned and marked moving exactly as victims are. The scheduler's
    prefetch for a job waiting admission stages NVMe blocks this way.
    Reuse history for the disk admission (migration/disk_admission):
    'reuses' counts requests that found a block cached; 'offers' counts
    how often a block was offered again (inserted) after the index had
    dropped it - the ghost history, a direct-mapped table of the hashes
    of removed blocks as large as the three tiers together (a later drop
    that lands on the same entry overwrites an older one, so the window
    is roughly the cache's own size in drops). The other blocks an
    IDX_INSERT brings along with such a block get offers = 1 too: the
    request is a conversation that came back after its blocks had left
    every tier, and its next turn will ask for all of them.
    Tiers are exclusive: a block lives in exactly one tier at a time.
    Lookup is an open-addressing hash table: O(1) per hash. A victims call
    asks the policy at most (blocks in the tier + 1) times; a remote call
    sends at most 65536 candidates and blocks at most the timeout.
    Files: this one (the hash table, the LRU lists, the ghost history,
    the life cycle and the handlers of IDX_MATCH, IDX_INSERT, IDX_MOVE,
    IDX_UNPIN and IDX_REMOVE) and kvt_prefix_index_policy.c (the tiers'
    policies: their events, the remote policy, IDX_VICTIMS and
    IDX_CLAIM); kvt_prefix_index_int.h holds what they share.
@end
*/

#include "kvt_prefix_index_int.h"
#include "kvt_layer_shard.h"
#include "kvt_huge.h"

//  --------------------------------------------------------------------------
//  Hash table with linear probing and backward-shift deletion (no
//  tombstones, so lookups never slow down with churn). The lookup,
//  kvt_prefix_index_find, is in kvt_prefix_index_int.h.

//  The ghost history's entry for 'hash'.
static kvt_prefix_index_ghost_t *
s_ghost (self_t *self, uint64_t hash)
{
    return &self->ghosts [(hash * 0x9e3779b97f4a7c15ULL >> 23) & self->ghost_mask];
}

static void
s_table_insert (self_t *self, uint32_t entry)
{
    uint64_t b = kvt_prefix_index_bucket (self, self->entries [entry].hash);
    while (self->table [b] != KVT_PREFIX_INDEX_NIL)
        b = (b + 1) & self->table_mask;
    self->table [b] = entry;
}

static void
s_table_remove (self_t *self, uint64_t hash)
{
    uint64_t b = kvt_prefix_index_bucket (self, hash);
    while (self->entries [self->table [b]].hash != hash)
        b = (b + 1) & self->table_mask;
    self->table [b] = KVT_PREFIX_INDEX_NIL;
    //  Shift back later entries of the run that could live at b
    for (uint64_t next = (b + 1) & self->table_mask; self->table [next] != KVT_PREFIX_INDEX_NIL;
         next = (next + 1) & self->table_mask) {
        uint64_t home = kvt_prefix_index_bucket (self, self->entries [self->table [next]].hash);
        bool movable = b <= next? (home <= b || home > next): (home <= b && home > next);
        if (movable) {
            self->table [b] = self->table [next];
            self->table [next] = KVT_PREFIX_INDEX_NIL;
            b = next;
        }
    }
}

//  --------------------------------------------------------------------------
//  Per-tier LRU lists

static void
s_list_unlink (self_t *self, uint32_t e)
{
    kvt_prefix_index_entry_t *entry = &self->entries [e];
    kvt_prefix_index_list_t *list = &self->lists [entry->tier];
    if (entry->prev != KVT_PREFIX_INDEX_NIL)
        self->entries [entry->prev].next = entry->next;
    else
        list->head = entry->next;
    if (entry->next != KVT_PREFIX_INDEX_NIL)
        self->entries [entry->next].prev = entry->prev;
    else
        list->tail = entry->prev;
    entry->prev = entry->next = KVT_PREFIX_INDEX_NIL;
    list->count--;
}

//  Insert keeping the list sorted by last use, walking back from the
//  tail. Fresh uses belong at the tail (no step). A demoted block is the
//  oldest of the tier above, but newer than every block demoted before it
//  (those were older still when they left), so it too lands at or near the
//  tail: a walk from the head would cross the whole lower tier instead.
static void
s_list_insert (self_t *self, uint32_t e)
{
    kvt_prefix_index_entry_t *entry = &self->entries [e];
    kvt_prefix_index_list_t *list = &self->lists [entry->tier];
    uint32_t after = list->tail;
    while (after != KVT_PREFIX_INDEX_NIL && self->entries [after].last_use > entry->last_use)
        after = self->entries [after].prev;
    entry->prev = after;
    entry->next = after == KVT_PREFIX_INDEX_NIL? list->head: self->entries [after].next;
    if (entry->prev != KVT_PREFIX_INDEX_NIL)
        self->entries [entry->prev].next = e;
    else
        list->head = e;
    if (entry->next != KVT_PREFIX_INDEX_NIL)
        self->entries [entry->next].prev = e;
    else
        list->tail = e;
    list->count++;
}

//  Insert a batch of unlinked entries, oldest first: each then walks back
//  only past list entries newer than itself, never past the batch. In the
//  order a batch comes (a demotion's victims are often deepest first,
//  newest first) every insert would walk past all the batch's entries
//  inserted before it: quadratic, 2 M steps for one 2048-block demotion.
static void
s_list_insert_batch (self_t *self, const uint32_t *entries, size_t count)
{
    kvt_pair_t *order = (kvt_pair_t *) kvt_zmalloc ((count + 1) * sizeof (kvt_pair_t));
    for (size_t k = 0; k < count; k++)
        order [k] = (kvt_pair_t) { self->entries [entries [k]].last_use, entries [k] };
    kvt_pairs_sort (order, count);
    for (size_t k = 0; k < count; k++)
        s_list_insert (self, (uint32_t) order [k].value);
    free (order);
}

static void
s_touch (self_t *self, uint32_t e)
{
    s_list_unlink (self, e);
    self->entries [e].last_use = ++self->clock;
    s_list_insert (self, e);
}

static void
s_update_gauges (self_t *self)
{
    kvt_actor_gauge (self->actor, "blocks_gpu", self->lists [KVT_TIER_GPU].count);
    kvt_actor_gauge (self->actor, "blocks_host", self->lists [KVT_TIER_HOST].count);
    kvt_actor_gauge (self->actor, "blocks_nvme", self->lists [KVT_TIER_NVME].count);
}

//  --------------------------------------------------------------------------
//  The table and the entry pool: tens to hundreds of megabytes (4 M blocks
//  by default), read at random, one bucket and one entry per hash. On 4 KiB
//  pages nearly every lookup of a long request also misses the TLB, a page
//  walk on top of the cache miss (two walks under a hypervisor). They are
//  mapped apart on transparent huge pages where allowed (kvt_huge.h, issue
//  #3); untouched pages cost nothing.

//  Whether every slot names one of the tier's (no tier has the others: an
//  entry placed there would be a block the tier never holds).
static bool
s_slots_in_range (const self_t *self, uint64_t tier, const uint64_t *slots, size_t count)
{
    for (size_t k = 0; k < count; k++)
        if (slots [k] >= self->capacity [tier])
            return false;
    return true;
}

//  --------------------------------------------------------------------------
//  Life cycle

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->max_blocks = (uint64_t) kvt_config_int (config, "prefix_index/max_blocks");
    self->policy_slice_us = kvt_config_int (config, "prefix_index/policy_slice_us");
    int64_t refuse = kvt_config_int (config, "prefix_index/test_refuse_gpu_moves");
    self->test_refuse_gpu_moves = refuse > 0? (uint64_t) refuse: 0;
    self->test_hold_parts_ms = kvt_config_int (config, "prefix_index/test_hold_parts_ms");
    self->test_log_chunk_events = kvt_config_int (config, "prefix_index/test_log_chunk_events");
    self->test_log_max_calls = kvt_config_int (config, "prefix_index/test_log_max_calls");
    self->test_decide_in_steps = kvt_config_int (config, "prefix_index/test_decide_in_steps") > 0;
    for (int t = 0; t < KVT_TIER_COUNT; t++)
        self->lists [t].head = self->lists [t].tail = KVT_PREFIX_INDEX_NIL;
    self->block_tokens = (uint32_t) kvt_config_int (config, "model/block_tokens");
    self->policy_name = strdup (kvt_config_str (config, "migration/policy"));
    self->policy_options = strdup (kvt_config_str (config, "migration/policy_options"));
    self->lower_policy_name = strdup (kvt_config_str (config, "migration/lower_policy"));
    if (!self->policy_name || !self->policy_options || !self->lower_policy_name)
        abort ();
    self->policy_timeout_ms = (int) kvt_config_int (config, "migration/policy_timeout_ms");
    self->policy_retry_ms = (int) kvt_config_int (config, "migration/policy_retry_ms");
    self->capacity [KVT_TIER_GPU] = (uint64_t) kvt_layer_shard_gpu_slots (config);   //  #5
    self->capacity [KVT_TIER_HOST] = (uint64_t) kvt_config_int (config, "tier_host/capacity_blocks");
    self->capacity [KVT_TIER_NVME] = (uint64_t) kvt_config_int (config, "tier_nvme/capacity_blocks");
    return self;
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        kvt_prefix_index_log_stop (self);
        for (int tier = 0; tier < KVT_TIER_COUNT; tier++)
            kvt_policy_destroy (&self->policies [tier]);
        kvt_policy_remote_destroy (&self->remote);
        free (self->policy_name);
        free (self->policy_options);
        free (self->lower_policy_name);
        kvt_huge_free (self->entries, self->max_blocks * sizeof (kvt_prefix_index_entry_t));
        free (self->free_entries);
        kvt_huge_free (self->table, (self->table_mask + 1) * sizeof (uint32_t));
        free (self->ghosts);
        free (self);
        *self_p = NULL;
    }
}

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    if (self->max_blocks >= KVT_PREFIX_INDEX_NIL) {
        kvt_log_error ("prefix_index: max_blocks %" PRIu64 " is too large", self->max_blocks);
        return KVT_ECONFIG;
    }
    uint64_t table_size = 16;
    while (table_size < self->max_blocks * 2)   //  Load factor <= 0.5
        table_size *= 2;
    self->entries = (kvt_prefix_index_entry_t *)
        kvt_huge_alloc (self->max_blocks * sizeof (kvt_prefix_index_entry_t), false);
    self->free_entries = (uint32_t *) malloc (self->max_blocks * sizeof (uint32_t));
    self->table = (uint32_t *) kvt_huge_alloc (table_size * sizeof (uint32_t), false);
    self->table_mask = table_size - 1;     //  Sizes the table's unmapping
    if (!self->entries || !self->free_entries || !self->table) {
        kvt_log_error ("prefix_index: no memory for %" PRIu64 " blocks", self->max_blocks);
        return -ENOMEM;
    }
    memset (self->table, 0xff, table_size * sizeof (uint32_t));
    //  The ghost history is as large as the tiers together, at least 1024
    uint64_t ghost_size = 1024;
    uint64_t tiers_total = self->capacity [0] + self->capacity [1] + self->capacity [2];
    while (ghost_size < tiers_total && ghost_size < (1ULL << 26))
        ghost_size *= 2;
    self->ghosts = (kvt_prefix_index_ghost_t *)
        calloc (ghost_size, sizeof (kvt_prefix_index_ghost_t));
    if (!self->ghosts) {
        kvt_log_error ("prefix_index: no memory for the ghost history");
        return -ENOMEM;
    }
    self->ghost_mask = ghost_size - 1;
    self->table_mask = table_size - 1;
    for (uint64_t k = 0; k < self->max_blocks; k++)
        self->free_entries [k] = (uint32_t) (self->max_blocks - 1 - k);
    self->free_count = self->max_blocks;
    s_update_gauges (self);
    return kvt_prefix_index_policy_start (self);
}

//  --------------------------------------------------------------------------
//  Handlers

//  A match under way: IDX_MATCH at once, IDX_MATCH_PARTS in steps
typedef struct {
    kvt_msg_t *request;             //  Kept: 'hashes' lives in it
    const uint64_t *hashes;         //  The request's hashes
    size_t count;                   //  Entries in hashes
    bool pin;                       //  Pin what is found, count it as a use
    size_t part_blocks;             //  Blocks per IDX_MATCH_PART (0: one answer)
    uint64_t *tiers, *slots;        //  Where each block found is
    kvt_prefix_index_hit_t *hits;   //  What the policy hears of each (pin only)
    size_t matched;                 //  Blocks found so far
    size_t sent;                    //  Blocks answered in parts so far
    size_t parts;                   //  Parts answered so far
    size_t part;                    //  Blocks in the part being matched
    bool cut;                       //  The prefix ends at 'matched'
} s_matching_t;

static void
s_matching_destroy (s_matching_t **self_p)
{
    s_matching_t *self = *self_p;
    kvt_msg_destroy (&self->request);
    free (self->tiers);
    free (self->slots);
    free (self->hits);
    free (self);
    *self_p = NULL;
}

//  Match on until the next part is complete or the prefix ends. Returns
//  true while blocks remain to match.
static bool
s_match_some (self_t *self, s_matching_t *m)
{
    size_t until = m->part_blocks? m->sent + m->part: m->count;
    until = until < m->count? until: m->count;
    const uint64_t *hashes = m->hashes;
    while (m->matched < until) {
        size_t k = m->matched;
        kvt_prefix_index_prefetch (self, hashes, m->count, k);
        uint32_t e = hashes [k]? kvt_prefix_index_find (self, hashes [k]): KVT_PREFIX_INDEX_NIL;
        if (e == KVT_PREFIX_INDEX_NIL)
            break;
        if (self->entries [e].moving) {
            //  Its bytes are on their way to another slot: the location we
            //  know is about to be stale. Cut the prefix here (recompute)
            //  rather than hand out a slot that migration will free.
            kvt_actor_count (self->actor, "match_cut_moving", 1);
            break;
        }
        if (m->pin && self->entries [e].promoting) {
            //  Another request is promoting it: promoting it twice would
            //  copy from, and free, a slot the first promotion frees
            kvt_actor_count (self->actor, "match_cut_promoting", 1);
            break;
        }
        m->tiers [k] = self->entries [e].tier;
        m->slots [k] = self->entries [e].slot;
        if (m->pin) {
            self->entries [e].pins++;
            self->entries [e].reuses++;
            s_touch (self, e);      //  A lookup alone does not count as a use
            //  Off the GPU, its requester promotes it next
            if (self->entries [e].tier != KVT_TIER_GPU)
                self->entries [e].promoting = true;
            kvt_prefix_index_policy_hit (self, e, k? hashes [k - 1]: 0, k, &m->hits [k]);
        }
        m->matched++;
    }
    m->cut = m->cut || m->matched < until;
    return !m->cut && m->matched < m->count;
}

size_t
kvt_prefix_index_part_size (size_t part_blocks, size_t parts, size_t left)
{
    size_t least = part_blocks / 8? part_blocks / 8: 1;
    size_t size = parts < 3? part_blocks >> (3 - parts): part_blocks;
    size_t half = left / 2;
    size = half < size? half: size;
    return size > least? size: least;
}

//  The match is over: the policy hears the request, and the asker the
//  blocks not yet answered in parts
static void
s_match_end (self_t *self, s_matching_t *m)
{
    if (m->pin) {
        kvt_prefix_index_policy_request (self, m->hashes, m->count, m->matched, m->hits);
        m->hits = NULL;             //  (It took them)
        kvt_prefix_index_policy_flush (self);
    }
    kvt_actor_count (self->actor, "matched_blocks", m->matched);
    kvt_actor_count (self->actor, "asked_blocks", m->count);
    //  (IDX_MATCH_OK and IDX_MATCH_PARTS_OK share their fields)
    kvt_msg_t *reply = kvt_msg_reply_new (m->request, kvt_msg_id (m->request) + 1);
    kvt_msg_set_array (reply, KVT_IDX_MATCH_OK_TIERS, m->tiers + m->sent, m->matched - m->sent);
    kvt_msg_set_array (reply, KVT_IDX_MATCH_OK_SLOTS, m->slots + m->sent, m->matched - m->sent);
    kvt_actor_reply (self->actor, &reply);
}

//  One step of an IDX_MATCH_PARTS (kvt_actor_continue): match the next
//  part; answer it if the match goes on past it, else end the match
static int
s_match_step (void *self_ptr, void *arg, bool cancel)
{
    self_t *self = (self_t *) self_ptr;
    s_matching_t *m = (s_matching_t *) arg;
    if (cancel) {
        //  Shutting down: nothing to answer into, no state to keep
        s_matching_destroy (&m);
        return 0;
    }
    if (m->sent > 0 && self->test_hold_parts_ms > 0) {
        //  TEST ONLY: an index slow past its askers' call timeout, its
        //  answer's first part out (the whole thread stalls with it)
        zclock_sleep ((int) self->test_hold_parts_ms);
        self->test_hold_parts_ms = 0;
    }
    if (s_match_some (self, m)) {
        kvt_msg_t *part = kvt_msg_reply_new (m->request, KVT_MSG_IDX_MATCH_PART);
        kvt_msg_set_u64 (part, KVT_IDX_MATCH_PART_FIRST, m->sent);
        kvt_msg_set_array (part, KVT_IDX_MATCH_PART_TIERS, m->tiers + m->sent, m->part);
        kvt_msg_set_array (part, KVT_IDX_MATCH_PART_SLOTS, m->slots + m->sent, m->part);
        kvt_actor_reply (self->actor, &part);
        kvt_actor_count (self->actor, "match_parts", 1);
        if (m->parts == 0)
            kvt_actor_mark (self->actor, "at_match_first_part_out");
        m->sent = m->matched;
        m->part = kvt_prefix_index_part_size (m->part_blocks, ++m->parts, m->count - m->sent);
        return 1;                   //  The next part at the next turn
    }
    s_match_end (self, m);
    s_matching_destroy (&m);
    return 0;
}

//  IDX_MATCH, and IDX_MATCH_PARTS with 'part_blocks' > 0: then the
//  blocks matched go out in parts of part_blocks (smaller at both ends:
//  kvt_prefix_index_part_size), each an IDX_MATCH_PART, a part a turn
//  of the loop, and IDX_MATCH_PARTS_OK carries the rest. Between the
//  turns the actors sharing this thread run (the scheduler, whose guest
//  the index is by default, takes up the part at once), but the index
//  serves no other request (kvt_actor_continue): every block the match
//  finds is pinned before any victims call (the room for the first
//  part's promotion) is served, and the policy hears one request.
static int
s_match (self_t *self, kvt_msg_t **msg_p, int hashes_field, int pin_field,
         size_t part_blocks)
{
    s_matching_t *m = (s_matching_t *) kvt_zmalloc (sizeof (s_matching_t));
    m->hashes = kvt_msg_array (*msg_p, hashes_field, &m->count);
    m->pin = kvt_msg_u64 (*msg_p, pin_field) != 0;
    //  Parts are few and large: each is a promotion, and a requester
    //  that does not read them must not fill its pipe (each send past its
    //  high-water mark would stall this thread for the send timeout)
    //  (with room for the ramps' extra parts)
    size_t most = KVT_PREFIX_INDEX_MAX_PARTS - 8;
    size_t least = (m->count + most - 1) / most;
    part_blocks = part_blocks && part_blocks < least? least: part_blocks;
    m->part_blocks = part_blocks < m->count? part_blocks: 0;
    m->part = kvt_prefix_index_part_size (m->part_blocks, 0, m->count);
    //  (Written up to 'matched' before they are read, part by part)
    m->tiers = kvt_u64s_new (m->count);
    m->slots = kvt_u64s_new (m->count);
    if (m->pin) {
        m->hits = (kvt_prefix_index_hit_t *) malloc ((m->count + 1)
                                                    * sizeof (kvt_prefix_index_hit_t));
        if (!m->hits)
            abort ();
    }
    m->request = *msg_p;
    *msg_p = NULL;                  //  Ours now
    if (m->part_blocks)
        kvt_actor_mark (self->actor, "at_match_parts_in");
    if (m->part_blocks && kvt_actor_continue (self->actor, s_match_step, m) == 0)
        return 0;
    if (m->part_blocks)
        kvt_actor_count (self->actor, "match_parts_refused", 1);
    m->part_blocks = 0;             //  At once, one answer
    s_match_some (self, m);
    s_match_end (self, m);
    s_matching_destroy (&m);
    return 0;
}

static int
s_handle_match (void *self_ptr, kvt_msg_t **msg_p)
{
    return s_match ((self_t *) self_ptr, msg_p, KVT_IDX_MATCH_HASHES, KVT_IDX_MATCH_PIN, 0);
}

static int
s_handle_match_parts (void *self_ptr, kvt_msg_t **msg_p)
{
    size_t part_blocks = (size_t) kvt_msg_u64 (*msg_p, KVT_IDX_MATCH_PARTS_PART_BLOCKS);
    return s_match ((self_t *) self_ptr, msg_p, KVT_IDX_MATCH_PARTS_HASHES,
                    KVT_IDX_MATCH_PARTS_PIN, part_blocks);
}

static int
s_handle_insert (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count, slot_count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_INSERT_HASHES, &count);
    const uint64_t *slots = kvt_msg_array (*msg_p, KVT_IDX_INSERT_SLOTS, &slot_count);
    uint64_t tier = kvt_msg_u64 (*msg_p, KVT_IDX_INSERT_TIER);
    if (slot_count != count || !kvt_prefix_index_valid_tier (tier))
        return -EINVAL;
    if (!s_slots_in_range (self, tier, slots, count))
        return -ERANGE;
    for (size_t k = 0; k < count; k++)
        if (hashes [k] == 0)
            return -EINVAL;         //  0 means "no parent", never a block
    //  The blocks continue the request whose match left this note; without
    //  one (it was overwritten, or nobody matched) they start a sequence
    uint64_t first_parent = 0;
    uint32_t first_depth = 0;
    if (count) {
        kvt_prefix_index_pending_t *pending = kvt_prefix_index_pending (self, hashes [0]);
        if (pending->hash == hashes [0]) {
            first_parent = pending->parent;
            first_depth = pending->depth;
            pending->hash = 0;
        }
    }
    uint64_t *duplicates = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    uint32_t *made = (uint32_t *) kvt_zmalloc ((count + 1) * sizeof (uint32_t));
    bool continues = false;         //  Did one of the blocks come back from the ghosts?
    size_t duplicate_count = 0, inserted = 0;
    uint32_t depth = first_depth;   //  Of the next block
    for (size_t k = 0; k < count; k++, depth++) {
        kvt_prefix_index_prefetch (self, hashes, count, k);
        uint32_t known = kvt_prefix_index_find (self, hashes [k]);
        if (known != KVT_PREFIX_INDEX_NIL)  //  Its place is known (a scheduler that
            depth = self->entries [known].depth;    //  chose to recompute cached blocks
                                                    //  sends them)
        if (known != KVT_PREFIX_INDEX_NIL || self->free_count == 0) {
            duplicates [duplicate_count++] = k;     //  Caller frees that slot
            if (self->free_count == 0)
                kvt_actor_count (self->actor, "full", 1);
            continue;
        }
        uint32_t e = self->free_entries [--self->free_count];
        self->entries [e] = (kvt_prefix_index_entry_t) {
            .hash = hashes [k],
            .slot = slots [k],
            .last_use = ++self->clock,
            .parent = k? hashes [k - 1]: first_parent,
            .prev = KVT_PREFIX_INDEX_NIL,
            .next = KVT_PREFIX_INDEX_NIL,
            .depth = depth,
            .tier = (uint8_t) tier
        };
        kvt_prefix_index_ghost_t *ghost = s_ghost (self, hashes [k]);
        if (ghost->hash == hashes [k]) {
            //  Dropped before and offered again: evidence of reuse
            self->entries [e].offers = ghost->offers + 1;
            ghost->hash = 0;
            continues = true;
            kvt_actor_count (self->actor, "ghost_hits", 1);
        }
        made [inserted] = e;
        s_table_insert (self, e);
        s_list_insert (self, e);
        kvt_prefix_index_policy_insert (self, e, 0);
        inserted++;
    }
    //  A request that brought back a dropped block is a conversation that
    //  came back after leaving every tier: its new blocks are as likely
    //  to be asked again as the old ones
    if (continues)
        for (size_t k = 0; k < inserted; k++)
            if (self->entries [made [k]].offers == 0)
                self->entries [made [k]].offers = 1;
    free (made);
    kvt_prefix_index_policy_flush (self);
    kvt_actor_count (self->actor, "inserted", inserted);
    s_update_gauges (self);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_INSERT_OK);
    kvt_msg_set_u64 (reply, KVT_IDX_INSERT_OK_INSERTED, inserted);
    kvt_msg_set_array (reply, KVT_IDX_INSERT_OK_DUPLICATES, duplicates, duplicate_count);
    free (duplicates);
    return kvt_actor_reply (self->actor, &reply);
}

static int
s_handle_move (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count, slot_count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_MOVE_HASHES, &count);
    const uint64_t *slots = kvt_msg_array (*msg_p, KVT_IDX_MOVE_SLOTS, &slot_count);
    uint64_t tier = kvt_msg_u64 (*msg_p, KVT_IDX_MOVE_TIER);
    if (slot_count != count || !kvt_prefix_index_valid_tier (tier))
        return -EINVAL;
    if (!s_slots_in_range (self, tier, slots, count))
        return -ERANGE;
    if (tier == KVT_TIER_GPU && self->test_refuse_gpu_moves > 0) {
        self->test_refuse_gpu_moves--;
        kvt_actor_count (self->actor, "test_moves_refused", 1);
        return -EIO;
    }
    kvt_actor_mark (self->actor, "at_move_in");
    size_t moved = 0;
    uint32_t *placed = (uint32_t *) kvt_zmalloc ((count + 1) * sizeof (uint32_t));
    for (size_t k = 0; k < count; k++) {
        kvt_prefix_index_prefetch (self, hashes, count, k);
        uint32_t e = hashes [k]? kvt_prefix_index_find (self, hashes [k]): KVT_PREFIX_INDEX_NIL;
        if (e == KVT_PREFIX_INDEX_NIL)
            continue;
        kvt_prefix_index_entry_t *entry = &self->entries [e];
        if (entry->prev == KVT_PREFIX_INDEX_NIL && entry->next == KVT_PREFIX_INDEX_NIL
        &&  self->lists [entry->tier].head != e) {
            //  Named twice: placed already (every entry is linked); the
            //  caller's second slot is its bug, counted
            kvt_actor_count (self->actor, "move_duplicates", 1);
            continue;
        }
        uint8_t old_tier = entry->tier;
        if (old_tier != tier)       //  A victim was told already; a promoted block now
            kvt_prefix_index_policy_evict (self, e);
        s_list_unlink (self, e);
        entry->tier = (uint8_t) tier;
        entry->slot = slots [k];
        entry->moving = false;
        entry->promoting = false;
        placed [moved] = e;         //  Into its tier's list below, with the others
        if (!entry->in_policy)
            kvt_prefix_index_policy_insert (self, e,
                                            tier > old_tier? KVT_POLICY_BLOCK_DEMOTED:
                                            tier < old_tier? KVT_POLICY_BLOCK_HIT: 0);
        moved++;
    }
    s_list_insert_batch (self, placed, moved);
    free (placed);
    kvt_prefix_index_policy_flush (self);
    kvt_actor_count (self->actor, "moved", moved);
    s_update_gauges (self);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_MOVE_OK);
    kvt_msg_set_u64 (reply, KVT_IDX_MOVE_OK_MOVED, moved);
    kvt_actor_mark (self->actor, "at_move_out");
    return kvt_actor_reply (self->actor, &reply);
}

static int
s_handle_unpin (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_UNPIN_HASHES, &count);
    size_t unpinned = 0;
    for (size_t k = 0; k < count; k++) {
        kvt_prefix_index_prefetch (self, hashes, count, k);
        uint32_t e = hashes [k]? kvt_prefix_index_find (self, hashes [k]): KVT_PREFIX_INDEX_NIL;
        if (e != KVT_PREFIX_INDEX_NIL && self->entries [e].pins > 0) {
            self->entries [e].pins--;
            //  Its promoter may not be the only pin holder (a mover that has
            //  not unpinned yet, a prefetch's staging pin): the mark goes
            //  with the last pin, or at IDX_MOVE
            if (self->entries [e].pins == 0)
                self->entries [e].promoting = false;
            if (self->entries [e].moving) {
                //  A mover that gave up unpins: the block stays where it
                //  was, so its tier's policy gets it back
                self->entries [e].moving = false;
                if (!self->entries [e].in_policy)
                    kvt_prefix_index_policy_insert (self, e, 0);
            }
            unpinned++;
        }
    }
    kvt_prefix_index_policy_flush (self);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_UNPIN_OK);
    kvt_msg_set_u64 (reply, KVT_IDX_UNPIN_OK_UNPINNED, unpinned);
    return kvt_actor_reply (self->actor, &reply);
}

static int
s_handle_remove (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_REMOVE_HASHES, &count);
    uint64_t *tiers = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    uint64_t *slots = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    size_t removed = 0;
    for (size_t k = 0; k < count; k++) {
        kvt_prefix_index_prefetch (self, hashes, count, k);
        uint32_t e = hashes [k]? kvt_prefix_index_find (self, hashes [k]): KVT_PREFIX_INDEX_NIL;
        if (e == KVT_PREFIX_INDEX_NIL) {
            tiers [k] = KVT_TIER_NONE;
            slots [k] = 0;
            continue;
        }
        tiers [k] = self->entries [e].tier;
        slots [k] = self->entries [e].slot;
        kvt_prefix_index_ghost_t *ghost = s_ghost (self, hashes [k]);
        ghost->hash = hashes [k];
        ghost->offers = self->entries [e].offers;
        kvt_prefix_index_policy_evict (self, e);
        s_list_unlink (self, e);
        s_table_remove (self, hashes [k]);
        self->entries [e].hash = 0;
        self->free_entries [self->free_count++] = e;
        removed++;
    }
    kvt_prefix_index_policy_flush (self);
    kvt_actor_count (self->actor, "removed", removed);
    s_update_gauges (self);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_REMOVE_OK);
    kvt_msg_set_array (reply, KVT_IDX_REMOVE_OK_TIERS, tiers, count);
    kvt_msg_set_array (reply, KVT_IDX_REMOVE_OK_SLOTS, slots, count);
    free (tiers);
    free (slots);
    return kvt_actor_reply (self->actor, &reply);
}

const kvt_actor_def_t kvt_prefix_index_def = {
    .name = "prefix_index",
    .create = s_self_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .handlers = {
        [KVT_MSG_IDX_MATCH]   = s_handle_match,
        [KVT_MSG_IDX_MATCH_PARTS] = s_handle_match_parts,
        [KVT_MSG_IDX_INSERT]  = s_handle_insert,
        [KVT_MSG_IDX_MOVE]    = s_handle_move,
        [KVT_MSG_IDX_UNPIN]   = s_handle_unpin,
        [KVT_MSG_IDX_VICTIMS] = kvt_prefix_index_handle_victims,
        [KVT_MSG_IDX_REMOVE]  = s_handle_remove,
        [KVT_MSG_IDX_CLAIM]   = kvt_prefix_index_handle_claim,
    },
};
