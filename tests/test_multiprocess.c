/*  =========================================================================
    test_multiprocess - actors as processes: same results, clean lifecycle

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Runs the same short replay with every actor as a thread and with
    configs/multiprocess.cfg (tier_host, tier_nvme and migration as their
    own processes over ipc://): output tokens and prefix-hit accounting are
    identical. Then kills an actor process and checks the supervisor
    notices, and that shutdown leaves no process and no run folder behind.
@end
*/

#include "testutil.h"
#include "kvt_trace.h"
#include "kvt_huge.h"
#include "kvt_arena.h"

typedef struct {
    uint64_t from [3];              //  Prefix blocks per tier
    uint64_t computed;              //  Blocks computed
    uint64_t digest;                //  Over all output tokens
} s_outcome_t;

static void
s_workload (const char *endpoint, s_outcome_t *outcome)
{
    kvt_client_t *client = kvt_client_new (endpoint, 30000);
    kvt_client_hello_t hello;
    t_ok (kvt_client_hello (client, "test_multiprocess", &hello));
    memset (outcome, 0, sizeof (*outcome));
    //  Conversations that share prefixes, with capacity small enough that
    //  blocks are pushed down to host and disk and come back
    for (int turn = 0; turn < 24; turn++) {
        size_t count = (size_t) (3 + turn % 5) * hello.block_tokens + (size_t) turn;
        uint64_t *tokens = t_tokens (count, hello.vocab, (uint64_t) (turn % 6));
        kvt_client_generate_t out;
        t_ok (kvt_client_generate (client, "t", tokens, count, 3, &out));
        outcome->from [0] += out.from_gpu;
        outcome->from [1] += out.from_host;
        outcome->from [2] += out.from_nvme;
        outcome->computed += out.computed;
        for (size_t k = 0; k < out.token_count; k++)
            outcome->digest = outcome->digest * 1000003 + out.tokens [k];
        kvt_client_generate_fini (&out);
        free (tokens);
        if (turn % 4 == 3) {
            uint64_t moved;
            t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 8, &moved));
            t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 4, &moved));
        }
    }
    kvt_client_destroy (&client);
}

//  The disk tier's payload paths, from its gauges: 1 = by DMA straight
//  to or from the host arena, 0 = through the store's staging
static void
s_disk_paths (const char *endpoint, uint64_t *direct_reads, uint64_t *direct_writes)
{
    kvt_client_t *client = kvt_client_new (endpoint, 30000);
    *direct_reads = t_stat (client, "tier_nvme.direct_reads");
    *direct_writes = t_stat (client, "tier_nvme.direct_writes");
    kvt_client_destroy (&client);
}

int
main (void)
{
    if (!getenv ("KVTIER")) {
        fprintf (stderr, "test_multiprocess: KVTIER (the kvtier binary) not set: skip\n");
        return T_EXIT_SKIP;
    }
    static const char *const small [] = {
        "tier_gpu/capacity_blocks=24", "tier_host/capacity_blocks=16", NULL };
    kvt_config_t *config = t_config (small);
    kvt_runtime_t *runtime = t_start_runtime (config);
    s_outcome_t threads;
    s_workload (kvt_runtime_ipc_endpoint (runtime), &threads);
    //  Threads share a private arena, on huge pages where THP is on: the
    //  disk reads straight into it (tier_nvme/direct = auto), as it would
    //  into 4 KiB pages where THP is off (its staging would be no better)
    uint64_t direct_reads, direct_writes;
    s_disk_paths (kvt_runtime_ipc_endpoint (runtime), &direct_reads, &direct_writes);
    t_check (direct_reads == 1 && direct_writes == 1);
    kvt_runtime_destroy (&runtime);

    char path [1024], error [256];
    const char *source = getenv ("KVT_SOURCE_DIR");
    snprintf (path, sizeof (path), "%s/configs/multiprocess.cfg", source? source: KVT_SOURCE_DIR);
    t_ok (kvt_config_load (config, path, error, sizeof (error)));
    runtime = t_start_runtime (config);
    int migration_pid = kvt_runtime_actor_pid (runtime, "migration");
    int host_pid = kvt_runtime_actor_pid (runtime, "tier_host");
    t_check (migration_pid > 0 && host_pid > 0);
    t_check (kvt_runtime_actor_pid (runtime, "prefix_index") == 0);    //  A thread
    s_outcome_t processes;
    s_workload (kvt_runtime_ipc_endpoint (runtime), &processes);
    //  An actor process's arena is a memfd, on 2 MiB pages where huge pages
    //  are reserved or MADV_COLLAPSE could move it onto them, which the
    //  supervisor tells the actor processes: then the disk reads straight
    //  into it; on 4 KiB pages, with THP on, reads go through the store's
    //  huge-page staging. The outcome below must be the same either way.
    s_disk_paths (kvt_runtime_ipc_endpoint (runtime), &direct_reads, &direct_writes);
    t_check (direct_writes == 1);
    bool large = kvt_arena_large_pages (kvt_arena_find ("host"));
    t_check (direct_reads == (large || !kvt_huge_thp_enabled ()? 1: 0));
    printf ("process mode: the host arena is on %s pages, disk reads %s\n",
            large? "2 MiB": "4 KiB", direct_reads? "direct": "through the staging");
    t_check (memcmp (&threads, &processes, sizeof (threads)) == 0);
    t_check (threads.from [1] > 0 && threads.from [2] > 0);    //  The tiers were used
    printf ("gpu %" PRIu64 " host %" PRIu64 " nvme %" PRIu64 " computed %" PRIu64 "\n",
            threads.from [0], threads.from [1], threads.from [2], threads.computed);

    //  An actor process that dies is noticed
    t_check (kvt_runtime_poll (runtime) == 0);
    kill (host_pid, SIGKILL);
    int deaths = 0;
    for (int waited = 0; waited < 100 && !deaths; waited++) {
        zclock_sleep (20);
        deaths = kvt_runtime_poll (runtime);
    }
    t_check (deaths == 1 && kvt_runtime_deaths (runtime) == 1);
    char run_dir [512];
    snprintf (run_dir, sizeof (run_dir), "%s", kvt_runtime_run_dir (runtime));
    kvt_runtime_destroy (&runtime);

    //  Nothing left behind: processes reaped, run folder gone
    t_check (kill (migration_pid, 0) != 0 && errno == ESRCH);
    struct stat info;
    t_check (stat (run_dir, &info) != 0);

    //  A program in KVTIER's place that never reports (an embedder's own
    //  binary): the start fails at once with an error, no hang, and the
    //  runtime is torn down cleanly
    char *kvtier = strdup (getenv ("KVTIER"));
    t_check (kvtier);
    setenv ("KVTIER", "/bin/true", 1);
    runtime = kvt_runtime_new (config, kvt_actors_all ());
    int64_t started = zclock_mono ();
    t_check (kvt_runtime_start (runtime) == -EIO);
    t_check (zclock_mono () - started < 5000);
    kvt_runtime_destroy (&runtime);
    setenv ("KVTIER", kvtier, 1);
    free (kvtier);
    kvt_config_destroy (&config);
    printf ("test_multiprocess: OK\n");
    return T_EXIT_PASS;
}
