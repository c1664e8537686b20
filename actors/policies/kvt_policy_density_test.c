/*  =========================================================================
    kvt_policy_density_test - the selftest of the prefix-density policy: a
    test host that checks every decision, the age bins, the options, and
    what the policy learns on a mixed workload

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"
#include "kvt_policy_density_int.h"

//  --------------------------------------------------------------------------
//  Selftest helpers: a host that follows the kvt_policy.h protocol and
//  checks, after every decision, that a victim is a cached leaf and that
//  the cached set is prefix-closed. Block ids are (chain << 20) | (depth
//  + 1), so a block's parent is id - 1 and its only child id + 1.

#define T_MAX 256                   //  Blocks a test host holds at most

typedef struct {
    kvt_policy_t *policy;           //  Policy under test
    kvt_idmap_t held;               //  Cached id -> place in ids
    uint64_t ids [T_MAX];           //  Cached ids
    size_t count;                   //  Entries in ids
    size_t capacity;                //  Tier capacity
    bool closed;                    //  Check prefix closure and leaf victims
    uint64_t hits;                  //  Blocks in cached leads
    uint64_t blocks;                //  Blocks requested
    uint64_t one_shot_offers;       //  Offers of one-shot blocks (chain >= T_ONE_SHOT)
    uint64_t one_shot_kept;         //  ... of which inserted
} t_host_t;

#define T_ONE_SHOT 1000000          //  First chain of t_mixed's one-shot requests

//  Id of the block at 'depth' of 'chain'.
static uint64_t
t_id (uint64_t chain, uint32_t depth)
{
    return (chain << 20) | (depth + 1);
}

//  True if the test host holds 'id'.
static bool
t_held (const t_host_t *host, uint64_t id)
{
    return kvt_idmap_get (&host->held, id) != KVT_IDMAP_NONE;
}

//  Start an empty host of 'capacity' blocks under policy 'name'.
static void
t_host_init (t_host_t *host, const char *name, size_t capacity, const char *options)
{
    memset (host, 0, sizeof (*host));
    assert (capacity <= T_MAX);
    host->policy = kvt_policy_new (name, capacity, options);
    assert (host->policy);
    kvt_idmap_init (&host->held, capacity);
    host->capacity = capacity;
    host->closed = streq (name, "prefix-density");
}

//  Destroy the host's policy and map.
static void
t_host_fini (t_host_t *host)
{
    kvt_policy_destroy (&host->policy);
    kvt_idmap_fini (&host->held);
}

//  Offer 'block'; returns the victim, the block's id if declined, else 0.
static uint64_t
t_offer (t_host_t *host, const kvt_policy_block_t *block)
{
    const kvt_policy_ops_t *ops = kvt_policy_ops (host->policy);
    void *state = kvt_policy_state (host->policy);
    if (t_held (host, block->id)) {
        ops->on_access (state, block);
        return 0;
    }
    bool one_shot = (block->id >> 20) >= T_ONE_SHOT;
    host->one_shot_offers += one_shot;
    if (ops->admit && !ops->admit (state, block))
        return block->id;
    uint64_t victim = 0;
    if (host->count == host->capacity) {
        victim = ops->choose_victim (state, block);
        if (victim == block->id)
            return victim;
        assert (t_held (host, victim));
        if (host->closed)
            assert (!t_held (host, victim + 1));            //  A leaf
        uint32_t at = kvt_idmap_remove (&host->held, victim);
        host->ids [at] = host->ids [--host->count];
        if (at < host->count)
            kvt_idmap_put (&host->held, host->ids [at], at);
        ops->on_evict (state, victim);
    }
    kvt_idmap_put (&host->held, block->id, (uint32_t) host->count);
    host->ids [host->count++] = block->id;
    host->one_shot_kept += one_shot;
    ops->on_insert (state, block);
    return victim;
}

//  One request: the first 'length' blocks of 'chain' at clock 'now', the
//  last one partial if 'partial'. Counts the cached lead as hits.
static void
t_request (t_host_t *host, uint64_t chain, uint32_t length, int64_t now, bool partial)
{
    const kvt_policy_ops_t *ops = kvt_policy_ops (host->policy);
    void *state = kvt_policy_state (host->policy);
    kvt_policy_block_t blocks [64];
    assert (length <= 64);
    uint32_t hit = 0;
    while (hit < length && t_held (host, t_id (chain, hit)))
        hit++;
    host->hits += hit;
    host->blocks += length;
    for (uint32_t j = 0; j < length; j++) {
        blocks [j] = (kvt_policy_block_t) {
            .id = t_id (chain, j), .depth = j, .block_tokens = 512, .now = now,
            .parent = j? t_id (chain, j - 1): KVT_POLICY_NO_PARENT,
            .next_use = KVT_POLICY_UNKNOWN };
        if (j < hit)
            blocks [j].flags |= KVT_POLICY_BLOCK_HIT;
        if (partial && j + 1 == length)
            blocks [j].flags |= KVT_POLICY_BLOCK_PARTIAL;
    }
    if (ops->begin_request)
        ops->begin_request (state, blocks, length, hit);
    for (uint32_t j = 0; j < length; j++)
        t_offer (host, &blocks [j]);
    if (ops->end_request)
        ops->end_request (state);
    assert (host->count <= host->capacity);
    if (host->closed)
        for (size_t i = 0; i < host->count; i++) {
            uint64_t id = host->ids [i];
            assert ((id & 0xFFFFF) == 1 || t_held (host, id - 1));     //  Prefix-closed
        }
}

//  A mixed workload: even clocks are one-shot requests of 4 new blocks,
//  never seen again; odd clocks are turns of 15 conversations, each
//  coming back every 30 requests for 6 turns with 2 more blocks a turn.
//  Returns the conversations' hits over the second half / their blocks,
//  and the share of one-shot offers the cache took in *one_shot_kept.
static double
t_mixed (t_host_t *host, int64_t requests, double *one_shot_kept)
{
    uint64_t hits = 0, blocks = 0;
    for (int64_t now = 0; now < requests; now++) {
        uint64_t before_hits = host->hits, before_blocks = host->blocks;
        if (now % 2 == 0) {
            t_request (host, (uint64_t) T_ONE_SHOT + (uint64_t) now, 4, now, false);
            continue;
        }
        int64_t slot = (now / 2) % 15;          //  Conversation slot
        int64_t turn = (now / 30) % 6;          //  Its turn, 0..5
        int64_t generation = now / 180;         //  A new conversation per 6 turns
        uint64_t chain = (uint64_t) (generation * 15 + slot);
        t_request (host, chain, (uint32_t) (2 * turn + 2), now, false);
        if (now >= requests / 2) {
            hits += host->hits - before_hits;
            blocks += host->blocks - before_blocks;
        }
    }
    *one_shot_kept = (double) host->one_shot_kept / (double) host->one_shot_offers;
    return (double) hits / (double) blocks;
}

//  --------------------------------------------------------------------------
//  Selftest

int
kvt_policy_density_test (bool verbose)
{
    //  @selftest
    //  Age bins: exact below 4, 4 per octave after, widths cover every age
    assert (kvt_policy_density_bin (0) == 0 && kvt_policy_density_bin (3) == 3 && kvt_policy_density_bin (4) == 8 && kvt_policy_density_bin (5) == 9);
    assert (kvt_policy_density_bin (8) == 12 && kvt_policy_density_bin (1 << 10) == 40 && kvt_policy_density_bin (INT64_C (1) << 40) == KVT_POLICY_DENSITY_BINS - 1);
    assert (kvt_policy_density_bin (-5) == 0);
    double widths = 0;
    for (int bin = 0; bin < KVT_POLICY_DENSITY_BINS; bin++)
        widths += (double) ((bin + 1 < KVT_POLICY_DENSITY_BINS? kvt_policy_density_bin_start (bin + 1): KVT_POLICY_DENSITY_AGE_LIMIT)
                            - kvt_policy_density_bin_start (bin));
    assert (widths == KVT_POLICY_DENSITY_AGE_LIMIT);

    //  Options
    assert (kvt_policy_builtin_find ("prefix-density") == &kvt_policy_density_ops);
    assert (kvt_policy_new ("prefix-density", 4, "samples=0") == NULL);
    assert (kvt_policy_new ("prefix-density", 4, "gap=2") == NULL);
    assert (kvt_policy_new ("prefix-density", 4, "seed=x") == NULL);
    assert (kvt_policy_new ("prefix-density", 4, "ghost=0") == NULL);
    assert (kvt_policy_new ("prefix-density", 4, "history=100") == NULL);
    kvt_policy_t *tuned = kvt_policy_new ("prefix-density", 4,
                                          "seed=7,samples=8,gap=0,ghost=4,history=2");
    assert (tuned);
    kvt_policy_destroy (&tuned);

    //  Partial blocks and orphans are declined; on chains the victim is a
    //  leaf (the host asserts it) and the parent of an offer is never taken
    t_host_t host;
    t_host_init (&host, "prefix-density", 3, NULL);
    const kvt_policy_ops_t *ops = kvt_policy_ops (host.policy);
    void *state = kvt_policy_state (host.policy);
    kvt_policy_block_t b = { .id = t_id (9, 0), .parent = KVT_POLICY_NO_PARENT,
                             .flags = KVT_POLICY_BLOCK_PARTIAL, .now = 0 };
    assert (!ops->admit (state, &b));
    b = (kvt_policy_block_t) { .id = t_id (9, 1), .parent = t_id (9, 0), .depth = 1 };
    assert (!ops->admit (state, &b));
    t_request (&host, 1, 3, 0, false);
    assert (host.count == 3);
    t_request (&host, 2, 1, 1, false);                  //  Evicts leaf t_id (1, 2)
    assert (host.count == 3 && t_held (&host, t_id (2, 0)) && !t_held (&host, t_id (1, 2)));
    t_request (&host, 3, 2, 2, true);                   //  Partial tail not kept
    assert (!t_held (&host, t_id (3, 1)));
    //  A host dropping a parent (live index) leaves its child a root leaf
    t_host_fini (&host);
    t_host_init (&host, "prefix-density", 4, NULL);
    ops = kvt_policy_ops (host.policy);
    state = kvt_policy_state (host.policy);
    t_request (&host, 4, 3, 0, false);
    ops->on_evict (state, t_id (4, 1));
    kvt_policy_block_t none = { .id = 0, .now = 1 };
    for (int ask = 0; ask < 8; ask++) {
        uint64_t victim = ops->choose_victim (state, &none);
        assert (victim == t_id (4, 0) || victim == t_id (4, 2));
    }
    t_host_fini (&host);

    //  A class reused soon is kept, a class never reused is evicted:
    //  conversations coming back every 30 requests against one-shot
    //  requests, at 64 blocks (LRU cannot keep a conversation 30 requests)
    double lru_one_shot, density_one_shot, again_one_shot;
    t_host_init (&host, "lru", 64, NULL);
    double lru = t_mixed (&host, 40000, &lru_one_shot);
    t_host_fini (&host);
    t_host_init (&host, "prefix-density", 64, NULL);
    double density = t_mixed (&host, 40000, &density_one_shot);
    state = kvt_policy_state (host.policy);
    uint64_t declined = kvt_policy_density_declined (state);
    //  What it learned: a conversation's blocks (gap bucket of 30 requests,
    //  offered before) are denser than new blocks of a first turn
    int gap_bucket = 1 + (63 - __builtin_clzll (31)) / 2;
    double dense_old = kvt_policy_density_at (state, gap_bucket * 2 + 1, 0);
    double dense_new = kvt_policy_density_at (state, 0, 0);
    t_host_fini (&host);
    t_host_init (&host, "prefix-density", 64, NULL);
    double again = t_mixed (&host, 40000, &again_one_shot);
    t_host_fini (&host);
    if (verbose)
        printf (" * prefix-density: conversation hits %.3f (lru %.3f), one-shot blocks kept "
                "%.3f (lru %.3f), declined %" PRIu64 ", density %.2e vs %.2e\n",
                density, lru, density_one_shot, lru_one_shot, declined, dense_old, dense_new);
    fflush (stdout);
    assert (again == density && again_one_shot == density_one_shot);   //  Deterministic
    assert (dense_old > 4 * dense_new);
    assert (density > 0.3 && density > 3 * lru);
    assert (density_one_shot < 0.5 && lru_one_shot == 1);
    assert (declined > 0);
    //  @end
    return 0;
}
