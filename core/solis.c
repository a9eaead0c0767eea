#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "derenroll/error.h"
#include "derenroll/solis.h"
#include "util.h"

static const char *const day_names[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int enr_solis_content_md5(char *out, const void *body, size_t len)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	char *b64;

	out[0] = '\0';
	if (EVP_Digest(body, len, digest, &digest_len, EVP_md5(), NULL) != 1 || digest_len != 16)
		return enr_error_set(ENR_E_CRYPTO, "MD5 is not available in this OpenSSL");
	b64 = enr_util_base64_encode(digest, digest_len, false);
	if (!b64)
		return ENR_E_NOMEM;
	snprintf(out, ENR_SOLIS_MD5_SIZE, "%s", b64);
	free(b64);
	return 0;
}

int enr_solis_date(char *out, long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	out[0] = '\0';
	if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0)
		return enr_error_set(ENR_E_USAGE, "time %lld cannot be written as an HTTP date", t);
	snprintf(out, ENR_SOLIS_DATE_SIZE, "%s, %02d %s %04d %02d:%02d:%02d GMT",
	         day_names[tm.tm_wday], tm.tm_mday, month_names[tm.tm_mon], tm.tm_year + 1900,
	         tm.tm_hour, tm.tm_min, tm.tm_sec);
	return 0;
}

int enr_solis_parse_date(long long *out, const char *date)
{
	char day[4], month[4], zone[4];
	int mday, year, hour, min, sec, consumed = 0, mon = -1, wday = -1;
	struct tm tm = {0};

	*out = 0;
	if (!date ||
	    sscanf(date, "%3[A-Za-z], %d %3[A-Za-z] %d %d:%d:%d %3s%n", day, &mday, month, &year,
	           &hour, &min, &sec, zone, &consumed) != 8 ||
	    date[consumed] != '\0')
		return enr_error_set(ENR_E_PARSE, "not an RFC 1123 date: '%s'", date ? date : "");
	for (int i = 0; i < 12; i++)
		if (strcmp(month, month_names[i]) == 0)
			mon = i;
	for (int i = 0; i < 7; i++)
		if (strcmp(day, day_names[i]) == 0)
			wday = i;
	if (mon < 0 || wday < 0 || strcmp(zone, "GMT") != 0 || mday < 1 || mday > 31 ||
	    year < 1970 || year > 9999 || hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 ||
	    sec > 60)
		return enr_error_set(ENR_E_PARSE, "not an RFC 1123 date: '%s'", date);
	tm.tm_year = year - 1900;
	tm.tm_mon = mon;
	tm.tm_mday = mday;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	*out = (long long)timegm(&tm);
	return 0;
}

int enr_solis_signature(char **out, const char *key_secret, const char *content_md5,
                        const char *content_type, const char *date, const char *path)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char *to_sign;

	*out = NULL;
	to_sign = enr_util_printf("POST\n%s\n%s\n%s\n%s", content_md5, content_type, date, path);
	if (!to_sign)
		return ENR_E_NOMEM;
	if (!HMAC(EVP_sha1(), key_secret, (int)strlen(key_secret), (const unsigned char *)to_sign,
	          strlen(to_sign), mac, &mac_len)) {
		free(to_sign);
		return enr_error_set(ENR_E_CRYPTO, "HMAC-SHA1 failed");
	}
	free(to_sign);
	*out = enr_util_base64_encode(mac, mac_len, false);
	OPENSSL_cleanse(mac, sizeof(mac));
	return *out ? 0 : ENR_E_NOMEM;
}

int enr_solis_sign(struct enr_solis_headers *out, const char *key_id, const char *key_secret,
                   const char *path, const char *content_type, const void *body, size_t len,
                   long long now)
{
	char *sign = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = enr_solis_content_md5(out->content_md5, body, len);
	if (rc == 0)
		rc = enr_solis_date(out->date, now);
	if (rc == 0)
		rc = enr_solis_signature(&sign, key_secret, out->content_md5, content_type,
		                         out->date, path);
	if (rc == 0) {
		out->authorization = enr_util_printf("API %s:%s", key_id, sign);
		if (!out->authorization)
			rc = ENR_E_NOMEM;
	}
	free(sign);
	if (rc < 0)
		enr_solis_headers_done(out);
	return rc;
}

void enr_solis_headers_done(struct enr_solis_headers *headers)
{
	if (!headers)
		return;
	free(headers->authorization);
	memset(headers, 0, sizeof(*headers));
}

int enr_solis_key_id(char **out, const char *authorization)
{
	const char *colon;

	*out = NULL;
	if (!authorization || strncmp(authorization, "API ", 4) != 0 ||
	    !(colon = strrchr(authorization + 4, ':')) || colon == authorization + 4 || !colon[1])
		return enr_error_set(ENR_E_PARSE,
		                     "the Authorization header is not 'API <KeyID>:<signature>'");
	*out = strndup(authorization + 4, (size_t)(colon - authorization - 4));
	return *out ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

int enr_solis_verify(int *out, const struct enr_solis_request *req, const char *key_secret,
                     long long now)
{
	char md5[ENR_SOLIS_MD5_SIZE], *key_id = NULL, *expected = NULL, *header = NULL;
	long long sent;
	int rc;

	*out = 408;
	if (!req->date || enr_solis_parse_date(&sent, req->date) < 0)
		return enr_error_set(ENR_E_EXPIRED, "the request has no valid Date header");
	if (sent < now - ENR_SOLIS_DATE_SKEW || sent > now + ENR_SOLIS_DATE_SKEW)
		return enr_error_set(ENR_E_EXPIRED,
		                     "the request's Date is %lld s away from the server's clock",
		                     sent - now);
	*out = 400;
	rc = enr_solis_content_md5(md5, req->body ? req->body : "", req->body_len);
	if (rc < 0)
		return rc;
	if (!req->content_md5 || strcmp(md5, req->content_md5) != 0)
		return enr_error_set(ENR_E_PARSE, "Content-MD5 does not match the body");
	*out = 403;
	rc = enr_solis_key_id(&key_id, req->authorization);
	if (rc < 0)
		return enr_error_set(ENR_E_REJECTED, "%s", enr_error_last());
	rc = enr_solis_signature(&expected, key_secret, req->content_md5,
	                         req->content_type ? req->content_type : "", req->date, req->path);
	if (rc < 0)
		goto out;
	header = enr_util_printf("API %s:%s", key_id, expected);
	if (!header) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	if (strlen(header) != strlen(req->authorization) ||
	    CRYPTO_memcmp(header, req->authorization, strlen(header)) != 0) {
		rc = enr_error_set(ENR_E_REJECTED, "the signature does not match");
		goto out;
	}
	*out = 200;
	rc = 0;
out:
	free(key_id);
	free(expected);
	free(header);
	return rc;
}
