/*  =========================================================================
    kvt_kernels - what every kernel header shares: dtypes, status codes,
    and the CUDA guard that keeps kernel headers includable from plain C

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Kernel headers are C-callable (extern "C") and are included both by
    the .cu files and by plain C files of a CPU-only build. Argument
    structs and CPU references are always visible; GPU launchers are
    declared only when KVT_WITH_CUDA is set (or nvcc compiles), because
    they take a cudaStream_t and exist only in a CUDA build.
    Launchers return 0, -EINVAL for arguments they do not support (never
    asserting on caller data), or KVT_ECUDA when a CUDA call failed.
@end
*/

#ifndef KVT_KERNELS_CUH_INCLUDED
#define KVT_KERNELS_CUH_INCLUDED

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#if defined (KVT_WITH_CUDA) || defined (__CUDACC__)
#   include <cuda_runtime.h>
#   define KVT_KERNELS_GPU 1        //  GPU launchers are declared
#endif

#ifndef KVT_ECUDA                   //  Same value as runtime/kvt_error.h
#   define KVT_ECUDA (-(10000 + 1))  //  A CUDA call failed
#endif

#ifdef __cplusplus
extern "C" {
#endif

//  Element type of activations and KV (fp8 KV has its own kernels).
typedef enum {
    KVT_KDTYPE_BF16 = 0,            //  bfloat16
    KVT_KDTYPE_FP16 = 1             //  IEEE half
} kvt_kdtype_t;

//  Read element 'index' of a bf16 or fp16 array as float (CPU twins).
float
    kvt_kdtype_load (kvt_kdtype_t dtype, const void *base, size_t index);

//  Store 'value' rounded to nearest even into element 'index' (CPU twins).
void
    kvt_kdtype_store (kvt_kdtype_t dtype, void *base, size_t index, float value);

//  Fill 'count' elements with uniform values in [-amplitude, amplitude)
//  from the xorshift state '*seed' (advanced). Never zeros by accident.
void
    kvt_kdtype_fill_random (kvt_kdtype_t dtype, void *base, size_t count, float amplitude,
                            uint64_t *seed);

//  Compare 'count' GPU results with the reference, both in 'dtype': every
//  element must satisfy |gpu - ref| <= atol + rtol * |ref| and be finite,
//  and sum (gpu - ref)^2 / sum ref^2 must be <= nmse_max. Prints the first
//  10 mismatches with their indices, and a summary line when verbose or
//  failing. Returns 0 if within bounds, -1 if not.
int
    kvt_kdtype_compare (const char *what, kvt_kdtype_t dtype, const void *gpu,
                        const void *ref, size_t count, double atol, double rtol,
                        double nmse_max, int verbose);

//  Same for float arrays.
int
    kvt_float_compare (const char *what, const float *gpu, const float *ref, size_t count,
                       double atol, double rtol, double nmse_max, int verbose);

#ifdef __cplusplus
}
#endif
#endif
