/*  =========================================================================
    kvt_cmd_options - the config options every server-side command takes

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_cmd_options.h"

kvt_config_t *
kvt_cmd_config_from_args (int *argc, char **argv)
{
    kvt_config_t *config = kvt_config_new ();
    char error [512];
    int kept = 1;
    for (int k = 1; k < *argc; k++) {
        int rc = 0;
        bool is_config = strcmp (argv [k], "--config") == 0;
        bool is_option = strcmp (argv [k], "-o") == 0;
        if (is_config || is_option) {
            if (k + 1 >= *argc) {
                fprintf (stderr, "kvtier: %s needs a value\n", argv [k]);
                kvt_config_destroy (&config);
                return NULL;
            }
            rc = is_config? kvt_config_load (config, argv [k + 1], error, sizeof (error))
                          : kvt_config_set_option (config, argv [k + 1], error, sizeof (error));
            k++;
        }
        else {
            argv [kept++] = argv [k];
            continue;
        }
        if (rc) {
            fprintf (stderr, "kvtier: %s\n", error);
            kvt_config_destroy (&config);
            return NULL;
        }
    }
    *argc = kept;
    argv [kept] = NULL;
    if (kvt_config_validate (config, error, sizeof (error))) {
        fprintf (stderr, "kvtier: %s\n", error);
        kvt_config_destroy (&config);
        return NULL;
    }
    return config;
}

void
kvt_cmd_apply_log_level (const kvt_config_t *config)
{
    kvt_log_level_t level;
    if (!getenv ("KVT_LOG_LEVEL")
    &&  kvt_log_parse_level (kvt_config_str (config, "runtime/log_level"), &level) == 0)
        kvt_log_set_level (level);
}
