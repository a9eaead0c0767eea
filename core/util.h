#ifndef DERENROLL_UTIL_H
#define DERENROLL_UTIL_H

/* Small helpers shared by the core's modules; not part of the public API. */

#include <stdbool.h>
#include <stdio.h>
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

/* Base64 (RFC 4648) of `len` bytes, with padding; or base64url without padding
 * when `url` is true. malloc'd, NULL with ENR_E_NOMEM set. */
char *enr_util_base64_encode(const void *data, size_t len, bool url);

/* Decodes standard or url-safe base64, with or without padding, into a
 * malloc'd buffer (NUL-terminated for convenience). ENR_E_PARSE when invalid. */
int enr_util_base64_decode(unsigned char **out, size_t *out_len, const char *text);

/* `n` bytes from the CSPRNG. ENR_E_CRYPTO when it fails. */
int enr_util_random(void *buf, size_t n);

/* base64url of `n` random bytes (16 bytes = 128 bits for an OAuth state). */
char *enr_util_random_token(size_t n);

/* Percent-encodes everything but RFC 3986 unreserved characters; malloc'd. */
char *enr_util_urlencode(const char *s);

/* Decodes %XX and '+' (as a space) in place; returns `s`. */
char *enr_util_urldecode(char *s);

/* "2026-11-28T01:02:03Z" into `buf` (at least 21 bytes). */
void enr_util_rfc3339(char *buf, size_t size, long long t);

/* Parses RFC 3339 UTC ("...Z" or "+00:00"); ENR_E_PARSE when it is not. */
int enr_util_parse_rfc3339(long long *out, const char *s);

/* The length (1 to 4) of the valid UTF-8 character at `p`, its code point in
 * `*cp`; 0 when `p` starts an invalid sequence (or the string's end). Overlong
 * forms, surrogates and code points above U+10FFFF are invalid. */
size_t enr_util_utf8_next(const char *p, unsigned int *cp);

/* The bytes of the first `max_chars` characters of `s` (an invalid byte counts
 * as one): where to cut it without splitting a character. */
size_t enr_util_utf8_prefix(const char *s, size_t max_chars);

/* Writes `s` as a JSON string (quoted; C0 and C1 controls escaped; invalid
 * UTF-8 replaced by U+FFFD, so that the output is always valid UTF-8); "null"
 * for NULL. */
void enr_util_json_string(FILE *out, const char *s);

struct json_object;
/* Follows a dot path ("data.page.records") through objects; "" or NULL is
 * `root`. Borrowed; NULL when a part is missing. */
struct json_object *enr_util_json_at(struct json_object *root, const char *path);

#endif
