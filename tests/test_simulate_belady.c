/*  =========================================================================
    test_simulate_belady - the simulator's Belady equals a brute force

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    On traces of one-block requests the prefix hit is the plain cache hit,
    where Belady's rule is optimal. For 200 random short traces, an
    exhaustive search over every keep/evict choice must find exactly the
    hit count the simulator gets with the "belady" policy, and never
    fewer than LRU's. Exit 0 pass, 1 fail.
@end
*/

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvt_trace.h"
#include "kvt_policy.h"
#include "kvt_sim.h"

#define T_LENGTH 11                 //  Requests per random trace
#define T_ALPHABET 5                //  Distinct block ids

//  Best hits from position 'at' on, holding 'held' (ids, count 'count').
static int
t_best (const int *seq, int at, int *held, int count, int capacity)
{
    if (at == T_LENGTH)
        return 0;
    int id = seq [at];
    for (int i = 0; i < count; i++)
        if (held [i] == id)
            return 1 + t_best (seq, at + 1, held, count, capacity);
    //  Miss: decline, insert into free room, or replace any held block
    int best = t_best (seq, at + 1, held, count, capacity);
    if (count < capacity) {
        held [count] = id;
        int got = t_best (seq, at + 1, held, count + 1, capacity);
        best = got > best? got: best;
    }
    else
        for (int i = 0; i < count; i++) {
            int saved = held [i];
            held [i] = id;
            int got = t_best (seq, at + 1, held, count, capacity);
            held [i] = saved;
            best = got > best? got: best;
        }
    return best;
}

int
main (void)
{
    unsigned seed = 7;
    for (int round = 0; round < 200; round++) {
        int seq [T_LENGTH];
        char path [] = "/tmp/test_simulate_belady_XXXXXX";
        int fd = mkstemp (path);
        if (fd < 0)
            return 1;
        FILE *file = fdopen (fd, "w");
        for (int r = 0; r < T_LENGTH; r++) {
            seq [r] = rand_r (&seed) % T_ALPHABET;
            fprintf (file, "{\"timestamp\": %d, \"input_length\": 512, \"output_length\": 1, "
                     "\"hash_ids\": [%d]}\n", r, seq [r] + 100);
        }
        fclose (file);
        char *error = NULL;
        kvt_trace_t *trace = kvt_trace_load (path, &error);
        unlink (path);
        if (!trace) {
            fprintf (stderr, "load: %s\n", error);
            return 1;
        }
        kvt_sim_t *sim = kvt_sim_new (trace);
        int capacity = 1 + round % 3;
        kvt_sim_config_t config;
        kvt_sim_config_defaults (&config, (size_t) capacity);
        kvt_sim_result_t belady, lru;
        config.policy = "belady";
        if (kvt_sim_run (sim, &config, &belady))
            return 1;
        config.policy = "lru";
        if (kvt_sim_run (sim, &config, &lru))
            return 1;
        int held [4];
        int best = t_best (seq, 0, held, 0, capacity);
        if ((int) belady.hit_blocks [0] != best || (int) lru.hit_blocks [0] > best) {
            fprintf (stderr, "round %d capacity %d: belady %d lru %d brute force %d\n", round,
                     capacity, (int) belady.hit_blocks [0], (int) lru.hit_blocks [0], best);
            return 1;
        }
        kvt_sim_destroy (&sim);
        kvt_trace_destroy (&trace);
    }
    printf ("test_simulate_belady: 200 traces, belady == brute force\n");
    return 0;
}
