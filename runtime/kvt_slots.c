/*  =========================================================================
    kvt_slots - which slots of a tier are free: a stack plus a bitmap

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_slots.h"

struct _kvt_slots_t {
    uint64_t capacity;              //  Slots in the tier
    uint64_t *free_stack;           //  Free slot numbers; top at free_count - 1
    uint64_t free_count;            //  Entries on the stack
    uint8_t *in_use;                //  One bit per slot
    uint64_t used;                  //  Slots handed out
};

kvt_slots_t *
kvt_slots_new (uint64_t capacity)
{
    kvt_slots_t *self = (kvt_slots_t *) kvt_zmalloc (sizeof (kvt_slots_t));
    self->capacity = capacity;
    self->free_stack = (uint64_t *) kvt_zmalloc (capacity * sizeof (uint64_t));
    self->in_use = (uint8_t *) kvt_zmalloc ((capacity + 7) / 8);
    //  Lowest slots first, so a lightly used tier stays compact
    for (uint64_t k = 0; k < capacity; k++)
        self->free_stack [k] = capacity - 1 - k;
    self->free_count = capacity;
    return self;
}

void
kvt_slots_destroy (kvt_slots_t **self_p)
{
    if (*self_p) {
        free ((*self_p)->free_stack);
        free ((*self_p)->in_use);
        free (*self_p);
        *self_p = NULL;
    }
}

bool
kvt_slots_in_use (const kvt_slots_t *self, uint64_t slot)
{
    return slot < self->capacity && (self->in_use [slot / 8] >> (slot % 8)) & 1;
}

size_t
kvt_slots_alloc (kvt_slots_t *self, uint64_t *slots, size_t count)
{
    size_t taken = 0;
    while (taken < count && self->free_count) {
        uint64_t slot = self->free_stack [--self->free_count];
        if (kvt_slots_in_use (self, slot))
            continue;               //  Claimed at recovery; stale stack entry
        self->in_use [slot / 8] |= (uint8_t) (1 << (slot % 8));
        self->used++;
        slots [taken++] = slot;
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
    //  Leave the stack entry; alloc skips slots that are in use
    self->in_use [slot / 8] |= (uint8_t) (1 << (slot % 8));
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
    self->in_use [slot / 8] &= (uint8_t) ~(1 << (slot % 8));
    self->used--;
    //  The stack can hold a stale copy of a claimed slot; never overflow
    if (self->free_count < self->capacity)
        self->free_stack [self->free_count++] = slot;
    return 0;
}

uint64_t kvt_slots_capacity (const kvt_slots_t *self) { return self->capacity; }

uint64_t
kvt_slots_used (const kvt_slots_t *self)
{
    return self->used;
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
    return 0;
}
