/*  =========================================================================
    kvt_model_cuda_test - the GPU model's selftest

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvt_model_cuda_test: the determinism contract of the GPU model
    (kvt_model_cuda.c, kvt_model_cuda_seq.c) on a small shape: the same
    tokens and byte-identical blocks with none, some and all blocks
    cached, and with cached blocks streamed from host copies; decode steps
    replayed as CUDA graphs give the eager steps' tokens and KV bytes.
    Skips (77) without a device, and in CPU builds.
@end
*/

#include "kvt_model_cuda_int.h"
#include "kvt_model_cuda_graph.h"

#ifdef KVT_WITH_CUDA

//  --------------------------------------------------------------------------
//  Graph and eager decode steps (kvt_model_cuda_graph.c) give identical
//  tokens and KV bytes: the same steps run twice, graphs off then on, over
//  seven sequences whose batch membership changes every step (batches of
//  1, 4 and 5 rows, then fewer as they finish), contexts crossing block
//  boundaries and a split bucket (500 + 24 tokens), a step that prefills
//  a long prompt (moving d_table) beside a decode, and one decode step
//  with that long context.

static void
s_graph_test (kvt_model_cuda_t *model, size_t block_bytes, int vocab, bool verbose)
{
    enum { SEQS = 7, NEW = 24 };
    const size_t length [SEQS] = { 30, 47, 200, 250, 500, 510, 8300 };
    const size_t max_new [SEQS] = { NEW, NEW, NEW, NEW, NEW, NEW, 2 };
    size_t first [SEQS + 1], spares [SEQS];
    first [0] = 0;
    for (int i = 0; i < SEQS; i++) {
        spares [i] = KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, length [i], max_new [i]);
        first [i + 1] = first [i] + length [i] / 16 + spares [i];
    }
    const size_t blocks = first [SEQS];
    uint64_t *slots = (uint64_t *) kvt_zmalloc (blocks * sizeof (uint64_t));
    for (size_t k = 0; k < blocks; k++)
        slots [k] = blocks - 1 - k;         //  Not in order
    const size_t token_count = length [SEQS - 1] + 8 * SEQS;
    uint32_t *tokens = (uint32_t *) kvt_zmalloc (token_count * sizeof (uint32_t));
    uint64_t state = 7;
    for (size_t k = 0; k < token_count; k++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens [k] = (uint32_t) ((state >> 33) % (uint64_t) vocab);
    }
    void *slab = NULL;
    assert (cudaMalloc (&slab, blocks * block_bytes) == cudaSuccess);
    static uint32_t outs [2][SEQS][NEW];
    uint8_t *kv [2];
    size_t steps [2] = { 0, 0 };
    for (int run = 0; run < 2; run++) {
        kvt_model_cuda_set_graphs (model, run == 1);
        assert (kvt_model_cuda_graphs (model) == (run == 1));
        kvt_model_cuda_graph_stats_t before = kvt_model_cuda_graph_stats (model);
        assert (cudaMemset (slab, 0xee, blocks * block_bytes) == cudaSuccess);
        kvt_model_cuda_seq_t *seqs [SEQS];
        for (int i = 0; i < SEQS; i++) {
            const size_t full = length [i] / 16;
            assert (kvt_model_cuda_seq_begin (model, tokens + 8 * i, length [i], slab,
                                              block_bytes, slots + first [i], 0, NULL,
                                              slots + first [i] + full, spares [i],
                                              max_new [i], outs [run][i], &seqs [i]) == 0);
            if (i < SEQS - 1)
                assert (kvt_model_cuda_seq_prefill (model, seqs [i], 0) == 0);
        }
        for (int step = 0; ; step++) {
            kvt_model_cuda_seq_t *batch [SEQS];
            size_t count = 0;
            bool left = false;
            for (int i = 0; i < SEQS; i++) {
                if (!kvt_model_cuda_seq_decoding (seqs [i]))
                    continue;
                left = true;
                if (step == 5? i == 0: (step + i) % 4 != 0 || i == SEQS - 1)
                    batch [count++] = seqs [i];
            }
            kvt_model_cuda_seq_t *prefill = step == 3? seqs [SEQS - 1]: NULL;
            if (!left && !prefill)
                break;
            assert (kvt_model_cuda_step_launch (model, prefill, 0, batch, count, -1) == 0);
            assert (kvt_model_cuda_step_finish (model) >= 0);
            steps [run] += count > 0;
            assert (step < 100);
        }
        for (int i = 0; i < SEQS; i++) {
            assert (kvt_model_cuda_seq_emitted (seqs [i]) == max_new [i]);
            kvt_model_cuda_seq_destroy (&seqs [i]);
        }
        kv [run] = (uint8_t *) malloc (blocks * block_bytes);
        assert (kv [run]);
        assert (cudaMemcpy (kv [run], slab, blocks * block_bytes, cudaMemcpyDeviceToHost)
                == cudaSuccess);
        kvt_model_cuda_graph_stats_t after = kvt_model_cuda_graph_stats (model);
        uint64_t launches = after.launches - before.launches;
        uint64_t captures = after.captures - before.captures;
        if (verbose)
            printf ("kvt_model_cuda: graphs %s: %zu decode steps, %" PRIu64 " graph launches, "
                    "%" PRIu64 " captures, %" PRIu64 " updates\n", run? "on": "off",
                    steps [run], launches, captures, after.updates - before.updates);
        //  Off: none; on: every decode step, at least 4 keys (rows 1, 4, 8;
        //  splits 2, 4; the long context's)
        assert (launches == (run? steps [run]: 0));
        assert (run == 0 || captures >= 4);
    }
    assert (steps [0] == steps [1] && steps [0] > 20);
    assert (memcmp (outs [0], outs [1], sizeof (outs [0])) == 0);
    assert (memcmp (kv [0], kv [1], blocks * block_bytes) == 0);
    free (kv [0]);
    free (kv [1]);
    cudaFree (slab);
    free (tokens);
    free (slots);
    kvt_model_cuda_set_graphs (model, true);
}

//  --------------------------------------------------------------------------
//  Selftest: skips without a device. The contract on a small shape: the
//  same tokens and byte-identical blocks with 0, some and all blocks cached.

int
kvt_model_cuda_test (bool verbose)
{
    int devices = 0;
    if (cudaGetDeviceCount (&devices) != cudaSuccess || devices == 0) {
        if (verbose)
            printf ("kvt_model_cuda: no CUDA device, skipped\n");
        return 77;
    }
    kvt_model_shape_t shape = { .layers = 2, .heads = 8, .kv_heads = 2, .head_dim = 128,
                                .hidden = 1024, .intermediate = 2816, .vocab = 1000,
                                .block_tokens = 16, .seed = 7 };
    assert (kvt_model_cuda_new (&(kvt_model_shape_t) { .layers = 1, .heads = 3, .kv_heads = 2,
        .head_dim = 128, .hidden = 64, .intermediate = 64, .vocab = 8,
        .block_tokens = 16 }) == NULL);
    kvt_model_cuda_t *model = kvt_model_cuda_new (&shape);
    assert (model);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    const size_t block_bytes = kvt_block_bytes (&geometry);
    //  A prompt crossing a chunk boundary: 37 full blocks and a tail of 5
    //  Decode crosses from the tail block into the next spare
    const size_t count = 37 * 16 + 5, full = count / 16, max_new = 20;
    const size_t spare_count = KVT_MODEL_CUDA_SPARE_BLOCKS (16, max_new);
    //  Slab: run 0's blocks, run 1's blocks, spares
    void *slab = NULL;
    assert (cudaMalloc (&slab, (2 * full + spare_count) * block_bytes) == cudaSuccess);
    uint64_t *slots = (uint64_t *) kvt_zmalloc (2 * full * sizeof (uint64_t));
    uint64_t *spare = (uint64_t *) kvt_zmalloc (spare_count * sizeof (uint64_t));
    for (size_t k = 0; k < 2 * full; k++)
        slots [k] = k;
    for (size_t k = 0; k < spare_count; k++)
        spare [k] = 2 * full + k;
    uint32_t *tokens = (uint32_t *) kvt_zmalloc (count * sizeof (uint32_t));
    uint64_t state = 42;
    for (size_t k = 0; k < count; k++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens [k] = (uint32_t) ((state >> 33) % (uint64_t) shape.vocab);
    }
    uint32_t first [32], again [32];
    assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, slots, 0,
                                     spare, spare_count, max_new, first, NULL) == 0);
    uint8_t *reference = (uint8_t *) malloc (full * block_bytes);
    uint8_t *view = (uint8_t *) malloc (full * block_bytes);
    assert (cudaMemcpy (reference, slab, full * block_bytes, cudaMemcpyDeviceToHost)
            == cudaSuccess);
    //  Cached prefixes of 0 (fresh), 1, 31 (inside chunk 2) and all blocks:
    //  run 1 gets run 0's first blocks, then computes into its own slots
    const size_t cached [] = { 1, 31, 32, full };
    for (size_t c = 0; c < 4; c++) {
        assert (cudaMemset ((char *) slab + full * block_bytes, 0xee, full * block_bytes)
                == cudaSuccess);
        uint64_t *table = slots + full;
        for (size_t b = 0; b < cached [c]; b++)
            table [b] = b;          //  Cached: run 0's slot
        for (size_t b = cached [c]; b < full; b++)
            table [b] = full + b;
        int64_t ttft = 0;
        assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, table,
                                         cached [c], spare, spare_count, max_new, again,
                                         &ttft) == 0);
        if (verbose)
            printf ("kvt_model_cuda: %zu cached blocks, ttft %" PRId64 " us\n", cached [c], ttft);
        assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
        for (size_t b = cached [c]; b < full; b++) {
            assert (cudaMemcpy (view, (char *) slab + table [b] * block_bytes, block_bytes,
                                cudaMemcpyDeviceToHost) == cudaSuccess);
            assert (memcmp (view, reference + b * block_bytes, block_bytes) == 0);
        }
        for (size_t b = cached [c]; b < full; b++)
            table [b] = full + b;
    }
    //  Cached blocks were never written
    assert (cudaMemcpy (view, slab, full * block_bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    assert (memcmp (view, reference, full * block_bytes) == 0);
    //  A prompt of whole blocks, all cached: its last token is recomputed
    //  into a spare copy of the last block, with the same output
    const size_t whole = 16 * 16;
    assert (kvt_model_cuda_generate (model, tokens, whole, slab, block_bytes, slots, 0,
                                     spare, spare_count, max_new, first, NULL) == 0);
    assert (cudaMemcpy (reference, slab, 16 * block_bytes, cudaMemcpyDeviceToHost)
            == cudaSuccess);
    assert (kvt_model_cuda_generate (model, tokens, whole, slab, block_bytes, slots, 16,
                                     spare, spare_count, max_new, again, NULL) == 0);
    assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
    assert (cudaMemcpy (view, slab, 16 * block_bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    assert (memcmp (view, reference, 16 * block_bytes) == 0);
    //  Streamed: cached blocks come from pinned host copies layer by layer
    //  (16 KiB slices: the copy kernel), every other one or all of them,
    //  into run 1's slots; same tokens, and the slots end holding the copies
    uint8_t *host = NULL;
    assert (cudaMallocHost ((void **) &host, full * block_bytes) == cudaSuccess);
    memcpy (host, reference, 16 * block_bytes);     //  The whole-block prompt's KV
    const void **host_src = (const void **) kvt_zmalloc (full * sizeof (void *));
    for (int mode = 0; mode < 2; mode++) {
        uint64_t *table = slots + full;
        for (size_t b = 0; b < 16; b++) {
            table [b] = full + b;
            host_src [b] = mode == 1 || b % 2? host + b * block_bytes: NULL;
            if (!host_src [b])      //  In place already
                assert (cudaMemcpy ((char *) slab + table [b] * block_bytes,
                                    host + b * block_bytes, block_bytes,
                                    cudaMemcpyHostToDevice) == cudaSuccess);
            else
                assert (cudaMemset ((char *) slab + table [b] * block_bytes, 0xee,
                                    block_bytes) == cudaSuccess);
        }
        //  Some cached (prefill of the rest), then all cached
        const size_t cached_now = mode == 0? 11: 16;
        kvt_model_cuda_seq_t *seq = NULL;
        assert (kvt_model_cuda_seq_begin (model, tokens, whole, slab, block_bytes, table,
                                          cached_now, host_src, spare, spare_count, max_new,
                                          again, &seq) == 0);
        assert (kvt_model_cuda_seq_prefill (model, seq, 0) == 0);
        while (kvt_model_cuda_seq_decoding (seq))
            assert (kvt_model_cuda_decode (model, &seq, 1) == 0);
        kvt_model_cuda_seq_destroy (&seq);
        assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
        assert (cudaMemcpy (view, (char *) slab + full * block_bytes, 16 * block_bytes,
                            cudaMemcpyDeviceToHost) == cudaSuccess);
        assert (memcmp (view, reference, 16 * block_bytes) == 0);
    }
    free (host_src);
    cudaFreeHost (host);
    s_graph_test (model, block_bytes, shape.vocab, verbose);
    //  Bad input
    assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, slots, full + 1,
                                     spare, spare_count, max_new, again, NULL) == -EINVAL);
    assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, slots, 0,
                                     spare, 1, max_new, again, NULL) == -EINVAL);
    free (view);
    free (reference);
    free (tokens);
    free (spare);
    free (slots);
    cudaFree (slab);
    kvt_model_cuda_destroy (&model);
    assert (model == NULL);
    return 0;
}

#else

//  CPU-only build: the GPU model does not exist; its selftest skips.
int
kvt_model_cuda_test (bool verbose)
{
    (void) verbose;
    return 77;
}

#endif
