#ifndef DERENROLL_SANDBOX_INTERNAL_H
#define DERENROLL_SANDBOX_INTERNAL_H

/* Shared by the sandbox's files; not part of the public API. */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "derenroll/sandbox.h"

/* The vendors the sandbox plays, in the order of their prefixes. */
enum sb_vendor {
	SB_TESLA,
	SB_SMA,
	SB_ENPHASE,
	SB_SOLAREDGE,
	SB_SOLIS,
	SB_DERAPI,
	SB_ENPHASEVPP, /* no prefix of its own: only through Derapi Join */
	SB_N_VENDORS,
};
#define SB_N_PREFIXES SB_ENPHASEVPP

/* Capacities: the oldest entry makes room for a new one. */
#define SB_MAX_CODES       4096
#define SB_MAX_REFRESH     65536
#define SB_MAX_PENDING     1024
#define SB_MAX_BC          1024
#define SB_MAX_REVOKED     4096
#define SB_MAX_FLOWS       256
#define SB_MAX_SESSIONS    4096
#define SB_MAX_ENROLLMENTS 4096
#define SB_MAX_FAULTS      64
#define SB_MAX_BODY        (1024 * 1024)
#define SB_MAX_SITES       3

/* A ring of owned pointers: putting into a full ring frees the oldest. */
struct sb_ring {
	void **items;
	size_t cap, next;
	void (*free_item)(void *);
};

struct sb_client {
	char *id;
	char *secret;
};

struct sb_fault {
	int vendor; /* enum sb_vendor, or -1 for any */
	enum enr_sandbox_fault kind;
	int remaining; /* <= 0: until cleared */
	long retry_after;
};

/* A suspended connection waiting for its time (latency, a stall). */
struct sb_wait {
	struct MHD_Connection *conn;
	long long deadline_ms;
	struct sb_wait *next;
	bool queued;
};

struct sb_site {
	long long num; /* numeric id */
	char id[32];   /* the same as text */
	char name[64];
};

struct enr_sandbox {
	struct MHD_Daemon *daemon;
	pthread_mutex_t lock; /* guards everything below */
	pthread_cond_t wake;  /* wakes the timer thread: a new wait, or stopping */
	bool stopping;
	pthread_t timer;              /* resumes suspended connections when their time comes */
	long long request_arrived_ms; /* of the vendor request being handled */
	bool timer_started;
	struct sb_wait *waits;
	struct enr_relay *relay;         /* mounted at /relay */
	struct enr_config *relay_config; /* its Derapi credentials (the Join proxy) */
	char url[96];
	unsigned port;
	struct enr_catalog *own_catalog;
	const struct enr_catalog *catalog;
	unsigned char seed[32];
	unsigned char jwt_key[32];

	long latency_ms, vendor_latency_ms[SB_N_PREFIXES]; /* -1: the default */
	long refresh_grace, code_ttl_ms, sma_accept_ms, stall_ms, access_ttl;
	long solaredge_minute_limit; /* calls per key and minute; 0: the recording's */
	/* A provider as strict as the standards (enr_sandbox_set); all 0 by default. */
	long require_pkce;          /* authorize refuses a request without S256 PKCE */
	long refresh_needs_consent; /* offline_access only with prompt=consent (OIDC 11) */
	long send_iss;              /* redirects carry iss: 1 the vendor's, 2 another's */
	long id_token_mode;         /* enum sb_id_token */
	struct sb_window {
		uint64_t key; /* hash of the API key */
		long long start_ms;
		long used;
	} solaredge_windows[64];
	struct sb_fault faults[SB_MAX_FAULTS];
	size_t n_faults;

	struct sb_client clients[SB_N_VENDORS]; /* tesla, sma, enphase, derapi */
	char *enphase_api_key;
	char *solaredge_key, *solaredge_company_key, *solaredge_account_key;
	char *solis_key_id, *solis_company_key_id, *solis_secret;
	char *sma_owner_email;
	char *enphase_partner_access, *enphase_partner_refresh;
	char *relay_secret, *flow_id, *program_id;

	uint64_t seq; /* counts issued tokens; every token carries its number */
	uint64_t expired_before[SB_N_VENDORS];
	unsigned long long account_counter;
	struct sb_ring codes, refresh, pending, bc, revoked, flows, sessions, enrollments;
	char tesla_domains[3][128]; /* the domain registered per Tesla region, "" when none */
};

/* ---- requests and answers ---- */

struct sb_param {
	char *name, *value;
};

struct sb_req {
	struct enr_sandbox *sb;
	struct MHD_Connection *conn;
	const char *method;
	const char *path; /* the full path, decoded */
	const char *rest; /* below the vendor's prefix: "/oauth2/v3/token", or "" */
	int vendor;       /* enum sb_vendor, or -1 */
	const char *body;
	size_t body_len;
	struct sb_param *form; /* the x-www-form-urlencoded body, parsed on demand */
	size_t n_form;
	bool form_parsed;
	long long arrived_ms; /* when the request arrived, before any latency */
};

enum sb_special {
	SB_SPECIAL_NONE,
	SB_SPECIAL_HUGE,
	SB_SPECIAL_STALL,
};

#define SB_MAX_HEADERS 4

struct sb_resp {
	int status;
	const char *content_type;
	char *body; /* malloc'd */
	size_t len;
	char *location;
	const char *www_authenticate;
	long retry_after; /* < 0: none */
	enum sb_special special;
	struct {
		const char *name; /* borrowed: a recording's, or a literal */
		char value[64];
	} headers[SB_MAX_HEADERS]; /* further headers to send */
	size_t n_headers;
	uint64_t spent_refresh; /* the hash of the refresh token this answer rotated out */
};

long long enr_sandbox__now_ms(void);
uint64_t enr_sandbox__hash(const char *s);

const char *enr_sandbox__vendor_id(int vendor);
int enr_sandbox__vendor_from_id(const char *id);
const char *enr_sandbox__vendor_name(int vendor);

const char *enr_sandbox__header(const struct sb_req *req, const char *name);
const char *enr_sandbox__query(const struct sb_req *req, const char *name);
const char *enr_sandbox__form(struct sb_req *req, const char *name);
bool enr_sandbox__is_form(const struct sb_req *req);
/* The token of "Authorization: Bearer <token>", or NULL. */
const char *enr_sandbox__bearer(const struct sb_req *req);
/* The client id and secret of "Authorization: Basic ..." (malloc'd), or false. */
bool enr_sandbox__basic(const struct sb_req *req, char **id, char **secret);
/* The request body as JSON (the caller puts it), or NULL. */
json_object *enr_sandbox__body_json(const struct sb_req *req);

/* Fill the answer; each takes ownership of what it is given. */
void enr_sandbox__json(struct sb_resp *resp, int status, json_object *obj);
void enr_sandbox__text(struct sb_resp *resp, int status, const char *content_type,
                       const char *text);
void enr_sandbox__html(struct sb_resp *resp, int status, char *html);
void enr_sandbox__redirect(struct sb_resp *resp, char *location);
void enr_sandbox__oauth_error(struct sb_resp *resp, int status, const char *error,
                              const char *description);
void enr_sandbox__not_found(struct sb_resp *resp);
void enr_sandbox__nomem(struct sb_resp *resp);
/*
 * The recorded answer assets/answers/<vendor id>/<name>.json as the answer:
 * its status, content type, headers and body. enr_sandbox__answer_json() does
 * the same with `body` (taken) in place of the recorded body: a copy of it
 * that the caller filled (enr_answers__body/__sites/__set).
 */
void enr_sandbox__answer(struct sb_resp *resp, int vendor, const char *name);
void enr_sandbox__answer_json(struct sb_resp *resp, int vendor, const char *name,
                              json_object *body);
/* Sets header `name` (borrowed) of the answer, replacing one of that name. */
void enr_sandbox__set_header(struct sb_resp *resp, const char *name, const char *value);
/* A small HTML page with a title and paragraphs of escaped text (NULL-terminated list). */
char *enr_sandbox__page(const char *title, ...);
/* HTML-escaped copy (malloc'd). */
char *enr_sandbox__html_escape(const char *s);
/* `base` + "?" or "&" + the pairs (value NULL: skipped), url-encoded; malloc'd. */
char *enr_sandbox__add_query(const char *base, ...);

/* ---- rings ---- */

int enr_sandbox__ring_init(struct sb_ring *ring, size_t cap, void (*free_item)(void *));
void enr_sandbox__ring_done(struct sb_ring *ring);
/* Takes `item`; frees the oldest when full. ENR_E_NOMEM leaves `item` to the caller. */
void enr_sandbox__ring_put(struct sb_ring *ring, void *item);
/* Frees the item at index `i` and empties its slot. */
void enr_sandbox__ring_drop(struct sb_ring *ring, size_t i);

/* ---- accounts, tokens, codes (sandbox_auth.c) ---- */

/* A derived value: `bytes` of HMAC-SHA256(seed, label) as lowercase hex (bytes <= 32). */
void enr_sandbox__derive_hex(const struct enr_sandbox *sb, char *out, const char *label,
                             size_t bytes);

/* The sites of an account; returns how many. */
size_t enr_sandbox__sites(const struct enr_sandbox *sb, int vendor, const char *account,
                          struct sb_site *out);
/* A stable user id of an account: a UUID, or digits for Enphase's enl_uid. */
void enr_sandbox__account_uid(char *out, size_t size, int vendor, const char *account);
/* A new account name ("customer-17"). */
char *enr_sandbox__new_account(struct enr_sandbox *sb);
bool enr_sandbox__account_revoked(const struct enr_sandbox *sb, int vendor, const char *account,
                                  uint64_t seq);

struct sb_grant {
	int vendor;
	const char *client_id;
	const char *account; /* NULL for a client-credentials token */
	const char *scope;
	uint64_t grant;       /* 0: a new grant */
	bool refresh;         /* issue a refresh token too */
	bool id_token;        /* issue an OpenID id_token too (Tesla) */
	const char *audience; /* Tesla: the token's aud; NULL: the account's region's host */
	long refresh_ttl;     /* seconds; 0: never expires */
};

struct sb_tokens {
	char *access;
	char *refresh;
	char *id_token;
	long expires_in;
	uint64_t grant;
	char scope[256]; /* what was granted */
};

int enr_sandbox__issue(struct enr_sandbox *sb, struct sb_tokens *out, const struct sb_grant *g);

/* When refresh token `token` was first used (enr_sandbox__now_ms()), 0 when
 * it was not, -1 when the sandbox does not know it; `asked_ms` (may be NULL)
 * gets when the request that used it arrived, `answered_ms` (may be NULL) when
 * the answer with its successor was handed to the connection (0: not yet).
 * For the kill-storm test. */
long long enr_sandbox__refresh_used_ms(struct enr_sandbox *sb, const char *token,
                                       long long *asked_ms, long long *answered_ms);

/* The answer that rotated out the refresh token of hash `h` is being sent. Under sb->lock. */
void enr_sandbox__refresh_answered(struct enr_sandbox *sb, uint64_t h);
void enr_sandbox__tokens_done(struct sb_tokens *t);
long enr_sandbox__access_ttl(const struct enr_sandbox *sb, int vendor);
long enr_sandbox__refresh_ttl(const struct enr_sandbox *sb, int vendor);

enum sb_token_state {
	SB_TOKEN_OK,
	SB_TOKEN_INVALID,
	SB_TOKEN_EXPIRED,
	SB_TOKEN_REVOKED,
};

struct sb_access {
	char account[128];  /* "" for a client-credentials token */
	char audience[128]; /* the first "aud" of a Tesla token, or "" */
	char client_id[128];
	char scope[256];
	uint64_t grant;
};

enum sb_token_state enr_sandbox__check_access(struct enr_sandbox *sb, const char *token, int vendor,
                                              struct sb_access *out);

/* The token endpoint's refresh grant: checks and rotates `token`. On failure
 * fills `resp` with the OAuth error and returns false. */
bool enr_sandbox__refresh(struct enr_sandbox *sb, struct sb_resp *resp, struct sb_tokens *out,
                          int vendor, const char *client_id, const char *token);

/* Whether a redirect URI is registered for the vendor's app. */
bool enr_sandbox__redirect_ok(const struct enr_sandbox *sb, int vendor, const char *uri);

/* Authorization codes. */
struct sb_pending;
char *enr_sandbox__new_code(struct enr_sandbox *sb, const struct sb_pending *p,
                            const char *account);
/* The code exchange: checks code, client, redirect URI and PKCE verifier and
 * issues tokens; on failure fills `resp` and returns false. */
bool enr_sandbox__exchange(struct enr_sandbox *sb, struct sb_resp *resp, struct sb_tokens *out,
                           int vendor, const char *client_id, const char *code,
                           const char *redirect_uri, const char *verifier);

/* Checks a client id and secret against the vendor's app (constant time). */
bool enr_sandbox__client_ok(const struct enr_sandbox *sb, int vendor, const char *id,
                            const char *secret);

/* ---- the consent page (sandbox_auth.c) ---- */

enum sb_auth_kind {
	SB_AUTH_VENDOR,  /* a vendor's own authorize link: redirect with a code */
	SB_AUTH_FLOW,    /* a Derapi Join flow: redirect with state (+ enrollmentID) */
	SB_AUTH_SESSION, /* a Derapi Join session: the session gets the tokens */
};

struct sb_pending {
	char *id;
	enum sb_auth_kind kind;
	int vendor;
	bool prompted; /* the authorize request had prompt=consent */
	char *client_id, *redirect_uri, *state, *scope, *challenge,
	    *target; /* flow or session id */
	long long created_ms;
};

/* How id_tokens are made (the "id_token" setting): signed with the key the
 * JWKS publishes, or one of the ways a forged or stale one looks. */
enum sb_id_token {
	SB_ID_TOKEN_RS256,     /* RS256, the JWKS's RSA key */
	SB_ID_TOKEN_ES256,     /* ES256, the JWKS's EC key */
	SB_ID_TOKEN_WRONG_KEY, /* RS256 by a key the JWKS does not hold (same kid) */
	SB_ID_TOKEN_WRONG_AUD, /* for another client */
	SB_ID_TOKEN_EXPIRED,   /* expired ten minutes ago */
	SB_ID_TOKEN_N,
};

/* The vendor's OpenID issuer ("{url}/tesla/oauth2/v3", "{url}/sma", ...). */
void enr_sandbox__issuer(const struct enr_sandbox *sb, int vendor, char *buf, size_t size);
/* GET the JWKS: the public keys id_tokens are signed with. */
void enr_sandbox__jwks(struct sb_req *req, struct sb_resp *resp);

/* Shows the consent page for `p` or, with sandbox_auto in the query, answers
 * at once. Takes `p`. */
void enr_sandbox__consent(struct sb_req *req, struct sb_resp *resp, struct sb_pending *p);
void enr_sandbox__pending_free(void *p);
/* POST /consent */
void enr_sandbox__consent_post(struct sb_req *req, struct sb_resp *resp);

/* ---- routes ---- */

void enr_sandbox__tesla(struct sb_req *req, struct sb_resp *resp);
/* Tesla regions: an account named "eu-..." lives in the EU, "cn-..." in China,
 * any other in NA (0 NA, 1 EU, 2 CN, as enum enr_tesla_region). */
int enr_sandbox__tesla_region(const char *account);
/* "NA", "EU", "CN": the prefix of codes and refresh tokens, the ou_code claim. */
const char *enr_sandbox__tesla_region_code(int region);
/* The region's Fleet API host: {url}/tesla, {url}/tesla/eu, {url}/tesla/cn. */
void enr_sandbox__tesla_host(const struct enr_sandbox *sb, int region, char *out, size_t size);
void enr_sandbox__sma(struct sb_req *req, struct sb_resp *resp);
void enr_sandbox__enphase(struct sb_req *req, struct sb_resp *resp);
void enr_sandbox__solaredge(struct sb_req *req, struct sb_resp *resp);
void enr_sandbox__solis(struct sb_req *req, struct sb_resp *resp);
void enr_sandbox__derapi(struct sb_req *req, struct sb_resp *resp);
void enr_sandbox__control(struct sb_req *req, struct sb_resp *resp);

/* Key accounts (sandbox_vendors.c). */
bool enr_sandbox__solaredge_key_ok(const struct enr_sandbox *sb, const char *key);
bool enr_sandbox__solis_key_ok(const struct enr_sandbox *sb, const char *key_id);
void enr_sandbox__sma_bc_free(void *p);
/* Plants an SMA client-credentials token sees: those of owners who accepted. */
size_t enr_sandbox__sma_client_sites(struct enr_sandbox *sb, const char *client_id,
                                     json_object *plants);

/* Derapi's side of a finished consent (sandbox_derapi.c). */
void enr_sandbox__derapi_complete(struct enr_sandbox *sb, struct sb_resp *resp,
                                  const struct sb_pending *p, bool approve, const char *account);
void enr_sandbox__flow_free(void *p);
/* The ID of the company's stored app credentials for `vendor` at Derapi. */
void enr_sandbox__credentials_id(const struct enr_sandbox *sb, int vendor, char *out, size_t size);
void enr_sandbox__session_free(void *p);
void enr_sandbox__enrollment_free(void *p);

#endif
