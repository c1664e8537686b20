/*  =========================================================================
    test_actor_handover - two actors of one thread hand each other messages

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The actor skeleton on its own, with two test definitions sharing one
    thread, as the scheduler and its guest prefix index do: "scheduler"
    (the host) and "prefix_index" (the guest). On a LOOKUP from this
    program the host calls its guest twice at once: an IDX_MATCH_PARTS,
    which the guest answers in S_PARTS steps (kvt_actor_continue: a part
    per turn of the loop, then the OK), and an IDX_UNPIN, answered at once.
    Calls between actors of one thread are handed over as objects
    (kvt_actor.c), and must keep what the sockets gave:
      - the guest's inbox is held while it answers in steps, so the
        IDX_UNPIN is served only after the match's last answer, yet the
        host takes each part as it comes (between the steps);
      - each answer reaches the right call (request ids), once;
      - the hand-over is counted (calls_handed_over), the handlers' time
        in the same busy counters as over the sockets (us_IDX_UNPIN,
        us_reply_IDX_MATCH_PART);
      - a call left open when the thread ends fails with -ECANCELED.
    The host answers the LOOKUP with the order in which its callbacks ran.
    Hand-overs are served once the callback that made them ends
    (kvt_actor_turn_end), not a turn of the loop later: the guest takes
    the match before a zero-delay timer the host set in the same callback.
    And a deadline still wins: a STORE makes the host call the guest with
    a 1 ms timeout, which the guest answers 20 ms later (IDX_INSERT); the
    answer, served at once after it, finds the call past its deadline, so
    the call times out (as the loop's sweep would have had it) and the
    answer is stale.
@end
*/

#include "testutil.h"
#include "kvt_actor.h"

#define S_PARTS 3                   //  Parts the guest answers in before its OK

//  What the host's callbacks saw, in order
enum { S_SAW_PART = 1, S_SAW_MATCH_OK = 2, S_SAW_UNPIN_OK = 3, S_SAW_CANCELLED = 4 };

typedef struct {
    kvt_actor_t *actor;
    kvt_msg_t *lookup;              //  The LOOKUP being served
    uint64_t order [16];            //  S_SAW_*, as the callbacks ran
    size_t seen;                    //  Entries in order
    size_t open;                    //  Calls not yet answered
} s_host_t;

typedef struct {
    kvt_actor_t *actor;
    kvt_msg_t *matching;            //  The IDX_MATCH_PARTS being answered in steps
    int parts;                      //  Parts answered so far
} s_guest_t;

//  Set by the host's callback of the call left open at the end (static:
//  the host is gone by the time the test reads it)
static int s_open_call_rc;

//  Whether the host's zero-delay timer had run when the guest took the
//  match (each LOOKUP sets the timer, then calls the guest)
static bool s_host_turned, s_guest_matched_before_turn;

static void *
s_host_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    (void) config;
    s_host_t *self = (s_host_t *) calloc (1, sizeof (s_host_t));
    self->actor = actor;
    return self;
}

static void
s_host_destroy (void **self_p)
{
    s_host_t *self = (s_host_t *) *self_p;
    kvt_msg_destroy (&self->lookup);
    free (self);
    *self_p = NULL;
}

static void
s_host_saw (s_host_t *self, uint64_t what)
{
    if (self->seen < 16)
        self->order [self->seen++] = what;
}

//  Both calls answered: the LOOKUP's answer carries the order
static void
s_host_answer (s_host_t *self)
{
    if (--self->open > 0)
        return;
    kvt_msg_t *reply = kvt_msg_reply_new (self->lookup, KVT_MSG_LOOKUP_OK);
    kvt_msg_set_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS,
                     kvt_actor_counter (self->actor, "calls_handed_over"));
    kvt_msg_set_array (reply, KVT_LOOKUP_OK_TIERS, self->order, self->seen);
    kvt_msg_destroy (&self->lookup);
    kvt_actor_reply (self->actor, &reply);
}

static void
s_host_matched (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) arg;
    s_host_t *self = (s_host_t *) self_ptr;
    if (rc == 0 && kvt_msg_id (*reply_p) == KVT_MSG_IDX_MATCH_PART) {
        s_host_saw (self, S_SAW_PART);
        return;                     //  The call stays open
    }
    s_host_saw (self, rc == 0? S_SAW_MATCH_OK: S_SAW_CANCELLED);
    s_host_answer (self);
}

static void
s_host_unpinned (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) reply_p;
    (void) arg;
    s_host_t *self = (s_host_t *) self_ptr;
    s_host_saw (self, rc == 0? S_SAW_UNPIN_OK: S_SAW_CANCELLED);
    s_host_answer (self);
}

//  A call nobody answers: only the thread's end fails it
static void
s_host_left_open (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) self_ptr;
    (void) reply_p;
    (void) arg;
    s_open_call_rc = rc;
}

static int
s_host_turn (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    (void) arg;
    s_host_turned = true;
    return 0;
}

//  LOOKUP: the match and the unpin go to the guest at once, and a call
//  is left open (the guest never answers IDX_REMOVE)
static int
s_host_lookup (void *self_ptr, kvt_msg_t **msg_p)
{
    s_host_t *self = (s_host_t *) self_ptr;
    self->lookup = *msg_p;
    *msg_p = NULL;
    self->seen = 0;
    self->open = 2;
    s_host_turned = false;
    zloop_timer (kvt_actor_loop (self->actor), 0, 1, s_host_turn, NULL);
    uint64_t hashes [4] = { 1, 2, 3, 4 };
    kvt_msg_t *match = kvt_msg_new (KVT_MSG_IDX_MATCH_PARTS);
    kvt_msg_set_array (match, KVT_IDX_MATCH_PARTS_HASHES, hashes, 4);
    kvt_actor_call (self->actor, "prefix_index", &match, s_host_matched, NULL);
    kvt_msg_t *unpin = kvt_msg_new (KVT_MSG_IDX_UNPIN);
    kvt_msg_set_array (unpin, KVT_IDX_UNPIN_HASHES, hashes, 4);
    kvt_actor_call (self->actor, "prefix_index", &unpin, s_host_unpinned, NULL);
    kvt_msg_t *never = kvt_msg_new (KVT_MSG_IDX_REMOVE);
    kvt_actor_call (self->actor, "prefix_index", &never, s_host_left_open, NULL);
    return 0;
}

//  The guest's answer to the 1 ms call: STORE_OK if it came in time,
//  else the call's error
static void
s_host_inserted (void *self_ptr, int rc, kvt_msg_t **reply_p, void *arg)
{
    (void) reply_p;
    s_host_t *self = (s_host_t *) self_ptr;
    kvt_msg_t *store = (kvt_msg_t *) arg;
    kvt_msg_t *reply = rc? kvt_msg_error_new (store, rc, "IDX_INSERT failed")
                         : kvt_msg_reply_new (store, KVT_MSG_STORE_OK);
    kvt_msg_destroy (&store);
    kvt_actor_reply (self->actor, &reply);
}

//  STORE: a call to the guest that must come back within 1 ms
static int
s_host_store (void *self_ptr, kvt_msg_t **msg_p)
{
    s_host_t *self = (s_host_t *) self_ptr;
    kvt_msg_t *insert = kvt_msg_new (KVT_MSG_IDX_INSERT);
    kvt_actor_call_timeout (self->actor, "prefix_index", &insert, s_host_inserted, *msg_p, 1);
    *msg_p = NULL;
    return 0;
}

static void *
s_guest_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    (void) config;
    s_guest_t *self = (s_guest_t *) calloc (1, sizeof (s_guest_t));
    self->actor = actor;
    return self;
}

static void
s_guest_destroy (void **self_p)
{
    s_guest_t *self = (s_guest_t *) *self_p;
    kvt_msg_destroy (&self->matching);
    free (self);
    *self_p = NULL;
}

//  One step: a part, or (the last) the OK
static int
s_guest_step (void *self_ptr, void *arg, bool cancel)
{
    (void) arg;
    s_guest_t *self = (s_guest_t *) self_ptr;
    if (cancel)
        return 0;
    if (self->parts < S_PARTS) {
        kvt_msg_t *part = kvt_msg_reply_new (self->matching, KVT_MSG_IDX_MATCH_PART);
        kvt_msg_set_u64 (part, KVT_IDX_MATCH_PART_FIRST, (uint64_t) self->parts++);
        kvt_actor_reply (self->actor, &part);
        return 1;
    }
    kvt_msg_t *ok = kvt_msg_reply_new (self->matching, KVT_MSG_IDX_MATCH_PARTS_OK);
    kvt_actor_reply (self->actor, &ok);
    kvt_msg_destroy (&self->matching);
    return 0;
}

static int
s_guest_match (void *self_ptr, kvt_msg_t **msg_p)
{
    s_guest_t *self = (s_guest_t *) self_ptr;
    self->matching = *msg_p;
    *msg_p = NULL;
    self->parts = 0;
    s_guest_matched_before_turn = !s_host_turned;
    return kvt_actor_continue (self->actor, s_guest_step, NULL);
}

static int
s_guest_unpin (void *self_ptr, kvt_msg_t **msg_p)
{
    s_guest_t *self = (s_guest_t *) self_ptr;
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_UNPIN_OK);
    return kvt_actor_reply (self->actor, &reply);
}

//  Answered, 20 ms late for a 1 ms call
static int
s_guest_insert (void *self_ptr, kvt_msg_t **msg_p)
{
    s_guest_t *self = (s_guest_t *) self_ptr;
    zclock_sleep (20);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_INSERT_OK);
    return kvt_actor_reply (self->actor, &reply);
}

//  Kept: never answered
static int
s_guest_remove (void *self_ptr, kvt_msg_t **msg_p)
{
    (void) self_ptr;
    kvt_msg_destroy (msg_p);
    return 0;
}

static const char *const s_host_peers [] = { "prefix_index", NULL };

static const kvt_actor_def_t s_host_def = {
    .name = "scheduler", .create = s_host_new, .destroy = s_host_destroy,
    .peers = s_host_peers,
    .handlers = { [KVT_MSG_LOOKUP] = s_host_lookup, [KVT_MSG_STORE] = s_host_store }
};

static const kvt_actor_def_t s_guest_def = {
    .name = "prefix_index", .create = s_guest_new, .destroy = s_guest_destroy,
    .handlers = { [KVT_MSG_IDX_MATCH_PARTS] = s_guest_match,
                  [KVT_MSG_IDX_UNPIN] = s_guest_unpin,
                  [KVT_MSG_IDX_INSERT] = s_guest_insert,
                  [KVT_MSG_IDX_REMOVE] = s_guest_remove }
};

//  Send this program's request 'id' to the host and wait for its answer
static kvt_msg_t *
s_ask (zsock_t *dealer, int id, uint64_t request_id)
{
    kvt_msg_t *request = kvt_msg_new (id);
    kvt_msg_set_request_id (request, request_id);
    t_ok (kvt_msg_send (&request, dealer));
    kvt_msg_t *reply = NULL;
    t_ok (kvt_msg_recv (dealer, &reply));
    return reply;
}

int
main (void)
{
    kvt_log_set_level (KVT_LOG_ERROR);
    char run_dir [] = "/tmp/kvt_handover_XXXXXX";
    t_check (mkdtemp (run_dir));
    kvt_config_t *config = t_config (NULL);
    const kvt_actor_def_t *guests [] = { &s_guest_def, NULL };
    kvt_actor_args_t args = { &s_host_def, config, run_dir, false, guests };
    zactor_t *thread = zactor_new (kvt_actor_main, &args);
    t_check (thread);
    zstr_send (thread, "START");
    t_check (zsock_wait (thread) == 0);

    char endpoint [512];
    kvt_actor_endpoint (run_dir, "scheduler", false, endpoint, sizeof (endpoint));
    zsock_t *dealer = zsock_new_dealer (endpoint);
    t_check (dealer);
    zsock_set_rcvtimeo (dealer, 10000);
    for (int round = 0; round < 2; round++) {
        kvt_msg_t *reply = s_ask (dealer, KVT_MSG_LOOKUP, 100 + (uint64_t) round);
        t_check (kvt_msg_id (reply) == KVT_MSG_LOOKUP_OK);
        t_check (kvt_msg_request_id (reply) == 100 + (uint64_t) round);
        size_t seen;
        const uint64_t *order = kvt_msg_array (reply, KVT_LOOKUP_OK_TIERS, &seen);
        printf ("round %d:", round);
        for (size_t k = 0; k < seen; k++)
            printf (" %" PRIu64, order [k]);
        printf (" (handed over %" PRIu64 ")\n", kvt_msg_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS));
        //  Every part, then the OK, then the held unpin: each once
        t_check (seen == S_PARTS + 2);
        for (size_t k = 0; k < S_PARTS; k++)
            t_check (order [k] == S_SAW_PART);
        t_check (order [S_PARTS] == S_SAW_MATCH_OK);
        t_check (order [S_PARTS + 1] == S_SAW_UNPIN_OK);
        //  Three calls a round went to the guest as objects
        t_check (kvt_msg_u64 (reply, KVT_LOOKUP_OK_MATCHED_BLOCKS) == 3 * (uint64_t) (round + 1));
        //  ... and the match was taken before the loop turned
        t_check (s_guest_matched_before_turn);
        kvt_msg_destroy (&reply);
    }
    //  An answer handed over past its call's deadline: the call timed out
    kvt_msg_t *stored = s_ask (dealer, KVT_MSG_STORE, 9);
    t_check (kvt_msg_id (stored) == KVT_MSG_ERROR);
    t_check (kvt_msg_i64 (stored, KVT_ERROR_CODE) == -ETIMEDOUT);
    kvt_msg_destroy (&stored);
    //  The same busy counters as over the sockets
    kvt_msg_t *reply = s_ask (dealer, KVT_MSG_STATS, 7);
    t_check (kvt_msg_id (reply) == KVT_MSG_STATS_OK);
    bool reply_part = false;
    uint64_t timed_out = 0, stale = 0;
    for (size_t k = 0; k < kvt_msg_map_size (reply, KVT_STATS_OK_COUNTERS); k++) {
        const char *key = kvt_msg_map_key (reply, KVT_STATS_OK_COUNTERS, k);
        reply_part = reply_part || streq (key, "scheduler.us_reply_IDX_MATCH_PART");
        if (streq (key, "scheduler.calls_timed_out"))
            timed_out = kvt_msg_map_value (reply, KVT_STATS_OK_COUNTERS, k);
        if (streq (key, "scheduler.replies_stale"))
            stale = kvt_msg_map_value (reply, KVT_STATS_OK_COUNTERS, k);
    }
    t_check (reply_part);
    t_check (timed_out == 1 && stale == 1);
    kvt_msg_destroy (&reply);

    //  The thread ends with a call to the guest open: it fails, cancelled
    s_open_call_rc = 0;
    zsock_destroy (&dealer);
    zactor_destroy (&thread);
    t_check (s_open_call_rc == -ECANCELED);
    kvt_config_destroy (&config);
    char command [600];
    snprintf (command, sizeof (command), "rm -rf %s", run_dir);
    t_check (system (command) == 0);
    printf ("test_actor_handover: OK\n");
    return 0;
}
