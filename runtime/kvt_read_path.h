/*  =========================================================================
    kvt_read_path - which way tier_nvme's reads are faster on the disk at
    hand, direct into the host arena or through the store's staging,
    learned while the disk is busy

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A block read can land straight in its host slot (direct: the payload
    alone, one DMA into the arena) or come through the store's huge-page
    staging (bounce: header and payload in one read, then a copy and the
    check). Which is faster depends on the disk, not on us. On the H200
    machine's virtio disk 64 KiB reads went 0.89-0.99 of raw direct and
    0.99-1.15 bounce, 2 MiB reads the other way (0.99-1.05 vs 0.96-0.97);
    on the 2-core VM's disk bounce also led at 64 KiB (tools/bench/
    RESULTS.md, sessions 22-29: a whole slot reads without a 4 KiB hole,
    and lands in a few hot buffers instead of across the arena). On a fast
    NVMe drive the bounce copy would take the store's one thread. No rule
    of sizes fits every disk, so tier_nvme measures both.
    How: while reads are queued beyond the device's depth (the disk, not
    the demand, sets the pace), a round times one span of reads on each
    path, adjacent in time so the disk's drift cancels, the order
    alternating from round to round. A span skips the completions of reads
    the other path had in flight, then times KVT_READ_PATH_SPAN_DEPTHS x
    queue depth completions of its own. The log of the ratio (other path's
    bytes a second over the chosen one's) is kept for the last
    KVT_READ_PATH_HISTORY rounds; the choice switches when their mean says
    the other path is faster by more than KVT_READ_PATH_MARGIN, and by more
    than KVT_READ_PATH_CONFIDENCE standard errors of that mean (a virtual
    disk's rate moves 10-20% from one span to the next: one round decides
    nothing there). A round starts only while reads queue, and is called
    off (reads back on the chosen path) when demand falls below the queue:
    a workload that never fills the queue reads one way and learns
    nothing. The first rounds run back to back until the chosen path
    leads by the same test (or KVT_READ_PATH_HISTORY rounds are in); later
    ones after KVT_READ_PATH_REST spans' worth of reads on the chosen path
    (four times that where it leads by four margins), so a disk that
    changes is followed while a small share of reads tries the slower path
    (about 1 in 15, or 1 in 50 where the gap is wide).
    Plain C, no clock of its own (the caller passes it): the selftest
    drives it with synthetic disks. Embedded in tier_nvme; one thread.
@end
*/

#ifndef KVT_READ_PATH_H_INCLUDED
#define KVT_READ_PATH_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_READ_PATH_DIRECT 0
#define KVT_READ_PATH_BOUNCE 1

#define KVT_READ_PATH_SPAN_DEPTHS 4     //  A span times 4 x queue depth completions
#define KVT_READ_PATH_HISTORY 8         //  Rounds the choice weighs
#define KVT_READ_PATH_MIN_ROUNDS 4      //  ...at least
#define KVT_READ_PATH_MARGIN 0.03       //  Switch when the other path is 3% faster
#define KVT_READ_PATH_CONFIDENCE 2.0    //  ...by this many standard errors
#define KVT_READ_PATH_REST 16           //  Spans on the chosen path between rounds
#define KVT_READ_PATH_REST_CLEAR 64     //  ...where it leads by 4 margins

typedef struct {
    int chosen;                     //  The path believed faster
    int path;                       //  The path the next read takes
    int span_reads;                 //  Completions a span times
    //  The round in progress (measuring: false between rounds)
    bool measuring;
    int span;                       //  0 or 1: which of the round's two spans
    bool chosen_first;              //  This round's order
    bool timing;                    //  The span's first own completion has come
    int64_t start_us;               //  ...at this time
    uint64_t bytes;                 //  Bytes completed since it
    int reads;                      //  Own completions since it
    double rate [2];                //  Bytes/us of the round's spans, by path
    //  Between rounds: completions left before the next one
    int rest_reads;
    //  What was learned
    double history [KVT_READ_PATH_HISTORY];     //  log (other rate / chosen rate) of the
                                    //  last rounds, oldest overwritten
    int history_count;              //  Entries in history
    double log_ratio;               //  Their mean
    int rounds;                     //  Rounds completed
    uint64_t switches;              //  Times the choice changed
    uint64_t void_spans;            //  Rounds called off mid-span (demand fell below the queue)
} kvt_read_path_t;

//  Start on 'prior' (KVT_READ_PATH_DIRECT or _BOUNCE: the guess from the
//  arena's pages) for a store keeping 'queue_depth' reads at the device.
void
    kvt_read_path_init (kvt_read_path_t *self, int prior, int queue_depth);

//  A read taken by 'path' completed with 'bytes' at 'now_us'; 'saturated'
//  says reads were still waiting for room at the device. Moves the rounds
//  on; self->path then says which path the next read takes.
void
    kvt_read_path_done (kvt_read_path_t *self, int path, uint64_t bytes, int64_t now_us,
                        bool saturated);

//  Selftest
int
    kvt_read_path_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
