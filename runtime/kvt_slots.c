/*  =========================================================================
    kvt_slots - which slots of a tier are free: a bitmap, next-fit

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_slots.h"

//  A batch looks at most this many free segments for one run that holds
//  it, so a badly fragmented tier costs a bounded search per batch
#define S_RUN_SEARCH_SEGMENTS 1024

struct _kvt_slots_t {
    uint64_t capacity;              //  Slots in the tier
    uint64_t *in_use;               //  One bit per slot; bits past capacity are set
    uint64_t used;                  //  Slots handed out
    uint64_t cursor;                //  Next-fit: where the next search starts
    bool first_fit;                 //  Every search starts at slot 0 instead
};

kvt_slots_t *
kvt_slots_new (uint64_t capacity)
{
    kvt_slots_t *self = (kvt_slots_t *) kvt_zmalloc (sizeof (kvt_slots_t));
    self->capacity = capacity;
    uint64_t words = (capacity + 63) / 64;
    self->in_use = (uint64_t *) kvt_zmalloc ((words? words: 1) * sizeof (uint64_t));
    //  The tail of the last word never looks free, so scans stop there
    if (capacity % 64)
        self->in_use [words - 1] = ~0ull << (capacity % 64);
    return self;
}

void
kvt_slots_destroy (kvt_slots_t **self_p)
{
    if (*self_p) {
        free ((*self_p)->in_use);
        free (*self_p);
        *self_p = NULL;
    }
}

bool
kvt_slots_in_use (const kvt_slots_t *self, uint64_t slot)
{
    return slot < self->capacity && (self->in_use [slot / 64] >> (slot % 64)) & 1;
}

//  Advance from 'pos' while bits equal 'bit' (stopping at 'hi'); returns
//  the first position at or after 'pos' whose bit differs, or 'hi'. A
//  word at a time: ctz of the shifted word finds the change.
static uint64_t
s_skip (const kvt_slots_t *self, uint64_t pos, uint64_t hi, int bit)
{
    while (pos < hi) {
        uint64_t shift = pos % 64;
        uint64_t word = self->in_use [pos / 64] >> shift;
        if (bit)
            word = ~word;           //  Now looking for the first 1 = a free slot
        //  Bits shifted in at the top read as a change: the skip goes on
        //  into the next word
        uint64_t remaining = 64 - shift;
        uint64_t run = word? (uint64_t) __builtin_ctzll (word): 64;
        if (run >= remaining) {
            pos += remaining;
            continue;
        }
        pos += run;
        break;
    }
    return pos < hi? pos: hi;
}

//  The next free segment at or after 'pos' below 'hi': its first slot in
//  '*start' and its length. Returns 0 when there is none.
static uint64_t
s_free_segment (const kvt_slots_t *self, uint64_t pos, uint64_t hi, uint64_t *start)
{
    pos = s_skip (self, pos, hi, 1);                //  Skip used slots
    *start = pos;
    return s_skip (self, pos, hi, 0) - pos;         //  Count free slots
}

//  Mark [first, first + count) in use and list them in 'slots'.
static void
s_take (kvt_slots_t *self, uint64_t first, uint64_t count, uint64_t *slots)
{
    for (uint64_t k = 0; k < count; k++) {
        uint64_t slot = first + k;
        self->in_use [slot / 64] |= 1ull << (slot % 64);
        slots [k] = slot;
    }
    self->used += count;
    self->cursor = first + count < self->capacity? first + count: 0;
}

//  Search from slot 0 on every allocation instead of after the last one.
void
kvt_slots_set_first_fit (kvt_slots_t *self, bool first_fit)
{
    self->first_fit = first_fit;
    self->cursor = 0;
}

size_t
kvt_slots_alloc (kvt_slots_t *self, uint64_t *slots, size_t count)
{
    if (self->first_fit)
        self->cursor = 0;
    uint64_t free_slots = self->capacity - self->used;
    if (count > free_slots)
        count = (size_t) free_slots;
    if (count == 0)
        return 0;
    uint64_t start, length;
    if (count > 1) {
        //  One free run that holds the whole batch: from the cursor on,
        //  then from slot 0
        int segments = 0;
        for (int pass = 0; pass < 2 && segments < S_RUN_SEARCH_SEGMENTS; pass++) {
            uint64_t pos = pass == 0? self->cursor: 0;
            while (segments++ < S_RUN_SEARCH_SEGMENTS
               &&  (length = s_free_segment (self, pos, self->capacity, &start)) > 0) {
                if (length >= count) {
                    s_take (self, start, count, slots);
                    return count;
                }
                pos = start + length;
            }
            if (self->cursor == 0)
                break;
        }
    }
    //  Free slots in address order from the cursor, wrapping once
    size_t taken = 0;
    uint64_t cursor = self->cursor;
    for (int pass = 0; pass < 2 && taken < count; pass++) {
        uint64_t pos = pass == 0? cursor: 0;
        uint64_t hi = pass == 0? self->capacity: cursor;
        while (taken < count && (length = s_free_segment (self, pos, hi, &start)) > 0) {
            uint64_t n = length < count - taken? length: count - taken;
            s_take (self, start, n, slots + taken);
            taken += n;
            pos = start + n;
        }
    }
    return taken;
}

int
kvt_slots_claim (kvt_slots_t *self, uint64_t slot)
{
    if (slot >= self->capacity)
        return -ERANGE;
    if (kvt_slots_in_use (self, slot))
        return -EBUSY;
    self->in_use [slot / 64] |= 1ull << (slot % 64);
    self->used++;
    return 0;
}

int
kvt_slots_free (kvt_slots_t *self, uint64_t slot)
{
    if (slot >= self->capacity)
        return -ERANGE;
    if (!kvt_slots_in_use (self, slot))
        return -EINVAL;
    self->in_use [slot / 64] &= ~(1ull << (slot % 64));
    self->used--;
    return 0;
}

uint64_t kvt_slots_capacity (const kvt_slots_t *self) { return self->capacity; }

uint64_t
kvt_slots_used (const kvt_slots_t *self)
{
    return self->used;
}

//  Are got [0 .. count) the run first, first + 1, ...?
static bool
s_is_run (const uint64_t *got, size_t count, uint64_t first)
{
    for (size_t k = 0; k < count; k++)
        if (got [k] != first + k)
            return false;
    return true;
}

int
kvt_slots_test (bool verbose)
{
    (void) verbose;
    kvt_slots_t *slots = kvt_slots_new (10);
    uint64_t got [16];
    assert (kvt_slots_alloc (slots, got, 4) == 4);
    assert (got [0] == 0 && got [3] == 3);
    assert (kvt_slots_used (slots) == 4);
    assert (kvt_slots_free (slots, 2) == 0);
    assert (kvt_slots_free (slots, 2) == -EINVAL);      //  Double free refused
    assert (kvt_slots_free (slots, 10) == -ERANGE);
    assert (kvt_slots_claim (slots, 9) == 0);
    assert (kvt_slots_claim (slots, 9) == -EBUSY);
    //  Never more than capacity, never a slot twice
    size_t taken = kvt_slots_alloc (slots, got, 16);
    assert (taken == 6);
    assert (kvt_slots_used (slots) == 10);
    for (size_t a = 0; a < taken; a++) {
        assert (got [a] != 9);
        for (size_t b = a + 1; b < taken; b++)
            assert (got [a] != got [b]);
    }
    assert (kvt_slots_alloc (slots, got, 1) == 0);
    for (uint64_t s = 0; s < 10; s++)
        assert (kvt_slots_free (slots, s) == 0);
    assert (kvt_slots_alloc (slots, got, 16) == 10);
    kvt_slots_destroy (&slots);

    //  First fit: freed low slots are taken again before untouched ones
    slots = kvt_slots_new (100);
    kvt_slots_set_first_fit (slots, true);
    assert (kvt_slots_alloc (slots, got, 8) == 8 && got [0] == 0 && got [7] == 7);
    for (uint64_t s = 0; s < 8; s++)
        assert (kvt_slots_free (slots, s) == 0);
    assert (kvt_slots_alloc (slots, got, 8) == 8 && got [0] == 0 && got [7] == 7);
    kvt_slots_set_first_fit (slots, false);            //  Next fit: after the last batch
    assert (kvt_slots_alloc (slots, got, 4) == 4 && got [0] == 8);
    kvt_slots_destroy (&slots);

    //  Batches get runs: on a fresh allocator, one after the other
    uint64_t *many = (uint64_t *) kvt_zmalloc (1000 * sizeof (uint64_t));
    slots = kvt_slots_new (200);
    assert (kvt_slots_alloc (slots, many, 64) == 64 && s_is_run (many, 64, 0));
    assert (kvt_slots_alloc (slots, many, 70) == 70 && s_is_run (many, 70, 64));
    assert (kvt_slots_alloc (slots, many, 66) == 66 && s_is_run (many, 66, 134));
    assert (kvt_slots_used (slots) == 200);
    //  Frees that leave a hole of 20 (slots 40..59) and single holes:
    //  a batch of 16 takes a run inside the hole, not the singles
    for (uint64_t s = 40; s < 60; s++)
        assert (kvt_slots_free (slots, s) == 0);
    assert (kvt_slots_free (slots, 7) == 0);
    assert (kvt_slots_free (slots, 150) == 0);
    assert (kvt_slots_free (slots, 199) == 0);
    assert (kvt_slots_alloc (slots, many, 16) == 16 && s_is_run (many, 16, 40));
    //  The next batch fits no run (holes of 4, 1, 1, 1): next-fit takes
    //  the rest of the hole first, then the singles in address order
    assert (kvt_slots_alloc (slots, many, 6) == 6);
    assert (s_is_run (many, 4, 56) && many [4] == 150 && many [5] == 199);
    assert (kvt_slots_alloc (slots, many, 2) == 1 && many [0] == 7);
    assert (kvt_slots_used (slots) == 200);
    //  Claimed slots (recovery) are never handed out; a run avoids them
    for (uint64_t s = 100; s < 140; s++)
        assert (kvt_slots_free (slots, s) == 0);
    assert (kvt_slots_claim (slots, 110) == 0);
    assert (kvt_slots_free (slots, 3) == 0);           //  A single hole before
    assert (kvt_slots_alloc (slots, many, 25) == 25 && s_is_run (many, 25, 111));
    assert (kvt_slots_alloc (slots, many, 10) == 10 && s_is_run (many, 10, 100));
    assert (kvt_slots_alloc (slots, many, 1) == 1 && many [0] == 136);  //  Next-fit
    kvt_slots_destroy (&slots);

    //  A badly fragmented tier: the run search gives up after
    //  S_RUN_SEARCH_SEGMENTS segments and next-fit takes the singles
    slots = kvt_slots_new (5000);
    uint64_t *all = (uint64_t *) kvt_zmalloc (5000 * sizeof (uint64_t));
    assert (kvt_slots_alloc (slots, all, 5000) == 5000);
    for (uint64_t s = 0; s < 4000; s += 2)
        assert (kvt_slots_free (slots, s) == 0);
    for (uint64_t s = 4500; s < 4600; s++)
        assert (kvt_slots_free (slots, s) == 0);
    assert (kvt_slots_alloc (slots, all, 50) == 50);
    for (int k = 0; k < 50; k++)
        assert (all [k] == (uint64_t) k * 2);
    //  Once fewer segments lie before it, the run is found again
    assert (kvt_slots_alloc (slots, all, 1000) == 1000);
    assert (kvt_slots_alloc (slots, all, 50) == 50 && s_is_run (all, 50, 4500));
    free (all);
    kvt_slots_destroy (&slots);

    //  Random churn against a shadow map: no slot twice, counts exact,
    //  and a batch no larger than the largest free run gets a run
    slots = kvt_slots_new (1000);
    bool *shadow = (bool *) kvt_zmalloc (1000);
    uint64_t seed = 0x51075;
    size_t used = 0, batches = 0, runs = 0;
    for (int step = 0; step < 4000; step++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        size_t want = 1 + seed % 40;
        if ((seed >> 8) % 3 && used + want <= 1000) {
            //  The largest free run, from the shadow
            size_t longest = 0, length = 0;
            for (int s = 0; s < 1000; s++) {
                length = shadow [s]? 0: length + 1;
                longest = length > longest? length: longest;
            }
            size_t n = kvt_slots_alloc (slots, many, want);
            assert (n == want);
            for (size_t k = 0; k < n; k++) {
                assert (many [k] < 1000 && !shadow [many [k]]);
                shadow [many [k]] = true;
            }
            used += n;
            batches++;
            if (longest >= want) {
                assert (s_is_run (many, n, many [0]));
                runs++;
            }
        }
        else
            for (int k = 0; k < 30; k++) {
                uint64_t s = (seed >> 16) % 1000 + k;
                if (s < 1000 && shadow [s]) {
                    assert (kvt_slots_free (slots, s) == 0);
                    assert (kvt_slots_free (slots, s) == -EINVAL);
                    shadow [s] = false;
                    used--;
                }
            }
        assert (kvt_slots_used (slots) == used);
    }
    assert (batches > 100 && runs > 0);
    free (shadow);
    free (many);
    kvt_slots_destroy (&slots);

    //  kvt_pairs_sort (kvt_util.h), which orders the slot pairs of every
    //  copy batch: ascending, descending (its one-pass paths), with ties,
    //  descending with ties, shuffled, and in order but for the last;
    //  always ordered by key, every pair kept
    kvt_pair_t pairs [64];
    for (int shape = 0; shape < 6; shape++) {
        uint64_t sum = 0;
        for (int k = 0; k < 64; k++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            uint64_t key = shape == 0? (uint64_t) k: shape == 1? (uint64_t) (64 - k)
                         : shape == 2? (uint64_t) (k / 4): shape == 3? (uint64_t) (16 - k / 4)
                         : shape == 4? seed % 50: k < 63? (uint64_t) k + 1: 0;
            pairs [k] = (kvt_pair_t) { key, key * 1000 + (uint64_t) k };
            sum += pairs [k].value;
        }
        kvt_pairs_sort (pairs, 64);
        for (int k = 0; k < 64; k++) {
            assert (k == 0 || pairs [k - 1].key <= pairs [k].key);
            assert (pairs [k].value / 1000 == pairs [k].key);   //  Pairs stay whole
            sum -= pairs [k].value;
        }
        assert (sum == 0);
    }
    return 0;
}
