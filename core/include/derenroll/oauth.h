#ifndef DERENROLL_OAUTH_H
#define DERENROLL_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"
#include "derenroll/http.h"

/*
 * OAuth 2.0 as each vendor does it: the authorize URL, the redirect coming
 * back, the code exchange and refresh (with each vendor's placement of client
 * credentials and parameters from vendors.json), client credentials, the
 * account identity in the tokens, and a loopback receiver for sign-in on this
 * computer. Every token and secret handled here is registered for redaction.
 */

struct enr_config;
struct enr_vendor;
struct json_object;

/* ---- authorize --------------------------------------------------------- */

struct enr_oauth_authorize_options {
	const char *redirect_uri; /* NULL: [section] redirect_uri, else the catalogue's */
	const char *scopes;       /* NULL: enr_vendor_scopes() */
	bool pkce;                /* PKCE S256 even where vendors.json does not ask for it */
	const struct enr_http_field *extra; /* more parameters (Tesla prompt_missing_scopes) */
	size_t n_extra;
};

/* One authorization in progress: where to send the customer and what to check
 * when they come back. */
struct enr_oauth_flow {
	const struct enr_vendor *vendor;
	char *url;           /* the authorize URL for the customer */
	char *state;         /* 128 bits from the CSPRNG, base64url */
	char *code_verifier; /* PKCE verifier (registered as a secret), or NULL */
	char *redirect_uri;  /* as sent; the code exchange repeats it */
	bool wants_refresh;  /* it asks for a refresh token (oauth.offline_scope among the
	                      * scopes, or a vendor whose code grant always gives one) */
	bool asks_consent;   /* the URL has prompt=consent (OIDC: needed for offline_access) */
};

/*
 * Builds the authorize URL: response_type=code, client_id, redirect_uri, scope
 * (when not empty), state, the PKCE challenge when vendors.json `oauth.pkce`
 * or opts->pkce asks for it, then the vendor's extra parameters (vendors.json
 * oauth.authorize_params, replaced name by name by `[section] authorize_params`,
 * a query string) and opts->extra. `opts` may be NULL.
 * ENR_E_CONFIG when client_id, the redirect URI or the authorize URL is not
 * set; ENR_E_MISCONFIGURED when the authorize URL is not https (or loopback);
 * ENR_E_UNSUPPORTED when the vendor has no OAuth.
 */
ENR_API int enr_oauth_flow_new(struct enr_oauth_flow **out, const struct enr_vendor *vendor,
                               const struct enr_config *cfg,
                               const struct enr_oauth_authorize_options *opts);
ENR_API void enr_oauth_flow_free(struct enr_oauth_flow *flow);

/* The S256 challenge of a PKCE verifier: base64url(SHA-256(verifier)). */
ENR_API int enr_oauth_pkce_challenge(char **out, const char *verifier);

/* ---- the redirect coming back ------------------------------------------ */

struct enr_oauth_callback {
	char *code;                    /* NULL when the redirect carries none (Derapi Join flows) */
	char *state;                   /* NULL for a bare code */
	struct enr_http_field *params; /* every parameter, decoded (owned by the callback) */
	size_t n_params;
};

/*
 * Reads what came back: a full redirect URL, a query string (with or without
 * its '?'), or a bare code as typed from a vendor's page. For a URL or a query,
 * `state` must equal `expected_state` (unless that is NULL): ENR_E_STATE when
 * it differs or is missing. An `error` parameter gives ENR_E_DECLINED for
 * access_denied ("the customer declined"), ENR_E_TRANSIENT for server_error and
 * temporarily_unavailable, ENR_E_MISCONFIGURED for errors about the app
 * (invalid_scope, unauthorized_client, invalid_request, ...), else
 * ENR_E_REJECTED; the message names the vendor (may be NULL) and carries
 * error_description. ENR_E_PARSE for empty or garbled input. The code is
 * registered as a secret.
 */
ENR_API int enr_oauth_callback_parse(struct enr_oauth_callback **out,
                                     const struct enr_vendor *vendor, const char *input,
                                     const char *expected_state);

/*
 * The mix-up defence of RFC 9207: when the redirect carries `iss`, it must be
 * the vendor's issuer (`[section] issuer`, else vendors.json oauth.issuer) or,
 * when neither is known, at least name the host the authorize URL went to.
 * ENR_E_STATE with a line naming both when it does not; 0 without `iss`.
 */
ENR_API int enr_oauth_check_issuer(const struct enr_oauth_callback *cb,
                                   const struct enr_vendor *vendor, const struct enr_config *cfg);

/* The issuer the vendor's answers must name, or NULL when unknown. */
ENR_API const char *enr_oauth_issuer(const struct enr_vendor *vendor, const struct enr_config *cfg);

/* A parameter of the redirect ("enrollmentID"), or NULL. */
ENR_API const char *enr_oauth_callback_param(const struct enr_oauth_callback *cb, const char *name);
ENR_API void enr_oauth_callback_free(struct enr_oauth_callback *cb);

/*
 * A code as typed from a vendor's page, in the shape vendors.json gives
 * (oauth.code): white space and group separators dropped, case folded where
 * the vendor takes either (malloc'd; free with enr_util_free_secret()). Input
 * that is not a bare code (an address, a query), or for a vendor whose page
 * shows none, comes back trimmed and otherwise as it was. ENR_E_PARSE with a
 * line saying what is wrong when the code has a character not among the
 * vendor's or a length it never has; no network is involved.
 */
ENR_API int enr_oauth_normalize_code(char **out, const struct enr_vendor *vendor,
                                     const char *typed);

/* enr_oauth_callback_parse() for when a code is needed: the code alone
 * (malloc'd; free with enr_config_free_secret()), ENR_E_PARSE when none came. */
ENR_API int enr_oauth_parse_code(char **out, const struct enr_vendor *vendor, const char *input,
                                 const char *expected_state);

/* ---- tokens ------------------------------------------------------------ */

struct enr_oauth_tokens {
	char *access_token;
	char *refresh_token;          /* NULL when the answer had none: keep the one you have */
	char *id_token;               /* or NULL */
	char *token_type;             /* "Bearer" when the answer did not say */
	char *scope;                  /* granted scopes as the answer lists them, or NULL */
	long long obtained_at;        /* Unix time the answer was read */
	long long access_expires_at;  /* expires_in, else vendors.json tokens.access_ttl;
	                                 0 = unknown or never */
	long long refresh_expires_at; /* refresh_expires_in (0 = never), else tokens.refresh_ttl;
	                                 0 = never, or no refresh token */
};

/* Wipes and frees. NULL is a no-op. */
ENR_API void enr_oauth_tokens_free(struct enr_oauth_tokens *tokens);

/*
 * Whether the token answer to `flow` brought the refresh token it asked for
 * (flow->wants_refresh): 0 when it did (or none was asked for). Otherwise the
 * message says what is missing and what to do: ENR_E_DECLINED when the granted
 * scopes lack oauth.offline_scope (the customer unticked it), else
 * ENR_E_MISCONFIGURED (the company's app lacks offline access, or the vendor
 * wants another authorize parameter such as prompt=consent). In strict mode
 * (`[section] strict_refresh`, else vendors.json oauth.strict_refresh, else on
 * for vendors whose refresh tokens rotate) that is returned; otherwise 1 is,
 * with the same message set, to be shown as a warning.
 */
ENR_API int enr_oauth_check_refresh(const struct enr_oauth_flow *flow, const struct enr_config *cfg,
                                    const struct enr_oauth_tokens *tokens);

/*
 * The token request of a code exchange, for enr_http_perform() or the multi
 * interface: grant_type=authorization_code, code, redirect_uri (NULL: the
 * configured one), code_verifier (may be NULL) and, where vendors.json says
 * `oauth.audience`, audience = `[section] audience` or the api_url. Client
 * credentials and parameters go where vendors.json says (form body or Basic;
 * form body or query string). ENR_E_CONFIG when client_id or client_secret is
 * not set.
 */
ENR_API int enr_oauth_code_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                                   const struct enr_config *cfg, const char *code,
                                   const char *redirect_uri, const char *code_verifier);

/* The token request of a refresh: grant_type=refresh_token, refresh_token. */
ENR_API int enr_oauth_refresh_request(struct enr_http_request **out,
                                      const struct enr_vendor *vendor, const struct enr_config *cfg,
                                      const char *refresh_token);

/*
 * A client-credentials token request (Derapi's app token, SMA's backchannel):
 * grant_type=client_credentials [scope], client credentials as vendors.json
 * says (Basic when the vendor has no `oauth`), to `token_url`, or `auth_url`
 * when the vendor has no token_url (Derapi).
 */
ENR_API int enr_oauth_client_credentials_request(struct enr_http_request **out,
                                                 const struct enr_vendor *vendor,
                                                 const struct enr_config *cfg, const char *scope);

/*
 * Reads the answer to a token request: classifies it (enr_http_classify()),
 * then parses access_token, token_type, expires_in (number or string),
 * refresh_token, refresh_expires_in, id_token, scope (camelCase spellings
 * accepted too). ENR_E_BADRESPONSE when malformed or without access_token.
 * Expiry defaults come from the vendor of the response's request.
 */
ENR_API int enr_oauth_token_response(struct enr_oauth_tokens **out,
                                     const struct enr_http_response *resp);

/* Blocking forms: the request, enr_http_perform(), enr_oauth_token_response(). */
ENR_API int enr_oauth_exchange_code(struct enr_oauth_tokens **out, const struct enr_vendor *vendor,
                                    const struct enr_config *cfg, const char *code,
                                    const char *redirect_uri, const char *code_verifier);
ENR_API int enr_oauth_refresh(struct enr_oauth_tokens **out, const struct enr_vendor *vendor,
                              const struct enr_config *cfg, const char *refresh_token);
ENR_API int enr_oauth_client_credentials(struct enr_oauth_tokens **out,
                                         const struct enr_vendor *vendor,
                                         const struct enr_config *cfg, const char *scope);

/* ---- account identity -------------------------------------------------- */

struct enr_oauth_identity {
	char *subject;        /* the JWT "sub", or NULL */
	char *account;        /* the vendor's oauth.identity_claim (Enphase enl_uid), else "sub";
	                         NULL when unknown */
	char *scopes;         /* granted scopes, space separated ("scp", else the token
	                         answer's scope), or NULL */
	long long expires_at; /* the JWT "exp", 0 when absent */
	bool scope_missing;   /* vendors.json oauth.required_scope was not granted */
	char *warning;        /* one line for the installer when scope_missing, else NULL */
};

/*
 * The account behind tokens: `id_claims`, the claims of an id_token that
 * enr_oauth_verify_id_token() passed (or NULL), name it first; else the
 * claims of the access token when it is a JWT (the vendor's API accepting
 * that token in the check is what vouches for them). An unverified id_token
 * is never read. When neither names it, 0 with every field NULL but `scopes`.
 */
ENR_API int enr_oauth_identity_new(struct enr_oauth_identity **out, const struct enr_vendor *vendor,
                                   const struct enr_oauth_tokens *tokens,
                                   struct json_object *id_claims);

/* `[section] jwks_url`, else vendors.json oauth.jwks_url: where the vendor
 * publishes the keys its id_tokens are signed with; NULL when it does not. */
ENR_API const char *enr_oauth_jwks_url(const struct enr_vendor *vendor,
                                       const struct enr_config *cfg);

/* The GET of the vendor's JWKS (enr_oauth_jwks_url()); 0 with *out NULL
 * when the vendor publishes none. */
ENR_API int enr_oauth_jwks_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                                   const struct enr_config *cfg);

/*
 * An id_token checked as OpenID Connect Core 3.1.3.7 says: its `iss` is the
 * vendor's issuer (the rule of enr_oauth_check_issuer()), `aud` holds our
 * client_id (and `azp` is it when there are several), `exp`, `nbf` and `iat`
 * hold within 60 s, and, when `jwks` (the JSON of the vendor's JWKS) is given,
 * its RS256 or ES256 signature is by one of those keys. Without a JWKS the
 * signature is not checked (the token came straight from the token endpoint
 * over TLS), but alg "none" is refused. The claims (json_object_put() them),
 * or ENR_E_STATE with a line saying which check failed.
 */
ENR_API int enr_oauth_verify_id_token(struct json_object **claims, const struct enr_vendor *vendor,
                                      const struct enr_config *cfg, const char *id_token,
                                      const char *jwks);
ENR_API void enr_oauth_identity_free(struct enr_oauth_identity *identity);

/* The payload of a JWT as a JSON object (json_object_put() it); ENR_E_PARSE
 * when `jwt` is not one. */
ENR_API int enr_oauth_jwt_claims(struct json_object **out, const char *jwt);

/* ---- loopback receiver (RFC 8252) -------------------------------------- */

/*
 * A one-shot listener on 127.0.0.1 (random port) for when the customer signs
 * in on this computer. It keeps the first GET /callback?... and refuses any
 * later one. The browser gets a page that says what came back: approved,
 * declined (error=access_denied), another error from the vendor (its code), or,
 * with enr_oauth_receiver_expect_state(), an answer for another sign-in. It
 * runs on its own thread: poll it from the event loop, or wait. Freeing it
 * waits until the pages on their way were sent (at most 2 seconds).
 */
struct enr_oauth_receiver;

/* Starts listening; gives up after `timeout_ms` (0 = 5 minutes). */
ENR_API int enr_oauth_receiver_new(struct enr_oauth_receiver **out, long timeout_ms);

/* "http://127.0.0.1:<port>/callback": the redirect URI to register and send. */
ENR_API const char *enr_oauth_receiver_redirect_uri(const struct enr_oauth_receiver *receiver);

/* The state the redirect must carry (copied), so that the browser's page can
 * say when an answer belongs to another sign-in; the redirect is kept all the
 * same (enr_oauth_callback_parse() says what is wrong with it). 0, or
 * ENR_E_NOMEM. */
ENR_API int enr_oauth_receiver_expect_state(struct enr_oauth_receiver *receiver, const char *state);

/* A descriptor that becomes readable when the redirect has arrived (for poll()). */
ENR_API int enr_oauth_receiver_fd(const struct enr_oauth_receiver *receiver);

/*
 * Without waiting: 0 and the redirect as a URL in `out` (malloc'd; pass it to
 * enr_oauth_callback_parse()), ENR_E_AGAIN while none came, ENR_E_TIMEOUT after
 * the timeout, ENR_E_CANCELLED after enr_oauth_receiver_cancel().
 */
ENR_API int enr_oauth_receiver_poll(char **out, struct enr_oauth_receiver *receiver);

/* The same, waiting up to `wait_ms` (-1: until the receiver's own timeout). */
ENR_API int enr_oauth_receiver_wait(char **out, struct enr_oauth_receiver *receiver, long wait_ms);

/* Stops waiting (any thread): later polls give ENR_E_CANCELLED. */
ENR_API void enr_oauth_receiver_cancel(struct enr_oauth_receiver *receiver);

/* Stops the listener and frees. NULL is a no-op. */
ENR_API void enr_oauth_receiver_free(struct enr_oauth_receiver *receiver);

#endif
