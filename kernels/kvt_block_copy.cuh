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
@discuss
    A negative slot skips that block (both paths). Source and destination
    blocks must not overlap. Neither path synchronizes.
@end
*/

#ifndef KVT_BLOCK_COPY_CUH_INCLUDED
#define KVT_BLOCK_COPY_CUH_INCLUDED

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
#endif

#ifdef __cplusplus
}
#endif
#endif
