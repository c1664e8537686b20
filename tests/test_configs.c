/*  =========================================================================
    test_configs - every file in configs/ loads and validates

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "testutil.h"
#include <dirent.h>

int
main (void)
{
    const char *source = getenv ("KVT_SOURCE_DIR");
    char folder [1024];
    snprintf (folder, sizeof (folder), "%s/configs", source? source: KVT_SOURCE_DIR);
    DIR *dir = opendir (folder);
    t_check (dir);
    int loaded = 0;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        size_t length = strlen (entry->d_name);
        if (length < 5 || strcmp (entry->d_name + length - 4, ".cfg"))
            continue;
        char path [1400], error [512];
        snprintf (path, sizeof (path), "%s/%s", folder, entry->d_name);
        kvt_config_t *config = kvt_config_new ();
        int rc = kvt_config_load (config, path, error, sizeof (error));
        if (rc == 0)
            rc = kvt_config_validate (config, error, sizeof (error));
        if (rc) {
            fprintf (stderr, "%s: %s\n", entry->d_name, error);
            return T_EXIT_FAIL;
        }
        printf ("%s: OK\n", entry->d_name);
        kvt_config_destroy (&config);
        loaded++;
    }
    closedir (dir);
    t_check (loaded >= 2);          //  default.cfg and multiprocess.cfg at least

    //  The embedded default is the file in configs/, byte for byte
    char path [1400];
    snprintf (path, sizeof (path), "%s/default.cfg", folder);
    FILE *file = fopen (path, "rb");
    t_check (file);
    char *text = (char *) calloc (1, 1 << 16);
    size_t size = fread (text, 1, (1 << 16) - 1, file);
    fclose (file);
    t_check (size > 0 && strcmp (text, kvt_config_default_text ()) == 0);
    free (text);

    //  A bad file names the key and the file
    char bad [] = "/tmp/kvt-bad-config-XXXXXX";
    int fd = mkstemp (bad);
    t_check (fd >= 0);
    const char *body = "tier_gpu\n    capacity_blockz = 5\n";
    t_check (write (fd, body, strlen (body)) == (ssize_t) strlen (body));
    close (fd);
    kvt_config_t *config = kvt_config_new ();
    char error [512];
    t_check (kvt_config_load (config, bad, error, sizeof (error)) == KVT_ECONFIG);
    t_check (strstr (error, "tier_gpu/capacity_blockz") && strstr (error, bad));
    kvt_config_destroy (&config);
    unlink (bad);
    return T_EXIT_PASS;
}
