#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/vendor.h"

/* A minimal valid vendor, with one spot to break. */
#define VENDOR(extra)                                                                              \
	"{\"schema\": 1, \"vendors\": [{\"id\": \"acme\", \"name\": \"Acme\","                     \
	"\"config_section\": \"vendor.acme\","                                                     \
	"\"methods\": [{\"id\": \"key\", \"label\": \"Key\", \"help\": \"h\"}],"                   \
	"\"endpoints\": {\"api_url\": \"https://api.acme.test\"},"                                 \
	"\"tokens\": {\"access_ttl\": 0, \"refresh_ttl\": 0},"                                     \
	"\"check\": {\"method\": \"GET\", \"path\": \"/sites\", \"auth\": \"header_key\","         \
	"\"header\": \"X-Key\", \"sites\": \"sites\", \"site_id\": \"id\", \"site_name\": \"n\"}," \
	"\"rate_limits\": [], \"guidance\": []" extra "}]}"

static int expect_error(const char *json, const char *needle)
{
	struct enr_catalog *cat = NULL;
	int rc = enr_catalog_load_string(&cat, json, "vendors.json");

	assert_null(cat);
	if (!strstr(enr_error_last(), needle))
		fail_msg("message '%s' lacks '%s'", enr_error_last(), needle);
	return rc;
}

static void real_catalogue_loads_every_vendor(void **state)
{
	static const char *const ids[] = {"tesla", "sma",        "enphase", "solaredge",
	                                  "solis", "enphasevpp", "derapi"};
	struct enr_catalog *cat = NULL;

	(void)state;
	if (enr_catalog_load(&cat, NULL) != 0)
		fail_msg("%s", enr_error_last());
	assert_int_equal(enr_catalog_count(cat), 7);
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		const struct enr_vendor *v = enr_catalog_find(cat, ids[i]);
		assert_non_null(v);
		assert_string_equal(v->id, ids[i]);
		assert_true(v->n_methods >= 1);
	}
	enr_catalog_free(cat);
}

static void catalogue_holds_the_vendor_facts(void **state)
{
	struct enr_catalog *cat = NULL;
	const struct enr_vendor *v;

	(void)state;
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);

	v = enr_catalog_find(cat, "tesla");
	assert_string_equal(v->methods[0].id, "oauth");
	assert_true(v->oauth.audience);
	assert_string_equal(v->oauth.scopes, "openid offline_access energy_device_data");
	assert_true(v->tokens.refresh_rotates);
	assert_int_equal(v->tokens.refresh_ttl, 90L * 24 * 3600);
	assert_true(enr_vendor_unconfirmed(v, "tokens.access_ttl"));
	assert_false(enr_vendor_unconfirmed(v, "tokens.refresh_ttl"));
	assert_string_equal(v->check.require_field, "energy_site_id");
	/* Regions, the secretless refresh and the partner token are data. */
	assert_string_equal(enr_vendor_default_endpoint(v, "api_url_eu"),
	                    "https://fleet-api.prd.eu.vn.cloud.tesla.com");
	assert_string_equal(enr_vendor_default_endpoint(v, "api_url_cn"),
	                    "https://fleet-api.prd.cn.vn.cloud.tesla.cn");
	assert_true(v->oauth.refresh_without_secret);
	assert_string_equal(v->oauth.partner_scopes, "openid energy_device_data");
	assert_non_null(enr_vendor_guidance(v, 412, "{}"));
	assert_non_null(strstr(enr_vendor_guidance(v, 412, "{}")->message,
	                       "derenroll tesla register --domain"));

	v = enr_catalog_find(cat, "enphase");
	assert_false(v->oauth.refresh_without_secret);
	assert_int_equal(v->oauth.client_auth, ENR_CLIENT_AUTH_BASIC);
	assert_int_equal(v->oauth.token_params, ENR_TOKEN_PARAMS_QUERY);
	assert_int_equal(v->tokens.access_ttl, 86400);
	assert_int_equal(v->tokens.refresh_ttl, 30L * 24 * 3600);
	assert_string_equal(v->check.query_key, "key");
	assert_non_null(enr_vendor_method(v, "partner"));

	v = enr_catalog_find(cat, "solis");
	assert_int_equal(v->check.auth, ENR_CHECK_AUTH_SOLIS);
	assert_string_equal(v->check.sites, "data.page.records");
	assert_int_equal(v->rate_limits[0].requests, 2);
	assert_int_equal(v->rate_limits[0].scope, ENR_LIMIT_PER_KEY);

	v = enr_catalog_find(cat, "solaredge");
	assert_int_equal(v->check.auth, ENR_CHECK_AUTH_HEADER_KEY);
	assert_string_equal(v->check.header, "X-API-Key");
	assert_string_equal(v->check.account_header, "X-Account-Key");
	/* v2's shape first, the documented bare array as the alternative. */
	assert_string_equal(v->check.sites, "sites.site");
	assert_string_equal(v->check.sites_alt, "");
	assert_null(enr_vendor_default_endpoint(v, "api_v1_url"));
	assert_int_equal(v->rate_limits[0].per_seconds, 60);
	assert_string_equal(v->rate_limits[0].remaining_header, "x-ratelimit-remaining-minute");
	assert_string_equal(v->rate_limits[0].limit_header, "x-ratelimit-limit-minute");
	/* OAuth "Site Access" has no public endpoints: no method, and it says so. */
	assert_null(enr_vendor_method(v, "oauth"));
	assert_true(enr_vendor_unconfirmed(v, "site_access"));
	assert_true(enr_vendor_unconfirmed(v, "credits"));
	assert_non_null(enr_vendor_method(v, "join"));

	v = enr_catalog_find(cat, "sma");
	assert_int_equal(v->tokens.refresh_ttl, 0);
	assert_string_equal(enr_vendor_method(v, "email")->endpoint, "bc_url");

	v = enr_catalog_find(cat, "derapi");
	assert_string_equal(v->api_version, "v2024-09-01");
	assert_string_equal(v->config_section, "derapi");
	enr_catalog_free(cat);
}

static void methods_are_looked_up_with_helpful_errors(void **state)
{
	struct enr_catalog *cat = NULL;
	const struct enr_vendor *v;

	(void)state;
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);
	v = enr_catalog_find(cat, "enphasevpp");
	assert_non_null(enr_vendor_method(v, "join"));
	assert_null(enr_vendor_method(v, "oauth"));
	assert_non_null(strstr(enr_error_last(), "only through Derapi Join"));
	v = enr_catalog_find(cat, "solis");
	assert_null(enr_vendor_method(v, "oauth"));
	assert_non_null(strstr(enr_error_last(), "key, account, join"));
	assert_null(enr_catalog_find(cat, "huawei"));
	assert_int_equal(enr_error_last_code(), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "unknown vendor 'huawei'"));
	enr_catalog_free(cat);
}

static void config_overrides_endpoints(void **state)
{
	struct enr_catalog *cat = NULL;
	struct enr_config *cfg = NULL;
	const struct enr_vendor *v;
	char *url;

	(void)state;
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);
	assert_int_equal(enr_config_new(&cfg), 0);
	v = enr_catalog_find(cat, "tesla");
	assert_string_equal(enr_vendor_endpoint(v, cfg, "token_url"),
	                    "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/token");
	enr_config_set(cfg, "vendor.tesla", "api_url", "http://127.0.0.1:9/tesla/");
	enr_config_set(cfg, "vendor.tesla", "scopes", "openid energy_device_data");
	url = enr_vendor_url(v, cfg, "api_url", "/api/1/products");
	assert_string_equal(url, "http://127.0.0.1:9/tesla/api/1/products");
	free(url);
	assert_string_equal(enr_vendor_scopes(v, cfg), "openid energy_device_data");
	assert_null(enr_vendor_endpoint(v, cfg, "bc_url"));
	assert_int_equal(enr_error_last_code(), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "[vendor.tesla]"));
	enr_config_set(cfg, "derapi", "api_url", "http://127.0.0.1:9/derapi");
	v = enr_catalog_find(cat, "derapi");
	url = enr_vendor_url(v, cfg, "api_url", "join/flows");
	assert_string_equal(url, "http://127.0.0.1:9/derapi/join/flows");
	free(url);
	enr_config_free(cfg);
	enr_catalog_free(cat);
}

static void guidance_matches_text_before_status(void **state)
{
	struct enr_catalog *cat = NULL;
	const struct enr_guidance *g;
	const struct enr_vendor *v;

	(void)state;
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);
	v = enr_catalog_find(cat, "solis");
	g = enr_vendor_guidance(v, 200, "{\"code\":\"R0000\",\"msg\":\"no auth\"}");
	assert_non_null(g);
	assert_int_equal(g->error, ENR_E_REJECTED);
	assert_non_null(strstr(g->message, "Solis support"));
	g = enr_vendor_guidance(v, 408, "");
	assert_int_equal(g->error, ENR_E_TRANSIENT);
	assert_non_null(strstr(g->message, "clock"));
	assert_null(enr_vendor_guidance(v, 500, "boom"));
	v = enr_catalog_find(cat, "enphase");
	g = enr_vendor_guidance(v, 401, "{\"message\":\"API Key -Client mismatch\"}");
	assert_int_equal(g->error, ENR_E_MISCONFIGURED);
	enr_catalog_free(cat);
}

static void unknown_vendor_sections_are_reported(void **state)
{
	struct enr_catalog *cat = NULL;
	struct enr_config *cfg = NULL;

	(void)state;
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);
	assert_int_equal(enr_config_new(&cfg), 0);
	enr_config_set(cfg, "vendor.tesla", "client_id", "x");
	enr_config_set(cfg, "vendor.huawei", "client_id", "x");
	enr_config_set(cfg, "vendor.huawei", "client_secret_file", "y");
	assert_int_equal(enr_catalog_check_config(cat, cfg, NULL, NULL), 1);
	enr_config_free(cfg);
	enr_catalog_free(cat);
}

static void minimal_vendor_is_valid(void **state)
{
	struct enr_catalog *cat = NULL;

	(void)state;
	if (enr_catalog_load_string(&cat, VENDOR(""), "t") != 0)
		fail_msg("%s", enr_error_last());
	enr_catalog_free(cat);
}

static void malformed_json_names_the_line(void **state)
{
	(void)state;
	assert_int_equal(expect_error("{\"schema\": 1,\n\"vendors\": [\n}", "vendors.json:3:"),
	                 ENR_E_PARSE);
	assert_int_equal(expect_error("{\"schema\": 1, \"vendors\": [", "ends too early"),
	                 ENR_E_PARSE);
	assert_int_equal(expect_error("", "ends too early"), ENR_E_PARSE);
	assert_int_equal(expect_error("[]", "must be an object"), ENR_E_PARSE);
}

static void truncated_real_catalogue_is_refused(void **state)
{
	char *path = NULL, *json;

	(void)state;
	path = enr_config_asset_path("vendors.json");
	json = test_read_file(path);
	assert_non_null(json);
	for (size_t cut = 1; cut < strlen(json) - 2; cut += 97) {
		char saved = json[cut];
		struct enr_catalog *cat = NULL;
		json[cut] = '\0';
		assert_int_equal(enr_catalog_load_string(&cat, json, "vendors.json"), ENR_E_PARSE);
		assert_null(cat);
		json[cut] = saved;
	}
	free(json);
	free(path);
}

static void schema_and_vendor_list_are_required(void **state)
{
	(void)state;
	expect_error("{\"vendors\": []}", "field 'schema' is missing");
	expect_error("{\"schema\": 2, \"vendors\": []}", "field 'schema' is not 1");
	expect_error("{\"schema\": 1}", "field 'vendors' is missing");
}

static void missing_fields_name_vendor_and_field(void **state)
{
	(void)state;
	expect_error("{\"schema\": 1, \"vendors\": [{\"name\": \"X\"}]}",
	             "field 'vendors[0].id' is missing");
	expect_error("{\"schema\": 1, \"vendors\": [{\"id\": \"x\"}]}",
	             "vendor 'x': field 'name' is missing");
	expect_error(VENDOR(",\"oauth\": 3"), "vendor 'acme': field 'oauth' must be an object");
	expect_error("{\"schema\": 1, \"vendors\": [{\"id\": \"x\", \"name\": \"X\","
	             "\"config_section\": \"vendor.x\", \"methods\": []}]}",
	             "vendor 'x': field 'methods' must list at least one method");
}

/* VENDOR("") with its method id replaced. */
static char *with_method(const char *method)
{
	const char *json = VENDOR(""), *at = strstr(json, "\"key\"");
	char *out = NULL;

	assert_true(asprintf(&out, "%.*s\"%s\"%s", (int)(at - json), json, method,
	                     at + strlen("\"key\"")) > 0);
	return out;
}

static void unknown_method_is_refused(void **state)
{
	char *json = with_method("fax");

	(void)state;
	expect_error(json, "vendor 'acme': field 'methods[0].id': unknown method 'fax'");
	free(json);
}

static void oauth_method_needs_oauth_and_endpoints(void **state)
{
	char *json = with_method("oauth");

	(void)state;
	expect_error(json, "vendor 'acme': field 'oauth' is missing");
	free(json);
}

static void bad_values_are_refused(void **state)
{
	(void)state;
	expect_error(VENDOR(",\"endpoints\": {\"api_url\": \"ftp://x\"}"),
	             "field 'endpoints.api_url' must be an http(s) URL");
	expect_error(VENDOR(",\"guidance\": [{\"status\": 401, \"class\": \"angry\", "
	                    "\"message\": \"m\"}]"),
	             "field 'guidance[0]' has 'class'");
	expect_error(VENDOR(",\"rate_limits\": [{\"requests\": 1, \"per_seconds\": 1, "
	                    "\"concurrency\": 0, \"per\": \"planet\"}]"),
	             "'per' that is not");
	expect_error(VENDOR(",\"tokens\": {\"access_ttl\": -5, \"refresh_ttl\": 0}"),
	             "field 'tokens.access_ttl' must not be negative");
	expect_error(VENDOR(",\"tokens\": {\"access_ttl\": \"1h\", \"refresh_ttl\": 0}"),
	             "field 'tokens.access_ttl' must be a number");
	/* Found by tests/fuzz (vendors): converted to int or long, these were undefined
	 * (numbers too large: out_of_range_numbers_are_refused). */
	expect_error(VENDOR(",\"guidance\": [{\"status\": NaN, \"class\": \"rejected\", "
	                    "\"message\": \"m\"}]"),
	             "field 'guidance[0].status' must be a finite number");
	expect_error("{\"schema\": Infinity, \"vendors\": []}", "field 'schema' must be");
}

/* Found by tests/fuzz (vendors): glibc's regcomp() took gigabytes for these. */
static void patterns_too_big_to_compile_are_refused(void **state)
{
	static const char *const big[] = {
	    "^a\\\\++++++++++++++++++++++++++++++++++++++++$",
	    "((a{255}){255}){255}",
	    "(a{2000})",
	    "[ab]{33}{33}",
	};
	const char *json = VENDOR(""), *at = strstr(json, "\"help\": \"h\"}");
	char *with = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
		assert_true(asprintf(&with,
		                     "%.*s\"help\": \"h\", \"fields\": [{\"name\": \"api_key\", "
		                     "\"label\": \"K\", \"help\": \"h\", \"pattern\": \"%s\"}]}%s",
		                     (int)(at - json), json, big[i],
		                     at + strlen("\"help\": \"h\"}")) > 0);
		expect_error(with, "has a 'pattern' too big to compile");
		free(with);
	}
}

/* Numbers that do not fit what they are read into are refused, not cast
 * (casting them is undefined behaviour). */
static void out_of_range_numbers_are_refused(void **state)
{
	(void)state;
	expect_error(VENDOR(",\"tokens\": {\"access_ttl\": 1e300, \"refresh_ttl\": 0}"),
	             "field 'tokens.access_ttl' is too large");
	expect_error(
	    VENDOR(",\"tokens\": {\"access_ttl\": 0, \"refresh_ttl\": 9223372036854775807}"),
	    "field 'tokens.refresh_ttl' is too large");
	expect_error(
	    VENDOR(",\"tokens\": {\"access_ttl\": 99999999999999999999999, \"refresh_ttl\": 0}"),
	    "field 'tokens.access_ttl' is too large");
	expect_error(VENDOR(",\"rate_limits\": [{\"requests\": 1, \"per_seconds\": 1, "
	                    "\"concurrency\": 1e10, \"per\": \"app\"}]"),
	             "field 'rate_limits[0].concurrency' is too large");
	expect_error(VENDOR(",\"guidance\": [{\"status\": 4294967697, \"class\": \"rejected\", "
	                    "\"message\": \"m\"}]"),
	             "field 'guidance[0].status' is too large");
	/* The largest that fit still load. */
	struct enr_catalog *cat = NULL;
	if (enr_catalog_load_string(&cat,
	                            VENDOR(",\"tokens\": {\"access_ttl\": 9007199254740992, "
	                                   "\"refresh_ttl\": 0}"),
	                            "t") != 0)
		fail_msg("%s", enr_error_last());
	enr_catalog_free(cat);
}

/* A NUL would cut a string (or the file) short without a word: refused. */
static void nul_characters_are_refused(void **state)
{
	struct enr_catalog *cat = NULL;
	char *path;
	FILE *f;

	(void)state;
	expect_error(VENDOR(",\"name\": \"Ac\\u0000me\""), "field 'name' must not contain a NUL");
	expect_error(VENDOR(",\"endpoints\": {\"api_url\": \"https://api.acme.test\\u0000.evil\"}"),
	             "field 'endpoints.api_url' must be an http(s) URL");
	expect_error(VENDOR(",\"unconfirmed\": [\"check\\u0000\"]"), "without NUL");
	assert_int_equal(asprintf(&path, "%s/nul-vendors.json", getenv("HOME")) > 0, 1);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(VENDOR(""), f);
	fputs("\n", f);
	fputc('\0', f);
	fputs("{\"schema\": 2}\n", f);
	fclose(f);
	assert_int_equal(enr_catalog_load(&cat, path), ENR_E_PARSE);
	assert_null(cat);
	assert_non_null(strstr(enr_error_last(), ":2: a NUL byte"));
	free(path);
}

static void duplicate_vendor_is_refused(void **state)
{
	char json[8192], one[4096];
	char *inner;

	(void)state;
	snprintf(one, sizeof(one), "%s", VENDOR(""));
	inner = strchr(one, '[') + 1;
	inner[strlen(inner) - 2] = '\0';
	snprintf(json, sizeof(json), "{\"schema\": 1, \"vendors\": [%s, %s]}", inner, inner);
	expect_error(json, "vendor 'acme' is listed twice");
}

static void missing_file_is_not_found(void **state)
{
	struct enr_catalog *cat = NULL;

	(void)state;
	assert_int_equal(enr_catalog_load(&cat, "/nonexistent/vendors.json"), ENR_E_NOTFOUND);
	assert_non_null(strstr(enr_error_last(), "/nonexistent/vendors.json"));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(real_catalogue_loads_every_vendor),
    cmocka_unit_test(catalogue_holds_the_vendor_facts),
    cmocka_unit_test(methods_are_looked_up_with_helpful_errors),
    cmocka_unit_test(config_overrides_endpoints),
    cmocka_unit_test(out_of_range_numbers_are_refused),
    cmocka_unit_test(nul_characters_are_refused),
    cmocka_unit_test(guidance_matches_text_before_status),
    cmocka_unit_test(unknown_vendor_sections_are_reported),
    cmocka_unit_test(minimal_vendor_is_valid),
    cmocka_unit_test(malformed_json_names_the_line),
    cmocka_unit_test(truncated_real_catalogue_is_refused),
    cmocka_unit_test(schema_and_vendor_list_are_required),
    cmocka_unit_test(missing_fields_name_vendor_and_field),
    cmocka_unit_test(unknown_method_is_refused),
    cmocka_unit_test(oauth_method_needs_oauth_and_endpoints),
    cmocka_unit_test(bad_values_are_refused),
    cmocka_unit_test(patterns_too_big_to_compile_are_refused),
    cmocka_unit_test(duplicate_vendor_is_refused),
    cmocka_unit_test(missing_file_is_not_found),
};

TEST_MAIN(tests)
