/*  =========================================================================
    kvt_fp8 - FP8 (e4m3) KV blocks with per-block, per-head scales

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A KV block is a run of 'planes' planes of 'plane_elems' bf16 or fp16
    elements; in the runtime's layout [layer][K=0,V=1][kv_head][token][dim]
    a plane is one (layer, K/V, kv_head): planes = layers * 2 * kv_heads,
    plane_elems = block_tokens * head_dim. Quantizing (on demotion) turns
    block src_slots [i] into fp8 block dst_slots [i] with one float scale
    per plane, scale = amax / 448 (1 for an all-zero plane), stored at
    scales [dst_slots [i] * stride + plane] (stride = scale_stride, or
    planes when 0; a stride of slot_bytes / 4 with scales pointing past
    the payload keeps each block's scales inside its own slot, as the
    runtime's cold tiers do: kvt_fp8_block_bytes); each element becomes
    e4m3 (x * (448 / amax)), rounded to nearest even and saturating.
    Dequantizing (on promotion) reads scales [src_slots [i] * stride +
    plane] and writes e4m3_to_float (q) * scale rounded to the dtype.
    GPU and CPU twin use the same float operations, so they agree bit for
    bit; a round trip is within 2^-4 |x| + 2^-10 scale of x, plus the
    dtype's own rounding.
@end
*/

#ifndef KVT_FP8_CUH_INCLUDED
#define KVT_FP8_CUH_INCLUDED

#include "kvt_kernels.cuh"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of the bf16/fp16 side
    const void *src;                //  Source slab (bf16/fp16 to quantize, fp8 to dequantize)
    void *dst;                      //  Destination slab
    float *scales;                  //  Scales of the fp8 slab: [slots, planes]
    const int64_t *src_slots;       //  [count] source slot of each block
    const int64_t *dst_slots;       //  [count] destination slot of each block
    int64_t src_slot_bytes;         //  Bytes between source slots
    int64_t dst_slot_bytes;         //  Bytes between destination slots
    int planes;                     //  Planes per block (layers * 2 * kv_heads)
    int plane_elems;                //  Elements per plane, a multiple of 8
    int count;                      //  Blocks
    int64_t scale_stride;           //  Floats between two slots' scales; 0 = planes
} kvt_fp8_args_t;

//  Bytes of one block in the in-slot FP8 form: planes * plane_elems e4m3
//  bytes, then one float scale per plane (at offset planes * plane_elems),
//  rounded up to 16. For a bf16/fp16 block that is half its bytes plus
//  4 per plane.
static inline size_t
    kvt_fp8_block_bytes (int planes, int plane_elems)
{
    size_t bytes = (size_t) planes * (size_t) plane_elems + 4 * (size_t) planes;
    return (bytes + 15) / 16 * 16;
}

//  Check the arguments: 0 or -EINVAL.
int
    kvt_fp8_check (const kvt_fp8_args_t *args);

//  CPU twins on host pointers. Return 0 or -EINVAL.
int
    kvt_fp8_quantize_ref (const kvt_fp8_args_t *args);
int
    kvt_fp8_dequantize_ref (const kvt_fp8_args_t *args);

#ifdef KVT_KERNELS_GPU
//  Queue quantization (bf16/fp16 -> fp8 + scales) of the blocks on 'stream'.
//  Slot arrays are device-accessible. Returns 0, -EINVAL or KVT_ECUDA.
int
    kvt_fp8_quantize (const kvt_fp8_args_t *args, cudaStream_t stream);

//  Queue dequantization (fp8 + scales -> bf16/fp16) on 'stream'.
int
    kvt_fp8_dequantize (const kvt_fp8_args_t *args, cudaStream_t stream);
#endif

#ifdef __cplusplus
}
#endif
#endif
