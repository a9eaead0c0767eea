#ifndef DERENROLL_TUI_QRVIEW_H
#define DERENROLL_TUI_QRVIEW_H

#include <stdbool.h>
#include <stddef.h>

#include "derenroll/qr.h"
#include "draw.h"

/* The cells `qr` takes with its quiet zone in this terminal's locale. */
void qrview_size(const struct enr_qr *qr, int *cols, int *rows);

/*
 * Draws `qr` with its light quiet zone, top-left corner at (a.y, a.x), when it
 * fits in `a`, and returns true. UTF-8: half blocks, two modules per cell, in
 * the QR colour pair (dark on light whatever the theme) or reverse video on a
 * monochrome terminal; otherwise two cells per module. Never draws part of a
 * code: when it does not fit it draws nothing, writes "The QR code does not
 * fit: need N more columns and M more rows" into `msg` and returns false; the
 * caller then shows the link as text.
 */
bool qrview_draw(const struct enr_qr *qr, struct area a, char *msg, size_t msg_size);

#endif
