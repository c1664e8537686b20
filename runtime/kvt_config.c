/*  =========================================================================
    kvt_config - the runtime's configuration (ZPL, read with CZMQ zconfig)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_layer_shard.h"

extern const char kvt_default_cfg [];   //  Generated from configs/default.cfg

struct _kvt_config_t {
    zconfig_t *root;                //  Effective values
    zconfig_t *schema;              //  The default, for key and type checks
};

const char *
kvt_config_default_text (void)
{
    return kvt_default_cfg;
}

static zconfig_t *
s_parse_text (const char *text)
{
    //  zconfig_str_load wants a mutable string
    char *copy = strdup (text);
    assert (copy);
    zconfig_t *root = zconfig_str_load (copy);
    free (copy);
    return root;
}

kvt_config_t *
kvt_config_new (void)
{
    kvt_config_t *self = (kvt_config_t *) kvt_zmalloc (sizeof (kvt_config_t));
    self->root = s_parse_text (kvt_default_cfg);
    self->schema = s_parse_text (kvt_default_cfg);
    assert (self->root && self->schema);        //  Checked by the selftest
    return self;
}

void
kvt_config_destroy (kvt_config_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        kvt_config_t *self = *self_p;
        zconfig_destroy (&self->root);
        zconfig_destroy (&self->schema);
        free (self);
        *self_p = NULL;
    }
}

//  zconfig_dup is a draft API; a save/load round trip is stable.
static zconfig_t *
s_copy_tree (zconfig_t *tree)
{
    char *text = zconfig_str_save (tree);
    assert (text);
    zconfig_t *copy = zconfig_str_load (text);
    free (text);
    assert (copy);
    return copy;
}

kvt_config_t *
kvt_config_dup (const kvt_config_t *self)
{
    kvt_config_t *copy = (kvt_config_t *) kvt_zmalloc (sizeof (kvt_config_t));
    copy->root = s_copy_tree (self->root);
    copy->schema = s_copy_tree (self->schema);
    return copy;
}

static bool
s_is_integer (const char *text)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    (void) value;
    return *end == 0 && errno == 0;
}

int
kvt_config_set (kvt_config_t *self, const char *path, const char *value,
                char *error, size_t error_size)
{
    zconfig_t *known = zconfig_locate (self->schema, path);
    if (!known || zconfig_child (known)) {
        snprintf (error, error_size, "unknown config key '%s'", path);
        return KVT_ECONFIG;
    }
    const char *default_value = zconfig_value (known);
    if (s_is_integer (default_value) && !s_is_integer (value)) {
        snprintf (error, error_size, "config key '%s' needs an integer, not '%s'", path, value);
        return KVT_ECONFIG;
    }
    zconfig_put (self->root, path, value);
    return 0;
}

int
kvt_config_set_option (kvt_config_t *self, const char *assignment, char *error,
                       size_t error_size)
{
    const char *equals = strchr (assignment, '=');
    if (!equals || equals == assignment) {
        snprintf (error, error_size, "option '%s' is not path=value", assignment);
        return KVT_ECONFIG;
    }
    char path [256];
    snprintf (path, sizeof (path), "%.*s", (int) (equals - assignment), assignment);
    return kvt_config_set (self, path, equals + 1, error, error_size);
}

//  Walk 'node' and set every leaf into self, building "a/b" paths.
static int
s_overlay (kvt_config_t *self, zconfig_t *node, const char *prefix, const char *source,
           char *error, size_t error_size)
{
    for (zconfig_t *child = zconfig_child (node); child; child = zconfig_next (child)) {
        char path [256];
        snprintf (path, sizeof (path), "%s%s%s", prefix, *prefix? "/": "", zconfig_name (child));
        int rc;
        if (zconfig_child (child))
            rc = s_overlay (self, child, path, source, error, error_size);
        else {
            const char *value = zconfig_value (child);
            rc = kvt_config_set (self, path, value? value: "", error, error_size);
            if (rc) {
                size_t used = strlen (error);
                snprintf (error + used, error_size - used, " (in %s)", source);
            }
        }
        if (rc)
            return rc;
    }
    return 0;
}

int
kvt_config_load_text (kvt_config_t *self, const char *text, char *error, size_t error_size)
{
    zconfig_t *overlay = s_parse_text (text);
    if (!overlay) {
        snprintf (error, error_size, "config text is not valid ZPL");
        return KVT_ECONFIG;
    }
    int rc = s_overlay (self, overlay, "", "text", error, error_size);
    zconfig_destroy (&overlay);
    return rc;
}

int
kvt_config_load (kvt_config_t *self, const char *path, char *error, size_t error_size)
{
    if (access (path, R_OK) != 0) {
        snprintf (error, error_size, "cannot read config file %s: %s", path, strerror (errno));
        return -ENOENT;
    }
    zconfig_t *overlay = zconfig_load (path);
    if (!overlay) {
        snprintf (error, error_size, "config file %s is not valid ZPL", path);
        return KVT_ECONFIG;
    }
    int rc = s_overlay (self, overlay, "", path, error, error_size);
    zconfig_destroy (&overlay);
    return rc;
}

const char *
kvt_config_str (const kvt_config_t *self, const char *path)
{
    zconfig_t *item = zconfig_locate (self->root, path);
    assert (item);                  //  Code asks only for keys of the default
    const char *value = zconfig_value (item);
    return value? value: "";
}

int64_t
kvt_config_int (const kvt_config_t *self, const char *path)
{
    return strtoll (kvt_config_str (self, path), NULL, 10);
}

static bool
s_one_of (const char *value, const char *const *choices)
{
    for (; *choices; choices++)
        if (streq (value, *choices))
            return true;
    return false;
}

int
kvt_config_validate (const kvt_config_t *self, char *error, size_t error_size)
{
    static const char *const modes [] = { "thread", "process", NULL };
    static const char *const levels [] = { "error", "warn", "info", "debug", NULL };
    static const char *const devices [] = { "auto", "cpu", "cuda", NULL };
    static const char *const actors [] = { "scheduler", "prefix_index", "tier_gpu",
        "tier_host", "tier_nvme", "migration", "compute", NULL };
    for (const char *const *actor = actors; *actor; actor++) {
        char path [64];
        snprintf (path, sizeof (path), "%s/mode", *actor);
        const char *mode = kvt_config_str (self, path);
        if (strncmp (mode, "with:", 5) == 0) {
            //  A guest in another actor's thread, in that actor's process:
            //  the host must run as a thread or a process of its own (not
            //  be a guest), and neither may be compute, whose handlers run long
            const char *host = mode + 5;
            char host_path [64];
            snprintf (host_path, sizeof (host_path), "%s/mode", host);
            bool known = s_one_of (host, actors) && !streq (host, *actor);
            if (!known || !s_one_of (kvt_config_str (self, host_path), modes)
            ||  streq (host, "compute") || streq (*actor, "compute")) {
                snprintf (error, error_size, "config key '%s' = '%s': the host must be another "
                          "actor whose mode is thread or process, and compute neither hosts "
                          "nor is hosted", path, mode);
                return KVT_ECONFIG;
            }
        }
        else
        if (!s_one_of (mode, modes)) {
            snprintf (error, error_size, "config key '%s' must be thread, process or with:ACTOR, "
                      "not '%s'", path, mode);
            return KVT_ECONFIG;
        }
    }
    if (!streq (kvt_config_str (self, "scheduler/mode"), "thread")) {
        snprintf (error, error_size, "config key 'scheduler/mode': the scheduler runs in "
                  "the supervisor's process (it is the front door); use thread");
        return KVT_ECONFIG;
    }
    if (!s_one_of (kvt_config_str (self, "runtime/log_level"), levels)) {
        snprintf (error, error_size, "config key 'runtime/log_level' must be error, warn, "
                  "info or debug, not '%s'", kvt_config_str (self, "runtime/log_level"));
        return KVT_ECONFIG;
    }
    static const char *const switches [] = { "auto", "on", "off", NULL };
    if (!s_one_of (kvt_config_str (self, "tier_nvme/direct"), switches)) {
        snprintf (error, error_size, "config key 'tier_nvme/direct' must be auto, on or off, "
                  "not '%s'", kvt_config_str (self, "tier_nvme/direct"));
        return KVT_ECONFIG;
    }
    if (!s_one_of (kvt_config_str (self, "compute/device"), devices)) {
        snprintf (error, error_size, "config key 'compute/device' must be auto, cpu or cuda, "
                  "not '%s'", kvt_config_str (self, "compute/device"));
        return KVT_ECONFIG;
    }
    static const char *const positive [] = { "model/layers", "model/heads", "model/kv_heads",
        "model/head_dim", "model/hidden", "model/intermediate", "model/vocab",
        "model/block_tokens", "tier_gpu/capacity_blocks", "tier_host/capacity_blocks",
        "tier_nvme/capacity_blocks", "tier_nvme/queue_depth", "prefix_index/max_blocks",
        "scheduler/max_frame_bytes", "scheduler/max_queue", "runtime/start_timeout_ms",
        "runtime/call_timeout_ms", "runtime/compute_timeout_ms", "demo/tokens_per_hash",
        "migration/background_batch", "migration/promote_piece_kib", NULL };
    for (const char *const *key = positive; *key; key++)
        if (kvt_config_int (self, *key) <= 0) {
            snprintf (error, error_size, "config key '%s' must be > 0, not %s", *key,
                      kvt_config_str (self, *key));
            return KVT_ECONFIG;
        }
    static const char *const not_negative [] = { "tier_nvme/queue_mib",
        "prefix_index/policy_slice_us", NULL };
    for (const char *const *key = not_negative; *key; key++)
        if (kvt_config_int (self, *key) < 0) {
            snprintf (error, error_size, "config key '%s' must be >= 0, not %s", *key,
                      kvt_config_str (self, *key));
            return KVT_ECONFIG;
        }
    if (kvt_config_int (self, "model/heads") % kvt_config_int (self, "model/kv_heads")) {
        snprintf (error, error_size, "config key 'model/kv_heads' must divide model/heads");
        return KVT_ECONFIG;
    }
    double fraction;
    const char *text = kvt_config_str (self, KVT_LAYER_SHARD_KEY);
    if (kvt_layer_shard_parse (text, &fraction)) {
        snprintf (error, error_size, "config key '%s' must be a number in (0, 1] (the share "
                  "of each block's layers kept on the GPU; 1 = off), not '%s'",
                  KVT_LAYER_SHARD_KEY, text);
        return KVT_ECONFIG;
    }
    return 0;
}

int
kvt_config_save (const kvt_config_t *self, const char *path)
{
    return zconfig_save (self->root, path) == 0? 0: -errno;
}

int
kvt_config_test (bool verbose)
{
    (void) verbose;
    char error [256];
    kvt_config_t *config = kvt_config_new ();
    assert (kvt_config_validate (config, error, sizeof (error)) == 0);
    assert (streq (kvt_config_str (config, "scheduler/endpoint"), "tcp://127.0.0.1:5557"));
    assert (kvt_config_int (config, "model/block_tokens") == 16);

    //  -o overrides; unknown keys and non-integers are errors naming the key
    assert (kvt_config_set_option (config, "tier_gpu/capacity_blocks=77", error, sizeof (error)) == 0);
    assert (kvt_config_int (config, "tier_gpu/capacity_blocks") == 77);
    assert (kvt_config_set_option (config, "tier_gpu/capacty=1", error, sizeof (error)) == KVT_ECONFIG);
    assert (strstr (error, "tier_gpu/capacty"));
    assert (kvt_config_set_option (config, "model/layers=two", error, sizeof (error)) == KVT_ECONFIG);
    assert (strstr (error, "model/layers") && strstr (error, "integer"));
    assert (kvt_config_set_option (config, "noequals", error, sizeof (error)) == KVT_ECONFIG);

    //  Overlay text: known keys change, an unknown section is refused
    assert (kvt_config_load_text (config, "migration\n    mode = process\n", error, sizeof (error)) == 0);
    assert (streq (kvt_config_str (config, "migration/mode"), "process"));
    assert (kvt_config_load_text (config, "warp\n    speed = 9\n", error, sizeof (error)) == KVT_ECONFIG);
    assert (strstr (error, "warp/speed"));

    //  Validation names the key
    assert (kvt_config_set_option (config, "tier_host/mode=fiber", error, sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == KVT_ECONFIG);
    assert (strstr (error, "tier_host/mode"));
    assert (kvt_config_set_option (config, "tier_host/mode=with:compute", error, sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == KVT_ECONFIG);
    assert (kvt_config_set_option (config, "tier_host/mode=with:scheduler", error, sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == 0);
    //  A guest goes where its host goes, into a process too; never a
    //  guest's guest
    assert (kvt_config_set_option (config, "migration/mode=process", error, sizeof (error)) == 0);
    assert (kvt_config_set_option (config, "tier_host/mode=with:migration", error,
                                   sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == 0);
    assert (kvt_config_set_option (config, "tier_gpu/mode=with:tier_host", error,
                                   sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == KVT_ECONFIG);
    assert (strstr (error, "tier_gpu/mode"));
    assert (kvt_config_set_option (config, "tier_gpu/mode=with:migration", error,
                                   sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == 0);
    assert (kvt_config_set_option (config, "tier_host/mode=thread", error, sizeof (error)) == 0);
    assert (kvt_config_set_option (config, "tier_nvme/direct=maybe", error, sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == KVT_ECONFIG);
    assert (strstr (error, "tier_nvme/direct") && strstr (error, "maybe"));
    assert (kvt_config_set_option (config, "tier_nvme/direct=off", error, sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == 0);
    assert (kvt_config_set_option (config, "model/kv_heads=3", error, sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == KVT_ECONFIG);
    assert (strstr (error, "kv_heads"));
    assert (kvt_config_load (config, "/nonexistent/kvtier.cfg", error, sizeof (error)) == -ENOENT);

    //  Static layer sharding's fraction must be in (0, 1]; the error names it
    kvt_config_set_option (config, "model/kv_heads=2", error, sizeof (error));
    const char *bad_fractions [] = { "0", "1.5", "-0.5", "half", "0.5x", "nan", NULL };
    for (const char **bad = bad_fractions; *bad; bad++) {
        assert (kvt_config_set (config, KVT_LAYER_SHARD_KEY, *bad, error, sizeof (error)) == 0);
        error [0] = 0;
        assert (kvt_config_validate (config, error, sizeof (error)) == KVT_ECONFIG);
        assert (strstr (error, "tier_gpu/layer_fraction") && strstr (error, *bad));
    }
    assert (kvt_config_set_option (config, "tier_gpu/layer_fraction=0.25", error,
                                   sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == 0);
    assert (kvt_config_set_option (config, "tier_gpu/layer_fraction=1.0", error,
                                   sizeof (error)) == 0);
    assert (kvt_config_validate (config, error, sizeof (error)) == 0);

    //  Save and reload round-trips
    kvt_config_set_option (config, "model/kv_heads=2", error, sizeof (error));
    char path [] = "/tmp/kvt-config-test-XXXXXX";
    int fd = mkstemp (path);
    assert (fd >= 0);
    close (fd);
    assert (kvt_config_save (config, path) == 0);
    kvt_config_t *loaded = kvt_config_new ();
    assert (kvt_config_load (loaded, path, error, sizeof (error)) == 0);
    assert (kvt_config_int (loaded, "tier_gpu/capacity_blocks") == 77);
    assert (streq (kvt_config_str (loaded, "migration/mode"), "process"));
    unlink (path);
    kvt_config_t *copy = kvt_config_dup (loaded);
    kvt_config_destroy (&loaded);
    assert (kvt_config_int (copy, "tier_gpu/capacity_blocks") == 77);
    kvt_config_destroy (&copy);
    kvt_config_destroy (&config);
    kvt_config_destroy (&config);   //  Twice is safe
    return 0;
}
