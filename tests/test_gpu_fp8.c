/*  =========================================================================
    test_gpu_fp8 - FP8 (e4m3) block quantization, GPU against CPU twin

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Scattered blocks of the runtime layout (planes = layers x K/V x kv
    heads) with a different amplitude per plane, an all-zero plane and a
    plane with one outlier: quantized fp8 bytes and scales must equal the
    CPU twin's bit for bit, and so must the dequantized blocks. The round
    trip error is bounded per element (2^-4 |x| + 2^-10 scale, plus the
    dtype's rounding) and by NMSE. Exit 77 without a GPU.
@end
*/

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_fp8.cuh"

#ifndef KVT_KERNELS_GPU
int
main (void)
{
    printf ("test_gpu_fp8: CPU-only build, skipped\n");
    return 77;
}
#else

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

static int
t_run (kvt_kdtype_t dtype, int layers, int kv_heads, int block_tokens, int count,
       uint64_t *seed, bool verbose)
{
    int planes = layers * 2 * kv_heads;
    int plane_elems = block_tokens * 128;
    size_t block_elems = (size_t) planes * plane_elems;
    int slots = count * 2 + 1;
    int64_t *src_slots = (int64_t *) malloc (slots * sizeof (int64_t));
    int64_t *dst_slots = (int64_t *) malloc (slots * sizeof (int64_t));
    for (int i = 0; i < slots; i++)
        src_slots [i] = dst_slots [i] = i;
    for (int i = slots - 1; i > 0; i--) {
        int j = (int) (t_rand (seed) % (i + 1));
        int64_t tmp = src_slots [i]; src_slots [i] = src_slots [j]; src_slots [j] = tmp;
        j = (int) (t_rand (seed) % (i + 1));
        tmp = dst_slots [i]; dst_slots [i] = dst_slots [j]; dst_slots [j] = tmp;
    }
    size_t wide_bytes = (size_t) slots * block_elems * 2;
    size_t fp8_bytes = (size_t) slots * block_elems;
    size_t scale_bytes = (size_t) slots * planes * sizeof (float);
    uint16_t *h_src = (uint16_t *) malloc (wide_bytes);
    for (int s = 0; s < slots; s++)
        for (int p = 0; p < planes; p++) {
            uint16_t *plane = h_src + (size_t) s * block_elems + (size_t) p * plane_elems;
            float amp = ldexpf (1.0f, (int) (t_rand (seed) % 16) - 8);   //  2^-8 .. 2^7
            kvt_kdtype_fill_random (dtype, plane, plane_elems, amp, seed);
            if (p == 1)
                memset (plane, 0, plane_elems * 2);                     //  All zero
            if (p == 2)
                kvt_kdtype_store (dtype, plane, t_rand (seed) % plane_elems, 300 * amp);
        }
    uint8_t *ref_fp8 = (uint8_t *) calloc (1, fp8_bytes);
    float *ref_scales = (float *) calloc (1, scale_bytes);
    uint16_t *ref_back = (uint16_t *) calloc (1, wide_bytes);
    uint8_t *gpu_fp8 = (uint8_t *) malloc (fp8_bytes);
    float *gpu_scales = (float *) malloc (scale_bytes);
    uint16_t *gpu_back = (uint16_t *) malloc (wide_bytes);
    kvt_fp8_args_t quant = {
        .dtype = dtype, .src = h_src, .dst = ref_fp8, .scales = ref_scales,
        .src_slots = src_slots, .dst_slots = dst_slots,
        .src_slot_bytes = (int64_t) block_elems * 2, .dst_slot_bytes = (int64_t) block_elems,
        .planes = planes, .plane_elems = plane_elems, .count = count
    };
    kvt_fp8_args_t dequant = quant;                 //  fp8 slot dst_slots [i] -> wide src_slots [i]
    dequant.src = ref_fp8;
    dequant.dst = ref_back;
    dequant.src_slots = dst_slots;
    dequant.dst_slots = src_slots;
    dequant.src_slot_bytes = (int64_t) block_elems;
    dequant.dst_slot_bytes = (int64_t) block_elems * 2;
    if (kvt_fp8_quantize_ref (&quant) || kvt_fp8_dequantize_ref (&dequant))
        return -1;
    //  GPU
    void *d_src, *d_fp8, *d_back;
    float *d_scales;
    int64_t *d_src_slots, *d_dst_slots;
    T_CHECK (cudaMalloc (&d_src, wide_bytes));
    T_CHECK (cudaMalloc (&d_fp8, fp8_bytes));
    T_CHECK (cudaMalloc (&d_back, wide_bytes));
    T_CHECK (cudaMalloc ((void **) &d_scales, scale_bytes));
    T_CHECK (cudaMalloc ((void **) &d_src_slots, count * sizeof (int64_t)));
    T_CHECK (cudaMalloc ((void **) &d_dst_slots, count * sizeof (int64_t)));
    T_CHECK (cudaMemcpy (d_src, h_src, wide_bytes, cudaMemcpyHostToDevice));
    T_CHECK (cudaMemset (d_fp8, 0, fp8_bytes));
    T_CHECK (cudaMemset (d_back, 0, wide_bytes));
    T_CHECK (cudaMemset (d_scales, 0, scale_bytes));
    T_CHECK (cudaMemcpy (d_src_slots, src_slots, count * sizeof (int64_t),
                         cudaMemcpyHostToDevice));
    T_CHECK (cudaMemcpy (d_dst_slots, dst_slots, count * sizeof (int64_t),
                         cudaMemcpyHostToDevice));
    quant.src = d_src;
    quant.dst = d_fp8;
    quant.scales = d_scales;
    quant.src_slots = d_src_slots;
    quant.dst_slots = d_dst_slots;
    dequant.src = d_fp8;
    dequant.dst = d_back;
    dequant.scales = d_scales;
    dequant.src_slots = d_dst_slots;
    dequant.dst_slots = d_src_slots;
    int rc = kvt_fp8_quantize (&quant, 0);
    if (rc == 0)
        rc = kvt_fp8_dequantize (&dequant, 0);
    T_CHECK (cudaDeviceSynchronize ());
    if (rc) {
        fprintf (stderr, "fp8 launch failed: %d\n", rc);
        return -1;
    }
    T_CHECK (cudaMemcpy (gpu_fp8, d_fp8, fp8_bytes, cudaMemcpyDeviceToHost));
    T_CHECK (cudaMemcpy (gpu_scales, d_scales, scale_bytes, cudaMemcpyDeviceToHost));
    T_CHECK (cudaMemcpy (gpu_back, d_back, wide_bytes, cudaMemcpyDeviceToHost));
    int failures = 0;
    failures += memcmp (gpu_fp8, ref_fp8, fp8_bytes) != 0;
    failures += memcmp (gpu_scales, ref_scales, scale_bytes) != 0;
    failures += memcmp (gpu_back, ref_back, wide_bytes) != 0;
    //  Round-trip error of the reference, per element and overall
    double err2 = 0, ref2 = 0;
    size_t bad = 0;
    double dtype_eps = dtype == KVT_KDTYPE_BF16? 1.0 / 256: 1.0 / 2048;
    for (int i = 0; i < count; i++)
        for (int p = 0; p < planes; p++) {
            float scale = ref_scales [dst_slots [i] * planes + p];
            size_t first = (size_t) src_slots [i] * block_elems + (size_t) p * plane_elems;
            for (int e = 0; e < plane_elems; e++) {
                double x = kvt_kdtype_load (dtype, h_src, first + e);
                double y = kvt_kdtype_load (dtype, ref_back, first + e);
                double bound = fabs (x) / 16 + scale / 1024 + fabs (y) * dtype_eps;
                if (fabs (x - y) > bound && bad++ < 5)
                    fprintf (stderr, "  round trip: block %d plane %d elem %d: %g -> %g\n",
                             i, p, e, x, y);
                err2 += (x - y) * (x - y);
                ref2 += x * x;
            }
        }
    double nmse = err2 / ref2;
    failures += bad > 0 || !(nmse < 1.5e-3);
    if (failures || verbose)
        printf ("  %s planes=%d bt=%d count=%d: fp8 %s, scales %s, dequant %s, round-trip "
                "nmse %.3g, %zu out of bound%s\n", dtype == KVT_KDTYPE_BF16? "bf16": "fp16",
                planes, block_tokens, count,
                memcmp (gpu_fp8, ref_fp8, fp8_bytes)? "DIFFER": "equal",
                memcmp (gpu_scales, ref_scales, scale_bytes)? "DIFFER": "equal",
                memcmp (gpu_back, ref_back, wide_bytes)? "DIFFER": "equal", nmse, bad,
                failures? " FAIL": "");
    cudaFree (d_src);
    cudaFree (d_fp8);
    cudaFree (d_back);
    cudaFree (d_scales);
    cudaFree (d_src_slots);
    cudaFree (d_dst_slots);
    free (h_src);
    free (ref_fp8);
    free (ref_scales);
    free (ref_back);
    free (gpu_fp8);
    free (gpu_scales);
    free (gpu_back);
    free (src_slots);
    free (dst_slots);
    return failures? -1: 0;
}

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    int device_count = 0;
    if (cudaGetDeviceCount (&device_count) != cudaSuccess || device_count == 0) {
        printf ("test_gpu_fp8: no GPU, skipped\n");
        return 77;
    }
    uint64_t seed = 0x5eed0004;
    int failures = 0;
    failures += t_run (KVT_KDTYPE_BF16, 2, 4, 16, 37, &seed, verbose) != 0;
    failures += t_run (KVT_KDTYPE_FP16, 1, 8, 32, 11, &seed, verbose) != 0;
    failures += t_run (KVT_KDTYPE_BF16, 3, 2, 64, 5, &seed, verbose) != 0;
    kvt_fp8_args_t bad = { .count = 1 };
    failures += kvt_fp8_quantize (&bad, 0) != -EINVAL;
    printf ("test_gpu_fp8: 4 checks, %d failed\n", failures);
    return failures? 1: 0;
}
#endif
