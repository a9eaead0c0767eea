#include <pthread.h>
#include <string.h>

#include "helpers.h"
#include "derenroll/error.h"
#include "derenroll/log.h"

static void set_returns_code_and_keeps_message(void **state)
{
	(void)state;
	assert_int_equal(enr_error_set(ENR_E_CONFIG, "bad %s at line %d", "key", 12), ENR_E_CONFIG);
	assert_int_equal(enr_error_last_code(), ENR_E_CONFIG);
	assert_string_equal(enr_error_last(), "bad key at line 12");
	enr_error_clear();
	assert_string_equal(enr_error_last(), "");
	assert_int_equal(enr_error_last_code(), 0);
}

static void null_format_uses_table_message(void **state)
{
	(void)state;
	enr_error_set(ENR_E_NOMEM, NULL);
	assert_string_equal(enr_error_last(), "out of memory");
	assert_string_equal(enr_error_name(ENR_E_LOCKED), "LOCKED");
	assert_string_equal(enr_error_name(12345), "UNKNOWN");
}

static void exit_codes_follow_the_contract(void **state)
{
	(void)state;
	assert_int_equal(enr_error_exit_code(ENR_E_OK), 0);
	assert_int_equal(enr_error_exit_code(ENR_E_REJECTED), 1);
	assert_int_equal(enr_error_exit_code(ENR_E_DECLINED), 1);
	assert_int_equal(enr_error_exit_code(ENR_E_EXPIRED), 1);
	assert_int_equal(enr_error_exit_code(ENR_E_USAGE), 2);
	assert_int_equal(enr_error_exit_code(ENR_E_CONFIG), 2);
	assert_int_equal(enr_error_exit_code(ENR_E_MISCONFIGURED), 2);
	assert_int_equal(enr_error_exit_code(ENR_E_TRANSIENT), 3);
	assert_int_equal(enr_error_exit_code(ENR_E_BADRESPONSE), 3);
	assert_int_equal(enr_error_exit_code(ENR_E_PASSPHRASE), 4);
	assert_int_equal(enr_error_exit_code(ENR_E_CORRUPT), 4);
	assert_int_equal(enr_error_exit_code(ENR_E_LOCKED), 4);
}

static void messages_are_one_line(void **state)
{
	(void)state;
	enr_error_set(ENR_E_PARSE, "first\nsecond\r\tthird");
	assert_null(strchr(enr_error_last(), '\n'));
	assert_null(strchr(enr_error_last(), '\r'));
	assert_string_equal(enr_error_last(), "first second  third");
}

static void long_messages_are_truncated_not_overflowed(void **state)
{
	char big[4096];

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	enr_error_set(ENR_E_PARSE, "%s", big);
	assert_true(strlen(enr_error_last()) < sizeof(big));
	assert_true(strlen(enr_error_last()) > 100);
}

static void errno_variant_appends_strerror(void **state)
{
	(void)state;
	enr_error_set_errno(ENR_E_IO, 2, "cannot read %s", "/nowhere");
	assert_string_equal(enr_error_last(), "cannot read /nowhere: No such file or directory");
}

static void secrets_never_reach_messages(void **state)
{
	(void)state;
	assert_int_equal(enr_log_add_secret("tok-SECRET-12345"), 0);
	enr_error_set(ENR_E_REJECTED, "token tok-SECRET-12345 refused");
	assert_null(strstr(enr_error_last(), "SECRET"));
	assert_string_equal(enr_error_last(), "token [redacted] refused");
	enr_log_clear_secrets();
}

static void *other_thread(void *arg)
{
	(void)arg;
	enr_error_set(ENR_E_TIMEOUT, "from the other thread");
	return NULL;
}

static void last_error_is_per_thread(void **state)
{
	pthread_t t;

	(void)state;
	enr_error_set(ENR_E_CONFIG, "main thread");
	assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
	pthread_join(t, NULL);
	assert_string_equal(enr_error_last(), "main thread");
	assert_int_equal(enr_error_last_code(), ENR_E_CONFIG);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(set_returns_code_and_keeps_message),
    cmocka_unit_test(null_format_uses_table_message),
    cmocka_unit_test(exit_codes_follow_the_contract),
    cmocka_unit_test(messages_are_one_line),
    cmocka_unit_test(long_messages_are_truncated_not_overflowed),
    cmocka_unit_test(errno_variant_appends_strerror),
    cmocka_unit_test(secrets_never_reach_messages),
    cmocka_unit_test(last_error_is_per_thread),
};

TEST_MAIN(tests)
