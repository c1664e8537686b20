/*  =========================================================================
    kvt_paged_prefill_ref - CPU twin of the paged causal prefill kernel

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include "kvt_paged_prefill.cuh"

//  --------------------------------------------------------------------------
//  Check the shape; 0 or -EINVAL.

int
kvt_paged_prefill_check (const kvt_paged_prefill_args_t *args)
{
    if (!args || !args->q || !args->q_start || !args->k || !args->v
    ||  !args->block_table || !args->seq_lens || !args->out)
        return -EINVAL;
    if (args->dtype != KVT_KDTYPE_BF16 && args->dtype != KVT_KDTYPE_FP16)
        return -EINVAL;
    if (args->seqs < 0 || args->heads <= 0 || args->kv_heads <= 0
    ||  args->heads % args->kv_heads != 0 || args->head_dim != 128)
        return -EINVAL;
    if (args->variant < 0 || args->variant >= KVT_PAGED_PREFILL_VARIANTS)
        return -EINVAL;
    int bt = args->block_tokens;
    if (bt <= 0 || (bt & (bt - 1)) || args->max_blocks_per_seq <= 0 || args->max_q_len < 0)
        return -EINVAL;
    if (args->block_stride_bytes % 16 || args->head_stride_bytes % 16
    ||  args->token_stride_bytes % 16 || args->token_stride_bytes < args->head_dim * 2
    ||  args->block_stride_bytes < 0 || args->head_stride_bytes < 0)
        return -EINVAL;
    if (((uintptr_t) args->k | (uintptr_t) args->v | (uintptr_t) args->q
    |    (uintptr_t) args->out) % 16)
        return -EINVAL;
    return 0;
}

static const void *
s_row (const kvt_paged_prefill_args_t *args, const void *base, const int32_t *table,
       int kv_head, int token)
{
    int64_t block = table [token / args->block_tokens];
    return (const char *) base + block * args->block_stride_bytes
         + kv_head * args->head_stride_bytes
         + (int64_t) (token % args->block_tokens) * args->token_stride_bytes;
}

//  --------------------------------------------------------------------------
//  CPU reference: causal softmax over the prefix and the new tokens.

int
kvt_paged_prefill_ref (const kvt_paged_prefill_args_t *args)
{
    int rc = kvt_paged_prefill_check (args);
    if (rc)
        return rc;
    int dim = args->head_dim;
    int group = args->heads / args->kv_heads;
    int max_len = 1;
    for (int s = 0; s < args->seqs; s++)
        if (args->seq_lens [s] > max_len)
            max_len = args->seq_lens [s];
    float *scores = (float *) malloc ((size_t) max_len * sizeof (float));
    float *acc = (float *) malloc ((size_t) dim * sizeof (float));
    float *q = (float *) malloc ((size_t) dim * sizeof (float));
    if (!scores || !acc || !q) {
        free (scores);
        free (acc);
        free (q);
        return -ENOMEM;
    }
    for (int s = 0; s < args->seqs; s++) {
        int q_len = args->q_start [s + 1] - args->q_start [s];
        int cached = args->seq_lens [s] - q_len;
        const int32_t *table = args->block_table + (size_t) s * args->max_blocks_per_seq;
        for (int i = 0; i < q_len; i++) {
            size_t row = (size_t) args->q_start [s] + i;
            int keys = cached + i + 1;
            for (int head = 0; head < args->heads; head++) {
                int kv_head = head / group;
                size_t q_index = (row * args->heads + head) * dim;
                for (int d = 0; d < dim; d++)
                    q [d] = kvt_kdtype_load (args->dtype, args->q, q_index + d);
                float top = -INFINITY;
                for (int t = 0; t < keys; t++) {
                    const void *k_row = s_row (args, args->k, table, kv_head, t);
                    float dot = 0;
                    for (int d = 0; d < dim; d++)
                        dot += q [d] * kvt_kdtype_load (args->dtype, k_row, d);
                    scores [t] = dot * args->scale;
                    top = scores [t] > top? scores [t]: top;
                }
                float sum = 0;
                for (int d = 0; d < dim; d++)
                    acc [d] = 0;
                for (int t = 0; t < keys; t++) {
                    float p = expf (scores [t] - top);
                    sum += p;
                    const void *v_row = s_row (args, args->v, table, kv_head, t);
                    for (int d = 0; d < dim; d++)
                        acc [d] += p * kvt_kdtype_load (args->dtype, v_row, d);
                }
                for (int d = 0; d < dim; d++)
                    kvt_kdtype_store (args->dtype, args->out, q_index + d, acc [d] / sum);
            }
        }
    }
    free (scores);
    free (acc);
    free (q);
    return 0;
}
