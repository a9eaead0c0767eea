#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#include "derenroll/error.h"
#include "mem.h"
#include "widgets/listview.h"

#define FILTER_MAX   256
#define PAGE_DEFAULT 10

struct row {
	const char *label;
	const char *folded; /* the label in lower case, for filtering */
	const char *reason; /* NULL: enabled */
	void *data;
	bool marked;
	/* label, folded and reason follow in the same allocation */
};

struct listview {
	struct row **rows;
	size_t n_rows, cap_rows;
	size_t *shown; /* indexes of the rows the filter shows, ascending */
	size_t n_shown, cap_shown;
	size_t selected; /* index into shown */
	size_t top;      /* first shown row on screen */
	int page;        /* rows on screen at the last draw */
	char filter[FILTER_MAX];
	char folded_filter[FILTER_MAX * 2];
	bool filter_by_key; /* filtering is a mode: / starts it */
	bool filtering;     /* in that mode, typing goes to the filter */
	bool marks;         /* rows can be marked: several chosen at once */
	char *header;       /* column titles under the filter line, or NULL */
	size_t n_marked;
};

/* Lower-cases UTF-8 `s` into `out` (at most `size` bytes with the NUL); bytes
 * the locale does not decode are kept. Returns the length written. */
static size_t fold(char *out, size_t size, const char *s)
{
	mbstate_t in, outs;
	size_t n = 0;

	memset(&in, 0, sizeof(in));
	memset(&outs, 0, sizeof(outs));
	while (*s) {
		char buf[MB_LEN_MAX];
		wchar_t wc;
		size_t k, m;
		/* ASCII, most of every label, without the locale's conversions. */
		if ((unsigned char)*s < 0x80) {
			if (n + 2 > size)
				break;
			out[n++] = *s >= 'A' && *s <= 'Z' ? (char)(*s + ('a' - 'A')) : *s;
			s++;
			continue;
		}
		k = mbrtowc(&wc, s, MB_CUR_MAX, &in);
		if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
			memset(&in, 0, sizeof(in));
			buf[0] = (char)tolower((unsigned char)*s);
			m = 1;
			k = 1;
		} else {
			m = wcrtomb(buf, (wchar_t)towlower((wint_t)wc), &outs);
			if (m == (size_t)-1) {
				memcpy(buf, s, k);
				m = k;
			}
		}
		if (n + m + 1 > size)
			break;
		memcpy(out + n, buf, m);
		n += m;
		s += k;
	}
	out[n] = '\0';
	return n;
}

int listview_new(struct listview **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return enr_error_set(ENR_E_NOMEM, NULL);
	(*out)->page = PAGE_DEFAULT;
	return 0;
}

void listview_free(struct listview *lv)
{
	if (!lv)
		return;
	for (size_t i = 0; i < lv->n_rows; i++)
		free(lv->rows[i]);
	free(lv->rows);
	free(lv->shown);
	free(lv->header);
	free(lv);
}

static void refilter(struct listview *lv, bool narrowed);

static bool matches(const struct listview *lv, const struct row *r)
{
	return !lv->folded_filter[0] || strstr(r->folded, lv->folded_filter);
}

int listview_add(struct listview *lv, const char *label, const char *disabled_reason, void *data)
{
	size_t label_len = strlen(label),
	       reason_len = disabled_reason ? strlen(disabled_reason) : 0;
	/* Lower case can take more bytes than upper case (a few letters do): folded
	 * first, so that the row holds only what it needs. */
	size_t folded_cap = 2 * label_len + 1, folded_len;
	char stack[512], *folded;
	struct row *r;
	char *p;

	if (tui_grow((void **)&lv->rows, &lv->cap_rows, lv->n_rows + 1, sizeof(*lv->rows), 64) <
	        0 ||
	    tui_grow((void **)&lv->shown, &lv->cap_shown, lv->n_rows + 1, sizeof(*lv->shown), 64) <
	        0)
		return ENR_E_NOMEM;
	if (!(folded = folded_cap <= sizeof(stack) ? stack : malloc(folded_cap)))
		return enr_error_set(ENR_E_NOMEM, NULL);
	folded_len = fold(folded, folded_cap, label);
	if (!(r = malloc(sizeof(*r) + label_len + 1 + folded_len + 1 + reason_len + 1))) {
		if (folded != stack)
			free(folded);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	p = (char *)(r + 1);
	memcpy(p, label, label_len + 1);
	r->label = p;
	p += label_len + 1;
	memcpy(p, folded, folded_len + 1);
	if (folded != stack)
		free(folded);
	r->folded = p;
	p += folded_len + 1;
	if (disabled_reason) {
		memcpy(p, disabled_reason, reason_len + 1);
		r->reason = p;
	} else {
		r->reason = NULL;
	}
	r->data = data;
	r->marked = false;
	lv->rows[lv->n_rows++] = r;
	if (matches(lv, r))
		lv->shown[lv->n_shown++] = lv->n_rows - 1;
	return 0;
}

size_t listview_count(const struct listview *lv)
{
	return lv->n_rows;
}

size_t listview_shown(const struct listview *lv)
{
	return lv->n_shown;
}

size_t listview_selected(const struct listview *lv)
{
	return lv->n_shown ? lv->shown[lv->selected] : LISTVIEW_NONE;
}

static bool find_shown(const struct listview *lv, size_t index, size_t *pos)
{
	size_t lo = 0, hi = lv->n_shown;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (lv->shown[mid] < index)
			lo = mid + 1;
		else
			hi = mid;
	}
	*pos = lo;
	return lo < lv->n_shown && lv->shown[lo] == index;
}

bool listview_select(struct listview *lv, size_t index)
{
	size_t pos;

	if (!find_shown(lv, index, &pos))
		return false;
	lv->selected = pos;
	return true;
}

const char *listview_label(const struct listview *lv, size_t index)
{
	return index < lv->n_rows ? lv->rows[index]->label : NULL;
}

const char *listview_disabled_reason(const struct listview *lv, size_t index)
{
	return index < lv->n_rows ? lv->rows[index]->reason : NULL;
}

void *listview_data(const struct listview *lv, size_t index)
{
	return index < lv->n_rows ? lv->rows[index]->data : NULL;
}

size_t listview_shown_at(const struct listview *lv, size_t pos)
{
	return pos < lv->n_shown ? lv->shown[pos] : LISTVIEW_NONE;
}

void listview_set_filter(struct listview *lv, const char *text)
{
	snprintf(lv->filter, sizeof(lv->filter), "%s", text);
	refilter(lv, false);
}

void listview_set_filter_by_key(struct listview *lv, bool on)
{
	lv->filter_by_key = on;
	lv->filtering = false;
}

int listview_set_header(struct listview *lv, const char *text)
{
	char *copy = text ? strdup(text) : NULL;

	if (text && !copy)
		return enr_error_set(ENR_E_NOMEM, NULL);
	free(lv->header);
	lv->header = copy;
	return 0;
}

void listview_set_marks(struct listview *lv, bool on)
{
	lv->marks = on;
}

bool listview_marked(const struct listview *lv, size_t index)
{
	return index < lv->n_rows && lv->rows[index]->marked;
}

size_t listview_mark_count(const struct listview *lv)
{
	return lv->n_marked;
}

/* Marks or unmarks the selected row, then selects the next (as fzf's Tab). */
static void toggle_mark(struct listview *lv)
{
	struct row *r;

	if (!lv->n_shown)
		return;
	r = lv->rows[lv->shown[lv->selected]];
	r->marked = !r->marked;
	if (r->marked)
		lv->n_marked++;
	else
		lv->n_marked--;
	if (lv->selected + 1 < lv->n_shown)
		lv->selected++;
}

bool listview_filtering(const struct listview *lv)
{
	return !lv->filter_by_key || lv->filtering;
}

const char *listview_filter(const struct listview *lv)
{
	return lv->filter;
}

/* Recomputes the rows shown: from those shown now when the filter only got
 * longer (every match of the new filter matches the old one), else from all.
 * The selected row stays selected if still shown, else the next one down. */
static void refilter(struct listview *lv, bool narrowed)
{
	size_t keep = listview_selected(lv), n = 0, pos = 0;

	fold(lv->folded_filter, sizeof(lv->folded_filter), lv->filter);
	if (narrowed) {
		for (size_t i = 0; i < lv->n_shown; i++)
			if (matches(lv, lv->rows[lv->shown[i]]))
				lv->shown[n++] = lv->shown[i];
	} else {
		for (size_t i = 0; i < lv->n_rows; i++)
			if (matches(lv, lv->rows[i]))
				lv->shown[n++] = i;
	}
	lv->n_shown = n;
	if (keep != LISTVIEW_NONE && !find_shown(lv, keep, &pos) && pos == n && n > 0)
		pos = n - 1;
	lv->selected = pos;
}

static void filter_append(struct listview *lv, const wchar_t *s, size_t n)
{
	size_t len = strlen(lv->filter);
	mbstate_t ps;

	memset(&ps, 0, sizeof(ps));
	for (size_t i = 0; i < n; i++) {
		char buf[MB_LEN_MAX];
		size_t k;
		if (s[i] == L'\n')
			break;
		if (!iswprint((wint_t)s[i]))
			continue;
		k = wcrtomb(buf, s[i], &ps);
		if (k == (size_t)-1 || len + k + 1 > sizeof(lv->filter))
			break;
		memcpy(lv->filter + len, buf, k);
		len += k;
	}
	lv->filter[len] = '\0';
	refilter(lv, true);
}

static void filter_backspace(struct listview *lv)
{
	size_t len = strlen(lv->filter), last = 0;
	mbstate_t ps;

	memset(&ps, 0, sizeof(ps));
	/* Find where the last character starts. */
	for (size_t i = 0; i < len;) {
		size_t k = mbrlen(lv->filter + i, len - i, &ps);
		if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
			memset(&ps, 0, sizeof(ps));
			k = 1;
		}
		last = i;
		i += k;
	}
	lv->filter[last] = '\0';
	refilter(lv, false);
}

static void move_selection(struct listview *lv, long delta)
{
	long target = (long)lv->selected + delta;

	if (lv->n_shown == 0)
		return;
	if (target < 0)
		target = 0;
	if (target >= (long)lv->n_shown)
		target = (long)lv->n_shown - 1;
	lv->selected = (size_t)target;
}

int listview_handle_key(struct listview *lv, const struct keypress *k)
{
	long page = lv->page > 1 ? lv->page - 1 : 1;

	if (k->kind == KP_FUNC) {
		switch (k->code) {
		case KEY_UP:
			move_selection(lv, -1);
			return SCREEN_REDRAW;
		case KEY_DOWN:
			move_selection(lv, 1);
			return SCREEN_REDRAW;
		case KEY_PPAGE:
			move_selection(lv, -page);
			return SCREEN_REDRAW;
		case KEY_NPAGE:
			move_selection(lv, page);
			return SCREEN_REDRAW;
		case KEY_HOME:
			lv->selected = 0;
			return SCREEN_REDRAW;
		case KEY_END:
			move_selection(lv, (long)lv->n_shown);
			return SCREEN_REDRAW;
		}
	}
	/* Tab marks; so does Space where it could not be filtered for (no filter
	 * starts with a space). */
	if (lv->marks && (keypress_is(k, '\t') || (keypress_is(k, ' ') && !lv->filter[0]))) {
		toggle_mark(lv);
		return SCREEN_REDRAW;
	}
	if (lv->filter_by_key && !lv->filtering) {
		if (keypress_is(k, '/')) {
			lv->filtering = true;
			return SCREEN_REDRAW;
		}
		/* Letters are the screen's actions; Esc still clears a filter first. */
		if (!(keypress_is_escape(k) && lv->filter[0]))
			return SCREEN_IGNORED;
	}
	if (lv->filtering && keypress_is_enter(k)) {
		lv->filtering = false;
		return SCREEN_REDRAW;
	}
	if (keypress_is_backspace(k)) {
		if (lv->filter[0])
			filter_backspace(lv);
		return SCREEN_REDRAW;
	}
	if (keypress_is(k, KEY_CTRL('u')) || (keypress_is_escape(k) && lv->filter[0]) ||
	    (keypress_is_escape(k) && lv->filtering)) {
		lv->filter[0] = '\0';
		/* ^U clears what is typed; Esc ends the filter too. */
		if (keypress_is_escape(k))
			lv->filtering = false;
		refilter(lv, false);
		return SCREEN_REDRAW;
	}
	if (k->kind == KP_PASTE) {
		filter_append(lv, k->text, k->len);
		return SCREEN_REDRAW;
	}
	/* ? is left to the screen (help): no label needs it. */
	if (k->kind == KP_CHAR && k->code >= 0x20 && k->code != 0x7f && k->code != '?' &&
	    iswprint(k->code)) {
		wchar_t wc = (wchar_t)k->code;
		filter_append(lv, &wc, 1);
		return SCREEN_REDRAW;
	}
	return SCREEN_IGNORED;
}

void listview_draw(struct listview *lv, struct area a)
{
	char status[64];
	int rows = a.rows - 1, status_cols;

	if (rows < 1 || a.cols < 4)
		return;
	lv->page = rows;
	if (lv->n_marked)
		snprintf(status, sizeof(status), "%zu marked, %zu of %zu", lv->n_marked,
		         lv->n_shown, lv->n_rows);
	else
		snprintf(status, sizeof(status), "%zu of %zu", lv->n_shown, lv->n_rows);
	status_cols = (int)strlen(status);
	if (lv->filter[0] || lv->filtering) {
		int x = a.x + draw_text(a.y, a.x, a.cols - status_cols - 2, A_BOLD, "Filter: ");
		x += draw_text(a.y, x, a.x + a.cols - status_cols - 2 - x, term_attr(TERM_INPUT),
		               lv->filter);
		if (lv->filtering)
			draw_text(a.y, x, a.x + a.cols - status_cols - 2 - x,
			          term_attr(TERM_INPUT) | A_REVERSE, " ");
	} else {
		draw_text(a.y, a.x, a.cols - status_cols - 2, A_NORMAL,
		          lv->filter_by_key ? "/ to filter" : "Type to filter");
	}
	draw_text(a.y, a.x + a.cols - status_cols, status_cols, A_NORMAL, status);
	if (lv->header) {
		/* Over the labels, past the selection's "> ". */
		draw_text(a.y + 1, a.x + 2, a.cols - 2, A_BOLD, lv->header);
		a.y++;
		if (--rows < 1)
			return;
		lv->page = rows;
	}

	if (lv->n_shown == 0) {
		draw_text(a.y + 1, a.x + 2, a.cols - 2, A_NORMAL, "No row matches the filter.");
		return;
	}
	/* Scroll just enough to keep the selection in view, the page full. */
	if (lv->top + (size_t)rows > lv->n_shown)
		lv->top = lv->n_shown > (size_t)rows ? lv->n_shown - (size_t)rows : 0;
	if (lv->selected < lv->top)
		lv->top = lv->selected;
	if (lv->selected >= lv->top + (size_t)rows)
		lv->top = lv->selected - (size_t)rows + 1;
	for (int i = 0; i < rows && lv->top + (size_t)i < lv->n_shown; i++) {
		size_t pos = lv->top + (size_t)i;
		const struct row *r = lv->rows[lv->shown[pos]];
		bool sel = pos == lv->selected;
		attr_t attr = sel ? term_attr(TERM_SELECTED) : A_NORMAL;
		int y = a.y + 1 + i, x = a.x;
		if (r->reason)
			attr |= term_attr(TERM_DISABLED);
		if (sel)
			draw_fill(y, a.x, a.cols, attr);
		x += draw_text(y, x, a.cols, attr, sel ? "> " : "  ");
		if (lv->marks)
			x += draw_text(y, x, a.x + a.cols - x, attr, r->marked ? "[x] " : "[ ] ");
		x += draw_text(y, x, a.x + a.cols - x, attr, r->label);
		if (r->reason && a.x + a.cols - x > 4) {
			char note[320];
			snprintf(note, sizeof(note), "  (%s)", r->reason);
			draw_text(y, x, a.x + a.cols - x, attr, note);
		}
	}
}
