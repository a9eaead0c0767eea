#ifndef DERENROLL_TEST_HELPERS_H
#define DERENROLL_TEST_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

/*
 * Gives the test process a clean environment: every DERENROLL_* variable
 * removed, HOME and the XDG directories pointed into a fresh temporary
 * directory (returned; removed by test_env_cleanup()).
 */
const char *test_env_setup(void);
void test_env_cleanup(void);

/* Writes `content` to dir/name with `mode`; returns the malloc'd path. */
char *test_write_file(const char *dir, const char *name, const char *content, int mode);

/* Reads a whole file; malloc'd, NUL-terminated, or NULL. */
char *test_read_file(const char *path);

/* Runs the cmocka group with the clean environment around it. */
#define TEST_MAIN(tests)                                                                           \
	int main(void)                                                                             \
	{                                                                                          \
		int failed;                                                                        \
		test_env_setup();                                                                  \
		failed = cmocka_run_group_tests(tests, NULL, NULL);                                \
		test_env_cleanup();                                                                \
		return failed;                                                                     \
	}

#endif
