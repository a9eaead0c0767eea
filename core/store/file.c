/* The store file on disk: header, key derivation, encryption, reading and writing. */

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
#include <json-c/printbuf.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "store/internal.h"
#include "util.h"

/*
 * Header, 80 bytes, all of it authenticated as associated data:
 *    0  8  magic "DRNSTORE"
 *    8  1  format version (1)
 *    9  1  cipher (1: AES-256-GCM)
 *   10  1  key derivation (1: scrypt)
 *   11  1  log2(N)
 *   12  4  r, big endian
 *   16  4  p, big endian
 *   20 16  salt
 *   36 12  nonce, fresh on every write
 *   48 16  key check: bytes 32..47 of the scrypt output (tells a wrong passphrase
 *          from a damaged file)
 *   64 16  SHA-256 of bytes 0..63, truncated (tells a damaged header apart)
 */
#define MAGIC          "DRNSTORE"
#define FORMAT_VERSION 1
#define CIPHER_AES_GCM 1
#define KDF_SCRYPT     1
#define CHUNK          (256 * 1024)
#define MAX_LINE       (64 * 1024 * 1024)
#define KDF_MAX_MEMORY (256ULL * 1024 * 1024)

static void put_be32(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static unsigned get_be32(const unsigned char *p)
{
	return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 | (unsigned)p[2] << 8 | p[3];
}

static int damaged(const char *path, const char *what)
{
	char *bak = enr_util_printf("%s.bak", path);
	struct stat st;
	bool have_bak = bak && stat(bak, &st) == 0 && S_ISREG(st.st_mode);

	free(bak);
	/* Only advice that can be followed: a previous generation that exists. */
	if (!have_bak)
		return enr_error_set(ENR_E_CORRUPT,
		                     "credential store %s is damaged (%s) and was left as it is; "
		                     "there is no previous generation (%s.bak)",
		                     path, what, path);
	return enr_error_set(ENR_E_CORRUPT,
	                     "credential store %s is damaged (%s) and was left as it is; the "
	                     "previous generation is %s.bak: check it with 'derenroll --store "
	                     "%s.bak list' and copy it over %s",
	                     path, what, path, path, path);
}

/* Whether the first `n` bytes read of a file are those of a store. */
static bool looks_like_store(const unsigned char *h, size_t n)
{
	/* A store cut short is a damaged store, not someone else's file. */
	if (memcmp(h, MAGIC, n < 8 ? n : 8) == 0)
		return true;
	/* A plain one names its format on its first line (which may have been edited). */
	return h[0] == '{' && (n < STORE_HEADER_SIZE || memmem(h, n, "\"derenroll-store\"", 17));
}

bool enr_store__kdf_ok(const struct enr_store_kdf *kdf, const char **why)
{
	*why = NULL;
	if (kdf->log2_n < 1 || kdf->log2_n > 20)
		*why = "log2(N) must be from 1 to 20";
	else if (kdf->r < 1 || kdf->r > 32)
		*why = "r must be from 1 to 32";
	else if (kdf->p < 1 || kdf->p > 16)
		*why = "p must be from 1 to 16";
	else if (128ULL * kdf->r * (1ULL << kdf->log2_n) > KDF_MAX_MEMORY)
		*why = "it would need more than 256 MiB";
	return *why == NULL;
}

int enr_store__derive(struct store_key *key, const char *passphrase)
{
	unsigned char out[STORE_KEY_SIZE + STORE_CHECK_SIZE];
	uint64_t n = 1ULL << key->kdf.log2_n;
	uint64_t maxmem =
	    128ULL * key->kdf.r * (n + 2) + 128ULL * key->kdf.r * key->kdf.p + 1024 * 1024;
	int ok;

	key->have = false;
	ok = EVP_PBE_scrypt(passphrase, strlen(passphrase), key->salt, sizeof(key->salt), n,
	                    key->kdf.r, key->kdf.p, maxmem, out, sizeof(out));
	if (ok == 1) {
		memcpy(key->key, out, STORE_KEY_SIZE);
		memcpy(key->check, out + STORE_KEY_SIZE, STORE_CHECK_SIZE);
		key->have = true;
	}
	OPENSSL_cleanse(out, sizeof(out));
	return ok == 1 ? 0 : enr_error_set(ENR_E_CRYPTO, "key derivation (scrypt) failed");
}

static int header_checksum(unsigned char out[16], const unsigned char *header)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned len = 0;

	if (EVP_Digest(header, 64, digest, &len, EVP_sha256(), NULL) != 1)
		return enr_error_set(ENR_E_CRYPTO, "SHA-256 failed");
	memcpy(out, digest, 16);
	return 0;
}

static int header_build(unsigned char *h, const struct store_key *key, const unsigned char *nonce)
{
	memcpy(h, MAGIC, 8);
	h[8] = FORMAT_VERSION;
	h[9] = CIPHER_AES_GCM;
	h[10] = KDF_SCRYPT;
	h[11] = (unsigned char)key->kdf.log2_n;
	put_be32(h + 12, key->kdf.r);
	put_be32(h + 16, key->kdf.p);
	memcpy(h + 20, key->salt, STORE_SALT_SIZE);
	memcpy(h + 36, nonce, STORE_NONCE_SIZE);
	memcpy(h + 48, key->check, STORE_CHECK_SIZE);
	return header_checksum(h + 64, h);
}

/* Validates a header; fills `file_key` with its parameters, salt and check. */
static int header_parse(struct store_key *file_key, const unsigned char *h, const char *path)
{
	unsigned char sum[16];
	char detail[160];
	const char *why;
	int rc;

	if ((rc = header_checksum(sum, h)) < 0)
		return rc;
	if (CRYPTO_memcmp(sum, h + 64, sizeof(sum)) != 0)
		return damaged(path, "its header does not match its checksum");
	if (h[8] != FORMAT_VERSION || h[9] != CIPHER_AES_GCM || h[10] != KDF_SCRYPT)
		return enr_error_set(ENR_E_STORE,
		                     "credential store %s has format %u (cipher %u, kdf %u), which "
		                     "this derenroll does not know: it was written by a newer one",
		                     path, h[8], h[9], h[10]);
	memset(file_key, 0, sizeof(*file_key));
	file_key->kdf.log2_n = h[11];
	file_key->kdf.r = get_be32(h + 12);
	file_key->kdf.p = get_be32(h + 16);
	if (!enr_store__kdf_ok(&file_key->kdf, &why)) {
		snprintf(detail, sizeof(detail),
		         "it asks for absurd key derivation parameters, N=2^%u, r=%u, p=%u: %s",
		         file_key->kdf.log2_n, file_key->kdf.r, file_key->kdf.p, why);
		return damaged(path, detail);
	}
	memcpy(file_key->salt, h + 20, STORE_SALT_SIZE);
	memcpy(file_key->check, h + 48, STORE_CHECK_SIZE);
	return 0;
}

static bool same_key(const struct store_key *a, const struct store_key *b)
{
	return a->kdf.log2_n == b->kdf.log2_n && a->kdf.r == b->kdf.r && a->kdf.p == b->kdf.p &&
	       memcmp(a->salt, b->salt, sizeof(a->salt)) == 0 &&
	       CRYPTO_memcmp(a->check, b->check, sizeof(a->check)) == 0;
}

EVP_CIPHER_CTX *enr_store__cipher(bool encrypt, const struct store_key *key,
                                  const unsigned char *nonce, const unsigned char *aad,
                                  size_t aad_len)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int outl, ok;

	if (!ctx)
		return NULL;
	ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, STORE_NONCE_SIZE, NULL) == 1 &&
	     EVP_CipherInit_ex(ctx, NULL, NULL, key->key, nonce, encrypt) == 1 &&
	     EVP_CipherUpdate(ctx, NULL, &outl, aad, (int)aad_len) == 1;
	if (!ok) {
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static EVP_CIPHER_CTX *cipher_new(bool encrypt, const struct store_key *key,
                                  const unsigned char *nonce, const unsigned char *header)
{
	return enr_store__cipher(encrypt, key, nonce, header, STORE_HEADER_SIZE);
}

/* ---- reading ---- */

struct reader {
	int fd;
	const char *path;
	EVP_CIPHER_CTX *cipher;  /* NULL for a plain file */
	unsigned long long left; /* ciphertext not yet read */
	char *buf;               /* plaintext; wiped when freed */
	size_t cap, start, end;
	bool eof;
	bool finished; /* the tag was read */
};

ssize_t enr_store__read_full(int fd, void *buf, size_t n, long long at)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = at < 0
		                ? read(fd, (char *)buf + done, n - done)
		                : pread(fd, (char *)buf + done, n - done, (off_t)at + (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static int reader_fill(struct reader *r)
{
	size_t want;
	ssize_t n;
	int outl;

	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
	}
	if (r->cap - r->end < CHUNK + 1) {
		if (r->end + CHUNK + 1 > MAX_LINE + 2 * CHUNK)
			return damaged(r->path, "a line is too long");
		/* All of the old block: compacting left plaintext past the end. */
		if (!enr_store__grow(&r->buf, &r->cap, r->end + CHUNK + 1, r->end, r->cap,
		                     2 * CHUNK))
			return enr_error_set(ENR_E_NOMEM, NULL);
	}
	want = r->cap - r->end - 1;
	if (want > CHUNK)
		want = CHUNK;
	if (r->cipher && want > r->left)
		want = (size_t)r->left;
	n = enr_store__read_full(r->fd, r->buf + r->end, want, -1);
	if (n < 0)
		return enr_error_set_errno(ENR_E_IO, errno, "cannot read %s", r->path);
	if (r->cipher) {
		if ((size_t)n < want)
			return damaged(r->path, "it is truncated");
		/* GCM decrypts in place. */
		if (n && EVP_DecryptUpdate(r->cipher, (unsigned char *)r->buf + r->end, &outl,
		                           (unsigned char *)r->buf + r->end, (int)n) != 1)
			return enr_error_set(ENR_E_CRYPTO, "decryption failed");
		r->left -= (unsigned long long)n;
		r->eof = r->left == 0;
	} else {
		r->eof = n == 0;
	}
	r->end += (size_t)n;
	return 0;
}

/* The next line (NUL-terminated in place): 1, or 0 at the end. */
static int reader_line(struct reader *r, char **line, size_t *len)
{
	char *nl;
	int rc;

	for (;;) {
		nl = r->end > r->start ? memchr(r->buf + r->start, '\n', r->end - r->start) : NULL;
		if (nl) {
			*line = r->buf + r->start;
			*len = (size_t)(nl - *line);
			*nl = '\0';
			r->start += *len + 1;
			return 1;
		}
		if (r->eof) {
			if (r->start == r->end)
				return 0;
			/* A last line without a newline (an edited plain file). */
			*line = r->buf + r->start;
			*len = r->end - r->start;
			r->buf[r->end] = '\0';
			r->start = r->end;
			return 1;
		}
		if ((rc = reader_fill(r)) < 0)
			return rc;
	}
}

/* Checks the tag once every byte of ciphertext has been read. */
static int reader_finish(struct reader *r)
{
	unsigned char tag[STORE_TAG_SIZE], extra, none[STORE_TAG_SIZE];
	int outl;

	if (!r->cipher)
		return 0;
	r->finished = true;
	if (enr_store__read_full(r->fd, tag, sizeof(tag), -1) != (ssize_t)sizeof(tag) ||
	    enr_store__read_full(r->fd, &extra, 1, -1) != 0)
		return damaged(r->path, "its length changed while it was read");
	if (EVP_CIPHER_CTX_ctrl(r->cipher, EVP_CTRL_GCM_SET_TAG, sizeof(tag), tag) != 1 ||
	    EVP_DecryptFinal_ex(r->cipher, none, &outl) != 1)
		return damaged(r->path, "authentication failed");
	return 0;
}

/*
 * After a damaged-looking plaintext: when the tag does not verify either, say
 * that (the usual case: flipped or truncated ciphertext) rather than what the
 * garbled text looked like.
 */
static void reader_explain(struct reader *r)
{
	char first[512];

	if (!r->cipher || r->finished)
		return;
	snprintf(first, sizeof(first), "%s", enr_error_last());
	while (!r->eof) {
		r->start = r->end = 0;
		if (reader_fill(r) < 0)
			return;
	}
	if (reader_finish(r) == 0)
		enr_error_set(ENR_E_CORRUPT, "%s", first);
}

static void reader_done(struct reader *r)
{
	if (r->buf) {
		OPENSSL_cleanse(r->buf, r->cap);
		free(r->buf);
	}
	EVP_CIPHER_CTX_free(r->cipher);
}

/* Parses one line; `secret` lines have every copy json-c made of them wiped. */
static int parse_line(struct json_object **out, struct json_tokener *tok, const char *path,
                      char *line, size_t len, bool secret)
{
	struct json_object *obj;

	*out = NULL;
	json_tokener_reset(tok);
	obj = json_tokener_parse_ex(tok, line, (int)len);
	/*
	 * json-c keeps the last string it scanned in the tokener's scratch buffer;
	 * there is no API to wipe it, so reach for it (the struct is published).
	 */
	if (secret && tok->pb && tok->pb->buf)
		OPENSSL_cleanse(tok->pb->buf, (size_t)tok->pb->size);
	if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len || !json_object_is_type(obj, json_type_object)) {
		if (obj && secret)
			enr_store__json_wipe(obj);
		json_object_put(obj);
		return damaged(path, "malformed JSON inside");
	}
	*out = obj;
	return 0;
}

static void put_secret_json(struct json_object *obj)
{
	if (!obj)
		return;
	enr_store__json_wipe(obj);
	json_object_put(obj);
}

/*
 * Migrations of a record from schema N to N+1, applied in order to every
 * record of an older file before it is read (`secrets` is NULL when only the
 * public part is read). Schema 1 is the first: none yet. A migration changes
 * the JSON objects in place and returns 0 or a negative enr_error.
 */
static int (*const migrations[])(struct json_object *record, struct json_object *secrets) = {
    NULL, /* 0 -> 1: there was no schema 0 */
};

static int migrate(struct json_object *record, struct json_object *secrets, int schema)
{
	int rc;

	for (int s = schema; s < STORE_SCHEMA; s++)
		if ((size_t)s < ENR_ARRAY_SIZE(migrations) && migrations[s] &&
		    (rc = migrations[s](record, secrets)) < 0)
			return rc;
	return 0;
}

static int read_header_line(long long *n_records, struct store_data *d, struct json_object *obj,
                            const char *path)
{
	struct json_object *format, *version, *count, *journal;
	int *schema = &d->schema;

	if (!json_object_object_get_ex(obj, "format", &format) ||
	    strcmp(json_object_get_string(format), "derenroll-store") != 0 ||
	    !json_object_object_get_ex(obj, "schema", &version) ||
	    !json_object_is_type(version, json_type_int) ||
	    !json_object_object_get_ex(obj, "records", &count) ||
	    !json_object_is_type(count, json_type_int) || json_object_get_int64(count) < 0)
		return damaged(path, "its first line is not a store header");
	*schema = json_object_get_int(version);
	*n_records = json_object_get_int64(count);
	/* The last entry of FILE.journal folded into this generation (older files: none). */
	if (json_object_object_get_ex(obj, "journal", &journal)) {
		if (!json_object_is_type(journal, json_type_int) ||
		    json_object_get_int64(journal) < 0)
			return damaged(path, "its journal position is invalid");
		d->journal_seq = (unsigned long long)json_object_get_int64(journal);
	}
	if (*schema < 1)
		return damaged(path, "its schema version is invalid");
	if (*schema > STORE_SCHEMA)
		return enr_error_set(
		    ENR_E_STORE,
		    "credential store %s has schema %d; this derenroll knows up to "
		    "%d: it was written by a newer one",
		    path, *schema, STORE_SCHEMA);
	return 0;
}

static int read_secrets_line(struct store_data *d, struct json_object *obj, const char *path)
{
	struct json_object *secrets;
	struct store_secret *s;
	size_t n;

	if (!json_object_object_get_ex(obj, "secrets", &secrets) ||
	    !json_object_is_type(secrets, json_type_object))
		return damaged(path, "its app secrets line is malformed");
	n = (size_t)json_object_object_length(secrets);
	d->secrets = calloc(n ? n : 1, sizeof(*d->secrets));
	if (!d->secrets)
		return enr_error_set(ENR_E_NOMEM, NULL);
	json_object_object_foreach(secrets, name, value)
	{
		if (!json_object_is_type(value, json_type_string))
			return damaged(path, "an app secret is not a string");
		s = &d->secrets[d->n_secrets];
		s->name = enr_util_strdup(name);
		s->value = enr_util_strdup(json_object_get_string(value));
		if (!s->name || !s->value) {
			free(s->name);
			enr_util_free_secret(s->value);
			return ENR_E_NOMEM;
		}
		/* Written sorted; keep them sorted whatever the file says. */
		for (size_t i = d->n_secrets; i > 0 && strcmp(d->secrets[i - 1].name, name) > 0;
		     i--) {
			struct store_secret tmp = d->secrets[i - 1];
			d->secrets[i - 1] = d->secrets[i];
			d->secrets[i] = tmp;
		}
		d->n_secrets++;
	}
	return 0;
}

/* Lines kept for parsing once the whole file is authenticated. */
struct lines {
	char *buf; /* the lines, each NUL-terminated; wiped when freed */
	size_t len, cap;
	size_t *start;
	size_t n, cap_n;
	size_t seen; /* lines read, the skipped ones included */
};

static int lines_add(struct lines *l, const char *line, size_t len)
{
	if (l->n == l->cap_n) {
		size_t cap = l->cap_n ? l->cap_n * 2 : 1024;
		size_t *grown = realloc(l->start, cap * sizeof(*grown));
		if (!grown)
			return enr_error_set(ENR_E_NOMEM, NULL);
		l->start = grown;
		l->cap_n = cap;
	}
	if (l->len + len + 1 > l->cap &&
	    !enr_store__grow(&l->buf, &l->cap, l->len + len + 1, l->len, l->len, 1024 * 1024))
		return enr_error_set(ENR_E_NOMEM, NULL);
	l->start[l->n++] = l->len;
	memcpy(l->buf + l->len, line, len);
	l->buf[l->len + len] = '\0';
	l->len += len + 1;
	return 0;
}

/* Line `i` (NUL-terminated) and its length. */
static char *line_at(const struct lines *l, size_t i, size_t *len)
{
	size_t end = i + 1 < l->n ? l->start[i + 1] : l->len;

	*len = end - l->start[i] - 1;
	return l->buf + l->start[i];
}

static void lines_free(struct lines *l)
{
	if (l->buf) {
		OPENSSL_cleanse(l->buf, l->len);
		free(l->buf);
	}
	free(l->start);
}

/*
 * Reads every line: the header, the app secrets, then a public and a secret
 * line per record; with `metadata_only` the secret ones are skipped.
 */
static int collect_lines(struct lines *l, struct reader *r, bool metadata_only)
{
	char *line;
	size_t len;
	int rc;

	while ((rc = reader_line(r, &line, &len)) > 0) {
		size_t k = l->seen++;
		if (metadata_only && (k == 1 || (k >= 2 && (k - 2) % 2 == 1)))
			continue;
		if ((rc = lines_add(l, line, len)) < 0)
			return rc;
	}
	return rc;
}

struct parse_job {
	const struct lines *lines;
	size_t first, count; /* records, set by enr_store__halves() */
	size_t base, stride; /* where the first record's lines are, lines per record */
	bool secrets;
	int schema;
	const char *path;
	struct enr_record **out;
	int rc;
	char message[512];
};

static void parse_records(void *arg, size_t half)
{
	struct parse_job *job = (struct parse_job *)arg + half;
	struct json_tokener *tok = json_tokener_new();
	struct json_object *obj = NULL, *secrets = NULL;
	struct enr_record *rec = NULL;
	size_t at, len;
	char *line;

	job->rc = tok ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = job->first; job->rc == 0 && i < job->first + job->count; i++) {
		at = job->base + i * job->stride;
		line = line_at(job->lines, at, &len);
		job->rc = parse_line(&obj, tok, job->path, line, len, false);
		if (job->rc == 0 && job->secrets) {
			line = line_at(job->lines, at + 1, &len);
			job->rc = parse_line(&secrets, tok, job->path, line, len, true);
		}
		if (job->rc == 0)
			job->rc = migrate(obj, secrets, job->schema);
		if (job->rc == 0)
			job->rc = enr_record_new(&rec);
		if (job->rc == 0)
			job->rc = enr_store__record_read(rec, obj);
		if (job->rc == 0 && secrets)
			job->rc = enr_store__record_read_secrets(rec, secrets);
		if (job->rc == ENR_E_PARSE)
			job->rc = damaged(job->path, enr_error_last());
		if (job->rc == 0)
			job->out[i] = rec;
		else
			enr_record_free(rec);
		rec = NULL;
		json_object_put(obj);
		put_secret_json(secrets);
		obj = secrets = NULL;
	}
	if (job->rc < 0)
		snprintf(job->message, sizeof(job->message), "%s", enr_error_last());
	if (tok)
		json_tokener_free(tok);
}

/*
 * Parses the records, on two threads for a big store: json-c takes most of
 * the time of listing 10,000 records, and the machines have a core to spare.
 */
static int parse_all(struct store_data *d, const struct lines *l, size_t n, bool secrets,
                     const char *path)
{
	struct parse_job jobs[2];
	int rc = 0;

	d->records = calloc(n ? n : 1, sizeof(*d->records));
	if (!d->records)
		return enr_error_set(ENR_E_NOMEM, NULL);
	d->cap_records = n ? n : 1;
	for (int j = 0; j < 2; j++) {
		jobs[j] = (struct parse_job){.lines = l,
		                             .base = secrets ? 2 : 1,
		                             .stride = secrets ? 2 : 1,
		                             .secrets = secrets,
		                             .schema = d->schema,
		                             .path = path,
		                             .out = d->records};
	}
	enr_store__halves(n, &jobs[0].first, &jobs[0].count, &jobs[1].first, &jobs[1].count);
	enr_store__run_halves(parse_records, jobs, jobs[1].count > 0);
	rc = enr_store__halves_done(d, n, (int[]){jobs[0].rc, jobs[1].rc},
	                            (const char *const[]){jobs[0].message, jobs[1].message});
	return rc;
}

/* Parses the lines of an authenticated file into `d`. */
static int read_lines(struct store_data *d, const struct lines *l, bool metadata_only,
                      const char *path)
{
	struct json_tokener *tok = NULL;
	struct json_object *obj = NULL;
	long long n_records = 0;
	size_t len;
	char *line;
	int rc;

	if (l->n == 0)
		return damaged(path, "it is empty");
	if (!(tok = json_tokener_new()))
		return enr_error_set(ENR_E_NOMEM, NULL);
	line = line_at(l, 0, &len);
	rc = parse_line(&obj, tok, path, line, len, false);
	if (rc == 0)
		rc = read_header_line(&n_records, d, obj, path);
	json_object_put(obj);
	obj = NULL;
	/* Two lines per record after the header and the app secrets. */
	if (rc == 0 && l->seen < 2 + 2ULL * (unsigned long long)n_records)
		rc = damaged(path, "it is truncated");
	else if (rc == 0 && l->seen > 2 + 2ULL * (unsigned long long)n_records)
		rc = damaged(path, "it holds more lines than its header says");
	if (rc == 0 && !metadata_only) {
		line = line_at(l, 1, &len);
		rc = parse_line(&obj, tok, path, line, len, true);
		if (rc == 0)
			rc = read_secrets_line(d, obj, path);
		put_secret_json(obj);
	}
	json_tokener_free(tok);
	if (rc == 0)
		rc = parse_all(d, l, (size_t)n_records, !metadata_only, path);
	return rc;
}

static int open_encrypted(struct reader *r, struct store_key *key, const unsigned char *header,
                          unsigned long long size, store_key_fn get_key, void *ctx)
{
	struct store_key file_key;
	int rc;

	if (size < STORE_HEADER_SIZE + STORE_TAG_SIZE)
		return damaged(r->path, "it is truncated");
	if ((rc = header_parse(&file_key, header, r->path)) < 0)
		return rc;
	if (!key->have || !same_key(key, &file_key)) {
		OPENSSL_cleanse(key, sizeof(*key));
		*key = file_key;
		key->have = false;
		if ((rc = get_key(key, ctx)) < 0)
			return rc;
		if (!key->have || CRYPTO_memcmp(key->check, file_key.check, STORE_CHECK_SIZE)) {
			OPENSSL_cleanse(key, sizeof(*key));
			return enr_error_set(
			    ENR_E_PASSPHRASE,
			    "wrong passphrase for the credential store %s (the file "
			    "was not changed)",
			    r->path);
		}
	}
	r->cipher = cipher_new(false, key, header + 36, header);
	if (!r->cipher)
		return enr_error_set(ENR_E_CRYPTO, "cannot set up AES-256-GCM");
	r->left = size - STORE_HEADER_SIZE - STORE_TAG_SIZE;
	return 0;
}

int enr_store__file_read(struct store_data *out, struct store_file_info *info, const char *path,
                         bool metadata_only, struct store_key *key, store_key_fn get_key, void *ctx)
{
	struct reader r = {.fd = -1, .path = path};
	struct store_data d = {.schema = STORE_SCHEMA};
	struct lines lines = {0};
	unsigned char header[STORE_HEADER_SIZE];
	struct stat st;
	ssize_t n;
	int rc;

	memset(out, 0, sizeof(*out));
	memset(info, 0, sizeof(*info));
	r.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r.fd < 0) {
		if (errno == ENOENT) {
			out->schema = STORE_SCHEMA;
			return 0;
		}
		return enr_error_set_errno(ENR_E_IO, errno, "cannot open the credential store %s",
		                           path);
	}
	if (fstat(r.fd, &st) < 0) {
		rc = enr_error_set_errno(ENR_E_IO, errno, "cannot stat %s", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = enr_error_set(ENR_E_STORE, "credential store %s is not a regular file", path);
		goto out;
	}
	n = enr_store__read_full(r.fd, header, sizeof(header), 0);
	if (n < 0) {
		rc = enr_error_set_errno(ENR_E_IO, errno, "cannot read %s", path);
		goto out;
	}
	/* Said before any advice about its mode: advice to chmod someone else's file is not safe.
	 */
	if (n > 0 && !looks_like_store(header, (size_t)n)) {
		rc = enr_error_set(ENR_E_STORE,
		                   "%s is not a derenroll credential store: check [store] path or "
		                   "--store",
		                   path);
		goto out;
	}
	if (st.st_mode & 077) {
		rc = enr_error_set(ENR_E_PERM,
		                   "credential store %s can be accessed by others (mode %04o): run "
		                   "'chmod 600 %s'",
		                   path, (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	info->exists = true;
	info->size = (size_t)st.st_size;
	if (n >= 8 && memcmp(header, MAGIC, 8) == 0) {
		/* The ciphertext follows the header. */
		if (lseek(r.fd, (off_t)n, SEEK_SET) < 0) {
			rc = enr_error_set_errno(ENR_E_IO, errno, "cannot read %s", path);
			goto out;
		}
		info->encrypted = true;
		if ((size_t)n == sizeof(header))
			memcpy(info->header, header, sizeof(header));
		rc = open_encrypted(&r, key, header, (unsigned long long)st.st_size, get_key, ctx);
		if (rc < 0)
			goto out;
	} else if (n > 0 && header[0] == '{') {
		if (lseek(r.fd, 0, SEEK_SET) < 0) {
			rc = enr_error_set_errno(ENR_E_IO, errno, "cannot read %s", path);
			goto out;
		}
	} else {
		rc = damaged(path, n == 0 ? "it is empty" : "it is not a derenroll store");
		goto out;
	}
	/* Nothing is parsed before the whole file is read and authenticated. */
	if ((rc = collect_lines(&lines, &r, metadata_only)) < 0 || (rc = reader_finish(&r)) < 0 ||
	    (rc = read_lines(&d, &lines, metadata_only, path)) < 0)
		goto out;
	*out = d;
	memset(&d, 0, sizeof(d));
out:
	if (rc == ENR_E_CORRUPT)
		reader_explain(&r);
	lines_free(&lines);
	reader_done(&r);
	close(r.fd);
	enr_store__data_free(&d);
	return rc;
}

bool enr_store__file_unchanged(const struct store_file_info *info, const char *path)
{
	unsigned char header[STORE_HEADER_SIZE];
	struct stat st;
	bool same;
	int fd;

	if (!info->exists)
		return stat(path, &st) < 0 && errno == ENOENT;
	/* A plain file has no nonce to tell generations apart: always read it again. */
	if (!info->encrypted)
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	same = fstat(fd, &st) == 0 && (size_t)st.st_size == info->size &&
	       enr_store__read_full(fd, header, sizeof(header), -1) == (ssize_t)sizeof(header) &&
	       memcmp(header, info->header, sizeof(header)) == 0;
	close(fd);
	return same;
}

/* ---- writing ---- */

static void serialize(struct store_buf *b, const struct store_data *d)
{
	char line[128];

	enr_store__buf_add(b, line,
	                   (size_t)snprintf(line, sizeof(line),
	                                    "{\"format\":\"derenroll-store\",\"schema\":%d,"
	                                    "\"records\":%zu,\"journal\":%llu}\n{\"secrets\":{",
	                                    STORE_SCHEMA, d->n_records, d->journal_seq));
	for (size_t i = 0; i < d->n_secrets; i++) {
		if (i)
			enr_store__buf_add(b, ",", 1);
		enr_store__buf_json(b, d->secrets[i].name);
		enr_store__buf_add(b, ":", 1);
		enr_store__buf_json(b, d->secrets[i].value);
	}
	enr_store__buf_add(b, "}}\n", 3);
	for (size_t i = 0; i < d->n_records; i++) {
		enr_store__record_write(b, d->records[i], PART_PUBLIC);
		enr_store__buf_add(b, "\n", 1);
		enr_store__record_write(b, d->records[i], PART_SECRETS);
		enr_store__buf_add(b, "\n", 1);
	}
}

int enr_store__encrypt(struct store_buf *b, const struct store_key *key)
{
	unsigned char nonce[STORE_NONCE_SIZE];
	size_t len = b->len - STORE_HEADER_SIZE;
	unsigned char *text;
	EVP_CIPHER_CTX *ctx = NULL;
	int outl, rc;

	if (len > INT_MAX)
		return enr_error_set(ENR_E_STORE, "the credential store would exceed 2 GiB");
	if ((rc = enr_util_random(nonce, sizeof(nonce))) < 0 ||
	    (rc = header_build((unsigned char *)b->data, key, nonce)) < 0)
		return rc;
	if (!enr_store__buf_reserve(b, STORE_TAG_SIZE))
		return enr_error_set(ENR_E_NOMEM, NULL);
	text = (unsigned char *)b->data + STORE_HEADER_SIZE;
	ctx = cipher_new(true, key, nonce, (unsigned char *)b->data);
	if (!ctx || EVP_EncryptUpdate(ctx, text, &outl, text, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(ctx, text + len, &outl) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, STORE_TAG_SIZE, text + len) != 1) {
		EVP_CIPHER_CTX_free(ctx);
		return enr_error_set(ENR_E_CRYPTO, "encryption failed");
	}
	EVP_CIPHER_CTX_free(ctx);
	b->len += STORE_TAG_SIZE;
	return 0;
}

int enr_store__write_error(int err, const char *doing, const char *file)
{
	if (err == ENOSPC || err == EDQUOT)
		return enr_error_set(ENR_E_NOSPACE,
		                     "no space left to %s %s; the credential store was not changed",
		                     doing, file);
	return enr_error_set_errno(ENR_E_IO, err, "cannot %s %s", doing, file);
}

static int write_error(int err, const char *path)
{
	return enr_store__write_error(err, "write the credential store", path);
}

static int write_all(int fd, const char *data, size_t len, const char *path)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return write_error(errno, path);
		if (n == 0)
			return write_error(ENOSPC, path);
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Creates `path` (0600) holding `len` bytes, on disk before it returns. */
static int write_new_file(const char *path, const char *data, size_t len, const char *store)
{
	int fd, rc;

	if (unlink(path) < 0 && errno != ENOENT)
		return enr_error_set_errno(ENR_E_IO, errno, "cannot remove %s", path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return write_error(errno, store);
	rc = fchmod(fd, 0600) < 0 ? write_error(errno, store) : 0;
	if (rc == 0)
		rc = write_all(fd, data, len, store);
	if (rc == 0 && fsync(fd) < 0)
		rc = write_error(errno, store);
	if (close(fd) < 0 && rc == 0)
		rc = write_error(errno, store);
	if (rc < 0)
		unlink(path);
	return rc;
}

/* Makes path.bak the current generation, without a moment where there is none. */
static int keep_backup(const char *path)
{
	char *bak = enr_util_printf("%s.bak", path), *tmp = enr_util_printf("%s.bak.tmp", path);
	char *data = NULL;
	size_t len = 0;
	int rc = 0;

	if (!bak || !tmp) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	unlink(tmp);
	if (link(path, tmp) < 0) {
		if (errno == ENOENT)
			goto out; /* nothing to keep yet */
		/* A file system without hard links: copy it. */
		rc = enr_util_read_file(&data, &len, path, SIZE_MAX / 2);
		if (rc == 0)
			rc = write_new_file(tmp, data, len, path);
		if (rc < 0)
			goto out;
	}
	if (rename(tmp, bak) < 0) {
		rc = write_error(errno, path);
		unlink(tmp);
	}
out:
	if (data)
		OPENSSL_clear_free(data, len);
	free(bak);
	free(tmp);
	return rc;
}

static void sync_dir(const char *path)
{
	char *dir = enr_util_strdup(path), *slash;
	int fd;

	if (!dir)
		return;
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(dir);
}

int enr_store__file_write(struct store_file_info *info, const char *path,
                          const struct store_data *d, const struct store_key *key)
{
	struct store_buf b = {0};
	char *tmp = NULL;
	int rc;

	/* About the size of the last generation, so that the buffer grows once at most. */
	if (!enr_store__buf_reserve(&b, info->size + info->size / 8 + 4096)) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	if (key)
		b.len = STORE_HEADER_SIZE;
	serialize(&b, d);
	if (b.failed) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	if (key && (rc = enr_store__encrypt(&b, key)) < 0)
		goto out;
	tmp = enr_util_printf("%s.tmp", path);
	if (!tmp) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	if ((rc = enr_util_mkdir_parents(path, 0700)) < 0 ||
	    (rc = write_new_file(tmp, b.data, b.len, path)) < 0 || (rc = keep_backup(path)) < 0)
		goto out;
	if (rename(tmp, path) < 0) {
		rc = write_error(errno, path);
		goto out;
	}
	sync_dir(path);
	info->exists = true;
	info->encrypted = key != NULL;
	info->size = b.len;
	if (key)
		memcpy(info->header, b.data, STORE_HEADER_SIZE);
out:
	if (rc < 0 && tmp)
		unlink(tmp);
	free(tmp);
	enr_store__buf_free(&b);
	return rc;
}

void enr_store__data_free(struct store_data *d)
{
	for (size_t i = 0; i < d->n_records; i++)
		enr_record_free(d->records[i]);
	free(d->records);
	for (size_t i = 0; i < d->n_secrets; i++) {
		free(d->secrets[i].name);
		enr_util_free_secret(d->secrets[i].value);
	}
	free(d->secrets);
	memset(d, 0, sizeof(*d));
}

int enr_store__data_append(struct store_data *d, struct enr_record *rec)
{
	if (d->n_records == d->cap_records) {
		size_t cap = d->cap_records ? d->cap_records * 2 : 64;
		struct enr_record **grown = realloc(d->records, cap * sizeof(*grown));
		if (!grown) {
			enr_record_free(rec);
			return enr_error_set(ENR_E_NOMEM, NULL);
		}
		d->records = grown;
		d->cap_records = cap;
	}
	d->records[d->n_records++] = rec;
	enr_store__data_changed(d);
	return 0;
}
