#ifndef DERENROLL_TUI_DRAW_H
#define DERENROLL_TUI_DRAW_H

/* Text drawing on stdscr that knows about wide characters and widths. */

#include "term.h"

/* A rectangle of cells: top-left row and column, size. */
struct area {
	int y, x;
	int rows, cols;
};

/*
 * Draws UTF-8 `text` at (y, x) in at most `cols` columns with `attr`; control
 * characters show in their visible form ("\x1b", "\u009b": derenroll/text.h),
 * bytes that are not UTF-8 as U+FFFD ('?' where the locale cannot show it).
 * Text that does not fit ends in "…" ('~' outside UTF-8). Returns the columns used.
 */
int draw_text(int y, int x, int cols, attr_t attr, const char *text);

/* Draws `cols` spaces with `attr` (a bar, or clearing). */
void draw_fill(int y, int x, int cols, attr_t attr);

/*
 * Word-wraps UTF-8 `text` into `a` (newlines break lines; words longer than a
 * line, such as URLs, are broken anywhere). Returns the rows used; text below
 * the area is not drawn. draw_wrapped_rows() only counts.
 */
int draw_wrapped(struct area a, attr_t attr, const char *text);
int draw_wrapped_rows(int cols, const char *text);

/* Columns `text` takes on the terminal. */
int draw_text_width(const char *text);

#endif
