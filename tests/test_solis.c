#include <locale.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "derenroll/error.h"
#include "derenroll/solis.h"

#define BODY   "{\"pageNo\":1,\"pageSize\":10}"
#define PATH   "/v1/api/userStationList"
#define CTYPE  "application/json"
#define SECRET "2424cdee5e0b4c4fa8d3a0c5a1f0c2de"
#define DATE   "Sat, 28 Nov 2026 01:02:03 GMT"
#define DATE_T 1795827723LL
/* Computed independently (Python hmac/hashlib) from the values above. */
#define SIGN "kt6A5XLYuM5qrtNrpaT0Wv0TTAw="

static void content_md5_matches_the_vendor_vector(void **state)
{
	char md5[ENR_SOLIS_MD5_SIZE];

	(void)state;
	assert_int_equal(enr_solis_content_md5(md5, BODY, strlen(BODY)), 0);
	assert_string_equal(md5, "kxdxk7rbAsrzSIWgEwhH4w==");
	assert_int_equal(enr_solis_content_md5(md5, "", 0), 0);
	assert_string_equal(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
}

static void date_is_rfc1123_gmt_in_any_locale(void **state)
{
	char date[ENR_SOLIS_DATE_SIZE];
	long long back;

	(void)state;
	setlocale(LC_ALL, "C.UTF-8");
	assert_int_equal(enr_solis_date(date, DATE_T), 0);
	assert_string_equal(date, DATE);
	assert_int_equal(enr_solis_date(date, 0), 0);
	assert_string_equal(date, "Thu, 01 Jan 1970 00:00:00 GMT");
	assert_int_equal(enr_solis_parse_date(&back, DATE), 0);
	assert_int_equal(back, DATE_T);
	assert_int_equal(enr_solis_parse_date(&back, "Sat, 28 Nov 2026 01:02:03 CET"), ENR_E_PARSE);
	assert_int_equal(enr_solis_parse_date(&back, "Sat 28 Nov 2026 01:02:03 GMT"), ENR_E_PARSE);
	assert_int_equal(enr_solis_parse_date(&back, "Sat, 28 Nov 2026 01:02:03 GMT x"),
	                 ENR_E_PARSE);
	assert_int_equal(enr_solis_parse_date(&back, "2026-11-28T01:02:03Z"), ENR_E_PARSE);
	assert_int_equal(enr_solis_parse_date(&back, NULL), ENR_E_PARSE);
}

static void signature_matches_an_independent_computation(void **state)
{
	struct enr_solis_headers h;
	char *sign = NULL, *key_id = NULL;

	(void)state;
	assert_int_equal(
	    enr_solis_signature(&sign, SECRET, "kxdxk7rbAsrzSIWgEwhH4w==", CTYPE, DATE, PATH), 0);
	assert_string_equal(sign, SIGN);
	free(sign);

	assert_int_equal(
	    enr_solis_sign(&h, "1300386381676", SECRET, PATH, CTYPE, BODY, strlen(BODY), DATE_T),
	    0);
	assert_string_equal(h.content_md5, "kxdxk7rbAsrzSIWgEwhH4w==");
	assert_string_equal(h.date, DATE);
	assert_string_equal(h.authorization, "API 1300386381676:" SIGN);
	assert_int_equal(enr_solis_key_id(&key_id, h.authorization), 0);
	assert_string_equal(key_id, "1300386381676");
	free(key_id);
	enr_solis_headers_done(&h);
	assert_null(h.authorization);
	enr_solis_headers_done(NULL);

	assert_int_equal(enr_solis_key_id(&key_id, "Bearer x"), ENR_E_PARSE);
	assert_int_equal(enr_solis_key_id(&key_id, "API :abc"), ENR_E_PARSE);
	assert_int_equal(enr_solis_key_id(&key_id, "API abc:"), ENR_E_PARSE);
	assert_null(key_id);
}

static void verify_accepts_good_and_names_each_failure(void **state)
{
	struct enr_solis_headers h;
	struct enr_solis_request req;
	int status = 0;

	(void)state;
	assert_int_equal(
	    enr_solis_sign(&h, "demo-1", SECRET, PATH, CTYPE, BODY, strlen(BODY), DATE_T), 0);
	req = (struct enr_solis_request){h.authorization, h.content_md5, CTYPE, h.date, PATH, BODY,
	                                 strlen(BODY)};
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T), 0);
	assert_int_equal(status, 200);
	/* Within the 15 minutes either way. */
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T + 900), 0);
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T - 900), 0);

	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T + 901), ENR_E_EXPIRED);
	assert_int_equal(status, 408);
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T - 3600), ENR_E_EXPIRED);
	assert_int_equal(status, 408);

	req.body = "{\"pageNo\":2,\"pageSize\":10}";
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T), ENR_E_PARSE);
	assert_int_equal(status, 400);
	assert_non_null(strstr(enr_error_last(), "Content-MD5"));
	req.body = BODY;

	assert_int_equal(enr_solis_verify(&status, &req, "another-secret", DATE_T), ENR_E_REJECTED);
	assert_int_equal(status, 403);
	req.path = "/v1/api/stationDetail";
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T), ENR_E_REJECTED);
	req.path = PATH;
	req.content_type = "application/json;charset=UTF-8";
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T), ENR_E_REJECTED);
	req.content_type = CTYPE;
	req.authorization = NULL;
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T), ENR_E_REJECTED);
	assert_int_equal(status, 403);
	req.authorization = h.authorization;
	req.date = NULL;
	assert_int_equal(enr_solis_verify(&status, &req, SECRET, DATE_T), ENR_E_EXPIRED);
	assert_int_equal(status, 408);
	enr_solis_headers_done(&h);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(content_md5_matches_the_vendor_vector),
    cmocka_unit_test(date_is_rfc1123_gmt_in_any_locale),
    cmocka_unit_test(signature_matches_an_independent_computation),
    cmocka_unit_test(verify_accepts_good_and_names_each_failure),
};

TEST_MAIN(tests)
