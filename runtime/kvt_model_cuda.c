/*  =========================================================================
    kvt_model_cuda - the synthetic Llama-shaped model on a CUDA GPU

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The GPU path of the compute actor's model (kvt_model.h has the API):
    bf16 weights drawn on the device from the seed by a counter hash
    (kvt_model_ops), RMSNorm, RoPE (theta 500000, rotate half), GQA
    attention over the KV blocks of a device slab (paged prefill kernel
    for the prompt, paged decode kernel for decode steps), SwiGLU MLP,
    cuBLAS bf16 GEMMs with fp32 accumulation (Q, K and V in one GEMM; one
    kernel then rotates q and k and writes K/V into their blocks), greedy
    argmax. The residual stream is bf16; the residual add is the GEMM's
    beta = 1.
@discuss
    Determinism contract (as the CPU model's): a token's arithmetic must
    not depend on how the prompt was split into cached and computed parts.
    cuBLAS may pick a different algorithm for a different row count, so
    every prefill GEMM runs on exactly KVT_MODEL_CUDA_CHUNK rows (short
    chunks are padded; padded rows are zeroed at the start of a chunk and
    never read back), and with one algorithm each output row depends on
    its input row only. The prefill attention kernel computes each query row
    over the same absolute 64-key tiles wherever the row sits in its query
    tile (fully masked extra tiles add exact zeros). Decode steps (one
    row) run the same way in every case. When every full block was
    cached, the last prompt token is recomputed into a copy of its block
    (a spare), so a cached block is never written.
    Batch invariance (many sequences, kvt_model_cuda_decode): a decode
    step runs the rows of up to KVT_MODEL_MAX_BATCH sequences, each at its
    own position with its own block table; every decode GEMM runs on
    exactly KVT_MODEL_MAX_BATCH rows (padded, so one cuBLAS algorithm for
    every batch size, each row depending on its own input row only), and
    the decode attention always splits a context at fixed multiples of
    KVT_MODEL_DECODE_SPLIT tokens and merges the splits (at least two, so
    always the same kernels): a split past a sequence's end adds exact
    zeros. A sequence thus gets the same tokens and blocks alone or in any
    batch. Prefill runs one sequence per call, in KVT_MODEL_CUDA_CHUNK-row
    GEMMs, so a prompt may be cut into slices of any size.
    One stream and one cuBLAS handle per model. Steps (issue #3):
    kvt_model_cuda_step_launch queues a prefill slice and a decode step,
    the copy of their sampled tokens into a pinned host buffer, then a
    host function (cudaLaunchHostFunc) that adds 1 to the caller's
    eventfd, and returns; the caller's loop polls that eventfd and calls
    kvt_model_cuda_step_finish, which hands the tokens to the sequences.
    The thread never blocks on the GPU in between (staging copies come
    from pageable memory, staged by the call). kvt_model_cuda_seq_prefill
    and kvt_model_cuda_decode are a launch and a finish back to back, so
    they return after the stream drained. A decode step replays as a CUDA
    graph (kvt_model_cuda_graph.c) unless graphs are off
    (KVT_CUDA_GRAPH=0, kvt_model_cuda_set_graphs) or it stages a layer
    shard's host-held layers (kvt_model_cuda_seq.c); the prefill slice
    runs eagerly. Not thread-safe: a model and
    its sequences belong to one thread.
    Files: this one (weights, the model's life, the forward pass of a
    chunk of rows and sampling; kvt_model_cuda_supports in both builds),
    kvt_model_cuda_seq.c (sequences, steps, kvt_model_cuda_generate),
    kvt_model_cuda_graph.c (decode steps as graphs), kvt_model_cuda_stage.c
    (a layer-sharded model's staging), kvt_model_cuda_test.c
    (the selftest); kvt_model_cuda_int.h holds
    what they share.
@end
*/

#include "kvt_model_cuda_int.h"

#ifdef KVT_WITH_CUDA

#include "kvt_layers.cuh"
#include "kvt_paged_attention.cuh"
#include "kvt_paged_prefill.cuh"
#include "kvt_model_ops.cuh"

#define S_ROPE_THETA  500000.0      //  Llama 3 RoPE base
#define S_NORM_EPS    1e-5f         //  RMSNorm epsilon
#define S_CUBLAS_WORKSPACE (32u << 20)  //  cuBLAS workspace bytes (its Hopper default)
#define S_LM_CHUNKS   (KVT_MODEL_CUDA_LAYER_MAJOR_ROWS / KVT_MODEL_CUDA_CHUNK)
                                    //  Chunks of the largest layer-major slice

//  --------------------------------------------------------------------------
//  Log a failed CUDA call; return 0 or KVT_ECUDA.

int
kvt_model_cuda_check (cudaError_t status, const char *what)
{
    if (status == cudaSuccess)
        return 0;
    kvt_log_error ("kvt_model_cuda: %s: %s", what, cudaGetErrorString (status));
    return KVT_ECUDA;
}

//  Allocate and fill one weight tensor; NULL on failure (logged).
static void *
s_tensor_new (kvt_model_cuda_t *self, size_t count, uint64_t id, float offset, float scale)
{
    void *tensor = NULL;
    if (kvt_model_cuda_check (cudaMalloc (&tensor, count * 2), "weights"))
        return NULL;
    if (kvt_model_fill_bf16 (tensor, count, self->shape.seed, id, offset, scale,
                             self->stream)) {
        cudaFree (tensor);
        return NULL;
    }
    return tensor;
}

//  Uniform bound that gives a projection unit variance: sqrt (3 / fan_in).
static float
s_fan_in_scale (int fan_in)
{
    return sqrtf (3.0f / (float) fan_in);
}

//  True if the GPU kernels support 'shape' (logs why not).
static bool
s_shape_valid (const kvt_model_shape_t *shape)
{
    if (!kvt_model_cuda_supports (shape)) {
        kvt_log_error ("kvt_model_cuda: unsupported shape (head_dim must be 128, "
                       "block_tokens a power of two, kv_heads divide heads, hidden and "
                       "intermediate multiples of 8)");
        return false;
    }
    return true;
}

//  --------------------------------------------------------------------------
//  Create the model on the current device: weights drawn there from the
//  seed, activations for KVT_MODEL_CUDA_CHUNK rows. NULL (logged) on a
//  bad shape or short device memory.

kvt_model_cuda_t *
kvt_model_cuda_new (const kvt_model_shape_t *shape)
{
    assert (shape);
    if (!s_shape_valid (shape))
        return NULL;
    kvt_model_cuda_t *self = (kvt_model_cuda_t *) kvt_zmalloc (sizeof (kvt_model_cuda_t));
    self->shape = *shape;
    self->q_dim = shape->heads * shape->head_dim;
    self->kv_dim = shape->kv_heads * shape->head_dim;
    self->layer = (kvt_model_cuda_layer_t *)
        kvt_zmalloc ((size_t) shape->layers * sizeof (kvt_model_cuda_layer_t));
    const size_t hidden = (size_t) shape->hidden, inter = (size_t) shape->intermediate;
    const size_t vocab = (size_t) shape->vocab;
    bool ok = kvt_model_cuda_check (cudaStreamCreateWithFlags (&self->stream,
                                                               cudaStreamNonBlocking),
                                    "stream") == 0
           && kvt_model_cuda_check (cudaStreamCreateWithFlags (&self->copy_stream,
                                                               cudaStreamNonBlocking),
                                    "copy stream") == 0;
    if (ok && cublasCreate (&self->cublas) != CUBLAS_STATUS_SUCCESS) {
        kvt_log_error ("kvt_model_cuda: cublasCreate failed");
        self->cublas = NULL;
        ok = false;
    }
    ok = ok && cublasSetStream (self->cublas, self->stream) == CUBLAS_STATUS_SUCCESS;
    //  A workspace of our own: a captured GEMM then uses the same one as an
    //  eager GEMM (same algorithm), and capture allocates nothing
    ok = ok && kvt_model_cuda_check (cudaMalloc (&self->cublas_workspace, S_CUBLAS_WORKSPACE),
                                     "cublas workspace") == 0
            && cublasSetWorkspace (self->cublas, self->cublas_workspace, S_CUBLAS_WORKSPACE)
               == CUBLAS_STATUS_SUCCESS;
    //  Decode steps as CUDA graphs unless KVT_CUDA_GRAPH=0
    const char *graphs = getenv ("KVT_CUDA_GRAPH");
    self->graph_on = !(graphs && streq (graphs, "0"));
    self->layer_major = KVT_MODEL_CUDA_LAYER_MAJOR_GATED;
    self->gpu_layers = shape->layers;      //  No layer shard until set
    self->stage_on = true;                  //  Decode stages host-held layers
    //  Where staged slots fall in more runs, a copy kernel; the
    //  environment's KVT_STAGE_KERNEL_RUNS sets the mark (for measuring it)
    const char *runs = getenv ("KVT_STAGE_KERNEL_RUNS");
    self->stage_kernel_runs = runs && *runs? (size_t) strtoull (runs, NULL, 10)
                                           : KVT_MODEL_CUDA_STAGE_KERNEL_RUNS;
    if (ok) {
        self->embed = s_tensor_new (self, vocab * hidden, 0, 0.0f, sqrtf (3.0f));
        self->final_norm = s_tensor_new (self, hidden, 1, 1.0f, 0.1f);
        self->lm_head = s_tensor_new (self, vocab * hidden, 2, 0.0f,
                                      s_fan_in_scale (shape->hidden));
        ok = self->embed && self->final_norm && self->lm_head;
    }
    for (int l = 0; ok && l < shape->layers; l++) {
        kvt_model_cuda_layer_t *layer = &self->layer [l];
        uint64_t id = 16 + (uint64_t) l * 16;
        float in_scale = s_fan_in_scale (shape->hidden);
        layer->attn_norm = s_tensor_new (self, hidden, id + 0, 1.0f, 0.1f);
        //  Wq rows (tensor id 1), then Wk (2) and Wv (3) rows
        layer->w_qkv = s_tensor_new (self, hidden * (self->q_dim + 2 * self->kv_dim), id + 1,
                                     0.0f, in_scale);
        for (int t = 0; layer->w_qkv && t < 2; t++)
            if (kvt_model_fill_bf16 ((char *) layer->w_qkv
                                     + hidden * (self->q_dim + (size_t) t * self->kv_dim) * 2,
                                     hidden * self->kv_dim, shape->seed, id + 2 + t, 0.0f,
                                     in_scale, self->stream)) {
                cudaFree (layer->w_qkv);
                layer->w_qkv = NULL;
            }
        layer->wo = s_tensor_new (self, (size_t) self->q_dim * hidden, id + 4, 0.0f,
                                  s_fan_in_scale (self->q_dim));
        layer->mlp_norm = s_tensor_new (self, hidden, id + 5, 1.0f, 0.1f);
        layer->w_gate_up = s_tensor_new (self, 2 * inter * hidden, id + 6, 0.0f, in_scale);
        layer->w_down = s_tensor_new (self, inter * hidden, id + 8, 0.0f,
                                      s_fan_in_scale (shape->intermediate));
        //  Up rows get their own stream of numbers (tensor id 7)
        ok = layer->attn_norm && layer->w_qkv && layer->wo
          && layer->mlp_norm && layer->w_gate_up && layer->w_down
          && kvt_model_fill_bf16 ((char *) layer->w_gate_up + inter * hidden * 2,
                                  inter * hidden, shape->seed, id + 7, 0.0f, in_scale,
                                  self->stream) == 0;
    }
    const size_t rows = KVT_MODEL_CUDA_CHUNK;
    if (ok) {
        ok = kvt_model_cuda_check (cudaMalloc (&self->x, rows * hidden * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc (&self->xn, rows * hidden * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc (&self->qkv,
                                               rows * (self->q_dim + 2 * self->kv_dim) * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc (&self->q, rows * self->q_dim * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc (&self->att, rows * self->q_dim * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc (&self->gate_up, rows * 2 * inter * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc (&self->act, rows * inter * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc (&self->logits,
                                               KVT_MODEL_CUDA_DECODE_ROWS * vocab * 2),
                                   "activations") == 0
          && kvt_model_cuda_check (cudaMalloc ((void **) &self->d_rows,
                                               KVT_MODEL_CUDA_ROWS_COUNT * sizeof (int32_t)),
                                   "indices") == 0
          && kvt_model_cuda_check (cudaMalloc ((void **) &self->d_argmax,
                                               KVT_MODEL_CUDA_DECODE_ROWS * sizeof (int32_t)),
                                   "indices") == 0
          && kvt_model_cuda_check (cudaMallocHost ((void **) &self->h_rows_lm,
                                                   S_LM_CHUNKS * KVT_MODEL_CUDA_ROWS_COUNT
                                                   * sizeof (int32_t)), "layer-major rows") == 0
          && kvt_model_cuda_check (cudaMallocHost ((void **) &self->h_sampled,
                                                   (1 + KVT_MODEL_CUDA_DECODE_ROWS)
                                                   * sizeof (int32_t)), "sampled") == 0
          && kvt_model_cuda_check (cudaMalloc ((void **) &self->inv_freq,
                                               (size_t) shape->head_dim / 2 * sizeof (float)),
                                   "rope") == 0;
    }
    if (ok) {
        //  Padded rows start (and stay) finite
        void *zero [] = { self->x, self->xn, self->qkv, self->q, self->att, self->gate_up,
                          self->act };
        size_t bytes [] = { rows * hidden * 2, rows * hidden * 2,
                            rows * (self->q_dim + 2 * self->kv_dim) * 2, rows * self->q_dim * 2,
                            rows * self->q_dim * 2, rows * 2 * inter * 2, rows * inter * 2 };
        for (int k = 0; ok && k < 7; k++)
            ok = kvt_model_cuda_check (cudaMemsetAsync (zero [k], 0, bytes [k], self->stream),
                                       "memset") == 0;
        float *inv_freq = (float *) kvt_zmalloc ((size_t) shape->head_dim / 2 * sizeof (float));
        kvt_rope_inv_freq (inv_freq, shape->head_dim, S_ROPE_THETA);
        ok = ok && kvt_model_cuda_check (cudaMemcpy (self->inv_freq, inv_freq,
                                                     (size_t) shape->head_dim / 2
                                                     * sizeof (float),
                                                     cudaMemcpyHostToDevice), "rope") == 0;
        free (inv_freq);
        self->h_rows = (int32_t *) kvt_zmalloc (KVT_MODEL_CUDA_ROWS_COUNT * sizeof (int32_t));
        ok = ok && kvt_model_cuda_check (cudaStreamSynchronize (self->stream), "weights") == 0;
    }
    if (!ok) {
        kvt_log_error ("kvt_model_cuda: cannot set up the model on the device");
        kvt_model_cuda_destroy (&self);     //  Safe on a half-built model
    }
    return self;
}

//  Destroy; NULL-safe, safe on a half-built model, nulls the caller's pointer.
void
kvt_model_cuda_destroy (kvt_model_cuda_t **self_p)
{
    assert (self_p);
    kvt_model_cuda_t *self = *self_p;
    if (!self)
        return;
    if (self->stream)
        cudaStreamSynchronize (self->stream);
    if (self->copy_stream)
        cudaStreamSynchronize (self->copy_stream);
    if (self->stage_stream)
        cudaStreamSynchronize (self->stage_stream);
    kvt_model_cuda_graph_purge (self);
    for (int l = 0; self->stage_ready && l < self->shape.layers; l++)
        if (self->stage_ready [l])
            cudaEventDestroy (self->stage_ready [l]);
    free (self->stage_ready);
    for (int k = 0; k < KVT_MODEL_CUDA_STAGE_RING; k++)
        if (self->stage_free [k])
            cudaEventDestroy (self->stage_free [k]);
    if (self->stage_start)
        cudaEventDestroy (self->stage_start);
    for (int l = 0; self->layer && l < self->shape.layers; l++) {
        kvt_model_cuda_layer_t *layer = &self->layer [l];
        void *tensors [] = { layer->attn_norm, layer->w_qkv, layer->wo, layer->mlp_norm,
                             layer->w_gate_up, layer->w_down };
        for (int k = 0; k < 6; k++)
            if (tensors [k])
                cudaFree (tensors [k]);
    }
    void *buffers [] = { self->embed, self->final_norm, self->lm_head, self->inv_freq,
                         self->x, self->xn, self->qkv, self->q, self->att,
                         self->gate_up, self->act, self->logits, self->d_rows,
                         self->d_argmax, self->d_table, self->workspace,
                         self->cublas_workspace, self->x_lm, self->d_rows_lm,
                         self->stage, self->d_stage_table, self->d_stage_slots };
    for (size_t k = 0; k < sizeof (buffers) / sizeof (buffers [0]); k++)
        if (buffers [k])
            cudaFree (buffers [k]);
    if (self->h_sampled)
        cudaFreeHost (self->h_sampled);
    if (self->h_rows_lm)
        cudaFreeHost (self->h_rows_lm);
    if (self->cublas)
        cublasDestroy (self->cublas);
    if (self->stream)
        cudaStreamDestroy (self->stream);
    if (self->copy_stream)
        cudaStreamDestroy (self->copy_stream);
    if (self->stage_stream)
        cudaStreamDestroy (self->stage_stream);
    free (self->h_stage_table);
    free (self->stage_src);
    free (self->h_stage_slots);
    free (self->layer);
    free (self->h_rows);
    free (self->h_table);
    free (self);
    *self_p = NULL;
}

//  The geometry of this model's KV blocks (bf16).
kvt_block_shape_t
kvt_model_cuda_block_shape (const kvt_model_cuda_t *self)
{
    kvt_block_shape_t shape = { self->shape.layers, self->shape.kv_heads,
                                self->shape.head_dim, self->shape.block_tokens, 2 };
    return shape;
}

//  Ask 'cancel_fn (arg)' between chunks and decode steps.
void
kvt_model_cuda_set_cancel (kvt_model_cuda_t *self, bool (*cancel_fn) (void *arg), void *arg)
{
    self->cancel_fn = cancel_fn;
    self->cancel_arg = arg;
}

//  Choose when prefill runs layer-major (kvt_model.h).
void
kvt_model_cuda_set_layer_major (kvt_model_cuda_t *self, kvt_model_cuda_layer_major_t when)
{
    assert (self);
    self->layer_major = when;
}

//  Keep layers [gpu_layers, layers) of every block in 'shard' (kvt_model.h).
int
kvt_model_cuda_set_layer_shard (kvt_model_cuda_t *self, int gpu_layers, void *shard,
                                size_t shard_bytes)
{
    assert (self);
    const kvt_model_shape_t *shape = &self->shape;
    const size_t layer_bytes = (size_t) 2 * shape->kv_heads * shape->block_tokens
                             * shape->head_dim * 2;
    if (gpu_layers < 1 || gpu_layers > shape->layers)
        return -EINVAL;
    if (gpu_layers < shape->layers
    &&  (!shard || (uintptr_t) shard % 16 || shard_bytes % 16
         || shard_bytes < (size_t) (shape->layers - gpu_layers) * layer_bytes))
        return -EINVAL;
    //  Decode staging's stream and events, made once
    int rc = 0;
    if (gpu_layers < shape->layers && !self->stage_ready) {
        rc = kvt_model_cuda_check (cudaStreamCreateWithFlags (&self->stage_stream,
                                                              cudaStreamNonBlocking),
                                   "staging stream");
        self->stage_ready = (cudaEvent_t *) kvt_zmalloc ((size_t) shape->layers
                                                         * sizeof (cudaEvent_t));
        for (int l = 0; rc == 0 && l < shape->layers; l++)
            rc = kvt_model_cuda_check (cudaEventCreateWithFlags (&self->stage_ready [l],
                                                                 cudaEventDisableTiming),
                                       "staging event");
        for (int k = 0; rc == 0 && k < KVT_MODEL_CUDA_STAGE_RING; k++)
            rc = kvt_model_cuda_check (cudaEventCreateWithFlags (&self->stage_free [k],
                                                                 cudaEventDisableTiming),
                                       "staging event");
        if (rc == 0)
            rc = kvt_model_cuda_check (cudaEventCreateWithFlags (&self->stage_start,
                                                                 cudaEventDisableTiming),
                                       "staging event");
    }
    if (rc)
        return rc;                  //  The rest is freed by kvt_model_cuda_destroy
    self->gpu_layers = gpu_layers;
    self->shard = gpu_layers < shape->layers? (char *) shard: NULL;
    self->shard_bytes = gpu_layers < shape->layers? shard_bytes: 0;
    return 0;
}

//  Stage the shard's layers in decode steps, or read them in place (kvt_model.h).
void
kvt_model_cuda_set_shard_staging (kvt_model_cuda_t *self, bool on)
{
    assert (self);
    self->stage_on = on;
}

//  --------------------------------------------------------------------------
//  Make *buffer (of *have bytes) hold 'bytes', stream-ordered: a smaller
//  one is freed after the work queued on 'stream' before, and nothing
//  waits. A synchronize here would deadlock a gated run: work queued
//  behind a layer gate (kvt_model_cuda_gate.c) only goes on once our
//  caller's loop opens the gate. Returns 0 or KVT_ECUDA ('what' names it).

int
kvt_model_cuda_regrow (void **buffer, size_t *have, size_t bytes, cudaStream_t stream,
                       const char *what)
{
    if (bytes <= *have)
        return 0;
    if (*buffer)
        cudaFreeAsync (*buffer, stream);
    *buffer = NULL;
    *have = 0;
    int rc = kvt_model_cuda_check (cudaMallocAsync (buffer, bytes, stream), what);
    if (rc == 0)
        *have = bytes;
    return rc;
}

//  Make the split-KV workspace hold 'bytes'. Returns 0 or KVT_ECUDA.
static int
s_workspace_grow (kvt_model_cuda_t *self, size_t bytes)
{
    return kvt_model_cuda_regrow (&self->workspace, &self->workspace_bytes, bytes, self->stream,
                                  "workspace");
}

//  Make the workspace hold a decode step of 'rows' rows and 'splits' splits.
int
kvt_model_cuda_workspace_reserve (kvt_model_cuda_t *self, int rows, int splits)
{
    kvt_paged_attention_args_t attn = { .dtype = KVT_KDTYPE_BF16, .seqs = rows,
                                        .heads = self->shape.heads,
                                        .kv_heads = self->shape.kv_heads,
                                        .head_dim = self->shape.head_dim, .splits = splits };
    return s_workspace_grow (self, kvt_paged_attention_workspace_bytes (&attn, splits));
}

//  c [m, n] (+)= a [m, k] . w [n, k]^T, bf16 in and out, fp32 accumulation.
static int
s_gemm (kvt_model_cuda_t *self, const void *a, const void *w, void *c, int m, int n, int k,
        float beta)
{
    const float alpha = 1.0f;
    cublasStatus_t status = cublasGemmEx (self->cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k,
                                          &alpha, w, CUDA_R_16BF, k, a, CUDA_R_16BF, k,
                                          &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT);
    if (status != CUBLAS_STATUS_SUCCESS) {
        kvt_log_error ("kvt_model_cuda: cublasGemmEx (%d x %d x %d) failed: %d", m, n, k,
                       (int) status);
        return KVT_ECUDA;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  One layer 'l' for 'rows' rows: residual stream 'x' (GEMMs on 'gemm_rows'
//  rows, padded rows finite), indices in 'rows_idx' (d_rows layout), KV
//  in 'slab'. See kvt_model_cuda_forward for decode and prefill.

static int
s_layer (kvt_model_cuda_t *self, int l, void *x, int32_t *rows_idx, int rows, bool decode,
         void *slab, size_t block_bytes, int table_len, int seq_len)
{
    const kvt_model_shape_t *shape = &self->shape;
    const int hidden = shape->hidden, inter = shape->intermediate;
    const int gemm_rows = decode? KVT_MODEL_CUDA_DECODE_ROWS: KVT_MODEL_CUDA_CHUNK;
    const int64_t head_bytes = (int64_t) shape->block_tokens * shape->head_dim * 2;
    const kvt_model_cuda_layer_t *layer = &self->layer [l];
    int rc;
    kvt_rmsnorm_args_t norm = { KVT_KDTYPE_BF16, x, layer->attn_norm, self->xn,
                                rows, hidden, S_NORM_EPS };
    KVT_MODEL_CUDA_TRY (kvt_rmsnorm (&norm, self->stream));
    KVT_MODEL_CUDA_TRY (s_gemm (self, self->xn, layer->w_qkv, self->qkv, gemm_rows,
                                self->q_dim + 2 * self->kv_dim, hidden, 0));
    //  Layer l's slices: in the slab, or (layer sharding, #5) in the
    //  mapped host shard, read and written there over PCIe
    size_t stride;
    char *layer_base = kvt_model_cuda_layer_base (self, slab, block_bytes, l, &stride);
    kvt_qkv_args_t qkv = {
        .qkv = self->qkv, .q = self->q, .positions = KVT_MODEL_CUDA_POS (rows_idx),
        .inv_freq = self->inv_freq, .slab = layer_base, .block_bytes = (int64_t) stride,
        .dest_block = KVT_MODEL_CUDA_DBLOCK (rows_idx),
        .dest_token = KVT_MODEL_CUDA_DTOKEN (rows_idx),
        .rows = rows, .layer = 0, .heads = shape->heads, .kv_heads = shape->kv_heads,
        .head_dim = shape->head_dim, .block_tokens = shape->block_tokens };
    KVT_MODEL_CUDA_TRY (kvt_model_qkv (&qkv, self->stream));
    //  A staged host-held layer (compute/shard_staging): its new
    //  K/V went to the shard above (kept there), and goes to its staging
    //  slice too once the copy landed; attention reads the ring buffer
    //  through the staging table
    const bool staged = kvt_model_cuda_staged (self, l);
    int32_t *block_table = self->d_table;
    if (staged) {
        //  In a graph's capture, the copy was queued outside it (ahead of
        //  the launch): an external event node
        enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
        if (self->stage_graph)
            KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaStreamIsCapturing (self->stream,
                                                                             &capture),
                                                      "capture status"));
        const unsigned flags = capture == cudaStreamCaptureStatusActive
                             ? cudaEventWaitExternal: cudaEventWaitDefault;
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaStreamWaitEvent (self->stream,
                                                                       self->stage_ready [l],
                                                                       flags),
                                                  "wait for a staged layer"));
        layer_base = kvt_model_cuda_stage_base (self, l);
        stride = (size_t) 2 * shape->kv_heads * head_bytes;
        block_table = self->d_stage_table;
        qkv.slab = layer_base;
        qkv.block_bytes = (int64_t) stride;
        qkv.dest_block = self->d_stage_table + self->stage_dest_at;
        KVT_MODEL_CUDA_TRY (kvt_model_qkv (&qkv, self->stream));
    }
    const char *k_base = layer_base;
    const char *v_base = k_base + (int64_t) shape->kv_heads * head_bytes;
    if (decode) {
        //  Splits of exactly KVT_MODEL_DECODE_SPLIT tokens, at least two:
        //  the kernel cuts max_seq_len / splits, so pass a multiple
        int splits = (seq_len + KVT_MODEL_DECODE_SPLIT - 1) / KVT_MODEL_DECODE_SPLIT;
        if (splits < 2)
            splits = 2;
        kvt_paged_attention_args_t attn = {
            .dtype = KVT_KDTYPE_BF16, .q = self->q, .k = k_base, .v = v_base,
            .block_stride_bytes = (int64_t) stride, .head_stride_bytes = head_bytes,
            .token_stride_bytes = shape->head_dim * 2, .block_table = block_table,
            .seq_lens = KVT_MODEL_CUDA_SEQLEN (rows_idx), .out = self->att,
            .seqs = rows,
            .heads = shape->heads, .kv_heads = shape->kv_heads,
            .head_dim = shape->head_dim, .block_tokens = shape->block_tokens,
            .max_blocks_per_seq = table_len,
            .max_seq_len = splits * KVT_MODEL_DECODE_SPLIT,
            .scale = 1.0f / sqrtf ((float) shape->head_dim), .splits = splits };
        size_t need = kvt_paged_attention_workspace_bytes (&attn, splits);
        KVT_MODEL_CUDA_TRY (s_workspace_grow (self, need));
        attn.workspace = self->workspace;
        attn.workspace_bytes = self->workspace_bytes;
        KVT_MODEL_CUDA_TRY (kvt_paged_attention (&attn, self->stream));
    }
    else {
        kvt_paged_prefill_args_t attn = {
            .dtype = KVT_KDTYPE_BF16, .q = self->q,
            .q_start = KVT_MODEL_CUDA_QSTART (rows_idx),
            .k = k_base, .v = v_base, .block_stride_bytes = (int64_t) stride,
            .head_stride_bytes = head_bytes, .token_stride_bytes = shape->head_dim * 2,
            .block_table = block_table, .seq_lens = KVT_MODEL_CUDA_SEQLEN (rows_idx),
            .out = self->att, .seqs = 1, .heads = shape->heads,
            .kv_heads = shape->kv_heads, .head_dim = shape->head_dim,
            .block_tokens = shape->block_tokens, .max_blocks_per_seq = table_len,
            .max_q_len = rows, .scale = 1.0f / sqrtf ((float) shape->head_dim) };
        KVT_MODEL_CUDA_TRY (kvt_paged_prefill (&attn, self->stream));
    }
    if (staged && !self->stage_graph)   //  Its ring buffer may take layer l + stage_ring
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaEventRecord (
            self->stage_free [(l - self->gpu_layers) % self->stage_ring],
            self->stream), "staged layer read"));
    KVT_MODEL_CUDA_TRY (s_gemm (self, self->att, layer->wo, x, gemm_rows, hidden,
                                self->q_dim, 1));
    norm.weight = layer->mlp_norm;
    KVT_MODEL_CUDA_TRY (kvt_rmsnorm (&norm, self->stream));
    KVT_MODEL_CUDA_TRY (s_gemm (self, self->xn, layer->w_gate_up, self->gate_up, gemm_rows,
                                2 * inter, hidden, 0));
    kvt_swiglu_args_t swiglu = { KVT_KDTYPE_BF16, self->gate_up, self->act, rows, inter };
    KVT_MODEL_CUDA_TRY (kvt_swiglu (&swiglu, self->stream));
    return s_gemm (self, self->act, layer->w_down, x, gemm_rows, hidden, inter, 1);
}

//  Embed the 'rows' tokens of 'rows_idx' into residual stream 'x' of
//  'gemm_rows' rows; the rows past them are zeroed (finite GEMM input).
static int
s_embed (kvt_model_cuda_t *self, void *x, const int32_t *rows_idx, int rows, int gemm_rows)
{
    const int hidden = self->shape.hidden;
    int rc;
    if (rows < gemm_rows)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemsetAsync ((char *) x
                                                                   + (size_t) rows * hidden * 2,
                                                                   0, (size_t) (gemm_rows - rows)
                                                                   * hidden * 2, self->stream),
                                                  "memset"));
    return kvt_model_embed (x, self->embed, KVT_MODEL_CUDA_TOKENS (rows_idx), rows, hidden,
                            self->stream);
}

//  Queue a wait for layer 'l' of 'layer_ready' (NULL: none) on the stream.
static int
s_layer_wait (kvt_model_cuda_t *self, const cudaEvent_t *layer_ready, int l)
{
    if (!layer_ready)
        return 0;
    return kvt_model_cuda_check (cudaStreamWaitEvent (self->stream, layer_ready [l], 0),
                                 "wait for a streamed layer");
}

//  --------------------------------------------------------------------------
//  Run 'rows' tokens (already staged in d_rows: tokens, positions, dest
//  block and token, q_start, seq_lens) through every layer. Prefill
//  (decode false: rows of one sequence, consecutive) runs GEMMs on
//  KVT_MODEL_CUDA_CHUNK rows and the paged prefill kernel over the table
//  in d_table ('table_len' entries, 'seq_len' tokens after this chunk).
//  Decode (one row per sequence) runs GEMMs on KVT_MODEL_CUDA_DECODE_ROWS
//  rows and the paged decode kernel over d_table [rows, table_len], with
//  KV split at fixed KVT_MODEL_DECODE_SPLIT-token boundaries ('seq_len'
//  is then the longest sequence; table rows must cover at least two
//  splits and 'seq_len' rounded up to a split). 'slab' is the block slab.
//  'layer_ready' (NULL: none) has one event per layer: the stream waits
//  on layer l's before the first kernel that touches layer l's KV
//  (streamed blocks).

int
kvt_model_cuda_forward (kvt_model_cuda_t *self, int rows, bool decode, void *slab,
                        size_t block_bytes, int table_len, int seq_len,
                        const cudaEvent_t *layer_ready)
{
    int rc;
    const int layers = self->shape.layers;
    //  (A graph's staging queued every layer's copy before the graph)
    const bool staging = kvt_model_cuda_staged (self, layers - 1) && !self->stage_graph;
    //  Staging: the first stage_ring host-held layers' copies go at once
    //  (they run under layers [0, gpu_layers)), each later one as
    //  attention frees its ring buffer: up to stage_ring - 1 layers ahead
    const int ring = self->stage_ring;
    for (int l = self->gpu_layers; staging && l < layers && l < self->gpu_layers + ring; l++)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_layer (self, l));
    KVT_MODEL_CUDA_TRY (s_embed (self, self->x, self->d_rows, rows,
                                 decode? KVT_MODEL_CUDA_DECODE_ROWS: KVT_MODEL_CUDA_CHUNK));
    for (int l = 0; l < layers; l++) {
        KVT_MODEL_CUDA_TRY (s_layer_wait (self, layer_ready, l));
        KVT_MODEL_CUDA_TRY (s_layer (self, l, self->x, self->d_rows, rows, decode, slab,
                                     block_bytes, table_len, seq_len));
        if (staging && l >= self->gpu_layers && l + ring < layers)
            KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_layer (self, l + ring));
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Layers [from, to) of a prefill slice of 'chunks' chunks of
//  KVT_MODEL_CUDA_CHUNK rows (the last one 'last_rows' rows), layer-major:
//  layer l runs for every chunk before layer l + 1 starts, so a run whose
//  cached layers still stream in (layer_ready) computes every chunk's
//  first layers while the later ones arrive, instead of one chunk's.
//  Chunk c's indices are at d_rows_lm + c x KVT_MODEL_CUDA_ROWS_COUNT and
//  its residual stream is x_lm's slot c (embedded when 'from' is 0); both
//  outlive the call, so a slice can run over several steps. The same
//  GEMMs on the same rows as chunk by chunk: the bytes are identical.
//  Needs kvt_model_cuda_layer_major_reserve (chunks) first.

int
kvt_model_cuda_forward_layer_major (kvt_model_cuda_t *self, int chunks, int last_rows,
                                    int from, int to, void *slab, size_t block_bytes,
                                    int table_len, const cudaEvent_t *layer_ready)
{
    assert (chunks >= 1 && (size_t) chunks <= self->lm_chunks);
    assert (from >= 0 && from < to && to <= self->shape.layers);
    const size_t x_bytes = (size_t) KVT_MODEL_CUDA_CHUNK * self->shape.hidden * 2;
    int rc;
    //  Staging (a sharded model): the piece's first stage_ring host-held
    //  layers' copies go at once, each later one as the layer stage_ring
    //  before it freed its buffer (after every chunk's attention)
    const bool staging = kvt_model_cuda_staged (self, to - 1);
    const int ring = self->stage_ring;
    const int first_staged = from > self->gpu_layers? from: self->gpu_layers;
    const int dest_at = self->stage_dest_at;
    for (int l = first_staged; staging && l < to && l < first_staged + ring; l++)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_layer (self, l));
    for (int c = 0; c < chunks && from == 0; c++) {
        int rows = c == chunks - 1? last_rows: KVT_MODEL_CUDA_CHUNK;
        KVT_MODEL_CUDA_TRY (s_embed (self, (char *) self->x_lm + (size_t) c * x_bytes,
                                     self->d_rows_lm + (size_t) c * KVT_MODEL_CUDA_ROWS_COUNT,
                                     rows, KVT_MODEL_CUDA_CHUNK));
    }
    for (int l = from; l < to; l++) {
        KVT_MODEL_CUDA_TRY (s_layer_wait (self, layer_ready, l));
        for (int c = 0; c < chunks; c++) {
            int rows = c == chunks - 1? last_rows: KVT_MODEL_CUDA_CHUNK;
            self->stage_dest_at = dest_at + c * KVT_MODEL_CUDA_CHUNK;
            KVT_MODEL_CUDA_TRY (s_layer (self, l, (char *) self->x_lm + (size_t) c * x_bytes,
                                         self->d_rows_lm + (size_t) c * KVT_MODEL_CUDA_ROWS_COUNT,
                                         rows, false, slab, block_bytes, table_len, 0));
        }
        self->stage_dest_at = dest_at;
        if (staging && l >= self->gpu_layers && l + ring < to)
            KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_layer (self, l + ring));
    }
    return 0;
}

//  Make x_lm and d_rows_lm hold a layer-major slice of 'chunks' chunks
//  (at most KVT_MODEL_CUDA_LAYER_MAJOR_ROWS rows: h_rows_lm's size),
//  stream-ordered (no synchronize: see kvt_model_cuda_regrow). Returns 0 or
//  KVT_ECUDA.
int
kvt_model_cuda_layer_major_reserve (kvt_model_cuda_t *self, size_t chunks)
{
    if (chunks <= self->lm_chunks)
        return 0;
    if (self->x_lm)
        cudaFreeAsync (self->x_lm, self->stream);
    if (self->d_rows_lm)
        cudaFreeAsync (self->d_rows_lm, self->stream);
    self->x_lm = NULL;
    self->d_rows_lm = NULL;
    self->lm_chunks = 0;
    const size_t x_bytes = (size_t) KVT_MODEL_CUDA_CHUNK * self->shape.hidden * 2;
    int rc = kvt_model_cuda_check (cudaMallocAsync (&self->x_lm, chunks * x_bytes, self->stream),
                                   "layer-major residuals");
    if (rc == 0)
        rc = kvt_model_cuda_check (cudaMallocAsync ((void **) &self->d_rows_lm,
                                                    chunks * KVT_MODEL_CUDA_ROWS_COUNT
                                                    * sizeof (int32_t), self->stream),
                                   "layer-major indices");
    if (rc)
        return rc;
    self->lm_chunks = chunks;
    return 0;
}

//  --------------------------------------------------------------------------
//  Queue greedy tokens from rows first..first + count - 1 of the residual
//  stream: final norm, lm_head on 'gemm_rows' rows (1 after a prefill,
//  KVT_MODEL_CUDA_DECODE_ROWS in a decode step), argmax, and the copy of
//  the 'count' tokens into pinned 'tokens' (valid once the stream has
//  passed it).

int
kvt_model_cuda_sample_queue (kvt_model_cuda_t *self, int first, int count, int gemm_rows,
                             int32_t *tokens)
{
    const int hidden = self->shape.hidden;
    int rc;
    kvt_rmsnorm_args_t norm = { KVT_KDTYPE_BF16, (char *) self->x + (size_t) first * hidden * 2,
                                self->final_norm, self->xn, count, hidden, S_NORM_EPS };
    KVT_MODEL_CUDA_TRY (kvt_rmsnorm (&norm, self->stream));
    KVT_MODEL_CUDA_TRY (s_gemm (self, self->xn, self->lm_head, self->logits, gemm_rows,
                                self->shape.vocab, hidden, 0));
    kvt_argmax_args_t argmax = { KVT_KDTYPE_BF16, self->logits, self->d_argmax, count,
                                 self->shape.vocab };
    KVT_MODEL_CUDA_TRY (kvt_argmax (&argmax, self->stream));
    return kvt_model_cuda_check (cudaMemcpyAsync (tokens, self->d_argmax,
                                                  (size_t) count * sizeof (int32_t),
                                                  cudaMemcpyDeviceToHost, self->stream),
                                 "argmax");
}

#endif

//  --------------------------------------------------------------------------
//  Whether the GPU path can run 'shape' (both builds; no logging).

bool
kvt_model_cuda_supports (const kvt_model_shape_t *shape)
{
    return shape->layers > 0 && shape->heads > 0 && shape->kv_heads > 0
        && shape->head_dim == 128 && shape->hidden > 0 && shape->hidden % 8 == 0
        && shape->intermediate > 0 && shape->intermediate % 8 == 0 && shape->vocab > 0
        && shape->block_tokens > 0 && (shape->block_tokens & (shape->block_tokens - 1)) == 0
        && shape->heads % shape->kv_heads == 0;
}
