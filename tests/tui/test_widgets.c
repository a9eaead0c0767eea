/* The widgets' state and the text layout, without a terminal. */
#include <locale.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "derenroll/error.h"
#include "draw.h"
#include "widgets/field.h"
#include "widgets/listview.h"

static struct keypress ch(wint_t c)
{
	return (struct keypress){.kind = KP_CHAR, .code = c};
}

static struct keypress fn(wint_t code)
{
	return (struct keypress){.kind = KP_FUNC, .code = code};
}

static struct keypress paste(const wchar_t *text)
{
	return (struct keypress){.kind = KP_PASTE, .text = text, .len = wcslen(text)};
}

static void type(struct field *f, const char *s)
{
	for (; *s; s++) {
		struct keypress k = ch((unsigned char)*s);
		field_handle_key(f, &k);
	}
}

static void key(struct field *f, struct keypress k)
{
	field_handle_key(f, &k);
}

static void assert_value(const struct field *f, const char *expected)
{
	char *v = NULL;

	assert_int_equal(field_value(&v, f), 0);
	assert_string_equal(v, expected);
	field_free_value(v);
}

static void field_edits_where_the_cursor_is(void **state)
{
	struct field f;

	(void)state;
	field_init(&f, "Key", NULL, false);
	type(&f, "abcdef");
	key(&f, fn(KEY_LEFT));
	key(&f, fn(KEY_LEFT));
	key(&f, fn(KEY_BACKSPACE)); /* abcef */
	key(&f, fn(KEY_HOME));
	type(&f, "X"); /* Xabcef */
	key(&f, fn(KEY_END));
	type(&f, "Y"); /* XabcefY */
	key(&f, ch(KEY_CTRL('a')));
	key(&f, fn(KEY_RIGHT));
	key(&f, fn(KEY_DC)); /* XbcefY */
	assert_value(&f, "XbcefY");
	key(&f, ch(127)); /* bcefY: Backspace at 1 */
	key(&f, ch(KEY_CTRL('e')));
	key(&f, ch(KEY_CTRL('h'))); /* bcef */
	assert_value(&f, "bcef");
	key(&f, fn(KEY_LEFT));
	key(&f, ch(KEY_CTRL('k'))); /* bce */
	key(&f, fn(KEY_LEFT));
	key(&f, ch(KEY_CTRL('u'))); /* e */
	assert_value(&f, "e");
	assert_int_equal(f.cursor, 0);
	/* Movement past the ends stays put; Delete at the end does nothing. */
	key(&f, fn(KEY_LEFT));
	key(&f, fn(KEY_END));
	key(&f, fn(KEY_RIGHT));
	key(&f, fn(KEY_DC));
	assert_value(&f, "e");
	field_done(&f);
}

static void field_ignores_what_is_not_text(void **state)
{
	struct field f;
	struct keypress enter = ch('\r'), esc = ch(KEY_ESC), tab = ch('\t'), f5 = fn(KEY_F(5));

	(void)state;
	field_init(&f, "Key", NULL, false);
	assert_int_equal(field_handle_key(&f, &enter), SCREEN_IGNORED);
	assert_int_equal(field_handle_key(&f, &esc), SCREEN_IGNORED);
	assert_int_equal(field_handle_key(&f, &tab), SCREEN_IGNORED);
	assert_int_equal(field_handle_key(&f, &f5), SCREEN_IGNORED);
	/* ^R only means something in a masked field. */
	key(&f, ch(FIELD_REVEAL_KEY));
	assert_false(f.revealed);
	assert_int_equal(f.len, 0);
	/* ? in an empty field is the screen's (help); after text it is text. */
	{
		struct keypress question = ch('?');
		assert_int_equal(field_handle_key(&f, &question), SCREEN_IGNORED);
		assert_int_equal(f.len, 0);
		type(&f, "a");
		assert_int_equal(field_handle_key(&f, &question), SCREEN_REDRAW);
		assert_int_equal(f.len, 2);
	}
	field_done(&f);
}

static void field_reveal_toggles_and_keeps_the_error(void **state)
{
	struct field f;

	(void)state;
	field_init(&f, "API key", NULL, true);
	type(&f, "secret");
	field_set_error(&f, "rejected by %s", "SolarEdge");
	assert_string_equal(f.error, "rejected by SolarEdge");
	key(&f, ch(FIELD_REVEAL_KEY));
	assert_true(f.revealed);
	key(&f, fn(KEY_LEFT));
	assert_string_equal(f.error, "rejected by SolarEdge");
	key(&f, ch(FIELD_REVEAL_KEY));
	assert_false(f.revealed);
	/* An edit answers the error. */
	type(&f, "x");
	assert_string_equal(f.error, "");
	field_set_error(&f, "again");
	field_set_error(&f, NULL);
	assert_string_equal(f.error, "");
	field_done(&f);
}

static void field_paste_takes_the_first_line_with_text(void **state)
{
	struct field f;
	struct keypress k;

	(void)state;
	field_init(&f, "API key", NULL, true);
	type(&f, "<");
	k = paste(L"\n  \n\t pasted\tkey \x01\nsecond line\n");
	assert_int_equal(field_handle_key(&f, &k), SCREEN_REDRAW);
	type(&f, ">");
	/* Tab becomes a space, the control character goes, the rest is kept. */
	assert_value(&f, "<  pasted key >");
	field_done(&f);

	field_init(&f, "API key", NULL, true);
	k = paste(L"  \n \n");
	field_handle_key(&f, &k);
	assert_true(field_is_blank(&f));
	field_done(&f);
}

static void field_value_is_trimmed_utf8(void **state)
{
	struct field f;
	struct keypress k = paste(L"  \x043a\x043b\x044e\x0447 \x5bc6\x94a5 \t ");

	(void)state;
	field_init(&f, "Key", NULL, false);
	assert_true(field_is_blank(&f));
	assert_value(&f, "");
	field_handle_key(&f, &k);
	assert_false(field_is_blank(&f));
	assert_value(&f, "ключ 密钥");
	assert_int_equal(field_set_text(&f, "  replaced\xff "), 0);
	assert_value(&f, "replaced?");
	assert_int_equal(f.cursor, f.len);
	field_done(&f);
}

static void field_stops_at_its_maximum(void **state)
{
	struct field f;
	char *big = malloc(FIELD_MAX_CHARS + 11);

	(void)state;
	memset(big, 'k', FIELD_MAX_CHARS + 10);
	big[FIELD_MAX_CHARS + 10] = '\0';
	field_init(&f, "Key", NULL, false);
	type(&f, big);
	assert_int_equal(f.len, FIELD_MAX_CHARS);
	field_done(&f);
	free(big);
}

/* --- listview --- */

static struct listview *make_list(size_t n)
{
	static const char *const names[] = {"Smith", "Müller", "ØSTER", "García"};
	struct listview *lv = NULL;

	assert_int_equal(listview_new(&lv), 0);
	for (size_t i = 0; i < n; i++) {
		char label[64];
		snprintf(label, sizeof(label), "Row %zu %s", i, names[i % 4]);
		assert_int_equal(
		    listview_add(lv, label, i % 7 == 6 ? "not configured" : NULL, (void *)(i + 1)),
		    0);
	}
	return lv;
}

static void list_key(struct listview *lv, struct keypress k)
{
	listview_handle_key(lv, &k);
}

static void list_type(struct listview *lv, const wchar_t *s)
{
	for (; *s; s++)
		list_key(lv, ch((wint_t)*s));
}

/* Rows whose label contains `needle` ignoring case, counted the slow way. */
static size_t brute_count(struct listview *lv, const char *needle)
{
	size_t n = 0;

	for (size_t i = 0; i < listview_count(lv); i++)
		if (strcasestr(listview_label(lv, i), needle))
			n++;
	return n;
}

static void list_filters_case_insensitively(void **state)
{
	struct listview *lv = make_list(1000);

	(void)state;
	assert_int_equal(listview_shown(lv), 1000);
	list_type(lv, L"ROW 12");
	assert_int_equal(listview_shown(lv), brute_count(lv, "row 12"));
	assert_int_equal(listview_shown(lv), 11); /* 12, 120-129 */
	assert_string_equal(listview_filter(lv), "ROW 12");
	assert_string_equal(listview_label(lv, listview_selected(lv)), "Row 12 Smith");
	/* Non-ASCII letters fold too. */
	list_key(lv, ch(KEY_CTRL('u')));
	list_type(lv, L"m\x00dcller");
	assert_int_equal(listview_shown(lv), 250);
	list_key(lv, ch(KEY_CTRL('u')));
	list_type(lv, L"\x00f8ster");
	assert_int_equal(listview_shown(lv), 250);
	/* A pasted filter: its first line. */
	list_key(lv, ch(KEY_CTRL('u')));
	{
		struct keypress k = paste(L"garc\x00ed"
		                          L"a\nignored");
		list_key(lv, k);
	}
	assert_string_equal(listview_filter(lv), "garcía");
	assert_int_equal(listview_shown(lv), 250);
	listview_free(lv);
}

static void list_narrowing_and_widening_agree_with_a_full_search(void **state)
{
	struct listview *lv = make_list(2000);
	const wchar_t *typed = L"row 1 9";
	char prefix[16] = "";

	(void)state;
	for (size_t i = 0; typed[i]; i++) {
		list_key(lv, ch((wint_t)typed[i]));
		prefix[i] = (char)typed[i];
		prefix[i + 1] = '\0';
		assert_int_equal(listview_shown(lv), brute_count(lv, prefix));
	}
	while (prefix[0]) {
		list_key(lv, fn(KEY_BACKSPACE));
		prefix[strlen(prefix) - 1] = '\0';
		assert_string_equal(listview_filter(lv), prefix);
		assert_int_equal(listview_shown(lv), brute_count(lv, prefix));
	}
	/* Backspace with an empty filter is harmless. */
	list_key(lv, fn(KEY_BACKSPACE));
	assert_int_equal(listview_shown(lv), 2000);
	listview_free(lv);
}

/* Marks: Tab always, Space while no filter is typed (then it is the filter's). */
static void list_marks_several_rows(void **state)
{
	struct listview *lv = make_list(10);

	(void)state;
	list_key(lv, ch(' '));
	assert_string_equal(listview_filter(lv), " "); /* without marks, Space filters */
	list_key(lv, ch(KEY_CTRL('u')));
	listview_set_marks(lv, true);
	list_key(lv, ch(' ')); /* row 0, then the selection moves on */
	assert_int_equal(listview_selected(lv), 1);
	list_key(lv, fn(KEY_DOWN));
	list_key(lv, ch('\t')); /* row 2 */
	assert_true(listview_marked(lv, 0));
	assert_false(listview_marked(lv, 1));
	assert_true(listview_marked(lv, 2));
	assert_int_equal(listview_mark_count(lv), 2);
	assert_string_equal(listview_filter(lv), "");
	list_type(lv, L"row 2");
	list_key(lv, ch(' ')); /* typed into the filter */
	assert_string_equal(listview_filter(lv), "row 2 ");
	assert_int_equal(listview_mark_count(lv), 2);
	list_key(lv, ch('\t')); /* unmarks row 2, the only one shown */
	assert_false(listview_marked(lv, 2));
	assert_int_equal(listview_selected(lv), 2);
	assert_int_equal(listview_mark_count(lv), 1);
	listview_free(lv);
}

static void list_keeps_the_selection_through_filtering(void **state)
{
	struct listview *lv = make_list(100);

	(void)state;
	assert_true(listview_select(lv, 42));
	list_type(lv, L"row 4"); /* row 4, 40-49: 42 still shown */
	assert_int_equal(listview_selected(lv), 42);
	list_type(lv, L"3"); /* row 43 only: 42 gone, the next one down */
	assert_int_equal(listview_selected(lv), 43);
	list_type(lv, L"x"); /* nothing */
	assert_int_equal(listview_shown(lv), 0);
	assert_int_equal(listview_selected(lv), LISTVIEW_NONE);
	assert_false(listview_select(lv, 43));
	/* Esc clears a filter; with none it is left to the screen. */
	{
		struct keypress esc = ch(KEY_ESC);
		assert_int_equal(listview_handle_key(lv, &esc), SCREEN_REDRAW);
		assert_int_equal(listview_shown(lv), 100);
		assert_int_equal(listview_handle_key(lv, &esc), SCREEN_IGNORED);
	}
	assert_int_equal(listview_selected(lv), 0);
	listview_free(lv);
}

static void list_moves_with_the_keys(void **state)
{
	struct listview *lv = make_list(100);

	(void)state;
	list_key(lv, fn(KEY_DOWN));
	list_key(lv, fn(KEY_DOWN));
	assert_int_equal(listview_selected(lv), 2);
	list_key(lv, fn(KEY_UP));
	assert_int_equal(listview_selected(lv), 1);
	/* Before any draw a page is 10 rows: PgDn moves 9, keeping one in view. */
	list_key(lv, fn(KEY_NPAGE));
	assert_int_equal(listview_selected(lv), 10);
	list_key(lv, fn(KEY_PPAGE));
	list_key(lv, fn(KEY_PPAGE));
	assert_int_equal(listview_selected(lv), 0);
	list_key(lv, fn(KEY_UP));
	assert_int_equal(listview_selected(lv), 0);
	list_key(lv, fn(KEY_END));
	assert_int_equal(listview_selected(lv), 99);
	list_key(lv, fn(KEY_DOWN));
	assert_int_equal(listview_selected(lv), 99);
	list_key(lv, fn(KEY_HOME));
	assert_int_equal(listview_selected(lv), 0);
	/* Disabled rows can be selected: their reason is there to read. */
	assert_true(listview_select(lv, 6));
	assert_string_equal(listview_disabled_reason(lv, 6), "not configured");
	assert_null(listview_disabled_reason(lv, 5));
	assert_ptr_equal(listview_data(lv, 6), (void *)7);
	assert_null(listview_label(lv, 100));
	listview_free(lv);
	listview_free(NULL);
}

/* Filtering as a mode: letters are the screen's until / starts it. */
static void list_filters_by_key_after_slash(void **state)
{
	struct listview *lv = make_list(100);
	struct keypress k;

	(void)state;
	listview_set_filter_by_key(lv, true);
	assert_false(listview_filtering(lv));
	k = ch('c');
	assert_int_equal(listview_handle_key(lv, &k), SCREEN_IGNORED);
	assert_string_equal(listview_filter(lv), "");
	list_key(lv, ch('/'));
	assert_true(listview_filtering(lv));
	list_type(lv, L"row 1");
	assert_string_equal(listview_filter(lv), "row 1");
	assert_int_equal(listview_shown(lv), brute_count(lv, "row 1"));
	/* ^U clears what is typed, and filtering goes on. */
	list_key(lv, ch(KEY_CTRL('u')));
	assert_true(listview_filtering(lv));
	list_type(lv, L"row 42");
	assert_int_equal(listview_shown(lv), 1);
	assert_ptr_equal(listview_data(lv, listview_shown_at(lv, 0)), (void *)43);
	assert_int_equal(listview_shown_at(lv, 1), LISTVIEW_NONE);
	/* Enter ends it, the filter stays; letters are the screen's again. */
	list_key(lv, ch('\r'));
	assert_false(listview_filtering(lv));
	k = ch('r');
	assert_int_equal(listview_handle_key(lv, &k), SCREEN_IGNORED);
	assert_string_equal(listview_filter(lv), "row 42");
	/* Esc clears it (then is the screen's); ? is always the screen's. */
	k = ch(KEY_ESC);
	assert_int_equal(listview_handle_key(lv, &k), SCREEN_REDRAW);
	assert_int_equal(listview_shown(lv), 100);
	assert_int_equal(listview_handle_key(lv, &k), SCREEN_IGNORED);
	list_key(lv, ch('/'));
	k = ch('?');
	assert_int_equal(listview_handle_key(lv, &k), SCREEN_IGNORED);
	assert_string_equal(listview_filter(lv), "");
	/* Set from outside, as a screen rebuilding its list does. */
	listview_set_filter(lv, "row 9");
	assert_int_equal(listview_shown(lv), brute_count(lv, "row 9"));
	listview_free(lv);
}

/* --- text layout --- */

static void text_width_counts_columns(void **state)
{
	(void)state;
	assert_int_equal(draw_text_width("abc"), 3);
	assert_int_equal(draw_text_width("Müller"), 6);
	assert_int_equal(draw_text_width("密钥"), 4);
	/* Control characters take their visible form: "\x09", "\x1b[2J", "\u009b". */
	assert_int_equal(draw_text_width("a\tb"), 6);
	assert_int_equal(draw_text_width("\x1b[2J"), 7);
	assert_int_equal(draw_text_width("\xc2\x9b"), 6);
	assert_int_equal(draw_text_width("\xff"), 1);
}

static void wrapping_breaks_words_and_long_links(void **state)
{
	(void)state;
	assert_int_equal(draw_wrapped_rows(10, ""), 0);
	assert_int_equal(draw_wrapped_rows(10, "short"), 1);
	assert_int_equal(draw_wrapped_rows(10, "0123456789"), 1);
	assert_int_equal(draw_wrapped_rows(10, "0123456789a"), 2);
	assert_int_equal(draw_wrapped_rows(10, "aaaa bbbb cccc"), 2);
	assert_int_equal(draw_wrapped_rows(10, "one\ntwo\n\nfour"), 4);
	/* A 370-character link in 78 columns: 5 rows, broken anywhere. */
	{
		char link[371];
		memset(link, 'u', 370);
		link[370] = '\0';
		assert_int_equal(draw_wrapped_rows(78, link), 5);
	}
	assert_int_equal(draw_wrapped_rows(0, "anything"), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(field_edits_where_the_cursor_is),
    cmocka_unit_test(field_ignores_what_is_not_text),
    cmocka_unit_test(field_reveal_toggles_and_keeps_the_error),
    cmocka_unit_test(field_paste_takes_the_first_line_with_text),
    cmocka_unit_test(field_value_is_trimmed_utf8),
    cmocka_unit_test(field_stops_at_its_maximum),
    cmocka_unit_test(list_filters_case_insensitively),
    cmocka_unit_test(list_narrowing_and_widening_agree_with_a_full_search),
    cmocka_unit_test(list_keeps_the_selection_through_filtering),
    cmocka_unit_test(list_marks_several_rows),
    cmocka_unit_test(list_moves_with_the_keys),
    cmocka_unit_test(list_filters_by_key_after_slash),
    cmocka_unit_test(text_width_counts_columns),
    cmocka_unit_test(wrapping_breaks_words_and_long_links),
};

int main(void)
{
	int failed;

	if (!setlocale(LC_ALL, "C.UTF-8")) {
		printf("1..0 # SKIP no C.UTF-8 locale\n");
		return 0;
	}
	test_env_setup();
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_env_cleanup();
	return failed;
}
