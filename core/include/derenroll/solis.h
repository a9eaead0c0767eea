#ifndef DERENROLL_SOLIS_H
#define DERENROLL_SOLIS_H

#include <stddef.h>
#include "derenroll/export.h"

/*
 * SolisCloud request signing (Platform API V2.0), shared by the client and the
 * sandbox. Every call is a POST with these headers:
 *   Content-MD5: base64 of the raw MD5 digest of the body
 *   Content-Type: the exact string sent (signed as is)
 *   Date: RFC 1123 in GMT, "Sat, 28 Nov 2026 01:02:03 GMT"
 *   Authorization: API <keyId>:<base64(HMAC-SHA1(keySecret, "POST\n" + Content-MD5
 *                  + "\n" + Content-Type + "\n" + Date + "\n" + path))>
 * where path is the path below the API base URL ("/v1/api/userStationList").
 */

/* How far the Date header may be from the server's clock, in seconds. */
#define ENR_SOLIS_DATE_SKEW 900

/* Size of a buffer that holds a Content-MD5 value or an RFC 1123 date. */
#define ENR_SOLIS_MD5_SIZE  25
#define ENR_SOLIS_DATE_SIZE 30

/* The headers of one signed request. */
struct enr_solis_headers {
	char content_md5[ENR_SOLIS_MD5_SIZE];
	char date[ENR_SOLIS_DATE_SIZE];
	char *authorization; /* "API <keyId>:<sign>", malloc'd */
};

/* Content-MD5 of `len` bytes into `out` (ENR_SOLIS_MD5_SIZE bytes). 0 or ENR_E_CRYPTO. */
ENR_API int enr_solis_content_md5(char *out, const void *body, size_t len);

/* The RFC 1123 GMT date of `t` (seconds since the epoch) into `out`
 * (ENR_SOLIS_DATE_SIZE bytes), independent of the locale. 0 or ENR_E_USAGE. */
ENR_API int enr_solis_date(char *out, long long t);

/* Parses an RFC 1123 GMT date; 0, or ENR_E_PARSE when it is not one. */
ENR_API int enr_solis_parse_date(long long *out, const char *date);

/* The signature (base64 of the HMAC-SHA1) of a request, malloc'd in `out`. */
ENR_API int enr_solis_signature(char **out, const char *key_secret, const char *content_md5,
                                const char *content_type, const char *date, const char *path);

/*
 * Signs a POST of `body` to `path` at time `now`: fills `out` (release with
 * enr_solis_headers_done()). 0, ENR_E_NOMEM or ENR_E_CRYPTO.
 */
ENR_API int enr_solis_sign(struct enr_solis_headers *out, const char *key_id,
                           const char *key_secret, const char *path, const char *content_type,
                           const void *body, size_t len, long long now);
ENR_API void enr_solis_headers_done(struct enr_solis_headers *headers);

/* The KeyID of an `Authorization: API <keyId>:<sign>` header, malloc'd; ENR_E_PARSE. */
ENR_API int enr_solis_key_id(char **out, const char *authorization);

/* A request as the server received it, for enr_solis_verify(). */
struct enr_solis_request {
	const char *authorization;
	const char *content_md5;
	const char *content_type;
	const char *date;
	const char *path; /* below the API base URL */
	const void *body;
	size_t body_len;
};

/*
 * Server side: checks a request against the secret of its KeyID at time `now`.
 * 0 when it is good. Otherwise `out` gets the HTTP status Solis answers and
 * the error says why: 408 (ENR_E_EXPIRED) for a missing Date or one more than
 * ENR_SOLIS_DATE_SKEW seconds away, 400 (ENR_E_PARSE) for a Content-MD5 that
 * does not match the body, 403 (ENR_E_REJECTED) for a missing or wrong
 * Authorization.
 */
ENR_API int enr_solis_verify(int *out, const struct enr_solis_request *req, const char *key_secret,
                             long long now);

#endif
