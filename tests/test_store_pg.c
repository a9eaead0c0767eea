/*
 * The team store against a real PostgreSQL (tests/pg_server.c): one server for
 * the file, a database of its own for each test.
 */
#include <signal.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "pg_server.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/log.h"
#include "derenroll/store.h"
#include "store/internal.h"

#define PASS "team passphrase one"
#define BOB  "bob's own passphrase"

static const struct enr_store_kdf fast_kdf = {4, 1, 1};
static struct test_pg pg;
static char db[32], url[512], outbox[512];

static int setup(void **state)
{
	static int n;

	(void)state;
	snprintf(db, sizeof(db), "t%d", n++);
	if (test_pg_createdb(&pg, db) < 0 || test_pg_url(&pg, db, url, sizeof(url)) < 0)
		return -1;
	snprintf(outbox, sizeof(outbox), "%s/outbox-%s", getenv("HOME"), db);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	enr_log_clear_secrets();
	return 0;
}

static struct enr_store *open_as(const char *member, const char *pass, int timeout_ms)
{
	struct enr_store_options o = {.path = url,
	                              .passphrase = pass,
	                              .kdf = &fast_kdf,
	                              .create = true,
	                              .member = member,
	                              .lock_timeout_ms = timeout_ms,
	                              .outbox = outbox};
	struct enr_store *store = NULL;
	int rc = enr_store_open(&store, &o);

	if (rc != 0)
		fail_msg("open %s as %s: %s", url, member ? member : "(db user)", enr_error_last());
	return store;
}

static int try_open(struct enr_store **out, const char *member, const char *pass, bool listing)
{
	struct enr_store_options o = {.path = url,
	                              .passphrase = pass,
	                              .kdf = &fast_kdf,
	                              .member = member,
	                              .metadata_only = listing};

	return enr_store_open(out, &o);
}

static struct enr_record *numbered(int i)
{
	struct enr_record *rec = NULL;
	char buf[64];

	assert_int_equal(enr_record_new(&rec), 0);
	snprintf(buf, sizeof(buf), "Customer %d", i);
	enr_record_set(&rec->customer, buf);
	enr_record_set(&rec->vendor, "sma");
	enr_record_set(&rec->method, "oauth");
	rec->cred.type = ENR_CRED_OAUTH;
	snprintf(buf, sizeof(buf), "access-secret-%d-zq", i);
	enr_record_set(&rec->cred.tokens.access_token, buf);
	snprintf(buf, sizeof(buf), "refresh-secret-%d-zq", i);
	enr_record_set(&rec->cred.tokens.refresh_token, buf);
	snprintf(buf, sizeof(buf), "site-%d", i);
	enr_record_add_site(rec, buf, "Home");
	rec->access_expires_at = 1790000000 + i;
	rec->refresh_expires_at = 1800000000 + i;
	return rec;
}

/* numbered(i) with credentials of `type` (a key: no tokens), set by the caller. */
static struct enr_record *keyed(int i, enum enr_cred_type type)
{
	struct enr_record *rec = numbered(i);

	rec->cred.type = type;
	enr_record_set(&rec->method, "key");
	enr_record_set(&rec->cred.tokens.access_token, NULL);
	enr_record_set(&rec->cred.tokens.refresh_token, NULL);
	return rec;
}

static char *put_numbered(struct enr_store *store, int i)
{
	struct enr_record *rec = numbered(i);
	char *id;

	if (enr_store_put(NULL, store, rec) != 0)
		fail_msg("put: %s", enr_error_last());
	id = strdup(rec->id);
	enr_record_free(rec);
	return id;
}

static char *value(const char *sql)
{
	return test_pg_value(&pg, db, sql);
}

/* What the database answers to `sql` is `want`. */
static void assert_sql(const char *sql, const char *want)
{
	char *v = value(sql);

	assert_non_null(v);
	assert_string_equal(v, want);
	free(v);
}

/* ---- records ---- */

static void records_round_trip_and_the_database_sees_no_secret(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b;
	struct enr_record *got = NULL;
	char *id = put_numbered(a, 1), *v;

	(void)state;
	assert_int_equal(enr_store_secret_set(a, "vendor.sma.client_secret", "app-secret-zq"), 0);
	b = open_as(NULL, PASS, 0);
	assert_int_equal(enr_store_count(b), 1);
	assert_int_equal(enr_store_get(&got, b, id), 0);
	assert_string_equal(got->cred.tokens.refresh_token, "refresh-secret-1-zq");
	assert_string_equal(got->customer, "Customer 1");
	assert_int_equal(got->refresh_expires_at, 1800000001);
	enr_record_free(got);
	assert_int_equal(enr_store_secret_get(&v, b, "vendor.sma.client_secret"), 0);
	assert_string_equal(v, "app-secret-zq");
	free(v);
	/* Plain columns for support staff... */
	v = value("SELECT customer || '|' || vendor || '|' || refresh_expires_at FROM records");
	assert_string_equal(v, "Customer 1|sma|1800000001");
	free(v);
	/* ...and nothing secret anywhere in the database, sealed or not, of any kind of
	 * credentials: an id token, API and account keys, a key pair's secret. */
	{
		struct enr_record *key = keyed(2, ENR_CRED_API_KEY),
		                  *pair = keyed(3, ENR_CRED_KEY_PAIR);
		enr_record_set(&key->cred.api_key, "apikey-secret-2-zq");
		enr_record_set(&key->cred.account_key, "accountkey-secret-2-zq");
		enr_record_set(&pair->cred.key_id, "key-id-3");
		enr_record_set(&pair->cred.key_secret, "keypair-secret-3-zq");
		assert_int_equal(enr_store_put(NULL, a, key), 0);
		assert_int_equal(enr_store_put(NULL, a, pair), 0);
		enr_record_free(key);
		enr_record_free(pair);
	}
	{
		struct enr_store_lock *lock = NULL;
		assert_int_equal(enr_store_lock_record(&lock, a, id), 0);
		enr_record_set(&enr_store_lock_record_get(lock)->cred.tokens.id_token,
		               "idtoken-secret-1-zq");
		assert_int_equal(enr_store_lock_journal(a, lock, true), 0);
		enr_store_unlock(lock);
	}
	assert_sql("SELECT count(*) FROM records", "3");
	v = value("SELECT count(*) FROM (SELECT r::text AS t FROM records r UNION ALL SELECT "
	          "s::text FROM app_secrets s UNION ALL SELECT m::text FROM members m UNION ALL "
	          "SELECT a::text FROM audit a UNION ALL SELECT encode(secret, 'escape') FROM "
	          "records UNION ALL SELECT encode(secret, 'escape') FROM app_secrets) x WHERE t "
	          "LIKE '%secret-%zq%' OR t LIKE '%app-secret%' OR t LIKE '%" PASS "%'");
	assert_string_equal(v, "0");
	free(v);
	enr_store_free(b);
	/* ...though they are there, sealed: another handle reads each back. */
	b = open_as(NULL, PASS, 0);
	{
		const char *const want[][2] = {{"Customer 1", "idtoken-secret-1-zq"},
		                               {"Customer 2", "apikey-secret-2-zq"},
		                               {"Customer 3", "keypair-secret-3-zq"}};
		assert_int_equal(enr_store_count(b), 3);
		for (size_t i = 0; i < 3; i++) {
			const struct enr_record *r = enr_store_at(b, i);
			const char *held = i == 0   ? r->cred.tokens.id_token
			                   : i == 1 ? r->cred.api_key
			                            : r->cred.key_secret;
			assert_string_equal(r->customer, want[i][0]);
			assert_non_null(held);
			assert_string_equal(held, want[i][1]);
		}
		assert_string_equal(enr_store_at(b, 1)->cred.account_key, "accountkey-secret-2-zq");
	}
	enr_store_free(b);
	/* Removed: gone for every handle. */
	assert_int_equal(enr_store_remove(a, id), 0);
	b = open_as(NULL, PASS, 0);
	assert_int_equal(enr_store_count(b), 2);
	assert_int_equal(enr_store_reload(a), 0);
	enr_store_free(b);
	enr_store_free(a);
	free(id);
}

static void a_second_handle_catches_up(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b = open_as(NULL, PASS, 0);
	char *id1 = put_numbered(a, 1), *id2 = put_numbered(a, 2);
	struct enr_record *got = NULL;

	(void)state;
	assert_int_equal(enr_store_count(b), 0);
	assert_int_equal(enr_store_reload(b), 0);
	assert_int_equal(enr_store_count(b), 2);
	assert_int_equal(enr_store_remove(a, id1), 0);
	assert_int_equal(enr_store_reload(b), 0);
	assert_int_equal(enr_store_count(b), 1);
	assert_int_equal(enr_store_get(&got, b, id2), 0);
	enr_record_free(got);
	/* A site already stored in another record is refused across handles too. */
	{
		struct enr_record *dup = numbered(2);
		assert_int_equal(enr_record_set(&dup->id, "zzzzzzzzzz"), 0);
		assert_int_equal(enr_store_put(NULL, b, dup), ENR_E_EXISTS);
		enr_record_free(dup);
	}
	enr_store_free(a);
	enr_store_free(b);
	free(id1);
	free(id2);
}

/* A handle opened on demand (the wizard, show, enroll, refresh ID). */
static struct enr_store *open_some(void)
{
	struct enr_store_options o = {
	    .path = url, .passphrase = PASS, .kdf = &fast_kdf, .on_demand = true, .outbox = outbox};
	struct enr_store *store = NULL;

	if (enr_store_open(&store, &o) != 0)
		fail_msg("open %s on demand: %s", url, enr_error_last());
	return store;
}

static int note_check(struct enr_record *rec, void *ctx)
{
	rec->last_check.at = *(long long *)ctx;
	rec->last_check.outcome = ENR_OUTCOME_OK;
	return 0;
}

static void a_handle_on_demand_reads_only_what_it_is_asked_for(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b;
	char *id[4];
	struct enr_record *got = NULL, *again;
	long long at = 1795000000;
	char *v;

	(void)state;
	for (int i = 0; i < 4; i++)
		id[i] = put_numbered(a, i);
	assert_int_equal(enr_store_secret_set(a, "vendor.sma.client_secret", "app-secret-zq"), 0);
	b = open_some();
	/* Nothing read at open but the app secrets. */
	assert_int_equal(enr_store_count(b), 0);
	assert_int_equal(enr_store_secret_get(&v, b, "vendor.sma.client_secret"), 0);
	assert_string_equal(v, "app-secret-zq");
	free(v);
	/* By id (in any case), with its credentials. */
	for (char *c = id[1]; *c; c++)
		*c = (char)toupper((unsigned char)*c);
	assert_int_equal(enr_store_get(&got, b, id[1]), 0);
	assert_string_equal(got->cred.tokens.refresh_token, "refresh-secret-1-zq");
	enr_record_free(got);
	assert_int_equal(enr_store_count(b), 1);
	assert_int_equal(enr_store_get(&got, b, "nosuchid00"), ENR_E_NOTFOUND);
	/* By site. */
	assert_int_equal(enr_store_find_site(&got, b, "sma", "site-2"), 0);
	assert_string_equal(got->id, id[2]);
	enr_record_free(got);
	assert_int_equal(enr_store_find_site(&got, b, "tesla", "site-2"), ENR_E_NOTFOUND);
	assert_int_equal(enr_store_count(b), 2);
	/* A put of a site stored in a record it never read updates that record: no second
	 * record holds the site. */
	again = numbered(3);
	enr_record_set(&again->cred.tokens.refresh_token, "refresh-secret-3-new-zq");
	assert_int_equal(enr_store_put(NULL, b, again), 0);
	assert_string_equal(again->id, id[3]);
	enr_record_free(again);
	assert_sql("SELECT count(*) FROM records WHERE 'site-3' = ANY(site_ids)", "1");
	assert_sql("SELECT count(*) FROM records", "4");
	/* A site of another record it never read is refused under another id. */
	again = numbered(0);
	assert_int_equal(enr_record_set(&again->id, "zzzzzzzzzz"), 0);
	assert_int_equal(enr_store_put(NULL, b, again), ENR_E_EXISTS);
	enr_record_free(again);
	/* Updated through its lock, and removed, without having been read first. */
	assert_int_equal(enr_store_update(b, id[0], note_check, &at), 0);
	assert_sql("SELECT last_check_at FROM records ORDER BY last_check_at DESC LIMIT 1",
	           "1795000000");
	assert_int_equal(enr_store_remove(a, id[2]), 0);
	/* What another handle changes in a record it holds is caught up; a record it never
	 * read stays unread; one removed is dropped. */
	at++;
	assert_int_equal(enr_store_update(a, id[1], note_check, &at), 0);
	free(put_numbered(a, 9));
	assert_int_equal(enr_store_reload(b), 0);
	assert_int_equal(enr_store_get(&got, b, id[1]), 0);
	assert_int_equal(got->last_check.at, 1795000001);
	enr_record_free(got);
	assert_int_equal(enr_store_get(&got, b, id[2]), ENR_E_NOTFOUND);
	for (size_t i = 0; i < enr_store_count(b); i++)
		assert_string_not_equal(enr_store_at(b, i)->customer, "Customer 9");
	assert_int_equal(enr_store_remove(b, id[3]), 0);
	assert_sql("SELECT count(*) FROM records", "3");
	enr_store_free(b);
	enr_store_free(a);
	for (int i = 0; i < 4; i++)
		free(id[i]);
}

/* ---- one token, one spender ---- */

static void a_locked_record_waits_for_its_holder(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b = open_as(NULL, PASS, 300);
	struct enr_store_lock *la = NULL, *lb = NULL;
	struct enr_record *got = NULL;
	char *id = put_numbered(a, 1);

	(void)state;
	assert_int_equal(enr_store_lock_record(&la, a, id), 0);
	assert_int_equal(enr_store_reload(b), 0);
	assert_int_equal(enr_store_lock_record(&lb, b, id), ENR_E_LOCKED);
	assert_non_null(strstr(enr_error_last(), "being changed by another process"));
	/* A rotated token is committed the moment it is saved, the lock still held. */
	assert_int_equal(enr_record_set(&enr_store_lock_record_get(la)->cred.tokens.refresh_token,
	                                "refresh-rotated-zq"),
	                 0);
	assert_int_equal(enr_store_lock_journal(a, la, true), 0);
	assert_int_equal(enr_store_reload(b), 0);
	assert_int_equal(enr_store_get(&got, b, id), 0);
	assert_string_equal(got->cred.tokens.refresh_token, "refresh-rotated-zq");
	enr_record_free(got);
	/* Removing it waits for the lock too. */
	assert_int_equal(enr_store_remove(b, id), ENR_E_LOCKED);
	enr_store_unlock(la);
	assert_int_equal(enr_store_lock_record(&lb, b, id), 0);
	enr_store_unlock(lb);
	assert_int_equal(enr_store_remove(b, id), 0);
	enr_store_free(a);
	enr_store_free(b);
	free(id);
}

static void a_killed_holder_leaves_no_lock(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b;
	struct enr_store_lock *lb = NULL;
	char *id = put_numbered(a, 1);
	pid_t pid;
	int fds[2], status;
	char c;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		struct enr_store *child = open_as(NULL, PASS, 0);
		struct enr_store_lock *l = NULL;
		if (enr_store_lock_record(&l, child, id) != 0)
			_exit(3);
		(void)!write(fds[1], "L", 1);
		pause(); /* killed holding it */
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &c, 1), 1);
	b = open_as(NULL, PASS, 200);
	assert_int_equal(enr_store_lock_record(&lb, b, id), ENR_E_LOCKED);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	enr_store_free(b);
	b = open_as(NULL, PASS, 5000);
	assert_int_equal(enr_store_lock_record(&lb, b, id), 0);
	enr_store_unlock(lb);
	close(fds[0]);
	enr_store_free(b);
	enr_store_free(a);
	free(id);
}

/* ---- members ---- */

static void a_member_added_reads_a_member_removed_cannot(void **state)
{
	struct enr_store *a = open_as("alice", PASS, 0), *b = NULL;
	struct enr_record *got = NULL;
	struct enr_team_member *m = NULL;
	size_t n = 0;
	char *id = put_numbered(a, 1), *v;

	(void)state;
	assert_int_equal(enr_store_team_add(a, "bob", BOB), 0);
	assert_int_equal(enr_store_team_add(a, "bob", BOB), ENR_E_EXISTS);
	assert_int_equal(enr_store_team_add(a, "bad name;", BOB), ENR_E_USAGE);
	assert_int_equal(enr_store_team_list(&m, &n, a), 0);
	assert_int_equal(n, 2);
	assert_string_equal(m[0].name, "alice");
	assert_string_equal(m[1].name, "bob");
	enr_store_team_list_free(m, n);
	/* Bob opens it with his own passphrase; not with Alice's. */
	b = open_as("bob", BOB, 0);
	assert_int_equal(enr_store_get(&got, b, id), 0);
	assert_string_equal(got->cred.tokens.refresh_token, "refresh-secret-1-zq");
	enr_record_free(got);
	enr_store_free(b);
	assert_int_equal(try_open(&b, "bob", PASS, false), ENR_E_PASSPHRASE);
	assert_int_equal(try_open(&b, "carol", PASS, false), ENR_E_STORE);
	assert_non_null(strstr(enr_error_last(), "team add carol"));
	/* Listing needs no key at all. */
	assert_int_equal(try_open(&b, "carol", NULL, true), 0);
	assert_int_equal(enr_store_count(b), 1);
	enr_store_free(b);
	/* Removed: the key rotates, and what Bob had no longer opens anything. */
	assert_int_equal(enr_store_team_remove(a, "bob"), 0);
	assert_int_equal(try_open(&b, "bob", BOB, false), ENR_E_STORE);
	v = value("SELECT min(key_generation) || '/' || max(key_generation) FROM records");
	assert_string_equal(v, "2/2");
	free(v);
	/* Each copy of the team key is bound to its generation: claimed for another, it opens
	 * nothing. */
	assert_int_equal(
	    test_pg_exec(&pg, db, "UPDATE members SET key_generation = 1 WHERE name = 'alice'"), 0);
	assert_int_equal(try_open(&b, "alice", PASS, false), ENR_E_CORRUPT);
	assert_int_equal(
	    test_pg_exec(&pg, db, "UPDATE members SET key_generation = 2 WHERE name = 'alice'"), 0);
	/* A refresh in flight while the key rotates (Alice's handle `a` read it before):
	 * its token is saved under the new key, not under the one Bob held. */
	{
		struct enr_store *c = open_as("alice", PASS, 0);
		struct enr_store_lock *lock = NULL;
		assert_int_equal(enr_store_team_add(a, "bob", BOB), 0);
		assert_int_equal(enr_store_lock_record(&lock, c, id), 0); /* c holds generation 2 */
		assert_int_equal(enr_store_team_remove(a, "bob"), 0);     /* now 3 */
		assert_int_equal(
		    enr_record_set(&enr_store_lock_record_get(lock)->cred.tokens.refresh_token,
		                   "refresh-rotated-zq"),
		    0);
		assert_int_equal(enr_store_lock_journal(c, lock, true), 0);
		enr_store_unlock(lock);
		enr_store_free(c);
		assert_sql("SELECT key_generation FROM records", "3"); /* and read below */
		/* A member removed meanwhile saves nothing. */
		c = open_as("alice", PASS, 0);
		assert_int_equal(enr_store_team_add(a, "bob", BOB), 0);
		b = open_as("bob", BOB, 0);
		assert_int_equal(enr_store_lock_record(&lock, b, id), 0);
		assert_int_equal(enr_store_team_remove(c, "bob"), 0);
		assert_int_equal(enr_store_lock_journal(b, lock, true), ENR_E_PERM);
		assert_non_null(strstr(enr_error_last(), "bob is no longer a member"));
		enr_store_unlock(lock);
		enr_store_free(b);
		enr_store_free(c);
		assert_sql("SELECT key_generation FROM records", "4");
	}
	/* Alice still reads, and cannot remove the last member. */
	b = open_as("alice", PASS, 0);
	assert_int_equal(enr_store_get(&got, b, id), 0);
	assert_string_equal(got->cred.tokens.refresh_token, "refresh-rotated-zq");
	enr_record_free(got);
	assert_int_equal(enr_store_team_remove(b, "alice"), ENR_E_USAGE);
	enr_store_free(b);
	enr_store_free(a);
	free(id);
}

/* ---- the log ---- */

static int collect(const struct enr_audit_entry *e, void *ctx)
{
	char *buf = ctx;
	size_t len = strlen(buf);

	snprintf(buf + len, 4096 - len, "%s/%s %s %s %s|", e->member, e->login ? e->login : "-",
	         e->action, e->record ? e->record : "-", e->result);
	return 0;
}

static void the_log_says_who_did_what(void **state)
{
	struct enr_store *a = open_as("alice", PASS, 0);
	char *id = put_numbered(a, 1), log[4096] = "", want[256];

	struct enr_record *rec = NULL;

	(void)state;
	/* A record that went bad: the log says so with the write. */
	assert_int_equal(enr_store_get(&rec, a, id), 0);
	rec->last_check.at = (long long)time(NULL);
	rec->last_check.outcome = ENR_OUTCOME_REJECTED;
	assert_int_equal(enr_store_put(NULL, a, rec), 0);
	enr_record_free(rec);
	assert_int_equal(enr_store_remove(a, id), 0);
	assert_int_equal(enr_store_log(a, NULL, 0, collect, log), 0);
	/* Alice is a member name; the database login that wrote it (postgres) is shown. */
	snprintf(want, sizeof(want),
	         "alice/postgres team create - ok: alice|alice/postgres add %s ok|"
	         "alice/postgres update %s ok; last check rejected|alice/postgres remove %s ok|",
	         id, id, id);
	assert_string_equal(log, want);
	log[0] = '\0';
	assert_int_equal(enr_store_log(a, id, 1, collect, log), 0);
	snprintf(want, sizeof(want), "alice/postgres remove %s ok|", id);
	assert_string_equal(log, want);
	enr_store_free(a);
	free(id);
}

/* ---- schema ---- */

static void a_newer_schema_is_refused(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b = NULL;

	(void)state;
	enr_store_free(a);
	assert_int_equal(test_pg_exec(&pg, db, "INSERT INTO derenroll_schema VALUES (99)"), 0);
	assert_int_equal(try_open(&b, NULL, PASS, false), ENR_E_STORE);
	assert_non_null(strstr(enr_error_last(), "newer derenroll"));
}

/* ---- offline ---- */

static void offline_enrollments_wait_in_the_outbox_and_are_pushed_once(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *off;
	struct enr_record *rec = numbered(7);
	size_t pushed, left;
	char *v;

	(void)state;
	enr_store_free(a);
	assert_int_equal(test_pg_kill(&pg), 0);
	off = open_as(NULL, PASS, 0);
	assert_non_null(enr_store_offline(off));
	assert_int_equal(enr_store_put(NULL, off, rec), 0);
	assert_true(enr_record_pending(rec));
	enr_store_free(off);
	assert_int_equal(test_pg_resume(&pg), 0);
	a = open_as(NULL, PASS, 0);
	assert_null(enr_store_offline(a));
	assert_int_equal(enr_store_push(a, &pushed, &left), 0);
	assert_int_equal(pushed, 1);
	assert_int_equal(left, 0);
	assert_int_equal(enr_store_push(a, &pushed, &left), 0);
	assert_int_equal(pushed, 0);
	v = value("SELECT count(*) || ' ' || min(id) FROM records");
	assert_non_null(v);
	assert_true(strncmp(v, "1 ", 2) == 0);
	assert_string_equal(v + 2, rec->id);
	free(v);
	/* Pushed, it is no longer pending. */
	assert_int_equal(enr_store_reload(a), 0);
	assert_false(enr_record_pending(enr_store_at(a, 0)));
	enr_record_free(rec);
	enr_store_free(a);
}

/* ---- a restart of the server ---- */

static void a_handle_outlives_a_restart_of_the_server(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0);
	struct enr_store_lock *lock = NULL;
	char *id1 = put_numbered(a, 1), *id2;

	(void)state;
	assert_int_equal(enr_store_lock_record(&lock, a, id1), 0);
	enr_store_unlock(lock);
	/* Both connections (the main one and a record lock's) are gone and made again. */
	assert_int_equal(test_pg_restart(&pg), 0);
	id2 = put_numbered(a, 2);
	assert_int_equal(enr_store_lock_record(&lock, a, id1), 0);
	enr_store_unlock(lock);
	assert_int_equal(enr_store_reload(a), 0);
	assert_int_equal(enr_store_count(a), 2);
	enr_store_free(a);
	free(id1);
	free(id2);
}

/* ---- what may be due, asked of the database ---- */

/* A listing of columns (columns_only) says of each record of the store at `o`
 * what a listing of the whole records does, and reads no public part. */
static void assert_columns_agree(struct enr_store_options o, long long now)
{
	struct enr_store *whole = NULL, *cols = NULL;

	o.metadata_only = true;
	o.columns_only = false;
	assert_int_equal(enr_store_open(&whole, &o), 0);
	o.columns_only = true;
	assert_int_equal(enr_store_open(&cols, &o), 0);
	assert_int_equal(enr_store_count(cols), enr_store_count(whole));
	for (size_t i = 0; i < enr_store_count(whole); i++) {
		const struct enr_record *w = enr_store_at(whole, i), *c = enr_store_at(cols, i);
		long long w_due = -1, c_due = -2;

		assert_string_equal(c->id, w->id);
		assert_string_equal(c->customer, w->customer);
		assert_string_equal(c->vendor, w->vendor);
		assert_string_equal(c->method, w->method);
		assert_int_equal(c->access_expires_at, w->access_expires_at);
		assert_int_equal(c->refresh_expires_at, w->refresh_expires_at);
		assert_int_equal(c->last_check.outcome, w->last_check.outcome);
		assert_int_equal(c->cred.refreshable, w->cred.refreshable);
		for (long days = 0; days <= 40; days += 10) {
			assert_int_equal(enr_status_of(c, now, days, &c_due),
			                 enr_status_of(w, now, days, &w_due));
			assert_int_equal(c_due, w_due);
		}
		/* Its public part (the sites) was not read. */
		assert_int_equal(w->n_sites, 1);
		assert_int_equal(c->n_sites, 0);
	}
	enr_store_free(whole);
	enr_store_free(cols);
}

static void listing_what_may_be_due_reads_a_superset_of_it(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b = NULL;
	struct enr_store_options o = {.path = url, .metadata_only = true};
	long long now = (long long)time(NULL);
	struct enr_record *soon = numbered(1), *later = numbered(2), *refused = numbered(3),
	                  *no_refresh = numbered(4), *renewable = numbered(5);
	const char *names[4];
	char *version;

	(void)state;
	soon->refresh_expires_at = now + 3 * 86400;
	later->refresh_expires_at = now + 30 * 86400;
	refused->refresh_expires_at = now + 30 * 86400;
	refused->last_check.at = now;
	refused->last_check.outcome = ENR_OUTCOME_REJECTED;
	no_refresh->refresh_expires_at = 0;
	enr_record_set(&no_refresh->cred.tokens.refresh_token, NULL);
	no_refresh->access_expires_at = now + 30 * 86400;
	assert_int_equal(enr_store_put(NULL, a, soon), 0);
	assert_int_equal(enr_store_put(NULL, a, later), 0);
	assert_int_equal(enr_store_put(NULL, a, refused), 0);
	assert_int_equal(enr_store_put(NULL, a, no_refresh), 0);
	/* An expired access token that a refresh token renews: not the customer's turn. */
	renewable->refresh_expires_at = now + 30 * 86400;
	renewable->access_expires_at = now - 3600;
	assert_int_equal(enr_store_put(NULL, a, renewable), 0);
	/* A store of schema 1 (no due_at, jsonb) is migrated on first use, its records too. */
	for (int round = 0; round < 2; round++) {
		o.due_before = now + 7 * 86400;
		assert_int_equal(enr_store_open(&b, &o), 0);
		assert_int_equal(enr_store_count(b), 3);
		for (size_t i = 0; i < 3; i++)
			names[i] = enr_store_at(b, i)->customer;
		assert_string_equal(names[0], "Customer 1");
		assert_string_equal(names[1], "Customer 3");
		assert_string_equal(names[2], "Customer 4");
		enr_store_free(b);
		assert_columns_agree(o, now);
		o.due_before = 0;
		assert_int_equal(enr_store_open(&b, &o), 0);
		assert_int_equal(enr_store_count(b), 5);
		enr_store_free(b);
		assert_columns_agree(o, now);
		version = test_pg_value(&pg, db, "SELECT max(version) FROM derenroll_schema");
		assert_string_equal(version, "4");
		free(version);
		/* Schema 4: what a listing of columns reads is in one index with due_at. */
		assert_sql(
		    "SELECT count(*) FROM pg_indexes WHERE indexname = 'records_listing' AND "
		    "indexdef LIKE '%(due_at) INCLUDE (id, seq, customer, vendor, method, "
		    "access_expires_at, refresh_expires_at, last_check_outcome, refreshable, "
		    "created_by)'",
		    "1");
		/* Schema 3: the public part as the client wrote it (json), not jsonb. */
		version = test_pg_value(&pg, db,
		                        "SELECT data_type FROM information_schema.columns WHERE "
		                        "table_name = 'records' AND column_name = 'public'");
		assert_string_equal(version, "json");
		free(version);
		if (round == 0)
			assert_int_equal(
			    test_pg_exec(
			        &pg, db,
			        "ALTER TABLE records DROP COLUMN due_at; ALTER TABLE records "
			        "ALTER COLUMN public TYPE jsonb USING public::jsonb; DELETE "
			        "FROM derenroll_schema WHERE version >= 2"),
			    0);
	}
	enr_record_free(renewable);
	enr_record_free(soon);
	enr_record_free(later);
	enr_record_free(refused);
	enr_record_free(no_refresh);
	enr_store_free(a);
}

/* The enrolled systems screen's pages: most urgent first, never due last, each record once. */
static void pages_walk_every_record_most_urgent_first(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *file = NULL;
	struct enr_store_options fo = {.path = outbox, .plaintext = true};
	struct enr_store_cursor cur = {0};
	struct enr_record **page = NULL;
	long long now = (long long)time(NULL);
	/* Customer numbers in the order the pages must give them (ties: by id, below). */
	int order[] = {3, 5, 1, 6, 2, 4, 7};
	char ids[8][16];
	size_t n, count = 0, seen = 0;

	(void)state;
	for (int i = 1; i <= 7; i++) {
		struct enr_record *rec = numbered(i);
		if (i == 3) { /* refused: due now (0) */
			rec->last_check.at = now;
			rec->last_check.outcome = ENR_OUTCOME_REJECTED;
		}
		/* 4 sooner than 7's never. */
		rec->refresh_expires_at = i == 5 || i == 1   ? now + 86400
		                          : i == 6 || i == 2 ? now + 2 * 86400
		                          : i == 4           ? now + 3 * 86400
		                                             : 0;
		if (i == 7) { /* an API key: never due */
			rec->cred.type = ENR_CRED_API_KEY;
			enr_record_set(&rec->cred.tokens.access_token, NULL);
			enr_record_set(&rec->cred.tokens.refresh_token, NULL);
			enr_record_set(&rec->cred.api_key, "key-secret-7-zq");
			enr_record_set(&rec->method, "key");
			rec->access_expires_at = 0;
		}
		assert_int_equal(enr_store_put(NULL, a, rec), 0);
		snprintf(ids[i], sizeof(ids[i]), "%s", rec->id);
		enr_record_free(rec);
	}
	/* 5 and 1, 6 and 2 are due the same moment: the id breaks the tie. */
	for (int t = 1; t <= 3; t += 2)
		if (strcmp(ids[order[t]], ids[order[t + 1]]) > 0) {
			int swap = order[t];
			order[t] = order[t + 1];
			order[t + 1] = swap;
		}
	assert_int_equal(enr_store_team_count(a, NULL, &count), 0);
	assert_int_equal(count, 7);
	/* Pages of 2, then a last short one. */
	while (!cur.done) {
		assert_int_equal(enr_store_team_page(a, &cur, 2, &page, &n), 0);
		assert_true(n <= 2);
		for (size_t i = 0; i < n; i++) {
			char want[32];
			assert_true(seen < 7);
			snprintf(want, sizeof(want), "Customer %d", order[seen]);
			assert_string_equal(page[i]->customer, want);
			/* What a listing shows: no credentials, no sites (the public part). */
			assert_null(page[i]->cred.tokens.refresh_token);
			assert_int_equal(page[i]->n_sites, 0);
			assert_string_equal(page[i]->method, order[seen] == 7 ? "key" : "oauth");
			assert_int_equal(enr_status_of(page[i], now, 7, NULL) ==
			                     ENR_STATUS_REJECTED,
			                 order[seen] == 3);
			seen++;
			enr_record_free(page[i]);
		}
		free(page);
	}
	assert_int_equal(seen, 7);
	/* A page past the end is empty. */
	assert_int_equal(enr_store_team_page(a, &cur, 2, &page, &n), 0);
	assert_int_equal(n, 0);
	free(page);
	/* Matching (the screen's filter): id, customer, vendor or method, any case; the
	 * pages of a match walk it in the same order. */
	{
		const struct {
			const char *match;
			const char *first;
			size_t count;
		} m[] = {{"MER 6", "Customer 6", 1}, {"sMa", "Customer 3", 7},
		         {"key", "Customer 7", 1},   {"ustomer", "Customer 3", 7},
		         {"nothing", NULL, 0},       {ids[4], "Customer 4", 1}};
		for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
			struct enr_store_cursor mc = {0};
			char upper[sizeof(mc.match)];
			size_t got = 0;
			snprintf(upper, sizeof(upper), "%s", m[k].match);
			if (m[k].match == ids[4])
				for (char *c = upper; *c; c++)
					*c = (char)toupper((unsigned char)*c);
			snprintf(mc.match, sizeof(mc.match), "%s", upper);
			assert_int_equal(enr_store_team_count(a, upper, &count), 0);
			assert_int_equal(count, m[k].count);
			while (!mc.done) {
				assert_int_equal(enr_store_team_page(a, &mc, 2, &page, &n), 0);
				for (size_t i = 0; i < n; i++) {
					if (got == 0)
						assert_string_equal(page[i]->customer, m[k].first);
					got++;
					enr_record_free(page[i]);
				}
				free(page);
			}
			assert_int_equal(got, m[k].count);
		}
	}
	/* A file store has no pages. */
	assert_int_equal(enr_store_open(&file, &fo), 0);
	assert_int_equal(enr_store_team_page(file, &(struct enr_store_cursor){0}, 2, &page, &n),
	                 ENR_E_UNSUPPORTED);
	enr_store_free(file);
	enr_store_free(a);
}

/* ---- roles: the database says who may do what ---- */

static char role_url[600];

static struct enr_store *open_role(const char *role, const char *pass, int *rc)
{
	struct enr_store_options o = {.path = role_url, .passphrase = pass, .kdf = &fast_kdf};
	struct enr_store *store = NULL;
	const char *at = strstr(url, "user=postgres");

	assert_non_null(at);
	snprintf(role_url, sizeof(role_url), "%.*suser=%s%s", (int)(at - url), url, role,
	         at + strlen("user=postgres"));
	*rc = enr_store_open(&store, &o);
	return store;
}

static void roles_let_installers_add_and_see_their_own(void **state)
{
	struct enr_store *owner = open_as(NULL, PASS, 0), *s;
	char *sql = NULL, *path = NULL, *ivan_id, *sue_id;
	size_t len;
	int rc;
	PGconn *conn;
	PGresult *res;

	(void)state;
	path = enr_config_asset_path("sql/roles.sql");
	assert_non_null(path);
	sql = test_read_file(path);
	assert_non_null(sql);
	len = strlen(sql);
	assert_true(len > 100);
	assert_int_equal(test_pg_exec(&pg, db, sql), 0);
	assert_int_equal(test_pg_exec(&pg, db, sql), 0); /* again: safe */
	test_pg_exec(&pg, db,
	             "DROP ROLE IF EXISTS ivan; DROP ROLE IF EXISTS sue; "
	             "DROP ROLE IF EXISTS bea");
	assert_int_equal(test_pg_exec(&pg, db,
	                              "CREATE ROLE ivan LOGIN IN ROLE derenroll_installer; "
	                              "CREATE ROLE sue LOGIN IN ROLE derenroll_support; "
	                              "CREATE ROLE bea LOGIN IN ROLE derenroll_backend"),
	                 0);
	assert_int_equal(enr_store_team_add(owner, "ivan", "ivan pass"), 0);
	assert_int_equal(enr_store_team_add(owner, "sue", "sue pass"), 0);
	assert_int_equal(enr_store_team_add(owner, "bea", "bea pass"), 0);
	enr_store_free(owner);

	/* Installers add records and see their own only. */
	s = open_role("ivan", "ivan pass", &rc);
	assert_int_equal(rc, 0);
	ivan_id = put_numbered(s, 1);
	enr_store_free(s);
	s = open_role("sue", "sue pass", &rc);
	assert_int_equal(rc, 0);
	sue_id = put_numbered(s, 2);
	enr_store_free(s);
	s = open_role("ivan", "ivan pass", &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(enr_store_count(s), 1);
	assert_string_equal(enr_store_at(s, 0)->id, ivan_id);
	/* ...and may not remove one: the database refuses, not the client. */
	assert_int_equal(enr_store_remove(s, ivan_id), ENR_E_PERM);
	assert_non_null(strstr(enr_error_last(), "permission denied"));
	enr_store_free(s);
	/* A listing of columns (`list`) is held to the same rows. */
	{
		struct enr_store_options o = {
		    .path = role_url, .metadata_only = true, .columns_only = true};
		assert_int_equal(enr_store_open(&s, &o), 0);
		assert_int_equal(enr_store_count(s), 1);
		assert_string_equal(enr_store_at(s, 0)->id, ivan_id);
		enr_store_free(s);
	}
	/* Support sees every record and removes any. */
	s = open_role("sue", "sue pass", &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(enr_store_count(s), 2);
	assert_int_equal(enr_store_remove(s, ivan_id), 0);
	enr_store_free(s);
	/* The backend reads the credentials, and writes nothing. */
	s = open_role("bea", "bea pass", &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(enr_store_count(s), 1);
	assert_string_equal(enr_store_at(s, 0)->cred.tokens.refresh_token, "refresh-secret-2-zq");
	{
		struct enr_record *rec = numbered(3);
		assert_int_equal(enr_store_put(NULL, s, rec), ENR_E_PERM);
		enr_record_free(rec);
	}
	enr_store_free(s);
	/* A newer derenroll's schema: only the tables' owner may upgrade them, and a
	 * member is told so (not just the server's refusal). */
	assert_int_equal(test_pg_exec(&pg, db,
	                              "DROP INDEX records_listing; "
	                              "DELETE FROM derenroll_schema WHERE version = 4"),
	                 0);
	s = open_role("sue", "sue pass", &rc);
	assert_null(s);
	assert_int_equal(rc, ENR_E_PERM);
	assert_non_null(strstr(enr_error_last(), "has schema 3 and this derenroll needs 4"));
	assert_non_null(strstr(enr_error_last(), "only the owner of its tables may upgrade it"));
	assert_non_null(strstr(enr_error_last(), "must be owner"));
	assert_sql("SELECT max(version) FROM derenroll_schema", "3");
	owner = open_as(NULL, PASS, 0);
	enr_store_free(owner);
	assert_sql("SELECT max(version) FROM derenroll_schema", "4");
	s = open_role("sue", "sue pass", &rc);
	assert_int_equal(rc, 0);
	enr_store_free(s);
	/* No entry in another login's name; an installer reads only their own. */
	enr_store_free(open_role("ivan", "ivan pass", &rc)); /* for role_url */
	conn = PQconnectdb(role_url);
	assert_int_equal(PQstatus(conn), CONNECTION_OK);
	res = PQexec(conn, "INSERT INTO audit (member, db_user, action, result) VALUES "
	                   "('sue', 'sue', 'remove', 'ok')");
	assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
	assert_non_null(strstr(PQresultErrorMessage(res), "row-level security"));
	PQclear(res);
	res = PQexec(conn, "SELECT count(*), count(*) FILTER (WHERE db_user = 'ivan') FROM audit");
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	assert_true(atoi(PQgetvalue(res, 0, 0)) > 0);
	assert_string_equal(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
	PQclear(res);
	PQfinish(conn);
	/* Nobody but the owner rewrites the log. */
	conn = PQconnectdb(role_url);
	assert_int_equal(PQstatus(conn), CONNECTION_OK);
	res = PQexec(conn, "DELETE FROM audit");
	assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
	PQclear(res);
	PQfinish(conn);
	free(ivan_id);
	free(sue_id);
	free(sql);
	free(path);
}

/* ---- shared rate limits ---- */

static void a_shared_bucket_is_shared(void **state)
{
	struct enr_store *a = open_as(NULL, PASS, 0), *b = open_as(NULL, PASS, 0);
	long long wait = -1;

	(void)state;
	/* 2 per 10 s: two takes pass, from either machine; the third waits about 5 s. */
	assert_int_equal(enr_store_take_rate(a, "sma/app", 2, 0.2, 1, &wait), 0);
	assert_int_equal(wait, 0);
	assert_int_equal(enr_store_take_rate(b, "sma/app", 2, 0.2, 1, &wait), 0);
	assert_int_equal(wait, 0);
	assert_int_equal(enr_store_take_rate(a, "sma/app", 2, 0.2, 1, &wait), 0);
	assert_true(wait > 4000 && wait <= 5001);
	/* Another limit is another bucket. */
	assert_int_equal(enr_store_take_rate(b, "enphase/app", 10, 10.0 / 60, 2, &wait), 0);
	assert_int_equal(wait, 0);
	enr_store_free(a);
	enr_store_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(records_round_trip_and_the_database_sees_no_secret,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(a_second_handle_catches_up, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_handle_on_demand_reads_only_what_it_is_asked_for,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(a_locked_record_waits_for_its_holder, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_killed_holder_leaves_no_lock, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_member_added_reads_a_member_removed_cannot, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(the_log_says_who_did_what, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_newer_schema_is_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        offline_enrollments_wait_in_the_outbox_and_are_pushed_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_handle_outlives_a_restart_of_the_server, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(listing_what_may_be_due_reads_a_superset_of_it, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(pages_walk_every_record_most_urgent_first, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(roles_let_installers_add_and_see_their_own, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(a_shared_bucket_is_shared, setup, teardown),
	};
	int failed;

	test_env_setup();
	if (test_pg_start(&pg) < 0) {
		fprintf(stderr, "cannot start PostgreSQL\n");
		return 1;
	}
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_pg_stop(&pg);
	test_env_cleanup();
	return failed;
}
