/*  =========================================================================
    kvt_policy_remote - the client of an eviction policy in another process

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    With migration/policy = remote:ENDPOINT the prefix index asks a process
    of any language for its victims. This class is the index's side: one
    ZeroMQ DEALER connected to ENDPOINT (the policy binds a ROUTER), a
    queue of events sent as POLICY_EVENTS {clock, kinds, tiers, hashes,
    parents, depths} (one-way, no reply), and POLICY_VICTIMS {tier, count,
    candidates} -> POLICY_VICTIMS_OK {hashes} with a short deadline.
    The wire is in messages/PROTOCOL.md ("Outside-process policies").
@discuss
    Nothing here blocks longer than the deadline: sends never wait
    (ZMQ_IMMEDIATE: with no live connection a send fails at once), and a
    victims call waits at most 'timeout_ms'. A dead process therefore costs
    nothing; a slow or garbage-speaking one costs one deadline, after
    which the class leaves it alone for 'retry_ms' and then tries again
    on a fresh socket, so a late answer can never be taken for a later
    one. ZeroMQ reconnects by itself when the process comes back.
    Unlike the kvt_policy_ops_t policies of this folder, this class speaks
    ZeroMQ; it is not a policy but the proxy of one. The caller (the
    index) falls back to its own LRU order whenever a call fails.
@end
*/

#ifndef KVT_POLICY_REMOTE_H_INCLUDED
#define KVT_POLICY_REMOTE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_policy_remote_t kvt_policy_remote_t;

//  Create the client of the policy process at 'endpoint' (a ZeroMQ
//  endpoint: "tcp://127.0.0.1:5560", "ipc:///tmp/p.ipc"). Connects in the
//  background; the process need not be up yet. Each victims call waits at
//  most 'timeout_ms'; after a failure the next 'retry_ms' decisions fail
//  at once. Returns NULL (and logs why) if the endpoint is malformed.
kvt_policy_remote_t *
    kvt_policy_remote_new (const char *endpoint, int timeout_ms, int retry_ms);

//  Destroy; NULL-safe, nulls the caller's pointer. Never waits (linger 0).
void
    kvt_policy_remote_destroy (kvt_policy_remote_t **self_p);

//  Queue one event (KVT_POLICY_EVENT_*) about block 'hash' of 'tier'.
//  'parent' is 0 for a block at depth 0 (and for evictions). Events go
//  out at the next flush or victims call; a queue past 65536 events is
//  flushed at once.
void
    kvt_policy_remote_event (kvt_policy_remote_t *self, uint64_t kind, uint64_t tier,
                             uint64_t hash, uint64_t parent, uint64_t depth);

//  Return the number of events queued and not yet sent.
size_t
    kvt_policy_remote_queued (kvt_policy_remote_t *self);

//  Send the queued events as one POLICY_EVENTS stamped with 'clock'.
//  Never blocks. Returns the number of events sent (0: none queued), or
//  -EAGAIN when the process is unreachable or backed off (the events are
//  dropped: the candidates of the next victims call make up for them).
int
    kvt_policy_remote_flush (kvt_policy_remote_t *self, uint64_t clock);

//  Ask for up to 'count' victims of 'tier' among 'candidates' (the tier's
//  unpinned blocks, least recently used first). Flushes queued events
//  first, stamped with 'clock'. Blocks at most timeout_ms. Returns the number of hashes written
//  to 'victims' (room for 'count'), as the process sent them, unchecked;
//  or -EAGAIN (unreachable), -ENOTCONN (backing off after a failure),
//  -ETIMEDOUT (no answer in time) or -EBADMSG (garbage, an ERROR, or a
//  reply of the wrong type).
int
    kvt_policy_remote_victims (kvt_policy_remote_t *self, uint64_t tier, uint64_t count,
                               const uint64_t *candidates, size_t candidate_count,
                               uint64_t *victims, uint64_t clock);

//  Return how many times a fresh socket replaced one after a failure.
uint64_t
    kvt_policy_remote_reconnects (kvt_policy_remote_t *self);

//  Return how many answers came too late or to an earlier question, and
//  were dropped.
uint64_t
    kvt_policy_remote_stale (kvt_policy_remote_t *self);

//  Selftest
int
    kvt_policy_remote_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
