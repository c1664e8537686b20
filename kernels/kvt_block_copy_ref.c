/*  =========================================================================
    kvt_block_copy_ref - CPU twin of the block gather/scatter kernel

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_block_copy.cuh"

//  --------------------------------------------------------------------------
//  Check the arguments; 0 or -EINVAL.

int
kvt_block_copy_check (const kvt_block_copy_args_t *args)
{
    if (!args || args->count < 0)
        return -EINVAL;
    if (args->count == 0)
        return 0;
    if (!args->dst || !args->src || !args->dst_slots || !args->src_slots)
        return -EINVAL;
    if (args->block_bytes <= 0 || args->block_bytes % 16
    ||  args->dst_slot_bytes % 16 || args->src_slot_bytes % 16
    ||  args->dst_slot_bytes < args->block_bytes || args->src_slot_bytes < args->block_bytes)
        return -EINVAL;
    if (((uintptr_t) args->dst | (uintptr_t) args->src) % 16 || args->max_ctas < 0)
        return -EINVAL;
    return 0;
}

//  --------------------------------------------------------------------------
//  Copy each block with memcpy; negative slots are skipped.

int
kvt_block_copy_ref (const kvt_block_copy_args_t *args)
{
    int rc = kvt_block_copy_check (args);
    if (rc)
        return rc;
    for (int i = 0; i < args->count; i++) {
        if (args->dst_slots [i] < 0 || args->src_slots [i] < 0)
            continue;
        memcpy ((char *) args->dst + args->dst_slots [i] * args->dst_slot_bytes,
                (const char *) args->src + args->src_slots [i] * args->src_slot_bytes,
                (size_t) args->block_bytes);
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Merge adjacent blocks into runs (the copy-engine paths' submissions).

size_t
kvt_block_copy_runs (const kvt_block_copy_args_t *args, kvt_block_run_t *runs)
{
    size_t count = 0;
    for (int i = 0; i < args->count; i++) {
        if (args->dst_slots [i] < 0 || args->src_slots [i] < 0)
            continue;
        int64_t dst = args->dst_slots [i] * args->dst_slot_bytes;
        int64_t src = args->src_slots [i] * args->src_slot_bytes;
        kvt_block_run_t *last = count > 0? &runs [count - 1]: NULL;
        if (last
        &&  last->dst_offset + last->bytes == dst
        &&  last->src_offset + last->bytes == src)
            last->bytes += args->block_bytes;               //  Adjacent: extend the run
        else
            runs [count++] = (kvt_block_run_t) { dst, src, args->block_bytes };
    }
    return count;
}

//  --------------------------------------------------------------------------
//  Plan a staged copy: pieces of whole blocks, up to a ring of them.

int
kvt_block_copy_stage_plan (const kvt_block_copy_args_t *args, size_t staging_bytes,
                           bool host_is_dst, kvt_block_stage_plan_t *plan)
{
    int rc = kvt_block_copy_check (args);
    if (rc)
        return rc;
    if (!plan || staging_bytes < (size_t) args->block_bytes)
        return -EINVAL;
    const int64_t *gpu_slots = host_is_dst? args->src_slots: args->dst_slots;
    for (int i = 0; i < args->count; i++)
        if (gpu_slots [i] > INT32_MAX)
            return -EINVAL;             //  Kernel parameters carry 32-bit GPU slots
    int64_t capacity = (int64_t) (staging_bytes / (size_t) args->block_bytes);
    plan->ring = capacity < KVT_BLOCK_STAGE_RING? (int) capacity: KVT_BLOCK_STAGE_RING;
    plan->piece_blocks = capacity / plan->ring;
    if (plan->piece_blocks > KVT_BLOCK_STAGE_PIECE_BLOCKS)
        plan->piece_blocks = KVT_BLOCK_STAGE_PIECE_BLOCKS;
    plan->pieces = (args->count + plan->piece_blocks - 1) / plan->piece_blocks;
    return 0;
}

//  --------------------------------------------------------------------------
//  The host and GPU halves of one piece.

void
kvt_block_copy_stage_piece (const kvt_block_copy_args_t *args, bool host_is_dst,
                            const kvt_block_stage_plan_t *plan, int64_t piece, void *piece_base,
                            int64_t *stage_slots, kvt_block_copy_args_t *host_half,
                            kvt_block_copy_args_t *gpu_half)
{
    int64_t first = piece * plan->piece_blocks;
    int64_t count = args->count - first < plan->piece_blocks? args->count - first
                                                             : plan->piece_blocks;
    for (int64_t k = 0; k < count; k++)
        stage_slots [k] = args->dst_slots [first + k] >= 0
                       && args->src_slots [first + k] >= 0? k: -1;
    //  The staging side of each half: dense blocks of the piece
    kvt_block_copy_args_t to_stage = {
        .dst = piece_base, .src = args->src, .dst_slots = stage_slots,
        .src_slots = args->src_slots + first, .dst_slot_bytes = args->block_bytes,
        .src_slot_bytes = args->src_slot_bytes, .block_bytes = args->block_bytes,
        .count = (int) count, .max_ctas = args->max_ctas
    };
    kvt_block_copy_args_t from_stage = {
        .dst = args->dst, .src = piece_base, .dst_slots = args->dst_slots + first,
        .src_slots = stage_slots, .dst_slot_bytes = args->dst_slot_bytes,
        .src_slot_bytes = args->block_bytes, .block_bytes = args->block_bytes,
        .count = (int) count, .max_ctas = args->max_ctas
    };
    //  GPU->host: the GPU blocks go to staging, staging to the host runs
    *gpu_half = host_is_dst? to_stage: from_stage;
    *host_half = host_is_dst? from_stage: to_stage;
}

//  --------------------------------------------------------------------------
//  Is the batch worth staging (mean host run bytes)?

bool
kvt_block_copy_stage_suits (const kvt_block_copy_args_t *args, bool host_is_dst)
{
    if (!args || args->count <= 0 || !args->dst_slots || !args->src_slots)
        return false;
    const int64_t *host_slots = host_is_dst? args->dst_slots: args->src_slots;
    int64_t host_slot_bytes = host_is_dst? args->dst_slot_bytes: args->src_slot_bytes;
    //  Slots are adjacent in memory only when a slot holds exactly a block
    bool dense = host_slot_bytes == args->block_bytes;
    int64_t blocks = 0, runs = 0, previous = -2;
    for (int i = 0; i < args->count; i++) {
        if (args->dst_slots [i] < 0 || args->src_slots [i] < 0)
            continue;
        blocks++;
        if (!dense || host_slots [i] != previous + 1)
            runs++;
        previous = host_slots [i];
    }
    return runs > 0 && blocks >= 2 * runs
        && blocks * args->block_bytes / runs >= (int64_t) KVT_BLOCK_STAGE_MIN_RUN_BYTES;
}

//  --------------------------------------------------------------------------
//  CPU twin of the staged copy: the same pieces and runs, by memcpy.

int
kvt_block_copy_staged_ref (const kvt_block_copy_args_t *args, void *staging,
                           size_t staging_bytes, bool host_is_dst)
{
    kvt_block_stage_plan_t plan = { 0 };
    int rc = kvt_block_copy_stage_plan (args, staging_bytes, host_is_dst, &plan);
    if (rc)
        return rc;
    if (!staging || (uintptr_t) staging % 16)
        return -EINVAL;
    if (plan.pieces == 0)
        return 0;
    int64_t *stage_slots = (int64_t *) malloc (plan.piece_blocks * sizeof (int64_t));
    kvt_block_run_t *runs = (kvt_block_run_t *) malloc (plan.piece_blocks
                                                        * sizeof (kvt_block_run_t));
    if (!stage_slots || !runs) {
        free (stage_slots);
        free (runs);
        return -ENOMEM;
    }
    for (int64_t piece = 0; piece < plan.pieces && rc == 0; piece++) {
        char *base = (char *) staging + (piece % plan.ring) * plan.piece_blocks
                                      * args->block_bytes;
        kvt_block_copy_args_t host_half, gpu_half;
        kvt_block_copy_stage_piece (args, host_is_dst, &plan, piece, base, stage_slots,
                                    &host_half, &gpu_half);
        if (host_is_dst)
            rc = kvt_block_copy_ref (&gpu_half);
        size_t count = kvt_block_copy_runs (&host_half, runs);
        for (size_t r = 0; r < count; r++)
            memcpy ((char *) host_half.dst + runs [r].dst_offset,
                    (const char *) host_half.src + runs [r].src_offset, (size_t) runs [r].bytes);
        if (!host_is_dst && rc == 0)
            rc = kvt_block_copy_ref (&gpu_half);
    }
    free (stage_slots);
    free (runs);
    return rc;
}

//  --------------------------------------------------------------------------
//  Hybrid copies: the engines' share from the two paths' rates.

double
kvt_block_copy_hybrid_share (double engine_gbps, double kernel_gbps)
{
    if (!(engine_gbps > 0))
        return 0;
    if (!(kernel_gbps > 0))
        return 1;
    return engine_gbps / (engine_gbps + kernel_gbps);
}

//  --------------------------------------------------------------------------
//  Split a copy into the kernel's part (first blocks) and the engines'
//  part (the last round (share * count) blocks).

void
kvt_block_copy_hybrid_split (const kvt_block_copy_args_t *args, double share,
                             kvt_block_copy_args_t *kernel_part,
                             kvt_block_copy_args_t *engine_part)
{
    if (!(share > 0))
        share = 0;
    if (share > 1)
        share = 1;
    int engine_blocks = (int) (share * args->count + 0.5);
    if (engine_blocks > args->count)
        engine_blocks = args->count;
    *kernel_part = *args;
    kernel_part->count = args->count - engine_blocks;
    *engine_part = *args;
    engine_part->count = engine_blocks;
    engine_part->dst_slots = args->dst_slots? args->dst_slots + kernel_part->count: NULL;
    engine_part->src_slots = args->src_slots? args->src_slots + kernel_part->count: NULL;
}

//  --------------------------------------------------------------------------
//  CPU twin of the hybrid copy: each part of each copy by memcpy.

int
kvt_block_copy_hybrid_ref (const kvt_block_copy_args_t *first,
                           const kvt_block_copy_args_t *second, double share)
{
    int rc = kvt_block_copy_check (first);
    if (rc == 0)
        rc = kvt_block_copy_check (second);
    const kvt_block_copy_args_t *copies [2] = { first, second };
    for (int c = 0; c < 2 && rc == 0; c++) {
        kvt_block_copy_args_t kernel_part, engine_part;
        kvt_block_copy_hybrid_split (copies [c], share, &kernel_part, &engine_part);
        rc = kvt_block_copy_ref (&kernel_part);
        if (rc == 0)
            rc = kvt_block_copy_ref (&engine_part);
    }
    return rc;
}

//  --------------------------------------------------------------------------
//  Selftest

static int s_test_failures = 0;

#define S_TEST(cond) do { if (!(cond)) { \
    fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    s_test_failures++; } } while (0)

static uint64_t
s_test_rand (uint64_t *seed)
{
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    return *seed;
}

//  Host slots: blocks in runs of 'run' adjacent slots, each run at a
//  random run-aligned place among 'slots' (a multiple of 'run'); GPU
//  slots: a random permutation of 'slots'.
static void
s_test_layout (int64_t *host_slots, int64_t *gpu_slots, int count, int run, int64_t slots,
               uint64_t *seed)
{
    int64_t runs = slots / run;
    int64_t *order = (int64_t *) malloc ((size_t) (runs > slots? runs: slots) * sizeof (int64_t));
    for (int64_t r = 0; r < runs; r++)
        order [r] = r;
    for (int64_t r = runs - 1; r > 0; r--) {
        int64_t j = (int64_t) (s_test_rand (seed) % (uint64_t) (r + 1));
        int64_t tmp = order [r]; order [r] = order [j]; order [j] = tmp;
    }
    for (int i = 0; i < count; i++)
        host_slots [i] = order [i / run] * run + i % run;
    for (int64_t k = 0; k < slots; k++)
        order [k] = k;
    for (int64_t k = slots - 1; k > 0; k--) {
        int64_t j = (int64_t) (s_test_rand (seed) % (uint64_t) (k + 1));
        int64_t tmp = order [k]; order [k] = order [j]; order [j] = tmp;
    }
    for (int i = 0; i < count; i++)
        gpu_slots [i] = order [i];
    free (order);
}

//  The staged twin against kvt_block_copy_ref on random bytes, one way.
static void
s_test_staged (int64_t block_bytes, int count, int run, size_t staging_bytes, bool host_is_dst,
               bool skip, uint64_t *seed, bool verbose)
{
    int64_t slots = ((int64_t) count + run - 1) / run * run + 2 * run;
    size_t slab_bytes = (size_t) (slots * block_bytes);
    unsigned char *src = (unsigned char *) malloc (slab_bytes);
    unsigned char *dst = (unsigned char *) malloc (slab_bytes);
    unsigned char *expect = (unsigned char *) malloc (slab_bytes);
    void *staging = aligned_alloc (64, (staging_bytes + 63) / 64 * 64);
    int64_t *host_slots = (int64_t *) malloc ((size_t) count * sizeof (int64_t));
    int64_t *gpu_slots = (int64_t *) malloc ((size_t) count * sizeof (int64_t));
    for (size_t i = 0; i < slab_bytes; i++)
        src [i] = (unsigned char) s_test_rand (seed);
    memset (dst, 0xa5, slab_bytes);
    memset (expect, 0xa5, slab_bytes);
    s_test_layout (host_slots, gpu_slots, count, run, slots, seed);
    if (skip && count > 3) {
        gpu_slots [1] = -1;                             //  Skipped blocks, both sides
        host_slots [count - 2] = -1;
    }
    kvt_block_copy_args_t args = {
        .dst = expect, .src = src,
        .dst_slots = host_is_dst? host_slots: gpu_slots,
        .src_slots = host_is_dst? gpu_slots: host_slots,
        .dst_slot_bytes = block_bytes, .src_slot_bytes = block_bytes,
        .block_bytes = block_bytes, .count = count
    };
    S_TEST (kvt_block_copy_ref (&args) == 0);
    args.dst = dst;
    S_TEST (kvt_block_copy_staged_ref (&args, staging, staging_bytes, host_is_dst) == 0);
    bool same = memcmp (dst, expect, slab_bytes) == 0;
    S_TEST (same);
    if (verbose || !same)
        printf ("  staged %s block=%lld count=%d run=%d staging=%zu skip=%d: %s\n",
                host_is_dst? "d2h": "h2d", (long long) block_bytes, count, run, staging_bytes,
                skip, same? "same bytes": "DIFFERENT");
    free (src);
    free (dst);
    free (expect);
    free (staging);
    free (host_slots);
    free (gpu_slots);
}

//  The hybrid twin against kvt_block_copy_ref: host->GPU 'count0' blocks
//  and GPU->host 'count1', fully scattered slots, two skipped blocks.
static void
s_test_hybrid (int64_t block_bytes, int count0, int count1, double share, uint64_t *seed,
               bool verbose)
{
    int64_t slots = 2 * (count0 > count1? count0: count1) + 3;
    size_t slab_bytes = (size_t) (slots * block_bytes);
    unsigned char *slab [4];                        //  host, gpu, expected host, expected gpu
    for (int k = 0; k < 4; k++)
        slab [k] = (unsigned char *) malloc (slab_bytes);
    for (size_t i = 0; i < slab_bytes; i++) {
        slab [0][i] = slab [2][i] = (unsigned char) s_test_rand (seed);
        slab [1][i] = slab [3][i] = (unsigned char) s_test_rand (seed);
    }
    int64_t *host_slots = (int64_t *) malloc ((size_t) slots * sizeof (int64_t));
    int64_t *gpu_slots = (int64_t *) malloc ((size_t) slots * sizeof (int64_t));
    s_test_layout (host_slots, gpu_slots, (int) slots, 1, slots, seed);  //  Runs of 1: scattered
    if (count0 > 3)
        host_slots [count0 - 1] = -1;               //  Skipped: the engines' end
    if (count1 > 3)
        gpu_slots [count0 + 1] = -1;                //  Skipped: the kernel's start
    kvt_block_copy_args_t h2d = {
        .dst = slab [3], .src = slab [2], .dst_slots = gpu_slots, .src_slots = host_slots,
        .dst_slot_bytes = block_bytes, .src_slot_bytes = block_bytes,
        .block_bytes = block_bytes, .count = count0
    };
    kvt_block_copy_args_t d2h = {
        .dst = slab [2], .src = slab [3], .dst_slots = host_slots + count0,
        .src_slots = gpu_slots + count0, .dst_slot_bytes = block_bytes,
        .src_slot_bytes = block_bytes, .block_bytes = block_bytes, .count = count1
    };
    //  Disjoint slots: the order of the two copies does not matter
    S_TEST (kvt_block_copy_ref (&h2d) == 0 && kvt_block_copy_ref (&d2h) == 0);
    h2d.dst = slab [1];
    d2h.src = slab [1];
    h2d.src = slab [0];
    d2h.dst = slab [0];
    S_TEST (kvt_block_copy_hybrid_ref (&h2d, &d2h, share) == 0);
    bool same = memcmp (slab [0], slab [2], slab_bytes) == 0
             && memcmp (slab [1], slab [3], slab_bytes) == 0;
    S_TEST (same);
    if (verbose || !same)
        printf ("  hybrid block=%lld h2d %d + d2h %d share=%.2f: %s\n", (long long) block_bytes,
                count0, count1, share, same? "same bytes": "DIFFERENT");
    for (int k = 0; k < 4; k++)
        free (slab [k]);
    free (host_slots);
    free (gpu_slots);
}

int
kvt_block_copy_test (bool verbose)
{
    s_test_failures = 0;
    uint64_t seed = 0x5eed0003;
    //  Runs: adjacent on both sides merge; a skipped block or a gap on
    //  either side starts a new run
    int64_t dst_slots [] = { 4, 5, 6, 9, 10, -1, 12, 13, 20 };
    int64_t src_slots [] = { 0, 1, 2, 3, 4,  5,  6,  8, 9 };
    char slab [64];
    kvt_block_copy_args_t args = {
        .dst = slab, .src = slab, .dst_slots = dst_slots, .src_slots = src_slots,
        .dst_slot_bytes = 32, .src_slot_bytes = 16, .block_bytes = 16, .count = 9
    };
    kvt_block_run_t runs [9];
    size_t count = kvt_block_copy_runs (&args, runs);
    //  dst 4,5,6 are 32 bytes apart: not adjacent in memory
    S_TEST (count == 9 - 1);
    args.dst_slot_bytes = 16;
    count = kvt_block_copy_runs (&args, runs);
    //  {4,5,6} {9,10}, skip, {12}, {13} (source gap), {20} (destination gap)
    S_TEST (count == 5);
    if (count == 5) {
        S_TEST (runs [0].dst_offset == 64 && runs [0].src_offset == 0 && runs [0].bytes == 48);
        S_TEST (runs [1].dst_offset == 144 && runs [1].src_offset == 48 && runs [1].bytes == 32);
        S_TEST (runs [2].dst_offset == 192 && runs [2].src_offset == 96 && runs [2].bytes == 16);
        S_TEST (runs [3].dst_offset == 208 && runs [3].src_offset == 128 && runs [3].bytes == 16);
        S_TEST (runs [4].dst_offset == 320 && runs [4].src_offset == 144 && runs [4].bytes == 16);
    }
    args.count = 0;
    S_TEST (kvt_block_copy_runs (&args, runs) == 0);

    //  Plans
    int64_t gpu [3000], host [3000];
    for (int i = 0; i < 3000; i++)
        gpu [i] = host [i] = i;
    kvt_block_copy_args_t big = {
        .dst = slab, .src = slab, .dst_slots = host, .src_slots = gpu, .dst_slot_bytes = 16384,
        .src_slot_bytes = 16384, .block_bytes = 16384, .count = 3000
    };
    kvt_block_stage_plan_t plan = { 0 };
    S_TEST (kvt_block_copy_stage_plan (&big, 16383, true, &plan) == -EINVAL);
    S_TEST (kvt_block_copy_stage_plan (&big, 16384, true, &plan) == 0);
    S_TEST (plan.ring == 1 && plan.piece_blocks == 1 && plan.pieces == 3000);
    S_TEST (kvt_block_copy_stage_plan (&big, 3 * 16384 + 100, true, &plan) == 0);
    S_TEST (plan.ring == 3 && plan.piece_blocks == 1);
    S_TEST (kvt_block_copy_stage_plan (&big, 64u << 20, true, &plan) == 0);
    S_TEST (plan.ring == KVT_BLOCK_STAGE_RING && plan.piece_blocks == KVT_BLOCK_STAGE_PIECE_BLOCKS);
    S_TEST (plan.pieces == (3000 + KVT_BLOCK_STAGE_PIECE_BLOCKS - 1) / KVT_BLOCK_STAGE_PIECE_BLOCKS);
    S_TEST (kvt_block_copy_stage_plan (&big, 8u << 20, false, &plan) == 0);
    S_TEST (plan.ring == 4 && plan.piece_blocks == 128 && plan.pieces == 24);
    gpu [7] = (int64_t) INT32_MAX + 1;                  //  GPU slot too large for the kernel
    S_TEST (kvt_block_copy_stage_plan (&big, 8u << 20, true, &plan) == -EINVAL);
    S_TEST (kvt_block_copy_stage_plan (&big, 8u << 20, false, &plan) == 0);   //  Host side
    gpu [7] = 7;

    //  Suits: mean host run bytes against 256 KiB
    S_TEST (kvt_block_copy_stage_suits (&big, true));                 //  One 47 MiB run
    for (int i = 0; i < 3000; i++)
        host [i] = (i / 16) * 32 + i % 16;                            //  Runs of 16 x 16 KiB
    S_TEST (!kvt_block_copy_stage_suits (&big, true));                //  The last run: 8
    big.count = 2992;
    S_TEST (kvt_block_copy_stage_suits (&big, true));                 //  187 runs of 16
    big.count = 3000;
    for (int i = 0; i < 3000; i++)
        gpu [i] = (i * 7919) % 3000;                                  //  Scattered
    S_TEST (!kvt_block_copy_stage_suits (&big, false));               //  Host side is 'src'
    for (int i = 0; i < 3000; i++)
        gpu [i] = i;
    for (int i = 0; i < 3000; i++)
        host [i] = (i / 15) * 32 + i % 15;                            //  Runs of 240 KiB
    S_TEST (!kvt_block_copy_stage_suits (&big, true));
    for (int i = 0; i < 3000; i++)
        host [i] = 3000 - i;                                          //  Descending: no runs
    S_TEST (!kvt_block_copy_stage_suits (&big, true));
    for (int i = 0; i < 3000; i++)
        host [i] = i;
    big.dst_slot_bytes = 16384 + 16;                                  //  Padded host slots
    S_TEST (!kvt_block_copy_stage_suits (&big, true));
    big.dst_slot_bytes = 16384;
    big.block_bytes = 4096;                                           //  64 x 4 KiB: 256 KiB
    big.count = 64;
    S_TEST (!kvt_block_copy_stage_suits (&big, true));                //  Slots 16 KiB apart
    big.dst_slot_bytes = big.src_slot_bytes = 4096;
    S_TEST (kvt_block_copy_stage_suits (&big, true));
    big.count = 63;
    S_TEST (!kvt_block_copy_stage_suits (&big, true));
    big.count = 4;                                                    //  2 MiB blocks
    big.block_bytes = big.dst_slot_bytes = big.src_slot_bytes = 2 << 20;
    for (int i = 0; i < 4; i++)
        host [i] = 2 * i;                                             //  Alone: nothing merges
    S_TEST (!kvt_block_copy_stage_suits (&big, true));
    for (int i = 0; i < 4; i++)
        host [i] = i + 2 * (i / 2);                                   //  Two runs of two
    S_TEST (kvt_block_copy_stage_suits (&big, true));
    big.count = 0;
    S_TEST (!kvt_block_copy_stage_suits (&big, true));

    //  The staged twin: the same bytes as per-block copies, both ways
    static const struct { int64_t block; int count; int run; size_t staging; bool skip; }
    cases [] = {
        { 16384, 100, 1, 1 << 20, false },      //  Runs of one block
        { 16384, 101, 2, 1 << 20, true },       //  Odd count, skipped slots
        { 16384, 300, 16, 256 << 10, true },    //  Pieces of 4 blocks split every run
        { 16384, 257, 64, 64 << 20, false },    //  One piece, runs of 64
        { 65536, 129, 64, 3 << 20, true },      //  12-block pieces split runs of 64
        { 4096, 2000, 64, 16 << 20, false },    //  Pieces capped at PIECE_BLOCKS
        { 48, 33, 16, 48, true },               //  Staging of one block
        { 2 << 20, 5, 2, 5 << 20, true },       //  Staging of 2.5 blocks: ring of 2
    };
    for (size_t c = 0; c < sizeof (cases) / sizeof (cases [0]); c++)
        for (int way = 0; way < 2; way++)
            s_test_staged (cases [c].block, cases [c].count, cases [c].run, cases [c].staging,
                           way == 1, cases [c].skip, &seed, verbose);
    //  Hybrid split: the parts cover the batch once, engines take the end
    S_TEST (kvt_block_copy_hybrid_share (0, 80) == 0);
    S_TEST (kvt_block_copy_hybrid_share (-1, 80) == 0);
    S_TEST (kvt_block_copy_hybrid_share (5, 0) == 1);
    S_TEST (kvt_block_copy_hybrid_share (20, 80) > 0.199
         && kvt_block_copy_hybrid_share (20, 80) < 0.201);
    static const struct { int count; double share; int engine_blocks; }
    splits [] = { { 101, 0.1, 10 }, { 101, 0, 0 }, { 101, 1, 101 }, { 1, 0.4, 0 },
                  { 1, 0.6, 1 }, { 0, 0.5, 0 }, { 7, -3, 0 }, { 7, 9, 7 } };
    for (size_t c = 0; c < sizeof (splits) / sizeof (splits [0]); c++) {
        kvt_block_copy_args_t whole = args, kernel_part, engine_part;
        whole.count = splits [c].count;
        kvt_block_copy_hybrid_split (&whole, splits [c].share, &kernel_part, &engine_part);
        S_TEST (engine_part.count == splits [c].engine_blocks);
        S_TEST (kernel_part.count + engine_part.count == whole.count);
        S_TEST (kernel_part.dst_slots == whole.dst_slots
             && kernel_part.src_slots == whole.src_slots);
        S_TEST (engine_part.dst_slots == whole.dst_slots + kernel_part.count
             && engine_part.src_slots == whole.src_slots + kernel_part.count);
    }
    //  Hybrid twin: the same bytes as per-block copies, both ways at once,
    //  odd counts, skipped slots, every share
    static const double shares [] = { 0, 0.07, 0.5, 1 };
    for (size_t c = 0; c < sizeof (shares) / sizeof (shares [0]); c++)
        s_test_hybrid (16384, 301, 77, shares [c], &seed, verbose);
    s_test_hybrid (4096, 1000, 0, 0.3, &seed, verbose);
    s_test_hybrid (65536 + 16, 3, 1, 0.5, &seed, verbose);
    //  Refusals: staging smaller than a block, misaligned staging
    char *buffer = (char *) aligned_alloc (64, 4096);
    int64_t one = 0;
    kvt_block_copy_args_t small = {
        .dst = buffer, .src = buffer + 2048, .dst_slots = &one, .src_slots = &one,
        .dst_slot_bytes = 1024, .src_slot_bytes = 1024, .block_bytes = 1024, .count = 1
    };
    S_TEST (kvt_block_copy_staged_ref (&small, buffer + 1024, 1008, true) == -EINVAL);
    S_TEST (kvt_block_copy_staged_ref (&small, buffer + 1032, 1024, true) == -EINVAL);
    S_TEST (kvt_block_copy_staged_ref (&small, buffer + 1024, 1024, true) == 0);
    free (buffer);
    if (verbose || s_test_failures)
        printf ("kvt_block_copy: %d checks failed\n", s_test_failures);
    return s_test_failures? -1: 0;
}
