#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "util.h"

#define DEFAULT_API_VERSION "v2024-09-01"
/* A cached app token this close to its expiry is not used any more. */
#define TOKEN_MARGIN_S 60
#define STATE_BYTES    16

/* ---- availability ------------------------------------------------------ */

/* ENR_E_CONFIG naming what enables Join, or 0. */
static int need_credentials(const struct enr_config *cfg)
{
	const char *id = enr_config_get(cfg, "derapi", "client_id");
	char *secret = NULL;
	int rc;

	if (!id || !id[0])
		return enr_error_set(ENR_E_CONFIG,
		                     "Derapi Join is not configured: set [derapi] client_id in %s",
		                     enr_config_file_name(cfg));
	rc = enr_config_get_secret(&secret, cfg, "derapi", "client_secret");
	if (rc == 0 && !secret[0])
		rc = ENR_E_NOTFOUND;
	enr_config_free_secret(secret);
	if (rc < 0)
		return enr_error_set(ENR_E_CONFIG,
		                     "Derapi Join is not configured: no Derapi client secret (run "
		                     "derenroll secret set derapi.client_secret, or set [derapi] "
		                     "client_secret_file)");
	return 0;
}

bool enr_join_available(const struct enr_config *cfg, char **reason)
{
	int rc = need_credentials(cfg);

	if (reason)
		*reason = rc < 0 ? enr_util_strdup(enr_error_last()) : NULL;
	if (rc < 0)
		enr_error_clear();
	return rc == 0;
}

/* ---- the app's token --------------------------------------------------- */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char *key; /* auth_url + " " + client_id */
	char *token;
	long long expires_at;
} cache;

static char *cache_key(const struct enr_config *cfg)
{
	const char *url = enr_config_get(cfg, "derapi", "auth_url");
	const char *id = enr_config_get(cfg, "derapi", "client_id");

	return enr_util_printf("%s %s", url ? url : "", id ? id : "");
}

void enr_join_token_forget(void)
{
	pthread_mutex_lock(&cache_lock);
	free(cache.key);
	enr_util_free_secret(cache.token);
	cache.key = NULL;
	cache.token = NULL;
	cache.expires_at = 0;
	pthread_mutex_unlock(&cache_lock);
}

int enr_join_token_cached(char **out, const struct enr_config *cfg)
{
	char *key = cache_key(cfg);
	int rc = ENR_E_AGAIN;

	*out = NULL;
	if (!key)
		return enr_error_set(ENR_E_NOMEM, NULL);
	pthread_mutex_lock(&cache_lock);
	if (cache.token && cache.key && strcmp(cache.key, key) == 0 &&
	    cache.expires_at > (long long)time(NULL) + TOKEN_MARGIN_S) {
		*out = enr_util_strdup(cache.token);
		rc = *out ? 0 : ENR_E_NOMEM;
	}
	pthread_mutex_unlock(&cache_lock);
	free(key);
	return rc;
}

int enr_join_token_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                           const struct enr_config *cfg)
{
	int rc = need_credentials(cfg);

	*out = NULL;
	return rc < 0 ? rc : enr_oauth_client_credentials_request(out, derapi, cfg, NULL);
}

int enr_join_token_response(char **out, const struct enr_config *cfg,
                            const struct enr_http_response *resp)
{
	struct enr_oauth_tokens *tokens = NULL;
	char *key = NULL, *copy = NULL;
	int rc;

	if (out)
		*out = NULL;
	rc = enr_oauth_token_response(&tokens, resp);
	if (rc < 0) {
		if (!resp->error && resp->status == 401)
			rc =
			    enr_error_set(ENR_E_MISCONFIGURED,
			                  "Derapi refused the company's client ID or secret: check "
			                  "[derapi] client_id and derapi.client_secret");
		return rc;
	}
	key = cache_key(cfg);
	copy = enr_util_strdup(tokens->access_token);
	if (!key || !copy || (out && !(*out = enr_util_strdup(tokens->access_token)))) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	pthread_mutex_lock(&cache_lock);
	free(cache.key);
	enr_util_free_secret(cache.token);
	cache.key = key;
	cache.token = copy;
	cache.expires_at =
	    tokens->access_expires_at ? tokens->access_expires_at : (long long)time(NULL) + 3600;
	pthread_mutex_unlock(&cache_lock);
	key = copy = NULL;
out:
	free(key);
	enr_util_free_secret(copy);
	enr_oauth_tokens_free(tokens);
	return rc;
}

int enr_join_app_token(char **out, const struct enr_vendor *derapi, const struct enr_config *cfg)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	int rc = enr_join_token_cached(out, cfg);

	if (rc != ENR_E_AGAIN)
		return rc;
	rc = enr_join_token_request(&req, derapi, cfg);
	if (rc == 0)
		rc = enr_http_perform(&resp, cfg, req);
	if (rc == 0)
		rc = enr_join_token_response(out, cfg, resp);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	return rc;
}

/* ---- requests ---------------------------------------------------------- */

const char *enr_join_vendor_name(const struct enr_vendor *vendor)
{
	return vendor->derapi_name && vendor->derapi_name[0] ? vendor->derapi_name : vendor->id;
}

int enr_join_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                     const struct enr_config *cfg, const char *method, const char *path,
                     const char *token)
{
	struct enr_http_request *req = NULL;
	const char *version = enr_config_get(cfg, "derapi", "api_version");
	char *url = enr_vendor_url(derapi, cfg, "api_url", path);
	int rc;

	*out = NULL;
	if (!url)
		return enr_error_last_code();
	if (!version || !version[0])
		version = derapi->api_version ? derapi->api_version : DEFAULT_API_VERSION;
	rc = enr_http_request_new(&req, method, url);
	if (rc == 0)
		rc = enr_http_request_set_vendor(req, derapi, "api_url");
	if (rc == 0)
		rc = enr_http_request_set_bearer(req, token);
	if (rc == 0)
		rc = enr_http_request_add_header(req, "api-version", version, 0);
	free(url);
	if (rc < 0) {
		enr_http_request_free(req);
		return rc;
	}
	*out = req;
	return 0;
}

static int set_json_body(struct enr_http_request *req, json_object *body)
{
	const char *text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	return enr_http_request_set_body(req, "application/json", text, strlen(text));
}

static const char *json_str(json_object *obj, const char *a, const char *b)
{
	json_object *v = NULL;

	if (!json_object_is_type(obj, json_type_object))
		return NULL;
	if ((json_object_object_get_ex(obj, a, &v) ||
	     (b && json_object_object_get_ex(obj, b, &v))) &&
	    (json_object_is_type(v, json_type_string) || json_object_is_type(v, json_type_int)))
		return json_object_get_string(v);
	return NULL;
}

/* POST `body` (put here, whatever happens) to `path`. */
static int post_json(struct enr_http_request **out, const struct enr_vendor *derapi,
                     const struct enr_config *cfg, const char *token, const char *path,
                     json_object *body)
{
	int rc = enr_join_request(out, derapi, cfg, "POST", path, token);

	if (rc == 0)
		rc = set_json_body(*out, body);
	json_object_put(body);
	if (rc < 0) {
		enr_http_request_free(*out);
		*out = NULL;
	}
	return rc;
}

/* The JSON of a 2xx answer, or the failure class. */
static int answer_json(json_object **out, const struct enr_http_response *resp)
{
	int rc = enr_http_classify(resp);

	*out = NULL;
	return rc < 0 ? rc : enr_http_response_json(out, resp);
}

/* ---- Join Flows -------------------------------------------------------- */

int enr_join_flow_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                          const struct enr_config *cfg, const char *token,
                          const struct enr_join_flow_options *opts)
{
	json_object *body = NULL, *list;

	*out = NULL;
	if (!opts->redirect_uri || !opts->redirect_uri[0])
		return enr_error_set(ENR_E_USAGE, "a Join flow needs a redirect URI (the relay's "
		                                  "/callback)");
	if (!opts->n_vendors)
		return enr_error_set(ENR_E_USAGE, "a Join flow needs at least one vendor");
	body = json_object_new_object();
	list = json_object_new_array();
	json_object_object_add(body, "redirectURI", json_object_new_string(opts->redirect_uri));
	if (opts->program_id && opts->program_id[0])
		json_object_object_add(body, "programID", json_object_new_string(opts->program_id));
	for (size_t i = 0; i < opts->n_vendors; i++) {
		json_object *v = json_object_new_object();
		const char *creds = opts->credentials_ids ? opts->credentials_ids[i] : NULL;
		json_object_object_add(v, "vendor", json_object_new_string(opts->vendors[i]));
		if (creds && creds[0])
			json_object_object_add(v, "credentialsID", json_object_new_string(creds));
		json_object_array_add(list, v);
	}
	json_object_object_add(body, "vendors", list);
	return post_json(out, derapi, cfg, token, "/join/flows", body);
}

/* The id a 2xx answer holds under `a` or `b`. */
static int answer_id(char **out, const struct enr_http_response *resp, const char *a, const char *b,
                     const char *missing)
{
	json_object *root = NULL;
	const char *id;
	int rc;

	*out = NULL;
	rc = answer_json(&root, resp);
	if (rc < 0)
		return rc;
	id = json_str(root, a, b);
	if (!id || !id[0])
		rc = enr_http_badresponse(resp, missing);
	else if (!(*out = enr_util_strdup(id)))
		rc = enr_error_set(ENR_E_NOMEM, NULL);
	json_object_put(root);
	return rc;
}

int enr_join_flow_response(char **out, const struct enr_http_response *resp)
{
	return answer_id(out, resp, "id", "flowID", "no flow id in the answer");
}

/* The vendor whose Derapi name is `name`, or NULL. */
static const struct enr_vendor *by_derapi_name(const struct enr_catalog *catalog, const char *name)
{
	for (size_t i = 0; i < enr_catalog_count(catalog); i++) {
		const struct enr_vendor *v = enr_catalog_at(catalog, i);
		if (strcmp(v->id, "derapi") != 0 && strcmp(enr_join_vendor_name(v), name) == 0)
			return v;
	}
	return NULL;
}

/* Each vendor's `[section] credentials_id`; ENR_E_CONFIG naming the key for a
 * vendor whose flows need the company's stored app credentials. */
static int flow_credentials(const char **ids, const struct enr_catalog *catalog,
                            const struct enr_config *cfg, const struct enr_join_flow_options *opts)
{
	for (size_t i = 0; i < opts->n_vendors; i++) {
		const struct enr_vendor *v = by_derapi_name(catalog, opts->vendors[i]);
		ids[i] = v ? enr_vendor_setting(v, cfg, "credentials_id") : NULL;
		if (ids[i] && !ids[i][0])
			ids[i] = NULL;
		if (!ids[i] && v && v->derapi_access && v->derapi_access->stored_credentials)
			return enr_error_set(
			    ENR_E_CONFIG,
			    "a Join flow for %s names the company's %s app credentials stored at "
			    "Derapi: set [%s] credentials_id to their ID",
			    v->name, v->name, v->config_section);
	}
	return 0;
}

int enr_join_create_flow(char **out, const struct enr_catalog *catalog,
                         const struct enr_config *cfg, const struct enr_join_flow_options *opts)
{
	const struct enr_vendor *derapi = enr_catalog_find(catalog, "derapi");
	struct enr_join_flow_options with_ids = *opts;
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	const char **ids = NULL;
	char *token = NULL;
	int rc;

	*out = NULL;
	if (!derapi)
		return enr_error_set(ENR_E_CONFIG, "vendors.json has no derapi entry");
	if ((rc = need_credentials(cfg)) < 0)
		return rc;
	if (!opts->credentials_ids) {
		ids = calloc(opts->n_vendors ? opts->n_vendors : 1, sizeof(*ids));
		if (!ids)
			return enr_error_set(ENR_E_NOMEM, NULL);
		rc = flow_credentials(ids, catalog, cfg, opts);
		if (rc < 0) {
			free(ids);
			return rc;
		}
		with_ids.credentials_ids = ids;
	}
	rc = enr_join_app_token(&token, derapi, cfg);
	if (rc == 0)
		rc = enr_join_flow_request(&req, derapi, cfg, token, &with_ids);
	if (rc == 0)
		rc = enr_http_perform(&resp, cfg, req);
	if (rc == 0)
		rc = enr_join_flow_response(out, resp);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	enr_config_free_secret(token);
	free(ids);
	return rc;
}

int enr_join_flow_has_vendor(const struct enr_http_response *resp, const char *flow_id,
                             const struct enr_vendor *vendor)
{
	json_object *root = NULL, *list = NULL;
	const char *name = enr_join_vendor_name(vendor);
	int rc = answer_json(&root, resp);

	if (rc < 0)
		return rc;
	if (!json_object_object_get_ex(root, "vendors", &list) ||
	    !json_object_is_type(list, json_type_array)) {
		rc = enr_http_badresponse(resp, "no vendors in the flow");
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		json_object *v = json_object_array_get_idx(list, i);
		const char *n = json_object_is_type(v, json_type_string)
		                    ? json_object_get_string(v)
		                    : json_str(v, "vendor", NULL);
		if (n && strcmp(n, name) == 0)
			goto out;
	}
	rc = enr_error_set(ENR_E_CONFIG,
	                   "the Join flow %s does not include %s: create one that does with "
	                   "derenroll join create-flow --vendors ...,%s --save",
	                   flow_id, vendor->name, name);
out:
	json_object_put(root);
	return rc;
}

int enr_join_authorize_url(char **url, char **state, const struct enr_vendor *derapi,
                           const struct enr_config *cfg, const char *flow_id,
                           const struct enr_vendor *vendor)
{
	char *path = NULL, *flow = enr_util_urlencode(flow_id);
	char *name = enr_util_urlencode(enr_join_vendor_name(vendor));
	char *base = NULL;
	int rc = 0;

	*url = NULL;
	*state = enr_util_random_token(STATE_BYTES);
	path = flow ? enr_util_printf("/join/flows/%s/authorize", flow) : NULL;
	base = path ? enr_vendor_url(derapi, cfg, "api_url", path) : NULL;
	if (!*state || !flow || !name || !path || !base) {
		rc = base || !path ? enr_error_set(ENR_E_NOMEM, NULL) : enr_error_last_code();
		goto out;
	}
	*url = enr_util_printf("%s?vendor=%s&state=%s", base, name, *state);
	if (!*url)
		rc = enr_error_set(ENR_E_NOMEM, NULL);
out:
	if (rc < 0) {
		free(*state);
		*state = NULL;
	}
	free(base);
	free(path);
	free(flow);
	free(name);
	return rc;
}

const char *enr_join_program_id(const struct enr_vendor *vendor, const struct enr_config *cfg)
{
	const char *p = enr_vendor_setting(vendor, cfg, "program_id");

	if (!p || !p[0])
		p = enr_config_get(cfg, "derapi", "program_id");
	return p && p[0] ? p : NULL;
}

/* ---- Join sessions ----------------------------------------------------- */

/* {"clientID", "clientSecret"} from `[section] <id_key>` and the secret `<secret_key>`. */
static int app_credentials(json_object *into, const struct enr_vendor *vendor,
                           const struct enr_config *cfg, const char *id_key, const char *secret_key)
{
	const char *id = enr_vendor_setting(vendor, cfg, id_key);
	char *secret = NULL;
	int rc;

	if (!id || !id[0])
		return enr_error_set(ENR_E_CONFIG, "%s through Derapi Join: set [%s] %s",
		                     vendor->name, vendor->config_section, id_key);
	rc = enr_vendor_secret(&secret, vendor, cfg, secret_key);
	if (rc < 0)
		return rc;
	json_object_object_add(into, "clientID", json_object_new_string(id));
	json_object_object_add(into, "clientSecret", json_object_new_string(secret));
	enr_config_free_secret(secret);
	return 0;
}

static int session_vendor(json_object *entry, const struct enr_vendor *vendor,
                          const struct enr_config *cfg)
{
	const char *creds_id = enr_vendor_setting(vendor, cfg, "credentials_id");
	const char *id = vendor->id;
	json_object *creds = NULL;
	char *key = NULL;
	int rc = 0;

	json_object_object_add(entry, "vendor",
	                       json_object_new_string(enr_join_vendor_name(vendor)));
	if (strcmp(id, "solis") == 0 || strcmp(id, "solaredge") == 0)
		return 0;
	creds = json_object_new_object();
	if (creds_id && creds_id[0]) {
		json_object_object_add(creds, "credentialsID", json_object_new_string(creds_id));
	} else if (strcmp(id, "enphasevpp") == 0) {
		const char *program = enr_join_program_id(vendor, cfg);
		json_object *partner = json_object_new_object();
		rc = app_credentials(partner, vendor, cfg, "partner_client_id",
		                     "partner_client_secret");
		json_object_object_add(entry, "partnerAppCredentials", partner);
		if (rc == 0 && !program)
			rc = enr_error_set(ENR_E_CONFIG,
			                   "Enphase Grid Services needs a program: set [%s] "
			                   "program_id",
			                   vendor->config_section);
		if (rc == 0)
			json_object_object_add(entry, "programID", json_object_new_string(program));
		json_object_put(creds);
		return rc;
	} else {
		rc = app_credentials(creds, vendor, cfg, "client_id", "client_secret");
		if (rc == 0 && strcmp(id, "enphase") == 0) {
			rc = enr_vendor_secret(&key, vendor, cfg, "api_key");
			if (rc == 0)
				json_object_object_add(creds, "apiKey",
				                       json_object_new_string(key));
			enr_config_free_secret(key);
		}
	}
	json_object_object_add(entry, "credentials", creds);
	return rc;
}

int enr_join_session_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                             const struct enr_config *cfg, const char *token,
                             const struct enr_vendor *vendor)
{
	json_object *body = json_object_new_object(), *list = json_object_new_array();
	json_object *entry = json_object_new_object();
	int rc;

	*out = NULL;
	json_object_array_add(list, entry);
	json_object_object_add(body, "storeCredentials", json_object_new_boolean(1));
	json_object_object_add(body, "vendors", list);
	rc = session_vendor(entry, vendor, cfg);
	if (rc < 0) {
		json_object_put(body);
		return rc;
	}
	return post_json(out, derapi, cfg, token, "/join/session/start", body);
}

int enr_join_session_request_any(struct enr_http_request **out, const struct enr_vendor *derapi,
                                 const struct enr_catalog *catalog, const struct enr_config *cfg,
                                 const char *token)
{
	json_object *body = json_object_new_object(), *list = json_object_new_array();
	int rc = 0, first_rc = 0;
	char first[512] = "";

	*out = NULL;
	json_object_object_add(body, "storeCredentials", json_object_new_boolean(1));
	json_object_object_add(body, "vendors", list);
	for (size_t i = 0; i < enr_catalog_count(catalog); i++) {
		const struct enr_vendor *v = enr_catalog_at(catalog, i);
		json_object *entry;
		if (v == derapi || strcmp(v->id, "derapi") == 0 || !enr_vendor_method(v, "join"))
			continue;
		entry = json_object_new_object();
		rc = session_vendor(entry, v, cfg);
		if (rc < 0) {
			/* A vendor whose app is not set up is left out of the choice. */
			if (!first_rc) {
				first_rc = rc;
				snprintf(first, sizeof(first), "%s", enr_error_last());
			}
			json_object_put(entry);
			continue;
		}
		json_object_array_add(list, entry);
	}
	if (json_object_array_length(list) == 0) {
		json_object_put(body);
		return first_rc ? enr_error_set(first_rc, "%s", first)
		                : enr_error_set(ENR_E_CONFIG, "vendors.json has no vendor that "
		                                              "Derapi Join enrolls");
	}
	enr_error_clear();
	return post_json(out, derapi, cfg, token, "/join/session/start", body);
}

int enr_join_session_response(char **out, const struct enr_http_response *resp)
{
	return answer_id(out, resp, "sessionID", "session_id", "no sessionID in the answer");
}

void enr_join_credentials_free(struct enr_join_credentials *c)
{
	if (!c)
		return;
	free(c->vendor);
	enr_oauth_tokens_free(c->tokens);
	enr_util_free_secret(c->api_key);
	free(c->key_id);
	enr_util_free_secret(c->key_secret);
	free(c->site_id);
	free(c);
}

int enr_join_fetch_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                           const struct enr_config *cfg, const char *token, const char *session_id)
{
	char *id = enr_util_urlencode(session_id);
	char *path = id ? enr_util_printf("/join/session/%s/fetch-token", id) : NULL;
	int rc = path ? enr_join_request(out, derapi, cfg, "GET", path, token)
	              : enr_error_set(ENR_E_NOMEM, NULL);

	free(path);
	free(id);
	return rc;
}

/* A copy of a field (either spelling), registered when secret. */
static int take(char **out, json_object *root, const char *a, const char *b, bool secret)
{
	const char *v = json_str(root, a, b);

	*out = NULL;
	if (!v || !v[0])
		return 0;
	if (!(*out = enr_util_strdup(v)))
		return enr_error_set(ENR_E_NOMEM, NULL);
	if (secret)
		enr_log_add_secret(*out);
	return 0;
}

/* The credentials in a fetch-token answer's JSON (taken: put here). */
static int fetch_credentials(struct enr_join_credentials **out, json_object *root)
{
	struct enr_join_credentials *c = NULL;
	struct enr_oauth_tokens *t = NULL;
	const char *expires;
	int rc;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	t = calloc(1, sizeof(*t));
	if (!c || !t) {
		free(t);
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	c->tokens = t;
	if ((rc = take(&c->vendor, root, "vendor", NULL, false)) < 0 ||
	    (rc = take(&t->access_token, root, "accessToken", "access_token", true)) < 0 ||
	    (rc = take(&t->refresh_token, root, "refreshToken", "refresh_token", true)) < 0 ||
	    (rc = take(&c->api_key, root, "apiKey", "api_key", true)) < 0 ||
	    (rc = take(&c->key_id, root, "keyID", "key_id", false)) < 0 ||
	    (rc = take(&c->key_secret, root, "keySecret", "key_secret", true)) < 0 ||
	    (rc = take(&c->site_id, root, "siteID", "site_id", false)) < 0)
		goto out;
	t->obtained_at = (long long)time(NULL);
	expires = json_str(root, "expiresIn", "expires_in");
	if (expires && atoll(expires) > 0)
		t->access_expires_at = t->obtained_at + atoll(expires);
	if (!t->access_token) {
		enr_oauth_tokens_free(t);
		c->tokens = NULL;
	} else if (!(t->token_type = enr_util_strdup("Bearer"))) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	if (!c->tokens && !c->api_key && !(c->key_id && c->key_secret)) {
		rc = ENR_E_BADRESPONSE;
		goto out;
	}
	*out = c;
	c = NULL;
out:
	enr_join_credentials_free(c);
	json_object_put(root);
	return rc;
}

int enr_join_fetch_response(struct enr_join_credentials **out, const struct enr_http_response *resp)
{
	json_object *root = NULL;
	int rc;

	*out = NULL;
	if (!resp->error && resp->status == 204)
		return ENR_E_AGAIN;
	rc = answer_json(&root, resp);
	if (rc < 0)
		return rc;
	rc = fetch_credentials(out, root);
	if (rc == ENR_E_BADRESPONSE)
		rc = enr_http_badresponse(resp, "fetch-token gave no token and no key");
	return rc;
}

int enr_join_fetch_parse(struct enr_join_credentials **out, const char *json)
{
	json_object *root = json ? json_tokener_parse(json) : NULL;
	int rc;

	*out = NULL;
	if (!json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return enr_error_set(
		    ENR_E_BADRESPONSE,
		    "Derapi: the relay's copy of fetch-token is not a JSON object");
	}
	rc = fetch_credentials(out, root);
	if (rc == ENR_E_BADRESPONSE)
		rc = enr_error_set(
		    ENR_E_BADRESPONSE,
		    "Derapi: fetch-token (kept by the relay) gave no token and no key");
	return rc;
}

/* A field present and not empty, in either spelling. */
static bool has(json_object *root, const char *a, const char *b)
{
	const char *v = json_str(root, a, b);
	return v && v[0];
}

bool enr_join_fetch_holds_credentials(const char *json)
{
	json_object *root = json ? json_tokener_parse(json) : NULL;
	bool holds = has(root, "accessToken", "access_token") || has(root, "apiKey", "api_key") ||
	             (has(root, "keyID", "key_id") && has(root, "keySecret", "key_secret"));

	json_object_put(root);
	return holds;
}

bool enr_join_auth_granted(long status, const char *body)
{
	return status >= 200 && status < 300 && !(body && strstr(body, "failed"));
}

/* ---- checks through Derapi --------------------------------------------- */

/* A credential a header template names: the record's, or NULL. */
static const char *record_field(const struct enr_vendor *vendor, const struct enr_credentials *cred,
                                const char *name, size_t len)
{
	if (len == 6 && strncmp(name, "vendor", len) == 0)
		return enr_join_vendor_name(vendor);
	if (len == 12 && strncmp(name, "access_token", len) == 0)
		return cred->tokens.access_token;
	if (len == 7 && strncmp(name, "api_key", len) == 0)
		return cred->api_key;
	if (len == 6 && strncmp(name, "key_id", len) == 0)
		return cred->key_id;
	if (len == 10 && strncmp(name, "key_secret", len) == 0)
		return cred->key_secret;
	return NULL;
}

struct expansion {
	const struct enr_vendor *vendor;
	const struct enr_config *cfg;
	const struct enr_credentials *cred;
	bool config_fallback;
	bool missing; /* a field was absent (nothing else is set then) */
};

/* Expands `t` (up to its matching '}' when `nested`) into `out`; returns where
 * it stopped. vendors.json checked the template's shape when it was loaded. */
static const char *expand(FILE *out, const char *t, bool nested, struct expansion *x)
{
	while (*t && !(nested && *t == '}')) {
		size_t len;
		if (*t != '{') {
			fputc(*t++, out);
			continue;
		}
		t++;
		if (strncmp(t, "base64:", 7) == 0) {
			char *inner = NULL, *encoded = NULL;
			size_t inner_len = 0;
			FILE *mem = open_memstream(&inner, &inner_len);
			if (!mem) {
				x->missing = true;
				return t + strlen(t);
			}
			t = expand(mem, t + 7, true, x);
			fclose(mem);
			encoded = inner ? enr_util_base64_encode(inner, inner_len, false) : NULL;
			if (encoded)
				fputs(encoded, out);
			else
				x->missing = true;
			enr_util_free_secret(inner);
			enr_util_free_secret(encoded);
		} else {
			const char *v;
			char name[16], *from_config = NULL;
			len = strcspn(t, "}");
			v = record_field(x->vendor, x->cred, t, len);
			if ((!v || !v[0]) && x->config_fallback && len < sizeof(name)) {
				snprintf(name, sizeof(name), "%.*s", (int)len, t);
				v = enr_config_is_secret_key(name)
				        ? (enr_vendor_secret(&from_config, x->vendor, x->cfg,
				                             name) == 0
				               ? from_config
				               : NULL)
				        : enr_vendor_setting(x->vendor, x->cfg, name);
			}
			if (v && v[0])
				fputs(v, out);
			else
				x->missing = true;
			enr_config_free_secret(from_config);
			t += len;
		}
		if (*t == '}')
			t++;
	}
	return t;
}

/* The header template `t` filled from the record (and the config, with
 * fallback): malloc'd, or NULL with `missing` set. */
static char *fill(const char *t, struct expansion *x)
{
	char *text = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&text, &len);

	if (!mem)
		return NULL;
	expand(mem, t, false, x);
	fclose(mem);
	if (x->missing) {
		enr_util_free_secret(text);
		return NULL;
	}
	return text;
}

/* Whether the record holds what every header without a config fallback needs. */
static bool has_vendor_credentials(const struct enr_vendor *vendor,
                                   const struct enr_credentials *cred)
{
	const struct enr_derapi_access *a = vendor->derapi_access;

	if (!a)
		return false;
	for (size_t i = 0; i < a->n_headers; i++) {
		struct expansion x = {.vendor = vendor, .cred = cred};
		char *value;
		if (a->headers[i].config_fallback)
			continue;
		value = fill(a->headers[i].value, &x);
		enr_util_free_secret(value);
		if (!value)
			return false;
	}
	return true;
}

/* The vendor's headers of vendors.json (derapi.vendor_access), filled in. */
static int add_vendor_headers(struct enr_http_request *req, const struct enr_vendor *vendor,
                              const struct enr_config *cfg, const struct enr_credentials *cred)
{
	const struct enr_derapi_access *a = vendor->derapi_access;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < a->n_headers; i++) {
		struct expansion x = {vendor, cfg, cred, a->headers[i].config_fallback, false};
		char *name = fill(a->headers[i].name, &x);
		char *value = name ? fill(a->headers[i].value, &x) : NULL;
		if (!value)
			rc = enr_error_set(
			    ENR_E_CONFIG,
			    "%s through Derapi: the %s header needs a credential that "
			    "neither the record nor [%s] holds",
			    vendor->name, a->headers[i].name, vendor->config_section);
		else
			rc = enr_http_request_add_header(req, name, value, ENR_HTTP_SECRET);
		free(name);
		enr_util_free_secret(value);
	}
	return rc;
}

int enr_join_check_request(struct enr_http_request **out, const struct enr_vendor *derapi,
                           const struct enr_config *cfg, const char *token,
                           const struct enr_vendor *vendor, const struct enr_credentials *cred)
{
	char *id = NULL, *path = NULL;
	int rc;

	*out = NULL;
	if (has_vendor_credentials(vendor, cred)) {
		const char *sites = derapi->has_check ? derapi->check.path : "/sites";
		rc = enr_join_request(out, derapi, cfg, "GET", sites, token);
		if (rc == 0)
			rc = add_vendor_headers(*out, vendor, cfg, cred);
	} else if (cred->join.enrollment_id) {
		id = enr_util_urlencode(cred->join.enrollment_id);
		path = id ? enr_util_printf("/join/enrollments/%s", id) : NULL;
		rc = path ? enr_join_request(out, derapi, cfg, "GET", path, token)
		          : enr_error_set(ENR_E_NOMEM, NULL);
	} else {
		rc = enr_error_set(ENR_E_USAGE,
		                   "%s through Derapi Join: the record holds neither vendor "
		                   "credentials nor an enrollment ID, so Derapi cannot be asked "
		                   "about it (a flow without a program gives no enrollment ID)",
		                   vendor->name);
	}
	free(path);
	free(id);
	if (rc < 0) {
		enr_http_request_free(*out);
		*out = NULL;
	}
	return rc;
}
