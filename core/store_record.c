/* The record type of the credential store and its JSON form. */

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "store_internal.h"
#include "util.h"

struct cred_field {
	const char *name;
	size_t offset;
	bool secret;
};

#define CRED(name, member, secret)                                                                 \
	{                                                                                          \
		name, offsetof(struct enr_credentials, member), secret                             \
	}
static const struct cred_field cred_fields[] = {
    CRED("access_token", tokens.access_token, true),
    CRED("refresh_token", tokens.refresh_token, true),
    CRED("token_type", tokens.token_type, false),
    CRED("scope", tokens.scope, false),
    CRED("id_token", tokens.id_token, true),
    CRED("api_key", api_key, true),
    CRED("account_key", account_key, true),
    CRED("key_id", key_id, false),
    CRED("key_secret", key_secret, true),
    CRED("owner_email", owner_email, false),
    CRED("enrollment_id", join.enrollment_id, false),
    CRED("state", join.state, false),
    CRED("program_id", join.program_id, false),
    CRED("flow_id", join.flow_id, false),
    CRED("site_id", account.site_id, false),
    CRED("secret_name", account.secret_name, false),
};
#undef CRED

static const char *const cred_names[] = {"",        "oauth", "api_key", "key_pair",
                                         "partner", "email", "join",    "account"};
static const char *const outcome_names[] = {
    "", "ok", "rejected", "transient", "misconfigured", "badresponse"};

static char **cred_slot(struct enr_credentials *c, const struct cred_field *f)
{
	return (char **)((char *)c + f->offset);
}

static const char *cred_value(const struct enr_credentials *c, const struct cred_field *f)
{
	return *(char *const *)((const char *)c + f->offset);
}

const char *enr_record_cred_name(enum enr_cred_type type)
{
	return (size_t)type < ENR_ARRAY_SIZE(cred_names) ? cred_names[type] : "";
}

int enr_record_cred_parse(enum enr_cred_type *out, const char *name)
{
	for (size_t i = 1; i < ENR_ARRAY_SIZE(cred_names); i++) {
		if (strcmp(name, cred_names[i]) == 0) {
			*out = (enum enr_cred_type)i;
			return 0;
		}
	}
	return enr_error_set(ENR_E_PARSE, "unknown credential type '%s'", name);
}

const char *enr_record_outcome_name(enum enr_record_outcome outcome)
{
	return (size_t)outcome < ENR_ARRAY_SIZE(outcome_names) ? outcome_names[outcome] : "";
}

int enr_record_outcome_parse(enum enr_record_outcome *out, const char *name)
{
	for (size_t i = 0; i < ENR_ARRAY_SIZE(outcome_names); i++) {
		if (strcmp(name, outcome_names[i]) == 0) {
			*out = (enum enr_record_outcome)i;
			return 0;
		}
	}
	return enr_error_set(ENR_E_PARSE, "unknown check result '%s'", name);
}

enum enr_record_outcome enr_record_outcome_from_error(int code)
{
	switch (code) {
	case 0:
		return ENR_OUTCOME_OK;
	case ENR_E_REJECTED:
	case ENR_E_EXPIRED:
	case ENR_E_DECLINED:
		return ENR_OUTCOME_REJECTED;
	case ENR_E_MISCONFIGURED:
		return ENR_OUTCOME_MISCONFIGURED;
	case ENR_E_BADRESPONSE:
		return ENR_OUTCOME_BADRESPONSE;
	default:
		return ENR_OUTCOME_TRANSIENT;
	}
}

/* ---- the record ---- */

int enr_record_new(struct enr_record **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

void enr_record_free(struct enr_record *rec)
{
	if (!rec)
		return;
	enr_util_free_secret(rec->id);
	enr_util_free_secret(rec->customer);
	enr_util_free_secret(rec->vendor);
	enr_util_free_secret(rec->method);
	enr_util_free_secret(rec->account);
	enr_util_free_secret(rec->last_check.message);
	for (size_t i = 0; i < ENR_ARRAY_SIZE(cred_fields); i++)
		enr_util_free_secret(*cred_slot(&rec->cred, &cred_fields[i]));
	for (size_t i = 0; i < rec->n_sites; i++) {
		enr_util_free_secret(rec->sites[i].id);
		enr_util_free_secret(rec->sites[i].name);
	}
	free(rec->sites);
	for (size_t i = 0; i < rec->n_extra; i++) {
		enr_util_free_secret(rec->extra[i].key);
		enr_util_free_secret(rec->extra[i].value);
	}
	free(rec->extra);
	free(rec);
}

int enr_record_set(char **field, const char *value)
{
	char *copy = NULL;

	if (value) {
		copy = enr_util_strdup(value);
		if (!copy)
			return ENR_E_NOMEM;
	}
	enr_util_free_secret(*field);
	*field = copy;
	return 0;
}

int enr_record_dup(struct enr_record **out, const struct enr_record *rec)
{
	struct enr_record *copy = NULL;
	int rc = enr_record_new(&copy);

	if (rc < 0)
		return rc;
	copy->cred.type = rec->cred.type;
	copy->created_at = rec->created_at;
	copy->updated_at = rec->updated_at;
	copy->access_expires_at = rec->access_expires_at;
	copy->refresh_expires_at = rec->refresh_expires_at;
	copy->last_check.at = rec->last_check.at;
	copy->last_check.outcome = rec->last_check.outcome;
	if ((rc = enr_record_set(&copy->id, rec->id)) < 0 ||
	    (rc = enr_record_set(&copy->customer, rec->customer)) < 0 ||
	    (rc = enr_record_set(&copy->vendor, rec->vendor)) < 0 ||
	    (rc = enr_record_set(&copy->method, rec->method)) < 0 ||
	    (rc = enr_record_set(&copy->account, rec->account)) < 0 ||
	    (rc = enr_record_set(&copy->last_check.message, rec->last_check.message)) < 0)
		goto out;
	for (size_t i = 0; i < ENR_ARRAY_SIZE(cred_fields); i++) {
		rc = enr_record_set(cred_slot(&copy->cred, &cred_fields[i]),
		                    cred_value(&rec->cred, &cred_fields[i]));
		if (rc < 0)
			goto out;
	}
	for (size_t i = 0; i < rec->n_sites; i++)
		if ((rc = enr_record_add_site(copy, rec->sites[i].id, rec->sites[i].name)) < 0)
			goto out;
	for (size_t i = 0; i < rec->n_extra; i++)
		if ((rc = enr_record_set_extra(copy, rec->extra[i].key, rec->extra[i].value)) < 0)
			goto out;
	*out = copy;
	copy = NULL;
out:
	enr_record_free(copy);
	return rc;
}

int enr_record_add_site(struct enr_record *rec, const char *id, const char *name)
{
	struct enr_site *grown;
	char *id_copy = NULL, *name_copy = NULL;

	for (size_t i = 0; i < rec->n_sites; i++)
		if (strcmp(rec->sites[i].id, id) == 0)
			return enr_record_set(&rec->sites[i].name, name);
	id_copy = enr_util_strdup(id);
	if (!id_copy || (name && !(name_copy = enr_util_strdup(name))))
		goto nomem;
	grown = realloc(rec->sites, (rec->n_sites + 1) * sizeof(*grown));
	if (!grown)
		goto nomem;
	rec->sites = grown;
	rec->sites[rec->n_sites].id = id_copy;
	rec->sites[rec->n_sites].name = name_copy;
	rec->n_sites++;
	return 0;
nomem:
	free(id_copy);
	free(name_copy);
	return enr_error_set(ENR_E_NOMEM, NULL);
}

int enr_record_set_extra(struct enr_record *rec, const char *key, const char *value)
{
	struct enr_pair *grown;
	char *key_copy = NULL, *value_copy = NULL;

	for (size_t i = 0; i < rec->n_extra; i++) {
		if (strcmp(rec->extra[i].key, key) != 0)
			continue;
		if (value)
			return enr_record_set(&rec->extra[i].value, value);
		enr_util_free_secret(rec->extra[i].key);
		enr_util_free_secret(rec->extra[i].value);
		memmove(&rec->extra[i], &rec->extra[i + 1],
		        (rec->n_extra - i - 1) * sizeof(rec->extra[0]));
		rec->n_extra--;
		return 0;
	}
	if (!value)
		return 0;
	key_copy = enr_util_strdup(key);
	value_copy = enr_util_strdup(value);
	if (!key_copy || !value_copy)
		goto nomem;
	grown = realloc(rec->extra, (rec->n_extra + 1) * sizeof(*grown));
	if (!grown)
		goto nomem;
	rec->extra = grown;
	rec->extra[rec->n_extra].key = key_copy;
	rec->extra[rec->n_extra].value = value_copy;
	rec->n_extra++;
	return 0;
nomem:
	free(key_copy);
	free(value_copy);
	return enr_error_set(ENR_E_NOMEM, NULL);
}

const char *enr_record_extra(const struct enr_record *rec, const char *key)
{
	for (size_t i = 0; i < rec->n_extra; i++)
		if (strcmp(rec->extra[i].key, key) == 0)
			return rec->extra[i].value;
	return NULL;
}

static bool is_name(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) &&
		    !strchr("._-", *s))
			return false;
	return true;
}

int enr_store__record_check(const struct enr_record *rec)
{
	const struct enr_credentials *c = &rec->cred;
	const char *missing = NULL;

	if (!is_name(rec->vendor))
		return enr_error_set(ENR_E_USAGE,
		                     "a record needs a vendor id (lower case), not '%s'",
		                     rec->vendor ? rec->vendor : "");
	if (!is_name(rec->method))
		return enr_error_set(ENR_E_USAGE,
		                     "a record needs a method (oauth, key, ...), not '%s'",
		                     rec->method ? rec->method : "");
	switch (c->type) {
	case ENR_CRED_OAUTH:
		if (!c->tokens.access_token && !c->tokens.refresh_token)
			missing = "an access or refresh token";
		break;
	case ENR_CRED_API_KEY:
		if (!c->api_key)
			missing = "api_key";
		break;
	case ENR_CRED_KEY_PAIR:
		if (!c->key_id || !c->key_secret)
			missing = "key_id and key_secret";
		break;
	case ENR_CRED_PARTNER:
		if (!c->api_key || !c->tokens.access_token)
			missing = "access_token and api_key";
		break;
	case ENR_CRED_EMAIL:
		if (!c->owner_email)
			missing = "owner_email";
		break;
	case ENR_CRED_JOIN:
		if (!c->join.enrollment_id && !c->join.flow_id)
			missing = "an enrollment or flow id";
		break;
	case ENR_CRED_ACCOUNT:
		if (!c->account.secret_name)
			missing = "secret_name";
		break;
	default:
		return enr_error_set(ENR_E_USAGE, "record of %s has no credential type",
		                     rec->vendor);
	}
	if (missing)
		return enr_error_set(ENR_E_USAGE, "%s credentials of %s need %s",
		                     enr_record_cred_name(c->type), rec->vendor, missing);
	for (size_t i = 0; i < rec->n_sites; i++) {
		if (!rec->sites[i].id || !rec->sites[i].id[0])
			return enr_error_set(ENR_E_USAGE, "a site of the %s record has no id",
			                     rec->vendor);
		for (size_t j = 0; j < i; j++)
			if (strcmp(rec->sites[i].id, rec->sites[j].id) == 0)
				return enr_error_set(ENR_E_USAGE, "site %s is listed twice",
				                     rec->sites[i].id);
	}
	for (size_t i = 0; i < rec->n_extra; i++)
		if (!rec->extra[i].key[0])
			return enr_error_set(ENR_E_USAGE, "an extra value has an empty key");
	return 0;
}

/* ---- writing JSON ---- */

bool enr_store__buf_reserve(struct store_buf *b, size_t extra)
{
	size_t cap;
	char *grown;

	if (b->failed)
		return false;
	if (b->len + extra + 1 <= b->cap)
		return true;
	cap = b->cap ? b->cap : 4096;
	while (cap < b->len + extra + 1)
		cap *= 2;
	/* Not realloc: the old block would be freed without being wiped. */
	grown = malloc(cap);
	if (!grown) {
		b->failed = true;
		return false;
	}
	if (b->data) {
		memcpy(grown, b->data, b->len);
		OPENSSL_cleanse(b->data, b->cap);
		free(b->data);
	}
	b->data = grown;
	b->cap = cap;
	return true;
}

void enr_store__buf_add(struct store_buf *b, const char *s, size_t n)
{
	if (!enr_store__buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void enr_store__buf_str(struct store_buf *b, const char *s)
{
	enr_store__buf_add(b, s, strlen(s));
}

void enr_store__buf_json(struct store_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *run = s, *p = s;
	char esc[7];

	enr_store__buf_add(b, "\"", 1);
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		enr_store__buf_add(b, run, (size_t)(p - run));
		run = p + 1;
		esc[0] = '\\';
		switch (c) {
		case '"':
		case '\\':
			esc[1] = (char)c;
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		case '\t':
			esc[1] = 't';
			break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			enr_store__buf_add(b, esc, 6);
			continue;
		}
		enr_store__buf_add(b, esc, 2);
	}
	enr_store__buf_add(b, run, (size_t)(p - run));
	enr_store__buf_add(b, "\"", 1);
}

void enr_store__buf_free(struct store_buf *b)
{
	if (b->data) {
		OPENSSL_cleanse(b->data, b->cap);
		free(b->data);
	}
	memset(b, 0, sizeof(*b));
}

/* Writes `,"name":` (no comma before the first member). */
static void member(struct store_buf *b, bool *first, const char *name)
{
	if (!*first)
		enr_store__buf_add(b, ",", 1);
	*first = false;
	enr_store__buf_add(b, "\"", 1);
	enr_store__buf_str(b, name);
	enr_store__buf_add(b, "\":", 2);
}

static void member_str(struct store_buf *b, bool *first, const char *name, const char *value)
{
	if (!value)
		return;
	member(b, first, name);
	enr_store__buf_json(b, value);
}

static void member_time(struct store_buf *b, bool *first, const char *name, long long t)
{
	char num[24];

	if (!t)
		return;
	member(b, first, name);
	enr_store__buf_add(b, num, (size_t)snprintf(num, sizeof(num), "%lld", t));
}

static void write_credentials(struct store_buf *b, const struct enr_credentials *c, bool public,
                              bool secret)
{
	bool first = true;

	enr_store__buf_add(b, "{", 1);
	if (public)
		member_str(b, &first, "type", enr_record_cred_name(c->type));
	for (size_t i = 0; i < ENR_ARRAY_SIZE(cred_fields); i++)
		if (cred_fields[i].secret ? secret : public)
			member_str(b, &first, cred_fields[i].name, cred_value(c, &cred_fields[i]));
	enr_store__buf_add(b, "}", 1);
}

void enr_store__record_write(struct store_buf *b, const struct enr_record *rec,
                             enum record_part part)
{
	bool first = true, inner;

	enr_store__buf_add(b, "{", 1);
	member_str(b, &first, "id", rec->id ? rec->id : "");
	if (part == PART_SECRETS) {
		member(b, &first, "credentials");
		write_credentials(b, &rec->cred, false, true);
		enr_store__buf_add(b, "}", 1);
		return;
	}
	member_str(b, &first, "customer", rec->customer);
	member_str(b, &first, "vendor", rec->vendor);
	member_str(b, &first, "method", rec->method);
	member_str(b, &first, "account", rec->account);
	if (rec->n_sites) {
		member(b, &first, "sites");
		enr_store__buf_add(b, "[", 1);
		for (size_t i = 0; i < rec->n_sites; i++) {
			inner = true;
			enr_store__buf_add(b, i ? ",{" : "{", i ? 2 : 1);
			member_str(b, &inner, "id", rec->sites[i].id);
			member_str(b, &inner, "name", rec->sites[i].name);
			enr_store__buf_add(b, "}", 1);
		}
		enr_store__buf_add(b, "]", 1);
	}
	member_time(b, &first, "created_at", rec->created_at);
	member_time(b, &first, "updated_at", rec->updated_at);
	member_time(b, &first, "access_expires_at", rec->access_expires_at);
	member_time(b, &first, "refresh_expires_at", rec->refresh_expires_at);
	if (rec->last_check.at || rec->last_check.outcome || rec->last_check.message) {
		inner = true;
		member(b, &first, "last_check");
		enr_store__buf_add(b, "{", 1);
		member_time(b, &inner, "at", rec->last_check.at);
		if (rec->last_check.outcome)
			member_str(b, &inner, "result",
			           enr_record_outcome_name(rec->last_check.outcome));
		member_str(b, &inner, "message", rec->last_check.message);
		enr_store__buf_add(b, "}", 1);
	}
	member(b, &first, "credentials");
	write_credentials(b, &rec->cred, true, part == PART_FULL);
	if (rec->n_extra) {
		inner = true;
		member(b, &first, "extra");
		enr_store__buf_add(b, "{", 1);
		for (size_t i = 0; i < rec->n_extra; i++)
			member_str(b, &inner, rec->extra[i].key, rec->extra[i].value);
		enr_store__buf_add(b, "}", 1);
	}
	enr_store__buf_add(b, "}", 1);
}

int enr_record_to_json(char **out, const struct enr_record *rec, bool secrets)
{
	struct store_buf b = {0};

	*out = NULL;
	enr_store__record_write(&b, rec, secrets ? PART_FULL : PART_PUBLIC);
	if (b.failed) {
		enr_store__buf_free(&b);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	*out = b.data;
	return 0;
}

int enr_record_to_json_object(struct json_object **out, const struct enr_record *rec, bool secrets)
{
	char *text = NULL;
	int rc = enr_record_to_json(&text, rec, secrets);

	*out = NULL;
	if (rc < 0)
		return rc;
	*out = json_tokener_parse(text);
	enr_util_free_secret(text);
	return *out ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

/* ---- reading JSON ---- */

static int bad(const char *field, const char *what)
{
	return enr_error_set(ENR_E_PARSE, "field '%s' %s", field, what);
}

static int take_string(char **out, struct json_object *v, const char *field)
{
	if (json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return bad(field, "must be a string");
	return enr_record_set(out, json_object_get_string(v));
}

static int take_time(long long *out, struct json_object *v, const char *field)
{
	if (json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		return bad(field, "must be a time in seconds");
	*out = (long long)json_object_get_int64(v);
	return 0;
}

static int read_credentials(struct enr_credentials *c, struct json_object *obj, bool secrets_only)
{
	enum enr_cred_type type;
	size_t i;
	int rc;

	if (!json_object_is_type(obj, json_type_object))
		return bad("credentials", "must be an object");
	json_object_object_foreach(obj, key, v)
	{
		if (!secrets_only && strcmp(key, "type") == 0) {
			if (!json_object_is_type(v, json_type_string))
				return bad("credentials.type", "must be a string");
			if ((rc = enr_record_cred_parse(&type, json_object_get_string(v))) < 0)
				return rc;
			c->type = type;
			continue;
		}
		for (i = 0; i < ENR_ARRAY_SIZE(cred_fields); i++)
			if (strcmp(key, cred_fields[i].name) == 0)
				break;
		/* Unknown members are left out: a newer schema migrates instead. */
		if (i == ENR_ARRAY_SIZE(cred_fields) || (secrets_only && !cred_fields[i].secret))
			continue;
		if ((rc = take_string(cred_slot(c, &cred_fields[i]), v, key)) < 0)
			return rc;
	}
	return 0;
}

static int read_sites(struct enr_record *rec, struct json_object *arr)
{
	struct json_object *site, *id, *name;
	size_t n;
	int rc;

	if (!json_object_is_type(arr, json_type_array))
		return bad("sites", "must be an array");
	n = json_object_array_length(arr);
	for (size_t i = 0; i < n; i++) {
		site = json_object_array_get_idx(arr, i);
		if (!json_object_object_get_ex(site, "id", &id) ||
		    !json_object_is_type(id, json_type_string))
			return bad("sites", "must hold objects with a string 'id'");
		if (json_object_object_get_ex(site, "name", &name) &&
		    !json_object_is_type(name, json_type_string))
			return bad("sites.name", "must be a string");
		rc = enr_record_add_site(rec, json_object_get_string(id),
		                         name ? json_object_get_string(name) : NULL);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int read_last_check(struct enr_record *rec, struct json_object *obj)
{
	int rc = 0;

	if (!json_object_is_type(obj, json_type_object))
		return bad("last_check", "must be an object");
	json_object_object_foreach(obj, key, v)
	{
		if (strcmp(key, "at") == 0) {
			rc = take_time(&rec->last_check.at, v, "last_check.at");
		} else if (strcmp(key, "message") == 0) {
			rc = take_string(&rec->last_check.message, v, "last_check.message");
		} else if (strcmp(key, "result") == 0) {
			if (!json_object_is_type(v, json_type_string))
				return bad("last_check.result", "must be a string");
			rc = enr_record_outcome_parse(&rec->last_check.outcome,
			                              json_object_get_string(v));
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int read_extra(struct enr_record *rec, struct json_object *obj)
{
	int rc;

	if (!json_object_is_type(obj, json_type_object))
		return bad("extra", "must be an object");
	json_object_object_foreach(obj, key, v)
	{
		if (!json_object_is_type(v, json_type_string))
			return bad("extra", "must hold strings");
		if ((rc = enr_record_set_extra(rec, key, json_object_get_string(v))) < 0)
			return rc;
	}
	return 0;
}

int enr_store__record_read(struct enr_record *rec, struct json_object *obj)
{
	int rc = 0;

	if (!json_object_is_type(obj, json_type_object))
		return enr_error_set(ENR_E_PARSE, "a record must be a JSON object");
	json_object_object_foreach(obj, key, v)
	{
		switch (key[0]) {
		case 'a':
			if (strcmp(key, "account") == 0)
				rc = take_string(&rec->account, v, key);
			else if (strcmp(key, "access_expires_at") == 0)
				rc = take_time(&rec->access_expires_at, v, key);
			break;
		case 'c':
			if (strcmp(key, "customer") == 0)
				rc = take_string(&rec->customer, v, key);
			else if (strcmp(key, "created_at") == 0)
				rc = take_time(&rec->created_at, v, key);
			else if (strcmp(key, "credentials") == 0)
				rc = read_credentials(&rec->cred, v, false);
			break;
		case 'e':
			if (strcmp(key, "extra") == 0)
				rc = read_extra(rec, v);
			break;
		case 'i':
			if (strcmp(key, "id") == 0)
				rc = take_string(&rec->id, v, key);
			break;
		case 'l':
			if (strcmp(key, "last_check") == 0)
				rc = read_last_check(rec, v);
			break;
		case 'm':
			if (strcmp(key, "method") == 0)
				rc = take_string(&rec->method, v, key);
			break;
		case 'r':
			if (strcmp(key, "refresh_expires_at") == 0)
				rc = take_time(&rec->refresh_expires_at, v, key);
			break;
		case 's':
			if (strcmp(key, "sites") == 0)
				rc = read_sites(rec, v);
			break;
		case 'u':
			if (strcmp(key, "updated_at") == 0)
				rc = take_time(&rec->updated_at, v, key);
			break;
		case 'v':
			if (strcmp(key, "vendor") == 0)
				rc = take_string(&rec->vendor, v, key);
			break;
		default:
			break;
		}
		if (rc < 0)
			return rc;
	}
	if (!rec->id || !rec->vendor || !rec->method)
		return enr_error_set(ENR_E_PARSE, "a record lacks its id, vendor or method");
	return 0;
}

int enr_store__record_read_secrets(struct enr_record *rec, struct json_object *obj)
{
	struct json_object *id, *cred;

	if (!json_object_object_get_ex(obj, "id", &id) ||
	    !json_object_is_type(id, json_type_string) ||
	    strcmp(json_object_get_string(id), rec->id) != 0)
		return enr_error_set(ENR_E_PARSE, "the credentials of record %s are missing",
		                     rec->id);
	if (!json_object_object_get_ex(obj, "credentials", &cred))
		return bad("credentials", "is missing");
	return read_credentials(&rec->cred, cred, true);
}

int enr_record_from_json(struct enr_record **out, const char *json)
{
	struct enr_record *rec = NULL;
	struct json_object *obj = json_tokener_parse(json);
	int rc;

	*out = NULL;
	if (!obj)
		return enr_error_set(ENR_E_PARSE, "a record must be a JSON object");
	rc = enr_record_new(&rec);
	if (rc == 0)
		rc = enr_store__record_read(rec, obj);
	enr_store__json_wipe(obj);
	json_object_put(obj);
	if (rc < 0) {
		enr_record_free(rec);
		return rc;
	}
	*out = rec;
	return 0;
}

void enr_store__json_wipe(struct json_object *obj)
{
	size_t n;

	switch (json_object_get_type(obj)) {
	case json_type_string:
		/* json-c hands out its own buffer; wipe it before it is freed. */
		OPENSSL_cleanse((char *)json_object_get_string(obj),
		                (size_t)json_object_get_string_len(obj));
		break;
	case json_type_object: {
		json_object_object_foreach(obj, key, v)
		{
			(void)key;
			enr_store__json_wipe(v);
		}
		break;
	}
	case json_type_array:
		n = json_object_array_length(obj);
		for (size_t i = 0; i < n; i++)
			enr_store__json_wipe(json_object_array_get_idx(obj, i));
		break;
	default:
		break;
	}
}
