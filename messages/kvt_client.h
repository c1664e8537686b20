/*  =========================================================================
    kvt_client - the C client of the kvtier front door

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A kvt_client_t talks to the scheduler's ROUTER front door over one
    ZeroMQ DEALER socket (tcp://, ipc:// or inproc://). Each request gets a
    fresh request id; the client waits for the reply that carries the same
    id and discards any other (a stale reply to an earlier request that had
    timed out, or a duplicate). After a timeout the socket is closed and
    reconnected, so a reply that arrives late can never be taken for the
    answer to a later request.
    Typed calls (hello, lookup, store, load, generate, stats, demote) build
    the request, wait, and decode the _OK reply into a caller struct. They
    return 0, the negative code of an ERROR reply (kvt_client_error_name /
    _detail tell more until the next call), -ETIMEDOUT, -EPROTO for a reply
    of the wrong type, or another -errno from ZeroMQ.
@discuss
    Ownership: result structs are filled by the call and own what they
    point to (arrays, KV bytes): release them with the matching _fini,
    which leaves the struct zeroed, and can be called on a zeroed struct.
    On failure a result struct is left zeroed. Input buffers are borrowed.
    A client is not thread-safe: use one per thread.
    Blocks for at most timeout_ms per call (-1 waits forever).
@end
*/

#ifndef KVT_CLIENT_H_INCLUDED
#define KVT_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvt_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_client_t kvt_client_t;

//  What HELLO_OK tells about the server and its model.
typedef struct {
    char server [64];               //  Server name and version
    uint64_t protocol;              //  Protocol version the server speaks
    uint64_t block_tokens;          //  Tokens per KV block
    uint64_t block_bytes;           //  Bytes of KV per block
    uint64_t layers;                //  Model layers
    uint64_t kv_heads;              //  KV heads per layer
    uint64_t head_dim;              //  Elements per head
    uint64_t vocab;                 //  Token ids are < vocab
    char dtype [16];                //  KV element type, "bf16"
} kvt_client_hello_t;

//  LOOKUP_OK: which leading full blocks are cached, and where.
typedef struct {
    uint64_t matched_blocks;        //  Leading full blocks found
    uint64_t *tiers;                //  Owned: tier of each matched block (KVT_TIER_*)
    size_t tier_count;              //  Entries in tiers
    uint64_t *hashes;               //  Owned: chained hash of each full block
    size_t hash_count;              //  Entries in hashes
} kvt_client_lookup_t;

//  STORE_OK
typedef struct {
    uint64_t stored_blocks;         //  Blocks newly stored
    uint64_t present_blocks;        //  Blocks that were already cached
} kvt_client_store_t;

//  LOAD_OK: the KV of the longest cached prefix.
typedef struct {
    uint64_t blocks;                //  Full blocks returned
    void *kv;                       //  Owned: blocks x block_bytes bytes, or NULL
    size_t kv_bytes;                //  Bytes in kv
    uint64_t *tiers;                //  Owned: tier each block was read from
    size_t tier_count;              //  Entries in tiers
} kvt_client_load_t;

//  GENERATE_OK
typedef struct {
    uint64_t *tokens;               //  Owned: output token ids
    size_t token_count;             //  Entries in tokens
    uint64_t ttft_us;               //  Time to first token, server side
    uint64_t total_us;              //  Whole request, server side
    uint64_t from_gpu;              //  Prefix blocks found on the GPU tier
    uint64_t from_host;             //  Prefix blocks found on the host tier
    uint64_t from_nvme;             //  Prefix blocks found on the NVMe tier
    uint64_t computed;              //  Blocks prefilled (not found)
} kvt_client_generate_t;

//  STATS_OK: counters, in the server's order.
typedef struct {
    size_t count;                   //  Entries
    char **keys;                    //  Owned: counter names
    uint64_t *values;               //  Owned: counter values
} kvt_client_stats_t;

//  --------------------------------------------------------------------------
//  Life cycle

//  Create a client connected to 'endpoint' ("tcp://127.0.0.1:5557",
//  "ipc:///path"). Every call waits at most 'timeout_ms' (-1: forever).
//  Returns NULL if the endpoint is malformed. Connecting does not wait for
//  the server: the first call does.
kvt_client_t *
    kvt_client_new (const char *endpoint, int timeout_ms);

//  Destroy the client; NULL-safe, nulls the caller's pointer. Pending
//  messages are dropped (linger 0).
void
    kvt_client_destroy (kvt_client_t **self_p);

//  Change the per-call timeout.
void
    kvt_client_set_timeout (kvt_client_t *self, int timeout_ms);

//  Replies discarded so far because their request id was not the one
//  awaited (late or duplicate), or because they did not decode.
uint64_t
    kvt_client_stale_count (const kvt_client_t *self);

//  Times the socket was reconnected after a timeout.
uint64_t
    kvt_client_reconnect_count (const kvt_client_t *self);

//  Name and detail of the last ERROR reply ("EINVAL", "token 900 >= vocab
//  512"), or of the local failure; "" after a successful call. Borrowed,
//  valid until the next call.
const char *
    kvt_client_error_name (const kvt_client_t *self);
const char *
    kvt_client_error_detail (const kvt_client_t *self);

//  --------------------------------------------------------------------------
//  Generic request

//  Send *request_p (consumed, pointer nulled; its request id is replaced by
//  a fresh one) and wait for the reply with the same id. Returns 0 for the
//  matching _OK reply; the negative code of an ERROR reply; -EPROTO for a
//  reply of another type; -ETIMEDOUT (socket reconnected); -EINTR; or
//  -errno if the send failed. *reply_p gets any reply received (also an
//  ERROR, for its detail), else NULL; the caller destroys it.
int
    kvt_client_request (kvt_client_t *self, kvt_msg_t **request_p, kvt_msg_t **reply_p);

//  --------------------------------------------------------------------------
//  Typed calls: tokens are token ids < vocab; tenant may be NULL for "".

//  HELLO: introduce ourselves as 'client_name'; fills *hello.
int
    kvt_client_hello (kvt_client_t *self, const char *client_name, kvt_client_hello_t *hello);

//  LOOKUP: how many leading full blocks of 'tokens' are cached.
int
    kvt_client_lookup (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                       size_t token_count, kvt_client_lookup_t *result);

//  STORE: give the KV of the full blocks of 'tokens' ('kv_bytes' must be
//  full blocks x block_bytes). 'kv' is borrowed (copied into the frame).
int
    kvt_client_store (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                      size_t token_count, const void *kv, size_t kv_bytes,
                      kvt_client_store_t *result);

//  STORE_TAIL: the same for the full blocks of 'tokens' from block
//  'from_block' on ('kv_bytes' = that many blocks); the blocks before it
//  must be cached (-ENOENT otherwise). A long prefix goes up in pieces.
int
    kvt_client_store_tail (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                           size_t token_count, uint64_t from_block, const void *kv,
                           size_t kv_bytes, kvt_client_store_t *result);

//  LOAD: fetch the KV of the longest cached prefix of 'tokens'.
int
    kvt_client_load (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                     size_t token_count, kvt_client_load_t *result);

//  GENERATE: run the model on 'tokens' and decode 'max_new_tokens'.
int
    kvt_client_generate (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                         size_t token_count, uint64_t max_new_tokens,
                         kvt_client_generate_t *result);

//  STATS: fetch the server's counters.
int
    kvt_client_stats (kvt_client_t *self, kvt_client_stats_t *result);

//  DEMOTE (admin): move up to 'max_blocks' least-recently-used blocks from
//  'from_tier' to 'to_tier'; *moved gets the number moved (may be NULL).
int
    kvt_client_demote (kvt_client_t *self, uint64_t from_tier, uint64_t to_tier,
                       uint64_t max_blocks, uint64_t *moved);

//  --------------------------------------------------------------------------
//  Result helpers; each _fini frees what the struct owns and zeroes it.

void
    kvt_client_lookup_fini (kvt_client_lookup_t *result);
void
    kvt_client_load_fini (kvt_client_load_t *result);
void
    kvt_client_generate_fini (kvt_client_generate_t *result);
void
    kvt_client_stats_fini (kvt_client_stats_t *result);

//  Find counter 'key' in 'stats'; returns true and sets *value if present.
bool
    kvt_client_stats_find (const kvt_client_stats_t *stats, const char *key, uint64_t *value);

//  Parse "1,2,3" into a new array (caller frees); returns the count, or -1
//  if the text is not a comma-separated list of unsigned integers.
int64_t
    kvt_client_parse_tokens (const char *text, uint64_t **tokens_p);

//  Fill 'tokens' with 'count' deterministic pseudo-random ids < vocab from
//  'seed' (the same sequence in the C, the command and the Python client).
void
    kvt_client_random_tokens (uint64_t *tokens, size_t count, uint64_t vocab, uint64_t seed);

//  Fill 'bytes' with deterministic bytes from 'seed' (same generator).
void
    kvt_client_fill_bytes (void *bytes, size_t size, uint64_t seed);

//  Selftest against a fake ROUTER server: matching, stale replies, errors,
//  timeouts and reconnects, every typed call.
int
    kvt_client_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
