/*  =========================================================================
    kvt_bench_model - `kvtier bench model`: the GPU model at the
    Llama-3-8B shape: prefill against cuBLAS, decode batching, and a prefix
    streamed from the host tier layer by layer (issue #3)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvtier bench model [--json] [--only prefill|batch|stream|scatter]
                       [--prompt N] [--prefix N] [--new N]
    The runtime's GPU model (runtime/kvt_model_cuda*.c) with seeded random
    weights, 32 layers, 32 / 8 heads, head_dim 128, hidden 4096,
    intermediate 14336, bf16, 16-token blocks. Each figure beside its
    baseline from the same run:
      prefill: a --prompt (4096) token prompt, best of 3, in TFLOP/s
        (2 x parameters x tokens plus causal attention) beside cuBLAS's
        bf16 GEMM rate at 4096 x 14336 x 4096.
      batch: B sequences of 1024-token prompts, 31 timed decode steps by
        kvt_model_cuda_decode at B = 1, 16, 64, tokens/s beside batch 1;
        then 32 steps through step launch / eventfd / finish (the compute
        actor's path) beside the synchronous call at the same B, with the
        thread's time inside launch + finish. Fails (exit 1) unless
        sequence 0 gives the same tokens at every B, and sequences 0-15
        the same at 16 and 64 (batch invariance). All of it twice: decode
        steps launched kernel by kernel (the baseline), then replayed as
        CUDA graphs (runtime/kvt_model_cuda_graph.c): graph tokens/s and
        thread time per step beside the baseline's at the same B; fails
        unless both give the same tokens. Then what that costs
        batch 1: cuBLAS time of one step's GEMMs at m = 64 (padded, what
        every step runs) beside m = 1.
      stream: time to first token of a --prefix (16384) token prefix on
        pinned host memory plus --new (512) prompt tokens, copied in
        layer by layer under the prefill, beside max (copy alone, compute
        alone) and beside copy-then-compute; best of 3. Fails unless both
        give the same first token.
      scatter: a layer-sharded model (F = 0.5) decoding --prompt-token
        contexts at batch 1 and 16 with blocks in scattered slots, beside
        adjacent slots (kvt_bench_model_scatter.c).
@end
*/

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_bench.h"

#ifndef KVT_WITH_CUDA

int
kvt_bench_model_main (int argc, char **argv)
{
    (void) argc;
    (void) argv;
    fprintf (stderr, "kvtier bench model: needs a CUDA build "
             "(configure with -DKVT_CUDA=ON on a machine with nvcc)\n");
    return 2;
}

#else

#include <czmq.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include "kvt.h"
#include "kvt_block.h"
#include "kvt_model.h"
#include "kvt_model_cuda_graph.h"
#include "kvt_block_copy.cuh"
#include "kvt_bench_model_int.h"


static const kvt_model_shape_t s_shape_8b = {
    .layers = 32, .heads = 32, .kv_heads = 8, .head_dim = 128, .hidden = 4096,
    .intermediate = 14336, .vocab = 128256, .block_tokens = 16, .seed = 1 };

//  Deterministic prompt of 'count' tokens below the vocabulary
uint32_t *
kvt_bench_model_prompt (size_t count, uint64_t seed)
{
    uint64_t *p64 = (uint64_t *) malloc ((count + 1) * sizeof (uint64_t));
    uint32_t *prompt = (uint32_t *) malloc ((count + 1) * sizeof (uint32_t));
    S_CHECK (p64 && prompt);
    kvt_client_random_tokens (p64, count, (uint64_t) s_shape_8b.vocab, seed);
    for (size_t k = 0; k < count; k++)
        prompt [k] = (uint32_t) p64 [k];
    free (p64);
    return prompt;
}

//  cuBLAS bf16 GEMM rate (TFLOP/s) at m x n x k, the best of 5 timed runs
static double
s_cublas_tflops (int m, int n, int k)
{
    void *a, *w, *c;
    S_CHECK (cudaMalloc (&a, (size_t) m * k * 2) == cudaSuccess);
    S_CHECK (cudaMalloc (&w, (size_t) n * k * 2) == cudaSuccess);
    S_CHECK (cudaMalloc (&c, (size_t) m * n * 2) == cudaSuccess);
    cudaMemset (a, 0x3c, (size_t) m * k * 2);
    cudaMemset (w, 0x3c, (size_t) n * k * 2);
    cublasHandle_t handle;
    S_CHECK (cublasCreate (&handle) == CUBLAS_STATUS_SUCCESS);
    const float alpha = 1.0f, beta = 0.0f;
    double best = 1e30;
    for (int run = 0; run < 6; run++) {
        cudaDeviceSynchronize ();
        int64_t start = zclock_usecs ();
        for (int rep = 0; rep < 10; rep++)
            S_CHECK (cublasGemmEx (handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w,
                                   CUDA_R_16BF, k, a, CUDA_R_16BF, k, &beta, c, CUDA_R_16BF,
                                   n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
                     == CUBLAS_STATUS_SUCCESS);
        cudaDeviceSynchronize ();
        double seconds = (zclock_usecs () - start) / 1e6 / 10;
        if (run > 0 && seconds < best)
            best = seconds;
    }
    cublasDestroy (handle);
    cudaFree (a);
    cudaFree (w);
    cudaFree (c);
    return 2.0 * m * n * k / best / 1e12;
}

//  Prefill of a 'prompt'-token prompt, best of 3, beside cuBLAS.
static void
s_bench_prefill (kvt_bench_report_t *report, kvt_model_cuda_t *model, size_t block_bytes,
                 int prompt)
{
    const kvt_model_shape_t *shape = &s_shape_8b;
    const size_t max_new = 33, full = (size_t) prompt / 16;
    size_t spare_count = KVT_MODEL_CUDA_SPARE_BLOCKS (16, max_new);
    void *slab;
    S_CHECK (cudaMalloc (&slab, (full + spare_count) * block_bytes) == cudaSuccess);
    uint64_t *slots = (uint64_t *) malloc ((full + spare_count) * sizeof (uint64_t));
    S_CHECK (slots);
    for (size_t k = 0; k < full + spare_count; k++)
        slots [k] = k;
    uint32_t *tokens = kvt_bench_model_prompt ((size_t) prompt, 5);
    uint32_t out [64];
    double best_ttft = 1e30;
    int64_t decode_us = 0;
    for (int run = 0; run < 4; run++) {
        int64_t ttft = 0, start = zclock_usecs ();
        S_CHECK (kvt_model_cuda_generate (model, tokens, (size_t) prompt, slab, block_bytes,
                                          slots, 0, slots + full, spare_count,
                                          run == 3? max_new: 1, out, &ttft) == 0);
        if (run == 3)
            decode_us = zclock_usecs () - start - ttft;
        else
        if (run > 0 && ttft < best_ttft)
            best_ttft = (double) ttft;
    }
    double params = (double) shape->layers * ((double) shape->hidden * shape->heads * 128 * 2
                  + 2.0 * shape->hidden * shape->kv_heads * 128 + 3.0 * shape->hidden
                  * shape->intermediate);
    double gemm_flop = 2.0 * params * prompt;
    double attn_flop = 2.0 * shape->layers * shape->heads * 128.0 * prompt * (double) prompt;
    double model_tflops = (gemm_flop + attn_flop) / (best_ttft / 1e6) / 1e12;
    double big = s_cublas_tflops (4096, 14336, 4096);
    double chunk = s_cublas_tflops (512, 14336, 4096);
    char note [160];
    snprintf (note, sizeof (note), "%d tokens in %.1f ms: 2 x %.2fB params x tokens + causal "
              "attention %.1f TFLOP", prompt, best_ttft / 1000.0, params / 1e9,
              attn_flop / 1e12);
    kvt_bench_report_note (report, "prefill", note);
    kvt_bench_report_add (report, "prefill_TFLOPs", model_tflops, "TFLOP/s",
                          "cublas_bf16_4096x14336x4096_TFLOPs", big);
    snprintf (note, sizeof (note), "cuBLAS bf16 512x14336x4096 (the model's chunk): %.1f "
              "TFLOP/s; decode %.2f ms/token over 32 steps after the prompt", chunk,
              decode_us / 1000.0 / (max_new - 1));
    kvt_bench_report_note (report, "prefill_chunk", note);
    free (tokens);
    free (slots);
    cudaFree (slab);
}

//  Wait for one signal on eventfd 'fd' (10 s at most); returns the count
uint64_t
kvt_bench_model_fd_wait (int fd)
{
    struct pollfd item = { .fd = fd, .events = POLLIN };
    S_CHECK (poll (&item, 1, 10000) == 1);
    uint64_t count = 0;
    S_CHECK (read (fd, &count, sizeof (count)) == sizeof (count));
    return count;
}

//  Batch invariance: sequence 'seq' decoded in a batch of 'count' gave the
//  tokens it gave in a smaller batch; else say where it parted, and fail
static void
s_check_invariant (int mode, int count, int seq, const uint32_t *tokens, const uint32_t *before,
                   int new_tokens)
{
    for (int t = 0; t < new_tokens; t++)
        if (tokens [t] != before [t]) {
            fprintf (stderr, "kvtier bench model: batch invariance broken (%s): sequence %d "
                     "at batch %d parts from its tokens in a smaller batch at new token %d "
                     "(%u, was %u)\n", mode? "graphs": "kernel by kernel", seq, count, t,
                     tokens [t], before [t]);
            exit (1);
        }
}

//  Decode batching: tokens/s at B = 1, 16, 64, synchronous and through
//  the eventfd, the batches checked against each other; kernel by kernel,
//  then as CUDA graphs (same tokens).
static void
s_bench_batch (kvt_bench_report_t *report, kvt_model_cuda_t *model, size_t block_bytes)
{
    enum { CONTEXT = 1024, STEPS = 32, MOST = 64, NEW = 2 * STEPS + 1 };
    const size_t per_seq = KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, CONTEXT, NEW) + CONTEXT / 16;
    void *slab;
    S_CHECK (cudaMalloc (&slab, MOST * per_seq * block_bytes) == cudaSuccess);
    static uint32_t outs [MOST][NEW], first_outs [MOST][NEW], mode_outs [2][MOST][NEW];
    static uint64_t ids [MOST][128];
    static uint32_t *prompts [MOST];
    S_CHECK (per_seq <= 128);
    for (int i = 0; i < MOST; i++) {
        for (size_t k = 0; k < per_seq; k++)
            ids [i][k] = (uint64_t) i * per_seq + k;
        prompts [i] = kvt_bench_model_prompt (CONTEXT, 1000 + (uint64_t) i);
    }
    int fd = eventfd (0, EFD_CLOEXEC);
    S_CHECK (fd >= 0);
    const int batches [] = { 1, 16, 64 };
    double rates [2][3], async_rates [2][3], helds_ms [2][3];
    kvt_model_cuda_graph_stats_t stats [2];
    for (int mode = 0; mode < 2; mode++) {
        //  Mode 0: kernel by kernel (the baseline); 1: CUDA graphs
        double *rate = rates [mode], *async_rate = async_rates [mode], *held_ms = helds_ms [mode];
        kvt_model_cuda_set_graphs (model, mode == 1);
        stats [0] = kvt_model_cuda_graph_stats (model);
        for (int b = 0; b < 3; b++) {
            const int count = batches [b];
            kvt_model_cuda_seq_t *seqs [MOST];
            for (int i = 0; i < count; i++) {
                S_CHECK (kvt_model_cuda_seq_begin (model, prompts [i], CONTEXT, slab, block_bytes,
                                                   ids [i], 0, NULL, ids [i] + CONTEXT / 16,
                                                   per_seq - CONTEXT / 16, NEW, outs [i],
                                                   &seqs [i]) == 0);
                S_CHECK (kvt_model_cuda_seq_prefill (model, seqs [i], 0) == 0);
            }
            S_CHECK (kvt_model_cuda_decode (model, seqs, (size_t) count) == 0);     //  Warm-up
            int64_t start = zclock_usecs ();
            for (int step = 1; step < STEPS; step++)
                S_CHECK (kvt_model_cuda_decode (model, seqs, (size_t) count) == 0);
            double seconds = (zclock_usecs () - start) / 1e6;
            rate [b] = (double) count * (STEPS - 1) / seconds;
            //  Through the eventfd: the thread's time inside launch and finish
            //  is what the compute actor's loop is held
            int64_t held_us = 0;
            start = zclock_usecs ();
            for (int step = 0; step < STEPS; step++) {
                int64_t t0 = zclock_usecs ();
                S_CHECK (kvt_model_cuda_step_launch (model, NULL, 0, seqs, (size_t) count, fd)
                         == 0);
                int64_t t1 = zclock_usecs ();
                S_CHECK (kvt_bench_model_fd_wait (fd) == 1);
                int64_t t2 = zclock_usecs ();
                S_CHECK (kvt_model_cuda_step_finish (model) == 0);
                held_us += (t1 - t0) + (zclock_usecs () - t2);
            }
            seconds = (zclock_usecs () - start) / 1e6;
            async_rate [b] = (double) count * STEPS / seconds;
            held_ms [b] = held_us / 1000.0 / STEPS;
            for (int i = 0; i < count; i++) {
                S_CHECK (!kvt_model_cuda_seq_decoding (seqs [i]));
                if (b == 2)
                    memcpy (mode_outs [mode][i], outs [i], sizeof (outs [i]));
                if (b == 0)
                    memcpy (first_outs [i], outs [i], sizeof (outs [i]));
                kvt_model_cuda_seq_destroy (&seqs [i]);
            }
            //  Batch invariance: sequence 0 alike in every batch, 0-15 alike
            //  at 16 and 64
            s_check_invariant (mode, count, 0, outs [0], first_outs [0], NEW);
            if (b == 1)
                for (int i = 1; i < 16; i++)
                    memcpy (first_outs [i], outs [i], sizeof (outs [i]));
            if (b == 2)
                for (int i = 0; i < 16; i++)
                    s_check_invariant (mode, count, i, outs [i], first_outs [i], NEW);
        }
        stats [1] = kvt_model_cuda_graph_stats (model);
        //  Every step of the graph mode was a graph launch, none before
        S_CHECK (stats [1].launches - stats [0].launches == (mode? 3u * (2 * STEPS): 0u));
    }
    //  Graphs gave the kernel-by-kernel tokens, all 64 sequences
    S_CHECK (memcmp (mode_outs [0], mode_outs [1], sizeof (mode_outs [0])) == 0);
    kvt_model_cuda_set_graphs (model, true);
    const double *rate = rates [0], *async_rate = async_rates [0], *held_ms = helds_ms [0];
    close (fd);
    for (int i = 0; i < MOST; i++)
        free (prompts [i]);
    cudaFree (slab);
    char figure [64], baseline [64], note [160];
    for (int b = 0; b < 3; b++) {
        snprintf (figure, sizeof (figure), "decode_batch%d_tokens_per_s", batches [b]);
        kvt_bench_report_add (report, figure, rate [b], "tok/s", "decode_batch1_tokens_per_s",
                              rate [0]);
    }
    for (int b = 0; b < 3; b++) {
        snprintf (figure, sizeof (figure), "decode_batch%d_eventfd_tokens_per_s", batches [b]);
        snprintf (baseline, sizeof (baseline), "decode_batch%d_tokens_per_s", batches [b]);
        kvt_bench_report_add (report, figure, async_rate [b], "tok/s", baseline, rate [b]);
    }
    snprintf (note, sizeof (note), "1024-token contexts; batches 16 and 64 gave batch 1's "
              "(and 16's) tokens over %d steps; thread held %.2f / %.2f / %.2f ms per "
              "eventfd step", NEW, held_ms [0], held_ms [1], held_ms [2]);
    kvt_bench_report_note (report, "batch", note);
    for (int b = 0; b < 3; b++) {
        snprintf (figure, sizeof (figure), "decode_batch%d_graph_tokens_per_s", batches [b]);
        snprintf (baseline, sizeof (baseline), "decode_batch%d_tokens_per_s", batches [b]);
        kvt_bench_report_add (report, figure, rates [1][b], "tok/s", baseline, rate [b]);
    }
    for (int b = 0; b < 3; b++) {
        snprintf (figure, sizeof (figure), "decode_batch%d_graph_eventfd_tokens_per_s",
                  batches [b]);
        snprintf (baseline, sizeof (baseline), "decode_batch%d_eventfd_tokens_per_s",
                  batches [b]);
        kvt_bench_report_add (report, figure, async_rates [1][b], "tok/s", baseline,
                              async_rate [b]);
    }
    for (int b = 0; b < 3; b++) {
        snprintf (figure, sizeof (figure), "decode_batch%d_graph_held_ms", batches [b]);
        snprintf (baseline, sizeof (baseline), "decode_batch%d_held_ms", batches [b]);
        kvt_bench_report_add (report, figure, helds_ms [1][b], "ms", baseline, held_ms [b]);
    }
    snprintf (note, sizeof (note), "CUDA graphs: same tokens as kernel by kernel at batch 64 "
              "(64 sequences x %d); %" PRIu64 " graphs captured, %" PRIu64 " updated", NEW,
              stats [1].captures, stats [1].updates);
    kvt_bench_report_note (report, "graph", note);

    //  What batch invariance costs batch 1: every decode GEMM runs on
    //  KVT_MODEL_MAX_BATCH rows. cuBLAS time of one step's GEMMs
    const int gemm_n [] = { 6144, 4096, 28672, 4096 }, gemm_k [] = { 4096, 4096, 4096, 14336 };
    double gemm_ms [2] = { 0, 0 };
    for (int g = 0; g < 5; g++)
        for (int pad = 0; pad < 2; pad++) {
            int m = pad? KVT_MODEL_MAX_BATCH: 1;
            int n = g < 4? gemm_n [g]: s_shape_8b.vocab, k = g < 4? gemm_k [g]: s_shape_8b.hidden;
            double ms = 2.0 * m * n * k / (s_cublas_tflops (m, n, k) * 1e12) * 1e3;
            gemm_ms [pad] += g < 4? ms * s_shape_8b.layers: ms;
        }
    kvt_bench_report_add (report, "step_gemms_padded_ms", gemm_ms [1], "ms",
                          "step_gemms_m1_ms", gemm_ms [0]);
}

//  Time to first token of a host-resident prefix: streamed layer by layer
//  under the prefill, beside copy alone, compute alone and both in a row.
static void
s_bench_stream (kvt_bench_report_t *report, kvt_model_cuda_t *model, size_t block_bytes,
                size_t prefix, size_t fresh)
{
    const size_t cached = prefix / 16, count = prefix + fresh, full = count / 16;
    const size_t max_new = 1, spares = KVT_MODEL_CUDA_SPARE_BLOCKS (16, max_new);
    void *slab = NULL;
    S_CHECK (cudaMalloc (&slab, (full + spares) * block_bytes) == cudaSuccess);
    uint64_t *slots = (uint64_t *) malloc ((full + spares) * sizeof (uint64_t));
    S_CHECK (slots);
    for (size_t k = 0; k < full + spares; k++)
        slots [k] = k;
    //  Pinned, mapped host memory, as the host tier's arena is
    uint8_t *host = NULL;
    S_CHECK (posix_memalign ((void **) &host, 4096, cached * block_bytes + 4096) == 0);
    S_CHECK (cudaHostRegister (host, cached * block_bytes + 4096,
                               cudaHostRegisterPortable | cudaHostRegisterMapped) == cudaSuccess);
    memset (host, 0x3c, cached * block_bytes);  //  Small finite bf16 values (~0.0115)
    const void **host_src = (const void **) malloc ((cached + 1) * sizeof (void *));
    S_CHECK (host_src);
    for (size_t b = 0; b < cached; b++)
        host_src [b] = host + b * block_bytes;
    uint32_t *prompt = kvt_bench_model_prompt (count, 5);
    cudaStream_t stream;
    S_CHECK (cudaStreamCreateWithFlags (&stream, cudaStreamNonBlocking) == cudaSuccess);
    int64_t *copy_slots = (int64_t *) malloc ((2 * cached + 1) * sizeof (int64_t));
    S_CHECK (copy_slots);
    for (size_t b = 0; b < cached; b++)
        copy_slots [b] = copy_slots [cached + b] = (int64_t) b;
    kvt_block_copy_args_t whole = {
        .dst = slab, .src = host, .dst_slots = copy_slots + cached, .src_slots = copy_slots,
        .dst_slot_bytes = (int64_t) block_bytes, .src_slot_bytes = (int64_t) block_bytes,
        .block_bytes = (int64_t) block_bytes, .count = (int) cached };
    enum { STREAMED, COPY_THEN_COMPUTE, COPY, COMPUTE, COPY_SLICED, WAYS };
    uint32_t out [4], first_token [2] = { 0, 0 };
    double best [WAYS] = { 1e30, 1e30, 1e30, 1e30, 1e30 };
    for (int run = 0; run < 4; run++)
        for (int way = 0; way < WAYS; way++) {
            cudaDeviceSynchronize ();
            int64_t start = zclock_usecs ();
            kvt_model_cuda_seq_t *seq = NULL;
            if (way == COPY_THEN_COMPUTE || way == COPY) {
                S_CHECK (kvt_block_copy_ce (&whole, stream) == 0);
                S_CHECK (cudaStreamSynchronize (stream) == cudaSuccess);
            }
            bool streams = way == STREAMED || way == COPY_SLICED;
            if (way != COPY)
                S_CHECK (kvt_model_cuda_seq_begin (model, prompt, count, slab, block_bytes,
                                                   slots, cached, streams? host_src: NULL,
                                                   slots + full, spares, max_new, out,
                                                   &seq) == 0);
            if (way == STREAMED || way == COPY_THEN_COMPUTE || way == COMPUTE)
                S_CHECK (kvt_model_cuda_seq_prefill (model, seq, 0) == 0);
            kvt_model_cuda_seq_destroy (&seq);      //  Waits for its copies
            double ms = (zclock_usecs () - start) / 1000.0;
            if (run > 0 && ms < best [way])
                best [way] = ms;
            if (way == STREAMED || way == COPY_THEN_COMPUTE)
                first_token [way] = out [0];
        }
    S_CHECK (first_token [STREAMED] == first_token [COPY_THEN_COMPUTE]);   //  Same KV
    double bound = best [COPY] > best [COMPUTE]? best [COPY]: best [COMPUTE];
    char note [200];
    snprintf (note, sizeof (note), "%zu-token prefix on pinned host memory (%zu blocks, %.2f "
              "GiB) + %zu new tokens, best of 3; copy alone %.2f ms (%.1f GB/s), in layer "
              "slices %.2f ms, compute alone %.2f ms", prefix, cached,
              (double) cached * block_bytes / (1 << 30), fresh, best [COPY],
              (double) cached * block_bytes / (best [COPY] / 1e3) / 1e9, best [COPY_SLICED],
              best [COMPUTE]);
    kvt_bench_report_note (report, "stream", note);
    kvt_bench_report_add (report, "ttft_streamed_ms", best [STREAMED], "ms",
                          "max_copy_alone_compute_alone_ms", bound);
    kvt_bench_report_add (report, "ttft_streamed_ms", best [STREAMED], "ms",
                          "copy_then_compute_ms", best [COPY_THEN_COMPUTE]);
    cudaStreamDestroy (stream);
    free (copy_slots);
    free (prompt);
    free (host_src);
    cudaHostUnregister (host);
    free (host);
    free (slots);
    cudaFree (slab);
}

//  `kvtier bench model`: returns the exit code (0, 1 failed, 2 usage).
int
kvt_bench_model_main (int argc, char **argv)
{
    bool json = false;
    const char *only = NULL;
    int prompt = 4096, prefix = 16384, fresh = 512;
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "--json"))
            json = true;
        else
        if (streq (argv [i], "--only") && i + 1 < argc)
            only = argv [++i];
        else
        if (streq (argv [i], "--prompt") && i + 1 < argc)
            prompt = atoi (argv [++i]);
        else
        if (streq (argv [i], "--prefix") && i + 1 < argc)
            prefix = atoi (argv [++i]);
        else
        if (streq (argv [i], "--new") && i + 1 < argc)
            fresh = atoi (argv [++i]);
        else {
            fprintf (i + 1 == argc && streq (argv [i], "--help")? stdout: stderr,
                     "usage: kvtier bench model [--json] [--only prefill|batch|stream|scatter] "
                     "[--prompt N] [--prefix N] [--new N]\n");
            return streq (argv [i], "--help")? 0: 2;
        }
    }
    if (prompt < 16 || prompt > 65536 || prefix < 16 || prefix > 262144 || fresh < 1
    ||  fresh > 65536 || (only && !streq (only, "prefill") && !streq (only, "batch")
                          && !streq (only, "stream") && !streq (only, "scatter"))) {
        fprintf (stderr, "kvtier bench model: a value out of range (see --help)\n");
        return 2;
    }
    int devices = 0;
    if (cudaGetDeviceCount (&devices) != cudaSuccess || devices == 0) {
        fprintf (stderr, "kvtier bench model: no CUDA device\n");
        return 2;
    }
    int64_t started = zclock_usecs ();
    kvt_model_cuda_t *model = kvt_model_cuda_new (&s_shape_8b);
    if (!model) {
        fprintf (stderr, "kvtier bench model: the 8B-shaped model did not fit\n");
        return 1;
    }
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    size_t block_bytes = kvt_block_bytes (&geometry);
    kvt_bench_report_t *report = kvt_bench_report_new ("model", json);
    struct cudaDeviceProp props;
    char note [160];
    if (cudaGetDeviceProperties (&props, 0) == cudaSuccess)
        kvt_bench_report_note (report, "device", props.name);
    snprintf (note, sizeof (note), "Llama-3-8B shape, bf16, seeded weights made on the device "
              "in %.2f s; 16-token blocks of %zu KiB", (zclock_usecs () - started) / 1e6,
              block_bytes >> 10);
    kvt_bench_report_note (report, "model", note);
    if (!only || streq (only, "prefill"))
        s_bench_prefill (report, model, block_bytes, prompt);
    if (!only || streq (only, "batch"))
        s_bench_batch (report, model, block_bytes);
    if (!only || streq (only, "stream"))
        s_bench_stream (report, model, block_bytes, (size_t) prefix, (size_t) fresh);
    kvt_model_cuda_destroy (&model);
    if (!only || streq (only, "scatter"))   //  Its own model: a shard is set before any sequence
        kvt_bench_model_scatter (report, &s_shape_8b, (size_t) prompt);
    kvt_bench_report_finish (&report);
    return 0;
}

#endif
