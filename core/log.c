#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "derenroll/error.h"
#include "derenroll/log.h"
#include "util.h"

#define REDACTED       "[redacted]"
#define MIN_SECRET_LEN 4
#define LINE_MAX_LEN   2048

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_file;
static enum enr_log_level log_level = ENR_LOG_INFO;
static char **secrets;
static size_t n_secrets;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int enr_log_open(const char *path)
{
	FILE *f = NULL;
	int fd;

	if (path) {
		if (enr_util_mkdir_parents(path, 0700) < 0)
			return enr_error_last_code();
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0)
			return enr_error_set_errno(ENR_E_IO, errno, "cannot open log file %s",
			                           path);
		f = fdopen(fd, "a");
		if (!f) {
			close(fd);
			return enr_error_set(ENR_E_NOMEM, NULL);
		}
		setvbuf(f, NULL, _IOLBF, 0);
	}
	pthread_mutex_lock(&lock);
	if (log_file)
		fclose(log_file);
	log_file = f;
	pthread_mutex_unlock(&lock);
	return 0;
}

char *enr_log_default_path(void)
{
	return enr_util_xdg_path("XDG_STATE_HOME", ".local/state", "derenroll.log");
}

void enr_log_close(void)
{
	enr_log_open(NULL);
}

void enr_log_set_level(enum enr_log_level level)
{
	log_level = level;
}

enum enr_log_level enr_log_get_level(void)
{
	return log_level;
}

int enr_log_parse_level(enum enr_log_level *out, const char *name)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum enr_log_level)i;
			return 0;
		}
	}
	return enr_error_set(ENR_E_USAGE, "unknown log level '%s' (error, warn, info, debug)",
	                     name);
}

int enr_log_add_secret(const char *secret)
{
	char **grown;
	char *copy;

	if (!secret || strlen(secret) < MIN_SECRET_LEN)
		return 0;
	copy = strdup(secret);
	if (!copy)
		return enr_error_set(ENR_E_NOMEM, NULL);
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_secrets; i++) {
		if (strcmp(secrets[i], secret) == 0) {
			pthread_mutex_unlock(&lock);
			OPENSSL_clear_free(copy, strlen(copy));
			return 0;
		}
	}
	grown = realloc(secrets, (n_secrets + 1) * sizeof(*secrets));
	if (!grown) {
		pthread_mutex_unlock(&lock);
		OPENSSL_clear_free(copy, strlen(copy));
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	secrets = grown;
	secrets[n_secrets++] = copy;
	pthread_mutex_unlock(&lock);
	return 0;
}

void enr_log_clear_secrets(void)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_secrets; i++)
		OPENSSL_clear_free(secrets[i], strlen(secrets[i]));
	free(secrets);
	secrets = NULL;
	n_secrets = 0;
	pthread_mutex_unlock(&lock);
}

/* Longest registered secret that starts at `p`, or 0. Called under the lock. */
static size_t secret_at(const char *p)
{
	size_t best = 0;

	for (size_t i = 0; i < n_secrets; i++) {
		size_t len = strlen(secrets[i]);
		if (len > best && strncmp(p, secrets[i], len) == 0)
			best = len;
	}
	return best;
}

size_t enr_log_redact(char *out, size_t size, const char *in)
{
	size_t o = 0;

	if (size == 0)
		return 0;
	pthread_mutex_lock(&lock);
	while (*in && o + 1 < size) {
		size_t len = n_secrets ? secret_at(in) : 0;
		if (len) {
			size_t n = strlen(REDACTED);
			if (n > size - 1 - o)
				n = size - 1 - o;
			memcpy(out + o, REDACTED, n);
			o += n;
			in += len;
		} else {
			out[o++] = *in++;
		}
	}
	out[o] = '\0';
	pthread_mutex_unlock(&lock);
	return o;
}

void enr_log(enum enr_log_level level, const char *fmt, ...)
{
	char raw[LINE_MAX_LEN], line[LINE_MAX_LEN], stamp[32];
	struct tm tm;
	time_t now;
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	for (char *p = raw; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	enr_log_redact(line, sizeof(line), raw);

	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&lock);
	if (log_file)
		fprintf(log_file, "%s %d %s: %s\n", stamp, (int)getpid(), level_names[level], line);
	else
		fprintf(stderr, "derenroll: %s: %s\n", level_names[level], line);
	pthread_mutex_unlock(&lock);
}
