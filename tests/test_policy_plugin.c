/*  =========================================================================
    test_policy_plugin - a policy loaded from a shared object decides

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Loads tests/plugins/test_policy.c (built as kvt_test_policy_plugin.so,
    path from KVT_TEST_POLICY_PLUGIN or beside this program), checks that
    it evicts the most recent block where LRU evicts the oldest, and that
    the simulator run with "plugin:PATH" differs from LRU on the same
    trace; and that the same plugin built with ABI 1's vtable
    (kvt_test_policy_plugin_v1.so, beside it) is loaded and decides too,
    without catch_up. Exit 0 pass, 1 fail, 77 skip when the plugin was not built.
@end
*/

#include <assert.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvt_trace.h"
#include "kvt_policy.h"
#include "kvt_sim.h"

//  Insert ids 1..4 into a 3-block tier under 'name'; return the victim
//  chosen for id 4.
static uint64_t
t_victim_for_fourth (const char *name)
{
    kvt_policy_t *policy = kvt_policy_new (name, 3, NULL);
    if (!policy)
        return 0;
    const kvt_policy_ops_t *ops = kvt_policy_ops (policy);
    void *state = kvt_policy_state (policy);
    kvt_policy_block_t block = { .parent = KVT_POLICY_NO_PARENT, .next_use = KVT_POLICY_UNKNOWN };
    for (uint64_t id = 1; id <= 3; id++) {
        block.id = id;
        block.now = (int64_t) id;
        ops->on_insert (state, &block);
    }
    block.id = 4;
    uint64_t victim = ops->choose_victim (state, &block);
    kvt_policy_destroy (&policy);
    return victim;
}

int
main (int argc, char *argv [])
{
    (void) argc;
    char path [PATH_MAX + 16];
    const char *env = getenv ("KVT_TEST_POLICY_PLUGIN");
    if (env)
        snprintf (path, sizeof (path), "%s", env);
    else {
        char self [PATH_MAX];
        ssize_t length = readlink ("/proc/self/exe", self, sizeof (self) - 1);
        if (length <= 0)
            snprintf (self, sizeof (self), "%s", argv [0]);
        else
            self [length] = 0;
        snprintf (path, sizeof (path), "%s/kvt_test_policy_plugin.so", dirname (self));
    }
    if (access (path, R_OK)) {
        fprintf (stderr, "test_policy_plugin: %s not built, skipping\n", path);
        return 77;
    }
    char name [PATH_MAX + 32];
    snprintf (name, sizeof (name), "plugin:%s", path);

    //  Directly: LRU evicts 1, the plugin (MRU) evicts 3
    if (t_victim_for_fourth ("lru") != 1)
        return 1;
    if (t_victim_for_fourth (name) != 3) {
        fprintf (stderr, "plugin did not choose the victim\n");
        return 1;
    }
    //  ABI 1: loaded, its vtable completed without catch_up (an ASan
    //  build would catch a read past its shorter vtable)
    char name_v1 [PATH_MAX + 32];
    size_t stem = strlen (name) - strlen (".so");
    snprintf (name_v1, sizeof (name_v1), "%.*s_v1.so", (int) stem, name);
    kvt_policy_t *v1 = kvt_policy_new (name_v1, 3, NULL);
    if (!v1 || kvt_policy_ops (v1)->abi != 1 || kvt_policy_ops (v1)->catch_up) {
        fprintf (stderr, "%s: not loaded as ABI 1\n", name_v1);
        return 1;
    }
    kvt_policy_destroy (&v1);
    if (t_victim_for_fourth (name_v1) != 3) {
        fprintf (stderr, "ABI 1 plugin did not choose the victim\n");
        return 1;
    }
    //  Through the simulator: A B C A B C with 2 blocks. LRU thrashes (0
    //  hits); MRU keeps A and gets hits.
    char trace_path [] = "/tmp/test_policy_plugin_XXXXXX";
    int fd = mkstemp (trace_path);
    if (fd < 0)
        return 1;
    FILE *file = fdopen (fd, "w");
    for (int round = 0; round < 4; round++)
        for (int id = 1; id <= 3; id++)
            fprintf (file, "{\"timestamp\": 0, \"input_length\": 512, \"output_length\": 1, "
                     "\"hash_ids\": [%d]}\n", id);
    fclose (file);
    kvt_trace_t *trace = kvt_trace_load (trace_path, NULL);
    unlink (trace_path);
    if (!trace)
        return 1;
    kvt_sim_t *sim = kvt_sim_new (trace);
    kvt_sim_config_t config;
    kvt_sim_config_defaults (&config, 2);
    kvt_sim_result_t lru, plugin;
    if (kvt_sim_run (sim, &config, &lru))
        return 1;
    config.policy = name;
    if (kvt_sim_run (sim, &config, &plugin))
        return 1;
    printf ("test_policy_plugin: lru %.3f, plugin (mru) %.3f\n", lru.hit_ratio, plugin.hit_ratio);
    if (!(lru.hit_blocks [0] == 0 && plugin.hit_blocks [0] > 0))
        return 1;
    kvt_sim_destroy (&sim);
    kvt_trace_destroy (&trace);
    return 0;
}
