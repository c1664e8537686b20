/*  =========================================================================
    kvt_trace - Mooncake-format request traces (JSONL)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Reads a trace of one JSON object per line:
      {"timestamp": ms, "input_length": tokens, "output_length": tokens,
       "hash_ids": [ids...]}
    Each hash id names one 512-token block together with everything before
    it, so equal leading ids mean a shared prefix. kvt_trace_block_tokens
    turns an id into deterministic tokens, so equal ids give equal tokens.
@end
*/

#ifndef KVT_TRACE_H_INCLUDED
#define KVT_TRACE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_TRACE_BLOCK_TOKENS 512  //  Tokens per hash id in Mooncake traces

typedef struct {
    int64_t timestamp_ms;           //  Arrival, ms since trace start
    uint32_t input_length;          //  Prompt tokens
    uint32_t output_length;         //  Generated tokens
    uint32_t hash_count;            //  Entries in hash_ids
    const uint64_t *hash_ids;       //  Block ids, owned by the trace
} kvt_trace_request_t;

typedef struct _kvt_trace_t kvt_trace_t;

//  Load a whole trace. Returns NULL on failure and, if 'error' is not NULL,
//  a malloc'd message naming the file, line and problem in *error.
kvt_trace_t *
    kvt_trace_load (const char *path, char **error);

//  Destroy; NULL-safe, nulls the caller's pointer.
void
    kvt_trace_destroy (kvt_trace_t **self_p);

//  Number of requests.
size_t
    kvt_trace_size (const kvt_trace_t *self);

//  Borrow request 'index' (< size).
const kvt_trace_request_t *
    kvt_trace_request (const kvt_trace_t *self, size_t index);

//  Highest hash id + 1 (ids are dense in Mooncake traces).
uint64_t
    kvt_trace_id_count (const kvt_trace_t *self);

//  Fill 'tokens' with 'count' deterministic tokens in [0, vocab) for hash
//  id 'hash_id': equal ids give equal tokens, different ids differ.
void
    kvt_trace_block_tokens (uint64_t hash_id, uint32_t *tokens, size_t count, int vocab);

#ifdef __cplusplus
}
#endif
#endif
