/* Derapi Join against the in-process sandbox and its relay: create-flow, Join
 * Flow and Join session enrollments, Enphase Grid Services, checks through
 * Derapi, and each failure. The test plays the customer with libcurl. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "helpers.h"
#include "httpd.h"
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
#include "util.h"

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
	/* Derapi keeps Join tokens fresh: nothing to refresh from here (ok, and no refresh). */
	refreshed = true;
	assert_int_equal(
	    enr_lifecycle_run(f->store, f->cfg, f->catalog, rec->id, ENR_JOB_REFRESH, &refreshed),
	    0);
	assert_false(refreshed);
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
	/* Derapi names Tesla in the errors of its answer: the customer is needed. */
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

/* ---- header formats and stored credentials, from vendors.json ---- */

struct seen {
	char solis[256], solaredge[256], tesla[256];
};

static void record_headers(const struct test_request *req, struct test_reply *reply, void *ctx)
{
	struct seen *seen = ctx;
	const char *v;

	if ((v = test_request_header(req, "X-Authorization-solis")))
		snprintf(seen->solis, sizeof(seen->solis), "%s", v);
	if ((v = test_request_header(req, "X-Authorization-solaredge")))
		snprintf(seen->solaredge, sizeof(seen->solaredge), "%s", v);
	if ((v = test_request_header(req, "X-Authorization-tesla")))
		snprintf(seen->tesla, sizeof(seen->tesla), "%s", v);
	reply->status = 200;
	test_reply_printf(reply, "{\"sites\": [{\"id\": \"1\", \"name\": \"x\"}], \"errors\": {}}");
}

/* `from` replaced by `to` once in `text` (which must hold it); malloc'd. */
static char *replace(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	char *out = NULL;

	assert_non_null(at);
	assert_true(asprintf(&out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from)) > 0);
	return out;
}

/* The check of `vendor` through Derapi at `cfg`'s api_url, as sent. */
static void send_check(const struct enr_catalog *cat, const struct enr_config *cfg,
                       const char *vendor, const struct enr_credentials *cred)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;

	assert_int_equal(enr_join_check_request(&req, enr_catalog_find(cat, "derapi"), cfg,
	                                        "derapi-token", enr_catalog_find(cat, vendor),
	                                        cred),
	                 0);
	assert_int_equal(enr_http_perform(&resp, cfg, req), 0);
	assert_int_equal(resp->status, 200);
	enr_http_response_free(resp);
	enr_http_request_free(req);
}

static void header_formats_come_from_vendors_json(void **state)
{
	struct seen seen = {0};
	struct test_httpd *server = test_httpd_start(record_headers, &seen, NULL, NULL);
	char *source = enr_config_asset_path("vendors.json"), *text = test_read_file(source);
	char *dir = NULL, *path, *step, *changed, *old_datadir = NULL;
	struct enr_catalog *cat = NULL;
	struct enr_config *cfg = NULL;
	char key_id[] = "K1", key_secret[] = "S1", api_key[] = "SEKEY123", token[] = "tok-1";
	struct enr_credentials solis = {.key_id = key_id, .key_secret = key_secret};
	struct enr_credentials solaredge = {.api_key = api_key};
	struct enr_credentials tesla = {.tokens = {.access_token = token}};

	(void)state;
	assert_non_null(text);
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_config_set(cfg, "derapi", "api_url", test_httpd_url(server)), 0);

	/* As shipped: Solis Basic base64(keyId:keySecret), SolarEdge the raw key. */
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);
	send_check(cat, cfg, "solis", &solis);
	assert_string_equal(seen.solis, "Basic SzE6UzE=");
	send_check(cat, cfg, "solaredge", &solaredge);
	assert_string_equal(seen.solaredge, "SEKEY123");
	send_check(cat, cfg, "tesla", &tesla);
	assert_string_equal(seen.tesla, "Bearer tok-1");
	enr_catalog_free(cat);

	/* Corrected in a copy of the data directory: sent as it now says. */
	step = replace(text, "\"value\": \"Basic {base64:{key_id}:{key_secret}}\"",
	               "\"value\": \"Bearer {key_id}.{key_secret}\"");
	changed = replace(step, "\"value\": \"{api_key}\"}]}", "\"value\": \"Key {api_key}\"}]}");
	assert_true(asprintf(&dir, "%s/datadir-copy", getenv("HOME")) > 0);
	mkdir(dir, 0700);
	path = test_write_file(dir, "vendors.json", changed, 0600);
	if (getenv("DERENROLL_DATADIR"))
		old_datadir = strdup(getenv("DERENROLL_DATADIR"));
	setenv("DERENROLL_DATADIR", dir, 1);
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);
	if (old_datadir)
		setenv("DERENROLL_DATADIR", old_datadir, 1);
	else
		unsetenv("DERENROLL_DATADIR");
	send_check(cat, cfg, "solis", &solis);
	assert_string_equal(seen.solis, "Bearer K1.S1");
	send_check(cat, cfg, "solaredge", &solaredge);
	assert_string_equal(seen.solaredge, "Key SEKEY123");
	/* Both are marked unconfirmed there. */
	assert_true(
	    enr_vendor_unconfirmed(enr_catalog_find(cat, "derapi"), "vendor_access.solis.headers"));
	assert_true(enr_vendor_unconfirmed(enr_catalog_find(cat, "derapi"),
	                                   "vendor_access.solaredge.headers"));
	enr_catalog_free(cat);

	/* A template naming an unknown field is refused when vendors.json loads. */
	free(changed);
	changed = replace(text, "{access_token}", "{acces_token}");
	assert_int_equal(enr_catalog_load_string(&cat, changed, "vendors.json"), ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "vendor_access"));

	remove(path);
	rmdir(dir);
	free(path);
	free(dir);
	free(step);
	free(changed);
	free(old_datadir);
	free(text);
	free(source);
	enr_config_free(cfg);
	test_httpd_stop(server);
}

static void flow_names_stored_credentials(void **state)
{
	struct fixture *f = *state;
	const char *vendors[] = {"tesla", "solis"};
	struct enr_join_flow_options o = {
	    .redirect_uri = "https://relay.example.com/callback",
	    .vendors = vendors,
	    .n_vendors = 2,
	};
	char *id = NULL;

	/* The sandbox requires Tesla's credentialsID: configured, it is sent. */
	assert_int_equal(enr_join_create_flow(&id, f->catalog, f->cfg, &o), 0);
	free(id);
	/* Without it: a configuration error naming the key, before any request. */
	assert_int_equal(enr_config_set(f->cfg, "vendor.tesla", "credentials_id", ""), 0);
	assert_int_equal(enr_join_create_flow(&id, f->catalog, f->cfg, &o), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "[vendor.tesla] credentials_id"));
	assert_null(id);
	/* Solis needs none. */
	o.vendors = vendors + 1;
	o.n_vendors = 1;
	assert_int_equal(enr_join_create_flow(&id, f->catalog, f->cfg, &o), 0);
	free(id);
	/* Sent anyway when the caller names none: the sandbox refuses it. */
	o.vendors = vendors;
	o.credentials_ids = (const char *const[]){NULL};
	assert_int_equal(enr_join_create_flow(&id, f->catalog, f->cfg, &o), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "credentialsID"));
}

/* POST /join/session/start for `vendor` as the client builds it: the sandbox's verdict. */
static int start_session(struct fixture *f, const char *vendor)
{
	const struct enr_vendor *derapi = enr_catalog_find(f->catalog, "derapi");
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *token = NULL, *id = NULL;
	int rc;

	assert_int_equal(enr_join_app_token(&token, derapi, f->cfg), 0);
	assert_int_equal(enr_join_session_request(&req, derapi, f->cfg, token,
	                                          enr_catalog_find(f->catalog, vendor)),
	                 0);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), 0);
	rc = enr_join_session_response(&id, resp);
	free(id);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	enr_config_free_secret(token);
	return rc;
}

/* The sandbox's config names stored credentials; without them a session
 * carries the app's credentials inline, and the sandbox checks them. */
static void session_credentials_inline_without_credentials_id(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(start_session(f, "enphase"), 0);
	assert_int_equal(enr_config_set(f->cfg, "vendor.enphase", "credentials_id", ""), 0);
	assert_int_equal(start_session(f, "enphase"), 0);
	assert_int_equal(enr_config_set(f->cfg, "vendor.enphase", "client_secret", "wrong"), 0);
	assert_true(start_session(f, "enphase") < 0);
}

static void errors_entry_is_a_failure(void **state)
{
	struct fixture *f = *state;
	struct enr_enroll *e = start(f, "solaredge", ENR_JOIN_SESSION, 0);
	char *st = NULL, *session = session_customer_page(e, &st), *id;

	approve_session(f, session, "solaredge");
	page_reports(f, st, "");
	assert_int_equal(drive(e, ENR_ENROLL_DONE, 10000), ENR_ENROLL_DONE);
	id = strdup(enr_enroll_record(e)->id);
	assert_int_equal(
	    enr_sandbox_revoke_account(f->sb, "solaredge", enr_enroll_record(e)->cred.api_key), 0);
	/* Derapi answers 200 with an errors entry for SolarEdge: not "no sites". */
	assert_int_equal(enr_lifecycle_run(f->store, f->cfg, f->catalog, id, ENR_JOB_CHECK, NULL),
	                 ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "Derapi reports a failure from solaredge"));
	assert_null(strchr(enr_error_last(), '\n'));
	free(id);
	free(session);
	free(st);
	enr_enroll_free(e);
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
    cmocka_unit_test(header_formats_come_from_vendors_json),
    cmocka_unit_test_setup_teardown(flow_names_stored_credentials, setup, teardown),
    cmocka_unit_test_setup_teardown(errors_entry_is_a_failure, setup, teardown),
    cmocka_unit_test_setup_teardown(session_credentials_inline_without_credentials_id, setup,
                                    teardown),
};

TEST_MAIN(tests)
