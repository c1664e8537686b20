/*  =========================================================================
    kvt_hash_load - whether the NVMe store hashes a block on its own
    thread or hands it to its checksum pool, from the load it would take

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_hash_load.h"

//  Weight of a new inline measurement in the cost's moving average
#define S_COST_WEIGHT 0.125

void
kvt_hash_load_init (kvt_hash_load_t *self)
{
    memset (self, 0, sizeof (*self));
    self->ns_per_byte = KVT_HASH_LOAD_SEED_NS_PER_BYTE;
}


bool
kvt_hash_load_offload (kvt_hash_load_t *self, size_t bytes, uint64_t now_ns)
{
    if (self->window_start_ns == 0 || now_ns < self->window_start_ns)
        self->window_start_ns = now_ns;
    uint64_t elapsed_ns = now_ns - self->window_start_ns;
    if (elapsed_ns >= KVT_HASH_LOAD_WINDOW_NS) {
        //  The window closed: its demand, priced at inline cost, against
        //  its length (an idle stretch inside it lowers the share, as it
        //  should: the thread had that time)
        double share = (double) self->window_bytes * self->ns_per_byte / (double) elapsed_ns;
        if (!self->offload && share > KVT_HASH_LOAD_OFFLOAD_ABOVE)
            self->offload = true;
        else
        if (self->offload && share < KVT_HASH_LOAD_INLINE_BELOW)
            self->offload = false;
        self->last_share = share;
        self->window_start_ns = now_ns;
        self->window_bytes = 0;
    }
    self->window_bytes += bytes;
    return self->offload;
}


void
kvt_hash_load_measured (kvt_hash_load_t *self, size_t bytes, uint64_t ns)
{
    if (bytes < 4096)
        return;                     //  Too short to time: the clock's cost dominates
    double sample = (double) ns / (double) bytes;
    self->ns_per_byte += S_COST_WEIGHT * (sample - self->ns_per_byte);
}


uint64_t
kvt_hash_load_now_ns (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (uint64_t) now.tv_sec * 1000000000ull + (uint64_t) now.tv_nsec;
}


//  --------------------------------------------------------------------------
//  Selftest

//  Feed 'seconds' of jobs of 'bytes' at 'gbps' from *now_ns on; return the
//  share of jobs that went to the pool.
static double
s_feed (kvt_hash_load_t *load, uint64_t *now_ns, double gbps, size_t bytes, double seconds)
{
    double gap_ns = (double) bytes / gbps;
    size_t jobs = (size_t) (seconds * 1e9 / gap_ns), pooled = 0;
    for (size_t i = 0; i < jobs; i++) {
        pooled += kvt_hash_load_offload (load, bytes, *now_ns);
        *now_ns += (uint64_t) gap_ns;
    }
    return jobs? (double) pooled / (double) jobs: 0;
}

int
kvt_hash_load_test (bool verbose)
{
    //  @selftest
    kvt_hash_load_t load;
    kvt_hash_load_init (&load);
    uint64_t now = 1000;
    //  A 2 GB/s disk of 64 KiB blocks at the seed cost (10 GB/s): a fifth
    //  of the thread, inline throughout
    double pooled = s_feed (&load, &now, 2.0, 65536, 0.2);
    assert (pooled == 0 && !load.offload);
    assert (load.last_share > 0.15 && load.last_share < 0.25);
    //  A 12 GB/s array: more than the thread has, so the pool, from the
    //  window after the first one that saw it
    pooled = s_feed (&load, &now, 12.0, 2 << 20, 0.2);
    assert (load.offload && pooled > 0.8);
    //  4 GB/s: a share of 0.4, between the bounds: the pool stays
    pooled = s_feed (&load, &now, 4.0, 2 << 20, 0.2);
    assert (load.offload && pooled == 1.0);
    //  Back to 1 GB/s: inline again
    pooled = s_feed (&load, &now, 1.0, 65536, 0.2);
    assert (!load.offload && pooled < 0.2);
    //  4 GB/s from inline: the hysteresis holds it inline
    pooled = s_feed (&load, &now, 4.0, 65536, 0.2);
    assert (!load.offload && pooled == 0);
    //  The cost follows measurements: hashing measured at 2 GB/s (0.5 ns
    //  a byte) makes the same 4 GB/s two threads' worth: the pool
    for (int i = 0; i < 64; i++)
        kvt_hash_load_measured (&load, 65536, 65536 / 2);
    assert (load.ns_per_byte > 0.45 && load.ns_per_byte < 0.55);
    kvt_hash_load_measured (&load, 100, 1000000);      //  Too short: ignored
    assert (load.ns_per_byte > 0.45 && load.ns_per_byte < 0.55);
    pooled = s_feed (&load, &now, 4.0, 65536, 0.2);
    assert (load.offload && pooled > 0.8);
    //  An idle gap longer than a window: the next job closes a window
    //  whose share is small, and goes inline
    now += 1000ull * 1000 * 1000;
    assert (!kvt_hash_load_offload (&load, 65536, now));
    //  The clock moves forward
    uint64_t a = kvt_hash_load_now_ns (), b = kvt_hash_load_now_ns ();
    assert (b >= a && a > 0);
    if (verbose)
        printf ("kvt_hash_load: ns a byte %.3f, last share %.3f\n", load.ns_per_byte,
                load.last_share);
    //  @end
    return 0;
}
