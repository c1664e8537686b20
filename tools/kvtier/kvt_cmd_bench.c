/*  =========================================================================
    kvt_cmd_bench - `kvtier bench WHAT`: every figure beside its baseline

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <stdio.h>
#include <string.h>
#include "kvt_cmd.h"
#include "kvt_bench.h"

typedef struct {
    const char *name;               //  As typed after `kvtier bench`
    int (*run) (int argc, char **argv);
    const char *summary;            //  One line for the help
} s_bench_t;

static const s_bench_t s_benches [] = {
    { "runtime",  kvt_bench_runtime_main,  "LOOKUP round trip over ipc:// vs raw ZeroMQ REQ/REP" },
    { "kernels",  kvt_bench_kernels_main,  "paged attention and model kernels vs cuDNN/cuBLAS (CUDA build)" },
    { "transfer", kvt_bench_transfer_main, "host<->GPU block movement vs pinned cudaMemcpy (CUDA build)" },
    { "nvme",     kvt_bench_nvme_main,     "tier_nvme block I/O vs raw io_uring O_DIRECT" },
    { "host",     kvt_bench_host_main,     "prefix promotion host/NVMe -> GPU vs memcpy and raw io_uring" },
    { "model",    kvt_bench_model_main,    "8B-shaped GPU model: prefill vs cuBLAS, decode batching, streamed prefix (CUDA build)" },
    { "shard",    kvt_bench_shard_main,    "static layer sharding (tier_gpu/layer_fraction): TTFT and decode vs F = 1" },
    { NULL, NULL, NULL }
};

int
kvt_cmd_bench (int argc, char **argv)
{
    if (argc >= 2)
        for (const s_bench_t *b = s_benches; b->name; b++)
            if (strcmp (argv [1], b->name) == 0)
                return b->run (argc - 1, argv + 1);
    FILE *out = argc >= 2 && strcmp (argv [1], "--help") == 0? stdout: stderr;
    fprintf (out, "usage: kvtier bench WHAT [--json] [options]   (kvtier bench WHAT --help)\n");
    for (const s_bench_t *b = s_benches; b->name; b++)
        fprintf (out, "  %-9s %s\n", b->name, b->summary);
    return out == stdout? 0: 2;
}
