/*  =========================================================================
    kvt_policy - eviction and admission policies for one cache tier

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A policy decides, for one tier of fixed-size blocks, which offered
    blocks to keep and which cached block to give up. It never moves bytes
    and never owns the blocks: its host (the prefix index actor, which
    sees every use, insert, move and removal, or the simulator) owns the
    cached set and calls the policy in this order for
    each request, with the request's blocks in prefix order:

        begin_request (all blocks, hit_count)       optional
        for each block:
            cached?     on_access (block)
            else        admit (block)?              optional, NULL = keep all
                        if the tier is full:
                            victim = choose_victim (block)
                            victim == block->id:    decline the block
                            else                    on_evict (victim), host drops it
                        on_insert (block)
        end_request ()                              optional

    The blocks array given to begin_request stays valid, unchanged, until
    end_request, and on_access / on_insert get pointers into it.
    A policy whose begin_request or end_request has work in proportion
    to the request (a 65536-block prefix) may leave it for catch_up: its
    host then calls catch_up (most) until it returns false, after
    begin_request (before the request's accesses) and again after
    end_request (before its next call), a few units at a time between
    its other work (the prefix index's policy slices; the simulator never
    calls it). The policy finishes what is left itself in any call whose
    answer or state depends on it, so its decisions do not depend on when
    catch_up ran. Work left by end_request must not read the blocks
    array (it is gone).
    on_evict is also called when the host drops a block for its own
    reasons (invalidation, tier shrink). choose_victim must return a block
    the policy was told is cached, or the incoming id. Policies are pure
    C, single-threaded (one instance per tier per actor), and allocate
    only bookkeeping memory.
@discuss
    Plugins: a shared object exporting
        const kvt_policy_ops_t *kvt_policy_plugin_v1 (void);
    is loaded by kvt_policy_new ("plugin:/path/x.so", ...). Its ops->abi
    must be KVT_POLICY_ABI, or 1 (a vtable without catch_up). A policy in another process, in any language,
    speaks POLICY_EVENTS / POLICY_VICTIMS over ZeroMQ (kvt_policy_remote.h,
    messages/PROTOCOL.md). In the runtime, `migration/policy` names the
    policy and the prefix index hosts it (actors/kvt_prefix_index.c).
@end
*/

#ifndef KVT_POLICY_H_INCLUDED
#define KVT_POLICY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_POLICY_ABI          2               //  Version of kvt_policy_ops_t (2: catch_up)
#define KVT_POLICY_NO_PARENT    UINT64_MAX      //  parent of a block at depth 0
#define KVT_POLICY_NEVER        INT64_MAX       //  next_use: never used again
#define KVT_POLICY_UNKNOWN      (-1)            //  next_use: no oracle (live runs)

#define KVT_POLICY_BLOCK_PARTIAL  1u            //  Last block of a prompt, not full
#define KVT_POLICY_BLOCK_HIT      2u            //  Was in the request's cached lead
#define KVT_POLICY_BLOCK_DEMOTED  4u            //  Offered by a higher tier (its parent
                                                //  may be cached up there)

//  What a policy learns about one block at one use
typedef struct {
    uint64_t id;                    //  Chained block hash (covers its prefix)
    uint64_t parent;                //  Id of the block before it, or KVT_POLICY_NO_PARENT
    uint32_t depth;                 //  Blocks before it in its sequence
    uint32_t flags;                 //  KVT_POLICY_BLOCK_* bits
    uint32_t sharers;               //  Live sequences using it now (0 = unknown)
    uint32_t block_tokens;          //  Tokens in a full block
    float recompute_us;             //  Modeled cost to prefill it again
    float fetch_us;                 //  Modeled cost to fetch it from the tier below
    int64_t now;                    //  Logical clock: requests begun so far
    int64_t next_use;               //  Oracle: next request using it (simulation only)
} kvt_policy_block_t;

//  Arguments to create a policy
typedef struct {
    size_t capacity;                //  Blocks the tier holds
    const char *options;            //  "key=value,key=value" or NULL
} kvt_policy_args_t;

//  The vtable every policy, built-in or plugin, provides
typedef struct {
    uint32_t abi;                   //  KVT_POLICY_ABI
    const char *name;               //  Short name, as given to --policy
    const char *summary;            //  One line for --list-policies
    void *(*create) (const kvt_policy_args_t *args);   //  NULL if options are bad
    void (*destroy) (void **state_p);                   //  Frees state, nulls pointer
    void (*begin_request) (void *state, const kvt_policy_block_t *blocks,
                           size_t block_count, size_t hit_count);  //  Optional
    void (*on_access) (void *state, const kvt_policy_block_t *block);  //  Cached, used again
    bool (*admit) (void *state, const kvt_policy_block_t *block);   //  Optional, NULL = all
    uint64_t (*choose_victim) (void *state, const kvt_policy_block_t *incoming);
    void (*on_insert) (void *state, const kvt_policy_block_t *block);  //  Now cached
    void (*on_evict) (void *state, uint64_t id);        //  No longer cached
    void (*end_request) (void *state);                  //  Optional
    //  ABI 2. Optional: at most 'most' units (about one call's work each)
    //  of what begin_request or end_request left; true while more waits
    bool (*catch_up) (void *state, size_t most);
} kvt_policy_ops_t;

//  What a plugin shared object exports (one symbol, C linkage)
typedef const kvt_policy_ops_t *(kvt_policy_plugin_fn) (void);
#define KVT_POLICY_PLUGIN_SYMBOL "kvt_policy_plugin_v1"

//  A policy instance: ops + state (+ the plugin handle it came from)
typedef struct _kvt_policy_t kvt_policy_t;

//  Create policy 'name' for a tier of 'capacity' blocks. 'name' is a
//  built-in name or "plugin:PATH" for a shared object. Returns NULL and
//  logs why when the name, plugin or options are bad.
kvt_policy_t *
    kvt_policy_new (const char *name, size_t capacity, const char *options);

//  Destroy; NULL-safe, nulls the caller's pointer, unloads a plugin.
void
    kvt_policy_destroy (kvt_policy_t **self_p);

//  Return an independent copy of a built-in policy that can be copied
//  (prefix-adaptive, prefix-density), taken between requests: it answers
//  as the original would. NULL for other policies, or mid-request.
kvt_policy_t *
    kvt_policy_clone (kvt_policy_t *self);

//  Borrow the policy's vtable and state (hosts call ops directly on the
//  hot path: ops->on_access (state, block)).
const kvt_policy_ops_t *
    kvt_policy_ops (kvt_policy_t *self);
void *
    kvt_policy_state (kvt_policy_t *self);

//  Return the name of the policy.
const char *
    kvt_policy_name (kvt_policy_t *self);

//  Number of built-in policies, and the vtable of built-in 'index'.
size_t
    kvt_policy_builtin_count (void);
const kvt_policy_ops_t *
    kvt_policy_builtin (size_t index);

//  Find a built-in by name; NULL if none.
const kvt_policy_ops_t *
    kvt_policy_builtin_find (const char *name);

//  Read option 'key' from "k=v,k=v" into *value; returns 0, -ENOENT if
//  absent, -EINVAL if not a number. Helper for policy create functions.
int
    kvt_policy_option (const char *options, const char *key, double *value);

//  Built-in vtables (one per policy file)
extern const kvt_policy_ops_t kvt_policy_lru_ops;       //  vLLM-style LRU
extern const kvt_policy_ops_t kvt_policy_lru_leaf_ops;  //  SGLang radix leaf-first LRU
extern const kvt_policy_ops_t kvt_policy_token_age_ops; //  Leaf-first, aged in tokens
extern const kvt_policy_ops_t kvt_policy_s3fifo_ops;    //  S3-FIFO with ghost admission
extern const kvt_policy_ops_t kvt_policy_prefix_value_ops;  //  Ours: learned value per block
extern const kvt_policy_ops_t kvt_policy_adaptive_ops;  //  Ours: admission by miniature caches
extern const kvt_policy_ops_t kvt_policy_density_ops;   //  Ours: hit density from a ghost sample
extern const kvt_policy_ops_t kvt_policy_auto_ops;      //  Ours: adaptive or density, by shadows
extern const kvt_policy_ops_t kvt_policy_belady_ops;    //  Offline optimum (needs next_use)
extern const kvt_policy_ops_t kvt_policy_oracle_reuse_ops;  //  Knows only "ever reused?"

//  Selftest
int
    kvt_policy_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
