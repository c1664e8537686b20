/*  =========================================================================
    kvt_decode_plan - how decode v5 cuts a batch into ranges, and finds the
    pieces again

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The integer bookkeeping of decode v5 (kvt_paged_attention_balanced.cu),
    in plain C so that the CPU tests run it (tests/test_decode_plan.c) and
    the kernel compiles the same lines (force-inlined: its PTX is the same
    as with its own copies). A batch's 16-token tiles are ordered (unit =
    KV head x head chunk, sequence, tile) and cut into 'ctas' ranges,
    [range_start (c), range_start (c + 1)). A CTA walks its range one
    segment at a time: the tiles of one (unit, sequence) inside the range.
    A segment that is a whole (unit, sequence) is written to the output by
    its CTA; any other leaves a partial state in its CTA's workspace slot
    0 (the range's first segment) or 1 (its last), and the merge finds a
    unit's pieces with range_owner and piece_slot.
    With a forced split count (args.splits > 0, the model's batch-invariant
    decode) the tiles of each (unit, sequence) are also cut into splits of
    chunk_tiles tiles from the sequence's start, and a range holds, whole,
    the splits whose first tile lies in it (kvt_decode_plan_walk_snap): a
    split is then one segment, computed by one CTA the same way whatever
    else the batch holds, and its state goes where v4's CTA of that split
    puts it.
@end
*/

#ifndef KVT_DECODE_PLAN_H_INCLUDED
#define KVT_DECODE_PLAN_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include "kvt_paged_attention.cuh"

#if defined (__CUDACC__)
#   define KVT_DECODE_PLAN_FN static __host__ __device__ __forceinline__
#else
#   define KVT_DECODE_PLAN_FN static inline
#endif

//  Whether v4 and v5 run the tile math with the tokens as mma rows
//  (kvt_decode_warp_trans.cuh): its mma columns hold up to 8 query heads
//  of a KV head; a larger group keeps kvt_decode_warp_t's 16 rows
KVT_DECODE_PLAN_FN bool
kvt_decode_plan_trans (const kvt_paged_attention_args_t *a)
{
    return a->heads / a->kv_heads <= 8;
}

//  The decode version a call runs: 1 = v2, 2 = v3, 3 = v4, 4 = v5. Below
//  sm_90 (no bulk copies, no mbarriers: 'hopper' false) every variant is
//  v2; a variant asked for is run; the default is v5 for a batch of
//  several sequences whose lengths differ or are not told (total_tokens
//  0 or under 90% of seqs x max_seq_len), else v4 (one sequence, equal
//  lengths); a forced split count (the model's batch-invariant fixed
//  splits) runs v5 too, cut at the splits, which computes each split as
//  v4's CTA of it does, bit for bit, without v4's CTA for every split of
//  every sequence up to max_seq_len
KVT_DECODE_PLAN_FN int
kvt_decode_plan_version (const kvt_paged_attention_args_t *a, bool hopper)
{
    if (!hopper)
        return 1;
    if (a->variant)
        return a->variant;
    if (a->splits > 0)
        return 4;
    bool even = a->total_tokens > 0
             && a->total_tokens * 10 >= (int64_t) a->seqs * a->max_seq_len * 9;
    return a->seqs < 2 || even? 3: 4;
}

//  The CTAs v5 runs on 'slots' (one a SM): a multiple of the units where
//  there are more slots, so that the CTAs of every unit start at the same
//  (sequence, tile) and read the same blocks' other heads in step. With
//  forced splits ('splits_total' = seqs x units x splits, exact for equal
//  lengths) a range computes whole splits and the range holding the most
//  sets the kernel's time; where the in-step count gives some range a
//  sixteenth more splits than the least any count up to 'slots' can, the
//  fewest CTAs that hold no more than that least are taken. H200 (session
//  30): 33 x 8K tokens, one split each (264 splits): 128 CTAs give some
//  three, 3.39 TB/s; 132 give each two, 4.23-4.25. Under a sixteenth the
//  in-step order's ~1% is worth more (65 x 4K in splits of 448 tokens:
//  41 against 40 splits a range, 1% slower off step).
KVT_DECODE_PLAN_FN int
kvt_decode_plan_ctas (int units, int slots, int64_t splits_total)
{
    int in_step = units <= slots? slots / units * units: slots;
    if (splits_total <= 0 || slots <= 0)
        return in_step;
    int64_t least = (splits_total + slots - 1) / slots;
    if ((splits_total + in_step - 1) / in_step * 16 < least * 17)
        return in_step;
    return (int) ((splits_total + least - 1) / least);
}

//  Tiles of one unit of sequence 'seq'
KVT_DECODE_PLAN_FN int
kvt_decode_plan_unit_tiles (const int32_t *seq_lens, int seq)
{
    int len = seq_lens [seq];
    return len > 0? (len + 15) >> 4: 0;
}

//  First tile of range c, of 'ctas' ranges over 'tiles' tiles
KVT_DECODE_PLAN_FN int64_t
kvt_decode_plan_range_start (int64_t c, int64_t tiles, int ctas)
{
    return c * tiles / ctas;
}

//  The range that holds 'tile': the last c with range_start (c) <= tile
KVT_DECODE_PLAN_FN int
kvt_decode_plan_range_owner (int64_t tile, int64_t tiles, int ctas)
{
    return (int) (((tile + 1) * ctas - 1) / tiles);
}

//  The workspace slot of the piece that range c holds of a unit cut over
//  ranges c0 (the owner of its first tile, 'first') to some c1 > c0: the
//  first segment of every range after c0 (slot 0), and c0's last (slot 1)
//  unless c0's range starts at 'first'. A range with no tiles (fewer
//  tiles than ranges) holds no piece; the caller skips it.
KVT_DECODE_PLAN_FN int
kvt_decode_plan_piece_slot (int c, int c0, int64_t first, int64_t tiles, int ctas)
{
    return c == c0 && kvt_decode_plan_range_start (c0, tiles, ctas) < first? 1: 0;
}

//  Where a walk of a range stands: the unit and sequence of the next tile,
//  the first tile of that (unit, sequence) in the batch, and its tiles
typedef struct {
    int64_t begin, end, next;           //  The range, and its next tile
    int unit, seq;
    int64_t first;
    int tiles;
    int chunk_tiles;                    //  Tiles a split when forced, else 0
} kvt_decode_plan_walk_t;

//  One unit's tiles in a range: tiles [tile0, tile0 + count) of unit
//  'unit' of 'seq', the first at index 'local' of the range (ranges hold
//  far fewer than 2^31 tiles: 2^35 tokens of KV a SM)
typedef struct {
    int seq, unit, tile0, count;
    int local;
    bool whole;                         //  The whole unit (written to the output
                                        //  unless splits are forced and more than 1)
    bool seq_start;                     //  The sequence's first tile in unit 0
    int slot;                           //  Else its workspace slot: 0 first, 1 last
    int split;                          //  With forced splits: the split it is
} kvt_decode_plan_segment_t;

//  With forced splits, move a walk that starts at the range's first tile
//  on to the first split that starts in the range (the one before belongs
//  to an earlier range, or to none if the range holds no split's start):
//  the range begins there. Nothing to do without forced splits.
KVT_DECODE_PLAN_FN void
kvt_decode_plan_walk_snap (kvt_decode_plan_walk_t *walk)
{
    if (walk->chunk_tiles <= 0 || walk->next >= walk->end)
        return;
    int64_t offset = walk->next - walk->first;
    int64_t up = (offset + walk->chunk_tiles - 1) / walk->chunk_tiles * walk->chunk_tiles;
    walk->next = walk->first + (up < walk->tiles? up: walk->tiles);
    walk->begin = walk->next;
}

//  The walk's next segment; false at the range's end. With forced splits
//  a segment is one whole split, which may run past the range's end.
KVT_DECODE_PLAN_FN bool
kvt_decode_plan_walk_next (kvt_decode_plan_walk_t *walk, const int32_t *seq_lens, int seqs,
                           kvt_decode_plan_segment_t *segment)
{
    if (walk->next >= walk->end)
        return false;
    while (walk->next >= walk->first + walk->tiles) {
        walk->first += walk->tiles;
        if (++walk->seq == seqs) {
            walk->seq = 0;
            walk->unit++;
        }
        walk->tiles = kvt_decode_plan_unit_tiles (seq_lens, walk->seq);
    }
    int64_t offset = walk->next - walk->first;
    segment->seq = walk->seq;
    segment->unit = walk->unit;
    segment->tile0 = (int) offset;
    int64_t unit_end = walk->first + walk->tiles;
    int64_t stop = unit_end < walk->end? unit_end: walk->end;
    segment->split = 0;
    if (walk->chunk_tiles > 0) {
        segment->split = (int) (offset / walk->chunk_tiles);
        int64_t split_end = walk->first + (int64_t) (segment->split + 1) * walk->chunk_tiles;
        stop = unit_end < split_end? unit_end: split_end;
    }
    segment->count = (int) (stop - walk->next);
    segment->local = (int) (walk->next - walk->begin);
    segment->whole = segment->tile0 == 0 && stop == unit_end;
    segment->seq_start = offset == 0 && walk->unit == 0;
    segment->slot = walk->next == walk->begin? 0: 1;
    walk->next = stop;
    return true;
}

#endif
