/*  =========================================================================
    kvt_nvme_parts - an NVMe store op's transfers: where its bytes lie on
    disk and in memory, and the SQEs that move them

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Part of kvt_nvme_store (see kvt_nvme_store.h and kvt_nvme_int.h). An
    op moves one block (or a layer group of it, kvt_nvme_group.c) as one
    or two parts: a direct read is the payload alone, into the caller's
    registered memory; a direct write is the header from the staging and
    the payload from the caller as one vectored write (two fixed SQEs with
    split_writes); anything else goes through the op's staging buffer as
    one fixed transfer of header + payload. A part that comes back short
    goes again from where it stopped. kvt_nvme_io.c runs the ops' states.
@end
*/

#include "kvt_nvme_int.h"

//  Submit what the ring holds.
int
kvt_nvme_io_submit_ring (kvt_nvme_store_t *self)
{
    self->held_hash_bytes = 0;
    return io_uring_sq_ready (&self->ring) == 0? 0: io_uring_submit (&self->ring);
}

//  Find the registered region holding [addr, addr + bytes); -1 if none.
int
kvt_nvme_io_region_of (kvt_nvme_store_t *self, const void *addr, size_t bytes)
{
    const uint8_t *p = (const uint8_t *) addr;
    for (int i = 0; i < self->region_count; i++) {
        const kvt_nvme_region_t *region = &self->regions [i];
        if (p >= region->base && p + bytes <= region->base + region->bytes)
            return i + 1;
    }
    return -1;
}

//  Queue (the rest of) one part of an op as one SQE: fixed-buffer, or a
//  vectored write of its two pieces.
int
kvt_nvme_io_queue_part (kvt_nvme_store_t *self, int op_index, int part_index)
{
    kvt_nvme_op_t *op = &self->ops [op_index];
    kvt_nvme_part_t *part = &op->parts [part_index];
    struct io_uring_sqe *sqe = io_uring_get_sqe (&self->ring);
    if (!sqe) {
        int rc = kvt_nvme_io_submit_ring (self);
        if (rc < 0)
            return rc;
        sqe = io_uring_get_sqe (&self->ring);
        if (!sqe)
            return -EBUSY;
    }
    uint64_t offset = part->offset + part->done_bytes;
    if (part->tail) {
        //  A vectored write: what is left of the two pieces, one SQE
        int count = 0;
        if (part->done_bytes < part->bytes)
            op->iov [count++] = (struct iovec) { part->addr + part->done_bytes,
                                                 part->bytes - part->done_bytes };
        uint32_t tail_done = part->done_bytes > part->bytes? part->done_bytes - part->bytes: 0;
        op->iov [count++] = (struct iovec) { part->tail + tail_done,
                                             part->tail_bytes - tail_done };
        io_uring_prep_writev (sqe, part->file_index, op->iov, (unsigned) count, offset);
    }
    else {
        uint8_t *addr = part->addr + part->done_bytes;
        unsigned bytes = part->bytes - part->done_bytes;
        if (op->is_write)
            io_uring_prep_write_fixed (sqe, part->file_index, addr, bytes, offset,
                                       part->buf_index);
        else
            io_uring_prep_read_fixed (sqe, part->file_index, addr, bytes, offset,
                                      part->buf_index);
    }
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64 (sqe, ((uint64_t) op_index << 1) | (uint64_t) part_index);
    return 0;
}

//  Fill an op's parts for 'slot' with payload at 'caller'.
void
kvt_nvme_io_layout (kvt_nvme_store_t *self, kvt_nvme_op_t *op, void *caller)
{
    int file = (int) (op->slot % (uint64_t) self->file_count);
    uint64_t base = (op->slot / (uint64_t) self->file_count) * self->stride;
    //  Only the op's payload length moves, rounded up to the alignment
    //  (within block_bytes, so within the caller's buffer when direct)
    uint32_t io_bytes = (uint32_t) ((op->bytes + KVT_NVME_ALIGN - 1) / KVT_NVME_ALIGN
                                    * KVT_NVME_ALIGN);
    int region = -1;
    if (self->block_bytes % KVT_NVME_ALIGN == 0 && (uintptr_t) caller % KVT_NVME_ALIGN == 0
    &&  (op->is_write || !self->bounce_reads))
        region = kvt_nvme_io_region_of (self, caller, io_bytes);
    memset (op->parts, 0, sizeof (op->parts));
    op->direct = region > 0;
    uint64_t payload_offset = base + KVT_NVME_HEADER_BYTES;
    if (op->direct && !op->is_write) {
        //  Direct read: the payload alone, checked against the checksum
        //  the index holds (from the journal). One I/O, like raw.
        op->part_count = 1;
        op->parts [0] = (kvt_nvme_part_t) { file, region, (uint8_t *) caller,
                                            io_bytes, 0, payload_offset, NULL, 0 };
        self->stats.direct_ops++;
    }
    else
    if (op->direct && !self->split_writes) {
        //  Direct write: the header from the staging and the payload from
        //  the caller as one vectored write, one request at the disk as
        //  raw's writes are (two SQEs merge only where the block layer
        //  finds them together: on the H200 machine's virtio disk 512 KiB
        //  blocks went as 3573 requests of 370 KiB for 2560 blocks, at
        //  0.83 of raw writes)
        op->part_count = 1;
        op->parts [0] = (kvt_nvme_part_t) { file, 0, op->stage, KVT_NVME_HEADER_BYTES, 0,
                                            base, (uint8_t *) caller, io_bytes };
        self->stats.direct_ops++;
    }
    else
    if (op->direct) {
        //  Header first: ascending offsets keep the stream sequential
        //  for the device (and a virtual disk's host-side read-ahead)
        op->part_count = 2;
        op->parts [0] = (kvt_nvme_part_t) { file, 0, op->stage, KVT_NVME_HEADER_BYTES, 0,
                                            base, NULL, 0 };
        op->parts [1] = (kvt_nvme_part_t) { file, region, (uint8_t *) caller,
                                            io_bytes, 0, payload_offset, NULL, 0 };
        self->stats.direct_ops++;
    }
    else {
        op->part_count = 1;
        op->parts [0] = (kvt_nvme_part_t) { file, 0, op->stage,
                                            KVT_NVME_HEADER_BYTES + io_bytes, 0, base, NULL, 0 };
        self->stats.bounce_ops++;
    }
    op->pending = op->part_count;
    op->rc = 0;
    op->caller = caller;
}

int
kvt_nvme_io_submit_parts (kvt_nvme_store_t *self, int index)
{
    kvt_nvme_op_t *op = &self->ops [index];
    //  Take every SQE or none, so a released op never has I/O queued
    if (io_uring_sq_space_left (&self->ring) < (unsigned) op->part_count) {
        int rc = kvt_nvme_io_submit_ring (self);
        if (rc < 0)
            return rc;
        if (io_uring_sq_space_left (&self->ring) < (unsigned) op->part_count)
            return -EAGAIN;
    }
    for (int p = 0; p < op->part_count; p++) {
        int rc = kvt_nvme_io_queue_part (self, index, p);
        if (rc)
            return rc;              //  Ring sized for every part; only on ring failure
    }
    op->state = KVT_NVME_OP_IO;
    self->io_ops++;
    return 0;
}
