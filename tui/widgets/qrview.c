#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "term.h"
#include "widgets/qrview.h"

#define QZ ENR_QR_QUIET_ZONE

void qrview_size(const struct enr_qr *qr, int *cols, int *rows)
{
	enr_qr_cells_needed(enr_qr_width(qr), term_utf8(), cols, rows);
}

/* Module (x, y) of the code with its quiet zone: outside the code is light. */
static bool dark_at(const struct enr_qr *qr, int x, int y)
{
	int w = enr_qr_width(qr);

	x -= QZ;
	y -= QZ;
	return x >= 0 && y >= 0 && x < w && y < w && enr_qr_dark(qr, x, y);
}

static void fit_message(char *msg, size_t size, int missing_cols, int missing_rows)
{
	const char *head = "The QR code does not fit: need";

	if (missing_cols > 0 && missing_rows > 0)
		snprintf(msg, size, "%s %d more column%s and %d more row%s", head, missing_cols,
		         missing_cols == 1 ? "" : "s", missing_rows, missing_rows == 1 ? "" : "s");
	else if (missing_cols > 0)
		snprintf(msg, size, "%s %d more column%s", head, missing_cols,
		         missing_cols == 1 ? "" : "s");
	else
		snprintf(msg, size, "%s %d more row%s", head, missing_rows,
		         missing_rows == 1 ? "" : "s");
}

/* In `attr` the foreground is dark and the background light (the QR pair, or
 * reverse video on a monochrome terminal). A cell whose two modules agree is a
 * space in the background colour, with no glyph to leave seams between rows;
 * a split cell is a lower half block over the background of the upper module,
 * since fonts (DejaVu Sans Mono in xterm) leave the row of pixels at a cell's
 * top uncovered, which then shows the upper module's colour. */
static void draw_half_blocks(const struct enr_qr *qr, struct area a, int side, attr_t attr)
{
	for (int row = 0; row * 2 < side; row++) {
		move(a.y + row, a.x);
		for (int x = 0; x < side; x++) {
			bool top = dark_at(qr, x, 2 * row);
			bool bottom = 2 * row + 1 < side && dark_at(qr, x, 2 * row + 1);

			attrset(top ? attr ^ A_REVERSE : attr);
			addnwstr(top == bottom ? L" " : L"\u2584", 1);
		}
	}
	attrset(A_NORMAL);
}

/* Two spaces a module: light ones in `attr`, dark ones in its reverse. */
static void draw_double_cells(const struct enr_qr *qr, struct area a, int side, attr_t attr)
{
	for (int y = 0; y < side; y++) {
		move(a.y + y, a.x);
		for (int x = 0; x < side; x++) {
			attrset(dark_at(qr, x, y) ? attr ^ A_REVERSE : attr);
			addstr("  ");
		}
	}
	attrset(A_NORMAL);
}

bool qrview_draw(const struct enr_qr *qr, struct area a, char *msg, size_t msg_size)
{
	int cols, rows, side = enr_qr_width(qr) + 2 * QZ;

	qrview_size(qr, &cols, &rows);
	if (cols > a.cols || rows > a.rows) {
		int ucols, urows;
		fit_message(msg, msg_size, cols - a.cols, rows - a.rows);
		/* Without UTF-8 a module takes two whole cells: half blocks would fit. */
		enr_qr_cells_needed(enr_qr_width(qr), true, &ucols, &urows);
		if (!term_utf8() && ucols <= a.cols && urows <= a.rows && msg_size > 0)
			snprintf(msg + strlen(msg), msg_size - strlen(msg),
			         ", or use a UTF-8 locale (LANG=C.UTF-8), where it fits");
		return false;
	}
	if (msg_size > 0)
		msg[0] = '\0';
	if (term_utf8())
		draw_half_blocks(qr, a, side, term_attr(TERM_QR));
	else
		draw_double_cells(qr, a, side, term_attr(TERM_QR));
	return true;
}
