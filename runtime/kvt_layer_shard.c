/*  =========================================================================
    kvt_layer_shard - static layer sharding of the GPU tier (issue #5)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_layer_shard.h"

int
kvt_layer_shard_parse (const char *text, double *fraction)
{
    assert (fraction);
    if (!text || !*text)
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    double value = strtod (text, &end);
    if (errno || end == text || *end || !(value > 0) || value > 1)
        return -EINVAL;             //  !(value > 0) also refuses NaN
    *fraction = value;
    return 0;
}

int
kvt_layer_shard_from_config (const kvt_config_t *config, kvt_layer_shard_t *shard,
                             char *error, size_t error_size)
{
    assert (config);
    assert (shard);
    memset (shard, 0, sizeof (*shard));
    const char *text = kvt_config_str (config, KVT_LAYER_SHARD_KEY);
    if (kvt_layer_shard_parse (text, &shard->fraction)) {
        if (error)
            snprintf (error, error_size, "config key '%s' must be a number in (0, 1] "
                      "(the share of each block's layers kept on the GPU; 1 = off), not '%s'",
                      KVT_LAYER_SHARD_KEY, text);
        return KVT_ECONFIG;
    }
    kvt_block_shape_t shape = kvt_runtime_block_shape (config);
    shard->layers = shape.layers > 0? shape.layers: 1;
    shard->block_bytes = kvt_block_bytes (&shape);
    shard->layer_bytes = shard->block_bytes / (size_t) shard->layers;
    //  Whole layers, rounded up: never fewer on the GPU than asked, and
    //  the division below never meets 0
    int gpu_layers = (int) ceil (shard->fraction * shard->layers - 1e-9);
    shard->gpu_layers = gpu_layers < 1? 1: gpu_layers > shard->layers? shard->layers: gpu_layers;
    shard->gpu_bytes = (size_t) shard->gpu_layers * shard->layer_bytes;
    shard->shard_bytes = shard->block_bytes - shard->gpu_bytes;
    int64_t capacity = kvt_config_int (config, "tier_gpu/capacity_blocks");
    shard->capacity_blocks = capacity > 0? (size_t) capacity: 0;
    shard->gpu_slots = shard->capacity_blocks * (size_t) shard->layers
                     / (size_t) shard->gpu_layers;
    return 0;
}

size_t
kvt_layer_shard_gpu_slots (const kvt_config_t *config)
{
    kvt_layer_shard_t shard;
    if (kvt_layer_shard_from_config (config, &shard, NULL, 0) == 0)
        return shard.gpu_slots;
    int64_t capacity = kvt_config_int (config, "tier_gpu/capacity_blocks");
    return capacity > 0? (size_t) capacity: 0;
}

bool
kvt_layer_shard_on (const kvt_layer_shard_t *shard)
{
    return shard && shard->gpu_layers < shard->layers;
}

int
kvt_layer_shard_read (const kvt_arena_t *gpu, const kvt_arena_t *shard, uint64_t slot,
                      void *dst)
{
    assert (gpu);
    size_t gpu_bytes = kvt_arena_block_bytes (gpu);
    int rc = kvt_arena_copy (gpu, dst, kvt_arena_block (gpu, slot), gpu_bytes);
    if (rc == 0 && shard)
        rc = kvt_arena_copy (shard, (uint8_t *) dst + gpu_bytes, kvt_arena_block (shard, slot),
                             kvt_arena_block_bytes (shard));
    return rc;
}

int
kvt_layer_shard_write (const kvt_arena_t *gpu, const kvt_arena_t *shard, uint64_t slot,
                       const void *src)
{
    assert (gpu);
    size_t gpu_bytes = kvt_arena_block_bytes (gpu);
    int rc = kvt_arena_copy (gpu, kvt_arena_block (gpu, slot), src, gpu_bytes);
    if (rc == 0 && shard)
        rc = kvt_arena_copy (shard, kvt_arena_block (shard, slot),
                             (const uint8_t *) src + gpu_bytes, kvt_arena_block_bytes (shard));
    return rc;
}

//  --------------------------------------------------------------------------
//  Self test

int
kvt_layer_shard_test (bool verbose)
{
    if (verbose)
        printf (" * kvt_layer_shard: ");
    //  Parsing: (0, 1] only, the whole text a number
    double fraction = 0;
    assert (kvt_layer_shard_parse ("1.0", &fraction) == 0 && fraction == 1.0);
    assert (kvt_layer_shard_parse ("0.5", &fraction) == 0 && fraction == 0.5);
    assert (kvt_layer_shard_parse ("1", &fraction) == 0 && fraction == 1.0);
    const char *bad [] = { "0", "-1", "1.5", "abc", "", "0.5x", "nan", "inf", "1e400", NULL };
    for (const char *const *text = bad; *text; text++)
        assert (kvt_layer_shard_parse (*text, &fraction) == -EINVAL);
    assert (kvt_layer_shard_parse (NULL, &fraction) == -EINVAL);

    //  Geometry: 8 layers, capacity 10 blocks
    kvt_config_t *config = kvt_config_new ();
    char error [256];
    int rc = kvt_config_set (config, "model/layers", "8", error, sizeof (error));
    assert (rc == 0);
    rc = kvt_config_set (config, "tier_gpu/capacity_blocks", "10", error, sizeof (error));
    assert (rc == 0);
    kvt_layer_shard_t shard;
    rc = kvt_layer_shard_from_config (config, &shard, error, sizeof (error));
    assert (rc == 0);
    assert (!kvt_layer_shard_on (&shard));
    assert (shard.gpu_layers == 8 && shard.shard_bytes == 0 && shard.gpu_slots == 10);
    assert (shard.gpu_bytes == shard.block_bytes);
    assert (kvt_layer_shard_gpu_slots (config) == 10);
    struct { const char *fraction; int gpu_layers; size_t slots; } cases [] = {
        { "0.5", 4, 20 }, { "0.25", 2, 40 }, { "0.3", 3, 26 }, { "0.01", 1, 80 },
        { "0.875", 7, 11 }, { "0.9", 8, 10 } };
    for (size_t k = 0; k < sizeof (cases) / sizeof (cases [0]); k++) {
        rc = kvt_config_set (config, KVT_LAYER_SHARD_KEY, cases [k].fraction, error,
                             sizeof (error));
        assert (rc == 0);
        rc = kvt_layer_shard_from_config (config, &shard, error, sizeof (error));
        assert (rc == 0);
        assert (shard.gpu_layers == cases [k].gpu_layers);
        assert (shard.gpu_slots == cases [k].slots);
        assert (kvt_layer_shard_gpu_slots (config) == cases [k].slots);
        assert (shard.gpu_bytes + shard.shard_bytes == shard.block_bytes);
        assert (kvt_layer_shard_on (&shard) == (cases [k].gpu_layers < 8));
        //  The slab never holds more bytes than the budget
        assert (shard.gpu_slots * shard.gpu_bytes <= 10 * shard.block_bytes);
    }
    //  A bad fraction: refused with the key named; slots fall back
    rc = kvt_config_set (config, KVT_LAYER_SHARD_KEY, "abc", error, sizeof (error));
    assert (rc == 0);
    rc = kvt_layer_shard_from_config (config, &shard, error, sizeof (error));
    assert (rc == KVT_ECONFIG);
    assert (strstr (error, KVT_LAYER_SHARD_KEY) && strstr (error, "'abc'"));
    assert (kvt_layer_shard_gpu_slots (config) == 10);

    //  Read and write a whole block through two arenas: 4 layers of 64 B,
    //  1 on the "GPU"
    kvt_arena_t *gpu = kvt_arena_new ("test_shard_gpu", 3, 64, false);
    kvt_arena_t *rest = kvt_arena_new ("test_shard_rest", 3, 192, false);
    assert (gpu && rest);
    uint8_t block [256], back [256];
    for (int k = 0; k < 256; k++)
        block [k] = (uint8_t) (k * 7 + 1);
    rc = kvt_layer_shard_write (gpu, rest, 2, block);
    assert (rc == 0);
    assert (memcmp (kvt_arena_block (gpu, 2), block, 64) == 0);
    assert (memcmp (kvt_arena_block (rest, 2), block + 64, 192) == 0);
    memset (back, 0, sizeof (back));
    rc = kvt_layer_shard_read (gpu, rest, 2, back);
    assert (rc == 0);
    assert (memcmp (back, block, 256) == 0);
    //  No shard: the slab's block only
    memset (back, 0, sizeof (back));
    rc = kvt_layer_shard_read (gpu, NULL, 2, back);
    assert (rc == 0);
    assert (memcmp (back, block, 64) == 0 && back [64] == 0);
    kvt_arena_destroy (&rest);
    kvt_arena_destroy (&gpu);
    kvt_config_destroy (&config);
    if (verbose)
        printf ("OK\n");
    return 0;
}
