/*  =========================================================================
    kvt_slots - which slots of a tier are free: a stack plus a bitmap

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    O(1) allocate and free of slot numbers in [0, capacity). The bitmap
    catches double frees and frees of slots never handed out, which come
    from bugs or hostile peers and must not corrupt the free list.
@end
*/

#ifndef KVT_SLOTS_H_INCLUDED
#define KVT_SLOTS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _kvt_slots_t kvt_slots_t;

//  Create an allocator of 'capacity' slots, all free.
kvt_slots_t *
    kvt_slots_new (uint64_t capacity);

//  Destroy; NULL-safe, nulls the caller's pointer.
void
    kvt_slots_destroy (kvt_slots_t **self_p);

//  Take up to 'count' free slots into 'slots'. Returns how many were taken.
size_t
    kvt_slots_alloc (kvt_slots_t *self, uint64_t *slots, size_t count);

//  Take one specific slot (recovery after restart). Returns 0, -ERANGE or -EBUSY.
int
    kvt_slots_claim (kvt_slots_t *self, uint64_t slot);

//  Free one slot. Returns 0, -ERANGE (out of range) or -EINVAL (not in use).
int
    kvt_slots_free (kvt_slots_t *self, uint64_t slot);

//  Is 'slot' handed out?
bool
    kvt_slots_in_use (const kvt_slots_t *self, uint64_t slot);

uint64_t
    kvt_slots_capacity (const kvt_slots_t *self);
uint64_t
    kvt_slots_used (const kvt_slots_t *self);

#endif
