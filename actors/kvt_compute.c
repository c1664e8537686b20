/*  =========================================================================
    kvt_compute - runs the model over KV blocks in the GPU tier

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    One compute actor per GPU. It owns the model (a Llama shape from the
    config with seeded random weights) and runs prefill and decode over
    the blocks it is handed by slot in the GPU tier's slab: the first
    'cached_blocks' hold KV already (from cache), the rest it writes.
    Accepts: COMP_RUN {tokens, slots, cached_blocks, max_new_tokens,
             host_slots} -> COMP_RUN_OK {tokens, ttft_us, total_us,
             prefill_us}; STATS.
    host_slots (empty, or one per cached block): UINT64_MAX where the
    cached block already holds its KV in its GPU slot, else the host tier
    slot it still lies in. Those blocks stream in layer by layer while
    the prefill runs (kvt_model.h: host_src): layer l's slices on the
    model's copy stream, the compute stream waiting on layer l's event
    only. The host slots must stay put until the reply (the scheduler
    holds them through migration); by the reply the GPU slots hold the
    blocks. Counters streamed_blocks, streamed_bytes.
    With migration/cold_dtype = fp8 a host slot holds the block's FP8 form
    (kernels/kvt_fp8.cuh): the model is told so (kvt_model_set_host_fp8,
    kvt_model_cuda_set_host_fp8 with the host slots' stride) and
    dequantizes layer l of every streamed block just before layer l runs,
    as it copies bf16 ones (issue #3). streamed_bytes then counts the FP8
    form's bytes; fp8_layers_dequantized counts layers x sequences so
    streamed.
    Layer groups (issue #4): a COMP_RUN with a ticket (not 0) streams blocks
    that migration is still reading from NVMe in layer groups; migration
    sends MIG_LAYERS_READY {ticket, layers_ready, failed} as each group of
    every block is on the host (possibly before the COMP_RUN arrives: a
    table of recent tickets keeps what was said). On the GPU the run starts
    at once: its streamed copies of layer l wait, on the copy stream, for
    a gate word (pinned host memory, cuStreamWaitValue32) that our loop
    sets to layers_ready (kvt_model.h, layer gates); the loop never blocks
    and the GPU never waits on the host. On the CPU model (or a driver
    without stream wait-value) the run is held out of the steps until
    every layer is ready. failed = 1 (a block failed a later group's
    checksum): the gate is opened so the GPU never waits forever, the run
    fails with KVT_ECHECKSUM (the scheduler recomputes it), and nothing it
    computed is kept. A run whose next group does not come within
    compute/layers_wait_ms (migration died or stalled) fails the same way
    with KVT_ETIMEOUT_PEER (layer_waits_timed_out). Gates are opened on
    any failure and at shutdown.
    Counters runs_gated (runs that arrived before all their layers were
    read), gate_waits (GPU runs started on a partial prefix), runs_held
    (runs held back for their layers), layers_ready_msgs, runs_aborted,
    layer_waits_timed_out.
@discuss
    Continuous batching: COMP_RUN begins a sequence and keeps the request;
    the reply goes out when that sequence has all its tokens. A loop turn
    (a zero-delay timer, armed while work remains and no step is in
    flight) launches one step: one slice of at most compute/prefill_chunk
    prompt tokens of the oldest sequence still prefilling, then one decode
    step for every sequence that was decoding when the step began, as one
    batch. At most compute/max_batch sequences are in flight; more wait in
    arrival order. The model is batch-invariant (kvt_model.h): a
    request's tokens and blocks do not depend on what ran beside it.
    ttft_us and total_us count from the request's arrival here.
    Steps complete through an eventfd, never by blocking the loop in a
    synchronize (issue #3): the GPU model queues the step, the copy of
    its sampled tokens into pinned memory and a host function that
    writes our eventfd (kvt_model_cuda_step_launch), and returns; our loop
    polls the eventfd and then finishes the step (tokens into the
    sequences, replies, admissions) and arms the next turn. While a step
    runs the loop keeps reading the inbox: a COMP_RUN is queued for the
    next turn, STATS answers at once. The CPU model has no device: its
    step runs inside the launch and we write the eventfd ourselves, so it
    takes the same path. One step is in flight at a time.
    Counters: decode_steps, batched_rows (sum of batch sizes: the mean
    batch is batched_rows / decode_steps), prefill_slices,
    mixed_steps (decode steps run while a sequence was mid-prefill),
    steps_async (steps finished from the eventfd), runs_mid_step
    (COMP_RUNs that arrived while a step was in flight), launch_us and
    finish_us (time the loop spent launching and finishing steps: on the
    GPU the only time it is not free; busy_us is their sum).
    When the supervisor put the "gpu" slab in device memory (a CUDA build
    with compute/device = cuda, or auto and a GPU present) the GPU model
    (kvt_model_cuda) runs there, using the slab's spare blocks as its
    scratch: each sequence takes KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS of them
    for its life, and a request waits while too few are free. Without a
    GPU (or with compute/device = cpu) the CPU model runs over the "gpu"
    shared-memory arena. The slots it is given are leased to it by the
    scheduler for the length of the request; no other actor writes them
    meanwhile.
    Static layer sharding (tier_gpu/layer_fraction < 1, issue #5): the
    slab's slots hold a block's first gpu_layers layers, the
    "gpu_shard" arena the others, same slot id (kvt_layer_shard.h); the
    CPU model gets both parts per block (kvt_model_seq_begin_split), the
    GPU model the mapped shard once (kvt_model_cuda_set_layer_shard).
@end
*/

#include "kvt_compute_int.h"

#define S_MAX_NEW_TOKENS KVT_MODEL_MAX_NEW_TOKENS  //  Longest decode one request may ask

static void
s_job_destroy (kvt_compute_job_t **job_p)
{
    kvt_compute_job_t *job = *job_p;
    if (job) {
        kvt_model_seq_destroy (&job->seq);
#ifdef KVT_WITH_CUDA
        kvt_model_cuda_seq_destroy (&job->gpu_seq);
#endif
        kvt_msg_destroy (&job->request);
        free (job->spare);
        free (job->out);
        free (job->tokens);
        free (job);
        *job_p = NULL;
    }
}

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->shape = kvt_runtime_model_shape (config);
    int64_t max_batch = kvt_config_int (config, "compute/max_batch");
    int64_t prefill_chunk = kvt_config_int (config, "compute/prefill_chunk");
    self->max_batch = (size_t) (max_batch < 1? 1
                              : max_batch > KVT_MODEL_MAX_BATCH? KVT_MODEL_MAX_BATCH
                              : max_batch);
    self->prefill_chunk = (size_t) (prefill_chunk < 1? 1: prefill_chunk);
    self->cuda_graph = kvt_config_int (config, "compute/cuda_graph") != 0;
    self->shard_staging = kvt_config_int (config, "compute/shard_staging") != 0;
    const char *layer_major = kvt_config_str (config, "compute/layer_major");
    self->layer_major = streq (layer_major, "off")? KVT_MODEL_CUDA_LAYER_MAJOR_OFF
                      : streq (layer_major, "always")? KVT_MODEL_CUDA_LAYER_MAJOR_ALWAYS
                      : streq (layer_major, "gated")? KVT_MODEL_CUDA_LAYER_MAJOR_GATED: -1;
    self->host_fp8 = streq (kvt_config_str (config, "migration/cold_dtype"), "fp8");
    self->waiting = zlist_new ();
    self->active = zlist_new ();
    self->timer_id = -1;
    self->watchdog_id = -1;
    self->layers_wait_us = kvt_config_int (config, "compute/layers_wait_ms") * 1000;
    self->test_answer_delay_ms = (int) kvt_config_int (config, "compute/test_answer_delay_ms");
    self->event_fd = -1;
    return self;
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        if (self->timer_id >= 0)
            zloop_timer_end (kvt_actor_loop (self->actor), self->timer_id);
        if (self->watchdog_id >= 0)
            zloop_timer_end (kvt_actor_loop (self->actor), self->watchdog_id);
        //  A step still in flight: each sequence's destroy waits for the
        //  stream, and the model's destroy for the step's eventfd signal,
        //  so the fd is closed last
        kvt_compute_job_t *job;
#ifdef KVT_WITH_CUDA
        //  Open every gate first: a copy waiting on one would hold up the
        //  sequences' destroy (it waits for the streams) forever
        for (job = (kvt_compute_job_t *) zlist_first (self->active); job && self->gates;
             job = (kvt_compute_job_t *) zlist_next (self->active))
            kvt_model_cuda_gate_set (self->gates, job->gate, KVT_MODEL_CUDA_GATE_OPEN);
#endif
        while ((job = (kvt_compute_job_t *) zlist_pop (self->active)))
            s_job_destroy (&job);
        while ((job = (kvt_compute_job_t *) zlist_pop (self->waiting)))
            s_job_destroy (&job);
        zlist_destroy (&self->active);
        zlist_destroy (&self->waiting);
#ifdef KVT_WITH_CUDA
        kvt_model_cuda_gates_destroy (&self->gates);
#endif
        kvt_model_destroy (&self->model);
#ifdef KVT_WITH_CUDA
        kvt_model_cuda_destroy (&self->gpu_model);
#endif
        if (self->event_fd >= 0) {
            zmq_pollitem_t item = { NULL, self->event_fd, ZMQ_POLLIN, 0 };
            zloop_poller_end (kvt_actor_loop (self->actor), &item);
            close (self->event_fd);
        }
        kvt_msg_destroy (&self->test_held_answer);
        free (self->spare);
        free (self);
        *self_p = NULL;
    }
}

//  The process is shutting down (SIGINT/SIGTERM set CZMQ's flag): a long
//  prefill stops at the next chunk instead of holding up the exit.
static bool
s_interrupted (void *arg)
{
    (void) arg;
    return zsys_interrupted != 0;
}

static int s_step_done (zloop_t *loop, zmq_pollitem_t *item, void *arg);

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    //  Steps end by a count on this eventfd, read by our loop
    self->event_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->event_fd < 0)
        return -errno;
    zmq_pollitem_t item = { NULL, self->event_fd, ZMQ_POLLIN, 0 };
    if (zloop_poller (kvt_actor_loop (self->actor), &item, s_step_done, self)) {
        close (self->event_fd);
        self->event_fd = -1;
        return -ENOMEM;
    }
    if (self->layers_wait_us > 0) {
        //  Checked a few times per allowed wait, at most every second
        int64_t tick_ms = self->layers_wait_us / 4000;
        tick_ms = tick_ms < 10? 10: tick_ms > 1000? 1000: tick_ms;
        self->watchdog_id = zloop_timer (kvt_actor_loop (self->actor), (size_t) tick_ms, 0,
                                         kvt_compute_layers_watchdog, self);
    }
    if (self->layer_major < 0) {
        kvt_log_error ("compute: config key 'compute/layer_major' must be gated, always or "
                       "off, not '%s'",
                       kvt_config_str (kvt_actor_config (self->actor), "compute/layer_major"));
        return KVT_ECONFIG;
    }
    self->arena = kvt_arena_find ("gpu");
    if (!self->arena) {
        kvt_log_error ("compute: no GPU tier arena in this process");
        return -ENOENT;
    }
    self->host_arena = kvt_arena_find ("host");     //  Only for streamed blocks
    //  Static layer sharding (#5): layers past gpu_layers in the shard
    self->shard_arena = kvt_arena_find (KVT_LAYER_SHARD_ARENA);
    if (self->shard_arena && kvt_arena_on_device (self->arena)
    &&  !kvt_arena_pinned (self->shard_arena)) {
        //  A compute process: the device reads and writes the shard here
        int rc = kvt_arena_pin (self->shard_arena);
        if (rc)
            return rc;
    }
    if (self->host_arena && kvt_arena_on_device (self->arena)
    &&  !kvt_arena_pinned (self->host_arena)) {
        //  A compute process: the device must reach the host slab here too
        int rc = kvt_arena_pin (self->host_arena);
        if (rc)
            return rc;
    }
    kvt_block_shape_t block;
    if (kvt_arena_on_device (self->arena)) {
#ifdef KVT_WITH_CUDA
        self->gpu_model = kvt_model_cuda_new (&self->shape);
        if (!self->gpu_model)
            return KVT_ECONFIG;
        kvt_model_cuda_set_cancel (self->gpu_model, s_interrupted, NULL);
        if (!self->cuda_graph)
            kvt_model_cuda_set_graphs (self->gpu_model, false);
        kvt_model_cuda_set_layer_major (self->gpu_model,
                                        (kvt_model_cuda_layer_major_t) self->layer_major);
        if (self->host_fp8 && self->host_arena)
            kvt_model_cuda_set_host_fp8 (self->gpu_model,
                                         kvt_arena_block_bytes (self->host_arena));
        block = kvt_model_cuda_block_shape (self->gpu_model);
        self->gates = kvt_model_cuda_gates_new ();     //  NULL: runs wait for all layers
        self->spare_count = kvt_arena_spare_count (self->arena);
        self->spare = (uint64_t *) kvt_zmalloc ((self->spare_count + 1) * sizeof (uint64_t));
        //  A stack, lowest id on top
        for (size_t k = 0; k < self->spare_count; k++)
            self->spare [k] = kvt_arena_block_count (self->arena) + self->spare_count - 1 - k;
        self->spare_free = self->spare_count;
        kvt_log_info ("compute: the model runs on the GPU (%zu spare blocks)",
                      self->spare_count);
#else
        return KVT_ECONFIG;         //  A device slab needs a CUDA build
#endif
    }
    else {
        self->model = kvt_model_new (&self->shape);
        if (!self->model)
            return KVT_ECONFIG;
        kvt_model_set_cancel (self->model, s_interrupted, NULL);
        kvt_model_set_host_fp8 (self->model, self->host_fp8);
        block = kvt_model_block_shape (self->model);
    }
    size_t shard_bytes = self->shard_arena? kvt_arena_block_bytes (self->shard_arena): 0;
    size_t slice_bytes = kvt_block_bytes (&block) / (size_t) (block.layers > 0? block.layers: 1);
    if (kvt_block_bytes (&block) != kvt_arena_block_bytes (self->arena) + shard_bytes
    ||  kvt_arena_block_bytes (self->arena) % slice_bytes) {
        kvt_log_error ("compute: model blocks are %zu bytes, the GPU tier's %zu (+ %zu in "
                       "its layer shard)", kvt_block_bytes (&block),
                       kvt_arena_block_bytes (self->arena), shard_bytes);
        return KVT_ECONFIG;
    }
    self->gpu_layers = (int) (kvt_arena_block_bytes (self->arena) / slice_bytes);
#ifdef KVT_WITH_CUDA
    if (self->gpu_model && self->shard_arena) {
        //  Layers past gpu_layers live in the mapped host shard (#5):
        //  decode steps and prefill chunks copy each one's slices to the
        //  device ahead of its layer (compute/shard_staging) or read them
        //  in place over PCIe
        if (kvt_arena_block_count (self->shard_arena)
            < kvt_arena_block_count (self->arena) + self->spare_count
        ||  kvt_model_cuda_set_layer_shard (self->gpu_model, self->gpu_layers,
                                            kvt_arena_base (self->shard_arena),
                                            shard_bytes) != 0) {
            kvt_log_error ("compute: the layer shard (%zu slots of %zu bytes) does not fit "
                           "the GPU model", kvt_arena_block_count (self->shard_arena),
                           shard_bytes);
            return KVT_ECONFIG;
        }
        kvt_model_cuda_set_shard_staging (self->gpu_model, self->shard_staging);
        kvt_log_info ("compute: %d of %d layers of each block on the GPU, the rest read "
                      "from host memory (tier_gpu/layer_fraction; staging %s)",
                      self->gpu_layers, self->shape.layers,
                      self->shard_staging? "on": "off");
    }
#endif
    return 0;
}

//  Spare blocks 'job' needs on the GPU model (0 on the CPU).
static size_t
s_spare_need (self_t *self, const kvt_compute_job_t *job)
{
    if (!self->spare)
        return 0;
    return KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (self->shape.block_tokens, job->token_count,
                                            job->max_new);
}

//  Give an answered job's spare blocks back and destroy it (its model
//  sequence first: the model is done with the spares once it is gone).
static void
s_job_release (self_t *self, kvt_compute_job_t **job_p)
{
    kvt_compute_job_t *job = *job_p;
#ifdef KVT_WITH_CUDA
    if (job->gate >= 0) {
        //  Whatever became of the run, its copies must not wait any more
        kvt_model_cuda_gate_set (self->gates, job->gate, KVT_MODEL_CUDA_GATE_OPEN);
        kvt_model_cuda_seq_destroy (&job->gpu_seq);
        kvt_model_cuda_gate_close (self->gates, job->gate);
        job->gate = -1;
    }
#endif
    if (job->spare) {
        kvt_model_seq_destroy (&job->seq);
#ifdef KVT_WITH_CUDA
        kvt_model_cuda_seq_destroy (&job->gpu_seq);
#endif
        for (size_t k = job->spare_count; k > 0; k--)
            self->spare [self->spare_free++] = job->spare [k - 1];
    }
    s_job_destroy (job_p);
}

//  Answer 'job' with ERROR 'rc' and destroy it.
void
kvt_compute_job_fail (self_t *self, kvt_compute_job_t **job_p, int rc)
{
    kvt_compute_job_t *job = *job_p;
    kvt_actor_reply_error (self->actor, job->request, rc, kvt_strerror (rc));
    kvt_actor_count (self->actor, "run_errors", 1);
    s_job_release (self, job_p);
}

//  TEST ONLY (compute/test_answer_delay_ms): the held answer goes now.
static int
s_held_answer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    self_t *self = (self_t *) arg;
    kvt_actor_reply (self->actor, &self->test_held_answer);
    return 0;
}

//  Answer 'job' with COMP_RUN_OK, give its spares back, destroy it.
static void
s_job_done (self_t *self, kvt_compute_job_t **job_p)
{
    kvt_compute_job_t *job = *job_p;
    int64_t now = kvt_now_us ();
    uint64_t *out64 = (uint64_t *) kvt_zmalloc ((job->max_new + 1) * sizeof (uint64_t));
    for (size_t k = 0; k < job->max_new; k++)
        out64 [k] = job->out [k];
    kvt_msg_t *reply = kvt_msg_reply_new (job->request, KVT_MSG_COMP_RUN_OK);
    kvt_msg_set_array (reply, KVT_COMP_RUN_OK_TOKENS, out64, job->max_new);
    kvt_msg_set_u64 (reply, KVT_COMP_RUN_OK_TTFT_US, (uint64_t) (job->first_us - job->arrived_us));
    kvt_msg_set_u64 (reply, KVT_COMP_RUN_OK_TOTAL_US, (uint64_t) (now - job->arrived_us));
    kvt_msg_set_u64 (reply, KVT_COMP_RUN_OK_PREFILL_US, (uint64_t) job->prefill_us);
    free (out64);
    kvt_actor_count (self->actor, "runs", 1);
    kvt_actor_count (self->actor, "prefill_tokens",
                     job->token_count - job->cached * (size_t) self->shape.block_tokens);
    kvt_actor_count (self->actor, "decode_tokens", job->max_new);
    if (self->test_answer_delay_ms > 0) {
        //  TEST ONLY: the run is done, its answer late (a run that
        //  outlives the scheduler's runtime/compute_timeout_ms)
        self->test_held_answer = reply;
        zloop_timer (kvt_actor_loop (self->actor), (size_t) self->test_answer_delay_ms, 1,
                     s_held_answer, self);
        self->test_answer_delay_ms = 0;
    }
    else
        kvt_actor_reply (self->actor, &reply);
    s_job_release (self, job_p);
}


//  Leading layers of 'job' whose streamed bytes are on the host.
static uint64_t
s_layers_ready (self_t *self, const kvt_compute_job_t *job)
{
    return job->ticket? job->layers_ready: (uint64_t) self->shape.layers;
}

//  True if 'job' must stay out of the steps for now: its layers are not
//  all read, and no GPU gate can hold its copies back.
static bool
s_held (self_t *self, const kvt_compute_job_t *job)
{
    return job->ticket && !self->gates
        && s_layers_ready (self, job) < (uint64_t) self->shape.layers;
}

//  Begin waiting jobs while the batch and the spare blocks have room, in
//  arrival order (a job that cannot get its spares holds up those behind
//  it, so a large request is not starved; a job held for its layers does
//  not).
void
kvt_compute_admit (self_t *self)
{
    kvt_compute_job_t *job;
    while (zlist_size (self->active) < self->max_batch) {
        job = (kvt_compute_job_t *) zlist_first (self->waiting);
        while (job && s_held (self, job))
            job = (kvt_compute_job_t *) zlist_next (self->waiting);
        if (!job)
            break;
        size_t need = s_spare_need (self, job);
        if (need > self->spare_free)
            break;
        zlist_remove (self->waiting, job);
        int rc = -ENOTSUP;
        //  Host copies of the blocks still in the host tier
        size_t streamed = 0;
        void **host_src = NULL;
        if (job->host_slots) {
            host_src = (void **) kvt_zmalloc ((job->cached + 1) * sizeof (void *));
            for (size_t k = 0; k < job->cached; k++)
                if (job->host_slots [k] != UINT64_MAX) {
                    host_src [k] = kvt_arena_block (self->host_arena, job->host_slots [k]);
                    streamed++;
                }
        }
        if (need > 0) {
            job->spare = (uint64_t *) kvt_zmalloc (need * sizeof (uint64_t));
            for (size_t k = 0; k < need; k++)
                job->spare [k] = self->spare [--self->spare_free];
            job->spare_count = need;
        }
#ifdef KVT_WITH_CUDA
        if (self->gpu_model && job->ticket && self->gates
        &&  s_layers_ready (self, job) < (uint64_t) self->shape.layers) {
            //  Starts now; each layer's copy waits on the GPU for its group
            job->gate = kvt_model_cuda_gate_open (self->gates);
            if (job->gate >= 0) {
                kvt_model_cuda_gate_set (self->gates, job->gate,
                                         (uint32_t) s_layers_ready (self, job));
                kvt_actor_count (self->actor, "gate_waits", 1);
            }
        }
        if (self->gpu_model && job->ticket && self->gates && job->gate < 0
        &&  s_layers_ready (self, job) < (uint64_t) self->shape.layers)
            rc = -ENOSPC;           //  More gates than max_batch: cannot happen
        else
        if (self->gpu_model) {
            kvt_model_cuda_gate_arm (self->gates, job->gate);
            rc = kvt_model_cuda_seq_begin (self->gpu_model, job->tokens, job->token_count,
                                           kvt_arena_base (self->arena),
                                           kvt_arena_block_bytes (self->arena), job->slots,
                                           job->cached, (const void *const *) host_src,
                                           job->spare, job->spare_count,
                                           job->max_new, job->out, &job->gpu_seq);
            kvt_model_cuda_gate_arm (self->gates, -1);
        }
#endif
        if (self->model) {
            size_t full = job->token_count / (size_t) self->shape.block_tokens;
            void **blocks = (void **) kvt_zmalloc ((full + 1) * sizeof (void *));
            void **shards = (void **) kvt_zmalloc ((full + 1) * sizeof (void *));
            for (size_t k = 0; k < full; k++) {
                blocks [k] = kvt_arena_block (self->arena, job->slots [k]);
                if (self->shard_arena)  //  Layer sharding: the slot's other layers
                    shards [k] = kvt_arena_block (self->shard_arena, job->slots [k]);
            }
            rc = kvt_model_seq_begin_split (self->model, job->tokens, job->token_count, blocks,
                                            shards, self->gpu_layers, job->cached, host_src,
                                            job->max_new, job->out, &job->seq);
            free (shards);
            free (blocks);
        }
        free (host_src);
        if (rc == 0 && streamed > 0) {
            //  Bytes read from the host slots: the FP8 form's, with fp8
            int planes = self->shape.layers * 2 * self->shape.kv_heads;
            int plane_elems = self->shape.block_tokens * self->shape.head_dim;
            size_t bytes = self->host_fp8? kvt_fp8_block_bytes (planes, plane_elems)
                                         : kvt_arena_block_bytes (self->arena)
                                           + (self->shard_arena? kvt_arena_block_bytes (
                                                  self->shard_arena): 0);
            kvt_actor_count (self->actor, "streamed_blocks", streamed);
            kvt_actor_count (self->actor, "streamed_bytes", streamed * bytes);
            if (self->host_fp8)
                kvt_actor_count (self->actor, "fp8_layers_dequantized",
                                 (uint64_t) self->shape.layers);
        }
        if (rc)
            kvt_compute_job_fail (self, &job, rc);
        else
            zlist_append (self->active, job);
    }
    kvt_actor_gauge (self->actor, "seqs_active", zlist_size (self->active));
    kvt_actor_gauge (self->actor, "seqs_waiting", zlist_size (self->waiting));
}

//  True while the job's sequence still owes decode steps.
static bool
s_decoding (const kvt_compute_job_t *job)
{
#ifdef KVT_WITH_CUDA
    if (job->gpu_seq)
        return kvt_model_cuda_seq_decoding (job->gpu_seq);
#endif
    return job->seq && kvt_model_seq_decoding (job->seq);
}

//  Output tokens the job's sequence has written.
static size_t
s_emitted (const kvt_compute_job_t *job)
{
#ifdef KVT_WITH_CUDA
    if (job->gpu_seq)
        return kvt_model_cuda_seq_emitted (job->gpu_seq);
#endif
    return job->seq? kvt_model_seq_emitted (job->seq): 0;
}

//  Fail the jobs of a failed step with 'rc' (a sequence of a failed step
//  is unusable).
static void
s_step_fail (self_t *self, kvt_compute_job_t *prefill, kvt_compute_job_t **batch, size_t count, int rc)
{
    if (prefill) {
        zlist_remove (self->active, prefill);
        kvt_compute_job_fail (self, &prefill, rc);
    }
    for (size_t k = 0; k < count; k++) {
        zlist_remove (self->active, batch [k]);
        kvt_compute_job_fail (self, &batch [k], rc);
    }
}

//  Launch one step: one slice of the oldest job still prefilling, and one
//  decode step over every job that is decoding (chosen before the slice,
//  so a job whose prompt ends now decodes from the next step on). On the
//  GPU the model queues it and its eventfd signal and returns; on the CPU
//  the work runs here and we signal the eventfd ourselves. Either way
//  s_step_done finishes it from our loop. Returns true if a step is in
//  flight.
static bool
s_step_launch (self_t *self)
{
    kvt_compute_job_t *prefill = (kvt_compute_job_t *) zlist_first (self->active);
    while (prefill && prefill->prefilled)
        prefill = (kvt_compute_job_t *) zlist_next (self->active);
    kvt_compute_job_t **batch = self->step_batch;
    size_t count = 0;
    for (kvt_compute_job_t *job = (kvt_compute_job_t *) zlist_first (self->active);
         job && count < KVT_MODEL_MAX_BATCH; job = (kvt_compute_job_t *) zlist_next (self->active))
        if (job->prefilled && s_decoding (job))
            batch [count++] = job;
    if (!prefill && count == 0)
        return false;
    int rc = -ENOTSUP;
#ifdef KVT_WITH_CUDA
    if (self->gpu_model) {
        kvt_model_cuda_seq_t *seqs [KVT_MODEL_MAX_BATCH];
        for (size_t k = 0; k < count; k++)
            seqs [k] = batch [k]->gpu_seq;
        rc = kvt_model_cuda_step_launch (self->gpu_model, prefill? prefill->gpu_seq: NULL,
                                         self->prefill_chunk, seqs, count, self->event_fd);
    }
#endif
    if (self->model) {
        self->step_prefill_rc = 0;
        self->step_decode_rc = 0;
        if (prefill)
            self->step_prefill_rc = kvt_model_seq_prefill (self->model, prefill->seq,
                                                           self->prefill_chunk);
        if (count > 0) {
            kvt_model_seq_t *seqs [KVT_MODEL_MAX_BATCH];
            for (size_t k = 0; k < count; k++)
                seqs [k] = batch [k]->seq;
            self->step_decode_rc = kvt_model_decode (self->model, seqs, count);
        }
        uint64_t one = 1;
        rc = write (self->event_fd, &one, sizeof (one)) == sizeof (one)? 0: -errno;
    }
    if (rc) {
        s_step_fail (self, prefill, batch, count, rc);
        return false;
    }
    self->in_flight = true;
    self->step_prefill = prefill;
    self->step_count = count;
    return true;
}

static int s_turn (zloop_t *loop, int timer_id, void *arg);

//  True if a waiting job could begin now (a job held for its layers
//  cannot: MIG_LAYERS_READY arms the loop again when it can).
static bool
s_waiting_runnable (self_t *self)
{
    for (kvt_compute_job_t *job = (kvt_compute_job_t *) zlist_first (self->waiting); job;
         job = (kvt_compute_job_t *) zlist_next (self->waiting))
        if (!s_held (self, job))
            return true;
    return false;
}

//  Arm the loop-turn timer if work remains, no step is in flight and the
//  timer is not armed.
void
kvt_compute_arm (self_t *self)
{
    if (self->timer_id < 0 && !self->in_flight
    &&  (zlist_size (self->active) || s_waiting_runnable (self)))
        self->timer_id = zloop_timer (kvt_actor_loop (self->actor), 0, 1, s_turn, self);
}

//  One loop turn: admit, launch a step (finished by s_step_done).
static int
s_turn (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    self_t *self = (self_t *) arg;
    self->timer_id = -1;            //  One-shot: the loop has dropped it
    if (self->in_flight)
        return 0;                   //  s_step_done launches the next
    kvt_compute_job_t *job;
    if (zsys_interrupted) {
        //  Shutting down: answer everyone now, run nothing more
        while ((job = (kvt_compute_job_t *) zlist_pop (self->active)))
            kvt_compute_job_fail (self, &job, -ECANCELED);
        while ((job = (kvt_compute_job_t *) zlist_pop (self->waiting)))
            kvt_compute_job_fail (self, &job, -ECANCELED);
        return 0;
    }
    int64_t started = kvt_now_us ();
    kvt_compute_admit (self);
    self->step_launched_us = started;
    s_step_launch (self);
    int64_t spent = kvt_now_us () - started;
    kvt_actor_count (self->actor, "busy_us", (uint64_t) spent);
    kvt_actor_count (self->actor, "launch_us", (uint64_t) spent);
    kvt_compute_arm (self);
    return 0;
}

//  Our loop: the step in flight is done (its eventfd fired). Finish it,
//  answer the jobs that have all their tokens, launch the next turn.
static int
s_step_done (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    self_t *self = (self_t *) arg;
    uint64_t fired = 0;
    if (read (item->fd, &fired, sizeof (fired)) != sizeof (fired) || !self->in_flight)
        return 0;                   //  Spurious wake-up
    int64_t started = kvt_now_us ();
    self->in_flight = false;
    kvt_compute_job_t *prefill = self->step_prefill;
    size_t count = self->step_count;
    self->step_prefill = NULL;
    self->step_count = 0;
    int prefill_rc = 0, decode_rc = 0;
#ifdef KVT_WITH_CUDA
    if (self->gpu_model)
        prefill_rc = decode_rc = kvt_model_cuda_step_finish (self->gpu_model);
    if (self->gpu_model && decode_rc > 0)
        decode_rc = 0;              //  Prompt positions left, not an error
#endif
    if (self->model) {
        prefill_rc = self->step_prefill_rc;
        decode_rc = self->step_decode_rc;
    }
    kvt_actor_count (self->actor, "steps_async", 1);
    if (prefill) {
        kvt_actor_count (self->actor, "prefill_slices", 1);
        prefill->prefill_us += started - self->step_launched_us;
        if (prefill_rc < 0) {
            zlist_remove (self->active, prefill);
            kvt_compute_job_fail (self, &prefill, prefill_rc);
        }
        else
        if (prefill_rc == 0) {
            prefill->prefilled = true;
            prefill->first_us = kvt_now_us ();
        }
    }
    if (decode_rc)
        s_step_fail (self, NULL, self->step_batch, count, decode_rc);
    else
    if (count > 0) {
        kvt_actor_count (self->actor, "decode_steps", 1);
        kvt_actor_count (self->actor, "batched_rows", count);
        if (prefill && prefill_rc > 0)     //  Beside a prefill still mid-prompt
            kvt_actor_count (self->actor, "mixed_steps", 1);
    }
    //  Fail the jobs migration gave up on during the step, then answer
    //  the jobs that have all their tokens
    kvt_compute_job_t *job = (kvt_compute_job_t *) zlist_first (self->active);
    while (job) {
        kvt_compute_job_t *next = (kvt_compute_job_t *) zlist_next (self->active);
        if (job->aborted) {
            zlist_remove (self->active, job);
            kvt_compute_job_fail (self, &job, job->abort_rc);
        }
        else
        if (job->prefilled && !s_decoding (job) && s_emitted (job) == job->max_new) {
            zlist_remove (self->active, job);
            s_job_done (self, &job);
        }
        job = next;
    }
    kvt_compute_admit (self);
    int64_t spent = kvt_now_us () - started;
    kvt_actor_count (self->actor, "busy_us", (uint64_t) spent);
    kvt_actor_count (self->actor, "finish_us", (uint64_t) spent);
    kvt_compute_arm (self);
    kvt_actor_turn_end (self->actor, "", "steps_done", started);
    return 0;
}

static int
s_handle_run (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    kvt_msg_t *request = *msg_p;
    size_t token_count, slot_count;
    const uint64_t *tokens64 = kvt_msg_array (request, KVT_COMP_RUN_TOKENS, &token_count);
    const uint64_t *slots = kvt_msg_array (request, KVT_COMP_RUN_SLOTS, &slot_count);
    uint64_t cached = kvt_msg_u64 (request, KVT_COMP_RUN_CACHED_BLOCKS);
    uint64_t max_new = kvt_msg_u64 (request, KVT_COMP_RUN_MAX_NEW_TOKENS);
    size_t full_blocks = token_count / (size_t) self->shape.block_tokens;
    if (token_count == 0 || slot_count != full_blocks || cached > full_blocks
    ||  max_new > S_MAX_NEW_TOKENS)
        return -EINVAL;
    for (size_t k = 0; k < slot_count; k++)
        if (slots [k] >= kvt_arena_block_count (self->arena))
            return -ERANGE;
    for (size_t k = 0; k < token_count; k++)
        if (tokens64 [k] >= (uint64_t) self->shape.vocab)
            return -EINVAL;
    size_t host_count;
    const uint64_t *host_slots = kvt_msg_array (request, KVT_COMP_RUN_HOST_SLOTS, &host_count);
    if (host_count == 0)
        host_slots = NULL;
    else
    if (host_count != cached)
        return -EINVAL;
    for (size_t k = 0; host_slots && k < host_count; k++) {
        if (host_slots [k] == UINT64_MAX)
            continue;
        if (!self->host_arena)
            return -ENOENT;         //  No host tier in this process
        if (host_slots [k] >= kvt_arena_block_count (self->host_arena))
            return -ERANGE;
        if (kvt_arena_on_device (self->arena) && !kvt_arena_pinned (self->host_arena))
            return -ENOTSUP;        //  The device cannot reach it
        if (kvt_arena_block_bytes (self->host_arena) < kvt_arena_block_bytes (self->arena))
            return -EINVAL;
    }
    kvt_compute_job_t *job = (kvt_compute_job_t *) kvt_zmalloc (sizeof (kvt_compute_job_t));
    job->gate = -1;
    job->ticket = host_slots? kvt_msg_u64 (request, KVT_COMP_RUN_TICKET): 0;
    job->arrived_us = kvt_now_us ();
    job->layers_at_us = job->arrived_us;
    job->tokens = (uint32_t *) kvt_zmalloc (token_count * sizeof (uint32_t));
    for (size_t k = 0; k < token_count; k++)
        job->tokens [k] = (uint32_t) tokens64 [k];
    job->token_count = token_count;
    job->slots = slots;
    job->cached = (size_t) cached;
    job->host_slots = host_slots;
    job->max_new = (size_t) max_new;
    job->out = (uint32_t *) kvt_zmalloc ((max_new + 1) * sizeof (uint32_t));
    if (s_spare_need (self, job) > self->spare_count) {
        s_job_destroy (&job);
        return -EINVAL;             //  Could never get its scratch
    }
    job->request = request;
    *msg_p = NULL;                  //  Ours until the reply
    if (job->ticket) {
        kvt_compute_ticket_t *entry = kvt_compute_ticket (self, job->ticket);
        job->layers_ready = entry->layers_ready;
        if (entry->failed) {        //  Migration gave up on it already
            kvt_actor_count (self->actor, "runs_aborted", 1);
            kvt_compute_job_fail (self, &job, KVT_ECHECKSUM);
            return 0;
        }
        if (entry->layers_ready < (uint64_t) self->shape.layers)
            kvt_actor_count (self->actor, "runs_gated", 1);
        if (s_held (self, job))
            kvt_actor_count (self->actor, "runs_held", 1);
    }
    zlist_append (self->waiting, job);
    if (self->in_flight)
        kvt_actor_count (self->actor, "runs_mid_step", 1);  //  Queued for the next turn
    kvt_compute_admit (self);
    kvt_compute_arm (self);
    return 0;
}

const kvt_actor_def_t kvt_compute_def = {
    .name = "compute",
    .create = s_self_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .handlers = {
        [KVT_MSG_COMP_RUN] = s_handle_run,
        [KVT_MSG_MIG_LAYERS_READY] = kvt_compute_handle_layers_ready,
    },
};
