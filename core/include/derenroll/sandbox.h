#ifndef DERENROLL_SANDBOX_H
#define DERENROLL_SANDBOX_H

#include <stdbool.h>
#include "derenroll/export.h"

/*
 * The sandbox: an offline world that plays every vendor, Derapi and their
 * customers on a loopback address, in-process (libmicrohttpd threads), so that
 * `derenroll sandbox`, `derenroll --demo` and the tests need no vendor account
 * and no network. It checks what the real vendors check and can inject faults.
 *
 * Each vendor lives under its own prefix followed by the vendor's real paths
 * (base URL = enr_sandbox_url(), no trailing slash):
 *   /tesla/oauth2/v3/authorize, /tesla/oauth2/v3/token (one for every region);
 *   Tesla's three Fleet API regions at /tesla (NA), /tesla/eu and /tesla/cn, each
 *   with /api/1/products, /api/1/users/region, /api/1/partner_accounts (POST) and
 *   /api/1/partner_accounts/public_key?domain=; the company's web server at
 *   /tesla/_domains/{domain}/.well-known/appspecific/com.tesla.3p.public-key.pem
 *   (every domain serves a key except those that start with "nokey")
 *   /sma/oauth2/auth, /sma/oauth2/token, /sma/v1/plants,
 *   /sma/oauth2/v2/bc-authorize (POST) and /sma/oauth2/v2/bc-authorize/{loginHint} (GET)
 *   /enphase/oauth/authorize, /enphase/oauth/token, /enphase/oauth/redirect_uri,
 *   /enphase/api/v4/systems?key=
 *   /solaredge/v2/sites (X-API-Key; X-Account-Key with the company Fleet key),
 *   built from assets/answers/solaredge/, with x-ratelimit-*-minute headers
 *   (solaredge_minute_limit setting); every v1 path answers 410
 *   /solis/v1/api/userStationList (signed over the path /v1/api/userStationList)
 *   /derapi/oauth2/token, /derapi/join/session/start, /derapi/join/session/{id}/vendors,
 *   /derapi/join/session/{id}/authorize?vendor= (stands in for the Join widget),
 *   /derapi/join/session/{id}/fetch-token, /derapi/join/flows (POST),
 *   /derapi/join/flows/{id}, /derapi/join/flows/{id}/authorize?vendor=&state=,
 *   /derapi/join/enrollments/{id}, /derapi/sites
 *   /consent (the form the consent page posts), and the callback relay
 *   (relay.h) mounted at /relay: /relay/v1/links, /relay/s/{code},
 *   /relay/callback (the registered redirect URI), /relay/v1/results/{state},
 *   with the [relay] secret of the configuration.
 *
 * Accounts: any SolarEdge key of 8 or more [A-Za-z0-9_-] characters (except
 * ones that start with "invalid") and any Solis KeyID that starts with "demo-"
 * (signed with the printed key_secret) is an account of its own with one site
 * derived from the key; KeyIDs that start with "demo-noapi-" answer code R0000.
 * The company SolarEdge key, the company Solis KeyID and the Enphase partner
 * token see three sites each. A customer who approves an OAuth link gets an
 * account with one site: the authorize link may carry `sandbox_auto=approve`
 * or `sandbox_auto=deny` (no page, redirect at once) and
 * `sandbox_account=NAME` (approve as that account: the same name gives the same
 * account and sites; default a new account each time). Tesla accounts live in one
 * region: names that start with "eu-" in the EU, "cn-" in China, others in NA;
 * `sandbox_region=eu` (or cn) on the authorize link makes the customer's account
 * one of that region. Tesla codes and refresh tokens carry the region's prefix
 * ("EU_..."), the access token its `ou_code`; a call to another region answers
 * 421, the code exchange refuses an `audience` other than the account's region's
 * host, and a refresh that sends a client_secret is refused (Tesla's refresh is
 * grant_type, client_id and refresh_token). The sandbox's Tesla app is
 * registered in NA and EU; in CN its calls answer 412 until
 * POST /api/1/partner_accounts (with a partner token for CN) registers it. SMA backchannel: every
 * owner e-mail is an account; the owner accepts `sma_accept_ms` after the
 * request, declines ("Rejected") when the address starts with "decline", and lets
 * it lapse ("Expired") when it starts with "expire"; a second request for an owner
 * who accepted answers 409.
 *
 * Control endpoints (loopback only, JSON in and out; also the C API below):
 *   GET    /_sandbox/health          {"ok": true}
 *   GET    /_sandbox/credentials     the credentials object of the ONE line
 *   POST   /_sandbox/faults          {"vendor": "tesla", "kind": "429", "count": 1,
 *                                     "retry_after": 2}; kind "latency" with "ms"
 *                                     (vendor absent or "*": every vendor)
 *   DELETE /_sandbox/faults          clears every fault and per-vendor latency
 *   POST   /_sandbox/settings        {"code_ttl_ms": 50, "refresh_grace": 5, ...}
 *   POST   /_sandbox/revoke          {"token": "..."} or {"vendor": "tesla", "account": "NAME"}
 *   POST   /_sandbox/expire          {"token": "..."}, {"vendor": "tesla"} or {}
 *   POST   /_sandbox/sma/decide      {"login_hint": "...", "decision": "accept"|"decline"}
 */
struct enr_sandbox;
struct enr_catalog;
struct enr_config;

struct enr_sandbox_options {
	const char *address; /* loopback address: "127.0.0.1" (NULL), "::1" or "localhost" */
	unsigned port;       /* 0: pick a free one */
	long latency_ms;     /* added to every vendor request */
	long refresh_grace;  /* seconds a rotated-out refresh token still works (default 0) */
	/* 0: random; else client ids, secrets and printed credentials derive from it. */
	unsigned long long seed;
	long code_ttl_ms;   /* authorization codes live this long; 0: 60000 */
	long sma_accept_ms; /* SMA owners accept after this; 0: 2000; < 0: only by control */
	long stall_ms;      /* how long a stalled body hangs; 0: 300000 */
	const struct enr_catalog *catalog; /* token lifetimes; borrowed; NULL: load the default */
};

/*
 * Starts the sandbox: listens on the loopback address, serves from its own
 * threads (a libmicrohttpd thread pool; delays suspend connections, so none
 * holds a thread) until enr_sandbox_stop(). ENR_E_USAGE for an address that
 * is not loopback, ENR_E_IO when the port cannot be bound, ENR_E_CONFIG when
 * the relay's pages are missing from the data directory.
 */
ENR_API int enr_sandbox_start(struct enr_sandbox **out, const struct enr_sandbox_options *options);

/* Stops serving (stalled and delayed answers are cut short) and frees it; NULL is a no-op. */
ENR_API void enr_sandbox_stop(struct enr_sandbox *sb);

/* "http://127.0.0.1:PORT", no trailing slash; lives as long as `sb`. */
ENR_API const char *enr_sandbox_url(const struct enr_sandbox *sb);
ENR_API unsigned enr_sandbox_port(const struct enr_sandbox *sb);

/*
 * A complete configuration pointing every vendor, [derapi] (with a ready Join
 * flow in flow_id whose redirect goes to {url}/relay/callback) and [relay] at
 * the sandbox, with its client ids, secrets and keys. The caller frees it.
 */
ENR_API int enr_sandbox_config(struct enr_config **out, const struct enr_sandbox *sb);

/* Writes that configuration to `path` (mode 0600, atomically). */
ENR_API int enr_sandbox_write_config(const struct enr_sandbox *sb, const char *path);

/*
 * The credentials object, malloc'd JSON on one line:
 * {"solaredge": {"api_key": ...}, "solis": {"key_id": ..., "key_secret": ...},
 *  "enphase_partner": {"access_token": ..., "refresh_token": ..., "api_key": ...},
 *  "sma": {"owner_email": ...}, "solaredge_account": {"api_key": ..., "account_key": ...,
 * "site_ids": [...]}}
 */
ENR_API int enr_sandbox_credentials_json(char **out, const struct enr_sandbox *sb);

/* The ONE line `derenroll sandbox` prints (without the newline): url, config
 * (`config_path`, or null) and credentials. malloc'd. */
ENR_API int enr_sandbox_summary_json(char **out, const struct enr_sandbox *sb,
                                     const char *config_path);

/* ---- fault injection ---- */

enum enr_sandbox_fault {
	ENR_SANDBOX_FAULT_429,       /* 429 with Retry-After */
	ENR_SANDBOX_FAULT_500,       /* 500 with a JSON error */
	ENR_SANDBOX_FAULT_MALFORMED, /* 200, application/json, but not JSON */
	ENR_SANDBOX_FAULT_HUGE,      /* 200 with a 5 MiB JSON body */
	ENR_SANDBOX_FAULT_STALL,     /* 200, part of the body, then nothing for stall_ms */
	ENR_SANDBOX_FAULT_LOST,      /* handled (a refresh token rotates), then the stall:
	                              * the answer never arrives */
};

/* "429", "500", "malformed", "huge", "stall", "lost"; ENR_E_USAGE otherwise. */
ENR_API int enr_sandbox_parse_fault(enum enr_sandbox_fault *out, const char *name);

/*
 * Answers the next `count` requests to `vendor` ("tesla", "sma", "enphase",
 * "solaredge", "solis", "derapi"; NULL or "*": any) with the fault instead
 * (count <= 0: every request until cleared). `retry_after` is the 429's
 * Retry-After in seconds (<= 0: 2). Faults queue in order. ENR_E_USAGE for an
 * unknown vendor, ENR_E_NOMEM when 64 are pending.
 */
ENR_API int enr_sandbox_add_fault(struct enr_sandbox *sb, const char *vendor,
                                  enum enr_sandbox_fault kind, int count, long retry_after);

/* Latency of `vendor`'s answers in ms (NULL or "*": the default of every
 * vendor; ms < 0 for a vendor: back to the default). */
ENR_API int enr_sandbox_set_latency(struct enr_sandbox *sb, const char *vendor, long ms);

/* Removes every pending fault and per-vendor latency (the default latency stays). */
ENR_API void enr_sandbox_clear_faults(struct enr_sandbox *sb);

/*
 * Changes a setting while running: "code_ttl_ms", "refresh_grace" (s),
 * "sma_accept_ms", "stall_ms", "latency_ms" (the default latency),
 * "access_ttl" (s, for tokens issued from now on; 0: the catalogue's),
 * "solaredge_minute_limit" (calls per SolarEdge key and minute; 0: the recording's),
 * "tesla_registered_na", "_eu", "_cn" (1: the Tesla app is registered there, 0: not).
 * A provider as strict as the standards (each 0, off, by default):
 * "require_pkce" (1: Tesla's and SMA's authorize refuse a request without S256 PKCE),
 * "refresh_needs_consent" (1: offline_access, so a refresh token, only when the
 * authorize request had prompt=consent; OIDC Core 11), "iss" (1: redirects carry
 * the vendor's issuer, RFC 9207; 2: another vendor's, a mix-up), "id_token" (how
 * Tesla's are made: 0 RS256 and 1 ES256 with the keys its JWKS, GET
 * /tesla/oauth2/v3/discovery/keys, publishes; 2 signed by another key; 3 for
 * another client (aud); 4 expired).
 * ENR_E_USAGE for an unknown name or a negative value.
 */
ENR_API int enr_sandbox_set(struct enr_sandbox *sb, const char *setting, long value);

/* ---- the customers' side ---- */

/* Revokes the authorization a token (access or refresh) belongs to: every
 * token of it is refused from now on. ENR_E_NOTFOUND for an unknown token. */
ENR_API int enr_sandbox_revoke(struct enr_sandbox *sb, const char *token);

/* Revokes every token issued so far to an account (OAuth vendors), or the
 * account's key itself (solaredge key, solis KeyID). */
ENR_API int enr_sandbox_revoke_account(struct enr_sandbox *sb, const char *vendor,
                                       const char *account);

/*
 * Makes access tokens expire now: `token` alone (a refresh token too), else
 * every access token issued so far by `vendor`, else (both NULL) by every vendor.
 */
ENR_API int enr_sandbox_expire(struct enr_sandbox *sb, const char *vendor, const char *token);

/* The SMA owner's answer to a pending bc-authorize request; ENR_E_NOTFOUND. */
ENR_API int enr_sandbox_sma_decide(struct enr_sandbox *sb, const char *login_hint, bool accept);

#endif
