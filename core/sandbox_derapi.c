/* The sandbox's Derapi: client-credentials token, Join sessions, Join flows,
 * enrollments and the site list with X-Authorization-<vendor> headers.
 * Called with the lock held. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "answers.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/vendor.h"
#include "sandbox_internal.h"
#include "util.h"

/* The vendors Derapi Join enrolls. */
static const int join_vendors[] = {SB_TESLA,     SB_SMA,   SB_ENPHASE,
                                   SB_SOLAREDGE, SB_SOLIS, SB_ENPHASEVPP};
#define ALL_JOIN_VENDORS                                                                           \
	(1u << SB_TESLA | 1u << SB_SMA | 1u << SB_ENPHASE | 1u << SB_SOLAREDGE | 1u << SB_SOLIS |  \
	 1u << SB_ENPHASEVPP)

struct flow {
	unsigned vendors; /* bit per enum sb_vendor */
	char id[32];
	char program_id[64];
	char redirect_uri[];
};

enum session_state { SESSION_PENDING, SESSION_DONE, SESSION_DECLINED };

struct session {
	char id[40];
	unsigned vendors;
	enum session_state state;
	int vendor;
	long expires_in;
	char site_id[32];
	char *access, *refresh, *api_key, *key_id;
};

struct enrollment {
	char id[40];
	char flow_id[32];
	char program_id[64];
	int vendor;
	char account[];
};

void enr_sandbox__flow_free(void *p)
{
	free(p);
}

void enr_sandbox__session_free(void *p)
{
	struct session *s = p;

	if (!s)
		return;
	enr_util_free_secret(s->access);
	enr_util_free_secret(s->refresh);
	enr_util_free_secret(s->api_key);
	free(s->key_id);
	free(s);
}

void enr_sandbox__enrollment_free(void *p)
{
	free(p);
}

static void add_str(json_object *obj, const char *key, const char *value)
{
	json_object_object_add(obj, key, json_object_new_string(value));
}

static bool join_vendor(int v)
{
	return v >= 0 && (ALL_JOIN_VENDORS & 1u << v);
}

/* The vendors whose Join Flows name the company's stored app credentials. */
static bool needs_stored_credentials(int v)
{
	return v == SB_TESLA || v == SB_SMA || v == SB_ENPHASE;
}

void enr_sandbox__credentials_id(const struct enr_sandbox *sb, int vendor, char *out, size_t size)
{
	char label[64], hex[17];

	snprintf(label, sizeof(label), "derapi.credentials_id.%s", enr_sandbox__vendor_id(vendor));
	enr_sandbox__derive_hex(sb, hex, label, 8);
	snprintf(out, size, "cred_%s", hex);
}

/* ---- lookups ---- */

/* The flow with that id; the configured flow is always there. `preset` is
 * storage for it. */
static const struct flow *find_flow(const struct enr_sandbox *sb, const char *id,
                                    struct flow **preset)
{
	*preset = NULL;
	if (strcmp(id, sb->flow_id) == 0) {
		char *uri = enr_util_printf("%s/relay/callback", sb->url);
		struct flow *f = uri ? calloc(1, sizeof(*f) + strlen(uri) + 1) : NULL;
		if (f) {
			f->vendors = ALL_JOIN_VENDORS;
			snprintf(f->id, sizeof(f->id), "%s", sb->flow_id);
			snprintf(f->program_id, sizeof(f->program_id), "%s", sb->program_id);
			strcpy(f->redirect_uri, uri);
		}
		free(uri);
		*preset = f;
		return f;
	}
	for (size_t i = 0; i < sb->flows.cap; i++) {
		const struct flow *f = sb->flows.items[i];
		if (f && strcmp(f->id, id) == 0)
			return f;
	}
	return NULL;
}

static struct session *find_session(const struct enr_sandbox *sb, const char *id)
{
	for (size_t i = 0; i < sb->sessions.cap; i++) {
		struct session *s = sb->sessions.items[i];
		if (s && strcmp(s->id, id) == 0)
			return s;
	}
	return NULL;
}

static const struct enrollment *find_enrollment(const struct enr_sandbox *sb, const char *id)
{
	for (size_t i = 0; i < sb->enrollments.cap; i++) {
		const struct enrollment *e = sb->enrollments.items[i];
		if (e && strcmp(e->id, id) == 0)
			return e;
	}
	return NULL;
}

/* ---- the app's authentication ---- */

static bool authorized(struct sb_req *req, struct sb_resp *resp)
{
	const struct enr_vendor *v = enr_catalog_find(req->sb->catalog, "derapi");
	const char *version = enr_sandbox__header(req, "api-version");
	const char *expected = v && v->api_version ? v->api_version : "v2024-09-01";
	struct sb_access a;
	enum sb_token_state state;

	state = enr_sandbox__check_access(req->sb, enr_sandbox__bearer(req), SB_DERAPI, &a);
	if (state != SB_TOKEN_OK) {
		enr_sandbox__oauth_error(resp, 401, "unauthorized",
		                         state == SB_TOKEN_EXPIRED
		                             ? "the Derapi token expired"
		                             : "a valid Derapi token is needed");
		resp->www_authenticate = "Bearer";
		return false;
	}
	if (!version || strcmp(version, expected) != 0) {
		char text[128];
		snprintf(text, sizeof(text), "the api-version header must be %s", expected);
		enr_sandbox__oauth_error(resp, 400, "invalid_api_version", text);
		return false;
	}
	return true;
}

static void token(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *grant = enr_sandbox__form(req, "grant_type");
	char *id = NULL, *secret = NULL;
	struct sb_grant g = {.vendor = SB_DERAPI, .scope = ""};
	struct sb_tokens t;
	json_object *obj;

	if (!enr_sandbox__basic(req, &id, &secret) ||
	    !enr_sandbox__client_ok(sb, SB_DERAPI, id, secret)) {
		enr_sandbox__oauth_error(resp, 401, "invalid_client",
		                         "client authentication failed: wrong client_id or "
		                         "client_secret");
	} else if (!grant || strcmp(grant, "client_credentials") != 0) {
		enr_sandbox__oauth_error(resp, 400, "unsupported_grant_type",
		                         "grant_type must be client_credentials");
	} else {
		g.client_id = id;
		if (enr_sandbox__issue(sb, &t, &g) < 0) {
			enr_sandbox__nomem(resp);
		} else {
			obj = json_object_new_object();
			add_str(obj, "access_token", t.access);
			add_str(obj, "token_type", "Bearer");
			json_object_object_add(obj, "expires_in",
			                       json_object_new_int64(t.expires_in));
			enr_sandbox__tokens_done(&t);
			enr_sandbox__json(resp, 200, obj);
		}
	}
	free(id);
	enr_util_free_secret(secret);
}

/* ---- Join sessions ---- */

static const char *json_str(json_object *obj, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string)
	           ? json_object_get_string(v)
	           : NULL;
}

static bool same(const char *a, const char *b)
{
	return a && b && strlen(a) == strlen(b) && CRYPTO_memcmp(a, b, strlen(a)) == 0;
}

/* Checks one entry of the session's vendors; NULL or the problem. */
static const char *session_vendor(const struct enr_sandbox *sb, json_object *entry, int *vendor)
{
	json_object *creds;
	const char *id, *secret;

	*vendor = enr_sandbox__vendor_from_id(json_str(entry, "vendor"));
	if (!join_vendor(*vendor))
		return "each vendor must be one of tesla, sma, enphase, solaredge, solis, "
		       "enphasevpp";
	if (*vendor != SB_TESLA && *vendor != SB_SMA && *vendor != SB_ENPHASE)
		return NULL;
	if (!json_object_object_get_ex(entry, "credentials", &creds))
		return "tesla, sma and enphase need credentials";
	if (json_str(creds, "credentialsID"))
		return NULL;
	id = json_str(creds, "clientID");
	secret = json_str(creds, "clientSecret");
	if (!id || !secret || !enr_sandbox__client_ok(sb, *vendor, id, secret))
		return "the clientID or clientSecret is not the vendor app's";
	if (*vendor == SB_ENPHASE && !same(json_str(creds, "apiKey"), sb->enphase_api_key))
		return "the Enphase apiKey is not the app's";
	return NULL;
}

static void session_start(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	json_object *body = enr_sandbox__body_json(req), *vendors = NULL, *obj;
	struct session *s = NULL;
	unsigned mask = 0;
	char *id = NULL, text[160];

	if (!body || !json_object_object_get_ex(body, "vendors", &vendors) ||
	    !json_object_is_type(vendors, json_type_array) || !json_object_array_length(vendors)) {
		enr_sandbox__oauth_error(
		    resp, 400, "invalid_request",
		    "the body must be JSON with a non-empty \"vendors\" array");
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(vendors); i++) {
		int v;
		const char *problem = session_vendor(sb, json_object_array_get_idx(vendors, i), &v);
		if (problem) {
			snprintf(text, sizeof(text), "vendors[%zu]: %s", i, problem);
			enr_sandbox__oauth_error(resp, 400, "invalid_request", text);
			goto out;
		}
		mask |= 1u << v;
	}
	s = calloc(1, sizeof(*s));
	id = enr_util_random_token(16);
	if (!s || !id) {
		free(s);
		enr_sandbox__nomem(resp);
		goto out;
	}
	snprintf(s->id, sizeof(s->id), "sess_%s", id);
	s->vendors = mask;
	s->vendor = -1;
	enr_sandbox__ring_put(&sb->sessions, s);
	if (enr_answers__body(&obj, "derapi", "session-start") == 0)
		enr_answers__set(obj, "sessionID", json_object_new_string(s->id));
	enr_sandbox__answer_json(resp, SB_DERAPI, "session-start", obj);
out:
	free(id);
	json_object_put(body);
}

/* The widget's bare array of {id, name, base64Logo, oAuthEndpoint}: key
 * vendors (SolarEdge, Solis) come without oAuthEndpoint. */
static void session_vendors(struct sb_req *req, struct sb_resp *resp, const struct session *s)
{
	struct enr_answers_site list[ENR_ARRAY_SIZE(join_vendors)];
	int vendors[ENR_ARRAY_SIZE(join_vendors)];
	json_object *body = NULL;
	size_t n = 0;

	for (size_t i = 0; i < ENR_ARRAY_SIZE(join_vendors); i++) {
		if (!(s->vendors & 1u << join_vendors[i]))
			continue;
		vendors[n] = join_vendors[i];
		list[n].id = enr_sandbox__vendor_id(join_vendors[i]);
		list[n++].name = enr_sandbox__vendor_name(join_vendors[i]);
	}
	if (enr_answers__sites(&body, "derapi", "vendors", list, n) < 0) {
		enr_sandbox__oauth_error(resp, 500, "sandbox_error", enr_error_last());
		return;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(body, i);
		char *url = NULL;
		if (vendors[i] == SB_SOLAREDGE || vendors[i] == SB_SOLIS) {
			json_object_object_del(e, "oAuthEndpoint");
			continue;
		}
		url = enr_util_printf("%s/derapi/join/session/%s/authorize?vendor=%s", req->sb->url,
		                      s->id, list[i].id);
		if (url)
			enr_answers__set(e, "oAuthEndpoint", json_object_new_string(url));
		free(url);
	}
	enr_sandbox__answer_json(resp, SB_DERAPI, "vendors", body);
}

/* Sets `key` of a copied recording to `value`, or drops it when `value` is NULL. */
static void set_or_drop(json_object *obj, const char *key, const char *value)
{
	if (value)
		enr_answers__set(obj, key, json_object_new_string(value));
	else
		json_object_object_del(obj, key);
}

static void fetch_token(struct sb_resp *resp, const struct session *s)
{
	const char *name = s->vendor == SB_ENPHASEVPP ? "fetch-token-enphasevpp"
	                   : s->access                ? "fetch-token"
	                                              : "fetch-token-keys";
	json_object *obj = NULL;
	char expires[32];

	if (s->state == SESSION_PENDING) {
		enr_sandbox__text(resp, 204, NULL, "");
		return;
	}
	if (s->state == SESSION_DECLINED) {
		enr_sandbox__oauth_error(resp, 400, "access_denied",
		                         "The resource owner denied the request");
		return;
	}
	if (enr_answers__body(&obj, "derapi", name) == 0) {
		snprintf(expires, sizeof(expires), "%ld", s->expires_in);
		enr_answers__set(obj, "vendor",
		                 json_object_new_string(enr_sandbox__vendor_id(s->vendor)));
		if (s->access) {
			enr_answers__set(obj, "access_token", json_object_new_string(s->access));
			enr_answers__set(obj, "accessToken", json_object_new_string(s->access));
			enr_answers__set(obj, "refreshToken",
			                 json_object_new_string(s->refresh ? s->refresh : ""));
			enr_answers__set(obj, "expiresIn", json_object_new_string(expires));
			enr_answers__set(obj, "siteID", json_object_new_string(s->site_id));
		} else {
			bool solis = s->vendor == SB_SOLIS;
			set_or_drop(obj, "keyID", solis ? s->key_id : NULL);
			set_or_drop(obj, "keySecret", solis ? s->api_key : NULL);
			set_or_drop(obj, "apiKey", solis ? NULL : s->api_key);
		}
	}
	enr_sandbox__answer_json(resp, SB_DERAPI, name, obj);
}

/* GET /join/{vendor}/auth-granted?state={session}&code={keyId}:{secret}: the
 * customer's keys for a key vendor, without any auth header (as the widget). */
static void auth_granted(struct sb_req *req, struct sb_resp *resp, const char *vendor_id)
{
	struct enr_sandbox *sb = req->sb;
	const char *state = enr_sandbox__query(req, "state");
	const char *code = enr_sandbox__query(req, "code");
	int vendor = enr_sandbox__vendor_from_id(vendor_id);
	struct session *s = state ? find_session(sb, state) : NULL;
	const char *colon = code ? strchr(code, ':') : NULL;
	char *key_id = colon ? strndup(code, (size_t)(colon - code)) : NULL;
	bool ok = false;

	if (s && s->state == SESSION_PENDING && key_id && (s->vendors & 1u << vendor)) {
		if (vendor == SB_SOLIS)
			ok = enr_sandbox__solis_key_ok(sb, key_id) &&
			     same(colon + 1, sb->solis_secret);
		else if (vendor == SB_SOLAREDGE)
			ok = !colon[1] && enr_sandbox__solaredge_key_ok(sb, key_id);
	}
	if (ok) {
		s->vendor = vendor;
		s->state = SESSION_DONE;
		if (vendor == SB_SOLIS) {
			s->key_id = key_id;
			s->api_key = strdup(colon + 1);
		} else {
			s->api_key = key_id;
		}
		key_id = NULL;
	}
	enr_sandbox__answer(resp, SB_DERAPI, ok ? "auth-granted-ok" : "auth-granted-failed");
	enr_util_free_secret(key_id);
}

/* The credentials Derapi obtains when a customer approves `vendor` as `account`. */
static bool session_credentials(struct enr_sandbox *sb, struct session *s, int vendor,
                                const char *account)
{
	static const char *const scopes[SB_N_VENDORS] = {
	    [SB_TESLA] = "openid offline_access energy_device_data",
	    [SB_SMA] = "offline_access",
	    [SB_ENPHASE] = "read write",
	    [SB_ENPHASEVPP] = "",
	};
	struct sb_site sites[SB_MAX_SITES];
	struct sb_grant g = {0};
	struct sb_tokens t;
	char hex[65], label[160];

	s->vendor = vendor;
	snprintf(label, sizeof(label), "join.%s:%s", enr_sandbox__vendor_id(vendor), account);
	if (vendor == SB_SOLAREDGE) {
		enr_sandbox__derive_hex(sb, hex, label, 14);
		for (char *p = hex; *p; p++)
			if (*p >= 'a' && *p <= 'f')
				*p = (char)(*p - 'a' + 'A');
		s->api_key = enr_util_printf("JOIN%s", hex);
		return s->api_key != NULL;
	}
	if (vendor == SB_SOLIS) {
		enr_sandbox__derive_hex(sb, hex, label, 8);
		s->key_id =
		    enr_util_printf("demo-%013llu", strtoull(hex, NULL, 16) % 10000000000000ULL);
		s->api_key = strdup(sb->solis_secret);
		return s->key_id && s->api_key;
	}
	g.vendor = vendor;
	g.client_id = vendor == SB_ENPHASEVPP ? sb->clients[SB_DERAPI].id : sb->clients[vendor].id;
	g.account = account;
	g.scope = scopes[vendor];
	g.refresh = vendor != SB_ENPHASEVPP;
	g.id_token = vendor == SB_TESLA;
	g.refresh_ttl = enr_sandbox__refresh_ttl(sb, vendor);
	if (enr_sandbox__issue(sb, &t, &g) < 0)
		return false;
	s->access = t.access;
	s->refresh = t.refresh;
	s->expires_in = t.expires_in;
	t.access = t.refresh = NULL;
	enr_sandbox__tokens_done(&t);
	if (enr_sandbox__sites(sb, vendor, account, sites) > 0)
		snprintf(s->site_id, sizeof(s->site_id), "%s", sites[0].id);
	return true;
}

/* GET /join/session/{id}/authorize?vendor= and /join/flows/{id}/authorize?vendor=&state= */
static void join_authorize(struct sb_req *req, struct sb_resp *resp, enum sb_auth_kind kind,
                           const char *target, unsigned vendors, const char *redirect_uri)
{
	const char *vendor_id = enr_sandbox__query(req, "vendor");
	const char *state = enr_sandbox__query(req, "state");
	int vendor = enr_sandbox__vendor_from_id(vendor_id);
	struct sb_pending *p;

	if (!join_vendor(vendor) || !(vendors & 1u << vendor)) {
		if (kind == SB_AUTH_FLOW)
			enr_sandbox__redirect(
			    resp, enr_sandbox__add_query(
			              redirect_uri, "error", "invalid_request", "error_description",
			              "vendor is missing or not part of this flow", "state", state,
			              NULL));
		else
			enr_sandbox__html(
			    resp, 400,
			    enr_sandbox__page("Unknown vendor",
			                      "This vendor is not part of the session.", NULL));
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		enr_sandbox__nomem(resp);
		return;
	}
	p->kind = kind;
	p->vendor = vendor;
	p->target = strdup(target);
	p->redirect_uri = redirect_uri ? strdup(redirect_uri) : NULL;
	p->state = state ? strdup(state) : NULL;
	if (!p->target || (redirect_uri && !p->redirect_uri) || (state && !p->state)) {
		enr_sandbox__pending_free(p);
		enr_sandbox__nomem(resp);
		return;
	}
	enr_sandbox__consent(req, resp, p);
}

void enr_sandbox__derapi_complete(struct enr_sandbox *sb, struct sb_resp *resp,
                                  const struct sb_pending *p, bool approve, const char *account)
{
	char *name = NULL, *id = NULL;
	struct enrollment *e = NULL;
	struct flow *preset = NULL;
	const struct flow *f;
	struct session *s;

	name = !approve ? NULL : account ? strdup(account) : enr_sandbox__new_account(sb);
	if (approve && !name) {
		enr_sandbox__nomem(resp);
		return;
	}
	if (p->kind == SB_AUTH_SESSION) {
		s = find_session(sb, p->target);
		if (!s || s->state != SESSION_PENDING) {
			enr_sandbox__html(resp, 400,
			                  enr_sandbox__page("Session over",
			                                    "This Join session is over or unknown.",
			                                    NULL));
		} else if (!approve) {
			s->state = SESSION_DECLINED;
			enr_sandbox__html(
			    resp, 200,
			    enr_sandbox__page("Declined",
			                      "You declined: you can close this window.", NULL));
		} else if (!session_credentials(sb, s, p->vendor, name)) {
			enr_sandbox__nomem(resp);
		} else {
			s->state = SESSION_DONE;
			enr_sandbox__html(resp, 200,
			                  enr_sandbox__page("Done",
			                                    "Thank you: you can close this window.",
			                                    NULL));
		}
		free(name);
		return;
	}
	f = find_flow(sb, p->target, &preset);
	if (!f) {
		enr_sandbox__html(
		    resp, 400,
		    enr_sandbox__page("Flow gone", "This Join flow no longer exists.", NULL));
	} else if (!approve) {
		enr_sandbox__redirect(
		    resp, enr_sandbox__add_query(
		              f->redirect_uri, "error", "access_denied", "error_description",
		              "The resource owner denied the request", "state", p->state, NULL));
	} else {
		e = calloc(1, sizeof(*e) + strlen(name) + 1);
		id = enr_util_random_token(12);
		if (!e || !id) {
			free(e);
			enr_sandbox__nomem(resp);
		} else {
			snprintf(e->id, sizeof(e->id), "enr_%s", id);
			snprintf(e->flow_id, sizeof(e->flow_id), "%s", f->id);
			snprintf(e->program_id, sizeof(e->program_id), "%s", f->program_id);
			e->vendor = p->vendor;
			strcpy(e->account, name);
			enr_sandbox__redirect(
			    resp, enr_sandbox__add_query(f->redirect_uri, "state", p->state,
			                                 "enrollmentID",
			                                 f->program_id[0] ? e->id : NULL, NULL));
			enr_sandbox__ring_put(&sb->enrollments, e);
		}
	}
	free(preset);
	free(id);
	free(name);
}

/* ---- Join flows ---- */

/* A flow as Derapi answers it: the recording (join-flow), refilled. NULL when
 * the recording cannot be read. */
static json_object *flow_json(const struct enr_sandbox *sb, const struct flow *f)
{
	json_object *body = NULL, *list, *template = NULL;

	if (enr_answers__body(&body, "derapi", "join-flow") < 0)
		return NULL;
	list = enr_util_json_at(body, "vendors");
	if (!json_object_is_type(list, json_type_array) || !json_object_array_length(list) ||
	    json_object_deep_copy(json_object_array_get_idx(list, 0), &template, NULL) < 0) {
		json_object_put(body);
		return NULL;
	}
	enr_answers__set(body, "id", json_object_new_string(f->id));
	enr_answers__set(body, "redirectURI", json_object_new_string(f->redirect_uri));
	if (f->program_id[0])
		enr_answers__set(body, "programID", json_object_new_string(f->program_id));
	else
		json_object_object_del(body, "programID");
	json_object_array_del_idx(list, 0, json_object_array_length(list));
	for (size_t i = 0; i < ENR_ARRAY_SIZE(join_vendors); i++) {
		int v = join_vendors[i];
		json_object *entry = NULL;
		char creds[40];
		if (!(f->vendors & 1u << v) || json_object_deep_copy(template, &entry, NULL) < 0)
			continue;
		enr_answers__set(entry, "vendor",
		                 json_object_new_string(enr_sandbox__vendor_id(v)));
		enr_sandbox__credentials_id(sb, v, creds, sizeof(creds));
		if (!needs_stored_credentials(v) ||
		    !enr_answers__set(entry, "credentialsID", json_object_new_string(creds)))
			json_object_object_del(entry, "credentialsID");
		json_object_array_add(list, entry);
	}
	json_object_put(template);
	return body;
}

/* 200/201 with the flow, or 500 when the recording is missing. */
static void send_flow(struct sb_resp *resp, int status, const struct enr_sandbox *sb,
                      const struct flow *f)
{
	json_object *obj = flow_json(sb, f);

	if (obj)
		enr_sandbox__json(resp, status, obj);
	else
		enr_sandbox__oauth_error(resp, 500, "server_error",
		                         "recorded answer derapi/join-flow");
}

static void flow_create(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	json_object *body = enr_sandbox__body_json(req), *vendors;
	const char *uri = json_str(body, "redirectURI");
	const char *program = json_str(body, "programID");
	unsigned mask = 0;
	struct flow *f;
	char *id = NULL;

	if (!uri || (strncmp(uri, "https://", 8) != 0 && strncmp(uri, "http://", 7) != 0) ||
	    strlen(uri) > 400 || strchr(uri, '#') || (program && strlen(program) > 60)) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request",
		                         "redirectURI must be an absolute http(s) URL without a "
		                         "fragment");
		goto out;
	}
	if (json_object_object_get_ex(body, "vendors", &vendors) &&
	    json_object_is_type(vendors, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(vendors); i++) {
			json_object *entry = json_object_array_get_idx(vendors, i);
			int v = enr_sandbox__vendor_from_id(json_str(entry, "vendor"));
			const char *creds = json_str(entry, "credentialsID");
			char stored[40], text[200];
			if (!join_vendor(v)) {
				enr_sandbox__oauth_error(resp, 400, "invalid_request",
				                         "each vendor must be one of tesla, sma, "
				                         "enphase, solaredge, solis, enphasevpp");
				goto out;
			}
			/* docs.derapi.com createjoinflow: vendors that need the
			 * company's app name its stored credentials. */
			enr_sandbox__credentials_id(sb, v, stored, sizeof(stored));
			if (needs_stored_credentials(v) && (!creds || strcmp(creds, stored) != 0)) {
				snprintf(
				    text, sizeof(text),
				    "vendors[%zu]: %s needs the credentialsID of the company's "
				    "stored %s app credentials%s",
				    i, enr_sandbox__vendor_id(v), enr_sandbox__vendor_name(v),
				    creds ? " (no such credentials)" : "");
				enr_sandbox__oauth_error(resp, 400, "invalid_request", text);
				goto out;
			}
			mask |= 1u << v;
		}
	}
	f = calloc(1, sizeof(*f) + strlen(uri) + 1);
	id = enr_util_random_token(9);
	if (!f || !id) {
		free(f);
		enr_sandbox__nomem(resp);
		goto out;
	}
	snprintf(f->id, sizeof(f->id), "flow_%s", id);
	snprintf(f->program_id, sizeof(f->program_id), "%s", program ? program : "");
	f->vendors = mask ? mask : ALL_JOIN_VENDORS;
	strcpy(f->redirect_uri, uri);
	enr_sandbox__ring_put(&sb->flows, f);
	send_flow(resp, 201, sb, f);
out:
	free(id);
	json_object_put(body);
}

static void enrollment(struct sb_req *req, struct sb_resp *resp, const char *id)
{
	const struct enrollment *e = find_enrollment(req->sb, id);
	struct sb_site sites[SB_MAX_SITES];
	struct enr_answers_site list[SB_MAX_SITES];
	json_object *obj = NULL;
	size_t n;

	if (!e) {
		enr_sandbox__oauth_error(resp, 404, "not_found", "no such enrollment");
		return;
	}
	/* The project's guess of the shape, in answers/derapi/enrollment.json. */
	n = enr_sandbox__sites(req->sb, e->vendor, e->account, sites);
	for (size_t i = 0; i < n; i++)
		list[i] = (struct enr_answers_site){sites[i].id, sites[i].name};
	if (enr_answers__sites(&obj, "derapi", "enrollment", list, n) < 0) {
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
		return;
	}
	enr_answers__set(obj, "id", json_object_new_string(e->id));
	enr_answers__set(obj, "vendor", json_object_new_string(enr_sandbox__vendor_id(e->vendor)));
	enr_answers__set(obj, "flowID", json_object_new_string(e->flow_id));
	if (e->program_id[0])
		enr_answers__set(obj, "programID", json_object_new_string(e->program_id));
	else
		json_object_object_del(obj, "programID");
	enr_sandbox__answer_json(resp, SB_DERAPI, "enrollment", obj);
}

/* ---- sites through Derapi ---- */

/* The account behind one X-Authorization-<vendor> value, or false. */
static bool vendor_account(struct sb_req *req, int vendor, const char *value, char *account,
                           size_t size)
{
	struct enr_sandbox *sb = req->sb;
	unsigned char *decoded = NULL;
	struct sb_access a;
	char *colon;
	bool ok = false;

	if (vendor == SB_SOLAREDGE) {
		snprintf(account, size, "%s", value);
		return enr_sandbox__solaredge_key_ok(sb, value);
	}
	if (vendor == SB_SOLIS) {
		if (strncmp(value, "Basic ", 6) != 0 ||
		    enr_util_base64_decode(&decoded, NULL, value + 6) < 0)
			return false;
		colon = strchr((char *)decoded, ':');
		if (colon) {
			*colon = '\0';
			ok = enr_sandbox__solis_key_ok(sb, (char *)decoded) &&
			     same(colon + 1, sb->solis_secret);
			snprintf(account, size, "%s", (char *)decoded);
		}
		enr_util_free_secret((char *)decoded);
		return ok;
	}
	if (strncmp(value, "Bearer ", 7) != 0 ||
	    enr_sandbox__check_access(sb, value + 7, vendor, &a) != SB_TOKEN_OK || !a.account[0])
		return false;
	if (vendor == SB_ENPHASE &&
	    !same(enr_sandbox__header(req, "X-enphase-api-key"), sb->enphase_api_key))
		return false;
	snprintf(account, size, "%s", a.account);
	return true;
}

/* What Derapi says of a backend that refused the credentials: the recorded
 * text, naming the vendor's real check URL. */
static char *refusal(const struct enr_sandbox *sb, int v)
{
	const struct enr_vendor *vendor = enr_catalog_find(sb->catalog, enr_sandbox__vendor_id(v));
	const char *api = vendor ? enr_vendor_default_endpoint(vendor, "api_url") : NULL;

	return enr_util_printf("Unauthorized: %s%s", api ? api : "",
	                       api && vendor->has_check ? vendor->check.path : "");
}

/* GET /sites: the recorded list answer, refilled with the sites of every
 * vendor whose credentials work, and an `errors` entry (as recorded) for each
 * vendor whose credentials were refused. */
static void sites(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_answers_site list[ENR_ARRAY_SIZE(join_vendors) * SB_MAX_SITES];
	struct sb_site found[ENR_ARRAY_SIZE(join_vendors)][SB_MAX_SITES];
	int owner[ENR_ARRAY_SIZE(list)];
	json_object *body = NULL, *recorded = NULL, *errors, *entries;
	char header[64], account[160];
	size_t n = 0;
	bool any = false;

	/* The recording's errors: an object of texts by vendor. */
	if (enr_answers__body(&recorded, "derapi", "sites-errors") < 0 ||
	    !json_object_is_type(enr_util_json_at(recorded, "errors"), json_type_object)) {
		json_object_put(recorded);
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
		return;
	}
	json_object_put(recorded);
	errors = json_object_new_object();
	for (size_t i = 0; i < ENR_ARRAY_SIZE(join_vendors); i++) {
		int v = join_vendors[i];
		const char *value;
		size_t k;
		snprintf(header, sizeof(header), "X-Authorization-%s", enr_sandbox__vendor_id(v));
		value = enr_sandbox__header(req, header);
		if (!value)
			continue;
		any = true;
		if (!vendor_account(req, v, value, account, sizeof(account))) {
			char *text = refusal(req->sb, v);
			json_object_object_add(
			    errors, enr_sandbox__vendor_id(v),
			    json_object_new_string(text ? text : "Unauthorized"));
			free(text);
			continue;
		}
		k = enr_sandbox__sites(req->sb, v, account, found[i]);
		for (size_t j = 0; j < k; j++) {
			owner[n] = v;
			list[n++] = (struct enr_answers_site){found[i][j].id, found[i][j].name};
		}
	}
	if (!any) {
		json_object_put(errors);
		enr_sandbox__oauth_error(
		    resp, 403, "forbidden",
		    "no X-Authorization-<vendor> header: vendor credentials are "
		    "missing");
		return;
	}
	if (enr_answers__sites(&body, "derapi", "sites", list, n) < 0) {
		json_object_put(errors);
		enr_sandbox__oauth_error(resp, 500, "server_error", enr_error_last());
		return;
	}
	entries = enr_util_json_at(body, "sites");
	for (size_t i = 0; i < n; i++)
		enr_answers__set(json_object_array_get_idx(entries, i), "vendor",
		                 json_object_new_string(enr_sandbox__vendor_id(owner[i])));
	enr_answers__set(body, "errors", errors);
	enr_sandbox__json(resp, 200, body);
}

/* The stand-in for Derapi's widget, assets/join/derapi-join-standin.js: an
 * ES module with the real one's API and calls (see the file). */
static void join_script(struct sb_resp *resp)
{
	char *dir = enr_config_asset_path("join");
	char *path = dir ? enr_util_printf("%s/derapi-join-standin.js", dir) : NULL;
	char *text = NULL;

	if (path && enr_util_read_file(&text, NULL, path, 256 * 1024) == 0)
		enr_sandbox__text(resp, 200, "text/javascript; charset=utf-8", text);
	else
		enr_sandbox__oauth_error(resp, 404, "not_found", "no stand-in widget installed");
	enr_error_clear();
	free(text);
	free(path);
	free(dir);
}

/* ---- routing ---- */

/* Splits "/join/session/ID/tail" into the id (copied into `id`) and the tail. */
static const char *split_id(const char *rest, const char *prefix, char *id, size_t size)
{
	size_t len = strlen(prefix), id_len;
	const char *end;

	if (strncmp(rest, prefix, len) != 0)
		return NULL;
	rest += len;
	end = strchr(rest, '/');
	id_len = end ? (size_t)(end - rest) : strlen(rest);
	if (id_len == 0 || id_len >= size)
		return NULL;
	memcpy(id, rest, id_len);
	id[id_len] = '\0';
	return end ? end : "";
}

void enr_sandbox__derapi(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	bool get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;
	struct flow *preset = NULL;
	const struct flow *f;
	struct session *s;
	const char *tail;
	char id[80];

	if (post && strcmp(req->rest, "/oauth2/token") == 0) {
		token(req, resp);
	} else if (get && strcmp(req->rest, "/join/derapi-join.js") == 0) {
		join_script(resp);
	} else if (post && strcmp(req->rest, "/join/session/start") == 0) {
		if (authorized(req, resp))
			session_start(req, resp);
	} else if (get && (tail = split_id(req->rest, "/join/session/", id, sizeof(id)))) {
		s = find_session(sb, id);
		if (!s)
			enr_sandbox__oauth_error(resp, 404, "not_found", "no such Join session");
		else if (strcmp(tail, "/vendors") == 0) {
			/* The widget sends the company's token on both of its calls. */
			if (authorized(req, resp))
				session_vendors(req, resp, s);
		} else if (strcmp(tail, "/authorize") == 0)
			join_authorize(req, resp, SB_AUTH_SESSION, s->id, s->vendors, NULL);
		else if (strcmp(tail, "/fetch-token") == 0) {
			if (authorized(req, resp))
				fetch_token(resp, s);
		} else
			enr_sandbox__not_found(resp);
	} else if (get && (tail = split_id(req->rest, "/join/", id, sizeof(id))) &&
	           strcmp(tail, "/auth-granted") == 0) {
		auth_granted(req, resp, id);
	} else if (post && strcmp(req->rest, "/join/flows") == 0) {
		if (authorized(req, resp))
			flow_create(req, resp);
	} else if (get && (tail = split_id(req->rest, "/join/flows/", id, sizeof(id)))) {
		f = find_flow(sb, id, &preset);
		if (!f)
			enr_sandbox__html(
			    resp, 404,
			    enr_sandbox__page("Unknown flow", "No such Join flow.", NULL));
		else if (strcmp(tail, "/authorize") == 0)
			join_authorize(req, resp, SB_AUTH_FLOW, f->id, f->vendors, f->redirect_uri);
		else if (tail[0] == '\0') {
			if (authorized(req, resp))
				send_flow(resp, 200, sb, f);
		} else
			enr_sandbox__not_found(resp);
		free(preset);
	} else if (get && (tail = split_id(req->rest, "/join/enrollments/", id, sizeof(id))) &&
	           tail[0] == '\0') {
		if (authorized(req, resp))
			enrollment(req, resp, id);
	} else if (get && strcmp(req->rest, "/sites") == 0) {
		if (authorized(req, resp))
			sites(req, resp);
	} else {
		enr_sandbox__not_found(resp);
	}
}
