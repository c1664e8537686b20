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
    every prefill GEMM runs on exactly S_CHUNK rows (short chunks are
    padded; padded rows are zeroed at the start of a chunk and never
    read back), and with one algorithm each output row depends on its
    input row only. The prefill attention kernel computes each query row
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
    batch. Prefill runs one sequence per call, in S_CHUNK-row GEMMs, so a
    prompt may be cut into slices of any size.
    One stream and one cuBLAS handle per model. Steps (issue #3):
    kvt_model_cuda_step_launch queues a prefill slice and a decode step,
    the copy of their sampled tokens into a pinned host buffer, then a
    host function (cudaLaunchHostFunc) that adds 1 to the caller's
    eventfd, and returns; the caller's loop polls that eventfd and calls
    kvt_model_cuda_step_finish, which hands the tokens to the sequences.
    The thread never blocks on the GPU in between (staging copies come
    from pageable memory, staged by the call). kvt_model_cuda_seq_prefill
    and kvt_model_cuda_decode are a launch and a finish back to back, so
    they return after the stream drained. Not thread-safe: a model and
    its sequences belong to one thread.
@end
*/

#include "kvt_classes.h"

#ifdef KVT_WITH_CUDA

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include "kvt_layers.cuh"
#include "kvt_paged_attention.cuh"
#include "kvt_paged_prefill.cuh"
#include "kvt_model_ops.cuh"
#include "kvt_block_copy.cuh"

#define S_CHUNK       512           //  Rows of every prefill GEMM (padded)
#define S_ROPE_THETA  500000.0      //  Llama 3 RoPE base
#define S_NORM_EPS    1e-5f         //  RMSNorm epsilon
#define S_DECODE_ROWS KVT_MODEL_MAX_BATCH   //  Rows of every decode GEMM (padded)
//  Layer slices smaller than this stream with the copy kernel (one launch
//  gathers every block's slice), larger ones on the copy engines: the
//  same cut as migration's (kvt_migration_copy.c, tools/bench/RESULTS.md)
#define S_KERNEL_COPY_MAX_BYTES (64u << 10)

typedef struct {
    void *attn_norm;                //  [hidden]
    void *w_qkv;                    //  [q_dim + 2 x kv_dim, hidden] (out, in): Wq, Wk, Wv rows
    void *wo;                       //  [hidden, q_dim]
    void *mlp_norm;                 //  [hidden]
    void *w_gate_up;                //  [2 x intermediate, hidden]: gate rows, then up rows
    void *w_down;                   //  [hidden, intermediate]
} s_layer_t;

struct _kvt_model_cuda_t {
    kvt_model_shape_t shape;        //  Validated copy
    bool (*cancel_fn) (void *arg);  //  Asked between chunks: stop now?
    void *cancel_arg;               //  Its argument
    int q_dim;                      //  heads x head_dim
    int kv_dim;                     //  kv_heads x head_dim
    cudaStream_t stream;            //  Everything runs on this stream
    cudaStream_t copy_stream;       //  Streamed cached blocks arrive on this one
    cublasHandle_t cublas;          //  Bound to 'stream'
    void *embed;                    //  [vocab, hidden]
    void *final_norm;               //  [hidden]
    void *lm_head;                  //  [vocab, hidden]
    s_layer_t *layer;               //  [layers]
    float *inv_freq;                //  [head_dim / 2] device
    //  Activations, S_CHUNK rows each (device, bf16)
    void *x;                        //  Residual stream [CHUNK, hidden]
    void *xn;                       //  Normalised [CHUNK, hidden]
    void *qkv;                      //  [CHUNK, q_dim + 2 x kv_dim] fused projection
    void *q;                        //  [CHUNK, q_dim] rotated q
    void *att;                      //  [CHUNK, q_dim]
    void *gate_up;                  //  [CHUNK, 2 x intermediate]
    void *act;                      //  [CHUNK, intermediate]
    void *logits;                   //  [DECODE_ROWS, vocab]
    //  Per-chunk indices (device) and their host staging
    int32_t *d_rows;                //  [4 x CHUNK + 2 + DECODE_ROWS]: tokens, positions,
                                    //  dest block, dest token, q_start [2], seq_lens
    int32_t *h_rows;                //  Host copy of d_rows
    int32_t *d_argmax;              //  [DECODE_ROWS]
    int32_t *h_sampled;             //  Pinned [1 + DECODE_ROWS]: a prefill's first
                                    //  token, then one per decode row (D2H target)
    uint64_t steps;                 //  Decode steps run (stamps their sequences)
    //  The step in flight, from kvt_model_cuda_step_launch to _finish
    bool in_flight;                 //  A step was launched and not finished
    kvt_model_cuda_seq_t *step_prefill;     //  Its prefill sequence, or NULL
    bool step_first;                //  The prefill samples the first token
    int step_left;                  //  Prompt positions left after the slice
    kvt_model_cuda_seq_t *step_seqs [S_DECODE_ROWS];   //  Its decode rows (NULL: dropped)
    size_t step_count;              //  Entries in step_seqs
    int32_t *d_table;               //  Block table(s) (device)
    size_t table_cap;               //  Entries d_table and h_table hold
    int32_t *h_table;               //  Host staging of d_table
    void *workspace;                //  Decode split-KV scratch
    size_t workspace_bytes;         //  Its size
};

//  Offsets inside d_rows / h_rows
#define S_TOKENS(self)  ((self) + 0 * S_CHUNK)
#define S_POS(self)     ((self) + 1 * S_CHUNK)
#define S_DBLOCK(self)  ((self) + 2 * S_CHUNK)
#define S_DTOKEN(self)  ((self) + 3 * S_CHUNK)
#define S_QSTART(self)  ((self) + 4 * S_CHUNK)
#define S_SEQLEN(self)  ((self) + 4 * S_CHUNK + 2)
#define S_ROWS_COUNT    (4 * S_CHUNK + 2 + S_DECODE_ROWS)

//  One sequence on the device slab
struct _kvt_model_cuda_seq_t {
    kvt_model_cuda_t *model;        //  The model it was begun on
    uint32_t *tokens;               //  Copy of the prompt
    size_t token_count;             //  Prompt tokens
    void *slab;                     //  Block slab (device)
    size_t block_bytes;             //  Bytes between its blocks
    int32_t *table;                 //  [table_len] full blocks, then spares
    size_t table_len;               //  Blocks up to the last decoded token
    size_t max_new;                 //  Output tokens to produce
    uint32_t *out;                  //  Caller's output array (borrowed)
    size_t emitted;                 //  Output tokens written so far
    size_t pos;                     //  Next prompt position to compute
    uint64_t stamp;                 //  Last decode step that took it
    cudaEvent_t *layer_ready;       //  [layers] streamed slices of layer l landed, or NULL
    bool must_wait;                 //  Compute has not waited on layer_ready yet
    size_t streamed_blocks;         //  Cached blocks that arrive layer by layer
};

//  Log a failed CUDA call; return 0 or KVT_ECUDA.
static int
s_cuda (cudaError_t status, const char *what)
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
    if (s_cuda (cudaMalloc (&tensor, count * 2), "weights"))
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
//  seed, activations for S_CHUNK rows. NULL (logged) on a bad shape or
//  short device memory.

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
    self->layer = (s_layer_t *) kvt_zmalloc ((size_t) shape->layers * sizeof (s_layer_t));
    const size_t hidden = (size_t) shape->hidden, inter = (size_t) shape->intermediate;
    const size_t vocab = (size_t) shape->vocab;
    bool ok = s_cuda (cudaStreamCreateWithFlags (&self->stream, cudaStreamNonBlocking),
                      "stream") == 0
           && s_cuda (cudaStreamCreateWithFlags (&self->copy_stream, cudaStreamNonBlocking),
                      "copy stream") == 0;
    if (ok && cublasCreate (&self->cublas) != CUBLAS_STATUS_SUCCESS) {
        kvt_log_error ("kvt_model_cuda: cublasCreate failed");
        self->cublas = NULL;
        ok = false;
    }
    ok = ok && cublasSetStream (self->cublas, self->stream) == CUBLAS_STATUS_SUCCESS;
    if (ok) {
        self->embed = s_tensor_new (self, vocab * hidden, 0, 0.0f, sqrtf (3.0f));
        self->final_norm = s_tensor_new (self, hidden, 1, 1.0f, 0.1f);
        self->lm_head = s_tensor_new (self, vocab * hidden, 2, 0.0f,
                                      s_fan_in_scale (shape->hidden));
        ok = self->embed && self->final_norm && self->lm_head;
    }
    for (int l = 0; ok && l < shape->layers; l++) {
        s_layer_t *layer = &self->layer [l];
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
    const size_t rows = S_CHUNK;
    if (ok) {
        ok = s_cuda (cudaMalloc (&self->x, rows * hidden * 2), "activations") == 0
          && s_cuda (cudaMalloc (&self->xn, rows * hidden * 2), "activations") == 0
          && s_cuda (cudaMalloc (&self->qkv, rows * (self->q_dim + 2 * self->kv_dim) * 2),
                     "activations") == 0
          && s_cuda (cudaMalloc (&self->q, rows * self->q_dim * 2), "activations") == 0
          && s_cuda (cudaMalloc (&self->att, rows * self->q_dim * 2), "activations") == 0
          && s_cuda (cudaMalloc (&self->gate_up, rows * 2 * inter * 2), "activations") == 0
          && s_cuda (cudaMalloc (&self->act, rows * inter * 2), "activations") == 0
          && s_cuda (cudaMalloc (&self->logits, S_DECODE_ROWS * vocab * 2), "activations") == 0
          && s_cuda (cudaMalloc ((void **) &self->d_rows, S_ROWS_COUNT * sizeof (int32_t)),
                     "indices") == 0
          && s_cuda (cudaMalloc ((void **) &self->d_argmax, S_DECODE_ROWS * sizeof (int32_t)),
                     "indices") == 0
          && s_cuda (cudaMallocHost ((void **) &self->h_sampled,
                                     (1 + S_DECODE_ROWS) * sizeof (int32_t)), "sampled") == 0
          && s_cuda (cudaMalloc ((void **) &self->inv_freq,
                                 (size_t) shape->head_dim / 2 * sizeof (float)), "rope") == 0;
    }
    if (ok) {
        //  Padded rows start (and stay) finite
        void *zero [] = { self->x, self->xn, self->qkv, self->q, self->att, self->gate_up,
                          self->act };
        size_t bytes [] = { rows * hidden * 2, rows * hidden * 2,
                            rows * (self->q_dim + 2 * self->kv_dim) * 2, rows * self->q_dim * 2,
                            rows * self->q_dim * 2, rows * 2 * inter * 2, rows * inter * 2 };
        for (int k = 0; ok && k < 7; k++)
            ok = s_cuda (cudaMemsetAsync (zero [k], 0, bytes [k], self->stream), "memset") == 0;
        float *inv_freq = (float *) kvt_zmalloc ((size_t) shape->head_dim / 2 * sizeof (float));
        kvt_rope_inv_freq (inv_freq, shape->head_dim, S_ROPE_THETA);
        ok = ok && s_cuda (cudaMemcpy (self->inv_freq, inv_freq,
                                       (size_t) shape->head_dim / 2 * sizeof (float),
                                       cudaMemcpyHostToDevice), "rope") == 0;
        free (inv_freq);
        self->h_rows = (int32_t *) kvt_zmalloc (S_ROWS_COUNT * sizeof (int32_t));
        ok = ok && s_cuda (cudaStreamSynchronize (self->stream), "weights") == 0;
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
    for (int l = 0; self->layer && l < self->shape.layers; l++) {
        s_layer_t *layer = &self->layer [l];
        void *tensors [] = { layer->attn_norm, layer->w_qkv, layer->wo, layer->mlp_norm,
                             layer->w_gate_up, layer->w_down };
        for (int k = 0; k < 6; k++)
            if (tensors [k])
                cudaFree (tensors [k]);
    }
    void *buffers [] = { self->embed, self->final_norm, self->lm_head, self->inv_freq,
                         self->x, self->xn, self->qkv, self->q, self->att,
                         self->gate_up, self->act, self->logits, self->d_rows,
                         self->d_argmax, self->d_table, self->workspace };
    for (size_t k = 0; k < sizeof (buffers) / sizeof (buffers [0]); k++)
        if (buffers [k])
            cudaFree (buffers [k]);
    if (self->h_sampled)
        cudaFreeHost (self->h_sampled);
    if (self->cublas)
        cublasDestroy (self->cublas);
    if (self->stream)
        cudaStreamDestroy (self->stream);
    if (self->copy_stream)
        cudaStreamDestroy (self->copy_stream);
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

#define S_TRY(expr) do { rc = (expr); if (rc) return rc; } while (0)

//  Run 'rows' tokens (already staged in d_rows: tokens, positions, dest
//  block and token, q_start, seq_lens) through every layer. Prefill
//  (decode false: rows of one sequence, consecutive) runs GEMMs on
//  S_CHUNK rows and the paged prefill kernel over the table in d_table
//  ('table_len' entries, 'seq_len' tokens after this chunk). Decode (one
//  row per sequence) runs GEMMs on S_DECODE_ROWS rows and the paged decode
//  kernel over d_table [rows, table_len], with KV split at fixed
//  KVT_MODEL_DECODE_SPLIT-token boundaries ('seq_len' is then the longest
//  sequence; table rows must cover at least two splits and 'seq_len'
//  rounded up to a split). 'slab' is the block slab. 'layer_ready'
//  (NULL: none) has one event per layer: the stream waits on layer l's
//  before the first kernel that touches layer l's KV (streamed blocks).
static int
s_forward (kvt_model_cuda_t *self, int rows, bool decode, void *slab, size_t block_bytes,
           int table_len, int seq_len, const cudaEvent_t *layer_ready)
{
    const kvt_model_shape_t *shape = &self->shape;
    const int hidden = shape->hidden, inter = shape->intermediate;
    const int gemm_rows = decode? S_DECODE_ROWS: S_CHUNK;
    const int64_t head_bytes = (int64_t) shape->block_tokens * shape->head_dim * 2;
    int rc;
    if (rows < gemm_rows)
        S_TRY (s_cuda (cudaMemsetAsync ((char *) self->x + (size_t) rows * hidden * 2, 0,
                                        (size_t) (gemm_rows - rows) * hidden * 2, self->stream),
                       "memset"));
    S_TRY (kvt_model_embed (self->x, self->embed, S_TOKENS (self->d_rows), rows, hidden,
                            self->stream));
    for (int l = 0; l < shape->layers; l++) {
        const s_layer_t *layer = &self->layer [l];
        kvt_rmsnorm_args_t norm = { KVT_KDTYPE_BF16, self->x, layer->attn_norm, self->xn,
                                    rows, hidden, S_NORM_EPS };
        S_TRY (kvt_rmsnorm (&norm, self->stream));
        S_TRY (s_gemm (self, self->xn, layer->w_qkv, self->qkv, gemm_rows,
                       self->q_dim + 2 * self->kv_dim, hidden, 0));
        kvt_qkv_args_t qkv = {
            .qkv = self->qkv, .q = self->q, .positions = S_POS (self->d_rows),
            .inv_freq = self->inv_freq, .slab = slab, .block_bytes = (int64_t) block_bytes,
            .dest_block = S_DBLOCK (self->d_rows), .dest_token = S_DTOKEN (self->d_rows),
            .rows = rows, .layer = l, .heads = shape->heads, .kv_heads = shape->kv_heads,
            .head_dim = shape->head_dim, .block_tokens = shape->block_tokens };
        if (layer_ready)
            S_TRY (s_cuda (cudaStreamWaitEvent (self->stream, layer_ready [l], 0),
                           "wait for a streamed layer"));
        S_TRY (kvt_model_qkv (&qkv, self->stream));
        const char *k_base = (const char *) slab + (int64_t) (l * 2) * shape->kv_heads * head_bytes;
        const char *v_base = k_base + (int64_t) shape->kv_heads * head_bytes;
        if (decode) {
            //  Splits of exactly KVT_MODEL_DECODE_SPLIT tokens, at least two:
            //  the kernel cuts max_seq_len / splits, so pass a multiple
            int splits = (seq_len + KVT_MODEL_DECODE_SPLIT - 1) / KVT_MODEL_DECODE_SPLIT;
            if (splits < 2)
                splits = 2;
            kvt_paged_attention_args_t attn = {
                .dtype = KVT_KDTYPE_BF16, .q = self->q, .k = k_base, .v = v_base,
                .block_stride_bytes = (int64_t) block_bytes, .head_stride_bytes = head_bytes,
                .token_stride_bytes = shape->head_dim * 2, .block_table = self->d_table,
                .seq_lens = S_SEQLEN (self->d_rows), .out = self->att, .seqs = rows,
                .heads = shape->heads, .kv_heads = shape->kv_heads,
                .head_dim = shape->head_dim, .block_tokens = shape->block_tokens,
                .max_blocks_per_seq = table_len,
                .max_seq_len = splits * KVT_MODEL_DECODE_SPLIT,
                .scale = 1.0f / sqrtf ((float) shape->head_dim), .splits = splits };
            size_t need = kvt_paged_attention_workspace_bytes (&attn, splits);
            if (need > self->workspace_bytes) {
                if (self->workspace) {
                    cudaStreamSynchronize (self->stream);
                    cudaFree (self->workspace);
                    self->workspace = NULL;
                    self->workspace_bytes = 0;
                }
                S_TRY (s_cuda (cudaMalloc (&self->workspace, need), "workspace"));
                self->workspace_bytes = need;
            }
            attn.workspace = self->workspace;
            attn.workspace_bytes = self->workspace_bytes;
            S_TRY (kvt_paged_attention (&attn, self->stream));
        }
        else {
            kvt_paged_prefill_args_t attn = {
                .dtype = KVT_KDTYPE_BF16, .q = self->q, .q_start = S_QSTART (self->d_rows),
                .k = k_base, .v = v_base, .block_stride_bytes = (int64_t) block_bytes,
                .head_stride_bytes = head_bytes, .token_stride_bytes = shape->head_dim * 2,
                .block_table = self->d_table, .seq_lens = S_SEQLEN (self->d_rows),
                .out = self->att, .seqs = 1, .heads = shape->heads,
                .kv_heads = shape->kv_heads, .head_dim = shape->head_dim,
                .block_tokens = shape->block_tokens, .max_blocks_per_seq = table_len,
                .max_q_len = rows, .scale = 1.0f / sqrtf ((float) shape->head_dim) };
            S_TRY (kvt_paged_prefill (&attn, self->stream));
        }
        S_TRY (s_gemm (self, self->att, layer->wo, self->x, gemm_rows, hidden, self->q_dim, 1));
        norm.weight = layer->mlp_norm;
        S_TRY (kvt_rmsnorm (&norm, self->stream));
        S_TRY (s_gemm (self, self->xn, layer->w_gate_up, self->gate_up, gemm_rows, 2 * inter,
                       hidden, 0));
        kvt_swiglu_args_t swiglu = { KVT_KDTYPE_BF16, self->gate_up, self->act, rows, inter };
        S_TRY (kvt_swiglu (&swiglu, self->stream));
        S_TRY (s_gemm (self, self->act, layer->w_down, self->x, gemm_rows, hidden, inter, 1));
    }
    return 0;
}

//  Queue greedy tokens from rows first..first + count - 1 of the residual
//  stream: final norm, lm_head on 'gemm_rows' rows (1 after a prefill,
//  S_DECODE_ROWS in a decode step), argmax, and the copy of the 'count'
//  tokens into pinned 'tokens' (valid once the stream has passed it).
static int
s_sample_queue (kvt_model_cuda_t *self, int first, int count, int gemm_rows, int32_t *tokens)
{
    const int hidden = self->shape.hidden;
    int rc;
    kvt_rmsnorm_args_t norm = { KVT_KDTYPE_BF16, (char *) self->x + (size_t) first * hidden * 2,
                                self->final_norm, self->xn, count, hidden, S_NORM_EPS };
    S_TRY (kvt_rmsnorm (&norm, self->stream));
    S_TRY (s_gemm (self, self->xn, self->lm_head, self->logits, gemm_rows, self->shape.vocab,
                   hidden, 0));
    kvt_argmax_args_t argmax = { KVT_KDTYPE_BF16, self->logits, self->d_argmax, count,
                                 self->shape.vocab };
    S_TRY (kvt_argmax (&argmax, self->stream));
    return s_cuda (cudaMemcpyAsync (tokens, self->d_argmax, (size_t) count * sizeof (int32_t),
                                    cudaMemcpyDeviceToHost, self->stream), "argmax");
}

//  Make d_table and h_table hold 'entries'. Returns 0 or -ENOMEM.
static int
s_table_reserve (kvt_model_cuda_t *self, size_t entries)
{
    if (entries <= self->table_cap)
        return 0;
    if (self->d_table) {
        cudaStreamSynchronize (self->stream);
        cudaFree (self->d_table);
        self->d_table = NULL;
        self->table_cap = 0;
    }
    if (s_cuda (cudaMalloc ((void **) &self->d_table, entries * sizeof (int32_t)), "table"))
        return -ENOMEM;
    self->table_cap = entries;
    free (self->h_table);
    self->h_table = (int32_t *) kvt_zmalloc (entries * sizeof (int32_t));
    return 0;
}

//  Stage the prefill of 'rows' prompt tokens of 'seq' from its position
//  in h_rows, with its block table, and copy both up.
static int
s_stage_prefill (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, int rows)
{
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    int32_t *h = self->h_rows;
    memset (h, 0, S_ROWS_COUNT * sizeof (int32_t));
    for (int r = 0; r < rows; r++) {
        size_t pos = seq->pos + (size_t) r;
        S_TOKENS (h) [r] = (int32_t) seq->tokens [pos];
        S_POS (h) [r] = (int32_t) pos;
        S_DBLOCK (h) [r] = seq->table [pos / block_tokens];
        S_DTOKEN (h) [r] = (int32_t) (pos % block_tokens);
    }
    S_QSTART (h) [0] = 0;
    S_QSTART (h) [1] = rows;
    S_SEQLEN (h) [0] = (int32_t) (seq->pos + (size_t) rows);
    int rc = s_table_reserve (self, seq->table_len);
    if (rc)
        return rc;
    //  Pageable sources: each call returns once the bytes are staged
    S_TRY (s_cuda (cudaMemcpyAsync (self->d_table, seq->table, seq->table_len * sizeof (int32_t),
                                    cudaMemcpyHostToDevice, self->stream), "table"));
    return s_cuda (cudaMemcpyAsync (self->d_rows, h, S_ROWS_COUNT * sizeof (int32_t),
                                    cudaMemcpyHostToDevice, self->stream), "stage");
}

//  --------------------------------------------------------------------------
//  Queue the copies of a sequence's streamed cached blocks on the copy
//  stream: copy k moves host 'src' [k] into slab slot 'dst' [k], one
//  launch per layer (layer l's slice of a block is contiguous), each
//  followed by layer l's event. Host addresses that lie whole model
//  blocks apart (an arena's slots) go in one gather per layer; others
//  (never in the runtime) one cudaMemcpyAsync per block and layer. On
//  the copy engines, where source and destination slots both run in
//  order (a prefix staged or demoted together), a run's slices of one
//  layer are one strided cudaMemcpy2DAsync (one descriptor, full PCIe
//  rate) instead of one copy per block. Returns 0 once queued, or an error.

static int
s_stream_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, const void *const *src,
                const int64_t *dst, size_t count)
{
    const int layers = self->shape.layers;
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (self);
    const size_t model_bytes = kvt_block_bytes (&geometry);
    const size_t slice = model_bytes / (size_t) layers;
    int rc = 0;
    seq->layer_ready = (cudaEvent_t *) kvt_zmalloc ((size_t) layers * sizeof (cudaEvent_t));
    for (int l = 0; rc == 0 && l < layers; l++)
        rc = s_cuda (cudaEventCreateWithFlags (&seq->layer_ready [l], cudaEventDisableTiming),
                     "layer event");
    if (rc)
        return rc;
    //  Sources as slots of model_bytes from the lowest address
    const char *base = (const char *) src [0];
    for (size_t k = 1; k < count; k++)
        if ((const char *) src [k] < base)
            base = (const char *) src [k];
    int64_t *slots = (int64_t *) kvt_zmalloc (2 * count * sizeof (int64_t));
    bool strided = (uintptr_t) base % 16 == 0;
    for (size_t k = 0; k < count; k++) {
        size_t offset = (size_t) ((const char *) src [k] - base);
        strided = strided && offset % model_bytes == 0;
        slots [k] = (int64_t) (offset / model_bytes);
        slots [count + k] = dst [k];
    }
    //  Runs of consecutive source and destination slots: [start, end)
    size_t *run_start = (size_t *) kvt_zmalloc ((count + 1) * sizeof (size_t));
    size_t runs = 0;
    for (size_t k = 0; k < count; k++)
        if (k == 0 || slots [k] != slots [k - 1] + 1
        ||  slots [count + k] != slots [count + k - 1] + 1)
            run_start [runs++] = k;
    run_start [runs] = count;
    const bool by_runs = strided && slice >= S_KERNEL_COPY_MAX_BYTES && runs * 4 <= count;
    int64_t *d_slots = NULL;
    if (strided && slice < S_KERNEL_COPY_MAX_BYTES) {
        //  The kernel reads its slot lists from device memory, allocated
        //  and freed in stream order; the pageable source is staged by the call
        rc = s_cuda (cudaMallocAsync ((void **) &d_slots, 2 * count * sizeof (int64_t),
                                      self->copy_stream), "stream slots");
        if (rc == 0)
            rc = s_cuda (cudaMemcpyAsync (d_slots, slots, 2 * count * sizeof (int64_t),
                                          cudaMemcpyHostToDevice, self->copy_stream),
                         "stream slots");
    }
    for (int l = 0; rc == 0 && l < layers; l++) {
        const size_t at = (size_t) l * slice;
        kvt_block_copy_args_t args = {
            .dst = (char *) seq->slab + at, .src = base + at,
            .dst_slots = slots + count, .src_slots = slots,
            .dst_slot_bytes = (int64_t) seq->block_bytes, .src_slot_bytes = (int64_t) model_bytes,
            .block_bytes = (int64_t) slice, .count = (int) count };
        if (!strided)
            for (size_t k = 0; rc == 0 && k < count; k++)
                rc = s_cuda (cudaMemcpyAsync ((char *) seq->slab + (size_t) dst [k]
                                              * seq->block_bytes + at,
                                              (const char *) src [k] + at, slice,
                                              cudaMemcpyHostToDevice, self->copy_stream),
                             "stream a layer");
        else
        if (d_slots) {
            args.src_slots = d_slots;
            args.dst_slots = d_slots + count;
            rc = kvt_block_copy (&args, self->copy_stream);
        }
        else
        if (by_runs)
            for (size_t r = 0; rc == 0 && r < runs; r++) {
                const size_t k = run_start [r];
                rc = s_cuda (cudaMemcpy2DAsync ((char *) args.dst + slots [count + k]
                                                * seq->block_bytes, seq->block_bytes,
                                                (const char *) args.src + slots [k]
                                                * model_bytes, model_bytes, slice,
                                                run_start [r + 1] - k, cudaMemcpyDefault,
                                                self->copy_stream), "stream a layer");
            }
        else
            rc = kvt_block_copy_ce (&args, self->copy_stream);
        if (rc == 0)
            rc = s_cuda (cudaEventRecord (seq->layer_ready [l], self->copy_stream),
                         "layer event");
    }
    if (d_slots)
        (void) s_cuda (cudaFreeAsync (d_slots, self->copy_stream), "stream slots");
    free (run_start);
    free (slots);
    seq->must_wait = rc == 0;
    return rc;
}

//  --------------------------------------------------------------------------
//  Begin a sequence over the device slab (see kvt_model.h).

int
kvt_model_cuda_seq_begin (kvt_model_cuda_t *self, const uint32_t *tokens, size_t token_count,
                          void *slab, size_t block_bytes, const uint64_t *slots,
                          size_t cached_blocks, const void *const *host_src,
                          const uint64_t *spare, size_t spare_count,
                          size_t max_new_tokens, uint32_t *out_tokens,
                          kvt_model_cuda_seq_t **seq_p)
{
    assert (self);
    assert (seq_p);
    *seq_p = NULL;
    const kvt_model_shape_t *shape = &self->shape;
    const size_t block_tokens = (size_t) shape->block_tokens;
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (self);
    if (!tokens || token_count == 0 || !slab || block_bytes < kvt_block_bytes (&geometry)
    ||  block_bytes % 16 || (max_new_tokens > 0 && !out_tokens)
    ||  token_count > INT32_MAX || max_new_tokens > INT32_MAX - token_count)
        return -EINVAL;
    for (size_t i = 0; i < token_count; i++)
        if (tokens [i] >= (uint32_t) shape->vocab)
            return -EINVAL;
    const size_t full_blocks = token_count / block_tokens;
    if (cached_blocks > full_blocks || (full_blocks > 0 && !slots))
        return -EINVAL;
    //  Table: the full blocks, then spares for the tail and decoded tokens;
    //  spare [0] is kept for a copy of a cached last block
    const size_t end = token_count + max_new_tokens;
    const size_t table_len = (end + block_tokens - 1) / block_tokens;
    if (!spare || table_len - full_blocks + 1 > spare_count)
        return -EINVAL;
    for (size_t b = 0; b < full_blocks; b++)
        if (slots [b] > INT32_MAX)
            return -EINVAL;
    for (size_t k = 0; k < table_len - full_blocks + 1; k++)
        if (spare [k] > INT32_MAX)
            return -EINVAL;
    kvt_model_cuda_seq_t *seq =
        (kvt_model_cuda_seq_t *) kvt_zmalloc (sizeof (kvt_model_cuda_seq_t));
    seq->model = self;
    seq->tokens = (uint32_t *) kvt_zmalloc (token_count * sizeof (uint32_t));
    memcpy (seq->tokens, tokens, token_count * sizeof (uint32_t));
    seq->token_count = token_count;
    seq->slab = slab;
    seq->block_bytes = block_bytes;
    seq->table_len = table_len;
    seq->table = (int32_t *) kvt_zmalloc ((table_len + 1) * sizeof (int32_t));
    for (size_t b = 0; b < table_len; b++)
        seq->table [b] = (int32_t) (b < full_blocks? slots [b]: spare [1 + b - full_blocks]);
    seq->max_new = max_new_tokens;
    seq->out = out_tokens;
    seq->pos = cached_blocks * block_tokens;
    //  Streamed cached blocks, plus the spare copy of a streamed last block
    const void **stream_src = (const void **) kvt_zmalloc ((cached_blocks + 2) * sizeof (void *));
    int64_t *stream_dst = (int64_t *) kvt_zmalloc ((cached_blocks + 2) * sizeof (int64_t));
    size_t streams = 0;
    for (size_t b = 0; host_src && b < cached_blocks; b++)
        if (host_src [b]) {
            stream_src [streams] = host_src [b];
            stream_dst [streams++] = (int64_t) slots [b];
        }
    seq->streamed_blocks = streams;
    int rc = 0;
    if (seq->pos >= token_count) {
        //  All cached: recompute the last prompt token into a copy of its block
        seq->pos = token_count - 1;
        size_t last = seq->pos / block_tokens;
        if (host_src && host_src [last]) {
            stream_src [streams] = host_src [last];
            stream_dst [streams++] = (int64_t) spare [0];
        }
        else
            rc = s_cuda (cudaMemcpyAsync ((char *) slab + spare [0] * block_bytes,
                                          (char *) slab + slots [last] * block_bytes,
                                          block_bytes, cudaMemcpyDeviceToDevice, self->stream),
                         "block copy");
        seq->table [last] = (int32_t) spare [0];
    }
    if (rc == 0 && streams > 0)
        rc = s_stream_queue (self, seq, stream_src, stream_dst, streams);
    free (stream_dst);
    free (stream_src);
    if (rc) {
        kvt_model_cuda_seq_destroy (&seq);
        return rc;
    }
    *seq_p = seq;
    return 0;
}

//  --------------------------------------------------------------------------
//  Queue a prefill slice of up to 'max_tokens' positions (0: all) of 'seq'
//  in S_CHUNK-row chunks; queue the first token's sampling into
//  h_sampled [0] when the prompt is done. Advances seq->pos (what is
//  queued), not seq->emitted (kvt_model_cuda_step_finish does).

static int
s_prefill_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, size_t max_tokens)
{
    if (max_tokens == 0)
        max_tokens = SIZE_MAX;
    int rc;
    while (seq->pos < seq->token_count && max_tokens > 0) {
        if (self->cancel_fn && self->cancel_fn (self->cancel_arg))
            return -ECANCELED;
        size_t rows = seq->token_count - seq->pos;
        if (rows > S_CHUNK)
            rows = S_CHUNK;
        if (rows > max_tokens)
            rows = max_tokens;
        S_TRY (s_stage_prefill (self, seq, (int) rows));
        S_TRY (s_forward (self, (int) rows, false, seq->slab, seq->block_bytes,
                          (int) seq->table_len, (int) (seq->pos + rows),
                          seq->must_wait? seq->layer_ready: NULL));
        seq->must_wait = false;     //  Later work on the stream comes after the waits
        seq->pos += rows;
        max_tokens -= rows;
        if (seq->pos == seq->token_count && seq->max_new > 0) {
            S_TRY (s_sample_queue (self, (int) rows - 1, 1, 1, self->h_sampled));
            self->step_first = true;
        }
    }
    size_t left = seq->token_count - seq->pos;
    self->step_left = left < INT_MAX? (int) left: INT_MAX;
    return 0;
}

//  Queue one decode step over 'seq_count' checked sequences; the tokens
//  land in h_sampled [1 ..].
static int
s_decode_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs, size_t seq_count)
{
    size_t table_len = 1, longest = 1;
    for (size_t s = 0; s < seq_count; s++) {
        const kvt_model_cuda_seq_t *seq = seqs [s];
        table_len = seq->table_len > table_len? seq->table_len: table_len;
        size_t len = seq->token_count + seq->emitted;
        longest = len > longest? len: longest;
    }
    //  Rows of the table cover the split span s_forward asks the kernel
    //  for (entries past a sequence's blocks are never read)
    int splits = (int) ((longest + KVT_MODEL_DECODE_SPLIT - 1) / KVT_MODEL_DECODE_SPLIT);
    size_t span = (size_t) (splits < 2? 2: splits) * KVT_MODEL_DECODE_SPLIT;
    size_t span_blocks = (span + (size_t) self->shape.block_tokens - 1)
                       / (size_t) self->shape.block_tokens;
    table_len = span_blocks > table_len? span_blocks: table_len;
    int rc = s_table_reserve (self, seq_count * table_len);
    if (rc)
        return rc;
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    int32_t *h = self->h_rows;
    memset (h, 0, S_ROWS_COUNT * sizeof (int32_t));
    for (size_t s = 0; s < seq_count; s++) {
        const kvt_model_cuda_seq_t *seq = seqs [s];
        size_t pos = seq->token_count + seq->emitted - 1;
        S_TOKENS (h) [s] = (int32_t) seq->out [seq->emitted - 1];
        S_POS (h) [s] = (int32_t) pos;
        S_DBLOCK (h) [s] = seq->table [pos / block_tokens];
        S_DTOKEN (h) [s] = (int32_t) (pos % block_tokens);
        S_SEQLEN (h) [s] = (int32_t) (pos + 1);
        int32_t *row = self->h_table + s * table_len;
        memcpy (row, seq->table, seq->table_len * sizeof (int32_t));
        for (size_t b = seq->table_len; b < table_len; b++)
            row [b] = -1;
    }
    //  Pageable sources: each call returns once the bytes are staged
    S_TRY (s_cuda (cudaMemcpyAsync (self->d_table, self->h_table,
                                    seq_count * table_len * sizeof (int32_t),
                                    cudaMemcpyHostToDevice, self->stream), "table"));
    S_TRY (s_cuda (cudaMemcpyAsync (self->d_rows, h, S_ROWS_COUNT * sizeof (int32_t),
                                    cudaMemcpyHostToDevice, self->stream), "stage"));
    S_TRY (s_forward (self, (int) seq_count, true, seqs [0]->slab, seqs [0]->block_bytes,
                      (int) table_len, (int) longest, NULL));
    return s_sample_queue (self, 0, (int) seq_count, S_DECODE_ROWS, self->h_sampled + 1);
}

//  CUDA's host function after a step: add 1 to the caller's eventfd. Runs
//  on a CUDA thread, so it makes no CUDA call and touches nothing of ours.
static void CUDART_CB
s_step_signal (void *fd_ptr)
{
    uint64_t one = 1;
    if (write ((int) (intptr_t) fd_ptr, &one, sizeof (one)) != sizeof (one))
        kvt_log_error ("kvt_model_cuda: cannot signal a finished step: %s", strerror (errno));
}

//  --------------------------------------------------------------------------
//  Queue one step (see kvt_model.h): a prefill slice, a decode step, the
//  copy of their sampled tokens, then the eventfd signal.

int
kvt_model_cuda_step_launch (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *prefill,
                            size_t max_tokens, kvt_model_cuda_seq_t *const *seqs,
                            size_t seq_count, int event_fd)
{
    assert (self);
    if (self->in_flight)
        return -EBUSY;
    if ((seq_count > 0 && !seqs) || seq_count > S_DECODE_ROWS
    ||  (prefill && prefill->model != self))
        return -EINVAL;
    //  Check every decode row before anything is queued
    const uint64_t stamp = ++self->steps;
    for (size_t s = 0; s < seq_count; s++) {
        kvt_model_cuda_seq_t *seq = seqs [s];
        if (!seq || seq->model != self || !kvt_model_cuda_seq_decoding (seq)
        ||  seq->stamp == stamp || seq->slab != seqs [0]->slab
        ||  seq->block_bytes != seqs [0]->block_bytes || seq == prefill)
            return -EINVAL;         //  Not ready, done, twice, or another slab
        seq->stamp = stamp;
    }
    self->step_first = false;
    self->step_left = 0;
    int rc = 0;
    if (prefill)
        rc = s_prefill_queue (self, prefill, max_tokens);
    if (rc == 0 && seq_count > 0)
        rc = s_decode_queue (self, seqs, seq_count);
    if (rc == 0 && event_fd >= 0
    &&  s_cuda (cudaLaunchHostFunc (self->stream, s_step_signal, (void *) (intptr_t) event_fd),
                "step signal")) {
        //  The step still runs: wait for it here and signal ourselves
        cudaStreamSynchronize (self->stream);
        s_step_signal ((void *) (intptr_t) event_fd);
    }
    if (rc) {
        //  Nothing stays in flight; the step's sequences are unusable
        cudaStreamSynchronize (self->stream);
        return rc;
    }
    self->in_flight = true;
    self->step_prefill = prefill;
    self->step_count = seq_count;
    for (size_t s = 0; s < seq_count; s++)
        self->step_seqs [s] = seqs [s];
    return 0;
}

//  --------------------------------------------------------------------------
//  Finish the step in flight: wait for the stream (at once when the
//  signal came), hand the sampled tokens to their sequences.

int
kvt_model_cuda_step_finish (kvt_model_cuda_t *self)
{
    assert (self);
    if (!self->in_flight)
        return -EINVAL;
    self->in_flight = false;
    int rc = s_cuda (cudaStreamSynchronize (self->stream), "step");
    if (rc)
        return rc;
    kvt_model_cuda_seq_t *prefill = self->step_prefill;
    if (prefill && self->step_first) {
        prefill->out [0] = (uint32_t) self->h_sampled [0];
        prefill->emitted = 1;
    }
    for (size_t s = 0; s < self->step_count; s++) {
        kvt_model_cuda_seq_t *seq = self->step_seqs [s];
        if (seq)
            seq->out [seq->emitted++] = (uint32_t) self->h_sampled [1 + s];
    }
    self->step_prefill = NULL;
    self->step_count = 0;
    return prefill? self->step_left: 0;
}

//  True between kvt_model_cuda_step_launch and kvt_model_cuda_step_finish.
bool
kvt_model_cuda_step_busy (const kvt_model_cuda_t *self)
{
    assert (self);
    return self->in_flight;
}

//  --------------------------------------------------------------------------
//  Prefill, waiting for the stream: a step of a prefill slice alone.

int
kvt_model_cuda_seq_prefill (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, size_t max_tokens)
{
    assert (self);
    assert (seq && seq->model == self);
    int rc = kvt_model_cuda_step_launch (self, seq, max_tokens, NULL, 0, -1);
    return rc? rc: kvt_model_cuda_step_finish (self);
}

//  --------------------------------------------------------------------------
//  One decode step over up to S_DECODE_ROWS sequences, waiting for the
//  stream: a step of a decode alone.

int
kvt_model_cuda_decode (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs,
                       size_t seq_count)
{
    assert (self);
    if (seq_count == 0)
        return 0;
    if (!seqs)
        return -EINVAL;
    int rc = kvt_model_cuda_step_launch (self, NULL, 0, seqs, seq_count, -1);
    if (rc == 0)
        rc = kvt_model_cuda_step_finish (self);
    return rc < 0? rc: 0;
}

//  Output tokens written so far.
size_t
kvt_model_cuda_seq_emitted (const kvt_model_cuda_seq_t *seq)
{
    assert (seq);
    return seq->emitted;
}

//  Prefill done and tokens still owed.
bool
kvt_model_cuda_seq_decoding (const kvt_model_cuda_seq_t *seq)
{
    assert (seq);
    return seq->pos == seq->token_count && seq->emitted > 0 && seq->emitted < seq->max_new;
}

//  Destroy once the stream has drained; NULL-safe, nulls the caller's pointer.
void
kvt_model_cuda_seq_destroy (kvt_model_cuda_seq_t **seq_p)
{
    assert (seq_p);
    kvt_model_cuda_seq_t *seq = *seq_p;
    if (seq) {
        kvt_model_cuda_t *model = seq->model;
        cudaStreamSynchronize (model->stream);
        //  A step in flight no longer hands it tokens
        if (model->step_prefill == seq)
            model->step_prefill = NULL;
        for (size_t s = 0; s < model->step_count; s++)
            if (model->step_seqs [s] == seq)
                model->step_seqs [s] = NULL;
        if (seq->layer_ready) {
            //  Its host copies may be freed once we return
            cudaStreamSynchronize (seq->model->copy_stream);
            for (int l = 0; l < seq->model->shape.layers; l++)
                if (seq->layer_ready [l])
                    cudaEventDestroy (seq->layer_ready [l]);
            free (seq->layer_ready);
        }
        free (seq->table);
        free (seq->tokens);
        free (seq);
        *seq_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Run one request over the device slab (see kvt_model.h): one sequence,
//  prefilled whole, then decoded alone. Returns after the stream drained.

int
kvt_model_cuda_generate (kvt_model_cuda_t *self, const uint32_t *tokens, size_t token_count,
                         void *slab, size_t block_bytes, const uint64_t *slots,
                         size_t cached_blocks, const uint64_t *spare, size_t spare_count,
                         size_t max_new_tokens, uint32_t *out_tokens, int64_t *ttft_us)
{
    assert (self);
    const int64_t start_us = kvt_now_us ();
    kvt_model_cuda_seq_t *seq;
    int rc = kvt_model_cuda_seq_begin (self, tokens, token_count, slab, block_bytes, slots,
                                       cached_blocks, NULL, spare, spare_count, max_new_tokens,
                                       out_tokens, &seq);
    if (rc)
        return rc;
    rc = kvt_model_cuda_seq_prefill (self, seq, 0);
    if (rc == 0 && ttft_us)
        *ttft_us = kvt_now_us () - start_us;
    while (rc == 0 && kvt_model_cuda_seq_decoding (seq)) {
        if (self->cancel_fn && self->cancel_fn (self->cancel_arg))
            rc = -ECANCELED;
        else
            rc = kvt_model_cuda_decode (self, &seq, 1);
    }
    kvt_model_cuda_seq_destroy (&seq);
    return rc < 0? rc: 0;
}

//  --------------------------------------------------------------------------
//  Selftest: skips without a device. The contract on a small shape: the
//  same tokens and byte-identical blocks with 0, some and all blocks cached.

int
kvt_model_cuda_test (bool verbose)
{
    int devices = 0;
    if (cudaGetDeviceCount (&devices) != cudaSuccess || devices == 0) {
        if (verbose)
            printf ("kvt_model_cuda: no CUDA device, skipped\n");
        return 77;
    }
    kvt_model_shape_t shape = { .layers = 2, .heads = 8, .kv_heads = 2, .head_dim = 128,
                                .hidden = 1024, .intermediate = 2816, .vocab = 1000,
                                .block_tokens = 16, .seed = 7 };
    assert (kvt_model_cuda_new (&(kvt_model_shape_t) { .layers = 1, .heads = 3, .kv_heads = 2,
        .head_dim = 128, .hidden = 64, .intermediate = 64, .vocab = 8,
        .block_tokens = 16 }) == NULL);
    kvt_model_cuda_t *model = kvt_model_cuda_new (&shape);
    assert (model);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    const size_t block_bytes = kvt_block_bytes (&geometry);
    //  A prompt crossing a chunk boundary: 37 full blocks and a tail of 5
    //  Decode crosses from the tail block into the next spare
    const size_t count = 37 * 16 + 5, full = count / 16, max_new = 20;
    const size_t spare_count = KVT_MODEL_CUDA_SPARE_BLOCKS (16, max_new);
    //  Slab: run 0's blocks, run 1's blocks, spares
    void *slab = NULL;
    assert (cudaMalloc (&slab, (2 * full + spare_count) * block_bytes) == cudaSuccess);
    uint64_t *slots = (uint64_t *) kvt_zmalloc (2 * full * sizeof (uint64_t));
    uint64_t *spare = (uint64_t *) kvt_zmalloc (spare_count * sizeof (uint64_t));
    for (size_t k = 0; k < 2 * full; k++)
        slots [k] = k;
    for (size_t k = 0; k < spare_count; k++)
        spare [k] = 2 * full + k;
    uint32_t *tokens = (uint32_t *) kvt_zmalloc (count * sizeof (uint32_t));
    uint64_t state = 42;
    for (size_t k = 0; k < count; k++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens [k] = (uint32_t) ((state >> 33) % (uint64_t) shape.vocab);
    }
    uint32_t first [32], again [32];
    assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, slots, 0,
                                     spare, spare_count, max_new, first, NULL) == 0);
    uint8_t *reference = (uint8_t *) malloc (full * block_bytes);
    uint8_t *view = (uint8_t *) malloc (full * block_bytes);
    assert (cudaMemcpy (reference, slab, full * block_bytes, cudaMemcpyDeviceToHost)
            == cudaSuccess);
    //  Cached prefixes of 0 (fresh), 1, 31 (inside chunk 2) and all blocks:
    //  run 1 gets run 0's first blocks, then computes into its own slots
    const size_t cached [] = { 1, 31, 32, full };
    for (size_t c = 0; c < 4; c++) {
        assert (cudaMemset ((char *) slab + full * block_bytes, 0xee, full * block_bytes)
                == cudaSuccess);
        uint64_t *table = slots + full;
        for (size_t b = 0; b < cached [c]; b++)
            table [b] = b;          //  Cached: run 0's slot
        for (size_t b = cached [c]; b < full; b++)
            table [b] = full + b;
        int64_t ttft = 0;
        assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, table,
                                         cached [c], spare, spare_count, max_new, again,
                                         &ttft) == 0);
        if (verbose)
            printf ("kvt_model_cuda: %zu cached blocks, ttft %" PRId64 " us\n", cached [c], ttft);
        assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
        for (size_t b = cached [c]; b < full; b++) {
            assert (cudaMemcpy (view, (char *) slab + table [b] * block_bytes, block_bytes,
                                cudaMemcpyDeviceToHost) == cudaSuccess);
            assert (memcmp (view, reference + b * block_bytes, block_bytes) == 0);
        }
        for (size_t b = cached [c]; b < full; b++)
            table [b] = full + b;
    }
    //  Cached blocks were never written
    assert (cudaMemcpy (view, slab, full * block_bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    assert (memcmp (view, reference, full * block_bytes) == 0);
    //  A prompt of whole blocks, all cached: its last token is recomputed
    //  into a spare copy of the last block, with the same output
    const size_t whole = 16 * 16;
    assert (kvt_model_cuda_generate (model, tokens, whole, slab, block_bytes, slots, 0,
                                     spare, spare_count, max_new, first, NULL) == 0);
    assert (cudaMemcpy (reference, slab, 16 * block_bytes, cudaMemcpyDeviceToHost)
            == cudaSuccess);
    assert (kvt_model_cuda_generate (model, tokens, whole, slab, block_bytes, slots, 16,
                                     spare, spare_count, max_new, again, NULL) == 0);
    assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
    assert (cudaMemcpy (view, slab, 16 * block_bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    assert (memcmp (view, reference, 16 * block_bytes) == 0);
    //  Streamed: cached blocks come from pinned host copies layer by layer
    //  (16 KiB slices: the copy kernel), every other one or all of them,
    //  into run 1's slots; same tokens, and the slots end holding the copies
    uint8_t *host = NULL;
    assert (cudaMallocHost ((void **) &host, full * block_bytes) == cudaSuccess);
    memcpy (host, reference, 16 * block_bytes);     //  The whole-block prompt's KV
    const void **host_src = (const void **) kvt_zmalloc (full * sizeof (void *));
    for (int mode = 0; mode < 2; mode++) {
        uint64_t *table = slots + full;
        for (size_t b = 0; b < 16; b++) {
            table [b] = full + b;
            host_src [b] = mode == 1 || b % 2? host + b * block_bytes: NULL;
            if (!host_src [b])      //  In place already
                assert (cudaMemcpy ((char *) slab + table [b] * block_bytes,
                                    host + b * block_bytes, block_bytes,
                                    cudaMemcpyHostToDevice) == cudaSuccess);
            else
                assert (cudaMemset ((char *) slab + table [b] * block_bytes, 0xee,
                                    block_bytes) == cudaSuccess);
        }
        //  Some cached (prefill of the rest), then all cached
        const size_t cached_now = mode == 0? 11: 16;
        kvt_model_cuda_seq_t *seq = NULL;
        assert (kvt_model_cuda_seq_begin (model, tokens, whole, slab, block_bytes, table,
                                          cached_now, host_src, spare, spare_count, max_new,
                                          again, &seq) == 0);
        assert (kvt_model_cuda_seq_prefill (model, seq, 0) == 0);
        while (kvt_model_cuda_seq_decoding (seq))
            assert (kvt_model_cuda_decode (model, &seq, 1) == 0);
        kvt_model_cuda_seq_destroy (&seq);
        assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
        assert (cudaMemcpy (view, (char *) slab + full * block_bytes, 16 * block_bytes,
                            cudaMemcpyDeviceToHost) == cudaSuccess);
        assert (memcmp (view, reference, 16 * block_bytes) == 0);
    }
    free (host_src);
    cudaFreeHost (host);
    //  Bad input
    assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, slots, full + 1,
                                     spare, spare_count, max_new, again, NULL) == -EINVAL);
    assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, slots, 0,
                                     spare, 1, max_new, again, NULL) == -EINVAL);
    free (view);
    free (reference);
    free (tokens);
    free (spare);
    free (slots);
    cudaFree (slab);
    kvt_model_cuda_destroy (&model);
    assert (model == NULL);
    return 0;
}

#else

//  CPU-only build: the GPU model does not exist; its selftest skips.
int
kvt_model_cuda_test (bool verbose)
{
    (void) verbose;
    return 77;
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
