#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include "derenroll/error.h"
#include "widgets/field.h"

void field_init(struct field *f, const char *label, const char *help, bool masked)
{
	memset(f, 0, sizeof(*f));
	f->label = label;
	f->help = help;
	f->masked = masked;
}

static void wipe_text(struct field *f)
{
	if (f->text)
		explicit_bzero(f->text, f->cap * sizeof(*f->text));
}

void field_done(struct field *f)
{
	wipe_text(f);
	free(f->text);
	memset(f, 0, sizeof(*f));
}

void field_set_error(struct field *f, const char *fmt, ...)
{
	va_list ap;

	if (!fmt) {
		f->error[0] = '\0';
		return;
	}
	va_start(ap, fmt);
	vsnprintf(f->error, sizeof(f->error), fmt, ap);
	va_end(ap);
}

/* Room for `need` characters and the NUL; the old buffer is wiped, not realloc'd. */
static int reserve(struct field *f, size_t need)
{
	size_t cap = f->cap ? f->cap : 64;
	wchar_t *bigger;

	if (need + 1 <= f->cap)
		return 0;
	while (cap < need + 1)
		cap *= 2;
	bigger = calloc(cap, sizeof(*bigger));
	if (!bigger)
		return enr_error_set(ENR_E_NOMEM, NULL);
	if (f->text) {
		memcpy(bigger, f->text, f->len * sizeof(*bigger));
		wipe_text(f);
		free(f->text);
	}
	f->text = bigger;
	f->cap = cap;
	return 0;
}

static void insert(struct field *f, const wchar_t *s, size_t n)
{
	if (f->len + n > FIELD_MAX_CHARS)
		n = FIELD_MAX_CHARS - f->len;
	if (n == 0 || reserve(f, f->len + n) < 0)
		return;
	memmove(f->text + f->cursor + n, f->text + f->cursor,
	        (f->len - f->cursor) * sizeof(*f->text));
	memcpy(f->text + f->cursor, s, n * sizeof(*s));
	f->len += n;
	f->cursor += n;
	f->text[f->len] = L'\0';
	f->error[0] = '\0'; /* an edit answers the error */
}

static void erase_range(struct field *f, size_t from, size_t to)
{
	if (to <= from)
		return;
	memmove(f->text + from, f->text + to, (f->len - to) * sizeof(*f->text));
	f->len -= to - from;
	/* Wipe the tail the move left behind. */
	explicit_bzero(f->text + f->len, (to - from) * sizeof(*f->text));
	if (f->cursor > to)
		f->cursor -= to - from;
	else if (f->cursor > from)
		f->cursor = from;
	f->error[0] = '\0';
}

/* A paste: its first line with text in it, printable characters only. */
static void insert_paste(struct field *f, const wchar_t *text, size_t len)
{
	size_t start = 0;

	for (;;) {
		size_t end = start;
		bool blank = true;
		while (end < len && text[end] != L'\n') {
			if (!iswspace((wint_t)text[end]))
				blank = false;
			end++;
		}
		if (!blank || end >= len) {
			for (size_t i = start; i < end; i++)
				if (iswprint((wint_t)text[i]))
					insert(f, &text[i], 1);
				else if (text[i] == L'\t')
					insert(f, L" ", 1);
			return;
		}
		start = end + 1;
	}
}

static int edit_char(struct field *f, wint_t c)
{
	wchar_t wc = (wchar_t)c;

	switch (c) {
	case KEY_CTRL('a'):
		f->cursor = 0;
		return SCREEN_REDRAW;
	case KEY_CTRL('e'):
		f->cursor = f->len;
		return SCREEN_REDRAW;
	case KEY_CTRL('d'):
		erase_range(f, f->cursor, f->cursor < f->len ? f->cursor + 1 : f->cursor);
		return SCREEN_REDRAW;
	case KEY_CTRL('u'):
		erase_range(f, 0, f->cursor);
		return SCREEN_REDRAW;
	case KEY_CTRL('k'):
		erase_range(f, f->cursor, f->len);
		return SCREEN_REDRAW;
	case FIELD_REVEAL_KEY:
		if (!f->masked)
			return SCREEN_IGNORED;
		f->revealed = !f->revealed;
		return SCREEN_REDRAW;
	default:
		if (c < 0x20 || c == 0x7f || !iswprint(c))
			return SCREEN_IGNORED;
		insert(f, &wc, 1);
		return SCREEN_REDRAW;
	}
}

static int edit_func(struct field *f, wint_t code)
{
	switch (code) {
	case KEY_LEFT:
		if (f->cursor > 0)
			f->cursor--;
		return SCREEN_REDRAW;
	case KEY_RIGHT:
		if (f->cursor < f->len)
			f->cursor++;
		return SCREEN_REDRAW;
	case KEY_HOME:
		f->cursor = 0;
		return SCREEN_REDRAW;
	case KEY_END:
		f->cursor = f->len;
		return SCREEN_REDRAW;
	case KEY_DC:
		erase_range(f, f->cursor, f->cursor < f->len ? f->cursor + 1 : f->cursor);
		return SCREEN_REDRAW;
	default:
		return SCREEN_IGNORED;
	}
}

int field_handle_key(struct field *f, const struct keypress *k)
{
	int flags = SCREEN_IGNORED;

	/* Nothing begins with ?: in an empty field it is left to the screen (help). */
	if (keypress_is(k, '?') && f->len == 0)
		return SCREEN_IGNORED;
	if (keypress_is_backspace(k)) {
		if (f->cursor > 0)
			erase_range(f, f->cursor - 1, f->cursor);
		flags = SCREEN_REDRAW;
	} else if (k->kind == KP_PASTE) {
		insert_paste(f, k->text, k->len);
		flags = SCREEN_REDRAW;
	} else if (k->kind == KP_CHAR) {
		flags = edit_char(f, k->code);
	} else if (k->kind == KP_FUNC) {
		flags = edit_func(f, k->code);
	}
	return flags;
}

static wchar_t shown_char(const struct field *f, size_t i)
{
	return f->masked && !f->revealed ? L'*' : f->text[i];
}

static int char_width(wchar_t wc)
{
	int w = wcwidth(wc);

	return w < 1 ? 1 : w;
}

int field_draw(struct field *f, int y, int x, int cols, bool focused)
{
	attr_t input = term_attr(TERM_INPUT);
	int used = 0, width = 0;
	char label[160];

	if (f->masked)
		snprintf(label, sizeof(label), "%s (%s: %s)", f->label,
		         f->revealed ? "shown" : "hidden", FIELD_REVEAL_KEY_NAME " toggles");
	else
		snprintf(label, sizeof(label), "%s", f->label);
	draw_text(y, x, cols, A_BOLD, label);

	/* Keep the cursor in view, with a column for it after the last character. */
	if (f->cursor < f->scroll)
		f->scroll = f->cursor;
	for (size_t i = f->scroll; i < f->cursor; i++)
		width += char_width(shown_char(f, i));
	while (width > cols - 1 && f->scroll < f->cursor)
		width -= char_width(shown_char(f, f->scroll++));
	draw_fill(y + 1, x, cols, input);
	move(y + 1, x);
	for (size_t i = f->scroll; i <= f->len; i++) {
		wchar_t wc = i < f->len ? shown_char(f, i) : L' ';
		int w = char_width(wc);
		if (used + w > cols)
			break;
		attrset(focused && i == f->cursor ? input | A_REVERSE : input);
		addnwstr(&wc, 1);
		used += w;
	}
	attrset(A_NORMAL);
	if (f->error[0])
		draw_text(y + 2, x, cols, term_attr(TERM_ERROR), f->error);
	if (f->help)
		draw_text(y + 3, x, cols, A_NORMAL, f->help);
	return FIELD_ROWS;
}

static void trimmed(const struct field *f, size_t *start, size_t *end)
{
	*start = 0;
	*end = f->len;
	while (*start < *end && iswspace((wint_t)f->text[*start]))
		(*start)++;
	while (*end > *start && iswspace((wint_t)f->text[*end - 1]))
		(*end)--;
}

bool field_is_blank(const struct field *f)
{
	size_t start, end;

	trimmed(f, &start, &end);
	return start == end;
}

int field_value(char **out, const struct field *f)
{
	size_t start, end, n = 0;
	mbstate_t ps;
	char *value;

	*out = NULL;
	trimmed(f, &start, &end);
	value = malloc((end - start) * MB_CUR_MAX + 1);
	if (!value)
		return enr_error_set(ENR_E_NOMEM, NULL);
	memset(&ps, 0, sizeof(ps));
	for (size_t i = start; i < end; i++) {
		size_t k = wcrtomb(value + n, f->text[i], &ps);
		if (k == (size_t)-1) {
			explicit_bzero(value, n);
			free(value);
			return enr_error_set(ENR_E_PARSE,
			                     "%s: a character cannot be written in "
			                     "this locale's character set",
			                     f->label);
		}
		n += k;
	}
	value[n] = '\0';
	*out = value;
	return 0;
}

void field_free_value(char *value)
{
	if (value) {
		explicit_bzero(value, strlen(value));
		free(value);
	}
}

int field_set_text(struct field *f, const char *text)
{
	mbstate_t ps;
	size_t n = strlen(text);
	int rc;

	wipe_text(f);
	f->len = f->cursor = f->scroll = 0;
	rc = reserve(f, n);
	if (rc < 0)
		return rc;
	memset(&ps, 0, sizeof(ps));
	while (*text && f->len < FIELD_MAX_CHARS) {
		wchar_t wc;
		size_t k = mbrtowc(&wc, text, MB_CUR_MAX, &ps);
		if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
			memset(&ps, 0, sizeof(ps));
			k = 1;
			wc = L'?';
		}
		f->text[f->len++] = wc;
		text += k;
	}
	f->text[f->len] = L'\0';
	f->cursor = f->len;
	return 0;
}
