/*  =========================================================================
    test_codegen_fresh - generated files match the catalogue

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Runs `python3 $KVT_SOURCE_DIR/tools/kvt_codegen.py --check`, which exits
    1 if messages/kvt_msg_fields.h or the GENERATED section of
    messages/PROTOCOL.md differs from what the catalogue in
    messages/kvt_msg.h (and runtime/kvt_error.[ch]) would produce now.
    Exit 0 fresh, 1 stale (run tools/kvt_codegen.py and commit), 77 skip
    when python3 or KVT_SOURCE_DIR is missing.
@end
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define T_EXIT_PASS  0              //  Generated files are fresh
#define T_EXIT_FAIL  1              //  Stale, or the generator failed
#define T_EXIT_SKIP  77             //  No python3 or no source dir

int
main (void)
{
    const char *source_dir = getenv ("KVT_SOURCE_DIR");
    if (!source_dir || !*source_dir) {
        printf ("skip: KVT_SOURCE_DIR is not set (run through ctest)\n");
        return T_EXIT_SKIP;
    }
    if (system ("python3 -c pass > /dev/null 2>&1") != 0) {
        printf ("skip: python3 is not available\n");
        return T_EXIT_SKIP;
    }
    if (strchr (source_dir, '\'')) {
        printf ("FAIL: cannot quote source dir %s\n", source_dir);
        return T_EXIT_FAIL;
    }
    char command [4096];
    snprintf (command, sizeof (command), "python3 '%s/tools/kvt_codegen.py' --check",
              source_dir);
    int status = system (command);
    if (status == -1 || !WIFEXITED (status)) {
        printf ("FAIL: could not run %s\n", command);
        return T_EXIT_FAIL;
    }
    if (WEXITSTATUS (status) != 0) {
        printf ("FAIL: generated files are stale: run python3 tools/kvt_codegen.py\n");
        return T_EXIT_FAIL;
    }
    printf ("PASS: messages/kvt_msg_fields.h and messages/PROTOCOL.md are fresh\n");
    return T_EXIT_PASS;
}
