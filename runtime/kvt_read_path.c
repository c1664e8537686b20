/*  =========================================================================
    kvt_read_path - which way tier_nvme's reads are faster on the disk at
    hand, learned while the disk is busy (see the header)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_read_path.h"
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

//  The path of the round's span 'span'
static int
s_span_path (const kvt_read_path_t *self, int span)
{
    bool chosen = (span == 0) == self->chosen_first;
    return chosen? self->chosen: 1 - self->chosen;
}

static void
s_span_start (kvt_read_path_t *self, int span)
{
    self->span = span;
    self->path = s_span_path (self, span);
    self->timing = false;
    self->bytes = 0;
    self->reads = 0;
}

static void
s_round_start (kvt_read_path_t *self)
{
    self->measuring = true;
    self->chosen_first = self->rounds % 2 == 0;
    s_span_start (self, 0);
}

//  Both spans timed: weigh the other path against the chosen one over
//  the last rounds, and switch where the evidence is clear.
static void
s_round_end (kvt_read_path_t *self)
{
    int other = 1 - self->chosen;
    self->history [self->rounds % KVT_READ_PATH_HISTORY]
        = log (self->rate [other] / self->rate [self->chosen]);
    self->rounds++;
    int count = self->rounds < KVT_READ_PATH_HISTORY? self->rounds: KVT_READ_PATH_HISTORY;
    self->history_count = count;
    double sum = 0, sum_squares = 0;
    for (int k = 0; k < count; k++) {
        sum += self->history [k];
        sum_squares += self->history [k] * self->history [k];
    }
    double mean = sum / count;
    double variance = count > 1? (sum_squares - sum * mean) / (count - 1): 0;
    double standard_error = sqrt (variance > 0? variance: 0) / sqrt ((double) count);
    self->log_ratio = mean;
    if (count >= KVT_READ_PATH_MIN_ROUNDS && mean > log (1.0 + KVT_READ_PATH_MARGIN)
    &&  mean > KVT_READ_PATH_CONFIDENCE * standard_error) {
        self->chosen = other;
        for (int k = 0; k < count; k++)
            self->history [k] = -self->history [k];     //  Still other over chosen
        self->log_ratio = -mean;
        self->switches++;
    }
    self->measuring = false;
    self->path = self->chosen;
    //  Rounds back to back while the evidence is unclear, at first; where
    //  the chosen path leads plainly, fewer reads go the other way
    double lead = -self->log_ratio;
    bool leads = count >= KVT_READ_PATH_MIN_ROUNDS && lead > log (1.0 + KVT_READ_PATH_MARGIN)
              && lead > KVT_READ_PATH_CONFIDENCE * standard_error;
    bool clear = leads && lead > 4 * log (1.0 + KVT_READ_PATH_MARGIN);
    int rest_spans = clear? KVT_READ_PATH_REST_CLEAR
                   : leads || self->rounds >= KVT_READ_PATH_HISTORY? KVT_READ_PATH_REST: 0;
    self->rest_reads = rest_spans * self->span_reads;
    if (self->rest_reads == 0)
        s_round_start (self);
}

void
kvt_read_path_init (kvt_read_path_t *self, int prior, int queue_depth)
{
    assert (self);
    memset (self, 0, sizeof (*self));
    self->chosen = prior == KVT_READ_PATH_BOUNCE? KVT_READ_PATH_BOUNCE: KVT_READ_PATH_DIRECT;
    self->path = self->chosen;
    self->span_reads = KVT_READ_PATH_SPAN_DEPTHS * (queue_depth > 8? queue_depth: 8);
    s_round_start (self);
}

void
kvt_read_path_done (kvt_read_path_t *self, int path, uint64_t bytes, int64_t now_us,
                    bool saturated)
{
    assert (self);
    if (!self->measuring) {
        //  A round starts only while reads queue: when they do not, the
        //  path hardly matters, and every read goes the chosen way
        if (self->rest_reads > 0)
            self->rest_reads--;
        if (self->rest_reads <= 0 && saturated)
            s_round_start (self);
        return;
    }
    if (!saturated) {
        //  The demand sets the pace now, not the disk: the round is off
        //  (reads back on the chosen path), and tried again a span later
        self->void_spans += self->timing;
        self->measuring = false;
        self->path = self->chosen;
        self->rest_reads = self->span_reads;
        return;
    }
    if (path != self->path)
        return;                     //  A read the other path had in flight
    if (!self->timing) {
        //  The span's first own completion starts the clock
        self->timing = true;
        self->start_us = now_us;
        self->bytes = 0;
        self->reads = 0;
        return;
    }
    self->bytes += bytes;
    if (++self->reads < self->span_reads)
        return;
    int64_t elapsed_us = now_us - self->start_us;
    if (elapsed_us <= 0) {
        self->void_spans++;         //  A clock too coarse to time it: again
        self->timing = false;
        return;
    }
    self->rate [self->path] = (double) self->bytes / (double) elapsed_us;
    if (self->span == 0)
        s_span_start (self, 1);
    else
        s_round_end (self);
}


//  --------------------------------------------------------------------------
//  Selftest: synthetic disks that serve queued reads one after another,
//  each path at its own cost, with the queue kept full

typedef struct {
    double cost_us [2];             //  Device time of one read, by path
    double jitter;                  //  +- this share a read, deterministic
    int queue_depth;
    uint64_t reads_by_path [2];     //  Completions, by path
    double drift;                   //  +- this share for both paths, new every 64 reads
} t_disk_t;

//  Serve 'reads' reads through 'chooser'; the first 'saturated_after' of
//  them complete with the queue not full. Returns the time at the end.
static double
t_run (t_disk_t *disk, kvt_read_path_t *chooser, int reads, int unsaturated, double now_us)
{
    int inflight [256];
    int head = 0, count = 0;
    assert (disk->queue_depth <= 256);
    while (count < disk->queue_depth) {
        inflight [(head + count) % 256] = chooser->path;
        count++;
    }
    uint64_t noise = 0x9E3779B97F4A7C15ULL;
    double pace = 1.0;
    for (int k = 0; k < reads; k++) {
        int path = inflight [head];
        head = (head + 1) % 256;
        count--;
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        double wobble = 1.0 + disk->jitter * ((double) (noise % 2001) / 1000.0 - 1.0);
        if (k % 64 == 0)
            pace = 1.0 + disk->drift * ((double) ((noise >> 20) % 2001) / 1000.0 - 1.0);
        now_us += disk->cost_us [path] * wobble * pace;
        disk->reads_by_path [path]++;
        kvt_read_path_done (chooser, path, 65536, (int64_t) now_us, k >= unsaturated);
        inflight [(head + count) % 256] = chooser->path;
        count++;
    }
    return now_us;
}

int
kvt_read_path_test (bool verbose)
{
    //  @selftest
    //  Bounce 10% faster, starting direct: it switches once, early, and
    //  then sends only the rounds' spans the slower way
    kvt_read_path_t chooser;
    kvt_read_path_init (&chooser, KVT_READ_PATH_DIRECT, 32);
    assert (chooser.path == KVT_READ_PATH_DIRECT && chooser.span_reads == 128);
    t_disk_t disk = { { 30.0, 27.0 }, 0.05, 32, { 0, 0 }, 0.0 };
    double now = t_run (&disk, &chooser, 2000, 0, 1000.0);
    assert (chooser.chosen == KVT_READ_PATH_BOUNCE && chooser.switches == 1);
    memset (disk.reads_by_path, 0, sizeof (disk.reads_by_path));
    now = t_run (&disk, &chooser, 40000, 0, now);
    assert (chooser.chosen == KVT_READ_PATH_BOUNCE && chooser.switches == 1);
    double slower_share = (double) disk.reads_by_path [KVT_READ_PATH_DIRECT] / 40000.0;
    if (verbose)
        printf (" * kvt_read_path: %d rounds, %.3f of reads the slower way, average %.3f\n",
                chooser.rounds, slower_share, exp (chooser.log_ratio));
    assert (slower_share > 0.01 && slower_share < 0.12);    //  Still measuring, not much
    assert (chooser.log_ratio < 0);                         //  Other (direct) is slower

    //  The disk changes: direct becomes the faster; the choice follows
    disk.cost_us [KVT_READ_PATH_DIRECT] = 20.0;
    now = t_run (&disk, &chooser, 60000, 0, now);
    assert (chooser.chosen == KVT_READ_PATH_DIRECT && chooser.switches == 2);

    //  Where the other path is far slower, it is tried less often still
    kvt_read_path_init (&chooser, KVT_READ_PATH_BOUNCE, 32);
    t_disk_t far = { { 15.0, 30.0 }, 0.05, 32, { 0, 0 }, 0.0 };
    now = t_run (&far, &chooser, 2000, 0, 0.0);
    memset (far.reads_by_path, 0, sizeof (far.reads_by_path));
    t_run (&far, &chooser, 60000, 0, now);
    assert (chooser.chosen == KVT_READ_PATH_DIRECT && chooser.switches == 1);
    double far_share = (double) far.reads_by_path [KVT_READ_PATH_BOUNCE] / 60000.0;
    assert (far_share > 0.002 && far_share < slower_share / 2);

    //  Starting on the faster path, or with the paths 1% apart (under the
    //  margin, inside the jitter): no switch
    for (int prior = 0; prior < 2; prior++) {
        kvt_read_path_init (&chooser, prior, 32);
        t_disk_t close = { { 30.0, prior? 29.7: 30.3 }, 0.05, 32, { 0, 0 }, 0.0 };
        t_run (&close, &chooser, 30000, 0, 0.0);
        assert (chooser.chosen == prior && chooser.switches == 0 && chooser.rounds >= 3);
        t_disk_t apart = { { prior? 40.0: 30.0, prior? 30.0: 40.0 }, 0.05, 32, { 0, 0 }, 0.0 };
        kvt_read_path_init (&chooser, prior, 32);
        t_run (&apart, &chooser, 30000, 0, 0.0);
        assert (chooser.chosen == prior && chooser.switches == 0);
        //  Learning stops early where the gap is plain: four rounds, then
        //  a round only now and then
        double tried = (double) apart.reads_by_path [1 - prior] / 30000.0;
        if (verbose)
            printf (" * kvt_read_path: start on the faster of two 33%% apart: %d rounds, "
                    "%.3f of reads the other way\n", chooser.rounds, tried);
        assert (chooser.rounds < 10 && tried < 0.05);
    }

    //  A disk whose pace moves +-20% every 64 reads (both paths), bounce
    //  15% faster: one switch, to bounce, however long it runs
    kvt_read_path_init (&chooser, KVT_READ_PATH_DIRECT, 32);
    t_disk_t drifting = { { 30.0, 26.0 }, 0.05, 32, { 0, 0 }, 0.2 };
    t_run (&drifting, &chooser, 200000, 0, 0.0);
    if (verbose)
        printf (" * kvt_read_path: drifting disk, %d rounds, %" PRIu64 " switches\n",
                chooser.rounds, chooser.switches);
    assert (chooser.chosen == KVT_READ_PATH_BOUNCE && chooser.switches == 1);

    //  Demand under the queue: nothing is learned, and reads go the chosen
    //  way (a round does not start; one under way is called off)
    kvt_read_path_init (&chooser, KVT_READ_PATH_DIRECT, 32);
    t_disk_t slow_demand = { { 30.0, 10.0 }, 0.0, 32, { 0, 0 }, 0.0 };
    t_run (&slow_demand, &chooser, 5000, 5000, 0.0);
    assert (chooser.rounds == 0 && chooser.switches == 0);
    assert (chooser.chosen == KVT_READ_PATH_DIRECT && !chooser.measuring);
    assert (slow_demand.reads_by_path [KVT_READ_PATH_BOUNCE] == 0);
    chooser.chosen_first = false;           //  A round that began the other way...
    chooser.measuring = true;
    chooser.path = KVT_READ_PATH_BOUNCE;
    kvt_read_path_done (&chooser, KVT_READ_PATH_DIRECT, 65536, 10, false);
    assert (!chooser.measuring && chooser.path == KVT_READ_PATH_DIRECT);    //  ...is off
    //  ...and once the queue fills, it learns as before
    t_run (&slow_demand, &chooser, 3000, 0, 1e6);
    assert (chooser.chosen == KVT_READ_PATH_BOUNCE);

    //  A read of the other path completing inside a span is skipped, and
    //  a clock that does not move throws the span away
    kvt_read_path_init (&chooser, KVT_READ_PATH_DIRECT, 8);
    kvt_read_path_done (&chooser, KVT_READ_PATH_DIRECT, 4096, 100, true);
    assert (chooser.timing && chooser.reads == 0);
    kvt_read_path_done (&chooser, KVT_READ_PATH_BOUNCE, 4096, 101, true);
    assert (chooser.reads == 0);
    for (int k = 0; k < chooser.span_reads; k++)
        kvt_read_path_done (&chooser, KVT_READ_PATH_DIRECT, 4096, 100, true);
    assert (chooser.void_spans == 1 && !chooser.timing && chooser.span == 0);
    //  @end
    return 0;
}
