#ifndef DERENROLL_TEST_FIXTURES_H
#define DERENROLL_TEST_FIXTURES_H

/* Shared fixtures of the http and oauth tests. */

#include <stdbool.h>

#include "derenroll/http.h"
#include "helpers.h"

struct enr_vendor;

/* A vendor of the real catalogue (assets/vendors.json, loaded once). */
const struct enr_vendor *test_vendor(const char *id);
void test_catalog_free(void);

/* A response as a finished transfer gives it, for classification tests:
 * `body` is borrowed, `where` is a fixed https URL. */
struct enr_http_response test_response(long status, const char *body, const char *vendor_id,
                                       bool token_call);

/* Asserts that `got` (malloc'd, freed here) is `expected`, NULL meaning absent. */
void test_expect_string(char *got, const char *expected);

/* TEST_MAIN, also freeing the catalogue and the registered secrets. */
#define NET_TEST_MAIN(tests)                                                                       \
	int main(void)                                                                             \
	{                                                                                          \
		int failed;                                                                        \
		test_env_setup();                                                                  \
		failed = cmocka_run_group_tests(tests, NULL, NULL);                                \
		test_catalog_free();                                                               \
		test_env_cleanup();                                                                \
		return failed;                                                                     \
	}

#endif
