/*  =========================================================================
    kvt_block_copy_ref - CPU twin of the block gather/scatter kernel

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <string.h>
#include "kvt_block_copy.cuh"

//  --------------------------------------------------------------------------
//  Check the arguments; 0 or -EINVAL.

int
kvt_block_copy_check (const kvt_block_copy_args_t *args)
{
    if (!args || args->count < 0)
        return -EINVAL;
    if (args->count == 0)
        return 0;
    if (!args->dst || !args->src || !args->dst_slots || !args->src_slots)
        return -EINVAL;
    if (args->block_bytes <= 0 || args->block_bytes % 16
    ||  args->dst_slot_bytes % 16 || args->src_slot_bytes % 16
    ||  args->dst_slot_bytes < args->block_bytes || args->src_slot_bytes < args->block_bytes)
        return -EINVAL;
    if (((uintptr_t) args->dst | (uintptr_t) args->src) % 16 || args->max_ctas < 0)
        return -EINVAL;
    return 0;
}

//  --------------------------------------------------------------------------
//  Copy each block with memcpy; negative slots are skipped.

int
kvt_block_copy_ref (const kvt_block_copy_args_t *args)
{
    int rc = kvt_block_copy_check (args);
    if (rc)
        return rc;
    for (int i = 0; i < args->count; i++) {
        if (args->dst_slots [i] < 0 || args->src_slots [i] < 0)
            continue;
        memcpy ((char *) args->dst + args->dst_slots [i] * args->dst_slot_bytes,
                (const char *) args->src + args->src_slots [i] * args->src_slot_bytes,
                (size_t) args->block_bytes);
    }
    return 0;
}
