/*  =========================================================================
    kvt - the public API of kvtier

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    What a program embedding kvtier, or a client of it, includes: status
    codes, the wire messages, the C client, configuration, and the
    supervisor that runs the actors (with kvt_actors_all () from
    actors/kvt_actors.h as the definitions).
@end
*/

#ifndef KVT_H_INCLUDED
#define KVT_H_INCLUDED

#include "kvt_error.h"
#include "kvt_log.h"
#include "kvt_msg.h"
#include "kvt_client.h"
#include "kvt_config.h"
#include "kvt_runtime.h"

#endif
