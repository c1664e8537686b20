/*  =========================================================================
    kvt_actor - the skeleton every actor shares: loop, inbox, calls, stats

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    An actor is a definition (kvt_actor_def_t): a constructor that cannot
    fail, a START that can, a destructor, and a table of handlers indexed
    by message id. kvt_actor_main runs any definition as a CZMQ actor:
    its own zloop, a ROUTER inbox bound on inproc:// and ipc://, one
    DEALER per peer it calls, and the $TERM handshake. The same code runs
    in a thread of the supervisor or alone in an actor process, or as a
    guest in another actor's thread (`<actor>/mode = with:HOST`): guest and
    host keep their own state and still talk only through messages, but
    share one loop, so a call between them costs no thread wake-up, and
    its request and answer are handed over as objects, never encoded, and
    served as soon as the callback that made them ends (kvt_actor_turn_end;
    kvt_actor.c). A guest goes where its host goes, into an actor process
    too. That is for the short hops of a request's path (the scheduler
    asking the prefix index, migration asking the tiers for slots); never
    host an actor whose handlers run long.
@discuss
    Requests to peers are asynchronous: kvt_actor_call sends, and the
    callback runs in this actor's loop when the reply (or a timeout)
    comes, so an actor never blocks waiting for another.
    Bad input on the inbox is answered with ERROR and counted ("rejected");
    a handler that fails without taking the message gets ERROR sent for it.
    Every request gets exactly one reply. Built-in: STATS on the inbox
    answers with this actor's counters.
    Pipe commands: START (replies with a signal: 0 ok, 1 failed), $TERM.
@end
*/

#ifndef KVT_ACTOR_H_INCLUDED
#define KVT_ACTOR_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include "kvt_msg.h"
#include "kvt_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_actor_t kvt_actor_t;

//  A request handler: answers with kvt_actor_reply now or later (keeping
//  the request with *msg_p = NULL). Returns 0, or a negative code for
//  which the skeleton sends ERROR if the handler left the message.
typedef int (kvt_actor_handler_fn) (void *self, kvt_msg_t **msg_p);

//  The answer to kvt_actor_call: rc 0 with the _OK reply, the negative
//  code of an ERROR reply (reply given; a callee's -ETIMEDOUT or
//  -ECANCELED comes as KVT_ETIMEOUT_PEER), or -ETIMEDOUT: no answer came
//  within the call's timeout (reply NULL; the callee may still act). The
//  callback may take the reply (*reply_p = NULL); else it is destroyed.
//  A request answered in parts (kvt_msg_is_partial) calls it with rc 0 for
//  each part, then once more with the final answer (or a failure): only
//  that last call ends the call.
typedef void (kvt_actor_reply_fn) (void *self, int rc, kvt_msg_t **reply_p, void *arg);

typedef struct {
    const char *name;               //  Config section and endpoint name
    void *(*create) (kvt_actor_t *actor, const kvt_config_t *config);   //  Cannot fail
    int (*start) (void *self);      //  Fallible: memory, files, devices
    void (*destroy) (void **self_p);
    //  Optional, at the actor's end before destroy: fail what the state
    //  waits on that is not a call (a copy on a device stream), so that
    //  the closures it holds are freed; returns how many it failed. It is
    //  called again after the open calls fail with -ECANCELED, until
    //  neither finds anything: a failed copy's continuation may make a
    //  call, and a cancelled call's callback may queue a copy.
    size_t (*stop) (void *self);
    const char *const *peers;       //  Actors this one calls, NULL-terminated
    kvt_actor_handler_fn *handlers [KVT_MSG_COUNT];
} kvt_actor_def_t;

typedef struct {
    const kvt_actor_def_t *def;     //  What to run
    const kvt_config_t *config;     //  Copied before the handshake
    const char *run_dir;            //  Endpoint folder, copied before the handshake
    bool in_process;                //  Running alone in an actor process?
    const kvt_actor_def_t *const *guests;   //  Run in the same thread, or NULL
} kvt_actor_args_t;

//  The zactor body: zactor_new (kvt_actor_main, &args).
void
    kvt_actor_main (zsock_t *pipe, void *args);

//  Endpoints of actor 'name': inproc (same process) and ipc (any process).
void
    kvt_actor_endpoint (const char *run_dir, const char *name, bool ipc,
                        char *endpoint, size_t size);

//  Send a reply on the inbox; consumes it. A reply that cannot be
//  delivered (the asker is gone) is counted, not reported: returns 0.
int
    kvt_actor_reply (kvt_actor_t *self, kvt_msg_t **reply_p);

//  Reply ERROR to 'request' (borrowed) with code and detail.
int
    kvt_actor_reply_error (kvt_actor_t *self, const kvt_msg_t *request, int code,
                           const char *detail);

//  Send 'request' (consumed) to peer 'peer' and call 'fn' with the answer
//  (fn NULL: nobody waits for it; failures are only counted).
//  Returns 0, or -ENOENT if 'peer' is not among the definition's peers (fn
//  is then not called).
int
    kvt_actor_call (kvt_actor_t *self, const char *peer, kvt_msg_t **request_p,
                    kvt_actor_reply_fn *fn, void *arg);

//  As kvt_actor_call, with its own timeout instead of runtime/call_timeout_ms.
int
    kvt_actor_call_timeout (kvt_actor_t *self, const char *peer, kvt_msg_t **request_p,
                            kvt_actor_reply_fn *fn, void *arg, int64_t timeout_ms);

//  From a reply function told -ETIMEDOUT: wait for that call's answer
//  after all, up to 'late_ms' more (< 0: until it comes), and give it to
//  'fn' with 'arg' (or -ETIMEDOUT again, or -ECANCELED when the actor ends
//  first). For a caller that must undo or finish what the callee did late
//  (kvt_scheduler_jobs.c: a promotion that outlived its call). Counters:
//  calls_awaited_late, late_answers (those that came). Returns 0;
//  -ENOTCONN when the request was never sent (nothing will come: release
//  now); -EINVAL when not called from such a reply function, or a second
//  time for one call.
#define KVT_ACTOR_UNTIL_ANSWERED (-1)   //  late_ms: no deadline but the actor's end
int
    kvt_actor_call_expect_late (kvt_actor_t *self, kvt_actor_reply_fn *fn, void *arg,
                                int64_t late_ms);

//  A long request's next step (kvt_actor_continue): returns > 0 to be
//  called again at the next turn of the loop, 0 when done. 'cancel': the
//  actor is ending, free what the step holds and do nothing else.
typedef int (kvt_actor_step_fn) (void *self, void *arg, bool cancel);

//  From a handler that kept its request: hold this actor's inbox (no
//  request of any peer is served) and call 'fn' with 'arg' at the next
//  turn of the loop, and at each turn after while it returns > 0; then
//  serve the inbox again. The actors sharing the thread run between the
//  steps, so a long request can answer in parts that its asker takes up
//  at once (prefix_index: IDX_MATCH_PARTS with the index a guest of the
//  scheduler), and it stays atomic for this actor's state. Returns 0,
//  -EBUSY if a step is already held, or -EIO if the wake-up socket pair
//  cannot be made (then nothing is held: answer at once).
int
    kvt_actor_continue (kvt_actor_t *self, kvt_actor_step_fn *fn, void *arg);

//  True while a request runs in steps (kvt_actor_continue), inbox held.
bool
    kvt_actor_stepping (kvt_actor_t *self);

//  Add 'delta' to a named counter reported by STATS.
void
    kvt_actor_count (kvt_actor_t *self, const char *counter, uint64_t delta);

//  End one callback of the actor's loop (a socket read, a timer, a step,
//  a completion): count the time since 'start_us' (kvt_now_us) as the
//  loop's own work, in us_busy and in us_<kind><name> (name NULL:
//  "other"), then serve at once what the callback handed to actors of
//  this thread (a call to a guest, a guest's answer) instead of at the
//  loop's next turn. The runtime ends its sockets' requests (kind ""),
//  replies ("reply_") and steps this way; an actor ends each callback of
//  its own the same way, as its last statement. 'kind' and 'name' must be
//  static strings (literals, kvt_msg_name): the counter is remembered by
//  their addresses. A span of 1 ms or more is also counted in
//  long_busy_<kind><name>, its length kept in us_long_busy_last and its
//  end marked at_long_busy_end (what held a thread, and when).
void
    kvt_actor_turn_end (kvt_actor_t *self, const char *kind, const char *name,
                        int64_t start_us);

//  Set a named gauge reported by STATS.
void
    kvt_actor_gauge (kvt_actor_t *self, const char *gauge, uint64_t value);

//  Note when 'event' last happened: gauge 'event' (named "at_<what>") set
//  to kvt_now_us (). Actors of one process share the clock, so a bench
//  lines the marks of several actors up into one request's timeline
//  (kvtier bench host --verbose), where the GPU machine has no profiler.
void
    kvt_actor_mark (kvt_actor_t *self, const char *event);

//  Read a counter (0 if never counted).
uint64_t
    kvt_actor_counter (kvt_actor_t *self, const char *counter);

//  Add every counter, each name prefixed with "<actor>.", to a map field.
void
    kvt_actor_add_counters (kvt_actor_t *self, kvt_msg_t *msg, int field);

//  Whether a request or an answer waits to be read on this thread: in the
//  inbox or a peer socket of the actor, its host or their guests (not
//  sockets an actor made itself, such as the scheduler's front door).
//  Deferrable work in a timer of the loop yields to it: zloop runs due
//  timers before it reads the sockets of the same turn.
bool
    kvt_actor_input_waiting (kvt_actor_t *self);

zloop_t *
    kvt_actor_loop (kvt_actor_t *self);
const char *
    kvt_actor_name (kvt_actor_t *self);
const char *
    kvt_actor_run_dir (kvt_actor_t *self);
const kvt_config_t *
    kvt_actor_config (kvt_actor_t *self);

#ifdef __cplusplus
}
#endif
#endif
