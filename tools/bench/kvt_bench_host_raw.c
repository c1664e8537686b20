/*  =========================================================================
    kvt_bench_host_raw - the raw disk baseline of `kvtier bench host`

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "kvt_bench.h"
#include "kvt_bench_host_raw.h"

//  Wait until the device holds every write to the data files. Returns 0
//  or -errno; *us gets the wait.
int
kvt_bench_host_raw_settle (kvt_bench_host_raw_t *raw, double *us)
{
    double start = kvt_bench_now_us ();
    for (int f = 0; f < raw->file_count; f++)
        if (fdatasync (raw->fds [f]))
            return -errno;
    *us = kvt_bench_now_us () - start;
    return 0;
}

//  Close files and ring, free the buffer; safe on a zeroed or half-open one.
void
kvt_bench_host_raw_close (kvt_bench_host_raw_t *raw)
{
    if (raw->ring_ready)
        io_uring_queue_exit (&raw->ring);
    for (int f = 0; f < raw->file_count; f++)
        close (raw->fds [f]);
    free (raw->buffer);
    memset (raw, 0, sizeof (*raw));
}

//  Open the data files of the store in 'dir'. Returns 0 or -errno.
int
kvt_bench_host_raw_open (kvt_bench_host_raw_t *raw, const char *dir, size_t block_bytes, int qd)
{
    return kvt_bench_host_raw_open_spread (raw, dir, block_bytes, qd, (size_t) qd);
}

//  Shared set-up: geometry, then files by 'open_file' (f -> fd, or -1
//  with errno; ENOENT ends the list), then buffer and ring.
static int
s_raw_setup (kvt_bench_host_raw_t *raw, const char *dir, size_t block_bytes, int qd,
             size_t buffer_blocks, int (*open_file) (const char *dir, int f, void *arg),
             void *arg)
{
    memset (raw, 0, sizeof (*raw));
    size_t most = ((size_t) 1 << 30) / (block_bytes? block_bytes: 1);
    if (buffer_blocks > most)
        buffer_blocks = most;
    if (buffer_blocks < (size_t) qd)
        buffer_blocks = (size_t) qd;
    raw->buffer_blocks = buffer_blocks;
    raw->block_bytes = block_bytes;
    raw->stride = KVT_BENCH_HOST_ALIGN + (block_bytes + KVT_BENCH_HOST_ALIGN - 1) / KVT_BENCH_HOST_ALIGN * KVT_BENCH_HOST_ALIGN;
    raw->qd = qd;
    for (int f = 0; f < KVT_BENCH_HOST_MAX_FILES; f++) {
        int fd = open_file (dir, f, arg);
        if (fd < 0) {
            if (errno == ENOENT)
                break;
            int rc = -errno;
            fprintf (stderr, "kvtier bench host: cannot open file %d in %s O_DIRECT: %s\n", f,
                     dir, strerror (errno));
            kvt_bench_host_raw_close (raw);
            return rc;
        }
        raw->fds [raw->file_count++] = fd;
    }
    if (raw->file_count == 0) {
        fprintf (stderr, "kvtier bench host: no data files in %s\n", dir);
        return -ENOENT;
    }
    if (posix_memalign ((void **) &raw->buffer, KVT_BENCH_HOST_ALIGN, buffer_blocks * block_bytes)) {
        kvt_bench_host_raw_close (raw);
        return -ENOMEM;
    }
    memset (raw->buffer, 0, buffer_blocks * block_bytes);
    int rc = io_uring_queue_init ((unsigned) qd * 2, &raw->ring, 0);
    if (rc == 0) {
        raw->ring_ready = true;
        rc = io_uring_register_files (&raw->ring, raw->fds, (unsigned) raw->file_count);
    }
    struct iovec iov = { raw->buffer, buffer_blocks * block_bytes };
    if (rc == 0)
        rc = io_uring_register_buffers (&raw->ring, &iov, 1);
    if (rc) {
        fprintf (stderr, "kvtier bench host: io_uring set-up: %s\n", strerror (-rc));
        kvt_bench_host_raw_close (raw);
    }
    return rc;
}

//  The store's data file f, for reading.
static int
s_open_store_file (const char *dir, int f, void *arg)
{
    (void) arg;
    char path [1100];
    snprintf (path, sizeof (path), "%s/kvt-nvme-%03d.dat", dir, f);
    return open (path, O_RDONLY | O_DIRECT);
}

//  The same, reading into a buffer of 'buffer_blocks' blocks.
int
kvt_bench_host_raw_open_spread (kvt_bench_host_raw_t *raw, const char *dir, size_t block_bytes,
                                int qd, size_t buffer_blocks)
{
    return s_raw_setup (raw, dir, block_bytes, qd, buffer_blocks, s_open_store_file, NULL);
}

//  A scratch data file f of the writer, created at its full size.
static int
s_open_scratch_file (const char *dir, int f, void *arg)
{
    const off_t *size = (const off_t *) arg;
    if (f >= KVT_BENCH_HOST_RAW_WRITE_FILES) {
        errno = ENOENT;             //  The list ends here
        return -1;
    }
    char path [1100];
    snprintf (path, sizeof (path), "%s/kvt-raw-%03d.dat", dir, f);
    int fd = open (path, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd >= 0 && ftruncate (fd, *size) != 0) {
        int error = errno;
        close (fd);
        errno = error == ENOENT? EIO: error;
        return -1;
    }
    return fd;
}

//  Create scratch files in 'dir' laid out as the store's for 'blocks'
//  blocks, and write every slot once (untimed), so that a timed write
//  overwrites allocated blocks as the store's do. Returns 0 or -errno.
int
kvt_bench_host_raw_open_writer (kvt_bench_host_raw_t *raw, const char *dir,
                                size_t block_bytes, int qd, uint64_t blocks,
                                size_t buffer_blocks)
{
    size_t stride = KVT_BENCH_HOST_ALIGN + (block_bytes + KVT_BENCH_HOST_ALIGN - 1)
                  / KVT_BENCH_HOST_ALIGN * KVT_BENCH_HOST_ALIGN;
    off_t size = (off_t) ((blocks / KVT_BENCH_HOST_RAW_WRITE_FILES + 1) * stride);
    int rc = s_raw_setup (raw, dir, block_bytes, qd, buffer_blocks, s_open_scratch_file,
                          &size);
    if (rc)
        return rc;
    raw->write = true;
    //  A pattern, not zeros a disk could treat specially
    for (size_t k = 0; k < raw->buffer_blocks * block_bytes; k++)
        raw->buffer [k] = (uint8_t) (k * 131 + 7);
    double us;
    rc = kvt_bench_host_raw_run (raw, blocks, &us);
    if (rc)
        kvt_bench_host_raw_close (raw);
    return rc;
}

//  Queue the read (or write) of bytes [done, block_bytes) of slot 'slot'
//  into (from) buffer 'index'.
static void
s_raw_prep (kvt_bench_host_raw_t *raw, uint64_t slot, int index, size_t done)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe (&raw->ring);
    assert (sqe);                   //  Never more than qd in flight on a 2 x qd ring
    int file = (int) (slot % (uint64_t) raw->file_count);
    uint64_t offset = (slot / (uint64_t) raw->file_count) * raw->stride + KVT_BENCH_HOST_ALIGN + done;
    //  A spread buffer gives each slot its own place; else the read's own
    size_t at = raw->buffer_blocks > (size_t) raw->qd? (size_t) (slot % raw->buffer_blocks)
                                                     : (size_t) index;
    if (raw->write)
        io_uring_prep_write_fixed (sqe, file, raw->buffer + at * raw->block_bytes + done,
                                   (unsigned) (raw->block_bytes - done), offset, 0);
    else
        io_uring_prep_read_fixed (sqe, file, raw->buffer + at * raw->block_bytes + done,
                                  (unsigned) (raw->block_bytes - done), offset, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64 (sqe, slot << 32 | (uint64_t) index);
}

//  Read (or write) the payloads of slots 0..blocks-1, qd in flight.
int
kvt_bench_host_raw_run (kvt_bench_host_raw_t *raw, uint64_t blocks, double *us)
{
    return kvt_bench_host_raw_run_at (raw, blocks, raw->qd, us);
}

//  The same with 'depth' in flight (at most the qd it was opened with);
//  short transfers are requeued, -EAGAIN retried. Returns 0 and *us, or a
//  negative code.
int
kvt_bench_host_raw_run_at (kvt_bench_host_raw_t *raw, uint64_t blocks, int depth, double *us)
{
    if (depth < 1 || depth > raw->qd)
        return -EINVAL;
    size_t *done_bytes = (size_t *) zmalloc ((size_t) depth * sizeof (size_t));
    int *free_bufs = (int *) zmalloc ((size_t) depth * sizeof (int));
    int free_count = depth;
    for (int i = 0; i < depth; i++)
        free_bufs [i] = i;
    uint64_t next = 0, completed = 0;
    int rc = 0;
    double start = kvt_bench_now_us ();
    while (completed < blocks && rc == 0) {
        while (free_count > 0 && next < blocks) {
            int index = free_bufs [--free_count];
            done_bytes [index] = 0;
            s_raw_prep (raw, next++, index, 0);
        }
        rc = io_uring_submit (&raw->ring);
        if (rc < 0)
            break;
        rc = 0;
        struct io_uring_cqe *cqe;
        int wait = io_uring_wait_cqe (&raw->ring, &cqe);
        if (wait == -EINTR)
            continue;
        if (wait) {
            rc = wait;
            break;
        }
        while (rc == 0 && io_uring_peek_cqe (&raw->ring, &cqe) == 0 && cqe) {
            uint64_t data = io_uring_cqe_get_data64 (cqe);
            int index = (int) (data & 0xffffffffu);
            uint64_t slot = data >> 32;
            int res = cqe->res;
            io_uring_cqe_seen (&raw->ring, cqe);
            if (res == -EAGAIN)
                s_raw_prep (raw, slot, index, done_bytes [index]);
            else
            if (res <= 0)
                rc = res? res: -EIO;    //  0 = past the end of the file
            else
            if ((done_bytes [index] += (size_t) res) < raw->block_bytes)
                s_raw_prep (raw, slot, index, done_bytes [index]);
            else {
                free_bufs [free_count++] = index;
                completed++;
            }
        }
    }
    *us = kvt_bench_now_us () - start;
    //  On failure, drain what is in flight before the buffer can go
    if (rc)
        fprintf (stderr, "kvtier bench host: raw %s: %s\n", raw->write? "write": "read",
                 strerror (-rc));
    while (rc && free_count < depth) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe (&raw->ring, &cqe))
            break;
        io_uring_cqe_seen (&raw->ring, cqe);
        free_count++;
    }
    free (done_bytes);
    free (free_bufs);
    return rc;
}
