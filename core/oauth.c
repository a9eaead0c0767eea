#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "derenroll/tesla.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "jwt.h"
#include "util.h"

#define STATE_BYTES    16 /* 128 bits */
#define VERIFIER_BYTES 32 /* 43 characters, RFC 7636's minimum */
#define MAX_CALLBACK   8192
#define ID_TOKEN_SKEW  60 /* seconds of clock difference an id_token may have */
#define JWKS_MAX       65536

/* ---- authorize --------------------------------------------------------- */

int enr_oauth_pkce_challenge(char **out, const char *verifier)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	*out = NULL;
	if (EVP_Digest(verifier, strlen(verifier), digest, &len, EVP_sha256(), NULL) != 1)
		return enr_error_set(ENR_E_CRYPTO, "SHA-256 failed");
	*out = enr_util_base64_encode(digest, len, true);
	return *out ? 0 : ENR_E_NOMEM;
}

void enr_oauth_flow_free(struct enr_oauth_flow *flow)
{
	if (!flow)
		return;
	free(flow->url);
	free(flow->state);
	enr_util_free_secret(flow->code_verifier);
	free(flow->redirect_uri);
	free(flow);
}

static const char *redirect_uri_of(const struct enr_vendor *vendor, const struct enr_config *cfg,
                                   const char *given)
{
	const char *uri = given;

	if (!uri)
		uri = enr_vendor_setting(vendor, cfg, "redirect_uri");
	if (!uri)
		uri = enr_vendor_default_endpoint(vendor, "redirect_uri");
	if (!uri)
		enr_error_set(ENR_E_CONFIG,
		              "%s has no redirect URI: set [%s] redirect_uri to the one registered "
		              "for the app (the relay's, or a loopback one)",
		              vendor->name, vendor->config_section);
	return uri;
}

static const char *client_id_of(const struct enr_vendor *vendor, const struct enr_config *cfg)
{
	const char *id = enr_vendor_setting(vendor, cfg, "client_id");

	if (!id)
		enr_error_set(
		    ENR_E_CONFIG,
		    "%s needs the company's app: set [%s] client_id (and the client secret)",
		    vendor->name, vendor->config_section);
	return id;
}

/* Appends "&name=value" (or "?" first) to *url, percent-encoding both. */
static int append_param(char **url, const char *name, const char *value)
{
	char *n = enr_util_urlencode(name), *v = enr_util_urlencode(value), *grown = NULL;

	if (n && v)
		grown = enr_util_printf("%s%c%s=%s", *url, strchr(*url, '?') ? '&' : '?', n, v);
	free(n);
	free(v);
	if (!grown)
		return ENR_E_NOMEM;
	free(*url);
	*url = grown;
	return 0;
}

static bool has_scope(const char *list, const char *scope);
static int parse_query(struct enr_oauth_callback *cb, const char *query);
static int single_param(const char **out, const struct enr_oauth_callback *cb, const char *name);

/* Whether `name` is among the names of opts->extra or of `set` (may be NULL). */
static bool param_named(const struct enr_oauth_callback *set,
                        const struct enr_oauth_authorize_options *opts, const char *name)
{
	for (size_t i = 0; i < opts->n_extra; i++)
		if (strcmp(opts->extra[i].name, name) == 0)
			return true;
	return set && enr_oauth_callback_param(set, name);
}

/*
 * The vendor's extra authorize parameters: vendors.json oauth.authorize_params,
 * then `[section] authorize_params` (a query string, "prompt=consent&locale=de";
 * a name given there replaces the catalogue's, an empty value drops it), then
 * opts->extra (which replaces both).
 */
static int append_authorize_params(char **url, const struct enr_vendor *vendor,
                                   const struct enr_config *cfg,
                                   const struct enr_oauth_authorize_options *opts)
{
	const char *query = enr_vendor_setting(vendor, cfg, "authorize_params");
	struct enr_oauth_callback *set = calloc(1, sizeof(*set));
	int rc = !set ? enr_error_set(ENR_E_NOMEM, NULL) : query ? parse_query(set, query) : 0;

	for (size_t i = 0; rc == 0 && i < vendor->oauth.n_authorize_params; i++) {
		const struct enr_oauth_param *p = &vendor->oauth.authorize_params[i];
		if (!param_named(set, opts, p->name))
			rc = append_param(url, p->name, p->value);
	}
	for (size_t i = 0; rc == 0 && i < set->n_params; i++)
		if (set->params[i].value[0] && !param_named(NULL, opts, set->params[i].name))
			rc = append_param(url, set->params[i].name, set->params[i].value);
	for (size_t i = 0; rc == 0 && i < opts->n_extra; i++)
		rc = append_param(url, opts->extra[i].name, opts->extra[i].value);
	enr_oauth_callback_free(set);
	return rc;
}

/* Whether the authorize URL asks with prompt=consent (OIDC Core 11: the
 * condition for offline_access). */
static int asks_consent(bool *out, const char *url)
{
	struct enr_oauth_callback *q = calloc(1, sizeof(*q));
	const char *prompt = NULL;
	int rc = q ? parse_query(q, strchr(url, '?') ? strchr(url, '?') + 1 : "")
	           : enr_error_set(ENR_E_NOMEM, NULL);

	if (rc == 0)
		rc = single_param(&prompt, q, "prompt");
	*out = rc == 0 && prompt && has_scope(prompt, "consent");
	enr_oauth_callback_free(q);
	return rc;
}

int enr_oauth_flow_new(struct enr_oauth_flow **out, const struct enr_vendor *vendor,
                       const struct enr_config *cfg, const struct enr_oauth_authorize_options *opts)
{
	static const struct enr_oauth_authorize_options no_opts;
	struct enr_oauth_flow *flow = NULL;
	const char *base, *client_id, *redirect_uri, *scopes;
	char *challenge = NULL;
	bool pkce;
	int rc;

	*out = NULL;
	if (!opts)
		opts = &no_opts;
	if (!vendor->has_oauth)
		return enr_error_set(ENR_E_UNSUPPORTED, "%s has no OAuth sign-in", vendor->name);
	if (!(base = enr_vendor_endpoint(vendor, cfg, "authorize_url")) ||
	    !(client_id = client_id_of(vendor, cfg)) ||
	    !(redirect_uri = redirect_uri_of(vendor, cfg, opts->redirect_uri)))
		return enr_error_last_code();
	if ((rc = enr_http_check_url(base)) < 0)
		return enr_error_set(rc, "%s: [%s] authorize_url: %s", vendor->name,
		                     vendor->config_section, enr_error_last());
	/* The code comes back through the redirect URI: never over plain http
	 * beyond this computer. */
	if ((rc = enr_http_check_url(redirect_uri)) < 0)
		return enr_error_set(rc, "%s: redirect URI: %s", vendor->name, enr_error_last());
	scopes = opts->scopes ? opts->scopes : enr_vendor_scopes(vendor, cfg);

	flow = calloc(1, sizeof(*flow));
	if (!flow)
		return enr_error_set(ENR_E_NOMEM, NULL);
	flow->vendor = vendor;
	if (!(flow->state = enr_util_random_token(STATE_BYTES)) ||
	    !(flow->redirect_uri = enr_util_strdup(redirect_uri)) ||
	    !(flow->url = enr_util_strdup(base))) {
		rc = enr_error_last_code();
		goto out;
	}
	if ((rc = append_param(&flow->url, "response_type", "code")) < 0 ||
	    (rc = append_param(&flow->url, "client_id", client_id)) < 0 ||
	    (rc = append_param(&flow->url, "redirect_uri", redirect_uri)) < 0 ||
	    (scopes[0] && (rc = append_param(&flow->url, "scope", scopes)) < 0) ||
	    (rc = append_param(&flow->url, "state", flow->state)) < 0)
		goto out;
	/* [section] pkce, else vendors.json: where the vendor accepts PKCE. */
	if ((rc = enr_config_get_bool(&pkce, cfg, vendor->config_section, "pkce",
	                              vendor->oauth.pkce)) < 0)
		return rc;
	if (pkce || opts->pkce) {
		if (!(flow->code_verifier = enr_util_random_token(VERIFIER_BYTES))) {
			rc = enr_error_last_code();
			goto out;
		}
		if ((rc = enr_log_add_secret(flow->code_verifier)) < 0 ||
		    (rc = enr_oauth_pkce_challenge(&challenge, flow->code_verifier)) < 0 ||
		    (rc = append_param(&flow->url, "code_challenge", challenge)) < 0 ||
		    (rc = append_param(&flow->url, "code_challenge_method", "S256")) < 0)
			goto out;
	}
	if ((rc = append_authorize_params(&flow->url, vendor, cfg, opts)) < 0)
		goto out;
	flow->wants_refresh =
	    vendor->oauth.offline_scope
	        ? has_scope(scopes, vendor->oauth.offline_scope)
	        : vendor->tokens.refresh_rotates || vendor->tokens.refresh_ttl > 0;
	if ((rc = asks_consent(&flow->asks_consent, flow->url)) < 0)
		goto out;
	*out = flow;
	flow = NULL;
out:
	free(challenge);
	enr_oauth_flow_free(flow);
	return rc;
}

/* ---- the redirect coming back ------------------------------------------ */

void enr_oauth_callback_free(struct enr_oauth_callback *cb)
{
	if (!cb)
		return;
	for (size_t i = 0; i < cb->n_params; i++) {
		free((char *)cb->params[i].name);
		enr_util_free_secret((char *)cb->params[i].value);
	}
	free(cb->params);
	enr_util_free_secret(cb->code);
	free(cb->state);
	free(cb);
}

const char *enr_oauth_callback_param(const struct enr_oauth_callback *cb, const char *name)
{
	for (size_t i = 0; i < cb->n_params; i++)
		if (strcmp(cb->params[i].name, name) == 0)
			return cb->params[i].value;
	return NULL;
}

/* Splits a query ("a=1&b=2", already without '?' and '#') into decoded params. */
static int parse_query(struct enr_oauth_callback *cb, const char *query)
{
	const char *p = query;

	while (*p) {
		size_t len = strcspn(p, "&;");
		char *pair = len ? enr_util_printf("%.*s", (int)len, p) : NULL, *eq, *name, *value;
		struct enr_http_field *grown;

		p += len;
		if (*p)
			p++;
		if (!len)
			continue;
		if (!pair)
			return ENR_E_NOMEM;
		eq = strchr(pair, '=');
		if (eq)
			*eq = '\0';
		name = enr_util_strdup(enr_util_urldecode(pair));
		value = enr_util_strdup(eq ? enr_util_urldecode(eq + 1) : "");
		enr_util_free_secret(pair);
		grown =
		    name && value ? realloc(cb->params, (cb->n_params + 1) * sizeof(*grown)) : NULL;
		if (!grown) {
			free(name);
			enr_util_free_secret(value);
			return enr_error_set(ENR_E_NOMEM, NULL);
		}
		cb->params = grown;
		cb->params[cb->n_params++] = (struct enr_http_field){name, value};
	}
	return 0;
}

/* The single value of `name`; ENR_E_PARSE when it is given twice. */
static int single_param(const char **out, const struct enr_oauth_callback *cb, const char *name)
{
	*out = NULL;
	for (size_t i = 0; i < cb->n_params; i++) {
		if (strcmp(cb->params[i].name, name) != 0)
			continue;
		if (*out)
			return enr_error_set(ENR_E_PARSE, "the redirect holds '%s' twice: refused",
			                     name);
		*out = cb->params[i].value;
	}
	return 0;
}

static int callback_error(const struct enr_vendor *vendor, const char *error, const char *desc)
{
	static const char *const app_errors[] = {
	    "invalid_request", "unauthorized_client",  "unsupported_response_type", "invalid_scope",
	    "invalid_client",  "invalid_redirect_uri", "redirect_uri_mismatch",
	};
	const char *name = vendor ? vendor->name : "The vendor";
	char detail[200] = "";

	if (desc && desc[0])
		snprintf(detail, sizeof(detail), ": %s", desc);
	if (strcmp(error, "access_denied") == 0)
		return enr_error_set(ENR_E_DECLINED, "%s: the customer declined%s", name, detail);
	if (strcmp(error, "server_error") == 0 || strcmp(error, "temporarily_unavailable") == 0)
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s could not complete the authorization (%s%s): try again",
		                     name, error, detail);
	/* A provider that requires PKCE (RFC 9700) says so in the description. */
	if (strcmp(error, "invalid_request") == 0 && desc &&
	    (strcasestr(desc, "code_challenge") || strcasestr(desc, "pkce")))
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "%s refused the authorization request (%s%s): it wants PKCE; "
		                     "set [%s] pkce = true",
		                     name, error, detail,
		                     vendor ? vendor->config_section : "vendor.NAME");
	for (size_t i = 0; i < ENR_ARRAY_SIZE(app_errors); i++)
		if (strcmp(error, app_errors[i]) == 0)
			return enr_error_set(ENR_E_MISCONFIGURED,
			                     "%s refused the authorization request (%s%s): check "
			                     "client_id, redirect_uri and scopes in [%s]",
			                     name, error, detail,
			                     vendor ? vendor->config_section : "config.ini");
	return enr_error_set(ENR_E_REJECTED, "%s refused the authorization (%s%s)", name, error,
	                     detail);
}

/* In constant time: a state is a secret the redirect proves it knows. */
static bool same_state(const char *state, const char *expected)
{
	return strlen(state) == strlen(expected) &&
	       CRYPTO_memcmp(state, expected, strlen(expected)) == 0;
}

/* Whether the input is a bare code rather than a URL or a query string. */
static bool is_bare_code(const char *s)
{
	return !strchr(s, '=') && !strchr(s, '?') && !strstr(s, "://");
}

/* The shape check of enr_oauth_normalize_code() on the bare code `code`, in place. */
static int normalize_bare(const struct enr_vendor *vendor, char *code)
{
	const struct enr_code_spec *spec = &vendor->oauth.code;
	size_t n = 0;

	for (const char *p = code; *p; p++) {
		int ch = (unsigned char)*p, is = enr_vendor_code_char(vendor, ch);
		if (is >= 0) {
			code[n++] = (char)is;
			continue;
		}
		/* Spaces and dashes that group it for reading aloud. */
		if (ch == ' ' || ch == '\t' || ch == '-')
			continue;
		/* Short: the wizard shows it in one line beside the QR code. */
		if (ch > ' ' && ch <= '~')
			return enr_error_set(ENR_E_PARSE, "'%c' is not in %s codes (%s)", ch,
			                     vendor->name, spec->alphabet);
		return enr_error_set(ENR_E_PARSE, "%s codes have only %s", vendor->name,
		                     spec->alphabet);
	}
	code[n] = '\0';
	if (n >= (size_t)spec->min_length && n <= (size_t)spec->max_length)
		return 0;
	if (spec->min_length == spec->max_length)
		return enr_error_set(ENR_E_PARSE, "%zu characters: %s codes have %ld", n,
		                     vendor->name, spec->max_length);
	return enr_error_set(ENR_E_PARSE, "%zu characters: %s codes have %ld to %ld", n,
	                     vendor->name, spec->min_length, spec->max_length);
}

int enr_oauth_normalize_code(char **out, const struct enr_vendor *vendor, const char *typed)
{
	char *text = enr_util_strdup(typed);
	int rc = 0;

	*out = NULL;
	if (!text)
		return enr_error_set(ENR_E_NOMEM, NULL);
	enr_util_trim(text);
	if (text[0] && vendor && vendor->has_oauth && vendor->oauth.code.max_length &&
	    is_bare_code(text))
		rc = normalize_bare(vendor, text);
	if (rc < 0) {
		enr_util_free_secret(text);
		return rc;
	}
	*out = text;
	return 0;
}

int enr_oauth_callback_parse(struct enr_oauth_callback **out, const struct enr_vendor *vendor,
                             const char *input, const char *expected_state)
{
	struct enr_oauth_callback *cb = NULL;
	const char *code, *state, *error, *desc, *q;
	char *text = NULL;
	int rc;

	*out = NULL;
	if (strlen(input) > MAX_CALLBACK)
		return enr_error_set(ENR_E_PARSE, "the pasted text is too long to be a redirect");
	cb = calloc(1, sizeof(*cb));
	if (!cb || !(text = enr_util_strdup(input))) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	enr_util_trim(text);
	if (!text[0]) {
		rc =
		    enr_error_set(ENR_E_PARSE, "nothing was entered: paste the code or the address "
		                               "of the page the browser ended on");
		goto out;
	}
	if (is_bare_code(text)) {
		/* A vendor whose page shows a code: in its shape (spaces dropped). */
		if (vendor && vendor->has_oauth && vendor->oauth.code.max_length &&
		    (rc = normalize_bare(vendor, text)) < 0)
			goto out;
		if (strpbrk(text, " \t")) {
			rc = enr_error_set(
			    ENR_E_PARSE,
			    "that is not a code (it holds spaces): paste the code alone "
			    "or the whole address");
			goto out;
		}
		if ((rc = enr_log_add_secret(text)) < 0)
			goto out;
		cb->code = text;
		text = NULL;
		*out = cb;
		cb = NULL;
		goto out;
	}
	text[strcspn(text, "#")] = '\0';
	q = strchr(text, '?');
	q = q ? q + 1 : text;
	if ((rc = parse_query(cb, q)) < 0 || (rc = single_param(&code, cb, "code")) < 0 ||
	    (rc = single_param(&state, cb, "state")) < 0 ||
	    (rc = single_param(&error, cb, "error")) < 0 ||
	    (rc = single_param(&desc, cb, "error_description")) < 0)
		goto out;
	if (code && (rc = enr_log_add_secret(code)) < 0)
		goto out;
	if (expected_state) {
		/* A forged error can only stop the flow, so an error without state is
		 * still reported as the error; anything else needs the state. */
		if (state ? !same_state(state, expected_state) : !error) {
			rc = enr_error_set(
			    ENR_E_STATE,
			    "%s: the redirect's state %s: it belongs to another or an "
			    "older sign-in; start again",
			    vendor ? vendor->name : "OAuth",
			    state ? "does not match" : "is missing");
			goto out;
		}
	}
	if (error) {
		rc = callback_error(vendor, error, desc);
		goto out;
	}
	if (!code && !state) {
		rc = enr_error_set(
		    ENR_E_PARSE,
		    "no code in what was entered: paste the code or the address of the "
		    "page the browser ended on");
		goto out;
	}
	if ((code && !(cb->code = enr_util_strdup(code))) ||
	    (state && !(cb->state = enr_util_strdup(state)))) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	*out = cb;
	cb = NULL;
out:
	enr_util_free_secret(text);
	enr_oauth_callback_free(cb);
	return rc;
}

int enr_oauth_parse_code(char **out, const struct enr_vendor *vendor, const char *input,
                         const char *expected_state)
{
	struct enr_oauth_callback *cb = NULL;
	int rc;

	*out = NULL;
	if ((rc = enr_oauth_callback_parse(&cb, vendor, input, expected_state)) < 0)
		return rc;
	if (!cb->code) {
		enr_oauth_callback_free(cb);
		return enr_error_set(ENR_E_PARSE, "%s: the redirect holds no code",
		                     vendor ? vendor->name : "OAuth");
	}
	*out = cb->code;
	cb->code = NULL;
	enr_oauth_callback_free(cb);
	return 0;
}

/* ---- token requests ---------------------------------------------------- */

struct param {
	const char *name;
	const char *value;
	unsigned flags;
};

/*
 * A POST to the vendor's `endpoint` with `params`, the client credentials and
 * both placed as vendors.json says.
 */
static int token_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                         const struct enr_config *cfg, const char *endpoint,
                         const struct param *params, size_t n_params, bool with_secret)
{
	enum enr_client_auth auth =
	    vendor->has_oauth ? vendor->oauth.client_auth : ENR_CLIENT_AUTH_BASIC;
	enum enr_token_params where =
	    vendor->has_oauth ? vendor->oauth.token_params : ENR_TOKEN_PARAMS_FORM;
	struct enr_http_request *req = NULL;
	const char *url, *client_id;
	char *secret = NULL;
	int rc;

	*out = NULL;
	if (!(url = enr_vendor_endpoint(vendor, cfg, endpoint)) ||
	    !(client_id = client_id_of(vendor, cfg)))
		return enr_error_last_code();
	if (with_secret && (rc = enr_vendor_secret(&secret, vendor, cfg, "client_secret")) < 0)
		return enr_error_set(ENR_E_CONFIG, "%s", enr_error_last());
	if ((rc = enr_http_request_new(&req, "POST", url)) < 0 ||
	    (rc = enr_http_request_set_vendor(req, vendor, endpoint)) < 0)
		goto out;
	enr_http_request_set_token_call(req, true);
	for (size_t i = 0; i < n_params && rc == 0; i++) {
		if (where == ENR_TOKEN_PARAMS_QUERY)
			rc = enr_http_request_add_query(req, params[i].name, params[i].value,
			                                params[i].flags);
		else
			rc = enr_http_request_add_form(req, params[i].name, params[i].value,
			                               params[i].flags);
	}
	if (rc < 0)
		goto out;
	if (auth == ENR_CLIENT_AUTH_BASIC)
		rc = enr_http_request_set_basic(req, client_id, secret);
	else if ((rc = enr_http_request_add_form(req, "client_id", client_id, 0)) == 0 && secret)
		rc = enr_http_request_add_form(req, "client_secret", secret, ENR_HTTP_SECRET);
	if (rc < 0)
		goto out;
	*out = req;
	req = NULL;
out:
	enr_config_free_secret(secret);
	enr_http_request_free(req);
	return rc;
}

int enr_oauth_code_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                           const struct enr_config *cfg, const char *code, const char *redirect_uri,
                           const char *code_verifier)
{
	struct param params[5];
	size_t n = 0;
	char *audience = NULL;
	int rc;

	*out = NULL;
	if (!(redirect_uri = redirect_uri_of(vendor, cfg, redirect_uri)))
		return enr_error_last_code();
	params[n++] = (struct param){"grant_type", "authorization_code", 0};
	params[n++] = (struct param){"code", code, ENR_HTTP_SECRET};
	params[n++] = (struct param){"redirect_uri", redirect_uri, 0};
	if (code_verifier)
		params[n++] = (struct param){"code_verifier", code_verifier, ENR_HTTP_SECRET};
	if (vendor->has_oauth && vendor->oauth.audience) {
		/* The customer's region, as the code's prefix tells it (NA when it
		 * has none: a 421 later says where the account lives). */
		enum enr_tesla_region region = ENR_TESLA_NA;
		const char *a = enr_vendor_setting(vendor, cfg, "audience");
		if (!a) {
			enr_tesla_region_from_token(&region, code);
			if ((rc = enr_tesla_audience(&audience, vendor, cfg, region)) < 0)
				return rc;
		} else if (!(audience = enr_tesla_trim_url(a))) {
			return ENR_E_NOMEM;
		}
		params[n++] = (struct param){"audience", audience, 0};
	}
	rc = token_request(out, vendor, cfg, "token_url", params, n, true);
	free(audience);
	return rc;
}

int enr_oauth_refresh_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                              const struct enr_config *cfg, const char *refresh_token)
{
	const struct param params[] = {
	    {"grant_type", "refresh_token", 0},
	    {"refresh_token", refresh_token, ENR_HTTP_SECRET},
	};

	/* Tesla's refresh is the client id and the token alone [official]. */
	return token_request(out, vendor, cfg, "token_url", params, ENR_ARRAY_SIZE(params),
	                     !(vendor->has_oauth && vendor->oauth.refresh_without_secret));
}

int enr_oauth_client_credentials_request(struct enr_http_request **out,
                                         const struct enr_vendor *vendor,
                                         const struct enr_config *cfg, const char *scope)
{
	const struct param params[] = {
	    {"grant_type", "client_credentials", 0},
	    {"scope", scope, 0},
	};
	const char *endpoint =
	    enr_vendor_default_endpoint(vendor, "token_url") ? "token_url" : "auth_url";

	return token_request(out, vendor, cfg, endpoint, params, scope && scope[0] ? 2 : 1, true);
}

/* ---- token answers ----------------------------------------------------- */

void enr_oauth_tokens_free(struct enr_oauth_tokens *tokens)
{
	if (!tokens)
		return;
	enr_util_free_secret(tokens->access_token);
	enr_util_free_secret(tokens->refresh_token);
	enr_util_free_secret(tokens->id_token);
	free(tokens->token_type);
	free(tokens->scope);
	free(tokens);
}

/* The member `name` or its camelCase spelling `alt` (may be NULL). */
static json_object *member(json_object *obj, const char *name, const char *alt)
{
	json_object *v = NULL;

	if (json_object_object_get_ex(obj, name, &v) && !json_object_is_type(v, json_type_null))
		return v;
	if (alt && json_object_object_get_ex(obj, alt, &v) &&
	    !json_object_is_type(v, json_type_null))
		return v;
	return NULL;
}

/* A copy of a string member, NULL when absent; ENR_E_BADRESPONSE when not a string. */
static int string_member(char **out, const struct enr_http_response *resp, json_object *obj,
                         const char *name, const char *alt)
{
	json_object *v = member(obj, name, alt);
	char what[80];

	*out = NULL;
	if (!v)
		return 0;
	if (!json_object_is_type(v, json_type_string)) {
		snprintf(what, sizeof(what), "'%s' is not a string", name);
		return enr_http_badresponse(resp, what);
	}
	*out = enr_util_strdup(json_object_get_string(v));
	return *out ? 0 : ENR_E_NOMEM;
}

/* Seconds as a number or a numeric string; -1 when absent. */
static int seconds_member(long long *out, const struct enr_http_response *resp, json_object *obj,
                          const char *name, const char *alt)
{
	json_object *v = member(obj, name, alt);
	char what[80];

	*out = -1;
	if (!v)
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		*out = json_object_get_int64(v);
	} else if (json_object_is_type(v, json_type_double)) {
		double d = json_object_get_double(v);
		*out = d >= 0 && d < 1e12 ? (long long)d : -2;
	} else if (json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);
		char *end;
		errno = 0;
		*out = strtoll(s, &end, 10);
		if (errno || end == s || (*end && *end != '.'))
			*out = -2;
	} else {
		*out = -2;
	}
	if (*out < 0 || *out > 100LL * 365 * 86400) {
		snprintf(what, sizeof(what), "'%s' is not a number of seconds", name);
		return enr_http_badresponse(resp, what);
	}
	return 0;
}

/* "scope" as a string, or an array joined with spaces. */
static int scope_member(char **out, json_object *obj)
{
	json_object *v = member(obj, "scope", NULL);
	size_t n;
	char *joined = NULL;

	*out = NULL;
	if (!v)
		return 0;
	if (json_object_is_type(v, json_type_string)) {
		*out = enr_util_strdup(json_object_get_string(v));
		return *out ? 0 : ENR_E_NOMEM;
	}
	if (!json_object_is_type(v, json_type_array))
		return 0;
	n = json_object_array_length(v);
	for (size_t i = 0; i < n; i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(v, i));
		char *grown =
		    enr_util_printf("%s%s%s", joined ? joined : "", joined ? " " : "", s ? s : "");
		free(joined);
		if (!grown)
			return ENR_E_NOMEM;
		joined = grown;
	}
	*out = joined;
	return 0;
}

int enr_oauth_token_response(struct enr_oauth_tokens **out, const struct enr_http_response *resp)
{
	const struct enr_vendor *vendor = resp->vendor;
	struct enr_oauth_tokens *t = NULL;
	json_object *root = NULL;
	long long expires_in, refresh_expires_in;
	int rc;

	*out = NULL;
	if ((rc = enr_http_classify(resp)) < 0 || (rc = enr_http_response_json(&root, resp)) < 0)
		return rc;
	if (!json_object_is_type(root, json_type_object)) {
		rc = enr_http_badresponse(resp, "the token answer is not a JSON object");
		goto out;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	t->obtained_at = (long long)time(NULL);
	if ((rc = string_member(&t->access_token, resp, root, "access_token", "accessToken")) < 0 ||
	    (rc = string_member(&t->refresh_token, resp, root, "refresh_token", "refreshToken")) <
	        0 ||
	    (rc = string_member(&t->id_token, resp, root, "id_token", "idToken")) < 0 ||
	    (rc = string_member(&t->token_type, resp, root, "token_type", "tokenType")) < 0 ||
	    (rc = scope_member(&t->scope, root)) < 0 ||
	    (rc = seconds_member(&expires_in, resp, root, "expires_in", "expiresIn")) < 0 ||
	    (rc = seconds_member(&refresh_expires_in, resp, root, "refresh_expires_in",
	                         "refreshExpiresIn")) < 0)
		goto out;
	/* Registered before anything else can print them. */
	if ((rc = enr_log_add_secret(t->access_token)) < 0 ||
	    (rc = enr_log_add_secret(t->refresh_token)) < 0 ||
	    (rc = enr_log_add_secret(t->id_token)) < 0)
		goto out;
	if (!t->access_token || !t->access_token[0]) {
		rc = enr_http_badresponse(resp, "the token answer has no access_token");
		goto out;
	}
	if (t->refresh_token && !t->refresh_token[0]) {
		free(t->refresh_token);
		t->refresh_token = NULL;
	}
	if (!t->token_type && !(t->token_type = enr_util_strdup("Bearer"))) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	if (expires_in >= 0)
		t->access_expires_at = t->obtained_at + expires_in;
	else if (vendor && vendor->tokens.access_ttl > 0)
		t->access_expires_at = t->obtained_at + vendor->tokens.access_ttl;
	if (t->refresh_token) {
		if (refresh_expires_in > 0)
			t->refresh_expires_at = t->obtained_at + refresh_expires_in;
		else if (refresh_expires_in < 0 && vendor && vendor->tokens.refresh_ttl > 0)
			t->refresh_expires_at = t->obtained_at + vendor->tokens.refresh_ttl;
	}
	*out = t;
	t = NULL;
out:
	json_object_put(root);
	enr_oauth_tokens_free(t);
	return rc;
}

/* Sends the token request `*req` that the caller built (`built` is what
 * building it returned) and reads the answer; frees the request. */
static int perform_token(struct enr_oauth_tokens **out, const struct enr_config *cfg, int built,
                         struct enr_http_request **req)
{
	struct enr_http_response *resp = NULL;
	int rc = built;

	if (rc == 0 && (rc = enr_http_perform(&resp, cfg, *req)) == 0)
		rc = enr_oauth_token_response(out, resp);
	enr_http_response_free(resp);
	enr_http_request_free(*req);
	*req = NULL;
	return rc;
}

int enr_oauth_exchange_code(struct enr_oauth_tokens **out, const struct enr_vendor *vendor,
                            const struct enr_config *cfg, const char *code,
                            const char *redirect_uri, const char *code_verifier)
{
	struct enr_http_request *req = NULL;

	*out = NULL;
	return perform_token(
	    out, cfg, enr_oauth_code_request(&req, vendor, cfg, code, redirect_uri, code_verifier),
	    &req);
}

int enr_oauth_refresh(struct enr_oauth_tokens **out, const struct enr_vendor *vendor,
                      const struct enr_config *cfg, const char *refresh_token)
{
	struct enr_http_request *req = NULL;

	*out = NULL;
	return perform_token(out, cfg, enr_oauth_refresh_request(&req, vendor, cfg, refresh_token),
	                     &req);
}

int enr_oauth_client_credentials(struct enr_oauth_tokens **out, const struct enr_vendor *vendor,
                                 const struct enr_config *cfg, const char *scope)
{
	struct enr_http_request *req = NULL;

	*out = NULL;
	return perform_token(out, cfg,
	                     enr_oauth_client_credentials_request(&req, vendor, cfg, scope), &req);
}

/* ---- what an answer must hold ------------------------------------------ */

const char *enr_oauth_issuer(const struct enr_vendor *vendor, const struct enr_config *cfg)
{
	const char *iss = enr_vendor_setting(vendor, cfg, "issuer");

	return iss ? iss : vendor->has_oauth ? vendor->oauth.issuer : NULL;
}

/* The length of "scheme://host[:port]" at the start of `url`, or 0. */
static size_t origin_len(const char *url)
{
	const char *p = strstr(url, "://");

	return p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : 0;
}

/* `iss` is the vendor's issuer or, when none is known, names the host the
 * sign-in went to; else ENR_E_STATE naming both. */
static int issuer_ok(const char *iss, const struct enr_vendor *vendor, const struct enr_config *cfg)
{
	const char *expected = enr_oauth_issuer(vendor, cfg), *authorize;
	size_t len;

	if (expected) {
		if (strcmp(iss, expected) == 0)
			return 0;
		return enr_error_set(ENR_E_STATE,
		                     "%s: the answer came from another sign-in server (iss %.100s, "
		                     "expected %.100s): it is refused; start again",
		                     vendor->name, iss, expected);
	}
	authorize = enr_vendor_endpoint(vendor, cfg, "authorize_url");
	len = authorize ? origin_len(authorize) : 0;
	if (len && origin_len(iss) == len && strncasecmp(iss, authorize, len) == 0)
		return 0;
	return enr_error_set(ENR_E_STATE,
	                     "%s: the answer came from another sign-in server (iss %.100s, the "
	                     "sign-in went to %.*s): it is refused; start again (set [%s] issuer "
	                     "if %s's issuer is on another host)",
	                     vendor->name, iss, (int)len, authorize ? authorize : "",
	                     vendor->config_section, vendor->name);
}

int enr_oauth_check_issuer(const struct enr_oauth_callback *cb, const struct enr_vendor *vendor,
                           const struct enr_config *cfg)
{
	const char *iss = NULL;
	int rc;

	if ((rc = single_param(&iss, cb, "iss")) < 0 || !iss)
		return rc;
	return issuer_ok(iss, vendor, cfg);
}

const char *enr_oauth_jwks_url(const struct enr_vendor *vendor, const struct enr_config *cfg)
{
	const char *url = enr_vendor_setting(vendor, cfg, "jwks_url");

	return url ? url : vendor->has_oauth ? vendor->oauth.jwks_url : NULL;
}

int enr_oauth_jwks_request(struct enr_http_request **out, const struct enr_vendor *vendor,
                           const struct enr_config *cfg)
{
	const char *url = enr_oauth_jwks_url(vendor, cfg);
	int rc;

	*out = NULL;
	if (!url)
		return 0;
	if ((rc = enr_http_request_new(out, "GET", url)) < 0 ||
	    (rc = enr_http_request_set_vendor(*out, vendor, "jwks_url")) < 0) {
		enr_http_request_free(*out);
		*out = NULL;
		return rc;
	}
	enr_http_request_set_max_body(*out, JWKS_MAX);
	return 0;
}

int enr_oauth_verify_id_token(json_object **claims, const struct enr_vendor *vendor,
                              const struct enr_config *cfg, const char *id_token, const char *jwks)
{
	json_object *unverified = NULL;
	struct enr_jwt_expect expect = {.now = (long long)time(NULL), .skew = ID_TOKEN_SKEW};
	const char *iss;
	int rc;

	*claims = NULL;
	if (!(expect.audience = client_id_of(vendor, cfg)))
		return enr_error_last_code();
	/* The issuer first (the same rule as the redirect's iss), then the rest. */
	if ((rc = enr_oauth_jwt_claims(&unverified, id_token)) < 0 ||
	    !(iss = json_object_get_string(json_object_object_get(unverified, "iss"))))
		rc = enr_error_set(ENR_E_STATE, "the id_token names no issuer (iss)");
	else if ((rc = issuer_ok(iss, vendor, cfg)) == 0) {
		expect.issuer = iss;
		rc = jwks ? enr_jwt_verify(claims, id_token, jwks, &expect)
		          : enr_jwt_check(claims, id_token, &expect);
	}
	json_object_put(unverified);
	if (rc < 0 && !strstr(enr_error_last(), vendor->name))
		enr_error_set(rc, "%s: %s: the sign-in is refused; start again", vendor->name,
		              enr_error_last());
	return rc;
}

int enr_oauth_check_refresh(const struct enr_oauth_flow *flow, const struct enr_config *cfg,
                            const struct enr_oauth_tokens *tokens)
{
	const struct enr_vendor *v = flow->vendor;
	const char *offline;
	bool strict;
	int rc;

	if (!flow->wants_refresh || !v)
		return 0;
	offline = v->oauth.offline_scope;
	if (offline && tokens->scope && !has_scope(tokens->scope, offline) && flow->asks_consent)
		rc = enr_error_set(ENR_E_DECLINED,
		                   "%s did not grant %s, so it gave no lasting access: the access "
		                   "ends %s; ask the customer to authorize again and allow staying "
		                   "signed in",
		                   v->name, offline,
		                   tokens->refresh_token ? "soon" : "within hours");
	else if (offline && tokens->scope && !has_scope(tokens->scope, offline))
		/* OpenID providers grant offline_access only when asked with
		 * prompt=consent (OIDC Core 11): ours first, then the customer's. */
		rc =
		    enr_error_set(ENR_E_MISCONFIGURED,
		                  "%s did not grant %s, so the access ends %s: the sign-in did not "
		                  "ask with prompt=consent, which %s may need for it (set [%s] "
		                  "authorize_params = prompt=consent), or the customer did not "
		                  "allow staying signed in",
		                  v->name, offline, tokens->refresh_token ? "soon" : "within hours",
		                  v->name, v->config_section);
	else if (!tokens->refresh_token)
		rc =
		    enr_error_set(ENR_E_MISCONFIGURED,
		                  "%s gave no refresh token, so the access ends within hours: the "
		                  "company's app may lack offline access (check it in %s's "
		                  "developer console)%s%s%s",
		                  v->name, v->name,
		                  flow->asks_consent ? "" : ", or it wants prompt=consent (set [",
		                  flow->asks_consent ? "" : v->config_section,
		                  flow->asks_consent ? "" : "] authorize_params = prompt=consent)");
	else
		return 0;
	/* [section] strict_refresh, else vendors.json, else where refresh tokens rotate. */
	if (enr_config_get_bool(&strict, cfg, v->config_section, "strict_refresh",
	                        v->oauth.strict_refresh >= 0 ? v->oauth.strict_refresh
	                                                     : v->tokens.refresh_rotates) < 0)
		return enr_error_last_code();
	return strict ? rc : 1;
}

/* ---- identity ---------------------------------------------------------- */

int enr_oauth_jwt_claims(struct json_object **out, const char *jwt)
{
	const char *first = jwt ? strchr(jwt, '.') : NULL;
	const char *second = first ? strchr(first + 1, '.') : NULL;
	unsigned char *payload = NULL;
	char *segment = NULL;
	json_object *claims = NULL;
	size_t len = 0;
	int rc = 0;

	*out = NULL;
	/* A JWS has exactly three parts (a JWE has five and cannot be read). */
	if (!second || second == first + 1 || strchr(second + 1, '.'))
		return enr_error_set(ENR_E_PARSE, "not a JWT");
	segment = enr_util_printf("%.*s", (int)(second - first - 1), first + 1);
	if (!segment)
		return ENR_E_NOMEM;
	if (enr_util_base64_decode(&payload, &len, segment) < 0 || strlen((char *)payload) != len ||
	    !(claims = json_tokener_parse((char *)payload)) ||
	    !json_object_is_type(claims, json_type_object)) {
		json_object_put(claims);
		rc = enr_error_set(ENR_E_PARSE, "not a JWT (its payload is not a JSON object)");
		goto out;
	}
	*out = claims;
out:
	free(segment);
	if (payload)
		OPENSSL_clear_free(payload, len);
	return rc;
}

void enr_oauth_identity_free(struct enr_oauth_identity *identity)
{
	if (!identity)
		return;
	free(identity->subject);
	free(identity->account);
	free(identity->scopes);
	free(identity->warning);
	free(identity);
}

/* A claim that names something: a string, or an integer written out. */
static char *claim_text(json_object *claims, const char *name)
{
	json_object *v;

	if (!claims || !json_object_object_get_ex(claims, name, &v))
		return NULL;
	if (json_object_is_type(v, json_type_string))
		return enr_util_strdup(json_object_get_string(v));
	if (json_object_is_type(v, json_type_int))
		return enr_util_printf("%lld", (long long)json_object_get_int64(v));
	return NULL;
}

static bool has_scope(const char *list, const char *scope)
{
	size_t len = strlen(scope);

	for (const char *p = list; p && *p;) {
		size_t n = strcspn(p, " ");
		if (n == len && strncmp(p, scope, len) == 0)
			return true;
		p += n;
		p += strspn(p, " ");
	}
	return false;
}

int enr_oauth_identity_new(struct enr_oauth_identity **out, const struct enr_vendor *vendor,
                           const struct enr_oauth_tokens *tokens, json_object *id_claims)
{
	struct enr_oauth_identity *id = calloc(1, sizeof(*id));
	const char *claim = vendor && vendor->has_oauth && vendor->oauth.identity_claim
	                        ? vendor->oauth.identity_claim
	                        : "sub";
	const char *required = vendor && vendor->has_oauth ? vendor->oauth.required_scope : NULL;
	json_object *claims = NULL, *v;
	int rc = 0;

	*out = NULL;
	if (!id)
		return enr_error_set(ENR_E_NOMEM, NULL);
	if (enr_oauth_jwt_claims(&claims, tokens->access_token) < 0)
		enr_error_clear();
	/* Who signed in: the verified id_token's word first, else the access
	 * token's (which the vendor's API must then accept in the check). */
	id->subject = claim_text(id_claims, "sub");
	id->account = claim_text(id_claims, claim);
	if (!id->subject)
		id->subject = claim_text(claims, "sub");
	if (!id->account)
		id->account = claim_text(claims, claim);
	if (claims) {
		if (json_object_object_get_ex(claims, "exp", &v))
			id->expires_at = json_object_get_int64(v);
		if (json_object_object_get_ex(claims, "scp", &v)) {
			json_object *wrapper = json_object_new_object();
			/* scope_member() reads "scope": reuse it for the array or string. */
			if (!wrapper) {
				rc = enr_error_set(ENR_E_NOMEM, NULL);
				goto out;
			}
			json_object_object_add(wrapper, "scope", json_object_get(v));
			rc = scope_member(&id->scopes, wrapper);
			json_object_put(wrapper);
			if (rc < 0)
				goto out;
		}
	}
	if (!id->scopes && tokens->scope && !(id->scopes = enr_util_strdup(tokens->scope))) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	if (required && required[0] && id->scopes && !has_scope(id->scopes, required)) {
		id->scope_missing = true;
		id->warning = enr_util_printf(
		    "%s did not grant the %s permission: ask the customer to authorize again and "
		    "allow every permission asked for",
		    vendor->name, required);
		if (!id->warning) {
			rc = ENR_E_NOMEM;
			goto out;
		}
	}
	*out = id;
	id = NULL;
out:
	json_object_put(claims);
	enr_oauth_identity_free(id);
	return rc;
}

/* ---- loopback receiver ------------------------------------------------- */

#define RECEIVER_DEFAULT_TIMEOUT_MS (5 * 60 * 1000)
/* How long a page on its way to the browser may keep the listener open once
 * the flow has ended: a browser that never reads cannot hold it longer. */
#define RECEIVER_SEND_BOUND_MS 2000
#define ERROR_SHOWN_MAX        64 /* characters of the vendor's error code on the page */

/* What the browser came back with, and the page that says so. */
enum rx_page {
	RX_APPROVED,  /* a code, with our state */
	RX_DECLINED,  /* error=access_denied: the customer said no */
	RX_ERROR,     /* any other error from the vendor */
	RX_BAD_STATE, /* another (or an older) sign-in's redirect, or none */
	RX_AGAIN,     /* after the one redirect, the timeout or a cancel */
};

static const char page_head[] =
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width\"><title>derenroll</title></head>"
    "<body style=\"font-family:sans-serif;margin:3em\">";
static const char page_foot[] = "</body></html>";

/* The body of each page (RX_ERROR's is the two pieces around the error). */
static const char *const page_text[] = {
    [RX_APPROVED] = "<h1>Thank you</h1><p>derenroll has received your approval. "
                    "You can close this tab.</p>",
    [RX_DECLINED] = "<h1>Access declined</h1><p>You declined, so nothing was shared. "
                    "derenroll has received your answer: the installer will see that "
                    "you declined. You can close this tab.</p>",
    [RX_ERROR] = "<h1>The sign-in did not finish</h1><p>The sign-in page answered with the "
                 "error <code>",
    [RX_BAD_STATE] = "<h1>This answer is not for this sign-in</h1><p>It belongs to another "
                     "or an older sign-in, so derenroll did not use it. Ask the installer "
                     "to start the sign-in again. You can close this tab.</p>",
    [RX_AGAIN] = "<p>This sign-in was already completed or has ended. "
                 "You can close this tab.</p>",
};
static const char page_error_end[] = "</code>, so nothing was shared. The installer will see "
                                     "this error in derenroll. You can close this tab.</p>";

struct enr_oauth_receiver {
	struct MHD_Daemon *daemon;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char redirect_uri[64];
	char *received;       /* the redirect, as a URL */
	char *expected_state; /* NULL: the state is judged by the caller alone */
	int pipe_fds[2];      /* [0] becomes readable when `received` is set */
	long long deadline;
	unsigned sending;        /* answers queued whose sending has not ended */
	long long sending_until; /* the bound on waiting for them */
	bool cancelled;
};

static long long monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct query_builder {
	char *query;
	bool failed;
};

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
	struct query_builder *b = cls;
	char *k, *v = NULL, *grown = NULL;

	(void)kind;
	k = enr_util_urlencode(key);
	if (k && value)
		v = enr_util_urlencode(value);
	if (k && (v || !value))
		grown = enr_util_printf("%s%s%s%s%s", b->query ? b->query : "", b->query ? "&" : "",
		                        k, value ? "=" : "", v ? v : "");
	free(k);
	enr_util_free_secret(v);
	enr_util_free_secret(b->query);
	b->query = grown;
	b->failed |= !grown;
	return grown ? MHD_YES : MHD_NO;
}

/* `text` with &, <, >, " and ' as entities, into `buf` (cut to fit). */
static const char *html_text(char *buf, size_t size, const char *text)
{
	static const char special[] = "&<>\"'";
	static const char *const entity[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"};
	size_t used = 0;

	for (; *text; text++) {
		const char *hit = strchr(special, *text);
		const char *piece = hit ? entity[hit - special] : NULL;
		size_t n = piece ? strlen(piece) : 1;
		if (used + n >= size)
			break;
		memcpy(buf + used, piece ? piece : text, n);
		used += n;
	}
	buf[used] = '\0';
	return buf;
}

/* The page for `page`; `error` is the vendor's error code for RX_ERROR. */
static char *render_page(enum rx_page page, const char *error)
{
	char visible[ENR_TEXT_VISIBLE_SIZE(ERROR_SHOWN_MAX)];
	char shown[6 * sizeof(visible)];

	if (page != RX_ERROR)
		return enr_util_printf("%s%s%s", page_head, page_text[page], page_foot);
	/* Only the error code, never the query: control characters visible,
	 * markup as text. */
	enr_text_visible(visible, sizeof(visible), error, ERROR_SHOWN_MAX);
	html_text(shown, sizeof(shown), visible);
	return enr_util_printf("%s%s%s%s%s", page_head, page_text[RX_ERROR], shown, page_error_end,
	                       page_foot);
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned int status, enum rx_page page,
                              const char *error)
{
	char *html = render_page(page, error);
	struct MHD_Response *r =
	    html ? MHD_create_response_from_buffer(strlen(html), html, MHD_RESPMEM_MUST_FREE)
	         : NULL;
	enum MHD_Result ret;

	if (!r) {
		free(html);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "Content-Security-Policy",
	                        "default-src 'none'; "
	                        "style-src 'unsafe-inline'");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Which page the redirect gets; called with the lock held. */
static enum rx_page judge(const struct enr_oauth_receiver *r, const char *state, const char *error)
{
	/* As enr_oauth_callback_parse(): an error without state is still the error. */
	if (r->expected_state && (state ? !same_state(state, r->expected_state) : !error))
		return RX_BAD_STATE;
	if (!error)
		return RX_APPROVED;
	return strcmp(error, "access_denied") == 0 ? RX_DECLINED : RX_ERROR;
}

/* The request's answer was sent, or its connection ended: the listener may go. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct enr_oauth_receiver *r = cls;

	(void)conn;
	(void)toe;
	if (*con_cls != r)
		return;
	*con_cls = NULL;
	pthread_mutex_lock(&r->lock);
	r->sending--;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct enr_oauth_receiver *r = cls;
	struct query_builder b = {NULL, false};
	const char *state, *error;
	enum rx_page page = RX_AGAIN;
	unsigned status = MHD_HTTP_GONE;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	/* Every answer holds the listener until it was sent (on_completed). */
	pthread_mutex_lock(&r->lock);
	if (*con_cls != r) {
		*con_cls = r;
		r->sending++;
		r->sending_until = monotonic_ms() + RECEIVER_SEND_BOUND_MS;
	}
	pthread_mutex_unlock(&r->lock);
	if (strcmp(method, "GET") != 0)
		return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, RX_AGAIN, NULL);
	if (strcmp(url, "/callback") != 0)
		return answer(conn, MHD_HTTP_NOT_FOUND, RX_AGAIN, NULL);
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_arg, &b);
	if (b.failed || !b.query) {
		enr_util_free_secret(b.query);
		return answer(conn, MHD_HTTP_BAD_REQUEST, RX_AGAIN, NULL);
	}
	state = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "state");
	error = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "error");
	pthread_mutex_lock(&r->lock);
	if (!r->received && !r->cancelled && monotonic_ms() < r->deadline) {
		/* The first redirect is the answer, even a wrong one: the flow fails
		 * with what was wrong with it. */
		page = judge(r, state, error);
		status = page == RX_BAD_STATE ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_OK;
		r->received = enr_util_printf("%s?%s", r->redirect_uri, b.query);
		if (r->received) {
			ssize_t ignored = write(r->pipe_fds[1], "x", 1);
			(void)ignored;
			pthread_cond_broadcast(&r->cond);
		}
	}
	pthread_mutex_unlock(&r->lock);
	enr_util_free_secret(b.query);
	return answer(conn, status, page, error);
}

int enr_oauth_receiver_new(struct enr_oauth_receiver **out, long timeout_ms)
{
	struct enr_oauth_receiver *r = calloc(1, sizeof(*r));
	struct sockaddr_in addr = {0};
	const union MHD_DaemonInfo *info;
	pthread_condattr_t attr;

	*out = NULL;
	if (!r)
		return enr_error_set(ENR_E_NOMEM, NULL);
	r->pipe_fds[0] = r->pipe_fds[1] = -1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &attr);
	pthread_condattr_destroy(&attr);
	r->deadline = monotonic_ms() + (timeout_ms > 0 ? timeout_ms : RECEIVER_DEFAULT_TIMEOUT_MS);
	if (pipe2(r->pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		enr_oauth_receiver_free(r);
		return enr_error_set_errno(ENR_E_IO, errno, "cannot create a pipe");
	}
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	r->daemon = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, on_request, r,
	    MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, r,
	    MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_END);
	info = r->daemon ? MHD_get_daemon_info(r->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
	if (!info || !info->port) {
		enr_oauth_receiver_free(r);
		return enr_error_set(ENR_E_IO,
		                     "cannot listen on 127.0.0.1 for the sign-in redirect");
	}
	snprintf(r->redirect_uri, sizeof(r->redirect_uri), "http://127.0.0.1:%u/callback",
	         (unsigned)info->port);
	*out = r;
	return 0;
}

const char *enr_oauth_receiver_redirect_uri(const struct enr_oauth_receiver *receiver)
{
	return receiver->redirect_uri;
}

int enr_oauth_receiver_expect_state(struct enr_oauth_receiver *receiver, const char *state)
{
	char *copy = enr_util_strdup(state);

	if (!copy)
		return ENR_E_NOMEM;
	pthread_mutex_lock(&receiver->lock);
	free(receiver->expected_state);
	receiver->expected_state = copy;
	pthread_mutex_unlock(&receiver->lock);
	return 0;
}

int enr_oauth_receiver_fd(const struct enr_oauth_receiver *receiver)
{
	return receiver->pipe_fds[0];
}

/* Called with the lock held. */
static int receiver_result(char **out, struct enr_oauth_receiver *r)
{
	if (r->cancelled)
		return enr_error_set(ENR_E_CANCELLED, "the sign-in on this computer was cancelled");
	if (r->received) {
		*out = enr_util_strdup(r->received);
		return *out ? 0 : ENR_E_NOMEM;
	}
	if (monotonic_ms() >= r->deadline)
		return enr_error_set(ENR_E_TIMEOUT,
		                     "no answer came back from the browser in time: start again");
	return ENR_E_AGAIN;
}

int enr_oauth_receiver_poll(char **out, struct enr_oauth_receiver *receiver)
{
	int rc;

	*out = NULL;
	pthread_mutex_lock(&receiver->lock);
	rc = receiver_result(out, receiver);
	pthread_mutex_unlock(&receiver->lock);
	return rc;
}

int enr_oauth_receiver_wait(char **out, struct enr_oauth_receiver *receiver, long wait_ms)
{
	long long until = receiver->deadline;
	struct timespec ts;
	int rc;

	*out = NULL;
	if (wait_ms >= 0 && monotonic_ms() + wait_ms < until)
		until = monotonic_ms() + wait_ms;
	ts.tv_sec = (time_t)(until / 1000);
	ts.tv_nsec = (long)(until % 1000) * 1000000;
	pthread_mutex_lock(&receiver->lock);
	while ((rc = receiver_result(out, receiver)) == ENR_E_AGAIN && monotonic_ms() < until)
		pthread_cond_timedwait(&receiver->cond, &receiver->lock, &ts);
	pthread_mutex_unlock(&receiver->lock);
	return rc;
}

void enr_oauth_receiver_cancel(struct enr_oauth_receiver *receiver)
{
	pthread_mutex_lock(&receiver->lock);
	receiver->cancelled = true;
	pthread_cond_broadcast(&receiver->cond);
	pthread_mutex_unlock(&receiver->lock);
}

void enr_oauth_receiver_free(struct enr_oauth_receiver *receiver)
{
	if (!receiver)
		return;
	if (receiver->daemon) {
		/* The browser gets its whole page, whatever the flow made of it. */
		struct timespec ts;
		pthread_mutex_lock(&receiver->lock);
		ts.tv_sec = (time_t)(receiver->sending_until / 1000);
		ts.tv_nsec = (long)(receiver->sending_until % 1000) * 1000000;
		while (receiver->sending > 0 && monotonic_ms() < receiver->sending_until)
			pthread_cond_timedwait(&receiver->cond, &receiver->lock, &ts);
		pthread_mutex_unlock(&receiver->lock);
		MHD_stop_daemon(receiver->daemon);
	}
	if (receiver->pipe_fds[0] >= 0)
		close(receiver->pipe_fds[0]);
	if (receiver->pipe_fds[1] >= 0)
		close(receiver->pipe_fds[1]);
	enr_util_free_secret(receiver->received);
	free(receiver->expected_state);
	pthread_cond_destroy(&receiver->cond);
	pthread_mutex_destroy(&receiver->lock);
	free(receiver);
}
