/*  =========================================================================
    kvt_model_cuda_layer_major - the GPU model's layer-major prefill slices

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Issue #4. A run whose cached layers still stream in from disk (layer
    groups, gated copies: kvt_model_cuda_gate.c) prefills its new tokens
    layer-major: every 512-row chunk's layer l before layer l + 1, so all
    chunks' first layers run while the later groups are read, where chunk
    by chunk only the first chunk's could. A slice keeps each chunk's
    residual stream and indices in the model (x_lm, d_rows_lm) and goes a
    few layers a step (S_LM_CHUNK_LAYERS chunk-layers), so other
    sequences' decode steps run between its pieces and no step queues more
    behind a layer wait than the driver's launch queue holds. The forward
    pass itself is kvt_model_cuda_forward_layer_major (kvt_model_cuda.c);
    the bytes equal chunk-by-chunk prefill's (kvt_model_cuda_test.c).
@end
*/

#include "kvt_model_cuda_int.h"

#ifdef KVT_WITH_CUDA

//  Chunk-layers (one chunk through one layer, ~12 launches) queued per
//  step of a layer-major slice: a step that waits on a streamed layer
//  holds everything queued behind it, and launches beyond the driver's
//  queue would hold this thread, the one that opens the gates (a
//  deadlock seen on the H100 with a whole 8-chunk slice in one step).
//  32 is what one chunk-by-chunk step of a 32-layer model queues (an
//  80-layer model's would queue 80: its gated runs go layer-major even
//  for one chunk).
#define S_LM_CHUNK_LAYERS 32

//  --------------------------------------------------------------------------
//  Whether 'seq''s next prefill positions start a layer-major slice: no
//  other sequence's slice holds the buffers, self->layer_major is not
//  off, and its layers still stream in (even for one chunk, so that what
//  a step queues behind a layer wait stays bounded for a model of any
//  depth), or it is always and more than one chunk is left.

bool
kvt_model_cuda_layer_major_starts (kvt_model_cuda_t *self, const kvt_model_cuda_seq_t *seq)
{
    if (self->lm_seq || self->layer_major == KVT_MODEL_CUDA_LAYER_MAJOR_OFF)
        return false;
    return seq->must_wait
        || (self->layer_major == KVT_MODEL_CUDA_LAYER_MAJOR_ALWAYS
            && seq->token_count - seq->pos > KVT_MODEL_CUDA_CHUNK);
}

//  --------------------------------------------------------------------------
//  Queue the next piece of 'seq''s layer-major slice, starting one (up to
//  KVT_MODEL_CUDA_LAYER_MAJOR_ROWS positions from seq->pos, every chunk's
//  indices staged and embedded) when none is in progress: the next
//  S_LM_CHUNK_LAYERS / chunks layers of every chunk. After the last
//  layer the slice's positions count as done and the first token is
//  sampled when the prompt is.

int
kvt_model_cuda_prefill_layer_major (kvt_model_cuda_t *self, kvt_model_cuda_seq_t *seq)
{
    const size_t chunk = KVT_MODEL_CUDA_CHUNK;
    const int layers = self->shape.layers;
    int rc;
    if (seq->lm_rows == 0) {
        size_t rows = seq->token_count - seq->pos;
        rows = rows < KVT_MODEL_CUDA_LAYER_MAJOR_ROWS? rows: KVT_MODEL_CUDA_LAYER_MAJOR_ROWS;
        const size_t chunks = (rows + chunk - 1) / chunk;
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_layer_major_reserve (self, chunks));
        for (size_t c = 0; c < chunks; c++) {
            size_t n = c == chunks - 1? rows - c * chunk: chunk;
            kvt_model_cuda_rows_fill (self, seq, seq->pos + c * chunk, (int) n,
                         self->h_rows_lm + c * KVT_MODEL_CUDA_ROWS_COUNT);
        }
        //  Pinned: never waits (h_rows_lm is rewritten only by a later
        //  slice's first step, after kvt_model_cuda_step_finish)
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemcpyAsync (self->d_rows_lm,
                                                                   self->h_rows_lm,
                                                                   chunks
                                                                   * KVT_MODEL_CUDA_ROWS_COUNT
                                                                   * sizeof (int32_t),
                                                                   cudaMemcpyHostToDevice,
                                                                   self->stream), "stage"));
        seq->lm_rows = rows;
        seq->lm_next = 0;
        self->lm_seq = seq;
    }
    const size_t rows = seq->lm_rows;
    const int chunks = (int) ((rows + chunk - 1) / chunk);
    const int last_rows = (int) (rows - (size_t) (chunks - 1) * chunk);
    int per_step = S_LM_CHUNK_LAYERS / chunks;
    per_step = per_step < 1? 1: per_step;
    const int from = seq->lm_next;
    const int to = from + per_step < layers? from + per_step: layers;
    //  Decode steps between the pieces stage their own tables
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_table (self, seq));
    //  and their own staging: a sharded model's piece that reaches
    //  host-held layers stages them here, once for all its chunks
    const cudaEvent_t *ready = seq->must_wait? seq->layer_ready: NULL;
    if (to > self->gpu_layers && kvt_model_cuda_stage_prefill (self, seq->pos + rows))
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_stage_prepare_prefill (self, seq, seq->pos, rows,
                                                                  ready));
    rc = kvt_model_cuda_forward_layer_major (self, chunks, last_rows, from, to, seq->slab,
                                             seq->block_bytes, (int) seq->table_len, ready);
    self->stage_active = false;
    self->stage_wait = NULL;
    if (rc)
        return rc;
    seq->lm_next = to;
    if (to < layers)
        return 0;
    //  The slice is done: its last row goes where sampling reads it
    const size_t row_bytes = (size_t) self->shape.hidden * 2;
    const char *last = (const char *) self->x_lm
                     + ((size_t) (chunks - 1) * chunk + (size_t) (last_rows - 1)) * row_bytes;
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_check (cudaMemcpyAsync (self->x, last, row_bytes,
                                                               cudaMemcpyDeviceToDevice,
                                                               self->stream), "last row"));
    seq->pos += rows;
    seq->lm_rows = 0;
    seq->must_wait = false;         //  Later work on the stream comes after the waits
    self->lm_seq = NULL;
    if (seq->pos == seq->token_count && seq->max_new > 0) {
        KVT_MODEL_CUDA_TRY (kvt_model_cuda_sample_queue (self, 0, 1, 1, self->h_sampled));
        self->step_first = true;
    }
    return 0;
}

#endif
