/*  =========================================================================
    kvt_policy_util - id map, node lists, keyed heap and id ring shared by
    policies

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Policies keep a node per cached (or remembered) block. kvt_idmap maps
    a 64-bit block id to a 32-bit node index with linear probing and
    backward-shift deletion (no tombstones, so a long run of inserts and
    evictions never degrades). kvt_keyheap is an indexed binary min-heap
    of node indices ordered by a (major, minor) key pair, with O(log n)
    update and remove. Built on them: kvt_nodelist, a doubly-linked
    recency list threaded through the records of a node pool (static
    inline: it is on every access); kvt_keyorder, block ids ranked by a
    key (the heap-ordered policies); kvt_idring, the last N ids seen, for
    ghosts and offer histories. All are embedded structs (_init/_fini).
@end
*/

#ifndef KVT_POLICY_UTIL_H_INCLUDED
#define KVT_POLICY_UTIL_H_INCLUDED

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_IDMAP_NONE UINT32_MAX   //  "no node" (lookup miss, empty link)

typedef struct {
    uint64_t key;                   //  Block id, valid where val != NONE
    uint32_t val;                   //  Node index, or KVT_IDMAP_NONE when free
    uint32_t spare;                 //  Padding (keeps a slot in one cache line)
} kvt_idmap_slot_t;

typedef struct {
    kvt_idmap_slot_t *slots;        //  Key and value side by side: one miss per probe
    size_t mask;                    //  Slots - 1 (slots is a power of two)
    size_t count;                   //  Entries in use
} kvt_idmap_t;

//  Init an empty map sized for about 'expected' entries; fini frees it.
void
    kvt_idmap_init (kvt_idmap_t *self, size_t expected);
void
    kvt_idmap_fini (kvt_idmap_t *self);

//  Node index for 'id', or KVT_IDMAP_NONE.
uint32_t
    kvt_idmap_get (const kvt_idmap_t *self, uint64_t id);

//  Set 'id' -> 'value' (insert or replace); grows as needed.
void
    kvt_idmap_put (kvt_idmap_t *self, uint64_t id, uint32_t value);

//  Remove 'id'; returns its value or KVT_IDMAP_NONE if it was absent.
uint32_t
    kvt_idmap_remove (kvt_idmap_t *self, uint64_t id);

//  Init 'self' as a copy of 'source' (a policy's clone copies its maps).
void
    kvt_idmap_copy (kvt_idmap_t *self, const kvt_idmap_t *source);

//  A pool of per-block nodes: 'items' holds node_max records of
//  item_bytes each (zeroed when made), unused ones on a free stack. Taking
//  from an empty pool doubles it, so 'items' may move: re-read it after
//  every take. Every policy keeps its blocks in one of these.
typedef struct {
    void *items;                    //  node_max records, owned
    size_t item_bytes;              //  Bytes per record
    uint32_t *free_nodes;           //  Stack of unused node indices
    size_t free_count;              //  Entries in free_nodes
    size_t node_max;                //  Records in items
} kvt_nodepool_t;

//  Init a pool of 'count' free records of 'item_bytes'; fini frees it.
void
    kvt_nodepool_init (kvt_nodepool_t *self, size_t count, size_t item_bytes);
void
    kvt_nodepool_fini (kvt_nodepool_t *self);

//  Take a free node (lowest first), doubling the pool when it is empty.
uint32_t
    kvt_nodepool_take (kvt_nodepool_t *self);

//  Give 'node' back.
void
    kvt_nodepool_put (kvt_nodepool_t *self, uint32_t node);

//  Init 'self' as a copy of 'source': the same records at the same
//  indices, the same free nodes.
void
    kvt_nodepool_copy (kvt_nodepool_t *self, const kvt_nodepool_t *source);

//  A record that goes on a node list starts with its link. Links are node
//  indices, not pointers, so they stay valid when the pool grows.
typedef struct {
    uint32_t prev;                  //  Towards the front (newer), or KVT_IDMAP_NONE
    uint32_t next;                  //  Towards the back (older), or KVT_IDMAP_NONE
} kvt_nodelink_t;

//  A doubly-linked list of records of one node pool: front is the newest
//  end, back the oldest. A record is on at most one list at a time.
typedef struct {
    uint32_t front;                 //  Newest node, or KVT_IDMAP_NONE
    uint32_t back;                  //  Oldest node, or KVT_IDMAP_NONE
    size_t count;                   //  Nodes on the list
} kvt_nodelist_t;

//  --------------------------------------------------------------------------
//  Init an empty list.

static inline void
kvt_nodelist_init (kvt_nodelist_t *self)
{
    self->front = self->back = KVT_IDMAP_NONE;
    self->count = 0;
}

//  --------------------------------------------------------------------------
//  The link of record 'node' of 'pool' (the first member of each record).

static inline kvt_nodelink_t *
kvt_nodelist_link (const kvt_nodepool_t *pool, uint32_t node)
{
    assert (node < pool->node_max);
    return (kvt_nodelink_t *) ((char *) pool->items + (size_t) node * pool->item_bytes);
}

//  --------------------------------------------------------------------------
//  Take 'node' off the list; its own link is left stale.

static inline void
kvt_nodelist_unlink (kvt_nodelist_t *self, const kvt_nodepool_t *pool, uint32_t node)
{
    assert (self->count > 0);
    kvt_nodelink_t *link = kvt_nodelist_link (pool, node);
    if (link->prev != KVT_IDMAP_NONE)
        kvt_nodelist_link (pool, link->prev)->next = link->next;
    else
        self->front = link->next;
    if (link->next != KVT_IDMAP_NONE)
        kvt_nodelist_link (pool, link->next)->prev = link->prev;
    else
        self->back = link->prev;
    self->count--;
}

//  --------------------------------------------------------------------------
//  Put 'node' (on no list) between 'prev' and 'next', neighbours on this
//  list; KVT_IDMAP_NONE for 'prev' means the front, for 'next' the back.

static inline void
kvt_nodelist_insert (kvt_nodelist_t *self, const kvt_nodepool_t *pool,
                     uint32_t prev, uint32_t next, uint32_t node)
{
    kvt_nodelink_t *link = kvt_nodelist_link (pool, node);
    link->prev = prev;
    link->next = next;
    if (prev != KVT_IDMAP_NONE)
        kvt_nodelist_link (pool, prev)->next = node;
    else
        self->front = node;
    if (next != KVT_IDMAP_NONE)
        kvt_nodelist_link (pool, next)->prev = node;
    else
        self->back = node;
    self->count++;
}

//  --------------------------------------------------------------------------
//  Put 'node' (on no list) at the front, as the newest.

static inline void
kvt_nodelist_push_front (kvt_nodelist_t *self, const kvt_nodepool_t *pool, uint32_t node)
{
    kvt_nodelist_insert (self, pool, KVT_IDMAP_NONE, self->front, node);
}

//  --------------------------------------------------------------------------
//  Put 'node' (on no list) right behind 'after', which is on this list.

static inline void
kvt_nodelist_insert_after (kvt_nodelist_t *self, const kvt_nodepool_t *pool,
                           uint32_t after, uint32_t node)
{
    kvt_nodelist_insert (self, pool, after, kvt_nodelist_link (pool, after)->next, node);
}

typedef struct {
    int64_t major;                  //  Compared first
    int64_t minor;                  //  Tie-break
} kvt_heapkey_t;

typedef struct {
    uint32_t *items;                //  Heap array of node indices
    uint32_t *pos;                  //  pos [node] = place in items, or NONE
    kvt_heapkey_t *keys;            //  keys [node]
    size_t count;                   //  Items in the heap
    size_t node_max;                //  Size of pos/keys
} kvt_keyheap_t;

//  Init an empty heap for nodes [0, node_max); fini frees it.
void
    kvt_keyheap_init (kvt_keyheap_t *self, size_t node_max);
void
    kvt_keyheap_fini (kvt_keyheap_t *self);

//  Grow to hold nodes [0, node_max).
void
    kvt_keyheap_reserve (kvt_keyheap_t *self, size_t node_max);

//  Insert 'node' with 'key', or move it if it is already there.
void
    kvt_keyheap_set (kvt_keyheap_t *self, uint32_t node, kvt_heapkey_t key);

//  Remove 'node' if present.
void
    kvt_keyheap_remove (kvt_keyheap_t *self, uint32_t node);

//  Node with the smallest key, or KVT_IDMAP_NONE when empty.
uint32_t
    kvt_keyheap_top (const kvt_keyheap_t *self);

//  True if 'node' is in the heap.
bool
    kvt_keyheap_has (const kvt_keyheap_t *self, uint32_t node);

//  Block ids ranked by a key, smallest first. The policies that rank
//  blocks by a computed key (lru-leaf, token-age, belady, oracle-reuse)
//  keep their blocks in one and differ only in the key they set.
typedef struct {
    kvt_idmap_t map;                //  id -> node
    kvt_keyheap_t heap;             //  Tracked nodes by key
    kvt_nodepool_t pool;            //  Owns the ids: one uint64_t record per node
} kvt_keyorder_t;

//  Init an empty order for about 'capacity' ids (it grows); fini frees it.
void
    kvt_keyorder_init (kvt_keyorder_t *self, size_t capacity);
void
    kvt_keyorder_fini (kvt_keyorder_t *self);

//  --------------------------------------------------------------------------
//  Rank tracked 'node' by 'key' (placing or moving it).

static inline void
kvt_keyorder_set (kvt_keyorder_t *self, uint32_t node, kvt_heapkey_t key)
{
    kvt_keyheap_set (&self->heap, node, key);
}

//  Node of 'id', tracking it first if it is new. A new node is not ranked
//  until kvt_keyorder_set gives it a key.
uint32_t
    kvt_keyorder_track (kvt_keyorder_t *self, uint64_t id);

//  --------------------------------------------------------------------------
//  Node of tracked 'id', or KVT_IDMAP_NONE.

static inline uint32_t
kvt_keyorder_node (const kvt_keyorder_t *self, uint64_t id)
{
    return kvt_idmap_get (&self->map, id);
}

//  Stop tracking 'id'; a no-op if it is not tracked.
void
    kvt_keyorder_remove (kvt_keyorder_t *self, uint64_t id);

//  --------------------------------------------------------------------------
//  Id of tracked 'node'.

static inline uint64_t
kvt_keyorder_id (const kvt_keyorder_t *self, uint32_t node)
{
    assert (node < self->pool.node_max);
    return ((const uint64_t *) self->pool.items) [node];
}

//  Id with the smallest key, or 'otherwise' when none is ranked.
uint64_t
    kvt_keyorder_first_id (const kvt_keyorder_t *self, uint64_t otherwise);

//  The last 'max' ids remembered, oldest forgotten first: a FIFO ring with
//  a map for lookup. An id keeps its slot while it is remembered, so a
//  caller keeps what it knows of each id in an array indexed by slot.
typedef struct {
    kvt_idmap_t map;                //  id -> slot, for the ids remembered
    uint64_t *ids;                  //  ids [slot], oldest at 'next' once full
    size_t max;                     //  Slots
    size_t next;                    //  Slot the next id goes in
    size_t used;                    //  Slots that have held an id
} kvt_idring_t;

//  Init an empty ring of 'max' slots (at least 1); fini frees it.
void
    kvt_idring_init (kvt_idring_t *self, size_t max);
void
    kvt_idring_fini (kvt_idring_t *self);

//  Init 'self' as a copy of 'source'.
void
    kvt_idring_copy (kvt_idring_t *self, const kvt_idring_t *source);

//  --------------------------------------------------------------------------
//  Slot of remembered 'id', or KVT_IDMAP_NONE.

static inline uint32_t
kvt_idring_find (const kvt_idring_t *self, uint64_t id)
{
    return kvt_idmap_get (&self->map, id);
}

//  Remember 'id' in the next slot and return that slot; when the ring is
//  full, the id that slot held is forgotten (unless it was remembered
//  again since, in a newer slot).
uint32_t
    kvt_idring_add (kvt_idring_t *self, uint64_t id);

//  Forget 'id' now (its slot is reused in turn); true if it was remembered.
bool
    kvt_idring_forget (kvt_idring_t *self, uint64_t id);

//  Selftest
int
    kvt_policy_util_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
