#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "derenroll/error.h"
#include "util.h"

int enr_util_mkdir_parents(const char *path, mode_t mode)
{
	char *copy = enr_util_strdup(path);
	int rc = 0;

	if (!copy)
		return ENR_E_NOMEM;
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, mode) < 0 && errno != EEXIST) {
			rc = enr_error_set_errno(ENR_E_IO, errno, "cannot create directory %s",
			                         copy);
			break;
		}
		*p = '/';
	}
	free(copy);
	return rc;
}

char *enr_util_xdg_path(const char *env, const char *fallback, const char *name)
{
	const char *base = getenv(env);
	const char *home;

	if (base && base[0] == '/')
		return enr_util_printf("%s/derenroll/%s", base, name);
	home = getenv("HOME");
	if (!home || !home[0]) {
		enr_error_set(ENR_E_CONFIG, "neither $%s nor $HOME is set", env);
		return NULL;
	}
	return enr_util_printf("%s/%s/derenroll/%s", home, fallback, name);
}

int enr_util_read_file(char **out, size_t *len, const char *path, size_t max)
{
	char *buf = NULL;
	size_t used = 0, cap = 0;
	int fd, rc = 0;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return enr_error_set_errno(errno == ENOENT ? ENR_E_NOTFOUND : ENR_E_IO, errno,
		                           "cannot read %s", path);
	for (;;) {
		ssize_t n;
		if (cap - used < 4096) {
			char *grown;
			cap = cap ? cap * 2 : 8192;
			grown = realloc(buf, cap + 1);
			if (!grown) {
				rc = enr_error_set(ENR_E_NOMEM, NULL);
				goto out;
			}
			buf = grown;
		}
		n = read(fd, buf + used, cap - used);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = enr_error_set_errno(ENR_E_IO, errno, "cannot read %s", path);
			goto out;
		}
		if (n == 0)
			break;
		used += (size_t)n;
		if (used > max) {
			rc = enr_error_set(ENR_E_PARSE, "%s is larger than %zu bytes", path, max);
			goto out;
		}
	}
	if (!buf) {
		buf = malloc(1);
		if (!buf) {
			rc = enr_error_set(ENR_E_NOMEM, NULL);
			goto out;
		}
	}
	buf[used] = '\0';
	*out = buf;
	buf = NULL;
	if (len)
		*len = used;
out:
	free(buf);
	close(fd);
	return rc;
}

char *enr_util_trim(char *s)
{
	char *start = s, *end;

	while (*start == ' ' || *start == '\t' || *start == '\n' || *start == '\r')
		start++;
	end = start + strlen(start);
	while (end > start &&
	       (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		end--;
	*end = '\0';
	if (start != s)
		memmove(s, start, (size_t)(end - start) + 1);
	return s;
}

char *enr_util_strdup(const char *s)
{
	char *copy;

	if (!s)
		return NULL;
	copy = strdup(s);
	if (!copy)
		enr_error_set(ENR_E_NOMEM, NULL);
	return copy;
}

char *enr_util_printf(const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	return s;
}

void enr_util_free_secret(char *s)
{
	if (s)
		OPENSSL_clear_free(s, strlen(s));
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *enr_util_base64_encode(const void *data, size_t len, bool url)
{
	const unsigned char *in = data;
	const char *alphabet = url ? b64_url : b64_std;
	char *out = malloc(4 * ((len + 2) / 3) + 1), *o = out;
	size_t i = 0;

	if (!out) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	for (; i + 2 < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		*o++ = alphabet[v >> 18 & 63];
		*o++ = alphabet[v >> 12 & 63];
		*o++ = alphabet[v >> 6 & 63];
		*o++ = alphabet[v & 63];
	}
	if (i < len) {
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
		*o++ = alphabet[v >> 18 & 63];
		*o++ = alphabet[v >> 12 & 63];
		if (i + 1 < len)
			*o++ = alphabet[v >> 6 & 63];
		else if (!url)
			*o++ = '=';
		if (!url)
			*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

int enr_util_base64_decode(unsigned char **out, size_t *out_len, const char *text)
{
	size_t len = strlen(text), o = 0;
	unsigned acc = 0;
	int bits = 0;
	unsigned char *buf;

	*out = NULL;
	while (len > 0 && text[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return enr_error_set(ENR_E_PARSE, "invalid base64 length");
	buf = malloc(len * 3 / 4 + 2);
	if (!buf)
		return enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = 0; i < len; i++) {
		int v = b64_value(text[i]);
		if (v < 0) {
			free(buf);
			return enr_error_set(ENR_E_PARSE, "invalid base64 character");
		}
		acc = acc << 6 | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (unsigned char)(acc >> bits & 0xff);
		}
	}
	buf[o] = '\0';
	*out = buf;
	if (out_len)
		*out_len = o;
	return 0;
}

int enr_util_random(void *buf, size_t n)
{
	if (RAND_bytes(buf, (int)n) != 1)
		return enr_error_set(ENR_E_CRYPTO, "the system's random number generator failed");
	return 0;
}

char *enr_util_random_token(size_t n)
{
	unsigned char buf[64];
	char *token;

	if (n > sizeof(buf)) {
		enr_error_set(ENR_E_USAGE, "random token too long");
		return NULL;
	}
	if (enr_util_random(buf, n) < 0)
		return NULL;
	token = enr_util_base64_encode(buf, n, true);
	OPENSSL_cleanse(buf, sizeof(buf));
	return token;
}

char *enr_util_urlencode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *o = out;

	if (!out) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o = '\0';
	return out;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *enr_util_urldecode(char *s)
{
	char *o = s;

	for (char *p = s; *p; p++) {
		if (*p == '+') {
			*o++ = ' ';
		} else if (*p == '%' && hex_value(p[1]) >= 0 && hex_value(p[2]) >= 0) {
			*o++ = (char)(hex_value(p[1]) << 4 | hex_value(p[2]));
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return s;
}

void enr_util_rfc3339(char *buf, size_t size, long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int enr_util_parse_rfc3339(long long *out, const char *s)
{
	struct tm tm = {0};
	const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);

	if (!rest)
		return enr_error_set(ENR_E_PARSE, "'%s' is not an RFC 3339 time", s);
	if (*rest == '.')
		for (rest++; *rest >= '0' && *rest <= '9'; rest++)
			;
	if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0)
		return enr_error_set(ENR_E_PARSE, "'%s' is not an RFC 3339 UTC time", s);
	*out = (long long)timegm(&tm);
	return 0;
}

size_t enr_util_utf8_next(const char *p, unsigned int *cp)
{
	const unsigned char *s = (const unsigned char *)p;
	unsigned int c = s[0], min;
	size_t len;

	if (c < 0x80) {
		*cp = c;
		return c ? 1 : 0;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2, min = 0x80, c &= 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3, min = 0x800, c &= 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4, min = 0x10000, c &= 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return len;
}

size_t enr_util_utf8_prefix(const char *s, size_t max_chars)
{
	size_t at = 0;

	for (size_t n = 0; n < max_chars && s[at]; n++) {
		unsigned int cp;
		size_t len = enr_util_utf8_next(s + at, &cp);
		at += len ? len : 1;
	}
	return at;
}

void enr_util_json_string(FILE *out, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	if (!s) {
		fputs("null", out);
		return;
	}
	putc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		/* Runs of characters that need no escape go out in one write: a
		 * listing of thousands of records is mostly such runs. */
		size_t run = 0, len;
		unsigned int cp;
		while (p[run] >= 0x20 && p[run] != 0x7f && p[run] != '"' && p[run] != '\\') {
			if (p[run] < 0x80)
				run++;
			else if ((len = enr_util_utf8_next((const char *)p + run, &cp)) &&
			         cp > 0x9F)
				run += len;
			else
				break;
		}
		if (run) {
			fwrite(p, 1, run, out);
			p += run;
			continue;
		}
		switch (*p) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (*p >= 0x80 && enr_util_utf8_next((const char *)p, &cp)) {
				/* A C1 control (U+0080..U+009F): escaped, as C0 ones are. */
				fprintf(out, "\\u%04x", cp);
				p += 2;
				continue;
			}
			if (*p >= 0x80) {
				/* Not UTF-8: one replacement character a byte. */
				fputs("\\ufffd", out);
				break;
			}
			fputs("\\u00", out);
			putc(hex[*p >> 4], out);
			putc(hex[*p & 15], out);
		}
		p++;
	}
	putc('"', out);
}

struct json_object *enr_util_json_at(struct json_object *root, const char *path)
{
	struct json_object *node = root;
	const char *part = path;

	while (node && part && *part) {
		const char *dot = strchr(part, '.');
		size_t len = dot ? (size_t)(dot - part) : strlen(part);
		struct json_object *next = NULL;
		char key[128];

		if (len >= sizeof(key) || !json_object_is_type(node, json_type_object))
			return NULL;
		memcpy(key, part, len);
		key[len] = '\0';
		if (!json_object_object_get_ex(node, key, &next))
			return NULL;
		node = next;
		part = dot ? dot + 1 : NULL;
	}
	return node;
}
