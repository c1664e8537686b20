/*  =========================================================================
    kvt_policy_density_int - what the prefix-density policy shares with its
    selftest: the age bins and read access to a policy state

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_POLICY_DENSITY_INT_H_INCLUDED
#define KVT_POLICY_DENSITY_INT_H_INCLUDED

#include <stdint.h>

#define KVT_POLICY_DENSITY_BINS 72              //  Age bins: 4 per octave, ages 0..3 exact
#define KVT_POLICY_DENSITY_AGE_LIMIT (1 << 19)  //  Ages counted in the bins' widths

//  Age bins: ages 0..3 one bin each, then 4 bins per octave (bin = floor
//  (4 log2 age)), the last bin open-ended.
int
    kvt_policy_density_bin (int64_t age);

//  Smallest age in [0, KVT_POLICY_DENSITY_AGE_LIMIT] whose bin is at least 'bin'.
int64_t
    kvt_policy_density_bin_start (int bin);

//  Offers a policy state declined as less dense than the victim.
uint64_t
    kvt_policy_density_declined (void *state);

//  The hits per block-time a state's class 'cls' holds from age bin 'bin' on.
double
    kvt_policy_density_at (void *state, int cls, int bin);

#endif
