/*  =========================================================================
    test_nvme_crash - kill -9 in the middle of a write storm, then recover

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    For each combination of {bounce, direct (registered buffer)} x
    {sync_on_ack off, on (group commit)} x {early kill, by the child
    itself while a journal compaction is under way; late kill, during
    overwrites} x {checksums on the caller's thread, on 2 pool threads}:
    fork a child that opens a kvt_nvme_store and writes every one of 10k
    slots twice (two versions, random order, queue kept full; then again),
    reporting through a pipe each write it prepares and each write it sees
    acknowledged. Once it has acknowledged enough, the parent sends
    SIGKILL, drains the pipe and reopens the store. Then, slot by slot:
    - an acknowledged block with no later write prepared must be recovered
      with the same hash and read back byte-exact;
    - a recovered block must be a version the child prepared, never older
      than the last one acknowledged; if a newer write was in flight at
      the kill it may read as a miss (torn by the overwrite), never as
      wrong bytes;
    - every read that succeeds is byte-exact.
    Also: the reopened store takes new writes; 20k blocks written and
    reopened come back complete in far under 5 s, and the data files hold
    exactly capacity x stride bytes. Directory: $KVT_TEST_NVME_DIR or
    a temp dir under /var/tmp. Exit 0 pass, 1 fail, 77 skip.
@end
*/

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "kvt_util.h"
#include "nvme_test_util.h"

#define T_CAPACITY   10000          //  Slots; two versions each = 20k journal records
#define T_QD         32             //  Queue depth of the child

typedef struct {
    uint32_t kind;                  //  'P' prepared, 'A' acknowledged
    uint32_t version;               //  1 or 2
    uint64_t slot;                  //  Slot written
} t_event_t;

static uint64_t
t_hash (uint64_t slot, uint32_t version)
{
    return 0xC0DE000000000000ULL | (slot << 8) | version;
}

static void
t_write_all (int fd, const void *buf, size_t bytes)
{
    const uint8_t *p = (const uint8_t *) buf;
    while (bytes > 0) {
        ssize_t rc = write (fd, p, bytes);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            _exit (3);
        p += rc;
        bytes -= (size_t) rc;
    }
}

//  The child: write storm until killed. Never returns.
static void
t_child (const kvt_nvme_store_config_t *config, bool direct, int pipe_fd,
         uint64_t self_kill_after)
{
    char next_path [600];
    snprintf (next_path, sizeof (next_path), "%s/kvt-nvme.journal.next", config->dirs [0]);
    uint64_t acked = 0;
    size_t bytes = config->block_bytes;
    size_t arena_bytes = (size_t) T_QD * bytes;
    uint8_t *arena = (uint8_t *) mmap (NULL, arena_bytes, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED)
        _exit (2);
    kvt_nvme_store_t *store = kvt_nvme_store_new (config);
    if (direct && kvt_nvme_store_register_buffer (store, arena, arena_bytes) != 0)
        _exit (2);
    if (kvt_nvme_store_open (store) != 0)
        _exit (2);
    //  Order: every slot once (version 1) then every slot again (version 2)
    uint64_t *order = (uint64_t *) malloc (2 * T_CAPACITY * sizeof (uint64_t));
    for (uint64_t i = 0; i < T_CAPACITY; i++)
        order [i] = order [T_CAPACITY + i] = i;
    srand (42);
    for (int pass = 0; pass < 2; pass++)
        for (uint64_t i = T_CAPACITY - 1; i > 0; i--) {
            uint64_t j = (uint64_t) rand () % (i + 1);
            uint64_t t = order [pass * T_CAPACITY + i];
            order [pass * T_CAPACITY + i] = order [pass * T_CAPACITY + j];
            order [pass * T_CAPACITY + j] = t;
        }
    uint8_t *versions = (uint8_t *) calloc (T_CAPACITY, 1);
    uint8_t *in_flight = (uint8_t *) calloc (T_CAPACITY, 1);
    int free_buf [T_QD];
    int free_count = T_QD;
    for (int i = 0; i < T_QD; i++)
        free_buf [i] = i;
    uint64_t tag_slot [T_QD];
    uint32_t tag_version [T_QD];
    t_event_t events [T_QD];
    size_t next = 0;
    while (true) {
        int event_count = 0;
        while (free_count > 0 && next < 2 * T_CAPACITY) {
            uint64_t slot = order [next];
            if (in_flight [slot])
                break;              //  Its previous version is still being written
            uint32_t version = versions [slot] + 1u;
            int buf = free_buf [free_count - 1];
            uint8_t *src = arena + (size_t) buf * bytes;
            t_fill (src, bytes, t_hash (slot, version));
            //  Report before the write can reach the disk
            events [event_count++] = (t_event_t) { 'P', version, slot };
            t_write_all (pipe_fd, events, sizeof (t_event_t) * (size_t) event_count);
            event_count = 0;
            int rc = kvt_nvme_prep_write (store, slot, t_hash (slot, version), src,
                                          (uint64_t) buf);
            if (rc != 0)
                _exit (4);
            free_count--;
            tag_slot [buf] = slot;
            tag_version [buf] = version;
            versions [slot] = (uint8_t) version;
            in_flight [slot] = 1;
            next++;
        }
        if (next == 2 * T_CAPACITY && free_count == T_QD)
            next = 0;               //  Start over: keep the storm going until killed
        if (kvt_nvme_submit (store) < 0)
            _exit (5);
        int rc = kvt_nvme_store_wait (store, 1000);
        if (rc != 0 && rc != -ETIME && rc != -EAGAIN)
            _exit (6);
        kvt_nvme_done_t done [T_QD];
        int n = kvt_nvme_reap (store, done, T_QD);
        if (n < 0)
            _exit (7);
        for (int i = 0; i < n; i++) {
            int buf = (int) done [i].tag;
            if (done [i].rc == 0) {
                events [event_count++] = (t_event_t) { 'A', tag_version [buf], tag_slot [buf] };
                acked++;
            }
            free_buf [free_count++] = buf;
            in_flight [tag_slot [buf]] = 0;
        }
        if (event_count)
            t_write_all (pipe_fd, events, sizeof (t_event_t) * (size_t) event_count);
        //  Die in the middle of a journal rotation, once enough is acked
        struct stat st;
        if (self_kill_after && acked >= self_kill_after && stat (next_path, &st) == 0)
            kill (getpid (), SIGKILL);
    }
}

//  One round: storm, kill, recover, check. Returns failures added.
static int
t_round (const char *dir, bool direct, bool sync_on_ack, bool late, int checksum_threads,
         bool verbose)
{
    int failures_before = t_failures;
    char *sub = NULL;
    if (asprintf (&sub, "%s/round-%d%d%d%d", dir, direct, sync_on_ack, late,
                  checksum_threads) < 0)
        return 1;
    if (mkdir (sub, 0755) != 0) {
        fprintf (stderr, "cannot create %s: %s\n", sub, strerror (errno));
        free (sub);
        return 1;
    }
    const char *dirs [1] = { sub };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1,
        .block_bytes = direct? 8192: 4096 + 808,
        .capacity_blocks = T_CAPACITY, .queue_depth = T_QD, .files_per_dir = 3,
        .sync_on_ack = sync_on_ack, .checksum_threads = checksum_threads,
        //  A compaction every ~400 records, each appending a snapshot of
        //  up to 10k: the journal is rotating most of the time, so kills
        //  land in the middle of rotations too
        .journal_compact_bytes = 16 << 10
    };
    //  Kill after a random number of acknowledgements, mid-storm: early
    //  (first versions only) or late (overwrites of acknowledged blocks).
    //  Early rounds: the child kills itself while a journal rotation is
    //  under way (the parent kills it later if none comes).
    uint64_t kill_after = (late? T_CAPACITY + 500: 1000)
                        + (uint64_t) (kvt_now_us () % (T_CAPACITY / 2));
    uint64_t self_kill_after = kill_after;
    if (!late)
        kill_after += 4000;
    int fds [2];
    if (pipe (fds) != 0)
        return 1;
    pid_t pid = fork ();
    if (pid == 0) {
        close (fds [0]);
        t_child (&config, direct, fds [1], late? 0: self_kill_after);
        _exit (0);
    }
    close (fds [1]);
    //  Per slot: last version prepared, last version acknowledged
    uint8_t *prepared = (uint8_t *) calloc (T_CAPACITY, 1);
    uint8_t *acked = (uint8_t *) calloc (T_CAPACITY, 1);
    uint64_t ack_total = 0;
    bool killed = false;
    t_event_t event;
    size_t have = 0;
    while (true) {
        ssize_t rc = read (fds [0], (uint8_t *) &event + have, sizeof (event) - have);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        have += (size_t) rc;
        if (have < sizeof (event))
            continue;
        have = 0;
        if (event.slot >= T_CAPACITY) {
            t_check (false, "bad event from child");
            break;
        }
        if (event.kind == 'P') {
            prepared [event.slot] = (uint8_t) event.version;
        }
        else {
            acked [event.slot] = (uint8_t) event.version;
            ack_total++;
        }
        if (!killed && ack_total >= kill_after) {
            kill (pid, SIGKILL);
            killed = true;
        }
    }
    int status = 0;
    waitpid (pid, &status, 0);
    close (fds [0]);
    t_check (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL,
             "child did not die by SIGKILL (status %d, acks %" PRIu64 ")", status, ack_total);

    //  Reopen and check every slot
    char next_path [600];
    struct stat st;
    snprintf (next_path, sizeof (next_path), "%s/kvt-nvme.journal.next", sub);
    bool cut_rotation = stat (next_path, &st) == 0;
    size_t bytes = config.block_bytes;
    uint8_t *arena = t_arena_new (2 * (size_t) T_QD * bytes);
    uint8_t *expect = (uint8_t *) malloc (bytes);
    kvt_nvme_store_t *store = kvt_nvme_store_new (&config);
    if (direct)
        kvt_nvme_store_register_buffer (store, arena, 2 * (size_t) T_QD * bytes);
    int64_t started = kvt_now_us ();
    int rc = kvt_nvme_store_open (store);
    int64_t open_us = kvt_now_us () - started;
    t_check (rc == 0, "reopen: %s", kvt_strerror (rc));
    if (rc) {
        kvt_nvme_store_destroy (&store);
        return t_failures - failures_before;
    }
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (open_us < 5000000, "recovery took %.3f s", open_us / 1e6);
    t_check (stat (next_path, &st) != 0, "a rotation's next journal is left after open");
    uint64_t recovered = kvt_nvme_store_recovered_count (store);
    uint8_t *found = (uint8_t *) calloc (T_CAPACITY, 1);
    for (uint64_t i = 0; i < recovered; i++) {
        uint64_t slot, hash;
        kvt_nvme_store_recovered (store, i, &slot, &hash);
        t_check (slot < T_CAPACITY && (hash >> 8 & 0xFFFFFFFFFFULL) == slot,
                 "recovered slot %" PRIu64 " has hash %016" PRIx64, slot, hash);
        uint32_t version = (uint32_t) (hash & 0xFF);
        found [slot] = (uint8_t) version;
        t_check (version <= prepared [slot], "slot %" PRIu64 ": version %u never written",
                 slot, version);
        t_check (version >= acked [slot], "slot %" PRIu64 ": version %u older than acked %u",
                 slot, version, acked [slot]);
    }
    uint64_t must_have = 0, misses = 0, reads_ok = 0;
    for (uint64_t slot = 0; slot < T_CAPACITY; slot++)
        if (acked [slot] && acked [slot] == prepared [slot]) {
            must_have++;
            t_check (found [slot] == acked [slot], "slot %" PRIu64 ": acked version %u "
                     "not recovered (found %u)", slot, acked [slot], found [slot]);
        }
    //  Read every recovered block; successes must be byte-exact
    uint64_t slot = 0;
    while (slot < T_CAPACITY) {
        int batch = 0;
        uint64_t batch_slot [T_QD];
        for (; slot < T_CAPACITY && batch < T_QD; slot++) {
            if (!found [slot])
                continue;
            rc = kvt_nvme_prep_read (store, slot, t_hash (slot, found [slot]),
                                     arena + (size_t) batch * bytes, (uint64_t) batch);
            t_check (rc == 0, "prep_read slot %" PRIu64 ": %s", slot, kvt_strerror (rc));
            batch_slot [batch++] = slot;
        }
        kvt_nvme_submit (store);
        int got = 0;
        while (got < batch) {
            kvt_nvme_store_wait (store, 5000);
            kvt_nvme_done_t done [T_QD];
            int n = kvt_nvme_reap (store, done, T_QD);
            t_check (n >= 0, "reap: %s", kvt_strerror (n));
            if (n < 0)
                break;
            for (int i = 0; i < n; i++) {
                int b = (int) done [i].tag;
                uint64_t s = batch_slot [b];
                if (done [i].rc == 0) {
                    t_fill (expect, bytes, t_hash (s, found [s]));
                    t_check (memcmp (expect, arena + (size_t) b * bytes, bytes) == 0,
                             "slot %" PRIu64 ": read succeeded with wrong bytes", s);
                    reads_ok++;
                }
                else {
                    misses++;
                    t_check (done [i].rc == KVT_ECHECKSUM || done [i].rc == KVT_EMISS,
                             "slot %" PRIu64 ": read failed with %s", s,
                             kvt_strerror (done [i].rc));
                    t_check (prepared [s] > found [s], "slot %" PRIu64 ": acknowledged "
                             "block with no later write reads as %s", s,
                             kvt_strerror (done [i].rc));
                }
            }
            got += n;
        }
    }
    //  The store takes new writes after recovery
    t_fill (arena, bytes, 77);
    rc = kvt_nvme_prep_write (store, 0, 77, arena, 0);
    t_check (rc == 0, "write after recovery: %s", kvt_strerror (rc));
    kvt_nvme_submit (store);
    kvt_nvme_store_wait (store, 5000);
    kvt_nvme_done_t done [1];
    int n = 0;
    for (int tries = 0; tries < 100 && n == 0; tries++) {
        n = kvt_nvme_reap (store, done, 1);
        if (n == 0)
            kvt_nvme_store_wait (store, 100);
    }
    t_check (n == 1 && done [0].rc == 0, "write after recovery not acknowledged");
    printf ("  %-6s sync_on_ack=%d %-5s: acked %" PRIu64 " before kill, recovered %" PRIu64
            " (%" PRIu64 " required), read back %" PRIu64 " exact, %" PRIu64
            " torn by in-flight overwrite, journal skipped %" PRIu64 ", open %.1f ms, "
            "checksum_threads %d%s\n",
            direct? "direct": "bounce", sync_on_ack, late? "late": "early", ack_total,
            recovered, must_have,
            reads_ok, misses, stats.recovery_skipped, open_us / 1e3, checksum_threads,
            cut_rotation? ", killed mid-rotation": "");
    if (verbose)
        printf ("  recovery_us %" PRIu64 "\n", stats.recovery_us);
    kvt_nvme_store_destroy (&store);
    munmap (arena, 2 * (size_t) T_QD * bytes);
    free (expect);
    free (found);
    free (prepared);
    free (acked);
    free (sub);
    return t_failures - failures_before;
}

//  20k blocks on disk: the restart finds them all, quickly, and the files
//  never grow past capacity.
static void
t_recover_many (const char *dir)
{
    char *sub = NULL;
    if (asprintf (&sub, "%s/many", dir) < 0 || mkdir (sub, 0755) != 0) {
        t_check (false, "cannot create %s", sub? sub: dir);
        free (sub);
        return;
    }
    const uint64_t count = 20000;
    const size_t bytes = 4096;
    const char *dirs [1] = { sub };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = bytes, .capacity_blocks = count,
        .queue_depth = 64, .files_per_dir = 4, .journal_compact_bytes = 256 << 10
    };
    uint8_t *arena = t_arena_new (64 * bytes);
    int rc;
    kvt_nvme_store_t *store = t_store_try_open (&config, arena, 64 * bytes, &rc);
    t_check (rc == 0, "open: %s", kvt_strerror (rc));
    uint64_t next = 0, acked = 0;
    int free_bufs [64], free_count = 64;
    for (int i = 0; i < 64; i++)
        free_bufs [i] = i;
    while (rc == 0 && acked < count) {
        while (next < count && free_count > 0) {
            int b = free_bufs [--free_count];
            t_fill (arena + (size_t) b * bytes, bytes, t_hash (next, 1));
            rc = kvt_nvme_prep_write (store, next, t_hash (next, 1),
                                      arena + (size_t) b * bytes, (uint64_t) b);
            t_check (rc == 0, "prep_write %" PRIu64 ": %s", next, kvt_strerror (rc));
            next++;
        }
        kvt_nvme_submit (store);
        kvt_nvme_store_wait (store, 5000);
        kvt_nvme_done_t done [64];
        int n = kvt_nvme_reap (store, done, 64);
        for (int i = 0; i < n; i++) {
            t_check (done [i].rc == 0, "write: %s", kvt_strerror (done [i].rc));
            free_bufs [free_count++] = (int) done [i].tag;
        }
        acked += (uint64_t) (n > 0? n: 0);
    }
    //  Capacity is a hard bound: the files hold exactly the slots asked for
    size_t stride = kvt_nvme_store_stride (store);
    uint64_t file_bytes = 0;
    for (uint64_t slot = 0; slot < 4; slot++) {
        char path [512];
        struct stat st;
        kvt_nvme_store_slot_location (store, slot, path, sizeof (path), NULL);
        if (stat (path, &st) == 0)
            file_bytes += (uint64_t) st.st_size;
    }
    t_check (file_bytes == count * stride, "data files hold %" PRIu64 " bytes, capacity is %"
             PRIu64, file_bytes, count * stride);
    rc = kvt_nvme_prep_write (store, count, 1, arena, 0);
    t_check (rc == -ERANGE, "write past capacity: %s", kvt_strerror (rc));
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (store, &stats);
    t_check (stats.journal_rotations >= 1, "no journal compaction in 20k writes");
    kvt_nvme_store_destroy (&store);

    store = kvt_nvme_store_new (&config);
    int64_t started = kvt_now_us ();
    rc = kvt_nvme_store_open (store);
    int64_t open_us = kvt_now_us () - started;
    t_check (rc == 0, "reopen: %s", kvt_strerror (rc));
    t_check (kvt_nvme_store_recovered_count (store) == count, "recovered %" PRIu64 " of %"
             PRIu64, kvt_nvme_store_recovered_count (store), count);
    t_check (open_us < 5000000, "reopen with 20k blocks took %.3f s", open_us / 1e6);
    //  Spot check: a few blocks read back byte-exact (bounce path: no region)
    uint8_t *expect = (uint8_t *) malloc (bytes);
    for (uint64_t slot = 0; slot < count; slot += 4999) {
        rc = kvt_nvme_prep_read (store, slot, t_hash (slot, 1), arena, 0);
        t_check (rc == 0, "prep_read %" PRIu64 ": %s", slot, kvt_strerror (rc));
        kvt_nvme_submit (store);
        kvt_nvme_store_wait (store, 5000);
        kvt_nvme_done_t done [1];
        int n = kvt_nvme_reap (store, done, 1);
        t_fill (expect, bytes, t_hash (slot, 1));
        t_check (n == 1 && done [0].rc == 0 && memcmp (arena, expect, bytes) == 0,
                 "slot %" PRIu64 " after reopen", slot);
    }
    printf ("  20k blocks: %" PRIu64 " journal compactions while writing, reopen %.1f ms, "
            "all recovered, files exactly at capacity\n", stats.journal_rotations,
            open_us / 1e3);
    kvt_nvme_store_destroy (&store);
    munmap (arena, 64 * bytes);
    free (expect);
    free (sub);
}

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    t_quiet_log ();
    char path [512];
    char *dir = t_scratch_new ("test_nvme_crash", "crash", path, sizeof (path));
    if (!dir)
        return T_EXIT_SKIP;
    //  Bit-loop over {direct, sync_on_ack, late kill, checksums on a pool}
    for (int mask = 0; mask < 1 << 4; mask++)
        t_round (dir, mask & 1, (mask >> 1) & 1, (mask >> 2) & 1, (mask >> 3) & 1? 2: 1,
                 verbose);
    t_recover_many (dir);
    t_scratch_remove ("test_nvme_crash", dir);
    return t_verdict ("test_nvme_crash");
}
