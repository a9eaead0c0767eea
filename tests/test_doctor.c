/* The doctor against the in-process sandbox: its config passes; each check
 * fails, naming the setting, when that setting is wrong; vendors without
 * settings are skipped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fixtures.h"
#include "helpers.h"
#include "derenroll/config.h"
#include "derenroll/doctor.h"
#include "derenroll/error.h"
#include "derenroll/sandbox.h"
#include "derenroll/vendor.h"

static int setup(void **state)
{
	struct test_world *w = calloc(1, sizeof(*w));

	assert_non_null(w);
	test_world_start(w, NULL);
	*state = w;
	return 0;
}

static int teardown(void **state)
{
	test_world_stop(*state);
	free(*state);
	return 0;
}

/* The result of `vendor`'s `check` (it must be there). */
static const struct enr_doctor_result *find(const struct enr_doctor_report *r, const char *vendor,
                                            const char *check)
{
	for (size_t i = 0; i < enr_doctor_count(r); i++) {
		const struct enr_doctor_result *x = enr_doctor_at(r, i);
		if (strcmp(x->vendor, vendor) == 0 && strcmp(x->check, check) == 0)
			return x;
	}
	fail_msg("no %s check of %s", check, vendor);
	return NULL;
}

static struct enr_doctor_report *run(struct test_world *f)
{
	struct enr_doctor_report *r = NULL;

	assert_int_equal(enr_doctor_run(&r, f->catalog, f->cfg), 0);
	for (size_t i = 0; i < enr_doctor_count(r); i++)
		assert_null(strchr(enr_doctor_at(r, i)->message, '\n'));
	return r;
}

static void sandbox_config_passes(void **state)
{
	struct test_world *f = *state;
	struct enr_doctor_report *r = run(f);

	assert_true(enr_doctor_passed(r));
	assert_int_equal(find(r, "sma", "client credentials")->outcome, ENR_DOCTOR_OK);
	assert_int_equal(find(r, "derapi", "client credentials")->outcome, ENR_DOCTOR_OK);
	assert_int_equal(find(r, "relay", "relay")->outcome, ENR_DOCTOR_OK);
	assert_int_equal(find(r, "solis", "company account")->outcome, ENR_DOCTOR_OK);
	assert_int_equal(find(r, "enphasevpp", "configured")->outcome, ENR_DOCTOR_SKIPPED);
	enr_doctor_report_free(r);
}

static void each_failure_names_the_setting(void **state)
{
	struct test_world *f = *state;
	struct enr_doctor_report *r;
	const struct enr_doctor_result *x;

	assert_int_equal(enr_config_set(f->cfg, "derapi", "client_secret", "wrong"), 0);
	assert_int_equal(enr_config_set(f->cfg, "vendor.tesla", "redirect_uri",
	                                enr_config_get(f->cfg, "relay", "url")),
	                 0);
	assert_int_equal(
	    enr_config_set(f->cfg, "vendor.sma", "redirect_uri", "http://127.0.0.1:8080/done"), 0);
	assert_int_equal(enr_config_set(f->cfg, "vendor.enphase", "client_id", ""), 0);
	r = run(f);
	assert_false(enr_doctor_passed(r));
	x = find(r, "derapi", "client credentials");
	assert_int_equal(x->outcome, ENR_DOCTOR_FAILED);
	assert_non_null(strstr(x->message, "[derapi] client_id"));
	assert_null(strstr(x->message, "wrong"));
	x = find(r, "tesla", "redirect URI");
	assert_int_equal(x->outcome, ENR_DOCTOR_FAILED);
	assert_non_null(strstr(x->message, "/callback"));
	assert_non_null(strstr(x->message, "[vendor.tesla] redirect_uri"));
	x = find(r, "sma", "redirect URI");
	assert_int_equal(x->outcome, ENR_DOCTOR_FAILED);
	assert_non_null(strstr(x->message, "[vendor.sma] redirect_uri"));
	x = find(r, "enphase", "app credentials");
	assert_int_equal(x->outcome, ENR_DOCTOR_FAILED);
	assert_non_null(strstr(x->message, "[vendor.enphase] client_id"));
	/* The rest still passes. */
	assert_int_equal(find(r, "sma", "client credentials")->outcome, ENR_DOCTOR_OK);
	enr_doctor_report_free(r);
}

static void without_relay_or_settings(void **state)
{
	struct test_world *f = *state;
	struct enr_config *cfg = NULL;
	struct enr_doctor_report *r = NULL;
	const struct enr_doctor_result *x;

	/* Only SMA, with a loopback redirect: the relay and the others are skipped. */
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_config_set(cfg, "vendor.sma", "client_id",
	                                enr_config_get(f->cfg, "vendor.sma", "client_id")),
	                 0);
	assert_int_equal(enr_config_set(cfg, "vendor.sma", "client_secret",
	                                enr_config_get(f->cfg, "vendor.sma", "client_secret")),
	                 0);
	assert_int_equal(enr_config_set(cfg, "vendor.sma", "token_url",
	                                enr_config_get(f->cfg, "vendor.sma", "token_url")),
	                 0);
	assert_int_equal(
	    enr_config_set(cfg, "vendor.sma", "redirect_uri", "http://127.0.0.1/callback"), 0);
	assert_int_equal(enr_doctor_run(&r, f->catalog, cfg), 0);
	assert_true(enr_doctor_passed(r));
	assert_non_null(strstr(find(r, "sma", "redirect URI")->message, "loopback"));
	x = find(r, "relay", "configured");
	assert_int_equal(x->outcome, ENR_DOCTOR_SKIPPED);
	assert_non_null(strstr(x->message, "[relay] url"));
	assert_int_equal(find(r, "tesla", "configured")->outcome, ENR_DOCTOR_SKIPPED);
	assert_int_equal(find(r, "derapi", "configured")->outcome, ENR_DOCTOR_SKIPPED);
	enr_doctor_report_free(r);
	enr_config_free(cfg);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(sandbox_config_passes, setup, teardown),
    cmocka_unit_test_setup_teardown(each_failure_names_the_setting, setup, teardown),
    cmocka_unit_test_setup_teardown(without_relay_or_settings, setup, teardown),
};

CURL_TEST_MAIN(tests)
