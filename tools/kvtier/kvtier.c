/*  =========================================================================
    kvtier - the command: serve, client, replay, demo, bench

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <stdio.h>
#include <string.h>
#include "kvt_cmd.h"

typedef struct {
    const char *name;               //  Subcommand as typed
    int (*run) (int argc, char **argv);
    const char *summary;            //  One line for `kvtier --help`
} s_command_t;

static const s_command_t s_commands [] = {
    { "serve",  kvt_cmd_serve,  "run the runtime (scheduler front door on ZeroMQ) until SIGINT" },
    { "client", kvt_cmd_client, "hello | lookup | store | load | generate | stats | demote against a server" },
    { "replay", kvt_cmd_replay, "replay a Mooncake JSONL trace (live, or --simulate policies)" },
    { "demo",   kvt_cmd_demo,   "replay the bundled trace slice in-process and print a report" },
    { "bench",  kvt_cmd_bench,  "runtime | kernels | transfer | nvme | host | model benchmarks" },
    { "actor",  kvt_cmd_actor,  "(internal) run one actor as its own process" },
    { NULL, NULL, NULL }
};

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: kvtier COMMAND [options]   (kvtier COMMAND --help for more)\n\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        fprintf (out, "  %-8s %s\n", c->name, c->summary);
}

int
main (int argc, char *argv [])
{
    if (argc < 2 || strcmp (argv [1], "--help") == 0 || strcmp (argv [1], "-h") == 0) {
        s_usage (argc < 2? stderr: stdout);
        return argc < 2? 2: 0;
    }
    for (const s_command_t *c = s_commands; c->name; c++)
        if (strcmp (argv [1], c->name) == 0)
            return c->run (argc - 1, argv + 1);
    fprintf (stderr, "kvtier: unknown command '%s'\n", argv [1]);
    s_usage (stderr);
    return 2;
}
