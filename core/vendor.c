#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/vendor.h"
#include "util.h"
#include "vendor_internal.h"

#define MAX_CATALOG_SIZE (1024 * 1024)

struct enr_catalog {
	json_object *root; /* owns every string the vendors point at */
	struct enr_vendor *vendors;
	size_t n_vendors;
	struct enr_derapi_access *access; /* one per entry of derapi.vendor_access */
	size_t n_access;
};

static const char *const method_ids[] = {"oauth", "email", "key", "account", "partner", "join"};

/* What is being validated, for messages: "vendors.json: vendor 'tesla': field 'check.path'". */
struct ctx {
	const char *origin;
	const char *vendor;
};

static int bad(const struct ctx *c, const char *field, const char *problem)
{
	int len = (int)strlen(field);

	/* "methods[0]." names an element: drop the trailing dot. */
	if (len > 0 && field[len - 1] == '.')
		len--;
	if (c->vendor)
		return enr_error_set(ENR_E_PARSE, "%s: vendor '%s': field '%.*s' %s", c->origin,
		                     c->vendor, len, field, problem);
	return enr_error_set(ENR_E_PARSE, "%s: field '%.*s' %s", c->origin, len, field, problem);
}

static json_object *member(json_object *obj, const char *key, json_type type)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, type))
		return NULL;
	return v;
}

static bool present(json_object *obj, const char *key)
{
	return json_object_object_get_ex(obj, key, NULL);
}

/* A string with a NUL inside ("\u0000"): C would see only its beginning. */
static bool has_nul(json_object *str)
{
	return strlen(json_object_get_string(str)) != (size_t)json_object_get_string_len(str);
}

/* A string member: required (error when missing) or optional (NULL when missing). */
static int get_str(const char **out, const struct ctx *c, json_object *obj, const char *prefix,
                   const char *key, bool required)
{
	char field[128];
	json_object *v;

	snprintf(field, sizeof(field), "%s%s", prefix, key);
	*out = NULL;
	if (!present(obj, key))
		return required ? bad(c, field, "is missing") : 0;
	v = member(obj, key, json_type_string);
	if (!v)
		return bad(c, field, "must be a string");
	if (has_nul(v))
		return bad(c, field, "must not contain a NUL character (\\u0000)");
	*out = json_object_get_string(v);
	if (required && !(*out)[0])
		return bad(c, field, "must not be empty");
	return 0;
}

static int get_bool(bool *out, const struct ctx *c, json_object *obj, const char *prefix,
                    const char *key)
{
	char field[128];
	json_object *v;

	snprintf(field, sizeof(field), "%s%s", prefix, key);
	*out = false;
	if (!present(obj, key))
		return 0;
	v = member(obj, key, json_type_boolean);
	if (!v)
		return bad(c, field, "must be true or false");
	*out = json_object_get_boolean(v);
	return 0;
}

static int get_num(double *out, const struct ctx *c, json_object *obj, const char *prefix,
                   const char *key, bool required)
{
	char field[128];
	json_object *v = NULL;

	snprintf(field, sizeof(field), "%s%s", prefix, key);
	*out = 0;
	if (!present(obj, key))
		return required ? bad(c, field, "is missing") : 0;
	json_object_object_get_ex(obj, key, &v);
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return bad(c, field, "must be a number");
	*out = json_object_get_double(v);
	if (!isfinite(*out))
		return bad(c, field, "must be a finite number");
	if (*out < 0)
		return bad(c, field, "must not be negative");
	return 0;
}

/* A whole number from 0 to `max`: a larger one would not fit (and casting it
 * would be undefined behaviour). */
static int get_whole(long *out, const struct ctx *c, json_object *obj, const char *prefix,
                     const char *key, bool required, long max)
{
	char field[128], problem[64];
	double d;
	int rc = get_num(&d, c, obj, prefix, key, required);

	*out = 0;
	if (rc < 0)
		return rc;
	/* (double)max + 1 is exact for LONG_MAX and INT_MAX: 2^63, 2^31. */
	if (!(d < (double)max + 1.0)) {
		snprintf(field, sizeof(field), "%s%s", prefix, key);
		snprintf(problem, sizeof(problem), "is too large (at most %ld)", max);
		return bad(c, field, problem);
	}
	*out = (long)d;
	return 0;
}

static int get_long(long *out, const struct ctx *c, json_object *obj, const char *prefix,
                    const char *key, bool required)
{
	return get_whole(out, c, obj, prefix, key, required, LONG_MAX);
}

static bool is_url(const char *s)
{
	return (strncmp(s, "https://", 8) == 0 && s[8]) || (strncmp(s, "http://", 7) == 0 && s[7]);
}

#define PATTERN_MAX_LEN    256
#define PATTERN_MAX_GROWTH 1024.0

/* The end of the bracket expression at `p` ('['): its ']', or NULL. */
static const char *bracket_end(const char *p)
{
	p++;
	if (*p == '^')
		p++;
	if (*p == ']')
		p++;
	for (; *p && *p != ']'; p++) {
		if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
			char close = p[1];
			for (p += 2; *p && !(*p == close && p[1] == ']'); p++)
				;
			if (!*p)
				return NULL;
			p++;
		}
	}
	return *p ? p : NULL;
}

/*
 * Whether regcomp() compiles `pattern` in bounded memory. glibc copies the
 * operand of '+' once and that of '{n,m}' m times, and nested copies
 * multiply ("((a{255}){255}){255}" takes gigabytes): the product of those
 * counts, taken as if all were nested, is bounded.
 */
static bool pattern_small(const char *pattern)
{
	double growth = 1;

	if (strlen(pattern) > PATTERN_MAX_LEN)
		return false;
	for (const char *p = pattern; *p; p++) {
		if (*p == '\\' && p[1]) {
			p++;
		} else if (*p == '[') {
			if (!(p = bracket_end(p)))
				return true; /* regcomp() refuses it */
		} else if (*p == '+') {
			growth *= 2;
		} else if (*p == '{') {
			char *end;
			double low = strtod(p + 1, &end), high = low;
			if (*end == ',')
				high = end[1] == '}' ? low + 1 : strtod(end + 1, NULL);
			double copies = (high > low ? high : low) + 1;
			if (copies > 1)
				growth *= copies;
		}
		if (!(growth <= PATTERN_MAX_GROWTH))
			return false;
	}
	return true;
}

static int parse_fields(struct enr_method *m, const struct ctx *c, json_object *arr,
                        const char *prefix)
{
	struct enr_field *fields;
	size_t n = json_object_array_length(arr);

	fields = calloc(n ? n : 1, sizeof(*fields));
	if (!fields)
		return enr_error_set(ENR_E_NOMEM, NULL);
	m->fields = fields;
	m->n_fields = n;
	for (size_t i = 0; i < n; i++) {
		json_object *f = json_object_array_get_idx(arr, i);
		char p[96];
		int rc;

		snprintf(p, sizeof(p), "%sfields[%zu].", prefix, i);
		if (!json_object_is_type(f, json_type_object))
			return bad(c, p, "must be an object");
		if ((rc = get_str(&fields[i].name, c, f, p, "name", true)) < 0 ||
		    (rc = get_str(&fields[i].label, c, f, p, "label", true)) < 0 ||
		    (rc = get_str(&fields[i].help, c, f, p, "help", true)) < 0 ||
		    (rc = get_str(&fields[i].pattern, c, f, p, "pattern", false)) < 0 ||
		    (rc = get_bool(&fields[i].secret, c, f, p, "secret")) < 0 ||
		    (rc = get_bool(&fields[i].optional, c, f, p, "optional")) < 0)
			return rc;
		if (fields[i].pattern && !pattern_small(fields[i].pattern))
			return bad(c, p,
			           "has a 'pattern' too big to compile (at most 256 characters, "
			           "and repetitions that multiply to at most 1024)");
		if (fields[i].pattern) {
			regex_t re;
			if (regcomp(&re, fields[i].pattern, REG_EXTENDED | REG_NOSUB) != 0)
				return bad(
				    c, p, "has a 'pattern' that is not a valid regular expression");
			regfree(&re);
		}
	}
	return 0;
}

static int parse_methods(struct enr_vendor *v, const struct ctx *c, json_object *obj)
{
	json_object *arr = member(obj, "methods", json_type_array);
	struct enr_method *methods;
	size_t n;

	if (!arr)
		return bad(c, "methods",
		           present(obj, "methods") ? "must be an array" : "is missing");
	n = json_object_array_length(arr);
	if (n == 0)
		return bad(c, "methods", "must list at least one method");
	methods = calloc(n, sizeof(*methods));
	if (!methods)
		return enr_error_set(ENR_E_NOMEM, NULL);
	v->methods = methods;
	v->n_methods = n;
	for (size_t i = 0; i < n; i++) {
		json_object *m = json_object_array_get_idx(arr, i), *fields;
		bool known = false;
		char p[48];
		int rc;

		snprintf(p, sizeof(p), "methods[%zu].", i);
		if (!json_object_is_type(m, json_type_object))
			return bad(c, p, "must be an object");
		if ((rc = get_str(&methods[i].id, c, m, p, "id", true)) < 0 ||
		    (rc = get_str(&methods[i].label, c, m, p, "label", true)) < 0 ||
		    (rc = get_str(&methods[i].help, c, m, p, "help", true)) < 0 ||
		    (rc = get_str(&methods[i].endpoint, c, m, p, "endpoint", false)) < 0 ||
		    (rc = get_str(&methods[i].path, c, m, p, "path", false)) < 0)
			return rc;
		for (size_t k = 0; k < ENR_ARRAY_SIZE(method_ids); k++)
			known |= strcmp(methods[i].id, method_ids[k]) == 0;
		if (!known) {
			char field[64];
			snprintf(field, sizeof(field), "%sid", p);
			return enr_error_set(ENR_E_PARSE,
			                     "%s: vendor '%s': field '%s': unknown method '%s' "
			                     "(oauth, email, key, account, partner, join)",
			                     c->origin, c->vendor, field, methods[i].id);
		}
		for (size_t k = 0; k < i; k++)
			if (strcmp(methods[k].id, methods[i].id) == 0)
				return bad(c, p, "repeats a method");
		fields = member(m, "fields", json_type_array);
		if (present(m, "fields") && !fields)
			return bad(c, p, "has 'fields' that is not an array");
		if (fields && (rc = parse_fields(&methods[i], c, fields, p)) < 0)
			return rc;
	}
	return 0;
}

static int parse_endpoints(struct enr_vendor *v, const struct ctx *c, json_object *obj)
{
	json_object *eps = member(obj, "endpoints", json_type_object);
	struct enr_endpoint *endpoints;
	size_t i = 0;

	if (!eps)
		return bad(c, "endpoints",
		           present(obj, "endpoints") ? "must be an object" : "is missing");
	endpoints = calloc((size_t)json_object_object_length(eps) + 1, sizeof(*endpoints));
	if (!endpoints)
		return enr_error_set(ENR_E_NOMEM, NULL);
	v->endpoints = endpoints;
	json_object_object_foreach(eps, key, val)
	{
		char field[96];
		snprintf(field, sizeof(field), "endpoints.%s", key);
		if (!json_object_is_type(val, json_type_string) || has_nul(val) ||
		    !is_url(json_object_get_string(val)))
			return bad(c, field, "must be an http(s) URL");
		endpoints[i].name = key;
		endpoints[i].url = json_object_get_string(val);
		i++;
	}
	v->n_endpoints = i;
	return 0;
}

/* oauth.authorize_params: an object of strings, added to the authorize URL. */
static int parse_authorize_params(struct enr_vendor *v, const struct ctx *c, json_object *o)
{
	json_object *params = member(o, "authorize_params", json_type_object);
	struct enr_oauth_param *list;
	size_t n = 0;

	if (!params)
		return present(o, "authorize_params")
		           ? bad(c, "oauth.authorize_params", "must be an object of strings")
		           : 0;
	list = calloc((size_t)json_object_object_length(params) + 1, sizeof(*list));
	if (!list)
		return enr_error_set(ENR_E_NOMEM, NULL);
	v->oauth.authorize_params = list;
	json_object_object_foreach(params, key, val)
	{
		if (!json_object_is_type(val, json_type_string) || has_nul(val) || !key[0])
			return bad(c, "oauth.authorize_params", "must be an object of strings");
		list[n].name = key;
		list[n].value = json_object_get_string(val);
		n++;
	}
	v->oauth.n_authorize_params = n;
	return 0;
}

/* Whether `alphabet` is characters and ranges ("A-Za-z0-9") of printable
 * ASCII without the space. */
static bool valid_alphabet(const char *alphabet)
{
	for (const char *p = alphabet; *p; p++) {
		if (*p <= ' ' || *p > '~')
			return false;
		if (p[1] == '-' && p[2]) {
			if (p[2] <= ' ' || p[2] > '~' || p[2] < p[0])
				return false;
			p += 2;
		}
	}
	return alphabet[0] != '\0';
}

/* oauth.code: the typed code's shape ("length", or "min_length" and "max_length"). */
static int parse_code(struct enr_vendor *v, const struct ctx *c, json_object *o)
{
	json_object *code = member(o, "code", json_type_object);
	struct enr_code_spec *s = &v->oauth.code;
	long length = 0;
	int rc;

	if (!code)
		return present(o, "code") ? bad(c, "oauth.code", "must be an object") : 0;
	if ((rc = get_long(&length, c, code, "oauth.code.", "length", false)) < 0 ||
	    (rc = get_long(&s->min_length, c, code, "oauth.code.", "min_length", !length)) < 0 ||
	    (rc = get_long(&s->max_length, c, code, "oauth.code.", "max_length", !length)) < 0 ||
	    (rc = get_str(&s->alphabet, c, code, "oauth.code.", "alphabet", true)) < 0 ||
	    (rc = get_bool(&s->case_insensitive, c, code, "oauth.code.", "case_insensitive")) < 0 ||
	    (rc = get_long(&s->group, c, code, "oauth.code.", "group", false)) < 0 ||
	    (rc = get_str(&s->help, c, code, "oauth.code.", "help", false)) < 0)
		return rc;
	if (length)
		s->min_length = s->max_length = length;
	if (s->min_length < 1 || s->max_length < s->min_length || s->max_length > 256)
		return bad(c, "oauth.code",
		           "needs a length from 1 to 256 (min_length at most max_length)");
	if (!valid_alphabet(s->alphabet))
		return bad(c, "oauth.code.alphabet",
		           "must be characters and ranges (\"A-Za-z0-9\") of printable ASCII");
	return 0;
}

static bool in_alphabet(const char *p, int ch)
{
	for (; p && *p; p++) {
		if (p[1] == '-' && p[2]) {
			if (ch >= p[0] && ch <= p[2])
				return true;
			p += 2;
		} else if (ch == *p) {
			return true;
		}
	}
	return false;
}

int enr_vendor_code_char(const struct enr_vendor *vendor, int ch)
{
	const char *alphabet = vendor->oauth.code.alphabet;
	int lower = ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch;
	int upper = ch >= 'a' && ch <= 'z' ? ch - ('a' - 'A') : ch;

	if (vendor->oauth.code.case_insensitive && in_alphabet(alphabet, lower))
		return lower;
	if (vendor->oauth.code.case_insensitive && in_alphabet(alphabet, upper))
		return upper;
	return in_alphabet(alphabet, ch) ? ch : -1;
}

static int parse_oauth(struct enr_vendor *v, const struct ctx *c, json_object *obj)
{
	json_object *o = member(obj, "oauth", json_type_object);
	const char *client_auth = NULL, *token_params = NULL;
	bool strict = false;
	int rc;

	if (!o) {
		if (present(obj, "oauth"))
			return bad(c, "oauth", "must be an object");
		return 0;
	}
	v->has_oauth = true;
	if ((rc = get_str(&v->oauth.scopes, c, o, "oauth.", "scopes", false)) < 0 ||
	    (rc = get_str(&client_auth, c, o, "oauth.", "client_auth", true)) < 0 ||
	    (rc = get_str(&token_params, c, o, "oauth.", "token_params", true)) < 0 ||
	    (rc = get_bool(&v->oauth.pkce, c, o, "oauth.", "pkce")) < 0 ||
	    (rc = get_bool(&v->oauth.audience, c, o, "oauth.", "audience")) < 0 ||
	    (rc = get_str(&v->oauth.required_scope, c, o, "oauth.", "required_scope", false)) < 0 ||
	    (rc = get_str(&v->oauth.identity_claim, c, o, "oauth.", "identity_claim", false)) < 0 ||
	    (rc = get_bool(&v->oauth.refresh_without_secret, c, o, "oauth.",
	                   "refresh_without_secret")) < 0 ||
	    (rc = get_str(&v->oauth.partner_scopes, c, o, "oauth.", "partner_scopes", false)) < 0 ||
	    (rc = get_str(&v->oauth.issuer, c, o, "oauth.", "issuer", false)) < 0 ||
	    (rc = get_str(&v->oauth.jwks_url, c, o, "oauth.", "jwks_url", false)) < 0 ||
	    (rc = get_str(&v->oauth.offline_scope, c, o, "oauth.", "offline_scope", false)) < 0 ||
	    (rc = get_bool(&strict, c, o, "oauth.", "strict_refresh")) < 0 ||
	    (rc = parse_authorize_params(v, c, o)) < 0 || (rc = parse_code(v, c, o)) < 0)
		return rc;
	v->oauth.strict_refresh = present(o, "strict_refresh") ? strict : -1;
	if (v->oauth.jwks_url && !is_url(v->oauth.jwks_url))
		return bad(c, "oauth.jwks_url", "must be an http(s) URL");
	if (!v->oauth.scopes)
		v->oauth.scopes = "";
	if (strcmp(client_auth, "form") == 0)
		v->oauth.client_auth = ENR_CLIENT_AUTH_FORM;
	else if (strcmp(client_auth, "basic") == 0)
		v->oauth.client_auth = ENR_CLIENT_AUTH_BASIC;
	else
		return bad(c, "oauth.client_auth", "must be \"form\" or \"basic\"");
	if (strcmp(token_params, "form") == 0)
		v->oauth.token_params = ENR_TOKEN_PARAMS_FORM;
	else if (strcmp(token_params, "query") == 0)
		v->oauth.token_params = ENR_TOKEN_PARAMS_QUERY;
	else
		return bad(c, "oauth.token_params", "must be \"form\" or \"query\"");
	return 0;
}

static int parse_tokens(struct enr_vendor *v, const struct ctx *c, json_object *obj)
{
	json_object *t = member(obj, "tokens", json_type_object);
	int rc;

	if (!t)
		return bad(c, "tokens",
		           present(obj, "tokens") ? "must be an object" : "is missing");
	if ((rc = get_long(&v->tokens.access_ttl, c, t, "tokens.", "access_ttl", true)) < 0 ||
	    (rc = get_long(&v->tokens.refresh_ttl, c, t, "tokens.", "refresh_ttl", true)) < 0 ||
	    (rc = get_long(&v->tokens.refresh_grace, c, t, "tokens.", "refresh_grace", false)) <
	        0 ||
	    (rc = get_bool(&v->tokens.refresh_rotates, c, t, "tokens.", "refresh_rotates")) < 0)
		return rc;
	return 0;
}

static int parse_check(struct enr_check_spec *chk, bool *has, const struct ctx *c, json_object *obj,
                       const char *name)
{
	json_object *o = member(obj, name, json_type_object);
	const char *auth = NULL;
	char p[32];
	int rc;

	*has = false;
	if (!o) {
		if (present(obj, name))
			return bad(c, name, "must be an object");
		return 0;
	}
	*has = true;
	snprintf(p, sizeof(p), "%s.", name);
	if ((rc = get_str(&chk->method, c, o, p, "method", true)) < 0 ||
	    (rc = get_str(&chk->path, c, o, p, "path", true)) < 0 ||
	    (rc = get_str(&chk->body, c, o, p, "body", false)) < 0 ||
	    (rc = get_str(&auth, c, o, p, "auth", true)) < 0 ||
	    (rc = get_str(&chk->header, c, o, p, "header", false)) < 0 ||
	    (rc = get_str(&chk->query_key, c, o, p, "query_key", false)) < 0 ||
	    (rc = get_str(&chk->sites, c, o, p, "sites", true)) < 0 ||
	    (rc = get_str(&chk->sites_alt, c, o, p, "sites_alt", false)) < 0 ||
	    (rc = get_str(&chk->account_header, c, o, p, "account_header", false)) < 0 ||
	    (rc = get_str(&chk->site_id, c, o, p, "site_id", true)) < 0 ||
	    (rc = get_str(&chk->site_name, c, o, p, "site_name", true)) < 0 ||
	    (rc = get_str(&chk->require_field, c, o, p, "require_field", false)) < 0)
		return rc;
	if (strcmp(chk->method, "GET") != 0 && strcmp(chk->method, "POST") != 0) {
		snprintf(p, sizeof(p), "%s.method", name);
		return bad(c, p, "must be \"GET\" or \"POST\"");
	}
	if (chk->path[0] != '/') {
		snprintf(p, sizeof(p), "%s.path", name);
		return bad(c, p, "must start with '/'");
	}
	if (strcmp(auth, "bearer") == 0) {
		chk->auth = ENR_CHECK_AUTH_BEARER;
	} else if (strcmp(auth, "header_key") == 0) {
		chk->auth = ENR_CHECK_AUTH_HEADER_KEY;
		if (!chk->header) {
			snprintf(p, sizeof(p), "%s.header", name);
			return bad(c, p, "is missing (auth \"header_key\" needs it)");
		}
	} else if (strcmp(auth, "query_key") == 0) {
		chk->auth = ENR_CHECK_AUTH_QUERY_KEY;
		if (!chk->query_key) {
			snprintf(p, sizeof(p), "%s.query_key", name);
			return bad(c, p, "is missing (auth \"query_key\" needs it)");
		}
	} else if (strcmp(auth, "solis") == 0) {
		chk->auth = ENR_CHECK_AUTH_SOLIS;
	} else if (strcmp(auth, "derapi") == 0) {
		chk->auth = ENR_CHECK_AUTH_DERAPI;
	} else {
		snprintf(p, sizeof(p), "%s.auth", name);
		return bad(c, p, "must be bearer, header_key, query_key, solis or derapi");
	}
	return 0;
}

static int parse_rate_limits(struct enr_vendor *v, const struct ctx *c, json_object *obj)
{
	json_object *arr = member(obj, "rate_limits", json_type_array);
	struct enr_rate_limit *limits;
	size_t n;

	if (!arr)
		return bad(c, "rate_limits",
		           present(obj, "rate_limits") ? "must be an array" : "is missing");
	n = json_object_array_length(arr);
	limits = calloc(n ? n : 1, sizeof(*limits));
	if (!limits)
		return enr_error_set(ENR_E_NOMEM, NULL);
	v->rate_limits = limits;
	v->n_rate_limits = n;
	for (size_t i = 0; i < n; i++) {
		json_object *l = json_object_array_get_idx(arr, i);
		const char *per = NULL;
		long concurrency;
		char p[48];
		int rc;

		snprintf(p, sizeof(p), "rate_limits[%zu].", i);
		if (!json_object_is_type(l, json_type_object))
			return bad(c, p, "must be an object");
		if ((rc = get_num(&limits[i].requests, c, l, p, "requests", true)) < 0 ||
		    (rc = get_num(&limits[i].per_seconds, c, l, p, "per_seconds", true)) < 0 ||
		    (rc = get_whole(&concurrency, c, l, p, "concurrency", true, INT_MAX)) < 0 ||
		    (rc = get_str(&per, c, l, p, "per", true)) < 0 ||
		    (rc = get_str(&limits[i].remaining_header, c, l, p, "remaining_header",
		                  false)) < 0 ||
		    (rc = get_str(&limits[i].limit_header, c, l, p, "limit_header", false)) < 0)
			return rc;
		limits[i].concurrency = (int)concurrency;
		if (limits[i].requests > 0 && limits[i].per_seconds <= 0)
			return bad(c, p, "has 'requests' without a positive 'per_seconds'");
		if (strcmp(per, "app") == 0)
			limits[i].scope = ENR_LIMIT_PER_APP;
		else if (strcmp(per, "key") == 0)
			limits[i].scope = ENR_LIMIT_PER_KEY;
		else if (strcmp(per, "address") == 0)
			limits[i].scope = ENR_LIMIT_PER_ADDRESS;
		else
			return bad(c, p, "has 'per' that is not \"app\", \"key\" or \"address\"");
	}
	return 0;
}

int enr_vendor__error_class(int *out, const char *s)
{
	static const struct {
		const char *name;
		int code;
	} classes[] = {
	    {"rejected", ENR_E_REJECTED},           {"transient", ENR_E_TRANSIENT},
	    {"misconfigured", ENR_E_MISCONFIGURED}, {"badresponse", ENR_E_BADRESPONSE},
	    {"declined", ENR_E_DECLINED},           {"expired", ENR_E_EXPIRED},
	};
	for (size_t i = 0; i < ENR_ARRAY_SIZE(classes); i++) {
		if (strcmp(s, classes[i].name) == 0) {
			*out = classes[i].code;
			return 0;
		}
	}
	return -1;
}

static int parse_guidance(struct enr_vendor *v, const struct ctx *c, json_object *obj)
{
	json_object *arr = member(obj, "guidance", json_type_array);
	struct enr_guidance *guidance;
	size_t n;

	if (!arr)
		return bad(c, "guidance",
		           present(obj, "guidance") ? "must be an array" : "is missing");
	n = json_object_array_length(arr);
	guidance = calloc(n ? n : 1, sizeof(*guidance));
	if (!guidance)
		return enr_error_set(ENR_E_NOMEM, NULL);
	v->guidance = guidance;
	v->n_guidance = n;
	for (size_t i = 0; i < n; i++) {
		json_object *g = json_object_array_get_idx(arr, i);
		const char *cls = NULL;
		long status;
		char p[48];
		int rc;

		snprintf(p, sizeof(p), "guidance[%zu].", i);
		if (!json_object_is_type(g, json_type_object))
			return bad(c, p, "must be an object");
		if ((rc = get_whole(&status, c, g, p, "status", false, INT_MAX)) < 0 ||
		    (rc = get_str(&guidance[i].match, c, g, p, "match", false)) < 0 ||
		    (rc = get_str(&cls, c, g, p, "class", true)) < 0 ||
		    (rc = get_str(&guidance[i].message, c, g, p, "message", true)) < 0)
			return rc;
		guidance[i].status = (int)status;
		if (!guidance[i].status && !guidance[i].match)
			return bad(c, p, "needs 'status' or 'match'");
		if (enr_vendor__error_class(&guidance[i].error, cls) < 0)
			return bad(c, p,
			           "has 'class' that is not rejected, transient, misconfigured, "
			           "badresponse, declined or expired");
	}
	return 0;
}

static int parse_unconfirmed(struct enr_vendor *v, const struct ctx *c, json_object *obj)
{
	json_object *arr = member(obj, "unconfirmed", json_type_array);
	const char **list;
	size_t n;

	if (!arr) {
		if (present(obj, "unconfirmed"))
			return bad(c, "unconfirmed", "must be an array of strings");
		return 0;
	}
	n = json_object_array_length(arr);
	list = calloc(n ? n : 1, sizeof(*list));
	if (!list)
		return enr_error_set(ENR_E_NOMEM, NULL);
	v->unconfirmed = list;
	v->n_unconfirmed = n;
	for (size_t i = 0; i < n; i++) {
		json_object *s = json_object_array_get_idx(arr, i);
		if (!json_object_is_type(s, json_type_string) || has_nul(s))
			return bad(c, "unconfirmed", "must be an array of strings (without NUL)");
		list[i] = json_object_get_string(s);
	}
	return 0;
}

/* Cross-field rules: what each method needs to work. */
static int validate(const struct enr_vendor *v, const struct ctx *c)
{
	for (size_t i = 0; i < v->n_methods; i++) {
		const struct enr_method *m = &v->methods[i];
		if (strcmp(m->id, "oauth") == 0) {
			if (!v->has_oauth)
				return bad(c, "oauth", "is missing (method \"oauth\" needs it)");
			if (!enr_vendor_default_endpoint(v, "authorize_url") ||
			    !enr_vendor_default_endpoint(v, "token_url"))
				return bad(
				    c, "endpoints",
				    "needs authorize_url and token_url for method \"oauth\"");
		}
		if (m->endpoint && !enr_vendor_default_endpoint(v, m->endpoint)) {
			char field[64];
			snprintf(field, sizeof(field), "endpoints.%s", m->endpoint);
			return bad(c, field, "is missing (a method names it)");
		}
		if (strcmp(m->id, "join") != 0 && !v->has_check)
			return bad(c, "check", "is missing (every method but join needs it)");
	}
	if (v->has_check && !enr_vendor_default_endpoint(v, "api_url"))
		return bad(c, "endpoints.api_url", "is missing (the check request needs it)");
	return 0;
}

static int parse_vendor(struct enr_vendor *v, const char *origin, json_object *obj, size_t index)
{
	struct ctx c = {origin, NULL};
	char p[32];
	int rc;

	snprintf(p, sizeof(p), "vendors[%zu].", index);
	if (!json_object_is_type(obj, json_type_object))
		return bad(&c, p, "must be an object");
	if ((rc = get_str(&v->id, &c, obj, p, "id", true)) < 0)
		return rc;
	c.vendor = v->id;
	if ((rc = get_str(&v->name, &c, obj, "", "name", true)) < 0 ||
	    (rc = get_str(&v->config_section, &c, obj, "", "config_section", true)) < 0 ||
	    (rc = get_str(&v->derapi_name, &c, obj, "", "derapi_name", false)) < 0 ||
	    (rc = get_str(&v->api_version, &c, obj, "", "api_version", false)) < 0 ||
	    (rc = parse_methods(v, &c, obj)) < 0 || (rc = parse_endpoints(v, &c, obj)) < 0 ||
	    (rc = parse_oauth(v, &c, obj)) < 0 || (rc = parse_tokens(v, &c, obj)) < 0 ||
	    (rc = parse_check(&v->check, &v->has_check, &c, obj, "check")) < 0 ||
	    (rc = parse_rate_limits(v, &c, obj)) < 0 || (rc = parse_guidance(v, &c, obj)) < 0 ||
	    (rc = parse_unconfirmed(v, &c, obj)) < 0)
		return rc;
	return validate(v, &c);
}

/* The placeholders a header template may use; {base64:...} encodes what it holds. */
static const char *const template_fields[] = {"vendor", "access_token", "api_key", "key_id",
                                              "key_secret"};

/* Whether `t` is a valid template: balanced braces around known names. */
static bool valid_template(const char *t)
{
	int depth = 0;

	for (const char *p = t; *p; p++) {
		if (*p == '}') {
			if (--depth < 0)
				return false;
		} else if (*p == '{') {
			size_t len = strcspn(p + 1, "{}:");
			bool known = false;
			depth++;
			if (p[1 + len] == ':' && len == 6 && strncmp(p + 1, "base64", 6) == 0) {
				p += 7;
				continue;
			}
			for (size_t i = 0; i < ENR_ARRAY_SIZE(template_fields); i++)
				known |= strlen(template_fields[i]) == len &&
				         strncmp(p + 1, template_fields[i], len) == 0;
			if (!known || p[1 + len] != '}')
				return false;
		}
	}
	return depth == 0;
}

static int parse_access(struct enr_derapi_access *a, const struct ctx *c, json_object *obj,
                        const char *prefix)
{
	json_object *arr = member(obj, "headers", json_type_array);
	struct enr_derapi_header *h;
	char p[128];
	size_t n;
	int rc;

	if ((rc = get_bool(&a->stored_credentials, c, obj, prefix, "stored_credentials")) < 0)
		return rc;
	snprintf(p, sizeof(p), "%sheaders", prefix);
	if (!arr || !(n = json_object_array_length(arr)))
		return bad(c, p, "must be a non-empty array");
	if (!(h = calloc(n, sizeof(*h))))
		return enr_error_set(ENR_E_NOMEM, NULL);
	a->headers = h;
	a->n_headers = n;
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(arr, i);
		snprintf(p, sizeof(p), "%sheaders[%zu].", prefix, i);
		if (!json_object_is_type(e, json_type_object))
			return bad(c, p, "must be an object");
		if ((rc = get_str(&h[i].name, c, e, p, "name", true)) < 0 ||
		    (rc = get_str(&h[i].value, c, e, p, "value", true)) < 0 ||
		    (rc = get_bool(&h[i].config_fallback, c, e, p, "config_fallback")) < 0)
			return rc;
		if (!valid_template(h[i].name) || !valid_template(h[i].value))
			return bad(c, p,
			           "has a template with an unknown {field} or unbalanced braces "
			           "(known: vendor, access_token, api_key, key_id, key_secret, "
			           "base64:...)");
	}
	return 0;
}

/* derapi.vendor_access: attached to the vendors it names. */
static int parse_vendor_access(struct enr_catalog *cat, const char *origin)
{
	struct enr_vendor *derapi = NULL;
	struct ctx c = {origin, "derapi"};
	json_object *vendors = member(cat->root, "vendors", json_type_array), *map = NULL;
	size_t n = 0, i = 0;

	for (size_t k = 0; k < cat->n_vendors; k++)
		if (strcmp(cat->vendors[k].id, "derapi") == 0) {
			derapi = &cat->vendors[k];
			map = json_object_array_get_idx(vendors, k);
		}
	if (!derapi || !present(map, "vendor_access"))
		return 0;
	map = member(map, "vendor_access", json_type_object);
	if (!map)
		return bad(&c, "vendor_access", "must be an object of vendor ids");
	n = (size_t)json_object_object_length(map);
	cat->access = calloc(n ? n : 1, sizeof(*cat->access));
	if (!cat->access)
		return enr_error_set(ENR_E_NOMEM, NULL);
	json_object_object_foreach(map, id, entry)
	{
		struct enr_vendor *v = NULL;
		char prefix[96];
		int rc;
		for (size_t k = 0; k < cat->n_vendors; k++)
			if (strcmp(cat->vendors[k].id, id) == 0)
				v = &cat->vendors[k];
		snprintf(prefix, sizeof(prefix), "vendor_access.%s.", id);
		if (!v)
			return bad(&c, prefix, "names no vendor of the catalogue");
		if (!json_object_is_type(entry, json_type_object))
			return bad(&c, prefix, "must be an object");
		cat->n_access = i + 1;
		rc = parse_access(&cat->access[i], &c, entry, prefix);
		if (rc < 0)
			return rc;
		v->derapi_access = &cat->access[i++];
	}
	return 0;
}

void enr_catalog_free(struct enr_catalog *catalog)
{
	if (!catalog)
		return;
	for (size_t i = 0; i < catalog->n_access; i++)
		free((void *)catalog->access[i].headers);
	free(catalog->access);
	for (size_t i = 0; i < catalog->n_vendors; i++) {
		struct enr_vendor *v = &catalog->vendors[i];
		for (size_t m = 0; m < v->n_methods; m++)
			free((void *)v->methods[m].fields);
		free((void *)v->methods);
		free((void *)v->endpoints);
		free((void *)v->oauth.authorize_params);
		free((void *)v->rate_limits);
		free((void *)v->guidance);
		free((void *)v->unconfirmed);
	}
	free(catalog->vendors);
	json_object_put(catalog->root);
	free(catalog);
}

int enr_catalog_load_string(struct enr_catalog **out, const char *json, const char *origin)
{
	struct enr_catalog *cat = NULL;
	struct ctx c = {origin, NULL};
	json_tokener *tok = NULL;
	json_object *vendors;
	double schema;
	size_t n;
	int rc = 0;

	*out = NULL;
	cat = calloc(1, sizeof(*cat));
	tok = json_tokener_new();
	if (!cat || !tok) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	cat->root = json_tokener_parse_ex(tok, json, (int)strlen(json));
	if (!cat->root) {
		enum json_tokener_error jerr = json_tokener_get_error(tok);
		size_t offset = json_tokener_get_parse_end(tok);
		int line = 1;
		for (size_t i = 0; i < offset && json[i]; i++)
			line += json[i] == '\n';
		rc = enr_error_set(ENR_E_PARSE, "%s:%d: not valid JSON: %s", origin, line,
		                   jerr == json_tokener_continue ? "the file ends too early"
		                                                 : json_tokener_error_desc(jerr));
		goto out;
	}
	if (!json_object_is_type(cat->root, json_type_object)) {
		rc = bad(&c, "(top level)", "must be an object");
		goto out;
	}
	if ((rc = get_num(&schema, &c, cat->root, "", "schema", true)) < 0)
		goto out;
	if (schema != 1) {
		rc = bad(&c, "schema", "is not 1 (this derenroll reads schema 1)");
		goto out;
	}
	vendors = member(cat->root, "vendors", json_type_array);
	if (!vendors) {
		rc = bad(&c, "vendors", "is missing or not an array");
		goto out;
	}
	n = json_object_array_length(vendors);
	cat->vendors = calloc(n ? n : 1, sizeof(*cat->vendors));
	if (!cat->vendors) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		cat->n_vendors = i + 1;
		rc = parse_vendor(&cat->vendors[i], origin, json_object_array_get_idx(vendors, i),
		                  i);
		if (rc < 0)
			goto out;
		for (size_t k = 0; k < i; k++) {
			if (strcmp(cat->vendors[k].id, cat->vendors[i].id) == 0) {
				rc = enr_error_set(ENR_E_PARSE, "%s: vendor '%s' is listed twice",
				                   origin, cat->vendors[i].id);
				goto out;
			}
		}
	}
	rc = parse_vendor_access(cat, origin);
	if (rc < 0)
		goto out;
	*out = cat;
	cat = NULL;
out:
	if (tok)
		json_tokener_free(tok);
	enr_catalog_free(cat);
	return rc;
}

int enr_catalog_load(struct enr_catalog **out, const char *path)
{
	char *default_path = NULL, *json = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if (!path) {
		default_path = enr_config_asset_path("vendors.json");
		if (!default_path)
			return ENR_E_NOMEM;
		path = default_path;
	}
	rc = enr_util_read_file(&json, &len, path, MAX_CATALOG_SIZE);
	if (rc == 0 && strlen(json) != len) {
		int line = 1;
		for (const char *p = json; *p; p++)
			line += *p == '\n';
		rc = enr_error_set(ENR_E_PARSE, "%s:%d: a NUL byte in the file (not JSON text)",
		                   path, line);
	}
	if (rc == 0)
		rc = enr_catalog_load_string(out, json, path);
	free(json);
	free(default_path);
	return rc;
}

size_t enr_catalog_count(const struct enr_catalog *catalog)
{
	return catalog->n_vendors;
}

const struct enr_vendor *enr_catalog_at(const struct enr_catalog *catalog, size_t i)
{
	return i < catalog->n_vendors ? &catalog->vendors[i] : NULL;
}

const struct enr_vendor *enr_catalog_find(const struct enr_catalog *catalog, const char *id)
{
	char known[256] = "";
	size_t used = 0;

	for (size_t i = 0; i < catalog->n_vendors; i++)
		if (strcmp(catalog->vendors[i].id, id) == 0)
			return &catalog->vendors[i];
	for (size_t i = 0; i < catalog->n_vendors && used < sizeof(known); i++) {
		if (strcmp(catalog->vendors[i].id, "derapi") == 0)
			continue;
		used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s",
		                         used ? ", " : "", catalog->vendors[i].id);
	}
	enr_error_set(ENR_E_USAGE, "unknown vendor '%s' (known: %s)", id, known);
	return NULL;
}

size_t enr_catalog_check_config(const struct enr_catalog *catalog, const struct enr_config *cfg,
                                void (*warn)(const char *msg, void *ctx), void *ctx)
{
	const char *section, *key, *value;
	size_t problems = 0;

	for (size_t i = 0; enr_config_entry(cfg, i, &section, &key, &value) == 0; i++) {
		bool found = false, repeated = false;
		char msg[256];

		if (strncmp(section, "vendor.", 7) != 0)
			continue;
		for (size_t k = 0; k < catalog->n_vendors; k++)
			found |= strcmp(catalog->vendors[k].config_section, section) == 0;
		if (found)
			continue;
		/* One warning per section, not per key. */
		for (size_t j = 0; j < i && !repeated; j++) {
			const char *s2, *k2, *v2;
			enr_config_entry(cfg, j, &s2, &k2, &v2);
			repeated = strcmp(s2, section) == 0;
		}
		if (repeated)
			continue;
		problems++;
		snprintf(msg, sizeof(msg), "%s: [%s] names no known vendor",
		         enr_config_path(cfg) ? enr_config_path(cfg) : "config", section);
		if (warn)
			warn(msg, ctx);
	}
	return problems;
}

const struct enr_method *enr_vendor_method(const struct enr_vendor *vendor, const char *id)
{
	char known[128] = "";
	size_t used = 0;

	for (size_t i = 0; i < vendor->n_methods; i++)
		if (strcmp(vendor->methods[i].id, id) == 0)
			return &vendor->methods[i];
	if (vendor->n_methods == 1 && strcmp(vendor->methods[0].id, "join") == 0) {
		enr_error_set(ENR_E_USAGE, "%s has no method '%s': only through Derapi Join",
		              vendor->name, id);
		return NULL;
	}
	for (size_t i = 0; i < vendor->n_methods && used < sizeof(known); i++)
		used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
		                         vendor->methods[i].id);
	enr_error_set(ENR_E_USAGE, "%s has no method '%s' (it has: %s)", vendor->name, id, known);
	return NULL;
}

const char *enr_vendor_default_endpoint(const struct enr_vendor *vendor, const char *name)
{
	for (size_t i = 0; i < vendor->n_endpoints; i++)
		if (strcmp(vendor->endpoints[i].name, name) == 0)
			return vendor->endpoints[i].url;
	return NULL;
}

const char *enr_vendor_endpoint(const struct enr_vendor *vendor, const struct enr_config *cfg,
                                const char *name)
{
	const char *url = cfg ? enr_config_get(cfg, vendor->config_section, name) : NULL;

	if (url && url[0])
		return url;
	url = enr_vendor_default_endpoint(vendor, name);
	if (!url)
		enr_error_set(ENR_E_CONFIG, "%s has no %s: set it in [%s] of %s", vendor->name,
		              name, vendor->config_section, enr_config_file_name(cfg));
	return url;
}

char *enr_vendor_url(const struct enr_vendor *vendor, const struct enr_config *cfg,
                     const char *endpoint, const char *path)
{
	const char *base = enr_vendor_endpoint(vendor, cfg, endpoint);
	size_t len;

	if (!base)
		return NULL;
	len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	while (path && *path == '/')
		path++;
	if (!path || !*path)
		return enr_util_printf("%.*s", (int)len, base);
	return enr_util_printf("%.*s/%s", (int)len, base, path);
}

const char *enr_vendor_setting(const struct enr_vendor *vendor, const struct enr_config *cfg,
                               const char *key)
{
	const char *v = cfg ? enr_config_get(cfg, vendor->config_section, key) : NULL;
	return v && v[0] ? v : NULL;
}

int enr_vendor_secret(char **out, const struct enr_vendor *vendor, const struct enr_config *cfg,
                      const char *key)
{
	return enr_config_get_secret(out, cfg, vendor->config_section, key);
}

const char *enr_vendor_scopes(const struct enr_vendor *vendor, const struct enr_config *cfg)
{
	const char *s = enr_vendor_setting(vendor, cfg, "scopes");
	return s ? s : (vendor->has_oauth ? vendor->oauth.scopes : "");
}

const struct enr_guidance *enr_vendor_guidance(const struct enr_vendor *vendor, int status,
                                               const char *text)
{
	/* Entries that name a text are more specific: try them first. */
	for (size_t i = 0; i < vendor->n_guidance; i++) {
		const struct enr_guidance *g = &vendor->guidance[i];
		if (g->match && text && strstr(text, g->match) &&
		    (g->status == 0 || g->status == status))
			return g;
	}
	for (size_t i = 0; i < vendor->n_guidance; i++) {
		const struct enr_guidance *g = &vendor->guidance[i];
		if (!g->match && g->status && g->status == status)
			return g;
	}
	return NULL;
}

bool enr_vendor_unconfirmed(const struct enr_vendor *vendor, const char *field)
{
	for (size_t i = 0; i < vendor->n_unconfirmed; i++)
		if (strcmp(vendor->unconfirmed[i], field) == 0 ||
		    (strncmp(field, vendor->unconfirmed[i], strlen(vendor->unconfirmed[i])) == 0 &&
		     field[strlen(vendor->unconfirmed[i])] == '.'))
			return true;
	return false;
}
