/* Enrollment sessions, checks and the lifecycle against the in-process
 * sandbox: every vendor and method to a saved record, each failure the
 * installer must understand, refresh with rotation, re-authorization, two
 * processes refreshing one record, and a crash right after a token answer. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "fixtures.h"
#include "helpers.h"
#include "derenroll/check.h"
#include "derenroll/config.h"
#include "derenroll/enroll.h"
#include "derenroll/bulk.h"
#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/oauth.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"

#define PASSPHRASE "a passphrase for the enroll tests"
#define DAY        86400LL
#define SLACK      600LL /* seconds of leeway on expiry times (a loaded machine) */

struct fixture {
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	struct enr_catalog *catalog;
	struct enr_store *store;
	char dir[256];
	char *store_path;
	json_object *creds; /* the sandbox's printed credentials */
};

/* ---- the crash test's wrap ---------------------------------------------- */

int __real_enr_store_lock_journal(struct enr_store *store, struct enr_store_lock *lock, bool sync);
int __wrap_enr_store_lock_journal(struct enr_store *store, struct enr_store_lock *lock, bool sync);

static int crash_after_token_save;

/* The real save, then (in the crash test's child) the process dies at once. */
int __wrap_enr_store_lock_journal(struct enr_store *store, struct enr_store_lock *lock, bool sync)
{
	int rc = __real_enr_store_lock_journal(store, lock, sync);

	if (crash_after_token_save)
		_exit(rc == 0 ? 0 : 7);
	return rc;
}

/* ---- fixture ------------------------------------------------------------ */

static int open_store(struct enr_store **out, const char *path)
{
	static const struct enr_store_kdf kdf = {10, 8, 1};
	struct enr_store_options opts = {
	    .path = path, .passphrase = PASSPHRASE, .kdf = &kdf, .create = true};

	return enr_store_open(out, &opts);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct enr_sandbox_options sopts = {.seed = 42, .sma_accept_ms = 50};
	char *json = NULL;

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/enroll-XXXXXX", getenv("HOME"));
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(enr_catalog_load(&f->catalog, NULL), 0);
	sopts.catalog = f->catalog;
	assert_int_equal(enr_sandbox_start(&f->sb, &sopts), 0);
	assert_int_equal(enr_sandbox_config(&f->cfg, f->sb), 0);
	assert_int_equal(enr_sandbox_credentials_json(&json, f->sb), 0);
	f->creds = json_tokener_parse(json);
	free(json);
	assert_non_null(f->creds);
	f->store_path = malloc(strlen(f->dir) + 8);
	sprintf(f->store_path, "%s/store", f->dir);
	assert_int_equal(open_store(&f->store, f->store_path), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[300];

	enr_store_free(f->store);
	enr_sandbox_stop(f->sb);
	enr_config_free(f->cfg);
	enr_catalog_free(f->catalog);
	json_object_put(f->creds);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "# could not remove %s\n", f->dir);
	free(f->store_path);
	free(f);
	return 0;
}

/* A credential of the sandbox: "solis.key_secret". */
static const char *cred(const struct fixture *f, const char *vendor, const char *key)
{
	json_object *v = NULL, *k = NULL;

	assert_true(json_object_object_get_ex(f->creds, vendor, &v));
	assert_true(json_object_object_get_ex(v, key, &k));
	return json_object_get_string(k);
}

/* The same configuration less some keys (section, key pairs; NULL-terminated). */
static struct enr_config *config_without(const struct enr_config *cfg, const char *const *drop)
{
	struct enr_config *out = NULL;
	const char *section, *key, *value;

	assert_int_equal(enr_config_new(&out), 0);
	for (size_t i = 0; enr_config_entry(cfg, i, &section, &key, &value) == 0; i++) {
		bool skip = false;
		for (size_t j = 0; drop[j]; j += 2)
			skip |= strcmp(section, drop[j]) == 0 &&
			        (!drop[j + 1] || strcmp(key, drop[j + 1]) == 0);
		if (!skip)
			assert_int_equal(enr_config_set(out, section, key, value), 0);
	}
	return out;
}

/* ---- the customer's browser (libcurl, no redirects followed) ------------ */

struct page {
	long status;
	char *body;
	size_t len;
	char *location;
	CURLcode curl;
};

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
	struct page *p = userdata;
	char *grown = realloc(p->body, p->len + size * n + 1);

	if (!grown)
		return 0;
	p->body = grown;
	memcpy(p->body + p->len, data, size * n);
	p->len += size * n;
	p->body[p->len] = '\0';
	return size * n;
}

/* Thread-safe: no cmocka assertions here. */
static void browse(struct page *p, const char *url)
{
	CURL *curl = curl_easy_init();
	char *location = NULL;

	memset(p, 0, sizeof(*p));
	if (!curl) {
		p->curl = CURLE_FAILED_INIT;
		return;
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, p);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 60000L);
	p->curl = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &p->status);
	curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location);
	p->location = location ? strdup(location) : NULL;
	curl_easy_cleanup(curl);
}

static void page_done(struct page *p)
{
	free(p->body);
	free(p->location);
	memset(p, 0, sizeof(*p));
}

/* The vendor's authorize page with the sandbox's answer: the redirect, malloc'd. */
static char *approve(const char *authorize_url, const char *extra)
{
	struct page p;
	char *url = malloc(strlen(authorize_url) + strlen(extra) + 2), *location;

	if (!url)
		return NULL;
	sprintf(url, "%s&%s", authorize_url, extra);
	browse(&p, url);
	free(url);
	location = p.status == 302 ? p.location : NULL;
	p.location = NULL;
	page_done(&p);
	return location;
}

/* The customer on their phone: short link (or authorize URL), approve, callback. */
struct customer {
	const char *link;
	const char *extra; /* "sandbox_auto=approve&sandbox_account=alice" */
	pthread_t thread;
	long link_status, callback_status;
	bool reached_callback;
};

static void *customer_main(void *arg)
{
	struct customer *c = arg;
	char *authorize = strdup(c->link), *callback;
	struct page p;

	if (strstr(c->link, "/relay/s/")) {
		browse(&p, c->link);
		c->link_status = p.status;
		free(authorize);
		authorize = p.location;
		p.location = NULL;
		page_done(&p);
	}
	callback = authorize ? approve(authorize, c->extra) : NULL;
	if (callback) {
		c->reached_callback = true;
		browse(&p, callback);
		c->callback_status = p.status;
		page_done(&p);
	}
	free(authorize);
	free(callback);
	return NULL;
}

static void customer_start(struct customer *c, const char *link, const char *extra)
{
	memset(c, 0, sizeof(*c));
	c->link = link;
	c->extra = extra;
	assert_int_equal(pthread_create(&c->thread, NULL, customer_main, c), 0);
}

static void customer_join(struct customer *c)
{
	assert_int_equal(pthread_join(c->thread, NULL), 0);
	assert_true(c->reached_callback);
}

/* ---- driving a session -------------------------------------------------- */

/* Runs the session's loop until it needs the caller (or LINK, if asked). */
/* One turn of the session's loop (a quarter of a second at most). */
static void step(struct enr_enroll *e)
{
	struct pollfd fds[32];
	size_t n = enr_enroll_poll_fds(e, fds, 32);
	long t = enr_enroll_timeout_ms(e);

	poll(fds, n > 32 ? 32 : n, t < 0 || t > 250 ? 250 : (int)t);
	enr_enroll_process(e);
}

static enum enr_enroll_state drive(struct enr_enroll *e, bool stop_at_link)
{
	time_t give_up = time(NULL) + 120;

	for (;;) {
		enum enr_enroll_state st = enr_enroll_state(e);

		if (st == ENR_ENROLL_DONE || st == ENR_ENROLL_FAILED || st == ENR_ENROLL_SITES ||
		    st == ENR_ENROLL_FIELDS || (st == ENR_ENROLL_LINK && stop_at_link))
			return st;
		if (time(NULL) > give_up)
			fail_msg("the session is stuck: %s", enr_enroll_message(e));
		step(e);
	}
}

static struct enr_enroll *session(struct fixture *f, const struct enr_config *cfg,
                                  const char *vendor, const char *method, const char *customer)
{
	struct enr_enroll_options opts = {.store = f->store,
	                                  .cfg = cfg ? cfg : f->cfg,
	                                  .catalog = f->catalog,
	                                  .vendor = vendor,
	                                  .method = method,
	                                  .customer = customer};
	struct enr_enroll *e = NULL;
	int rc = enr_enroll_new(&e, &opts);

	if (rc < 0)
		fail_msg("enr_enroll_new(%s, %s): %s", vendor, method ? method : "-",
		         enr_error_last());
	return e;
}

/* LINK with the relay: the customer plays `extra`; the final state. */
static enum enr_enroll_state relay_consent(struct enr_enroll *e, const char *extra)
{
	struct customer c;
	enum enr_enroll_state st;

	assert_int_equal(drive(e, true), ENR_ENROLL_LINK);
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_RELAY);
	assert_non_null(strstr(enr_enroll_link(e), "/relay/s/"));
	customer_start(&c, enr_enroll_link(e), extra);
	st = drive(e, false);
	customer_join(&c);
	assert_int_equal(c.link_status, 302);
	return st;
}

/* SITES with one site (or `site_id`): chosen; then DONE expected. */
static void choose(struct enr_enroll *e, const char *site_id)
{
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_SITES);
	if (!site_id) {
		assert_int_equal(enr_enroll_site_count(e), 1);
		site_id = enr_enroll_site(e, 0)->id;
	}
	assert_int_equal(enr_enroll_choose_site(e, site_id), 0);
}

static void expect_done(struct enr_enroll *e)
{
	if (enr_enroll_state(e) != ENR_ENROLL_DONE)
		fail_msg("state %d, error %d: %s", enr_enroll_state(e), enr_enroll_error(e),
		         enr_enroll_message(e));
	assert_non_null(enr_enroll_record(e));
}

/* Runs the session to its one site and chooses it (a re-authorization of a
 * one-site record saves at once): DONE expected. */
static void complete(struct enr_enroll *e)
{
	if (drive(e, false) == ENR_ENROLL_SITES)
		choose(e, NULL);
	expect_done(e);
}

static void expect_failed(struct enr_enroll *e, int error, const char *text)
{
	if (enr_enroll_state(e) != ENR_ENROLL_FAILED || enr_enroll_error(e) != error)
		fail_msg("expected error %d, got state %d error %d: %s", error, enr_enroll_state(e),
		         enr_enroll_error(e), enr_enroll_message(e));
	if (text && !strstr(enr_enroll_message(e), text))
		fail_msg("'%s' not in the message: %s", text, enr_enroll_message(e));
	assert_null(enr_enroll_record(e));
}

static void near(long long got, long long expected)
{
	if (got < expected - SLACK || got > expected + SLACK)
		fail_msg("%lld is not within %lld s of %lld", got, SLACK, expected);
}

/* The stored copy of record `id` (read from disk through a second handle). */
static struct enr_record *stored(const struct fixture *f, const char *id)
{
	struct enr_store *s = NULL;
	struct enr_record *rec = NULL;

	assert_int_equal(open_store(&s, f->store_path), 0);
	assert_int_equal(enr_store_get(&rec, s, id), 0);
	enr_store_free(s);
	return rec;
}

static size_t stored_count(const struct fixture *f)
{
	struct enr_store *s = NULL;
	size_t n;

	assert_int_equal(open_store(&s, f->store_path), 0);
	n = enr_store_count(s);
	enr_store_free(s);
	return n;
}

/* Enrolls a Tesla customer through the relay as `account`; the record id. */
static char *enroll_tesla(struct fixture *f, const char *customer, const char *account)
{
	struct enr_enroll *e = session(f, NULL, "tesla", NULL, customer);
	char extra[128];
	char *id;

	snprintf(extra, sizeof(extra), "sandbox_auto=approve&sandbox_account=%s", account);
	relay_consent(e, extra);
	complete(e);
	id = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);
	return id;
}

/* The code Enphase's code page shows, malloc'd. */
static char *code_from_page(const char *url)
{
	struct page p;
	const char *start;
	char *code;

	browse(&p, url);
	assert_int_equal(p.status, 200);
	start = strstr(p.body, "id=\"code\">");
	assert_non_null(start);
	start += strlen("id=\"code\">");
	code = strndup(start, strcspn(start, "<"));
	page_done(&p);
	return code;
}

/* ---- every vendor and method to a saved record -------------------------- */

static void tesla_oauth(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "tesla", NULL, "Alice, job 17");
	const struct enr_record *rec;
	struct enr_record *disk;
	long long now = (long long)time(NULL);
	char *id;

	relay_consent(e, "sandbox_auto=approve&sandbox_account=alice");
	complete(e);
	rec = enr_enroll_record(e);
	assert_false(enr_enroll_updated(e));
	assert_string_equal(rec->vendor, "tesla");
	assert_string_equal(rec->method, "oauth");
	assert_string_equal(rec->customer, "Alice, job 17");
	assert_int_equal(rec->cred.type, ENR_CRED_OAUTH);
	assert_non_null(rec->account);
	assert_int_equal(rec->n_sites, 1);
	assert_non_null(rec->cred.tokens.refresh_token);
	near(rec->refresh_expires_at, now + 90 * DAY);
	assert_true(rec->access_expires_at > now);
	id = strdup(rec->id);
	disk = stored(f, id);
	assert_string_equal(disk->account, rec->account);
	assert_string_equal(disk->sites[0].id, rec->sites[0].id);
	assert_string_equal(disk->cred.tokens.refresh_token, rec->cred.tokens.refresh_token);
	assert_int_equal(disk->last_check.outcome, ENR_OUTCOME_OK);
	enr_record_free(disk);
	enr_enroll_free(e);

	/* The same (vendor, site) again: the same record, updated. */
	e = session(f, NULL, "tesla", NULL, "Alice again");
	relay_consent(e, "sandbox_auto=approve&sandbox_account=alice");
	complete(e);
	assert_true(enr_enroll_updated(e));
	assert_string_equal(enr_enroll_record(e)->id, id);
	assert_int_equal(stored_count(f), 1);
	enr_enroll_free(e);
	free(id);
}

static void tesla_loopback(void **state)
{
	struct fixture *f = *state;
	static const char *const drop[] = {"relay", NULL, "vendor.tesla", "redirect_uri", NULL};
	struct enr_config *cfg = config_without(f->cfg, drop);
	struct enr_enroll *e = session(f, cfg, "tesla", "oauth", "Bob");
	struct customer c;

	assert_int_equal(drive(e, true), ENR_ENROLL_LINK);
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_LOOPBACK);
	assert_non_null(strstr(enr_enroll_link(e), "redirect_uri=http%3A%2F%2F127.0.0.1"));
	customer_start(&c, enr_enroll_link(e), "sandbox_auto=approve&sandbox_account=bob");
	assert_int_equal(drive(e, false), ENR_ENROLL_SITES);
	customer_join(&c);
	assert_int_equal(c.callback_status, 200);
	choose(e, NULL);
	expect_done(e);
	assert_int_equal(stored_count(f), 1);
	enr_enroll_free(e);
	enr_config_free(cfg);
}

static void sma_oauth(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "sma", "oauth", "Carol");
	const struct enr_record *rec;

	relay_consent(e, "sandbox_auto=approve");
	complete(e);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->vendor, "sma");
	assert_string_equal(rec->method, "oauth");
	assert_non_null(rec->cred.tokens.refresh_token);
	assert_int_equal(rec->refresh_expires_at, 0); /* offline_access: no expiry */
	assert_int_equal(rec->n_sites, 1);
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);
}

/* ---- OAuth as a standards-strict provider holds a client to it -------- */

/* f->cfg with one more setting (freed by the caller). */
static struct enr_config *config_with(const struct fixture *f, const char *section, const char *key,
                                      const char *value)
{
	struct enr_config *cfg = config_without(f->cfg, (const char *const[]){NULL});

	assert_int_equal(enr_config_set(cfg, section, key, value), 0);
	return cfg;
}

/* A Tesla enrollment through the relay with `cfg` (NULL: the fixture's) as
 * `account`: the final state, the session left for the caller to read. */
static struct enr_enroll *tesla_session(struct fixture *f, const struct enr_config *cfg,
                                        const char *account)
{
	struct enr_enroll *e = session(f, cfg, "tesla", NULL, "Strict");
	char extra[128];

	snprintf(extra, sizeof(extra), "sandbox_auto=approve&sandbox_account=%s", account);
	if (relay_consent(e, extra) == ENR_ENROLL_SITES)
		choose(e, NULL);
	return e;
}

/* OIDC Core 11: offline_access (a refresh token) only with prompt=consent. */
static void provider_refresh_needs_consent(void **state)
{
	struct fixture *f = *state;
	struct enr_config *cfg;
	struct enr_enroll *e;
	struct enr_record *disk;
	bool refreshed = true;
	char *id;

	assert_int_equal(enr_sandbox_set(f->sb, "refresh_needs_consent", 1), 0);
	e = tesla_session(f, NULL, "olga");
	expect_failed(e, ENR_E_MISCONFIGURED, "gave no refresh token");
	assert_non_null(strstr(enr_enroll_message(e), "[vendor.tesla] authorize_params = "
	                                              "prompt=consent"));
	assert_null(strstr(enr_enroll_link(e) ? enr_enroll_link(e) : "", "prompt="));
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 0);

	/* Not strict: saved, and the same line is the enrollment's warning. */
	cfg = config_with(f, "vendor.tesla", "strict_refresh", "false");
	e = tesla_session(f, cfg, "olga");
	expect_done(e);
	assert_null(enr_enroll_record(e)->cred.tokens.refresh_token);
	assert_non_null(enr_enroll_warning(e));
	assert_non_null(strstr(enr_enroll_warning(e), "prompt=consent"));
	id = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);
	enr_config_free(cfg);
	/* Honest classes: refreshing it needs the customer (rejected, due now). */
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed),
	    ENR_E_REJECTED);
	assert_false(refreshed);
	disk = stored(f, id);
	assert_int_equal(disk->last_check.outcome, ENR_OUTCOME_REJECTED);
	assert_int_equal(enr_status_of(disk, (long long)time(NULL), 7, NULL), ENR_STATUS_REJECTED);
	enr_record_free(disk);
	free(id);

	/* Asked with prompt=consent: the refresh token comes. */
	cfg = config_with(f, "vendor.tesla", "authorize_params", "prompt=consent");
	e = tesla_session(f, cfg, "olga");
	expect_done(e);
	assert_non_null(enr_enroll_record(e)->cred.tokens.refresh_token);
	assert_null(enr_enroll_warning(e));
	enr_enroll_free(e);
	enr_config_free(cfg);
}

/* RFC 9207: the redirect's iss must be the vendor's issuer. */
static void provider_sends_iss(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e;

	assert_int_equal(enr_sandbox_set(f->sb, "iss", 1), 0);
	e = tesla_session(f, NULL, "ivan");
	expect_done(e);
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);

	/* A mix-up: SMA's issuer on Tesla's answer. */
	assert_int_equal(enr_sandbox_set(f->sb, "iss", 2), 0);
	e = tesla_session(f, NULL, "ivan2");
	expect_failed(e, ENR_E_STATE, "another sign-in server");
	assert_non_null(strstr(enr_enroll_message(e), "/sma"));
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);
}

/* PKCE S256 on the loopback flow always; elsewhere where configured. */
static void provider_requires_pkce(void **state)
{
	struct fixture *f = *state;
	static const char *const drop[] = {"relay", NULL, "vendor.tesla", "redirect_uri", NULL};
	struct enr_config *cfg = config_without(f->cfg, drop);
	struct enr_enroll *e;
	struct customer c;

	assert_int_equal(enr_sandbox_set(f->sb, "require_pkce", 1), 0);
	/* The relay's flow is a confidential client's: Tesla's PKCE is off in vendors.json. */
	e = tesla_session(f, NULL, "pia");
	expect_failed(e, ENR_E_MISCONFIGURED, "code_challenge is required");
	assert_non_null(strstr(enr_enroll_message(e), "set [vendor.tesla] pkce = true"));
	enr_enroll_free(e);
	/* [vendor.tesla] pkce = true: the relay's flow sends it too. */
	enr_config_free(cfg);
	cfg = config_with(f, "vendor.tesla", "pkce", "true");
	e = tesla_session(f, cfg, "pia");
	expect_done(e);
	assert_non_null(strstr(enr_enroll_authorize_url(e), "code_challenge_method=S256"));
	enr_enroll_free(e);
	enr_config_free(cfg);
	/* The loopback flow: always. */
	cfg = config_without(f->cfg, drop);
	e = session(f, cfg, "tesla", "oauth", "Pia at home");
	assert_int_equal(drive(e, true), ENR_ENROLL_LINK);
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_LOOPBACK);
	customer_start(&c, enr_enroll_link(e), "sandbox_auto=approve&sandbox_account=pia3");
	assert_int_equal(drive(e, false), ENR_ENROLL_SITES);
	customer_join(&c);
	choose(e, NULL);
	expect_done(e);
	enr_enroll_free(e);
	enr_config_free(cfg);
	assert_int_equal(stored_count(f), 2);
}

/* OIDC Core 3.1.3.7: the id_token's signature (the JWKS), aud and exp. */
static void provider_id_tokens(void **state)
{
	struct fixture *f = *state;
	static const char *const no_jwks[] = {"vendor.tesla", "jwks_url", NULL, NULL};
	struct enr_config *cfg;
	struct enr_enroll *e;
	static const struct {
		long mode;
		const char *says; /* NULL: it enrolls */
	} cases[] = {
	    {0, NULL},                          /* RS256, the JWKS's key */
	    {1, NULL},                          /* ES256, the JWKS's key */
	    {2, "signature matches no key"},    /* forged */
	    {3, "is for another client (aud)"}, /* another app's */
	    {4, "is expired"},                  /* stale */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char account[32];
		assert_int_equal(enr_sandbox_set(f->sb, "id_token", cases[i].mode), 0);
		snprintf(account, sizeof(account), "idt-%zu", i);
		e = tesla_session(f, NULL, account);
		if (cases[i].says) {
			expect_failed(e, ENR_E_STATE, cases[i].says);
			assert_non_null(strstr(enr_enroll_message(e), "Tesla"));
		} else {
			char uid[64];
			expect_done(e);
			/* The account is the verified id_token's sub. */
			assert_non_null(enr_enroll_record(e)->account);
			snprintf(uid, sizeof(uid), "%s", enr_enroll_record(e)->account);
			assert_true(strlen(uid) > 0);
		}
		enr_enroll_free(e);
	}
	assert_int_equal(stored_count(f), 2);

	/* No JWKS known: the signature cannot be checked, aud and exp still are. */
	cfg = config_without(f->cfg, no_jwks);
	assert_int_equal(enr_sandbox_set(f->sb, "id_token", 2), 0);
	e = tesla_session(f, cfg, "idt-nojwks");
	expect_done(e);
	enr_enroll_free(e);
	assert_int_equal(enr_sandbox_set(f->sb, "id_token", 4), 0);
	e = tesla_session(f, cfg, "idt-nojwks2");
	expect_failed(e, ENR_E_STATE, "is expired");
	enr_enroll_free(e);
	enr_config_free(cfg);
}

/* Enphase's own code page: the customer reads the code to the installer. */
static struct enr_enroll *enphase_paste(struct fixture *f, const struct enr_config *cfg,
                                        char **location)
{
	struct enr_enroll *e = session(f, cfg, "enphase", "oauth", "Dan");

	assert_int_equal(drive(e, true), ENR_ENROLL_LINK);
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_PASTE);
	*location = approve(enr_enroll_authorize_url(e), "sandbox_auto=approve");
	assert_non_null(*location);
	assert_non_null(strstr(*location, "/enphase/oauth/redirect_uri?"));
	return e;
}

/* The same, the code read from the page and typed in. */
static struct enr_enroll *enphase_typed(struct fixture *f)
{
	char *location = NULL, *code;
	struct enr_enroll *e = enphase_paste(f, NULL, &location);

	code = code_from_page(location);
	assert_int_equal(enr_enroll_submit_code(e, code), 0);
	free(code);
	free(location);
	return e;
}

static void enphase_oauth(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = enphase_typed(f);
	const struct enr_record *rec;
	long long now = (long long)time(NULL);

	complete(e);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->vendor, "enphase");
	assert_non_null(rec->account); /* enl_uid */
	near(rec->access_expires_at, now + DAY);
	near(rec->refresh_expires_at, now + 30 * DAY);
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);
}

/* The code Enphase's page shows (the sandbox's, in vendors.json's shape) read
 * aloud and typed in groups; a typo is said before any call, and the
 * session waits for the right code. */
static void enphase_code_read_aloud(void **state)
{
	struct fixture *f = *state;
	char *location = NULL, *code, grouped[128] = "", typo[128];
	struct enr_enroll *e = enphase_paste(f, NULL, &location);
	size_t n = 0;

	code = code_from_page(location);
	assert_int_equal(strlen(code), 32);
	assert_int_equal(
	    strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"), 32);
	for (size_t i = 0; code[i]; i += 4)
		n += (size_t)snprintf(grouped + n, sizeof(grouped) - n, "%s%.4s", i ? " " : "",
		                      code + i);
	snprintf(typo, sizeof(typo), "%s!", grouped);
	assert_int_equal(enr_enroll_submit_code(e, typo), ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "'!' is not in Enphase codes"));
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_LINK);
	typo[strlen(typo) - 1] = 'Z'; /* a character too many */
	assert_int_equal(enr_enroll_submit_code(e, typo), ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "33 characters: "));
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_LINK);
	assert_int_equal(enr_enroll_submit_code(e, grouped), 0);
	complete(e);
	enr_enroll_free(e);
	free(code);
	free(location);
}

/* The whole final address pasted, with a wrong state or none. */
static void enphase_paste_state(void **state)
{
	struct fixture *f = *state;
	char *location = NULL, *code, *bad;
	struct enr_enroll *e = enphase_paste(f, NULL, &location);

	bad = strdup(location);
	memcpy(strstr(bad, "state=") + 6, "XXXX", 4);
	assert_int_equal(enr_enroll_submit_code(e, bad), ENR_E_STATE);
	expect_failed(e, ENR_E_STATE, NULL);
	enr_enroll_free(e);
	free(bad);
	free(location);

	e = enphase_paste(f, NULL, &location);
	code = code_from_page(location);
	bad = malloc(strlen(code) + 64);
	sprintf(bad, "https://example.com/redirect?code=%s", code);
	assert_int_equal(enr_enroll_submit_code(e, bad), ENR_E_STATE);
	expect_failed(e, ENR_E_STATE, NULL);
	enr_enroll_free(e);
	free(bad);
	free(code);
	free(location);

	/* The right address works. */
	e = enphase_paste(f, NULL, &location);
	assert_int_equal(enr_enroll_submit_code(e, location), 0);
	complete(e);
	enr_enroll_free(e);
	free(location);
	assert_int_equal(stored_count(f), 1);
}

static void sma_email(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "sma", "email", "Erin");
	const struct enr_record *rec;

	assert_int_equal(drive(e, false), ENR_ENROLL_FIELDS);
	assert_int_equal(enr_enroll_set_field(e, "owner_email", "owner-erin@example.com"), 0);
	assert_int_equal(enr_enroll_submit_fields(e), 0);
	complete(e);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->method, "email");
	assert_string_equal(rec->cred.owner_email, "owner-erin@example.com");
	assert_int_equal(rec->refresh_expires_at, 0);
	enr_enroll_free(e);

	e = session(f, NULL, "sma", "email", "Frank");
	assert_int_equal(drive(e, false), ENR_ENROLL_FIELDS);
	assert_int_equal(enr_enroll_set_field(e, "owner_email", "decline-frank@example.com"), 0);
	assert_int_equal(enr_enroll_submit_fields(e), 0);
	drive(e, false);
	expect_failed(e, ENR_E_DECLINED, "declined");
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);
}

/* SMA asking, while the owner is awaited, to wait for years: the session does
 * not sleep on it but fails at once, saying when to try again. */
static void sma_email_retry_after_beyond_max_wait(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "sma", "email", "Ida");
	time_t give_up = time(NULL) + 60;

	assert_int_equal(drive(e, false), ENR_ENROLL_FIELDS);
	assert_int_equal(enr_enroll_set_field(e, "owner_email", "owner-ida@example.com"), 0);
	assert_int_equal(enr_enroll_submit_fields(e), 0);
	/* SMA has e-mailed the owner: what comes next is a poll of the answer. */
	while (!strstr(enr_enroll_message(e), "e-mailed") && time(NULL) < give_up)
		step(e);
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_WAIT);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "sma", ENR_SANDBOX_FAULT_429, 0, 99999999),
	                 0);
	while (enr_enroll_state(e) == ENR_ENROLL_WAIT && time(NULL) < give_up)
		step(e);
	expect_failed(e, ENR_E_TRANSIENT, "try again tomorrow");
	assert_null(strstr(enr_enroll_message(e), "99999999"));
	enr_enroll_free(e);
	enr_sandbox_clear_faults(f->sb);
}

static struct enr_enroll *sma_email_session(struct fixture *f, const char *customer,
                                            const char *owner)
{
	struct enr_enroll *e = session(f, NULL, "sma", "email", customer);

	assert_int_equal(drive(e, false), ENR_ENROLL_FIELDS);
	assert_int_equal(enr_enroll_set_field(e, "owner_email", owner), 0);
	assert_int_equal(enr_enroll_submit_fields(e), 0);
	drive(e, false);
	return e;
}

/* The app's token sees every consenting owner's plants: the plants no record
 * holds come first, the others say whose they are; an owner who consented
 * before (SMA answers 409) goes straight to the plants; a lapsed request is
 * a clear failure. */
static void sma_email_plants_of_other_owners(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = sma_email_session(f, "Erin", "owner-erin@example.com");
	char erin_plant[64];

	complete(e);
	snprintf(erin_plant, sizeof(erin_plant), "%s", enr_enroll_record(e)->sites[0].id);
	enr_enroll_free(e);

	e = sma_email_session(f, "Gail", "owner-gail@example.com");
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_SITES);
	assert_int_equal(enr_enroll_site_count(e), 2);
	assert_string_not_equal(enr_enroll_site(e, 0)->id, erin_plant);
	assert_null(enr_enroll_site_holder(e, 0));
	assert_string_equal(enr_enroll_site(e, 1)->id, erin_plant);
	assert_string_equal(enr_enroll_site_holder(e, 1), "Erin");
	assert_int_equal(enr_enroll_choose_site(e, enr_enroll_site(e, 0)->id), 0);
	expect_done(e);
	enr_enroll_free(e);

	/* Erin again: SMA refuses a second request (409); her plants are readable. */
	e = sma_email_session(f, "Erin", "owner-erin@example.com");
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_SITES);
	assert_non_null(strstr(enr_enroll_message(e), "found 2 sites"));
	assert_string_equal(enr_enroll_site_holder(e, 0), "Erin");
	assert_string_equal(enr_enroll_site_holder(e, 1), "Gail");
	enr_enroll_free(e);

	e = sma_email_session(f, "Hank", "expire-hank@example.com");
	expect_failed(e, ENR_E_REJECTED, "expired");
	assert_null(strchr(enr_enroll_message(e), '\n'));
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 2);
}

static void fill(struct enr_enroll *e, const char *const *pairs)
{
	assert_int_equal(drive(e, false), ENR_ENROLL_FIELDS);
	for (size_t i = 0; pairs[i]; i += 2)
		if (enr_enroll_set_field(e, pairs[i], pairs[i + 1]) < 0)
			fail_msg("field %s: %s", pairs[i], enr_error_last());
	assert_int_equal(enr_enroll_submit_fields(e), 0);
}

/* Enphase's partner method filled in with the sandbox's tokens: at SITES. */
static struct enr_enroll *enphase_partner_sites(struct fixture *f, const char *customer)
{
	struct enr_enroll *e = session(f, NULL, "enphase", "partner", customer);
	const char *const pairs[] = {"access_token",
	                             cred(f, "enphase_partner", "access_token"),
	                             "refresh_token",
	                             cred(f, "enphase_partner", "refresh_token"),
	                             "api_key",
	                             cred(f, "enphase_partner", "api_key"),
	                             NULL};

	fill(e, pairs);
	assert_int_equal(drive(e, false), ENR_ENROLL_SITES);
	return e;
}

static void enphase_partner(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = enphase_partner_sites(f, "Gina");
	const struct enr_record *rec;
	char site[64];

	assert_int_equal(enr_enroll_site_count(e), 3);
	snprintf(site, sizeof(site), "%s", enr_enroll_site(e, 2)->id);
	assert_int_equal(enr_enroll_choose_site(e, "no-such-site"), ENR_E_USAGE);
	choose(e, site);
	expect_done(e);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->method, "partner");
	assert_int_equal(rec->cred.type, ENR_CRED_PARTNER);
	assert_string_equal(rec->sites[0].id, site);
	assert_true(rec->access_expires_at > 0);
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);
}

static void solaredge_key(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "solaredge", NULL, "Hal");
	const char *const pairs[] = {"api_key", "CUSTOMERKEY0001", NULL};
	const struct enr_record *rec;

	fill(e, pairs);
	complete(e);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->method, "key");
	assert_string_equal(rec->cred.api_key, "CUSTOMERKEY0001");
	assert_int_equal(rec->access_expires_at, 0);
	assert_int_equal(rec->refresh_expires_at, 0);
	enr_enroll_free(e);
}

static void solis_key(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "solis", "key", "Ida");
	const char *const pairs[] = {"key_id", "demo-1234567", "key_secret",
	                             cred(f, "solis", "key_secret"), NULL};
	const struct enr_record *rec;

	fill(e, pairs);
	complete(e);
	rec = enr_enroll_record(e);
	assert_int_equal(rec->cred.type, ENR_CRED_KEY_PAIR);
	assert_string_equal(rec->cred.key_id, "demo-1234567");
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);
}

/* The company's portal account: three sites, the installer picks one. */
static void account_method(struct fixture *f, const char *vendor)
{
	struct enr_enroll *e = session(f, NULL, vendor, "account", "Jo");
	const struct enr_record *rec;
	char site[64];

	assert_int_equal(drive(e, false), ENR_ENROLL_SITES);
	assert_int_equal(enr_enroll_site_count(e), 3);
	snprintf(site, sizeof(site), "%s", enr_enroll_site(e, 1)->id);
	choose(e, site);
	expect_done(e);
	rec = enr_enroll_record(e);
	assert_int_equal(rec->cred.type, ENR_CRED_ACCOUNT);
	assert_string_equal(rec->cred.account.site_id, site);
	assert_int_equal(rec->n_sites, 1);
	assert_string_equal(rec->sites[0].id, site);
	enr_enroll_free(e);
}

static void solaredge_solis_account(void **state)
{
	struct fixture *f = *state;

	account_method(f, "solaredge");
	account_method(f, "solis");
	assert_int_equal(stored_count(f), 2);
}

/* One customer, several sites of a portal account: one record per site, each
 * naming its own site; an id chosen twice counts once. */
static void several_sites_one_record_each(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "solaredge", "account", "Lou");
	char first[64], third[64];
	const char *ids[3];

	assert_int_equal(drive(e, false), ENR_ENROLL_SITES);
	assert_int_equal(enr_enroll_site_count(e), 3);
	snprintf(first, sizeof(first), "%s", enr_enroll_site(e, 0)->id);
	snprintf(third, sizeof(third), "%s", enr_enroll_site(e, 2)->id);
	ids[0] = first;
	ids[1] = third;
	ids[2] = first;
	assert_int_equal(enr_enroll_choose_sites(e, ids, 0), ENR_E_USAGE);
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_SITES);
	assert_int_equal(enr_enroll_choose_sites(e, ids, 3), 0);
	expect_done(e);
	assert_int_equal(enr_enroll_record_count(e), 2);
	assert_non_null(strstr(enr_enroll_message(e), "Saved 2 records for Lou"));
	assert_null(enr_enroll_warning(e));
	for (size_t i = 0; i < 2; i++) {
		const struct enr_record *rec = enr_enroll_record_at(e, i);
		struct enr_record *saved = stored(f, rec->id);
		assert_int_equal(rec->n_sites, 1);
		assert_string_equal(rec->sites[0].id, i ? third : first);
		assert_string_equal(rec->cred.account.site_id, i ? third : first);
		assert_string_equal(saved->customer, "Lou");
		assert_int_equal(saved->n_sites, 1);
		assert_string_equal(saved->sites[0].id, i ? third : first);
		enr_record_free(saved);
	}
	assert_string_not_equal(enr_enroll_record_at(e, 0)->id, enr_enroll_record_at(e, 1)->id);
	assert_null(enr_enroll_record_at(e, 2));
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 2);
}

/* Several sites behind one rotating refresh token: one record holds them all,
 * so that no copy of the token is left to be spent by another record. */
static void several_sites_one_token(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = enphase_partner_sites(f, "Max");
	const struct enr_record *rec;
	char ids_buf[3][64];
	const char *ids[3];

	assert_int_equal(enr_enroll_site_count(e), 3);
	for (size_t i = 0; i < 3; i++) {
		snprintf(ids_buf[i], sizeof(ids_buf[i]), "%s", enr_enroll_site(e, i)->id);
		ids[i] = ids_buf[i];
	}
	assert_int_equal(enr_enroll_choose_sites(e, ids, 3), 0);
	expect_done(e);
	assert_int_equal(enr_enroll_record_count(e), 1);
	rec = enr_enroll_record(e);
	assert_int_equal(rec->n_sites, 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(rec->sites[i].id, ids[i]);
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 1);
}

/* ---- failures ----------------------------------------------------------- */

static void key_failures(void **state)
{
	struct fixture *f = *state;
	const char *const solis[] = {"key_id", "demo-noapi-77", "key_secret",
	                             cred(f, "solis", "key_secret"), NULL};
	const char *const solaredge[] = {"api_key", "invalidKEY0001", NULL};
	struct enr_enroll *e;

	e = session(f, NULL, "solis", "key", "Kim");
	fill(e, solis);
	drive(e, false);
	expect_failed(e, ENR_E_REJECTED, "Solis support");
	enr_enroll_free(e);

	e = session(f, NULL, "solaredge", "key", "Kim");
	fill(e, solaredge);
	drive(e, false);
	expect_failed(e, ENR_E_REJECTED, "developer.solaredge.com");
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 0);
}

static void enphase_app_key_mismatch(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e;

	assert_int_equal(
	    enr_config_set(f->cfg, "vendor.enphase", "api_key", "0123456789abcdef0123456789abcdef"),
	    0);
	e = enphase_typed(f);
	drive(e, false);
	expect_failed(e, ENR_E_MISCONFIGURED, "[vendor.enphase] api_key");
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 0);
}

static void sma_no_plants(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "sma", "oauth", "Lee");

	relay_consent(e, "sandbox_auto=approve&sandbox_account=empty-lee");
	expect_failed(e, ENR_E_REJECTED, "SMA returned no plants");
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 0);
}

static void declined_and_expired(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll_options opts = {.store = f->store,
	                                  .cfg = f->cfg,
	                                  .catalog = f->catalog,
	                                  .vendor = "tesla",
	                                  .customer = "Max",
	                                  .timeout_s = 1};
	struct enr_enroll *e = session(f, NULL, "tesla", NULL, "Max");

	relay_consent(e, "sandbox_auto=deny");
	expect_failed(e, ENR_E_DECLINED, NULL);
	enr_enroll_free(e);

	/* Nobody answers the link. */
	e = NULL;
	assert_int_equal(enr_enroll_new(&e, &opts), 0);
	assert_int_equal(drive(e, false), ENR_ENROLL_FAILED);
	expect_failed(e, ENR_E_EXPIRED, "expired");
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 0);
}

/* Configuration the company got wrong, and a session given up. */
static void misconfigured_and_cancelled(void **state)
{
	struct fixture *f = *state;
	struct enr_config *cfg = config_without(f->cfg, (const char *const[]){NULL});
	struct enr_enroll *e;

	/* The relay refuses our secret. */
	assert_int_equal(enr_config_set(cfg, "relay", "secret", "not-the-relay-secret"), 0);
	e = session(f, cfg, "tesla", NULL, "Vic");
	drive(e, false);
	expect_failed(e, ENR_E_MISCONFIGURED, "[relay] secret");
	enr_enroll_free(e);
	enr_config_free(cfg);

	/* Tesla's energy scope left out: the check is refused, the warning says why. */
	cfg = config_without(f->cfg, (const char *const[]){NULL});
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "scopes", "openid offline_access"), 0);
	e = session(f, cfg, "tesla", NULL, "Vic");
	relay_consent(e, "sandbox_auto=approve");
	expect_failed(e, ENR_E_REJECTED, "energy data permission");
	assert_non_null(enr_enroll_warning(e));
	assert_non_null(strstr(enr_enroll_warning(e), "energy_device_data"));
	enr_enroll_free(e);
	enr_config_free(cfg);

	/* Cancelled while the customer is away. */
	e = session(f, NULL, "tesla", NULL, "Vic");
	assert_int_equal(drive(e, true), ENR_ENROLL_LINK);
	enr_enroll_cancel(e);
	expect_failed(e, ENR_E_CANCELLED, NULL);
	assert_int_equal(enr_enroll_process(e), 0);
	enr_enroll_free(e);
	assert_int_equal(stored_count(f), 0);
}

static void usage_errors(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll_options opts = {
	    .store = f->store, .cfg = f->cfg, .catalog = f->catalog, .customer = "Ned"};
	struct enr_enroll *e = NULL;

	opts.vendor = "acme";
	assert_int_equal(enr_enroll_new(&e, &opts), ENR_E_USAGE);
	assert_null(e);
	assert_non_null(strstr(enr_error_last(), "acme"));
	assert_non_null(strstr(enr_error_last(), "solaredge"));

	opts.vendor = "tesla";
	opts.method = "key";
	assert_int_equal(enr_enroll_new(&e, &opts), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "oauth, join"));

	opts.vendor = "enphasevpp";
	opts.method = "oauth";
	assert_int_equal(enr_enroll_new(&e, &opts), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "only through Derapi Join"));

	opts.vendor = "solaredge";
	opts.method = NULL;
	opts.customer = NULL;
	assert_int_equal(enr_enroll_new(&e, &opts), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "customer"));
	assert_int_equal(stored_count(f), 0);
}

/* ---- status of a record -------------------------------------------------- */

static void status_rules(void **state)
{
	struct enr_record *rec = NULL;
	long long now = 1800000000LL, due = -1;

	(void)state;
	assert_int_equal(enr_record_new(&rec), 0);
	/* A key record: never checked, then ok; it never expires. */
	rec->cred.type = ENR_CRED_API_KEY;
	assert_int_equal(enr_status_of(rec, now, 7, &due), ENR_STATUS_UNKNOWN);
	assert_int_equal(due, 0);
	rec->last_check.outcome = ENR_OUTCOME_OK;
	assert_int_equal(enr_status_of(rec, now + 3650 * DAY, 7, NULL), ENR_STATUS_OK);
	rec->last_check.outcome = ENR_OUTCOME_TRANSIENT;
	assert_int_equal(enr_status_of(rec, now, 7, NULL), ENR_STATUS_UNKNOWN);
	rec->last_check.outcome = ENR_OUTCOME_REJECTED;
	assert_int_equal(enr_status_of(rec, now, 7, NULL), ENR_STATUS_REJECTED);

	/* OAuth: an access token expiring tomorrow that a refresh token renews. */
	rec->cred.type = ENR_CRED_OAUTH;
	rec->last_check.outcome = ENR_OUTCOME_OK;
	assert_int_equal(enr_record_set(&rec->cred.tokens.refresh_token, "r"), 0);
	rec->access_expires_at = now + DAY;
	rec->refresh_expires_at = now + 90 * DAY;
	assert_int_equal(enr_status_of(rec, now, 7, &due), ENR_STATUS_OK);
	assert_int_equal(due, now + 90 * DAY);
	rec->access_expires_at = now - DAY; /* even expired: renewable */
	assert_int_equal(enr_status_of(rec, now, 7, NULL), ENR_STATUS_OK);
	/* The refresh token within expiring_days, then past it. */
	rec->refresh_expires_at = now + 3 * DAY;
	assert_int_equal(enr_status_of(rec, now, 7, NULL), ENR_STATUS_EXPIRING);
	assert_int_equal(enr_status_of(rec, now, 2, NULL), ENR_STATUS_OK);
	rec->refresh_expires_at = now - 1;
	assert_int_equal(enr_status_of(rec, now, 7, &due), ENR_STATUS_EXPIRED);
	assert_int_equal(due, now - 1);
	/* A refresh token that never expires (SMA offline access). */
	rec->refresh_expires_at = 0;
	assert_int_equal(enr_status_of(rec, now + 3650 * DAY, 7, &due), ENR_STATUS_OK);
	assert_int_equal(due, 0);
	/* No refresh token: the access token is what the customer must renew. */
	assert_int_equal(enr_record_set(&rec->cred.tokens.refresh_token, NULL), 0);
	rec->access_expires_at = now + DAY;
	assert_int_equal(enr_status_of(rec, now, 7, &due), ENR_STATUS_EXPIRING);
	assert_int_equal(due, now + DAY);
	rec->access_expires_at = now - 1;
	assert_int_equal(enr_status_of(rec, now, 7, NULL), ENR_STATUS_EXPIRED);
	/* Rejected wins over everything. */
	rec->last_check.outcome = ENR_OUTCOME_REJECTED;
	assert_int_equal(enr_status_of(rec, now, 7, NULL), ENR_STATUS_REJECTED);
	assert_string_equal(enr_status_name(ENR_STATUS_EXPIRING), "expiring");
	enr_record_free(rec);
}

/* ---- refresh, check, save results ---------------------------------------- */

/* Whether the sandbox takes `refresh_token` for vendor (spends it when it does). */
static int try_refresh(const struct fixture *f, const char *vendor, const char *refresh_token)
{
	struct enr_oauth_tokens *tokens = NULL;
	int rc =
	    enr_oauth_refresh(&tokens, enr_catalog_find(f->catalog, vendor), f->cfg, refresh_token);

	enr_oauth_tokens_free(tokens);
	return rc;
}

static void refresh_rotates(void **state)
{
	struct fixture *f = *state;
	char *id = enroll_tesla(f, "Olga", "olga");
	struct enr_record *before = stored(f, id), *after;
	bool refreshed = false;

	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed), 0);
	assert_true(refreshed);
	after = stored(f, id);
	assert_string_not_equal(after->cred.tokens.refresh_token,
	                        before->cred.tokens.refresh_token);
	assert_string_not_equal(after->cred.tokens.access_token, before->cred.tokens.access_token);
	assert_true(after->refresh_expires_at >= before->refresh_expires_at);
	/* Grace 0: the old refresh token is spent. */
	assert_int_equal(try_refresh(f, "tesla", before->cred.tokens.refresh_token),
	                 ENR_E_REJECTED);
	/* A CHECK with a fresh access token does not refresh. */
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_CHECK, &refreshed), 0);
	assert_false(refreshed);
	enr_record_free(before);
	enr_record_free(after);
	free(id);
}

/* Two machines' `refresh --due 7` over the same record: the one that chose it
 * before the other refreshed it finds it due no more under the lock, and spends
 * nothing again. */
static void a_refresh_done_meanwhile_is_not_done_twice(void **state)
{
	struct fixture *f = *state;
	char *id = enroll_tesla(f, "Quinn", "quinn");
	struct enr_store *other = NULL;
	struct enr_record *rec = stored(f, id), *after_one, *after_two;
	struct enr_bulk_options o = {
	    .kind = ENR_JOB_REFRESH, .max_tries = 1, .only_due = true, .due_days = 7};
	struct enr_bulk *bulk = NULL;
	const struct enr_job_result *r;
	long long now = (long long)time(NULL);
	bool refreshed = false;

	/* Due in a day: both machines choose it. */
	rec->refresh_expires_at = now + 86400;
	assert_int_equal(enr_store_put(NULL, f->store, rec), 0);
	assert_int_equal(open_store(&other, f->store_path), 0);
	assert_true(enr_lifecycle_refresh_due(enr_store_at(other, 0), f->catalog, now, 7));
	/* The first refreshes it (months ahead)... */
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed), 0);
	assert_true(refreshed);
	after_one = stored(f, id);
	assert_false(enr_lifecycle_refresh_due(after_one, f->catalog, now, 7));
	/* ...then the second's run comes to it. */
	assert_int_equal(enr_bulk_new(&bulk, other, f->cfg, f->catalog, &o), 0);
	assert_int_equal(enr_bulk_add(bulk, id), 0);
	assert_int_equal(enr_bulk_run(bulk), 0);
	assert_int_equal(enr_bulk_result_count(bulk), 1);
	r = enr_bulk_result(bulk, 0);
	assert_int_equal(r->error, 0);
	assert_false(r->refreshed);
	assert_non_null(r->message);
	assert_non_null(strstr(r->message, "refreshed meanwhile by another process"));
	enr_bulk_free(bulk);
	after_two = stored(f, id);
	assert_string_equal(after_two->cred.tokens.refresh_token,
	                    after_one->cred.tokens.refresh_token);
	/* The token the first refresh saved is still unspent. */
	assert_int_equal(try_refresh(f, "tesla", after_one->cred.tokens.refresh_token), 0);
	enr_record_free(rec);
	enr_record_free(after_one);
	enr_record_free(after_two);
	enr_store_free(other);
	free(id);
}

/* A CHECK whose access token is about to expire refreshes it first. */
static void check_refreshes_stale_token(void **state)
{
	struct fixture *f = *state;
	struct enr_record *before, *after;
	bool refreshed = false;
	char *id;

	assert_int_equal(enr_sandbox_set(f->sb, "access_ttl", 30), 0);
	id = enroll_tesla(f, "Una", "una");
	before = stored(f, id);
	assert_true(before->access_expires_at <= (long long)time(NULL) + 30);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_CHECK, &refreshed), 0);
	assert_true(refreshed);
	after = stored(f, id);
	assert_string_not_equal(after->cred.tokens.refresh_token,
	                        before->cred.tokens.refresh_token);
	assert_int_equal(after->last_check.outcome, ENR_OUTCOME_OK);
	enr_record_free(before);
	enr_record_free(after);
	free(id);
}

static void refresh_revoked_and_transient(void **state)
{
	struct fixture *f = *state;
	char *id = enroll_tesla(f, "Pam", "pam");
	struct enr_record *before = stored(f, id), *after;
	enum enr_status st;
	bool refreshed = true;

	/* A passing failure: nothing changes. */
	assert_int_equal(enr_sandbox_add_fault(f->sb, "tesla", ENR_SANDBOX_FAULT_500, 1, 0), 0);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed),
	    ENR_E_TRANSIENT);
	assert_false(refreshed);
	after = stored(f, id);
	assert_string_equal(after->cred.tokens.refresh_token, before->cred.tokens.refresh_token);
	assert_string_equal(after->cred.tokens.access_token, before->cred.tokens.access_token);
	assert_int_equal(after->last_check.outcome, ENR_OUTCOME_TRANSIENT);
	assert_int_equal(enr_status_of(after, (long long)time(NULL), 7, NULL), ENR_STATUS_UNKNOWN);
	enr_record_free(after);

	/* The customer revoked the app. */
	assert_int_equal(enr_sandbox_revoke_account(f->sb, "tesla", "pam"), 0);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed),
	    ENR_E_REJECTED);
	after = stored(f, id);
	assert_int_equal(after->last_check.outcome, ENR_OUTCOME_REJECTED);
	assert_non_null(after->last_check.message);
	st = enr_status_of(after, (long long)time(NULL), 7, NULL);
	assert_int_equal(st, ENR_STATUS_REJECTED);
	enr_record_free(after);
	enr_record_free(before);
	free(id);
}

/* The vendor rotated the token but its answer was lost: where it keeps the
 * previous one valid a while (Tesla, refresh_grace in vendors.json), the
 * refresh asks again at once with it; where it does not, that token is spent. */
static void lost_refresh_answer_asked_again(void **state)
{
	struct fixture *f = *state;
	char *id = enroll_tesla(f, "Lou", "lou");
	struct enr_record *before = stored(f, id), *after;
	bool refreshed = false;

	assert_true(enr_catalog_find(f->catalog, "tesla")->tokens.refresh_grace > 0);
	assert_int_equal(enr_sandbox_set(f->sb, "refresh_grace", 60), 0);
	assert_int_equal(enr_sandbox_set(f->sb, "stall_ms", 200), 0);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "tesla", ENR_SANDBOX_FAULT_LOST, 1, 0), 0);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed), 0);
	assert_true(refreshed);
	after = stored(f, id);
	assert_string_not_equal(after->cred.tokens.refresh_token,
	                        before->cred.tokens.refresh_token);
	/* The lost answer did rotate it: the old token is spent (past the grace, it would be
	 * refused), the one stored is live. */
	assert_int_equal(enr_sandbox_set(f->sb, "refresh_grace", 0), 0);
	assert_int_equal(try_refresh(f, "tesla", before->cred.tokens.refresh_token),
	                 ENR_E_REJECTED);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed), 0);
	enr_record_free(after);

	/* Strict (no grace in the catalogue's sense here: the sandbox refuses at once):
	 * asked again, it is refused, and the record says the customer is needed. */
	enr_record_free(before);
	before = stored(f, id);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "tesla", ENR_SANDBOX_FAULT_LOST, 1, 0), 0);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed),
	    ENR_E_REJECTED);
	enr_record_free(before);
	free(id);
}

static char *enroll_fields(struct fixture *f, const char *vendor, const char *method,
                           const char *const *pairs, const char *site)
{
	struct enr_enroll *e = session(f, NULL, vendor, method, "Quinn");
	char *id;

	if (pairs)
		fill(e, pairs);
	assert_int_equal(drive(e, false), ENR_ENROLL_SITES);
	choose(e, site ? site : enr_enroll_site(e, 0)->id);
	expect_done(e);
	id = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);
	return id;
}

static void check_every_kind(void **state)
{
	struct fixture *f = *state;
	const char *const se[] = {"api_key", "CUSTOMERKEY0002", NULL};
	const char *const solis[] = {"key_id", "demo-7654321", "key_secret",
	                             cred(f, "solis", "key_secret"), NULL};
	const char *const partner[] = {"access_token", cred(f, "enphase_partner", "access_token"),
	                               "api_key", cred(f, "enphase_partner", "api_key"), NULL};
	const char *const email[] = {"owner_email", "owner-quinn@example.com", NULL};
	struct enr_job_result results[8];
	char *ids[8];
	size_t n = 0;

	ids[n++] = enroll_tesla(f, "Quinn", "quinn");
	ids[n++] = enroll_fields(f, "solaredge", "key", se, NULL);
	ids[n++] = enroll_fields(f, "solis", "key", solis, NULL);
	ids[n++] = enroll_fields(f, "solaredge", "account", NULL, NULL);
	ids[n++] = enroll_fields(f, "solis", "account", NULL, NULL);
	ids[n++] = enroll_fields(f, "enphase", "partner", partner, NULL);
	ids[n++] = enroll_fields(f, "sma", "email", email, NULL);
	assert_int_equal(stored_count(f), n);
	for (size_t i = 0; i < n; i++) {
		bool refreshed = true;
		int rc = enr_lifecycle_run(f->store, f->cfg, f->catalog, ids[i], ENR_JOB_CHECK,
		                           &refreshed);
		if (rc != 0)
			fail_msg("check of record %zu: %s", i, enr_error_last());
		assert_false(refreshed);
	}
	/* A key the customer withdrew is rejected at the next check. */
	assert_int_equal(enr_sandbox_revoke_account(f->sb, "solaredge", "CUSTOMERKEY0002"), 0);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, ids[1], ENR_JOB_CHECK, NULL),
	    ENR_E_REJECTED);

	/* The outcomes, written in one go. */
	memset(results, 0, sizeof(results));
	results[0] = (struct enr_job_result){.id = ids[0], .checked_at = 1000};
	results[1] = (struct enr_job_result){
	    .id = ids[1], .error = ENR_E_REJECTED, .message = "refused", .checked_at = 1001};
	results[2] = (struct enr_job_result){.id = ids[2]}; /* no check made: untouched */
	assert_int_equal(enr_lifecycle_save_results(f->store, results, 3), 0);
	{
		struct enr_record *a = stored(f, ids[0]), *b = stored(f, ids[1]),
		                  *c = stored(f, ids[2]);
		assert_int_equal(a->last_check.outcome, ENR_OUTCOME_OK);
		assert_int_equal(a->last_check.at, 1000);
		assert_null(a->last_check.message);
		assert_int_equal(b->last_check.outcome, ENR_OUTCOME_REJECTED);
		assert_string_equal(b->last_check.message, "refused");
		assert_int_not_equal(c->last_check.at, 1000);
		enr_record_free(a);
		enr_record_free(b);
		enr_record_free(c);
	}
	/* A transient failure does not hide the rejection. */
	results[0] = (struct enr_job_result){
	    .id = ids[1], .error = ENR_E_TRANSIENT, .message = "later", .checked_at = 1002};
	assert_int_equal(enr_lifecycle_save_results(f->store, results, 1), 0);
	{
		struct enr_record *b = stored(f, ids[1]);
		assert_int_equal(b->last_check.outcome, ENR_OUTCOME_REJECTED);
		assert_string_equal(b->last_check.message, "refused");
		enr_record_free(b);
	}
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
}

/* ---- re-authorization ----------------------------------------------------- */

static struct enr_enroll *reauth_session(struct fixture *f, const char *id, bool allow)
{
	struct enr_enroll_options opts = {.store = f->store,
	                                  .cfg = f->cfg,
	                                  .catalog = f->catalog,
	                                  .reauth_id = id,
	                                  .allow_account_change = allow};
	struct enr_enroll *e = NULL;

	assert_int_equal(enr_enroll_new(&e, &opts), 0);
	return e;
}

static int mark_rejected(struct enr_record *rec, void *ctx)
{
	(void)ctx;
	rec->last_check.outcome = ENR_OUTCOME_REJECTED;
	return enr_record_set(&rec->last_check.message, "Tesla refused the authorization");
}

static void reauthorize(void **state)
{
	struct fixture *f = *state;
	char *id = enroll_tesla(f, "Rita", "rita");
	struct enr_record *before = stored(f, id), *after;
	struct enr_enroll *e;

	/* The customer is needed: the record was rejected, with a message. */
	assert_int_equal(enr_store_update(f->store, id, mark_rejected, NULL), 0);

	/* Same account: the record takes the new tokens, and the rejection goes. */
	e = reauth_session(f, id, false);
	relay_consent(e, "sandbox_auto=approve&sandbox_account=rita");
	complete(e);
	assert_true(enr_enroll_updated(e));
	assert_string_equal(enr_enroll_record(e)->id, id);
	enr_enroll_free(e);
	after = stored(f, id);
	assert_string_equal(after->customer, "Rita");
	assert_string_equal(after->account, before->account);
	assert_string_not_equal(after->cred.tokens.refresh_token,
	                        before->cred.tokens.refresh_token);
	assert_int_equal(after->last_check.outcome, ENR_OUTCOME_OK);
	assert_null(after->last_check.message);
	enr_record_free(before);
	before = after;

	/* Another account: refused, the record as it was. */
	e = reauth_session(f, id, false);
	relay_consent(e, "sandbox_auto=approve&sandbox_account=other");
	expect_failed(e, ENR_E_ACCOUNT, "different");
	enr_enroll_free(e);
	after = stored(f, id);
	assert_string_equal(after->account, before->account);
	assert_string_equal(after->cred.tokens.refresh_token, before->cred.tokens.refresh_token);
	enr_record_free(after);

	/* ... unless the caller allows it. */
	e = reauth_session(f, id, true);
	relay_consent(e, "sandbox_auto=approve&sandbox_account=other");
	complete(e);
	assert_string_equal(enr_enroll_record(e)->id, id);
	enr_enroll_free(e);
	after = stored(f, id);
	assert_string_not_equal(after->account, before->account);
	/* The new account's site replaces the old account's. */
	assert_int_equal(after->n_sites, 1);
	assert_string_not_equal(after->sites[0].id, before->sites[0].id);
	assert_int_equal(stored_count(f), 1);
	enr_record_free(after);
	enr_record_free(before);
	free(id);
}

/* A key record re-authorized: the same account's key, then another account's. */
static void reauthorize_key(void **state)
{
	struct fixture *f = *state;
	const char *const first[] = {"api_key", "CUSTOMERKEY0003", NULL};
	const char *const again[] = {"api_key", "CUSTOMERKEY0003", NULL};
	const char *const other[] = {"api_key", "CUSTOMERKEY0004", NULL};
	char *id = enroll_fields(f, "solaredge", "key", first, NULL);
	struct enr_record *rec;
	struct enr_enroll *e;

	e = reauth_session(f, id, false);
	fill(e, again);
	complete(e);
	assert_true(enr_enroll_updated(e));
	enr_enroll_free(e);

	/* Another key sees other sites: another account. */
	e = reauth_session(f, id, false);
	fill(e, other);
	drive(e, false);
	expect_failed(e, ENR_E_ACCOUNT, "another account");
	enr_enroll_free(e);
	rec = stored(f, id);
	assert_string_equal(rec->cred.api_key, "CUSTOMERKEY0003");
	enr_record_free(rec);
	assert_int_equal(stored_count(f), 1);
	free(id);
}

/* REFRESH of every kind of record that holds a refresh token. */
static void refresh_every_vendor(void **state)
{
	struct fixture *f = *state;
	const char *const partner[] = {"access_token",
	                               cred(f, "enphase_partner", "access_token"),
	                               "refresh_token",
	                               cred(f, "enphase_partner", "refresh_token"),
	                               "api_key",
	                               cred(f, "enphase_partner", "api_key"),
	                               NULL};
	const char *const key[] = {"api_key", "CUSTOMERKEY0005", NULL};
	char *ids[4];
	struct enr_enroll *e;
	size_t n = 0;

	e = session(f, NULL, "sma", "oauth", "Uma");
	relay_consent(e, "sandbox_auto=approve");
	complete(e);
	ids[n++] = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);

	e = enphase_typed(f);
	complete(e);
	ids[n++] = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);

	ids[n++] = enroll_fields(f, "enphase", "partner", partner, NULL);
	for (size_t i = 0; i < n; i++) {
		struct enr_record *before = stored(f, ids[i]), *after;
		bool refreshed = false;
		int rc = enr_lifecycle_run(f->store, f->cfg, f->catalog, ids[i], ENR_JOB_REFRESH,
		                           &refreshed);
		if (rc != 0)
			fail_msg("refresh of %s: %s", before->vendor, enr_error_last());
		assert_true(refreshed);
		after = stored(f, ids[i]);
		assert_string_not_equal(after->cred.tokens.access_token,
		                        before->cred.tokens.access_token);
		/* Rotated at grace 0: the old refresh token is spent. */
		assert_string_not_equal(after->cred.tokens.refresh_token,
		                        before->cred.tokens.refresh_token);
		assert_int_equal(try_refresh(f, before->vendor, before->cred.tokens.refresh_token),
		                 ENR_E_REJECTED);
		enr_record_free(before);
		enr_record_free(after);
	}
	/* A key record has nothing to refresh: no failure. */
	ids[n++] = enroll_fields(f, "solaredge", "key", key, NULL);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, ids[n - 1], ENR_JOB_REFRESH, NULL), 0);
	{
		/* ... and that is no failed check of it. */
		struct enr_record *rec = stored(f, ids[n - 1]);
		assert_int_equal(rec->last_check.outcome, ENR_OUTCOME_OK);
		assert_int_equal(enr_status_of(rec, (long long)time(NULL), 7, NULL), ENR_STATUS_OK);
		enr_record_free(rec);
	}
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
}

/* ---- two processes, and a crash ------------------------------------------ */

/* In a child: REFRESH record `id` through a handle of its own; exit status. */
static pid_t refresh_child(const struct fixture *f, const char *id, bool crash)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct enr_store *s = NULL;
		bool refreshed = false;
		int rc = open_store(&s, f->store_path);

		crash_after_token_save = crash;
		if (rc == 0)
			rc = enr_lifecycle_run(s, f->cfg, f->catalog, id, ENR_JOB_REFRESH,
			                       &refreshed);
		if (rc < 0)
			fprintf(stderr, "# child %d: %s\n", (int)getpid(), enr_error_last());
		/* 0 only through the crash wrapper. */
		_exit(rc == 0 ? (refreshed ? 10 : 11) : 20);
	}
	return pid;
}

static int wait_child(pid_t pid)
{
	int status = 0;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void two_processes_refresh(void **state)
{
	struct fixture *f = *state;
	char *id = enroll_tesla(f, "Sam", "sam");
	struct enr_record *before = stored(f, id), *after;
	pid_t a, b;
	int sa, sb;
	bool refreshed = false;

	a = refresh_child(f, id, false);
	b = refresh_child(f, id, false);
	sa = wait_child(a);
	sb = wait_child(b);
	/* Both refreshed (one after the other, under the lock), or one found it fresh. */
	assert_true(sa == 10 || sa == 11);
	assert_true(sb == 10 || sb == 11);
	assert_true(sa == 10 || sb == 10);
	after = stored(f, id);
	assert_string_not_equal(after->cred.tokens.refresh_token,
	                        before->cred.tokens.refresh_token);
	assert_int_not_equal(after->last_check.outcome, ENR_OUTCOME_REJECTED);
	/* The stored refresh token still works: nothing was spent twice. */
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed), 0);
	assert_true(refreshed);
	enr_record_free(before);
	enr_record_free(after);
	free(id);
}

static void crash_after_token_response(void **state)
{
	struct fixture *f = *state;
	char *id = enroll_tesla(f, "Tom", "tom");
	struct enr_record *before = stored(f, id), *after;
	bool refreshed = false;

	assert_int_equal(wait_child(refresh_child(f, id, true)), 0);
	after = stored(f, id);
	assert_string_not_equal(after->cred.tokens.refresh_token,
	                        before->cred.tokens.refresh_token);
	/* The old one is spent; the saved one is the live one. */
	assert_int_equal(try_refresh(f, "tesla", before->cred.tokens.refresh_token),
	                 ENR_E_REJECTED);
	assert_int_equal(enr_store_reload(f->store), 0);
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_REFRESH, &refreshed), 0);
	assert_true(refreshed);
	enr_record_free(before);
	enr_record_free(after);
	free(id);
}

/* ---- Tesla's regions ------------------------------------------------------ */

static int forget_region(struct enr_record *rec, void *ctx)
{
	(void)ctx;
	return enr_record_set(&rec->region, NULL);
}

/* An EU customer: the code and tokens name the EU, the record keeps it, and
 * its refresh and checks go to the EU host with the EU audience. */
static void tesla_eu_customer(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "tesla", NULL, "Eva, Uppsala");
	static const char *const drop[] = {"vendor.tesla", "api_url", NULL};
	struct enr_config *eu_only = config_without(f->cfg, drop);
	struct json_object *claims = NULL, *aud = NULL;
	struct enr_record *disk;
	bool refreshed = false;
	char *id;

	relay_consent(e, "sandbox_auto=approve&sandbox_region=eu");
	complete(e);
	assert_string_equal(enr_enroll_record(e)->region, "eu");
	id = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);
	disk = stored(f, id);
	assert_string_equal(disk->region, "eu");
	assert_int_equal(strncmp(disk->cred.tokens.refresh_token, "EU_", 3), 0);
	enr_record_free(disk);

	/* NA's host unreachable: the refresh and the check still work, so they went to the EU. */
	assert_int_equal(
	    enr_config_set(eu_only, "vendor.tesla", "api_url", "http://127.0.0.1:9/na"), 0);
	assert_int_equal(
	    enr_lifecycle_run(f->store, eu_only, f->catalog, id, ENR_JOB_REFRESH, &refreshed), 0);
	assert_true(refreshed);
	assert_int_equal(
	    enr_lifecycle_run(f->store, eu_only, f->catalog, id, ENR_JOB_CHECK, &refreshed), 0);
	disk = stored(f, id);
	assert_string_equal(disk->region, "eu");
	assert_int_equal(disk->last_check.outcome, ENR_OUTCOME_OK);
	/* The refreshed token is still for the EU host (the audience of the exchange). */
	assert_int_equal(enr_oauth_jwt_claims(&claims, disk->cred.tokens.access_token), 0);
	assert_true(json_object_object_get_ex(claims, "aud", &aud));
	assert_string_equal(json_object_get_string(json_object_array_get_idx(aud, 0)),
	                    enr_config_get(f->cfg, "vendor.tesla", "api_url_eu"));
	json_object_put(claims);
	enr_record_free(disk);
	enr_config_free(eu_only);
	free(id);
}

/* A record that does not know its region (older than regions: NA) of an EU
 * customer: NA answers 421, users/region names the EU, one retry there. */
static void tesla_wrong_region_asks(void **state)
{
	struct fixture *f = *state;
	struct enr_record *disk;
	struct enr_enroll *e = session(f, NULL, "tesla", NULL, "Emil");
	bool refreshed = true;
	char *id;

	relay_consent(e, "sandbox_auto=approve&sandbox_region=eu");
	complete(e);
	id = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);
	assert_int_equal(enr_store_update(f->store, id, forget_region, NULL), 0);
	disk = stored(f, id);
	assert_null(disk->region);
	enr_record_free(disk);

	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_CHECK, &refreshed), 0);
	assert_false(refreshed);
	disk = stored(f, id);
	assert_string_equal(disk->region, "eu");
	enr_record_free(disk);
	free(id);
}

/* A check in a region where the app is no longer registered: 412, how to
 * register, and the record's region. */
static void tesla_check_unregistered(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "tesla", NULL, "Ebba");
	char *id;

	relay_consent(e, "sandbox_auto=approve&sandbox_region=eu");
	complete(e);
	id = strdup(enr_enroll_record(e)->id);
	enr_enroll_free(e);
	assert_int_equal(enr_sandbox_set(f->sb, "tesla_registered_eu", 0), 0);
	assert_int_equal(enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_CHECK, NULL),
	                 ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "derenroll tesla register --domain"));
	assert_non_null(strstr(enr_error_last(), "This record's region: eu."));
	free(id);
}

/* The app is not registered in China (the sandbox's default): 412 says how. */
static void tesla_unregistered_region(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = session(f, NULL, "tesla", NULL, "Wei");

	relay_consent(e, "sandbox_auto=approve&sandbox_region=cn");
	drive(e, false);
	expect_failed(e, ENR_E_MISCONFIGURED, "derenroll tesla register --domain D --region R");
	enr_enroll_free(e);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(status_rules),
    T(tesla_oauth),
    T(tesla_loopback),
    T(sma_oauth),
    T(provider_refresh_needs_consent),
    T(provider_sends_iss),
    T(provider_requires_pkce),
    T(provider_id_tokens),
    T(enphase_oauth),
    T(enphase_paste_state),
    T(enphase_code_read_aloud),
    T(sma_email),
    T(sma_email_retry_after_beyond_max_wait),
    T(sma_email_plants_of_other_owners),
    T(enphase_partner),
    T(solaredge_key),
    T(solis_key),
    T(solaredge_solis_account),
    T(several_sites_one_record_each),
    T(several_sites_one_token),
    T(key_failures),
    T(enphase_app_key_mismatch),
    T(sma_no_plants),
    T(declined_and_expired),
    T(misconfigured_and_cancelled),
    T(usage_errors),
    T(refresh_rotates),
    T(a_refresh_done_meanwhile_is_not_done_twice),
    T(check_refreshes_stale_token),
    T(refresh_revoked_and_transient),
    T(lost_refresh_answer_asked_again),
    T(check_every_kind),
    T(reauthorize),
    T(two_processes_refresh),
    T(crash_after_token_response),
    T(reauthorize_key),
    T(refresh_every_vendor),
    T(tesla_eu_customer),
    T(tesla_wrong_region_asks),
    T(tesla_unregistered_region),
    T(tesla_check_unregistered),
};

CURL_TEST_MAIN(tests)
