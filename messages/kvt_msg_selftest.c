/*  =========================================================================
    kvt_msg_selftest - the codec's selftest: every message of the catalogue
    round-trips with random values; garbage, truncations and mutations
    never crash and never decode wrongly

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <czmq.h>
#include <msgpack.h>
#include <errno.h>
#include <inttypes.h>
#include "kvt_error.h"
#include "kvt_msg.h"
#include "kvt_util.h"

static kvt_msg_t *
s_random_msg (int id, uint64_t *seed)
{
    kvt_msg_t *msg = kvt_msg_new (id);
    kvt_msg_set_request_id (msg, kvt_splitmix64 (seed));
    const char *picture = kvt_msg_picture (id);
    for (int f = 0; picture [f]; f++) {
        uint64_t r = kvt_splitmix64 (seed);
        char text [32];
        uint64_t values [40];
        size_t count = r % 40;
        for (size_t k = 0; k < count; k++)
            values [k] = k % 3 == 0? kvt_splitmix64 (seed): kvt_splitmix64 (seed) % 300;
        switch (picture [f]) {
            case 'u': kvt_msg_set_u64 (msg, f, r >> (r % 64)); break;
            case 'i': kvt_msg_set_i64 (msg, f, (int64_t) r >> (r % 64)); break;
            case 's':
                snprintf (text, sizeof (text), "t%" PRIu64, r % 100000);
                kvt_msg_set_str (msg, f, text);
                break;
            case 'b': kvt_msg_set_bin (msg, f, values, count * 8); break;
            case 'a': kvt_msg_set_array (msg, f, values, count); break;
            case 'm':
                for (size_t k = 0; k < count % 5; k++) {
                    snprintf (text, sizeof (text), "key%zu", k);
                    kvt_msg_map_add (msg, f, text, values [k]);
                }
                break;
        }
    }
    return msg;
}

static bool
s_msg_equal (const kvt_msg_t *a, const kvt_msg_t *b)
{
    if (kvt_msg_id (a) != kvt_msg_id (b) || kvt_msg_request_id (a) != kvt_msg_request_id (b))
        return false;
    const char *picture = kvt_msg_picture (kvt_msg_id (a));
    for (int f = 0; picture && picture [f]; f++) {
        size_t x_size, y_size;
        switch (picture [f]) {
            case 'u':
                if (kvt_msg_u64 (a, f) != kvt_msg_u64 (b, f))
                    return false;
                break;
            case 'i':
                if (kvt_msg_i64 (a, f) != kvt_msg_i64 (b, f))
                    return false;
                break;
            case 's':
                if (strcmp (kvt_msg_str (a, f), kvt_msg_str (b, f)))
                    return false;
                break;
            case 'b': {
                const void *x = kvt_msg_bin (a, f, &x_size), *y = kvt_msg_bin (b, f, &y_size);
                if (x_size != y_size || (x_size && memcmp (x, y, x_size)))
                    return false;
                break;
            }
            case 'a': {
                const uint64_t *x = kvt_msg_array (a, f, &x_size);
                const uint64_t *y = kvt_msg_array (b, f, &y_size);
                if (x_size != y_size || (x_size && memcmp (x, y, x_size * sizeof (uint64_t))))
                    return false;
                break;
            }
            case 'm':
                if (kvt_msg_map_size (a, f) != kvt_msg_map_size (b, f))
                    return false;
                for (size_t k = 0; k < kvt_msg_map_size (a, f); k++)
                    if (strcmp (kvt_msg_map_key (a, f, k), kvt_msg_map_key (b, f, k))
                    ||  kvt_msg_map_value (a, f, k) != kvt_msg_map_value (b, f, k))
                        return false;
                break;
        }
    }
    return true;
}

//  Encode a hand-made frame with msgpack-c for the negative cases.
static zframe_t *
s_frame_of (uint64_t version, uint64_t id, int extra_fields, bool wrong_type)
{
    msgpack_sbuffer buffer;
    msgpack_sbuffer_init (&buffer);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 3 + 2 + extra_fields);    //  LOOKUP has "sa"
    msgpack_pack_uint64 (&pk, version);
    msgpack_pack_uint64 (&pk, id);
    msgpack_pack_uint64 (&pk, 7);
    if (wrong_type)
        msgpack_pack_uint64 (&pk, 5);                  //  Tenant must be a string
    else {
        msgpack_pack_str (&pk, 1);
        msgpack_pack_str_body (&pk, "t", 1);
    }
    msgpack_pack_array (&pk, 2);
    msgpack_pack_uint64 (&pk, 1);
    msgpack_pack_uint64 (&pk, 2);
    for (int k = 0; k < extra_fields; k++)
        msgpack_pack_uint64 (&pk, 9);
    zframe_t *frame = zframe_new (buffer.data, buffer.size);
    msgpack_sbuffer_destroy (&buffer);
    return frame;
}

int
kvt_msg_test (bool verbose)
{
    uint64_t seed = 42;
    //  Round trip every message in the catalogue, many times
    int messages = 0;
    for (int round = 0; round < 50; round++)
        for (int id = 1; id < KVT_MSG_COUNT; id++) {
            if (!kvt_msg_name (id))
                continue;
            kvt_msg_t *msg = s_random_msg (id, &seed);
            zframe_t *frame;
            int rc = kvt_msg_encode (msg, &frame);
            assert (rc == 0);
            kvt_msg_t *copy = NULL;
            rc = kvt_msg_decode (zframe_data (frame), zframe_size (frame), &copy);
            assert (rc == 0);
            assert (s_msg_equal (msg, copy));
            //  Every strict prefix of a valid frame is malformed, never valid
            for (size_t cut = 0; cut < zframe_size (frame); cut += 1 + cut / 4) {
                kvt_msg_t *partial = NULL;
                rc = kvt_msg_decode (zframe_data (frame), cut, &partial);
                assert (rc == -EBADMSG && partial == NULL);
            }
            //  Single-byte mutations: either decode to something or fail cleanly
            for (int m = 0; m < 20; m++) {
                zframe_t *mutant = zframe_dup (frame);
                uint8_t *bytes = zframe_data (mutant);
                bytes [kvt_splitmix64 (&seed) % zframe_size (mutant)] ^= (uint8_t) (1 + kvt_splitmix64 (&seed) % 255);
                kvt_msg_t *decoded = NULL;
                rc = kvt_msg_decode (bytes, zframe_size (mutant), &decoded);
                assert ((rc == 0) == (decoded != NULL));
                kvt_msg_destroy (&decoded);
                zframe_destroy (&mutant);
            }
            zframe_destroy (&frame);
            kvt_msg_destroy (&msg);
            kvt_msg_destroy (&copy);
            messages++;
        }
    if (verbose)
        printf ("%d round trips\n", messages);

    //  Random bytes
    for (int k = 0; k < 2000; k++) {
        uint8_t junk [64];
        size_t size = kvt_splitmix64 (&seed) % sizeof (junk);
        for (size_t b = 0; b < size; b++)
            junk [b] = (uint8_t) kvt_splitmix64 (&seed);
        if (k % 3 == 0 && size > 0)
            junk [0] = 0x93 + (uint8_t) (kvt_splitmix64 (&seed) % 8);  //  Looks like an array
        kvt_msg_t *decoded = NULL;
        int rc = kvt_msg_decode (junk, size, &decoded);
        assert ((rc == 0) == (decoded != NULL));
        kvt_msg_destroy (&decoded);
    }

    //  Specific failures, each with its own code
    kvt_msg_t *decoded = NULL;
    zframe_t *frame = s_frame_of (KVT_PROTOCOL_VERSION, KVT_MSG_LOOKUP, 0, false);
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame), &decoded) == 0);
    size_t count;
    const uint64_t *tokens = kvt_msg_array (decoded, KVT_LOOKUP_TOKENS, &count);
    assert (count == 2 && tokens [1] == 2);
    assert (streq (kvt_msg_str (decoded, KVT_LOOKUP_TENANT), "t"));
    kvt_msg_destroy (&decoded);
    zframe_destroy (&frame);

    frame = s_frame_of (KVT_PROTOCOL_VERSION + 1, KVT_MSG_LOOKUP, 0, false);
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame), &decoded) == KVT_EVERSION);
    zframe_destroy (&frame);
    frame = s_frame_of (KVT_PROTOCOL_VERSION, 31, 0, false);
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame), &decoded) == -ENOTSUP);
    zframe_destroy (&frame);
    frame = s_frame_of (KVT_PROTOCOL_VERSION, 100000, 0, false);
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame), &decoded) == -ENOTSUP);
    zframe_destroy (&frame);
    frame = s_frame_of (KVT_PROTOCOL_VERSION, KVT_MSG_LOOKUP, 2, false);
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame), &decoded) == -EBADMSG);
    zframe_destroy (&frame);
    frame = s_frame_of (KVT_PROTOCOL_VERSION, KVT_MSG_LOOKUP, 0, true);
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame), &decoded) == -EBADMSG);
    zframe_destroy (&frame);

    //  A 7-byte frame claiming a 4-billion-element array must not allocate it
    uint8_t liar [] = { 0x95, 0x01, 0x04, 0x00, 0xa0, 0xdd, 0xff, 0xff, 0xff, 0xff };
    assert (kvt_msg_decode (liar, sizeof (liar), &decoded) == -EBADMSG);
    assert (decoded == NULL);

    //  Arrays are packed and read in bulk: each value in msgpack's shortest
    //  form, byte for byte as msgpack_pack_uint64 writes it, and read back
    //  at every width; a value of another type in an array is malformed
    uint64_t edges [] = { 0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffffffULL,
                          0x100000000ULL, 0x123456789abcdefULL, UINT64_MAX };
    size_t edge_count = sizeof (edges) / sizeof (edges [0]);
    kvt_msg_t *wide = kvt_msg_new (KVT_MSG_LOOKUP);
    kvt_msg_set_str (wide, KVT_LOOKUP_TENANT, "t");
    kvt_msg_set_array (wide, KVT_LOOKUP_TOKENS, edges, edge_count);
    assert (kvt_msg_encode (wide, &frame) == 0);
    msgpack_sbuffer expected;
    msgpack_sbuffer_init (&expected);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &expected, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, edge_count);
    for (size_t k = 0; k < edge_count; k++)
        msgpack_pack_uint64 (&pk, edges [k]);
    assert (zframe_size (frame) >= expected.size);
    assert (memcmp (zframe_data (frame) + zframe_size (frame) - expected.size, expected.data,
                    expected.size) == 0);
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame), &decoded) == 0);
    tokens = kvt_msg_array (decoded, KVT_LOOKUP_TOKENS, &count);
    assert (count == edge_count && memcmp (tokens, edges, sizeof (edges)) == 0);
    kvt_msg_destroy (&decoded);
    //  The last value cut short by one byte: malformed
    assert (kvt_msg_decode (zframe_data (frame), zframe_size (frame) - 1, &decoded) == -EBADMSG);
    zframe_destroy (&frame);
    msgpack_sbuffer_destroy (&expected);
    kvt_msg_destroy (&wide);
    uint8_t negative [] = { 0x95, 0x01, (uint8_t) KVT_MSG_LOOKUP, 0x07, 0xa1, 't',
                            0x93, 0x01, 0xcc, 0x80, 0xff };    //  [1, 128, -1]
    assert (kvt_msg_decode (negative, sizeof (negative), &decoded) == -EBADMSG);
    negative [10] = 0x05;
    assert (kvt_msg_decode (negative, sizeof (negative), &decoded) == 0);
    tokens = kvt_msg_array (decoded, KVT_LOOKUP_TOKENS, &count);
    assert (count == 3 && tokens [0] == 1 && tokens [1] == 128 && tokens [2] == 5);
    kvt_msg_destroy (&decoded);

    //  Field lookup by name matches the generated constants
    assert (kvt_msg_field_index (KVT_MSG_GENERATE, "max_new_tokens") == KVT_GENERATE_MAX_NEW_TOKENS);
    assert (kvt_msg_field_index (KVT_MSG_GENERATE, "nope") == -1);
    assert (streq (kvt_msg_name (KVT_MSG_GENERATE_OK), "GENERATE_OK"));

    //  Send/recv over a ROUTER/DEALER pair keeps the envelope; send consumes
    zsock_t *router = zsock_new_router ("inproc://kvt-msg-test");
    zsock_t *dealer = zsock_new_dealer ("inproc://kvt-msg-test");
    assert (router && dealer);
    kvt_msg_t *request = kvt_msg_new (KVT_MSG_HELLO);
    kvt_msg_set_request_id (request, 99);
    kvt_msg_set_str (request, KVT_HELLO_CLIENT, "selftest");
    assert (kvt_msg_send (&request, dealer) == 0);
    assert (request == NULL);
    kvt_msg_t *received = NULL;
    assert (kvt_msg_recv (router, &received) == 0);
    assert (kvt_msg_id (received) == KVT_MSG_HELLO && kvt_msg_request_id (received) == 99);
    kvt_msg_t *reply = kvt_msg_error_new (received, -EINVAL, "bad %s", "thing");
    assert (kvt_msg_send (&reply, router) == 0);
    kvt_msg_t *answer = NULL;
    assert (kvt_msg_recv (dealer, &answer) == 0);
    assert (kvt_msg_id (answer) == KVT_MSG_ERROR && kvt_msg_request_id (answer) == 99);
    assert (kvt_msg_i64 (answer, KVT_ERROR_CODE) == -EINVAL);
    assert (streq (kvt_msg_str (answer, KVT_ERROR_NAME), "EINVAL"));
    assert (streq (kvt_msg_str (answer, KVT_ERROR_DETAIL), "bad thing"));
    kvt_msg_destroy (&answer);
    kvt_msg_destroy (&received);
    //  Garbage on the wire: recv reports it but keeps the envelope for a reply
    zstr_send (dealer, "not msgpack");
    assert (kvt_msg_recv (router, &received) == -EBADMSG);
    assert (received && kvt_msg_id (received) == KVT_MSG_INVALID);
    reply = kvt_msg_error_new (received, -EBADMSG, "undecodable");
    assert (kvt_msg_send (&reply, router) == 0);
    assert (kvt_msg_recv (dealer, &answer) == 0 && kvt_msg_id (answer) == KVT_MSG_ERROR);
    kvt_msg_destroy (&answer);
    kvt_msg_destroy (&received);
    zsock_destroy (&dealer);
    zsock_destroy (&router);
    return 0;
}
