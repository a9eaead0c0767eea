/* Unit tests of the oauth module's pure logic: authorize URLs, PKCE, the
 * redirect coming back, token answers, JWT identity. No network. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "answers.h"
#include "util.h"
#include "derenroll/vendor.h"
#include "fixtures.h"
#include "util.h"

static struct enr_config *cfg;

static int setup(void **state)
{
	(void)state;
	assert_int_equal(enr_config_new(&cfg), 0);
	enr_config_set(cfg, "vendor.tesla", "client_id", "tesla-client");
	enr_config_set(cfg, "vendor.tesla", "redirect_uri", "https://relay.example/callback");
	enr_config_set(cfg, "vendor.enphase", "client_id", "enphase-client");
	enr_config_set(cfg, "vendor.sma", "client_id", "sma-client");
	enr_config_set(cfg, "vendor.sma", "redirect_uri", "https://relay.example/callback");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	enr_config_free(cfg);
	cfg = NULL;
	return 0;
}

/* The decoded value of query parameter `name` in `url`, malloc'd, or NULL. */
static char *query_value(const char *url, const char *name)
{
	struct enr_oauth_callback *cb = NULL;
	char *value = NULL;

	if (enr_oauth_callback_parse(&cb, NULL, url, NULL) < 0)
		return NULL;
	if (enr_oauth_callback_param(cb, name))
		value = strdup(enr_oauth_callback_param(cb, name));
	enr_oauth_callback_free(cb);
	return value;
}

static void assert_query(const char *url, const char *name, const char *expected)
{
	test_expect_string(query_value(url, name), expected);
}

/* How many times `name` is a parameter of `url`. */
static int count_param(const char *url, const char *name)
{
	struct enr_oauth_callback *cb = NULL;
	int n = 0;

	if (enr_oauth_callback_parse(&cb, NULL, url, NULL) < 0)
		return -1;
	for (size_t i = 0; i < cb->n_params; i++)
		n += strcmp(cb->params[i].name, name) == 0;
	enr_oauth_callback_free(cb);
	return n;
}

static void test_pkce_rfc7636_vector(void **state)
{
	char *challenge = NULL;

	(void)state;
	assert_int_equal(
	    enr_oauth_pkce_challenge(&challenge, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), 0);
	assert_string_equal(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
	free(challenge);
}

static void test_authorize_url_tesla(void **state)
{
	struct enr_oauth_flow *a = NULL, *b = NULL;
	const struct enr_http_field extra[] = {{"prompt_missing_scopes", "true"}};
	struct enr_oauth_authorize_options opts = {.extra = extra, .n_extra = 1};

	(void)state;
	assert_int_equal(enr_oauth_flow_new(&a, test_vendor("tesla"), cfg, &opts), 0);
	assert_int_equal(enr_oauth_flow_new(&b, test_vendor("tesla"), cfg, NULL), 0);
	assert_true(strncmp(a->url,
	                    "https://auth.tesla.com/oauth2/v3/authorize?response_type=code&",
	                    62) == 0);
	assert_query(a->url, "client_id", "tesla-client");
	assert_query(a->url, "redirect_uri", "https://relay.example/callback");
	assert_non_null(strstr(a->url, "redirect_uri=https%3A%2F%2Frelay.example%2Fcallback"));
	assert_query(a->url, "scope", "openid offline_access energy_device_data");
	assert_query(a->url, "state", a->state);
	assert_query(a->url, "prompt_missing_scopes", "true");
	assert_query(a->url, "code_challenge", NULL); /* vendors.json: no PKCE for Tesla */
	assert_null(a->code_verifier);
	assert_string_equal(a->redirect_uri, "https://relay.example/callback");
	/* 128 bits, base64url: 22 characters, different every time. */
	assert_int_equal(strlen(a->state), 22);
	assert_int_equal(
	    strspn(a->state, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
	    22);
	assert_string_not_equal(a->state, b->state);
	/* vendors.json asks Tesla to show again the scopes the customer unticked. */
	assert_query(b->url, "prompt_missing_scopes", "true");
	enr_oauth_flow_free(a);
	enr_oauth_flow_free(b);
	enr_oauth_flow_free(NULL);
}

/* vendors.json oauth.authorize_params, replaced name by name by [section] authorize_params. */
static void test_authorize_params(void **state)
{
	const struct enr_http_field extra[] = {{"locale", "fr-FR"}};
	struct enr_oauth_authorize_options opts = {.extra = extra, .n_extra = 1};
	struct enr_oauth_flow *f = NULL;

	(void)state;
	enr_config_set(cfg, "vendor.tesla", "authorize_params",
	               "prompt=consent&locale=de-DE&prompt_missing_scopes=&x%20y=a%26b");
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("tesla"), cfg, NULL), 0);
	assert_query(f->url, "prompt", "consent");
	assert_query(f->url, "locale", "de-DE");
	assert_query(f->url, "prompt_missing_scopes", NULL); /* an empty value drops it */
	assert_query(f->url, "x y", "a&b");
	assert_int_equal(count_param(f->url, "prompt"), 1);
	enr_oauth_flow_free(f);
	/* What the program passes replaces both. */
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("tesla"), cfg, &opts), 0);
	assert_query(f->url, "locale", "fr-FR");
	assert_int_equal(count_param(f->url, "locale"), 1);
	enr_oauth_flow_free(f);
	enr_config_set(cfg, "vendor.tesla", "authorize_params", "");
	/* SMA asks for nothing more. */
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("sma"), cfg, NULL), 0);
	assert_query(f->url, "prompt", NULL);
	assert_true(f->wants_refresh); /* offline_access is among its scopes */
	enr_oauth_flow_free(f);
	enr_config_set(cfg, "vendor.sma", "scopes", "openid");
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("sma"), cfg, NULL), 0);
	assert_false(f->wants_refresh);
	enr_oauth_flow_free(f);
	enr_config_set(cfg, "vendor.sma", "scopes", "");
}

static struct enr_oauth_callback *callback(const char *query)
{
	struct enr_oauth_callback *cb = NULL;

	assert_int_equal(enr_oauth_callback_parse(&cb, NULL, query, NULL), 0);
	return cb;
}

/* RFC 9207: the redirect's iss must be the vendor's issuer. */
static void test_check_issuer(void **state)
{
	const struct enr_vendor *sma = test_vendor("sma");
	struct enr_oauth_callback *cb;

	(void)state;
	/* No iss: nothing to check (RFC 9207 leaves it to the server). */
	static const struct {
		const char *issuer; /* [vendor.sma] issuer */
		const char *query;
		int rc;
		const char *says;
	} cases[] = {
	    /* No iss: nothing to check (RFC 9207 leaves it to the server). */
	    {"", "code=c&state=s", 0, NULL},
	    /* No issuer known: iss must name the host the sign-in went to. */
	    {"", "code=c&iss=https%3A%2F%2Fauth.smaapis.de", 0, NULL},
	    {"", "code=c&iss=https%3A%2F%2Fauth.tesla.com%2Foauth2%2Fv3", ENR_E_STATE,
	     "another sign-in server (iss https://auth.tesla.com/oauth2/v3"},
	    /* A look-alike host is another host. */
	    {"", "code=c&iss=https%3A%2F%2Fauth.smaapis.de.evil.example", ENR_E_STATE,
	     "another sign-in server"},
	    /* Known: exactly it. */
	    {"https://auth.smaapis.de/oauth2", "code=c&iss=https%3A%2F%2Fauth.smaapis.de%2Foauth2",
	     0, NULL},
	    {"https://auth.smaapis.de/oauth2", "code=c&iss=https%3A%2F%2Fauth.smaapis.de",
	     ENR_E_STATE, "expected https://auth.smaapis.de/oauth2"},
	    /* Twice is refused, whatever the values. */
	    {"https://auth.smaapis.de/oauth2",
	     "code=c&iss=https%3A%2F%2Fauth.smaapis.de%2Foauth2&iss=x", ENR_E_PARSE, "twice"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enr_config_set(cfg, "vendor.sma", "issuer", cases[i].issuer);
		cb = callback(cases[i].query);
		assert_int_equal(enr_oauth_check_issuer(cb, sma, cfg), cases[i].rc);
		if (cases[i].says)
			assert_non_null(strstr(enr_error_last(), cases[i].says));
		enr_oauth_callback_free(cb);
	}
	assert_string_equal(enr_oauth_issuer(sma, cfg), "https://auth.smaapis.de/oauth2");
	enr_config_set(cfg, "vendor.sma", "issuer", "");
}

/* A refresh token asked for is a refresh token got. */
static void test_check_refresh(void **state)
{
	char access[] = "a", refresh[] = "r", openid[] = "openid";
	struct enr_oauth_tokens with = {.access_token = access, .refresh_token = refresh};
	struct enr_oauth_tokens without = {.access_token = access};
	struct enr_oauth_tokens declined = {
	    .access_token = access, .refresh_token = refresh, .scope = openid};
	struct enr_oauth_flow *sma = NULL, *enphase = NULL, *consent = NULL;

	(void)state;
	assert_int_equal(enr_oauth_flow_new(&sma, test_vendor("sma"), cfg, NULL), 0);
	assert_int_equal(enr_oauth_flow_new(&enphase, test_vendor("enphase"), cfg, NULL), 0);
	assert_int_equal(enr_oauth_check_refresh(sma, cfg, &with), 0);
	/* Strict by default: SMA's and Enphase's refresh tokens rotate. */
	assert_int_equal(enr_oauth_check_refresh(sma, cfg, &without), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "no refresh token"));
	assert_non_null(strstr(enr_error_last(), "offline access"));
	assert_non_null(strstr(enr_error_last(), "[vendor.sma] authorize_params"));
	/* offline_access not granted to a sign-in without prompt=consent: OIDC
	 * providers need it (ours to fix first); with it, the customer declined. */
	assert_false(sma->asks_consent);
	assert_int_equal(enr_oauth_check_refresh(sma, cfg, &declined), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "did not grant offline_access"));
	assert_non_null(strstr(enr_error_last(), "authorize_params = prompt=consent"));
	enr_config_set(cfg, "vendor.sma", "authorize_params", "prompt=login%20consent");
	assert_int_equal(enr_oauth_flow_new(&consent, test_vendor("sma"), cfg, NULL), 0);
	enr_config_set(cfg, "vendor.sma", "authorize_params", "");
	assert_true(consent->asks_consent);
	assert_int_equal(enr_oauth_check_refresh(consent, cfg, &declined), ENR_E_DECLINED);
	assert_non_null(strstr(enr_error_last(), "ask the customer to authorize again"));
	assert_int_equal(enr_oauth_check_refresh(consent, cfg, &without), ENR_E_MISCONFIGURED);
	assert_null(strstr(enr_error_last(), "prompt=consent"));
	enr_oauth_flow_free(consent);
	/* Enphase has no offline scope: every code grant must give one. */
	assert_int_equal(enr_oauth_check_refresh(enphase, cfg, &without), ENR_E_MISCONFIGURED);
	assert_int_equal(enr_oauth_check_refresh(enphase, cfg, &declined), 0);
	/* Not strict: the same message, as a warning. */
	enr_config_set(cfg, "vendor.sma", "strict_refresh", "false");
	assert_int_equal(enr_oauth_check_refresh(sma, cfg, &without), 1);
	assert_non_null(strstr(enr_error_last(), "no refresh token"));
	enr_config_set(cfg, "vendor.sma", "strict_refresh", "");
	/* Nothing asked for, nothing missing. */
	sma->wants_refresh = false;
	assert_int_equal(enr_oauth_check_refresh(sma, cfg, &without), 0);
	enr_oauth_flow_free(sma);
	enr_oauth_flow_free(enphase);
}

/* What the vendors really answer (assets/answers) passes the strict check. */
static void test_check_refresh_recorded(void **state)
{
	static const char *const vendors[] = {"tesla", "sma", "enphase"};

	(void)state;
	for (size_t i = 0; i < sizeof(vendors) / sizeof(vendors[0]); i++) {
		struct enr_oauth_flow *flow = NULL;
		struct enr_oauth_tokens *t = NULL;
		struct enr_http_response r;
		json_object *body = NULL;

		assert_int_equal(enr_answers__body(&body, vendors[i], "token"), 0);
		r = test_response(200, json_object_to_json_string(body), vendors[i], true);
		assert_int_equal(enr_oauth_token_response(&t, &r), 0);
		assert_int_equal(enr_oauth_flow_new(&flow, test_vendor(vendors[i]), cfg, NULL), 0);
		assert_true(flow->wants_refresh);
		assert_int_equal(enr_oauth_check_refresh(flow, cfg, t), 0);
		/* The same answer without its refresh token is refused. */
		enr_util_free_secret(t->refresh_token);
		t->refresh_token = NULL;
		assert_true(enr_oauth_check_refresh(flow, cfg, t) < 0);
		enr_oauth_flow_free(flow);
		enr_oauth_tokens_free(t);
		json_object_put(body);
	}
}

static void test_authorize_url_pkce(void **state)
{
	struct enr_oauth_authorize_options opts = {.pkce = true,
	                                           .redirect_uri = "http://127.0.0.1:5555/callback",
	                                           .scopes = "offline_access"};
	struct enr_oauth_flow *f = NULL;
	char *challenge = NULL;

	(void)state;
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("sma"), cfg, &opts), 0);
	assert_non_null(f->code_verifier);
	assert_int_equal(strlen(f->code_verifier), 43);
	assert_int_equal(enr_oauth_pkce_challenge(&challenge, f->code_verifier), 0);
	assert_query(f->url, "code_challenge", challenge);
	assert_query(f->url, "code_challenge_method", "S256");
	assert_query(f->url, "redirect_uri", "http://127.0.0.1:5555/callback");
	assert_string_equal(f->redirect_uri, "http://127.0.0.1:5555/callback");
	/* The verifier is a secret; the challenge is not. */
	assert_null(strstr(f->url, f->code_verifier));
	free(challenge);
	enr_oauth_flow_free(f);
}

static void test_authorize_url_enphase_defaults(void **state)
{
	struct enr_oauth_flow *f = NULL;

	(void)state;
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("enphase"), cfg, NULL), 0);
	assert_query(f->url, "redirect_uri", "https://api.enphaseenergy.com/oauth/redirect_uri");
	assert_null(strstr(f->url, "scope=")); /* no scopes: no parameter */
	enr_oauth_flow_free(f);
}

static void test_authorize_url_errors(void **state)
{
	struct enr_config *c = NULL;
	struct enr_oauth_flow *f = NULL;

	(void)state;
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("solaredge"), cfg, NULL),
	                 ENR_E_UNSUPPORTED);
	assert_int_equal(enr_config_new(&c), 0);
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("tesla"), c, NULL), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "[vendor.tesla] client_id"));
	enr_config_set(c, "vendor.tesla", "client_id", "x");
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("tesla"), c, NULL), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "redirect_uri"));
	enr_config_set(c, "vendor.tesla", "redirect_uri", "https://relay.example/cb");
	enr_config_set(c, "vendor.tesla", "authorize_url", "http://auth.example.com/authorize");
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("tesla"), c, NULL),
	                 ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "authorize_url"));
	enr_config_set(c, "vendor.tesla", "authorize_url", "http://127.0.0.1:4000/tesla/authorize");
	enr_config_set(c, "vendor.tesla", "redirect_uri", "http://relay.example/cb");
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("tesla"), c, NULL),
	                 ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "redirect URI"));
	enr_config_set(c, "vendor.tesla", "redirect_uri", "https://relay.example/cb");
	assert_int_equal(enr_oauth_flow_new(&f, test_vendor("tesla"), c, NULL), 0);
	assert_true(strncmp(f->url, "http://127.0.0.1:4000/tesla/authorize?", 38) == 0);
	enr_oauth_flow_free(f);
	enr_config_free(c);
}

static void test_callback_forms(void **state)
{
	struct enr_oauth_callback *cb = NULL;
	char *code = NULL;

	(void)state;
	/* A full redirect URL, with a fragment to ignore. */
	assert_int_equal(enr_oauth_callback_parse(&cb, test_vendor("tesla"),
	                                          "https://relay.example/callback?code=NA_abc%2Fdef"
	                                          "&state=S1&locale=en-US#_=_",
	                                          "S1"),
	                 0);
	assert_string_equal(cb->code, "NA_abc/def");
	assert_string_equal(cb->state, "S1");
	assert_string_equal(enr_oauth_callback_param(cb, "locale"), "en-US");
	assert_null(enr_oauth_callback_param(cb, "nothing"));
	enr_oauth_callback_free(cb);

	/* A query string, with or without '?', surrounded by white space. */
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "  ?state=S2&code=c+d \n", "S2"), 0);
	assert_string_equal(code, "c d");
	enr_util_free_secret(code);
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "code=xyz&state=S3", "S3"), 0);
	assert_string_equal(code, "xyz");
	enr_util_free_secret(code);

	/* A bare code as typed from Enphase's page: no state to check. */
	assert_int_equal(enr_oauth_parse_code(&code, test_vendor("enphase"), " k3Xq9Z\n", "S4"), 0);
	assert_string_equal(code, "k3Xq9Z");
	enr_util_free_secret(code);
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "4/0AY0e-g7abc", "S4"), 0);
	assert_string_equal(code, "4/0AY0e-g7abc");
	enr_util_free_secret(code);

	/* Derapi Join flows come back with a state and no code. */
	assert_int_equal(enr_oauth_callback_parse(
	                     &cb, NULL, "https://relay.example/cb?state=S5&enrollmentID=e-1", "S5"),
	                 0);
	assert_null(cb->code);
	assert_string_equal(enr_oauth_callback_param(cb, "enrollmentID"), "e-1");
	enr_oauth_callback_free(cb);
	assert_int_equal(
	    enr_oauth_parse_code(&code, NULL, "https://relay.example/cb?state=S5", "S5"),
	    ENR_E_PARSE);
	assert_null(code);
}

static void test_callback_refusals(void **state)
{
	struct enr_oauth_callback *cb = NULL;
	char *code = NULL;

	(void)state;
	assert_int_equal(enr_oauth_parse_code(&code, test_vendor("tesla"),
	                                      "https://relay.example/callback?code=abc&state=OTHER",
	                                      "EXPECTED"),
	                 ENR_E_STATE);
	assert_non_null(strstr(enr_error_last(), "does not match"));
	assert_int_equal(enr_oauth_parse_code(&code, test_vendor("tesla"), "code=abc", "EXPECTED"),
	                 ENR_E_STATE);
	assert_non_null(strstr(enr_error_last(), "missing"));
	/* A prefix of the right state is not the right state. */
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "code=abc&state=EXPEC", "EXPECTED"),
	                 ENR_E_STATE);
	/* Twice the same parameter: refused rather than guessed. */
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "code=a&state=S&state=T", "S"),
	                 ENR_E_PARSE);
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "code=a&code=b&state=S", "S"),
	                 ENR_E_PARSE);

	assert_int_equal(
	    enr_oauth_callback_parse(&cb, test_vendor("tesla"),
	                             "https://relay.example/callback?error=access_denied"
	                             "&state=S",
	                             "S"),
	    ENR_E_DECLINED);
	assert_null(cb);
	assert_non_null(strstr(enr_error_last(), "Tesla: the customer declined"));
	/* An error with a wrong state is a wrong state. */
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "error=access_denied&state=X", "S"),
	                 ENR_E_STATE);
	assert_int_equal(
	    enr_oauth_parse_code(&code, test_vendor("sma"),
	                         "error=invalid_scope&error_description=Scope+foo+unknown&state=S",
	                         "S"),
	    ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "Scope foo unknown"));
	assert_non_null(strstr(enr_error_last(), "[vendor.sma]"));
	assert_int_equal(
	    enr_oauth_parse_code(&code, NULL, "error=temporarily_unavailable&state=S", "S"),
	    ENR_E_TRANSIENT);
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "error=weird&state=S", "S"),
	                 ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "weird"));

	assert_int_equal(enr_oauth_parse_code(&code, NULL, "   ", "S"), ENR_E_PARSE);
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "two words", "S"), ENR_E_PARSE);
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "https://relay.example/callback", "S"),
	                 ENR_E_STATE);
	assert_null(code);
}

static void test_callback_code_is_secret(void **state)
{
	char *code = NULL;

	(void)state;
	assert_int_equal(enr_oauth_parse_code(&code, NULL, "code=Zq81TopSecretCode&state=S", "S"),
	                 0);
	enr_error_set(ENR_E_REJECTED, "the code %s failed", code);
	assert_string_equal(enr_error_last(), "the code [redacted] failed");
	enr_util_free_secret(code);
}

/* A token answer (200 unless changed) as a finished transfer would give it. */
static struct enr_http_response answer(const char *body, const char *vendor_id)
{
	return test_response(200, body, vendor_id, true);
}

static void test_token_answers(void **state)
{
	struct enr_oauth_tokens *t = NULL;
	struct enr_http_response r;

	(void)state;
	r = answer("{\"access_token\": \"AT-tesla-1\", \"refresh_token\": \"RT-tesla-1\", "
	           "\"expires_in\": 28800, \"token_type\": \"Bearer\", \"id_token\": \"IDT-1\", "
	           "\"scope\": \"openid offline_access\"}",
	           "tesla");
	assert_int_equal(enr_oauth_token_response(&t, &r), 0);
	assert_string_equal(t->access_token, "AT-tesla-1");
	assert_string_equal(t->refresh_token, "RT-tesla-1");
	assert_string_equal(t->id_token, "IDT-1");
	assert_string_equal(t->scope, "openid offline_access");
	assert_int_equal(t->access_expires_at - t->obtained_at, 28800);
	/* No refresh_expires_in: vendors.json tokens.refresh_ttl (3 months). */
	assert_int_equal(t->refresh_expires_at - t->obtained_at, 7776000);
	assert_true(t->obtained_at >= (long long)time(NULL) - 5);
	enr_oauth_tokens_free(t);

	/* expires_in as a string; no refresh token; no token_type. */
	r = answer("{\"access_token\": \"AT-enphase\", \"expires_in\": \"86393\"}", "enphase");
	assert_int_equal(enr_oauth_token_response(&t, &r), 0);
	assert_int_equal(t->access_expires_at - t->obtained_at, 86393);
	assert_null(t->refresh_token);
	assert_int_equal(t->refresh_expires_at, 0);
	assert_string_equal(t->token_type, "Bearer");
	enr_oauth_tokens_free(t);

	/* SMA offline_access: refresh_expires_in 0 means it never expires. */
	r = answer(
	    "{\"access_token\": \"AT-sma\", \"expires_in\": 300, \"refresh_token\": \"RT-sma\", "
	    "\"refresh_expires_in\": 0}",
	    "sma");
	assert_int_equal(enr_oauth_token_response(&t, &r), 0);
	assert_int_equal(t->access_expires_at - t->obtained_at, 300);
	assert_int_equal(t->refresh_expires_at, 0);
	enr_oauth_tokens_free(t);
	r = answer("{\"access_token\": \"AT-sma\", \"refresh_token\": \"RT-sma\", "
	           "\"refresh_expires_in\": \"1800\"}",
	           "sma");
	assert_int_equal(enr_oauth_token_response(&t, &r), 0);
	assert_int_equal(t->refresh_expires_at - t->obtained_at, 1800);
	assert_int_equal(t->access_expires_at - t->obtained_at, 300); /* tokens.access_ttl */
	enr_oauth_tokens_free(t);

	/* Derapi's camelCase spelling. */
	r = answer("{\"vendor\": \"tesla\", \"accessToken\": \"AT-join\", \"refreshToken\": "
	           "\"RT-join\", \"expiresIn\": \"3600\"}",
	           NULL);
	assert_int_equal(enr_oauth_token_response(&t, &r), 0);
	assert_string_equal(t->access_token, "AT-join");
	assert_string_equal(t->refresh_token, "RT-join");
	assert_int_equal(t->access_expires_at - t->obtained_at, 3600);
	enr_oauth_tokens_free(t);

	/* The tokens are now secrets. */
	enr_error_set(ENR_E_REJECTED, "AT-tesla-1 RT-tesla-1 AT-join");
	assert_string_equal(enr_error_last(), "[redacted] [redacted] [redacted]");
}

static void test_token_answers_bad(void **state)
{
	static const char *const bad[] = {
	    "{\"token_type\": \"Bearer\"}",
	    "{\"access_token\": \"\"}",
	    "{\"access_token\": 12}",
	    "{\"access_token\": \"a\", \"expires_in\": \"soon\"}",
	    "{\"access_token\": \"a\", \"expires_in\": -5}",
	    "{\"access_token\": \"a\", \"expires_in\": [1]}",
	    "{\"access_token\": \"a\", \"expires_in\": 1e300}",
	    "[\"access_token\"]",
	    "{\"access_token\": \"a\"",
	    "<html>maintenance</html>",
	};
	struct enr_oauth_tokens *t = NULL;
	struct enr_http_response r;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = answer(bad[i], "tesla");
		assert_int_equal(enr_oauth_token_response(&t, &r), ENR_E_BADRESPONSE);
		assert_null(t);
		assert_non_null(strstr(enr_error_last(), "Tesla"));
	}
	r = answer("{\"error\": \"invalid_grant\"}", "tesla");
	r.status = 400;
	assert_int_equal(enr_oauth_token_response(&t, &r), ENR_E_REJECTED);
}

/* A token endpoint's 403 is about the company's app, as its 401 is, unless the
 * answer speaks of the grant. */
static void test_token_answers_forbidden(void **state)
{
	static const char *const app_bodies[] = {"", "<html>Forbidden</html>",
	                                         "{\"message\": \"Forbidden\"}"};
	struct enr_oauth_tokens *t = NULL;
	struct enr_http_response r;

	(void)state;
	for (size_t i = 0; i < sizeof(app_bodies) / sizeof(app_bodies[0]); i++) {
		r = test_response(403, app_bodies[i], "enphase", true);
		assert_int_equal(enr_oauth_token_response(&t, &r), ENR_E_MISCONFIGURED);
		assert_null(t);
		assert_non_null(strstr(enr_error_last(), "client ID or secret"));
		assert_non_null(strstr(enr_error_last(), "[vendor.enphase]"));
		assert_null(strstr(enr_error_last(), "re-authorize"));
	}
	r = test_response(403, "{\"error\": \"invalid_grant\"}", "enphase", true);
	assert_int_equal(enr_oauth_token_response(&t, &r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "re-authorize"));
	/* Said in plain text, by a vendor without guidance for it. */
	r = test_response(403, "error=invalid_grant", NULL, true);
	assert_int_equal(enr_oauth_token_response(&t, &r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "authorize again"));
	/* Not a token call: a 403 is still the customer's permissions. */
	r = test_response(403, "", "enphase", false);
	r.token_call = false;
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
}

/* header.payload.signature with `payload` as given. */
static char *make_jwt(const char *payload)
{
	static const char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	char *h = enr_util_base64_encode(header, strlen(header), true);
	char *p = enr_util_base64_encode(payload, strlen(payload), true);
	char *jwt = NULL;

	assert_true(asprintf(&jwt, "%s.%s.c2lnbmF0dXJl", h, p) > 0);
	free(h);
	free(p);
	return jwt;
}

static void test_identity_tesla(void **state)
{
	struct enr_oauth_tokens t = {0};
	struct enr_oauth_identity *id = NULL;

	(void)state;
	t.access_token =
	    make_jwt("{\"sub\":\"7c2e-acct\",\"exp\":1800000000,"
	             "\"scp\":[\"openid\",\"offline_access\",\"energy_device_data\"]}");
	assert_int_equal(enr_oauth_identity_new(&id, test_vendor("tesla"), &t, NULL), 0);
	assert_string_equal(id->subject, "7c2e-acct");
	assert_string_equal(id->account, "7c2e-acct");
	assert_string_equal(id->scopes, "openid offline_access energy_device_data");
	assert_int_equal(id->expires_at, 1800000000);
	assert_false(id->scope_missing);
	assert_null(id->warning);
	enr_oauth_identity_free(id);
	free(t.access_token);

	/* The energy scope not granted: a warning, not an error. */
	t.access_token = make_jwt("{\"sub\":\"7c2e-acct\",\"scp\":\"openid offline_access\"}");
	assert_int_equal(enr_oauth_identity_new(&id, test_vendor("tesla"), &t, NULL), 0);
	assert_true(id->scope_missing);
	assert_non_null(strstr(id->warning, "energy_device_data"));
	enr_oauth_identity_free(id);
	free(t.access_token);
}

static void test_identity_from_id_token(void **state)
{
	struct enr_oauth_tokens t = {0};
	struct enr_oauth_identity *id = NULL;
	json_object *claims;

	(void)state;
	/* An opaque access token, the account in the (verified) id_token's claims. */
	t.access_token = (char *)"opaque-access-token";
	t.id_token = make_jwt("{\"sub\":\"someone@example.com\",\"enl_uid\":123456}");
	claims = json_tokener_parse("{\"sub\":\"someone@example.com\",\"enl_uid\":123456}");
	assert_int_equal(enr_oauth_identity_new(&id, test_vendor("enphase"), &t, claims), 0);
	assert_string_equal(id->subject, "someone@example.com");
	assert_string_equal(id->account, "123456");
	assert_null(id->scopes);
	enr_oauth_identity_free(id);
	json_object_put(claims);
	/* The same id_token unverified names no one. */
	assert_int_equal(enr_oauth_identity_new(&id, test_vendor("enphase"), &t, NULL), 0);
	assert_null(id->subject);
	assert_null(id->account);
	enr_oauth_identity_free(id);
	free(t.id_token);
	/* The verified id_token's sub before the access token's. */
	t.access_token = make_jwt("{\"sub\":\"from-access\"}");
	claims = json_tokener_parse("{\"sub\":\"from-id-token\"}");
	assert_int_equal(enr_oauth_identity_new(&id, test_vendor("tesla"), &t, claims), 0);
	assert_string_equal(id->account, "from-id-token");
	enr_oauth_identity_free(id);
	json_object_put(claims);
	free(t.access_token);
	t.access_token = (char *)"opaque-access-token";

	/* Nothing to read: no identity, but the granted scopes still checked. */
	t.id_token = NULL;
	t.scope = (char *)"openid";
	assert_int_equal(enr_oauth_identity_new(&id, test_vendor("tesla"), &t, NULL), 0);
	assert_null(id->subject);
	assert_null(id->account);
	assert_string_equal(id->scopes, "openid");
	assert_true(id->scope_missing);
	enr_oauth_identity_free(id);
}

static void test_jwt_claims(void **state)
{
	json_object *claims = NULL;
	char *jwt = make_jwt("{\"sub\":\"x\"}");

	(void)state;
	assert_int_equal(enr_oauth_jwt_claims(&claims, jwt), 0);
	assert_string_equal(json_object_get_string(json_object_object_get(claims, "sub")), "x");
	json_object_put(claims);
	free(jwt);

	assert_int_equal(enr_oauth_jwt_claims(&claims, "opaque"), ENR_E_PARSE);
	assert_int_equal(enr_oauth_jwt_claims(&claims, "a..c"), ENR_E_PARSE);
	assert_int_equal(enr_oauth_jwt_claims(&claims, "a.b.c.d.e"), ENR_E_PARSE); /* JWE */
	assert_int_equal(enr_oauth_jwt_claims(&claims, "eyJhIjoxfQ.bm90IGpzb24.sig"), ENR_E_PARSE);
	assert_int_equal(enr_oauth_jwt_claims(&claims, "eyJhIjoxfQ.WzFd.sig"),
	                 ENR_E_PARSE); /* [1] */
	assert_int_equal(enr_oauth_jwt_claims(&claims, "eyJhIjoxfQ.e30!.sig"), ENR_E_PARSE);
	assert_null(claims);
}

/* A catalogue of one vendor whose page shows a code of shape `code` (JSON). */
#define CODE_VENDOR(code)                                                                          \
	"{\"schema\": 1, \"vendors\": [{\"id\": \"acme\", \"name\": \"Acme\","                     \
	"\"config_section\": \"vendor.acme\","                                                     \
	"\"methods\": [{\"id\": \"oauth\", \"label\": \"OAuth\", \"help\": \"h\"}],"               \
	"\"endpoints\": {\"authorize_url\": \"https://acme.test/a\", \"token_url\": "              \
	"\"https://acme.test/t\", \"api_url\": \"https://api.acme.test\"},"                        \
	"\"oauth\": {\"scopes\": \"\", \"client_auth\": \"basic\", \"token_params\": \"form\", "   \
	"\"code\": " code "},"                                                                     \
	"\"tokens\": {\"access_ttl\": 0, \"refresh_ttl\": 0},"                                     \
	"\"check\": {\"method\": \"GET\", \"path\": \"/sites\", \"auth\": \"bearer\","             \
	"\"sites\": \"sites\", \"site_id\": \"id\", \"site_name\": \"n\"},"                        \
	"\"rate_limits\": [], \"guidance\": []}]}"

/* normalize_code(TYPED) with `vendor`: the code, or NULL with the error's message in `why`. */
static char *normalized(const struct enr_vendor *vendor, const char *typed, char *why, size_t size)
{
	char *out = NULL;
	int rc = enr_oauth_normalize_code(&out, vendor, typed);

	why[0] = '\0';
	if (rc < 0) {
		assert_int_equal(rc, ENR_E_PARSE);
		assert_null(out);
		snprintf(why, size, "%s", enr_error_last());
	}
	return out;
}

#define CODE32 "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY"

/* Enphase's code as typed from the customer's phone: grouped for reading
 * aloud (spaces, dashes) it is the code; case is kept (vendors.json does not
 * say Enphase takes either); a wrong character or length is said in a line. */
static void test_normalize_code_enphase(void **state)
{
	const struct enr_vendor *enphase = test_vendor("enphase");
	char why[256], *code;

	(void)state;
	assert_int_equal(enphase->oauth.code.max_length, 32);
	assert_int_equal(enphase->oauth.code.group, 4);
	assert_true(enr_vendor_unconfirmed(enphase, "oauth.code.alphabet"));
	assert_true(enr_vendor_unconfirmed(enphase, "oauth.code.case_insensitive"));
	code =
	    normalized(enphase, "  aB3d E5fG 7hJ9-kL1m\tN2pQ 4rS6 tU8v W0xY \n", why, sizeof(why));
	test_expect_string(code, CODE32);
	code = normalized(enphase, "k3Xq9Z", why, sizeof(why)); /* Enphase's own example's shape */
	test_expect_string(code, "k3Xq9Z");

	assert_null(normalized(enphase, CODE32 "z", why, sizeof(why)));
	assert_string_equal(why, "33 characters: Enphase codes have 6 to 32");
	assert_null(normalized(enphase, "aB3", why, sizeof(why)));
	assert_string_equal(why, "3 characters: Enphase codes have 6 to 32");
	assert_null(normalized(enphase, "aB3d E5f! 7hJ9", why, sizeof(why)));
	assert_string_equal(why, "'!' is not in Enphase codes (A-Za-z0-9)");
	assert_null(normalized(enphase,
	                       "aB3d\xc3\xa9"
	                       "E5fG",
	                       why, sizeof(why)));
	assert_non_null(strstr(why, "Enphase codes have only A-Za-z0-9"));
	assert_null(strchr(why, '\n'));

	/* An address or a query comes back as it was: its code is the vendor's. */
	code = normalized(enphase, " https://x.test/redirect_uri?code=ab!c&state=S \n", why,
	                  sizeof(why));
	test_expect_string(code, "https://x.test/redirect_uri?code=ab!c&state=S");
	/* A vendor whose page shows no code: nothing is checked. */
	code = normalized(test_vendor("tesla"), " NA_a b!\n", why, sizeof(why));
	test_expect_string(code, "NA_a b!");

	/* The callback parser reads a typed code the same way. */
	assert_int_equal(enr_oauth_parse_code(&code, enphase,
	                                      "aB3d E5fG 7hJ9 kL1m N2pQ 4rS6 "
	                                      "tU8v W0xY",
	                                      "S"),
	                 0);
	test_expect_string(code, CODE32);
	assert_int_equal(enr_oauth_parse_code(&code, enphase, "aB3d!", "S"), ENR_E_PARSE);
}

/* Where vendors.json says a vendor takes either case, the typed case is
 * folded; the shape's own mistakes are the catalogue's. */
static void test_normalize_code_case_folded(void **state)
{
	struct enr_catalog *cat = NULL;
	char why[256], *code;

	(void)state;
	assert_int_equal(enr_catalog_load_string(&cat,
	                                         CODE_VENDOR("{\"length\": 8, \"alphabet\": "
	                                                     "\"a-hj-np-z2-9\", "
	                                                     "\"case_insensitive\": true, "
	                                                     "\"group\": 4}"),
	                                         "t"),
	                 0);
	code = normalized(enr_catalog_find(cat, "acme"), "ABCD-efgh", why, sizeof(why));
	test_expect_string(code, "abcdefgh");
	assert_null(normalized(enr_catalog_find(cat, "acme"), "ABCD-EFGI", why, sizeof(why)));
	assert_non_null(strstr(why, "'I' is not in Acme codes (a-hj-np-z2-9)"));
	assert_null(normalized(enr_catalog_find(cat, "acme"), "ABCD-EFG", why, sizeof(why)));
	assert_string_equal(why, "7 characters: Acme codes have 8");
	enr_catalog_free(cat);
	/* Folded to the case the alphabet has. */
	assert_int_equal(
	    enr_catalog_load_string(&cat,
	                            CODE_VENDOR("{\"length\": 8, \"alphabet\": "
	                                        "\"A-Z2-9\", \"case_insensitive\": true}"),
	                            "t"),
	    0);
	code = normalized(enr_catalog_find(cat, "acme"), "abcd EFG2", why, sizeof(why));
	test_expect_string(code, "ABCDEFG2");
	enr_catalog_free(cat);

	assert_int_equal(enr_catalog_load_string(
	                     &cat, CODE_VENDOR("{\"length\": 8, \"alphabet\": \"a b\"}"), "t"),
	                 ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "'oauth.code.alphabet' must be characters"));
	assert_int_equal(
	    enr_catalog_load_string(&cat,
	                            CODE_VENDOR("{\"min_length\": 9, \"max_length\": 8, "
	                                        "\"alphabet\": \"a-z\"}"),
	                            "t"),
	    ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "'oauth.code' needs a length"));
	assert_int_equal(enr_catalog_load_string(&cat, CODE_VENDOR("{\"alphabet\": \"a-z\"}"), "t"),
	                 ENR_E_PARSE);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_pkce_rfc7636_vector),
    cmocka_unit_test(test_authorize_url_tesla),
    cmocka_unit_test(test_authorize_params),
    cmocka_unit_test(test_check_issuer),
    cmocka_unit_test(test_check_refresh),
    cmocka_unit_test(test_check_refresh_recorded),
    cmocka_unit_test(test_authorize_url_pkce),
    cmocka_unit_test(test_authorize_url_enphase_defaults),
    cmocka_unit_test(test_authorize_url_errors),
    cmocka_unit_test(test_callback_forms),
    cmocka_unit_test(test_callback_refusals),
    cmocka_unit_test(test_callback_code_is_secret),
    cmocka_unit_test(test_normalize_code_enphase),
    cmocka_unit_test(test_normalize_code_case_folded),
    cmocka_unit_test(test_token_answers),
    cmocka_unit_test(test_token_answers_bad),
    cmocka_unit_test(test_token_answers_forbidden),
    cmocka_unit_test(test_identity_tesla),
    cmocka_unit_test(test_identity_from_id_token),
    cmocka_unit_test(test_jwt_claims),
};

int main(void)
{
	int failed;

	test_env_setup();
	failed = cmocka_run_group_tests(tests, setup, teardown);
	test_catalog_free();
	test_env_cleanup();
	return failed;
}
