#ifndef DERENROLL_TUI_TERM_H
#define DERENROLL_TUI_TERM_H

/*
 * The one module that owns the terminal. Include this instead of <curses.h>:
 * it brings the wide-character curses API.
 */

#ifndef NCURSES_WIDECHAR
#define NCURSES_WIDECHAR 1
#endif
#include <curses.h>
#include <stdbool.h>

/* Key codes of the bracketed-paste markers (ESC [200~ and ESC [201~). */
#define TERM_KEY_PASTE_BEGIN (KEY_MAX + 1)
#define TERM_KEY_PASTE_END   (KEY_MAX + 2)

/* Terminals smaller than this get a "too small" message instead of a screen.
 * Above it every screen fits itself to what there is (text wraps, the QR code
 * says exactly what it lacks); 80x24 is the size it is made for, not a floor. */
#define TERM_MIN_COLS 40
#define TERM_MIN_ROWS 20

/* What a piece of text is, so that colour and monochrome terminals both show it. */
enum term_role {
	TERM_NORMAL,
	TERM_TITLE,    /* the title line */
	TERM_KEYNAME,  /* a key's name on the key-help line */
	TERM_SELECTED, /* the selected list row */
	TERM_DISABLED, /* a row that cannot be chosen */
	TERM_ERROR,    /* an inline error */
	TERM_INPUT,    /* the editable part of a text field */
	TERM_QR,       /* a QR code: dark on light (colour) or reverse video */
};

/*
 * Takes the terminal: curses on stdin/stdout (both must be terminals), cbreak
 * (so Ctrl-C stays a signal), no echo, keypad, no newline translation (Enter
 * arrives as '\r'), hidden cursor, bracketed paste on, colours unless NO_COLOR
 * is set or the terminal has none. Registers term_done() with atexit and
 * installs signal handlers: SIGINT, SIGTERM, SIGHUP, SIGQUIT and the fatal
 * signals (SEGV, ABRT, BUS, FPE, ILL) restore the terminal and re-raise, so the
 * process ends as the signal says (unread input is discarded first, so that
 * keys typed into a screen never reach the shell). setlocale(LC_ALL, "") must
 * have been called.
 * Returns 0, or ENR_E_USAGE with a message (not a terminal, unknown TERM).
 */
int term_init(void);

/* Gives the terminal back (bracketed paste off, endwin). Idempotent. */
void term_done(void);

/*
 * Runs `fn` when SIGINT, SIGTERM, SIGHUP or SIGQUIT (or ^C, term_interrupt())
 * ends the program, after the terminal is restored: what atexit() would have
 * done had the program exited. It runs in a signal handler, so it must be
 * async-signal-safe (unlink, rmdir, write; no malloc, no stdio). NULL removes it.
 */
void term_set_exit_cleanup(void (*fn)(void));

/* Whether SIGWINCH came since the last call (then curses has a KEY_RESIZE
 * to deliver, even though stdin may have nothing to read). */
bool term_take_resize(void);

/* Whether term_init() succeeded and term_done() has not been called. */
bool term_active(void);

/* Whether the locale's character set is UTF-8 (half blocks can be drawn). */
bool term_utf8(void);

/* Whether colour pairs are in use (false with NO_COLOR or a monochrome terminal). */
bool term_colors(void);

/* The attributes (colour pair included) to draw text of `role` with. */
attr_t term_attr(enum term_role role);

/*
 * Quits now as Ctrl-C does: restores the terminal and raises SIGINT. For a
 * Ctrl-C that arrives as a key (raw mode, or inside a paste).
 */
_Noreturn void term_interrupt(void);

#endif
