/*  =========================================================================
    kvt_bench_model_int - what the parts of `kvtier bench model` share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_BENCH_MODEL_INT_H_INCLUDED
#define KVT_BENCH_MODEL_INT_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>
#include "kvt_bench.h"
#include "kvt_model.h"

//  Fail the bench with where and what.
#define S_CHECK(cond) do { if (!(cond)) { \
    fprintf (stderr, "kvtier bench model: %s:%d: %s failed\n", __FILE__, __LINE__, #cond); \
    exit (1); } } while (0)

//  A deterministic prompt of 'count' tokens below the 8B vocabulary
//  (kvt_client_random_tokens of 'seed'); the caller frees it.
uint32_t *
    kvt_bench_model_prompt (size_t count, uint64_t seed);

//  Wait for one signal on eventfd 'fd' (10 s at most; exits the bench
//  past that); returns the count.
uint64_t
    kvt_bench_model_fd_wait (int fd);

//  A layer-sharded model's decode over adjacent and scattered slots
//  (kvt_bench_model_scatter.c), 'context' tokens a sequence.
void
    kvt_bench_model_scatter (kvt_bench_report_t *report, const kvt_model_shape_t *shape,
                             size_t context);

#endif
