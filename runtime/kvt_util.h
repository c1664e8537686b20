/*  =========================================================================
    kvt_util - small helpers every layer uses (clock, allocation, strings)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_UTIL_H_INCLUDED
#define KVT_UTIL_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

//  splitmix64: the next value of a small deterministic generator whose
//  whole state is '*state'. Tests, fuzzers and the client's random tokens
//  use it (tools/python/kvtier_client.py has the same one, so both make the
//  same tokens from a seed).
static inline uint64_t
kvt_splitmix64 (uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
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

//  Room for 'count' values and one more (so 0 is a valid count), not
//  zeroed, for arrays written before they are read: a long prefix's
//  arrays are megabytes, and zeroing them touches every page up front on
//  the thread that waits for them. Aborts on out-of-memory like kvt_zmalloc.
static inline uint64_t *
kvt_u64s_new (size_t count)
{
    uint64_t *values = (uint64_t *) malloc ((count + 1) * sizeof (uint64_t));
    if (!values)
        abort ();
    return values;
}

//  A copy of 'bytes' bytes (a policy's clone copies its tables with it);
//  aborts on out-of-memory like kvt_zmalloc.
static inline void *
kvt_memdup (const void *source, size_t bytes)
{
    void *copy = malloc (bytes? bytes: 1);
    if (!copy)
        abort ();
    if (bytes)
        memcpy (copy, source, bytes);
    return copy;
}

//  A copy of 'count' values (room for one more); aborts on out-of-memory.
static inline uint64_t *
kvt_u64s_dup (const uint64_t *values, size_t count)
{
    uint64_t *copy = kvt_u64s_new (count);
    if (count)
        memcpy (copy, values, count * sizeof (uint64_t));
    return copy;
}

//  Bookkeeping string, printf-formatted: the caller frees it; aborts on
//  out-of-memory like kvt_zmalloc.
static inline char *
kvt_sprintf (const char *format, ...) __attribute__ ((format (printf, 1, 2)));

static inline char *
kvt_sprintf (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    char *text = NULL;
    int rc = vasprintf (&text, format, args);
    va_end (args);
    if (rc < 0)
        abort ();
    return text;
}

#define kvt_freen(p) do { free (p); (p) = NULL; } while (0)

//  A key and what goes with it: slots of one copy, entries by last use.
//  kvt_pairs_sort orders an array of them by key (ties in any order).
typedef struct {
    uint64_t key;
    uint64_t value;
} kvt_pair_t;

static inline int
kvt_pair_compare (const void *a, const void *b)
{
    uint64_t x = ((const kvt_pair_t *) a)->key, y = ((const kvt_pair_t *) b)->key;
    return x < y? -1: x > y;
}

//  The arrays sorted here usually come in order already, or in reverse
//  (a prompt demoted leaf first sits in descending host slots; a batch of
//  index entries comes newest first): those cost one pass, not a sort,
//  which for a 16384-block promotion is milliseconds on the critical path.
static inline void
kvt_pairs_sort (kvt_pair_t *pairs, size_t count)
{
    bool ascending = true, descending = true;
    for (size_t k = 1; k < count && (ascending || descending); k++) {
        ascending = ascending && pairs [k - 1].key <= pairs [k].key;
        descending = descending && pairs [k - 1].key >= pairs [k].key;
    }
    if (ascending)
        return;
    if (descending) {
        for (size_t k = 0; k < count / 2; k++) {
            kvt_pair_t swap = pairs [k];
            pairs [k] = pairs [count - 1 - k];
            pairs [count - 1 - k] = swap;
        }
        return;
    }
    qsort (pairs, count, sizeof (kvt_pair_t), kvt_pair_compare);
}

#ifdef __cplusplus
}
#endif
#endif
