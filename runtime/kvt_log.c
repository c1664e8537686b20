/*  =========================================================================
    kvt_log - leveled logging to stderr

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"

//  Written once at start-up before threads exist, read-only afterwards.
static kvt_log_level_t s_level = KVT_LOG_WARN;
static bool s_level_from_env_done = false;

static const char *s_level_names [] = { "error", "warn", "info", "debug" };

void
kvt_log_set_level (kvt_log_level_t level)
{
    s_level = level;
    s_level_from_env_done = true;
}

int
kvt_log_parse_level (const char *name, kvt_log_level_t *level)
{
    for (int i = 0; i <= KVT_LOG_DEBUG; i++)
        if (name && streq (name, s_level_names [i])) {
            *level = (kvt_log_level_t) i;
            return 0;
        }
    return -EINVAL;
}

kvt_log_level_t
kvt_log_level (void)
{
    if (!s_level_from_env_done) {
        //  First call happens on the main thread before actors start
        const char *env = getenv ("KVT_LOG_LEVEL");
        kvt_log_level_t level;
        if (env && kvt_log_parse_level (env, &level) == 0)
            s_level = level;
        s_level_from_env_done = true;
    }
    return s_level;
}

void
kvt_log_write (kvt_log_level_t level, const char *format, ...)
{
    if (level > kvt_log_level ())
        return;
    char line [1024];
    va_list args;
    va_start (args, format);
    vsnprintf (line, sizeof (line), format, args);
    va_end (args);
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    localtime_r (&now.tv_sec, &tm);
    //  One fprintf per line so lines from several threads do not interleave
    fprintf (stderr, "%02d:%02d:%02d.%03ld %-5s [%d] %s\n", tm.tm_hour, tm.tm_min,
             tm.tm_sec, now.tv_nsec / 1000000, s_level_names [level], (int) getpid (), line);
}

int
kvt_log_test (bool verbose)
{
    (void) verbose;
    kvt_log_level_t level;
    assert (kvt_log_parse_level ("debug", &level) == 0 && level == KVT_LOG_DEBUG);
    assert (kvt_log_parse_level ("loud", &level) == -EINVAL);
    kvt_log_level_t saved = kvt_log_level ();
    kvt_log_set_level (KVT_LOG_ERROR);
    assert (kvt_log_level () == KVT_LOG_ERROR);
    kvt_log_info ("not shown: %d", 1);
    kvt_log_set_level (saved);
    return 0;
}
