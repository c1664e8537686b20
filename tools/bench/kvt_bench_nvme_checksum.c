/*  =========================================================================
    kvt_bench_nvme_checksum - `kvtier bench nvme`'s checksum figures: xxh3
    on one core, and the store's checksum pool on many, beside memcpy

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#define XXH_DISPATCH_DISABLE_REPLACE  //  Both paths by name, to compare them
#include "kvt_xxh.h"
#include "kvt_nvme_checksum.h"
#include "kvt_bench_nvme_int.h"

//  The xxh3 the runtime uses: the runtime-dispatched entry where the build
//  found it (kvt_xxh.h), else the library's baseline build
static uint64_t
s_xxh3 (const void *data, size_t bytes)
{
#if defined (KVT_XXH_DISPATCH)
    return XXH3_64bits_dispatch (data, bytes);
#else
    return XXH3_64bits (data, bytes);
#endif
}

//  xxh3 on one core over a 256 KiB block that stays in cache (what a
//  core can hash when memory is not the limit), beside the library's
//  baseline (SSE2 on x86-64) build of the same function
static void
s_hash_in_cache (kvt_bench_report_t *report)
{
    size_t bytes = 256u << 10, total = 4ull << 30;
    uint8_t *a = (uint8_t *) kvt_bench_nvme_map (bytes);
    kvt_bench_nvme_fill (a, bytes, 11);
    double ours [5], baseline [5];
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double start = kvt_bench_nvme_seconds ();
        for (size_t done = 0; done < total; done += bytes)
            sink ^= s_xxh3 (a, bytes);
        ours [rep] = (double) total / (kvt_bench_nvme_seconds () - start) / 1e9;
        start = kvt_bench_nvme_seconds ();
        for (size_t done = 0; done < total; done += bytes)
            sink ^= XXH3_64bits (a, bytes);
        baseline [rep] = (double) total / (kvt_bench_nvme_seconds () - start) / 1e9;
    }
    //  The two paths must agree, or disks written by one are misses to the other
    if (s_xxh3 (a, bytes) != XXH3_64bits (a, bytes))
        kvt_bench_report_note (report, "error", "dispatched and baseline xxh3 disagree");
    kvt_bench_report_add (report, "xxh3_64_one_core_in_cache_gbps", kvt_bench_nvme_median (ours, 5), "GB/s",
                          "xxh3_64_baseline_build_in_cache_gbps", kvt_bench_nvme_median (baseline, 5));
    kvt_bench_nvme_unmap (a, bytes);
}

//  xxh3 and memcpy on one core over 64 MiB (out of cache), and in cache
void
kvt_bench_nvme_hash (kvt_bench_report_t *report)
{
    s_hash_in_cache (report);
    size_t bytes = 64u << 20;
    uint8_t *a = (uint8_t *) kvt_bench_nvme_map (bytes);
    uint8_t *b = (uint8_t *) kvt_bench_nvme_map (bytes);
    kvt_bench_nvme_fill (a, bytes, 7);
    double hash_rates [5], copy_rates [5];
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double start = kvt_bench_nvme_seconds ();
        for (size_t off = 0; off < bytes; off += 2u << 20)
            sink ^= s_xxh3 (a + off, 2u << 20);
        hash_rates [rep] = (double) bytes / (kvt_bench_nvme_seconds () - start) / 1e9;
        start = kvt_bench_nvme_seconds ();
        for (size_t off = 0; off < bytes; off += 2u << 20)
            memcpy (b + off, a + off, 2u << 20);
        copy_rates [rep] = (double) bytes / (kvt_bench_nvme_seconds () - start) / 1e9;
        sink ^= b [rep];
    }
    kvt_bench_report_add (report, "xxh3_64_one_core_gbps", kvt_bench_nvme_median (hash_rates, 5), "GB/s",
                          "memcpy_one_core_gbps", kvt_bench_nvme_median (copy_rates, 5));
    kvt_bench_nvme_unmap (a, bytes);
    kvt_bench_nvme_unmap (b, bytes);
}


//  --------------------------------------------------------------------------
//  Checksum pool on 1..N threads beside memcpy on as many

#define S_POOL_BYTES    (256u << 20)    //  Data hashed per run, out of cache
#define S_POOL_JOB      (1u << 20)      //  Bytes per job

typedef struct {
    const uint8_t *src;             //  Slice to copy
    uint8_t *dst;                   //  Where to
    size_t bytes;                   //  Its length
} s_copy_t;

static void *
s_copy_main (void *arg)
{
    s_copy_t *copy = (s_copy_t *) arg;
    memcpy (copy->dst, copy->src, copy->bytes);
    return NULL;
}

//  memcpy 'bytes' split over 'threads' threads; GB/s of bytes copied.
static double
s_memcpy_threads (const uint8_t *src, uint8_t *dst, size_t bytes, int threads)
{
    pthread_t ids [KVT_BENCH_NVME_MAX_THREADS];
    s_copy_t copies [KVT_BENCH_NVME_MAX_THREADS];
    size_t slice = bytes / (size_t) threads;
    double start = kvt_bench_nvme_seconds ();
    for (int t = 0; t < threads; t++) {
        copies [t] = (s_copy_t) { src + (size_t) t * slice, dst + (size_t) t * slice,
                                  t == threads - 1? bytes - (size_t) t * slice: slice };
        if (pthread_create (&ids [t], NULL, s_copy_main, &copies [t]) != 0) {
            fprintf (stderr, "kvtier bench nvme: pthread_create failed\n");
            exit (1);
        }
    }
    for (int t = 0; t < threads; t++)
        pthread_join (ids [t], NULL);
    return (double) bytes / (kvt_bench_nvme_seconds () - start) / 1e9;
}

//  Hash 'bytes' through the pool as S_POOL_JOB jobs, 'capacity' in
//  flight, the caller waiting on wake_fd as the store's caller does.
static double
s_pool_run (kvt_nvme_checksum_t *pool, int wake_fd, const uint8_t *src, size_t bytes,
            int capacity, uint64_t *sink)
{
    size_t jobs = bytes / S_POOL_JOB, posted = 0, done = 0;
    int outstanding = 0;
    double start = kvt_bench_nvme_seconds ();
    while (done < jobs) {
        while (posted < jobs && outstanding < capacity) {
            kvt_nvme_checksum_job_t job = {
                .id = posted, .src = src + posted * S_POOL_JOB, .bytes = S_POOL_JOB,
                .kind = KVT_NVME_CHECKSUM_HASH
            };
            if (kvt_nvme_checksum_post (pool, &job) != 0)
                break;
            posted++;
            outstanding++;
        }
        kvt_nvme_checksum_result_t results [KVT_BENCH_NVME_MAX_THREADS * 4];
        int n = kvt_nvme_checksum_collect (pool, results, KVT_BENCH_NVME_MAX_THREADS * 4);
        if (n == 0) {
            struct pollfd item = { wake_fd, POLLIN, 0 };
            if (poll (&item, 1, 1000) == 1) {
                uint64_t ticks;
                (void) !read (wake_fd, &ticks, sizeof (ticks));   //  Only drains
            }
            continue;
        }
        for (int i = 0; i < n; i++)
            *sink += results [i].checksum;
        done += (size_t) n;
        outstanding -= n;
    }
    return (double) (jobs * S_POOL_JOB) / (kvt_bench_nvme_seconds () - start) / 1e9;
}

void
kvt_bench_nvme_checksum_pool (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts)
{
    uint8_t *src = (uint8_t *) kvt_bench_nvme_map (S_POOL_BYTES);
    uint8_t *dst = (uint8_t *) kvt_bench_nvme_map (S_POOL_BYTES);
    kvt_bench_nvme_fill (src, S_POOL_BYTES, 11);
    int wake_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    uint64_t sink = 0;
    for (int threads = 1; threads <= opts->threads; threads++) {
        int capacity = 4 * threads;
        kvt_nvme_checksum_t *pool = kvt_nvme_checksum_new (threads, capacity, wake_fd);
        if (!pool) {
            fprintf (stderr, "kvtier bench nvme: cannot start %d checksum threads\n", threads);
            exit (1);
        }
        double *hash = (double *) calloc ((size_t) opts->reps, sizeof (double));
        double *copy = (double *) calloc ((size_t) opts->reps, sizeof (double));
        for (int rep = 0; rep < opts->reps; rep++) {
            hash [rep] = s_pool_run (pool, wake_fd, src, S_POOL_BYTES, capacity, &sink);
            copy [rep] = s_memcpy_threads (src, dst, S_POOL_BYTES, threads);
        }
        if (opts->verbose)
            for (int rep = 0; rep < opts->reps; rep++)
                fprintf (stderr, "# checksum pool %d threads: %.2f GB/s, memcpy %.2f GB/s\n",
                         threads, hash [rep], copy [rep]);
        char figure [64], base [64];
        snprintf (figure, sizeof (figure), "xxh3_pool_%dt_gbps", threads);
        snprintf (base, sizeof (base), "memcpy_%dt_gbps", threads);
        kvt_bench_report_add (report, figure, kvt_bench_nvme_median (hash, opts->reps), "GB/s", base,
                              kvt_bench_nvme_median (copy, opts->reps));
        free (hash);
        free (copy);
        kvt_nvme_checksum_destroy (&pool);
    }
    char note [160];
    snprintf (note, sizeof (note), "256 MiB out of cache in 1 MiB jobs, 4 per thread in "
              "flight; %ld online cores (checksum %016" PRIx64 ")",
              sysconf (_SC_NPROCESSORS_ONLN), sink);
    kvt_bench_report_note (report, "checksum_pool", note);
    close (wake_fd);
    kvt_bench_nvme_unmap (src, S_POOL_BYTES);
    kvt_bench_nvme_unmap (dst, S_POOL_BYTES);
}
