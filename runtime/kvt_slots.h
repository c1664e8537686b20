/*  =========================================================================
    kvt_slots - which slots of a tier are free: a bitmap, next-fit

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Allocate and free slot numbers in [0, capacity). Allocation is
    next-fit over a bitmap in address order (a cursor after the last slot
    handed out), so slots taken together are adjacent when the tier has a
    free run: a batch of several slots first looks for one free run that
    holds it all (from the cursor, then from slot 0), else takes free
    slots in address order from the cursor. Adjacent host slots let a
    batch demoted together move back to the GPU as a few large
    copy-engine copies (kvt_block_copy_staged, issue #3). The bitmap
    catches double frees and frees of slots never handed out, which come
    from bugs or hostile peers and must not corrupt the allocator.
@discuss
    Cost: free and claim are O(1); an allocation walks free and used
    segments a 64-bit word at a time, so it is O(1) on a lightly
    fragmented tier. A batch's search for one run looks at no more than
    1024 free segments, and any search skips full words 64 slots at a
    time (at worst one pass over capacity / 64 words, a few microseconds
    per million slots).
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

//  Take up to 'count' free slots into 'slots', adjacent ones in ascending
//  order when a free run holds them (see @header). Returns how many were
//  taken.
size_t
    kvt_slots_alloc (kvt_slots_t *self, uint64_t *slots, size_t count);

//  First fit: every allocation searches from slot 0, so freed low slots
//  are taken again before untouched ones (a disk tier's files then grow
//  only as it fills). Default off (next-fit).
void
    kvt_slots_set_first_fit (kvt_slots_t *self, bool first_fit);

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
