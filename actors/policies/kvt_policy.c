/*  =========================================================================
    kvt_policy - eviction and admission policies for one cache tier

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The registry of built-in policies, the plugin loader (dlopen of a
    shared object exporting kvt_policy_plugin_v1) and the kvt_policy_t
    handle that hosts hold: ops + state + plugin handle.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_clone.h"
#include "kvt_policy_auto_int.h"
#include <dlfcn.h>

//  --------------------------------------------------------------------------
//  Structure of our class

struct _kvt_policy_t {
    const kvt_policy_ops_t *ops;    //  Vtable (built-in or from the plugin)
    kvt_policy_ops_t older;         //  An ABI 1 plugin's vtable, completed (ops points here)
    void *state;                    //  What ops->create returned
    void *plugin;                   //  dlopen handle, or NULL for built-ins
    char *name;                     //  Name as given to kvt_policy_new
};

//  Every built-in, in --list-policies order
static const kvt_policy_ops_t *s_builtins [] = {
    &kvt_policy_lru_ops,
    &kvt_policy_lru_leaf_ops,
    &kvt_policy_token_age_ops,
    &kvt_policy_s3fifo_ops,
    &kvt_policy_prefix_value_ops,
    &kvt_policy_adaptive_ops,
    &kvt_policy_density_ops,
    &kvt_policy_auto_ops,
    &kvt_policy_belady_ops,
    &kvt_policy_oracle_reuse_ops,
};

#define S_BUILTIN_COUNT (sizeof (s_builtins) / sizeof (s_builtins [0]))

//  --------------------------------------------------------------------------
//  Number of built-in policies, and the vtable of built-in 'index'.

size_t
kvt_policy_builtin_count (void)
{
    return S_BUILTIN_COUNT;
}

const kvt_policy_ops_t *
kvt_policy_builtin (size_t index)
{
    return index < S_BUILTIN_COUNT? s_builtins [index]: NULL;
}

//  --------------------------------------------------------------------------
//  Find a built-in by name; NULL if none.

const kvt_policy_ops_t *
kvt_policy_builtin_find (const char *name)
{
    assert (name);
    for (size_t index = 0; index < S_BUILTIN_COUNT; index++)
        if (streq (s_builtins [index]->name, name))
            return s_builtins [index];
    return NULL;
}

//  --------------------------------------------------------------------------
//  Read option 'key' from "k=v,k=v" into *value; returns 0, -ENOENT if
//  absent, -EINVAL if present but not a number.

int
kvt_policy_option (const char *options, const char *key, double *value)
{
    assert (key && value);
    size_t key_length = strlen (key);
    const char *p = options;
    while (p && *p) {
        const char *end = strchr (p, ',');
        if (!end)
            end = p + strlen (p);
        const char *equals = memchr (p, '=', (size_t) (end - p));
        if (equals && (size_t) (equals - p) == key_length && memcmp (p, key, key_length) == 0) {
            char number [64];
            size_t length = (size_t) (end - equals - 1);
            if (length == 0 || length >= sizeof (number))
                return -EINVAL;
            memcpy (number, equals + 1, length);
            number [length] = 0;
            char *stop;
            double parsed = strtod (number, &stop);
            if (*stop || !isfinite (parsed))
                return -EINVAL;
            *value = parsed;
            return 0;
        }
        p = *end? end + 1: end;
    }
    return -ENOENT;
}

//  Check that a vtable is complete enough to host (of an ABI we know).
static bool
s_ops_valid (const kvt_policy_ops_t *ops)
{
    return ops && (ops->abi == KVT_POLICY_ABI || ops->abi == 1) && ops->name && ops->create
        && ops->destroy && ops->on_access && ops->choose_victim && ops->on_insert
        && ops->on_evict;
}

//  --------------------------------------------------------------------------
//  Create policy 'name' for a tier of 'capacity' blocks: a built-in name
//  or "plugin:PATH". Returns NULL and logs why on failure.

kvt_policy_t *
kvt_policy_new (const char *name, size_t capacity, const char *options)
{
    assert (name);
    kvt_policy_t *self = (kvt_policy_t *) kvt_zmalloc (sizeof (kvt_policy_t));
    self->name = strdup (name);
    if (!self->name)
        abort ();
    if (strncmp (name, "plugin:", 7) == 0) {
        const char *path = name + 7;
        self->plugin = dlopen (path, RTLD_NOW | RTLD_LOCAL);
        if (!self->plugin) {
            kvt_log_error ("policy %s: dlopen failed: %s", name, dlerror ());
            kvt_policy_destroy (&self);
            return NULL;
        }
        kvt_policy_plugin_fn *entry = NULL;
        *(void **) &entry = dlsym (self->plugin, KVT_POLICY_PLUGIN_SYMBOL);
        if (!entry) {
            kvt_log_error ("policy %s: no symbol %s", name, KVT_POLICY_PLUGIN_SYMBOL);
            kvt_policy_destroy (&self);
            return NULL;
        }
        self->ops = entry ();
        if (!s_ops_valid (self->ops)) {
            kvt_log_error ("policy %s: vtable is incomplete or not ABI 1 or %d", name,
                           KVT_POLICY_ABI);
            self->ops = NULL;
            kvt_policy_destroy (&self);
            return NULL;
        }
        if (self->ops->abi == 1) {
            //  Its vtable ends before catch_up: read only what it has
            memcpy (&self->older, self->ops, offsetof (kvt_policy_ops_t, catch_up));
            self->ops = &self->older;
        }
    }
    else {
        self->ops = kvt_policy_builtin_find (name);
        if (!self->ops) {
            kvt_log_error ("policy %s: unknown (kvtier replay --list-policies)", name);
            kvt_policy_destroy (&self);
            return NULL;
        }
    }
    if (capacity == 0) {
        kvt_log_error ("policy %s: capacity must be at least one block", name);
        kvt_policy_destroy (&self);
        return NULL;
    }
    kvt_policy_args_t args = { capacity, options };
    self->state = self->ops->create (&args);
    if (!self->state) {
        kvt_log_error ("policy %s: bad options '%s'", name, options? options: "");
        kvt_policy_destroy (&self);
        return NULL;
    }
    return self;
}

//  --------------------------------------------------------------------------
//  A copy of a built-in that can be copied (kvt_policy_clone.h), between
//  requests; NULL for any other policy, or mid-request.

kvt_policy_t *
kvt_policy_clone (kvt_policy_t *self)
{
    assert (self);
    static const struct {
        const kvt_policy_ops_t *ops;
        void *(*clone) (void *state);
    } copiers [] = {
        { &kvt_policy_adaptive_ops, kvt_policy_adaptive_clone },
        { &kvt_policy_density_ops, kvt_policy_density_clone },
    };
    for (size_t i = 0; i < sizeof (copiers) / sizeof (copiers [0]); i++) {
        if (self->ops != copiers [i].ops)
            continue;
        void *state = copiers [i].clone (self->state);
        if (!state)
            return NULL;
        kvt_policy_t *copy = (kvt_policy_t *) kvt_zmalloc (sizeof (kvt_policy_t));
        copy->ops = self->ops;
        copy->state = state;
        copy->name = strdup (self->name);
        if (!copy->name)
            abort ();
        return copy;
    }
    return NULL;
}

//  --------------------------------------------------------------------------
//  Destroy; NULL-safe, nulls the caller's pointer, unloads a plugin.

void
kvt_policy_destroy (kvt_policy_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        kvt_policy_t *self = *self_p;
        if (self->state)
            self->ops->destroy (&self->state);
        if (self->plugin)
            dlclose (self->plugin);
        free (self->name);
        free (self);
        *self_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Borrow the vtable and the state.

const kvt_policy_ops_t *
kvt_policy_ops (kvt_policy_t *self)
{
    assert (self);
    return self->ops;
}

void *
kvt_policy_state (kvt_policy_t *self)
{
    assert (self);
    return self->state;
}

//  --------------------------------------------------------------------------
//  Return the name of the policy, as given to kvt_policy_new.

const char *
kvt_policy_name (kvt_policy_t *self)
{
    assert (self);
    return self->name;
}

//  --------------------------------------------------------------------------
//  Selftest helpers: a tiny host that follows the kvt_policy.h protocol
//  over a set of at most 16 ids.

typedef struct {
    kvt_policy_t *policy;           //  Policy under test
    uint64_t held [16];             //  Cached ids
    size_t count;                   //  Entries in held
    size_t capacity;                //  Tier capacity
} t_host_t;

//  True if the test host holds 'id'.
static bool
t_held (t_host_t *host, uint64_t id)
{
    for (size_t i = 0; i < host->count; i++)
        if (host->held [i] == id)
            return true;
    return false;
}

//  A block description for the tests (no flags, full block).
static kvt_policy_block_t
t_block (uint64_t id, uint64_t parent, uint32_t depth, int64_t now, int64_t next_use)
{
    kvt_policy_block_t block = { .id = id, .parent = parent, .depth = depth,
                                 .block_tokens = 512, .now = now, .next_use = next_use };
    return block;
}

//  Offer one block; returns the evicted id, the block's own id if it was
//  declined, or 0 if it went in without an eviction (or was cached).
static uint64_t
t_offer (t_host_t *host, const kvt_policy_block_t *block)
{
    const kvt_policy_ops_t *ops = kvt_policy_ops (host->policy);
    void *state = kvt_policy_state (host->policy);
    if (t_held (host, block->id)) {
        ops->on_access (state, block);
        return 0;
    }
    if (ops->admit && !ops->admit (state, block))
        return block->id;
    uint64_t evicted = 0;
    if (host->count == host->capacity) {
        evicted = ops->choose_victim (state, block);
        if (evicted == block->id)
            return evicted;
        assert (t_held (host, evicted));
        for (size_t i = 0; i < host->count; i++)
            if (host->held [i] == evicted)
                host->held [i] = host->held [--host->count];
        ops->on_evict (state, evicted);
    }
    host->held [host->count++] = block->id;
    ops->on_insert (state, block);
    return evicted;
}

//  Offer a whole request (chain of ids) with begin/end calls, after
//  begin_request and after end_request calling catch_up (most) until it is
//  done, if 'most' is not 0 (as the prefix index does; *steps counts the
//  calls); returns the first eviction (or decline) seen, 0 if none.
static uint64_t
t_request_catching_up (t_host_t *host, const uint64_t *ids, size_t count, int64_t now,
                       size_t most, size_t *steps)
{
    const kvt_policy_ops_t *ops = kvt_policy_ops (host->policy);
    void *state = kvt_policy_state (host->policy);
    kvt_policy_block_t blocks [16];
    size_t hit = 0;
    while (hit < count && t_held (host, ids [hit]))
        hit++;
    for (size_t j = 0; j < count; j++) {
        blocks [j] = t_block (ids [j], j? ids [j - 1]: KVT_POLICY_NO_PARENT, (uint32_t) j,
                              now, KVT_POLICY_UNKNOWN);
        if (j < hit)
            blocks [j].flags |= KVT_POLICY_BLOCK_HIT;
    }
    if (ops->begin_request)
        ops->begin_request (state, blocks, count, hit);
    while (most && ops->catch_up && ops->catch_up (state, most))
        (*steps)++;
    uint64_t first = 0;
    for (size_t j = 0; j < count; j++) {
        uint64_t out = t_offer (host, &blocks [j]);
        if (out && !first)
            first = out;
    }
    if (ops->end_request)
        ops->end_request (state);
    while (most && ops->catch_up && ops->catch_up (state, most))
        (*steps)++;
    return first;
}

static uint64_t
t_request (t_host_t *host, const uint64_t *ids, size_t count, int64_t now)
{
    return t_request_catching_up (host, ids, count, now, 0, NULL);
}

//  Request r of the long selftests' traffic into 'chain' (12 ids at most):
//  a shared root, two middles of 5 and 11 kinds, then one of 23 tails; 4
//  to 12 blocks. Returns the length.
static size_t
t_chain (int64_t r, uint64_t *chain)
{
    chain [0] = 1;
    chain [1] = 100 + (uint64_t) (r % 5);
    chain [2] = 200 + (uint64_t) (r % 11);
    for (int j = 3; j < 12; j++)
        chain [j] = 10000 + (uint64_t) (r % 23) * 16 + (uint64_t) j;
    return 4 + (size_t) (r % 9);
}

//  --------------------------------------------------------------------------
//  Selftest: each eviction order on a hand-made sequence, asserted victims

int
kvt_policy_test (bool verbose)
{
    (void) verbose;
    //  @selftest
    //  Registry and options
    assert (kvt_policy_builtin_count () >= 5);
    assert (kvt_policy_builtin_find ("lru") == &kvt_policy_lru_ops);
    assert (kvt_policy_builtin_find ("nope") == NULL);
    for (size_t index = 0; index < kvt_policy_builtin_count (); index++)
        assert (s_ops_valid (kvt_policy_builtin (index)));
    double value = 0;
    assert (kvt_policy_option ("a=1,small=0.25", "small", &value) == 0 && value == 0.25);
    assert (kvt_policy_option ("a=1", "small", &value) == -ENOENT);
    assert (kvt_policy_option ("small=x", "small", &value) == -EINVAL);
    assert (kvt_policy_option (NULL, "small", &value) == -ENOENT);
    assert (kvt_policy_new ("nope", 4, NULL) == NULL);
    assert (kvt_policy_new ("lru", 0, NULL) == NULL);
    assert (kvt_policy_new ("s3fifo", 4, "small=2") == NULL);
    assert (kvt_policy_new ("plugin:/nonexistent/x.so", 4, NULL) == NULL);

    //  LRU: 1 2 3, use 1, then 4 evicts 2
    t_host_t host = { .policy = kvt_policy_new ("lru", 3, NULL), .capacity = 3 };
    assert (host.policy && streq (kvt_policy_name (host.policy), "lru"));
    kvt_policy_block_t b;
    for (uint64_t id = 1; id <= 3; id++) {
        b = t_block (id, KVT_POLICY_NO_PARENT, 0, (int64_t) id, KVT_POLICY_UNKNOWN);
        assert (t_offer (&host, &b) == 0);
    }
    b = t_block (1, KVT_POLICY_NO_PARENT, 0, 4, KVT_POLICY_UNKNOWN);
    assert (t_offer (&host, &b) == 0);
    b = t_block (4, KVT_POLICY_NO_PARENT, 0, 5, KVT_POLICY_UNKNOWN);
    assert (t_offer (&host, &b) == 2);
    b = t_block (5, KVT_POLICY_NO_PARENT, 0, 6, KVT_POLICY_UNKNOWN);
    assert (t_offer (&host, &b) == 3);
    kvt_policy_destroy (&host.policy);
    kvt_policy_destroy (&host.policy);
    assert (host.policy == NULL);

    //  LRU on chains evicts the head of the old chain; leaf-first evicts
    //  its deepest block. Requests [1 2 3], [1 4], then [5].
    uint64_t chain_a [] = { 1, 2, 3 }, chain_b [] = { 1, 4 }, chain_c [] = { 5 };
    host = (t_host_t) { .policy = kvt_policy_new ("lru", 4, NULL), .capacity = 4 };
    assert (t_request (&host, chain_a, 3, 0) == 0);
    assert (t_request (&host, chain_b, 2, 1) == 0);
    assert (t_request (&host, chain_c, 1, 2) == 2);     //  Head of [.. 2 3]
    kvt_policy_destroy (&host.policy);
    host = (t_host_t) { .policy = kvt_policy_new ("lru-leaf", 4, NULL), .capacity = 4 };
    assert (t_request (&host, chain_a, 3, 0) == 0);
    assert (t_request (&host, chain_b, 2, 1) == 0);
    assert (t_request (&host, chain_c, 1, 2) == 3);     //  Leaf of [1 2 3]
    uint64_t chain_d [] = { 6 };
    assert (t_request (&host, chain_d, 1, 3) == 2);     //  Then its new leaf
    kvt_policy_destroy (&host.policy);

    //  token-age: same leaf-first order, on a token clock
    host = (t_host_t) { .policy = kvt_policy_new ("token-age", 4, NULL), .capacity = 4 };
    assert (t_request (&host, chain_a, 3, 0) == 0);
    assert (t_request (&host, chain_b, 2, 1) == 0);
    assert (t_request (&host, chain_c, 1, 2) == 3);
    kvt_policy_destroy (&host.policy);

    //  S3-FIFO, 4 blocks (S holds 1): a block used in S moves to M; an
    //  unused one is evicted and remembered; re-offered, it enters M.
    host = (t_host_t) { .policy = kvt_policy_new ("s3fifo", 4, NULL), .capacity = 4 };
    for (uint64_t id = 1; id <= 4; id++) {
        b = t_block (id, KVT_POLICY_NO_PARENT, 0, (int64_t) id, KVT_POLICY_UNKNOWN);
        t_offer (&host, &b);
    }
    b = t_block (1, KVT_POLICY_NO_PARENT, 0, 5, KVT_POLICY_UNKNOWN);
    t_offer (&host, &b);                                //  1 used while in S
    b = t_block (5, KVT_POLICY_NO_PARENT, 0, 6, KVT_POLICY_UNKNOWN);
    assert (t_offer (&host, &b) == 2);                  //  1 -> M, 2 evicted (ghost)
    b = t_block (2, KVT_POLICY_NO_PARENT, 0, 7, KVT_POLICY_UNKNOWN);
    assert (t_offer (&host, &b) == 3);                  //  2 back into M; S loses 3
    b = t_block (6, KVT_POLICY_NO_PARENT, 0, 8, KVT_POLICY_UNKNOWN);
    assert (t_offer (&host, &b) == 4);
    b = t_block (7, KVT_POLICY_NO_PARENT, 0, 9, KVT_POLICY_UNKNOWN);
    assert (t_offer (&host, &b) == 5);                  //  M (1, 2) survives S churn
    assert (t_held (&host, 1) && t_held (&host, 2));
    kvt_policy_destroy (&host.policy);

    //  Belady: evict the farthest next use; decline an offer that is
    //  strictly farther than all; on a tie evict the cached block.
    host = (t_host_t) { .policy = kvt_policy_new ("belady", 2, NULL), .capacity = 2 };
    b = t_block (1, KVT_POLICY_NO_PARENT, 0, 0, 5);
    t_offer (&host, &b);
    b = t_block (2, KVT_POLICY_NO_PARENT, 0, 0, 3);
    t_offer (&host, &b);
    b = t_block (3, KVT_POLICY_NO_PARENT, 0, 1, 4);
    assert (t_offer (&host, &b) == 1);
    b = t_block (4, KVT_POLICY_NO_PARENT, 0, 2, 9);
    assert (t_offer (&host, &b) == 4);                  //  Declined
    b = t_block (5, KVT_POLICY_NO_PARENT, 0, 2, 4);
    assert (t_offer (&host, &b) == 3);                  //  Tie: cached one goes
    b = t_block (6, KVT_POLICY_NO_PARENT, 0, 3, KVT_POLICY_NEVER);
    assert (t_offer (&host, &b) == 6);
    kvt_policy_destroy (&host.policy);

    //  prefix-value: declines a block whose parent is not cached; evicts
    //  leaf first.
    host = (t_host_t) { .policy = kvt_policy_new ("prefix-value", 3, NULL), .capacity = 3 };
    const kvt_policy_ops_t *ops = kvt_policy_ops (host.policy);
    b = t_block (8, 7, 1, 0, KVT_POLICY_UNKNOWN);
    assert (!ops->admit (kvt_policy_state (host.policy), &b));
    assert (t_request (&host, chain_a, 3, 0) == 0);
    b = t_block (4, 1, 1, 1, KVT_POLICY_UNKNOWN);
    assert (ops->admit (kvt_policy_state (host.policy), &b));
    assert (t_request (&host, chain_b, 2, 1) == 3);     //  Leaf of [1 2 3]
    assert (t_held (&host, 1) && t_held (&host, 2) && t_held (&host, 4));
    kvt_policy_destroy (&host.policy);

    //  prefix-adaptive with an infinite handicap: partial and orphan blocks
    //  are declined; a block offered before (proven) outlives newer
    //  unproven ones; among unproven ones the oldest leaf goes first.
    host = (t_host_t) { .policy = kvt_policy_new ("prefix-adaptive", 3, "handicap=-1"),
                        .capacity = 3 };
    assert (host.policy);
    assert (kvt_policy_new ("prefix-adaptive", 3, "handicap=-2") == NULL);
    //  prefix-auto takes its margin, and its candidates' options too
    assert (kvt_policy_new ("prefix-auto", 3, "margin=-1") == NULL);
    assert (kvt_policy_new ("prefix-auto", 3, "margin=x") == NULL);
    assert (kvt_policy_new ("prefix-auto", 3, "handicap=-2") == NULL);
    kvt_policy_t *auto_policy = kvt_policy_new ("prefix-auto", 3, "margin=0.05,handicap=-1");
    assert (auto_policy);
    //  ...and a request of no blocks (the index may begin one) before others
    const kvt_policy_ops_t *auto_ops = kvt_policy_ops (auto_policy);
    auto_ops->begin_request (kvt_policy_state (auto_policy), NULL, 0, 0);
    auto_ops->end_request (kvt_policy_state (auto_policy));
    while (auto_ops->catch_up (kvt_policy_state (auto_policy), 1))
        ;
    t_host_t auto_host = { .policy = auto_policy, .capacity = 3 };
    uint64_t auto_chain [4] = { 1, 2, 3, 4 };
    assert (t_request (&auto_host, auto_chain, 4, 1) != 0);     //  4 blocks in 3: one goes
    assert (auto_host.count == 3);
    kvt_policy_destroy (&auto_policy);
    ops = kvt_policy_ops (host.policy);
    b = t_block (9, KVT_POLICY_NO_PARENT, 0, 0, KVT_POLICY_UNKNOWN);
    b.flags |= KVT_POLICY_BLOCK_PARTIAL;
    assert (!ops->admit (kvt_policy_state (host.policy), &b));
    b = t_block (8, 7, 1, 0, KVT_POLICY_UNKNOWN);
    assert (!ops->admit (kvt_policy_state (host.policy), &b));
    uint64_t one [] = { 20 }, two [] = { 21 }, three [] = { 22 }, four [] = { 23 };
    assert (t_request (&host, one, 1, 1) == 0);
    assert (t_request (&host, two, 1, 2) == 0);
    assert (t_request (&host, three, 1, 3) == 0);
    assert (t_request (&host, four, 1, 4) == 20);       //  All unproven: oldest
    assert (t_request (&host, one, 1, 5) == 21);        //  20 comes back (seen before)
    assert (t_request (&host, two, 1, 6) == 22);        //  21 too: proven
    assert (t_request (&host, three, 1, 7) == 23);      //  Unproven 23 goes, not 20/21
    assert (t_held (&host, 20) && t_held (&host, 21) && t_held (&host, 22));
    kvt_policy_destroy (&host.policy);
    //  Online choice runs and stays within capacity on a longer sequence
    host = (t_host_t) { .policy = kvt_policy_new ("prefix-adaptive", 8, NULL), .capacity = 8 };
    for (int64_t r = 0; r < 400; r++) {
        uint64_t chain [4] = { 1, 100 + (uint64_t) (r % 7), 1000 + (uint64_t) (r % 7),
                               5000 + (uint64_t) r };
        t_request (&host, chain, 4, r);
        assert (host.count <= 8);
    }
    assert (t_held (&host, 1));                         //  The shared root stays
    kvt_policy_destroy (&host.policy);
    //  The policies that leave work to catch_up (prefix-adaptive its
    //  miniatures, prefix-density its begin's lookups, prefix-value its
    //  sampling and its end's touches, prefix-auto its shadows' replay of
    //  the request and both candidates' own), a unit at a time here, decide the
    //  same as a host that never calls catch_up (the simulator): every
    //  victim, every request
    const char *stepped_names [] = { "prefix-adaptive", "prefix-density", "prefix-value",
                                     "prefix-auto" };
    for (size_t p = 0; p < sizeof (stepped_names) / sizeof (stepped_names [0]); p++) {
        t_host_t stepped = { .policy = kvt_policy_new (stepped_names [p], 8, NULL),
                             .capacity = 8 };
        host = (t_host_t) { .policy = kvt_policy_new (stepped_names [p], 8, NULL),
                            .capacity = 8 };
        assert (kvt_policy_ops (host.policy)->catch_up);
        size_t steps = 0, evictions = 0;
        //  (Long enough for prefix-density's ghost to rebuild its table)
        for (int64_t r = 0; r < 6000; r++) {
            uint64_t chain [12];
            size_t length = t_chain (r, chain);
            uint64_t first = t_request (&host, chain, length, r);
            assert (t_request_catching_up (&stepped, chain, length, r, 1, &steps) == first);
            evictions += first != 0;
            assert (stepped.count == host.count);
            for (size_t i = 0; i < host.count; i++)
                assert (t_held (&stepped, host.held [i]));
        }
        assert (steps > 0 && evictions > 100);
        kvt_policy_destroy (&stepped.policy);
        kvt_policy_destroy (&host.policy);
    }
    //  A copy (kvt_policy_clone) taken between requests decides as its
    //  original from then on: every victim, every request; none is taken
    //  mid-request, nor of a policy that cannot be copied
    const char *copied_names [] = { "prefix-adaptive", "prefix-density" };
    for (size_t p = 0; p < sizeof (copied_names) / sizeof (copied_names [0]); p++) {
        host = (t_host_t) { .policy = kvt_policy_new (copied_names [p], 8, NULL),
                            .capacity = 8 };
        t_host_t twin = { .policy = NULL };
        size_t evictions = 0;
        for (int64_t r = 0; r < 6000; r++) {
            uint64_t chain [12];
            size_t length = t_chain (r, chain);
            if (r == 3000) {
                twin = host;                            //  What the tier holds, and a copy
                twin.policy = kvt_policy_clone (host.policy);
                assert (twin.policy && streq (kvt_policy_name (twin.policy), copied_names [p]));
            }
            uint64_t first = t_request (&host, chain, length, r);
            if (r >= 3000) {
                assert (t_request (&twin, chain, length, r) == first);
                evictions += first != 0;
                assert (twin.count == host.count);
                for (size_t i = 0; i < host.count; i++)
                    assert (t_held (&twin, host.held [i]));
            }
        }
        assert (evictions > 100);
        kvt_policy_block_t open_block = t_block (1, KVT_POLICY_NO_PARENT, 0, 6000,
                                                 KVT_POLICY_UNKNOWN);
        kvt_policy_ops (host.policy)->begin_request (kvt_policy_state (host.policy),
                                                     &open_block, 1, 0);
        assert (kvt_policy_clone (host.policy) == NULL);
        kvt_policy_ops (host.policy)->end_request (kvt_policy_state (host.policy));
        kvt_policy_destroy (&twin.policy);
        kvt_policy_destroy (&host.policy);
    }
    host = (t_host_t) { .policy = kvt_policy_new ("lru", 8, NULL), .capacity = 8 };
    assert (kvt_policy_clone (host.policy) == NULL);
    kvt_policy_destroy (&host.policy);

    //  prefix-auto serves as its followed candidate's shadow while the
    //  host keeps the protocol (fusion), and leaves it when the host does:
    //  it decides as prefix-auto with fuse=0 (a shadow apart from the
    //  start) under a host that keeps the protocol, then evicts blocks of
    //  its own between requests; a host that breaks it inside a request
    //  (a lead hit that the tier does not hold, an eviction of its own
    //  mid-request) still gets victims the tier holds
    for (int breaks_inside = 0; breaks_inside < 2; breaks_inside++) {
        host = (t_host_t) { .policy = kvt_policy_new ("prefix-auto", 8, NULL),
                            .capacity = 8 };
        t_host_t apart = { .policy = kvt_policy_new ("prefix-auto", 8, "fuse=0"),
                           .capacity = 8 };
        assert (host.policy && apart.policy);
        assert (kvt_policy_new ("prefix-auto", 8, "fuse=2") == NULL);
        size_t evictions = 0;
        for (int64_t r = 0; r < 4000; r++) {
            uint64_t chain [12];
            size_t length = t_chain (r, chain);
            t_host_t *both [2] = { &host, &apart };
            if (r >= 2000 && r % 100 == 0 && host.count > 0)
                for (int h = 0; h < 2; h++) {
                    //  The host evicts one itself: the root every request
                    //  leads with, so that a shadow told of it would miss
                    t_host_t *one = both [h];
                    size_t at = 0;
                    while (at + 1 < one->count && one->held [at] != 1)
                        at++;
                    uint64_t id = one->held [at];
                    one->held [at] = one->held [--one->count];
                    kvt_policy_ops (one->policy)->on_evict (kvt_policy_state (one->policy), id);
                }
            if (breaks_inside && r == 1000) {
                //  Mid-request: a use of a block the tier does not hold
                const kvt_policy_ops_t *ops = kvt_policy_ops (host.policy);
                void *state = kvt_policy_state (host.policy);
                kvt_policy_block_t lone = t_block (424242, KVT_POLICY_NO_PARENT, 0, r,
                                                   KVT_POLICY_UNKNOWN);
                lone.flags |= KVT_POLICY_BLOCK_HIT;
                ops->begin_request (state, &lone, 1, 1);
                ops->on_access (state, &lone);
                ops->end_request (state);
                continue;
            }
            uint64_t first = t_request (&host, chain, length, r);
            uint64_t other = t_request (&apart, chain, length, r);
            void *fused = kvt_policy_state (host.policy);
            void *alone = kvt_policy_state (apart.policy);
            assert (kvt_policy_auto_fused (fused) == (r < (breaks_inside? 1000: 2000))
                    && !kvt_policy_auto_fused (alone));
            if (r < 1000 || !breaks_inside) {
                assert (first == other);
                assert (host.count == apart.count);
                for (size_t i = 0; i < host.count; i++)
                    assert (t_held (&apart, host.held [i]));
                //  The shadows count the same hits, fused or not
                for (int c = 0; c < 2; c++)
                    assert (kvt_policy_auto_shadow_hits (fused, c)
                            == kvt_policy_auto_shadow_hits (alone, c));
            }
            evictions += first != 0;
        }
        assert (evictions > 100);
        kvt_policy_destroy (&host.policy);
        kvt_policy_destroy (&apart.policy);
    }
    //  @end
    return 0;
}
