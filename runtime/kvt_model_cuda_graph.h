/*  =========================================================================
    kvt_model_cuda_graph - the GPU model's decode steps as CUDA graphs

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The GPU model (kvt_model.h) replays each decode step as a CUDA graph
    (issue #3): the step's small inputs (tokens, positions, block tables,
    lengths) are copied into fixed device buffers, then one cudaGraphLaunch
    runs the ~450 kernels of the 32-layer step. On by default; the
    environment variable KVT_CUDA_GRAPH=0 turns it off for models created
    afterwards, kvt_model_cuda_set_graphs for one model. Graph and eager
    steps give identical tokens and KV bytes. Functions exist in CUDA
    builds only.
@end
*/

#ifndef KVT_MODEL_CUDA_GRAPH_H_INCLUDED
#define KVT_MODEL_CUDA_GRAPH_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include "kvt_model.h"

#ifdef __cplusplus
extern "C" {
#endif

//  What a model's graphs did so far
typedef struct {
    uint64_t launches;              //  Decode steps replayed as a graph
    uint64_t captures;              //  Graphs captured and instantiated
    uint64_t updates;               //  Graphs re-captured into their exec (a buffer moved)
} kvt_model_cuda_graph_stats_t;

//  Replay decode steps as CUDA graphs (true) or launch every kernel
//  (false). Takes effect at the next step; turning graphs off keeps the
//  ones captured.
void
    kvt_model_cuda_set_graphs (kvt_model_cuda_t *self, bool on);

//  True if decode steps replay as graphs.
bool
    kvt_model_cuda_graphs (const kvt_model_cuda_t *self);

//  Return what the model's graphs did so far.
kvt_model_cuda_graph_stats_t
    kvt_model_cuda_graph_stats (const kvt_model_cuda_t *self);

#ifdef __cplusplus
}
#endif

#endif
