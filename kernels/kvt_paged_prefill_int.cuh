/*  =========================================================================
    kvt_paged_prefill_int - what the prefill kernel files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The paged prefill attention is two files: kvt_paged_prefill.cu (v1 and
    v2 on mma.sync, the dispatch, the public entry) and
    kvt_paged_prefill_wgmma.cu (v3 and v4 on wgmma, built for sm_90a). This
    header gives both the head_dim they are built for, how they copy paged
    K/V rows, and the v3/v4 launcher (the device helpers they share with
    the decode kernels are in kvt_device.cuh). For those two files only.
@end
*/

#ifndef KVT_PAGED_PREFILL_INT_CUH_INCLUDED
#define KVT_PAGED_PREFILL_INT_CUH_INCLUDED

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <type_traits>
#include "kvt_paged_prefill.cuh"
#include "kvt_device.cuh"

#define S_D      128                //  head_dim

//  The query tile, head and sequence of this CTA of a grid of (query
//  tiles, heads, sequences), in the order CTAs start (their linear index):
//  heaviest first over a sequence's heads, not per head, so a sequence's
//  last query tiles (the most keys) of every head go first and its
//  lightest last, and the last sequence's lightest fill the tail. Sequence
//  by sequence, not over the whole batch, so the CTAs running at once share
//  one sequence's K/V in L2 (v5 on the H200, against head by head: 1.01x at
//  1x8K, 1.03x half cached, 0.99x at 4x4K; over the whole batch 0.95x at
//  4x4K, whose 64 MiB of K/V outgrew L2; session 27)
typedef struct {
    int q_tile, head, seq;
} kvt_prefill_cta_t;

__device__ __forceinline__ kvt_prefill_cta_t
kvt_prefill_cta (void)
{
    const int linear = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int in_seq = linear % (gridDim.x * gridDim.y);
    kvt_prefill_cta_t cta;
    cta.seq = linear / (gridDim.x * gridDim.y);
    cta.head = in_seq % gridDim.y;
    cta.q_tile = gridDim.x - 1 - in_seq / gridDim.y;
    return cta;
}

//  One sequence's paged K/V of one KV head, as every version copies it
typedef struct {
    const char *k;                  //  The KV head's K in the slab
    const char *v;                  //  ... and V
    const int32_t *table;           //  The sequence's block table
    int log2_bt;                    //  log2 (block_tokens)
    int bt_mask;                    //  block_tokens - 1
} kvt_prefill_pages_t;

__device__ __forceinline__ kvt_prefill_pages_t
kvt_prefill_pages (const kvt_paged_prefill_args_t &a, int seq, int kv_head)
{
    kvt_prefill_pages_t pages = {
        (const char *) a.k + kv_head * a.head_stride_bytes,
        (const char *) a.v + kv_head * a.head_stride_bytes,
        a.block_table + (size_t) seq * a.max_blocks_per_seq,
        __ffs (a.block_tokens) - 1, a.block_tokens - 1
    };
    return pages;
}

//  Copy the 16 bytes at 'column' of 'token''s K and V rows to dk and dv
//  by cp.async; a token at or past 'end' gets zeros instead (no NaN from
//  stale rows) and its page entry is never read
__device__ __forceinline__ void
kvt_prefill_copy_row_chunk (const kvt_paged_prefill_args_t &a, const kvt_prefill_pages_t &pages,
                            int token, int end, int column, void *dk, void *dv)
{
    if (token < end) {
        int64_t src = (int64_t) pages.table [token >> pages.log2_bt] * a.block_stride_bytes
                    + (int64_t) (token & pages.bt_mask) * a.token_stride_bytes + column;
        kvt_dev_cp_async16 (dk, pages.k + src);
        kvt_dev_cp_async16 (dv, pages.v + src);
    }
    else {
        *(uint4 *) dk = make_uint4 (0, 0, 0, 0);
        *(uint4 *) dv = make_uint4 (0, 0, 0, 0);
    }
}

//  True when this binary holds the sm_90a build of v3 (BN keys per tile;
//  WS: v4, its warp-specialized form; TMA: v5, v4 loading K/V by TMA);
//  instantiated for bf16 and fp16, BN 64 and 128, with WS too, and TMA at
//  BN 128 with WS.
template <typename T, int BN, bool WS, bool TMA = false>
bool
    kvt_paged_prefill_have_wgmma ();

//  Queue v3, v4 or v5 on 'stream' (only when kvt_paged_prefill_have_wgmma;
//  v5 runs as v4 where TMA cannot take the slab). Returns 0 or KVT_ECUDA.
template <typename T, int BN, bool WS, bool TMA = false>
int
    kvt_paged_prefill_launch_wgmma (const kvt_paged_prefill_args_t *a, cudaStream_t stream);

#endif
