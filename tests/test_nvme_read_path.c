/*  =========================================================================
    test_nvme_read_path - with tier_nvme/direct = auto the disk tier times
    both read paths while reads queue, and every block reads back exact
    whichever way it came

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A prefix is pushed to disk and loaded back several times with a queue
    of 8 reads, so that each load keeps reads waiting for room at the
    device (what kvt_read_path needs to time a path). With direct = auto
    the tier runs rounds (read_path_rounds), sends reads both ways
    (direct_ops and bounce_ops both grow, though the arena says one), and
    every load matches the stored bytes. With direct = on it learns
    nothing and never bounces a read. Which path wins is the disk's
    business: the choice itself is tested on synthetic disks in
    kvt_read_path's selftest.
@end
*/

#include "testutil.h"

#define S_BLOCKS 600
#define S_LOADS 6

typedef struct {
    uint64_t rounds, direct_ops, bounce_ops;
    bool learning;                  //  read_path_rounds is reported
} s_outcome_t;

static void
s_loads (const char *direct, s_outcome_t *outcome)
{
    char mode [64];
    snprintf (mode, sizeof (mode), "tier_nvme/direct=%s", direct);
    const char *overrides [] = { "tier_gpu/capacity_blocks=1000",
        "tier_host/capacity_blocks=1400", "tier_nvme/capacity_blocks=1000",
        "migration/high_watermark=100", "migration/low_watermark=99",
        "tier_nvme/queue_depth=8", "tier_nvme/queue_mib=0", mode, NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_nvme_read_path", 60000);
    kvt_client_t *client = session.client;
    kvt_client_hello_t hello = session.hello;
    size_t count = S_BLOCKS * hello.block_tokens;
    size_t bytes = S_BLOCKS * hello.block_bytes;
    uint64_t *tokens;
    uint8_t *kv;
    t_store_prefix (client, &hello, S_BLOCKS, 3, 5, &tokens, &kv);
    for (int load = 0; load < S_LOADS; load++) {
        uint64_t moved;
        t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, S_BLOCKS, &moved));
        t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, S_BLOCKS, &moved));
        t_check (moved == S_BLOCKS);
        kvt_client_load_t loaded;
        t_ok (kvt_client_load (client, "", tokens, count, &loaded));
        t_check (loaded.blocks == S_BLOCKS && loaded.kv_bytes == bytes);
        t_check (loaded.tiers [0] == KVT_TIER_NVME
                 && loaded.tiers [S_BLOCKS - 1] == KVT_TIER_NVME);
        t_check (memcmp (loaded.kv, kv, bytes) == 0);
        kvt_client_load_fini (&loaded);
    }
    kvt_client_stats_t stats;
    t_ok (kvt_client_stats (client, &stats));
    memset (outcome, 0, sizeof (*outcome));
    outcome->learning = kvt_client_stats_find (&stats, "tier_nvme.read_path_rounds",
                                               &outcome->rounds);
    kvt_client_stats_fini (&stats);
    outcome->direct_ops = t_stat (client, "tier_nvme.direct_ops");
    outcome->bounce_ops = t_stat (client, "tier_nvme.bounce_ops");
    t_check (t_stat (client, "tier_nvme.checksum_failures") == 0);
    printf ("direct = %s: %" PRIu64 " rounds, %" PRIu64 " direct and %" PRIu64
            " bounced I/Os\n", direct, outcome->rounds, outcome->direct_ops,
            outcome->bounce_ops);
    free (kv);
    free (tokens);
    t_session_end (&session);
}

int
main (void)
{
    //  Learning: rounds ran, and reads went both ways (writes are direct)
    s_outcome_t learn;
    s_loads ("auto", &learn);
    t_check (learn.learning && learn.rounds >= 4);
    t_check (learn.bounce_ops > 0 && learn.direct_ops > (uint64_t) S_BLOCKS * S_LOADS);
    //  Told: one way, nothing learned
    s_outcome_t told;
    s_loads ("on", &told);
    t_check (!told.learning && told.bounce_ops == 0);
    printf ("test_nvme_read_path: OK\n");
    return T_EXIT_PASS;
}
