/*  =========================================================================
    kvt_nvme_checksum - a small pool of threads computing xxh3 checksums
    for the NVMe store, fed and drained without locks

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    See kvt_nvme_checksum.h. Each worker owns two rings of power-of-two
    size: 'jobs' (owner produces, worker consumes) and 'results' (worker
    produces, owner consumes). A ring's tail is written by its producer
    only, its head by its consumer only (ypipe's rule); a seq_cst fence
    between publishing and looking at the other side's index closes the
    lost-wake-up window in both directions.
@end
*/

#include "kvt_classes.h"
#include "kvt_nvme_checksum.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <poll.h>

#define S_CACHE_LINE 64             //  Keeps the two indices of a ring apart

typedef struct {
    _Alignas (S_CACHE_LINE) _Atomic uint32_t head;  //  Next entry to consume (consumer)
    _Alignas (S_CACHE_LINE) _Atomic uint32_t tail;  //  Next entry to fill (producer)
    _Alignas (S_CACHE_LINE) uint32_t mask;          //  Entries - 1
    size_t entry_bytes;             //  Size of one entry
    uint8_t *entries;               //  mask + 1 entries
} s_ring_t;

typedef struct {
    kvt_nvme_checksum_t *pool;      //  Owner (borrowed)
    pthread_t thread;               //  The worker
    bool started;                   //  thread was created (owner)
    int sleep_fd;                   //  eventfd the worker sleeps on
    _Atomic int sleeping;           //  Set by the worker before it sleeps
    _Atomic int stop;               //  Set by the owner at destroy
    s_ring_t jobs;                  //  kvt_nvme_checksum_job_t, owner -> worker
    s_ring_t results;               //  kvt_nvme_checksum_result_t, worker -> owner
    int outstanding;                //  Posted, not collected (owner only)
} s_worker_t;

struct _kvt_nvme_checksum_t {
    s_worker_t *workers;            //  thread_count workers
    int thread_count;               //  Entries in workers
    int capacity;                   //  Most jobs outstanding over all workers
    int outstanding;                //  Posted, not collected (owner only)
    int wake_fd;                    //  Owner's eventfd (borrowed)
};

static void
s_ring_init (s_ring_t *ring, int capacity, size_t entry_bytes)
{
    uint32_t size = 1;
    while (size < (uint32_t) capacity)
        size <<= 1;
    atomic_init (&ring->head, 0);
    atomic_init (&ring->tail, 0);
    ring->mask = size - 1;
    ring->entry_bytes = entry_bytes;
    ring->entries = (uint8_t *) kvt_zmalloc (size * entry_bytes);
}

//  Producer side. Returns false if full; *was_empty tells whether the
//  consumer had taken everything before this entry (seq_cst: either it
//  sees this entry or we see it caught up).
static bool
s_ring_push (s_ring_t *ring, const void *entry, bool *was_empty)
{
    uint32_t tail = atomic_load_explicit (&ring->tail, memory_order_relaxed);
    uint32_t head = atomic_load_explicit (&ring->head, memory_order_acquire);
    if (tail - head > ring->mask)
        return false;
    memcpy (ring->entries + (size_t) (tail & ring->mask) * ring->entry_bytes, entry,
            ring->entry_bytes);
    atomic_store_explicit (&ring->tail, tail + 1, memory_order_release);
    atomic_thread_fence (memory_order_seq_cst);
    if (was_empty)
        *was_empty = atomic_load_explicit (&ring->head, memory_order_relaxed) == tail;
    return true;
}

//  Consumer side. Returns false if empty. The fence after taking an entry
//  pairs with the producer's: our next look at tail cannot miss an entry
//  whose producer saw us not yet caught up (and so did not wake us).
static bool
s_ring_pop (s_ring_t *ring, void *entry)
{
    uint32_t head = atomic_load_explicit (&ring->head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit (&ring->tail, memory_order_acquire);
    if (head == tail)
        return false;
    memcpy (entry, ring->entries + (size_t) (head & ring->mask) * ring->entry_bytes,
            ring->entry_bytes);
    atomic_store_explicit (&ring->head, head + 1, memory_order_release);
    atomic_thread_fence (memory_order_seq_cst);
    return true;
}

static bool
s_ring_empty (s_ring_t *ring)
{
    return atomic_load_explicit (&ring->head, memory_order_relaxed)
        == atomic_load_explicit (&ring->tail, memory_order_acquire);
}

static void
s_signal (int fd)
{
    uint64_t one = 1;
    //  Fails only if the counter would overflow: it is readable anyway
    (void) !write (fd, &one, sizeof (one));
}


//  --------------------------------------------------------------------------
//  Run one job here. Returns the checksum of its source.

uint64_t
kvt_nvme_checksum_run (const kvt_nvme_checksum_job_t *job)
{
    assert (job);
    for (int g = 0; job->group_count > 1 && g < job->group_count; g++)
        job->group_sums [g] = XXH3_64bits ((const uint8_t *) job->src + job->group_offsets [g],
                                           job->group_offsets [g + 1] - job->group_offsets [g]);
    if (job->kind == KVT_NVME_CHECKSUM_COPY_HASH) {
        memcpy (job->dst, job->src, job->bytes);
        return XXH3_64bits (job->dst, job->bytes);
    }
    uint64_t checksum = XXH3_64bits (job->src, job->bytes);
    if (job->kind == KVT_NVME_CHECKSUM_HASH_COPY && checksum == job->expect)
        memcpy (job->dst, job->src, job->bytes);
    return checksum;
}

static void *
s_worker_main (void *arg)
{
    s_worker_t *worker = (s_worker_t *) arg;
    kvt_nvme_checksum_job_t job;
    while (true) {
        //  Seen before draining: every job posted before stop gets done
        bool stopping = atomic_load (&worker->stop);
        while (s_ring_pop (&worker->jobs, &job)) {
            kvt_nvme_checksum_result_t result = { job.id, kvt_nvme_checksum_run (&job) };
            bool was_empty = false;
            bool pushed = s_ring_push (&worker->results, &result, &was_empty);
            assert (pushed);        //  Sized for every job outstanding
            if (was_empty)
                s_signal (worker->pool->wake_fd);
        }
        if (stopping)
            break;
        atomic_store (&worker->sleeping, 1);
        atomic_thread_fence (memory_order_seq_cst);
        if (s_ring_empty (&worker->jobs) && !atomic_load (&worker->stop)) {
            uint64_t ticks;
            if (read (worker->sleep_fd, &ticks, sizeof (ticks)) < 0 && errno != EINTR)
                kvt_log_warn ("nvme checksum: eventfd read: %s", strerror (errno));
        }
        atomic_store (&worker->sleeping, 0);
    }
    return NULL;
}


//  --------------------------------------------------------------------------
//  Start the workers. NULL if a thread or eventfd could not be had.

kvt_nvme_checksum_t *
kvt_nvme_checksum_new (int threads, int capacity, int wake_fd)
{
    assert (threads >= 1 && capacity >= 1 && wake_fd >= 0);
    kvt_nvme_checksum_t *self = (kvt_nvme_checksum_t *) kvt_zmalloc (sizeof (*self));
    self->capacity = capacity;
    self->wake_fd = wake_fd;
    self->workers = (s_worker_t *) aligned_alloc (S_CACHE_LINE,
        ((sizeof (s_worker_t) * (size_t) threads + S_CACHE_LINE - 1) / S_CACHE_LINE)
        * S_CACHE_LINE);
    if (!self->workers)
        abort ();                   //  Bookkeeping allocation: OOM aborts
    memset (self->workers, 0, sizeof (s_worker_t) * (size_t) threads);
    for (int i = 0; i < threads; i++) {
        s_worker_t *worker = &self->workers [i];
        worker->pool = self;
        worker->sleep_fd = -1;
        s_ring_init (&worker->jobs, capacity, sizeof (kvt_nvme_checksum_job_t));
        s_ring_init (&worker->results, capacity, sizeof (kvt_nvme_checksum_result_t));
        self->thread_count++;       //  destroy frees its rings from here on
        worker->sleep_fd = eventfd (0, EFD_CLOEXEC);
        if (worker->sleep_fd < 0) {
            kvt_log_error ("nvme checksum: eventfd: %s", strerror (errno));
            kvt_nvme_checksum_destroy (&self);
            return NULL;
        }
        int rc = pthread_create (&worker->thread, NULL, s_worker_main, worker);
        if (rc) {
            kvt_log_error ("nvme checksum: pthread_create: %s", strerror (rc));
            kvt_nvme_checksum_destroy (&self);
            return NULL;
        }
        worker->started = true;
    }
    return self;
}


//  --------------------------------------------------------------------------
//  Post a job to the worker with the fewest outstanding. 0 or -EAGAIN.

int
kvt_nvme_checksum_post (kvt_nvme_checksum_t *self, const kvt_nvme_checksum_job_t *job)
{
    assert (self);
    assert (job);
    if (self->outstanding >= self->capacity)
        return -EAGAIN;
    s_worker_t *worker = &self->workers [0];
    for (int i = 1; i < self->thread_count; i++)
        if (self->workers [i].outstanding < worker->outstanding)
            worker = &self->workers [i];
    bool pushed = s_ring_push (&worker->jobs, job, NULL);
    assert (pushed);                //  Rings hold capacity entries each
    worker->outstanding++;
    self->outstanding++;
    if (atomic_load (&worker->sleeping))
        s_signal (worker->sleep_fd);
    return 0;
}


//  --------------------------------------------------------------------------
//  Collect up to 'max' results. Returns the count.

int
kvt_nvme_checksum_collect (kvt_nvme_checksum_t *self, kvt_nvme_checksum_result_t *results,
                           int max)
{
    assert (self);
    int count = 0;
    for (int i = 0; i < self->thread_count && count < max; i++) {
        s_worker_t *worker = &self->workers [i];
        while (count < max && s_ring_pop (&worker->results, &results [count])) {
            worker->outstanding--;
            self->outstanding--;
            count++;
        }
    }
    return count;
}

int
kvt_nvme_checksum_outstanding (kvt_nvme_checksum_t *self)
{
    assert (self);
    return self->outstanding;
}

bool
kvt_nvme_checksum_ready (kvt_nvme_checksum_t *self)
{
    assert (self);
    for (int i = 0; i < self->thread_count; i++)
        if (!s_ring_empty (&self->workers [i].results))
            return true;
    return false;
}

int
kvt_nvme_checksum_threads (kvt_nvme_checksum_t *self)
{
    assert (self);
    return self->thread_count;
}

int
kvt_nvme_checksum_auto_threads (void)
{
    long cores = sysconf (_SC_NPROCESSORS_ONLN);
    if (cores < 8)
        return 1;
    return cores / 4 > 8? 8: (int) (cores / 4);
}


//  --------------------------------------------------------------------------
//  Finish the jobs in flight, join the workers. NULL-safe.

void
kvt_nvme_checksum_destroy (kvt_nvme_checksum_t **self_p)
{
    assert (self_p);
    kvt_nvme_checksum_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < self->thread_count; i++) {
        s_worker_t *worker = &self->workers [i];
        if (worker->started) {
            atomic_store (&worker->stop, 1);
            s_signal (worker->sleep_fd);
            pthread_join (worker->thread, NULL);
        }
        if (worker->sleep_fd >= 0)
            close (worker->sleep_fd);
        free (worker->jobs.entries);
        free (worker->results.entries);
    }
    free (self->workers);
    free (self);
    *self_p = NULL;
}


//  --------------------------------------------------------------------------
//  Selftest

int
kvt_nvme_checksum_test (bool verbose)
{
    //  @selftest
    int wake_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert (wake_fd >= 0);
    size_t block_bytes = 65536 + 40;
    int capacity = 16;
    int job_total = 2000;
    uint8_t *src = (uint8_t *) malloc ((size_t) capacity * block_bytes);
    uint8_t *dst = (uint8_t *) malloc ((size_t) capacity * block_bytes);
    assert (src && dst);
    for (size_t i = 0; i < (size_t) capacity * block_bytes; i++)
        src [i] = (uint8_t) (i * 131 + (i >> 9));
    for (int threads = 1; threads <= 3; threads++) {
        kvt_nvme_checksum_t *pool = kvt_nvme_checksum_new (threads, capacity, wake_fd);
        assert (pool);
        assert (kvt_nvme_checksum_threads (pool) == threads);
        int posted = 0, collected = 0;
        bool busy [16] = { false };
        while (collected < job_total) {
            //  Every kind, each slot reused only once its result is back
            for (int s = 0; s < capacity && posted < job_total; s++) {
                if (busy [s])
                    continue;
                uint8_t *slot_src = src + (size_t) s * block_bytes;
                uint8_t *slot_dst = dst + (size_t) s * block_bytes;
                int kind = posted % 3;
                size_t bytes = block_bytes - (size_t) s;
                memset (slot_dst, 0, block_bytes);
                kvt_nvme_checksum_job_t job = {
                    .id = (uint64_t) s << 32 | (uint64_t) posted, .src = slot_src,
                    .dst = kind? slot_dst: NULL, .bytes = bytes,
                    .expect = posted % 6 == 2? 0: XXH3_64bits (slot_src, bytes), .kind = kind
                };
                int rc = kvt_nvme_checksum_post (pool, &job);
                assert (rc == 0);
                busy [s] = true;
                posted++;
            }
            if (kvt_nvme_checksum_outstanding (pool) == capacity) {
                kvt_nvme_checksum_job_t extra = { .src = src, .bytes = 8 };
                int rc = kvt_nvme_checksum_post (pool, &extra);
                assert (rc == -EAGAIN);
            }
            struct pollfd item = { wake_fd, POLLIN, 0 };
            int rc = poll (&item, 1, 5000);
            assert (rc == 1);
            uint64_t ticks;
            rc = (int) read (wake_fd, &ticks, sizeof (ticks));
            kvt_nvme_checksum_result_t results [16];
            int n;
            while ((n = kvt_nvme_checksum_collect (pool, results, 16)) > 0)
                for (int i = 0; i < n; i++) {
                    int s = (int) (results [i].id >> 32);
                    int job_index = (int) (results [i].id & 0xFFFFFFFF);
                    size_t bytes = block_bytes - (size_t) s;
                    uint8_t *slot_src = src + (size_t) s * block_bytes;
                    uint8_t *slot_dst = dst + (size_t) s * block_bytes;
                    assert (results [i].checksum == XXH3_64bits (slot_src, bytes));
                    bool copied = memcmp (slot_src, slot_dst, bytes) == 0;
                    int kind = job_index % 3;
                    assert (copied == (kind == 1 || (kind == 2 && job_index % 6 != 2)));
                    busy [s] = false;
                    collected++;
                }
        }
        assert (kvt_nvme_checksum_outstanding (pool) == 0);
        assert (!kvt_nvme_checksum_ready (pool));
        if (verbose)
            printf ("checksum pool: %d threads, %d jobs ok\n", threads, collected);
        kvt_nvme_checksum_destroy (&pool);
        assert (pool == NULL);
    }
    //  Destroy with jobs in flight waits for them
    kvt_nvme_checksum_t *pool = kvt_nvme_checksum_new (2, capacity, wake_fd);
    assert (pool);
    memset (dst, 0, (size_t) capacity * block_bytes);
    for (int s = 0; s < capacity; s++) {
        kvt_nvme_checksum_job_t job = {
            .id = (uint64_t) s, .src = src + (size_t) s * block_bytes,
            .dst = dst + (size_t) s * block_bytes, .bytes = block_bytes,
            .kind = KVT_NVME_CHECKSUM_COPY_HASH
        };
        int rc = kvt_nvme_checksum_post (pool, &job);
        assert (rc == 0);
    }
    kvt_nvme_checksum_destroy (&pool);
    kvt_nvme_checksum_destroy (&pool);
    assert (memcmp (src, dst, (size_t) capacity * block_bytes) == 0);
    assert (kvt_nvme_checksum_auto_threads () >= 1);
    free (src);
    free (dst);
    close (wake_fd);
    //  @end
    return 0;
}
