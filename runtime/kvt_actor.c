/*  =========================================================================
    kvt_actor - the skeleton every actor shares: loop, inbox, calls, hand-overs

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_actor_int.h"

#define S_SWEEP_MS      50          //  How often call deadlines are checked
#define S_SERVE_ROUNDS  16          //  Rounds of hand-overs served after one callback

void
kvt_actor_endpoint (const char *run_dir, const char *name, bool ipc, char *endpoint, size_t size)
{
    if (ipc)
        snprintf (endpoint, size, "ipc://%s/%s.ipc", run_dir, name);
    else
        snprintf (endpoint, size, "inproc://%s/%s", run_dir, name);
}

//  --------------------------------------------------------------------------
//  Replies

static void
    s_direct_post (kvt_actor_t *self, kvt_actor_t *to, kvt_msg_t **msg_p, bool reply);

int
kvt_actor_reply (kvt_actor_t *self, kvt_msg_t **reply_p)
{
    kvt_actor_t *asker = (kvt_actor_t *) kvt_msg_direct (*reply_p);
    if (asker) {
        s_direct_post (self, asker, reply_p, true);
        return 0;
    }
    int rc = kvt_msg_send (reply_p, self->inbox);
    if (rc) {
        kvt_actor_count (self, "replies_undelivered", 1);
        kvt_log_warn ("%s: reply not delivered: %s", self->def->name, kvt_strerror (rc));
    }
    return 0;
}

int
kvt_actor_reply_error (kvt_actor_t *self, const kvt_msg_t *request, int code,
                       const char *detail)
{
    kvt_actor_count (self, "errors", 1);
    kvt_msg_t *reply = kvt_msg_error_new (request, code, "%s: %s", self->def->name,
                                          detail? detail: kvt_strerror (code));
    return kvt_actor_reply (self, &reply);
}

//  --------------------------------------------------------------------------
//  Calls to peers

int
kvt_actor_call (kvt_actor_t *self, const char *peer, kvt_msg_t **request_p,
                kvt_actor_reply_fn *fn, void *arg)
{
    return kvt_actor_call_timeout (self, peer, request_p, fn, arg,
                                   self->call_timeout_us / 1000);
}

//  Wait for the answer to 'call'.
static void
s_pending_add (kvt_actor_t *self, kvt_actor_pending_t call)
{
    if (self->pending_count == self->pending_room) {
        self->pending_room = self->pending_room? self->pending_room * 2: 32;
        self->pending = (kvt_actor_pending_t *) realloc (self->pending,
                                                 self->pending_room * sizeof (kvt_actor_pending_t));
        assert (self->pending);
    }
    self->pending [self->pending_count++] = call;
}

//  Same-thread delivery. Actors sharing a thread (a host and its guests,
//  kvt_actor_args_t) hand each other requests and replies as objects:
//  no encoding, no copy, no socket, where the scheduler's match of a
//  65536-block prefix spent 0.3-0.7 ms encoding, sending and decoding its
//  hashes before the index could start (issue #3). Everything else is as
//  over the sockets: the call is pending with its deadline, the request
//  is served from the loop, never inside the caller's handler (once the
//  callback that made the call ends, kvt_actor_turn_end), counted
//  in the same busy counters, and held while the callee answers a long
//  request in steps; a request's order is kept per asker.

//  The actor named 'name' on our thread, if any (not ourselves)
static kvt_actor_t *
s_thread_peer (kvt_actor_t *self, const char *name)
{
    kvt_actor_t *host = self->host? self->host: self;
    if (host != self && streq (host->def->name, name))
        return host;
    for (int k = 0; k < host->guest_count; k++)
        if (host->guests [k] != self && streq (host->guests [k]->def->name, name))
            return host->guests [k];
    return NULL;
}

static int
    s_direct_ready (zloop_t *loop, int timer_id, void *arg);

//  Arm 'self''s delivery at the next turn of the loop, if anything waits
//  that it may serve now
static void
s_direct_arm (kvt_actor_t *self)
{
    bool waiting = zlist_size (self->direct_replies) > 0
                || (zlist_size (self->direct_requests) > 0 && !self->step);
    if (waiting && self->direct_timer == -1)
        self->direct_timer = zloop_timer (self->loop, 0, 1, s_direct_ready, self);
}

//  Hand *msg_p (consumed) from 'self' to 'to', an actor of our thread. At
//  the thread's end nothing is handed over: the skeleton fails every open
//  call itself, and 'to' may be gone.
static void
s_direct_post (kvt_actor_t *self, kvt_actor_t *to, kvt_msg_t **msg_p, bool reply)
{
    if (self->ending) {             //  (A call made now is failed before it gets here)
        kvt_actor_count (self, "replies_undelivered", 1);
        kvt_msg_destroy (msg_p);
        return;
    }
    zlist_append (reply? to->direct_replies: to->direct_requests, *msg_p);
    *msg_p = NULL;
    s_direct_arm (to);
}

int
kvt_actor_call_timeout (kvt_actor_t *self, const char *peer, kvt_msg_t **request_p,
                        kvt_actor_reply_fn *fn, void *arg, int64_t timeout_ms)
{
    int index = -1;
    for (int k = 0; k < self->peer_count; k++)
        if (streq (self->def->peers [k], peer))
            index = k;
    if (index < 0) {
        kvt_msg_destroy (request_p);
        return -ENOENT;
    }
    uint64_t request_id = ++self->next_request_id;
    kvt_msg_set_request_id (*request_p, request_id);
    kvt_actor_pending_t call = { .request_id = request_id, .fn = fn, .arg = arg,
                         .msg_id = kvt_msg_id (*request_p),
                         .deadline_us = kvt_now_us () + timeout_ms * 1000, .peer = index };
    kvt_actor_t *near = s_thread_peer (self, peer);
    int rc;
    if (near && self->ending) {
        kvt_msg_destroy (request_p);    //  Failed with the other open calls
        rc = -ECANCELED;
    }
    else
    if (near) {
        kvt_msg_set_direct (*request_p, self);
        s_direct_post (self, near, request_p, false);
        kvt_actor_count (self, "calls_handed_over", 1);
        rc = 0;
    }
    else {
        kvt_msg_set_direct (*request_p, NULL);
        rc = kvt_msg_send (request_p, self->peers [index]);
    }
    if (rc) {   //  The call still completes, through the timeout sweep
        kvt_actor_count (self, "calls_unsent", 1);
        call.unsent = true;
    }
    s_pending_add (self, call);
    kvt_actor_count (self, "calls", 1);
    return 0;
}

//  Remove pending entry 'index' and return it.
static kvt_actor_pending_t
s_pending_take (kvt_actor_t *self, size_t index)
{
    kvt_actor_pending_t entry = self->pending [index];
    self->pending [index] = self->pending [--self->pending_count];
    return entry;
}

static void
    s_time_out_overdue (kvt_actor_t *self);

//  The index of the open call 'request_id', or pending_count if none
static size_t
s_pending_find (kvt_actor_t *self, uint64_t request_id)
{
    size_t index;
    for (index = 0; index < self->pending_count; index++)
        if (self->pending [index].request_id == request_id)
            break;
    return index;
}

//  An answer to one of our calls ('rc' its decoding's status); consumes it.
//  Returns its message id.
static int
s_reply_handle (kvt_actor_t *self, int rc, kvt_msg_t *reply)
{
    uint64_t request_id = reply? kvt_msg_request_id (reply): 0;
    int id = reply? kvt_msg_id (reply): KVT_MSG_INVALID;
    size_t index = s_pending_find (self, request_id);
    if (index < self->pending_count && self->pending [index].deadline_us <= kvt_now_us ()) {
        //  Its deadline passed before its answer was read: the call timed
        //  out, as when the sweep comes first (the loop runs its timers
        //  before its sockets). A hand-over served right after a long
        //  callback would otherwise beat the sweep. The answer is then a
        //  late one if the caller awaits it (kvt_actor_call_expect_late).
        s_time_out_overdue (self);
        index = s_pending_find (self, request_id);
    }
    if (index == self->pending_count) {
        kvt_actor_count (self, "replies_stale", 1);   //  Timed out earlier
        kvt_msg_destroy (&reply);
        return id;
    }
    if (rc == 0 && kvt_msg_is_partial (reply)
    &&  kvt_msg_answers (kvt_msg_id (reply), self->pending [index].msg_id)) {
        //  More answers follow: the call stays open. (A partial answer to
        //  a request that has none ends the call like any wrong reply.)
        kvt_actor_pending_t call = self->pending [index];
        if (call.fn)
            call.fn (self->self, 0, &reply, call.arg);
        kvt_msg_destroy (&reply);
        return id;
    }
    kvt_actor_pending_t call = s_pending_take (self, index);
    if (call.late)
        kvt_actor_count (self, "late_answers", 1);
    if (rc == 0 && kvt_msg_id (reply) == KVT_MSG_ERROR) {
        rc = (int) kvt_msg_i64 (reply, KVT_ERROR_CODE);
        //  -ETIMEDOUT tells a reply function that no answer came (and the
        //  callee may still act): a peer's answer that one of its own
        //  calls timed out is an answer, the callee is done
        if (rc == -ETIMEDOUT || rc == -ECANCELED)
            rc = KVT_ETIMEOUT_PEER;
    }
    if (rc == 0 || reply) {
        if (rc)
            kvt_actor_count (self, "calls_failed", 1);
        if (call.fn)
            call.fn (self->self, rc? (rc < 0? rc: -EPROTO): 0, &reply, call.arg);
    }
    kvt_msg_destroy (&reply);
    return id;
}

static int
s_peer_reply (kvt_actor_t *self, zsock_t *sock)
{
    kvt_msg_t *reply = NULL;
    int rc = kvt_msg_recv (sock, &reply);
    if (rc == -EINTR)
        return KVT_MSG_INVALID;     //  A signal; the loop polls again
    return s_reply_handle (self, rc, reply);
}

//  A reply from a peer, its handling counted in us_busy
static int
s_peer_ready (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void) loop;
    kvt_actor_t *self = (kvt_actor_t *) arg;
    int64_t start = kvt_now_us ();
    int id = s_peer_reply (self, sock);
    kvt_actor_turn_end (self, "reply_", kvt_msg_name (id), start);
    return 0;
}

//  Fail every call past its deadline with -ETIMEDOUT
static void
s_time_out_overdue (kvt_actor_t *self)
{
    int64_t now = kvt_now_us ();
    for (size_t index = 0; index < self->pending_count; ) {
        if (self->pending [index].deadline_us <= now) {
            kvt_actor_pending_t call = s_pending_take (self, index);
            kvt_actor_count (self, "calls_timed_out", 1);
            kvt_log_warn ("%s: call to %s timed out", self->def->name,
                          self->def->peers [call.peer]);
            kvt_msg_t *none = NULL;
            self->timed_out = call;
            self->telling_timeout = true;
            if (call.fn)
                call.fn (self->self, -ETIMEDOUT, &none, call.arg);
            self->telling_timeout = false;
        }
        else
            index++;
    }
}

static int
s_sweep_deadlines (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    kvt_actor_t *self = (kvt_actor_t *) arg;
    int64_t start = kvt_now_us ();
    s_time_out_overdue (self);
    kvt_actor_turn_end (self, "", "deadlines", start);
    return 0;
}

int
kvt_actor_call_expect_late (kvt_actor_t *self, kvt_actor_reply_fn *fn, void *arg,
                            int64_t late_ms)
{
    if (!self->telling_timeout)
        return -EINVAL;
    self->telling_timeout = false;  //  Once per timed-out call
    kvt_actor_pending_t call = self->timed_out;
    if (call.unsent)
        return -ENOTCONN;           //  Nothing was asked: nothing will come
    call.fn = fn;
    call.arg = arg;
    call.deadline_us = late_ms < 0? INT64_MAX: kvt_now_us () + late_ms * 1000;
    call.late = true;
    s_pending_add (self, call);     //  Past the sweep's index: not swept now
    kvt_actor_count (self, "calls_awaited_late", 1);
    return 0;
}

//  --------------------------------------------------------------------------
//  Inbox

static void
s_reply_stats (kvt_actor_t *self, kvt_msg_t *request)
{
    kvt_msg_t *reply = kvt_msg_reply_new (request, KVT_MSG_STATS_OK);
    kvt_actor_add_counters (self, reply, KVT_STATS_OK_COUNTERS);
    kvt_actor_reply (self, &reply);
}

//  A request ('rc' its decoding's status): served, or answered ERROR;
//  consumes it unless the handler kept it. Returns its message id.
static int
s_request_handle (kvt_actor_t *self, int rc, kvt_msg_t *msg)
{
    if (rc) {
        kvt_actor_count (self, "rejected", 1);
        kvt_log_warn ("%s: undecodable request: %s", self->def->name, kvt_strerror (rc));
        kvt_actor_reply_error (self, msg, rc, "undecodable request");
        kvt_msg_destroy (&msg);
        return KVT_MSG_INVALID;
    }
    int id = kvt_msg_id (msg);
    kvt_actor_handler_fn *handler = self->def->handlers [id];
    kvt_actor_count (self, "requests", 1);
    if (!self->started)
        rc = -EAGAIN;               //  START failed or has not run
    else
    if (handler)
        rc = handler (self->self, &msg);
    else
    if (id == KVT_MSG_STATS) {
        s_reply_stats (self, msg);
        rc = 0;
    }
    else {
        kvt_actor_count (self, "rejected", 1);
        rc = -ENOTSUP;
    }
    if (rc && msg) {
        char detail [96];
        snprintf (detail, sizeof (detail), "%s %s",
                  kvt_msg_name (id), rc == -ENOTSUP? "is not handled here": "failed");
        kvt_actor_reply_error (self, msg, rc, detail);
    }
    kvt_msg_destroy (&msg);
    return id;
}

static int
s_request (kvt_actor_t *self, zsock_t *inbox)
{
    kvt_msg_t *msg = NULL;
    int rc = kvt_msg_recv (inbox, &msg);
    if (rc == -EINTR)
        return KVT_MSG_INVALID;     //  A signal; only $TERM stops an actor
    return s_request_handle (self, rc, msg);
}

//  Serve what actors of our thread handed us, the answers first (each may
//  let a call's caller go on), then the requests unless a long request
//  holds them (s_step_ready re-arms at its end)
static void
s_direct_serve (kvt_actor_t *self)
{
    kvt_msg_t *msg;
    while ((msg = (kvt_msg_t *) zlist_pop (self->direct_replies))) {
        int64_t start = kvt_now_us ();
        int id = s_reply_handle (self, 0, msg);
        kvt_actor_busy_add (self, "reply_", kvt_msg_name (id), start);
    }
    while (!self->step && (msg = (kvt_msg_t *) zlist_pop (self->direct_requests))) {
        int64_t start = kvt_now_us ();
        int id = s_request_handle (self, 0, msg);
        kvt_actor_busy_add (self, "", kvt_msg_name (id), start);
    }
}

//  Serve now, after the callback that made them, the hand-overs waiting
//  on our thread, and those that serving them makes, up to S_SERVE_ROUNDS
//  rounds (then the loop's turns take over, so a ping-pong between two
//  actors cannot starve the sockets). A turn of the loop was the cost of
//  each hop: ~0.1 ms after the scheduler read a 1M-token GENERATE, on the
//  H200 and on a 2-core VM (tools/bench/RESULTS.md, session 16). Callbacks
//  of this serving do not serve again: the rounds pick up what they hand.
static void
s_direct_serve_now (kvt_actor_t *self)
{
    kvt_actor_t *host = self->host? self->host: self;
    if (host->serving || self->ending)
        return;
    host->serving = true;
    for (int round = 0; round < S_SERVE_ROUNDS; round++) {
        bool served = false;
        for (int k = -1; k < host->guest_count; k++) {
            kvt_actor_t *actor = k < 0? host: host->guests [k];
            if (actor->direct_timer == -1)
                continue;           //  Nothing it may serve now
            zloop_timer_end (actor->loop, actor->direct_timer);
            actor->direct_timer = -1;
            s_direct_serve (actor);
            served = true;
        }
        if (!served)
            break;
    }
    host->serving = false;
}

//  Our zero-delay timer: what was handed to us outside any callback that
//  ends with kvt_actor_turn_end, or past S_SERVE_ROUNDS
static int
s_direct_ready (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    kvt_actor_t *self = (kvt_actor_t *) arg;
    if (timer_id != self->direct_timer)
        return 0;                   //  Ended in this pass, served already
    self->direct_timer = -1;
    s_direct_serve (self);
    s_direct_serve_now (self);      //  What serving it handed on
    return 0;
}

void
kvt_actor_turn_end (kvt_actor_t *self, const char *kind, const char *name, int64_t start)
{
    kvt_actor_busy_add (self, kind, name, start);
    s_direct_serve_now (self);
}

static int
s_inbox_ready (zloop_t *loop, zsock_t *inbox, void *arg)
{
    (void) loop;
    kvt_actor_t *self = (kvt_actor_t *) arg;
    int64_t start = kvt_now_us ();
    int id = s_request (self, inbox);
    kvt_actor_turn_end (self, "", kvt_msg_name (id), start);
    return 0;
}

//  --------------------------------------------------------------------------
//  A long request in steps (kvt_actor_continue)

//  Each step is a reader's turn: the loop serves every other ready socket
//  once between two steps. (A zero-delay zloop timer would not do: a
//  timer set by a timer handler that is due at once runs in the same
//  pass, so all the steps would run back to back.)
static int
s_step_ready (zloop_t *loop, zsock_t *wake, void *arg)
{
    kvt_actor_t *self = (kvt_actor_t *) arg;
    zframe_t *frame = zframe_recv (wake);
    zframe_destroy (&frame);
    if (!self->step)
        return 0;
    int64_t start = kvt_now_us ();
    if (self->step (self->self, self->step_arg, false) > 0)
        zsock_signal (self->wake_out, 0);
    else {
        self->step = NULL;
        zloop_reader (loop, self->inbox, s_inbox_ready, self);
        s_direct_arm (self);        //  Requests handed over meanwhile
    }
    kvt_actor_turn_end (self, "steps", "", start);
    return 0;
}

int
kvt_actor_continue (kvt_actor_t *self, kvt_actor_step_fn *fn, void *arg)
{
    if (self->step)
        return -EBUSY;
    if (!self->wake_in) {
        char endpoint [96];
        //  (A counter, not our address: a freed actor's endpoint may
        //  still be bound when a new one lands at the same address)
        static uint64_t s_wakes;
        snprintf (endpoint, sizeof (endpoint), "inproc://kvt-step-%" PRIu64,
                  __atomic_add_fetch (&s_wakes, 1, __ATOMIC_RELAXED));
        self->wake_in = zsock_new (ZMQ_PAIR);
        self->wake_out = zsock_new (ZMQ_PAIR);
        assert (self->wake_in && self->wake_out);
        if (zsock_bind (self->wake_in, "%s", endpoint) < 0
        ||  zsock_connect (self->wake_out, "%s", endpoint) != 0) {
            zsock_destroy (&self->wake_out);
            zsock_destroy (&self->wake_in);
            return -EIO;
        }
        zloop_reader (self->loop, self->wake_in, s_step_ready, self);
    }
    self->step = fn;
    self->step_arg = arg;
    zloop_reader_end (self->loop, self->inbox);
    zsock_signal (self->wake_out, 0);
    kvt_actor_count (self, "requests_in_steps", 1);
    return 0;
}

bool
kvt_actor_stepping (kvt_actor_t *self)
{
    return self->step != NULL;
}

//  --------------------------------------------------------------------------
//  START: bind the inbox, connect to peers, then the definition's start.

static int
s_start (kvt_actor_t *self)
{
    char endpoint [512];
    self->inbox = zsock_new (ZMQ_ROUTER);
    assert (self->inbox);
    zsock_set_router_mandatory (self->inbox, 1);    //  Undeliverable replies are counted
    zsock_set_sndtimeo (self->inbox, 1000);
    kvt_actor_endpoint (self->run_dir, self->def->name, false, endpoint, sizeof (endpoint));
    if (zsock_bind (self->inbox, "%s", endpoint) < 0) {
        kvt_log_error ("%s: cannot bind %s: %s", self->def->name, endpoint, zmq_strerror (errno));
        return -errno;
    }
    kvt_actor_endpoint (self->run_dir, self->def->name, true, endpoint, sizeof (endpoint));
    if (zsock_bind (self->inbox, "%s", endpoint) < 0) {
        kvt_log_error ("%s: cannot bind %s: %s", self->def->name, endpoint, zmq_strerror (errno));
        return -errno;
    }
    zloop_reader (self->loop, self->inbox, s_inbox_ready, self);
    for (int k = 0; self->def->peers && self->def->peers [k]; k++) {
        assert (k < KVT_ACTOR_MAX_PEERS);
        const char *peer = self->def->peers [k];
        char mode_key [64];
        snprintf (mode_key, sizeof (mode_key), "%s/mode", peer);
        //  A peer in a thread of the supervisor is in the supervisor's
        //  process; a guest ("with:HOST") is where its host is
        const char *peer_mode = kvt_config_str (self->config, mode_key);
        if (strncmp (peer_mode, "with:", 5) == 0) {
            snprintf (mode_key, sizeof (mode_key), "%s/mode", peer_mode + 5);
            peer_mode = kvt_config_str (self->config, mode_key);
        }
        bool peer_is_thread = streq (peer_mode, "thread");
        bool use_ipc = self->in_process || !peer_is_thread;
        kvt_actor_endpoint (self->run_dir, peer, use_ipc, endpoint, sizeof (endpoint));
        self->peers [k] = zsock_new (ZMQ_DEALER);
        assert (self->peers [k]);
        zsock_set_sndtimeo (self->peers [k], 1000);
        if (zsock_connect (self->peers [k], "%s", endpoint) < 0) {
            kvt_log_error ("%s: cannot connect to %s at %s", self->def->name, peer, endpoint);
            return -errno;
        }
        zloop_reader (self->loop, self->peers [k], s_peer_ready, self);
        self->peer_count = k + 1;
    }
    zloop_timer (self->loop, S_SWEEP_MS, 0, s_sweep_deadlines, self);
    int rc = self->def->start? self->def->start (self->self): 0;
    if (rc)
        kvt_log_error ("%s: START failed: %s", self->def->name, kvt_strerror (rc));
    self->started = rc == 0;
    return rc;
}

static int
s_pipe_ready (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void) loop;
    kvt_actor_t *self = (kvt_actor_t *) arg;
    zmsg_t *request = zmsg_recv (pipe);
    if (!request)
        return -1;                  //  Interrupted
    char *command = zmsg_popstr (request);
    assert (command);
    int result = 0;
    if (streq (command, "START")) {
        //  Guests first: the host usually calls them (the scheduler hosts
        //  the prefix index)
        int rc = 0;
        for (int k = 0; k < self->guest_count && rc == 0; k++)
            rc = s_start (self->guests [k]);
        if (rc == 0)
            rc = s_start (self);
        zsock_signal (pipe, rc == 0? 0: 1);
    }
    else
    if (streq (command, "$TERM"))
        result = -1;
    else {
        kvt_log_error ("%s: invalid pipe command %s", self->def->name, command);
        assert (false);
    }
    zstr_free (&command);
    zmsg_destroy (&request);
    return result;
}

//  --------------------------------------------------------------------------
//  The zactor body

//  Create one actor of definition 'def' on 'loop' (shared by a host and
//  its guests). Cannot fail.
static kvt_actor_t *
s_actor_new (const kvt_actor_def_t *def, const kvt_actor_args_t *args, zloop_t *loop,
             zsock_t *pipe)
{
    kvt_actor_t *self = (kvt_actor_t *) kvt_zmalloc (sizeof (kvt_actor_t));
    self->def = def;
    self->pipe = pipe;
    self->config = kvt_config_dup (args->config);
    self->run_dir = strdup (args->run_dir);
    self->in_process = args->in_process;
    self->call_timeout_us = kvt_config_int (self->config, "runtime/call_timeout_ms") * 1000;
    self->loop = loop;
    self->direct_requests = zlist_new ();
    self->direct_replies = zlist_new ();
    self->direct_timer = -1;
    self->self = def->create (self, self->config);
    return self;
}

static void
s_actor_destroy (kvt_actor_t **self_p)
{
    kvt_actor_t *self = *self_p;
    //  A long request cut short, then what the definition waits on (its
    //  own, then every outstanding call) failed until nothing is left, so
    //  that it can free its closures
    if (self->step)
        self->step (self->self, self->step_arg, true);
    for (;;) {
        size_t failed = self->def->stop? self->def->stop (self->self): 0;
        for (; self->pending_count; failed++) {
            kvt_actor_pending_t call = s_pending_take (self, 0);
            kvt_msg_t *none = NULL;
            if (call.fn)
                call.fn (self->self, -ECANCELED, &none, call.arg);
        }
        if (failed == 0)
            break;
    }
    self->def->destroy (&self->self);
    kvt_msg_t *msg;
    while ((msg = (kvt_msg_t *) zlist_pop (self->direct_requests)))
        kvt_msg_destroy (&msg);
    while ((msg = (kvt_msg_t *) zlist_pop (self->direct_replies)))
        kvt_msg_destroy (&msg);
    zlist_destroy (&self->direct_requests);
    zlist_destroy (&self->direct_replies);
    for (int k = 0; k < self->peer_count; k++)
        zsock_destroy (&self->peers [k]);
    zsock_destroy (&self->inbox);
    zsock_destroy (&self->wake_out);
    zsock_destroy (&self->wake_in);
    free (self->pending);
    free (self->run_dir);
    kvt_config_destroy (&self->config);
    free (self);
    *self_p = NULL;
}

void
kvt_actor_main (zsock_t *pipe, void *args_ptr)
{
    kvt_actor_args_t *args = (kvt_actor_args_t *) args_ptr;
    //  The thread carries the actor's name (top -H, perf, gdb), cut to
    //  the kernel's 15 characters
    char name [16];
    snprintf (name, sizeof (name), "%s", args->def->name);
    pthread_setname_np (pthread_self (), name);
    zloop_t *loop = zloop_new ();
    zloop_set_nonstop (loop, true);             //  Only $TERM stops us
    kvt_actor_t *self = s_actor_new (args->def, args, loop, pipe);
    for (int k = 0; args->guests && args->guests [k]; k++) {
        assert (k < KVT_ACTOR_MAX_GUESTS);
        self->guests [self->guest_count] = s_actor_new (args->guests [k], args, loop, pipe);
        self->guests [self->guest_count++]->host = self;
    }
    zloop_reader (loop, pipe, s_pipe_ready, self);
    zsock_signal (pipe, 0);                     //  args is invalid from here on
    zloop_start (loop);

    //  Nothing is handed over between the thread's actors from here on:
    //  each one fails its own open calls as it goes
    self->ending = true;
    for (int k = 0; k < self->guest_count; k++)
        self->guests [k]->ending = true;
    //  The host goes first: it calls its guests, not the other way round
    kvt_actor_t *guests [KVT_ACTOR_MAX_GUESTS];
    int guest_count = self->guest_count;
    memcpy (guests, self->guests, sizeof (guests));
    s_actor_destroy (&self);
    for (int k = 0; k < guest_count; k++)
        s_actor_destroy (&guests [k]);
    zloop_destroy (&loop);
}

//  Whether one of the actor's own sockets has a message to read
static bool
s_own_input_waiting (kvt_actor_t *self)
{
    if (self->inbox && (zsock_events (self->inbox) & ZMQ_POLLIN))
        return true;
    if (zlist_size (self->direct_replies) > 0
    ||  (zlist_size (self->direct_requests) > 0 && !self->step))
        return true;
    for (int k = 0; k < self->peer_count; k++)
        if (self->peers [k] && (zsock_events (self->peers [k]) & ZMQ_POLLIN))
            return true;
    return false;
}

bool
kvt_actor_input_waiting (kvt_actor_t *self)
{
    kvt_actor_t *host = self->host? self->host: self;
    if (s_own_input_waiting (host))
        return true;
    for (int k = 0; k < host->guest_count; k++)
        if (s_own_input_waiting (host->guests [k]))
            return true;
    return false;
}

zloop_t *kvt_actor_loop (kvt_actor_t *self) { return self->loop; }
const char *kvt_actor_name (kvt_actor_t *self) { return self->def->name; }
const char *kvt_actor_run_dir (kvt_actor_t *self) { return self->run_dir; }
const kvt_config_t *kvt_actor_config (kvt_actor_t *self) { return self->config; }
