/*  =========================================================================
    kvt_nvme_group - reading one layer group of a block (issue #4)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A stream promotion reads its NVMe blocks group-major (migration's
    nvme_layer_groups): each read here brings one layer group's bytes to
    their place in the caller's buffer. The block's header, which holds
    every group's checksum (format v2, kvt_nvme_store.h), is read with the
    first group read of the block; its checksums are then kept per slot
    and generation, so the block's other groups read only their bytes.
    The checks themselves run in kvt_nvme_io.c with every other read's.
@end
*/

#include "kvt_nvme_int.h"

//  The group checksums kept for 'slot' at 'generation' (a verified v2
//  header's), or NULL. Kept per slot, direct-mapped: a later write of the
//  slot has another generation, so a stale row never matches.
static const uint64_t *
s_group_sums_find (const kvt_nvme_store_t *self, uint64_t slot, uint64_t generation)
{
    if (!self->group_cache)
        return NULL;
    const uint64_t *row = self->group_cache
                        + (slot % KVT_NVME_GROUP_CACHE) * (2 + (size_t) self->group_count);
    return row [0] == slot + 1 && row [1] == generation? row + 2: NULL;
}

//  Keep a verified v2 header's group checksums for its slot (see
//  kvt_nvme_int.h).
void
kvt_nvme_group_sums_keep (kvt_nvme_store_t *self, uint64_t slot, uint64_t generation,
                   const uint64_t *sums)
{
    if (!self->group_cache)
        return;
    uint64_t *row = self->group_cache
                  + (slot % KVT_NVME_GROUP_CACHE) * (2 + (size_t) self->group_count);
    row [0] = slot + 1;
    row [1] = generation;
    memcpy (row + 2, sums, (size_t) self->group_count * sizeof (uint64_t));
}

//  Prepare reading layer group 'group' of a block: its header into the
//  op's staging, the group's bytes into their place in 'dst' (by DMA when
//  registered and aligned, else through the staging, copied once checked).
//  When an earlier group's read of this block verified its header, the
//  group's checksum is known and only the group's bytes are read: a
//  stream reading G groups of a block does G + 1 I/Os, not 2 G.

int
kvt_nvme_prep_read_group (kvt_nvme_store_t *self, uint64_t slot, uint64_t block_hash,
                          void *dst, int group, uint64_t tag)
{
    assert (self);
    assert (dst);
    if (group < 0 || group >= self->group_count)
        return -EINVAL;
    if (self->group_count == 1)
        return kvt_nvme_prep_read (self, slot, block_hash, dst, tag);
    kvt_nvme_op_t *op;
    int index;
    int rc = kvt_nvme_io_read_op_take (self, slot, block_hash, tag, &op, &index);
    if (rc)
        return rc;
    kvt_nvme_slot_t *entry = &self->slots [slot];
    uint64_t offset = self->group_offset [group];
    uint32_t bytes = (uint32_t) (self->group_offset [group + 1] - offset);
    op->group = group;
    op->bytes = bytes;
    //  op->checksum is the whole payload's until the header is read, or the
    //  group's own when an earlier read of this block kept the header's
    const uint64_t *sums = s_group_sums_find (self, slot, entry->generation);
    op->header_known = sums != NULL;
    if (sums)
        op->checksum = sums [group];
    op->caller = dst;
    int file = (int) (slot % (uint64_t) self->file_count);
    uint64_t base = (slot / (uint64_t) self->file_count) * self->stride;
    uint8_t *target = (uint8_t *) dst + offset;
    int region = (uintptr_t) target % KVT_NVME_ALIGN == 0 && !self->bounce_reads
               ? kvt_nvme_io_region_of (self, target, bytes): -1;
    op->direct = region > 0;
    memset (op->parts, 0, sizeof (op->parts));
    op->part_count = 0;
    if (!op->header_known)
        op->parts [op->part_count++] = (kvt_nvme_part_t) {
            file, 0, op->stage, KVT_NVME_HEADER_BYTES, 0, base, NULL, 0 };
    op->parts [op->part_count++] = (kvt_nvme_part_t) {
        file, op->direct? region: 0,
        op->direct? target: op->stage + KVT_NVME_HEADER_BYTES + offset,
        bytes, 0, base + KVT_NVME_HEADER_BYTES + offset, NULL, 0 };
    if (op->header_known)
        self->stats.group_header_hits++;
    if (op->direct)
        self->stats.direct_ops++;
    else
        self->stats.bounce_ops++;
    op->pending = op->part_count;
    op->rc = 0;
    rc = kvt_nvme_io_submit_parts (self, index);
    if (rc)
        kvt_nvme_io_op_release (self, index);
    else
        entry->readers++;
    return rc;
}
