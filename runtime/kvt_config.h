/*  =========================================================================
    kvt_config - the runtime's configuration (ZPL, read with CZMQ zconfig)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    configs/default.cfg is compiled in and is also the schema: a key that
    is not in it is unknown, and a key whose default is an integer takes
    only integers. A file given with --config is overlaid on the default,
    then `-o path=value` overrides. Each error names the key.
@discuss
    Each actor gets its own copy (kvt_config_dup), so no two threads ever
    share a config object.
@end
*/

#ifndef KVT_CONFIG_H_INCLUDED
#define KVT_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_config_t kvt_config_t;

//  Create a config holding the embedded default.
kvt_config_t *
    kvt_config_new (void);

//  Destroy; NULL-safe, nulls the caller's pointer.
void
    kvt_config_destroy (kvt_config_t **self_p);

//  Deep copy.
kvt_config_t *
    kvt_config_dup (const kvt_config_t *self);

//  Overlay a ZPL file. Returns 0, -ENOENT if unreadable, or KVT_ECONFIG
//  with the reason (file, key) in 'error'.
int
    kvt_config_load (kvt_config_t *self, const char *path, char *error, size_t error_size);

//  Overlay ZPL text (as kvt_config_load, for tests and embedding).
int
    kvt_config_load_text (kvt_config_t *self, const char *text, char *error, size_t error_size);

//  Set "section/key" from "path=value" or from path and value. Returns 0
//  or KVT_ECONFIG (unknown key, or not an integer where one is needed).
int
    kvt_config_set (kvt_config_t *self, const char *path, const char *value,
                    char *error, size_t error_size);
int
    kvt_config_set_option (kvt_config_t *self, const char *assignment,
                           char *error, size_t error_size);

//  Value of a key as a string (borrowed); asserts the key exists, since
//  only keys of the default exist and code asks only for those.
const char *
    kvt_config_str (const kvt_config_t *self, const char *path);

//  Value of an integer key (validated when set, so this cannot fail).
int64_t
    kvt_config_int (const kvt_config_t *self, const char *path);

//  Check the values that have a fixed vocabulary (modes, log level,
//  device, policy names are checked by their owners). Returns 0 or
//  KVT_ECONFIG with the reason.
int
    kvt_config_validate (const kvt_config_t *self, char *error, size_t error_size);

//  Write the whole config as ZPL to 'path' (for actor processes).
int
    kvt_config_save (const kvt_config_t *self, const char *path);

//  The embedded default, as text.
const char *
    kvt_config_default_text (void);

#ifdef __cplusplus
}
#endif
#endif
