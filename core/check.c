#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "derenroll/check.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/solis.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "util.h"

#define SOLIS_CONTENT_TYPE "application/json"

/* The account key sent beside the API key (SolarEdge's X-Account-Key for Fleet
 * accounts): the record's own, else the company's from the config, else none. */
static int account_key_for(char **out, const struct enr_vendor *vendor,
                           const struct enr_config *cfg, const struct enr_credentials *cred)
{
	int rc;

	*out = NULL;
	if (cred->account_key && cred->account_key[0]) {
		*out = enr_util_strdup(cred->account_key);
		return *out ? 0 : ENR_E_NOMEM;
	}
	rc = enr_vendor_secret(out, vendor, cfg, "account_key");
	return rc == ENR_E_NOTFOUND ? 0 : rc;
}

/* The API key a check sends, and whether it is the company's (account method). */
static int api_key_for(char **out, const struct enr_vendor *vendor, const struct enr_config *cfg,
                       const char *method, const struct enr_credentials *cred)
{
	*out = NULL;
	if (strcmp(method, "account") == 0 || strcmp(method, "oauth") == 0)
		return enr_vendor_secret(out, vendor, cfg, "api_key");
	if (!cred->api_key || !cred->api_key[0])
		return enr_error_set(ENR_E_USAGE, "%s: the record holds no API key", vendor->name);
	*out = enr_util_strdup(cred->api_key);
	return *out ? 0 : ENR_E_NOMEM;
}

static int add_solis_signature(struct enr_http_request *req, const struct enr_vendor *vendor,
                               const struct enr_config *cfg, const char *method,
                               const struct enr_credentials *cred,
                               const struct enr_check_spec *spec, long long now)
{
	struct enr_solis_headers headers = {0};
	const char *key_id = cred->key_id;
	char *company_secret = NULL;
	const char *key_secret = cred->key_secret;
	const char *body = spec->body ? spec->body : "{}";
	int rc;

	if (strcmp(method, "account") == 0) {
		key_id = enr_vendor_setting(vendor, cfg, "key_id");
		if (!key_id)
			return enr_error_set(ENR_E_CONFIG, "%s account: set key_id in [%s] of %s",
			                     vendor->name, vendor->config_section,
			                     enr_config_file_name(cfg));
		rc = enr_vendor_secret(&company_secret, vendor, cfg, "key_secret");
		if (rc < 0)
			return rc;
		key_secret = company_secret;
	}
	if (!key_id || !key_secret) {
		rc = enr_error_set(ENR_E_USAGE, "%s: the record holds no KeyID and KeySecret",
		                   vendor->name);
		goto out;
	}
	rc = enr_solis_sign(&headers, key_id, key_secret, spec->path, SOLIS_CONTENT_TYPE, body,
	                    strlen(body), now);
	if (rc == 0)
		rc = enr_http_request_add_header(req, "Content-MD5", headers.content_md5, 0);
	if (rc == 0)
		rc = enr_http_request_add_header(req, "Date", headers.date, 0);
	if (rc == 0)
		rc = enr_http_request_add_header(req, "Authorization", headers.authorization,
		                                 ENR_HTTP_SECRET);
	if (rc == 0)
		rc = enr_http_request_set_body(req, SOLIS_CONTENT_TYPE, body, strlen(body));
out:
	enr_solis_headers_done(&headers);
	enr_config_free_secret(company_secret);
	return rc;
}

int enr_check_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                      const struct enr_config *cfg, const char *method,
                      const struct enr_credentials *cred, long long now)
{
	return enr_check_request_at(out, vendor, cfg, NULL, method, cred, now);
}

int enr_check_request_at(struct enr_http_request **out, const struct enr_vendor *vendor,
                         const struct enr_config *cfg, const char *api_endpoint, const char *method,
                         const struct enr_credentials *cred, long long now)
{
	struct enr_http_request *req = NULL;
	const struct enr_check_spec *spec = vendor->has_check ? &vendor->check : NULL;
	const char *endpoint = "api_url";
	char *url = NULL, *key = NULL, *account_key = NULL;
	int rc;

	*out = NULL;
	if (!spec)
		return enr_error_set(ENR_E_UNSUPPORTED, "%s has no check request", vendor->name);
	if (api_endpoint && strcmp(endpoint, "api_url") == 0)
		endpoint = api_endpoint;
	url = enr_vendor_url(vendor, cfg, endpoint, spec->path);
	if (!url)
		return enr_error_last_code();
	rc = enr_http_request_new(&req, spec->method, url);
	if (rc < 0)
		goto out;
	rc = enr_http_request_set_vendor(req, vendor, endpoint);
	if (rc < 0)
		goto out;

	switch (spec->auth) {
	case ENR_CHECK_AUTH_BEARER:
		if (!cred->tokens.access_token) {
			rc = enr_error_set(ENR_E_USAGE, "%s: the record holds no access token",
			                   vendor->name);
			goto out;
		}
		rc = enr_http_request_set_bearer(req, cred->tokens.access_token);
		if (rc == 0 && spec->query_key) {
			rc = api_key_for(&key, vendor, cfg, method, cred);
			if (rc == 0)
				rc = enr_http_request_add_query(req, spec->query_key, key,
				                                ENR_HTTP_SECRET);
		}
		break;
	case ENR_CHECK_AUTH_HEADER_KEY:
	case ENR_CHECK_AUTH_QUERY_KEY:
		rc = api_key_for(&key, vendor, cfg, method, cred);
		if (rc < 0)
			break;
		if (spec->auth == ENR_CHECK_AUTH_HEADER_KEY) {
			rc = enr_http_request_add_header(req, spec->header, key, ENR_HTTP_SECRET);
			if (rc == 0 && spec->account_header)
				rc = account_key_for(&account_key, vendor, cfg, cred);
			if (rc == 0 && account_key)
				rc = enr_http_request_add_header(req, spec->account_header,
				                                 account_key, ENR_HTTP_SECRET);
		} else
			rc = enr_http_request_add_query(req, spec->query_key, key, ENR_HTTP_SECRET);
		break;
	case ENR_CHECK_AUTH_SOLIS:
		rc = add_solis_signature(req, vendor, cfg, method, cred, spec, now);
		break;
	case ENR_CHECK_AUTH_DERAPI:
		rc = enr_error_set(ENR_E_UNSUPPORTED,
		                   "checks through Derapi are made by the join module");
		break;
	}
	if (rc == 0 && spec->body && spec->auth != ENR_CHECK_AUTH_SOLIS)
		rc = enr_http_request_set_body(req, "application/json", spec->body,
		                               strlen(spec->body));
out:
	enr_config_free_secret(key);
	enr_config_free_secret(account_key);
	free(url);
	if (rc < 0) {
		enr_http_request_free(req);
		return rc;
	}
	*out = req;
	return 0;
}

/* A site id or name as text, whether the vendor sends a string or a number. */
static char *scalar_text(json_object *obj, const char *field)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(obj, field, &v) || !v)
		return NULL;
	switch (json_object_get_type(v)) {
	case json_type_string:
	case json_type_int:
	case json_type_double:
		return enr_util_strdup(json_object_get_string(v));
	default:
		return NULL;
	}
}

void enr_check_result_free(struct enr_check_result *result)
{
	if (!result)
		return;
	for (size_t i = 0; i < result->n_sites; i++) {
		free(result->sites[i].id);
		free(result->sites[i].name);
	}
	free(result->sites);
	free(result);
}

/* Solis answers 200 with a failure in the body: `code` other than "0". */
static int solis_body_error(const struct enr_vendor *vendor, const struct enr_http_response *resp,
                            json_object *root)
{
	json_object *code = NULL, *msg = NULL;
	const char *code_text;

	if (!json_object_object_get_ex(root, "code", &code))
		return 0;
	code_text = json_object_get_string(code);
	if (!code_text || strcmp(code_text, "0") == 0)
		return 0;
	json_object_object_get_ex(root, "msg", &msg);
	return enr_http_vendor_error(vendor, (int)resp->status, code_text, ENR_E_REJECTED,
	                             "%s refused the request: %s (%s)", vendor->name,
	                             msg ? json_object_get_string(msg) : "no message", code_text);
}

/* The text of one Derapi `errors` entry: a string, or an object's message. */
static const char *derapi_error_text(json_object *entry)
{
	static const char *const fields[] = {"message", "detail", "error", "title"};
	json_object *v = NULL;

	if (json_object_is_type(entry, json_type_string))
		return json_object_get_string(entry);
	for (size_t i = 0; i < ENR_ARRAY_SIZE(fields); i++)
		if (json_object_object_get_ex(entry, fields[i], &v) &&
		    json_object_is_type(v, json_type_string))
			return json_object_get_string(v);
	return "no message";
}

/*
 * Derapi's list answers are 200 with per-vendor backend failures in `errors`
 * beside the results ({"solis": "Unauthorized: ..."}; an array of
 * {vendor, message} is accepted too): an entry is a failure, not "no sites".
 */
static int derapi_body_error(const struct enr_vendor *derapi, json_object *root)
{
	json_object *errors = NULL, *entry = NULL;
	const struct enr_guidance *g;
	const char *who = NULL, *text;
	char clean[240];
	size_t n = 0;

	if (!json_object_object_get_ex(root, "errors", &errors))
		return 0;
	if (json_object_is_type(errors, json_type_object)) {
		json_object_object_foreach(errors, key, value)
		{
			if (!who) {
				who = key;
				entry = value;
			}
		}
	} else if (json_object_is_type(errors, json_type_array) &&
	           json_object_array_length(errors) > 0) {
		json_object *v = NULL;
		entry = json_object_array_get_idx(errors, 0);
		if (json_object_object_get_ex(entry, "vendor", &v) &&
		    json_object_is_type(v, json_type_string))
			who = json_object_get_string(v);
		if (!who)
			who = "a vendor";
	}
	if (!who)
		return 0;
	/* One line, and never a URL's query (it may carry a key). */
	text = derapi_error_text(entry);
	for (const char *p = text; *p && n < sizeof(clean) - 1; p++) {
		if (*p == '?' && n > 0) {
			p += strcspn(p, " \t\r\n") - 1;
			continue;
		}
		clean[n++] = (unsigned char)*p < 0x20 ? ' ' : *p;
	}
	clean[n] = '\0';
	g = enr_vendor_guidance(derapi, 200, clean);
	if (g && g->match)
		return enr_error_set(g->error, "Derapi reports a failure from %s: %s (%s)", who,
		                     g->message, clean);
	return enr_error_set(ENR_E_TRANSIENT,
	                     "Derapi reports a failure from %s: %s: try again later", who, clean);
}

int enr_check_response(struct enr_check_result **out, const struct enr_vendor *vendor,
                       const struct enr_http_response *resp)
{
	const struct enr_check_spec *spec = vendor->has_check ? &vendor->check : NULL;
	struct enr_check_result *result = NULL;
	json_object *root = NULL, *list;
	size_t n;
	int rc;

	*out = NULL;
	rc = enr_http_classify(resp);
	if (rc < 0)
		return rc;
	if (!spec)
		return enr_error_set(ENR_E_UNSUPPORTED, "%s has no check request", vendor->name);
	rc = enr_http_response_json(&root, resp);
	if (rc < 0)
		return rc;
	if (spec->auth == ENR_CHECK_AUTH_SOLIS && (rc = solis_body_error(vendor, resp, root)) < 0)
		goto out;
	if (spec->auth == ENR_CHECK_AUTH_DERAPI && (rc = derapi_body_error(vendor, root)) < 0)
		goto out;
	list = enr_util_json_at(root, spec->sites);
	if ((!list || !json_object_is_type(list, json_type_array)) && spec->sites_alt)
		list = enr_util_json_at(root, spec->sites_alt);
	if (!list || !json_object_is_type(list, json_type_array)) {
		rc = enr_http_badresponse(resp, "no site list where vendors.json says it is");
		goto out;
	}
	result = calloc(1, sizeof(*result));
	n = json_object_array_length(list);
	if (!result || !(result->sites = calloc(n ? n : 1, sizeof(*result->sites)))) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *entry = json_object_array_get_idx(list, i);
		struct enr_site *site = &result->sites[result->n_sites];
		if (!json_object_is_type(entry, json_type_object))
			continue;
		if (spec->require_field &&
		    !json_object_object_get_ex(entry, spec->require_field, NULL))
			continue;
		site->id = scalar_text(entry, spec->site_id);
		if (!site->id)
			continue;
		site->name = scalar_text(entry, spec->site_name);
		if (!site->name)
			site->name = enr_util_strdup(site->id);
		result->n_sites++;
	}
	if (result->n_sites == 0 && enr_vendor_guidance(vendor, 0, "empty_sites")) {
		rc = enr_http_vendor_error(vendor, 0, "empty_sites", ENR_E_REJECTED,
		                           "%s returned no sites", vendor->name);
		goto out;
	}
	*out = result;
	result = NULL;
out:
	enr_check_result_free(result);
	json_object_put(root);
	return rc;
}

/* enr_check_run(), keeping the answer (NULL when none arrived) for the caller. */
static int run(struct enr_check_result **out, struct enr_http_response **resp,
               const struct enr_vendor *vendor, const struct enr_config *cfg, const char *method,
               const struct enr_credentials *cred)
{
	struct enr_http_request *req = NULL;
	int rc;

	*out = NULL;
	*resp = NULL;
	rc = enr_check_request(&req, vendor, cfg, method, cred, (long long)time(NULL));
	if (rc == 0)
		rc = enr_http_perform(resp, cfg, req);
	if (rc == 0)
		rc = enr_check_response(out, vendor, *resp);
	enr_http_request_free(req);
	return rc;
}

int enr_check_run(struct enr_check_result **out, const struct enr_vendor *vendor,
                  const struct enr_config *cfg, const char *method,
                  const struct enr_credentials *cred)
{
	struct enr_http_response *resp = NULL;
	int rc = run(out, &resp, vendor, cfg, method, cred);

	enr_http_response_free(resp);
	return rc;
}

int enr_check_key_kind(enum enr_check_key_kind *out, size_t *sites, const struct enr_vendor *vendor,
                       const struct enr_config *cfg, const char *method,
                       const struct enr_credentials *cred)
{
	struct enr_http_response *resp = NULL;
	struct enr_check_result *result = NULL;
	int rc = run(&result, &resp, vendor, cfg, method, cred);

	*out = ENR_CHECK_KEY_REJECTED;
	if (sites)
		*sites = 0;
	if (rc == 0) {
		*out = ENR_CHECK_KEY_WORKS;
		if (sites)
			*sites = result->n_sites;
	} else if (resp && resp->status == 410) {
		/* Gone: the message is the vendor's guidance for 410, set by the check. */
		*out = ENR_CHECK_KEY_RETIRED;
		rc = 0;
	} else if (rc == ENR_E_REJECTED) {
		rc = 0;
	}
	enr_check_result_free(result);
	enr_http_response_free(resp);
	return rc;
}

const struct enr_site *enr_check_find_site(const struct enr_check_result *result, const char *id)
{
	for (size_t i = 0; result && i < result->n_sites; i++)
		if (strcmp(result->sites[i].id, id) == 0)
			return &result->sites[i];
	return NULL;
}
