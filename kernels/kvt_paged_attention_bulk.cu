/*  =========================================================================
    kvt_paged_attention_bulk - paged decode attention through bulk copies

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    v3 and v4 of the decode kernel (the versions and their figures are in
    kvt_paged_attention.cu): the SM's copy engine (cp.async.bulk, the TMA's
    1D form) brings each 16-token tile's K and V into shared memory, where
    the 16-byte loads of v2 top out near 4.15 TB/s on the H200. sm_90 and
    later; the launcher never picks them below.
@end
*/

#include "kvt_decode_bulk.cuh"
#include "kvt_decode_warp_trans.cuh"

namespace {

//  --------------------------------------------------------------------------
//  v3 (variant 2): a ring filled by the copy engine of the SM (cp.async.bulk, the
//  TMA's 1D form) instead of the load/store units. Lane 0 of each warp
//  copies a tile's K and V into a stage and the stage's mbarrier counts
//  the bytes in; the warp waits on it and reads its fragments from shared
//  memory. Why: on the H200 a read of the shuffled 16x32K KV with no math
//  at all reaches 4.10-4.20 TB/s through 16-byte loads however they are
//  arranged or how many are in flight, and 4.40-4.45 through bulk copies
//  (tools/bench/RESULTS.md, session 20). A tile whose 16 rows are one
//  contiguous run (blocks of 16 tokens or more, rows of exactly D
//  elements) is one copy each for K and V; otherwise each valid row is its
//  own copy. Rows at or past 'end' may hold anything: their scores are
//  masked and their V is zeroed in registers. Stage layout [K, V][row]
//  [D] as in global memory; fragment reads meet 2-way bank conflicts
//  (rows g and g + 1 of a quarter warp share banks), a small cost beside
//  the bytes: a conflict-free layout (rows 8-15 64 bytes on, lanes g and
//  g + 1 reading one of each half) was 1% faster than the same copies with
//  the conflicts, and both 14% slower than this, for their four copies a
//  tile instead of two (H200, session 24). After the loop the ring becomes
//  the merge buffer.

//  Dynamic shared memory of a ring kernel: its stages, or the merge
//  buffer that takes their place after the loop, whichever is larger
template <int D, int STAGES>
constexpr int
s_ring_bytes ()
{
    return KVT_DECODE_WARPS * STAGES * 2 * 16 * D * 2 > KVT_DECODE_WARPS * 16 * (D + 1) * 4
         ? KVT_DECODE_WARPS * STAGES * 2 * 16 * D * 2: KVT_DECODE_WARPS * 16 * (D + 1) * 4;
}

template <typename T, int D, int STAGES, int MIN_CTAS>
__global__ void __launch_bounds__ (KVT_DECODE_WARPS * 32, MIN_CTAS)
s_decode_bulk_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                      int head_chunks, float *ws_out, float *ws_lse)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int PC = D / 32;
    constexpr int ROW = D * 2;              //  Bytes of a token row
    constexpr int STAGE = 2 * 16 * ROW;     //  K and V of 16 rows
    __shared__ float sm_m [KVT_DECODE_WARPS][16];
    __shared__ float sm_l [KVT_DECODE_WARPS][16];
    __shared__ __align__ (8) uint64_t sm_bar [KVT_DECODE_WARPS][STAGES];
    extern __shared__ __align__ (16) unsigned char sm_ring [];
    kvt_dev_launch_dependents ();
    const kvt_decode_cta_t c = kvt_decode_cta (a, split_len, head_chunks);
    if (splits > 1 && c.end <= c.start)
        return;                             //  A split past the sequence's end: the merge skips it
    kvt_decode_warp_t<T, D> w;
    w.begin (a, c);
    const int32_t *table = a.block_table + (size_t) c.seq * a.max_blocks_per_seq;
    const char *k_head = (const char *) a.k + c.kv_head * a.head_stride_bytes;
    const char *v_head = (const char *) a.v + c.kv_head * a.head_stride_bytes;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    const bool whole_tiles = a.block_tokens >= 16 && a.token_stride_bytes == ROW;
    unsigned char *ring = sm_ring + c.warp * STAGES * STAGE;
    const uint32_t ring_smem = (uint32_t) __cvta_generic_to_shared (ring);
    const uint32_t bar0 = (uint32_t) __cvta_generic_to_shared (&sm_bar [c.warp][0]);
    if (c.lane == 0)
        for (int stage = 0; stage < STAGES; stage++)
            kvt_dev_bar_init (bar0 + 8 * stage, 1);
    asm volatile ("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncwarp ();
    //  Tile at t0 (< end) into 'stage'. Tiles are issued in order, one
    //  step apart, so lane 0 looks up the next tile's block as it issues
    //  this one: the table read's latency falls outside the loop's path
    const int step = KVT_DECODE_WARPS * 16;
    const int first = c.start + c.warp * 16;
    int32_t pending = 0;                    //  Lane 0: block of the next tile to issue
    if (whole_tiles && c.lane == 0 && first < c.end)
        pending = table [first >> log2_bt];
    auto issue = [&] (int t0, int stage) {
        int32_t block = pending;
        if (whole_tiles && c.lane == 0 && t0 + step < c.end)
            pending = table [(t0 + step) >> log2_bt];
        kvt_dev_issue_tile<D> (a, c, k_head, v_head, table, log2_bt, whole_tiles, block, t0,
                               ring_smem + stage * STAGE, bar0 + 8 * stage);
    };
#pragma unroll
    for (int j = 0; j < STAGES; j++)
        if (first + j * step < c.end)
            issue (first + j * step, j);
    int stage = 0;
    uint32_t parity = 0;
    for (int t0 = first; t0 < c.end; t0 += step) {
        kvt_dev_bar_wait (bar0 + 8 * stage, parity);
        uint4 k_raw [2][PC], v_raw [2][PC];
        kvt_dev_tile_registers<D> (ring + stage * STAGE, t0, c.end, c, k_raw, v_raw);
        //  The tile is in registers: its stage takes the tile STAGES ahead
        //  now, not after the math, so every stage is in flight while the
        //  warp computes (bulk copies need ~190 KiB in flight a SM)
        kvt_dev_fence_reads_before_refill ();
        __syncwarp ();
        if (t0 + STAGES * step < c.end)
            issue (t0 + STAGES * step, stage);
        if (++stage == STAGES) {
            stage = 0;
            parity ^= 1;
        }
        w.tile (k_raw, v_raw, t0, c.end, c.t);
    }
    __syncthreads ();                       //  Every warp is done with its ring
    w.template finish<KVT_DECODE_WARPS> (a, c, c.warp, splits, sm_m, sm_l,
                                (float (*) [16][D + 1]) sm_ring, ws_out, ws_lse);
#else
    __trap ();                              //  Never launched below sm_90 (s_kernel)
#endif
}

//  --------------------------------------------------------------------------
//  v4 (variant 3): v3 warp-specialised. Four producer warps issue the
//  tiles' bulk copies (warp p the tiles p mod 4) into a ring shared by the CTA,
//  up to S_WS_BYTES of stages ahead, looking up 32 tiles' blocks at a time;
//  S_WS_CONSUMERS warps compute, consumer w taking tiles w, w + 8, ... (one
//  producer warp and 7 computing warps until session 27). Each stage has a
//  "full" mbarrier (the producer's expected bytes land) and an "empty" one
//  (the consumer has its tile in registers): a stage is refilled while its
//  last tile is still being computed, so all of the ring but the tiles
//  being copied to registers is in flight. Deadlock-free: the producer
//  issues in tile order and waits only for the release of the tile a ring
//  behind, which its consumer reaches first.
//
//  Before it waits for its tile's fill, a consumer waits for the release of
//  the tile a ring before on the same stage (tile j - STAGES, another
//  consumer's: tiles go round-robin, stages in ring order). A parity wait
//  passes as soon as the barrier's phase parity differs from the one given,
//  so it tells "this fill landed" from "not yet" only if the stage's
//  previous fill is known to have landed, which it has once that tile was
//  released. The release barrier can only be in that phase or the next
//  (this consumer has not released tile j), so that wait is exact. Without
//  it, a consumer ahead of the producer could read a stage whose previous
//  fill was still landing (bulk copies may land out of order), and its
//  early release let the producer refill a stage still being read.
//  tests/test_decode_ring.c plays this protocol on modelled mbarriers under
//  random schedules and landing orders: this rule never reads early,
//  overwrites or hangs; without the release wait it reads early; with a
//  second wait on the fill barrier instead it hangs. Change the ring's
//  waits there first. Each consumer also fences its reads of a stage
//  before giving it back (kvt_dev_fence_reads_before_refill): the reads
//  are generic-proxy loads, the refill an async-proxy bulk copy, an order
//  the mbarriers alone do not give (session 23; the ring model does not
//  see proxies). History (session 21, tools/bench/RESULTS.md): a
//  2-CTAs-a-SM variant crashed once in two bench runs, which the race can
//  explain; each stage one consumer's (28 stages for 7, 224 KiB) was 7-14%
//  slower, consumers polling a count of issued tiles 23%; this wait costs
//  nothing measurable. racecheck reported the stage reads against the bulk
//  copies on the two correct versions it ran on too; we read that as the
//  tool not following the copies' mbarrier completion.
//
//  One CTA a SM (384 threads, 137 registers since the tokens-as-rows math
//  of session 25; until then 9 warps at 187 registers were refused at
//  launch as "too many resources"). Session 28, H200, A/B in one call:
//  two producers against one +2.5% at 64x4K, +0.5% at 16x32K, -1.5 to
//  -2.5% at 1x128K (ncu times the kernel alone within 0.6%: both at 86%
//  of DRAM peak); four against two +0.3% / +1.5% / +2.5%, so four. Tried: the same kernel at two CTAs
//  a SM (3 computing warps and a 104 KiB ring each), so one CTA's start
//  and end overlap the other's streaming: 3.39-3.40 / 3.45 / 3.16 TB/s at
//  64x4K / 16x32K / 1x128K against v4's 4.14-4.17 / 4.40 / 4.06 in the same
//  calls on the H200 (session 21).

#define S_WS_CONSUMERS 8                //  With the producers, 12 warps: 168 registers a thread
#define S_WS_PRODUCERS 4                //  Divides S_WS_CONSUMERS and the stages (kvt_dev_ring_issue)
#define S_WS_BYTES (208 * 1024)         //  Ring bytes; the merge buffer fits in it

template <int D>
constexpr int
s_ws_stages ()
{
    return S_WS_BYTES / (2 * 16 * D * 2) / S_WS_PRODUCERS * S_WS_PRODUCERS;
}

template <typename T, int D, typename W>
__global__ void __launch_bounds__ ((S_WS_CONSUMERS + S_WS_PRODUCERS) * 32, 1)
s_decode_ws_kernel (const kvt_paged_attention_args_t a, int split_len, int splits,
                    int head_chunks, float *ws_out, float *ws_lse)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int PC = D / 32;
    constexpr int ROW = D * 2;
    constexpr int STAGES = s_ws_stages<D> ();
    static_assert (S_WS_CONSUMERS % S_WS_PRODUCERS == 0 && STAGES % S_WS_PRODUCERS == 0,
                   "each stage and each computing warp has one producer");
    __shared__ float sm_m [S_WS_CONSUMERS + 1][16];     //  Row S_WS_CONSUMERS: the
    __shared__ float sm_l [S_WS_CONSUMERS + 1][16];     //  producers', never merged
    __shared__ __align__ (8) uint64_t sm_full [STAGES];
    __shared__ __align__ (8) uint64_t sm_empty [STAGES];
    extern __shared__ __align__ (16) unsigned char sm_ring [];
    kvt_dev_launch_dependents ();
    const kvt_decode_cta_t c = kvt_decode_cta (a, split_len, head_chunks);
    if (splits > 1 && c.end <= c.start)
        return;                             //  A split past the sequence's end: the merge skips it
    const int tiles = c.end > c.start? (c.end - c.start + 15) / 16: 0;
    const uint32_t ring_smem = (uint32_t) __cvta_generic_to_shared (sm_ring);
    const uint32_t full0 = (uint32_t) __cvta_generic_to_shared (&sm_full [0]);
    const uint32_t empty0 = (uint32_t) __cvta_generic_to_shared (&sm_empty [0]);
    kvt_dev_ring_init (full0, empty0, STAGES);
    const int32_t *table = a.block_table + (size_t) c.seq * a.max_blocks_per_seq;
    const int log2_bt = __ffs (a.block_tokens) - 1;
    float (*sm_acc) [16][D + 1] = (float (*) [16][D + 1]) sm_ring;
    if (c.warp >= S_WS_CONSUMERS) {
        //  Producers
        const char *k_head = (const char *) a.k + c.kv_head * a.head_stride_bytes;
        const char *v_head = (const char *) a.v + c.kv_head * a.head_stride_bytes;
        const bool whole_tiles = a.block_tokens >= 16 && a.token_stride_bytes == ROW;
        int k = 0;
        kvt_dev_ring_issue<D, S_WS_PRODUCERS> (a, c, table, k_head, v_head, log2_bt, whole_tiles,
                                               c.start, tiles, ring_smem, full0, empty0, STAGES,
                                               c.warp - S_WS_CONSUMERS, k);
        __syncthreads ();                   //  Every tile computed: the ring is free
        const float m [2] = { -INFINITY, -INFINITY }, l [2] = { 0.0f, 0.0f };
        kvt_dev_decode_combine<T, D, S_WS_CONSUMERS> (sm_m, sm_l, sm_acc, m, l, S_WS_CONSUMERS,
                                                      c.g, c.t, c.nheads, c.head0, a.heads,
                                                      c.seq, c.split, splits, a.out, ws_out,
                                                      ws_lse);
        return;
    }
    //  Consumers
    W w;
    w.begin (a, c);
    int stage = c.warp;
    uint32_t phase = 0;
    for (int j = c.warp; j < tiles; j += S_WS_CONSUMERS) {
        int t0 = c.start + 16 * j;
        uint4 k_raw [2][PC], v_raw [2][PC];
        kvt_dev_ring_take<D> (sm_ring, full0, empty0, STAGES, j >= STAGES, t0, c.end, c,
                              S_WS_CONSUMERS, stage, phase, k_raw, v_raw);
        w.tile (k_raw, v_raw, t0, c.end, c.t);
    }
    __syncthreads ();                       //  Every tile computed: the ring is free
    w.template finish<S_WS_CONSUMERS> (a, c, c.warp, splits, sm_m, sm_l, sm_acc, ws_out, ws_lse);
#else
    __trap ();                              //  Never launched below sm_90 (s_plan)
#endif
}

}   //  namespace

//  --------------------------------------------------------------------------
//  v3 (version 2) or v4 (version 3) for the dtype and head_dim

template <typename T, int D>
kvt_decode_kernel_t
s_bulk_kernel (int version, bool trans, int *smem, int *threads)
{
    if (version == 2) {
        *smem = s_ring_bytes<D, 3> ();
        *threads = KVT_DECODE_WARPS * 32;
        return s_decode_bulk_kernel<T, D, 3, 2>;
    }
    *smem = s_ws_stages<D> () * 2 * 16 * D * 2;
    *threads = (S_WS_CONSUMERS + S_WS_PRODUCERS) * 32;
    return trans? s_decode_ws_kernel<T, D, kvt_decode_warp_trans_t<T, D>>
                : s_decode_ws_kernel<T, D, kvt_decode_warp_t<T, D>>;
}

kvt_decode_kernel_t
kvt_decode_bulk_kernel (bool bf16, int head_dim, int version, bool trans, int *smem,
                        int *threads)
{
    return head_dim == 128
        ? (bf16? s_bulk_kernel<__nv_bfloat16, 128> (version, trans, smem, threads)
               : s_bulk_kernel<__half, 128> (version, trans, smem, threads))
        : (bf16? s_bulk_kernel<__nv_bfloat16, 64> (version, trans, smem, threads)
               : s_bulk_kernel<__half, 64> (version, trans, smem, threads));
}
