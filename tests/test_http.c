/* Unit tests of the http module: URL rules, request building, classification
 * of answers (no network: responses are built by hand). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/vendor.h"
#include "fixtures.h"
#include "http_internal.h"

static void test_loopback_hosts(void **state)
{
	static const char *const yes[] = {"127.0.0.1",         "127.255.3.4", "localhost",
	                                  "LocalHost",         "[::1]",       "[0:0:0:0:0:0:0:1]",
	                                  "[::ffff:127.0.0.1]"};
	static const char *const no[] = {"128.0.0.1",
	                                 "10.0.0.1",
	                                 "example.com",
	                                 "[::2]",
	                                 "localhost.example.com",
	                                 "127.0.0.1.nip.io",
	                                 "[::1%25lo]",
	                                 "",
	                                 "[]"};
	(void)state;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(enr_http__is_loopback_host(yes[i]));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(enr_http__is_loopback_host(no[i]));
}

static void test_check_url(void **state)
{
	(void)state;
	assert_int_equal(enr_http_check_url("https://auth.tesla.com/oauth2/v3/authorize"), 0);
	assert_int_equal(enr_http_check_url("http://127.0.0.1:8080/tesla/token"), 0);
	assert_int_equal(enr_http_check_url("http://localhost/x"), 0);
	assert_int_equal(enr_http_check_url("http://[::1]:9/x"), 0);
	assert_int_equal(enr_http_check_url("https://127.0.0.1:8443/"), 0);

	assert_int_equal(
	    enr_http_check_url("http://api.enphaseenergy.com/oauth/token?code=XYZ1234"),
	    ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "plain http"));
	assert_non_null(strstr(enr_error_last(), "api.enphaseenergy.com"));
	assert_null(strstr(enr_error_last(), "XYZ1234"));
	assert_null(strstr(enr_error_last(), "code="));

	assert_int_equal(enr_http_check_url("ftp://example.com/file"), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "https"));
	assert_int_equal(enr_http_check_url("not a url?secret=HIDDEN99"), ENR_E_MISCONFIGURED);
	assert_null(strstr(enr_error_last(), "HIDDEN99"));
	assert_int_equal(enr_http_check_url("/relative/path"), ENR_E_MISCONFIGURED);
}

static void test_safe_url(void **state)
{
	char *s;

	(void)state;
	s = enr_http__safe_url("https://user:pw@example.com:8443/a/b?code=1&x=2#frag");
	assert_string_equal(s, "https://example.com:8443/a/b");
	free(s);
	s = enr_http__safe_url("http://127.0.0.1:9/token?refresh_token=abc");
	assert_string_equal(s, "http://127.0.0.1:9/token");
	free(s);
	s = enr_http__safe_url("::garbage::?code=SECRETCODE");
	assert_null(strstr(s, "SECRETCODE"));
	free(s);
}

static void test_retry_after(void **state)
{
	long long when = (long long)curl_getdate("Wed, 21 Oct 2026 07:28:00 GMT", NULL);

	(void)state;
	assert_int_equal(enr_http__parse_retry_after("120", 0), 120);
	assert_int_equal(enr_http__parse_retry_after(" 7 ", 0), 7);
	assert_int_equal(enr_http__parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", when - 30),
	                 30);
	assert_int_equal(enr_http__parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", when + 99),
	                 0);
	assert_int_equal(enr_http__parse_retry_after("soon", 0), -1);
	assert_int_equal(enr_http__parse_retry_after("12abc", 0), -1);
	/* Absurd waits are read as the longest one that means anything. */
	assert_int_equal(enr_http__parse_retry_after("99999999", 0), ENR_HTTP_MAX_RETRY_AFTER);
	assert_int_equal(enr_http__parse_retry_after("99999999999999999999999", 0),
	                 ENR_HTTP_MAX_RETRY_AFTER);
	assert_int_equal(enr_http__parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", 0),
	                 ENR_HTTP_MAX_RETRY_AFTER);
}

/* When to try again reads as a time of day, never as a count of seconds. */
static void test_retry_text(void **state)
{
	/* Wed, 21 Oct 2026 07:28:10 UTC */
	long long now = (long long)curl_getdate("Wed, 21 Oct 2026 07:28:10 GMT", NULL);
	char buf[96];

	(void)state;
	setenv("TZ", "UTC", 1);
	tzset();
	enr_http__retry_text(buf, sizeof(buf), -1, now);
	assert_string_equal(buf, "try again in a few minutes");
	enr_http__retry_text(buf, sizeof(buf), 20, now);
	assert_string_equal(buf, "try again in 20 s");
	enr_http__retry_text(buf, sizeof(buf), 600, now);
	assert_string_equal(buf, "try again after 07:39");
	enr_http__retry_text(buf, sizeof(buf), 20 * 3600, now);
	assert_string_equal(buf, "try again after 2026-10-22 03:29");
	enr_http__retry_text(buf, sizeof(buf), 99999999, now);
	assert_string_equal(buf, "try again tomorrow (the vendor asked to wait 1157 days)");
	enr_http__retry_text(buf, sizeof(buf), ENR_HTTP_MAX_RETRY_AFTER, now);
	assert_null(strstr(buf, "99999999"));
	assert_non_null(strstr(buf, "tomorrow"));
}

/* [http] max_wait: its default, a setting, and a refusal of nonsense. */
static void test_max_wait(void **state)
{
	struct enr_config *cfg = NULL;
	struct enr_http_multi *m = NULL;

	(void)state;
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_http__max_wait_s(cfg), ENR_HTTP_DEFAULT_MAX_WAIT);
	assert_int_equal(enr_http__max_wait_s(NULL), ENR_HTTP_DEFAULT_MAX_WAIT);
	enr_config_set(cfg, "http", "max_wait", "45");
	assert_int_equal(enr_http__max_wait_s(cfg), 45);
	enr_config_set(cfg, "http", "max_wait", "99999999");
	assert_int_equal(enr_http_multi_new(&m, cfg), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "max_wait"));
	assert_null(m);
	enr_config_free(cfg);
}

static void test_request_validation(void **state)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;

	(void)state;
	assert_int_equal(enr_http_request_new(&req, "GET", "https://example.com/"), 0);
	assert_int_equal(enr_http_request_add_header(req, "X-Key", "a\r\nEvil: 1", 0), ENR_E_USAGE);
	assert_int_equal(enr_http_request_add_header(req, "Bad Name", "v", 0), ENR_E_USAGE);
	assert_int_equal(enr_http_request_add_header(req, "", "v", 0), ENR_E_USAGE);
	assert_int_equal(enr_http_request_add_header(req, "X-Api-Key", "fine", 0), 0);
	assert_int_equal(enr_http_request_add_form(req, "a", "1", 0), 0);
	assert_int_equal(enr_http_request_set_body(req, "application/json", "{}", 2), ENR_E_USAGE);
	assert_int_equal(enr_http_perform(&resp, NULL, req), ENR_E_USAGE); /* a GET with a form */
	assert_null(resp);
	enr_http_request_free(req);

	assert_int_equal(enr_http_request_new(&req, "POST", "https://example.com/"), 0);
	assert_int_equal(enr_http_request_set_body(req, "application/json", "{}", 2), 0);
	assert_int_equal(enr_http_request_add_form(req, "a", "1", 0), ENR_E_USAGE);
	enr_http_request_free(req);
	enr_http_request_free(NULL);
}

static void test_secrets_registered(void **state)
{
	struct enr_http_request *req = NULL;
	char buf[256];

	(void)state;
	assert_int_equal(enr_http_request_new(&req, "POST", "https://example.com/"), 0);
	assert_int_equal(enr_http_request_set_basic(req, "client-id", "S3cr3t-Value"), 0);
	assert_int_equal(
	    enr_http_request_add_query(req, "refresh_token", "rt/with+chars", ENR_HTTP_SECRET), 0);
	assert_int_equal(
	    enr_http_request_add_form(req, "client_secret", "F0rm-Secret", ENR_HTTP_SECRET), 0);
	enr_http_request_free(req);

	enr_log_redact(buf, sizeof(buf),
	               "a S3cr3t-Value b rt/with+chars c rt%2Fwith%2Bchars d F0rm-Secret");
	assert_string_equal(buf, "a [redacted] b [redacted] c [redacted] d [redacted]");
	/* The Basic header value as sent. */
	enr_log_redact(buf, sizeof(buf), "Y2xpZW50LWlkOlMzY3IzdC1WYWx1ZQ==");
	assert_string_equal(buf, "[redacted]");
}

static void test_classify_ok_and_transport(void **state)
{
	struct enr_http_response r = test_response(200, "{}", "tesla", false);

	(void)state;
	assert_int_equal(enr_http_classify(&r), 0);
	r = test_response(204, "", NULL, false);
	assert_int_equal(enr_http_classify(&r), 0);

	r = test_response(0, "", "tesla", false);
	r.error = ENR_E_TRANSIENT;
	r.message = (char *)"Tesla: cannot connect";
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	assert_string_equal(enr_error_last(), "Tesla: cannot connect");
}

static void test_classify_api_answers(void **state)
{
	struct enr_http_response r;

	(void)state;
	/* Vendor guidance first. */
	r = test_response(401, "{\"detail\": \"Invalid API key\"}", "solaredge", false);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "developer.solaredge.com"));
	r = test_response(401, "{}", "derapi", false);
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	r = test_response(200, "", "solis", false);
	r.status = 408;
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	/* The vendor's advice alone: no guess at when to try again. */
	assert_string_equal(enr_error_last(), enr_vendor_guidance(r.vendor, 408, "")->message);
	assert_non_null(strstr(enr_error_last(), "clock"));
	r.retry_after = 45;
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	assert_non_null(strstr(enr_error_last(), "clock"));
	assert_non_null(strstr(enr_error_last(), "Try again in 45 s."));
	r.retry_after = 99999999;
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	assert_non_null(strstr(enr_error_last(), "Try again tomorrow"));
	r = test_response(401, "{\"error\": \"API Key -Client mismatch\"}", "enphase", false);
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);

	/* Generic text, naming the vendor. */
	r = test_response(401, "{\"message\": \"token expired\"}", "sma", false);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "SMA"));
	assert_non_null(strstr(enr_error_last(), "token expired"));
	/* An empty description adds nothing (Tesla's shape). */
	r = test_response(401,
	                  "{\"response\": null, \"error\": \"token expired (401)\", "
	                  "\"error_description\": \"\"}",
	                  "tesla", false);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "(HTTP 401: token expired (401)): "));
	r = test_response(403, "", NULL, false);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "https://api.example.com/v1/things"));

	r = test_response(429, "", "sma", false);
	r.retry_after = 30;
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	assert_non_null(strstr(enr_error_last(), "30 s"));
	r.retry_after = -1;
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	assert_non_null(strstr(enr_error_last(), "few minutes"));
	r.retry_after = 99999999;
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	assert_null(strstr(enr_error_last(), "99999999"));
	assert_non_null(strstr(enr_error_last(), "try again tomorrow"));

	r = test_response(503, "<html>down</html>", "tesla", false);
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
	assert_non_null(strstr(enr_error_last(), "Tesla"));
	r = test_response(500, "", NULL, false);
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);

	r = test_response(404, "", "tesla", false);
	r.endpoint = (char *)"api_url";
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "[vendor.tesla] api_url"));
	r = test_response(400, "{\"message\": \"bad page size\"}", "sma", false);
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "bad page size"));

	r = test_response(302, "", "tesla", false);
	r.endpoint = (char *)"api_url";
	r.location = (char *)"https://fleet-api.prd.eu.vn.cloud.tesla.com/api/1/products";
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "not followed"));
	assert_non_null(strstr(enr_error_last(), "[vendor.tesla] api_url"));
	/* Where a redirect points is the vendor's word: never advice to follow. */
	assert_null(strstr(enr_error_last(), "prd.eu"));
	assert_null(strstr(enr_error_last(), "new address"));
	r.location = (char *)"https://evil.example/steal";
	r.status = 301;
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	assert_null(strstr(enr_error_last(), "evil.example"));

	r = test_response(101, "", NULL, false);
	assert_int_equal(enr_http_classify(&r), ENR_E_BADRESPONSE);
}

static void test_classify_token_answers(void **state)
{
	struct enr_http_response r;

	(void)state;
	r = test_response(400, "{\"error\": \"invalid_grant\"}", "tesla", true);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "Tesla refused the authorization"));
	r = test_response(400,
	                  "{\"error\": \"invalid_grant\", \"error_description\": \"code used\"}",
	                  NULL, true);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "code used"));
	r = test_response(401, "{\"error\": \"invalid_client\"}", NULL, true);
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "client ID"));
	/* Enphase's status-only 401 guidance is about access tokens: not for its
	 * token endpoint, where 401 means the company's app. */
	r = test_response(401, "", "enphase", true);
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	assert_non_null(strstr(enr_error_last(), "[vendor.enphase]"));
	r = test_response(400, "{\"error\": \"unsupported_grant_type\"}", "tesla", true);
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	r = test_response(400, "{\"error\": \"authorization_pending\"}", NULL, true);
	assert_int_equal(enr_http_classify(&r), ENR_E_AGAIN);
	r = test_response(400, "{\"error\": \"access_denied\"}", NULL, true);
	assert_int_equal(enr_http_classify(&r), ENR_E_DECLINED);
	r = test_response(400, "{\"error\": \"access_denied\"}", "sma", true);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED); /* SMA's guidance */
	r = test_response(400, "{\"error\": \"expired_token\"}", NULL, true);
	assert_int_equal(enr_http_classify(&r), ENR_E_EXPIRED);
	r = test_response(400, "{\"error\": \"login_required\"}", NULL, true);
	assert_int_equal(enr_http_classify(&r), ENR_E_REJECTED);
	r = test_response(400, "not json", NULL, true);
	assert_int_equal(enr_http_classify(&r), ENR_E_MISCONFIGURED);
	r = test_response(500, "{\"error\": \"server_error\"}", "tesla", true);
	assert_int_equal(enr_http_classify(&r), ENR_E_TRANSIENT);
}

static void test_vendor_error(void **state)
{
	(void)state;
	assert_int_equal(enr_http_vendor_error(test_vendor("solis"), 200, "{\"code\":\"R0000\"}",
	                                       ENR_E_BADRESPONSE, "Solis said %s", "no"),
	                 ENR_E_REJECTED);
	assert_non_null(strstr(enr_error_last(), "Solis support"));
	assert_int_equal(enr_http_vendor_error(test_vendor("solis"), 200, "{\"code\":\"Z9\"}",
	                                       ENR_E_BADRESPONSE, "Solis said %s", "Z9"),
	                 ENR_E_BADRESPONSE);
	assert_string_equal(enr_error_last(), "Solis said Z9");
	assert_int_equal(enr_http_vendor_error(test_vendor("sma"), 200, "empty_sites",
	                                       ENR_E_BADRESPONSE, "none"),
	                 ENR_E_REJECTED);
	assert_int_equal(enr_http_vendor_error(NULL, 200, "x", ENR_E_TRANSIENT, "plain"),
	                 ENR_E_TRANSIENT);
}

static void test_response_json(void **state)
{
	struct enr_http_response r = test_response(200, "{\"a\": 1}", "tesla", false);
	json_object *obj = NULL;

	(void)state;
	assert_int_equal(enr_http_response_json(&obj, &r), 0);
	assert_true(json_object_is_type(obj, json_type_object));
	json_object_put(obj);
	r = test_response(200, "{\"a\": ", "tesla", false);
	assert_int_equal(enr_http_response_json(&obj, &r), ENR_E_BADRESPONSE);
	assert_null(obj);
	assert_non_null(strstr(enr_error_last(), "Tesla sent a malformed answer"));
	r = test_response(200, "{} trailing", NULL, false);
	assert_int_equal(enr_http_response_json(&obj, &r), ENR_E_BADRESPONSE);
	r = test_response(200, "", NULL, false);
	assert_int_equal(enr_http_response_json(&obj, &r), ENR_E_BADRESPONSE);
	assert_int_equal(enr_http_badresponse(&r, "no sites array"), ENR_E_BADRESPONSE);
	assert_non_null(strstr(enr_error_last(), "no sites array"));
}

static void test_refused_before_sending(void **state)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = (void *)1;
	struct enr_http_multi *multi = NULL;
	uint64_t id = 99;

	(void)state;
	assert_int_equal(enr_http_request_new(&req, "GET", "http://example.com/x?k=SECRETKEY1"), 0);
	assert_int_equal(enr_http_perform(&resp, NULL, req), ENR_E_MISCONFIGURED);
	assert_null(resp);
	assert_null(strstr(enr_error_last(), "SECRETKEY1"));
	assert_int_equal(enr_http_multi_new(&multi, NULL), 0);
	assert_int_equal(enr_http_multi_add(&id, multi, req, NULL, NULL), ENR_E_MISCONFIGURED);
	assert_int_equal(id, 0);
	assert_int_equal(enr_http_multi_running(multi), 0);
	assert_int_equal(enr_http_multi_cancel(multi, 12345), ENR_E_NOTFOUND);
	enr_http_multi_free(multi);
	enr_http_request_free(req);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_loopback_hosts),
    cmocka_unit_test(test_check_url),
    cmocka_unit_test(test_safe_url),
    cmocka_unit_test(test_retry_after),
    cmocka_unit_test(test_retry_text),
    cmocka_unit_test(test_max_wait),
    cmocka_unit_test(test_request_validation),
    cmocka_unit_test(test_secrets_registered),
    cmocka_unit_test(test_classify_ok_and_transport),
    cmocka_unit_test(test_classify_api_answers),
    cmocka_unit_test(test_classify_token_answers),
    cmocka_unit_test(test_vendor_error),
    cmocka_unit_test(test_response_json),
    cmocka_unit_test(test_refused_before_sending),
};

NET_TEST_MAIN(tests)
