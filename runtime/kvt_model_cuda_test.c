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
    replayed as CUDA graphs give the eager steps' tokens and KV bytes;
    layer-major prefill slices (forced, and a gated run's) give the chunk
    by chunk bytes.
    Skips (77) without a device, and in CPU builds.
@end
*/

#include "kvt_model_cuda_int.h"
#include "kvt_model_cuda_graph.h"

#ifdef KVT_WITH_CUDA

//  --------------------------------------------------------------------------
//  Generate 'count' tokens again with the first 'cached' blocks of
//  'table' taken from run 0's slots 0.. (in place, or streamed layer by
//  layer from 'host' when not NULL: a gated run) and the rest computed into
//  slots full..; assert run 0's tokens 'first' and KV bytes 'reference'.

static void
s_check_cached (kvt_model_cuda_t *model, const uint32_t *tokens, size_t count, void *slab,
                size_t block_bytes, uint64_t *table, size_t cached, const uint8_t *host,
                const uint64_t *spare, size_t spare_count, size_t max_new,
                const uint32_t *first, const uint8_t *reference, uint8_t *view, bool verbose)
{
    const size_t full = count / 16;
    assert (cudaMemset ((char *) slab + full * block_bytes, 0xee, full * block_bytes)
            == cudaSuccess);
    const void **host_src = (const void **) kvt_zmalloc (full * sizeof (void *));
    for (size_t b = 0; b < full; b++) {
        table [b] = host && b < cached? full + b: b < cached? b: full + b;
        host_src [b] = host && b < cached? host + b * block_bytes: NULL;
    }
    uint32_t again [32];
    kvt_model_cuda_seq_t *seq = NULL;
    int64_t started = kvt_now_us ();
    assert (kvt_model_cuda_seq_begin (model, tokens, count, slab, block_bytes, table, cached,
                                      host_src, spare, spare_count, max_new, again,
                                      &seq) == 0);
    assert (kvt_model_cuda_seq_prefill (model, seq, 0) == 0);
    int64_t ttft = kvt_now_us () - started;
    while (kvt_model_cuda_seq_decoding (seq))
        assert (kvt_model_cuda_decode (model, &seq, 1) == 0);
    kvt_model_cuda_seq_destroy (&seq);
    if (verbose)
        printf ("kvt_model_cuda: %zu cached blocks%s, ttft %" PRId64 " us\n", cached,
                host? " streamed": "", ttft);
    assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
    for (size_t b = host? 0: cached; b < full; b++) {
        assert (cudaMemcpy (view, (char *) slab + table [b] * block_bytes, block_bytes,
                            cudaMemcpyDeviceToHost) == cudaSuccess);
        assert (memcmp (view, reference + b * block_bytes, block_bytes) == 0);
    }
    free (host_src);
}

//  --------------------------------------------------------------------------
//  A layer-sharded model (a fresh one of 'shape', the later half of its
//  layers in a mapped host shard, staging on) prefills the same prompt
//  with its first 'cached' blocks streamed from pinned full-block copies
//  of 'reference' (run 0's KV), chunk by chunk (layer-major off: the
//  chunks' staging waits on each layer's stream event), layer-major
//  always and gated; then all computed, layer-major. Every run gives run
//  0's tokens 'first', and every block's layers hold run 0's bytes, the
//  first half in the slab and the rest in the shard.

static void
s_shard_stream_test (const kvt_model_shape_t *shape, const uint32_t *tokens, size_t count,
                     const uint8_t *reference, const uint32_t *first, size_t max_new)
{
    kvt_model_cuda_t *model = kvt_model_cuda_new (shape);
    assert (model);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    const size_t block_bytes = kvt_block_bytes (&geometry);
    const size_t layer_bytes = block_bytes / (size_t) shape->layers;
    const int gpu_layers = shape->layers / 2;
    const size_t slab_part = (size_t) gpu_layers * layer_bytes;
    const size_t shard_bytes = block_bytes - slab_part;
    const size_t full = count / 16, cached = 10;
    const size_t spare_count = KVT_MODEL_CUDA_SPARE_BLOCKS (16, max_new);
    const size_t blocks = full + spare_count;
    void *slab = NULL;
    char *shard = NULL;
    uint8_t *host = NULL;
    assert (cudaMalloc (&slab, blocks * block_bytes) == cudaSuccess);
    assert (cudaHostAlloc ((void **) &shard, blocks * shard_bytes, cudaHostAllocMapped)
            == cudaSuccess);
    assert (cudaMallocHost ((void **) &host, cached * block_bytes) == cudaSuccess);
    memcpy (host, reference, cached * block_bytes);
    assert (kvt_model_cuda_set_layer_shard (model, gpu_layers, shard, shard_bytes) == 0);
    uint64_t *table = (uint64_t *) kvt_zmalloc (blocks * sizeof (uint64_t));
    for (size_t b = 0; b < blocks; b++)
        table [b] = blocks - 1 - b;         //  Not in order
    const void **host_src = (const void **) kvt_zmalloc (full * sizeof (void *));
    uint8_t *view = (uint8_t *) malloc (slab_part);
    assert (view);
    const kvt_model_cuda_layer_major_t modes [] = {
        KVT_MODEL_CUDA_LAYER_MAJOR_OFF, KVT_MODEL_CUDA_LAYER_MAJOR_ALWAYS,
        KVT_MODEL_CUDA_LAYER_MAJOR_GATED, KVT_MODEL_CUDA_LAYER_MAJOR_ALWAYS };
    for (int run = 0; run < 4; run++) {
        const size_t streamed = run < 3? cached: 0;
        kvt_model_cuda_set_layer_major (model, modes [run]);
        assert (cudaMemset (slab, 0xee, blocks * block_bytes) == cudaSuccess);
        memset (shard, 0xee, blocks * shard_bytes);
        for (size_t b = 0; b < full; b++)
            host_src [b] = b < streamed? host + b * block_bytes: NULL;
        uint32_t again [32];
        kvt_model_cuda_seq_t *seq = NULL;
        assert (kvt_model_cuda_seq_begin (model, tokens, count, slab, block_bytes, table,
                                          streamed, host_src, table + full, spare_count,
                                          max_new, again, &seq) == 0);
        assert (kvt_model_cuda_seq_prefill (model, seq, 0) == 0);
        while (kvt_model_cuda_seq_decoding (seq))
            assert (kvt_model_cuda_decode (model, &seq, 1) == 0);
        kvt_model_cuda_seq_destroy (&seq);
        assert (memcmp (first, again, max_new * sizeof (uint32_t)) == 0);
        for (size_t b = 0; b < full; b++) {
            assert (cudaMemcpy (view, (char *) slab + table [b] * block_bytes, slab_part,
                                cudaMemcpyDeviceToHost) == cudaSuccess);
            assert (memcmp (view, reference + b * block_bytes, slab_part) == 0);
            assert (memcmp (shard + table [b] * shard_bytes,
                            reference + b * block_bytes + slab_part, shard_bytes) == 0);
        }
    }
    kvt_model_cuda_destroy (&model);
    free (view);
    free (host_src);
    free (table);
    cudaFreeHost (host);
    cudaFreeHost (shard);
    cudaFree (slab);
}

//  --------------------------------------------------------------------------
//  A layer-major slice of 17 chunks goes one layer a step (2 layers: two
//  steps), with another sequence's decode steps between its pieces; both
//  sequences get the tokens and KV bytes of chunk-by-chunk prefill.

static void
s_layer_major_steps_test (kvt_model_cuda_t *model, size_t block_bytes, int vocab)
{
    enum { NEW = 8 };
    const size_t length [2] = { 17 * 512 + 40, 100 };     //  A (the slice), B (decodes)
    size_t first [3], spares [2];
    first [0] = 0;
    for (int i = 0; i < 2; i++) {
        spares [i] = KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, length [i], NEW);
        first [i + 1] = first [i] + length [i] / 16 + spares [i];
    }
    uint64_t *slots = (uint64_t *) kvt_zmalloc (first [2] * sizeof (uint64_t));
    for (size_t k = 0; k < first [2]; k++)
        slots [k] = first [2] - 1 - k;
    uint32_t *tokens = (uint32_t *) kvt_zmalloc (length [0] * sizeof (uint32_t));
    uint64_t state = 11;
    for (size_t k = 0; k < length [0]; k++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens [k] = (uint32_t) ((state >> 33) % (uint64_t) vocab);
    }
    void *slab = NULL;
    assert (cudaMalloc (&slab, first [2] * block_bytes) == cudaSuccess);
    const size_t kv_bytes = length [0] / 16 * block_bytes;
    uint8_t *kv [2] = { (uint8_t *) malloc (kv_bytes), (uint8_t *) malloc (kv_bytes) };
    uint32_t outs [2][2][NEW];
    int prefill_steps [2] = { 0, 0 };
    for (int run = 0; run < 2; run++) {
        kvt_model_cuda_set_layer_major (model, run == 0? KVT_MODEL_CUDA_LAYER_MAJOR_OFF
                                                       : KVT_MODEL_CUDA_LAYER_MAJOR_ALWAYS);
        kvt_model_cuda_seq_t *seq [2];
        for (int i = 1; i >= 0; i--)
            assert (kvt_model_cuda_seq_begin (model, tokens + 3 * i, length [i], slab,
                                              block_bytes, slots + first [i], 0, NULL,
                                              slots + first [i] + length [i] / 16, spares [i],
                                              NEW, outs [run][i], &seq [i]) == 0);
        assert (kvt_model_cuda_seq_prefill (model, seq [1], 0) == 0);
        //  A's prefill beside B's decode, as compute's loop runs them
        int left = 1;
        while (left > 0) {
            bool decode = kvt_model_cuda_seq_decoding (seq [1]);
            assert (kvt_model_cuda_step_launch (model, seq [0], 512, &seq [1], decode? 1: 0,
                                                -1) == 0);
            left = kvt_model_cuda_step_finish (model);
            assert (left >= 0);
            prefill_steps [run]++;
        }
        while (kvt_model_cuda_seq_decoding (seq [0]) || kvt_model_cuda_seq_decoding (seq [1])) {
            kvt_model_cuda_seq_t *batch [2];
            size_t count = 0;
            for (int i = 0; i < 2; i++)
                if (kvt_model_cuda_seq_decoding (seq [i]))
                    batch [count++] = seq [i];
            assert (kvt_model_cuda_decode (model, batch, count) == 0);
        }
        for (size_t b = 0; b < length [0] / 16; b++)
            assert (cudaMemcpy (kv [run] + b * block_bytes,
                                (char *) slab + slots [first [0] + b] * block_bytes,
                                block_bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
        for (int i = 0; i < 2; i++)
            kvt_model_cuda_seq_destroy (&seq [i]);
    }
    //  Chunk by chunk: 18 steps of 512 rows; layer-major: one layer a step
    assert (prefill_steps [0] == 18);
    assert (prefill_steps [1] == kvt_model_cuda_block_shape (model).layers);
    assert (memcmp (outs [0], outs [1], sizeof (outs [0])) == 0);
    assert (memcmp (kv [0], kv [1], kv_bytes) == 0);
    kvt_model_cuda_set_layer_major (model, KVT_MODEL_CUDA_LAYER_MAJOR_GATED);
    free (kv [0]);
    free (kv [1]);
    cudaFree (slab);
    free (tokens);
    free (slots);
}

//  --------------------------------------------------------------------------
//  Graph and eager decode steps (kvt_model_cuda_graph.c) give identical
//  tokens and KV bytes: the same steps run twice, graphs off then on, over
//  seven sequences whose batch membership changes every step (batches of
//  1, 4 and 5 rows, then fewer as they finish), contexts crossing block
//  boundaries and a split bucket (500 + 24 tokens), a step that prefills
//  a long prompt (moving d_table) beside a decode, and one decode step
//  with that long context. 'gpu_layers' < the model's layers: a fresh
//  model keeps the later layers in a mapped host shard (issue #5) and
//  stages them (graphs on: copies queued ahead of each graph, which
//  waits on them); its KV in slab and shard is the same either way, and
//  its tokens are those of the unsharded run before (s_graph_outs).

enum { S_GRAPH_SEQS = 7, S_GRAPH_NEW = 24 };
static uint32_t s_graph_outs [S_GRAPH_SEQS][S_GRAPH_NEW];

static void
s_graph_test (kvt_model_cuda_t *model, size_t block_bytes, int vocab, bool verbose,
              int gpu_layers)
{
    enum { SEQS = S_GRAPH_SEQS, NEW = S_GRAPH_NEW };
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
    const int layers = kvt_model_cuda_block_shape (model).layers;
    const size_t shard_bytes = block_bytes / (size_t) layers * (size_t) (layers - gpu_layers);
    char *shard = NULL;
    if (gpu_layers < layers) {
        assert (cudaHostAlloc ((void **) &shard, blocks * shard_bytes, cudaHostAllocMapped)
                == cudaSuccess);
        assert (kvt_model_cuda_set_layer_shard (model, gpu_layers, shard, shard_bytes) == 0);
    }
    static uint32_t outs [2][SEQS][NEW];
    uint8_t *kv [2];
    size_t steps [2] = { 0, 0 };
    for (int run = 0; run < 2; run++) {
        kvt_model_cuda_set_graphs (model, run == 1);
        assert (kvt_model_cuda_graphs (model) == (run == 1));
        kvt_model_cuda_graph_stats_t before = kvt_model_cuda_graph_stats (model);
        assert (cudaMemset (slab, 0xee, blocks * block_bytes) == cudaSuccess);
        if (shard)
            memset (shard, 0xee, blocks * shard_bytes);
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
        kv [run] = (uint8_t *) malloc (blocks * (block_bytes + shard_bytes));
        assert (kv [run]);
        assert (cudaMemcpy (kv [run], slab, blocks * block_bytes, cudaMemcpyDeviceToHost)
                == cudaSuccess);
        if (shard)
            memcpy (kv [run] + blocks * block_bytes, shard, blocks * shard_bytes);
        kvt_model_cuda_graph_stats_t after = kvt_model_cuda_graph_stats (model);
        uint64_t launches = after.launches - before.launches;
        uint64_t captures = after.captures - before.captures;
        if (verbose)
            printf ("kvt_model_cuda: graphs %s, %d of %d layers on the GPU: %zu decode steps, "
                    "%" PRIu64 " graph launches, %" PRIu64 " captures, %" PRIu64 " updates\n",
                    run? "on": "off", gpu_layers, layers, steps [run], launches, captures,
                    after.updates - before.updates);
        //  Off: none; on: every decode step, at least 4 keys (rows 1, 4, 8;
        //  splits 2, 4; the long context's)
        assert (launches == (run? steps [run]: 0));
        assert (run == 0 || captures >= 4);
    }
    assert (steps [0] == steps [1] && steps [0] > 20);
    assert (memcmp (outs [0], outs [1], sizeof (outs [0])) == 0);
    assert (memcmp (kv [0], kv [1], blocks * (block_bytes + shard_bytes)) == 0);
    if (shard)
        assert (memcmp (outs [0], s_graph_outs, sizeof (s_graph_outs)) == 0);
    else
        memcpy (s_graph_outs, outs [0], sizeof (s_graph_outs));
    free (kv [0]);
    free (kv [1]);
    cudaFree (slab);
    if (shard)
        cudaFreeHost (shard);
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
    //  A prompt of three prefill chunks: 77 full blocks and a tail of 5
    //  Decode crosses from the tail block into the next spare
    const size_t count = 77 * 16 + 5, full = count / 16, max_new = 20;
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
    kvt_model_cuda_set_layer_major (model, KVT_MODEL_CUDA_LAYER_MAJOR_OFF);
    assert (kvt_model_cuda_generate (model, tokens, count, slab, block_bytes, slots, 0,
                                     spare, spare_count, max_new, first, NULL) == 0);
    uint8_t *reference = (uint8_t *) malloc (full * block_bytes);
    uint8_t *view = (uint8_t *) malloc (full * block_bytes);
    assert (cudaMemcpy (reference, slab, full * block_bytes, cudaMemcpyDeviceToHost)
            == cudaSuccess);
    //  Cached prefixes of 0, 1, 31 (inside chunk 2), 32 and all blocks, chunk
    //  by chunk: run 1 gets run 0's first blocks, then computes into its
    //  own slots. Then layer-major (forced) from scratch and after one
    //  block: the same bytes as chunk by chunk
    const size_t cached [] = { 0, 1, 31, 32, full };
    for (size_t c = 0; c < 5; c++)
        s_check_cached (model, tokens, count, slab, block_bytes, slots + full, cached [c], NULL,
                        spare, spare_count, max_new, first, reference, view, verbose);
    kvt_model_cuda_set_layer_major (model, KVT_MODEL_CUDA_LAYER_MAJOR_ALWAYS);
    for (size_t c = 0; c < 2; c++)
        s_check_cached (model, tokens, count, slab, block_bytes, slots + full, cached [c], NULL,
                        spare, spare_count, max_new, first, reference, view, verbose);
    //  A gated run (the default): 10 cached blocks stream in from pinned
    //  host copies layer by layer, and the three chunks after them run
    //  layer-major behind each layer's event
    kvt_model_cuda_set_layer_major (model, KVT_MODEL_CUDA_LAYER_MAJOR_GATED);
    uint8_t *pinned = NULL;
    assert (cudaMallocHost ((void **) &pinned, 10 * block_bytes) == cudaSuccess);
    memcpy (pinned, reference, 10 * block_bytes);
    s_check_cached (model, tokens, count, slab, block_bytes, slots + full, 10, pinned, spare,
                    spare_count, max_new, first, reference, view, verbose);
    cudaFreeHost (pinned);
    s_shard_stream_test (&shape, tokens, count, reference, first, max_new);
    for (size_t b = 0; b < full; b++)
        slots [full + b] = full + b;
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
    s_graph_test (model, block_bytes, shape.vocab, verbose, shape.layers);
    //  The same steps on a layer-sharded model (a fresh one: a shard is
    //  set before the first sequence)
    kvt_model_cuda_t *sharded = kvt_model_cuda_new (&shape);
    assert (sharded);
    s_graph_test (sharded, block_bytes, shape.vocab, verbose, shape.layers / 2);
    kvt_model_cuda_destroy (&sharded);
    s_layer_major_steps_test (model, block_bytes, shape.vocab);
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
