#ifndef DERENROLL_STORE_H
#define DERENROLL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

/*
 * The credential store: one file holding every enrolled customer system (a
 * record) and the company's app secrets, encrypted at rest by default.
 *
 * On disk: an 80-byte header (magic, format version, scrypt parameters, salt,
 * nonce, key check, header checksum), then the AES-256-GCM ciphertext of the
 * JSON text, then the 16-byte tag; the whole header is authenticated as
 * associated data. With `[store] encryption = off` the file is the JSON text
 * alone. The JSON text is one JSON value per line: a header line
 * ({"format":"derenroll-store","schema":1,"records":N}), a line of app
 * secrets ({"secrets":{NAME:VALUE,...}}), then two lines per record: its
 * public part (the enr_record_to_json() view without secrets) and
 * {"id":ID,"credentials":{the secret fields}}.
 *
 * Every write is a transaction: flock on FILE.lock (holding the writer's pid),
 * re-read when another process changed the file, modify, write FILE.tmp,
 * fsync, keep the previous generation as FILE.bak, rename, fsync the
 * directory. A crash at any instant leaves the old or the new store. A file
 * that cannot be decrypted or parsed is never overwritten.
 *
 * New tokens do not wait for a whole write: enr_store_lock_journal()
 * appends them to FILE.journal (encrypted with the store's key, fdatasync'ed),
 * which every read applies and the next write folds in; the header line's
 * "journal" member says up to which entry the file holds them.
 *
 * A store handle is not thread-safe: use one per thread, or serialise calls.
 */
struct enr_store;
struct json_object;
struct enr_oauth_tokens;

/* Which kind of credentials a record holds (the field groups of enr_credentials). */
enum enr_cred_type {
	ENR_CRED_NONE = 0,
	ENR_CRED_OAUTH,    /* "oauth": tokens */
	ENR_CRED_API_KEY,  /* "api_key": api_key, account_key (optional) */
	ENR_CRED_KEY_PAIR, /* "key_pair": key_id, key_secret */
	ENR_CRED_PARTNER,  /* "partner": tokens.access_token, tokens.refresh_token, api_key */
	ENR_CRED_EMAIL,    /* "email": owner_email + tokens */
	ENR_CRED_JOIN,     /* "join": join.*, plus tokens once fetched */
	ENR_CRED_ACCOUNT,  /* "account": account.site_id, account.secret_name */
};

/* The outcome of the last check of a record against its vendor. */
enum enr_record_outcome {
	ENR_OUTCOME_NONE = 0,      /* never checked */
	ENR_OUTCOME_OK,            /* "ok" */
	ENR_OUTCOME_REJECTED,      /* "rejected": the customer must authorize again */
	ENR_OUTCOME_TRANSIENT,     /* "transient": try later */
	ENR_OUTCOME_MISCONFIGURED, /* "misconfigured": the company's app settings */
	ENR_OUTCOME_BADRESPONSE,   /* "badresponse": the vendor sent something unexpected */
};

/* OAuth tokens. Secret: access_token, refresh_token, id_token. */
struct enr_tokens {
	char *access_token;
	char *refresh_token;
	char *token_type;
	char *scope;
	char *id_token;
};

/*
 * Typed credentials: `type` says which fields are meaningful. The secret
 * fields (tokens.access_token, tokens.refresh_token, tokens.id_token,
 * api_key, account_key, key_secret) are kept apart from the rest on disk,
 * omitted by enr_record_to_json() unless asked for, absent from records
 * loaded with `metadata_only`, and wiped when freed.
 */
struct enr_credentials {
	enum enr_cred_type type;
	/* A refresh token is held. Not a secret: it is known in records loaded with
	 * `metadata_only` too (written from tokens.refresh_token by every write). */
	bool refreshable;
	struct enr_tokens tokens; /* OAUTH, EMAIL, PARTNER, JOIN */
	char *api_key;            /* API_KEY, PARTNER */
	char *account_key;        /* API_KEY (SolarEdge fleet keys) */
	char *key_id;             /* KEY_PAIR */
	char *key_secret;         /* KEY_PAIR */
	char *owner_email;        /* EMAIL */
	struct {
		char *enrollment_id;
		char *state;
		char *program_id;
		char *flow_id;
	} join; /* JOIN */
	struct {
		char *site_id;
		char *secret_name; /* app secret holding the company's key */
	} account;                 /* ACCOUNT */
};

struct enr_site {
	char *id;
	char *name;
};

/* A free-form string pair of `extra` (vendor specifics; not for secrets). */
struct enr_pair {
	char *key;
	char *value;
};

/*
 * One enrolled customer system. Every string is malloc'd (or NULL) and owned
 * by the record; change one with enr_record_set(). Times are Unix seconds,
 * 0 when unknown or not applicable (refresh_expires_at 0: does not expire).
 */
struct enr_record {
	char *id;       /* 10 base32 characters, assigned by the first put */
	char *customer; /* customer reference: name, job number */
	char *vendor;   /* vendor id: "tesla", "sma", ... */
	char *method;   /* "oauth", "email", "key", "account", "partner", "join" */
	struct enr_credentials cred;
	char *account; /* account identity (Tesla JWT `sub`), or NULL */
	struct enr_site *sites;
	size_t n_sites;
	long long created_at;
	long long updated_at; /* set by every write of the record */
	long long access_expires_at;
	long long refresh_expires_at;
	struct {
		long long at;
		enum enr_record_outcome outcome;
		char *message;
	} last_check;
	struct enr_pair *extra;
	size_t n_extra;
	/* Tesla: the Fleet API region the account lives in, "na", "eu" or "cn"
	 * (see tesla.h); NULL in records older than regions, which are "na". */
	char *region;
};

/* scrypt parameters: N = 2^log2_n, r, p. */
struct enr_store_kdf {
	unsigned log2_n;
	unsigned r;
	unsigned p;
};

/*
 * Gives the passphrase of the store at `path` (malloc'd; the store wipes and
 * frees it). `new_store` is true when it will encrypt a new store (or a plain
 * one for the first time): ask twice. Returns 0 or a negative enr_error.
 */
typedef int (*enr_store_passphrase_fn)(char **out, bool new_store, const char *path, void *ctx);

struct enr_store_options {
	const char *path;       /* the store file (required); see enr_store_default_path() */
	bool plaintext;         /* write plain JSON ([store] encryption = off) */
	bool create;            /* get the key of a new store now, not at the first write */
	bool metadata_only;     /* for listing: no credentials, no app secrets; writes refused */
	const char *passphrase; /* used when set (tests, --demo) */
	enr_store_passphrase_fn passphrase_fn; /* else asked through this when needed */
	void *passphrase_ctx;
	const struct enr_store_kdf *kdf; /* for a new key; NULL: the default */
	int lock_timeout_ms;             /* how long to wait for a lock; 0: 10 s */
	const char *member; /* a team store: the member opening it; NULL: the database user */
	/* A team store: a file store that keeps what is enrolled while the team store cannot
	 * be reached (opened in its place then), until enr_store_push(). NULL: fail instead. */
	const char *outbox;
	/* With metadata_only, a team store may read only the records that could need a
	 * person before this time (a superset, in the database): narrow it with
	 * enr_status_of(). 0, and on a file store: every record. */
	long long due_before;
	/* A team store: read a record from the database when it is asked for (by id, by
	 * site, or by a write that may update it) instead of every record at open, for a
	 * handle about a few records (the wizard, show, enroll, remove, refresh ID).
	 * enr_store_count() and enr_store_at() then see only the records read so far.
	 * Ignored by a file store, which is read whole. */
	bool on_demand;
	/* With metadata_only, for a listing that shows only what a team store keeps in
	 * columns: a team store builds each record from them (id, customer, vendor,
	 * method, the token expiries, the last check's outcome, whether a refresh token
	 * is held), without its public part: no sites, no credential type, no times of
	 * creation or of the last check, no message, no extra fields. enr_status_of()
	 * needs no more. Ignored by a file store, which is read whole. */
	bool columns_only;
};

/* What enr_store_update()'s callback returns to leave the record as it was. */
#define ENR_STORE_UNCHANGED 1

/*
 * Called with a fresh copy of the record, the record locked against every
 * other writer; modify `rec` and return 0 to save it, ENR_STORE_UNCHANGED to
 * save nothing, or a negative enr_error to abort (returned by the update).
 */
typedef int (*enr_store_update_fn)(struct enr_record *rec, void *ctx);

/* A record locked by enr_store_lock_record(). */
struct enr_store_lock;

/* $XDG_DATA_HOME/derenroll/store (~/.local/share/...), malloc'd, or NULL with the error set. */
ENR_API char *enr_store_default_path(void);
/* $XDG_DATA_HOME/derenroll/outbox: a team store's outbox (enr_store_options.outbox). */
ENR_API char *enr_store_default_outbox(void);
/* Whether `path` names a team store (postgresql://... or postgres://...), not a file. */
ENR_API bool enr_store_url(const char *path);
/* Whether a postgresql:// URL holds a password (user:PASSWORD@, ?password=). */
ENR_API bool enr_store_url_has_password(const char *path);

/* The default scrypt parameters for new stores (16 MiB). */
ENR_API void enr_store_kdf_default(struct enr_store_kdf *out);

/*
 * Opens the store and reads it. A missing file is an empty store; nothing is
 * created before the first write. Errors: ENR_E_PERM (group or others can
 * access the file; the message holds the chmod), ENR_E_PASSPHRASE (wrong,
 * empty or unavailable passphrase; the file is untouched), ENR_E_CORRUPT
 * (damaged or truncated; the message names FILE.bak), ENR_E_STORE (written
 * by a newer derenroll, not a regular file), ENR_E_IO, ENR_E_USAGE.
 */
ENR_API int enr_store_open(struct enr_store **out, const struct enr_store_options *opts);

/* Wipes the key and every secret; NULL is a no-op. */
ENR_API void enr_store_free(struct enr_store *store);

ENR_API const char *enr_store_path(const struct enr_store *store);

/*
 * False when the store on disk is plain JSON or will be written as plain JSON:
 * the caller warns (every time) that credentials are not encrypted.
 */
ENR_API bool enr_store_encrypted(const struct enr_store *store);

/* Reads the file again if another process changed it. */
ENR_API int enr_store_reload(struct enr_store *store);

/*
 * The records, in insertion order (opened `on_demand`: only those read so far).
 * The pointers stay valid until the next call that writes or reloads this
 * store, or enr_store_free().
 */
ENR_API size_t enr_store_count(const struct enr_store *store);
ENR_API const struct enr_record *enr_store_at(const struct enr_store *store, size_t i);

/* A copy of record `id` (case-insensitive); ENR_E_NOTFOUND. Free with enr_record_free(). */
ENR_API int enr_store_get(struct enr_record **out, const struct enr_store *store, const char *id);

/* A copy of the record holding site `site_id` of `vendor`; ENR_E_NOTFOUND. */
ENR_API int enr_store_find_site(struct enr_record **out, const struct enr_store *store,
                                const char *vendor, const char *site_id);

/*
 * Inserts or updates `rec` in one transaction. It updates the record with the
 * same id, else the record holding one of its sites for the same vendor (an
 * enrollment of a system already stored); else it inserts it under a new id.
 * An update keeps the stored created_at and refuses (ENR_E_EXISTS) a record
 * whose account identity differs from the stored one, or whose sites are
 * stored in another record. On success rec->id, created_at and updated_at are
 * filled in and `*out` (may be NULL) tells whether a record was updated.
 * Errors: ENR_E_USAGE (invalid record), ENR_E_LOCKED, ENR_E_NOSPACE, and
 * those of enr_store_open().
 */
ENR_API int enr_store_put(bool *out, struct enr_store *store, struct enr_record *rec);

/* Removes record `id`; ENR_E_NOTFOUND when there is none. */
ENR_API int enr_store_remove(struct enr_store *store, const char *id);

/*
 * Read-modify-write of one record: locks it against every other writer (in
 * this process or another; waits up to the lock timeout, then ENR_E_LOCKED),
 * re-reads it, runs `fn` on it and writes the result. Two processes
 * refreshing the same record thus never both spend its refresh token.
 * put, remove and update of a record wait while it is locked, even through
 * the handle that holds the lock: save it with enr_store_lock_save().
 */
ENR_API int enr_store_update(struct enr_store *store, const char *id, enr_store_update_fn fn,
                             void *ctx);

/*
 * Read-modify-write of many records in one transaction (one write of the
 * file): `fn` runs on a copy of each record of `ids` still in the store (an
 * id listed twice sees its first change). For short notes such as the results
 * of a bulk check; credentials that must not be spent twice go through
 * enr_store_update() or the record lock. Nothing is written when `fn` leaves
 * every record unchanged; a negative return aborts the whole transaction.
 */
ENR_API int enr_store_update_many(struct enr_store *store, const char *const *ids, size_t n,
                                  enr_store_update_fn fn, void *ctx);

/*
 * The same in steps, for callers that cannot block in a callback (an event
 * loop): locks record `id` and reads it fresh. Modify the record from
 * enr_store_lock_record_get() and save it with enr_store_lock_save() as often
 * as needed (a rotated refresh token the moment it arrives, then the check
 * result); enr_store_unlock() releases the lock. ENR_E_NOTFOUND, ENR_E_LOCKED.
 * Unlike put, a save through the lock may change the record's account identity.
 */
ENR_API int enr_store_lock_record(struct enr_store_lock **out, struct enr_store *store,
                                  const char *id);
ENR_API struct enr_record *enr_store_lock_record_get(struct enr_store_lock *lock);
ENR_API int enr_store_lock_save(struct enr_store *store, struct enr_store_lock *lock);
/*
 * Saves the credentials, expiry times, region, account and last check of the
 * locked record at once without rewriting the store: an entry of a few
 * hundred bytes appended to FILE.journal (a new store is written whole).
 * Every open and reload reads the journal, so the change is seen at once; the
 * next write of the store folds it in. For a rotated refresh token, which
 * exists nowhere else the moment it arrives. With `sync` it is on disk
 * (fdatasync) when this returns; without, it is safe from a crash of this
 * process at once and on disk after enr_store_sync(): write each of many
 * answers as it comes, sync once for all, and use none of the new tokens
 * before. ENR_E_NOSPACE or ENR_E_IO when it could not be written.
 */
ENR_API int enr_store_lock_journal(struct enr_store *store, struct enr_store_lock *lock, bool sync);
/* Syncs what was written since (fdatasync); 0 when nothing was. ENR_E_IO, ENR_E_NOSPACE. */
ENR_API int enr_store_sync(struct enr_store *store);

/*
 * Allocates room in the journal for one save of each record of `ids` (with a
 * margin for longer tokens), before any is spent: a refresh on a full disk
 * stops before its first request. ENR_E_NOSPACE saying so, ENR_E_IO.
 */
ENR_API int enr_store_reserve(struct enr_store *store, const char *const *ids, size_t n);

/*
 * With `skip` true, enr_store_lock_record() on a team store does not wait for
 * a record another machine holds: ENR_E_AGAIN at once (SELECT ... FOR UPDATE
 * SKIP LOCKED), so that bulk runs on several machines share the records. The
 * file store always waits.
 */
ENR_API void enr_store_set_skip_locked(struct enr_store *store, bool skip);

/* Releases the lock and frees the record it holds; NULL is a no-op. */
ENR_API void enr_store_unlock(struct enr_store_lock *lock);

/*
 * App secrets by name ("vendor.tesla.client_secret": letters, digits, '.',
 * '_', '-'). set stores (or replaces) a non-empty value; get gives a malloc'd
 * copy registered for redaction (free with enr_config_free_secret()) or
 * ENR_E_NOTFOUND; remove gives ENR_E_NOTFOUND when there is none.
 */
ENR_API int enr_store_secret_set(struct enr_store *store, const char *name, const char *value);
ENR_API int enr_store_secret_get(char **out, const struct enr_store *store, const char *name);
ENR_API int enr_store_secret_remove(struct enr_store *store, const char *name);
/* 0 when `name` can name an app secret, else ENR_E_USAGE saying why. */
ENR_API int enr_store_secret_check_name(const char *name);
/* The names, sorted. */
ENR_API size_t enr_store_secret_count(const struct enr_store *store);
ENR_API const char *enr_store_secret_name(const struct enr_store *store, size_t i);

/*
 * An enr_config_secret_fn over the store (`ctx`), so that
 * enr_config_set_secret_source(cfg, enr_store_secret_lookup, store) makes
 * config lookups fall back to the store's app secrets.
 */
ENR_API int enr_store_secret_lookup(char **out, const char *name, void *ctx);

/*
 * Reads a passphrase from a file (DERENROLL_PASSPHRASE_FILE): the whole file
 * less one trailing newline; ENR_E_PASSPHRASE when it is empty or unreadable.
 */
ENR_API int enr_store_read_passphrase_file(char **out, const char *path);

/*
 * The team store (a store opened from a postgresql:// URL). Its credentials are
 * sealed under a team key that each member opens with their own passphrase.
 * add wraps the team key for a new member (under `passphrase`); remove takes
 * a member out and rotates the team key (every sealed value sealed again, the
 * new key wrapped for each member left), so what they could open before is
 * all they ever can. Every other function works the same on both backends.
 * On a file store these give ENR_E_UNSUPPORTED.
 */
struct enr_team_member {
	char *name;
	char *added_by; /* the database user who added them */
	long long added_at;
};
ENR_API bool enr_store_is_team(const struct enr_store *store);

/*
 * The team store's records a page at a time, in the order of the wizard's
 * enrolled systems screen: most urgent first (schema 2's due_at, never due
 * last), then by id. Keyset paging: `cur` starts zeroed (its `match` set, or
 * empty for every record) and is moved past each page; cur->done once the last
 * page was read. Up to `max` records, each of only what a listing shows (as
 * with enr_store_options.columns_only: no credentials, no sites, no message),
 * go into a malloc'd array in *out (each freed with enr_record_free(), then
 * the array with free()), read from the database whatever this handle holds
 * in memory. ENR_E_UNSUPPORTED on a file store.
 */
struct enr_store_cursor {
	long long due; /* the sort key of the last record read: due_at, never = LLONG_MAX */
	char id[64];   /* and its id */
	bool started;  /* a page was read */
	bool done;     /* the last page was read */
	/* Only the records whose id, customer, vendor or method holds this text
	 * (case-insensitive, UTF-8); "": every record. Set before the first page. */
	char match[256];
};
ENR_API int enr_store_team_page(struct enr_store *store, struct enr_store_cursor *cur, size_t max,
                                struct enr_record ***out, size_t *n);
/* How many records the team store holds (as this member may see them) whose id,
 * customer, vendor or method holds `match` (as enr_store_cursor.match; NULL or "": all). */
ENR_API int enr_store_team_count(struct enr_store *store, const char *match, size_t *n);

ENR_API int enr_store_team_add(struct enr_store *store, const char *name, const char *passphrase);
ENR_API int enr_store_team_remove(struct enr_store *store, const char *name);
ENR_API int enr_store_team_list(struct enr_team_member **out, size_t *n, struct enr_store *store);
ENR_API void enr_store_team_list_free(struct enr_team_member *members, size_t n);

/*
 * The team store could not be reached at open (ENR_E_OFFLINE) and the handle
 * works in its outbox: the team store's name, else NULL. A record put there,
 * or put while the team store went away since, is marked pending.
 */
ENR_API const char *enr_store_offline(const struct enr_store *store);
ENR_API bool enr_record_pending(const struct enr_record *rec);
/*
 * Pushes every pending record of the outbox into the team store, under its own
 * id (pushing twice changes nothing), and removes it from the outbox. `left`
 * counts those refused (a site stored in another record of the team store:
 * the message is logged). 0, or the first error other than such refusals.
 */
ENR_API int enr_store_push(struct enr_store *team, size_t *pushed, size_t *left);

/*
 * Takes `n` tokens from the bucket `name` (capacity, refilled at per_second)
 * that every machine using the team store shares, atomically on the
 * database's clock: *wait_ms 0 when taken, else how long until there are
 * enough. ENR_E_UNSUPPORTED on a file store (its limits are the process's).
 */
ENR_API int enr_store_take_rate(struct enr_store *store, const char *name, double capacity,
                                double per_second, int n, long long *wait_ms);

/* One line of the team store's log: who did what to which record (never a secret). */
struct enr_audit_entry {
	long long at;
	const char *member;
	const char *login;  /* the database user that wrote it, when not `member` (else NULL) */
	const char *action; /* add, update, remove, save tokens, secret set, team add, ... */
	const char *record; /* NULL for the store as a whole */
	const char *result;
};
typedef int (*enr_store_log_fn)(const struct enr_audit_entry *entry, void *ctx);
/* The newest `limit` (0: 50) entries, of record `id` or (NULL) all, oldest first. */
ENR_API int enr_store_log(struct enr_store *store, const char *id, size_t limit,
                          enr_store_log_fn fn, void *ctx);

/* An empty record. */
ENR_API int enr_record_new(struct enr_record **out);
/* Frees the record, wiping every credential; NULL is a no-op. */
ENR_API void enr_record_free(struct enr_record *rec);
ENR_API int enr_record_dup(struct enr_record **out, const struct enr_record *rec);

/* Replaces the string `*field` of a record with a copy of `value` (NULL clears it). */
ENR_API int enr_record_set(char **field, const char *value);

/* Adds a site, or renames it when its id is already there; a name longer than
 * 200 characters is cut to 200 (at a character boundary). */
ENR_API int enr_record_add_site(struct enr_record *rec, const char *id, const char *name);

/*
 * Takes a token answer (derenroll/oauth.h) into the record's tokens and
 * expiry times. When the answer has no refresh token the stored one stays,
 * with its expiry; id_token, token_type and scope are replaced when given.
 */
ENR_API int enr_record_set_tokens(struct enr_record *rec, const struct enr_oauth_tokens *tokens);

/* Sets `extra[key]` (NULL value removes it); the value of a key, or NULL. */
ENR_API int enr_record_set_extra(struct enr_record *rec, const char *key, const char *value);
ENR_API const char *enr_record_extra(const struct enr_record *rec, const char *key);

/*
 * The record as one line of JSON (malloc'd), the same fields as on disk;
 * with `secrets` false the secret credential fields are left out.
 */
ENR_API int enr_record_to_json(char **out, const struct enr_record *rec, bool secrets);
/* The same as a json-c object (free with json_object_put()). */
ENR_API int enr_record_to_json_object(struct json_object **out, const struct enr_record *rec,
                                      bool secrets);
/* A record as `derenroll export --json` wrote it (one member of its "records"),
 * secrets included; ENR_E_PARSE naming the field at fault. */
ENR_API int enr_record_from_export(struct enr_record **out, struct json_object *obj);
/* Overwrites every string of a json-c tree that held secrets (before json_object_put()). */
ENR_API void enr_json_wipe(struct json_object *obj);
/* A record from that JSON (ENR_E_PARSE naming the field at fault). */
ENR_API int enr_record_from_json(struct enr_record **out, const char *json);

/* "oauth", "api_key", ...; and back (ENR_E_PARSE). */
ENR_API const char *enr_record_cred_name(enum enr_cred_type type);
ENR_API int enr_record_cred_parse(enum enr_cred_type *out, const char *name);

/* "ok", "rejected", ...("" for NONE); and back (ENR_E_PARSE). */
ENR_API const char *enr_record_outcome_name(enum enr_record_outcome outcome);
ENR_API int enr_record_outcome_parse(enum enr_record_outcome *out, const char *name);

/* The outcome an error code stands for: 0 ok, ENR_E_REJECTED/EXPIRED/DECLINED
 * rejected, ENR_E_MISCONFIGURED, ENR_E_BADRESPONSE, anything else transient. */
ENR_API enum enr_record_outcome enr_record_outcome_from_error(int code);

#endif
