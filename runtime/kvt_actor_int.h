/*  =========================================================================
    kvt_actor_int - the actor skeleton's state, shared by its source files
    (kvt_actor.c: loop, inbox, calls; kvt_actor_counters.c: STATS)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_ACTOR_INT_H_INCLUDED
#define KVT_ACTOR_INT_H_INCLUDED

#include "kvt_classes.h"

#define KVT_ACTOR_MAX_PEERS     8       //  Peers one actor may call
#define KVT_ACTOR_MAX_COUNTERS  128     //  Distinct counters one actor reports
#define KVT_ACTOR_BUSY_MEMO     128     //  Entries of the busy counters' memo (a power of 2)
#define KVT_ACTOR_MAX_GUESTS    4       //  Actors one thread may host beside its own
#define KVT_ACTOR_LONG_BUSY_US  1000    //  Busy spans this long are named (long_busy_*)

//  A call awaiting its answer
typedef struct {
    uint64_t request_id;            //  Our id for the call
    kvt_actor_reply_fn *fn;         //  Who gets the answer
    void *arg;                      //  Its argument
    int64_t deadline_us;            //  When to give up
    int peer;                       //  Index in peers []
    int msg_id;                     //  The request's message id (which parts answer it)
    bool late;                      //  Timed out once, its answer still awaited
    bool unsent;                    //  The request never left: no answer will come
} kvt_actor_pending_t;

//  A named counter or gauge, reported by STATS
typedef struct {
    char name [48];                 //  Counter name
    uint64_t value;                 //  Its value
} kvt_actor_counter_t;

//  One actor: a definition's state and the skeleton's, on a loop it owns
//  or shares with its host (a guest, "with:HOST")
struct _kvt_actor_t {
    const kvt_actor_def_t *def;     //  What this actor is
    void *self;                     //  The definition's state
    zsock_t *pipe;                  //  Control pipe from our owner
    zloop_t *loop;                  //  Reactor driving this actor
    zsock_t *inbox;                 //  ROUTER for requests
    kvt_config_t *config;           //  Own copy
    char *run_dir;                  //  Own copy
    bool in_process;                //  Alone in an actor process?
    zsock_t *peers [KVT_ACTOR_MAX_PEERS];   //  DEALER per peer, same order as def->peers
    int peer_count;                 //  Entries in peers
    kvt_actor_pending_t *pending;           //  Calls awaiting a reply
    size_t pending_count;           //  Entries used
    size_t pending_room;            //  Entries allocated
    kvt_actor_pending_t timed_out;          //  The call whose -ETIMEDOUT is being told
    bool telling_timeout;           //  timed_out is valid (kvt_actor_call_expect_late)
    uint64_t next_request_id;       //  For calls we make
    int64_t call_timeout_us;        //  From runtime/call_timeout_ms
    kvt_actor_counter_t counters [KVT_ACTOR_MAX_COUNTERS];
    int counter_count;              //  Entries used
    //  kvt_actor_busy_add's counters by the address of their names'
    //  parts (message names and kinds are static strings): no name
    //  search and no formatting for each message
    struct {
        const char *kind, *name;
        kvt_actor_counter_t *counter;
    } busy_memo [KVT_ACTOR_BUSY_MEMO];
    kvt_actor_counter_t *busy;              //  us_busy, once counted
    bool started;                   //  START succeeded?
    kvt_actor_t *guests [KVT_ACTOR_MAX_GUESTS];  //  Actors sharing our thread and loop
    int guest_count;                //  Entries in guests
    kvt_actor_t *host;              //  A guest's host (whose thread and loop it shares)
    kvt_actor_step_fn *step;        //  A long request's next step, inbox held (or NULL)
    void *step_arg;                 //  Its argument
    zsock_t *wake_in, *wake_out;    //  A pair that wakes the loop for each step
    //  Same-thread delivery (s_direct_post): what actors of our thread
    //  handed us as objects, in the order they came
    zlist_t *direct_requests;       //  kvt_msg_t, held like the inbox during steps
    zlist_t *direct_replies;        //  kvt_msg_t, answers to our calls
    int direct_timer;               //  The zero-delay timer that serves them, or -1
    bool ending;                    //  The thread's loop ended: nothing is handed over
    bool serving;                   //  (Host) serving hand-overs now (s_direct_serve_now)
};

//  Count the time since 'start' as the loop's own work of 'self' (the
//  first half of kvt_actor_turn_end; kvt_actor_counters.c)
void
    kvt_actor_busy_add (kvt_actor_t *self, const char *kind, const char *name, int64_t start);

#endif
