/* The store's journal: new tokens on disk in a few hundred bytes, folded in by the next write. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "store/internal.h"
#include "util.h"

/*
 * FILE.journal is a run of entries, each (big endian):
 *    0  4  magic: "DRJE" (AES-256-GCM with the store's key) or "DRJP" (plain store)
 *    4  4  L, the length of the payload
 *    8  8  sequence number, higher than every entry before it
 *   16 12  nonce, fresh for each entry (zeros in a plain entry)
 *   28  L  payload: the record as JSON (id, times, region, account, credentials)
 * 28+L 16  GCM tag over bytes 0..27 and the payload; in a plain entry the first
 *          16 bytes of SHA-256 of bytes 0..27+L
 *
 * The journal ends at the first entry that is torn, damaged, of the other
 * kind, or not numbered above the one before it; beyond that lie zeros (space
 * reserved by enr_store__journal_reserve()) or wiped entries. Entries numbered
 * up to the store header's "journal" position are already in the store file;
 * when every entry is, the next one goes at the start again.
 */
#define ENTRY_HEAD        28
#define ENTRY_TAG         16
#define ENTRY_MAX_PAYLOAD (1024 * 1024)
#define JOURNAL_MAX       (64LL * 1024 * 1024) /* read no more than this */
#define MAGIC_SEALED      "DRJE"
#define MAGIC_PLAIN       "DRJP"

static char *journal_path(const char *path)
{
	char *p = enr_util_printf("%s.journal", path);

	if (!p)
		enr_error_set(ENR_E_NOMEM, NULL);
	return p;
}

static void put_be(unsigned char *p, unsigned long long v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static unsigned long long get_be(const unsigned char *p, int bytes)
{
	unsigned long long v = 0;

	for (int i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	return v;
}

static void note_stat(struct store_journal *j, const struct stat *st)
{
	j->exists = true;
	j->dev = (unsigned long long)st->st_dev;
	j->ino = (unsigned long long)st->st_ino;
	j->size = (long long)st->st_size;
	j->mtime_ns = (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

bool enr_store__journal_unchanged(const struct store_journal *j, const char *path)
{
	char *jp = enr_util_printf("%s.journal", path);
	struct store_journal now = {0};
	struct stat st;
	bool gone;

	if (!jp)
		return false;
	gone = stat(jp, &st) < 0;
	free(jp);
	if (gone)
		return !j->exists && errno == ENOENT;
	note_stat(&now, &st);
	return j->exists && now.dev == j->dev && now.ino == j->ino && now.size == j->size &&
	       now.mtime_ns == j->mtime_ns;
}

static int plain_tag(unsigned char *tag, const unsigned char *entry, size_t len)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned n = 0;

	if (EVP_Digest(entry, len, digest, &n, EVP_sha256(), NULL) != 1)
		return enr_error_set(ENR_E_CRYPTO, "SHA-256 failed");
	memcpy(tag, digest, ENTRY_TAG);
	return 0;
}

/*
 * Checks the entry at `p` (`avail` bytes to the end of what was read) and
 * gives its payload, decrypted into a malloc'd, NUL-terminated copy. False
 * when it is not a whole, authentic entry of this store's kind.
 */
static bool entry_open(char **payload, size_t *entry_len, unsigned long long *seq,
                       const unsigned char *p, size_t avail, const struct store_key *key)
{
	unsigned char tag[ENTRY_TAG];
	EVP_CIPHER_CTX *ctx;
	size_t len;
	char *out;
	int outl;
	bool ok;

	*payload = NULL;
	if (avail < ENTRY_HEAD + ENTRY_TAG || memcmp(p, key ? MAGIC_SEALED : MAGIC_PLAIN, 4) != 0)
		return false;
	len = (size_t)get_be(p + 4, 4);
	if (len == 0 || len > ENTRY_MAX_PAYLOAD || len > avail - ENTRY_HEAD - ENTRY_TAG)
		return false;
	if (!(out = malloc(len + 1)))
		return false;
	if (!key) {
		ok = plain_tag(tag, p, ENTRY_HEAD + len) == 0 &&
		     CRYPTO_memcmp(tag, p + ENTRY_HEAD + len, ENTRY_TAG) == 0;
		memcpy(out, p + ENTRY_HEAD, len);
	} else {
		ctx = enr_store__cipher(false, key, p + 16, p, ENTRY_HEAD);
		ok = ctx &&
		     EVP_DecryptUpdate(ctx, (unsigned char *)out, &outl, p + ENTRY_HEAD,
		                       (int)len) == 1 &&
		     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, ENTRY_TAG,
		                         (void *)(p + ENTRY_HEAD + len)) == 1 &&
		     EVP_DecryptFinal_ex(ctx, (unsigned char *)out + outl, &outl) == 1;
		EVP_CIPHER_CTX_free(ctx);
	}
	if (!ok) {
		OPENSSL_clear_free(out, len + 1);
		return false;
	}
	out[len] = '\0';
	*payload = out;
	*entry_len = ENTRY_HEAD + len + ENTRY_TAG;
	*seq = get_be(p + 8, 8);
	return true;
}

static void swap_str(char **a, char **b)
{
	char *t = *a;

	*a = *b;
	*b = t;
}

/* Forgets the secret fields of loaded credentials (a store opened for listing). */
static void drop_secrets(struct enr_credentials *c)
{
	char **secret[] = {&c->tokens.access_token, &c->tokens.refresh_token,
	                   &c->tokens.id_token,     &c->api_key,
	                   &c->account_key,         &c->key_secret};

	c->refreshable = c->tokens.refresh_token && c->tokens.refresh_token[0];
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
		enr_util_free_secret(*secret[i]);
		*secret[i] = NULL;
	}
}

/* Takes what an entry saves from `got` into the stored record it names (if still there). */
static void take_saved(struct store_data *d, struct enr_record *got, bool metadata_only)
{
	struct enr_record *rec = NULL;
	struct enr_credentials cred;

	for (size_t i = 0; !rec && i < d->n_records; i++)
		if (strcmp(d->records[i]->id, got->id) == 0)
			rec = d->records[i];
	if (!rec)
		return; /* removed since */
	if (metadata_only)
		drop_secrets(&got->cred);
	cred = rec->cred;
	rec->cred = got->cred;
	got->cred = cred;
	rec->access_expires_at = got->access_expires_at;
	rec->refresh_expires_at = got->refresh_expires_at;
	if (got->updated_at > rec->updated_at)
		rec->updated_at = got->updated_at;
	swap_str(&rec->region, &got->region);
	swap_str(&rec->account, &got->account);
	/* A rejection noted through the journal; a later check written whole stays. */
	if (got->last_check.at > rec->last_check.at) {
		rec->last_check.at = got->last_check.at;
		rec->last_check.outcome = got->last_check.outcome;
		swap_str(&rec->last_check.message, &got->last_check.message);
	}
}

static int entry_apply(struct store_data *d, const char *payload, bool metadata_only)
{
	struct json_object *obj = json_tokener_parse(payload);
	struct enr_record *got = NULL;
	int rc;

	if (!obj)
		return 0; /* authentic, so ours, but unreadable: a newer derenroll's */
	rc = enr_record_new(&got);
	if (rc == 0 && enr_store__record_read(got, obj) == 0)
		take_saved(d, got, metadata_only);
	enr_store__json_wipe(obj);
	json_object_put(obj);
	enr_record_free(got);
	return rc;
}

/* The whole entry at `at` (malloc'd, *len bytes), or NULL where the journal ends. */
static unsigned char *entry_read(size_t *len, int fd, long long at, const struct store_key *key)
{
	unsigned char head[ENTRY_HEAD], *e;
	size_t payload;

	if (at > JOURNAL_MAX ||
	    enr_store__read_full(fd, head, sizeof(head), at) != (ssize_t)sizeof(head) ||
	    memcmp(head, key ? MAGIC_SEALED : MAGIC_PLAIN, 4) != 0)
		return NULL;
	payload = (size_t)get_be(head + 4, 4);
	if (payload == 0 || payload > ENTRY_MAX_PAYLOAD)
		return NULL;
	*len = ENTRY_HEAD + payload + ENTRY_TAG;
	if (!(e = malloc(*len)))
		return NULL;
	memcpy(e, head, sizeof(head));
	if (enr_store__read_full(fd, e + ENTRY_HEAD, *len - ENTRY_HEAD, at + ENTRY_HEAD) !=
	    (ssize_t)(*len - ENTRY_HEAD)) {
		OPENSSL_clear_free(e, *len);
		return NULL;
	}
	return e;
}

int enr_store__journal_read(struct store_journal *j, struct store_data *d, const char *path,
                            const struct store_key *key, bool metadata_only, bool more)
{
	char *jp = journal_path(path), *payload;
	unsigned char *entry;
	unsigned long long seq, prev = 0, applied = j->applied;
	struct store_journal known = *j;
	long long at = 0;
	size_t len, n;
	struct stat st;
	int fd, rc = 0;

	if (!jp)
		return ENR_E_NOMEM;
	fd = open(jp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = errno == ENOENT ? 0
		                     : enr_error_set_errno(ENR_E_IO, errno, "cannot open %s", jp);
		if (rc == 0)
			*j = (struct store_journal){.applied = applied};
		goto out;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = enr_error_set(ENR_E_STORE, "%s is not a regular file", jp);
		goto out;
	}
	note_stat(j, &st);
	/* The same file as read before: only what was appended since. */
	more = more && known.exists && known.dev == j->dev && known.ino == j->ino;
	if (more) {
		at = known.end;
		prev = known.last;
	} else {
		j->last = 0;
	}
	while ((entry = entry_read(&len, fd, at, key))) {
		bool ok = entry_open(&payload, &n, &seq, entry, len, key) && seq > prev;
		OPENSSL_clear_free(entry, len);
		if (!ok) {
			if (payload)
				OPENSSL_clear_free(payload, strlen(payload));
			break;
		}
		if (seq > d->journal_seq && seq > applied) {
			rc = entry_apply(d, payload, metadata_only);
			applied = seq;
		}
		OPENSSL_clear_free(payload, strlen(payload));
		if (rc < 0)
			goto out;
		prev = j->last = seq;
		at += (long long)n;
	}
	/* Everything in it is folded in already: start again at the beginning. */
	j->end = more || j->last > d->journal_seq ? at : 0;
	j->applied = applied;
out:
	if (fd >= 0)
		close(fd);
	free(jp);
	return rc;
}

static int journal_error(int err, const char *jp)
{
	return enr_store__write_error(err, "save new tokens in", jp);
}

static int open_for_write(const char *jp)
{
	int fd = open(jp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return journal_error(errno, jp);
	return fd;
}

/* The entry for `rec` (malloc'd, *len bytes), numbered `seq`. */
static int entry_seal(unsigned char **out, size_t *len, const struct enr_record *rec,
                      unsigned long long seq, const struct store_key *key)
{
	struct store_buf json = {0};
	unsigned char *e = NULL;
	EVP_CIPHER_CTX *ctx;
	int outl, rc = 0;

	*out = NULL;
	enr_store__record_write(&json, rec, PART_FULL);
	if (json.failed) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	if (json.len > ENTRY_MAX_PAYLOAD) {
		rc = enr_error_set(ENR_E_UNSUPPORTED, "record %s is too big for a journal entry",
		                   rec->id);
		goto out;
	}
	*len = ENTRY_HEAD + json.len + ENTRY_TAG;
	if (!(e = calloc(1, *len))) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	memcpy(e, key ? MAGIC_SEALED : MAGIC_PLAIN, 4);
	put_be(e + 4, json.len, 4);
	put_be(e + 8, seq, 8);
	if (!key) {
		memcpy(e + ENTRY_HEAD, json.data, json.len);
		rc = plain_tag(e + ENTRY_HEAD + json.len, e, ENTRY_HEAD + json.len);
		goto out;
	}
	if ((rc = enr_util_random(e + 16, STORE_NONCE_SIZE)) < 0)
		goto out;
	ctx = enr_store__cipher(true, key, e + 16, e, ENTRY_HEAD);
	if (!ctx ||
	    EVP_EncryptUpdate(ctx, e + ENTRY_HEAD, &outl, (unsigned char *)json.data,
	                      (int)json.len) != 1 ||
	    EVP_EncryptFinal_ex(ctx, e + ENTRY_HEAD + json.len, &outl) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, ENTRY_TAG, e + ENTRY_HEAD + json.len) !=
	        1)
		rc = enr_error_set(ENR_E_CRYPTO, "encryption failed");
	EVP_CIPHER_CTX_free(ctx);
out:
	enr_store__buf_free(&json);
	if (rc < 0) {
		free(e);
		e = NULL;
	}
	*out = e;
	return rc;
}

static int write_at(int fd, const unsigned char *data, size_t len, long long at, const char *jp)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, data, len, (off_t)at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return journal_error(n < 0 ? errno : ENOSPC, jp);
		data += n;
		len -= (size_t)n;
		at += n;
	}
	return 0;
}

int enr_store__journal_append(struct store_journal *j, struct store_data *d, const char *path,
                              const struct store_key *key, const struct enr_record *rec, bool sync)
{
	unsigned long long seq = (j->last > d->journal_seq ? j->last : d->journal_seq) + 1;
	char *jp = journal_path(path);
	struct enr_record *copy = NULL;
	unsigned char *entry = NULL;
	size_t len = 0;
	struct stat st;
	int fd = -1, rc;

	if (!jp)
		return ENR_E_NOMEM;
	if ((rc = entry_seal(&entry, &len, rec, seq, key)) < 0)
		goto out;
	if ((fd = rc = open_for_write(jp)) < 0)
		goto out;
	rc = write_at(fd, entry, len, j->end, jp);
	/* Only the data: the size of a reserved journal does not change. */
	if (rc == 0 && sync && fdatasync(fd) < 0)
		rc = journal_error(errno, jp);
	j->unsynced = rc == 0 && !sync;
	if (rc < 0)
		goto out;
	if (fstat(fd, &st) == 0)
		note_stat(j, &st);
	j->end += (long long)len;
	j->last = j->applied = seq;
	/* The data of this handle is as the next read would make it. */
	if ((rc = enr_record_dup(&copy, rec)) == 0)
		take_saved(d, copy, false);
	enr_record_free(copy);
out:
	if (entry)
		OPENSSL_clear_free(entry, len);
	if (fd >= 0)
		close(fd);
	free(jp);
	return rc;
}

int enr_store__journal_sync(struct store_journal *j, const char *path)
{
	char *jp;
	int fd, rc = 0;

	if (!j->unsynced)
		return 0;
	if (!(jp = journal_path(path)))
		return ENR_E_NOMEM;
	fd = open(jp, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fdatasync(fd) < 0)
		rc = journal_error(errno, jp);
	if (fd >= 0)
		close(fd);
	free(jp);
	j->unsynced = rc < 0;
	return rc;
}

int enr_store__journal_reserve(struct store_journal *j, const char *path, size_t bytes)
{
	static const unsigned char zeros[64 * 1024];
	char *jp = journal_path(path);
	struct stat st;
	int fd, err = 0;

	if (!jp)
		return ENR_E_NOMEM;
	if ((fd = open_for_write(jp)) < 0) {
		free(jp);
		return fd;
	}
	/* Written, not just allocated: a sync of an entry written there then has
	 * no extent to convert (half the time of posix_fallocate()'s, here). */
	for (size_t done = 0; err == 0 && done < bytes; done += sizeof(zeros)) {
		size_t n = bytes - done < sizeof(zeros) ? bytes - done : sizeof(zeros);
		ssize_t w = pwrite(fd, zeros, n, (off_t)(j->end + (long long)done));
		if (w < 0 && errno == EINTR) {
			done -= sizeof(zeros);
			continue;
		}
		if (w != (ssize_t)n)
			err = w < 0 ? errno : ENOSPC;
	}
	if (err == 0 && fdatasync(fd) < 0)
		err = errno;
	if (err == 0 && fstat(fd, &st) == 0)
		note_stat(j, &st);
	close(fd);
	if (err == ENOSPC || err == EDQUOT)
		err =
		    enr_error_set(ENR_E_NOSPACE,
		                  "no space left beside the credential store %s to keep %zu KiB of "
		                  "new tokens safe; free some space: nothing was refreshed",
		                  path, (bytes + 1023) / 1024);
	else if (err)
		err = enr_error_set_errno(ENR_E_IO, err, "cannot reserve space in %s", jp);
	free(jp);
	return err;
}

void enr_store__journal_folded(struct store_journal *j, const char *path)
{
	static const unsigned char zeros[4096];
	char *jp;
	struct stat st;
	long long at = 0;
	int fd;

	if (!j->exists || j->end == 0)
		goto reset;
	if (!(jp = journal_path(path)))
		goto reset;
	/* Spent tokens need not linger, nor a plain store's once it is encrypted. */
	fd = open(jp, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	for (; fd >= 0 && at < j->end; at += (long long)sizeof(zeros)) {
		size_t n =
		    j->end - at < (long long)sizeof(zeros) ? (size_t)(j->end - at) : sizeof(zeros);
		if (write_at(fd, zeros, n, at, jp) < 0)
			break;
	}
	if (fd >= 0 && fstat(fd, &st) == 0)
		note_stat(j, &st);
	if (fd >= 0)
		close(fd);
	free(jp);
reset:
	j->end = 0;
}
