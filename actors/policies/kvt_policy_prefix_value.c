/*  =========================================================================
    kvt_policy_prefix_value - learned value per block, prefix-closed

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    "prefix-value": keeps the blocks most likely to be reused within the
    cache's own residence time, learned online, and never keeps a block
    that cannot be hit. What only a prefix cache knows is used four ways:
      - prefix closure: a block whose parent is not cached is declined
        (it cannot be part of a cached lead), and eviction is leaf-first;
      - the partial last block of a prompt is its own class (a longer
        prompt never matches it), so its learned value is near zero;
      - blocks are classed by the sequence that last used them: its length
        in blocks (log2 buckets: the cost in slots of keeping it) and
        whether it continued a cached prefix (hit >= half its blocks);
      - the value of a block of class c at age a (requests since its last
        use) is the learned probability that it is used again within the
        next W requests, given it was not used in the last a:
            value (c, a) = P (a < reuse <= a + W) / P (reuse > a)
        where W = capacity / blocks inserted per request, the mean time a
        block stays. With option cost=1 the value is multiplied by the
        block's recompute cost relative to the mean (TTFT rather than hit
        ratio as the goal).
    Reuse distances are learned from a 1-in-8 spatial sample of all
    offered blocks (SHARDS-style), cached or not, so the estimate is not
    biased by what the policy chose to keep. Counts decay by half every
    32768 sampled lives, so the policy follows a changing workload.
    Eviction compares the oldest block of each class (one recency list per
    class, requests touched leaf-to-root so ancestors stay newer) and
    takes the lowest value; the offered block is declined when its own
    value is lower than that. Costs O(classes) per eviction.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"

#define S_LENGTH_BUCKETS 8          //  log2 of sequence length, 1 .. 128+ blocks
#define S_CLASSES (S_LENGTH_BUCKETS * 4 + 1)    //  x continued? x used before?, + partial
#define S_PARTIAL_CLASS (S_CLASSES - 1) //  Partial last blocks
#define S_DIST_BUCKETS 48           //  Half-octave buckets of reuse distance
#define S_SAMPLE_SHIFT 3            //  Sample 1 in 8 block ids
#define S_DECAY_LIVES 32768.0       //  Halve statistics after this many sampled lives
#define S_TABLE_EVERY 256           //  Recompute value tables every N requests
#define S_PRIOR_LIVES 8.0           //  Weight of the all-class prior, in lives

typedef struct {
    kvt_nodelink_t link;            //  In its class list (first: see kvt_nodelist)
    uint64_t id;                    //  Block id
    int64_t touched;                //  Request clock at last use
    float cost_us;                  //  Recompute cost (cost=1 only)
    uint8_t cls;                    //  Class at last use
} s_node_t;

//  What the sample knows of one remembered id (indexed by its ring slot)
typedef struct {
    int64_t touched;                //  Request clock at last use
    uint8_t cls;                    //  Class at last use
} s_ghost_t;

typedef struct {
    size_t capacity;                //  Blocks the tier holds
    bool cost_aware;                //  Weight value by recompute cost
    kvt_idmap_t map;                //  id -> node, cached blocks
    s_node_t *nodes;                //  Node pool
    kvt_nodepool_t pool;            //  Owns the records above and their free list
    kvt_nodelist_t lists [S_CLASSES];   //  Recency list per class, newest at the front
    kvt_idring_t sampled;           //  Sampled ids remembered (the ghost)
    s_ghost_t *ghosts;              //  ghosts [slot of a sampled id]
    double lives [S_CLASSES];       //  Sampled lives begun per class (decayed)
    double reuses [S_CLASSES][S_DIST_BUCKETS];  //  Lives ended by a reuse at distance
    double total_lives;             //  Since the last decay
    double cum [S_CLASSES + 1][S_DIST_BUCKETS + 1];   //  Prefix sums of reuses, + all
    double lives_all;               //  Sum of lives over classes
    double insert_rate;             //  Blocks inserted per request (EWMA)
    double inserted_now;            //  Inserted during the current request
    double mean_cost_us;            //  Mean recompute cost seen (EWMA)
    double window;                  //  W, requests
    int64_t now;                    //  Current request clock
    int64_t tables_at;              //  Request clock of the last table update
    uint8_t request_class;          //  Class of the current request's full blocks
    const kvt_policy_block_t *blocks;   //  Current request (begin .. end)
    size_t block_count;             //  Entries in blocks
    size_t sample_next;             //  Next of them begin_request's sampling looks at
    uint64_t *ended_ids;            //  An ended request's blocks, its touches to come
    uint8_t *ended_cls;             //  Their classes
    size_t ended_count;             //  Touches left (they go from the back)
    size_t ended_room;              //  Entries allocated in ended_*
    int64_t ended_now;              //  Its request clock
} s_self_t;

//  Half-octave bucket of a reuse distance in requests
static inline int
s_bucket (int64_t distance)
{
    if (distance <= 0)
        return 0;
    int octave = 63 - __builtin_clzll ((unsigned long long) distance);
    //  Upper half of the octave when distance >= 1.5 x 2^octave
    int upper = octave > 0 && distance >= (INT64_C (3) << (octave - 1));
    int bucket = 1 + 2 * octave + upper;
    return bucket < S_DIST_BUCKETS? bucket: S_DIST_BUCKETS - 1;
}

//  True for the 1 in 8 block ids the reuse statistics see.
static bool
s_sampled (uint64_t id)
{
    uint64_t x = id * UINT64_C (0x9E3779B97F4A7C15);
    return (x >> (64 - S_SAMPLE_SHIFT)) == 0;
}

//  Create; NULL if option cost is bad.
static void *
s_create (const kvt_policy_args_t *args)
{
    double cost = 0;
    if (kvt_policy_option (args->options, "cost", &cost) == -EINVAL) {
        kvt_log_error ("prefix-value: option cost must be 0 or 1");
        return NULL;
    }
    s_self_t *self = (s_self_t *) kvt_zmalloc (sizeof (s_self_t));
    self->capacity = args->capacity;
    self->cost_aware = cost != 0;
    kvt_nodepool_init (&self->pool, args->capacity + 1, sizeof (s_node_t));
    self->nodes = (s_node_t *) self->pool.items;
    kvt_idmap_init (&self->map, self->pool.node_max);
    for (int c = 0; c < S_CLASSES; c++)
        kvt_nodelist_init (&self->lists [c]);
    //  The sample must remember well past the cache's own horizon
    kvt_idring_init (&self->sampled, args->capacity < 4096? 4096: args->capacity);
    self->ghosts = (s_ghost_t *) kvt_zmalloc (self->sampled.max * sizeof (s_ghost_t));
    self->insert_rate = 1;
    self->window = (double) args->capacity;
    self->tables_at = -S_TABLE_EVERY;
    return self;
}

//  Destroy; nulls *state_p.
static void
s_destroy (void **state_p)
{
    s_self_t *self = (s_self_t *) *state_p;
    if (self) {
        free (self->ended_ids);
        free (self->ended_cls);
        kvt_idmap_fini (&self->map);
        kvt_idring_fini (&self->sampled);
        free (self->ghosts);
        kvt_nodepool_fini (&self->pool);
        free (self);
        *state_p = NULL;
    }
}

//  Take 'node' out of its class list.
static void
s_unlink (s_self_t *self, uint32_t node)
{
    kvt_nodelist_unlink (&self->lists [self->nodes [node].cls], &self->pool, node);
}

//  Make 'node' the newest of class list 'cls'.
static void
s_push (s_self_t *self, uint32_t node, uint8_t cls)
{
    self->nodes [node].cls = cls;
    kvt_nodelist_push_front (&self->lists [cls], &self->pool, node);
}

//  Class of a block of the current request: the request's class, and
//  whether the block has been used before (a second life behaves unlike
//  a first one: shared roots are reused at once, again and again)
static inline uint8_t
s_class_of (s_self_t *self, const kvt_policy_block_t *block, bool used_before)
{
    if (block->flags & KVT_POLICY_BLOCK_PARTIAL)
        return S_PARTIAL_CLASS;
    return (uint8_t) (self->request_class * 2 + used_before);
}

//  Record one sampled use of 'block' in the reuse statistics.
static void
s_sample (s_self_t *self, const kvt_policy_block_t *block)
{
    uint32_t slot = kvt_idring_find (&self->sampled, block->id);
    uint8_t cls = s_class_of (self, block, slot != KVT_IDMAP_NONE);
    if (slot != KVT_IDMAP_NONE) {
        const s_ghost_t *ghost = &self->ghosts [slot];
        if (ghost->touched == self->now)
            return;                 //  Same request: one use
        self->reuses [ghost->cls][s_bucket (self->now - ghost->touched)] += 1;
    }
    else                            //  A new life (a full ring forgets its oldest id)
        slot = kvt_idring_add (&self->sampled, block->id);
    self->ghosts [slot] = (s_ghost_t) { .touched = self->now, .cls = cls };
    self->lives [cls] += 1;
    self->total_lives += 1;
    if (self->total_lives >= S_DECAY_LIVES) {
        for (int c = 0; c < S_CLASSES; c++) {
            self->lives [c] /= 2;
            for (int b = 0; b < S_DIST_BUCKETS; b++)
                self->reuses [c][b] /= 2;
        }
        self->total_lives /= 2;
    }
}

//  Refresh prefix sums of reuses per class.
static void
s_update_tables (s_self_t *self)
{
    memset (self->cum [S_CLASSES], 0, sizeof (self->cum [S_CLASSES]));
    self->lives_all = 0;
    for (int c = 0; c < S_CLASSES; c++) {
        self->cum [c][0] = 0;
        for (int b = 0; b < S_DIST_BUCKETS; b++)
            self->cum [c][b + 1] = self->cum [c][b] + self->reuses [c][b];
        for (int b = 0; b <= S_DIST_BUCKETS; b++)
            self->cum [S_CLASSES][b] += self->cum [c][b];
        self->lives_all += self->lives [c];
    }
    self->window = (double) self->capacity / fmax (self->insert_rate, 1e-3);
    self->tables_at = self->now;
}

//  Value of a block of class 'cls' at 'age' from prefix sums 'cum' and
//  'lives'; no prior.
static inline void
s_value_parts (s_self_t *self, const double *cum, double lives, int64_t age,
               double *soon, double *alive)
{
    int from = s_bucket (age);
    int to = s_bucket (age + (int64_t) self->window);
    *soon = cum [to + 1] - cum [from + 1];
    //  Half of the age's own bucket is already past
    *alive = fmax (lives - cum [from + 1] + (cum [from + 1] - cum [from]) / 2, 0);
}

//  --------------------------------------------------------------------------
//  value (c, a) = P (a < reuse <= a + W) / P (reuse > a). A class with
//  few samples leans on the value of all classes together (S_PRIOR_LIVES
//  pseudo-lives), so a rare class is neither immortal nor doomed.

static double
s_value (s_self_t *self, int cls, int64_t age)
{
    double soon, alive, all_soon, all_alive;
    s_value_parts (self, self->cum [cls], self->lives [cls], age, &soon, &alive);
    s_value_parts (self, self->cum [S_CLASSES], self->lives_all, age, &all_soon, &all_alive);
    double prior = (all_soon + 1e-3) / (all_alive + 1);
    return (soon + S_PRIOR_LIVES * prior) / (alive + S_PRIOR_LIVES);
}

//  Class the request, sample its blocks, refresh tables now and then.
//  The sampling and the end's touches are a hash lookup a block, which a
//  65536-block prefix makes milliseconds (issue #3): they are left to
//  s_catch_up, and every other call finishes them first (s_finish), so
//  no answer depends on when catch_up ran.

static bool s_catch_up (void *state, size_t most);

static void
s_finish (s_self_t *self)
{
    if ((self->blocks && self->sample_next < self->block_count) || self->ended_count)
        s_catch_up (self, SIZE_MAX);
}

static void
s_begin_request (void *state, const kvt_policy_block_t *blocks, size_t block_count,
                 size_t hit_count)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    self->now = block_count? blocks [0].now: self->now + 1;
    self->blocks = blocks;
    self->block_count = block_count;
    self->sample_next = 0;
    int length = block_count? 63 - __builtin_clzll ((unsigned long long) block_count): 0;
    if (length >= S_LENGTH_BUCKETS)
        length = S_LENGTH_BUCKETS - 1;
    bool continued = hit_count > 0 && hit_count * 2 >= block_count;
    self->request_class = (uint8_t) (length * 2 + continued);
    self->inserted_now = 0;
    if (block_count == 0 && self->now - self->tables_at >= S_TABLE_EVERY)
        s_update_tables (self);
}

//  Move a cached block to the front of the list of its current class.
static void
s_touch (s_self_t *self, uint32_t node, const kvt_policy_block_t *block)
{
    s_unlink (self, node);
    self->nodes [node].touched = block->now;
    s_push (self, node, s_class_of (self, block, true));
}

//  A cached block was used again.
static void
s_on_access (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    uint32_t node = kvt_idmap_get (&self->map, block->id);
    if (node != KVT_IDMAP_NONE)
        s_touch (self, node, block);
}

//  Decline blocks that could never be part of a cached lead.
static bool
s_admit (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    return block->parent == KVT_POLICY_NO_PARENT
        || (block->flags & KVT_POLICY_BLOCK_DEMOTED)   //  Parent may be in a higher tier
        || kvt_idmap_get (&self->map, block->parent) != KVT_IDMAP_NONE;
}

//  Track a new block (grows the pool if needed).
static void
s_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    uint32_t node = kvt_idmap_get (&self->map, block->id);
    if (node != KVT_IDMAP_NONE) {
        s_touch (self, node, block);
        return;
    }
    node = kvt_nodepool_take (&self->pool);
    self->nodes = (s_node_t *) self->pool.items;   //  May have moved
    self->nodes [node].id = block->id;
    self->nodes [node].touched = block->now;
    self->nodes [node].cost_us = block->recompute_us;
    kvt_idmap_put (&self->map, block->id, node);
    s_push (self, node, s_class_of (self, block, (block->flags & KVT_POLICY_BLOCK_HIT) != 0));
    self->inserted_now += 1;
    if (self->cost_aware)
        self->mean_cost_us += (block->recompute_us - self->mean_cost_us) / 256;
}

//  The host dropped 'id'.
static void
s_on_evict (void *state, uint64_t id)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    uint32_t node = kvt_idmap_remove (&self->map, id);
    if (node == KVT_IDMAP_NONE)
        return;
    s_unlink (self, node);
    kvt_nodepool_put (&self->pool, node);
}

//  --------------------------------------------------------------------------
//  Lowest value among the oldest block of each class; decline the offered
//  block if it is worth less than that.

static uint64_t
s_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);
    uint32_t victim = KVT_IDMAP_NONE;
    double victim_value = INFINITY;
    int64_t victim_age = -1;
    for (int c = 0; c < S_CLASSES; c++) {
        uint32_t node = self->lists [c].back;
        if (node == KVT_IDMAP_NONE)
            continue;
        int64_t age = self->now - self->nodes [node].touched;
        double value = s_value (self, c, age);
        if (self->cost_aware && self->mean_cost_us > 0)
            value *= self->nodes [node].cost_us / self->mean_cost_us;
        if (value < victim_value || (value == victim_value && age > victim_age)) {
            victim = node;
            victim_value = value;
            victim_age = age;
        }
    }
    if (victim == KVT_IDMAP_NONE)
        return incoming->id;
    double incoming_value = s_value (self, s_class_of (self, incoming,
                                     (incoming->flags & KVT_POLICY_BLOCK_HIT) != 0), 0);
    if (self->cost_aware && self->mean_cost_us > 0)
        incoming_value *= incoming->recompute_us / self->mean_cost_us;
    return incoming_value < victim_value? incoming->id: self->nodes [victim].id;
}

//  Touch the request's cached blocks leaf to root, so that within a class
//  list an ancestor is always newer than its descendants: their ids and
//  classes are kept for s_catch_up, as the blocks go back to the host.
static void
s_end_request (void *state)
{
    s_self_t *self = (s_self_t *) state;
    s_finish (self);                //  The sampling, before the end
    if (self->block_count > self->ended_room) {
        self->ended_room = self->block_count * 2;
        self->ended_ids = (uint64_t *) realloc (self->ended_ids,
                                                self->ended_room * sizeof (uint64_t));
        self->ended_cls = (uint8_t *) realloc (self->ended_cls, self->ended_room);
        if (!self->ended_ids || !self->ended_cls)
            abort ();
    }
    for (size_t j = 0; j < self->block_count; j++) {
        self->ended_ids [j] = self->blocks [j].id;
        self->ended_cls [j] = s_class_of (self, &self->blocks [j], true);
    }
    self->ended_count = self->block_count;
    self->ended_now = self->now;
    self->insert_rate += (self->inserted_now - self->insert_rate) / 64;
    self->blocks = NULL;
    self->block_count = 0;
}

//  At most 'most' units of what begin_request or end_request left: a
//  sampled block each, then the tables; a touch each. True while more
//  waits.
static bool
s_catch_up (void *state, size_t most)
{
    s_self_t *self = (s_self_t *) state;
    size_t units = 0;
    while (self->blocks && self->sample_next < self->block_count) {
        const kvt_policy_block_t *block = &self->blocks [self->sample_next];
        if (s_sampled (block->id)) {
            if (units++ == most)
                return true;
            s_sample (self, block);
        }
        if (++self->sample_next == self->block_count
        &&  self->now - self->tables_at >= S_TABLE_EVERY)
            s_update_tables (self);
    }
    while (self->ended_count > 0) {
        if (units++ == most)
            return true;
        size_t j = --self->ended_count;
        uint32_t node = kvt_idmap_get (&self->map, self->ended_ids [j]);
        if (node != KVT_IDMAP_NONE) {
            s_unlink (self, node);
            self->nodes [node].touched = self->ended_now;
            s_push (self, node, self->ended_cls [j]);
        }
    }
    return false;
}

const kvt_policy_ops_t kvt_policy_prefix_value_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "prefix-value",
    .summary = "ours: learned reuse value per class and age, prefix-closed, leaf-first",
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
