/* Integration tests of the oauth module against a token endpoint started in
 * this program (loopback): each vendor's parameter placement as the server
 * sees it, refresh, client credentials, the multi path, and the loopback
 * receiver fed by a libcurl client. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "derenroll/vendor.h"
#include "fixtures.h"
#include "httpd.h"
#include "util.h"

/* What the token endpoint saw, and what it answers. */
struct token_server {
	pthread_mutex_t lock;
	char method[8];
	char path[64];
	char authorization[256];
	char content_type[96];
	char body[1024];
	char q_grant_type[64];
	char q_code[64];
	char q_redirect_uri[128];
	char q_refresh_token[64];
	unsigned arg_count;
	unsigned requests;
	unsigned status; /* what to answer */
	char answer[1024];
};

struct fixture {
	struct token_server ts;
	struct test_httpd *server;
	struct enr_config *cfg;
	char base[64];
};

/* Not inlined: GCC 12's -Warray-bounds misjudges the fixture's buffers
 * (a false positive under -fsanitize=address with -O2). */
__attribute__((noinline)) static void copy(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

static void token_handler(const struct test_request *req, struct test_reply *reply, void *ctx)
{
	struct token_server *ts = ctx;

	pthread_mutex_lock(&ts->lock);
	ts->requests++;
	copy(ts->method, sizeof(ts->method), req->method);
	copy(ts->path, sizeof(ts->path), req->path);
	copy(ts->authorization, sizeof(ts->authorization),
	     test_request_header(req, "Authorization"));
	copy(ts->content_type, sizeof(ts->content_type), test_request_header(req, "Content-Type"));
	copy(ts->body, sizeof(ts->body), req->body);
	copy(ts->q_grant_type, sizeof(ts->q_grant_type), test_request_arg(req, "grant_type"));
	copy(ts->q_code, sizeof(ts->q_code), test_request_arg(req, "code"));
	copy(ts->q_redirect_uri, sizeof(ts->q_redirect_uri), test_request_arg(req, "redirect_uri"));
	copy(ts->q_refresh_token, sizeof(ts->q_refresh_token),
	     test_request_arg(req, "refresh_token"));
	ts->arg_count = test_request_arg_count(req);
	reply->status = ts->status;
	test_reply_printf(reply, "%s", ts->answer);
	pthread_mutex_unlock(&ts->lock);
}

static void answer(struct fixture *f, unsigned status, const char *body)
{
	pthread_mutex_lock(&f->ts.lock);
	f->ts.status = status;
	copy(f->ts.answer, sizeof(f->ts.answer), body);
	pthread_mutex_unlock(&f->ts.lock);
}

static void set_url(struct fixture *f, const char *section, const char *key, const char *path)
{
	char url[128];

	snprintf(url, sizeof(url), "%s%s", f->base, path);
	assert_int_equal(enr_config_set(f->cfg, section, key, url), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	pthread_mutex_init(&f->ts.lock, NULL);
	f->server = test_httpd_start(token_handler, &f->ts, NULL, NULL);
	copy(f->base, sizeof(f->base), test_httpd_url(f->server));
	assert_int_equal(enr_config_new(&f->cfg), 0);
	set_url(f, "vendor.tesla", "token_url", "/tesla/oauth2/v3/token");
	set_url(f, "vendor.tesla", "api_url", "/tesla-api/");
	set_url(f, "vendor.tesla", "api_url_eu", "/tesla-eu/");
	enr_config_set(f->cfg, "vendor.tesla", "client_id", "tesla-id");
	enr_config_set(f->cfg, "vendor.tesla", "client_secret", "tesla-Secret-1");
	enr_config_set(f->cfg, "vendor.tesla", "redirect_uri", "https://relay.example/callback");
	set_url(f, "vendor.enphase", "token_url", "/enphase/oauth/token");
	enr_config_set(f->cfg, "vendor.enphase", "client_id", "enphase-id");
	enr_config_set(f->cfg, "vendor.enphase", "client_secret", "enphase-Secret-2");
	set_url(f, "vendor.sma", "token_url", "/sma/oauth2/token");
	enr_config_set(f->cfg, "vendor.sma", "client_id", "sma-id");
	enr_config_set(f->cfg, "vendor.sma", "client_secret", "sma-Secret-3");
	enr_config_set(f->cfg, "vendor.sma", "redirect_uri", "https://relay.example/callback");
	set_url(f, "derapi", "auth_url", "/derapi/oauth2/token");
	enr_config_set(f->cfg, "derapi", "client_id", "derapi-id");
	enr_config_set(f->cfg, "derapi", "client_secret", "derapi-Secret-4");
	answer(f, 200, "{\"access_token\": \"at-default\", \"expires_in\": 60}");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	test_httpd_stop(f->server);
	enr_config_free(f->cfg);
	pthread_mutex_destroy(&f->ts.lock);
	free(f);
	enr_log_clear_secrets();
	return 0;
}

/* Asserts the form field `name` of the last body. */
static void assert_form(struct fixture *f, const char *name, const char *expected)
{
	test_expect_string(test_form_value(f->ts.body, name), expected);
}

static char *basic(const char *id, const char *secret)
{
	char pair[128], *b64, *header = NULL;

	snprintf(pair, sizeof(pair), "%s:%s", id, secret);
	b64 = enr_util_base64_encode(pair, strlen(pair), false);
	assert_true(asprintf(&header, "Basic %s", b64) > 0);
	free(b64);
	return header;
}

static void test_tesla_code_exchange_form(void **state)
{
	struct fixture *f = *state;
	struct enr_oauth_tokens *t = NULL;
	char audience[96];

	answer(f, 200,
	       "{\"access_token\": \"tesla-at-1\", \"refresh_token\": \"tesla-rt-1\", "
	       "\"id_token\": \"tesla-idt\", \"expires_in\": 28800, \"token_type\": \"Bearer\"}");
	assert_int_equal(
	    enr_oauth_exchange_code(&t, test_vendor("tesla"), f->cfg, "NA_code-1", NULL, NULL), 0);
	assert_string_equal(f->ts.method, "POST");
	assert_string_equal(f->ts.path, "/tesla/oauth2/v3/token");
	assert_int_equal(f->ts.arg_count, 0);
	assert_string_equal(f->ts.content_type, "application/x-www-form-urlencoded");
	assert_string_equal(f->ts.authorization, "");
	assert_form(f, "grant_type", "authorization_code");
	assert_form(f, "code", "NA_code-1");
	assert_form(f, "redirect_uri", "https://relay.example/callback");
	assert_form(f, "client_id", "tesla-id");
	assert_form(f, "client_secret", "tesla-Secret-1");
	assert_form(f, "code_verifier", NULL);
	/* audience: the configured api_url, without its trailing slash. */
	snprintf(audience, sizeof(audience), "%s/tesla-api", f->base);
	assert_form(f, "audience", audience);

	assert_string_equal(t->access_token, "tesla-at-1");
	assert_string_equal(t->refresh_token, "tesla-rt-1");
	assert_string_equal(t->id_token, "tesla-idt");
	assert_int_equal(t->access_expires_at - t->obtained_at, 28800);
	enr_oauth_tokens_free(t);

	/* An EU code ("EU_..."): the EU host is the audience. */
	assert_int_equal(
	    enr_oauth_exchange_code(&t, test_vendor("tesla"), f->cfg, "EU_code-3", NULL, NULL), 0);
	snprintf(audience, sizeof(audience), "%s/tesla-eu", f->base);
	assert_form(f, "audience", audience);
	enr_oauth_tokens_free(t);

	/* [vendor.tesla] audience wins (another region). */
	enr_config_set(f->cfg, "vendor.tesla", "audience",
	               "https://fleet-api.prd.eu.vn.cloud.tesla.com");
	assert_int_equal(enr_oauth_exchange_code(&t, test_vendor("tesla"), f->cfg, "NA_code-2",
	                                         "https://other.example/cb", NULL),
	                 0);
	assert_form(f, "audience", "https://fleet-api.prd.eu.vn.cloud.tesla.com");
	assert_form(f, "redirect_uri", "https://other.example/cb");
	enr_oauth_tokens_free(t);

	/* SMA: same placement, no audience. */
	assert_int_equal(
	    enr_oauth_exchange_code(&t, test_vendor("sma"), f->cfg, "sma-code", NULL, NULL), 0);
	assert_form(f, "audience", NULL);
	assert_form(f, "client_id", "sma-id");
	enr_oauth_tokens_free(t);
}

static void test_enphase_code_exchange_query_basic(void **state)
{
	struct fixture *f = *state;
	struct enr_oauth_tokens *t = NULL;
	char *expected = basic("enphase-id", "enphase-Secret-2");

	answer(f, 200,
	       "{\"access_token\": \"enphase-at\", \"refresh_token\": \"enphase-rt\", "
	       "\"expires_in\": \"86393\", \"token_type\": \"bearer\", \"enl_uid\": \"77\"}");
	assert_int_equal(
	    enr_oauth_exchange_code(&t, test_vendor("enphase"), f->cfg, "k3Xq9Z", NULL, NULL), 0);
	assert_string_equal(f->ts.method, "POST");
	assert_string_equal(f->ts.path, "/enphase/oauth/token");
	assert_int_equal(f->ts.arg_count, 3);
	assert_string_equal(f->ts.q_grant_type, "authorization_code");
	assert_string_equal(f->ts.q_code, "k3Xq9Z");
	assert_string_equal(f->ts.q_redirect_uri,
	                    "https://api.enphaseenergy.com/oauth/redirect_uri");
	assert_string_equal(f->ts.body, "");
	assert_string_equal(f->ts.authorization, expected);
	assert_int_equal(t->access_expires_at - t->obtained_at, 86393);
	/* One month from vendors.json when the answer does not say. */
	assert_int_equal(t->refresh_expires_at - t->obtained_at, 2592000);
	enr_oauth_tokens_free(t);

	/* Refresh: in the query as well. */
	answer(f, 200,
	       "{\"access_token\": \"enphase-at-2\", \"refresh_token\": \"enphase-rt-2\", "
	       "\"expires_in\": 86393}");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("enphase"), f->cfg, "enphase-rt"), 0);
	assert_int_equal(f->ts.arg_count, 2);
	assert_string_equal(f->ts.q_grant_type, "refresh_token");
	assert_string_equal(f->ts.q_refresh_token, "enphase-rt");
	assert_string_equal(f->ts.authorization, expected);
	assert_string_equal(t->refresh_token, "enphase-rt-2");
	enr_oauth_tokens_free(t);
	free(expected);
}

static void test_refresh_form(void **state)
{
	struct fixture *f = *state;
	struct enr_oauth_tokens *t = NULL;

	answer(f, 200,
	       "{\"access_token\": \"tesla-at-2\", \"refresh_token\": \"tesla-rt-2\", "
	       "\"expires_in\": \"28800\"}");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("tesla"), f->cfg, "tesla-rt-1"), 0);
	assert_int_equal(f->ts.arg_count, 0);
	assert_form(f, "grant_type", "refresh_token");
	assert_form(f, "refresh_token", "tesla-rt-1");
	assert_form(f, "client_id", "tesla-id");
	assert_form(f, "audience", NULL);
	/* Tesla's refresh: grant_type, client_id and refresh_token only. */
	assert_form(f, "client_secret", NULL);
	assert_string_equal(t->refresh_token, "tesla-rt-2");
	assert_int_equal(t->access_expires_at - t->obtained_at, 28800);
	enr_oauth_tokens_free(t);

	/* SMA offline_access: the refresh token never expires. */
	answer(f, 200,
	       "{\"access_token\": \"sma-at\", \"refresh_token\": \"sma-rt-2\", "
	       "\"expires_in\": 300, \"refresh_expires_in\": 0}");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("sma"), f->cfg, "sma-rt-1"), 0);
	assert_int_equal(t->refresh_expires_at, 0);
	assert_int_equal(t->access_expires_at - t->obtained_at, 300);
	enr_oauth_tokens_free(t);

	/* No refresh token in the answer: none in the result (keep the old one). */
	answer(f, 200, "{\"access_token\": \"sma-at\", \"expires_in\": 300}");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("sma"), f->cfg, "sma-rt-2"), 0);
	assert_null(t->refresh_token);
	enr_oauth_tokens_free(t);
}

static void test_refused_refresh_hides_secrets(void **state)
{
	struct fixture *f = *state;
	struct enr_oauth_tokens *t = NULL;

	/* The server repeats what it got, secrets included. */
	answer(f, 400,
	       "{\"error\": \"invalid_grant\", \"error_description\": \"refresh token "
	       "Old-Refresh-77 of enphase-id (secret enphase-Secret-2) was already used\"}");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("enphase"), f->cfg, "Old-Refresh-77"),
	                 ENR_E_REJECTED);
	assert_null(t);
	assert_string_equal(f->ts.q_refresh_token, "Old-Refresh-77"); /* it was sent */
	assert_non_null(strstr(enr_error_last(), "Enphase"));
	assert_null(strstr(enr_error_last(), "Old-Refresh-77"));
	assert_null(strstr(enr_error_last(), "enphase-Secret-2"));
	assert_null(strstr(enr_error_last(), "refresh_token="));

	answer(f, 401,
	       "{\"error\": \"invalid_client\", \"error_description\": \"bad secret "
	       "tesla-Secret-1\"}");
	assert_int_equal(
	    enr_oauth_exchange_code(&t, test_vendor("tesla"), f->cfg, "Code-Zz-123", NULL, NULL),
	    ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "Tesla refused the company's client ID"));
	assert_null(strstr(enr_error_last(), "tesla-Secret-1"));

	answer(f, 503, "");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("tesla"), f->cfg, "rt"),
	                 ENR_E_TRANSIENT);
	answer(f, 200, "{\"token_type\": \"Bearer\"}");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("tesla"), f->cfg, "rt"),
	                 ENR_E_BADRESPONSE);
}

static void test_missing_client_secret(void **state)
{
	struct fixture *f = *state;
	struct enr_oauth_tokens *t = NULL;
	struct enr_config *c = NULL;
	unsigned before = f->ts.requests;

	assert_int_equal(enr_config_new(&c), 0);
	/* SMA's refresh sends the secret (Tesla's does not). */
	enr_config_set(c, "vendor.sma", "token_url", "http://127.0.0.1:9/none");
	enr_config_set(c, "vendor.sma", "client_id", "id");
	assert_int_equal(enr_oauth_refresh(&t, test_vendor("sma"), c, "rt"), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "client_secret"));
	assert_int_equal(f->ts.requests, before);
	enr_config_free(c);
}

static void test_client_credentials(void **state)
{
	struct fixture *f = *state;
	struct enr_oauth_tokens *t = NULL;
	char *expected = basic("derapi-id", "derapi-Secret-4");

	answer(f, 200,
	       "{\"access_token\": \"derapi-at\", \"expires_in\": 3600, \"token_type\": "
	       "\"Bearer\"}");
	assert_int_equal(enr_oauth_client_credentials(&t, test_vendor("derapi"), f->cfg, NULL), 0);
	assert_string_equal(f->ts.path, "/derapi/oauth2/token");
	assert_string_equal(f->ts.authorization, expected);
	assert_string_equal(f->ts.body, "grant_type=client_credentials");
	assert_string_equal(t->access_token, "derapi-at");
	assert_null(t->refresh_token);
	assert_int_equal(t->access_expires_at - t->obtained_at, 3600);
	enr_oauth_tokens_free(t);
	free(expected);

	/* SMA's (for the backchannel): its own placement, a scope. */
	assert_int_equal(enr_oauth_client_credentials(&t, test_vendor("sma"), f->cfg, "bc"), 0);
	assert_string_equal(f->ts.path, "/sma/oauth2/token");
	assert_form(f, "grant_type", "client_credentials");
	assert_form(f, "scope", "bc");
	assert_form(f, "client_secret", "sma-Secret-3");
	enr_oauth_tokens_free(t);
}

struct multi_result {
	int rc;
	struct enr_oauth_tokens *tokens;
	bool called;
};

static void on_token(struct enr_http_response *resp, void *ctx)
{
	struct multi_result *r = ctx;

	r->called = true;
	r->rc = enr_oauth_token_response(&r->tokens, resp);
	enr_http_response_free(resp);
}

static void test_token_call_through_multi(void **state)
{
	struct fixture *f = *state;
	struct enr_http_multi *multi = NULL;
	struct enr_http_request *req = NULL;
	struct multi_result r = {0};
	uint64_t id;

	answer(f, 200, "{\"access_token\": \"multi-at\", \"expires_in\": 5}");
	assert_int_equal(
	    enr_oauth_code_request(&req, test_vendor("tesla"), f->cfg, "c0de", NULL, NULL), 0);
	assert_int_equal(enr_http_multi_new(&multi, f->cfg), 0);
	assert_int_equal(enr_http_multi_add(&id, multi, req, on_token, &r), 0);
	enr_http_request_free(req);
	assert_false(r.called);
	assert_int_equal(enr_http_multi_run_until_idle(multi), 0);
	assert_true(r.called);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.tokens->access_token, "multi-at");
	assert_form(f, "code", "c0de");
	enr_oauth_tokens_free(r.tokens);
	enr_http_multi_free(multi);
}

/* ---- loopback receiver ------------------------------------------------- */

/* The browser: a plain libcurl GET through the http module. */
static int browse(struct enr_http_response **out, const char *url)
{
	struct enr_http_request *req = NULL;
	int rc;

	assert_int_equal(enr_http_request_new(&req, "GET", url), 0);
	rc = enr_http_perform(out, NULL, req);
	enr_http_request_free(req);
	return rc;
}

static void test_receiver_end_to_end(void **state)
{
	struct fixture *f = *state;
	struct enr_oauth_receiver *rx = NULL;
	struct enr_oauth_flow *flow = NULL;
	struct enr_oauth_authorize_options opts = {.pkce = true};
	struct enr_http_response *resp = NULL;
	struct enr_oauth_tokens *t = NULL;
	struct enr_oauth_callback *cb = NULL;
	char *got = NULL, *code = NULL, *verifier_sent, *challenge = NULL, url[512];
	struct pollfd pfd;

	assert_int_equal(enr_oauth_receiver_new(&rx, 10000), 0);
	assert_true(strncmp(enr_oauth_receiver_redirect_uri(rx), "http://127.0.0.1:", 17) == 0);
	assert_non_null(strstr(enr_oauth_receiver_redirect_uri(rx), "/callback"));
	opts.redirect_uri = enr_oauth_receiver_redirect_uri(rx);
	assert_int_equal(enr_oauth_flow_new(&flow, test_vendor("tesla"), f->cfg, &opts), 0);
	assert_int_equal(enr_oauth_receiver_poll(&got, rx), ENR_E_AGAIN);

	/* The vendor sends the browser back. */
	snprintf(url, sizeof(url), "%s?code=Rx-Code-42&state=%s&issuer=x%%20y",
	         enr_oauth_receiver_redirect_uri(rx), flow->state);
	assert_int_equal(browse(&resp, url), 0);
	assert_int_equal(resp->status, 200);
	assert_non_null(strstr(resp->content_type, "text/html"));
	assert_non_null(strstr(resp->body, "close this tab"));
	enr_http_response_free(resp);

	pfd = (struct pollfd){.fd = enr_oauth_receiver_fd(rx), .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 0), 1);
	assert_int_equal(enr_oauth_receiver_poll(&got, rx), 0);
	assert_int_equal(enr_oauth_callback_parse(&cb, test_vendor("tesla"), got, flow->state), 0);
	assert_string_equal(cb->code, "Rx-Code-42");
	assert_string_equal(enr_oauth_callback_param(cb, "issuer"), "x y");
	enr_oauth_callback_free(cb);
	assert_int_equal(enr_oauth_parse_code(&code, test_vendor("tesla"), got, flow->state), 0);

	/* Only one redirect is taken. */
	assert_int_equal(browse(&resp, url), 0);
	assert_int_equal(resp->status, 410);
	enr_http_response_free(resp);
	snprintf(url, sizeof(url), "%s", enr_oauth_receiver_redirect_uri(rx));
	strcpy(strstr(url, "/callback"), "/favicon.ico");
	assert_int_equal(browse(&resp, url), 0);
	assert_int_equal(resp->status, 404);
	enr_http_response_free(resp);

	/* The exchange repeats the receiver's redirect URI and proves PKCE. */
	answer(f, 200, "{\"access_token\": \"rx-at\", \"expires_in\": 60}");
	assert_int_equal(enr_oauth_exchange_code(&t, test_vendor("tesla"), f->cfg, code,
	                                         flow->redirect_uri, flow->code_verifier),
	                 0);
	assert_form(f, "redirect_uri", enr_oauth_receiver_redirect_uri(rx));
	assert_form(f, "code", "Rx-Code-42");
	verifier_sent = test_form_value(f->ts.body, "code_verifier");
	assert_non_null(verifier_sent);
	assert_int_equal(enr_oauth_pkce_challenge(&challenge, verifier_sent), 0);
	assert_int_equal(enr_oauth_callback_parse(&cb, NULL, flow->url, NULL), 0);
	assert_string_equal(enr_oauth_callback_param(cb, "code_challenge"), challenge);
	enr_oauth_callback_free(cb);

	free(challenge);
	free(verifier_sent);
	enr_oauth_tokens_free(t);
	enr_util_free_secret(code);
	free(got);
	enr_oauth_flow_free(flow);
	enr_oauth_receiver_free(rx);
}

static void test_receiver_refuses_wrong_state_and_decline(void **state)
{
	struct enr_oauth_receiver *rx = NULL;
	struct enr_http_response *resp = NULL;
	char *got = NULL, *code = NULL, url[256];

	(void)state;
	assert_int_equal(enr_oauth_receiver_new(&rx, 10000), 0);
	snprintf(url, sizeof(url), "%s?code=abc&state=forged", enr_oauth_receiver_redirect_uri(rx));
	assert_int_equal(browse(&resp, url), 0);
	enr_http_response_free(resp);
	assert_int_equal(enr_oauth_receiver_wait(&got, rx, 5000), 0);
	assert_int_equal(enr_oauth_parse_code(&code, test_vendor("sma"), got, "the-real-state"),
	                 ENR_E_STATE);
	assert_null(code);
	free(got);
	enr_oauth_receiver_free(rx);

	assert_int_equal(enr_oauth_receiver_new(&rx, 10000), 0);
	snprintf(url, sizeof(url), "%s?error=access_denied&error_description=User+said+no&state=S1",
	         enr_oauth_receiver_redirect_uri(rx));
	assert_int_equal(browse(&resp, url), 0);
	assert_int_equal(resp->status, 200);
	enr_http_response_free(resp);
	assert_int_equal(enr_oauth_receiver_wait(&got, rx, 5000), 0);
	assert_int_equal(enr_oauth_parse_code(&code, test_vendor("sma"), got, "S1"),
	                 ENR_E_DECLINED);
	assert_non_null(strstr(enr_error_last(), "the customer declined"));
	assert_non_null(strstr(enr_error_last(), "User said no"));
	free(got);
	enr_oauth_receiver_free(rx);
}

static void test_receiver_timeout_and_cancel(void **state)
{
	struct enr_oauth_receiver *rx = NULL;
	struct enr_http_response *resp = NULL;
	char *got = NULL, url[256];

	(void)state;
	assert_int_equal(enr_oauth_receiver_new(&rx, 50), 0);
	assert_int_equal(enr_oauth_receiver_wait(&got, rx, -1), ENR_E_TIMEOUT);
	assert_int_equal(enr_oauth_receiver_poll(&got, rx), ENR_E_TIMEOUT);
	/* A redirect after the timeout is not taken. */
	snprintf(url, sizeof(url), "%s?code=late&state=S", enr_oauth_receiver_redirect_uri(rx));
	assert_int_equal(browse(&resp, url), 0);
	assert_int_equal(resp->status, 410);
	enr_http_response_free(resp);
	assert_int_equal(enr_oauth_receiver_poll(&got, rx), ENR_E_TIMEOUT);
	assert_null(got);
	enr_oauth_receiver_free(rx);

	assert_int_equal(enr_oauth_receiver_new(&rx, 0), 0);
	assert_int_equal(enr_oauth_receiver_wait(&got, rx, 1), ENR_E_AGAIN);
	enr_oauth_receiver_cancel(rx);
	assert_int_equal(enr_oauth_receiver_poll(&got, rx), ENR_E_CANCELLED);
	assert_int_equal(enr_oauth_receiver_wait(&got, rx, -1), ENR_E_CANCELLED);
	snprintf(url, sizeof(url), "%s?code=x&state=S", enr_oauth_receiver_redirect_uri(rx));
	assert_int_equal(browse(&resp, url), 0);
	assert_int_equal(resp->status, 410);
	enr_http_response_free(resp);
	enr_oauth_receiver_free(rx);
	enr_oauth_receiver_free(NULL);
}

struct browser_thread {
	char url[256];
	long status;
};

static void *browser_main(void *arg)
{
	struct browser_thread *b = arg;
	struct enr_http_response *resp = NULL;
	struct enr_http_request *req = NULL;

	if (enr_http_request_new(&req, "GET", b->url) == 0 &&
	    enr_http_perform(&resp, NULL, req) == 0)
		b->status = resp->status;
	enr_http_response_free(resp);
	enr_http_request_free(req);
	return NULL;
}

static void test_receiver_wait_wakes_up(void **state)
{
	struct enr_oauth_receiver *rx = NULL;
	struct browser_thread b = {.status = 0};
	pthread_t thread;
	char *got = NULL;

	(void)state;
	assert_int_equal(enr_oauth_receiver_new(&rx, 0), 0);
	snprintf(b.url, sizeof(b.url), "%s?code=from-thread&state=S",
	         enr_oauth_receiver_redirect_uri(rx));
	assert_int_equal(pthread_create(&thread, NULL, browser_main, &b), 0);
	assert_int_equal(enr_oauth_receiver_wait(&got, rx, 20000), 0);
	pthread_join(thread, NULL);
	assert_int_equal(b.status, 200);
	assert_non_null(strstr(got, "code=from-thread"));
	free(got);
	enr_oauth_receiver_free(rx);
}

/*
 * A listener's thread slower than the flow (-Wl,--wrap=MHD_queue_response):
 * each answer is queued a while after the flow saw the redirect, so a flow
 * that ends at once would stop the listener before its page went out.
 */
static atomic_bool slow_answers;

enum MHD_Result __real_MHD_queue_response(struct MHD_Connection *connection,
                                          unsigned int status_code, struct MHD_Response *response);
enum MHD_Result __wrap_MHD_queue_response(struct MHD_Connection *connection,
                                          unsigned int status_code, struct MHD_Response *response);
enum MHD_Result __wrap_MHD_queue_response(struct MHD_Connection *connection,
                                          unsigned int status_code, struct MHD_Response *response)
{
	if (atomic_load(&slow_answers)) {
		struct timespec pause = {0, 100 * 1000 * 1000};
		nanosleep(&pause, NULL);
	}
	return __real_MHD_queue_response(connection, status_code, response);
}

/* Teardown: answers at full speed again, whatever the test's end. */
static int fast_answers(void **state)
{
	(void)state;
	atomic_store(&slow_answers, false);
	return 0;
}

/* The customer's browser, on a thread: what it got back, whole. */
struct page_visit {
	char url[512];
	long status;
	char body[4096];
	bool complete; /* the page arrived to its closing tag */
};

static void *visit_main(void *arg)
{
	struct page_visit *v = arg;
	struct enr_http_response *resp = NULL;
	struct enr_http_request *req = NULL;

	if (enr_http_request_new(&req, "GET", v->url) == 0 &&
	    enr_http_perform(&resp, NULL, req) == 0 && !resp->error) {
		v->status = resp->status;
		copy(v->body, sizeof(v->body), resp->body);
		v->complete = resp->body && strstr(resp->body, "</html>") != NULL;
	}
	enr_http_response_free(resp);
	enr_http_request_free(req);
	return NULL;
}

/*
 * The browser arrives with `query`; the flow takes the redirect and ends at
 * once (the listener is freed the moment the answer is known, as enroll does
 * after a refusal). The page must still reach the browser whole.
 */
static void visit_and_end(struct page_visit *v, const char *expected_state, const char *query)
{
	struct enr_oauth_receiver *rx = NULL;
	pthread_t thread;
	char *got = NULL;

	memset(v, 0, sizeof(*v));
	assert_int_equal(enr_oauth_receiver_new(&rx, 20000), 0);
	if (expected_state)
		assert_int_equal(enr_oauth_receiver_expect_state(rx, expected_state), 0);
	snprintf(v->url, sizeof(v->url), "%s?%s", enr_oauth_receiver_redirect_uri(rx), query);
	assert_int_equal(pthread_create(&thread, NULL, visit_main, v), 0);
	assert_int_equal(enr_oauth_receiver_wait(&got, rx, 20000), 0);
	enr_oauth_receiver_free(rx); /* the flow ended */
	pthread_join(thread, NULL);
	free(got);
}

#define RX_STATE "Rx-State-0123456789abcdef"

static void test_receiver_pages_arrive_whole(void **state)
{
	static const struct {
		const char *query;
		long status;
	} visits[] = {
	    {"code=c1&state=" RX_STATE, 200},
	    {"error=access_denied&state=" RX_STATE, 200},
	    {"code=c1&state=forged-0123456789abcdef", 400},
	};
	/* First with the listener's thread the slower one (the flow has ended
	 * before the page was even queued), then many times at full speed: the
	 * page must not depend on who is faster. */
	static const struct {
		bool slow;
		int times;
	} rounds[] = {{true, 2}, {false, 100}};
	struct page_visit v;

	(void)state;
	for (size_t r = 0; r < ENR_ARRAY_SIZE(rounds); r++) {
		atomic_store(&slow_answers, rounds[r].slow);
		for (int i = 0; i < rounds[r].times; i++) {
			for (size_t k = 0; k < ENR_ARRAY_SIZE(visits); k++) {
				visit_and_end(&v, RX_STATE, visits[k].query);
				assert_int_equal(v.status, visits[k].status);
				assert_true(v.complete); /* its words: below */
			}
		}
	}
}

static void test_receiver_pages_say_what_came(void **state)
{
	static const struct {
		const char *query;
		long status;
		const char *says[3];
		const char *never[6]; /* beside the approval's words, unless it is one */
	} cases[] = {
	    {"code=Rx-Code-1&state=" RX_STATE,
	     200,
	     {"received your approval", "close this tab"},
	     {"Rx-Code-1", RX_STATE}},
	    /* A refusal is said to be one, and that the installer sees it. */
	    {"error=access_denied&error_description=User+said+no&state=" RX_STATE,
	     200,
	     {"You declined", "the installer will see that you declined", "close this tab"},
	     {"User said no", RX_STATE}},
	    /* So is one without state (a forged error can only stop the flow). */
	    {"error=access_denied", 200, {"You declined"}, {"another or an older"}},
	    /* Another error: its code, visible and as text; nothing else of the query. */
	    {"error=%3Cb%3Einvalid_scope%3C%2Fb%3E%1B%5B2J&error_description=Desc-9"
	     "&code=Raw-Code-2&state=" RX_STATE,
	     200,
	     {"did not finish", "<code>&lt;b&gt;invalid_scope&lt;/b&gt;\\x1b[2J</code>"},
	     {"<b>", "\x1b", "Desc-9", "Raw-Code-2", RX_STATE, "You declined"}},
	    /* Another sign-in's answer, or one without state. */
	    {"code=Rx-Code-3&state=older-0123456789abcdef",
	     400,
	     {"another or an older sign-in"},
	     {"Rx-Code-3"}},
	    {"code=Rx-Code-4", 400, {"another or an older sign-in"}, {"Rx-Code-4"}},
	    /* A refusal with another sign-in's state is that sign-in's business. */
	    {"error=access_denied&state=older-0123456789abcdef",
	     400,
	     {"another or an older sign-in"},
	     {"You declined"}},
	};
	struct page_visit v;

	(void)state;
	for (size_t i = 0; i < ENR_ARRAY_SIZE(cases); i++) {
		visit_and_end(&v, RX_STATE, cases[i].query);
		print_message("# %s\n", cases[i].query);
		assert_int_equal(v.status, cases[i].status);
		assert_true(v.complete);
		for (size_t k = 0; k < ENR_ARRAY_SIZE(cases[i].says) && cases[i].says[k]; k++)
			assert_non_null(strstr(v.body, cases[i].says[k]));
		for (size_t k = 0; k < ENR_ARRAY_SIZE(cases[i].never) && cases[i].never[k]; k++)
			assert_null(strstr(v.body, cases[i].never[k]));
		if (i > 0)
			assert_null(strstr(v.body, "received your approval"));
	}
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_tesla_code_exchange_form, setup, teardown),
    cmocka_unit_test_setup_teardown(test_enphase_code_exchange_query_basic, setup, teardown),
    cmocka_unit_test_setup_teardown(test_refresh_form, setup, teardown),
    cmocka_unit_test_setup_teardown(test_refused_refresh_hides_secrets, setup, teardown),
    cmocka_unit_test_setup_teardown(test_missing_client_secret, setup, teardown),
    cmocka_unit_test_setup_teardown(test_client_credentials, setup, teardown),
    cmocka_unit_test_setup_teardown(test_token_call_through_multi, setup, teardown),
    cmocka_unit_test_setup_teardown(test_receiver_end_to_end, setup, teardown),
    cmocka_unit_test(test_receiver_refuses_wrong_state_and_decline),
    cmocka_unit_test(test_receiver_timeout_and_cancel),
    cmocka_unit_test(test_receiver_wait_wakes_up),
    cmocka_unit_test_teardown(test_receiver_pages_arrive_whole, fast_answers),
    cmocka_unit_test(test_receiver_pages_say_what_came),
};

NET_TEST_MAIN(tests)
