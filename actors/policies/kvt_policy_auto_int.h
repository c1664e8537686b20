/*  =========================================================================
    kvt_policy_auto_int - what prefix-auto shows its selftest

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_POLICY_AUTO_INT_H_INCLUDED
#define KVT_POLICY_AUTO_INT_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

//  Prefix-hit blocks shadow 'candidate' (0 prefix-adaptive, 1 prefix-density)
//  has counted since the start, every request begun replayed.
uint64_t
    kvt_policy_auto_shadow_hits (void *state, int candidate);

//  True while the candidate on the tier serves as its own shadow.
bool
    kvt_policy_auto_fused (void *state);

#endif
