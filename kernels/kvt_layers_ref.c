/*  =========================================================================
    kvt_layers_ref - CPU twins of the synthetic model's layer kernels

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <math.h>
#include "kvt_layers.cuh"

//  --------------------------------------------------------------------------
//  inv_freq [i] = base^(-2i / head_dim).

void
kvt_rope_inv_freq (float *inv_freq, int head_dim, double base)
{
    for (int i = 0; i < head_dim / 2; i++)
        inv_freq [i] = (float) pow (base, -2.0 * i / head_dim);
}

//  --------------------------------------------------------------------------
//  out = x / sqrt (mean (x^2) + eps) * weight, per row.

int
kvt_rmsnorm_ref (const kvt_rmsnorm_args_t *args)
{
    if (!args || !args->x || !args->weight || !args->out || args->rows < 0
    ||  args->dim <= 0 || args->dim % 8)
        return -EINVAL;
    for (int r = 0; r < args->rows; r++) {
        size_t first = (size_t) r * args->dim;
        float sum = 0;
        for (int i = 0; i < args->dim; i++) {
            float v = kvt_kdtype_load (args->dtype, args->x, first + i);
            sum += v * v;
        }
        float inv = 1.0f / sqrtf (sum / args->dim + args->eps);
        for (int i = 0; i < args->dim; i++)
            kvt_kdtype_store (args->dtype, args->out, first + i,
                              kvt_kdtype_load (args->dtype, args->x, first + i) * inv
                              * kvt_kdtype_load (args->dtype, args->weight, i));
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Rotate-half RoPE in place: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin).

int
kvt_rope_ref (const kvt_rope_args_t *args)
{
    if (!args || !args->x || !args->positions || !args->inv_freq || args->tokens < 0
    ||  args->heads <= 0 || args->head_dim <= 0 || args->head_dim % 2)
        return -EINVAL;
    int half = args->head_dim / 2;
    for (int t = 0; t < args->tokens; t++)
        for (int h = 0; h < args->heads; h++) {
            size_t first = ((size_t) t * args->heads + h) * args->head_dim;
            for (int i = 0; i < half; i++) {
                float angle = (float) args->positions [t] * args->inv_freq [i];
                float c = cosf (angle), s = sinf (angle);
                float x1 = kvt_kdtype_load (args->dtype, args->x, first + i);
                float x2 = kvt_kdtype_load (args->dtype, args->x, first + i + half);
                kvt_kdtype_store (args->dtype, args->x, first + i, x1 * c - x2 * s);
                kvt_kdtype_store (args->dtype, args->x, first + i + half, x2 * c + x1 * s);
            }
        }
    return 0;
}

//  --------------------------------------------------------------------------
//  out = silu (gate) * up with silu (g) = g / (1 + exp (-g)).

int
kvt_swiglu_ref (const kvt_swiglu_args_t *args)
{
    if (!args || !args->gate_up || !args->out || args->rows < 0 || args->inter <= 0)
        return -EINVAL;
    for (int r = 0; r < args->rows; r++)
        for (int i = 0; i < args->inter; i++) {
            size_t row = (size_t) r * 2 * args->inter;
            float g = kvt_kdtype_load (args->dtype, args->gate_up, row + i);
            float u = kvt_kdtype_load (args->dtype, args->gate_up, row + args->inter + i);
            kvt_kdtype_store (args->dtype, args->out, (size_t) r * args->inter + i,
                              g / (1.0f + expf (-g)) * u);
        }
    return 0;
}

//  --------------------------------------------------------------------------
//  Index of the largest logit of each row; the first one on ties.

int
kvt_argmax_ref (const kvt_argmax_args_t *args)
{
    if (!args || !args->logits || !args->out || args->rows < 0 || args->vocab <= 0)
        return -EINVAL;
    for (int r = 0; r < args->rows; r++) {
        int best = 0;
        float top = -INFINITY;
        for (int i = 0; i < args->vocab; i++) {
            float v = kvt_kdtype_load (args->dtype, args->logits, (size_t) r * args->vocab + i);
            if (v > top) {
                top = v;
                best = i;
            }
        }
        args->out [r] = best;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  c = a . w^T with fp32 accumulation.

int
kvt_gemm_ref (const kvt_gemm_args_t *args)
{
    if (!args || !args->a || !args->w || !args->c || args->m < 0 || args->n <= 0
    ||  args->k <= 0)
        return -EINVAL;
    for (int i = 0; i < args->m; i++)
        for (int j = 0; j < args->n; j++) {
            float sum = 0;
            for (int kk = 0; kk < args->k; kk++)
                sum += kvt_kdtype_load (args->dtype, args->a, (size_t) i * args->k + kk)
                     * kvt_kdtype_load (args->dtype, args->w, (size_t) j * args->k + kk);
            kvt_kdtype_store (args->dtype, args->c, (size_t) i * args->n + j, sum);
        }
    return 0;
}
