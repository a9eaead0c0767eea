#ifndef DERENROLL_JOIN_H
#define DERENROLL_JOIN_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

/*
 * Derapi Join: the app's token (client credentials from [derapi] client_id
 * and client_secret, cached per process until it expires), Join Flows (the
 * redirect model: create a flow once, send each customer to its authorize
 * link), Join sessions (the widget model: start a session, let the customer
 * approve in the Join page, fetch the token), and checks through Derapi
 * (`/sites` with X-Authorization-<vendor> headers, or the enrollment of a
 * Join Flow). Every Derapi call carries the `api-version` header.
 *
 * Requests are built for the http module (blocking or multi) and need the
 * app token: take it from enr_join_token_cached(), or get one with
 * enr_join_token_request() / enr_join_token_response() (or the blocking
 * enr_join_app_token()).
 */

struct enr_config;
struct enr_catalog;
struct enr_vendor;
struct enr_credentials;
struct enr_http_request;
struct enr_http_response;
struct enr_oauth_tokens;

/*
 * Whether Derapi Join can be used: [derapi] client_id and client_secret (the
 * store fallback included) are set. When not, `reason` (may be NULL) gets a
 * malloc'd line saying what to set.
 */
ENR_API bool enr_join_available(const struct enr_config *cfg, char **reason);

/* ---- the app's token --------------------------------------------------- */

/* The client-credentials request to [derapi] auth_url (Basic). ENR_E_CONFIG
 * (naming the key or `derenroll secret set derapi.client_secret`) when the
 * credentials are not configured. */
ENR_API int enr_join_token_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                                   const struct enr_config *cfg);
/* Reads its answer and caches the token (per process, per auth_url and
 * client_id) until shortly before it expires; `out` (may be NULL) gets a
 * copy (free with enr_config_free_secret()). 401 is ENR_E_MISCONFIGURED. */
ENR_API int enr_join_token_response(char **out, const struct enr_config *cfg,
                                    const struct enr_http_response *resp);
/* The cached token (a copy), or ENR_E_AGAIN when none is valid. */
ENR_API int enr_join_token_cached(char **out, const struct enr_config *cfg);
/* Forgets the cached token (after Derapi refused it). */
ENR_API void enr_join_token_forget(void);
/* Blocking: the cached token, else a new one. */
ENR_API int enr_join_app_token(char **out, const struct enr_vendor *derapi,
                               const struct enr_config *cfg);

/* ---- requests ---------------------------------------------------------- */

/* `method` {api_url}`path` with the app token and `api-version`. */
ENR_API int enr_join_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                             const struct enr_config *cfg, const char *method, const char *path,
                             const char *token);

/* The name of a vendor in Derapi Join (derapi_name, else its id). */
ENR_API const char *enr_join_vendor_name(const struct enr_vendor *vendor);

/* ---- Join Flows -------------------------------------------------------- */

struct enr_join_flow_options {
	const char *redirect_uri;   /* required: the relay's /callback */
	const char *program_id;     /* or NULL */
	const char *const *vendors; /* Derapi vendor names */
	size_t n_vendors;
	/* Parallel to `vendors`: each one's stored credentials at Derapi (entries
	 * may be NULL), or NULL: enr_join_create_flow() reads [section] credentials_id. */
	const char *const *credentials_ids;
};

/* POST /join/flows {redirectURI, programID?, vendors: [{vendor, credentialsID?}]}. */
ENR_API int enr_join_flow_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                                  const struct enr_config *cfg, const char *token,
                                  const struct enr_join_flow_options *opts);
/* The flow id (`id` or `flowID`) of its answer. */
ENR_API int enr_join_flow_response(char **out, const struct enr_http_response *resp);
/* Blocking: token, request, answer. ENR_E_USAGE for a missing redirect URI or
 * vendor; ENR_E_CONFIG naming `[vendor.X] credentials_id` for a vendor whose
 * flows need the company's stored app credentials (vendors.json,
 * derapi.vendor_access) when it is not set. */
ENR_API int enr_join_create_flow(char **out, const struct enr_catalog *catalog,
                                 const struct enr_config *cfg,
                                 const struct enr_join_flow_options *opts);

/* GET /join/flows/{id}: its answer says whether `vendor` is part of the flow:
 * 0, or ENR_E_CONFIG naming the flow and how to make one that has it. */
ENR_API int enr_join_flow_has_vendor(const struct enr_http_response *resp, const char *flow_id,
                                     const struct enr_vendor *vendor);

/* {api_url}/join/flows/{flow}/authorize?vendor=...&state=...: `url` and the
 * new `state` (128 bits, base64url), both malloc'd. No Derapi auth in it. */
ENR_API int enr_join_authorize_url(char **url, char **state, const struct enr_vendor *derapi,
                                   const struct enr_config *cfg, const char *flow_id,
                                   const struct enr_vendor *vendor);

/* The program of an enrollment: [vendor.X] program_id, else [derapi] program_id, or NULL. */
ENR_API const char *enr_join_program_id(const struct enr_vendor *vendor,
                                        const struct enr_config *cfg);

/* ---- Join sessions ----------------------------------------------------- */

/*
 * POST /join/session/start {"storeCredentials": true, "vendors": [...]} for
 * `vendor`, with the company's app credentials for it: `[section]
 * credentials_id` as {"credentialsID"}, else inline clientID/clientSecret
 * (+ apiKey for Enphase; partnerAppCredentials and programID for Enphase Grid
 * Services); none for Solis and SolarEdge. ENR_E_CONFIG naming what is missing.
 */
ENR_API int enr_join_session_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                                     const struct enr_config *cfg, const char *token,
                                     const struct enr_vendor *vendor);
/*
 * The same for a session in which the customer chooses the vendor in the Join
 * page: every vendor of `catalog` with a `join` method whose app credentials
 * are configured (the others are left out). ENR_E_CONFIG (the first vendor's
 * problem) when none is.
 */
ENR_API int enr_join_session_request_any(struct enr_http_request **out,
                                         const struct enr_vendor *derapi,
                                         const struct enr_catalog *catalog,
                                         const struct enr_config *cfg, const char *token);
/* The session id of its answer (`sessionID` or `session_id`). */
ENR_API int enr_join_session_response(char **out, const struct enr_http_response *resp);

/* What a finished Join session gives (both field spellings accepted). */
struct enr_join_credentials {
	char *vendor;
	struct enr_oauth_tokens *tokens; /* accessToken, refreshToken, expiresIn; or NULL */
	char *api_key;                   /* apiKey (SolarEdge), or NULL */
	char *key_id;                    /* keyID (Solis), or NULL */
	char *key_secret;                /* keySecret (Solis), or NULL */
	char *site_id;                   /* siteID (Enphase Grid Services), or NULL */
};
ENR_API void enr_join_credentials_free(struct enr_join_credentials *c);

/* GET /join/session/{id}/fetch-token. */
ENR_API int enr_join_fetch_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                                   const struct enr_config *cfg, const char *token,
                                   const char *session_id);
/* 0 and the credentials (every secret registered), ENR_E_AGAIN while the
 * customer has not finished (204), or the failure class. */
ENR_API int enr_join_fetch_response(struct enr_join_credentials **out,
                                    const struct enr_http_response *resp);

/* The same from the text of a fetch-token answer the relay kept for us (the
 * Join page's proxy): 0 and the credentials, or ENR_E_BADRESPONSE. */
ENR_API int enr_join_fetch_parse(struct enr_join_credentials **out, const char *json);

/* Whether a fetch-token answer's JSON holds credentials (a token, or keys),
 * without copying or registering them: for the relay, which passes them on. */
ENR_API bool enr_join_fetch_holds_credentials(const char *json);

/* Whether an answer of GET /join/{vendor}/auth-granted (key vendors) grants
 * access, by the widget's rule: a 2xx status and a body without "failed". */
ENR_API bool enr_join_auth_granted(long status, const char *body);

/* ---- checks through Derapi --------------------------------------------- */

/*
 * The check of a Join record: GET /sites with the record's vendor credentials
 * in the headers vendors.json gives the vendor (derapi.vendor_access: e.g.
 * X-Authorization-<vendor>: Bearer <token>, Enphase also X-enphase-api-key)
 * when it holds them, else GET /join/enrollments/{id}. Read the answer with
 * enr_check_response() and the Derapi vendor (an `errors` entry beside the
 * sites is a failure). ENR_E_USAGE when the record holds neither.
 */
ENR_API int enr_join_check_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                                   const struct enr_config *cfg, const char *token,
                                   const struct enr_vendor *vendor,
                                   const struct enr_credentials *cred);

#endif
