/* The credential store: opening, locking, transactions, records and app secrets. */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/store.h"
#include "store/internal.h"
#include "util.h"

#define DEFAULT_LOCK_TIMEOUT_MS 10000
#define ID_LENGTH               10
#define MAX_ID_LENGTH           32
#define MAX_SECRET_NAME         128
#define MAX_PASSPHRASE          4096
#define PUT_RETRY               2 /* the record to update changed before the lock: again */
#define PENDING_KEY             "derenroll.push" /* extra: "push", kept in the outbox */

struct enr_store_lock {
	struct enr_store *store;
	int held; /* the backend's record lock */
	char *id;
	struct enr_record *rec;
};

/* A write in progress: a shallow copy of the data with one change applied. */
struct change {
	struct store_data next;
	struct enr_record *added;   /* in next only: freed if the write fails */
	struct enr_record *dropped; /* in the old data only: freed once written */
	char *added_str[2];
	char *dropped_str[2];
	bool put; /* one record put at put_at (the index follows it) */
	size_t put_at;
};

typedef int (*apply_fn)(struct enr_store *store, struct change *ch, void *arg);

/* ---- reading on two threads ---- */

#define PARALLEL_MIN 2000 /* records from which two threads parse */

void enr_store__halves(size_t n, size_t *first0, size_t *count0, size_t *first1, size_t *count1)
{
	*first0 = 0;
	*count0 = n >= PARALLEL_MIN ? n / 2 : n;
	*first1 = *count0;
	*count1 = n - *count0;
}

struct half_call {
	void (*fn)(void *jobs, size_t half);
	void *jobs;
};

static void *second_half(void *arg)
{
	struct half_call *c = arg;

	c->fn(c->jobs, 1);
	return NULL;
}

void enr_store__run_halves(void (*fn)(void *jobs, size_t half), void *jobs, bool both)
{
	struct half_call c = {fn, jobs};
	pthread_t thread;
	bool threaded = both && pthread_create(&thread, NULL, second_half, &c) == 0;

	fn(jobs, 0);
	if (threaded)
		pthread_join(thread, NULL);
	else if (both)
		fn(jobs, 1);
}

int enr_store__halves_done(struct store_data *d, size_t n, const int rc[2],
                           const char *const message[2])
{
	for (int j = 0; j < 2; j++)
		if (rc[j] < 0) {
			for (size_t i = 0; i < n; i++)
				enr_record_free(d->records[i]);
			memset(d->records, 0, n * sizeof(*d->records));
			return enr_error_set(rc[j], "%s", message[j]);
		}
	d->n_records = n;
	return 0;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

char *enr_store_default_path(void)
{
	return enr_util_xdg_path("XDG_DATA_HOME", ".local/share", "store");
}

char *enr_store_default_outbox(void)
{
	return enr_util_xdg_path("XDG_DATA_HOME", ".local/share", "outbox");
}

void enr_store_kdf_default(struct enr_store_kdf *out)
{
	/* 128 * r * N = 16 MiB; p = 2 doubles the time (about 70 ms here), not the memory. */
	out->log2_n = 14;
	out->r = 8;
	out->p = 2;
}

int enr_store_read_passphrase_file(char **out, const char *path)
{
	char *text = NULL;
	size_t len = 0;

	*out = NULL;
	if (enr_util_read_file(&text, &len, path, MAX_PASSPHRASE) < 0)
		return enr_error_set(ENR_E_PASSPHRASE, "no passphrase: %s", enr_error_last());
	if (len && text[len - 1] == '\n')
		text[--len] = '\0';
	if (len && text[len - 1] == '\r')
		text[--len] = '\0';
	if (strlen(text) != len || len == 0) {
		OPENSSL_clear_free(text, len);
		return enr_error_set(ENR_E_PASSPHRASE, "the passphrase file %s is %s", path,
		                     len ? "not text (it holds a NUL byte)" : "empty");
	}
	*out = text;
	return 0;
}

/* ---- keys ---- */

/* Makes sure the store knows the passphrase, asking for it at most once. */
int enr_store__passphrase(struct enr_store *store, bool new_store)
{
	char *pass = NULL;
	int rc;

	if (store->passphrase)
		return 0;
	if (!store->passphrase_fn)
		return enr_error_set(ENR_E_PASSPHRASE,
		                     "no passphrase for the credential store %s: set "
		                     "DERENROLL_PASSPHRASE_FILE to a file holding it",
		                     store->path);
	rc = store->passphrase_fn(&pass, new_store, store->path, store->passphrase_ctx);
	if (rc < 0) {
		enr_util_free_secret(pass);
		return rc;
	}
	if (!pass || !pass[0]) {
		enr_util_free_secret(pass);
		return enr_error_set(ENR_E_PASSPHRASE,
		                     "empty passphrase for the credential store %s", store->path);
	}
	store->passphrase = pass;
	return 0;
}

int enr_store__derive_timed(struct enr_store *store, struct store_key *key)
{
	double start = now_seconds();
	int rc = enr_store__derive(key, store->passphrase);

	store->kdf_seconds += now_seconds() - start;
	return rc;
}

/* store_key_fn: the key of an existing encrypted file. */
static int key_for_file(struct store_key *key, void *ctx)
{
	struct enr_store *store = ctx;
	int rc = enr_store__passphrase(store, false);

	return rc < 0 ? rc : enr_store__derive_timed(store, key);
}

/* A key for a new generation when the file has none (absent or plain). */
static int file_new_key(struct enr_store *store)
{
	struct store_key key = {.kdf = store->new_kdf};
	int rc;

	if ((rc = enr_util_random(key.salt, sizeof(key.salt))) < 0 ||
	    (rc = enr_store__passphrase(store, true)) < 0 ||
	    (rc = enr_store__derive_timed(store, &key)) < 0) {
		OPENSSL_cleanse(&key, sizeof(key));
		return rc;
	}
	store->key = key;
	OPENSSL_cleanse(&key, sizeof(key));
	return 0;
}

/* ---- reading ---- */

/* The key of the journal's entries: the store file's own (none for a plain file). */
static const struct store_key *journal_key(const struct enr_store *store)
{
	return store->info.encrypted ? &store->key : NULL;
}

static int file_load(struct enr_store *store)
{
	struct store_data d;
	struct store_file_info info;
	struct store_journal journal;
	int rc;

	for (int attempt = 0;; attempt++) {
		rc = enr_store__file_read(&d, &info, store->path, store->metadata_only, &store->key,
		                          key_for_file, store);
		if (rc < 0)
			return rc;
		memset(&journal, 0, sizeof(journal));
		rc = info.exists ? enr_store__journal_read(&journal, &d, store->path,
		                                           info.encrypted ? &store->key : NULL,
		                                           store->metadata_only, false)
		                 : 0;
		/* A writer folded the journal in (and wiped it) between the two reads: again. */
		if (rc == 0 && info.encrypted && attempt < 3 &&
		    !enr_store__file_unchanged(&info, store->path)) {
			enr_store__data_free(&d);
			continue;
		}
		break;
	}
	if (rc < 0) {
		enr_store__data_free(&d);
		return rc;
	}
	enr_store__data_free(&store->data);
	store->data = d;
	enr_store__data_changed(&store->data);
	store->info = info;
	/* Entries this handle wrote and has not synced yet stay to be synced. */
	journal.unsynced = store->journal.unsynced;
	store->journal = journal;
	return 0;
}

/*
 * Brings the data up to date with the file and its journal. Under the store
 * lock (`locked`) the journal is read whatever its time stamps say: two
 * appends within one tick of the clock look alike.
 */
static int file_sync(struct enr_store *store, bool locked)
{
	if (!enr_store__file_unchanged(&store->info, store->path))
		return file_load(store);
	if (!store->info.exists ||
	    (!locked && enr_store__journal_unchanged(&store->journal, store->path)))
		return 0;
	/* Entries are only ever appended while the store file stays the same. */
	return enr_store__journal_read(&store->journal, &store->data, store->path,
	                               journal_key(store), store->metadata_only, true);
}

static bool file_encrypted(const struct enr_store *store)
{
	return !store->plaintext && (!store->info.exists || store->info.encrypted);
}

int enr_store_reload(struct enr_store *store)
{
	return store->ops->sync(store, false);
}

static int set_file_paths(struct enr_store *store, const char *path)
{
	store->path = enr_util_strdup(path);
	store->lock_path = enr_util_printf("%s.lock", path);
	store->record_lock = enr_util_printf("%s.rlock", path);
	return store->path && store->lock_path && store->record_lock ? 0 : ENR_E_NOMEM;
}

/*
 * The team store cannot be reached: this handle becomes its outbox, the file
 * that keeps what is enrolled meanwhile (every record put is marked pending),
 * until enr_store_push().
 */
static int go_offline(struct enr_store *store)
{
	char reason[512];
	int rc;

	snprintf(reason, sizeof(reason), "%s", enr_error_last());
	store->ops->close(store);
	store->offline = store->path; /* the team store's name, for messages */
	free(store->lock_path);
	free(store->record_lock);
	store->path = store->lock_path = store->record_lock = NULL;
	store->ops = &enr_store__file_ops;
	memset(&store->key, 0, sizeof(store->key));
	if ((rc = set_file_paths(store, store->outbox)) < 0 || (rc = file_load(store)) < 0)
		return rc;
	enr_log_warn("%s; working in %s until it can be reached", reason, store->path);
	return 0;
}

int enr_store_open(struct enr_store **out, const struct enr_store_options *opts)
{
	struct enr_store *store = NULL;
	const char *why;
	int rc;

	*out = NULL;
	if (!opts || !opts->path || !opts->path[0])
		return enr_error_set(ENR_E_USAGE, "no credential store path");
	store = calloc(1, sizeof(*store));
	if (!store)
		return enr_error_set(ENR_E_NOMEM, NULL);
	store->lock_fd = -1;
	store->plaintext = opts->plaintext;
	store->metadata_only = opts->metadata_only;
	store->due_before = opts->metadata_only ? opts->due_before : 0;
	store->on_demand = opts->on_demand && !opts->metadata_only;
	store->columns_only = opts->metadata_only && opts->columns_only;
	store->lock_timeout_ms =
	    opts->lock_timeout_ms > 0 ? opts->lock_timeout_ms : DEFAULT_LOCK_TIMEOUT_MS;
	store->passphrase_fn = opts->passphrase_fn;
	store->passphrase_ctx = opts->passphrase_ctx;
	if (opts->kdf)
		store->new_kdf = *opts->kdf;
	else
		enr_store_kdf_default(&store->new_kdf);
	if (!enr_store__kdf_ok(&store->new_kdf, &why)) {
		rc = enr_error_set(ENR_E_USAGE, "invalid scrypt parameters: %s", why);
		goto out;
	}
	if (enr_store_url(opts->path)) {
		store->ops = &enr_store__pg_ops;
		rc = enr_store__pg_open(store, opts->path, opts->member);
	} else {
		store->ops = &enr_store__file_ops;
		rc = set_file_paths(store, opts->path);
	}
	if (rc < 0)
		goto out;
	if (opts->passphrase) {
		if (!opts->passphrase[0]) {
			rc = enr_error_set(ENR_E_PASSPHRASE, "empty passphrase");
			goto out;
		}
		if (!(store->passphrase = enr_util_strdup(opts->passphrase))) {
			rc = ENR_E_NOMEM;
			goto out;
		}
	}
	if (opts->outbox && store->pg && !(store->outbox = enr_util_strdup(opts->outbox))) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	rc = store->ops->load(store);
	if (rc == ENR_E_OFFLINE && store->outbox)
		rc = go_offline(store);
	if (rc < 0)
		goto out;
	if (opts->create && !store->plaintext && !store->metadata_only && !store->key.have &&
	    (rc = store->ops->new_key(store)) < 0)
		goto out;
	/* A handle that writes looks records up: the index is part of reading it
	 * (a listing builds it only if it is asked). Without memory, lookups walk. */
	if (!store->metadata_only)
		enr_store__index_build(&store->index, &store->data);
	*out = store;
	store = NULL;
out:
	enr_store_free(store);
	return rc;
}

void enr_store_free(struct enr_store *store)
{
	if (!store)
		return;
	if (store->ops)
		store->ops->close(store);
	enr_store__data_free(&store->data);
	enr_store__index_free(&store->index);
	enr_util_free_secret(store->passphrase);
	OPENSSL_cleanse(&store->key, sizeof(store->key));
	free(store->path);
	free(store->lock_path);
	free(store->record_lock);
	free(store->offline);
	free(store->outbox);
	free(store);
}

const char *enr_store_path(const struct enr_store *store)
{
	return store->path;
}

bool enr_store_encrypted(const struct enr_store *store)
{
	return store->ops->encrypted(store);
}

double enr_store__kdf_seconds(const struct enr_store *store)
{
	return store->kdf_seconds;
}

/* ---- locks ---- */

static int open_lock_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	/* Its directory is made once, not at every lock (the journal's saves are many). */
	if (fd >= 0)
		return fd;
	if (errno != ENOENT)
		return enr_error_set_errno(ENR_E_IO, errno, "cannot open the lock file %s", path);
	if (enr_util_mkdir_parents(path, 0700) < 0)
		return enr_error_last_code();
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return enr_error_set_errno(ENR_E_IO, errno, "cannot open the lock file %s", path);
	return fd;
}

/*
 * Calls `try` until it succeeds or the timeout passes. There is no blocking
 * lock call with a timeout, so poll, a little slower as time goes by.
 */
static int wait_for(bool (*try)(int fd, void *arg), int fd, void *arg, int timeout_ms)
{
	double deadline = now_seconds() + timeout_ms / 1000.0;
	long pause = 1;

	while (!try(fd, arg)) {
		if (errno != EWOULDBLOCK && errno != EAGAIN && errno != EACCES && errno != EINTR)
			return enr_error_set_errno(ENR_E_IO, errno,
			                           "cannot lock the credential store");
		if (now_seconds() >= deadline)
			return ENR_E_LOCKED;
		sleep_ms(pause);
		if (pause < 25)
			pause *= 2;
	}
	return 0;
}

static bool try_flock(int fd, void *arg)
{
	(void)arg;
	return flock(fd, LOCK_EX | LOCK_NB) == 0;
}

int enr_store__lock(struct enr_store *store)
{
	char pid[32] = "";
	ssize_t n;
	int fd, rc;

	if (store->lock_fd >= 0)
		return enr_error_set(ENR_E_USAGE, "the credential store is already locked");
	fd = open_lock_file(store->lock_path);
	if (fd < 0)
		return fd;
	rc = wait_for(try_flock, fd, NULL, store->lock_timeout_ms);
	if (rc == ENR_E_LOCKED) {
		n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		enr_util_trim(pid);
		rc = enr_error_set(ENR_E_LOCKED,
		                   "credential store %s is locked by %s%s (waited %d s); try again "
		                   "when it is done",
		                   store->path, pid[0] ? "process " : "another process", pid,
		                   (store->lock_timeout_ms + 999) / 1000);
	}
	if (rc < 0) {
		close(fd);
		return rc;
	}
	/* Who holds it, for whoever times out waiting. */
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		enr_log_debug("cannot write the pid into %s", store->lock_path);
	store->lock_fd = fd;
	return 0;
}

void enr_store__unlock(struct enr_store *store)
{
	if (store->lock_fd < 0)
		return;
	if (ftruncate(store->lock_fd, 0) < 0)
		enr_log_debug("cannot clear %s", store->lock_path);
	flock(store->lock_fd, LOCK_UN);
	close(store->lock_fd);
	store->lock_fd = -1;
}

/* Where a record's lock byte lies in FILE.rlock (FNV-1a of its id). */
static off_t record_lock_offset(const char *id)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ULL;
	return (off_t)(1 + (h & ((1ULL << 40) - 1)));
}

static bool try_record_lock(int fd, void *arg)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1};

	fl.l_start = *(off_t *)arg;
	/* Open file description locks: two descriptors of one process exclude each other too. */
	return fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

static int file_lock_record(struct enr_store *store, const char *id)
{
	off_t offset = record_lock_offset(id);
	int fd = open_lock_file(store->record_lock), rc;

	if (fd < 0)
		return fd;
	rc = wait_for(try_record_lock, fd, &offset, store->lock_timeout_ms);
	if (rc == ENR_E_LOCKED)
		rc = enr_error_set(ENR_E_LOCKED,
		                   "record %s is being changed by another process (waited %d s); "
		                   "try again when it is done",
		                   id, (store->lock_timeout_ms + 999) / 1000);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

static void file_unlock_record(struct enr_store *store, int fd)
{
	(void)store;
	close(fd);
}

/* ---- transactions ---- */

/* Writes the next generation of the file; the journal's entries are folded into it. */
static int file_write(struct enr_store *store, struct store_data *next)
{
	int rc;

	next->journal_seq = store->journal.last > store->data.journal_seq ? store->journal.last
	                                                                  : store->data.journal_seq;
	rc = enr_store__file_write(&store->info, store->path, next,
	                           store->plaintext ? NULL : &store->key);
	if (rc == 0)
		enr_store__journal_folded(&store->journal, store->path);
	return rc;
}

static int writable(const struct enr_store *store)
{
	if (store->metadata_only)
		return enr_error_set(ENR_E_USAGE,
		                     "the credential store was opened for listing only");
	return 0;
}

static int copy_data(struct store_data *out, const struct store_data *d)
{
	memset(out, 0, sizeof(*out));
	out->schema = STORE_SCHEMA;
	out->records = malloc((d->n_records + 1) * sizeof(*out->records));
	out->secrets = malloc((d->n_secrets + 1) * sizeof(*out->secrets));
	if (!out->records || !out->secrets) {
		free(out->records);
		free(out->secrets);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	if (d->n_records)
		memcpy(out->records, d->records, d->n_records * sizeof(*d->records));
	if (d->n_secrets)
		memcpy(out->secrets, d->secrets, d->n_secrets * sizeof(*d->secrets));
	out->n_records = d->n_records;
	out->cap_records = d->n_records + 1;
	out->n_secrets = d->n_secrets;
	return 0;
}

/* A store opened on demand: the records `w` names read into store->data (no-op otherwise). */
static int want(const struct enr_store *store, const struct store_want *w)
{
	struct enr_store *s = (struct enr_store *)store; /* its data is a cache of the database */

	if (!w || !store->on_demand || !store->ops->fetch)
		return 0;
	return s->ops->fetch(s, w);
}

/*
 * One write: under the store lock, reads the file again if another process
 * changed it (opened on demand: with the records `w` names), applies the
 * change to a copy, writes the copy and only then makes it the store's data.
 * `apply` returns 0, or PUT_RETRY / an error to write nothing.
 */
static int transact(struct enr_store *store, const struct store_want *w, apply_fn apply, void *arg)
{
	struct change ch = {0};
	int rc;

	if ((rc = writable(store)) < 0)
		return rc;
	/* Ask for a new store's passphrase before taking the lock, not while holding it. */
	if (!store->plaintext && !store->key.have && (rc = store->ops->new_key(store)) < 0)
		return rc;
	if ((rc = store->ops->lock(store)) < 0)
		return rc;
	if ((rc = store->ops->sync(store, true)) < 0 || (rc = want(store, w)) < 0 ||
	    (rc = copy_data(&ch.next, &store->data)) < 0)
		goto out;
	if (!store->plaintext && !store->key.have && (rc = store->ops->new_key(store)) < 0)
		goto fail;
	if ((rc = apply(store, &ch, arg)) != 0 || (rc = store->ops->write(store, &ch.next)) < 0)
		goto fail;
	if (ch.put)
		enr_store__index_put(&store->index, &store->data, &ch.next, ch.put_at);
	else
		store->index.valid = false;
	free(store->data.records);
	free(store->data.secrets);
	store->data = ch.next;
	enr_record_free(ch.dropped);
	free(ch.dropped_str[0]);
	enr_util_free_secret(ch.dropped_str[1]);
	goto out;
fail:
	free(ch.next.records);
	free(ch.next.secrets);
	enr_record_free(ch.added);
	free(ch.added_str[0]);
	enr_util_free_secret(ch.added_str[1]);
out:
	store->ops->unlock(store);
	return rc;
}

/* ---- records ---- */

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* A lower-case copy of a record id, or NULL (ENR_E_USAGE/ENR_E_NOMEM set). */
static char *normal_id(const char *id)
{
	char *copy;

	if (!id || !id[0] || strlen(id) > MAX_ID_LENGTH ||
	    strspn(id, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") !=
	        strlen(id)) {
		enr_error_set(ENR_E_USAGE, "'%s' is not a record id", id ? id : "");
		return NULL;
	}
	copy = enr_util_strdup(id);
	if (copy)
		lower(copy);
	return copy;
}

/* The position of record `id` in store->data, or -1. The index is a cache of
 * the data: filling it changes nothing a caller of a const store can see. */
static ssize_t find_id(const struct enr_store *store, const char *id)
{
	struct enr_store *s = (struct enr_store *)store;

	return enr_store__index_id(&s->index, &s->data, id);
}

/*
 * The record `rec` updates in store->data: the one with its id, else the one
 * holding one of its sites; -1 for none. ENR_E_EXISTS when its sites are in
 * another record.
 */
static int find_match(ssize_t *out, struct enr_store *store, const struct enr_record *rec)
{
	size_t at[4];

	*out = rec->id ? find_id(store, rec->id) : -1;
	for (size_t s = 0; s < rec->n_sites; s++) {
		size_t n = enr_store__index_sites(&store->index, &store->data, rec->vendor,
		                                  rec->sites[s].id, at, ENR_ARRAY_SIZE(at));
		for (size_t k = 0; k < n; k++) {
			const struct enr_record *other = store->data.records[at[k]];
			if ((ssize_t)at[k] == *out)
				continue;
			if (*out >= 0 || rec->id)
				return enr_error_set(ENR_E_EXISTS,
				                     "site %s of %s is already stored in record %s",
				                     rec->sites[s].id, rec->vendor, other->id);
			*out = (ssize_t)at[k];
		}
	}
	return 0;
}

static int new_id(char **out, const struct enr_store *store)
{
	static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz"; /* Crockford */
	unsigned char bytes[ID_LENGTH];
	char id[ID_LENGTH + 1];
	int rc;

	do {
		if ((rc = enr_util_random(bytes, sizeof(bytes))) < 0)
			return rc;
		for (size_t i = 0; i < ID_LENGTH; i++)
			id[i] = alphabet[bytes[i] & 31];
		id[ID_LENGTH] = '\0';
	} while (find_id(store, id) >= 0);
	*out = enr_util_strdup(id);
	return *out ? 0 : ENR_E_NOMEM;
}

struct put_args {
	struct enr_record *rec; /* the caller's */
	const char *locked_id;  /* the record locked for this write, or NULL */
	bool existing_only;     /* enr_store_lock_save(): the record must be there */
	bool updated;
	const struct enr_record *stored; /* the copy written */
};

/* Tells the caller's record the id and times it was stored with. */
static int report_put(struct put_args *a)
{
	int rc = enr_record_set(&a->rec->id, a->stored->id);

	a->rec->created_at = a->stored->created_at;
	a->rec->updated_at = a->stored->updated_at;
	return rc;
}

static bool same_id(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

static int apply_put(struct enr_store *store, struct change *ch, void *arg)
{
	struct put_args *a = arg;
	struct enr_record *copy = NULL, *old = NULL;
	long long now = (long long)time(NULL);
	ssize_t idx;
	int rc;

	/* ch->next is still store->data here: looked up there, with its index. */
	if ((rc = find_match(&idx, store, a->rec)) < 0)
		return rc;
	if (idx >= 0)
		old = ch->next.records[idx];
	if (a->existing_only && !old)
		return enr_error_set(ENR_E_NOTFOUND, "record %s is no longer in the store",
		                     a->locked_id);
	/* Another process stored or removed the record matched before the lock. */
	if (!same_id(old ? old->id : NULL, a->locked_id))
		return PUT_RETRY;
	/* A record saved through its lock was read by id: a change of account there is
	 * the caller's decision (a re-authorization allowed to switch accounts). */
	if (!a->existing_only && old && old->account && a->rec->account &&
	    strcmp(old->account, a->rec->account) != 0)
		return enr_error_set(ENR_E_EXISTS,
		                     "this authorization is for another %s account than record %s "
		                     "holds; if the system changed hands, remove %s first",
		                     old->vendor, old->id, old->id);
	if ((rc = enr_record_dup(&copy, a->rec)) < 0)
		return rc;
	if (old) {
		rc = enr_record_set(&copy->id, old->id);
		/* A re-authorization that did not tell the account keeps the one known. */
		if (rc == 0 && !copy->account)
			rc = enr_record_set(&copy->account, old->account);
		copy->created_at = old->created_at ? old->created_at : now;
	} else {
		rc = copy->id ? 0 : new_id(&copy->id, store);
		if (!copy->created_at)
			copy->created_at = now;
	}
	copy->updated_at = now;
	if (rc < 0) {
		enr_record_free(copy);
		return rc;
	}
	a->stored = copy;
	a->updated = old != NULL;
	ch->added = copy;
	ch->put = true;
	if (old) {
		ch->dropped = old;
		ch->put_at = (size_t)idx;
		ch->next.records[idx] = copy;
	} else {
		ch->put_at = ch->next.n_records;
		ch->next.records[ch->next.n_records++] = copy;
	}
	return 0;
}

/* Checks a record and lower-cases its id. */
static int prepare(struct enr_record *rec)
{
	char *id;
	int rc;

	if ((rc = enr_store__record_check(rec)) < 0)
		return rc;
	if (!rec->id)
		return 0;
	if (!(id = normal_id(rec->id)))
		return enr_error_last_code();
	enr_util_free_secret(rec->id);
	rec->id = id;
	return 0;
}

static int put(bool *out, struct enr_store *store, struct enr_record *rec);

/* The outbox of a team store, opened with the member's passphrase. */
static int open_outbox(struct enr_store **out, struct enr_store *team)
{
	struct enr_store_options o = {.path = team->outbox,
	                              .passphrase = team->passphrase,
	                              .passphrase_fn = team->passphrase_fn,
	                              .passphrase_ctx = team->passphrase_ctx,
	                              .kdf = &team->new_kdf,
	                              .lock_timeout_ms = team->lock_timeout_ms};

	return enr_store_open(out, &o);
}

void enr_store_set_skip_locked(struct enr_store *store, bool skip)
{
	store->skip_locked = skip;
}

bool enr_record_pending(const struct enr_record *rec)
{
	const char *v = enr_record_extra(rec, PENDING_KEY);

	return v && strcmp(v, "push") == 0;
}

const char *enr_store_offline(const struct enr_store *store)
{
	return store->offline;
}

int enr_store_put(bool *out, struct enr_store *store, struct enr_record *rec)
{
	struct enr_store *outbox = NULL;
	int rc;

	if (store->offline && (rc = enr_record_set_extra(rec, PENDING_KEY, "push")) < 0)
		return rc;
	rc = put(out, store, rec);
	if (rc != ENR_E_OFFLINE || !store->outbox || (store->metadata_only))
		return rc;
	/* The team store went away since it was opened: keep it here until it is back. */
	enr_log_warn("%s; saving in %s until it can be reached", enr_error_last(), store->outbox);
	if ((rc = enr_record_set_extra(rec, PENDING_KEY, "push")) == 0 &&
	    (rc = open_outbox(&outbox, store)) == 0)
		rc = put(out, outbox, rec);
	enr_store_free(outbox);
	return rc;
}

int enr_store_push(struct enr_store *team, size_t *pushed, size_t *left)
{
	struct enr_store *outbox = NULL;
	int rc, first = 0;

	*pushed = *left = 0;
	if (!team->pg || team->offline || !team->outbox)
		return enr_error_set(ENR_E_USAGE, "%s is not a team store that can be reached",
		                     team->offline ? team->offline : team->path);
	if (access(team->outbox, F_OK) != 0)
		return 0; /* nothing was ever kept */
	if ((rc = open_outbox(&outbox, team)) < 0)
		return rc;
	for (size_t i = 0; i < enr_store_count(outbox);) {
		struct enr_record *rec = NULL;
		if (!enr_record_pending(enr_store_at(outbox, i))) {
			i++;
			continue;
		}
		/* Pushed under its own id: pushing twice updates the record pushed once. */
		rc = enr_record_dup(&rec, enr_store_at(outbox, i));
		if (rc == 0 && (rc = enr_record_set_extra(rec, PENDING_KEY, NULL)) == 0 &&
		    (rc = put(NULL, team, rec)) == 0)
			rc = enr_store_remove(outbox, rec->id);
		if (rc == 0) {
			(*pushed)++;
		} else {
			enr_log_warn("record %s stays in %s: %s", rec ? rec->id : "?", team->outbox,
			             enr_error_last());
			(*left)++;
			i++;
			if (!first && rc != ENR_E_EXISTS)
				first = rc;
		}
		enr_record_free(rec);
		if (first == ENR_E_OFFLINE)
			break;
	}
	enr_store_free(outbox);
	return first;
}

/* The records a put of `rec` may update: its own, and those holding its sites. */
static struct store_want want_put(const struct enr_record *rec)
{
	return (struct store_want){.ids = (const char *const *)&rec->id,
	                           .n_ids = rec->id ? 1 : 0,
	                           .vendor = rec->vendor,
	                           .sites = rec->sites,
	                           .n_sites = rec->n_sites};
}

static int put(bool *out, struct enr_store *store, struct enr_record *rec)
{
	struct put_args a = {.rec = rec};
	struct store_want w = want_put(rec);
	char *locked = NULL;
	ssize_t idx;
	int rc, fd = -1;

	if (out)
		*out = false;
	if ((rc = writable(store)) < 0 || (rc = prepare(rec)) < 0)
		return rc;
	/* Lock the record it will update (found without the lock), then check under it. */
	for (int attempt = 0; attempt < 5; attempt++) {
		if ((rc = enr_store_reload(store)) < 0 || (rc = want(store, &w)) < 0 ||
		    (rc = find_match(&idx, store, rec)) < 0)
			break;
		free(locked);
		locked = NULL;
		if (idx >= 0) {
			if (!(locked = enr_util_strdup(store->data.records[idx]->id))) {
				rc = ENR_E_NOMEM;
				break;
			}
			if ((fd = store->ops->lock_record(store, locked)) < 0) {
				rc = fd;
				break;
			}
		}
		a.locked_id = locked;
		rc = transact(store, &w, apply_put, &a);
		if (fd >= 0)
			store->ops->unlock_record(store, fd);
		fd = -1;
		if (rc != PUT_RETRY)
			break;
	}
	if (rc == PUT_RETRY)
		rc = enr_error_set(ENR_E_LOCKED, "the credential store keeps changing; try again");
	if (rc == 0)
		rc = report_put(&a);
	free(locked);
	if (rc == 0 && out)
		*out = a.updated;
	return rc;
}

static int apply_remove(struct enr_store *store, struct change *ch, void *arg)
{
	ssize_t idx = find_id(store, arg); /* ch->next is still store->data */

	if (idx < 0)
		return enr_error_set(ENR_E_NOTFOUND, "there is no record %s", (const char *)arg);
	ch->dropped = ch->next.records[idx];
	memmove(&ch->next.records[idx], &ch->next.records[idx + 1],
	        (ch->next.n_records - (size_t)idx - 1) * sizeof(ch->next.records[0]));
	ch->next.n_records--;
	return 0;
}

int enr_store_remove(struct enr_store *store, const char *id)
{
	char *norm = NULL;
	struct store_want w = {.n_ids = 1};
	int rc, fd;

	if ((rc = writable(store)) < 0)
		return rc;
	if (!(norm = normal_id(id)))
		return enr_error_last_code();
	w.ids = (const char *const *)&norm;
	/* Not there: say so without locking (or creating) anything. */
	if ((rc = enr_store_reload(store)) < 0 || (rc = want(store, &w)) < 0 ||
	    find_id(store, norm) < 0) {
		if (rc == 0)
			rc = enr_error_set(ENR_E_NOTFOUND, "there is no record %s in %s", norm,
			                   store->path);
		free(norm);
		return rc;
	}
	fd = store->ops->lock_record(store, norm);
	if (fd < 0) {
		free(norm);
		return fd;
	}
	rc = transact(store, &w, apply_remove, norm);
	store->ops->unlock_record(store, fd);
	free(norm);
	return rc;
}

size_t enr_store_count(const struct enr_store *store)
{
	return store->data.n_records;
}

const struct enr_record *enr_store_at(const struct enr_store *store, size_t i)
{
	return i < store->data.n_records ? store->data.records[i] : NULL;
}

int enr_store_get(struct enr_record **out, const struct enr_store *store, const char *id)
{
	char *norm = normal_id(id);
	struct store_want w = {.ids = (const char *const *)&norm, .n_ids = 1};
	ssize_t idx;
	int rc;

	*out = NULL;
	if (!norm)
		return enr_error_last_code();
	if ((rc = want(store, &w)) < 0) {
		free(norm);
		return rc;
	}
	idx = find_id(store, norm);
	if (idx < 0) {
		enr_error_set(ENR_E_NOTFOUND, "there is no record %s in %s", norm, store->path);
		free(norm);
		return ENR_E_NOTFOUND;
	}
	free(norm);
	return enr_record_dup(out, store->data.records[idx]);
}

int enr_store_find_site(struct enr_record **out, const struct enr_store *store, const char *vendor,
                        const char *site_id)
{
	struct enr_store *s = (struct enr_store *)store; /* the index is a cache */
	const struct enr_site site = {.id = (char *)site_id};
	struct store_want w = {.vendor = vendor, .sites = &site, .n_sites = 1};
	size_t at;
	int rc;

	*out = NULL;
	if ((rc = want(store, &w)) < 0)
		return rc;
	if (enr_store__index_sites(&s->index, &s->data, vendor, site_id, &at, 1) == 1)
		return enr_record_dup(out, store->data.records[at]);
	return enr_error_set(ENR_E_NOTFOUND, "site %s of %s is not in the store", site_id, vendor);
}

int enr_store_lock_record(struct enr_store_lock **out, struct enr_store *store, const char *id)
{
	struct enr_store_lock *lock = NULL;
	ssize_t idx;
	int rc;

	*out = NULL;
	if ((rc = writable(store)) < 0)
		return rc;
	lock = calloc(1, sizeof(*lock));
	if (!lock)
		return enr_error_set(ENR_E_NOMEM, NULL);
	lock->held = -1;
	lock->store = store;
	if (!(lock->id = normal_id(id))) {
		rc = enr_error_last_code();
		goto out;
	}
	if ((rc = enr_store_reload(store)) < 0 ||
	    (rc = want(store, &(struct store_want){.ids = (const char *const *)&lock->id,
	                                           .n_ids = 1})) < 0)
		goto out;
	if (find_id(store, lock->id) < 0)
		goto missing;
	if ((lock->held = store->ops->lock_record(store, lock->id)) < 0) {
		rc = lock->held;
		goto out;
	}
	/* Now that no one else can change it, read it as it is. */
	if ((rc = enr_store_reload(store)) < 0)
		goto out;
	idx = find_id(store, lock->id);
	if (idx < 0)
		goto missing;
	if ((rc = enr_record_dup(&lock->rec, store->data.records[idx])) < 0)
		goto out;
	*out = lock;
	lock = NULL;
	goto out;
missing:
	rc = enr_error_set(ENR_E_NOTFOUND, "there is no record %s in %s", lock->id, store->path);
out:
	enr_store_unlock(lock);
	return rc;
}

struct enr_record *enr_store_lock_record_get(struct enr_store_lock *lock)
{
	return lock->rec;
}

int enr_store_lock_save(struct enr_store *store, struct enr_store_lock *lock)
{
	struct put_args a = {.rec = lock->rec, .locked_id = lock->id, .existing_only = true};
	struct store_want w;
	int rc;

	/* The id is what was locked, whatever the caller did to it. */
	if ((rc = enr_record_set(&lock->rec->id, lock->id)) < 0 || (rc = prepare(lock->rec)) < 0)
		return rc;
	w = want_put(lock->rec);
	rc = transact(store, &w, apply_put, &a);
	if (rc == PUT_RETRY)
		rc = enr_error_set(ENR_E_NOTFOUND, "record %s is no longer in the store", lock->id);
	return rc == 0 ? report_put(&a) : rc;
}

/* Under the store lock: the store as it is now, and the locked record still in it. */
static int lock_and_sync(struct enr_store *store, const char *id)
{
	int rc = enr_store__lock(store);

	if (rc < 0)
		return rc;
	if ((rc = file_sync(store, true)) == 0 && find_id(store, id) < 0)
		rc = enr_error_set(ENR_E_NOTFOUND, "record %s is no longer in the store", id);
	if (rc < 0)
		enr_store__unlock(store);
	return rc;
}

int enr_store_lock_journal(struct enr_store *store, struct enr_store_lock *lock, bool sync)
{
	int rc;

	if ((rc = writable(store)) < 0 || (rc = enr_record_set(&lock->rec->id, lock->id)) < 0 ||
	    (rc = prepare(lock->rec)) < 0)
		return rc;
	lock->rec->updated_at = (long long)time(NULL);
	rc = store->ops->journal(store, lock->rec, sync);
	if (rc == ENR_E_UNSUPPORTED) /* too big for an entry, or a new store: written whole */
		return enr_store_lock_save(store, lock);
	return rc;
}

static int file_journal(struct enr_store *store, struct enr_record *rec, bool sync)
{
	int rc;

	/* The journal needs the key of the file it goes with. */
	if (!store->info.exists)
		return ENR_E_UNSUPPORTED;
	if ((rc = lock_and_sync(store, rec->id)) < 0)
		return rc;
	rc = enr_store__journal_append(&store->journal, &store->data, store->path,
	                               journal_key(store), rec, sync);
	enr_store__unlock(store);
	return rc;
}

static int file_sync_journal(struct enr_store *store)
{
	return enr_store__journal_sync(&store->journal, store->path);
}

int enr_store_sync(struct enr_store *store)
{
	return store->ops->sync_journal(store);
}

int enr_store_reserve(struct enr_store *store, const char *const *ids, size_t n)
{
	int rc;

	if ((rc = writable(store)) < 0 || n == 0)
		return rc;
	return store->ops->reserve(store, ids, n);
}

static int file_reserve(struct enr_store *store, const char *const *ids, size_t n)
{
	struct store_buf b = {0};
	size_t bytes = 0;
	ssize_t idx;
	int rc;

	if ((rc = file_sync(store, false)) < 0 || !store->info.exists)
		return rc;
	for (size_t i = 0; i < n; i++) {
		char *id = normal_id(ids[i]);
		if (!id)
			return enr_error_last_code();
		idx = find_id(store, id);
		free(id);
		if (idx < 0)
			continue;
		b.len = 0;
		enr_store__record_write(&b, store->data.records[idx], PART_FULL);
		/* The entry, with room for new tokens longer than the old ones. */
		bytes += b.len + 4096;
	}
	rc = b.failed ? enr_error_set(ENR_E_NOMEM, NULL) : 0;
	enr_store__buf_free(&b);
	if (rc < 0 || bytes == 0 || (rc = enr_store__lock(store)) < 0)
		return rc;
	if ((rc = file_sync(store, true)) == 0)
		rc = enr_store__journal_reserve(&store->journal, store->path, bytes);
	enr_store__unlock(store);
	return rc;
}

void enr_store_unlock(struct enr_store_lock *lock)
{
	if (!lock)
		return;
	if (lock->held >= 0)
		lock->store->ops->unlock_record(lock->store, lock->held);
	enr_record_free(lock->rec);
	free(lock->id);
	free(lock);
}

int enr_store_update(struct enr_store *store, const char *id, enr_store_update_fn fn, void *ctx)
{
	struct enr_store_lock *lock = NULL;
	int rc = enr_store_lock_record(&lock, store, id);

	if (rc < 0)
		return rc;
	rc = fn(lock->rec, ctx);
	if (rc == 0)
		rc = enr_store_lock_save(store, lock);
	else if (rc > 0) /* ENR_STORE_UNCHANGED */
		rc = 0;
	enr_store_unlock(lock);
	return rc;
}

struct many_args {
	const char *const *ids;
	size_t n;
	enr_store_update_fn fn;
	void *ctx;
	struct enr_record **old; /* replaced: freed once written */
	struct enr_record **new; /* written: freed if the write fails */
	size_t n_changed;
};

static int apply_many(struct enr_store *store, struct change *ch, void *arg)
{
	struct many_args *a = arg;
	long long now = (long long)time(NULL);

	(void)store;
	a->n_changed = 0;
	for (size_t i = 0; i < a->n; i++) {
		char *id = normal_id(a->ids[i]);
		struct enr_record *copy = NULL;
		ssize_t idx;
		int rc;

		if (!id)
			return enr_error_last_code();
		idx = find_id(store, id); /* replaced in place only: the same positions */
		free(id);
		if (idx < 0)
			continue; /* removed meanwhile: nothing to note */
		if ((rc = enr_record_dup(&copy, ch->next.records[idx])) < 0)
			return rc;
		rc = a->fn(copy, a->ctx);
		if (rc != 0) {
			enr_record_free(copy);
			if (rc < 0)
				return rc;
			continue;
		}
		if ((rc = enr_store__record_check(copy)) < 0) {
			enr_record_free(copy);
			return rc;
		}
		copy->updated_at = now;
		a->old[a->n_changed] = ch->next.records[idx];
		a->new[a->n_changed] = copy;
		a->n_changed++;
		ch->next.records[idx] = copy;
	}
	/* Nothing changed: write nothing. */
	return a->n_changed ? 0 : ENR_STORE_UNCHANGED;
}

int enr_store_update_many(struct enr_store *store, const char *const *ids, size_t n,
                          enr_store_update_fn fn, void *ctx)
{
	struct many_args a = {ids, n, fn, ctx, NULL, NULL, 0};
	int rc;

	if (n == 0)
		return 0;
	a.old = calloc(n, sizeof(*a.old));
	a.new = calloc(n, sizeof(*a.new));
	if (!a.old || !a.new) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	rc = transact(store, &(struct store_want){.ids = ids, .n_ids = n}, apply_many, &a);
	for (size_t i = 0; i < a.n_changed; i++)
		enr_record_free(rc == 0 ? a.old[i] : a.new[i]);
	if (rc == ENR_STORE_UNCHANGED)
		rc = 0;
out:
	free(a.old);
	free(a.new);
	return rc;
}

struct bulk_args {
	struct enr_record **recs;
	size_t n;
};

static int apply_bulk(struct enr_store *store, struct change *ch, void *arg)
{
	struct bulk_args *a = arg;
	struct enr_record **grown;

	(void)store;
	grown = realloc(ch->next.records, (ch->next.n_records + a->n) * sizeof(*grown));
	if (!grown)
		return enr_error_set(ENR_E_NOMEM, NULL);
	ch->next.records = grown;
	memcpy(grown + ch->next.n_records, a->recs, a->n * sizeof(*grown));
	ch->next.n_records += a->n;
	ch->next.cap_records = ch->next.n_records;
	return 0;
}

int enr_store__bulk_insert(struct enr_store *store, struct enr_record **recs, size_t n)
{
	struct bulk_args a = {recs, n};
	int rc = transact(store, NULL, apply_bulk, &a);

	if (rc < 0)
		for (size_t i = 0; i < n; i++)
			enr_record_free(recs[i]);
	return rc;
}

/* ---- app secrets ---- */

int enr_store_secret_check_name(const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0 || len > MAX_SECRET_NAME || name[0] == '.' ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
	        len)
		return enr_error_set(ENR_E_USAGE,
		                     "'%s' is not a secret name (letters, digits, '.', '_', '-'; "
		                     "e.g. vendor.tesla.client_secret)",
		                     name ? name : "");
	return 0;
}

/* The index of `name`, or where it would go (and *found false). */
static size_t find_secret(const struct store_data *d, const char *name, bool *found)
{
	size_t lo = 0, hi = d->n_secrets;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int cmp = strcmp(d->secrets[mid].name, name);
		if (cmp == 0) {
			*found = true;
			return mid;
		}
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

struct secret_args {
	const char *name;
	const char *value; /* NULL: remove */
};

static int apply_secret(struct enr_store *store, struct change *ch, void *arg)
{
	struct secret_args *a = arg;
	struct store_data *d = &ch->next;
	bool found;
	size_t i = find_secret(d, a->name, &found);
	char *value;

	(void)store;
	if (!a->value) {
		if (!found)
			return enr_error_set(ENR_E_NOTFOUND, "there is no app secret %s", a->name);
		ch->dropped_str[0] = d->secrets[i].name;
		ch->dropped_str[1] = d->secrets[i].value;
		memmove(&d->secrets[i], &d->secrets[i + 1],
		        (d->n_secrets - i - 1) * sizeof(d->secrets[0]));
		d->n_secrets--;
		return 0;
	}
	if (!(value = enr_util_strdup(a->value)))
		return ENR_E_NOMEM;
	ch->added_str[1] = value;
	if (found) {
		ch->dropped_str[1] = d->secrets[i].value;
		d->secrets[i].value = value;
		return 0;
	}
	if (!(ch->added_str[0] = enr_util_strdup(a->name)))
		return ENR_E_NOMEM;
	memmove(&d->secrets[i + 1], &d->secrets[i], (d->n_secrets - i) * sizeof(d->secrets[0]));
	d->secrets[i].name = ch->added_str[0];
	d->secrets[i].value = value;
	d->n_secrets++;
	return 0;
}

int enr_store_secret_set(struct enr_store *store, const char *name, const char *value)
{
	struct secret_args a = {name, value};
	int rc;

	if ((rc = enr_store_secret_check_name(name)) < 0)
		return rc;
	if (!value || !value[0])
		return enr_error_set(ENR_E_USAGE, "the value of %s is empty", name);
	enr_log_add_secret(value);
	return transact(store, NULL, apply_secret, &a);
}

int enr_store_secret_remove(struct enr_store *store, const char *name)
{
	struct secret_args a = {name, NULL};
	bool found = false;
	int rc;

	if ((rc = enr_store_secret_check_name(name)) < 0 || (rc = writable(store)) < 0)
		return rc;
	/* Not there: say so without asking for a new store's passphrase. */
	if ((rc = enr_store_reload(store)) < 0)
		return rc;
	find_secret(&store->data, name, &found);
	if (!found)
		return enr_error_set(ENR_E_NOTFOUND, "there is no app secret %s", name);
	return transact(store, NULL, apply_secret, &a);
}

int enr_store_secret_get(char **out, const struct enr_store *store, const char *name)
{
	bool found;
	size_t i;

	*out = NULL;
	if (store->metadata_only)
		return enr_error_set(ENR_E_USAGE,
		                     "the credential store was opened for listing only");
	i = find_secret(&store->data, name, &found);
	if (!found)
		return enr_error_set(ENR_E_NOTFOUND, "there is no app secret %s", name);
	if (!(*out = enr_util_strdup(store->data.secrets[i].value)))
		return ENR_E_NOMEM;
	enr_log_add_secret(*out);
	return 0;
}

int enr_store_secret_lookup(char **out, const char *name, void *ctx)
{
	return enr_store_secret_get(out, ctx, name);
}

size_t enr_store_secret_count(const struct enr_store *store)
{
	return store->data.n_secrets;
}

const char *enr_store_secret_name(const struct enr_store *store, size_t i)
{
	return i < store->data.n_secrets ? store->data.secrets[i].name : NULL;
}

/* ---- the file backend ---- */

static void file_close(struct enr_store *store)
{
	if (store->lock_fd >= 0)
		enr_store__unlock(store);
}

const struct store_ops enr_store__file_ops = {
    .load = file_load,
    .sync = file_sync,
    .lock = enr_store__lock,
    .unlock = enr_store__unlock,
    .write = file_write,
    .lock_record = file_lock_record,
    .unlock_record = file_unlock_record,
    .journal = file_journal,
    .sync_journal = file_sync_journal,
    .reserve = file_reserve,
    .encrypted = file_encrypted,
    .new_key = file_new_key,
    .close = file_close,
};
