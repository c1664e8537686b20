/*  =========================================================================
    kvt_xxh - xxh3, at the widest vector unit this CPU has

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

/*
@header
    Every xxh3 of ours (block hashes, on-disk checksums) goes through this
    header. Distribution builds of libxxhash are compiled for the baseline
    of their architecture (SSE2 on x86-64: 8-9 GB/s a core in cache), but
    on x86-64 the library also exports runtime-dispatched entry points that
    pick AVX2 or AVX-512 on the CPU at hand (23-38 GB/s a core in cache).
    Where the build found them (KVT_XXH_DISPATCH, set by CMakeLists.txt),
    xxh_x86dispatch.h renames XXH3_64bits and friends to those. The hashes
    are the same numbers on every path, so disks written by either build
    read back on the other.
    Define XXH_DISPATCH_DISABLE_REPLACE before including this to keep both
    names apart (the benchmark compares them).
@end
*/

#ifndef KVT_XXH_H_INCLUDED
#define KVT_XXH_H_INCLUDED

#include <xxhash.h>
#if defined (KVT_XXH_DISPATCH)
#   include <xxh_x86dispatch.h>
#endif

#endif
