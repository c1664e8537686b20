/*  =========================================================================
    kvt_policy_auto - prefix-auto: follows whichever of prefix-adaptive and
    prefix-density a full-size shadow replay of the same traffic finds
    better now

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    prefix-adaptive and prefix-density are each the better design on some
    workloads and not on others (actors/policies/POLICIES.md): on the
    Mooncake conversation trace density leads at 1000 and 4000 blocks and
    adaptive at 16000; on synthetic chats whose think time is per
    conversation density closes 42-50% of the LRU-Belady gap where
    adaptive closes 17-18%. Which one a workload and a capacity want is
    not known in advance, so this policy runs both on the tier and asks a
    shadow of each.
    Each candidate runs as a shadow: a cache of the tier's capacity that
    sees every request and decides every block itself, as if it alone ran
    the tier; its prefix hits (the
    request's cached lead, as the host counts them) are counted in
    windows of 1024 hits between the two, and the log ratio of each
    window's hits is kept for the last 16; the policy follows the other
    candidate once their mean says it leads by more than 'margin' (1% by
    default, option margin=X) and by two standard errors of that mean, as
    kvt_read_path weighs its rounds (a first rule, following whichever
    decayed sum led by the margin, switched on noise: 2% under the better
    candidate on the Mooncake trace). Spatial sampling (miniature caches at
    1/16 of the ids, as prefix-adaptive's handicap choice uses) would
    break the prefix chains both candidates rely on, so the shadows are
    full size.
    The candidate followed also runs on the tier, told every event the
    host reports (uses, inserts, evictions), and answers admit and
    choose_victim. To follow the other, the policy copies that one's
    shadow (kvt_policy_clone: all it has learned of the traffic) and tells
    the copy what the tier holds: the copy forgets what the shadow holds
    and the tier does not, and is given what the tier holds and the
    shadow does not, oldest use first, as the host last described each
    block (a block used while cached, or found as a hit, goes in as a
    hit: prefix-adaptive counts it proven). So the policy keeps its own
    record of the tier's blocks. An earlier form kept both candidates on
    the tier all along, told every event, so that either could take over
    warm: four candidates' work instead of three, 0.71-0.90 M block
    accesses a second on the Mooncake trace at 16000 blocks on the 2-core
    VM (tools/bench/RESULTS.md, session 31).
    While the host offers every request exactly as a shadow replays one
    (the simulator's one tier does: the cached lead as the hit, each block
    in order used, or admitted, a victim chosen and evicted, inserted),
    the candidate on the tier is in the state its shadow would be in, so
    it serves as that shadow too ("fused"), and its hits are the host's.
    The policy checks every event against that protocol; the first that
    departs from it (a lower tier's hit, a pin, an eviction the policy did
    not choose) ends the fusion for good: the shadow becomes a copy of the
    candidate on the tier, holding what the tier holds, taken before the
    event if it came between requests, else at the next begin_request.
    So a single tier runs two candidates' work, not three. Option fuse=0
    keeps the shadow apart from the start (its decisions are the same
    under that protocol: tests/test_policy_auto.py checks it).
    The choice for request r rests on the shadows' replay of requests
    before r only, so the shadows' share of a request is left for
    catch_up (the prefix index runs it between its other work) and done
    at the next begin_request at the latest: the decisions are the same
    whenever catch_up ran. A lower tier (no begin_request, only blocks
    moved down and up) never runs the shadows and follows prefix-adaptive.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"
#include "kvt_policy_auto_int.h"

#define S_CANDIDATES    2
#define S_WINDOW_HITS   1024.0      //  A window closes when the shadows hit this many, summed
#define S_WINDOWS       16          //  Windows the choice weighs
#define S_MIN_WINDOWS   4           //  ...at least
#define S_MARGIN        0.01        //  Switch when the other shadow leads by more
#define S_CONFIDENCE    2.0         //  ...and by this many standard errors

//  The candidates, in order of preference at the start
static const char *const s_names [S_CANDIDATES] = { "prefix-adaptive", "prefix-density" };

//  One instance of a candidate
typedef struct {
    kvt_policy_t *policy;
    const kvt_policy_ops_t *ops;
    void *state;
} s_inner_t;

//  A candidate running alone on a cache of its own, ids only
typedef struct {
    s_inner_t inner;
    kvt_idmap_t held;               //  Ids its cache holds
    size_t count;                   //  Entries in held
    kvt_policy_block_t *blocks;     //  The pending request, flagged as this cache sees it
    size_t next;                    //  0: not begun; k: block k - 1 is next; pending + 1: done
    double hits;                    //  Prefix-hit blocks in the window open
    uint64_t all_hits;              //  Prefix-hit blocks since the start (selftests)
} s_shadow_t;

//  What the tier holds, as the host last described each block
typedef struct {
    kvt_idmap_t map;                //  Id -> record
    kvt_nodepool_t pool;            //  Owns the records (kvt_policy_block_t)
} s_tier_t;

//  Where a request stands in the protocol a shadow follows (fusion)
typedef enum {
    S_BETWEEN,                      //  No request open: begin_request next
    S_OFFER,                        //  Block 'expect' next: on_access if held, else admit
    S_VICTIM,                       //  Admitted into a full tier: choose_victim next
    S_EVICT,                        //  on_evict of the victim chosen next
    S_INSERT                        //  on_insert of block 'expect' next
} s_step_t;

typedef struct {
    size_t capacity;
    double margin;
    char *options;                  //  As given (a candidate made again gets them)
    s_inner_t real;                 //  The candidate followed, on the tier
    s_tier_t tier;                  //  What the tier holds
    s_shadow_t shadow [S_CANDIDATES];
    int chosen;                     //  The candidate followed
    double ratios [S_WINDOWS];      //  log (density's hits / adaptive's), a window each
    int window_count;               //  Windows closed (the last S_WINDOWS kept)
    size_t pending;                 //  Blocks of the request the shadows still replay
    size_t pending_max;             //  Room in each shadow's blocks
    bool fused;                     //  'real' is also shadow [chosen] (its inner is unused)
    bool departed;                  //  The host left the protocol: unfuse at the next begin
    const kvt_policy_block_t *offered;  //  The host's blocks of the open request
    size_t offered_count;           //  Blocks in it
    size_t expect;                  //  The block the protocol offers next
    s_step_t step;                  //  What the protocol does next with it
    uint64_t victim;                //  The victim chosen, evicted next (S_EVICT)
} s_self_t;

static bool
s_inner_new (s_inner_t *inner, const char *name, size_t capacity, const char *options)
{
    inner->policy = kvt_policy_new (name, capacity, options);
    if (!inner->policy)
        return false;
    inner->ops = kvt_policy_ops (inner->policy);
    inner->state = kvt_policy_state (inner->policy);
    return true;
}

static void
s_destroy (void **state_p)
{
    s_self_t *self = (s_self_t *) *state_p;
    if (!self)
        return;
    kvt_policy_destroy (&self->real.policy);
    free (self->options);
    kvt_idmap_fini (&self->tier.map);
    kvt_nodepool_fini (&self->tier.pool);
    for (int c = 0; c < S_CANDIDATES; c++) {
        kvt_policy_destroy (&self->shadow [c].inner.policy);
        kvt_idmap_fini (&self->shadow [c].held);
        free (self->shadow [c].blocks);
    }
    free (self);
    *state_p = NULL;
}

static void s_unfuse (s_self_t *self);

static void *
s_create (const kvt_policy_args_t *args)
{
    double margin = S_MARGIN, fuse = 1;
    int rc = kvt_policy_option (args->options, "margin", &margin);
    if (rc == -EINVAL || margin < 0 || args->capacity == 0
    ||  kvt_policy_option (args->options, "fuse", &fuse) == -EINVAL || (fuse != 0 && fuse != 1))
        return NULL;
    s_self_t *self = (s_self_t *) kvt_zmalloc (sizeof (s_self_t));
    self->capacity = args->capacity;
    self->margin = margin;
    self->options = args->options? strdup (args->options): NULL;
    if (args->options && !self->options)
        abort ();
    kvt_idmap_init (&self->tier.map, args->capacity + 1);
    kvt_nodepool_init (&self->tier.pool, args->capacity + 1, sizeof (kvt_policy_block_t));
    bool made = s_inner_new (&self->real, s_names [0], args->capacity, args->options);
    self->fused = true;             //  Candidate 0 on the tier is its own shadow
    for (int c = 0; c < S_CANDIDATES; c++) {
        kvt_idmap_init (&self->shadow [c].held, args->capacity);
        self->shadow [c].next = 1;      //  No request pending: replayed
        if (c > 0)
            made = made && s_inner_new (&self->shadow [c].inner, s_names [c], args->capacity,
                                        args->options);
    }
    if (!made) {
        void *state = self;
        s_destroy (&state);
        return NULL;
    }
    if (fuse == 0) {
        self->departed = true;      //  Option fuse=0: a shadow of its own from the start
        s_unfuse (self);
    }
    return self;
}

//  --------------------------------------------------------------------------
//  The shadows: each replays a request as the host would, on its own cache

//  Offer one block to a shadow's cache (the host's protocol, kvt_policy.h).
static void
s_shadow_offer (s_self_t *self, s_shadow_t *shadow, const kvt_policy_block_t *block)
{
    const kvt_policy_ops_t *ops = shadow->inner.ops;
    void *state = shadow->inner.state;
    if (kvt_idmap_get (&shadow->held, block->id) != KVT_IDMAP_NONE) {
        ops->on_access (state, block);
        return;
    }
    if (ops->admit && !ops->admit (state, block))
        return;
    if (shadow->count >= self->capacity) {
        uint64_t victim = ops->choose_victim (state, block);
        if (victim == block->id || kvt_idmap_get (&shadow->held, victim) == KVT_IDMAP_NONE)
            return;                 //  Declined (or a victim it does not hold: decline)
        kvt_idmap_remove (&shadow->held, victim);
        shadow->count--;
        ops->on_evict (state, victim);
    }
    kvt_idmap_put (&shadow->held, block->id, 1);
    shadow->count++;
    ops->on_insert (state, block);
}

//  Replay up to 'most' blocks of the pending request in each shadow (its
//  begin and end count as one each); true while some are left.
static bool
s_shadows_step (s_self_t *self, size_t most)
{
    bool left = false;
    for (int c = 0; c < S_CANDIDATES; c++) {
        s_shadow_t *shadow = &self->shadow [c];
        if (!shadow->inner.policy)
            continue;               //  Fused: the candidate on the tier
        for (size_t unit = 0; unit < most && shadow->next <= self->pending; unit++) {
            if (shadow->next == 0) {
                //  Begin: this cache's own lead is its prefix hit
                size_t hit = 0;
                while (hit < self->pending
                   &&  kvt_idmap_get (&shadow->held, shadow->blocks [hit].id) != KVT_IDMAP_NONE)
                    hit++;
                for (size_t j = 0; j < self->pending; j++)
                    if (j < hit)
                        shadow->blocks [j].flags |= KVT_POLICY_BLOCK_HIT;
                    else
                        shadow->blocks [j].flags &= ~KVT_POLICY_BLOCK_HIT;
                shadow->hits += (double) hit;
                shadow->all_hits += hit;
                if (shadow->inner.ops->begin_request)
                    shadow->inner.ops->begin_request (shadow->inner.state, shadow->blocks,
                                                      self->pending, hit);
                shadow->next = 1;
            }
            else
                s_shadow_offer (self, shadow, &shadow->blocks [shadow->next++ - 1]);
            if (shadow->next > self->pending && shadow->inner.ops->end_request)
                shadow->inner.ops->end_request (shadow->inner.state);
        }
        left |= shadow->next <= self->pending;
    }
    return left;
}

//  --------------------------------------------------------------------------
//  The tier's blocks, and taking over the tier with a copy of a shadow

//  The host's latest description of a block the tier holds, or NULL.
static kvt_policy_block_t *
s_tier_find (s_self_t *self, uint64_t id)
{
    uint32_t node = kvt_idmap_get (&self->tier.map, id);
    return node == KVT_IDMAP_NONE? NULL: (kvt_policy_block_t *) self->tier.pool.items + node;
}

//  Shadow 'c' becomes 'inner', holding what the tier holds (fusion ends).
static void
s_shadow_from_tier (s_self_t *self, int c, s_inner_t inner)
{
    s_shadow_t *shadow = &self->shadow [c];
    assert (!shadow->inner.policy);
    shadow->inner = inner;
    const kvt_idmap_t *tier = &self->tier.map;
    for (size_t slot = 0; slot <= tier->mask; slot++)
        if (tier->slots [slot].val != KVT_IDMAP_NONE)
            kvt_idmap_put (&shadow->held, tier->slots [slot].key, 1);
    shadow->count = tier->count;
    shadow->next = self->pending + 1;   //  It has seen every request the tier has
}

//  The host has left the protocol: from this request on, the candidate
//  on the tier and its shadow go separate ways, the shadow from a copy
//  of it (between requests); a fresh one if it cannot be copied (a host
//  that never ended a request).
static void
s_unfuse (s_self_t *self)
{
    kvt_policy_t *copy = kvt_policy_clone (self->real.policy);
    if (!copy)
        copy = kvt_policy_new (s_names [self->chosen], self->capacity, self->options);
    if (!copy)
        abort ();
    s_inner_t inner = { .policy = copy, .ops = kvt_policy_ops (copy),
                        .state = kvt_policy_state (copy) };
    s_shadow_from_tier (self, self->chosen, inner);
    self->fused = false;
}

//  Older use first; within one use (a request), root-most first, so that
//  a copy told them in this order places them as the host's requests did.
static int
s_by_use (const void *a, const void *b)
{
    const kvt_policy_block_t *x = *(const kvt_policy_block_t *const *) a;
    const kvt_policy_block_t *y = *(const kvt_policy_block_t *const *) b;
    if (x->now != y->now)
        return x->now < y->now? -1: 1;
    return x->depth < y->depth? -1: x->depth > y->depth;
}

//  Follow candidate 'next' from the next request on: a copy of its shadow,
//  told what the tier holds, replaces the candidate on the tier. Between
//  requests only (the shadows have replayed every request begun).
static void
s_take_over (s_self_t *self, int next)
{
    s_shadow_t *shadow = &self->shadow [next];
    kvt_policy_t *copy = kvt_policy_clone (shadow->inner.policy);
    if (!copy)
        return;                     //  (The candidates can all be copied)
    const kvt_policy_ops_t *ops = kvt_policy_ops (copy);
    void *state = kvt_policy_state (copy);
    const kvt_idmap_t *held = &shadow->held;
    for (size_t slot = 0; slot <= held->mask; slot++)
        if (held->slots [slot].val != KVT_IDMAP_NONE
        &&  !s_tier_find (self, held->slots [slot].key))
            ops->on_evict (state, held->slots [slot].key);
    size_t count = 0;
    kvt_policy_block_t **missing = (kvt_policy_block_t **) malloc (
        (self->tier.map.count + 1) * sizeof (kvt_policy_block_t *));
    if (!missing)
        abort ();
    const kvt_idmap_t *tier = &self->tier.map;
    for (size_t slot = 0; slot <= tier->mask; slot++)
        if (tier->slots [slot].val != KVT_IDMAP_NONE
        &&  kvt_idmap_get (held, tier->slots [slot].key) == KVT_IDMAP_NONE)
            missing [count++] = (kvt_policy_block_t *) self->tier.pool.items
                              + tier->slots [slot].val;
    qsort (missing, count, sizeof (missing [0]), s_by_use);
    for (size_t i = 0; i < count; i++)
        ops->on_insert (state, missing [i]);
    free (missing);
    if (self->fused) {
        //  The candidate leaving the tier was its own shadow: it goes on
        //  as that shadow, holding what the tier holds
        s_shadow_from_tier (self, self->chosen, self->real);
        self->fused = false;
    }
    else
        kvt_policy_destroy (&self->real.policy);
    self->real = (s_inner_t) { .policy = copy, .ops = ops, .state = state };
    self->chosen = next;
}

//  The shadows have replayed every request begun. When the window is
//  full, its log ratio of the two shadows' hits joins the last S_WINDOWS;
//  the other candidate is followed once their mean says it leads by more
//  than the margin and by S_CONFIDENCE standard errors of that mean (the
//  shadows' hits move from window to window: one window decides nothing).
static void
s_choose (s_self_t *self)
{
    double adaptive = self->shadow [0].hits, density = self->shadow [1].hits;
    if (adaptive + density < S_WINDOW_HITS)
        return;
    self->ratios [self->window_count++ % S_WINDOWS] = log ((density + 1) / (adaptive + 1));
    self->shadow [0].hits = self->shadow [1].hits = 0;
    int n = self->window_count < S_WINDOWS? self->window_count: S_WINDOWS;
    if (n < S_MIN_WINDOWS)
        return;
    double mean = 0, squares = 0;
    for (int k = 0; k < n; k++)
        mean += self->ratios [k] / n;
    for (int k = 0; k < n; k++)
        squares += (self->ratios [k] - mean) * (self->ratios [k] - mean);
    double error = sqrt (squares / (n - 1) / n);
    double lead = self->chosen == 0? mean: -mean;      //  The other one's lead
    if (lead > log1p (self->margin) && lead > S_CONFIDENCE * error)
        s_take_over (self, 1 - self->chosen);   //  Back only on the same evidence the other way
}

//  --------------------------------------------------------------------------
//  The host's events: the candidate followed hears and answers them; the
//  policy records the tier's blocks and checks the protocol (fusion)

static void
s_begin_request (void *state, const kvt_policy_block_t *blocks, size_t block_count,
                 size_t hit_count)
{
    s_self_t *self = (s_self_t *) state;
    //  The last request's replay first: the choice rests on all of it
    while (s_shadows_step (self, SIZE_MAX))
        ;
    if (self->pending > 0)
        s_choose (self);
    if (self->fused && self->step == S_BETWEEN && !self->departed) {
        //  The protocol's hit: the lead the tier holds, flagged as such
        size_t lead = 0;
        while (lead < block_count && s_tier_find (self, blocks [lead].id))
            lead++;
        self->departed = lead != hit_count;
        for (size_t j = 0; j < block_count && !self->departed; j++)
            self->departed = ((blocks [j].flags & KVT_POLICY_BLOCK_HIT) != 0) != (j < lead);
    }
    else
        self->departed |= self->fused;
    if (self->fused && self->departed)
        s_unfuse (self);
    if (self->fused) {
        self->shadow [self->chosen].hits += (double) hit_count;
        self->shadow [self->chosen].all_hits += hit_count;
        self->offered = blocks;
        self->offered_count = block_count;
        self->expect = 0;
        self->step = S_OFFER;
    }
    if (block_count > self->pending_max) {
        self->pending_max = block_count * 2;
        for (int c = 0; c < S_CANDIDATES; c++) {
            self->shadow [c].blocks = (kvt_policy_block_t *) realloc (
                self->shadow [c].blocks, self->pending_max * sizeof (kvt_policy_block_t));
            if (!self->shadow [c].blocks)
                abort ();
        }
    }
    for (int c = 0; c < S_CANDIDATES; c++) {
        if (!self->shadow [c].inner.policy)
            continue;               //  Fused: the host's blocks are its own
        if (block_count > 0)
            memcpy (self->shadow [c].blocks, blocks, block_count * sizeof (kvt_policy_block_t));
        self->shadow [c].next = 0;
    }
    self->pending = block_count;
    if (self->real.ops->begin_request)
        self->real.ops->begin_request (self->real.state, blocks, block_count, hit_count);
}

//  --------------------------------------------------------------------------
//  Fusion's check, before an event reaches the candidate on the tier:
//  true if it is the protocol's next (block 'expect' of the open request
//  at step 'step'). An event between requests leaves the protocol at
//  once and cleanly: the shadow is copied before the event. One inside a
//  request leaves it at the next begin_request, the shadow copied then,
//  with that request's departure in it.

static bool
s_between_requests_departs (s_self_t *self)
{
    if (self->step != S_BETWEEN)
        return false;
    self->departed = true;
    s_unfuse (self);
    return true;
}

static bool
s_expected (s_self_t *self, s_step_t step, uint64_t id)
{
    if (!self->fused || self->departed || s_between_requests_departs (self))
        return false;
    self->departed = self->step != step || self->expect >= self->offered_count
                  || self->offered [self->expect].id != id;
    return !self->departed;
}

static void
s_on_access (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    kvt_policy_block_t *record = s_tier_find (self, block->id);
    if (s_expected (self, S_OFFER, block->id)) {
        if (record)
            self->expect++;
        else
            self->departed = true;  //  A use of a block the tier does not hold
    }
    if (record) {
        *record = *block;
        record->flags |= KVT_POLICY_BLOCK_HIT;     //  Used while cached
    }
    self->real.ops->on_access (self->real.state, block);
}

static bool
s_admit (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    bool offered = s_expected (self, S_OFFER, block->id);
    if (offered && s_tier_find (self, block->id))
        self->departed = offered = false;  //  An offer of a block the tier holds
    bool admitted = !self->real.ops->admit || self->real.ops->admit (self->real.state, block);
    if (offered) {
        if (!admitted)
            self->expect++;
        else
            self->step = self->tier.map.count >= self->capacity? S_VICTIM: S_INSERT;
    }
    return admitted;
}

static uint64_t
s_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_self_t *self = (s_self_t *) state;
    bool offered = s_expected (self, S_VICTIM, incoming->id);
    uint64_t victim = self->real.ops->choose_victim (self->real.state, incoming);
    if (offered) {
        if (victim == incoming->id || !s_tier_find (self, victim)) {
            self->expect++;         //  Declined
            self->step = S_OFFER;
        }
        else {
            self->victim = victim;
            self->step = S_EVICT;
        }
    }
    return victim;
}

static void
s_on_insert (void *state, const kvt_policy_block_t *block)
{
    s_self_t *self = (s_self_t *) state;
    if (s_expected (self, S_INSERT, block->id)) {
        self->expect++;
        self->step = S_OFFER;
    }
    kvt_policy_block_t *record = s_tier_find (self, block->id);
    if (!record) {
        uint32_t node = kvt_nodepool_take (&self->tier.pool);
        kvt_idmap_put (&self->tier.map, block->id, node);
        record = (kvt_policy_block_t *) self->tier.pool.items + node;
    }
    *record = *block;
    self->real.ops->on_insert (self->real.state, block);
}

static void
s_on_evict (void *state, uint64_t id)
{
    s_self_t *self = (s_self_t *) state;
    if (self->fused && !self->departed && !s_between_requests_departs (self)) {
        self->departed = self->step != S_EVICT || id != self->victim;
        self->step = S_INSERT;
    }
    uint32_t node = kvt_idmap_remove (&self->tier.map, id);
    if (node != KVT_IDMAP_NONE)
        kvt_nodepool_put (&self->tier.pool, node);
    self->real.ops->on_evict (self->real.state, id);
}

static void
s_end_request (void *state)
{
    s_self_t *self = (s_self_t *) state;
    if (self->fused && !self->departed && !s_between_requests_departs (self)) {
        self->departed = self->step != S_OFFER || self->expect != self->offered_count;
        self->step = S_BETWEEN;
        self->offered = NULL;
    }
    if (self->real.ops->end_request)
        self->real.ops->end_request (self->real.state);
}

//  The followed candidate's own leftovers, then the shadows' replay
static bool
s_catch_up (void *state, size_t most)
{
    s_self_t *self = (s_self_t *) state;
    bool left = self->real.ops->catch_up && self->real.ops->catch_up (self->real.state, most);
    return s_shadows_step (self, most) || left;
}

const kvt_policy_ops_t kvt_policy_auto_ops = {
    .abi = KVT_POLICY_ABI,
    .name = "prefix-auto",
    .summary = "ours: follows prefix-adaptive or prefix-density, whichever a full-size "
               "shadow of each finds better now",
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
//  What the selftest (kvt_policy.c) reads of a state (kvt_policy_auto_int.h).

uint64_t
kvt_policy_auto_shadow_hits (void *state, int candidate)
{
    s_self_t *self = (s_self_t *) state;
    assert (candidate >= 0 && candidate < S_CANDIDATES);
    while (s_shadows_step (self, SIZE_MAX))
        ;
    return self->shadow [candidate].all_hits;
}

bool
kvt_policy_auto_fused (void *state)
{
    return ((s_self_t *) state)->fused;
}
