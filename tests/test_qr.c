#include <stdlib.h>
#include <string.h>

#include <qrencode.h>

#include "helpers.h"
#include "derenroll/error.h"
#include "derenroll/qr.h"

/* The relay's short link: 40 characters. */
#define SHORT_LINK "https://relay.example.com/s/K7Q2MX9P4TZA"

/* A Tesla authorize URL with PKCE and state, as the wizard builds it: 370 characters. */
#define TESLA_URL                                                                                  \
	"https://auth.tesla.com/oauth2/v3/authorize?response_type=code"                            \
	"&client_id=0123456789abcdef0123456789abcdef"                                              \
	"&redirect_uri=https%3A%2F%2Frelay.example.com%2Fcb"                                       \
	"&scope=openid%20offline_access%20energy_device_data%20energy_cmds"                        \
	"&state=Vw3k9Qx1Zt7Lp2Hn8Rc4Yb6Md0Fa5Je"                                                   \
	"&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"                              \
	"&code_challenge_method=S256&prompt_missing_scopes=true"

/* A 7x7 finder pattern with its top-left module at (x, y): dark ring,
 * light ring, dark 3x3 centre. */
static void assert_finder(const struct enr_qr *qr, int x0, int y0)
{
	for (int y = 0; y < 7; y++)
		for (int x = 0; x < 7; x++) {
			int ring = x < y ? (x < 6 - y ? x : 6 - y) : (y < 6 - x ? y : 6 - x);
			assert_int_equal(enr_qr_dark(qr, x0 + x, y0 + y), ring != 1);
		}
}

static void short_link_is_version_3_at_level_m(void **state)
{
	struct enr_qr *qr = NULL;
	int w;

	(void)state;
	assert_int_equal(strlen(SHORT_LINK), 40);
	assert_int_equal(enr_qr_encode(&qr, SHORT_LINK), 0);
	/* 40 bytes: version 3 holds 53 at L and 42 at M, so M comes for free;
	 * Q would need version 4. */
	assert_int_equal(enr_qr_version(qr), 3);
	assert_int_equal(enr_qr_width(qr), 29);
	assert_int_equal(enr_qr_level(qr), 'M');
	w = enr_qr_width(qr);
	assert_finder(qr, 0, 0);
	assert_finder(qr, w - 7, 0);
	assert_finder(qr, 0, w - 7);
	/* No finder at the bottom right, and the separators are light. */
	assert_false(enr_qr_dark(qr, 7, 7));
	assert_false(enr_qr_dark(qr, w - 8, 7));
	enr_qr_free(qr);
}

static void tesla_url_is_version_13_at_level_l(void **state)
{
	struct enr_qr *qr = NULL;
	int cols, rows;

	(void)state;
	assert_int_equal(strlen(TESLA_URL), 370);
	assert_int_equal(enr_qr_encode(&qr, TESLA_URL), 0);
	/* Version 12-L holds 367 bytes; M would need version 15 (77 modules). */
	assert_int_equal(enr_qr_version(qr), 13);
	assert_int_equal(enr_qr_width(qr), 69);
	assert_int_equal(enr_qr_level(qr), 'L');
	assert_finder(qr, 0, 0);
	/* Too tall for 80x24 in half blocks, far too big with two cells a module. */
	enr_qr_cells_needed(enr_qr_width(qr), true, &cols, &rows);
	assert_int_equal(cols, 77);
	assert_int_equal(rows, 39);
	enr_qr_cells_needed(enr_qr_width(qr), false, &cols, &rows);
	assert_int_equal(cols, 154);
	assert_int_equal(rows, 77);
	enr_qr_free(qr);
}

static void small_text_gets_the_strongest_level_of_version_1(void **state)
{
	struct enr_qr *qr = NULL;

	(void)state;
	/* 10 bytes: version 1 holds 17 at L, 14 at M, 11 at Q, 7 at H. */
	assert_int_equal(enr_qr_encode(&qr, "K7Q2MX9P4T"), 0);
	assert_int_equal(enr_qr_version(qr), 1);
	assert_int_equal(enr_qr_width(qr), 21);
	assert_int_equal(enr_qr_level(qr), 'Q');
	enr_qr_free(qr);
}

static void level_never_grows_the_code(void **state)
{
	char text[400];

	(void)state;
	for (size_t len = 1; len < sizeof(text); len += 7) {
		struct enr_qr *qr = NULL;
		QRcode *plain;

		memset(text, 'x', len);
		text[len] = '\0';
		plain = QRcode_encodeString8bit(text, 0, QR_ECLEVEL_L);
		assert_non_null(plain);
		assert_int_equal(enr_qr_encode(&qr, text), 0);
		assert_int_equal(enr_qr_width(qr), plain->width);
		assert_int_equal(enr_qr_version(qr), plain->version);
		/* Finder and separator (not row or column 8: format bits) */
		for (int y = 0; y < 8; y++)
			for (int x = 0; x < 8; x++)
				assert_int_equal(enr_qr_dark(qr, x, y),
				                 plain->data[y * plain->width + x] & 1);
		QRcode_free(plain);
		enr_qr_free(qr);
	}
}

static void utf8_text_is_encoded_as_bytes(void **state)
{
	struct enr_qr *qr = NULL;
	/* 17 characters, 20 bytes: version 1 holds 17 bytes at L, so version 2. */
	const char *text = "Zoë Müller, Köln ";

	(void)state;
	assert_int_equal(strlen(text), 20);
	assert_int_equal(enr_qr_encode(&qr, text), 0);
	assert_int_equal(enr_qr_version(qr), 2);
	enr_qr_free(qr);
}

static void cells_needed_adds_the_quiet_zone(void **state)
{
	static const struct {
		int width;
		bool utf8;
		int cols, rows;
	} cases[] = {
	    {21, true, 29, 15}, {21, false, 58, 29},  {29, true, 37, 19},     {29, false, 74, 37},
	    {25, true, 33, 17}, {177, true, 185, 93}, {177, false, 370, 185},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int cols = -1, rows = -1;
		enr_qr_cells_needed(cases[i].width, cases[i].utf8, &cols, &rows);
		assert_int_equal(cols, cases[i].cols);
		assert_int_equal(rows, cases[i].rows);
	}
}

static void empty_and_over_long_text_are_refused(void **state)
{
	struct enr_qr *qr = (struct enr_qr *)1;
	char *text = malloc(ENR_QR_MAX_BYTES + 2);

	(void)state;
	assert_int_equal(enr_qr_encode(&qr, ""), ENR_E_USAGE);
	assert_null(qr);
	assert_non_null(strstr(enr_error_last(), "empty"));

	memset(text, 'a', ENR_QR_MAX_BYTES + 1);
	text[ENR_QR_MAX_BYTES + 1] = '\0';
	assert_int_equal(enr_qr_encode(&qr, text), ENR_E_USAGE);
	assert_null(qr);
	assert_non_null(
	    strstr(enr_error_last(), "too long for a QR code (2954 bytes, at most 2953)"));

	/* The largest code there is. */
	text[ENR_QR_MAX_BYTES] = '\0';
	assert_int_equal(enr_qr_encode(&qr, text), 0);
	assert_int_equal(enr_qr_version(qr), 40);
	assert_int_equal(enr_qr_width(qr), 177);
	assert_int_equal(enr_qr_level(qr), 'L');
	enr_qr_free(qr);
	enr_qr_free(NULL);
	free(text);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(short_link_is_version_3_at_level_m),
    cmocka_unit_test(tesla_url_is_version_13_at_level_l),
    cmocka_unit_test(small_text_gets_the_strongest_level_of_version_1),
    cmocka_unit_test(level_never_grows_the_code),
    cmocka_unit_test(utf8_text_is_encoded_as_bytes),
    cmocka_unit_test(cells_needed_adds_the_quiet_zone),
    cmocka_unit_test(empty_and_over_long_text_are_refused),
};

TEST_MAIN(tests)
