/*  =========================================================================
    kvt_migration_promote_end - committing or undoing a stream promotion

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_migration_int.h"

//  PROMOTE_END: a stream promotion's blocks are in their GPU slots
//  (commit: compute copied them in) or will never be (undo). Commit moves
//  them to the GPU in the index and frees their host, staging and disk
//  slots; undo frees the reserved GPU slots and the staging slots. Blocks
//  already on the GPU, and failed ones (gpu_slots UINT64_MAX), are skipped.

void
kvt_migration_start_promote_end (self_t *self)
{
    size_t count, n_tiers, n_slots, n_gpu, n_host;
    const uint64_t *hashes = kvt_msg_array (self->current, KVT_MIG_PROMOTE_END_HASHES, &count);
    const uint64_t *tiers = kvt_msg_array (self->current, KVT_MIG_PROMOTE_END_TIERS, &n_tiers);
    const uint64_t *slots = kvt_msg_array (self->current, KVT_MIG_PROMOTE_END_SLOTS, &n_slots);
    const uint64_t *gpu_slots = kvt_msg_array (self->current, KVT_MIG_PROMOTE_END_GPU_SLOTS, &n_gpu);
    const uint64_t *host_slots = kvt_msg_array (self->current, KVT_MIG_PROMOTE_END_HOST_SLOTS,
                                                &n_host);
    bool commit = kvt_msg_u64 (self->current, KVT_MIG_PROMOTE_END_COMMIT) != 0;
    if (n_tiers != count || n_slots != count || n_gpu != count || n_host != count) {
        kvt_migration_job_error (self, -EINVAL, "PROMOTE_END arrays differ in length");
        return;
    }
    for (size_t k = 0; k < count; k++)
        if (tiers [k] >= KVT_TIER_COUNT
        ||  (gpu_slots [k] != UINT64_MAX
             && gpu_slots [k] >= kvt_arena_block_count (self->arenas [KVT_TIER_GPU]))
        ||  (host_slots [k] != UINT64_MAX
             && host_slots [k] >= kvt_arena_block_count (self->arenas [KVT_TIER_HOST]))) {
            kvt_migration_job_error (self, -ERANGE, "tier or slot out of range");
            return;
        }
    uint64_t *moved_hashes = kvt_migration_u64s (count), *moved_slots = kvt_migration_u64s (count);
    uint64_t *host_free = kvt_migration_u64s (2 * count), *nvme_free = kvt_migration_u64s (count);
    uint64_t *gpu_free = kvt_migration_u64s (count);
    size_t moved = 0, host_n = 0, nvme_n = 0, gpu_n = 0;
    for (size_t k = 0; k < count; k++) {
        if (gpu_slots [k] == UINT64_MAX || tiers [k] == KVT_TIER_GPU)
            continue;
        bool staged = tiers [k] == KVT_TIER_NVME && host_slots [k] != UINT64_MAX;
        if (commit) {
            moved_hashes [moved] = hashes [k];
            moved_slots [moved++] = gpu_slots [k];
            if (tiers [k] == KVT_TIER_HOST) {
                if (!kvt_migration_shadow_adopt (self, hashes [k], slots [k]))
                    host_free [host_n++] = slots [k];
            }
            else
                nvme_free [nvme_n++] = slots [k];
        }
        else
            gpu_free [gpu_n++] = gpu_slots [k];
        if (staged)
            host_free [host_n++] = host_slots [k];
    }
    //  A staging slot a layer-group read still writes into goes back when
    //  that read is over (s_groups_end)
    size_t kept = 0;
    for (size_t k = 0; k < host_n; k++)
        if (!kvt_migration_staging_busy (self, host_free [k]))
            host_free [kept++] = host_free [k];
    kvt_actor_count (self->actor, "stream_staging_deferred", host_n - kept);
    host_n = kept;
    kvt_migration_free_slots (self, KVT_TIER_HOST, host_free, host_n);
    kvt_migration_free_slots (self, KVT_TIER_NVME, nvme_free, nvme_n);
    kvt_migration_free_slots (self, KVT_TIER_GPU, gpu_free, gpu_n);
    //  Compute moved these bytes host -> GPU on our behalf
    kvt_actor_count (self->actor, "promoted", moved);
    //  (whole blocks: with layer sharding, #5, the GPU slab keeps a part)
    kvt_actor_count (self->actor, "bytes_host_to_gpu", kvt_migration_cold_bytes (self, moved));
    if (!commit)
        kvt_actor_count (self->actor, "stream_promotions_undone", 1);
    kvt_msg_t *reply = kvt_msg_reply_new (self->current, KVT_MSG_MIG_PROMOTE_END_OK);
    kvt_msg_set_u64 (reply, KVT_MIG_PROMOTE_END_OK_MOVED, moved);
    kvt_migration_move_then_reply (self, moved_hashes, moved_slots, moved, KVT_TIER_GPU, &reply,
                                   NULL);
    free (moved_hashes); free (moved_slots); free (host_free); free (nvme_free); free (gpu_free);
}
