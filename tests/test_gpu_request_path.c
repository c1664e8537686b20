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
    The speed of these paths is measured by `kvtier bench model`.
@end
*/

#include "testutil.h"
#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
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
    t_check (t_stat (client, "compute.streamed_blocks") >= 10);
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

    //  Migration went through the expected CUDA path, without errors.
    //  Blocks demoted together hold adjacent host slots and come back in
    //  runs: such batches take the staged path (kvt_block_copy_staged)
    printf ("  %s: copy kernel launches %" PRIu64 ", engine batches %" PRIu64
            ", staged batches %" PRIu64 "\n", layers,
            t_stat (client, "migration.copy_kernel_launches"),
            t_stat (client, "migration.copy_ce_batches"),
            t_stat (client, "migration.copy_staged_batches"));
    t_check (t_stat (client, copy_counter) > 0);
    t_check (t_stat (client, "migration.copy_errors") == 0);
    t_check (t_stat (client, "scheduler.copy_errors") == 0);

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

#endif

int
main (void)
{
    //  compute/device = cuda where there is no GPU is a clear config error
    static const char *const want_cuda [] = { "compute/device=cuda", NULL };
#ifndef KVT_WITH_CUDA
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
    s_streamed_vs_copied (2);
    s_streamed_vs_copied (8);
    s_batched_vs_alone (false);
    s_batched_vs_alone (true);
    s_request_path ("model/layers=2", "model/kv_heads=2", "migration.copy_kernel_launches",
                    "thread");
    printf ("test_gpu_request_path: request path, 32 KiB blocks (copy kernel): OK\n");
    s_request_path ("model/layers=4", "model/kv_heads=8", "migration.copy_staged_batches",
                    "thread");
    printf ("test_gpu_request_path: request path, 256 KiB blocks (host runs: staged "
            "copies): OK\n");
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
