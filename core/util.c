#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

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
			rc = enr_error_set_errno(ENR_E_IO, errno, "cannot create directory %s", copy);
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
