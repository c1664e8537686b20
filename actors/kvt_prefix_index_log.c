/*  =========================================================================
    kvt_prefix_index_log - local policies' events, applied after the answer

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The prefix index's log of policy events (see the @discuss of
    kvt_prefix_index.c and the comment below): kvt_prefix_index_policy.c
    hands it every event a local policy learns from, and asks it to
    apply them all before a decision.
@end
*/

#include "kvt_prefix_index_int.h"

#define S_LOG_MAX (1 << 18)         //  Calls waiting beyond this: each new event makes
#define S_CATCH_UP_CALLS 4          //  this many of the oldest first
#define S_CHUNK_EVENTS 4096         //  Events per chunk of the log (256 KiB)
#define S_SPARE_CHUNKS 64           //  Chunks a drained log keeps for the next burst
#define S_APPLY_NOW 512             //  Policy calls waiting at a request's end made before
                                    //  its answer (a small request's, as they came)
#define S_FIRST_SLICE_MS 2          //  The first slice waits 1-2 ms (zloop counts whole ms)
#define S_YIELD_SLICES 8            //  A slice yields to waiting messages for at most this
                                    //  many slices' time since the last one ran
#define S_BLOCKS_PER_CALL 16        //  A request's blocks built for its policy in the time
                                    //  of one call (its begin's work counts as those calls)

//  The policy log (issue #3). Each event costs a local policy a few hash
//  map operations: the IDX_MOVE of a 16384-block promotion spent ~9 ms of
//  the H100 host's time in them, and since the index shares the front
//  door's thread (prefix_index/mode = with:scheduler), the promotion's
//  answer to the scheduler waited behind them. So a local policy's events
//  wait in a log, in the order they happened, each holding what the policy
//  would have been told at that moment. At the end of an index request
//  that leaves at most S_APPLY_NOW policy calls waiting, they are made
//  before its answer, as they always were; more are made after the
//  answer: a slice of at most prefix_index/policy_slice_us at a time
//  (a large request's accesses over several slices), from a zero-delay
//  timer, so the loop serves its sockets in between (0: no slices,
//  events wait for the next decision; tests). The first slice waits
//  S_FIRST_SLICE_MS: zloop runs due timers before the sockets of each
//  turn, so a zero-delay slice would hold the answer's own sequel (the
//  requester's next step on this thread: MIG_PROMOTE after a match, the
//  promotion's answer after its IDX_MOVE) for a whole slice (issue #3). Past S_LOG_MAX
//  waiting calls, each new event first makes S_CATCH_UP_CALLS of the
//  oldest: the log shrinks as it is fed, never in one burst (half of it
//  at once held an IDX_MOVE for 5 ms, issue #3). Before a policy is
//  asked for victims the whole log is applied (a long one a slice a turn
//  first: kvt_prefix_index_log_long, _slice), and during that call
//  events apply at once: the policy sees the same calls in the same order
//  as if each had been made when its event happened (policy_would_decline
//  is counted when the admit is made). Counters: policy_calls_deferred
//  (calls left to the slices), policy_log_overflows, policy_catch_up_steps (a
//  request's begin left to the policy's catch_up), policy_decision_slices
//  (slices a held victims call applied). A remote policy's events are
//  queued and batched by kvt_policy_remote already.

typedef enum { S_INSERT, S_EVICT, S_REQUEST } s_kind_t;

//  One event a tier's policy has not been told yet. A request's fields and
//  an insert's block share their room: a large IDX_MOVE logs two events a
//  block, so each event is one 64-byte line, not two.
typedef struct {
    uint8_t kind;                   //  s_kind_t
    uint8_t tier;                   //  The tier whose policy hears it (S_REQUEST: the GPU)
    union {
        kvt_policy_block_t block;   //  S_INSERT: the block; S_EVICT: its id
        struct {
            uint64_t *ids;          //  S_REQUEST: the request's block hashes (owned)
            kvt_prefix_index_hit_t *hit;    //  S_REQUEST: per cached block, what the match
                                            //  saw (owned)
            kvt_policy_block_t *blocks;     //  S_REQUEST: built at begin_request (the
                                            //  log's array)
            int64_t now;            //  S_REQUEST: the logical clock it began at
            uint32_t count;         //  S_REQUEST: entries in ids
            uint32_t hits;          //  S_REQUEST: entries in hit
            uint32_t built;         //  S_REQUEST: entries of 'blocks' filled in so far
            uint32_t told;          //  S_REQUEST: accesses told so far
            bool begun;             //  S_REQUEST: begin_request told
            bool ended;             //  S_REQUEST: end_request told
            bool caught_up;         //  S_REQUEST: the policy's catch_up has returned false
                                    //  (since begin_request, then since end_request)
        };
    };
} s_event_t;
_Static_assert (sizeof (s_event_t) <= 64, "a policy log event is one cache line");

//  The log is a queue of fixed chunks, as libzmq's ypipe: a burst of
//  events (a 65536-block promotion logs ~200000) never moves the events
//  already waiting, where one growing array copied them at each doubling
//  and slid them down when full (milliseconds inside an IDX_MOVE on the
//  H200's host, issue #3), and a drained chunk is kept for the next
//  burst, its pages already faulted in.
typedef struct s_chunk_t {
    struct s_chunk_t *next;         //  Newer chunk, or the next spare
    uint8_t pad [64 - sizeof (void *)];     //  (Events start on a line)
    s_event_t events [];            //  chunk_events of them
} s_chunk_t;

struct _kvt_prefix_index_log_t {
    s_chunk_t *first, *last;        //  Oldest and newest chunk holding events, or NULL
    size_t head, tail;              //  Next to apply in 'first', next free in 'last'
    s_chunk_t *spare;               //  Drained chunks kept, a stack
    size_t spare_count;             //  Chunks on it
    size_t calls;                   //  Policy calls the waiting events make
    kvt_policy_block_t *blocks;     //  The request being told's blocks (s_request_build)
    size_t blocks_room;             //  Entries allocated there
    size_t chunk_events;            //  Events per chunk (S_CHUNK_EVENTS; tests fewer)
    size_t max_calls;               //  Waiting calls that start the catch-up (S_LOG_MAX)
    int timer_id;                   //  The applying timer while events wait, else -1
    int64_t slice_us;               //  When the last slice ran (or the first was armed)
    bool direct;                    //  Apply events as they come (during a victims call)
};

//  The policy calls 'event' makes: one, or a request's begin, accesses
//  and end, and its blocks' build counted as calls (S_BLOCKS_PER_CALL):
//  a request of 65536 blocks and no hits is work for several slices, not
//  for its answer (S_APPLY_NOW).
static size_t
s_event_calls (const s_event_t *event)
{
    if (event->kind != S_REQUEST)
        return 1;
    return event->hits + 2 + (event->count + S_BLOCKS_PER_CALL - 1) / S_BLOCKS_PER_CALL;
}

//  Fill in at most 'most' calls' worth of the request event's blocks, as
//  the policy API has them: every field set (no need to zero the array
//  first). Only the oldest event is being told, so every request's blocks
//  go in the log's one array, kept: a 65536-block request's 3.5 MiB, new
//  for each, faulted its pages in inside a slice, and filling it in one
//  go took a slice's time of its own (issue #3). Returns the calls' worth
//  built.
static size_t
s_request_build (self_t *self, s_event_t *event, size_t most)
{
    kvt_prefix_index_log_t *log = self->policy_log;
    if (event->built == 0 && log->blocks_room < (size_t) event->count + 1) {
        free (log->blocks);
        log->blocks_room = (size_t) event->count + 1;
        log->blocks = (kvt_policy_block_t *) malloc (log->blocks_room
                                                     * sizeof (kvt_policy_block_t));
        if (!log->blocks)
            abort ();
    }
    kvt_policy_block_t *blocks = log->blocks;
    size_t end = event->count;
    if (most < (end - event->built + S_BLOCKS_PER_CALL - 1) / S_BLOCKS_PER_CALL)
        end = event->built + most * S_BLOCKS_PER_CALL;
    size_t made = (end - event->built + S_BLOCKS_PER_CALL - 1) / S_BLOCKS_PER_CALL;
    for (size_t k = event->built; k < end; k++)
        blocks [k] = (kvt_policy_block_t) {
            .id = event->ids [k],
            .parent = k? event->ids [k - 1]: KVT_POLICY_NO_PARENT,
            .depth = (uint32_t) k,
            .flags = k < event->hits? KVT_POLICY_BLOCK_HIT: 0,
            .sharers = k < event->hits? event->hit [k].sharers: 0,
            .block_tokens = self->block_tokens,
            .now = event->now,
            .next_use = KVT_POLICY_UNKNOWN
        };
    event->built = (uint32_t) end;
    return made;
}

static void
s_request_free (s_event_t *event)
{
    free (event->ids);
    free (event->hit);
    event->blocks = NULL;           //  (The log's)
}

//  Tell a request event to the GPU tier's policy, at most 'most' calls'
//  worth of it, in steps: its blocks built, begin_request, the policy's
//  catch_up (a few units a step, counted as one call, as its time is not
//  known ahead), the accesses (each to the policy of the tier the block
//  was hit in), end_request, catch_up again (what the end left). *done
//  once it is all told (then it frees what it owns). Returns the calls
//  made.
static size_t
s_request_apply (self_t *self, s_event_t *event, size_t most, bool *done)
{
    kvt_policy_t *policy = self->policies [event->tier];
    const kvt_policy_ops_t *ops = kvt_policy_ops (policy);
    void *state = kvt_policy_state (policy);
    *done = false;
    if (event->built < event->count)
        return s_request_build (self, event, most);
    size_t calls = 0;
    if (!event->begun) {
        event->blocks = self->policy_log->blocks;   //  (Built: it stays put until the end)
        if (ops->begin_request)
            ops->begin_request (state, event->blocks, event->count, event->hits);
        event->begun = true;
        event->caught_up = !ops->catch_up;
        calls++;
    }
    if (!event->caught_up) {
        //  (The step's one call: 'most' units; no slice: all of it)
        event->caught_up = !ops->catch_up (state, most);
        kvt_actor_count (self->actor, "policy_catch_up_steps", 1);
        if (!event->caught_up || !event->ended)
            return calls;
    }
    if (!event->ended) {
        for (; event->told < event->hits && calls < most; event->told++, calls++)
            if (event->hit [event->told].hit_tier != KVT_PREFIX_INDEX_NO_TIER) {
                kvt_policy_t *hit = self->policies [event->hit [event->told].hit_tier];
                kvt_policy_ops (hit)->on_access (kvt_policy_state (hit),
                                                 &event->blocks [event->told]);
            }
        if (event->told < event->hits)
            return calls;
        if (ops->end_request)
            ops->end_request (state);
        event->ended = true;
        calls++;
        if (ops->catch_up) {
            event->caught_up = false;   //  What the end left, in steps as above
            return calls;
        }
    }
    s_request_free (event);
    *done = true;
    return calls;
}

//  Tell 'event' to its policy, at most 'most' calls of it (a request's
//  over several slices, in order). *done once it is all told. Returns the
//  calls made.
static size_t
s_event_apply (self_t *self, s_event_t *event, size_t most, bool *done)
{
    if (event->kind == S_REQUEST)
        return s_request_apply (self, event, most, done);
    kvt_policy_t *policy = self->policies [event->tier];
    const kvt_policy_ops_t *ops = kvt_policy_ops (policy);
    void *state = kvt_policy_state (policy);
    *done = true;
    if (event->kind == S_INSERT) {
        //  Admission is asked so that policies learn from offers; the bytes
        //  are already in the tier, so a "no" is only counted (#5: declining
        //  belongs to the migration actor)
        if (ops->admit && !ops->admit (state, &event->block))
            kvt_actor_count (self->actor, "policy_would_decline", 1);
        ops->on_insert (state, &event->block);
        return 1;
    }
    ops->on_evict (state, event->block.id);
    return 1;
}

static bool
s_log_empty (const kvt_prefix_index_log_t *log)
{
    return !log->first || (log->first == log->last && log->head == log->tail);
}

//  A chunk for new events: a spare, else a new one
static s_chunk_t *
s_chunk_take (kvt_prefix_index_log_t *log)
{
    s_chunk_t *chunk = log->spare;
    if (chunk) {
        log->spare = chunk->next;
        log->spare_count--;
    }
    else {
        chunk = (s_chunk_t *) aligned_alloc (64, sizeof (s_chunk_t)
                                                 + log->chunk_events * sizeof (s_event_t));
        if (!chunk)
            abort ();
    }
    chunk->next = NULL;
    return chunk;
}

//  The oldest chunk is drained: keep it as a spare, or free it
static void
s_chunk_drop (kvt_prefix_index_log_t *log)
{
    s_chunk_t *chunk = log->first;
    log->first = chunk->next;
    log->head = 0;
    if (!log->first)
        log->last = NULL, log->tail = 0;
    if (log->spare_count < S_SPARE_CHUNKS) {
        chunk->next = log->spare;
        log->spare = chunk;
        log->spare_count++;
    }
    else
        free (chunk);
}

//  Apply the waiting events, oldest first, for at most 'budget_us' (0: no
//  limit) and at most 'most_calls' steps (0: no limit; a step makes one
//  call or more, or a request's catch-up step). Returns true if none waits
//  any more.
static bool
s_log_apply (self_t *self, int64_t budget_us, size_t most_calls)
{
    kvt_prefix_index_log_t *log = self->policy_log;
    int64_t start = budget_us? kvt_now_us (): 0;
    size_t made_all = 0;
    while (!s_log_empty (log)) {
        s_event_t *event = &log->first->events [log->head];
        size_t most = budget_us? 64: SIZE_MAX;
        if (most_calls && most > most_calls - made_all)
            most = most_calls - made_all;
        bool done;
        size_t made = s_event_apply (self, event, most, &done);
        assert (made <= log->calls);
        log->calls -= made;
        made_all += made? made: 1;
        if (done && ++log->head == log->chunk_events)
            s_chunk_drop (log);
        if ((budget_us && kvt_now_us () - start >= budget_us)
        ||  (most_calls && made_all >= most_calls))
            break;
    }
    if (!s_log_empty (log))
        return false;
    if (log->first)                 //  The one chunk left, drained: reuse it from the top
        log->head = log->tail = 0;
    if (log->timer_id != -1) {
        zloop_timer_end (kvt_actor_loop (self->actor), log->timer_id);
        log->timer_id = -1;
    }
    return true;
}

//  Whether this turn's slice yields to a message waiting on our thread
//  (the loop reads it this turn, the slice comes at the next). A promotion
//  moved in pieces sends an IDX_MOVE every few hundred microseconds while
//  its copy runs; a slice before each held each one up to policy_slice_us,
//  and the last one's delay is the request's (issue #3). A thread that
//  always has a message waiting still gets a slice every S_YIELD_SLICES
//  slices' time, so the log drains in slices rather than by its new
//  events paying past S_LOG_MAX.
static bool
s_slice_yields (self_t *self)
{
    kvt_prefix_index_log_t *log = self->policy_log;
    if (kvt_actor_stepping (self->actor)) {
        //  A match answering in parts (IDX_MATCH_PARTS): each part is a
        //  promotion that can start, the log can wait a few milliseconds
        kvt_actor_count (self->actor, "policy_slices_yielded", 1);
        return true;
    }
    if (kvt_now_us () - log->slice_us >= S_YIELD_SLICES * self->policy_slice_us
    ||  !kvt_actor_input_waiting (self->actor))
        return false;
    kvt_actor_count (self->actor, "policy_slices_yielded", 1);
    return true;
}

//  One slice, unless it yields; 'slice_us' notes when it ran. A slice
//  runs from a timer, whose turn is counted in us_busy as us_policy_slices.
static bool
s_log_slice (self_t *self)
{
    if (s_slice_yields (self))
        return false;
    self->policy_log->slice_us = kvt_now_us ();
    return s_log_apply (self, self->policy_slice_us, 0);
}

static int
s_log_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    self_t *self = (self_t *) arg;
    int64_t start = kvt_now_us ();
    s_log_slice (self);
    kvt_actor_turn_end (self->actor, "", "policy_slices", start);
    return 0;
}

//  The first slice, S_FIRST_SLICE_MS after the answer that left the events
//  (a one-shot timer, gone once it fired); then a slice at every turn of
//  the loop until none waits.
static int
s_log_timer_first (zloop_t *loop, int timer_id, void *arg)
{
    (void) timer_id;
    self_t *self = (self_t *) arg;
    int64_t start = kvt_now_us ();
    kvt_prefix_index_log_t *log = self->policy_log;
    log->timer_id = -1;
    if (!s_log_slice (self))
        log->timer_id = zloop_timer (loop, 0, 0, s_log_timer, self);
    //  (Last: what it serves may log events, and finds the timer set)
    kvt_actor_turn_end (self->actor, "", "policy_slices", start);
    return 0;
}

//  A new event at the end of the log (its fields to be filled in).
static s_event_t *
s_log_push (self_t *self, s_kind_t kind, uint8_t tier)
{
    kvt_prefix_index_log_t *log = self->policy_log;
    if (log->calls >= log->max_calls) {
        //  Slices fell behind: this event pays for a few of the oldest
        kvt_actor_count (self->actor, "policy_log_overflows", 1);
        s_log_apply (self, 0, S_CATCH_UP_CALLS);
    }
    if (!log->last) {
        log->first = log->last = s_chunk_take (log);
        log->head = log->tail = 0;
    }
    else
    if (log->tail == log->chunk_events) {
        log->last->next = s_chunk_take (log);
        log->last = log->last->next;
        log->tail = 0;
    }
    s_event_t *event = &log->last->events [log->tail++];
    *event = (s_event_t) { .kind = (uint8_t) kind, .tier = tier };
    return event;
}

//  The event last pushed is filled in: count its calls, and apply it
//  now if the log is direct.
static void
s_log_pushed (self_t *self)
{
    kvt_prefix_index_log_t *log = self->policy_log;
    log->calls += s_event_calls (&log->last->events [log->tail - 1]);
    if (log->direct)
        s_log_apply (self, 0, 0);
}

void
kvt_prefix_index_log_insert (self_t *self, uint8_t tier, const kvt_policy_block_t *block)
{
    s_log_push (self, S_INSERT, tier)->block = *block;
    s_log_pushed (self);
}

void
kvt_prefix_index_log_evict (self_t *self, uint8_t tier, uint64_t id)
{
    s_log_push (self, S_EVICT, tier)->block.id = id;
    s_log_pushed (self);
}

void
kvt_prefix_index_log_request (self_t *self, uint64_t *ids, size_t count, size_t hits,
                              kvt_prefix_index_hit_t *hit, int64_t now)
{
    assert (count <= UINT32_MAX && hits <= count);     //  Arrays are KVT_MSG_MAX_ARRAY at most
    s_event_t *event = s_log_push (self, S_REQUEST, KVT_TIER_GPU);
    event->ids = ids;
    event->hit = hit;
    event->blocks = NULL;
    event->now = now;
    event->count = (uint32_t) count;
    event->hits = (uint32_t) hits;
    event->built = 0;
    event->told = 0;
    event->begun = false;
    event->caught_up = false;
    s_log_pushed (self);
}

void
kvt_prefix_index_log_answer (self_t *self)
{
    kvt_prefix_index_log_t *log = self->policy_log;
    if (log->calls == 0 || self->policy_slice_us == 0 || self->test_decide_in_steps)
        return;
    if (log->calls <= S_APPLY_NOW)
        s_log_apply (self, 0, 0);
    else
    if (log->timer_id == -1) {
        kvt_actor_count (self->actor, "policy_calls_deferred", log->calls);
        log->slice_us = kvt_now_us ();
        log->timer_id = zloop_timer (kvt_actor_loop (self->actor), S_FIRST_SLICE_MS, 1,
                                     s_log_timer_first, self);
    }
}

void
kvt_prefix_index_log_apply (self_t *self)
{
    if (self->policy_log)
        s_log_apply (self, 0, 0);
}

bool
kvt_prefix_index_log_long (self_t *self)
{
    return self->policy_log && self->policy_slice_us > 0
        && self->policy_log->calls > (self->test_decide_in_steps? 0: S_APPLY_NOW);
}

bool
kvt_prefix_index_log_slice (self_t *self)
{
    if (!self->policy_log)
        return true;
    kvt_actor_count (self->actor, "policy_decision_slices", 1);
    return s_log_apply (self, self->policy_slice_us, 0);
}

void
kvt_prefix_index_log_direct (self_t *self, bool direct)
{
    self->policy_log->direct = direct;
}

void
kvt_prefix_index_log_start (self_t *self)
{
    kvt_prefix_index_log_t *log = (kvt_prefix_index_log_t *)
        kvt_zmalloc (sizeof (kvt_prefix_index_log_t));
    log->timer_id = -1;
    log->chunk_events = self->test_log_chunk_events > 0? (size_t) self->test_log_chunk_events
                                                       : S_CHUNK_EVENTS;
    log->max_calls = self->test_log_max_calls > 0? (size_t) self->test_log_max_calls
                                                 : S_LOG_MAX;
    self->policy_log = log;
}

void
kvt_prefix_index_log_stop (self_t *self)
{
    kvt_prefix_index_log_t *log = self->policy_log;
    if (!log)
        return;
    //  Events still waiting only free what they own: the policies go too
    for (s_chunk_t *chunk = log->first; chunk; chunk = chunk->next) {
        size_t from = chunk == log->first? log->head: 0;
        size_t to = chunk == log->last? log->tail: log->chunk_events;
        for (size_t k = from; k < to; k++)
            if (chunk->events [k].kind == S_REQUEST)
                s_request_free (&chunk->events [k]);
    }
    if (log->timer_id != -1)
        zloop_timer_end (kvt_actor_loop (self->actor), log->timer_id);
    while (log->first)
        s_chunk_drop (log);
    while (log->spare) {
        s_chunk_t *chunk = log->spare;
        log->spare = chunk->next;
        free (chunk);
    }
    free (log->blocks);
    free (log);
    self->policy_log = NULL;
}
