/*  =========================================================================
    test_shared_prefix - requests at once over one host-resident prefix

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A prompt of S_BLOCKS blocks is computed, demoted to the host tier, and
    then S_CLIENTS clients send it at once, S_ROUNDS times (a fresh prompt
    each round), with copied promotions (migration/stream_promotion = 0)
    and with streamed ones (1). Only one of the requests may promote a
    block off the GPU: the others' matches cut there (prefix_index
    match_cut_promoting) and they compute the rest. Before that rule, each
    request promoted the shared blocks from the same host slots: GPU slots
    leaked (the tier held 96 blocks for an index of 16), host slots were
    freed twice, and the tier ran out (ENOSPC). Checked: every request
    succeeds with the tokens the prompt gave when computed, and the GPU
    and host tiers hold exactly the blocks the index has there. Also with
    migration/overlap_upkeep = 2, where a copied promotion gives up the
    job slot at its copy and the next request's promotion runs beside it.
    With migration/promote_piece_kib = 1, a copied promotion moves each
    block in the index as soon as its own copy ends, while the later ones
    cross: the other requests' matches may then find the first blocks on
    the GPU already; and so from NVMe, where each read chunk's copy
    readies its blocks at once. With scheduler/plan_piece_kib = 1 (and
    plan_piece_min_blocks = 1) and overlap_upkeep = 2 the scheduler matches
    and promotes the prompt a block a piece, each piece promoted while the
    next is matched (kvt_scheduler_plan.c): the same checks hold; a block
    of a later piece that fails its checksum on disk cuts the prefix there;
    the prompt all on the GPU then goes in the same pieces, none promoted.
    A promotion's piece the index refuses to move: the request's error,
    nothing lost, only the moved blocks counted promoted. And at index level: a
    demotion's mover that unpins a block after another request's match
    found it leaves that request's mark in place.
@end
*/

#include <pthread.h>
#include "testutil.h"

#define S_BLOCKS 16                 //  Full blocks of each prompt
#define S_CLIENTS 4                 //  Requests at once
#define S_ROUNDS 5                  //  Prompts, one after the other

typedef struct {
    const char *endpoint;           //  The runtime's front door
    const uint64_t *tokens;         //  The prompt
    size_t count;                   //  Its tokens
    kvt_client_generate_t out;      //  The answer
    int rc;                         //  Its status
} s_request_t;

static void *
s_send (void *arg)
{
    s_request_t *request = (s_request_t *) arg;
    kvt_client_t *client = kvt_client_new (request->endpoint, 30000);
    request->rc = client? kvt_client_generate (client, "", request->tokens, request->count, 4,
                                               &request->out): -EIO;
    kvt_client_destroy (&client);
    return NULL;
}

//  'piece_kib': migration/promote_piece_kib, 0 for the default (one
//  piece: the whole prefix); 1 moves each block in the index as soon as
//  its own copy ends, while the next ones cross. 'nvme': the prompt is
//  demoted on to disk, so its blocks come back through staging, in read
//  chunks that feed the same pieces. 'plan': scheduler/plan_piece_kib,
//  0 for the default (one piece for so short a prompt); 1 matches and
//  promotes a block a piece (with overlap_upkeep 2 only)
static void
s_run (bool stream, int overlap, int piece_kib, bool nvme, int plan)
{
    char overlap_key [64], piece_key [64], plan_key [64], plan_min_key [64];
    snprintf (overlap_key, sizeof (overlap_key), "migration/overlap_upkeep=%d", overlap);
    snprintf (piece_key, sizeof (piece_key), "migration/promote_piece_kib=%d",
              piece_kib? piece_kib: 65536);
    snprintf (plan_key, sizeof (plan_key), "scheduler/plan_piece_kib=%d", plan? plan: 65536);
    snprintf (plan_min_key, sizeof (plan_min_key), "scheduler/plan_piece_min_blocks=%d",
              plan? 1: 1024);
    const char *overrides [] = { "tier_gpu/capacity_blocks=96", "tier_host/capacity_blocks=96",
        "tier_nvme/capacity_blocks=256",
        stream? "migration/stream_promotion=1": "migration/stream_promotion=0", overlap_key,
        piece_key, plan_key, plan_min_key, NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_shared_prefix", 30000);
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    for (int round = 0; round < S_ROUNDS; round++) {
        uint64_t *tokens = t_tokens (count, session.hello.vocab, 500 + (uint64_t) round);
        kvt_client_generate_t first;
        t_ok (kvt_client_generate (session.client, "", tokens, count, 4, &first));
        uint64_t moved;
        t_ok (kvt_client_demote (session.client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
        t_check (moved >= S_BLOCKS);
        if (nvme) {
            t_ok (kvt_client_demote (session.client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
            t_check (moved >= S_BLOCKS);
        }
        s_request_t requests [S_CLIENTS];
        pthread_t threads [S_CLIENTS];
        for (int c = 0; c < S_CLIENTS; c++) {
            requests [c] = (s_request_t) { kvt_runtime_ipc_endpoint (session.runtime), tokens,
                                           count, { 0 }, 0 };
            t_check (pthread_create (&threads [c], NULL, s_send, &requests [c]) == 0);
        }
        for (int c = 0; c < S_CLIENTS; c++) {
            pthread_join (threads [c], NULL);
            t_ok (requests [c].rc);
            t_check (requests [c].out.token_count == first.token_count);
            t_check (memcmp (requests [c].out.tokens, first.tokens,
                             first.token_count * sizeof (uint64_t)) == 0);
            kvt_client_generate_fini (&requests [c].out);
        }
        kvt_client_generate_fini (&first);
        free (tokens);
    }
    //  Every slot in use is a block the index knows, on its tier, once
    //  the frees that trail the last replies have landed
    t_check (t_tiers_settle (session.client, 0, 50, 5000));
    t_check (t_stat (session.client, "migration.copy_errors") == 0);
    uint64_t cut = t_stat (session.client, "prefix_index.match_cut_promoting");
    uint64_t detached = t_stat (session.client, "migration.jobs_detached");
    uint64_t pieces = t_stat (session.client, "migration.promote_pieces");
    uint64_t promoted = t_stat (session.client, "migration.promoted");
    uint64_t plan_pieces = t_stat (session.client, "scheduler.plan_pieces");
    uint64_t plan_promotes = t_stat (session.client, "scheduler.plan_piece_promotes");
    printf ("stream_promotion = %d, overlap_upkeep = %d, promote_piece_kib = %d, "
            "plan_piece_kib = %d%s: %d x %d requests at once, the same tokens, no slot lost; "
            "%" PRIu64 " matches cut at a block another request was promoting, %" PRIu64
            " promotions answered after giving up the job slot, %" PRIu64 " blocks promoted in "
            "%" PRIu64 " index moves; %" PRIu64 " plan pieces, %" PRIu64 " of them promoted\n",
            stream, overlap, piece_kib, plan, nvme? ", from NVMe": "", S_ROUNDS, S_CLIENTS,
            cut, detached, promoted, pieces, plan_pieces, plan_promotes);
    //  A plan goes in pieces only where migration runs the next job beside
    //  a copy (overlap_upkeep 2), and not for a stream promotion. Then one
    //  request a round matches the whole prompt, a block a piece, and
    //  promotes each
    bool plan_in_pieces = plan && overlap == 2 && !stream;
    if (plan_in_pieces) {
        t_check (plan_pieces >= S_ROUNDS * S_BLOCKS);
        t_check (plan_promotes >= S_ROUNDS * S_BLOCKS);
    }
    else
        t_check (plan_pieces == 0 && plan_promotes == 0);
    //  A copied promotion moves its blocks in the index piece by piece:
    //  by default one piece a promotion (a plan in pieces promotes each
    //  piece), with 1 KiB pieces one a block (from
    //  disk: one a read chunk at least, since a chunk's copy readies all
    //  its blocks at once)
    if (!stream) {
        t_check (promoted >= S_ROUNDS * S_BLOCKS);
        if (nvme)
            t_check (pieces >= S_ROUNDS && pieces <= promoted);
        else
            t_check (piece_kib? pieces == promoted
                              : pieces <= S_ROUNDS * S_CLIENTS + plan_promotes);
    }
    //  With 2, a copied promotion answers once its copy is done, after the
    //  next job started (kvt_migration_promote.c)
    //  (A prefix all on disk is copied chunk by chunk as it is read, in the
    //  job slot: nothing is left to run beside the next job)
    t_check (detached > 0 || stream || overlap != 2 || nvme);
    t_session_end (&session);
}

//  Index level, the order of messages a demotion and two requests can
//  take: a mover has claimed and moved block 0 of a host prefix and not
//  yet unpinned it, request A's pinning match finds it (A promotes it),
//  the mover unpins. Request B's pinning match must still cut at block 0:
//  the mark goes with the last pin (or A's IDX_MOVE), not with the
//  mover's.
static size_t
s_match (kvt_runtime_t *runtime, const uint64_t *hashes, size_t count)
{
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MATCH);
    kvt_msg_set_array (msg, KVT_IDX_MATCH_HASHES, hashes, count);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PIN, 1);
    kvt_msg_t *reply = t_call (runtime, "prefix_index", msg);
    size_t matched = 0;
    kvt_msg_array (reply, KVT_IDX_MATCH_OK_TIERS, &matched);
    kvt_msg_destroy (&reply);
    return matched;
}

static void
s_mover_race (void)
{
    t_session_t session;
    t_session_start (&session, t_config (NULL), "test_shared_prefix", 30000);
    size_t count = 4 * session.hello.block_tokens;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 77);
    kvt_client_generate_t first;
    t_ok (kvt_client_generate (session.client, "", tokens, count, 2, &first));
    uint64_t moved;
    t_ok (kvt_client_demote (session.client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (session.client, "", tokens, count, &where));
    t_check (where.matched_blocks == 4 && where.tiers [0] == KVT_TIER_HOST);
    //  The mover: block 0 claimed (pinned, moving) and moved (in place)
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_CLAIM);
    kvt_msg_set_array (msg, KVT_IDX_CLAIM_HASHES, where.hashes, 1);
    kvt_msg_set_u64 (msg, KVT_IDX_CLAIM_TIER, KVT_TIER_HOST);
    kvt_msg_set_u64 (msg, KVT_IDX_CLAIM_MAX_BLOCKS, 1);
    kvt_msg_t *claim = t_call (session.runtime, "prefix_index", msg);
    size_t claimed;
    const uint64_t *claim_slots = kvt_msg_array (claim, KVT_IDX_CLAIM_OK_SLOTS, &claimed);
    t_check (claimed == 1);
    msg = kvt_msg_new (KVT_MSG_IDX_MOVE);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_HASHES, where.hashes, 1);
    kvt_msg_set_u64 (msg, KVT_IDX_MOVE_TIER, KVT_TIER_HOST);
    kvt_msg_set_array (msg, KVT_IDX_MOVE_SLOTS, claim_slots, 1);
    kvt_msg_t *reply = t_call (session.runtime, "prefix_index", msg);
    kvt_msg_destroy (&reply);
    size_t a = s_match (session.runtime, where.hashes, 4);
    t_check (a == 4);                                       //  A will promote all four
    t_check (s_match (session.runtime, where.hashes, 4) == 0);  //  B cuts at block 0
    t_unpin (session.runtime, where.hashes, 1);             //  The mover's unpin
    t_check (s_match (session.runtime, where.hashes, 4) == 0);  //  Still: A promotes it
    t_unpin (session.runtime, where.hashes, 4);             //  A is done, without moving
    size_t b = s_match (session.runtime, where.hashes, 4);  //  Now B may promote them
    t_check (b == 4);
    t_unpin (session.runtime, where.hashes, b);
    printf ("a mover's unpin leaves the mark of the request promoting the block: OK\n");
    kvt_msg_destroy (&claim);
    kvt_client_lookup_fini (&where);
    kvt_client_generate_fini (&first);
    free (tokens);
    t_session_end (&session);
}

//  A plan in pieces whose later piece holds a block that fails its
//  checksum: the prefix is cut there (the blocks before it served from
//  disk, the rest recomputed), the later pieces' promotions still land,
//  and the output is the same.
static void
s_pieces_miss (void)
{
    const char *overrides [] = { "tier_gpu/capacity_blocks=96", "tier_host/capacity_blocks=96",
        "tier_nvme/capacity_blocks=256", "migration/stream_promotion=0",
        "migration/overlap_upkeep=2", "scheduler/plan_piece_kib=1",
        "scheduler/plan_piece_min_blocks=1", NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_shared_prefix", 30000);
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 900);
    kvt_client_generate_t first, again;
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &first));
    kvt_client_load_t kv;
    t_ok (kvt_client_load (client, "", tokens, count, &kv));
    t_check (kv.blocks == S_BLOCKS);
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_ok (kvt_client_demote (client, KVT_TIER_HOST, KVT_TIER_NVME, 1000, &moved));
    t_check (moved >= S_BLOCKS);
    size_t bad = S_BLOCKS / 2 + 2;
    t_check (t_flip_on_disk (session.runtime,
                             (const uint8_t *) kv.kv + bad * session.hello.block_bytes));
    uint64_t pieces_before = t_stat (client, "scheduler.plan_pieces");
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &again));
    t_check (again.from_nvme == bad && again.computed == S_BLOCKS - bad);
    t_check (again.token_count == first.token_count
             && memcmp (again.tokens, first.tokens, first.token_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&again);
    t_check (t_stat (client, "scheduler.prefix_cut_by_misses") == 1);
    t_check (t_stat (client, "scheduler.plan_pieces") - pieces_before == S_BLOCKS);
    //  Every block is on the GPU now: those after the bad one were
    //  promoted by their own pieces, the bad one recomputed
    pieces_before = t_stat (client, "scheduler.plan_pieces");
    uint64_t promotes_before = t_stat (client, "scheduler.plan_piece_promotes");
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &again));
    t_check (again.from_gpu == S_BLOCKS && again.computed == 0);
    t_check (t_stat (client, "scheduler.plan_pieces") - pieces_before == S_BLOCKS);
    t_check (t_stat (client, "scheduler.plan_piece_promotes") == promotes_before);
    kvt_client_generate_fini (&again);
    t_check (t_tiers_settle (client, 0, 50, 5000));
    printf ("a plan in pieces, block %zu failing its checksum: cut there, the same tokens: OK\n",
            bad);
    kvt_client_load_fini (&kv);
    kvt_client_generate_fini (&first);
    free (tokens);
    t_session_end (&session);
}

//  The index refuses a promotion's first piece (prefix_index/
//  test_refuse_gpu_moves = 1, a piece a block): the request gets the
//  error, the index forgets that block and its slots go back, the later
//  pieces land and only they count as promoted; the runtime keeps
//  serving the same prompt, recomputed from the forgotten block. With
//  'write_through' (migration/write_through = 1) the moved blocks keep
//  their host slots as shadows, and the forgotten one's slot goes back:
//  no shadow of a block the index no longer has.
static void
s_refused_piece (bool write_through)
{
    const char *overrides [] = { "tier_gpu/capacity_blocks=96", "tier_host/capacity_blocks=96",
        "tier_nvme/capacity_blocks=256", "migration/stream_promotion=0",
        "migration/promote_piece_kib=1", "prefix_index/test_refuse_gpu_moves=1",
        write_through? "migration/write_through=1": "migration/write_through=0", NULL };
    t_session_t session;
    t_session_start (&session, t_config (overrides), "test_shared_prefix", 30000);
    kvt_client_t *client = session.client;
    size_t count = S_BLOCKS * session.hello.block_tokens + 5;
    uint64_t *tokens = t_tokens (count, session.hello.vocab, 901);
    kvt_client_generate_t first, again = { 0 };
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &first));
    if (write_through)              //  Shadowed in the background
        t_check (t_wait_stat (client, "migration.write_through_copies", S_BLOCKS) == S_BLOCKS);
    uint64_t moved;
    t_ok (kvt_client_demote (client, KVT_TIER_GPU, KVT_TIER_HOST, 1000, &moved));
    t_check (moved >= S_BLOCKS);
    int rc = kvt_client_generate (client, "", tokens, count, 4, &again);
    t_check (rc == -EIO);
    t_check (strstr (kvt_client_error_detail (client), "cached prefix") != NULL);
    kvt_client_generate_fini (&again);
    t_check (t_stat (client, "prefix_index.test_moves_refused") == 1);
    t_check (t_stat (client, "migration.moves_refused") == 1);
    t_check (t_stat (client, "migration.promoted") == S_BLOCKS - 1);
    //  Only the moved blocks kept their host slots as shadows; the host
    //  tier holds exactly those
    uint64_t shadows = t_stat (client, "migration.shadows");
    t_check (shadows == (write_through? S_BLOCKS - 1: 0));
    t_check (t_stat (client, "tier_host.used_blocks")
             == t_stat (client, "prefix_index.blocks_host") + shadows);
    //  Block 0 is gone: the prompt is computed again, the same tokens
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &again));
    t_check (again.computed == S_BLOCKS);
    t_check (again.token_count == first.token_count
             && memcmp (again.tokens, first.tokens, first.token_count * sizeof (uint64_t)) == 0);
    kvt_client_generate_fini (&again);
    t_ok (kvt_client_generate (client, "", tokens, count, 4, &again));
    t_check (again.from_gpu == S_BLOCKS && again.computed == 0);
    kvt_client_generate_fini (&again);
    if (!write_through)             //  (Else the host tier also holds shadows)
        t_check (t_tiers_settle (client, 0, 50, 5000));
    t_check (t_stat (client, "tier_gpu.bad_frees") == 0);
    t_check (t_stat (client, "tier_host.bad_frees") == 0);
    printf ("a promotion's first piece refused by the index%s: the error, %d blocks promoted, "
            "%" PRIu64 " shadows kept, no slot lost, then served: OK\n",
            write_through? " (write-through)": "", S_BLOCKS - 1, shadows);
    kvt_client_generate_fini (&first);
    free (tokens);
    t_session_end (&session);
}

int
main (void)
{
    s_mover_race ();
    s_run (false, 0, 0, false, 0);
    s_run (true, 0, 0, false, 0);
    s_run (false, 2, 0, false, 0);  //  Promotions give up the job slot at their copy
    s_run (true, 2, 0, false, 0);
    s_run (false, 0, 1, false, 0);  //  Each block moved in the index as its copy ends
    s_run (false, 2, 1, false, 0);
    s_run (false, 0, 1, true, 0);   //  From disk, in read chunks
    s_run (false, 2, 1, true, 0);
    s_run (false, 2, 0, false, 1);  //  Each block matched and promoted as a piece
    s_run (false, 2, 1, true, 1);   //  ... from disk
    s_run (false, 0, 0, false, 1);  //  (Not in pieces: nothing would run beside)
    s_run (true, 2, 0, false, 1);   //  (Nor a stream promotion)
    s_pieces_miss ();
    s_refused_piece (false);
    s_refused_piece (true);
    printf ("test_shared_prefix: OK\n");
    return T_EXIT_PASS;
}
