#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/oauth.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/vendor.h"
#include "util.h"

#define KEY_PLACEHOLDER "{domain}"

static const char *const region_names[ENR_TESLA_N_REGIONS] = {"na", "eu", "cn"};
static const char *const region_endpoints[ENR_TESLA_N_REGIONS] = {"api_url", "api_url_eu",
                                                                  "api_url_cn"};

const char *enr_tesla_region_name(enum enr_tesla_region region)
{
	return (unsigned)region < ENR_TESLA_N_REGIONS ? region_names[region] : "na";
}

int enr_tesla_region_parse(enum enr_tesla_region *out, const char *text)
{
	for (int i = 0; text && i < ENR_TESLA_N_REGIONS; i++)
		if (strcasecmp(text, region_names[i]) == 0) {
			*out = (enum enr_tesla_region)i;
			return 0;
		}
	return enr_error_set(ENR_E_USAGE, "unknown Tesla region '%s' (na, eu or cn)",
	                     text ? text : "");
}

enum enr_tesla_region enr_tesla_region_of(const char *field)
{
	enum enr_tesla_region region = ENR_TESLA_NA;

	for (int i = 0; field && i < ENR_TESLA_N_REGIONS; i++)
		if (strcmp(field, region_names[i]) == 0)
			region = (enum enr_tesla_region)i;
	return region;
}

/* "NA", "EU", "CN" (any case) at the start of `s`, followed by `end` (or NUL when end is 0). */
static bool region_code(enum enr_tesla_region *out, const char *s, char end)
{
	for (int i = 0; i < ENR_TESLA_N_REGIONS; i++)
		if (strncasecmp(s, region_names[i], 2) == 0 && s[2] == end) {
			*out = (enum enr_tesla_region)i;
			return true;
		}
	return false;
}

int enr_tesla_region_from_token(enum enr_tesla_region *out, const char *token)
{
	json_object *claims = NULL, *ou = NULL;
	bool found = false;

	if (!token)
		return ENR_E_NOTFOUND;
	if (region_code(out, token, '_'))
		return 0;
	if (enr_oauth_jwt_claims(&claims, token) == 0 &&
	    json_object_object_get_ex(claims, "ou_code", &ou) &&
	    json_object_is_type(ou, json_type_string))
		found = region_code(out, json_object_get_string(ou), '\0');
	json_object_put(claims);
	return found ? 0 : ENR_E_NOTFOUND;
}

const char *enr_tesla_endpoint(enum enr_tesla_region region)
{
	return (unsigned)region < ENR_TESLA_N_REGIONS ? region_endpoints[region] : "api_url";
}

const char *enr_tesla_record_endpoint(const struct enr_record *rec)
{
	if (!rec->vendor || strcmp(rec->vendor, "tesla") != 0)
		return NULL;
	return enr_tesla_endpoint(enr_tesla_region_of(rec->region));
}

int enr_tesla_note_region(struct enr_record *rec, const char *refresh_token,
                          const char *access_token, const char *code)
{
	enum enr_tesla_region region = ENR_TESLA_NA;

	if (!rec->vendor || strcmp(rec->vendor, "tesla") != 0)
		return 0;
	if (enr_tesla_region_from_token(&region, refresh_token) < 0 &&
	    enr_tesla_region_from_token(&region, access_token) < 0 &&
	    enr_tesla_region_from_token(&region, code) < 0)
		return 0;
	return enr_record_set(&rec->region, enr_tesla_region_name(region));
}

const char *enr_tesla_api_url(const struct enr_vendor *vendor, const struct enr_config *cfg,
                              enum enr_tesla_region region)
{
	return enr_vendor_endpoint(vendor, cfg, enr_tesla_endpoint(region));
}

char *enr_tesla_trim_url(const char *url)
{
	size_t len = strlen(url);

	while (len > 0 && url[len - 1] == '/')
		len--;
	return enr_util_printf("%.*s", (int)len, url);
}

int enr_tesla_audience(char **out, const struct enr_vendor *vendor, const struct enr_config *cfg,
                       enum enr_tesla_region region)
{
	const char *url = enr_tesla_api_url(vendor, cfg, region);

	*out = NULL;
	if (!url)
		return enr_error_last_code();
	*out = enr_tesla_trim_url(url);
	return *out ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

/* A request to `path` on the region's host, with a bearer token. */
static int api_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                       const struct enr_config *cfg, enum enr_tesla_region region,
                       const char *method, const char *path, const char *token)
{
	const char *endpoint = enr_tesla_endpoint(region);
	char *url = enr_vendor_url(vendor, cfg, endpoint, path);
	int rc;

	*out = NULL;
	if (!url)
		return enr_error_last_code();
	rc = enr_http_request_new(out, method, url);
	free(url);
	if (rc == 0)
		rc = enr_http_request_set_vendor(*out, vendor, endpoint);
	if (rc == 0)
		rc = enr_http_request_set_bearer(*out, token);
	if (rc < 0) {
		enr_http_request_free(*out);
		*out = NULL;
	}
	return rc;
}

int enr_tesla_users_region_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                                   const struct enr_config *cfg, enum enr_tesla_region region,
                                   const char *access_token)
{
	return api_request(out, vendor, cfg, region, "GET", "/api/1/users/region", access_token);
}

/* Whether two base URLs are the same, trailing slashes aside. */
static bool same_base(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	while (la > 0 && a[la - 1] == '/')
		la--;
	while (lb > 0 && b[lb - 1] == '/')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

int enr_tesla_users_region_response(enum enr_tesla_region *out, const struct enr_vendor *vendor,
                                    const struct enr_config *cfg,
                                    const struct enr_http_response *resp)
{
	json_object *root = NULL, *base;
	const char *text;
	int rc;

	if ((rc = enr_http_classify(resp)) < 0 || (rc = enr_http_response_json(&root, resp)) < 0)
		return rc;
	base = enr_util_json_at(root, "response.fleet_api_base_url");
	text = base && json_object_is_type(base, json_type_string) ? json_object_get_string(base)
	                                                           : NULL;
	rc = enr_http_badresponse(resp, text ? "its fleet_api_base_url is none of the configured "
	                                       "regions (api_url, api_url_eu, api_url_cn)"
	                                     : "no response.fleet_api_base_url");
	for (int i = 0; text && i < ENR_TESLA_N_REGIONS; i++) {
		const char *url = enr_tesla_api_url(vendor, cfg, (enum enr_tesla_region)i);
		if (url && same_base(url, text)) {
			*out = (enum enr_tesla_region)i;
			rc = 0;
			break;
		}
	}
	json_object_put(root);
	return rc;
}

/* Performs `req` (freed) and classifies the answer; the response in *resp when wanted. */
static int perform(struct enr_http_response **resp_out, const struct enr_config *cfg,
                   struct enr_http_request *req)
{
	struct enr_http_response *resp = NULL;
	int rc = enr_http_perform(&resp, cfg, req);

	enr_http_request_free(req);
	if (rc == 0)
		rc = enr_http_classify(resp);
	if (resp_out && resp) {
		*resp_out = resp;
		return rc;
	}
	enr_http_response_free(resp);
	return rc;
}

int enr_tesla_partner_token(char **out, const struct enr_vendor *vendor,
                            const struct enr_config *cfg, enum enr_tesla_region region)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	struct enr_oauth_tokens *tokens = NULL;
	char *audience = NULL;
	int rc;

	*out = NULL;
	if ((rc = enr_tesla_audience(&audience, vendor, cfg, region)) < 0)
		return rc;
	rc = enr_oauth_client_credentials_request(&req, vendor, cfg, vendor->oauth.partner_scopes);
	if (rc == 0)
		rc = enr_http_request_add_form(req, "audience", audience, 0);
	free(audience);
	if (rc == 0 && (rc = enr_http_perform(&resp, cfg, req)) == 0)
		rc = enr_oauth_token_response(&tokens, resp);
	if (rc == 0 && !(*out = enr_util_strdup(tokens->access_token)))
		rc = ENR_E_NOMEM;
	enr_oauth_tokens_free(tokens);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	return rc;
}

int enr_tesla_public_key_url(char **out, const struct enr_vendor *vendor,
                             const struct enr_config *cfg, const char *domain)
{
	const char *tmpl = enr_vendor_endpoint(vendor, cfg, "public_key_url");
	const char *at;

	*out = NULL;
	if (!tmpl)
		return enr_error_last_code();
	if (!domain || !domain[0] || strpbrk(domain, "/?#@ "))
		return enr_error_set(ENR_E_USAGE, "'%s' is not a domain name (like example.com)",
		                     domain ? domain : "");
	at = strstr(tmpl, KEY_PLACEHOLDER);
	if (at)
		*out = enr_util_printf("%.*s%s%s", (int)(at - tmpl), tmpl, domain,
		                       at + strlen(KEY_PLACEHOLDER));
	else
		*out = enr_util_strdup(tmpl);
	return *out ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

int enr_tesla_public_key_check(const struct enr_vendor *vendor, const struct enr_config *cfg,
                               const char *domain)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *url = NULL;
	int rc;

	if ((rc = enr_tesla_public_key_url(&url, vendor, cfg, domain)) < 0)
		return rc;
	if ((rc = enr_http_request_new(&req, "GET", url)) == 0)
		rc = perform(&resp, cfg, req);
	if (rc < 0)
		rc = enr_error_set(rc, "the app's public key is not served at %s: %s", url,
		                   enr_error_last());
	else if (!strstr(resp->body, "-----BEGIN PUBLIC KEY-----"))
		rc = enr_error_set(
		    ENR_E_MISCONFIGURED,
		    "%s does not serve a PEM public key (-----BEGIN PUBLIC KEY-----)", url);
	enr_http_response_free(resp);
	free(url);
	return rc;
}

int enr_tesla_register(const struct enr_vendor *vendor, const struct enr_config *cfg,
                       enum enr_tesla_region region, const char *partner_token, const char *domain)
{
	struct enr_http_request *req = NULL;
	json_object *body = json_object_new_object();
	const char *text;
	int rc;

	if (!body)
		return enr_error_set(ENR_E_NOMEM, NULL);
	json_object_object_add(body, "domain", json_object_new_string(domain));
	text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	rc = api_request(&req, vendor, cfg, region, "POST", "/api/1/partner_accounts",
	                 partner_token);
	if (rc == 0)
		rc = enr_http_request_set_body(req, "application/json", text, strlen(text));
	json_object_put(body);
	if (rc < 0) {
		enr_http_request_free(req);
		return rc;
	}
	return perform(NULL, cfg, req);
}

int enr_tesla_registered(bool *registered, const struct enr_vendor *vendor,
                         const struct enr_config *cfg, enum enr_tesla_region region,
                         const char *partner_token, const char *domain)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	int rc;

	*registered = false;
	rc = api_request(&req, vendor, cfg, region, "GET", "/api/1/partner_accounts/public_key",
	                 partner_token);
	if (rc == 0)
		rc = enr_http_request_add_query(req, "domain", domain, 0);
	if (rc < 0) {
		enr_http_request_free(req);
		return rc;
	}
	rc = perform(&resp, cfg, req);
	if (rc < 0 && resp && !resp->error && (resp->status == 412 || resp->status == 404))
		rc = 0;
	else if (rc == 0)
		*registered = true;
	enr_http_response_free(resp);
	return rc;
}
