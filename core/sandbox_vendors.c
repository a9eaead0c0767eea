/* The sandbox's vendors: Tesla, SMA, Enphase, SolarEdge and Solis, each on
 * the paths of the real API below its prefix. Called with the lock held. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "derenroll/error.h"
#include "derenroll/solis.h"
#include "answers.h"
#include "sandbox_internal.h"
#include "util.h"

static bool is(const struct sb_req *req, const char *method, const char *rest)
{
	return strcmp(req->method, method) == 0 && strcmp(req->rest, rest) == 0;
}

static void method_not_allowed(struct sb_resp *resp)
{
	enr_sandbox__oauth_error(resp, 405, "method_not_allowed", "wrong HTTP method");
}

static void add_str(json_object *obj, const char *key, const char *value)
{
	json_object_object_add(obj, key, json_object_new_string(value));
}

/* ---- the OAuth side shared by Tesla, SMA and Enphase ---- */

static void bad_authorize(struct sb_resp *resp, const char *text)
{
	enr_sandbox__html(resp, 400, enr_sandbox__page("Sign-in error", text, NULL));
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static bool has_scope(const char *scopes, const char *wanted);

/* GET authorize: checks the app, then shows the consent page (or answers at once). */
static void authorize(struct sb_req *req, struct sb_resp *resp, bool pkce, bool scope_required)
{
	struct enr_sandbox *sb = req->sb;
	const char *client_id = enr_sandbox__query(req, "client_id");
	const char *redirect_uri = enr_sandbox__query(req, "redirect_uri");
	const char *state = enr_sandbox__query(req, "state");
	const char *type = enr_sandbox__query(req, "response_type");
	const char *scope = enr_sandbox__query(req, "scope");
	const char *challenge = pkce ? enr_sandbox__query(req, "code_challenge") : NULL;
	const char *method = enr_sandbox__query(req, "code_challenge_method");
	const char *prompt = enr_sandbox__query(req, "prompt");
	const char *error = NULL, *description = NULL;
	struct sb_pending *p;

	/* Without a known app and a registered redirect URI nothing may redirect. */
	if (!client_id || !enr_sandbox__client_ok(sb, req->vendor, client_id, NULL)) {
		bad_authorize(resp, "Unknown client_id: this app is not registered.");
		return;
	}
	if (!enr_sandbox__redirect_ok(sb, req->vendor, redirect_uri) ||
	    strlen(redirect_uri) > 400) {
		bad_authorize(resp, "invalid_redirect_uri: the redirect_uri is not registered for "
		                    "this app.");
		return;
	}
	if (!type || strcmp(type, "code") != 0) {
		error = "unsupported_response_type";
		description = "response_type must be code";
	} else if (scope_required && (!scope || !scope[0])) {
		error = "invalid_scope";
		description = "scope is required";
	} else if (scope && strlen(scope) > 200) {
		error = "invalid_scope";
		description = "scope is too long";
	} else if (pkce && sb->require_pkce && !challenge) {
		error = "invalid_request";
		description = "code_challenge is required (PKCE S256)";
	} else if (challenge && (!method || strcmp(method, "S256") != 0)) {
		error = "invalid_request";
		description = "code_challenge_method must be S256";
	} else if (challenge && (strlen(challenge) < 43 || strlen(challenge) > 128)) {
		error = "invalid_request";
		description = "code_challenge must be 43 to 128 characters";
	} else if (state && strlen(state) > 512) {
		error = "invalid_request";
		description = "state is too long";
	}
	if (error) {
		enr_sandbox__redirect(resp, enr_sandbox__add_query(redirect_uri, "error", error,
		                                                   "error_description", description,
		                                                   "state", state, NULL));
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		enr_sandbox__nomem(resp);
		return;
	}
	p->kind = SB_AUTH_VENDOR;
	p->vendor = req->vendor;
	p->client_id = strdup(client_id);
	p->redirect_uri = strdup(redirect_uri);
	p->state = dup_or_null(state);
	p->scope = strdup(req->vendor == SB_ENPHASE ? "read write" : scope ? scope : "");
	p->challenge = dup_or_null(challenge);
	p->prompted = prompt && has_scope(prompt, "consent");
	if (!p->client_id || !p->redirect_uri || !p->scope || (state && !p->state) ||
	    (challenge && !p->challenge)) {
		enr_sandbox__pending_free(p);
		enr_sandbox__nomem(resp);
		return;
	}
	enr_sandbox__consent(req, resp, p);
}

static void invalid_client(struct sb_resp *resp)
{
	enr_sandbox__oauth_error(resp, 401, "invalid_client",
	                         "client authentication failed: wrong client_id or client_secret");
}

static bool has_scope(const char *scopes, const char *wanted)
{
	size_t len = strlen(wanted);

	for (const char *p = scopes; (p = strstr(p, wanted)); p += len)
		if ((p == scopes || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
			return true;
	return false;
}

static void bearer_error(struct sb_resp *resp, enum sb_token_state state)
{
	resp->www_authenticate = state == SB_TOKEN_EXPIRED
	                             ? "Bearer error=\"invalid_token\", "
	                               "error_description=\"The access token expired\""
	                             : "Bearer error=\"invalid_token\"";
	enr_sandbox__oauth_error(resp, 401, "invalid_token",
	                         state == SB_TOKEN_EXPIRED   ? "the access token expired"
	                         : state == SB_TOKEN_REVOKED ? "the access token was revoked"
	                                                     : "the access token is not valid");
}

/* ---- Tesla ---- */

/*
 * Three regions below /tesla: NA at /tesla, EU at /tesla/eu, CN at
 * /tesla/cn, one token URL for all (/tesla/oauth2/v3/token). An account lives
 * in one region (enr_sandbox__tesla_region): elsewhere its calls answer 421.
 * The sandbox's app is registered in NA and EU, not in CN (412 there until
 * POST /api/1/partner_accounts). Answers are built from assets/answers/tesla.
 */

static const char *const tesla_codes[] = {"NA", "EU", "CN"};
static const char *const tesla_paths[] = {"", "/eu", "/cn"};
static const char *const tesla_names[] = {"na", "eu", "cn"};

#define TESLA_KEY_PATH "/.well-known/appspecific/com.tesla.3p.public-key.pem"

int enr_sandbox__tesla_region(const char *account)
{
	if (account && strncmp(account, "eu-", 3) == 0)
		return 1;
	if (account && strncmp(account, "cn-", 3) == 0)
		return 2;
	return 0;
}

const char *enr_sandbox__tesla_region_code(int region)
{
	return tesla_codes[region >= 0 && region < 3 ? region : 0];
}

void enr_sandbox__tesla_host(const struct enr_sandbox *sb, int region, char *out, size_t size)
{
	snprintf(out, size, "%s/tesla%s", sb->url,
	         tesla_paths[region >= 0 && region < 3 ? region : 0]);
}

/* The region of a host's audience URL, or -1. */
static int tesla_audience_region(const struct enr_sandbox *sb, const char *audience)
{
	char host[128];

	for (int i = 0; audience && i < 3; i++) {
		enr_sandbox__tesla_host(sb, i, host, sizeof(host));
		if (strcmp(audience, host) == 0)
			return i;
	}
	return -1;
}

/* The region a code's prefix names (codes without one: NA). */
static int tesla_code_region(const char *code)
{
	for (int i = 1; code && i < 3; i++)
		if (strncmp(code, tesla_codes[i], 2) == 0 && code[2] == '_')
			return i;
	return 0;
}

/* A recorded Tesla answer as it is. */
static void tesla_recorded(struct sb_resp *resp, const char *name)
{
	json_object *body = NULL;

	if (enr_answers__body(&body, "tesla", name) < 0) {
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
		return;
	}
	enr_sandbox__json(resp, enr_answers__status("tesla", name), body);
}

/* A recorded token answer carrying `t`'s tokens (members the recording lacks are not sent). */
static void tesla_tokens(struct sb_resp *resp, const char *name, struct sb_tokens *t)
{
	json_object *body = NULL;

	if (enr_answers__body(&body, "tesla", name) < 0) {
		enr_sandbox__tokens_done(t);
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
		return;
	}
	enr_answers__set(body, "access_token", json_object_new_string(t->access));
	if (!t->refresh ||
	    !enr_answers__set(body, "refresh_token", json_object_new_string(t->refresh)))
		json_object_object_del(body, "refresh_token");
	if (!t->id_token ||
	    !enr_answers__set(body, "id_token", json_object_new_string(t->id_token)))
		json_object_object_del(body, "id_token");
	enr_answers__set(body, "expires_in", json_object_new_int64(t->expires_in));
	json_object_object_del(body, "state");
	enr_sandbox__tokens_done(t);
	enr_sandbox__json(resp, 200, body);
}

/* The partner token: client credentials, an audience that is a region's host. */
static void tesla_partner_token(struct sb_req *req, struct sb_resp *resp, const char *client_id,
                                const char *secret)
{
	struct enr_sandbox *sb = req->sb;
	const char *audience = enr_sandbox__form(req, "audience");
	const char *scope = enr_sandbox__form(req, "scope");
	struct sb_grant g = {0};
	struct sb_tokens t;

	if (!secret || !enr_sandbox__client_ok(sb, SB_TESLA, client_id, secret)) {
		invalid_client(resp);
		return;
	}
	if (tesla_audience_region(sb, audience) < 0) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request",
		                         "audience must be a Fleet API region's base URL");
		return;
	}
	g.vendor = SB_TESLA;
	g.client_id = client_id;
	g.scope = scope ? scope : "";
	g.audience = audience;
	if (enr_sandbox__issue(sb, &t, &g) < 0) {
		enr_sandbox__nomem(resp);
		return;
	}
	tesla_tokens(resp, "partner-token", &t);
}

static void tesla_token(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *grant = enr_sandbox__form(req, "grant_type");
	const char *client_id = enr_sandbox__form(req, "client_id");
	const char *secret = enr_sandbox__form(req, "client_secret");
	struct sb_tokens t;
	bool ok;

	if (!enr_sandbox__is_form(req)) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request",
		                         "expected an application/x-www-form-urlencoded body");
		return;
	}
	if (grant && strcmp(grant, "authorization_code") == 0) {
		const char *audience = enr_sandbox__form(req, "audience");
		const char *code = enr_sandbox__form(req, "code");
		char expected[128];
		if (!secret || !enr_sandbox__client_ok(sb, SB_TESLA, client_id, secret)) {
			invalid_client(resp);
			return;
		}
		if (!audience) {
			enr_sandbox__oauth_error(resp, 400, "invalid_request",
			                         "audience is required (the Fleet API base URL)");
			return;
		}
		/* The code's prefix names the account's region: the audience must be its host. */
		enr_sandbox__tesla_host(sb, tesla_code_region(code), expected, sizeof(expected));
		if (strcmp(audience, expected) != 0) {
			enr_sandbox__oauth_error(resp, 400, "invalid_request",
			                         tesla_audience_region(sb, audience) < 0
			                             ? "audience is not a Fleet API region"
			                             : "audience is not the region of the user's "
			                               "account");
			return;
		}
		ok = enr_sandbox__exchange(sb, resp, &t, SB_TESLA, client_id, code,
		                           enr_sandbox__form(req, "redirect_uri"),
		                           enr_sandbox__form(req, "code_verifier"));
		if (ok)
			tesla_tokens(resp, "token", &t);
	} else if (grant && strcmp(grant, "refresh_token") == 0) {
		/* Tesla's refresh is grant_type, client_id and refresh_token only. */
		if (secret) {
			enr_sandbox__oauth_error(resp, 400, "invalid_request",
			                         "client_secret is not sent with a refresh: "
			                         "grant_type, client_id and refresh_token only");
			return;
		}
		if (!client_id || !enr_sandbox__client_ok(sb, SB_TESLA, client_id, NULL)) {
			invalid_client(resp);
			return;
		}
		ok = enr_sandbox__refresh(sb, resp, &t, SB_TESLA, client_id,
		                          enr_sandbox__form(req, "refresh_token"));
		if (ok)
			tesla_tokens(resp, "refresh", &t);
	} else if (grant && strcmp(grant, "client_credentials") == 0) {
		tesla_partner_token(req, resp, client_id, secret);
	} else {
		enr_sandbox__oauth_error(resp, 400, "unsupported_grant_type",
		                         "grant_type must be authorization_code, refresh_token or "
		                         "client_credentials");
	}
}

static void tesla_error(struct sb_resp *resp, int status, const char *error)
{
	json_object *obj = json_object_new_object();

	json_object_object_add(obj, "response", NULL);
	add_str(obj, "error", error);
	add_str(obj, "error_description", "");
	enr_sandbox__json(resp, status, obj);
}

/* A customer's token, valid for this region; false when `resp` got the refusal. */
static bool tesla_customer(struct sb_req *req, struct sb_resp *resp, int region,
                           struct sb_access *a, bool any_region)
{
	enum sb_token_state state;
	char host[128];

	state = enr_sandbox__check_access(req->sb, enr_sandbox__bearer(req), SB_TESLA, a);
	if (state == SB_TOKEN_EXPIRED) {
		tesla_error(resp, 401, "token expired (401)");
		return false;
	}
	if (state != SB_TOKEN_OK || !a->account[0]) {
		tesla_error(resp, 401, "login_required");
		return false;
	}
	if (any_region)
		return true;
	if (enr_sandbox__tesla_region(a->account) != region) {
		tesla_recorded(resp, "wrong-region");
		return false;
	}
	enr_sandbox__tesla_host(req->sb, region, host, sizeof(host));
	if (strcmp(a->audience, host) != 0) {
		tesla_error(resp, 401, "invalid audience");
		return false;
	}
	if (!req->sb->tesla_domains[region][0]) {
		tesla_recorded(resp, "not-registered");
		return false;
	}
	return true;
}

static void tesla_products(struct sb_req *req, struct sb_resp *resp, int region)
{
	struct sb_site sites[SB_MAX_SITES];
	struct enr_answers_site filled[SB_MAX_SITES];
	struct sb_access a;
	json_object *obj = NULL, *recorded = NULL, *list, *vehicle;
	size_t n;

	if (!tesla_customer(req, resp, region, &a, false))
		return;
	if (!has_scope(a.scope, "energy_device_data")) {
		tesla_error(resp, 403, "Unauthorized missing scopes");
		return;
	}
	n = enr_sandbox__sites(req->sb, SB_TESLA, a.account, sites);
	for (size_t i = 0; i < n; i++)
		filled[i] = (struct enr_answers_site){sites[i].id, sites[i].name};
	if (enr_answers__sites(&obj, "tesla", "products", filled, n) < 0 ||
	    enr_answers__body(&recorded, "tesla", "products") < 0) {
		json_object_put(obj);
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
		return;
	}
	/* The recording's vehicle too: not an energy site, so the client must skip it. */
	list = enr_util_json_at(obj, "response");
	vehicle = json_object_array_get_idx(enr_util_json_at(recorded, "response"), 1);
	if (list && vehicle) {
		json_object_array_add(list, json_object_get(vehicle));
		enr_answers__set(obj, "count", json_object_new_int64((long long)n + 1));
	}
	json_object_put(recorded);
	enr_sandbox__json(resp, 200, obj);
}

static void tesla_users_region(struct sb_req *req, struct sb_resp *resp)
{
	struct sb_access a;
	json_object *body = NULL;
	char host[128];
	int region;

	if (!tesla_customer(req, resp, 0, &a, true))
		return;
	if (enr_answers__body(&body, "tesla", "users-region") < 0) {
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
		return;
	}
	region = enr_sandbox__tesla_region(a.account);
	enr_sandbox__tesla_host(req->sb, region, host, sizeof(host));
	enr_answers__set(body, "response.region", json_object_new_string(tesla_names[region]));
	enr_answers__set(body, "response.fleet_api_base_url", json_object_new_string(host));
	enr_sandbox__json(resp, 200, body);
}

/* The app's partner token for this region; false when `resp` got the refusal. */
static bool tesla_partner(struct sb_req *req, struct sb_resp *resp, int region)
{
	struct sb_access a;
	char host[128];

	if (enr_sandbox__check_access(req->sb, enr_sandbox__bearer(req), SB_TESLA, &a) !=
	        SB_TOKEN_OK ||
	    a.account[0]) {
		tesla_error(resp, 401, "a partner token is required (client_credentials)");
		return false;
	}
	enr_sandbox__tesla_host(req->sb, region, host, sizeof(host));
	if (strcmp(a.audience, host) != 0) {
		tesla_error(resp, 401, "the partner token's audience is not this region");
		return false;
	}
	return true;
}

/* Whether the company "serves" its public key: every domain but "nokey...". */
static bool tesla_key_served(const char *domain)
{
	return strncmp(domain, "nokey", 5) != 0;
}

static void tesla_register(struct sb_req *req, struct sb_resp *resp, int region)
{
	json_object *in = NULL, *d = NULL, *body = NULL;
	const char *domain;

	if (!tesla_partner(req, resp, region))
		return;
	in = enr_sandbox__body_json(req);
	domain = in && json_object_object_get_ex(in, "domain", &d) &&
	                 json_object_is_type(d, json_type_string)
	             ? json_object_get_string(d)
	             : NULL;
	if (!domain || !domain[0] || strlen(domain) >= sizeof(req->sb->tesla_domains[0])) {
		tesla_error(resp, 400, "domain is required");
	} else if (!tesla_key_served(domain)) {
		/* Tesla fetches the key before it registers the domain. */
		tesla_error(resp, 424, "public key not found at https://<domain>" TESLA_KEY_PATH);
	} else if (enr_answers__body(&body, "tesla", "partner-accounts") < 0) {
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
	} else {
		snprintf(req->sb->tesla_domains[region], sizeof(req->sb->tesla_domains[region]),
		         "%s", domain);
		enr_answers__set(body, "response.domain", json_object_new_string(domain));
		enr_answers__set(body, "response.client_id",
		                 json_object_new_string(req->sb->clients[SB_TESLA].id));
		enr_sandbox__json(resp, 200, body);
	}
	json_object_put(in);
}

static void tesla_public_key(struct sb_req *req, struct sb_resp *resp, int region)
{
	const char *domain = enr_sandbox__query(req, "domain");

	if (!tesla_partner(req, resp, region))
		return;
	if (!req->sb->tesla_domains[region][0])
		tesla_recorded(resp, "not-registered");
	else if (!domain || strcmp(domain, req->sb->tesla_domains[region]) != 0)
		tesla_error(resp, 404, "domain not found");
	else
		tesla_recorded(resp, "partner-public-key");
}

/* The company's web server: /tesla/_domains/{domain}/.well-known/... */
static void tesla_domain_key(struct sb_req *req, struct sb_resp *resp)
{
	const char *domain = req->rest + strlen("/_domains/");
	const char *slash = strchr(domain, '/');
	char name[128], hex[65], *pem;

	if (!slash || strcmp(slash, TESLA_KEY_PATH) != 0 ||
	    (size_t)(slash - domain) >= sizeof(name)) {
		enr_sandbox__not_found(resp);
		return;
	}
	snprintf(name, sizeof(name), "%.*s", (int)(slash - domain), domain);
	if (!tesla_key_served(name)) {
		enr_sandbox__text(resp, 404, "text/plain", "Not Found\n");
		return;
	}
	enr_sandbox__derive_hex(req->sb, hex, name, 32);
	pem = enr_util_printf("-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n", hex);
	if (pem)
		enr_sandbox__text(resp, 200, "application/x-pem-file", pem);
	else
		enr_sandbox__nomem(resp);
	free(pem);
}

void enr_sandbox__tesla(struct sb_req *req, struct sb_resp *resp)
{
	int region = 0;
	const char *saved = req->rest;

	if (strncmp(req->rest, "/_domains/", 10) == 0 && strcmp(req->method, "GET") == 0) {
		tesla_domain_key(req, resp);
		return;
	}
	for (int i = 1; i < 3; i++) {
		size_t len = strlen(tesla_paths[i]);
		if (strncmp(req->rest, tesla_paths[i], len) == 0 && req->rest[len] == '/') {
			region = i;
			req->rest += len;
		}
	}
	if (region == 0 && is(req, "GET", "/oauth2/v3/authorize"))
		authorize(req, resp, true, true);
	else if (region == 0 && is(req, "POST", "/oauth2/v3/token"))
		tesla_token(req, resp);
	else if (region == 0 && is(req, "GET", "/oauth2/v3/discovery/keys"))
		enr_sandbox__jwks(req, resp);
	else if (is(req, "GET", "/api/1/products"))
		tesla_products(req, resp, region);
	else if (is(req, "GET", "/api/1/users/region"))
		tesla_users_region(req, resp);
	else if (is(req, "POST", "/api/1/partner_accounts"))
		tesla_register(req, resp, region);
	else if (is(req, "GET", "/api/1/partner_accounts/public_key"))
		tesla_public_key(req, resp, region);
	else if (strcmp(req->rest, "/oauth2/v3/token") == 0 ||
	         strcmp(req->rest, "/api/1/products") == 0)
		method_not_allowed(resp);
	else
		enr_sandbox__not_found(resp);
	req->rest = saved;
}

/* ---- SMA ---- */

enum bc_status { BC_PENDING, BC_ACCEPTED, BC_DECLINED, BC_EXPIRED };

struct bc {
	enum bc_status status;
	long long created_ms;
	char client_id[128];
	char hint[];
};

void enr_sandbox__sma_bc_free(void *p)
{
	free(p);
}

/* The recording of each state's poll answer (assets/answers/sma/). */
static const char *const bc_answers[] = {"bc-pending", "bc-accepted", "bc-rejected", "bc-expired"};

static void sma_token(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *grant = enr_sandbox__form(req, "grant_type");
	const char *client_id = enr_sandbox__form(req, "client_id");
	const char *secret = enr_sandbox__form(req, "client_secret");
	char *basic_id = NULL, *basic_secret = NULL;
	struct sb_tokens t = {0};
	json_object *obj = NULL;
	const char *answer;
	bool ok = false;

	if (!enr_sandbox__is_form(req)) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request",
		                         "expected an application/x-www-form-urlencoded body");
		return;
	}
	/* Keycloak takes the client's credentials in the form or as Basic. */
	if (enr_sandbox__basic(req, &basic_id, &basic_secret)) {
		client_id = basic_id;
		secret = basic_secret;
	}
	if (!secret || !enr_sandbox__client_ok(sb, SB_SMA, client_id, secret)) {
		invalid_client(resp);
		goto out;
	}
	if (grant && strcmp(grant, "authorization_code") == 0) {
		ok = enr_sandbox__exchange(sb, resp, &t, SB_SMA, client_id,
		                           enr_sandbox__form(req, "code"),
		                           enr_sandbox__form(req, "redirect_uri"),
		                           enr_sandbox__form(req, "code_verifier"));
	} else if (grant && strcmp(grant, "refresh_token") == 0) {
		ok = enr_sandbox__refresh(sb, resp, &t, SB_SMA, client_id,
		                          enr_sandbox__form(req, "refresh_token"));
	} else if (grant && strcmp(grant, "client_credentials") == 0) {
		struct sb_grant g = {.vendor = SB_SMA, .client_id = client_id, .scope = ""};
		ok = enr_sandbox__issue(sb, &t, &g) == 0;
		if (!ok)
			enr_sandbox__nomem(resp);
	} else {
		enr_sandbox__oauth_error(resp, 400, "unsupported_grant_type",
		                         "grant_type must be authorization_code, refresh_token or "
		                         "client_credentials");
	}
	if (!ok)
		goto out;
	answer = t.refresh ? "token" : "token-client-credentials";
	if (enr_answers__body(&obj, "sma", answer) < 0) {
		enr_sandbox__oauth_error(resp, 500, "sandbox_error", enr_error_last());
		goto out;
	}
	enr_answers__set(obj, "access_token", json_object_new_string(t.access));
	enr_answers__set(obj, "expires_in", json_object_new_int64(t.expires_in));
	/* Keycloak: an offline token never expires (0); else the SSO session's 30 minutes. */
	enr_answers__set(
	    obj, "refresh_expires_in",
	    json_object_new_int(!t.refresh || has_scope(t.scope, "offline_access") ? 0 : 1800));
	if (t.refresh)
		enr_answers__set(obj, "refresh_token", json_object_new_string(t.refresh));
	enr_answers__set(obj, "scope", json_object_new_string(t.scope));
	enr_sandbox__answer_json(resp, SB_SMA, answer, obj);
out:
	enr_sandbox__tokens_done(&t);
	free(basic_id);
	free(basic_secret);
}

/* The plants of an account, in the recorded shape (answers/sma/plants.json). */
static void add_plants(json_object *plants, const struct enr_sandbox *sb, const char *account)
{
	struct sb_site sites[SB_MAX_SITES];
	struct enr_answers_site list[SB_MAX_SITES];
	size_t n = enr_sandbox__sites(sb, SB_SMA, account, sites);
	json_object *body = NULL, *recorded;

	for (size_t i = 0; i < n; i++)
		list[i] = (struct enr_answers_site){sites[i].id, sites[i].name};
	if (enr_answers__sites(&body, "sma", "plants", list, n) < 0)
		return;
	recorded = enr_util_json_at(body, "plants");
	for (size_t i = 0; recorded && i < json_object_array_length(recorded); i++)
		json_object_array_add(plants,
		                      json_object_get(json_object_array_get_idx(recorded, i)));
	json_object_put(body);
}

/* Owners accept after sma_accept_ms; one whose address starts with "decline"
 * declines, one with "expire" lets the request lapse. */
static enum bc_status bc_status(const struct enr_sandbox *sb, struct bc *bc)
{
	if (bc->status == BC_PENDING && sb->sma_accept_ms >= 0 &&
	    enr_sandbox__now_ms() - bc->created_ms >= sb->sma_accept_ms)
		bc->status = strncmp(bc->hint, "decline", 7) == 0  ? BC_DECLINED
		             : strncmp(bc->hint, "expire", 6) == 0 ? BC_EXPIRED
		                                                   : BC_ACCEPTED;
	return bc->status;
}

size_t enr_sandbox__sma_client_sites(struct enr_sandbox *sb, const char *client_id,
                                     json_object *plants)
{
	size_t owners = 0;

	for (size_t i = 0; i < sb->bc.cap; i++) {
		struct bc *bc = sb->bc.items[i];
		if (bc && strcmp(bc->client_id, client_id) == 0 &&
		    bc_status(sb, bc) == BC_ACCEPTED &&
		    !enr_sandbox__account_revoked(sb, SB_SMA, bc->hint, 0)) {
			add_plants(plants, sb, bc->hint);
			owners++;
		}
	}
	return owners;
}

static void sma_plants(struct sb_req *req, struct sb_resp *resp)
{
	struct sb_access a;
	enum sb_token_state state;
	json_object *obj, *plants;

	state = enr_sandbox__check_access(req->sb, enr_sandbox__bearer(req), SB_SMA, &a);
	if (state != SB_TOKEN_OK) {
		bearer_error(resp, state);
		return;
	}
	obj = json_object_new_object();
	plants = json_object_new_array();
	if (a.account[0])
		add_plants(plants, req->sb, a.account);
	else
		enr_sandbox__sma_client_sites(req->sb, a.client_id, plants);
	json_object_object_add(obj, "plants", plants);
	enr_sandbox__json(resp, 200, obj);
}

static struct bc *find_bc(const struct enr_sandbox *sb, const char *client_id, const char *hint)
{
	for (size_t i = 0; i < sb->bc.cap; i++) {
		struct bc *bc = sb->bc.items[i];
		if (bc && (!client_id || strcmp(bc->client_id, client_id) == 0) &&
		    strcmp(bc->hint, hint) == 0)
			return bc;
	}
	return NULL;
}

/* The recorded answer `name` with this request's loginHint. */
static void bc_answer(struct sb_resp *resp, const char *name, const char *hint)
{
	json_object *obj = NULL;

	if (enr_answers__body(&obj, "sma", name) == 0)
		enr_answers__set(obj, "loginHint", json_object_new_string(hint));
	enr_sandbox__answer_json(resp, SB_SMA, name, obj);
}

static bool email_ok(const char *s)
{
	const char *at = s ? strchr(s, '@') : NULL;

	return at && at > s && !strchr(at + 1, '@') && strchr(at + 1, '.') && !strchr(s, ' ') &&
	       strlen(s) <= 100 && at[1] != '.' && s[strlen(s) - 1] != '.';
}

static void sma_bc(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	struct sb_access a;
	enum sb_token_state state;
	const char *hint = NULL;
	json_object *body = NULL, *v;
	struct bc *bc;

	state = enr_sandbox__check_access(sb, enr_sandbox__bearer(req), SB_SMA, &a);
	if (state != SB_TOKEN_OK) {
		bearer_error(resp, state);
		return;
	}
	if (a.account[0]) {
		enr_sandbox__oauth_error(resp, 403, "insufficient_scope",
		                         "the backchannel needs a client-credentials token");
		return;
	}
	if (strcmp(req->method, "GET") == 0) {
		hint = req->rest + strlen("/oauth2/v2/bc-authorize/");
		bc = find_bc(sb, a.client_id, hint);
		if (!bc)
			enr_sandbox__oauth_error(resp, 404, "not_found",
			                         "no backchannel request for this loginHint");
		else
			bc_answer(resp, bc_answers[bc_status(sb, bc)], hint);
		return;
	}
	body = enr_sandbox__body_json(req);
	if (body && json_object_object_get_ex(body, "loginHint", &v) &&
	    json_object_is_type(v, json_type_string))
		hint = json_object_get_string(v);
	if (!email_ok(hint)) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request",
		                         "loginHint must be the owner's e-mail address");
		json_object_put(body);
		return;
	}
	bc = find_bc(sb, a.client_id, hint);
	/* An owner who consented already: SMA refuses a second request. */
	if (bc && bc_status(sb, bc) == BC_ACCEPTED &&
	    !enr_sandbox__account_revoked(sb, SB_SMA, bc->hint, 0)) {
		enr_sandbox__answer(resp, SB_SMA, "bc-already-consented");
		json_object_put(body);
		return;
	}
	if (!bc) {
		bc = calloc(1, sizeof(*bc) + strlen(hint) + 1);
		if (!bc) {
			enr_sandbox__nomem(resp);
			json_object_put(body);
			return;
		}
		strcpy(bc->hint, hint);
		snprintf(bc->client_id, sizeof(bc->client_id), "%s", a.client_id);
		enr_sandbox__ring_put(&sb->bc, bc);
	}
	/* Asking again sends the owner a new e-mail. */
	bc->status = BC_PENDING;
	bc->created_ms = enr_sandbox__now_ms();
	bc_answer(resp, "bc-start", hint);
	json_object_put(body);
}

int enr_sandbox_sma_decide(struct enr_sandbox *sb, const char *login_hint, bool accept)
{
	struct bc *bc;
	int rc = 0;

	if (!login_hint)
		return enr_error_set(ENR_E_USAGE, "no login hint");
	pthread_mutex_lock(&sb->lock);
	bc = find_bc(sb, NULL, login_hint);
	if (bc)
		bc->status = accept ? BC_ACCEPTED : BC_DECLINED;
	else
		rc = enr_error_set(ENR_E_NOTFOUND, "no backchannel request for %s", login_hint);
	pthread_mutex_unlock(&sb->lock);
	return rc;
}

void enr_sandbox__sma(struct sb_req *req, struct sb_resp *resp)
{
	if (is(req, "GET", "/oauth2/auth"))
		authorize(req, resp, true, false);
	else if (is(req, "POST", "/oauth2/token"))
		sma_token(req, resp);
	else if (is(req, "GET", "/v1/plants"))
		sma_plants(req, resp);
	else if (is(req, "POST", "/oauth2/v2/bc-authorize") ||
	         (strcmp(req->method, "GET") == 0 &&
	          strncmp(req->rest, "/oauth2/v2/bc-authorize/", 24) == 0 && req->rest[24]))
		sma_bc(req, resp);
	else
		enr_sandbox__not_found(resp);
}

/* ---- Enphase ---- */

static void enphase_token(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *grant = enr_sandbox__query(req, "grant_type");
	char *client_id = NULL, *secret = NULL, uid[64];
	struct sb_tokens t = {0};
	struct sb_access a;
	json_object *obj = NULL;
	bool ok = false;

	if (!enr_sandbox__basic(req, &client_id, &secret) ||
	    !enr_sandbox__client_ok(sb, SB_ENPHASE, client_id, secret)) {
		invalid_client(resp);
		goto out;
	}
	if (!grant) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request",
		                         enr_sandbox__form(req, "grant_type")
		                             ? "Enphase takes the token parameters in the query "
		                               "string, not the body"
		                             : "grant_type is missing");
		goto out;
	}
	if (strcmp(grant, "authorization_code") == 0)
		ok = enr_sandbox__exchange(sb, resp, &t, SB_ENPHASE, client_id,
		                           enr_sandbox__query(req, "code"),
		                           enr_sandbox__query(req, "redirect_uri"), NULL);
	else if (strcmp(grant, "refresh_token") == 0)
		ok = enr_sandbox__refresh(sb, resp, &t, SB_ENPHASE, client_id,
		                          enr_sandbox__query(req, "refresh_token"));
	else
		enr_sandbox__oauth_error(resp, 400, "unsupported_grant_type",
		                         "grant_type must be authorization_code or refresh_token");
	if (!ok)
		goto out;
	enr_sandbox__check_access(sb, t.access, SB_ENPHASE, &a);
	enr_sandbox__account_uid(uid, sizeof(uid), SB_ENPHASE, a.account);
	/* The recorded answer (answers/enphase/token.json) with this grant's values. */
	if (enr_answers__body(&obj, "enphase", "token") < 0) {
		enr_sandbox__oauth_error(resp, 500, "sandbox_error", enr_error_last());
		goto out;
	}
	enr_answers__set(obj, "access_token", json_object_new_string(t.access));
	if (t.refresh)
		enr_answers__set(obj, "refresh_token", json_object_new_string(t.refresh));
	else
		json_object_object_del(obj, "refresh_token");
	enr_answers__set(obj, "expires_in", json_object_new_int64(t.expires_in));
	enr_answers__set(obj, "enl_uid", json_object_new_string(uid));
	enr_answers__set(obj, "enl_cid", json_object_new_string(client_id));
	enr_sandbox__answer_json(resp, SB_ENPHASE, "token", obj);
out:
	enr_sandbox__tokens_done(&t);
	free(client_id);
	enr_util_free_secret(secret);
}

static void enphase_code_page(struct sb_req *req, struct sb_resp *resp)
{
	const char *code = enr_sandbox__query(req, "code");
	const char *error = enr_sandbox__query(req, "error");
	char *html, *e_code;

	if (!code) {
		enr_sandbox__html(resp, error ? 200 : 400,
		                  enr_sandbox__page("Authorization not given",
		                                    error ? error : "No authorization code.",
		                                    NULL));
		return;
	}
	e_code = enr_sandbox__html_escape(code);
	html = e_code ? enr_util_printf(
	                    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	                    "<meta name=\"viewport\" content=\"width=device-width,"
	                    "initial-scale=1\"><title>Enphase authorization code</title>"
	                    "<style>body{font-family:system-ui,sans-serif;max-width:32em;"
	                    "margin:1.5em auto;padding:0 1em;font-size:1.15em}"
	                    ".code{font-family:monospace;font-size:1.6em;word-break:break-all;"
	                    "background:#eee;padding:.4em}</style></head><body>"
	                    "<h1>Authorization code</h1><p>Give this code to your installer:</p>"
	                    "<p class=\"code\" id=\"code\">%s</p></body></html>\n",
	                    e_code)
	              : NULL;
	free(e_code);
	enr_sandbox__html(resp, 200, html);
}

/* A recorded 401 of the systems list (answers/enphase/), its details replaced when given. */
static void enphase_error(struct sb_resp *resp, const char *recording, const char *details)
{
	json_object *obj = NULL;

	if (enr_answers__body(&obj, "enphase", recording) == 0 && details)
		enr_answers__set(obj, "details", json_object_new_string(details));
	enr_sandbox__answer_json(resp, SB_ENPHASE, recording, obj);
}

static void enphase_systems(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *key = enr_sandbox__query(req, "key");
	struct sb_site sites[SB_MAX_SITES];
	struct enr_answers_site list[SB_MAX_SITES];
	enum sb_token_state state;
	struct sb_access a;
	json_object *obj = NULL;
	size_t n;

	state = enr_sandbox__check_access(sb, enr_sandbox__bearer(req), SB_ENPHASE, &a);
	if (state == SB_TOKEN_EXPIRED) {
		enphase_error(resp, "token-expired", NULL);
		return;
	}
	if (state != SB_TOKEN_OK) {
		enphase_error(resp, "not-authorized", NULL);
		return;
	}
	if (!key) {
		enphase_error(resp, "not-authorized", "API key is missing");
		return;
	}
	if (strcmp(key, sb->enphase_api_key) != 0 ||
	    strcmp(a.client_id, sb->clients[SB_ENPHASE].id)) {
		enphase_error(resp, "key-client-mismatch", NULL);
		return;
	}
	n = enr_sandbox__sites(sb, SB_ENPHASE, a.account, sites);
	for (size_t i = 0; i < n; i++)
		list[i] = (struct enr_answers_site){sites[i].id, sites[i].name};
	if (enr_answers__sites(&obj, "enphase", "systems", list, n) < 0) {
		enr_sandbox__oauth_error(resp, 500, "sandbox_error", enr_error_last());
		return;
	}
	enr_answers__set(obj, "total", json_object_new_int64((long long)n));
	enr_sandbox__answer_json(resp, SB_ENPHASE, "systems", obj);
}

void enr_sandbox__enphase(struct sb_req *req, struct sb_resp *resp)
{
	if (is(req, "GET", "/oauth/authorize"))
		authorize(req, resp, false, false);
	else if (is(req, "POST", "/oauth/token"))
		enphase_token(req, resp);
	else if (is(req, "GET", "/oauth/redirect_uri"))
		enphase_code_page(req, resp);
	else if (is(req, "GET", "/api/v4/systems"))
		enphase_systems(req, resp);
	else
		enr_sandbox__not_found(resp);
}

/* ---- SolarEdge ---- */

bool enr_sandbox__solaredge_key_ok(const struct enr_sandbox *sb, const char *key)
{
	size_t len = key ? strlen(key) : 0;

	if (len < 8 || len > 100 ||
	    strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                "0123456789_-") != len ||
	    strncmp(key, "invalid", 7) == 0)
		return false;
	return !enr_sandbox__account_revoked(sb, SB_SOLAREDGE, key, 0);
}

/* The per-key, per-minute limit of v2: counts this key's calls in its window
 * and reports what is left in the headers SolarEdge sends. False when spent. */
static bool solaredge_take(struct enr_sandbox *sb, struct sb_resp *resp, const char *key)
{
	uint64_t h = enr_sandbox__hash(key);
	long long now = enr_sandbox__now_ms();
	struct sb_window *w = NULL, *oldest = &sb->solaredge_windows[0];
	json_object *rec = NULL;
	const char *recorded;
	long limit = sb->solaredge_minute_limit;
	char num[24];

	if (!limit && enr_answers__get(&rec, "solaredge", "sites") == 0 &&
	    (recorded =
	         json_object_get_string(enr_util_json_at(rec, "headers.x-ratelimit-limit-minute"))))
		limit = atol(recorded);
	if (limit <= 0)
		limit = 100;
	for (size_t i = 0; i < ENR_ARRAY_SIZE(sb->solaredge_windows); i++) {
		struct sb_window *c = &sb->solaredge_windows[i];
		if (c->key == h && c->used) {
			w = c;
			break;
		}
		if (c->start_ms < oldest->start_ms)
			oldest = c;
	}
	if (!w || now - w->start_ms >= 60000) {
		w = w ? w : oldest;
		w->key = h;
		w->start_ms = now;
		w->used = 0;
	}
	snprintf(num, sizeof(num), "%ld", limit);
	enr_sandbox__set_header(resp, "x-ratelimit-limit-minute", num);
	if (w->used >= limit) {
		snprintf(num, sizeof(num), "0");
		enr_sandbox__set_header(resp, "x-ratelimit-remaining-minute", num);
		resp->retry_after = (60000 - (now - w->start_ms)) / 1000 + 1;
		return false;
	}
	w->used++;
	snprintf(num, sizeof(num), "%ld", limit - w->used);
	enr_sandbox__set_header(resp, "x-ratelimit-remaining-minute", num);
	return true;
}

/* GET /v2/sites, in the shape of the live capture (answers/solaredge/sites.json). */
void enr_sandbox__solaredge(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *key = enr_sandbox__header(req, "X-API-Key");
	const char *account_key = enr_sandbox__header(req, "X-Account-Key");
	struct sb_site sites[SB_MAX_SITES];
	struct enr_answers_site list[SB_MAX_SITES];
	json_object *body = NULL;
	size_t n;

	if (strncmp(req->rest, "/v2/", 4) != 0) {
		enr_sandbox__answer(resp, SB_SOLAREDGE, "v1-retired");
		return;
	}
	if (!is(req, "GET", "/v2/sites")) {
		enr_sandbox__not_found(resp);
		return;
	}
	/* The company's Fleet key works only with its account key. */
	if (!key || !enr_sandbox__solaredge_key_ok(sb, key) ||
	    (strcmp(key, sb->solaredge_company_key) == 0 &&
	     (!account_key || strcmp(account_key, sb->solaredge_account_key) != 0))) {
		enr_sandbox__answer(resp, SB_SOLAREDGE, "invalid-key");
		return;
	}
	if (!solaredge_take(sb, resp, key)) {
		enr_sandbox__answer(resp, SB_SOLAREDGE, "rate-limited");
		return;
	}
	n = enr_sandbox__sites(sb, SB_SOLAREDGE, key, sites);
	for (size_t i = 0; i < n; i++)
		list[i] = (struct enr_answers_site){sites[i].id, sites[i].name};
	if (enr_answers__sites(&body, "solaredge", "sites", list, n) < 0) {
		enr_sandbox__oauth_error(resp, 500, "sandbox_error", enr_error_last());
		return;
	}
	enr_sandbox__answer_json(resp, SB_SOLAREDGE, "sites", body);
}

/* ---- Solis ---- */

bool enr_sandbox__solis_key_ok(const struct enr_sandbox *sb, const char *key_id)
{
	return key_id && strncmp(key_id, "demo-", 5) == 0 && strlen(key_id) > 5 &&
	       strlen(key_id) <= 100 && !enr_sandbox__account_revoked(sb, SB_SOLIS, key_id, 0);
}

void enr_sandbox__solis(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	struct enr_solis_request sreq = {
	    .authorization = enr_sandbox__header(req, MHD_HTTP_HEADER_AUTHORIZATION),
	    .content_md5 = enr_sandbox__header(req, "Content-MD5"),
	    .content_type = enr_sandbox__header(req, MHD_HTTP_HEADER_CONTENT_TYPE),
	    .date = enr_sandbox__header(req, MHD_HTTP_HEADER_DATE),
	    .path = req->rest,
	    .body = req->body,
	    .body_len = req->body_len,
	};
	struct sb_site sites[SB_MAX_SITES];
	struct enr_answers_site list[SB_MAX_SITES];
	char *key_id = NULL;
	json_object *body = NULL;
	int status = 403;
	size_t n;

	if (strcmp(req->rest, "/v1/api/userStationList") != 0) {
		enr_sandbox__not_found(resp);
		return;
	}
	if (strcmp(req->method, "POST") != 0) {
		method_not_allowed(resp);
		return;
	}
	if (enr_solis_key_id(&key_id, sreq.authorization) < 0 ||
	    !enr_sandbox__solis_key_ok(sb, key_id) ||
	    enr_solis_verify(&status, &sreq, sb->solis_secret, (long long)time(NULL)) < 0) {
		/* The recorded refusals (answers/solis/). */
		enr_sandbox__answer(resp, SB_SOLIS,
		                    status == 408   ? "clock-off"
		                    : status == 400 ? "bad-md5"
		                                    : "wrong-key");
		free(key_id);
		return;
	}
	if (strncmp(key_id, "demo-noapi-", 11) == 0) {
		enr_sandbox__answer(resp, SB_SOLIS, "no-authority");
		free(key_id);
		return;
	}
	n = enr_sandbox__sites(sb, SB_SOLIS, key_id, sites);
	free(key_id);
	for (size_t i = 0; i < n; i++)
		list[i] = (struct enr_answers_site){sites[i].id, sites[i].name};
	if (enr_answers__sites(&body, "solis", "userStationList", list, n) < 0) {
		enr_sandbox__oauth_error(resp, 500, "sandbox_error", enr_error_last());
		return;
	}
	enr_sandbox__answer_json(resp, SB_SOLIS, "userStationList", body);
}
