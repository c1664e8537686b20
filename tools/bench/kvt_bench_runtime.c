/*  =========================================================================
    kvt_bench_runtime - `kvtier bench runtime`: LOOKUP round trip vs raw ZeroMQ

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvtier bench runtime [--json] [--count N] [--size B] [--spawn]
                         [--sequential] [--ipc EP --tcp EP]
    Starts a server on a temp ipc endpoint and a free tcp port: in this
    process (kvt_runtime, every actor a thread, as `kvtier serve` runs
    them), or with --spawn as a child process (`kvtier serve`); or uses
    the running one that --ipc/--tcp name. Then it times N LOOKUP round
    trips through kvt_client over ipc:// and over tcp loopback. Beside
    each, in the same run, a raw ZeroMQ REQ/REP round trip moving the same
    bytes each way (request = the encoded LOOKUP frame, reply = the size of
    the LOOKUP_OK frame) against a tiny echo REP thread; the inproc REQ/REP
    round trip is given for context.
    A bare front door (one thread that decodes with kvt_msg and answers a
    canned LOOKUP_OK of the same size) separates what the client library
    and codec cost from what the server's actors cost; HELLO, which the
    scheduler answers alone, separates the front door from the hop to the
    prefix index that LOOKUP adds.
    Target: the LOOKUP round trip within 2x of raw ZeroMQ over ipc.
@discuss
    The LOOKUP asks for a prompt whose full blocks were cached by one
    GENERATE first, so the server does a real prefix match. Each figure is
    the mean (or p50, p99) over N round trips after N/10 warm-up ones. The
    probes take turns, one round trip each, so that load from elsewhere on
    a shared machine weighs on every figure alike.
@end
*/

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "kvt_msg.h"
#include "kvt_client.h"
#include "kvt_config.h"
#include "kvt_runtime.h"
#include "kvt_actors.h"
#include "kvt_bench.h"

typedef struct {
    int count;                      //  Timed round trips per figure
    size_t size;                    //  Request frame size, bytes
    bool json;                      //  JSON report
    bool spawn;                     //  Server as a child process, not in-process
    bool sequential;                //  Probes one after the other, not interleaved
    const char *ipc;                //  Existing server's ipc endpoint, or NULL
    const char *tcp;                //  Existing server's tcp endpoint, or NULL
} s_options_t;

typedef struct {
    double mean_us;                 //  Mean round trip
    double p50_us;                  //  Median
    double p99_us;                  //  99th percentile
} s_timing_t;

static s_timing_t
s_summarise (double *samples, int count, int64_t total_us)
{
    qsort (samples, (size_t) count, sizeof (double), kvt_bench_compare_double);
    s_timing_t timing = { (double) total_us / count, samples [count / 2],
                          samples [(int) ((count - 1) * 0.99)] };
    return timing;
}

//  --------------------------------------------------------------------------
//  Raw baseline: an echo REP that answers every request with 'reply_size'
//  bytes, and a REQ that times round trips of 'request_size' bytes.

typedef struct {
    char endpoint [128];            //  Where the REP binds
    size_t reply_size;              //  Bytes of each reply
} s_echo_args_t;

static void
s_echo_actor (zsock_t *pipe, void *arg)
{
    s_echo_args_t *args = (s_echo_args_t *) arg;
    zsock_t *rep = zsock_new (ZMQ_REP);
    int rc = zsock_bind (rep, "%s", args->endpoint);
    size_t reply_size = args->reply_size;
    zsock_signal (pipe, rc < 0? 1: 0);
    void *handle = zsock_resolve (rep);
    char *reply = (char *) zmalloc (reply_size + 1);
    char *buffer = (char *) zmalloc (1 << 20);
    zmq_pollitem_t items [] = { { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
                                { handle, 0, ZMQ_POLLIN, 0 } };
    while (rc >= 0 && zmq_poll (items, 2, -1) >= 0) {
        if (items [0].revents & ZMQ_POLLIN)
            break;                  //  $TERM
        if (items [1].revents & ZMQ_POLLIN) {
            if (zmq_recv (handle, buffer, 1 << 20, 0) < 0
            ||  zmq_send (handle, reply, reply_size, 0) < 0)
                break;
        }
    }
    free (buffer);
    free (reply);
    zsock_destroy (&rep);
}

//  --------------------------------------------------------------------------
//  Bare front door: a ROUTER that decodes each request with kvt_msg and
//  answers HELLO and LOOKUP with canned replies (LOOKUP_OK as 'args'
//  describes). Isolates what the client library and the codec cost from
//  what the server's actors cost.

typedef struct {
    char endpoint [128];            //  Where the ROUTER binds
    uint64_t matched;               //  LOOKUP_OK matched_blocks
    uint64_t *tiers;                //  LOOKUP_OK tiers (borrowed)
    uint64_t *hashes;               //  LOOKUP_OK hashes (borrowed)
    size_t count;                   //  Entries in both
} s_bare_args_t;

static void
s_bare_actor (zsock_t *pipe, void *arg)
{
    s_bare_args_t *args = (s_bare_args_t *) arg;
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    int rc = zsock_bind (router, "%s", args->endpoint);
    zsock_signal (pipe, rc < 0? 1: 0);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (rc >= 0 && zpoller_wait (poller, -1) == router) {
        kvt_msg_t *request = NULL;
        if (kvt_msg_recv (router, &request) == -EINTR)
            break;
        kvt_msg_t *reply;
        if (kvt_msg_id (request) == KVT_MSG_LOOKUP) {
            reply = kvt_msg_reply_new (request, KVT_MSG_LOOKUP_OK);
            kvt_msg_set_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS, args->matched);
            kvt_msg_set_array (reply, KVT_LOOKUP_OK_TIERS, args->tiers, args->count);
            kvt_msg_set_array (reply, KVT_LOOKUP_OK_HASHES, args->hashes, args->count);
        }
        else
            reply = kvt_msg_error_new (request, -ENOTSUP, "the bare front door answers LOOKUP only");
        kvt_msg_send (&reply, router);
        kvt_msg_destroy (&request);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&router);
}

//  --------------------------------------------------------------------------
//  Probes: one way of doing a round trip each. All probes of a run take
//  turns, one round trip each, so a burst of load from elsewhere on the
//  machine hits every figure alike.

typedef struct {
    const char *name;               //  Figure name
    zactor_t *echo;                 //  Raw probes: the echo REP thread
    zsock_t *req;                   //  Raw probes: our REQ
    kvt_client_t *client;           //  LOOKUP and HELLO probes: our client
    bool hello;                     //  Send HELLO instead of LOOKUP
    double *samples;                //  One per timed round trip, microseconds
    int64_t total_us;               //  Sum of samples
} s_probe_t;

typedef struct {
    const void *request;            //  Encoded LOOKUP frame (raw probes send it)
    size_t request_size;            //  Its size
    size_t reply_size;              //  Size of a LOOKUP_OK frame (raw replies)
    const uint64_t *tokens;         //  LOOKUP probes ask for these
    size_t token_count;             //  Number of tokens
    char *buffer;                   //  Room for a raw reply
} s_payload_t;

//  Start a raw REQ/REP probe: an echo thread bound to 'endpoint'.
static int
s_probe_open_raw (s_probe_t *probe, const char *name, const char *endpoint, size_t reply_size,
                  int count)
{
    memset (probe, 0, sizeof (*probe));
    probe->name = name;
    s_echo_args_t args;
    snprintf (args.endpoint, sizeof (args.endpoint), "%s", endpoint);
    args.reply_size = reply_size;
    probe->echo = zactor_new (s_echo_actor, &args);
    if (!probe->echo)
        return -1;
    probe->req = zsock_new (ZMQ_REQ);
    zsock_set_linger (probe->req, 0);
    zsock_connect (probe->req, "%s", endpoint);
    probe->samples = (double *) zmalloc ((size_t) count * sizeof (double));
    return 0;
}

//  Start a LOOKUP probe: a kvt_client connected to 'endpoint'.
static int
s_probe_open_lookup (s_probe_t *probe, const char *name, const char *endpoint, int count)
{
    memset (probe, 0, sizeof (*probe));
    probe->name = name;
    probe->client = kvt_client_new (endpoint, 10000);
    if (!probe->client)
        return -1;
    probe->samples = (double *) zmalloc ((size_t) count * sizeof (double));
    return 0;
}

static void
s_probe_close (s_probe_t *probe)
{
    zsock_destroy (&probe->req);
    zactor_destroy (&probe->echo);
    kvt_client_destroy (&probe->client);
    free (probe->samples);
    probe->samples = NULL;
}

//  One round trip; returns its time in microseconds, or -1 on failure.
static int64_t
s_probe_once (s_probe_t *probe, s_payload_t *payload)
{
    int64_t before = zclock_usecs ();
    if (probe->req) {
        void *handle = zsock_resolve (probe->req);
        if (zmq_send (handle, payload->request, payload->request_size, 0) < 0
        ||  zmq_recv (handle, payload->buffer, payload->reply_size + 16, 0)
            != (int) payload->reply_size)
            return -1;
    }
    else
    if (probe->hello) {
        kvt_client_hello_t hello;
        if (kvt_client_hello (probe->client, "bench", &hello))
            return -1;
    }
    else {
        kvt_client_lookup_t lookup;
        int rc = kvt_client_lookup (probe->client, "bench", payload->tokens,
                                    payload->token_count, &lookup);
        kvt_client_lookup_fini (&lookup);
        if (rc) {
            fprintf (stderr, "bench runtime: %s: LOOKUP failed: %s %s\n", probe->name,
                     kvt_client_error_name (probe->client),
                     kvt_client_error_detail (probe->client));
            return -1;
        }
    }
    return zclock_usecs () - before;
}

//  Warm up, then 'count' turns of one round trip per probe ('sequential':
//  all of one probe's round trips back to back, then the next probe's).
//  Returns 0 or -1.
static int
s_probes_run (s_probe_t *probes, int probe_count, s_payload_t *payload, int count,
              bool sequential)
{
    int warmup = count / 10 + 10;
    int outer = sequential? probe_count: count + warmup;
    int inner = sequential? count + warmup: probe_count;
    for (int o = 0; o < outer; o++)
        for (int i = 0; i < inner; i++) {
            int p = sequential? o: i;
            int k = (sequential? i: o) - warmup;
            int64_t us = s_probe_once (&probes [p], payload);
            if (us < 0)
                return -1;
            if (k >= 0) {
                probes [p].samples [k] = (double) us;
                probes [p].total_us += us;
            }
        }
    return 0;
}

//  Encoded size of a message.
static size_t
s_frame_size (kvt_msg_t *msg)
{
    zframe_t *frame;
    if (kvt_msg_encode (msg, &frame))
        return 0;
    size_t size = zframe_size (frame);
    zframe_destroy (&frame);
    return size;
}

//  --------------------------------------------------------------------------
//  Server as a child process: `/proc/self/exe serve` on private endpoints.

static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET,
                                .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t length = sizeof (addr);
    int port = -1;
    if (fd >= 0 && bind (fd, (struct sockaddr *) &addr, sizeof (addr)) == 0
    &&  getsockname (fd, (struct sockaddr *) &addr, &length) == 0)
        port = ntohs (addr.sin_port);
    if (fd >= 0)
        close (fd);
    return port;
}

static pid_t
s_spawn_server (const char *tcp, const char *ipc, const char *log_path)
{
    char option_tcp [160], option_ipc [160];
    snprintf (option_tcp, sizeof (option_tcp), "scheduler/endpoint=%s", tcp);
    snprintf (option_ipc, sizeof (option_ipc), "scheduler/ipc_endpoint=%s", ipc);
    pid_t pid = fork ();
    if (pid == 0) {
        if (freopen (log_path, "w", stdout))
            dup2 (fileno (stdout), STDERR_FILENO);
        execl ("/proc/self/exe", "kvtier", "serve", "-o", option_tcp, "-o", option_ipc,
               (char *) NULL);
        _exit (127);
    }
    return pid;
}

//  Wait until 'endpoint' answers HELLO; returns 0 or -ETIMEDOUT.
static int
s_wait_server (const char *endpoint, pid_t pid, kvt_client_hello_t *hello)
{
    kvt_client_t *client = kvt_client_new (endpoint, 500);
    int64_t deadline = zclock_mono () + 30000;
    int rc = -ETIMEDOUT;
    while (rc && zclock_mono () < deadline) {
        int status;
        if (pid > 0 && waitpid (pid, &status, WNOHANG) == pid)
            break;
        rc = kvt_client_hello (client, "bench-runtime", hello);
    }
    kvt_client_destroy (&client);
    return rc;
}

//  Start every actor in this process on 'tcp' and 'ipc'. Returns the
//  runtime, or NULL with the reason printed.
static kvt_runtime_t *
s_start_in_process (const char *tcp, const char *ipc)
{
    kvt_config_t *config = kvt_config_new ();
    char error [256] = "";
    kvt_runtime_t *runtime = NULL;
    if (kvt_config_set (config, "scheduler/endpoint", tcp, error, sizeof (error))
    ||  kvt_config_set (config, "scheduler/ipc_endpoint", ipc, error, sizeof (error)))
        fprintf (stderr, "bench runtime: config: %s\n", error);
    else
        runtime = kvt_bench_runtime_start (config, "kvtier bench runtime");
    kvt_config_destroy (&config);
    return runtime;
}

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: kvtier bench runtime [--json] [--count N] [--size B] "
                  "[--spawn] [--sequential] [--ipc EP --tcp EP]\n"
                  "  LOOKUP round trip through kvt_client over ipc:// and tcp:// vs a raw\n"
                  "  ZeroMQ REQ/REP round trip of the same sizes (inproc for context).\n"
                  "  --count N   timed round trips per figure (default 5000)\n"
                  "  --size B    request frame size in bytes (default 128)\n"
                  "  --spawn     run the server as a child process (default: in-process)\n"
                  "  --sequential  time each probe's round trips back to back (default:\n"
                  "              probes take turns, one round trip each)\n"
                  "  --ipc/--tcp use a running server instead of starting one\n");
}

//  --------------------------------------------------------------------------
//  `kvtier bench runtime`: returns the exit code.

int
kvt_bench_runtime_main (int argc, char **argv)
{
    static const struct option options [] = {
        { "json",  no_argument,       NULL, 'j' },
        { "count", required_argument, NULL, 'c' },
        { "size",  required_argument, NULL, 's' },
        { "ipc",   required_argument, NULL, 'i' },
        { "tcp",   required_argument, NULL, 't' },
        { "spawn", no_argument,       NULL, 'S' },
        { "sequential", no_argument,  NULL, 'q' },
        { "help",  no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    s_options_t opts = { 5000, 128, false, false, false, NULL, NULL };
    optind = 1;
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
            case 'j': opts.json = true; break;
            case 'c': opts.count = atoi (optarg); break;
            case 's': opts.size = (size_t) atol (optarg); break;
            case 'i': opts.ipc = optarg; break;
            case 't': opts.tcp = optarg; break;
            case 'S': opts.spawn = true; break;
            case 'q': opts.sequential = true; break;
            case 'h': s_usage (stdout); return 0;
            default: s_usage (stderr); return 2;
        }
    }
    if (opts.count < 10 || opts.size < 16 || opts.size > (1 << 20) || optind < argc
    ||  (!opts.ipc != !opts.tcp)) {
        s_usage (stderr);
        return 2;
    }
    zsys_init ();
    zsys_handler_set (NULL);
    char tcp [128], ipc [128], log_path [96];
    pid_t server = -1;
    kvt_runtime_t *runtime = NULL;
    snprintf (log_path, sizeof (log_path), "/tmp/kvt-bench-runtime-%d.log", getpid ());
    if (opts.ipc) {
        snprintf (tcp, sizeof (tcp), "%s", opts.tcp);
        snprintf (ipc, sizeof (ipc), "%s", opts.ipc);
    }
    else {
        snprintf (tcp, sizeof (tcp), "tcp://127.0.0.1:%d", s_free_port ());
        snprintf (ipc, sizeof (ipc), "ipc:///tmp/kvt-bench-runtime-%d.ipc", getpid ());
        if (opts.spawn) {
            server = s_spawn_server (tcp, ipc, log_path);
            if (server < 0) {
                fprintf (stderr, "bench runtime: cannot fork the server\n");
                return 1;
            }
        }
        else
        if (!(runtime = s_start_in_process (tcp, ipc)))
            return 1;
    }
    int status = 1;
    kvt_client_hello_t hello;
    if (s_wait_server (ipc, server, &hello)) {
        fprintf (stderr, "bench runtime: no HELLO from %s within 30 s\n", ipc);
        goto cleanup;
    }

    //  A prompt whose LOOKUP frame is opts.size bytes; tokens < 128 take
    //  one byte each, so the count follows from the fixed overhead
    uint64_t vocab = hello.vocab < 128? hello.vocab: 128;
    size_t token_count = 1;
    uint64_t *tokens = NULL;
    kvt_msg_t *request = NULL;
    for (int tries = 0; tries < 4; tries++) {
        free (tokens);
        tokens = (uint64_t *) zmalloc (token_count * sizeof (uint64_t));
        kvt_client_random_tokens (tokens, token_count, vocab, 7);
        kvt_msg_destroy (&request);
        request = kvt_msg_new (KVT_MSG_LOOKUP);
        kvt_msg_set_request_id (request, UINT32_MAX);
        kvt_msg_set_str (request, KVT_LOOKUP_TENANT, "bench");
        kvt_msg_set_array (request, KVT_LOOKUP_TOKENS, tokens, token_count);
        size_t size = s_frame_size (request);
        if (size == opts.size)
            break;
        token_count = token_count + opts.size > size? token_count + opts.size - size: 1;
    }
    size_t request_size = s_frame_size (request);

    //  Cache the prompt's full blocks, so LOOKUP matches something
    kvt_client_t *client = kvt_client_new (ipc, 60000);
    kvt_client_generate_t generate;
    kvt_client_lookup_t lookup;
    if (kvt_client_generate (client, "bench", tokens, token_count, 1, &generate) == 0)
        kvt_client_generate_fini (&generate);
    int rc = kvt_client_lookup (client, "bench", tokens, token_count, &lookup);
    kvt_client_destroy (&client);
    if (rc) {
        fprintf (stderr, "bench runtime: LOOKUP failed: %d\n", rc);
        free (tokens);
        kvt_msg_destroy (&request);
        goto cleanup;
    }
    kvt_msg_t *reply = kvt_msg_new (KVT_MSG_LOOKUP_OK);
    kvt_msg_set_request_id (reply, UINT32_MAX);
    kvt_msg_set_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS, lookup.matched_blocks);
    kvt_msg_set_array (reply, KVT_LOOKUP_OK_TIERS, lookup.tiers, lookup.tier_count);
    kvt_msg_set_array (reply, KVT_LOOKUP_OK_HASHES, lookup.hashes, lookup.hash_count);
    size_t reply_size = s_frame_size (reply);
    uint64_t matched = lookup.matched_blocks;
    s_bare_args_t bare_args;
    snprintf (bare_args.endpoint, sizeof (bare_args.endpoint),
              "ipc:///tmp/kvt-bench-bare-%d.ipc", getpid ());
    bare_args.matched = lookup.matched_blocks;
    bare_args.tiers = lookup.tiers;
    bare_args.hashes = lookup.hashes;
    bare_args.count = lookup.tier_count < lookup.hash_count? lookup.tier_count: lookup.hash_count;
    kvt_msg_destroy (&reply);
    zframe_t *frame;
    kvt_msg_encode (request, &frame);
    kvt_msg_destroy (&request);

    kvt_bench_report_t *report = kvt_bench_report_new ("runtime", opts.json);
    char note [128];
    snprintf (note, sizeof (note), "%zu B request (%zu tokens), %zu B reply, %" PRIu64
              " blocks matched", request_size, token_count, reply_size, matched);
    kvt_bench_report_note (report, "sizes", note);
    snprintf (note, sizeof (note), "%d round trips per figure, probes %s; server %s",
              opts.count, opts.sequential? "one after the other": "interleaved",
              opts.ipc? "given": opts.spawn? "child process (kvtier serve)":
              "in-process (kvt_runtime, actors as threads)");
    kvt_bench_report_note (report, "method", note);
    snprintf (note, sizeof (note), "%ld online CPUs", sysconf (_SC_NPROCESSORS_ONLN));
    kvt_bench_report_note (report, "host", note);

    char raw_ipc_endpoint [128], raw_tcp_endpoint [128];
    snprintf (raw_ipc_endpoint, sizeof (raw_ipc_endpoint), "ipc:///tmp/kvt-bench-echo-%d.ipc",
              getpid ());
    snprintf (raw_tcp_endpoint, sizeof (raw_tcp_endpoint), "tcp://127.0.0.1:%d", s_free_port ());
    enum { LOOKUP_IPC, RAW_IPC, LOOKUP_TCP, RAW_TCP, STUB_IPC, RAW_INPROC, HELLO_IPC, PROBES };
    s_probe_t probes [PROBES];
    memset (probes, 0, sizeof (probes));
    zactor_t *bare = zactor_new (s_bare_actor, &bare_args);
    rc = s_probe_open_lookup (&probes [LOOKUP_IPC], "lookup_rtt_ipc_us", ipc, opts.count)
      || s_probe_open_raw (&probes [RAW_IPC], "zmq_reqrep_ipc_us", raw_ipc_endpoint,
                           reply_size, opts.count)
      || s_probe_open_lookup (&probes [LOOKUP_TCP], "lookup_rtt_tcp_us", tcp, opts.count)
      || s_probe_open_raw (&probes [RAW_TCP], "zmq_reqrep_tcp_us", raw_tcp_endpoint,
                           reply_size, opts.count)
      || s_probe_open_lookup (&probes [STUB_IPC], "lookup_rtt_stub_ipc_us",
                              bare_args.endpoint, opts.count)
      || s_probe_open_raw (&probes [RAW_INPROC], "zmq_reqrep_inproc_us",
                           "inproc://kvt-bench-echo", reply_size, opts.count)
      || s_probe_open_lookup (&probes [HELLO_IPC], "hello_rtt_ipc_us", ipc, opts.count);
    probes [HELLO_IPC].hello = true;
    s_payload_t payload = { zframe_data (frame), request_size, reply_size, tokens, token_count,
                            (char *) zmalloc (reply_size + 16) };
    if (rc == 0 && bare)
        rc = s_probes_run (probes, PROBES, &payload, opts.count, opts.sequential);
    else
        rc = -1;
    s_timing_t timing [PROBES];
    for (int p = 0; p < PROBES; p++) {
        if (rc == 0)
            timing [p] = s_summarise (probes [p].samples, opts.count, probes [p].total_us);
        s_probe_close (&probes [p]);
    }
    zactor_destroy (&bare);
    free (payload.buffer);
    kvt_client_lookup_fini (&lookup);
    zframe_destroy (&frame);
    free (tokens);
    if (rc == 0) {
        kvt_bench_report_add (report, "lookup_rtt_ipc_us", timing [LOOKUP_IPC].mean_us, "us",
                              "zmq_reqrep_ipc_us", timing [RAW_IPC].mean_us);
        kvt_bench_report_add (report, "lookup_rtt_ipc_p50_us", timing [LOOKUP_IPC].p50_us, "us",
                              "zmq_reqrep_ipc_p50_us", timing [RAW_IPC].p50_us);
        kvt_bench_report_add (report, "lookup_rtt_ipc_p99_us", timing [LOOKUP_IPC].p99_us, "us",
                              "zmq_reqrep_ipc_p99_us", timing [RAW_IPC].p99_us);
        kvt_bench_report_add (report, "lookup_rtt_tcp_us", timing [LOOKUP_TCP].mean_us, "us",
                              "zmq_reqrep_tcp_us", timing [RAW_TCP].mean_us);
        kvt_bench_report_add (report, "lookup_rtt_tcp_p50_us", timing [LOOKUP_TCP].p50_us, "us",
                              "zmq_reqrep_tcp_p50_us", timing [RAW_TCP].p50_us);
        kvt_bench_report_add (report, "lookup_rtt_stub_ipc_us", timing [STUB_IPC].mean_us, "us",
                              "zmq_reqrep_ipc_us", timing [RAW_IPC].mean_us);
        kvt_bench_report_add (report, "lookup_rtt_stub_ipc_p50_us", timing [STUB_IPC].p50_us,
                              "us", "zmq_reqrep_ipc_p50_us", timing [RAW_IPC].p50_us);
        kvt_bench_report_add (report, "hello_rtt_ipc_p50_us", timing [HELLO_IPC].p50_us, "us",
                              "zmq_reqrep_ipc_p50_us", timing [RAW_IPC].p50_us);
        kvt_bench_report_add (report, "zmq_reqrep_inproc_us", timing [RAW_INPROC].mean_us, "us",
                              "zmq_reqrep_ipc_us", timing [RAW_IPC].mean_us);
        kvt_bench_report_add (report, "zmq_reqrep_inproc_p50_us", timing [RAW_INPROC].p50_us,
                              "us", "zmq_reqrep_ipc_p50_us", timing [RAW_IPC].p50_us);
        double ratio = timing [LOOKUP_IPC].p50_us / timing [RAW_IPC].p50_us;
        snprintf (note, sizeof (note), "%s: lookup/raw over ipc, p50 = %.2f, mean = %.2f "
                  "(target <= 2.0)", ratio <= 2.0? "met": "missed", ratio,
                  timing [LOOKUP_IPC].mean_us / timing [RAW_IPC].mean_us);
        kvt_bench_report_note (report, "target", note);
        status = 0;
    }
    else
        fprintf (stderr, "bench runtime: a measurement failed\n");
    kvt_bench_report_finish (&report);

cleanup:
    kvt_runtime_destroy (&runtime);
    if (server > 0) {
        kill (server, SIGINT);
        int child_status;
        int64_t deadline = zclock_mono () + 10000;
        while (waitpid (server, &child_status, WNOHANG) != server) {
            if (zclock_mono () > deadline) {
                kill (server, SIGKILL);
                waitpid (server, &child_status, 0);
                break;
            }
            zclock_sleep (10);
        }
        if (status) {
            fprintf (stderr, "---- server log %s ----\n", log_path);
            char command [160];
            snprintf (command, sizeof (command), "tail -n 20 %s >&2", log_path);
            if (system (command) != 0)
                fprintf (stderr, "(no log)\n");
        }
        unlink (log_path);
    }
    return status;
}
