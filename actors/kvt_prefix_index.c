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
    here: migration/policy names it (a built-in such as "lru", "plugin:PATH"
    or PATH.so for a shared object, or "remote:ENDPOINT" for a process of
    any language; actors/policies/POLICIES.md), migration/policy_options
    passes its options. The index hosts it, not the migration actor,
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
    report is about to be freed; the request recomputes from there.
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
@end
*/

#include "kvt_classes.h"
#include "kvt_actors.h"
#include "kvt_policy.h"
#include "kvt_policy_remote.h"

#define S_NIL UINT32_MAX            //  No entry
#define S_PENDING 4096              //  Requests whose next block's depth we remember
#define S_MAX_CANDIDATES 65536      //  Most candidates one remote victims call sends

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
    bool in_policy;                 //  Its tier's policy was told it is cached there
} s_entry_t;

//  Where a request's first uncached block sits: IDX_INSERT carries only
//  the new blocks, so IDX_MATCH leaves their starting depth here.
typedef struct {
    uint64_t hash;                  //  First block the match did not find; 0 = empty
    uint64_t parent;                //  The block before it; 0 = none
    uint32_t depth;                 //  Its position in the request
} s_pending_t;

//  A dropped block, remembered so that its next insert counts as an offer.
typedef struct {
    uint64_t hash;                  //  Hash of a removed block; 0 = empty
    uint32_t offers;                //  Its offers when it was removed
} s_ghost_t;

typedef struct {
    uint32_t head, tail;            //  Oldest and newest entries
    uint64_t count;                 //  Entries on the list
} s_list_t;

typedef struct {
    kvt_actor_t *actor;             //  Our skeleton
    uint64_t max_blocks;            //  From config
    s_entry_t *entries;             //  Entry pool
    uint32_t *free_entries;         //  Stack of unused entry numbers
    uint64_t free_count;            //  Entries on that stack
    uint32_t *table;                //  Open addressing: entry number or S_NIL
    uint64_t table_mask;            //  Table size - 1 (a power of two)
    s_list_t lists [KVT_TIER_COUNT];
    uint64_t clock;                 //  Logical time
    uint64_t requests;              //  Requests begun (IDX_MATCH with pin): policy 'now'
    uint32_t block_tokens;          //  From model/block_tokens, told to policies
    char *policy_name;              //  migration/policy, owned copy
    char *policy_options;           //  migration/policy_options, owned copy
    int policy_timeout_ms;          //  migration/policy_timeout_ms
    int policy_retry_ms;            //  migration/policy_retry_ms
    uint64_t capacity [KVT_TIER_COUNT];         //  Blocks each tier holds, from config
    kvt_policy_t *policies [KVT_TIER_COUNT];    //  One per tier; NULL when remote
    kvt_policy_remote_t *remote;    //  Outside-process policy, or NULL
    s_pending_t pending [S_PENDING];    //  Depth of the next insert, by first hash
    s_ghost_t *ghosts;              //  Direct-mapped history of dropped blocks
    uint64_t ghost_mask;            //  Ghost table size - 1 (a power of two)
} self_t;

//  --------------------------------------------------------------------------
//  Hash table with linear probing and backward-shift deletion (no
//  tombstones, so lookups never slow down with churn).

static uint64_t
s_bucket (const self_t *self, uint64_t hash)
{
    return (hash * 0x9e3779b97f4a7c15ULL >> 17) & self->table_mask;
}

//  The ghost history's entry for 'hash'.
static s_ghost_t *
s_ghost (self_t *self, uint64_t hash)
{
    return &self->ghosts [(hash * 0x9e3779b97f4a7c15ULL >> 23) & self->ghost_mask];
}

static uint32_t
s_find (const self_t *self, uint64_t hash)
{
    for (uint64_t b = s_bucket (self, hash); ; b = (b + 1) & self->table_mask) {
        uint32_t e = self->table [b];
        if (e == S_NIL || self->entries [e].hash == hash)
            return e;
    }
}

static void
s_table_insert (self_t *self, uint32_t entry)
{
    uint64_t b = s_bucket (self, self->entries [entry].hash);
    while (self->table [b] != S_NIL)
        b = (b + 1) & self->table_mask;
    self->table [b] = entry;
}

static void
s_table_remove (self_t *self, uint64_t hash)
{
    uint64_t b = s_bucket (self, hash);
    while (self->entries [self->table [b]].hash != hash)
        b = (b + 1) & self->table_mask;
    self->table [b] = S_NIL;
    //  Shift back later entries of the run that could live at b
    for (uint64_t next = (b + 1) & self->table_mask; self->table [next] != S_NIL;
         next = (next + 1) & self->table_mask) {
        uint64_t home = s_bucket (self, self->entries [self->table [next]].hash);
        bool movable = b <= next? (home <= b || home > next): (home <= b && home > next);
        if (movable) {
            self->table [b] = self->table [next];
            self->table [next] = S_NIL;
            b = next;
        }
    }
}

//  --------------------------------------------------------------------------
//  Per-tier LRU lists

static void
s_list_unlink (self_t *self, uint32_t e)
{
    s_entry_t *entry = &self->entries [e];
    s_list_t *list = &self->lists [entry->tier];
    if (entry->prev != S_NIL)
        self->entries [entry->prev].next = entry->next;
    else
        list->head = entry->next;
    if (entry->next != S_NIL)
        self->entries [entry->next].prev = entry->prev;
    else
        list->tail = entry->prev;
    entry->prev = entry->next = S_NIL;
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
    s_entry_t *entry = &self->entries [e];
    s_list_t *list = &self->lists [entry->tier];
    uint32_t after = list->tail;
    while (after != S_NIL && self->entries [after].last_use > entry->last_use)
        after = self->entries [after].prev;
    entry->prev = after;
    entry->next = after == S_NIL? list->head: self->entries [after].next;
    if (entry->prev != S_NIL)
        self->entries [entry->prev].next = e;
    else
        list->head = e;
    if (entry->next != S_NIL)
        self->entries [entry->next].prev = e;
    else
        list->tail = e;
    list->count++;
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
//  The tiers' policies: every call to a policy object, or every event to
//  a remote one, goes through these four functions.

//  What the policy learns about entry 'e' now.
static kvt_policy_block_t
s_policy_block (const self_t *self, uint32_t e, uint32_t flags)
{
    const s_entry_t *entry = &self->entries [e];
    return (kvt_policy_block_t) {
        .id = entry->hash,
        .parent = entry->parent? entry->parent: KVT_POLICY_NO_PARENT,
        .depth = entry->depth,
        .flags = flags,
        .sharers = entry->pins,
        .block_tokens = self->block_tokens,
        .now = (int64_t) self->requests,
        .next_use = KVT_POLICY_UNKNOWN
    };
}

//  Entry 'e' now lives in its tier: tell that tier's policy, with the
//  KVT_POLICY_BLOCK_* 'flags'.
static void
s_policy_insert (self_t *self, uint32_t e, uint32_t flags)
{
    s_entry_t *entry = &self->entries [e];
    assert (!entry->in_policy);
    entry->in_policy = true;
    if (self->remote) {
        kvt_policy_remote_event (self->remote, KVT_POLICY_EVENT_INSERT, entry->tier,
                                 entry->hash, entry->parent, entry->depth);
        return;
    }
    kvt_policy_t *policy = self->policies [entry->tier];
    const kvt_policy_ops_t *ops = kvt_policy_ops (policy);
    void *state = kvt_policy_state (policy);
    kvt_policy_block_t block = s_policy_block (self, e, flags);
    //  Admission is asked so that policies learn from offers; the bytes
    //  are already in the tier, so a "no" is only counted (#5: declining
    //  belongs to the migration actor)
    if (ops->admit && !ops->admit (state, &block))
        kvt_actor_count (self->actor, "policy_would_decline", 1);
    ops->on_insert (state, &block);
}

//  Cached entry 'e' was used again, as 'block' (a pointer into the array
//  given to begin_request).
static void
s_policy_access (self_t *self, uint32_t e, const kvt_policy_block_t *block)
{
    s_entry_t *entry = &self->entries [e];
    if (!entry->in_policy)
        return;
    if (self->remote)
        kvt_policy_remote_event (self->remote, KVT_POLICY_EVENT_ACCESS, entry->tier,
                                 entry->hash, entry->parent, block->depth);
    else {
        kvt_policy_t *policy = self->policies [entry->tier];
        kvt_policy_ops (policy)->on_access (kvt_policy_state (policy), block);
    }
}

//  Entry 'e' leaves (or is about to leave) its tier: tell its policy once.
static void
s_policy_evict (self_t *self, uint32_t e)
{
    s_entry_t *entry = &self->entries [e];
    if (!entry->in_policy)
        return;
    entry->in_policy = false;
    if (self->remote)
        kvt_policy_remote_event (self->remote, KVT_POLICY_EVENT_EVICT, entry->tier,
                                 entry->hash, 0, 0);
    else {
        kvt_policy_t *policy = self->policies [entry->tier];
        kvt_policy_ops (policy)->on_evict (kvt_policy_state (policy), entry->hash);
    }
}

//  End of one index request: a remote policy gets its events, never
//  waiting. Dropped events are counted; the candidates of the next
//  victims call make up for them.
static void
s_policy_flush (self_t *self)
{
    if (!self->remote)
        return;
    size_t queued = kvt_policy_remote_queued (self->remote);
    if (kvt_policy_remote_flush (self->remote, self->requests) < 0)
        kvt_actor_count (self->actor, "policy_events_dropped", queued);
}

//  Create the tiers' policies from migration/policy. Returns 0 or
//  KVT_ECONFIG (logged, naming the key).
static int
s_policy_start (self_t *self)
{
    const char *name = self->policy_name;
    if (strncmp (name, "remote:", 7) == 0) {
        self->remote = kvt_policy_remote_new (name + 7, self->policy_timeout_ms,
                                              self->policy_retry_ms);
        if (!self->remote) {
            kvt_log_error ("prefix_index: migration/policy: bad endpoint in '%s'", name);
            return KVT_ECONFIG;
        }
        return 0;
    }
    char *spec = NULL;
    size_t length = strlen (name);
    if (strncmp (name, "plugin:", 7) != 0 && length > 3 && streq (name + length - 3, ".so"))
        spec = zsys_sprintf ("plugin:%s", name);
    for (int tier = 0; tier < KVT_TIER_COUNT; tier++) {
        self->policies [tier] = kvt_policy_new (spec? spec: name,
                                                (size_t) self->capacity [tier],
                                                *self->policy_options? self->policy_options: NULL);
        if (!self->policies [tier]) {
            kvt_log_error ("prefix_index: migration/policy: cannot use '%s' (options '%s')",
                           name, self->policy_options);
            zstr_free (&spec);
            return KVT_ECONFIG;
        }
    }
    zstr_free (&spec);
    return 0;
}

//  --------------------------------------------------------------------------
//  Life cycle

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->max_blocks = (uint64_t) kvt_config_int (config, "prefix_index/max_blocks");
    for (int t = 0; t < KVT_TIER_COUNT; t++)
        self->lists [t].head = self->lists [t].tail = S_NIL;
    self->block_tokens = (uint32_t) kvt_config_int (config, "model/block_tokens");
    self->policy_name = strdup (kvt_config_str (config, "migration/policy"));
    self->policy_options = strdup (kvt_config_str (config, "migration/policy_options"));
    if (!self->policy_name || !self->policy_options)
        abort ();
    self->policy_timeout_ms = (int) kvt_config_int (config, "migration/policy_timeout_ms");
    self->policy_retry_ms = (int) kvt_config_int (config, "migration/policy_retry_ms");
    self->capacity [KVT_TIER_GPU] = (uint64_t) kvt_config_int (config, "tier_gpu/capacity_blocks");
    self->capacity [KVT_TIER_HOST] = (uint64_t) kvt_config_int (config, "tier_host/capacity_blocks");
    self->capacity [KVT_TIER_NVME] = (uint64_t) kvt_config_int (config, "tier_nvme/capacity_blocks");
    return self;
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        for (int tier = 0; tier < KVT_TIER_COUNT; tier++)
            kvt_policy_destroy (&self->policies [tier]);
        kvt_policy_remote_destroy (&self->remote);
        free (self->policy_name);
        free (self->policy_options);
        free (self->entries);
        free (self->free_entries);
        free (self->table);
        free (self->ghosts);
        free (self);
        *self_p = NULL;
    }
}

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    if (self->max_blocks >= S_NIL) {
        kvt_log_error ("prefix_index: max_blocks %" PRIu64 " is too large", self->max_blocks);
        return KVT_ECONFIG;
    }
    uint64_t table_size = 16;
    while (table_size < self->max_blocks * 2)   //  Load factor <= 0.5
        table_size *= 2;
    self->entries = (s_entry_t *) calloc (self->max_blocks, sizeof (s_entry_t));
    self->free_entries = (uint32_t *) malloc (self->max_blocks * sizeof (uint32_t));
    self->table = (uint32_t *) malloc (table_size * sizeof (uint32_t));
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
    self->ghosts = (s_ghost_t *) calloc (ghost_size, sizeof (s_ghost_t));
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
    return s_policy_start (self);
}

//  --------------------------------------------------------------------------
//  Handlers

static bool
s_valid_tier (uint64_t tier)
{
    return tier < KVT_TIER_COUNT;
}

//  Slot of 'hash' in the pending table.
static s_pending_t *
s_pending (self_t *self, uint64_t hash)
{
    return &self->pending [(hash * 0x9e3779b97f4a7c15ULL >> 40) % S_PENDING];
}

//  A request began with 'matched' of its 'count' blocks cached ('found'
//  holds their entries): tell the policies, and remember where its first
//  new block sits for the IDX_INSERT that follows.
static void
s_policy_request (self_t *self, const uint64_t *hashes, size_t count, size_t matched,
                  const uint32_t *found)
{
    self->requests++;
    if (matched < count && hashes [matched]) {
        s_pending_t *pending = s_pending (self, hashes [matched]);
        pending->hash = hashes [matched];
        pending->parent = matched? hashes [matched - 1]: 0;
        pending->depth = (uint32_t) matched;
    }
    kvt_policy_block_t *blocks = (kvt_policy_block_t *)
        kvt_zmalloc ((count + 1) * sizeof (kvt_policy_block_t));
    for (size_t k = 0; k < count; k++) {
        blocks [k] = (kvt_policy_block_t) {
            .id = hashes [k],
            .parent = k? hashes [k - 1]: KVT_POLICY_NO_PARENT,
            .depth = (uint32_t) k,
            .flags = k < matched? KVT_POLICY_BLOCK_HIT: 0,
            .sharers = k < matched? self->entries [found [k]].pins: 0,
            .block_tokens = self->block_tokens,
            .now = (int64_t) self->requests,
            .next_use = KVT_POLICY_UNKNOWN
        };
        if (k < matched) {          //  The request tells us its place for sure
            self->entries [found [k]].parent = k? hashes [k - 1]: 0;
            self->entries [found [k]].depth = (uint32_t) k;
        }
    }
    //  The request is a GPU tier request: only that tier's policy sees it
    //  begin and end; a hit on a lower tier is an access there
    kvt_policy_t *gpu = self->policies [KVT_TIER_GPU];
    const kvt_policy_ops_t *ops = gpu? kvt_policy_ops (gpu): NULL;
    if (ops && ops->begin_request)
        ops->begin_request (kvt_policy_state (gpu), blocks, count, matched);
    for (size_t k = 0; k < matched; k++)
        s_policy_access (self, found [k], &blocks [k]);
    if (ops && ops->end_request)
        ops->end_request (kvt_policy_state (gpu));
    free (blocks);
}

static int
s_handle_match (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_MATCH_HASHES, &count);
    bool pin = kvt_msg_u64 (*msg_p, KVT_IDX_MATCH_PIN) != 0;
    uint64_t *tiers = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    uint64_t *slots = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    uint32_t *found = (uint32_t *) kvt_zmalloc ((count + 1) * sizeof (uint32_t));
    size_t matched = 0;
    while (matched < count) {
        uint32_t e = hashes [matched]? s_find (self, hashes [matched]): S_NIL;
        if (e == S_NIL)
            break;
        if (self->entries [e].moving) {
            //  Its bytes are on their way to another slot: the location we
            //  know is about to be stale. Cut the prefix here (recompute)
            //  rather than hand out a slot that migration will free.
            kvt_actor_count (self->actor, "match_cut_moving", 1);
            break;
        }
        tiers [matched] = self->entries [e].tier;
        slots [matched] = self->entries [e].slot;
        found [matched] = e;
        if (pin) {
            self->entries [e].pins++;
            self->entries [e].reuses++;
            s_touch (self, e);      //  A lookup alone does not count as a use
        }
        matched++;
    }
    if (pin) {
        s_policy_request (self, hashes, count, matched, found);
        s_policy_flush (self);
    }
    kvt_actor_count (self->actor, "matched_blocks", matched);
    kvt_actor_count (self->actor, "asked_blocks", count);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_MATCH_OK);
    kvt_msg_set_array (reply, KVT_IDX_MATCH_OK_TIERS, tiers, matched);
    kvt_msg_set_array (reply, KVT_IDX_MATCH_OK_SLOTS, slots, matched);
    free (tiers);
    free (slots);
    free (found);
    return kvt_actor_reply (self->actor, &reply);
}

static int
s_handle_insert (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count, slot_count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_INSERT_HASHES, &count);
    const uint64_t *slots = kvt_msg_array (*msg_p, KVT_IDX_INSERT_SLOTS, &slot_count);
    uint64_t tier = kvt_msg_u64 (*msg_p, KVT_IDX_INSERT_TIER);
    if (slot_count != count || !s_valid_tier (tier))
        return -EINVAL;
    for (size_t k = 0; k < count; k++)
        if (hashes [k] == 0)
            return -EINVAL;         //  0 means "no parent", never a block
    //  The blocks continue the request whose match left this note; without
    //  one (it was overwritten, or nobody matched) they start a sequence
    uint64_t first_parent = 0;
    uint32_t first_depth = 0;
    if (count) {
        s_pending_t *pending = s_pending (self, hashes [0]);
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
        uint32_t known = s_find (self, hashes [k]);
        if (known != S_NIL)         //  Its place is known (a scheduler that chose to
            depth = self->entries [known].depth;    //  recompute cached blocks sends them)
        if (known != S_NIL || self->free_count == 0) {
            duplicates [duplicate_count++] = k;     //  Caller frees that slot
            if (self->free_count == 0)
                kvt_actor_count (self->actor, "full", 1);
            continue;
        }
        uint32_t e = self->free_entries [--self->free_count];
        self->entries [e] = (s_entry_t) {
            .hash = hashes [k],
            .slot = slots [k],
            .last_use = ++self->clock,
            .parent = k? hashes [k - 1]: first_parent,
            .prev = S_NIL,
            .next = S_NIL,
            .depth = depth,
            .tier = (uint8_t) tier
        };
        s_ghost_t *ghost = s_ghost (self, hashes [k]);
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
        s_policy_insert (self, e, 0);
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
    s_policy_flush (self);
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
    if (slot_count != count || !s_valid_tier (tier))
        return -EINVAL;
    size_t moved = 0;
    for (size_t k = 0; k < count; k++) {
        uint32_t e = hashes [k]? s_find (self, hashes [k]): S_NIL;
        if (e == S_NIL)
            continue;
        s_entry_t *entry = &self->entries [e];
        uint8_t old_tier = entry->tier;
        if (old_tier != tier)       //  A victim was told already; a promoted block now
            s_policy_evict (self, e);
        s_list_unlink (self, e);
        entry->tier = (uint8_t) tier;
        entry->slot = slots [k];
        entry->moving = false;
        s_list_insert (self, e);
        if (!entry->in_policy)
            s_policy_insert (self, e, tier > old_tier? KVT_POLICY_BLOCK_DEMOTED:
                                      tier < old_tier? KVT_POLICY_BLOCK_HIT: 0);
        moved++;
    }
    s_policy_flush (self);
    kvt_actor_count (self->actor, "moved", moved);
    s_update_gauges (self);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_MOVE_OK);
    kvt_msg_set_u64 (reply, KVT_IDX_MOVE_OK_MOVED, moved);
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
        uint32_t e = hashes [k]? s_find (self, hashes [k]): S_NIL;
        if (e != S_NIL && self->entries [e].pins > 0) {
            self->entries [e].pins--;
            if (self->entries [e].moving) {
                //  A mover that gave up unpins: the block stays where it
                //  was, so its tier's policy gets it back
                self->entries [e].moving = false;
                if (!self->entries [e].in_policy)
                    s_policy_insert (self, e, 0);
            }
            unpinned++;
        }
    }
    s_policy_flush (self);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_UNPIN_OK);
    kvt_msg_set_u64 (reply, KVT_IDX_UNPIN_OK_UNPINNED, unpinned);
    return kvt_actor_reply (self->actor, &reply);
}

//  The victims being gathered by one IDX_VICTIMS
typedef struct {
    uint64_t *hashes;               //  Victims chosen so far
    uint64_t *slots;                //  Their slots
    uint64_t *reuses;               //  How often each was found cached
    uint64_t *offers;               //  How often each was offered again after a drop
    size_t found;                   //  Entries used
    size_t want;                    //  Entries wanted
} s_victims_t;

//  Hand out entry 'e' as a victim: pinned and moving until IDX_MOVE, and
//  gone from its tier's policy.
static void
s_victim_take (self_t *self, s_victims_t *victims, uint32_t e)
{
    s_entry_t *entry = &self->entries [e];
    assert (!entry->pins && !entry->moving);
    s_policy_evict (self, e);
    entry->pins++;                  //  The mover unpins after IDX_MOVE
    entry->moving = true;
    victims->hashes [victims->found] = entry->hash;
    victims->reuses [victims->found] = entry->reuses;
    victims->offers [victims->found] = entry->offers;
    victims->slots [victims->found++] = entry->slot;
}

//  Is 'hash' a block of 'tier' that may be handed out? Returns its entry
//  or S_NIL.
static uint32_t
s_victim_valid (self_t *self, uint64_t tier, uint64_t hash)
{
    uint32_t e = hash? s_find (self, hash): S_NIL;
    if (e == S_NIL || self->entries [e].tier != tier
    ||  self->entries [e].pins || self->entries [e].moving)
        return S_NIL;
    return e;
}

//  Ask the tier's policy object; stops at the first answer it cannot use.
//  Visits at most (blocks in the tier + 1) answers: each one either is
//  handed out or, pinned, leaves the policy until the end of the call.
static void
s_victims_from_policy (self_t *self, uint64_t tier, s_victims_t *victims)
{
    kvt_policy_t *policy = self->policies [tier];
    const kvt_policy_ops_t *ops = kvt_policy_ops (policy);
    void *state = kvt_policy_state (policy);
    kvt_policy_block_t incoming = {
        .id = 0, .parent = KVT_POLICY_NO_PARENT, .block_tokens = self->block_tokens,
        .now = (int64_t) self->requests, .next_use = KVT_POLICY_UNKNOWN
    };
    uint32_t *set_aside = NULL;
    size_t aside_count = 0;
    uint64_t budget = self->lists [tier].count + 1;
    while (victims->found < victims->want && budget-- > 0) {
        uint64_t hash = ops->choose_victim (state, &incoming);
        if (hash == incoming.id) {
            kvt_actor_count (self->actor, "policy_declined", 1);
            break;
        }
        uint32_t e = s_find (self, hash);
        if (e == S_NIL || self->entries [e].tier != tier || !self->entries [e].in_policy) {
            kvt_actor_count (self->actor, "policy_unusable", 1);
            break;
        }
        if (self->entries [e].pins) {
            //  In use: out of the policy's sight until this call ends
            if (!set_aside)         //  At most one per block of the tier
                set_aside = (uint32_t *) kvt_zmalloc ((self->lists [tier].count + 1)
                                                      * sizeof (uint32_t));
            s_policy_evict (self, e);
            set_aside [aside_count++] = e;
            kvt_actor_count (self->actor, "policy_skipped_pinned", 1);
            continue;
        }
        s_victim_take (self, victims, e);
    }
    for (size_t k = 0; k < aside_count; k++)
        s_policy_insert (self, set_aside [k], 0);
    free (set_aside);
}

//  Ask the remote policy, with the tier's unpinned blocks as candidates.
static void
s_victims_from_remote (self_t *self, uint64_t tier, s_victims_t *victims)
{
    size_t room = self->lists [tier].count < S_MAX_CANDIDATES
                ? (size_t) self->lists [tier].count: S_MAX_CANDIDATES;
    uint64_t *candidates = (uint64_t *) kvt_zmalloc ((room + 1) * sizeof (uint64_t));
    size_t candidate_count = 0;
    for (uint32_t e = self->lists [tier].head; e != S_NIL && candidate_count < room;
         e = self->entries [e].next)
        if (!self->entries [e].pins && !self->entries [e].moving)
            candidates [candidate_count++] = self->entries [e].hash;
    if (candidate_count == 0) {     //  All pinned: nothing to choose from
        free (candidates);
        return;
    }
    uint64_t *chosen = (uint64_t *) kvt_zmalloc ((victims->want + 1) * sizeof (uint64_t));
    int rc = kvt_policy_remote_victims (self->remote, tier, victims->want, candidates,
                                        candidate_count, chosen, self->requests);
    if (rc == -ETIMEDOUT)
        kvt_actor_count (self->actor, "policy_remote_timeouts", 1);
    else
    if (rc == -EBADMSG)
        kvt_actor_count (self->actor, "policy_remote_garbage", 1);
    else
    if (rc < 0)
        kvt_actor_count (self->actor, "policy_remote_unreachable", 1);
    else
        kvt_actor_count (self->actor, "policy_remote_decisions", 1);
    for (int k = 0; k < rc && victims->found < victims->want; k++) {
        uint32_t e = s_victim_valid (self, tier, chosen [k]);
        if (e == S_NIL)             //  Not a candidate, or named twice
            kvt_actor_count (self->actor, "policy_unusable", 1);
        else
            s_victim_take (self, victims, e);
    }
    free (chosen);
    free (candidates);
}

static int
s_handle_victims (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    uint64_t tier = kvt_msg_u64 (*msg_p, KVT_IDX_VICTIMS_TIER);
    uint64_t want = kvt_msg_u64 (*msg_p, KVT_IDX_VICTIMS_COUNT);
    if (!s_valid_tier (tier))
        return -EINVAL;
    if (want > self->lists [tier].count)
        want = self->lists [tier].count;
    s_victims_t victims = {
        .hashes = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .slots = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .reuses = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .offers = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .want = want
    };
    if (want) {
        kvt_actor_count (self->actor, "policy_decisions", 1);
        if (self->remote)
            s_victims_from_remote (self, tier, &victims);
        else
            s_victims_from_policy (self, tier, &victims);
    }
    //  What the policy did not give comes from the LRU list: oldest first,
    //  skipping pinned and moving blocks
    size_t from_policy = victims.found;
    for (uint32_t e = self->lists [tier].head; e != S_NIL && victims.found < want;
         e = self->entries [e].next)
        if (!self->entries [e].pins && !self->entries [e].moving)
            s_victim_take (self, &victims, e);
    if (victims.found > from_policy) {
        kvt_actor_count (self->actor, "policy_fallbacks", 1);
        kvt_actor_count (self->actor, "policy_fallback_blocks", victims.found - from_policy);
    }
    s_policy_flush (self);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_VICTIMS_OK);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_HASHES, victims.hashes, victims.found);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_SLOTS, victims.slots, victims.found);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_REUSES, victims.reuses, victims.found);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_OFFERS, victims.offers, victims.found);
    free (victims.hashes);
    free (victims.slots);
    free (victims.reuses);
    free (victims.offers);
    return kvt_actor_reply (self->actor, &reply);
}

//  IDX_CLAIM: hand a mover the blocks of the leading cached run of
//  'hashes' that live in 'tier', unpinned and not moving (at most
//  'max_blocks', first ones first), pinned and moving as victims are.
static int
s_handle_claim (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_CLAIM_HASHES, &count);
    uint64_t tier = kvt_msg_u64 (*msg_p, KVT_IDX_CLAIM_TIER);
    uint64_t max_blocks = kvt_msg_u64 (*msg_p, KVT_IDX_CLAIM_MAX_BLOCKS);
    if (!s_valid_tier (tier))
        return -EINVAL;
    s_victims_t claimed = {
        .hashes = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .slots = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .reuses = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .offers = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .want = count < max_blocks? count: (size_t) max_blocks
    };
    for (size_t k = 0; k < count && claimed.found < claimed.want; k++) {
        uint32_t e = hashes [k]? s_find (self, hashes [k]): S_NIL;
        if (e == S_NIL || self->entries [e].moving)
            break;                  //  Where IDX_MATCH would cut the prefix
        if (self->entries [e].tier == tier && !self->entries [e].pins)
            s_victim_take (self, &claimed, e);
    }
    s_policy_flush (self);
    kvt_actor_count (self->actor, "claimed", claimed.found);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_CLAIM_OK);
    kvt_msg_set_array (reply, KVT_IDX_CLAIM_OK_HASHES, claimed.hashes, claimed.found);
    kvt_msg_set_array (reply, KVT_IDX_CLAIM_OK_SLOTS, claimed.slots, claimed.found);
    free (claimed.hashes);
    free (claimed.slots);
    free (claimed.reuses);
    free (claimed.offers);
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
        uint32_t e = hashes [k]? s_find (self, hashes [k]): S_NIL;
        if (e == S_NIL) {
            tiers [k] = KVT_TIER_NONE;
            slots [k] = 0;
            continue;
        }
        tiers [k] = self->entries [e].tier;
        slots [k] = self->entries [e].slot;
        s_ghost_t *ghost = s_ghost (self, hashes [k]);
        ghost->hash = hashes [k];
        ghost->offers = self->entries [e].offers;
        s_policy_evict (self, e);
        s_list_unlink (self, e);
        s_table_remove (self, hashes [k]);
        self->entries [e].hash = 0;
        self->free_entries [self->free_count++] = e;
        removed++;
    }
    s_policy_flush (self);
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
        [KVT_MSG_IDX_INSERT]  = s_handle_insert,
        [KVT_MSG_IDX_MOVE]    = s_handle_move,
        [KVT_MSG_IDX_UNPIN]   = s_handle_unpin,
        [KVT_MSG_IDX_VICTIMS] = s_handle_victims,
        [KVT_MSG_IDX_REMOVE]  = s_handle_remove,
        [KVT_MSG_IDX_CLAIM]   = s_handle_claim,
    },
};
