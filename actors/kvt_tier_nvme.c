/*  =========================================================================
    kvt_tier_nvme - the disk tier: checksummed blocks through io_uring

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Owns the disk tier's slots and its store (runtime/kvt_nvme_store: a
    few large O_DIRECT files, io_uring with registered files and buffers,
    a checksummed header per block, a journal for restart). Blocks move
    between disk and the host tier's shared-memory slab, which this actor
    maps and registers with io_uring, so payloads go by DMA; reads into a
    slab on 4 KiB pages go through the store's huge-page staging instead
    (tier_nvme/direct = auto, kvt_nvme_direct_reads; gauges direct_reads
    and direct_writes say which way each started). With auto, reads then
    take whichever way this disk serves faster: kvt_read_path times both
    while reads queue beyond the device's depth (gauges read_path_bounce,
    read_path_rounds, read_path_switches, read_path_other_per_mille: the
    other way's rate over the chosen one's, x 1000; direct_ops and
    bounce_ops count the store's I/Os each way, writes included).
    Counter device_ran_dry: completions found the disk with nothing left
    to do while blocks waited (a disk that returns its whole queue at
    once does that; so does a loop that came back late); pump_out_of_tags:
    the queue had room but every op was taken, most by writes waiting for
    their journal record (gauges journal_appends and journal_append_us:
    one append is in flight at a time, and its writes' acks wait on it).
    Accepts: TIER_ALLOC {count} -> TIER_ALLOC_OK {slots}
             TIER_FREE {slots}  -> TIER_FREE_OK {freed}
             TIER_WRITE {slots, hashes, src_slots} -> TIER_WRITE_OK {written, failed}
             TIER_READ {slots, hashes, dst_slots, layer_group}
                                                   -> TIER_READ_OK {read, failed}
             STATS.
    layer_group 0 reads whole blocks; g + 1 reads layer group g of each
    (migration/nvme_layer_groups, issue #4; kvt_nvme_store.h): the bytes of
    layers [g x L / G, (g + 1) x L / G) land at their place in the host
    slot, checked against that group's checksum in the block's v2 header.
    Counters group_reads (blocks' groups prepared) and
    group_order_inversions (a group prepared after a higher group of the
    read before it: 0 while one stream promotion reads group-major).
@discuss
    A write is answered once every block of it is acknowledged by the store
    (see kvt_nvme_store.h for exactly what that guarantees). 'failed' lists
    the indices of blocks that did not make it (ENOSPC, EIO): the caller
    keeps those elsewhere. A read whose checksum or hash does not match is
    a miss, listed in 'failed'; its bytes are never used.
    With migration/cold_dtype = fp8 the host slots hold blocks in their
    FP8 form: only that length (kvt_fp8_block_bytes) is written, checksummed
    and read. The store records each block's length, so a block written in
    the other form (before a restart that changed cold_dtype) is a miss.
    At START, blocks recovered from the journal are claimed and announced
    to the prefix index (IDX_INSERT), so a restart serves what was on disk.
    If the disk cannot be opened (missing directory, no O_DIRECT), the
    actor still starts, disabled: it allocates no slots and the runtime
    serves from the other tiers.
    Operations beyond the queue depth wait in a backlog, pumped as
    completions come in; the loop never blocks on I/O. queue_depth is the
    depth kept at the device (tier_nvme/queue_depth, or more to keep
    tier_nvme/queue_mib in flight: kvt_runtime_nvme_queue_depth): the
    store holds twice as many operations again (KVT_NVME_COMPLETION_SLACK), so
    that reads whose bytes have arrived but are still being checked, or
    are finished and not yet reaped and answered, and writes waiting for
    their journal record, do not take room at the device; a new I/O is
    prepared whenever fewer than queue_depth transfers are at the device
    (kvt_nvme_store_device_inflight), as a plain io_uring reader at that
    depth does (issue #4: while checks held queue room, 29 of 32 were at
    the device on average; tools/bench/RESULTS.md). With
    checksum_threads > 1 the store verifies and computes checksums on its
    own worker threads, which wake this loop through the same eventfd as
    the disk does; the actor's code does not change. With 0 (auto) it has
    those threads from 8 cores and hands them work only while hashing
    inline would take over half of this loop (kvt_hash_load).
@end
*/

#include "kvt_classes.h"
#include "kvt_huge.h"
#include "kvt_actors.h"
#include "kvt_tier_slots.h"
#include "kvt_read_path.h"
#include "kvt_fp8.cuh"
#include <sys/eventfd.h>

#define S_REAP_BATCH 8              //  Completions reaped (and checked) per refill

typedef struct {
    kvt_msg_t *request;             //  TIER_WRITE or TIER_READ, owned
    size_t remaining;               //  Blocks not yet completed
    size_t done_ok;                 //  Blocks completed with rc 0
    uint64_t *failed;               //  Indices of failed blocks
    size_t failed_count;            //  Entries in failed
} s_request_t;

typedef struct {
    s_request_t *request;           //  Request this block belongs to
    size_t index;                   //  Its index in the request
    int read_path;                  //  A read's path (KVT_READ_PATH_*), as prepared
    uint64_t read_bytes;            //  ...and the bytes it moves
} s_op_t;

typedef struct {
    kvt_actor_t *actor;             //  Our skeleton
    char *dir;                      //  Where the files are
    uint64_t capacity;              //  Slots
    int queue_depth;                //  Most I/Os at the device
    int op_count;                   //  Operations (tags) in all: queue_depth + slack
    bool sync_on_ack;               //  See kvt_nvme_store.h
    int checksum_threads;           //  Checksum workers: 1 = this thread, 0 = auto
    char *direct_mode;              //  tier_nvme/direct: auto, on or off
    size_t block_bytes;             //  From the model shape
    size_t payload_bytes;           //  What moves per block: block_bytes, or its FP8 form
    int layers;                     //  Layers of a block (model shape)
    int layer_groups;               //  migration/nvme_layer_groups, as asked
    uint64_t last_group;            //  layer_group of the last group read prepared
    kvt_arena_t *host;              //  Host slab (borrowed)
    kvt_nvme_store_t *store;        //  NULL when disabled
    kvt_slots_t *slots;             //  Slot allocator
    zlist_t *backlog;               //  s_op_t waiting for queue room
    s_op_t *ops;                    //  Ops in flight, by tag (op_count entries)
    uint64_t *free_tags;            //  Stack of unused tags (op_count entries)
    size_t free_tag_count;          //  Entries on it
    bool split_writes;              //  Direct writes as two I/Os, not one vectored
    bool learn_reads;               //  direct = auto: kvt_read_path picks reads' path
    kvt_read_path_t read_path;      //  ...learning which is faster here
    uint64_t group_bytes;           //  Bytes of one layer group read (about)
} self_t;

static void *
s_self_new (kvt_actor_t *actor, const kvt_config_t *config)
{
    self_t *self = (self_t *) kvt_zmalloc (sizeof (self_t));
    self->actor = actor;
    self->dir = strdup (kvt_config_str (config, "tier_nvme/dir"));
    self->capacity = (uint64_t) kvt_config_int (config, "tier_nvme/capacity_blocks");
    self->sync_on_ack = kvt_config_int (config, "tier_nvme/sync_on_ack") != 0;
    self->checksum_threads = (int) kvt_config_int (config, "tier_nvme/checksum_threads");
    self->direct_mode = strdup (kvt_config_str (config, "tier_nvme/direct"));
    self->split_writes = kvt_config_int (config, "tier_nvme/split_writes") != 0;
    kvt_block_shape_t shape = kvt_runtime_block_shape (config);
    self->block_bytes = kvt_block_bytes (&shape);
    self->layers = shape.layers;
    self->layer_groups = kvt_runtime_nvme_layer_groups (config);
    //  migration/cold_dtype = fp8: host slots hold the FP8 form, and only
    //  its length goes to disk and back
    self->payload_bytes = self->block_bytes;
    if (streq (kvt_config_str (config, "migration/cold_dtype"), "fp8"))
        self->payload_bytes = kvt_fp8_block_bytes (shape.layers * 2 * shape.kv_heads,
                                                   shape.block_tokens * shape.head_dim);
    self->queue_depth = kvt_runtime_nvme_queue_depth (config, self->payload_bytes);
    self->backlog = zlist_new ();
    return self;
}

static void
s_request_destroy (s_request_t **request_p)
{
    if (*request_p) {
        kvt_msg_destroy (&(*request_p)->request);
        free ((*request_p)->failed);
        free (*request_p);
        *request_p = NULL;
    }
}

static void
s_self_destroy (void **self_p)
{
    self_t *self = (self_t *) *self_p;
    if (self) {
        //  The store drains its I/O; requests still waiting get no reply
        //  (their callers are shutting down too)
        kvt_nvme_store_destroy (&self->store);
        s_op_t *op;
        while ((op = (s_op_t *) zlist_pop (self->backlog)))
            free (op);
        zlist_destroy (&self->backlog);
        kvt_slots_destroy (&self->slots);
        free (self->ops);
        free (self->free_tags);
        free (self->dir);
        free (self->direct_mode);
        free (self);
        *self_p = NULL;
    }
}

static void s_complete (self_t *self, s_request_t *request, size_t index, int rc);

//  Prepare as many waiting operations as the queue has room for.
static void
s_pump (self_t *self)
{
    int prepared = 0;
    while (self->free_tag_count && zlist_size (self->backlog)
    &&     kvt_nvme_store_device_inflight (self->store) < self->queue_depth) {
        s_op_t *op = (s_op_t *) zlist_pop (self->backlog);
        kvt_msg_t *msg = op->request->request;
        bool write = kvt_msg_id (msg) == KVT_MSG_TIER_WRITE;
        uint64_t slot = kvt_msg_array (msg, write? KVT_TIER_WRITE_SLOTS: KVT_TIER_READ_SLOTS,
                                       NULL) [op->index];
        uint64_t hash = kvt_msg_array (msg, write? KVT_TIER_WRITE_HASHES: KVT_TIER_READ_HASHES,
                                       NULL) [op->index];
        uint64_t host_slot = kvt_msg_array (msg, write? KVT_TIER_WRITE_SRC_SLOTS
                                                      : KVT_TIER_READ_DST_SLOTS, NULL) [op->index];
        uint64_t tag = self->free_tags [--self->free_tag_count];
        void *buffer = kvt_arena_block (self->host, host_slot);
        uint64_t group = write? 0: kvt_msg_u64 (msg, KVT_TIER_READ_LAYER_GROUP);
        if (!write && self->learn_reads)
            kvt_nvme_store_set_bounce_reads (self->store,
                                             self->read_path.path == KVT_READ_PATH_BOUNCE);
        op->read_path = self->read_path.path;
        op->read_bytes = group > 0? self->group_bytes: self->payload_bytes;
        int rc;
        if (group > 0) {
            kvt_actor_count (self->actor, "group_reads", 1);
            if (group < self->last_group)
                kvt_actor_count (self->actor, "group_order_inversions", 1);
            self->last_group = group;
            rc = kvt_nvme_prep_read_group (self->store, slot, hash, buffer, (int) group - 1,
                                           tag);
        }
        else
            rc = write? kvt_nvme_prep_write_len (self->store, slot, hash, buffer,
                                                 self->payload_bytes, tag)
                      : kvt_nvme_prep_read_len (self->store, slot, hash, buffer,
                                                self->payload_bytes, tag);
        if (rc) {
            self->free_tags [self->free_tag_count++] = tag;
            s_request_t *request = op->request;
            size_t index = op->index;
            free (op);
            s_complete (self, request, index, rc);
            continue;
        }
        self->ops [tag] = *op;
        free (op);
        prepared++;
    }
    if (!self->free_tag_count && zlist_size (self->backlog)
    &&  kvt_nvme_store_device_inflight (self->store) < self->queue_depth)
        kvt_actor_count (self->actor, "pump_out_of_tags", 1);
    if (prepared) {
        int rc = kvt_nvme_submit (self->store);
        if (rc < 0)
            kvt_log_error ("tier_nvme: submit failed: %s", kvt_strerror (rc));
    }
}

//  One block of a request finished; answer when all have.
static void
s_complete (self_t *self, s_request_t *request, size_t index, int rc)
{
    bool write = kvt_msg_id (request->request) == KVT_MSG_TIER_WRITE;
    if (rc == 0)
        request->done_ok++;
    else {
        request->failed [request->failed_count++] = index;
        kvt_actor_count (self->actor, rc == KVT_ECHECKSUM? "checksum_failures":
                                      rc == KVT_EMISS? "misses": write? "write_errors"
                                                                      : "read_errors", 1);
        kvt_log_warn ("tier_nvme: %s of block %zu failed: %s", write? "write": "read", index,
                      kvt_strerror (rc));
    }
    if (--request->remaining)
        return;
    kvt_msg_t *reply = kvt_msg_reply_new (request->request,
                                          write? KVT_MSG_TIER_WRITE_OK: KVT_MSG_TIER_READ_OK);
    kvt_msg_set_u64 (reply, 0, request->done_ok);
    kvt_msg_set_array (reply, 1, request->failed, request->failed_count);
    kvt_actor_count (self->actor, write? "blocks_written": "blocks_read", request->done_ok);
    kvt_actor_reply (self->actor, &reply);
    kvt_actor_mark (self->actor, write? "at_write_answered": "at_read_answered");
    s_request_destroy (&request);
}

static int
s_reap (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    self_t *self = (self_t *) arg;
    int64_t start = kvt_now_us ();
    uint64_t ticks;
    if (read (item->fd, &ticks, sizeof (ticks)) < 0 && errno != EAGAIN)
        kvt_log_warn ("tier_nvme: eventfd read: %s", strerror (errno));
    kvt_nvme_done_t done [S_REAP_BATCH];
    int count;
    //  The disk ran dry with work waiting: this loop came back too late
    //  (a timeline's idle stretches, bench host --verbose)
    if (zlist_size (self->backlog) > 0 && kvt_nvme_store_device_inflight (self->store) == 0)
        kvt_actor_count (self->actor, "device_ran_dry", 1);
    //  Refill the queue first (the reads that landed no longer count as at
    //  the device, and the slack has tags for them), then after every
    //  small batch: reaping checks each read's checksum, and the disk must
    //  not sit idle while we do
    s_pump (self);
    do {
        count = kvt_nvme_reap (self->store, done, S_REAP_BATCH);
        int64_t now = kvt_now_us ();
        for (int k = 0; k < count; k++) {
            s_op_t op = self->ops [done [k].tag];
            self->free_tags [self->free_tag_count++] = done [k].tag;
            if (self->learn_reads && done [k].rc == 0
            &&  kvt_msg_id (op.request->request) == KVT_MSG_TIER_READ) {
                //  The disk sets the pace while I/O waits for room at it
                int rounds = self->read_path.rounds;
                kvt_read_path_done (&self->read_path, op.read_path, op.read_bytes, now,
                                    zlist_size (self->backlog) > 0);
                if (self->read_path.rounds != rounds)
                    kvt_log_info ("tier_nvme: read path round %d: direct %.0f MB/s, bounce "
                                  "%.0f MB/s; %s", self->read_path.rounds,
                                  self->read_path.rate [KVT_READ_PATH_DIRECT],
                                  self->read_path.rate [KVT_READ_PATH_BOUNCE],
                                  self->read_path.chosen? "bounce": "direct");
            }
            s_complete (self, op.request, op.index, done [k].rc);
        }
        s_pump (self);
    } while (count == S_REAP_BATCH);
    kvt_nvme_store_stats_t stats;
    kvt_nvme_store_stats (self->store, &stats);
    kvt_actor_gauge (self->actor, "read_bytes", stats.read_bytes);
    kvt_actor_gauge (self->actor, "group_fallbacks", stats.group_fallbacks);
    kvt_actor_gauge (self->actor, "write_bytes", stats.write_bytes);
    kvt_actor_gauge (self->actor, "checksums_pooled", stats.checksum_jobs);
    kvt_actor_gauge (self->actor, "checksums_inline", stats.checksum_inline);
    kvt_actor_gauge (self->actor, "early_submits", stats.early_submits);
    kvt_actor_gauge (self->actor, "direct_ops", stats.direct_ops);
    kvt_actor_gauge (self->actor, "journal_appends", stats.journal_writes);
    kvt_actor_gauge (self->actor, "journal_append_us", stats.journal_append_us);
    kvt_actor_gauge (self->actor, "bounce_ops", stats.bounce_ops);
    if (self->learn_reads) {
        kvt_actor_gauge (self->actor, "read_path_bounce", self->read_path.chosen);
        kvt_actor_gauge (self->actor, "read_path_rounds", (uint64_t) self->read_path.rounds);
        kvt_actor_gauge (self->actor, "read_path_switches", self->read_path.switches);
        kvt_actor_gauge (self->actor, "read_path_void_spans", self->read_path.void_spans);
        //  The other path's bytes a second over the chosen one's, x 1000
        double other = self->read_path.rounds? exp (self->read_path.log_ratio): 0;
        kvt_actor_gauge (self->actor, "read_path_other_per_mille", (uint64_t) (1000 * other));
    }
    kvt_actor_turn_end (self->actor, "", "io_done", start);
    return 0;
}

static void
s_announce_recovered (self_t *self)
{
    uint64_t count = kvt_nvme_store_recovered_count (self->store);
    if (count == 0)
        return;
    uint64_t *hashes = (uint64_t *) kvt_zmalloc (count * sizeof (uint64_t));
    uint64_t *slots = (uint64_t *) kvt_zmalloc (count * sizeof (uint64_t));
    size_t kept = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t slot, hash;
        if (kvt_nvme_store_recovered (self->store, k, &slot, &hash) == 0
        &&  kvt_slots_claim (self->slots, slot) == 0) {
            hashes [kept] = hash;
            slots [kept++] = slot;
        }
    }
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_INSERT);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_HASHES, hashes, kept);
    kvt_msg_set_u64 (msg, KVT_IDX_INSERT_TIER, KVT_TIER_NVME);
    kvt_msg_set_array (msg, KVT_IDX_INSERT_SLOTS, slots, kept);
    kvt_actor_call (self->actor, "prefix_index", &msg, NULL, NULL);
    kvt_actor_gauge (self->actor, "recovered_blocks", kept);
    kvt_log_info ("tier_nvme: %zu blocks recovered from %s", kept, self->dir);
    free (hashes);
    free (slots);
}

static int
s_self_start (void *self_ptr)
{
    self_t *self = (self_t *) self_ptr;
    self->host = kvt_arena_find ("host");
    if (!self->host) {
        kvt_log_error ("tier_nvme: the host arena is not mapped in this process");
        return -ENOENT;
    }
    self->slots = kvt_slots_new (self->capacity);
    //  Lowest free slots first: a disk's first write to a block of a file
    //  also allocates it (even a reserved one: ext4 converts its extent),
    //  1.3-1.6x the time of a rewrite on the H100 machine's disk, so the
    //  tier writes over what it has written before and grows only as it
    //  fills (tools/bench/RESULTS.md, "Writes through tier_nvme")
    kvt_slots_set_first_fit (self->slots, true);
    self->op_count = self->queue_depth + KVT_NVME_COMPLETION_SLACK (self->queue_depth);
    self->ops = (s_op_t *) kvt_zmalloc ((size_t) self->op_count * sizeof (s_op_t));
    self->free_tags = (uint64_t *) kvt_zmalloc ((size_t) self->op_count * sizeof (uint64_t));
    for (int k = 0; k < self->op_count; k++)
        self->free_tags [self->free_tag_count++] = (uint64_t) k;
    kvt_actor_gauge (self->actor, "capacity_blocks", self->capacity);

    //  Our own default folder is created; a folder the user named must exist
    const char *run_dir = kvt_actor_run_dir (self->actor);
    if (strncmp (self->dir, run_dir, strlen (run_dir)) == 0)
        mkdir (self->dir, 0700);
    //  Payloads by DMA straight to and from the host arena; reads through
    //  the store's huge-page staging instead where the arena is on 4 KiB
    //  pages (an actor process's memfd without reserved huge pages): a
    //  segment a page costs a virtual disk up to 2x (kvt_nvme_direct_reads)
    bool large = kvt_arena_large_pages (self->host);
    bool direct_writes = !streq (self->direct_mode, "off");
    bool direct_reads = kvt_nvme_direct_reads (self->direct_mode, large,
                                               kvt_huge_thp_enabled ()) == 1;
    const char *dirs [] = { self->dir };
    kvt_nvme_store_config_t config = {
        .dirs = dirs, .dir_count = 1, .block_bytes = self->block_bytes,
        .capacity_blocks = self->capacity, .queue_depth = self->op_count,
        .files_per_dir = 4, .sync_on_ack = self->sync_on_ack, .buffered_fallback = true,
        .checksum_threads = self->checksum_threads, .layers = self->layers,
        .layer_groups = self->layer_groups, .bounce_reads = !direct_reads,
        .split_writes = self->split_writes };
    self->store = kvt_nvme_store_new (&config);
    if (direct_writes)
        kvt_nvme_store_register_buffer (self->store, kvt_arena_base (self->host),
            kvt_arena_block_count (self->host) * kvt_arena_block_bytes (self->host));
    kvt_log_info ("tier_nvme: reads %s, writes %s (host arena on %s pages, tier_nvme/direct "
                  "= %s)", direct_reads? "by DMA into the host arena": "through the staging",
                  direct_writes? "by DMA from the host arena": "through the staging",
                  large? "2 MiB": "4 KiB", self->direct_mode);
    //  auto: reads start where the pages say, then kvt_read_path times both
    //  ways while the disk is busy and keeps the faster (they can go
    //  direct only into the registered arena, in 4 KiB-aligned blocks)
    self->learn_reads = streq (self->direct_mode, "auto") && direct_writes
                     && self->block_bytes % 4096 == 0;
    kvt_read_path_init (&self->read_path, direct_reads? KVT_READ_PATH_DIRECT
                                                      : KVT_READ_PATH_BOUNCE,
                        self->queue_depth);
    int groups = kvt_nvme_store_group_count (self->store);
    self->group_bytes = self->payload_bytes / (size_t) (groups > 0? groups: 1);
    kvt_actor_gauge (self->actor, "direct_reads", direct_reads);
    kvt_actor_gauge (self->actor, "direct_writes", direct_writes);
    int rc = kvt_nvme_store_open (self->store);
    if (rc) {
        kvt_log_error ("tier_nvme: disk tier disabled: cannot open %s: %s", self->dir,
                       kvt_strerror (rc));
        kvt_nvme_store_destroy (&self->store);
        kvt_actor_gauge (self->actor, "disabled", 1);
        return 0;                   //  Serve on from the other tiers
    }
    zmq_pollitem_t item = { NULL, kvt_nvme_store_eventfd (self->store), ZMQ_POLLIN, 0 };
    zloop_poller (kvt_actor_loop (self->actor), &item, s_reap, self);
    s_announce_recovered (self);
    return 0;
}

static int
s_handle_alloc (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    return kvt_tier_slots_alloc (self->actor, self->slots, *msg_p, self->store != NULL);
}

//  A freed slot is forgotten on disk too, so a restart does not bring it back.
static void
s_forget (uint64_t slot, void *arg)
{
    self_t *self = (self_t *) arg;
    if (self->store)
        (void) kvt_nvme_forget (self->store, slot);
}

static int
s_handle_free (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    return kvt_tier_slots_free (self->actor, self->slots, *msg_p, s_forget, self);
}

//  TIER_WRITE and TIER_READ share their shape: slots, hashes, host slots.
static int
s_handle_io (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    if (!self->store)
        return -EIO;
    size_t count, hash_count, host_count;
    const uint64_t *slots = kvt_msg_array (*msg_p, 0, &count);
    kvt_msg_array (*msg_p, 1, &hash_count);
    const uint64_t *host_slots = kvt_msg_array (*msg_p, 2, &host_count);
    if (hash_count != count || host_count != count || count == 0)
        return -EINVAL;
    if (kvt_msg_id (*msg_p) == KVT_MSG_TIER_READ
    &&  kvt_msg_u64 (*msg_p, KVT_TIER_READ_LAYER_GROUP)
        > (uint64_t) kvt_nvme_store_group_count (self->store))
        return -EINVAL;             //  No such layer group
    for (size_t k = 0; k < count; k++)
        if (!kvt_slots_in_use (self->slots, slots [k])
        ||  host_slots [k] >= kvt_arena_block_count (self->host))
            return -ERANGE;
    //  Marks for a timeline (bench host --verbose): when a request came,
    //  when its first I/Os went to the disk, when it was answered
    bool write = kvt_msg_id (*msg_p) == KVT_MSG_TIER_WRITE;
    kvt_actor_mark (self->actor, write? "at_write_in": "at_read_in");
    s_request_t *request = (s_request_t *) kvt_zmalloc (sizeof (s_request_t));
    request->request = *msg_p;
    *msg_p = NULL;
    request->remaining = count;
    request->failed = (uint64_t *) kvt_zmalloc (count * sizeof (uint64_t));
    for (size_t k = 0; k < count; k++) {
        s_op_t *op = (s_op_t *) kvt_zmalloc (sizeof (s_op_t));
        op->request = request;
        op->index = k;
        zlist_append (self->backlog, op);
    }
    s_pump (self);
    kvt_actor_mark (self->actor, write? "at_write_submitted": "at_read_submitted");
    return 0;
}

static const char *const s_peers [] = { "prefix_index", NULL };

const kvt_actor_def_t kvt_tier_nvme_def = {
    .name = "tier_nvme",
    .create = s_self_new,
    .start = s_self_start,
    .destroy = s_self_destroy,
    .peers = s_peers,
    .handlers = {
        [KVT_MSG_TIER_ALLOC] = s_handle_alloc,
        [KVT_MSG_TIER_FREE]  = s_handle_free,
        [KVT_MSG_TIER_WRITE] = s_handle_io,
        [KVT_MSG_TIER_READ]  = s_handle_io,
    },
};
