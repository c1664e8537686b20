/*  =========================================================================
    kvt_compute_int - what the compute actor's files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The compute actor is one actor in two files: kvt_compute.c (the
    actor: admission, the steps of its batch, COMP_RUN) and
    kvt_compute_layers.c (runs that stream layer groups from disk, #4:
    the ticket table, MIG_LAYERS_READY, aborts and the layer-wait
    watchdog). This header is for those files only.
@end
*/

#ifndef KVT_COMPUTE_INT_H_INCLUDED
#define KVT_COMPUTE_INT_H_INCLUDED

#include "kvt_classes.h"
#include "kvt_actors.h"
#include "kvt_model_cuda_graph.h"
#include "kvt_fp8.cuh"
#include "kvt_layer_shard.h"
#include <sys/eventfd.h>

#define KVT_COMPUTE_TICKETS 1024    //  Layer-group tickets remembered (runs in flight << this)

//  What migration said of one layer-group ticket (#4)
typedef struct {
    uint64_t ticket;                //  Migration's ticket (0: free entry)
    uint64_t layers_ready;          //  Leading layers on the host
    bool failed;                    //  A block failed: the run must fail
} kvt_compute_ticket_t;

typedef struct {
    kvt_actor_t *actor;             //  Our skeleton
    kvt_model_shape_t shape;        //  From config
    size_t max_batch;               //  Sequences in flight at most
    size_t prefill_chunk;           //  Prompt tokens per loop turn
    bool cuda_graph;                //  GPU: decode steps replay as CUDA graphs
    bool shard_staging;             //  GPU, layer shard: decode stages host-held layers
                                    //  on the device (compute/shard_staging, #5)
    int layer_major;                //  GPU: compute/layer_major (kvt_model_cuda_layer_major_t)
    bool host_fp8;                  //  migration/cold_dtype = fp8: host slots hold FP8 forms
    kvt_model_t *model;             //  CPU model; NULL until START or on a GPU
    kvt_model_cuda_t *gpu_model;    //  GPU model when the slab is on the device
    uint64_t *spare;                //  Free spare block ids (a stack, GPU model)
    size_t spare_free;              //  Entries of spare that are free
    size_t spare_count;             //  Spare blocks of the slab
    kvt_arena_t *arena;             //  The GPU tier's slab (borrowed)
    kvt_arena_t *shard_arena;       //  Its host-held layers (layer sharding, #5), or NULL
    int gpu_layers;                 //  Layers of a block in 'arena' (all without a shard)
    kvt_arena_t *host_arena;        //  The host tier's slab (borrowed), or NULL
    zlist_t *waiting;               //  Jobs not begun yet, in arrival order
    zlist_t *active;                //  Jobs begun, in admission order
    int timer_id;                   //  The loop-turn timer, or -1 when not armed
    int64_t layers_wait_us;         //  compute/layers_wait_ms: a run whose layers stop
                                    //  coming this long fails (0: wait forever)
    int watchdog_id;                //  The timer that checks it, or -1
    int test_answer_delay_ms;       //  TEST ONLY: the first COMP_RUN_OK goes this late
    kvt_msg_t *test_held_answer;    //  TEST ONLY: that answer, while held
    int event_fd;                   //  Step completions (eventfd), polled; -1 before START
    bool in_flight;                 //  A step is launched and not finished
    int64_t step_launched_us;       //  When the step in flight was launched
    struct _kvt_compute_job_t *step_prefill;  //  The job the step prefills, or NULL
    struct _kvt_compute_job_t *step_batch [KVT_MODEL_MAX_BATCH];  //  The jobs it decodes
    size_t step_count;              //  Entries in step_batch
    int step_prefill_rc;            //  CPU: the slice's result, known at launch
    int step_decode_rc;             //  CPU: the decode step's result, known at launch
    kvt_compute_ticket_t tickets [KVT_COMPUTE_TICKETS]; //  Recent MIG_LAYERS_READY, by ticket mod KVT_COMPUTE_TICKETS
    kvt_model_cuda_gates_t *gates;  //  GPU layer gates, NULL on the CPU or unsupported
} self_t;

//  One request in the actor
typedef struct _kvt_compute_job_t {
    kvt_msg_t *request;             //  The COMP_RUN, kept for the reply
    uint32_t *tokens;               //  The prompt
    size_t token_count;             //  Its length
    const uint64_t *slots;          //  In 'request'
    size_t cached;                  //  Leading blocks already holding KV
    const uint64_t *host_slots;     //  In 'request': [cached] or NULL (see @header)
    size_t max_new;                 //  Tokens to decode
    uint32_t *out;                  //  Output tokens [max_new + 1]
    uint64_t *spare;                //  Spare block ids taken (GPU), or NULL
    size_t spare_count;             //  Entries in spare
    kvt_model_seq_t *seq;           //  CPU sequence once begun
    kvt_model_cuda_seq_t *gpu_seq;  //  GPU sequence once begun
    bool prefilled;                 //  Prompt done (first token out)
    int64_t arrived_us;             //  When COMP_RUN arrived
    int64_t first_us;               //  When its first token was out
    int64_t prefill_us;             //  Time of the steps that ran its prefill slices
    uint64_t ticket;                //  Layer-group ticket (0: every layer already there)
    uint64_t layers_ready;          //  With a ticket: leading layers on the host
    int gate;                       //  Its GPU gate, or -1
    bool aborted;                   //  Migration said a block failed: fail at step end
    int abort_rc;                   //  The code it fails with (with 'aborted')
    int64_t layers_at_us;           //  With a ticket: when its layers last came
} kvt_compute_job_t;

//  kvt_compute.c: answer 'job' with ERROR 'rc', give its spares back,
//  destroy it.
void
    kvt_compute_job_fail (self_t *self, kvt_compute_job_t **job_p, int rc);

//  kvt_compute.c: begin waiting jobs while there is room; arm the loop
//  turn if work remains.
void
    kvt_compute_admit (self_t *self);
void
    kvt_compute_arm (self_t *self);

//  kvt_compute_layers.c: the ticket table's entry of 'ticket', made if new
//  (an older ticket in its place is forgotten: a run keeps its own copy).
kvt_compute_ticket_t *
    kvt_compute_ticket (self_t *self, uint64_t ticket);

//  kvt_compute_layers.c: the layer-wait watchdog's timer (arg = self).
int
    kvt_compute_layers_watchdog (zloop_t *loop, int timer_id, void *arg);

//  kvt_compute_layers.c: the MIG_LAYERS_READY handler.
int
    kvt_compute_handle_layers_ready (void *self_ptr, kvt_msg_t **msg_p);

#endif
