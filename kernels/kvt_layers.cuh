/*  =========================================================================
    kvt_layers - the synthetic model's layer kernels: RMSNorm, RoPE,
    SwiGLU, greedy sampling (argmax) and bf16 GEMMs through cuBLAS

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Llama-shaped building blocks for the compute actor's synthetic model.
    Activations are bf16 or fp16, row-major; every reduction accumulates
    in fp32 and every output is rounded once. Each op has an args struct,
    a CPU twin (_ref, host pointers) and a launcher taking a stream.
    RoPE is the rotate-half (NeoX / Hugging Face Llama) form; its inverse
    frequencies come from the caller (kvt_rope_inv_freq) so that GPU and
    CPU rotate by the same float angles.
@end
*/

#ifndef KVT_LAYERS_CUH_INCLUDED
#define KVT_LAYERS_CUH_INCLUDED

#include "kvt_kernels.cuh"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of x, weight, out
    const void *x;                  //  [rows, dim]
    const void *weight;             //  [dim]
    void *out;                      //  [rows, dim]; may equal x
    int rows;                       //  Rows (tokens)
    int dim;                        //  Elements per row, a multiple of 8
    float eps;                      //  Added to the mean square
} kvt_rmsnorm_args_t;

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of x
    void *x;                        //  [tokens, heads, head_dim], rotated in place
    const int32_t *positions;       //  [tokens] position of each token
    const float *inv_freq;          //  [head_dim / 2] from kvt_rope_inv_freq
    int tokens;                     //  Rows
    int heads;                      //  Heads per row
    int head_dim;                   //  Even
} kvt_rope_args_t;

typedef struct {
    kvt_kdtype_t dtype;             //  Element type
    const void *gate_up;            //  [rows, 2 * inter]: gate then up
    void *out;                      //  [rows, inter] = silu (gate) * up
    int rows;                       //  Rows
    int inter;                      //  Intermediate size
} kvt_swiglu_args_t;

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of logits
    const void *logits;             //  [rows, vocab]
    int32_t *out;                   //  [rows] index of the largest logit (first on ties)
    int rows;                       //  Rows
    int vocab;                      //  Logits per row
} kvt_argmax_args_t;

typedef struct {
    kvt_kdtype_t dtype;             //  Element type of a, w, c
    const void *a;                  //  [m, k] activations
    const void *w;                  //  [n, k] weights (PyTorch Linear layout)
    void *c;                        //  [m, n] = a . w^T, fp32 accumulation
    int m;                          //  Rows of a
    int n;                          //  Output features
    int k;                          //  Input features
    void *cublas;                   //  cublasHandle_t (GPU path only)
} kvt_gemm_args_t;

//  Fill inv_freq [head_dim / 2] with base^(-2i / head_dim) (double math).
void
    kvt_rope_inv_freq (float *inv_freq, int head_dim, double base);

//  CPU twins on host pointers; each returns 0 or -EINVAL.
int kvt_rmsnorm_ref (const kvt_rmsnorm_args_t *args);
int kvt_rope_ref (const kvt_rope_args_t *args);
int kvt_swiglu_ref (const kvt_swiglu_args_t *args);
int kvt_argmax_ref (const kvt_argmax_args_t *args);
int kvt_gemm_ref (const kvt_gemm_args_t *args);

#ifdef KVT_KERNELS_GPU
//  Launchers: queue on 'stream', return 0, -EINVAL or KVT_ECUDA.
int kvt_rmsnorm (const kvt_rmsnorm_args_t *args, cudaStream_t stream);
int kvt_rope (const kvt_rope_args_t *args, cudaStream_t stream);
int kvt_swiglu (const kvt_swiglu_args_t *args, cudaStream_t stream);
int kvt_argmax (const kvt_argmax_args_t *args, cudaStream_t stream);
//  cuBLAS GemmEx on 'stream' (set on args->cublas); KVT_ECUDA also for
//  a cuBLAS failure.
int kvt_gemm (const kvt_gemm_args_t *args, cudaStream_t stream);
#endif

#ifdef __cplusplus
}
#endif
#endif
