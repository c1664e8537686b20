/*  =========================================================================
    test_gpu_block_copy - block gather/scatter and copy-engine path

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    For block sizes from 16 bytes to 2 MiB, with scattered slots (and a few
    negative, skipped ones): host->GPU from mapped pinned memory, GPU->host
    into mapped pinned memory and GPU->GPU, through the kernel and through
    the copy engines. Each destination is poisoned first; after the copy
    every copied block must equal its source and every other byte must
    still hold the poison (no overrun). The CPU twin runs the same copy
    on host copies of the slabs. Exit 77 without a GPU.
@end
*/

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_block_copy.cuh"

#ifndef KVT_KERNELS_GPU
int
main (void)
{
    printf ("test_gpu_block_copy: CPU-only build, skipped\n");
    return 77;
}
#else

#define T_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

#define T_POISON 0xa5

static uint32_t
t_rand (uint64_t *seed)
{
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    return (uint32_t) ((*seed * 0x2545f4914f6cdd1dull) >> 32);
}

static void
t_shuffle (int64_t *slots, int count, uint64_t *seed)
{
    for (int i = 0; i < count; i++)
        slots [i] = i;
    for (int i = count - 1; i > 0; i--) {
        int j = (int) (t_rand (seed) % (i + 1));
        int64_t tmp = slots [i]; slots [i] = slots [j]; slots [j] = tmp;
    }
}

//  direction: 0 host->GPU, 1 GPU->host, 2 GPU->GPU; path: 0 kernel, 1 copy engine
static int
t_run (int64_t block_bytes, int count, int direction, int path, uint64_t *seed, bool verbose)
{
    int slots = count * 2 + 3;                      //  Room to scatter
    int64_t slot_bytes = block_bytes + (block_bytes % 64? 16: 0);  //  Padded slots too
    size_t slab_bytes = (size_t) slots * slot_bytes;
    int64_t *src_slots = (int64_t *) malloc (slots * sizeof (int64_t));
    int64_t *dst_slots = (int64_t *) malloc (slots * sizeof (int64_t));
    t_shuffle (src_slots, slots, seed);
    t_shuffle (dst_slots, slots, seed);
    if (count > 4) {
        src_slots [1] = -1;                         //  Skipped blocks
        dst_slots [3] = -1;
    }
    //  Source and destination slabs, by direction
    void *h_src_pinned = NULL, *h_dst_pinned = NULL, *d_src = NULL, *d_dst = NULL;
    unsigned char *src_image = (unsigned char *) malloc (slab_bytes);
    unsigned char *expect = (unsigned char *) malloc (slab_bytes);
    unsigned char *result = (unsigned char *) malloc (slab_bytes);
    for (size_t i = 0; i < slab_bytes; i++)
        src_image [i] = (unsigned char) t_rand (seed);
    void *src, *dst;
    if (direction == 0) {
        T_CHECK (cudaHostAlloc (&h_src_pinned, slab_bytes, cudaHostAllocMapped));
        memcpy (h_src_pinned, src_image, slab_bytes);
        T_CHECK (cudaHostGetDevicePointer (&src, h_src_pinned, 0));
    }
    else {
        T_CHECK (cudaMalloc (&d_src, slab_bytes));
        T_CHECK (cudaMemcpy (d_src, src_image, slab_bytes, cudaMemcpyHostToDevice));
        src = d_src;
    }
    if (direction == 1) {
        T_CHECK (cudaHostAlloc (&h_dst_pinned, slab_bytes, cudaHostAllocMapped));
        memset (h_dst_pinned, T_POISON, slab_bytes);
        T_CHECK (cudaHostGetDevicePointer (&dst, h_dst_pinned, 0));
    }
    else {
        T_CHECK (cudaMalloc (&d_dst, slab_bytes));
        T_CHECK (cudaMemset (d_dst, T_POISON, slab_bytes));
        dst = d_dst;
    }
    //  Reference on host images
    memset (expect, T_POISON, slab_bytes);
    kvt_block_copy_args_t args = {
        .dst = expect, .src = src_image, .dst_slots = dst_slots, .src_slots = src_slots,
        .dst_slot_bytes = slot_bytes, .src_slot_bytes = slot_bytes,
        .block_bytes = block_bytes, .count = count, .max_ctas = (int) (t_rand (seed) % 3) * 7
    };
    int rc = kvt_block_copy_ref (&args);
    if (rc)
        return -1;
    args.dst = dst;
    args.src = src;
    int64_t *d_src_slots = NULL, *d_dst_slots = NULL;
    cudaStream_t stream;
    T_CHECK (cudaStreamCreateWithFlags (&stream, cudaStreamNonBlocking));
    if (path == 0) {
        T_CHECK (cudaMalloc ((void **) &d_src_slots, count * sizeof (int64_t)));
        T_CHECK (cudaMalloc ((void **) &d_dst_slots, count * sizeof (int64_t)));
        T_CHECK (cudaMemcpy (d_src_slots, src_slots, count * sizeof (int64_t),
                             cudaMemcpyHostToDevice));
        T_CHECK (cudaMemcpy (d_dst_slots, dst_slots, count * sizeof (int64_t),
                             cudaMemcpyHostToDevice));
        args.src_slots = d_src_slots;
        args.dst_slots = d_dst_slots;
        rc = kvt_block_copy (&args, stream);
    }
    else
        rc = kvt_block_copy_ce (&args, stream);
    T_CHECK (cudaStreamSynchronize (stream));
    if (rc) {
        fprintf (stderr, "copy failed: %d\n", rc);
        return -1;
    }
    if (direction == 1)
        memcpy (result, h_dst_pinned, slab_bytes);
    else
        T_CHECK (cudaMemcpy (result, d_dst, slab_bytes, cudaMemcpyDeviceToHost));
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < slab_bytes; i++)
        if (result [i] != expect [i] && bad++ == 0)
            first_bad = i;
    static const char *directions [] = { "h2d", "d2h", "d2d" };
    if (bad || verbose)
        printf ("  %s %s block=%lld count=%d: %zu bytes differ%s (first at %zu)\n",
                directions [direction], path? "ce": "kernel", (long long) block_bytes,
                count, bad, bad? " FAIL": "", first_bad);
    cudaStreamDestroy (stream);
    cudaFree (d_src_slots);
    cudaFree (d_dst_slots);
    cudaFree (d_src);
    cudaFree (d_dst);
    cudaFreeHost (h_src_pinned);
    cudaFreeHost (h_dst_pinned);
    free (src_image);
    free (expect);
    free (result);
    free (src_slots);
    free (dst_slots);
    return bad? -1: 0;
}

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    int device_count = 0;
    if (cudaGetDeviceCount (&device_count) != cudaSuccess || device_count == 0) {
        printf ("test_gpu_block_copy: no GPU, skipped\n");
        return 77;
    }
    uint64_t seed = 0x5eed0002;
    static const struct { int64_t bytes; int count; } sizes [] = {
        { 16, 1000 }, { 48, 37 }, { 4112, 300 }, { 16384, 500 }, { 65536 + 16, 40 },
        { 262144, 24 }, { 2 << 20, 6 }, { 1 << 20, 1 }
    };
    int failures = 0, runs = 0;
    for (size_t s = 0; s < sizeof (sizes) / sizeof (sizes [0]); s++)
        for (int direction = 0; direction < 3; direction++)
            for (int path = 0; path < 2; path++) {
                runs++;
                failures += t_run (sizes [s].bytes, sizes [s].count, direction, path, &seed,
                                   verbose) != 0;
            }
    //  Refusals
    kvt_block_copy_args_t bad = { .dst = (void *) 16, .src = (void *) 32,
        .dst_slots = (int64_t *) 16, .src_slots = (int64_t *) 16, .dst_slot_bytes = 64,
        .src_slot_bytes = 64, .block_bytes = 40, .count = 1 };
    failures += kvt_block_copy (&bad, 0) != -EINVAL;
    bad.block_bytes = 128;
    failures += kvt_block_copy_ce (&bad, 0) != -EINVAL;
    printf ("test_gpu_block_copy: %d runs, %d failed\n", runs + 2, failures);
    return failures? 1: 0;
}
#endif
