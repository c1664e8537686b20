/*  =========================================================================
    kvt_paged_prefill_int - what the prefill kernel files share

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The paged prefill attention is two files: kvt_paged_prefill.cu (v1 and
    v2 on mma.sync, the dispatch, the public entry) and
    kvt_paged_prefill_wgmma.cu (v3 and v4 on wgmma, built for sm_90a). This
    header gives both the head_dim they are built for and the v3/v4 launcher
    (the device helpers they share are in kvt_device.cuh). For
    those two files only.
@end
*/

#ifndef KVT_PAGED_PREFILL_INT_CUH_INCLUDED
#define KVT_PAGED_PREFILL_INT_CUH_INCLUDED

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <type_traits>
#include "kvt_paged_prefill.cuh"
#include "kvt_device.cuh"

#define S_D      128                //  head_dim

//  True when this binary holds the sm_90a build of v3 (BN keys per tile;
//  WS: v4, its warp-specialized form); instantiated for bf16 and fp16, BN
//  64 and 128, with WS too.
template <typename T, int BN, bool WS>
bool
    kvt_paged_prefill_have_wgmma ();

//  Queue v3 or v4 on 'stream' (only when kvt_paged_prefill_have_wgmma).
//  Returns 0 or KVT_ECUDA.
template <typename T, int BN, bool WS>
int
    kvt_paged_prefill_launch_wgmma (const kvt_paged_prefill_args_t *a, cudaStream_t stream);

#endif
