#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <qrencode.h>

#include "derenroll/error.h"
#include "derenroll/qr.h"

struct enr_qr {
	int width;
	int version;
	char level;
	unsigned char dark[]; /* width * width, row by row; 1 = dark */
};

static const char level_names[] = {
    [QR_ECLEVEL_L] = 'L', [QR_ECLEVEL_M] = 'M', [QR_ECLEVEL_Q] = 'Q', [QR_ECLEVEL_H] = 'H'};

/* ECI designator of UTF-8 (ISO/IEC 18004, AIM ECI 26). */
#define ECI_UTF8 26

/*
 * Byte mode at `version` (0: the smallest that fits) and `level`. Text beyond
 * ASCII gets an ECI header saying UTF-8: without it readers must guess
 * between ISO-8859-1 (the standard's default), UTF-8 and Shift JIS. ASCII
 * needs none (the same bytes in all three), and skipping it keeps the widest
 * reader support. NULL with errno set on failure.
 */
static QRcode *encode(const char *text, size_t len, bool ascii, int version, QRecLevel level)
{
	QRinput *input = QRinput_new2(version, level);
	QRcode *code = NULL;
	int saved_errno;

	if (!input)
		return NULL;
	if ((ascii || QRinput_appendECIheader(input, ECI_UTF8) == 0) &&
	    QRinput_append(input, QR_MODE_8, (int)len, (const unsigned char *)text) == 0)
		code = QRcode_encodeInput(input);
	saved_errno = errno;
	QRinput_free(input);
	errno = saved_errno;
	return code;
}

static bool is_ascii(const char *text)
{
	for (; *text; text++)
		if ((unsigned char)*text >= 0x80)
			return false;
	return true;
}

static int encode_failed(size_t len)
{
	if (errno == ENOMEM)
		return enr_error_set(ENR_E_NOMEM, NULL);
	return enr_error_set(ENR_E_USAGE, "cannot encode %zu bytes in a QR code", len);
}

int enr_qr_encode(struct enr_qr **out, const char *text)
{
	QRcode *best = NULL;
	QRecLevel best_level = QR_ECLEVEL_L;
	struct enr_qr *qr = NULL;
	size_t len, n;
	bool ascii;
	int rc = 0;

	assert(out && text);
	*out = NULL;
	len = strlen(text);
	if (len == 0)
		return enr_error_set(ENR_E_USAGE,
		                     "nothing to put in the QR code: the text is empty");
	if (len > ENR_QR_MAX_BYTES)
		return enr_error_set(ENR_E_USAGE,
		                     "the text is too long for a QR code (%zu bytes, at most %d)",
		                     len, ENR_QR_MAX_BYTES);
	/* Level L picks the version (the size); a screen is a clean medium, so
	 * size matters more than damage tolerance. Then keep every stronger level
	 * that fits the same version: more tolerance of glare and blur at no cost. */
	ascii = is_ascii(text);
	best = encode(text, len, ascii, 0, QR_ECLEVEL_L);
	if (!best)
		return encode_failed(len);
	for (int l = QR_ECLEVEL_M; l <= QR_ECLEVEL_H; l++) {
		QRcode *stronger = encode(text, len, ascii, best->version, (QRecLevel)l);
		if (!stronger) {
			if (errno == ENOMEM) {
				rc = encode_failed(len);
				goto out;
			}
			break;
		}
		if (stronger->version != best->version) {
			QRcode_free(stronger);
			break;
		}
		QRcode_free(best);
		best = stronger;
		best_level = (QRecLevel)l;
	}
	n = (size_t)best->width * (size_t)best->width;
	qr = malloc(sizeof(*qr) + n);
	if (!qr) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	qr->width = best->width;
	qr->version = best->version;
	qr->level = level_names[best_level];
	/* libqrencode's bit 0 of each byte is the module's colour. */
	for (size_t i = 0; i < n; i++)
		qr->dark[i] = best->data[i] & 1;
	*out = qr;
out:
	QRcode_free(best);
	return rc;
}

void enr_qr_free(struct enr_qr *qr)
{
	free(qr);
}

int enr_qr_width(const struct enr_qr *qr)
{
	return qr->width;
}

int enr_qr_version(const struct enr_qr *qr)
{
	return qr->version;
}

char enr_qr_level(const struct enr_qr *qr)
{
	return qr->level;
}

bool enr_qr_dark(const struct enr_qr *qr, int x, int y)
{
	assert(x >= 0 && x < qr->width && y >= 0 && y < qr->width);
	return qr->dark[(size_t)y * (size_t)qr->width + (size_t)x];
}

void enr_qr_cells_needed(int width, bool utf8, int *cols, int *rows)
{
	int side = width + 2 * ENR_QR_QUIET_ZONE;

	assert(width > 0 && cols && rows);
	if (utf8) {
		*cols = side;
		*rows = (side + 1) / 2;
	} else {
		*cols = 2 * side;
		*rows = side;
	}
}
