/*  =========================================================================
    kvt_cmd_options - the config options every server-side command takes

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#ifndef KVT_CMD_OPTIONS_H_INCLUDED
#define KVT_CMD_OPTIONS_H_INCLUDED

#include "kvt.h"

//  Build the effective config: the embedded default, then each
//  `--config FILE`, then each `-o path=value`, in order. Those arguments
//  are removed from argv (argc updated). Returns NULL and prints the error
//  (naming the key or file) if any option is bad.
kvt_config_t *
    kvt_cmd_config_from_args (int *argc, char **argv);

//  Apply runtime/log_level from the config (KVT_LOG_LEVEL still wins).
void
    kvt_cmd_apply_log_level (const kvt_config_t *config);

//  The help text shared by commands that take config options.
#define KVT_CMD_CONFIG_HELP \
    "  --config FILE        overlay a ZPL config file on the embedded default\n" \
    "  -o PATH=VALUE        set one key, e.g. -o tier_gpu/capacity_blocks=512\n"

#endif
