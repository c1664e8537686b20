/*  =========================================================================
    kvt_fp8_attention_ref - CPU twin of the fp8 (e4m3) paged decode attention

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include "kvt_dtype.h"
#include "kvt_fp8_attention.cuh"
#include "kvt_paged_attention.cuh"

#define S_MIN_BLOCK_TOKENS 16       //  A 16-token tile shares one scale

//  The same shape as bf16 decode arguments, for the shared split planner
static kvt_paged_attention_args_t
s_as_paged (const kvt_fp8_attention_args_t *args)
{
    kvt_paged_attention_args_t paged = {
        .dtype = args->dtype, .seqs = args->seqs, .heads = args->heads,
        .kv_heads = args->kv_heads, .head_dim = args->head_dim,
        .block_tokens = args->block_tokens, .max_blocks_per_seq = args->max_blocks_per_seq,
        .max_seq_len = args->max_seq_len, .scale = args->scale, .splits = args->splits
    };
    return paged;
}

//  --------------------------------------------------------------------------
//  Check the shape; 0 or -EINVAL.

int
kvt_fp8_attention_check (const kvt_fp8_attention_args_t *args)
{
    if (!args || !args->q || !args->k || !args->v || !args->k_scales || !args->v_scales
    ||  !args->block_table || !args->seq_lens || !args->out)
        return -EINVAL;
    if (args->dtype != KVT_KDTYPE_BF16 && args->dtype != KVT_KDTYPE_FP16)
        return -EINVAL;
    if (args->seqs < 0 || args->heads <= 0 || args->kv_heads <= 0
    ||  args->heads % args->kv_heads != 0)
        return -EINVAL;
    if (args->head_dim != 64 && args->head_dim != 128)
        return -EINVAL;
    int bt = args->block_tokens;
    if (bt < S_MIN_BLOCK_TOKENS || (bt & (bt - 1)) || args->max_blocks_per_seq <= 0
    ||  args->max_seq_len < 0
    ||  (int64_t) args->max_blocks_per_seq * bt < args->max_seq_len)
        return -EINVAL;
    if (args->block_stride_bytes % 16 || args->head_stride_bytes % 16
    ||  args->token_stride_bytes % 16
    ||  args->token_stride_bytes < (int64_t) args->head_dim
    ||  args->block_stride_bytes < 0 || args->head_stride_bytes < 0
    ||  args->scale_block_stride < 0 || args->scale_head_stride < 0)
        return -EINVAL;
    if (args->splits < 0)
        return -EINVAL;
    if (((uintptr_t) args->k | (uintptr_t) args->v | (uintptr_t) args->q) % 16
    ||  ((uintptr_t) args->k_scales | (uintptr_t) args->v_scales) % sizeof (float))
        return -EINVAL;
    return 0;
}

//  --------------------------------------------------------------------------
//  Split count: the bf16 decode's rule.

int
kvt_fp8_attention_splits (const kvt_fp8_attention_args_t *args, int cta_slots)
{
    kvt_paged_attention_args_t paged = s_as_paged (args);
    return kvt_paged_attention_splits (&paged, cta_slots);
}

//  --------------------------------------------------------------------------
//  Workspace bytes for 'splits': partial outputs plus their log-sum-exps.

size_t
kvt_fp8_attention_workspace_bytes (const kvt_fp8_attention_args_t *args, int splits)
{
    kvt_paged_attention_args_t paged = s_as_paged (args);
    return kvt_paged_attention_workspace_bytes (&paged, splits);
}

//  Byte offset of token t of kv head h, and its block's scale index
static int64_t
s_offset (const kvt_fp8_attention_args_t *args, const int32_t *table, int kv_head, int t,
          int64_t *scale_index)
{
    int64_t block = table [t / args->block_tokens];
    *scale_index = block * args->scale_block_stride + kv_head * args->scale_head_stride;
    return block * args->block_stride_bytes + kv_head * args->head_stride_bytes
         + (int64_t) (t % args->block_tokens) * args->token_stride_bytes;
}

//  --------------------------------------------------------------------------
//  CPU twin: scales applied to each dot product and each softmax weight.

int
kvt_fp8_attention_ref (const kvt_fp8_attention_args_t *args)
{
    int rc = kvt_fp8_attention_check (args);
    if (rc)
        return rc;
    int dim = args->head_dim;
    int group = args->heads / args->kv_heads;
    float *scores = (float *) malloc (((size_t) args->max_seq_len + 1) * sizeof (float));
    float *acc = (float *) malloc ((size_t) dim * sizeof (float));
    float *q = (float *) malloc ((size_t) dim * sizeof (float));
    if (!scores || !acc || !q) {
        free (scores);
        free (acc);
        free (q);
        return -ENOMEM;
    }
    for (int seq = 0; seq < args->seqs; seq++) {
        int len = args->seq_lens [seq];
        const int32_t *table = args->block_table + (size_t) seq * args->max_blocks_per_seq;
        for (int head = 0; head < args->heads; head++) {
            int kv_head = head / group;
            size_t q_index = ((size_t) seq * args->heads + head) * dim;
            for (int d = 0; d < dim; d++)
                q [d] = kvt_kdtype_load (args->dtype, args->q, q_index + d);
            float max_score = -INFINITY;
            for (int t = 0; t < len; t++) {
                int64_t scale_index;
                int64_t offset = s_offset (args, table, kv_head, t, &scale_index);
                const uint8_t *k_row = (const uint8_t *) args->k + offset;
                float dot = 0;
                for (int d = 0; d < dim; d++)
                    dot += q [d] * kvt_fp8_e4m3_to_float (k_row [d]);
                scores [t] = dot * args->k_scales [scale_index] * args->scale;
                if (scores [t] > max_score)
                    max_score = scores [t];
            }
            float sum = 0;
            for (int d = 0; d < dim; d++)
                acc [d] = 0;
            for (int t = 0; t < len; t++) {
                float p = expf (scores [t] - max_score);
                sum += p;
                int64_t scale_index;
                int64_t offset = s_offset (args, table, kv_head, t, &scale_index);
                const uint8_t *v_row = (const uint8_t *) args->v + offset;
                float weight = p * args->v_scales [scale_index];
                for (int d = 0; d < dim; d++)
                    acc [d] += weight * kvt_fp8_e4m3_to_float (v_row [d]);
            }
            for (int d = 0; d < dim; d++)
                kvt_kdtype_store (args->dtype, args->out, q_index + d,
                                  len > 0? acc [d] / sum: 0.0f);
        }
    }
    free (scores);
    free (acc);
    free (q);
    return 0;
}
