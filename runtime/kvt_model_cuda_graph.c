/*  =========================================================================
    kvt_model_cuda_graph - the GPU model's decode steps as CUDA graphs

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A decode step of the GPU model (kvt_model_cuda.c) is ~450 launches
    at the Llama-3-8B shape; its host cost was most of a batch-1 step.
    Here a step's forward pass and sampling are captured once into a CUDA
    graph and replayed with one cudaGraphLaunch (issue #3).
@discuss
    What a graph bakes in is its key: rows (the batch rounded up to a
    power of two; rows past the batch have dest block -1, so the K/V
    kernel writes nothing for them, and length 0, so attention reads
    nothing), the table width and the KV split count (both powers of two,
    covering the step), the slab and block_bytes. Everything else the
    kernels read from fixed device buffers (d_rows, d_table) staged
    before the launch. Per-row kernels and the 64-row GEMMs give a row
    the same bits whatever the row count, and splits past a sequence's
    end add exact zeros, so the tokens and KV bytes equal the eager
    path's (kvt_model_cuda_test checks). A graph also holds the addresses
    of d_table and the workspace (and a staged step's ring and staging
    table): when one moved (they only grow), the
    step is re-captured and put into the graph's exec by
    cudaGraphExecUpdate (instantiated again if that fails). At most
    KVT_MODEL_CUDA_GRAPHS graphs are kept, the least recently used goes.
    A layer-sharded model's staged step (kvt_model_cuda_stage.c) is a
    graph too, with staged and its ring's blocks per layer in the key:
    the copies of its host-held layers (copy engines, other slots every
    step) are queued outside the graph before its launch, one ring
    buffer per layer, and the graph waits on each layer's event through
    an external event node; nothing queued outside waits on the graph's
    progress, so no ring buffer is reused within a step. Those copies are
    the latest records of their events until the step is finished (one
    step is in flight at a time: kvt_model_cuda_step_launch answers
    -EBUSY), so the wait nodes see them whether CUDA resolves a wait at
    the launch or when the node runs.
    Capture is thread-local; cuBLAS runs on its own set workspace (set at
    model creation) so captured and eager GEMMs pick the same algorithm.
    If a capture fails, graphs are turned off for the model (logged once)
    and the step runs eagerly.
@end
*/

#include "kvt_model_cuda_int.h"
#include "kvt_model_cuda_graph.h"

#ifdef KVT_WITH_CUDA

//  Queue the step: forward pass of 'rows' rows, then sampling into h_sampled [1 ..].
static int
s_step_queue (kvt_model_cuda_t *self, int rows, void *slab, size_t block_bytes, int table_len,
              int splits)
{
    int rc = kvt_model_cuda_forward (self, rows, true, slab, block_bytes, table_len,
                                     splits * KVT_MODEL_DECODE_SPLIT, NULL);
    if (rc == 0)
        rc = kvt_model_cuda_sample_queue (self, 0, rows, KVT_MODEL_CUDA_DECODE_ROWS,
                                          self->h_sampled + 1);
    return rc;
}

//  Capture the step into *graph_p. Returns 0 or an error (no graph).
static int
s_capture (kvt_model_cuda_t *self, int rows, void *slab, size_t block_bytes, int table_len,
           int splits, cudaGraph_t *graph_p)
{
    *graph_p = NULL;
    int rc = kvt_model_cuda_check (cudaStreamBeginCapture (self->stream,
                                                           cudaStreamCaptureModeThreadLocal),
                                   "begin capture");
    if (rc)
        return rc;
    rc = s_step_queue (self, rows, slab, block_bytes, table_len, splits);
    cudaGraph_t graph = NULL;
    int end = kvt_model_cuda_check (cudaStreamEndCapture (self->stream, &graph), "end capture");
    if (rc == 0)
        rc = end;
    if (rc) {
        if (graph)
            cudaGraphDestroy (graph);
        cudaGetLastError ();        //  Clear a sticky capture error
        return rc? rc: KVT_ECUDA;
    }
    *graph_p = graph;
    return 0;
}

//  --------------------------------------------------------------------------
//  Queue one decode step as a graph (see kvt_model_cuda_int.h).

int
kvt_model_cuda_graph_decode (kvt_model_cuda_t *self, int rows, void *slab, size_t block_bytes,
                             int table_len, int splits)
{
    assert (self);
    //  Buffers first: a capture must not allocate or synchronise
    int rc;
    KVT_MODEL_CUDA_TRY (kvt_model_cuda_workspace_reserve (self, rows, splits));
    kvt_model_cuda_graph_t *entry = NULL, *victim = NULL;
    for (int k = 0; k < KVT_MODEL_CUDA_GRAPHS; k++) {
        kvt_model_cuda_graph_t *graph = &self->graph [k];
        if (graph->exec && graph->rows == rows && graph->table_len == table_len
        &&  graph->splits == splits && graph->slab == slab
        &&  graph->block_bytes == block_bytes && graph->staged == self->stage_active
        &&  (!graph->staged || graph->stage_count == self->stage_count)) {
            entry = graph;
            break;
        }
        if (!victim || (victim->exec && (!graph->exec || graph->used < victim->used)))
            victim = graph;
    }
    if (!entry || entry->d_table != self->d_table || entry->workspace != self->workspace
    ||  (entry->staged && (entry->stage != self->stage
                           || entry->d_stage_table != self->d_stage_table))) {
        cudaGraph_t graph;
        rc = s_capture (self, rows, slab, block_bytes, table_len, splits, &graph);
        if (rc) {
            kvt_log_warn ("kvt_model_cuda: cannot capture a decode step (%s); graphs off",
                          kvt_strerror (rc));
            self->graph_on = false;
            return s_step_queue (self, rows, slab, block_bytes, table_len, splits);
        }
        bool updated = false;
        if (entry) {
            cudaGraphExecUpdateResultInfo info;
            updated = cudaGraphExecUpdate (entry->exec, graph, &info) == cudaSuccess;
            if (updated)
                self->graph_updates++;
            else {
                cudaGetLastError ();
                cudaGraphExecDestroy (entry->exec);
                entry->exec = NULL;
            }
        }
        else {
            entry = victim;
            if (entry->exec)
                cudaGraphExecDestroy (entry->exec);
            entry->exec = NULL;
        }
        if (!updated) {
            rc = kvt_model_cuda_check (cudaGraphInstantiate (&entry->exec, graph, 0),
                                       "instantiate");
            if (rc) {
                entry->exec = NULL;
                cudaGraphDestroy (graph);
                return rc;
            }
            self->graph_captures++;
        }
        cudaGraphDestroy (graph);
        entry->rows = rows;
        entry->table_len = table_len;
        entry->splits = splits;
        entry->slab = slab;
        entry->block_bytes = block_bytes;
        entry->d_table = self->d_table;
        entry->workspace = self->workspace;
        entry->staged = self->stage_active;
        entry->stage_count = self->stage_count;
        entry->stage = self->stage;
        entry->d_stage_table = self->d_stage_table;
    }
    entry->used = ++self->graph_clock;
    return kvt_model_cuda_check (cudaGraphLaunch (entry->exec, self->stream), "graph launch");
}

//  --------------------------------------------------------------------------
//  Destroy every graph kept.

void
kvt_model_cuda_graph_purge (kvt_model_cuda_t *self)
{
    assert (self);
    for (int k = 0; k < KVT_MODEL_CUDA_GRAPHS; k++)
        if (self->graph [k].exec) {
            cudaGraphExecDestroy (self->graph [k].exec);
            self->graph [k].exec = NULL;
        }
}

//  --------------------------------------------------------------------------
//  Replay decode steps as graphs, or not.

void
kvt_model_cuda_set_graphs (kvt_model_cuda_t *self, bool on)
{
    assert (self);
    self->graph_on = on;
}

//  True if decode steps replay as graphs.
bool
kvt_model_cuda_graphs (const kvt_model_cuda_t *self)
{
    assert (self);
    return self->graph_on;
}

//  What the model's graphs did so far.
kvt_model_cuda_graph_stats_t
kvt_model_cuda_graph_stats (const kvt_model_cuda_t *self)
{
    assert (self);
    kvt_model_cuda_graph_stats_t stats = { self->graph_clock, self->graph_captures,
                                           self->graph_updates };
    return stats;
}

#endif
