/*  =========================================================================
    kvt_paged_attention_ref - CPU twin of the paged decode attention kernel

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include "kvt_paged_attention.cuh"

#define S_MIN_SPLIT_TOKENS 256      //  Fewer tokens per split cost more than they win
#define S_MAX_SPLITS       128      //  Bound on the workspace

static bool
s_is_pow2 (int value)
{
    return value > 0 && (value & (value - 1)) == 0;
}

//  --------------------------------------------------------------------------
//  Check the shape; 0 or -EINVAL.

int
kvt_paged_attention_check (const kvt_paged_attention_args_t *args)
{
    if (!args || !args->q || !args->k || !args->v || !args->block_table
    ||  !args->seq_lens || !args->out)
        return -EINVAL;
    if (args->dtype != KVT_KDTYPE_BF16 && args->dtype != KVT_KDTYPE_FP16)
        return -EINVAL;
    if (args->seqs < 0 || args->heads <= 0 || args->kv_heads <= 0
    ||  args->heads % args->kv_heads != 0)
        return -EINVAL;
    if (args->head_dim != 64 && args->head_dim != 128)
        return -EINVAL;
    if (!s_is_pow2 (args->block_tokens) || args->max_blocks_per_seq <= 0
    ||  args->max_seq_len < 0
    ||  (int64_t) args->max_blocks_per_seq * args->block_tokens < args->max_seq_len)
        return -EINVAL;
    if (args->block_stride_bytes % 16 || args->head_stride_bytes % 16
    ||  args->token_stride_bytes % 16
    ||  args->token_stride_bytes < (int64_t) args->head_dim * 2
    ||  args->block_stride_bytes < 0 || args->head_stride_bytes < 0)
        return -EINVAL;
    if (args->splits < 0
    ||  args->variant < 0 || args->variant >= KVT_PAGED_ATTENTION_VARIANTS)
        return -EINVAL;
    if (((uintptr_t) args->k | (uintptr_t) args->v | (uintptr_t) args->q) % 16)
        return -EINVAL;
    return 0;
}

//  --------------------------------------------------------------------------
//  Return the split count for 'sm_count' multiprocessors.

int
kvt_paged_attention_splits (const kvt_paged_attention_args_t *args, int cta_slots)
{
    if (args->splits > 0)
        return args->splits;
    int group = args->heads / (args->kv_heads > 0? args->kv_heads: 1);
    int64_t units = (int64_t) args->seqs * args->kv_heads * ((group + 15) / 16);
    if (units <= 0 || cta_slots <= 0)
        return 1;
    //  One wave of CTAs, never more: a split more than fits makes a second
    //  wave, and ceil (units * s / slots) / s waves of work is smallest at
    //  s = slots / units (1x128K on a one-CTA-a-SM kernel: 17 splits of 8
    //  heads took 1.8x the time of 16)
    int64_t splits = cta_slots / units;
    int64_t by_len = args->max_seq_len / S_MIN_SPLIT_TOKENS;
    if (splits > by_len)
        splits = by_len;
    if (splits > S_MAX_SPLITS)
        splits = S_MAX_SPLITS;
    return splits < 1? 1: (int) splits;
}

//  --------------------------------------------------------------------------
//  Workspace bytes for 'splits': partial outputs plus their log-sum-exps.

size_t
kvt_paged_attention_workspace_bytes (const kvt_paged_attention_args_t *args, int splits)
{
    if (splits <= 1)
        return 0;
    size_t rows = (size_t) args->seqs * args->heads * splits;
    return rows * ((size_t) args->head_dim + 1) * sizeof (float);
}

//  --------------------------------------------------------------------------
//  CPU reference: for each sequence and head, softmax (scale * q.K) . V
//  with fp32 accumulation; the output is rounded once.

int
kvt_paged_attention_ref (const kvt_paged_attention_args_t *args)
{
    int rc = kvt_paged_attention_check (args);
    if (rc)
        return rc;
    int dim = args->head_dim;
    int group = args->heads / args->kv_heads;
    float *scores = (float *) malloc (((size_t) args->max_seq_len + 1) * sizeof (float));
    float *acc = (float *) malloc ((size_t) dim * sizeof (float));
    if (!scores || !acc) {
        free (scores);
        free (acc);
        return -ENOMEM;
    }
    for (int seq = 0; seq < args->seqs; seq++) {
        int len = args->seq_lens [seq];
        const int32_t *table = args->block_table + (size_t) seq * args->max_blocks_per_seq;
        for (int head = 0; head < args->heads; head++) {
            int kv_head = head / group;
            size_t q_index = ((size_t) seq * args->heads + head) * dim;
            float max_score = -INFINITY;
            for (int t = 0; t < len; t++) {
                int64_t block = table [t / args->block_tokens];
                int64_t offset = block * args->block_stride_bytes
                               + kv_head * args->head_stride_bytes
                               + (t % args->block_tokens) * args->token_stride_bytes;
                const void *k_row = (const char *) args->k + offset;
                float dot = 0;
                for (int d = 0; d < dim; d++)
                    dot += kvt_kdtype_load (args->dtype, args->q, q_index + d)
                         * kvt_kdtype_load (args->dtype, k_row, d);
                scores [t] = dot * args->scale;
                if (scores [t] > max_score)
                    max_score = scores [t];
            }
            float sum = 0;
            for (int d = 0; d < dim; d++)
                acc [d] = 0;
            for (int t = 0; t < len; t++) {
                float p = expf (scores [t] - max_score);
                sum += p;
                int64_t block = table [t / args->block_tokens];
                int64_t offset = block * args->block_stride_bytes
                               + kv_head * args->head_stride_bytes
                               + (t % args->block_tokens) * args->token_stride_bytes;
                const void *v_row = (const char *) args->v + offset;
                for (int d = 0; d < dim; d++)
                    acc [d] += p * kvt_kdtype_load (args->dtype, v_row, d);
            }
            for (int d = 0; d < dim; d++)
                kvt_kdtype_store (args->dtype, args->out, q_index + d,
                                  len > 0? acc [d] / sum: 0.0f);
        }
    }
    free (scores);
    free (acc);
    return 0;
}
