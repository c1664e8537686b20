/*  =========================================================================
    kvt_dtype - bf16, fp16 and fp8 (e4m3) conversions for the CPU twins

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Bit-exact host versions of the conversions CUDA does in hardware:
    float -> bf16 rounds to nearest even (as __float2bfloat16), fp16 as
    __float2half, e4m3 saturating as __nv_cvt_float_to_fp8 (__NV_SATFINITE).
    CPU references use these so their results match the GPU bit for bit
    where the arithmetic does.
@end
*/

#ifndef KVT_DTYPE_H_INCLUDED
#define KVT_DTYPE_H_INCLUDED

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t kvt_bf16_t;        //  bfloat16 bits
typedef uint16_t kvt_fp16_t;        //  IEEE half bits
typedef uint8_t  kvt_fp8_t;         //  e4m3 (OCP FP8) bits

//  bf16 -> float: exact.
static inline float
kvt_bf16_to_float (kvt_bf16_t value)
{
    uint32_t bits = (uint32_t) value << 16;
    float result;
    memcpy (&result, &bits, sizeof (result));
    return result;
}

//  float -> bf16, round to nearest even; NaN stays NaN.
static inline kvt_bf16_t
kvt_float_to_bf16 (float value)
{
    uint32_t bits;
    memcpy (&bits, &value, sizeof (bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (kvt_bf16_t) ((bits >> 16) | 0x40);          //  Quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1);
    return (kvt_bf16_t) (bits >> 16);
}

//  Round a float through bf16 and back.
static inline float
kvt_round_bf16 (float value)
{
    return kvt_bf16_to_float (kvt_float_to_bf16 (value));
}

//  fp16 -> float: exact.
float
    kvt_fp16_to_float (kvt_fp16_t value);

//  float -> fp16, round to nearest even, overflow to infinity.
kvt_fp16_t
    kvt_float_to_fp16 (float value);

//  e4m3 -> float: exact (0x7f and 0xff are NaN; there is no infinity).
float
    kvt_fp8_e4m3_to_float (kvt_fp8_t value);

//  float -> e4m3, round to nearest even, saturating at +-448.
kvt_fp8_t
    kvt_float_to_fp8_e4m3 (float value);

#ifdef __cplusplus
}
#endif
#endif
