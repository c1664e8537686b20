/*  =========================================================================
    testutil - helpers for kvtier's standalone test programs

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_TESTUTIL_H_INCLUDED
#define KVT_TESTUTIL_H_INCLUDED

#include <czmq.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include "kvt.h"
#include "kvt_actors.h"

#define T_EXIT_PASS 0
#define T_EXIT_FAIL 1
#define T_EXIT_SKIP 77

//  Fail the test with a message (tests may exit; library code may not).
#define t_check(cond) \
    do { if (!(cond)) { \
        fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        exit (T_EXIT_FAIL); } } while (0)

//  Check a status code is 0, printing its name otherwise.
#define t_ok(expr) \
    do { int t_rc_ = (expr); if (t_rc_ != 0) { \
        fprintf (stderr, "%s:%d: %s returned %d (%s)\n", __FILE__, __LINE__, #expr, t_rc_, \
                 kvt_strerror (t_rc_)); exit (T_EXIT_FAIL); } } while (0)

//  A config for tests: the default with no tcp front door, plus overrides
//  given as "path=value" strings, NULL-terminated.
static inline kvt_config_t *
t_config (const char *const *overrides)
{
    kvt_config_t *config = kvt_config_new ();
    char error [256];
    t_ok (kvt_config_set (config, "scheduler/endpoint", "", error, sizeof (error)));
    for (; overrides && *overrides; overrides++)
        if (kvt_config_set_option (config, *overrides, error, sizeof (error))) {
            fprintf (stderr, "t_config: %s\n", error);
            exit (T_EXIT_FAIL);
        }
    return config;
}

//  Start a runtime in this process on 'config'; fails the test if it cannot.
static inline kvt_runtime_t *
t_start_runtime (const kvt_config_t *config)
{
    kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
    int rc = kvt_runtime_start (runtime);
    if (rc) {
        fprintf (stderr, "t_start_runtime: %s\n", kvt_strerror (rc));
        exit (T_EXIT_FAIL);
    }
    return runtime;
}

//  A runtime started in this process, a client connected to it over its
//  ipc endpoint, and the server's HELLO: what most scenarios open first
typedef struct {
    kvt_config_t *config;           //  Taken from the caller, destroyed by t_session_end
    kvt_runtime_t *runtime;         //  Started on 'config'
    kvt_client_t *client;           //  Its client
    kvt_client_hello_t hello;       //  HELLO answer
} t_session_t;

//  Start a runtime on 'config' (the session owns it from here), connect a
//  client with 'timeout_ms' per call, say HELLO as 'name'. Fails the test
//  if any step fails.
static inline void
t_session_start (t_session_t *self, kvt_config_t *config, const char *name, int timeout_ms)
{
    self->config = config;
    self->runtime = t_start_runtime (config);
    self->client = kvt_client_new (kvt_runtime_ipc_endpoint (self->runtime), timeout_ms);
    t_check (self->client);
    t_ok (kvt_client_hello (self->client, name, &self->hello));
}

//  Close the client, stop the runtime, destroy the config.
static inline void
t_session_end (t_session_t *self)
{
    kvt_client_destroy (&self->client);
    kvt_runtime_destroy (&self->runtime);
    kvt_config_destroy (&self->config);
}

//  One STATS counter by its "actor.name" key (0 if the server has none).
static inline uint64_t
t_stat (kvt_client_t *client, const char *key)
{
    kvt_client_stats_t stats;
    t_ok (kvt_client_stats (client, &stats));
    uint64_t value = 0;
    kvt_client_stats_find (&stats, key, &value);
    kvt_client_stats_fini (&stats);
    return value;
}

//  Wait until STATS counter 'key' reaches 'want' (at most 20 s); returns
//  its last value.
static inline uint64_t
t_wait_stat (kvt_client_t *client, const char *key, uint64_t want)
{
    uint64_t value = 0;
    for (int k = 0; k < 400 && (value = t_stat (client, key)) < want; k++)
        zclock_sleep (50);
    return value;
}

//  Whether each memory tier holds exactly the blocks the index has on it,
//  plus 'gpu_extra' GPU slots held outside the index.
static inline bool
t_tiers_consistent (kvt_client_t *client, uint64_t gpu_extra)
{
    return t_stat (client, "tier_gpu.used_blocks")
           == t_stat (client, "prefix_index.blocks_gpu") + gpu_extra
        && t_stat (client, "tier_host.used_blocks")
           == t_stat (client, "prefix_index.blocks_host");
}

//  t_tiers_consistent once the runtime is quiet: some frees trail the
//  reply that ends a request (a computed block another request inserted
//  first is freed when the index says so; an undone stream promotion's
//  slots when migration gets to it), so a reply is not the moment to
//  count. True once it holds for three polls in a row ('poll_ms' apart:
//  work still to come would break it), false if not within 'wait_ms'.
static inline bool
t_tiers_settle (kvt_client_t *client, uint64_t gpu_extra, int poll_ms, int wait_ms)
{
    int stable = 0;
    for (int waited = 0; waited <= wait_ms && stable < 3; waited += poll_ms) {
        stable = t_tiers_consistent (client, gpu_extra)? stable + 1: 0;
        if (stable < 3)
            zclock_sleep (poll_ms);
    }
    return stable >= 3;
}

//  Find, in the NVMe tier's data files of 'runtime', the 4 KiB page that
//  starts with the 64 bytes at 'needle' (a block's payload start) and flip
//  its byte 100 on disk. Returns whether such a page was found.
static inline bool
t_flip_on_disk (kvt_runtime_t *runtime, const uint8_t *needle)
{
    char nvme_dir [1024];
    snprintf (nvme_dir, sizeof (nvme_dir), "%s/nvme", kvt_runtime_run_dir (runtime));
    bool flipped = false;
    DIR *dir = opendir (nvme_dir);
    t_check (dir);
    struct dirent *entry;
    while (!flipped && (entry = readdir (dir))) {
        if (!strstr (entry->d_name, ".dat"))
            continue;
        char path [1400];
        snprintf (path, sizeof (path), "%s/%s", nvme_dir, entry->d_name);
        FILE *file = fopen (path, "r+b");
        t_check (file);
        uint8_t page [4096];
        for (long offset = 0; !flipped && fseek (file, offset, SEEK_SET) == 0
             && fread (page, 1, sizeof (page), file) == sizeof (page); offset += 4096)
            if (memcmp (page, needle, 64) == 0) {
                fseek (file, offset + 100, SEEK_SET);
                fputc (page [100] ^ 0xff, file);
                flipped = true;
            }
        fclose (file);
    }
    closedir (dir);
    return flipped;
}

//  A DEALER connected to actor 'name' of 'runtime', as a peer actor's
//  (30 s receive timeout); the caller destroys it.
static inline zsock_t *
t_dealer (kvt_runtime_t *runtime, const char *name)
{
    char endpoint [512];
    kvt_actor_endpoint (kvt_runtime_run_dir (runtime), name, true, endpoint, sizeof (endpoint));
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    t_check (dealer && zsock_connect (dealer, "%s", endpoint) == 0);
    zsock_set_rcvtimeo (dealer, 30000);
    return dealer;
}

//  Send 'msg' (consumed) straight to actor 'name' of 'runtime', as a peer
//  actor would; return its reply (the caller destroys it).
static inline kvt_msg_t *
t_call (kvt_runtime_t *runtime, const char *name, kvt_msg_t *msg)
{
    zsock_t *dealer = t_dealer (runtime, name);
    kvt_msg_set_request_id (msg, 11);
    t_ok (kvt_msg_send (&msg, dealer));
    kvt_msg_t *reply = NULL;
    t_ok (kvt_msg_recv (dealer, &reply));
    zsock_destroy (&dealer);
    return reply;
}

//  Drop one pin from each of 'count' blocks, straight at the index;
//  return how many it unpinned.
static inline uint64_t
t_unpin (kvt_runtime_t *runtime, const uint64_t *hashes, size_t count)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_UNPIN);
    kvt_msg_set_array (msg, KVT_IDX_UNPIN_HASHES, hashes, count);
    kvt_msg_t *reply = t_call (runtime, "prefix_index", msg);
    t_check (kvt_msg_id (reply) == KVT_MSG_IDX_UNPIN_OK);
    uint64_t unpinned = kvt_msg_u64 (reply, KVT_IDX_UNPIN_OK_UNPINNED);
    kvt_msg_destroy (&reply);
    return unpinned;
}

//  Deterministic prompt of 'count' tokens < vocab.
static inline uint64_t *
t_tokens (size_t count, uint64_t vocab, uint64_t seed)
{
    uint64_t *tokens = (uint64_t *) malloc ((count + 1) * sizeof (uint64_t));
    kvt_client_random_tokens (tokens, count, vocab, seed);
    return tokens;
}

//  A prefix of 'blocks' full blocks, its tokens from 'token_seed' and its
//  KV bytes from 'kv_seed', stored through 'client' (all of it must be).
//  *tokens_p and *kv_p are the caller's to free; the prefix is blocks x
//  hello's block_tokens tokens and blocks x block_bytes bytes.
static inline void
t_store_prefix (kvt_client_t *client, const kvt_client_hello_t *hello, size_t blocks,
                uint64_t token_seed, uint64_t kv_seed, uint64_t **tokens_p, uint8_t **kv_p)
{
    size_t count = blocks * hello->block_tokens;
    size_t bytes = blocks * hello->block_bytes;
    *tokens_p = t_tokens (count, hello->vocab, token_seed);
    *kv_p = (uint8_t *) malloc (bytes);
    t_check (*kv_p);
    kvt_client_fill_bytes (*kv_p, bytes, kv_seed);
    kvt_client_store_t stored;
    t_ok (kvt_client_store (client, "", *tokens_p, count, *kv_p, bytes, &stored));
    t_check (stored.stored_blocks == blocks);
}

#endif
