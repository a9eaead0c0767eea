/* Derapi Join against the in-process sandbox and its relay: create-flow, Join
 * Flow and Join session enrollments, Enphase Grid Services, checks through
 * Derapi, and each failure. The test plays the customer with libcurl. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "helpers.h"
#include "derenroll/config.h"
#include "derenroll/enroll.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/lifecycle.h"
#include "derenroll/oauth.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"

struct fixture {
	struct enr_catalog *catalog;
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	struct enr_store *store;
	char *store_path;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct enr_sandbox_options o = {.sma_accept_ms = -1};
	struct enr_store_options so = {0};
	const char *tmp = getenv("HOME");

	assert_non_null(f);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	assert_int_equal(enr_catalog_load(&f->catalog, NULL), 0);
	o.catalog = f->catalog;
	assert_int_equal(enr_sandbox_start(&f->sb, &o), 0);
	assert_int_equal(enr_sandbox_config(&f->cfg, f->sb), 0);
	assert_true(asprintf(&f->store_path, "%s/store-%ld", tmp, (long)random()) > 0);
	so.path = f->store_path;
	so.plaintext = true;
	assert_int_equal(enr_store_open(&f->store, &so), 0);
	/* Each test starts without a cached Derapi token. */
	enr_join_token_forget();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	enr_store_free(f->store);
	remove(f->store_path);
	free(f->store_path);
	enr_sandbox_stop(f->sb);
	enr_config_free(f->cfg);
	enr_catalog_free(f->catalog);
	free(f);
	curl_global_cleanup();
	return 0;
}

/* ---- playing the customer ---- */

/* GET url; the status, and the Location of a redirect (malloc'd) in `location`. */
static long get(const char *url, char **location)
{
	CURL *curl = curl_easy_init();
	FILE *sink = fopen("/dev/null", "w");
	char *loc = NULL;
	long status = 0;

	assert_non_null(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	assert_int_equal(curl_easy_perform(curl), CURLE_OK);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &loc);
	if (location)
		*location = loc ? strdup(loc) : NULL;
	curl_easy_cleanup(curl);
	fclose(sink);
	return status;
}

/* GET url; the status, and the body (malloc'd) in `body`. */
static long get_body(const char *url, char **body)
{
	CURL *curl = curl_easy_init();
	size_t len = 0;
	FILE *sink = open_memstream(body, &len);
	long status = 0;

	assert_non_null(curl);
	assert_non_null(sink);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	assert_int_equal(curl_easy_perform(curl), CURLE_OK);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(curl);
	fclose(sink);
	return status;
}

/* The value of a query parameter of `url` (malloc'd), or NULL. */
static char *param(const char *url, const char *name)
{
	const char *q = strchr(url, '?');
	size_t len = strlen(name);

	while (q) {
		q++;
		if (strncmp(q, name, len) == 0 && q[len] == '=')
			return strndup(q + len + 1, strcspn(q + len + 1, "&"));
		q = strchr(q, '&');
	}
	return NULL;
}

/* Drives the session until `until` (or DONE/FAILED), at most `max_ms`. */
static enum enr_enroll_state drive(struct enr_enroll *e, enum enr_enroll_state until, long max_ms)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct pollfd fds[16];
		size_t n;
		long spent;
		enum enr_enroll_state s = enr_enroll_state(e);
		/* The installer confirms the one site found. */
		if (s == ENR_ENROLL_SITES && until == ENR_ENROLL_DONE) {
			assert_int_equal(enr_enroll_site_count(e), 1);
			assert_int_equal(enr_enroll_choose_site(e, enr_enroll_site(e, 0)->id), 0);
			continue;
		}
		if (s == until || s == ENR_ENROLL_DONE || s == ENR_ENROLL_FAILED)
			return s;
		clock_gettime(CLOCK_MONOTONIC, &now);
		spent =
		    (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
		if (spent >= max_ms)
			return s;
		n = enr_enroll_poll_fds(e, fds, 16);
		poll(fds, n > 16 ? 16 : n, 50);
		enr_enroll_process(e);
	}
}

/* A join enrollment of `vendor` for one customer. */
static struct enr_enroll_options options(struct fixture *f, const char *vendor)
{
	struct enr_enroll_options o = {
	    .store = f->store,
	    .cfg = f->cfg,
	    .catalog = f->catalog,
	    .vendor = vendor,
	    .method = "join",
	    .customer = "Ann Example, job 42",
	};
	return o;
}

static struct enr_enroll *start(struct fixture *f, const char *vendor, enum enr_join_mode mode,
                                long timeout_s)
{
	struct enr_enroll_options o = options(f, vendor);
	struct enr_enroll *e = NULL;

	o.join_mode = mode;
	o.timeout_s = timeout_s;
	assert_int_equal(enr_enroll_new(&e, &o), 0);
	assert_int_equal(drive(e, ENR_ENROLL_LINK, 10000), ENR_ENROLL_LINK);
	return e;
}

/* The customer opens the short link: the Derapi (flow) or relay (session) page. */
static char *open_link(struct enr_enroll *e)
{
	char *target = NULL;

	assert_non_null(strstr(enr_enroll_link(e), "/relay/s/"));
	assert_int_equal(get(enr_enroll_link(e), &target), 302);
	assert_non_null(target);
	return target;
}

/* A Join Flow: approve (or deny) at Derapi, which sends the phone to the relay. */
static void flow_customer(struct enr_enroll *e, const char *answer)
{
	char *target = open_link(e), *url = NULL, *back = NULL;

	assert_non_null(strstr(target, "/derapi/join/flows/"));
	assert_null(strstr(target, "token"));
	assert_true(asprintf(&url, "%s&sandbox_auto=%s", target, answer) > 0);
	assert_int_equal(get(url, &back), 302);
	assert_non_null(strstr(back, "/relay/callback?"));
	assert_int_equal(get(back, NULL), 200);
	free(back);
	free(url);
	free(target);
}

/* The flow's state, as the authorize link carries it. */
static char *link_state(struct enr_enroll *e)
{
	return param(enr_enroll_authorize_url(e), "state");
}

/* ---- tests ---- */

static void create_flow(void **state)
{
	struct fixture *f = *state;
	const char *vendors[] = {"tesla", "sma"};
	struct enr_join_flow_options o = {
	    .redirect_uri = "https://relay.example.com/callback",
	    .vendors = vendors,
	    .n_vendors = 2,
	};
	char *id = NULL;

	assert_int_equal(enr_join_create_flow(&id, f->catalog, f->cfg, &o), 0);
	assert_non_null(id);
	assert_true(strncmp(id, "flow_", 5) == 0);
	free(id);
	/* No redirect URI is a usage error, before any request. */
	o.redirect_uri = NULL;
	assert_int_equal(enr_join_create_flow(&id, f->catalog, f->cfg, &o), ENR_E_USAGE);
	assert_null(id);
}

static void flow_enrollment(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "tesla", ENR_JOIN_FLOW, 0);
	const struct enr_record *rec;
	char *st = link_state(e);
	bool refreshed = true;

	assert_non_null(st);
	assert_true(strlen(st) >= 22); /* 128 bits, base64url */
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_RELAY);
	flow_customer(e, "approve");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->vendor, "tesla");
	assert_string_equal(rec->method, "join");
	assert_int_equal(rec->cred.type, ENR_CRED_JOIN);
	assert_string_equal(rec->cred.join.state, st);
	assert_non_null(rec->cred.join.enrollment_id);
	assert_true(strncmp(rec->cred.join.enrollment_id, "enr_", 4) == 0);
	assert_string_equal(rec->cred.join.program_id,
	                    enr_config_get(f->cfg, "derapi", "program_id"));
	assert_string_equal(rec->cred.join.flow_id, enr_config_get(f->cfg, "derapi", "flow_id"));
	/* The sites come from Derapi's enrollment. */
	assert_int_equal(rec->n_sites, 1);
	/* A lifecycle check of the record goes through Derapi. */
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, rec->id, ENR_JOB_CHECK, &refreshed), 0);
	assert_false(refreshed);
	/* Derapi keeps Join tokens fresh: no refresh from here. */
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, rec->id, ENR_JOB_REFRESH, NULL),
	    ENR_E_UNSUPPORTED);
	free(st);
	enr_enroll_free(e);
}

/* The Join page: a short link to the relay's /join, the widget, the callback. */
static char *session_customer_page(struct enr_enroll *e, char **state_out)
{
	char *target = open_link(e), *session, *page_state;

	assert_non_null(strstr(target, "/relay/join?"));
	session = param(target, "session");
	page_state = param(target, "state");
	assert_non_null(session);
	assert_non_null(page_state);
	/* Nothing in the link is Derapi's token. */
	assert_null(strstr(target, "token"));
	assert_int_equal(get(target, NULL), 200);
	*state_out = page_state;
	free(target);
	return session;
}

static void approve_session(struct fixture *f, const char *session, const char *vendor)
{
	char *url = NULL;

	assert_true(asprintf(&url,
	                     "%s/derapi/join/session/%s/authorize?vendor=%s&sandbox_auto=approve",
	                     enr_sandbox_url(f->sb), session, vendor) > 0);
	assert_int_equal(get(url, NULL), 200);
	free(url);
}

static void page_reports(struct fixture *f, const char *st, const char *extra)
{
	char *url = NULL;

	assert_true(
	    asprintf(&url, "%s/relay/callback?state=%s%s", enr_sandbox_url(f->sb), st, extra) > 0);
	assert_int_equal(get(url, NULL), 200);
	free(url);
}

static void session_enrollment(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "sma", ENR_JOIN_SESSION, 0);
	const struct enr_record *rec;
	char *st = NULL, *session = session_customer_page(e, &st);
	char *script = NULL;

	/* The page reports success before Derapi has the token: fetch-token
	 * answers 204 and the session keeps waiting. */
	page_reports(f, st, "");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 2500), ENR_ENROLL_WAIT);
	assert_non_null(strstr(enr_enroll_message(e), "Derapi"));
	approve_session(f, session, "sma");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->method, "join");
	assert_int_equal(rec->cred.type, ENR_CRED_JOIN);
	assert_non_null(rec->cred.tokens.access_token);
	assert_non_null(rec->cred.tokens.refresh_token);
	assert_true(rec->access_expires_at > (long long)time(NULL));
	assert_string_equal(rec->cred.join.state, st);
	assert_int_equal(rec->n_sites, 1);
	/* Checked through Derapi's /sites with X-Authorization-sma. */
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, rec->id, ENR_JOB_CHECK, NULL), 0);
	/* The sandbox's stand-in widget is served for the page. */
	assert_true(asprintf(&script, "%s/derapi/join/derapi-join.js", enr_sandbox_url(f->sb)) > 0);
	assert_int_equal(get(script, NULL), 200);
	free(script);
	free(session);
	free(st);
	enr_enroll_free(e);
}

static void session_key_vendors(void **state)
{
	struct fixture *f = *state;
	static const char *const vendors[] = {"solaredge", "solis", "enphase"};

	for (size_t i = 0; i < 3; i++) {
		struct enr_enroll *e = start(f, vendors[i], ENR_JOIN_SESSION, 0);
		char *st = NULL, *session = session_customer_page(e, &st);
		const struct enr_record *rec;
		approve_session(f, session, vendors[i]);
		page_reports(f, st, "");
		assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
		rec = enr_enroll_record(e);
		assert_int_equal(rec->n_sites, 1);
		/* Each vendor's own X-Authorization header works for a check. */
		assert_int_equal(
		    enr_lifecycle_run(f->store, f->cfg, f->catalog, rec->id, ENR_JOB_CHECK, NULL),
		    0);
		free(session);
		free(st);
		enr_enroll_free(e);
	}
}

static void grid_services(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e;
	const struct enr_record *rec;
	char *st = NULL, *session;

	/* Join Flows: the configured flow has a program. */
	e = start(f, "enphasevpp", ENR_JOIN_FLOW, 0);
	flow_customer(e, "approve");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
	rec = enr_enroll_record(e);
	assert_string_equal(rec->vendor, "enphasevpp");
	assert_non_null(rec->cred.join.enrollment_id);
	assert_int_equal(rec->n_sites, 1);
	enr_enroll_free(e);

	/* Join session: partner credentials and program from config. */
	e = NULL;
	{
		struct enr_enroll_options o = options(f, "enphasevpp");
		o.join_mode = ENR_JOIN_SESSION;
		/* Without them: the configuration is named (at once when the
		 * Derapi token is cached, else once it has come). */
		int rc = enr_enroll_new(&e, &o);
		if (rc == 0) {
			assert_int_equal(drive(e, ENR_ENROLL_LINK, 10000), ENR_ENROLL_FAILED);
			assert_int_equal(enr_enroll_error(e), ENR_E_CONFIG);
			assert_non_null(strstr(enr_enroll_message(e), "partner_client_id"));
			enr_enroll_free(e);
		} else {
			assert_int_equal(rc, ENR_E_CONFIG);
			assert_non_null(strstr(enr_error_last(), "partner_client_id"));
		}
	}
	assert_int_equal(enr_config_set(f->cfg, "vendor.enphasevpp", "partner_client_id", "p-1"),
	                 0);
	assert_int_equal(
	    enr_config_set(f->cfg, "vendor.enphasevpp", "partner_client_secret", "p-secret-1"), 0);
	assert_int_equal(enr_config_set(f->cfg, "vendor.enphasevpp", "program_id", "prog_vpp"), 0);
	e = start(f, "enphasevpp", ENR_JOIN_SESSION, 0);
	session = session_customer_page(e, &st);
	approve_session(f, session, "enphasevpp");
	page_reports(f, st, "");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
	rec = enr_enroll_record(e);
	assert_non_null(rec->cred.tokens.access_token);
	/* fetch-token's siteID chose the site. */
	assert_int_equal(rec->n_sites, 1);
	free(session);
	free(st);
	enr_enroll_free(e);
}

static void not_configured(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll_options o = options(f, "tesla");
	struct enr_enroll *e = NULL;
	char *reason = NULL;

	assert_true(enr_join_available(f->cfg, NULL));
	assert_int_equal(enr_config_set(f->cfg, "derapi", "client_secret", ""), 0);
	assert_false(enr_join_available(f->cfg, &reason));
	assert_non_null(strstr(reason, "derenroll secret set derapi.client_secret"));
	free(reason);
	assert_int_equal(enr_enroll_new(&e, &o), ENR_E_CONFIG);
	assert_null(e);
	assert_int_equal(enr_error_exit_code(ENR_E_CONFIG), 2);
	assert_int_equal(enr_config_set(f->cfg, "derapi", "client_id", ""), 0);
	assert_false(enr_join_available(f->cfg, &reason));
	assert_non_null(strstr(reason, "[derapi] client_id"));
	free(reason);
}

static void wrong_secret_is_misconfigured(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll_options o = options(f, "tesla");
	struct enr_enroll *e = NULL;

	assert_int_equal(enr_config_set(f->cfg, "derapi", "client_secret", "not-the-secret"), 0);
	assert_int_equal(enr_enroll_new(&e, &o), 0);
	assert_int_equal(drive(e, ENR_ENROLL_LINK, 10000), ENR_ENROLL_FAILED);
	assert_int_equal(enr_enroll_error(e), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_enroll_message(e), "client"));
	enr_enroll_free(e);
}

static void revoked_is_rejected(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "tesla", ENR_JOIN_SESSION, 0);
	char *st = NULL, *session = session_customer_page(e, &st), *id;

	approve_session(f, session, "tesla");
	page_reports(f, st, "");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
	id = strdup(enr_enroll_record(e)->id);
	assert_int_equal(enr_sandbox_revoke(f->sb, enr_enroll_record(e)->cred.tokens.access_token),
	                 0);
	/* Derapi answers 403 for the vendor credentials: the customer is needed. */
	assert_int_equal(enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_CHECK, NULL),
	                 ENR_E_REJECTED);
	free(id);
	free(session);
	free(st);
	enr_enroll_free(e);
}

static void flow_lacks_vendor(void **state)
{
	struct fixture *f = *state;
	const char *vendors[] = {"tesla"};
	struct enr_join_flow_options fo = {
	    .redirect_uri = enr_config_get(f->cfg, "vendor.tesla", "redirect_uri"),
	    .vendors = vendors,
	    .n_vendors = 1,
	};
	struct enr_enroll_options o = options(f, "sma");
	struct enr_enroll *e = NULL;
	char *flow = NULL;

	assert_int_equal(enr_join_create_flow(&flow, f->catalog, f->cfg, &fo), 0);
	assert_int_equal(enr_config_set(f->cfg, "derapi", "flow_id", flow), 0);
	assert_int_equal(enr_enroll_new(&e, &o), 0);
	assert_int_equal(drive(e, ENR_ENROLL_LINK, 10000), ENR_ENROLL_FAILED);
	assert_int_equal(enr_enroll_error(e), ENR_E_CONFIG);
	assert_non_null(strstr(enr_enroll_message(e), "does not include SMA"));
	enr_enroll_free(e);
	/* Without any flow: how to make one. */
	assert_int_equal(enr_config_set(f->cfg, "derapi", "flow_id", ""), 0);
	assert_int_equal(enr_enroll_new(&e, &o), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "join create-flow"));
	free(flow);
}

static void customer_declines(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "tesla", ENR_JOIN_FLOW, 0);

	flow_customer(e, "deny");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_FAILED);
	assert_int_equal(enr_enroll_error(e), ENR_E_DECLINED);
	assert_int_equal(enr_store_count(f->store), 0);
	enr_enroll_free(e);

	/* Another error of Derapi's redirect carries its description. */
	e = start(f, "tesla", ENR_JOIN_FLOW, 0);
	{
		char *st = link_state(e), *extra = NULL;
		assert_true(asprintf(&extra, "&error=server_error&error_description=%s",
		                     "Derapi%20is%20down%20for%20maintenance") > 0);
		page_reports(f, st, extra);
		free(extra);
		free(st);
	}
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_FAILED);
	assert_non_null(strstr(enr_enroll_message(e), "down for maintenance"));
	enr_enroll_free(e);
}

static void fetch_token_until_deadline(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "tesla", ENR_JOIN_SESSION, 3);
	char *st = NULL, *session = session_customer_page(e, &st);

	page_reports(f, st, "");
	/* The customer never finishes in the widget: 204 until the deadline. */
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 8000), ENR_ENROLL_FAILED);
	assert_int_equal(enr_enroll_error(e), ENR_E_EXPIRED);
	free(session);
	free(st);
	enr_enroll_free(e);
}

/* The customer approves at Derapi but closes the tab before the page can
 * report: the laptop's own fetch-token poll finds it. */
static void session_own_poll(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "tesla", ENR_JOIN_SESSION, 0);
	char *st = NULL, *session = session_customer_page(e, &st);

	approve_session(f, session, "tesla");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 30000), ENR_ENROLL_DONE);
	assert_non_null(enr_enroll_record(e)->cred.tokens.access_token);
	free(session);
	free(st);
	enr_enroll_free(e);
}

/* The widget's fetch-token through the relay's proxy: the laptop takes the
 * answer the relay kept, and the page got only a placeholder. */
static void session_kept_answer(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "sma", ENR_JOIN_SESSION, 0);
	char *st = NULL, *session = session_customer_page(e, &st), *url = NULL, *body = NULL;

	approve_session(f, session, "sma");
	assert_true(asprintf(&url, "%s/relay/join/api/join/session/%s/fetch-token",
	                     enr_sandbox_url(f->sb), session) > 0);
	assert_int_equal(get_body(url, &body), 200);
	assert_string_equal(body, "{\"access_token\":\"kept-by-the-relay\"}");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
	assert_string_not_equal(enr_enroll_record(e)->cred.tokens.access_token,
	                        "kept-by-the-relay");
	free(body);
	free(url);
	free(session);
	free(st);
	enr_enroll_free(e);
}

/* The widget's close button: the page tells the relay, the laptop fails at once. */
static void session_closed(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "tesla", ENR_JOIN_SESSION, 0);
	char *st = NULL, *session = session_customer_page(e, &st);

	page_reports(f, st,
	             "&error=access_denied&error_description=The%20customer%20closed%20the%20Join"
	             "%20window");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_FAILED);
	assert_int_equal(enr_enroll_error(e), ENR_E_DECLINED);
	assert_non_null(strstr(enr_enroll_message(e), "closed the Join window"));
	free(session);
	free(st);
	enr_enroll_free(e);
}

/* A failed widget (no close button) and a closed tab: nobody reports; the
 * laptop's deadline ends it with a message that says what happened. */
static void session_vanished(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "tesla", ENR_JOIN_SESSION, 3);
	char *st = NULL, *session = session_customer_page(e, &st);

	assert_int_equal(drive(e, ENR_ENROLL_DONE, 20000), ENR_ENROLL_FAILED);
	assert_int_equal(enr_enroll_error(e), ENR_E_EXPIRED);
	assert_non_null(strstr(enr_enroll_message(e), "did not finish in the Join page"));
	assert_non_null(strstr(enr_enroll_message(e), "Join widget failed"));
	free(session);
	free(st);
	enr_enroll_free(e);
}

/* A response as the http module gives it, for the parsers. */
static struct enr_http_response answer(long status, const char *body)
{
	struct enr_http_response r = {.status = status,
	                              .body = (char *)body,
	                              .body_len = strlen(body),
	                              .content_type = (char *)"application/json",
	                              .retry_after = -1};
	return r;
}

static void both_spellings(void **state)
{
	struct enr_http_response r;
	struct enr_join_credentials *c = NULL;
	char *id = NULL;

	(void)state;
	r = answer(200, "{\"sessionID\":\"s-1\"}");
	assert_int_equal(enr_join_session_response(&id, &r), 0);
	assert_string_equal(id, "s-1");
	free(id);
	r = answer(200, "{\"session_id\":\"s-2\"}");
	assert_int_equal(enr_join_session_response(&id, &r), 0);
	assert_string_equal(id, "s-2");
	free(id);
	r = answer(200, "{\"other\":1}");
	assert_int_equal(enr_join_session_response(&id, &r), ENR_E_BADRESPONSE);

	r = answer(200, "{\"vendor\":\"tesla\",\"accessToken\":\"a-1\",\"refreshToken\":\"r-1\","
	                "\"expiresIn\":\"3600\"}");
	assert_int_equal(enr_join_fetch_response(&c, &r), 0);
	assert_string_equal(c->tokens->access_token, "a-1");
	assert_string_equal(c->tokens->refresh_token, "r-1");
	assert_true(c->tokens->access_expires_at >= (long long)time(NULL) + 3590);
	enr_join_credentials_free(c);
	r = answer(200, "{\"vendor\":\"enphasevpp\",\"access_token\":\"a-2\",\"expires_in\":60,"
	                "\"site_id\":\"77\"}");
	assert_int_equal(enr_join_fetch_response(&c, &r), 0);
	assert_string_equal(c->tokens->access_token, "a-2");
	assert_null(c->tokens->refresh_token);
	assert_string_equal(c->site_id, "77");
	enr_join_credentials_free(c);
	r = answer(204, "");
	assert_int_equal(enr_join_fetch_response(&c, &r), ENR_E_AGAIN);
	assert_null(c);
	r = answer(200, "{\"vendor\":\"tesla\"}");
	assert_int_equal(enr_join_fetch_response(&c, &r), ENR_E_BADRESPONSE);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(create_flow, setup, teardown),
    cmocka_unit_test_setup_teardown(flow_enrollment, setup, teardown),
    cmocka_unit_test_setup_teardown(session_enrollment, setup, teardown),
    cmocka_unit_test_setup_teardown(session_key_vendors, setup, teardown),
    cmocka_unit_test_setup_teardown(grid_services, setup, teardown),
    cmocka_unit_test_setup_teardown(not_configured, setup, teardown),
    cmocka_unit_test_setup_teardown(wrong_secret_is_misconfigured, setup, teardown),
    cmocka_unit_test_setup_teardown(revoked_is_rejected, setup, teardown),
    cmocka_unit_test_setup_teardown(flow_lacks_vendor, setup, teardown),
    cmocka_unit_test_setup_teardown(customer_declines, setup, teardown),
    cmocka_unit_test_setup_teardown(fetch_token_until_deadline, setup, teardown),
    cmocka_unit_test_setup_teardown(session_own_poll, setup, teardown),
    cmocka_unit_test_setup_teardown(session_kept_answer, setup, teardown),
    cmocka_unit_test_setup_teardown(session_closed, setup, teardown),
    cmocka_unit_test_setup_teardown(session_vanished, setup, teardown),
    cmocka_unit_test(both_spellings),
};

TEST_MAIN(tests)
