/*  =========================================================================
    kvt_log - leveled logging to stderr

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    One line per event: time, level, pid, then the message. The level is
    process-wide, set once at start-up from config or KVT_LOG_LEVEL, before
    any actor thread exists, and only read afterwards.
@end
*/

#ifndef KVT_LOG_H_INCLUDED
#define KVT_LOG_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    KVT_LOG_ERROR = 0,              //  Something failed and was answered with an error
    KVT_LOG_WARN  = 1,              //  Bad input or a degraded path; still serving
    KVT_LOG_INFO  = 2,              //  Lifecycle: start, stop, config
    KVT_LOG_DEBUG = 3               //  Per-message tracing
} kvt_log_level_t;

//  Set the process-wide level. Call before starting actors.
void
    kvt_log_set_level (kvt_log_level_t level);

//  Parse "error", "warn", "info" or "debug". Returns 0 or -EINVAL.
int
    kvt_log_parse_level (const char *name, kvt_log_level_t *level);

//  Return the current level.
kvt_log_level_t
    kvt_log_level (void);

//  Write one formatted line at 'level' if the level is enabled.
void
    kvt_log_write (kvt_log_level_t level, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

#define kvt_log_error(...) kvt_log_write (KVT_LOG_ERROR, __VA_ARGS__)
#define kvt_log_warn(...)  kvt_log_write (KVT_LOG_WARN, __VA_ARGS__)
#define kvt_log_info(...)  kvt_log_write (KVT_LOG_INFO, __VA_ARGS__)
#define kvt_log_debug(...) \
    do { if (kvt_log_level () >= KVT_LOG_DEBUG) kvt_log_write (KVT_LOG_DEBUG, __VA_ARGS__); } while (0)

#ifdef __cplusplus
}
#endif
#endif
