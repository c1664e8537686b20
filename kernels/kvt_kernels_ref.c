/*  =========================================================================
    kvt_kernels_ref - helpers shared by the kernels' CPU twins

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include "kvt_kernels.cuh"
#include "kvt_dtype.h"

//  --------------------------------------------------------------------------
//  Read element 'index' of a bf16 or fp16 array as float.

float
kvt_kdtype_load (kvt_kdtype_t dtype, const void *base, size_t index)
{
    const uint16_t *bits = (const uint16_t *) base;
    return dtype == KVT_KDTYPE_BF16? kvt_bf16_to_float (bits [index])
                                   : kvt_fp16_to_float (bits [index]);
}

//  --------------------------------------------------------------------------
//  Store 'value' into element 'index', rounded to nearest even.

void
kvt_kdtype_store (kvt_kdtype_t dtype, void *base, size_t index, float value)
{
    uint16_t *bits = (uint16_t *) base;
    bits [index] = dtype == KVT_KDTYPE_BF16? kvt_float_to_bf16 (value)
                                           : kvt_float_to_fp16 (value);
}

//  --------------------------------------------------------------------------
//  Uniform random fill from a xorshift64* state.

void
kvt_kdtype_fill_random (kvt_kdtype_t dtype, void *base, size_t count, float amplitude,
                        uint64_t *seed)
{
    uint64_t state = *seed? *seed: 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < count; i++) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        uint64_t bits = state * 0x2545f4914f6cdd1dull;
        float unit = (float) (bits >> 40) / (float) (1 << 24);     //  [0, 1)
        kvt_kdtype_store (dtype, base, i, (2.0f * unit - 1.0f) * amplitude);
    }
    *seed = state;
}

static int
s_compare (const char *what, const float *gpu, const float *ref, size_t count,
           double atol, double rtol, double nmse_max, int verbose)
{
    double err2 = 0, ref2 = 0, max_err = 0;
    size_t bad = 0;
    for (size_t i = 0; i < count; i++) {
        double g = gpu [i], r = ref [i];
        double err = fabs (g - r);
        if (!isfinite (g) || !isfinite (r) || err > atol + rtol * fabs (r)) {
            if (bad < 10)
                fprintf (stderr, "  %s: mismatch at %zu: gpu %.6g ref %.6g\n", what, i, g, r);
            bad++;
        }
        if (isfinite (err) && err > max_err)
            max_err = err;
        err2 += (g - r) * (g - r);
        ref2 += r * r;
    }
    double nmse = ref2 > 0? err2 / ref2: err2;
    bool fail = bad > 0 || !(nmse <= nmse_max);
    if (verbose || fail)
        fprintf (fail? stderr: stdout, "  %s: %zu elements, %zu mismatches, max err %.3g, "
                 "nmse %.3g (bound %.3g): %s\n", what, count, bad, max_err, nmse, nmse_max,
                 fail? "FAIL": "ok");
    return fail? -1: 0;
}

//  --------------------------------------------------------------------------
//  Compare two bf16/fp16 arrays element-wise and by NMSE.

int
kvt_kdtype_compare (const char *what, kvt_kdtype_t dtype, const void *gpu, const void *ref,
                    size_t count, double atol, double rtol, double nmse_max, int verbose)
{
    float *g = (float *) malloc ((count + 1) * sizeof (float));
    float *r = (float *) malloc ((count + 1) * sizeof (float));
    if (!g || !r) {
        free (g);
        free (r);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        g [i] = kvt_kdtype_load (dtype, gpu, i);
        r [i] = kvt_kdtype_load (dtype, ref, i);
    }
    int rc = s_compare (what, g, r, count, atol, rtol, nmse_max, verbose);
    free (g);
    free (r);
    return rc;
}

//  --------------------------------------------------------------------------
//  Compare two float arrays element-wise and by NMSE.

int
kvt_float_compare (const char *what, const float *gpu, const float *ref, size_t count,
                   double atol, double rtol, double nmse_max, int verbose)
{
    return s_compare (what, gpu, ref, count, atol, rtol, nmse_max, verbose);
}
