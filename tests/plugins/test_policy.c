/*  =========================================================================
    test_policy - a policy plugin for tests: evicts the most recent block

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Built as the MODULE library kvt_test_policy_plugin.so. It keeps a small
    array of cached ids in insertion/use order and always evicts the most
    recently used one (MRU): the opposite of LRU, so a test can see that
    the plugin, not a built-in, chose the victims. It is also the smallest
    example of a policy plugin: one exported symbol returning the vtable.
    Built once more as kvt_test_policy_plugin_v1.so with
    KVT_TEST_POLICY_ABI1: then its vtable is ABI 1's, which ends before
    catch_up, as a plugin built before ABI 2 has it.
@end
*/

#include <stdlib.h>
#include <string.h>
#include "kvt_policy.h"

typedef struct {
    uint64_t *ids;                  //  Cached ids, oldest first
    size_t count;                   //  Entries used
    size_t max;                     //  Entries allocated
} s_mru_t;

//  Create; NULL if memory is short (plugins report, never abort).
static void *
s_create (const kvt_policy_args_t *args)
{
    s_mru_t *self = (s_mru_t *) calloc (1, sizeof (s_mru_t));
    if (!self)
        return NULL;
    self->max = args->capacity + 1;
    self->ids = (uint64_t *) calloc (self->max, sizeof (uint64_t));
    if (!self->ids) {
        free (self);
        return NULL;
    }
    return self;
}

//  Destroy; nulls *state_p.
static void
s_destroy (void **state_p)
{
    s_mru_t *self = (s_mru_t *) *state_p;
    if (self) {
        free (self->ids);
        free (self);
        *state_p = NULL;
    }
}

//  Forget 'id'.
static void
s_remove (s_mru_t *self, uint64_t id)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->ids [i] == id) {
            memmove (self->ids + i, self->ids + i + 1, (self->count - i - 1) * sizeof (uint64_t));
            self->count--;
            return;
        }
}

//  Append 'id' as the most recent.
static void
s_append (s_mru_t *self, uint64_t id)
{
    if (self->count == self->max) {
        uint64_t *bigger = (uint64_t *) realloc (self->ids, self->max * 2 * sizeof (uint64_t));
        if (!bigger)
            abort ();
        self->ids = bigger;
        self->max *= 2;
    }
    self->ids [self->count++] = id;
}

//  Used or inserted: 'id' becomes the most recent.
static void
s_on_access (void *state, const kvt_policy_block_t *block)
{
    s_mru_t *self = (s_mru_t *) state;
    s_remove (self, block->id);
    s_append (self, block->id);
}

//  The most recent block (MRU), the opposite of LRU.
static uint64_t
s_choose_victim (void *state, const kvt_policy_block_t *incoming)
{
    s_mru_t *self = (s_mru_t *) state;
    return self->count? self->ids [self->count - 1]: incoming->id;
}

//  The host dropped 'id'.
static void
s_on_evict (void *state, uint64_t id)
{
    s_remove ((s_mru_t *) state, id);
}

#ifdef KVT_TEST_POLICY_ABI1
//  kvt_policy_ops_t as ABI 1 had it: the same fields, up to end_request
typedef struct {
    uint32_t abi;
    const char *name, *summary;
    void *(*create) (const kvt_policy_args_t *args);
    void (*destroy) (void **state_p);
    void (*begin_request) (void *state, const kvt_policy_block_t *blocks,
                           size_t block_count, size_t hit_count);
    void (*on_access) (void *state, const kvt_policy_block_t *block);
    bool (*admit) (void *state, const kvt_policy_block_t *block);
    uint64_t (*choose_victim) (void *state, const kvt_policy_block_t *incoming);
    void (*on_insert) (void *state, const kvt_policy_block_t *block);
    void (*on_evict) (void *state, uint64_t id);
    void (*end_request) (void *state);
} s_ops_t;
#   define S_ABI 1
#else
typedef kvt_policy_ops_t s_ops_t;
#   define S_ABI KVT_POLICY_ABI
#endif

static const s_ops_t s_ops = {
    .abi = S_ABI,
    .name = "test-mru",
    .summary = "test plugin: evict the most recently used block",
    .create = s_create,
    .destroy = s_destroy,
    .on_access = s_on_access,
    .choose_victim = s_choose_victim,
    .on_insert = s_on_access,
    .on_evict = s_on_evict,
};

//  The plugin entry point: returns our vtable.
const kvt_policy_ops_t *
kvt_policy_plugin_v1 (void)
{
    return (const kvt_policy_ops_t *) &s_ops;
}
