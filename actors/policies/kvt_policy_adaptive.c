/*  =========================================================================
    kvt_policy_adaptive - leaf-first LRU that ages unproven blocks by a
    handicap chosen online by miniature simulations

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    "prefix-adaptive". Eviction is leaf-first LRU over the prefix tree
    (key = request clock of last use, then deeper first), and three
    prefix-cache rules always hold:
      - a block whose parent is not cached is declined: it could never be
        part of a cached lead;
      - the partial last block of a prompt is declined: only an identical
        prompt could match it (vLLM never caches partial blocks either);
      - eviction is leaf-first, so no cached block is stranded behind a gap.
    On top, a block that has not yet proven itself (never offered before
    within a ghost history of 8 x capacity ids, never reused while cached)
    is ranked as if it were H requests older than it is: most blocks are
    never reused, and a reused block is likely to be reused again, so an
    unproven block should leave first unless the cache is large enough to
    wait for first reuses. The right H depends on the workload and on the
    capacity, so the policy runs five miniature caches (Waldspurger et al.,
    ATC'17) on a 1-in-16 spatial sample of block ids with capacity / 16,
    with H = 0 (plain leaf-first LRU), T/2, T, 2T and infinity, where
    T = capacity / full blocks offered per request (the time the cache
    takes to see its own size in new traffic), counts their hits with
    decay, and uses the H of the best. The handicap of a class of unproven
    blocks (log2 of its sequence's full blocks) is H x (mean reuse / the
    class's reuse), clamped to [1/4, 4], learned from the same sample.
    Option handicap=X (in units of T, -1 for infinity) pins H. Costs O(1)
    per access (recency lists), O(classes) per eviction, plus five
    miniatures at 1/16 of the traffic.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"
#include "kvt_policy_clone.h"

#define S_SAMPLE_BITS 4             //  Miniatures see 1 in 16 block ids
#define S_GHOST_FACTOR 8            //  Ghost history, in capacities
#define S_DECAY_HITS 16384.0        //  Halve miniature hit counts past this
#define S_MINIS 5                   //  Miniature caches, one per handicap
#define S_INFINITE (INT64_C (1) << 40)  //  "Infinite" handicap, in requests
#define S_CLASSES 8                 //  log2 of a sequence's full blocks
#define S_DECAY_LIVES 32768.0       //  Halve class statistics past this
#define S_PROVEN S_CLASSES          //  List of proven blocks
#define S_LISTS (S_CLASSES + 1)     //  Unproven lists by class, + proven

//  Handicap of each miniature, in units of T (-1 = infinite)
static const double s_handicaps [S_MINIS] = { 0, 0.5, 1, 2, -1 };

//  Ids offered before, oldest forgotten first
typedef struct {
    kvt_idring_t ring;              //  Ids offered
    uint8_t *classes;               //  classes [slot]: class of the sequence at its last offer
} s_history_t;

//  One node of a cache order
typedef struct {
    kvt_nodelink_t link;            //  In its list (first: see kvt_nodelist)
    uint64_t id;                    //  Block id
    int64_t touched;                //  Request clock of last use
    uint8_t list;                   //  Class of an unproven block, or S_PROVEN
} s_node_t;

//  A leaf-first LRU order with a handicap for unproven blocks: one recency
//  list per class of unproven blocks and one for proven blocks. Within a
//  request, blocks are placed root-most towards the front, so the back of
//  a list is the deepest block of its oldest request. The victim is the
//  list back with the smallest touched - handicap x scale (class).
typedef struct {
    kvt_idmap_t map;                //  id -> node
    s_node_t *nodes;                //  Node pool
    kvt_nodepool_t pool;            //  Owns the records above and their free list
    kvt_nodelist_t lists [S_LISTS]; //  Newest at the front
    uint32_t cursor [S_LISTS];      //  Last node placed by the current request
    int64_t cursor_now [S_LISTS];   //  Request clock of that placement
    size_t capacity;                //  Blocks held at most
    size_t count;                   //  Blocks held
    int64_t handicap;               //  Requests an unproven block is aged by
    double hits;                    //  Decayed hits (miniatures only)
} s_cache_t;

typedef struct {
    s_cache_t real;                 //  The tier's own order (host holds the blocks)
    s_history_t history;            //  Offers seen by the tier
    s_cache_t minis [S_MINIS];      //  Miniatures on sampled ids
    s_history_t mini_history;       //  Offers seen by the miniatures
    double pinned;                  //  Handicap in T, or NAN to choose online
    double offer_rate;              //  Full blocks offered per request (EWMA)
    double lives [S_CLASSES];       //  Sampled offers per sequence class (decayed)
    double reused [S_CLASSES];      //  ... of which offered again within history
    double scale [S_CLASSES];       //  Handicap multiplier per class
    uint8_t request_class;          //  Class of the current request
    int chosen;                     //  Index of the miniature followed
    bool last_seen;                 //  Result of the last history check
    bool feeding;                   //  The miniatures have not seen all the request begun
    const kvt_policy_block_t *fed;  //  Its blocks, while feeding
    size_t fed_count;               //  Its blocks
    size_t fed_next;                //  The next one they see
} s_self_t;

//  Init an empty history of at most 'max' ids (64 at least).
static void
s_history_init (s_history_t *self, size_t max)
{
    kvt_idring_init (&self->ring, max < 64? 64: max);
    self->classes = (uint8_t *) kvt_zmalloc (self->ring.max);
}

//  Free a history; leaves it zeroed.
static void
s_history_fini (s_history_t *self)
{
    kvt_idring_fini (&self->ring);
    free (self->classes);
    memset (self, 0, sizeof (*self));
}

//  Record an offer of 'id' by a sequence of class 'cls'; true if it was
//  offered before within history, with that offer's class in *was.
static bool
s_history_check (s_history_t *self, uint64_t id, uint8_t cls, uint8_t *was)
{
    uint32_t at = kvt_idring_find (&self->ring, id);
    if (at != KVT_IDMAP_NONE) {
        *was = self->classes [at];
        self->classes [at] = cls;
        return true;
    }
    self->classes [kvt_idring_add (&self->ring, id)] = cls;
    return false;
}

//  Init an empty order for 'capacity' blocks (grows if the host holds more).
static void
s_cache_init (s_cache_t *self, size_t capacity)
{
    memset (self, 0, sizeof (*self));
    self->capacity = capacity;
    kvt_nodepool_init (&self->pool, capacity + 1, sizeof (s_node_t));
    self->nodes = (s_node_t *) self->pool.items;
    kvt_idmap_init (&self->map, self->pool.node_max);
    for (int list = 0; list < S_LISTS; list++) {
        kvt_nodelist_init (&self->lists [list]);
        self->cursor [list] = KVT_IDMAP_NONE;
        self->cursor_now [list] = -1;
    }
}

//  Free an order; leaves it zeroed.
static void
s_cache_fini (s_cache_t *self)
{
    kvt_idmap_fini (&self->map);
    kvt_nodepool_fini (&self->pool);
    memset (self, 0, sizeof (*self));
}

//  Take 'node' out of its list, moving the list's cursor back if needed.
static void
s_cache_unlink (s_cache_t *self, uint32_t node)
{
    const s_node_t *n = &self->nodes [node];
    if (self->cursor [n->list] == node)
        self->cursor [n->list] = n->link.prev;  //  The request's previous block, or none
    kvt_nodelist_unlink (&self->lists [n->list], &self->pool, node);
}

//  Place 'node' in 'list' at request clock 'now': behind the blocks the
//  same request placed before it (they are its ancestors), else in front.
static void
s_cache_place (s_cache_t *self, uint32_t node, int list, int64_t now)
{
    s_node_t *n = &self->nodes [node];
    n->list = (uint8_t) list;
    n->touched = now;
    uint32_t after = self->cursor_now [list] == now? self->cursor [list]: KVT_IDMAP_NONE;
    if (after == KVT_IDMAP_NONE)
        kvt_nodelist_push_front (&self->lists [list], &self->pool, node);
    else
        kvt_nodelist_insert_after (&self->lists [list], &self->pool, after, node);
    self->cursor [list] = node;
    self->cursor_now [list] = now;
}

//  Use or insert 'id' at 'now' in 'list' (a class, or S_PROVEN).
static void
s_cache_set (s_cache_t *self, uint64_t id, int64_t now, int list)
{
    uint32_t node = kvt_idmap_get (&self->map, id);
    if (node == KVT_IDMAP_NONE) {
        node = kvt_nodepool_take (&self->pool);
        self->nodes = (s_node_t *) self->pool.items;   //  May have moved
        self->nodes [node].id = id;
        kvt_idmap_put (&self->map, id, node);
        self->count++;
    }
    else {
        if (self->cursor [list] == node && self->cursor_now [list] == now)
            return;                 //  Used twice by one request: stays put
        s_cache_unlink (self, node);
    }
    s_cache_place (self, node, list, now);
}

//  Forget 'id' if this order holds it.
static void
s_cache_remove (s_cache_t *self, uint64_t id)
{
    uint32_t node = kvt_idmap_remove (&self->map, id);
    if (node == KVT_IDMAP_NONE)
        return;
    s_cache_unlink (self, node);
    kvt_nodepool_put (&self->pool, node);
    self->count--;
}

//  Id that this order evicts next, or 'otherwise' when empty: the list
//  back with the smallest touched - handicap x scale [list].
static uint64_t
s_cache_victim (const s_cache_t *self, const double *scale, uint64_t otherwise)
{
    uint32_t victim = KVT_IDMAP_NONE;
    int64_t victim_key = INT64_MAX;
    for (int list = 0; list < S_LISTS; list++) {
        uint32_t node = self->lists [list].back;
        if (node == KVT_IDMAP_NONE)
            continue;
        int64_t key = self->nodes [node].touched;
        if (list != S_PROVEN)
            key -= (int64_t) ((double) self->handicap * scale [list]);
        if (key < victim_key) {
            victim_key = key;
            victim = node;
        }
    }
    return victim != KVT_IDMAP_NONE? self->nodes [victim].id: otherwise;
}

//  Handicap in requests for 'units' of T.
static int64_t
s_handicap (const s_self_t *self, double units)
{
    if (units < 0)
        return S_INFINITE;
    return (int64_t) (units * (double) self->real.capacity / fmax (self->offer_rate, 1e-3));
}

//  Create the policy; NULL if option handicap is bad.
static void *
s_create (const kvt_policy_args_t *args)
{
    double pinned = NAN;
    int rc = kvt_policy_option (args->options, "handicap", &pinned);
    if (rc == -EINVAL || (rc == 0 && pinned < 0 && pinned != -1)) {
        kvt_log_error ("prefix-adaptive: option handicap must be >= 0 (units of T) or -1");
        return NULL;
    }
    s_self_t *self = (s_self_t *) kvt_zmalloc (sizeof (s_self_t));
    self->pinned = pinned;
    self->offer_rate = 1;
    for (int c = 0; c < S_CLASSES; c++)
        self->scale [c] = 1;
    s_cache_init (&self->real, args->capacity);
    s_history_init (&self->history, S_GHOST_FACTOR * args->capacity);
    size_t mini_capacity = args->capacity >> S_SAMPLE_BITS;
    if (mini_capacity < 4)
        mini_capacity = 4;
    for (int m = 0; m < S_MINIS; m++)
        s_cache_init (&self->minis [m], mini_capacity);
    s_history_init (&self->mini_history, S_GHOST_FACTOR * mini_capacity);
    return self;
}

//  Destroy the policy and its miniatures; nulls *state_p.
static void
s_destroy (void **state_p)
{
    s_self_t *self = (s_self_t *) *state_p;
    if (self) {
        s_history_fini (&self->mini_history);
        for (int m = 0; m < S_MINIS; m++)
            s_cache_fini (&self->minis [m]);
        s_history_fini (&self->history);
        s_cache_fini (&self->real);
        free (self);
        *state_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  A copy of a state between requests (kvt_policy_clone.h).

static void
s_cache_copy (s_cache_t *self, const s_cache_t *source)
{
    *self = *source;
    kvt_idmap_copy (&self->map, &source->map);
    kvt_nodepool_copy (&self->pool, &source->pool);
    self->nodes = (s_node_t *) self->pool.items;
}

static void
s_history_copy (s_history_t *self, const s_history_t *source)
{
    kvt_idring_copy (&self->ring, &source->ring);
    self->classes = (uint8_t *) kvt_memdup (source->classes, source->ring.max);
}

void *
kvt_policy_adaptive_clone (void *state)
{
    const s_self_t *source = (const s_self_t *) state;
    if (source->feeding)
        return NULL;
    s_self_t *self = (s_self_t *) kvt_zmalloc (sizeof (s_self_t));
    *self = *source;
    s_cache_copy (&self->real, &source->real);
    s_history_copy (&self->history, &source->history);
    for (int m = 0; m < S_MINIS; m++)
        s_cache_copy (&self->minis [m], &source->minis [m]);
    s_history_copy (&self->mini_history, &source->mini_history);
    return self;
}

//  True for the 1 in 16 block ids the miniatures and class statistics see.
static bool
s_sampled (uint64_t id)
{
    return (id * UINT64_C (0x9E3779B97F4A7C15)) >> (64 - S_SAMPLE_BITS) == 0;
}

//  One sampled offer to miniature 'mini': hit, or insert (prefix closure
//  is not modelled: a sample holds too few whole chains).
static void
s_mini_offer (s_cache_t *mini, const kvt_policy_block_t *block, bool seen, int cls,
              const double *scale)
{
    if (kvt_idmap_get (&mini->map, block->id) != KVT_IDMAP_NONE) {
        mini->hits += 1;
        s_cache_set (mini, block->id, block->now, S_PROVEN);
        return;
    }
    if (mini->count == mini->capacity)
        s_cache_remove (mini, s_cache_victim (mini, scale, block->id));
    s_cache_set (mini, block->id, block->now, seen? S_PROVEN: cls);
}

//  --------------------------------------------------------------------------
//  A request begins: its class now (new blocks are placed by it); its
//  sampled full blocks go to the miniatures in s_catch_up, which also
//  refreshes each one's handicap from the offer rate and follows the best.
//  That is ~45 ns a block (a 65536-block prefix took 3 ms of the H200
//  host's time in one call, and held the index's thread, issue #3), so
//  the host may spread it over catch_up calls; only choose_victim reads
//  what it changes, and finishes it first.

static void
s_begin_request (void *state, const kvt_policy_block_t *blocks, size_t block_count,
                 size_t hit_count)
{
    (void) hit_count;
    s_self_t *self = (s_self_t *) state;
    assert (!self->feeding);        //  end_request finished the one before
    size_t full = 0;
    for (size_t j = 0; j < block_count; j++)
        full += !(blocks [j].flags & KVT_POLICY_BLOCK_PARTIAL);
    int cls = full? 63 - __builtin_clzll ((unsigned long long) full): 0;
    self->request_class = (uint8_t) (cls < S_CLASSES? cls: S_CLASSES - 1);
    self->offer_rate += ((double) full - self->offer_rate) / 64;
    self->feeding = true;
    self->fed = blocks;
    self->fed_count = block_count;
    self->fed_next = 0;
}

//  The miniatures' part of the request begun: at most 'most' sampled
//  blocks, then the classes' scales, the handicaps and the choice. True
//  while blocks wait.
static bool
s_catch_up (void *state, size_t most)
{
    s_self_t *self = (s_self_t *) state;
    if (!self->feeding)
        return false;
    const kvt_policy_block_t *blocks = self->fed;
    size_t fed = 0;
    for (; self->fed_next < self->fed_count && fed < most; self->fed_next++) {
        const kvt_policy_block_t *block = &blocks [self->fed_next];
        if ((block->flags & KVT_POLICY_BLOCK_PARTIAL) || !s_sampled (block->id))
            continue;
        uint8_t was = 0;
        bool seen = s_history_check (&self->mini_history, block->id, self->request_class, &was);
        self->lives [self->request_class] += 1;
        if (seen)
            self->reused [was] += 1;
        for (int m = 0; m < S_MINIS; m++)
            s_mini_offer (&self->minis [m], block, seen, self->request_class, self->scale);
        fed++;
    }
    if (self->fed_next < self->fed_count)
        return true;
    self->feeding = false;
    self->fed = NULL;
    //  Unproven blocks of a class that is reused less than average wait
    //  less: handicap x (mean reuse / class reuse), within [1/4, 4]
    double lives = 0, reused = 0;
    for (int c = 0; c < S_CLASSES; c++) {
        lives += self->lives [c];
        reused += self->reused [c];
    }
    for (int c = 0; c < S_CLASSES; c++) {
        double mean = (reused + 1) / (lives + 2);
        double mine = (self->reused [c] + 8 * mean) / (self->lives [c] + 8);
        self->scale [c] = fmin (4, fmax (0.25, mean / mine));
    }
    if (lives > S_DECAY_LIVES)
        for (int c = 0; c < S_CLASSES; c++) {
            self->lives [c] /= 2;
            self->reused [c] /= 2;
        }
    double total = 0;
    for (int m = 0; m < S_MINIS; m++) {
        self->minis [m].handicap = s_handicap (self, s_handicaps [m]);
        total += self->minis [m].hits;
    }
    if (total > S_DECAY_HITS)
        for (int m = 0; m < S_MINIS; m++)
            self->minis [m].hits /= 2;
    if (isnan (self->pinned)) {
        int best = self->chosen;
        for (int m = 0; m < S_MINIS; m++)
            if (self->minis [m].hits > self->minis [best].hits)
                best = m;
        self->chosen = best;
        self->real.handicap = self->minis [best].handicap;
    }
    else
        self->real.handicap = s_handicap (self, self->pinned);
    return false;
}

//  The request's blocks go back to the host: the miniatures have seen
//  them all.
static void
s_end_request (void *state)
{
    s_catch_up (state, SIZE_MAX);
}

//  A cached block used again has proven itself.
static void
s_on_access (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    if (kvt_idmap_get (&self->real.map, block->id) != KVT_IDMAP_NONE)
        s_cache_set (&self->real, block->id, block->now, S_PROVEN);
}

//  --------------------------------------------------------------------------
//  Decline partial blocks and blocks whose parent is not cached; every
//  offer of a full block is recorded in the history either way.

static bool
s_admit (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    if (block->flags & KVT_POLICY_BLOCK_PARTIAL)
        return false;
    uint8_t was;
    self->last_seen = s_history_check (&self->history, block->id, self->request_class, &was);
    return block->parent == KVT_POLICY_NO_PARENT
        || (block->flags & KVT_POLICY_BLOCK_DEMOTED)   //  Parent may be in a higher tier
        || kvt_idmap_get (&self->real.map, block->parent) != KVT_IDMAP_NONE;
}

//  A new block is proven if it was offered before or is a prefix hit.
static void
s_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    bool proven = self->last_seen || (block->flags & KVT_POLICY_BLOCK_HIT);
    s_cache_set (&self->real, block->id, block->now, proven? S_PROVEN: self->request_class);
    self->last_seen = false;
}

//  The host dropped 'id'.
static void
s_on_evict (void *state, uint64_t id)
{
    s_self_t *self = (s_self_t *) state;
    s_cache_remove (&self->real, id);
}

//  Evict the list back with the smallest handicapped clock.
static uint64_t
s_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_self_t *self = (s_self_t *) state;
    s_catch_up (self, SIZE_MAX);    //  The handicap and scales of the request begun
    return s_cache_victim (&self->real, self->scale, incoming->id);
}

const kvt_policy_ops_t kvt_policy_adaptive_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "prefix-adaptive",
    .summary = "ours: leaf-first LRU, prefix-closed, unproven blocks aged by a handicap "
               "chosen online by miniature caches",
    .create = s_create,
    .destroy = s_destroy,
    .begin_request = s_begin_request,
    .on_access = s_on_access,
    .admit = s_admit,
    .choose_victim = s_choose_victim,
    .on_insert = s_on_insert,
    .on_evict = s_on_evict,
    .end_request = s_end_request,
    .catch_up = s_catch_up,
};
