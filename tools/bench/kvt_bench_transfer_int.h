/*  =========================================================================
    kvt_bench_transfer_int - what the two files of `kvtier bench transfer`
    share (CUDA builds)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvt_bench_transfer.c measures block movement alone (kernel, copy
    engines, the pair, the staged path) and runs the command;
    kvt_bench_transfer_attn.c measures attention beside a transfer and
    the layer-streamed decode step.
@end
*/

#ifndef KVT_BENCH_TRANSFER_INT_H_INCLUDED
#define KVT_BENCH_TRANSFER_INT_H_INCLUDED

#ifdef KVT_WITH_CUDA

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cuda_runtime.h>
#include "kvt_bench.h"
#include "kvt_block_copy.cuh"

//  Evaluate a CUDA call; print where and why and exit on failure.
#define KVT_BENCH_CUDA_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf (stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString (e_)); \
    exit (1); } } while (0)

#define KVT_BENCH_MOVE_BYTES  (1ull << 30)  //  Bytes moved per direction per run
#define KVT_BENCH_SLAB_BYTES  (2ull << 30)  //  Each slab; slots are picked at random

typedef struct {
    void *host;                     //  Mapped pinned host slab
    void *host_dev;                 //  Its device-side address
    void *device;                   //  GPU slab
    cudaStream_t streams [2];       //  Host->GPU, GPU->host
    cudaEvent_t start [2];          //  Per-stream start events
    cudaEvent_t stop [2];           //  Per-stream stop events
    int pair_ctas;                  //  kvt_block_copy_pair's grid (0 = its default)
    unsigned long long *pair_counter;   //  Its unit counter (device)
    kvt_block_stage_t *stages [2];  //  Staged path: host->GPU, GPU->host staging
    cudaStream_t engines [4];       //  Split rows: engine streams, 2 per direction
    cudaEvent_t engine_stop [4];    //  Split rows: each engine stream's end
    cudaEvent_t pair_stop;          //  Split rows: the kernel share's end
    kvt_block_hybrid_t *hybrid;     //  Hybrid rows: kvt_block_copy_hybrid's object
    double hybrid_share;            //  Hybrid rows: the engines' share
} kvt_bench_transfer_t;

//  Fill 'slots' with a random permutation of 0..count - 1.
void
    kvt_bench_transfer_shuffle (int64_t *slots, int64_t count, uint64_t *seed);

//  Decode attention (16 x 32K) alone and beside a host->GPU stream of 64
//  KiB / 2 MiB blocks through the kernel, the copy engines and the staged
//  path (kvt_bench_transfer_attn.c).
void
    kvt_bench_transfer_beside (kvt_bench_report_t *report, kvt_bench_transfer_t *self,
                               int reps, uint64_t *seed);

//  One decode step of 'seqs' x 'len' tokens whose oldest 'streamed'
//  tokens stream from host layer by layer, against max (attention alone,
//  transfer alone). Returns 0, or 1 when the step's outputs differ.
int
    kvt_bench_transfer_step (kvt_bench_report_t *report, int seqs, int len, int streamed,
                             int reps, uint64_t *seed);

#endif
#endif
