/*  =========================================================================
    kvt_fp8_ref - CPU twins of FP8 (e4m3) block quantization

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <math.h>
#include "kvt_dtype.h"
#include "kvt_fp8.cuh"

#define S_FP8_MAX 448.0f            //  Largest finite e4m3 value

//  --------------------------------------------------------------------------
//  Check the arguments; 0 or -EINVAL.

int
kvt_fp8_check (const kvt_fp8_args_t *args)
{
    if (!args || args->count < 0)
        return -EINVAL;
    if (args->count == 0)
        return 0;
    if (!args->src || !args->dst || !args->scales || !args->src_slots || !args->dst_slots)
        return -EINVAL;
    if (args->dtype != KVT_KDTYPE_BF16 && args->dtype != KVT_KDTYPE_FP16)
        return -EINVAL;
    if (args->planes <= 0 || args->plane_elems <= 0 || args->plane_elems % 8
    ||  args->src_slot_bytes % 16 || args->dst_slot_bytes % 16
    ||  args->src_slot_bytes <= 0 || args->dst_slot_bytes <= 0)
        return -EINVAL;
    if (((uintptr_t) args->src | (uintptr_t) args->dst) % 16)
        return -EINVAL;
    if (args->scale_stride != 0 && args->scale_stride < args->planes)
        return -EINVAL;
    return 0;
}

//  --------------------------------------------------------------------------
//  Quantize each plane with scale amax / 448.

int
kvt_fp8_quantize_ref (const kvt_fp8_args_t *args)
{
    int rc = kvt_fp8_check (args);
    if (rc)
        return rc;
    size_t elems = (size_t) args->planes * args->plane_elems;
    if ((int64_t) elems * 2 > args->src_slot_bytes || (int64_t) elems > args->dst_slot_bytes)
        return -EINVAL;
    int64_t stride = args->scale_stride? args->scale_stride: args->planes;
    for (int i = 0; i < args->count; i++) {
        const char *src = (const char *) args->src + args->src_slots [i] * args->src_slot_bytes;
        uint8_t *dst = (uint8_t *) args->dst + args->dst_slots [i] * args->dst_slot_bytes;
        for (int p = 0; p < args->planes; p++) {
            size_t first = (size_t) p * args->plane_elems;
            float amax = 0;
            for (int e = 0; e < args->plane_elems; e++) {
                float value = fabsf (kvt_kdtype_load (args->dtype, src, first + e));
                amax = value > amax? value: amax;
            }
            float scale = amax > 0? amax / S_FP8_MAX: 1.0f;
            float inverse = amax > 0? S_FP8_MAX / amax: 1.0f;
            args->scales [args->dst_slots [i] * stride + p] = scale;
            for (int e = 0; e < args->plane_elems; e++)
                dst [first + e] = kvt_float_to_fp8_e4m3 (
                    kvt_kdtype_load (args->dtype, src, first + e) * inverse);
        }
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Dequantize: e4m3 value times its plane's scale, rounded to the dtype.

int
kvt_fp8_dequantize_ref (const kvt_fp8_args_t *args)
{
    int rc = kvt_fp8_check (args);
    if (rc)
        return rc;
    size_t elems = (size_t) args->planes * args->plane_elems;
    if ((int64_t) elems > args->src_slot_bytes || (int64_t) elems * 2 > args->dst_slot_bytes)
        return -EINVAL;
    int64_t stride = args->scale_stride? args->scale_stride: args->planes;
    for (int i = 0; i < args->count; i++) {
        const uint8_t *src = (const uint8_t *) args->src
                           + args->src_slots [i] * args->src_slot_bytes;
        char *dst = (char *) args->dst + args->dst_slots [i] * args->dst_slot_bytes;
        for (int p = 0; p < args->planes; p++) {
            float scale = args->scales [args->src_slots [i] * stride + p];
            size_t first = (size_t) p * args->plane_elems;
            for (int e = 0; e < args->plane_elems; e++)
                kvt_kdtype_store (args->dtype, dst, first + e,
                                  kvt_fp8_e4m3_to_float (src [first + e]) * scale);
        }
    }
    return 0;
}
