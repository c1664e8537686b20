/*  =========================================================================
    kvt_selftest - runs the selftest at the bottom of each module

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvt_selftest [--list] [--verbose] [--test NAME]
    The table comes from tests/selftests.txt through CMake. Exit codes: 0
    pass, 1 fail (or an assertion aborts), 77 skip (hardware missing).
@end
*/

#ifdef NDEBUG
#error "kvt_selftest must be built with assertions (no NDEBUG)"
#endif

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "kvt_selftests.inc"

typedef struct {
    const char *name;               //  Module name, as in selftests.txt
    int (*test) (bool verbose);     //  Its selftest
} test_item_t;

static test_item_t s_tests [] = {
    KVT_SELFTEST_ROWS
    { NULL, NULL }
};

int
main (int argc, char *argv [])
{
    bool verbose = false;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv [i], "--verbose") == 0 || strcmp (argv [i], "-v") == 0)
            verbose = true;
        else
        if (strcmp (argv [i], "--list") == 0) {
            for (test_item_t *t = s_tests; t->name; t++)
                puts (t->name);
            return 0;
        }
        else
        if (strcmp (argv [i], "--test") == 0 && i + 1 < argc)
            only = argv [++i];
        else {
            fprintf (stderr, "usage: kvt_selftest [--list] [--verbose] [--test NAME]\n");
            return 1;
        }
    }
    int worst = 0;
    bool found = false;
    for (test_item_t *t = s_tests; t->name; t++) {
        if (only && strcmp (only, t->name) != 0)
            continue;
        found = true;
        printf (" * %s: ", t->name);
        fflush (stdout);
        int rc = t->test (verbose);
        printf ("%s\n", rc == 0? "OK": rc == 77? "SKIP": "FAILED");
        if (rc != 0 && (worst == 0 || worst == 77))
            worst = rc;
    }
    if (!found) {
        fprintf (stderr, "kvt_selftest: no test named %s\n", only? only: "(any)");
        return 1;
    }
    return worst;
}
