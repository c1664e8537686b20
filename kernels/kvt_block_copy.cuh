/*  =========================================================================
    kvt_block_copy - move many KV blocks between slabs in one launch

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Copies block i from src + src_slots [i] * src_slot_bytes to dst +
    dst_slots [i] * dst_slot_bytes, for 'count' blocks of 'block_bytes'.
    Either slab may be GPU memory or mapped pinned host memory (a pointer
    from cudaHostGetDevicePointer, or the host pointer itself under UVA),
    so one call gathers scattered host slots into the GPU slab, scatters
    GPU blocks out to host slots, or moves blocks inside the GPU.
    Two paths:
    - kvt_block_copy: one kernel; SMs issue the PCIe reads and writes, so
      thousands of 16 KiB blocks cost one launch, not one call each. Slot
      arrays are device-accessible.
    - kvt_block_copy_ce: the copy engines, one batched submission
      (cudaMemcpyBatchAsync) of the blocks, runs of adjacent slots merged;
      uses no SMs, best for large blocks. Slot arrays are host memory.
    - kvt_block_copy_staged (issue #3): host <-> GPU where the host slots
      come in runs (a batch demoted together sits in adjacent host slots)
      and the GPU slots are scattered. The GPU side goes through a GPU
      staging buffer with a device-to-device kernel (HBM speed), the host
      side is one copy-engine copy per host run (large, so the engines run
      near their peak, where per-block engine copies of 16 KiB crawl).
      GPU->host: kernel gathers a piece of the blocks into staging, the
      engines copy staging to the host runs; host->GPU the reverse. The
      staging buffer (a kvt_block_stage_t, size chosen by the caller) is
      split into KVT_BLOCK_STAGE_RING pieces in flight, ordered by events
      between the caller's stream (kernels) and the stage's own engine
      stream, so the engines stay busy. Slot arrays are host memory and
      may be freed on return (the GPU slots of a piece travel as kernel
      parameters). Its CPU twin kvt_block_copy_staged_ref runs the same
      plan (pieces, runs) with memcpy. kvt_block_copy_stage_suits says
      whether a batch's host runs are long enough to be worth it.
    - kvt_block_copy_hybrid (issue #3): both directions at once with
      fully scattered host slots, the one-grid pair (SMs) and the copy
      engines (per block) at the same time on one batch: the engines
      take the last share of each direction's blocks on streams of their
      own, the pair the rest. SM-driven PCIe traffic and the engines are
      different hardware; the share comes from the two paths' rates
      (kvt_block_copy_hybrid_share), and the CPU twin
      kvt_block_copy_hybrid_ref copies the same parts by memcpy. Slot
      arrays are host memory and may be freed on return. Pays where the
      engines' per-block copies are within reach of the kernel (256 KiB
      on the H100: 85.6-88.3 GB/s both ways, above either path alone);
      at 16 KiB the engines' per-copy cost makes any share a loss, and
      at 2 MiB the engines alone are as good (tools/bench/RESULTS.md):
      callers pick it per block size from measured rates.
@discuss
    A negative slot skips that block (both paths). Source and destination
    blocks must not overlap. Neither path synchronizes.
@end
*/

#ifndef KVT_BLOCK_COPY_CUH_INCLUDED
#define KVT_BLOCK_COPY_CUH_INCLUDED

#include <stdbool.h>
#include "kvt_kernels.cuh"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    void *dst;                      //  Destination slab base
    const void *src;                //  Source slab base
    const int64_t *dst_slots;       //  [count] destination slot of each block
    const int64_t *src_slots;       //  [count] source slot of each block
    int64_t dst_slot_bytes;         //  Bytes between destination slots
    int64_t src_slot_bytes;         //  Bytes between source slots
    int64_t block_bytes;            //  Bytes per block, a multiple of 16
    int count;                      //  Blocks to copy
    int max_ctas;                   //  Kernel path: CTA cap (0 = one per SM)
} kvt_block_copy_args_t;

//  Check the arguments: 0, or -EINVAL (NULL slabs, sizes or strides not
//  multiples of 16, slabs not 16-byte aligned, block larger than a slot).
int
    kvt_block_copy_check (const kvt_block_copy_args_t *args);

//  CPU reference on host pointers: memcpy per block. Returns 0 or -EINVAL.
int
    kvt_block_copy_ref (const kvt_block_copy_args_t *args);

//  One copy of adjacent blocks: byte offsets from the slab bases.
typedef struct {
    int64_t dst_offset;             //  From args->dst
    int64_t src_offset;             //  From args->src
    int64_t bytes;                  //  Length, a whole number of blocks
} kvt_block_run_t;

//  Merge the blocks of 'args' (batch order, negative slots skipped) into
//  runs: a block whose source and destination both follow the previous
//  block's extends its run. 'runs' holds args->count entries. Returns the
//  number of runs (0 for no blocks); arguments are not checked.
size_t
    kvt_block_copy_runs (const kvt_block_copy_args_t *args, kvt_block_run_t *runs);

//  Staged copies (issue #3): the plan of pieces through the staging
//  buffer. The GPU slots of a piece travel as kernel parameters, hence
//  KVT_BLOCK_STAGE_PIECE_BLOCKS.
#define KVT_BLOCK_STAGE_RING 4              //  Pieces of staging in flight
#define KVT_BLOCK_STAGE_PIECE_BLOCKS 896    //  Most blocks in one piece
#define KVT_BLOCK_STAGE_MIN_RUN_BYTES (256 << 10)  //  Mean host run that suits staging

typedef struct {
    int64_t piece_blocks;           //  Blocks per piece (the last may have fewer)
    int64_t pieces;                 //  Pieces of the batch
    int ring;                       //  Pieces of staging in flight (<= KVT_BLOCK_STAGE_RING)
} kvt_block_stage_plan_t;

//  Plan a staged copy of 'args' through 'staging_bytes': the staging is
//  split into up to KVT_BLOCK_STAGE_RING pieces of whole blocks, each of
//  at most KVT_BLOCK_STAGE_PIECE_BLOCKS blocks (a piece may split a host
//  run: its parts are copied by their pieces). Staging that holds fewer
//  than KVT_BLOCK_STAGE_RING blocks gives fewer pieces in flight, one
//  block each. Returns 0, or -EINVAL (bad arguments, staging smaller than
//  one block, a GPU slot beyond INT32_MAX).
int
    kvt_block_copy_stage_plan (const kvt_block_copy_args_t *args, size_t staging_bytes,
                               bool host_is_dst, kvt_block_stage_plan_t *plan);

//  Split piece 'piece' of the plan into its two halves. 'host_half'
//  copies between the host slab and the piece's staging (at 'piece_base',
//  block k of the piece at piece_base + k * block_bytes); 'gpu_half'
//  between that staging and the GPU slab. 'stage_slots' (piece_blocks
//  entries, the caller's) receives each block's staging slot, or -1 when
//  the block is skipped. Both halves borrow args' slot arrays and
//  'stage_slots'. GPU->host (host_is_dst) runs gpu_half then host_half.
void
    kvt_block_copy_stage_piece (const kvt_block_copy_args_t *args, bool host_is_dst,
                                const kvt_block_stage_plan_t *plan, int64_t piece,
                                void *piece_base, int64_t *stage_slots,
                                kvt_block_copy_args_t *host_half,
                                kvt_block_copy_args_t *gpu_half);

//  Is the batch worth staging? True when the mean bytes of its host runs
//  (adjacent host slots in batch order, skipped blocks left out) are at
//  least KVT_BLOCK_STAGE_MIN_RUN_BYTES and a run holds two blocks or more
//  on average (else nothing merges: the engines' per-block path is the
//  same copies without the hop through staging). host_is_dst: the host
//  slab is args->dst (GPU->host). False for an empty batch.
bool
    kvt_block_copy_stage_suits (const kvt_block_copy_args_t *args, bool host_is_dst);

//  CPU twin of kvt_block_copy_staged on host pointers: the same plan,
//  pieces and runs, through 'staging' (staging_bytes of host memory), by
//  memcpy. The same bytes as kvt_block_copy_ref. Returns 0 or -EINVAL.
int
    kvt_block_copy_staged_ref (const kvt_block_copy_args_t *args, void *staging,
                               size_t staging_bytes, bool host_is_dst);

//  Hybrid copies (issue #3): the engines' share of each direction's
//  blocks so that the kernel and the engines end together when each
//  keeps its own rate: engine_gbps / (engine_gbps + kernel_gbps), from
//  the two paths' rates at this block size both ways at once (measured
//  by the caller, once at start or from earlier batches). 0 when the
//  engines' rate is not positive, 1 when only theirs is.
double
    kvt_block_copy_hybrid_share (double engine_gbps, double kernel_gbps);

//  Split 'args' for a hybrid copy: 'engine_part' gets the last
//  round (share * count) blocks (share clamped to 0..1), 'kernel_part'
//  the others, in batch order. Both borrow args' slot arrays.
void
    kvt_block_copy_hybrid_split (const kvt_block_copy_args_t *args, double share,
                                 kvt_block_copy_args_t *kernel_part,
                                 kvt_block_copy_args_t *engine_part);

//  CPU twin of kvt_block_copy_hybrid on host pointers: each copy split
//  as the GPU path splits it, each part by memcpy. The same bytes as
//  kvt_block_copy_ref of both copies. Returns 0 or -EINVAL.
int
    kvt_block_copy_hybrid_ref (const kvt_block_copy_args_t *first,
                               const kvt_block_copy_args_t *second, double share);

//  Selftest of the CPU parts (runs, plans, staged twin, suits, hybrid split).
int
    kvt_block_copy_test (bool verbose);

#ifdef KVT_KERNELS_GPU
//  Queue the copy kernel on 'stream'; slot arrays must be device-accessible.
//  Returns 0, -EINVAL or KVT_ECUDA.
int
    kvt_block_copy (const kvt_block_copy_args_t *args, cudaStream_t stream);

//  Queue two copies (typically host->GPU and GPU->host) as one kernel
//  whose CTAs take units of either from one counter, alternating while
//  both have units left, so the two directions finish together instead
//  of the faster one leaving the other alone on the link (+3-5 GB/s both
//  ways at 16-64 KiB on the H100; tools/bench/RESULTS.md). 'ctas' sizes
//  the grid (0 = 2 per SM). 'counter' is 8 bytes of device memory the
//  caller owns, zeroed here on 'stream'; pairs in flight at once need
//  counters of their own. Slot arrays must be device-accessible.
//  Returns 0, -EINVAL or KVT_ECUDA.
int
    kvt_block_copy_pair (const kvt_block_copy_args_t *first, const kvt_block_copy_args_t *second,
                         int ctas, unsigned long long *counter, cudaStream_t stream);

//  Queue the copies on the copy engines in one batch; slot arrays are host
//  memory and may be freed on return. Returns 0, -EINVAL, -ENOMEM or KVT_ECUDA.
int
    kvt_block_copy_ce (const kvt_block_copy_args_t *args, cudaStream_t stream);

//  Staging of kvt_block_copy_staged: a GPU buffer of 'staging_bytes', an
//  engine stream and the events that order its pieces. Copies sharing one
//  stage must be queued on one stream (they reuse its buffer in stream
//  order). 64 MiB gives 16 MiB pieces. Returns NULL if CUDA fails.
typedef struct _kvt_block_stage_t kvt_block_stage_t;

kvt_block_stage_t *
    kvt_block_stage_new (size_t staging_bytes);

//  Destroy after synchronizing its engine stream; NULL-safe, nulls the
//  caller's pointer.
void
    kvt_block_stage_destroy (kvt_block_stage_t **self_p);

//  Staging bytes of 'self'.
size_t
    kvt_block_stage_bytes (const kvt_block_stage_t *self);

//  Queue a host <-> GPU copy through 'stage' on 'stream': the host slab
//  is args->dst when host_is_dst (GPU->host), else args->src; the other
//  slab is GPU memory. Host runs go on the copy engines, GPU blocks
//  through the kernel (see @header). Work queued on 'stream' after this
//  call starts after the whole copy. Slot arrays are host memory and may
//  be freed on return. Returns 0, -EINVAL (see kvt_block_copy_stage_plan),
//  -ENOMEM or KVT_ECUDA.
int
    kvt_block_copy_staged (kvt_block_stage_t *stage, const kvt_block_copy_args_t *args,
                           bool host_is_dst, cudaStream_t stream);

//  Hybrid copies (issue #3): the pair's counter, one engine stream per
//  copy and the events that join them to the caller's stream. Copies
//  sharing one must be queued on one stream. Returns NULL if CUDA fails.
typedef struct _kvt_block_hybrid_t kvt_block_hybrid_t;

kvt_block_hybrid_t *
    kvt_block_hybrid_new (void);

//  Destroy after synchronizing its engine streams; NULL-safe, nulls the
//  caller's pointer.
void
    kvt_block_hybrid_destroy (kvt_block_hybrid_t **self_p);

//  Queue two copies (typically host->GPU and GPU->host, either may be
//  empty) on 'stream': the last round (share * count) blocks of each on
//  the copy engines (kvt_block_copy_ce, each copy on an engine stream of
//  'self'), the rest in one kvt_block_copy_pair launch, all at once.
//  'share' from kvt_block_copy_hybrid_share; 0 is the pair alone, 1 the
//  engines alone. Work queued on 'stream' after this call starts after
//  both. Slot arrays are host memory and may be freed on return (the
//  kernel's slots are copied to the GPU in stream order). Slabs as for
//  the kernel (device-accessible). Returns 0, -EINVAL, -ENOMEM or
//  KVT_ECUDA.
int
    kvt_block_copy_hybrid (kvt_block_hybrid_t *self, const kvt_block_copy_args_t *first,
                           const kvt_block_copy_args_t *second, double share,
                           cudaStream_t stream);
#endif

#ifdef __cplusplus
}
#endif
#endif
