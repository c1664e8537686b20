/*  =========================================================================
    test_decode_ring - the stage ring of decode v4, as a model checked on
    the CPU

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Decode v4 (kernels/kvt_paged_attention_bulk.cu, s_decode_ws_kernel)
    runs a ring of STAGES shared-memory stages between one producer warp
    and C computing warps: tile j goes to stage j mod STAGES and to warp
    j mod C; each stage has a "full" mbarrier (the producer arrives with
    the bytes it expects, the bulk copies complete them) and an "empty"
    one (the warp that took the tile arrives once it is in registers).
    Waits are parity waits: one passes as soon as the barrier's completed
    phase count has the other parity than the one given, so it cannot
    tell a phase behind from a phase on. Whether the kernel's waits are
    enough depends on every interleaving of the warps and on the order in
    which bulk copies land, which a GPU test meets only by chance (session
    21: 45 cases x 4 variants and several demos passed on a kernel that
    could read a stage before its fill landed).
    This test plays the same protocol on modelled mbarriers, with the
    same stage and parity bookkeeping as the kernel's loops, under many
    random schedules in which copies land in any order, and checks that a warp only reads a stage
    holding its own, landed tile, that no copy lands in a stage a warp is
    reading, and that the ring never hangs. The kernel's rule (wait for
    the release of the tile a ring before, then for the fill) must pass
    everywhere; and so that the checker is known to have teeth, the two
    rules session 21 found wanting must each be caught: no release wait
    (a stale read) and a second wait on the fill barrier (a hang).
    Decode v5 (kernels/kvt_paged_attention_balanced.cu) runs the same ring
    over a CTA's range of tiles, which falls into segments (one unit each);
    at a segment's end the computing warps meet at a named barrier to merge
    while the producer runs on, and each warp starts the next segment at
    its first tile k (k mod C = its index), the stage and parity computed
    from k. Its runs cut the tiles into random segments, some shorter than
    C (warps with no tile there go straight to the barrier), and must
    neither misread nor hang. With forced splits v5's segments are the
    splits, and warp w takes a split's tiles w, w + C, ... counted from
    the split's start (as v4's CTA of that split does, so that both compute
    it bit for bit): the same checks hold for that assignment too.
    A ring with P producer warps (warp p issuing tiles p, p + P, ..., into
    stages that are a multiple of P, so each stage has one producer) keeps
    the same waits exact only if P also divides the computing warps, so
    that each warp takes all its tiles of a segment from one producer: with
    2 producers and 7 warps a warp can pass its release wait a ring early
    (the producer of tile j - STAGES lags the one of its own last tile) and
    read a stale stage, as a probe with that ring hung on the card (session
    27). Both are played: 2 producers and 6 or 8 warps (v4's and v5's rings
    since session 28) must pass everywhere, and
    2 producers and 7 warps must be caught.
    What the model cannot see: the stage's reads are generic-proxy loads
    and its refill an async-proxy bulk copy, so the kernels fence the
    reads before the release (kvt_dev_fence_reads_before_refill); session
    23 found runs giving other bits without that fence on the card.
@end
*/

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_util.h"

#define S_MAX_STAGES 64
#define S_MAX_WARPS 16
#define S_MAX_TILES 512
#define S_MAX_SEGMENTS 128
#define S_MAX_PRODUCERS 4

typedef enum {
    S_RULE_KERNEL,          //  Wait for the release of tile j - STAGES, then the fill
    S_RULE_NONE,            //  The fill's parity alone (session 20's v4)
    S_RULE_FULL_TWICE       //  The fill barrier's previous phase, then its own
} s_rule_t;

//  An mbarrier: 'completed' phases so far; the current phase completes when
//  its arrivals are all in and its expected bytes have all landed.
typedef struct {
    int completed;
    int pending;            //  Arrivals still due in the current phase
    int count;              //  Arrivals a phase needs
    int tx;                 //  Expected bytes not yet landed
} s_bar_t;

static void
s_bar_init (s_bar_t *bar, int count)
{
    bar->completed = 0;
    bar->pending = bar->count = count;
    bar->tx = 0;
}

static void
s_bar_settle (s_bar_t *bar)
{
    if (bar->pending == 0 && bar->tx == 0) {
        bar->completed++;
        bar->pending = bar->count;
    }
}

//  mbarrier.try_wait.parity: passes once the current phase's parity
//  differs from 'parity'
static bool
s_bar_passes (const s_bar_t *bar, uint32_t parity)
{
    return (uint32_t) (bar->completed & 1) != parity;
}

//  How a CTA's tiles fall into segments: none (v4), units (v5), forced
//  splits (v5 with split-relative warps)
typedef enum { S_CUT_NONE, S_CUT_UNITS, S_CUT_SPLITS } s_cut_t;

typedef enum { S_WAIT_RELEASE, S_WAIT_FILL, S_READING, S_MERGING, S_AT_BARRIER, S_DONE }
    s_warp_mode_t;

typedef struct {
    int tile;               //  The tile it is on
    int stage;              //  Its stage, kept as the kernel keeps it
    uint32_t phase;         //  Parity of that stage's fill for this tile
    int segment;            //  The segment it is in (v5)
    s_warp_mode_t mode;
} s_warp_t;

typedef struct {
    int stages, warps, tiles;
    s_rule_t rule;
    int segment_end [S_MAX_SEGMENTS];   //  Tiles [end [i - 1], end [i]) are segment i
    int segments;                       //  1: v4's one unit a CTA
    bool split_relative;                //  A segment's tile i to warp i mod C (forced splits)
    int at_barrier;                     //  Warps waiting at the merge barrier
    s_bar_t full [S_MAX_STAGES], empty [S_MAX_STAGES];
    int content [S_MAX_STAGES];         //  Tile whose bytes the stage holds, -1 none
    bool landed [S_MAX_TILES];
    int in_flight [S_MAX_TILES];        //  Tiles issued whose copies have not landed
    int in_flight_count;
    int producers;                      //  Producer p issues tiles p, p + producers, ...
    int next_issue [S_MAX_PRODUCERS];   //  Producer p: next tile to issue
    int producer_stage [S_MAX_PRODUCERS];
    uint32_t producer_phase [S_MAX_PRODUCERS];
    s_warp_t warp [S_MAX_WARPS];
    int reads;                          //  Tiles read, each exactly once
    const char *violation;              //  First thing that went wrong, or NULL
} s_ring_t;

//  Warp w into segment 'segment' as v5 puts it there: its first tile k
//  (k mod warps = w, or k - the segment's start = w with forced splits),
//  the stage and parity of k; no tile: to the barrier
static void
s_warp_enter (s_ring_t *ring, int w, int segment)
{
    s_warp_t *warp = &ring->warp [w];
    if (segment == ring->segments) {
        warp->mode = S_DONE;
        return;
    }
    int begin = segment? ring->segment_end [segment - 1]: 0;
    warp->segment = segment;
    warp->tile = ring->split_relative? begin + w
                                     : begin + (w - begin % ring->warps + ring->warps) % ring->warps;
    warp->stage = warp->tile % ring->stages;
    warp->phase = (uint32_t) (warp->tile / ring->stages) & 1;
    warp->mode = warp->tile < ring->segment_end [segment]? S_WAIT_RELEASE: S_MERGING;
}

//  'segment_ends' (NULL: one segment of all tiles, v4) as v5's units
static void
s_ring_init (s_ring_t *ring, int stages, int warps, int producers, int tiles, s_rule_t rule,
             const int *segment_ends, int segments, bool split_relative)
{
    memset (ring, 0, sizeof (*ring));
    ring->producers = producers;
    for (int p = 0; p < producers; p++) {
        ring->next_issue [p] = p;
        ring->producer_stage [p] = p;
    }
    ring->split_relative = split_relative;
    ring->stages = stages;
    ring->warps = warps;
    ring->tiles = tiles;
    ring->rule = rule;
    for (int s = 0; s < stages; s++) {
        s_bar_init (&ring->full [s], 1);
        s_bar_init (&ring->empty [s], 1);
        ring->content [s] = -1;
    }
    ring->segments = segment_ends? segments: 1;
    for (int i = 0; i < ring->segments; i++)
        ring->segment_end [i] = segment_ends? segment_ends [i]: tiles;
    for (int w = 0; w < warps; w++)
        s_warp_enter (ring, w, 0);
}

//  Producer p can issue its next tile: the tile a ring behind released
static bool
s_producer_ready (const s_ring_t *ring, int p)
{
    int j = ring->next_issue [p];
    return j < ring->tiles
        && (j < ring->stages
        ||  s_bar_passes (&ring->empty [ring->producer_stage [p]], ring->producer_phase [p] ^ 1));
}

static void
s_producer_issue (s_ring_t *ring, int p)
{
    int stage = ring->producer_stage [p];
    //  arrive.expect_tx, then the bulk copies (one "byte" a tile here)
    ring->full [stage].tx += 1;
    ring->full [stage].pending--;
    s_bar_settle (&ring->full [stage]);
    ring->in_flight [ring->in_flight_count++] = ring->next_issue [p];
    ring->next_issue [p] += ring->producers;
    ring->producer_stage [p] += ring->producers;    //  Stages: a multiple of producers
    if (ring->producer_stage [p] >= ring->stages) {
        ring->producer_stage [p] -= ring->stages;
        ring->producer_phase [p] ^= 1;
    }
}

static void
s_copy_land (s_ring_t *ring, int index)
{
    int tile = ring->in_flight [index];
    int stage = tile % ring->stages;
    for (int w = 0; w < ring->warps; w++)
        if (ring->warp [w].mode == S_READING && ring->warp [w].stage == stage
        &&  !ring->violation)
            ring->violation = "a copy landed in a stage a warp was reading";
    ring->content [stage] = tile;
    ring->landed [tile] = true;
    ring->full [stage].tx -= 1;
    s_bar_settle (&ring->full [stage]);
    ring->in_flight [index] = ring->in_flight [--ring->in_flight_count];
}

//  The warp can take its next step (a wait that passes, or work)
static bool
s_warp_ready (const s_ring_t *ring, const s_warp_t *warp)
{
    switch (warp->mode) {
        case S_WAIT_RELEASE:
            if (warp->tile < ring->stages || ring->rule == S_RULE_NONE)
                return true;            //  No first wait: moves on to the fill's
            if (ring->rule == S_RULE_KERNEL)
                return s_bar_passes (&ring->empty [warp->stage], warp->phase ^ 1);
            return s_bar_passes (&ring->full [warp->stage], warp->phase ^ 1);
        case S_WAIT_FILL:
            return s_bar_passes (&ring->full [warp->stage], warp->phase);
        case S_READING:
        case S_MERGING:
            return true;
        default:
            return false;
    }
}

static void
s_warp_step (s_ring_t *ring, s_warp_t *warp)
{
    switch (warp->mode) {
        case S_WAIT_RELEASE:
            warp->mode = S_WAIT_FILL;
            break;
        case S_WAIT_FILL:
            //  The fill wait passed: the stage must hold this tile, landed
            if ((ring->content [warp->stage] != warp->tile || !ring->landed [warp->tile])
            &&  !ring->violation)
                ring->violation = "a warp read a stage before its tile had landed";
            warp->mode = S_READING;
            break;
        case S_READING:
            //  In registers: release the stage, move on by C tiles
            ring->empty [warp->stage].pending--;
            s_bar_settle (&ring->empty [warp->stage]);
            ring->reads++;
            warp->tile += ring->warps;
            warp->stage += ring->warps;
            if (warp->stage >= ring->stages) {
                warp->stage -= ring->stages;
                warp->phase ^= 1;
            }
            warp->mode = warp->tile < ring->segment_end [warp->segment]? S_WAIT_RELEASE
                                                                        : S_MERGING;
            break;
        case S_MERGING:
            //  At the merge's named barrier; the last to come lets all go
            warp->mode = S_AT_BARRIER;
            if (++ring->at_barrier == ring->warps) {
                ring->at_barrier = 0;
                int next = warp->segment + 1;
                for (int w = 0; w < ring->warps; w++)
                    s_warp_enter (ring, w, next);
            }
            break;
        default:
            break;
    }
}

//  One random schedule to the end: each step is one of the enabled ones,
//  picked at random (an issue, a warp's step, or the landing of any copy
//  in flight: on the GPU copies mostly land in order, but nothing makes
//  them). Returns NULL, or what went wrong ("hang": no step possible with
//  tiles left).
static const char *
s_ring_run (int stages, int warps, int producers, int tiles, s_rule_t rule, s_cut_t cut,
            uint64_t seed)
{
    bool segmented = cut != S_CUT_NONE;
    static s_ring_t ring;
    uint64_t state = seed;
    //  v5: units of 1 to 2 x stages tiles, a third of them under 'warps'
    int ends [S_MAX_SEGMENTS], segments = 0;
    for (int at = 0; segmented && at < tiles && segments < S_MAX_SEGMENTS - 1; ) {
        uint64_t draw = kvt_splitmix64 (&state);
        int length = draw % 3 == 0? 1 + (int) (draw / 3 % (uint64_t) warps)
                                  : 1 + (int) (draw / 3 % (uint64_t) (2 * stages));
        at = at + length < tiles? at + length: tiles;
        ends [segments++] = at;
    }
    if (segmented && ends [segments - 1] < tiles)
        ends [segments++] = tiles;
    s_ring_init (&ring, stages, warps, producers, tiles, rule, segmented? ends: NULL, segments,
                 cut == S_CUT_SPLITS);
    while (!ring.violation) {
        //  Enabled actions: -2 - p = producer p, 1 + w = warp w, -1 = a landing
        int actions [S_MAX_WARPS + S_MAX_PRODUCERS + 1], count = 0;
        for (int p = 0; p < producers; p++)
            if (s_producer_ready (&ring, p))
                actions [count++] = -2 - p;
        for (int w = 0; w < warps; w++)
            if (s_warp_ready (&ring, &ring.warp [w]))
                actions [count++] = 1 + w;
        if (ring.in_flight_count > 0)
            actions [count++] = -1;
        if (count == 0)
            return ring.reads == tiles? NULL: "hang";
        int action = actions [kvt_splitmix64 (&state) % (uint64_t) count];
        if (action <= -2)
            s_producer_issue (&ring, -2 - action);
        else
        if (action > 0)
            s_warp_step (&ring, &ring.warp [action - 1]);
        else
            s_copy_land (&ring, (int) (kvt_splitmix64 (&state) % (uint64_t) ring.in_flight_count));
    }
    return ring.violation;
}

#define S_RUNS 400                      //  Random schedules a case

typedef struct {
    int runs, stale, overwrite, hang;
} s_tally_t;

static s_tally_t
s_ring_runs (int stages, int warps, int producers, int tiles, s_rule_t rule, s_cut_t cut,
             int runs)
{
    s_tally_t tally = { runs, 0, 0, 0 };
    for (int r = 0; r < runs; r++) {
        const char *why = s_ring_run (stages, warps, producers, tiles, rule, cut,
                                      0x5eed0000u + (uint64_t) r);
        if (!why)
            continue;
        if (strcmp (why, "hang") == 0)
            tally.hang++;
        else
        if (strstr (why, "before its tile"))
            tally.stale++;
        else
            tally.overwrite++;
    }
    return tally;
}

static bool
s_clean (s_tally_t tally)
{
    return tally.stale == 0 && tally.overwrite == 0 && tally.hang == 0;
}

//  The kernel's rule in v4's ring, v5's units and v5's forced splits
typedef struct {
    s_tally_t kernel, units, splits;
} s_modes_t;

static s_modes_t
s_kernel_rule_runs (int stages, int warps, int producers, int tiles)
{
    s_modes_t modes = {
        s_ring_runs (stages, warps, producers, tiles, S_RULE_KERNEL, S_CUT_NONE, S_RUNS),
        s_ring_runs (stages, warps, producers, tiles, S_RULE_KERNEL, S_CUT_UNITS, S_RUNS),
        s_ring_runs (stages, warps, producers, tiles, S_RULE_KERNEL, S_CUT_SPLITS, S_RUNS)
    };
    return modes;
}

int
main (void)
{
    int failures = 0;
    //  Small rings for 7 warps (8, 9: where the card showed the proxy race);
    //  the kernels' rings: head_dim 128 (26 stages of 8 KiB) and 64 (52 of
    //  4 KiB) for 7 warps; v5's smaller ones beside a larger merge buffer
    //  (24 and 21 stages for 8 and 16 query heads a KV head at head_dim 128,
    //  49 at 64); the 2-CTAs-a-SM variant tried in session 21 (13 for 3); a
    //  small ring for 2 warps
    const int shapes [][2] = { { 8, 7 }, { 9, 7 }, { 26, 7 }, { 52, 7 }, { 24, 7 }, { 21, 7 }, { 49, 7 },
                               { 13, 3 }, { 5, 2 } };
    const int shape_count = (int) (sizeof (shapes) / sizeof (shapes [0]));
    s_tally_t none_total = { 0, 0, 0, 0 }, twice_total = { 0, 0, 0, 0 };
    int units_none_stale = 0, splits_none_stale = 0;
    for (int k = 0; k < shape_count; k++) {
        int stages = shapes [k][0], warps = shapes [k][1];
        int tiles = stages * 6 + warps + 1 < S_MAX_TILES? stages * 6 + warps + 1: S_MAX_TILES;
        s_modes_t rule = s_kernel_rule_runs (stages, warps, 1, tiles);
        s_tally_t kernel = rule.kernel, units = rule.units, splits = rule.splits;
        s_tally_t none = s_ring_runs (stages, warps, 1, tiles, S_RULE_NONE, S_CUT_NONE, S_RUNS);
        s_tally_t twice = s_ring_runs (stages, warps, 1, tiles, S_RULE_FULL_TWICE, S_CUT_NONE,
                                       S_RUNS);
        s_tally_t units_none = s_ring_runs (stages, warps, 1, tiles, S_RULE_NONE, S_CUT_UNITS,
                                            S_RUNS);
        s_tally_t splits_none = s_ring_runs (stages, warps, 1, tiles, S_RULE_NONE,
                                             S_CUT_SPLITS, S_RUNS);
        printf ("test_decode_ring: %2d stages, %d warps, %3d tiles, %d schedules each: "
                "kernel's rule %d stale / %d overwritten / %d hangs; no release wait %d / %d "
                "/ %d; fill barrier twice %d / %d / %d; v5 units %d / %d / %d (no release wait "
                "%d stale); v5 forced splits %d / %d / %d (%d)\n", stages,
                warps, tiles, S_RUNS, kernel.stale, kernel.overwrite, kernel.hang, none.stale,
                none.overwrite, none.hang, twice.stale, twice.overwrite, twice.hang,
                units.stale, units.overwrite, units.hang, units_none.stale, splits.stale,
                splits.overwrite, splits.hang, splits_none.stale);
        if (!s_clean (kernel)) {
            fprintf (stderr, "test_decode_ring: the kernel's rule failed\n");
            failures++;
        }
        if (!s_clean (units)) {
            fprintf (stderr, "test_decode_ring: v5's units with merges failed\n");
            failures++;
        }
        if (!s_clean (splits)) {
            fprintf (stderr, "test_decode_ring: v5's forced splits failed\n");
            failures++;
        }
        splits_none_stale += splits_none.stale;
        none_total.stale += none.stale;
        none_total.overwrite += none.overwrite;
        twice_total.hang += twice.hang;
        units_none_stale += units_none.stale;
    }
    //  Two producer warps, v4's and v5's rings since session 28: with 6 or 8
    //  computing warps the kernel's rule holds in every mode, with 7 a warp
    //  can read a stale stage. Stages a multiple of 2; for 8 warps v4's (26
    //  and 52 stages at head_dim 128 and 64) and v5's beside its merge
    //  buffer (24 and 20 at head_dim 128 for 8 and 16 query heads a KV head)
    const int two [][2] = { { 26, 6 }, { 52, 6 }, { 24, 6 }, { 12, 6 }, { 8, 6 }, { 26, 8 },
                            { 52, 8 }, { 24, 8 }, { 20, 8 }, { 16, 8 }, { 4, 2 } };
    for (size_t k = 0; k < sizeof (two) / sizeof (two [0]); k++) {
        int stages = two [k][0], warps = two [k][1];
        s_modes_t rule = s_kernel_rule_runs (stages, warps, 2, stages * 6 + warps + 1);
        printf ("test_decode_ring: two producers, %2d stages, %d warps: kernel's rule %d / %d / "
                "%d, v5 units %d / %d / %d, forced splits %d / %d / %d (stale / overwritten "
                "/ hangs)\n", stages, warps, rule.kernel.stale, rule.kernel.overwrite,
                rule.kernel.hang, rule.units.stale, rule.units.overwrite, rule.units.hang,
                rule.splits.stale, rule.splits.overwrite, rule.splits.hang);
        if (!s_clean (rule.kernel) || !s_clean (rule.units) || !s_clean (rule.splits)) {
            fprintf (stderr, "test_decode_ring: two producers with %d warps failed\n", warps);
            failures++;
        }
    }
    //  Four producer warps, v4's ring since session 28 (24 and 52 stages at
    //  head_dim 128 and 64, 8 computing warps)
    const int four [][2] = { { 24, 8 }, { 52, 8 }, { 16, 8 }, { 8, 4 } };
    for (size_t k = 0; k < sizeof (four) / sizeof (four [0]); k++) {
        int stages = four [k][0], warps = four [k][1];
        s_modes_t rule = s_kernel_rule_runs (stages, warps, 4, stages * 6 + warps + 1);
        printf ("test_decode_ring: four producers, %2d stages, %d warps: kernel's rule %d / %d / "
                "%d, v5 units %d / %d / %d, forced splits %d / %d / %d\n", stages, warps,
                rule.kernel.stale, rule.kernel.overwrite, rule.kernel.hang, rule.units.stale,
                rule.units.overwrite, rule.units.hang, rule.splits.stale, rule.splits.overwrite,
                rule.splits.hang);
        if (!s_clean (rule.kernel) || !s_clean (rule.units) || !s_clean (rule.splits)) {
            fprintf (stderr, "test_decode_ring: four producers with %d warps failed\n", warps);
            failures++;
        }
    }
    int two_seven_stale = 0;
    for (int stages = 8; stages <= 14; stages += 2) {
        s_tally_t kernel = s_ring_runs (stages, 7, 2, stages * 6 + 8, S_RULE_KERNEL, S_CUT_NONE,
                                        S_RUNS);
        two_seven_stale += kernel.stale;
    }
    printf ("test_decode_ring: two producers, 7 warps, 8-14 stages: %d stale reads in %d "
            "schedules\n", two_seven_stale, 4 * S_RUNS);
    if (two_seven_stale == 0) {
        fprintf (stderr, "test_decode_ring: no stale read found with two producers and 7 "
                 "warps\n");
        failures++;
    }
    //  The checker has teeth: the rules that were wrong are caught
    if (none_total.stale == 0) {
        fprintf (stderr, "test_decode_ring: no stale read found without the release wait\n");
        failures++;
    }
    if (units_none_stale == 0) {
        fprintf (stderr, "test_decode_ring: no stale read found in v5's units without the "
                 "release wait\n");
        failures++;
    }
    if (splits_none_stale == 0) {
        fprintf (stderr, "test_decode_ring: no stale read found in v5's forced splits without "
                 "the release wait\n");
        failures++;
    }
    if (twice_total.hang == 0) {
        fprintf (stderr, "test_decode_ring: no hang found with the fill barrier waited twice\n");
        failures++;
    }
    printf ("test_decode_ring: %s\n", failures? "FAILED": "OK");
    return failures? 1: 0;
}
