/*  =========================================================================
    kvt_bench_gpu - standalone driver for `bench kernels` and `bench
    transfer` on a GPU machine without ZeroMQ, CZMQ, msgpack or liburing

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Same code and same report lines as `kvtier bench kernels|transfer`:
    this file only replaces the kvtier command's dispatcher, so the kernel
    benches run where the runtime's libraries are not installed.
    Built by tools/bench/gpu/build.sh. Usage: kvt_bench_gpu kernels|transfer [options]
@end
*/

#include <stdio.h>
#include <string.h>
#include "kvt_bench.h"

int
main (int argc, char *argv [])
{
    if (argc >= 2 && strcmp (argv [1], "kernels") == 0)
        return kvt_bench_kernels_main (argc - 1, argv + 1);
    if (argc >= 2 && strcmp (argv [1], "transfer") == 0)
        return kvt_bench_transfer_main (argc - 1, argv + 1);
    fprintf (stderr, "usage: kvt_bench_gpu kernels|transfer [options]\n");
    return 2;
}
