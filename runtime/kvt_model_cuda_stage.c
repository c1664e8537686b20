/*  =========================================================================
    kvt_model_cuda_stage - staging of a layer-sharded GPU model

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Staging of a sharded model's host-held layers (#5,
    compute/shard_staging), for decode steps and prefill chunks. A decode
    step gives every block of its rows' tables a staging index (row by
    row; a block two rows share is staged twice); a prefill chunk gives
    its sequence's blocks before the chunk's end indices 0, 1, ... in
    table order. d_stage_table maps the rows' tables and dest blocks to
    them; each host-held layer l's slices of those blocks are copied from
    the shard into ring buffer (l - gpu_layers) % stage_ring on
    stage_stream (2 to KVT_MODEL_CUDA_STAGE_RING buffers, as many as fit
    KVT_MODEL_CUDA_STAGE_BYTES), one strided cudaMemcpy2DAsync per run of
    consecutive shard slots (the copy engines; layer slices are whole
    16-64 KiB rows), before stage_ready [l]. Layer l's attention waits on
    that event only; its K/V write goes to the shard (kept) and to the
    staged slice. The first stage_ring host-held layers are copied from
    the step's start (under the slab-held layers' compute), layer l +
    stage_ring once layer l's attention recorded its ring buffer free
    (kvt_model_cuda_forward). A prefill chunk whose cached blocks still
    stream into the shard copies layer l after that layer's event. A
    layer-major slice (kvt_model_cuda_layer_major.c) stages the layers of
    each of its pieces once for all its chunks.
    A decode step that runs as a CUDA graph (kvt_model_cuda_graph.c)
    cannot hold these copies (other slots every step), so where a buffer
    for every host-held layer fits KVT_MODEL_CUDA_STAGE_GRAPH_BYTES (its
    block count rounded up, part of the graph's key) all the layers'
    copies are queued before the launch and the graph waits on each
    layer's event through an external event node; no copy then waits on
    the graph. The ring of the eager steps saves that memory for larger
    batches, at the cost of the graph (~0.5 ms a step at the 8B shape).
    Where a step's staged slots fall in more than
    KVT_MODEL_CUDA_STAGE_KERNEL_RUNS runs (a tier fragmented by
    evictions, a batch of many sequences), one copy per run would cost
    the thread a call and the engines a short copy each, per layer: each
    layer is then one launch of kvt_block_copy (KVT_MODEL_CUDA_STAGE_CTAS
    CTAs reading the mapped shard) over a slot list uploaded once a step
    (`kvtier bench model --only scatter`).
    Why prefill too: the paged prefill kernel reads each KV head's
    slices once per query head of its group and per query tile (its grid
    is tiles x heads), so in place a hit 4K prompt at F = 0.5 read its
    host-held layers at a fraction of the link's rate (TTFT 2.4x of
    F = 1); staged, each byte crosses once at the copy engines' rate.
@discuss
    A step or chunk whose ring of two layers would pass
    KVT_MODEL_CUDA_STAGE_MAX_BYTES (more than 8192 blocks of the 8B shape,
    64 KiB a layer: 131K tokens in the batch or the prompt) reads the
    shard in place, as compute/shard_staging = 0 does, rather than take
    device memory the tiers and the model were sized without.
@end
*/

#include "kvt_model_cuda_int.h"
#include "kvt_block_copy.cuh"

#ifdef KVT_WITH_CUDA

//  Make *buffer (pageable) hold 'entries' of 'size' bytes.
static void
s_host_reserve (void **buffer, size_t *cap, size_t entries, size_t size)
{
    if (entries > *cap) {
        free (*buffer);
        *buffer = kvt_zmalloc (entries * size);
        *cap = entries;
    }
}

//  Blocks of each ring buffer of a graph's step that stages 'count':
//  rounded up to a quarter of the next power of two (at least 64), so a
//  graph serves the steps of a growing context until it crosses a mark,
//  and at most a third of the buffers sits idle.
static size_t
s_graph_stage_count (size_t count)
{
    size_t pow2 = 1;
    while (pow2 < count)
        pow2 *= 2;
    size_t grain = pow2 / 4 > 64? pow2 / 4: 64;
    return (count + grain - 1) / grain * grain;
}

//  Whether a decode step can stage as a graph (see kvt_model_cuda_int.h).
bool
kvt_model_cuda_stage_graph_fits (const kvt_model_cuda_t *self,
                                 kvt_model_cuda_seq_t *const *seqs, size_t seq_count)
{
    size_t count = 0;
    for (size_t s = 0; s < seq_count; s++)
        count += seqs [s]->table_len;
    const size_t host_layers = (size_t) (self->shape.layers - self->gpu_layers);
    return host_layers * s_graph_stage_count (count) * kvt_model_cuda_layer_bytes (self)
        <= KVT_MODEL_CUDA_STAGE_GRAPH_BYTES;
}

//  Size the ring for 'count' staged blocks ('stage_count': blocks a
//  buffer holds, count or more; 'whole': a buffer for every host-held
//  layer), upload the host table's 'entries' and start the staging
//  stream after what was queued so far; the stream also waits for layer
//  l's 'layer_ready' (NULL: none) before copying layer l (blocks still
//  streaming in). Returns 0 or an error.
static int
s_stage_commit (kvt_model_cuda_t *self, size_t entries, size_t count, size_t stage_count,
                bool whole, const cudaEvent_t *layer_ready)
{
    int rc;
    const size_t layer_bytes = kvt_model_cuda_layer_bytes (self);
    self->stage_count = stage_count;
    self->stage_blocks = count;
    //  As many buffers as KVT_MODEL_CUDA_STAGE_BYTES holds, 2 to RING
    //  (no more than the host-held layers):
    //  the copies keep the copy engines busy under the slab-held layers
    //  (a ring of 3 left them idle there: 8.7 ms a token at F = 0.5)
    size_t ring = KVT_MODEL_CUDA_STAGE_BYTES / (stage_count * layer_bytes);
    const size_t host_layers = (size_t) (self->shape.layers - self->gpu_layers);
    ring = ring < 2? 2: ring > KVT_MODEL_CUDA_STAGE_RING? KVT_MODEL_CUDA_STAGE_RING: ring;
    self->stage_ring = (int) (whole || ring > host_layers? host_layers: ring);
    //  Stream-ordered (no synchronize: kvt_model_cuda_regrow); the last
    //  step's copies all landed before its compute passed them
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_regrow (&self->stage, &self->stage_bytes,
                                               (size_t) self->stage_ring * stage_count
                                               * layer_bytes,
                                               self->stream, "staging ring"));
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_regrow ((void **) &self->d_stage_table,
                                               &self->d_stage_table_bytes,
                                               entries * sizeof (int32_t), self->stream,
                                               "staging table"));
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_upload (self, self->d_stage_table, self->h_stage_table,
                                               entries * sizeof (int32_t), "staging table"));
    //  Slots in many runs (a tier fragmented by evictions): one copy per
    //  run would cost the thread a call each and the engines a short copy
    //  each, per layer; a kernel of a few CTAs copies a layer in one
    //  launch from a slot list in device memory
    size_t runs = count > 0;
    for (size_t k = 1; k < count; k++)
        runs += self->stage_src [k] != self->stage_src [k - 1] + 1;
    self->stage_kernel = runs > self->stage_kernel_runs;
    if (self->stage_kernel) {
        s_host_reserve ((void **) &self->h_stage_slots, &self->h_stage_slots_cap, 2 * count,
                        sizeof (int64_t));
        for (size_t k = 0; k < count; k++) {
            self->h_stage_slots [k] = self->stage_src [k];
            self->h_stage_slots [count + k] = (int64_t) k;
        }
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_regrow ((void **) &self->d_stage_slots,
                                                   &self->d_stage_slots_bytes,
                                                   2 * count * sizeof (int64_t), self->stream,
                                                   "staging slots"));
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_upload (self, self->d_stage_slots, self->h_stage_slots,
                                                   2 * count * sizeof (int64_t),
                                                   "staging slots"));
    }
    //  The copies start after everything queued so far: the ring and its
    //  table exist, the last step's attention read the ring, and its K/V
    //  writes reached the shard
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaEventRecord (self->stage_start, self->stream),
                                              "staging start"));
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaStreamWaitEvent (self->stage_stream,
                                                                   self->stage_start, 0),
                                              "staging start"));
    self->stage_wait = layer_ready;
    self->stage_active = true;
    return 0;
}

//  Set up the staging of a decode step (see kvt_model_cuda_int.h).
int
kvt_model_cuda_stage_prepare (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs,
                              size_t seq_count, size_t rows, size_t table_len, bool graph)
{
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    size_t count = 0;
    for (size_t s = 0; s < seq_count; s++)
        count += seqs [s]->table_len;
    const size_t entries = rows * table_len + KVT_MODEL_CUDA_DECODE_ROWS;
    s_host_reserve ((void **) &self->h_stage_table, &self->h_stage_table_cap, entries,
                    sizeof (int32_t));
    s_host_reserve ((void **) &self->stage_src, &self->stage_src_cap, count, sizeof (int64_t));
    int32_t *h = self->h_stage_table;
    int32_t *dest = h + rows * table_len;
    size_t at = 0;
    for (size_t s = 0; s < rows; s++) {
        int32_t *row = h + s * table_len;
        for (size_t b = 0; b < table_len; b++)
            row [b] = -1;
        if (s >= seq_count)
            continue;
        const kvt_model_cuda_seq_t *seq = seqs [s];
        for (size_t b = 0; b < seq->table_len; b++) {
            self->stage_src [at] = seq->table [b];
            row [b] = (int32_t) at++;
        }
        size_t pos = seq->token_count + seq->emitted - 1;
        dest [s] = row [pos / block_tokens];
    }
    for (size_t s = seq_count; s < KVT_MODEL_CUDA_DECODE_ROWS; s++)
        dest [s] = -1;              //  Rows past the batch write no K/V
    self->stage_dest_at = (int) (rows * table_len);
    self->stage_graph = graph;
    if (!graph)
        return s_stage_commit (self, entries, count, count, false, NULL);
    int rc;
    KVT_MODEL_CUDA_TRY (s_stage_commit (self, entries, count, s_graph_stage_count (count), true,
                                        NULL));
    //  Every layer's copy now, on the copy engines: the graph waits on
    //  their events (external event nodes); no copy waits on the graph,
    //  each layer has its own buffer
    for (int l = self->gpu_layers; l < self->shape.layers; l++)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_layer (self, l));
    return 0;
}

//  Set up the staging of a prefill chunk or layer-major slice (see
//  kvt_model_cuda_int.h): staging index b is table entry b, for the
//  blocks that hold tokens before the rows' end; row i (chunk i /
//  KVT_MODEL_CUDA_CHUNK's row i % KVT_MODEL_CUDA_CHUNK) writes its K/V
//  to the index of its block too, at dest entry i.
int
kvt_model_cuda_stage_prepare_prefill (kvt_model_cuda_t *self, const kvt_model_cuda_seq_t *seq,
                                      size_t first, size_t rows,
                                      const cudaEvent_t *layer_ready)
{
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    const size_t count = (first + rows + block_tokens - 1) / block_tokens;
    const size_t dests = (rows + KVT_MODEL_CUDA_CHUNK - 1) / KVT_MODEL_CUDA_CHUNK
                       * KVT_MODEL_CUDA_CHUNK;
    assert (rows > 0 && rows <= KVT_MODEL_CUDA_LAYER_MAJOR_ROWS && count <= seq->table_len);
    const size_t entries = seq->table_len + dests;
    s_host_reserve ((void **) &self->h_stage_table, &self->h_stage_table_cap, entries,
                    sizeof (int32_t));
    s_host_reserve ((void **) &self->stage_src, &self->stage_src_cap, count, sizeof (int64_t));
    int32_t *h = self->h_stage_table;
    for (size_t b = 0; b < seq->table_len; b++) {
        h [b] = b < count? (int32_t) b: -1;
        if (b < count)
            self->stage_src [b] = seq->table [b];
    }
    int32_t *dest = h + seq->table_len;
    for (size_t r = 0; r < dests; r++)
        dest [r] = r < rows? (int32_t) ((first + r) / block_tokens): -1;
    self->stage_dest_at = (int) seq->table_len;
    self->stage_graph = false;
    return s_stage_commit (self, entries, count, count, false, layer_ready);
}

//  Queue the copy of host-held layer 'l' into its ring buffer (see
//  kvt_model_cuda_int.h).
int
kvt_model_cuda_stage_layer (kvt_model_cuda_t *self, int l)
{
    int rc;
    const size_t layer_bytes = kvt_model_cuda_layer_bytes (self);
    const int ring = (l - self->gpu_layers) % self->stage_ring;
    if (self->stage_wait)           //  Layer l's blocks still stream into the shard
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaStreamWaitEvent (self->stage_stream,
                                                                       self->stage_wait [l], 0),
                                                  "staging wait"));
    if (l - self->gpu_layers >= self->stage_ring)
        //  Layer l - RING's attention has read this buffer (recorded just now)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaStreamWaitEvent (self->stage_stream,
                                                                       self->stage_free [ring],
                                                                       0), "staging wait"));
    char *dst = kvt_model_cuda_stage_base (self, l);
    const char *src = self->shard + (size_t) (l - self->gpu_layers) * layer_bytes;
    if (self->stage_kernel) {
        const size_t count = self->stage_blocks;
        kvt_block_copy_args_t copy = {
            .dst = dst, .src = src, .dst_slots = self->d_stage_slots + count,
            .src_slots = self->d_stage_slots, .dst_slot_bytes = (int64_t) layer_bytes,
            .src_slot_bytes = (int64_t) self->shard_bytes, .block_bytes = (int64_t) layer_bytes,
            .count = (int) count, .max_ctas = KVT_MODEL_CUDA_STAGE_CTAS };
        rc = kvt_block_copy (&copy, self->stage_stream);
        if (rc) {
            kvt_log_error ("kvt_model_cuda: the staging copy kernel failed (%d)", rc);
            return KVT_ECUDA;
        }
        return kvt_model_cuda_check (cudaEventRecord (self->stage_ready [l], self->stage_stream),
                                     "staging event");
    }
    const int64_t *slot = self->stage_src;
    for (size_t k = 0; k < self->stage_blocks; ) {
        size_t end = k + 1;
        while (end < self->stage_blocks && slot [end] == slot [end - 1] + 1)
            end++;
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemcpy2DAsync (dst + k * layer_bytes,
                                                                     layer_bytes,
                                                                     src + (size_t) slot [k]
                                                                     * self->shard_bytes,
                                                                     self->shard_bytes,
                                                                     layer_bytes, end - k,
                                                                     cudaMemcpyHostToDevice,
                                                                     self->stage_stream),
                                                  "stage a layer"));
        k = end;
    }
    return kvt_model_cuda_check (cudaEventRecord (self->stage_ready [l], self->stage_stream),
                                 "staging event");
}

//  Whether staging 'count' blocks fits: a ring of two layers within
//  KVT_MODEL_CUDA_STAGE_MAX_BYTES (said once in the log when not).
static bool
s_stage_fits (kvt_model_cuda_t *self, size_t count, const char *what)
{
    if (!self->shard || !self->stage_on)
        return false;
    const size_t layer_bytes = kvt_model_cuda_layer_bytes (self);
    if (2 * count * layer_bytes <= KVT_MODEL_CUDA_STAGE_MAX_BYTES)
        return true;
    if (!self->stage_skip_logged)
        kvt_log_warn ("model: a %s of %zu blocks reads its host-held layers in place: "
                      "staging them would take %zu MiB", what, count,
                      (2 * count * layer_bytes) >> 20);
    self->stage_skip_logged = true;
    return false;
}

//  Whether this decode step stages its host-held layers (see
//  kvt_model_cuda_int.h).
bool
kvt_model_cuda_stage_step (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs, size_t seq_count)
{
    size_t count = 0;
    for (size_t s = 0; s < seq_count; s++)
        count += seqs [s]->table_len;
    return s_stage_fits (self, count, "decode step");
}

//  Whether a prefill chunk ending before token 'end' stages its
//  host-held layers (see kvt_model_cuda_int.h).
bool
kvt_model_cuda_stage_prefill (kvt_model_cuda_t *self, size_t end)
{
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    return s_stage_fits (self, (end + block_tokens - 1) / block_tokens, "prefill chunk");
}

#endif
