/*  =========================================================================
    kvt_model - a Llama-shaped model with seeded random weights (CPU path)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The CPU path of the synthetic model: RMSNorm, RoPE (theta 500000, rotate
    half), GQA attention over bf16 K/V, SwiGLU MLP, greedy argmax. Weights are
    fp32 holding bf16 values, drawn from splitmix64 streams seeded by the
    shape's seed, so a bf16 GPU path can use the very same numbers.
@discuss
    Layout: every projection W is [in][out] row-major, so y = x.W walks W
    rows contiguously (axpy form) and the inner loop vectorises without
    reordering any sum. Each output element is summed over 'in' in
    ascending order whatever the batch, so a token's arithmetic does not
    depend on how the prompt was split into cached and computed parts.
    Attention reads a per-sequence fp32 mirror of the K/V: every value in it
    is a bf16 value widened exactly (from a cached block, or from the
    rounding of a freshly computed K/V), K in tiles of 8 positions x
    head_dim and V [position][d]. Scores are summed over d in ascending
    order; softmax is two-pass (max, then e^x and a sum in an order fixed
    by the context length alone).
    Prompt positions are processed in chunks of KVT_MODEL_CHUNK tokens,
    layer by layer inside a chunk (causality makes that exact); a decode
    step is a chunk of one row per sequence (each at its own position,
    attending to its own mirror), through the same code. As no row's
    arithmetic depends on the row count or on the other rows, a sequence
    gives the same numbers alone or in any batch, and however its prompt
    is sliced.
    Weights, for a GPU path that wants to rebuild them from the seed:
    tensor t draws from splitmix64 with state seed ^ (t x 0xD1B54A32D192ED03),
    advanced once; each value is bf16 (offset + scale x U), U = (next >> 40)
    x 2^-23 - 1. Ids: 0 embedding (scale sqrt 3), 1 final norm (1 +- 0.1),
    2 lm_head, then 16 + 16 x layer + { 0 attention norm, 1 Wq, 2 Wk, 3 Wv,
    4 Wo, 5 MLP norm, 6 W_gate, 7 W_up, 8 W_down }; projections use scale
    sqrt (3 / fan_in), norms offset 1 and scale 0.1.
    Not thread-safe: a model and its sequences belong to one thread (the
    compute actor).
    Files: this one (weights, the model's life, the arithmetic of a
    forward chunk and sampling), kvt_model_seq.c (the sequence API and
    kvt_model_generate), kvt_model_test.c (reference model and selftest);
    kvt_model_int.h holds what they share.
@end
*/

#include "kvt_model_int.h"

//  --------------------------------------------------------------------------
//  Weights: one independent splitmix64 stream per tensor, so any tensor
//  can be regenerated alone (a GPU path may rebuild the weights from the
//  seed).

//  Uniform in [-1, 1) with 24 bits of resolution.
static float
s_uniform (uint64_t *state)
{
    return (float) (kvt_splitmix64 (state) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

//  --------------------------------------------------------------------------
//  Allocate 'count' floats holding bf16-rounded values of
//  offset + scale x U[-1, 1), drawn from stream 'tensor_id' of 'seed'.

static float *
s_tensor_new (uint64_t seed, uint64_t tensor_id, size_t count, float offset, float scale)
{
    float *tensor = (float *) malloc (count * sizeof (float));
    if (!tensor)
        return NULL;
    uint64_t state = seed ^ (tensor_id * 0xD1B54A32D192ED03ull);
    (void) kvt_splitmix64 (&state);   //  Decorrelate nearby tensor ids
    for (size_t i = 0; i < count; i++)
        tensor [i] = kvt_round_bf16 (offset + scale * s_uniform (&state));
    return tensor;
}

//  Scale that gives U[-1,1) x scale a variance of 1 / fan_in.
static float
s_fan_in_scale (int fan_in)
{
    return sqrtf (3.0f / (float) fan_in);
}

//  --------------------------------------------------------------------------
//  Check a shape; logs and returns false if it is not usable.

static bool
s_shape_valid (const kvt_model_shape_t *shape)
{
    const int dims [] = { shape->layers, shape->heads, shape->kv_heads, shape->head_dim,
                          shape->hidden, shape->intermediate, shape->vocab,
                          shape->block_tokens };
    for (size_t i = 0; i < sizeof (dims) / sizeof (dims [0]); i++)
        if (dims [i] <= 0 || dims [i] > KVT_MODEL_MAX_DIM) {
            kvt_log_error ("kvt_model: every size must be in 1..%d", KVT_MODEL_MAX_DIM);
            return false;
        }
    if (shape->heads % shape->kv_heads) {
        kvt_log_error ("kvt_model: kv_heads (%d) must divide heads (%d)",
                       shape->kv_heads, shape->heads);
        return false;
    }
    if (shape->head_dim % 2) {
        kvt_log_error ("kvt_model: head_dim (%d) must be even for RoPE", shape->head_dim);
        return false;
    }
    if (shape->vocab < 2) {
        kvt_log_error ("kvt_model: vocab must be at least 2");
        return false;
    }
    double q_dim = (double) shape->heads * shape->head_dim;
    double kv_dim = (double) shape->kv_heads * shape->head_dim;
    double per_layer = (double) shape->hidden * (2 * q_dim + 2 * kv_dim + 2)
                     + 3.0 * shape->hidden * shape->intermediate;
    double weights = per_layer * shape->layers + 2.0 * shape->vocab * shape->hidden;
    if (q_dim > KVT_MODEL_MAX_DIM || weights > KVT_MODEL_MAX_WEIGHTS) {
        kvt_log_error ("kvt_model: shape too large (%.0f weights)", weights);
        return false;
    }
    return true;
}

//  --------------------------------------------------------------------------
//  Create the model with seeded random weights. Returns NULL and logs why
//  if the shape is invalid or the weights do not fit in memory.

kvt_model_t *
kvt_model_new (const kvt_model_shape_t *shape)
{
    assert (shape);
    if (!s_shape_valid (shape))
        return NULL;
    kvt_model_t *self = (kvt_model_t *) kvt_zmalloc (sizeof (kvt_model_t));
    self->shape = *shape;
    self->q_dim = shape->heads * shape->head_dim;
    self->kv_dim = shape->kv_heads * shape->head_dim;
    self->group = shape->heads / shape->kv_heads;
    self->layer = (kvt_model_layer_t *) kvt_zmalloc ((size_t) shape->layers
                                                     * sizeof (kvt_model_layer_t));

    const size_t hidden = (size_t) shape->hidden;
    const size_t inter = (size_t) shape->intermediate;
    const uint64_t seed = shape->seed;
    bool ok = true;
    self->embed = s_tensor_new (seed, 0, (size_t) shape->vocab * hidden, 0.0f,
                                sqrtf (3.0f));
    self->final_norm = s_tensor_new (seed, 1, hidden, 1.0f, 0.1f);
    self->lm_head = s_tensor_new (seed, 2, hidden * shape->vocab, 0.0f,
                                  s_fan_in_scale (shape->hidden));
    ok = self->embed && self->final_norm && self->lm_head;
    for (int l = 0; ok && l < shape->layers; l++) {
        kvt_model_layer_t *layer = &self->layer [l];
        uint64_t id = 16 + (uint64_t) l * 16;
        float in_scale = s_fan_in_scale (shape->hidden);
        layer->attn_norm = s_tensor_new (seed, id + 0, hidden, 1.0f, 0.1f);
        layer->wq = s_tensor_new (seed, id + 1, hidden * self->q_dim, 0.0f, in_scale);
        layer->wk = s_tensor_new (seed, id + 2, hidden * self->kv_dim, 0.0f, in_scale);
        layer->wv = s_tensor_new (seed, id + 3, hidden * self->kv_dim, 0.0f, in_scale);
        layer->wo = s_tensor_new (seed, id + 4, (size_t) self->q_dim * hidden, 0.0f,
                                  s_fan_in_scale (self->q_dim));
        layer->mlp_norm = s_tensor_new (seed, id + 5, hidden, 1.0f, 0.1f);
        layer->w_gate = s_tensor_new (seed, id + 6, hidden * inter, 0.0f, in_scale);
        layer->w_up = s_tensor_new (seed, id + 7, hidden * inter, 0.0f, in_scale);
        layer->w_down = s_tensor_new (seed, id + 8, inter * hidden, 0.0f,
                                      s_fan_in_scale (shape->intermediate));
        ok = layer->attn_norm && layer->wq && layer->wk && layer->wv && layer->wo
          && layer->mlp_norm && layer->w_gate && layer->w_up && layer->w_down;
    }
    const int half = shape->head_dim / 2;
    self->rope_freq = (double *) kvt_zmalloc ((size_t) half * sizeof (double));
    for (int i = 0; i < half; i++)
        self->rope_freq [i] = pow (KVT_MODEL_ROPE_THETA, -2.0 * i / shape->head_dim);

    const size_t chunk = KVT_MODEL_CHUNK;
    if (ok) {
        self->x = (float *) malloc (chunk * hidden * sizeof (float));
        self->xn = (float *) malloc (chunk * hidden * sizeof (float));
        self->q = (float *) malloc (chunk * self->q_dim * sizeof (float));
        self->k = (float *) malloc (chunk * self->kv_dim * sizeof (float));
        self->v = (float *) malloc (chunk * self->kv_dim * sizeof (float));
        self->att = (float *) malloc (chunk * self->q_dim * sizeof (float));
        self->proj = (float *) malloc (chunk * hidden * sizeof (float));
        self->gate = (float *) malloc (chunk * inter * sizeof (float));
        self->up = (float *) malloc (chunk * inter * sizeof (float));
        self->rope_cos = (float *) malloc (chunk * half * sizeof (float));
        self->rope_sin = (float *) malloc (chunk * half * sizeof (float));
        self->logits = (float *) malloc (chunk * shape->vocab * sizeof (float));
        ok = self->x && self->xn && self->q && self->k && self->v && self->att
          && self->proj && self->gate && self->up && self->rope_cos && self->rope_sin
          && self->logits;
    }
    if (!ok) {
        kvt_log_error ("kvt_model: out of memory for the weights of this shape");
        kvt_model_destroy (&self);  //  Safe on a half-built model
    }
    return self;
}

//  --------------------------------------------------------------------------
//  Destroy; NULL-safe, safe on a half-built model, nulls the caller's pointer.

void
kvt_model_destroy (kvt_model_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        kvt_model_t *self = *self_p;
        kvt_freen (self->spare_kt);
        kvt_freen (self->spare_vv);
        kvt_freen (self->logits);
        kvt_freen (self->rope_sin);
        kvt_freen (self->rope_cos);
        kvt_freen (self->up);
        kvt_freen (self->gate);
        kvt_freen (self->proj);
        kvt_freen (self->att);
        kvt_freen (self->v);
        kvt_freen (self->k);
        kvt_freen (self->q);
        kvt_freen (self->xn);
        kvt_freen (self->x);
        kvt_freen (self->rope_freq);
        for (int l = 0; l < self->shape.layers; l++) {
            kvt_model_layer_t *layer = &self->layer [l];
            kvt_freen (layer->w_down);
            kvt_freen (layer->w_up);
            kvt_freen (layer->w_gate);
            kvt_freen (layer->mlp_norm);
            kvt_freen (layer->wo);
            kvt_freen (layer->wv);
            kvt_freen (layer->wk);
            kvt_freen (layer->wq);
            kvt_freen (layer->attn_norm);
        }
        kvt_freen (self->layer);
        kvt_freen (self->lm_head);
        kvt_freen (self->final_norm);
        kvt_freen (self->embed);
        kvt_freen (self);
        *self_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  The geometry of this model's KV blocks (bf16).

kvt_block_shape_t
kvt_model_block_shape (const kvt_model_t *self)
{
    assert (self);
    kvt_block_shape_t block = {
        .layers = self->shape.layers,
        .kv_heads = self->shape.kv_heads,
        .head_dim = self->shape.head_dim,
        .block_tokens = self->shape.block_tokens,
        .dtype_bytes = 2
    };
    return block;
}

//  --------------------------------------------------------------------------
//  Four floats through GCC vector extensions (one SSE register on baseline
//  x86-64), so the hot loops vectorise at any -O level without -march.
//  Each lane does the scalar operations, so an element's result does not
//  depend on whether it fell in the vector body or the scalar tail.

typedef float s_v4_t __attribute__ ((vector_size (16)));
typedef int32_t s_i4_t __attribute__ ((vector_size (16)));

//  Load four floats from any address.
static inline s_v4_t
s_v4_load (const float *src)
{
    s_v4_t value;
    memcpy (&value, src, sizeof (value));
    return value;
}

//  Store four floats to any address.
static inline void
s_v4_store (float *dest, s_v4_t value)
{
    memcpy (dest, &value, sizeof (value));
}

//  e^x on four lanes, x <= 0 (softmax after subtracting the max): Cephes'
//  expf polynomial (about 2 ulp), lanes below -87 give 2^-126 x e^r, a
//  weight of ~1e-38 that vanishes beside the max's weight of 1. Same
//  arithmetic in every lane, so a score's weight never depends on its
//  position in the vector.
static inline s_v4_t
s_exp_v4 (s_v4_t x)
{
    const s_v4_t lower = { -87.0f, -87.0f, -87.0f, -87.0f };
    const s_v4_t magic = { 12582912.0f, 12582912.0f, 12582912.0f, 12582912.0f };
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const s_i4_t below = x < lower;       //  All ones where x < -87
    x = (s_v4_t) ((below & (s_i4_t) lower) | (~below & (s_i4_t) x));
    s_v4_t n = (x * 1.44269504088896341f + magic) - magic;  //  round to nearest
    s_v4_t r = x - n * ln2_hi - n * ln2_lo;
    s_v4_t poly = r * 1.9875691500e-4f + 1.3981999507e-3f;
    poly = poly * r + 8.3334519073e-3f;
    poly = poly * r + 4.1665795894e-2f;
    poly = poly * r + 1.6666665459e-1f;
    poly = poly * r + 5.0000001201e-1f;
    poly = poly * r * r + r + 1.0f;
    const s_i4_t bits = (__builtin_convertvector (n, s_i4_t) + 127) << 23;
    return poly * (s_v4_t) bits;        //  x 2^n
}

//  --------------------------------------------------------------------------
//  y [rows][out] = x [rows][in] . w [in][out]. Every y element starts at 0
//  and adds x [r][i] x w [i][j] for i ascending, whatever 'rows' is and
//  whichever path (4x8 register tile, 1x8, scalar) computes it. The tile
//  keeps eight accumulators in registers and reuses each W load four times.

static void
s_matmul (float *restrict y, const float *restrict x, const float *restrict w,
          int rows, int in, int out)
{
    int j = 0;
    for (; j + 8 <= out; j += 8) {
        int r = 0;
        for (; r + 4 <= rows; r += 4) {
            const float *x0 = x + (size_t) r * in;
            const float *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in;
            s_v4_t a00 = { 0 }, a01 = { 0 }, a10 = { 0 }, a11 = { 0 };
            s_v4_t a20 = { 0 }, a21 = { 0 }, a30 = { 0 }, a31 = { 0 };
            const float *wi = w + j;
            for (int i = 0; i < in; i++, wi += out) {
                const s_v4_t w0 = s_v4_load (wi), w1 = s_v4_load (wi + 4);
                a00 += x0 [i] * w0;
                a01 += x0 [i] * w1;
                a10 += x1 [i] * w0;
                a11 += x1 [i] * w1;
                a20 += x2 [i] * w0;
                a21 += x2 [i] * w1;
                a30 += x3 [i] * w0;
                a31 += x3 [i] * w1;
            }
            float *yr = y + (size_t) r * out + j;
            s_v4_store (yr, a00);
            s_v4_store (yr + 4, a01);
            s_v4_store (yr + out, a10);
            s_v4_store (yr + out + 4, a11);
            s_v4_store (yr + 2 * out, a20);
            s_v4_store (yr + 2 * out + 4, a21);
            s_v4_store (yr + 3 * out, a30);
            s_v4_store (yr + 3 * out + 4, a31);
        }
        for (; r < rows; r++) {
            const float *xr = x + (size_t) r * in;
            s_v4_t a0 = { 0 }, a1 = { 0 };
            const float *wi = w + j;
            for (int i = 0; i < in; i++, wi += out) {
                a0 += xr [i] * s_v4_load (wi);
                a1 += xr [i] * s_v4_load (wi + 4);
            }
            s_v4_store (y + (size_t) r * out + j, a0);
            s_v4_store (y + (size_t) r * out + j + 4, a1);
        }
    }
    for (; j < out; j++)
        for (int r = 0; r < rows; r++) {
            float acc = 0.0f;
            for (int i = 0; i < in; i++)
                acc += x [(size_t) r * in + i] * w [(size_t) i * out + j];
            y [(size_t) r * out + j] = acc;
        }
}

//  y = x / rms (x) * weight over 'n' elements, summed in index order.
void
kvt_model_rmsnorm (float *restrict y, const float *restrict x, const float *restrict weight, int n)
{
    float sum_sq = 0.0f;
    for (int i = 0; i < n; i++)
        sum_sq += x [i] * x [i];
    const float inv_rms = 1.0f / sqrtf (sum_sq / (float) n + KVT_MODEL_NORM_EPS);
    for (int i = 0; i < n; i++)
        y [i] = x [i] * inv_rms * weight [i];
}

//  Rotate each head of 'vec' (head_count heads) by the angles of one token.
static void
s_rope (float *vec, int head_count, int head_dim, const float *cosv, const float *sinv)
{
    const int half = head_dim / 2;
    for (int h = 0; h < head_count; h++) {
        float *head = vec + (size_t) h * head_dim;
        for (int i = 0; i < half; i++) {
            const float x0 = head [i];
            const float x1 = head [i + half];
            head [i] = x0 * cosv [i] - x1 * sinv [i];
            head [i + half] = x1 * cosv [i] + x0 * sinv [i];
        }
    }
}

//  --------------------------------------------------------------------------
//  Give 'seq' a K/V mirror and scores for 'positions'. Returns 0 or
//  -ENOMEM (also when that many positions cannot be sized).

int
kvt_model_seq_reserve (kvt_model_seq_t *seq, size_t positions)
{
    const kvt_model_t *model = seq->model;
    const size_t per_pos = (size_t) model->shape.layers * model->kv_dim;
    if (positions > SIZE_MAX / sizeof (float) / per_pos - 8)
        return -ENOMEM;
    positions = (positions + 7) & ~(size_t) 7;    //  Whole 8-position K tiles
    kvt_model_t *owner = seq->model;
    if (owner->spare_kt && owner->spare_cap >= positions
    &&  owner->spare_cap <= 2 * positions) {
        //  The last mirror fits (and is not much larger): take it
        seq->kt = owner->spare_kt;
        seq->vv = owner->spare_vv;
        positions = owner->spare_cap;
        owner->spare_kt = owner->spare_vv = NULL;
        owner->spare_cap = 0;
    }
    else {
        seq->kt = (float *) malloc (per_pos * positions * sizeof (float));
        seq->vv = (float *) malloc (per_pos * positions * sizeof (float));
    }
    seq->scores = (float *) malloc (positions * sizeof (float));
    if (!seq->kt || !seq->vv || !seq->scores)
        return -ENOMEM;
    seq->kv_cap = positions;
    return 0;
}

//  K mirror of (layer, kv_head, pos): element d is at [d x 8]. Eight
//  positions share a tile of head_dim x 8 floats, so the score loop reads
//  one contiguous kilobyte per tile instead of head_dim strided rows.
static inline float *
s_kt_at (kvt_model_seq_t *seq, int layer, int kv_head, size_t pos)
{
    const kvt_model_shape_t *shape = &seq->model->shape;
    return seq->kt + ((size_t) layer * shape->kv_heads + kv_head)
                     * seq->kv_cap * shape->head_dim
                   + (pos / 8) * 8 * shape->head_dim + pos % 8;
}

//  V mirror of (layer, kv_head, position): head_dim contiguous floats.
static inline float *
s_v_row (kvt_model_seq_t *seq, int layer, int kv_head, size_t pos)
{
    const kvt_model_shape_t *shape = &seq->model->shape;
    return seq->vv + (((size_t) layer * shape->kv_heads + kv_head) * seq->kv_cap
                      + pos) * shape->head_dim;
}

//  --------------------------------------------------------------------------
//  Widen layer 'l' of one cached block's K/V, 'slice' (that layer's slice
//  of the block), into the mirror (positions block_index x block_tokens
//  onwards).

static void
s_load_layer (kvt_model_seq_t *seq, const uint8_t *slice, size_t block_index, int l)
{
    const kvt_model_shape_t *shape = &seq->model->shape;
    const size_t first = block_index * shape->block_tokens;
    for (int g = 0; g < shape->kv_heads; g++)
        for (int t = 0; t < shape->block_tokens; t++) {
            float *vrow = s_v_row (seq, l, g, first + t);
            for (int d = 0; d < shape->head_dim; d++) {
                s_kt_at (seq, l, g, first + t) [d * 8] = kvt_bf16_to_float (
                    kvt_model_get_bf16 (slice, kvt_model_block_index (shape, 0, 0, g, t, d)));
                vrow [d] = kvt_bf16_to_float (
                    kvt_model_get_bf16 (slice, kvt_model_block_index (shape, 0, 1, g, t, d)));
            }
        }
}

//  Widen every layer of one cached block into the mirror.
void
kvt_model_load_block (kvt_model_seq_t *seq, size_t block_index)
{
    void *block = seq->blocks [block_index];
    void *shard = seq->shards? seq->shards [block_index]: NULL;
    for (int l = 0; l < seq->model->shape.layers; l++)
        s_load_layer (seq, kvt_model_seq_slice (seq, block, shard, l), block_index, l);
}

//  --------------------------------------------------------------------------
//  Layer 'l' of an FP8 host copy (kvt_fp8.cuh), dequantized into 'slice',
//  that layer's slice of a block (or, with 'slice' NULL, only checked):
//  its 2 x kv_heads planes and their scales, as the GPU path's per-layer
//  kvt_fp8_dequantize. Returns 0 or -EINVAL (alignment, or a plane of
//  elements not a multiple of 8).

int
kvt_model_fp8_layer (const kvt_model_shape_t *shape, const void *fp8, void *slice, int l)
{
    const int layer_planes = 2 * shape->kv_heads;
    const int plane_elems = shape->block_tokens * shape->head_dim;
    const size_t planes = (size_t) shape->layers * layer_planes;
    const size_t block_bytes = planes * (size_t) plane_elems * 2;
    const size_t first = (size_t) l * layer_planes;
    int64_t zero = 0;
    const kvt_fp8_args_t args = {
        .dtype = KVT_KDTYPE_BF16,
        .src = (const uint8_t *) fp8 + first * plane_elems,
        .dst = slice? slice: (void *) fp8,
        .scales = (float *) ((uint8_t *) fp8 + planes * plane_elems) + first,
        .src_slots = &zero, .dst_slots = &zero,
        .src_slot_bytes = (int64_t) block_bytes, .dst_slot_bytes = (int64_t) block_bytes,
        .planes = layer_planes, .plane_elems = plane_elems, .count = 1,
        .scale_stride = (int64_t) block_bytes / 4 };
    return slice? kvt_fp8_dequantize_ref (&args): kvt_fp8_check (&args);
}

//  --------------------------------------------------------------------------
//  Streamed cached blocks: copy layer 'l''s slice of each from its host
//  copy into its block (a block is [layer][K,V][kv_head][token][head_dim],
//  so a layer's slice is contiguous, block_bytes / layers), or, with FP8
//  host copies, dequantize that layer's planes into it, then widen it
//  into the mirror. Runs just before layer 'l' first reads or writes the
//  sequence's K/V, once per layer, in layer order: the CPU twin of the GPU
//  path's copy stream and per-layer events.

static void
s_stream_layer (kvt_model_seq_t *seq, int l)
{
    assert (l == seq->layers_streamed);
    const size_t slice_bytes = seq->slice_bytes;
    for (size_t b = 0; b < seq->cached_blocks; b++)
        if (seq->host_src [b]) {
            //  The layer's slice in its block, or in its shard (#5)
            uint8_t *slice = kvt_model_seq_slice (seq, seq->blocks [b],
                                                  seq->shards? seq->shards [b]: NULL, l);
            if (seq->host_fp8) {
                int rc = kvt_model_fp8_layer (&seq->model->shape, seq->host_src [b], slice, l);
                assert (rc == 0);   //  Checked by kvt_model_seq_begin
                (void) rc;
            }
            else
                memcpy (slice, (const uint8_t *) seq->host_src [b] + (size_t) l * slice_bytes,
                        slice_bytes);
            s_load_layer (seq, slice, b, l);
        }
    seq->layers_streamed = l + 1;
}

//  --------------------------------------------------------------------------
//  Causal attention of one query head at position 'pos' over the mirror
//  positions 0..pos of KV head 'kv_head'. Order is fixed: scores summed
//  over d ascending, max, exp and sum in position order, then V weighted
//  in position order and divided by the sum.

static void
s_attend (kvt_model_seq_t *seq, int layer, int kv_head, size_t pos, const float *q, float *out)
{
    const int head_dim = seq->model->shape.head_dim;
    const size_t ctx = pos + 1;
    const float scale = 1.0f / sqrtf ((float) head_dim);
    float *restrict scores = seq->scores;
    //  Scores: one 8-position K tile at a time, held in registers over d
    size_t p = 0;
    for (; p + 8 <= ctx; p += 8) {
        const float *kd = s_kt_at (seq, layer, kv_head, p);
        s_v4_t acc0 = q [0] * s_v4_load (kd);
        s_v4_t acc1 = q [0] * s_v4_load (kd + 4);
        for (int d = 1; d < head_dim; d++) {
            kd += 8;
            acc0 += q [d] * s_v4_load (kd);
            acc1 += q [d] * s_v4_load (kd + 4);
        }
        s_v4_store (scores + p, acc0 * scale);
        s_v4_store (scores + p + 4, acc1 * scale);
    }
    for (; p < ctx; p++) {
        const float *kd = s_kt_at (seq, layer, kv_head, p);
        float acc = q [0] * kd [0];
        for (int d = 1; d < head_dim; d++)
            acc += q [d] * kd [d * 8];
        scores [p] = acc * scale;
    }
    //  Max over four lanes, then the tail (exact in any order)
    s_v4_t vmax = { scores [0], scores [0], scores [0], scores [0] };
    for (p = 0; p + 4 <= ctx; p += 4) {
        const s_v4_t value = s_v4_load (scores + p);
        const s_i4_t greater = value > vmax;
        vmax = (s_v4_t) ((greater & (s_i4_t) value) | (~greater & (s_i4_t) vmax));
    }
    float max = vmax [0];
    for (int lane = 1; lane < 4; lane++)
        max = vmax [lane] > max? vmax [lane]: max;
    for (; p < ctx; p++)
        max = scores [p] > max? scores [p]: max;
    //  Weights e^(s - max); their sum in a fixed order that depends only on
    //  ctx: four strided lane sums, combined pairwise, then the tail
    s_v4_t vsum = { 0 };
    for (p = 0; p + 4 <= ctx; p += 4) {
        const s_v4_t weight = s_exp_v4 (s_v4_load (scores + p) - max);
        s_v4_store (scores + p, weight);
        vsum += weight;
    }
    float sum = (vsum [0] + vsum [1]) + (vsum [2] + vsum [3]);
    if (p < ctx) {
        float lanes [4] = { 0, 0, 0, 0 };
        const size_t count = ctx - p;
        memcpy (lanes, scores + p, count * sizeof (float));
        const s_v4_t weight = s_exp_v4 (s_v4_load (lanes) - max);
        for (size_t lane = 0; lane < count; lane++) {
            scores [p + lane] = weight [lane];
            sum += weight [lane];
        }
    }
    //  Output: sixteen, then four, then one element of head_dim at a time,
    //  each summed over positions in order
    const float *v_rows = s_v_row (seq, layer, kv_head, 0);
    int d0 = 0;
    for (; d0 + 16 <= head_dim; d0 += 16) {
        s_v4_t acc0 = { 0 }, acc1 = { 0 }, acc2 = { 0 }, acc3 = { 0 };
        const float *vp = v_rows + d0;
        for (p = 0; p < ctx; p++, vp += head_dim) {
            const float weight = scores [p];
            acc0 += weight * s_v4_load (vp);
            acc1 += weight * s_v4_load (vp + 4);
            acc2 += weight * s_v4_load (vp + 8);
            acc3 += weight * s_v4_load (vp + 12);
        }
        s_v4_store (out + d0, acc0);
        s_v4_store (out + d0 + 4, acc1);
        s_v4_store (out + d0 + 8, acc2);
        s_v4_store (out + d0 + 12, acc3);
    }
    for (; d0 + 4 <= head_dim; d0 += 4) {
        s_v4_t acc = { 0 };
        const float *vp = v_rows + d0;
        for (p = 0; p < ctx; p++, vp += head_dim)
            acc += scores [p] * s_v4_load (vp);
        s_v4_store (out + d0, acc);
    }
    for (; d0 < head_dim; d0++) {
        float acc = 0.0f;
        for (p = 0; p < ctx; p++)
            acc += scores [p] * v_rows [p * head_dim + d0];
        out [d0] = acc;
    }
    for (int d = 0; d < head_dim; d++)
        out [d] /= sum;
}

//  --------------------------------------------------------------------------
//  Run 'rows' (at most KVT_MODEL_CHUNK) rows through every layer: each
//  row is one token of one sequence at its own position. Writes each
//  row's K/V (bf16) into its sequence's mirror, and into row->dest when
//  set. Rows of one sequence must be consecutive positions in order (a
//  prefill chunk); a row attends to its own sequence's positions up to
//  its own. Leaves each row's final hidden state in self->x [row].

void
kvt_model_forward_rows (kvt_model_t *self, const kvt_model_row_t *row, int rows)
{
    const kvt_model_shape_t *shape = &self->shape;
    const int hidden = shape->hidden;
    const int head_dim = shape->head_dim;
    const int half = head_dim / 2;
    const int inter = shape->intermediate;
    const int q_dim = self->q_dim;
    const int kv_dim = self->kv_dim;

    for (int r = 0; r < rows; r++) {
        memcpy (self->x + (size_t) r * hidden, self->embed + (size_t) row [r].token * hidden,
                (size_t) hidden * sizeof (float));
        const double pos = (double) row [r].pos;
        for (int i = 0; i < half; i++) {
            double angle = pos * self->rope_freq [i];
            self->rope_cos [r * half + i] = (float) cos (angle);
            self->rope_sin [r * half + i] = (float) sin (angle);
        }
    }
    for (int l = 0; l < shape->layers; l++) {
        const kvt_model_layer_t *layer = &self->layer [l];
        //  Streamed cached blocks: this layer's slices arrive now, before
        //  anything of this layer reads or writes the sequence's K/V
        for (int r = 0; r < rows; r++)
            if (row [r].seq->streamed_blocks && row [r].seq->layers_streamed == l)
                s_stream_layer (row [r].seq, l);
        for (int r = 0; r < rows; r++)
            kvt_model_rmsnorm (self->xn + (size_t) r * hidden, self->x + (size_t) r * hidden,
                       layer->attn_norm, hidden);
        s_matmul (self->q, self->xn, layer->wq, rows, hidden, q_dim);
        s_matmul (self->k, self->xn, layer->wk, rows, hidden, kv_dim);
        s_matmul (self->v, self->xn, layer->wv, rows, hidden, kv_dim);
        for (int r = 0; r < rows; r++) {
            kvt_model_seq_t *seq = row [r].seq;
            const size_t pos = row [r].pos;
            const int slot = (int) (pos % shape->block_tokens);
            //  The row's block's slice of this layer (#5: maybe in its shard)
            uint8_t *dest = row [r].dest
                          ? kvt_model_seq_slice (seq, row [r].dest, row [r].dest_shard, l): NULL;
            float *q = self->q + (size_t) r * q_dim;
            float *k = self->k + (size_t) r * kv_dim;
            float *v = self->v + (size_t) r * kv_dim;
            s_rope (q, shape->heads, head_dim, self->rope_cos + r * half,
                    self->rope_sin + r * half);
            s_rope (k, shape->kv_heads, head_dim, self->rope_cos + r * half,
                    self->rope_sin + r * half);
            for (int g = 0; g < shape->kv_heads; g++) {
                float *vrow = s_v_row (seq, l, g, pos);
                for (int d = 0; d < head_dim; d++) {
                    kvt_bf16_t kb = kvt_float_to_bf16 (k [g * head_dim + d]);
                    kvt_bf16_t vb = kvt_float_to_bf16 (v [g * head_dim + d]);
                    s_kt_at (seq, l, g, pos) [d * 8] = kvt_bf16_to_float (kb);
                    vrow [d] = kvt_bf16_to_float (vb);
                    if (dest) {
                        kvt_model_put_bf16 (dest, kvt_model_block_index (shape, 0, 0, g,
                                                                         slot, d), kb);
                        kvt_model_put_bf16 (dest, kvt_model_block_index (shape, 0, 1, g,
                                                                         slot, d), vb);
                    }
                }
            }
        }
        //  Causal: every position this chunk reads at this layer is written
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < shape->heads; h++)
                s_attend (row [r].seq, l, h / self->group, row [r].pos,
                          self->q + (size_t) r * q_dim + h * head_dim,
                          self->att + (size_t) r * q_dim + h * head_dim);
        s_matmul (self->proj, self->att, layer->wo, rows, q_dim, hidden);
        for (size_t i = 0; i < (size_t) rows * hidden; i++)
            self->x [i] += self->proj [i];

        for (int r = 0; r < rows; r++)
            kvt_model_rmsnorm (self->xn + (size_t) r * hidden, self->x + (size_t) r * hidden,
                       layer->mlp_norm, hidden);
        s_matmul (self->gate, self->xn, layer->w_gate, rows, hidden, inter);
        s_matmul (self->up, self->xn, layer->w_up, rows, hidden, inter);
        for (size_t i = 0; i < (size_t) rows * inter; i++) {
            const float g = self->gate [i];
            self->gate [i] = g / (1.0f + expf (-g)) * self->up [i];
        }
        s_matmul (self->proj, self->gate, layer->w_down, rows, inter, hidden);
        for (size_t i = 0; i < (size_t) rows * hidden; i++)
            self->x [i] += self->proj [i];
    }
}

//  Greedy tokens from the hidden states of rows first..first + rows - 1
//  of self->x: final norm, lm_head, argmax with ties going to the lowest
//  id. Row r's token goes to best [r]; its logits stay in self->logits [r].
void
kvt_model_sample_rows (kvt_model_t *self, int first, int rows, uint32_t *best)
{
    const int hidden = self->shape.hidden;
    const int vocab = self->shape.vocab;
    for (int r = 0; r < rows; r++)
        kvt_model_rmsnorm (self->xn + (size_t) r * hidden, self->x + (size_t) (first + r) * hidden,
                   self->final_norm, hidden);
    s_matmul (self->logits, self->xn, self->lm_head, rows, hidden, vocab);
    for (int r = 0; r < rows; r++) {
        const float *logits = self->logits + (size_t) r * vocab;
        uint32_t top = 0;
        for (int id = 1; id < vocab; id++)
            if (logits [id] > logits [top])
                top = (uint32_t) id;
        best [r] = top;
    }
}

//  --------------------------------------------------------------------------
//  Ask 'cancel_fn (arg)' between chunks of a prefill and decode steps of
//  kvt_model_generate.

void
kvt_model_set_cancel (kvt_model_t *self, bool (*cancel_fn) (void *arg), void *arg)
{
    self->cancel_fn = cancel_fn;
    self->cancel_arg = arg;
}

//  --------------------------------------------------------------------------
//  Host copies of sequences begun from now on are FP8 forms, or not.

void
kvt_model_set_host_fp8 (kvt_model_t *self, bool fp8)
{
    assert (self);
    self->host_fp8 = fp8;
}
