/*
 * The team store: the store's second backend, on PostgreSQL (libpq).
 *
 * The records are kept in memory as by the file backend (store->data) and
 * brought up to date from the database by revision: every write bumps
 * store_state.rev under its row lock (the store's write lock) and stamps the
 * rows it wrote with it, so a reload reads only what changed since.
 *
 * The database never sees a secret: a record's credentials and the app
 * secrets are sealed on the client under the team key (team.c), each member's
 * copy of which is wrapped for that member. Plain columns carry what support
 * staff sort and filter by.
 *
 * One token, one spender: a record is locked by a row lock (SELECT ... FOR
 * UPDATE on its row of record_locks) held on a connection of its own across
 * the vendor call, while every save goes through the main connection and is
 * committed at once. A killed process or a lost connection releases the lock.
 */

#include <ctype.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/store.h"
#include "store/internal.h"
#include "util.h"

#define PG_SCHEMA      4 /* the newest schema this derenroll knows (assets/sql/NNN_*.sql) */
#define MAX_LOCKS      16
#define SCHEMA_LOCK_ID 0x64657265 /* "dere": the advisory lock of schema changes */

struct store_pg {
	char *url; /* as given: may hold a password, never printed */
	PGconn *conn;
	PGconn *pool[MAX_LOCKS]; /* connections that hold record locks */
	bool busy[MAX_LOCKS];
	bool in_tx;
	long long rev;        /* the revision store->data reflects */
	long long locked_rev; /* under the write lock: the revision read with it */
	char *member;
	int key_gen; /* the generation of the team key in store->key */
};

bool enr_store_url(const char *path)
{
	return path &&
	       (strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0);
}

/* The URL without a password, for messages. */
static char *display_url(const char *url)
{
	const char *scheme = strstr(url, "://"), *at, *colon, *end;
	char *out, *p;

	if (!(out = enr_util_strdup(url)))
		return NULL;
	if (!scheme)
		return out;
	scheme += 3;
	end = scheme + strcspn(scheme, "/?");
	at = memchr(scheme, '@', (size_t)(end - scheme));
	colon = at ? memchr(scheme, ':', (size_t)(at - scheme)) : NULL;
	if (colon) {
		size_t off = (size_t)(colon - url);
		memmove(out + off, out + (at - url), strlen(at) + 1);
	}
	/* ...?password=...: cut the query, which names nothing a reader needs. */
	if ((p = strstr(out, "password=")) != NULL) {
		char *q = strchr(out, '?');
		if (q)
			*q = '\0';
	}
	return out;
}

bool enr_store_url_has_password(const char *path)
{
	char *shown;
	bool has;

	if (!path || !enr_store_url(path))
		return false;
	/* What display_url() cuts is the password. */
	shown = display_url(path);
	has = !shown || strcmp(shown, path) != 0;
	free(shown);
	return has;
}

int enr_store__pg_open(struct enr_store *store, const char *url, const char *member)
{
	struct store_pg *pg = calloc(1, sizeof(*pg));

	if (!pg)
		return enr_error_set(ENR_E_NOMEM, NULL);
	store->pg = pg;
	pg->url = enr_util_strdup(url);
	store->path = display_url(url);
	if (member && member[0] && !(pg->member = enr_util_strdup(member)))
		return ENR_E_NOMEM;
	return pg->url && store->path ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

/* ---- connections and statements ---- */

static void quiet_notices(void *arg, const char *message)
{
	(void)arg;
	enr_log_debug("team store: %s", message);
}

static const char *first_line(const char *msg, char *buf, size_t size)
{
	size_t n = strcspn(msg ? msg : "", "\n");

	snprintf(buf, size, "%.*s", (int)(n < size ? n : size - 1), msg ? msg : "");
	return buf;
}

static int unreachable(struct enr_store *store, PGconn *conn)
{
	char line[512];

	return enr_error_set(
	    ENR_E_OFFLINE, "cannot reach the team store %s: %s", store->path,
	    first_line(conn ? PQerrorMessage(conn) : "out of memory", line, sizeof(line)));
}

static int connect_one(struct enr_store *store, PGconn **out)
{
	const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
	const char *values[] = {store->pg->url, "10", "derenroll", NULL};
	char sql[96];
	PGconn *conn = PQconnectdbParams(keys, values, 1);
	PGresult *res;
	int rc;

	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		rc = unreachable(store, conn);
		PQfinish(conn);
		return rc;
	}
	PQsetNoticeProcessor(conn, quiet_notices, NULL);
	snprintf(sql, sizeof(sql), "SET lock_timeout = %d; SET client_min_messages = warning",
	         store->lock_timeout_ms);
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		PQclear(res);
		rc = unreachable(store, conn);
		PQfinish(conn);
		return rc;
	}
	PQclear(res);
	*out = conn;
	return 0;
}

/* The main connection, made again when it was lost (not inside a transaction). */
static int conn_ready(struct enr_store *store)
{
	struct store_pg *pg = store->pg;

	if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
		return 0;
	if (pg->in_tx)
		return unreachable(store, pg->conn);
	PQfinish(pg->conn);
	pg->conn = NULL;
	return connect_one(store, &pg->conn);
}

/* An error of a statement as an enr_error, its message naming `doing`. */
static int sql_error(struct enr_store *store, PGconn *conn, PGresult *res, const char *doing)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	char line[512];

	/* The server always names an error (SQLSTATE); libpq's own, such as
	 * "server closed the connection unexpectedly", do not. */
	if (PQstatus(conn) != CONNECTION_OK || !state)
		return unreachable(store, conn);
	first_line(PQerrorMessage(conn), line, sizeof(line));
	if (state && (strcmp(state, "55P03") == 0 || strcmp(state, "40P01") == 0))
		return enr_error_set(ENR_E_LOCKED,
		                     "the team store %s is busy: another process holds what %s "
		                     "needs (waited %d s); try again when it is done",
		                     store->path, doing, (store->lock_timeout_ms + 999) / 1000);
	if (state && strcmp(state, "42501") == 0)
		return enr_error_set(ENR_E_PERM, "the team store %s refused %s: %s", store->path,
		                     doing, line);
	return enr_error_set(ENR_E_STORE, "the team store %s failed %s: %s", store->path, doing,
	                     line);
}

/*
 * Runs `sql` with text parameters (a NULL value is SQL NULL); `binary` marks
 * which are bytea given raw, with their lengths. NULL with the error set.
 */
static PGresult *run(struct enr_store *store, PGconn *conn, const char *doing, const char *sql,
                     int n, const char *const *values, const int *lengths, const int *binary)
{
	PGresult *res = PQexecParams(conn, sql, n, NULL, values, lengths, binary, 0);
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return res;
	/* The server restarted since the last statement (the connection is bad, or
	 * the error is libpq's own, without a SQLSTATE): once more on a new
	 * connection, unless a transaction (whose work is lost with it) was open. */
	if ((PQstatus(conn) == CONNECTION_BAD || !PQresultErrorField(res, PG_DIAG_SQLSTATE)) &&
	    conn == store->pg->conn && !store->pg->in_tx) {
		PQclear(res);
		PQfinish(store->pg->conn);
		store->pg->conn = NULL;
		if (connect_one(store, &store->pg->conn) < 0)
			return NULL;
		conn = store->pg->conn;
		res = PQexecParams(conn, sql, n, NULL, values, lengths, binary, 0);
		st = PQresultStatus(res);
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
			return res;
	}
	sql_error(store, conn, res, doing);
	PQclear(res);
	return NULL;
}

/* Statements without parameters (several, separated by semicolons). */
static int exec(struct enr_store *store, PGconn *conn, const char *doing, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	int rc;

	/* As run(): once more after a restart of the server, outside a transaction. */
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && PQstatus(conn) == CONNECTION_BAD &&
	    conn == store->pg->conn && !store->pg->in_tx) {
		PQclear(res);
		PQfinish(store->pg->conn);
		store->pg->conn = NULL;
		if ((rc = connect_one(store, &store->pg->conn)) < 0)
			return rc;
		conn = store->pg->conn;
		res = PQexec(conn, sql);
		st = PQresultStatus(res);
	}
	rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0
	                                                     : sql_error(store, conn, res, doing);

	PQclear(res);
	return rc;
}

static long long get_ll(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* A bytea column (text format) as bytes; NULL for SQL NULL. Free with PQfreemem(). */
static unsigned char *get_bytes(const PGresult *res, int row, int col, size_t *len)
{
	*len = 0;
	if (PQgetisnull(res, row, col))
		return NULL;
	return PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), len);
}

/* ---- the schema ---- */

static int schema_version(struct enr_store *store, int *out)
{
	PGresult *res =
	    run(store, store->pg->conn, "reading its schema version",
	        "SELECT to_regclass('derenroll_schema') IS NOT NULL", 0, NULL, NULL, NULL);
	bool exists = res && PQgetvalue(res, 0, 0)[0] == 't';

	*out = 0;
	PQclear(res);
	if (!res)
		return enr_error_last_code();
	if (!exists) /* a new database */
		return 0;
	res = run(store, store->pg->conn, "reading its schema version",
	          "SELECT max(version) FROM derenroll_schema", 0, NULL, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	*out = (int)get_ll(res, 0, 0);
	PQclear(res);
	return 0;
}

/* Runs assets/sql/NNN_*.sql for every version after `from`, in one transaction. */
static int migrate(struct enr_store *store, int from)
{
	char *dir = enr_config_asset_path("sql"), *pattern = NULL, *sql = NULL;
	size_t len;
	glob_t g = {0};
	int rc = 0, version = from;

	if (!dir)
		return ENR_E_NOMEM;
	for (int v = from + 1; v <= PG_SCHEMA && rc == 0; v++) {
		free(pattern);
		pattern = enr_util_printf("%s/%03d_*.sql", dir, v);
		globfree(&g);
		memset(&g, 0, sizeof(g));
		if (!pattern)
			rc = ENR_E_NOMEM;
		else if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc != 1)
			rc = enr_error_set(
			    ENR_E_STORE,
			    "the team store's schema %d is missing (%s): is derenroll "
			    "installed whole?",
			    v, pattern);
		else if ((rc = enr_util_read_file(&sql, &len, g.gl_pathv[0], 1 << 20)) == 0) {
			rc = exec(store, store->pg->conn, "creating its tables", sql);
			free(sql);
			sql = NULL;
			version = v;
		}
	}
	/* A member who does not own the tables (roles.sql) may not change them. */
	if (rc == ENR_E_PERM) {
		char said[512];
		snprintf(said, sizeof(said), "%s", enr_error_last());
		rc = enr_error_set(ENR_E_PERM,
		                   "the team store %s has schema %d and this derenroll needs %d: "
		                   "only the owner of its tables may upgrade it, with `derenroll "
		                   "store init` (%s)",
		                   store->path, from, PG_SCHEMA, said);
	}
	if (rc == 0 && version != from)
		enr_log_info("team store %s: schema %d", store->path, version);
	globfree(&g);
	free(pattern);
	free(dir);
	return rc;
}

/* Creates or updates the tables (one process at a time), or refuses a newer schema. */
static int ensure_schema(struct enr_store *store)
{
	char sql[96];
	int version, rc;

	if ((rc = schema_version(store, &version)) < 0)
		return rc;
	if (version == PG_SCHEMA)
		return 0;
	if (version > PG_SCHEMA)
		return enr_error_set(
		    ENR_E_STORE,
		    "the team store %s has schema %d, written by a newer derenroll "
		    "(this one knows %d): upgrade derenroll",
		    store->path, version, PG_SCHEMA);
	snprintf(sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(%d)", SCHEMA_LOCK_ID);
	if ((rc = exec(store, store->pg->conn, "locking its schema", sql)) < 0)
		return rc;
	if ((rc = schema_version(store, &version)) == 0 && version < PG_SCHEMA)
		rc = migrate(store, version);
	rc = rc == 0 ? exec(store, store->pg->conn, "creating its tables", "COMMIT") : rc;
	if (rc < 0)
		PQclear(PQexec(store->pg->conn, "ROLLBACK"));
	return rc;
}

/* Who this handle is in the team store: [store] member, else the database user. */
static const char *member_name(struct enr_store *store)
{
	struct store_pg *pg = store->pg;

	if (!pg->member)
		pg->member = enr_util_strdup(PQuser(pg->conn));
	return pg->member;
}

/* ---- the log ---- */

/* Appends one line to the log: params are member, action, record. */
static int audit_result(struct enr_store *store, const char *const *fields, const char *result)
{
	const char *params[] = {fields[0], fields[1], fields[2], result};
	PGresult *res = run(store, store->pg->conn, "noting the change",
	                    "INSERT INTO audit (member, action, record, result) "
	                    "VALUES ($1, $2, $3, $4)",
	                    4, params, NULL, NULL);

	PQclear(res);
	return res ? 0 : enr_error_last_code();
}

static int audit(struct enr_store *store, const char *action, const char *record)
{
	const char *params[] = {member_name(store), action, record};

	return audit_result(store, params, "ok");
}

/* A record written: ok, and how its last check ended when not well (a refused
 * refresh, a check that failed), so that the log tells when a record went bad. */
static int audit_record(struct enr_store *store, const char *action, const struct enr_record *rec)
{
	const char *params[] = {member_name(store), action, rec->id};
	enum enr_record_outcome outcome = rec->last_check.outcome;
	char result[64] = "ok";

	if (outcome != ENR_OUTCOME_NONE && outcome != ENR_OUTCOME_OK)
		snprintf(result, sizeof(result), "ok; last check %s",
		         enr_record_outcome_name(outcome));
	return audit_result(store, params, result);
}

/* A change of the team: the member named in the result. */
static int audit_member(struct enr_store *store, const char *action, const char *name)
{
	const char *fields[] = {member_name(store), action, NULL};
	char *result = enr_util_printf("ok: %s", name);
	int rc = result ? audit_result(store, fields, result) : ENR_E_NOMEM;

	free(result);
	return rc;
}

/* ---- the team key ---- */

static int parse_kdf(struct enr_store_kdf *kdf, const char *text)
{
	const char *why;

	if (!text || sscanf(text, "scrypt:%u:%u:%u", &kdf->log2_n, &kdf->r, &kdf->p) != 3 ||
	    !enr_store__kdf_ok(kdf, &why))
		return enr_error_set(ENR_E_CORRUPT, "a member's key parameters are damaged");
	return 0;
}

static char *aad_member(const char *name)
{
	return enr_util_printf("derenroll member %s", name);
}

static char *aad_team(const char *name, int gen)
{
	return enr_util_printf("derenroll team key %s %d", name, gen);
}

/* Unwraps this member's private key with their passphrase. */
static int member_private(struct enr_store *store, unsigned char priv[32], const PGresult *res)
{
	struct store_key kek = {0};
	unsigned char *sealed, *plain = NULL, *salt;
	size_t n, salt_len, plain_len = 0;
	char *aad = aad_member(member_name(store));
	int rc;

	sealed = get_bytes(res, 0, 1, &n);
	salt = get_bytes(res, 0, 3, &salt_len);
	if (!sealed || !salt || salt_len != sizeof(kek.salt))
		rc = enr_error_set(ENR_E_UNSUPPORTED,
		                   "member %s of the team store %s has no passphrase-wrapped key",
		                   member_name(store), store->path);
	else if ((rc = parse_kdf(&kek.kdf, PQgetvalue(res, 0, 2))) == 0 &&
	         (rc = enr_store__passphrase(store, false)) == 0) {
		memcpy(kek.salt, salt, salt_len);
		if ((rc = enr_store__derive_timed(store, &kek)) == 0 &&
		    enr_store__unseal(&plain, &plain_len, kek.key, aad, sealed, n) < 0)
			rc = enr_error_set(ENR_E_PASSPHRASE,
			                   "wrong passphrase for member %s of the team store %s",
			                   member_name(store), store->path);
	}
	if (rc == 0 && plain_len != 32)
		rc = enr_error_set(ENR_E_CORRUPT, "member %s's key is damaged", member_name(store));
	if (rc == 0)
		memcpy(priv, plain, 32);
	if (plain)
		OPENSSL_clear_free(plain, plain_len + 1);
	OPENSSL_cleanse(&kek, sizeof(kek));
	PQfreemem(sealed);
	PQfreemem(salt);
	free(aad);
	return rc;
}

/* Reads this member's copy of the team key (asking for the passphrase). ENR_E_NOTFOUND: none. */
static int fetch_team_key(struct enr_store *store)
{
	struct store_pg *pg = store->pg;
	const char *params[] = {member_name(store)};
	unsigned char priv[32], *wrapped = NULL;
	size_t n = 0;
	char *aad = NULL;
	PGresult *res;
	int rc, gen;

	if (!params[0])
		return ENR_E_NOMEM;
	res = run(store, pg->conn, "reading the team key",
	          "SELECT public_key, private_key, kdf, salt, team_key, key_generation "
	          "FROM members WHERE name = $1",
	          1, params, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	if (PQntuples(res) == 0) {
		PQclear(res);
		return ENR_E_NOTFOUND;
	}
	gen = (int)get_ll(res, 0, 5);
	rc = member_private(store, priv, res);
	if (rc == 0) {
		wrapped = get_bytes(res, 0, 4, &n);
		aad = aad_team(params[0], gen);
		rc = !wrapped || !aad
		         ? ENR_E_NOMEM
		         : enr_store__unwrap_team_key(store->key.key, priv, wrapped, n, aad);
	}
	OPENSSL_cleanse(priv, sizeof(priv));
	PQfreemem(wrapped);
	free(aad);
	PQclear(res);
	if (rc < 0)
		return rc;
	store->key.have = true;
	pg->key_gen = gen;
	return 0;
}

/* Seals a member's new key pair under `passphrase` and wraps the team key for it. */
static int member_row(struct enr_store *store, const char *name, const char *passphrase,
                      const unsigned char team_key[32], int gen, const char *sql)
{
	struct store_key kek = {.kdf = store->new_kdf};
	unsigned char priv[32], pub[32], *sealed = NULL, *wrapped = NULL;
	size_t sealed_len = 0, wrapped_len = 0;
	char *aad_m = aad_member(name), *aad_t = aad_team(name, gen), *kdf = NULL, genbuf[16];
	PGresult *res = NULL;
	int rc;

	snprintf(genbuf, sizeof(genbuf), "%d", gen);
	kdf = enr_util_printf("scrypt:%u:%u:%u", kek.kdf.log2_n, kek.kdf.r, kek.kdf.p);
	rc = !aad_m || !aad_t || !kdf ? ENR_E_NOMEM : enr_util_random(kek.salt, sizeof(kek.salt));
	if (rc == 0 && (rc = enr_store__keypair(priv, pub)) == 0 &&
	    (rc = enr_store__derive(&kek, passphrase)) == 0 &&
	    (rc = enr_store__seal(&sealed, &sealed_len, kek.key, aad_m, priv, 32)) == 0 &&
	    (rc = enr_store__wrap_team_key(&wrapped, &wrapped_len, team_key, pub, aad_t)) == 0) {
		const char *values[] = {name,  (char *)pub,      (char *)sealed,
		                        kdf,   (char *)kek.salt, (char *)wrapped,
		                        genbuf};
		const int lengths[] = {
		    0, 32, (int)sealed_len, 0, (int)sizeof(kek.salt), (int)wrapped_len, 0};
		const int binary[] = {0, 1, 1, 0, 1, 1, 0};
		res =
		    run(store, store->pg->conn, "adding a member", sql, 7, values, lengths, binary);
		rc = res ? 0 : enr_error_last_code();
	}
	PQclear(res);
	OPENSSL_cleanse(priv, sizeof(priv));
	OPENSSL_cleanse(&kek, sizeof(kek));
	free(sealed);
	free(wrapped);
	free(aad_m);
	free(aad_t);
	free(kdf);
	return rc;
}

#define INSERT_MEMBER                                                                              \
	"INSERT INTO members (name, public_key, private_key, kdf, salt, team_key, "                \
	"key_generation, added_by) VALUES ($1, $2, $3, $4, $5, $6, $7, current_user)"

/* The first member of a new team store: a new team key, wrapped for them. */
static int create_team(struct enr_store *store)
{
	struct store_pg *pg = store->pg;
	unsigned char team_key[32];
	PGresult *res;
	int rc;

	if ((rc = enr_store__passphrase(store, true)) < 0)
		return rc;
	if ((rc = exec(store, pg->conn, "creating the team key",
	               "BEGIN; SELECT rev FROM store_state FOR UPDATE")) < 0)
		return rc;
	res = run(store, pg->conn, "creating the team key", "SELECT count(*) FROM members", 0, NULL,
	          NULL, NULL);
	rc = res ? 0 : enr_error_last_code();
	if (rc == 0 && get_ll(res, 0, 0) > 0)
		rc =
		    enr_error_set(ENR_E_STORE,
		                  "the team store %s has members, and %s is not one: a member adds "
		                  "you with `derenroll team add %s`",
		                  store->path, member_name(store), member_name(store));
	PQclear(res);
	if (rc == 0 && (rc = enr_util_random(team_key, sizeof(team_key))) == 0 &&
	    (rc = member_row(store, member_name(store), store->passphrase, team_key, 1,
	                     INSERT_MEMBER)) == 0 &&
	    (rc = audit_member(store, "team create", member_name(store))) == 0 &&
	    (rc = exec(store, pg->conn, "creating the team key",
	               "UPDATE store_state SET key_generation = 1; COMMIT")) == 0) {
		memcpy(store->key.key, team_key, sizeof(team_key));
		store->key.have = true;
		pg->key_gen = 1;
	}
	OPENSSL_cleanse(team_key, sizeof(team_key));
	if (rc < 0)
		PQclear(PQexec(pg->conn, "ROLLBACK"));
	return rc;
}

static int pg_new_key(struct enr_store *store)
{
	int rc;

	if (store->key.have)
		return 0;
	if ((rc = conn_ready(store)) < 0)
		return rc;
	rc = fetch_team_key(store);
	return rc == ENR_E_NOTFOUND ? create_team(store) : rc;
}

/* ---- reading ---- */

static char *aad_record(const char *id, int gen)
{
	return enr_util_printf("derenroll record %s %d", id, gen);
}

static char *aad_secret(const char *name, int gen)
{
	return enr_util_printf("derenroll secret %s %d", name, gen);
}

/* Unseals a value sealed under team key generation `gen` (the key fetched again if rotated). */
static int unseal_value(struct enr_store *store, unsigned char **out, size_t *len, char *aad,
                        int gen, const unsigned char *sealed, size_t n)
{
	int rc = 0;

	if (!aad)
		return ENR_E_NOMEM;
	if (!store->key.have || gen != store->pg->key_gen) {
		store->key.have = false;
		if ((rc = fetch_team_key(store)) == ENR_E_NOTFOUND)
			rc = enr_error_set(
			    ENR_E_STORE,
			    "%s is not a member of the team store %s: a member adds you "
			    "with `derenroll team add %s`",
			    member_name(store), store->path, member_name(store));
	}
	if (rc == 0 && gen != store->pg->key_gen)
		rc = enr_error_set(ENR_E_CORRUPT,
		                   "a value of the team store %s is sealed under a team "
		                   "key no member holds",
		                   store->path);
	if (rc == 0)
		rc = enr_store__unseal(out, len, store->key.key, aad, sealed, n);
	free(aad);
	return rc;
}

/* The ids as a JSON array of strings, NUL-terminated (`b->failed` without memory). */
static void json_ids(struct store_buf *b, const struct enr_site *sites, const char *const *ids,
                     size_t n)
{
	enr_store__buf_add(b, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (i)
			enr_store__buf_add(b, ",", 1);
		enr_store__buf_json(b, sites ? sites[i].id : ids[i]);
	}
	enr_store__buf_add(b, "]", 2); /* the NUL too */
}

/*
 * What a read of records selects: the id, the public part, the sealed
 * credentials, their key generation and seq (insertion order). A listing that
 * needs no more than the columns of schema 4's records_listing index
 * (enr_store_options.columns_only) selects those in place of the public part,
 * for column_record(), and the server reads the index alone.
 */
#define RECORD_COLUMNS   "id, public, secret, key_generation, seq"
#define METADATA_COLUMNS "id, public, NULL, key_generation, seq"
#define LISTING_TAIL                                                                               \
	"customer, vendor, method, access_expires_at, refresh_expires_at, last_check_outcome, "    \
	"refreshable"
#define LISTING_COLUMNS "id, NULL, NULL, 0, seq, " LISTING_TAIL

/* Text column `col` into `*out` (left NULL for SQL NULL); false without memory. */
static bool take_text(char **out, const PGresult *res, int i, int col)
{
	if (PQgetisnull(res, i, col))
		return true;
	return (*out = enr_util_strdup(PQgetvalue(res, i, col))) != NULL;
}

/* A record from LISTING_COLUMNS alone: what enr_status_of() and a listing's
 * table need, without parsing its public part. */
static int column_record(struct enr_record **out, const PGresult *res, int i)
{
	struct enr_record *rec = NULL;
	int rc = enr_record_new(&rec);

	if (rc == 0 && !(take_text(&rec->id, res, i, 0) && take_text(&rec->customer, res, i, 5) &&
	                 take_text(&rec->vendor, res, i, 6) && take_text(&rec->method, res, i, 7)))
		rc = enr_error_set(ENR_E_NOMEM, NULL);
	if (rc == 0) {
		rec->access_expires_at = get_ll(res, i, 8);
		rec->refresh_expires_at = get_ll(res, i, 9);
		rec->cred.refreshable = PQgetvalue(res, i, 11)[0] == 't';
		if (!PQgetisnull(res, i, 10) &&
		    enr_record_outcome_parse(&rec->last_check.outcome, PQgetvalue(res, i, 10)) < 0)
			rc = enr_error_set(ENR_E_CORRUPT, "record %s of the team store: %s",
			                   rec->id, enr_error_last());
	}
	if (rc < 0) {
		enr_record_free(rec);
		return rc;
	}
	*out = rec;
	return 0;
}

/* A record from RECORD_COLUMNS (or LISTING_COLUMNS), its public part parsed
 * with `tok` (reset here; NULL: one of its own). */
static int row_record(struct enr_store *store, struct enr_record **out, const PGresult *res, int i,
                      struct json_tokener *tok)
{
	struct enr_record *rec = NULL;
	struct json_object *obj = NULL, *sec = NULL;
	unsigned char *sealed = NULL, *plain = NULL;
	size_t n = 0, plain_len = 0;
	int rc;

	*out = NULL;
	if (store->columns_only)
		return column_record(out, res, i);
	if (tok) {
		json_tokener_reset(tok);
		obj = json_tokener_parse_ex(tok, PQgetvalue(res, i, 1), PQgetlength(res, i, 1) + 1);
	} else {
		obj = json_tokener_parse(PQgetvalue(res, i, 1));
	}
	if (!obj)
		return enr_error_set(ENR_E_CORRUPT, "record %s of the team store is not JSON",
		                     PQgetvalue(res, i, 0));
	if ((rc = enr_record_new(&rec)) == 0)
		rc = enr_store__record_read(rec, obj);
	if (rc == 0 && !store->metadata_only && (sealed = get_bytes(res, i, 2, &n)) != NULL) {
		rc = unseal_value(store, &plain, &plain_len,
		                  aad_record(rec->id, (int)get_ll(res, i, 3)),
		                  (int)get_ll(res, i, 3), sealed, n);
		if (rc == 0 && !(sec = json_tokener_parse((char *)plain)))
			rc = enr_error_set(ENR_E_CORRUPT,
			                   "the credentials of record %s are not JSON", rec->id);
		if (rc == 0)
			rc = enr_store__record_read_secrets(rec, sec);
	}
	if (sec) {
		enr_store__json_wipe(sec);
		json_object_put(sec);
	}
	if (plain)
		OPENSSL_clear_free(plain, plain_len + 1);
	PQfreemem(sealed);
	json_object_put(obj);
	if (rc < 0) {
		enr_record_free(rec);
		return rc;
	}
	*out = rec;
	return 0;
}

static ssize_t index_of(const struct store_data *d, const char *id)
{
	for (size_t i = 0; i < d->n_records; i++)
		if (strcmp(d->records[i]->id, id) == 0)
			return (ssize_t)i;
	return -1;
}

static void drop_at(struct store_data *d, size_t i)
{
	enr_record_free(d->records[i]);
	memmove(&d->records[i], &d->records[i + 1], (d->n_records - i - 1) * sizeof(*d->records));
	d->n_records--;
	enr_store__data_changed(d);
}

static int read_secrets(struct enr_store *store, struct store_data *d)
{
	PGresult *res = run(store, store->pg->conn, "reading the app secrets",
	                    "SELECT name, secret, key_generation FROM app_secrets ORDER BY name "
	                    "COLLATE \"C\"",
	                    0, NULL, NULL, NULL);
	int rc = res ? 0 : enr_error_last_code();

	for (size_t i = 0; i < d->n_secrets; i++) {
		free(d->secrets[i].name);
		enr_util_free_secret(d->secrets[i].value);
	}
	d->n_secrets = 0;
	if (rc == 0 && PQntuples(res) > 0) {
		struct store_secret *grown =
		    realloc(d->secrets, (size_t)PQntuples(res) * sizeof(*d->secrets));
		if (!grown)
			rc = enr_error_set(ENR_E_NOMEM, NULL);
		else
			d->secrets = grown;
	}
	for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
		const char *name = PQgetvalue(res, i, 0);
		unsigned char *sealed, *plain = NULL;
		size_t n, plain_len = 0;
		int gen = (int)get_ll(res, i, 2);

		sealed = get_bytes(res, i, 1, &n);
		rc = sealed ? unseal_value(store, &plain, &plain_len, aad_secret(name, gen), gen,
		                           sealed, n)
		            : ENR_E_NOMEM;
		PQfreemem(sealed);
		if (rc < 0)
			break;
		d->secrets[d->n_secrets].name = enr_util_strdup(name);
		d->secrets[d->n_secrets].value = (char *)plain;
		if (!d->secrets[d->n_secrets].name) {
			OPENSSL_clear_free(plain, plain_len + 1);
			rc = ENR_E_NOMEM;
			break;
		}
		d->n_secrets++;
	}
	PQclear(res);
	return rc;
}

/*
 * What may need a person before $2 (enr_store_options.due_before): a superset
 * that the caller narrows (lifecycle.c knows the vendors): the authorization
 * runs out, a token that cannot be renewed runs out (or there is no refresh
 * token at all), or the last check did not end well.
 */
/* What may be due by $2 (schema 2's due_at, indexed); the client narrows it. */
#define DUE_BEFORE_2 "due_at <= $2::bigint"

struct row_job {
	struct enr_store *store;
	const PGresult *res;
	const int *order; /* the row of each record */
	struct enr_record **out;
	size_t first, count;
	int rc;
	char message[512];
};

static void read_rows(void *arg, size_t half)
{
	struct row_job *job = (struct row_job *)arg + half;
	struct json_tokener *tok = json_tokener_new();

	job->rc = tok ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = job->first; job->rc == 0 && i < job->first + job->count; i++)
		job->rc = row_record(job->store, &job->out[i], job->res, job->order[i], tok);
	if (tok)
		json_tokener_free(tok);
	if (job->rc < 0)
		snprintf(job->message, sizeof(job->message), "%s", enr_error_last());
}

struct seq_row {
	long long seq;
	int row;
};

static int by_seq(const void *a, const void *b)
{
	const struct seq_row *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The rows of `res` in the order of column `col` (seq): the order of
 * insertion, sorted here rather than by the server, which would sort the wide
 * rows (spilling them to disk beyond work_mem) before it sends the first. */
static int *rows_by_seq(const PGresult *res, int col)
{
	size_t n = (size_t)PQntuples(res);
	struct seq_row *keys = malloc((n ? n : 1) * sizeof(*keys));
	int *order = malloc((n ? n : 1) * sizeof(*order));

	if (!keys || !order) {
		free(keys);
		free(order);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		keys[i].seq = strtoll(PQgetvalue(res, (int)i, col), NULL, 10);
		keys[i].row = (int)i;
	}
	qsort(keys, n, sizeof(*keys), by_seq);
	for (size_t i = 0; i < n; i++)
		order[i] = keys[i].row;
	free(keys);
	return order;
}

/* Every row of `res` into the empty `d`, in the order of insertion (column 4,
 * seq), on two threads for many. */
static int read_all_rows(struct enr_store *store, struct store_data *d, const PGresult *res)
{
	size_t n = (size_t)PQntuples(res);
	struct row_job jobs[2] = {{.store = store, .res = res}, {.store = store, .res = res}};
	int *order = rows_by_seq(res, 4);
	int rc = 0;

	if (!order)
		return enr_error_set(ENR_E_NOMEM, NULL);
	jobs[0].order = jobs[1].order = order;
	free(d->records); /* empty, but perhaps allocated (a store still at revision 0) */
	d->records = calloc(n ? n : 1, sizeof(*d->records));
	d->cap_records = d->records ? (n ? n : 1) : 0;
	if (!d->records) {
		free(order);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	jobs[0].out = jobs[1].out = d->records;
	/* Unsealing credentials may fetch the team key on the one connection:
	 * two threads only for a listing, and only for parsing (columns are quick). */
	if (store->metadata_only && !store->columns_only)
		enr_store__halves(n, &jobs[0].first, &jobs[0].count, &jobs[1].first,
		                  &jobs[1].count);
	else
		jobs[0].count = n;
	enr_store__run_halves(read_rows, jobs, jobs[1].count > 0);
	rc = enr_store__halves_done(d, n, (int[]){jobs[0].rc, jobs[1].rc},
	                            (const char *const[]){jobs[0].message, jobs[1].message});
	free(order);
	if (rc == 0)
		enr_store__data_changed(d);
	return rc;
}

/* The ids of the records `d` holds, as a JSON array (NULL without memory). */
static char *held_ids(const struct store_data *d)
{
	struct store_buf b = {0};
	const char **ids = malloc((d->n_records ? d->n_records : 1) * sizeof(*ids));

	for (size_t i = 0; ids && i < d->n_records; i++)
		ids[i] = d->records[i]->id;
	if (ids)
		json_ids(&b, NULL, ids, d->n_records);
	free(ids);
	if (!ids || b.failed) {
		enr_store__buf_free(&b);
		return NULL;
	}
	return b.data;
}

/* Applies what changed after revision `since` to `d`; `since` 0 reads everything.
 * A store opened on demand catches up only the records it holds. */
static int read_changes(struct enr_store *store, struct store_data *d, long long since)
{
	char sincebuf[32], duebuf[32], *held = NULL;
	const char *params[] = {sincebuf, duebuf};
	PGresult *res;
	int rc = 0;

	snprintf(sincebuf, sizeof(sincebuf), "%lld", since);
	snprintf(duebuf, sizeof(duebuf), "%lld", store->due_before);
	if (since > 0) {
		res = run(store, store->pg->conn, "reading what was removed",
		          "SELECT id FROM removed WHERE rev > $1", 1, params, NULL, NULL);
		if (!res)
			return enr_error_last_code();
		for (int i = 0; i < PQntuples(res); i++) {
			ssize_t at = index_of(d, PQgetvalue(res, i, 0));
			if (at >= 0)
				drop_at(d, (size_t)at);
		}
		PQclear(res);
	}
	/* A whole read is sorted by seq here (read_all_rows()); a catch-up is short. */
	if (since > 0 && store->on_demand) {
		if (!(held = held_ids(d)))
			return enr_error_set(ENR_E_NOMEM, NULL);
		params[1] = held;
		res = run(store, store->pg->conn, "reading its records",
		          "SELECT " RECORD_COLUMNS " FROM records WHERE rev > $1 "
		          "AND id IN (SELECT jsonb_array_elements_text($2::jsonb)) ORDER BY seq",
		          2, params, NULL, NULL);
		free(held);
	} else {
		/* A whole read says no `rev > 0` (true of every row: a bitmap of them all)
		 * and no ORDER BY (read_all_rows() sorts); a listing may be narrowed to
		 * what may be due. */
		bool due = since == 0 && store->metadata_only && store->due_before;
		char *sql = enr_util_printf("SELECT %s FROM records %s",
		                            store->columns_only    ? LISTING_COLUMNS
		                            : store->metadata_only ? METADATA_COLUMNS
		                                                   : RECORD_COLUMNS,
		                            since > 0 ? "WHERE rev > $1 ORDER BY seq"
		                            : due     ? "WHERE $1::bigint = 0 AND " DUE_BEFORE_2
		                                      : "");
		if (!sql)
			return enr_error_set(ENR_E_NOMEM, NULL);
		res = run(store, store->pg->conn, "reading its records", sql,
		          since > 0 ? 1
		          : due     ? 2
		                    : 0,
		          params, NULL, NULL);
		free(sql);
	}
	if (!res)
		return enr_error_last_code();
	if (since == 0 && d->n_records == 0) {
		rc = read_all_rows(store, d, res);
		PQclear(res);
		return rc == 0 && !store->metadata_only ? read_secrets(store, d) : rc;
	}
	for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
		struct enr_record *rec;
		ssize_t at;

		if ((rc = row_record(store, &rec, res, i, NULL)) < 0)
			break;
		/* A whole read has each record once; a catch-up replaces what it knew. */
		at = since > 0 ? index_of(d, rec->id) : -1;
		if (at >= 0) {
			enr_record_free(d->records[at]);
			d->records[at] = rec;
			enr_store__data_changed(d); /* its sites may have changed */
		} else {
			rc = enr_store__data_append(d, rec);
		}
	}
	PQclear(res);
	if (rc == 0 && !store->metadata_only)
		rc = read_secrets(store, d);
	return rc;
}

/* The records `w` names that `store->data` does not hold yet, read into it (on demand). */
static int pg_fetch(struct enr_store *store, const struct store_want *w)
{
	struct store_data *d = &store->data;
	struct store_buf ids = {0}, sites = {0};
	const char **missing = malloc((w->n_ids ? w->n_ids : 1) * sizeof(*missing));
	size_t n_missing = 0, n_sites = w->vendor ? w->n_sites : 0;
	PGresult *res = NULL;
	int rc = missing ? 0 : enr_error_set(ENR_E_NOMEM, NULL);

	/* A record it holds is kept up to date by every reload: not read again. */
	for (size_t i = 0; rc == 0 && i < w->n_ids; i++)
		if (enr_store__index_id(&store->index, d, w->ids[i]) < 0)
			missing[n_missing++] = w->ids[i];
	if (rc == 0 && (n_missing || n_sites)) {
		json_ids(&ids, NULL, missing, n_missing);
		json_ids(&sites, w->sites, NULL, n_sites);
		rc = ids.failed || sites.failed ? enr_error_set(ENR_E_NOMEM, NULL)
		                                : conn_ready(store);
		if (rc == 0) {
			const char *params[] = {ids.data, w->vendor ? w->vendor : "", sites.data};
			res = run(
			    store, store->pg->conn, "reading a record",
			    "SELECT " RECORD_COLUMNS " FROM records WHERE "
			    "id IN (SELECT lower(x) FROM jsonb_array_elements_text($1::jsonb) x) "
			    "OR (vendor = $2 AND site_ids && ARRAY(SELECT "
			    "jsonb_array_elements_text($3::jsonb))) ORDER BY seq",
			    3, params, NULL, NULL);
			rc = res ? 0 : enr_error_last_code();
		}
	}
	for (int i = 0; rc == 0 && res && i < PQntuples(res); i++) {
		struct enr_record *rec;
		if (index_of(d, PQgetvalue(res, i, 0)) >= 0)
			continue;
		if ((rc = row_record(store, &rec, res, i, NULL)) == 0)
			rc = enr_store__data_append(d, rec);
	}
	PQclear(res);
	free(missing);
	enr_store__buf_free(&ids);
	enr_store__buf_free(&sites);
	return rc;
}

static int current_rev(struct enr_store *store, long long *out)
{
	PGresult *res = run(store, store->pg->conn, "reading its revision",
	                    "SELECT rev FROM store_state", 0, NULL, NULL, NULL);

	if (!res)
		return enr_error_last_code();
	*out = get_ll(res, 0, 0);
	PQclear(res);
	return 0;
}

static int pg_load(struct enr_store *store)
{
	struct store_data d = {0};
	long long rev;
	int rc;

	if ((rc = conn_ready(store)) < 0 || (rc = ensure_schema(store)) < 0 ||
	    (rc = current_rev(store, &rev)) < 0)
		return rc;
	d.schema = STORE_SCHEMA;
	/* On demand: no record until one is asked for; the app secrets now. */
	if ((rc = store->on_demand ? read_secrets(store, &d) : read_changes(store, &d, 0)) < 0) {
		enr_store__data_free(&d);
		return rc;
	}
	enr_store__data_free(&store->data);
	store->data = d;
	enr_store__data_changed(&store->data);
	store->pg->rev = rev;
	return 0;
}

static int pg_sync(struct enr_store *store, bool locked)
{
	long long rev;
	int rc;

	if (locked)
		rev = store->pg->locked_rev;
	else if ((rc = conn_ready(store)) < 0 || (rc = current_rev(store, &rev)) < 0)
		return rc;
	if (rev == store->pg->rev)
		return 0;
	if ((rc = read_changes(store, &store->data, store->pg->rev)) < 0)
		return rc;
	store->pg->rev = rev;
	return 0;
}

/* ---- writing ---- */

static int pg_lock(struct enr_store *store)
{
	struct store_pg *pg = store->pg;
	PGresult *res;
	int rc, gen = 0;

	if (pg->in_tx)
		return enr_error_set(ENR_E_USAGE, "the team store is already locked");
	if ((rc = conn_ready(store)) < 0 ||
	    (rc = exec(store, pg->conn, "starting a change", "BEGIN")) < 0)
		return rc;
	pg->in_tx = true;
	res = run(store, pg->conn, "locking the store",
	          "SELECT rev, key_generation FROM store_state FOR UPDATE", 0, NULL, NULL, NULL);
	rc = res ? 0 : enr_error_last_code();
	if (rc == 0) {
		pg->locked_rev = get_ll(res, 0, 0);
		gen = (int)get_ll(res, 0, 1);
	}
	PQclear(res);
	/* The team key rotated (a member was removed) since this handle read it: what
	 * it writes now is sealed under the new key, which the one removed never saw. */
	if (rc == 0 && store->key.have && gen != pg->key_gen) {
		store->key.have = false;
		if ((rc = fetch_team_key(store)) == ENR_E_NOTFOUND)
			rc = enr_error_set(ENR_E_PERM,
			                   "%s is no longer a member of the team store %s: nothing "
			                   "more is saved",
			                   member_name(store), store->path);
		else if (rc == 0 && pg->key_gen != gen)
			rc = enr_error_set(
			    ENR_E_CORRUPT,
			    "the team store %s is at key generation %d, and %s holds %d",
			    store->path, gen, member_name(store), pg->key_gen);
	}
	if (rc < 0) {
		PQclear(PQexec(pg->conn, "ROLLBACK"));
		pg->in_tx = false;
	}
	return rc;
}

static void pg_unlock(struct enr_store *store)
{
	if (!store->pg->in_tx)
		return;
	PQclear(PQexec(store->pg->conn, "ROLLBACK"));
	store->pg->in_tx = false;
}

#define UPSERT_RECORD                                                                              \
	"INSERT INTO records (id, customer, vendor, method, account, region, site_ids, "           \
	"created_at, updated_at, access_expires_at, refresh_expires_at, last_check_at, "           \
	"last_check_outcome, public, secret, key_generation, rev, refreshable) VALUES ($1, $2, "   \
	"$3, "                                                                                     \
	"$4, $5, $6, ARRAY(SELECT jsonb_array_elements_text($7::jsonb)), $8, $9, $10, $11, $12, "  \
	"$13, $14, $15, $16, $17, $18) ON CONFLICT (id) DO UPDATE SET customer = $2, vendor = "    \
	"$3, "                                                                                     \
	"method = $4, account = $5, region = $6, site_ids = EXCLUDED.site_ids, updated_at = $9, "  \
	"access_expires_at = $10, refresh_expires_at = $11, last_check_at = $12, "                 \
	"last_check_outcome = $13, public = $14, secret = $15, key_generation = $16, rev = $17, "  \
	"refreshable = $18 RETURNING (xmax = 0)"

/* Writes one record as revision `rev`; *inserted tells whether it is new. */
static int write_record(struct enr_store *store, const struct enr_record *rec, long long rev,
                        bool *inserted)
{
	struct store_buf pub = {0}, sec = {0}, sites = {0};
	unsigned char *sealed = NULL;
	size_t sealed_len = 0;
	char num[6][24], gen[16], revbuf[24], *aad = aad_record(rec->id, store->pg->key_gen);
	PGresult *res = NULL;
	int rc;

	enr_store__record_write(&pub, rec, PART_PUBLIC);
	enr_store__record_write(&sec, rec, PART_SECRETS);
	json_ids(&sites, rec->sites, NULL, rec->n_sites);
	enr_store__buf_add(&pub, "", 1);
	rc = pub.failed || sec.failed || sites.failed || !aad
	         ? enr_error_set(ENR_E_NOMEM, NULL)
	         : enr_store__seal(&sealed, &sealed_len, store->key.key, aad, sec.data, sec.len);
	if (rc == 0) {
		const long long times[6] = {rec->created_at,        rec->updated_at,
		                            rec->access_expires_at, rec->refresh_expires_at,
		                            rec->last_check.at,     0};
		for (int i = 0; i < 5; i++)
			snprintf(num[i], sizeof(num[i]), "%lld", times[i]);
		snprintf(gen, sizeof(gen), "%d", store->pg->key_gen);
		snprintf(revbuf, sizeof(revbuf), "%lld", rev);
		const char *outcome = enr_record_outcome_name(rec->last_check.outcome);
		const char *values[18] = {
		    rec->id,
		    rec->customer,
		    rec->vendor,
		    rec->method,
		    rec->account,
		    rec->region,
		    sites.data,
		    num[0],
		    num[1],
		    num[2],
		    num[3],
		    num[4],
		    outcome[0] ? outcome : NULL,
		    pub.data,
		    (char *)sealed,
		    gen,
		    revbuf,
		    rec->cred.tokens.refresh_token && rec->cred.tokens.refresh_token[0] ? "true"
		                                                                        : "false"};
		int lengths[18] = {0}, binary[18] = {0};
		lengths[14] = (int)sealed_len;
		binary[14] = 1;
		res = run(store, store->pg->conn, "saving a record", UPSERT_RECORD, 18, values,
		          lengths, binary);
		rc = res ? 0 : enr_error_last_code();
		if (rc == 0)
			*inserted = PQgetvalue(res, 0, 0)[0] == 't';
	}
	PQclear(res);
	free(sealed);
	free(aad);
	enr_store__buf_free(&pub);
	enr_store__buf_free(&sec);
	enr_store__buf_free(&sites);
	return rc;
}

static int write_secret(struct enr_store *store, const struct store_secret *s)
{
	unsigned char *sealed = NULL;
	size_t n = 0;
	char gen[16], *aad = aad_secret(s->name, store->pg->key_gen);
	PGresult *res = NULL;
	int rc = aad ? enr_store__seal(&sealed, &n, store->key.key, aad, s->value, strlen(s->value))
	             : ENR_E_NOMEM;

	snprintf(gen, sizeof(gen), "%d", store->pg->key_gen);
	if (rc == 0) {
		const char *values[] = {s->name, (char *)sealed, gen};
		const int lengths[] = {0, (int)n, 0}, binary[] = {0, 1, 0};
		res = run(
		    store, store->pg->conn, "saving an app secret",
		    "INSERT INTO app_secrets (name, secret, key_generation) VALUES ($1, $2, $3) "
		    "ON CONFLICT (name) DO UPDATE SET secret = $2, key_generation = $3",
		    3, values, lengths, binary);
		rc = res ? 0 : enr_error_last_code();
	}
	PQclear(res);
	free(sealed);
	free(aad);
	return rc == 0 ? audit(store, "secret set", NULL) : rc;
}

static int delete_record(struct enr_store *store, const char *id, const char *revbuf)
{
	const char *params[] = {id, revbuf};
	PGresult *res = run(store, store->pg->conn, "removing a record",
	                    "DELETE FROM records WHERE id = $1; ", 1, params, NULL, NULL);

	PQclear(res);
	if (!res)
		return enr_error_last_code();
	res = run(store, store->pg->conn, "removing a record",
	          "INSERT INTO removed (id, rev) VALUES ($1, $2)", 2, params, NULL, NULL);
	PQclear(res);
	return res ? audit(store, "remove", id) : enr_error_last_code();
}

/* App secrets: copied by value, so a changed one has another value pointer. */
static int write_secrets_diff(struct enr_store *store, const struct store_data *next)
{
	const struct store_data *old = &store->data;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < old->n_secrets; i++) {
		bool kept = false;
		for (size_t j = 0; j < next->n_secrets && !kept; j++)
			kept = strcmp(next->secrets[j].name, old->secrets[i].name) == 0;
		if (!kept) {
			const char *params[] = {old->secrets[i].name};
			PGresult *res =
			    run(store, store->pg->conn, "removing an app secret",
			        "DELETE FROM app_secrets WHERE name = $1", 1, params, NULL, NULL);
			PQclear(res);
			rc = res ? audit(store, "secret remove", NULL) : enr_error_last_code();
		}
	}
	for (size_t i = 0; rc == 0 && i < next->n_secrets; i++) {
		bool same = false;
		for (size_t j = 0; j < old->n_secrets && !same; j++)
			same = old->secrets[j].value == next->secrets[i].value;
		if (!same)
			rc = write_secret(store, &next->secrets[i]);
	}
	return rc;
}

/*
 * Writes what differs between store->data and `next`. Records are replaced,
 * never edited, and every change keeps the others in their order (a put
 * replaces in place or appends, a remove closes the gap): one walk of both.
 */
static int write_diff(struct enr_store *store, const struct store_data *next, long long rev)
{
	const struct store_data *old = &store->data;
	size_t i = 0, j = 0;
	char revbuf[24];
	int rc = 0;

	snprintf(revbuf, sizeof(revbuf), "%lld", rev);
	while (rc == 0 && (i < old->n_records || j < next->n_records)) {
		const struct enr_record *was = i < old->n_records ? old->records[i] : NULL;
		const struct enr_record *now = j < next->n_records ? next->records[j] : NULL;
		bool inserted = false;

		if (was && was == now) {
			i++;
			j++;
		} else if (now && (!was || strcmp(was->id, now->id) == 0)) {
			/* Replaced in place, or new at the end. */
			if ((rc = write_record(store, now, rev, &inserted)) == 0)
				rc = audit_record(store, inserted ? "add" : "update", now);
			i += was != NULL;
			j++;
		} else {
			rc = delete_record(store, was->id, revbuf);
			i++;
		}
	}
	return rc == 0 ? write_secrets_diff(store, next) : rc;
}

/* Under the lock: stamps revision locked_rev + 1, then commits. */
static int commit_rev(struct enr_store *store, long long rev)
{
	char sql[96];
	int rc;

	snprintf(sql, sizeof(sql), "UPDATE store_state SET rev = %lld", rev);
	if ((rc = exec(store, store->pg->conn, "saving", sql)) < 0 ||
	    (rc = exec(store, store->pg->conn, "saving", "COMMIT")) < 0)
		return rc;
	store->pg->in_tx = false;
	return 0;
}

static int pg_write(struct enr_store *store, struct store_data *next)
{
	long long rev = store->pg->locked_rev + 1;
	int rc;

	if (!store->key.have && (rc = pg_new_key(store)) < 0)
		return rc;
	if ((rc = write_diff(store, next, rev)) < 0 || (rc = commit_rev(store, rev)) < 0)
		return rc;
	store->pg->rev = rev;
	return 0;
}

static int pg_journal(struct enr_store *store, struct enr_record *rec, bool sync)
{
	struct store_pg *pg = store->pg;
	struct enr_record *copy = NULL;
	bool inserted = false;
	ssize_t at;
	int rc;

	(void)sync; /* a commit is durable */
	if ((rc = pg_lock(store)) < 0)
		return rc;
	if ((rc = write_record(store, rec, pg->locked_rev + 1, &inserted)) == 0 && inserted)
		rc = enr_error_set(ENR_E_NOTFOUND, "record %s is no longer in the store", rec->id);
	if (rc == 0 && (rc = audit_record(store, "save tokens", rec)) == 0)
		rc = commit_rev(store, pg->locked_rev + 1);
	pg_unlock(store);
	if (rc < 0)
		return rc;
	/* What this handle knows: the record as saved, and the revision if nothing came between. */
	if (pg->rev == pg->locked_rev)
		pg->rev = pg->locked_rev + 1;
	/* The same id and sites, other tokens: no change the index must know of. */
	at = enr_store__index_id(&store->index, &store->data, rec->id);
	if (at >= 0 && enr_record_dup(&copy, rec) == 0) {
		enr_record_free(store->data.records[at]);
		store->data.records[at] = copy;
	}
	return 0;
}

static int pg_sync_journal(struct enr_store *store)
{
	(void)store;
	return 0;
}

static int pg_reserve(struct enr_store *store, const char *const *ids, size_t n)
{
	(void)store;
	(void)ids;
	(void)n;
	return 0; /* nothing is written on this machine */
}

static bool pg_encrypted(const struct enr_store *store)
{
	(void)store;
	return true;
}

/* ---- record locks ---- */

static int pg_lock_record(struct enr_store *store, const char *id)
{
	struct store_pg *pg = store->pg;
	const char *params[] = {id};
	PGresult *res;
	int slot = -1, rc;

	for (int i = 0; i < MAX_LOCKS && slot < 0; i++)
		if (!pg->busy[i])
			slot = i;
	if (slot < 0)
		return enr_error_set(ENR_E_USAGE, "too many records locked at once");
	/* Records written before their lock row existed get one (nothing else deletes them).
	 * An idle connection the server dropped (a restart) is made again, once. */
	for (int attempt = 0;; attempt++) {
		if (pg->pool[slot] && PQstatus(pg->pool[slot]) != CONNECTION_OK) {
			PQfinish(pg->pool[slot]);
			pg->pool[slot] = NULL;
		}
		if (!pg->pool[slot] && (rc = connect_one(store, &pg->pool[slot])) < 0)
			return rc;
		res = run(store, pg->pool[slot], "locking a record",
		          "INSERT INTO record_locks (id) VALUES ($1) ON CONFLICT DO NOTHING", 1,
		          params, NULL, NULL);
		if (res || attempt > 0 || PQstatus(pg->pool[slot]) == CONNECTION_OK)
			break;
	}
	PQclear(res);
	if (!res || (rc = exec(store, pg->pool[slot], "locking a record", "BEGIN")) < 0)
		return enr_error_last_code();
	res = PQexecParams(pg->pool[slot],
	                   store->skip_locked
	                       ? "SELECT id FROM record_locks WHERE id = $1 FOR UPDATE SKIP LOCKED"
	                       : "SELECT id FROM record_locks WHERE id = $1 FOR UPDATE",
	                   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0) {
		/* SKIP LOCKED: another holds it (its row exists: inserted above). */
		PQclear(res);
		PQclear(PQexec(pg->pool[slot], "ROLLBACK"));
		return enr_error_set(ENR_E_AGAIN, "record %s is being changed by another process",
		                     id);
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		rc = state && strcmp(state, "55P03") == 0
		         ? enr_error_set(ENR_E_LOCKED,
		                         "record %s is being changed by another process (waited %d "
		                         "s); try again when it is done",
		                         id, (store->lock_timeout_ms + 999) / 1000)
		         : sql_error(store, pg->pool[slot], res, "locking a record");
		PQclear(res);
		PQclear(PQexec(pg->pool[slot], "ROLLBACK"));
		return rc;
	}
	PQclear(res);
	pg->busy[slot] = true;
	return slot;
}

static void pg_unlock_record(struct enr_store *store, int slot)
{
	struct store_pg *pg = store->pg;

	if (slot < 0 || slot >= MAX_LOCKS || !pg->busy[slot])
		return;
	PQclear(PQexec(pg->pool[slot], "ROLLBACK"));
	pg->busy[slot] = false;
}

static void pg_close(struct enr_store *store)
{
	struct store_pg *pg = store->pg;

	if (!pg)
		return;
	for (int i = 0; i < MAX_LOCKS; i++)
		PQfinish(pg->pool[i]);
	PQfinish(pg->conn);
	enr_util_free_secret(pg->url);
	free(pg->member);
	free(pg);
	store->pg = NULL;
}

const struct store_ops enr_store__pg_ops = {
    .load = pg_load,
    .sync = pg_sync,
    .lock = pg_lock,
    .unlock = pg_unlock,
    .write = pg_write,
    .lock_record = pg_lock_record,
    .unlock_record = pg_unlock_record,
    .journal = pg_journal,
    .sync_journal = pg_sync_journal,
    .reserve = pg_reserve,
    .encrypted = pg_encrypted,
    .fetch = pg_fetch,
    .new_key = pg_new_key,
    .close = pg_close,
};

/* ---- pages, for the enrolled systems screen ---- */

static int team_only(const struct enr_store *store);

#define PAGE_KEY "coalesce(due_at, 9223372036854775807)"
/* LISTING_COLUMNS with the page key in place of seq: a page's rows are what a
 * listing's are (column_record()). */
#define PAGE_SELECT "SELECT id, NULL, NULL, 0, " PAGE_KEY ", " LISTING_TAIL " FROM records WHERE "
#define PAGE_ORDER  " ORDER BY " PAGE_KEY ", id LIMIT $1::bigint"
/* The records that hold parameter P (enr_store_cursor.match), or every one for "". */
#define MATCHES(P)                                                                                 \
	"(" P "::text = '' OR strpos(lower(id), lower(" P ")) > 0 OR strpos(lower(customer), "     \
	"lower(" P ")) > 0 OR strpos(lower(vendor), lower(" P ")) > 0 OR strpos(lower(method), "   \
	"lower(" P ")) > 0)"

int enr_store_team_page(struct enr_store *store, struct enr_store_cursor *cur, size_t max,
                        struct enr_record ***out, size_t *n)
{
	char due[24], limit[24];
	const char *params[] = {limit, cur->match, due, cur->id};
	struct enr_record **recs;
	PGresult *res;
	int rc = 0, rows;

	*out = NULL;
	*n = 0;
	if ((rc = team_only(store)) < 0)
		return rc;
	if (cur->done || max == 0)
		return 0;
	if ((rc = conn_ready(store)) < 0)
		return rc;
	snprintf(limit, sizeof(limit), "%zu", max);
	snprintf(due, sizeof(due), "%lld", cur->due);
	res = run(store, store->pg->conn, "reading a page of its records",
	          cur->started ? PAGE_SELECT
	              "(" PAGE_KEY ", id) > ($3::bigint, $4::text) AND " MATCHES("$2") PAGE_ORDER
	                       : PAGE_SELECT MATCHES("$2") PAGE_ORDER,
	          cur->started ? 4 : 2, params, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	rows = PQntuples(res);
	if (!(recs = calloc(rows ? (size_t)rows : 1, sizeof(*recs)))) {
		PQclear(res);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	for (int i = 0; rc == 0 && i < rows; i++)
		rc = column_record(&recs[i], res, i);
	if (rc == 0 && rows > 0) {
		cur->due = get_ll(res, rows - 1, 4);
		snprintf(cur->id, sizeof(cur->id), "%s", PQgetvalue(res, rows - 1, 0));
		cur->started = true;
	}
	if (rc == 0 && (size_t)rows < max)
		cur->done = true;
	PQclear(res);
	if (rc < 0) {
		for (int i = 0; i < rows; i++)
			enr_record_free(recs[i]);
		free(recs);
		return rc;
	}
	*out = recs;
	*n = (size_t)rows;
	return 0;
}

int enr_store_team_count(struct enr_store *store, const char *match, size_t *n)
{
	const char *params[] = {match ? match : ""};
	PGresult *res;
	int rc;

	*n = 0;
	if ((rc = team_only(store)) < 0 || (rc = conn_ready(store)) < 0)
		return rc;
	res = run(store, store->pg->conn, "counting its records",
	          "SELECT count(*) FROM records WHERE " MATCHES("$1"), 1, params, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	*n = (size_t)get_ll(res, 0, 0);
	PQclear(res);
	return 0;
}

/* ---- the team ---- */

static int team_only(const struct enr_store *store)
{
	if (!store->pg)
		return enr_error_set(
		    ENR_E_UNSUPPORTED,
		    "the credential store %s is a file of this machine: members and "
		    "the log are the team store's ([store] url = postgresql://...)",
		    store->path);
	return 0;
}

bool enr_store_is_team(const struct enr_store *store)
{
	return store->pg != NULL;
}

static int check_member_name(const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0 || len > 64 ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") !=
	        len)
		return enr_error_set(
		    ENR_E_USAGE,
		    "'%s' is not a member name (letters, digits, '.', '_', '@', '-'; "
		    "at most 64)",
		    name ? name : "");
	return 0;
}

int enr_store_team_add(struct enr_store *store, const char *name, const char *passphrase)
{
	struct store_pg *pg = store->pg;
	const char *params[] = {name};
	PGresult *res;
	int rc;

	if ((rc = team_only(store)) < 0 || (rc = check_member_name(name)) < 0)
		return rc;
	if (!passphrase || !passphrase[0])
		return enr_error_set(ENR_E_PASSPHRASE, "the new member's passphrase is empty");
	if ((rc = pg_new_key(store)) < 0 || (rc = pg_lock(store)) < 0)
		return rc;
	res = run(store, pg->conn, "adding a member", "SELECT 1 FROM members WHERE name = $1", 1,
	          params, NULL, NULL);
	rc = res ? 0 : enr_error_last_code();
	if (rc == 0 && PQntuples(res) > 0)
		rc = enr_error_set(ENR_E_EXISTS, "%s is already a member of the team store %s",
		                   name, store->path);
	PQclear(res);
	if (rc == 0 &&
	    (rc = member_row(store, name, passphrase, store->key.key, pg->key_gen,
	                     INSERT_MEMBER)) == 0 &&
	    (rc = audit_member(store, "team add", name)) == 0)
		rc = commit_rev(store, pg->locked_rev);
	pg_unlock(store);
	return rc;
}

/* Under the lock, with a new team key in store->key: every sealed value again, every copy. */
static int reseal_all(struct enr_store *store, const char *removed)
{
	struct store_pg *pg = store->pg;
	long long rev = pg->locked_rev + 1;
	const char *params[] = {removed};
	PGresult *res;
	bool inserted;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < store->data.n_records; i++)
		rc = write_record(store, store->data.records[i], rev, &inserted);
	for (size_t i = 0; rc == 0 && i < store->data.n_secrets; i++)
		rc = write_secret(store, &store->data.secrets[i]);
	if (rc < 0)
		return rc;
	res = run(store, pg->conn, "rotating the team key",
	          "SELECT name, public_key FROM members WHERE name <> $1", 1, params, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
		const char *name = PQgetvalue(res, i, 0);
		unsigned char *pub, *wrapped = NULL;
		size_t n, wrapped_len = 0;
		char *aad = aad_team(name, pg->key_gen), gen[16];
		PGresult *up;

		pub = get_bytes(res, i, 1, &n);
		rc = !pub || n != 32 || !aad
		         ? enr_error_set(ENR_E_CORRUPT, "member %s's public key is damaged", name)
		         : enr_store__wrap_team_key(&wrapped, &wrapped_len, store->key.key, pub,
		                                    aad);
		snprintf(gen, sizeof(gen), "%d", pg->key_gen);
		if (rc == 0) {
			const char *values[] = {name, (char *)wrapped, gen};
			const int lengths[] = {0, (int)wrapped_len, 0}, binary[] = {0, 1, 0};
			up = run(
			    store, pg->conn, "rotating the team key",
			    "UPDATE members SET team_key = $2, key_generation = $3 WHERE name = $1",
			    3, values, lengths, binary);
			rc = up ? 0 : enr_error_last_code();
			PQclear(up);
		}
		PQfreemem(pub);
		free(wrapped);
		free(aad);
	}
	PQclear(res);
	return rc;
}

int enr_store_team_remove(struct enr_store *store, const char *name)
{
	struct store_pg *pg = store->pg;
	unsigned char old_key[STORE_KEY_SIZE];
	int old_gen, rc;
	const char *params[] = {name};
	PGresult *res;
	char sql[96];

	if ((rc = team_only(store)) < 0 || (rc = check_member_name(name)) < 0)
		return rc;
	if (store->metadata_only)
		return enr_error_set(ENR_E_USAGE,
		                     "the credential store was opened for listing only");
	if ((rc = pg_new_key(store)) < 0 || (rc = pg_lock(store)) < 0)
		return rc;
	if ((rc = pg_sync(store, true)) < 0)
		goto out;
	res = run(store, pg->conn, "removing a member",
	          "SELECT (SELECT count(*) FROM members WHERE name = $1), count(*) FROM members", 1,
	          params, NULL, NULL);
	rc = res ? 0 : enr_error_last_code();
	if (rc == 0 && get_ll(res, 0, 0) == 0)
		rc = enr_error_set(ENR_E_NOTFOUND, "%s is not a member of the team store %s", name,
		                   store->path);
	else if (rc == 0 && get_ll(res, 0, 1) < 2)
		rc = enr_error_set(
		    ENR_E_USAGE, "%s is the team store's only member: add another one first", name);
	PQclear(res);
	if (rc < 0)
		goto out;
	res = run(store, pg->conn, "removing a member", "DELETE FROM members WHERE name = $1", 1,
	          params, NULL, NULL);
	PQclear(res);
	if (!res) {
		rc = enr_error_last_code();
		goto out;
	}
	/* A new team key that the removed member never saw. */
	memcpy(old_key, store->key.key, sizeof(old_key));
	old_gen = pg->key_gen;
	pg->key_gen++;
	snprintf(sql, sizeof(sql), "UPDATE store_state SET key_generation = %d", pg->key_gen);
	if ((rc = enr_util_random(store->key.key, STORE_KEY_SIZE)) == 0 &&
	    (rc = reseal_all(store, name)) == 0 &&
	    (rc = exec(store, pg->conn, "rotating the team key", sql)) == 0 &&
	    (rc = audit_member(store, "team remove", name)) == 0 &&
	    (rc = commit_rev(store, pg->locked_rev + 1)) == 0)
		pg->rev = pg->locked_rev + 1;
	if (rc < 0) {
		memcpy(store->key.key, old_key, sizeof(old_key));
		pg->key_gen = old_gen;
	}
	OPENSSL_cleanse(old_key, sizeof(old_key));
out:
	pg_unlock(store);
	return rc;
}

int enr_store_team_list(struct enr_team_member **out, size_t *n, struct enr_store *store)
{
	PGresult *res;
	struct enr_team_member *m;
	int rc;

	*out = NULL;
	*n = 0;
	if ((rc = team_only(store)) < 0 || (rc = conn_ready(store)) < 0)
		return rc;
	res = run(store, store->pg->conn, "listing its members",
	          "SELECT name, added_by, extract(epoch FROM added_at)::bigint FROM members "
	          "ORDER BY name",
	          0, NULL, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	m = calloc((size_t)PQntuples(res) + 1, sizeof(*m));
	for (int i = 0; m && i < PQntuples(res); i++) {
		m[i].name = enr_util_strdup(PQgetvalue(res, i, 0));
		m[i].added_by = enr_util_strdup(PQgetvalue(res, i, 1));
		m[i].added_at = get_ll(res, i, 2);
		if (!m[i].name || !m[i].added_by) {
			enr_store_team_list_free(m, (size_t)i + 1);
			m = NULL;
		}
	}
	*n = m ? (size_t)PQntuples(res) : 0;
	PQclear(res);
	if (!m)
		return enr_error_set(ENR_E_NOMEM, NULL);
	*out = m;
	return 0;
}

void enr_store_team_list_free(struct enr_team_member *m, size_t n)
{
	if (!m)
		return;
	for (size_t i = 0; i < n; i++) {
		free(m[i].name);
		free(m[i].added_by);
	}
	free(m);
}

int enr_store_log(struct enr_store *store, const char *id, size_t limit, enr_store_log_fn fn,
                  void *ctx)
{
	char lim[24];
	const char *params[] = {id, lim};
	PGresult *res;
	int rc;

	if ((rc = team_only(store)) < 0 || (rc = conn_ready(store)) < 0)
		return rc;
	snprintf(lim, sizeof(lim), "%zu", limit ? limit : 50);
	/* The newest `limit`, oldest first. */
	res = run(store, store->pg->conn, "reading its log",
	          "SELECT at, member, action, record, result, login FROM (SELECT seq, "
	          "extract(epoch FROM at)::bigint AS at, coalesce(member, db_user) AS member, "
	          "action, record, result, nullif(db_user, coalesce(member, db_user)) AS login "
	          "FROM audit WHERE $1::text IS NULL OR record = lower($1) "
	          "ORDER BY seq DESC LIMIT $2::bigint) newest ORDER BY seq",
	          2, params, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
		struct enr_audit_entry e = {
		    .at = get_ll(res, i, 0),
		    .member = PQgetvalue(res, i, 1),
		    .action = PQgetvalue(res, i, 2),
		    .record = PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
		    .result = PQgetvalue(res, i, 4),
		    .login = PQgetisnull(res, i, 5) ? NULL : PQgetvalue(res, i, 5),
		};
		rc = fn(&e, ctx);
	}
	PQclear(res);
	return rc;
}

/* ---- rate limits shared by every machine ---- */

#define NOW_MS   "(extract(epoch FROM clock_timestamp()) * 1000)"
#define REFILLED "least($2::float8, r.tokens + (" NOW_MS " - r.updated_ms) * $3::float8)"

int enr_store_take_rate(struct enr_store *store, const char *name, double capacity,
                        double per_second, int n, long long *wait_ms)
{
	char cap[32], rate[32], need[32];
	const char *params[] = {name, cap, rate, need};
	PGresult *res;
	double tokens;
	bool granted;
	int rc;

	*wait_ms = 0;
	if (!store->pg)
		return enr_error_set(ENR_E_UNSUPPORTED,
		                     "rate limits are shared by a team store only");
	if (capacity <= 0 || per_second <= 0)
		return 0;
	if ((rc = conn_ready(store)) < 0)
		return rc;
	snprintf(cap, sizeof(cap), "%.17g", capacity);
	snprintf(rate, sizeof(rate), "%.17g", per_second / 1000.0);
	snprintf(need, sizeof(need), "%d", n < 1 ? 1 : (double)n > capacity ? (int)capacity : n);
	/* Full when new; else refilled since it was last taken from, then taken from if it can. */
	res =
	    run(store, store->pg->conn, "sharing a rate limit",
	        "INSERT INTO rate_limits AS r (name, tokens, updated_ms, granted) VALUES "
	        "($1, $2::float8 - $4::float8, " NOW_MS ", true) ON CONFLICT (name) DO UPDATE SET "
	        "tokens = " REFILLED " - CASE WHEN " REFILLED " >= $4::float8 THEN $4::float8 "
	        "ELSE 0 END, granted = " REFILLED " >= $4::float8, updated_ms = " NOW_MS " "
	        "RETURNING granted, tokens",
	        4, params, NULL, NULL);
	if (!res)
		return enr_error_last_code();
	granted = PQgetvalue(res, 0, 0)[0] == 't';
	tokens = strtod(PQgetvalue(res, 0, 1), NULL);
	PQclear(res);
	if (granted)
		return 0;
	/* Not enough: how long until there is. */
	*wait_ms = (long long)((atof(need) - tokens) / (per_second / 1000.0)) + 1;
	if (*wait_ms < 1)
		*wait_ms = 1;
	return 0;
}
