#include <assert.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "derenroll/error.h"
#include "screen.h"

/* A paste larger than this is cut (nothing sane pastes 64k characters). */
#define PASTE_MAX 65536
#define TICK_MS   1000

static struct {
	struct screen *stack[SCREEN_STACK_MAX];
	int depth;
	bool dirty;
	screen_navigate_fn *navigate;
	void *navigate_ctx;
	loop_fn *after_draw;
	void *after_draw_ctx;
	unsigned tick_timer;
	long long started_ms;
	bool in_paste;
	/* An escape sequence being read (see on_key_char()). */
	enum { ESC_NONE, ESC_SEEN, ESC_CSI, ESC_SS3, ESC_STRING, ESC_STRING_ESC } esc;
	char esc_params[16];
	size_t esc_len;
	wchar_t *paste;
	size_t paste_len, paste_cap;
	int cursor_y, cursor_x; /* this frame's terminal cursor; -1: hidden */
} S;

bool keypress_is_enter(const struct keypress *k)
{
	return (k->kind == KP_CHAR && (k->code == '\r' || k->code == '\n')) ||
	       (k->kind == KP_FUNC && k->code == KEY_ENTER);
}

bool keypress_is_escape(const struct keypress *k)
{
	return k->kind == KP_CHAR && k->code == KEY_ESC;
}

bool keypress_is_backspace(const struct keypress *k)
{
	return (k->kind == KP_CHAR && (k->code == 127 || k->code == KEY_CTRL('h'))) ||
	       (k->kind == KP_FUNC && k->code == KEY_BACKSPACE);
}

bool keypress_is(const struct keypress *k, wint_t ch)
{
	return k->kind == KP_CHAR && k->code == ch;
}

void screen_redraw(void)
{
	S.dirty = true;
}

void screen_set_navigator(screen_navigate_fn *fn, void *ctx)
{
	S.navigate = fn;
	S.navigate_ctx = ctx;
}

void screen_set_after_draw(loop_fn *fn, void *ctx)
{
	S.after_draw = fn;
	S.after_draw_ctx = ctx;
}

void screen_quit(int status)
{
	loop_quit(status);
}

struct screen *screen_top(void)
{
	return S.depth > 0 ? S.stack[S.depth - 1] : NULL;
}

void screen_push(struct screen *s)
{
	assert(S.depth < SCREEN_STACK_MAX);
	S.stack[S.depth++] = s;
	if (s->on_enter)
		s->on_enter(s);
	S.dirty = true;
}

void screen_pop(void)
{
	struct screen *s;

	if (S.depth == 0)
		return;
	s = S.stack[--S.depth];
	if (s->on_leave)
		s->on_leave(s);
	S.dirty = true;
}

void screen_replace(struct screen *s)
{
	screen_pop();
	screen_push(s);
}

static void apply(int flags, struct screen *from)
{
	if (flags & SCREEN_REDRAW)
		S.dirty = true;
	if (flags & SCREEN_QUIT) {
		loop_quit(0);
		return;
	}
	if (flags & SCREEN_NEXT) {
		if (!(S.navigate && S.navigate(S.navigate_ctx, from, SCREEN_NEXT)))
			loop_quit(0);
	} else if (flags & SCREEN_BACK) {
		if (!(S.navigate && S.navigate(S.navigate_ctx, from, SCREEN_BACK))) {
			screen_pop();
			if (S.depth == 0)
				loop_quit(0);
		}
	}
}

int screen_dispatch(const struct screen_event *ev)
{
	struct screen *top = screen_top();
	int flags;

	if (!top || !top->on_event)
		return SCREEN_IGNORED;
	flags = top->on_event(top, ev);
	apply(flags, top);
	return flags;
}

/* ---- help: the keys of the screen below, from its keys() ---------------- */

static void help_draw(struct screen *s)
{
	static const struct key_help close_keys[] = {{"Esc", "close"}, {NULL, NULL}};
	struct screen *below = s->state;
	const struct key_help *keys = below->keys(below);
	struct area body = screen_frame("Keys of this screen", close_keys);
	int y = body.y + 1, width = 0;
	static const struct key_help global[] = {
	    {"? or F1", "this help (in a field with text in it, ? is typed: use F1)"},
	    {"^C", "quit at once"},
	    {NULL, NULL}};

	for (const struct key_help *k = keys; k && k->key; k++)
		if (draw_text_width(k->key) > width)
			width = draw_text_width(k->key);
	for (const struct key_help *k = global; k->key; k++)
		if (draw_text_width(k->key) > width)
			width = draw_text_width(k->key);
	for (int part = 0; part < 2; part++) {
		for (const struct key_help *k = part ? global : keys; k && k->key; k++) {
			if (y >= body.y + body.rows)
				return;
			draw_text(y, 2, width, term_attr(TERM_KEYNAME), k->key);
			draw_text(y++, 4 + width, body.cols - 6 - width, A_NORMAL, k->label);
		}
		y++;
	}
}

static int help_key(struct screen *s, const struct keypress *k)
{
	(void)s;
	if (keypress_is_escape(k) || keypress_is(k, 'q') || keypress_is(k, '?') ||
	    keypress_is_enter(k) || (k->kind == KP_FUNC && k->code == KEY_F(1))) {
		screen_pop();
		return SCREEN_HANDLED;
	}
	return SCREEN_HANDLED;
}

static struct screen help_screen = {.name = "help", .draw = help_draw, .handle_key = help_key};

void screen_help_open(void)
{
	struct screen *top = screen_top();

	if (!top || top == &help_screen || !top->keys)
		return;
	help_screen.state = top;
	screen_push(&help_screen);
}

/* ---- confirm: a yes/no question over the screen below ------------------- */

static struct {
	struct screen *below;
	char question[1024];
	char yes_label[32], no_label[32];
	screen_yes_fn *yes;
	void *ctx;
} C;

static void confirm_draw(struct screen *s)
{
	struct key_help keys[] = {{"y", C.yes_label}, {"n", C.no_label}, {NULL, NULL}};
	int cols = COLS - 8 > 66 ? 66 : COLS - 8;
	int rows = draw_wrapped_rows(cols - 4, C.question) + 4;
	int y = (LINES - rows) / 2, x = (COLS - cols) / 2;

	(void)s;
	if (C.below->draw)
		C.below->draw(C.below);
	for (int i = 0; i < rows; i++)
		draw_fill(y + i, x, cols, A_REVERSE);
	draw_wrapped((struct area){y + 1, x + 2, rows - 4, cols - 4}, A_REVERSE | A_BOLD,
	             C.question);
	/* The key line is the question's. */
	draw_fill(LINES - 1, 0, COLS, A_NORMAL);
	for (int i = 0, kx = x + 2; keys[i].key; i++) {
		kx += draw_text(y + rows - 2, kx, cols - 4, A_REVERSE | A_BOLD, keys[i].key);
		kx += 1 + draw_text(y + rows - 2, kx + 1, cols - 4, A_REVERSE, keys[i].label) + 3;
	}
	for (int i = 0, kx = 1; keys[i].key; i++) {
		kx += draw_text(LINES - 1, kx, COLS - kx, term_attr(TERM_KEYNAME), keys[i].key);
		kx += 1 + draw_text(LINES - 1, kx + 1, COLS - kx - 1, A_NORMAL, keys[i].label) + 2;
	}
}

static int confirm_key(struct screen *s, const struct keypress *k)
{
	struct screen *below = C.below;

	(void)s;
	if (keypress_is(k, 'y') || keypress_is(k, 'Y')) {
		screen_pop();
		apply(C.yes(C.ctx), below);
		return SCREEN_HANDLED;
	}
	if (keypress_is(k, 'n') || keypress_is(k, 'N') || keypress_is_escape(k)) {
		screen_pop();
		return SCREEN_HANDLED;
	}
	return SCREEN_HANDLED;
}

/* The screen below keeps its countdown. */
static int confirm_event(struct screen *s, const struct screen_event *ev)
{
	(void)s;
	if (C.below->on_event)
		return C.below->on_event(C.below, ev) & SCREEN_REDRAW;
	return SCREEN_IGNORED;
}

static struct screen confirm_screen = {
    .name = "confirm", .draw = confirm_draw, .handle_key = confirm_key, .on_event = confirm_event};

void screen_confirm(const char *question, const char *yes_label, const char *no_label,
                    screen_yes_fn *yes, void *ctx)
{
	struct screen *top = screen_top();

	if (!top || top == &confirm_screen)
		return;
	C.below = top;
	snprintf(C.question, sizeof(C.question), "%s", question);
	snprintf(C.yes_label, sizeof(C.yes_label), "%s", yes_label);
	snprintf(C.no_label, sizeof(C.no_label), "%s", no_label);
	C.yes = yes;
	C.ctx = ctx;
	screen_push(&confirm_screen);
}

static void deliver(const struct keypress *k)
{
	struct screen *top = screen_top();
	int flags;

	if (!top || !top->handle_key)
		return;
	if (k->kind == KP_FUNC && k->code == KEY_F(1) && top->keys) {
		screen_help_open();
		return;
	}
	flags = top->handle_key(top, k);
	/* ? is help where the screen has no use for it. */
	if (flags == SCREEN_IGNORED && keypress_is(k, '?') && top->keys) {
		screen_help_open();
		return;
	}
	apply(flags, top);
}

static void paste_append(wchar_t wc)
{
	if (S.paste_len + 1 >= S.paste_cap) {
		size_t cap = S.paste_cap ? S.paste_cap * 2 : 256;
		wchar_t *bigger;
		if (cap > PASTE_MAX + 1)
			cap = PASTE_MAX + 1;
		if (S.paste_len + 1 >= cap)
			return; /* full: the rest is dropped */
		/* Not realloc: the old buffer may hold a secret and must be wiped. */
		bigger = malloc(cap * sizeof(*bigger));
		if (!bigger)
			return;
		if (S.paste) {
			memcpy(bigger, S.paste, S.paste_len * sizeof(*bigger));
			explicit_bzero(S.paste, S.paste_cap * sizeof(*S.paste));
			free(S.paste);
		}
		S.paste = bigger;
		S.paste_cap = cap;
	}
	S.paste[S.paste_len++] = wc;
}

static void paste_end(void)
{
	struct keypress k = {.kind = KP_PASTE};

	S.in_paste = false;
	if (!S.paste)
		return;
	S.paste[S.paste_len] = L'\0';
	k.text = S.paste;
	k.len = S.paste_len;
	deliver(&k);
	explicit_bzero(S.paste, S.paste_cap * sizeof(*S.paste));
	S.paste_len = 0;
}

static void on_char(wint_t ch)
{
	struct keypress k = {.kind = KP_CHAR, .code = ch};

	if (S.in_paste) {
		/* Pasted text: line ends become '\n'; a pasted ^C is just text. */
		paste_append(ch == '\r' ? L'\n' : (wchar_t)ch);
		return;
	}
	/* Normally ^C is SIGINT (cbreak keeps ISIG); this is for raw terminals. */
	if (ch == KEY_CTRL('c'))
		term_interrupt();
	deliver(&k);
}

static void on_func(wint_t code)
{
	struct keypress k = {.kind = KP_FUNC, .code = code};

	if (code == KEY_RESIZE) {
		S.dirty = true;
		return;
	}
	if (code == TERM_KEY_PASTE_BEGIN) {
		S.in_paste = true;
		S.paste_len = 0;
		return;
	}
	if (code == TERM_KEY_PASTE_END) {
		if (S.in_paste)
			paste_end();
		return;
	}
	if (S.in_paste) {
		if (code == KEY_ENTER)
			paste_append(L'\n');
		return;
	}
	deliver(&k);
}

/*
 * Escape sequences the terminfo entry does not know (under TERM=vt100 an F5
 * arrives as ESC [ 1 5 ~; curses hands over ESC, then "[15~" as if typed).
 * They are read here whole: those of the xterm and VT220 keys become the key
 * (F1-F12, arrows, Home, End, Insert, Delete, PgUp, PgDn), any other (and any
 * OSC, DCS, APC or PM string) is swallowed, so that no sequence is ever typed
 * into a field.
 */
static wint_t csi_key(const char *params, wint_t final)
{
	static const struct {
		int n;
		int key;
	} tilde[] = {{1, KEY_HOME},  {2, KEY_IC},     {3, KEY_DC},     {4, KEY_END},
	             {5, KEY_PPAGE}, {6, KEY_NPAGE},  {7, KEY_HOME},   {8, KEY_END},
	             {11, KEY_F(1)}, {12, KEY_F(2)},  {13, KEY_F(3)},  {14, KEY_F(4)},
	             {15, KEY_F(5)}, {17, KEY_F(6)},  {18, KEY_F(7)},  {19, KEY_F(8)},
	             {20, KEY_F(9)}, {21, KEY_F(10)}, {23, KEY_F(11)}, {24, KEY_F(12)}};
	int n = atoi(params);

	/* Modifiers (";5" for Ctrl...) are not told apart: the key alone. */
	switch (final) {
	case 'A':
		return KEY_UP;
	case 'B':
		return KEY_DOWN;
	case 'C':
		return KEY_RIGHT;
	case 'D':
		return KEY_LEFT;
	case 'H':
		return KEY_HOME;
	case 'F':
		return KEY_END;
	case 'Z':
		return KEY_BTAB;
	case '~':
		for (size_t i = 0; i < sizeof(tilde) / sizeof(tilde[0]); i++)
			if (tilde[i].n == n)
				return (wint_t)tilde[i].key;
		return 0;
	default:
		return 0;
	}
}

static wint_t ss3_key(wint_t final)
{
	switch (final) {
	case 'P':
	case 'Q':
	case 'R':
	case 'S':
		return (wint_t)KEY_F(1 + (int)(final - 'P'));
	case 'M':
		return KEY_ENTER;
	default:
		return csi_key("", final);
	}
}

/* Ends what was being read when something else comes: a lone Esc is the Esc
 * key; a sequence cut short is dropped. */
static void esc_end(void)
{
	bool lone = S.esc == ESC_SEEN;

	S.esc = ESC_NONE;
	S.esc_len = 0;
	if (lone)
		on_char(KEY_ESC);
}

static void on_key_char(wint_t ch)
{
	wint_t key = 0;

	switch (S.esc) {
	case ESC_NONE:
		if (ch == KEY_ESC && !S.in_paste)
			S.esc = ESC_SEEN;
		else
			on_char(ch);
		return;
	case ESC_SEEN:
		if (ch == '[' || ch == 'O') {
			S.esc = ch == '[' ? ESC_CSI : ESC_SS3;
			S.esc_len = 0;
			return;
		}
		/* OSC, DCS, APC, PM (a terminal's answers): up to BEL or ESC \. */
		if (ch == ']' || ch == 'P' || ch == '_' || ch == '^') {
			S.esc = ESC_STRING;
			return;
		}
		esc_end(); /* Esc, then the key on its own (Alt+key) */
		on_key_char(ch);
		return;
	case ESC_CSI:
		if (ch >= 0x20 && ch <= 0x3f) { /* parameters and intermediates */
			if (S.esc_len + 1 < sizeof(S.esc_params))
				S.esc_params[S.esc_len++] = (char)ch;
			S.esc_params[S.esc_len] = '\0';
			return;
		}
		S.esc_params[S.esc_len] = '\0';
		if (ch >= 0x40 && ch <= 0x7e)
			key = csi_key(S.esc_params, ch);
		break;
	case ESC_SS3:
		if (ch >= 0x20 && ch <= 0x7e)
			key = ss3_key(ch);
		break;
	case ESC_STRING:
	case ESC_STRING_ESC:
		if (ch == 0x07 || (S.esc == ESC_STRING_ESC && ch == '\\')) {
			S.esc = ESC_NONE;
			return;
		}
		S.esc = ch == KEY_ESC ? ESC_STRING_ESC : ESC_STRING;
		return;
	}
	/* The final character, or one that cannot be in a sequence (which ends it
	 * and counts on its own). */
	S.esc = ESC_NONE;
	S.esc_len = 0;
	if (key)
		on_func(key);
	else if (ch < 0x20 || ch > 0x7e)
		on_key_char(ch);
}

static void read_keys(void *ctx, int fd, short revents)
{
	wint_t ch;
	int rc;

	(void)ctx;
	(void)fd;
	if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
		/* The terminal is gone: nobody to ask anything. */
		loop_quit(enr_error_set(ENR_E_IO, "the terminal went away"));
		return;
	}
	/* Until curses has nothing left, so no key waits in its buffer unseen by poll. */
	while ((rc = wget_wch(stdscr, &ch)) != ERR) {
		if (rc == KEY_CODE_YES) {
			esc_end();
			on_func(ch);
		} else {
			on_key_char(ch);
		}
	}
	/* curses waited ESCDELAY for more after an Esc: nothing came, so a lone
	 * Esc is the Esc key, and a sequence cut short is dropped. */
	esc_end();
}

static void draw_too_small(void)
{
	char msg[96];
	struct area a = {0, 0, LINES, COLS};

	snprintf(msg, sizeof(msg), "Terminal too small: need at least %dx%d (now %dx%d)",
	         TERM_MIN_COLS, TERM_MIN_ROWS, COLS, LINES);
	draw_wrapped(a, A_BOLD, msg);
}

static void draw_if_dirty(void *ctx)
{
	struct screen *top = screen_top();

	(void)ctx;
	/* The resize woke the loop, not stdin: fetch curses' KEY_RESIZE now. */
	if (term_take_resize())
		read_keys(NULL, STDIN_FILENO, 0);
	if (!S.dirty)
		return;
	S.dirty = false;
	S.cursor_y = S.cursor_x = -1;
	erase();
	if (COLS < TERM_MIN_COLS || LINES < TERM_MIN_ROWS)
		draw_too_small();
	else if (top && top->draw)
		top->draw(top);
	/* The terminal's cursor where typing goes, when the screen says so. */
	if (S.cursor_y >= 0 && S.cursor_y < LINES && S.cursor_x >= 0 && S.cursor_x < COLS) {
		move(S.cursor_y, S.cursor_x);
		curs_set(1);
	} else {
		curs_set(0);
	}
	wnoutrefresh(stdscr);
	doupdate();
	if (S.after_draw)
		S.after_draw(S.after_draw_ctx);
}

/* Ticks stay on whole seconds since the start, however late one fires. */
static void tick(void *ctx)
{
	struct screen_event ev = {.type = SCREEN_EV_TICK};
	long long elapsed = loop_now_ms() - S.started_ms;

	(void)ctx;
	S.tick_timer = loop_set_timer(TICK_MS - elapsed % TICK_MS, tick, NULL);
	screen_dispatch(&ev);
}

void screen_show_cursor(int y, int x)
{
	S.cursor_y = y;
	S.cursor_x = x;
}

struct area screen_frame(const char *title, const struct key_help *keys)
{
	struct area body = {1, 0, LINES - 2, COLS};
	int x = 1, y = LINES - 1, reserved;
	static const struct key_help tail[] = {{"?", "help"}, {"^C", "quit"}, {NULL, NULL}};
	struct screen *top = screen_top();
	const struct key_help *last = top && top->keys && top != &help_screen ? tail : tail + 1;

	draw_fill(0, 0, COLS, term_attr(TERM_TITLE));
	draw_text(0, 1, COLS - 2, term_attr(TERM_TITLE), title);
	reserved = 0;
	for (const struct key_help *k = last; k->key; k++)
		reserved += draw_text_width(k->key) + 1 + draw_text_width(k->label) + 2;
	/* The screen's own keys while room is left for help and quit. */
	for (int part = 0; part < 2; part++) {
		for (const struct key_help *k = part ? last : keys; k && k->key; k++) {
			int need = draw_text_width(k->key) + 1 + draw_text_width(k->label);
			if (x + need + (part ? 0 : reserved) > COLS)
				break;
			x += draw_text(y, x, need, term_attr(TERM_KEYNAME), k->key);
			x += 1 + draw_text(y, x + 1, COLS - x - 1, A_NORMAL, k->label) + 2;
		}
	}
	return body;
}

int screen_run(struct screen *first)
{
	int rc;

	assert(term_active() && first);
	rc = loop_init();
	if (rc < 0)
		return rc;
	rc = loop_watch_fd(STDIN_FILENO, POLLIN, read_keys, NULL);
	if (rc < 0)
		return rc;
	S.started_ms = loop_now_ms();
	S.tick_timer = loop_set_timer(TICK_MS, tick, NULL);
	loop_set_prepare(draw_if_dirty, NULL);
	screen_push(first);
	rc = loop_run();
	while (S.depth > 0)
		screen_pop();
	loop_cancel_timer(S.tick_timer);
	loop_unwatch_fd(STDIN_FILENO);
	loop_set_prepare(NULL, NULL);
	if (S.paste) {
		explicit_bzero(S.paste, S.paste_cap * sizeof(*S.paste));
		free(S.paste);
	}
	S.paste = NULL;
	S.paste_len = S.paste_cap = 0;
	S.in_paste = false;
	S.esc = ESC_NONE;
	S.esc_len = 0;
	return rc;
}
