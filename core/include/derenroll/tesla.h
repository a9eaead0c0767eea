#ifndef DERENROLL_TESLA_H
#define DERENROLL_TESLA_H

#include <stdbool.h>
#include "derenroll/export.h"

/*
 * Tesla's Fleet API regions and the company's partner registration.
 *
 * Tesla runs one Fleet API host per region (North America and Asia-Pacific,
 * Europe, China): a customer's account lives in one of them, so the region is
 * a property of the customer's record. The hosts are vendors.json endpoints
 * `api_url`, `api_url_eu`, `api_url_cn`, overridden by `[vendor.tesla]` keys
 * of the same names. A call to the wrong region answers HTTP 421; then
 * `GET /api/1/users/region` (any host) names the right one.
 *
 * The company registers its app once per region: a partner token (the
 * client-credentials grant with `audience` = the region's host), then
 * `POST /api/1/partner_accounts {"domain": D}` there; Tesla wants the app's
 * public key at https://D/.well-known/appspecific/com.tesla.3p.public-key.pem
 * (endpoint `public_key_url`, "{domain}" replaced). Unregistered, calls answer
 * HTTP 412.
 */

struct enr_config;
struct enr_vendor;
struct enr_record;
struct enr_http_request;
struct enr_http_response;

enum enr_tesla_region {
	ENR_TESLA_NA = 0, /* North America, Asia-Pacific (and records without a region) */
	ENR_TESLA_EU,     /* Europe, Middle East, Africa */
	ENR_TESLA_CN,     /* China */
};

#define ENR_TESLA_N_REGIONS 3

/* "na", "eu", "cn". */
ENR_API const char *enr_tesla_region_name(enum enr_tesla_region region);

/* "na", "eu" or "cn" (any case); ENR_E_USAGE otherwise. */
ENR_API int enr_tesla_region_parse(enum enr_tesla_region *out, const char *text);

/* A record's region field: NULL (records older than regions) is NA. */
ENR_API enum enr_tesla_region enr_tesla_region_of(const char *field);

/*
 * The region a token names: the prefix of a code or refresh token ("NA_",
 * "EU_", "CN_"), else the access token's JWT `ou_code` claim. 0 and the
 * region, or ENR_E_NOTFOUND (no error message set; `out` left NA) when the
 * token names none.
 */
ENR_API int enr_tesla_region_from_token(enum enr_tesla_region *out, const char *token);

/* The endpoint name of a region's Fleet API host: "api_url", "api_url_eu", "api_url_cn". */
ENR_API const char *enr_tesla_endpoint(enum enr_tesla_region region);

/* The API endpoint a record's checks use: its region's for Tesla, NULL (api_url) otherwise. */
ENR_API const char *enr_tesla_record_endpoint(const struct enr_record *rec);

/*
 * Notes in a Tesla record (others are left alone) the region its new tokens
 * name (the refresh token's prefix, else the access token's `ou_code`, else
 * the code's prefix; any may be NULL). The region stays as it was when none
 * names one. 0 or ENR_E_NOMEM.
 */
ENR_API int enr_tesla_note_region(struct enr_record *rec, const char *refresh_token,
                                  const char *access_token, const char *code);

/* The region's Fleet API base URL as configured (or vendors.json's), or NULL (ENR_E_CONFIG). */
ENR_API const char *enr_tesla_api_url(const struct enr_vendor *vendor, const struct enr_config *cfg,
                                      enum enr_tesla_region region);

/* The region's base URL without trailing slashes, as `audience` carries it; malloc'd. */
ENR_API int enr_tesla_audience(char **out, const struct enr_vendor *vendor,
                               const struct enr_config *cfg, enum enr_tesla_region region);

/* `url` without trailing slashes, malloc'd (NULL: out of memory). */
ENR_API char *enr_tesla_trim_url(const char *url);

/*
 * `GET /api/1/users/region` on the region's host with the customer's access
 * token, and its answer: the region whose configured base URL is
 * `response.fleet_api_base_url` (ENR_E_BADRESPONSE when it names none of them).
 */
ENR_API int enr_tesla_users_region_request(struct enr_http_request **out,
                                           const struct enr_vendor *vendor,
                                           const struct enr_config *cfg,
                                           enum enr_tesla_region region, const char *access_token);
ENR_API int enr_tesla_users_region_response(enum enr_tesla_region *out,
                                            const struct enr_vendor *vendor,
                                            const struct enr_config *cfg,
                                            const struct enr_http_response *resp);

/*
 * The app's partner token for a region (blocking): the client-credentials
 * grant at token_url with the client id and secret, `audience` = the region's
 * host and vendors.json's `oauth.partner_scopes`. The token is malloc'd and a
 * secret (free it with enr_config_free_secret()).
 */
ENR_API int enr_tesla_partner_token(char **out, const struct enr_vendor *vendor,
                                    const struct enr_config *cfg, enum enr_tesla_region region);

/* The URL the app's public key must be served at for `domain`; malloc'd. */
ENR_API int enr_tesla_public_key_url(char **out, const struct enr_vendor *vendor,
                                     const struct enr_config *cfg, const char *domain);

/*
 * Whether the public key is served for `domain` (blocking): 0 when the URL
 * answers 200 with a PEM public key, else the failure with one line naming
 * the URL.
 */
ENR_API int enr_tesla_public_key_check(const struct enr_vendor *vendor,
                                       const struct enr_config *cfg, const char *domain);

/* `POST /api/1/partner_accounts {"domain": domain}` on the region's host (blocking). */
ENR_API int enr_tesla_register(const struct enr_vendor *vendor, const struct enr_config *cfg,
                               enum enr_tesla_region region, const char *partner_token,
                               const char *domain);

/*
 * Whether the app is registered in the region (blocking):
 * `GET /api/1/partner_accounts/public_key?domain=` with the partner token.
 * 0 and `*registered`; a 412 or 404 is "not registered" (0, false), any other
 * failure its error.
 */
ENR_API int enr_tesla_registered(bool *registered, const struct enr_vendor *vendor,
                                 const struct enr_config *cfg, enum enr_tesla_region region,
                                 const char *partner_token, const char *domain);

#endif
