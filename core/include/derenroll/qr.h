#ifndef DERENROLL_QR_H
#define DERENROLL_QR_H

#include <stdbool.h>
#include "derenroll/export.h"

/* The light margin a drawer adds on every side of a code, in modules. */
#define ENR_QR_QUIET_ZONE 4

/* The most bytes a QR code holds (version 40, level L, byte mode). */
#define ENR_QR_MAX_BYTES 2953

/* A QR code as a square matrix of dark and light modules, without quiet zone. */
struct enr_qr;

/*
 * Encodes `text` (UTF-8, as bytes in byte mode; with an ECI header saying
 * UTF-8 when it is not plain ASCII) into the smallest QR
 * code that holds it at error-correction level L, then raises the level (M, Q,
 * H) as far as that same version allows: the code is never larger than it must
 * be, and gets the most error correction its size gives for free. The caller
 * frees `*out` with enr_qr_free(). Errors: ENR_E_USAGE for empty text or text
 * over ENR_QR_MAX_BYTES bytes; ENR_E_NOMEM.
 */
ENR_API int enr_qr_encode(struct enr_qr **out, const char *text);

ENR_API void enr_qr_free(struct enr_qr *qr);

/* Modules per side (21 for version 1 up to 177 for version 40). */
ENR_API int enr_qr_width(const struct enr_qr *qr);

/* QR version, 1 to 40. */
ENR_API int enr_qr_version(const struct enr_qr *qr);

/* Error-correction level: 'L', 'M', 'Q' or 'H'. */
ENR_API char enr_qr_level(const struct enr_qr *qr);

/* Whether the module at column x, row y (both 0 to width - 1) is dark. */
ENR_API bool enr_qr_dark(const struct enr_qr *qr, int x, int y);

/*
 * The terminal cells a code `width` modules wide needs with its quiet zone.
 * UTF-8 (half blocks, two modules per cell vertically): width + 8 columns by
 * ceil((width + 8) / 2) rows. Otherwise (two cells per module horizontally):
 * 2 * (width + 8) columns by width + 8 rows.
 */
ENR_API void enr_qr_cells_needed(int width, bool utf8, int *cols, int *rows);

#endif
