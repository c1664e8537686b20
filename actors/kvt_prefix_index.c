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
             IDX_VICTIMS {tier, count} -> IDX_VICTIMS_OK {hashes, slots}
             IDX_REMOVE {hashes}    -> IDX_REMOVE_OK {tiers, slots}
             STATS.
@discuss
    Each tier keeps its blocks on a list in order of last use, oldest at
    the head. IDX_VICTIMS walks from the head, skips pinned blocks, and
    pins what it returns, so a block being moved cannot be matched away or
    chosen twice; the mover unpins it after IDX_MOVE. A block's place on
    its new list after a move keeps its age (sorted insert from the head,
    where demoted blocks belong).
    A victim is marked moving until IDX_MOVE (or the mover's IDX_UNPIN):
    IDX_MATCH cuts a prefix at a moving block, because the slot it would
    report is about to be freed; the request recomputes from there.
    Tiers are exclusive: a block lives in exactly one tier at a time.
    Lookup is an open-addressing hash table: O(1) per hash.
@end
*/

#include "kvt_classes.h"
#include "kvt_actors.h"

#define S_NIL UINT32_MAX            //  No entry

typedef struct {
    uint64_t hash;                  //  Chained block hash; 0 = free entry
    uint64_t slot;                  //  Slot in its tier
    uint64_t last_use;              //  Logical clock of the last match or insert
    uint32_t prev, next;            //  Neighbours on the tier's LRU list
    uint32_t pins;                  //  Holders that need it to stay put
    uint8_t tier;                   //  KVT_TIER_*
    bool moving;                    //  Handed out by IDX_VICTIMS, not yet moved back in
} s_entry_t;

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
} self_t;

//  --------------------------------------------------------------------------
//  Hash table with linear probing and backward-shift deletion (no
//  tombstones, so lookups never slow down with churn).

static uint64_t
s_bucket (const self_t *self, uint64_t hash)
{
    return (hash * 0x9e3779b97f4a7c15ULL >> 17) & self->table_mask;
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

//  Insert keeping the list sorted by last use. Fresh uses go to the tail
//  in O(1); demoted (old) blocks are placed by a walk from the head.
static void
s_list_insert (self_t *self, uint32_t e)
{
    s_entry_t *entry = &self->entries [e];
    s_list_t *list = &self->lists [entry->tier];
    uint32_t after = list->tail;
    if (after != S_NIL && self->entries [after].last_use > entry->last_use) {
        uint32_t before = list->head;
        while (before != S_NIL && self->entries [before].last_use <= entry->last_use)
            before = self->entries [before].next;
        after = before == S_NIL? list->tail: self->entries [before].prev;
    }
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
//  Life cycle

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->max_blocks = (uint64_t) kvt_config_int (config, "prefix_index/max_blocks");
    for (int t = 0; t < KVT_TIER_COUNT; t++)
        self->lists [t].head = self->lists [t].tail = S_NIL;
    return self;
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        free (self->entries);
        free (self->free_entries);
        free (self->table);
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
    self->table_mask = table_size - 1;
    for (uint64_t k = 0; k < self->max_blocks; k++)
        self->free_entries [k] = (uint32_t) (self->max_blocks - 1 - k);
    self->free_count = self->max_blocks;
    s_update_gauges (self);
    return 0;
}

//  --------------------------------------------------------------------------
//  Handlers

static bool
s_valid_tier (uint64_t tier)
{
    return tier < KVT_TIER_COUNT;
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
        if (pin) {
            self->entries [e].pins++;
            s_touch (self, e);      //  A lookup alone does not count as a use
        }
        matched++;
    }
    kvt_actor_count (self->actor, "matched_blocks", matched);
    kvt_actor_count (self->actor, "asked_blocks", count);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_MATCH_OK);
    kvt_msg_set_array (reply, KVT_IDX_MATCH_OK_TIERS, tiers, matched);
    kvt_msg_set_array (reply, KVT_IDX_MATCH_OK_SLOTS, slots, matched);
    free (tiers);
    free (slots);
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
    uint64_t *duplicates = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t));
    size_t duplicate_count = 0, inserted = 0;
    for (size_t k = 0; k < count; k++) {
        if (s_find (self, hashes [k]) != S_NIL || self->free_count == 0) {
            duplicates [duplicate_count++] = k;     //  Caller frees that slot
            if (self->free_count == 0)
                kvt_actor_count (self->actor, "full", 1);
            continue;
        }
        uint32_t e = self->free_entries [--self->free_count];
        self->entries [e] = (s_entry_t) { hashes [k], slots [k], ++self->clock,
                                          S_NIL, S_NIL, 0, (uint8_t) tier, false };
        s_table_insert (self, e);
        s_list_insert (self, e);
        inserted++;
    }
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
        s_list_unlink (self, e);
        self->entries [e].tier = (uint8_t) tier;
        self->entries [e].slot = slots [k];
        self->entries [e].moving = false;
        s_list_insert (self, e);
        moved++;
    }
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
            self->entries [e].moving = false;   //  A mover that gave up unpins
            unpinned++;
        }
    }
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_UNPIN_OK);
    kvt_msg_set_u64 (reply, KVT_IDX_UNPIN_OK_UNPINNED, unpinned);
    return kvt_actor_reply (self->actor, &reply);
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
    uint64_t *hashes = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t));
    uint64_t *slots = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t));
    size_t found = 0;
    for (uint32_t e = self->lists [tier].head; e != S_NIL && found < want;
         e = self->entries [e].next) {
        if (self->entries [e].pins)
            continue;
        self->entries [e].pins++;   //  The mover unpins after IDX_MOVE
        self->entries [e].moving = true;
        hashes [found] = self->entries [e].hash;
        slots [found++] = self->entries [e].slot;
    }
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_VICTIMS_OK);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_HASHES, hashes, found);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_SLOTS, slots, found);
    free (hashes);
    free (slots);
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
        s_list_unlink (self, e);
        s_table_remove (self, hashes [k]);
        self->entries [e].hash = 0;
        self->free_entries [self->free_count++] = e;
        removed++;
    }
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
    },
};
