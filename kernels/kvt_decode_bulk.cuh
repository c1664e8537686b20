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

#endif
