/*  =========================================================================
    kvt_model_ops - the GPU model's small glue kernels: seeded weights,
    embedding gather and K/V writes into paged blocks

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <cuda_bf16.h>
#include "kvt_model_ops.cuh"

static int
s_status (void)
{
    return cudaGetLastError () == cudaSuccess? 0: KVT_ECUDA;
}

//  splitmix64 finaliser: a good 64-bit mix of a counter
__device__ __forceinline__ uint64_t
s_mix (uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void
s_fill_kernel (__nv_bfloat16 *out, size_t count, uint64_t key, float offset, float scale)
{
    size_t stride = (size_t) gridDim.x * blockDim.x;
    for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        uint64_t bits = s_mix (key + (i + 1) * 0x9E3779B97F4A7C15ull);
        float u = (float) (bits >> 40) * (1.0f / 8388608.0f) - 1.0f;     //  [-1, 1)
        out [i] = __float2bfloat16_rn (offset + scale * u);
    }
}

extern "C" int
kvt_model_fill_bf16 (void *out, size_t count, uint64_t seed, uint64_t tensor_id,
                     float offset, float scale, cudaStream_t stream)
{
    if (count == 0)
        return 0;
    uint64_t key = seed ^ (tensor_id * 0xD1B54A32D192ED03ull);
    size_t blocks = (count + 255) / 256;
    if (blocks > 65536)
        blocks = 65536;
    s_fill_kernel <<<(unsigned) blocks, 256, 0, stream>>> ((__nv_bfloat16 *) out, count, key,
                                                           offset, scale);
    return s_status ();
}

//  One CTA per row, 16-byte vectors
__global__ void
s_embed_kernel (uint4 *out, const uint4 *table, const int32_t *tokens, int vectors)
{
    const uint4 *src = table + (size_t) tokens [blockIdx.x] * vectors;
    uint4 *dst = out + (size_t) blockIdx.x * vectors;
    for (int i = threadIdx.x; i < vectors; i += blockDim.x)
        dst [i] = src [i];
}

extern "C" int
kvt_model_embed (void *out, const void *table, const int32_t *tokens, int rows, int dim,
                 cudaStream_t stream)
{
    if (!out || !table || !tokens || rows < 0 || dim <= 0 || dim % 8)
        return -EINVAL;
    if (rows == 0)
        return 0;
    s_embed_kernel <<<rows, 256, 0, stream>>> ((uint4 *) out, (const uint4 *) table, tokens,
                                               dim / 8);
    return s_status ();
}

//  Grid (rows, heads + kv_heads), head_dim / 2 threads: thread i rotates
//  the pair (i, i + half) of one q head, or of one k head and then writes
//  that K pair and the V pair into the block (none when the row's dest
//  block is negative).
__global__ void
s_qkv_kernel (kvt_qkv_args_t a)
{
    const int row = blockIdx.x, head = blockIdx.y, i = threadIdx.x;
    const int half = a.head_dim / 2;
    const size_t width = (size_t) (a.heads + 2 * a.kv_heads) * a.head_dim;
    const __nv_bfloat16 *in = (const __nv_bfloat16 *) a.qkv + row * width
                            + (size_t) head * a.head_dim;
    float sine, cosine;
    sincosf ((float) a.positions [row] * a.inv_freq [i], &sine, &cosine);
    const float x1 = __bfloat162float (in [i]), x2 = __bfloat162float (in [i + half]);
    const __nv_bfloat16 r1 = __float2bfloat16_rn (x1 * cosine - x2 * sine);
    const __nv_bfloat16 r2 = __float2bfloat16_rn (x2 * cosine + x1 * sine);
    if (head < a.heads) {
        __nv_bfloat16 *q = (__nv_bfloat16 *) a.q + ((size_t) row * a.heads + head) * a.head_dim;
        q [i] = r1;
        q [i + half] = r2;
        return;
    }
    if (a.dest_block [row] < 0)
        return;                     //  A padded row (a decode graph's): no K/V to keep
    const int g = head - a.heads;
    __nv_bfloat16 *block = (__nv_bfloat16 *) ((char *) a.slab
                         + (int64_t) a.dest_block [row] * a.block_bytes);
    const size_t token = (size_t) a.dest_token [row] * a.head_dim;
    __nv_bfloat16 *k = block + ((size_t) (a.layer * 2 + 0) * a.kv_heads + g)
                     * a.block_tokens * a.head_dim + token;
    __nv_bfloat16 *v = block + ((size_t) (a.layer * 2 + 1) * a.kv_heads + g)
                     * a.block_tokens * a.head_dim + token;
    const __nv_bfloat16 *v_in = in + (size_t) a.kv_heads * a.head_dim;
    k [i] = r1;
    k [i + half] = r2;
    v [i] = v_in [i];
    v [i + half] = v_in [i + half];
}

extern "C" int
kvt_model_qkv (const kvt_qkv_args_t *args, cudaStream_t stream)
{
    if (!args || !args->qkv || !args->q || !args->positions || !args->inv_freq || !args->slab
    ||  !args->dest_block || !args->dest_token || args->rows < 0 || args->heads <= 0
    ||  args->kv_heads <= 0 || args->head_dim <= 0 || args->head_dim % 2
    ||  args->head_dim > 2048 || args->block_tokens <= 0 || args->layer < 0)
        return -EINVAL;
    if (args->rows == 0)
        return 0;
    dim3 grid (args->rows, args->heads + args->kv_heads);
    s_qkv_kernel <<<grid, args->head_dim / 2, 0, stream>>> (*args);
    return s_status ();
}
