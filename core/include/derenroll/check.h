#ifndef DERENROLL_CHECK_H
#define DERENROLL_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

/*
 * Checks credentials with a real API call and reads the customer's sites:
 * the request and the site list's place in the answer come from vendors.json
 * (`check`); C code holds only what data cannot (the Solis signature, the
 * Enphase app key in the query, Derapi's per-vendor headers).
 */

struct enr_config;
struct enr_vendor;
struct enr_credentials;
struct enr_http_request;
struct enr_http_response;

struct enr_site; /* {id, name}: see store.h */

struct enr_check_result {
	struct enr_site *sites;
	size_t n_sites;
};

/*
 * The check request for `cred` (the record's method decides what is sent: a
 * bearer token, an API key header or query parameter, a Solis signature; the
 * `account` method uses the company's key from config or the store). `now`
 * dates signed requests. ENR_E_CONFIG when a needed setting is missing,
 * ENR_E_USAGE when the credentials lack what the vendor needs.
 */
ENR_API int enr_check_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                              const struct enr_config *cfg, const char *method,
                              const struct enr_credentials *cred, long long now);

/*
 * The same against another host of the vendor: the endpoint `api_endpoint`
 * ("api_url_eu": a Tesla region, see tesla.h) in place of "api_url"; NULL is
 * enr_check_request().
 */
ENR_API int enr_check_request_at(struct enr_http_request **out, const struct enr_vendor *vendor,
                                 const struct enr_config *cfg, const char *api_endpoint,
                                 const char *method, const struct enr_credentials *cred,
                                 long long now);

/*
 * Reads the answer: 0 and the sites, or the failure class with one line naming
 * the vendor and what to do (vendors.json guidance: Solis R0000, SolarEdge 401,
 * an SMA account with no plants, ...). An empty list is ENR_E_REJECTED when
 * the vendor's guidance has an "empty_sites" entry, else 0 with no sites.
 */
ENR_API int enr_check_response(struct enr_check_result **out, const struct enr_vendor *vendor,
                               const struct enr_http_response *resp);

/* Blocking form: request, enr_http_perform(), response. */
ENR_API int enr_check_run(struct enr_check_result **out, const struct enr_vendor *vendor,
                          const struct enr_config *cfg, const char *method,
                          const struct enr_credentials *cred);

/* What a vendor makes of a key (see enr_check_key_kind()). */
enum enr_check_key_kind {
	ENR_CHECK_KEY_WORKS,    /* the check answered 2xx with the sites */
	ENR_CHECK_KEY_REJECTED, /* the vendor refused it (401/403, a refusing body code) */
	ENR_CHECK_KEY_RETIRED,  /* HTTP 410: a key or URL of an API the vendor retired
	                         * (SolarEdge's v1 keys since 3 November 2026) */
};

/*
 * Runs the check for `cred` by `method` (enr_check_run()) and tells what kind
 * of key it holds, for callers that report rather than enroll (derenroll
 * doctor): 0 and `out` set for each kind above, with the vendor's one-line
 * guidance as the error message for REJECTED and RETIRED; a negative error
 * (ENR_E_TRANSIENT, ENR_E_CONFIG, ...) when the answer says nothing about the
 * key. `sites` may be NULL; otherwise it receives the site count of a working key.
 */
ENR_API int enr_check_key_kind(enum enr_check_key_kind *out, size_t *sites,
                               const struct enr_vendor *vendor, const struct enr_config *cfg,
                               const char *method, const struct enr_credentials *cred);

/* The site with that id, or NULL. */
ENR_API const struct enr_site *enr_check_find_site(const struct enr_check_result *result,
                                                   const char *id);

ENR_API void enr_check_result_free(struct enr_check_result *result);

#endif
