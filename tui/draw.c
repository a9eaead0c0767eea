#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#include "derenroll/text.h"
#include "draw.h"

/* Decodes one character of `*s` (advancing it) into what is drawn: '?' for
 * control characters and undecodable bytes. Returns its width in columns. */
static int next_char(const char **s, mbstate_t *ps, wchar_t *wc)
{
	size_t n = mbrtowc(wc, *s, MB_CUR_MAX, ps);
	int width;

	if (n == (size_t)-1 || n == (size_t)-2 || n == 0) {
		memset(ps, 0, sizeof(*ps));
		n = 1;
		*wc = L'?';
	}
	*s += n;
	if (!iswprint((wint_t)*wc))
		*wc = L'?';
	width = wcwidth(*wc);
	if (width < 0) {
		*wc = L'?';
		width = 1;
	}
	return width;
}

/* The visible form of `text` (derenroll/text.h: "\x1b" for ESC...): control
 * characters from vendors and users are shown, never sent to the terminal.
 * malloc'd, or NULL. */
static char *visible(const char *text, size_t len)
{
	char *part = strndup(text, len), *shown = NULL;

	if (part)
		shown = enr_text_visible_dup(part);
	free(part);
	return shown;
}

int draw_text_width(const char *text)
{
	char *shown = visible(text, strlen(text));
	const char *p = shown;
	mbstate_t ps;
	wchar_t wc;
	int width = 0;

	memset(&ps, 0, sizeof(ps));
	while (p && *p)
		width += next_char(&p, &ps, &wc);
	free(shown);
	return width;
}

void draw_fill(int y, int x, int cols, attr_t attr)
{
	if (cols <= 0)
		return;
	attrset(attr);
	mvhline(y, x, ' ', cols);
	attrset(A_NORMAL);
}

/* Draws the characters of text[0, end) that fit in `cols` columns. */
static int draw_span(int y, int x, int cols, attr_t attr, const char *text, const char *end)
{
	wchar_t buf[256];
	const char *ellipsis = MB_CUR_MAX > 1 ? "…" : "~";
	int used = 0, n = 0;
	mbstate_t ps;

	if (cols <= 0)
		return 0;
	memset(&ps, 0, sizeof(ps));
	attrset(attr);
	move(y, x);
	while (text < end) {
		const char *before = text;
		wchar_t wc;
		int w = next_char(&text, &ps, &wc);
		if (used + w > cols || (used + w == cols && text < end)) {
			/* Keep a column for the ellipsis when more text follows. */
			text = before;
			break;
		}
		buf[n++] = wc;
		used += w;
		if (n == (int)(sizeof(buf) / sizeof(buf[0]))) {
			addnwstr(buf, n);
			n = 0;
		}
	}
	if (n > 0)
		addnwstr(buf, n);
	if (text < end && used < cols) {
		mbstate_t eps;
		const char *e = ellipsis;
		wchar_t wc;
		memset(&eps, 0, sizeof(eps));
		next_char(&e, &eps, &wc);
		addnwstr(&wc, 1);
		used++;
	}
	attrset(A_NORMAL);
	return used;
}

int draw_text(int y, int x, int cols, attr_t attr, const char *text)
{
	char *shown = visible(text, strlen(text));
	int used = shown ? draw_span(y, x, cols, attr, shown, shown + strlen(shown)) : 0;

	free(shown);
	return used;
}

/*
 * Finds where the line starting at `s` ends in `cols` columns: sets `*end`
 * (exclusive) and returns where the next line starts (spaces at a break and a
 * newline are skipped).
 */
static const char *wrap_line(const char *s, int cols, const char **end)
{
	const char *p = s, *last_space = NULL;
	int used = 0;
	mbstate_t ps;

	memset(&ps, 0, sizeof(ps));
	while (*p && *p != '\n') {
		const char *before = p;
		wchar_t wc;
		int w = next_char(&p, &ps, &wc);
		if (*before == ' ')
			last_space = before;
		if (used + w > cols) {
			if (*before == ' ') {
				*end = before;
				return before + 1;
			}
			if (last_space && last_space > s) {
				*end = last_space;
				return last_space + 1;
			}
			/* One long word: break it where the line is full. */
			*end = before > s ? before : p;
			return *end;
		}
		used += w;
	}
	*end = p;
	return *p == '\n' ? p + 1 : p;
}

/* Wraps one paragraph (no newline) of visible text below `rows` rows. */
static int wrap_paragraph(struct area *a, int rows, attr_t attr, const char *text, bool draw)
{
	while (*text) {
		const char *end, *next = wrap_line(text, a->cols, &end);
		if (draw && rows < a->rows)
			draw_span(a->y + rows, a->x, a->cols, attr, text, end);
		rows++;
		text = next;
	}
	return rows;
}

static int wrap(struct area *a, attr_t attr, const char *text, bool draw)
{
	int rows = 0;

	if (a->cols <= 0)
		return 0;
	/* Newlines break lines; every other control character is shown. */
	while (*text) {
		size_t len = strcspn(text, "\n");
		char *shown = visible(text, len);
		if (!shown)
			break;
		rows = len ? wrap_paragraph(a, rows, attr, shown, draw) : rows + 1;
		free(shown);
		text += len;
		if (*text == '\n' && !*++text)
			break;
	}
	return rows;
}

int draw_wrapped(struct area a, attr_t attr, const char *text)
{
	int rows = wrap(&a, attr, text, true);

	return rows < a.rows ? rows : a.rows;
}

int draw_wrapped_rows(int cols, const char *text)
{
	struct area a = {0, 0, 0, cols};

	return wrap(&a, A_NORMAL, text, false);
}
