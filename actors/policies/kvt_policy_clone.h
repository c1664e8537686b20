/*  =========================================================================
    kvt_policy_clone - copies of a built-in policy's state

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    prefix-auto takes over the tier with a candidate it has been running
    as a shadow: it copies that shadow (kvt_policy_clone in kvt_policy.c)
    and tells the copy what the tier holds. The policies it can do that
    with export a clone function here; each takes a state between two
    requests (every request the state has begun has ended) and returns
    an independent state that answers as the original would, or NULL if
    the state is mid-request. Not part of the plugin ABI.
@end
*/

#ifndef KVT_POLICY_CLONE_H_INCLUDED
#define KVT_POLICY_CLONE_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

void *
    kvt_policy_adaptive_clone (void *state);
void *
    kvt_policy_density_clone (void *state);

#ifdef __cplusplus
}
#endif

#endif
