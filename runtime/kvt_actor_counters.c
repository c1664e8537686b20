/*  =========================================================================
    kvt_actor_counters - an actor's counters, gauges and marks, reported
    by STATS, and the busy time of its loop's callbacks

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_actor_int.h"

static kvt_actor_counter_t *
s_counter (kvt_actor_t *self, const char *name)
{
    for (int k = 0; k < self->counter_count; k++)
        if (streq (self->counters [k].name, name))
            return &self->counters [k];
    if (self->counter_count == KVT_ACTOR_MAX_COUNTERS)
        return NULL;
    kvt_actor_counter_t *counter = &self->counters [self->counter_count++];
    snprintf (counter->name, sizeof (counter->name), "%s", name);
    return counter;
}

void
kvt_actor_count (kvt_actor_t *self, const char *counter, uint64_t delta)
{
    kvt_actor_counter_t *c = s_counter (self, counter);
    if (c)
        c->value += delta;
}

void
kvt_actor_gauge (kvt_actor_t *self, const char *gauge, uint64_t value)
{
    kvt_actor_counter_t *c = s_counter (self, gauge);
    if (c)
        c->value = value;
}

void
kvt_actor_mark (kvt_actor_t *self, const char *event)
{
    kvt_actor_gauge (self, event, (uint64_t) kvt_now_us ());
}

uint64_t
kvt_actor_counter (kvt_actor_t *self, const char *counter)
{
    for (int k = 0; k < self->counter_count; k++)
        if (streq (self->counters [k].name, counter))
            return self->counters [k].value;
    return 0;
}

void
kvt_actor_add_counters (kvt_actor_t *self, kvt_msg_t *msg, int field)
{
    for (int k = 0; k < self->counter_count; k++) {
        char key [96];
        snprintf (key, sizeof (key), "%s.%s", self->def->name, self->counters [k].name);
        kvt_msg_map_add (msg, field, key, self->counters [k].value);
    }
}

//  (For kvt_actor_turn_end) us_busy counts the time an actor's loop
//  spends on its own requests, replies and steps, decoding included, and
//  us_<MSG> / us_reply_<MSG> / us_steps split it by what was handled
//  (us_other: not decoded): with the counts of the actors sharing its
//  thread, how full that thread is and with what, which no profiler on
//  the GPU machine can say (issue #3)
void
kvt_actor_busy_add (kvt_actor_t *self, const char *kind, const char *name, int64_t start)
{
    uint64_t us = (uint64_t) (kvt_now_us () - start);
    name = name? name: "other";
    if (!self->busy)
        self->busy = s_counter (self, "us_busy");
    size_t at = (((uintptr_t) kind * 31 + (uintptr_t) name) >> 3) & (KVT_ACTOR_BUSY_MEMO - 1);
    if (self->busy_memo [at].kind != kind || self->busy_memo [at].name != name) {
        char counter [48];
        snprintf (counter, sizeof (counter), "us_%s%s", kind, name);
        self->busy_memo [at].kind = kind;
        self->busy_memo [at].name = name;
        self->busy_memo [at].counter = s_counter (self, counter);
    }
    if (self->busy)
        self->busy->value += us;
    if (self->busy_memo [at].counter)
        self->busy_memo [at].counter->value += us;
    if (us >= KVT_ACTOR_LONG_BUSY_US) {
        //  Rare: a span that held the thread (and the actors sharing it)
        //  for a millisecond or more, named, and when it ended
        char counter [48];
        snprintf (counter, sizeof (counter), "long_busy_%s%s", kind, name);
        kvt_actor_count (self, counter, 1);
        kvt_actor_gauge (self, "us_long_busy_last", us);
        kvt_actor_mark (self, "at_long_busy_end");
    }
}
