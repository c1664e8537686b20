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
#include <dlfcn.h>

//  --------------------------------------------------------------------------
//  Structure of our class

struct _kvt_policy_t {
    const kvt_policy_ops_t *ops;    //  Vtable (built-in or from the plugin)
    void *state;                    //  What ops->create returned
    void *plugin;                   //  dlopen handle, or NULL for built-ins
    char *name;                     //  Name as given to kvt_policy_new
};

//  Every built-in, in --list-policies order
static const kvt_policy_ops_t *s_builtins [] = {
    &kvt_policy_lru_ops,
    &kvt_policy_lru_leaf_ops,
    &kvt_policy_s3fifo_ops,
    &kvt_policy_prefix_value_ops,
    &kvt_policy_belady_ops,
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

//  Check that a vtable is complete enough to host.
static bool
s_ops_valid (const kvt_policy_ops_t *ops)
{
    return ops && ops->abi == KVT_POLICY_ABI && ops->name && ops->create && ops->destroy
        && ops->on_access && ops->choose_victim && ops->on_insert && ops->on_evict;
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
            kvt_log_error ("policy %s: vtable is incomplete or not ABI %d", name, KVT_POLICY_ABI);
            self->ops = NULL;
            kvt_policy_destroy (&self);
            return NULL;
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
