/*  =========================================================================
    kvt_msg - every message kvtier sends: the model, the codec, the envelope

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    One ZeroMQ frame per message, holding a msgpack array:
        [protocol_version, msg_id, request_id, field_1, ..., field_n, {ext}?]
    The catalogue below is the model: each message has a name, an id and a
    picture, one character per field:
        u  unsigned 64-bit integer          i  signed 64-bit integer
        s  UTF-8 string (<= KVT_MSG_MAX_STRING bytes)
        b  binary blob (<= the frame)       a  array of unsigned 64-bit ints
        m  map of string -> unsigned 64-bit int (counters)
    An optional trailing map after the last field carries experimental
    fields; decoders skip it. messages/PROTOCOL.md is written from the same
    catalogue.
@discuss
    Decode checks version, id, arity, every field's type and every bound
    before a handler runs; garbage never crashes and never allocates more
    than a small multiple of the frame size.
    On ROUTER sockets the routing envelope travels with the message, so a
    reply built with kvt_msg_reply_new goes back to whoever asked.
@end
*/

#ifndef KVT_MSG_H_INCLUDED
#define KVT_MSG_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_PROTOCOL_VERSION  1                     //  Bumped on any incompatible change
#define KVT_MSG_MAX_STRING    4096                  //  Longest string field, bytes
#define KVT_MSG_MAX_ARRAY     (1 << 22)             //  Most elements in one array field
#define KVT_MSG_MAX_MAP       4096                  //  Most entries in one map field
#define KVT_MSG_MAX_FRAME     (256u << 20)          //  Largest frame a server accepts
#define KVT_MSG_MAX_FIELDS    12                    //  Most fields in one message

//  Tier numbers, used in fields named 'tier' or 'tiers'.
#define KVT_TIER_GPU    0                           //  GPU HBM (host memory without a GPU)
#define KVT_TIER_HOST   1                           //  Pinned host DRAM, shared memory
#define KVT_TIER_NVME   2                           //  Blocks on disk
#define KVT_TIER_COUNT  3                           //  Number of tiers
#define KVT_TIER_NONE   255                         //  Not stored anywhere

//  Event kinds, used in POLICY_EVENTS.kinds (see PROTOCOL.md, policy protocol).
#define KVT_POLICY_EVENT_ACCESS 1                   //  A cached block was used again
#define KVT_POLICY_EVENT_INSERT 2                   //  A block now lives in the tier
#define KVT_POLICY_EVENT_EVICT  3                   //  A block left the tier (or is leaving)

//  The catalogue: M (NAME, id, picture, "field names")
//  Client <-> scheduler messages have ids 1..31; actor messages 32 and up;
//  prefix_index <-> an outside-process policy (migration/policy = remote:..)
//  60..62; actor messages added since, 63 and up.
#define KVT_MSG_CATALOGUE(M) \
    M (ERROR,           1,  "iss",     "code name detail") \
    M (HELLO,           2,  "s",       "client") \
    M (HELLO_OK,        3,  "suuuuuuus", "server protocol block_tokens block_bytes layers kv_heads head_dim vocab dtype") \
    M (LOOKUP,          4,  "sa",      "tenant tokens") \
    M (LOOKUP_OK,       5,  "uaa",     "matched_blocks tiers hashes") \
    M (STORE,           6,  "sab",     "tenant tokens kv") \
    M (STORE_OK,        7,  "uu",      "stored_blocks present_blocks") \
    M (LOAD,            8,  "sa",      "tenant tokens") \
    M (LOAD_OK,         9,  "uba",     "blocks kv tiers") \
    M (GENERATE,        10, "sau",     "tenant tokens max_new_tokens") \
    M (GENERATE_OK,     11, "auuuuuu", "tokens ttft_us total_us from_gpu from_host from_nvme computed") \
    M (STATS,           12, "",        "") \
    M (STATS_OK,        13, "m",       "counters") \
    M (DEMOTE,          14, "uuu",     "from_tier to_tier max_blocks") \
    M (DEMOTE_OK,       15, "u",       "moved") \
    M (STORE_TAIL,      16, "saub",    "tenant tokens from_block kv") \
    M (STORE_TAIL_OK,   17, "uu",      "stored_blocks present_blocks") \
    M (IDX_MATCH,       32, "au",      "hashes pin") \
    M (IDX_MATCH_OK,    33, "aa",      "tiers slots") \
    M (IDX_INSERT,      34, "aua",     "hashes tier slots") \
    M (IDX_INSERT_OK,   35, "ua",      "inserted duplicates") \
    M (IDX_MOVE,        36, "aua",     "hashes tier slots") \
    M (IDX_MOVE_OK,     37, "u",       "moved") \
    M (IDX_UNPIN,       38, "a",       "hashes") \
    M (IDX_UNPIN_OK,    39, "u",       "unpinned") \
    M (IDX_VICTIMS,     40, "uu",      "tier count") \
    M (IDX_VICTIMS_OK,  41, "aaaa",    "hashes slots reuses offers") \
    M (IDX_REMOVE,      42, "a",       "hashes") \
    M (IDX_REMOVE_OK,   43, "aa",      "tiers slots") \
    M (TIER_ALLOC,      44, "u",       "count") \
    M (TIER_ALLOC_OK,   45, "a",       "slots") \
    M (TIER_FREE,       46, "a",       "slots") \
    M (TIER_FREE_OK,    47, "u",       "freed") \
    M (TIER_WRITE,      48, "aaa",     "slots hashes src_slots") \
    M (TIER_WRITE_OK,   49, "ua",      "written failed") \
    M (TIER_READ,       50, "aaau",    "slots hashes dst_slots layer_group") \
    M (TIER_READ_OK,    51, "ua",      "read failed") \
    M (MIG_PROMOTE,     52, "aaau",    "hashes tiers slots stream") \
    M (MIG_PROMOTE_OK,  53, "aaau",    "gpu_slots failed host_slots ticket") \
    M (MIG_DEMOTE,      54, "uuu",     "from_tier to_tier max_blocks") \
    M (MIG_DEMOTE_OK,   55, "u",       "moved") \
    M (MIG_RESERVE,     56, "u",       "count") \
    M (MIG_RESERVE_OK,  57, "a",       "slots") \
    M (COMP_RUN,        58, "aauuau",  "tokens slots cached_blocks max_new_tokens host_slots ticket") \
    M (COMP_RUN_OK,     59, "auuu",    "tokens ttft_us total_us prefill_us") \
    M (POLICY_EVENTS,   60, "uaaaaa",  "clock kinds tiers hashes parents depths") \
    M (POLICY_VICTIMS,  61, "uua",     "tier count candidates") \
    M (POLICY_VICTIMS_OK, 62, "a",     "hashes") \
    M (IDX_CLAIM,       63, "auu",     "hashes tier max_blocks") \
    M (IDX_CLAIM_OK,    64, "aa",      "hashes slots") \
    M (MIG_PREFETCH,    65, "au",      "hashes max_blocks") \
    M (MIG_PREFETCH_OK, 66, "a",       "hashes") \
    M (MIG_PROMOTE_END, 67, "aaaaau",  "hashes tiers slots gpu_slots host_slots commit") \
    M (MIG_PROMOTE_END_OK, 68, "u",    "moved") \
    M (MIG_LAYERS_READY, 69, "uuu",    "ticket layers_ready failed") \
    M (MIG_LAYERS_READY_OK, 70, "u",   "known") \
    M (MIG_WRITE_THROUGH, 71, "a",     "hashes") \
    M (MIG_WRITE_THROUGH_OK, 72, "u",  "shadowed") \
    M (IDX_MATCH_PARTS, 73, "auu",     "hashes pin part_blocks") \
    M (IDX_MATCH_PARTS_OK, 74, "aa",   "tiers slots") \
    M (IDX_MATCH_PART,  75, "uaa",     "first tiers slots")

#define KVT_MSG_ENUM(name, id, picture, fields) KVT_MSG_##name = id,
typedef enum {
    KVT_MSG_INVALID = 0,            //  A frame that did not decode
    KVT_MSG_CATALOGUE (KVT_MSG_ENUM)
    KVT_MSG_COUNT                   //  One past the highest id
} kvt_msg_id_t;
#undef KVT_MSG_ENUM

#include "kvt_msg_fields.h"

typedef struct _kvt_msg_t kvt_msg_t;

//  --------------------------------------------------------------------------
//  Model queries

//  Return the name of message 'id' ("GENERATE_OK"), or NULL if unknown.
const char *
    kvt_msg_name (int id);

//  Return the picture of message 'id' ("sau"), or NULL if unknown.
const char *
    kvt_msg_picture (int id);

//  Return the space-separated field names of message 'id', or NULL.
const char *
    kvt_msg_field_names (int id);

//  Return the index of field 'name' in message 'id', or -1.
int
    kvt_msg_field_index (int id, const char *name);

//  --------------------------------------------------------------------------
//  Life cycle

//  Create an empty message of a known id; every field starts as 0 / "" / [].
kvt_msg_t *
    kvt_msg_new (int id);

//  Destroy a message; NULL-safe, nulls the caller's pointer.
void
    kvt_msg_destroy (kvt_msg_t **self_p);

//  Create a reply to 'request': same request id and routing envelope.
kvt_msg_t *
    kvt_msg_reply_new (const kvt_msg_t *request, int reply_id);

//  The actor skeleton's same-thread delivery (runtime/kvt_actor.c): a
//  request handed from one actor to another of the same thread as an
//  object, not encoded, carries its asker here, and kvt_msg_reply_new
//  copies it into the reply so that the answer goes back the same way.
//  Opaque to this layer; never encoded; NULL for a message from a socket.
void
    kvt_msg_set_direct (kvt_msg_t *self, void *asker);
void *
    kvt_msg_direct (const kvt_msg_t *self);

//  Create an ERROR reply to 'request' carrying 'code', its name, and detail.
kvt_msg_t *
    kvt_msg_error_new (const kvt_msg_t *request, int code, const char *detail_fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

//  --------------------------------------------------------------------------
//  Header

int
    kvt_msg_id (const kvt_msg_t *self);
uint64_t
    kvt_msg_request_id (const kvt_msg_t *self);
void
    kvt_msg_set_request_id (kvt_msg_t *self, uint64_t request_id);

//  True if 'self' is a partial answer: more answers to the same request
//  follow, the last of them its _OK (IDX_MATCH_PARTs before the
//  IDX_MATCH_PARTS_OK of an IDX_MATCH_PARTS). A caller's call stays open.
bool
    kvt_msg_is_partial (const kvt_msg_t *self);

//  True if a message of id 'reply_id' may answer a request of id
//  'request_id' without failing it: its _OK (the next id), or one of its
//  partial answers.
bool
    kvt_msg_answers (int reply_id, int request_id);

//  --------------------------------------------------------------------------
//  Fields, by index into the picture. Getters return borrowed views valid
//  until the message is destroyed. Setters copy their input. Using a field
//  with the wrong type is a programming error and asserts.

uint64_t
    kvt_msg_u64 (const kvt_msg_t *self, int field);
int64_t
    kvt_msg_i64 (const kvt_msg_t *self, int field);
const char *
    kvt_msg_str (const kvt_msg_t *self, int field);
const void *
    kvt_msg_bin (const kvt_msg_t *self, int field, size_t *size);
const uint64_t *
    kvt_msg_array (const kvt_msg_t *self, int field, size_t *count);
size_t
    kvt_msg_map_size (const kvt_msg_t *self, int field);
const char *
    kvt_msg_map_key (const kvt_msg_t *self, int field, size_t index);
uint64_t
    kvt_msg_map_value (const kvt_msg_t *self, int field, size_t index);

void
    kvt_msg_set_u64 (kvt_msg_t *self, int field, uint64_t value);
void
    kvt_msg_set_i64 (kvt_msg_t *self, int field, int64_t value);
void
    kvt_msg_set_str (kvt_msg_t *self, int field, const char *value);
void
    kvt_msg_set_bin (kvt_msg_t *self, int field, const void *data, size_t size);
//  Give the message a blob it will free(); avoids one copy of large KV.
void
    kvt_msg_set_bin_owned (kvt_msg_t *self, int field, void **data_p, size_t size);
void
    kvt_msg_set_array (kvt_msg_t *self, int field, const uint64_t *values, size_t count);
//  Append one key/value to a map field.
void
    kvt_msg_map_add (kvt_msg_t *self, int field, const char *key, uint64_t value);

//  --------------------------------------------------------------------------
//  Wire

//  Encode into a new frame. Returns 0 or -EMSGSIZE.
int
    kvt_msg_encode (const kvt_msg_t *self, zframe_t **frame_p);

//  Decode one frame's bytes. Returns 0 and a new message, or -EBADMSG
//  (malformed: not msgpack, wrong arity, wrong type, out of bounds),
//  KVT_EVERSION (wrong protocol version) or -ENOTSUP (unknown id).
int
    kvt_msg_decode (const void *data, size_t size, kvt_msg_t **msg_p);

//  Receive one message. On a ROUTER socket the routing envelope is kept in
//  the message for the reply. Returns 0; -EINTR if interrupted (no message);
//  or a decode error with *msg_p set to an INVALID message that still holds
//  the envelope and, when readable, the request id, so the caller can reply.
//  -EMSGSIZE if the frame is larger than KVT_MSG_MAX_FRAME.
int
    kvt_msg_recv (zsock_t *sock, kvt_msg_t **msg_p);

//  As kvt_msg_recv, refusing frames over 'max_frame' bytes with -EMSGSIZE.
int
    kvt_msg_recv_limited (zsock_t *sock, kvt_msg_t **msg_p, size_t max_frame);

//  Send and always consume the message (nulls the caller's pointer), also
//  on failure. Returns 0 if ZeroMQ took it, else -errno.
int
    kvt_msg_send (kvt_msg_t **msg_p, zsock_t *sock);

//  Print the message on stdout, for tracing.
void
    kvt_msg_print (const kvt_msg_t *self);

#ifdef __cplusplus
}
#endif
#endif
