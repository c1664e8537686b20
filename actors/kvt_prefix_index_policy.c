/*  =========================================================================
    kvt_prefix_index_policy - the prefix index's eviction policies and victims

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The tiers' eviction policies, hosted by the prefix index (see the
    @discuss of kvt_prefix_index.c): their creation from migration/policy,
    the events they learn from (through a policy object, or batched to a
    remote policy), and the blocks handed to a mover: IDX_VICTIMS (the
    policy's choice, the rest from the tier's LRU list) and IDX_CLAIM.
@end
*/

#include "kvt_prefix_index_int.h"

#define S_MAX_CANDIDATES 65536      //  Most candidates one remote victims call sends

//  --------------------------------------------------------------------------
//  The tiers' policies: every call to a policy object, or every event to
//  a remote one, goes through these four functions.

//  What the policy learns about entry 'e' now.
static kvt_policy_block_t
s_policy_block (const self_t *self, uint32_t e, uint32_t flags)
{
    const kvt_prefix_index_entry_t *entry = &self->entries [e];
    return (kvt_policy_block_t) {
        .id = entry->hash,
        .parent = entry->parent? entry->parent: KVT_POLICY_NO_PARENT,
        .depth = entry->depth,
        .flags = flags,
        .sharers = entry->pins,
        .block_tokens = self->block_tokens,
        .now = (int64_t) self->requests,
        .next_use = KVT_POLICY_UNKNOWN
    };
}

//  Entry 'e' now lives in its tier: tell that tier's policy, with the
//  KVT_POLICY_BLOCK_* 'flags'.
void
kvt_prefix_index_policy_insert (self_t *self, uint32_t e, uint32_t flags)
{
    kvt_prefix_index_entry_t *entry = &self->entries [e];
    assert (!entry->in_policy);
    entry->in_policy = true;
    if (self->remote) {
        kvt_policy_remote_event (self->remote, KVT_POLICY_EVENT_INSERT, entry->tier,
                                 entry->hash, entry->parent, entry->depth);
        return;
    }
    kvt_policy_block_t block = s_policy_block (self, e, flags);
    kvt_prefix_index_log_insert (self, entry->tier, &block);
}

//  Entry 'e' leaves (or is about to leave) its tier: tell its policy once.
void
kvt_prefix_index_policy_evict (self_t *self, uint32_t e)
{
    kvt_prefix_index_entry_t *entry = &self->entries [e];
    if (!entry->in_policy)
        return;
    entry->in_policy = false;
    if (self->remote) {
        kvt_policy_remote_event (self->remote, KVT_POLICY_EVENT_EVICT, entry->tier,
                                 entry->hash, 0, 0);
        return;
    }
    kvt_prefix_index_log_evict (self, entry->tier, entry->hash);
}

//  End of one index request: a local policy gets its waiting events now
//  if they are few, else after the answer (kvt_prefix_index_log.c); a
//  remote policy gets its events, never waiting. Dropped
//  events are counted; the candidates of the next victims call make up
//  for them.
void
kvt_prefix_index_policy_flush (self_t *self)
{
    if (self->policy_log) {
        kvt_prefix_index_log_answer (self);
        return;
    }
    if (!self->remote)
        return;
    size_t queued = kvt_policy_remote_queued (self->remote);
    if (kvt_policy_remote_flush (self->remote, self->requests) < 0)
        kvt_actor_count (self->actor, "policy_events_dropped", queued);
}

//  Create the tiers' policies from migration/policy (the GPU tier's, or
//  a remote one for every tier) and migration/lower_policy (the host and
//  NVMe tiers'). Returns 0 or KVT_ECONFIG (logged, naming the key).
int
kvt_prefix_index_policy_start (self_t *self)
{
    const char *name = self->policy_name;
    if (strncmp (name, "remote:", 7) == 0) {
        self->remote = kvt_policy_remote_new (name + 7, self->policy_timeout_ms,
                                              self->policy_retry_ms);
        if (!self->remote) {
            kvt_log_error ("prefix_index: migration/policy: bad endpoint in '%s'", name);
            return KVT_ECONFIG;
        }
        return 0;
    }
    if (strncmp (self->lower_policy_name, "remote:", 7) == 0) {
        kvt_log_error ("prefix_index: migration/lower_policy: a remote policy orders every "
                       "tier; name it in migration/policy");
        return KVT_ECONFIG;
    }
    kvt_prefix_index_log_start (self);
    //  The host and NVMe tiers hear only moves and copies, never a
    //  request's begin (a policy's view of the workload), so the order
    //  that learns from requests pays off on the GPU tier; below it the
    //  simulator models lru (kvt_sim, --lower-policy), and every event
    //  there costs the thread the index shares with the scheduler
    //  (issue #3: a 1 GiB promotion is 65536 host-tier evictions)
    for (int tier = 0; tier < KVT_TIER_COUNT; tier++) {
        bool lower = tier != KVT_TIER_GPU && *self->lower_policy_name;
        const char *key = lower? "migration/lower_policy": "migration/policy";
        name = lower? self->lower_policy_name: self->policy_name;
        size_t length = strlen (name);
        char *spec = strncmp (name, "plugin:", 7) != 0 && length > 3
                  && streq (name + length - 3, ".so")? zsys_sprintf ("plugin:%s", name): NULL;
        //  (policy_options are policy's: another lower order gets none)
        bool own = !lower || streq (name, self->policy_name);
        const char *options = own && *self->policy_options? self->policy_options: NULL;
        self->policies [tier] = kvt_policy_new (spec? spec: name,
                                                (size_t) self->capacity [tier], options);
        zstr_free (&spec);
        if (!self->policies [tier]) {
            kvt_log_error ("prefix_index: %s: cannot use '%s' (options '%s')", key, name,
                           options? options: "");
            return KVT_ECONFIG;
        }
    }
    return 0;
}

void
kvt_prefix_index_policy_hit (self_t *self, uint32_t e, uint64_t parent, size_t depth,
                             kvt_prefix_index_hit_t *hit)
{
    kvt_prefix_index_entry_t *entry = &self->entries [e];
    entry->parent = parent;         //  The request tells us its place for sure
    entry->depth = (uint32_t) depth;
    hit->entry = e;
    hit->sharers = entry->pins;
    hit->hit_tier = entry->in_policy? entry->tier: KVT_PREFIX_INDEX_NO_TIER;
}

void
kvt_prefix_index_policy_request (self_t *self, const uint64_t *hashes, size_t count,
                                 size_t matched, kvt_prefix_index_hit_t *hits)
{
    self->requests++;
    if (matched < count && hashes [matched]) {
        kvt_prefix_index_pending_t *pending = kvt_prefix_index_pending (self, hashes [matched]);
        pending->hash = hashes [matched];
        pending->parent = matched? hashes [matched - 1]: 0;
        pending->depth = (uint32_t) matched;
    }
    if (self->remote) {
        //  A remote policy learns a request from its hits' accesses
        for (size_t k = 0; k < matched; k++) {
            const kvt_prefix_index_entry_t *entry = &self->entries [hits [k].entry];
            if (entry->in_policy)
                kvt_policy_remote_event (self->remote, KVT_POLICY_EVENT_ACCESS, entry->tier,
                                         entry->hash, entry->parent, (uint32_t) k);
        }
        free (hits);
        return;
    }
    //  The GPU tier's policy sees it begin and end; each hit is an access
    //  in its own tier's policy, if that one holds it now
    kvt_prefix_index_log_request (self, kvt_u64s_dup (hashes, count), count, matched, hits,
                                  (int64_t) self->requests);
}

//  --------------------------------------------------------------------------
//  Blocks handed to a mover: IDX_VICTIMS and IDX_CLAIM

//  The victims being gathered by one IDX_VICTIMS
typedef struct {
    uint64_t *hashes;               //  Victims chosen so far
    uint64_t *slots;                //  Their slots
    uint64_t *reuses;               //  How often each was found cached
    uint64_t *offers;               //  How often each was offered again after a drop
    size_t found;                   //  Entries used
    size_t want;                    //  Entries wanted
} s_victims_t;

//  Hand out entry 'e' as a victim: pinned and moving until IDX_MOVE, and
//  gone from its tier's policy.
static void
s_victim_take (self_t *self, s_victims_t *victims, uint32_t e)
{
    kvt_prefix_index_entry_t *entry = &self->entries [e];
    assert (!entry->pins && !entry->moving);
    kvt_prefix_index_policy_evict (self, e);
    entry->pins++;                  //  The mover unpins after IDX_MOVE
    entry->moving = true;
    victims->hashes [victims->found] = entry->hash;
    victims->reuses [victims->found] = entry->reuses;
    victims->offers [victims->found] = entry->offers;
    victims->slots [victims->found++] = entry->slot;
}

//  Is 'hash' a block of 'tier' that may be handed out? Returns its entry
//  or KVT_PREFIX_INDEX_NIL.
static uint32_t
s_victim_valid (self_t *self, uint64_t tier, uint64_t hash)
{
    uint32_t e = hash? kvt_prefix_index_find (self, hash): KVT_PREFIX_INDEX_NIL;
    if (e == KVT_PREFIX_INDEX_NIL || self->entries [e].tier != tier
    ||  self->entries [e].pins || self->entries [e].moving)
        return KVT_PREFIX_INDEX_NIL;
    return e;
}

//  Ask the tier's policy object; stops at the first answer it cannot use.
//  Visits at most (blocks in the tier + 1) answers: each one either is
//  handed out or, pinned, leaves the policy until the end of the call.
static void
s_victims_from_policy (self_t *self, uint64_t tier, s_victims_t *victims)
{
    //  The policy decides on every event so far, and hears this call's own
    //  at once: a pinned block set aside must not be named again
    kvt_prefix_index_log_apply (self);
    kvt_prefix_index_log_direct (self, true);
    kvt_policy_t *policy = self->policies [tier];
    const kvt_policy_ops_t *ops = kvt_policy_ops (policy);
    void *state = kvt_policy_state (policy);
    kvt_policy_block_t incoming = {
        .id = 0, .parent = KVT_POLICY_NO_PARENT, .block_tokens = self->block_tokens,
        .now = (int64_t) self->requests, .next_use = KVT_POLICY_UNKNOWN
    };
    uint32_t *set_aside = NULL;
    size_t aside_count = 0;
    uint64_t budget = self->lists [tier].count + 1;
    while (victims->found < victims->want && budget-- > 0) {
        uint64_t hash = ops->choose_victim (state, &incoming);
        if (hash == incoming.id) {
            kvt_actor_count (self->actor, "policy_declined", 1);
            break;
        }
        uint32_t e = kvt_prefix_index_find (self, hash);
        if (e == KVT_PREFIX_INDEX_NIL || self->entries [e].tier != tier
        ||  !self->entries [e].in_policy) {
            kvt_actor_count (self->actor, "policy_unusable", 1);
            break;
        }
        if (self->entries [e].pins) {
            //  In use: out of the policy's sight until this call ends
            if (!set_aside)         //  At most one per block of the tier
                set_aside = (uint32_t *) kvt_zmalloc ((self->lists [tier].count + 1)
                                                      * sizeof (uint32_t));
            kvt_prefix_index_policy_evict (self, e);
            set_aside [aside_count++] = e;
            kvt_actor_count (self->actor, "policy_skipped_pinned", 1);
            continue;
        }
        s_victim_take (self, victims, e);
    }
    for (size_t k = 0; k < aside_count; k++)
        kvt_prefix_index_policy_insert (self, set_aside [k], 0);
    free (set_aside);
    kvt_prefix_index_log_direct (self, false);
}

//  Ask the remote policy, with the tier's unpinned blocks as candidates.
static void
s_victims_from_remote (self_t *self, uint64_t tier, s_victims_t *victims)
{
    size_t room = self->lists [tier].count < S_MAX_CANDIDATES
                ? (size_t) self->lists [tier].count: S_MAX_CANDIDATES;
    uint64_t *candidates = (uint64_t *) kvt_zmalloc ((room + 1) * sizeof (uint64_t));
    size_t candidate_count = 0;
    for (uint32_t e = self->lists [tier].head; e != KVT_PREFIX_INDEX_NIL && candidate_count < room;
         e = self->entries [e].next)
        if (!self->entries [e].pins && !self->entries [e].moving)
            candidates [candidate_count++] = self->entries [e].hash;
    if (candidate_count == 0) {     //  All pinned: nothing to choose from
        free (candidates);
        return;
    }
    uint64_t *chosen = (uint64_t *) kvt_zmalloc ((victims->want + 1) * sizeof (uint64_t));
    int rc = kvt_policy_remote_victims (self->remote, tier, victims->want, candidates,
                                        candidate_count, chosen, self->requests);
    if (rc == -ETIMEDOUT)
        kvt_actor_count (self->actor, "policy_remote_timeouts", 1);
    else
    if (rc == -EBADMSG)
        kvt_actor_count (self->actor, "policy_remote_garbage", 1);
    else
    if (rc < 0)
        kvt_actor_count (self->actor, "policy_remote_unreachable", 1);
    else
        kvt_actor_count (self->actor, "policy_remote_decisions", 1);
    for (int k = 0; k < rc && victims->found < victims->want; k++) {
        uint32_t e = s_victim_valid (self, tier, chosen [k]);
        if (e == KVT_PREFIX_INDEX_NIL)  //  Not a candidate, or named twice
            kvt_actor_count (self->actor, "policy_unusable", 1);
        else
            s_victim_take (self, victims, e);
    }
    free (chosen);
    free (candidates);
}

//  Answer IDX_VICTIMS 'request' (borrowed): up to 'count' blocks of
//  'tier' for a mover, chosen by the tier's policy, the rest from its LRU
//  list; pinned and moving until IDX_MOVE.
static int
s_victims_answer (self_t *self, const kvt_msg_t *request)
{
    uint64_t tier = kvt_msg_u64 (request, KVT_IDX_VICTIMS_TIER);
    uint64_t want = kvt_msg_u64 (request, KVT_IDX_VICTIMS_COUNT);
    if (want > self->lists [tier].count)
        want = self->lists [tier].count;
    s_victims_t victims = {
        .hashes = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .slots = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .reuses = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .offers = (uint64_t *) kvt_zmalloc ((want + 1) * sizeof (uint64_t)),
        .want = want
    };
    if (want) {
        kvt_actor_count (self->actor, "policy_decisions", 1);
        if (self->remote)
            s_victims_from_remote (self, tier, &victims);
        else
            s_victims_from_policy (self, tier, &victims);
    }
    //  What the policy did not give comes from the LRU list: oldest first,
    //  skipping pinned and moving blocks
    size_t from_policy = victims.found;
    for (uint32_t e = self->lists [tier].head; e != KVT_PREFIX_INDEX_NIL && victims.found < want;
         e = self->entries [e].next)
        if (!self->entries [e].pins && !self->entries [e].moving)
            s_victim_take (self, &victims, e);
    if (victims.found > from_policy) {
        kvt_actor_count (self->actor, "policy_fallbacks", 1);
        kvt_actor_count (self->actor, "policy_fallback_blocks", victims.found - from_policy);
    }
    kvt_prefix_index_policy_flush (self);
    kvt_msg_t *reply = kvt_msg_reply_new (request, KVT_MSG_IDX_VICTIMS_OK);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_HASHES, victims.hashes, victims.found);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_SLOTS, victims.slots, victims.found);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_REUSES, victims.reuses, victims.found);
    kvt_msg_set_array (reply, KVT_IDX_VICTIMS_OK_OFFERS, victims.offers, victims.found);
    free (victims.hashes);
    free (victims.slots);
    free (victims.reuses);
    free (victims.offers);
    return kvt_actor_reply (self->actor, &reply);
}

//  One step of an IDX_VICTIMS held while the log catches up
//  (kvt_actor_continue): a slice of the log, then the answer once it is
//  all applied
static int
s_victims_step (void *self_ptr, void *arg, bool cancel)
{
    self_t *self = (self_t *) self_ptr;
    kvt_msg_t *request = (kvt_msg_t *) arg;
    if (!cancel && !kvt_prefix_index_log_slice (self))
        return 1;                   //  More at the next turn
    if (!cancel)
        s_victims_answer (self, request);
    kvt_msg_destroy (&request);
    return 0;
}

//  IDX_VICTIMS. A local policy decides after every event before the
//  call (s_victims_from_policy applies the log first). When much waits
//  (a large request's accesses: 16384 of them took 10 ms of the H200
//  host's time in one victims call, issue #3), the log is applied a slice
//  a turn first, the call held (kvt_actor_continue: no other index
//  request is served meanwhile, so no event joins the log), and the
//  actors sharing our thread (the scheduler, the front door) run between
//  the slices.
int
kvt_prefix_index_handle_victims (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    uint64_t tier = kvt_msg_u64 (*msg_p, KVT_IDX_VICTIMS_TIER);
    if (!kvt_prefix_index_valid_tier (tier))
        return -EINVAL;
    if (!self->remote && kvt_msg_u64 (*msg_p, KVT_IDX_VICTIMS_COUNT) > 0
    &&  self->lists [tier].count > 0 && kvt_prefix_index_log_long (self)
    &&  kvt_actor_continue (self->actor, s_victims_step, *msg_p) == 0) {
        *msg_p = NULL;              //  The step's now
        kvt_actor_count (self->actor, "policy_decisions_stepped", 1);
        return 0;
    }
    return s_victims_answer (self, *msg_p);
}

//  IDX_CLAIM: hand a mover the blocks of the leading cached run of
//  'hashes' that live in 'tier', unpinned and not moving (at most
//  'max_blocks', first ones first), pinned and moving as victims are.
int
kvt_prefix_index_handle_claim (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    size_t count;
    const uint64_t *hashes = kvt_msg_array (*msg_p, KVT_IDX_CLAIM_HASHES, &count);
    uint64_t tier = kvt_msg_u64 (*msg_p, KVT_IDX_CLAIM_TIER);
    uint64_t max_blocks = kvt_msg_u64 (*msg_p, KVT_IDX_CLAIM_MAX_BLOCKS);
    if (!kvt_prefix_index_valid_tier (tier))
        return -EINVAL;
    s_victims_t claimed = {
        .hashes = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .slots = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .reuses = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .offers = (uint64_t *) kvt_zmalloc ((count + 1) * sizeof (uint64_t)),
        .want = count < max_blocks? count: (size_t) max_blocks
    };
    for (size_t k = 0; k < count && claimed.found < claimed.want; k++) {
        uint32_t e = hashes [k]? kvt_prefix_index_find (self, hashes [k]): KVT_PREFIX_INDEX_NIL;
        if (e == KVT_PREFIX_INDEX_NIL || self->entries [e].moving)
            break;                  //  Where IDX_MATCH would cut the prefix
        if (self->entries [e].tier == tier && !self->entries [e].pins)
            s_victim_take (self, &claimed, e);
    }
    kvt_prefix_index_policy_flush (self);
    kvt_actor_count (self->actor, "claimed", claimed.found);
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_IDX_CLAIM_OK);
    kvt_msg_set_array (reply, KVT_IDX_CLAIM_OK_HASHES, claimed.hashes, claimed.found);
    kvt_msg_set_array (reply, KVT_IDX_CLAIM_OK_SLOTS, claimed.slots, claimed.found);
    free (claimed.hashes);
    free (claimed.slots);
    free (claimed.reuses);
    free (claimed.offers);
    return kvt_actor_reply (self->actor, &reply);
}
