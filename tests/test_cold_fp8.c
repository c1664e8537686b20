/*  =========================================================================
    test_cold_fp8 - FP8 (e4m3) cold tiers: half the bytes, bounded error

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Issue #3 on the CPU build, migration/cold_dtype = fp8. Two prefixes A
    and B with the same KV (bf16 values, planes of different amplitudes)
    are stored, both demoted to the host tier, half of them on to disk,
    and LOADed back: every element is within the FP8 bound of the original
    (|err| <= 2^-4 |x| + 2^-10 scale, plus bf16 rounding; NMSE < 1.5e-3),
    and the two loads are byte-identical though their blocks came back
    from host and from NVMe. The counters show the FP8 form's bytes (half
    a block plus 4 per plane) on GPU <-> host and host <-> disk, and the
    disk store moved only that length. A byte flipped on disk is still a
    miss. A GENERATE whose prefix lies on host and disk completes with
    stream promotion on (the default): migration answers with the host
    and staging slots' FP8 forms and compute's model dequantizes each
    layer of them just before that layer runs (compute counters
    streamed_blocks, fp8_layers_dequantized; migration's fp8 kernels do
    not run for it). The same GENERATE with stream_promotion = 0, where
    migration dequantizes into the GPU slots first, gives the same output
    tokens and the same KV bytes, cached and computed blocks alike. A
    store written with bf16 and reopened with fp8 serves none of its
    blocks in the wrong form.
    The scenario runs with actors as threads, then (under ctest, which sets
    KVTIER) with tier_host, tier_nvme and migration as processes. The FP8
    form dequantized layer by layer (a slice of planes and scales each)
    gives the whole block's bytes. --device cuda runs the scenario on a
    CUDA build with a GPU (fp8 kernels, GPU tier in device memory).
@end
*/

#include "testutil.h"
#include "kvt_dtype.h"
#include "kvt_fp8.cuh"
#include "kvt_model.h"

#define S_BLOCKS 24                 //  Blocks per prefix

typedef struct {
    int planes;                     //  layers x 2 x kv_heads
    int plane_elems;                //  block_tokens x head_dim
    size_t block_bytes;             //  bf16 block
    size_t cold_bytes;              //  Its FP8 form
} s_shape_t;

//  Check 'back' against 'orig' (bf16, 'blocks' blocks): per element bound
//  and NMSE. Returns the worst |err| / bound seen.
static double
s_check_error (const s_shape_t *shape, const uint16_t *orig, const uint16_t *back,
               size_t blocks, double *nmse_out)
{
    double worst = 0, err2 = 0, ref2 = 0;
    for (size_t p = 0; p < blocks * (size_t) shape->planes; p++) {
        const uint16_t *x = orig + p * shape->plane_elems, *y = back + p * shape->plane_elems;
        float amax = 0;
        for (int e = 0; e < shape->plane_elems; e++)
            amax = fmaxf (amax, fabsf (kvt_bf16_to_float (x [e])));
        float scale = amax > 0? amax / 448.0f: 1.0f;
        for (int e = 0; e < shape->plane_elems; e++) {
            float xv = kvt_bf16_to_float (x [e]), yv = kvt_bf16_to_float (y [e]);
            float bound = fabsf (xv) / 16 + scale / 1024 + fabsf (yv) / 256;
            float err = fabsf (xv - yv);
            t_check (err <= bound);
            if (bound > 0 && err / bound > worst)
                worst = err / bound;
            err2 += (double) err * err;
            ref2 += (double) xv * xv;
        }
    }
    *nmse_out = err2 / ref2;
    t_check (*nmse_out < 1.5e-3);
    return worst;
}

//  Fill 'blocks' blocks with bf16 values, each plane its own amplitude
static void
s_fill (const s_shape_t *shape, uint16_t *kv, size_t blocks, uint64_t seed)
{
    for (size_t p = 0; p < blocks * (size_t) shape->planes; p++) {
        float amplitude = ldexpf (1.0f, (int) (seed % 7) - 3);
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        kvt_kdtype_fill_random (KVT_KDTYPE_BF16, kv + p * shape->plane_elems,
                                (size_t) shape->plane_elems, amplitude, &seed);
    }
}

//  The FP8 form of block 'block' of 'kv', as the C twin makes it
static void
s_fp8_form (const s_shape_t *shape, const uint16_t *kv, size_t block, uint8_t *out)
{
    int64_t src = (int64_t) block, dst = 0;
    kvt_fp8_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .src = kv, .dst = out,
        .scales = (float *) (out + (size_t) shape->planes * shape->plane_elems),
        .src_slots = &src, .dst_slots = &dst, .src_slot_bytes = (int64_t) shape->block_bytes,
        .dst_slot_bytes = (int64_t) shape->block_bytes, .planes = shape->planes,
        .plane_elems = shape->plane_elems, .count = 1,
        .scale_stride = (int64_t) shape->block_bytes / 4 };
    t_ok (kvt_fp8_quantize_ref (&args));
}

//  The FP8 form is plane-major, so layer l of a block is one contiguous
//  run of 2 x kv_heads planes and their scales: dequantizing it layer by
//  layer (as a layer-streamed promotion would, one slice per layer) gives
//  the bytes of dequantizing the whole block
static void
s_layer_slices (const s_shape_t *shape, const uint16_t *kv, int layers)
{
    uint8_t *form = (uint8_t *) aligned_alloc (64, shape->block_bytes);
    uint8_t *whole = (uint8_t *) aligned_alloc (64, shape->block_bytes);
    uint8_t *sliced = (uint8_t *) aligned_alloc (64, shape->block_bytes);
    memset (form, 0, shape->block_bytes);
    memset (sliced, 0xa5, shape->block_bytes);
    s_fp8_form (shape, kv, 3, form);
    int64_t zero = 0;
    size_t elems = (size_t) shape->planes * shape->plane_elems;
    kvt_fp8_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .src = form, .dst = whole, .scales = (float *) (form + elems),
        .src_slots = &zero, .dst_slots = &zero, .src_slot_bytes = (int64_t) shape->block_bytes,
        .dst_slot_bytes = (int64_t) shape->block_bytes, .planes = shape->planes,
        .plane_elems = shape->plane_elems, .count = 1,
        .scale_stride = (int64_t) shape->block_bytes / 4 };
    t_ok (kvt_fp8_dequantize_ref (&args));
    int per_layer = shape->planes / layers;
    for (int l = 0; l < layers; l++) {
        size_t first = (size_t) l * per_layer;
        kvt_fp8_args_t slice = args;
        slice.src = form + first * shape->plane_elems;
        slice.dst = sliced + first * shape->plane_elems * 2;
        slice.scales = (float *) (form + elems) + first;
        slice.planes = per_layer;
        t_ok (kvt_fp8_dequantize_ref (&slice));
    }
    t_check (memcmp (whole, sliced, shape->block_bytes) == 0);
    free (form);
    free (whole);
    free (sliced);
}

//  The CPU model alone (kvt_model_set_host_fp8): a sequence whose cached
//  blocks arrive as FP8 host copies, dequantized layer by layer during the
//  prefill, gives the tokens and every block byte of one whose blocks
//  were dequantized first; an FP8 copy not 16-byte aligned is refused
static void
s_model_streams_fp8 (void)
{
    kvt_model_shape_t model_shape = { .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 16,
                                      .hidden = 64, .intermediate = 128, .vocab = 256,
                                      .block_tokens = 16, .seed = 11 };
    kvt_model_t *model = kvt_model_new (&model_shape);
    t_check (model);
    s_shape_t shape = { .planes = 2 * 2 * 2, .plane_elems = 16 * 16 };
    shape.block_bytes = (size_t) shape.planes * shape.plane_elems * 2;
    const size_t blocks = 4, cached = 3, count = 3 * 16 + 16 + 8;
    uint32_t tokens [3 * 16 + 16 + 8];
    for (size_t k = 0; k < count; k++)
        tokens [k] = (uint32_t) ((k * 37 + 5) % 256);
    //  Real KV of the first blocks, their FP8 forms in host "slots"
    uint8_t *kv = (uint8_t *) aligned_alloc (64, blocks * shape.block_bytes);
    void *table [4];
    for (size_t b = 0; b < blocks; b++)
        table [b] = kv + b * shape.block_bytes;
    t_ok (kvt_model_generate (model, tokens, count, table, 0, 0, NULL, NULL));
    uint8_t *forms = (uint8_t *) aligned_alloc (64, (cached + 1) * shape.block_bytes);
    memset (forms, 0, (cached + 1) * shape.block_bytes);
    for (size_t b = 0; b < cached; b++)
        s_fp8_form (&shape, (const uint16_t *) kv, b, forms + b * shape.block_bytes);
    //  Dequantized first, then streamed
    uint8_t *first = (uint8_t *) aligned_alloc (64, blocks * shape.block_bytes);
    uint8_t *streamed = (uint8_t *) aligned_alloc (64, blocks * shape.block_bytes);
    memset (streamed, 0x5a, blocks * shape.block_bytes);
    int64_t src_slots [3] = { 0, 1, 2 };
    kvt_fp8_args_t args = {
        .dtype = KVT_KDTYPE_BF16, .src = forms, .dst = first,
        .scales = (float *) (forms + (size_t) shape.planes * shape.plane_elems),
        .src_slots = src_slots, .dst_slots = src_slots,
        .src_slot_bytes = (int64_t) shape.block_bytes,
        .dst_slot_bytes = (int64_t) shape.block_bytes, .planes = shape.planes,
        .plane_elems = shape.plane_elems, .count = (int) cached,
        .scale_stride = (int64_t) shape.block_bytes / 4 };
    t_ok (kvt_fp8_dequantize_ref (&args));
    uint32_t out [2][6];
    for (int run = 0; run < 2; run++) {
        uint8_t *mine = run? streamed: first;
        void *mine_table [4], *host_src [3] = { NULL, NULL, NULL };
        for (size_t b = 0; b < blocks; b++)
            mine_table [b] = mine + b * shape.block_bytes;
        for (size_t b = 0; run && b < cached; b++)
            host_src [b] = forms + b * shape.block_bytes;
        kvt_model_set_host_fp8 (model, run == 1);
        kvt_model_seq_t *seq;
        t_ok (kvt_model_seq_begin (model, tokens, count, mine_table, cached,
                                   run? host_src: NULL, 6, out [run], &seq));
        t_check (kvt_model_seq_prefill (model, seq, 0) == 0);
        while (kvt_model_seq_decoding (seq))
            t_ok (kvt_model_decode (model, &seq, 1));
        t_check (kvt_model_seq_emitted (seq) == 6);
        kvt_model_seq_destroy (&seq);
    }
    t_check (memcmp (out [0], out [1], sizeof (out [0])) == 0);
    t_check (memcmp (first, streamed, blocks * shape.block_bytes) == 0);
    t_check (memcmp (first, kv, shape.block_bytes) != 0);       //  Really FP8
    //  Misaligned FP8 copy: refused, nothing begun
    void *bad_src [3] = { forms + 8, NULL, NULL };
    kvt_model_seq_t *seq = NULL;
    t_check (kvt_model_seq_begin (model, tokens, count, table, cached, bad_src, 6, out [0],
                                  &seq) == -EINVAL);
    t_check (seq == NULL);
    printf ("test_cold_fp8: the CPU model streams FP8 host copies layer by layer "
            "(same tokens and blocks as dequantized first)\n");
    free (first);
    free (streamed);
    free (forms);
    free (kv);
    kvt_model_destroy (&model);
}

//  A disk tier written with bf16, reopened with fp8: its blocks are found
//  but every read is refused (their length and checksum are bf16's), so
//  none is served in the wrong form; the request recomputes them
static void
s_restart_changes_form (void)
{
    char dir [] = "/var/tmp/kvt-coldfp8-XXXXXX";
    t_check (mkdtemp (dir));
    char option [256];
    snprintf (option, sizeof (option), "tier_nvme/dir=%s", dir);
    const char *bf16 [] = { option, "compute/device=cpu", "model/block_tokens=64",
                            "migration/cold_dtype=bf16", NULL };
    const char *fp8 [] = { option, "compute/device=cpu", "model/block_tokens=64",
                           "migration/cold_dtype=fp8", NULL };
    kvt_client_hello_t hello;
    uint64_t *tokens = NULL;
    size_t count = 0;
    for (int run = 0; run < 2; run++) {
        kvt_config_t *config = t_config (run? fp8: bf16);
        kvt_runtime_t *runtime = t_start_runtime (config);
        kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 30000);
        t_ok (kvt_client_hello (client, "test_cold_fp8", &hello));
        if (run == 0) {
            count = 6 * hello.block_tokens;
            tokens = t_tokens (count, hello.vocab, 9);
            size_t bytes = 6 * hello.block_bytes;
            uint16_t *kv = (uint16_t *) malloc (bytes);
            for (size_t e = 0; e < bytes / 2; e++)
                kv [e] = kvt_float_to_bf16 ((float) (e % 97) / 16 - 3);
            kvt_client_store_t stored;
            t_ok (kvt_client_store (client, "", tokens, count, kv, bytes, &stored));
            uint64_t moved;
            t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 6, &moved));
            t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 6, &moved));
            t_check (moved == 6);
            free (kv);
        }
        else {
            kvt_client_lookup_t where = { 0 };
            for (int tries = 0; tries < 100; tries++) {
                kvt_client_lookup_fini (&where);
                t_ok (kvt_client_lookup (client, "", tokens, count, &where));
                if (where.matched_blocks == 6)
                    break;
                zclock_sleep (20);
            }
            t_check (where.matched_blocks == 6 && where.tiers [0] == KVT_TIER_NVME);
            kvt_client_lookup_fini (&where);
            kvt_client_load_t loaded;
            t_ok (kvt_client_load (client, "", tokens, count, &loaded));
            t_check (loaded.blocks == 0);
            kvt_client_load_fini (&loaded);
            t_check (t_stat (client, "tier_nvme.checksum_failures")
                     + t_stat (client, "tier_nvme.misses") >= 1);
            t_check (t_stat (client, "tier_nvme.read_bytes") == 0);
        }
        kvt_client_destroy (&client);
        kvt_runtime_destroy (&runtime);
        kvt_config_destroy (&config);
    }
    free (tokens);
    char command [512];
    snprintf (command, sizeof (command), "rm -rf %s", dir);
    t_check (system (command) == 0);
}

//  The config of the scenario: the CPU or CUDA model's shape, then 'extra'
//  (NULL-terminated, may be NULL)
static kvt_config_t *
s_config (bool cuda, const char *const *extra)
{
    static const char *const cpu_overrides [] = { "migration/cold_dtype=fp8",
        "compute/device=cpu", "model/block_tokens=64",
        "tier_gpu/capacity_blocks=128", "tier_host/capacity_blocks=128",
        "tier_nvme/capacity_blocks=256", "migration/high_watermark=100",
        "migration/low_watermark=99", NULL };
    static const char *const cuda_overrides [] = { "migration/cold_dtype=fp8",
        "compute/device=cuda", "model/block_tokens=16", "model/head_dim=128",
        "model/hidden=256", "model/intermediate=512", "model/heads=4", "model/kv_heads=2",
        "tier_gpu/capacity_blocks=128", "tier_host/capacity_blocks=128",
        "tier_nvme/capacity_blocks=256", "migration/high_watermark=100",
        "migration/low_watermark=99", NULL };
    const char *overrides [24];
    size_t n = 0;
    for (const char *const *o = cuda? cuda_overrides: cpu_overrides; *o; o++)
        overrides [n++] = *o;
    for (const char *const *o = extra; o && *o && n < 23; o++)
        overrides [n++] = *o;
    overrides [n] = NULL;
    return t_config (overrides);
}

//  One GENERATE of a prompt whose first S_BLOCKS blocks are cached in FP8,
//  half on the host, half on disk, 1.5 blocks computed past them; then
//  its KV read back. With 'stream', stream promotion (compute dequantizes
//  layer by layer), else migration dequantizes first. Returns the output
//  tokens (8) and sets *kv_p to the KV of the prompt's S_BLOCKS + 1 full
//  blocks, *kv_bytes_p to its length.
static uint64_t *
s_generate_fp8 (bool cuda, bool stream, void **kv_p, size_t *kv_bytes_p)
{
    const char *extra [] = { stream? "migration/stream_promotion=1"
                                   : "migration/stream_promotion=0", NULL };
    kvt_config_t *config = s_config (cuda, extra);
    int layers = (int) kvt_config_int (config, "model/layers");
    s_shape_t shape;
    shape.planes = (int) (layers * 2 * kvt_config_int (config, "model/kv_heads"));
    shape.plane_elems = (int) (kvt_config_int (config, "model/block_tokens")
                               * kvt_config_int (config, "model/head_dim"));
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 60000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_cold_fp8", &hello));
    shape.block_bytes = hello.block_bytes;
    shape.cold_bytes = kvt_fp8_block_bytes (shape.planes, shape.plane_elems);
    size_t cached = S_BLOCKS * hello.block_tokens;
    size_t count = cached + hello.block_tokens + hello.block_tokens / 2;
    uint64_t *tokens = t_tokens (count, hello.vocab, 5);
    size_t bytes = S_BLOCKS * hello.block_bytes;
    uint16_t *kv = (uint16_t *) malloc (bytes);
    s_fill (&shape, kv, S_BLOCKS, 99);
    kvt_client_store_t stored;
    t_ok (kvt_client_store (client, "", tokens, cached, kv, bytes, &stored));
    t_check (stored.stored_blocks == S_BLOCKS);
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, S_BLOCKS, &moved));
    t_check (moved == S_BLOCKS);
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, S_BLOCKS / 2, &moved));
    t_check (moved == S_BLOCKS / 2);
    uint64_t fp8_launches = t_stat (client, "migration.fp8_kernel_launches");
    kvt_client_generate_t generated;
    t_ok (kvt_client_generate (client, "", tokens, count, 8, &generated));
    t_check (generated.token_count == 8);
    t_check (generated.from_host == S_BLOCKS / 2 && generated.from_nvme == S_BLOCKS / 2);
    if (stream) {
        t_check (t_stat (client, "compute.streamed_blocks") == S_BLOCKS);
        t_check (t_stat (client, "compute.fp8_layers_dequantized") == (uint64_t) layers);
        t_check (t_stat (client, "migration.stream_promotions") == 1);
        t_check (t_stat (client, "migration.fp8_kernel_launches") == fp8_launches);
    }
    else {
        t_check (t_stat (client, "compute.streamed_blocks") == 0);
        t_check (t_stat (client, "compute.fp8_layers_dequantized") == 0);
        t_check (t_stat (client, "migration.stream_promotions") == 0);
        if (cuda)
            t_check (t_stat (client, "migration.fp8_kernel_launches") > fp8_launches);
    }
    uint64_t *out = (uint64_t *) malloc (8 * sizeof (uint64_t));
    memcpy (out, generated.tokens, 8 * sizeof (uint64_t));
    kvt_client_generate_fini (&generated);
    //  The cached blocks (now in the GPU tier) and the computed one
    kvt_client_load_t loaded = { 0 };
    for (int tries = 0; tries < 100; tries++) {
        kvt_client_load_fini (&loaded);
        t_ok (kvt_client_load (client, "", tokens, count, &loaded));
        if (loaded.blocks == S_BLOCKS + 1)
            break;
        zclock_sleep (20);
    }
    t_check (loaded.blocks == S_BLOCKS + 1);
    for (size_t k = 0; k < loaded.blocks; k++)
        t_check (loaded.tiers [k] == KVT_TIER_GPU);
    double nmse;
    s_check_error (&shape, kv, (const uint16_t *) loaded.kv, S_BLOCKS, &nmse);
    t_check (loaded.kv_bytes == (S_BLOCKS + 1) * hello.block_bytes);
    *kv_bytes_p = loaded.kv_bytes;
    *kv_p = malloc (loaded.kv_bytes);
    memcpy (*kv_p, loaded.kv, loaded.kv_bytes);
    kvt_client_load_fini (&loaded);
    free (kv);
    free (tokens);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
    return out;
}

//  Stream promotion with FP8 (compute dequantizes per layer) against
//  migration's dequantization first: same tokens, same KV bytes
static void
s_stream_matches_migration (bool cuda)
{
    void *kv_stream, *kv_plain;
    size_t bytes_stream, bytes_plain;
    uint64_t *out_stream = s_generate_fp8 (cuda, true, &kv_stream, &bytes_stream);
    uint64_t *out_plain = s_generate_fp8 (cuda, false, &kv_plain, &bytes_plain);
    t_check (memcmp (out_stream, out_plain, 8 * sizeof (uint64_t)) == 0);
    t_check (bytes_stream == bytes_plain);
    t_check (memcmp (kv_stream, kv_plain, bytes_stream) == 0);
    printf ("test_cold_fp8 (%s): stream promotion and migration-side dequantization agree "
            "(8 tokens, %d blocks' KV, %zu bytes)\n", cuda? "cuda": "cpu", S_BLOCKS + 1,
            bytes_stream);
    free (out_stream);
    free (out_plain);
    free (kv_stream);
    free (kv_plain);
}

//  The scenario of the @header; with 'processes', tier_host, tier_nvme and
//  migration run as their own processes (configs/multiprocess.cfg)
static void
s_scenario (bool cuda, bool processes)
{
    static const char *const process_overrides [] = { "tier_host/mode=process",
        "tier_nvme/mode=process", "migration/mode=process", NULL };
    kvt_config_t *config = s_config (cuda, processes? process_overrides: NULL);
    s_shape_t shape;
    shape.planes = (int) (kvt_config_int (config, "model/layers") * 2
                          * kvt_config_int (config, "model/kv_heads"));
    shape.plane_elems = (int) (kvt_config_int (config, "model/block_tokens")
                               * kvt_config_int (config, "model/head_dim"));
    kvt_runtime_t *runtime = t_start_runtime (config);
    kvt_client_t *client = kvt_client_new (kvt_runtime_ipc_endpoint (runtime), 60000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_cold_fp8", &hello));
    shape.block_bytes = hello.block_bytes;
    shape.cold_bytes = kvt_fp8_block_bytes (shape.planes, shape.plane_elems);
    t_check (shape.block_bytes == (size_t) shape.planes * shape.plane_elems * 2);
    t_check (shape.cold_bytes == shape.block_bytes / 2 + 4 * (size_t) shape.planes);

    size_t count = S_BLOCKS * hello.block_tokens;
    uint16_t *layer_kv = (uint16_t *) malloc (4 * shape.block_bytes);
    s_fill (&shape, layer_kv, 4, 77);
    s_layer_slices (&shape, layer_kv, (int) kvt_config_int (config, "model/layers"));
    free (layer_kv);
    uint64_t *tokens_a = t_tokens (count, hello.vocab, 1);
    uint64_t *tokens_b = t_tokens (count, hello.vocab, 2);
    size_t bytes = S_BLOCKS * hello.block_bytes;
    uint16_t *kv = (uint16_t *) malloc (bytes);
    s_fill (&shape, kv, S_BLOCKS, 42);
    kvt_client_store_t stored;
    t_ok (kvt_client_store (client, "", tokens_a, count, kv, bytes, &stored));
    t_check (stored.stored_blocks == S_BLOCKS);
    t_ok (kvt_client_store (client, "", tokens_b, count, kv, bytes, &stored));
    t_check (stored.stored_blocks == S_BLOCKS);

    //  Both prefixes to the host tier (quantized), half of the blocks on to
    //  disk (kept in FP8)
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 2 * S_BLOCKS, &moved));
    t_check (moved == 2 * S_BLOCKS);
    t_check (t_stat (client, "migration.bytes_gpu_to_host") == 2 * S_BLOCKS * shape.cold_bytes);
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, S_BLOCKS, &moved));
    t_check (moved == S_BLOCKS);
    t_check (t_stat (client, "migration.bytes_host_to_nvme") == S_BLOCKS * shape.cold_bytes);

    kvt_client_load_t load_a, load_b;
    t_ok (kvt_client_load (client, "", tokens_a, count, &load_a));
    t_ok (kvt_client_load (client, "", tokens_b, count, &load_b));
    t_check (load_a.blocks == S_BLOCKS && load_b.blocks == S_BLOCKS);
    t_check (load_a.kv_bytes == bytes && load_b.kv_bytes == bytes);
    size_t from_tier [KVT_TIER_COUNT] = { 0 };
    for (size_t k = 0; k < S_BLOCKS; k++) {
        from_tier [load_a.tiers [k]]++;
        from_tier [load_b.tiers [k]]++;
    }
    t_check (from_tier [KVT_TIER_HOST] == S_BLOCKS && from_tier [KVT_TIER_NVME] == S_BLOCKS);
    //  Host and NVMe paths give the same bytes; both within the bound
    t_check (memcmp (load_a.kv, load_b.kv, bytes) == 0);
    t_check (memcmp (load_a.kv, kv, bytes) != 0);     //  It really went through FP8
    double nmse;
    double worst = s_check_error (&shape, kv, (const uint16_t *) load_a.kv, S_BLOCKS, &nmse);
    printf ("test_cold_fp8 (%s%s): %d blocks of %zu bytes, FP8 form %zu bytes; "
            "NMSE %.3g, worst error %.2f of the bound\n", cuda? "cuda": "cpu",
            processes? ", processes": "",
            2 * S_BLOCKS, shape.block_bytes,
            shape.cold_bytes, nmse, worst);
    //  Half the bytes (plus the scales) on PCIe and disk
    t_check (t_stat (client, "migration.bytes_host_to_gpu") == 2 * S_BLOCKS * shape.cold_bytes);
    t_check (t_stat (client, "migration.bytes_nvme_to_host") == S_BLOCKS * shape.cold_bytes);
    uint64_t disk_written = t_stat (client, "tier_nvme.write_bytes");
    uint64_t disk_read = t_stat (client, "tier_nvme.read_bytes");
    t_check (disk_written == S_BLOCKS * shape.cold_bytes);
    t_check (disk_read == S_BLOCKS * shape.cold_bytes);
    printf ("test_cold_fp8: bytes GPU->host %" PRIu64 ", host->GPU %" PRIu64 ", disk written %"
            PRIu64 ", read %" PRIu64 " (bf16 would be %zu each way)\n",
            t_stat (client, "migration.bytes_gpu_to_host"),
            t_stat (client, "migration.bytes_host_to_gpu"), disk_written, disk_read,
            2 * S_BLOCKS * shape.block_bytes);
    kvt_client_load_fini (&load_b);

    //  A GENERATE with its prefix on host and disk completes; stream
    //  promotion (on by default) leaves the dequantization to compute,
    //  layer by layer under the prefill
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 2 * S_BLOCKS, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, S_BLOCKS / 2, &moved));
    t_check (moved == S_BLOCKS / 2);
    //  The prefix with blocks on both tiers (eviction order decides which)
    const uint64_t *tokens_mixed = NULL;
    for (int which = 0; which < 2 && !tokens_mixed; which++) {
        const uint64_t *tokens = which? tokens_b: tokens_a;
        kvt_client_lookup_t where;
        t_ok (kvt_client_lookup (client, "", tokens, count, &where));
        t_check (where.matched_blocks == S_BLOCKS);
        size_t on_disk = 0;
        for (size_t k = 0; k < S_BLOCKS; k++)
            on_disk += where.tiers [k] == KVT_TIER_NVME;
        if (on_disk > 0 && on_disk < S_BLOCKS)
            tokens_mixed = tokens;
        kvt_client_lookup_fini (&where);
    }
    t_check (tokens_mixed);
    uint64_t to_gpu = t_stat (client, "migration.bytes_host_to_gpu");
    uint64_t fp8_launches = t_stat (client, "migration.fp8_kernel_launches");
    kvt_client_generate_t generated;
    t_ok (kvt_client_generate (client, "", tokens_mixed, count, 4, &generated));
    t_check (generated.token_count == 4);
    t_check (generated.from_host + generated.from_nvme == S_BLOCKS);
    t_check (generated.from_nvme > 0 && generated.from_host > 0);
    //  Streamed: compute dequantized every layer of the 24 FP8 forms
    t_check (t_stat (client, "migration.stream_promotions") == 1);
    t_check (t_stat (client, "migration.stream_promoted_blocks") == S_BLOCKS);
    t_check (t_stat (client, "compute.streamed_blocks") == S_BLOCKS);
    t_check (t_stat (client, "compute.streamed_bytes") == S_BLOCKS * shape.cold_bytes);
    t_check (t_stat (client, "compute.fp8_layers_dequantized")
             == (uint64_t) kvt_config_int (config, "model/layers"));
    t_check (t_stat (client, "migration.fp8_kernel_launches") == fp8_launches);
    //  The commit (MIG_PROMOTE_END, after the reply) counts the FP8 bytes
    for (int tries = 0; tries < 200; tries++) {
        if (t_stat (client, "migration.bytes_host_to_gpu") > to_gpu)
            break;
        zclock_sleep (10);
    }
    t_check (t_stat (client, "migration.bytes_host_to_gpu") == to_gpu + S_BLOCKS * shape.cold_bytes);
    if (cuda)                       //  The fp8 kernels moved them, not the copy kernel
        t_check (fp8_launches >= 4
                 && t_stat (client, "migration.copy_kernel_launches") == 0
                 && t_stat (client, "migration.copy_ce_batches") == 0);
    kvt_client_generate_fini (&generated);
    //  Its KV came back as before (quantizing again what FP8 gave back
    //  may round differently: check the bound, not the bytes)
    kvt_client_load_t again;
    t_ok (kvt_client_load (client, "", tokens_mixed, count, &again));
    t_check (again.blocks == S_BLOCKS);
    s_check_error (&shape, kv, (const uint16_t *) again.kv, S_BLOCKS, &nmse);
    kvt_client_load_fini (&again);

    //  A byte flipped in the FP8 payload of block 10 of prefix C (its own
    //  content) on disk: a miss, the load stops right before it
    uint64_t *tokens_c = t_tokens (count, hello.vocab, 3);
    uint16_t *kv_c = (uint16_t *) malloc (bytes);
    s_fill (&shape, kv_c, S_BLOCKS, 4242);
    t_ok (kvt_client_store (client, "", tokens_c, count, kv_c, bytes, &stored));
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 3 * S_BLOCKS, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 3 * S_BLOCKS, &moved));
    t_check (t_stat (client, "tier_gpu.used_blocks") == 0);
    t_check (t_stat (client, "tier_host.used_blocks") == 0);
    uint8_t *form = (uint8_t *) calloc (1, shape.block_bytes);
    s_fp8_form (&shape, kv_c, 10, form);
    t_check (t_flip_on_disk (runtime, form));
    kvt_client_load_t cut;
    t_ok (kvt_client_load (client, "", tokens_c, count, &cut));
    t_check (cut.blocks == 10);
    t_check (cut.tiers [0] == KVT_TIER_NVME);
    s_check_error (&shape, kv_c, (const uint16_t *) cut.kv, 10, &nmse);
    kvt_client_load_fini (&cut);
    t_check (t_stat (client, "tier_nvme.checksum_failures") == 1);

    free (form);
    free (kv_c);
    free (tokens_c);
    kvt_client_load_fini (&load_a);
    free (kv);
    free (tokens_a);
    free (tokens_b);
    kvt_client_destroy (&client);
    kvt_runtime_destroy (&runtime);
    kvt_config_destroy (&config);
}

int
main (int argc, char **argv)
{
    //  --device cuda: the same on a CUDA build with a GPU (GPU tier in
    //  device memory, the fp8 kernels, a head_dim the GPU model runs)
    bool cuda = argc == 3 && streq (argv [1], "--device") && streq (argv [2], "cuda");
#ifndef KVT_WITH_CUDA
    if (cuda) {
        printf ("test_cold_fp8: SKIP (not a CUDA build)\n");
        return T_EXIT_SKIP;
    }
#endif
    if (!cuda)
        s_model_streams_fp8 ();
    s_scenario (cuda, false);
    s_stream_matches_migration (cuda);
    if (!cuda) {
        //  Actor processes exec $KVTIER (set by ctest)
        if (getenv ("KVTIER"))
            s_scenario (false, true);
        else
            printf ("test_cold_fp8: KVTIER not set, process mode not run\n");
        s_restart_changes_form ();
    }
    printf ("test_cold_fp8: OK\n");
    return T_EXIT_PASS;
}
