/*  =========================================================================
    kvt_util - small helpers every layer uses (clock, allocation)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_UTIL_H_INCLUDED
#define KVT_UTIL_H_INCLUDED

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Monotonic clock in microseconds.
static inline int64_t
kvt_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

//  Bookkeeping allocation: zeroed, aborts on out-of-memory (CZMQ's zmalloc).
static inline void *
kvt_zmalloc (size_t bytes)
{
    void *p = calloc (1, bytes? bytes: 1);
    if (!p)
        abort ();
    return p;
}

#define kvt_freen(p) do { free (p); (p) = NULL; } while (0)

#ifdef __cplusplus
}
#endif
#endif
