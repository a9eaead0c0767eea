/* The record type of the credential store and its JSON form. */

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "derenroll/error.h"
#include "derenroll/oauth.h"
#include "derenroll/store.h"
#include "store/internal.h"
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

/* The record's own string members and its times, by their JSON names. */
struct rec_field {
	const char *name;
	size_t offset;
};

#define REC(name, member)                                                                          \
	{                                                                                          \
		name, offsetof(struct enr_record, member)                                          \
	}
static const struct rec_field rec_strings[] = {
    REC("id", id),         REC("customer", customer), REC("vendor", vendor),
    REC("method", method), REC("account", account),   REC("region", region),
};
static const struct rec_field rec_times[] = {
    REC("created_at", created_at),
    REC("updated_at", updated_at),
    REC("access_expires_at", access_expires_at),
    REC("refresh_expires_at", refresh_expires_at),
};
#undef REC

static const char *const cred_names[] = {"",        "oauth", "api_key", "key_pair",
                                         "partner", "email", "join",    "account"};
static const char *const outcome_names[] = {
    "", "ok", "rejected", "transient", "misconfigured", "badresponse"};

static char **cred_slot(struct enr_credentials *c, const struct cred_field *f)
{
	return (char **)((char *)c + f->offset);
}

static char **rec_string(struct enr_record *rec, const struct rec_field *f)
{
	return (char **)((char *)rec + f->offset);
}

static long long *rec_time(struct enr_record *rec, const struct rec_field *f)
{
	return (long long *)((char *)rec + f->offset);
}

static const char *rec_string_value(const struct enr_record *rec, const struct rec_field *f)
{
	return *(char *const *)((const char *)rec + f->offset);
}

static long long rec_time_value(const struct enr_record *rec, const struct rec_field *f)
{
	return *(const long long *)((const char *)rec + f->offset);
}

static const char *cred_value(const struct enr_credentials *c, const struct cred_field *f)
{
	return *(char *const *)((const char *)c + f->offset);
}

const char *enr_record_cred_name(enum enr_cred_type type)
{
	return (size_t)type < ENR_ARRAY_SIZE(cred_names) ? cred_names[type] : "";
}

/* The index of `name` among `names` from `first` on, or -1. */
static int name_index(const char *const *names, size_t n, size_t first, const char *name)
{
	for (size_t i = first; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return (int)i;
	return -1;
}

int enr_record_cred_parse(enum enr_cred_type *out, const char *name)
{
	int i = name_index(cred_names, ENR_ARRAY_SIZE(cred_names), 1, name);

	if (i < 0)
		return enr_error_set(ENR_E_PARSE, "unknown credential type '%s'", name);
	*out = (enum enr_cred_type)i;
	return 0;
}

const char *enr_record_outcome_name(enum enr_record_outcome outcome)
{
	return (size_t)outcome < ENR_ARRAY_SIZE(outcome_names) ? outcome_names[outcome] : "";
}

int enr_record_outcome_parse(enum enr_record_outcome *out, const char *name)
{
	int i = name_index(outcome_names, ENR_ARRAY_SIZE(outcome_names), 0, name);

	if (i < 0)
		return enr_error_set(ENR_E_PARSE, "unknown check result '%s'", name);
	*out = (enum enr_record_outcome)i;
	return 0;
}

enum enr_record_outcome enr_record_outcome_from_error(int code)
{
	switch (code) {
	case 0:
		return ENR_OUTCOME_OK;
	case ENR_E_REJECTED:
	case ENR_E_EXPIRED:
	case ENR_E_DECLINED:
	case ENR_E_ACCOUNT:
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
	for (size_t i = 0; i < ENR_ARRAY_SIZE(rec_strings); i++)
		enr_util_free_secret(*rec_string(rec, &rec_strings[i]));
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
	copy->cred.refreshable = rec->cred.refreshable;
	for (size_t i = 0; i < ENR_ARRAY_SIZE(rec_times); i++)
		*rec_time(copy, &rec_times[i]) = rec_time_value(rec, &rec_times[i]);
	copy->last_check.at = rec->last_check.at;
	copy->last_check.outcome = rec->last_check.outcome;
	for (size_t i = 0; i < ENR_ARRAY_SIZE(rec_strings); i++)
		if ((rc = enr_record_set(rec_string(copy, &rec_strings[i]),
		                         rec_string_value(rec, &rec_strings[i]))) < 0)
			goto out;
	if ((rc = enr_record_set(&copy->last_check.message, rec->last_check.message)) < 0)
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

int enr_record_set_tokens(struct enr_record *rec, const struct enr_oauth_tokens *tokens)
{
	struct enr_tokens *t = &rec->cred.tokens;
	int rc;

	if ((rc = enr_record_set(&t->access_token, tokens->access_token)) < 0)
		return rc;
	rec->access_expires_at = tokens->access_expires_at;
	/* A rotated refresh token replaces the old one; none means the old one lives on. */
	if (tokens->refresh_token) {
		if ((rc = enr_record_set(&t->refresh_token, tokens->refresh_token)) < 0)
			return rc;
		rec->refresh_expires_at = tokens->refresh_expires_at;
	}
	if ((tokens->id_token && (rc = enr_record_set(&t->id_token, tokens->id_token)) < 0) ||
	    (tokens->token_type && (rc = enr_record_set(&t->token_type, tokens->token_type)) < 0) ||
	    (tokens->scope && (rc = enr_record_set(&t->scope, tokens->scope)) < 0))
		return rc;
	return 0;
}

/* Copies of `x` and of `y` (NULL gives NULL): both, or ENR_E_NOMEM and neither. */
static int copy_two(char **a, const char *x, char **b, const char *y)
{
	*a = enr_util_strdup(x);
	*b = y ? enr_util_strdup(y) : NULL;
	if (*a && (*b || !y))
		return 0;
	free(*a);
	free(*b);
	return enr_error_set(ENR_E_NOMEM, NULL);
}

int enr_record_add_site(struct enr_record *rec, const char *id, const char *name)
{
	/* A vendor's site name is kept to this many characters. */
	enum { SITE_NAME_MAX = 200 };
	struct enr_site site, *grown;
	char *cut = NULL;
	int rc = 0;

	if (name && name[enr_util_utf8_prefix(name, SITE_NAME_MAX)]) {
		cut = strndup(name, enr_util_utf8_prefix(name, SITE_NAME_MAX));
		if (!cut)
			return enr_error_set(ENR_E_NOMEM, NULL);
		name = cut;
	}
	for (size_t i = 0; i < rec->n_sites; i++) {
		if (strcmp(rec->sites[i].id, id) == 0) {
			rc = enr_record_set(&rec->sites[i].name, name);
			goto out;
		}
	}
	if (copy_two(&site.id, id, &site.name, name) < 0) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	if (!(grown = realloc(rec->sites, (rec->n_sites + 1) * sizeof(*grown)))) {
		free(site.id);
		free(site.name);
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	rec->sites = grown;
	rec->sites[rec->n_sites++] = site;
out:
	free(cut);
	return rc;
}

int enr_record_set_extra(struct enr_record *rec, const char *key, const char *value)
{
	struct enr_pair pair, *grown;

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
	if (copy_two(&pair.key, key, &pair.value, value) < 0)
		return ENR_E_NOMEM;
	if (!(grown = realloc(rec->extra, (rec->n_extra + 1) * sizeof(*grown)))) {
		free(pair.key);
		free(pair.value);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	rec->extra = grown;
	rec->extra[rec->n_extra++] = pair;
	return 0;
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
		/* A Join Flow gives ids; a Join session gives the vendor's credentials. */
		if (!c->join.enrollment_id && !c->join.flow_id && !c->tokens.access_token &&
		    !c->api_key && !c->key_secret)
			missing = "an enrollment or flow id, or the credentials of a Join session";
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

bool enr_store__grow(char **buf, size_t *cap, size_t need, size_t keep, size_t wipe, size_t initial)
{
	size_t size = *cap ? *cap : initial;
	char *grown;

	while (size < need)
		size *= 2;
	/* Not realloc: the old block would be freed without being wiped. */
	if (!(grown = malloc(size)))
		return false;
	if (*buf) {
		memcpy(grown, *buf, keep);
		OPENSSL_cleanse(*buf, wipe);
		free(*buf);
	}
	*buf = grown;
	*cap = size;
	return true;
}

bool enr_store__buf_reserve(struct store_buf *b, size_t extra)
{
	if (b->failed)
		return false;
	if (b->len + extra + 1 <= b->cap)
		return true;
	/* What lies past len was never used (or was wiped before). */
	if (!enr_store__grow(&b->data, &b->cap, b->len + extra + 1, b->len, b->len + 1, 1024))
		b->failed = true;
	return !b->failed;
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

/* Appends one character; the buffer must have room (reserved before). */
static inline void put_char(struct store_buf *b, char c)
{
	b->data[b->len++] = c;
}

void enr_store__buf_json(struct store_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = strlen(s), run = 0, i;

	/* Room for the common case (nothing to escape); escapes reserve more. */
	if (!enr_store__buf_reserve(b, len + 2))
		return;
	put_char(b, '"');
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (!enr_store__buf_reserve(b, (i - run) + 6 + (len - i) + 1))
			return;
		memcpy(b->data + b->len, s + run, i - run);
		b->len += i - run;
		run = i + 1;
		put_char(b, '\\');
		switch (c) {
		case '"':
		case '\\':
			put_char(b, (char)c);
			break;
		case '\n':
			put_char(b, 'n');
			break;
		case '\r':
			put_char(b, 'r');
			break;
		case '\t':
			put_char(b, 't');
			break;
		default:
			put_char(b, 'u');
			put_char(b, '0');
			put_char(b, '0');
			put_char(b, hex[c >> 4]);
			put_char(b, hex[c & 15]);
			break;
		}
	}
	memcpy(b->data + b->len, s + run, len - run);
	b->len += len - run;
	put_char(b, '"');
	b->data[b->len] = '\0';
}

void enr_store__buf_free(struct store_buf *b)
{
	if (b->data) {
		OPENSSL_cleanse(b->data, b->len + 1 < b->cap ? b->len + 1 : b->cap);
		free(b->data);
	}
	memset(b, 0, sizeof(*b));
}

/* Writes `,"name":` (no comma before the first member); names need no escaping. */
static void member(struct store_buf *b, bool *first, const char *name)
{
	size_t len = strlen(name);

	if (!enr_store__buf_reserve(b, len + 4))
		return;
	if (!*first)
		put_char(b, ',');
	*first = false;
	put_char(b, '"');
	memcpy(b->data + b->len, name, len);
	b->len += len;
	put_char(b, '"');
	put_char(b, ':');
	b->data[b->len] = '\0';
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
	char num[24], *p = num + sizeof(num);
	unsigned long long v = t < 0 ? 0 - (unsigned long long)t : (unsigned long long)t;

	if (!t)
		return;
	/* Not snprintf: with 10,000 records it would be a good part of a listing. */
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (t < 0)
		*--p = '-';
	member(b, first, name);
	enr_store__buf_add(b, p, (size_t)(num + sizeof(num) - p));
}

static void write_credentials(struct store_buf *b, const struct enr_credentials *c, bool public,
                              bool secret)
{
	bool first = true;

	enr_store__buf_add(b, "{", 1);
	/* No type is how a record without credentials reads: "" would not. */
	if (public && c->type != ENR_CRED_NONE)
		member_str(b, &first, "type", enr_record_cred_name(c->type));
	/* The token when the secrets were read, else what was noted before. */
	if (public &&
	    (c->tokens.refresh_token ? c->tokens.refresh_token[0] != '\0' : c->refreshable)) {
		member(b, &first, "refreshable");
		enr_store__buf_add(b, "true", 4);
	}
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
	for (size_t i = 1; i < ENR_ARRAY_SIZE(rec_strings); i++) /* after the id */
		member_str(b, &first, rec_strings[i].name, rec_string_value(rec, &rec_strings[i]));
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
	/*
	 * The times are grouped so that no object has more than 10 members:
	 * json-c grows the hash table of a bigger one, which costs a tenth of
	 * the time of loading 10,000 records.
	 */
	inner = true;
	member(b, &first, "times");
	enr_store__buf_add(b, "{", 1);
	for (size_t i = 0; i < ENR_ARRAY_SIZE(rec_times); i++)
		member_time(b, &inner, rec_times[i].name, rec_time_value(rec, &rec_times[i]));
	enr_store__buf_add(b, "}", 1);
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
		/* The keys are data too (enr_record_set_extra()): escaped like the values. */
		for (size_t i = 0; i < rec->n_extra; i++) {
			if (!rec->extra[i].value)
				continue;
			if (!inner)
				enr_store__buf_add(b, ",", 1);
			inner = false;
			enr_store__buf_json(b, rec->extra[i].key);
			enr_store__buf_add(b, ":", 1);
			enr_store__buf_json(b, rec->extra[i].value);
		}
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
		if (!secrets_only && strcmp(key, "refreshable") == 0) {
			if (!json_object_is_type(v, json_type_boolean))
				return bad("credentials.refreshable", "must be true or false");
			c->refreshable = json_object_get_boolean(v);
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

static const struct rec_field *find_field(const struct rec_field *fields, size_t n,
                                          const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(fields[i].name, name) == 0)
			return &fields[i];
	return NULL;
}

static int read_times(struct enr_record *rec, struct json_object *obj)
{
	const struct rec_field *f;
	int rc;

	if (!json_object_is_type(obj, json_type_object))
		return bad("times", "must be an object");
	json_object_object_foreach(obj, key, v)
	{
		f = find_field(rec_times, ENR_ARRAY_SIZE(rec_times), key);
		if (f && (rc = take_time(rec_time(rec, f), v, key)) < 0)
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

static int read_public_credentials(struct enr_record *rec, struct json_object *obj)
{
	return read_credentials(&rec->cred, obj, false);
}

/* The members of a record that are objects or arrays. */
static const struct {
	const char *name;
	int (*read)(struct enr_record *rec, struct json_object *obj);
} rec_objects[] = {
    {"sites", read_sites},           {"times", read_times},
    {"last_check", read_last_check}, {"credentials", read_public_credentials},
    {"extra", read_extra},
};

int enr_store__record_read(struct enr_record *rec, struct json_object *obj)
{
	const struct rec_field *f;
	int rc = 0;

	if (!json_object_is_type(obj, json_type_object))
		return enr_error_set(ENR_E_PARSE, "a record must be a JSON object");
	json_object_object_foreach(obj, key, v)
	{
		/* Unknown members are left out: a newer schema migrates instead. */
		if ((f = find_field(rec_strings, ENR_ARRAY_SIZE(rec_strings), key)))
			rc = take_string(rec_string(rec, f), v, key);
		for (size_t i = 0; !f && i < ENR_ARRAY_SIZE(rec_objects); i++)
			if (strcmp(key, rec_objects[i].name) == 0)
				rc = rec_objects[i].read(rec, v);
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

/* ---- import: a record as `derenroll export --json` wrote it ---- */

/* A time of the export (RFC 3339 or null) into `times` as seconds. */
static int export_time(struct json_object *times, struct json_object *obj, const char *key)
{
	struct json_object *v;
	long long t;

	if (!json_object_object_get_ex(obj, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_string) ||
	    enr_util_parse_rfc3339(&t, json_object_get_string(v)) < 0)
		return bad(key, "must be a time (RFC 3339)");
	json_object_object_add(times, key, json_object_new_int64(t));
	return 0;
}

static void copy_member(struct json_object *to, struct json_object *from, const char *key)
{
	struct json_object *v;

	if (json_object_object_get_ex(from, key, &v) && !json_object_is_type(v, json_type_null))
		json_object_object_add(to, key, json_object_get(v));
}

int enr_record_from_export(struct enr_record **out, struct json_object *obj)
{
	static const char *const plain[] = {"id",     "customer", "vendor", "method",     "account",
	                                    "region", "sites",    "extra",  "credentials"};
	static const char *const times[] = {"access_expires_at", "refresh_expires_at", "created_at",
	                                    "updated_at"};
	struct json_object *rec_obj = json_object_new_object(), *t = json_object_new_object();
	struct json_object *lc, *v, *secrets = NULL;
	struct enr_record *rec = NULL;
	int rc = rec_obj && t ? 0 : enr_error_set(ENR_E_NOMEM, NULL);

	*out = NULL;
	if (rc == 0 && !json_object_is_type(obj, json_type_object))
		rc = enr_error_set(ENR_E_PARSE, "a record must be a JSON object");
	for (size_t i = 0; rc == 0 && i < ENR_ARRAY_SIZE(plain); i++)
		copy_member(rec_obj, obj, plain[i]);
	for (size_t i = 0; rc == 0 && i < ENR_ARRAY_SIZE(times); i++)
		rc = export_time(t, obj, times[i]);
	if (rc == 0 && json_object_object_get_ex(obj, "last_check", &lc) &&
	    json_object_is_type(lc, json_type_object)) {
		struct json_object *check = json_object_new_object();
		long long when = 0;
		if (json_object_object_get_ex(lc, "at", &v) &&
		    json_object_is_type(v, json_type_string))
			rc = enr_util_parse_rfc3339(&when, json_object_get_string(v)) < 0
			         ? bad("last_check.at", "must be a time (RFC 3339)")
			         : 0;
		json_object_object_add(check, "at", json_object_new_int64(when));
		copy_member(check, lc, "message");
		if (json_object_object_get_ex(lc, "result", &v) &&
		    json_object_is_type(v, json_type_string))
			json_object_object_add(check, "result", json_object_get(v));
		json_object_object_add(rec_obj, "last_check", check);
	}
	json_object_object_add(rec_obj, "times", t);
	t = NULL;
	if (rc == 0 && (rc = enr_record_new(&rec)) == 0)
		rc = enr_store__record_read(rec, rec_obj);
	/* The secret fields, read as the store reads its own. */
	if (rc == 0 && json_object_object_get_ex(rec_obj, "credentials", &v)) {
		secrets = json_object_new_object();
		json_object_object_add(secrets, "id", json_object_new_string(rec->id));
		json_object_object_add(secrets, "credentials", json_object_get(v));
		rc = enr_store__record_read_secrets(rec, secrets);
	}
	json_object_put(secrets);
	json_object_put(t);
	json_object_put(rec_obj);
	if (rc < 0) {
		enr_record_free(rec);
		return rc;
	}
	*out = rec;
	return 0;
}

void enr_json_wipe(struct json_object *obj)
{
	enr_store__json_wipe(obj);
}
