/*  =========================================================================
    test_gpu_request_path - one request end to end with the model on a GPU

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    test_request_path's scenario on a CUDA build with a GPU: the GPU tier
    is device memory, the model runs on the GPU, migration moves blocks
    with the copy kernel (32 KiB blocks) or the copy engines (256 KiB).
    The same output tokens whether 0, some or all blocks were cached; the
    KV read back from the GPU, host and NVMe tiers is byte-identical to the
    KV the GPU computed; again with tier_gpu, migration and compute as
    processes sharing the device slab by CUDA IPC. Then a scripted stream of requests sharing
    prefixes runs on the CPU model and on the GPU model with the same
    tiers: the prefix-hit accounting (from_gpu / host / nvme / computed)
    is the same request by request, as placement does not depend on the
    model. Batching: sequences decoded together on the GPU model, joining
    and leaving the batch at different steps, prefilled in slices, some
    from cached blocks, give the tokens and blocks each gives alone, both
    by kvt_model_cuda_decode and by step launch / eventfd / finish (the
    compute actor's path, issue #3); a sequence or the model destroyed
    with a step in flight does not hang, and the signal is written.
    Skips (77) without CUDA or a GPU.
    Streaming (issue #3): cached blocks copied from pinned, registered
    host memory layer by layer while the prefill runs give the tokens and
    the blocks, byte for byte, of the same blocks copied in first, with
    the copy kernel (16 KiB slices) and the copy engines (64 KiB slices),
    some and all blocks cached, host slots in order and shuffled.
    --bench [prompt]: prefill rate at the Llama-3-8B shape against cuBLAS,
    and decode tokens/s at batch 1, 16 and 64 (1024-token contexts), the
    batches checked to give batch 1's tokens; then the same steps by
    launch / eventfd / finish, with the thread's time in launch + finish.
    --bench-stream [prefix] [new]: time to first token at the 8B shape of a
    'prefix'-token prefix (16384) on the host tier plus 'new' (512) prompt
    tokens: layer-streamed, against copy-then-compute and the larger of
    copy alone and compute alone, in the same run.
@end
*/

#include "testutil.h"
#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#   include <cublas_v2.h>
#   include "kvt_model.h"
#   include "kvt_block_copy.cuh"
#   include <poll.h>
#   include <sys/eventfd.h>
#endif

//  A runtime on 'overrides' must refuse to start with KVT_ECONFIG
static void
s_refused (const char *const *overrides)
{
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
    t_check (kvt_runtime_start (runtime) == KVT_ECONFIG);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

#ifdef KVT_WITH_CUDA

static void
s_same_tokens (const kvt_client_generate_t *a, const kvt_client_generate_t *b)
{
    t_check (a->token_count == b->token_count);
    t_check (memcmp (a->tokens, b->tokens, a->token_count * sizeof (uint64_t)) == 0);
}

static uint64_t
s_stat (kvt_client_t *client, const char *key)
{
    kvt_client_stats_t stats;
    t_ok (kvt_client_stats (client, &stats));
    uint64_t value = 0;
    kvt_client_stats_find (&stats, key, &value);
    kvt_client_stats_fini (&stats);
    return value;
}

//  The request path with a model of 'layers' layers and 'kv_heads' KV
//  heads (the block size follows: layers x kv_heads x 16 KiB)
static void
s_request_path (const char *layers, const char *kv_heads, const char *copy_counter,
                const char *mode)
{
    //  'mode' "process": the actors that touch the device slab (tier_gpu,
    //  migration, compute) run as processes and open it by CUDA IPC
    bool processes = mode && streq (mode, "process");
    const char *const overrides [] = {
        "compute/device=cuda", processes? "tier_gpu/mode=process": "tier_gpu/mode=thread",
        processes? "migration/mode=process": "migration/mode=thread",
        processes? "compute/mode=process": "compute/mode=thread", layers, "model/heads=32", kv_heads,
        "model/head_dim=128", "model/hidden=4096", "model/intermediate=14336",
        "model/vocab=32000", "tier_gpu/capacity_blocks=64", "tier_host/capacity_blocks=64",
        "tier_nvme/capacity_blocks=256", NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 60000);
    t_check (client);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_gpu_request_path", &hello));
    t_check (hello.block_tokens == 16 && hello.head_dim == 128);

    //  10 full blocks and a partial one: computed, then all from the GPU
    size_t count = 10 * hello.block_tokens + 7;
    uint64_t *tokens = t_tokens (count, hello.vocab, 1);
    kvt_client_generate_t first, again;
    int64_t started = zclock_usecs ();
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &first));
    printf ("  %s%s: first request %.1f ms (ttft %.1f ms)\n", layers, processes? " (processes)": "",
            (zclock_usecs () - started) / 1000.0, first.ttft_us / 1000.0);
    t_check (first.computed == 10 && first.from_gpu == 0 && first.token_count == 6);
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &again));
    t_check (again.from_gpu == 10 && again.computed == 0);
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    //  Some blocks cached: dave's first 5 blocks, then the whole prompt
    t_ok (kvt_client_generate (client, "dave", tokens, 5 * hello.block_tokens, 2, &again));
    kvt_client_generate_fini (&again);
    t_ok (kvt_client_generate (client, "dave", tokens, count, 6, &again));
    t_check (again.from_gpu == 5 && again.computed == 5);
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    kvt_client_load_t gpu_kv, other;
    t_ok (kvt_client_load (client, "alice", tokens, count, &gpu_kv));
    t_check (gpu_kv.blocks == 10 && gpu_kv.kv_bytes == 10 * hello.block_bytes);
    t_ok (kvt_client_load (client, "dave", tokens, count, &other));
    t_check (other.blocks == 10 && memcmp (other.kv, gpu_kv.kv, gpu_kv.kv_bytes) == 0);
    kvt_client_load_fini (&other);

    //  A prompt of whole blocks, all cached: the last token is recomputed
    size_t whole = 8 * hello.block_tokens;
    uint64_t *tokens2 = t_tokens (whole, hello.vocab, 2);
    kvt_client_generate_t whole_first;
    t_ok (kvt_client_generate (client, "erin", tokens2, whole, 5, &whole_first));
    t_check (whole_first.computed == 8);
    t_ok (kvt_client_generate (client, "erin", tokens2, whole, 5, &again));
    t_check (again.from_gpu == 8 && again.computed == 0);
    s_same_tokens (&whole_first, &again);
    kvt_client_generate_fini (&again);
    kvt_client_generate_fini (&whole_first);

    //  Down to host: same output; LOAD brings back the same bytes
    uint64_t moved = 0;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved > 0);
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (client, "alice", tokens, count, &where));
    t_check (where.matched_blocks == 10 && where.tiers [0] == KVT_TIER_HOST);
    kvt_client_lookup_fini (&where);
    t_ok (kvt_client_load (client, "alice", tokens, count, &other));
    t_check (other.blocks == 10 && other.tiers [0] == KVT_TIER_HOST);
    t_check (memcmp (other.kv, gpu_kv.kv, gpu_kv.kv_bytes) == 0);
    kvt_client_load_fini (&other);
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &again));
    t_check (again.from_host == 10 && again.computed == 0);
    //  Streamed into compute layer by layer (migration/stream_promotion = 1)
    t_check (s_stat (client, "compute.streamed_blocks") >= 10);
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    //  Down to NVMe: same bytes, same output
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_ok (kvt_client_load (client, "alice", tokens, count, &other));
    t_check (other.blocks == 10 && other.tiers [0] == KVT_TIER_NVME);
    t_check (memcmp (other.kv, gpu_kv.kv, gpu_kv.kv_bytes) == 0);
    kvt_client_load_fini (&other);
    t_ok (kvt_client_generate (client, "alice", tokens, count, 6, &again));
    t_check (again.from_gpu == 10);     //  LOAD promoted them
    s_same_tokens (&first, &again);
    kvt_client_generate_fini (&again);

    //  STORE into the device slab and back, through NVMe
    size_t store_count = 4 * hello.block_tokens;
    uint64_t *store_tokens = t_tokens (store_count, hello.vocab, 99);
    size_t store_bytes = 4 * hello.block_bytes;
    void *kv = malloc (store_bytes);
    kvt_client_fill_bytes (kv, store_bytes, 7);
    kvt_client_store_t stored;
    t_ok (kvt_client_store (client, "carol", store_tokens, store_count, kv, store_bytes,
                            &stored));
    t_check (stored.stored_blocks == 4);
    t_ok (kvt_client_load (client, "carol", store_tokens, store_count, &other));
    t_check (other.blocks == 4 && memcmp (other.kv, kv, store_bytes) == 0);
    kvt_client_load_fini (&other);
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_ok (kvt_client_load (client, "carol", store_tokens, store_count, &other));
    t_check (other.blocks == 4 && memcmp (other.kv, kv, store_bytes) == 0);
    kvt_client_load_fini (&other);

    //  Migration went through the expected CUDA path, without errors
    t_check (s_stat (client, copy_counter) > 0);
    t_check (s_stat (client, "migration.copy_errors") == 0);
    t_check (s_stat (client, "scheduler.copy_errors") == 0);

    free (kv);
    free (store_tokens);
    free (tokens2);
    kvt_client_load_fini (&gpu_kv);
    kvt_client_generate_fini (&first);
    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

#define S_REQUESTS 40

typedef struct {
    uint64_t from_gpu, from_host, from_nvme, computed;
} s_account_t;

//  A scripted stream: 5 shared documents of 3 blocks, each request one of
//  them plus its own 1 to 3 blocks and a tail, on small tiers so blocks
//  move down and come back.
static void
s_replay (const char *device, s_account_t *account)
{
    char device_option [64];
    snprintf (device_option, sizeof (device_option), "compute/device=%s", device);
    const char *const overrides [] = {
        device_option, "model/layers=1", "model/heads=2", "model/kv_heads=1",
        "model/head_dim=128", "model/hidden=256", "model/intermediate=512",
        "model/vocab=512", "tier_gpu/capacity_blocks=12", "tier_host/capacity_blocks=12",
        "tier_nvme/capacity_blocks=256", NULL };
    kvt_config_t *config = t_config (overrides);
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 60000);
    t_check (client);
    uint64_t *docs [5];
    for (int d = 0; d < 5; d++)
        docs [d] = t_tokens (48, 512, 100 + d);
    uint64_t prompt [48 + 3 * 16 + 5];
    for (int r = 0; r < S_REQUESTS; r++) {
        int doc = (r * 7 + r / 5) % 5;
        size_t own = (size_t) (r % 3 + 1) * 16 + 5;
        memcpy (prompt, docs [doc], 48 * sizeof (uint64_t));
        uint64_t *suffix = t_tokens (own, 512, 1000 + r);
        memcpy (prompt + 48, suffix, own * sizeof (uint64_t));
        free (suffix);
        kvt_client_generate_t result;
        t_ok (kvt_client_generate (client, "trace", prompt, 48 + own, 2, &result));
        account [r] = (s_account_t) { result.from_gpu, result.from_host, result.from_nvme,
                                      result.computed };
        kvt_client_generate_fini (&result);
    }
    for (int d = 0; d < 5; d++)
        free (docs [d]);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

//  Wait for one signal on eventfd 'fd' (10 s at most); returns the count
static uint64_t
s_fd_wait (int fd)
{
    struct pollfd item = { .fd = fd, .events = POLLIN };
    t_check (poll (&item, 1, 10000) == 1);
    uint64_t count = 0;
    t_check (read (fd, &count, sizeof (count)) == sizeof (count));
    return count;
}

//  One step as the compute actor runs it: launch, the thread free until
//  the eventfd fires, finish. Returns what finish returns.
static int
s_step (kvt_model_cuda_t *model, kvt_model_cuda_seq_t *prefill, size_t max_tokens,
        kvt_model_cuda_seq_t *const *seqs, size_t count, int fd)
{
    t_ok (kvt_model_cuda_step_launch (model, prefill, max_tokens, seqs, count, fd));
    t_check (kvt_model_cuda_step_busy (model));
    t_check (kvt_model_cuda_step_launch (model, NULL, 0, NULL, 0, fd) == -EBUSY);
    t_check (s_fd_wait (fd) == 1);
    int rc = kvt_model_cuda_step_finish (model);
    t_check (!kvt_model_cuda_step_busy (model));
    return rc;
}

//  The GPU model decodes sequences together as each alone: a small shape,
//  prompts crossing prefill chunks (512) and decode splits (256), one all
//  cached, one a single token, prefilled in slices of 100 while others
//  decode, different lengths of output. 'async': the batched run goes by
//  kvt_model_cuda_step_launch / eventfd / _finish (one prefill slice and
//  the decode step in one step, as the compute actor does), and then a
//  sequence destroyed mid-step is skipped and a model destroyed mid-step
//  still signals, without hanging.
static void
s_batched_vs_alone (bool async)
{
    int fd = eventfd (0, EFD_CLOEXEC);
    t_check (fd >= 0);
    kvt_model_shape_t shape = { .layers = 2, .heads = 8, .kv_heads = 2, .head_dim = 128,
                                .hidden = 1024, .intermediate = 2816, .vocab = 1000,
                                .block_tokens = 16, .seed = 7 };
    kvt_model_cuda_t *model = kvt_model_cuda_new (&shape);
    t_check (model);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    const size_t block_bytes = kvt_block_bytes (&geometry);
    enum { SEQS = 7, MAX_NEW = 300 };
    const size_t lengths [SEQS] = { 37, 300, 700, 320, 1, 129, 250 };
    const size_t news [SEQS] = { 40, 10, 80, 25, 300, 1, 12 };
    const size_t cached_of [SEQS] = { 0, 0, 0, 20, 0, 4, 15 };  //  Blocks of the alone run
    //  Slab: per sequence, alone's blocks, batched's blocks and spares
    size_t per_seq = 0;
    for (int i = 0; i < SEQS; i++) {
        size_t need = 2 * (lengths [i] / 16)
                    + KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, lengths [i], news [i]);
        per_seq = need > per_seq? need: per_seq;
    }
    void *slab = NULL;
    t_check (cudaMalloc (&slab, SEQS * per_seq * block_bytes) == cudaSuccess);
    t_check (cudaMemset (slab, 0x55, SEQS * per_seq * block_bytes) == cudaSuccess);
    uint64_t *prompt64 = t_tokens (1000, (uint64_t) shape.vocab, 77);
    uint32_t prompt [1000];
    for (int k = 0; k < 1000; k++)
        prompt [k] = (uint32_t) prompt64 [k];
    free (prompt64);
    static uint32_t alone [SEQS][MAX_NEW], batched [SEQS][MAX_NEW];
    uint64_t slots [SEQS][2][64], spare [SEQS][32];
    kvt_model_cuda_seq_t *seq [SEQS];
    for (int i = 0; i < SEQS; i++) {
        const size_t full = lengths [i] / 16, base = (size_t) i * per_seq;
        for (size_t b = 0; b < full; b++) {
            slots [i][0][b] = base + b;
            //  Batched: alone's blocks where cached, its own after
            slots [i][1][b] = b < cached_of [i]? base + b: base + full + b;
        }
        size_t spares = KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, lengths [i], news [i]);
        t_check (spares <= 32);
        for (size_t k = 0; k < spares; k++)
            spare [i][k] = base + 2 * full + k;
        //  Alone first: computes every block ...
        t_ok (kvt_model_cuda_generate (model, prompt, lengths [i], slab, block_bytes,
                                       slots [i][0], 0, spare [i], spares, news [i], alone [i],
                                       NULL));
    }
    //  ... then all together, each with its own spares (alone's are free now)
    for (int i = 0; i < SEQS; i++)
        t_ok (kvt_model_cuda_seq_begin (model, prompt, lengths [i], slab, block_bytes,
                                        slots [i][1], cached_of [i], NULL, spare [i],
                                        KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, lengths [i],
                                                                         news [i]),
                                        news [i], batched [i], &seq [i]));
    size_t steps = 0, rows = 0;
    for (int turn = 0, busy = 1; busy; turn++) {
        busy = 0;
        kvt_model_cuda_seq_t *prefill = NULL;
        for (int i = 0; i < SEQS; i++)
            if (seq [i] && turn >= 3 * i && kvt_model_cuda_seq_emitted (seq [i]) == 0) {
                if (async && prefill)       //  A step of its own
                    t_check (s_step (model, prefill, 100, NULL, 0, fd) >= 0);
                if (async)
                    prefill = seq [i];
                else
                    t_check (kvt_model_cuda_seq_prefill (model, seq [i], 100) >= 0);
            }
        kvt_model_cuda_seq_t *batch [SEQS];
        size_t count = 0;
        for (int i = 0; i < SEQS; i++)
            if (seq [i] && kvt_model_cuda_seq_decoding (seq [i]))
                batch [count++] = seq [i];
        if (async && (prefill || count))
            t_check (s_step (model, prefill, 100, batch, count, fd) >= 0);
        else
        if (count)
            t_ok (kvt_model_cuda_decode (model, batch, count));
        steps += count > 0;
        rows += count;
        for (int i = 0; i < SEQS; i++) {
            if (seq [i] && kvt_model_cuda_seq_emitted (seq [i]) == news [i])
                kvt_model_cuda_seq_destroy (&seq [i]);
            busy |= seq [i] != NULL;
        }
    }
    t_check (rows > steps);
    uint8_t *want = (uint8_t *) malloc (64 * block_bytes);
    uint8_t *got = (uint8_t *) malloc (64 * block_bytes);
    for (int i = 0; i < SEQS; i++) {
        if (memcmp (alone [i], batched [i], news [i] * sizeof (uint32_t))) {
            fprintf (stderr, "sequence %d: batched tokens differ from alone\n", i);
            t_check (false);
        }
        const size_t full = lengths [i] / 16, base = (size_t) i * per_seq;
        t_check (cudaMemcpy (want, (char *) slab + base * block_bytes, full * block_bytes,
                             cudaMemcpyDeviceToHost) == cudaSuccess);
        t_check (cudaMemcpy (got, (char *) slab + (base + full) * block_bytes,
                             full * block_bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
        //  Blocks the batched run computed are alone's, byte for byte
        t_check (memcmp (want + cached_of [i] * block_bytes, got + cached_of [i] * block_bytes,
                         (full - cached_of [i]) * block_bytes) == 0);
    }
    printf ("test_gpu_request_path: %d sequences batched%s (%zu decode steps, %zu rows) "
            "give the tokens and blocks of each alone: OK\n", SEQS,
            async? " through step launch / eventfd / finish": "", steps, rows);
    if (async) {
        //  A sequence destroyed while its step runs: the finish skips it
        //  and advances the others
        const size_t spares0 = KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, lengths [0], news [0]);
        const size_t spares2 = KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, lengths [2], news [2]);
        kvt_model_cuda_seq_t *pair [2] = { NULL, NULL };
        t_ok (kvt_model_cuda_seq_begin (model, prompt, lengths [0], slab, block_bytes,
                                        slots [0][1], 0, NULL, spare [0], spares0, news [0],
                                        batched [0], &pair [0]));
        t_ok (kvt_model_cuda_seq_begin (model, prompt, lengths [2], slab, block_bytes,
                                        slots [2][1], 0, NULL, spare [2], spares2, news [2],
                                        batched [2], &pair [1]));
        t_check (kvt_model_cuda_seq_prefill (model, pair [0], 0) == 0);
        t_check (kvt_model_cuda_seq_prefill (model, pair [1], 0) == 0);
        t_ok (kvt_model_cuda_step_launch (model, NULL, 0, pair, 2, fd));
        kvt_model_cuda_seq_destroy (&pair [0]);     //  Waits for the stream
        t_check (s_fd_wait (fd) == 1);
        t_check (kvt_model_cuda_step_finish (model) == 0);
        t_check (kvt_model_cuda_seq_emitted (pair [1]) == 2);
        t_check (batched [2][1] == alone [2][1]);
        t_check (kvt_model_cuda_step_finish (model) == -EINVAL);   //  None in flight
        //  Shutdown mid-step (as the compute actor's): the sequence, then
        //  the model, destroyed without a finish; the signal is written by then
        t_ok (kvt_model_cuda_step_launch (model, NULL, 0, &pair [1], 1, fd));
        kvt_model_cuda_seq_destroy (&pair [1]);
        kvt_model_cuda_destroy (&model);
        cudaFree (slab);
        uint64_t fired = 0;
        t_check (read (fd, &fired, sizeof (fired)) == sizeof (fired) && fired == 1);
        printf ("test_gpu_request_path: a sequence destroyed mid-step is skipped; sequence "
                "and model destroyed with a step in flight return, signal written: OK\n");
        free (got);
        free (want);
        close (fd);
        return;
    }
    //  Bad input
    kvt_model_cuda_seq_t *a = NULL;
    t_check (kvt_model_cuda_seq_begin (model, prompt, 37, slab, block_bytes, slots [0][1], 0,
                                       NULL, spare [0], 2, 40, batched [0], &a) == -EINVAL);
    t_check (a == NULL);
    kvt_model_cuda_seq_t *many [KVT_MODEL_MAX_BATCH + 1] = { 0 };
    t_check (kvt_model_cuda_decode (model, many, KVT_MODEL_MAX_BATCH + 1) == -EINVAL);
    free (got);
    free (want);
    cudaFree (slab);
    kvt_model_cuda_destroy (&model);
    close (fd);
}

//  Pinned, mapped host memory registered as the host tier's arena is
static void *
s_host_pinned (size_t bytes)
{
    void *host = NULL;
    t_check (posix_memalign (&host, 4096, bytes) == 0);
    t_check (cudaHostRegister (host, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped)
             == cudaSuccess);
    return host;
}

static void
s_host_pinned_free (void *host)
{
    cudaHostUnregister (host);
    free (host);
}

//  One sequence begun, prefilled and decoded to the end; tokens in 'out'
static void
s_run_seq (kvt_model_cuda_t *model, const uint32_t *prompt, size_t count, void *slab,
           size_t block_bytes, const uint64_t *slots, size_t cached, const void *const *host_src,
           const uint64_t *spare, size_t spare_count, size_t max_new, uint32_t *out)
{
    kvt_model_cuda_seq_t *seq = NULL;
    t_ok (kvt_model_cuda_seq_begin (model, prompt, count, slab, block_bytes, slots, cached,
                                    host_src, spare, spare_count, max_new, out, &seq));
    t_check (kvt_model_cuda_seq_prefill (model, seq, 0) == 0);
    while (kvt_model_cuda_seq_decoding (seq))
        t_ok (kvt_model_cuda_decode (model, &seq, 1));
    kvt_model_cuda_seq_destroy (&seq);
}

//  Streamed vs copied first, byte for byte, with 'kv_heads' KV heads
//  (2: 16 KiB layer slices, the copy kernel; 8: 64 KiB, the copy engines)
static void
s_streamed_vs_copied (int kv_heads)
{
    kvt_model_shape_t shape = { .layers = 2, .heads = 8, .kv_heads = kv_heads, .head_dim = 128,
                                .hidden = 1024, .intermediate = 2816, .vocab = 1000,
                                .block_tokens = 16, .seed = 7 };
    kvt_model_cuda_t *model = kvt_model_cuda_new (&shape);
    t_check (model);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    const size_t block_bytes = kvt_block_bytes (&geometry);
    enum { FULL = 40, COUNT = FULL * 16 + 9, MAX_NEW = 24 };
    const size_t spares = KVT_MODEL_CUDA_SPARE_BLOCKS (16, MAX_NEW);
    //  Slab: reference blocks, copied run's, streamed run's, spares
    void *slab = NULL;
    t_check (cudaMalloc (&slab, (3 * FULL + spares) * block_bytes) == cudaSuccess);
    uint64_t ref [FULL], copied [FULL], streamed [FULL], spare [64];
    for (size_t b = 0; b < FULL; b++) {
        ref [b] = b;
        copied [b] = FULL + b;
        streamed [b] = 2 * FULL + b;
    }
    t_check (spares <= 64);
    for (size_t k = 0; k < spares; k++)
        spare [k] = 3 * FULL + k;
    uint64_t *p64 = t_tokens (COUNT, (uint64_t) shape.vocab, 31);
    uint32_t prompt [COUNT];
    for (size_t k = 0; k < COUNT; k++)
        prompt [k] = (uint32_t) p64 [k];
    free (p64);
    static uint32_t want [MAX_NEW], got_copied [MAX_NEW], got_streamed [MAX_NEW];
    //  The host tier: the reference blocks, in order or shuffled
    uint8_t *host = (uint8_t *) s_host_pinned (FULL * block_bytes);
    uint8_t *expect = (uint8_t *) malloc (FULL * block_bytes);
    uint8_t *view = (uint8_t *) malloc (FULL * block_bytes);
    const void *host_src [FULL];
    const size_t cached_of [] = { 33, FULL, 7 };
    for (int shuffled = 0; shuffled < 2; shuffled++)
    for (int c = 0; c < 3; c++) {
        const size_t cached = cached_of [c];
        //  Prompt of whole blocks when all are cached (last token recomputed)
        const size_t count = cached == FULL? FULL * 16: COUNT;
        s_run_seq (model, prompt, count, slab, block_bytes, ref, 0, NULL, spare, spares,
                   MAX_NEW, want);
        t_check (cudaMemcpy (expect, slab, FULL * block_bytes, cudaMemcpyDeviceToHost)
                 == cudaSuccess);
        for (size_t b = 0; b < FULL; b++) {
            size_t at = shuffled? (b * 7 + 3) % FULL: b;    //  7 is prime to 40
            memcpy (host + at * block_bytes, expect + b * block_bytes, block_bytes);
            host_src [b] = host + at * block_bytes;
        }
        //  Copied first: the cached blocks in place before the run
        t_check (cudaMemset ((char *) slab + FULL * block_bytes, 0xee, 2 * FULL * block_bytes)
                 == cudaSuccess);
        for (size_t b = 0; b < cached; b++)
            t_check (cudaMemcpy ((char *) slab + copied [b] * block_bytes, host_src [b],
                                 block_bytes, cudaMemcpyHostToDevice) == cudaSuccess);
        s_run_seq (model, prompt, count, slab, block_bytes, copied, cached, NULL, spare, spares,
                   MAX_NEW, got_copied);
        //  Streamed: its slots hold garbage until the prefill brings them
        s_run_seq (model, prompt, count, slab, block_bytes, streamed, cached, host_src, spare,
                   spares, MAX_NEW, got_streamed);
        t_check (memcmp (want, got_copied, sizeof (want)) == 0);
        t_check (memcmp (got_copied, got_streamed, sizeof (want)) == 0);
        const size_t full = count / 16;
        uint8_t *other = (uint8_t *) malloc (full * block_bytes);
        t_check (cudaMemcpy (view, (char *) slab + FULL * block_bytes, full * block_bytes,
                             cudaMemcpyDeviceToHost) == cudaSuccess);
        t_check (cudaMemcpy (other, (char *) slab + 2 * FULL * block_bytes, full * block_bytes,
                             cudaMemcpyDeviceToHost) == cudaSuccess);
        t_check (memcmp (view, other, full * block_bytes) == 0);
        t_check (memcmp (view, expect, full * block_bytes) == 0);
        free (other);
    }
    printf ("test_gpu_request_path: streamed = copied first, byte for byte "
            "(%zu KiB layer slices): OK\n", block_bytes / 2 / 1024);
    free (view);
    free (expect);
    s_host_pinned_free (host);
    cudaFree (slab);
    kvt_model_cuda_destroy (&model);
}

//  --bench-stream: TTFT of 'prefix' cached tokens on the host tier plus
//  'fresh' prompt tokens at the 8B shape. Best of 3 runs of each:
//  streamed (layer by layer under the prefill), copy then compute, copy
//  alone (whole 2 MiB blocks, as migration promotes today), compute alone
//  (prefix already on the GPU), and the layer-sliced copy alone.
static int
s_bench_stream (size_t prefix, size_t fresh)
{
    kvt_model_shape_t shape = { .layers = 32, .heads = 32, .kv_heads = 8, .head_dim = 128,
                                .hidden = 4096, .intermediate = 14336, .vocab = 128256,
                                .block_tokens = 16, .seed = 1 };
    kvt_model_cuda_t *model = kvt_model_cuda_new (&shape);
    t_check (model);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    const size_t block_bytes = kvt_block_bytes (&geometry);
    const size_t cached = prefix / 16, count = prefix + fresh, full = count / 16;
    const size_t max_new = 1, spares = KVT_MODEL_CUDA_SPARE_BLOCKS (16, max_new);
    void *slab = NULL;
    t_check (cudaMalloc (&slab, (full + spares) * block_bytes) == cudaSuccess);
    uint64_t *slots = (uint64_t *) malloc ((full + spares) * sizeof (uint64_t));
    for (size_t k = 0; k < full + spares; k++)
        slots [k] = k;
    uint8_t *host = (uint8_t *) s_host_pinned (cached * block_bytes);
    //  Small finite bf16 values (0x3c3c ~ 0.0115) as the cached KV
    memset (host, 0x3c, cached * block_bytes);
    const void **host_src = (const void **) malloc ((cached + 1) * sizeof (void *));
    for (size_t b = 0; b < cached; b++)
        host_src [b] = host + b * block_bytes;
    uint64_t *p64 = t_tokens (count, (uint64_t) shape.vocab, 5);
    uint32_t *prompt = (uint32_t *) malloc (count * sizeof (uint32_t));
    for (size_t k = 0; k < count; k++)
        prompt [k] = (uint32_t) p64 [k];
    free (p64);
    cudaStream_t stream;
    t_check (cudaStreamCreateWithFlags (&stream, cudaStreamNonBlocking) == cudaSuccess);
    int64_t *copy_slots = (int64_t *) malloc (2 * cached * sizeof (int64_t));
    for (size_t b = 0; b < cached; b++)
        copy_slots [b] = copy_slots [cached + b] = (int64_t) b;
    kvt_block_copy_args_t whole = {
        .dst = slab, .src = host, .dst_slots = copy_slots + cached, .src_slots = copy_slots,
        .dst_slot_bytes = (int64_t) block_bytes, .src_slot_bytes = (int64_t) block_bytes,
        .block_bytes = (int64_t) block_bytes, .count = (int) cached };
    uint32_t out [4];
    double best [5] = { 1e30, 1e30, 1e30, 1e30, 1e30 };
    const char *names [5] = { "streamed", "copy then compute", "copy alone (whole blocks)",
                              "compute alone", "copy alone (layer slices, streamed path)" };
    uint32_t first_token [2] = { 0, 0 };
    for (int run = 0; run < 4; run++)
        for (int what = 0; what < 5; what++) {
            cudaDeviceSynchronize ();
            int64_t start = zclock_usecs ();
            kvt_model_cuda_seq_t *seq = NULL;
            if (what == 1 || what == 2) {
                t_ok (kvt_block_copy_ce (&whole, stream));
                t_check (cudaStreamSynchronize (stream) == cudaSuccess);
            }
            if (what != 2)
                t_ok (kvt_model_cuda_seq_begin (model, prompt, count, slab, block_bytes, slots,
                                                cached, what == 0 || what == 4? host_src: NULL,
                                                slots + full, spares, max_new, out, &seq));
            if (what <= 1 || what == 3)
                t_check (kvt_model_cuda_seq_prefill (model, seq, 0) == 0);
            kvt_model_cuda_seq_destroy (&seq);      //  Waits for its copies
            double ms = (zclock_usecs () - start) / 1000.0;
            if (run > 0 && ms < best [what])
                best [what] = ms;
            if (what <= 1)
                first_token [what] = out [0];
        }
    t_check (first_token [0] == first_token [1]);   //  Same KV, same first token
    double bound = best [2] > best [3]? best [2]: best [3];
    double gbps = (double) cached * block_bytes / (best [2] / 1e3) / 1e9;
    double gbps_sliced = (double) cached * block_bytes / (best [4] / 1e3) / 1e9;
    printf ("bench-stream: 8B shape, %zu-token prefix on the host tier (%zu blocks, %.2f GiB) "
            "+ %zu new prompt tokens, time to first token, best of 3:\n", prefix, cached,
            (double) cached * block_bytes / (1 << 30), fresh);
    for (int what = 0; what < 5; what++)
        printf ("bench-stream:   %-42s %8.2f ms\n", names [what], best [what]);
    printf ("bench-stream:   copy alone: %.1f GB/s whole blocks, %.1f GB/s in layer slices\n",
            gbps, gbps_sliced);
    printf ("bench-stream: streamed %.2f ms; baseline max (copy alone, compute alone) %.2f ms; "
            "ratio %.3f (target <= 1.1)\n", best [0], bound, best [0] / bound);
    printf ("bench-stream: streamed %.2f ms; baseline copy then compute %.2f ms; ratio %.3f\n",
            best [0], best [1], best [0] / best [1]);
    cudaStreamDestroy (stream);
    free (copy_slots);
    free (prompt);
    free (host_src);
    s_host_pinned_free (host);
    free (slots);
    cudaFree (slab);
    kvt_model_cuda_destroy (&model);
    return 0;
}

//  cuBLAS bf16 GEMM rate (TFLOP/s) at m x n x k, the best of 5 timed runs
static double
s_cublas_tflops (int m, int n, int k)
{
    void *a, *w, *c;
    t_check (cudaMalloc (&a, (size_t) m * k * 2) == cudaSuccess);
    t_check (cudaMalloc (&w, (size_t) n * k * 2) == cudaSuccess);
    t_check (cudaMalloc (&c, (size_t) m * n * 2) == cudaSuccess);
    cudaMemset (a, 0x3c, (size_t) m * k * 2);
    cudaMemset (w, 0x3c, (size_t) n * k * 2);
    cublasHandle_t handle;
    t_check (cublasCreate (&handle) == CUBLAS_STATUS_SUCCESS);
    const float alpha = 1.0f, beta = 0.0f;
    double best = 1e30;
    for (int run = 0; run < 6; run++) {
        cudaDeviceSynchronize ();
        int64_t start = zclock_usecs ();
        for (int rep = 0; rep < 10; rep++)
            t_check (cublasGemmEx (handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w,
                                   CUDA_R_16BF, k, a, CUDA_R_16BF, k, &beta, c, CUDA_R_16BF,
                                   n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
                     == CUBLAS_STATUS_SUCCESS);
        cudaDeviceSynchronize ();
        double seconds = (zclock_usecs () - start) / 1e6 / 10;
        if (run > 0 && seconds < best)
            best = seconds;
    }
    cublasDestroy (handle);
    cudaFree (a);
    cudaFree (w);
    cudaFree (c);
    return 2.0 * m * n * k / best / 1e12;
}

//  --bench: prefill of a 'prompt'-token prompt at the Llama-3-8B shape,
//  against the cuBLAS GEMM rate measured in the same run.
static int
s_bench (int prompt)
{
    kvt_model_shape_t shape = { .layers = 32, .heads = 32, .kv_heads = 8, .head_dim = 128,
                                .hidden = 4096, .intermediate = 14336, .vocab = 128256,
                                .block_tokens = 16, .seed = 1 };
    int64_t started = zclock_usecs ();
    kvt_model_cuda_t *model = kvt_model_cuda_new (&shape);
    t_check (model);
    printf ("bench: 8B weights made on the device in %.2f s\n",
            (zclock_usecs () - started) / 1e6);
    kvt_block_shape_t geometry = kvt_model_cuda_block_shape (model);
    size_t block_bytes = kvt_block_bytes (&geometry);
    const size_t max_new = 33, full = (size_t) prompt / 16;
    size_t spare_count = KVT_MODEL_CUDA_SPARE_BLOCKS (16, max_new);
    void *slab;
    t_check (cudaMalloc (&slab, (full + spare_count) * block_bytes) == cudaSuccess);
    uint64_t *slots = (uint64_t *) malloc ((full + spare_count) * sizeof (uint64_t));
    for (size_t k = 0; k < full + spare_count; k++)
        slots [k] = k;
    uint32_t *tokens = (uint32_t *) malloc ((size_t) prompt * sizeof (uint32_t));
    uint64_t *tokens64 = t_tokens ((size_t) prompt, (uint64_t) shape.vocab, 5);
    for (int k = 0; k < prompt; k++)
        tokens [k] = (uint32_t) tokens64 [k];
    uint32_t out [64];
    double best_ttft = 1e30;
    int64_t decode_us = 0;
    for (int run = 0; run < 4; run++) {
        int64_t ttft = 0, start = zclock_usecs ();
        t_ok (kvt_model_cuda_generate (model, tokens, (size_t) prompt, slab, block_bytes, slots,
                                       0, slots + full, spare_count, run == 3? max_new: 1, out,
                                       &ttft));
        if (run == 3)
            decode_us = zclock_usecs () - start - ttft;
        else
        if (run > 0 && ttft < best_ttft)
            best_ttft = (double) ttft;
    }
    double params = (double) shape.layers * ((double) shape.hidden * shape.heads * 128 * 2
                  + 2.0 * shape.hidden * shape.kv_heads * 128 + 3.0 * shape.hidden
                  * shape.intermediate);
    double gemm_flop = 2.0 * params * prompt;
    double attn_flop = 2.0 * shape.layers * shape.heads * 128.0 * prompt * (double) prompt;
    double model_tflops = (gemm_flop + attn_flop) / (best_ttft / 1e6) / 1e12;
    double big = s_cublas_tflops (4096, 14336, 4096);
    double chunk = s_cublas_tflops (512, 14336, 4096);
    printf ("bench: prefill %d tokens (8B shape, bf16): %.1f ms, %.1f TFLOP/s "
            "(2 x %.2fB params x tokens + causal attention %.1f TFLOP)\n", prompt,
            best_ttft / 1000.0, model_tflops, params / 1e9, attn_flop / 1e12);
    printf ("bench: baseline cuBLAS bf16 GEMM 4096x14336x4096: %.1f TFLOP/s; ratio %.2f\n",
            big, model_tflops / big);
    printf ("bench: cuBLAS bf16 GEMM 512x14336x4096 (the model's chunk): %.1f TFLOP/s\n", chunk);
    printf ("bench: decode %.2f ms/token (32 steps after the %d-token prompt)\n",
            decode_us / 1000.0 / (max_new - 1), prompt);
    free (tokens64);
    free (tokens);
    free (slots);
    cudaFree (slab);

    //  Continuous batching: B sequences of 1024-token prompts (their own
    //  prompts, all prefilled first), then 32 decode steps of all B by
    //  kvt_model_cuda_decode (each returns after the stream drained), then
    //  32 more by step launch / eventfd / finish, as the compute actor runs
    //  them (the thread is free while the GPU works)
    enum { CONTEXT = 1024, STEPS = 32, MOST = 64, NEW = 2 * STEPS + 1 };
    const size_t per_seq = KVT_MODEL_CUDA_SEQ_SPARE_BLOCKS (16, CONTEXT, NEW)
                         + CONTEXT / 16;
    t_check (cudaMalloc (&slab, MOST * per_seq * block_bytes) == cudaSuccess);
    static uint32_t outs [MOST][NEW], first_outs [MOST][NEW];
    double async_rate [3] = { 0, 0, 0 }, async_ms [3] = { 0, 0, 0 }, held_ms [3] = { 0, 0, 0 };
    int fd = eventfd (0, EFD_CLOEXEC);
    t_check (fd >= 0);
    static uint64_t ids [MOST][128];
    static uint32_t prompts [MOST][CONTEXT];
    t_check (per_seq <= 128);
    for (int i = 0; i < MOST; i++) {
        for (size_t k = 0; k < per_seq; k++)
            ids [i][k] = (uint64_t) i * per_seq + k;
        uint64_t *p64 = t_tokens (CONTEXT, (uint64_t) shape.vocab, 1000 + (uint64_t) i);
        for (int k = 0; k < CONTEXT; k++)
            prompts [i][k] = (uint32_t) p64 [k];
        free (p64);
    }
    const int batches [] = { 1, 16, 64 };
    double rate [3] = { 0, 0, 0 }, step_ms [3] = { 0, 0, 0 };
    for (int b = 0; b < 3; b++) {
        const int count = batches [b];
        kvt_model_cuda_seq_t *seqs [MOST];
        for (int i = 0; i < count; i++) {
            t_ok (kvt_model_cuda_seq_begin (model, prompts [i], CONTEXT, slab, block_bytes,
                                            ids [i], 0, NULL, ids [i] + CONTEXT / 16,
                                            per_seq - CONTEXT / 16, NEW, outs [i],
                                            &seqs [i]));
            t_check (kvt_model_cuda_seq_prefill (model, seqs [i], 0) == 0);
        }
        t_ok (kvt_model_cuda_decode (model, seqs, (size_t) count));     //  Warm-up step
        int64_t start = zclock_usecs ();
        for (int step = 1; step < STEPS; step++)
            t_ok (kvt_model_cuda_decode (model, seqs, (size_t) count));
        double seconds = (zclock_usecs () - start) / 1e6;
        step_ms [b] = seconds * 1000.0 / (STEPS - 1);
        rate [b] = (double) count * (STEPS - 1) / seconds;
        //  Through the eventfd: time per step, and the thread's time
        //  inside launch and finish (what the actor's loop is held)
        int64_t held_us = 0;
        start = zclock_usecs ();
        for (int step = 0; step < STEPS; step++) {
            int64_t t0 = zclock_usecs ();
            t_ok (kvt_model_cuda_step_launch (model, NULL, 0, seqs, (size_t) count, fd));
            int64_t t1 = zclock_usecs ();
            t_check (s_fd_wait (fd) == 1);
            int64_t t2 = zclock_usecs ();
            t_check (kvt_model_cuda_step_finish (model) == 0);
            held_us += (t1 - t0) + (zclock_usecs () - t2);
        }
        seconds = (zclock_usecs () - start) / 1e6;
        async_ms [b] = seconds * 1000.0 / STEPS;
        async_rate [b] = (double) count * STEPS / seconds;
        held_ms [b] = held_us / 1000.0 / STEPS;
        for (int i = 0; i < count; i++)
            t_check (!kvt_model_cuda_seq_decoding (seqs [i]));
        for (int i = 0; i < count; i++) {
            if (b == 0)
                memcpy (first_outs [i], outs [i], sizeof (outs [i]));
            kvt_model_cuda_seq_destroy (&seqs [i]);
        }
        //  Sequence 0 gives the same tokens in every batch
        t_check (memcmp (outs [0], first_outs [0], sizeof (outs [0])) == 0);
        if (b == 1)             //  Keep batch 16's tokens: batch 64 must match them
            for (int i = 1; i < 16; i++)
                memcpy (first_outs [i], outs [i], sizeof (outs [i]));
        if (b == 2)
            for (int i = 0; i < 16; i++)
                t_check (memcmp (outs [i], first_outs [i], sizeof (outs [i])) == 0);
    }
    for (int b = 0; b < 3; b++)
        printf ("bench: decode batch %2d (8B shape, %d-token contexts): %.2f ms/step, "
                "%.0f tokens/s; baseline batch 1: %.0f tokens/s; ratio %.2f\n", batches [b],
                CONTEXT, step_ms [b], rate [b], rate [0], rate [b] / rate [0]);
    for (int b = 0; b < 3; b++)
        printf ("bench: decode batch %2d by step launch / eventfd / finish: %.2f ms/step, "
                "%.0f tokens/s (thread held %.3f ms/step in launch + finish); baseline "
                "kvt_model_cuda_decode same batch: %.0f tokens/s; ratio %.3f\n", batches [b],
                async_ms [b], async_rate [b], held_ms [b], rate [b], async_rate [b] / rate [b]);
    printf ("bench: batches 16 and 64 gave batch 1's (and 16's) tokens, all %d steps: OK\n",
            NEW);
    close (fd);
    //  What batch invariance costs batch 1: every decode GEMM runs on 64
    //  rows. cuBLAS time of one step's GEMMs at m = 1 and m = 64
    const int gemm_n [] = { 6144, 4096, 28672, 4096 }, gemm_k [] = { 4096, 4096, 4096, 14336 };
    double gemm_ms [2] = { 0, 0 };
    for (int g = 0; g < 5; g++)
        for (int pad = 0; pad < 2; pad++) {
            int m = pad? KVT_MODEL_MAX_BATCH: 1;
            int n = g < 4? gemm_n [g]: shape.vocab, k = g < 4? gemm_k [g]: shape.hidden;
            double ms = 2.0 * m * n * k / (s_cublas_tflops (m, n, k) * 1e12) * 1e3;
            gemm_ms [pad] += g < 4? ms * shape.layers: ms;
        }
    printf ("bench: one step's cuBLAS GEMMs (8B): %.2f ms at m = 1, %.2f ms at m = %d "
            "(padded, what every step runs); ratio %.2f\n", gemm_ms [0], gemm_ms [1],
            KVT_MODEL_MAX_BATCH, gemm_ms [1] / gemm_ms [0]);
    cudaFree (slab);
    kvt_model_cuda_destroy (&model);
    return 0;
}

#endif

int
main (int argc, char **argv)
{
    //  compute/device = cuda where there is no GPU is a clear config error
    static const char *const want_cuda [] = { "compute/device=cuda", NULL };
#ifndef KVT_WITH_CUDA
    (void) argc;
    (void) argv;
    s_refused (want_cuda);
    printf ("test_gpu_request_path: not a CUDA build, skipped\n");
    return T_EXIT_SKIP;
#else
    int devices = 0;
    if (cudaGetDeviceCount (&devices) != cudaSuccess || devices == 0) {
        s_refused (want_cuda);
        printf ("test_gpu_request_path: no CUDA device, skipped\n");
        return T_EXIT_SKIP;
    }
    if (argc > 1 && streq (argv [1], "--bench"))
        return s_bench (argc > 2? atoi (argv [2]): 4096);
    if (argc > 1 && streq (argv [1], "--bench-stream"))
        return s_bench_stream (argc > 2? (size_t) atoi (argv [2]): 16384,
                               argc > 3? (size_t) atoi (argv [3]): 512);
    s_streamed_vs_copied (2);
    s_streamed_vs_copied (8);
    s_batched_vs_alone (false);
    s_batched_vs_alone (true);
    s_request_path ("model/layers=2", "model/kv_heads=2", "migration.copy_kernel_launches",
                    "thread");
    printf ("test_gpu_request_path: request path, 32 KiB blocks (copy kernel): OK\n");
    s_request_path ("model/layers=4", "model/kv_heads=8", "migration.copy_ce_batches", "thread");
    printf ("test_gpu_request_path: request path, 256 KiB blocks (copy engines): OK\n");
    s_request_path ("model/layers=2", "model/kv_heads=2", "migration.copy_kernel_launches",
                    "process");
    printf ("test_gpu_request_path: request path, device slab shared by CUDA IPC with "
            "tier_gpu, migration and compute processes: OK\n");

    s_account_t cpu [S_REQUESTS], gpu [S_REQUESTS];
    s_replay ("cpu", cpu);
    s_replay ("cuda", gpu);
    s_account_t total = { 0, 0, 0, 0 };
    for (int r = 0; r < S_REQUESTS; r++) {
        if (memcmp (&cpu [r], &gpu [r], sizeof (s_account_t))) {
            fprintf (stderr, "request %d: cpu gpu/host/nvme/computed %" PRIu64 "/%" PRIu64
                     "/%" PRIu64 "/%" PRIu64 ", gpu model %" PRIu64 "/%" PRIu64 "/%" PRIu64
                     "/%" PRIu64 "\n", r, cpu [r].from_gpu, cpu [r].from_host,
                     cpu [r].from_nvme, cpu [r].computed, gpu [r].from_gpu, gpu [r].from_host,
                     gpu [r].from_nvme, gpu [r].computed);
            t_check (false);
        }
        total.from_gpu += gpu [r].from_gpu;
        total.from_host += gpu [r].from_host;
        total.from_nvme += gpu [r].from_nvme;
        total.computed += gpu [r].computed;
    }
    printf ("test_gpu_request_path: %d requests, CPU and GPU models agree: from_gpu %" PRIu64
            " from_host %" PRIu64 " from_nvme %" PRIu64 " computed %" PRIu64 "\n", S_REQUESTS,
            total.from_gpu, total.from_host, total.from_nvme, total.computed);
    t_check (total.from_gpu > 0 && total.computed > 0);
    printf ("test_gpu_request_path: OK\n");
    return T_EXIT_PASS;
#endif
}
