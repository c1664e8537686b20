/*  =========================================================================
    fuzz_frames - valid, wrong and wild msgpack frames for test_fuzz_input

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Builds every message of the catalogue as a frame: fields plausible for
    a client, far out of range for an actor (S_FAR), or in range but for
    the slots ("mixed"); one field maybe wrong-typed or wild, maybe one
    missing or one extra; then byte-level mutations. Randomness is one
    splitmix64 stream (s_rng, seeded by the test), so a seed replays a run.
    For test_fuzz_input only: its state is static, included once.
@end
*/

#ifndef KVT_FUZZ_FRAMES_H_INCLUDED
#define KVT_FUZZ_FRAMES_H_INCLUDED

#include <msgpack.h>
#include "testutil.h"
#include "kvt_util.h"

#define S_MAX_FRAME     65536       //  scheduler/max_frame_bytes
#define S_FAR           0xA5A5A5A500000000ULL   //  Out of range, even after one byte flip

static uint64_t s_rng;              //  splitmix64 state
static kvt_client_hello_t s_hello;  //  The server's HELLO_OK

static uint64_t
s_next (void)
{
    return kvt_splitmix64 (&s_rng);
}

static uint64_t
s_below (uint64_t bound)
{
    return bound? s_next () % bound: 0;
}

//  --------------------------------------------------------------------------
//  Building frames

static void
s_pack_str (msgpack_packer *pk, const char *text)
{
    msgpack_pack_str (pk, strlen (text));
    msgpack_pack_str_body (pk, text, strlen (text));
}

//  Prompts come from a few seeds, so stores, loads and lookups meet.
static size_t
s_prompt (uint64_t *tokens, size_t max)
{
    size_t count = s_below (3 * s_hello.block_tokens + 6);
    if (count > max)
        count = max;
    kvt_client_random_tokens (tokens, count, s_hello.vocab, 100 + s_below (4));
    return count;
}

//  A plausible value of field 'name' of a client message, packed.
static void
s_pack_client_field (msgpack_packer *pk, char type, const char *name, size_t blocks)
{
    if (type == 's')
        s_pack_str (pk, streq (name, "tenant")? "fz": "fuzzer");
    else
    if (type == 'u') {
        if (streq (name, "max_new_tokens"))
            msgpack_pack_uint64 (pk, 1 + s_below (4));
        else
        if (strstr (name, "tier"))
            msgpack_pack_uint64 (pk, s_below (3));
        else
            msgpack_pack_uint64 (pk, s_below (4));
    }
    else
    if (type == 'a' && s_below (40) == 0) {
        //  A long prompt: up to the frame limit in fixint tokens
        size_t count = 1000 + s_below (S_MAX_FRAME / 2);
        msgpack_pack_array (pk, count);
        for (size_t k = 0; k < count; k++)
            msgpack_pack_uint64 (pk, s_below (s_hello.vocab < 128? s_hello.vocab: 128));
    }
    else
    if (type == 'a') {
        uint64_t tokens [64];
        size_t count = s_prompt (tokens, 64);
        msgpack_pack_array (pk, count);
        for (size_t k = 0; k < count; k++)
            msgpack_pack_uint64 (pk, tokens [k]);
    }
    else
    if (type == 'b') {
        size_t size = blocks * s_hello.block_bytes;
        if (size > S_MAX_FRAME / 2)
            size = S_MAX_FRAME / 2;
        uint8_t *kv = (uint8_t *) malloc (size + 1);
        kvt_client_fill_bytes (kv, size, s_next ());
        msgpack_pack_bin (pk, size);
        msgpack_pack_bin_body (pk, kv, size);
        free (kv);
    }
    else
        msgpack_pack_map (pk, 0);
}

//  A value far out of range for an internal message field, packed.
static void
s_pack_actor_field (msgpack_packer *pk, char type)
{
    if (type == 's')
        s_pack_str (pk, "x");
    else
    if (type == 'u')
        msgpack_pack_uint64 (pk, S_FAR + s_below (1 << 20));
    else
    if (type == 'a') {
        size_t count = 1 + s_below (6);
        msgpack_pack_array (pk, count);
        for (size_t k = 0; k < count; k++)
            msgpack_pack_uint64 (pk, S_FAR + s_below (1 << 20));
    }
    else
    if (type == 'b') {
        msgpack_pack_bin (pk, 3);
        msgpack_pack_bin_body (pk, "abc", 3);
    }
    else
        msgpack_pack_map (pk, 0);
}

//  Mixed mode for internal messages: tokens, tiers and small counts are in
//  range, so the far slots, hashes and tickets are what a handler meets.
static bool s_mixed;

static void
s_pack_mixed_field (msgpack_packer *pk, char type, const char *name)
{
    bool tier = strstr (name, "tier") != NULL;
    bool small = streq (name, "max_blocks") || streq (name, "count")
              || streq (name, "cached_blocks") || streq (name, "max_new_tokens")
              || streq (name, "layer_group") || streq (name, "pin") || streq (name, "stream")
              || streq (name, "commit") || streq (name, "layers_ready")
              || streq (name, "failed");
    if (type == 'a' && (streq (name, "tokens") || tier)) {
        size_t count = 1 + s_below (streq (name, "tokens")? 40: 6);
        msgpack_pack_array (pk, count);
        for (size_t k = 0; k < count; k++)
            msgpack_pack_uint64 (pk, tier? s_below (3): s_below (s_hello.vocab));
    }
    else
    if (type == 'u' && (tier || small))
        msgpack_pack_uint64 (pk, s_below (tier? 3: 4));
    else
        s_pack_actor_field (pk, type);
}

//  Something of the wrong type for a field of type 'type'.
static void
s_pack_wrong (msgpack_packer *pk, char type)
{
    switch (s_below (9)) {
        case 0: msgpack_pack_nil (pk); break;
        case 1: msgpack_pack_true (pk); break;
        case 2: msgpack_pack_int64 (pk, -1 - (int64_t) s_below (1000)); break;
        case 3: msgpack_pack_double (pk, 1.5); break;
        case 4: if (type == 's') msgpack_pack_uint64 (pk, 7); else s_pack_str (pk, "7"); break;
        case 5: msgpack_pack_map (pk, 1); s_pack_str (pk, "k"); msgpack_pack_uint64 (pk, 1); break;
        case 6:                     //  An array that claims far more than it holds
            msgpack_pack_array (pk, 0xffffffffu - (uint32_t) s_below (16));
            msgpack_pack_uint64 (pk, 1);
            break;
        case 7:                     //  An array of the wrong element type
            msgpack_pack_array (pk, 2);
            msgpack_pack_int64 (pk, -5);
            s_pack_str (pk, "x");
            break;
        default:                    //  A string or blob that claims more than the frame
            msgpack_pack_bin (pk, 0x7fffffff);
            msgpack_pack_bin_body (pk, "ab", 2);
            break;
    }
}

//  Out-of-range values for a client field of type 'type'.
static void
s_pack_wild (msgpack_packer *pk, char type, const char *name)
{
    if (type == 'a') {
        size_t count = 1 + s_below (40);
        msgpack_pack_array (pk, count);
        size_t bad = s_below (count);
        for (size_t k = 0; k < count; k++)
            if (k == bad) {
                uint64_t wild [] = { s_hello.vocab, s_hello.vocab + 1, UINT64_MAX,
                                     1ULL << 63, 0xffffffffULL };
                msgpack_pack_uint64 (pk, wild [s_below (5)]);
            }
            else
                msgpack_pack_uint64 (pk, s_below (s_hello.vocab));
    }
    else
    if (type == 'u') {
        uint64_t wild [] = { 3, 7, 255, 256, 4097, 1ULL << 32, 1ULL << 63, UINT64_MAX,
                             257 };
        uint64_t value = wild [s_below (9)];
        if (streq (name, "max_new_tokens") && value > 4096 && value < (1ULL << 32) && s_below (2))
            value = 4097;
        msgpack_pack_uint64 (pk, value);
    }
    else
    if (type == 's') {                  //  Over KVT_MSG_MAX_STRING, or not UTF-8
        if (s_below (2)) {
            char text [5000];
            memset (text, 'z', sizeof (text));
            msgpack_pack_str (pk, sizeof (text));
            msgpack_pack_str_body (pk, text, sizeof (text));
        }
        else {
            msgpack_pack_str (pk, 3);
            msgpack_pack_str_body (pk, "\xff\xfe\x00", 3);
        }
    }
    else
    if (type == 'b') {
        size_t size = s_below (3 * s_hello.block_bytes + 7);
        if (size > S_MAX_FRAME / 2)
            size = S_MAX_FRAME / 2;
        uint8_t *kv = (uint8_t *) calloc (1, size + 1);
        msgpack_pack_bin (pk, size);
        msgpack_pack_bin_body (pk, kv, size);
        free (kv);
    }
    else
        s_pack_wrong (pk, type);
}

//  Pack message 'id' with 'rid': every field plausible (client) or far out
//  of range (actor), one field maybe wrong-typed or wild, maybe one field
//  missing or one extra.
static void
s_pack_message (msgpack_sbuffer *buffer, int id, uint64_t rid, bool actor, int shape)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, buffer, msgpack_sbuffer_write);
    const char *picture = kvt_msg_picture (id);
    const char *names = kvt_msg_field_names (id);
    size_t fields = strlen (picture);
    size_t arity = 3 + fields;
    size_t target = s_below (fields + 1);       //  The field to spoil, if any
    if (shape == 3 && fields)
        arity--;                                //  One missing
    if (shape == 4)
        arity++;                                //  One extra: an ext map or junk
    msgpack_pack_array (&pk, arity);
    msgpack_pack_uint64 (&pk, KVT_PROTOCOL_VERSION);
    msgpack_pack_uint64 (&pk, id);
    msgpack_pack_uint64 (&pk, rid);
    size_t blocks = s_below (4);
    char copy [256];
    snprintf (copy, sizeof (copy), "%s", names);
    char *saveptr = NULL;
    char *name = strtok_r (copy, " ", &saveptr);
    for (size_t k = 0; k < fields; k++, name = strtok_r (NULL, " ", &saveptr)) {
        if (shape == 3 && k == fields - 1)
            break;
        if (k == target && shape == 1)
            s_pack_wrong (&pk, picture [k]);
        else
        if (k == target && shape == 2 && !actor)
            s_pack_wild (&pk, picture [k], name? name: "");
        else
        if (actor)
        if (s_mixed && (id == KVT_MSG_IDX_VICTIMS || id == KVT_MSG_POLICY_VICTIMS))
            s_pack_actor_field (&pk, picture [k]);      //  Would offer real victims
        else
        if (s_mixed)
            s_pack_mixed_field (&pk, picture [k], name? name: "");
        else
            s_pack_actor_field (&pk, picture [k]);
        else
            s_pack_client_field (&pk, picture [k], name? name: "", blocks);
    }
    if (shape == 4) {
        if (s_below (2)) {
            msgpack_pack_map (&pk, 1);
            s_pack_str (&pk, "x");
            msgpack_pack_uint64 (&pk, 1);
        }
        else
            s_pack_wrong (&pk, 'u');
    }
}

static const int s_client_ids [] = {
    KVT_MSG_HELLO, KVT_MSG_LOOKUP, KVT_MSG_STORE, KVT_MSG_LOAD, KVT_MSG_GENERATE,
    KVT_MSG_STATS, KVT_MSG_DEMOTE, KVT_MSG_STORE_TAIL
};
#define S_CLIENT_IDS (sizeof (s_client_ids) / sizeof (s_client_ids [0]))

//  Mutate the encoded frame in 'buffer' in place (bytes).
static void
s_mutate_bytes (msgpack_sbuffer *buffer)
{
    uint8_t *data = (uint8_t *) buffer->data;
    switch (s_below (6)) {
        case 0:                     //  Flip 1..4 bytes
            for (uint64_t n = 1 + s_below (4); n && buffer->size; n--)
                data [s_below (buffer->size)] ^= (uint8_t) (1 + s_below (255));
            break;
        case 1:                     //  Truncate
            buffer->size = s_below (buffer->size);
            break;
        case 2: {                   //  Extend
            uint8_t junk [64];
            size_t extra = 1 + s_below (64);
            kvt_client_fill_bytes (junk, extra, s_next ());
            msgpack_sbuffer_write (buffer, (const char *) junk, extra);
            break;
        }
        case 3:                     //  Version byte
            if (buffer->size > 1)
                data [1] = (uint8_t) s_below (256);
            break;
        case 4:                     //  Message id byte (a fixint after the version)
            if (buffer->size > 2)
                data [2] = (uint8_t) (s_below (2)? s_below (80): s_below (256));
            break;
        default:                    //  Set one byte to a msgpack type marker
            if (buffer->size) {
                static const uint8_t markers [] = { 0xc0, 0xc1, 0xc2, 0xc4, 0xc6, 0xcf, 0xd3,
                                                    0xdb, 0xdd, 0xdf, 0x9f, 0xff, 0x00 };
                data [s_below (buffer->size)] = markers [s_below (sizeof (markers))];
            }
            break;
    }
}

#endif
