/*  =========================================================================
    kvt_nvme_checksum - a small pool of threads computing xxh3 checksums
    for the NVMe store, fed and drained without locks

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    xxh3 on one core runs at memory speed (6-8 GB/s); a striped array of
    NVMe devices reads faster than that, so the store can hand checksum
    work to this pool instead of doing it on the actor's thread. The owner
    (one thread: the store's caller) posts jobs and collects results;
    each worker has two single-producer single-consumer rings (jobs in,
    results out) indexed by C11 atomics, no mutex anywhere.
    A worker with nothing to do sleeps on its own eventfd; the owner
    writes it only when the worker said it was going to sleep. A worker
    writes the owner's wake_fd (an eventfd the owner polls, for the store
    the one io_uring also signals) only when its result ring was empty
    before the push, so a burst of results costs one wake-up.
@discuss
    Jobs name caller memory: it must stay valid and unchanged until the
    job's result is collected. Results come back in any order across
    workers (in order within one). Non-goals: scheduling by size (jobs go
    to the worker with the fewest outstanding), and other hashes.
@end
*/

#ifndef KVT_NVME_CHECKSUM_H_INCLUDED
#define KVT_NVME_CHECKSUM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_nvme_checksum_t kvt_nvme_checksum_t;

typedef enum {
    KVT_NVME_CHECKSUM_HASH = 0,     //  checksum of src
    KVT_NVME_CHECKSUM_COPY_HASH = 1,    //  copy src to dst, checksum of src
    KVT_NVME_CHECKSUM_HASH_COPY = 2 //  checksum of src; copy src to dst if it equals expect
} kvt_nvme_checksum_kind_t;

typedef struct {
    uint64_t id;                    //  Caller's id, given back with the result
    const void *src;                //  Bytes to hash (caller memory)
    void *dst;                      //  Copy target for the COPY kinds, else NULL
    size_t bytes;                   //  Length of src (and dst)
    uint64_t expect;                //  HASH_COPY: copy only if the checksum is this
    int kind;                       //  kvt_nvme_checksum_kind_t
    int group_count;                //  > 1: also hash each of these byte ranges of src
    const uint64_t *group_offsets;  //  Their group_count + 1 boundaries (caller memory)
    uint64_t *group_sums;           //  Gets their group_count xxh3-64s (caller memory)
} kvt_nvme_checksum_job_t;

typedef struct {
    uint64_t id;                    //  The job's id
    uint64_t checksum;              //  xxh3-64 of its src
} kvt_nvme_checksum_result_t;

//  Start 'threads' workers (>= 1) that together hold at most 'capacity'
//  jobs outstanding (posted, not collected), signalling 'wake_fd' (an
//  eventfd, borrowed) when results are ready. Returns NULL if a thread or
//  eventfd could not be had (logged).
kvt_nvme_checksum_t *
    kvt_nvme_checksum_new (int threads, int capacity, int wake_fd);

//  Hand a job to the least busy worker. Does not wait. Returns 0, or
//  -EAGAIN when 'capacity' jobs are outstanding.
int
    kvt_nvme_checksum_post (kvt_nvme_checksum_t *self, const kvt_nvme_checksum_job_t *job);

//  Collect up to 'max' results without waiting. Returns the count.
int
    kvt_nvme_checksum_collect (kvt_nvme_checksum_t *self, kvt_nvme_checksum_result_t *results,
                               int max);

//  Return the jobs posted and not yet collected.
int
    kvt_nvme_checksum_outstanding (kvt_nvme_checksum_t *self);

//  Return true if a result is waiting to be collected.
bool
    kvt_nvme_checksum_ready (kvt_nvme_checksum_t *self);

//  Return the number of worker threads.
int
    kvt_nvme_checksum_threads (kvt_nvme_checksum_t *self);

//  Run one job on the calling thread; returns its checksum. What the
//  workers run, and what the store runs when it has no pool.
uint64_t
    kvt_nvme_checksum_run (const kvt_nvme_checksum_job_t *job);

//  The thread count 'auto' (0) means here: 1 (no pool) below 8 online
//  cores, else a quarter of them, at most 8.
int
    kvt_nvme_checksum_auto_threads (void);

//  Wait for the jobs in flight, stop and join the workers. Results not
//  collected are dropped. Safe on NULL; nulls the caller's pointer.
void
    kvt_nvme_checksum_destroy (kvt_nvme_checksum_t **self_p);

//  Self test.
int
    kvt_nvme_checksum_test (bool verbose);

#ifdef __cplusplus
}
#endif
#endif
