/*  =========================================================================
    kvt_policy_remote - the client of an eviction policy in another process

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The prefix index's side of an outside-process policy: events out as
    POLICY_EVENTS, victims asked with POLICY_VICTIMS under a deadline.
    See kvt_policy_remote.h and messages/PROTOCOL.md.
@discuss
    Failure handling in one place: every failed victims call (timeout,
    garbage) drops the socket and starts a back-off of retry_ms; the
    first call after it builds a fresh socket. A send that finds no live
    connection (ZMQ_IMMEDIATE) fails at once without a back-off, because
    it cost nothing.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy_remote.h"

#define S_MAX_QUEUED    65536       //  Events queued before a forced flush
#define S_HWM           1000        //  Messages ZeroMQ may hold per direction

struct _kvt_policy_remote_t {
    char *endpoint;                 //  Where the policy process binds
    int timeout_ms;                 //  Longest wait for victims
    int retry_ms;                   //  Back-off after a failure
    zsock_t *sock;                  //  DEALER, or NULL after a failure
    int64_t down_until;             //  zclock_mono () before which calls fail at once
    uint64_t sequence;              //  Request id of the last victims question
    uint64_t *kinds;                //  Queued events, one entry each in the
    uint64_t *tiers;                //  five arrays below
    uint64_t *hashes;
    uint64_t *parents;
    uint64_t *depths;
    size_t queued;                  //  Events queued
    size_t queue_max;               //  Entries allocated per array
    uint64_t reconnects;            //  Fresh sockets after a failure
    uint64_t stale;                 //  Late or unmatched answers dropped
};

//  --------------------------------------------------------------------------
//  Build the DEALER. Returns 0 or -EINVAL for a malformed endpoint.

static int
s_connect (kvt_policy_remote_t *self)
{
    assert (!self->sock);
    self->sock = zsock_new (ZMQ_DEALER);
    if (!self->sock)
        return -ENOMEM;
    zsock_set_linger (self->sock, 0);
    zsock_set_sndhwm (self->sock, S_HWM);
    zsock_set_rcvhwm (self->sock, S_HWM);
    zsock_set_immediate (self->sock, 1);    //  No peer: sends fail, never queue
    if (zsock_connect (self->sock, "%s", self->endpoint)) {
        zsock_destroy (&self->sock);
        return -EINVAL;
    }
    return 0;
}

//  A call failed in a way that may leave an answer in flight: drop the
//  socket (and that answer with it) and back off.
static void
s_fail (kvt_policy_remote_t *self)
{
    zsock_destroy (&self->sock);
    self->down_until = zclock_mono () + self->retry_ms;
}

//  Make sure a socket exists unless we are backing off. Returns 0 or
//  -ENOTCONN.
static int
s_ready (kvt_policy_remote_t *self)
{
    if (self->sock)
        return 0;
    if (zclock_mono () < self->down_until)
        return -ENOTCONN;
    if (s_connect (self))
        return -ENOTCONN;
    self->reconnects++;
    return 0;
}

//  Send one message without waiting; consumes it. Returns 0 or -EAGAIN.
static int
s_send (kvt_policy_remote_t *self, kvt_msg_t **msg_p)
{
    zframe_t *frame = NULL;
    int rc = kvt_msg_encode (*msg_p, &frame);
    kvt_msg_destroy (msg_p);
    if (rc)
        return rc;
    if (zframe_send (&frame, self->sock, ZFRAME_DONTWAIT)) {
        zframe_destroy (&frame);
        return -EAGAIN;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Create the client of the policy process at 'endpoint'.

kvt_policy_remote_t *
kvt_policy_remote_new (const char *endpoint, int timeout_ms, int retry_ms)
{
    assert (endpoint);
    kvt_policy_remote_t *self = (kvt_policy_remote_t *) kvt_zmalloc (sizeof (*self));
    self->endpoint = strdup (endpoint);
    if (!self->endpoint)
        abort ();
    self->timeout_ms = timeout_ms > 0? timeout_ms: 1;
    self->retry_ms = retry_ms >= 0? retry_ms: 0;
    if (s_connect (self)) {
        kvt_log_error ("policy remote: cannot connect to '%s'", endpoint);
        kvt_policy_remote_destroy (&self);
        return NULL;
    }
    return self;
}

//  --------------------------------------------------------------------------
//  Destroy; NULL-safe, nulls the caller's pointer.

void
kvt_policy_remote_destroy (kvt_policy_remote_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        kvt_policy_remote_t *self = *self_p;
        zsock_destroy (&self->sock);
        free (self->kinds);
        free (self->tiers);
        free (self->hashes);
        free (self->parents);
        free (self->depths);
        free (self->endpoint);
        free (self);
        *self_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Queue one event; a full queue is flushed first.

void
kvt_policy_remote_event (kvt_policy_remote_t *self, uint64_t kind, uint64_t tier,
                         uint64_t hash, uint64_t parent, uint64_t depth)
{
    assert (self);
    if (self->queued == S_MAX_QUEUED)
        (void) kvt_policy_remote_flush (self, 0);   //  Dropped if unreachable: by design
    if (self->queued == self->queue_max) {
        size_t more = self->queue_max? self->queue_max * 2: 256;
        uint64_t **arrays [] = { &self->kinds, &self->tiers, &self->hashes,
                                 &self->parents, &self->depths };
        for (size_t a = 0; a < sizeof (arrays) / sizeof (arrays [0]); a++) {
            uint64_t *bigger = (uint64_t *) realloc (*arrays [a], more * sizeof (uint64_t));
            if (!bigger)
                abort ();
            *arrays [a] = bigger;
        }
        self->queue_max = more;
    }
    self->kinds [self->queued] = kind;
    self->tiers [self->queued] = tier;
    self->hashes [self->queued] = hash;
    self->parents [self->queued] = parent;
    self->depths [self->queued] = depth;
    self->queued++;
}

//  --------------------------------------------------------------------------
//  Return the number of events queued and not yet sent.

size_t
kvt_policy_remote_queued (kvt_policy_remote_t *self)
{
    assert (self);
    return self->queued;
}

//  --------------------------------------------------------------------------
//  Send the queued events as one POLICY_EVENTS; never blocks.

int
kvt_policy_remote_flush (kvt_policy_remote_t *self, uint64_t clock)
{
    assert (self);
    size_t count = self->queued;
    if (count == 0)
        return 0;
    self->queued = 0;
    if (s_ready (self))
        return -EAGAIN;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_POLICY_EVENTS);
    kvt_msg_set_u64 (msg, KVT_POLICY_EVENTS_CLOCK, clock);
    kvt_msg_set_array (msg, KVT_POLICY_EVENTS_KINDS, self->kinds, count);
    kvt_msg_set_array (msg, KVT_POLICY_EVENTS_TIERS, self->tiers, count);
    kvt_msg_set_array (msg, KVT_POLICY_EVENTS_HASHES, self->hashes, count);
    kvt_msg_set_array (msg, KVT_POLICY_EVENTS_PARENTS, self->parents, count);
    kvt_msg_set_array (msg, KVT_POLICY_EVENTS_DEPTHS, self->depths, count);
    int rc = s_send (self, &msg);
    return rc? -EAGAIN: (int) count;
}

//  --------------------------------------------------------------------------
//  Ask for victims; blocks at most timeout_ms.
//  Waits in one poll per answer that arrives: stale answers to earlier
//  questions are dropped and the wait goes on until the deadline.

int
kvt_policy_remote_victims (kvt_policy_remote_t *self, uint64_t tier, uint64_t count,
                           const uint64_t *candidates, size_t candidate_count,
                           uint64_t *victims, uint64_t clock)
{
    assert (self);
    assert (victims || count == 0);
    (void) kvt_policy_remote_flush (self, clock);   //  Lost events: candidates cover them
    int rc = s_ready (self);
    if (rc)
        return rc;
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_POLICY_VICTIMS);
    kvt_msg_set_request_id (msg, ++self->sequence);
    kvt_msg_set_u64 (msg, KVT_POLICY_VICTIMS_TIER, tier);
    kvt_msg_set_u64 (msg, KVT_POLICY_VICTIMS_COUNT, count);
    kvt_msg_set_array (msg, KVT_POLICY_VICTIMS_CANDIDATES, candidates, candidate_count);
    if (s_send (self, &msg))
        return -EAGAIN;             //  No live connection: cost nothing, no back-off
    int64_t deadline = zclock_mono () + self->timeout_ms;
    void *handle = zsock_resolve (self->sock);
    while (true) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0) {
            s_fail (self);
            return -ETIMEDOUT;
        }
        zmq_pollitem_t item = { handle, 0, ZMQ_POLLIN, 0 };
        int ready = zmq_poll (&item, 1, (long) left);
        if (ready < 0) {            //  Interrupted (shutting down): treat as late
            s_fail (self);
            return -ETIMEDOUT;
        }
        if (ready == 0)
            continue;               //  Deadline checked at the top
        zmsg_t *answer = zmsg_recv_nowait (self->sock);
        if (!answer)
            continue;
        zframe_t *last = zmsg_last (answer);
        kvt_msg_t *reply = NULL;
        rc = last? kvt_msg_decode (zframe_data (last), zframe_size (last), &reply): -EBADMSG;
        zmsg_destroy (&answer);
        if (rc == 0 && kvt_msg_request_id (reply) != self->sequence) {
            self->stale++;          //  An answer to an earlier question
            kvt_msg_destroy (&reply);
            continue;
        }
        if (rc || kvt_msg_id (reply) != KVT_MSG_POLICY_VICTIMS_OK) {
            kvt_msg_destroy (&reply);
            s_fail (self);
            return -EBADMSG;
        }
        size_t have;
        const uint64_t *hashes = kvt_msg_array (reply, KVT_POLICY_VICTIMS_OK_HASHES, &have);
        if (have > count)
            have = (size_t) count;
        if (have)
            memcpy (victims, hashes, have * sizeof (uint64_t));
        kvt_msg_destroy (&reply);
        return (int) have;
    }
}

//  --------------------------------------------------------------------------
//  Counters

uint64_t
kvt_policy_remote_reconnects (kvt_policy_remote_t *self)
{
    assert (self);
    return self->reconnects;
}

uint64_t
kvt_policy_remote_stale (kvt_policy_remote_t *self)
{
    assert (self);
    return self->stale;
}

//  --------------------------------------------------------------------------
//  Selftest: a fake policy process in a thread, with a behaviour we set.

typedef struct {
    int mode;                       //  0 MRU, 1 late, 2 garbage, 3 ERROR, 4 twice
    uint64_t events;                //  Events received
} s_fake_t;

//  Answer one POLICY_VICTIMS the way the mode says.
static void
s_fake_answer (s_fake_t *fake, zsock_t *router, zframe_t *routing, kvt_msg_t *msg)
{
    size_t have;
    const uint64_t *candidates = kvt_msg_array (msg, KVT_POLICY_VICTIMS_CANDIDATES, &have);
    uint64_t count = kvt_msg_u64 (msg, KVT_POLICY_VICTIMS_COUNT);
    uint64_t chosen [64];
    size_t chosen_count = 0;
    for (size_t k = have; k-- > 0 && chosen_count < count && chosen_count < 64; )
        chosen [chosen_count++] = candidates [k];
    kvt_msg_t *reply = fake->mode == 3
        ? kvt_msg_error_new (msg, -EINVAL, "told to fail")
        : kvt_msg_reply_new (msg, KVT_MSG_POLICY_VICTIMS_OK);
    if (fake->mode != 3)
        kvt_msg_set_array (reply, KVT_POLICY_VICTIMS_OK_HASHES, chosen, chosen_count);
    zframe_t *frame = NULL;
    int rc = kvt_msg_encode (reply, &frame);
    assert (rc == 0);
    kvt_msg_destroy (&reply);
    if (fake->mode == 1)
        zclock_sleep (300);
    if (fake->mode == 2) {
        zframe_destroy (&frame);
        frame = zframe_new ("not msgpack at all", 18);
    }
    if (fake->mode == 4) {          //  Answer twice: the copy arrives as a stale answer
        zframe_send (&routing, router, ZFRAME_MORE + ZFRAME_REUSE);
        zframe_send (&frame, router, ZFRAME_REUSE);
    }
    zframe_send (&routing, router, ZFRAME_MORE + ZFRAME_REUSE);
    zframe_send (&frame, router, 0);
}

//  Answers POLICY_VICTIMS with the last 'count' candidates, newest first
//  (mode 0), 300 ms late (mode 1), garbage (2), an ERROR (3), or twice
//  (4). Pipe
//  commands: "MODE" n, "EVENTS" -> count, $TERM.
static void
s_fake_policy (zsock_t *pipe, void *args)
{
    zsock_t *router = zsock_new_router ((const char *) args);
    assert (router);
    s_fake_t fake = { 0, 0 };
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    zsock_signal (pipe, 0);
    while (true) {
        zsock_t *which = (zsock_t *) zpoller_wait (poller, -1);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            if (!command || streq (command, "$TERM")) {
                zstr_free (&command);
                break;
            }
            if (streq (command, "MODE")) {
                char *mode = zstr_recv (pipe);
                fake.mode = atoi (mode);
                zstr_free (&mode);
                zsock_signal (pipe, 0);
            }
            else
            if (streq (command, "EVENTS"))
                zstr_sendf (pipe, "%" PRIu64, fake.events);
            zstr_free (&command);
            continue;
        }
        if (which != router)
            break;
        zmsg_t *request = zmsg_recv (router);
        if (!request)
            break;
        zframe_t *routing = zmsg_pop (request);
        zframe_t *payload = zmsg_pop (request);
        kvt_msg_t *msg = NULL;
        if (payload && kvt_msg_decode (zframe_data (payload), zframe_size (payload), &msg) == 0) {
            if (kvt_msg_id (msg) == KVT_MSG_POLICY_EVENTS) {
                size_t count;
                kvt_msg_array (msg, KVT_POLICY_EVENTS_KINDS, &count);
                fake.events += count;
            }
            else
            if (kvt_msg_id (msg) == KVT_MSG_POLICY_VICTIMS)
                s_fake_answer (&fake, router, routing, msg);
        }
        kvt_msg_destroy (&msg);
        zframe_destroy (&payload);
        zframe_destroy (&routing);
        zmsg_destroy (&request);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&router);
}

//  Set the fake's mode; returns once it has taken it.
static void
s_fake_mode (zactor_t *fake, int mode)
{
    zstr_sendm (fake, "MODE");
    zstr_sendf (fake, "%d", mode);
    zsock_wait (fake);
}

//  Return the number of events the fake has received.
static uint64_t
s_fake_events (zactor_t *fake)
{
    zstr_send (fake, "EVENTS");
    char *text = zstr_recv (fake);
    uint64_t events = strtoull (text, NULL, 10);
    zstr_free (&text);
    return events;
}

int
kvt_policy_remote_test (bool verbose)
{
    printf (" * kvt_policy_remote: ");
    //  @selftest
    const char *endpoint = "inproc://kvt-policy-remote-test";
    zactor_t *fake = zactor_new (s_fake_policy, (void *) endpoint);
    assert (fake);

    //  A malformed endpoint is refused
    assert (kvt_policy_remote_new ("nonsense", 5, 10) == NULL);

    kvt_policy_remote_t *remote = kvt_policy_remote_new (endpoint, 100, 250);
    assert (remote);
    uint64_t candidates [] = { 11, 12, 13, 14, 15 };
    uint64_t victims [8];

    //  Events queue, then go out in one message
    kvt_policy_remote_event (remote, KVT_POLICY_EVENT_INSERT, 0, 11, 0, 0);
    kvt_policy_remote_event (remote, KVT_POLICY_EVENT_INSERT, 0, 12, 11, 1);
    kvt_policy_remote_event (remote, KVT_POLICY_EVENT_ACCESS, 0, 11, 0, 0);
    assert (kvt_policy_remote_queued (remote) == 3);
    assert (kvt_policy_remote_flush (remote, 7) == 3);
    assert (kvt_policy_remote_queued (remote) == 0);
    assert (kvt_policy_remote_flush (remote, 7) == 0);

    //  The process chooses (MRU among candidates); queued events go first
    kvt_policy_remote_event (remote, KVT_POLICY_EVENT_EVICT, 0, 12, 0, 0);
    int rc = kvt_policy_remote_victims (remote, 0, 2, candidates, 5, victims, 8);
    assert (rc == 2);
    assert (victims [0] == 15 && victims [1] == 14);
    assert (s_fake_events (fake) == 4);
    //  It may answer fewer; never more than asked is returned
    assert (kvt_policy_remote_victims (remote, 0, 0, candidates, 5, victims, 8) == 0);

    //  Late: a timeout, then a back-off during which calls fail at once
    s_fake_mode (fake, 1);
    int64_t start = zclock_mono ();
    assert (kvt_policy_remote_victims (remote, 0, 1, candidates, 5, victims, 9) == -ETIMEDOUT);
    assert (zclock_mono () - start < 1000);
    assert (kvt_policy_remote_victims (remote, 0, 1, candidates, 5, victims, 9) == -ENOTCONN);
    kvt_policy_remote_event (remote, KVT_POLICY_EVENT_ACCESS, 0, 11, 0, 0);
    assert (kvt_policy_remote_flush (remote, 9) == -EAGAIN);
    //  After the back-off a fresh socket asks again; the late answer to the
    //  first question died with the old socket
    s_fake_mode (fake, 0);
    zclock_sleep (300);
    rc = kvt_policy_remote_victims (remote, 1, 1, candidates, 5, victims, 10);
    assert (rc == 1 && victims [0] == 15);
    assert (kvt_policy_remote_reconnects (remote) == 1);

    //  A duplicate answer is dropped as stale by the next question
    s_fake_mode (fake, 4);
    assert (kvt_policy_remote_victims (remote, 0, 1, candidates, 5, victims, 10) == 1);
    s_fake_mode (fake, 0);
    assert (kvt_policy_remote_stale (remote) == 0);
    rc = kvt_policy_remote_victims (remote, 0, 2, candidates, 5, victims, 10);
    assert (rc == 2 && victims [0] == 15 && victims [1] == 14);
    assert (kvt_policy_remote_stale (remote) == 1);

    //  Garbage and ERROR answers fail the call
    s_fake_mode (fake, 2);
    assert (kvt_policy_remote_victims (remote, 0, 1, candidates, 5, victims, 11) == -EBADMSG);
    zclock_sleep (300);
    s_fake_mode (fake, 3);
    assert (kvt_policy_remote_victims (remote, 0, 1, candidates, 5, victims, 12) == -EBADMSG);
    zclock_sleep (300);

    //  The process gone: calls fail fast, nothing blocks
    zactor_destroy (&fake);
    start = zclock_mono ();
    rc = kvt_policy_remote_victims (remote, 0, 1, candidates, 5, victims, 13);
    assert (rc == -EAGAIN || rc == -ETIMEDOUT);
    assert (zclock_mono () - start < 1000);
    kvt_policy_remote_destroy (&remote);
    kvt_policy_remote_destroy (&remote);
    //  @end
    if (verbose)
        printf ("(remote policy client) ");
    printf ("OK\n");
    return 0;
}
