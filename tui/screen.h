#ifndef DERENROLL_TUI_SCREEN_H
#define DERENROLL_TUI_SCREEN_H

/*
 * Screens and the screen stack. A screen holds its state, never terminal
 * coordinates: draw() lays it out anew from that state at the current size,
 * which is how resizes work. Keys and events come from the loop (loop.h);
 * handlers change state and return flags, they never draw.
 */

#include <stddef.h>
#include <wchar.h>

#include "draw.h"
#include "loop.h"
#include "term.h"

#define KEY_CTRL(c) ((c)&0x1f)
#define KEY_ESC     27

enum keypress_kind {
	KP_CHAR,  /* a character, control characters included (Enter is '\r') */
	KP_FUNC,  /* a curses KEY_* code: arrows, KEY_BACKSPACE, KEY_F(2)... */
	KP_PASTE, /* a bracketed paste, delivered whole */
};

struct keypress {
	enum keypress_kind kind;
	wint_t code;         /* KP_CHAR: the character; KP_FUNC: the KEY_* code */
	const wchar_t *text; /* KP_PASTE: NUL-terminated, line ends as '\n'; valid
	                      * during the call only (then wiped: it may be a secret) */
	size_t len;
};

/* Enter ('\r', '\n' or KEY_ENTER), Esc, Backspace (any of its codes). */
bool keypress_is_enter(const struct keypress *k);
bool keypress_is_escape(const struct keypress *k);
bool keypress_is_backspace(const struct keypress *k);
/* Whether `k` is the character `ch` (a plain key or a control character). */
bool keypress_is(const struct keypress *k, wint_t ch);

/* What handle_key() and on_event() return: any combination. */
enum screen_flags {
	SCREEN_IGNORED = 0,      /* not for this screen */
	SCREEN_HANDLED = 1 << 0, /* consumed, nothing visible changed */
	SCREEN_REDRAW = 1 << 1,  /* state changed: draw again */
	SCREEN_NEXT = 1 << 2,    /* done: go forward (the navigator decides where) */
	SCREEN_BACK = 1 << 3,    /* go back (default: pop; from the last screen: quit) */
	SCREEN_QUIT = 1 << 4,    /* leave the program, status 0 */
};

enum screen_event_type {
	SCREEN_EV_TICK, /* once a second, for countdowns */
	SCREEN_EV_USER, /* sent by screen_dispatch(): kind and data are the sender's */
};

struct screen_event {
	enum screen_event_type type;
	int kind;
	void *data;
};

/* One entry of the key-help line: {"Enter", "save"}; arrays end with {NULL, NULL}. */
struct key_help {
	const char *key;
	const char *label;
};

struct screen {
	const char *name;
	/* Draws the whole screen on stdscr (after erase), usually starting with
	 * screen_frame(). Not called while the terminal is too small. */
	void (*draw)(struct screen *s);
	int (*handle_key)(struct screen *s, const struct keypress *key);
	int (*on_event)(struct screen *s, const struct screen_event *ev); /* optional */
	void (*on_enter)(struct screen *s); /* optional: pushed (or replaced in) */
	void (*on_leave)(struct screen *s); /* optional: popped, replaced, or at exit */
	void *state;
	/* Optional: the keys of the screen as it is now (what its key line shows),
	 * ending with {NULL, NULL}. A screen that has them gets the help screen:
	 * F1, or ? when the screen leaves it unused (a field with text in it takes
	 * ? as a character), lists them; "? help" is on its key line. */
	const struct key_help *(*keys)(struct screen *s);
};

/*
 * Draws the title line (top) and the key-help line (bottom: `keys`, then
 * "? help" when the screen drawing has keys(), and "^C quit", which works
 * everywhere; those two are never the entries cut off) and returns the area
 * between them.
 */
struct area screen_frame(const char *title, const struct key_help *keys);

/*
 * Decides where SCREEN_NEXT (and SCREEN_BACK) lead, e.g. by pushing the next
 * step: return nonzero when done, 0 for the default. Default NEXT: quit with
 * status 0; default BACK: pop, and quit when the last screen goes.
 */
typedef int screen_navigate_fn(void *ctx, struct screen *from, int flag);
void screen_set_navigator(screen_navigate_fn *fn, void *ctx);

/*
 * Runs the screens with `first` at the bottom of the stack until one quits;
 * term_init() first. Returns the quit status (screen_quit(), 0 for
 * SCREEN_QUIT), or a negative enum enr_error. Screens still on the stack get
 * on_leave() from the top down before it returns.
 */
int screen_run(struct screen *first);

/* The stack (at most SCREEN_STACK_MAX deep). Each change redraws. */
#define SCREEN_STACK_MAX 16
void screen_push(struct screen *s);
void screen_pop(void);
void screen_replace(struct screen *s);
struct screen *screen_top(void);

/* Pushes the help screen over the top screen (no-op when it has no keys()). */
void screen_help_open(void);

/*
 * A yes/no question as a screen over the top one, which is drawn under it and
 * keeps its events (countdowns): y closes it and runs yes(ctx), whose flags
 * are applied as if the screen below had returned them; n and Esc close it
 * and change nothing (no is the default). The labels name what y and n do
 * ("discard", "keep"). Strings are copied.
 */
typedef int screen_yes_fn(void *ctx);
void screen_confirm(const char *question, const char *yes_label, const char *no_label,
                    screen_yes_fn *yes, void *ctx);

/* From draw(): shows the terminal's cursor at (y, x) in this frame, where
 * typing goes (a frame that does not call it hides the cursor). */
void screen_show_cursor(int y, int x);

/* Draws again on the loop's next turn (after state changed outside handle_key). */
void screen_redraw(void);

/* Sends `ev` to the top screen's on_event and applies the flags it returns. */
int screen_dispatch(const struct screen_event *ev);

/* Makes screen_run() return `status`. */
void screen_quit(int status);

/* fn(ctx) runs after every frame is on the terminal (startup timing, tests). */
void screen_set_after_draw(loop_fn *fn, void *ctx);

#endif
