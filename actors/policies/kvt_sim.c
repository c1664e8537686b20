/*  =========================================================================
    kvt_sim - replays a trace through real policy code, moving no bytes

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    See kvt_sim.h for the model. Internally every block id is mapped once
    to a dense index, so tier membership is a byte per block and the
    replay loop costs a few policy calls per block access: well over a
    million accesses a second for every built-in policy.
@end
*/

#include "kvt_classes.h"
#include "kvt_policy.h"
#include "kvt_policy_util.h"
#include "kvt_sim.h"

//  --------------------------------------------------------------------------
//  Structure of our class

struct _kvt_sim_t {
    const kvt_trace_t *trace;       //  Borrowed trace
    uint64_t access_count;          //  Blocks over all requests
    size_t *first_access;           //  Per request: its first access index
    uint32_t *dense;                //  Per access: dense block index
    int64_t *next_use;              //  Per access: next request using the block
    uint64_t *ids;                  //  Per dense index: block id
    uint64_t *parents;              //  Per dense index: parent id at first sight
    uint32_t *depths;               //  Per dense index: depth at first sight
    size_t dense_count;             //  Distinct blocks
    kvt_idmap_t id_to_dense;        //  Block id -> dense index
    uint32_t *direct;               //  Same as an array when ids are dense, or NULL
    uint64_t direct_count;          //  Entries in direct
    uint32_t max_blocks;            //  Longest request, in blocks
};

//  One tier during a run
typedef struct {
    kvt_policy_t *policy;           //  Its policy instance
    const kvt_policy_ops_t *ops;    //  policy's vtable
    void *state;                    //  policy's state
    size_t capacity;                //  Blocks it holds at most
    size_t count;                   //  Blocks it holds now
} s_tier_t;

//  State of one run
typedef struct {
    kvt_sim_t *sim;                 //  Our simulator
    const kvt_sim_config_t *config; //  Borrowed config
    kvt_sim_result_t *result;       //  Where figures go
    s_tier_t tiers [KVT_SIM_TIERS]; //  GPU, host, NVMe
    int tier_count;                 //  Tiers with capacity > 0
    uint8_t *member;                //  Per dense index: bit t = held by tier t
    uint8_t *hits;                  //  Per dense index: prefix hits so far (saturates)
    int64_t *next_now;              //  Per dense index: next use after its last use
    int64_t now;                    //  Request being replayed
} s_run_t;

#define S_GB 1e9                    //  Bytes per GB in bandwidth figures

//  --------------------------------------------------------------------------
//  Fill 'config' with defaults: policy "lru", one GPU tier of 'capacity'.

void
kvt_sim_config_defaults (kvt_sim_config_t *config, size_t capacity)
{
    assert (config);
    memset (config, 0, sizeof (*config));
    config->policy = "lru";
    config->lower_policy = "lru";
    config->capacity [0] = capacity;
    config->write = KVT_SIM_WRITE_BACK;
    config->prefetch = true;
    config->gpu_layer_fraction = 1;
    config->decode_batch = 1;
    kvt_sim_calibration_defaults (&config->calibration);
}

//  --------------------------------------------------------------------------
//  Prepare a simulator for 'trace': dense ids and the next-use oracle.
//  Visits every access twice (forward, then backward).

kvt_sim_t *
kvt_sim_new (const kvt_trace_t *trace)
{
    assert (trace);
    kvt_sim_t *self = (kvt_sim_t *) kvt_zmalloc (sizeof (kvt_sim_t));
    self->trace = trace;
    size_t requests = kvt_trace_size (trace);
    self->first_access = (size_t *) kvt_zmalloc ((requests + 1) * sizeof (size_t));
    for (size_t r = 0; r < requests; r++) {
        uint32_t count = kvt_trace_request (trace, r)->hash_count;
        self->first_access [r] = self->access_count;
        self->access_count += count;
        if (count > self->max_blocks)
            self->max_blocks = count;
    }
    self->first_access [requests] = self->access_count;
    self->dense = (uint32_t *) kvt_zmalloc (self->access_count * sizeof (uint32_t));
    self->next_use = (int64_t *) kvt_zmalloc (self->access_count * sizeof (int64_t));
    size_t dense_max = 1024;
    self->ids = (uint64_t *) kvt_zmalloc (dense_max * sizeof (uint64_t));
    self->parents = (uint64_t *) kvt_zmalloc (dense_max * sizeof (uint64_t));
    self->depths = (uint32_t *) kvt_zmalloc (dense_max * sizeof (uint32_t));
    kvt_idmap_init (&self->id_to_dense, 1024);
    for (size_t r = 0; r < requests; r++) {
        const kvt_trace_request_t *request = kvt_trace_request (trace, r);
        for (uint32_t j = 0; j < request->hash_count; j++) {
            uint64_t id = request->hash_ids [j];
            uint32_t d = kvt_idmap_get (&self->id_to_dense, id);
            if (d == KVT_IDMAP_NONE) {
                if (self->dense_count == dense_max) {
                    dense_max *= 2;
                    self->ids = (uint64_t *) realloc (self->ids, dense_max * sizeof (uint64_t));
                    self->parents = (uint64_t *) realloc (self->parents, dense_max * sizeof (uint64_t));
                    self->depths = (uint32_t *) realloc (self->depths, dense_max * sizeof (uint32_t));
                    if (!self->ids || !self->parents || !self->depths)
                        abort ();
                }
                d = (uint32_t) self->dense_count++;
                self->ids [d] = id;
                self->parents [d] = j? request->hash_ids [j - 1]: KVT_POLICY_NO_PARENT;
                self->depths [d] = j;
                kvt_idmap_put (&self->id_to_dense, id, d);
            }
            self->dense [self->first_access [r] + j] = d;
        }
    }
    //  Ids below a few times the number of blocks (Mooncake's are 0..N-1)
    //  get a plain array as well: evictions look ids up on the hot path
    uint64_t highest = kvt_trace_id_count (trace);
    if (highest <= 4 * (uint64_t) self->dense_count + 1024) {
        self->direct_count = highest;
        self->direct = (uint32_t *) kvt_zmalloc ((highest + 1) * sizeof (uint32_t));
        memset (self->direct, 0xff, (highest + 1) * sizeof (uint32_t));
        for (size_t d = 0; d < self->dense_count; d++)
            self->direct [self->ids [d]] = (uint32_t) d;
    }
    //  Backward pass: next request that uses each block
    int64_t *seen = (int64_t *) kvt_zmalloc ((self->dense_count + 1) * sizeof (int64_t));
    for (size_t d = 0; d < self->dense_count; d++)
        seen [d] = KVT_POLICY_NEVER;
    for (size_t r = requests; r-- > 0; ) {
        for (size_t a = self->first_access [r]; a < self->first_access [r + 1]; a++)
            self->next_use [a] = seen [self->dense [a]];
        for (size_t a = self->first_access [r]; a < self->first_access [r + 1]; a++)
            seen [self->dense [a]] = (int64_t) r;
    }
    free (seen);
    return self;
}

//  --------------------------------------------------------------------------
//  Destroy; NULL-safe, nulls the caller's pointer.

void
kvt_sim_destroy (kvt_sim_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        kvt_sim_t *self = *self_p;
        kvt_idmap_fini (&self->id_to_dense);
        free (self->direct);
        free (self->depths);
        free (self->parents);
        free (self->ids);
        free (self->next_use);
        free (self->dense);
        free (self->first_access);
        free (self);
        *self_p = NULL;
    }
}

//  Describe dense block 'd' as it stands now (for demotions and copies).
static void
s_describe (s_run_t *run, uint32_t d, kvt_policy_block_t *block)
{
    kvt_sim_t *sim = run->sim;
    const kvt_sim_calibration_t *cal = &run->config->calibration;
    memset (block, 0, sizeof (*block));
    block->id = sim->ids [d];
    block->parent = sim->parents [d];
    block->depth = sim->depths [d];
    block->block_tokens = KVT_TRACE_BLOCK_TOKENS;
    block->now = run->now;
    block->next_use = run->next_now [d];
    double tokens = KVT_TRACE_BLOCK_TOKENS;
    double context = (double) block->depth * tokens + tokens / 2;
    block->recompute_us = (float) (tokens / cal->prefill_tokens_per_s * 1e6
                                   * (1 + context / cal->attention_equal_tokens));
    block->fetch_us = (float) (cal->block_bytes / (cal->h2d_GBps * S_GB) * 1e6);
}

static void s_offer (s_run_t *run, int t, uint32_t d, const kvt_policy_block_t *block);

//  True if tier t holds block 'id'.
static bool
s_holds (s_run_t *run, int t, uint64_t id)
{
    kvt_sim_t *sim = run->sim;
    uint32_t d = id < sim->direct_count? sim->direct [id]: kvt_idmap_get (&sim->id_to_dense, id);
    return d != KVT_IDMAP_NONE && (run->member [d] & (1u << t));
}

//  Remove 'id' from tier t; demote it unless the write mode forbids it.
static void
s_evict (s_run_t *run, int t, uint64_t id)
{
    s_tier_t *tier = &run->tiers [t];
    kvt_sim_t *sim = run->sim;
    uint32_t d = id < sim->direct_count? sim->direct [id]: kvt_idmap_get (&sim->id_to_dense, id);
    assert (d != KVT_IDMAP_NONE && (run->member [d] & (1u << t)));    //  s_holds checked
    run->member [d] &= (uint8_t) ~(1u << t);
    tier->count--;
    tier->ops->on_evict (tier->state, id);
    if (t + 1 < run->tier_count && !(run->member [d] & (1u << (t + 1)))
    &&  run->config->write != KVT_SIM_WRITE_SECOND_HIT) {
        kvt_policy_block_t block;
        s_describe (run, d, &block);
        block.flags |= KVT_POLICY_BLOCK_DEMOTED;
        s_offer (run, t + 1, d, &block);
    }
}

//  --------------------------------------------------------------------------
//  Offer block 'd' to tier t through its policy; a write into a lower
//  tier is counted on its link.

static void
s_offer (s_run_t *run, int t, uint32_t d, const kvt_policy_block_t *block)
{
    s_tier_t *tier = &run->tiers [t];
    if (run->member [d] & (1u << t)) {
        tier->ops->on_access (tier->state, block);
        return;
    }
    if (tier->ops->admit && !tier->ops->admit (tier->state, block))
        return;
    if (tier->count >= tier->capacity) {
        uint64_t victim = tier->ops->choose_victim (tier->state, block);
        if (victim == block->id)
            return;                 //  Declined
        if (!s_holds (run, t, victim)) {
            //  A policy (a plugin, say) named a block this tier does not
            //  hold: count it, keep the tier consistent, decline the offer
            if (run->result->bad_victims++ == 0)
                kvt_log_warn ("policy %s chose a victim that tier %d does not hold",
                              kvt_policy_name (tier->policy), t);
            return;
        }
        s_evict (run, t, victim);
    }
    run->member [d] |= (uint8_t) (1u << t);
    tier->count++;
    tier->ops->on_insert (tier->state, block);
    double bytes = run->config->calibration.block_bytes;
    if (t == 1)
        run->result->bytes_d2h += bytes;
    else
    if (t == 2)
        run->result->bytes_nvme_write += bytes;
}

//  Write 'd' to every lower tier that lacks it (write-through, second hit).
static void
s_copy_down (s_run_t *run, uint32_t d, const kvt_policy_block_t *block)
{
    kvt_policy_block_t copy = *block;
    copy.flags |= KVT_POLICY_BLOCK_DEMOTED;
    for (int t = 1; t < run->tier_count; t++)
        if (!(run->member [d] & (1u << t)))
            s_offer (run, t, d, &copy);
}

//  qsort order for doubles.
static int
s_compare_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y? -1: x > y;
}

//  --------------------------------------------------------------------------
//  Replay the trace under 'config' into 'result'. Returns 0, or -EINVAL
//  if a policy could not be created (logged) or the decode batch is not
//  at least 1.

int
kvt_sim_run (kvt_sim_t *self, const kvt_sim_config_t *config, kvt_sim_result_t *result)
{
    assert (self && config && result);
    memset (result, 0, sizeof (*result));
    s_run_t run = { .sim = self, .config = config, .result = result };
    if (config->decode_batch < 1)
        return -EINVAL;
    int rc = 0;
    for (int t = 0; t < KVT_SIM_TIERS && config->capacity [t] > 0; t++) {
        const char *name = t == 0? config->policy
                                 : (config->lower_policy? config->lower_policy: "lru");
        s_tier_t *tier = &run.tiers [t];
        size_t capacity = config->capacity [t];
        if (t == 0 && config->gpu_layer_fraction > 0 && config->gpu_layer_fraction < 1)
            capacity = (size_t) ((double) capacity / config->gpu_layer_fraction);
        tier->policy = kvt_policy_new (name, capacity, config->options);
        if (!tier->policy) {
            rc = -EINVAL;
            break;
        }
        tier->ops = kvt_policy_ops (tier->policy);
        tier->state = kvt_policy_state (tier->policy);
        tier->capacity = capacity;
        run.tier_count = t + 1;
    }
    if (rc || run.tier_count == 0) {
        for (int t = 0; t < run.tier_count; t++)
            kvt_policy_destroy (&run.tiers [t].policy);
        return -EINVAL;
    }
    const kvt_sim_calibration_t *cal = &config->calibration;
    run.member = (uint8_t *) kvt_zmalloc (self->dense_count + 1);
    run.hits = (uint8_t *) kvt_zmalloc (self->dense_count + 1);
    run.next_now = (int64_t *) kvt_zmalloc ((self->dense_count + 1) * sizeof (int64_t));
    kvt_policy_block_t *blocks = (kvt_policy_block_t *)
        kvt_zmalloc ((self->max_blocks + 1) * sizeof (kvt_policy_block_t));
    size_t requests = kvt_trace_size (self->trace);
    if (config->request_limit && config->request_limit < requests)
        requests = config->request_limit;
    double *ttft = (double *) kvt_zmalloc ((requests + 1) * sizeof (double));
    double fetch_host_us = cal->block_bytes / (cal->h2d_GBps * S_GB) * 1e6;
    double read_nvme_us = cal->block_bytes / (cal->nvme_read_GBps * S_GB) * 1e6;
    double ttft_sum = 0, nocache_sum = 0;
    double decode_ms = 0, decode_unsharded_ms = 0, decode_context = 0;
    uint64_t copy_bound = 0;
    double shard = config->gpu_layer_fraction > 0 && config->gpu_layer_fraction < 1
                 ? 1 - config->gpu_layer_fraction: 0;

    int64_t start_us = kvt_now_us ();
    struct timespec cpu_start, cpu_end;
    clock_gettime (CLOCK_THREAD_CPUTIME_ID, &cpu_start);
    for (size_t r = 0; r < requests; r++) {
        const kvt_trace_request_t *request = kvt_trace_request (self->trace, r);
        size_t base = self->first_access [r];
        size_t count = request->hash_count;
        run.now = (int64_t) r;
        result->block_count += count;
        //  1. Longest cached lead, each block served by its highest tier
        size_t hit = 0;
        size_t from_host = 0, from_nvme = 0;
        for (; hit < count; hit++) {
            uint8_t where = run.member [self->dense [base + hit]];
            if (!where)
                break;
            int t = __builtin_ctz (where);
            result->hit_blocks [t]++;
            from_host += t == 1;
            from_nvme += t == 2;
        }
        //  2. Describe every block, then the cost model
        double compute_us = 0, nocache_us = 0;
        for (size_t j = 0; j < count; j++) {
            uint32_t d = self->dense [base + j];
            kvt_policy_block_t *block = &blocks [j];
            run.next_now [d] = self->next_use [base + j];
            s_describe (&run, d, block);
            block->depth = (uint32_t) j;
            block->parent = j? request->hash_ids [j - 1]: KVT_POLICY_NO_PARENT;
            double tokens = KVT_TRACE_BLOCK_TOKENS;
            if (j + 1 == count && request->input_length % KVT_TRACE_BLOCK_TOKENS
            &&  request->input_length < (uint64_t) count * KVT_TRACE_BLOCK_TOKENS) {
                block->flags |= KVT_POLICY_BLOCK_PARTIAL;
                tokens = request->input_length % KVT_TRACE_BLOCK_TOKENS;
            }
            double context = (double) j * KVT_TRACE_BLOCK_TOKENS + tokens / 2;
            double block_us = tokens / cal->prefill_tokens_per_s * 1e6
                            * (1 + context / cal->attention_equal_tokens);
            block->recompute_us = (float) block_us;
            nocache_us += block_us;
            if (j < hit) {
                block->flags |= KVT_POLICY_BLOCK_HIT;
                if (run.hits [d] < UINT8_MAX)
                    run.hits [d]++;
            }
            else
                compute_us += block_us;
        }
        //  Layer sharding: GPU hits stream their host-held layers too
        double sharded_blocks = shard * (double) (hit - from_host - from_nvme);
        result->bytes_h2d += sharded_blocks * cal->block_bytes;
        double fetch_us = fmax (((double) (from_host + from_nvme) + sharded_blocks) * fetch_host_us,
                                (double) from_nvme * read_nvme_us);
        double request_us = cal->request_overhead_us
                          + (config->prefetch? fmax (fetch_us, compute_us): fetch_us + compute_us);
        ttft [r] = request_us / 1000;
        ttft_sum += request_us;
        nocache_sum += cal->request_overhead_us + nocache_us;
        result->bytes_h2d += (double) (from_host + from_nvme) * cal->block_bytes;
        result->bytes_nvme_read += (double) from_nvme * cal->block_bytes;
        //  Decode: output_length - 1 steps after the prefill's first token,
        //  at this F and, for comparison, with no sharding
        if (request->output_length > 1) {
            uint64_t bound;
            decode_ms += kvt_sim_decode_ms (cal, config->gpu_layer_fraction,
                                            config->decode_batch, request->input_length,
                                            request->output_length, &bound);
            decode_unsharded_ms += kvt_sim_decode_ms (cal, 1, config->decode_batch,
                                                      request->input_length,
                                                      request->output_length, NULL);
            copy_bound += bound;
            uint64_t steps = request->output_length - 1;
            result->decode_tokens += steps;
            //  Contexts input + 1 .. input + steps, summed
            decode_context += (double) steps * (double) request->input_length
                            + (double) steps * (double) (steps + 1) / 2;
        }
        //  3. Lower-tier hits are uses there too
        for (size_t j = 0; j < hit; j++) {
            uint8_t where = run.member [self->dense [base + j]];
            for (int t = 1; t < run.tier_count; t++)
                if (where & (1u << t))
                    run.tiers [t].ops->on_access (run.tiers [t].state, &blocks [j]);
        }
        //  4. Offer every block to the GPU tier, in prefix order
        s_tier_t *gpu = &run.tiers [0];
        if (gpu->ops->begin_request)
            gpu->ops->begin_request (gpu->state, blocks, count, hit);
        for (size_t j = 0; j < count; j++) {
            uint32_t d = self->dense [base + j];
            bool had = run.member [d] & 1;
            s_offer (&run, 0, d, &blocks [j]);
            if (shard > 0 && !had && (run.member [d] & 1) && j >= hit)
                result->bytes_d2h += shard * cal->block_bytes;     //  Its host layers
            if (run.tier_count > 1) {
                if (config->write == KVT_SIM_WRITE_THROUGH && (run.member [d] & 1))
                    s_copy_down (&run, d, &blocks [j]);
                else
                if (config->write == KVT_SIM_WRITE_SECOND_HIT && run.hits [d] == 1
                &&  (blocks [j].flags & KVT_POLICY_BLOCK_HIT))
                    s_copy_down (&run, d, &blocks [j]);
            }
        }
        if (gpu->ops->end_request)
            gpu->ops->end_request (gpu->state);
    }
    result->elapsed_s = (double) (kvt_now_us () - start_us) / 1e6;
    clock_gettime (CLOCK_THREAD_CPUTIME_ID, &cpu_end);
    result->cpu_s = (double) (cpu_end.tv_sec - cpu_start.tv_sec)
                  + (double) (cpu_end.tv_nsec - cpu_start.tv_nsec) / 1e9;
    result->request_count = requests;
    uint64_t hits = 0;
    for (int t = 0; t < KVT_SIM_TIERS; t++) {
        hits += result->hit_blocks [t];
        result->tier_hit_ratio [t] = result->block_count
                                   ? (double) result->hit_blocks [t] / (double) result->block_count: 0;
    }
    result->hit_ratio = result->block_count? (double) hits / (double) result->block_count: 0;
    result->accesses_per_s = result->elapsed_s > 0
                           ? (double) result->block_count / result->elapsed_s: 0;
    result->accesses_per_cpu_s = result->cpu_s > 0
                               ? (double) result->block_count / result->cpu_s: 0;
    result->decode_s = decode_ms / 1000;
    result->decode_unsharded_s = decode_unsharded_ms / 1000;
    result->bytes_decode_h2d = shard * cal->block_bytes / KVT_TRACE_BLOCK_TOKENS * decode_context;
    if (result->decode_tokens) {
        result->tpot_mean_ms = decode_ms / (double) result->decode_tokens;
        result->tpot_unsharded_mean_ms = decode_unsharded_ms / (double) result->decode_tokens;
        result->decode_copy_bound = (double) copy_bound / (double) result->decode_tokens;
    }
    if (requests) {
        result->ttft_mean_ms = ttft_sum / (double) requests / 1000;
        result->ttft_nocache_mean_ms = nocache_sum / (double) requests / 1000;
        qsort (ttft, requests, sizeof (double), s_compare_double);
        result->ttft_p50_ms = ttft [requests / 2];
        result->ttft_p99_ms = ttft [(size_t) ((double) (requests - 1) * 0.99)];
    }
    free (ttft);
    free (blocks);
    free (run.next_now);
    free (run.hits);
    free (run.member);
    for (int t = 0; t < run.tier_count; t++)
        kvt_policy_destroy (&run.tiers [t].policy);
    return 0;
}

//  Selftest helper: write 'text' to a temp file and load it as a trace.
static kvt_trace_t *
s_trace_from (const char *text)
{
    char path [] = "/tmp/kvt_sim_test_XXXXXX";
    int fd = mkstemp (path);
    assert (fd >= 0);
    ssize_t wrote = write (fd, text, strlen (text));
    assert (wrote == (ssize_t) strlen (text));
    close (fd);
    char *error = NULL;
    kvt_trace_t *trace = kvt_trace_load (path, &error);
    assert (trace);
    unlink (path);
    return trace;
}

//  --------------------------------------------------------------------------
//  Selftest

int
kvt_sim_test (bool verbose)
{
    //  @selftest
    //  Three requests: A = [1 2 3], B = [1 2 4], A again. Two GPU blocks.
    kvt_trace_t *trace = s_trace_from (
        "{\"timestamp\": 0, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n"
        "{\"timestamp\": 1, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 4]}\n"
        "{\"timestamp\": 2, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n");
    kvt_sim_t *sim = kvt_sim_new (trace);
    kvt_sim_config_t config;
    kvt_sim_config_defaults (&config, 2);
    kvt_sim_result_t result;
    int rc = kvt_sim_run (sim, &config, &result);
    assert (rc == 0);
    //  LRU, 2 blocks: after A holds {2,3}; B misses 1 -> 0 hits; C misses
    assert (result.block_count == 9);
    assert (result.hit_blocks [0] == 0);
    //  Three blocks hold the shared prefix: B hits 1,2; A again hits 1,2
    config.capacity [0] = 3;
    rc = kvt_sim_run (sim, &config, &result);
    assert (rc == 0 && result.hit_blocks [0] == 4);
    //  Belady at 3 blocks keeps 3 for the third request instead of 4
    config.policy = "belady";
    rc = kvt_sim_run (sim, &config, &result);
    assert (rc == 0 && result.hit_blocks [0] == 5);
    //  Two tiers: GPU 1 block, host 8 blocks, write-back: demoted blocks hit on host
    kvt_sim_config_defaults (&config, 1);
    config.capacity [1] = 8;
    rc = kvt_sim_run (sim, &config, &result);
    assert (rc == 0);
    assert (result.hit_blocks [0] + result.hit_blocks [1] == 5);
    assert (result.hit_blocks [1] >= 4);
    assert (result.bytes_h2d == (double) result.hit_blocks [1] * config.calibration.block_bytes);
    assert (result.bytes_d2h > 0);
    assert (result.ttft_mean_ms < result.ttft_nocache_mean_ms);
    //  Second-hit writes nothing down on first use
    config.write = KVT_SIM_WRITE_SECOND_HIT;
    rc = kvt_sim_run (sim, &config, &result);
    assert (rc == 0 && result.hit_blocks [1] == 0 && result.bytes_d2h == 0);
    //  Write-through copies every block as it is made
    config.write = KVT_SIM_WRITE_THROUGH;
    rc = kvt_sim_run (sim, &config, &result);
    assert (rc == 0 && result.bytes_d2h >= 4 * config.calibration.block_bytes);
    //  Static layer sharding: half of each block on GPU doubles the blocks
    //  the GPU tier holds (2 -> 4: all 5 prefix hits of LRU at 4 blocks),
    //  and each GPU hit streams its other half from the host
    kvt_sim_config_defaults (&config, 2);
    config.gpu_layer_fraction = 0.5;
    rc = kvt_sim_run (sim, &config, &result);
    assert (rc == 0 && result.hit_blocks [0] == 5);
    assert (result.bytes_h2d == 2.5 * config.calibration.block_bytes);
    assert (result.bytes_d2h == 2.0 * config.calibration.block_bytes);    //  4 new blocks
        //  Unknown policy is refused
    config.policy = "no-such-policy";
    assert (kvt_sim_run (sim, &config, &result) == -EINVAL);
    config.policy = "lru";
    config.decode_batch = 0;
    assert (kvt_sim_run (sim, &config, &result) == -EINVAL);
    config.decode_batch = 1;
    kvt_sim_destroy (&sim);
    kvt_trace_destroy (&trace);
    //  @end

    //  Calibration file: round trip, and errors name file:line
    kvt_sim_calibration_t cal, back;
    kvt_sim_calibration_defaults (&cal);
    cal.h2d_GBps = 12.5;
    char path [] = "/tmp/kvt_sim_cal_XXXXXX";
    int fd = mkstemp (path);
    assert (fd >= 0);
    close (fd);
    assert (kvt_sim_calibration_save (&cal, path) == 0);
    kvt_sim_calibration_defaults (&back);
    char *error = NULL;
    assert (kvt_sim_calibration_load (&back, path, &error) == 0);
    assert (back.h2d_GBps == 12.5 && back.block_bytes == cal.block_bytes);
    FILE *file = fopen (path, "w");
    fprintf (file, "{\"h2d_GBps\": 3,\n \"h2d_gbps\": 4}\n");
    fclose (file);
    assert (kvt_sim_calibration_load (&back, path, &error) == -EINVAL);
    if (verbose)
        printf ("\n  rejected: %s\n", error);
    assert (error && strstr (error, ":2: unknown key"));
    free (error);
    assert (back.h2d_GBps == 12.5);     //  Unchanged on error
    //  A bench's starting point: defaults where there is no file, and a
    //  refusal (not defaults) where the file does not load
    assert (kvt_sim_calibration_load_existing (&back, path, &error) == -EINVAL);
    assert (error);
    free (error);
    kvt_sim_calibration_t fresh;
    kvt_sim_calibration_defaults (&fresh);
    assert (kvt_sim_calibration_load_existing (&back, "/nonexistent/kvt_cal.json", &error) == 0);
    assert (!error && back.h2d_GBps == fresh.h2d_GBps);
    //  The decode keys go round too
    cal.decode_ms_per_token = 3.5;
    cal.decode_attention_equal_tokens = 0;
    cal.decode_shard_step_ms = 0.25;
    assert (kvt_sim_calibration_save (&cal, path) == 0);
    kvt_sim_calibration_defaults (&back);
    assert (kvt_sim_calibration_load (&back, path, &error) == 0);
    assert (back.decode_ms_per_token == 3.5 && back.decode_attention_equal_tokens == 0
            && back.decode_shard_step_ms == 0.25);
    unlink (path);

    //  Decode cost, by hand. 1 MB of KV per token, 1 GB/s host -> GPU: the
    //  host-held half of a token (F = 0.5) copies in 0.5 ms, 3/4 (F = 0.25)
    //  in 0.75 ms; compute 400 ms a step whatever the context; no fixed cost.
    //  R1: 600 + 4 tokens: steps at contexts 601..603
    //  R2: 790 + 22 tokens: steps at 791..811 (the copy overtakes at 800)
    //  R3: output 0 and R4: output 1 decode nothing
    trace = s_trace_from (
        "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 4, \"hash_ids\": [1, 2]}\n"
        "{\"timestamp\": 1, \"input_length\": 790, \"output_length\": 22, \"hash_ids\": [3, 4]}\n"
        "{\"timestamp\": 2, \"input_length\": 1000, \"output_length\": 0, \"hash_ids\": [5, 6]}\n"
        "{\"timestamp\": 3, \"input_length\": 1000, \"output_length\": 1, \"hash_ids\": [5, 6]}\n");
    sim = kvt_sim_new (trace);
    kvt_sim_config_defaults (&config, 8);
    config.calibration.block_bytes = 512e6;
    config.calibration.h2d_GBps = 1;
    config.calibration.decode_ms_per_token = 400;
    config.calibration.decode_attention_equal_tokens = 0;
    config.calibration.decode_shard_step_ms = 0;
    #define S_NEAR(x, y) (fabs ((double) (x) - (double) (y)) <= 1e-9 * fmax (1, fabs ((double) (y))))
    //  F = 1: compute only, 24 steps x 400 ms, nothing staged
    kvt_sim_result_t whole, half, quarter;
    assert (kvt_sim_run (sim, &config, &whole) == 0);
    assert (whole.decode_tokens == 3 + 21);
    assert (S_NEAR (whole.decode_s, 24 * 0.4));
    assert (S_NEAR (whole.tpot_mean_ms, 400));
    assert (whole.decode_unsharded_s == whole.decode_s);
    assert (whole.bytes_decode_h2d == 0 && whole.decode_copy_bound == 0);
    //  F = 0.5: R1 compute-bound (copy 300.5..301.5 ms) = 1200 ms; R2: 791..799
    //  compute = 9 x 400, 800..811 copy = 0.5 x (800 + .. + 811) = 0.5 x 9666
    config.gpu_layer_fraction = 0.5;
    assert (kvt_sim_run (sim, &config, &half) == 0);
    assert (half.decode_tokens == 24);
    assert (S_NEAR (half.decode_s, (1200 + 3600 + 4833) / 1000.0));
    assert (S_NEAR (half.tpot_mean_ms, 9633 / 24.0));
    assert (S_NEAR (half.decode_unsharded_s, whole.decode_s));
    assert (S_NEAR (half.tpot_unsharded_mean_ms, 400));
    assert (S_NEAR (half.decode_copy_bound, 12 / 24.0));
    assert (S_NEAR (half.bytes_decode_h2d, 0.5e6 * (601 + 602 + 603 + 16821)));
    //  Per request: the longer context costs more per token
    uint64_t bound;
    double r1 = kvt_sim_decode_ms (&config.calibration, 0.5, 1, 600, 4, &bound);
    assert (S_NEAR (r1, 1200) && bound == 0);
    double r2 = kvt_sim_decode_ms (&config.calibration, 0.5, 1, 790, 22, &bound);
    assert (S_NEAR (r2, 8433) && bound == 12);
    assert (r2 / 21 > r1 / 3);
    //  F = 0.25: R1 all copy 0.75 x 1806, R2 all copy 0.75 x 16821
    config.gpu_layer_fraction = 0.25;
    assert (kvt_sim_run (sim, &config, &quarter) == 0);
    assert (S_NEAR (quarter.decode_s, 0.75 * (1806 + 16821) / 1000));
    assert (quarter.decode_s > half.decode_s && quarter.tpot_mean_ms > half.tpot_mean_ms);
    assert (quarter.decode_copy_bound == 1);
    //  A fixed cost per sharded step: 24 x 2 ms more at F = 0.5, none at F = 1
    config.calibration.decode_shard_step_ms = 2;
    config.gpu_layer_fraction = 0.5;
    kvt_sim_result_t fixed;
    assert (kvt_sim_run (sim, &config, &fixed) == 0);
    assert (S_NEAR (fixed.decode_s, half.decode_s + 24 * 0.002));
    assert (S_NEAR (fixed.decode_unsharded_s, whole.decode_s));
    config.gpu_layer_fraction = 1;
    assert (kvt_sim_run (sim, &config, &fixed) == 0);
    assert (S_NEAR (fixed.decode_s, whole.decode_s));
    kvt_sim_destroy (&sim);
    kvt_trace_destroy (&trace);
    //  Requests with output 0 or 1 add nothing: the same figures without them
    trace = s_trace_from (
        "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 4, \"hash_ids\": [1, 2]}\n"
        "{\"timestamp\": 1, \"input_length\": 790, \"output_length\": 22, \"hash_ids\": [3, 4]}\n");
    sim = kvt_sim_new (trace);
    config.calibration.decode_shard_step_ms = 0;
    config.gpu_layer_fraction = 0.5;
    kvt_sim_result_t two;
    assert (kvt_sim_run (sim, &config, &two) == 0);
    assert (two.decode_tokens == half.decode_tokens && two.decode_s == half.decode_s
            && two.bytes_decode_h2d == half.bytes_decode_h2d);
    assert (kvt_sim_decode_ms (&config.calibration, 0.5, 1, 1000, 0, &bound) == 0 && bound == 0);
    assert (kvt_sim_decode_ms (&config.calibration, 0.5, 1, 1000, 1, NULL) == 0);
    kvt_sim_destroy (&sim);
    kvt_trace_destroy (&trace);
    //  Closed form = the step-by-step sum, with attention growing with context
    //  and a fixed cost, wherever the crossover falls (before, inside, after),
    //  one sequence a step or a batch's share of each step
    kvt_sim_calibration_defaults (&cal);
    static const double fractions [] = { 1, 0.75, 0.5, 0.25, 0.03125 };
    static const uint64_t inputs [] = { 0, 100, 4096, 30000, 126000 };
    static const uint64_t outputs [] = { 2, 17, 350, 2000 };
    static const int batches [] = { 1, 16 };
    for (size_t fi = 0; fi < 5; fi++)
        for (size_t ii = 0; ii < 5; ii++)
            for (size_t oi = 0; oi < 4; oi++)
                for (size_t bi = 0; bi < 2; bi++) {
                    double f = fractions [fi];
                    double shard = f < 1? 1 - f: 0;
                    double batch = batches [bi];
                    double sum = 0;
                    uint64_t copy_steps = 0;
                    for (uint64_t k = 1; k < outputs [oi]; k++) {
                        double x = (double) (inputs [ii] + k);
                        double compute = cal.decode_ms_per_token
                                       * (1 / batch + x / cal.decode_attention_equal_tokens);
                        double copy = shard * x * cal.block_bytes / KVT_TRACE_BLOCK_TOKENS
                                    / (cal.h2d_GBps * 1e9) * 1e3;
                        sum += fmax (compute, copy)
                             + (shard > 0? cal.decode_shard_step_ms / batch: 0);
                        copy_steps += copy > compute;
                    }
                    double closed = kvt_sim_decode_ms (&cal, f, batches [bi], inputs [ii],
                                                       outputs [oi], &bound);
                    assert (fabs (closed - sum) <= 1e-9 * sum);
                    //  A tie may go either way
                    assert (bound >= copy_steps && bound <= copy_steps + 1);
                }
    //  A batch shares the weights' read, not the copy: at 16 sequences a
    //  step, F = 1 costs a sequence far less, F = 0.5 at a long context
    //  about the same (copy-bound either way)
    assert (kvt_sim_decode_ms (&cal, 1, 16, 4096, 257, NULL)
            < 0.2 * kvt_sim_decode_ms (&cal, 1, 1, 4096, 257, NULL));
    assert (kvt_sim_decode_ms (&cal, 0.5, 16, 30000, 257, NULL)
            > 0.9 * kvt_sim_decode_ms (&cal, 0.5, 1, 30000, 257, NULL));
    #undef S_NEAR
    return 0;
}
