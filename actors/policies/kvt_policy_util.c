/*  =========================================================================
    kvt_policy_util - id map, node lists and keyed heap shared by policies

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_policy_util.h"

//  Spread the bits of an id over the table (ids may be dense integers).
static inline size_t
s_slot (uint64_t id, size_t mask)
{
    id ^= id >> 33;
    id *= UINT64_C (0xff51afd7ed558ccd);
    id ^= id >> 33;
    return (size_t) id & mask;
}

//  --------------------------------------------------------------------------
//  Init an empty map sized for about 'expected' entries.

void
kvt_idmap_init (kvt_idmap_t *self, size_t expected)
{
    assert (self);
    size_t slots = 64;
    while (slots < expected * 2)
        slots *= 2;
    self->slots = (kvt_idmap_slot_t *) kvt_zmalloc (slots * sizeof (kvt_idmap_slot_t));
    for (size_t slot = 0; slot < slots; slot++)
        self->slots [slot].val = KVT_IDMAP_NONE;
    self->mask = slots - 1;
    self->count = 0;
}

//  --------------------------------------------------------------------------
//  Free the map; leaves it zeroed.

void
kvt_idmap_fini (kvt_idmap_t *self)
{
    assert (self);
    free (self->slots);
    memset (self, 0, sizeof (*self));
}

//  --------------------------------------------------------------------------
//  Init 'self' as a copy of 'source'.

void
kvt_idmap_copy (kvt_idmap_t *self, const kvt_idmap_t *source)
{
    assert (self && source);
    self->slots = (kvt_idmap_slot_t *) kvt_memdup (source->slots, (source->mask + 1)
                                                   * sizeof (kvt_idmap_slot_t));
    self->mask = source->mask;
    self->count = source->count;
}

//  --------------------------------------------------------------------------
//  Node index for 'id', or KVT_IDMAP_NONE.

uint32_t
kvt_idmap_get (const kvt_idmap_t *self, uint64_t id)
{
    size_t slot = s_slot (id, self->mask);
    while (self->slots [slot].val != KVT_IDMAP_NONE) {
        if (self->slots [slot].key == id)
            return self->slots [slot].val;
        slot = (slot + 1) & self->mask;
    }
    return KVT_IDMAP_NONE;
}

//  Double the table and reinsert every entry.
static void
s_idmap_grow (kvt_idmap_t *self)
{
    kvt_idmap_t bigger;
    kvt_idmap_init (&bigger, (self->mask + 1));
    for (size_t slot = 0; slot <= self->mask; slot++)
        if (self->slots [slot].val != KVT_IDMAP_NONE)
            kvt_idmap_put (&bigger, self->slots [slot].key, self->slots [slot].val);
    kvt_idmap_fini (self);
    *self = bigger;
}

//  --------------------------------------------------------------------------
//  Set 'id' -> 'value' (insert or replace); grows past half full.

void
kvt_idmap_put (kvt_idmap_t *self, uint64_t id, uint32_t value)
{
    assert (value != KVT_IDMAP_NONE);
    if ((self->count + 1) * 2 > self->mask + 1)
        s_idmap_grow (self);
    size_t slot = s_slot (id, self->mask);
    while (self->slots [slot].val != KVT_IDMAP_NONE) {
        if (self->slots [slot].key == id) {
            self->slots [slot].val = value;
            return;
        }
        slot = (slot + 1) & self->mask;
    }
    self->slots [slot].key = id;
    self->slots [slot].val = value;
    self->count++;
}

//  --------------------------------------------------------------------------
//  Remove 'id' by shifting later members of its probe run back, so that
//  lookups never need tombstones. Returns the value or KVT_IDMAP_NONE.

uint32_t
kvt_idmap_remove (kvt_idmap_t *self, uint64_t id)
{
    size_t slot = s_slot (id, self->mask);
    while (self->slots [slot].val != KVT_IDMAP_NONE && self->slots [slot].key != id)
        slot = (slot + 1) & self->mask;
    uint32_t value = self->slots [slot].val;
    if (value == KVT_IDMAP_NONE)
        return value;
    size_t hole = slot;
    size_t next = (hole + 1) & self->mask;
    while (self->slots [next].val != KVT_IDMAP_NONE) {
        size_t home = s_slot (self->slots [next].key, self->mask);
        //  Move 'next' into the hole if its home is not in (hole, next]
        if (((next - home) & self->mask) >= ((next - hole) & self->mask)) {
            self->slots [hole] = self->slots [next];
            hole = next;
        }
        next = (next + 1) & self->mask;
    }
    self->slots [hole].val = KVT_IDMAP_NONE;
    self->count--;
    return value;
}

//  --------------------------------------------------------------------------
//  Node pool

void
kvt_nodepool_init (kvt_nodepool_t *self, size_t count, size_t item_bytes)
{
    memset (self, 0, sizeof (*self));
    self->item_bytes = item_bytes;
    self->node_max = count? count: 1;
    self->items = calloc (self->node_max, item_bytes);
    self->free_nodes = (uint32_t *) malloc (self->node_max * sizeof (uint32_t));
    if (!self->items || !self->free_nodes)
        abort ();
    for (size_t node = 0; node < self->node_max; node++)
        self->free_nodes [self->free_count++] = (uint32_t) (self->node_max - 1 - node);
}

void
kvt_nodepool_fini (kvt_nodepool_t *self)
{
    free (self->items);
    free (self->free_nodes);
    memset (self, 0, sizeof (*self));
}

void
kvt_nodepool_copy (kvt_nodepool_t *self, const kvt_nodepool_t *source)
{
    *self = *source;
    self->items = kvt_memdup (source->items, source->node_max * source->item_bytes);
    //  Room for every node (put pushes without growing), the free ones copied
    self->free_nodes = (uint32_t *) malloc (source->node_max * sizeof (uint32_t));
    if (!self->free_nodes)
        abort ();
    memcpy (self->free_nodes, source->free_nodes, source->free_count * sizeof (uint32_t));
}

uint32_t
kvt_nodepool_take (kvt_nodepool_t *self)
{
    if (self->free_count == 0) {    //  Host holds more than capacity: grow
        size_t more = self->node_max;
        self->items = realloc (self->items, (self->node_max + more) * self->item_bytes);
        self->free_nodes = (uint32_t *) realloc (self->free_nodes,
                                                 (self->node_max + more) * sizeof (uint32_t));
        if (!self->items || !self->free_nodes)
            abort ();
        memset ((char *) self->items + self->node_max * self->item_bytes, 0,
                more * self->item_bytes);
        for (size_t node = 0; node < more; node++)
            self->free_nodes [self->free_count++] = (uint32_t) (self->node_max + more - 1 - node);
        self->node_max += more;
    }
    return self->free_nodes [--self->free_count];
}

void
kvt_nodepool_put (kvt_nodepool_t *self, uint32_t node)
{
    assert (node < self->node_max && self->free_count < self->node_max);
    self->free_nodes [self->free_count++] = node;
}

//  --------------------------------------------------------------------------
//  Init an empty heap for nodes [0, node_max).

void
kvt_keyheap_init (kvt_keyheap_t *self, size_t node_max)
{
    assert (self);
    memset (self, 0, sizeof (*self));
    kvt_keyheap_reserve (self, node_max? node_max: 16);
}

//  --------------------------------------------------------------------------
//  Free the heap; leaves it zeroed.

void
kvt_keyheap_fini (kvt_keyheap_t *self)
{
    assert (self);
    free (self->items);
    free (self->pos);
    free (self->keys);
    memset (self, 0, sizeof (*self));
}

//  --------------------------------------------------------------------------
//  Grow to hold nodes [0, node_max).

void
kvt_keyheap_reserve (kvt_keyheap_t *self, size_t node_max)
{
    if (node_max <= self->node_max)
        return;
    self->items = (uint32_t *) realloc (self->items, node_max * sizeof (uint32_t));
    self->pos = (uint32_t *) realloc (self->pos, node_max * sizeof (uint32_t));
    self->keys = (kvt_heapkey_t *) realloc (self->keys, node_max * sizeof (kvt_heapkey_t));
    if (!self->items || !self->pos || !self->keys)
        abort ();
    for (size_t node = self->node_max; node < node_max; node++)
        self->pos [node] = KVT_IDMAP_NONE;
    self->node_max = node_max;
}

//  True if node a's key is below node b's.
static inline bool
s_less (const kvt_keyheap_t *self, uint32_t a, uint32_t b)
{
    const kvt_heapkey_t *ka = &self->keys [a], *kb = &self->keys [b];
    return ka->major < kb->major || (ka->major == kb->major && ka->minor < kb->minor);
}

//  Move the item at 'at' up to its place.
static void
s_sift_up (kvt_keyheap_t *self, size_t at)
{
    uint32_t node = self->items [at];
    while (at > 0) {
        size_t up = (at - 1) / 2;
        if (!s_less (self, node, self->items [up]))
            break;
        self->items [at] = self->items [up];
        self->pos [self->items [at]] = (uint32_t) at;
        at = up;
    }
    self->items [at] = node;
    self->pos [node] = (uint32_t) at;
}

//  Move the item at 'at' down to its place.
static void
s_sift_down (kvt_keyheap_t *self, size_t at)
{
    uint32_t node = self->items [at];
    while (true) {
        size_t child = 2 * at + 1;
        if (child >= self->count)
            break;
        if (child + 1 < self->count && s_less (self, self->items [child + 1], self->items [child]))
            child++;
        if (!s_less (self, self->items [child], node))
            break;
        self->items [at] = self->items [child];
        self->pos [self->items [at]] = (uint32_t) at;
        at = child;
    }
    self->items [at] = node;
    self->pos [node] = (uint32_t) at;
}

//  --------------------------------------------------------------------------
//  Insert 'node' with 'key', or move it if it is already there.

void
kvt_keyheap_set (kvt_keyheap_t *self, uint32_t node, kvt_heapkey_t key)
{
    if (node >= self->node_max)
        kvt_keyheap_reserve (self, (size_t) node * 2 + 16);
    self->keys [node] = key;
    uint32_t at = self->pos [node];
    if (at == KVT_IDMAP_NONE) {
        self->items [self->count] = node;
        self->pos [node] = (uint32_t) self->count;
        s_sift_up (self, self->count++);
    }
    else {
        s_sift_up (self, at);
        s_sift_down (self, self->pos [node]);
    }
}

//  --------------------------------------------------------------------------
//  Remove 'node' if present.

void
kvt_keyheap_remove (kvt_keyheap_t *self, uint32_t node)
{
    if (node >= self->node_max || self->pos [node] == KVT_IDMAP_NONE)
        return;
    size_t at = self->pos [node];
    self->pos [node] = KVT_IDMAP_NONE;
    self->count--;
    if (at == self->count)
        return;
    self->items [at] = self->items [self->count];
    self->pos [self->items [at]] = (uint32_t) at;
    s_sift_up (self, at);
    s_sift_down (self, self->pos [self->items [at]]);
}

//  --------------------------------------------------------------------------
//  Node with the smallest key, or KVT_IDMAP_NONE when empty.

uint32_t
kvt_keyheap_top (const kvt_keyheap_t *self)
{
    return self->count? self->items [0]: KVT_IDMAP_NONE;
}

//  --------------------------------------------------------------------------
//  True if 'node' is in the heap.

bool
kvt_keyheap_has (const kvt_keyheap_t *self, uint32_t node)
{
    return node < self->node_max && self->pos [node] != KVT_IDMAP_NONE;
}

//  --------------------------------------------------------------------------
//  Init an empty order for about 'capacity' ids.

void
kvt_keyorder_init (kvt_keyorder_t *self, size_t capacity)
{
    assert (self);
    kvt_nodepool_init (&self->pool, capacity + 1, sizeof (uint64_t));
    kvt_idmap_init (&self->map, self->pool.node_max);
    kvt_keyheap_init (&self->heap, self->pool.node_max);
}

//  --------------------------------------------------------------------------
//  Free the order; leaves it zeroed.

void
kvt_keyorder_fini (kvt_keyorder_t *self)
{
    assert (self);
    kvt_idmap_fini (&self->map);
    kvt_keyheap_fini (&self->heap);
    kvt_nodepool_fini (&self->pool);
}

//  --------------------------------------------------------------------------
//  Node of 'id', tracking it (unranked) first if it is new.

uint32_t
kvt_keyorder_track (kvt_keyorder_t *self, uint64_t id)
{
    uint32_t node = kvt_idmap_get (&self->map, id);
    if (node == KVT_IDMAP_NONE) {
        node = kvt_nodepool_take (&self->pool);
        ((uint64_t *) self->pool.items) [node] = id;
        kvt_idmap_put (&self->map, id, node);
    }
    return node;
}

//  --------------------------------------------------------------------------
//  Stop tracking 'id'; a no-op if it is not tracked.

void
kvt_keyorder_remove (kvt_keyorder_t *self, uint64_t id)
{
    uint32_t node = kvt_idmap_remove (&self->map, id);
    if (node == KVT_IDMAP_NONE)
        return;
    kvt_keyheap_remove (&self->heap, node);
    kvt_nodepool_put (&self->pool, node);
}

//  --------------------------------------------------------------------------
//  Id with the smallest key, or 'otherwise' when none is ranked.

uint64_t
kvt_keyorder_first_id (const kvt_keyorder_t *self, uint64_t otherwise)
{
    uint32_t node = kvt_keyheap_top (&self->heap);
    return node != KVT_IDMAP_NONE? kvt_keyorder_id (self, node): otherwise;
}

//  --------------------------------------------------------------------------
//  Init an empty ring of 'max' slots.

void
kvt_idring_init (kvt_idring_t *self, size_t max)
{
    assert (self && max > 0);
    kvt_idmap_init (&self->map, max);
    self->ids = (uint64_t *) kvt_zmalloc (max * sizeof (uint64_t));
    self->max = max;
    self->next = self->used = 0;
}

//  --------------------------------------------------------------------------
//  Init 'self' as a copy of 'source'.

void
kvt_idring_copy (kvt_idring_t *self, const kvt_idring_t *source)
{
    assert (self && source);
    *self = *source;
    kvt_idmap_copy (&self->map, &source->map);
    self->ids = (uint64_t *) kvt_memdup (source->ids, source->max * sizeof (uint64_t));
}

//  --------------------------------------------------------------------------
//  Free the ring; leaves it zeroed.

void
kvt_idring_fini (kvt_idring_t *self)
{
    assert (self);
    kvt_idmap_fini (&self->map);
    free (self->ids);
    memset (self, 0, sizeof (*self));
}

//  --------------------------------------------------------------------------
//  Remember 'id' in the next slot. The slot's old id is forgotten only if
//  the map still points it here: an id forgotten and remembered again
//  since lives on in its newer slot.

uint32_t
kvt_idring_add (kvt_idring_t *self, uint64_t id)
{
    size_t slot = self->next;
    self->next = (self->next + 1) % self->max;
    if (self->used == self->max) {
        uint64_t old = self->ids [slot];
        if (kvt_idmap_get (&self->map, old) == slot)
            kvt_idmap_remove (&self->map, old);
    }
    else
        self->used++;
    self->ids [slot] = id;
    kvt_idmap_put (&self->map, id, (uint32_t) slot);
    return (uint32_t) slot;
}

//  --------------------------------------------------------------------------
//  Forget 'id' now; true if it was remembered.

bool
kvt_idring_forget (kvt_idring_t *self, uint64_t id)
{
    return kvt_idmap_remove (&self->map, id) != KVT_IDMAP_NONE;
}

//  --------------------------------------------------------------------------
//  Selftest: map against a shadow array under random put/remove; heap
//  pops in key order after random updates; node lists, key order and id
//  ring on small cases whose answer is known.

int
kvt_policy_util_test (bool verbose)
{
    //  Node pool: lowest node first, grows by doubling, zeroed records
    kvt_nodepool_t pool;
    kvt_nodepool_init (&pool, 2, sizeof (uint64_t));
    assert (kvt_nodepool_take (&pool) == 0 && kvt_nodepool_take (&pool) == 1);
    uint32_t third = kvt_nodepool_take (&pool);
    assert (third == 2 && pool.node_max == 4);
    assert (((uint64_t *) pool.items) [3] == 0);
    kvt_nodepool_put (&pool, 1);
    ((uint64_t *) pool.items) [2] = 42;
    kvt_nodepool_t twin;
    kvt_nodepool_copy (&twin, &pool);                       //  Same records, same free list
    assert (kvt_nodepool_take (&twin) == 1 && ((uint64_t *) twin.items) [2] == 42);
    ((uint64_t *) twin.items) [2] = 43;
    assert (((uint64_t *) pool.items) [2] == 42);
    kvt_nodepool_fini (&twin);
    assert (kvt_nodepool_take (&pool) == 1);
    kvt_nodepool_fini (&pool);

    (void) verbose;
    kvt_idmap_t map;
    kvt_idmap_init (&map, 4);
    enum { N = 5000 };
    static uint32_t shadow [N];
    memset (shadow, 0xff, sizeof (shadow));
    uint64_t rng = 12345;
    for (int step = 0; step < 200000; step++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t id = (rng >> 33) % N;
        if ((rng >> 20) & 1) {
            kvt_idmap_put (&map, id * 7919, (uint32_t) step);
            shadow [id] = (uint32_t) step;
        }
        else {
            assert (kvt_idmap_remove (&map, id * 7919) == shadow [id]);
            shadow [id] = KVT_IDMAP_NONE;
        }
    }
    size_t live = 0;
    for (uint64_t id = 0; id < N; id++) {
        assert (kvt_idmap_get (&map, id * 7919) == shadow [id]);
        live += shadow [id] != KVT_IDMAP_NONE;
    }
    assert (map.count == live);
    //  A copy answers the same and lives apart from its source
    kvt_idmap_t copy;
    kvt_idmap_copy (&copy, &map);
    for (uint64_t id = 0; id < N; id++)
        assert (kvt_idmap_get (&copy, id * 7919) == shadow [id]);
    kvt_idmap_put (&copy, 1, 7);
    assert (kvt_idmap_get (&map, 1) == KVT_IDMAP_NONE && copy.count == live + 1);
    kvt_idmap_fini (&copy);
    kvt_idmap_fini (&map);

    kvt_keyheap_t heap;
    kvt_keyheap_init (&heap, 4);
    for (uint32_t node = 0; node < 1000; node++)
        kvt_keyheap_set (&heap, node, (kvt_heapkey_t) { (node * 37) % 101, node });
    for (uint32_t node = 0; node < 1000; node += 3)
        kvt_keyheap_set (&heap, node, (kvt_heapkey_t) { 1000 - node, node });
    for (uint32_t node = 1; node < 1000; node += 5)
        kvt_keyheap_remove (&heap, node);
    assert (!kvt_keyheap_has (&heap, 1) && kvt_keyheap_has (&heap, 0));
    kvt_heapkey_t last = { INT64_MIN, INT64_MIN };
    size_t popped = 0;
    while (kvt_keyheap_top (&heap) != KVT_IDMAP_NONE) {
        uint32_t node = kvt_keyheap_top (&heap);
        kvt_heapkey_t key = heap.keys [node];
        assert (key.major > last.major || (key.major == last.major && key.minor > last.minor));
        last = key;
        kvt_keyheap_remove (&heap, node);
        popped++;
    }
    assert (popped == 800);
    kvt_keyheap_fini (&heap);

    //  Node list: records start with their link; order survives pool growth
    typedef struct {
        kvt_nodelink_t link;        //  On 'list'
        uint64_t id;                //  Payload
    } t_record_t;
    kvt_nodepool_init (&pool, 1, sizeof (t_record_t));
    kvt_nodelist_t list;
    kvt_nodelist_init (&list);
    uint32_t nodes [4];
    for (int at = 0; at < 4; at++) {
        nodes [at] = kvt_nodepool_take (&pool);             //  Grows at 1 and 2
        ((t_record_t *) pool.items) [nodes [at]].id = 100 + at;
        if (at < 2)
            kvt_nodelist_push_front (&list, &pool, nodes [at]);
        else                        //  2 behind 1, 3 behind 0
            kvt_nodelist_insert_after (&list, &pool, nodes [3 - at], nodes [at]);
    }
    //  Front to back: 1, 2, 0, 3
    uint32_t expect [] = { nodes [1], nodes [2], nodes [0], nodes [3] };
    uint32_t node = list.front;
    for (int at = 0; at < 4; at++, node = kvt_nodelist_link (&pool, node)->next)
        assert (node == expect [at]);
    assert (node == KVT_IDMAP_NONE && list.back == nodes [3] && list.count == 4);
    kvt_nodelist_unlink (&list, &pool, nodes [1]);          //  The front
    kvt_nodelist_unlink (&list, &pool, nodes [3]);          //  The back
    kvt_nodelist_unlink (&list, &pool, nodes [2]);          //  Now the front
    assert (list.front == nodes [0] && list.back == nodes [0] && list.count == 1);
    assert (((t_record_t *) pool.items) [list.front].id == 100);
    kvt_nodelist_unlink (&list, &pool, nodes [0]);
    assert (list.front == KVT_IDMAP_NONE && list.back == KVT_IDMAP_NONE && list.count == 0);
    kvt_nodepool_fini (&pool);

    //  Key order: smallest key first, untracked ids ignored, ids kept by node
    kvt_keyorder_t order;
    kvt_keyorder_init (&order, 2);
    assert (kvt_keyorder_first_id (&order, 7) == 7);
    for (uint64_t id = 1; id <= 10; id++) {
        uint32_t tracked = kvt_keyorder_track (&order, id * 1000);
        assert (kvt_keyorder_track (&order, id * 1000) == tracked);
        assert (kvt_keyorder_node (&order, id * 1000) == tracked);
        assert (kvt_keyorder_id (&order, tracked) == id * 1000);
        kvt_keyorder_set (&order, tracked, (kvt_heapkey_t) { 20 - (int64_t) id, 0 });
    }
    assert (kvt_keyorder_first_id (&order, 0) == 10000);
    kvt_keyorder_remove (&order, 10000);
    kvt_keyorder_remove (&order, 10000);                   //  No longer tracked: no-op
    assert (kvt_keyorder_node (&order, 10000) == KVT_IDMAP_NONE);
    assert (kvt_keyorder_first_id (&order, 0) == 9000);
    kvt_keyorder_set (&order, kvt_keyorder_node (&order, 1000), (kvt_heapkey_t) { 0, 0 });
    assert (kvt_keyorder_first_id (&order, 0) == 1000);
    kvt_keyorder_fini (&order);

    //  Id ring: FIFO forgetting, forget, and an id re-remembered outliving
    //  its old slot
    kvt_idring_t ring;
    kvt_idring_init (&ring, 3);
    assert (kvt_idring_add (&ring, 11) == 0 && kvt_idring_add (&ring, 12) == 1);
    assert (kvt_idring_find (&ring, 11) == 0 && kvt_idring_find (&ring, 13) == KVT_IDMAP_NONE);
    assert (kvt_idring_forget (&ring, 11) && !kvt_idring_forget (&ring, 11));
    assert (kvt_idring_add (&ring, 13) == 2);
    assert (kvt_idring_add (&ring, 12) == 0);               //  12 again, in a newer slot
    assert (kvt_idring_add (&ring, 14) == 1);               //  Old slot of 12: 12 stays
    assert (kvt_idring_find (&ring, 12) == 0);
    kvt_idring_t twin_ring;
    kvt_idring_copy (&twin_ring, &ring);                    //  Forgets in the same order
    assert (kvt_idring_add (&twin_ring, 15) == 2);
    assert (kvt_idring_find (&twin_ring, 13) == KVT_IDMAP_NONE);
    assert (kvt_idring_find (&ring, 13) == 2);
    kvt_idring_fini (&twin_ring);
    assert (kvt_idring_add (&ring, 15) == 2);               //  13 is the oldest: forgotten
    assert (kvt_idring_find (&ring, 13) == KVT_IDMAP_NONE);
    assert (kvt_idring_add (&ring, 16) == 0);               //  Then 12
    assert (kvt_idring_find (&ring, 12) == KVT_IDMAP_NONE);
    assert (kvt_idring_find (&ring, 14) == 1 && kvt_idring_find (&ring, 16) == 0);
    assert (ring.map.count == 3);
    kvt_idring_fini (&ring);
    return 0;
}
