#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
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
/*
 * The secrets to redact, in a hash table keyed by their length and a
 * polynomial hash of all their bytes. A line is scanned with one rolling hash
 * per distinct secret length (Rabin-Karp), so that it costs the same with
 * 40,000 secrets as with four: tokens of one vendor share their first bytes
 * (JWT headers), so no prefix can index them.
 */
struct secret {
	char *text;
	size_t len;
	uint64_t hash;
	struct secret *next;
};
/* The secrets of one length, and the rolling hash of the line being scanned. */
struct length {
	size_t len;
	uint64_t top; /* HASH_BASE^(len - 1), to roll the first byte out */
	size_t at;    /* the window hashed, in[at, at + len) */
	uint64_t hash;
	bool started;
};
static struct secret **buckets;
static size_t n_buckets; /* a power of two, or 0 */
static size_t n_secrets;
static struct length *lengths; /* longest first */
static size_t n_lengths;

#define HASH_BASE 1099511628211ull

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

static uint64_t hash_of(const char *p, size_t len)
{
	uint64_t h = 0;

	for (size_t i = 0; i < len; i++)
		h = h * HASH_BASE + (unsigned char)p[i];
	return h;
}

static size_t bucket_of(size_t len, uint64_t hash, size_t n)
{
	uint64_t h = (hash ^ (uint64_t)len * 0x9E3779B97F4A7C15ull) * 0xFF51AFD7ED558CCDull;

	return (size_t)(h >> 32) & (n - 1);
}

static const struct secret *find(const char *p, size_t len, uint64_t hash)
{
	for (const struct secret *s = buckets[bucket_of(len, hash, n_buckets)]; s; s = s->next)
		if (s->len == len && s->hash == hash && memcmp(s->text, p, len) == 0)
			return s;
	return NULL;
}

/* Doubles the table. Called under the lock; false when out of memory. */
static bool grow(void)
{
	size_t n = n_buckets ? 2 * n_buckets : 64;
	struct secret **grown = calloc(n, sizeof(*grown));

	if (!grown)
		return false;
	for (size_t i = 0; i < n_buckets; i++) {
		while (buckets[i]) {
			struct secret *s = buckets[i];
			size_t b = bucket_of(s->len, s->hash, n);
			buckets[i] = s->next;
			s->next = grown[b];
			grown[b] = s;
		}
	}
	free(buckets);
	buckets = grown;
	n_buckets = n;
	return true;
}

/* Makes `len` one of the lengths scanned for. Called under the lock. */
static bool add_length(size_t len)
{
	struct length *grown;
	size_t i = 0;
	uint64_t top = 1;

	while (i < n_lengths && lengths[i].len > len)
		i++;
	if (i < n_lengths && lengths[i].len == len)
		return true;
	grown = realloc(lengths, (n_lengths + 1) * sizeof(*grown));
	if (!grown)
		return false;
	lengths = grown;
	memmove(&lengths[i + 1], &lengths[i], (n_lengths - i) * sizeof(*lengths));
	for (size_t k = 1; k < len; k++)
		top *= HASH_BASE;
	lengths[i] = (struct length){.len = len, .top = top};
	n_lengths++;
	return true;
}

int enr_log_add_secret(const char *secret)
{
	struct secret *entry = NULL;
	size_t len = secret ? strlen(secret) : 0;
	uint64_t hash;
	int rc = 0;

	if (len < MIN_SECRET_LEN)
		return 0;
	hash = hash_of(secret, len);
	pthread_mutex_lock(&lock);
	if (n_buckets && find(secret, len, hash))
		goto out;
	if ((n_secrets >= n_buckets && !grow()) || !add_length(len) ||
	    !(entry = malloc(sizeof(*entry))) || !(entry->text = strdup(secret))) {
		free(entry);
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	entry->len = len;
	entry->hash = hash;
	entry->next = buckets[bucket_of(len, hash, n_buckets)];
	buckets[bucket_of(len, hash, n_buckets)] = entry;
	n_secrets++;
out:
	pthread_mutex_unlock(&lock);
	return rc;
}

void enr_log_clear_secrets(void)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_buckets; i++) {
		while (buckets[i]) {
			struct secret *s = buckets[i];
			buckets[i] = s->next;
			OPENSSL_clear_free(s->text, s->len);
			free(s);
		}
	}
	free(buckets);
	free(lengths);
	buckets = NULL;
	lengths = NULL;
	n_buckets = n_secrets = n_lengths = 0;
	pthread_mutex_unlock(&lock);
}

/* Longest registered secret that starts at in[at] (`n` bytes in all), or 0.
 * Positions only grow during a scan. Called under the lock. */
static size_t secret_at(const char *in, size_t at, size_t n)
{
	for (size_t i = 0; i < n_lengths; i++) {
		struct length *l = &lengths[i];
		if (l->len > n - at)
			continue;
		if (!l->started || at - l->at >= l->len) {
			l->hash = hash_of(in + at, l->len);
			l->started = true;
		} else {
			/* Roll the window forward: each byte goes in and out once. */
			for (; l->at < at; l->at++)
				l->hash =
				    (l->hash - (unsigned char)in[l->at] * l->top) * HASH_BASE +
				    (unsigned char)in[l->at + l->len];
		}
		l->at = at;
		if (find(in + at, l->len, l->hash))
			return l->len;
	}
	return 0;
}

size_t enr_log_redact(char *out, size_t size, const char *in)
{
	size_t o = 0;

	if (size == 0)
		return 0;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_lengths; i++)
		lengths[i].started = false;
	for (size_t at = 0, n = strlen(in); at < n && o + 1 < size;) {
		size_t len = n_secrets ? secret_at(in, at, n) : 0;
		if (len) {
			size_t r = strlen(REDACTED);
			if (r > size - 1 - o)
				r = size - 1 - o;
			memcpy(out + o, REDACTED, r);
			o += r;
			at += len;
		} else {
			out[o++] = in[at++];
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
