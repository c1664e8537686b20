/*  =========================================================================
    kvt_huge - anonymous memory on transparent huge pages, where allowed

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include "kvt_huge.h"

#ifndef MADV_COLLAPSE
#   define MADV_COLLAPSE 25             //  Linux 6.1; older kernels say EINVAL
#endif

#define S_HUGE ((size_t) 2 << 20)

static size_t
s_length (size_t bytes)
{
    return ((bytes? bytes: 1) + S_HUGE - 1) / S_HUGE * S_HUGE;
}

//  The first 2 MiB boundary in 'raw', a mapping of length + 2 MiB: the
//  kernel only backs aligned 2 MiB ranges with huge pages
static uint8_t *
s_aligned (uint8_t *raw)
{
    return (uint8_t *) (((uintptr_t) raw + S_HUGE - 1) & ~(uintptr_t) (S_HUGE - 1));
}

//  Give back what lies around [p, p + length) of the mapping 'raw' of
//  length + 2 MiB
static void
s_trim (uint8_t *raw, uint8_t *p, size_t length)
{
    if (p > raw)
        munmap (raw, (size_t) (p - raw));
    size_t tail = (size_t) (raw + length + S_HUGE - (p + length));
    if (tail)
        munmap (p + length, tail);
}

void *
kvt_huge_alloc (size_t bytes, bool populate)
{
    size_t length = s_length (bytes);
    //  Over-map by one huge page and trim both ends to a 2 MiB boundary
    uint8_t *raw = (uint8_t *) mmap (NULL, length + S_HUGE, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *p = s_aligned (raw);
    s_trim (raw, p, length);
#ifdef MADV_HUGEPAGE
    madvise (p, length, MADV_HUGEPAGE);     //  A hint: refused, nothing changes
#endif
    if (populate) {
#ifdef MADV_POPULATE_WRITE
        if (madvise (p, length, MADV_POPULATE_WRITE) != 0)
#endif
            memset (p, 0, length);
    }
    return p;
}

void
kvt_huge_free (void *p, size_t bytes)
{
    if (p)
        munmap (p, s_length (bytes));
}

void *
kvt_huge_map_fd (int fd, size_t length)
{
    //  Reserve a huge page more than needed, then map the file over its
    //  first 2 MiB boundary and give back both ends
    uint8_t *raw = (uint8_t *) mmap (NULL, length + S_HUGE, PROT_NONE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *p = s_aligned (raw);
    if (mmap (p, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        int error = errno;
        munmap (raw, length + S_HUGE);
        errno = error;
        return NULL;
    }
    s_trim (raw, p, length);
    return p;
}

int
kvt_huge_collapse (void *p, size_t length)
{
    if ((uintptr_t) p % S_HUGE || length % S_HUGE || length == 0)
        return -EINVAL;
    //  An extent with no page in it is refused (EINVAL); a page each,
    //  its own bytes written back, gives every extent one to collapse around
    volatile uint8_t *bytes = (volatile uint8_t *) p;
    for (size_t at = 0; at < length; at += S_HUGE)
        bytes [at] = bytes [at];
    return madvise (p, length, MADV_COLLAPSE) == 0? 0: -errno;
}

bool
kvt_huge_thp_enabled (void)
{
    char line [128] = "";
    FILE *file = fopen ("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!file)
        return false;
    bool read = fgets (line, sizeof (line), file) != NULL;
    fclose (file);
    return read && (strstr (line, "[always]") || strstr (line, "[madvise]"));
}


size_t
kvt_huge_large_bytes (const void *p, size_t length)
{
    FILE *file = fopen ("/proc/self/smaps", "r");
    if (!file)
        return SIZE_MAX;
    const uintptr_t lo = (uintptr_t) p, hi = lo + length;
    size_t total = 0, inside = 0, large_kib = 0;
    bool in_range = false, told = false;
    char line [256];
    for (;;) {
        bool more = fgets (line, sizeof (line), file) != NULL;
        unsigned long start = 0, end = 0;
        bool header = more && sscanf (line, "%lx-%lx ", &start, &end) == 2;
        if (!more || header) {
            //  The mapping before this one is complete: count its share
            if (in_range)
                total += large_kib * 1024 < inside? large_kib * 1024: inside;
            if (!more)
                break;
            uintptr_t from = start > lo? start: lo, to = end < hi? end: hi;
            in_range = from < to;
            inside = in_range? to - from: 0;
            large_kib = 0;
            continue;
        }
        size_t kib;
        if (in_range
        &&  (sscanf (line, "AnonHugePages: %zu kB", &kib) == 1
        ||   sscanf (line, "ShmemPmdMapped: %zu kB", &kib) == 1
        ||   sscanf (line, "FilePmdMapped: %zu kB", &kib) == 1)) {
            large_kib += kib;
            told = true;
        }
    }
    fclose (file);
    return told? total: SIZE_MAX;
}


//  --------------------------------------------------------------------------
//  Selftest

int
kvt_huge_test (bool verbose)
{
    //  @selftest
    const size_t length = 8u << 20;
    //  Private memory told not to use huge pages: none of it is large
    uint8_t *small = (uint8_t *) mmap (NULL, length, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert (small != MAP_FAILED);
#ifdef MADV_NOHUGEPAGE
    madvise (small, length, MADV_NOHUGEPAGE);
#endif
    memset (small, 1, length);
    size_t large = kvt_huge_large_bytes (small, length);
    assert (large == 0 || large == SIZE_MAX);
    munmap (small, length);
    //  kvt_huge_alloc's memory: never more than asked, and all of it
    //  where a collapse succeeds (what the runtime's arenas count on)
    uint8_t *hinted = (uint8_t *) kvt_huge_alloc (length, true);
    assert (hinted);
    size_t hinted_large = kvt_huge_large_bytes (hinted, length);
    assert (hinted_large == SIZE_MAX || hinted_large <= length);
    if (!kvt_huge_thp_enabled ())
        assert (hinted_large == 0 || hinted_large == SIZE_MAX);
    int rc = madvise (hinted, length, MADV_COLLAPSE) == 0? 0: -errno;
    if (rc == 0 && hinted_large != SIZE_MAX)
        assert (kvt_huge_large_bytes (hinted, length) == length);
    //  A range that holds no mapping of ours counts nothing
    assert (kvt_huge_large_bytes (hinted + length, 0) == 0
        ||  kvt_huge_large_bytes (hinted + length, 0) == SIZE_MAX);
    if (verbose)
        printf ("kvt_huge: hinted 8 MiB: %zu KiB on 2 MiB pages, collapse %s\n",
                hinted_large == SIZE_MAX? 0: hinted_large >> 10, rc == 0? "ok": strerror (-rc));
    kvt_huge_free (hinted, length);
    //  @end
    return 0;
}
