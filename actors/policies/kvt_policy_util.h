/*  =========================================================================
    kvt_policy_util - id map, node lists and keyed heap shared by policies

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
    update and remove. Both are embedded structs (_init/_fini).
@end
*/

#ifndef KVT_POLICY_UTIL_H_INCLUDED
#define KVT_POLICY_UTIL_H_INCLUDED

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

//  Selftest
int
    kvt_policy_util_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
