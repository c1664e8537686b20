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
    on host copies of the slabs. The experimental one-grid pair
    (kvt_block_copy_pair, issue #3) copies host->GPU and GPU->host blocks
    in one launch, with uneven counts and block sizes. The staged path
    (kvt_block_copy_staged, issue #3) both ways: host slots in runs of 1,
    2, 16 and 64 blocks at random run-aligned places, GPU slots scattered
    (padded GPU slots too), odd counts, skipped slots, staging so small
    that pieces split runs, staging of one block, a round trip through
    one stage on one stream (GPU -> host runs -> other GPU slots), both
    ways at once on two streams and two stages, and the refusal of
    staging smaller than a block. The hybrid path (kvt_block_copy_hybrid,
    issue #3): host->GPU and GPU->host at once with fully scattered
    slots, the pair and the copy engines splitting each copy by shares
    from 0 to 1, odd and uneven counts, mixed block sizes, an empty
    side, skipped slots, two hybrid copies queued back to back on one
    stream and object; every byte against kvt_block_copy_ref and its
    CPU twin kvt_block_copy_hybrid_ref. Exit 77 without a GPU. Options:
    -v prints every case, --hybrid runs the hybrid cases only (memcheck).
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

//  One side of a pair: host->GPU (to_gpu) or GPU->host blocks with their
//  slabs, slot arrays on the GPU and the expected destination image.
typedef struct {
    kvt_block_copy_args_t args;     //  Device-side arguments
    void *pinned;                   //  Mapped pinned slab (source or destination)
    void *device;                   //  GPU slab
    int64_t *d_slots;               //  Source then destination slots, on the GPU
    unsigned char *expect;          //  Expected destination slab
    size_t slab_bytes;              //  Bytes per slab
    bool to_gpu;                    //  Direction
} t_side_t;

static void
t_side_init (t_side_t *self, int64_t block_bytes, int count, bool to_gpu, uint64_t *seed)
{
    int slots = count * 2 + 3;
    int64_t slot_bytes = block_bytes + (block_bytes % 64? 16: 0);
    self->slab_bytes = (size_t) slots * slot_bytes;
    self->to_gpu = to_gpu;
    int64_t *slot_ids = (int64_t *) malloc (2 * slots * sizeof (int64_t));
    t_shuffle (slot_ids, slots, seed);
    t_shuffle (slot_ids + slots, slots, seed);
    if (count > 4)
        slot_ids [2] = -1;                          //  One skipped block
    unsigned char *image = (unsigned char *) malloc (self->slab_bytes);
    for (size_t i = 0; i < self->slab_bytes; i++)
        image [i] = (unsigned char) t_rand (seed);
    self->expect = (unsigned char *) malloc (self->slab_bytes);
    memset (self->expect, T_POISON, self->slab_bytes);
    kvt_block_copy_args_t ref = {
        .dst = self->expect, .src = image, .dst_slots = slot_ids + slots,
        .src_slots = slot_ids, .dst_slot_bytes = slot_bytes, .src_slot_bytes = slot_bytes,
        .block_bytes = block_bytes, .count = count
    };
    if (kvt_block_copy_ref (&ref))
        exit (1);
    void *host_dev;
    T_CHECK (cudaHostAlloc (&self->pinned, self->slab_bytes, cudaHostAllocMapped));
    T_CHECK (cudaHostGetDevicePointer (&host_dev, self->pinned, 0));
    T_CHECK (cudaMalloc (&self->device, self->slab_bytes));
    if (to_gpu) {
        memcpy (self->pinned, image, self->slab_bytes);
        T_CHECK (cudaMemset (self->device, T_POISON, self->slab_bytes));
    }
    else {
        memset (self->pinned, T_POISON, self->slab_bytes);
        T_CHECK (cudaMemcpy (self->device, image, self->slab_bytes, cudaMemcpyHostToDevice));
    }
    T_CHECK (cudaMalloc ((void **) &self->d_slots, 2 * slots * sizeof (int64_t)));
    T_CHECK (cudaMemcpy (self->d_slots, slot_ids, 2 * slots * sizeof (int64_t),
                         cudaMemcpyHostToDevice));
    self->args = ref;
    self->args.src = to_gpu? host_dev: self->device;
    self->args.dst = to_gpu? self->device: host_dev;
    self->args.src_slots = self->d_slots;
    self->args.dst_slots = self->d_slots + slots;
    free (image);
    free (slot_ids);
}

//  Compares the destination with the expected image and frees the side.
//  Returns the count of differing bytes.
static size_t
t_side_check (t_side_t *self)
{
    unsigned char *result = (unsigned char *) malloc (self->slab_bytes);
    if (self->to_gpu)
        T_CHECK (cudaMemcpy (result, self->device, self->slab_bytes, cudaMemcpyDeviceToHost));
    else
        memcpy (result, self->pinned, self->slab_bytes);
    size_t bad = 0;
    for (size_t i = 0; i < self->slab_bytes; i++)
        bad += result [i] != self->expect [i];
    free (result);
    free (self->expect);
    cudaFreeHost (self->pinned);
    cudaFree (self->device);
    cudaFree (self->d_slots);
    return bad;
}

//  The pair: host->GPU blocks and GPU->host blocks in one launch.
static int
t_run_pair (int64_t bytes0, int count0, int64_t bytes1, int count1, int ctas,
            uint64_t *seed, bool verbose)
{
    t_side_t h2d, d2h;
    t_side_init (&h2d, bytes0, count0, true, seed);
    t_side_init (&d2h, bytes1, count1, false, seed);
    unsigned long long *counter;
    T_CHECK (cudaMalloc ((void **) &counter, sizeof (*counter)));
    int rc = kvt_block_copy_pair (&h2d.args, &d2h.args, ctas, counter, 0);
    T_CHECK (cudaDeviceSynchronize ());
    T_CHECK (cudaFree (counter));
    size_t bad0 = t_side_check (&h2d);
    size_t bad1 = t_side_check (&d2h);
    bool failed = rc != 0 || bad0 || bad1;
    if (failed || verbose)
        printf ("  pair h2d %lld x %d + d2h %lld x %d, %d CTAs: rc %d, %zu + %zu bytes "
                "differ%s\n", (long long) bytes0, count0, (long long) bytes1, count1, ctas,
                rc, bad0, bad1, failed? " FAIL": "");
    return failed? -1: 0;
}

//  Host copy of a side's slot lists (source then destination), and its
//  arguments with them and the host slab's own pointer (UVA), as
//  kvt_block_copy_hybrid takes them.
static int64_t *
t_side_host_args (t_side_t *self, kvt_block_copy_args_t *args)
{
    int slots = (int) (self->slab_bytes / self->args.src_slot_bytes);
    int64_t *slot_ids = (int64_t *) malloc (2 * slots * sizeof (int64_t));
    T_CHECK (cudaMemcpy (slot_ids, self->d_slots, 2 * slots * sizeof (int64_t),
                         cudaMemcpyDeviceToHost));
    *args = self->args;
    args->src_slots = slot_ids;
    args->dst_slots = slot_ids + slots;
    if (self->to_gpu)
        args->src = self->pinned;
    else
        args->dst = self->pinned;
    return slot_ids;
}

//  The hybrid path: host->GPU and GPU->host blocks at once, split between
//  the pair and the engines by 'share'; 'twice' queues a second hybrid
//  copy (other slabs) on the same stream and object before waiting.
static int
t_run_hybrid (int64_t bytes0, int count0, int64_t bytes1, int count1, double share,
              bool twice, uint64_t *seed, bool verbose)
{
    t_side_t sides [4];
    int pairs = twice? 2: 1;
    int64_t *slot_ids [4];
    kvt_block_copy_args_t args [4];
    kvt_block_hybrid_t *hybrid = kvt_block_hybrid_new ();
    if (!hybrid) {
        fprintf (stderr, "kvt_block_hybrid_new failed\n");
        return -1;
    }
    cudaStream_t stream;
    T_CHECK (cudaStreamCreateWithFlags (&stream, cudaStreamNonBlocking));
    for (int k = 0; k < 2 * pairs; k += 2) {
        t_side_init (&sides [k], bytes0, count0, true, seed);
        t_side_init (&sides [k + 1], bytes1, count1, false, seed);
        slot_ids [k] = t_side_host_args (&sides [k], &args [k]);
        slot_ids [k + 1] = t_side_host_args (&sides [k + 1], &args [k + 1]);
    }
    int rc = 0;
    for (int k = 0; k < 2 * pairs && rc == 0; k += 2) {
        rc = kvt_block_copy_hybrid (hybrid, &args [k], &args [k + 1], share, stream);
        //  The slot lists may be freed on return: poison them first
        for (int c = k; c < k + 2; c++) {
            int slots = (int) (sides [c].slab_bytes / args [c].src_slot_bytes);
            memset (slot_ids [c], 0x7f, 2 * slots * sizeof (int64_t));
        }
    }
    T_CHECK (cudaStreamSynchronize (stream));
    //  The CPU twin on host images gives the expected bytes too
    size_t bad = 0;
    for (int k = 0; k < 2 * pairs; k++) {
        bad += t_side_check (&sides [k]);
        free (slot_ids [k]);
    }
    kvt_block_hybrid_destroy (&hybrid);
    cudaStreamDestroy (stream);
    bool failed = rc != 0 || bad != 0 || hybrid != NULL;
    if (failed || verbose)
        printf ("  hybrid h2d %lld x %d + d2h %lld x %d, share %.2f%s: rc %d, %zu bytes "
                "differ%s\n", (long long) bytes0, count0, (long long) bytes1, count1, share,
                twice? ", twice": "", rc, bad, failed? " FAIL": "");
    return failed? -1: 0;
}

//  Host slots in runs of 'run' adjacent slots at random run-aligned
//  places of 'slots' (a multiple of 'run'); GPU slots a permutation.
static void
t_run_layout (int64_t *host_slots, int64_t *gpu_slots, int count, int run, int slots,
              uint64_t *seed)
{
    int64_t *order = (int64_t *) malloc (slots * sizeof (int64_t));
    t_shuffle (order, slots / run, seed);
    for (int i = 0; i < count; i++)
        host_slots [i] = order [i / run] * run + i % run;
    t_shuffle (order, slots, seed);
    for (int i = 0; i < count; i++)
        gpu_slots [i] = order [i];
    free (order);
}

//  One staged copy, GPU->host (to_host) or host->GPU, through a stage of
//  'staging_bytes', against kvt_block_copy_ref on host images. With
//  'round_trip' (GPU->host only), the same stage and stream then copy the
//  host runs back to other GPU slots, which must equal the first ones.
static int
t_run_staged (int64_t block_bytes, int count, int run, size_t staging_bytes, bool to_host,
              bool skip, bool round_trip, uint64_t *seed, bool verbose)
{
    int slots = ((count + run - 1) / run + 2) * run;
    int64_t gpu_slot_bytes = block_bytes + (block_bytes % 64? 16: 0);     //  Padded GPU slots
    size_t host_bytes = (size_t) slots * block_bytes;
    size_t gpu_bytes = (size_t) slots * gpu_slot_bytes;
    int64_t *host_slots = (int64_t *) malloc (count * sizeof (int64_t));
    int64_t *gpu_slots = (int64_t *) malloc (count * sizeof (int64_t));
    int64_t *back_slots = (int64_t *) malloc (count * sizeof (int64_t));
    t_run_layout (host_slots, gpu_slots, count, run, slots, seed);
    for (int i = 0; i < count; i++)                 //  Round trip: the slots not used
        back_slots [i] = (gpu_slots [i] + slots / 2) % slots;
    if (skip && count > 4) {
        host_slots [1] = -1;                        //  Skipped blocks, either side
        gpu_slots [count - 2] = -1;
    }
    size_t src_bytes = to_host? gpu_bytes: host_bytes;
    size_t dst_bytes = to_host? host_bytes: gpu_bytes;
    unsigned char *src_image = (unsigned char *) malloc (src_bytes);
    unsigned char *expect = (unsigned char *) malloc (dst_bytes);
    unsigned char *result = (unsigned char *) malloc (dst_bytes);
    for (size_t i = 0; i < src_bytes; i++)
        src_image [i] = (unsigned char) t_rand (seed);
    memset (expect, T_POISON, dst_bytes);
    kvt_block_copy_args_t args = {
        .dst = expect, .src = src_image,
        .dst_slots = to_host? host_slots: gpu_slots, .src_slots = to_host? gpu_slots: host_slots,
        .dst_slot_bytes = to_host? block_bytes: gpu_slot_bytes,
        .src_slot_bytes = to_host? gpu_slot_bytes: block_bytes,
        .block_bytes = block_bytes, .count = count
    };
    if (kvt_block_copy_ref (&args))
        return -1;
    void *host, *gpu;
    T_CHECK (cudaHostAlloc (&host, host_bytes, cudaHostAllocDefault));
    T_CHECK (cudaMalloc (&gpu, gpu_bytes));
    if (to_host) {
        memset (host, T_POISON, host_bytes);
        T_CHECK (cudaMemcpy (gpu, src_image, gpu_bytes, cudaMemcpyHostToDevice));
    }
    else {
        memcpy (host, src_image, host_bytes);
        T_CHECK (cudaMemset (gpu, T_POISON, gpu_bytes));
    }
    cudaStream_t stream;
    T_CHECK (cudaStreamCreateWithFlags (&stream, cudaStreamNonBlocking));
    kvt_block_stage_t *stage = kvt_block_stage_new (staging_bytes);
    if (!stage) {
        fprintf (stderr, "kvt_block_stage_new failed\n");
        return -1;
    }
    args.dst = to_host? host: gpu;
    args.src = to_host? gpu: host;
    int rc = kvt_block_copy_staged (stage, &args, to_host, stream);
    //  Round trip: host runs back to other GPU slots, queued behind
    kvt_block_copy_args_t back = args;
    if (round_trip && rc == 0) {
        back.dst = gpu;
        back.src = host;
        back.dst_slots = back_slots;
        back.src_slots = host_slots;
        back.dst_slot_bytes = gpu_slot_bytes;
        back.src_slot_bytes = block_bytes;
        rc = kvt_block_copy_staged (stage, &back, false, stream);
    }
    T_CHECK (cudaStreamSynchronize (stream));
    size_t bad = 0, first_bad = 0;
    if (to_host)
        memcpy (result, host, host_bytes);
    else
        T_CHECK (cudaMemcpy (result, gpu, gpu_bytes, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < dst_bytes; i++)
        if (result [i] != expect [i] && bad++ == 0)
            first_bad = i;
    if (round_trip) {
        //  Every copied block: back slot == original GPU slot's bytes
        unsigned char *gpu_image = (unsigned char *) malloc (gpu_bytes);
        T_CHECK (cudaMemcpy (gpu_image, gpu, gpu_bytes, cudaMemcpyDeviceToHost));
        for (int i = 0; i < count; i++) {
            if (host_slots [i] < 0 || gpu_slots [i] < 0)
                continue;
            if (memcmp (gpu_image + back_slots [i] * gpu_slot_bytes,
                        src_image + gpu_slots [i] * gpu_slot_bytes, block_bytes) && bad++ == 0)
                first_bad = (size_t) i;
        }
        free (gpu_image);
    }
    bool failed = rc != 0 || bad != 0;
    if (failed || verbose)
        printf ("  staged %s%s block=%lld count=%d run=%d staging=%zu skip=%d: rc %d, "
                "%zu bytes differ%s (first at %zu)\n", to_host? "d2h": "h2d",
                round_trip? "+h2d": "", (long long) block_bytes, count, run, staging_bytes,
                skip, rc, bad, failed? " FAIL": "", first_bad);
    kvt_block_stage_destroy (&stage);
    cudaStreamDestroy (stream);
    cudaFreeHost (host);
    cudaFree (gpu);
    free (src_image);
    free (expect);
    free (result);
    free (host_slots);
    free (gpu_slots);
    free (back_slots);
    return failed? -1: 0;
}

//  Both ways at once through two stages on two streams: host runs ->
//  GPU slots beside other GPU slots -> other host runs.
static int
t_run_staged_both (int64_t block_bytes, int count, int run, size_t staging_bytes,
                   uint64_t *seed, bool verbose)
{
    int slots = 2 * ((count + run - 1) / run + 1) * run;
    size_t slab_bytes = (size_t) slots * block_bytes;
    int64_t *host_slots = (int64_t *) malloc (slots * sizeof (int64_t));
    int64_t *gpu_slots = (int64_t *) malloc (slots * sizeof (int64_t));
    //  The first 'count' of each for host->GPU, the next for GPU->host
    t_run_layout (host_slots, gpu_slots, 2 * count, run, slots, seed);
    unsigned char *host_image = (unsigned char *) malloc (slab_bytes);
    unsigned char *gpu_image = (unsigned char *) malloc (slab_bytes);
    unsigned char *result = (unsigned char *) malloc (slab_bytes);
    for (size_t i = 0; i < slab_bytes; i++) {
        host_image [i] = (unsigned char) t_rand (seed);
        gpu_image [i] = (unsigned char) t_rand (seed);
    }
    void *host, *gpu;
    T_CHECK (cudaHostAlloc (&host, slab_bytes, cudaHostAllocDefault));
    T_CHECK (cudaMalloc (&gpu, slab_bytes));
    memcpy (host, host_image, slab_bytes);
    T_CHECK (cudaMemcpy (gpu, gpu_image, slab_bytes, cudaMemcpyHostToDevice));
    kvt_block_copy_args_t h2d = {
        .dst = gpu_image, .src = host_image, .dst_slots = gpu_slots, .src_slots = host_slots,
        .dst_slot_bytes = block_bytes, .src_slot_bytes = block_bytes,
        .block_bytes = block_bytes, .count = count
    };
    kvt_block_copy_args_t d2h = h2d;
    d2h.dst = host_image;
    d2h.src = gpu_image;
    d2h.dst_slots = host_slots + count;
    d2h.src_slots = gpu_slots + count;
    //  Disjoint slots: the reference order does not matter
    if (kvt_block_copy_ref (&h2d) || kvt_block_copy_ref (&d2h))
        return -1;
    h2d.dst = gpu;
    h2d.src = host;
    d2h.dst = host;
    d2h.src = gpu;
    cudaStream_t streams [2];
    kvt_block_stage_t *stages [2];
    for (int k = 0; k < 2; k++) {
        T_CHECK (cudaStreamCreateWithFlags (&streams [k], cudaStreamNonBlocking));
        stages [k] = kvt_block_stage_new (staging_bytes);
        if (!stages [k])
            return -1;
    }
    int rc = kvt_block_copy_staged (stages [0], &h2d, false, streams [0]);
    if (rc == 0)
        rc = kvt_block_copy_staged (stages [1], &d2h, true, streams [1]);
    T_CHECK (cudaDeviceSynchronize ());
    size_t bad = 0;
    T_CHECK (cudaMemcpy (result, gpu, slab_bytes, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < slab_bytes; i++)
        bad += result [i] != gpu_image [i];
    memcpy (result, host, slab_bytes);
    for (size_t i = 0; i < slab_bytes; i++)
        bad += result [i] != host_image [i];
    bool failed = rc != 0 || bad != 0;
    if (failed || verbose)
        printf ("  staged both block=%lld count=%d run=%d staging=%zu: rc %d, %zu bytes "
                "differ%s\n", (long long) block_bytes, count, run, staging_bytes, rc, bad,
                failed? " FAIL": "");
    for (int k = 0; k < 2; k++) {
        kvt_block_stage_destroy (&stages [k]);
        cudaStreamDestroy (streams [k]);
    }
    cudaFreeHost (host);
    cudaFree (gpu);
    free (host_image);
    free (gpu_image);
    free (result);
    free (host_slots);
    free (gpu_slots);
    return failed? -1: 0;
}

int
main (int argc, char *argv [])
{
    //  -v: every case; --hybrid: the hybrid cases only (for memcheck)
    bool verbose = false, only_hybrid = false;
    for (int i = 1; i < argc; i++) {
        verbose |= strcmp (argv [i], "-v") == 0;
        only_hybrid |= strcmp (argv [i], "--hybrid") == 0;
    }
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
    for (size_t s = 0; s < sizeof (sizes) / sizeof (sizes [0]) && !only_hybrid; s++)
        for (int direction = 0; direction < 3; direction++)
            for (int path = 0; path < 2; path++) {
                runs++;
                failures += t_run (sizes [s].bytes, sizes [s].count, direction, path, &seed,
                                   verbose) != 0;
            }
    static const struct { int64_t bytes0; int count0; int64_t bytes1; int count1;
                          int ctas; } pairs [] = {
        { 16384, 300, 16384, 300, 0 }, { 65536, 40, 16384, 301, 7 },
        { 4112, 17, 2 << 20, 5, 0 }, { 48, 1000, 65536 + 16, 3, 1 }, { 16, 5, 16, 0, 0 }
    };
    for (size_t p = 0; p < sizeof (pairs) / sizeof (pairs [0]) && !only_hybrid; p++) {
        runs++;
        failures += t_run_pair (pairs [p].bytes0, pairs [p].count0, pairs [p].bytes1,
                                pairs [p].count1, pairs [p].ctas, &seed, verbose) != 0;
    }
    //  Staged: runs of 1, 2, 16, 64; odd counts; skips; small staging
    static const struct { int64_t bytes; int count; int run; size_t staging; bool skip; }
    staged [] = {
        { 16384, 200, 1, 8 << 20, false },      //  Runs of one block
        { 16384, 301, 2, 8 << 20, true },       //  Odd count, skipped slots
        { 16384, 1000, 16, 64 << 20, true },    //  Pieces of 896 blocks split a run
        { 16384, 2049, 64, 64 << 20, false },   //  Runs of 64, three pieces
        { 65536, 257, 64, 1 << 20, true },      //  Pieces of 4 blocks split every run
        { 65536 + 16, 99, 16, 4 << 20, true },  //  Padded GPU slots
        { 262144, 130, 64, 16 << 20, false },   //  One piece of 16 blocks
        { 2 << 20, 9, 2, 5 << 20, true },       //  Staging of 2.5 blocks: ring of 2
        { 4096, 5000, 64, 64 << 20, true },     //  Many pieces, each 896 blocks
        { 48, 77, 16, 48, false },              //  Staging of one block
    };
    for (size_t c = 0; c < sizeof (staged) / sizeof (staged [0]) && !only_hybrid; c++)
        for (int way = 0; way < 2; way++) {
            runs++;
            failures += t_run_staged (staged [c].bytes, staged [c].count, staged [c].run,
                                      staged [c].staging, way == 1, staged [c].skip, false,
                                      &seed, verbose) != 0;
        }
    //  Hybrid: the pair and the engines at once, shares 0..1
    static const struct { int64_t bytes0; int count0; int64_t bytes1; int count1;
                          double share; bool twice; } hybrids [] = {
        { 16384, 300, 16384, 300, 0.1, false },     //  Even split, small engine share
        { 16384, 301, 16384, 77, 0.5, false },      //  Odd, uneven counts
        { 65536, 41, 65536, 40, 0.37, true },       //  Two copies back to back
        { 16384, 5, 16384, 0, 1.0, false },         //  Engines only, one side empty
        { 16384, 0, 16384, 9, 0.5, false },         //  The other side empty
        { 4112, 17, 4112, 1000, 0.07, false },      //  Padded slots, uneven
        { 65536 + 16, 3, 2 << 20, 5, 0.5, true },   //  Mixed block sizes
        { 16384, 999, 16384, 1001, 0.0, false },    //  The pair alone
        { 16384, 1, 16384, 1, 0.4, false },         //  One block each: rounds to the pair
    };
    for (size_t h = 0; h < sizeof (hybrids) / sizeof (hybrids [0]); h++) {
        runs++;
        failures += t_run_hybrid (hybrids [h].bytes0, hybrids [h].count0, hybrids [h].bytes1,
                                  hybrids [h].count1, hybrids [h].share, hybrids [h].twice,
                                  &seed, verbose) != 0;
    }
    runs += 2;
    if (!only_hybrid) {
        runs += 3;
        failures += t_run_staged (16384, 700, 64, 2 << 20, true, true, true, &seed,
                                  verbose) != 0;
        failures += t_run_staged_both (16384, 3000, 64, 8 << 20, &seed, verbose) != 0;
        failures += t_run_staged_both (2 << 20, 40, 8, 16 << 20, &seed, verbose) != 0;
    }
    //  Refusals
    kvt_block_copy_args_t bad = { .dst = (void *) 16, .src = (void *) 32,
        .dst_slots = (int64_t *) 16, .src_slots = (int64_t *) 16, .dst_slot_bytes = 64,
        .src_slot_bytes = 64, .block_bytes = 40, .count = 1 };
    failures += kvt_block_copy (&bad, 0) != -EINVAL;
    bad.block_bytes = 128;
    failures += kvt_block_copy_ce (&bad, 0) != -EINVAL;
    bad.block_bytes = 64;           //  Valid, but no counter
    failures += kvt_block_copy_pair (&bad, &bad, 0, NULL, 0) != -EINVAL;
    kvt_block_stage_t *small = kvt_block_stage_new (32);    //  Smaller than a 64-byte block
    failures += !small || kvt_block_copy_staged (small, &bad, true, 0) != -EINVAL;
    failures += kvt_block_copy_staged (NULL, &bad, true, 0) != -EINVAL;
    kvt_block_stage_destroy (&small);
    failures += kvt_block_copy_hybrid (NULL, &bad, &bad, 0.5, 0) != -EINVAL;
    kvt_block_hybrid_t *hybrid = kvt_block_hybrid_new ();
    bad.block_bytes = 40;
    failures += !hybrid || kvt_block_copy_hybrid (hybrid, &bad, &bad, 0.5, 0) != -EINVAL;
    kvt_block_hybrid_destroy (&hybrid);
    printf ("test_gpu_block_copy: %d runs, %d failed\n", runs + 7, failures);
    return failures? 1: 0;
}
#endif
