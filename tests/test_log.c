#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "helpers.h"
#include "derenroll/error.h"
#include "derenroll/log.h"

static char *log_path;

static int setup(void **state)
{
	const char *home = getenv("HOME");
	static int n;

	(void)state;
	free(log_path);
	if (asprintf(&log_path, "%s/logs/%d/test.log", home, n++) < 0)
		return -1;
	enr_log_set_level(ENR_LOG_INFO);
	return enr_log_open(log_path);
}

static int teardown(void **state)
{
	(void)state;
	enr_log_close();
	enr_log_clear_secrets();
	return 0;
}

static void lines_go_to_the_file_with_level(void **state)
{
	char *content;
	struct stat st;

	(void)state;
	enr_log_info("hello %d", 42);
	enr_log_debug("not shown at info level");
	enr_log_close();
	content = test_read_file(log_path);
	assert_non_null(content);
	assert_non_null(strstr(content, "info: hello 42\n"));
	assert_null(strstr(content, "not shown"));
	assert_int_equal(stat(log_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(content);
}

static void registered_secret_never_appears(void **state)
{
	const char *secret = "rt-7f3a9c-SECRET";
	char *content;

	(void)state;
	assert_int_equal(enr_log_add_secret(secret), 0);
	enr_log_info("refresh_token=%s&client_id=abc", secret);
	enr_log_warn("%s%s", secret, secret);
	enr_log_error("url https://x/token?refresh_token=%s", secret);
	enr_log_close();
	content = test_read_file(log_path);
	assert_non_null(content);
	assert_null(strstr(content, "SECRET"));
	assert_null(strstr(content, "7f3a9c"));
	assert_non_null(strstr(content, "refresh_token=[redacted]&client_id=abc"));
	assert_non_null(strstr(content, "[redacted][redacted]"));
	free(content);
}

static void longest_overlapping_secret_wins(void **state)
{
	char out[128];

	(void)state;
	enr_log_add_secret("abcd1234");
	enr_log_add_secret("abcd1234efgh");
	enr_log_redact(out, sizeof(out), "x abcd1234efgh y abcd1234 z");
	assert_string_equal(out, "x [redacted] y [redacted] z");
}

/* 50,000 secrets (a bulk refresh of thousands of records registers them all):
 * each is still redacted, and a line costs what it costs with a few. The
 * lookups below are 2,000,000 character positions: with the secrets in one
 * list (50,000 comparisons a position) this test does not end in its time. */
static void many_secrets_stay_cheap(void **state)
{
	enum { N_SECRETS = 50000, N_LINES = 1000, LINE_LEN = 2000 };
	char secret[32], line[LINE_LEN + 1], out[4 * LINE_LEN];

	(void)state;
	for (int i = 0; i < N_SECRETS; i++) {
		snprintf(secret, sizeof(secret), "tok-%06d-%08x", i, (unsigned)i * 2654435761u);
		assert_int_equal(enr_log_add_secret(secret), 0);
	}
	/* Registering one twice keeps one copy: still redacted once. */
	assert_int_equal(enr_log_add_secret(secret), 0);
	snprintf(line, sizeof(line), "a=%s b=tok-000000-%08x c=tok-123", secret, 0u);
	enr_log_redact(out, sizeof(out), line);
	assert_string_equal(out, "a=[redacted] b=[redacted] c=tok-123");
	for (int i = 0; i < LINE_LEN; i++)
		line[i] = "tok-0123456789abcdef"[i % 20];
	line[LINE_LEN] = '\0';
	for (int i = 0; i < N_LINES; i++)
		assert_int_equal(enr_log_redact(out, sizeof(out), line), LINE_LEN);
}

static void short_strings_are_not_treated_as_secrets(void **state)
{
	char out[64];

	(void)state;
	enr_log_add_secret("abc");
	enr_log_add_secret("");
	enr_log_add_secret(NULL);
	enr_log_redact(out, sizeof(out), "abc is fine");
	assert_string_equal(out, "abc is fine");
}

static void redaction_respects_small_buffers(void **state)
{
	char out[8];

	(void)state;
	enr_log_add_secret("supersecret");
	assert_int_equal(enr_log_redact(out, sizeof(out), "supersecret tail"), 7);
	assert_string_equal(out, "[redact");
	assert_null(strstr(out, "super"));
}

static void newlines_cannot_forge_log_lines(void **state)
{
	char *content, *nl;

	(void)state;
	enr_log_info("a\nderenroll: error: forged");
	enr_log_close();
	content = test_read_file(log_path);
	assert_non_null(content);
	nl = strchr(content, '\n');
	assert_non_null(nl);
	assert_string_equal(nl + 1, "");
	free(content);
}

static void level_names_parse(void **state)
{
	enum enr_log_level level;

	(void)state;
	assert_int_equal(enr_log_parse_level(&level, "debug"), 0);
	assert_int_equal(level, ENR_LOG_DEBUG);
	assert_int_equal(enr_log_parse_level(&level, "warn"), 0);
	assert_int_equal(level, ENR_LOG_WARN);
	assert_int_equal(enr_log_parse_level(&level, "loud"), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "loud"));
}

static void unopenable_file_is_an_error(void **state)
{
	(void)state;
	/* A path below a regular file cannot be created, even by root. */
	assert_int_equal(enr_log_open("/etc/passwd/derenroll.log"), ENR_E_IO);
	assert_non_null(strstr(enr_error_last(), "/etc/passwd"));
}

static void default_path_follows_xdg_state_home(void **state)
{
	char *path = enr_log_default_path();
	char expect[512];

	(void)state;
	snprintf(expect, sizeof(expect), "%s/derenroll/derenroll.log", getenv("XDG_STATE_HOME"));
	assert_string_equal(path, expect);
	free(path);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(lines_go_to_the_file_with_level, setup, teardown),
    cmocka_unit_test_setup_teardown(registered_secret_never_appears, setup, teardown),
    cmocka_unit_test_setup_teardown(longest_overlapping_secret_wins, setup, teardown),
    cmocka_unit_test_setup_teardown(short_strings_are_not_treated_as_secrets, setup, teardown),
    cmocka_unit_test_setup_teardown(redaction_respects_small_buffers, setup, teardown),
    cmocka_unit_test_setup_teardown(newlines_cannot_forge_log_lines, setup, teardown),
    cmocka_unit_test_setup_teardown(many_secrets_stay_cheap, setup, teardown),
    cmocka_unit_test_setup_teardown(level_names_parse, setup, teardown),
    cmocka_unit_test_setup_teardown(unopenable_file_is_an_error, setup, teardown),
    cmocka_unit_test_setup_teardown(default_path_follows_xdg_state_home, setup, teardown),
};

TEST_MAIN(tests)
