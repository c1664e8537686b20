/*  =========================================================================
    test_fuzz_input - randomized bad input at the front door and actor inboxes

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Starts a runtime in this process (scheduler/max_frame_bytes = 65536,
    tiers of 64 / 64 / 256 blocks) and computes a reference GENERATE. Then:
    - a deterministic case this test found: prefix_index must refuse an
      IDX_INSERT of slots past a tier's capacity (it took them, and its
      blocks on the tier then no longer matched the tier's used slots);
    - a sweep: every message id 0..79, well-formed, to the front door, and
      every internal request, unmutated, to the ipc inboxes of tier_gpu,
      tier_host, tier_nvme, prefix_index, migration and compute;
    - for a bounded time (KVT_FUZZ_SECONDS, default 12), bursts of 400
      front-door frames built from valid messages of every client type
      (HELLO, LOOKUP, STORE, LOAD, GENERATE, STATS, DEMOTE, STORE_TAIL) and
      10% of other ids: byte flips, truncation, extension, a wrong version
      or id byte, msgpack type markers, a field of the wrong type, arrays
      and blobs that claim more than the frame, a field missing or extra,
      tokens >= vocab, tiers / blocks / max_new_tokens out of range,
      over-long strings, long prompts, empty frames, extra frames,
      multi-frame garbage, frames over max_frame; and 120 internal frames
      to those inboxes, mutated the same way, with slots, hashes, counts
      and tickets far out of range (in "mixed" mode tokens, tiers and
      small counts are in range, so handlers meet the far slots). Internal
      allocations (TIER_ALLOC, MIG_RESERVE, IDX_CLAIM) are not sent: the
      peer protocol trusts its callers to give back what they take.
    Checks: every frame that decodes here gets exactly one reply (within
    8 s); every reply decodes and is an ERROR (negative code, matching
    name, a detail; EBADMSG / EVERSION / ENOTSUP / EMSGSIZE for a frame
    that does not decode, ENOTSUP for a non-client id at the front door)
    or the _OK of the request it answers; a request the front door must
    refuse (token >= vocab, wrong KV size, from_block past the prompt,
    DEMOTE not one tier down, max_new_tokens > 4096, empty GENERATE) gets
    an ERROR; an _OK is sane (LOOKUP / LOAD / GENERATE / STORE / DEMOTE
    counts and tiers within the request; STORE's stored + present = the
    prompt's full blocks); an internal _OK about far-out ids did nothing.
    After each burst HELLO and the reference GENERATE are answered within
    10 s with the reference tokens; at the end, once quiet, no tier uses
    more than its capacity and each tier's used slots equal the index's
    blocks there. A crash, a hang or a sanitizer report fails the run.
    The seed (default 20261128) is printed; argv[1] or KVT_FUZZ_SEED
    replays one; KVT_FUZZ_TRACE=1 prints every frame before it is sent,
    KVT_FUZZ_VERBOSE=1 keeps the runtime's warnings.
@end
*/

#include <msgpack.h>
#include <inttypes.h>
#include "testutil.h"
#include "fuzz_frames.h"

#define S_FRONT_BURST   400         //  Front-door frames per burst
#define S_ACTOR_BURST   120         //  Actor-inbox frames per burst
#define S_MAX_SENT      (S_FRONT_BURST + 8)
#define S_REPLY_MS      8000        //  Decodable frames are answered within this
#define S_CAPACITY_HOST 64          //  tier_host/capacity_blocks

static int s_failures;              //  Checks failed
static kvt_runtime_t *s_runtime;    //  The runtime under test
static uint64_t s_frames;           //  Frames sent, all bursts
static uint64_t s_replies;          //  Replies checked, all bursts
static uint64_t s_errors;           //  Of which ERRORs
static uint64_t s_ok [KVT_MSG_COUNT];   //  _OK replies by id
static char s_error_names [32][24]; //  ERROR names seen
static uint64_t s_error_counts [32];    //  How often each
static const uint8_t *s_last_frame; //  Frame being described on failure
static size_t s_last_size;          //  Its size
static bool s_trace;                //  KVT_FUZZ_TRACE: print every frame before sending

#define s_expect(cond, ...) do { if (!(cond)) { \
    s_failures++; printf ("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf (__VA_ARGS__); printf ("\n"); } } while (0)


//  Print a frame in hex (at most 96 bytes), to turn a failure into a case.
static void
s_dump (const char *what, const uint8_t *data, size_t size)
{
    printf ("  %s (%zu bytes):", what, size);
    for (size_t k = 0; k < size && k < 96; k++)
        printf (" %02x", data [k]);
    printf ("%s\n", size > 96? " ...": "");
}

//  --------------------------------------------------------------------------
//  Sending and checking

typedef struct {
    uint64_t rid;                   //  Request id as decoded here
    int id;                         //  Message id as decoded here, 0 if it did not decode
    int replies;                    //  Replies seen
    bool must_reply;                //  It decodes: the server owes one reply
    bool has_rid;                   //  rid could be read, decoded or not
    bool front;                     //  Sent to the front door
    bool mixed;                     //  Internal, in mixed mode
    kvt_msg_t *msg;                 //  As decoded here, or NULL
    uint8_t head [96];              //  First bytes, for the report
    size_t size;                    //  Frame size
} s_sent_t;

//  Full blocks of a client request's tokens, and whether one is >= vocab.
static size_t
s_blocks (const kvt_msg_t *msg, int field, bool *wild)
{
    size_t count;
    const uint64_t *tokens = kvt_msg_array (msg, field, &count);
    for (size_t k = 0; k < count; k++)
        if (tokens [k] >= s_hello.vocab)
            *wild = true;
    return count / s_hello.block_tokens;
}

//  Why the front door must refuse this well-formed request, or NULL.
static const char *
s_must_refuse (const kvt_msg_t *msg)
{
    bool wild = false;
    size_t blocks, bytes;
    int id = kvt_msg_id (msg);
    switch (id) {
        case KVT_MSG_HELLO:
        case KVT_MSG_STATS:
            return NULL;
        case KVT_MSG_LOOKUP:
        case KVT_MSG_LOAD:
            s_blocks (msg, 1, &wild);
            return wild? "a token >= vocab": NULL;
        case KVT_MSG_GENERATE:
            blocks = s_blocks (msg, KVT_GENERATE_TOKENS, &wild);
            kvt_msg_array (msg, KVT_GENERATE_TOKENS, &bytes);
            return wild? "a token >= vocab": bytes == 0? "no prompt tokens":
                kvt_msg_u64 (msg, KVT_GENERATE_MAX_NEW_TOKENS) > 4096? "max_new_tokens > 4096":
                NULL;
        case KVT_MSG_STORE:
        case KVT_MSG_STORE_TAIL: {
            bool tail = id == KVT_MSG_STORE_TAIL;
            blocks = s_blocks (msg, tail? KVT_STORE_TAIL_TOKENS: KVT_STORE_TOKENS, &wild);
            uint64_t first = tail? kvt_msg_u64 (msg, KVT_STORE_TAIL_FROM_BLOCK): 0;
            kvt_msg_bin (msg, tail? KVT_STORE_TAIL_KV: KVT_STORE_KV, &bytes);
            return wild? "a token >= vocab": first > blocks? "from_block past the prompt":
                bytes != (blocks - first) * s_hello.block_bytes? "the wrong KV size": NULL;
        }
        case KVT_MSG_DEMOTE: {
            uint64_t from = kvt_msg_u64 (msg, KVT_DEMOTE_FROM_TIER);
            uint64_t to = kvt_msg_u64 (msg, KVT_DEMOTE_TO_TIER);
            return from >= KVT_TIER_NVME || to != from + 1? "not one tier down": NULL;
        }
        default:
            return "not a client request";
    }
}

//  Whether an _OK reply 'reply' to well-formed 'request' makes sense;
//  says why not in 'why'.
static bool
s_ok_sane (const kvt_msg_t *request, const kvt_msg_t *reply, const char **why)
{
    bool wild = false;
    size_t count, tiers_count, bytes;
    const uint64_t *values;
    *why = "";
    switch (kvt_msg_id (request)) {
        case KVT_MSG_HELLO:
            *why = "HELLO_OK describes another model";
            return kvt_msg_u64 (reply, KVT_HELLO_OK_VOCAB) == s_hello.vocab
                && kvt_msg_u64 (reply, KVT_HELLO_OK_BLOCK_BYTES) == s_hello.block_bytes
                && kvt_msg_u64 (reply, KVT_HELLO_OK_PROTOCOL) == KVT_PROTOCOL_VERSION;
        case KVT_MSG_LOOKUP: {
            size_t blocks = s_blocks (request, KVT_LOOKUP_TOKENS, &wild);
            uint64_t matched = kvt_msg_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS);
            values = kvt_msg_array (reply, KVT_LOOKUP_OK_TIERS, &tiers_count);
            kvt_msg_array (reply, KVT_LOOKUP_OK_HASHES, &count);
            *why = "LOOKUP_OK: matched > blocks, or tiers/hashes do not match";
            bool ok = matched <= blocks && tiers_count == matched && count == matched;
            for (size_t k = 0; ok && k < tiers_count; k++)
                ok = values [k] < KVT_TIER_COUNT;
            return ok;
        }
        case KVT_MSG_LOAD: {
            size_t blocks = s_blocks (request, KVT_LOAD_TOKENS, &wild);
            uint64_t got = kvt_msg_u64 (reply, KVT_LOAD_OK_BLOCKS);
            kvt_msg_bin (reply, KVT_LOAD_OK_KV, &bytes);
            values = kvt_msg_array (reply, KVT_LOAD_OK_TIERS, &tiers_count);
            *why = "LOAD_OK: blocks > prompt, or kv/tiers do not match blocks";
            bool ok = got <= blocks && bytes == got * s_hello.block_bytes && tiers_count == got;
            for (size_t k = 0; ok && k < tiers_count; k++)
                ok = values [k] < KVT_TIER_COUNT;
            return ok;
        }
        case KVT_MSG_GENERATE: {
            size_t blocks = s_blocks (request, KVT_GENERATE_TOKENS, &wild);
            values = kvt_msg_array (reply, KVT_GENERATE_OK_TOKENS, &count);
            uint64_t found = kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_GPU)
                           + kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_HOST)
                           + kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_NVME);
            *why = "GENERATE_OK: more tokens than asked, a token >= vocab, or more blocks "
                   "found than the prompt has";
            bool ok = count <= kvt_msg_u64 (request, KVT_GENERATE_MAX_NEW_TOKENS)
                   && found <= blocks;
            for (size_t k = 0; ok && k < count; k++)
                ok = values [k] < s_hello.vocab;
            return ok;
        }
        case KVT_MSG_STORE:
        case KVT_MSG_STORE_TAIL: {
            bool tail = kvt_msg_id (request) == KVT_MSG_STORE_TAIL;
            size_t blocks = s_blocks (request, tail? KVT_STORE_TAIL_TOKENS: KVT_STORE_TOKENS,
                                      &wild);
            //  PROTOCOL.md: stored + present is the number of full blocks
            //  (for STORE_TAIL too: present counts the cached prefix)
            *why = "STORE_OK: stored + present is not the prompt's full blocks";
            return kvt_msg_u64 (reply, 0) + kvt_msg_u64 (reply, 1) == blocks;
        }
        case KVT_MSG_DEMOTE:
            *why = "DEMOTE_OK: moved more than max_blocks";
            return kvt_msg_u64 (reply, KVT_DEMOTE_OK_MOVED)
                <= kvt_msg_u64 (request, KVT_DEMOTE_MAX_BLOCKS);
        default:
            return true;
    }
}

//  Check one reply against what was sent on this socket.
static void
s_check_reply (zframe_t *frame, s_sent_t *sent, size_t sent_count, const char *where)
{
    kvt_msg_t *reply = NULL;
    int rc = kvt_msg_decode (zframe_data (frame), zframe_size (frame), &reply);
    s_expect (rc == 0, "%s: a reply did not decode (%s)", where, kvt_strerror_name (rc));
    if (rc) {
        s_dump ("reply", zframe_data (frame), zframe_size (frame));
        return;
    }
    s_replies++;
    uint64_t rid = kvt_msg_request_id (reply);
    s_sent_t *match = NULL;
    int matches = 0;                //  Decodable frames with this rid
    int readable = 0;               //  Frames whose rid reads as this one
    for (size_t k = 0; k < sent_count; k++)
        if (sent [k].has_rid && sent [k].rid == rid) {
            readable++;
            if (sent [k].id) {
                match = &sent [k];
                matches++;
            }
        }
    if (kvt_msg_id (reply) == KVT_MSG_ERROR) {
        s_errors++;
        int64_t code = kvt_msg_i64 (reply, KVT_ERROR_CODE);
        const char *name = kvt_msg_str (reply, KVT_ERROR_NAME);
        const char *detail = kvt_msg_str (reply, KVT_ERROR_DETAIL);
        s_expect (code < 0, "%s: ERROR code %" PRId64 " is not negative", where, code);
        s_expect (streq (name, kvt_strerror_name ((int) code)),
                  "%s: ERROR name %s does not match code %" PRId64, where, name, code);
        s_expect (*detail, "%s: ERROR %s with no detail", where, name);
        for (int k = 0; k < 32; k++)
            if (!*s_error_names [k] || streq (s_error_names [k], name)) {
                snprintf (s_error_names [k], sizeof (s_error_names [k]), "%s", name);
                s_error_counts [k]++;
                break;
            }
        if (readable == 1 && !match && code != -EBUSY)
            s_expect (code == -EBADMSG || code == KVT_EVERSION || code == -ENOTSUP
                      || code == -EMSGSIZE,
                      "%s: a frame that does not decode got %s '%s'", where, name, detail);
        if (matches == 1 && readable == 1 && match->front
        &&  kvt_msg_id (match->msg) != KVT_MSG_HELLO && kvt_msg_id (match->msg) != KVT_MSG_STATS
        &&  kvt_msg_id (match->msg) > KVT_MSG_STORE_TAIL_OK)
            s_expect (code == -ENOTSUP, "%s: %s at the front door got %s, not ENOTSUP", where,
                      kvt_msg_name (kvt_msg_id (match->msg)), name);
    }
    else {
        s_ok [kvt_msg_id (reply)]++;
        //  An _OK must answer a request we sent, with its reply type
        bool answers = false;
        for (size_t k = 0; k < sent_count; k++)
            if (sent [k].id && sent [k].rid == rid && kvt_msg_answers (kvt_msg_id (reply),
                                                                        sent [k].id))
                answers = true;
        s_expect (answers,
                  "%s: %s with request id %" PRIu64 " answers %s", where,
                  kvt_msg_name (kvt_msg_id (reply)), rid,
                  matches == 1? kvt_msg_name (match->id): "nothing we sent");
        if (answers && matches == 1 && readable == 1 && match->front) {
            const char *refuse = s_must_refuse (match->msg);
            s_expect (!refuse, "%s: %s with %s got %s", where, kvt_msg_name (match->id),
                      refuse, kvt_msg_name (kvt_msg_id (reply)));
            const char *why;
            bool sane = s_ok_sane (match->msg, reply, &why);
            s_expect (sane, "%s: %s", where, why);
            if (refuse || !sane)
                s_dump ("request", match->head, match->size);
        }
        if (answers && matches == 1 && readable == 1 && !match->front && !match->mixed) {
            //  Far-out hashes, slots, tickets name nothing that exists: an
            //  internal request about them finds, moves and frees nothing
            //  (a per-hash 'tiers' answer says KVT_TIER_NONE for each)
            int reply_id = kvt_msg_id (reply);
            const char *picture = kvt_msg_picture (reply_id);
            int tiers_field = kvt_msg_field_index (reply_id, "tiers");
            int slots_field = kvt_msg_field_index (reply_id, "slots");
            bool nothing = true;
            for (int k = 0; picture [k]; k++)
                if (picture [k] == 'u')
                    nothing = nothing && kvt_msg_u64 (reply, k) == 0;
                else
                if (picture [k] == 'a' && k == tiers_field) {
                    size_t count;
                    const uint64_t *tiers = kvt_msg_array (reply, k, &count);
                    for (size_t n = 0; n < count; n++)
                        nothing = nothing && tiers [n] == KVT_TIER_NONE;
                }
                else
                if (picture [k] == 'a' && !(k == slots_field && tiers_field >= 0)) {
                    size_t count;
                    kvt_msg_array (reply, k, &count);
                    nothing = nothing && count == 0;
                }
            s_expect (nothing, "%s: %s about nothing that exists did something", where,
                      kvt_msg_name (kvt_msg_id (reply)));
            if (!nothing)
                s_dump ("request", match->head, match->size);
        }
        if (!answers)
            for (size_t k = 0; k < sent_count; k++)
                if (sent [k].has_rid && sent [k].rid == rid)
                    s_dump (sent [k].id? "request": "undecodable request", sent [k].head,
                            sent [k].size);
    }
    if (readable > 1 && !kvt_msg_is_partial (reply)) {
        //  A mutated rid met another frame's: credit the first unanswered
        for (size_t k = 0; k < sent_count; k++)
            if (sent [k].has_rid && sent [k].rid == rid && sent [k].replies == 0) {
                sent [k].replies++;
                break;
            }
    }
    else
    if (matches == 1 && !kvt_msg_is_partial (reply)) {    //  (Parts precede the one answer)
        match->replies++;
        s_expect (match->replies == 1, "%s: request id %" PRIu64 " (%s) answered %d times",
                  where, rid, kvt_msg_name (match->id), match->replies);
    }
    kvt_msg_destroy (&reply);
}

//  Read one unsigned msgpack integer at *at; false if there is none.
static bool
s_read_uint (const uint8_t **at, const uint8_t *end, uint64_t *value)
{
    if (*at >= end)
        return false;
    uint8_t tag = *(*at)++;
    size_t width = tag <= 0x7f? 0: tag == 0xcc? 1: tag == 0xcd? 2: tag == 0xce? 4: tag == 0xcf? 8: 9;
    if (width == 9 || (size_t) (end - *at) < width)
        return false;
    *value = width? 0: tag;
    for (size_t k = 0; k < width; k++)
        *value = (*value << 8) | *(*at)++;
    return true;
}

//  The request id of a frame that does not decode, read as leniently as a
//  server might to address its ERROR: [version, id, rid, ...].
static bool
s_header_rid (const uint8_t *data, size_t size, uint64_t *rid)
{
    const uint8_t *at = data, *end = data + size;
    if (!size)
        return false;
    if (*at >= 0x90 && *at <= 0x9f)
        at++;
    else
    if (*at == 0xdc && size > 3)
        at += 3;
    else
    if (*at == 0xdd && size > 5)
        at += 5;
    else
        return false;
    uint64_t version, id;
    return s_read_uint (&at, end, &version) && s_read_uint (&at, end, &id)
        && s_read_uint (&at, end, rid);
}

//  Record a frame before sending it: decode it here to know what it owes.
static void
s_record (s_sent_t *sent, const uint8_t *data, size_t size, bool single)
{
    kvt_msg_destroy (&sent->msg);
    memset (sent, 0, sizeof (*sent));
    kvt_msg_t *msg = NULL;
    if (single && size <= S_MAX_FRAME && kvt_msg_decode (data, size, &msg) == 0) {
        sent->id = kvt_msg_id (msg);
        sent->rid = kvt_msg_request_id (msg);
        sent->must_reply = true;
        sent->has_rid = true;
        sent->msg = msg;
        msg = NULL;
    }
    else
        sent->has_rid = s_header_rid (data, size, &sent->rid);
    kvt_msg_destroy (&msg);
    sent->size = size < sizeof (sent->head)? size: sizeof (sent->head);
    if (sent->size)
        memcpy (sent->head, data, sent->size);
}

//  Receive replies on 'sock' until every owed reply came or 'ms' passed.
static void
s_drain (zsock_t *sock, s_sent_t *sent, size_t sent_count, int ms, const char *where)
{
    int64_t deadline = zclock_mono () + ms;
    zpoller_t *poller = zpoller_new (sock, NULL);
    while (true) {
        bool owed = false;
        for (size_t k = 0; k < sent_count; k++)
            if (sent [k].must_reply && sent [k].replies == 0)
                owed = true;
        int64_t left = deadline - zclock_mono ();
        //  Once nothing is owed, a short grace for unowed ERRORs
        if (!owed && left > 100)
            deadline = zclock_mono () + 100, left = 100;
        if (left <= 0)
            break;
        if (zpoller_wait (poller, (int) left) != sock)
            continue;
        zmsg_t *reply = zmsg_recv (sock);
        if (!reply)
            break;
        s_expect (zmsg_size (reply) == 1, "%s: a reply of %zu frames", where, zmsg_size (reply));
        zframe_t *frame = zmsg_first (reply);
        if (frame)
            s_check_reply (frame, sent, sent_count, where);
        zmsg_destroy (&reply);
    }
    zpoller_destroy (&poller);
    for (size_t k = 0; k < sent_count; k++)
        if (sent [k].must_reply && sent [k].replies == 0) {
            s_expect (false, "%s: %s request id %" PRIu64 " never answered", where,
                      kvt_msg_name (sent [k].id), sent [k].rid);
            s_dump ("request", sent [k].head, sent [k].size);
        }
}

//  Internal requests not sent (an empty frame goes instead): a well-formed
//  allocation from a peer takes slots for good (the peer protocol trusts
//  its callers to give them back).
static bool
s_excluded (const s_sent_t *sent)
{
    return sent->id == KVT_MSG_TIER_ALLOC || sent->id == KVT_MSG_MIG_RESERVE
        || sent->id == KVT_MSG_IDX_CLAIM;
}

//  Build one fuzz frame (or several) for message 'id' and send it.
static void
s_fuzz_one (zsock_t *sock, int id, uint64_t rid, bool actor, s_sent_t *sent)
{
    msgpack_sbuffer buffer;
    msgpack_sbuffer_init (&buffer);
    uint64_t how = s_below (100);
    zmsg_t *msg = zmsg_new ();
    bool single = true;
    if (how < 12)                   //  Valid (client) / far out of range (actor)
        s_pack_message (&buffer, id, rid, actor, 0);
    else
    if (how < 50) {                 //  Byte mutations of a valid message
        s_pack_message (&buffer, id, rid, actor, 0);
        s_mutate_bytes (&buffer);
        if (s_below (3) == 0)
            s_mutate_bytes (&buffer);
    }
    else
    if (how < 85)                   //  Structural: wrong type, wild value, arity
        s_pack_message (&buffer, id, rid, actor, 1 + (int) s_below (4));
    else
    if (how < 89) {                 //  Empty frame
    }
    else
    if (how < 92) {                 //  Oversize frame: a STORE past max_frame
        msgpack_packer pk;
        msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
        size_t big = S_MAX_FRAME + s_below (4096);
        uint8_t *kv = (uint8_t *) calloc (1, big);
        msgpack_pack_array (&pk, 6);
        msgpack_pack_uint64 (&pk, KVT_PROTOCOL_VERSION);
        msgpack_pack_uint64 (&pk, KVT_MSG_STORE);
        msgpack_pack_uint64 (&pk, rid);
        s_pack_str (&pk, "fz");
        msgpack_pack_array (&pk, 0);
        msgpack_pack_bin (&pk, big);
        msgpack_pack_bin_body (&pk, kv, big);
        free (kv);
    }
    else
    if (how < 96) {                 //  A valid frame with extra frames
        s_pack_message (&buffer, id, rid, actor, 0);
        single = false;
    }
    else {                          //  Multi-frame garbage
        uint8_t junk [48];
        kvt_client_fill_bytes (junk, sizeof (junk), s_next ());
        msgpack_sbuffer_write (&buffer, (const char *) junk, 1 + s_below (sizeof (junk) - 1));
        single = false;
    }
    s_record (sent, (const uint8_t *) buffer.data, buffer.size, single);
    sent->front = !actor;
    sent->mixed = actor && s_mixed;
    if (actor && s_excluded (sent)) {
        msgpack_sbuffer_clear (&buffer);
        s_record (sent, NULL, 0, true);
        sent->front = false;
    }
    zmsg_addmem (msg, buffer.data, buffer.size);
    if (!single)
        for (uint64_t n = 1 + s_below (3); n; n--) {
            uint8_t junk [16];
            kvt_client_fill_bytes (junk, sizeof (junk), s_next ());
            zmsg_addmem (msg, junk, s_below (sizeof (junk) + 1));
        }
    if (s_trace)
        s_dump (actor? "to an inbox": "to the front door", sent->head, sent->size);
    s_frames++;
    s_last_frame = sent->head;
    s_last_size = sent->size;
    int rc = zmsg_send (&msg, sock);
    s_expect (rc == 0, "send failed: %s", zmq_strerror (errno));
    zmsg_destroy (&msg);
    msgpack_sbuffer_destroy (&buffer);
}

//  --------------------------------------------------------------------------
//  The runtime still serves

static uint64_t s_ref_tokens [64];  //  Reference prompt
static size_t s_ref_count;          //  Its length
static uint64_t s_ref_out [16];     //  Its output, before any fuzzing
static size_t s_ref_out_count;      //  Output length

//  HELLO and the reference GENERATE, answered within 10 s, same tokens.
static void
s_still_serving (const char *after)
{
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (s_runtime), 10000);
    kvt_client_hello_t hello;
    int rc = kvt_client_hello (client, "fuzz-check", &hello);
    s_expect (rc == 0 && hello.vocab == s_hello.vocab, "after %s: HELLO got %s '%s'", after,
              kvt_strerror_name (rc), kvt_client_error_detail (client));
    kvt_client_generate_t out;
    rc = kvt_client_generate (client, "ref", s_ref_tokens, s_ref_count, 8, &out);
    s_expect (rc == 0, "after %s: GENERATE got %s '%s'", after, kvt_strerror_name (rc),
              kvt_client_error_detail (client));
    if (rc == 0) {
        s_expect (out.token_count == s_ref_out_count
                  && memcmp (out.tokens, s_ref_out, s_ref_out_count * sizeof (uint64_t)) == 0,
                  "after %s: GENERATE gave other tokens than the reference", after);
        free (out.tokens);
    }
    kvt_client_destroy (&client);
}

//  No tier over capacity; tiers' used slots equal the index's blocks, once
//  stable three times in a row (at most 20 s).
static void
s_check_counters (void)
{
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (s_runtime), 10000);
    static const char *tiers [] = { "gpu", "host", "nvme" };
    uint64_t used [3], index [3], capacity [3];
    int stable = 0;
    for (int round = 0; round < 40 && stable < 3; round++) {
        bool same = true;
        for (int t = 0; t < 3; t++) {
            char key [64];
            snprintf (key, sizeof (key), "tier_%s.used_blocks", tiers [t]);
            used [t] = t_stat (client, key);
            snprintf (key, sizeof (key), "tier_%s.capacity_blocks", tiers [t]);
            capacity [t] = t_stat (client, key);
            snprintf (key, sizeof (key), "prefix_index.blocks_%s", tiers [t]);
            index [t] = t_stat (client, key);
            same = same && used [t] == index [t];
        }
        stable = same? stable + 1: 0;
        if (stable < 3)
            zclock_sleep (500);
    }
    for (int t = 0; t < 3; t++) {
        printf ("tier %-4s used %" PRIu64 " of %" PRIu64 ", index %" PRIu64 "\n", tiers [t],
                used [t], capacity [t], index [t]);
        s_expect (capacity [t] == 0 || used [t] <= capacity [t], "tier %s over capacity",
                  tiers [t]);
        s_expect (used [t] == index [t], "tier %s: %" PRIu64 " slots used, index has %"
                  PRIu64 " blocks there", tiers [t], used [t], index [t]);
    }
    kvt_client_destroy (&client);
}

//  --------------------------------------------------------------------------

static const char *s_actors [] = {
    "tier_gpu", "tier_host", "tier_nvme", "prefix_index", "migration", "compute"
};
#define S_ACTORS (sizeof (s_actors) / sizeof (s_actors [0]))

//  Found by this test (seed 20261128, the sweep): prefix_index took
//  IDX_INSERT of slots past the tier's capacity, so its blocks on that tier
//  no longer matched the tier's used slots. Minimized: IDX_INSERT {hashes
//  [2 far], tier 1, slots [capacity + 5, far]}; it must be refused (ERANGE).
//  If taken, it is undone (so the later checks still mean something) and
//  fails the test.
static void
s_case_insert_far_slot (void)
{
    uint64_t hashes [2] = { S_FAR | 0x1234, S_FAR | 0x5678 };
    uint64_t slots [2] = { S_CAPACITY_HOST + 5, S_FAR };
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_INSERT);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_HASHES, hashes, 2);
    kvt_msg_set_u64 (msg, KVT_IDX_INSERT_TIER, KVT_TIER_HOST);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_SLOTS, slots, 2);
    kvt_msg_t *reply = t_call (s_runtime, "prefix_index", msg);
    bool refused = kvt_msg_id (reply) == KVT_MSG_ERROR;
    uint64_t inserted = refused? 0: kvt_msg_u64 (reply, KVT_IDX_INSERT_OK_INSERTED);
    kvt_msg_destroy (&reply);
    if (refused) {
        printf ("case IDX_INSERT of slots past capacity: refused\n");
        return;
    }
    printf ("BUG: prefix_index took IDX_INSERT of slots %" PRIu64 " and %#" PRIx64
            " on a %d-slot host tier (%" PRIu64 " inserted); undone\n",
            slots [0], slots [1], S_CAPACITY_HOST, inserted);
    msg = kvt_msg_new (KVT_MSG_IDX_REMOVE);
    kvt_msg_set_array (msg, KVT_IDX_REMOVE_HASHES, hashes, 2);
    reply = t_call (s_runtime, "prefix_index", msg);
    t_check (kvt_msg_id (reply) == KVT_MSG_IDX_REMOVE_OK);
    kvt_msg_destroy (&reply);
    s_expect (false, "prefix_index accepts IDX_INSERT of slots past the tier's capacity");
}

//  Every internal request, unmutated, far out of range and mixed, to every
//  actor's inbox once; and every message id, well-formed, to the front
//  door. Each must be answered (an ERROR, or an _OK that did nothing).
static void
s_sweep (zsock_t *front, zsock_t **inbox, s_sent_t *sent)
{
    for (size_t a = 0; a < S_ACTORS; a++) {
        size_t count = 0;
        for (int id = 1; id < KVT_MSG_COUNT; id++) {
            if (!kvt_msg_picture (id) || id == KVT_MSG_TIER_ALLOC || id == KVT_MSG_MIG_RESERVE
            ||  id == KVT_MSG_IDX_CLAIM || (id < 32 && id != KVT_MSG_STATS))
                continue;
            for (int mixed = 0; mixed < 2; mixed++) {
                msgpack_sbuffer buffer;
                msgpack_sbuffer_init (&buffer);
                s_mixed = mixed;
                s_pack_message (&buffer, id, S_FAR | (s_next () >> 32), true, 0);
                s_record (&sent [count], (const uint8_t *) buffer.data, buffer.size, true);
                sent [count].mixed = mixed;
                t_check (sent [count].must_reply);
                if (s_excluded (&sent [count])) {
                    msgpack_sbuffer_destroy (&buffer);
                    continue;
                }
                zframe_t *frame = zframe_new (buffer.data, buffer.size);
                t_check (zframe_send (&frame, inbox [a], 0) == 0);
                msgpack_sbuffer_destroy (&buffer);
                count++;
            }
        }
        char where [64];
        snprintf (where, sizeof (where), "sweep %s", s_actors [a]);
        s_drain (inbox [a], sent, count, S_REPLY_MS, where);
    }
    size_t count = 0;
    for (int id = 0; id < 80; id++) {
        msgpack_sbuffer buffer;
        msgpack_sbuffer_init (&buffer);
        if (kvt_msg_picture (id))
            s_pack_message (&buffer, id, (1ULL << 40) | (s_next () >> 24), false, 0);
        else {                      //  An unknown id: just the header
            msgpack_packer pk;
            msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
            msgpack_pack_array (&pk, 3);
            msgpack_pack_uint64 (&pk, KVT_PROTOCOL_VERSION);
            msgpack_pack_uint64 (&pk, id);
            msgpack_pack_uint64 (&pk, (1ULL << 40) | (s_next () >> 24));
        }
        s_record (&sent [count], (const uint8_t *) buffer.data, buffer.size, true);
        sent [count].front = true;
        zframe_t *frame = zframe_new (buffer.data, buffer.size);
        t_check (zframe_send (&frame, front, 0) == 0);
        msgpack_sbuffer_destroy (&buffer);
        count++;
    }
    s_drain (front, sent, count, S_REPLY_MS, "sweep front door");
    s_still_serving ("the sweep");
}

int
main (int argc, char **argv)
{
    uint64_t seed = 20261128;       //  Fixed, so ctest runs are comparable
    const char *text = argc > 1? argv [1]: getenv ("KVT_FUZZ_SEED");
    if (text && *text)
        seed = strtoull (text, NULL, 0);
    int seconds = getenv ("KVT_FUZZ_SECONDS")? atoi (getenv ("KVT_FUZZ_SECONDS")): 12;
    printf ("test_fuzz_input: seed %" PRIu64 " (replay: test_fuzz_input %" PRIu64
            " or KVT_FUZZ_SEED=%" PRIu64 "), %d s\n", seed, seed, seed, seconds);
    s_rng = seed;
    s_trace = getenv ("KVT_FUZZ_TRACE") != NULL;
    setvbuf (stdout, NULL, _IOLBF, 0);
    if (!getenv ("KVT_FUZZ_VERBOSE"))
        kvt_log_set_level (KVT_LOG_ERROR);  //  Refusals are logged as warnings
    zsys_init ();
    zsys_set_logstream (NULL);

    char frame [64];
    snprintf (frame, sizeof (frame), "scheduler/max_frame_bytes=%d", S_MAX_FRAME);
    const char *overrides [] = { "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
                                 "tier_nvme/capacity_blocks=256", frame, NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_fuzz_input", 20000);
    s_runtime = session.runtime;
    s_hello = session.hello;
    printf ("model: block_tokens %" PRIu64 ", block_bytes %" PRIu64 ", vocab %" PRIu64 "\n",
            s_hello.block_tokens, s_hello.block_bytes, s_hello.vocab);

    //  The reference output, before any fuzzing
    s_ref_count = 2 * s_hello.block_tokens + 3;
    t_check (s_ref_count <= 64);
    kvt_client_random_tokens (s_ref_tokens, s_ref_count, s_hello.vocab, 7);
    kvt_client_generate_t ref;
    t_ok (kvt_client_generate (session.client, "ref", s_ref_tokens, s_ref_count, 8, &ref));
    t_check (ref.token_count <= 16);
    memcpy (s_ref_out, ref.tokens, ref.token_count * sizeof (uint64_t));
    s_ref_out_count = ref.token_count;
    free (ref.tokens);
    s_still_serving ("the reference");

    zsock_t *front = zsock_new (ZMQ_DEALER);
    t_check (front && zsock_connect (front, "%s", kvt_runtime_ipc_endpoint (s_runtime)) == 0);
    zsock_set_sndhwm (front, 0);
    zsock_t *inbox [S_ACTORS];
    for (size_t a = 0; a < S_ACTORS; a++) {
        char endpoint [512];
        kvt_actor_endpoint (kvt_runtime_run_dir (s_runtime), s_actors [a], true, endpoint,
                            sizeof (endpoint));
        inbox [a] = zsock_new (ZMQ_DEALER);
        t_check (inbox [a] && zsock_connect (inbox [a], "%s", endpoint) == 0);
        zsock_set_sndhwm (inbox [a], 0);
    }
    static s_sent_t sent [S_MAX_SENT];
    s_case_insert_far_slot ();
    s_sweep (front, inbox, sent);
    printf ("sweep: %" PRIu64 " frames, %" PRIu64 " replies\n", s_frames, s_replies);
    int64_t start = zclock_mono ();
    int bursts = 0;
    while (zclock_mono () - start < seconds * 1000LL && s_failures == 0) {
        char where [64];
        //  Front door
        snprintf (where, sizeof (where), "burst %d front door", bursts);
        for (size_t k = 0; k < S_FRONT_BURST; k++) {
            int id = s_below (10)? s_client_ids [s_below (S_CLIENT_IDS)]
                                 : (int) (1 + s_below (KVT_MSG_COUNT - 1));
            if (!kvt_msg_picture (id))
                id = KVT_MSG_STATS;
            s_fuzz_one (front, id, (1ULL << 40) | (s_next () >> 24), false, &sent [k]);
        }
        s_drain (front, sent, S_FRONT_BURST, S_REPLY_MS, where);
        //  Actor inboxes: internal messages, far out of range
        for (size_t a = 0; a < S_ACTORS; a++) {
            snprintf (where, sizeof (where), "burst %d %s", bursts, s_actors [a]);
            size_t count = S_ACTOR_BURST / S_ACTORS;
            for (size_t k = 0; k < count; k++) {
                int id = (int) (1 + s_below (KVT_MSG_COUNT - 1));
                if (!kvt_msg_picture (id))
                    id = KVT_MSG_TIER_ALLOC;
                //  Internal requests with far-out values only, never a
                //  client request that would do real work
                if (id < 32 && id != KVT_MSG_STATS)
                    id = KVT_MSG_ERROR + (id % 2) * (KVT_MSG_HELLO_OK - KVT_MSG_ERROR);
                s_mixed = s_below (5) < 2;
                s_fuzz_one (inbox [a], id, S_FAR | (s_next () >> 32), true, &sent [k]);
            }
            s_drain (inbox [a], sent, count, S_REPLY_MS, where);
        }
        snprintf (where, sizeof (where), "burst %d", bursts);
        s_still_serving (where);
        bursts++;
    }
    printf ("%d bursts, %" PRIu64 " frames sent, %" PRIu64 " replies (%" PRIu64 " ERRORs)\n",
            bursts, s_frames, s_replies, s_errors);
    printf ("_OK replies:");
    for (int id = 0; id < KVT_MSG_COUNT; id++)
        if (s_ok [id])
            printf (" %s %" PRIu64, kvt_msg_name (id), s_ok [id]);
    printf ("\nERROR replies:");
    for (int k = 0; k < 32 && *s_error_names [k]; k++)
        printf (" %s %" PRIu64, s_error_names [k], s_error_counts [k]);
    printf ("\n");
    if (s_failures)
        s_dump ("last frame sent", s_last_frame, s_last_size);
    s_check_counters ();
    for (size_t k = 0; k < S_MAX_SENT; k++)
        kvt_msg_destroy (&sent [k].msg);
    for (size_t a = 0; a < S_ACTORS; a++)
        zsock_destroy (&inbox [a]);
    zsock_destroy (&front);
    t_session_end (&session);
    printf ("%s: %d failure(s) (seed %" PRIu64 ")\n", s_failures? "FAIL": "PASS", s_failures,
            seed);
    return s_failures? T_EXIT_FAIL: T_EXIT_PASS;
}
