/*  =========================================================================
    kvt_client - the C client of the kvtier front door

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    One DEALER socket, one request in flight. Request ids start from a
    random 32-bit value per client and count up, so replies meant for
    another client instance are never mistaken for ours either.
@end
*/

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include "kvt_error.h"
#include "kvt_msg.h"
#include "kvt_client.h"
#include "kvt_util.h"

struct _kvt_client_t {
    char *endpoint;                 //  Owned copy of the server endpoint
    zsock_t *dealer;                //  Our socket; replaced after a timeout
    int timeout_ms;                 //  Per-call wait; -1 = forever
    uint64_t next_request_id;       //  Id of the next request
    uint64_t stale_count;           //  Replies discarded (wrong id, undecodable)
    uint64_t reconnect_count;       //  Sockets replaced after a timeout
    char error_name [32];           //  Last ERROR name, or ""
    char error_detail [512];        //  Last ERROR detail, or ""
};

//  Create and connect a fresh DEALER. Returns 0 or -EINVAL.
static int
s_connect (kvt_client_t *self)
{
    zsock_destroy (&self->dealer);
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer)
        return -ENOMEM;
    zsock_set_linger (self->dealer, 0);
    if (zsock_connect (self->dealer, "%s", self->endpoint) != 0) {
        zsock_destroy (&self->dealer);
        return -EINVAL;
    }
    return 0;
}

static void
s_set_error (kvt_client_t *self, const char *name, const char *detail)
{
    snprintf (self->error_name, sizeof (self->error_name), "%s", name);
    snprintf (self->error_detail, sizeof (self->error_detail), "%s", detail);
}

//  --------------------------------------------------------------------------
//  Create a client connected to 'endpoint'; NULL if the endpoint is bad.

kvt_client_t *
kvt_client_new (const char *endpoint, int timeout_ms)
{
    assert (endpoint);
    kvt_client_t *self = (kvt_client_t *) zmalloc (sizeof (kvt_client_t));
    self->endpoint = strdup (endpoint);
    assert (self->endpoint);
    self->timeout_ms = timeout_ms;
    //  Different clients start far apart so their ids do not collide
    uint64_t seed = (uint64_t) zclock_usecs () ^ ((uint64_t) getpid () << 32)
                  ^ (uint64_t) (uintptr_t) self;
    self->next_request_id = (kvt_splitmix64 (&seed) & 0xffffffffULL) + 1;
    if (s_connect (self)) {
        kvt_client_destroy (&self);
        return NULL;
    }
    return self;
}

//  --------------------------------------------------------------------------
//  Destroy the client; NULL-safe, nulls the caller's pointer.

void
kvt_client_destroy (kvt_client_t **self_p)
{
    assert (self_p);
    kvt_client_t *self = *self_p;
    if (self) {
        zsock_destroy (&self->dealer);
        free (self->endpoint);
        free (self);
        *self_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Change the per-call timeout.

void
kvt_client_set_timeout (kvt_client_t *self, int timeout_ms)
{
    self->timeout_ms = timeout_ms;
}

//  --------------------------------------------------------------------------
//  Counters and last error.

uint64_t
kvt_client_stale_count (const kvt_client_t *self)
{
    return self->stale_count;
}

uint64_t
kvt_client_reconnect_count (const kvt_client_t *self)
{
    return self->reconnect_count;
}

const char *
kvt_client_error_name (const kvt_client_t *self)
{
    return self->error_name;
}

const char *
kvt_client_error_detail (const kvt_client_t *self)
{
    return self->error_detail;
}

//  --------------------------------------------------------------------------
//  Send a request and wait for its reply; see the header for the codes.

int
kvt_client_request (kvt_client_t *self, kvt_msg_t **request_p, kvt_msg_t **reply_p)
{
    assert (request_p && *request_p && reply_p);
    *reply_p = NULL;
    s_set_error (self, "", "");
    if (!self->dealer && s_connect (self)) {
        kvt_msg_destroy (request_p);
        s_set_error (self, "EINVAL", "cannot connect");
        return -EINVAL;
    }
    int request_type = kvt_msg_id (*request_p);
    uint64_t request_id = self->next_request_id++;
    kvt_msg_set_request_id (*request_p, request_id);
    int rc = kvt_msg_send (request_p, self->dealer);
    if (rc) {
        s_set_error (self, kvt_strerror_name (rc), "send failed");
        return rc;
    }
    int64_t deadline = self->timeout_ms < 0? -1: zclock_mono () + self->timeout_ms;
    while (true) {
        int wait_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - zclock_mono ();
            wait_ms = left > 0? (int) left: 0;
        }
        zmq_pollitem_t item = { zsock_resolve (self->dealer), 0, ZMQ_POLLIN, 0 };
        int ready = zmq_poll (&item, 1, wait_ms);
        if (ready < 0) {
            rc = -errno;
            break;
        }
        if (ready == 0) {
            //  Nobody answered: a new socket so the late reply cannot reach us
            rc = -ETIMEDOUT;
            self->reconnect_count++;
            s_connect (self);
            break;
        }
        kvt_msg_t *reply = NULL;
        rc = kvt_msg_recv (self->dealer, &reply);
        if (rc == -EINTR)
            break;
        if (rc || kvt_msg_request_id (reply) != request_id) {
            self->stale_count++;            //  Late, duplicate, or garbage
            kvt_msg_destroy (&reply);
            continue;
        }
        int reply_type = kvt_msg_id (reply);
        if (reply_type == KVT_MSG_ERROR) {
            int64_t code = kvt_msg_i64 (reply, KVT_ERROR_CODE);
            rc = code < 0 && code >= INT32_MIN? (int) code: -EPROTO;
            s_set_error (self, kvt_msg_str (reply, KVT_ERROR_NAME),
                         kvt_msg_str (reply, KVT_ERROR_DETAIL));
        }
        else
        if (reply_type == request_type + 1) {
            const char *name = kvt_msg_name (reply_type);
            size_t length = strlen (name);
            rc = length > 3 && streq (name + length - 3, "_OK")? 0: -EPROTO;
        }
        else
            rc = -EPROTO;
        if (rc == -EPROTO && reply_type != KVT_MSG_ERROR) {
            char detail [128];
            snprintf (detail, sizeof (detail), "%s answered with %s",
                      kvt_msg_name (request_type), kvt_msg_name (reply_type));
            s_set_error (self, "EPROTO", detail);
        }
        *reply_p = reply;
        return rc;
    }
    s_set_error (self, kvt_strerror_name (rc), rc == -ETIMEDOUT? "no reply in time": "");
    return rc;
}

//  Copy an array field into a new malloc'd array (NULL when empty).
static uint64_t *
s_array_dup (const kvt_msg_t *msg, int field, size_t *count)
{
    const uint64_t *values = kvt_msg_array (msg, field, count);
    if (*count == 0)
        return NULL;
    uint64_t *copy = (uint64_t *) zmalloc (*count * sizeof (uint64_t));
    memcpy (copy, values, *count * sizeof (uint64_t));
    return copy;
}

//  Build a request with tenant + tokens in fields 0 and 1.
static kvt_msg_t *
s_tokens_request (int id, const char *tenant, const uint64_t *tokens, size_t token_count)
{
    kvt_msg_t *request = kvt_msg_new (id);
    kvt_msg_set_str (request, 0, tenant? tenant: "");
    kvt_msg_set_array (request, 1, tokens, token_count);
    return request;
}

//  --------------------------------------------------------------------------
//  HELLO

int
kvt_client_hello (kvt_client_t *self, const char *client_name, kvt_client_hello_t *hello)
{
    assert (hello);
    memset (hello, 0, sizeof (*hello));
    kvt_msg_t *request = kvt_msg_new (KVT_MSG_HELLO);
    kvt_msg_set_str (request, KVT_HELLO_CLIENT, client_name? client_name: "kvt_client");
    kvt_msg_t *reply;
    int rc = kvt_client_request (self, &request, &reply);
    if (rc == 0) {
        snprintf (hello->server, sizeof (hello->server), "%s",
                  kvt_msg_str (reply, KVT_HELLO_OK_SERVER));
        hello->protocol = kvt_msg_u64 (reply, KVT_HELLO_OK_PROTOCOL);
        hello->block_tokens = kvt_msg_u64 (reply, KVT_HELLO_OK_BLOCK_TOKENS);
        hello->block_bytes = kvt_msg_u64 (reply, KVT_HELLO_OK_BLOCK_BYTES);
        hello->layers = kvt_msg_u64 (reply, KVT_HELLO_OK_LAYERS);
        hello->kv_heads = kvt_msg_u64 (reply, KVT_HELLO_OK_KV_HEADS);
        hello->head_dim = kvt_msg_u64 (reply, KVT_HELLO_OK_HEAD_DIM);
        hello->vocab = kvt_msg_u64 (reply, KVT_HELLO_OK_VOCAB);
        snprintf (hello->dtype, sizeof (hello->dtype), "%s",
                  kvt_msg_str (reply, KVT_HELLO_OK_DTYPE));
    }
    kvt_msg_destroy (&reply);
    return rc;
}

//  --------------------------------------------------------------------------
//  LOOKUP

int
kvt_client_lookup (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                   size_t token_count, kvt_client_lookup_t *result)
{
    assert (result);
    memset (result, 0, sizeof (*result));
    kvt_msg_t *request = s_tokens_request (KVT_MSG_LOOKUP, tenant, tokens, token_count);
    kvt_msg_t *reply;
    int rc = kvt_client_request (self, &request, &reply);
    if (rc == 0) {
        result->matched_blocks = kvt_msg_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS);
        result->tiers = s_array_dup (reply, KVT_LOOKUP_OK_TIERS, &result->tier_count);
        result->hashes = s_array_dup (reply, KVT_LOOKUP_OK_HASHES, &result->hash_count);
    }
    kvt_msg_destroy (&reply);
    return rc;
}

//  --------------------------------------------------------------------------
//  STORE

//  STORE, or (tail) STORE_TAIL from 'from_block': the same request and
//  reply but for the first-block field.
static int
s_store (kvt_client_t *self, bool tail, const char *tenant, const uint64_t *tokens,
         size_t token_count, uint64_t from_block, const void *kv, size_t kv_bytes,
         kvt_client_store_t *result)
{
    assert (result);
    memset (result, 0, sizeof (*result));
    kvt_msg_t *request = s_tokens_request (tail? KVT_MSG_STORE_TAIL: KVT_MSG_STORE, tenant,
                                           tokens, token_count);
    if (tail)
        kvt_msg_set_u64 (request, KVT_STORE_TAIL_FROM_BLOCK, from_block);
    kvt_msg_set_bin (request, tail? KVT_STORE_TAIL_KV: KVT_STORE_KV, kv, kv_bytes);
    kvt_msg_t *reply;
    int rc = kvt_client_request (self, &request, &reply);
    if (rc == 0) {
        result->stored_blocks = kvt_msg_u64 (reply, tail? KVT_STORE_TAIL_OK_STORED_BLOCKS
                                                         : KVT_STORE_OK_STORED_BLOCKS);
        result->present_blocks = kvt_msg_u64 (reply, tail? KVT_STORE_TAIL_OK_PRESENT_BLOCKS
                                                          : KVT_STORE_OK_PRESENT_BLOCKS);
    }
    kvt_msg_destroy (&reply);
    return rc;
}

int
kvt_client_store (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                  size_t token_count, const void *kv, size_t kv_bytes,
                  kvt_client_store_t *result)
{
    return s_store (self, false, tenant, tokens, token_count, 0, kv, kv_bytes, result);
}

int
kvt_client_store_tail (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                       size_t token_count, uint64_t from_block, const void *kv,
                       size_t kv_bytes, kvt_client_store_t *result)
{
    return s_store (self, true, tenant, tokens, token_count, from_block, kv, kv_bytes, result);
}

//  --------------------------------------------------------------------------
//  LOAD

int
kvt_client_load (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                 size_t token_count, kvt_client_load_t *result)
{
    assert (result);
    memset (result, 0, sizeof (*result));
    kvt_msg_t *request = s_tokens_request (KVT_MSG_LOAD, tenant, tokens, token_count);
    kvt_msg_t *reply;
    int rc = kvt_client_request (self, &request, &reply);
    if (rc == 0) {
        result->blocks = kvt_msg_u64 (reply, KVT_LOAD_OK_BLOCKS);
        size_t size;
        const void *kv = kvt_msg_bin (reply, KVT_LOAD_OK_KV, &size);
        if (size) {
            result->kv = zmalloc (size);
            memcpy (result->kv, kv, size);
            result->kv_bytes = size;
        }
        result->tiers = s_array_dup (reply, KVT_LOAD_OK_TIERS, &result->tier_count);
    }
    kvt_msg_destroy (&reply);
    return rc;
}

//  --------------------------------------------------------------------------
//  GENERATE

int
kvt_client_generate (kvt_client_t *self, const char *tenant, const uint64_t *tokens,
                     size_t token_count, uint64_t max_new_tokens,
                     kvt_client_generate_t *result)
{
    assert (result);
    memset (result, 0, sizeof (*result));
    kvt_msg_t *request = s_tokens_request (KVT_MSG_GENERATE, tenant, tokens, token_count);
    kvt_msg_set_u64 (request, KVT_GENERATE_MAX_NEW_TOKENS, max_new_tokens);
    kvt_msg_t *reply;
    int rc = kvt_client_request (self, &request, &reply);
    if (rc == 0) {
        result->tokens = s_array_dup (reply, KVT_GENERATE_OK_TOKENS, &result->token_count);
        result->ttft_us = kvt_msg_u64 (reply, KVT_GENERATE_OK_TTFT_US);
        result->total_us = kvt_msg_u64 (reply, KVT_GENERATE_OK_TOTAL_US);
        result->from_gpu = kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_GPU);
        result->from_host = kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_HOST);
        result->from_nvme = kvt_msg_u64 (reply, KVT_GENERATE_OK_FROM_NVME);
        result->computed = kvt_msg_u64 (reply, KVT_GENERATE_OK_COMPUTED);
    }
    kvt_msg_destroy (&reply);
    return rc;
}

//  --------------------------------------------------------------------------
//  STATS

int
kvt_client_stats (kvt_client_t *self, kvt_client_stats_t *result)
{
    assert (result);
    memset (result, 0, sizeof (*result));
    kvt_msg_t *request = kvt_msg_new (KVT_MSG_STATS);
    kvt_msg_t *reply;
    int rc = kvt_client_request (self, &request, &reply);
    if (rc == 0) {
        size_t count = kvt_msg_map_size (reply, KVT_STATS_OK_COUNTERS);
        result->keys = (char **) zmalloc ((count? count: 1) * sizeof (char *));
        result->values = (uint64_t *) zmalloc ((count? count: 1) * sizeof (uint64_t));
        for (size_t k = 0; k < count; k++) {
            result->keys [k] = strdup (kvt_msg_map_key (reply, KVT_STATS_OK_COUNTERS, k));
            assert (result->keys [k]);
            result->values [k] = kvt_msg_map_value (reply, KVT_STATS_OK_COUNTERS, k);
        }
        result->count = count;
    }
    kvt_msg_destroy (&reply);
    return rc;
}

//  --------------------------------------------------------------------------
//  DEMOTE

int
kvt_client_demote (kvt_client_t *self, uint64_t from_tier, uint64_t to_tier,
                   uint64_t max_blocks, uint64_t *moved)
{
    if (moved)
        *moved = 0;
    kvt_msg_t *request = kvt_msg_new (KVT_MSG_DEMOTE);
    kvt_msg_set_u64 (request, KVT_DEMOTE_FROM_TIER, from_tier);
    kvt_msg_set_u64 (request, KVT_DEMOTE_TO_TIER, to_tier);
    kvt_msg_set_u64 (request, KVT_DEMOTE_MAX_BLOCKS, max_blocks);
    kvt_msg_t *reply;
    int rc = kvt_client_request (self, &request, &reply);
    if (rc == 0 && moved)
        *moved = kvt_msg_u64 (reply, KVT_DEMOTE_OK_MOVED);
    kvt_msg_destroy (&reply);
    return rc;
}

//  --------------------------------------------------------------------------
//  Result helpers

void
kvt_client_lookup_fini (kvt_client_lookup_t *result)
{
    free (result->tiers);
    free (result->hashes);
    memset (result, 0, sizeof (*result));
}

void
kvt_client_load_fini (kvt_client_load_t *result)
{
    free (result->kv);
    free (result->tiers);
    memset (result, 0, sizeof (*result));
}

void
kvt_client_generate_fini (kvt_client_generate_t *result)
{
    free (result->tokens);
    memset (result, 0, sizeof (*result));
}

void
kvt_client_stats_fini (kvt_client_stats_t *result)
{
    for (size_t k = 0; k < result->count; k++)
        free (result->keys [k]);
    free (result->keys);
    free (result->values);
    memset (result, 0, sizeof (*result));
}

bool
kvt_client_stats_find (const kvt_client_stats_t *stats, const char *key, uint64_t *value)
{
    for (size_t k = 0; k < stats->count; k++)
        if (streq (stats->keys [k], key)) {
            if (value)
                *value = stats->values [k];
            return true;
        }
    return false;
}

//  --------------------------------------------------------------------------
//  Parse "1,2,3" into a new array; returns the count or -1.

int64_t
kvt_client_parse_tokens (const char *text, uint64_t **tokens_p)
{
    assert (text && tokens_p);
    *tokens_p = NULL;
    size_t room = 1;
    for (const char *c = text; *c; c++)
        room += *c == ',';
    uint64_t *tokens = (uint64_t *) zmalloc (room * sizeof (uint64_t));
    size_t count = 0;
    const char *cursor = text;
    while (*cursor) {
        if (*cursor < '0' || *cursor > '9') {
            free (tokens);
            return -1;
        }
        char *end;
        errno = 0;
        unsigned long long value = strtoull (cursor, &end, 10);
        if (errno || (*end != ',' && *end != '\0') || (*end == ',' && end [1] == '\0')) {
            free (tokens);
            return -1;
        }
        tokens [count++] = value;
        cursor = *end == ','? end + 1: end;
    }
    *tokens_p = tokens;
    return (int64_t) count;
}

//  --------------------------------------------------------------------------
//  Deterministic tokens and bytes (splitmix64 from 'seed').

void
kvt_client_random_tokens (uint64_t *tokens, size_t count, uint64_t vocab, uint64_t seed)
{
    assert (vocab > 0);
    uint64_t state = seed;
    for (size_t k = 0; k < count; k++)
        tokens [k] = kvt_splitmix64 (&state) % vocab;
}

void
kvt_client_fill_bytes (void *bytes, size_t size, uint64_t seed)
{
    uint8_t *out = (uint8_t *) bytes;
    uint64_t state = seed;
    for (size_t at = 0; at < size; at += 8) {
        uint64_t word = kvt_splitmix64 (&state);
        for (size_t b = 0; b < 8 && at + b < size; b++)
            out [at + b] = (uint8_t) (word >> (8 * b));     //  Little-endian
    }
}

//  --------------------------------------------------------------------------
//  Selftest: a fake front door in a thread. Tenant names steer it:
//  "error" -> ERROR EINVAL, "stale" -> a wrong-id reply first, "twice" ->
//  the reply twice, "slow" -> reply after 300 ms, "wrong" -> STATS_OK.

#define S_TEST_BLOCK_TOKENS  4
#define S_TEST_BLOCK_BYTES   32

static kvt_msg_t *
s_fake_answer (kvt_msg_t *request, int *delay_ms, int *copies, bool *stale_first)
{
    int id = kvt_msg_id (request);
    const char *tenant = id == KVT_MSG_LOOKUP || id == KVT_MSG_GENERATE || id == KVT_MSG_STORE
                      || id == KVT_MSG_STORE_TAIL || id == KVT_MSG_LOAD? kvt_msg_str (request, 0)
                                                                       : "";
    *delay_ms = streq (tenant, "slow")? 300: 0;
    *copies = streq (tenant, "twice")? 2: 1;
    *stale_first = streq (tenant, "stale");
    if (streq (tenant, "error"))
        return kvt_msg_error_new (request, -EINVAL, "tenant %s refused", tenant);
    if (streq (tenant, "wrong"))
        return kvt_msg_reply_new (request, KVT_MSG_STATS_OK);
    size_t count = 0;
    const uint64_t *tokens = NULL;
    if (*tenant || id == KVT_MSG_LOOKUP || id == KVT_MSG_GENERATE
    ||  id == KVT_MSG_STORE || id == KVT_MSG_LOAD)
        tokens = kvt_msg_array (request, 1, &count);
    kvt_msg_t *reply = NULL;
    switch (id) {
        case KVT_MSG_HELLO:
            reply = kvt_msg_reply_new (request, KVT_MSG_HELLO_OK);
            kvt_msg_set_str (reply, KVT_HELLO_OK_SERVER, "fake");
            kvt_msg_set_u64 (reply, KVT_HELLO_OK_PROTOCOL, KVT_PROTOCOL_VERSION);
            kvt_msg_set_u64 (reply, KVT_HELLO_OK_BLOCK_TOKENS, S_TEST_BLOCK_TOKENS);
            kvt_msg_set_u64 (reply, KVT_HELLO_OK_BLOCK_BYTES, S_TEST_BLOCK_BYTES);
            kvt_msg_set_u64 (reply, KVT_HELLO_OK_LAYERS, 1);
            kvt_msg_set_u64 (reply, KVT_HELLO_OK_KV_HEADS, 1);
            kvt_msg_set_u64 (reply, KVT_HELLO_OK_HEAD_DIM, 2);
            kvt_msg_set_u64 (reply, KVT_HELLO_OK_VOCAB, 100);
            kvt_msg_set_str (reply, KVT_HELLO_OK_DTYPE, "bf16");
            break;
        case KVT_MSG_LOOKUP: {
            reply = kvt_msg_reply_new (request, KVT_MSG_LOOKUP_OK);
            size_t blocks = count / S_TEST_BLOCK_TOKENS;
            uint64_t tiers [64], hashes [64];
            for (size_t k = 0; k < blocks && k < 64; k++) {
                tiers [k] = k % KVT_TIER_COUNT;
                hashes [k] = 1000 + k;
            }
            kvt_msg_set_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS, blocks);
            kvt_msg_set_array (reply, KVT_LOOKUP_OK_TIERS, tiers, blocks);
            kvt_msg_set_array (reply, KVT_LOOKUP_OK_HASHES, hashes, blocks);
            break;
        }
        case KVT_MSG_STORE: {
            size_t size;
            kvt_msg_bin (request, KVT_STORE_KV, &size);
            reply = kvt_msg_reply_new (request, KVT_MSG_STORE_OK);
            kvt_msg_set_u64 (reply, KVT_STORE_OK_STORED_BLOCKS, size / S_TEST_BLOCK_BYTES);
            kvt_msg_set_u64 (reply, KVT_STORE_OK_PRESENT_BLOCKS, 0);
            break;
        }
        case KVT_MSG_STORE_TAIL: {
            size_t size;
            kvt_msg_bin (request, KVT_STORE_TAIL_KV, &size);
            reply = kvt_msg_reply_new (request, KVT_MSG_STORE_TAIL_OK);
            kvt_msg_set_u64 (reply, KVT_STORE_TAIL_OK_STORED_BLOCKS, size / S_TEST_BLOCK_BYTES);
            kvt_msg_set_u64 (reply, KVT_STORE_TAIL_OK_PRESENT_BLOCKS,
                             kvt_msg_u64 (request, KVT_STORE_TAIL_FROM_BLOCK));
            break;
        }
        case KVT_MSG_LOAD: {
            size_t blocks = count / S_TEST_BLOCK_TOKENS;
            uint8_t kv [64 * S_TEST_BLOCK_BYTES];
            uint64_t tiers [64];
            blocks = blocks > 64? 64: blocks;
            for (size_t k = 0; k < blocks * S_TEST_BLOCK_BYTES; k++)
                kv [k] = (uint8_t) (tokens [k / S_TEST_BLOCK_BYTES] + k);
            for (size_t k = 0; k < blocks; k++)
                tiers [k] = KVT_TIER_HOST;
            reply = kvt_msg_reply_new (request, KVT_MSG_LOAD_OK);
            kvt_msg_set_u64 (reply, KVT_LOAD_OK_BLOCKS, blocks);
            kvt_msg_set_bin (reply, KVT_LOAD_OK_KV, kv, blocks * S_TEST_BLOCK_BYTES);
            kvt_msg_set_array (reply, KVT_LOAD_OK_TIERS, tiers, blocks);
            break;
        }
        case KVT_MSG_GENERATE: {
            uint64_t out [64];
            uint64_t wanted = kvt_msg_u64 (request, KVT_GENERATE_MAX_NEW_TOKENS);
            wanted = wanted > 64? 64: wanted;
            for (uint64_t k = 0; k < wanted; k++)
                out [k] = (count? tokens [count - 1]: 0) + k + 1;
            reply = kvt_msg_reply_new (request, KVT_MSG_GENERATE_OK);
            kvt_msg_set_array (reply, KVT_GENERATE_OK_TOKENS, out, wanted);
            kvt_msg_set_u64 (reply, KVT_GENERATE_OK_TTFT_US, 11);
            kvt_msg_set_u64 (reply, KVT_GENERATE_OK_TOTAL_US, 22);
            kvt_msg_set_u64 (reply, KVT_GENERATE_OK_FROM_GPU, 1);
            kvt_msg_set_u64 (reply, KVT_GENERATE_OK_FROM_HOST, 2);
            kvt_msg_set_u64 (reply, KVT_GENERATE_OK_FROM_NVME, 3);
            kvt_msg_set_u64 (reply, KVT_GENERATE_OK_COMPUTED, count / S_TEST_BLOCK_TOKENS);
            break;
        }
        case KVT_MSG_STATS:
            reply = kvt_msg_reply_new (request, KVT_MSG_STATS_OK);
            kvt_msg_map_add (reply, KVT_STATS_OK_COUNTERS, "requests", 7);
            kvt_msg_map_add (reply, KVT_STATS_OK_COUNTERS, "rejected", 2);
            break;
        case KVT_MSG_DEMOTE:
            if (kvt_msg_u64 (request, KVT_DEMOTE_FROM_TIER) >= KVT_TIER_COUNT
            ||  kvt_msg_u64 (request, KVT_DEMOTE_TO_TIER) >= KVT_TIER_COUNT)
                return kvt_msg_error_new (request, -EINVAL, "no such tier");
            reply = kvt_msg_reply_new (request, KVT_MSG_DEMOTE_OK);
            kvt_msg_set_u64 (reply, KVT_DEMOTE_OK_MOVED,
                             kvt_msg_u64 (request, KVT_DEMOTE_MAX_BLOCKS) / 2);
            break;
        default:
            return kvt_msg_error_new (request, -ENOTSUP, "not in the fake");
    }
    return reply;
}

static void
s_fake_server (zsock_t *pipe, void *args)
{
    zsock_t *router = zsock_new_router ((const char *) args);
    assert (router);
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which != router)
            break;                  //  $TERM on the pipe, or interrupted
        kvt_msg_t *request = NULL;
        int rc = kvt_msg_recv (router, &request);
        if (rc == -EINTR)
            break;
        if (rc) {
            kvt_msg_t *reply = kvt_msg_error_new (request, rc, "undecodable");
            kvt_msg_send (&reply, router);
            kvt_msg_destroy (&request);
            continue;
        }
        int delay_ms, copies;
        bool stale_first;
        kvt_msg_t *reply = s_fake_answer (request, &delay_ms, &copies, &stale_first);
        if (stale_first) {
            kvt_msg_t *stale = kvt_msg_reply_new (request, KVT_MSG_ERROR);
            kvt_msg_set_request_id (stale, kvt_msg_request_id (request) - 1);
            kvt_msg_set_i64 (stale, KVT_ERROR_CODE, -EIO);
            kvt_msg_send (&stale, router);
        }
        if (delay_ms)
            zclock_sleep (delay_ms);
        for (int copy = 1; copy < copies; copy++) {
            int ignored_delay, ignored_copies;  //  Same answer, sent once more
            bool ignored_stale;
            kvt_msg_t *twin = s_fake_answer (request, &ignored_delay, &ignored_copies,
                                             &ignored_stale);
            kvt_msg_send (&twin, router);
        }
        kvt_msg_send (&reply, router);
        kvt_msg_destroy (&request);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&router);
}

int
kvt_client_test (bool verbose)
{
    const char *endpoint = "inproc://kvt-client-test";
    zactor_t *server = zactor_new (s_fake_server, (void *) endpoint);
    assert (server);
    kvt_client_t *client = kvt_client_new (endpoint, 2000);
    assert (client);

    kvt_client_hello_t hello;
    assert (kvt_client_hello (client, "selftest", &hello) == 0);
    assert (streq (hello.server, "fake") && hello.block_tokens == S_TEST_BLOCK_TOKENS);
    assert (hello.block_bytes == S_TEST_BLOCK_BYTES && hello.vocab == 100);
    assert (streq (hello.dtype, "bf16") && hello.protocol == KVT_PROTOCOL_VERSION);

    uint64_t tokens [10];
    kvt_client_random_tokens (tokens, 10, hello.vocab, 7);
    for (int k = 0; k < 10; k++)
        assert (tokens [k] < 100);
    uint64_t again [10];
    kvt_client_random_tokens (again, 10, hello.vocab, 7);
    assert (memcmp (tokens, again, sizeof (tokens)) == 0);
    //  Pinned values shared with tools/python/kvtier_client.py
    uint64_t pinned [3];
    kvt_client_random_tokens (pinned, 3, 1000, 1);
    assert (pinned [0] == 465 && pinned [1] == 519 && pinned [2] == 590);
    uint8_t filled [10];
    kvt_client_fill_bytes (filled, sizeof (filled), 1);
    assert (filled [0] == 0xc1 && filled [1] == 0x5c && filled [9] == 0xec);

    kvt_client_lookup_t lookup;
    assert (kvt_client_lookup (client, "t", tokens, 10, &lookup) == 0);
    assert (lookup.matched_blocks == 2 && lookup.tier_count == 2 && lookup.hash_count == 2);
    assert (lookup.tiers [1] == 1 && lookup.hashes [1] == 1001);
    kvt_client_lookup_fini (&lookup);
    assert (lookup.tiers == NULL && lookup.matched_blocks == 0);
    kvt_client_lookup_fini (&lookup);          //  Twice is fine

    uint8_t kv [2 * S_TEST_BLOCK_BYTES];
    kvt_client_fill_bytes (kv, sizeof (kv), 3);
    kvt_client_store_t store;
    assert (kvt_client_store (client, "t", tokens, 10, kv, sizeof (kv), &store) == 0);
    assert (store.stored_blocks == 2 && store.present_blocks == 0);
    assert (kvt_client_store_tail (client, "t", tokens, 10, 1, kv, S_TEST_BLOCK_BYTES, &store)
            == 0);
    assert (store.stored_blocks == 1 && store.present_blocks == 1);

    kvt_client_load_t load;
    assert (kvt_client_load (client, "t", tokens, 10, &load) == 0);
    assert (load.blocks == 2 && load.kv_bytes == 2 * S_TEST_BLOCK_BYTES);
    assert (((uint8_t *) load.kv) [S_TEST_BLOCK_BYTES + 1]
            == (uint8_t) (tokens [1] + S_TEST_BLOCK_BYTES + 1));
    assert (load.tier_count == 2 && load.tiers [0] == KVT_TIER_HOST);
    kvt_client_load_fini (&load);

    kvt_client_generate_t generate;
    assert (kvt_client_generate (client, "t", tokens, 10, 5, &generate) == 0);
    assert (generate.token_count == 5 && generate.tokens [4] == tokens [9] + 5);
    assert (generate.ttft_us == 11 && generate.total_us == 22);
    assert (generate.from_gpu == 1 && generate.from_host == 2 && generate.from_nvme == 3);
    assert (generate.computed == 2);
    kvt_client_generate_fini (&generate);

    kvt_client_stats_t stats;
    assert (kvt_client_stats (client, &stats) == 0);
    uint64_t value = 0;
    assert (stats.count == 2 && kvt_client_stats_find (&stats, "rejected", &value) && value == 2);
    assert (!kvt_client_stats_find (&stats, "missing", NULL));
    kvt_client_stats_fini (&stats);

    uint64_t moved = 99;
    assert (kvt_client_demote (client, 0, 1, 10, &moved) == 0 && moved == 5);
    assert (kvt_client_demote (client, 7, 1, 10, &moved) == -EINVAL && moved == 0);
    assert (streq (kvt_client_error_name (client), "EINVAL"));
    assert (streq (kvt_client_error_detail (client), "no such tier"));

    //  ERROR replies come back as their code, with the reply for detail
    assert (kvt_client_lookup (client, "error", tokens, 10, &lookup) == -EINVAL);
    assert (lookup.tiers == NULL);
    kvt_msg_t *request = kvt_msg_new (KVT_MSG_LOOKUP);
    kvt_msg_set_str (request, KVT_LOOKUP_TENANT, "error");
    kvt_msg_t *reply = NULL;
    assert (kvt_client_request (client, &request, &reply) == -EINVAL);
    assert (request == NULL && reply && kvt_msg_id (reply) == KVT_MSG_ERROR);
    assert (streq (kvt_msg_str (reply, KVT_ERROR_DETAIL), "tenant error refused"));
    kvt_msg_destroy (&reply);

    //  A reply of the wrong type is a protocol error
    assert (kvt_client_lookup (client, "wrong", tokens, 10, &lookup) == -EPROTO);

    //  A stale reply (wrong request id) is skipped and counted
    uint64_t stale_before = kvt_client_stale_count (client);
    assert (kvt_client_lookup (client, "stale", tokens, 10, &lookup) == 0);
    assert (lookup.matched_blocks == 2);
    kvt_client_lookup_fini (&lookup);
    assert (kvt_client_stale_count (client) == stale_before + 1);

    //  A duplicate reply is skipped on the next call
    assert (kvt_client_lookup (client, "twice", tokens, 10, &lookup) == 0);
    kvt_client_lookup_fini (&lookup);
    assert (kvt_client_lookup (client, "t", tokens, 8, &lookup) == 0);
    assert (lookup.matched_blocks == 2);
    kvt_client_lookup_fini (&lookup);
    assert (kvt_client_stale_count (client) == stale_before + 2);

    //  Timeout: -ETIMEDOUT, reconnect, and the late reply never surfaces
    kvt_client_set_timeout (client, 100);
    int64_t start = zclock_mono ();
    assert (kvt_client_lookup (client, "slow", tokens, 10, &lookup) == -ETIMEDOUT);
    assert (zclock_mono () - start < 1000);      //  Bounded by our timeout (slack for load)
    assert (streq (kvt_client_error_name (client), "ETIMEDOUT"));
    assert (kvt_client_reconnect_count (client) == 1);
    kvt_client_set_timeout (client, 2000);
    zclock_sleep (350);             //  The late reply goes to the old socket
    assert (kvt_client_lookup (client, "t", tokens, 4, &lookup) == 0);
    assert (lookup.matched_blocks == 1);
    kvt_client_lookup_fini (&lookup);

    //  Token parsing
    uint64_t *parsed;
    assert (kvt_client_parse_tokens ("1,22,333", &parsed) == 3);
    assert (parsed [0] == 1 && parsed [1] == 22 && parsed [2] == 333);
    free (parsed);
    assert (kvt_client_parse_tokens ("", &parsed) == 0);
    free (parsed);
    assert (kvt_client_parse_tokens ("1,,2", &parsed) == -1 && parsed == NULL);
    assert (kvt_client_parse_tokens ("1,x", &parsed) == -1);
    assert (kvt_client_parse_tokens ("1,", &parsed) == -1);
    assert (kvt_client_parse_tokens ("-1", &parsed) == -1);

    //  No server at all: a timeout, not a hang
    kvt_client_t *lonely = kvt_client_new ("ipc:///tmp/kvt-client-test-nobody.ipc", 50);
    assert (lonely);
    assert (kvt_client_hello (lonely, "x", &hello) == -ETIMEDOUT);
    kvt_client_destroy (&lonely);
    kvt_client_destroy (&lonely);
    assert (kvt_client_new ("bogus://x", 10) == NULL);

    if (verbose)
        printf ("stale replies skipped: %" PRIu64 "\n", kvt_client_stale_count (client));
    kvt_client_destroy (&client);
    zactor_destroy (&server);
    return 0;
}
