/*  =========================================================================
    test_match_parts - a long prefix matched in parts is still one match

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The scheduler plans a long prefix in pieces (scheduler/plan_piece_kib,
    issue #3) by asking the index with IDX_MATCH_PARTS: the index answers
    each part_blocks blocks matched as an IDX_MATCH_PART as soon as it has
    them, so migration starts on the first piece while the index matches
    the rest. What must not change is what one match means:
      - the index's answer: parts in order, p / 8, p / 4, p / 2, then p
        until the end of the prefix, where they halve down to p / 8
        (kvt_prefix_index_part_size), then IDX_MATCH_PARTS_OK with the
        rest, the same tiers and slots as IDX_MATCH, cut at the first
        block not cached; every block pinned;
      - the policy: a remote policy (this test binds its socket) hears one
        request, with depths 0 .. n - 1 and chained parents, as for a
        match in one answer;
      - eviction: making room for the first piece's promotion never takes
        the request's own later blocks, because the whole prefix is
        pinned in the same turn of the index's loop (lru, a GPU tier
        without a free slot whose oldest blocks are the prompt's later
        half: all 8 come from the GPU; session 12's pieces, each its own
        match, lost them to the first piece's victims call and
        recomputed them in 2 runs of 3); with the index the
        scheduler's guest (the default) and on a thread of its own;
      - a match in parts that outlives the scheduler's call leaves
        nothing pinned once its late parts are in; and its first part
        reached the scheduler, whose guest the index is, before the
        index's next step (the loop serves other sockets between steps).
@end
*/

#include <unistd.h>
#include "testutil.h"
#include "kvt_prefix_index_int.h"

#define S_BLOCKS 16                 //  Full blocks of each prompt

//  A prompt of S_BLOCKS full blocks and a few tokens more
static uint64_t *
s_prompt (const kvt_client_hello_t *hello, uint64_t seed, size_t *count)
{
    *count = S_BLOCKS * hello->block_tokens + 5;
    return t_tokens (*count, hello->vocab, seed);
}

//  The chained hashes of the prompt with 'seed' (S_BLOCKS, all cached)
static uint64_t *
s_hashes (t_session_t *session, uint64_t seed)
{
    size_t count;
    uint64_t *tokens = s_prompt (&session->hello, seed, &count);
    kvt_client_lookup_t where;
    t_ok (kvt_client_lookup (session->client, "", tokens, count, &where));
    t_check (where.matched_blocks == S_BLOCKS);
    uint64_t *hashes = (uint64_t *) malloc (S_BLOCKS * sizeof (uint64_t));
    memcpy (hashes, where.hashes, S_BLOCKS * sizeof (uint64_t));
    kvt_client_lookup_fini (&where);
    free (tokens);
    return hashes;
}

static void
s_generate (t_session_t *session, uint64_t seed, kvt_client_generate_t *out)
{
    size_t count;
    uint64_t *tokens = s_prompt (&session->hello, seed, &count);
    t_ok (kvt_client_generate (session->client, "", tokens, count, 2, out));
    free (tokens);
}

//  Start a runtime on 'overrides', compute the prompt 'seed' (its first
//  answer in 'first') and demote up to 'demote' GPU blocks to the host;
//  return how many moved
static uint64_t
s_start_demoted (t_session_t *session, const char *const *overrides, uint64_t seed,
                 uint64_t demote, kvt_client_generate_t *first)
{
    t_session_start (session, t_config (overrides), "test_match_parts", 30000);
    s_generate (session, seed, first);
    uint64_t moved;
    t_ok (kvt_client_demote (session->client, KVT_TIER_GPU, KVT_TIER_HOST, demote, &moved));
    return moved;
}

//  What an IDX_MATCH_PARTS came back as
typedef struct {
    size_t parts;                   //  IDX_MATCH_PARTs before the IDX_MATCH_PARTS_OK
    size_t matched;                 //  Blocks in all of them
    size_t sizes [S_BLOCKS];        //  Blocks in each part
    uint64_t tiers [S_BLOCKS], slots [S_BLOCKS];
} s_answer_t;

//  Ask the index for 'count' hashes in parts of 'part_blocks', straight
//  from a peer's socket; every part must start where the last one ended.
static void
s_match_parts (kvt_runtime_t *runtime, const uint64_t *hashes, size_t count, bool pin,
               size_t part_blocks, s_answer_t *answer)
{
    zsock_t *dealer = t_dealer (runtime, "prefix_index");
    kvt_msg_t *msg = kvt_msg_new (KVT_MSG_IDX_MATCH_PARTS);
    kvt_msg_set_array (msg, KVT_IDX_MATCH_PARTS_HASHES, hashes, count);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PARTS_PIN, pin);
    kvt_msg_set_u64 (msg, KVT_IDX_MATCH_PARTS_PART_BLOCKS, part_blocks);
    kvt_msg_set_request_id (msg, 12);
    t_ok (kvt_msg_send (&msg, dealer));
    memset (answer, 0, sizeof (*answer));
    while (true) {
        kvt_msg_t *reply = NULL;
        t_ok (kvt_msg_recv (dealer, &reply));
        t_check (kvt_msg_request_id (reply) == 12);
        bool part = kvt_msg_id (reply) == KVT_MSG_IDX_MATCH_PART;
        t_check (part || kvt_msg_id (reply) == KVT_MSG_IDX_MATCH_PARTS_OK);
        t_check (kvt_msg_answers (kvt_msg_id (reply), KVT_MSG_IDX_MATCH_PARTS));
        t_check (kvt_msg_is_partial (reply) == part);
        size_t n;
        const uint64_t *tiers = kvt_msg_array (reply, part? KVT_IDX_MATCH_PART_TIERS
                                                          : KVT_IDX_MATCH_PARTS_OK_TIERS, &n);
        const uint64_t *slots = kvt_msg_array (reply, part? KVT_IDX_MATCH_PART_SLOTS
                                                          : KVT_IDX_MATCH_PARTS_OK_SLOTS, NULL);
        if (part) {
            t_check (kvt_msg_u64 (reply, KVT_IDX_MATCH_PART_FIRST) == answer->matched);
            t_check (n >= 1 && n <= part_blocks && answer->parts < S_BLOCKS);
            answer->sizes [answer->parts++] = n;
        }
        t_check (answer->matched + n <= S_BLOCKS);
        memcpy (answer->tiers + answer->matched, tiers, n * sizeof (uint64_t));
        memcpy (answer->slots + answer->matched, slots, n * sizeof (uint64_t));
        answer->matched += n;
        kvt_msg_destroy (&reply);
        if (!part)
            break;
    }
    zsock_destroy (&dealer);
}

//  True if 'answer' came in parts of exactly 'sizes'
static bool
s_sizes_are (const s_answer_t *answer, const size_t *sizes, size_t count)
{
    return answer->parts == count
        && memcmp (answer->sizes, sizes, count * sizeof (size_t)) == 0;
}

//  The index's answer in parts, against the same match in one answer
static void
s_answer_in_parts (void)
{
    t_session_t session;
    kvt_client_generate_t first;
    t_check (s_start_demoted (&session, NULL, 5, 6, &first) == 6);
    uint64_t *hashes = s_hashes (&session, 5);
    //  A part answers its own request only
    t_check (kvt_msg_answers (KVT_MSG_IDX_MATCH_PART, KVT_MSG_IDX_MATCH_PARTS));
    t_check (!kvt_msg_answers (KVT_MSG_IDX_MATCH_PART, KVT_MSG_IDX_MATCH_PARTS_OK));
    t_check (!kvt_msg_answers (KVT_MSG_IDX_MATCH_PART, KVT_MSG_IDX_MATCH));
    t_check (kvt_msg_answers (KVT_MSG_IDX_MATCH_OK, KVT_MSG_IDX_MATCH));
    s_answer_t whole, parts;
    s_match_parts (session.runtime, hashes, S_BLOCKS, false, 0, &whole);
    t_check (whole.parts == 0 && whole.matched == S_BLOCKS);
    //  1 + 1 + 2 up, 5, then halves of what is left, 3 + 2 + 1, and
    //  the last block in IDX_MATCH_PARTS_OK; pinned
    s_match_parts (session.runtime, hashes, S_BLOCKS, true, 5, &parts);
    t_check (parts.parts == 7 && parts.matched == S_BLOCKS);
    t_check (s_sizes_are (&parts, (size_t []) { 1, 1, 2, 5, 3, 2, 1 }, 7));
    t_check (memcmp (parts.tiers, whole.tiers, sizeof (whole.tiers)) == 0);
    t_check (memcmp (parts.slots, whole.slots, sizeof (whole.slots)) == 0);
    t_check (t_unpin (session.runtime, hashes, S_BLOCKS) == S_BLOCKS);   //  One pin each
    //  Parts as long as the prefix: one answer
    s_match_parts (session.runtime, hashes, S_BLOCKS, false, S_BLOCKS, &parts);
    t_check (parts.parts == 0 && parts.matched == S_BLOCKS);
    //  A block not cached cuts the match: parts of 1, 1, 1, 3, then 1 block
    uint64_t cut [S_BLOCKS];
    memcpy (cut, hashes, sizeof (cut));
    cut [7] = 0x5eed;
    s_match_parts (session.runtime, cut, S_BLOCKS, true, 3, &parts);
    t_check (parts.parts == 4 && parts.matched == 7);
    t_check (s_sizes_are (&parts, (size_t []) { 1, 1, 1, 3 }, 4));
    t_check (memcmp (parts.tiers, whole.tiers, 7 * sizeof (uint64_t)) == 0);
    t_check (t_unpin (session.runtime, hashes, 7) == 7);
    //  Cut on a part's last block (parts of 1, 2, 4 end at block 7): the
    //  answer ends with an empty OK
    s_match_parts (session.runtime, cut, S_BLOCKS, false, 8, &parts);
    t_check (parts.parts == 3 && parts.matched == 7);
    t_check (s_sizes_are (&parts, (size_t []) { 1, 2, 4 }, 3));
    //  A long prefix: 512, 1024, 2048, then 4096 up to the last 8192
    //  blocks, halved down to 512, and 64 in IDX_MATCH_PARTS_OK
    size_t left = 65536, ends [24], n = 0;
    while (n < 24) {
        size_t part = kvt_prefix_index_part_size (4096, n, left);
        if (part >= left)
            break;
        ends [n++] = part;
        left -= part;
    }
    t_check (n == 21 && left == 64);
    t_check (ends [0] == 512 && ends [1] == 1024 && ends [2] == 2048 && ends [16] == 4096);
    t_check (ends [17] == 2304 && ends [18] == 1152 && ends [19] == 576 && ends [20] == 512);
    printf ("IDX_MATCH_PARTS: parts ramped up and down, as IDX_MATCH; cut at a miss: OK\n");
    free (hashes);
    kvt_client_generate_fini (&first);
    t_session_end (&session);
}

//  Every POLICY_EVENTS message that reaches 'router' within 'quiet_ms' of
//  the last: ACCESS events counted in 'messages' (messages holding any)
//  and checked against the prompt's 'hashes' (depth k, parent k - 1)
static size_t
s_access_messages (zsock_t *router, const uint64_t *hashes, size_t *events, int quiet_ms)
{
    size_t messages = 0;
    *events = 0;
    zsock_set_rcvtimeo (router, quiet_ms);
    while (true) {
        kvt_msg_t *msg = NULL;
        if (kvt_msg_recv (router, &msg) != 0)
            break;                  //  Quiet
        if (kvt_msg_id (msg) == KVT_MSG_POLICY_EVENTS) {
            size_t count;
            const uint64_t *kinds = kvt_msg_array (msg, KVT_POLICY_EVENTS_KINDS, &count);
            const uint64_t *ids = kvt_msg_array (msg, KVT_POLICY_EVENTS_HASHES, NULL);
            const uint64_t *parents = kvt_msg_array (msg, KVT_POLICY_EVENTS_PARENTS, NULL);
            const uint64_t *depths = kvt_msg_array (msg, KVT_POLICY_EVENTS_DEPTHS, NULL);
            size_t accesses = 0;
            for (size_t k = 0; k < count; k++) {
                if (kinds [k] != KVT_POLICY_EVENT_ACCESS)
                    continue;
                t_check (depths [k] < S_BLOCKS && ids [k] == hashes [depths [k]]);
                t_check (parents [k] == (depths [k]? hashes [depths [k] - 1]: 0));
                accesses++;
            }
            *events += accesses;
            messages += accesses > 0;
        }
        kvt_msg_destroy (&msg);
    }
    return messages;
}

//  The policy hears a match in parts as one request
static void
s_one_request (void)
{
    char endpoint [256], option [300];
    snprintf (endpoint, sizeof (endpoint), "ipc:///tmp/kvt_test_match_parts_%d.ipc",
              (int) getpid ());
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    t_check (router && zsock_bind (router, "%s", endpoint) == 0);
    snprintf (option, sizeof (option), "migration/policy=remote:%s", endpoint);
    //  (This test answers no victims call: the index falls back to its
    //  LRU list, and reconnects at once for the events that follow)
    const char *overrides [] = { option, "migration/policy_retry_ms=0", NULL };
    t_session_t session;
    kvt_client_generate_t first;
    s_start_demoted (&session, overrides, 6, 4, &first);
    uint64_t *hashes = s_hashes (&session, 6);
    size_t events;
    s_access_messages (router, hashes, &events, 300);   //  What came before
    s_answer_t parts;
    s_match_parts (session.runtime, hashes, S_BLOCKS, true, 4, &parts);
    t_check (parts.parts == 7 && parts.matched == S_BLOCKS);
    size_t messages = s_access_messages (router, hashes, &events, 300);
    t_check (messages == 1);
    t_check (events == S_BLOCKS);
    t_check (t_unpin (session.runtime, hashes, S_BLOCKS) == S_BLOCKS);
    printf ("a match in 7 parts reaches the policy as one request, depths 0..%d: OK\n",
            S_BLOCKS - 1);
    free (hashes);
    kvt_client_generate_fini (&first);
    t_session_end (&session);
    zsock_destroy (&router);
    snprintf (option, sizeof (option), "/tmp/kvt_test_match_parts_%d.ipc", (int) getpid ());
    unlink (option);
}

//  A piece's promotion makes room on a full GPU tier: the victims are
//  other prompts' blocks, never the request's own later blocks
static void
s_own_blocks_kept (const char *index_mode)
{
    const char *overrides [] = { index_mode, "tier_gpu/capacity_blocks=24",
        "tier_host/capacity_blocks=256",
        "migration/policy=lru", "migration/high_watermark=100", "migration/low_watermark=99",
        "migration/stream_promotion=0", "migration/overlap_upkeep=2",
        "scheduler/plan_piece_kib=1", "scheduler/plan_piece_min_blocks=1",
        "scheduler/prefetch_waiting=0", NULL };
    t_session_t session;
    kvt_client_generate_t a, b, c, again;
    //  A: 16 blocks on the GPU; lru: A's first half to the host
    t_check (s_start_demoted (&session, overrides, 7, S_BLOCKS / 2, &a) == S_BLOCKS / 2);
    //  B (8 blocks) and C (7) fill the GPU tier behind A's second half,
    //  the oldest blocks there: not one slot is free
    size_t count;
    uint64_t *tokens = s_prompt (&session.hello, 8, &count);
    t_ok (kvt_client_generate (session.client, "", tokens, count / 2, 2, &b));
    free (tokens);
    tokens = s_prompt (&session.hello, 9, &count);
    t_ok (kvt_client_generate (session.client, "", tokens,
                               count / 2 - session.hello.block_tokens, 2, &c));
    free (tokens);
    uint64_t pieces = t_stat (session.client, "scheduler.plan_pieces");
    s_generate (&session, 7, &again);           //  In pieces of a block
    t_check (t_stat (session.client, "scheduler.plan_pieces") - pieces == S_BLOCKS);
    t_check (again.from_host == S_BLOCKS / 2);
    t_check (again.from_gpu == S_BLOCKS / 2);   //  None of A's GPU blocks made room
    t_check (again.computed == 0);
    //  Where the shared thread's time went is counted: the client's
    //  GENERATEs, the index's answer in steps, the replies it made
    t_check (t_stat (session.client, "scheduler.us_client_GENERATE") > 0);
    t_check (t_stat (session.client, "prefix_index.us_busy")
             >= t_stat (session.client, "prefix_index.us_steps"));
    t_check (t_stat (session.client, "scheduler.us_busy")
             >= t_stat (session.client, "scheduler.us_reply_IDX_MATCH_PART"));
    t_check (t_stat (session.client, "prefix_index.requests_in_steps") > 0);
    //  A guest and its host hand each other their messages as objects;
    //  actors of other threads (the index, when a thread) go through
    //  their sockets. Migration hosts the tiers it asks for slots.
    bool guest = strstr (index_mode, "with:scheduler") != NULL;
    uint64_t handed = t_stat (session.client, "scheduler.calls_handed_over");
    t_check (guest? handed > 0: handed == 0);
    t_check (t_stat (session.client, "migration.calls_handed_over") > 0);
    t_check (again.token_count == a.token_count
             && memcmp (again.tokens, a.tokens, a.token_count * sizeof (uint64_t)) == 0);
    printf ("a plan in pieces on a full GPU tier keeps its own later blocks there "
            "(%s; %" PRIu64 " from host, %" PRIu64 " from GPU): OK\n", index_mode,
            again.from_host, again.from_gpu);
    kvt_client_generate_fini (&again);
    kvt_client_generate_fini (&c);
    kvt_client_generate_fini (&b);
    kvt_client_generate_fini (&a);
    t_session_end (&session);
}

//  The scheduler's match in parts outlives its call: the index stalls
//  after the first part (prefix_index/test_hold_parts_ms) past
//  runtime/call_timeout_ms. The request fails; the parts and the rest,
//  answered late, are unpinned as they come (pins_released_late), so
//  none of the prompt stays pinned or promoting: the same prompt then
//  comes all from cache, with the same tokens.
static void
s_answered_late (void)
{
    const char *overrides [] = { "tier_gpu/capacity_blocks=96", "tier_host/capacity_blocks=96",
        "migration/stream_promotion=0", "migration/overlap_upkeep=2",
        "scheduler/plan_piece_kib=1", "scheduler/plan_piece_min_blocks=1",
        "runtime/call_timeout_ms=1000", "prefix_index/test_hold_parts_ms=1500", NULL };
    t_session_t session;
    kvt_client_generate_t a, head, again;
    t_check (s_start_demoted (&session, overrides, 10, 1000, &a) == S_BLOCKS);
    //  The prompt's first block back on the GPU (a prefix of one block is
    //  matched in one answer): the first part will have nothing to promote
    size_t count;
    uint64_t *tokens = s_prompt (&session.hello, 10, &count);
    t_ok (kvt_client_generate (session.client, "", tokens, session.hello.block_tokens + 3, 2,
                               &head));
    t_check (head.from_host == 1);
    int rc = kvt_client_generate (session.client, "", tokens, count, 2, &again);
    t_check (rc != 0);              //  "prefix lookup failed": its call timed out
    //  The plan took the first part (block 0, on the GPU: nothing to
    //  promote) before the index stalled: the index, the scheduler's
    //  guest, lets the scheduler's socket be served between its steps.
    //  That block was unpinned with the failed job; the rest as it came
    //  late, a loop turn a part, after the error reply.
    uint64_t taken = t_stat (session.client, "scheduler.plan_pieces");
    t_check (taken == 1 && t_stat (session.client, "scheduler.plan_piece_promotes") == 0);
    t_check (t_wait_stat (session.client, "scheduler.pins_released_late", S_BLOCKS - taken)
             == S_BLOCKS - taken);
    t_ok (kvt_client_generate (session.client, "", tokens, count, 2, &again));
    t_check (again.from_gpu == 1 && again.from_host == S_BLOCKS - 1 && again.computed == 0);
    t_check (again.token_count == a.token_count
             && memcmp (again.tokens, a.tokens, a.token_count * sizeof (uint64_t)) == 0);
    printf ("a match in parts answered after its call timed out: its first part taken "
            "between the index's steps, %d late blocks unpinned, then all from cache: OK\n",
            S_BLOCKS - 1);
    free (tokens);
    kvt_client_generate_fini (&again);
    kvt_client_generate_fini (&head);
    kvt_client_generate_fini (&a);
    t_session_end (&session);
}

int
main (void)
{
    s_answer_in_parts ();
    s_one_request ();
    s_own_blocks_kept ("prefix_index/mode=with:scheduler");
    s_own_blocks_kept ("prefix_index/mode=thread");     //  Its own loop, the same rules
    s_answered_late ();
    printf ("test_match_parts: OK\n");
    return T_EXIT_PASS;
}
