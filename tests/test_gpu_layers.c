/*  =========================================================================
    test_gpu_layers - RMSNorm, RoPE, SwiGLU, argmax and the cuBLAS GEMM,
    GPU against CPU twins

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Fresh random inputs in bf16 and fp16; outputs poisoned with NaN first.
    RoPE uses positions up to 128K with a Llama-3 base; argmax has planted
    ties (the lower index must win) and a row of equal values. Exit 77
    without a GPU or in a CPU-only build.
@end
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_layers.cuh"

#ifndef KVT_KERNELS_GPU
int
main (void)
{
    printf ("test_gpu_layers: CPU-only build, skipped\n");
    return 77;
}
#else

#include <cublas_v2.h>

#define T_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

static uint32_t
t_rand (uint64_t *seed)
{
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    return (uint32_t) ((*seed * 0x2545f4914f6cdd1dull) >> 32);
}

//  Device copy of 'bytes' host bytes
static void *
t_to_device (const void *host, size_t bytes)
{
    void *device;
    T_CHECK (cudaMalloc (&device, bytes));
    T_CHECK (cudaMemcpy (device, host, bytes, cudaMemcpyHostToDevice));
    return device;
}

static void *
t_poisoned (size_t bytes)
{
    void *device;
    T_CHECK (cudaMalloc (&device, bytes));
    T_CHECK (cudaMemset (device, 0xff, bytes));
    return device;
}

static void
t_back (void *host, void *device, size_t bytes)
{
    T_CHECK (cudaDeviceSynchronize ());
    T_CHECK (cudaMemcpy (host, device, bytes, cudaMemcpyDeviceToHost));
    T_CHECK (cudaFree (device));
}

static int
t_layers (kvt_kdtype_t dtype, cublasHandle_t cublas, uint64_t *seed, bool verbose)
{
    int failures = 0;
    const char *name = dtype == KVT_KDTYPE_BF16? "bf16": "fp16";
    double rtol = dtype == KVT_KDTYPE_BF16? 1.0 / 64: 1.0 / 512;
    double nmse = dtype == KVT_KDTYPE_BF16? 1e-4: 1e-6;
    char what [64];

    //  RMSNorm
    {
        int rows = 7, dim = 4096;
        size_t bytes = (size_t) rows * dim * 2;
        void *x = malloc (bytes), *w = malloc (dim * 2), *ref = malloc (bytes),
             *out = malloc (bytes);
        kvt_kdtype_fill_random (dtype, x, (size_t) rows * dim, 3.0f, seed);
        kvt_kdtype_fill_random (dtype, w, dim, 1.5f, seed);
        kvt_rmsnorm_args_t args = { dtype, x, w, ref, rows, dim, 1e-5f };
        failures += kvt_rmsnorm_ref (&args) != 0;
        args.x = t_to_device (x, bytes);
        args.weight = t_to_device (w, dim * 2);
        args.out = t_poisoned (bytes);
        failures += kvt_rmsnorm (&args, 0) != 0;
        t_back (out, args.out, bytes);
        snprintf (what, sizeof (what), "rmsnorm %s %dx%d", name, rows, dim);
        failures += kvt_kdtype_compare (what, dtype, out, ref, (size_t) rows * dim, 1e-5, rtol,
                                        nmse, verbose) != 0;
        cudaFree ((void *) args.x);
        cudaFree ((void *) args.weight);
        free (x); free (w); free (ref); free (out);
    }
    //  RoPE
    {
        int tokens = 9, heads = 5, dim = 128;
        size_t count = (size_t) tokens * heads * dim;
        void *x = malloc (count * 2), *ref = malloc (count * 2);
        int32_t positions [9];
        float inv_freq [64];
        kvt_rope_inv_freq (inv_freq, dim, 500000.0);
        for (int t = 0; t < tokens; t++)
            positions [t] = t == 0? 0: (int32_t) (t_rand (seed) % 131072);
        kvt_kdtype_fill_random (dtype, x, count, 2.0f, seed);
        memcpy (ref, x, count * 2);
        kvt_rope_args_t args = { dtype, ref, positions, inv_freq, tokens, heads, dim };
        failures += kvt_rope_ref (&args) != 0;
        args.x = t_to_device (x, count * 2);
        args.positions = (const int32_t *) t_to_device (positions, sizeof (positions));
        args.inv_freq = (const float *) t_to_device (inv_freq, sizeof (inv_freq));
        failures += kvt_rope (&args, 0) != 0;
        cudaFree ((void *) args.positions);
        cudaFree ((void *) args.inv_freq);
        t_back (x, args.x, count * 2);
        snprintf (what, sizeof (what), "rope %s %dx%dx%d", name, tokens, heads, dim);
        failures += kvt_kdtype_compare (what, dtype, x, ref, count, 1e-4, rtol, nmse,
                                        verbose) != 0;
        free (x); free (ref);
    }
    //  SwiGLU
    {
        int rows = 5, inter = 1000;
        size_t in_count = (size_t) rows * 2 * inter, out_count = (size_t) rows * inter;
        void *gu = malloc (in_count * 2), *ref = malloc (out_count * 2),
             *out = malloc (out_count * 2);
        kvt_kdtype_fill_random (dtype, gu, in_count, 6.0f, seed);
        kvt_swiglu_args_t args = { dtype, gu, ref, rows, inter };
        failures += kvt_swiglu_ref (&args) != 0;
        args.gate_up = t_to_device (gu, in_count * 2);
        args.out = t_poisoned (out_count * 2);
        failures += kvt_swiglu (&args, 0) != 0;
        t_back (out, args.out, out_count * 2);
        cudaFree ((void *) args.gate_up);
        snprintf (what, sizeof (what), "swiglu %s %dx%d", name, rows, inter);
        failures += kvt_kdtype_compare (what, dtype, out, ref, out_count, 1e-6, rtol, nmse,
                                        verbose) != 0;
        free (gu); free (ref); free (out);
    }
    //  Argmax, with ties
    {
        int rows = 17, vocab = 32000;
        size_t count = (size_t) rows * vocab;
        void *logits = malloc (count * 2);
        int32_t ref [17], out [17];
        kvt_kdtype_fill_random (dtype, logits, count, 10.0f, seed);
        kvt_kdtype_store (dtype, logits, 3 * (size_t) vocab + 5000, 60.0f);
        kvt_kdtype_store (dtype, logits, 3 * (size_t) vocab + 100, 60.0f);     //  Wins
        kvt_kdtype_store (dtype, logits, 4 * (size_t) vocab + vocab - 1, 60.0f);
        for (int i = 0; i < vocab; i++)
            kvt_kdtype_store (dtype, logits, 5 * (size_t) vocab + i, 1.0f);    //  All equal
        kvt_argmax_args_t args = { dtype, logits, ref, rows, vocab };
        failures += kvt_argmax_ref (&args) != 0;
        failures += ref [3] != 100 || ref [4] != vocab - 1 || ref [5] != 0;
        args.logits = t_to_device (logits, count * 2);
        args.out = (int32_t *) t_poisoned (sizeof (out));
        failures += kvt_argmax (&args, 0) != 0;
        t_back (out, args.out, sizeof (out));
        cudaFree ((void *) args.logits);
        int wrong = 0;
        for (int r = 0; r < rows; r++)
            wrong += out [r] != ref [r];
        if (wrong || verbose)
            printf ("  argmax %s %dx%d: %d rows differ%s\n", name, rows, vocab, wrong,
                    wrong? " FAIL": "");
        failures += wrong != 0;
        free (logits);
    }
    //  GEMM through cuBLAS
    {
        int m = 33, n = 256, k = 512;
        void *a = malloc ((size_t) m * k * 2), *w = malloc ((size_t) n * k * 2);
        void *ref = malloc ((size_t) m * n * 2), *out = malloc ((size_t) m * n * 2);
        kvt_kdtype_fill_random (dtype, a, (size_t) m * k, 1.0f, seed);
        kvt_kdtype_fill_random (dtype, w, (size_t) n * k, 1.0f, seed);
        kvt_gemm_args_t args = { dtype, a, w, ref, m, n, k, cublas };
        failures += kvt_gemm_ref (&args) != 0;
        args.a = t_to_device (a, (size_t) m * k * 2);
        args.w = t_to_device (w, (size_t) n * k * 2);
        args.c = t_poisoned ((size_t) m * n * 2);
        failures += kvt_gemm (&args, 0) != 0;
        t_back (out, args.c, (size_t) m * n * 2);
        cudaFree ((void *) args.a);
        cudaFree ((void *) args.w);
        snprintf (what, sizeof (what), "gemm %s %dx%dx%d", name, m, n, k);
        failures += kvt_kdtype_compare (what, dtype, out, ref, (size_t) m * n, 0.02, rtol,
                                        nmse, verbose) != 0;
        free (a); free (w); free (ref); free (out);
    }
    return failures;
}

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    int device_count = 0;
    if (cudaGetDeviceCount (&device_count) != cudaSuccess || device_count == 0) {
        printf ("test_gpu_layers: no GPU, skipped\n");
        return 77;
    }
    cublasHandle_t cublas;
    if (cublasCreate (&cublas) != CUBLAS_STATUS_SUCCESS) {
        fprintf (stderr, "test_gpu_layers: cublasCreate failed\n");
        return 1;
    }
    uint64_t seed = 0x5eed0005;
    int failures = t_layers (KVT_KDTYPE_BF16, cublas, &seed, verbose)
                 + t_layers (KVT_KDTYPE_FP16, cublas, &seed, verbose);
    kvt_rmsnorm_args_t bad = { .dim = 12 };
    failures += kvt_rmsnorm (&bad, 0) != -EINVAL;
    cublasDestroy (cublas);
    printf ("test_gpu_layers: %d failed\n", failures);
    return failures? 1: 0;
}
#endif
