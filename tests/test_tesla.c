/* Tesla's regions (names, what a token says, each region's host from
 * vendors.json and config), the users/region answer as recorded, and the
 * public key's URL. Registration against the sandbox: tests/cli/test_tesla.sh. */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "fixtures.h"
#include "answers.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/vendor.h"
#include "util.h"

static void region_names(void **state)
{
	enum enr_tesla_region r = ENR_TESLA_CN;

	(void)state;
	assert_string_equal(enr_tesla_region_name(ENR_TESLA_NA), "na");
	assert_string_equal(enr_tesla_region_name(ENR_TESLA_EU), "eu");
	assert_string_equal(enr_tesla_region_name(ENR_TESLA_CN), "cn");
	assert_int_equal(enr_tesla_region_parse(&r, "EU"), 0);
	assert_int_equal(r, ENR_TESLA_EU);
	assert_int_equal(enr_tesla_region_parse(&r, "na"), 0);
	assert_int_equal(r, ENR_TESLA_NA);
	assert_int_equal(enr_tesla_region_parse(&r, "us"), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "na, eu or cn"));
	/* A record without a region (older than regions) is NA. */
	assert_int_equal(enr_tesla_region_of(NULL), ENR_TESLA_NA);
	assert_int_equal(enr_tesla_region_of("cn"), ENR_TESLA_CN);
	assert_string_equal(enr_tesla_endpoint(ENR_TESLA_NA), "api_url");
	assert_string_equal(enr_tesla_endpoint(ENR_TESLA_EU), "api_url_eu");
	assert_string_equal(enr_tesla_endpoint(ENR_TESLA_CN), "api_url_cn");
}

static const char *recorded(const char *name, const char *path)
{
	json_object *rec = NULL;

	assert_int_equal(enr_answers__get(&rec, "tesla", name), 0);
	return json_object_get_string(enr_util_json_at(rec, path));
}

static void region_from_tokens(void **state)
{
	enum enr_tesla_region r = ENR_TESLA_NA;

	(void)state;
	assert_int_equal(enr_tesla_region_from_token(&r, "CN_abc"), 0);
	assert_int_equal(r, ENR_TESLA_CN);
	assert_int_equal(enr_tesla_region_from_token(&r, "NA_abc"), 0);
	assert_int_equal(r, ENR_TESLA_NA);
	/* The recorded answer: an EU refresh token and an access token with ou_code EU. */
	assert_int_equal(enr_tesla_region_from_token(&r, recorded("token", "body.refresh_token")),
	                 0);
	assert_int_equal(r, ENR_TESLA_EU);
	r = ENR_TESLA_NA;
	assert_int_equal(enr_tesla_region_from_token(&r, recorded("token", "body.access_token")),
	                 0);
	assert_int_equal(r, ENR_TESLA_EU);
	/* No prefix, not a JWT: no region. */
	assert_int_equal(enr_tesla_region_from_token(&r, "plain-code"), ENR_E_NOTFOUND);
	assert_int_equal(enr_tesla_region_from_token(&r, "EUX_abc"), ENR_E_NOTFOUND);
	assert_int_equal(enr_tesla_region_from_token(&r, NULL), ENR_E_NOTFOUND);
}

static void region_of_a_record(void **state)
{
	struct enr_record *rec = NULL;

	(void)state;
	assert_int_equal(enr_record_new(&rec), 0);
	assert_int_equal(enr_record_set(&rec->vendor, "sma"), 0);
	assert_null(enr_tesla_record_endpoint(rec));
	assert_int_equal(enr_tesla_note_region(rec, "EU_x", NULL, NULL), 0);
	assert_null(rec->region); /* not Tesla's */
	assert_int_equal(enr_record_set(&rec->vendor, "tesla"), 0);
	assert_string_equal(enr_tesla_record_endpoint(rec), "api_url");
	assert_int_equal(enr_tesla_note_region(rec, NULL, NULL, "EU_code"), 0);
	assert_string_equal(rec->region, "eu");
	assert_string_equal(enr_tesla_record_endpoint(rec), "api_url_eu");
	/* Tokens that name none leave it. */
	assert_int_equal(enr_tesla_note_region(rec, "rt", "at", NULL), 0);
	assert_string_equal(rec->region, "eu");
	assert_int_equal(enr_tesla_note_region(rec, "CN_rt", "at", "EU_code"), 0);
	assert_string_equal(rec->region, "cn");
	enr_record_free(rec);
}

static void hosts_from_config(void **state)
{
	const struct enr_vendor *tesla = test_vendor("tesla");
	struct enr_config *cfg = NULL;
	char *audience = NULL;

	(void)state;
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_string_equal(enr_tesla_api_url(tesla, cfg, ENR_TESLA_NA),
	                    "https://fleet-api.prd.na.vn.cloud.tesla.com");
	assert_string_equal(enr_tesla_api_url(tesla, cfg, ENR_TESLA_EU),
	                    "https://fleet-api.prd.eu.vn.cloud.tesla.com");
	assert_string_equal(enr_tesla_api_url(tesla, cfg, ENR_TESLA_CN),
	                    "https://fleet-api.prd.cn.vn.cloud.tesla.cn");
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "api_url_eu", "https://eu.example/"),
	                 0);
	assert_string_equal(enr_tesla_api_url(tesla, cfg, ENR_TESLA_EU), "https://eu.example/");
	assert_int_equal(enr_tesla_audience(&audience, tesla, cfg, ENR_TESLA_EU), 0);
	assert_string_equal(audience, "https://eu.example");
	free(audience);
	enr_config_free(cfg);
}

/* The recorded users/region answer names a region by its host. */
static void users_region_answer(void **state)
{
	const struct enr_vendor *tesla = test_vendor("tesla");
	json_object *body = NULL;
	struct enr_config *cfg = NULL;
	enum enr_tesla_region r = ENR_TESLA_NA;
	struct enr_http_response resp;

	(void)state;
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_answers__body(&body, "tesla", "users-region"), 0);
	resp = test_response(200, json_object_to_json_string(body), "tesla", false);
	assert_int_equal(enr_tesla_users_region_response(&r, tesla, cfg, &resp), 0);
	assert_int_equal(r, ENR_TESLA_EU);
	/* A host that no region is configured with is not guessed at. */
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "api_url_eu", "https://eu.example"),
	                 0);
	assert_int_equal(enr_tesla_users_region_response(&r, tesla, cfg, &resp), ENR_E_BADRESPONSE);
	assert_non_null(strstr(enr_error_last(), "api_url_eu"));
	resp = test_response(200, "{\"response\": {}}", "tesla", false);
	assert_int_equal(enr_tesla_users_region_response(&r, tesla, cfg, &resp), ENR_E_BADRESPONSE);
	json_object_put(body);
	enr_config_free(cfg);
}

static void public_key_url(void **state)
{
	const struct enr_vendor *tesla = test_vendor("tesla");
	struct enr_config *cfg = NULL;
	char *url = NULL;

	(void)state;
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_tesla_public_key_url(&url, tesla, cfg, "installer.example"), 0);
	assert_string_equal(
	    url, "https://installer.example/.well-known/appspecific/com.tesla.3p.public-key.pem");
	free(url);
	assert_int_equal(enr_tesla_public_key_url(&url, tesla, cfg, "evil.example/x?"),
	                 ENR_E_USAGE);
	assert_null(url);
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "public_key_url",
	                                "http://127.0.0.1:1/{domain}.pem"),
	                 0);
	assert_int_equal(enr_tesla_public_key_url(&url, tesla, cfg, "a.example"), 0);
	assert_string_equal(url, "http://127.0.0.1:1/a.example.pem");
	free(url);
	enr_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(region_names),        cmocka_unit_test(region_from_tokens),
	    cmocka_unit_test(region_of_a_record),  cmocka_unit_test(hosts_from_config),
	    cmocka_unit_test(users_region_answer), cmocka_unit_test(public_key_url),
	};
	int failed;

	test_env_setup();
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_catalog_free();
	enr_answers__flush();
	test_env_cleanup();
	return failed;
}
