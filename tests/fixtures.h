#ifndef DERENROLL_TEST_FIXTURES_H
#define DERENROLL_TEST_FIXTURES_H

/* Shared fixtures of the http and oauth tests. */

#include <stdbool.h>

#include "derenroll/http.h"
#include "helpers.h"

struct enr_vendor;
struct enr_catalog;
struct enr_config;
struct enr_sandbox;
struct enr_sandbox_options;

/* The in-process sandbox with the real catalogue and a config pointing at it. */
struct test_world {
	struct enr_catalog *catalog;
	struct enr_sandbox *sb;
	struct enr_config *cfg;
};

/* Starts it with `options` (their catalog is set to the world's; NULL: the
 * defaults); asserts on failure. test_world_stop() undoes it. */
void test_world_start(struct test_world *w, const struct enr_sandbox_options *options);
void test_world_stop(struct test_world *w);

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

/* TEST_MAIN for programs that talk HTTP through libcurl themselves. */
#define CURL_TEST_MAIN(tests)                                                                      \
	int main(void)                                                                             \
	{                                                                                          \
		int failed;                                                                        \
		test_env_setup();                                                                  \
		curl_global_init(CURL_GLOBAL_DEFAULT);                                             \
		failed = cmocka_run_group_tests(tests, NULL, NULL);                                \
		curl_global_cleanup();                                                             \
		test_env_cleanup();                                                                \
		return failed;                                                                     \
	}

#endif
