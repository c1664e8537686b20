/*  =========================================================================
    kvt_model_cuda_seq - the GPU model's sequences: begin, steps, generate

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The sequence API of the GPU model (kvt_model.h, CUDA builds only): a
    sequence is begun over the device slab with its prompt, block table
    and spares (cached blocks that have a host copy are copied in layer
    by layer on the copy stream); a step (kvt_model_cuda_step_launch) queues a prefill
    slice and a batched decode step, the copy of their sampled tokens and
    the eventfd signal, and kvt_model_cuda_step_finish hands the tokens
    out; kvt_model_cuda_seq_prefill, _decode and _generate are steps run
    back to back. The forward pass and sampling are kvt_model_cuda.c's
    (kvt_model_cuda_int.h).
@end
*/

#include "kvt_model_cuda_int.h"

#ifdef KVT_WITH_CUDA

#include "kvt_block_copy.cuh"
#include "kvt_fp8.cuh"

//  Layer slices smaller than this stream with the copy kernel (one launch
//  gathers every block's slice), larger ones on the copy engines: the
//  same cut as migration's (kvt_migration_copy.c, tools/bench/RESULTS.md)
#define S_KERNEL_COPY_MAX_BYTES (64u << 10)

//  Make d_table and h_table hold 'entries'. Returns 0 or -ENOMEM.
//  Stream-ordered, never a synchronize (kvt_model_cuda_regrow).
static int
s_table_reserve (kvt_model_cuda_t *self, size_t entries)
{
    if (entries <= self->table_cap)
        return 0;
    size_t have = self->table_cap * sizeof (int32_t);
    if (kvt_model_cuda_regrow ((void **) &self->d_table, &have, entries * sizeof (int32_t),
                               self->stream, "table")) {
        self->table_cap = 0;
        return -ENOMEM;
    }
    self->table_cap = entries;
    free (self->h_table);
    self->h_table = (int32_t *) kvt_zmalloc (entries * sizeof (int32_t));
    return 0;
}

//  Fill 'h' (d_rows layout) with the indices of prompt positions pos ..
//  pos + rows - 1 of 'seq': one chunk of a prefill.
void
kvt_model_cuda_rows_fill (kvt_model_cuda_t *self, const kvt_model_cuda_seq_t *seq, size_t pos, int rows,
             int32_t *h)
{
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    memset (h, 0, KVT_MODEL_CUDA_ROWS_COUNT * sizeof (int32_t));
    for (int r = 0; r < rows; r++) {
        size_t at = pos + (size_t) r;
        KVT_MODEL_CUDA_TOKENS (h) [r] = (int32_t) seq->tokens [at];
        KVT_MODEL_CUDA_POS (h) [r] = (int32_t) at;
        KVT_MODEL_CUDA_DBLOCK (h) [r] = seq->table [at / block_tokens];
        KVT_MODEL_CUDA_DTOKEN (h) [r] = (int32_t) (at % block_tokens);
    }
    KVT_MODEL_CUDA_QSTART (h) [0] = 0;
    KVT_MODEL_CUDA_QSTART (h) [1] = rows;
    KVT_MODEL_CUDA_SEQLEN (h) [0] = (int32_t) (pos + (size_t) rows);
}

//  Pageable host -> device copies go up in pieces of at most this many
//  bytes. On the H100 a 67 KiB pageable cudaMemcpyAsync held the calling
//  thread until the device drained, and with a gated run's copies queued
//  (kvt_model_cuda_gate.c: only this thread's loop opens them) that is a
//  deadlock; copies of 25 KiB returned at once (tools/bench/RESULTS.md)
#define S_PAGEABLE_PIECE (32u << 10)

//  Copy 'seq''s block table (pageable, in pieces) up to d_table.
//  Returns 0 once queued, without waiting for the stream.
int
kvt_model_cuda_stage_table (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq)
{
    int rc = s_table_reserve (self, seq->table_len);
    if (rc)
        return rc;
    return kvt_model_cuda_upload (self, self->d_table, seq->table,
                                  seq->table_len * sizeof (int32_t), "table");
}

//  Copy 'bytes' of pageable host memory at 'src' to 'dst' on the model's
//  stream, in pieces of S_PAGEABLE_PIECE. Returns 0 once queued.
int
kvt_model_cuda_upload (kvt_model_cuda_t *self, void *dst, const void *src, size_t bytes,
                       const char *what)
{
    int rc;
    for (size_t at = 0; at < bytes; at += S_PAGEABLE_PIECE) {
        size_t piece = bytes - at < S_PAGEABLE_PIECE? bytes - at: S_PAGEABLE_PIECE;
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemcpyAsync ((char *) dst + at,
                                                                   (const char *) src + at,
                                                                   piece,
                                                                   cudaMemcpyHostToDevice,
                                                                   self->stream), what));
    }
    return 0;
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
//  FP8 host copies (seq->host_fp8_slot_bytes) go through s_stream_fp8_queue.

//  Give 'seq' one event per layer, recorded as each layer's copy lands.
static int
s_layer_events_new (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq)
{
    int rc = 0;
    seq->layer_ready = (cudaEvent_t *) kvt_zmalloc ((size_t) self->shape.layers
                                                    * sizeof (cudaEvent_t));
    for (int l = 0; rc == 0 && l < self->shape.layers; l++)
        rc = kvt_model_cuda_check (cudaEventCreateWithFlags (&seq->layer_ready [l],
                                                             cudaEventDisableTiming),
                                   "layer event");
    return rc;
}

//  The lowest of 'count' source addresses: the base their slots count from.
static const char *
s_lowest (const void *const *src, size_t count)
{
    const char *base = (const char *) src [0];
    for (size_t k = 1; k < count; k++)
        if ((const char *) src [k] < base)
            base = (const char *) src [k];
    return base;
}

//  Put the 2 x count slot list 'slots' in device memory for a copy kernel,
//  allocated in stream order on the copy stream (freed by s_slots_free);
//  the pageable source is staged by the call.
static int
s_slots_upload (kvt_model_cuda_t *self, const int64_t *slots, size_t count, int64_t **d_slots)
{
    int rc = kvt_model_cuda_check (cudaMallocAsync ((void **) d_slots,
                                                    2 * count * sizeof (int64_t),
                                                    self->copy_stream), "stream slots");
    if (rc == 0)
        rc = kvt_model_cuda_check (cudaMemcpyAsync (*d_slots, slots, 2 * count * sizeof (int64_t),
                                                    cudaMemcpyHostToDevice, self->copy_stream),
                                   "stream slots");
    return rc;
}

//  End a stream queue: free the device slot list after the copies, and
//  have compute wait on the layer events if everything was queued.
static int
s_stream_queued (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, int64_t *d_slots, int rc)
{
    if (d_slots)
        (void) kvt_model_cuda_check (cudaFreeAsync (d_slots, self->copy_stream), "stream slots");
    seq->must_wait = rc == 0;
    return rc;
}

static int
    s_stream_fp8_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq,
                        const void *const *src, const int64_t *dst, size_t count);

static int
s_stream_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, const void *const *src,
                const int64_t *dst, size_t count)
{
    if (seq->host_fp8_slot_bytes)
        return s_stream_fp8_queue (self, seq, src, dst, count);
    const int layers = self->shape.layers;
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (self);
    const size_t model_bytes = kvt_block_bytes (&geometry);
    const size_t slice = model_bytes / (size_t) layers;
    int rc = s_layer_events_new (self, seq);
    if (rc)
        return rc;
    //  Sources as slots of model_bytes from the lowest address
    const char *base = s_lowest (src, count);
    //  Source slot and destination slot of each copy, in source order: the
    //  copies are independent, and so a prefix whose host and GPU slots
    //  both descend (demoted leaf first, promoted with its GPU slots in
    //  host order) runs too
    kvt_pair_t *pairs = (kvt_pair_t *) kvt_zmalloc ((count + 1) * sizeof (kvt_pair_t));
    bool strided = (uintptr_t) base % 16 == 0;
    for (size_t k = 0; k < count; k++) {
        size_t offset = (size_t) ((const char *) src [k] - base);
        strided = strided && offset % model_bytes == 0;
        pairs [k] = (kvt_pair_t) { offset / model_bytes, (uint64_t) dst [k] };
    }
    kvt_pairs_sort (pairs, count);
    int64_t *slots = (int64_t *) kvt_zmalloc (2 * count * sizeof (int64_t));
    for (size_t k = 0; k < count; k++) {
        slots [k] = (int64_t) pairs [k].key;
        slots [count + k] = (int64_t) pairs [k].value;
    }
    free (pairs);
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
    if (strided && slice < S_KERNEL_COPY_MAX_BYTES)
        rc = s_slots_upload (self, slots, count, &d_slots);
    for (int l = 0; rc == 0 && l < layers; l++) {
        const size_t at = (size_t) l * slice;
        rc = kvt_model_cuda_gate_wait (self->copy_stream, l + 1);   //  Layer l read (#4)
        if (rc)
            break;
        //  Layer l's slices in the slab, or in the layer shard (#5)
        size_t stride;
        char *dst_base = kvt_model_cuda_layer_base (self, seq->slab, seq->block_bytes, l,
                                                    &stride);
        kvt_block_copy_args_t args = {
            .dst = dst_base, .src = base + at,
            .dst_slots = slots + count, .src_slots = slots,
            .dst_slot_bytes = (int64_t) stride, .src_slot_bytes = (int64_t) model_bytes,
            .block_bytes = (int64_t) slice, .count = (int) count };
        if (!strided)
            for (size_t k = 0; rc == 0 && k < count; k++)
                rc = kvt_model_cuda_check (cudaMemcpyAsync (dst_base + (size_t) dst [k] * stride,
                                                            (const char *) src [k] + at, slice,
                                                            cudaMemcpyDefault,
                                                            self->copy_stream),
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
                rc = kvt_model_cuda_check (cudaMemcpy2DAsync ((char *) args.dst
                                                              + slots [count + k] * stride,
                                                              stride,
                                                              (const char *) args.src
                                                              + slots [k] * model_bytes,
                                                              model_bytes, slice,
                                                              run_start [r + 1] - k,
                                                              cudaMemcpyDefault,
                                                              self->copy_stream),
                                           "stream a layer");
            }
        else
            rc = kvt_block_copy_ce (&args, self->copy_stream);
        if (rc == 0)
            rc = kvt_model_cuda_check (cudaEventRecord (seq->layer_ready [l],
                                                        self->copy_stream),
                                       "layer event");
    }
    free (run_start);
    free (slots);
    return s_stream_queued (self, seq, d_slots, rc);
}

//  --------------------------------------------------------------------------
//  Queue the dequantization of a sequence's streamed FP8 host copies on
//  the copy stream (migration/cold_dtype = fp8, issue #3): copy k is the
//  FP8 form (kvt_fp8.cuh) at the start of a host arena slot, 'src' [k],
//  to land in slab slot 'dst' [k]. The form is plane-major, so layer l is
//  the planes [l x 2 x kv_heads, (l + 1) x 2 x kv_heads) and their scales:
//  one kvt_fp8_dequantize per layer (and per S_FP8_LAUNCH_MAX blocks)
//  reads them from the mapped pinned slots over PCIe, as migration's
//  dequantization does, and writes layer l's slice of every block, then
//  layer l's event is recorded; the gate wait (#4) stays before each
//  layer. The sources must be slots of one arena: 16-byte aligned and a
//  whole number of host_fp8_slot_bytes from the lowest one; else -EINVAL,
//  nothing queued. Returns 0 once queued, or an error.

#define S_FP8_LAUNCH_MAX 65535u    //  Most blocks one fp8 launch takes (grid limit)

static int
s_stream_fp8_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, const void *const *src,
                    const int64_t *dst, size_t count)
{
    const kvt_model_shape_t *shape = &self->shape;
    const int layers = shape->layers;
    const int layer_planes = 2 * shape->kv_heads;
    const int plane_elems = shape->block_tokens * shape->head_dim;
    const size_t planes = (size_t) layers * layer_planes;
    const size_t slot_bytes = seq->host_fp8_slot_bytes;
    if (slot_bytes % 16 || slot_bytes < kvt_fp8_block_bytes ((int) planes, plane_elems)
    ||  plane_elems % 8) {
        kvt_log_error ("model: FP8 host slots of %zu bytes cannot hold this model's blocks",
                       slot_bytes);
        return -EINVAL;
    }
    //  Sources as slots of slot_bytes from the lowest address
    const char *base = s_lowest (src, count);
    if ((uintptr_t) base % 16) {
        kvt_log_error ("model: FP8 host copies are not 16-byte aligned");
        return -EINVAL;
    }
    int64_t *slots = (int64_t *) kvt_zmalloc (2 * count * sizeof (int64_t));
    for (size_t k = 0; k < count; k++) {
        size_t offset = (size_t) ((const char *) src [k] - base);
        if (offset % slot_bytes) {
            kvt_log_error ("model: FP8 host copies are not slots %zu bytes apart", slot_bytes);
            free (slots);
            return -EINVAL;
        }
        slots [k] = (int64_t) (offset / slot_bytes);
        slots [count + k] = dst [k];
    }
    int rc = s_layer_events_new (self, seq);
    int64_t *d_slots = NULL;        //  The kernel reads its slot lists from device memory
    if (rc == 0)
        rc = s_slots_upload (self, slots, count, &d_slots);
    for (int l = 0; rc == 0 && l < layers; l++) {
        rc = kvt_model_cuda_gate_wait (self->copy_stream, l + 1);   //  Layer l read (#4)
        const size_t first = (size_t) l * layer_planes;
        size_t stride;              //  Layer l in the slab, or in the layer shard (#5)
        char *dst_base = kvt_model_cuda_layer_base (self, seq->slab, seq->block_bytes, l,
                                                    &stride);
        for (size_t from = 0; rc == 0 && from < count; from += S_FP8_LAUNCH_MAX) {
            size_t n = count - from < S_FP8_LAUNCH_MAX? count - from: S_FP8_LAUNCH_MAX;
            kvt_fp8_args_t args = {
                .dtype = KVT_KDTYPE_BF16,
                .src = base + first * plane_elems,
                .dst = dst_base,
                .scales = (float *) (base + planes * plane_elems) + first,
                .src_slots = d_slots + from, .dst_slots = d_slots + count + from,
                .src_slot_bytes = (int64_t) slot_bytes,
                .dst_slot_bytes = (int64_t) stride,
                .planes = layer_planes, .plane_elems = plane_elems, .count = (int) n,
                .scale_stride = (int64_t) (slot_bytes / 4) };
            rc = kvt_fp8_dequantize (&args, self->copy_stream);
            if (rc)
                kvt_log_error ("model: FP8 dequantization of layer %d: %s", l,
                               kvt_strerror (rc));
        }
        if (rc == 0)
            rc = kvt_model_cuda_check (cudaEventRecord (seq->layer_ready [l],
                                                        self->copy_stream),
                                       "layer event");
    }
    free (slots);
    return s_stream_queued (self, seq, d_slots, rc);
}

//  --------------------------------------------------------------------------
//  Host copies of sequences begun from now on: FP8 forms in host slots
//  'host_slot_bytes' apart, or (0) plain blocks.

void
kvt_model_cuda_set_host_fp8 (kvt_model_cuda_t *self, size_t host_slot_bytes)
{
    assert (self);
    self->host_fp8_slot_bytes = host_slot_bytes;
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
    //  The slab holds gpu_layers of each block (all but with a layer shard, #5)
    if (!tokens || token_count == 0 || !slab
    ||  block_bytes < kvt_block_bytes (&geometry) / (size_t) shape->layers
                      * (size_t) self->gpu_layers
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
    seq->host_fp8_slot_bytes = self->host_fp8_slot_bytes;
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
        else {
            rc = kvt_model_cuda_check (cudaMemcpyAsync ((char *) slab + spare [0] * block_bytes,
                                                        (char *) slab + slots [last]
                                                        * block_bytes, block_bytes,
                                                        cudaMemcpyDeviceToDevice, self->stream),
                                       "block copy");
            if (rc == 0 && self->shard)     //  Its layers in the layer shard (#5)
                rc = kvt_model_cuda_check (cudaMemcpyAsync (self->shard + spare [0]
                                                            * self->shard_bytes,
                                                            self->shard + slots [last]
                                                            * self->shard_bytes,
                                                            self->shard_bytes,
                                                            cudaMemcpyDefault, self->stream),
                                           "block copy");
        }
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
//  in KVT_MODEL_CUDA_CHUNK-row chunks; queue the first token's sampling
//  into h_sampled [0] when the prompt is done. Advances seq->pos (what is
//  queued), not seq->emitted (kvt_model_cuda_step_finish does).
//  A gated run (cached layers still streaming in) prefills layer-major
//  instead (kvt_model_cuda_layer_major.c), whatever 'max_tokens': every chunk's
//  first layers then run while the later layers are on their way from
//  disk (issue #4), where chunk by chunk only the first chunk's could.
//  Such a slice goes a few layers a step, so decode steps of the other
//  sequences still run between; self->layer_major picks when (never,
//  gated runs, always).

static int
s_prefill_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq, size_t max_tokens)
{
    if (max_tokens == 0)
        max_tokens = SIZE_MAX;
    int rc;
    while (seq->pos < seq->token_count && max_tokens > 0) {
        if (self->cancel_fn && self->cancel_fn (self->cancel_arg))
            return -ECANCELED;
        if (seq->lm_rows > 0 || kvt_model_cuda_layer_major_starts (self, seq)) {
            KVT_MODEL_CUDA_TRY (kvt_model_cuda_prefill_layer_major (self, seq));
            break;                  //  One piece a step
        }
        size_t rows = seq->token_count - seq->pos;
        if (rows > KVT_MODEL_CUDA_CHUNK)
            rows = KVT_MODEL_CUDA_CHUNK;
        if (rows > max_tokens)
            rows = max_tokens;
        kvt_model_cuda_rows_fill (self, seq, seq->pos, (int) rows, self->h_rows);
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_table (self, seq));
        //  Pageable, under one piece: returns at once
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemcpyAsync (self->d_rows, self->h_rows,
                                                                   KVT_MODEL_CUDA_ROWS_COUNT
                                                                   * sizeof (int32_t),
                                                                   cudaMemcpyHostToDevice,
                                                                   self->stream), "stage"));
        const cudaEvent_t *ready = seq->must_wait? seq->layer_ready: NULL;
        //  A sharded model copies the chunk's host-held layers up on the
        //  copy engines (its blocks so far), as decode does, rather than
        //  have attention read them over PCIe from every query tile
        if (kvt_model_cuda_stage_prefill (self, seq->pos + rows))
            KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_prepare_prefill (self, seq, seq->pos,
                                                                      rows, ready));
        rc = kvt_model_cuda_forward (self, (int) rows, false, seq->slab, seq->block_bytes,
                                     (int) seq->table_len, (int) (seq->pos + rows), ready);
        self->stage_active = false;
        self->stage_wait = NULL;
        if (rc)
            return rc;
        seq->must_wait = false;     //  Later work on the stream comes after the waits
        seq->pos += rows;
        max_tokens -= rows;
        if (seq->pos == seq->token_count && seq->max_new > 0) {
            KVT_MODEL_CUDA_TRY (kvt_model_cuda_sample_queue (self, (int) rows - 1, 1, 1,
                                                             self->h_sampled));
            self->step_first = true;
        }
    }
    size_t left = seq->token_count - seq->pos;
    self->step_left = left < INT_MAX? (int) left: INT_MAX;
    return 0;
}

//  The least power of two at least 'value'.
static size_t
s_pow2 (size_t value)
{
    size_t pow2 = 1;
    while (pow2 < value)
        pow2 *= 2;
    return pow2;
}

//  Stage a decode step's inputs and copy them up on the stream: row s <
//  seq_count gets sequence s's last token, its position, where its K/V
//  goes and its length, and its block table padded to 'table_len' with
//  -1; rows past the batch, up to 'rows', keep no K/V (dest block -1) and
//  read none (length 0). Returns 0 or an error.
static int
s_decode_stage (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs, size_t seq_count,
                size_t rows, size_t table_len)
{
    int rc;
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    int32_t *h = self->h_rows;
    memset (h, 0, KVT_MODEL_CUDA_ROWS_COUNT * sizeof (int32_t));
    for (size_t s = 0; s < rows; s++) {
        if (s >= seq_count) {
            KVT_MODEL_CUDA_DBLOCK (h) [s] = -1;
            continue;
        }
        const kvt_model_cuda_seq_t *seq = seqs [s];
        size_t pos = seq->token_count + seq->emitted - 1;
        KVT_MODEL_CUDA_TOKENS (h) [s] = (int32_t) seq->out [seq->emitted - 1];
        KVT_MODEL_CUDA_POS (h) [s] = (int32_t) pos;
        KVT_MODEL_CUDA_DBLOCK (h) [s] = seq->table [pos / block_tokens];
        KVT_MODEL_CUDA_DTOKEN (h) [s] = (int32_t) (pos % block_tokens);
        KVT_MODEL_CUDA_SEQLEN (h) [s] = (int32_t) (pos + 1);
        int32_t *row = self->h_table + s * table_len;
        memcpy (row, seq->table, seq->table_len * sizeof (int32_t));
        for (size_t b = seq->table_len; b < table_len; b++)
            row [b] = -1;
    }
    //  Pageable sources: each call returns once the bytes are staged
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemcpyAsync (self->d_table, self->h_table,
                                                               seq_count * table_len
                                                               * sizeof (int32_t),
                                                               cudaMemcpyHostToDevice,
                                                               self->stream), "table"));
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemcpyAsync (self->d_rows, h,
                                                               KVT_MODEL_CUDA_ROWS_COUNT
                                                               * sizeof (int32_t),
                                                               cudaMemcpyHostToDevice,
                                                               self->stream), "stage"));
    return 0;
}

//  Queue one decode step over 'seq_count' checked sequences as a CUDA
//  graph (kvt_model_cuda_graph.c): rows, table width and splits rounded
//  up to powers of two (the graph's key); rows past the batch write no
//  K/V (dest block -1) and read none (length 0). 'staging': a sharded
//  model's host-held layers are copied ahead of the graph, which waits
//  on each layer's copy. The tokens land in h_sampled [1 ..].
static int
s_decode_graph_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs,
                      size_t seq_count, bool staging)
{
    const size_t block_tokens = (size_t) self->shape.block_tokens;
    size_t table_len = 1, longest = 1;
    for (size_t s = 0; s < seq_count; s++) {
        const kvt_model_cuda_seq_t *seq = seqs [s];
        table_len = seq->table_len > table_len? seq->table_len: table_len;
        size_t len = seq->token_count + seq->emitted;
        longest = len > longest? len: longest;
    }
    size_t splits = s_pow2 ((longest + KVT_MODEL_DECODE_SPLIT - 1) / KVT_MODEL_DECODE_SPLIT);
    splits = splits < 2? 2: splits;
    size_t span_blocks = (splits * KVT_MODEL_DECODE_SPLIT + block_tokens - 1) / block_tokens;
    table_len = s_pow2 (span_blocks > table_len? span_blocks: table_len);
    const size_t rows = s_pow2 (seq_count);
    if (table_len > INT_MAX / KVT_MODEL_CUDA_DECODE_ROWS || splits > INT_MAX)
        return -EINVAL;
    int rc = s_table_reserve (self, rows * table_len);
    if (rc)
        return rc;
    KVT_MODEL_CUDA_TRY (s_decode_stage (self, seqs, seq_count, rows, table_len));
    if (staging)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_prepare (self, seqs, seq_count, rows,
                                                          table_len, true));
    rc = kvt_model_cuda_graph_decode (self, (int) rows, seqs [0]->slab, seqs [0]->block_bytes,
                                      (int) table_len, (int) splits);
    self->stage_active = false;
    self->stage_graph = false;
    return rc;
}

static int
s_decode_queue (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *const *seqs, size_t seq_count)
{
    const bool staging = kvt_model_cuda_stage_step (self, seqs, seq_count);
    //  A staging step is a graph's too where a buffer for every host-held
    //  layer fits; larger ones run eagerly, their copies in a ring
    if (self->graph_on && (!staging || kvt_model_cuda_stage_graph_fits (self, seqs, seq_count)))
        return s_decode_graph_queue (self, seqs, seq_count, staging);
    size_t table_len = 1, longest = 1;
    for (size_t s = 0; s < seq_count; s++) {
        const kvt_model_cuda_seq_t *seq = seqs [s];
        table_len = seq->table_len > table_len? seq->table_len: table_len;
        size_t len = seq->token_count + seq->emitted;
        longest = len > longest? len: longest;
    }
    //  Rows of the table cover the split span kvt_model_cuda_forward asks
    //  the kernel for (entries past a sequence's blocks are never read)
    int splits = (int) ((longest + KVT_MODEL_DECODE_SPLIT - 1) / KVT_MODEL_DECODE_SPLIT);
    size_t span = (size_t) (splits < 2? 2: splits) * KVT_MODEL_DECODE_SPLIT;
    size_t span_blocks = (span + (size_t) self->shape.block_tokens - 1)
                       / (size_t) self->shape.block_tokens;
    table_len = span_blocks > table_len? span_blocks: table_len;
    int rc = s_table_reserve (self, seq_count * table_len);
    if (rc)
        return rc;
    KVT_MODEL_CUDA_TRY (s_decode_stage (self, seqs, seq_count, seq_count, table_len));
    if (staging)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_prepare (self, seqs, seq_count, seq_count,
                                                          table_len, false));
    rc = kvt_model_cuda_forward (self, (int) seq_count, true, seqs [0]->slab,
                                 seqs [0]->block_bytes, (int) table_len, (int) longest, NULL);
    self->stage_active = false;
    if (rc)
        return rc;
    return kvt_model_cuda_sample_queue (self, 0, (int) seq_count, KVT_MODEL_CUDA_DECODE_ROWS,
                                        self->h_sampled + 1);
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
    if ((seq_count > 0 && !seqs) || seq_count > KVT_MODEL_CUDA_DECODE_ROWS
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
    &&  kvt_model_cuda_check (cudaLaunchHostFunc (self->stream, s_step_signal,
                                                  (void *) (intptr_t) event_fd),
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
    int rc = kvt_model_cuda_check (cudaStreamSynchronize (self->stream), "step");
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
    int rc;
    do {
        //  'All' goes on over the steps of a layer-major slice
        rc = kvt_model_cuda_step_launch (self, seq, max_tokens, NULL, 0, -1);
        rc = rc? rc: kvt_model_cuda_step_finish (self);
    } while (rc > 0 && max_tokens == 0);
    return rc;
}

//  --------------------------------------------------------------------------
//  One decode step over up to KVT_MODEL_CUDA_DECODE_ROWS sequences,
//  waiting for the stream: a step of a decode alone.

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
        if (model->lm_seq == seq)
            model->lm_seq = NULL;   //  Its layer-major slice is dropped
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

#endif
