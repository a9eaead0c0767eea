#ifndef DERENROLL_VENDOR_H
#define DERENROLL_VENDOR_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

struct enr_config;

/*
 * The vendor catalogue, loaded from vendors.json: everything about a vendor
 * that is data (endpoints, scopes, parameter placement, token lifetimes, the
 * check request, rate limits, guidance). The structures are read-only and
 * live as long as the catalogue.
 */
struct enr_catalog;

enum enr_client_auth {
	ENR_CLIENT_AUTH_FORM,  /* client_id and client_secret in the form body */
	ENR_CLIENT_AUTH_BASIC, /* Authorization: Basic base64(id:secret) */
};

enum enr_token_params {
	ENR_TOKEN_PARAMS_FORM,  /* grant parameters in an x-www-form-urlencoded body */
	ENR_TOKEN_PARAMS_QUERY, /* grant parameters in the query string (Enphase) */
};

enum enr_check_auth {
	ENR_CHECK_AUTH_BEARER,     /* Authorization: Bearer <access token> */
	ENR_CHECK_AUTH_HEADER_KEY, /* <header>: <api key> */
	ENR_CHECK_AUTH_QUERY_KEY,  /* ?<query_key>=<api key> */
	ENR_CHECK_AUTH_SOLIS,      /* Solis Content-MD5 + HMAC-SHA1 signature */
	ENR_CHECK_AUTH_DERAPI,     /* Derapi bearer + X-Authorization-<vendor> */
};

enum enr_limit_scope {
	ENR_LIMIT_PER_APP,     /* shared by every customer of the company's app */
	ENR_LIMIT_PER_KEY,     /* per customer credential */
	ENR_LIMIT_PER_ADDRESS, /* per source IP address */
};

struct enr_field {
	const char *name;    /* credential name: "api_key", "key_id", "owner_email", ... */
	const char *label;   /* what the form shows */
	const char *help;    /* where the value comes from */
	const char *pattern; /* POSIX extended regex it must match, or NULL */
	bool secret;
	bool optional;
};

struct enr_method {
	const char *id; /* "oauth", "email", "key", "account", "partner", "join" */
	const char *label;
	const char *help;
	const char *endpoint; /* endpoint name this method talks to, or NULL */
	const char *path;     /* path below it, or NULL */
	const struct enr_field *fields;
	size_t n_fields;
};

struct enr_endpoint {
	const char *name; /* "authorize_url", "token_url", "api_url", ... */
	const char *url;
};

/* One extra parameter of the authorize URL (vendors.json oauth.authorize_params). */
struct enr_oauth_param {
	const char *name;
	const char *value;
};

/* The code a vendor's redirect page shows for typing in (vendors.json
 * oauth.code), as far as it is known; max_length is 0 when it shows none. */
struct enr_code_spec {
	long min_length, max_length; /* characters, group separators aside */
	const char *alphabet;        /* its characters and ranges ("A-Za-z0-9") */
	bool case_insensitive;       /* the vendor takes either case: typed case is folded */
	long group;                  /* shown in groups of this many for reading aloud, or 0 */
	const char *help;            /* what the code field says of it, or NULL */
};

struct enr_oauth_spec {
	const char *scopes; /* space separated, "" for none */
	enum enr_client_auth client_auth;
	enum enr_token_params token_params;
	bool pkce;
	bool audience;               /* send audience = api_url (Tesla) */
	const char *required_scope;  /* warn when the granted scopes lack it, or NULL */
	const char *identity_claim;  /* JWT claim naming the account, or NULL */
	bool refresh_without_secret; /* the refresh grant sends no client_secret (Tesla) */
	const char *partner_scopes;  /* scopes of the app's partner token (Tesla), or NULL */
	/* The authorization server's issuer identifier: the callback's `iss`
	 * (RFC 9207) and an id_token's must equal it; NULL when unknown. */
	const char *issuer;
	const char *jwks_url; /* where it publishes its id_token keys, or NULL */
	/* The scope that yields a refresh token ("offline_access"), or NULL when
	 * every code grant gives one. */
	const char *offline_scope;
	/* An answer without the refresh token asked for fails the enrollment;
	 * -1 when vendors.json does not say: tokens.refresh_rotates decides. */
	int strict_refresh;
	const struct enr_oauth_param *authorize_params; /* prompt=consent, locale, ... */
	size_t n_authorize_params;
	struct enr_code_spec code;
};

struct enr_token_spec {
	long access_ttl;    /* seconds; 0 = does not expire / not applicable */
	long refresh_ttl;   /* seconds from issue; 0 = does not expire */
	long refresh_grace; /* how long a rotated-out refresh token stays valid */
	bool refresh_rotates;
};

struct enr_check_spec {
	const char *method; /* "GET" or "POST" */
	const char *path;   /* below api_url */
	const char *body;   /* request body or NULL */
	enum enr_check_auth auth;
	const char *header;         /* for HEADER_KEY */
	const char *query_key;      /* query parameter carrying the API key, or NULL */
	const char *sites;          /* dot path to the site array ("data.page.records") */
	const char *sites_alt;      /* another path the vendor also answers with ("": the body
	                             * itself is the array), or NULL */
	const char *account_header; /* for HEADER_KEY: header carrying the account key, or NULL */
	const char *site_id;        /* field of a site holding its id */
	const char *site_name;      /* field of a site holding its name */
	const char *require_field;  /* entries without it are not sites, or NULL */
};

struct enr_rate_limit {
	double requests; /* requests allowed per `per_seconds`; 0 = no rate cap */
	double per_seconds;
	int concurrency; /* calls at once; 0 = no cap */
	enum enr_limit_scope scope;
	/* Response header in which the vendor reports the calls left in this
	 * limit's window ("x-ratelimit-remaining-minute"), or NULL. */
	const char *remaining_header;
	/* Response header in which the vendor reports the size of that window
	 * ("x-ratelimit-limit-minute"), or NULL: a smaller size than `requests`
	 * slows the bulk scheduler down to it. */
	const char *limit_header;
};

struct enr_guidance {
	int status;        /* HTTP status it applies to, or 0 for any */
	const char *match; /* substring of the body or error code, or NULL */
	int error;         /* ENR_E_REJECTED, ENR_E_TRANSIENT, ENR_E_MISCONFIGURED, ... */
	const char *message;
};

/* One header a Derapi API call carries for a vendor: `name` and `value` are
 * templates ({vendor}, {access_token}, {api_key}, {key_id}, {key_secret},
 * {base64:...}); see assets/vendors.json, derapi.vendor_access. */
struct enr_derapi_header {
	const char *name;
	const char *value;
	bool config_fallback; /* fields the record lacks come from the vendor's config */
};

/* How Derapi is given a vendor's credentials (the derapi entry's vendor_access). */
struct enr_derapi_access {
	const struct enr_derapi_header *headers;
	size_t n_headers;
	bool stored_credentials; /* Join Flows need the company's stored app credentials */
};

struct enr_vendor {
	const char *id;
	const char *name;
	const char *config_section;       /* "vendor.tesla", "derapi" */
	const char *derapi_name;          /* its name in Derapi Join, or NULL */
	const char *api_version;          /* Derapi's api-version header, or NULL */
	const struct enr_method *methods; /* the first is the default */
	size_t n_methods;
	const struct enr_endpoint *endpoints;
	size_t n_endpoints;
	bool has_oauth;
	struct enr_oauth_spec oauth;
	struct enr_token_spec tokens;
	bool has_check;
	struct enr_check_spec check;
	const struct enr_rate_limit *rate_limits;
	size_t n_rate_limits;
	const struct enr_guidance *guidance;
	size_t n_guidance;
	const char *const *unconfirmed;
	size_t n_unconfirmed;
	/* From the derapi entry's vendor_access, or NULL when it has none. */
	const struct enr_derapi_access *derapi_access;
};

/*
 * Loads and validates the catalogue from `path`, or datadir/vendors.json when
 * NULL. Errors (ENR_E_PARSE, ENR_E_NOTFOUND) name the file, the vendor and
 * the field.
 */
ENR_API int enr_catalog_load(struct enr_catalog **out, const char *path);

/* The same from a string; `origin` names it in messages. */
ENR_API int enr_catalog_load_string(struct enr_catalog **out, const char *json, const char *origin);

ENR_API void enr_catalog_free(struct enr_catalog *catalog);

ENR_API size_t enr_catalog_count(const struct enr_catalog *catalog);
ENR_API const struct enr_vendor *enr_catalog_at(const struct enr_catalog *catalog, size_t i);

/* The vendor with that id, or NULL (ENR_E_USAGE set, listing the known ids). */
ENR_API const struct enr_vendor *enr_catalog_find(const struct enr_catalog *catalog,
                                                  const char *id);

/*
 * Checks the `[vendor.<id>]` sections of `cfg` against the catalogue and
 * returns the number of problems found; `warn(msg, ctx)` is called for each
 * (unknown vendor id).
 */
ENR_API size_t enr_catalog_check_config(const struct enr_catalog *catalog,
                                        const struct enr_config *cfg,
                                        void (*warn)(const char *msg, void *ctx), void *ctx);

/* The method with that id, or NULL (ENR_E_USAGE set, listing the vendor's methods). */
ENR_API const struct enr_method *enr_vendor_method(const struct enr_vendor *vendor, const char *id);

/* The default URL of an endpoint, or NULL. */
ENR_API const char *enr_vendor_default_endpoint(const struct enr_vendor *vendor, const char *name);

/*
 * An endpoint URL as configured: the config's `[<section>] <name>` when set,
 * else the catalogue's default; NULL (ENR_E_CONFIG set) when neither has one.
 * Trailing slashes are not stripped: callers join with enr_vendor_url().
 */
ENR_API const char *enr_vendor_endpoint(const struct enr_vendor *vendor,
                                        const struct enr_config *cfg, const char *name);

/* endpoint + path, with exactly one slash between them; malloc'd. */
ENR_API char *enr_vendor_url(const struct enr_vendor *vendor, const struct enr_config *cfg,
                             const char *endpoint, const char *path);

/* A non-secret setting of the vendor's section (client_id, redirect_uri, ...), or NULL. */
ENR_API const char *enr_vendor_setting(const struct enr_vendor *vendor,
                                       const struct enr_config *cfg, const char *key);

/* A secret of the vendor's section (client_secret, api_key); see enr_config_get_secret(). */
ENR_API int enr_vendor_secret(char **out, const struct enr_vendor *vendor,
                              const struct enr_config *cfg, const char *key);

/* The scopes to request: `[section] scopes` if set, else the catalogue's. */
ENR_API const char *enr_vendor_scopes(const struct enr_vendor *vendor,
                                      const struct enr_config *cfg);

/*
 * The first guidance entry matching an HTTP status and a response body (or an
 * error code such as "invalid_grant" or the marker "empty_sites"), or NULL.
 */
ENR_API const struct enr_guidance *enr_vendor_guidance(const struct enr_vendor *vendor, int status,
                                                       const char *text);

/* The character of the vendor's typed code (oauth.code.alphabet) that `c`
 * stands for: `c` itself or, where the vendor takes either case, the case the
 * alphabet has (lower case first); -1 when it stands for none. */
ENR_API int enr_vendor_code_char(const struct enr_vendor *vendor, int c);

/* Whether the catalogue marks a field ("tokens.access_ttl") as unconfirmed. */
ENR_API bool enr_vendor_unconfirmed(const struct enr_vendor *vendor, const char *field);

#endif
