/*  =========================================================================
    kvt_dtype - fp16 and fp8 (e4m3) conversions for the CPU twins

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include "kvt_dtype.h"

float
kvt_fp16_to_float (kvt_fp16_t value)
{
    uint32_t sign = (uint32_t) (value & 0x8000) << 16;
    int exponent = (value >> 10) & 0x1f;
    uint32_t mantissa = value & 0x3ff;
    float result;
    if (exponent == 0)
        result = ldexpf ((float) mantissa, -24);            //  Zero or subnormal
    else
    if (exponent == 31)
        result = mantissa? NAN: INFINITY;
    else
        result = ldexpf ((float) (mantissa | 0x400), exponent - 25);
    uint32_t bits;
    memcpy (&bits, &result, sizeof (bits));
    bits |= sign;
    memcpy (&result, &bits, sizeof (bits));
    return result;
}

kvt_fp16_t
kvt_float_to_fp16 (float value)
{
    uint32_t bits;
    memcpy (&bits, &value, sizeof (bits));
    uint16_t sign = (uint16_t) ((bits >> 16) & 0x8000);
    float magnitude = fabsf (value);
    if (isnan (value))
        return (kvt_fp16_t) (sign | 0x7e00);
    if (magnitude >= 65520.0f)                              //  Rounds past max half
        return (kvt_fp16_t) (sign | 0x7c00);
    if (magnitude < ldexpf (1.0f, -14)) {
        //  Subnormal: units of 2^-24, round to nearest even
        float units = magnitude * 16777216.0f;
        return (kvt_fp16_t) (sign | (uint16_t) nearbyintf (units));
    }
    int exponent;
    float fraction = frexpf (magnitude, &exponent);         //  [0.5, 1)
    //  Mantissa with 11 significant bits, rounded to nearest even
    float scaled = nearbyintf (ldexpf (fraction, 11));
    if (scaled >= 2048.0f) {
        scaled /= 2.0f;
        exponent++;
    }
    uint16_t mant = (uint16_t) scaled & 0x3ff;
    uint16_t exp_bits = (uint16_t) (exponent - 1 + 15);
    return (kvt_fp16_t) (sign | (exp_bits << 10) | mant);
}

float
kvt_fp8_e4m3_to_float (kvt_fp8_t value)
{
    bool negative = value & 0x80;
    int exponent = (value >> 3) & 0xf;
    int mantissa = value & 0x7;
    float result;
    if (exponent == 0xf && mantissa == 0x7)
        return NAN;
    if (exponent == 0)
        result = ldexpf ((float) mantissa, -9);             //  Subnormal: m x 2^-9
    else
        result = ldexpf ((float) (mantissa | 8), exponent - 10);
    return negative? -result: result;
}

kvt_fp8_t
kvt_float_to_fp8_e4m3 (float value)
{
    if (isnan (value))
        return 0x7f;
    uint8_t sign = signbit (value)? 0x80: 0;
    float magnitude = fabsf (value);
    if (magnitude >= 448.0f)
        return sign | 0x7e;                                 //  Saturate at 448
    if (magnitude < ldexpf (1.0f, -6)) {
        float units = nearbyintf (magnitude * 512.0f);      //  Subnormal: units of 2^-9
        return sign | (uint8_t) units;                      //  8 units = 2^-6, exponent 1
    }
    int exponent;
    float fraction = frexpf (magnitude, &exponent);
    float scaled = nearbyintf (ldexpf (fraction, 4));       //  4 significant bits
    if (scaled >= 16.0f) {
        scaled /= 2.0f;
        exponent++;
    }
    int exp_bits = exponent - 1 + 7;
    if (exp_bits > 15 || (exp_bits == 15 && ((int) scaled & 7) == 7))
        return sign | 0x7e;
    return sign | (uint8_t) ((exp_bits << 3) | ((int) scaled & 7));
}
