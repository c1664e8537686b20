/*  =========================================================================
    kvt_model_cuda_int - what the GPU model's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The GPU model (kvt_model.h) is one class in several files:
    kvt_model_cuda.c (weights drawn on the device, the model's life, the
    forward pass of a chunk of rows through every layer, sampling; and
    kvt_model_cuda_supports, in both builds), kvt_model_cuda_seq.c (the
    sequence API: begin, with cached blocks streamed in layer by layer;
    steps of a prefill slice and a batched decode, launched and finished;
    kvt_model_cuda_generate) and kvt_model_cuda_test.c (the selftest, a
    skip in CPU builds); kvt_model_cuda_graph.c replays decode steps as
    CUDA graphs; kvt_model_cuda_layer_major.c runs the prefill of a run
    whose layers stream in layer-major. This header is for those files
    only; what it
    holds exists in CUDA builds only.
@end
*/

#ifndef KVT_MODEL_CUDA_INT_H_INCLUDED
#define KVT_MODEL_CUDA_INT_H_INCLUDED

#include "kvt_classes.h"

#ifdef KVT_WITH_CUDA

#include <cuda_runtime.h>
#include <cublas_v2.h>

#define KVT_MODEL_CUDA_CHUNK        512     //  Rows of every prefill GEMM (padded)
#define KVT_MODEL_CUDA_DECODE_ROWS  KVT_MODEL_MAX_BATCH     //  Rows of every decode GEMM
                                                            //  (padded)
#define KVT_MODEL_CUDA_STAGE_RING   8       //  Most host-held layers staged at once in a
                                            //  decode step (copies run up to 7 ahead)
#define KVT_MODEL_CUDA_STAGE_BYTES  (256u << 20)    //  The ring's size, unless that leaves
                                                    //  it under 2 layers (then 2)
#define KVT_MODEL_CUDA_STAGE_MAX_BYTES (1ull << 30) //  A step whose 2-layer ring would pass
                                                    //  this reads the shard in place
#define KVT_MODEL_CUDA_STAGE_GRAPH_BYTES (512u << 20)   //  Most bytes of a graph's ring
                                                        //  (every host-held layer)
#define KVT_MODEL_CUDA_STAGE_KERNEL_RUNS 8  //  A step whose staged slots fall in more
                                            //  runs copies each layer by kernel
#define KVT_MODEL_CUDA_STAGE_CTAS   16      //  CTAs of that copy kernel
#define KVT_MODEL_CUDA_LAYER_MAJOR_ROWS 16384   //  Most rows of one layer-major slice
                                                //  (a gated run's first prefill slice;
                                                //  a multiple of KVT_MODEL_CUDA_CHUNK)

//  --------------------------------------------------------------------------
//  Structure of one transformer layer's weights (device, bf16)

typedef struct {
    void *attn_norm;                //  [hidden]
    void *w_qkv;                    //  [q_dim + 2 x kv_dim, hidden] (out, in): Wq, Wk, Wv rows
    void *wo;                       //  [hidden, q_dim]
    void *mlp_norm;                 //  [hidden]
    void *w_gate_up;                //  [2 x intermediate, hidden]: gate rows, then up rows
    void *w_down;                   //  [hidden, intermediate]
} kvt_model_cuda_layer_t;

//  --------------------------------------------------------------------------
//  One captured decode step (kvt_model_cuda_graph.c): the forward pass
//  and sampling of 'rows' padded rows over a table 'table_len' wide,
//  'splits' KV splits, replayed by cudaGraphLaunch

#define KVT_MODEL_CUDA_GRAPHS   16      //  Decode graphs kept (least recently used goes)

typedef struct {
    cudaGraphExec_t exec;           //  The instantiated graph, or NULL (free entry)
    int rows;                       //  Key: rows of every kernel (a power of two)
    int table_len;                  //  Key: d_table row width (a power of two)
    int splits;                     //  Key: KV splits (a power of two, at least 2)
    void *slab;                     //  Key: the block slab
    size_t block_bytes;             //  Key: bytes between its blocks
    int32_t *d_table;               //  d_table when captured (stale once it moved)
    void *workspace;                //  Split-KV workspace when captured
    bool staged;                    //  Key: waits on the staging of host-held layers
    size_t stage_count;             //  Key: its ring's blocks per layer
    void *stage;                    //  Its ring and staging table when captured
    int32_t *d_stage_table;
    uint64_t used;                  //  graph_clock at its last launch
} kvt_model_cuda_graph_t;

//  --------------------------------------------------------------------------
//  Structure of our class

struct _kvt_model_cuda_t {
    kvt_model_shape_t shape;        //  Validated copy
    bool (*cancel_fn) (void *arg);  //  Asked between chunks: stop now?
    void *cancel_arg;               //  Its argument
    int q_dim;                      //  heads x head_dim
    int kv_dim;                     //  kv_heads x head_dim
    cudaStream_t stream;            //  Everything runs on this stream
    cudaStream_t copy_stream;       //  Streamed cached blocks arrive on this one
    size_t host_fp8_slot_bytes;     //  Host copies are FP8 forms in slots this far apart
                                    //  (0: plain blocks; kvt_model_cuda_set_host_fp8)
    cublasHandle_t cublas;          //  Bound to 'stream'
    void *embed;                    //  [vocab, hidden]
    void *final_norm;               //  [hidden]
    void *lm_head;                  //  [vocab, hidden]
    kvt_model_cuda_layer_t *layer;  //  [layers]
    float *inv_freq;                //  [head_dim / 2] device
    //  Activations, KVT_MODEL_CUDA_CHUNK rows each (device, bf16)
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
    //  A layer-major prefill slice (kvt_model_cuda_forward_layer_major)
    kvt_model_cuda_seq_t *lm_seq;   //  Whose slice x_lm and d_rows_lm hold, or NULL
    void *x_lm;                     //  Each chunk's residual stream [lm_chunks, CHUNK, hidden]
    int32_t *d_rows_lm;             //  [lm_chunks, ROWS_COUNT] each chunk's indices
    int32_t *h_rows_lm;             //  Pinned host copy of d_rows_lm, the largest slice's
                                    //  (a pageable copy of over 64 KiB waited for the
                                    //  device, and so for the gated copies: a deadlock)
    size_t lm_chunks;               //  Chunks these hold
    int32_t *d_argmax;              //  [DECODE_ROWS]
    int32_t *h_sampled;             //  Pinned [1 + DECODE_ROWS]: a prefill's first
                                    //  token, then one per decode row (D2H target)
    uint64_t steps;                 //  Decode steps run (stamps their sequences)
    //  The step in flight, from kvt_model_cuda_step_launch to _finish
    bool in_flight;                 //  A step was launched and not finished
    kvt_model_cuda_seq_t *step_prefill;     //  Its prefill sequence, or NULL
    bool step_first;                //  The prefill samples the first token
    int step_left;                  //  Prompt positions left after the slice
    kvt_model_cuda_seq_t *step_seqs [KVT_MODEL_CUDA_DECODE_ROWS];
                                    //  Its decode rows (NULL: dropped)
    size_t step_count;              //  Entries in step_seqs
    int32_t *d_table;               //  Block table(s) (device)
    size_t table_cap;               //  Entries d_table and h_table hold
    int32_t *h_table;               //  Host staging of d_table
    void *workspace;                //  Decode split-KV scratch
    size_t workspace_bytes;         //  Its size
    void *cublas_workspace;         //  cuBLAS's own (set, so capture and eager agree)
    //  Decode steps as CUDA graphs (kvt_model_cuda_graph.c)
    bool graph_on;                  //  Replay decode steps as graphs
    kvt_model_cuda_layer_major_t layer_major;   //  When prefill runs layer-major
    //  Static layer sharding (tier_gpu/layer_fraction < 1, issue #5)
    int gpu_layers;                 //  Layers of a block in the slab (all by default)
    char *shard;                    //  Layers [gpu_layers, layers) of every block, in
                                    //  mapped pinned host memory, or NULL
    size_t shard_bytes;             //  Bytes between the shard's blocks
    //  Decode staging of the shard's layers (compute/shard_staging, #5):
    //  each host-held layer's slices of a step's blocks are copied into a
    //  ring of device buffers on stage_stream, ahead of the layer
    bool stage_on;                  //  Stage (default); false: read the shard in place
    bool stage_active;              //  The step being queued stages its layers
    bool stage_graph;               //  It is a graph's: every layer's copy queued ahead
    const cudaEvent_t *stage_wait;  //  Its layers' streamed-block events (NULL: none)
    bool stage_skip_logged;         //  A step too large to stage was logged once
    cudaStream_t stage_stream;      //  The staging copies run on this stream
    void *stage;                    //  stage_ring layer buffers of stage_count block
                                    //  slices each (device)
    int stage_ring;                 //  Buffers of the ring in the step being queued
    size_t stage_bytes;             //  Bytes of 'stage'
    size_t stage_count;             //  Blocks a ring buffer holds in the step being queued
    size_t stage_blocks;            //  Its staged blocks (stage_count, or fewer in a
                                    //  graph's step: the buffers' size is in its key)
    int64_t *stage_src;             //  [stage_blocks] shard slot of each staging index
    bool stage_kernel;              //  Its copies are kernels over d_stage_slots (slots
                                    //  in many runs), not copy-engine copies per run
    size_t stage_kernel_runs;       //  Most runs copied per run (KVT_STAGE_KERNEL_RUNS)
    int64_t *d_stage_slots;         //  [2 x stage_blocks] shard slot, staging index
    size_t d_stage_slots_bytes;     //  Bytes of d_stage_slots
    int64_t *h_stage_slots;         //  Host staging of d_stage_slots
    size_t h_stage_slots_cap;       //  Entries h_stage_slots holds
    size_t stage_src_cap;           //  Entries stage_src holds
    int32_t *d_stage_table;         //  The step's table as staging indices [rows x
                                    //  table_len], then each row's dest index [DECODE_ROWS]
    size_t d_stage_table_bytes;     //  Bytes of d_stage_table
    int32_t *h_stage_table;         //  Host staging of d_stage_table
    size_t h_stage_table_cap;       //  Entries h_stage_table holds
    int stage_dest_at;              //  Offset of the dest indices in d_stage_table
    cudaEvent_t *stage_ready;       //  [layers] layer l's slices landed in the ring
    cudaEvent_t stage_free [KVT_MODEL_CUDA_STAGE_RING];
                                    //  Attention has read ring buffer k
    cudaEvent_t stage_start;        //  The step's tables are staged (stage_stream waits)
    kvt_model_cuda_graph_t graph [KVT_MODEL_CUDA_GRAPHS];   //  Graphs kept
    uint64_t graph_clock;           //  Graph launches so far (LRU stamp)
    uint64_t graph_captures;        //  Graphs captured and instantiated
    uint64_t graph_updates;         //  Graphs re-captured into their exec
                                    //  (cudaGraphExecUpdate) after a buffer moved
};

//  Offsets inside d_rows / h_rows
#define KVT_MODEL_CUDA_TOKENS(self) ((self) + 0 * KVT_MODEL_CUDA_CHUNK)
#define KVT_MODEL_CUDA_POS(self)    ((self) + 1 * KVT_MODEL_CUDA_CHUNK)
#define KVT_MODEL_CUDA_DBLOCK(self) ((self) + 2 * KVT_MODEL_CUDA_CHUNK)
#define KVT_MODEL_CUDA_DTOKEN(self) ((self) + 3 * KVT_MODEL_CUDA_CHUNK)
#define KVT_MODEL_CUDA_QSTART(self) ((self) + 4 * KVT_MODEL_CUDA_CHUNK)
#define KVT_MODEL_CUDA_SEQLEN(self) ((self) + 4 * KVT_MODEL_CUDA_CHUNK + 2)
#define KVT_MODEL_CUDA_ROWS_COUNT   (4 * KVT_MODEL_CUDA_CHUNK + 2 + KVT_MODEL_CUDA_DECODE_ROWS)

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
    size_t lm_rows;                 //  Rows of its layer-major slice in progress (0: none)
    int lm_next;                    //  That slice's next layer to queue
    size_t streamed_blocks;         //  Cached blocks that arrive layer by layer
    size_t host_fp8_slot_bytes;     //  Its host copies' FP8 slot stride (0: plain blocks)
};

//  Bytes of one layer's slice of a block: K and V of every KV head.
static inline size_t
kvt_model_cuda_layer_bytes (const kvt_model_cuda_t *self)
{
    const kvt_model_shape_t *shape = &self->shape;
    return (size_t) 2 * shape->kv_heads * shape->block_tokens * shape->head_dim * 2;
}

//  Where layer 'l''s slices of a slab's blocks lie: block b's at the
//  address returned + b x *stride, in the slab ('slab', 'block_bytes'
//  apart) for l < gpu_layers, else in the layer shard (issue #5: written
//  there over PCIe, and read there too except by a staged step:
//  kvt_model_cuda_staged). A layer's slice is [K,V]
//  [kv_head][token][head_dim].
static inline char *
kvt_model_cuda_layer_base (const kvt_model_cuda_t *self, void *slab, size_t block_bytes, int l,
                           size_t *stride)
{
    const size_t layer_bytes = kvt_model_cuda_layer_bytes (self);
    if (l < self->gpu_layers || !self->shard) {
        *stride = block_bytes;
        return (char *) slab + (size_t) l * layer_bytes;
    }
    *stride = self->shard_bytes;
    return self->shard + (size_t) (l - self->gpu_layers) * layer_bytes;
}

//  True when the step being queued (decode, or a prefill chunk) reads
//  host-held layer 'l' from the staging ring instead of the shard
//  (kvt_model_cuda_seq.c).
static inline bool
kvt_model_cuda_staged (const kvt_model_cuda_t *self, int l)
{
    return self->stage_active && self->shard && l >= self->gpu_layers;
}

//  Evaluate 'expr' into the caller's 'rc' and return it from the caller
//  when it is not 0.
#define KVT_MODEL_CUDA_TRY(expr) do { rc = (expr); if (rc) return rc; } while (0)

//  Log a failed CUDA call ('what' names it); return 0 or KVT_ECUDA.
int
    kvt_model_cuda_check (cudaError_t status, const char *what);

//  Make *buffer (of *have bytes) hold 'bytes', freeing and allocating in
//  stream order on 'stream', never waiting. Returns 0 or KVT_ECUDA.
int
    kvt_model_cuda_regrow (void **buffer, size_t *have, size_t bytes, cudaStream_t stream,
                           const char *what);

//  Run 'rows' tokens staged in d_rows through every layer: a prefill
//  chunk of one sequence (GEMMs on KVT_MODEL_CUDA_CHUNK rows) or a decode
//  step of one row per sequence (GEMMs on KVT_MODEL_CUDA_DECODE_ROWS
//  rows), over the block table in d_table (see kvt_model_cuda.c).
int
    kvt_model_cuda_forward (kvt_model_cuda_t *self, int rows, bool decode, void *slab,
                            size_t block_bytes, int table_len, int seq_len,
                            const cudaEvent_t *layer_ready);

//  Run layers [from, to) of a layer-major prefill slice of 'chunks'
//  chunks staged in d_rows_lm (the last one 'last_rows' rows), residual
//  streams in x_lm (embedded when 'from' is 0): every chunk's layer l,
//  after layer l's event in 'layer_ready' (NULL: none), before layer
//  l + 1 (see kvt_model_cuda.c).
int
    kvt_model_cuda_forward_layer_major (kvt_model_cuda_t *self, int chunks, int last_rows,
                                        int from, int to, void *slab, size_t block_bytes,
                                        int table_len, const cudaEvent_t *layer_ready);

//  Fill 'h' (d_rows layout) with the indices of prompt positions pos ..
//  pos + rows - 1 of 'seq' (kvt_model_cuda_seq.c).
void
    kvt_model_cuda_rows_fill (kvt_model_cuda_t *self, const kvt_model_cuda_seq_t *seq,
                              size_t pos, int rows, int32_t *h);

//  Copy 'seq''s block table up to d_table, growing it stream-ordered;
//  never waits for the stream. Returns 0, -ENOMEM or KVT_ECUDA.
int
    kvt_model_cuda_stage_table (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq);

//  Whether 'seq''s next prefill positions start a layer-major slice
//  (kvt_model_cuda_layer_major.c).
bool
    kvt_model_cuda_layer_major_starts (kvt_model_cuda_t *self, const kvt_model_cuda_seq_t *seq);

//  Queue the next piece of 'seq''s layer-major slice (starting one when
//  none is in progress). Returns 0 once queued, or an error.
int
    kvt_model_cuda_prefill_layer_major (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq);

//  Make x_lm, d_rows_lm and h_rows_lm hold 'chunks' chunks (stream-
//  ordered). Returns 0 or KVT_ECUDA.
int
    kvt_model_cuda_layer_major_reserve (kvt_model_cuda_t *self, size_t chunks);

//  Queue greedy tokens of rows first..first + count - 1 of the residual
//  stream, the lm_head on 'gemm_rows' rows, and their copy into pinned
//  'tokens' (valid once the stream has passed it).
int
    kvt_model_cuda_sample_queue (kvt_model_cuda_t *self, int first, int count, int gemm_rows,
                                 int32_t *tokens);

//  Make the split-KV workspace hold what a decode step of 'rows' rows and
//  'splits' splits needs (stream-ordered: it never waits for the GPU).
//  Returns 0 or KVT_ECUDA.
int
    kvt_model_cuda_workspace_reserve (kvt_model_cuda_t *self, int rows, int splits);

//  Queue one decode step as a CUDA graph (kvt_model_cuda_graph.c): inputs
//  already staged in d_rows (rows past the batch: dest block -1, length
//  0) and d_table ('table_len' entries a row); 'rows', 'table_len' and
//  'splits' are powers of two (the graph's key). Captures the graph on
//  first use, re-captures it into its exec when d_table or the workspace
//  moved; the tokens land in h_sampled [1 ..]. A capture that fails turns
//  graphs off for the model and runs the step eagerly. Returns 0 or an error.
int
    kvt_model_cuda_graph_decode (kvt_model_cuda_t *self, int rows, void *slab,
                                 size_t block_bytes, int table_len, int splits);

//  Copy 'bytes' of pageable host memory at 'src' to device 'dst' on the
//  model's stream, in pieces small enough that the call never waits for
//  the device (kvt_model_cuda_seq.c). Returns 0 once queued, or KVT_ECUDA.
int
    kvt_model_cuda_upload (kvt_model_cuda_t *self, void *dst, const void *src, size_t bytes,
                           const char *what);

//  Decode staging of a sharded model's host-held layers
//  (kvt_model_cuda_stage.c, compute/shard_staging). Whether the decode
//  step over 'seqs' stages them: staging on, and a ring of two layers of
//  its blocks within KVT_MODEL_CUDA_STAGE_MAX_BYTES.
bool
    kvt_model_cuda_stage_step (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs,
                               size_t seq_count);

//  Set up the staging of the decode step just staged by s_decode_stage
//  ('rows' rows of 'table_len' entries in h_table): staging indices,
//  d_stage_table, the ring's size, stage_start. 'graph': the step runs
//  as a CUDA graph, which cannot hold copies whose slots change every
//  step: the ring then has a buffer for every host-held layer, of a
//  rounded-up block count (the graph's key, so a graph serves many
//  steps), and every layer's copy is queued here, ahead of the graph
//  that waits on their events. Returns 0 or an error.
int
    kvt_model_cuda_stage_prepare (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs,
                                  size_t seq_count, size_t rows, size_t table_len, bool graph);

//  Whether the decode step over 'seqs' can stage as a graph: a buffer
//  for each host-held layer within KVT_MODEL_CUDA_STAGE_GRAPH_BYTES.
bool
    kvt_model_cuda_stage_graph_fits (const kvt_model_cuda_t *self,
                                     kvt_model_cuda_seq_t *const *seqs, size_t seq_count);

//  Whether a prefill chunk whose last row is token 'end' - 1 stages
//  them: staging on, and a ring of two layers of the blocks before 'end'
//  within KVT_MODEL_CUDA_STAGE_MAX_BYTES.
bool
    kvt_model_cuda_stage_prefill (kvt_model_cuda_t *self, size_t end);

//  Set up the staging of 'rows' prefill rows of 'seq' from token 'first'
//  (a chunk, or a layer-major slice: chunk c's dest indices from
//  stage_dest_at + c x KVT_MODEL_CUDA_CHUNK): the table's blocks before
//  the rows' end, the rows' K/V indices; layer l's copy waits for
//  'layer_ready' [l] (NULL: none). Returns 0 or an error.
int
    kvt_model_cuda_stage_prepare_prefill (kvt_model_cuda_t *self,
                                          const kvt_model_cuda_seq_t *seq, size_t first,
                                          size_t rows, const cudaEvent_t *layer_ready);

//  Queue on stage_stream the copy of host-held layer 'l''s slices of the
//  step's staged blocks into ring buffer (l - gpu_layers) % stage_ring, after
//  attention freed it, then record stage_ready [l] (kvt_model_cuda_stage.c).
//  Returns 0 or KVT_ECUDA.
int
    kvt_model_cuda_stage_layer (kvt_model_cuda_t *self, int l);

//  Ring buffer of host-held layer 'l' (device).
static inline char *
kvt_model_cuda_stage_base (const kvt_model_cuda_t *self, int l)
{
    const size_t layer_bytes = kvt_model_cuda_layer_bytes (self);
    return (char *) self->stage + (size_t) ((l - self->gpu_layers) % self->stage_ring)
                                  * self->stage_count * layer_bytes;
}

//  Destroy every graph kept (kvt_model_cuda_destroy).
void
    kvt_model_cuda_graph_purge (kvt_model_cuda_t *self);

//  Queue on 'stream' a wait until the gate armed on this thread
//  (kvt_model_cuda_gate_arm) lets 'layers' layers through; no-op when
//  none is armed. Returns 0 or KVT_ECUDA. (kvt_model_cuda_gate.c, #4)
int
    kvt_model_cuda_gate_wait (cudaStream_t stream, int layers);

#endif

#endif
