/*  =========================================================================
    kvt_paged_prefill_wgmma - v3, v4 and v5 of the causal prefill
    attention: wgmma (sm_90a) in FlashAttention-3's order of the two GEMMs,
    v4 with its warp specialization too, v5 (the default) with K/V by TMA

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <cuda.h>                 //  CUtensorMap; its encoder comes through the runtime
#include "kvt_paged_prefill_int.cuh"

namespace {

//  v3: wgmma (sm_90a), FlashAttention-3's order of the two GEMMs without
//  its warp specialization. A CTA of two warpgroups takes 128 query rows, 64
//  per warpgroup. Q and BN-key K/V tiles sit in shared memory in the
//  128-byte-swizzled layout the tensor cores read through descriptors (a
//  row of 128 dims is two 128-byte halves; chunk c of row r lands at
//  r * 128 + ((c ^ (r % 8)) * 16) in its 1024-byte-aligned half). S = QK^T
//  is m64nBNk16 with both operands in shared memory; P goes from the S
//  accumulators into A fragments in registers for O += P V (m64n128k16, V
//  read MN-major through the transpose bit). Per tile i: issue S (i + 1),
//  rescale O, issue PV (i), wait for S (i + 1) only and run its softmax
//  while PV (i) is still on the tensor cores, then wait for PV (i) and pack
//  P (i + 1) to 16 bits. K/V come by cp.async, two tiles deep, made
//  visible to the async proxy by fence.proxy.async before the barrier.
//  Built only for sm_90a (the launcher falls back to v2 elsewhere).

#define S_WG_BM     128                         //  Query rows per CTA
#define S_WG_HALF_Q (S_WG_BM * 128)             //  Bytes of one 64-dim half of Q

#if defined (__CUDA_ARCH_FEAT_SM90_ALL)
#   define S_HAVE_WGMMA 1
#endif

#ifdef S_HAVE_WGMMA
//  Byte offset of 16-byte chunk c (0..15) of row r in a two-half swizzled tile
__device__ __forceinline__ uint32_t
s_swizzle (int r, int c, int half_bytes)
{
    return (c >> 3) * half_bytes + r * 128 + (((c & 7) ^ (r & 7)) << 4);
}

//  Shared-memory matrix descriptor, 128-byte swizzle
__device__ __forceinline__ uint64_t
s_desc (uint32_t address, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t) ((address & 0x3ffff) >> 4)
         | (uint64_t) ((lbo >> 4) & 0x3fff) << 16
         | (uint64_t) ((sbo >> 4) & 0x3fff) << 32
         | (uint64_t) 1 << 62;
}

template <typename T> struct s_wg;

#define S_WG_S_ASM(TYPE) \
    "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
    "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " " \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
    "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, " \
    "%32, %33, p, 1, 1, 0, 0;\n}\n"
#define S_WG_O_ASM(TYPE) \
    "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
    "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " " \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
    "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
    "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
    "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, " \
    "{%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
#define S_WG_S128_ASM(TYPE) \
    "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
    "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " " \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
    "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
    "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
    "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, " \
    "%64, %65, p, 1, 1, 0, 0;\n}\n"
#define S_F8(d, i) "+f" (d [i]), "+f" (d [i + 1]), "+f" (d [i + 2]), "+f" (d [i + 3]), \
                   "+f" (d [i + 4]), "+f" (d [i + 5]), "+f" (d [i + 6]), "+f" (d [i + 7])

#define S_WG_DEFINE(CTYPE, TYPE) \
template <> struct s_wg<CTYPE> { \
    static __device__ __forceinline__ void \
    qk (float *d, uint64_t a, uint64_t b, int accumulate) \
    { \
        asm volatile (S_WG_S_ASM (TYPE) \
                      : S_F8 (d, 0), S_F8 (d, 8), S_F8 (d, 16), S_F8 (d, 24) \
                      : "l" (a), "l" (b), "r" (accumulate)); \
    } \
    static __device__ __forceinline__ void \
    qk128 (float *d, uint64_t a, uint64_t b, int accumulate) \
    { \
        asm volatile (S_WG_S128_ASM (TYPE) \
                      : S_F8 (d, 0), S_F8 (d, 8), S_F8 (d, 16), S_F8 (d, 24), \
                        S_F8 (d, 32), S_F8 (d, 40), S_F8 (d, 48), S_F8 (d, 56) \
                      : "l" (a), "l" (b), "r" (accumulate)); \
    } \
    static __device__ __forceinline__ void \
    pv (float *d, const uint32_t *a, uint64_t b, int accumulate) \
    { \
        asm volatile (S_WG_O_ASM (TYPE) \
                      : S_F8 (d, 0), S_F8 (d, 8), S_F8 (d, 16), S_F8 (d, 24), \
                        S_F8 (d, 32), S_F8 (d, 40), S_F8 (d, 48), S_F8 (d, 56) \
                      : "r" (a [0]), "r" (a [1]), "r" (a [2]), "r" (a [3]), "l" (b), \
                        "r" (accumulate)); \
    } \
};
S_WG_DEFINE (__nv_bfloat16, "bf16")
S_WG_DEFINE (__half, "f16")

//  Keep the compiler from moving accesses of wgmma accumulators across
//  the asynchronous region (CUTLASS's warpgroup_fence_operand)
template <int N>
__device__ __forceinline__ void
s_wg_fence_operand (float (&r) [N])
{
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile ("" : "+f" (r [i]) :: "memory");
}

__device__ __forceinline__ void
s_wg_fence ()
{
    asm volatile ("wgmma.fence.sync.aligned;" ::: "memory");
}

//  Named barrier 'id' (1..15; 0 is __syncthreads) over the 256 consumer
//  threads: wait for the other warpgroup's turn to pass, or pass it on
__device__ __forceinline__ void
s_turn_wait (uint32_t id)
{
    asm volatile ("bar.sync %0, 256;" :: "r" (id) : "memory");
}

__device__ __forceinline__ void
s_turn_pass (uint32_t id)
{
    asm volatile ("bar.arrive %0, 256;" :: "r" (id) : "memory");
}

//  Named barrier 3 over the producer warpgroup (threads 0-127) of v5
__device__ __forceinline__ void
s_producers_sync ()
{
    asm volatile ("bar.sync 3, 128;" ::: "memory");
}

//  A TMA box of 'map' at {c0, c1, c2, c3} into shared memory at 'dst',
//  counted on the mbarrier 'bar' as it lands
__device__ __forceinline__ void
s_tma_load (uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2, int c3, uint32_t bar)
{
    asm volatile ("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                  " [%0], [%1, {%2, %3, %4, %5}], [%6];"
                  :: "r" (dst), "l" ((uint64_t) map), "r" (c0), "r" (c1), "r" (c2), "r" (c3),
                     "r" (bar)
                  : "memory");
}

#endif

//  Stages of K/V tiles in shared memory: v3 two; v4 four of 64 keys or
//  three of 128 (the producer runs ahead; 225 KiB with Q, of 227)
template <int BN, bool WS>
constexpr int
s_stages ()
{
    return !WS? 2: BN == 64? 4: 3;
}

//  grid = (query tiles, heads, seqs); 256 threads (v3) or 384 (v4)
template <int BN, bool WS>
constexpr int
s_v3_smem_bytes ()
{
    return 2 * S_WG_HALF_Q + s_stages<BN, WS> () * 4 * BN * 128 + 64 + 1024;
}

//  v4 (WS): v3 with FlashAttention-3's warp specialization. A third
//  warpgroup (the producer, threads 0-127, 48 registers) loads Q and the
//  K/V tiles by cp.async, s_stages deep, and tells the consumers (the
//  two warpgroups of v3, 224 registers: setmaxnreg; no spills) through a "full"
//  mbarrier per stage once a tile has landed (cp.async.wait_group, then
//  fence.proxy.async, then arrive); the consumers give a stage back
//  through its "empty" mbarrier once PV of its tile is done. The
//  consumers issue no load and meet at no CTA barrier (ncu of v3 on the
//  H200: 2 warps per scheduler issuing every 5.3 cycles, the tensor pipe
//  37% busy). What pays is the depth: with two stages the producer is one
//  tile ahead and v4 ran at 0.77x v3; with three (BN 128, 225 KiB of
//  shared memory with Q) at 1.15x, the default since session 18. FA3's
//  ping-pong of the two consumer warpgroups added 1-3% (1.16x v3; see
//  tools/bench/RESULTS.md). Session 19 (1.08x more): the producer's
//  instructions are taken from the consumers' issue slots, so it copies
//  by row groups of one page; a producer that runs further ahead
//  (cp.async.mbarrier.arrive.noinc, or tile i - 1 announced behind tile
//  i) was slower, not faster.
//  v5 (TMA): v4 whose producer loads a tile whose rows all hold tokens of
//  the sequence by TMA, one 4-D box (head_dim half x page rows x KV head x
//  page) per page and half, in the same 128-byte swizzle, issued by a lane
//  of each producer warp and counted on the stage's "full" mbarrier by
//  bytes: 32 copies a 128-key tile of 16-token pages instead of 4096
//  16-byte cp.async (the producer's instructions take the consumers'
//  issue slots, session 19), and the producer no longer waits for a tile
//  to land before issuing the next. The sequence's last tile, whose page
//  may end in rows never written (NaN x 0 is NaN in PV), goes by cp.async
//  with zeros as in v4.
template <typename T, int BN, bool WS, bool TMA = false>
__global__ void __launch_bounds__ (WS? 384: 256, 1)
s_prefill3_kernel (const kvt_paged_prefill_args_t a, const __grid_constant__ CUtensorMap k_map,
                   const __grid_constant__ CUtensorMap v_map)
{
#ifdef S_HAVE_WGMMA
    constexpr int HALF_KV = BN * 128;              //  Bytes of one half of a K or V tile
    constexpr int LOADERS = WS? 128: 256;           //  Threads that load
    constexpr int STAGES = s_stages<BN, WS> ();
    extern __shared__ __align__ (16) unsigned char smem_raw [];
    const uint32_t smem_base = ((uint32_t) __cvta_generic_to_shared (smem_raw) + 1023) & ~1023u;
    unsigned char *smem = smem_raw + (smem_base - (uint32_t) __cvta_generic_to_shared (smem_raw));
    const uint32_t sq = 0;
    const uint32_t sk = 2 * S_WG_HALF_Q;            //  [STAGES][2 halves][BN][128 B]
    const uint32_t sv = sk + STAGES * 2 * HALF_KV;
    const uint32_t full_bar = smem_base + sv + STAGES * 2 * HALF_KV;    //  [STAGES] (v4)
    const uint32_t empty_bar = full_bar + 8 * STAGES;                   //  [STAGES] (v4)

    const kvt_prefill_cta_t cta = kvt_prefill_cta ();   //  Heaviest first
    const int seq = cta.seq;
    const int head = cta.head;
    const int q_tile = cta.q_tile;
    const int q_first = a.q_start [seq];
    const int q_len = a.q_start [seq + 1] - q_first;
    if (q_tile * S_WG_BM >= q_len)
        return;
    const int len = a.seq_lens [seq];
    const int cached = len - q_len;
    const int kv_head = head / (a.heads / a.kv_heads);
    const int ct = WS? (int) threadIdx.x - 128: (int) threadIdx.x;  //  Consumer thread
    const int warp = ct >> 5;
    const int lane = ct & 31;
    const int g = lane >> 2;
    const int t = lane & 3;
    const int wg = warp >> 2;
    const int wg_row0 = q_tile * S_WG_BM + wg * 64;
    const int r0 = wg_row0 + (warp & 3) * 16;

    auto load_q = [&] () {
        for (int c = threadIdx.x; c < S_WG_BM * 16; c += LOADERS) {
            int row = c >> 4;
            int q_row = q_tile * S_WG_BM + row;
            unsigned char *dq = smem + sq + s_swizzle (row, c & 15, S_WG_HALF_Q);
            if (q_row < q_len)
                kvt_dev_cp_async16 (dq, (const T *) a.q
                                  + ((size_t) (q_first + q_row) * a.heads + head) * S_D
                                  + (c & 15) * 8);
            else
                *(uint4 *) dq = make_uint4 (0, 0, 0, 0);
        }
    };
    const int kv_end = min (len, cached + min (q_len, (q_tile + 1) * S_WG_BM));
    const int tiles = (kv_end + BN - 1) / BN;
    const kvt_prefill_pages_t pages = kvt_prefill_pages (a, seq, kv_head);

    //  A thread copies one 16-byte column chunk of G rows at once: rows
    //  r0, r0 + G, ... of the tile. G is a multiple of 8, so every one of
    //  its rows has the same swizzle (row % 8) and lands G * 128 bytes
    //  after the last. When a page holds at least G tokens, a group of G
    //  rows lies in one page: one page entry (the same for the whole
    //  CTA) and one multiply-add per group. (Per row, the address work was
    //  ~40 instructions per 16-byte chunk in the producer, whose issue
    //  slots are the consumers' too: they waited for data 13-20% of the
    //  time; see tools/bench/RESULTS.md, session 19.)
    auto load_tile = [&] (int tile, int buffer) {
        constexpr int G = LOADERS / 16;
        constexpr int PER = BN / G;
        const int r0 = threadIdx.x >> 4;
        const int chunk = threadIdx.x & 15;
        const uint32_t first = buffer * 2 * HALF_KV + s_swizzle (r0, chunk, HALF_KV);
        const int t0 = tile * BN;
        if (a.block_tokens >= G) {
            int page [PER];
#pragma unroll
            for (int k = 0; k < PER; k++)
                page [k] = t0 + G * k < kv_end? pages.table [(t0 + G * k) >> pages.log2_bt]: 0;
            const int64_t column = (int64_t) r0 * a.token_stride_bytes + chunk * 16;
#pragma unroll
            for (int k = 0; k < PER; k++) {
                unsigned char *dk = smem + sk + first + G * k * 128;
                unsigned char *dv = smem + sv + first + G * k * 128;
                if (t0 + G * k + r0 < kv_end) {
                    int64_t src = (int64_t) page [k] * a.block_stride_bytes
                                + (int64_t) ((t0 + G * k) & pages.bt_mask) * a.token_stride_bytes
                                + column;
                    kvt_dev_cp_async16 (dk, pages.k + src);
                    kvt_dev_cp_async16 (dv, pages.v + src);
                }
                else {
                    *(uint4 *) dk = make_uint4 (0, 0, 0, 0);
                    *(uint4 *) dv = make_uint4 (0, 0, 0, 0);
                }
            }
        }
        else {                                      //  Pages under G tokens: a row at a time
#pragma unroll
            for (int k = 0; k < PER; k++)
                kvt_prefill_copy_row_chunk (a, pages, t0 + G * k + r0, kv_end, chunk * 16,
                                            smem + sk + first + G * k * 128,
                                            smem + sv + first + G * k * 128);
        }
        asm volatile ("cp.async.commit_group;");
    };

    if constexpr (WS) {
        if (threadIdx.x == 0)
            for (int b = 0; b < STAGES; b++) {
                kvt_dev_bar_init (full_bar + 8 * b, TMA? 1: LOADERS);
                kvt_dev_bar_init (empty_bar + 8 * b, 256);
            }
        __syncthreads ();
        if (threadIdx.x < 128) {
            //  The producer: stage i % STAGES takes tile i once tile i - STAGES is
            //  done with, and announces it once it has landed. (Waiting
            //  for tile i only after tile i + 1 is queued deadlocks: the
            //  consumers give tile i - 1's stage back only once they have
            //  tile i.)
            asm volatile ("setmaxnreg.dec.sync.aligned.u32 48;");
            if constexpr (TMA) {
                //  Q by cp.async, seen by the async proxy before tile 0 is told
                load_q ();
                asm volatile ("cp.async.commit_group;");
                asm volatile ("cp.async.wait_group 0;" ::: "memory");
                asm volatile ("fence.proxy.async.shared::cta;" ::: "memory");
                s_producers_sync ();
                const int rows = min (a.block_tokens, BN);      //  The maps' box rows
                for (int i = 0; i < tiles; i++) {
                    const int stage = i % STAGES;
                    const uint32_t bar = full_bar + 8 * stage;
                    if (i >= STAGES)
                        kvt_dev_bar_wait (empty_bar + 8 * stage, ((i - STAGES) / STAGES) & 1);
                    const int t0 = i * BN;
                    if (t0 + BN <= len) {
                        //  The producer's four warps issue the boxes side by side,
                        //  warp w those of every fourth page from page w. One
                        //  thread issuing a tile's 32 boxes of 16-token pages,
                        //  a page-table load and a waterfall loop each, was the
                        //  stream's limit: 0.78x the rate at 64-token pages,
                        //  where the same kernel matched cuDNN (session 27).
                        //  Boxes of warps 1-3 may land before warp 0 sets the
                        //  bytes to expect: the count may go below zero, and the
                        //  stage is only complete once warp 0 has arrived.
                        if (threadIdx.x == 0)
                            kvt_dev_bar_expect (bar, 4 * HALF_KV);
                        if ((threadIdx.x & 31) == 0) {
                            for (int r = (threadIdx.x >> 5) * rows; r < BN; r += 4 * rows) {
                                const int token = t0 + r;
                                const int page = pages.table [token >> pages.log2_bt];
                                const int in_page = token & pages.bt_mask;
#pragma unroll
                                for (int h = 0; h < 2; h++) {
                                    const uint32_t at = stage * 2 * HALF_KV + h * HALF_KV + r * 128;
                                    s_tma_load (smem_base + sk + at, &k_map, h * 64, in_page,
                                                kv_head, page, bar);
                                    s_tma_load (smem_base + sv + at, &v_map, h * 64, in_page,
                                                kv_head, page, bar);
                                }
                            }
                        }
                    }
                    else {
                        load_tile (i, stage);       //  Zeros past kv_end
                        asm volatile ("cp.async.wait_group 0;" ::: "memory");
                        asm volatile ("fence.proxy.async.shared::cta;" ::: "memory");
                        s_producers_sync ();
                        if (threadIdx.x == 0)
                            kvt_dev_bar_arrive (bar);
                    }
                }
                return;
            }
            load_q ();                              //  Same group as tile 0
            for (int i = 0; i < tiles; i++) {
                if (i >= STAGES)
                    kvt_dev_bar_wait (empty_bar + 8 * (i % STAGES), ((i - STAGES) / STAGES) & 1);
                load_tile (i, i % STAGES);
                asm volatile ("cp.async.wait_group 0;" ::: "memory");
                asm volatile ("fence.proxy.async.shared::cta;" ::: "memory");
                kvt_dev_bar_arrive (full_bar + 8 * (i % STAGES));
            }
            return;
        }
        asm volatile ("setmaxnreg.inc.sync.aligned.u32 224;");
    }
    float o [64];
#pragma unroll
    for (int i = 0; i < 64; i++)
        o [i] = 0.0f;
    float m [2] = { -INFINITY, -INFINITY };
    float l [2] = { 0.0f, 0.0f };
    float alpha [2] = { 1.0f, 1.0f };               //  O's rescale for the next PV
    const float scale_log2 = a.scale * 1.4426950408889634f;
    const int pos [2] = { cached + r0 + g, cached + r0 + g + 8 };
    float s [BN / 2];                               //  S (i + 1), then P (i + 1) in fp32
    uint32_t pa [BN / 16][4];                  //  P (i) as A fragments
    //  Descriptors made once: the start address is the low 14 bits
    //  (address / 16), and shared memory ends below 256 KiB, so moving a
    //  descriptor by 'bytes' is adding bytes / 16 without a carry. That
    //  keeps the turn (the issue of both GEMMs) short: building each
    //  wgmma's descriptors afresh cost ~10 instructions per wgmma in it.
    const uint64_t q_desc = s_desc (smem_base + sq + wg * 64 * 128, 16, 1024);
    const uint64_t k_desc = s_desc (smem_base + sk, 16, 1024);
    const uint64_t v_desc = s_desc (smem_base + sv, HALF_KV, 1024);
    auto stage_step = [] (int i) { return (uint64_t) ((i % STAGES) * 2 * HALF_KV >> 4); };

    auto issue_s = [&] (int i) {
        const uint64_t k_stage = k_desc + stage_step (i);
        s_wg_fence_operand (s);
        s_wg_fence ();
#pragma unroll
        for (int ks = 0; ks < S_D / 16; ks++) {
            uint64_t da = q_desc + (((ks >> 2) * S_WG_HALF_Q + (ks & 3) * 32) >> 4);
            uint64_t db = k_stage + (((ks >> 2) * HALF_KV + (ks & 3) * 32) >> 4);
            if constexpr (BN == 128)
                s_wg<T>::qk128 (s, da, db, ks > 0);
            else
                s_wg<T>::qk (s, da, db, ks > 0);
        }
        asm volatile ("wgmma.commit_group.sync.aligned;" ::: "memory");
        s_wg_fence_operand (s);
    };
    //  Softmax of tile i in place in s; sets alpha for O
    auto softmax = [&] (int i, auto mask_tag) {
        constexpr bool MASK = decltype (mask_tag)::value;
        //  Row maxima and sums in four partials a row: four short chains
        //  of dependent FMNMX / FADD instead of one of 32 (latency, with
        //  two consumer warps a scheduler, is what the softmax waits on)
        float part [2][4];
#pragma unroll
        for (int h = 0; h < 2; h++)
            part [h][0] = part [h][1] = part [h][2] = part [h][3] = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (MASK) {
                    int token = i * BN + nt * 8 + 2 * t + (e & 1);
                    if (token > pos [e >> 1] || token >= len)
                        s [4 * nt + e] = -INFINITY;
                }
                float &top = part [e >> 1][(nt & 1) * 2 + (e & 1)];
                top = fmaxf (top, s [4 * nt + e]);
            }
        }
        float top [2], m_scaled [2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            top [h] = fmaxf (fmaxf (part [h][0], part [h][1]), fmaxf (part [h][2], part [h][3]));
            top [h] = fmaxf (top [h], __shfl_xor_sync (0xffffffffu, top [h], 1));
            top [h] = fmaxf (top [h], __shfl_xor_sync (0xffffffffu, top [h], 2));
            float m_new = fmaxf (m [h], top [h] * scale_log2);
            alpha [h] = m_new == -INFINITY? 1.0f: kvt_dev_exp2 (m [h] - m_new);
            m [h] = m_new;
            m_scaled [h] = m_new == -INFINITY? 0.0f: -m_new;
            part [h][0] = part [h][1] = part [h][2] = part [h][3] = 0.0f;
        }
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = kvt_dev_exp2 (fmaf (s [4 * nt + e], scale_log2, m_scaled [e >> 1]));
                s [4 * nt + e] = p;
                part [e >> 1][(nt & 1) * 2 + (e & 1)] += p;
            }
        }
#pragma unroll
        for (int h = 0; h < 2; h++)
            l [h] = l [h] * alpha [h] + ((part [h][0] + part [h][1]) + (part [h][2] + part [h][3]));
    };
    auto softmax_any = [&] (int i) {
        bool masked = i * BN + BN - 1 > cached + wg_row0
                   || i * BN + BN > len;
        if (masked)
            softmax (i, std::true_type ());
        else
            softmax (i, std::false_type ());
    };
    auto pack = [&] () {
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            pa [kk][0] = kvt_dev_pack<T> (s [8 * kk + 0], s [8 * kk + 1]);
            pa [kk][1] = kvt_dev_pack<T> (s [8 * kk + 2], s [8 * kk + 3]);
            pa [kk][2] = kvt_dev_pack<T> (s [8 * kk + 4], s [8 * kk + 5]);
            pa [kk][3] = kvt_dev_pack<T> (s [8 * kk + 6], s [8 * kk + 7]);
        }
    };

    //  A warpgroup whose rows all precede a tile gets P = 0 from the mask,
    //  so every warpgroup runs every tile: the wgmma pipeline stays
    //  straight-line (ptxas serializes it across branches, C7514)
    //  O's rescale for the tile whose softmax ran last, once PV of the one
    //  before is done: outside the turn, which then only issues GEMMs
    auto rescale_o = [&] () {
        if (__any_sync (0xffffffffu, alpha [0] != 1.0f || alpha [1] != 1.0f)) {
#pragma unroll
            for (int dt = 0; dt < S_D / 8; dt++) {
                o [4 * dt + 0] *= alpha [0];
                o [4 * dt + 1] *= alpha [0];
                o [4 * dt + 2] *= alpha [1];
                o [4 * dt + 3] *= alpha [1];
            }
        }
    };
    auto issue_pv = [&] (int i) {
        const uint64_t v_stage = v_desc + stage_step (i);
        s_wg_fence_operand (o);
        s_wg_fence ();
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
            s_wg<T>::pv (o, pa [kk], v_stage + (kk * 16 * 128 >> 4), 1);
        asm volatile ("wgmma.commit_group.sync.aligned;" ::: "memory");
        s_wg_fence_operand (o);
    };
    if constexpr (WS)
        kvt_dev_bar_wait (full_bar, 0);
    else {
        load_q ();
        load_tile (0, 0);                           //  Same group as Q
        if (tiles > 1)
            load_tile (1, 1);
        asm volatile ("cp.async.wait_group 0;" ::: "memory");
        asm volatile ("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads ();
    }
    issue_s (0);
    asm volatile ("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    s_wg_fence_operand (s);
    softmax_any (0);
    pack ();                                        //  (O is still zero: no rescale)
    //  v4's ping-pong (FA3): the consumer warpgroups take turns to issue
    //  their GEMMs (named barriers 1 and 2), so one's softmax runs while
    //  the other's GEMMs hold the tensor cores; warpgroup 0 goes first.
    //  Every arrive has its sync: warpgroup 1 skips its last.
    if constexpr (WS)
        if (wg == 1 && tiles > 1)
            s_turn_pass (1);
    for (int i = 0; i + 1 < tiles; i++) {
        if constexpr (WS) {
            kvt_dev_bar_wait (full_bar + 8 * ((i + 1) % STAGES), ((i + 1) / STAGES) & 1);
            s_turn_wait (1 + wg);                   //  My turn to issue
        }
        else {
            asm volatile ("cp.async.wait_group 0;" ::: "memory");
            asm volatile ("fence.proxy.async.shared::cta;" ::: "memory");
            __syncthreads ();                       //  Tile i + 1 visible to all
        }
        issue_s (i + 1);
        issue_pv (i);
        if constexpr (WS)
            if (wg == 0 || i + 2 < tiles)
                s_turn_pass (2 - wg);               //  The other's turn
        asm volatile ("wgmma.wait_group.sync.aligned 1;" ::: "memory");
        s_wg_fence_operand (s);
        softmax_any (i + 1);                        //  While PV (i) runs
        asm volatile ("wgmma.wait_group.sync.aligned 0;" ::: "memory");
        s_wg_fence_operand (o);
        rescale_o ();                               //  For PV (i + 1)
        if constexpr (WS)
            kvt_dev_bar_arrive (empty_bar + 8 * (i % STAGES));    //  Stage of tile i is free
        else {
            __syncthreads ();                       //  Buffer of tile i is free
            if (i + 2 < tiles)
                load_tile (i + 2, i % STAGES);
        }
        pack ();
    }
    issue_pv (tiles - 1);
    asm volatile ("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    s_wg_fence_operand (o);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float sum = l [h];
        sum += __shfl_xor_sync (0xffffffffu, sum, 1);
        sum += __shfl_xor_sync (0xffffffffu, sum, 2);
        int row = r0 + g + 8 * h;
        if (row >= q_len)
            continue;
        float inv = sum > 0.0f? 1.0f / sum: 0.0f;
        T *out = (T *) a.out + ((size_t) (q_first + row) * a.heads + head) * S_D;
#pragma unroll
        for (int dt = 0; dt < S_D / 8; dt++)
            *(uint32_t *) (out + dt * 8 + 2 * t) = kvt_dev_pack<T> (o [4 * dt + 2 * h] * inv,
                                                              o [4 * dt + 2 * h + 1] * inv);
    }
#else
    //  Not built for sm_90a: never launched. The volatile static array
    //  tells this empty build apart in s_have_wgmma (the real kernel has
    //  no static shared memory and far more registers)
    volatile __shared__ int not_built [32];
    not_built [threadIdx.x & 31] = a.seqs;
    if (not_built [(threadIdx.x + 1) & 31] == a.seqs)
        __trap ();
#endif
}

//  True when this binary holds the sm_90a (wgmma) build of v3
template <typename T, int BN, bool WS, bool TMA>
bool
s_have_wgmma ()
{
    cudaFuncAttributes attributes;
    return cudaFuncGetAttributes (&attributes, s_prefill3_kernel<T, BN, WS, TMA>) == cudaSuccess
        && attributes.sharedSizeBytes == 0 && attributes.numRegs > 64;
}

typedef CUresult (*s_encode_fn) (CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                 const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                 const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

//  The driver's tensor-map encoder, through the runtime (no link to libcuda)
s_encode_fn
s_encoder ()
{
    static s_encode_fn encode = [] () -> s_encode_fn {
        void *fn = NULL;
        cudaDriverEntryPointQueryResult found;
        if (cudaGetDriverEntryPointByVersion ("cuTensorMapEncodeTiled", &fn, 12000,
                                              cudaEnableDefault, &found) != cudaSuccess
        ||  found != cudaDriverEntryPointSuccess)
            return NULL;
        return (s_encode_fn) fn;
    } ();
    return encode;
}

//  The paged K (or V) slab at 'base' as a 4-D tensor (head_dim, page row,
//  KV head, page) with boxes of 64 dims x min (block_tokens, BN) rows in
//  the 128-byte swizzle of the tiles; false where TMA cannot take it
//  (pages under 16 tokens, strides the encoder refuses)
template <int BN>
bool
s_encode_map (CUtensorMap *map, const kvt_paged_prefill_args_t *a, const void *base)
{
    s_encode_fn encode = s_encoder ();
    if (!encode || a->block_tokens < 16 || a->head_dim != S_D)
        return false;
    const cuuint64_t dims [4] = { S_D, (cuuint64_t) a->block_tokens, (cuuint64_t) a->kv_heads,
                                  (cuuint64_t) 1 << 31 };
    const cuuint64_t strides [3] = { (cuuint64_t) a->token_stride_bytes,
                                     (cuuint64_t) a->head_stride_bytes,
                                     (cuuint64_t) a->block_stride_bytes };
    const cuuint32_t box [4] = { 64, (cuuint32_t) (a->block_tokens < BN? a->block_tokens: BN),
                                 1, 1 };
    const cuuint32_t steps [4] = { 1, 1, 1, 1 };
    const bool bf16 = a->dtype == KVT_KDTYPE_BF16;  //  T follows dtype (s_dispatch)
    return encode (map, bf16? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                   4, (void *) base, dims, strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                   CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <typename T, int BN, bool WS, bool TMA>
int
s_launch3 (const kvt_paged_prefill_args_t *a, cudaStream_t stream)
{
    CUtensorMap k_map = {}, v_map = {};
    if (TMA && (!s_encode_map<BN> (&k_map, a, a->k) || !s_encode_map<BN> (&v_map, a, a->v)))
        return s_launch3<T, BN, WS, false> (a, stream);
    static bool configured = false;                 //  Idempotent; a race only repeats it
    if (!configured) {
        if (cudaFuncSetAttribute (s_prefill3_kernel<T, BN, WS, TMA>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  s_v3_smem_bytes<BN, WS> ()) != cudaSuccess)
            return KVT_ECUDA;
        configured = true;
    }
    dim3 grid ((a->max_q_len + S_WG_BM - 1) / S_WG_BM, a->heads, a->seqs);
    s_prefill3_kernel<T, BN, WS, TMA> <<<grid, WS? 384: 256, s_v3_smem_bytes<BN, WS> (), stream>>>
        (*a, k_map, v_map);
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

}   //  namespace

template <typename T, int BN, bool WS, bool TMA>
bool
kvt_paged_prefill_have_wgmma ()
{
    return s_have_wgmma<T, BN, WS, TMA> ();
}

template <typename T, int BN, bool WS, bool TMA>
int
kvt_paged_prefill_launch_wgmma (const kvt_paged_prefill_args_t *a, cudaStream_t stream)
{
    return s_launch3<T, BN, WS, TMA> (a, stream);
}

#define S_INSTANTIATE(T, BN, WS, TMA) \
    template bool kvt_paged_prefill_have_wgmma<T, BN, WS, TMA> (); \
    template int kvt_paged_prefill_launch_wgmma<T, BN, WS, TMA> (const kvt_paged_prefill_args_t *, \
                                                                cudaStream_t);
S_INSTANTIATE (__nv_bfloat16, 64, false, false)
S_INSTANTIATE (__nv_bfloat16, 128, false, false)
S_INSTANTIATE (__half, 64, false, false)
S_INSTANTIATE (__half, 128, false, false)
S_INSTANTIATE (__nv_bfloat16, 64, true, false)
S_INSTANTIATE (__nv_bfloat16, 128, true, false)
S_INSTANTIATE (__half, 64, true, false)
S_INSTANTIATE (__half, 128, true, false)
S_INSTANTIATE (__nv_bfloat16, 128, true, true)
S_INSTANTIATE (__half, 128, true, true)
