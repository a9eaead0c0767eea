#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/sandbox.h"
#include "derenroll/vendor.h"
#include "fixtures.h"

static struct enr_catalog *catalog;

const struct enr_vendor *test_vendor(const char *id)
{
	const struct enr_vendor *v;

	if (!catalog && enr_catalog_load(&catalog, NULL) < 0) {
		fprintf(stderr, "test_vendor: %s\n", enr_error_last());
		abort();
	}
	v = enr_catalog_find(catalog, id);
	assert_non_null(v);
	return v;
}

void test_catalog_free(void)
{
	enr_catalog_free(catalog);
	catalog = NULL;
	enr_log_clear_secrets();
}

struct enr_http_response test_response(long status, const char *body, const char *vendor_id,
                                       bool token_call)
{
	struct enr_http_response r = {0};

	r.status = status;
	r.body = (char *)body;
	r.body_len = strlen(body);
	r.retry_after = -1;
	r.vendor = vendor_id ? test_vendor(vendor_id) : NULL;
	r.where = (char *)"https://api.example.com/v1/things";
	r.token_call = token_call;
	return r;
}

void test_expect_string(char *got, const char *expected)
{
	if (!expected) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	assert_string_equal(got, expected);
	free(got);
}

void test_world_start(struct test_world *w, const struct enr_sandbox_options *options)
{
	struct enr_sandbox_options o = {0};

	if (options)
		o = *options;
	memset(w, 0, sizeof(*w));
	assert_int_equal(enr_catalog_load(&w->catalog, NULL), 0);
	o.catalog = w->catalog;
	assert_int_equal(enr_sandbox_start(&w->sb, &o), 0);
	assert_int_equal(enr_sandbox_config(&w->cfg, w->sb), 0);
}

void test_world_stop(struct test_world *w)
{
	enr_sandbox_stop(w->sb);
	enr_config_free(w->cfg);
	enr_catalog_free(w->catalog);
	memset(w, 0, sizeof(*w));
}
