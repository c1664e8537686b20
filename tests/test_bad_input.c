/*  =========================================================================
    test_bad_input - a live server meets garbage, liars and vanishing clients

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Spawns `$KVTIER serve` on a free tcp port (skip 77 when KVTIER is not
    set) with scheduler/max_frame_bytes=65536, then sends the front door:
    random bytes, an empty frame, truncated msgpack, wrong field types,
    missing fields, unknown ids (31, 1000), reply and actor-internal ids,
    a wrong protocol version, a 100 KiB frame, tokens >= vocab, DEMOTE to
    tier 7, multipart garbage, raw TCP junk, and a client that closes
    right after sending GENERATE. Each must get an ERROR with the right
    code (or be dropped and counted in STATS), and a well-behaved client
    must be served after every case. 600 mutated copies of valid frames
    must each get one reply. Then 8 threads generate and look up at once
    and must all get correct replies; SIGINT must stop the server with
    status 0 within 10 s.
@end
*/

#include <czmq.h>
#include <msgpack.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "kvt_error.h"
#include "kvt_msg.h"
#include "kvt_client.h"
#include "kvt_util.h"

#define T_EXIT_PASS  0              //  All cases passed
#define T_EXIT_FAIL  1              //  At least one case failed
#define T_EXIT_SKIP  77             //  No server binary to test

#define T_THREADS    8              //  Concurrent well-behaved clients
#define T_ROUNDS     6              //  Requests per thread

static int s_failures = 0;          //  Cases failed so far
static char s_endpoint [128];       //  tcp:// front door of the spawned server
static kvt_client_hello_t s_hello;  //  What the server told us

#define t_check(cond, ...) do { \
    if (!(cond)) { \
        s_failures++; \
        printf ("FAIL %s:%d: ", __FILE__, __LINE__); \
        printf (__VA_ARGS__); \
        printf ("\n"); \
    } \
} while (0)

//  A free tcp port on 127.0.0.1 (bound then released).
static int
t_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET,
                                .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t length = sizeof (addr);
    assert (fd >= 0);
    assert (bind (fd, (struct sockaddr *) &addr, sizeof (addr)) == 0);
    assert (getsockname (fd, (struct sockaddr *) &addr, &length) == 0);
    close (fd);
    return ntohs (addr.sin_port);
}

//  Sum of the counters that count refused input.
static uint64_t
t_rejected (void)
{
    kvt_client_t *client = kvt_client_new (s_endpoint, 5000);
    kvt_client_stats_t stats;
    uint64_t total = 0;
    if (kvt_client_stats (client, &stats) == 0) {
        for (size_t k = 0; k < stats.count; k++)
            if (strstr (stats.keys [k], "reject") || strstr (stats.keys [k], "bad")
            ||  strstr (stats.keys [k], "invalid"))
                total += stats.values [k];
        kvt_client_stats_fini (&stats);
    }
    kvt_client_destroy (&client);
    return total;
}

//  The server still answers a well-behaved client.
static void
t_still_serving (const char *after)
{
    kvt_client_t *client = kvt_client_new (s_endpoint, 10000);
    kvt_client_hello_t hello;
    int rc = kvt_client_hello (client, "well-behaved", &hello);
    t_check (rc == 0 && hello.vocab == s_hello.vocab,
             "after %s: HELLO got %d %s", after, rc, kvt_client_error_name (client));
    kvt_client_destroy (&client);
}

//  Send 'frames' (consumed) on a fresh DEALER and expect an ERROR with
//  'expected' (0 = any negative code), or no reply and a rejected counter
//  that moved. If 'request_id' is not UINT64_MAX the ERROR must carry it.
static void
t_expect (zmsg_t **frames_p, int expected, uint64_t request_id, const char *what)
{
    uint64_t rejected_before = t_rejected ();
    zsock_t *raw = zsock_new_dealer (s_endpoint);
    assert (raw);
    zsock_set_linger (raw, 0);
    zmsg_send (frames_p, raw);
    zpoller_t *poller = zpoller_new (raw, NULL);
    kvt_msg_t *reply = NULL;
    if (zpoller_wait (poller, 3000) == raw) {
        int rc = kvt_msg_recv (raw, &reply);
        t_check (rc == 0, "%s: the reply did not decode (%s)", what, kvt_strerror_name (rc));
    }
    zpoller_destroy (&poller);
    zsock_destroy (&raw);
    if (reply && kvt_msg_id (reply) == KVT_MSG_ERROR) {
        int64_t code = kvt_msg_i64 (reply, KVT_ERROR_CODE);
        printf ("  %-34s ERROR %s (%" PRId64 ") '%s' request_id=%" PRIu64 "\n", what,
                kvt_msg_str (reply, KVT_ERROR_NAME), code, kvt_msg_str (reply, KVT_ERROR_DETAIL),
                kvt_msg_request_id (reply));
        t_check (code < 0, "%s: ERROR code %" PRId64 " is not negative", what, code);
        t_check (expected == 0 || code == expected, "%s: expected %s (%d), got %s (%" PRId64 ")",
                 what, kvt_strerror_name (expected), expected,
                 kvt_msg_str (reply, KVT_ERROR_NAME), code);
        t_check (streq (kvt_msg_str (reply, KVT_ERROR_NAME), kvt_strerror_name ((int) code)),
                 "%s: name %s does not match code %" PRId64, what,
                 kvt_msg_str (reply, KVT_ERROR_NAME), code);
        t_check (request_id == UINT64_MAX || kvt_msg_request_id (reply) == request_id,
                 "%s: reply request_id %" PRIu64 ", sent %" PRIu64, what,
                 kvt_msg_request_id (reply), request_id);
    }
    else
    if (reply) {
        t_check (false, "%s: expected ERROR, got %s", what, kvt_msg_name (kvt_msg_id (reply)));
    }
    else {
        uint64_t rejected_after = t_rejected ();
        printf ("  %-34s no reply; rejected %" PRIu64 " -> %" PRIu64 "\n", what,
                rejected_before, rejected_after);
        t_check (rejected_after > rejected_before,
                 "%s: no reply and no rejected counter moved", what);
    }
    kvt_msg_destroy (&reply);
    t_still_serving (what);
}

//  One frame holding 'size' bytes.
static zmsg_t *
t_frame (const void *data, size_t size)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, data, size);
    return msg;
}

//  A header [version, id, request_id] opening an array of 'arity' items.
static void
t_header (msgpack_packer *pk, size_t arity, uint64_t version, uint64_t id, uint64_t rid)
{
    msgpack_pack_array (pk, arity);
    msgpack_pack_uint64 (pk, version);
    msgpack_pack_uint64 (pk, id);
    msgpack_pack_uint64 (pk, rid);
}

static void
t_pack_str (msgpack_packer *pk, const char *text)
{
    msgpack_pack_str (pk, strlen (text));
    msgpack_pack_str_body (pk, text, strlen (text));
}

static void
t_pack_tokens (msgpack_packer *pk, const uint64_t *tokens, size_t count)
{
    msgpack_pack_array (pk, count);
    for (size_t k = 0; k < count; k++)
        msgpack_pack_uint64 (pk, tokens [k]);
}

static zmsg_t *
t_take (msgpack_sbuffer *buffer, size_t keep)
{
    zmsg_t *msg = t_frame (buffer->data, keep? keep: buffer->size);
    msgpack_sbuffer_clear (buffer);
    return msg;
}

//  --------------------------------------------------------------------------
//  The bad-input cases

static void
t_bad_input (void)
{
    msgpack_sbuffer buffer;
    msgpack_sbuffer_init (&buffer);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
    uint64_t tokens [40];
    kvt_client_random_tokens (tokens, 40, s_hello.vocab, 99);
    zmsg_t *msg;

    //  Random bytes, several shapes
    uint64_t seed = 11;
    for (int round = 0; round < 4; round++) {
        uint8_t junk [97];
        kvt_client_fill_bytes (junk, sizeof (junk), seed++);
        if (round == 1)
            junk [0] = 0x95;        //  Looks like a 5-array
        if (round == 2)
            junk [0] = 0xdd;        //  Claims a huge array
        msg = t_frame (junk, round == 3? 1: sizeof (junk));
        t_expect (&msg, -EBADMSG, UINT64_MAX, "random bytes");
    }
    msg = t_frame ("", 0);
    t_expect (&msg, -EBADMSG, UINT64_MAX, "empty frame");

    //  Truncated msgpack: a valid LOOKUP cut short
    t_header (&pk, 5, KVT_PROTOCOL_VERSION, KVT_MSG_LOOKUP, 501);
    t_pack_str (&pk, "t");
    t_pack_tokens (&pk, tokens, 40);
    msg = t_take (&buffer, buffer.size - 7);
    t_expect (&msg, -EBADMSG, 501, "truncated LOOKUP");

    //  Wrong field types
    t_header (&pk, 5, KVT_PROTOCOL_VERSION, KVT_MSG_LOOKUP, 502);
    msgpack_pack_uint64 (&pk, 5);                       //  Tenant must be a string
    t_pack_tokens (&pk, tokens, 4);
    msg = t_take (&buffer, 0);
    t_expect (&msg, -EBADMSG, 502, "LOOKUP with an int tenant");
    t_header (&pk, 6, KVT_PROTOCOL_VERSION, KVT_MSG_GENERATE, 503);
    t_pack_str (&pk, "t");
    t_pack_tokens (&pk, tokens, 4);
    t_pack_str (&pk, "four");                           //  max_new_tokens must be a u64
    msg = t_take (&buffer, 0);
    t_expect (&msg, -EBADMSG, 503, "GENERATE with a string max_new");
    t_header (&pk, 5, KVT_PROTOCOL_VERSION, KVT_MSG_LOOKUP, 504);
    t_pack_str (&pk, "t");
    msgpack_pack_array (&pk, 2);
    msgpack_pack_int64 (&pk, -3);                       //  Tokens are unsigned
    msgpack_pack_double (&pk, 1.5);
    msg = t_take (&buffer, 0);
    t_expect (&msg, -EBADMSG, 504, "LOOKUP with negative/float tokens");
    t_header (&pk, 4, KVT_PROTOCOL_VERSION, KVT_MSG_LOOKUP, 505);
    t_pack_str (&pk, "t");                              //  Tokens missing
    msg = t_take (&buffer, 0);
    t_expect (&msg, -EBADMSG, 505, "LOOKUP missing a field");

    //  Unknown, reply and actor-internal message ids
    const uint64_t ids [] = { 31, 1000, 0, KVT_MSG_HELLO_OK, KVT_MSG_ERROR, KVT_MSG_IDX_REMOVE,
                              KVT_MSG_TIER_FREE };
    for (size_t k = 0; k < sizeof (ids) / sizeof (ids [0]); k++) {
        char what [64];
        snprintf (what, sizeof (what), "message id %" PRIu64 " (%s)", ids [k],
                  kvt_msg_name ((int) ids [k])? kvt_msg_name ((int) ids [k]): "unknown");
        if (ids [k] == 31 || ids [k] == 1000 || ids [k] == 0) {
            t_header (&pk, 3, KVT_PROTOCOL_VERSION, ids [k], 600 + k);
            msg = t_take (&buffer, 0);
            t_expect (&msg, -ENOTSUP, 600 + k, what);
            continue;
        }
        //  A well-formed message the front door must still refuse
        kvt_msg_t *bad = kvt_msg_new ((int) ids [k]);
        kvt_msg_set_request_id (bad, 600 + k);
        zframe_t *frame;
        assert (kvt_msg_encode (bad, &frame) == 0);
        kvt_msg_destroy (&bad);
        msg = zmsg_new ();
        zmsg_append (msg, &frame);
        t_expect (&msg, -ENOTSUP, 600 + k, what);
    }

    //  Wrong protocol version
    t_header (&pk, 4, KVT_PROTOCOL_VERSION + 1, KVT_MSG_HELLO, 701);
    t_pack_str (&pk, "from the future");
    msg = t_take (&buffer, 0);
    t_expect (&msg, KVT_EVERSION, 701, "protocol version 2");

    //  An oversize frame: 100 KiB against max_frame_bytes=65536
    size_t big = 100 * 1024;
    uint8_t *kv = (uint8_t *) zmalloc (big);
    t_header (&pk, 6, KVT_PROTOCOL_VERSION, KVT_MSG_STORE, 702);
    t_pack_str (&pk, "t");
    t_pack_tokens (&pk, tokens, 40);
    msgpack_pack_bin (&pk, big);
    msgpack_pack_bin_body (&pk, kv, big);
    free (kv);
    msg = t_take (&buffer, 0);
    t_expect (&msg, -EMSGSIZE, UINT64_MAX, "100 KiB frame (max 64 KiB)");

    //  Out-of-range values through the well-formed client
    kvt_client_t *client = kvt_client_new (s_endpoint, 10000);
    uint64_t wild [20];
    memcpy (wild, tokens, sizeof (wild));
    wild [17] = s_hello.vocab;
    kvt_client_lookup_t lookup;
    int rc = kvt_client_lookup (client, "t", wild, 20, &lookup);
    t_check (rc == -EINVAL, "LOOKUP token == vocab: %d %s '%s'", rc,
             kvt_client_error_name (client), kvt_client_error_detail (client));
    printf ("  %-34s %s '%s'\n", "LOOKUP token == vocab", kvt_client_error_name (client),
            kvt_client_error_detail (client));
    wild [17] = UINT64_MAX;
    kvt_client_generate_t generate;
    rc = kvt_client_generate (client, "t", wild, 20, 2, &generate);
    t_check (rc == -EINVAL, "GENERATE token 2^64-1: %d %s", rc, kvt_client_error_name (client));
    kvt_client_store_t store;
    uint8_t block [1];
    rc = kvt_client_store (client, "t", wild, 20, block, 0, &store);
    t_check (rc == -EINVAL, "STORE token 2^64-1: %d %s", rc, kvt_client_error_name (client));
    rc = kvt_client_store (client, "t", tokens, 40, block, 1, &store);
    t_check (rc == -EINVAL, "STORE with 1 byte for %d blocks: %d %s",
             (int) (40 / s_hello.block_tokens), rc, kvt_client_error_name (client));
    printf ("  %-34s %s '%s'\n", "STORE with the wrong kv size", kvt_client_error_name (client),
            kvt_client_error_detail (client));
    uint64_t moved;
    rc = kvt_client_demote (client, 7, 1, 1, &moved);
    t_check (rc == -EINVAL, "DEMOTE from tier 7: %d %s", rc, kvt_client_error_name (client));
    rc = kvt_client_demote (client, 0, 7, 1, &moved);
    t_check (rc == -EINVAL, "DEMOTE to tier 7: %d %s", rc, kvt_client_error_name (client));
    printf ("  %-34s %s '%s'\n", "DEMOTE to tier 7", kvt_client_error_name (client),
            kvt_client_error_detail (client));
    kvt_client_destroy (&client);
    t_still_serving ("out-of-range values");

    //  Multipart garbage: a kvtier message is one frame
    msg = zmsg_new ();
    zmsg_addstr (msg, "one");
    zmsg_addstr (msg, "two");
    zmsg_addstr (msg, "three");
    t_expect (&msg, -EBADMSG, UINT64_MAX, "three-frame message");
    kvt_msg_t *hello = kvt_msg_new (KVT_MSG_HELLO);
    kvt_msg_set_request_id (hello, 801);
    zframe_t *frame;
    assert (kvt_msg_encode (hello, &frame) == 0);
    kvt_msg_destroy (&hello);
    msg = zmsg_new ();
    zmsg_append (msg, &frame);
    zmsg_addstr (msg, "trailer");
    t_expect (&msg, -EBADMSG, UINT64_MAX, "HELLO + a second frame");

    //  Not ZeroMQ at all: raw TCP junk and an HTTP request on the port
    const char *port = strrchr (s_endpoint, ':') + 1;
    for (int k = 0; k < 2; k++) {
        int fd = socket (AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = { .sin_family = AF_INET,
                                    .sin_port = htons ((uint16_t) atoi (port)),
                                    .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
        if (fd >= 0 && connect (fd, (struct sockaddr *) &addr, sizeof (addr)) == 0) {
            uint8_t junk [1024];
            kvt_client_fill_bytes (junk, sizeof (junk), 77 + k);
            const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
            ssize_t sent = k == 0? write (fd, junk, sizeof (junk)): write (fd, http, strlen (http));
            t_check (sent > 0, "raw TCP write failed");
            zclock_sleep (50);
        }
        if (fd >= 0)
            close (fd);
    }
    t_still_serving ("raw TCP junk and HTTP on the front door");
    printf ("  %-34s connection dropped, server serves on\n", "raw TCP junk, HTTP GET");

    //  A client that vanishes mid-request
    for (int k = 0; k < 3; k++) {
        zsock_t *ghost = zsock_new_dealer (s_endpoint);
        zsock_set_linger (ghost, 100);
        kvt_msg_t *request = kvt_msg_new (KVT_MSG_GENERATE);
        kvt_msg_set_request_id (request, 900 + k);
        kvt_msg_set_str (request, KVT_GENERATE_TENANT, "ghost");
        kvt_msg_set_array (request, KVT_GENERATE_TOKENS, tokens, 40);
        kvt_msg_set_u64 (request, KVT_GENERATE_MAX_NEW_TOKENS, 4);
        assert (kvt_msg_send (&request, ghost) == 0);
        zsock_destroy (&ghost);
    }
    t_still_serving ("clients vanishing mid-GENERATE");
    //  Their replies were dropped; the server may count them (not required:
    //  a reply that beats the disconnect is dropped by ZeroMQ unseen)
    kvt_client_t *observer = kvt_client_new (s_endpoint, 10000);
    kvt_client_stats_t stats;
    uint64_t undelivered = 0;
    int64_t settle = zclock_mono () + 3000;
    while (undelivered < 3 && zclock_mono () < settle) {
        undelivered = 0;
        if (kvt_client_stats (observer, &stats) == 0) {
            for (size_t k = 0; k < stats.count; k++)
                if (strstr (stats.keys [k], "undelivered"))
                    undelivered += stats.values [k];
            kvt_client_stats_fini (&stats);
        }
        zclock_sleep (undelivered < 3? 50: 0);
    }
    kvt_client_destroy (&observer);
    printf ("  %-34s served on; %" PRIu64 " replies counted undelivered\n",
            "3 clients vanishing mid-GENERATE", undelivered);
    msgpack_sbuffer_destroy (&buffer);
}

//  --------------------------------------------------------------------------
//  Mutation fuzz: valid frames of every client message with bytes changed,
//  cut or inserted. Every frame must get exactly one reply (ERROR or _OK).
//  Mutants that still decode as a GENERATE asking for a long decode, or
//  with a huge prompt, are not sent (they are valid and merely slow).

static void
t_fuzz (int rounds)
{
    uint64_t tokens [50];
    kvt_client_random_tokens (tokens, 50, s_hello.vocab, 5);
    size_t kv_bytes = (50 / s_hello.block_tokens) * s_hello.block_bytes;
    uint8_t *kv = (uint8_t *) zmalloc (kv_bytes + 1);
    kvt_client_fill_bytes (kv, kv_bytes, 6);
    const int ids [] = { KVT_MSG_HELLO, KVT_MSG_LOOKUP, KVT_MSG_STORE, KVT_MSG_LOAD,
                         KVT_MSG_GENERATE, KVT_MSG_STATS, KVT_MSG_DEMOTE, KVT_MSG_STORE_TAIL };
    const int seed_count = (int) (sizeof (ids) / sizeof (ids [0]));
    zframe_t *seeds [sizeof (ids) / sizeof (ids [0])];
    for (int k = 0; k < seed_count; k++) {
        kvt_msg_t *msg = kvt_msg_new (ids [k]);
        kvt_msg_set_request_id (msg, 1000 + k);
        if (ids [k] == KVT_MSG_HELLO)
            kvt_msg_set_str (msg, KVT_HELLO_CLIENT, "fuzz");
        else
        if (ids [k] == KVT_MSG_DEMOTE) {
            kvt_msg_set_u64 (msg, KVT_DEMOTE_FROM_TIER, 0);
            kvt_msg_set_u64 (msg, KVT_DEMOTE_TO_TIER, 1);
            kvt_msg_set_u64 (msg, KVT_DEMOTE_MAX_BLOCKS, 1);
        }
        else
        if (ids [k] != KVT_MSG_STATS) {
            kvt_msg_set_str (msg, 0, "fuzz");
            kvt_msg_set_array (msg, 1, tokens, 50);
            if (ids [k] == KVT_MSG_STORE)
                kvt_msg_set_bin (msg, KVT_STORE_KV, kv, kv_bytes);
            if (ids [k] == KVT_MSG_STORE_TAIL) {     //  Blocks from 1 on
                kvt_msg_set_u64 (msg, KVT_STORE_TAIL_FROM_BLOCK, 1);
                kvt_msg_set_bin (msg, KVT_STORE_TAIL_KV, kv, kv_bytes - s_hello.block_bytes);
            }
            if (ids [k] == KVT_MSG_GENERATE)
                kvt_msg_set_u64 (msg, KVT_GENERATE_MAX_NEW_TOKENS, 1);
        }
        assert (kvt_msg_encode (msg, &seeds [k]) == 0);
        kvt_msg_destroy (&msg);
    }
    free (kv);
    zsock_t *fuzzer = zsock_new_dealer (s_endpoint);
    zsock_set_linger (fuzzer, 0);
    zpoller_t *poller = zpoller_new (fuzzer, NULL);
    uint64_t seed = 2026;
    int sent = 0, errors = 0, oks = 0, missing = 0;
    for (int round = 0; round < rounds; round++) {
        zframe_t *seed_frame = seeds [kvt_splitmix64 (&seed) % (uint64_t) seed_count];
        size_t size = zframe_size (seed_frame);
        uint8_t *bytes = (uint8_t *) zmalloc (size + 8);
        memcpy (bytes, zframe_data (seed_frame), size);
        int edits = 1 + (int) (kvt_splitmix64 (&seed) % 4);
        for (int e = 0; e < edits; e++) {
            uint64_t r = kvt_splitmix64 (&seed);
            if (r % 10 < 6 && size)
                bytes [(r >> 8) % size] = (uint8_t) (r >> 40);
            else
            if (r % 10 < 8)
                size = size? (r >> 8) % (size + 1): 0;
            else
            if (size < zframe_size (seed_frame) + 4) {
                size_t at = (r >> 8) % (size + 1);
                memmove (bytes + at + 1, bytes + at, size - at);
                bytes [at] = (uint8_t) (r >> 40);
                size++;
            }
        }
        kvt_msg_t *decoded = NULL;
        bool slow = false;
        if (kvt_msg_decode (bytes, size, &decoded) == 0) {
            size_t count = 0;
            if (kvt_msg_id (decoded) == KVT_MSG_GENERATE) {
                kvt_msg_array (decoded, KVT_GENERATE_TOKENS, &count);
                slow = kvt_msg_u64 (decoded, KVT_GENERATE_MAX_NEW_TOKENS) > 16;
            }
            if (kvt_msg_id (decoded) == KVT_MSG_STORE || kvt_msg_id (decoded) == KVT_MSG_LOAD
            ||  kvt_msg_id (decoded) == KVT_MSG_LOOKUP
            ||  kvt_msg_id (decoded) == KVT_MSG_STORE_TAIL)
                kvt_msg_array (decoded, 1, &count);
            slow |= count > 4000;
            kvt_msg_destroy (&decoded);
        }
        if (!slow) {
            zmq_send (zsock_resolve (fuzzer), bytes, size, 0);
            sent++;
            kvt_msg_t *reply = NULL;
            if (zpoller_wait (poller, 10000) == fuzzer && kvt_msg_recv (fuzzer, &reply) == 0) {
                if (kvt_msg_id (reply) == KVT_MSG_ERROR)
                    errors++;
                else
                    oks++;
            }
            else
                missing++;
            kvt_msg_destroy (&reply);
        }
        free (bytes);
    }
    printf ("  %-34s %d sent: %d ERROR, %d _OK, %d unanswered\n", "mutated frames", sent,
            errors, oks, missing);
    t_check (missing == 0, "fuzz: %d mutated frames got no reply", missing);
    zpoller_destroy (&poller);
    zsock_destroy (&fuzzer);
    for (int k = 0; k < seed_count; k++)
        zframe_destroy (&seeds [k]);
    t_still_serving ("mutated frames");
}

//  --------------------------------------------------------------------------
//  Concurrency: each thread generates on a shared prompt (whose answer is
//  known) and on its own prompt, and looks both up.

typedef struct {
    int index;                      //  Thread number
    const uint64_t *shared;         //  Shared prompt
    size_t shared_count;            //  Its tokens
    const uint64_t *expected;       //  Output tokens of the shared prompt
    size_t expected_count;          //  Their count
    int failures;                   //  Checks failed in this thread
} t_worker_t;

static void *
t_worker (void *arg)
{
    t_worker_t *worker = (t_worker_t *) arg;
    kvt_client_t *client = kvt_client_new (s_endpoint, 60000);
    char tenant [32];
    snprintf (tenant, sizeof (tenant), "worker-%d", worker->index);
    size_t own_count = 3 * s_hello.block_tokens + 1;
    uint64_t *own = (uint64_t *) zmalloc (own_count * sizeof (uint64_t));
    kvt_client_random_tokens (own, own_count, s_hello.vocab, 1000 + worker->index);
    for (int round = 0; round < T_ROUNDS; round++) {
        kvt_client_generate_t generate;
        int rc = kvt_client_generate (client, "shared", worker->shared, worker->shared_count,
                                      worker->expected_count, &generate);
        if (rc || generate.token_count != worker->expected_count
        ||  memcmp (generate.tokens, worker->expected,
                    worker->expected_count * sizeof (uint64_t))) {
            printf ("FAIL worker %d round %d: shared GENERATE rc=%d %s\n", worker->index,
                    round, rc, kvt_client_error_name (client));
            worker->failures++;
        }
        kvt_client_generate_fini (&generate);
        rc = kvt_client_generate (client, tenant, own, own_count, 2, &generate);
        uint64_t cached = generate.from_gpu + generate.from_host + generate.from_nvme;
        if (rc || generate.token_count != 2 || (round > 0 && cached != 3)) {
            printf ("FAIL worker %d round %d: own GENERATE rc=%d cached=%" PRIu64 "\n",
                    worker->index, round, rc, cached);
            worker->failures++;
        }
        kvt_client_generate_fini (&generate);
        kvt_client_lookup_t lookup;
        rc = kvt_client_lookup (client, tenant, own, own_count, &lookup);
        if (rc || lookup.matched_blocks != 3) {
            printf ("FAIL worker %d round %d: LOOKUP rc=%d matched=%" PRIu64 "\n",
                    worker->index, round, rc, lookup.matched_blocks);
            worker->failures++;
        }
        kvt_client_lookup_fini (&lookup);
    }
    free (own);
    kvt_client_destroy (&client);
    return NULL;
}

static void
t_concurrency (void)
{
    size_t shared_count = 2 * s_hello.block_tokens + 5;
    uint64_t *shared = (uint64_t *) zmalloc (shared_count * sizeof (uint64_t));
    kvt_client_random_tokens (shared, shared_count, s_hello.vocab, 4242);
    kvt_client_t *client = kvt_client_new (s_endpoint, 60000);
    kvt_client_generate_t reference;
    int rc = kvt_client_generate (client, "shared", shared, shared_count, 3, &reference);
    t_check (rc == 0 && reference.token_count == 3, "reference GENERATE: %d", rc);
    kvt_client_destroy (&client);
    if (rc == 0) {
        pthread_t threads [T_THREADS];
        t_worker_t workers [T_THREADS];
        int64_t start = zclock_mono ();
        for (int k = 0; k < T_THREADS; k++) {
            workers [k] = (t_worker_t) { k, shared, shared_count, reference.tokens,
                                         reference.token_count, 0 };
            assert (pthread_create (&threads [k], NULL, t_worker, &workers [k]) == 0);
        }
        for (int k = 0; k < T_THREADS; k++) {
            pthread_join (threads [k], NULL);
            t_check (workers [k].failures == 0, "worker %d: %d failures", k,
                     workers [k].failures);
        }
        printf ("  %d threads x %d rounds x 3 requests in %" PRId64 " ms\n", T_THREADS,
                T_ROUNDS, zclock_mono () - start);
    }
    kvt_client_generate_fini (&reference);
    free (shared);
}

//  --------------------------------------------------------------------------

int
main (void)
{
    const char *kvtier = getenv ("KVTIER");
    if (!kvtier || access (kvtier, X_OK) != 0) {
        printf ("skip: KVTIER is not set to the kvtier binary\n");
        return T_EXIT_SKIP;
    }
    zsys_init ();
    zsys_handler_set (NULL);        //  SIGINT is for the server, not us
    snprintf (s_endpoint, sizeof (s_endpoint), "tcp://127.0.0.1:%d", t_free_port ());
    char option_endpoint [160], option_ipc [160], log_path [64];
    snprintf (option_endpoint, sizeof (option_endpoint), "scheduler/endpoint=%s", s_endpoint);
    snprintf (option_ipc, sizeof (option_ipc),
              "scheduler/ipc_endpoint=ipc:///tmp/kvt-bad-%d.ipc", getpid ());
    snprintf (log_path, sizeof (log_path), "/tmp/kvt-bad-%d.log", getpid ());
    pid_t server = fork ();
    assert (server >= 0);
    if (server == 0) {
        FILE *log = freopen (log_path, "w", stdout);
        if (log)
            dup2 (fileno (stdout), STDERR_FILENO);
        execl (kvtier, kvtier, "serve", "-o", option_endpoint, "-o", option_ipc,
               "-o", "scheduler/max_frame_bytes=65536", (char *) NULL);
        _exit (127);
    }
    //  Wait for the front door
    kvt_client_t *client = kvt_client_new (s_endpoint, 500);
    int64_t deadline = zclock_mono () + 30000;
    int rc = -ETIMEDOUT;
    int status;
    bool exited = false;
    while (rc && zclock_mono () < deadline) {
        if (waitpid (server, &status, WNOHANG) == server) {
            exited = true;
            break;
        }
        rc = kvt_client_hello (client, "test_bad_input", &s_hello);
    }
    kvt_client_destroy (&client);
    t_check (rc == 0, "server did not answer HELLO within 30 s (rc %d, exited %d)", rc, exited);
    if (rc == 0) {
        printf ("server %s, vocab %" PRIu64 ", block_tokens %" PRIu64 "\n", s_hello.server,
                s_hello.vocab, s_hello.block_tokens);
        printf ("bad input:\n");
        t_bad_input ();
        t_fuzz (600);
        printf ("concurrency:\n");
        t_concurrency ();
    }
    //  SIGINT: exit 0 within 10 s
    if (!exited) {
        kill (server, SIGINT);
        int64_t stop_deadline = zclock_mono () + 10000;
        while (!exited && zclock_mono () < stop_deadline) {
            if (waitpid (server, &status, WNOHANG) == server)
                exited = true;
            else
                zclock_sleep (20);
        }
        t_check (exited, "server still running 10 s after SIGINT");
        if (!exited) {
            kill (server, SIGKILL);
            waitpid (server, &status, 0);
        }
        else
            t_check (WIFEXITED (status) && WEXITSTATUS (status) == 0,
                     "server exit status %d after SIGINT", status);
    }
    if (s_failures) {
        printf ("---- server log (%s) ----\n", log_path);
        char command [96];
        snprintf (command, sizeof (command), "tail -n 40 %s", log_path);
        if (system (command) != 0)
            printf ("(no log)\n");
    }
    unlink (log_path);
    printf ("%s: %d failures\n", s_failures? "FAIL": "PASS", s_failures);
    return s_failures? T_EXIT_FAIL: T_EXIT_PASS;
}
