/*
 * The relay over real HTTP on loopback, with libcurl as the client: the
 * standalone daemon, the relay mounted in another libmicrohttpd daemon, and
 * the `derenroll relay` program (argv[1]).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <microhttpd.h>

#include "derenroll/config.h"
#include "derenroll/enroll.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/oauth.h"
#include "derenroll/log.h"
#include "derenroll/relay.h"
#include "derenroll/sandbox.h"
#include "derenroll/vendor.h"
#include "helpers.h"

#define SECRET "test-relay-secret-0123456789abcdef"
#define STATE  "stateABCDEFGHIJ0123456789_-xyz"

static const char *derenroll_exe;
static long long fake_now = 1800000000;

static long long fake_clock(void *ctx)
{
	return __atomic_load_n((long long *)ctx, __ATOMIC_SEQ_CST);
}

static void advance_clock(long long seconds)
{
	__atomic_add_fetch(&fake_now, seconds, __ATOMIC_SEQ_CST);
}

/* ---- an HTTP client ---- */

struct reply {
	long status;
	char *body;
	size_t body_len;
	char *headers;
	size_t headers_len;
	double seconds;
};

struct buffer {
	char *data;
	size_t len;
};

static size_t append(char *data, size_t size, size_t n, void *ud)
{
	struct buffer *b = ud;
	char *grown = realloc(b->data, b->len + size * n + 1);

	assert_non_null(grown);
	memcpy(grown + b->len, data, size * n);
	b->len += size * n;
	grown[b->len] = '\0';
	b->data = grown;
	return size * n;
}

static void reply_free(struct reply *r)
{
	free(r->body);
	free(r->headers);
	memset(r, 0, sizeof(*r));
}

static bool has_header(const struct reply *r, const char *line)
{
	return r->headers && strcasestr(r->headers, line) != NULL;
}

static CURL *main_handle;

/*
 * One request with the handle `c` (connections are reused), checking the
 * headers every answer of the relay must carry.
 */
static void request_with(CURL *c, struct reply *out, const char *method, const char *url,
                         const char *bearer, const char *body, const char *header)
{
	struct curl_slist *headers = NULL;
	char auth[256];
	struct buffer b = {0}, h = {0};
	struct timespec t0, t1;
	CURLcode res;

	memset(out, 0, sizeof(*out));
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, append);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
	if (bearer) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
		headers = curl_slist_append(headers, auth);
	}
	if (header)
		headers = curl_slist_append(headers, header);
	if (body) {
		headers = curl_slist_append(headers, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	res = curl_easy_perform(c);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	curl_slist_free_all(headers);
	assert_int_equal(res, CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	out->body = b.data ? b.data : strdup("");
	out->body_len = b.len;
	out->headers = h.data;
	out->headers_len = h.len;
	out->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(has_header(out, "\r\nCache-Control: no-store\r\n"));
	assert_true(has_header(out, "\r\nReferrer-Policy: no-referrer\r\n"));
}

static void request(struct reply *out, const char *method, const char *url, const char *bearer,
                    const char *body, const char *header)
{
	request_with(main_handle, out, method, url, bearer, body, header);
}

/* A request without a body whose status and one piece of text are all that matter. */
static void expect_text(long status, const char *method, const char *url, const char *bearer,
                        const char *text)
{
	struct reply r;

	request(&r, method, url, bearer, NULL, NULL);
	if (r.status != status || !strstr(r.body, text))
		fail_msg("%s %s: %ld instead of %ld, or no '%s' in: %s", method, url, r.status,
		         status, text, r.body);
	reply_free(&r);
}

/* A request whose status is all that matters. */
static void expect(long status, const char *method, const char *url, const char *bearer,
                   const char *body, const char *header)
{
	struct reply r;

	request(&r, method, url, bearer, body, header);
	if (r.status != status)
		fail_msg("%s %s: %ld instead of %ld", method, url, r.status, status);
	reply_free(&r);
}

/* ---- fixtures ---- */

struct fixture {
	struct enr_relay *relay;
	struct enr_catalog *catalog;
	char base[192];
};

static struct fixture fx;

static void start_relay(struct enr_relay_options *opts)
{
	if (!fx.catalog)
		assert_int_equal(enr_catalog_load(&fx.catalog, NULL), 0);
	if (!opts->secret)
		opts->secret = SECRET;
	opts->catalog = fx.catalog;
	opts->clock = fake_clock;
	opts->clock_ctx = &fake_now;
	assert_int_equal(enr_relay_new(&fx.relay, opts), 0);
	assert_int_equal(enr_relay_start(fx.relay, "127.0.0.1:0"), 0);
	snprintf(fx.base, sizeof(fx.base), "http://127.0.0.1:%u", enr_relay_port(fx.relay));
}

static int setup(void **state)
{
	struct enr_relay_options opts = {0};

	(void)state;
	start_relay(&opts);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	enr_relay_free(fx.relay);
	fx.relay = NULL;
	enr_catalog_free(fx.catalog);
	fx.catalog = NULL;
	return 0;
}

/* ---- helpers on the API ---- */

static char *url_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *url_of(const char *fmt, ...)
{
	static char buf[16384];
	char path[16000];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	snprintf(buf, sizeof(buf), "%s%s", fx.base, path);
	return buf;
}

/* POST /v1/links; returns the status and, on 201, the code in `code`. */
static long create_link(char code[16], const char *state, const char *target, const char *extra)
{
	struct reply r;
	char body[4096];
	long status;

	snprintf(body, sizeof(body), "{\"target\":\"%s\",\"state\":\"%s\"%s}", target, state,
	         extra ? extra : "");
	request(&r, "POST", url_of("/v1/links"), SECRET, body, NULL);
	status = r.status;
	if (status == 201) {
		json_object *root = json_tokener_parse(r.body), *url = NULL, *exp = NULL;
		const char *u, *slash;
		assert_non_null(root);
		assert_true(json_object_object_get_ex(root, "url", &url));
		assert_true(json_object_object_get_ex(root, "expires_at", &exp));
		u = json_object_get_string(url);
		assert_int_equal(strncmp(u, enr_relay_public_url(fx.relay),
		                         strlen(enr_relay_public_url(fx.relay))),
		                 0);
		slash = strstr(u, "/s/");
		assert_non_null(slash);
		snprintf(code, 16, "%s", slash + 3);
		json_object_put(root);
	}
	reply_free(&r);
	return status;
}

static void create_ok(char code[16], const char *state)
{
	assert_int_equal(create_link(code, state, "https://auth.tesla.com/oauth2/v3/authorize?x=1",
	                             ",\"ttl\":600,\"vendor\":\"tesla\""),
	                 201);
}

struct poll {
	pthread_t thread;
	char url[512];
	struct reply reply;
};

static void *poll_main(void *arg)
{
	struct poll *p = arg;
	CURL *c = curl_easy_init();

	request_with(c, &p->reply, "GET", p->url, SECRET, NULL, NULL);
	curl_easy_cleanup(c);
	return NULL;
}

static void poll_start(struct poll *p, const char *state, int wait)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->url, sizeof(p->url), "%s/v1/results/%s?wait=%d", fx.base, state, wait);
	assert_int_equal(pthread_create(&p->thread, NULL, poll_main, p), 0);
}

static void poll_join(struct poll *p)
{
	pthread_join(p->thread, NULL);
}

/* Waits until `n` polls are suspended in the relay. */
static void wait_for_waiters(struct enr_relay *relay, size_t n)
{
	struct enr_relay_stats st;

	for (int i = 0; i < 500; i++) {
		enr_relay_get_stats(&st, relay);
		if (st.waiters >= n)
			return;
		usleep(10000);
	}
	fail_msg("the polls never reached the relay");
}

static const char *json_str(json_object *root, const char *key)
{
	json_object *v = NULL;

	return json_object_object_get_ex(root, key, &v) ? json_object_get_string(v) : NULL;
}

/* ---- the tests ---- */

static void test_full_flow(void **state)
{
	char code[16], lower[16];
	struct reply r;
	struct poll p;
	json_object *root;

	(void)state;
	create_ok(code, STATE);
	assert_int_equal(strlen(code), 7);
	assert_int_equal(strspn(code, "23456789ABCDEFGHJKMNPQRSTUVWXYZ"), 7);

	request(&r, "GET", url_of("/s/%s", code), NULL, NULL, NULL);
	assert_int_equal(r.status, 302);
	assert_true(
	    has_header(&r, "\r\nLocation: https://auth.tesla.com/oauth2/v3/authorize?x=1\r\n"));
	reply_free(&r);
	for (int i = 0; code[i]; i++)
		lower[i] = (char)(code[i] >= 'A' && code[i] <= 'Z' ? code[i] + 32 : code[i]);
	lower[7] = '\0';
	expect(302, "GET", url_of("/s/%s", lower), NULL, NULL, NULL);

	poll_start(&p, STATE, 20);
	wait_for_waiters(fx.relay, 1);
	request(&r, "GET",
	        url_of("/callback?state=%s&code=AUTHCODE-1&iss=https%%3A%%2F%%2Fauth", STATE), NULL,
	        NULL, NULL);
	assert_int_equal(r.status, 200);
	assert_true(has_header(&r, "\r\nContent-Type: text/html; charset=utf-8\r\n"));
	assert_non_null(strstr(r.body, "Tesla"));
	assert_non_null(strstr(r.body, "You can hand the phone back to your installer"));
	assert_non_null(strstr(r.body, "<title>All done, thank you</title>"));
	assert_null(strstr(r.body, "{{"));
	reply_free(&r);

	poll_join(&p);
	assert_int_equal(p.reply.status, 200);
	assert_true(p.reply.seconds < 5);
	root = json_tokener_parse(p.reply.body);
	assert_non_null(root);
	assert_string_equal(json_str(root, "state"), STATE);
	assert_string_equal(json_str(root, "code"), "AUTHCODE-1");
	assert_string_equal(json_str(root, "iss"), "https://auth");
	assert_int_equal(json_object_object_length(root), 3);
	json_object_put(root);
	reply_free(&p.reply);

	/* Handed out once. */
	expect(404, "GET", url_of("/v1/results/%s?wait=1", STATE), SECRET, NULL, NULL);
	/* The short link is spent. */
	expect_text(404, "GET", url_of("/s/%s", code), NULL, "This link does not work");
}

static void test_result_waiting_before_poll(void **state)
{
	char code[16];

	(void)state;
	create_ok(code, STATE);
	expect(200, "GET", url_of("/callback?state=%s&code=C2", STATE), NULL, NULL, NULL);
	expect_text(200, "GET", url_of("/v1/results/%s", STATE), SECRET, "\"code\":\"C2\"");
}

static void test_poll_timeout(void **state)
{
	char code[16];
	struct reply r;

	(void)state;
	create_ok(code, STATE);
	request(&r, "GET", url_of("/v1/results/%s?wait=1", STATE), SECRET, NULL, NULL);
	assert_int_equal(r.status, 204);
	assert_int_equal(r.body_len, 0);
	assert_true(r.seconds >= 0.9);
	reply_free(&r);
	expect(204, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);
	expect(400, "GET", url_of("/v1/results/%s?wait=soon", STATE), SECRET, NULL, NULL);
	/* Still pending after the timeouts. */
	expect(200, "GET", url_of("/callback?state=%s&code=C3", STATE), NULL, NULL, NULL);
	expect(200, "GET", url_of("/v1/results/%s?wait=1", STATE), SECRET, NULL, NULL);
}

static void test_declined(void **state)
{
	char code[16];
	struct reply r;

	(void)state;
	create_ok(code, STATE);
	request(
	    &r, "GET",
	    url_of("/callback?state=%s&error=access_denied&error_description=Zebra+quokka", STATE),
	    NULL, NULL, NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "Access not given"));
	assert_non_null(strstr(r.body, "Tesla"));
	assert_null(strstr(r.body, "Zebra"));
	reply_free(&r);
	expect_text(200, "GET", url_of("/v1/results/%s", STATE), SECRET,
	            "\"error\":\"access_denied\"");
	/* A reload shows the same answer, refused. */
	expect_text(409, "GET", url_of("/callback?state=%s&error=access_denied", STATE), NULL,
	            "Access not given");
}

static void test_error_page_escapes_vendor(void **state)
{
	char code[16];
	struct reply r;

	(void)state;
	assert_int_equal(create_link(code, STATE, "https://api.derapi.com/join/flows/F/authorize",
	                             ",\"vendor\":\"<b>Acme & Co</b>\""),
	                 201);
	request(&r, "GET", url_of("/callback?state=%s&error=server_error", STATE), NULL, NULL,
	        NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "Something went wrong"));
	assert_non_null(strstr(r.body, "&lt;b&gt;Acme &amp; Co&lt;/b&gt;"));
	assert_null(strstr(r.body, "<b>Acme"));
	reply_free(&r);
}

static void test_vendor_from_target_host(void **state)
{
	char code[16];
	struct reply r;

	(void)state;
	assert_int_equal(
	    create_link(code, STATE, "https://api.enphaseenergy.com/oauth/authorize?a=b", NULL),
	    201);
	request(&r, "GET", url_of("/callback?state=%s&code=x", STATE), NULL, NULL, NULL);
	assert_non_null(strstr(r.body, "Enphase"));
	reply_free(&r);
	/* Unknown vendor: the sentence without a name. Derapi's pages are for another vendor. */
	assert_int_equal(create_link(code, STATE "2", "http://127.0.0.1:9/authorize", NULL), 201);
	request(&r, "GET", url_of("/callback?state=%s2&code=x", STATE), NULL, NULL, NULL);
	assert_non_null(strstr(r.body, "access to your  account"));
	reply_free(&r);
	assert_int_equal(
	    create_link(code, STATE "3", "https://api.derapi.com/join/flows/F/authorize", NULL),
	    201);
	request(&r, "GET", url_of("/callback?state=%s3", STATE), NULL, NULL, NULL);
	assert_non_null(strstr(r.body, "access to your  account"));
	reply_free(&r);
}

static void test_unknown_code(void **state)
{
	struct reply r;

	(void)state;
	request(&r, "GET", url_of("/s/ZZZZZZZ"), NULL, NULL, NULL);
	assert_int_equal(r.status, 404);
	assert_true(has_header(&r, "\r\nContent-Type: text/html; charset=utf-8\r\n"));
	assert_true(has_header(&r, "\r\nContent-Security-Policy: default-src 'none'"));
	assert_non_null(strstr(r.body, "This link does not work"));
	reply_free(&r);
	expect(404, "GET", url_of("/s/AB"), NULL, NULL, NULL);
	expect(404, "HEAD", url_of("/s/ZZZZZZZ"), NULL, NULL, NULL);
	expect(404, "GET", url_of("/"), NULL, NULL, NULL);
	expect(404, "GET", url_of("/v1/nothing"), SECRET, NULL, NULL);
	expect(405, "DELETE", url_of("/v1/links"), SECRET, NULL, NULL);
}

static void test_replayed_callback(void **state)
{
	char code[16];
	struct reply r;

	(void)state;
	create_ok(code, STATE);
	expect(200, "GET", url_of("/callback?state=%s&code=FIRST", STATE), NULL, NULL, NULL);
	expect_text(409, "GET", url_of("/callback?state=%s&code=SECOND", STATE), NULL,
	            "Already done");
	request(&r, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"code\":\"FIRST\""));
	assert_null(strstr(r.body, "SECOND"));
	reply_free(&r);
	/* And after it was handed out. */
	expect(409, "GET", url_of("/callback?state=%s&code=THIRD", STATE), NULL, NULL, NULL);
}

static void test_bad_state(void **state)
{
	struct reply r;

	(void)state;
	expect_text(400, "GET", url_of("/callback?code=abc"), NULL, "Something went wrong");
	expect(400, "GET", url_of("/callback?state=short&code=abc"), NULL, NULL, NULL);
	request(&r, "GET", url_of("/callback?state=abcdefghijklmnop%%3Cscript%%3E&code=abc"), NULL,
	        NULL, NULL);
	assert_int_equal(r.status, 400);
	assert_null(strstr(r.body, "<script>"));
	reply_free(&r);
	expect(400, "GET", url_of("/callback?state=%s&code=%%FF%%FE", STATE), NULL, NULL, NULL);
	/* Well formed but never registered. */
	expect_text(404, "GET", url_of("/callback?state=%s&code=abc", STATE), NULL, "expired");
	expect(400, "GET", url_of("/v1/results/bad!state"), SECRET, NULL, NULL);
	expect(405, "POST", url_of("/callback?state=%s", STATE), NULL, "{}", NULL);
}

static void test_oversized_query(void **state)
{
	char code[16], *big = malloc(10241), *body = malloc(20000);
	struct enr_relay_stats st;

	(void)state;
	create_ok(code, STATE);
	memset(big, 'a', 10240);
	big[10240] = '\0';
	expect_text(414, "GET", url_of("/callback?state=%s&code=%s", STATE, big), NULL,
	            "Something went wrong");
	/* Too many parameters. */
	{
		char many[2000] = "";
		for (int i = 0; i < 40; i++)
			snprintf(many + strlen(many), sizeof(many) - strlen(many), "&p%d=1", i);
		expect(414, "GET", url_of("/callback?state=%s%s", STATE, many), NULL, NULL, NULL);
	}
	/* The link is still waiting for its real callback. */
	enr_relay_get_stats(&st, fx.relay);
	assert_int_equal(st.pending, 1);
	expect(200, "GET", url_of("/callback?state=%s&code=ok", STATE), NULL, NULL, NULL);
	/* An oversized body. */
	snprintf(body, 20000, "{\"target\":\"https://auth.tesla.com/%s\",\"state\":\"%s\"}", big,
	         STATE "2");
	expect(413, "POST", url_of("/v1/links"), SECRET, body, NULL);
	free(big);
	free(body);
}

static void test_target_not_allowed(void **state)
{
	static const char *const refused[] = {
	    "https://evil.example.com/authorize",
	    "http://auth.tesla.com/oauth2/v3/authorize",
	    "http://example.com/",
	    "javascript:alert(1)",
	    "data:text/html,hi",
	    "https://auth.tesla.com@evil.example.com/",
	    "https://evil.example.com\\\\@auth.tesla.com/",
	    "https://auth.tesla.com.evil.example.com/",
	    "https:///path",
	    "https://auth.tesla.com:99999/",
	    "//auth.tesla.com/",
	    "https://auth.tesla.com/a b",
	};
	static const char *const accepted[] = {
	    "https://auth.tesla.com/oauth2/v3/authorize",
	    "HTTPS://AUTH.TESLA.COM/x",
	    "https://www.soliscloud.com:13333/x",
	    "https://api.derapi.com/join/flows/F1/authorize?vendor=tesla&state=s",
	    "http://127.0.0.1:8099/authorize",
	    "http://localhost/x",
	    "http://[::1]:80/x",
	};
	char code[16], st[64];

	(void)state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		snprintf(st, sizeof(st), "%s%zu", STATE, i);
		if (create_link(code, st, refused[i], NULL) != 400)
			fail_msg("target %s was not refused", refused[i]);
	}
	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		snprintf(st, sizeof(st), "%s%zu", STATE, i);
		if (create_link(code, st, accepted[i], NULL) != 201)
			fail_msg("target %s was refused", accepted[i]);
	}
}

static void test_allowed_hosts_option(void **state)
{
	struct enr_relay_options opts = {0};
	struct enr_config *cfg = NULL;
	char code[16], *hosts;

	(void)state;
	hosts = enr_relay_allowed_hosts(fx.relay);
	assert_non_null(strstr(hosts, "auth.tesla.com"));
	assert_non_null(strstr(hosts, "api.derapi.com"));
	assert_non_null(strstr(hosts, "auth.derapi.com"));
	assert_non_null(strstr(hosts, "monitoringapi.solaredge.com"));
	free(hosts);
	enr_relay_free(fx.relay);

	/* A vendor URL overridden in config.ini is allowed too. */
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "authorize_url",
	                                "https://tesla-sandbox.example.net/authorize"),
	                 0);
	opts.config = cfg;
	start_relay(&opts);
	assert_int_equal(
	    create_link(code, STATE, "https://tesla-sandbox.example.net/authorize", NULL), 201);
	enr_relay_free(fx.relay);
	enr_config_free(cfg);

	/* An explicit list replaces the default. */
	memset(&opts, 0, sizeof(opts));
	opts.allowed_target_hosts = "login.example.org, Other.Example.org";
	start_relay(&opts);
	assert_int_equal(create_link(code, STATE, "https://other.example.org/a", NULL), 201);
	assert_int_equal(create_link(code, STATE "2", "https://auth.tesla.com/a", NULL), 400);
	assert_int_equal(create_link(code, STATE "3", "http://127.0.0.1:1/a", NULL), 201);
}

static void test_bearer(void **state)
{
	struct reply r;
	const char *body = "{\"target\":\"https://auth.tesla.com/\",\"state\":\"" STATE "\"}";

	(void)state;
	request(&r, "POST", url_of("/v1/links"), NULL, body, NULL);
	assert_int_equal(r.status, 401);
	assert_true(has_header(&r, "\r\nWWW-Authenticate: Bearer"));
	reply_free(&r);
	expect(401, "POST", url_of("/v1/links"), "wrong-secret-0123456789abcdef", body, NULL);
	expect(401, "POST", url_of("/v1/links"), SECRET "x", body, NULL);
	expect(401, "POST", url_of("/v1/links"), NULL, body, "Authorization: Basic " SECRET);
	expect(401, "GET", url_of("/v1/results/%s", STATE), "nope", NULL, NULL);
	expect(201, "POST", url_of("/v1/links"), SECRET, body, NULL);
}

static void test_bad_body(void **state)
{
	static const char *const bodies[] = {
	    "",
	    "not json",
	    "[1,2]",
	    "{\"target\":\"https://auth.tesla.com/\"}",
	    "{\"state\":\"" STATE "\"}",
	    "{\"target\":1,\"state\":\"" STATE "\"}",
	    "{\"target\":\"https://auth.tesla.com/\",\"state\":\"short\"}",
	    "{\"target\":\"https://auth.tesla.com/\",\"state\":\"" STATE "!\"}",
	    "{\"target\":\"https://auth.tesla.com/\",\"state\":\"" STATE "\",\"ttl\":-5}",
	    "{\"target\":\"https://auth.tesla.com/\",\"state\":\"" STATE "\",\"ttl\":\"60\"}",
	    "{\"target\":\"https://auth.tesla.com/\",\"state\":\"" STATE "\",\"vendor\":\"\"}",
	    "{\"target\":\"https://auth.tesla.com/\",\"state\":\"" STATE "\"} trailing",
	};
	struct reply r;
	char code[16];

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		request(&r, "POST", url_of("/v1/links"), SECRET, bodies[i], NULL);
		if (r.status != 400)
			fail_msg("body %s: %ld instead of 400", bodies[i], r.status);
		assert_non_null(strstr(r.body, "\"error\":\"invalid_request\""));
		reply_free(&r);
	}
	create_ok(code, STATE);
	assert_int_equal(create_link(code, STATE, "https://auth.tesla.com/", NULL), 409);
}

static void test_ttl(void **state)
{
	char code[16], expires[32];
	struct reply r;
	json_object *root;
	struct tm tm;
	time_t t;

	(void)state;
	request(&r, "POST", url_of("/v1/links"), SECRET,
	        "{\"target\":\"https://auth.tesla.com/\",\"state\":\"" STATE "\",\"ttl\":5000}",
	        NULL);
	assert_int_equal(r.status, 201);
	root = json_tokener_parse(r.body);
	t = (time_t)(fake_now + ENR_RELAY_MAX_TTL);
	gmtime_r(&t, &tm);
	strftime(expires, sizeof(expires), "%Y-%m-%dT%H:%M:%SZ", &tm);
	assert_string_equal(json_str(root, "expires_at"), expires);
	snprintf(code, sizeof(code), "%s", strstr(json_str(root, "url"), "/s/") + 3);
	json_object_put(root);
	reply_free(&r);

	advance_clock(ENR_RELAY_MAX_TTL - 1);
	expect(302, "GET", url_of("/s/%s", code), NULL, NULL, NULL);
	advance_clock(1);
	/* Its time ran out: the customer is told it expired (not that it never worked). */
	expect_text(410, "GET", url_of("/s/%s", code), NULL, "This link has expired");
	request(&r, "GET", url_of("/v1/results/%s?wait=5", STATE), SECRET, NULL, NULL);
	assert_int_equal(r.status, 404);
	assert_true(r.seconds < 3);
	reply_free(&r);
	request(&r, "GET", url_of("/callback?state=%s&code=late", STATE), NULL, NULL, NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "This link has expired"));
	assert_non_null(strstr(r.body, "Tesla"));
	reply_free(&r);
	expect(404, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);
	/* Forgotten with its tombstone, an hour later. */
	advance_clock(3600);
	expect(404, "GET", url_of("/s/%s", code), NULL, NULL, NULL);
}

/* What the wizard sends when the installer pasted the address: the client's own request. */
static long tell_taken(const char *state_taken, const char *secret)
{
	struct enr_config *cfg = NULL;
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	long status;

	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_config_set(cfg, "relay", "url", fx.base), 0);
	assert_int_equal(enr_config_set(cfg, "relay", "secret", secret), 0);
	assert_int_equal(enr_relay_taken_request(&req, cfg, state_taken), 0);
	assert_int_equal(enr_http_perform(&resp, NULL, req), 0);
	status = resp->status;
	enr_http_response_free(resp);
	enr_http_request_free(req);
	enr_config_free(cfg);
	return status;
}

static void test_pasted_code_then_visit(void **state)
{
	char code[16];
	struct poll p;
	long taken;

	(void)state;
	create_ok(code, STATE);
	assert_int_equal(tell_taken(STATE, "not-the-secret"), 401);
	poll_start(&p, STATE, 30);
	wait_for_waiters(fx.relay, 1);
	/* The installer pasted the address from the phone: the wizard took the code. */
	taken = tell_taken(STATE, SECRET);
	poll_join(&p); /* the wizard's own poll ends: nothing for it here */
	assert_int_equal(taken, 204);
	assert_int_equal(p.reply.status, 404);
	reply_free(&p.reply);
	/* The customer opens the link again: done, not the vendor's sign-in again. */
	expect_text(200, "GET", url_of("/s/%s", code), NULL, "Already done");
	expect_text(200, "GET", url_of("/s/%s", code), NULL, "Tesla");
	/* The phone's own redirect, late: done, and nothing is stored. */
	expect_text(409, "GET", url_of("/callback?state=%s&code=LATE", STATE), NULL,
	            "Already done");
	expect(404, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);
	/* Still done once the link's time ran out: never "expired". */
	advance_clock(601);
	expect_text(200, "GET", url_of("/s/%s", code), NULL, "Already done");
	expect_text(409, "GET", url_of("/callback?state=%s&code=LATE", STATE), NULL,
	            "Already done");
	assert_int_equal(tell_taken(STATE, SECRET), 204); /* said twice: the same */
	assert_int_equal(tell_taken(STATE "unknown", SECRET), 404);
	expect(405, "PUT", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);

	/* Pasted after the link expired: the enrollment is done all the same. */
	assert_int_equal(create_link(code, STATE "2", "https://auth.tesla.com/", ",\"ttl\":60"),
	                 201);
	advance_clock(61);
	expect_text(200, "GET", url_of("/callback?state=%s2&code=x", STATE), NULL, "expired");
	assert_int_equal(tell_taken(STATE "2", SECRET), 204);
	expect_text(409, "GET", url_of("/callback?state=%s2&code=x", STATE), NULL, "Already done");

	/* The phone's redirect came, but the installer pasted before the wizard
	 * collected it: the result is dropped, a reload says done. */
	create_ok(code, STATE "3");
	expect(200, "GET", url_of("/callback?state=%s3&code=SECRET-C", STATE), NULL, NULL, NULL);
	assert_int_equal(tell_taken(STATE "3", SECRET), 204);
	expect(404, "GET", url_of("/v1/results/%s3", STATE), SECRET, NULL, NULL);
	expect_text(409, "GET", url_of("/callback?state=%s3&code=x", STATE), NULL, "Already done");
	expect_text(404, "GET", url_of("/s/%s", code), NULL, "This link does not work");
}

static void test_expiry_ends_waiting_poll(void **state)
{
	char code[16];
	struct poll p;

	(void)state;
	assert_int_equal(create_link(code, STATE, "https://auth.tesla.com/", ",\"ttl\":60"), 201);
	poll_start(&p, STATE, 30);
	wait_for_waiters(fx.relay, 1);
	advance_clock(61);
	poll_join(&p);
	assert_int_equal(p.reply.status, 404);
	assert_true(p.reply.seconds < 5);
	reply_free(&p.reply);
}

static void test_bogus_polls_bounded(void **state)
{
	struct enr_relay_stats before, after;
	struct reply r;
	char code[16];

	(void)state;
	create_ok(code, STATE);
	enr_relay_get_stats(&before, fx.relay);
	for (int i = 0; i < 10000; i++) {
		request(&r, "GET", url_of("/v1/results/bogus%016d?wait=25", i), SECRET, NULL, NULL);
		if (r.status != 404)
			fail_msg("poll %d: %ld", i, r.status);
		reply_free(&r);
	}
	enr_relay_get_stats(&after, fx.relay);
	assert_int_equal(after.records, before.records);
	assert_int_equal(after.records, 1);
	assert_int_equal(after.waiters, 0);
	assert_int_equal(after.requests, 0);
	assert_int_equal(after.rate_slots, before.rate_slots);
}

static void test_max_records(void **state)
{
	struct enr_relay_options opts = {.max_records = 50};
	struct enr_relay_stats st;
	char codes[60][16], st_name[64];
	struct poll p;

	(void)state;
	enr_relay_free(fx.relay);
	start_relay(&opts);
	for (int i = 0; i < 50; i++) {
		snprintf(st_name, sizeof(st_name), "%s%03d", STATE, i);
		create_ok(codes[i], st_name);
	}
	/* A poll on the oldest is answered when it is dropped. */
	snprintf(st_name, sizeof(st_name), "%s%03d", STATE, 0);
	poll_start(&p, st_name, 30);
	wait_for_waiters(fx.relay, 1);
	for (int i = 50; i < 60; i++) {
		snprintf(st_name, sizeof(st_name), "%s%03d", STATE, i);
		create_ok(codes[i], st_name);
		enr_relay_get_stats(&st, fx.relay);
		assert_int_equal(st.records, 50);
	}
	poll_join(&p);
	assert_int_equal(p.reply.status, 404);
	reply_free(&p.reply);
	enr_relay_get_stats(&st, fx.relay);
	assert_int_equal(st.records, 50);
	assert_int_equal(st.pending, 50);
	assert_int_equal(st.dropped, 10);
	expect(404, "GET", url_of("/s/%s", codes[9]), NULL, NULL, NULL);
	expect(302, "GET", url_of("/s/%s", codes[10]), NULL, NULL, NULL);
	expect(302, "GET", url_of("/s/%s", codes[59]), NULL, NULL, NULL);
}

static void test_rate_limit(void **state)
{
	struct enr_relay_options opts = {.rate_burst = 3, .rate_per_second = 0.01};
	struct reply r;

	(void)state;
	enr_relay_free(fx.relay);
	start_relay(&opts);
	for (int i = 0; i < 3; i++) {
		expect(404, "GET", url_of("/s/ZZZZZZZ"), NULL, NULL, NULL);
	}
	request(&r, "GET", url_of("/s/ZZZZZZZ"), NULL, NULL, NULL);
	assert_int_equal(r.status, 429);
	assert_true(has_header(&r, "\r\nRetry-After: "));
	reply_free(&r);
	/* X-Forwarded-For is not believed from an untrusted peer. */
	expect(429, "GET", url_of("/callback?state=%s", STATE), NULL, NULL,
	       "X-Forwarded-For: 203.0.113.9");
	/* The authenticated API is not limited; failed attempts are. */
	expect(404, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);
	expect(429, "GET", url_of("/v1/results/%s", STATE), "wrong", NULL, NULL);

	enr_relay_free(fx.relay);
	opts.trusted_proxy = "127.0.0.1";
	start_relay(&opts);
	for (int i = 0; i < 3; i++) {
		expect(404, "GET", url_of("/s/ZZZZZZZ"), NULL, NULL,
		       "X-Forwarded-For: 198.51.100.7, 203.0.113.1");
	}
	request(&r, "GET", url_of("/s/ZZZZZZZ"), NULL, NULL,
	        "X-Forwarded-For: 198.51.100.99, 203.0.113.1");
	assert_int_equal(r.status, 429); /* the last entry is the proxy's word */
	reply_free(&r);
	expect(404, "GET", url_of("/s/ZZZZZZZ"), NULL, NULL, "X-Forwarded-For: 203.0.113.2");
}

static void test_logs_hold_no_secrets(void **state)
{
	char log_path[512], code[16], *log;
	struct reply r;

	(void)state;
	snprintf(log_path, sizeof(log_path), "%s/relay.log", getenv("HOME"));
	assert_int_equal(enr_log_open(log_path), 0);
	enr_log_set_level(ENR_LOG_DEBUG);
	create_ok(code, STATE);
	request(&r, "GET", url_of("/s/%s", code), NULL, NULL, NULL);
	reply_free(&r);
	request(&r, "GET", url_of("/callback?state=%s&code=AUTHCODE-SECRET-9", STATE), NULL, NULL,
	        NULL);
	reply_free(&r);
	request(&r, "GET", url_of("/callback?state=%s&code=AUTHCODE-SECRET-9", STATE), NULL, NULL,
	        NULL);
	reply_free(&r);
	request(&r, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);
	reply_free(&r);
	request(&r, "GET", url_of("/v1/results/%s", STATE), "wrong-secret", NULL, NULL);
	reply_free(&r);
	enr_log_close();
	enr_log_set_level(ENR_LOG_INFO);
	log = test_read_file(log_path);
	assert_non_null(log);
	assert_non_null(strstr(log, "stateA..."));
	assert_non_null(strstr(log, "handed out"));
	assert_null(strstr(log, "AUTHCODE"));
	assert_null(strstr(log, code));
	assert_null(strstr(log, SECRET));
	assert_null(strstr(log, "wrong-secret"));
	assert_null(strstr(log, "stateAB"));
	free(log);
}

static void test_quiesce_answers_polls(void **state)
{
	char code[16];
	struct poll p;

	(void)state;
	create_ok(code, STATE);
	poll_start(&p, STATE, 30);
	wait_for_waiters(fx.relay, 1);
	enr_relay_free(fx.relay);
	fx.relay = NULL;
	poll_join(&p);
	assert_int_equal(p.reply.status, 204);
	assert_true(p.reply.seconds < 5);
	reply_free(&p.reply);
}

static void test_options(void **state)
{
	struct enr_relay_options opts = {.secret = "short"};
	struct enr_relay *relay = NULL;

	(void)state;
	assert_int_equal(enr_relay_new(&relay, &opts), ENR_E_CONFIG);
	assert_null(relay);
	opts.secret = SECRET;
	opts.trusted_proxy = "proxy.example.com";
	assert_int_equal(enr_relay_new(&relay, &opts), ENR_E_CONFIG);
	opts.trusted_proxy = NULL;
	opts.public_url = "ftp://relay.example.com";
	assert_int_equal(enr_relay_new(&relay, &opts), ENR_E_CONFIG);
	opts.public_url = "https://relay.example.com/";
	opts.pages_dir = "/nonexistent/relay-pages";
	assert_int_equal(enr_relay_new(&relay, &opts), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "success.html"));
	opts.pages_dir = NULL;
	opts.allowed_target_hosts = "good.example.com,bad/host";
	assert_int_equal(enr_relay_new(&relay, &opts), ENR_E_CONFIG);
	opts.allowed_target_hosts = NULL;
	assert_int_equal(enr_relay_new(&relay, &opts), 0);
	assert_string_equal(enr_relay_public_url(relay), "https://relay.example.com");
	assert_int_equal(enr_relay_start(relay, "nonsense"), ENR_E_USAGE);
	assert_int_equal(enr_relay_start(relay, "127.0.0.1:99999"), ENR_E_USAGE);
	assert_int_equal(enr_relay_start(relay, "[::1]:0"), 0);
	assert_true(enr_relay_port(relay) > 0);
	enr_relay_free(relay);
}

/* ---- mounted in another daemon ---- */

struct host {
	struct enr_relay *relay;
};

static enum MHD_Result host_handler(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
	struct host *h = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	(void)version;
	if (strncmp(url, "/relay/", 7) == 0 || strcmp(url, "/relay") == 0)
		return enr_relay_handle(h->relay, c, url + 6, method, upload_data, upload_data_size,
		                        con_cls)
		           ? MHD_YES
		           : MHD_NO;
	resp = MHD_create_response_from_buffer(5, (void *)"hello", MHD_RESPMEM_PERSISTENT);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	ret = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- the Join page's proxy to Derapi ---- */

/* A GET without the relay's header checks (the sandbox's pages); where it
 * redirects to in `location` (malloc'd; NULL: not asked). */
static long plain_get_to(const char *url, char **location)
{
	CURL *c = curl_easy_init();
	long status = 0;
	char *to = NULL;

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append);
	{
		struct buffer b = {0};
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
		assert_int_equal(curl_easy_perform(c), CURLE_OK);
		free(b.data);
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &to);
	if (location)
		*location = to ? strdup(to) : NULL;
	curl_easy_cleanup(c);
	return status;
}

static long plain_get(const char *url)
{
	return plain_get_to(url, NULL);
}

struct join_world {
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	const struct enr_vendor *derapi;
	char *token; /* the company's Derapi token, as the relay got it too */
};

/* The sandbox as Derapi, and a relay whose config has its [derapi] credentials. */
static void join_world_start(struct join_world *w)
{
	struct enr_relay_options opts = {0};

	memset(w, 0, sizeof(*w));
	assert_int_equal(enr_sandbox_start(&w->sb, NULL), 0);
	assert_int_equal(enr_sandbox_config(&w->cfg, w->sb), 0);
	enr_relay_free(fx.relay);
	opts.config = w->cfg;
	start_relay(&opts);
	w->derapi = enr_catalog_find(fx.catalog, "derapi");
	assert_int_equal(enr_join_app_token(&w->token, w->derapi, w->cfg), 0);
}

static void join_world_stop(struct join_world *w)
{
	enr_relay_free(fx.relay);
	fx.relay = NULL;
	enr_config_free_secret(w->token);
	enr_config_free(w->cfg);
	enr_sandbox_stop(w->sb);
}

/* A Join session for `vendor` at the sandbox's Derapi; its id. */
static char *join_session(struct join_world *w, const char *vendor)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *id = NULL;

	assert_int_equal(enr_join_session_request(&req, w->derapi, w->cfg, w->token,
	                                          enr_catalog_find(fx.catalog, vendor)),
	                 0);
	assert_int_equal(enr_http_perform(&resp, w->cfg, req), 0);
	assert_int_equal(enr_join_session_response(&id, resp), 0);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	return id;
}

/* A proxied call: its status; its body must hold neither the company's token nor `secret`. */
static long proxied(struct join_world *w, struct reply *r, const char *path, const char *secret)
{
	request(r, "GET", url_of("/join/api%s", path), "widget-placeholder", NULL, NULL);
	assert_null(strstr(r->body, w->token));
	if (secret)
		assert_null(strstr(r->body, secret));
	return r->status;
}

/* The kept fetch-token answer the laptop collects for STATE. */
static struct enr_join_credentials *collect_kept(const char *state)
{
	struct enr_join_credentials *c = NULL;
	json_object *root, *kept;
	struct reply r;

	request(&r, "GET", url_of("/v1/results/%s", state), SECRET, NULL, NULL);
	assert_int_equal(r.status, 200);
	root = json_tokener_parse(r.body);
	assert_true(json_object_object_get_ex(root, "join_fetch_token", &kept));
	assert_int_equal(enr_join_fetch_parse(&c, json_object_get_string(kept)), 0);
	json_object_put(root);
	reply_free(&r);
	return c;
}

static void test_join_proxy(void **state)
{
	struct join_world w;
	struct enr_join_credentials *c = NULL;
	char code[16], *session, *path = NULL, *target = NULL, *extra = NULL, *url = NULL;
	json_object *list;
	struct reply r;

	(void)state;
	join_world_start(&w);
	session = join_session(&w, "tesla");
	assert_true(asprintf(&target, "%s/join?session=%s&state=%s", fx.base, session, STATE) > 0);
	/* Before the session is registered, nothing passes. */
	assert_true(asprintf(&path, "/join/session/%s/vendors", session) > 0);
	assert_int_equal(proxied(&w, &r, path, NULL), 404);
	assert_non_null(strstr(r.body, "not registered"));
	reply_free(&r);
	assert_true(asprintf(&extra, ",\"vendor\":\"tesla\",\"join_session\":\"%s\"", session) > 0);
	assert_int_equal(create_link(code, STATE, target, extra), 201);

	/* The vendor list: Derapi's bare array, the token added here (Derapi
	 * refuses the call without it). */
	assert_int_equal(proxied(&w, &r, path, NULL), 200);
	list = json_tokener_parse(r.body);
	assert_true(json_object_is_type(list, json_type_array));
	assert_int_equal(json_object_array_length(list), 1);
	json_object_put(list);
	reply_free(&r);
	assert_true(asprintf(&url, "%s/derapi%s", enr_sandbox_url(w.sb), path) > 0);
	assert_int_equal(plain_get(url), 401);
	free(url);

	/* Only that session's three calls pass. */
	expect(404, "GET", url_of("/join/api/join/session/%s/authorize", session), NULL, NULL,
	       NULL);
	expect(404, "GET", url_of("/join/api/join/session/sess_other/vendors"), NULL, NULL, NULL);
	expect(404, "GET", url_of("/join/api/join/flows/x"), NULL, NULL, NULL);
	expect(404, "GET", url_of("/join/api/sites"), NULL, NULL, NULL);
	expect(404, "GET", url_of("/join/api/join/session/../oauth2/token"), NULL, NULL, NULL);
	expect(405, "POST", url_of("/join/api/join/session/start"), NULL, "{}", NULL);

	/* fetch-token before the customer approved: no access_token for the widget. */
	free(path);
	assert_true(asprintf(&path, "/join/session/%s/fetch-token", session) > 0);
	assert_int_equal(proxied(&w, &r, path, NULL), 409);
	assert_null(strstr(r.body, "access_token"));
	reply_free(&r);
	expect(204, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);

	/* Approved: the browser gets a placeholder, the laptop Derapi's answer. */
	assert_true(asprintf(&url,
	                     "%s/derapi/join/session/%s/authorize?vendor=tesla"
	                     "&sandbox_auto=approve",
	                     enr_sandbox_url(w.sb), session) > 0);
	assert_int_equal(plain_get(url), 200);
	assert_int_equal(proxied(&w, &r, path, NULL), 200);
	assert_string_equal(r.body, "{\"access_token\":\"kept-by-the-relay\"}");
	reply_free(&r);
	c = collect_kept(STATE);
	assert_non_null(c->tokens);
	assert_string_not_equal(c->tokens->access_token, "kept-by-the-relay");
	assert_non_null(c->tokens->refresh_token);
	/* The page's report afterwards shows the success page; the session is closed. */
	expect_text(200, "GET", url_of("/callback?state=%s", STATE), NULL, "");
	assert_int_equal(proxied(&w, &r, path, c->tokens->access_token), 404);
	reply_free(&r);

	enr_join_credentials_free(c);
	free(url);
	free(extra);
	free(target);
	free(path);
	free(session);
	join_world_stop(&w);
}

static void test_join_proxy_keys(void **state)
{
	struct join_world w;
	struct enr_join_credentials *c = NULL;
	const char *secret;
	char code[16], *session, *path = NULL, *target = NULL, *extra = NULL;
	struct reply r;

	(void)state;
	join_world_start(&w);
	secret = enr_config_get(w.cfg, "vendor.solis", "key_secret");
	session = join_session(&w, "solis");
	assert_true(asprintf(&target, "%s/join?session=%s&state=%s", fx.base, session, STATE) > 0);
	assert_true(asprintf(&extra, ",\"join_session\":\"%s\"", session) > 0);
	assert_int_equal(create_link(code, STATE, target, extra), 201);
	/* auth-granted needs the session as its state. */
	expect(404, "GET", url_of("/join/api/join/solis/auth-granted?state=sess_x&code=a:b"), NULL,
	       NULL, NULL);
	expect(404, "GET", url_of("/join/api/join/solis/auth-granted?state=%s", session), NULL,
	       NULL, NULL);
	/* A wrong key: the widget's failure ("failed"); nothing for the laptop. */
	assert_true(
	    asprintf(&path, "/join/solis/auth-granted?state=%s&code=demo-777:wrong", session) > 0);
	assert_int_equal(proxied(&w, &r, path, NULL), 200);
	assert_false(enr_join_auth_granted(r.status, r.body));
	reply_free(&r);
	expect(204, "GET", url_of("/v1/results/%s", STATE), SECRET, NULL, NULL);
	/* The right keys: granted, and what Derapi holds goes to the laptop only. */
	free(path);
	assert_true(asprintf(&path, "/join/solis/auth-granted?state=%s&code=demo-777:%s", session,
	                     secret) > 0);
	assert_int_equal(proxied(&w, &r, path, NULL), 200);
	assert_true(enr_join_auth_granted(r.status, r.body));
	reply_free(&r);
	c = collect_kept(STATE);
	assert_string_equal(c->key_id, "demo-777");
	assert_string_equal(c->key_secret, secret);
	enr_join_credentials_free(c);
	free(extra);
	free(target);
	free(path);
	free(session);
	join_world_stop(&w);
}

/* Without [derapi] credentials the relay has no proxy. */
static void test_join_proxy_off(void **state)
{
	(void)state;
	expect_text(404, "GET", url_of("/join/api/join/session/sess_1/vendors"), NULL,
	            "no Derapi credentials");
}

static void host_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
	struct host *h = cls;

	(void)c;
	(void)toe;
	enr_relay_request_done(h->relay, con_cls);
}

static void test_mounted(void **state)
{
	struct enr_relay_options opts = {.secret = SECRET};
	struct sockaddr_in loopback = {.sin_family = AF_INET};
	struct host h = {0};
	struct MHD_Daemon *d;
	char code[16], root[64];
	struct reply r;
	struct poll p, p2;

	(void)state;
	enr_relay_free(fx.relay);
	fx.relay = NULL;
	loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
	                         MHD_ALLOW_SUSPEND_RESUME,
	                     0, NULL, NULL, host_handler, &h, MHD_OPTION_NOTIFY_COMPLETED,
	                     host_completed, &h, MHD_OPTION_SOCK_ADDR, &loopback, MHD_OPTION_END);
	assert_non_null(d);
	snprintf(root, sizeof(root), "http://127.0.0.1:%u",
	         MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
	opts.catalog = fx.catalog;
	assert_int_equal(enr_relay_new(&h.relay, &opts), 0);
	snprintf(fx.base, sizeof(fx.base), "%s/relay", root);
	assert_int_equal(enr_relay_set_public_url(h.relay, fx.base), 0);
	fx.relay = h.relay;

	create_ok(code, STATE);
	expect(302, "GET", url_of("/s/%s", code), NULL, NULL, NULL);
	poll_start(&p, STATE, 20);
	wait_for_waiters(h.relay, 1);
	expect(200, "GET", url_of("/callback?state=%s&code=M1", STATE), NULL, NULL, NULL);
	poll_join(&p);
	assert_int_equal(p.reply.status, 200);
	assert_non_null(strstr(p.reply.body, "\"code\":\"M1\""));
	reply_free(&p.reply);
	expect(404, "GET", url_of("%s", ""), NULL, NULL, NULL);
	/* The host's own routes are its own. */
	{
		char other[160];
		snprintf(other, sizeof(other), "%s/other", root);
		request(&r, "GET", other, NULL, NULL, NULL);
		assert_string_equal(r.body, "hello");
		reply_free(&r);
	}

	/* Shutdown with a poll waiting: quiesce, stop the daemon, free. */
	create_ok(code, STATE "2");
	poll_start(&p2, STATE "2", 30);
	wait_for_waiters(h.relay, 1);
	enr_relay_quiesce(h.relay);
	MHD_stop_daemon(d);
	enr_relay_free(h.relay);
	fx.relay = NULL;
	poll_join(&p2);
	assert_int_equal(p2.reply.status, 204);
	reply_free(&p2.reply);
}

/* ---- the program ---- */

/* One turn of a session's loop (a quarter of a second at most). */
static void step(struct enr_enroll *e)
{
	struct pollfd fds[32];
	size_t n = enr_enroll_poll_fds(e, fds, 32);

	poll(fds, n > 32 ? 32 : n, 250);
	enr_enroll_process(e);
}

/* Turns of a session's loop while it is in `st` (a minute at most). */
static void drive_while(struct enr_enroll *e, enum enr_enroll_state st)
{
	for (int i = 0; i < 240 && enr_enroll_state(e) == st; i++)
		step(e);
}

/* After the customer's answer: the session reaches the sites. */
static void expect_sites(struct enr_enroll *e)
{
	drive_while(e, ENR_ENROLL_LINK);
	drive_while(e, ENR_ENROLL_WAIT);
	if (enr_enroll_state(e) != ENR_ENROLL_SITES && enr_enroll_state(e) != ENR_ENROLL_DONE)
		fail_msg("state %d: %s", enr_enroll_state(e), enr_enroll_message(e));
}

/* The same through the wizard's session: the sandbox's relay, a pasted address. */
/* A sandbox of its own and an enrollment with it, waiting at its relay link. */
static struct enr_enroll *sandbox_session_as(struct enr_sandbox **sb, struct enr_config **cfg,
                                             struct enr_enroll_options *opts,
                                             void (*configure)(struct enr_config *cfg))
{
	struct enr_enroll *e = NULL;

	assert_int_equal(enr_sandbox_start(sb, NULL), 0);
	assert_int_equal(enr_sandbox_config(cfg, *sb), 0);
	if (configure)
		configure(*cfg);
	opts->cfg = *cfg;
	assert_int_equal(enr_enroll_new(&e, opts), 0);
	drive_while(e, ENR_ENROLL_WAIT);
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_LINK);
	return e;
}

static struct enr_enroll *sandbox_session(struct enr_sandbox **sb, struct enr_config **cfg,
                                          struct enr_enroll_options *opts)
{
	return sandbox_session_as(sb, cfg, opts, NULL);
}

/* The relay's link, answered another way, says it was used: the session told
 * the relay on the way (nobody waits for that answer). */
static void expect_link_used(struct enr_enroll *e, const char *link)
{
	bool done = false;
	struct reply r;

	for (int i = 0; i < 40 && !done; i++) {
		request(&r, "GET", link, NULL, NULL, NULL);
		done = r.status == 200 && strstr(r.body, "Already done");
		reply_free(&r);
		if (!done)
			step(e);
	}
	assert_true(done);
}

static void test_pasted_address_through_enroll(void **state)
{
	struct enr_enroll_options opts = {
	    .catalog = fx.catalog, .vendor = "tesla", .method = "oauth", .customer = "Pat Paste"};
	struct enr_sandbox *sb = NULL;
	struct enr_config *cfg = NULL;
	struct enr_enroll *e = NULL;
	char *authorize = NULL, *approved = NULL, *callback = NULL, link[512];

	(void)state;
	e = sandbox_session(&sb, &cfg, &opts);
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_RELAY);
	snprintf(link, sizeof(link), "%s", enr_enroll_link(e));
	/* The phone approves; its redirect never reaches the relay. */
	assert_int_equal(plain_get_to(link, &authorize), 302);
	assert_true(asprintf(&approved, "%s&sandbox_auto=approve", authorize) > 0);
	assert_int_equal(plain_get_to(approved, &callback), 302);
	assert_non_null(strstr(callback, "/relay/callback?"));
	/* The installer pastes the address from the phone's screen. */
	assert_int_equal(enr_enroll_submit_code(e, callback), 0);
	drive_while(e, ENR_ENROLL_WAIT);
	assert_int_equal(enr_enroll_state(e), ENR_ENROLL_SITES);
	/* The wizard told the relay on the way (nobody waits for that answer). */
	expect_link_used(e, link);
	expect_text(409, "GET", callback, NULL, "Already done");

	enr_enroll_free(e);
	free(authorize);
	free(approved);
	free(callback);
	enr_config_free(cfg);
	enr_sandbox_stop(sb);
}

/* One lifetime: registering the same link again while it works renews it in
 * place (the same short link, a later end); nobody else can. */
static void test_link_renewed_in_place(void **state)
{
	static const char target[] = "https://auth.tesla.com/oauth2/v3/authorize?x=1";
	char code[16], again[16], expires[32], body[512];
	struct tm tm;
	time_t t;
	struct reply r;

	(void)state;
	assert_int_equal(create_link(code, STATE, target, ",\"ttl\":60"), 201);
	advance_clock(50);
	assert_int_equal(create_link(again, STATE, target, ",\"ttl\":60"), 201);
	assert_string_equal(again, code);
	/* The answer says the new end. */
	snprintf(body, sizeof(body), "{\"target\":\"%s\",\"state\":\"%s\",\"ttl\":60}", target,
	         STATE);
	request(&r, "POST", url_of("/v1/links"), SECRET, body, NULL);
	assert_int_equal(r.status, 201);
	t = (time_t)(fake_now + 60);
	gmtime_r(&t, &tm);
	strftime(expires, sizeof(expires), "%Y-%m-%dT%H:%M:%SZ", &tm);
	assert_non_null(strstr(r.body, expires));
	reply_free(&r);
	/* Past the first end, the link still takes the customer to the vendor. */
	advance_clock(30);
	expect(302, "GET", url_of("/s/%s", code), NULL, NULL, NULL);
	/* Without the secret nobody renews, and another target is another sign-in's. */
	expect(401, "POST", url_of("/v1/links"), NULL, body, NULL);
	expect(401, "POST", url_of("/v1/links"), "wrong-secret", body, NULL);
	assert_int_equal(create_link(again, STATE, "https://auth.tesla.com/other", ",\"ttl\":60"),
	                 409);
	/* Past the renewed end: the link is over, and says so; it is not renewed. */
	advance_clock(31);
	expect_text(410, "GET", url_of("/s/%s", code), NULL, "This link has expired");
	assert_int_equal(create_link(again, STATE, target, ",\"ttl\":60"), 409);
	expect_text(200, "GET", url_of("/callback?state=%s&code=late", STATE), NULL,
	            "This link has expired");
}

/* An enrollment's relay link lasts as long as the customer has (here 20
 * minutes, more than the 10 a link used to get). */
static void test_enroll_link_lives_as_long_as_the_session(void **state)
{
	struct enr_enroll_options opts = {.catalog = fx.catalog,
	                                  .vendor = "tesla",
	                                  .method = "oauth",
	                                  .customer = "Lena Long",
	                                  .timeout_s = 20 * 60};
	struct enr_sandbox *sb = NULL;
	struct enr_config *cfg = NULL;
	struct enr_enroll *e = NULL;
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	const char *authorize, *st;
	char *url = NULL, state_buf[128];
	long long expires_at = 0, now;

	(void)state;
	e = sandbox_session(&sb, &cfg, &opts);
	now = (long long)time(NULL);
	/* Asking again with a ttl of 1 never shortens a link: it answers its end. */
	authorize = enr_enroll_authorize_url(e);
	st = strstr(authorize, "state=");
	assert_non_null(st);
	snprintf(state_buf, sizeof(state_buf), "%.*s", (int)strcspn(st + 6, "&"), st + 6);
	assert_int_equal(enr_relay_link_request(&req, cfg, authorize, state_buf, 1, "Tesla"), 0);
	assert_int_equal(enr_http_perform(&resp, NULL, req), 0);
	assert_int_equal(enr_relay_link_response(&url, &expires_at, resp), 0);
	assert_string_equal(url, enr_enroll_link(e));
	if (expires_at < now + 20 * 60 - 30 || expires_at > now + 20 * 60 + 30)
		fail_msg("the link ends in %lld s, the session in %d s", expires_at - now, 20 * 60);
	free(url);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	enr_enroll_free(e);
	enr_config_free(cfg);
	enr_sandbox_stop(sb);
}

/* A relay that gives links 4 seconds (its cap), a sandbox, and an enrollment
 * waiting at its short link through 9 seconds, the same link all along. */
struct capped {
	struct enr_relay *relay;
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	struct enr_enroll *e;
	char base[128], callback[200], link[512];
};

static void capped_start(struct capped *c, struct enr_enroll_options *opts,
                         const char *redirect_section)
{
	struct enr_relay_options ropts = {.secret = SECRET, .max_ttl = 4, .catalog = fx.catalog};
	time_t until;

	memset(c, 0, sizeof(*c));
	assert_int_equal(enr_relay_new(&c->relay, &ropts), 0);
	assert_int_equal(enr_relay_start(c->relay, "127.0.0.1:0"), 0);
	snprintf(c->base, sizeof(c->base), "http://127.0.0.1:%u", enr_relay_port(c->relay));
	snprintf(c->callback, sizeof(c->callback), "%s/callback", c->base);
	assert_int_equal(enr_sandbox_start(&c->sb, NULL), 0);
	assert_int_equal(enr_sandbox_config(&c->cfg, c->sb), 0);
	assert_int_equal(enr_config_set(c->cfg, "relay", "url", c->base), 0);
	assert_int_equal(enr_config_set(c->cfg, "relay", "secret", SECRET), 0);
	if (redirect_section)
		assert_int_equal(
		    enr_config_set(c->cfg, redirect_section, "redirect_uri", c->callback), 0);
	opts->cfg = c->cfg;
	opts->timeout_s = 60;
	assert_int_equal(enr_enroll_new(&c->e, opts), 0);
	drive_while(c->e, ENR_ENROLL_WAIT);
	assert_int_equal(enr_enroll_state(c->e), ENR_ENROLL_LINK);
	snprintf(c->link, sizeof(c->link), "%s", enr_enroll_link(c->e));
	assert_int_equal(strncmp(c->link, c->base, strlen(c->base)), 0);
	/* More than twice the cap passes while the session runs. */
	until = time(NULL) + 9;
	while (time(NULL) < until && enr_enroll_state(c->e) == ENR_ENROLL_LINK)
		step(c->e);
	assert_int_equal(enr_enroll_state(c->e), ENR_ENROLL_LINK);
	assert_string_equal(enr_enroll_link(c->e), c->link);
}

/* After the customer's answer: the enrollment reached its sites. */
static void capped_finish(struct capped *c)
{
	expect_sites(c->e);
	enr_enroll_free(c->e);
	enr_config_free(c->cfg);
	enr_sandbox_stop(c->sb);
	enr_relay_free(c->relay);
}

/* Tesla through the capped relay: the enrollment renews the same short link
 * in place until the customer approves. */
static void test_enrollment_outlives_a_short_relay_cap(void **state)
{
	struct enr_enroll_options opts = {
	    .catalog = fx.catalog, .vendor = "tesla", .method = "oauth", .customer = "Cora Cap"};
	struct capped c;
	char *authorize = NULL, *approved = NULL, *back = NULL;

	(void)state;
	capped_start(&c, &opts, "vendor.tesla");
	/* The same short link still takes the customer to Tesla; they approve. */
	assert_int_equal(plain_get_to(c.link, &authorize), 302);
	assert_true(asprintf(&approved, "%s&sandbox_auto=approve", authorize) > 0);
	assert_int_equal(plain_get_to(approved, &back), 302);
	assert_non_null(strstr(back, c.callback));
	assert_int_equal(plain_get_to(back, NULL), 200); /* the phone reaches the relay */
	capped_finish(&c);
	free(authorize);
	free(approved);
	free(back);
}

/* The code the Enphase code page at `location` shows, as the customer reads it. */
static char *code_on_page(const char *location)
{
	CURL *c = curl_easy_init();
	struct buffer b = {0};
	const char *start;
	long status = 0;
	char *code;

	curl_easy_setopt(c, CURLOPT_URL, location);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	assert_int_equal(status, 200);
	assert_non_null(b.data);
	start = strstr(b.data, "id=\"code\">");
	assert_non_null(start);
	start += strlen("id=\"code\">");
	code = strndup(start, strcspn(start, "<"));
	free(b.data);
	return code;
}

/* The customer opens `link` and approves: where the vendor sends the phone. */
static char *approve_from(const char *link)
{
	char *authorize = NULL, *approved = NULL, *page = NULL;

	assert_int_equal(plain_get_to(link, &authorize), 302);
	assert_non_null(authorize);
	assert_true(asprintf(&approved, "%s&sandbox_auto=approve", authorize) > 0);
	assert_int_equal(plain_get_to(approved, &page), 302);
	assert_non_null(page);
	free(authorize);
	free(approved);
	return page;
}

/* The same, landing on Enphase's code page. */
static char *approve_to_code_page(const char *link)
{
	char *page = approve_from(link);

	assert_non_null(strstr(page, "/enphase/oauth/redirect_uri?"));
	return page;
}

/* The installer types the code Enphase's `page` shows: the session reaches the sites. */
static void type_code_from(struct enr_enroll *e, char *page)
{
	char *code = code_on_page(page);

	assert_int_equal(enr_enroll_submit_code(e, code), 0);
	expect_sites(e);
	free(code);
	free(page);
}

/* Enphase's own code page (a typed code, ENR_CONSENT_PASTE) with a relay: the
 * phone gets the relay's short link like every other vendor's, and the code
 * typed completes the enrollment; the link then says it was used. */
static void test_enphase_typed_code_behind_short_link(void **state)
{
	struct enr_enroll_options opts = {.catalog = fx.catalog,
	                                  .vendor = "enphase",
	                                  .method = "oauth",
	                                  .customer = "Eve Enphase"};
	struct enr_sandbox *sb = NULL;
	struct enr_config *cfg = NULL;
	struct enr_enroll *e = NULL;
	char relay[256], link[512];

	(void)state;
	e = sandbox_session(&sb, &cfg, &opts);
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_PASTE);
	snprintf(link, sizeof(link), "%s", enr_enroll_link(e));
	snprintf(relay, sizeof(relay), "%s/s/", enr_config_get(cfg, "relay", "url"));
	if (strncmp(link, relay, strlen(relay)) != 0)
		fail_msg("the phone's link is not the relay's short link: %s", link);
	assert_string_not_equal(link, enr_enroll_authorize_url(e));
	type_code_from(e, approve_to_code_page(link));
	/* The short link, answered by the typed code, now says it was used. */
	expect_link_used(e, link);
	enr_enroll_free(e);
	enr_config_free(cfg);
	enr_sandbox_stop(sb);
}

/* `[vendor.enphase] redirect_uri` set to the relay's callback: Enphase sends
 * the customer's phone to the relay, and the code comes back by itself, as
 * every other vendor's does (nothing typed). */
/* [vendor.enphase] redirect_uri = the relay's callback. */
static void relay_as_enphase_redirect(struct enr_config *cfg)
{
	char callback[256];

	snprintf(callback, sizeof(callback), "%s/callback", enr_config_get(cfg, "relay", "url"));
	assert_int_equal(enr_config_set(cfg, "vendor.enphase", "redirect_uri", callback), 0);
}

static void test_enphase_code_through_relay_callback(void **state)
{
	struct enr_enroll_options opts = {
	    .catalog = fx.catalog, .vendor = "enphase", .method = "oauth", .customer = "Cal Back"};
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	struct enr_enroll *e;
	char *back;

	(void)state;
	e = sandbox_session_as(&sb, &cfg, &opts, relay_as_enphase_redirect);
	assert_int_equal(enr_enroll_consent(e), ENR_CONSENT_RELAY);
	back = approve_from(enr_enroll_link(e));
	assert_non_null(strstr(back, "/relay/callback?"));
	assert_int_equal(plain_get_to(back, NULL), 200); /* the phone reaches the relay */
	expect_sites(e);
	enr_enroll_free(e);
	free(back);
	enr_config_free(cfg);
	enr_sandbox_stop(sb);
}

/* A relay that does not answer: Enphase's code is typed all the same, the
 * phone given Enphase's own address instead of a short link. */
/* [relay] url where nothing answers. */
static void relay_unreachable(struct enr_config *cfg)
{
	assert_int_equal(enr_config_set(cfg, "relay", "url", "http://127.0.0.1:1/relay"), 0);
}

static void test_enphase_typed_code_without_relay_answer(void **state)
{
	struct enr_enroll_options opts = {.catalog = fx.catalog,
	                                  .vendor = "enphase",
	                                  .method = "oauth",
	                                  .customer = "Nora Relay"};
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	struct enr_enroll *e;
	char *approve = NULL, *page = NULL;

	(void)state;
	e = sandbox_session_as(&sb, &cfg, &opts, relay_unreachable);
	assert_string_equal(enr_enroll_link(e), enr_enroll_authorize_url(e));
	assert_true(asprintf(&approve, "%s&sandbox_auto=approve", enr_enroll_link(e)) > 0);
	assert_int_equal(plain_get_to(approve, &page), 302);
	type_code_from(e, page);
	free(approve);
	enr_enroll_free(e);
	enr_config_free(cfg);
	enr_sandbox_stop(sb);
}

/* The same short link lives as long as the session with nothing polled:
 * Enphase's typed code through the capped relay. */
static void test_enphase_short_link_renewed_without_polls(void **state)
{
	struct enr_enroll_options opts = {.catalog = fx.catalog,
	                                  .vendor = "enphase",
	                                  .method = "oauth",
	                                  .customer = "Rita Renew"};
	struct capped c;

	(void)state;
	capped_start(&c, &opts, NULL);
	assert_int_equal(enr_enroll_consent(c.e), ENR_CONSENT_PASTE);
	/* The same short link still takes the customer to Enphase. */
	type_code_from(c.e, approve_to_code_page(c.link));
	capped_finish(&c);
}

static pid_t child = -1;

static int teardown_child(void **state)
{
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		child = -1;
	}
	return teardown(state);
}

/* Runs `derenroll relay ARGS...` with stderr into `err_path`; it dies with the test. */
static pid_t spawn_relay(const char *err_path, const char *const *args)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		const char *argv[16] = {"derenroll", "relay"};
		size_t n = 2;
		int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 2);
		for (; *args && n < 15; args++)
			argv[n++] = *args;
		argv[n] = NULL;
		execv(derenroll_exe, (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static void test_program_sigterm(void **state)
{
	char dir[512], err_path[600], *secret_path, *log = NULL, code[16];
	unsigned port = 0;
	int status;

	(void)state;
	if (!derenroll_exe)
		skip();
	snprintf(dir, sizeof(dir), "%s", getenv("HOME"));
	secret_path = test_write_file(dir, "relay-secret", SECRET "\n", 0600);
	snprintf(err_path, sizeof(err_path), "%s/relay.err", dir);
	/* No public URL: a configuration error, before anything listens. */
	{
		const char *args[] = {"--listen", "127.0.0.1:0", "--secret-file", secret_path,
		                      NULL};
		child = spawn_relay(err_path, args);
	}
	assert_int_equal(waitpid(child, &status, 0), child);
	child = -1;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	log = test_read_file(err_path);
	assert_non_null(strstr(log, "public URL"));
	free(log);
	log = NULL;

	{
		const char *args[] = {"--listen",  "127.0.0.1:0",  "--secret-file",
		                      secret_path, "--public-url", "https://relay.example.com/",
		                      NULL};
		child = spawn_relay(err_path, args);
	}
	for (int i = 0; i < 500 && !port; i++) {
		const char *p;
		free(log);
		log = test_read_file(err_path);
		if (log && (p = strstr(log, " port ")))
			port = (unsigned)atoi(p + 6);
		if (!port)
			usleep(10000);
	}
	assert_true(port > 0);
	snprintf(fx.base, sizeof(fx.base), "http://127.0.0.1:%u", port);
	{
		struct reply r;
		request(&r, "POST", url_of("/v1/links"), SECRET,
		        "{\"target\":\"https://auth.tesla.com/a\",\"state\":\"" STATE "\"}", NULL);
		assert_int_equal(r.status, 201);
		assert_non_null(strstr(r.body, "\"url\":\"https://relay.example.com/s/"));
		snprintf(code, sizeof(code), "%.7s", strstr(r.body, "/s/") + 3);
		reply_free(&r);
	}
	assert_int_equal(kill(child, SIGTERM), 0);
	assert_int_equal(waitpid(child, &status, 0), child);
	child = -1;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	free(log);
	log = test_read_file(err_path);
	assert_non_null(strstr(log, "stopped"));
	assert_null(strstr(log, SECRET));
	assert_null(strstr(log, code));
	free(log);
	free(secret_path);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_full_flow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_result_waiting_before_poll, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_poll_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_declined, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_error_page_escapes_vendor, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vendor_from_target_host, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_code, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replayed_callback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oversized_query, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_target_not_allowed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_allowed_hosts_option, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bearer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ttl, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expiry_ends_waiting_poll, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pasted_code_then_visit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pasted_address_through_enroll, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_link_renewed_in_place, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enrollment_outlives_a_short_relay_cap, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_enphase_typed_code_behind_short_link, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_enphase_typed_code_without_relay_answer, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_enphase_code_through_relay_callback, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_enphase_short_link_renewed_without_polls, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_enroll_link_lives_as_long_as_the_session, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_bogus_polls_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rate_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_logs_hold_no_secrets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quiesce_answers_polls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_options, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mounted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_join_proxy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_join_proxy_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_join_proxy_off, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_program_sigterm, setup, teardown_child),
	};
	int failed;

	derenroll_exe = argc > 1 ? argv[1] : NULL;
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	main_handle = curl_easy_init();
	test_env_setup();
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_env_cleanup();
	curl_easy_cleanup(main_handle);
	curl_global_cleanup();
	return failed;
}
