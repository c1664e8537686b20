/*  =========================================================================
    test_decode_plan - decode v5's cut of a batch into ranges, and the merge
    finding every piece, checked on the CPU

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Decode v5 (kernels/kvt_paged_attention_balanced.cu) cuts a batch's
    tiles into one range a CTA and writes the pieces of cut units into
    workspace slots that a second kernel finds again by arithmetic. Both
    sides run kernels/kvt_decode_plan.h, the lines this test runs: for
    random batches (empty and long sequences, 1 to 40 units, more or fewer
    tiles than CTAs, the launcher's CTA count) it walks every range as the
    kernel does and checks that
    - every tile of every (unit, sequence) is walked exactly once, and each
      range's segments follow each other ('local' is the range's index);
    - a segment is "whole" exactly when its (unit, sequence) lies in one
      range, and each sequence's first tile in unit 0 is marked once;
    - no two pieces of a range share a slot, and for every cut unit the
      merge's (range, slot) list is exactly the list of pieces written;
    and, with forced splits (the model's batch-invariant decode), that
    every split is walked once, whole, as one segment, by the range that
    holds its first tile, with its split index, and that no range then
    walks more than its share plus a split less a tile;
    and that the default picks v5 exactly for batches whose lengths differ
    or are not told, or whose splits are forced.
    The GPU test (test_gpu_paged_attention) checks the outputs on the card;
    this one runs in CI and covers batch shapes the card's cases do not.
@end
*/

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_decode_plan.h"
#include "kvt_util.h"

#define T_MAX_PIECES 4096

//  What the decode side wrote for a cut unit: which range, which slot
typedef struct {
    int unit, seq, range, slot;
} t_piece_t;

static int failures;

#define T_EXPECT(cond, ...) do { if (!(cond)) { failures++; \
    fprintf (stderr, "test_decode_plan: " __VA_ARGS__); fprintf (stderr, "\n"); } } while (0)

//  The kernel's walk start (warp-collective there), done serially: the
//  unit of 'begin', then the first sequence whose tiles reach past it
static kvt_decode_plan_walk_t
t_walk_start (const int32_t *lens, int seqs, int64_t unit_tiles, int64_t begin, int64_t end)
{
    kvt_decode_plan_walk_t walk = { begin, end, begin, (int) (begin / unit_tiles), seqs, 0, 0, 0 };
    int64_t before = walk.unit * unit_tiles;
    for (int seq = 0; seq < seqs; seq++) {
        int tiles = kvt_decode_plan_unit_tiles (lens, seq);
        if (before + tiles > begin) {
            walk.seq = seq;
            walk.first = before;
            walk.tiles = tiles;
            return walk;
        }
        before += tiles;
    }
    return walk;
}

//  Each sequence's first tile in a unit (the caller frees it), and the
//  unit's tiles in 'unit_tiles'
static int64_t *
t_prefix (const int32_t *lens, int seqs, int64_t *unit_tiles)
{
    int64_t *prefix = (int64_t *) calloc ((size_t) seqs + 1, sizeof (int64_t));
    *unit_tiles = 0;
    for (int s = 0; s < seqs; s++) {
        prefix [s] = *unit_tiles;
        *unit_tiles += kvt_decode_plan_unit_tiles (lens, s);
    }
    return prefix;
}

//  One batch: seqs lengths, 'units' units, 'ctas' ranges
static void
t_batch (const int32_t *lens, int seqs, int units, int ctas)
{
    int64_t unit_tiles;
    int64_t *prefix = t_prefix (lens, seqs, &unit_tiles);
    int64_t total = unit_tiles * units;
    if (total == 0) {
        free (prefix);
        return;                             //  The kernel's ranges are all empty
    }
    uint8_t *seen = (uint8_t *) calloc ((size_t) total, 1);
    int *seq_starts = (int *) calloc ((size_t) seqs, sizeof (int));
    static t_piece_t pieces [T_MAX_PIECES];
    int piece_count = 0;
    for (int c = 0; c < ctas; c++) {
        int64_t begin = kvt_decode_plan_range_start (c, total, ctas);
        int64_t end = kvt_decode_plan_range_start (c + 1, total, ctas);
        if (begin >= end)
            continue;
        kvt_decode_plan_walk_t walk = t_walk_start (lens, seqs, unit_tiles, begin, end);
        kvt_decode_plan_segment_t segment;
        int local = 0, slots_used [2] = { 0, 0 };
        while (kvt_decode_plan_walk_next (&walk, lens, seqs, &segment)) {
            int64_t first = segment.unit * unit_tiles + prefix [segment.seq];
            int tiles = kvt_decode_plan_unit_tiles (lens, segment.seq);
            T_EXPECT (segment.local == local, "range %d: segment at %d, expected %d", c,
                      segment.local, local);
            T_EXPECT (segment.count > 0 && segment.tile0 + segment.count <= tiles,
                      "range %d: tiles %d + %d of %d", c, segment.tile0, segment.count, tiles);
            for (int j = 0; j < segment.count; j++) {
                int64_t tile = first + segment.tile0 + j;
                T_EXPECT (tile >= begin && tile < end, "range %d walked tile %lld outside it", c,
                          (long long) tile);
                if (tile >= 0 && tile < total)
                    seen [tile]++;
            }
            local += segment.count;
            bool one_range = kvt_decode_plan_range_owner (first, total, ctas)
                          == kvt_decode_plan_range_owner (first + tiles - 1, total, ctas);
            T_EXPECT (segment.whole == one_range, "unit %d seq %d: whole %d, one range %d",
                      segment.unit, segment.seq, segment.whole, one_range);
            if (segment.seq_start) {
                T_EXPECT (segment.unit == 0 && segment.tile0 == 0
                          && walk.first == prefix [segment.seq],
                          "seq %d: its start marked at unit %d tile %d", segment.seq,
                          segment.unit, segment.tile0);
                seq_starts [segment.seq]++;
            }
            if (!segment.whole) {
                T_EXPECT (segment.slot == 0 || segment.slot == 1, "slot %d", segment.slot);
                slots_used [segment.slot & 1]++;
                if (piece_count < T_MAX_PIECES)
                    pieces [piece_count++] = (t_piece_t) { segment.unit, segment.seq, c,
                                                           segment.slot };
            }
        }
        T_EXPECT (local == end - begin, "range %d walked %d of %lld tiles", c, local,
                  (long long) (end - begin));
        T_EXPECT (slots_used [0] <= 1 && slots_used [1] <= 1, "range %d: slots used %d / %d", c,
                  slots_used [0], slots_used [1]);
    }
    for (int64_t tile = 0; tile < total; tile++)
        if (seen [tile] != 1) {
            T_EXPECT (false, "tile %lld walked %d times", (long long) tile, seen [tile]);
            break;
        }
    for (int s = 0; s < seqs; s++)
        T_EXPECT (seq_starts [s] == (kvt_decode_plan_unit_tiles (lens, s) > 0),
                  "seq %d start marked %d times", s, seq_starts [s]);
    //  The merge's side: for each cut (unit, sequence), the ranges it reads
    //  and their slots are exactly the pieces written
    int found = 0;
    for (int unit = 0; unit < units; unit++)
        for (int s = 0; s < seqs; s++) {
            int tiles = kvt_decode_plan_unit_tiles (lens, s);
            if (tiles == 0)
                continue;
            int64_t first = unit * unit_tiles + prefix [s];
            int c0 = kvt_decode_plan_range_owner (first, total, ctas);
            int c1 = kvt_decode_plan_range_owner (first + tiles - 1, total, ctas);
            if (c0 == c1)
                continue;
            int c0_slot = kvt_decode_plan_piece_slot (c0, c0, first, total, ctas);
            for (int c = c0; c <= c1; c++) {
                if (kvt_decode_plan_range_start (c, total, ctas)
                    == kvt_decode_plan_range_start (c + 1, total, ctas))
                    continue;               //  An empty range: the merge skips it
                int slot = c == c0? c0_slot: 0;
                T_EXPECT (slot == kvt_decode_plan_piece_slot (c, c0, first, total, ctas),
                          "piece_slot disagrees with the merge's hoisted rule");
                bool written = false;
                for (int p = 0; p < piece_count && !written; p++)
                    written = pieces [p].unit == unit && pieces [p].seq == s
                           && pieces [p].range == c && pieces [p].slot == slot;
                T_EXPECT (written, "unit %d seq %d: the merge reads range %d slot %d, never "
                          "written", unit, s, c, slot);
                found++;
            }
        }
    T_EXPECT (piece_count >= T_MAX_PIECES || found == piece_count,
              "%d pieces written, the merge reads %d", piece_count, found);
    free (prefix);
    free (seen);
    free (seq_starts);
}

//  One batch with forced splits of 'chunk' tiles: each range walks, whole,
//  the splits whose first tile it holds
//  Returns the most splits any range walked
static int
t_batch_fixed (const int32_t *lens, int seqs, int units, int ctas, int chunk)
{
    int most = 0;
    int64_t unit_tiles;
    int64_t *prefix = t_prefix (lens, seqs, &unit_tiles);
    int64_t total = unit_tiles * units;
    uint8_t *seen = (uint8_t *) calloc ((size_t) total + 1, 1);
    for (int c = 0; c < ctas && total > 0; c++) {
        int64_t begin = kvt_decode_plan_range_start (c, total, ctas);
        int64_t end = kvt_decode_plan_range_start (c + 1, total, ctas);
        if (begin >= end)
            continue;
        kvt_decode_plan_walk_t walk = t_walk_start (lens, seqs, unit_tiles, begin, end);
        walk.chunk_tiles = chunk;
        kvt_decode_plan_walk_snap (&walk);
        kvt_decode_plan_segment_t segment;
        int local = 0, walked = 0;
        while (kvt_decode_plan_walk_next (&walk, lens, seqs, &segment)) {
            walked++;
            int64_t first = segment.unit * unit_tiles + prefix [segment.seq];
            int tiles = kvt_decode_plan_unit_tiles (lens, segment.seq);
            int whole_split = tiles - segment.tile0 < chunk? tiles - segment.tile0: chunk;
            T_EXPECT (segment.tile0 % chunk == 0 && segment.split == segment.tile0 / chunk
                      && segment.count == whole_split,
                      "range %d: tiles %d + %d of %d, split %d of %d tiles", c, segment.tile0,
                      segment.count, tiles, segment.split, chunk);
            T_EXPECT (first + segment.tile0 >= begin && first + segment.tile0 < end,
                      "range %d [%lld, %lld) walked a split starting at %lld", c,
                      (long long) begin, (long long) end, (long long) (first + segment.tile0));
            T_EXPECT (segment.local == local, "range %d: segment at %d, expected %d", c,
                      segment.local, local);
            T_EXPECT (segment.whole == (segment.tile0 == 0 && segment.count == tiles),
                      "unit %d seq %d: whole %d", segment.unit, segment.seq, segment.whole);
            for (int j = 0; j < segment.count; j++)
                if (first + segment.tile0 + j < total)
                    seen [first + segment.tile0 + j]++;
            local += segment.count;
        }
        T_EXPECT (local <= end - begin + chunk - 1, "range %d walked %d tiles, its share %lld",
                  c, local, (long long) (end - begin));
        most = walked > most? walked: most;
    }
    for (int64_t tile = 0; tile < total; tile++)
        if (seen [tile] != 1) {
            T_EXPECT (false, "forced splits of %d: tile %lld walked %d times", chunk,
                      (long long) tile, seen [tile]);
            break;
        }
    free (prefix);
    free (seen);
    return most;
}

//  With forced splits of equal sequences, the launcher's CTA count gives
//  no range more splits than the least any count of CTAs up to the slots
//  can, ceil (splits / slots), unless the in-step count (a multiple of
//  the units) is within a sixteenth of it: then that count
static void
t_fixed_balance (uint64_t *state)
{
    //  H200 cases (132 slots, 8 KV heads): 33 x 8K, 65 and 66 x 4K with one
    //  split each, 66 x 4K with four, the model's 448-token splits; then
    //  random ones
    static const int cases [][5] = {            //  seqs, len, units, slots, chunk
        { 33, 8192, 8, 132, 512 }, { 65, 4096, 8, 132, 256 }, { 66, 4096, 8, 132, 256 },
        { 66, 4096, 8, 132, 64 }, { 12, 3072, 8, 132, 28 }, { 64, 4096, 8, 132, 256 },
    };
    for (int k = 0; k < 200; k++) {
        int seqs, len, units, slots, chunk;
        if (k < 6) {
            seqs = cases [k][0], len = cases [k][1], units = cases [k][2];
            slots = cases [k][3], chunk = cases [k][4];
        }
        else {
            seqs = 1 + (int) (kvt_splitmix64 (state) % 80);
            units = 1 + (int) (kvt_splitmix64 (state) % 16);
            slots = 1 + (int) (kvt_splitmix64 (state) % 264);
            chunk = 4 * (1 + (int) (kvt_splitmix64 (state) % 64));
            len = 16 * chunk * (1 + (int) (kvt_splitmix64 (state) % 8));   //  Whole splits
        }
        int splits = (len + 16 * chunk - 1) / (16 * chunk);
        int64_t total = (int64_t) seqs * units * splits;
        int ctas = kvt_decode_plan_ctas (units, slots, total);
        int in_step = units <= slots? slots / units * units: slots;
        int32_t *lens = (int32_t *) malloc ((size_t) seqs * sizeof (int32_t));
        for (int s = 0; s < seqs; s++)
            lens [s] = len;
        int most = t_batch_fixed (lens, seqs, units, ctas, chunk);
        int64_t least = (total + slots - 1) / slots;
        int64_t in_step_most = (total + in_step - 1) / in_step;
        if (in_step_most * 16 >= least * 17)
            T_EXPECT (ctas >= 1 && ctas <= slots && most == least,
                      "%d x %d tokens, %d units, %d slots, splits of %d tiles: %d CTAs, "
                      "a range up to %d splits, least %lld", seqs, len, units, slots, chunk,
                      ctas, most, (long long) least);
        else
            T_EXPECT (ctas == in_step && most == in_step_most,
                      "%lld splits on %d slots: in step %d (up to %lld a range), got %d (%d)",
                      (long long) total, slots, in_step, (long long) in_step_most, ctas, most);
        free (lens);
    }
}

//  The default's choice between v4 and v5, and what overrides it
static void
t_versions (void)
{
    kvt_paged_attention_args_t a = { .seqs = 64, .max_seq_len = 4096,
                                     .total_tokens = 64 * 4096 };
    T_EXPECT (kvt_decode_plan_version (&a, true) == 3, "equal lengths: v4");
    a.max_seq_len = 4000;                               //  So that 90% is a whole number
    a.total_tokens = 64 * 4000 / 10 * 9;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 3, "90%% of the bound: v4");
    a.total_tokens -= 1;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 4, "under 90%%: v5");
    a.total_tokens = 0;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 4, "lengths not told: v5");
    a.splits = 16;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 4, "forced splits: v5");
    a.total_tokens = 64 * 4000;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 4, "forced splits, equal lengths: v5");
    a.splits = 0;
    a.seqs = 1;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 3, "one sequence: v4");
    a.splits = 3;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 4, "one sequence, forced splits: v5");
    a.splits = 0;
    a.seqs = 64;
    a.variant = 2;
    T_EXPECT (kvt_decode_plan_version (&a, true) == 2, "a variant asked for");
    a.variant = 0;
    T_EXPECT (kvt_decode_plan_version (&a, false) == 1, "below sm_90: v2");
    a.variant = 4;
    T_EXPECT (kvt_decode_plan_version (&a, false) == 1, "below sm_90, v5 asked: v2");
    //  The tile math: tokens as mma rows up to 8 query heads a KV head
    kvt_paged_attention_args_t gqa = { .heads = 32, .kv_heads = 8 };
    T_EXPECT (kvt_decode_plan_trans (&gqa), "group 4: tokens as rows");
    gqa.kv_heads = 4;
    T_EXPECT (kvt_decode_plan_trans (&gqa), "group 8: tokens as rows");
    gqa.heads = 24;
    gqa.kv_heads = 2;
    T_EXPECT (!kvt_decode_plan_trans (&gqa), "group 12: heads as rows");
    //  The mixed batch of bench kernels: one 128K context and 63 chats
    kvt_paged_attention_args_t mixed = { .seqs = 64, .max_seq_len = 131072,
                                         .total_tokens = 131072 + 63 * 4608 };
    T_EXPECT (kvt_decode_plan_version (&mixed, true) == 4, "the mixed batch: v5");
}

int
main (void)
{
    t_versions ();
    uint64_t state = 0xdec0de5;
    t_fixed_balance (&state);
    int batches = 0;
    for (int round = 0; round < 600; round++) {
        int shape = round % 4;
        int seqs = 1 + (int) (kvt_splitmix64 (&state) % (shape == 3? 100: 300));
        int units = 1 + (int) (kvt_splitmix64 (&state) % 40);
        int slots = 1 + (int) (kvt_splitmix64 (&state) % 264);
        int32_t *lens = (int32_t *) malloc ((size_t) seqs * sizeof (int32_t));
        for (int s = 0; s < seqs; s++) {
            uint64_t draw = kvt_splitmix64 (&state);
            lens [s] = shape == 0? (int32_t) (draw % 40)                 //  Fewer tiles than CTAs
                     : shape == 1? (int32_t) (draw % 5000)               //  Ragged
                     : shape == 2? 4096                                  //  Uniform
                     : s == 0? 131072: 1024 + (int32_t) (draw % 7169);   //  A long one and chats
            if (draw % 11 == 0)
                lens [s] = 0;                                            //  Empty sequences
        }
        //  The launcher's CTA count: a multiple of the units where it can
        int ctas = kvt_decode_plan_ctas (units, slots, 0);
        t_batch (lens, seqs, units, ctas);
        t_batch (lens, seqs, units, slots);
        //  Forced splits: 64, 256 and 448 tokens, or any multiple of 64
        static const int chunks [] = { 4, 16, 28 };
        int chunk = round % 5 < 3? chunks [round % 5]
                                 : 4 * (1 + (int) (kvt_splitmix64 (&state) % 16));
        int max_len = 0;
        for (int s = 0; s < seqs; s++)
            max_len = lens [s] > max_len? lens [s]: max_len;
        int splits = (max_len + 16 * chunk - 1) / (16 * chunk);
        t_batch_fixed (lens, seqs, units,
                       kvt_decode_plan_ctas (units, slots, (int64_t) seqs * units * splits),
                       chunk);
        batches += 3;
        free (lens);
        if (failures > 20)
            break;
    }
    printf ("test_decode_plan: %d batches, %d failures\n", batches, failures);
    return failures? 1: 0;
}
