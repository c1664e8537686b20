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
    Accepts: COMP_RUN {tokens, slots, cached_blocks, max_new_tokens}
             -> COMP_RUN_OK {tokens, ttft_us, total_us}; STATS.
@discuss
    When the supervisor put the "gpu" slab in device memory (a CUDA build
    with compute/device = cuda, or auto and a GPU present) the GPU model
    (kvt_model_cuda) runs there, using the slab's spare blocks as its
    scratch. Without a GPU (or with compute/device = cpu) the CPU model
    runs over the "gpu" shared-memory arena. The slots it is given are
    leased to it by the scheduler for the length of the request; no other
    actor writes them meanwhile.
@end
*/

#include "kvt_classes.h"
#include "kvt_actors.h"

#define S_MAX_NEW_TOKENS KVT_MODEL_MAX_NEW_TOKENS  //  Longest decode one request may ask

typedef struct {
    kvt_actor_t *actor;             //  Our skeleton
    kvt_model_shape_t shape;        //  From config
    kvt_model_t *model;             //  CPU model; NULL until START or on a GPU
    kvt_model_cuda_t *gpu_model;    //  GPU model when the slab is on the device
    uint64_t *spare;                //  The slab's spare block ids (GPU model)
    size_t spare_count;             //  Entries in spare
    kvt_arena_t *arena;             //  The GPU tier's slab (borrowed)
} self_t;

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->shape = (kvt_model_shape_t) {
        .layers = (int) kvt_config_int (config, "model/layers"),
        .heads = (int) kvt_config_int (config, "model/heads"),
        .kv_heads = (int) kvt_config_int (config, "model/kv_heads"),
        .head_dim = (int) kvt_config_int (config, "model/head_dim"),
        .hidden = (int) kvt_config_int (config, "model/hidden"),
        .intermediate = (int) kvt_config_int (config, "model/intermediate"),
        .vocab = (int) kvt_config_int (config, "model/vocab"),
        .block_tokens = (int) kvt_config_int (config, "model/block_tokens"),
        .seed = (uint64_t) kvt_config_int (config, "model/seed"),
    };
    return self;
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        kvt_model_destroy (&self->model);
#ifdef KVT_WITH_CUDA
        kvt_model_cuda_destroy (&self->gpu_model);
#endif
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

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    self->arena = kvt_arena_find ("gpu");
    if (!self->arena) {
        kvt_log_error ("compute: no GPU tier arena in this process");
        return -ENOENT;
    }
    kvt_block_shape_t block;
    if (kvt_arena_on_device (self->arena)) {
#ifdef KVT_WITH_CUDA
        self->gpu_model = kvt_model_cuda_new (&self->shape);
        if (!self->gpu_model)
            return KVT_ECONFIG;
        kvt_model_cuda_set_cancel (self->gpu_model, s_interrupted, NULL);
        block = kvt_model_cuda_block_shape (self->gpu_model);
        self->spare_count = kvt_arena_spare_count (self->arena);
        self->spare = (uint64_t *) kvt_zmalloc ((self->spare_count + 1) * sizeof (uint64_t));
        for (size_t k = 0; k < self->spare_count; k++)
            self->spare [k] = kvt_arena_block_count (self->arena) + k;
        kvt_log_info ("compute: the model runs on the GPU");
#else
        return KVT_ECONFIG;         //  A device slab needs a CUDA build
#endif
    }
    else {
        self->model = kvt_model_new (&self->shape);
        if (!self->model)
            return KVT_ECONFIG;
        kvt_model_set_cancel (self->model, s_interrupted, NULL);
        block = kvt_model_block_shape (self->model);
    }
    if (kvt_block_bytes (&block) != kvt_arena_block_bytes (self->arena)) {
        kvt_log_error ("compute: model blocks are %zu bytes, the GPU tier's %zu",
                       kvt_block_bytes (&block), kvt_arena_block_bytes (self->arena));
        return KVT_ECONFIG;
    }
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
    uint32_t *tokens = (uint32_t *) kvt_zmalloc (token_count * sizeof (uint32_t));
    for (size_t k = 0; k < token_count; k++) {
        if (tokens64 [k] >= (uint64_t) self->shape.vocab) {
            free (tokens);
            return -EINVAL;
        }
        tokens [k] = (uint32_t) tokens64 [k];
    }
    void **blocks = (void **) kvt_zmalloc ((slot_count + 1) * sizeof (void *));
    for (size_t k = 0; k < slot_count; k++)
        blocks [k] = kvt_arena_block (self->arena, slots [k]);
    uint32_t *out = (uint32_t *) kvt_zmalloc ((max_new + 1) * sizeof (uint32_t));
    int64_t started = kvt_now_us (), ttft_us = 0;
    int rc = -ENOTSUP;
#ifdef KVT_WITH_CUDA
    if (self->gpu_model)
        rc = kvt_model_cuda_generate (self->gpu_model, tokens, token_count,
                                      kvt_arena_base (self->arena),
                                      kvt_arena_block_bytes (self->arena), slots, cached,
                                      self->spare, self->spare_count, max_new, out, &ttft_us);
#endif
    if (self->model)
        rc = kvt_model_generate (self->model, tokens, token_count, blocks, cached, max_new,
                                 out, &ttft_us);
    int64_t total_us = kvt_now_us () - started;
    if (rc == 0) {
        uint64_t *out64 = (uint64_t *) kvt_zmalloc ((max_new + 1) * sizeof (uint64_t));
        for (size_t k = 0; k < max_new; k++)
            out64 [k] = out [k];
        kvt_msg_t *reply = kvt_msg_reply_new (request, KVT_MSG_COMP_RUN_OK);
        kvt_msg_set_array (reply, KVT_COMP_RUN_OK_TOKENS, out64, max_new);
        kvt_msg_set_u64 (reply, KVT_COMP_RUN_OK_TTFT_US, (uint64_t) ttft_us);
        kvt_msg_set_u64 (reply, KVT_COMP_RUN_OK_TOTAL_US, (uint64_t) total_us);
        free (out64);
        kvt_actor_count (self->actor, "runs", 1);
        kvt_actor_count (self->actor, "prefill_tokens",
                         token_count - cached * (size_t) self->shape.block_tokens);
        kvt_actor_count (self->actor, "decode_tokens", max_new);
        kvt_actor_count (self->actor, "busy_us", (uint64_t) total_us);
        rc = kvt_actor_reply (self->actor, &reply);
    }
    free (out);
    free (blocks);
    free (tokens);
    return rc;
}

const kvt_actor_def_t kvt_compute_def = {
    .name = "compute",
    .create = s_self_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .handlers = {
        [KVT_MSG_COMP_RUN] = s_handle_run,
    },
};
