/*  =========================================================================
    kvt_decode_bulk - a decode tile's trip through shared memory by bulk copy

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    What the bulk-copy decode kernels (v3 and v4 in
    kvt_paged_attention_bulk.cu, v5 in kvt_paged_attention_balanced.cu)
    share: issuing a 16-token tile's K and V into a ring stage with
    cp.async.bulk counted on an mbarrier, and reading this lane's fragments
    back out of the stage. sm_90 and later (callers guard the
    architecture). Force-inlined. For this folder only.
@end
*/

#ifndef KVT_DECODE_BULK_CUH_INCLUDED
#define KVT_DECODE_BULK_CUH_INCLUDED

#include "kvt_paged_attention_int.cuh"

//  Copies of the tile at t0 into the stage at shared address 'dst', counted
//  on the mbarrier 'bar'; called by a whole warp. A tile of whole rows in
//  one block is one copy each for K and V, from lane 0 ('block' is its
//  table entry, which the caller read ahead of time); otherwise each valid
//  row is its own pair of copies.
template <int D>
__device__ __forceinline__ void
kvt_dev_issue_tile (const kvt_paged_attention_args_t &a, const kvt_decode_cta_t &c,
                    const char *k_head, const char *v_head, const int32_t *table, int log2_bt,
                    bool whole_tiles, int32_t block, int t0, uint32_t dst, uint32_t bar)
{
    constexpr int ROW = D * 2;
    const int bt_mask = a.block_tokens - 1;
    if (whole_tiles) {
        if (c.lane == 0) {
            int64_t offset = (int64_t) block * a.block_stride_bytes
                           + (int64_t) (t0 & bt_mask) * a.token_stride_bytes;
            kvt_dev_bar_expect (bar, 2 * 16 * ROW);
            kvt_dev_bulk_copy (dst, k_head + offset, 16 * ROW, bar);
            kvt_dev_bulk_copy (dst + 16 * ROW, v_head + offset, 16 * ROW, bar);
        }
        return;
    }
    int rows = min (16, c.end - t0);
    if (c.lane == 0)
        kvt_dev_bar_expect (bar, 2 * rows * ROW);
    __syncwarp ();
    if (c.lane < rows) {
        int64_t offset = kvt_decode_token_offset (a, table, t0 + c.lane, log2_bt, bt_mask);
        kvt_dev_bulk_copy (dst + c.lane * ROW, k_head + offset, ROW, bar);
        kvt_dev_bulk_copy (dst + 16 * ROW + c.lane * ROW, v_head + offset, ROW, bar);
    }
}

//  This lane's fragments of the tile at t0 from its stage ([K, V][row][D]).
//  Rows at or past 'end' may hold anything: their V is zeroed here, their
//  scores are masked in the tile's math.
template <int D>
__device__ __forceinline__ void
kvt_dev_tile_registers (const unsigned char *tile, int t0, int end, const kvt_decode_cta_t &c,
                        uint4 (&k_raw) [2][D / 32], uint4 (&v_raw) [2][D / 32])
{
    constexpr int ROW = D * 2;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int row = c.g + 8 * half;
        bool valid = t0 + row < end;
#pragma unroll
        for (int p = 0; p < D / 32; p++) {
            int column = (c.t + 4 * p) * 16;
            k_raw [half][p] = *(const uint4 *) (tile + row * ROW + column);
            v_raw [half][p] = valid? *(const uint4 *) (tile + 16 * ROW + row * ROW + column)
                                   : make_uint4 (0, 0, 0, 0);
        }
    }
}

//  --------------------------------------------------------------------------
//  The warp-specialised ring of v4 and v5: 'stages' stages, each with a
//  "full" mbarrier (the producer's bytes landed) and an "empty" one (its
//  tile is in a computing warp's registers). The protocol and why it holds
//  are in kvt_paged_attention_bulk.cu (v4); tests/test_decode_ring.c plays it.

//  Every stage's pair of mbarriers, one arrival a phase; the whole CTA
//  calls it, and sees them initialised on return
__device__ __forceinline__ void
kvt_dev_ring_init (uint32_t full0, uint32_t empty0, int stages)
{
    if (threadIdx.x == 0)
        for (int stage = 0; stage < stages; stage++) {
            kvt_dev_bar_init (full0 + 8 * stage, 1);
            kvt_dev_bar_init (empty0 + 8 * stage, 1);
        }
    asm volatile ("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncthreads ();
}

//  Producer warp 'producer' of PRODUCERS: of the ring's tiles k, k + 1,
//  ..., k + count - 1 (c's tiles from token 'start' on), issue those that
//  are its own (ring index = producer mod PRODUCERS), each into stage
//  index mod stages after the release of the tile a ring behind, looking
//  up 32 of its tiles' blocks at a time. 'k' counts the ring's tiles before
//  the call, the same in every producer, and advances by 'count'. Stages
//  are a multiple of PRODUCERS, so each stage has one producer, which fills
//  it in ring order; and so are the computing warps, so that each takes
//  every tile of a segment from one producer: the ring's waits are then
//  exact (tests/test_decode_ring.c; with 7 takers and 2 producers a take
//  can pass its release wait a ring early and read a stale stage). More
//  than one producer, because one warp issuing a 4 KiB copy pair at a time
//  caps the ring: kvt_probe_bulk read 4 KiB copies at 4.23 TB/s with one,
//  4.39 with two and 4.46 with four on the H200 (session 27); v4 takes
//  four, v5 two (session 28, tools/bench/RESULTS.md).
template <int D, int PRODUCERS>
__device__ __forceinline__ void
kvt_dev_ring_issue (const kvt_paged_attention_args_t &a, const kvt_decode_cta_t &c,
                    const int32_t *table, const char *k_head, const char *v_head, int log2_bt,
                    bool whole_tiles, int start, int count, uint32_t ring_smem, uint32_t full0,
                    uint32_t empty0, int stages, int producer, int &k)
{
    constexpr int STAGE = 2 * 16 * D * 2;
    constexpr int SPAN = 32 * PRODUCERS;
    const int first = ((producer - k) % PRODUCERS + PRODUCERS) % PRODUCERS;
    int stage = (k + first) % stages;
    uint32_t phase = (uint32_t) ((k + first) / stages) & 1;
    for (int j0 = first; j0 < count; j0 += SPAN) {
        int32_t block = 0;              //  Lane l: block of tile j0 + l x PRODUCERS
        const int mine = j0 + c.lane * PRODUCERS;
        if (whole_tiles && mine < count)
            block = table [(start + 16 * mine) >> log2_bt];
        for (int j = j0; j < min (count, j0 + SPAN); j += PRODUCERS) {
            int32_t tile_block = __shfl_sync (0xffffffffu, block, (j - j0) / PRODUCERS);
            if (k + j >= stages)        //  The tile a ring behind has been taken
                kvt_dev_bar_wait (empty0 + 8 * stage, phase ^ 1);
            kvt_dev_issue_tile<D> (a, c, k_head, v_head, table, log2_bt, whole_tiles,
                                   tile_block, start + 16 * j, ring_smem + stage * STAGE,
                                   full0 + 8 * stage);
            stage += PRODUCERS;
            if (stage >= stages) {
                stage -= stages;
                phase ^= 1;
            }
        }
    }
    k += count;
}

//  A computing warp's turn at the ring: the tile at t0 in 'stage' of fill
//  parity 'phase'. Waits for the release of the tile a ring before (when
//  'after_ring': this is the ring's tile 'stages' or later), then for the
//  fill; copies the tile to registers, fences the reads (a bulk copy
//  refills the stage) and gives the stage back. Then moves 'stage' on by
//  'step' tiles, flipping the parity where it wraps.
template <int D>
__device__ __forceinline__ void
kvt_dev_ring_take (const unsigned char *ring, uint32_t full0, uint32_t empty0, int stages,
                   bool after_ring, int t0, int end, const kvt_decode_cta_t &c, int step,
                   int &stage, uint32_t &phase, uint4 (&k_raw) [2][D / 32],
                   uint4 (&v_raw) [2][D / 32])
{
    constexpr int STAGE = 2 * 16 * D * 2;
    if (after_ring)
        kvt_dev_bar_wait (empty0 + 8 * stage, phase ^ 1);
    kvt_dev_bar_wait (full0 + 8 * stage, phase);
    kvt_dev_tile_registers<D> (ring + stage * STAGE, t0, end, c, k_raw, v_raw);
    kvt_dev_fence_reads_before_refill ();
    __syncwarp ();                      //  Every lane has its tile: release the stage
    if (c.lane == 0)
        kvt_dev_bar_arrive (empty0 + 8 * stage);
    stage += step;
    if (stage >= stages) {
        stage -= stages;
        phase ^= 1;
    }
}

#endif
