/*  =========================================================================
    kvt_bench_model_scatter - a sharded model's decode over scattered slots

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Part of `kvtier bench model` (--only scatter). A layer-sharded model
    (tier_gpu/layer_fraction = 0.5: 16 of the 8B shape's 32 layers in
    mapped pinned host memory, staging on) decodes batches of 1 and 16
    sequences of --prompt tokens twice: with each sequence's blocks in
    adjacent slots (a prompt admitted into a fresh tier: the baseline),
    then with every block in a slot drawn at random (a tier fragmented by
    evictions). Each step stages the host-held layers of every block
    (runtime/kvt_model_cuda_stage.c), one copy per run of adjacent slots
    on the copy engines, or, where a layer's runs are many, a copy kernel
    whose slot list is in device memory; this shows what scattering costs
    a step. Figures: decode ms per step, scattered beside adjacent at the
    same batch, and the thread's time to queue a step (kvt_model_cuda_
    step_launch) beside the adjacent run's. Fails unless both layouts give
    the same tokens.
@end
*/

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_bench.h"

#ifdef KVT_WITH_CUDA

#include <czmq.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cuda_runtime.h>
#include "kvt.h"
#include "kvt_block.h"
#include "kvt_model.h"
#include "kvt_bench_model_int.h"

enum { S_STEPS = 16, S_NEW = S_STEPS + 2, S_MOST = 16 };

//  Block ids of 'count' slots: 0, 1, .. or a seeded random permutation.
static void
s_slots_fill (uint64_t *slots, size_t count, bool scattered)
{
    for (size_t k = 0; k < count; k++)
        slots [k] = k;
    uint64_t state = 12345;
    for (size_t k = count - 1; scattered && k > 0; k--) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t) ((state >> 33) % (k + 1));
        uint64_t swap = slots [k];
        slots [k] = slots [j];
        slots [j] = swap;
    }
}

//  Decode 'count' sequences of 'context' tokens over 'slots'; the ms per
//  step and the thread's ms to queue one land in *step_ms and *queue_ms.
static void
s_run (kvt_model_cuda_t *model, void *slab, size_t block_bytes, uint32_t *const *prompts,
       size_t context, int count, const uint64_t *slots, size_t per_seq,
       uint32_t outs [S_MOST][S_NEW], double *step_ms, double *queue_ms)
{
    const size_t full = context / 16;
    kvt_model_cuda_seq_t *seqs [S_MOST];
    for (int i = 0; i < count; i++) {
        const uint64_t *ids = slots + (size_t) i * per_seq;
        S_CHECK (kvt_model_cuda_seq_begin (model, prompts [i], context, slab, block_bytes, ids,
                                           0, NULL, ids + full, per_seq - full, S_NEW, outs [i],
                                           &seqs [i]) == 0);
        S_CHECK (kvt_model_cuda_seq_prefill (model, seqs [i], 0) == 0);
    }
    S_CHECK (kvt_model_cuda_decode (model, seqs, (size_t) count) == 0);     //  Warm-up
    int fd = eventfd (0, EFD_CLOEXEC);
    S_CHECK (fd >= 0);
    int64_t queued_us = 0, start = zclock_usecs ();
    for (int step = 0; step < S_STEPS; step++) {
        int64_t t0 = zclock_usecs ();
        S_CHECK (kvt_model_cuda_step_launch (model, NULL, 0, seqs, (size_t) count, fd) == 0);
        queued_us += zclock_usecs () - t0;
        S_CHECK (kvt_bench_model_fd_wait (fd) == 1);
        S_CHECK (kvt_model_cuda_step_finish (model) == 0);
    }
    *step_ms = (zclock_usecs () - start) / 1e3 / S_STEPS;
    *queue_ms = queued_us / 1e3 / S_STEPS;
    close (fd);
    for (int i = 0; i < count; i++) {
        S_CHECK (!kvt_model_cuda_seq_decoding (seqs [i]));
        kvt_model_cuda_seq_destroy (&seqs [i]);
    }
}

//  `kvtier bench model --only scatter` (see @header).
void
kvt_bench_model_scatter (kvt_bench_report_t *report, const kvt_model_shape_t *shape,
                         size_t context)
{
    kvt_model_cuda_t *model = kvt_model_cuda_new (shape);
    S_CHECK (model);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    const size_t block_bytes = kvt_block_bytes (&geometry);
    const int gpu_layers = shape->layers / 2;
    const size_t shard_bytes = block_bytes / (size_t) shape->layers
                             * (size_t) (shape->layers - gpu_layers);
    const size_t per_seq = context / 16 + KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, context, S_NEW);
    const size_t blocks = S_MOST * per_seq;
    void *slab = NULL;
    char *shard = NULL;
    S_CHECK (cudaMalloc (&slab, blocks * block_bytes) == cudaSuccess);
    S_CHECK (cudaHostAlloc ((void **) &shard, blocks * shard_bytes, cudaHostAllocMapped)
             == cudaSuccess);
    S_CHECK (kvt_model_cuda_set_layer_shard (model, gpu_layers, shard, shard_bytes) == 0);
    uint32_t *prompts [S_MOST];
    for (int i = 0; i < S_MOST; i++)
        prompts [i] = kvt_bench_model_prompt (context, 2000 + (uint64_t) i);
    uint64_t *slots = (uint64_t *) malloc (blocks * sizeof (uint64_t));
    S_CHECK (slots);
    static uint32_t outs [2][S_MOST][S_NEW];
    const int batches [] = { 1, S_MOST };
    char figure [64], baseline [64], note [200];
    for (int b = 0; b < 2; b++) {
        double step_ms [2], queue_ms [2];
        for (int scattered = 0; scattered < 2; scattered++) {
            s_slots_fill (slots, (size_t) batches [b] * per_seq, scattered);
            s_run (model, slab, block_bytes, prompts, context, batches [b], slots, per_seq,
                   outs [scattered], &step_ms [scattered], &queue_ms [scattered]);
        }
        S_CHECK (memcmp (outs [0], outs [1], (size_t) batches [b] * sizeof (outs [0][0])) == 0);
        snprintf (figure, sizeof (figure), "shard_scattered_batch%d_step_ms", batches [b]);
        snprintf (baseline, sizeof (baseline), "shard_adjacent_batch%d_step_ms", batches [b]);
        kvt_bench_report_add (report, figure, step_ms [1], "ms", baseline, step_ms [0]);
        snprintf (figure, sizeof (figure), "shard_scattered_batch%d_queue_ms", batches [b]);
        snprintf (baseline, sizeof (baseline), "shard_adjacent_batch%d_queue_ms", batches [b]);
        kvt_bench_report_add (report, figure, queue_ms [1], "ms", baseline, queue_ms [0]);
    }
    snprintf (note, sizeof (note), "%d of %d layers on the GPU (the rest staged from mapped "
              "host memory), %zu-token contexts, %d timed decode steps; scattered slots gave "
              "the adjacent slots' tokens", gpu_layers, shape->layers, context, S_STEPS);
    kvt_bench_report_note (report, "scatter", note);
    for (int i = 0; i < S_MOST; i++)
        free (prompts [i]);
    free (slots);
    kvt_model_cuda_destroy (&model);
    cudaFreeHost (shard);
    cudaFree (slab);
}

#endif
