#ifndef DERENROLL_UTIL_H
#define DERENROLL_UTIL_H

/* Small helpers shared by the core's modules; not part of the public API. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define ENR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Creates the parent directories of `path` (mode `mode`) as needed. */
int enr_util_mkdir_parents(const char *path, mode_t mode);

/* $ENV/derenroll/NAME, or $HOME/FALLBACK/derenroll/NAME; malloc'd or NULL. */
char *enr_util_xdg_path(const char *env, const char *fallback, const char *name);

/* Reads a whole file (at most `max` bytes) into a NUL-terminated buffer.
 * Sets ENR_E_IO / ENR_E_NOTFOUND / ENR_E_PARSE (too large) on failure. */
int enr_util_read_file(char **out, size_t *len, const char *path, size_t max);

/* Strips leading and trailing white space in place; returns `s`. */
char *enr_util_trim(char *s);

/* strdup that sets ENR_E_NOMEM; NULL in gives NULL out without error. */
char *enr_util_strdup(const char *s);

/* malloc'd printf; NULL with ENR_E_NOMEM set on failure. */
char *enr_util_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Frees a secret after wiping it. */
void enr_util_free_secret(char *s);

#endif
