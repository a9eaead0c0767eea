#ifndef DERENROLL_LOG_H
#define DERENROLL_LOG_H

#include <stddef.h>
#include "derenroll/export.h"

enum enr_log_level {
	ENR_LOG_ERROR = 0,
	ENR_LOG_WARN,
	ENR_LOG_INFO,
	ENR_LOG_DEBUG,
};

/*
 * Sends log lines to `path` (appended, created 0600 with its directory 0700),
 * or to stderr when `path` is NULL. Returns 0, or ENR_E_IO when the file
 * cannot be opened (logging then stays on its previous destination).
 */
ENR_API int enr_log_open(const char *path);

/* The default log file: $XDG_STATE_HOME/derenroll/derenroll.log
 * (~/.local/state/...). Returns a malloc'd path the caller frees, or NULL. */
ENR_API char *enr_log_default_path(void);

/* Closes the log file, if any; logging goes back to stderr. */
ENR_API void enr_log_close(void);

ENR_API void enr_log_set_level(enum enr_log_level level);
ENR_API enum enr_log_level enr_log_get_level(void);
/* Parses "error", "warn", "info" or "debug"; returns 0 or ENR_E_USAGE. */
ENR_API int enr_log_parse_level(enum enr_log_level *out, const char *name);

ENR_API void enr_log(enum enr_log_level level, const char *fmt, ...) ENR_PRINTF(2, 3);

#define enr_log_error(...) enr_log(ENR_LOG_ERROR, __VA_ARGS__)
#define enr_log_warn(...)  enr_log(ENR_LOG_WARN, __VA_ARGS__)
#define enr_log_info(...)  enr_log(ENR_LOG_INFO, __VA_ARGS__)
#define enr_log_debug(...) enr_log(ENR_LOG_DEBUG, __VA_ARGS__)

/*
 * Registers a secret: from now on every occurrence of it in a log line or an
 * error message is replaced by "[redacted]". Strings shorter than 4 bytes are
 * ignored (they would redact ordinary words). A copy is kept; the registry is
 * shared by all threads. Returns 0 or ENR_E_NOMEM.
 */
ENR_API int enr_log_add_secret(const char *secret);

/* Forgets every registered secret (wiping the copies). */
ENR_API void enr_log_clear_secrets(void);

/*
 * Copies `in` into `out` (at most `size` bytes, always terminated) with every
 * registered secret replaced by "[redacted]". Returns the length written.
 */
ENR_API size_t enr_log_redact(char *out, size_t size, const char *in);

#endif
