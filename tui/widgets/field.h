#ifndef DERENROLL_TUI_FIELD_H
#define DERENROLL_TUI_FIELD_H

/*
 * A one-line text field: label, input line, inline error, help. Editing:
 * Left/Right, Home/End (^A/^E), Backspace, Delete (^D), ^U (erase to the start),
 * ^K (erase to the end); typed and pasted text (a multi-line paste gives its
 * first non-blank line). A masked field shows '*' per character until
 * FIELD_REVEAL_KEY toggles it. The text is wiped from memory when replaced or
 * freed. Enter, Tab and Esc are left to the screen, and so is ? while the
 * field is empty (the help key: no value begins with it).
 */

#include <stdbool.h>
#include <stddef.h>
#include <wchar.h>

#include "screen.h"

#define FIELD_MAX_CHARS       4096
#define FIELD_ROWS            4 /* label, input, error, help */
#define FIELD_REVEAL_KEY      KEY_CTRL('r')
#define FIELD_REVEAL_KEY_NAME "^R"

struct field {
	const char *label; /* not owned */
	const char *help;  /* not owned; where the value comes from */
	bool masked;
	bool revealed;
	wchar_t *text; /* len characters, NUL-terminated when cap > 0 */
	size_t len, cap;
	size_t cursor; /* 0 to len */
	size_t scroll; /* first character shown; field_draw() keeps the cursor in view */
	char error[256];
};

void field_init(struct field *f, const char *label, const char *help, bool masked);
void field_done(struct field *f);

/* Edits on `k`; returns SCREEN_REDRAW when it used the key, else SCREEN_IGNORED.
 * Any edit clears the error. */
int field_handle_key(struct field *f, const struct keypress *k);

/* Draws the field's FIELD_ROWS rows at (y, x), `cols` wide; `focused` shows
 * the cursor. Returns the rows used. */
int field_draw(struct field *f, int y, int x, int cols, bool focused);

/* The text with surrounding white space trimmed, as a malloc'd UTF-8 string
 * the caller frees with field_free_value() (which wipes it). ENR_E_NOMEM, or
 * ENR_E_PARSE when a character cannot be encoded in the locale. */
int field_value(char **out, const struct field *f);
void field_free_value(char *value);

/* Whether the trimmed text is empty. */
bool field_is_blank(const struct field *f);

/* Replaces the text (UTF-8); the cursor goes to its end. 0 or ENR_E_NOMEM. */
int field_set_text(struct field *f, const char *text);

/* Sets the inline error shown under the input (printf format), or clears it (NULL). */
void field_set_error(struct field *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
