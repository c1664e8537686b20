/*  =========================================================================
    kvt_hash_load - whether the NVMe store hashes a block on its own
    thread or hands it to its checksum pool, from the load it would take

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A checksum job handed to the pool (kvt_nvme_checksum) costs a worker's
    wake-up and a trip back through the store's eventfd before its read is
    answered or its write starts; for a 64 KiB block that is more than the
    hash itself (about 6 us at 10 GB/s). On the H200 host's disk, 64 KiB
    reads through tier_nvme ran at 0.76-0.84 of raw io_uring with a pool of
    four workers and at 0.94-1.06 hashing inline (session 28,
    tools/bench/RESULTS.md). The pool pays only where hashing every block
    inline would keep the store's thread busy: a striped array faster than
    one core's xxh3.
    So the store asks this class before each read's check (a write's hash
    goes to the pool whenever there is one: nobody waits for it, and
    inline it holds the thread while completions queue; see s_to_pool in
    kvt_nvme_io.c). It counts the bytes to hash over windows of
    KVT_HASH_LOAD_WINDOW_NS and prices them at the measured cost of inline
    hashing (ns a byte, a moving average, seeded at 10 GB/s): the share of
    one thread that hashing everything inline would take. Above KVT_HASH_LOAD_OFFLOAD_ABOVE the next window's jobs go
    to the pool; below KVT_HASH_LOAD_INLINE_BELOW they come back inline;
    between, the last choice holds (so the rule does not flip on noise).
    The demand counts every read's job, pooled or not, so offloading does
    not lower the figure that chose it.
    Embedded in the store (the struct is public for that); one thread.
@end
*/

#ifndef KVT_HASH_LOAD_H_INCLUDED
#define KVT_HASH_LOAD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_HASH_LOAD_WINDOW_NS      (20 * 1000 * 1000)     //  20 ms
#define KVT_HASH_LOAD_OFFLOAD_ABOVE  0.5                    //  Of one thread's time
#define KVT_HASH_LOAD_INLINE_BELOW   0.25
#define KVT_HASH_LOAD_SEED_NS_PER_BYTE 0.1                  //  10 GB/s until measured

typedef struct {
    uint64_t window_start_ns;       //  Start of the current window (0: none yet)
    uint64_t window_bytes;          //  Bytes asked for in it
    double ns_per_byte;             //  Inline hashing cost, moving average
    bool offload;                   //  This window's choice
    double last_share;              //  The last closed window's share (for stats)
} kvt_hash_load_t;

//  Start with inline hashing and the seed cost.
void
    kvt_hash_load_init (kvt_hash_load_t *self);

//  A job of 'bytes' is to be hashed at 'now_ns' (a monotonic clock): true
//  if it goes to the pool. Closes the window when it has run its length.
bool
    kvt_hash_load_offload (kvt_hash_load_t *self, size_t bytes, uint64_t now_ns);

//  An inline hash of 'bytes' took 'ns': update the cost a byte.
void
    kvt_hash_load_measured (kvt_hash_load_t *self, size_t bytes, uint64_t ns);

//  CLOCK_MONOTONIC in ns.
uint64_t
    kvt_hash_load_now_ns (void);

//  Selftest
int
    kvt_hash_load_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
