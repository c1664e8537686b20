/*  =========================================================================
    kvt_cmd_serve - `kvtier serve` and the internal `kvtier actor`

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <czmq.h>
#include "kvt_cmd.h"
#include "kvt_cmd_options.h"
#include "kvt_actors.h"

static const char *s_help =
    "usage: kvtier serve [--config FILE] [-o PATH=VALUE]...\n"
    "Run every actor (threads, or processes where <actor>/mode = process)\n"
    "and serve clients on scheduler/endpoint (tcp://127.0.0.1:5557) and\n"
    "scheduler/ipc_endpoint until SIGINT or SIGTERM.\n"
    KVT_CMD_CONFIG_HELP;

int
kvt_cmd_serve (int argc, char **argv)
{
    for (int k = 1; k < argc; k++)
        if (streq (argv [k], "--help") || streq (argv [k], "-h")) {
            fputs (s_help, stdout);
            return 0;
        }
    kvt_config_t *config = kvt_cmd_config_from_args (&argc, argv);
    if (!config)
        return 2;
    if (argc > 1) {
        fprintf (stderr, "kvtier serve: unexpected argument '%s'\n%s", argv [1], s_help);
        kvt_config_destroy (&config);
        return 2;
    }
    kvt_cmd_apply_log_level (config);
    zsys_init ();
    kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
    int rc = kvt_runtime_start (runtime);
    if (rc) {
        fprintf (stderr, "kvtier serve: cannot start: %s\n", kvt_strerror (rc));
        kvt_runtime_destroy (&runtime);
        kvt_config_destroy (&config);
        return 1;
    }
    printf ("kvtier serving on %s and %s\n", kvt_config_str (config, "scheduler/endpoint"),
            kvt_runtime_ipc_endpoint (runtime));
    fflush (stdout);
    while (!zsys_interrupted) {
        zclock_sleep (100);
        kvt_runtime_poll (runtime); //  Logs any actor process that died
    }
    printf ("kvtier: shutting down\n");
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    return 0;
}

int
kvt_cmd_actor (int argc, char **argv)
{
    return kvt_runtime_actor_process (argc, argv, kvt_actors_all ());
}
