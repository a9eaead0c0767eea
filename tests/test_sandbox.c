/* The sandbox against a real HTTP client (libcurl): every vendor's round trip,
 * what it refuses, and every injected fault. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "fixtures.h"
#include "helpers.h"
#include "answers.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/join.h"
#include "derenroll/sandbox.h"
#include "derenroll/solis.h"
#include "derenroll/vendor.h"
#include "util.h"

#define LOOPBACK_CALLBACK "http://127.0.0.1:8765/callback"

struct fixture {
	struct test_world world;
	struct enr_sandbox *sb; /* the world's, for short */
	struct enr_config *cfg;
	struct enr_catalog *catalog;
	const char *url;
};

struct http {
	long status;
	char *body;
	size_t len;
	char *location;
	char *retry_after;
	char *content_type;
	CURLcode curl;
};

/* ---- HTTP ---- */

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
	struct http *h = userdata;
	char *grown = realloc(h->body, h->len + size * n + 1);

	if (!grown)
		return 0;
	h->body = grown;
	memcpy(h->body + h->len, data, size * n);
	h->len += size * n;
	h->body[h->len] = '\0';
	return size * n;
}

static char *header_copy(CURL *curl, const char *name)
{
	struct curl_header *hdr = NULL;

	if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &hdr) != CURLHE_OK)
		return NULL;
	return strdup(hdr->value);
}

/* One request, no redirects followed; `headers` NULL-terminated; timeout in ms. */
static void request(struct http *h, const char *method, const char *url, const char *const *headers,
                    const char *body, long timeout_ms)
{
	CURL *curl = curl_easy_init();
	struct curl_slist *list = NULL;

	memset(h, 0, sizeof(*h));
	assert_non_null(curl);
	for (size_t i = 0; headers && headers[i]; i++)
		list = curl_slist_append(list, headers[i]);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, h);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	if (body) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	h->curl = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &h->status);
	h->location = header_copy(curl, "Location");
	h->retry_after = header_copy(curl, "Retry-After");
	h->content_type = header_copy(curl, "Content-Type");
	curl_slist_free_all(list);
	curl_easy_cleanup(curl);
}

static void http_done(struct http *h)
{
	free(h->body);
	free(h->location);
	free(h->retry_after);
	free(h->content_type);
	memset(h, 0, sizeof(*h));
}

static void get(struct http *h, const char *url, const char *const *headers)
{
	request(h, "GET", url, headers, NULL, 10000);
	assert_int_equal(h->curl, CURLE_OK);
}

static void post(struct http *h, const char *url, const char *const *headers, const char *body)
{
	request(h, "POST", url, headers, body ? body : "", 10000);
	assert_int_equal(h->curl, CURLE_OK);
}

static void post_form(struct http *h, const char *url, const char *body)
{
	const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
	post(h, url, headers, body);
}

static json_object *body_json(const struct http *h)
{
	json_object *obj = h->body ? json_tokener_parse(h->body) : NULL;

	if (!obj)
		fail_msg("not JSON (HTTP %ld): %s", h->status, h->body ? h->body : "(empty)");
	return obj;
}

static const char *str(json_object *obj, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(obj, key, &v) ? json_object_get_string(v) : NULL;
}

/* A dot path ("data.page.records") inside a JSON answer. */
static json_object *at_path(json_object *obj, const char *path)
{
	char *copy = strdup(path), *save = NULL;

	for (char *part = strtok_r(copy, ".", &save); part && obj;
	     part = strtok_r(NULL, ".", &save))
		if (!json_object_object_get_ex(obj, part, &obj))
			obj = NULL;
	free(copy);
	return obj;
}

/* The value of a query parameter of a URL, decoded; malloc'd or NULL. */
static char *param(const char *url, const char *name)
{
	const char *q = url ? strchr(url, '?') : NULL;
	size_t len = strlen(name);

	while (q) {
		q++;
		if (strncmp(q, name, len) == 0 && q[len] == '=') {
			char *value = strndup(q + len + 1, strcspn(q + len + 1, "&#"));
			return enr_util_urldecode(value);
		}
		q = strchr(q, '&');
	}
	return NULL;
}

static char *enc(const char *s)
{
	return enr_util_urlencode(s);
}

/* ---- the catalogue's check entries ---- */

struct site_list {
	size_t n;
	char ids[8][40];
	char names[8][80];
};

/* The sites of an answer, read the way vendors.json's check says. */
static void check_sites(const struct fixture *f, const char *vendor_id, const struct http *h,
                        struct site_list *out)
{
	const struct enr_vendor *v = enr_catalog_find(f->catalog, vendor_id);
	json_object *obj = body_json(h), *list;

	assert_non_null(v);
	assert_true(v->has_check);
	memset(out, 0, sizeof(*out));
	list = at_path(obj, v->check.sites);
	if ((!list || !json_object_is_type(list, json_type_array)) && v->check.sites_alt)
		list = at_path(obj, v->check.sites_alt);
	assert_non_null(list);
	assert_true(json_object_is_type(list, json_type_array));
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		json_object *site = json_object_array_get_idx(list, i), *id, *name;
		if (v->check.require_field &&
		    !json_object_object_get_ex(site, v->check.require_field, NULL))
			continue;
		assert_true(json_object_object_get_ex(site, v->check.site_id, &id));
		assert_true(json_object_object_get_ex(site, v->check.site_name, &name));
		assert_true(out->n < 8);
		snprintf(out->ids[out->n], sizeof(out->ids[0]), "%s", json_object_get_string(id));
		snprintf(out->names[out->n], sizeof(out->names[0]), "%s",
		         json_object_get_string(name));
		assert_true(out->ids[out->n][0] && out->names[out->n][0]);
		out->n++;
	}
	json_object_put(obj);
}

/* ---- fixture ---- */

static int start_with(void **state, const struct enr_sandbox_options *options)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	test_world_start(&f->world, options);
	f->sb = f->world.sb;
	f->cfg = f->world.cfg;
	f->catalog = f->world.catalog;
	f->url = enr_sandbox_url(f->sb);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	const struct enr_sandbox_options o = {.sma_accept_ms = -1, .stall_ms = 20000};
	return start_with(state, &o);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	f->world.sb = f->sb; /* a test may have stopped it (NULL) */
	test_world_stop(&f->world);
	free(f);
	curl_global_cleanup();
	return 0;
}

static const char *cfg(const struct fixture *f, const char *section, const char *key)
{
	const char *v = enr_config_get(f->cfg, section, key);

	assert_non_null(v);
	return v;
}

static char *cred(const struct fixture *f, const char *path)
{
	char *text = NULL, *value;
	json_object *obj;

	assert_int_equal(enr_sandbox_credentials_json(&text, f->sb), 0);
	obj = json_tokener_parse(text);
	assert_non_null(obj);
	value = strdup(json_object_get_string(at_path(obj, path)));
	json_object_put(obj);
	free(text);
	return value;
}

/* ---- OAuth helpers ---- */

/* Runs a vendor's authorize link with `extra` added; returns the redirect. */
static char *authorize(const struct fixture *f, const char *section, const char *redirect,
                       const char *extra)
{
	char *uri = enc(redirect), *url;
	struct http h;
	char *location;

	assert_true(asprintf(&url, "%s?response_type=code&client_id=%s&redirect_uri=%s%s",
	                     cfg(f, section, "authorize_url"), cfg(f, section, "client_id"), uri,
	                     extra) > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 302);
	assert_non_null(h.location);
	location = h.location;
	h.location = NULL;
	http_done(&h);
	free(url);
	free(uri);
	return location;
}

static char *code_of(const char *location)
{
	char *code = param(location, "code");

	if (!code)
		fail_msg("no code in %s", location);
	return code;
}

static char *tesla_code(const struct fixture *f, const char *extra)
{
	char *more = NULL, *location, *code;

	assert_true(asprintf(&more,
	                     "&scope=openid%%20offline_access%%20energy_device_data"
	                     "&state=st4te%s",
	                     extra) > 0);
	location = authorize(f, "vendor.tesla", LOOPBACK_CALLBACK, more);
	code = code_of(location);
	free(location);
	free(more);
	return code;
}

static void tesla_exchange(struct http *h, const struct fixture *f, const char *code,
                           const char *redirect, const char *extra)
{
	char *body = NULL, *e_redirect = enc(redirect),
	     *e_aud = enc(cfg(f, "vendor.tesla", "api_url")); /* NA: the accounts' region */

	assert_true(asprintf(&body,
	                     "grant_type=authorization_code&client_id=%s&client_secret=%s"
	                     "&code=%s&redirect_uri=%s&audience=%s%s",
	                     cfg(f, "vendor.tesla", "client_id"),
	                     cfg(f, "vendor.tesla", "client_secret"), code, e_redirect, e_aud,
	                     extra) > 0);
	post_form(h, cfg(f, "vendor.tesla", "token_url"), body);
	free(body);
	free(e_redirect);
	free(e_aud);
}

static void tesla_refresh(struct http *h, const struct fixture *f, const char *refresh)
{
	char *body = NULL;

	assert_true(asprintf(&body, "grant_type=refresh_token&client_id=%s&refresh_token=%s",
	                     cfg(f, "vendor.tesla", "client_id"), refresh) > 0);
	post_form(h, cfg(f, "vendor.tesla", "token_url"), body);
	free(body);
}

static void bearer_get(struct http *h, const char *url, const char *token)
{
	char *auth = NULL;
	const char *headers[2] = {NULL, NULL};

	assert_true(asprintf(&auth, "Authorization: Bearer %s", token) > 0);
	headers[0] = auth;
	get(h, url, headers);
	free(auth);
}

/* The status of an answer, which it frees. */
static long status_of(struct http *h)
{
	long status = h->status;

	http_done(h);
	return status;
}

static long bearer_status(const char *url, const char *token)
{
	struct http h;

	bearer_get(&h, url, token);
	return status_of(&h);
}

static long refresh_status(const struct fixture *f, const char *refresh)
{
	struct http h;

	tesla_refresh(&h, f, refresh);
	return status_of(&h);
}

static long post_status(const char *url, const char *body)
{
	struct http h;

	post(&h, url, NULL, body);
	return status_of(&h);
}

static char *api(const struct fixture *f, const char *section, const char *path)
{
	char *url = NULL;

	assert_true(asprintf(&url, "%s%s", cfg(f, section, "api_url"), path) > 0);
	return url;
}

static json_object *jwt_payload(const char *jwt)
{
	const char *dot1 = strchr(jwt, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	unsigned char *decoded = NULL;
	char *part;
	json_object *obj;

	assert_non_null(dot2);
	part = strndup(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	assert_int_equal(enr_util_base64_decode(&decoded, NULL, part), 0);
	obj = json_tokener_parse((char *)decoded);
	assert_non_null(obj);
	free(decoded);
	free(part);
	return obj;
}

/* Gets Tesla tokens for `account` (NULL: a new one); returns the token answer. */
static json_object *tesla_tokens(const struct fixture *f, const char *account)
{
	char *extra = NULL, *code;
	struct http h;
	json_object *obj;

	assert_true(asprintf(&extra, "&sandbox_auto=approve%s%s",
	                     account ? "&sandbox_account=" : "", account ? account : "") > 0);
	code = tesla_code(f, extra);
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, "");
	assert_int_equal(h.status, 200);
	obj = body_json(&h);
	http_done(&h);
	free(code);
	free(extra);
	return obj;
}

/* ---- Tesla ---- */

static void tesla_round_trip(void **state)
{
	struct fixture *f = *state;
	char *location, *products = api(f, "vendor.tesla", "/api/1/products");
	json_object *tokens, *claims, *scp, *again;
	struct site_list sites;
	struct http h;

	location = authorize(f, "vendor.tesla", LOOPBACK_CALLBACK,
	                     "&scope=openid%20offline_access%20energy_device_data&state=xyz%20%2F1"
	                     "&sandbox_auto=approve");
	assert_true(strncmp(location, LOOPBACK_CALLBACK "?", strlen(LOOPBACK_CALLBACK) + 1) == 0);
	free(location);

	tokens = tesla_tokens(f, NULL);
	assert_non_null(str(tokens, "refresh_token"));
	assert_non_null(str(tokens, "id_token"));
	assert_string_equal(str(tokens, "token_type"), "Bearer");
	assert_int_equal(json_object_get_int(json_object_object_get(tokens, "expires_in")), 28800);

	claims = jwt_payload(str(tokens, "access_token"));
	assert_non_null(str(claims, "sub"));
	assert_true(json_object_object_get_ex(claims, "scp", &scp));
	assert_string_equal(json_object_get_string(json_object_array_get_idx(scp, 2)),
	                    "energy_device_data");
	assert_true(json_object_get_int64(json_object_object_get(claims, "exp")) >
	            json_object_get_int64(json_object_object_get(claims, "iat")));
	json_object_put(claims);

	bearer_get(&h, products, str(tokens, "access_token"));
	assert_int_equal(h.status, 200);
	check_sites(f, "tesla", &h, &sites);
	/* The vehicle is not a site. */
	assert_int_equal(sites.n, 1);
	assert_non_null(strstr(h.body, "\"vehicle_id\""));
	assert_non_null(strstr(h.body, "\"count\":2"));
	http_done(&h);

	/* Rotation: a new pair; the old refresh token is spent (grace 0). */
	tesla_refresh(&h, f, str(tokens, "refresh_token"));
	assert_int_equal(h.status, 200);
	again = body_json(&h);
	http_done(&h);
	assert_string_not_equal(str(again, "refresh_token"), str(tokens, "refresh_token"));
	assert_string_not_equal(str(again, "access_token"), str(tokens, "access_token"));
	assert_int_equal(bearer_status(products, str(again, "access_token")), 200);
	tesla_refresh(&h, f, str(tokens, "refresh_token"));
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "invalid_grant"));
	http_done(&h);
	assert_int_equal(refresh_status(f, str(again, "refresh_token")), 200);

	json_object_put(again);
	json_object_put(tokens);
	free(products);
}

/* Three regions: an EU account's code and refresh token say EU_, its exchange
 * wants the EU audience, NA answers 421, users/region names the EU host, and
 * a refresh that sends a client secret is refused. */
static void tesla_regions(void **state)
{
	struct fixture *f = *state;
	char *code, *na = api(f, "vendor.tesla", "/api/1/products"), *eu = NULL, *region = NULL,
	            *body = NULL;
	json_object *tokens, *answer;
	struct http h;

	assert_true(asprintf(&eu, "%s/api/1/products", cfg(f, "vendor.tesla", "api_url_eu")) > 0);
	assert_true(asprintf(&region, "%s/api/1/users/region", cfg(f, "vendor.tesla", "api_url")) >
	            0);
	code = tesla_code(f, "&sandbox_auto=approve&sandbox_region=eu");
	assert_int_equal(strncmp(code, "EU_", 3), 0);
	/* The NA audience (tesla_exchange's) is not this account's region. */
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, "");
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "region"));
	http_done(&h);
	free(code);

	code = tesla_code(f, "&sandbox_auto=approve&sandbox_account=eu-erik");
	assert_true(asprintf(&body,
	                     "grant_type=authorization_code&client_id=%s&client_secret=%s"
	                     "&code=%s&redirect_uri=%s&audience=%s",
	                     cfg(f, "vendor.tesla", "client_id"),
	                     cfg(f, "vendor.tesla", "client_secret"), code, LOOPBACK_CALLBACK,
	                     cfg(f, "vendor.tesla", "api_url_eu")) > 0);
	post_form(&h, cfg(f, "vendor.tesla", "token_url"), body);
	assert_int_equal(h.status, 200);
	tokens = body_json(&h);
	http_done(&h);
	assert_int_equal(strncmp(str(tokens, "refresh_token"), "EU_", 3), 0);

	assert_int_equal(bearer_status(eu, str(tokens, "access_token")), 200);
	assert_int_equal(bearer_status(na, str(tokens, "access_token")), 421);
	bearer_get(&h, region, str(tokens, "access_token"));
	assert_int_equal(h.status, 200);
	answer = body_json(&h);
	http_done(&h);
	assert_string_equal(json_object_get_string(enr_util_json_at(answer, "response.region")),
	                    "eu");
	assert_string_equal(
	    json_object_get_string(enr_util_json_at(answer, "response.fleet_api_base_url")),
	    cfg(f, "vendor.tesla", "api_url_eu"));
	json_object_put(answer);

	/* Tesla's refresh is grant_type, client_id and refresh_token: no secret. */
	free(body);
	assert_true(asprintf(&body,
	                     "grant_type=refresh_token&client_id=%s&client_secret=%s"
	                     "&refresh_token=%s",
	                     cfg(f, "vendor.tesla", "client_id"),
	                     cfg(f, "vendor.tesla", "client_secret"),
	                     str(tokens, "refresh_token")) > 0);
	post_form(&h, cfg(f, "vendor.tesla", "token_url"), body);
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "client_secret"));
	http_done(&h);
	assert_int_equal(refresh_status(f, str(tokens, "refresh_token")), 200);

	json_object_put(tokens);
	free(code);
	free(body);
	free(na);
	free(eu);
	free(region);
}

static void tesla_same_account_again(void **state)
{
	struct fixture *f = *state;
	json_object *a1 = tesla_tokens(f, "alice"), *a2 = tesla_tokens(f, "alice");
	json_object *b = tesla_tokens(f, "bob"), *fresh = tesla_tokens(f, NULL);
	json_object *c1 = jwt_payload(str(a1, "access_token"));
	json_object *c2 = jwt_payload(str(a2, "access_token"));
	json_object *cb = jwt_payload(str(b, "access_token"));
	json_object *cf = jwt_payload(str(fresh, "access_token"));
	json_object *id = jwt_payload(str(a1, "id_token"));

	assert_string_equal(str(c1, "sub"), str(c2, "sub"));
	assert_string_equal(str(id, "sub"), str(c1, "sub"));
	assert_string_not_equal(str(c1, "sub"), str(cb, "sub"));
	assert_string_not_equal(str(c1, "sub"), str(cf, "sub"));
	assert_string_not_equal(str(cb, "sub"), str(cf, "sub"));
	json_object_put(c1);
	json_object_put(c2);
	json_object_put(cb);
	json_object_put(cf);
	json_object_put(id);
	json_object_put(a1);
	json_object_put(a2);
	json_object_put(b);
	json_object_put(fresh);
}

static void tesla_refuses(void **state)
{
	struct fixture *f = *state;
	char *url = NULL, *body = NULL, *code, *location, *e_uri = enc(LOOPBACK_CALLBACK);
	struct http h;

	/* A redirect URI that is not registered: an error page, never a redirect. */
	assert_true(asprintf(&url,
	                     "%s?response_type=code&client_id=%s&redirect_uri=%s&scope=openid"
	                     "&sandbox_auto=approve",
	                     cfg(f, "vendor.tesla", "authorize_url"),
	                     cfg(f, "vendor.tesla", "client_id"),
	                     "https%3A%2F%2Fevil.example%2Fcallback") > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 400);
	assert_null(h.location);
	assert_non_null(strstr(h.body, "invalid_redirect_uri"));
	http_done(&h);
	free(url);
	/* Loopback needs a port and the /callback path. */
	assert_true(asprintf(&url,
	                     "%s?response_type=code&client_id=%s&redirect_uri=%s&scope=openid"
	                     "&sandbox_auto=approve",
	                     cfg(f, "vendor.tesla", "authorize_url"),
	                     cfg(f, "vendor.tesla", "client_id"),
	                     "http%3A%2F%2F127.0.0.1%3A99%2Fother") > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 400);
	http_done(&h);
	free(url);
	/* An unknown app. */
	assert_true(asprintf(&url, "%s?response_type=code&client_id=nobody&redirect_uri=%s",
	                     cfg(f, "vendor.tesla", "authorize_url"), e_uri) > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 400);
	assert_null(h.location);
	http_done(&h);
	free(url);
	/* Any port and localhost are fine for loopback (RFC 8252). */
	location = authorize(f, "vendor.tesla", "http://localhost:1/callback",
	                     "&scope=openid&sandbox_auto=approve");
	assert_non_null(strstr(location, "code="));
	free(location);
	/* Deny: access_denied and the state, back at the redirect URI. */
	location = authorize(f, "vendor.tesla", LOOPBACK_CALLBACK,
	                     "&scope=openid&state=s1&sandbox_auto=deny");
	code = param(location, "error");
	assert_string_equal(code, "access_denied");
	free(code);
	code = param(location, "state");
	assert_string_equal(code, "s1");
	free(code);
	free(location);

	/* Wrong client secret. */
	code = tesla_code(f, "&sandbox_auto=approve");
	assert_true(asprintf(&body,
	                     "grant_type=authorization_code&client_id=%s&client_secret=wrong"
	                     "&code=%s&redirect_uri=%s&audience=x",
	                     cfg(f, "vendor.tesla", "client_id"), code, e_uri) > 0);
	post_form(&h, cfg(f, "vendor.tesla", "token_url"), body);
	assert_int_equal(h.status, 401);
	assert_non_null(strstr(h.body, "invalid_client"));
	http_done(&h);
	free(body);
	free(code);
	/* No audience. */
	code = tesla_code(f, "&sandbox_auto=approve");
	assert_true(asprintf(&body,
	                     "grant_type=authorization_code&client_id=%s&client_secret=%s"
	                     "&code=%s&redirect_uri=%s",
	                     cfg(f, "vendor.tesla", "client_id"),
	                     cfg(f, "vendor.tesla", "client_secret"), code, e_uri) > 0);
	post_form(&h, cfg(f, "vendor.tesla", "token_url"), body);
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "audience"));
	http_done(&h);
	free(body);
	free(code);
	/* Another redirect URI at the exchange than at the authorization. */
	code = tesla_code(f, "&sandbox_auto=approve");
	tesla_exchange(&h, f, code, "http://127.0.0.1:8766/callback", "");
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "redirect_uri"));
	http_done(&h);
	free(code);
	/* A replayed code. */
	code = tesla_code(f, "&sandbox_auto=approve");
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, "");
	assert_int_equal(h.status, 200);
	http_done(&h);
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, "");
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "invalid_grant"));
	http_done(&h);
	free(code);
	/* Form bodies only. */
	post(&h, cfg(f, "vendor.tesla", "token_url"), NULL, "{\"grant_type\":\"refresh_token\"}");
	assert_int_equal(h.status, 400);
	http_done(&h);
	free(e_uri);
}

static void codes_expire(void **state)
{
	struct fixture *f = *state;
	char *code;
	struct http h;

	assert_int_equal(enr_sandbox_set(f->sb, "code_ttl_ms", 50), 0);
	code = tesla_code(f, "&sandbox_auto=approve");
	usleep(150 * 1000);
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, "");
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "expired"));
	http_done(&h);
	free(code);
}

/* Tesla's JWKS: the public keys its id_tokens are signed with, RSA and EC. */
static void jwks_and_strict_settings(void **state)
{
	struct fixture *f = *state;
	char url[256];
	struct http h;
	json_object *set, *keys;
	bool rsa = false, ec = false;

	snprintf(url, sizeof(url), "%s/tesla/oauth2/v3/discovery/keys", f->url);
	get(&h, url, NULL);
	assert_int_equal(h.status, 200);
	set = json_tokener_parse(h.body);
	assert_true(json_object_object_get_ex(set, "keys", &keys));
	for (size_t i = 0; i < json_object_array_length(keys); i++) {
		json_object *k = json_object_array_get_idx(keys, i), *v;
		assert_true(json_object_object_get_ex(k, "kty", &v));
		rsa |= strcmp(json_object_get_string(v), "RSA") == 0 &&
		       json_object_object_get_ex(k, "n", NULL) &&
		       !json_object_object_get_ex(k, "d", NULL);
		ec |= strcmp(json_object_get_string(v), "EC") == 0 &&
		      json_object_object_get_ex(k, "x", NULL) &&
		      !json_object_object_get_ex(k, "d", NULL);
	}
	assert_true(rsa);
	assert_true(ec);
	json_object_put(set);
	http_done(&h);
	/* The settings of a strict provider, in range only. */
	assert_int_equal(enr_sandbox_set(f->sb, "iss", 2), 0);
	assert_int_equal(enr_sandbox_set(f->sb, "iss", 3), ENR_E_USAGE);
	assert_int_equal(enr_sandbox_set(f->sb, "id_token", 4), 0);
	assert_int_equal(enr_sandbox_set(f->sb, "id_token", 5), ENR_E_USAGE);
	assert_int_equal(enr_sandbox_set(f->sb, "require_pkce", 2), ENR_E_USAGE);
	assert_int_equal(enr_sandbox_set(f->sb, "refresh_needs_consent", 1), 0);
}

static void pkce_is_enforced(void **state)
{
	struct fixture *f = *state;
	/* The challenge computed independently (Python hashlib) from the verifier. */
	const char *verifier = "sandbox-pkce-verifier-0123456789-abcdefghijk";
	const char *challenge = "&code_challenge=COywqlHE0hcsJqPLpfFPznhXcSrhsNoQQ-70vyHpM2o"
	                        "&code_challenge_method=S256&sandbox_auto=approve";
	char *code, *extra = NULL, *location, *error;
	struct http h;

	assert_int_equal(strlen(verifier), 44);
	code = tesla_code(f, challenge);
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, "");
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "PKCE"));
	http_done(&h);
	free(code);

	code = tesla_code(f, challenge);
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK,
	               "&code_verifier=sandbox-pkce-verifier-0123456789-abcdefghijX");
	assert_int_equal(h.status, 400);
	http_done(&h);
	free(code);

	code = tesla_code(f, challenge);
	assert_true(asprintf(&extra, "&code_verifier=%s", verifier) > 0);
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, extra);
	assert_int_equal(h.status, 200);
	http_done(&h);
	free(extra);
	free(code);

	/* Only S256. */
	location =
	    authorize(f, "vendor.tesla", LOOPBACK_CALLBACK,
	              "&scope=openid&code_challenge=COywqlHE0hcsJqPLpfFPznhXcSrhsNoQQ-70vyHpM2o"
	              "&code_challenge_method=plain&sandbox_auto=approve");
	error = param(location, "error");
	assert_string_equal(error, "invalid_request");
	free(error);
	free(location);
}

static void refresh_grace_window(void **state)
{
	struct fixture *f = *state;
	json_object *tokens = tesla_tokens(f, NULL);

	assert_int_equal(enr_sandbox_set(f->sb, "refresh_grace", 30), 0);
	assert_int_equal(refresh_status(f, str(tokens, "refresh_token")), 200);
	/* Within the grace window the previous token still works... */
	assert_int_equal(refresh_status(f, str(tokens, "refresh_token")), 200);
	/* ...and not once the window is closed. */
	assert_int_equal(enr_sandbox_set(f->sb, "refresh_grace", 0), 0);
	assert_int_equal(refresh_status(f, str(tokens, "refresh_token")), 400);
	json_object_put(tokens);
}

static void revoked_and_expired_tokens(void **state)
{
	struct fixture *f = *state;
	char *products = api(f, "vendor.tesla", "/api/1/products"), *control = NULL, *body = NULL;
	json_object *t1 = tesla_tokens(f, NULL), *t2 = tesla_tokens(f, "carol");
	json_object *t3 = tesla_tokens(f, NULL);
	struct http h;

	/* Revoking the refresh token revokes the authorization. */
	assert_int_equal(enr_sandbox_revoke(f->sb, str(t1, "refresh_token")), 0);
	tesla_refresh(&h, f, str(t1, "refresh_token"));
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "revoked"));
	http_done(&h);
	bearer_get(&h, products, str(t1, "access_token"));
	assert_int_equal(h.status, 401);
	assert_non_null(strstr(h.body, "login_required"));
	http_done(&h);
	assert_int_equal(enr_sandbox_revoke(f->sb, "never-issued"), ENR_E_NOTFOUND);

	/* Revoking an account through the control endpoint. */
	assert_true(asprintf(&control, "%s/_sandbox/revoke", f->url) > 0);
	assert_int_equal(post_status(control, "{\"vendor\": \"tesla\", \"account\": \"carol\"}"),
	                 200);
	assert_int_equal(bearer_status(products, str(t2, "access_token")), 401);
	assert_int_equal(refresh_status(f, str(t2, "refresh_token")), 400);
	/* The account approving again gets working tokens. */
	json_object_put(t2);
	t2 = tesla_tokens(f, "carol");
	assert_int_equal(bearer_status(products, str(t2, "access_token")), 200);

	/* Expired access tokens, one and all; refreshing gives a working one. */
	free(control);
	assert_true(asprintf(&control, "%s/_sandbox/expire", f->url) > 0);
	assert_true(asprintf(&body, "{\"token\": \"%s\"}", str(t3, "access_token")) > 0);
	assert_int_equal(post_status(control, body), 200);
	bearer_get(&h, products, str(t3, "access_token"));
	assert_int_equal(h.status, 401);
	assert_non_null(strstr(h.body, "token expired"));
	http_done(&h);
	assert_int_equal(bearer_status(products, str(t2, "access_token")), 200);
	assert_int_equal(post_status(control, "{\"vendor\": \"tesla\"}"), 200);
	assert_int_equal(bearer_status(products, str(t2, "access_token")), 401);
	tesla_refresh(&h, f, str(t2, "refresh_token"));
	assert_int_equal(h.status, 200);
	json_object_put(t2);
	t2 = body_json(&h);
	http_done(&h);
	assert_int_equal(bearer_status(products, str(t2, "access_token")), 200);

	json_object_put(t1);
	json_object_put(t2);
	json_object_put(t3);
	free(body);
	free(control);
	free(products);
}

static void tesla_scope_is_checked(void **state)
{
	struct fixture *f = *state;
	char *location, *code, *products = api(f, "vendor.tesla", "/api/1/products");
	json_object *tokens;
	struct http h;

	location = authorize(f, "vendor.tesla", LOOPBACK_CALLBACK,
	                     "&scope=openid%20offline_access&sandbox_auto=approve");
	code = code_of(location);
	tesla_exchange(&h, f, code, LOOPBACK_CALLBACK, "");
	assert_int_equal(h.status, 200);
	tokens = body_json(&h);
	http_done(&h);
	assert_int_equal(bearer_status(products, str(tokens, "access_token")), 403);
	json_object_put(tokens);
	free(code);
	free(location);
	free(products);
}

/* ---- the consent page ---- */

static void consent_page_approve_and_deny(void **state)
{
	struct fixture *f = *state;
	char *url = NULL, *e_uri = enc(LOOPBACK_CALLBACK), *id, *body = NULL, *consent = NULL;
	char *value;
	struct http h;

	assert_true(asprintf(&url,
	                     "%s?response_type=code&client_id=%s&redirect_uri=%s&state=page"
	                     "&sandbox_account=dave",
	                     cfg(f, "vendor.sma", "authorize_url"),
	                     cfg(f, "vendor.sma", "client_id"), e_uri) > 0);
	assert_true(asprintf(&consent, "%s/consent", f->url) > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.content_type, "text/html"));
	assert_non_null(strstr(h.body, "name=\"viewport\""));
	assert_non_null(strstr(h.body, ">Approve<"));
	assert_non_null(strstr(h.body, ">Deny<"));
	assert_non_null(strstr(h.body, "value=\"dave\""));
	id = strstr(h.body, "name=\"request\" value=\"");
	assert_non_null(id);
	id = strndup(id + 22, strcspn(id + 22, "\""));
	http_done(&h);

	assert_true(asprintf(&body, "request=%s&account=dave&decision=approve", id) > 0);
	post_form(&h, consent, body);
	assert_int_equal(h.status, 302);
	value = param(h.location, "state");
	assert_string_equal(value, "page");
	free(value);
	value = param(h.location, "code");
	assert_non_null(value);
	free(value);
	http_done(&h);
	/* The page's request is used up. */
	post_form(&h, consent, body);
	assert_int_equal(h.status, 400);
	http_done(&h);
	free(body);
	free(id);

	get(&h, url, NULL);
	id = strstr(h.body, "name=\"request\" value=\"");
	id = strndup(id + 22, strcspn(id + 22, "\""));
	http_done(&h);
	assert_true(asprintf(&body, "request=%s&account=&decision=deny", id) > 0);
	post_form(&h, consent, body);
	assert_int_equal(h.status, 302);
	value = param(h.location, "error");
	assert_string_equal(value, "access_denied");
	free(value);
	http_done(&h);

	free(body);
	free(id);
	free(consent);
	free(url);
	free(e_uri);
}

/* ---- SMA ---- */

static void sma_token_call(struct http *h, const struct fixture *f, const char *grant_body)
{
	char *body = NULL;

	assert_true(asprintf(&body, "%s&client_id=%s&client_secret=%s", grant_body,
	                     cfg(f, "vendor.sma", "client_id"),
	                     cfg(f, "vendor.sma", "client_secret")) > 0);
	post_form(h, cfg(f, "vendor.sma", "token_url"), body);
	free(body);
}

static json_object *sma_tokens(const struct fixture *f, const char *scope)
{
	char *extra = NULL, *location, *code, *body = NULL, *e_uri = enc(LOOPBACK_CALLBACK);
	json_object *obj;
	struct http h;

	assert_true(asprintf(&extra, "&scope=%s&state=s&sandbox_auto=approve", scope) > 0);
	location = authorize(f, "vendor.sma", LOOPBACK_CALLBACK, extra);
	code = code_of(location);
	assert_true(asprintf(&body, "grant_type=authorization_code&code=%s&redirect_uri=%s", code,
	                     e_uri) > 0);
	sma_token_call(&h, f, body);
	assert_int_equal(h.status, 200);
	obj = body_json(&h);
	http_done(&h);
	free(body);
	free(code);
	free(location);
	free(extra);
	free(e_uri);
	return obj;
}

static void sma_round_trip(void **state)
{
	struct fixture *f = *state;
	json_object *tokens = sma_tokens(f, "offline_access"), *online, *again;
	char *plants = api(f, "vendor.sma", "/v1/plants"), *body = NULL;
	struct site_list sites;
	struct http h;

	assert_int_equal(json_object_get_int(json_object_object_get(tokens, "expires_in")), 300);
	assert_int_equal(json_object_get_int(json_object_object_get(tokens, "refresh_expires_in")),
	                 0);
	assert_string_equal(str(tokens, "scope"), "offline_access");
	bearer_get(&h, plants, str(tokens, "access_token"));
	assert_int_equal(h.status, 200);
	check_sites(f, "sma", &h, &sites);
	assert_int_equal(sites.n, 1);
	http_done(&h);

	assert_true(asprintf(&body, "grant_type=refresh_token&refresh_token=%s",
	                     str(tokens, "refresh_token")) > 0);
	sma_token_call(&h, f, body);
	assert_int_equal(h.status, 200);
	again = body_json(&h);
	assert_string_not_equal(str(again, "refresh_token"), str(tokens, "refresh_token"));
	http_done(&h);
	sma_token_call(&h, f, body);
	assert_int_equal(h.status, 400);
	http_done(&h);
	free(body);

	/* Without offline_access the refresh token ends with the session. */
	online = sma_tokens(f, "openid");
	assert_int_equal(json_object_get_int(json_object_object_get(online, "refresh_expires_in")),
	                 1800);
	/* Bad client secret. */
	post_form(&h, cfg(f, "vendor.sma", "token_url"),
	          "grant_type=client_credentials&client_id=x&client_secret=y");
	assert_int_equal(h.status, 401);
	http_done(&h);
	assert_int_equal(bearer_status(plants, "not-a-token"), 401);
	json_object_put(online);
	json_object_put(again);
	json_object_put(tokens);
	free(plants);
}

static void sma_backchannel(void **state)
{
	struct fixture *f = *state;
	char *bc = NULL, *poll = NULL, *auth = NULL, *decide = NULL, *body = NULL;
	char *plants = api(f, "vendor.sma", "/v1/plants");
	char *owner = cred(f, "sma.owner_email");
	json_object *cc;
	struct site_list sites;
	struct http h;

	sma_token_call(&h, f, "grant_type=client_credentials");
	assert_int_equal(h.status, 200);
	cc = body_json(&h);
	assert_null(str(cc, "refresh_token"));
	http_done(&h);
	assert_true(asprintf(&auth, "Authorization: Bearer %s", str(cc, "access_token")) > 0);
	{
		const char *const headers[] = {auth, "Content-Type: application/json", NULL};
		assert_true(
		    asprintf(&bc, "%s/oauth2/v2/bc-authorize", cfg(f, "vendor.sma", "bc_url")) > 0);
		assert_true(asprintf(&body, "{\"loginHint\": \"%s\"}", owner) > 0);
		post(&h, bc, headers, body);
		assert_int_equal(h.status, 201);
		assert_non_null(strstr(h.body, "\"state\":\"Pending\""));
		http_done(&h);
		post(&h, bc, headers, "{\"loginHint\": \"not an e-mail\"}");
		assert_int_equal(h.status, 400);
		http_done(&h);
		assert_true(asprintf(&poll, "%s/%s", bc, owner) > 0);
		get(&h, poll, headers);
		assert_int_equal(h.status, 200);
		assert_non_null(strstr(h.body, "\"state\":\"Pending\""));
		http_done(&h);
	}
	/* Before the owner accepts, the app sees no plant. */
	bearer_get(&h, plants, str(cc, "access_token"));
	check_sites(f, "sma", &h, &sites);
	assert_int_equal(sites.n, 0);
	http_done(&h);
	assert_true(asprintf(&decide, "%s/_sandbox/sma/decide", f->url) > 0);
	free(body);
	assert_true(asprintf(&body, "{\"login_hint\": \"%s\", \"decision\": \"accept\"}", owner) >
	            0);
	post(&h, decide, NULL, body);
	assert_int_equal(h.status, 200);
	http_done(&h);
	bearer_get(&h, poll, str(cc, "access_token"));
	assert_non_null(strstr(h.body, "\"state\":\"Accepted\""));
	http_done(&h);
	bearer_get(&h, plants, str(cc, "access_token"));
	check_sites(f, "sma", &h, &sites);
	assert_int_equal(sites.n, 1);
	http_done(&h);

	/* The owner's own accept after a delay; "decline..." owners decline. */
	assert_int_equal(enr_sandbox_set(f->sb, "sma_accept_ms", 1), 0);
	{
		const char *const headers[] = {auth, "Content-Type: application/json", NULL};
		char *declined = NULL;
		post(&h, bc, headers, "{\"loginHint\": \"decline-me@example.com\"}");
		assert_int_equal(h.status, 201);
		http_done(&h);
		usleep(20 * 1000);
		assert_true(asprintf(&declined, "%s/decline-me@example.com", bc) > 0);
		get(&h, declined, headers);
		assert_non_null(strstr(h.body, "\"state\":\"Rejected\""));
		http_done(&h);
		free(declined);
		/* "expire..." owners let the request lapse. */
		post(&h, bc, headers, "{\"loginHint\": \"expire-me@example.com\"}");
		assert_int_equal(h.status, 201);
		http_done(&h);
		usleep(20 * 1000);
		assert_true(asprintf(&declined, "%s/expire-me@example.com", bc) > 0);
		get(&h, declined, headers);
		assert_non_null(strstr(h.body, "\"state\":\"Expired\""));
		http_done(&h);
		free(declined);
	}
	assert_int_equal(enr_sandbox_sma_decide(f->sb, "nobody@example.com", true), ENR_E_NOTFOUND);

	json_object_put(cc);
	free(plants);
	free(owner);
	free(bc);
	free(poll);
	free(auth);
	free(decide);
	free(body);
}

/* ---- Enphase ---- */

static void enphase_token_call(struct http *h, const struct fixture *f, const char *query,
                               const char *secret, const char *body)
{
	char *url = NULL, *basic = NULL, *b64, *auth = NULL;
	const char *headers[3] = {NULL, "Content-Type: application/x-www-form-urlencoded", NULL};

	assert_true(asprintf(&basic, "%s:%s", cfg(f, "vendor.enphase", "client_id"),
	                     secret ? secret : cfg(f, "vendor.enphase", "client_secret")) > 0);
	b64 = enr_util_base64_encode(basic, strlen(basic), false);
	assert_true(asprintf(&auth, "Authorization: Basic %s", b64) > 0);
	headers[0] = auth;
	assert_true(asprintf(&url, "%s?%s", cfg(f, "vendor.enphase", "token_url"), query) > 0);
	post(h, url, headers, body);
	free(url);
	free(basic);
	free(b64);
	free(auth);
}

static void enphase_round_trip(void **state)
{
	struct fixture *f = *state;
	const char *redirect = cfg(f, "vendor.enphase", "redirect_uri");
	char *location, *code, *query = NULL, *e_uri = enc(redirect), *systems = NULL;
	json_object *tokens, *claims, *again;
	struct site_list sites;
	struct http h;

	location = authorize(f, "vendor.enphase", redirect, "&sandbox_auto=approve");
	/* The default redirect page shows the code to copy. */
	assert_true(strncmp(location, redirect, strlen(redirect)) == 0);
	code = code_of(location);
	get(&h, location, NULL);
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.body, code));
	http_done(&h);

	/* Parameters in the body instead of the query: refused. */
	assert_true(asprintf(&query, "grant_type=authorization_code&redirect_uri=%s&code=%s", e_uri,
	                     code) > 0);
	enphase_token_call(&h, f, "x=1", NULL, query);
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "query"));
	http_done(&h);
	/* Wrong Basic secret. */
	enphase_token_call(&h, f, query, "wrong", "");
	assert_int_equal(h.status, 401);
	http_done(&h);
	enphase_token_call(&h, f, query, NULL, "");
	assert_int_equal(h.status, 200);
	tokens = body_json(&h);
	http_done(&h);
	claims = jwt_payload(str(tokens, "access_token"));
	assert_non_null(str(claims, "enl_uid"));
	assert_string_equal(str(claims, "enl_uid"), str(tokens, "enl_uid"));
	json_object_put(claims);

	assert_true(asprintf(&systems, "%s/api/v4/systems?key=%s",
	                     cfg(f, "vendor.enphase", "api_url"),
	                     cfg(f, "vendor.enphase", "api_key")) > 0);
	bearer_get(&h, systems, str(tokens, "access_token"));
	assert_int_equal(h.status, 200);
	check_sites(f, "enphase", &h, &sites);
	assert_int_equal(sites.n, 1);
	http_done(&h);
	free(systems);
	assert_true(asprintf(&systems, "%s/api/v4/systems?key=0123456789abcdef0123456789abcdef",
	                     cfg(f, "vendor.enphase", "api_url")) > 0);
	bearer_get(&h, systems, str(tokens, "access_token"));
	assert_int_equal(h.status, 401);
	assert_non_null(strstr(h.body, "API Key -Client mismatch"));
	http_done(&h);

	free(query);
	assert_true(asprintf(&query, "grant_type=refresh_token&refresh_token=%s",
	                     str(tokens, "refresh_token")) > 0);
	enphase_token_call(&h, f, query, NULL, "");
	assert_int_equal(h.status, 200);
	again = body_json(&h);
	assert_string_not_equal(str(again, "refresh_token"), str(tokens, "refresh_token"));
	http_done(&h);
	enphase_token_call(&h, f, query, NULL, "");
	assert_int_equal(h.status, 400);
	http_done(&h);

	json_object_put(again);
	json_object_put(tokens);
	free(systems);
	free(query);
	free(code);
	free(location);
	free(e_uri);
}

static void solaredge_sites(struct http *h, const struct fixture *f, const char *key);

/*
 * Whether `got` has exactly the recorded shape: the same keys at every level
 * of objects, the same JSON types, arrays' entries shaped like the recorded
 * first entry. `where` names the place for the failure message.
 */
static void same_shape(json_object *want, json_object *got, const char *where)
{
	enum json_type wt = json_object_get_type(want), gt = json_object_get_type(got);

	/* A number is a number, whole or not (capacities, sizes). */
	if (wt == json_type_double && gt == json_type_int)
		gt = json_type_double;
	if (wt != gt)
		fail_msg("%s: a %s where the recording has a %s", where, json_type_to_name(gt),
		         json_type_to_name(wt));
	if (wt == json_type_object) {
		char path[256];
		json_object_object_foreach(want, key, val)
		{
			json_object *other = NULL;
			snprintf(path, sizeof(path), "%s.%s", where, key);
			if (!json_object_object_get_ex(got, key, &other))
				fail_msg("%s: missing (the recording has it)", path);
			same_shape(val, other, path);
		}
		json_object_object_foreach(got, gkey, gval)
		{
			(void)gval;
			if (!json_object_object_get_ex(want, gkey, NULL))
				fail_msg("%s.%s: sent, but the vendor does not send it", where,
				         gkey);
		}
	} else if (wt == json_type_array && json_object_array_length(want) > 0) {
		char path[256];
		for (size_t i = 0; i < json_object_array_length(got); i++) {
			snprintf(path, sizeof(path), "%s[%zu]", where, i);
			same_shape(json_object_array_get_idx(want, 0),
			           json_object_array_get_idx(got, i), path);
		}
	}
}

static void expect_recorded_shape(const struct http *h, const char *vendor, const char *name)
{
	json_object *rec = NULL, *got = body_json(h);

	assert_int_equal(enr_answers__get(&rec, vendor, name), 0);
	same_shape(enr_util_json_at(rec, "body"), got, name);
	json_object_put(got);
}

/* The sandbox's answers have the recorded shapes, key for key: it cannot
 * send a field, or a type, that the vendor does not. */
static void answers_have_the_recorded_shapes(void **state)
{
	struct fixture *f = *state;
	char *access = cred(f, "enphase_partner.access_token");
	char *key = cred(f, "enphase_partner.api_key"), *systems = NULL;
	char *se_key = cred(f, "solaredge.api_key");
	struct http h;

	assert_true(asprintf(&systems, "%s/api/v4/systems?key=%s",
	                     cfg(f, "vendor.enphase", "api_url"), key) > 0);
	bearer_get(&h, systems, access);
	assert_int_equal(h.status, 200);
	expect_recorded_shape(&h, "enphase", "systems");
	http_done(&h);
	bearer_get(&h, systems, "not-a-token");
	assert_int_equal(h.status, 401);
	expect_recorded_shape(&h, "enphase", "not-authorized");
	http_done(&h);
	solaredge_sites(&h, f, se_key);
	assert_int_equal(h.status, 200);
	expect_recorded_shape(&h, "solaredge", "sites");
	http_done(&h);
	solaredge_sites(&h, f, "invalid-key-2");
	assert_int_equal(h.status, 401);
	expect_recorded_shape(&h, "solaredge", "invalid-key");
	http_done(&h);
	free(systems);
	free(access);
	free(key);
	free(se_key);
}

static void enphase_partner_account(void **state)
{
	struct fixture *f = *state;
	char *access = cred(f, "enphase_partner.access_token");
	char *key = cred(f, "enphase_partner.api_key");
	char *refresh = cred(f, "enphase_partner.refresh_token");
	char *systems = NULL, *query = NULL;
	struct site_list sites;
	struct http h;

	assert_string_equal(key, cfg(f, "vendor.enphase", "api_key"));
	assert_true(asprintf(&systems, "%s/api/v4/systems?key=%s",
	                     cfg(f, "vendor.enphase", "api_url"), key) > 0);
	bearer_get(&h, systems, access);
	assert_int_equal(h.status, 200);
	check_sites(f, "enphase", &h, &sites);
	assert_int_equal(sites.n, 3);
	http_done(&h);
	assert_true(asprintf(&query, "grant_type=refresh_token&refresh_token=%s", refresh) > 0);
	enphase_token_call(&h, f, query, NULL, "");
	assert_int_equal(h.status, 200);
	http_done(&h);
	free(query);
	free(systems);
	free(access);
	free(key);
	free(refresh);
}

/* ---- SolarEdge ---- */

static void solaredge_sites_as(struct http *h, const struct fixture *f, const char *key,
                               const char *account_key)
{
	char *url = api(f, "vendor.solaredge", "/v2/sites"), *header = NULL, *account = NULL;
	const char *headers[] = {NULL, NULL, NULL};

	if (key) {
		assert_true(asprintf(&header, "X-API-Key: %s", key) > 0);
		headers[0] = header;
	}
	if (account_key) {
		assert_true(asprintf(&account, "X-Account-Key: %s", account_key) > 0);
		headers[key ? 1 : 0] = account;
	}
	get(h, url, headers);
	free(header);
	free(account);
	free(url);
}

static void solaredge_sites(struct http *h, const struct fixture *f, const char *key)
{
	solaredge_sites_as(h, f, key, NULL);
}

static long solaredge_status(const struct fixture *f, const char *key)
{
	struct http h;

	solaredge_sites(&h, f, key);
	return status_of(&h);
}

static void solaredge_keys(void **state)
{
	struct fixture *f = *state;
	char *key = cred(f, "solaredge.api_key"), *company = cred(f, "solaredge_account.api_key");
	char *v1 = NULL, *text = NULL, *line = NULL;
	struct site_list sites, again;
	struct http h;

	solaredge_sites(&h, f, key);
	assert_int_equal(h.status, 200);
	check_sites(f, "solaredge", &h, &sites);
	assert_int_equal(sites.n, 1);
	http_done(&h);
	/* The same key, the same site; another key, another account. */
	solaredge_sites(&h, f, key);
	check_sites(f, "solaredge", &h, &again);
	assert_string_equal(sites.ids[0], again.ids[0]);
	http_done(&h);
	solaredge_sites(&h, f, "ANYOTHERKEY123");
	assert_int_equal(h.status, 200);
	check_sites(f, "solaredge", &h, &again);
	assert_string_not_equal(sites.ids[0], again.ids[0]);
	http_done(&h);

	/* The company's Fleet account: the three printed sites, with its account key only. */
	assert_string_equal(company, cfg(f, "vendor.solaredge", "api_key"));
	assert_int_equal(solaredge_status(f, company), 401);
	solaredge_sites_as(&h, f, company, cfg(f, "vendor.solaredge", "account_key"));
	assert_int_equal(h.status, 200);
	check_sites(f, "solaredge", &h, &sites);
	assert_int_equal(sites.n, 3);
	http_done(&h);
	assert_int_equal(enr_sandbox_credentials_json(&text, f->sb), 0);
	assert_true(asprintf(&line, "\"site_ids\": [%s, %s, %s]", sites.ids[0], sites.ids[1],
	                     sites.ids[2]) > 0);
	assert_non_null(strstr(text, line));

	solaredge_sites(&h, f, "invalid-key-1");
	assert_int_equal(h.status, 401);
	assert_string_equal(h.content_type, "application/problem+json");
	assert_non_null(strstr(h.body, "\"detail\":\"Invalid API key\""));
	http_done(&h);
	assert_int_equal(solaredge_status(f, NULL), 401);
	assert_int_equal(enr_sandbox_revoke_account(f->sb, "solaredge", key), 0);
	assert_int_equal(solaredge_status(f, key), 401);

	/* v1 is gone. */
	assert_true(asprintf(&v1, "%s/sites/list?size=100&api_key=%s",
	                     cfg(f, "vendor.solaredge", "api_url"), company) > 0);
	get(&h, v1, NULL);
	assert_int_equal(h.status, 410);
	http_done(&h);

	free(v1);
	free(text);
	free(line);
	free(key);
	free(company);
}

/* ---- Solis ---- */

enum solis_tamper { SOLIS_GOOD, SOLIS_BAD_SECRET, SOLIS_OLD_DATE, SOLIS_BAD_MD5 };

static void solis_call(struct http *h, const struct fixture *f, const char *key_id,
                       const char *secret, enum solis_tamper tamper)
{
	const char *body = "{\"pageNo\":1,\"pageSize\":100}";
	const char *path = "/v1/api/userStationList";
	char *url = NULL, *md5 = NULL, *date = NULL, *auth = NULL;
	struct enr_solis_headers sign;
	long long now = (long long)time(NULL);

	if (tamper == SOLIS_OLD_DATE)
		now -= 20 * 60;
	assert_int_equal(enr_solis_sign(&sign, key_id,
	                                tamper == SOLIS_BAD_SECRET ? "not-the-secret" : secret,
	                                path, "application/json", body, strlen(body), now),
	                 0);
	assert_true(
	    asprintf(&md5, "Content-MD5: %s",
	             tamper == SOLIS_BAD_MD5 ? "1B2M2Y8AsgTpgAmY7PhCfg==" : sign.content_md5) > 0);
	assert_true(asprintf(&date, "Date: %s", sign.date) > 0);
	assert_true(asprintf(&auth, "Authorization: %s", sign.authorization) > 0);
	{
		const char *const headers[] = {md5, date, auth, "Content-Type: application/json",
		                               NULL};
		assert_true(asprintf(&url, "%s%s", cfg(f, "vendor.solis", "api_url"), path) > 0);
		post(h, url, headers, body);
	}
	enr_solis_headers_done(&sign);
	free(url);
	free(md5);
	free(date);
	free(auth);
}

static long solis_status(const struct fixture *f, const char *key_id, const char *secret,
                         enum solis_tamper tamper)
{
	struct http h;

	solis_call(&h, f, key_id, secret, tamper);
	return status_of(&h);
}

static void solis_signatures(void **state)
{
	struct fixture *f = *state;
	char *key_id = cred(f, "solis.key_id"), *secret = cred(f, "solis.key_secret");
	struct site_list sites;
	json_object *obj;
	struct http h;

	assert_true(strncmp(key_id, "demo-", 5) == 0);
	solis_call(&h, f, key_id, secret, SOLIS_GOOD);
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.body, "\"code\":\"0\""));
	check_sites(f, "solis", &h, &sites);
	assert_int_equal(sites.n, 1);
	http_done(&h);
	solis_call(&h, f, cfg(f, "vendor.solis", "key_id"), cfg(f, "vendor.solis", "key_secret"),
	           SOLIS_GOOD);
	check_sites(f, "solis", &h, &sites);
	assert_int_equal(sites.n, 3);
	http_done(&h);
	assert_int_equal(solis_status(f, "demo-customer-42", secret, SOLIS_GOOD), 200);
	assert_int_equal(solis_status(f, key_id, secret, SOLIS_BAD_SECRET), 403);
	assert_int_equal(solis_status(f, "1300386381676", secret, SOLIS_GOOD), 403);
	assert_int_equal(solis_status(f, key_id, secret, SOLIS_OLD_DATE), 408);
	assert_int_equal(solis_status(f, key_id, secret, SOLIS_BAD_MD5), 400);

	solis_call(&h, f, "demo-noapi-7", secret, SOLIS_GOOD);
	assert_int_equal(h.status, 200);
	obj = body_json(&h);
	assert_string_equal(str(obj, "code"), "R0000");
	json_object_put(obj);
	http_done(&h);
	free(key_id);
	free(secret);
}

/* ---- Derapi ---- */

static char *derapi_token(const struct fixture *f, const char *secret)
{
	char *basic = NULL, *b64, *auth = NULL, *token = NULL;
	struct http h;
	json_object *obj;

	assert_true(asprintf(&basic, "%s:%s", cfg(f, "derapi", "client_id"), secret) > 0);
	b64 = enr_util_base64_encode(basic, strlen(basic), false);
	assert_true(asprintf(&auth, "Authorization: Basic %s", b64) > 0);
	{
		const char *const headers[] = {
		    auth, "Content-Type: application/x-www-form-urlencoded", NULL};
		post(&h, cfg(f, "derapi", "auth_url"), headers, "grant_type=client_credentials");
	}
	if (h.status == 200) {
		obj = body_json(&h);
		token = strdup(str(obj, "access_token"));
		json_object_put(obj);
	}
	http_done(&h);
	free(basic);
	free(b64);
	free(auth);
	return token;
}

static void derapi_call(struct http *h, const struct fixture *f, const char *method,
                        const char *path, const char *token, const char *body,
                        const char *extra_header)
{
	char *url = NULL, *auth = NULL;
	const char *headers[5] = {"api-version: v2024-09-01", "Content-Type: application/json"};

	assert_true(asprintf(&url, "%s%s", cfg(f, "derapi", "api_url"), path) > 0);
	assert_true(asprintf(&auth, "Authorization: Bearer %s", token) > 0);
	headers[2] = auth;
	headers[3] = extra_header;
	request(h, method, url, headers, body, 10000);
	assert_int_equal(h->curl, CURLE_OK);
	free(url);
	free(auth);
}

/* Starts a Join session for the vendors of `body`; returns its id. */
static char *session_start(const struct fixture *f, const char *token, const char *body)
{
	struct http h;
	json_object *obj;
	char *id;

	derapi_call(&h, f, "POST", "/join/session/start", token, body, NULL);
	assert_int_equal(h.status, 200);
	obj = body_json(&h);
	assert_non_null(str(obj, "sessionID"));
	id = strdup(str(obj, "sessionID"));
	json_object_put(obj);
	http_done(&h);
	return id;
}

/* The customer answers the session's page for `vendor` ("approve" or "deny"). */
static void session_answer(const struct fixture *f, const char *session, const char *vendor,
                           const char *answer)
{
	char *url = NULL;
	struct http h;

	assert_true(asprintf(&url, "%s/join/session/%s/authorize?vendor=%s&sandbox_auto=%s",
	                     cfg(f, "derapi", "api_url"), session, vendor, answer) > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 200);
	http_done(&h);
	free(url);
}

static void fetch_token(struct http *h, const struct fixture *f, const char *token,
                        const char *session)
{
	char *path = NULL;

	assert_true(asprintf(&path, "/join/session/%s/fetch-token", session) > 0);
	derapi_call(h, f, "GET", path, token, NULL, NULL);
	free(path);
}

/* A session for `vendor` alone that the customer answers; fetch-token's answer in `h`. */
static void session_alone(struct http *h, const struct fixture *f, const char *token,
                          const char *vendor, const char *answer)
{
	char *body = NULL, *session;

	assert_true(asprintf(&body, "{\"vendors\": [{\"vendor\": \"%s\"}]}", vendor) > 0);
	session = session_start(f, token, body);
	session_answer(f, session, vendor, answer);
	fetch_token(h, f, token, session);
	free(session);
	free(body);
}

static void derapi_session(void **state)
{
	struct fixture *f = *state;
	char *token = derapi_token(f, cfg(f, "derapi", "client_secret")), *body = NULL;
	char *path = NULL, *products = api(f, "vendor.tesla", "/api/1/products");
	char *session, *url = NULL, *auth = NULL, *x = NULL;
	json_object *vendors, *t, *v;
	struct http h, p;

	assert_non_null(token);
	assert_null(derapi_token(f, "wrong"));
	/* Without the api-version header. */
	assert_true(asprintf(&url, "%s/join/session/start", cfg(f, "derapi", "api_url")) > 0);
	assert_true(asprintf(&auth, "Authorization: Bearer %s", token) > 0);
	{
		const char *const headers[] = {auth, NULL};
		post(&h, url, headers, "{\"vendors\": [{\"vendor\": \"solis\"}]}");
		assert_int_equal(h.status, 400);
		http_done(&h);
	}
	derapi_call(&h, f, "POST", "/join/session/start", "not-a-token",
	            "{\"vendors\": [{\"vendor\": \"solis\"}]}", NULL);
	assert_int_equal(h.status, 401);
	http_done(&h);
	/* Wrong inline credentials. */
	derapi_call(&h, f, "POST", "/join/session/start", token,
	            "{\"vendors\": [{\"vendor\": \"tesla\", \"credentials\": {\"clientID\": \"x\", "
	            "\"clientSecret\": \"y\"}}]}",
	            NULL);
	assert_int_equal(h.status, 400);
	http_done(&h);

	assert_true(asprintf(&body,
	                     "{\"storeCredentials\": true, \"vendors\": [{\"vendor\": \"tesla\", "
	                     "\"credentials\": {\"clientID\": \"%s\", \"clientSecret\": \"%s\"}}, "
	                     "{\"vendor\": \"solis\"}, {\"vendor\": \"enphasevpp\"}]}",
	                     cfg(f, "vendor.tesla", "client_id"),
	                     cfg(f, "vendor.tesla", "client_secret")) > 0);
	session = session_start(f, token, body);
	assert_true(asprintf(&path, "/join/session/%s/vendors", session) > 0);
	derapi_call(&h, f, "GET", path, token, NULL, NULL);
	assert_int_equal(h.status, 200);
	vendors = body_json(&h);
	/* The widget's contract: a bare array of {id, name, base64Logo,
	 * oAuthEndpoint}, no oAuthEndpoint for key vendors (Solis). */
	assert_true(json_object_is_type(vendors, json_type_array));
	assert_int_equal(json_object_array_length(vendors), 3);
	for (size_t i = 0; i < 3; i++) {
		json_object *e = json_object_array_get_idx(vendors, i);
		const char *id = str(e, "id");
		assert_non_null(id);
		assert_non_null(str(e, "name"));
		assert_true(strncmp(str(e, "base64Logo"), "data:image/", 11) == 0);
		if (strcmp(id, "solis") == 0)
			assert_false(json_object_object_get_ex(e, "oAuthEndpoint", NULL));
		else
			assert_non_null(strstr(str(e, "oAuthEndpoint"), "/authorize?vendor="));
	}
	json_object_put(vendors);
	http_done(&h);
	fetch_token(&h, f, token, session);
	assert_int_equal(h.status, 204);
	http_done(&h);

	/* The customer approves Tesla through the session's page. */
	session_answer(f, session, "tesla", "approve");
	fetch_token(&h, f, token, session);
	assert_int_equal(h.status, 200);
	t = body_json(&h);
	http_done(&h);
	assert_string_equal(str(t, "vendor"), "tesla");
	assert_true(json_object_object_get_ex(t, "expiresIn", &v));
	assert_true(json_object_is_type(v, json_type_string));
	assert_non_null(str(t, "refreshToken"));
	/* The widget reads access_token (snake case). */
	assert_non_null(str(t, "access_token"));
	/* The vendor token works at the vendor and through Derapi's site list. */
	bearer_get(&p, products, str(t, "access_token"));
	assert_int_equal(p.status, 200);
	http_done(&p);
	assert_true(asprintf(&x, "X-Authorization-tesla: Bearer %s", str(t, "access_token")) > 0);
	derapi_call(&p, f, "GET", "/sites", token, NULL, x);
	assert_int_equal(p.status, 200);
	assert_non_null(strstr(p.body, "\"vendor\":\"tesla\""));
	http_done(&p);
	json_object_put(t);
	free(session);

	/* enphasevpp gives a siteID; a declined session says so. */
	session_alone(&h, f, token, "enphasevpp", "approve");
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.body, "\"siteID\""));
	http_done(&h);
	session_alone(&h, f, token, "solaredge", "deny");
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "access_denied"));
	http_done(&h);

	/* Key vendors: the customer's keys to auth-granted, without any auth
	 * header; a bad key is a body with "failed" (the widget's rule). */
	session = session_start(f, token, "{\"vendors\": [{\"vendor\": \"solis\"}]}");
	free(path);
	assert_true(asprintf(&path, "/join/solis/auth-granted?state=%s&code=demo-1234567:wrong",
	                     session) > 0);
	derapi_call(&h, f, "GET", path, "not-needed", NULL, NULL);
	assert_false(enr_join_auth_granted(h.status, h.body));
	http_done(&h);
	fetch_token(&h, f, token, session);
	assert_int_equal(h.status, 204);
	http_done(&h);
	free(path);
	assert_true(asprintf(&path, "/join/solis/auth-granted?state=%s&code=demo-1234567:%s",
	                     session, cfg(f, "vendor.solis", "key_secret")) > 0);
	derapi_call(&h, f, "GET", path, "not-needed", NULL, NULL);
	assert_true(enr_join_auth_granted(h.status, h.body));
	http_done(&h);
	fetch_token(&h, f, token, session);
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.body, "\"keyID\":\"demo-1234567\""));
	assert_null(strstr(h.body, "apiKey"));
	http_done(&h);
	free(session);

	free(x);
	free(url);
	free(auth);
	free(path);
	free(body);
	free(token);
	free(products);
}

static void derapi_flows(void **state)
{
	struct fixture *f = *state;
	char *token = derapi_token(f, cfg(f, "derapi", "client_secret")), *url = NULL, *path = NULL;
	char *value, *e_flow = NULL, *body = NULL;
	json_object *flow;
	struct http h;

	/* Tesla's entry must name the company's stored app credentials. */
	derapi_call(&h, f, "POST", "/join/flows", token,
	            "{\"redirectURI\": \"https://installer.example/done\", \"programID\": \"p1\", "
	            "\"vendors\": [{\"vendor\": \"tesla\"}, {\"vendor\": \"solis\"}]}",
	            NULL);
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "credentialsID"));
	http_done(&h);
	derapi_call(&h, f, "POST", "/join/flows", token,
	            "{\"redirectURI\": \"https://installer.example/done\", "
	            "\"vendors\": [{\"vendor\": \"sma\", \"credentialsID\": \"cred_nosuch\"}]}",
	            NULL);
	assert_int_equal(h.status, 400);
	assert_non_null(strstr(h.body, "no such credentials"));
	http_done(&h);
	assert_true(asprintf(&body,
	                     "{\"redirectURI\": \"https://installer.example/done\", \"programID\": "
	                     "\"p1\", \"vendors\": [{\"vendor\": \"tesla\", \"credentialsID\": "
	                     "\"%s\"}, {\"vendor\": \"solis\"}]}",
	                     cfg(f, "vendor.tesla", "credentials_id")) > 0);
	derapi_call(&h, f, "POST", "/join/flows", token, body, NULL);
	free(body);
	assert_int_equal(h.status, 201);
	flow = body_json(&h);
	http_done(&h);
	assert_non_null(str(flow, "id"));

	/* No Derapi auth on the authorize link: it is the customer's. */
	assert_true(asprintf(&url,
	                     "%s/join/flows/%s/authorize?vendor=tesla&state=q%%26r"
	                     "&sandbox_auto=approve",
	                     cfg(f, "derapi", "api_url"), str(flow, "id")) > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 302);
	assert_true(strncmp(h.location, "https://installer.example/done?", 31) == 0);
	value = param(h.location, "state");
	assert_string_equal(value, "q&r");
	free(value);
	value = param(h.location, "enrollmentID");
	assert_non_null(value);
	http_done(&h);
	assert_true(asprintf(&path, "/join/enrollments/%s", value) > 0);
	derapi_call(&h, f, "GET", path, token, NULL, NULL);
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.body, "\"vendor\":\"tesla\""));
	assert_non_null(strstr(h.body, "\"sites\":[{"));
	http_done(&h);
	free(path);
	free(value);
	free(url);

	/* Deny; a vendor outside the flow. */
	assert_true(asprintf(&url,
	                     "%s/join/flows/%s/authorize?vendor=tesla&state=s"
	                     "&sandbox_auto=deny",
	                     cfg(f, "derapi", "api_url"), str(flow, "id")) > 0);
	get(&h, url, NULL);
	value = param(h.location, "error");
	assert_string_equal(value, "access_denied");
	free(value);
	http_done(&h);
	free(url);
	assert_true(asprintf(&url, "%s/join/flows/%s/authorize?vendor=sma&state=s",
	                     cfg(f, "derapi", "api_url"), str(flow, "id")) > 0);
	get(&h, url, NULL);
	value = param(h.location, "error");
	assert_string_equal(value, "invalid_request");
	free(value);
	http_done(&h);
	free(url);

	/* The configured flow redirects to the sandbox's relay callback. */
	assert_true(asprintf(&url,
	                     "%s/join/flows/%s/authorize?vendor=sma&state=z"
	                     "&sandbox_auto=approve&sandbox_account=erin",
	                     cfg(f, "derapi", "api_url"), cfg(f, "derapi", "flow_id")) > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 302);
	assert_true(asprintf(&e_flow, "%s/relay/callback?state=z&enrollmentID=", f->url) > 0);
	assert_true(strncmp(h.location, e_flow, strlen(e_flow)) == 0);
	http_done(&h);
	free(url);
	free(e_flow);

	json_object_put(flow);
	free(token);
}

static void derapi_sites_headers(void **state)
{
	struct fixture *f = *state;
	char *token = derapi_token(f, cfg(f, "derapi", "client_secret"));
	char *key_id = cred(f, "solis.key_id"), *secret = cred(f, "solis.key_secret");
	char *se = cred(f, "solaredge.api_key"), *basic = NULL, *b64, *header = NULL;
	struct http h;

	assert_true(asprintf(&basic, "%s:%s", key_id, secret) > 0);
	b64 = enr_util_base64_encode(basic, strlen(basic), false);
	assert_true(asprintf(&header, "X-Authorization-solis: Basic %s", b64) > 0);
	derapi_call(&h, f, "GET", "/sites", token, NULL, header);
	assert_int_equal(h.status, 200);
	check_sites(f, "derapi", &h, &(struct site_list){0});
	assert_non_null(strstr(h.body, "\"vendor\":\"solis\""));
	http_done(&h);
	free(header);
	assert_true(asprintf(&header, "X-Authorization-solaredge: %s", se) > 0);
	derapi_call(&h, f, "GET", "/sites", token, NULL, header);
	assert_int_equal(h.status, 200);
	http_done(&h);
	free(header);
	/* Refused vendor credentials: 200 with an errors entry for the vendor. */
	assert_true(asprintf(&header, "X-Authorization-solaredge: invalid-%s", se) > 0);
	derapi_call(&h, f, "GET", "/sites", token, NULL, header);
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.body, "\"errors\":{\"solaredge\":\"Unauthorized: "));
	assert_non_null(strstr(h.body, "\"sites\":[]"));
	http_done(&h);
	derapi_call(&h, f, "GET", "/sites", token, NULL, "X-Authorization-tesla: Bearer nope");
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.body, "\"errors\":{\"tesla\":"));
	http_done(&h);
	derapi_call(&h, f, "GET", "/sites", token, NULL, NULL);
	assert_int_equal(h.status, 403);
	http_done(&h);
	free(header);
	free(basic);
	free(b64);
	free(key_id);
	free(secret);
	free(se);
	free(token);
}

/* ---- the relay, mounted at /relay ---- */

static void relay_phone_flow(void **state)
{
	struct fixture *f = *state;
	const char *relay = cfg(f, "relay", "url");
	const char *redirect = cfg(f, "vendor.tesla", "redirect_uri");
	const char *st = "sandboxRelayState-0123456789";
	char *target = NULL, *body = NULL, *auth = NULL, *links = NULL, *results = NULL;
	char *e_redirect = enc(redirect), *callback, *code;
	json_object *obj;
	struct http h;

	assert_true(asprintf(&links, "%s/relay", f->url) > 0);
	assert_string_equal(relay, links);
	free(links);
	assert_true(asprintf(&target,
	                     "%s?response_type=code&client_id=%s&redirect_uri=%s"
	                     "&scope=openid%%20offline_access%%20energy_device_data&state=%s"
	                     "&sandbox_auto=approve",
	                     cfg(f, "vendor.tesla", "authorize_url"),
	                     cfg(f, "vendor.tesla", "client_id"), e_redirect, st) > 0);
	assert_true(asprintf(&body,
	                     "{\"target\": \"%s\", \"state\": \"%s\", \"ttl\": 600, "
	                     "\"vendor\": \"tesla\"}",
	                     target, st) > 0);
	assert_true(asprintf(&auth, "Authorization: Bearer %s", cfg(f, "relay", "secret")) > 0);
	assert_true(asprintf(&links, "%s/v1/links", relay) > 0);
	assert_true(asprintf(&results, "%s/v1/results/%s", relay, st) > 0);
	{
		const char *const headers[] = {auth, "Content-Type: application/json", NULL};
		post(&h, links, headers, body);
		assert_int_equal(h.status, 201);
		obj = body_json(&h);
		http_done(&h);
		/* Nothing yet. */
		get(&h, results, headers);
		assert_int_equal(h.status, 204);
		http_done(&h);
	}
	/* The phone: short link, vendor, back to the relay. */
	assert_true(strncmp(str(obj, "url"), relay, strlen(relay)) == 0);
	get(&h, str(obj, "url"), NULL);
	assert_int_equal(h.status, 302);
	assert_string_equal(h.location, target);
	http_done(&h);
	get(&h, target, NULL);
	assert_int_equal(h.status, 302);
	assert_true(strncmp(h.location, redirect, strlen(redirect)) == 0);
	callback = strdup(h.location);
	http_done(&h);
	get(&h, callback, NULL);
	assert_int_equal(h.status, 200);
	assert_non_null(strstr(h.content_type, "text/html"));
	http_done(&h);
	/* The wizard: the result once, then the code exchange. */
	{
		const char *const headers[] = {auth, NULL};
		get(&h, results, headers);
		assert_int_equal(h.status, 200);
		json_object_put(obj);
		obj = body_json(&h);
		http_done(&h);
		code = param(callback, "code");
		assert_string_equal(str(obj, "code"), code);
		assert_string_equal(str(obj, "state"), st);
		get(&h, results, headers);
		assert_int_equal(h.status, 404);
		http_done(&h);
	}
	tesla_exchange(&h, f, code, redirect, "");
	assert_int_equal(h.status, 200);
	http_done(&h);
	free(code);
	free(callback);
	json_object_put(obj);
	free(target);
	free(body);
	free(auth);
	free(links);
	free(results);
	free(e_redirect);
}

struct poll {
	const struct fixture *f;
	char *auth, *url;
	struct http h;
};

static void *long_poll(void *arg)
{
	struct poll *p = arg;
	const char *const headers[] = {p->auth, NULL};

	request(&p->h, "GET", p->url, headers, NULL, 20000);
	return NULL;
}

static void stop_answers_relay_polls(void **state)
{
	struct fixture *f = *state;
	const char *st = "sandboxWaitingState-0123456789";
	char *body = NULL, *links = NULL;
	struct poll p = {.f = f};
	struct timespec t0, t1;
	pthread_t thread;
	struct http h;

	assert_true(asprintf(&p.auth, "Authorization: Bearer %s", cfg(f, "relay", "secret")) > 0);
	assert_true(asprintf(&links, "%s/v1/links", cfg(f, "relay", "url")) > 0);
	assert_true(asprintf(&p.url, "%s/v1/results/%s?wait=60", cfg(f, "relay", "url"), st) > 0);
	assert_true(asprintf(&body,
	                     "{\"target\": \"%s/tesla/oauth2/v3/authorize\", \"state\": \"%s\"}",
	                     f->url, st) > 0);
	{
		const char *const headers[] = {p.auth, "Content-Type: application/json", NULL};
		post(&h, links, headers, body);
		assert_int_equal(h.status, 201);
		http_done(&h);
	}
	assert_int_equal(pthread_create(&thread, NULL, long_poll, &p), 0);
	usleep(300 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	enr_sandbox_stop(f->sb);
	f->sb = NULL;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_join(thread, NULL);
	/* The waiting poll was answered (pending), not left for its 60 s. */
	assert_int_equal(p.h.curl, CURLE_OK);
	assert_int_equal(p.h.status, 204);
	assert_true(t1.tv_sec - t0.tv_sec < 10);
	http_done(&p.h);
	free(p.auth);
	free(p.url);
	free(links);
	free(body);
}

/* ---- faults ---- */

struct stalled {
	const char *url;
	struct http h;
};

static void *stalled_request(void *arg)
{
	struct stalled *s = arg;

	request(&s->h, "GET", s->url, NULL, NULL, 1500);
	return NULL;
}

static void faults(void **state)
{
	struct fixture *f = *state;
	char *key = cred(f, "solaredge.api_key"), *control = NULL;
	struct stalled stall = {0};
	struct timespec t0, t1;
	pthread_t thread;
	json_object *obj;
	struct http h;

	assert_true(asprintf(&control, "%s/_sandbox/faults", f->url) > 0);
	/* 429 with its Retry-After, once; then the vendor answers again. */
	post(&h, control, NULL,
	     "{\"vendor\": \"solaredge\", \"kind\": \"429\", \"count\": 1, "
	     "\"retry_after\": 7}");
	assert_int_equal(h.status, 200);
	http_done(&h);
	solaredge_sites(&h, f, key);
	assert_int_equal(h.status, 429);
	assert_string_equal(h.retry_after, "7");
	http_done(&h);
	assert_int_equal(solaredge_status(f, key), 200);
	/* Faults are per vendor. */
	assert_int_equal(enr_sandbox_add_fault(f->sb, "tesla", ENR_SANDBOX_FAULT_500, 1, 0), 0);
	assert_int_equal(solaredge_status(f, key), 200);
	get(&h, cfg(f, "vendor.tesla", "token_url"), NULL);
	assert_int_equal(h.status, 500);
	http_done(&h);

	assert_int_equal(
	    enr_sandbox_add_fault(f->sb, "solaredge", ENR_SANDBOX_FAULT_MALFORMED, 1, 0), 0);
	solaredge_sites(&h, f, key);
	assert_int_equal(h.status, 200);
	assert_string_equal(h.content_type, "application/json");
	obj = json_tokener_parse(h.body);
	assert_null(obj);
	http_done(&h);

	assert_int_equal(enr_sandbox_add_fault(f->sb, NULL, ENR_SANDBOX_FAULT_HUGE, 1, 0), 0);
	solaredge_sites(&h, f, key);
	assert_int_equal(h.status, 200);
	assert_int_equal(h.len, 5 * 1024 * 1024);
	obj = json_tokener_parse(h.body);
	assert_non_null(obj);
	json_object_put(obj);
	http_done(&h);

	/* A stalled body: the client times out, while other requests go on. */
	assert_int_equal(post_status(control, "{\"vendor\": \"solis\", \"kind\": \"stall\"}"), 200);
	assert_true(asprintf((char **)&stall.url, "%s/v1/api/userStationList",
	                     cfg(f, "vendor.solis", "api_url")) > 0);
	assert_int_equal(pthread_create(&thread, NULL, stalled_request, &stall), 0);
	usleep(200 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	solaredge_sites(&h, f, key);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(h.status, 200);
	http_done(&h);
	pthread_join(thread, NULL);
	/* The parallel request finished while the stalled one was still hanging. */
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1200);
	assert_int_equal(stall.h.curl, CURLE_OPERATION_TIMEDOUT);
	assert_non_null(stall.h.body);
	assert_true(strncmp(stall.h.body, "{\"response\"", 11) == 0);
	http_done(&stall.h);
	free((char *)stall.url);

	/* Clearing the faults. */
	request(&h, "DELETE", control, NULL, NULL, 10000);
	assert_int_equal(h.status, 200);
	http_done(&h);
	/* Bad control requests. */
	assert_int_equal(post_status(control, "{\"vendor\": \"tesla\", \"kind\": \"418\"}"), 400);
	assert_int_equal(post_status(control, "{\"vendor\": \"nobody\", \"kind\": \"500\"}"), 400);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "enphasevpp", ENR_SANDBOX_FAULT_500, 1, 0),
	                 ENR_E_USAGE);
	free(control);
	free(key);
}

static void latency_per_vendor(void **state)
{
	struct fixture *f = *state;
	char *key = cred(f, "solaredge.api_key"), *control = NULL;
	struct timespec t0, t1;
	struct http h;
	long ms;

	assert_true(asprintf(&control, "%s/_sandbox/faults", f->url) > 0);
	assert_int_equal(
	    post_status(control, "{\"vendor\": \"solaredge\", \"kind\": \"latency\", \"ms\": 300}"),
	    200);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	solaredge_sites(&h, f, key);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(h.status, 200);
	http_done(&h);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	/* A lower bound only (the delay was applied), with slack for timer granularity. */
	assert_true(ms >= 250);
	enr_sandbox_clear_faults(f->sb);
	assert_int_equal(enr_sandbox_set_latency(f->sb, "nobody", 5), ENR_E_USAGE);
	free(control);
	free(key);
}

static void stop_cuts_a_stall_short(void **state)
{
	struct fixture *f = *state;
	struct stalled stall = {0};
	struct timespec t0, t1;
	pthread_t thread;

	assert_int_equal(enr_sandbox_set(f->sb, "stall_ms", 600000), 0);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "tesla", ENR_SANDBOX_FAULT_STALL, 0, 0), 0);
	assert_true(asprintf((char **)&stall.url, "%s", cfg(f, "vendor.tesla", "token_url")) > 0);
	assert_int_equal(pthread_create(&thread, NULL, stalled_request, &stall), 0);
	usleep(300 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	enr_sandbox_stop(f->sb);
	f->sb = NULL;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_join(thread, NULL);
	/* A ten-minute stall did not hold up the shutdown. */
	assert_true(t1.tv_sec - t0.tv_sec < 10);
	assert_int_not_equal(stall.h.curl, CURLE_OK);
	http_done(&stall.h);
	free((char *)stall.url);
}

struct hammer {
	const struct fixture *f;
	int ok;
};

static void *hammer(void *arg)
{
	struct hammer *m = arg;

	for (int i = 0; i < 15; i++) {
		struct http h;
		char key[32];
		snprintf(key, sizeof(key), "PARALLEL%02d%p", i, (void *)m);
		for (char *p = key; *p; p++)
			if (!strchr(
			        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
			        *p))
				*p = '_';
		solaredge_sites(&h, m->f, key);
		m->ok += h.status == 200;
		http_done(&h);
		free(tesla_code(m->f, "&sandbox_auto=approve"));
	}
	return NULL;
}

static void parallel_clients(void **state)
{
	struct fixture *f = *state;
	struct hammer m[6];
	pthread_t threads[6];

	for (int i = 0; i < 6; i++) {
		m[i] = (struct hammer){f, 0};
		assert_int_equal(pthread_create(&threads[i], NULL, hammer, &m[i]), 0);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(threads[i], NULL);
		assert_int_equal(m[i].ok, 15);
	}
}

/* ---- what it tells its users ---- */

/* The sandbox config's endpoint = {url}/<vendor> + the path of vendors.json's default. */
static void config_matches_the_catalogue(void **state)
{
	struct fixture *f = *state;
	struct enr_config *loaded = NULL;
	char *path = NULL;
	struct stat st;
	size_t checked = 0;

	for (size_t i = 0; i < enr_catalog_count(f->catalog); i++) {
		const struct enr_vendor *v = enr_catalog_at(f->catalog, i);
		if (strcmp(v->id, "enphasevpp") == 0)
			continue;
		for (size_t e = 0; e < v->n_endpoints; e++) {
			const char *def = v->endpoints[e].url, *slash;
			char *expected = NULL;
			/* SolarEdge's retired v1 is used only where a config asks for it. */
			if (strcmp(v->endpoints[e].name, "api_v1_url") == 0) {
				assert_null(
				    enr_config_get(f->cfg, v->config_section, "api_v1_url"));
				continue;
			}
			slash = strchr(strstr(def, "://") + 3, '/');
			/* Tesla's regions below /tesla; the company's key below its domain. */
			if (strcmp(v->endpoints[e].name, "api_url_eu") == 0)
				slash = "/eu";
			else if (strcmp(v->endpoints[e].name, "api_url_cn") == 0)
				slash = "/cn";
			else if (strcmp(v->endpoints[e].name, "public_key_url") == 0)
				slash = "/_domains/{domain}/.well-known/appspecific/"
				        "com.tesla.3p.public-key.pem";
			assert_true(
			    asprintf(&expected, "%s/%s%s", f->url, v->id, slash ? slash : "") > 0);
			assert_string_equal(cfg(f, v->config_section, v->endpoints[e].name),
			                    expected);
			free(expected);
			checked++;
		}
	}
	assert_true(checked >= 12);
	assert_int_equal(strncmp(f->url, "http://127.0.0.1:", 17), 0);
	assert_int_not_equal(f->url[strlen(f->url) - 1], '/');

	assert_true(asprintf(&path, "%s/sandbox/config.ini", getenv("HOME")) > 0);
	assert_int_equal(enr_sandbox_write_config(f->sb, path), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(enr_config_load(&loaded, path), 0);
	assert_int_equal(enr_config_warning_count(loaded), 0);
	for (size_t i = 0;; i++) {
		const char *section, *key, *value;
		if (enr_config_entry(f->cfg, i, &section, &key, &value) < 0)
			break;
		assert_string_equal(enr_config_get(loaded, section, key), value);
	}
	assert_non_null(enr_config_get(loaded, "vendor.enphase", "redirect_uri"));
	assert_non_null(enr_config_get(loaded, "relay", "secret"));
	enr_config_free(loaded);
	unlink(path);
	free(path);
}

static void summary_line_has_the_contract(void **state)
{
	struct fixture *f = *state;
	static const char *const fields[] = {
	    "credentials.solaredge.api_key",
	    "credentials.solis.key_id",
	    "credentials.solis.key_secret",
	    "credentials.enphase_partner.access_token",
	    "credentials.enphase_partner.refresh_token",
	    "credentials.enphase_partner.api_key",
	    "credentials.sma.owner_email",
	    "credentials.solaredge_account.api_key",
	};
	char *line = NULL;
	json_object *obj, *ids, *config;
	struct http h;
	char *url = NULL;

	assert_int_equal(enr_sandbox_summary_json(&line, f->sb, "/tmp/x \"y\".ini"), 0);
	assert_null(strchr(line, '\n'));
	assert_true(strncmp(line, "{\"url\": \"http://127.0.0.1:", 26) == 0);
	obj = json_tokener_parse(line);
	assert_non_null(obj);
	assert_string_equal(str(obj, "url"), f->url);
	assert_string_equal(str(obj, "config"), "/tmp/x \"y\".ini");
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		json_object *v = at_path(obj, fields[i]);
		assert_non_null(v);
		assert_true(json_object_is_type(v, json_type_string));
		assert_true(json_object_get_string_len(v) > 0);
	}
	ids = at_path(obj, "credentials.solaredge_account.site_ids");
	assert_int_equal(json_object_array_length(ids), 3);
	json_object_put(obj);
	free(line);

	assert_int_equal(enr_sandbox_summary_json(&line, f->sb, NULL), 0);
	obj = json_tokener_parse(line);
	assert_true(json_object_object_get_ex(obj, "config", &config));
	assert_null(config);
	json_object_put(obj);
	free(line);

	/* The control endpoint gives the same credentials. */
	assert_int_equal(enr_sandbox_credentials_json(&line, f->sb), 0);
	assert_true(asprintf(&url, "%s/_sandbox/credentials", f->url) > 0);
	get(&h, url, NULL);
	assert_int_equal(h.status, 200);
	{
		json_object *a = json_tokener_parse(line), *b = body_json(&h);
		assert_true(json_object_equal(a, b));
		json_object_put(a);
		json_object_put(b);
	}
	http_done(&h);
	free(url);
	free(line);
}

static void start_refuses_what_is_not_loopback(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = {"0.0.0.0", "192.168.1.10", "::", "example.com", "10.0.0.1"};
	struct enr_sandbox *sb = NULL;
	struct enr_sandbox_options o = {.catalog = f->catalog};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.address = bad[i];
		assert_int_equal(enr_sandbox_start(&sb, &o), ENR_E_USAGE);
		assert_null(sb);
		assert_non_null(strstr(enr_error_last(), "loopback"));
	}
	/* The port of the running one is taken. */
	o.address = "127.0.0.1";
	o.port = enr_sandbox_port(f->sb);
	assert_int_equal(enr_sandbox_start(&sb, &o), ENR_E_IO);
	assert_null(sb);
	enr_sandbox_stop(NULL);
	/* The same seed, the same world. */
	{
		struct enr_sandbox *a = NULL, *b = NULL;
		char *ca = NULL, *cb = NULL;
		o.port = 0;
		o.seed = 42;
		assert_int_equal(enr_sandbox_start(&a, &o), 0);
		assert_int_equal(enr_sandbox_start(&b, &o), 0);
		assert_int_equal(enr_sandbox_credentials_json(&ca, a), 0);
		assert_int_equal(enr_sandbox_credentials_json(&cb, b), 0);
		/* The partner tokens differ (they are signed by each); the keys do not. */
		assert_memory_equal(ca, cb, 60);
		free(ca);
		free(cb);
		enr_sandbox_stop(a);
		enr_sandbox_stop(b);
	}
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

static const struct CMUnitTest tests[] = {
    T(tesla_round_trip),
    T(tesla_same_account_again),
    T(tesla_refuses),
    T(codes_expire),
    T(jwks_and_strict_settings),
    T(pkce_is_enforced),
    T(refresh_grace_window),
    T(revoked_and_expired_tokens),
    T(tesla_scope_is_checked),
    T(tesla_regions),
    T(consent_page_approve_and_deny),
    T(sma_round_trip),
    T(sma_backchannel),
    T(enphase_round_trip),
    T(enphase_partner_account),
    T(answers_have_the_recorded_shapes),
    T(solaredge_keys),
    T(solis_signatures),
    T(derapi_session),
    T(derapi_flows),
    T(derapi_sites_headers),
    T(relay_phone_flow),
    T(stop_answers_relay_polls),
    T(faults),
    T(latency_per_vendor),
    T(stop_cuts_a_stall_short),
    T(parallel_clients),
    T(config_matches_the_catalogue),
    T(summary_line_has_the_contract),
    T(start_refuses_what_is_not_loopback),
};

TEST_MAIN(tests)
