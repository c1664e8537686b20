/*  =========================================================================
    kvt_bench_start - start a runtime in the bench's own process

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The benches that time the runtime (host, host --ttft, runtime, shard)
    run every actor in their own process on a config they build; this is
    the start they share. Kept out of kvt_bench_report.c, which the
    runtime-free GPU kernel bench (tools/bench/gpu/build.sh) links alone.
@end
*/

#include <stdio.h>
#include "kvt.h"
#include "kvt_actors.h"
#include "kvt_bench.h"

//  Start every actor in this process on 'config' (not kept); 'who' names
//  the bench in the error. Returns the runtime, or NULL with the reason
//  printed.
kvt_runtime_t *
kvt_bench_runtime_start (const kvt_config_t *config, const char *who)
{
    kvt_runtime_t *runtime = kvt_runtime_new (config, kvt_actors_all ());
    int rc = kvt_runtime_start (runtime);
    if (rc) {
        fprintf (stderr, "%s: runtime did not start: %s\n", who, kvt_strerror (rc));
        kvt_runtime_destroy (&runtime);
    }
    return runtime;
}
