#ifndef DERENROLL_TEXT_H
#define DERENROLL_TEXT_H

/*
 * Text from vendors and users (site names, customer references, vendor
 * messages), made safe to print: a terminal shows it and never obeys it, and
 * JSON output is always valid UTF-8.
 *
 * The visible form: C0 controls and DEL (ESC, CR, BEL, newline, tab...) become
 * "\xHH" (ESC is "\x1b"); C1 controls (U+0080..U+009F) and the characters that
 * reorder or break lines (U+2028, U+2029, U+202A..U+202E, U+2066..U+2069)
 * become "\uHHHH"; bytes that are not UTF-8 become U+FFFD. Everything else,
 * backslashes included, is left as it is.
 */

#include <stdio.h>
#include <stddef.h>
#include "derenroll/export.h"

/* The longest customer reference, in characters. */
#define ENR_TEXT_CUSTOMER_MAX 200

/* A buffer that holds the visible form of any `len` bytes, uncut. */
#define ENR_TEXT_VISIBLE_SIZE(len) (4 * (len) + 1)

/*
 * Writes the visible form of `s` (NULL: "") into `buf`, cut at a character
 * boundary to at most `width` terminal columns (0: no limit) and to what fits
 * in `size` bytes with the NUL; an escape is never split. Returns `buf`.
 */
ENR_API const char *enr_text_visible(char *buf, size_t size, const char *s, size_t width);

/* The visible form of `s`, uncut, malloc'd; NULL (ENR_E_NOMEM) when out of memory. */
ENR_API char *enr_text_visible_dup(const char *s);

/* A malloc'd copy of `s` with every byte that is not UTF-8 replaced by U+FFFD
 * (for JSON made by json-c, which does not check); NULL with ENR_E_NOMEM. */
ENR_API char *enr_text_utf8(const char *s);

/* Writes `s` as a JSON string: quoted, escaped, valid UTF-8; "null" for NULL. */
ENR_API void enr_text_json_string(FILE *out, const char *s);

/*
 * Checks a line of text a person typed: valid UTF-8, no control character
 * (the visible form's escapes), at most `max_chars` characters. Returns 0, or
 * ENR_E_USAGE with a one-line message naming `what`.
 */
ENR_API int enr_text_check(const char *what, const char *s, size_t max_chars);

#endif
