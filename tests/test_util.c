#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "derenroll/error.h"
#include "util.h"

static void base64_matches_rfc4648_vectors(void **state)
{
	static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const std[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
	                                  "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};

	(void)state;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *a = enr_util_base64_encode(in[i], strlen(in[i]), false);
		char *b = enr_util_base64_encode(in[i], strlen(in[i]), true);
		unsigned char *back = NULL;
		size_t len = 0;
		assert_string_equal(a, std[i]);
		assert_string_equal(b, url[i]);
		assert_int_equal(enr_util_base64_decode(&back, &len, a), 0);
		assert_int_equal(len, strlen(in[i]));
		assert_memory_equal(back, in[i], len);
		free(back);
		assert_int_equal(enr_util_base64_decode(&back, &len, b), 0);
		assert_memory_equal(back, in[i], len);
		free(back);
		free(a);
		free(b);
	}
}

static void base64_url_alphabet_and_errors(void **state)
{
	const unsigned char bytes[] = {0xfb, 0xff, 0xbf};
	unsigned char *back = NULL;
	char *s;

	(void)state;
	s = enr_util_base64_encode(bytes, sizeof(bytes), true);
	assert_string_equal(s, "-_-_");
	free(s);
	s = enr_util_base64_encode(bytes, sizeof(bytes), false);
	assert_string_equal(s, "+/+/");
	free(s);
	assert_int_equal(enr_util_base64_decode(&back, NULL, "ab$d"), ENR_E_PARSE);
	assert_int_equal(enr_util_base64_decode(&back, NULL, "abcde"), ENR_E_PARSE);
	assert_null(back);
}

static void random_tokens_are_distinct_and_sized(void **state)
{
	char *a = enr_util_random_token(16), *b = enr_util_random_token(16);

	(void)state;
	assert_int_equal(strlen(a), 22); /* 128 bits in base64url, no padding */
	assert_string_not_equal(a, b);
	assert_null(strpbrk(a, "+/="));
	free(a);
	free(b);
	assert_null(enr_util_random_token(65));
}

static void urlencode_round_trips(void **state)
{
	char *e = enr_util_urlencode("a b&c=d/é~_.-");

	(void)state;
	assert_string_equal(e, "a%20b%26c%3Dd%2F%C3%A9~_.-");
	assert_string_equal(enr_util_urldecode(e), "a b&c=d/é~_.-");
	free(e);
	{
		char plus[] = "x+y%2";
		assert_string_equal(enr_util_urldecode(plus), "x y%2");
	}
}

static void rfc3339_round_trips(void **state)
{
	char buf[32];
	long long t = 0;

	(void)state;
	enr_util_rfc3339(buf, sizeof(buf), 1795741323LL);
	assert_string_equal(buf, "2026-11-27T01:02:03Z");
	assert_int_equal(enr_util_parse_rfc3339(&t, buf), 0);
	assert_int_equal(t, 1795741323LL);
	assert_int_equal(enr_util_parse_rfc3339(&t, "2026-11-27T01:02:03.250+00:00"), 0);
	assert_int_equal(t, 1795741323LL);
	assert_int_equal(enr_util_parse_rfc3339(&t, "2026-11-27T01:02:03+02:00"), ENR_E_PARSE);
	assert_int_equal(enr_util_parse_rfc3339(&t, "yesterday"), ENR_E_PARSE);
}

static void trim_and_read_file(void **state)
{
	char s[] = " \t value \r\n";
	char *path, *content = NULL;
	size_t len = 0;

	(void)state;
	assert_string_equal(enr_util_trim(s), "value");
	path = test_write_file(getenv("HOME"), "f.txt", "0123456789", 0600);
	assert_int_equal(enr_util_read_file(&content, &len, path, 100), 0);
	assert_int_equal(len, 10);
	assert_string_equal(content, "0123456789");
	free(content);
	assert_int_equal(enr_util_read_file(&content, &len, path, 5), ENR_E_PARSE);
	assert_null(content);
	assert_int_equal(enr_util_read_file(&content, &len, "/nonexistent", 5), ENR_E_NOTFOUND);
	free(path);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(base64_matches_rfc4648_vectors),
    cmocka_unit_test(base64_url_alphabet_and_errors),
    cmocka_unit_test(random_tokens_are_distinct_and_sized),
    cmocka_unit_test(urlencode_round_trips),
    cmocka_unit_test(rfc3339_round_trips),
    cmocka_unit_test(trim_and_read_file),
};

TEST_MAIN(tests)
