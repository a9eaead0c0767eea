#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "derenroll/error.h"
#include "derenroll/text.h"
#include "util.h"

#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* Whether code point `cp` is drawn as an escape. */
static bool escaped(unsigned int cp, bool *wide)
{
	*wide = cp >= 0x80;
	return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 ||
	       cp == 0x2029 || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/* The visible form of the character at `s`: sets `*piece` and `*piece_len`
 * (in `esc` or in `s`) and its columns; returns the bytes of `s` it covers. */
static size_t visible_char(const char *s, char esc[8], const char **piece, size_t *piece_len,
                           size_t *cols)
{
	unsigned int cp = 0;
	size_t len = enr_util_utf8_next(s, &cp);
	bool wide;
	int w;

	if (!len) {
		*piece = REPLACEMENT;
		*piece_len = strlen(REPLACEMENT);
		*cols = 1;
		return 1;
	}
	if (escaped(cp, &wide)) {
		*piece_len = (size_t)snprintf(esc, 8, wide ? "\\u%04x" : "\\x%02x", cp);
		*piece = esc;
		*cols = *piece_len;
		return len;
	}
	*piece = s;
	*piece_len = len;
	/* Outside a UTF-8 locale wcwidth() knows no width: count one. */
	w = wcwidth((wchar_t)cp);
	*cols = w < 0 ? 1 : (size_t)w;
	return len;
}

const char *enr_text_visible(char *buf, size_t size, const char *s, size_t width)
{
	size_t o = 0, cols = 0;

	if (size == 0)
		return buf;
	while (s && *s) {
		char esc[8];
		const char *piece;
		size_t piece_len, piece_cols, run = 0, used;

		/* Printable ASCII, most of what is shown, a run at a time: one column a
		 * byte in every locale. */
		while (s[run] >= 0x20 && s[run] < 0x7F)
			run++;
		if (run) {
			size_t fit = run;
			if (width && cols + fit > width)
				fit = width - cols;
			if (o + fit >= size)
				fit = size - 1 - o;
			memcpy(buf + o, s, fit);
			o += fit;
			cols += fit;
			s += fit;
			if (fit < run)
				break;
			continue;
		}
		used = visible_char(s, esc, &piece, &piece_len, &piece_cols);
		if ((width && cols + piece_cols > width) || o + piece_len >= size)
			break;
		memcpy(buf + o, piece, piece_len);
		o += piece_len;
		cols += piece_cols;
		s += used;
	}
	buf[o] = '\0';
	return buf;
}

char *enr_text_visible_dup(const char *s)
{
	size_t size = ENR_TEXT_VISIBLE_SIZE(s ? strlen(s) : 0);
	char *buf = malloc(size);

	if (!buf) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	enr_text_visible(buf, size, s, 0);
	return buf;
}

char *enr_text_utf8(const char *s)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(3 * n + 1);

	if (!out) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	while (*s) {
		unsigned int cp;
		size_t len = enr_util_utf8_next(s, &cp);
		if (len) {
			memcpy(out + o, s, len);
			o += len;
			s += len;
		} else {
			memcpy(out + o, REPLACEMENT, strlen(REPLACEMENT));
			o += strlen(REPLACEMENT);
			s++;
		}
	}
	out[o] = '\0';
	return out;
}

void enr_text_json_string(FILE *out, const char *s)
{
	enr_util_json_string(out, s);
}

int enr_text_check(const char *what, const char *s, size_t max_chars)
{
	size_t chars = 0;

	for (const char *p = s; *p; chars++) {
		unsigned int cp;
		size_t len = enr_util_utf8_next(p, &cp);
		bool wide;
		if (!len)
			return enr_error_set(ENR_E_USAGE, "%s: not valid UTF-8 (byte %zu)", what,
			                     (size_t)(p - s) + 1);
		if (escaped(cp, &wide))
			return enr_error_set(ENR_E_USAGE,
			                     "%s: control characters are not allowed (character "
			                     "%zu is %s%0*x)",
			                     what, chars + 1, wide ? "U+" : "0x", wide ? 4 : 2, cp);
		p += len;
	}
	if (chars > max_chars)
		return enr_error_set(ENR_E_USAGE, "%s: %zu characters, at most %zu are allowed",
		                     what, chars, max_chars);
	return 0;
}
