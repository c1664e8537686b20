/*  =========================================================================
    kvt_policy_density - hit density per class, learned from a ghost sample

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    "prefix-density". Each cached block belongs to a class known when it
    is offered: the bucket of its lineage's last inter-turn gap (the time
    since the request's deepest earlier-offered block was last offered;
    none for a first turn) x whether the block was offered before (within
    a lineage history of 8 x capacity ids) or is cached. For each class
    the policy learns how long blocks wait until they are offered again,
    from a ghost: a 1-in-16 spatial sample of offered ids, remembered for
    2 x capacity sampled ids (so about 32 capacities of traffic, longer
    than any block stays in the cache, and so the policy sees the reuses
    that come after the cache's residence time). From the reuse ages it
    builds, per class and age a, the hit density: the best hits per
    block-time a block of that age can still earn, i.e. the steepest
    segment of the upper hull of (hits, block-time) from a on (LHD,
    Beckmann et al., NSDI'18, with the ages of a ghost instead of the
    cache's own hits). Eviction takes the least dense of 32 leaves drawn
    at random (so the cache stays prefix-closed); an offer whose density
    at age 0 is below that victim's is declined, as are partial blocks and
    blocks whose parent is not cached. The table is rebuilt every 1024
    ghost events (reuses and expiries), old events decayed by 0.9, so its
    cost per access is bounded. A tier that never sees begin_request (a
    lower tier) learns from the offers and uses it is given instead, with
    two classes: new to the tier, or used while in it.
    Options: seed=N (victim sampling), samples=N (leaves drawn per
    eviction, 1..256), gap=0 (classes by "offered before" only),
    ghost=X and history=X (their sizes in capacities, default 2 and 8).
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"
#include "kvt_policy_density_int.h"
#include "kvt_policy_clone.h"

#define S_SAMPLE_BITS 4             //  The ghost sees 1 in 16 block ids
#define S_GHOST_FACTOR 2            //  Ghost size, in capacities of sampled ids
#define S_HISTORY_FACTOR 8          //  Lineage history, in capacities of ids
#define S_EVERY 1024                //  Ghost events between table rebuilds (at least)
#define S_CENSUS_COST 64            //  Most ghost entries walked per event, amortized
#define S_DECAY 0.9                 //  Weight of old events at each rebuild
#define S_SAMPLES 32                //  Leaves drawn per eviction
#define S_GAP_BUCKETS 12            //  First turn, then log4 of the gap, 11 at most
#define S_CLASSES (2 * S_GAP_BUCKETS)   //  Gap bucket x offered before
#define S_BINS KVT_POLICY_DENSITY_BINS
#define S_AGE_LIMIT KVT_POLICY_DENSITY_AGE_LIMIT

//  A request's begin, phase by phase, a block a unit: the blocks' history
//  entries, their classes (which need the deepest entry found), the
//  ghost's lessons (then, if enough came, the table's rebuild: the
//  ghost's census, S_CENSUS_UNIT records a unit), then the history's
//  records (those found first, so they move before anything is
//  forgotten, then the new ones)
typedef enum {
    S_BEGUN, S_FIND, S_CLASS, S_LEARN, S_CENSUS, S_RECORD_FOUND, S_RECORD_NEW
} s_phase_t;
#define S_CENSUS_UNIT 128           //  Ghost records walked a unit (S_CENSUS)

//  One remembered offer (ghost or lineage history)
typedef struct {
    kvt_nodelink_t link;            //  In the order (first: see kvt_nodelist)
    uint64_t id;                    //  Block id
    int64_t time;                   //  Request clock of its last offer
    uint8_t cls;                    //  Class at its last offer
    uint8_t live;                   //  1 while remembered
} s_entry_t;

//  Offers in order of their last offer, at most 'max'
typedef struct {
    kvt_idmap_t map;                //  id -> entry
    kvt_nodepool_t pool;            //  Owns the entries
    s_entry_t *entries;             //  pool.items
    kvt_nodelist_t order;           //  Entries remembered, most recent at the front
    size_t max;                     //  Entries kept at most
} s_recent_t;

//  One cached block
typedef struct {
    uint64_t id;                    //  Block id
    int64_t time;                   //  Request clock of its last use
    uint32_t parent;                //  Cached parent node, or NONE
    uint32_t child;                 //  First cached child, or NONE (a leaf)
    uint32_t prev_sibling;          //  Sibling list under the parent
    uint32_t next_sibling;          //  Sibling list under the parent
    uint32_t leaf_at;               //  Place in the leaves array, or NONE
    uint8_t cls;                    //  Class at its last use
} s_node_t;

//  A leaf, with a copy of what its density needs (one cache line per draw)
typedef struct {
    int64_t time;                   //  Request clock of its last use
    uint32_t node;                  //  Its node
    uint8_t cls;                    //  Class at its last use
} s_leaf_t;

typedef struct {
    kvt_idmap_t map;                //  Cached id -> node
    kvt_nodepool_t pool;            //  Owns the nodes
    s_node_t *nodes;                //  pool.items
    s_leaf_t *leaves;               //  Cached nodes with no cached child
    size_t leaf_count;              //  Entries in leaves
    size_t leaf_max;                //  Room in leaves
    s_recent_t ghost;               //  Sampled offers: reuse ages per class
    s_recent_t history;             //  All full offers at depth >= 1: lineages
    double hits [S_CLASSES][S_BINS];    //  Ghost reuses per class and age (decayed)
    double expired [S_CLASSES][S_BINS]; //  Ghost expiries per class and age (decayed)
    double density [S_CLASSES][S_BINS]; //  Hits per block-time from each age on
    double census [S_CLASSES][S_BINS];  //  Ghost entries waiting, per class and age
    double width [S_BINS];          //  Integer ages in each bin
    size_t capacity;                //  Blocks the tier holds
    size_t every;                   //  Events between rebuilds
    size_t events;                  //  Events since the last rebuild
    int64_t now;                    //  Latest request clock seen
    uint64_t rng;                   //  splitmix64 state (victim sampling)
    uint8_t *request_cls;           //  Class of each block of the open request
    uint32_t *request_at;           //  Its history entry at begin_request, or NONE
    size_t request_max;             //  Room in request_cls and request_at
    const kvt_policy_block_t *request;  //  Blocks of the open request, or NULL
    size_t request_count;           //  Blocks in it
    uint8_t phase;                  //  What its begin has left (s_phase_t)
    size_t phase_next;              //  Next block of that phase
    uint32_t deepest_at;            //  History entry of the deepest block found so far
    int samples;                    //  Leaves drawn per eviction
    bool gap_classes;               //  Classes use the gap bucket
    bool requests_seen;             //  begin_request was called at least once
    uint64_t declined;              //  Offers declined as less dense than the victim
} s_self_t;

//  --------------------------------------------------------------------------
//  Age bins: ages 0..3 one bin each, then 4 bins per octave (bin = floor
//  (4 log2 age)), the last bin open-ended.

int
kvt_policy_density_bin (int64_t age)
{
    if (age < 4)
        return age < 0? 0: (int) age;
    //  age = 2^octave x (1 + fraction / 2^52), exactly (ages < 2^53); the
    //  thresholds are ceil ((2^(q/4) - 1) x 2^52)
    double exact = (double) age;
    uint64_t bits;
    memcpy (&bits, &exact, sizeof (bits));
    int octave = (int) (bits >> 52) - 1023;
    uint64_t fraction = bits & ((UINT64_C (1) << 52) - 1);
    int bin = 4 * octave + (fraction >= UINT64_C (0x306fe0a31b716))    //  2^(1/4) - 1
                         + (fraction >= UINT64_C (0x6a09e667f3bcd))    //  2^(1/2) - 1
                         + (fraction >= UINT64_C (0xae89f995ad3ae));   //  2^(3/4) - 1
    return bin < S_BINS? bin: S_BINS - 1;
}

//  Smallest age in [0, S_AGE_LIMIT] whose bin is at least 'bin'.
int64_t
kvt_policy_density_bin_start (int bin)
{
    int64_t low = 0, high = S_AGE_LIMIT;
    while (low < high) {
        int64_t mid = (low + high) / 2;
        if (kvt_policy_density_bin (mid) >= bin)
            high = mid;
        else
            low = mid + 1;
    }
    return low;
}

//  splitmix64: next value of the stream at 'state'.
static uint64_t
s_random (uint64_t *state)
{
    uint64_t z = (*state += UINT64_C (0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C (0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C (0x94D049BB133111EB);
    return z ^ (z >> 31);
}

//  True for the 1 in 16 block ids the ghost sees.
static bool
s_sampled (uint64_t id)
{
    return (id * UINT64_C (0x9E3779B97F4A7C15)) >> (64 - S_SAMPLE_BITS) == 0;
}

//  --------------------------------------------------------------------------
//  Recent offers: an LRU list of ids with the time and class of their last
//  offer.

//  Init an empty list of at most 'max' ids (16 at least).
static void
s_recent_init (s_recent_t *self, size_t max)
{
    memset (self, 0, sizeof (*self));
    self->max = max < 16? 16: max;
    kvt_nodepool_init (&self->pool, self->max + 2, sizeof (s_entry_t));
    self->entries = (s_entry_t *) self->pool.items;
    kvt_idmap_init (&self->map, self->max + 2);
    kvt_nodelist_init (&self->order);
}

//  Free a list; leaves it zeroed.
static void
s_recent_fini (s_recent_t *self)
{
    kvt_idmap_fini (&self->map);
    kvt_nodepool_fini (&self->pool);
    memset (self, 0, sizeof (*self));
}

//  Entry of 'id', or NONE.
static uint32_t
s_recent_find (const s_recent_t *self, uint64_t id)
{
    return kvt_idmap_get (&self->map, id);
}

//  Record an offer of 'id' at 'time' in class 'cls' as the newest; 'at' is
//  its entry (from s_recent_find) or NONE. May leave max + 1 entries.
static void
s_recent_set (s_recent_t *self, uint32_t at, uint64_t id, int64_t time, uint8_t cls)
{
    if (at == KVT_IDMAP_NONE) {
        at = kvt_nodepool_take (&self->pool);
        self->entries = (s_entry_t *) self->pool.items;     //  May have moved
        self->entries [at].id = id;
        self->entries [at].live = 1;
        kvt_idmap_put (&self->map, id, at);
    }
    else
        kvt_nodelist_unlink (&self->order, &self->pool, at);
    self->entries [at].time = time;
    self->entries [at].cls = cls;
    kvt_nodelist_push_front (&self->order, &self->pool, at);
}

//  Forget the oldest entry if over 'max'; true with it in *gone if one was.
static bool
s_recent_trim (s_recent_t *self, s_entry_t *gone)
{
    if (self->order.count <= self->max)
        return false;
    uint32_t at = self->order.back;
    *gone = self->entries [at];
    kvt_nodelist_unlink (&self->order, &self->pool, at);
    kvt_idmap_remove (&self->map, gone->id);
    self->entries [at].live = 0;
    kvt_nodepool_put (&self->pool, at);
    return true;
}

//  --------------------------------------------------------------------------
//  The cached blocks: a forest by parent, with the leaves in an array for
//  uniform draws.

//  'node' became a leaf.
static void
s_leaf_add (s_self_t *self, uint32_t node)
{
    if (self->leaf_count == self->leaf_max) {
        self->leaf_max *= 2;
        self->leaves = (s_leaf_t *) realloc (self->leaves, self->leaf_max * sizeof (s_leaf_t));
        if (!self->leaves)
            abort ();
    }
    s_node_t *n = &self->nodes [node];
    n->leaf_at = (uint32_t) self->leaf_count;
    self->leaves [self->leaf_count++] = (s_leaf_t) { .time = n->time, .node = node,
                                                     .cls = n->cls };
}

//  'node' is no longer a leaf (or no longer cached); no-op if it was not one.
static void
s_leaf_remove (s_self_t *self, uint32_t node)
{
    uint32_t at = self->nodes [node].leaf_at;
    if (at == KVT_IDMAP_NONE)
        return;
    s_leaf_t last = self->leaves [--self->leaf_count];
    self->leaves [at] = last;
    self->nodes [last.node].leaf_at = at;
    self->nodes [node].leaf_at = KVT_IDMAP_NONE;
}

//  Cached 'node' used at 'time' in class 'cls'.
static void
s_cache_touch (s_self_t *self, uint32_t node, int64_t time, uint8_t cls)
{
    s_node_t *n = &self->nodes [node];
    n->time = time;
    n->cls = cls;
    if (n->leaf_at != KVT_IDMAP_NONE) {
        self->leaves [n->leaf_at].time = time;
        self->leaves [n->leaf_at].cls = cls;
    }
}

//  Cache 'block' in class 'cls' (a block the host holds twice is used again).
static void
s_cache_insert (s_self_t *self, const kvt_policy_block_t *block, uint8_t cls)
{
    uint32_t node = kvt_idmap_get (&self->map, block->id);
    if (node != KVT_IDMAP_NONE) {
        s_cache_touch (self, node, block->now, cls);
        return;
    }
    node = kvt_nodepool_take (&self->pool);
    self->nodes = (s_node_t *) self->pool.items;            //  May have moved
    kvt_idmap_put (&self->map, block->id, node);
    s_node_t *n = &self->nodes [node];
    *n = (s_node_t) { .id = block->id, .time = block->now, .cls = cls,
                      .parent = KVT_IDMAP_NONE, .child = KVT_IDMAP_NONE,
                      .prev_sibling = KVT_IDMAP_NONE, .next_sibling = KVT_IDMAP_NONE,
                      .leaf_at = KVT_IDMAP_NONE };
    uint32_t parent = block->parent == KVT_POLICY_NO_PARENT
                    ? KVT_IDMAP_NONE: kvt_idmap_get (&self->map, block->parent);
    if (parent != KVT_IDMAP_NONE) {
        s_node_t *p = &self->nodes [parent];
        if (p->child == KVT_IDMAP_NONE)
            s_leaf_remove (self, parent);
        else
            self->nodes [p->child].prev_sibling = node;
        n->parent = parent;
        n->next_sibling = p->child;
        p->child = node;
    }
    s_leaf_add (self, node);
}

//  Forget cached 'id'; its children (a host may drop a parent) become roots.
static void
s_cache_remove (s_self_t *self, uint64_t id)
{
    uint32_t node = kvt_idmap_remove (&self->map, id);
    if (node == KVT_IDMAP_NONE)
        return;
    s_node_t *n = &self->nodes [node];
    s_leaf_remove (self, node);
    for (uint32_t child = n->child; child != KVT_IDMAP_NONE; ) {
        uint32_t next = self->nodes [child].next_sibling;
        self->nodes [child].parent = KVT_IDMAP_NONE;
        self->nodes [child].prev_sibling = self->nodes [child].next_sibling = KVT_IDMAP_NONE;
        child = next;
    }
    if (n->parent != KVT_IDMAP_NONE) {
        s_node_t *p = &self->nodes [n->parent];
        if (n->prev_sibling != KVT_IDMAP_NONE)
            self->nodes [n->prev_sibling].next_sibling = n->next_sibling;
        else
            p->child = n->next_sibling;
        if (n->next_sibling != KVT_IDMAP_NONE)
            self->nodes [n->next_sibling].prev_sibling = n->prev_sibling;
        if (p->child == KVT_IDMAP_NONE)
            s_leaf_add (self, n->parent);
    }
    kvt_nodepool_put (&self->pool, node);
}

//  --------------------------------------------------------------------------
//  Learning

//  The census of the ghost's entries still waiting, by class and age bin,
//  over its pool's records [from, to) (counted as alive at their age,
//  not as misses). A ghost of 2 x 131072 ids is 10 MB to walk, a few
//  milliseconds: a request's begin walks it in steps (S_CENSUS).
static void
s_census (s_self_t *self, size_t from, size_t to)
{
    const s_entry_t *entries = self->ghost.entries;
    for (size_t at = from; at < to; at++)
        if (entries [at].live)
            self->census [entries [at].cls][kvt_policy_density_bin (self->now
                                                                    - entries [at].time)] += 1;
}

//  Rebuild the density table from the ghost's reuses, expiries and the
//  census, then decay the events.
static void
s_density_rebuild (s_self_t *self)
{
    for (int c = 0; c < S_CLASSES; c++) {
        //  alive [a]: entries that reached age bin a
        double alive [S_BINS + 1];
        alive [S_BINS] = 0;
        for (int a = S_BINS - 1; a >= 0; a--)
            alive [a] = alive [a + 1] + self->hits [c][a] + self->expired [c][a]
                      + self->census [c][a];
        for (int a = 0; a < S_BINS; a++) {
            double best = 0, hits = 0, time = 0;
            for (int x = a; x < S_BINS; x++) {
                hits += self->hits [c][x];
                time += alive [x] * self->width [x];
                if (time > 0 && hits / time > best)
                    best = hits / time;
            }
            self->density [c][a] = best;
        }
        for (int a = 0; a < S_BINS; a++) {
            self->hits [c][a] *= S_DECAY;
            self->expired [c][a] *= S_DECAY;
        }
    }
}

//  The whole rebuild in one go (a tier without requests learns in its calls)
static void
s_rebuild (s_self_t *self)
{
    memset (self->census, 0, sizeof (self->census));
    s_census (self, 0, self->ghost.pool.node_max);
    s_density_rebuild (self);
}

//  One offer of full block 'id' in class 'cls' at 'now': if sampled, a
//  reuse of its ghost entry (or a new entry), and the oldest entry expires
//  past the ghost's size.
static void
s_learn (s_self_t *self, uint64_t id, uint8_t cls, int64_t now)
{
    if (!s_sampled (id))
        return;
    uint32_t at = s_recent_find (&self->ghost, id);
    if (at != KVT_IDMAP_NONE) {
        const s_entry_t *entry = &self->ghost.entries [at];
        self->hits [entry->cls][kvt_policy_density_bin (now - entry->time)] += 1;
        self->events++;
    }
    s_recent_set (&self->ghost, at, id, now, cls);
    s_entry_t gone;
    while (s_recent_trim (&self->ghost, &gone)) {
        self->expired [gone.cls][kvt_policy_density_bin (now - gone.time)] += 1;
        self->events++;
    }
}

//  Rebuild when enough events have come.
static void
s_maybe_rebuild (s_self_t *self)
{
    if (self->events > self->every) {
        s_rebuild (self);
        self->events = 0;
    }
}

//  Class of 'block' in the open request if it points into it, else the
//  class of its last offer in the history, else (a block never offered
//  through begin_request) first-turn, offered before if cached.
static uint8_t
s_class (const s_self_t *self, const kvt_policy_block_t *block)
{
    if (self->request) {
        uintptr_t base = (uintptr_t) self->request, at = (uintptr_t) block;
        if (at >= base && at < base + self->request_count * sizeof (kvt_policy_block_t))
            return self->request_cls [(at - base) / sizeof (kvt_policy_block_t)];
    }
    uint32_t entry = s_recent_find (&self->history, block->id);
    if (entry != KVT_IDMAP_NONE)
        return self->history.entries [entry].cls;
    return kvt_idmap_get (&self->map, block->id) != KVT_IDMAP_NONE;
}

//  Density of 'leaf' now.
static double
s_density (const s_self_t *self, const s_leaf_t *leaf)
{
    return self->density [leaf->cls][kvt_policy_density_bin (self->now - leaf->time)];
}

//  --------------------------------------------------------------------------
//  Create the policy; NULL if an option is bad.

static void *
s_create (const kvt_policy_args_t *args)
{
    double seed = 1, samples = S_SAMPLES, gap = 1;
    double ghost = S_GHOST_FACTOR, history = S_HISTORY_FACTOR;
    const char *keys [] = { "seed", "samples", "gap", "ghost", "history" };
    double *values [] = { &seed, &samples, &gap, &ghost, &history };
    bool bad = false;
    for (size_t k = 0; k < sizeof (keys) / sizeof (keys [0]); k++)
        bad |= kvt_policy_option (args->options, keys [k], values [k]) == -EINVAL;
    if (bad || seed < 0 || samples < 1 || samples > 256 || (gap != 0 && gap != 1)
    ||  ghost < 0.125 || ghost > 64 || history < 1 || history > 64) {
        kvt_log_error ("prefix-density: options are seed=N>=0, samples=1..256, gap=0|1, "
                       "ghost=0.125..64, history=1..64 (capacities)");
        return NULL;
    }
    s_self_t *self = (s_self_t *) kvt_zmalloc (sizeof (s_self_t));
    self->capacity = args->capacity;
    self->samples = (int) samples;
    self->gap_classes = gap != 0;
    self->rng = (uint64_t) seed;
    kvt_nodepool_init (&self->pool, args->capacity + 1, sizeof (s_node_t));
    self->nodes = (s_node_t *) self->pool.items;
    kvt_idmap_init (&self->map, self->pool.node_max);
    self->leaf_max = args->capacity + 1;
    self->leaves = (s_leaf_t *) kvt_zmalloc (self->leaf_max * sizeof (s_leaf_t));
    s_recent_init (&self->ghost, (size_t) (ghost * (double) args->capacity));
    s_recent_init (&self->history, (size_t) (history * (double) args->capacity));
    //  The census walks the whole ghost: at most S_CENSUS_COST entries per event
    self->every = self->ghost.max / S_CENSUS_COST;
    if (self->every < S_EVERY)
        self->every = S_EVERY;
    for (int bin = 0; bin < S_BINS; bin++)
        self->width [bin] = (double) ((bin + 1 < S_BINS? kvt_policy_density_bin_start (bin + 1): S_AGE_LIMIT)
                                      - kvt_policy_density_bin_start (bin));
    for (int c = 0; c < S_CLASSES; c++)
        for (int a = 0; a < S_BINS; a++)
            self->density [c][a] = 1;   //  Nothing learned: all blocks alike
    return self;
}

//  Destroy the policy; nulls *state_p.
static void
s_destroy (void **state_p)
{
    s_self_t *self = (s_self_t *) *state_p;
    if (self) {
        free (self->request_cls);
        free (self->request_at);
        s_recent_fini (&self->history);
        s_recent_fini (&self->ghost);
        free (self->leaves);
        kvt_idmap_fini (&self->map);
        kvt_nodepool_fini (&self->pool);
        free (self);
        *state_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  A request begins: find its lineage's gap, class each block, feed the
//  sampled full blocks to the ghost, then record the offers in the history.
//  That is a few hash lookups a block (a 65536-block prefix would hold the
//  prefix index's thread for milliseconds, issue #3), so it goes in phases
//  that s_catch_up steps through; every other call finishes it first
//  (s_finish), so no answer depends on when catch_up ran.

static bool s_catch_up (void *state, size_t most);

//  Go to 'phase' at block (or census unit) 'next'.
static void
s_phase_go (s_self_t *self, s_phase_t phase, size_t next)
{
    self->phase = (uint8_t) phase;
    self->phase_next = next;
}

static void
s_finish (s_self_t *self)
{
    if (self->phase != S_BEGUN)
        s_catch_up (self, SIZE_MAX);
}

static void
s_begin_request (void *state, const kvt_policy_block_t *blocks, size_t block_count,
                 size_t hit_count)
{
    (void) hit_count;
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    self->requests_seen = true;
    if (block_count == 0)
        return;
    int64_t now = blocks [0].now;
    if (now > self->now)
        self->now = now;
    if (block_count > self->request_max) {
        self->request_max = block_count * 2;
        self->request_cls = (uint8_t *) realloc (self->request_cls, self->request_max);
        self->request_at = (uint32_t *) realloc (self->request_at,
                                                 self->request_max * sizeof (uint32_t));
        if (!self->request_cls || !self->request_at)
            abort ();
    }
    //  History entries (depth 0 is not kept: every request has one)
    self->request_at [0] = KVT_IDMAP_NONE;
    self->deepest_at = KVT_IDMAP_NONE;
    self->request = blocks;
    self->request_count = block_count;
    s_phase_go (self, S_FIND, 1);
}

//  The phase after the current one, with what it needs ready (the
//  records start at depth 1: depth 0 is not kept).
static void
s_phase_end (s_self_t *self)
{
    switch (self->phase) {
        case S_FIND:
            s_phase_go (self, S_CLASS, 0);
            break;
        case S_CLASS:
            s_phase_go (self, S_LEARN, 0);
            break;
        case S_LEARN:
            if (self->events > self->every) {
                self->events = 0;
                memset (self->census, 0, sizeof (self->census));
                s_phase_go (self, S_CENSUS, 0);
            }
            else
                s_phase_go (self, S_RECORD_FOUND, 1);
            break;
        case S_CENSUS:
            s_density_rebuild (self);
            s_phase_go (self, S_RECORD_FOUND, 1);
            break;
        case S_RECORD_FOUND:
            s_phase_go (self, S_RECORD_NEW, 1);
            break;
        default:
            s_phase_go (self, S_BEGUN, 0);
    }
}

//  The gap bucket of the request: the age of its lineage's deepest block
//  offered before (0: a first turn, or classes without gaps).
static int
s_gap_bucket (const s_self_t *self)
{
    if (!self->gap_classes || self->deepest_at == KVT_IDMAP_NONE)
        return 0;
    int64_t gap = self->request [0].now - self->history.entries [self->deepest_at].time;
    int log2 = 63 - __builtin_clzll ((unsigned long long) (gap < 0? 0: gap) + 1);
    return 1 + (log2 / 2 < S_GAP_BUCKETS - 2? log2 / 2: S_GAP_BUCKETS - 2);
}

//  Block j's part of the current phase.
static void
s_phase_block (s_self_t *self, size_t j)
{
    const kvt_policy_block_t *block = &self->request [j];
    bool full = !(block->flags & KVT_POLICY_BLOCK_PARTIAL);
    uint32_t at = self->request_at [j];
    switch (self->phase) {
        case S_FIND:
            at = self->request_at [j] = s_recent_find (&self->history, block->id);
            if (at != KVT_IDMAP_NONE)
                self->deepest_at = at;
            break;
        case S_CLASS: {
            bool before = at != KVT_IDMAP_NONE
                       || kvt_idmap_get (&self->map, block->id) != KVT_IDMAP_NONE;
            self->request_cls [j] = (uint8_t) (s_gap_bucket (self) * 2 + before);
            break;
        }
        case S_LEARN:
            if (full)
                s_learn (self, block->id, self->request_cls [j], self->request [0].now);
            break;
        case S_RECORD_FOUND:
            if (full && at != KVT_IDMAP_NONE)
                s_recent_set (&self->history, at, block->id, self->request [0].now,
                              self->request_cls [j]);
            break;
        case S_RECORD_NEW:
            if (full && at == KVT_IDMAP_NONE) {
                //  Look again: a request may repeat an id
                s_recent_set (&self->history, s_recent_find (&self->history, block->id),
                              block->id, self->request [0].now, self->request_cls [j]);
                s_entry_t gone;
                s_recent_trim (&self->history, &gone);
            }
            break;
        default:
            assert (false);
    }
}

//  At most 'most' blocks' worth of the begin's phases; true while more
//  waits.
static bool
s_catch_up (void *state, size_t most)
{
    s_self_t *self = (s_self_t *) state;
    size_t units = 0;
    while (self->phase != S_BEGUN) {
        size_t size = self->phase == S_CENSUS
                    ? (self->ghost.pool.node_max + S_CENSUS_UNIT - 1) / S_CENSUS_UNIT
                    : self->request_count;
        if (self->phase_next < size) {
            if (units++ == most)
                return true;
            if (self->phase == S_CENSUS) {
                size_t from = self->phase_next++ * S_CENSUS_UNIT;
                size_t to = from + S_CENSUS_UNIT;
                s_census (self, from, to < self->ghost.pool.node_max
                                      ? to: self->ghost.pool.node_max);
            }
            else
                s_phase_block (self, self->phase_next++);
        }
        else
            s_phase_end (self);
    }
    return false;
}

//  A cached block used again: its class and age restart.
static void
s_on_access (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    if (block->now > self->now)
        self->now = block->now;
    uint32_t node = kvt_idmap_get (&self->map, block->id);
    if (node == KVT_IDMAP_NONE)
        return;
    uint8_t cls = s_class (self, block);
    if (!self->requests_seen) {
        s_learn (self, block->id, cls, block->now);
        s_maybe_rebuild (self);
    }
    s_cache_touch (self, node, block->now, cls);
}

//  Decline partial blocks and blocks whose parent is not cached (unless
//  demoted: the parent may be in a higher tier).
static bool
s_admit (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    if (block->now > self->now)
        self->now = block->now;
    if (block->flags & KVT_POLICY_BLOCK_PARTIAL)
        return false;
    if (!self->requests_seen) {
        s_learn (self, block->id, s_class (self, block), block->now);
        s_maybe_rebuild (self);
    }
    return block->parent == KVT_POLICY_NO_PARENT
        || (block->flags & KVT_POLICY_BLOCK_DEMOTED)
        || kvt_idmap_get (&self->map, block->parent) != KVT_IDMAP_NONE;
}

//  The least dense of 'samples' leaves drawn at random; the incoming id
//  (decline) if that leaf is its parent or if the offer is less dense at
//  age 0 than the leaf is now. A host without an offer (id 0) always gets
//  a leaf.
static uint64_t
s_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    if (incoming->now > self->now)
        self->now = incoming->now;
    if (self->leaf_count == 0)
        return incoming->id;
    uint32_t victim = KVT_IDMAP_NONE;
    double victim_density = 0;
    for (int draw = 0; draw < self->samples; draw++) {
        uint64_t r = s_random (&self->rng) >> 32;
        const s_leaf_t *leaf = &self->leaves [(r * self->leaf_count) >> 32];
        double density = s_density (self, leaf);
        if (victim == KVT_IDMAP_NONE || density < victim_density) {
            victim = leaf->node;
            victim_density = density;
        }
    }
    uint64_t id = self->nodes [victim].id;
    if (incoming->id != 0) {
        if (id == incoming->parent)
            return incoming->id;
        if (self->density [s_class (self, incoming)][0] < victim_density) {
            self->declined++;
            return incoming->id;
        }
    }
    return id;
}

//  Now cached, in the class of its offer.
static void
s_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    if (block->now > self->now)
        self->now = block->now;
    s_cache_insert (self, block, s_class (self, block));
}

//  The host dropped 'id'.
static void
s_on_evict (void *state, uint64_t id)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    s_cache_remove (self, id);
}

//  The request's blocks are no longer valid.
static void
s_end_request (void *state)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    self->request = NULL;
    self->request_count = 0;
}

const kvt_policy_ops_t kvt_policy_density_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "prefix-density",
    .summary = "ours: prefix-closed, evicts the least dense of 32 sampled leaves; hit density "
               "per (gap, offered before) class learned from a ghost sample",
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

//  --------------------------------------------------------------------------
//  A copy of a state between requests (kvt_policy_clone.h).

static void
s_recent_copy (s_recent_t *self, const s_recent_t *source)
{
    *self = *source;
    kvt_idmap_copy (&self->map, &source->map);
    kvt_nodepool_copy (&self->pool, &source->pool);
    self->entries = (s_entry_t *) self->pool.items;
}

void *
kvt_policy_density_clone (void *state)
{
    s_self_t *source = (s_self_t *) state;
    s_finish (source);              //  A begin's phases left for catch_up
    if (source->request)
        return NULL;                //  Mid-request: its blocks are the host's
    s_self_t *self = (s_self_t *) kvt_zmalloc (sizeof (s_self_t));
    *self = *source;
    kvt_idmap_copy (&self->map, &source->map);
    kvt_nodepool_copy (&self->pool, &source->pool);
    self->nodes = (s_node_t *) self->pool.items;
    self->leaves = (s_leaf_t *) malloc (source->leaf_max * sizeof (s_leaf_t));
    if (!self->leaves)
        abort ();
    memcpy (self->leaves, source->leaves, source->leaf_count * sizeof (s_leaf_t));
    s_recent_copy (&self->ghost, &source->ghost);
    s_recent_copy (&self->history, &source->history);
    self->request_cls = NULL;       //  Per request: made again at the next begin
    self->request_at = NULL;
    self->request_max = 0;
    return self;
}

//  --------------------------------------------------------------------------
//  What the selftest (kvt_policy_density_test.c) reads of a policy state.

uint64_t
kvt_policy_density_declined (void *state)
{
    s_finish ((s_self_t *) state);
    return ((s_self_t *) state)->declined;
}

double
kvt_policy_density_at (void *state, int cls, int bin)
{
    assert (cls >= 0 && cls < S_CLASSES && bin >= 0 && bin < S_BINS);
    s_finish ((s_self_t *) state);
    return ((s_self_t *) state)->density [cls][bin];
}
