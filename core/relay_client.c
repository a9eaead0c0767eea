#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/relay.h"
#include "util.h"

bool enr_relay_client_configured(const struct enr_config *cfg)
{
	const char *url = enr_config_get(cfg, "relay", "url");
	return url && url[0];
}

/* {relay url}/path, with one slash between them. */
static char *relay_url(const struct enr_config *cfg, const char *path)
{
	const char *base = enr_config_get(cfg, "relay", "url");
	size_t len;

	if (!base || !base[0]) {
		enr_error_set(ENR_E_CONFIG, "no relay is configured: set [relay] url in %s",
		              enr_config_file_name(cfg));
		return NULL;
	}
	len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	return enr_util_printf("%.*s%s", (int)len, base, path);
}

static int relay_request(struct enr_http_request **out, const struct enr_config *cfg,
                         const char *method, const char *path)
{
	struct enr_http_request *req = NULL;
	char *url = relay_url(cfg, path), *secret = NULL;
	int rc;

	*out = NULL;
	if (!url)
		return enr_error_last_code();
	rc = enr_config_get_secret(&secret, cfg, "relay", "secret");
	if (rc == 0)
		rc = enr_http_request_new(&req, method, url);
	if (rc == 0)
		rc = enr_http_request_set_bearer(req, secret);
	enr_config_free_secret(secret);
	free(url);
	if (rc < 0) {
		enr_http_request_free(req);
		return rc;
	}
	*out = req;
	return 0;
}

int enr_relay_link_request(struct enr_http_request **out, const struct enr_config *cfg,
                           const char *target, const char *state, long ttl_s,
                           const char *vendor_name)
{
	return enr_relay_join_link_request(out, cfg, target, state, ttl_s, vendor_name, NULL);
}

int enr_relay_join_link_request(struct enr_http_request **out, const struct enr_config *cfg,
                                const char *target, const char *state, long ttl_s,
                                const char *vendor_name, const char *join_session)
{
	json_object *body = json_object_new_object();
	const char *text;
	int rc;

	if (!body)
		return enr_error_set(ENR_E_NOMEM, NULL);
	json_object_object_add(body, "target", json_object_new_string(target));
	json_object_object_add(body, "state", json_object_new_string(state));
	json_object_object_add(body, "ttl", json_object_new_int64(ttl_s));
	if (vendor_name)
		json_object_object_add(body, "vendor", json_object_new_string(vendor_name));
	if (join_session)
		json_object_object_add(body, "join_session", json_object_new_string(join_session));
	rc = relay_request(out, cfg, "POST", "/v1/links");
	if (rc == 0) {
		text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
		rc = enr_http_request_set_body(*out, "application/json", text, strlen(text));
	}
	json_object_put(body);
	return rc;
}

static int relay_error(const struct enr_http_response *resp)
{
	if (resp->error)
		return enr_http_classify(resp);
	if (resp->status == 401)
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "the relay refused our secret: check [relay] secret "
		                     "(derenroll secret set relay.secret)");
	if (resp->status == 409)
		return enr_error_set(ENR_E_EXPIRED,
		                     "the relay's link for this sign-in has ended (or the relay "
		                     "holds this sign-in for another link): start again");
	return enr_http_classify(resp);
}

int enr_relay_link_response(char **url, long long *expires_at, const struct enr_http_response *resp)
{
	json_object *root = NULL, *v = NULL;
	int rc;

	*url = NULL;
	*expires_at = 0;
	if (resp->error || resp->status != 201)
		return relay_error(resp);
	rc = enr_http_response_json(&root, resp);
	if (rc < 0)
		return rc;
	if (!json_object_object_get_ex(root, "url", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		rc = enr_http_badresponse(resp, "no url in the relay's answer");
		goto out;
	}
	*url = enr_util_strdup(json_object_get_string(v));
	if (!*url) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	if (json_object_object_get_ex(root, "expires_at", &v) &&
	    json_object_is_type(v, json_type_string))
		enr_util_parse_rfc3339(expires_at, json_object_get_string(v));
out:
	json_object_put(root);
	return rc;
}

int enr_relay_result_request(struct enr_http_request **out, const struct enr_config *cfg,
                             const char *state, long wait_s)
{
	char path[256];
	int rc;

	snprintf(path, sizeof(path), "/v1/results/%s?wait=%ld", state, wait_s);
	rc = relay_request(out, cfg, "GET", path);
	/* The long-poll must outlast the relay's wait. */
	if (rc == 0)
		enr_http_request_set_timeouts(*out, 0, (wait_s + 15) * 1000);
	return rc;
}

int enr_relay_taken_request(struct enr_http_request **out, const struct enr_config *cfg,
                            const char *state)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/results/%s", state);
	return relay_request(out, cfg, "DELETE", path);
}

int enr_relay_result_response(char **query, const struct enr_http_response *resp)
{
	json_object *root = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *mem;
	int rc;

	*query = NULL;
	if (!resp->error && resp->status == 204)
		return ENR_E_AGAIN;
	if (!resp->error && resp->status == 404)
		return enr_error_set(
		    ENR_E_EXPIRED,
		    "the relay no longer knows this authorization: the link expired");
	if (resp->error || resp->status != 200)
		return relay_error(resp);
	rc = enr_http_response_json(&root, resp);
	if (rc < 0)
		return rc;
	if (!json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return enr_http_badresponse(resp, "the relay's result is not an object");
	}
	mem = open_memstream(&buf, &len);
	if (!mem) {
		json_object_put(root);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	json_object_object_foreach(root, key, val)
	{
		char *k = enr_util_urlencode(key);
		char *v = enr_util_urlencode(
		    json_object_get_string(val) ? json_object_get_string(val) : "");
		if (k && v)
			fprintf(mem, "%s%s=%s", len || ftell(mem) ? "&" : "", k, v);
		free(k);
		enr_util_free_secret(v);
	}
	fclose(mem);
	json_object_put(root);
	*query = buf;
	return 0;
}
