/* The sandbox's accounts, tokens, codes, revocations and consent page. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "derenroll/error.h"
#include "derenroll/vendor.h"
#include "jwt.h"
#include "sandbox_internal.h"
#include "util.h"

#define PENDING_TTL_MS (10 * 60 * 1000)
#define MAX_ACCOUNT    100

/* ---- derived values, accounts and sites ---- */

void enr_sandbox__derive_hex(const struct enr_sandbox *sb, char *out, const char *label,
                             size_t bytes)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	HMAC(EVP_sha256(), sb->seed, sizeof(sb->seed), (const unsigned char *)label, strlen(label),
	     mac, &len);
	for (size_t i = 0; i < bytes && i < len; i++)
		sprintf(out + 2 * i, "%02x", mac[i]);
	out[2 * (bytes < len ? bytes : len)] = '\0';
}

static uint64_t account_hash(int vendor, const char *account, int i)
{
	char label[256];

	snprintf(label, sizeof(label), "%s:%s:%d", enr_sandbox__vendor_id(vendor), account, i);
	return enr_sandbox__hash(label);
}

static bool company_account(const struct enr_sandbox *sb, int vendor, const char *account)
{
	return (vendor == SB_SOLAREDGE && strcmp(account, sb->solaredge_company_key) == 0) ||
	       (vendor == SB_SOLIS && strcmp(account, sb->solis_company_key_id) == 0) ||
	       (vendor == SB_ENPHASE && strcmp(account, "enphase-partner") == 0);
}

size_t enr_sandbox__sites(const struct enr_sandbox *sb, int vendor, const char *account,
                          struct sb_site *out)
{
	static const char *const streets[] = {
	    "Maple Street", "Oak Avenue",   "Sunny Lane",   "Harbour Road",
	    "Mill Lane",    "Church Road",  "Station Road", "Park Avenue",
	    "Cedar Court",  "Elm Grove",    "Hill Rise",    "River View",
	    "Orchard Way",  "Meadow Close", "Solar Drive",  "Windmill Row",
	};
	size_t n = company_account(sb, vendor, account) ? 3 : 1;

	/* "empty-..." accounts gave consent for no site (SMA's empty plant list). */
	if (strncmp(account, "empty-", 6) == 0)
		return 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t h = account_hash(vendor, account, (int)i);
		if (vendor == SB_TESLA)
			out[i].num = 1000000000000000LL + (long long)(h % 7000000000000000ULL);
		else if (vendor == SB_SOLIS)
			out[i].num = 1298491919000000000LL + (long long)(h % 1000000000ULL);
		else
			out[i].num = 1000000 + (long long)(h % 9000000);
		snprintf(out[i].id, sizeof(out[i].id), "%lld", out[i].num);
		snprintf(out[i].name, sizeof(out[i].name), "%d %s", (int)((h >> 20) % 180) + 1,
		         streets[(h >> 40) % ENR_ARRAY_SIZE(streets)]);
	}
	return n;
}

void enr_sandbox__account_uid(char *out, size_t size, int vendor, const char *account)
{
	uint64_t a = account_hash(vendor, account, -1), b = account_hash(vendor, account, -2);

	if (vendor == SB_ENPHASE)
		snprintf(out, size, "%llu", 100000 + (unsigned long long)(a % 900000));
	else
		snprintf(out, size, "%08llx-%04llx-4%03llx-a%03llx-%012llx",
		         (unsigned long long)(a >> 32), (unsigned long long)(a >> 16 & 0xffff),
		         (unsigned long long)(a & 0xfff), (unsigned long long)(b >> 52),
		         (unsigned long long)(b & 0xffffffffffffULL));
}

char *enr_sandbox__new_account(struct enr_sandbox *sb)
{
	return enr_util_printf("customer-%llu", ++sb->account_counter);
}

/* ---- revocations ---- */

enum revoked_kind {
	REVOKED_GRANT,   /* every token of one authorization */
	REVOKED_ACCOUNT, /* every token of an account issued before `seq`, or its key */
	EXPIRED_TOKEN,   /* one access token (by jti) expired early */
};

struct revoked {
	enum revoked_kind kind;
	int vendor;
	uint64_t value; /* grant id, or seq */
	char name[];    /* account or jti */
};

static int add_revoked(struct enr_sandbox *sb, enum revoked_kind kind, int vendor, uint64_t value,
                       const char *name)
{
	struct revoked *r = malloc(sizeof(*r) + strlen(name) + 1);

	if (!r)
		return enr_error_set(ENR_E_NOMEM, NULL);
	r->kind = kind;
	r->vendor = vendor;
	r->value = value;
	strcpy(r->name, name);
	enr_sandbox__ring_put(&sb->revoked, r);
	return 0;
}

static const struct revoked *find_revoked(const struct enr_sandbox *sb, enum revoked_kind kind,
                                          int vendor, uint64_t value, const char *name)
{
	for (size_t i = 0; i < sb->revoked.cap; i++) {
		const struct revoked *r = sb->revoked.items[i];
		if (!r || r->kind != kind || r->vendor != vendor)
			continue;
		if (kind == REVOKED_GRANT ? r->value == value : strcmp(r->name, name) == 0)
			return r;
	}
	return NULL;
}

bool enr_sandbox__account_revoked(const struct enr_sandbox *sb, int vendor, const char *account,
                                  uint64_t seq)
{
	for (size_t i = 0; i < sb->revoked.cap; i++) {
		const struct revoked *r = sb->revoked.items[i];
		if (r && r->kind == REVOKED_ACCOUNT && r->vendor == vendor && r->value > seq &&
		    strcmp(r->name, account) == 0)
			return true;
	}
	return false;
}

/* ---- tokens ---- */

struct refresh {
	uint64_t hash;
	int vendor;
	uint64_t grant, seq;
	long long expires;     /* wall clock seconds; 0: never */
	long long used_ms;     /* monotonic ms of the first use; 0: unused */
	long long asked_ms;    /* when the request of that use arrived */
	long long answered_ms; /* when its answer was handed to the connection */
	bool revoked;
	char value[48];
	char client_id[96];
	char account[MAX_ACCOUNT + 28];
	char scope[256];
};

long enr_sandbox__access_ttl(const struct enr_sandbox *sb, int vendor)
{
	const struct enr_vendor *v = enr_catalog_find(sb->catalog, enr_sandbox__vendor_id(vendor));

	if (sb->access_ttl > 0)
		return sb->access_ttl;
	return v && v->tokens.access_ttl > 0 ? v->tokens.access_ttl : 3600;
}

long enr_sandbox__refresh_ttl(const struct enr_sandbox *sb, int vendor)
{
	const struct enr_vendor *v = enr_catalog_find(sb->catalog, enr_sandbox__vendor_id(vendor));

	return v ? v->tokens.refresh_ttl : 0;
}

static bool refresh_rotates(const struct enr_sandbox *sb, int vendor)
{
	const struct enr_vendor *v = enr_catalog_find(sb->catalog, enr_sandbox__vendor_id(vendor));

	return !v || v->tokens.refresh_rotates;
}

static char *jwt_sign(const struct enr_sandbox *sb, json_object *payload)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"sandbox\"}";
	const char *json = json_object_to_json_string_ext(
	    payload, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	char *h = enr_util_base64_encode(header, strlen(header), true);
	char *p = json ? enr_util_base64_encode(json, strlen(json), true) : NULL;
	char *signing = h && p ? enr_util_printf("%s.%s", h, p) : NULL;
	char *sig = NULL, *jwt = NULL;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (signing && HMAC(EVP_sha256(), sb->jwt_key, sizeof(sb->jwt_key),
	                    (const unsigned char *)signing, strlen(signing), mac, &len))
		sig = enr_util_base64_encode(mac, len, true);
	if (sig)
		jwt = enr_util_printf("%s.%s", signing, sig);
	free(h);
	free(p);
	free(signing);
	free(sig);
	return jwt;
}

/* The payload of a JWT the sandbox signed, or NULL. */
static json_object *jwt_verify(const struct enr_sandbox *sb, const char *token)
{
	const char *dot1 = strchr(token, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	unsigned char mac[EVP_MAX_MD_SIZE], *payload = NULL;
	unsigned int len = 0;
	char *sig = NULL;
	json_object *obj = NULL;

	if (!dot2 || strchr(dot2 + 1, '.'))
		return NULL;
	if (!HMAC(EVP_sha256(), sb->jwt_key, sizeof(sb->jwt_key), (const unsigned char *)token,
	          (size_t)(dot2 - token), mac, &len))
		return NULL;
	sig = enr_util_base64_encode(mac, len, true);
	if (sig && strlen(sig) == strlen(dot2 + 1) &&
	    CRYPTO_memcmp(sig, dot2 + 1, strlen(sig)) == 0) {
		char *part = strndup(dot1 + 1, (size_t)(dot2 - dot1 - 1));
		if (part && enr_util_base64_decode(&payload, NULL, part) == 0)
			obj = json_tokener_parse((char *)payload);
		free(part);
	}
	free(payload);
	free(sig);
	return obj;
}

static void add_str(json_object *obj, const char *key, const char *value)
{
	json_object_object_add(obj, key, json_object_new_string(value));
}

static json_object *access_claims(struct enr_sandbox *sb, const struct sb_grant *g, uint64_t grant,
                                  uint64_t seq, long long now, long ttl, const char *jti)
{
	const char *vendor = enr_sandbox__vendor_id(g->vendor);
	json_object *c = json_object_new_object(), *sbx = json_object_new_object();
	char uid[64], iss[128];

	if (g->account)
		enr_sandbox__account_uid(uid, sizeof(uid), g->vendor, g->account);
	else
		snprintf(uid, sizeof(uid), "%s", g->client_id);
	snprintf(iss, sizeof(iss), "%s/%s", sb->url, vendor);
	add_str(c, "iss", iss);
	add_str(c, "sub", uid);
	json_object_object_add(c, "iat", json_object_new_int64(now));
	json_object_object_add(c, "exp", json_object_new_int64(now + ttl));
	add_str(c, "jti", jti);
	if (g->vendor == SB_TESLA) {
		json_object *scp = json_object_new_array(), *aud = json_object_new_array();
		char *scope = strdup(g->scope ? g->scope : "");
		for (char *save = NULL, *s = scope ? strtok_r(scope, " ", &save) : NULL; s;
		     s = strtok_r(NULL, " ", &save))
			json_object_array_add(scp, json_object_new_string(s));
		free(scope);
		int region = g->account ? enr_sandbox__tesla_region(g->account) : 0;
		char host[128];
		enr_sandbox__tesla_host(sb, region, host, sizeof(host));
		json_object_array_add(aud,
		                      json_object_new_string(g->audience ? g->audience : host));
		json_object_object_add(c, "aud", aud);
		json_object_object_add(c, "scp", scp);
		add_str(c, "azp", g->client_id);
		add_str(c, "ou_code", enr_sandbox__tesla_region_code(region));
	} else if (g->vendor == SB_ENPHASE) {
		add_str(c, "enl_uid", uid);
		add_str(c, "enl_cid", g->client_id);
		add_str(c, "client_id", g->client_id);
		add_str(c, "scope", g->scope ? g->scope : "");
	} else {
		add_str(c, "azp", g->client_id);
		add_str(c, "scope", g->scope ? g->scope : "");
	}
	add_str(sbx, "v", vendor);
	add_str(sbx, "a", g->account ? g->account : "");
	add_str(sbx, "c", g->client_id);
	add_str(sbx, "sc", g->scope ? g->scope : "");
	json_object_object_add(sbx, "g", json_object_new_int64((int64_t)grant));
	json_object_object_add(sbx, "s", json_object_new_int64((int64_t)seq));
	json_object_object_add(c, "sbx", sbx);
	return c;
}

/* ---- OpenID: the issuer, its signing keys, id_tokens ---- */

/* One set per process: an RSA key takes a while to make, and every sandbox
 * of a test run may sign. "other" is the forger's key. */
static struct {
	pthread_once_t once;
	EVP_PKEY *rsa, *other, *ec;
} keys = {.once = PTHREAD_ONCE_INIT};

static void make_keys(void)
{
	if (enr_jwt_key_new(&keys.rsa, "RS256") < 0 || enr_jwt_key_new(&keys.other, "RS256") < 0 ||
	    enr_jwt_key_new(&keys.ec, "ES256") < 0)
		enr_error_clear();
}

void enr_sandbox__issuer(const struct enr_sandbox *sb, int vendor, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s%s", sb->url, enr_sandbox__vendor_id(vendor),
	         vendor == SB_TESLA ? "/oauth2/v3" : "");
}

void enr_sandbox__jwks(struct sb_req *req, struct sb_resp *resp)
{
	json_object *set = json_object_new_object(), *list = json_object_new_array(), *jwk;

	(void)req;
	pthread_once(&keys.once, make_keys);
	if (!set || !list || !keys.rsa || !keys.ec) {
		json_object_put(set);
		json_object_put(list);
		enr_sandbox__nomem(resp);
		return;
	}
	if (enr_jwt_public_jwk(&jwk, keys.rsa, "RS256", "sandbox-rs") == 0)
		json_object_array_add(list, jwk);
	if (enr_jwt_public_jwk(&jwk, keys.ec, "ES256", "sandbox-es") == 0)
		json_object_array_add(list, jwk);
	json_object_object_add(set, "keys", list);
	enr_sandbox__json(resp, 200, set);
}

static char *id_token(struct enr_sandbox *sb, const struct sb_grant *g, long long now)
{
	json_object *c = json_object_new_object();
	long mode = sb->id_token_mode;
	bool es = mode == SB_ID_TOKEN_ES256;
	char uid[64], iss[128];
	char *jwt = NULL;

	pthread_once(&keys.once, make_keys);
	if (mode == SB_ID_TOKEN_EXPIRED)
		now -= 900; /* issued 15 minutes ago, for 5 */
	enr_sandbox__account_uid(uid, sizeof(uid), g->vendor, g->account);
	enr_sandbox__issuer(sb, g->vendor, iss, sizeof(iss));
	add_str(c, "iss", iss);
	add_str(c, "sub", uid);
	add_str(c, "aud", mode == SB_ID_TOKEN_WRONG_AUD ? "another-app" : g->client_id);
	json_object_object_add(c, "iat", json_object_new_int64(now));
	json_object_object_add(c, "exp", json_object_new_int64(now + 300));
	if (keys.rsa && keys.other && keys.ec &&
	    enr_jwt_sign(&jwt, c,
	                 es                              ? keys.ec
	                 : mode == SB_ID_TOKEN_WRONG_KEY ? keys.other
	                                                 : keys.rsa,
	                 es ? "ES256" : "RS256", es ? "sandbox-es" : "sandbox-rs") < 0)
		jwt = NULL;
	json_object_put(c);
	return jwt;
}

int enr_sandbox__issue(struct enr_sandbox *sb, struct sb_tokens *out, const struct sb_grant *g)
{
	long long now = (long long)time(NULL);
	long ttl = enr_sandbox__access_ttl(sb, g->vendor);
	uint64_t seq = sb->seq++;
	uint64_t grant = g->grant ? g->grant : seq;
	char *jti = enr_util_random_token(12);
	json_object *claims;

	memset(out, 0, sizeof(*out));
	if (!jti)
		return ENR_E_NOMEM;
	claims = access_claims(sb, g, grant, seq, now, ttl, jti);
	out->access = claims ? jwt_sign(sb, claims) : NULL;
	json_object_put(claims);
	free(jti);
	out->expires_in = ttl;
	out->grant = grant;
	snprintf(out->scope, sizeof(out->scope), "%s", g->scope ? g->scope : "");
	if (out->access && g->id_token && g->account)
		out->id_token = id_token(sb, g, now);
	if (out->access && g->refresh) {
		struct refresh *r = calloc(1, sizeof(*r));
		char *value = enr_util_random_token(32);
		/* Tesla's refresh tokens name the account's region: "EU_..." */
		if (value && g->vendor == SB_TESLA && g->account) {
			char *prefixed = enr_util_printf(
			    "%s_%s",
			    enr_sandbox__tesla_region_code(enr_sandbox__tesla_region(g->account)),
			    value);
			free(value);
			value = prefixed;
		}
		if (r && value) {
			snprintf(r->value, sizeof(r->value), "%s", value);
			r->hash = enr_sandbox__hash(r->value);
			r->vendor = g->vendor;
			r->grant = grant;
			r->seq = seq;
			r->expires = g->refresh_ttl > 0 ? now + g->refresh_ttl : 0;
			snprintf(r->client_id, sizeof(r->client_id), "%s", g->client_id);
			snprintf(r->account, sizeof(r->account), "%s",
			         g->account ? g->account : "");
			snprintf(r->scope, sizeof(r->scope), "%s", g->scope ? g->scope : "");
			out->refresh = value;
			enr_sandbox__ring_put(&sb->refresh, r);
		} else {
			free(r);
			free(value);
		}
	}
	if (!out->access || (g->id_token && g->account && !out->id_token) ||
	    (g->refresh && !out->refresh)) {
		enr_sandbox__tokens_done(out);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	return 0;
}

void enr_sandbox__tokens_done(struct sb_tokens *t)
{
	free(t->access);
	free(t->refresh);
	free(t->id_token);
	memset(t, 0, sizeof(*t));
}

static const char *claim(json_object *obj, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(obj, key, &v) ? json_object_get_string(v) : NULL;
}

static int64_t claim_int(json_object *obj, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(obj, key, &v) ? json_object_get_int64(v) : 0;
}

enum sb_token_state enr_sandbox__check_access(struct enr_sandbox *sb, const char *token, int vendor,
                                              struct sb_access *out)
{
	json_object *claims = token ? jwt_verify(sb, token) : NULL, *sbx = NULL;
	enum sb_token_state state = SB_TOKEN_INVALID;
	const char *v, *account, *jti;
	uint64_t seq;

	memset(out, 0, sizeof(*out));
	if (!claims || !json_object_object_get_ex(claims, "sbx", &sbx) || !(v = claim(sbx, "v")) ||
	    strcmp(v, enr_sandbox__vendor_id(vendor)) != 0)
		goto out;
	account = claim(sbx, "a");
	jti = claim(claims, "jti");
	seq = (uint64_t)claim_int(sbx, "s");
	snprintf(out->account, sizeof(out->account), "%s", account ? account : "");
	snprintf(out->client_id, sizeof(out->client_id), "%s",
	         claim(sbx, "c") ? claim(sbx, "c") : "");
	snprintf(out->scope, sizeof(out->scope), "%s", claim(sbx, "sc") ? claim(sbx, "sc") : "");
	out->grant = (uint64_t)claim_int(sbx, "g");
	{
		json_object *aud = NULL;
		if (json_object_object_get_ex(claims, "aud", &aud) &&
		    json_object_is_type(aud, json_type_array) && json_object_array_length(aud))
			snprintf(out->audience, sizeof(out->audience), "%s",
			         json_object_get_string(json_object_array_get_idx(aud, 0)));
	}
	if (find_revoked(sb, REVOKED_GRANT, vendor, out->grant, NULL) ||
	    (out->account[0] && enr_sandbox__account_revoked(sb, vendor, out->account, seq))) {
		state = SB_TOKEN_REVOKED;
		goto out;
	}
	if (claim_int(claims, "exp") <= (int64_t)time(NULL) || seq < sb->expired_before[vendor] ||
	    (jti && find_revoked(sb, EXPIRED_TOKEN, vendor, 0, jti))) {
		state = SB_TOKEN_EXPIRED;
		goto out;
	}
	state = SB_TOKEN_OK;
out:
	json_object_put(claims);
	return state;
}

static struct refresh *find_refresh(const struct enr_sandbox *sb, const char *token)
{
	uint64_t h = enr_sandbox__hash(token);

	for (size_t i = 0; i < sb->refresh.cap; i++) {
		struct refresh *r = sb->refresh.items[i];
		if (r && r->hash == h && strcmp(r->value, token) == 0)
			return r;
	}
	return NULL;
}

long long enr_sandbox__refresh_used_ms(struct enr_sandbox *sb, const char *token,
                                       long long *asked_ms, long long *answered_ms)
{
	struct refresh *r;
	long long used;

	pthread_mutex_lock(&sb->lock);
	r = token ? find_refresh(sb, token) : NULL;
	used = r ? r->used_ms : -1;
	if (asked_ms)
		*asked_ms = r ? r->asked_ms : 0;
	if (answered_ms)
		*answered_ms = r ? r->answered_ms : 0;
	pthread_mutex_unlock(&sb->lock);
	return used;
}

void enr_sandbox__refresh_answered(struct enr_sandbox *sb, uint64_t h)
{
	for (size_t i = 0; h && i < sb->refresh.cap; i++) {
		struct refresh *r = sb->refresh.items[i];
		if (r && r->hash == h && !r->answered_ms)
			r->answered_ms = enr_sandbox__now_ms();
	}
}

bool enr_sandbox__refresh(struct enr_sandbox *sb, struct sb_resp *resp, struct sb_tokens *out,
                          int vendor, const char *client_id, const char *token)
{
	struct refresh *r = token ? find_refresh(sb, token) : NULL;
	long long now_ms = enr_sandbox__now_ms();
	bool rotates = refresh_rotates(sb, vendor);
	struct sb_grant g = {0};

	memset(out, 0, sizeof(*out));
	if (!token) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request", "refresh_token is missing");
		return false;
	}
	if (!r || r->vendor != vendor) {
		enr_sandbox__oauth_error(resp, 400, "invalid_grant", "unknown refresh token");
		return false;
	}
	if (strcmp(r->client_id, client_id) != 0) {
		enr_sandbox__oauth_error(resp, 400, "invalid_grant",
		                         "the refresh token was issued to another client");
		return false;
	}
	if (r->revoked || find_revoked(sb, REVOKED_GRANT, vendor, r->grant, NULL) ||
	    (r->account[0] && enr_sandbox__account_revoked(sb, vendor, r->account, r->seq))) {
		enr_sandbox__oauth_error(resp, 400, "invalid_grant",
		                         "the refresh token was revoked");
		return false;
	}
	if (r->expires && r->expires <= (long long)time(NULL)) {
		enr_sandbox__oauth_error(resp, 400, "invalid_grant", "the refresh token expired");
		return false;
	}
	if (rotates && r->used_ms && now_ms - r->used_ms >= sb->refresh_grace * 1000) {
		enr_sandbox__oauth_error(resp, 400, "invalid_grant",
		                         "the refresh token was already used");
		return false;
	}
	g.vendor = vendor;
	g.client_id = r->client_id;
	g.account = r->account[0] ? r->account : NULL;
	g.scope = r->scope;
	g.grant = r->grant;
	g.refresh = rotates;
	g.id_token = vendor == SB_TESLA;
	/* A rotated refresh token keeps the lifetime the first one started. */
	g.refresh_ttl = r->expires ? (long)(r->expires - (long long)time(NULL)) : 0;
	if (enr_sandbox__issue(sb, out, &g) < 0) {
		enr_sandbox__nomem(resp);
		return false;
	}
	/* `r` may have been pushed out of the ring by the new token: look again. */
	r = find_refresh(sb, token);
	/* Spent now that its successor exists (signing it took a while). */
	if (r && rotates && !r->used_ms) {
		r->used_ms = enr_sandbox__now_ms();
		r->asked_ms = sb->request_arrived_ms;
		resp->spent_refresh = r->hash;
	}
	return true;
}

/* ---- clients, redirect URIs, codes ---- */

static bool same(const char *a, const char *b)
{
	return a && b && strlen(a) == strlen(b) && CRYPTO_memcmp(a, b, strlen(a)) == 0;
}

bool enr_sandbox__client_ok(const struct enr_sandbox *sb, int vendor, const char *id,
                            const char *secret)
{
	const struct sb_client *c = &sb->clients[vendor];

	return c->id && id && strcmp(c->id, id) == 0 && (!secret || same(c->secret, secret));
}

/* http://127.0.0.1:<port>/callback, http://localhost:<port>/callback, http://[::1]:<port>/callback
 */
static bool loopback_uri(const char *uri)
{
	static const char *const hosts[] = {
	    "http://127.0.0.1:", "http://localhost:", "http://[::1]:"};

	for (size_t i = 0; i < ENR_ARRAY_SIZE(hosts); i++) {
		size_t len = strlen(hosts[i]), digits;
		long port;
		if (strncmp(uri, hosts[i], len) != 0)
			continue;
		digits = strspn(uri + len, "0123456789");
		if (digits == 0 || digits > 5 || strcmp(uri + len + digits, "/callback") != 0)
			return false;
		port = strtol(uri + len, NULL, 10);
		return port > 0 && port <= 65535;
	}
	return false;
}

bool enr_sandbox__redirect_ok(const struct enr_sandbox *sb, int vendor, const char *uri)
{
	char registered[128];

	if (!uri)
		return false;
	snprintf(registered, sizeof(registered), "%s/relay/callback", sb->url);
	if (strcmp(uri, registered) == 0 || loopback_uri(uri))
		return true;
	snprintf(registered, sizeof(registered), "%s/enphase/oauth/redirect_uri", sb->url);
	return vendor == SB_ENPHASE && strcmp(uri, registered) == 0;
}

struct code {
	uint64_t hash;
	int vendor;
	bool prompted; /* prompt=consent was asked: offline_access may be granted */
	long long created_ms;
	char value[48];
	char client_id[96];
	char account[MAX_ACCOUNT + 28];
	char scope[256];
	char challenge[136];
	char redirect_uri[];
};

/* A code in the shape vendors.json gives the vendor's (oauth.code: its
 * longest, of its characters), or NULL when it gives none. */
static char *shaped_code(const struct enr_sandbox *sb, int vendor)
{
	const struct enr_vendor *v = enr_catalog_find(sb->catalog, enr_sandbox__vendor_id(vendor));
	char chars[96], *code;
	size_t n = 0, len, i = 0;

	if (!v || !v->has_oauth || !v->oauth.code.max_length)
		return NULL;
	/* Only the characters a typed code is folded to (either case taken). */
	for (int ch = '!'; ch <= '~'; ch++)
		if (enr_vendor_code_char(v, ch) == ch)
			chars[n++] = (char)ch;
	if (!n)
		return NULL;
	len = (size_t)v->oauth.code.max_length;
	if (len >= sizeof(((struct code *)0)->value) || !(code = malloc(len + 1)))
		return NULL;
	while (i < len) {
		unsigned char byte;
		if (enr_util_random(&byte, 1) < 0) {
			free(code);
			return NULL;
		}
		if (byte < 256 - 256 % n) /* uniform over the alphabet */
			code[i++] = chars[byte % n];
	}
	code[len] = '\0';
	return code;
}

char *enr_sandbox__new_code(struct enr_sandbox *sb, const struct sb_pending *p, const char *account)
{
	struct code *c = calloc(1, sizeof(*c) + strlen(p->redirect_uri) + 1);
	char *value = shaped_code(sb, p->vendor);

	if (!value)
		value = enr_util_random_token(24);

	/* Tesla's codes name the account's region: "EU_..." */
	if (value && p->vendor == SB_TESLA) {
		char *prefixed = enr_util_printf(
		    "%s_%s", enr_sandbox__tesla_region_code(enr_sandbox__tesla_region(account)),
		    value);
		free(value);
		value = prefixed;
	}

	if (!c || !value) {
		free(c);
		free(value);
		return NULL;
	}
	snprintf(c->value, sizeof(c->value), "%s", value);
	c->hash = enr_sandbox__hash(value);
	c->vendor = p->vendor;
	c->prompted = p->prompted;
	c->created_ms = enr_sandbox__now_ms();
	snprintf(c->client_id, sizeof(c->client_id), "%s", p->client_id);
	snprintf(c->account, sizeof(c->account), "%s", account);
	snprintf(c->scope, sizeof(c->scope), "%s", p->scope ? p->scope : "");
	snprintf(c->challenge, sizeof(c->challenge), "%s", p->challenge ? p->challenge : "");
	strcpy(c->redirect_uri, p->redirect_uri);
	enr_sandbox__ring_put(&sb->codes, c);
	return value;
}

/* Removes `word` from a space-separated list, in place. */
static void drop_scope(char *list, const char *word)
{
	size_t len = strlen(word);

	for (char *p = list; (p = strstr(p, word));) {
		if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0')) {
			char *next = p + len + (p[len] == ' ');
			memmove(p, next, strlen(next) + 1);
			if (p > list && *p == '\0' && p[-1] == ' ')
				p[-1] = '\0';
		} else {
			p += len;
		}
	}
}

static bool pkce_ok(const char *challenge, const char *verifier)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	char *computed;
	bool ok;

	if (!verifier || strlen(verifier) < 43 || strlen(verifier) > 128)
		return false;
	if (EVP_Digest(verifier, strlen(verifier), digest, &len, EVP_sha256(), NULL) != 1)
		return false;
	computed = enr_util_base64_encode(digest, len, true);
	ok = computed && same(computed, challenge);
	free(computed);
	return ok;
}

bool enr_sandbox__exchange(struct enr_sandbox *sb, struct sb_resp *resp, struct sb_tokens *out,
                           int vendor, const char *client_id, const char *code,
                           const char *redirect_uri, const char *verifier)
{
	struct code *c = NULL;
	struct sb_grant g = {0};
	const char *problem;
	uint64_t h;
	bool ok = false;

	memset(out, 0, sizeof(*out));
	if (!code) {
		enr_sandbox__oauth_error(resp, 400, "invalid_request", "code is missing");
		return false;
	}
	h = enr_sandbox__hash(code);
	for (size_t i = 0; i < sb->codes.cap; i++) {
		struct code *candidate = sb->codes.items[i];
		if (candidate && candidate->hash == h && strcmp(candidate->value, code) == 0) {
			/* Single use: gone whether or not the exchange succeeds. */
			c = candidate;
			sb->codes.items[i] = NULL;
			break;
		}
	}
	if (!c)
		problem = "the code is unknown or was already used";
	else if (c->vendor != vendor)
		problem = "the code was issued by another vendor";
	else if (enr_sandbox__now_ms() - c->created_ms > sb->code_ttl_ms)
		problem = "the code expired";
	else if (strcmp(c->client_id, client_id) != 0)
		problem = "the code was issued to another client";
	else if (!redirect_uri || strcmp(c->redirect_uri, redirect_uri) != 0)
		problem = "redirect_uri does not match the authorization request";
	else if (c->challenge[0] && !pkce_ok(c->challenge, verifier))
		problem = "PKCE verification failed: wrong or missing code_verifier";
	else
		problem = NULL;
	if (problem) {
		enr_sandbox__oauth_error(resp, 400, "invalid_grant", problem);
		goto out;
	}
	/* OIDC Core 11: offline_access is ignored (not granted) unless the
	 * customer was asked with prompt=consent. */
	if (sb->refresh_needs_consent && !c->prompted)
		drop_scope(c->scope, "offline_access");
	g.vendor = vendor;
	g.client_id = c->client_id;
	g.account = c->account;
	g.scope = c->scope;
	g.id_token = vendor == SB_TESLA && strstr(c->scope, "openid");
	g.refresh = vendor != SB_TESLA || strstr(c->scope, "offline_access");
	g.refresh_ttl = enr_sandbox__refresh_ttl(sb, vendor);
	if (vendor == SB_SMA && !strstr(c->scope, "offline_access"))
		g.refresh_ttl = 1800;
	if (enr_sandbox__issue(sb, out, &g) < 0) {
		enr_sandbox__nomem(resp);
		goto out;
	}
	ok = true;
out:
	free(c);
	return ok;
}

/* ---- the customers' side: public API ---- */

int enr_sandbox_revoke(struct enr_sandbox *sb, const char *token)
{
	struct refresh *r;
	json_object *claims, *sbx;
	int rc = 0;

	if (!token)
		return enr_error_set(ENR_E_USAGE, "no token to revoke");
	pthread_mutex_lock(&sb->lock);
	r = find_refresh(sb, token);
	if (r) {
		r->revoked = true;
		rc = add_revoked(sb, REVOKED_GRANT, r->vendor, r->grant, "");
	} else if ((claims = jwt_verify(sb, token)) &&
	           json_object_object_get_ex(claims, "sbx", &sbx)) {
		rc = add_revoked(sb, REVOKED_GRANT, enr_sandbox__vendor_from_id(claim(sbx, "v")),
		                 (uint64_t)claim_int(sbx, "g"), "");
		json_object_put(claims);
	} else {
		rc = enr_error_set(ENR_E_NOTFOUND, "the sandbox never issued that token");
	}
	pthread_mutex_unlock(&sb->lock);
	return rc;
}

int enr_sandbox_revoke_account(struct enr_sandbox *sb, const char *vendor, const char *account)
{
	int v = enr_sandbox__vendor_from_id(vendor);
	int rc;

	if (v < 0 || !account || !account[0])
		return enr_error_set(ENR_E_USAGE,
		                     "revoking an account needs a vendor and an account");
	pthread_mutex_lock(&sb->lock);
	rc = add_revoked(sb, REVOKED_ACCOUNT, v, sb->seq, account);
	pthread_mutex_unlock(&sb->lock);
	return rc;
}

int enr_sandbox_expire(struct enr_sandbox *sb, const char *vendor, const char *token)
{
	json_object *claims = NULL, *sbx;
	struct refresh *r;
	int v = -1, rc = 0;

	if (vendor && (v = enr_sandbox__vendor_from_id(vendor)) < 0)
		return enr_error_set(ENR_E_USAGE, "unknown vendor '%s'", vendor);
	pthread_mutex_lock(&sb->lock);
	if (token) {
		if ((r = find_refresh(sb, token)))
			r->expires = (long long)time(NULL);
		else if ((claims = jwt_verify(sb, token)) &&
		         json_object_object_get_ex(claims, "sbx", &sbx) && claim(claims, "jti"))
			rc = add_revoked(sb, EXPIRED_TOKEN,
			                 enr_sandbox__vendor_from_id(claim(sbx, "v")), 0,
			                 claim(claims, "jti"));
		else
			rc = enr_error_set(ENR_E_NOTFOUND, "the sandbox never issued that token");
	} else {
		for (int i = 0; i < SB_N_VENDORS; i++)
			if (v < 0 || v == i)
				sb->expired_before[i] = sb->seq;
	}
	pthread_mutex_unlock(&sb->lock);
	json_object_put(claims);
	return rc;
}

/* ---- the consent page ---- */

void enr_sandbox__pending_free(void *item)
{
	struct sb_pending *p = item;

	if (!p)
		return;
	free(p->id);
	free(p->client_id);
	free(p->redirect_uri);
	free(p->state);
	free(p->scope);
	free(p->challenge);
	free(p->target);
	free(p);
}

static void error_page(struct sb_resp *resp, int status, const char *title, const char *text)
{
	enr_sandbox__html(resp, status, enr_sandbox__page(title, text, NULL));
}

static void complete(struct enr_sandbox *sb, struct sb_resp *resp, const struct sb_pending *p,
                     bool approve, const char *account)
{
	char *name = NULL, *code = NULL;
	char iss[128] = "";

	if (p->kind != SB_AUTH_VENDOR) {
		enr_sandbox__derapi_complete(sb, resp, p, approve, account);
		return;
	}
	/* RFC 9207: the vendor's issuer, or (a mix-up) another vendor's. */
	if (sb->send_iss)
		enr_sandbox__issuer(sb,
		                    sb->send_iss == 1       ? p->vendor
		                    : p->vendor == SB_TESLA ? SB_SMA
		                                            : SB_TESLA,
		                    iss, sizeof(iss));
	if (!approve) {
		enr_sandbox__redirect(
		    resp, enr_sandbox__add_query(p->redirect_uri, "error", "access_denied",
		                                 "error_description",
		                                 "The resource owner denied the request", "state",
		                                 p->state, "iss", iss[0] ? iss : NULL, NULL));
		return;
	}
	name = account ? strdup(account) : enr_sandbox__new_account(sb);
	if (name)
		code = enr_sandbox__new_code(sb, p, name);
	if (code)
		enr_sandbox__redirect(resp, enr_sandbox__add_query(p->redirect_uri, "code", code,
		                                                   "state", p->state, "iss",
		                                                   iss[0] ? iss : NULL, NULL));
	else
		enr_sandbox__nomem(resp);
	free(code);
	free(name);
}

static bool account_ok(const char *account)
{
	if (!account)
		return true;
	if (!account[0] || strlen(account) > MAX_ACCOUNT)
		return false;
	for (const char *c = account; *c; c++)
		if ((unsigned char)*c < 0x20)
			return false;
	return true;
}

static char *consent_html(const struct enr_sandbox *sb, const struct sb_pending *p,
                          const char *account)
{
	const char *vendor = enr_sandbox__vendor_name(p->vendor);
	char *buf = NULL, *e_vendor = enr_sandbox__html_escape(vendor);
	char *e_scope = enr_sandbox__html_escape(p->scope ? p->scope : "");
	char *e_account = enr_sandbox__html_escape(account ? account : "");
	char *e_client = enr_sandbox__html_escape(p->client_id ? p->client_id : "Derapi Join");
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);

	(void)sb;
	if (mem && e_vendor && e_scope && e_account && e_client) {
		fprintf(
		    mem,
		    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
		    "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
		    "<title>Sign in to %s (sandbox)</title><style>"
		    "body{font-family:system-ui,sans-serif;max-width:32em;margin:1.5em auto;"
		    "padding:0 1em;font-size:1.15em;line-height:1.5}"
		    "input,button{font-size:1.1em;width:100%%;box-sizing:border-box;"
		    "padding:.7em;margin:.4em 0}"
		    "button{border:0;border-radius:.4em;color:#fff}"
		    ".approve{background:#1a7f37}.deny{background:#b42318}"
		    "</style></head><body>"
		    "<h1>%s</h1><p>This is the derenroll sandbox playing %s.</p>"
		    "<p>The app <b>%s</b> asks to read your solar and battery system%s%s%s.</p>"
		    "<form method=\"post\" action=\"/consent\">"
		    "<input type=\"hidden\" name=\"request\" value=\"%s\">"
		    "<label for=\"account\">Your %s account</label>"
		    "<input id=\"account\" name=\"account\" value=\"%s\" "
		    "placeholder=\"leave empty for a new account\" autocomplete=\"username\">"
		    "<button class=\"approve\" name=\"decision\" value=\"approve\">Approve</button>"
		    "<button class=\"deny\" name=\"decision\" value=\"deny\">Deny</button>"
		    "</form></body></html>\n",
		    e_vendor, e_vendor, e_vendor, e_client, p->scope && p->scope[0] ? " (" : "",
		    e_scope, p->scope && p->scope[0] ? ")" : "", p->id, e_vendor, e_account);
	}
	if (mem)
		fclose(mem);
	free(e_vendor);
	free(e_scope);
	free(e_account);
	free(e_client);
	return buf;
}

static void consent_as(struct sb_req *req, struct sb_resp *resp, struct sb_pending *p,
                       const char *autoanswer, const char *account);

/* sandbox_region=eu|cn on a Tesla link: the customer's account lives there
 * (its name starts "eu-"/"cn-"). NULL when none is asked for; sets *bad when
 * the value is not a region. */
static char *regional_account(struct enr_sandbox *sb, const struct sb_pending *p,
                              const char *region, const char *account, bool *bad)
{
	size_t len;

	*bad = false;
	if (!region || p->kind != SB_AUTH_VENDOR || p->vendor != SB_TESLA ||
	    strcmp(region, "na") == 0)
		return NULL;
	if (strcmp(region, "eu") != 0 && strcmp(region, "cn") != 0) {
		*bad = true;
		return NULL;
	}
	len = strlen(region);
	if (account && strncmp(account, region, len) == 0 && account[len] == '-')
		return strdup(account);
	if (account)
		return enr_util_printf("%s-%s", region, account);
	account = enr_sandbox__new_account(sb);
	{
		char *named = account ? enr_util_printf("%s-%s", region, account) : NULL;
		free((char *)account);
		return named;
	}
}

void enr_sandbox__consent(struct sb_req *req, struct sb_resp *resp, struct sb_pending *p)
{
	struct enr_sandbox *sb = req->sb;
	const char *autoanswer = enr_sandbox__query(req, "sandbox_auto");
	const char *account = enr_sandbox__query(req, "sandbox_account");
	char *named = NULL;
	bool bad_region;

	if (account_ok(account))
		named = regional_account(sb, p, enr_sandbox__query(req, "sandbox_region"), account,
		                         &bad_region);
	if (account_ok(account) && bad_region) {
		error_page(resp, 400, "Bad sandbox_region", "sandbox_region is na, eu or cn.");
		enr_sandbox__pending_free(p);
		return;
	}
	if (named) {
		consent_as(req, resp, p, autoanswer, named);
		free(named);
		return;
	}
	consent_as(req, resp, p, autoanswer, account);
}

static void consent_as(struct sb_req *req, struct sb_resp *resp, struct sb_pending *p,
                       const char *autoanswer, const char *account)
{
	struct enr_sandbox *sb = req->sb;

	if (!account_ok(account)) {
		error_page(resp, 400, "Bad sandbox_account",
		           "sandbox_account must be 1 to 100 printable characters.");
		enr_sandbox__pending_free(p);
		return;
	}
	if (autoanswer) {
		if (strcmp(autoanswer, "approve") != 0 && strcmp(autoanswer, "deny") != 0)
			error_page(resp, 400, "Bad sandbox_auto",
			           "sandbox_auto is approve or deny.");
		else
			complete(sb, resp, p, strcmp(autoanswer, "approve") == 0, account);
		enr_sandbox__pending_free(p);
		return;
	}
	p->id = enr_util_random_token(18);
	p->created_ms = enr_sandbox__now_ms();
	if (!p->id) {
		enr_sandbox__nomem(resp);
		enr_sandbox__pending_free(p);
		return;
	}
	enr_sandbox__html(resp, 200, consent_html(sb, p, account));
	enr_sandbox__ring_put(&sb->pending, p);
}

void enr_sandbox__consent_post(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *id = enr_sandbox__form(req, "request");
	const char *decision = enr_sandbox__form(req, "decision");
	const char *account = enr_sandbox__form(req, "account");
	struct sb_pending *p = NULL;

	if (strcmp(req->method, "POST") != 0 || !id || !decision) {
		error_page(resp, 400, "Bad request", "Use the Approve or Deny button.");
		return;
	}
	for (size_t i = 0; i < sb->pending.cap; i++) {
		struct sb_pending *candidate = sb->pending.items[i];
		if (candidate && strcmp(candidate->id, id) == 0) {
			p = candidate;
			sb->pending.items[i] = NULL;
			break;
		}
	}
	if (account && !account[0])
		account = NULL;
	if (!p || enr_sandbox__now_ms() - p->created_ms > PENDING_TTL_MS)
		error_page(resp, 400, "This sign-in expired",
		           "This sign-in link expired or was already used: start again from the "
		           "installer's screen.");
	else if (!account_ok(account))
		error_page(resp, 400, "Bad account name",
		           "The account name must be 1 to 100 printable characters.");
	else
		complete(sb, resp, p, strcmp(decision, "approve") == 0, account);
	enr_sandbox__pending_free(p);
}
