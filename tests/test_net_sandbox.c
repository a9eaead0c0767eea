/* The product's own client code (http, oauth, solis) against the in-process
 * sandbox: every vendor's OAuth or key round trip, what the vendors refuse,
 * and every injected fault, each giving its failure class and a message that
 * names the vendor and shows no secret. No timing assertions: delays are
 * proven by the order of callbacks. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "derenroll/check.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "derenroll/relay.h"
#include "derenroll/sandbox.h"
#include "derenroll/solis.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "helpers.h"
#include "util.h"

#define MAX_SECRETS  512
#define GENEROUS_MS  60000 /* the time limit of anything that should be quick */
#define JSON_TYPE    "application/json"
#define STATION_BODY "{\"pageNo\":1,\"pageSize\":100}"

struct fixture {
	struct enr_catalog *catalog;
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	json_object *credentials;
	char *log_path; /* everything logged at debug level, checked after each test */
	/* Every secret the tests have seen: no message may show one. */
	char *secrets[MAX_SECRETS];
	size_t n_secrets;
};

/* The vendors with a customer OAuth sign-in. */
static const char *const oauth_vendors[] = {"tesla", "sma", "enphase"};

/* ---- helpers ---------------------------------------------------------- */

static void remember(struct fixture *f, const char *secret)
{
	if (!secret)
		return;
	assert_true(f->n_secrets < MAX_SECRETS);
	f->secrets[f->n_secrets] = strdup(secret);
	assert_non_null(f->secrets[f->n_secrets]);
	f->n_secrets++;
}

static void remember_tokens(struct fixture *f, const struct enr_oauth_tokens *t)
{
	remember(f, t->access_token);
	remember(f, t->refresh_token);
	remember(f, t->id_token);
}

static const struct enr_vendor *vendor(const struct fixture *f, const char *id)
{
	const struct enr_vendor *v = enr_catalog_find(f->catalog, id);

	assert_non_null(v);
	return v;
}

/* A JSON value at a dot path ("data.page.records"), or NULL. */
static json_object *at_path(json_object *obj, const char *path)
{
	char *copy = strdup(path), *save = NULL;

	assert_non_null(copy);
	for (char *part = strtok_r(copy, ".", &save); part && obj;
	     part = strtok_r(NULL, ".", &save))
		if (!json_object_object_get_ex(obj, part, &obj))
			obj = NULL;
	free(copy);
	return obj;
}

/* A printed credential ("solis.key_secret"); borrowed from the fixture. */
static const char *credential(const struct fixture *f, const char *path)
{
	json_object *v = at_path(f->credentials, path);

	assert_non_null(v);
	return json_object_get_string(v);
}

static const char *setting(const struct fixture *f, const char *section, const char *key)
{
	const char *v = enr_config_get(f->cfg, section, key);

	assert_non_null(v);
	return v;
}

/*
 * Asserts that `rc` is `code`, that the thread's message is that error's,
 * names `vendor_name`, holds `text` (when not NULL), and shows no secret the
 * tests have seen (nor a redacted one: none was put in at all).
 */
static void expect_error(const struct fixture *f, int rc, int code, const char *vendor_name,
                         const char *text)
{
	const char *msg = enr_error_last();

	if (rc != code)
		fail_msg("expected %s, got %s: %s", enr_error_name(code), enr_error_name(rc), msg);
	assert_int_equal(enr_error_last_code(), code);
	if (!strstr(msg, vendor_name))
		fail_msg("the message does not name %s: %s", vendor_name, msg);
	if (text && !strstr(msg, text))
		fail_msg("the message does not say \"%s\": %s", text, msg);
	if (strstr(msg, "[redacted]"))
		fail_msg("the message was built with a secret in it: %s", msg);
	for (size_t i = 0; i < f->n_secrets; i++)
		if (strstr(msg, f->secrets[i]))
			fail_msg("the message shows secret #%zu: %s", i, msg);
}

/* The guidance vendors.json gives for `status` and `text`. */
static const char *guidance(const struct enr_vendor *v, int status, const char *text)
{
	const struct enr_guidance *g = enr_vendor_guidance(v, status, text);

	assert_non_null(g);
	return g->message;
}

/* Sends `req` (freed here): the perform's result, the response in `out`. */
static int send(struct enr_http_response **out, const struct fixture *f,
                struct enr_http_request *req)
{
	int rc = enr_http_perform(out, f->cfg, req);

	enr_http_request_free(req);
	return rc;
}

/* Sends `req` (freed here) and classifies the answer; the response in `out`
 * (may be NULL when not wanted). */
static int send_classify(struct enr_http_response **out, const struct fixture *f,
                         struct enr_http_request *req)
{
	struct enr_http_response *resp = NULL;
	int rc = send(&resp, f, req);

	if (rc == 0)
		rc = enr_http_classify(resp);
	if (out)
		*out = resp;
	else
		enr_http_response_free(resp);
	return rc;
}

/* The sites of a check answer, read the way vendors.json's check says. */
static size_t count_sites(const struct enr_vendor *v, const struct enr_http_response *resp)
{
	json_object *root = NULL, *list;
	size_t n = 0;

	assert_int_equal(enr_http_response_json(&root, resp), 0);
	list = at_path(root, v->check.sites);
	assert_non_null(list);
	assert_true(json_object_is_type(list, json_type_array));
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		json_object *site = json_object_array_get_idx(list, i);
		if (v->check.require_field &&
		    !json_object_object_get_ex(site, v->check.require_field, NULL))
			continue;
		assert_true(json_object_object_get_ex(site, v->check.site_id, NULL));
		assert_true(json_object_object_get_ex(site, v->check.site_name, NULL));
		n++;
	}
	json_object_put(root);
	return n;
}

/* The vendor's check request (vendors.json `check`) with an access token
 * (bearer) or an API key (header). */
static struct enr_http_request *check_request(const struct fixture *f, const struct enr_vendor *v,
                                              const char *credential_value)
{
	struct enr_http_request *req = NULL;
	char *url = enr_vendor_url(v, f->cfg, "api_url", v->check.path), *key = NULL;

	assert_non_null(url);
	assert_int_equal(enr_http_request_new(&req, v->check.method, url), 0);
	assert_int_equal(enr_http_request_set_vendor(req, v, "api_url"), 0);
	if (v->check.auth == ENR_CHECK_AUTH_BEARER) {
		assert_int_equal(enr_http_request_set_bearer(req, credential_value), 0);
		if (v->check.query_key) {
			assert_int_equal(enr_vendor_secret(&key, v, f->cfg, "api_key"), 0);
			assert_int_equal(enr_http_request_add_query(req, v->check.query_key, key,
			                                            ENR_HTTP_SECRET),
			                 0);
		}
	} else {
		assert_int_equal(v->check.auth, ENR_CHECK_AUTH_HEADER_KEY);
		assert_int_equal(enr_http_request_add_header(req, v->check.header, credential_value,
		                                             ENR_HTTP_SECRET),
		                 0);
	}
	enr_config_free_secret(key);
	free(url);
	return req;
}

/* The check call; 0 and the number of sites in *sites, or the failure. */
static int check(size_t *sites, const struct fixture *f, const struct enr_vendor *v,
                 const char *credential_value)
{
	struct enr_http_response *resp = NULL;
	int rc = send_classify(&resp, f, check_request(f, v, credential_value));

	if (rc == 0)
		*sites = count_sites(v, resp);
	enr_http_response_free(resp);
	return rc;
}

/* ---- the customer's side ---------------------------------------------- */

/*
 * Plays the customer on the authorize URL: fetches it with the http module,
 * `sandbox_auto=answer` (and `sandbox_account`, when not NULL) added, and
 * returns the whole target of the 302 (redirects are not followed).
 */
static char *customer(const struct fixture *f, const char *authorize_url, const char *answer,
                      const char *account)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *redirect;

	assert_int_equal(enr_http_request_new(&req, "GET", authorize_url), 0);
	assert_int_equal(enr_http_request_add_query(req, "sandbox_auto", answer, 0), 0);
	if (account)
		assert_int_equal(enr_http_request_add_query(req, "sandbox_account", account, 0), 0);
	assert_int_equal(send(&resp, f, req), 0);
	if (resp->status != 302)
		fail_msg("the authorize link answered HTTP %ld: %s", resp->status, resp->body);
	assert_non_null(resp->redirect_url);
	assert_non_null(resp->location);
	/* Messages get the redirect without its query. */
	assert_null(strchr(resp->location, '?'));
	redirect = strdup(resp->redirect_url);
	assert_non_null(redirect);
	enr_http_response_free(resp);
	return redirect;
}

/* Asserts that `redirect` goes to `uri` with a query. */
static void expect_redirect_to(const char *redirect, const char *uri)
{
	size_t len = strlen(uri);

	if (strncmp(redirect, uri, len) != 0 || redirect[len] != '?')
		fail_msg("redirected to %.*s, not to %s", (int)strcspn(redirect, "?"), redirect,
		         uri);
}

/* A GET of `url` with the http module; the response. */
static struct enr_http_response *fetch(const struct fixture *f, const char *url)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;

	assert_int_equal(enr_http_request_new(&req, "GET", url), 0);
	assert_int_equal(send(&resp, f, req), 0);
	return resp;
}

struct grant {
	struct enr_oauth_tokens *tokens;
	char *code; /* as exchanged, for replaying it */
};

static void grant_done(struct grant *g)
{
	enr_oauth_tokens_free(g->tokens);
	free(g->code);
	memset(g, 0, sizeof(*g));
}

/* The code of a redirect, checked against the flow's state. */
static char *code_of(struct fixture *f, const struct enr_oauth_flow *flow, const char *redirect)
{
	struct enr_oauth_callback *cb = NULL;
	char *code;

	assert_int_equal(enr_oauth_callback_parse(&cb, flow->vendor, redirect, flow->state), 0);
	assert_non_null(cb->code);
	assert_string_equal(cb->state, flow->state);
	code = strdup(cb->code);
	assert_non_null(code);
	remember(f, code);
	enr_oauth_callback_free(cb);
	return code;
}

/* Exchanges `code` of `flow`, which must work. */
static void exchange(struct fixture *f, const struct enr_oauth_flow *flow, char *code,
                     struct grant *out)
{
	int rc = enr_oauth_exchange_code(&out->tokens, flow->vendor, f->cfg, code,
	                                 flow->redirect_uri, flow->code_verifier);

	if (rc != 0)
		fail_msg("%s: the code exchange failed: %s", flow->vendor->name, enr_error_last());
	out->code = code;
	remember_tokens(f, out->tokens);
	assert_non_null(out->tokens->access_token);
	assert_non_null(out->tokens->refresh_token);
	assert_true(out->tokens->access_expires_at > out->tokens->obtained_at);
}

/* The whole sign-in with the configured redirect URI: flow, the customer
 * approves as `account` (NULL: a new one), callback, exchange. */
static void authorize(struct fixture *f, const char *vendor_id, const char *account,
                      struct grant *out)
{
	const struct enr_vendor *v = vendor(f, vendor_id);
	struct enr_oauth_flow *flow = NULL;
	char *redirect;

	assert_int_equal(enr_oauth_flow_new(&flow, v, f->cfg, NULL), 0);
	assert_string_equal(flow->redirect_uri, setting(f, v->config_section, "redirect_uri"));
	redirect = customer(f, flow->url, "approve", account);
	expect_redirect_to(redirect, flow->redirect_uri);
	exchange(f, flow, code_of(f, flow, redirect), out);
	free(redirect);
	enr_oauth_flow_free(flow);
}

/* Refreshes, which must work; the new tokens. */
static struct enr_oauth_tokens *refresh(struct fixture *f, const struct enr_vendor *v,
                                        const char *refresh_token)
{
	struct enr_oauth_tokens *t = NULL;
	int rc = enr_oauth_refresh(&t, v, f->cfg, refresh_token);

	if (rc != 0)
		fail_msg("%s: the refresh failed: %s", v->name, enr_error_last());
	remember_tokens(f, t);
	return t;
}

static struct enr_oauth_identity *identity(const struct enr_vendor *v,
                                           const struct enr_oauth_tokens *t)
{
	struct enr_oauth_identity *id = NULL;

	assert_int_equal(enr_oauth_identity_new(&id, v, t, NULL), 0);
	assert_non_null(id->subject);
	assert_non_null(id->account);
	assert_true(id->expires_at > t->obtained_at);
	return id;
}

/* ---- fixture ---------------------------------------------------------- */

static int group_setup(void **state)
{
	/* SMA owners answer only when a test says so. */
	struct enr_sandbox_options options = {
	    .address = "127.0.0.1", .port = 0, .sma_accept_ms = -1};
	struct fixture *f = calloc(1, sizeof(*f));
	static const char *const secret_settings[][2] = {
	    {"vendor.tesla", "client_secret"},
	    {"vendor.sma", "client_secret"},
	    {"vendor.enphase", "client_secret"},
	    {"vendor.enphase", "api_key"},
	    {"vendor.solaredge", "api_key"},
	    {"vendor.solaredge", "account_key"},
	    {"vendor.solis", "key_secret"},
	    {"derapi", "client_secret"},
	    {"relay", "secret"},
	};
	static const char *const printed[] = {
	    "solaredge.api_key",
	    "solis.key_secret",
	    "enphase_partner.access_token",
	    "enphase_partner.refresh_token",
	    "enphase_partner.api_key",
	    "solaredge_account.api_key",
	    "solaredge_account.account_key",
	};
	char *text = NULL;

	if (!f)
		return -1;
	/* The whole conversation at debug level: it must not show a secret either. */
	f->log_path = enr_util_printf("%s/net_sandbox.log", getenv("HOME"));
	if (!f->log_path || enr_log_open(f->log_path) < 0)
		return -1;
	enr_log_set_level(ENR_LOG_DEBUG);
	if (enr_catalog_load(&f->catalog, NULL) < 0) {
		fprintf(stderr, "# %s\n", enr_error_last());
		return -1;
	}
	options.catalog = f->catalog;
	if (enr_sandbox_start(&f->sb, &options) < 0 || enr_sandbox_config(&f->cfg, f->sb) < 0 ||
	    enr_sandbox_credentials_json(&text, f->sb) < 0 ||
	    !(f->credentials = json_tokener_parse(text))) {
		fprintf(stderr, "# the sandbox did not start: %s\n", enr_error_last());
		return -1;
	}
	free(text);
	for (size_t i = 0; i < ENR_ARRAY_SIZE(secret_settings); i++)
		remember(f, setting(f, secret_settings[i][0], secret_settings[i][1]));
	for (size_t i = 0; i < ENR_ARRAY_SIZE(printed); i++)
		remember(f, credential(f, printed[i]));
	*state = f;
	return 0;
}

static int group_teardown(void **state)
{
	struct fixture *f = *state;

	if (!f)
		return 0;
	enr_sandbox_stop(f->sb);
	enr_config_free(f->cfg);
	json_object_put(f->credentials);
	enr_catalog_free(f->catalog);
	for (size_t i = 0; i < f->n_secrets; i++)
		free(f->secrets[i]);
	enr_log_close();
	free(f->log_path);
	free(f);
	return 0;
}

/* Every test starts from a sandbox without faults, delays or grace. */
static int reset(void **state)
{
	struct fixture *f = *state;

	enr_sandbox_clear_faults(f->sb);
	enr_error_clear();
	if (enr_sandbox_set_latency(f->sb, NULL, 0) < 0 ||
	    enr_sandbox_set(f->sb, "refresh_grace", 0) < 0 ||
	    enr_sandbox_set(f->sb, "access_ttl", 0) < 0)
		return -1;
	return 0;
}

/* ---- OAuth ------------------------------------------------------------ */

/* Runs `test` for each vendor with a customer OAuth sign-in. */
static void each_oauth_vendor(struct fixture *f,
                              void (*test)(struct fixture *f, const struct enr_vendor *v))
{
	for (size_t i = 0; i < ENR_ARRAY_SIZE(oauth_vendors); i++) {
		print_message("# %s\n", oauth_vendors[i]);
		test(f, vendor(f, oauth_vendors[i]));
	}
}

/* Code grant, identity, the API, single-use code, rotating refresh: each
 * vendor's round trip with the configured (relay or Enphase page) redirect. */
static void round_trip(struct fixture *f, const struct enr_vendor *v)
{
	const char *refused = guidance(v, 0, "invalid_grant");
	struct enr_oauth_identity *id = NULL, *again_id = NULL, *other_id = NULL;
	struct enr_oauth_tokens *renewed = NULL, *third = NULL, *replayed = NULL;
	struct grant g = {0}, again = {0}, other = {0};
	char account[64];
	size_t sites = 0;

	snprintf(account, sizeof(account), "alice-%s", v->id);
	authorize(f, v->id, account, &g);
	assert_int_equal(check(&sites, f, v, g.tokens->access_token), 0);
	assert_int_equal(sites, 1);

	/* Who it is: the same account name is the same account. */
	id = identity(v, g.tokens);
	if (strcmp(v->id, "tesla") == 0) {
		assert_string_equal(id->account, id->subject);
		assert_int_equal(strlen(id->subject), 36); /* a UUID */
		assert_non_null(id->scopes);
		assert_non_null(strstr(id->scopes, "energy_device_data"));
		assert_non_null(strstr(id->scopes, "offline_access"));
		assert_false(id->scope_missing);
		assert_null(id->warning);
		assert_non_null(g.tokens->id_token);
	} else if (strcmp(v->id, "enphase") == 0) {
		/* enl_uid, Enphase's numeric user id */
		assert_int_equal(strspn(id->account, "0123456789"), strlen(id->account));
		assert_string_equal(id->scopes, "read write");
	} else {
		assert_string_equal(id->account, id->subject);
		assert_string_equal(g.tokens->scope, "offline_access");
		/* offline_access: the refresh token does not expire */
		assert_int_equal(g.tokens->refresh_expires_at, 0);
	}
	authorize(f, v->id, account, &again);
	authorize(f, v->id, NULL, &other);
	again_id = identity(v, again.tokens);
	other_id = identity(v, other.tokens);
	assert_string_equal(again_id->account, id->account);
	assert_string_not_equal(other_id->account, id->account);

	/* A code works once. */
	expect_error(f,
	             enr_oauth_exchange_code(&replayed, v, f->cfg, g.code,
	                                     setting(f, v->config_section, "redirect_uri"), NULL),
	             ENR_E_REJECTED, v->name, refused);
	assert_null(replayed);

	/* A refresh token works once (no grace): the new one goes on. */
	renewed = refresh(f, v, g.tokens->refresh_token);
	assert_non_null(renewed->refresh_token);
	assert_string_not_equal(renewed->refresh_token, g.tokens->refresh_token);
	assert_string_not_equal(renewed->access_token, g.tokens->access_token);
	assert_int_equal(check(&sites, f, v, renewed->access_token), 0);
	assert_int_equal(sites, 1);
	expect_error(f, enr_oauth_refresh(&third, v, f->cfg, g.tokens->refresh_token),
	             ENR_E_REJECTED, v->name, refused);
	assert_null(third);
	third = refresh(f, v, renewed->refresh_token);
	enr_oauth_identity_free(id);
	id = identity(v, third);
	assert_string_equal(id->account, again_id->account);

	enr_oauth_tokens_free(renewed);
	enr_oauth_tokens_free(third);
	enr_oauth_identity_free(id);
	enr_oauth_identity_free(again_id);
	enr_oauth_identity_free(other_id);
	grant_done(&g);
	grant_done(&again);
	grant_done(&other);
}

static void oauth_round_trips(void **state)
{
	each_oauth_vendor(*state, round_trip);
}

/* Within the grace window the previous refresh token still works. */
static void grace_window(struct fixture *f, const struct enr_vendor *v)
{
	struct enr_oauth_tokens *first = NULL, *second = NULL, *late = NULL;
	struct grant g = {0};

	assert_int_equal(enr_sandbox_set(f->sb, "refresh_grace", 3600), 0);
	authorize(f, v->id, NULL, &g);
	first = refresh(f, v, g.tokens->refresh_token);
	second = refresh(f, v, g.tokens->refresh_token);
	assert_string_not_equal(first->refresh_token, second->refresh_token);
	/* Grace ends: the rotated-out token is refused, the newest is not. */
	assert_int_equal(enr_sandbox_set(f->sb, "refresh_grace", 0), 0);
	expect_error(f, enr_oauth_refresh(&late, v, f->cfg, g.tokens->refresh_token),
	             ENR_E_REJECTED, v->name, guidance(v, 0, "invalid_grant"));
	enr_oauth_tokens_free(first);
	first = refresh(f, v, second->refresh_token);
	enr_oauth_tokens_free(first);
	enr_oauth_tokens_free(second);
	grant_done(&g);
}

static void refresh_grace_window(void **state)
{
	each_oauth_vendor(*state, grace_window);
}

/* PKCE where the vendor takes it (Tesla and SMA): the verifier must match. */
static void pkce_round_trip(void **state)
{
	struct fixture *f = *state;
	static const char *const ids[] = {"tesla", "sma"};
	struct enr_oauth_authorize_options opts = {.pkce = true};

	for (size_t i = 0; i < ENR_ARRAY_SIZE(ids); i++) {
		const struct enr_vendor *v = vendor(f, ids[i]);
		struct enr_oauth_flow *flow = NULL;
		struct enr_oauth_tokens *t = NULL;
		struct grant g = {0};
		char *redirect, *code;
		char wrong[64];

		assert_int_equal(enr_oauth_flow_new(&flow, v, f->cfg, &opts), 0);
		assert_non_null(flow->code_verifier);
		remember(f, flow->code_verifier);
		assert_non_null(strstr(flow->url, "&code_challenge_method=S256"));
		redirect = customer(f, flow->url, "approve", NULL);
		code = code_of(f, flow, redirect);
		snprintf(wrong, sizeof(wrong), "%.42sX", flow->code_verifier);
		remember(f, wrong);
		expect_error(
		    f, enr_oauth_exchange_code(&t, v, f->cfg, code, flow->redirect_uri, wrong),
		    ENR_E_REJECTED, v->name, guidance(v, 0, "invalid_grant"));
		assert_null(t);
		free(code);
		free(redirect);
		/* A code is gone after a failed exchange too: a new sign-in. */
		redirect = customer(f, flow->url, "approve", NULL);
		exchange(f, flow, code_of(f, flow, redirect), &g);
		free(redirect);
		grant_done(&g);
		enr_oauth_flow_free(flow);
	}
}

/* Lifetimes: the answer's expires_in, else the catalogue's; SMA's offline
 * refresh token never expires. */
static void lifetimes(struct fixture *f, const struct enr_vendor *v)
{
	assert_int_equal(enr_sandbox_set(f->sb, "access_ttl", 120), 0);
	struct enr_oauth_tokens *renewed = NULL;
	struct grant g = {0};

	authorize(f, v->id, NULL, &g);
	assert_int_equal(g.tokens->access_expires_at, g.tokens->obtained_at + 120);
	if (strcmp(v->id, "sma") == 0)
		assert_int_equal(g.tokens->refresh_expires_at, 0);
	else
		assert_int_equal(g.tokens->refresh_expires_at,
		                 g.tokens->obtained_at + v->tokens.refresh_ttl);
	renewed = refresh(f, v, g.tokens->refresh_token);
	assert_int_equal(renewed->access_expires_at, renewed->obtained_at + 120);
	enr_oauth_tokens_free(renewed);
	grant_done(&g);
}

static void token_lifetimes(void **state)
{
	each_oauth_vendor(*state, lifetimes);
}

/* An expired access token asks for a refresh; a revoked grant for the customer. */
static void expiry_and_revocation(struct fixture *f, const struct enr_vendor *v)
{
	struct enr_oauth_tokens *renewed = NULL, *refused = NULL;
	struct grant g = {0};
	size_t sites = 0;

	authorize(f, v->id, NULL, &g);
	assert_int_equal(enr_sandbox_expire(f->sb, NULL, g.tokens->access_token), 0);
	expect_error(f, check(&sites, f, v, g.tokens->access_token), ENR_E_REJECTED, v->name,
	             "refresh");
	renewed = refresh(f, v, g.tokens->refresh_token);
	assert_int_equal(check(&sites, f, v, renewed->access_token), 0);

	/* The customer withdraws the app's access. */
	assert_int_equal(enr_sandbox_revoke(f->sb, renewed->refresh_token), 0);
	expect_error(f, check(&sites, f, v, renewed->access_token), ENR_E_REJECTED, v->name, NULL);
	expect_error(f, enr_oauth_refresh(&refused, v, f->cfg, renewed->refresh_token),
	             ENR_E_REJECTED, v->name, guidance(v, 0, "invalid_grant"));
	assert_null(refused);
	enr_oauth_tokens_free(renewed);
	grant_done(&g);
}

static void expired_and_revoked(void **state)
{
	each_oauth_vendor(*state, expiry_and_revocation);
}

/* A redirect that belongs to another sign-in, or has lost its state. */
static void state_check(struct fixture *f, const struct enr_vendor *v)
{
	struct enr_oauth_flow *mine = NULL, *other = NULL;
	struct enr_oauth_callback *cb = NULL;
	char *redirect, *stripped, *state_param;

	assert_int_equal(enr_oauth_flow_new(&mine, v, f->cfg, NULL), 0);
	assert_int_equal(enr_oauth_flow_new(&other, v, f->cfg, NULL), 0);
	assert_string_not_equal(mine->state, other->state);
	redirect = customer(f, other->url, "approve", NULL);
	expect_error(f, enr_oauth_callback_parse(&cb, v, redirect, mine->state), ENR_E_STATE,
	             v->name, "does not match");
	assert_null(cb);
	/* The same redirect without its state. */
	stripped = strdup(redirect);
	assert_non_null(stripped);
	state_param = strstr(stripped, "&state=");
	assert_non_null(state_param);
	*state_param = '\0';
	expect_error(f, enr_oauth_callback_parse(&cb, v, stripped, mine->state), ENR_E_STATE,
	             v->name, "is missing");
	assert_null(cb);
	/* With its own flow it is good. */
	assert_int_equal(enr_oauth_callback_parse(&cb, v, redirect, other->state), 0);
	remember(f, cb->code);
	enr_oauth_callback_free(cb);
	free(stripped);
	free(redirect);
	enr_oauth_flow_free(mine);
	enr_oauth_flow_free(other);
}

static void wrong_state_is_refused(void **state)
{
	each_oauth_vendor(*state, state_check);
}

static void decline(struct fixture *f, const struct enr_vendor *v)
{
	struct enr_oauth_flow *flow = NULL;
	struct enr_oauth_callback *cb = NULL;
	char *redirect;

	assert_int_equal(enr_oauth_flow_new(&flow, v, f->cfg, NULL), 0);
	redirect = customer(f, flow->url, "deny", NULL);
	expect_redirect_to(redirect, flow->redirect_uri);
	expect_error(f, enr_oauth_callback_parse(&cb, v, redirect, flow->state), ENR_E_DECLINED,
	             v->name, "the customer declined");
	assert_null(cb);
	free(redirect);
	enr_oauth_flow_free(flow);
}

static void customer_declines(void **state)
{
	each_oauth_vendor(*state, decline);
}

/* Sign-in on this computer: the redirect goes to the loopback receiver. */
static void loopback_sign_in(struct fixture *f, const struct enr_vendor *v)
{
	struct enr_oauth_authorize_options opts = {0};
	struct enr_oauth_receiver *rx = NULL;
	struct enr_oauth_flow *flow = NULL;
	struct enr_http_response *page = NULL;
	struct grant g = {0};
	char *redirect, *received = NULL, *again = NULL;
	size_t sites = 0;

	assert_int_equal(enr_oauth_receiver_new(&rx, GENEROUS_MS), 0);
	assert_int_equal(enr_oauth_receiver_poll(&received, rx), ENR_E_AGAIN);
	opts.redirect_uri = enr_oauth_receiver_redirect_uri(rx);
	assert_int_equal(enr_oauth_flow_new(&flow, v, f->cfg, &opts), 0);
	assert_string_equal(flow->redirect_uri, opts.redirect_uri);
	redirect = customer(f, flow->url, "approve", NULL);
	expect_redirect_to(redirect, opts.redirect_uri);
	/* The browser follows the redirect to the receiver. */
	page = fetch(f, redirect);
	assert_int_equal(page->status, 200);
	assert_non_null(strstr(page->body, "close this tab"));
	enr_http_response_free(page);
	assert_int_equal(enr_oauth_receiver_poll(&received, rx), 0);
	assert_string_equal(received, redirect);
	exchange(f, flow, code_of(f, flow, received), &g);
	assert_int_equal(check(&sites, f, v, g.tokens->access_token), 0);
	assert_int_equal(sites, 1);
	/* One-shot: a second redirect is turned away, the first stays. */
	page = fetch(f, redirect);
	assert_int_equal(page->status, 410);
	enr_http_response_free(page);
	assert_int_equal(enr_oauth_receiver_poll(&again, rx), 0);
	assert_string_equal(again, received);
	free(again);
	free(received);
	free(redirect);
	grant_done(&g);
	enr_oauth_flow_free(flow);
	enr_oauth_receiver_free(rx);
}

static void loopback_receiver(void **state)
{
	each_oauth_vendor(*state, loopback_sign_in);
}

/*
 * The QR path with the sandbox's own relay as the registered redirect: a
 * short link to the authorize URL, the phone follows it, the vendor sends
 * the customer to the relay, and the wizard collects the result.
 */
static void relay_callback(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "tesla");
	struct enr_http_response *resp = NULL;
	struct enr_http_request *req = NULL;
	struct enr_oauth_flow *flow = NULL;
	char *short_link = NULL, *target, *redirect, *query = NULL, *relay_uri;
	long long expires_at = 0;
	struct grant g = {0};

	assert_true(enr_relay_client_configured(f->cfg));
	assert_int_equal(enr_oauth_flow_new(&flow, v, f->cfg, NULL), 0);
	relay_uri = enr_util_printf("%s/callback", setting(f, "relay", "url"));
	assert_string_equal(flow->redirect_uri, relay_uri);
	free(relay_uri);
	assert_int_equal(enr_relay_link_request(&req, f->cfg, flow->url, flow->state, 600, v->name),
	                 0);
	assert_int_equal(send(&resp, f, req), 0);
	assert_int_equal(enr_relay_link_response(&short_link, &expires_at, resp), 0);
	assert_true(expires_at > (long long)time(NULL));
	enr_http_response_free(resp);
	/* Nothing came back yet. */
	assert_int_equal(enr_relay_result_request(&req, f->cfg, flow->state, 0), 0);
	assert_int_equal(send(&resp, f, req), 0);
	assert_int_equal(enr_relay_result_response(&query, resp), ENR_E_AGAIN);
	enr_http_response_free(resp);

	/* The phone opens the short link: it leads to the authorize URL. */
	resp = fetch(f, short_link);
	assert_int_equal(resp->status, 302);
	assert_string_equal(resp->redirect_url, flow->url);
	target = strdup(resp->redirect_url);
	enr_http_response_free(resp);
	/* The customer approves; the vendor sends the phone to the relay. */
	redirect = customer(f, target, "approve", NULL);
	expect_redirect_to(redirect, flow->redirect_uri);
	resp = fetch(f, redirect);
	assert_int_equal(resp->status, 200);
	enr_http_response_free(resp);
	/* The wizard collects the result, once. */
	assert_int_equal(enr_relay_result_request(&req, f->cfg, flow->state, 30), 0);
	assert_int_equal(send(&resp, f, req), 0);
	assert_int_equal(enr_relay_result_response(&query, resp), 0);
	enr_http_response_free(resp);
	exchange(f, flow, code_of(f, flow, query), &g);
	free(query);
	assert_int_equal(enr_relay_result_request(&req, f->cfg, flow->state, 0), 0);
	assert_int_equal(send(&resp, f, req), 0);
	assert_int_equal(enr_relay_result_response(&query, resp), ENR_E_EXPIRED);
	enr_http_response_free(resp);

	free(redirect);
	free(target);
	free(short_link);
	grant_done(&g);
	enr_oauth_flow_free(flow);
}

/* Enphase's default redirect shows the code on a page: the installer types it. */
static void enphase_typed_code(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "enphase");
	struct enr_oauth_flow *flow = NULL;
	struct enr_http_response *page = NULL;
	struct grant g = {0};
	const char *start, *end;
	char *redirect, *typed, *code = NULL;

	assert_int_equal(enr_oauth_flow_new(&flow, v, f->cfg, NULL), 0);
	redirect = customer(f, flow->url, "approve", NULL);
	expect_redirect_to(redirect, flow->redirect_uri);
	page = fetch(f, redirect);
	assert_int_equal(page->status, 200);
	start = strstr(page->body, "id=\"code\">");
	assert_non_null(start);
	start += strlen("id=\"code\">");
	end = strchr(start, '<');
	assert_non_null(end);
	/* As typed: with a stray space around it. */
	typed = enr_util_printf(" %.*s\n", (int)(end - start), start);
	enr_http_response_free(page);
	assert_int_equal(enr_oauth_parse_code(&code, v, typed, flow->state), 0);
	remember(f, code);
	exchange(f, flow, strdup(code), &g);
	enr_config_free_secret(code);
	free(typed);
	free(redirect);
	grant_done(&g);
	enr_oauth_flow_free(flow);
}

/* A customer who does not grant the energy scope: the identity warns, the API refuses. */
static void tesla_missing_scope(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "tesla");
	struct enr_oauth_authorize_options opts = {.scopes = "openid offline_access"};
	struct enr_oauth_identity *id = NULL;
	struct enr_oauth_flow *flow = NULL;
	struct grant g = {0};
	char *redirect;
	size_t sites = 0;

	assert_int_equal(enr_oauth_flow_new(&flow, v, f->cfg, &opts), 0);
	redirect = customer(f, flow->url, "approve", NULL);
	exchange(f, flow, code_of(f, flow, redirect), &g);
	assert_int_equal(enr_oauth_identity_new(&id, v, g.tokens, NULL), 0);
	assert_true(id->scope_missing);
	assert_non_null(id->warning);
	assert_non_null(strstr(id->warning, "Tesla"));
	assert_non_null(strstr(id->warning, "energy_device_data"));
	expect_error(f, check(&sites, f, v, g.tokens->access_token), ENR_E_REJECTED, v->name,
	             guidance(v, 403, ""));
	enr_oauth_identity_free(id);
	free(redirect);
	grant_done(&g);
	enr_oauth_flow_free(flow);
}

/* ---- keys --------------------------------------------------------------- */

static void solaredge_keys(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "solaredge");
	struct enr_http_request *req;
	struct enr_http_response *resp = NULL;
	size_t sites = 0;
	long remaining;

	assert_int_equal(check(&sites, f, v, credential(f, "solaredge.api_key")), 0);
	assert_int_equal(sites, 1);
	/* Any well-formed key is an account of its own. */
	remember(f, "SandboxKey0000000001");
	assert_int_equal(check(&sites, f, v, "SandboxKey0000000001"), 0);
	assert_int_equal(sites, 1);
	/* A bad key: the guidance says where v2 keys are made, and what a homeowner does. */
	remember(f, "invalidKey000000");
	expect_error(f, check(&sites, f, v, "invalidKey000000"), ENR_E_REJECTED, v->name,
	             "developer.solaredge.com");
	assert_string_equal(enr_error_last(), guidance(v, 401, ""));
	assert_non_null(strstr(enr_error_last(), "Derapi Join"));

	/* The company's Fleet key needs its account key in X-Account-Key. */
	expect_error(f, check(&sites, f, v, credential(f, "solaredge_account.api_key")),
	             ENR_E_REJECTED, v->name, "developer.solaredge.com");
	req = check_request(f, v, credential(f, "solaredge_account.api_key"));
	assert_string_equal(v->check.account_header, "X-Account-Key");
	assert_int_equal(enr_http_request_add_header(req, v->check.account_header,
	                                             credential(f, "solaredge_account.account_key"),
	                                             ENR_HTTP_SECRET),
	                 0);
	assert_int_equal(send_classify(&resp, f, req), 0);
	assert_int_equal(count_sites(v, resp), 3);
	/* Every answer reports what is left of the key's minute, in the header
	 * vendors.json names: the http module keeps it for the scheduler. */
	assert_int_equal(resp->rate_limit, 0);
	assert_string_equal(v->rate_limits[0].remaining_header, "x-ratelimit-remaining-minute");
	assert_true(resp->rate_remaining >= 0 && resp->rate_remaining < 100);
	/* ... and the size of the minute, in the header vendors.json names beside it. */
	assert_string_equal(v->rate_limits[0].limit_header, "x-ratelimit-limit-minute");
	assert_int_equal(resp->rate_window, 100);
	/* The count is the sandbox's own, not the recording's example: one call less. */
	remaining = resp->rate_remaining;
	enr_http_response_free(resp);
	req = check_request(f, v, credential(f, "solaredge_account.api_key"));
	assert_int_equal(enr_http_request_add_header(req, v->check.account_header,
	                                             credential(f, "solaredge_account.account_key"),
	                                             ENR_HTTP_SECRET),
	                 0);
	assert_int_equal(send_classify(&resp, f, req), 0);
	assert_int_equal(resp->rate_remaining, remaining - 1);
	enr_http_response_free(resp);
}

/* The retired v1 API answers 410: the message says so, and that v1 keys are dead. */
static void solaredge_v1_is_gone(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "solaredge");
	struct enr_http_request *req = NULL;
	char *url = enr_util_printf("%s/solaredge/sites/list?size=100", enr_sandbox_url(f->sb));

	assert_int_equal(enr_http_request_new(&req, "GET", url), 0);
	assert_int_equal(enr_http_request_set_vendor(req, v, "api_url"), 0);
	assert_int_equal(enr_http_request_add_query(
	                     req, "api_key", credential(f, "solaredge.api_key"), ENR_HTTP_SECRET),
	                 0);
	expect_error(f, send_classify(NULL, f, req), ENR_E_MISCONFIGURED, v->name,
	             "retired its v1 Monitoring API");
	assert_string_equal(enr_error_last(), guidance(v, 410, ""));
	assert_non_null(strstr(enr_error_last(), "v1 keys do not work on v2"));
	free(url);
}

/* enr_check_key_kind(): a v2 key works, a bad one is rejected, and a 410 (the
 * retired v1 API, here an api_url that is not v2's) says the key is retired;
 * an answer that says nothing about the key (a 500) is an error. */
static void solaredge_key_kind(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "solaredge");
	struct enr_credentials cred = {.type = ENR_CRED_API_KEY};
	struct enr_config *v1 = NULL;
	enum enr_check_key_kind kind;
	size_t sites = 0;
	char *old_url = enr_util_printf("%s/solaredge/retired", enr_sandbox_url(f->sb));

	cred.api_key = (char *)credential(f, "solaredge.api_key");
	assert_int_equal(enr_check_key_kind(&kind, &sites, v, f->cfg, "key", &cred), 0);
	assert_int_equal(kind, ENR_CHECK_KEY_WORKS);
	assert_int_equal(sites, 1);

	remember(f, "invalidKey000000");
	cred.api_key = (char *)"invalidKey000000";
	assert_int_equal(enr_check_key_kind(&kind, &sites, v, f->cfg, "key", &cred), 0);
	assert_int_equal(kind, ENR_CHECK_KEY_REJECTED);
	assert_string_equal(enr_error_last(), guidance(v, 401, ""));

	/* The company's Fleet key with its X-Account-Key ([vendor.solaredge] account_key). */
	memset(&cred, 0, sizeof(cred));
	cred.type = ENR_CRED_ACCOUNT;
	assert_int_equal(enr_check_key_kind(&kind, NULL, v, f->cfg, "account", &cred), 0);
	assert_int_equal(kind, ENR_CHECK_KEY_WORKS);

	assert_int_equal(enr_sandbox_config(&v1, f->sb), 0);
	assert_int_equal(enr_config_set(v1, "vendor.solaredge", "api_url", old_url), 0);
	assert_int_equal(enr_check_key_kind(&kind, &sites, v, v1, "account", &cred), 0);
	assert_int_equal(kind, ENR_CHECK_KEY_RETIRED);
	assert_int_equal(sites, 0);
	assert_string_equal(enr_error_last(), guidance(v, 410, ""));
	assert_non_null(strstr(enr_error_last(), "v1 keys do not work on v2"));

	assert_int_equal(enr_sandbox_add_fault(f->sb, "solaredge", ENR_SANDBOX_FAULT_500, 1, 0), 0);
	expect_error(f, enr_check_key_kind(&kind, &sites, v, f->cfg, "account", &cred),
	             ENR_E_TRANSIENT, v->name, "");
	enr_config_free(v1);
	free(old_url);
}

/* The Enphase partner plan: the company's own tokens and API key. */
static void enphase_partner(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "enphase");
	struct enr_oauth_tokens *renewed = NULL, *refused = NULL;
	size_t sites = 0;

	assert_string_equal(credential(f, "enphase_partner.api_key"),
	                    setting(f, "vendor.enphase", "api_key"));
	assert_int_equal(check(&sites, f, v, credential(f, "enphase_partner.access_token")), 0);
	assert_int_equal(sites, 3);
	renewed = refresh(f, v, credential(f, "enphase_partner.refresh_token"));
	assert_int_equal(check(&sites, f, v, renewed->access_token), 0);
	assert_int_equal(sites, 3);
	expect_error(
	    f,
	    enr_oauth_refresh(&refused, v, f->cfg, credential(f, "enphase_partner.refresh_token")),
	    ENR_E_REJECTED, v->name, guidance(v, 0, "invalid_grant"));
	assert_null(refused);
	enr_oauth_tokens_free(renewed);
}

/* A request to SMA's backchannel with the app's client-credentials token. */
static struct enr_http_request *bc_request(const struct fixture *f, const char *method,
                                           const char *path, const char *token, const char *json)
{
	const struct enr_vendor *v = vendor(f, "sma");
	char *url = enr_vendor_url(v, f->cfg, "bc_url", path);
	struct enr_http_request *req = NULL;

	assert_non_null(url);
	assert_int_equal(enr_http_request_new(&req, method, url), 0);
	assert_int_equal(enr_http_request_set_vendor(req, v, "bc_url"), 0);
	assert_int_equal(enr_http_request_set_bearer(req, token), 0);
	if (json)
		assert_int_equal(enr_http_request_set_body(req, JSON_TYPE, json, strlen(json)), 0);
	free(url);
	return req;
}

/* The owner's answer to a backchannel request, as SMA reports it. */
static char *bc_status(const struct fixture *f, const char *token, const char *owner)
{
	const struct enr_method *m = enr_vendor_method(vendor(f, "sma"), "email");
	struct enr_http_response *resp = NULL;
	json_object *root = NULL, *status;
	char *path = enr_util_printf("%s/%s", m->path, owner), *text;

	assert_int_equal(send_classify(&resp, f, bc_request(f, "GET", path, token, NULL)), 0);
	assert_int_equal(enr_http_response_json(&root, resp), 0);
	/* SMA's field is `state` (edwh/sma-octopus), never `status`. */
	assert_false(json_object_object_get_ex(root, "status", NULL));
	assert_true(json_object_object_get_ex(root, "state", &status));
	text = strdup(json_object_get_string(status));
	json_object_put(root);
	enr_http_response_free(resp);
	free(path);
	return text;
}

/* SMA e-mails the owner: client credentials, bc-authorize, the answer, plants. */
static void sma_backchannel(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "sma");
	const struct enr_method *m = enr_vendor_method(v, "email");
	const char *owner = credential(f, "sma.owner_email");
	struct enr_http_response *resp = NULL;
	struct enr_oauth_tokens *app = NULL, *none = NULL;
	struct enr_config *wrong = NULL;
	char *body = enr_util_printf("{\"loginHint\": \"%s\"}", owner), *status;
	size_t sites = 0;

	assert_non_null(m);
	assert_string_equal(m->endpoint, "bc_url");
	assert_int_equal(enr_oauth_client_credentials(&app, v, f->cfg, NULL), 0);
	remember_tokens(f, app);
	assert_null(app->refresh_token);
	/* No owner has answered yet: no plants. */
	assert_int_equal(check(&sites, f, v, app->access_token), 0);
	assert_int_equal(sites, 0);
	assert_int_equal(
	    send_classify(&resp, f, bc_request(f, "POST", m->path, app->access_token, body)), 0);
	assert_int_equal(resp->status, 201);
	enr_http_response_free(resp);
	status = bc_status(f, app->access_token, owner);
	assert_string_equal(status, "Pending");
	free(status);
	assert_int_equal(enr_sandbox_sma_decide(f->sb, owner, true), 0);
	status = bc_status(f, app->access_token, owner);
	assert_string_equal(status, "Accepted");
	free(status);
	assert_int_equal(check(&sites, f, v, app->access_token), 0);
	assert_int_equal(sites, 1);
	/* Asking again for an owner who consented: 409, as SMA answers. */
	assert_true(
	    send_classify(&resp, f, bc_request(f, "POST", m->path, app->access_token, body)) < 0);
	assert_int_equal(resp->status, 409);
	enr_http_response_free(resp);
	/* A wrong client secret is the company's problem. */
	assert_int_equal(enr_sandbox_config(&wrong, f->sb), 0);
	remember(f, "wrong-sma-secret-0000");
	assert_int_equal(
	    enr_config_set(wrong, "vendor.sma", "client_secret", "wrong-sma-secret-0000"), 0);
	expect_error(f, enr_oauth_client_credentials(&none, v, wrong, NULL), ENR_E_MISCONFIGURED,
	             v->name, guidance(v, 0, "invalid_client"));
	assert_null(none);
	enr_config_free(wrong);
	enr_oauth_tokens_free(app);
	free(body);
}

/* A signed Solis station list request at time `now`. */
static struct enr_http_request *solis_request(const struct fixture *f, const char *key_id,
                                              const char *key_secret, long long now)
{
	const struct enr_vendor *v = vendor(f, "solis");
	struct enr_solis_headers h = {0};
	struct enr_http_request *req = NULL;
	char *url = enr_vendor_url(v, f->cfg, "api_url", v->check.path);

	assert_non_null(url);
	assert_string_equal(v->check.body, STATION_BODY);
	assert_int_equal(enr_solis_sign(&h, key_id, key_secret, v->check.path, JSON_TYPE,
	                                STATION_BODY, strlen(STATION_BODY), now),
	                 0);
	assert_int_equal(enr_http_request_new(&req, "POST", url), 0);
	assert_int_equal(enr_http_request_set_vendor(req, v, "api_url"), 0);
	assert_int_equal(
	    enr_http_request_set_body(req, JSON_TYPE, STATION_BODY, strlen(STATION_BODY)), 0);
	assert_int_equal(enr_http_request_add_header(req, "Content-MD5", h.content_md5, 0), 0);
	assert_int_equal(enr_http_request_add_header(req, "Date", h.date, 0), 0);
	assert_int_equal(
	    enr_http_request_add_header(req, "Authorization", h.authorization, ENR_HTTP_SECRET), 0);
	enr_solis_headers_done(&h);
	free(url);
	return req;
}

/* The same, sent and classified. */
static int solis_call(struct enr_http_response **out, const struct fixture *f, const char *key_id,
                      const char *key_secret, long long now)
{
	return send_classify(out, f, solis_request(f, key_id, key_secret, now));
}

/* The printed account's request, now. */
static struct enr_http_request *solis_printed(const struct fixture *f)
{
	return solis_request(f, credential(f, "solis.key_id"), credential(f, "solis.key_secret"),
	                     (long long)time(NULL));
}

/* The body's Solis `code` ("0" is success); borrowed from `root`. */
static const char *solis_code(json_object *root)
{
	json_object *code = at_path(root, "code");

	assert_non_null(code);
	return json_object_get_string(code);
}

static void solis_signatures(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "solis");
	const char *key_id = credential(f, "solis.key_id");
	const char *secret = credential(f, "solis.key_secret");
	long long now = (long long)time(NULL);
	struct enr_http_response *resp = NULL;
	json_object *root = NULL;

	/* Signed with the printed pair: the account's one station. */
	assert_int_equal(solis_call(&resp, f, key_id, secret, now), 0);
	assert_int_equal(enr_http_response_json(&root, resp), 0);
	assert_string_equal(solis_code(root), "0");
	assert_int_equal(count_sites(v, resp), 1);
	json_object_put(root);
	enr_http_response_free(resp);
	/* The company's KeyID sees three. */
	assert_int_equal(solis_call(&resp, f, setting(f, "vendor.solis", "key_id"), secret, now),
	                 0);
	assert_int_equal(count_sites(v, resp), 3);
	enr_http_response_free(resp);

	/* The wrong secret: 403 and where the pair comes from. */
	remember(f, "not-the-KeySecret-1234");
	expect_error(f, solis_call(&resp, f, key_id, "not-the-KeySecret-1234", now), ENR_E_REJECTED,
	             v->name, "SolisCloud -> Service -> API Management");
	assert_int_equal(resp->status, 403);
	enr_http_response_free(resp);

	/* A clock 20 minutes off: 408, transient, check the clock. */
	expect_error(f, solis_call(&resp, f, key_id, secret, now - 20 * 60), ENR_E_TRANSIENT,
	             v->name, "clock");
	assert_int_equal(resp->status, 408);
	assert_string_equal(enr_error_last(), guidance(v, 408, ""));
	enr_http_response_free(resp);

	/* An account without API access: HTTP 200, body code R0000. */
	assert_int_equal(solis_call(&resp, f, "demo-noapi-4711", secret, now), 0);
	assert_int_equal(enr_http_response_json(&root, resp), 0);
	assert_string_equal(solis_code(root), "R0000");
	expect_error(f,
	             enr_http_vendor_error(v, (int)resp->status, solis_code(root),
	                                   ENR_E_BADRESPONSE, "Solis answered code %s",
	                                   solis_code(root)),
	             ENR_E_REJECTED, v->name, "Solis support");
	json_object_put(root);
	enr_http_response_free(resp);
}

/* Derapi's app token: client credentials with Basic auth. */
static void derapi_client_credentials(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *v = vendor(f, "derapi");
	struct enr_oauth_tokens *t = NULL;
	struct enr_config *wrong = NULL;

	assert_int_equal(enr_oauth_client_credentials(&t, v, f->cfg, NULL), 0);
	remember_tokens(f, t);
	assert_non_null(t->access_token);
	assert_null(t->refresh_token);
	assert_string_equal(t->token_type, "Bearer");
	assert_int_equal(t->access_expires_at, t->obtained_at + v->tokens.access_ttl);
	enr_oauth_tokens_free(t);
	t = NULL;

	assert_int_equal(enr_sandbox_config(&wrong, f->sb), 0);
	remember(f, "wrong-derapi-secret-0000");
	assert_int_equal(
	    enr_config_set(wrong, "derapi", "client_secret", "wrong-derapi-secret-0000"), 0);
	expect_error(f, enr_oauth_client_credentials(&t, v, wrong, NULL), ENR_E_MISCONFIGURED,
	             v->name, "[derapi]");
	assert_null(t);
	enr_config_free(wrong);
}

/* ---- the check module ----------------------------------------------------- */

/* enr_check_run() with `cred` by `method`: 0 and the number of sites, or the failure. */
static int check_run(size_t *sites, const struct fixture *f, const char *vendor_id,
                     const char *method, const struct enr_credentials *cred)
{
	struct enr_check_result *result = NULL;
	int rc = enr_check_run(&result, vendor(f, vendor_id), f->cfg, method, cred);

	if (rc == 0) {
		*sites = result->n_sites;
		for (size_t i = 0; i < result->n_sites; i++) {
			assert_non_null(result->sites[i].id);
			assert_non_null(enr_check_find_site(result, result->sites[i].id));
		}
	} else {
		assert_null(result);
	}
	enr_check_result_free(result);
	return rc;
}

/* The product's check of each enrollment method, against the sandbox. */
static void check_module(void **state)
{
	struct fixture *f = *state;
	struct enr_credentials cred = {0};
	size_t sites = 0;

	for (size_t i = 0; i < ENR_ARRAY_SIZE(oauth_vendors); i++) {
		struct grant g = {0};
		authorize(f, oauth_vendors[i], NULL, &g);
		memset(&cred, 0, sizeof(cred));
		cred.type = ENR_CRED_OAUTH;
		cred.tokens.access_token = g.tokens->access_token;
		assert_int_equal(check_run(&sites, f, oauth_vendors[i], "oauth", &cred), 0);
		assert_int_equal(sites, 1);
		grant_done(&g);
	}
	memset(&cred, 0, sizeof(cred));
	cred.type = ENR_CRED_PARTNER;
	cred.tokens.access_token = (char *)credential(f, "enphase_partner.access_token");
	cred.api_key = (char *)credential(f, "enphase_partner.api_key");
	assert_int_equal(check_run(&sites, f, "enphase", "partner", &cred), 0);
	assert_int_equal(sites, 3);

	memset(&cred, 0, sizeof(cred));
	cred.type = ENR_CRED_API_KEY;
	cred.api_key = (char *)credential(f, "solaredge.api_key");
	assert_int_equal(check_run(&sites, f, "solaredge", "key", &cred), 0);
	assert_int_equal(sites, 1);
	remember(f, "invalidKey000000");
	cred.api_key = (char *)"invalidKey000000";
	expect_error(f, check_run(&sites, f, "solaredge", "key", &cred), ENR_E_REJECTED,
	             "SolarEdge", "developer.solaredge.com");

	memset(&cred, 0, sizeof(cred));
	cred.type = ENR_CRED_KEY_PAIR;
	cred.key_id = (char *)credential(f, "solis.key_id");
	cred.key_secret = (char *)credential(f, "solis.key_secret");
	assert_int_equal(check_run(&sites, f, "solis", "key", &cred), 0);
	assert_int_equal(sites, 1);
	cred.key_id = (char *)"demo-noapi-4711";
	expect_error(f, check_run(&sites, f, "solis", "key", &cred), ENR_E_REJECTED, "Solis",
	             "Solis support");
	cred.key_id = (char *)credential(f, "solis.key_id");
	remember(f, "not-the-KeySecret-1234");
	cred.key_secret = (char *)"not-the-KeySecret-1234";
	expect_error(f, check_run(&sites, f, "solis", "key", &cred), ENR_E_REJECTED, "Solis",
	             "SolisCloud -> Service -> API Management");

	/* The company's portal accounts see three sites each. */
	memset(&cred, 0, sizeof(cred));
	cred.type = ENR_CRED_ACCOUNT;
	assert_int_equal(check_run(&sites, f, "solaredge", "account", &cred), 0);
	assert_int_equal(sites, 3);
	assert_int_equal(check_run(&sites, f, "solis", "account", &cred), 0);
	assert_int_equal(sites, 3);
}

/* ---- faults ------------------------------------------------------------- */

static void fault(const struct fixture *f, const char *vendor_id, enum enr_sandbox_fault kind,
                  long retry_after)
{
	assert_int_equal(enr_sandbox_add_fault(f->sb, vendor_id, kind, 1, retry_after), 0);
}

static void fault_429(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *se = vendor(f, "solaredge"), *tesla = vendor(f, "tesla");
	const char *key = credential(f, "solaredge.api_key");
	struct enr_http_response *resp = NULL;
	struct enr_oauth_tokens *t = NULL;
	struct grant g = {0};
	size_t sites = 0;

	fault(f, "solaredge", ENR_SANDBOX_FAULT_429, 7);
	expect_error(f, send_classify(&resp, f, check_request(f, se, key)), ENR_E_TRANSIENT,
	             se->name, "try again in 7 s");
	assert_int_equal(resp->status, 429);
	assert_int_equal(resp->retry_after, 7);
	enr_http_response_free(resp);
	assert_int_equal(check(&sites, f, se, key), 0);

	/* On a token call: transient too, and the refresh token is not spent. */
	authorize(f, "tesla", NULL, &g);
	fault(f, "tesla", ENR_SANDBOX_FAULT_429, 30);
	expect_error(f, enr_oauth_refresh(&t, tesla, f->cfg, g.tokens->refresh_token),
	             ENR_E_TRANSIENT, tesla->name, "try again in 30 s");
	assert_null(t);
	t = refresh(f, tesla, g.tokens->refresh_token);
	enr_oauth_tokens_free(t);
	grant_done(&g);
}

static void fault_500(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *sma = vendor(f, "sma"), *enphase = vendor(f, "enphase");
	const struct enr_vendor *derapi = vendor(f, "derapi");
	struct enr_oauth_tokens *t = NULL;
	struct enr_oauth_flow *flow = NULL;
	struct grant g = {0};
	char *redirect, *code;
	size_t sites = 0;

	authorize(f, "sma", NULL, &g);
	fault(f, "sma", ENR_SANDBOX_FAULT_500, 0);
	expect_error(f, check(&sites, f, sma, g.tokens->access_token), ENR_E_TRANSIENT, sma->name,
	             "HTTP 500");
	assert_int_equal(check(&sites, f, sma, g.tokens->access_token), 0);
	grant_done(&g);

	/* An Enphase code exchange (parameters in the query, Basic auth). */
	assert_int_equal(enr_oauth_flow_new(&flow, enphase, f->cfg, NULL), 0);
	redirect = customer(f, flow->url, "approve", NULL);
	code = code_of(f, flow, redirect);
	fault(f, "enphase", ENR_SANDBOX_FAULT_500, 0);
	expect_error(f,
	             enr_oauth_exchange_code(&t, enphase, f->cfg, code, flow->redirect_uri, NULL),
	             ENR_E_TRANSIENT, enphase->name, "HTTP 500");
	assert_null(t);
	/* The fault answered instead of the vendor: the code was not spent. */
	exchange(f, flow, code, &g);
	grant_done(&g);
	free(redirect);
	enr_oauth_flow_free(flow);

	fault(f, "derapi", ENR_SANDBOX_FAULT_500, 0);
	expect_error(f, enr_oauth_client_credentials(&t, derapi, f->cfg, NULL), ENR_E_TRANSIENT,
	             derapi->name, "HTTP 500");
	assert_null(t);
}

static void fault_malformed(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *se = vendor(f, "solaredge"), *tesla = vendor(f, "tesla");
	struct enr_http_response *resp = NULL;
	struct enr_oauth_tokens *t = NULL;
	json_object *root = NULL;
	struct grant g = {0};

	fault(f, "solaredge", ENR_SANDBOX_FAULT_MALFORMED, 0);
	assert_int_equal(
	    send_classify(&resp, f, check_request(f, se, credential(f, "solaredge.api_key"))), 0);
	assert_int_equal(resp->status, 200);
	expect_error(f, enr_http_response_json(&root, resp), ENR_E_BADRESPONSE, se->name,
	             "malformed");
	assert_null(root);
	enr_http_response_free(resp);

	authorize(f, "tesla", NULL, &g);
	fault(f, "tesla", ENR_SANDBOX_FAULT_MALFORMED, 0);
	expect_error(f, enr_oauth_refresh(&t, tesla, f->cfg, g.tokens->refresh_token),
	             ENR_E_BADRESPONSE, tesla->name, "malformed");
	assert_null(t);
	grant_done(&g);
}

static void fault_huge(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *solis = vendor(f, "solis"), *enphase = vendor(f, "enphase");
	struct enr_http_response *resp = NULL;
	struct enr_oauth_tokens *t = NULL;
	struct grant g = {0};
	char cap[32];

	snprintf(cap, sizeof(cap), "larger than %d bytes", ENR_HTTP_DEFAULT_MAX_BODY);
	fault(f, "solis", ENR_SANDBOX_FAULT_HUGE, 0);
	expect_error(f, send_classify(&resp, f, solis_printed(f)), ENR_E_BADRESPONSE, solis->name,
	             cap);
	assert_null(resp);

	authorize(f, "enphase", NULL, &g);
	fault(f, "enphase", ENR_SANDBOX_FAULT_HUGE, 0);
	expect_error(f, enr_oauth_refresh(&t, enphase, f->cfg, g.tokens->refresh_token),
	             ENR_E_BADRESPONSE, enphase->name, cap);
	assert_null(t);
	grant_done(&g);
}

static void fault_stall(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *se = vendor(f, "solaredge"), *tesla = vendor(f, "tesla");
	struct enr_http_response *resp = NULL;
	struct enr_http_request *req = NULL;
	struct enr_oauth_tokens *t = NULL;
	struct enr_config *impatient = NULL;
	struct grant g = {0};
	size_t sites = 0;

	/* A body that stops coming, with a short limit on the request. */
	fault(f, "solaredge", ENR_SANDBOX_FAULT_STALL, 0);
	req = check_request(f, se, credential(f, "solaredge.api_key"));
	enr_http_request_set_timeouts(req, 0, 1500);
	expect_error(f, send_classify(&resp, f, req), ENR_E_TRANSIENT, se->name,
	             "did not answer in time");
	assert_null(resp);
	assert_int_equal(check(&sites, f, se, credential(f, "solaredge.api_key")), 0);

	/* A token call with [http] timeout = 1 s. */
	authorize(f, "tesla", NULL, &g);
	assert_int_equal(enr_sandbox_config(&impatient, f->sb), 0);
	assert_int_equal(enr_config_set(impatient, "http", "timeout", "1"), 0);
	fault(f, "tesla", ENR_SANDBOX_FAULT_STALL, 0);
	expect_error(f, enr_oauth_refresh(&t, tesla, impatient, g.tokens->refresh_token),
	             ENR_E_TRANSIENT, tesla->name, "did not answer in time");
	assert_null(t);
	enr_config_free(impatient);
	grant_done(&g);
}

/* ---- latency through the multi interface ---- */

struct probe {
	struct fixture *f;
	struct enr_http_multi *multi;
	int delayed_done;
	long delayed_status;
	int quick_done;   /* quick answers so far */
	int quick_ok;     /* of which 200 */
	int delayed_seen; /* delayed answers the quick callbacks saw, summed */
};

static void on_delayed(struct enr_http_response *resp, void *ctx)
{
	struct probe *p = ctx;

	p->delayed_done++;
	p->delayed_status = resp->status;
	enr_http_response_free(resp);
}

static void on_quick(struct enr_http_response *resp, void *ctx)
{
	struct probe *p = ctx;
	uint64_t id;

	p->quick_done++;
	p->quick_ok += resp->status == 200;
	p->delayed_seen += p->delayed_done;
	enr_http_response_free(resp);
	/* A callback may start the next transfer: two more, one after another. */
	if (p->quick_done < 3) {
		struct enr_http_request *req = solis_printed(p->f);
		assert_int_equal(enr_http_multi_add(&id, p->multi, req, on_quick, p), 0);
		enr_http_request_free(req);
	}
}

/* The caller's own event loop: poll the multi's sockets, then step, until
 * *counter reaches `target` (or a generous limit, which fails the test). */
static void loop_until(struct enr_http_multi *multi, const int *counter, int target)
{
	struct timespec start, now;
	struct pollfd fds[16];

	clock_gettime(CLOCK_MONOTONIC, &start);
	while (*counter < target) {
		size_t n = enr_http_multi_poll_fds(multi, fds, ENR_ARRAY_SIZE(fds));
		long wait = enr_http_multi_timeout_ms(multi);

		assert_true(n <= ENR_ARRAY_SIZE(fds));
		if (wait < 0 || wait > 200)
			wait = 200;
		poll(fds, (nfds_t)n, (int)wait);
		assert_true(enr_http_multi_step(multi) >= 0);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 > GENEROUS_MS)
			fail_msg("the transfers did not finish within %d s", GENEROUS_MS / 1000);
	}
}

static void latency_does_not_block(void **state)
{
	struct fixture *f = *state;
	const struct enr_vendor *se = vendor(f, "solaredge");
	const char *key = credential(f, "solaredge.api_key");
	struct probe p = {.f = f};
	struct enr_http_request *req;
	uint64_t delayed_id = 0, id = 0;

	/* SolarEdge answers only after ten minutes: it cannot answer during this test. */
	assert_int_equal(enr_sandbox_set_latency(f->sb, "solaredge", 600000), 0);
	assert_int_equal(enr_http_multi_new(&p.multi, f->cfg), 0);
	req = check_request(f, se, key);
	assert_int_equal(enr_http_multi_add(&delayed_id, p.multi, req, on_delayed, &p), 0);
	enr_http_request_free(req);
	req = solis_printed(f);
	assert_int_equal(enr_http_multi_add(&id, p.multi, req, on_quick, &p), 0);
	enr_http_request_free(req);
	assert_int_equal(enr_http_multi_running(p.multi), 2);

	/* Three Solis calls, one after another, all while SolarEdge delays. */
	loop_until(p.multi, &p.quick_done, 3);
	assert_int_equal(p.quick_ok, 3);
	assert_int_equal(p.delayed_seen, 0);
	assert_int_equal(p.delayed_done, 0);
	assert_int_equal(enr_http_multi_running(p.multi), 1);
	assert_int_equal(enr_http_multi_cancel(p.multi, delayed_id), 0);
	assert_int_equal(enr_http_multi_running(p.multi), 0);

	/* A delayed answer still comes. */
	assert_int_equal(enr_sandbox_set_latency(f->sb, "solaredge", 300), 0);
	req = check_request(f, se, key);
	assert_int_equal(enr_http_multi_add(&delayed_id, p.multi, req, on_delayed, &p), 0);
	enr_http_request_free(req);
	loop_until(p.multi, &p.delayed_done, 1);
	assert_int_equal(p.delayed_status, 200);
	assert_int_equal(p.quick_done, 3);
	enr_http_multi_free(p.multi);
}

/* After each test: the log says what happened, and shows no secret. */
static int log_is_clean(void **state)
{
	struct fixture *f = *state;
	char *log = test_read_file(f->log_path);
	int rc = 0;

	if (!log || !strstr(log, " debug: http: ")) {
		fprintf(stderr, "# nothing was logged to %s\n", f->log_path);
		rc = -1;
	}
	for (size_t i = 0; log && i < f->n_secrets; i++) {
		if (strstr(log, f->secrets[i])) {
			fprintf(stderr, "# the log shows secret #%zu\n", i);
			rc = -1;
		}
	}
	if (log && strstr(log, "[redacted]")) {
		fprintf(stderr, "# a secret was written into a log line: %s\n",
		        strstr(log, "[redacted]"));
		rc = -1;
	}
	free(log);
	/* Start the next test's log afresh. */
	if (truncate(f->log_path, 0) < 0)
		rc = -1;
	return rc;
}

#define T(name) cmocka_unit_test_setup_teardown(name, reset, log_is_clean)

static const struct CMUnitTest tests[] = {
    T(oauth_round_trips),
    T(refresh_grace_window),
    T(pkce_round_trip),
    T(token_lifetimes),
    T(expired_and_revoked),
    T(wrong_state_is_refused),
    T(customer_declines),
    T(loopback_receiver),
    T(relay_callback),
    T(enphase_typed_code),
    T(tesla_missing_scope),
    T(solaredge_keys),
    T(solaredge_v1_is_gone),
    T(solaredge_key_kind),
    T(enphase_partner),
    T(sma_backchannel),
    T(solis_signatures),
    T(derapi_client_credentials),
    T(check_module),
    T(fault_429),
    T(fault_500),
    T(fault_malformed),
    T(fault_huge),
    T(fault_stall),
    T(latency_does_not_block),
};

int main(void)
{
	int failed;

	test_env_setup();
	/* A safety net: a URL that is not the sandbox's (a catalogue default
	 * nobody overrode) goes to a dead proxy on loopback, never out. */
	setenv("http_proxy", "http://127.0.0.1:9", 1);
	setenv("https_proxy", "http://127.0.0.1:9", 1);
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");
	failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
	enr_log_clear_secrets();
	test_env_cleanup();
	return failed;
}
