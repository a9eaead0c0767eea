/* Integration tests of the http module against small servers started in this
 * program on loopback: every failure class from real HTTP answers, request
 * building as the server sees it, redaction, the multi interface, TLS. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/vendor.h"
#include "enr_build_config.h"
#include "fixtures.h"
#include "httpd.h"

#define HUGE_BODY (5 * 1024 * 1024)

/* What the server saw of the last request. */
struct seen {
	pthread_mutex_t lock;
	char method[16];
	char path[128];
	char user_agent[64];
	char accept[64];
	char authorization[256];
	char content_type[128];
	char expect[32];
	char x_key[64];
	char arg_q[128];
	char form_a[128];
	char body[512];
	unsigned arg_count;
};

/* The barrier: /barrier answers only once `want` requests wait at once. */
struct barrier {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned waiting;
	unsigned want;
};

struct server_ctx {
	struct seen seen;
	struct barrier barrier;
};

static void copy(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

static void record(struct seen *s, const struct test_request *req)
{
	char *form_a = test_form_value(req->body, "a");

	pthread_mutex_lock(&s->lock);
	copy(s->method, sizeof(s->method), req->method);
	copy(s->path, sizeof(s->path), req->path);
	copy(s->user_agent, sizeof(s->user_agent), test_request_header(req, "User-Agent"));
	copy(s->accept, sizeof(s->accept), test_request_header(req, "Accept"));
	copy(s->authorization, sizeof(s->authorization), test_request_header(req, "Authorization"));
	copy(s->content_type, sizeof(s->content_type), test_request_header(req, "Content-Type"));
	copy(s->expect, sizeof(s->expect), test_request_header(req, "Expect"));
	copy(s->x_key, sizeof(s->x_key), test_request_header(req, "X-Key"));
	copy(s->arg_q, sizeof(s->arg_q), test_request_arg(req, "q"));
	copy(s->form_a, sizeof(s->form_a), form_a);
	copy(s->body, sizeof(s->body), req->body);
	s->arg_count = test_request_arg_count(req);
	pthread_mutex_unlock(&s->lock);
	free(form_a);
}

/* Waits (at most 10 s) until `want` requests are inside at once. */
static bool barrier_wait(struct barrier *b)
{
	struct timespec until;
	bool all;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&b->lock);
	b->waiting++;
	pthread_cond_broadcast(&b->cond);
	while (b->waiting < b->want && pthread_cond_timedwait(&b->cond, &b->lock, &until) == 0)
		;
	all = b->waiting >= b->want;
	pthread_mutex_unlock(&b->lock);
	return all;
}

static void handler(const struct test_request *req, struct test_reply *reply, void *ctx)
{
	struct server_ctx *c = ctx;
	const char *p = req->path;

	record(&c->seen, req);
	if (strcmp(p, "/ok") == 0) {
		test_reply_printf(reply, "{\"ok\": true}");
	} else if (strcmp(p, "/401") == 0) {
		reply->status = 401;
		test_reply_printf(reply, "{\"message\": \"Unauthorized\"}");
	} else if (strcmp(p, "/403") == 0) {
		reply->status = 403;
	} else if (strcmp(p, "/token/invalid_grant") == 0) {
		reply->status = 400;
		test_reply_printf(reply, "{\"error\": \"invalid_grant\", \"error_description\": "
		                         "\"The refresh token is expired\"}");
	} else if (strcmp(p, "/token/invalid_client") == 0) {
		reply->status = 401;
		test_reply_printf(reply, "{\"error\": \"invalid_client\"}");
	} else if (strcmp(p, "/429") == 0) {
		reply->status = 429;
		test_reply_header(reply, "Retry-After", "7");
	} else if (strcmp(p, "/503") == 0) {
		reply->status = 503;
		test_reply_header(reply, "Retry-After", "120");
		test_reply_printf(reply, "<html>maintenance</html>");
		reply->content_type = "text/html";
	} else if (strcmp(p, "/500") == 0) {
		reply->status = 500;
	} else if (strcmp(p, "/404") == 0) {
		reply->status = 404;
	} else if (strcmp(p, "/malformed") == 0) {
		test_reply_printf(reply, "{\"sites\": [1, 2");
	} else if (strcmp(p, "/huge") == 0) {
		reply->body = malloc(HUGE_BODY);
		memset(reply->body, ' ', HUGE_BODY);
		reply->body_len = HUGE_BODY;
	} else if (strcmp(p, "/huge-chunked") == 0) {
		reply->mode = REPLY_CHUNKED;
		reply->chunked_len = HUGE_BODY;
	} else if (strcmp(p, "/4k") == 0) {
		reply->mode = REPLY_CHUNKED;
		reply->chunked_len = 4096;
	} else if (strcmp(p, "/stall") == 0) {
		reply->mode = REPLY_STALL;
		reply->stall_len = 1000;
	} else if (strcmp(p, "/redirect") == 0) {
		reply->status = 302;
		test_reply_header(reply, "Location",
		                  "https://elsewhere.example/new/path?token=LeakedT0ken99");
	} else if (strcmp(p, "/echo") == 0) {
		/* A careless server that repeats the credentials in its error. */
		reply->status = 400;
		test_reply_printf(reply,
		                  "{\"error\": \"invalid_request\", \"error_description\": "
		                  "\"got auth %s, query %s, body %s\"}",
		                  test_request_header(req, "Authorization"),
		                  test_request_arg(req, "q"), req->body);
	} else if (strcmp(p, "/echo500") == 0) {
		reply->status = 500;
		test_reply_printf(reply, "{\"message\": \"crashed on %s\"}",
		                  test_request_header(req, "Authorization"));
	} else if (strcmp(p, "/barrier") == 0) {
		if (barrier_wait(&c->barrier)) {
			test_reply_printf(reply, "{\"together\": true}");
		} else {
			reply->status = 500;
		}
	} else {
		reply->status = 404;
	}
}

struct fixture {
	struct server_ctx ctx;
	struct test_httpd *server;
	struct enr_config *cfg;
	char url[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	pthread_mutex_init(&f->ctx.seen.lock, NULL);
	pthread_mutex_init(&f->ctx.barrier.lock, NULL);
	pthread_cond_init(&f->ctx.barrier.cond, NULL);
	f->server = test_httpd_start(handler, &f->ctx, NULL, NULL);
	assert_int_equal(enr_config_new(&f->cfg), 0);
	/* Every transfer logs a line: let the sanitizers see that code run. */
	enr_log_set_level(ENR_LOG_DEBUG);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	test_httpd_stop(f->server);
	enr_config_free(f->cfg);
	pthread_cond_destroy(&f->ctx.barrier.cond);
	pthread_mutex_destroy(&f->ctx.barrier.lock);
	pthread_mutex_destroy(&f->ctx.seen.lock);
	free(f);
	enr_log_clear_secrets();
	return 0;
}

static const char *url(struct fixture *f, const char *path)
{
	snprintf(f->url, sizeof(f->url), "%s%s", test_httpd_url(f->server), path);
	return f->url;
}

/* Sends a GET (a token call when `token_call`) and classifies the answer. */
static int get(struct fixture *f, const char *path, const char *vendor_id, bool token_call,
               struct enr_http_response **resp_out)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	int rc;

	assert_int_equal(enr_http_request_new(&req, token_call ? "POST" : "GET", url(f, path)), 0);
	if (vendor_id)
		assert_int_equal(
		    enr_http_request_set_vendor(req, test_vendor(vendor_id), "api_url"), 0);
	enr_http_request_set_token_call(req, token_call);
	rc = enr_http_perform(&resp, f->cfg, req);
	if (rc == 0)
		rc = enr_http_classify(resp);
	if (resp_out)
		*resp_out = resp;
	else
		enr_http_response_free(resp);
	enr_http_request_free(req);
	return rc;
}

static void test_ok_and_request_shape(void **state)
{
	struct fixture *f = *state;
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;

	assert_int_equal(enr_http_request_new(&req, NULL, url(f, "/ok?fixed=1")), 0);
	assert_int_equal(enr_http_request_add_query(req, "q", "a b&c=d/é?", 0), 0);
	assert_int_equal(enr_http_request_add_header(req, "X-Key", "key-123", 0), 0);
	assert_int_equal(enr_http_request_set_bearer(req, "bearer-token-1"), 0);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), 0);
	assert_int_equal(enr_http_classify(resp), 0);
	assert_int_equal(resp->status, 200);
	assert_string_equal(resp->body, "{\"ok\": true}");
	assert_int_equal(resp->body_len, 12);
	assert_string_equal(resp->content_type, "application/json");
	assert_int_equal(resp->retry_after, -1);
	assert_string_equal(f->ctx.seen.method, "GET");
	assert_string_equal(f->ctx.seen.path, "/ok");
	assert_string_equal(f->ctx.seen.arg_q, "a b&c=d/é?");
	assert_int_equal(f->ctx.seen.arg_count, 2);
	assert_string_equal(f->ctx.seen.user_agent, "derenroll/" ENR_VERSION);
	assert_string_equal(f->ctx.seen.accept, "application/json");
	assert_string_equal(f->ctx.seen.authorization, "Bearer bearer-token-1");
	assert_string_equal(f->ctx.seen.x_key, "key-123");
	enr_http_response_free(resp);
	enr_http_request_free(req);

	/* A form POST with Basic auth. */
	assert_int_equal(enr_http_request_new(&req, NULL, url(f, "/ok")), 0);
	assert_int_equal(enr_http_request_add_form(req, "a", "x y+z&w", 0), 0);
	assert_int_equal(enr_http_request_add_form(req, "b", "2", 0), 0);
	assert_int_equal(enr_http_request_set_basic(req, "id", "pw"), 0);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), 0);
	assert_string_equal(f->ctx.seen.method, "POST");
	assert_string_equal(f->ctx.seen.form_a, "x y+z&w");
	assert_string_equal(f->ctx.seen.content_type, "application/x-www-form-urlencoded");
	assert_string_equal(f->ctx.seen.authorization, "Basic aWQ6cHc=");
	enr_http_response_free(resp);
	enr_http_request_free(req);

	/* A raw JSON body of more than 1 KiB: sent as is, with no Expect round trip. */
	{
		char body[2048];
		memset(body, 'a', sizeof(body));
		memcpy(body, "{\"k\":\"", 6);
		memcpy(body + sizeof(body) - 2, "\"}", 2);
		assert_int_equal(enr_http_request_new(&req, "POST", url(f, "/ok")), 0);
		assert_int_equal(
		    enr_http_request_set_body(req, "application/json", body, sizeof(body)), 0);
		assert_int_equal(enr_http_perform(&resp, f->cfg, req), 0);
		assert_string_equal(f->ctx.seen.content_type, "application/json");
		assert_string_equal(f->ctx.seen.expect, "");
		assert_int_equal(strlen(f->ctx.seen.body), sizeof(f->ctx.seen.body) - 1);
		assert_memory_equal(f->ctx.seen.body, body, sizeof(f->ctx.seen.body) - 1);
		enr_http_response_free(resp);
		enr_http_request_free(req);
	}
}

static void test_failure_classes(void **state)
{
	struct fixture *f = *state;
	struct enr_http_response *resp = NULL;
	json_object *obj = NULL;

	assert_int_equal(get(f, "/401", "sma", false, NULL), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "SMA refused the credentials"));
	assert_int_equal(get(f, "/403", NULL, false, NULL), ENR_E_REJECTED);
	assert_int_equal(get(f, "/token/invalid_grant", "tesla", true, NULL), ENR_E_REJECTED);
	assert_int_equal(get(f, "/token/invalid_grant", NULL, true, NULL), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "The refresh token is expired"));
	assert_int_equal(get(f, "/token/invalid_client", "sma", true, NULL), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "[vendor.sma]"));

	assert_int_equal(get(f, "/429", "tesla", false, &resp), ENR_E_TRANSIENT);
	assert_int_equal(resp->retry_after, 7);
	assert_non_null(strstr(enr_error_last(), "7 s"));
	enr_http_response_free(resp);
	assert_int_equal(get(f, "/503", "tesla", false, &resp), ENR_E_TRANSIENT);
	assert_int_equal(resp->retry_after, 120);
	enr_http_response_free(resp);
	assert_int_equal(get(f, "/500", "tesla", false, NULL), ENR_E_TRANSIENT);
	assert_non_null(strstr(enr_error_last(), "Tesla had a server error (HTTP 500)"));

	assert_int_equal(get(f, "/404", "tesla", false, NULL), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "[vendor.tesla] api_url"));

	/* A 2xx that is not JSON: fine for HTTP, bad for whoever reads it. */
	assert_int_equal(get(f, "/malformed", "tesla", false, &resp), 0);
	assert_int_equal(enr_http_response_json(&obj, resp), ENR_E_BADRESPONSE);
	assert_non_null(strstr(enr_error_last(), "Tesla sent a malformed answer"));
	enr_http_response_free(resp);
}

static void test_body_cap(void **state)
{
	struct fixture *f = *state;

	/* With a Content-Length: refused before reading. */
	assert_int_equal(get(f, "/huge", "enphase", false, NULL), ENR_E_BADRESPONSE);
	assert_non_null(strstr(enr_error_last(), "larger than 1048576 bytes"));
	/* Without one: cut off while reading. */
	assert_int_equal(get(f, "/huge-chunked", "enphase", false, NULL), ENR_E_BADRESPONSE);
	assert_non_null(strstr(enr_error_last(), "Enphase"));
	/* [http] max_body applies. */
	assert_int_equal(get(f, "/4k", NULL, false, NULL), 0);
	enr_config_set(f->cfg, "http", "max_body", "2048");
	assert_int_equal(get(f, "/4k", NULL, false, NULL), ENR_E_BADRESPONSE);
	enr_config_set(f->cfg, "http", "max_body", "lots");
	assert_int_equal(get(f, "/4k", NULL, false, NULL), ENR_E_CONFIG);
}

static void test_stalled_body_times_out(void **state)
{
	struct fixture *f = *state;
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;

	assert_int_equal(enr_http_request_new(&req, "GET", url(f, "/stall")), 0);
	assert_int_equal(enr_http_request_set_vendor(req, test_vendor("solaredge"), "api_url"), 0);
	enr_http_request_set_timeouts(req, 0, 300);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), ENR_E_TRANSIENT);
	assert_null(resp);
	assert_non_null(strstr(enr_error_last(), "SolarEdge did not answer in time"));
	enr_http_request_free(req);
}

static void test_connection_refused(void **state)
{
	struct fixture *f = *state;
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char where[64];
	int fd;

	snprintf(where, sizeof(where), "http://127.0.0.1:%u/x", test_closed_port(&fd));
	assert_int_equal(enr_http_request_new(&req, "GET", where), 0);
	assert_int_equal(enr_http_request_set_vendor(req, test_vendor("solis"), "api_url"), 0);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), ENR_E_TRANSIENT);
	assert_non_null(strstr(enr_error_last(), "Solis: cannot connect"));
	enr_http_request_free(req);
	close(fd);
}

static void test_redirect_not_followed(void **state)
{
	struct fixture *f = *state;
	unsigned before = test_httpd_requests(f->server);
	struct enr_http_response *resp = NULL;

	assert_int_equal(get(f, "/redirect", "tesla", false, &resp), ENR_E_MISCONFIGURED);
	/* The message never offers the vendor's target as an address to set. */
	assert_non_null(strstr(enr_error_last(), "not followed"));
	assert_null(strstr(enr_error_last(), "elsewhere.example"));
	assert_null(strstr(enr_error_last(), "LeakedT0ken99"));
	assert_int_equal(test_httpd_requests(f->server), before + 1);
	/* Shown: no query. For a caller that plays the browser: all of it. */
	assert_string_equal(resp->location, "https://elsewhere.example/new/path");
	assert_string_equal(resp->redirect_url,
	                    "https://elsewhere.example/new/path?token=LeakedT0ken99");
	enr_http_response_free(resp);
	assert_int_equal(get(f, "/redirect", "tesla", true, NULL), ENR_E_MISCONFIGURED);
	assert_int_equal(get(f, "/ok", NULL, false, &resp), 0);
	assert_null(resp->redirect_url);
	enr_http_response_free(resp);
}

static void test_secrets_never_in_messages(void **state)
{
	struct fixture *f = *state;
	static const char *const secrets[] = {"Bearer-S3cret-AAA", "Query-S3cret-BBB",
	                                      "Form-S3cret-CCC"};
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *log_path = NULL, *log = NULL;

	assert_true(asprintf(&log_path, "%s/net.log", getenv("HOME")) > 0);
	assert_int_equal(enr_log_open(log_path), 0);
	assert_int_equal(enr_http_request_new(&req, "POST", url(f, "/echo")), 0);
	assert_int_equal(enr_http_request_set_bearer(req, secrets[0]), 0);
	assert_int_equal(enr_http_request_add_query(req, "q", secrets[1], ENR_HTTP_SECRET), 0);
	assert_int_equal(enr_http_request_add_form(req, "a", secrets[2], ENR_HTTP_SECRET), 0);
	enr_http_request_set_token_call(req, true);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), 0);
	/* The server did echo them... */
	assert_non_null(strstr(resp->body, secrets[0]));
	assert_non_null(strstr(resp->body, secrets[1]));
	assert_non_null(strstr(resp->body, secrets[2]));
	/* ...and the message does not. */
	assert_int_equal(enr_http_classify(resp), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "[redacted]"));
	for (size_t i = 0; i < 3; i++)
		assert_null(strstr(enr_error_last(), secrets[i]));
	assert_null(strstr(enr_error_last(), "q="));
	enr_http_response_free(resp);
	enr_http_request_free(req);

	assert_int_equal(enr_http_request_new(&req, "GET", url(f, "/echo500")), 0);
	assert_int_equal(enr_http_request_set_bearer(req, secrets[0]), 0);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), 0);
	assert_int_equal(enr_http_classify(resp), ENR_E_TRANSIENT);
	assert_null(strstr(enr_error_last(), secrets[0]));
	enr_http_response_free(resp);
	enr_http_request_free(req);

	/* The log names each transfer, without its query or any secret. */
	enr_log_error("failed: %s", enr_error_last());
	enr_log_close();
	log = test_read_file(log_path);
	assert_non_null(log);
	assert_non_null(strstr(log, "/echo: HTTP 400"));
	assert_non_null(strstr(log, "/echo500: HTTP 500"));
	assert_null(strstr(log, "q="));
	for (size_t i = 0; i < 3; i++)
		assert_null(strstr(log, secrets[i]));
	free(log);
	free(log_path);
}

/* ---- plain http to a non-loopback host ---------------------------------- */

static void count_handler(const struct test_request *req, struct test_reply *reply, void *ctx)
{
	(void)req;
	(void)ctx;
	reply->status = 502;
}

static void test_plain_http_refused_without_traffic(void **state)
{
	struct fixture *f = *state;
	struct test_httpd *proxy = test_httpd_start(count_handler, NULL, NULL, NULL);
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	CURL *raw = curl_easy_init();

	/* Any request to a non-loopback host would go to this proxy. */
	setenv("http_proxy", test_httpd_url(proxy), 1);
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");

	assert_int_equal(enr_http_request_new(&req, "GET", "http://vendor.example/api?key=K3y"), 0);
	assert_int_equal(enr_http_perform(&resp, f->cfg, req), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "plain http"));
	assert_non_null(strstr(enr_error_last(), "vendor.example"));
	assert_int_equal(test_httpd_requests(proxy), 0);
	enr_http_request_free(req);

	/* The control: plain libcurl does send it, so the count above means something. */
	curl_easy_setopt(raw, CURLOPT_URL, "http://vendor.example/api");
	curl_easy_setopt(raw, CURLOPT_WRITEFUNCTION, fwrite);
	curl_easy_setopt(raw, CURLOPT_WRITEDATA, stderr);
	curl_easy_setopt(raw, CURLOPT_TIMEOUT, 10L);
	assert_int_equal(curl_easy_perform(raw), CURLE_OK);
	assert_int_equal(test_httpd_requests(proxy), 1);
	curl_easy_cleanup(raw);

	/* Loopback never goes through the proxy. */
	assert_int_equal(get(f, "/ok", NULL, false, NULL), 0);
	assert_int_equal(test_httpd_requests(proxy), 1);

	unsetenv("http_proxy");
	test_httpd_stop(proxy);
}

/* ---- multi -------------------------------------------------------------- */

struct results {
	int done;
	int ok;
	int transient;
	int order[8];
	bool cancelled_called;
};

struct call {
	struct results *results;
	int index;
};

static void on_done(struct enr_http_response *resp, void *ctx)
{
	struct call *c = ctx;
	struct results *r = c->results;

	r->order[r->done++] = c->index;
	if (enr_http_classify(resp) == 0 && strstr(resp->body, "together"))
		r->ok++;
	else if (enr_error_last_code() == ENR_E_TRANSIENT)
		r->transient++;
	enr_http_response_free(resp);
}

static void on_cancelled_done(struct enr_http_response *resp, void *ctx)
{
	((struct results *)ctx)->cancelled_called = true;
	enr_http_response_free(resp);
}

static void test_multi_runs_requests_together(void **state)
{
	struct fixture *f = *state;
	struct enr_http_multi *multi = NULL;
	struct enr_http_request *req = NULL, *refused = NULL, *stalled = NULL;
	struct results r = {0};
	struct call calls[5];
	uint64_t ids[5], stall_id;
	int loops = 0, fd;
	char where[64];

	/* Four requests that the server answers only when all four are in: one
	 * at a time, they would each wait for the others and fail. */
	f->ctx.barrier.want = 4;
	assert_int_equal(enr_http_multi_new(&multi, f->cfg), 0);
	assert_int_equal(enr_http_request_new(&req, "GET", url(f, "/barrier")), 0);
	enr_http_request_set_timeouts(req, 0, 20000);
	for (int i = 0; i < 4; i++) {
		calls[i] = (struct call){&r, i};
		assert_int_equal(enr_http_multi_add(&ids[i], multi, req, on_done, &calls[i]), 0);
		assert_true(ids[i] != 0);
	}
	enr_http_request_free(req);
	/* A fifth one that fails at once, among them. */
	snprintf(where, sizeof(where), "http://127.0.0.1:%u/x", test_closed_port(&fd));
	assert_int_equal(enr_http_request_new(&refused, "GET", where), 0);
	calls[4] = (struct call){&r, 4};
	assert_int_equal(enr_http_multi_add(&ids[4], multi, refused, on_done, &calls[4]), 0);
	enr_http_request_free(refused);
	/* And one cancelled before it ends. */
	assert_int_equal(enr_http_request_new(&stalled, "GET", url(f, "/stall")), 0);
	assert_int_equal(enr_http_multi_add(&stall_id, multi, stalled, on_cancelled_done, &r), 0);
	enr_http_request_free(stalled);
	assert_int_equal(enr_http_multi_running(multi), 6);

	/* The caller's own loop: poll the multi's sockets, then step. */
	while (r.done < 5) {
		struct pollfd fds[16];
		size_t n = enr_http_multi_poll_fds(multi, fds, 16);
		long wait = enr_http_multi_timeout_ms(multi);

		assert_true(n <= 16);
		poll(fds, n, wait < 0 || wait > 200 ? 200 : (int)wait);
		assert_true(enr_http_multi_step(multi) >= 0);
		loops++;
		assert_true(loops < 10000);
	}
	assert_int_equal(r.ok, 4);
	assert_int_equal(r.transient, 1);
	/* The caller had control back many times while the transfers ran. */
	assert_true(loops > 1);
	assert_int_equal(enr_http_multi_running(multi), 1);
	assert_int_equal(enr_http_multi_cancel(multi, stall_id), 0);
	assert_int_equal(enr_http_multi_cancel(multi, stall_id), ENR_E_NOTFOUND);
	assert_int_equal(enr_http_multi_cancel(multi, ids[0]), ENR_E_NOTFOUND);
	assert_int_equal(enr_http_multi_running(multi), 0);
	assert_int_equal(enr_http_multi_run_until_idle(multi), 0);
	assert_false(r.cancelled_called);
	enr_http_multi_free(multi);
	close(fd);
}

struct chain {
	struct enr_http_multi *multi;
	struct fixture *f;
	int done;
	uint64_t victim;
	bool victim_called;
};

static void on_victim(struct enr_http_response *resp, void *ctx)
{
	((struct chain *)ctx)->victim_called = true;
	enr_http_response_free(resp);
}

static void on_chained(struct enr_http_response *resp, void *ctx)
{
	struct chain *c = ctx;

	assert_int_equal(enr_http_classify(resp), 0);
	enr_http_response_free(resp);
	if (++c->done == 1) {
		/* From a callback: cancel one transfer and start another. */
		struct enr_http_request *req = NULL;
		uint64_t id;
		assert_int_equal(enr_http_multi_cancel(c->multi, c->victim), 0);
		assert_int_equal(enr_http_request_new(&req, "GET", url(c->f, "/ok")), 0);
		assert_int_equal(enr_http_multi_add(&id, c->multi, req, on_chained, c), 0);
		enr_http_request_free(req);
	}
}

static void test_multi_callbacks_add_and_cancel(void **state)
{
	struct fixture *f = *state;
	struct chain c = {.f = f};
	struct enr_http_request *req = NULL;
	uint64_t id;
	fd_set rs, ws, es;
	int max_fd = -1;

	assert_int_equal(enr_http_multi_new(&c.multi, f->cfg), 0);
	assert_int_equal(enr_http_request_new(&req, "GET", url(f, "/ok")), 0);
	assert_int_equal(enr_http_multi_add(&id, c.multi, req, on_chained, &c), 0);
	enr_http_request_free(req);
	assert_int_equal(enr_http_request_new(&req, "GET", url(f, "/stall")), 0);
	assert_int_equal(enr_http_multi_add(&c.victim, c.multi, req, on_victim, &c), 0);
	enr_http_request_free(req);
	/* Nothing has happened yet: the first step only starts the transfers. */
	FD_ZERO(&rs);
	FD_ZERO(&ws);
	FD_ZERO(&es);
	assert_int_equal(enr_http_multi_fdset(c.multi, &rs, &ws, &es, &max_fd), 0);
	assert_int_equal(enr_http_multi_run_until_idle(c.multi), 0);
	assert_int_equal(c.done, 2);
	assert_false(c.victim_called);
	enr_http_multi_free(c.multi);
}

static void test_multi_free_with_transfers(void **state)
{
	struct fixture *f = *state;
	struct enr_http_multi *multi = NULL;
	struct enr_http_request *req = NULL;
	struct results r = {0};
	uint64_t id;

	assert_int_equal(enr_http_multi_new(&multi, f->cfg), 0);
	assert_int_equal(enr_http_request_new(&req, "GET", url(f, "/stall")), 0);
	assert_int_equal(enr_http_multi_add(&id, multi, req, on_cancelled_done, &r), 0);
	enr_http_request_free(req);
	for (int i = 0; i < 5; i++)
		enr_http_multi_step(multi);
	enr_http_multi_free(multi);
	assert_false(r.cancelled_called);
}

/* ---- TLS ---------------------------------------------------------------- */

static void ok_handler(const struct test_request *req, struct test_reply *reply, void *ctx)
{
	(void)req;
	(void)ctx;
	test_reply_printf(reply, "{\"tls\": true}");
}

static void test_tls_verified(void **state)
{
	struct fixture *f = *state;
	char *key = NULL, *cert = NULL, *ca_path, base[2][96];
	const char *dir = getenv("HOME");
	struct test_httpd *tls;
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	struct enr_config *with_ca = NULL;

	test_make_cert(&key, &cert);
	tls = test_httpd_start(ok_handler, NULL, key, cert);
	ca_path = test_write_file(dir, "test-ca.pem", cert, 0644);
	snprintf(base[0], sizeof(base[0]), "https://127.0.0.1:%u/x", test_httpd_port(tls));
	snprintf(base[1], sizeof(base[1]), "https://localhost:%u/x", test_httpd_port(tls));
	assert_int_equal(enr_config_new(&with_ca), 0);
	assert_int_equal(enr_config_set(with_ca, "http", "ca_file", ca_path), 0);

	for (int i = 0; i < 2; i++) {
		/* Without its CA: refused. */
		assert_int_equal(enr_http_request_new(&req, "GET", base[i]), 0);
		assert_int_equal(enr_http_request_set_vendor(req, test_vendor("tesla"), "api_url"),
		                 0);
		assert_int_equal(enr_http_perform(&resp, f->cfg, req), ENR_E_TRANSIENT);
		assert_non_null(strstr(enr_error_last(), "certificate"));
		assert_null(resp);
		/* With [http] ca_file: accepted. */
		assert_int_equal(enr_http_perform(&resp, with_ca, req), 0);
		assert_int_equal(enr_http_classify(resp), 0);
		assert_string_equal(resp->body, "{\"tls\": true}");
		enr_http_response_free(resp);
		enr_http_request_free(req);
	}

	/* A CA file that cannot be read is the company's setting to fix. */
	assert_int_equal(enr_config_set(with_ca, "http", "ca_file", "/nonexistent/ca.pem"), 0);
	assert_int_equal(enr_http_request_new(&req, "GET", base[0]), 0);
	assert_int_equal(enr_http_perform(&resp, with_ca, req), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "ca_file"));
	enr_http_request_free(req);

	enr_config_free(with_ca);
	test_httpd_stop(tls);
	free(ca_path);
	free(key);
	free(cert);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_ok_and_request_shape, setup, teardown),
    cmocka_unit_test_setup_teardown(test_failure_classes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
    cmocka_unit_test_setup_teardown(test_stalled_body_times_out, setup, teardown),
    cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_redirect_not_followed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_secrets_never_in_messages, setup, teardown),
    cmocka_unit_test_setup_teardown(test_plain_http_refused_without_traffic, setup, teardown),
    cmocka_unit_test_setup_teardown(test_multi_runs_requests_together, setup, teardown),
    cmocka_unit_test_setup_teardown(test_multi_callbacks_add_and_cancel, setup, teardown),
    cmocka_unit_test_setup_teardown(test_multi_free_with_transfers, setup, teardown),
    cmocka_unit_test_setup_teardown(test_tls_verified, setup, teardown),
};

NET_TEST_MAIN(tests)
