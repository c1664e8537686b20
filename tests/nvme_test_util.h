/*  =========================================================================
    nvme_test_util - helpers for the test programs that drive kvt_nvme_store
    directly (test_nvme_checksum_pool, _crash, _faults, _group_commit)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    These programs run many cases in one process and report every check
    that fails, so their t_check counts a failure and goes on, where
    testutil.h's t_check exits at the first one. The two headers are
    therefore never included together. Each program gets a scratch folder
    under $KVT_TEST_NVME_DIR (or /var/tmp), skips when none can be made,
    and removes it at the end.
@end
*/

#ifndef KVT_NVME_TEST_UTIL_H_INCLUDED
#define KVT_NVME_TEST_UTIL_H_INCLUDED

#ifdef KVT_TESTUTIL_H_INCLUDED
#   error "nvme_test_util.h and testutil.h define t_check differently; include one"
#endif

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "kvt_client.h"
#include "kvt_error.h"
#include "kvt_log.h"
#include "kvt_nvme_store.h"

#define T_EXIT_PASS  0              //  All cases passed
#define T_EXIT_FAIL  1              //  At least one case failed
#define T_EXIT_SKIP  77             //  No usable directory

static int t_failures = 0;          //  Checks that failed in this program

//  Count a failed check and print where and why (printf-style message);
//  the program goes on so that one run shows every case that fails.
#define t_check(cond, ...) do { if (!(cond)) { t_failures++; \
    fprintf (stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf (stderr, __VA_ARGS__); fprintf (stderr, "\n"); } } while (0)

//  --------------------------------------------------------------------------
//  Fill 'bytes' of 'buf' from 'seed' with the client library's generator:
//  the same seed always gives the same bytes, so a reader rebuilds what a
//  writer stored from the seed (usually the block's hash) alone.

static inline void
t_fill (uint8_t *buf, size_t bytes, uint64_t seed)
{
    kvt_client_fill_bytes (buf, bytes, seed);
}

//  --------------------------------------------------------------------------
//  Map 'bytes' of anonymous memory: page-aligned, as a buffer registered
//  for direct I/O must be. Fails the program if it cannot. Free with munmap.

static inline uint8_t *
t_arena_new (size_t bytes)
{
    void *arena = mmap (NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (arena == MAP_FAILED) {
        fprintf (stderr, "mmap %zu bytes: %s\n", bytes, strerror (errno));
        exit (T_EXIT_FAIL);
    }
    return (uint8_t *) arena;
}

//  --------------------------------------------------------------------------
//  Create a store on 'config', register 'arena' as its direct-I/O buffer
//  when one is given (NULL: bounce path only), and open it. The open's
//  status goes to *rc_p; the store is returned either way, for the caller
//  to destroy.

static inline kvt_nvme_store_t *
t_store_try_open (const kvt_nvme_store_config_t *config, uint8_t *arena, size_t arena_bytes,
                  int *rc_p)
{
    kvt_nvme_store_t *store = kvt_nvme_store_new (config);
    if (arena)
        kvt_nvme_store_register_buffer (store, arena, arena_bytes);
    *rc_p = kvt_nvme_store_open (store);
    return store;
}

//  --------------------------------------------------------------------------
//  As t_store_try_open, for cases that cannot go on without the store:
//  a failed open fails the program.

static inline kvt_nvme_store_t *
t_store_open (const kvt_nvme_store_config_t *config, uint8_t *arena, size_t arena_bytes)
{
    int rc;
    kvt_nvme_store_t *store = t_store_try_open (config, arena, arena_bytes, &rc);
    if (rc) {
        fprintf (stderr, "open %s: %s\n", config->dirs [0], kvt_strerror (rc));
        exit (T_EXIT_FAIL);
    }
    return store;
}

//  --------------------------------------------------------------------------
//  Keep the store's log to errors, so that the faults a test provokes on
//  purpose do not bury its report; KVT_LOG_LEVEL, when set, wins.

static inline void
t_quiet_log (void)
{
    if (!getenv ("KVT_LOG_LEVEL"))
        kvt_log_set_level (KVT_LOG_ERROR);
}

//  --------------------------------------------------------------------------
//  Make a fresh scratch folder kvt-nvme-<tag>-XXXXXX under $KVT_TEST_NVME_DIR
//  (a real NVMe disk, when the runner has one) or /var/tmp, into 'path'.
//  Returns 'path', or NULL with the reason printed: the test then skips.

static inline char *
t_scratch_new (const char *test_name, const char *tag, char *path, size_t path_size)
{
    const char *base = getenv ("KVT_TEST_NVME_DIR");
    snprintf (path, path_size, "%s/kvt-nvme-%s-XXXXXX", base? base: "/var/tmp", tag);
    char *dir = mkdtemp (path);
    if (!dir)
        fprintf (stderr, "%s: cannot create a dir under %s: %s (skip)\n", test_name,
                 base? base: "/var/tmp", strerror (errno));
    return dir;
}

//  --------------------------------------------------------------------------
//  Remove the scratch folder and all in it. A failure is reported, not
//  counted: the cases have run by then.

static inline void
t_scratch_remove (const char *test_name, const char *dir)
{
    char *command = NULL;
    if (asprintf (&command, "rm -rf '%s'", dir) > 0) {
        if (system (command) != 0)
            fprintf (stderr, "%s: could not remove %s\n", test_name, dir);
        free (command);
    }
}

//  --------------------------------------------------------------------------
//  Print the program's verdict line and return its exit code.

static inline int
t_verdict (const char *test_name)
{
    printf ("%s: %s\n", test_name, t_failures? "FAILED": "OK");
    return t_failures? T_EXIT_FAIL: T_EXIT_PASS;
}

#endif
