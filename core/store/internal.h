#ifndef DERENROLL_STORE_INTERNAL_H
#define DERENROLL_STORE_INTERNAL_H

/* Shared by the store's modules in core/store/ (and its tests); not public. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "derenroll/store.h"

struct json_object;

#define STORE_SCHEMA      1 /* layout of the JSON records */
#define STORE_HEADER_SIZE 80
#define STORE_TAG_SIZE    16
#define STORE_SALT_SIZE   16
#define STORE_NONCE_SIZE  12
#define STORE_KEY_SIZE    32
#define STORE_CHECK_SIZE  16

/* A growing text buffer that wipes whatever it held when it grows or is freed. */
struct store_buf {
	char *data;
	size_t len;
	size_t cap;
	bool failed; /* out of memory: the content is incomplete */
};

/*
 * Moves `*buf` into a new block of at least `need` bytes (doubling from *cap,
 * or from `initial`), keeping its first `keep` bytes and wiping the first
 * `wipe` bytes of the old block. False when out of memory (buffer unchanged).
 */
bool enr_store__grow(char **buf, size_t *cap, size_t need, size_t keep, size_t wipe,
                     size_t initial);

bool enr_store__buf_reserve(struct store_buf *b, size_t extra);
void enr_store__buf_add(struct store_buf *b, const char *s, size_t n);
void enr_store__buf_str(struct store_buf *b, const char *s);
/* `s` as a JSON string, quoted and escaped. */
void enr_store__buf_json(struct store_buf *b, const char *s);
void enr_store__buf_free(struct store_buf *b);

enum record_part {
	PART_PUBLIC,  /* everything but the secret credential fields */
	PART_SECRETS, /* {"id":..,"credentials":{secret fields}} */
	PART_FULL,    /* both in one object */
};

/* Appends the record as one JSON object (no newline). */
void enr_store__record_write(struct store_buf *b, const struct enr_record *rec,
                             enum record_part part);

/* Fills an empty record from a PUBLIC or FULL object; ENR_E_PARSE naming the field. */
int enr_store__record_read(struct enr_record *rec, struct json_object *obj);

/* Adds the secret fields of a SECRETS object to `rec` (whose id it must name). */
int enr_store__record_read_secrets(struct enr_record *rec, struct json_object *obj);

/* Checks a record before it is written; ENR_E_USAGE saying what is wrong. */
int enr_store__record_check(const struct enr_record *rec);

/* Overwrites every string inside a json-c tree (before json_object_put()). */
void enr_store__json_wipe(struct json_object *obj);

struct store_secret {
	char *name;
	char *value;
};

/* The content of a store file. */
struct store_data {
	struct enr_record **records;
	size_t n_records;
	size_t cap_records;
	struct store_secret *secrets; /* sorted by name */
	size_t n_secrets;
	int schema;                     /* as read; STORE_SCHEMA once written */
	unsigned long long journal_seq; /* the last journal entry folded in (header "journal") */
	unsigned long long version; /* enr_store__data_changed(): which ids and sites sit where */
};

/* Parsing a big store on two threads (json-c takes most of the time of
 * reading it, and the machines have a core to spare): the two halves of
 * `n` records, the second empty below 2,000. */
void enr_store__halves(size_t n, size_t *first0, size_t *count0, size_t *first1, size_t *count1);
/* Runs fn(jobs, 0) here and fn(jobs, 1) on a thread of its own (here too
 * when `both` is false or no thread can be made). */
void enr_store__run_halves(void (*fn)(void *jobs, size_t half), void *jobs, bool both);
/* After both halves of reading `n` records into d->records: the first
 * half's error (each record read freed), else 0 with d->n_records = n. */
int enr_store__halves_done(struct store_data *d, size_t n, const int rc[2],
                           const char *const message[2]);

/* Marks `d` as changed in which ids or sites sit at which position (a record
 * appended, dropped, or replaced by one with other sites; data read afresh):
 * the lookup index is built again. Editing a record's tokens in place is not
 * such a change. */
void enr_store__data_changed(struct store_data *d);

/* The lookup index (index.c): a cache of one store_data, checked on every hit. */
struct store_slot {
	uint64_t hash;
	size_t pos; /* position + 1; 0: empty */
};
struct store_index {
	struct store_slot *ids, *sites;
	size_t cap, entries;
	struct enr_record *const *records; /* the data it was built for */
	size_t n;
	unsigned long long version;
	bool valid;
};
void enr_store__index_free(struct store_index *ix);
/* Builds it for `d` unless it serves `d` already; -1 without memory (lookups then walk). */
int enr_store__index_build(struct store_index *ix, const struct store_data *d);
/* The position of record `id` in `d`, or -1. */
ssize_t enr_store__index_id(struct store_index *ix, const struct store_data *d, const char *id);
/* The positions (at most `max`, in order) of the records of `vendor` holding `site`. */
size_t enr_store__index_sites(struct store_index *ix, const struct store_data *d,
                              const char *vendor, const char *site, size_t *out, size_t max);
/* `after` is `before` with the record at `pos` put (replaced or appended): the
 * index follows it, else it is built again when next asked. */
void enr_store__index_put(struct store_index *ix, const struct store_data *before,
                          const struct store_data *after, size_t pos);

void enr_store__data_free(struct store_data *d);
/* Appends `rec`, taking ownership (freed on failure too). */
int enr_store__data_append(struct store_data *d, struct enr_record *rec);

struct store_key {
	bool have;
	struct enr_store_kdf kdf;
	unsigned char salt[STORE_SALT_SIZE];
	unsigned char key[STORE_KEY_SIZE];
	unsigned char check[STORE_CHECK_SIZE];
};

/* Derives `key` from a passphrase with its kdf and salt set; ENR_E_CRYPTO. */
int enr_store__derive(struct store_key *key, const char *passphrase);

/* Whether scrypt parameters are sane (true) or absurd; `why` says which bound failed. */
bool enr_store__kdf_ok(const struct enr_store_kdf *kdf, const char **why);

/* What is known of the file read or written last: to tell whether another process changed it. */
struct store_file_info {
	bool exists;
	bool encrypted;
	unsigned char header[STORE_HEADER_SIZE];
	size_t size;
};

/*
 * Asked by the reader for the key of an encrypted file whose parameters and
 * salt are in `key` (have = false): derive it, or fail.
 */
typedef int (*store_key_fn)(struct store_key *key, void *ctx);

/*
 * Reads the store file into `out` (empty when it does not exist). `key` is
 * used when it matches the file's header, else `get_key` provides one, which
 * is kept in `key`. With `metadata_only` the credentials and app secrets are
 * skipped.
 */
int enr_store__file_read(struct store_data *out, struct store_file_info *info, const char *path,
                         bool metadata_only, struct store_key *key, store_key_fn get_key,
                         void *ctx);

/*
 * Encrypts `b` in place: its first STORE_HEADER_SIZE bytes become the header
 * (fresh nonce), the rest is the plaintext; the tag is appended. ENR_E_CRYPTO.
 */
int enr_store__encrypt(struct store_buf *b, const struct store_key *key);

/* Whether the file at `path` is still the one described by `info` (cheap). */
bool enr_store__file_unchanged(const struct store_file_info *info, const char *path);

/*
 * Writes `d` as the new generation of `path` (encrypted with `key`, or plain
 * when it is NULL), keeping the old one as path.bak. Call with the store lock
 * held. ENR_E_NOSPACE or ENR_E_IO with the old file intact.
 */
int enr_store__file_write(struct store_file_info *info, const char *path,
                          const struct store_data *d, const struct store_key *key);

/* Reads up to `n` bytes (fewer only at the end of the file) at `at`, or from
 * the file position when `at` < 0; -1 with errno on failure. */
ssize_t enr_store__read_full(int fd, void *buf, size_t n, long long at);

/* ENR_E_NOSPACE ("no space left to DOING FILE; ...") for ENOSPC and EDQUOT, else ENR_E_IO. */
int enr_store__write_error(int err, const char *doing, const char *file);

/* AES-256-GCM with `aad` as associated data (the store's key, a 12-byte nonce). */
struct evp_cipher_ctx_st *enr_store__cipher(bool encrypt, const struct store_key *key,
                                            const unsigned char *nonce, const unsigned char *aad,
                                            size_t aad_len);

/*
 * The journal (FILE.journal, core/store/journal.c): the credentials of a record
 * saved the moment new tokens arrive, a few hundred bytes appended and synced
 * instead of a rewrite of the whole store. Every read of the store applies the
 * entries newer than its header's "journal" position; the next write folds
 * them in (and moves that position), after which they are wiped.
 */
struct store_journal {
	bool exists;
	unsigned long long dev, ino;
	long long size, mtime_ns;
	unsigned long long last;    /* the highest entry seen, 0: none */
	unsigned long long applied; /* the highest entry applied to the data */
	long long end;              /* where the next entry goes */
	bool unsynced;              /* an entry was written since the last sync */
};

/*
 * Reads FILE.journal and applies to `d` its entries newer than d->journal_seq
 * and j->applied (everything after a fresh read of the store file: j zeroed).
 * With `more`, only what follows j->end when the file is the one read before.
 * `key` is the store's (NULL for a plain store). A torn or foreign entry ends
 * the journal. ENR_E_IO, ENR_E_NOMEM.
 */
int enr_store__journal_read(struct store_journal *j, struct store_data *d, const char *path,
                            const struct store_key *key, bool metadata_only, bool more);

/* Whether FILE.journal still looks as it did at the last read (stat only). */
bool enr_store__journal_unchanged(const struct store_journal *j, const char *path);

/*
 * Appends the credentials, expiry times, region, account and (when newer)
 * last check of `rec` as entry
 * max(d->journal_seq, j->last) + 1, on disk (fdatasync) before it returns
 * with `sync` (else at the next enr_store__journal_sync()), and applies it to `d`. Under the store
 * lock, right after a read. ENR_E_NOSPACE, ENR_E_IO; ENR_E_UNSUPPORTED for a record too big for an
 * entry.
 */
int enr_store__journal_append(struct store_journal *j, struct store_data *d, const char *path,
                              const struct store_key *key, const struct enr_record *rec, bool sync);

/* fdatasync of what enr_store__journal_append() wrote without `sync`. */
int enr_store__journal_sync(struct store_journal *j, const char *path);

/* Allocates `bytes` on disk after j->end, so that appends there cannot run out
 * of space. Under the store lock. ENR_E_NOSPACE, ENR_E_IO. */
int enr_store__journal_reserve(struct store_journal *j, const char *path, size_t bytes);

/* After a write of the store that folded every entry in: wipes them (best effort). */
void enr_store__journal_folded(struct store_journal *j, const char *path);

/* An open store, of either backend: the file or the team store (PostgreSQL). */
struct enr_store {
	char *path;
	char *lock_path;   /* FILE.lock: flock of the whole store, holding the writer's pid */
	char *record_lock; /* FILE.rlock: one OFD byte lock per record id */
	bool plaintext;
	bool metadata_only;
	int lock_timeout_ms;
	struct enr_store_kdf new_kdf;
	char *passphrase; /* once known; wiped */
	enr_store_passphrase_fn passphrase_fn;
	void *passphrase_ctx;
	struct store_key key;
	struct store_data data;
	struct store_index index; /* lookups in data */
	struct store_file_info info;
	struct store_journal journal;
	int lock_fd;
	double kdf_seconds;
	const struct store_ops *ops;
	struct store_pg *pg;  /* the team store's connection and state */
	char *outbox;         /* a team store: the file that keeps enrollments while it is away */
	char *offline;        /* the team store that could not be reached (then path is outbox) */
	bool skip_locked;     /* enr_store_set_skip_locked() */
	long long due_before; /* enr_store_options.due_before (listing only) */
	bool on_demand;       /* enr_store_options.on_demand, on a team store */
	bool columns_only;    /* enr_store_options.columns_only (listing only) */
};

/* What a change or a lookup may touch: the records of these ids, and those of
 * `vendor` holding one of these sites. */
struct store_want {
	const char *const *ids;
	size_t n_ids;
	const char *vendor;
	const struct enr_site *sites;
	size_t n_sites;
};

/*
 * What differs between the backends. The records and app secrets are kept in
 * memory (store->data) by both; a write changes a copy and hands it over.
 */
struct store_ops {
	/* Reads the whole store into store->data (at open, and when it changed). */
	int (*load)(struct enr_store *store);
	/* Brings store->data up to date; `locked`: under the store's write lock. */
	int (*sync)(struct enr_store *store, bool locked);
	/* The store's write lock (a transaction for the team store). */
	int (*lock)(struct enr_store *store);
	/* Releases it (a transaction not written is rolled back). */
	void (*unlock)(struct enr_store *store);
	/* Under the lock: stores `next` in place of store->data, or fails changing nothing. */
	int (*write)(struct enr_store *store, struct store_data *next);
	/* The lock of one record against every other writer: a handle >= 0, or an error. */
	int (*lock_record)(struct enr_store *store, const char *id);
	void (*unlock_record)(struct enr_store *store, int handle);
	/* Saves the credentials of a locked record at once (enr_store_lock_journal());
	 * ENR_E_UNSUPPORTED: save the whole record instead. */
	int (*journal)(struct enr_store *store, struct enr_record *rec, bool sync);
	int (*sync_journal)(struct enr_store *store);
	int (*reserve)(struct enr_store *store, const char *const *ids, size_t n);
	bool (*encrypted)(const struct enr_store *store);
	/* A store opened on demand: adds to store->data the records `w` names that it
	 * does not hold yet (NULL for a backend that reads everything at load). */
	int (*fetch)(struct enr_store *store, const struct store_want *w);
	/* Gets the key to write with (asking for a passphrase). */
	int (*new_key)(struct enr_store *store);
	void (*close)(struct enr_store *store);
};

extern const struct store_ops enr_store__file_ops;
extern const struct store_ops enr_store__pg_ops;

/* Sets up the team store's backend (store->pg, store->path) for `url`; connects at load. */
int enr_store__pg_open(struct enr_store *store, const char *url, const char *member);

/* Seals `plain` under `key` (AES-256-GCM, `aad` bound): nonce || ciphertext || tag, malloc'd. */
int enr_store__seal(unsigned char **out, size_t *out_len, const unsigned char key[STORE_KEY_SIZE],
                    const char *aad, const void *plain, size_t len);
/* The reverse, NUL-terminated (one byte more); ENR_E_CORRUPT when it does not open. */
int enr_store__unseal(unsigned char **out, size_t *out_len, const unsigned char key[STORE_KEY_SIZE],
                      const char *aad, const unsigned char *sealed, size_t len);
/* X25519: a new key pair; the public key of a private one. ENR_E_CRYPTO. */
int enr_store__keypair(unsigned char priv[32], unsigned char pub[32]);
int enr_store__public_of(unsigned char pub[32], const unsigned char priv[32]);
/* The team key wrapped for a member's public key (ephemeral X25519, HKDF-SHA256,
 * AES-256-GCM), and back with the member's private key. */
int enr_store__wrap_team_key(unsigned char **out, size_t *out_len,
                             const unsigned char team_key[STORE_KEY_SIZE],
                             const unsigned char member_pub[32], const char *aad);
int enr_store__unwrap_team_key(unsigned char team_key[STORE_KEY_SIZE], const unsigned char priv[32],
                               const unsigned char *wrapped, size_t len, const char *aad);

/* Makes sure the store knows the passphrase, asking for it at most once. */
int enr_store__passphrase(struct enr_store *store, bool new_store);
/* enr_store__derive() with the passphrase known, its time counted. */
int enr_store__derive_timed(struct enr_store *store, struct store_key *key);

/* For tests and the benchmark. */
int enr_store__lock(struct enr_store *store);
void enr_store__unlock(struct enr_store *store);
double enr_store__kdf_seconds(const struct enr_store *store);
/* Appends records without checks in one transaction (taking ownership). */
int enr_store__bulk_insert(struct enr_store *store, struct enr_record **recs, size_t n);

#endif
