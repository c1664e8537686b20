/*  =========================================================================
    kvt_classes - the one internal header of runtime/ and actors/

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Every .c file in runtime/ and actors/ includes this header and nothing
    else of ours: system headers, CZMQ, msgpack, liburing, xxhash, then our
    classes in dependency order.
@end
*/

#ifndef KVT_CLASSES_H_INCLUDED
#define KVT_CLASSES_H_INCLUDED

#include <czmq.h>
#include <msgpack.h>
#include <liburing.h>
#include "kvt_xxh.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "kvt_error.h"
#include "kvt_log.h"
#include "kvt_util.h"
#include "kvt_msg.h"
#include "kvt_client.h"
#include "kvt_config.h"
#include "kvt_arena.h"
#include "kvt_slots.h"
#include "kvt_block.h"
#include "kvt_trace.h"
#include "kvt_model.h"
#include "kvt_nvme_store.h"
#include "kvt_actor.h"
#include "kvt_runtime.h"
#include "kvt.h"

#endif
