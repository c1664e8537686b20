/*  =========================================================================
    kvt_bench_nvme - `kvtier bench nvme`: the NVMe block store beside raw
    io_uring O_DIRECT on the same files, in the same run

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    For each block size (default 64 KiB, 512 KiB, 2 MiB) writes and reads
    --mib MiB (default 1024) as whole blocks through kvt_nvme_store -
    headers, xxh3 checksums, journal and all - on both payload paths:
    direct (caller memory registered with the store) and bounce (caller
    memory copied through the store's staging buffers). The baseline is
    raw io_uring on the same data files at the same payload offsets with
    the same queue depth, registered file and buffer, O_DIRECT, no
    checksum, into buffers on huge pages where THP is on (one DMA segment
    a block: the disk's best path; a note pages_<size> says which pages
    each side had and how tier_nvme/direct = auto would read; the figures
    store_<write|read>_<size>_auto_gbps are the path it takes). The store
    is driven as tier_nvme drives it: the same depth at the device as
    raw, with room beyond it for completions being checked or reaped
    (KVT_NVME_COMPLETION_SLACK), so a read's checksum delays its own
    hand-back, not the next read's start. Each figure is
    the median of --reps runs (default 3), runs interleaved so drift hits
    both alike; a note per size gives the median of each rep's store/raw
    ratio as well (paired_<size>), and raw's own A/A ratio (raw_aa_<size>):
    raw run a second time in each rep, in its own turn, over the first.
    That is the noise floor of a paired ratio on the disk at hand: on a
    disk whose speed moves within a rep, store/raw is read against it.
    GB/s = 1e9 payload bytes/s.
    Also: xxh3-64 GB/s on one core beside memcpy GB/s on one core (64 MiB
    buffers, out of cache), and the store's checksum pool
    (kvt_nvme_checksum) on 1..--threads workers (default: the online
    cores, at least 2) beside memcpy on as many threads, over 256 MiB
    handed out as 1 MiB jobs; and store writes with sync_on_ack on, group
    commit beside one sync per write (O_DSYNC data files, the old way),
    same files, --sync-mib MiB (default 256) of --sync-size blocks
    (default 64k), --sync-qd in flight (default 64), direct path, median
    of --reps, with the flushes each asked for.
    With --recover N: writes N blocks of 4 KiB, closes, reopens, and
    reports the time open takes to rebuild the index (budget: 5 s for 1M),
    beside a raw sequential read of the journal file.
    --hugepages puts the buffers the store's direct path moves (the "host
    arena") on transparent huge pages, as tier_host's arena is when the
    actors run as threads (private memory), where huge pages are reserved,
    and (since session 27) when an actor process's memfd arena could be
    collapsed onto 2 MiB pages (kvt_arena_collapse: Linux 6.1 and later);
    by default they are 4 KiB pages, as that memfd arena is where the
    kernel cannot collapse it.
    Usage: kvtier bench nvme [--dir DIR] [--mib N] [--qd N] [--reps N] [--hugepages]
           [--sizes 64k,512k,2m] [--files N] [--sync] [--recover N]
           [--threads N] [--sync-mib N] [--sync-size S] [--sync-qd N]
           [--checksum-threads N] [--split-writes] [--only WHAT]
           [--verbose] [--json]
    --split-writes sends the store's direct writes as two I/Os, header
    then payload (tier_nvme/split_writes), instead of one vectored I/O.
    Reads are also set beside raw reads that hash each block as it lands
    (checked_<size>: what a checked read cannot do without); on the
    2-core VM's disk, touching freshly read memory is what sends reads
    into the slow streaks the store's reads alone seemed to have.
    --only checksum|sync|groups|sizes runs that part alone (with the
    one-core hash figures). groups: 2 MiB blocks read in 4 layer groups,
    group-major (a stream promotion's order), beside whole-block reads.
    --checksum-threads sets the stores' checksum_threads (default 0, auto:
    a pool from 8 cores, handed jobs only while hashing inline would take
    over half of the store's thread; a note checksums_<size> says where
    they ran).
    DIR defaults to a new temp dir under /var/tmp (removed at the end; in
    a given DIR, the bench's subdirectories are removed after use); a
    file system that refuses O_DIRECT (tmpfs) falls back to buffered I/O
    with a warning, and the figures say so.
@end
*/

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "kvt_xxh.h"
#include "kvt_bench.h"
#include "kvt_error.h"
#include "kvt_log.h"
#include "kvt_huge.h"
#include "kvt_util.h"
#include "kvt_nvme_store.h"
#include "kvt_nvme_checksum.h"
#include "kvt_bench_nvme_int.h"
#include "kvt_bench_diskstat.h"

#define S_MAX_SIZES 8               //  Block sizes per run
#define S_MAX_QD 1024               //  Largest --qd (the store holds 3x as many ops, at most 4096)
#define S_MAX_FILES 64              //  Data files the raw baseline opens


double
kvt_bench_nvme_seconds (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

double
kvt_bench_nvme_median (double *values, int count)
{
    return kvt_bench_median (values, count > 0? (size_t) count: 0);
}

void
kvt_bench_nvme_fill (uint8_t *buf, size_t bytes, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy (buf + i, &x, 8);
    }
}

//  Whether the buffers I/O lands in are on huge pages (--hugepages)
static bool s_hugepages;

//  "0.97" of 'bytes' from kvt_huge_large_bytes' answer, or "unknown" (a
//  static buffer: one call per argument list)
static const char *
s_share (size_t large, size_t bytes)
{
    static char texts [4][16];
    static int next;
    char *text = texts [next++ % 4];
    if (large == SIZE_MAX || bytes == 0)
        snprintf (text, 16, "unknown");
    else
        snprintf (text, 16, "%.2f", (double) large / (double) bytes);
    return text;
}

void *
kvt_bench_nvme_map (size_t bytes)
{
    void *p = s_hugepages? kvt_huge_alloc (bytes, true)
                         : mmap (NULL, bytes, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (!p || p == MAP_FAILED) {
        fprintf (stderr, "kvtier bench nvme: cannot map %zu bytes\n", bytes);
        exit (1);
    }
    return p;
}

void
kvt_bench_nvme_unmap (void *p, size_t bytes)
{
    if (s_hugepages)
        kvt_huge_free (p, bytes);
    else
        munmap (p, bytes);
}

//  Remove what a bench made under the directory (its data files are big).
void
kvt_bench_nvme_remove_tree (const char *path)
{
    char *command = NULL;
    if (asprintf (&command, "rm -rf '%s'", path) > 0) {
        if (system (command) != 0)
            fprintf (stderr, "kvtier bench nvme: could not remove %s\n", path);
        free (command);
    }
}

//  --------------------------------------------------------------------------
//  Raw io_uring baseline: the same files, the same payload offsets

typedef struct {
    struct io_uring ring;           //  Ring with registered files and buffer
    int fds [S_MAX_FILES];          //  Data files, O_DIRECT
    int file_count;                 //  Entries in fds
    uint64_t *offsets;              //  Payload offset per block
    int *file_of;                   //  File index per block
    uint64_t blocks;                //  Blocks per run
} s_raw_t;

static int
s_raw_open (s_raw_t *raw, kvt_nvme_store_t *store, uint64_t blocks, int qd, uint8_t *buf,
            size_t buf_bytes, const kvt_bench_nvme_opts_t *opts)
{
    memset (raw, 0, sizeof (*raw));
    raw->blocks = blocks;
    raw->offsets = (uint64_t *) calloc (blocks, sizeof (uint64_t));
    raw->file_of = (int *) calloc (blocks, sizeof (int));
    char paths [S_MAX_FILES][512];
    for (uint64_t b = 0; b < blocks; b++) {
        char path [512];
        uint64_t offset;
        kvt_nvme_store_slot_location (store, b, path, sizeof (path), &offset);
        int f = 0;
        while (f < raw->file_count && strcmp (paths [f], path) != 0)
            f++;
        if (f == raw->file_count) {
            if (f == S_MAX_FILES)
                return -EMFILE;
            snprintf (paths [f], sizeof (paths [f]), "%s", path);
            int flags = O_RDWR | (opts->buffered? 0: O_DIRECT)
                      | (opts->sync_on_ack? O_DSYNC: 0);
            raw->fds [f] = open (path, flags);
            if (raw->fds [f] < 0)
                return -errno;
            raw->file_count++;
        }
        raw->file_of [b] = f;
        raw->offsets [b] = offset + 4096;
    }
    int rc = io_uring_queue_init ((unsigned) qd * 2, &raw->ring, 0);
    if (rc == 0)
        rc = io_uring_register_files (&raw->ring, raw->fds, (unsigned) raw->file_count);
    struct iovec iov = { buf, buf_bytes };
    if (rc == 0)
        rc = io_uring_register_buffers (&raw->ring, &iov, 1);
    return rc;
}

static void
s_raw_close (s_raw_t *raw)
{
    io_uring_queue_exit (&raw->ring);
    for (int f = 0; f < raw->file_count; f++)
        close (raw->fds [f]);
    free (raw->offsets);
    free (raw->file_of);
}

//  Where the checked raw reads' hashes go, so that they are computed
static volatile uint64_t s_raw_sink;

//  Move every block once; qd in flight; returns GB/s of payload. With
//  'check', each block read is hashed (xxh3) as it lands, as a checked
//  read must read it, and each block written is hashed just before it is
//  submitted, as a write whose header carries the checksum must.
static double
s_raw_run (s_raw_t *raw, bool write, uint8_t *buf, size_t block_bytes, int qd, bool check)
{
    uint64_t sum = 0;
    uint64_t next = 0, done = 0;
    int inflight = 0;
    int free_bufs [S_MAX_QD];       //  Buffer of each I/O in flight is its own
    int free_count = qd;
    for (int i = 0; i < qd; i++)
        free_bufs [i] = i;
    double start = kvt_bench_nvme_seconds ();
    while (done < raw->blocks) {
        size_t batch_bytes = 0;
        while (inflight < qd && next < raw->blocks) {
            struct io_uring_sqe *sqe = io_uring_get_sqe (&raw->ring);
            int buf_index = free_bufs [--free_count];
            uint8_t *addr = buf + (size_t) buf_index * block_bytes;
            if (write && check)
                sum ^= XXH3_64bits (addr, block_bytes);
            if (write)
                io_uring_prep_write_fixed (sqe, raw->file_of [next], addr,
                                           (unsigned) block_bytes, raw->offsets [next], 0);
            else
                io_uring_prep_read_fixed (sqe, raw->file_of [next], addr,
                                          (unsigned) block_bytes, raw->offsets [next], 0);
            sqe->flags |= IOSQE_FIXED_FILE;
            io_uring_sqe_set_data64 (sqe, (uint64_t) buf_index);
            next++;
            inflight++;
            batch_bytes += block_bytes;
            if (batch_bytes >= KVT_BENCH_NVME_SUBMIT_BYTES) {
                io_uring_submit (&raw->ring);
                batch_bytes = 0;
            }
        }
        io_uring_submit (&raw->ring);
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe (&raw->ring, &cqe) != 0)
            continue;
        while (io_uring_peek_cqe (&raw->ring, &cqe) == 0 && cqe) {
            if (cqe->res != (int) block_bytes) {
                fprintf (stderr, "kvtier bench nvme: raw %s: %s\n", write? "write": "read",
                         cqe->res < 0? strerror (-cqe->res): "short transfer");
                exit (1);
            }
            int landed = (int) io_uring_cqe_get_data64 (cqe);
            if (check && !write)
                sum ^= XXH3_64bits (buf + (size_t) landed * block_bytes, block_bytes);
            free_bufs [free_count++] = landed;
            io_uring_cqe_seen (&raw->ring, cqe);
            inflight--;
            done++;
        }
    }
    double seconds = kvt_bench_nvme_seconds () - start;
    s_raw_sink ^= sum;
    return (double) raw->blocks * (double) block_bytes / seconds / 1e9;
}

static void
s_bench_size (kvt_bench_report_t *report, kvt_bench_nvme_opts_t *opts, size_t block_bytes)
{
    char dir [1024];
    snprintf (dir, sizeof (dir), "%s/bs-%zu", opts->dir, block_bytes);
    mkdir (dir, 0755);
    uint64_t blocks = opts->data_bytes / block_bytes;
    if (blocks < (uint64_t) opts->qd)
        blocks = (uint64_t) opts->qd;
    int qd = opts->qd;
    size_t set_bytes = (size_t) kvt_bench_nvme_store_ops (qd) * block_bytes;
    uint8_t *registered = (uint8_t *) kvt_bench_nvme_map (set_bytes);    //  "Host arena", registered
    uint8_t *plain = (uint8_t *) kvt_bench_nvme_map (set_bytes);         //  Not registered: bounce path
    for (int i = 0; i < kvt_bench_nvme_store_ops (qd); i++) {
        kvt_bench_nvme_fill (registered + (size_t) i * block_bytes, block_bytes, (uint64_t) i + 1);
        memcpy (plain + (size_t) i * block_bytes, registered + (size_t) i * block_bytes,
                block_bytes);
    }
    kvt_nvme_store_t *store = kvt_bench_nvme_store_open (opts, dir, block_bytes, blocks, qd,
                                                         registered, set_bytes);
    //  The raw baseline is the disk's best path: its buffers are on huge
    //  pages (where THP is on), so that each block is one DMA segment. On
    //  4 KiB pages a block is a segment per page, or fewer where pages
    //  happen to lie next to each other: the two virtual disks measured
    //  read 1.6-2.3x faster into huge pages, and two 4 KiB buffers moved
    //  apart by 10-20% with their physical layout (session 26's A/A runs).
    //  The store's direct path reads the arena stand-in as given
    //  (--hugepages or not), which is what tier_nvme/direct weighs.
    uint8_t *raw_buf = (uint8_t *) kvt_huge_alloc (set_bytes, true);
    if (!raw_buf) {
        fprintf (stderr, "kvtier bench nvme: cannot map %zu bytes\n", set_bytes);
        exit (1);
    }
    //  First pass allocates the blocks on disk, outside the timings
    kvt_bench_nvme_store_run (store, blocks, true, plain, block_bytes, qd);
    s_raw_t raw;
    int rc = s_raw_open (&raw, store, blocks, qd, raw_buf, set_bytes, opts);
    if (rc) {
        fprintf (stderr, "kvtier bench nvme: raw setup: %s\n", strerror (-rc));
        exit (1);
    }
    int reps = opts->reps;
    //  v [d * 3 + who] for d = 0 writes, 1 reads; who = 0 raw, 1 store
    //  direct, 2 store bounce; v [6 + d]: raw again (the A/A control);
    //  v [8]: raw reads that hash each block (checked); v [9]: raw writes
    //  that hash each block before submitting it (checked)
    double *v [10];
    for (int i = 0; i < 10; i++)
        v [i] = (double *) calloc ((size_t) reps, sizeof (double));
    //  --verbose: what the disk was asked to do for each contender, summed
    //  over the reps (requests, their size, time at the device, busy)
    kvt_bench_diskstat_t disk [10], before, after;
    for (int i = 0; i < 10; i++)
        disk [i] = (kvt_bench_diskstat_t) { .known = opts->verbose };
    const char *disk_dir = opts->verbose? dir: NULL;
    for (int rep = 0; rep < reps; rep++) {
        //  Writes, then reads; within each, the five contenders (3 = raw
        //  again, 4 = raw writes that hash each block first, as a write
        //  whose header carries its checksum must) in an order that
        //  rotates every rep so drift of the device does not favour one. A
        //  raw write clobbers the store's blocks, so the last write of each
        //  rep is a store write; over four reps the two plain raw runs take
        //  the same positions
        static const int write_orders [4][5] = {
            { 0, 3, 4, 1, 2 }, { 4, 3, 0, 2, 1 }, { 2, 0, 4, 3, 1 }, { 1, 3, 0, 4, 2 }
        };
        for (int k = 0; k < 5; k++) {
            int who = write_orders [rep % 4][k];
            int series = who == 4? 9: who == 3? 6: who;
            double *slot = &v [series][rep];
            kvt_bench_diskstat_read (disk_dir, &before);
            if (who == 0 || who >= 3)
                *slot = s_raw_run (&raw, true, raw_buf, block_bytes, qd, who == 4);
            else
                *slot = kvt_bench_nvme_store_run (store, blocks, true,
                                                  who == 1? registered: plain, block_bytes, qd);
            kvt_bench_diskstat_read (disk_dir, &after);
            kvt_bench_diskstat_add (&disk [series], &before, &after);
        }
        //  Reads: the same four, and raw reads that hash each block as it
        //  lands (4: what a checked read cannot do without), rotating
        for (int k = 0; k < 5; k++) {
            int who = (rep + k) % 5;
            int series = who == 4? 8: who == 3? 7: 3 + who;
            kvt_bench_diskstat_read (disk_dir, &before);
            if (who == 0 || who >= 3)
                v [series][rep] = s_raw_run (&raw, false, raw_buf, block_bytes, qd, who == 4);
            else
                v [series][rep] = kvt_bench_nvme_store_run (store, blocks, false,
                                                            who == 1? registered: plain,
                                                            block_bytes, qd);
            kvt_bench_diskstat_read (disk_dir, &after);
            kvt_bench_diskstat_add (&disk [series], &before, &after);
        }
    }
    if (opts->verbose) {
        const char *names [10] = { "raw write", "direct write", "bounce write",
                                   "raw read", "direct read", "bounce read",
                                   "raw write 2", "raw read 2", "raw checked",
                                   "raw chk write" };
        for (int i = 0; i < 10; i++) {
            fprintf (stderr, "# %zu KiB %-12s", block_bytes >> 10, names [i]);
            for (int rep = 0; rep < reps; rep++)
                fprintf (stderr, " %6.3f", v [i][rep]);
            fprintf (stderr, " GB/s\n");
        }
        const kvt_bench_diskstat_t zero = { .known = true };
        for (int i = 0; i < 10; i++) {
            char phase [48];
            snprintf (phase, sizeof (phase), "%zuK %s", block_bytes >> 10, names [i]);
            kvt_bench_diskstat_print (phase, &zero, &disk [i]);
        }
    }
    double m [6];
    for (int i = 0; i < 6; i++)
        m [i] = kvt_bench_nvme_median (v [i], reps);
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    if (stats.checksum_failures || stats.misses || stats.io_errors) {
        fprintf (stderr, "kvtier bench nvme: %" PRIu64 " checksum failures, %" PRIu64
                 " misses, %" PRIu64 " I/O errors\n", stats.checksum_failures, stats.misses,
                 stats.io_errors);
        exit (1);
    }
    char size_name [32], figure [96], base [96];
    if (block_bytes % (1 << 20) == 0)
        snprintf (size_name, sizeof (size_name), "%zum", block_bytes >> 20);
    else
        snprintf (size_name, sizeof (size_name), "%zuk", block_bytes >> 10);
    //  What tier_nvme does with an arena on these pages (tier_nvme/direct =
    //  auto): writes direct, reads direct only into 2 MiB pages
    const bool thp = kvt_huge_thp_enabled ();
    const bool direct_reads = kvt_nvme_direct_reads ("auto", s_hugepages && thp, thp) == 1;
    const char *what [2] = { "write", "read" };
    for (int dir_i = 0; dir_i < 2; dir_i++) {
        double baseline = m [dir_i * 3];
        snprintf (base, sizeof (base), "raw_uring_%s_%s_gbps", what [dir_i], size_name);
        snprintf (figure, sizeof (figure), "store_%s_%s_direct_gbps", what [dir_i], size_name);
        kvt_bench_report_add (report, figure, m [dir_i * 3 + 1], "GB/s", base, baseline);
        snprintf (figure, sizeof (figure), "store_%s_%s_bounce_gbps", what [dir_i], size_name);
        kvt_bench_report_add (report, figure, m [dir_i * 3 + 2], "GB/s", base, baseline);
        bool direct = dir_i == 0 || direct_reads;
        snprintf (figure, sizeof (figure), "store_%s_%s_auto_gbps", what [dir_i], size_name);
        kvt_bench_report_add (report, figure, m [dir_i * 3 + (direct? 1: 2)], "GB/s", base,
                              baseline);
    }
    //  Paired: each rep's store run over the raw run beside it in time, so
    //  that a disk whose speed drifts between reps (a virtual one does)
    //  moves both sides of each ratio
    //  Ratio p is v [over [p]] / v [under [p]]: direct and bounce writes,
    //  direct and bounce reads, then raw again over raw (the A/A control),
    //  then direct and bounce reads over raw reads that hash each block as
    //  it lands, and those over raw: the least a checked read does (on the
    //  2-core VM's disk, touching freshly read memory puts raw reads into
    //  the same 0.55-0.65x streaks the store's reads showed, session 30);
    //  the same three for writes, over raw writes that hash each block
    //  just before submitting it
    static const int over [12] = { 1, 2, 4, 5, 6, 7, 4, 5, 8, 1, 2, 9 };
    static const int under [12] = { 0, 0, 3, 3, 0, 3, 8, 8, 3, 9, 9, 0 };
    double paired [12];
    double *ratios = (double *) calloc ((size_t) reps, sizeof (double));
    for (int p = 0; p < 12; p++) {
        for (int rep = 0; rep < reps; rep++)
            ratios [rep] = v [over [p]][rep] / v [under [p]][rep];
        paired [p] = kvt_bench_nvme_median (ratios, reps);
    }
    free (ratios);
    char note [384], key [48];
    snprintf (key, sizeof (key), "paired_%s", size_name);
    snprintf (note, sizeof (note), "median over reps of store / raw in the same rep: write "
              "direct %.3f, bounce %.3f; read direct %.3f, bounce %.3f", paired [0],
              paired [1], paired [2], paired [3]);
    kvt_bench_report_note (report, key, note);
    snprintf (key, sizeof (key), "checked_%s", size_name);
    snprintf (note, sizeof (note), "median over reps of store reads / raw reads that hash each "
              "block as it lands, in the same rep: direct %.3f, bounce %.3f (raw checked / raw "
              "%.3f); store writes / raw writes that hash each block first: direct %.3f, "
              "bounce %.3f (raw checked / raw %.3f)", paired [6], paired [7], paired [8],
              paired [9], paired [10], paired [11]);
    kvt_bench_report_note (report, key, note);
    snprintf (key, sizeof (key), "raw_aa_%s", size_name);
    snprintf (note, sizeof (note), "median over reps of raw's second run / its first (A/A, "
              "the paired ratios' noise floor): write %.3f, read %.3f", paired [4], paired [5]);
    kvt_bench_report_note (report, key, note);
    //  How far the disk itself moved over the reps: where raw's own rate
    //  spans tens of percent (the H200 machine's disk, session 24), one
    //  run's ratios carry that noise, and more reps are needed
    double low [2], high [2];
    for (int d = 0; d < 2; d++) {
        low [d] = high [d] = v [d * 3][0];
        for (int rep = 0; rep < reps; rep++)
            for (int run = 0; run < 2; run++) {
                double x = run == 0? v [d * 3][rep]: v [6 + d][rep];
                low [d] = fmin (low [d], x);
                high [d] = fmax (high [d], x);
            }
    }
    snprintf (key, sizeof (key), "pages_%s", size_name);
    snprintf (note, sizeof (note), "raw into %s pages, direct into the arena's %s pages; "
              "tier_nvme/direct = auto starts reading it %s (the auto figures; "
              "it then keeps whichever way the disk serves faster, kvt_read_path)",
              thp? "2 MiB": "4 KiB", s_hugepages && thp? "2 MiB": "4 KiB",
              direct_reads? "direct": "by bounce");
    kvt_bench_report_note (report, key, note);
    //  What the hints got: a fault falls back to 4 KiB pages where memory
    //  is fragmented, and a virtual disk then takes a segment a page
    snprintf (key, sizeof (key), "large_pages_%s", size_name);
    snprintf (note, sizeof (note), "share on 2 MiB pages now: raw buffer %s, arena %s, "
              "store staging %s", s_share (kvt_huge_large_bytes (raw_buf, set_bytes), set_bytes),
              s_share (kvt_huge_large_bytes (registered, set_bytes), set_bytes),
              s_share (stats.staging_large_bytes == UINT64_MAX? SIZE_MAX
                                                              : stats.staging_large_bytes,
                       stats.staging_bytes));
    kvt_bench_report_note (report, key, note);
    snprintf (key, sizeof (key), "raw_spread_%s", size_name);
    snprintf (note, sizeof (note), "raw io_uring over the %d reps (both runs): write %.2f-%.2f GB/s, read "
              "%.2f-%.2f GB/s", reps, low [0], high [0], low [1], high [1]);
    kvt_bench_report_note (report, key, note);
    //  Where the store's checksums ran (checksum_threads auto hands jobs
    //  to its pool only under load: kvt_hash_load)
    snprintf (key, sizeof (key), "checksums_%s", size_name);
    snprintf (note, sizeof (note), "%" PRIu64 " on the store's thread, %" PRIu64
              " through its pool", stats.checksum_inline, stats.checksum_jobs);
    kvt_bench_report_note (report, key, note);
    s_raw_close (&raw);
    kvt_nvme_store_destroy (&store);
    for (int i = 0; i < 10; i++)
        free (v [i]);
    kvt_bench_nvme_unmap (registered, set_bytes);
    kvt_bench_nvme_unmap (plain, set_bytes);
    kvt_huge_free (raw_buf, set_bytes);
    kvt_bench_nvme_remove_tree (dir);
}

static size_t
s_parse_size (const char *text)
{
    char *end;
    double value = strtod (text, &end);
    if (*end == 'k' || *end == 'K')
        value *= 1024;
    else
    if (*end == 'm' || *end == 'M')
        value *= 1024 * 1024;
    return (size_t) value;
}

int
kvt_bench_nvme_main (int argc, char **argv)
{
    long cores = sysconf (_SC_NPROCESSORS_ONLN);
    kvt_bench_nvme_opts_t opts = {
        .dir = NULL, .data_bytes = 1024ull << 20, .qd = 32, .reps = 3, .files_per_dir = 4,
        .threads = cores > 2? (cores > KVT_BENCH_NVME_MAX_THREADS? KVT_BENCH_NVME_MAX_THREADS: (int) cores): 2,
        .sync_bytes = 256u << 20, .sync_block_bytes = 64u << 10, .sync_qd = 64
    };
    size_t sizes [S_MAX_SIZES] = { 64 << 10, 512 << 10, 2 << 20 };
    int size_count = 3;
    uint64_t recover = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv [i];
        const char *value = i + 1 < argc? argv [i + 1]: NULL;
        if (strcmp (arg, "--json") == 0)
            opts.json = true;
        else
        if (strcmp (arg, "--sync") == 0)
            opts.sync_on_ack = true;
        else
        if (strcmp (arg, "--verbose") == 0 || strcmp (arg, "-v") == 0)
            opts.verbose = true;
        else
        if (strcmp (arg, "--hugepages") == 0)
            s_hugepages = true;
        else
        if (strcmp (arg, "--split-writes") == 0)
            opts.split_writes = true;
        else
        if (strcmp (arg, "--dir") == 0 && value)
            opts.dir = argv [++i];
        else
        if (strcmp (arg, "--mib") == 0 && value)
            opts.data_bytes = (size_t) atol (argv [++i]) << 20;
        else
        if (strcmp (arg, "--qd") == 0 && value)
            opts.qd = atoi (argv [++i]);
        else
        if (strcmp (arg, "--reps") == 0 && value)
            opts.reps = atoi (argv [++i]);
        else
        if (strcmp (arg, "--files") == 0 && value)
            opts.files_per_dir = atoi (argv [++i]);
        else
        if (strcmp (arg, "--recover") == 0 && value)
            recover = strtoull (argv [++i], NULL, 10);
        else
        if (strcmp (arg, "--threads") == 0 && value)
            opts.threads = atoi (argv [++i]);
        else
        if (strcmp (arg, "--sync-mib") == 0 && value)
            opts.sync_bytes = (size_t) atol (argv [++i]) << 20;
        else
        if (strcmp (arg, "--sync-size") == 0 && value)
            opts.sync_block_bytes = s_parse_size (argv [++i]);
        else
        if (strcmp (arg, "--sync-qd") == 0 && value)
            opts.sync_qd = atoi (argv [++i]);
        else
        if (strcmp (arg, "--checksum-threads") == 0 && value)
            opts.checksum_threads = atoi (argv [++i]);
        else
        if (strcmp (arg, "--only") == 0 && value)
            opts.only = argv [++i];
        else
        if (strcmp (arg, "--sizes") == 0 && value) {
            char *list = strdup (argv [++i]);
            size_count = 0;
            for (char *tok = strtok (list, ","); tok && size_count < S_MAX_SIZES;
                 tok = strtok (NULL, ","))
                sizes [size_count++] = s_parse_size (tok);
            free (list);
        }
        else {
            fprintf (stderr, "usage: kvtier bench nvme [--dir DIR] [--mib N] [--qd N] "
                     "[--reps N] [--sizes 64k,512k,2m] [--files N] [--sync] "
                     "[--recover N] [--threads N] [--sync-mib N] [--sync-size S] [--sync-qd N] "
                     "[--checksum-threads N] [--hugepages] [--split-writes] "
                     "[--only checksum|sync|groups|sizes] [--verbose] [--json]\n");
            return 2;
        }
    }
    if (opts.qd < 1 || opts.qd > S_MAX_QD || opts.reps < 1 || opts.files_per_dir < 1
    ||  opts.data_bytes == 0 || opts.threads < 1 || opts.threads > KVT_BENCH_NVME_MAX_THREADS
    ||  opts.sync_bytes == 0 || opts.sync_block_bytes == 0 || opts.sync_block_bytes % 4096
    ||  opts.sync_qd < 1 || opts.sync_qd > S_MAX_QD) {
        fprintf (stderr, "kvtier bench nvme: --qd and --sync-qd (1..1024), --reps, --files, --mib, "
                 "--sync-mib and --threads (1..64) must be >= 1, --sync-size a multiple "
                 "of 4096\n");
        return 2;
    }
    if (!getenv ("KVT_LOG_LEVEL"))
        kvt_log_set_level (KVT_LOG_WARN);
    char template_path [] = "/var/tmp/kvt-bench-nvme-XXXXXX";
    char *made = NULL;
    if (!opts.dir) {
        made = mkdtemp (template_path);
        if (!made) {
            fprintf (stderr, "kvtier bench nvme: cannot create a dir under /var/tmp: %s\n",
                     strerror (errno));
            return 1;
        }
        opts.dir = made;
    }
    kvt_bench_report_t *report = kvt_bench_report_new ("nvme", opts.json);
    char note [256];
    kvt_bench_report_note (report, "dir", opts.dir);
    snprintf (note, sizeof (note), "%zu MiB per run, queue depth %d, %d files, median of %d, "
              "sync_on_ack %s, checksum_threads %d", opts.data_bytes >> 20, opts.qd,
              opts.files_per_dir, opts.reps, opts.sync_on_ack? "on": "off",
              opts.checksum_threads);
    kvt_bench_report_note (report, "config", note);
    kvt_bench_nvme_hash (report);
    bool all = !opts.only;
    if (all || strcmp (opts.only, "checksum") == 0)
        kvt_bench_nvme_checksum_pool (report, &opts);
    if (recover)
        kvt_bench_nvme_recover (report, &opts, recover);
    else {
        if (all || strcmp (opts.only, "sync") == 0)
            kvt_bench_nvme_sync (report, &opts);
        if (all || strcmp (opts.only, "groups") == 0)
            kvt_bench_nvme_groups (report, &opts);
        for (int i = 0; i < size_count && (all || strcmp (opts.only, "sizes") == 0); i++) {
            if (sizes [i] == 0 || sizes [i] % 4096) {
                fprintf (stderr, "kvtier bench nvme: block size %zu is not a multiple of "
                         "4096; skipped\n", sizes [i]);
                continue;
            }
            s_bench_size (report, &opts, sizes [i]);
        }
    }
    if (opts.buffered)
        kvt_bench_report_note (report, "WARNING", "O_DIRECT refused: figures are buffered I/O");
    kvt_bench_report_finish (&report);
    if (made)
        kvt_bench_nvme_remove_tree (made);
    return 0;
}
