/*  =========================================================================
    kvt_huge - anonymous memory on transparent huge pages, where allowed

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Big private buffers that DMA lands in, or that are read at random, ask
    the kernel for 2 MiB pages (madvise MADV_HUGEPAGE on a 2 MiB-aligned
    mapping). Why, measured on this project's CI VM (tools/bench/RESULTS.md,
    session 20): its virtual disk has no indirect descriptors, so a 64 KiB
    read into 4 KiB pages takes 18 of the virtqueue's descriptors and only
    ~14 reads fit in it at once; into huge pages a read is one segment, and
    raw io_uring 64 KiB reads went from 1.0-1.1 to 1.9-2.0 GB/s. Random
    lookups miss the TLB less too. Where THP is off ("never") the memory is
    plain pages and nothing else changes.
    Shared memory (the memfd arena that actor processes map) is mapped 2
    MiB-aligned and can be collapsed onto 2 MiB pages by MADV_COLLAPSE,
    which the kernel (6.1 and later) allows even where shmem THP is
    "never", the setting on both of this project's machines.
@end
*/

#ifndef KVT_HUGE_H_INCLUDED
#define KVT_HUGE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Zeroed private memory of at least 'bytes' (rounded up to 2 MiB), 2 MiB
//  aligned and advised for huge pages; 'populate' faults it in now (it is
//  then resident before anyone times it). NULL if it cannot be mapped.
void *
    kvt_huge_alloc (size_t bytes, bool populate);

//  Unmap what kvt_huge_alloc (p, bytes) returned; NULL is fine.
void
    kvt_huge_free (void *p, size_t bytes);

//  Map 'length' bytes of the shared-memory file 'fd' read-write at a 2 MiB-
//  aligned address (so 2 MiB pages can back it). NULL, errno set, if not.
void *
    kvt_huge_map_fd (int fd, size_t length);

//  Move the 2 MiB-aligned mapping [p, p + length), shared or private
//  (length a multiple of 2 MiB), onto 2 MiB pages now, keeping its bytes:
//  one touch an extent, then MADV_COLLAPSE. Allocates what was not yet resident. 0, or -errno
//  (EINVAL before Linux 6.1 or where shmem THP is "deny", EAGAIN / ENOMEM
//  when no 2 MiB of memory could be found), and then the pages stay small.
int
    kvt_huge_collapse (void *p, size_t length);

//  Whether kvt_huge_alloc's memory gets huge pages here: transparent huge
//  pages are "always" or "madvise" (/sys/kernel/mm/transparent_hugepage/
//  enabled); false where they are "never" or the file is missing.
bool
    kvt_huge_thp_enabled (void);

//  Bytes of [p, p + length) that 2 MiB entries map now (AnonHugePages,
//  ShmemPmdMapped and FilePmdMapped of the mappings in it, from /proc/self/
//  smaps): what a hint (MADV_HUGEPAGE) or a collapse actually got, as a
//  fault may fall back to 4 KiB pages where memory is fragmented. SIZE_MAX
//  where the kernel does not say.
size_t
    kvt_huge_large_bytes (const void *p, size_t length);

//  Selftest
int
    kvt_huge_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
