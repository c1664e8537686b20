/*  =========================================================================
    kvt_decode_merge - the end of a split-KV decode: warps, then splits

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The paged decode kernels (bf16/fp16 in kvt_paged_attention.cu, FP8 KV
    in kvt_fp8_attention.cu) differ in how they read and score K and V,
    and end the same way, which lives here:
    - kvt_dev_decode_combine: inside a CTA, merge its warps' partial
      softmax states (max m, sum l, unnormalised output in shared memory)
      and write the CTA's result: the output row itself when the sequence
      is not split, else the split's normalised output and its log2-sum-
      exp for the merge kernel;
    - kvt_decode_merge_kernel: merge the splits of each (sequence, head)
      with weights 2^lse, launched by kvt_decode_merge_launch as a
      programmatic dependent launch of the decode kernel;
    Scores are in log2 units (the kernels scale q by log2 e), so the
    rescale is kvt_dev_rescale (ex2) and the lse is top + log2 (sum).
    Force-inlined: each kernel compiles to the code it had with its own
    copy (PTX compared before and after the move). For this folder only.
@end
*/

#ifndef KVT_DECODE_MERGE_CUH_INCLUDED
#define KVT_DECODE_MERGE_CUH_INCLUDED

#include "kvt_device.cuh"

//  Row h, column d of the merge of WARPS warps' partial states: 'top' the
//  largest row max, 'sum' the rescaled row sums, and the returned output
//  (the rescaled outputs over 'sum', 0 where no token counted); acc (w) is
//  warp w's unnormalised output there. One function for every decode
//  kernel's merge, so that v5 at forced splits gives v4's bits by
//  construction.
template <int WARPS, typename Acc>
__device__ __forceinline__ float
kvt_dev_merge_warps (const float (*sm_m) [16], const float (*sm_l) [16], int h, Acc acc,
                     float &top, float &sum)
{
    top = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; w++)
        top = fmaxf (top, sm_m [w][h]);
    sum = 0.0f;
    float out = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) {
        float c = kvt_dev_rescale (sm_m [w][h], top);
        sum += sm_l [w][h] * c;
        out += acc (w) * c;
    }
    return sum > 0.0f? out / sum: 0.0f;
}

//  Decode CTA layout both kernels use: WARPS warps, each holding the rows
//  (heads) g and g + 8 of up to 16 query heads of one KV head, with
//  lane = 4 g + t. sm_acc [w][h][d] already holds warp w's unnormalised
//  output; 'm' and 'l' are this thread's row max and quad-reduced row sum
//  for rows g and g + 8. Heads head0 .. head0 + nheads - 1 of sequence
//  'seq' are written to 'out' ([seqs, heads, D] of T) when 'splits' is 1,
//  else to row ((seq * heads + head) * splits + split) of ws_out / ws_lse.
template <typename T, int D, int WARPS>
__device__ __forceinline__ void
kvt_dev_decode_combine (float (*sm_m) [16], float (*sm_l) [16], float (*sm_acc) [16][D + 1],
                        const float m [2], const float l [2], int warp, int g, int t,
                        int nheads, int head0, int heads, int seq, int split, int splits,
                        void *out, float *ws_out, float *ws_lse)
{
    if (t == 0) {
        sm_m [warp][g] = m [0];
        sm_m [warp][g + 8] = m [1];
        sm_l [warp][g] = l [0];
        sm_l [warp][g + 8] = l [1];
    }
    __syncthreads ();
    for (int index = threadIdx.x; index < nheads * D; index += blockDim.x) {
        int h = index / D;
        int d = index % D;
        float top, sum;
        float acc = kvt_dev_merge_warps<WARPS> (sm_m, sm_l, h,
                                                [=] (int w) { return sm_acc [w][h][d]; },
                                                top, sum);
        int head = head0 + h;
        if (splits == 1)
            ((T *) out) [((size_t) seq * heads + head) * D + d] = kvt_dev_from_float<T> (acc);
        else {
            size_t row = ((size_t) seq * heads + head) * splits + split;
            ws_out [row * D + d] = acc;
            if (d == 0)
                ws_lse [row] = sum > 0.0f? top + log2f (sum): -INFINITY;
        }
    }
}

//  Programmatic dependent launch (sm_90 and later): a decode kernel calls
//  this first, so that the merge kernel queued behind it is launched while
//  it runs instead of after it drains; the merge then waits in
//  kvt_dev_wait_primary for the decode grid to finish and its writes to
//  be visible. Hides the second launch's latency, a few microseconds a step.
__device__ __forceinline__ void
kvt_dev_launch_dependents (void)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile ("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void
kvt_dev_wait_primary (void)
{
#if defined (__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile ("griddepcontrol.wait;" ::: "memory");
#endif
}

//  The first half of a 16-token tile's online softmax, for the decode
//  kernels' layout: s [half][e] is the score of head row g (e < 2) or
//  g + 8 (e >= 2) for token t0 + 8 half + 2t + (e & 1). Scales the scores
//  by 'factor' (log2 units), masks tokens at or past 'end' to -inf, takes
//  each row's max over the quad, and advances the running max m; returns
//  in alpha the factor by which the running sum (already applied to l)
//  and the output (the caller's, kvt_dev_rescale_rows) must shrink.
__device__ __forceinline__ void
kvt_dev_tile_max (float (&s) [2][4], float factor, int t0, int end, int t, float (&m) [2],
                  float (&l) [2], float (&alpha) [2])
{
    float top [2] = { -INFINITY, -INFINITY };
#pragma unroll
    for (int half = 0; half < 2; half++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int token = t0 + 8 * half + 2 * t + (e & 1);
            float value = token < end? s [half][e] * factor: -INFINITY;
            s [half][e] = value;
            top [e >> 1] = fmaxf (top [e >> 1], value);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        top [r] = fmaxf (top [r], __shfl_xor_sync (0xffffffffu, top [r], 1));
        top [r] = fmaxf (top [r], __shfl_xor_sync (0xffffffffu, top [r], 2));
        float m_new = fmaxf (m [r], top [r]);
        alpha [r] = kvt_dev_exp2 (m [r] - m_new);     //  0 on the first tile
        m [r] = m_new;
        l [r] *= alpha [r];
    }
}

//  O's accumulators times alpha [0] (row g) and alpha [1] (row g + 8)
template <int NT>
__device__ __forceinline__ void
kvt_dev_rescale_rows (float (&o) [NT][4], const float (&alpha) [2])
{
    if (alpha [0] != 1.0f || alpha [1] != 1.0f) {
#pragma unroll
        for (int n = 0; n < NT; n++) {
            o [n][0] *= alpha [0];
            o [n][1] *= alpha [0];
            o [n][2] *= alpha [1];
            o [n][3] *= alpha [1];
        }
    }
}

//  A tile's probabilities s [half][e] (kvt_dev_tile_max's layout) as the A
//  fragment of the P V MMA, in T
template <typename T>
__device__ __forceinline__ void
kvt_dev_pack_probs (const float (&s) [2][4], uint32_t (&pa) [4])
{
    pa [0] = kvt_dev_pack<T> (s [0][0], s [0][1]);
    pa [1] = kvt_dev_pack<T> (s [0][2], s [0][3]);
    pa [2] = kvt_dev_pack<T> (s [1][0], s [1][1]);
    pa [3] = kvt_dev_pack<T> (s [1][2], s [1][3]);
}

//  Merge kernel: grid = (heads, seqs), D threads; weights are 2^lse. Only
//  the splits that hold tokens of the sequence were written (the decode
//  kernels skip a split past its end, which would add exact zeros): a
//  batch with one long sequence among short ones has many splits a short
//  sequence does not reach (a 128K context with 63 chats of 1K-8K at
//  256-token splits: 512 a row). A row whose splits all saw no
//  token (lse -inf), or an empty sequence, is written as zeros.
template <typename T, int D>
__global__ void __launch_bounds__ (D)
kvt_decode_merge_kernel (void *out, int heads, int splits, const int32_t *seq_lens,
                         int split_len, const float *ws_out, const float *ws_lse)
{
    kvt_dev_wait_primary ();
    const int head = blockIdx.x;
    const int seq = blockIdx.y;
    const int d = threadIdx.x;
    const int len = seq_lens [seq];
    const int used = len > 0? min (splits, (len + split_len - 1) / split_len): 0;
    size_t row0 = ((size_t) seq * heads + head) * splits;
    float top = -INFINITY;
    for (int s = 0; s < used; s++)
        top = fmaxf (top, ws_lse [row0 + s]);
    float sum = 0.0f, acc = 0.0f;
    if (top != -INFINITY) {
        for (int s = 0; s < used; s++) {
            float w = kvt_dev_rescale (ws_lse [row0 + s], top);
            sum += w;
            acc = fmaf (w, ws_out [(row0 + s) * D + d], acc);
        }
        acc /= sum;
    }
    ((T *) out) [((size_t) seq * heads + head) * D + d] = kvt_dev_from_float<T> (acc);
}

#define KVT_DEV_MAX_DEVICES 64          //  Devices the per-device caches hold

//  Compute capability major of 'device' (0 if unknown), asked of the driver
//  once per device: a decode call would otherwise pay for it every time
inline int
kvt_dev_compute_major (int device)
{
    static int known [KVT_DEV_MAX_DEVICES]; //  0 until asked; atomics, as races only repeat it
    if (device < 0 || device >= KVT_DEV_MAX_DEVICES)
        return 0;
    int major = __atomic_load_n (&known [device], __ATOMIC_ACQUIRE);
    if (major == 0
    &&  cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess)
        __atomic_store_n (&known [device], major, __ATOMIC_RELEASE);
    return major;
}

//  CTAs of a decode kernel that run at once on 'device': the SM count times
//  ask (context), the CTAs a SM (ask may also set the kernel's attributes
//  on the device; it returns a negative code on failure). Asked once per
//  device: 'cache' holds KVT_DEV_MAX_DEVICES entries, 0 until known, read
//  and written with atomics (two threads that meet here both ask and
//  store the same answer).
inline int
kvt_dev_decode_slots (int *cache, int device, int (*ask) (void *), void *context)
{
    bool cached = device >= 0 && device < KVT_DEV_MAX_DEVICES;
    int slots = cached? __atomic_load_n (&cache [device], __ATOMIC_ACQUIRE): 0;
    if (slots > 0)
        return slots;
    int sm_count, per_sm = ask (context);
    if (per_sm < 0
    ||  cudaDeviceGetAttribute (&sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return KVT_ECUDA;
    slots = sm_count * (per_sm > 0? per_sm: 1);
    if (cached)
        __atomic_store_n (&cache [device], slots, __ATOMIC_RELEASE);
    return slots;
}

//  Queue the merge behind the decode kernel on 'stream', as a programmatic
//  dependent launch where the device has it (compute capability 9 or more)
template <typename T, int D>
inline cudaError_t
kvt_decode_merge_launch (void *out, int seqs, int heads, int splits, const int32_t *seq_lens,
                         int split_len, const float *ws_out, const float *ws_lse,
                         cudaStream_t stream)
{
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3 (heads, seqs);
    config.blockDim = dim3 (D);
    config.stream = stream;
    cudaLaunchAttribute attribute = {};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    int device;
    if (cudaGetDevice (&device) == cudaSuccess && kvt_dev_compute_major (device) >= 9) {
        config.attrs = &attribute;
        config.numAttrs = 1;
    }
    return cudaLaunchKernelEx (&config, kvt_decode_merge_kernel<T, D>, out, heads, splits,
                               seq_lens, split_len, ws_out, ws_lse);
}

#endif
