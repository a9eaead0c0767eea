/* The recorded vendor answers (assets/answers): every file is a valid
 * recording, and the client's parsers read each one as the file says a
 * correct client must; the sandbox's refill of a site list keeps its shape. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "helpers.h"
#include "answers.h"
#include "enroll_internal.h"
#include "derenroll/oauth.h"
#include "derenroll/check.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "util.h"
#include "vendor_internal.h"

static const char *str_at(json_object *obj, const char *path)
{
	json_object *v = enr_util_json_at(obj, path);
	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* The response a vendor would have sent: status, content type and body of the file. */
static struct enr_http_response *response_of(json_object *rec, const struct enr_vendor *vendor)
{
	struct enr_http_response *resp = calloc(1, sizeof(*resp));
	json_object *body = enr_util_json_at(rec, "body"),
	            *status = enr_util_json_at(rec, "status");
	const char *type = str_at(rec, "headers.Content-Type");
	const char *text;

	assert_non_null(resp);
	text = json_object_is_type(body, json_type_string)
	           ? json_object_get_string(body)
	           : json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	resp->status = status ? json_object_get_int(status) : 200;
	resp->body = strdup(text);
	resp->body_len = strlen(text);
	resp->content_type = strdup(type ? type : "application/json");
	resp->retry_after = -1;
	resp->vendor = vendor;
	resp->endpoint = strdup("api_url");
	resp->where = enr_util_printf("https://%s.example/recorded", vendor->id);
	return resp;
}

static int error_class(const char *name)
{
	int code = 0;

	if (enr_vendor__error_class(&code, name) < 0)
		fail_msg("unknown error class '%s' in a recording's expect", name);
	return code;
}

/* A failure the recording expects: its class, and a one-line message with the text. */
static void expect_failure(const char *file, json_object *rec, int rc)
{
	const char *want_error = str_at(rec, "expect.error");
	const char *want_message = str_at(rec, "expect.message");

	if (rc != error_class(want_error))
		fail_msg("%s: expected a %s failure, got %d (%s)", file, want_error, rc,
		         rc < 0 ? enr_error_last() : "success");
	if (want_message && !strcasestr(enr_error_last(), want_message))
		fail_msg("%s: message '%s' lacks '%s'", file, enr_error_last(), want_message);
	if (strchr(enr_error_last(), '\n'))
		fail_msg("%s: the message is more than one line", file);
}

/* `parser: check`: enr_check_response() finds exactly the expected sites, or fails as expected. */
static void check_parser(const char *file, json_object *rec, const struct enr_catalog *cat,
                         const struct enr_vendor *vendor)
{
	(void)cat;
	struct enr_http_response *resp = response_of(rec, vendor);
	struct enr_check_result *result = NULL;
	json_object *want_sites = enr_util_json_at(rec, "expect.sites");
	int rc = enr_check_response(&result, vendor, resp);

	if (str_at(rec, "expect.error")) {
		expect_failure(file, rec, rc);
	} else {
		size_t n;
		if (rc != 0)
			fail_msg("%s: the client failed to read it: %s", file, enr_error_last());
		assert_non_null(want_sites);
		n = json_object_array_length(want_sites);
		if (result->n_sites != n)
			fail_msg("%s: %zu sites read, %zu expected", file, result->n_sites, n);
		for (size_t i = 0; i < n; i++) {
			json_object *want = json_object_array_get_idx(want_sites, i);
			assert_string_equal(result->sites[i].id, str_at(want, "id"));
			assert_string_equal(result->sites[i].name, str_at(want, "name"));
		}
	}
	enr_check_result_free(result);
	enr_http_response_free(resp);
}

/* `parser: bc`: SMA's consent poll, read by the enrollment's parser. */
static void bc_parser(const char *file, json_object *rec, const struct enr_catalog *cat,
                      const struct enr_vendor *vendor)
{
	(void)cat;
	struct enr_http_response *resp = response_of(rec, vendor);
	const char *want = str_at(rec, "expect.state");
	int rc = enr_enroll__bc_answer(resp);

	if (str_at(rec, "expect.error"))
		expect_failure(file, rec, rc);
	else if (rc != (strcmp(want, "accepted") == 0 ? 1 : 0))
		fail_msg("%s: read as %d (%s), expected %s", file, rc,
		         rc < 0 ? enr_error_last() : "", want);
	enr_http_response_free(resp);
}

/* `parser: token`: the OAuth token answer parser finds what the recording holds. */
static void token_parser(const char *file, json_object *rec, const struct enr_catalog *cat,
                         const struct enr_vendor *vendor)
{
	(void)cat;
	struct enr_http_response *resp = response_of(rec, vendor);
	struct enr_oauth_tokens *t = NULL;
	const char *refresh = str_at(rec, "expect.refresh_token");
	json_object *expires = enr_util_json_at(rec, "expect.expires_in");
	int rc = enr_oauth_token_response(&t, resp);

	if (str_at(rec, "expect.error")) {
		expect_failure(file, rec, rc);
	} else {
		if (rc != 0)
			fail_msg("%s: the token answer was refused: %s", file, enr_error_last());
		assert_string_equal(t->access_token, str_at(rec, "expect.access_token"));
		if (refresh)
			assert_string_equal(t->refresh_token, refresh);
		else
			assert_null(t->refresh_token);
		if (expires)
			assert_int_equal(t->access_expires_at - t->obtained_at,
			                 json_object_get_int64(expires));
	}
	enr_oauth_tokens_free(t);
	enr_http_response_free(resp);
}

/* `parser: join_flow`: the flow id is read, and each expected vendor is found in it. */
static void join_flow_parser(const char *file, json_object *rec, const struct enr_catalog *cat,
                             const struct enr_vendor *vendor)
{
	(void)vendor;
	const struct enr_vendor *derapi = enr_catalog_find(cat, "derapi");
	struct enr_http_response *resp = response_of(rec, derapi);
	json_object *vendors = enr_util_json_at(rec, "expect.vendors");
	char *id = NULL;

	if (enr_join_flow_response(&id, resp) != 0)
		fail_msg("%s: the client failed to read it: %s", file, enr_error_last());
	assert_string_equal(id, str_at(rec, "expect.flow_id"));
	for (size_t i = 0; vendors && i < json_object_array_length(vendors); i++) {
		const char *v = json_object_get_string(json_object_array_get_idx(vendors, i));
		if (enr_join_flow_has_vendor(resp, id, enr_catalog_find(cat, v)) != 0)
			fail_msg("%s: %s not found in the flow: %s", file, v, enr_error_last());
	}
	free(id);
	enr_http_response_free(resp);
}

static void expect_str(const char *file, const char *what, const char *got, const char *want)
{
	if (!want != !got || (want && strcmp(got, want) != 0))
		fail_msg("%s: %s is '%s', the recording expects '%s'", file, what,
		         got ? got : "(none)", want ? want : "(none)");
}

/* The Derapi Join parsers: fetch-token (enr_join_fetch_response and the
 * relay's kept copy, enr_join_fetch_parse), session start, auth-granted's
 * rule, and the widget's vendor list shape. */
static void join_parser(const char *file, json_object *rec, const struct enr_catalog *cat,
                        const struct enr_vendor *vendor)
{
	const char *parser = str_at(rec, "parser");

	(void)cat;
	struct enr_http_response *resp = response_of(rec, vendor);
	json_object *expect = enr_util_json_at(rec, "expect"),
	            *body = enr_util_json_at(rec, "body");

	if (strcmp(parser, "join-fetch") == 0) {
		struct enr_join_credentials *c[2] = {NULL, NULL};
		assert_int_equal(enr_join_fetch_response(&c[0], resp), 0);
		assert_int_equal(enr_join_fetch_parse(&c[1], resp->body), 0);
		for (int i = 0; i < 2; i++) {
			const struct enr_oauth_tokens *t = c[i]->tokens;
			json_object *exp = enr_util_json_at(expect, "expires_in");
			expect_str(file, "vendor", c[i]->vendor, str_at(expect, "vendor"));
			expect_str(file, "access token", t ? t->access_token : NULL,
			           str_at(expect, "access_token"));
			expect_str(file, "refresh token", t ? t->refresh_token : NULL,
			           str_at(expect, "refresh_token"));
			expect_str(file, "key id", c[i]->key_id, str_at(expect, "key_id"));
			expect_str(file, "key secret", c[i]->key_secret,
			           str_at(expect, "key_secret"));
			expect_str(file, "site id", c[i]->site_id, str_at(expect, "site_id"));
			if (exp)
				assert_int_equal(t->access_expires_at - t->obtained_at,
				                 json_object_get_int64(exp));
			enr_join_credentials_free(c[i]);
		}
	} else if (strcmp(parser, "join-session") == 0) {
		char *id = NULL;
		assert_int_equal(enr_join_session_response(&id, resp), 0);
		expect_str(file, "sessionID", id, str_at(body, "sessionID"));
		free(id);
	} else if (strcmp(parser, "join-auth-granted") == 0) {
		if (enr_join_auth_granted(resp->status, resp->body) !=
		    json_object_get_boolean(enr_util_json_at(expect, "granted")))
			fail_msg("%s: auth-granted read the wrong way", file);
	} else if (strcmp(parser, "join-vendors") == 0) {
		/* What the widget reads: a bare array; key vendors without oAuthEndpoint. */
		assert_true(json_object_is_type(body, json_type_array));
		for (size_t i = 0; i < json_object_array_length(body); i++) {
			json_object *e = json_object_array_get_idx(body, i);
			const char *id = str_at(e, "id");
			bool key_vendor =
			    id && (strcmp(id, "solis") == 0 || strcmp(id, "solaredge") == 0);
			assert_non_null(id);
			assert_non_null(str_at(e, "name"));
			assert_non_null(str_at(e, "base64Logo"));
			assert_true(key_vendor != (str_at(e, "oAuthEndpoint") != NULL));
		}
	} else {
		fail_msg("%s: unknown parser '%s'", file, parser);
	}
	enr_http_response_free(resp);
}

static void every_recording_is_valid_and_read_as_expected(void **state)
{
	struct enr_catalog *cat = NULL;
	char *dir_path = enr_config_asset_path("answers");
	DIR *top = opendir(dir_path);
	struct dirent *v;
	size_t files = 0, parsed = 0;
	static const struct {
		const char *name;
		void (*run)(const char *file, json_object *rec, const struct enr_catalog *cat,
		            const struct enr_vendor *vendor);
	} parsers[] = {{"check", check_parser},
	               {"bc", bc_parser},
	               {"token", token_parser},
	               {"join_flow", join_flow_parser},
	               {"join-", join_parser}}; /* join-fetch, join-session, ... */
	size_t i;

	(void)state;
	assert_int_equal(enr_catalog_load(&cat, NULL), 0);
	assert_non_null(top);
	while ((v = readdir(top))) {
		char *sub;
		DIR *d;
		struct dirent *f;
		if (v->d_name[0] == '.')
			continue;
		sub = enr_util_printf("%s/%s", dir_path, v->d_name);
		d = opendir(sub);
		free(sub);
		if (!d)
			continue; /* README.md */
		if (!enr_catalog_find(cat, v->d_name))
			fail_msg("answers/%s: not a vendor of vendors.json", v->d_name);
		while ((f = readdir(d))) {
			size_t len = strlen(f->d_name);
			char name[256], file[512];
			json_object *rec = NULL;
			const char *parser;
			if (len < 6 || strcmp(f->d_name + len - 5, ".json") != 0)
				continue;
			snprintf(name, sizeof(name), "%.*s", (int)(len - 5), f->d_name);
			snprintf(file, sizeof(file), "answers/%s/%s", v->d_name, f->d_name);
			if (enr_answers__get(&rec, v->d_name, name) != 0)
				fail_msg("%s: %s", file, enr_error_last());
			if (!enr_util_json_at(rec, "confirmed"))
				fail_msg("%s: says nothing of \"confirmed\"", file);
			if (json_object_get_boolean(enr_util_json_at(rec, "confirmed")) == 0 &&
			    !str_at(rec, "note"))
				fail_msg("%s: unconfirmed without a note saying what is guessed",
				         file);
			files++;
			parser = str_at(rec, "parser");
			for (i = 0; parser && i < ENR_ARRAY_SIZE(parsers); i++)
				if (strncmp(parser, parsers[i].name, strlen(parsers[i].name)) ==
				        0 &&
				    (parser[strlen(parsers[i].name)] == '\0' ||
				     parsers[i].name[strlen(parsers[i].name) - 1] == '-')) {
					parsers[i].run(file, rec, cat,
					               enr_catalog_find(cat, v->d_name));
					parsed++;
					break;
				}
			if (parser && i == ENR_ARRAY_SIZE(parsers))
				fail_msg("%s: unknown parser '%s'", file, parser);
		}
		closedir(d);
	}
	closedir(top);
	print_message("# %zu recordings, %zu read by the client's parsers\n", files, parsed);
	assert_true(files >= 2);
	assert_true(parsed >= 1);
	free(dir_path);
	enr_catalog_free(cat);
}

static void site_list_refill_keeps_the_recorded_shape(void **state)
{
	static const struct enr_answers_site sites[] = {{"111", "One"}, {"222", "Two"}};
	json_object *body = NULL, *records, *total;

	(void)state;
	assert_int_equal(enr_answers__sites(&body, "solis", "userStationList", sites, 2), 0);
	records = enr_util_json_at(body, "data.page.records");
	assert_non_null(records);
	assert_int_equal(json_object_array_length(records), 2);
	/* Solis sends ids as strings: a digit id stays a string. */
	assert_true(json_object_is_type(
	    enr_util_json_at(json_object_array_get_idx(records, 1), "id"), json_type_string));
	assert_string_equal(str_at(json_object_array_get_idx(records, 1), "stationName"), "Two");
	/* The other recorded fields come along. */
	assert_non_null(enr_util_json_at(json_object_array_get_idx(records, 0), "capacity"));
	total = enr_util_json_at(body, "data.page.total");
	assert_int_equal(json_object_get_int(total), 2);
	assert_string_equal(str_at(body, "code"), "0");
	json_object_put(body);
}

static void derapi_vendor_refill_stays_a_bare_array(void **state)
{
	static const struct enr_answers_site vendors[] = {{"tesla", "Tesla"}, {"solis", "Solis"}};
	json_object *body = NULL;

	(void)state;
	assert_int_equal(enr_answers__sites(&body, "derapi", "vendors", vendors, 2), 0);
	assert_true(json_object_is_type(body, json_type_array));
	assert_int_equal(json_object_array_length(body), 2);
	assert_string_equal(str_at(json_object_array_get_idx(body, 1), "id"), "solis");
	assert_string_equal(str_at(json_object_array_get_idx(body, 1), "name"), "Solis");
	assert_non_null(str_at(json_object_array_get_idx(body, 1), "base64Logo"));
	json_object_put(body);
}

static void set_only_replaces_recorded_fields(void **state)
{
	json_object *body = NULL;

	(void)state;
	assert_int_equal(enr_answers__body(&body, "solis", "userStationList"), 0);
	assert_true(enr_answers__set(body, "msg", json_object_new_string("ok")));
	assert_string_equal(str_at(body, "msg"), "ok");
	assert_false(enr_answers__set(body, "no_such_field", json_object_new_string("x")));
	assert_null(enr_util_json_at(body, "no_such_field"));
	assert_false(enr_answers__set(body, "data.nothing.here", json_object_new_int(1)));
	json_object_put(body);
	assert_int_equal(enr_answers__status("solis", "userStationList"), 200);
}

static void missing_and_bad_names_fail_clearly(void **state)
{
	json_object *rec = NULL;

	(void)state;
	assert_int_equal(enr_answers__get(&rec, "solis", "no-such-answer"), ENR_E_NOTFOUND);
	assert_non_null(strstr(enr_error_last(), "solis/no-such-answer"));
	assert_int_equal(enr_answers__get(&rec, "../etc", "passwd"), ENR_E_USAGE);
	assert_null(rec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(every_recording_is_valid_and_read_as_expected),
	    cmocka_unit_test(site_list_refill_keeps_the_recorded_shape),
	    cmocka_unit_test(set_only_replaces_recorded_fields),
	    cmocka_unit_test(derapi_vendor_refill_stays_a_bare_array),
	    cmocka_unit_test(missing_and_bad_names_fail_clearly),
	};
	int failed;

	test_env_setup();
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	enr_answers__flush();
	test_env_cleanup();
	return failed;
}
