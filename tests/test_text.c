#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "derenroll/enroll.h"
#include "derenroll/error.h"
#include "derenroll/store.h"
#include "derenroll/text.h"
#include "util.h"

static void controls_become_visible(void **state)
{
	char buf[256];

	(void)state;
	assert_string_equal(enr_text_visible(buf, sizeof(buf), "a\x1b]0;pwned\x07z", 0),
	                    "a\\x1b]0;pwned\\x07z");
	assert_string_equal(enr_text_visible(buf, sizeof(buf), "\x1b[2J\r\n\t\x7f", 0),
	                    "\\x1b[2J\\x0d\\x0a\\x09\\x7f");
	/* C1 CSI as a character, and the bidirectional override. */
	assert_string_equal(enr_text_visible(buf, sizeof(buf),
	                                     "x\xc2\x9b"
	                                     "31m\xe2\x80\xaey",
	                                     0),
	                    "x\\u009b31m\\u202ey");
	/* Raw 0x9b and other bytes that are not UTF-8 (an overlong '/', a
	 * surrogate, a cut sequence) become U+FFFD. */
	assert_string_equal(enr_text_visible(buf, sizeof(buf),
	                                     "\x9b"
	                                     "1J \xc0\xaf \xed\xa0\x80 \xc3",
	                                     0),
	                    "\xef\xbf\xbd"
	                    "1J \xef\xbf\xbd\xef\xbf\xbd "
	                    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd");
	/* Text is left alone, backslashes included. */
	assert_string_equal(enr_text_visible(buf, sizeof(buf), "Café Ōkafor \\x1b", 0),
	                    "Café Ōkafor \\x1b");
	assert_string_equal(enr_text_visible(buf, sizeof(buf), NULL, 0), "");
}

static void cuts_fall_on_character_boundaries(void **state)
{
	char buf[256], small[6];

	(void)state;
	/* Width: 3 columns of "éé\x1b" is "éé" (the escape takes 4). */
	assert_string_equal(enr_text_visible(buf, sizeof(buf), "éé\x1bxyz", 3), "éé");
	assert_string_equal(enr_text_visible(buf, sizeof(buf), "éé\x1bxyz", 6), "éé\\x1b");
	assert_string_equal(enr_text_visible(buf, sizeof(buf), "abcdef", 4), "abcd");
	/* The buffer: 5 bytes and the NUL; neither "é" nor an escape is split. */
	assert_string_equal(enr_text_visible(small, sizeof(small), "abcdé", 0), "abcd");
	assert_string_equal(enr_text_visible(small, sizeof(small), "ab\x1b", 0), "ab");
	/* Uncut, the visible form fits ENR_TEXT_VISIBLE_SIZE. */
	char *all = enr_text_visible_dup("\x1b\x1b\x9b\xc2\x9b");
	assert_string_equal(all, "\\x1b\\x1b\xef\xbf\xbd\\u009b");
	assert_true(strlen(all) < ENR_TEXT_VISIBLE_SIZE(5));
	free(all);
}

static void json_is_always_utf8(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	(void)state;
	enr_text_json_string(out, "Caf\xe9 \x1b[2J \xc2\x9b \"q\" é \xff");
	fclose(out);
	assert_string_equal(text, "\"Caf\\ufffd \\u001b[2J \\u009b \\\"q\\\" é \\ufffd\"");
	free(text);
	text = enr_text_utf8("ok é \xe9\xff\xc3");
	assert_string_equal(text, "ok é \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	free(text);
}

static void customer_references_are_checked(void **state)
{
	char long_ref[2 * 201 + 1] = "";

	(void)state;
	assert_int_equal(enr_enroll_check_customer("Okafor, 12 Example Road"), 0);
	assert_int_equal(enr_enroll_check_customer("Ōkafor ☀ job 17"), 0);
	assert_int_equal(enr_enroll_check_customer(""), ENR_E_USAGE);
	assert_int_equal(enr_enroll_check_customer(NULL), ENR_E_USAGE);
	assert_int_equal(enr_enroll_check_customer("Eve\x1b]0;pwned\x07"), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "control characters"));
	assert_non_null(strstr(enr_error_last(), "0x1b"));
	assert_int_equal(enr_enroll_check_customer("Eve\r"), ENR_E_USAGE);
	assert_int_equal(enr_enroll_check_customer("Eve\xc2\x9b"), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "U+009b"));
	assert_int_equal(enr_enroll_check_customer("Eve\xff"), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "not valid UTF-8"));
	for (int i = 0; i < 200; i++)
		strcat(long_ref, "é");
	assert_int_equal(enr_enroll_check_customer(long_ref), 0);
	strcat(long_ref, "é");
	assert_int_equal(enr_enroll_check_customer(long_ref), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "at most 200"));
	assert_null(strchr(enr_error_last(), '\n'));
}

static void site_names_keep_a_sane_length(void **state)
{
	struct enr_record *rec = NULL;
	char name[3 * 300 + 1] = "";

	(void)state;
	for (int i = 0; i < 300; i++)
		strcat(name, "☀"); /* 3 bytes each */
	assert_int_equal(enr_record_new(&rec), 0);
	assert_int_equal(enr_record_add_site(rec, "1", name), 0);
	assert_int_equal(strlen(rec->sites[0].name), 3 * 200);
	assert_memory_equal(rec->sites[0].name, name, 3 * 200);
	/* Renaming cuts too; a short name is kept whole. */
	assert_int_equal(enr_record_add_site(rec, "1", name + 3), 0);
	assert_int_equal(strlen(rec->sites[0].name), 3 * 200);
	assert_int_equal(enr_record_add_site(rec, "2", "Okafor Home"), 0);
	assert_string_equal(rec->sites[1].name, "Okafor Home");
	assert_int_equal(enr_record_add_site(rec, "3", NULL), 0);
	assert_null(rec->sites[2].name);
	enr_record_free(rec);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(controls_become_visible),
    cmocka_unit_test(cuts_fall_on_character_boundaries),
    cmocka_unit_test(json_is_always_utf8),
    cmocka_unit_test(customer_references_are_checked),
    cmocka_unit_test(site_names_keep_a_sane_length),
};

TEST_MAIN(tests)
