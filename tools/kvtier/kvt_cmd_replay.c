/*  =========================================================================
    kvt_cmd_replay - `kvtier replay TRACE`: drive a live server with a trace

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <czmq.h>
#include "kvt_cmd.h"
#include "kvt_replay.h"
#include "kvt_trace.h"

static const char *s_help =
    "usage: kvtier replay TRACE [options]\n"
    "Replay a Mooncake-format JSONL trace (timestamp, input_length, output_length,\n"
    "hash_ids of 512-token blocks) against a running server, one request at a\n"
    "time in trace order; equal hash ids make equal token blocks, so the trace's\n"
    "prefix reuse is reuse in kvtier. Prints a report.\n"
    "  --endpoint EP          server front door (default tcp://127.0.0.1:5557)\n"
    "  --requests N           replay only the first N requests\n"
    "  --tokens-per-hash N    tokens made per trace block id (default 512)\n"
    "  --max-new N            cap decode steps per request (default: the trace's)\n"
    "  --simulate             no server: replay through the policy simulator\n"
    "  --list-policies | --curve   simulator modes (see kvtier replay --simulate --help)\n";

int
kvt_cmd_replay (int argc, char **argv)
{
    for (int k = 1; k < argc; k++)
        if (streq (argv [k], "--simulate") || streq (argv [k], "--list-policies")
        ||  streq (argv [k], "--curve"))
            return kvt_simulate_main (argc, argv);
    const char *trace_path = NULL, *endpoint = "tcp://127.0.0.1:5557";
    kvt_replay_options_t options = { 0, KVT_TRACE_BLOCK_TOKENS, 0, true };
    for (int k = 1; k < argc; k++) {
        const char *value = k + 1 < argc? argv [k + 1]: NULL;
        if (streq (argv [k], "--help") || streq (argv [k], "-h")) {
            fputs (s_help, stdout);
            return 0;
        }
        else
        if (streq (argv [k], "--endpoint") && value)
            endpoint = argv [++k];
        else
        if (streq (argv [k], "--requests") && value)
            options.max_requests = (size_t) atol (argv [++k]);
        else
        if (streq (argv [k], "--tokens-per-hash") && value)
            options.tokens_per_hash = atoi (argv [++k]);
        else
        if (streq (argv [k], "--max-new") && value)
            options.max_new_tokens = atoi (argv [++k]);
        else
        if (argv [k][0] != '-' && !trace_path)
            trace_path = argv [k];
        else {
            fprintf (stderr, "kvtier replay: bad argument '%s'\n%s", argv [k], s_help);
            return 2;
        }
    }
    if (!trace_path || options.tokens_per_hash <= 0) {
        fputs (s_help, stderr);
        return 2;
    }
    char *error = NULL;
    kvt_trace_t *trace = kvt_trace_load (trace_path, &error);
    if (!trace) {
        fprintf (stderr, "kvtier replay: %s\n", error? error: "cannot load trace");
        free (error);
        return 1;
    }
    kvt_replay_result_t result;
    int rc = kvt_replay_run (endpoint, trace, &options, &result);
    if (rc)
        fprintf (stderr, "kvtier replay: %s: %s\n", endpoint, kvt_strerror (rc));
    else
        kvt_replay_print_report ("replay", &result, NULL, NULL);
    kvt_replay_result_fini (&result);
    kvt_trace_destroy (&trace);
    return rc? 1: 0;
}
