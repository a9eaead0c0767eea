/* The sandbox's server: libmicrohttpd plumbing, routing, faults, latency,
 * the world's credentials and the configuration that points at it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/evp.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/relay.h"
#include "derenroll/vendor.h"
#include "answers.h"
#include "sandbox_internal.h"
#include "util.h"

#define HUGE_SIZE       (5 * 1024 * 1024)
#define STALL_PREFIX    "{\"response\": [{\"id\": 1, "
#define STALL_SIZE      4096
#define DEFAULT_STALL   300000
#define DEFAULT_CODE    60000
#define DEFAULT_SMA     2000
#define ENPHASE_PARTNER "enphase-partner"

static const char *const vendor_ids[SB_N_VENDORS] = {
    "tesla", "sma", "enphase", "solaredge", "solis", "derapi", "enphasevpp",
};
static const char *const vendor_names[SB_N_VENDORS] = {
    "Tesla", "SMA", "Enphase", "SolarEdge", "Solis", "Derapi", "Enphase Grid Services",
};

const char *enr_sandbox__vendor_id(int vendor)
{
	return vendor >= 0 && vendor < SB_N_VENDORS ? vendor_ids[vendor] : "";
}

const char *enr_sandbox__vendor_name(int vendor)
{
	return vendor >= 0 && vendor < SB_N_VENDORS ? vendor_names[vendor] : "";
}

int enr_sandbox__vendor_from_id(const char *id)
{
	for (int v = 0; id && v < SB_N_VENDORS; v++)
		if (strcmp(id, vendor_ids[v]) == 0)
			return v;
	return -1;
}

long long enr_sandbox__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t enr_sandbox__hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* ---- rings ---- */

int enr_sandbox__ring_init(struct sb_ring *ring, size_t cap, void (*free_item)(void *))
{
	ring->items = calloc(cap, sizeof(*ring->items));
	ring->cap = cap;
	ring->next = 0;
	ring->free_item = free_item;
	return ring->items ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

void enr_sandbox__ring_done(struct sb_ring *ring)
{
	if (!ring->items)
		return;
	for (size_t i = 0; i < ring->cap; i++)
		enr_sandbox__ring_drop(ring, i);
	free(ring->items);
	ring->items = NULL;
}

void enr_sandbox__ring_put(struct sb_ring *ring, void *item)
{
	enr_sandbox__ring_drop(ring, ring->next);
	ring->items[ring->next] = item;
	ring->next = (ring->next + 1) % ring->cap;
}

void enr_sandbox__ring_drop(struct sb_ring *ring, size_t i)
{
	if (ring->items[i])
		ring->free_item(ring->items[i]);
	ring->items[i] = NULL;
}

/* ---- requests ---- */

const char *enr_sandbox__header(const struct sb_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *enr_sandbox__query(const struct sb_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool enr_sandbox__is_form(const struct sb_req *req)
{
	const char *type = enr_sandbox__header(req, MHD_HTTP_HEADER_CONTENT_TYPE);

	return type && strncasecmp(type, "application/x-www-form-urlencoded", 33) == 0;
}

static void parse_form(struct sb_req *req)
{
	char *copy;

	req->form_parsed = true;
	if (!req->body_len || !enr_sandbox__is_form(req))
		return;
	copy = strndup(req->body, req->body_len);
	if (!copy)
		return;
	for (char *save = NULL, *pair = strtok_r(copy, "&", &save); pair;
	     pair = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(pair, '=');
		struct sb_param *grown;

		if (eq)
			*eq = '\0';
		grown = realloc(req->form, (req->n_form + 1) * sizeof(*grown));
		if (!grown)
			break;
		req->form = grown;
		grown[req->n_form].name = strdup(enr_util_urldecode(pair));
		grown[req->n_form].value = strdup(eq ? enr_util_urldecode(eq + 1) : "");
		req->n_form++;
	}
	free(copy);
}

const char *enr_sandbox__form(struct sb_req *req, const char *name)
{
	if (!req->form_parsed)
		parse_form(req);
	for (size_t i = 0; i < req->n_form; i++)
		if (req->form[i].name && strcmp(req->form[i].name, name) == 0)
			return req->form[i].value;
	return NULL;
}

const char *enr_sandbox__bearer(const struct sb_req *req)
{
	const char *auth = enr_sandbox__header(req, MHD_HTTP_HEADER_AUTHORIZATION);

	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7])
		return NULL;
	return auth + 7;
}

bool enr_sandbox__basic(const struct sb_req *req, char **id, char **secret)
{
	const char *auth = enr_sandbox__header(req, MHD_HTTP_HEADER_AUTHORIZATION);
	unsigned char *decoded = NULL;
	char *colon;

	*id = *secret = NULL;
	if (!auth || strncasecmp(auth, "Basic ", 6) != 0 ||
	    enr_util_base64_decode(&decoded, NULL, auth + 6) < 0)
		return false;
	colon = strchr((char *)decoded, ':');
	if (colon) {
		*colon = '\0';
		*id = strdup((char *)decoded);
		*secret = strdup(colon + 1);
	}
	free(decoded);
	if (!*id || !*secret) {
		free(*id);
		free(*secret);
		*id = *secret = NULL;
		return false;
	}
	return true;
}

json_object *enr_sandbox__body_json(const struct sb_req *req)
{
	json_tokener *tok;
	json_object *obj;

	if (!req->body_len)
		return NULL;
	tok = json_tokener_new();
	if (!tok)
		return NULL;
	obj = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
	if (json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset != (int)req->body_len) {
		json_object_put(obj);
		obj = NULL;
	}
	json_tokener_free(tok);
	return obj;
}

/* ---- answers ---- */

static void set_body(struct sb_resp *resp, int status, const char *content_type, char *body)
{
	free(resp->body);
	resp->status = status;
	resp->content_type = content_type;
	resp->body = body;
	resp->len = body ? strlen(body) : 0;
}

void enr_sandbox__nomem(struct sb_resp *resp)
{
	set_body(resp, 500, "text/plain", strdup("the sandbox is out of memory\n"));
}

void enr_sandbox__json(struct sb_resp *resp, int status, json_object *obj)
{
	const char *text;

	if (!obj) {
		enr_sandbox__nomem(resp);
		return;
	}
	text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
	                                               JSON_C_TO_STRING_NOSLASHESCAPE);
	set_body(resp, status, "application/json", text ? strdup(text) : NULL);
	json_object_put(obj);
}

static bool has_header(const struct sb_resp *resp, const char *name)
{
	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return true;
	return false;
}

void enr_sandbox__set_header(struct sb_resp *resp, const char *name, const char *value)
{
	size_t i;

	for (i = 0; i < resp->n_headers; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			break;
	if (i == SB_MAX_HEADERS)
		return;
	if (i == resp->n_headers)
		resp->n_headers++;
	resp->headers[i].name = name;
	snprintf(resp->headers[i].value, sizeof(resp->headers[i].value), "%s", value);
}

void enr_sandbox__answer_json(struct sb_resp *resp, int vendor, const char *name, json_object *body)
{
	const char *id = enr_sandbox__vendor_id(vendor);
	json_object *rec = NULL, *headers;
	const char *type = "application/json";

	if (!body || enr_answers__get(&rec, id, name) < 0) {
		json_object_put(body);
		enr_sandbox__oauth_error(resp, 500, "sandbox_error", enr_error_last());
		return;
	}
	headers = enr_util_json_at(rec, "headers");
	if (headers && json_object_is_type(headers, json_type_object)) {
		json_object_object_foreach(headers, key, val)
		{
			/* The recording's headers are examples: what the handler
			 * computed (SolarEdge's rate-limit counts) wins. */
			if (strcasecmp(key, "Content-Type") == 0)
				type = json_object_get_string(val);
			else if (!has_header(resp, key))
				enr_sandbox__set_header(resp, key, json_object_get_string(val));
		}
	}
	if (json_object_is_type(body, json_type_string)) {
		set_body(resp, enr_answers__status(id, name), type,
		         strdup(json_object_get_string(body)));
		json_object_put(body);
	} else {
		enr_sandbox__json(resp, enr_answers__status(id, name), body);
	}
	resp->content_type = type;
}

void enr_sandbox__answer(struct sb_resp *resp, int vendor, const char *name)
{
	json_object *body = NULL;

	enr_answers__body(&body, enr_sandbox__vendor_id(vendor), name);
	enr_sandbox__answer_json(resp, vendor, name, body);
}

void enr_sandbox__text(struct sb_resp *resp, int status, const char *content_type, const char *text)
{
	set_body(resp, status, content_type, strdup(text));
}

void enr_sandbox__html(struct sb_resp *resp, int status, char *html)
{
	if (!html) {
		enr_sandbox__nomem(resp);
		return;
	}
	set_body(resp, status, "text/html; charset=utf-8", html);
}

void enr_sandbox__redirect(struct sb_resp *resp, char *location)
{
	if (!location) {
		enr_sandbox__nomem(resp);
		return;
	}
	free(resp->location);
	resp->location = location;
	set_body(resp, 302, "text/plain", strdup("redirecting\n"));
}

void enr_sandbox__oauth_error(struct sb_resp *resp, int status, const char *error,
                              const char *description)
{
	json_object *obj = json_object_new_object();

	json_object_object_add(obj, "error", json_object_new_string(error));
	if (description)
		json_object_object_add(obj, "error_description",
		                       json_object_new_string(description));
	enr_sandbox__json(resp, status, obj);
}

void enr_sandbox__not_found(struct sb_resp *resp)
{
	enr_sandbox__oauth_error(resp, 404, "not_found", "no such endpoint in the sandbox");
}

char *enr_sandbox__html_escape(const char *s)
{
	size_t len = 0;
	char *out, *o;

	for (const char *p = s; *p; p++)
		len += *p == '&' ? 5 : *p == '<' || *p == '>' ? 4 : *p == '"' || *p == '\'' ? 6 : 1;
	out = o = malloc(len + 1);
	if (!out)
		return NULL;
	for (; *s; s++) {
		switch (*s) {
		case '&':
			o = stpcpy(o, "&amp;");
			break;
		case '<':
			o = stpcpy(o, "&lt;");
			break;
		case '>':
			o = stpcpy(o, "&gt;");
			break;
		case '"':
			o = stpcpy(o, "&quot;");
			break;
		case '\'':
			o = stpcpy(o, "&#x27;");
			break;
		default:
			*o++ = *s;
		}
	}
	*o = '\0';
	return out;
}

#define PAGE_HEAD                                                                                  \
	"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"                        \
	"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"                  \
	"<title>%s</title><style>"                                                                 \
	"body{font-family:system-ui,sans-serif;max-width:32em;margin:1.5em auto;padding:0 1em;"    \
	"font-size:1.15em;line-height:1.5}"                                                        \
	".code{font-family:monospace;font-size:1.6em;word-break:break-all;background:#eee;"        \
	"padding:.4em}"                                                                            \
	"</style></head><body><h1>%s</h1>"

char *enr_sandbox__page(const char *title, ...)
{
	char *buf = NULL, *esc_title = enr_sandbox__html_escape(title);
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);
	const char *para;
	va_list ap;

	if (!mem || !esc_title) {
		if (mem)
			fclose(mem);
		free(buf);
		free(esc_title);
		return NULL;
	}
	fprintf(mem, PAGE_HEAD, esc_title, esc_title);
	va_start(ap, title);
	while ((para = va_arg(ap, const char *))) {
		char *esc = enr_sandbox__html_escape(para);
		fprintf(mem, "<p>%s</p>", esc ? esc : "");
		free(esc);
	}
	va_end(ap);
	fputs("</body></html>\n", mem);
	fclose(mem);
	free(esc_title);
	return buf;
}

char *enr_sandbox__add_query(const char *base, ...)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);
	char sep = strchr(base, '?') ? '&' : '?';
	const char *name;
	va_list ap;

	if (!mem)
		return NULL;
	fputs(base, mem);
	va_start(ap, base);
	while ((name = va_arg(ap, const char *))) {
		const char *value = va_arg(ap, const char *);
		char *enc;
		if (!value)
			continue;
		enc = enr_util_urlencode(value);
		fprintf(mem, "%c%s=%s", sep, name, enc ? enc : "");
		free(enc);
		sep = '&';
	}
	va_end(ap);
	fclose(mem);
	return buf;
}

/* ---- faults and latency ---- */

static const char *const fault_names[] = {"429", "500", "malformed", "huge", "stall", "lost"};

int enr_sandbox_parse_fault(enum enr_sandbox_fault *out, const char *name)
{
	for (size_t i = 0; name && i < ENR_ARRAY_SIZE(fault_names); i++) {
		if (strcmp(name, fault_names[i]) == 0) {
			*out = (enum enr_sandbox_fault)i;
			return 0;
		}
	}
	return enr_error_set(
	    ENR_E_USAGE, "unknown fault '%s' (429, 500, malformed, huge, stall, lost or latency)",
	    name ? name : "");
}

static int prefix_vendor(const char *vendor, int *out)
{
	*out = -1;
	if (!vendor || strcmp(vendor, "*") == 0)
		return 0;
	*out = enr_sandbox__vendor_from_id(vendor);
	if (*out < 0 || *out >= SB_N_PREFIXES)
		return enr_error_set(ENR_E_USAGE,
		                     "unknown sandbox vendor '%s' (tesla, sma, enphase, solaredge, "
		                     "solis, derapi or *)",
		                     vendor);
	return 0;
}

int enr_sandbox_add_fault(struct enr_sandbox *sb, const char *vendor, enum enr_sandbox_fault kind,
                          int count, long retry_after)
{
	int v, rc = prefix_vendor(vendor, &v);

	if (rc < 0)
		return rc;
	if ((unsigned)kind >= ENR_ARRAY_SIZE(fault_names))
		return enr_error_set(ENR_E_USAGE, "unknown fault kind %d", (int)kind);
	pthread_mutex_lock(&sb->lock);
	if (sb->n_faults == SB_MAX_FAULTS) {
		rc = enr_error_set(ENR_E_NOMEM, "%d faults are pending already", SB_MAX_FAULTS);
	} else {
		sb->faults[sb->n_faults++] = (struct sb_fault){
		    .vendor = v,
		    .kind = kind,
		    .remaining = count,
		    .retry_after = retry_after > 0 ? retry_after : 2,
		};
	}
	pthread_mutex_unlock(&sb->lock);
	return rc;
}

int enr_sandbox_set_latency(struct enr_sandbox *sb, const char *vendor, long ms)
{
	int v, rc = prefix_vendor(vendor, &v);

	if (rc < 0)
		return rc;
	if (v < 0 && ms < 0)
		return enr_error_set(ENR_E_USAGE, "latency must not be negative");
	pthread_mutex_lock(&sb->lock);
	if (v < 0)
		sb->latency_ms = ms;
	else
		sb->vendor_latency_ms[v] = ms < 0 ? -1 : ms;
	pthread_mutex_unlock(&sb->lock);
	return 0;
}

void enr_sandbox_clear_faults(struct enr_sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	sb->n_faults = 0;
	for (int v = 0; v < SB_N_PREFIXES; v++)
		sb->vendor_latency_ms[v] = -1;
	pthread_mutex_unlock(&sb->lock);
}

/* "tesla_registered_eu" 0/1: whether the sandbox's Tesla app is registered in a region. */
static bool set_tesla_registered(struct enr_sandbox *sb, const char *setting, long value)
{
	static const char *const regions[] = {"na", "eu", "cn"};
	const char *prefix = "tesla_registered_";

	if (strncmp(setting, prefix, strlen(prefix)) != 0)
		return false;
	for (size_t i = 0; i < ENR_ARRAY_SIZE(regions); i++)
		if (strcmp(setting + strlen(prefix), regions[i]) == 0) {
			pthread_mutex_lock(&sb->lock);
			snprintf(sb->tesla_domains[i], sizeof(sb->tesla_domains[i]), "%s",
			         value ? "derenroll-sandbox.example" : "");
			pthread_mutex_unlock(&sb->lock);
			return true;
		}
	return false;
}

int enr_sandbox_set(struct enr_sandbox *sb, const char *setting, long value)
{
	long *target = NULL, most = -1;

	if (set_tesla_registered(sb, setting, value))
		return 0;
	if (strcmp(setting, "code_ttl_ms") == 0)
		target = &sb->code_ttl_ms;
	else if (strcmp(setting, "refresh_grace") == 0)
		target = &sb->refresh_grace;
	else if (strcmp(setting, "sma_accept_ms") == 0)
		target = &sb->sma_accept_ms;
	else if (strcmp(setting, "stall_ms") == 0)
		target = &sb->stall_ms;
	else if (strcmp(setting, "latency_ms") == 0)
		target = &sb->latency_ms;
	else if (strcmp(setting, "access_ttl") == 0)
		target = &sb->access_ttl;
	else if (strcmp(setting, "solaredge_minute_limit") == 0)
		target = &sb->solaredge_minute_limit;
	else if (strcmp(setting, "require_pkce") == 0)
		target = &sb->require_pkce, most = 1;
	else if (strcmp(setting, "refresh_needs_consent") == 0)
		target = &sb->refresh_needs_consent, most = 1;
	else if (strcmp(setting, "iss") == 0)
		target = &sb->send_iss, most = 2;
	else if (strcmp(setting, "id_token") == 0)
		target = &sb->id_token_mode, most = SB_ID_TOKEN_N - 1;
	if (!target)
		return enr_error_set(ENR_E_USAGE,
		                     "unknown sandbox setting '%s' (code_ttl_ms, refresh_grace, "
		                     "sma_accept_ms, stall_ms, latency_ms, access_ttl, "
		                     "solaredge_minute_limit, tesla_registered_na|eu|cn, "
		                     "require_pkce, refresh_needs_consent, iss, id_token)",
		                     setting);
	if (value < 0 && target != &sb->sma_accept_ms)
		return enr_error_set(ENR_E_USAGE, "%s must not be negative", setting);
	if (most >= 0 && value > most)
		return enr_error_set(ENR_E_USAGE, "%s is 0 to %ld", setting, most);
	pthread_mutex_lock(&sb->lock);
	*target = value;
	pthread_mutex_unlock(&sb->lock);
	return 0;
}

/*
 * Delays (latency, a stalled body) hold no thread: the connection is
 * suspended and the timer thread resumes it when its time has come, or at
 * once when the sandbox stops. Under the lock; false when stopping.
 */
static bool suspend_for(struct enr_sandbox *sb, struct MHD_Connection *conn, struct sb_wait *w,
                        long ms)
{
	if (sb->stopping || ms <= 0)
		return false;
	w->conn = conn;
	w->deadline_ms = enr_sandbox__now_ms() + ms;
	w->next = sb->waits;
	w->queued = true;
	sb->waits = w;
	MHD_suspend_connection(conn);
	pthread_cond_broadcast(&sb->wake);
	return true;
}

/* Under the lock. */
static void unqueue(struct enr_sandbox *sb, struct sb_wait *w)
{
	for (struct sb_wait **p = &sb->waits; w->queued && *p; p = &(*p)->next) {
		if (*p == w) {
			*p = w->next;
			w->queued = false;
			break;
		}
	}
}

static void *timer_main(void *arg)
{
	struct enr_sandbox *sb = arg;
	struct MHD_Connection *due[64];

	pthread_mutex_lock(&sb->lock);
	for (;;) {
		long long now = enr_sandbox__now_ms(), next = -1;
		size_t n = 0;

		for (struct sb_wait **p = &sb->waits; *p && n < ENR_ARRAY_SIZE(due);) {
			struct sb_wait *w = *p;
			if (sb->stopping || w->deadline_ms <= now) {
				due[n++] = w->conn;
				w->queued = false;
				*p = w->next;
			} else {
				if (next < 0 || w->deadline_ms < next)
					next = w->deadline_ms;
				p = &w->next;
			}
		}
		if (n) {
			/* A suspended connection cannot finish before it is resumed. */
			pthread_mutex_unlock(&sb->lock);
			for (size_t i = 0; i < n; i++)
				MHD_resume_connection(due[i]);
			pthread_mutex_lock(&sb->lock);
			continue;
		}
		if (sb->stopping)
			break;
		if (next < 0) {
			pthread_cond_wait(&sb->wake, &sb->lock);
		} else {
			struct timespec ts = {.tv_sec = next / 1000,
			                      .tv_nsec = next % 1000 * 1000000L};
			pthread_cond_timedwait(&sb->wake, &sb->lock, &ts);
		}
	}
	pthread_mutex_unlock(&sb->lock);
	return NULL;
}

/* Takes the next fault for `vendor`, if any; under the lock. */
static bool next_fault(struct enr_sandbox *sb, int vendor, struct sb_fault *out)
{
	for (size_t i = 0; i < sb->n_faults; i++) {
		struct sb_fault *f = &sb->faults[i];
		if (f->vendor >= 0 && f->vendor != vendor)
			continue;
		*out = *f;
		if (f->remaining > 0 && --f->remaining == 0) {
			memmove(f, f + 1, (sb->n_faults - i - 1) * sizeof(*f));
			sb->n_faults--;
		}
		return true;
	}
	return false;
}

static void fault_answer(struct sb_resp *resp, const struct sb_fault *f)
{
	switch (f->kind) {
	case ENR_SANDBOX_FAULT_429:
		enr_sandbox__oauth_error(resp, 429, "rate_limited",
		                         "Too many requests (sandbox fault)");
		resp->retry_after = f->retry_after;
		break;
	case ENR_SANDBOX_FAULT_500:
		enr_sandbox__oauth_error(resp, 500, "internal_error",
		                         "Internal server error (sandbox fault)");
		break;
	case ENR_SANDBOX_FAULT_MALFORMED:
		enr_sandbox__text(resp, 200, "application/json",
		                  "{\"response\": [{\"id\": 1, \"site_name\": <html><body>502 Bad "
		                  "Gateway</body></html>");
		break;
	case ENR_SANDBOX_FAULT_HUGE:
		resp->status = 200;
		resp->content_type = "application/json";
		resp->special = SB_SPECIAL_HUGE;
		break;
	case ENR_SANDBOX_FAULT_STALL:
	case ENR_SANDBOX_FAULT_LOST:
		free(resp->body);
		resp->body = NULL;
		resp->len = 0;
		resp->status = 200;
		resp->content_type = "application/json";
		resp->special = SB_SPECIAL_STALL;
		break;
	}
}

static ssize_t huge_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	static const char head[] = "{\"padding\": \"";
	static const char tail[] = "\"}";
	size_t n = 0;

	(void)cls;
	for (; n < max && pos < HUGE_SIZE; n++, pos++) {
		if (pos < sizeof(head) - 1)
			buf[n] = head[pos];
		else if (pos >= HUGE_SIZE - (sizeof(tail) - 1))
			buf[n] = tail[pos - (HUGE_SIZE - (sizeof(tail) - 1))];
		else
			buf[n] = 'x';
	}
	return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

struct stall {
	struct enr_sandbox *sb;
	struct MHD_Connection *conn;
	struct sb_wait wait;
	bool waited;
};

static ssize_t stall_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stall *st = cls;
	struct enr_sandbox *sb = st->sb;
	size_t len = sizeof(STALL_PREFIX) - 1;
	bool suspended = false;

	if (pos < len) {
		len -= (size_t)pos;
		len = len < max ? len : max;
		memcpy(buf, STALL_PREFIX + pos, len);
		return (ssize_t)len;
	}
	pthread_mutex_lock(&sb->lock);
	if (!st->waited) {
		st->waited = true;
		suspended = suspend_for(sb, st->conn, &st->wait, sb->stall_ms);
	}
	pthread_mutex_unlock(&sb->lock);
	/* 0 with the connection suspended: asked again once resumed. */
	return suspended ? 0 : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stall_free(void *cls)
{
	struct stall *st = cls;

	pthread_mutex_lock(&st->sb->lock);
	unqueue(st->sb, &st->wait);
	pthread_mutex_unlock(&st->sb->lock);
	free(st);
}

/* ---- the server ---- */

struct conn_ctx {
	char *body;
	size_t len, cap;
	bool too_large;
	bool relay; /* the mounted relay's request */
	void *relay_request;
	bool delayed; /* the latency was applied */
	struct sb_wait wait;
	long long arrived_ms;
};

/* The vendor whose prefix starts `path`, and the path below it; -1. */
static int vendor_of(const char *path, const char **rest)
{
	for (int v = 0; v < SB_N_PREFIXES; v++) {
		size_t len = strlen(vendor_ids[v]);
		if (path[0] == '/' && strncmp(path + 1, vendor_ids[v], len) == 0 &&
		    (path[len + 1] == '/' || path[len + 1] == '\0')) {
			*rest = path + len + 1;
			return v;
		}
	}
	return -1;
}

static bool relay_path(const char *url)
{
	return strcmp(url, "/relay") == 0 || strncmp(url, "/relay/", 7) == 0;
}

static void route(struct sb_req *req, struct sb_resp *resp)
{
	static void (*const handlers[SB_N_PREFIXES])(struct sb_req *, struct sb_resp *) = {
	    enr_sandbox__tesla,     enr_sandbox__sma,   enr_sandbox__enphase,
	    enr_sandbox__solaredge, enr_sandbox__solis, enr_sandbox__derapi,
	};
	struct enr_sandbox *sb = req->sb;
	const char *path = req->path;
	struct sb_fault fault;
	bool faulty;

	req->vendor = vendor_of(path, &req->rest);
	if (req->vendor >= 0) {
		pthread_mutex_lock(&sb->lock);
		faulty = next_fault(sb, req->vendor, &fault);
		sb->request_arrived_ms = req->arrived_ms;
		/* A lost answer: the vendor did the work, the client never hears of it. */
		if (!faulty || fault.kind == ENR_SANDBOX_FAULT_LOST)
			handlers[req->vendor](req, resp);
		pthread_mutex_unlock(&sb->lock);
		if (faulty)
			fault_answer(resp, &fault);
		return;
	}
	if (strcmp(path, "/_sandbox") == 0 || strncmp(path, "/_sandbox/", 10) == 0) {
		req->rest = path + 9;
		enr_sandbox__control(req, resp);
	} else if (strcmp(path, "/consent") == 0) {
		pthread_mutex_lock(&sb->lock);
		enr_sandbox__consent_post(req, resp);
		pthread_mutex_unlock(&sb->lock);
	} else if (strcmp(path, "/") == 0) {
		enr_sandbox__html(
		    resp, 200,
		    enr_sandbox__page("derenroll sandbox",
		                      "This server plays Tesla, SMA, Enphase, SolarEdge, "
		                      "Solis and Derapi for derenroll, offline.",
		                      "Prefixes: /tesla /sma /enphase /solaredge /solis "
		                      "/derapi; control: /_sandbox.",
		                      NULL));
	} else {
		enr_sandbox__not_found(resp);
	}
}

static enum MHD_Result queue(struct enr_sandbox *sb, struct MHD_Connection *conn,
                             struct sb_resp *resp)
{
	struct MHD_Response *r = NULL;
	struct stall *st;
	enum MHD_Result ret;
	char num[32];

	if (resp->special == SB_SPECIAL_HUGE)
		r = MHD_create_response_from_callback(HUGE_SIZE, 64 * 1024, huge_reader, NULL,
		                                      NULL);
	else if (resp->special == SB_SPECIAL_STALL) {
		st = calloc(1, sizeof(*st));
		if (st) {
			st->sb = sb;
			st->conn = conn;
			r = MHD_create_response_from_callback(STALL_SIZE, 1024, stall_reader, st,
			                                      stall_free);
			if (!r)
				free(st);
		}
	} else {
		r = MHD_create_response_from_buffer(resp->len, resp->body, MHD_RESPMEM_MUST_FREE);
		if (r)
			resp->body = NULL;
	}
	if (!r)
		return MHD_NO;
	if (resp->content_type)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (resp->location)
		MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, resp->location);
	if (resp->www_authenticate)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		                        resp->www_authenticate);
	if (resp->retry_after >= 0) {
		snprintf(num, sizeof(num), "%ld", resp->retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, num);
	}
	for (size_t i = 0; i < resp->n_headers; i++)
		MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
	ret = MHD_queue_response(conn, (unsigned)resp->status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
	struct enr_sandbox *sb = cls;
	struct conn_ctx *ctx = *con_cls;
	struct sb_req req = {.sb = sb, .conn = conn, .method = method, .path = url, .vendor = -1};
	struct sb_resp resp = {.status = 500, .retry_after = -1};
	enum MHD_Result ret;

	(void)version;
	if (!ctx) {
		ctx = calloc(1, sizeof(*ctx));
		*con_cls = ctx;
		if (!ctx)
			return MHD_NO;
		ctx->arrived_ms = enr_sandbox__now_ms();
		ctx->relay = relay_path(url);
		if (!ctx->relay)
			return MHD_YES;
	}
	if (ctx->relay)
		return enr_relay_handle(sb->relay, conn, url + 6, method, upload_data, upload_size,
		                        &ctx->relay_request)
		           ? MHD_YES
		           : MHD_NO;
	if (*upload_size) {
		if (ctx->len + *upload_size > SB_MAX_BODY) {
			ctx->too_large = true;
		} else if (!ctx->too_large) {
			if (ctx->len + *upload_size + 1 > ctx->cap) {
				size_t cap = (ctx->len + *upload_size + 1) * 2;
				char *grown = realloc(ctx->body, cap);
				if (!grown)
					return MHD_NO;
				ctx->body = grown;
				ctx->cap = cap;
			}
			memcpy(ctx->body + ctx->len, upload_data, *upload_size);
			ctx->len += *upload_size;
			ctx->body[ctx->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (!ctx->delayed) {
		const char *rest;
		int vendor = vendor_of(url, &rest);
		bool suspended = false;

		ctx->delayed = true;
		pthread_mutex_lock(&sb->lock);
		if (vendor >= 0)
			suspended = suspend_for(sb, conn, &ctx->wait,
			                        sb->vendor_latency_ms[vendor] >= 0
			                            ? sb->vendor_latency_ms[vendor]
			                            : sb->latency_ms);
		pthread_mutex_unlock(&sb->lock);
		if (suspended)
			return MHD_YES;
	}
	req.body = ctx->body ? ctx->body : "";
	req.body_len = ctx->len;
	req.arrived_ms = ctx->arrived_ms;
	if (ctx->too_large)
		enr_sandbox__oauth_error(&resp, 413, "too_large", "the request body is too large");
	else
		route(&req, &resp);
	enr_log_debug("sandbox: %s %s -> %d", method, url, resp.status);
	if (resp.spent_refresh) {
		pthread_mutex_lock(&sb->lock);
		enr_sandbox__refresh_answered(sb, resp.spent_refresh);
		pthread_mutex_unlock(&sb->lock);
	}
	ret = queue(sb, conn, &resp);
	for (size_t i = 0; i < req.n_form; i++) {
		free(req.form[i].name);
		free(req.form[i].value);
	}
	free(req.form);
	free(resp.body);
	free(resp.location);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
	struct enr_sandbox *sb = cls;
	struct conn_ctx *ctx = *con_cls;

	(void)conn;
	(void)why;
	if (ctx) {
		pthread_mutex_lock(&sb->lock);
		unqueue(sb, &ctx->wait);
		pthread_mutex_unlock(&sb->lock);
		enr_relay_request_done(sb->relay, &ctx->relay_request);
		free(ctx->body);
		free(ctx);
	}
	*con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	enr_log_debug("sandbox: libmicrohttpd: %s", line);
}

/* ---- the world ---- */

static char *derived(const struct enr_sandbox *sb, const char *prefix, const char *label,
                     size_t bytes, bool upper)
{
	char hex[65];

	enr_sandbox__derive_hex(sb, hex, label, bytes);
	if (upper)
		for (char *p = hex; *p; p++)
			if (*p >= 'a' && *p <= 'f')
				*p = (char)(*p - 'a' + 'A');
	return enr_util_printf("%s%s", prefix, hex);
}

static char *derived_digits(const struct enr_sandbox *sb, const char *prefix, const char *label)
{
	char hex[17];

	enr_sandbox__derive_hex(sb, hex, label, 8);
	return enr_util_printf("%s%013llu", prefix, strtoull(hex, NULL, 16) % 10000000000000ULL);
}

static char *derived_uuid(const struct enr_sandbox *sb, const char *label)
{
	char h[33];

	enr_sandbox__derive_hex(sb, h, label, 16);
	return enr_util_printf("%.8s-%.4s-4%.3s-a%.3s-%.12s", h, h + 8, h + 13, h + 17, h + 20);
}

/* The apps' ids and secrets and the printed keys. */
static int make_keys(struct enr_sandbox *sb)
{
	sb->clients[SB_TESLA].id = derived_uuid(sb, "tesla.client_id");
	sb->clients[SB_TESLA].secret = derived(sb, "ta-secret.", "tesla.client_secret", 16, false);
	/* The app is registered in NA and EU; CN waits for `derenroll tesla register`. */
	snprintf(sb->tesla_domains[0], sizeof(sb->tesla_domains[0]), "derenroll-sandbox.example");
	snprintf(sb->tesla_domains[1], sizeof(sb->tesla_domains[1]), "derenroll-sandbox.example");
	sb->clients[SB_SMA].id = derived(sb, "sandbox-sma-", "sma.client_id", 4, false);
	sb->clients[SB_SMA].secret = derived(sb, "", "sma.client_secret", 20, false);
	sb->clients[SB_ENPHASE].id = derived(sb, "", "enphase.client_id", 16, false);
	sb->clients[SB_ENPHASE].secret = derived(sb, "", "enphase.client_secret", 16, false);
	sb->clients[SB_DERAPI].id = derived(sb, "sandbox-derapi-", "derapi.client_id", 4, false);
	sb->clients[SB_DERAPI].secret = derived(sb, "", "derapi.client_secret", 24, false);
	sb->enphase_api_key = derived(sb, "", "enphase.api_key", 16, false);
	sb->solaredge_key = derived(sb, "", "solaredge.api_key", 16, true);
	sb->solaredge_company_key = derived(sb, "", "solaredge.company_key", 16, true);
	sb->solaredge_account_key = derived(sb, "", "solaredge.account_key", 16, true);
	sb->solis_key_id = derived_digits(sb, "demo-", "solis.key_id");
	sb->solis_company_key_id = derived_digits(sb, "demo-", "solis.company_key_id");
	sb->solis_secret = derived(sb, "", "solis.key_secret", 16, false);
	sb->sma_owner_email = derived(sb, "owner-", "sma.owner", 3, false);
	sb->relay_secret = derived(sb, "", "relay.secret", 24, false);
	sb->flow_id = derived(sb, "flow_", "derapi.flow_id", 8, false);
	sb->program_id = derived(sb, "prog_", "derapi.program_id", 6, false);
	if (sb->sma_owner_email) {
		char *email = enr_util_printf("%s@example.com", sb->sma_owner_email);
		free(sb->sma_owner_email);
		sb->sma_owner_email = email;
	}
	for (int v = 0; v < SB_N_VENDORS; v++)
		if ((v == SB_TESLA || v == SB_SMA || v == SB_ENPHASE || v == SB_DERAPI) &&
		    (!sb->clients[v].id || !sb->clients[v].secret))
			return ENR_E_NOMEM;
	if (!sb->enphase_api_key || !sb->solaredge_key || !sb->solaredge_company_key ||
	    !sb->solaredge_account_key || !sb->solis_key_id || !sb->solis_company_key_id ||
	    !sb->solis_secret || !sb->sma_owner_email || !sb->relay_secret || !sb->flow_id ||
	    !sb->program_id)
		return ENR_E_NOMEM;
	return 0;
}

/* The Enphase partner's tokens: they name the sandbox's URL (iss). */
static int make_partner(struct enr_sandbox *sb)
{
	struct sb_tokens partner = {0};
	struct sb_grant g = {0};
	int rc;

	g.vendor = SB_ENPHASE;
	g.client_id = sb->clients[SB_ENPHASE].id;
	g.account = ENPHASE_PARTNER;
	g.scope = "read write";
	g.refresh = true;
	g.refresh_ttl = enr_sandbox__refresh_ttl(sb, SB_ENPHASE);
	rc = enr_sandbox__issue(sb, &partner, &g);
	if (rc < 0)
		return rc;
	sb->enphase_partner_access = partner.access;
	sb->enphase_partner_refresh = partner.refresh;
	partner.access = partner.refresh = NULL;
	enr_sandbox__tokens_done(&partner);
	return 0;
}

static int listen_address(struct sockaddr_storage *addr, const char *address, unsigned port,
                          char *host, size_t host_size)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;

	memset(addr, 0, sizeof(*addr));
	if (!address || strcmp(address, "localhost") == 0)
		address = "127.0.0.1";
	if (port > 65535)
		return enr_error_set(ENR_E_USAGE, "port %u is out of range", port);
	if (inet_pton(AF_INET, address, &in4->sin_addr) == 1) {
		if ((ntohl(in4->sin_addr.s_addr) >> 24) != 127)
			goto not_loopback;
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		snprintf(host, host_size, "%s", address);
		return 0;
	}
	if (inet_pton(AF_INET6, address, &in6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			goto not_loopback;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		snprintf(host, host_size, "[::1]");
		return 0;
	}
not_loopback:
	return enr_error_set(ENR_E_USAGE,
	                     "the sandbox listens only on loopback (127.0.0.1 or ::1), not '%s'",
	                     address);
}

int enr_sandbox_start(struct enr_sandbox **out, const struct enr_sandbox_options *options)
{
	static const struct enr_sandbox_options no_options;
	const struct enr_sandbox_options *o = options ? options : &no_options;
	struct enr_sandbox *sb = NULL;
	struct sockaddr_storage addr;
	struct enr_relay_options relay_options = {0};
	const union MHD_DaemonInfo *info;
	pthread_condattr_t attr;
	char host[64], relay_url[128];
	int rc;

	*out = NULL;
	rc = listen_address(&addr, o->address, o->port, host, sizeof(host));
	if (rc < 0)
		return rc;
	sb = calloc(1, sizeof(*sb));
	if (!sb)
		return enr_error_set(ENR_E_NOMEM, NULL);
	pthread_mutex_init(&sb->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&sb->wake, &attr);
	pthread_condattr_destroy(&attr);
	sb->latency_ms = o->latency_ms > 0 ? o->latency_ms : 0;
	for (int v = 0; v < SB_N_PREFIXES; v++)
		sb->vendor_latency_ms[v] = -1;
	sb->refresh_grace = o->refresh_grace > 0 ? o->refresh_grace : 0;
	sb->code_ttl_ms = o->code_ttl_ms > 0 ? o->code_ttl_ms : DEFAULT_CODE;
	sb->sma_accept_ms = o->sma_accept_ms ? o->sma_accept_ms : DEFAULT_SMA;
	sb->stall_ms = o->stall_ms > 0 ? o->stall_ms : DEFAULT_STALL;
	sb->seq = 1;
	if (o->seed) {
		char text[64];
		int n = snprintf(text, sizeof(text), "derenroll-sandbox-seed:%llu", o->seed);
		EVP_Digest(text, (size_t)n, sb->seed, NULL, EVP_sha256(), NULL);
	} else if ((rc = enr_util_random(sb->seed, sizeof(sb->seed))) < 0) {
		goto out;
	}
	if ((rc = enr_util_random(sb->jwt_key, sizeof(sb->jwt_key))) < 0)
		goto out;
	sb->catalog = o->catalog;
	if (!sb->catalog) {
		rc = enr_catalog_load(&sb->own_catalog, NULL);
		if (rc < 0)
			goto out;
		sb->catalog = sb->own_catalog;
	}
	if ((rc = enr_sandbox__ring_init(&sb->codes, SB_MAX_CODES, free)) < 0 ||
	    (rc = enr_sandbox__ring_init(&sb->refresh, SB_MAX_REFRESH, free)) < 0 ||
	    (rc = enr_sandbox__ring_init(&sb->pending, SB_MAX_PENDING, enr_sandbox__pending_free)) <
	        0 ||
	    (rc = enr_sandbox__ring_init(&sb->bc, SB_MAX_BC, enr_sandbox__sma_bc_free)) < 0 ||
	    (rc = enr_sandbox__ring_init(&sb->revoked, SB_MAX_REVOKED, free)) < 0 ||
	    (rc = enr_sandbox__ring_init(&sb->flows, SB_MAX_FLOWS, enr_sandbox__flow_free)) < 0 ||
	    (rc = enr_sandbox__ring_init(&sb->sessions, SB_MAX_SESSIONS,
	                                 enr_sandbox__session_free)) < 0 ||
	    (rc = enr_sandbox__ring_init(&sb->enrollments, SB_MAX_ENROLLMENTS,
	                                 enr_sandbox__enrollment_free)) < 0)
		goto out;

	if ((rc = make_keys(sb)) < 0)
		goto out;
	relay_options.secret = sb->relay_secret;
	relay_options.catalog = sb->catalog;
	/* The Join page loads the sandbox's stand-in widget (same origin). */
	relay_options.join_script_url = "/derapi/join/derapi-join.js";
	/* One client address (loopback) plays every phone: no rate limit to speak of. */
	relay_options.rate_burst = 1000000;
	relay_options.rate_per_second = 1000000;
	if ((rc = enr_relay_new(&sb->relay, &relay_options)) < 0)
		goto out;
	if (pthread_create(&sb->timer, NULL, timer_main, sb) != 0) {
		rc = enr_error_set(ENR_E_NOMEM, "cannot start the sandbox's timer thread");
		goto out;
	}
	sb->timer_started = true;

	/* A thread pool and suspend/resume: no request holds a thread while it
	 * waits (latency, stalls, the relay's long polls). */
	sb->daemon = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
	        MHD_USE_AUTO | (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
	    (uint16_t)o->port, NULL, NULL, on_request, sb,
	    /* First, or libmicrohttpd prints to stderr (over the --demo screen). */
	    MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, sb, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, sb,
	    MHD_OPTION_THREAD_POOL_SIZE, 4u, MHD_OPTION_CONNECTION_LIMIT, 1024u,
	    MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_END);
	if (!sb->daemon) {
		rc = enr_error_set(ENR_E_IO, "the sandbox cannot listen on %s port %u (in use?)",
		                   host, o->port);
		goto out;
	}
	info = MHD_get_daemon_info(sb->daemon, MHD_DAEMON_INFO_BIND_PORT);
	sb->port = info ? info->port : o->port;
	snprintf(sb->url, sizeof(sb->url), "http://%s:%u", host, sb->port);
	snprintf(relay_url, sizeof(relay_url), "%s/relay", sb->url);
	if ((rc = enr_relay_set_public_url(sb->relay, relay_url)) < 0)
		goto out;
	/* The relay's Join proxy signs in to this Derapi, as a company's would. */
	if ((rc = enr_sandbox_config(&sb->relay_config, sb)) < 0 ||
	    (rc = enr_relay_set_derapi(sb->relay, sb->catalog, sb->relay_config)) < 0)
		goto out;
	pthread_mutex_lock(&sb->lock);
	rc = make_partner(sb);
	pthread_mutex_unlock(&sb->lock);
	if (rc < 0)
		goto out;
	enr_log_debug("sandbox: serving on %s", sb->url);
	*out = sb;
	sb = NULL;
out:
	enr_sandbox_stop(sb);
	return rc;
}

void enr_sandbox_stop(struct enr_sandbox *sb)
{
	if (!sb)
		return;
	pthread_mutex_lock(&sb->lock);
	sb->stopping = true;
	pthread_cond_broadcast(&sb->wake);
	pthread_mutex_unlock(&sb->lock);
	/* MHD_stop_daemon() must find no suspended connection: the relay answers
	 * its polls, the timer thread resumes every delayed answer as it ends. */
	if (sb->relay)
		enr_relay_quiesce(sb->relay);
	if (sb->timer_started)
		pthread_join(sb->timer, NULL);
	if (sb->daemon)
		MHD_stop_daemon(sb->daemon);
	enr_relay_free(sb->relay);
	enr_config_free(sb->relay_config);
	enr_sandbox__ring_done(&sb->codes);
	enr_sandbox__ring_done(&sb->refresh);
	enr_sandbox__ring_done(&sb->pending);
	enr_sandbox__ring_done(&sb->bc);
	enr_sandbox__ring_done(&sb->revoked);
	enr_sandbox__ring_done(&sb->flows);
	enr_sandbox__ring_done(&sb->sessions);
	enr_sandbox__ring_done(&sb->enrollments);
	for (int v = 0; v < SB_N_VENDORS; v++) {
		free(sb->clients[v].id);
		free(sb->clients[v].secret);
	}
	free(sb->enphase_api_key);
	free(sb->solaredge_key);
	free(sb->solaredge_company_key);
	free(sb->solaredge_account_key);
	free(sb->solis_key_id);
	free(sb->solis_company_key_id);
	free(sb->solis_secret);
	free(sb->sma_owner_email);
	free(sb->enphase_partner_access);
	free(sb->enphase_partner_refresh);
	free(sb->relay_secret);
	free(sb->flow_id);
	free(sb->program_id);
	enr_catalog_free(sb->own_catalog);
	pthread_cond_destroy(&sb->wake);
	pthread_mutex_destroy(&sb->lock);
	free(sb);
}

const char *enr_sandbox_url(const struct enr_sandbox *sb)
{
	return sb->url;
}

unsigned enr_sandbox_port(const struct enr_sandbox *sb)
{
	return sb->port;
}

/* ---- what it tells its users ---- */

struct config_value {
	const char *section, *key;
	char *value;
};

/* The vendor's issuer with `path` after it, malloc'd. */
static char *issuer_url(const struct enr_sandbox *sb, int vendor, const char *path)
{
	char iss[128];

	enr_sandbox__issuer(sb, vendor, iss, sizeof(iss));
	return enr_util_printf("%s%s", iss, path);
}

int enr_sandbox_config(struct enr_config **out, const struct enr_sandbox *sb)
{
	const char *u = sb->url;
	struct config_value values[] = {
	    {"vendor.tesla", "authorize_url", enr_util_printf("%s/tesla/oauth2/v3/authorize", u)},
	    {"vendor.tesla", "token_url", enr_util_printf("%s/tesla/oauth2/v3/token", u)},
	    {"vendor.tesla", "api_url", enr_util_printf("%s/tesla", u)},
	    {"vendor.tesla", "api_url_eu", enr_util_printf("%s/tesla/eu", u)},
	    {"vendor.tesla", "api_url_cn", enr_util_printf("%s/tesla/cn", u)},
	    {"vendor.tesla", "public_key_url",
	     enr_util_printf("%s/tesla/_domains/{domain}/.well-known/appspecific/"
	                     "com.tesla.3p.public-key.pem",
	                     u)},
	    {"vendor.tesla", "client_id", strdup(sb->clients[SB_TESLA].id)},
	    {"vendor.tesla", "domain", strdup("derenroll-sandbox.example")},
	    {"vendor.tesla", "regions", strdup("na eu")},
	    {"vendor.tesla", "client_secret", strdup(sb->clients[SB_TESLA].secret)},
	    {"vendor.tesla", "redirect_uri", enr_util_printf("%s/relay/callback", u)},
	    {"vendor.tesla", "issuer", issuer_url(sb, SB_TESLA, "")},
	    {"vendor.tesla", "jwks_url", issuer_url(sb, SB_TESLA, "/discovery/keys")},
	    {"vendor.sma", "issuer", issuer_url(sb, SB_SMA, "")},
	    {"vendor.enphase", "issuer", issuer_url(sb, SB_ENPHASE, "")},
	    {"vendor.sma", "authorize_url", enr_util_printf("%s/sma/oauth2/auth", u)},
	    {"vendor.sma", "token_url", enr_util_printf("%s/sma/oauth2/token", u)},
	    {"vendor.sma", "api_url", enr_util_printf("%s/sma", u)},
	    {"vendor.sma", "bc_url", enr_util_printf("%s/sma", u)},
	    {"vendor.sma", "client_id", strdup(sb->clients[SB_SMA].id)},
	    {"vendor.sma", "client_secret", strdup(sb->clients[SB_SMA].secret)},
	    {"vendor.sma", "redirect_uri", enr_util_printf("%s/relay/callback", u)},
	    {"vendor.enphase", "authorize_url", enr_util_printf("%s/enphase/oauth/authorize", u)},
	    {"vendor.enphase", "token_url", enr_util_printf("%s/enphase/oauth/token", u)},
	    {"vendor.enphase", "api_url", enr_util_printf("%s/enphase", u)},
	    {"vendor.enphase", "redirect_uri", enr_util_printf("%s/enphase/oauth/redirect_uri", u)},
	    {"vendor.enphase", "client_id", strdup(sb->clients[SB_ENPHASE].id)},
	    {"vendor.enphase", "client_secret", strdup(sb->clients[SB_ENPHASE].secret)},
	    {"vendor.enphase", "api_key", strdup(sb->enphase_api_key)},
	    {"vendor.solaredge", "api_url", enr_util_printf("%s/solaredge", u)},
	    {"vendor.solaredge", "api_key", strdup(sb->solaredge_company_key)},
	    {"vendor.solaredge", "account_key", strdup(sb->solaredge_account_key)},
	    {"vendor.solis", "api_url", enr_util_printf("%s/solis", u)},
	    {"vendor.solis", "key_id", strdup(sb->solis_company_key_id)},
	    {"vendor.solis", "key_secret", strdup(sb->solis_secret)},
	    {"derapi", "auth_url", enr_util_printf("%s/derapi/oauth2/token", u)},
	    {"derapi", "api_url", enr_util_printf("%s/derapi", u)},
	    {"derapi", "client_id", strdup(sb->clients[SB_DERAPI].id)},
	    {"derapi", "client_secret", strdup(sb->clients[SB_DERAPI].secret)},
	    {"derapi", "flow_id", strdup(sb->flow_id)},
	    {"derapi", "program_id", strdup(sb->program_id)},
	    {"derapi", "join_script_url", enr_util_printf("%s/derapi/join/derapi-join.js", u)},
	    {"relay", "url", enr_util_printf("%s/relay", u)},
	    {"relay", "secret", strdup(sb->relay_secret)},
	};
	static const int stored[] = {SB_TESLA, SB_SMA, SB_ENPHASE};
	struct enr_config *cfg = NULL;
	int rc = enr_config_new(&cfg);

	*out = NULL;
	/* The company's app credentials stored at Derapi, for Join Flows. */
	for (size_t i = 0; rc == 0 && i < ENR_ARRAY_SIZE(stored); i++) {
		char id[40], section[32];
		enr_sandbox__credentials_id(sb, stored[i], id, sizeof(id));
		snprintf(section, sizeof(section), "vendor.%s", enr_sandbox__vendor_id(stored[i]));
		rc = enr_config_set(cfg, section, "credentials_id", id);
	}
	for (size_t i = 0; i < ENR_ARRAY_SIZE(values); i++) {
		if (rc == 0 && !values[i].value)
			rc = enr_error_set(ENR_E_NOMEM, NULL);
		if (rc == 0)
			rc = enr_config_set(cfg, values[i].section, values[i].key, values[i].value);
		enr_util_free_secret(values[i].value);
	}
	if (rc < 0) {
		enr_config_free(cfg);
		return rc;
	}
	*out = cfg;
	return 0;
}

int enr_sandbox_write_config(const struct enr_sandbox *sb, const char *path)
{
	struct enr_config *cfg = NULL;
	int rc = enr_sandbox_config(&cfg, sb);

	if (rc == 0)
		rc = enr_config_write(cfg, path);
	enr_config_free(cfg);
	return rc;
}

/* JSON with ", " and ": " between members, as the documented line shows. */
static void write_json(FILE *f, json_object *obj)
{
	bool first = true;

	switch (json_object_get_type(obj)) {
	case json_type_object:
		fputc('{', f);
		json_object_object_foreach(obj, key, value)
		{
			json_object *name = json_object_new_string(key);
			fprintf(f, "%s%s: ", first ? "" : ", ",
			        json_object_to_json_string_ext(
			            name, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
			json_object_put(name);
			write_json(f, value);
			first = false;
		}
		fputc('}', f);
		break;
	case json_type_array:
		fputc('[', f);
		for (size_t i = 0; i < json_object_array_length(obj); i++) {
			fputs(i ? ", " : "", f);
			write_json(f, json_object_array_get_idx(obj, i));
		}
		fputc(']', f);
		break;
	default:
		fputs(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
		                                              JSON_C_TO_STRING_NOSLASHESCAPE),
		      f);
	}
}

static json_object *credentials(const struct enr_sandbox *sb)
{
	struct sb_site sites[SB_MAX_SITES];
	json_object *c = json_object_new_object(), *o, *ids;
	size_t n;

	o = json_object_new_object();
	json_object_object_add(o, "api_key", json_object_new_string(sb->solaredge_key));
	json_object_object_add(c, "solaredge", o);
	o = json_object_new_object();
	json_object_object_add(o, "key_id", json_object_new_string(sb->solis_key_id));
	json_object_object_add(o, "key_secret", json_object_new_string(sb->solis_secret));
	json_object_object_add(c, "solis", o);
	o = json_object_new_object();
	json_object_object_add(o, "access_token",
	                       json_object_new_string(sb->enphase_partner_access));
	json_object_object_add(o, "refresh_token",
	                       json_object_new_string(sb->enphase_partner_refresh));
	json_object_object_add(o, "api_key", json_object_new_string(sb->enphase_api_key));
	json_object_object_add(c, "enphase_partner", o);
	o = json_object_new_object();
	json_object_object_add(o, "owner_email", json_object_new_string(sb->sma_owner_email));
	json_object_object_add(c, "sma", o);
	o = json_object_new_object();
	json_object_object_add(o, "api_key", json_object_new_string(sb->solaredge_company_key));
	json_object_object_add(o, "account_key", json_object_new_string(sb->solaredge_account_key));
	ids = json_object_new_array();
	n = enr_sandbox__sites(sb, SB_SOLAREDGE, sb->solaredge_company_key, sites);
	for (size_t i = 0; i < n; i++)
		json_object_array_add(ids, json_object_new_int64(sites[i].num));
	json_object_object_add(o, "site_ids", ids);
	json_object_object_add(c, "solaredge_account", o);
	return c;
}

static int to_line(char **out, json_object *obj)
{
	size_t len = 0;
	FILE *mem;

	*out = NULL;
	mem = open_memstream(out, &len);
	if (!mem || !obj) {
		if (mem)
			fclose(mem);
		free(*out);
		*out = NULL;
		json_object_put(obj);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	write_json(mem, obj);
	fclose(mem);
	json_object_put(obj);
	return *out ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

int enr_sandbox_credentials_json(char **out, const struct enr_sandbox *sb)
{
	return to_line(out, credentials(sb));
}

int enr_sandbox_summary_json(char **out, const struct enr_sandbox *sb, const char *config_path)
{
	json_object *line = json_object_new_object();

	json_object_object_add(line, "url", json_object_new_string(sb->url));
	json_object_object_add(line, "config",
	                       config_path ? json_object_new_string(config_path) : NULL);
	json_object_object_add(line, "credentials", credentials(sb));
	return to_line(out, line);
}

/* ---- control endpoints ---- */

static const char *json_str(json_object *obj, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string)
	           ? json_object_get_string(v)
	           : NULL;
}

static bool json_long(json_object *obj, const char *key, long *out)
{
	json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_int))
		return false;
	*out = (long)json_object_get_int64(v);
	return true;
}

static void control_result(struct sb_resp *resp, int rc)
{
	json_object *obj = json_object_new_object();

	json_object_object_add(obj, "ok", json_object_new_boolean(rc == 0));
	if (rc < 0)
		json_object_object_add(obj, "error", json_object_new_string(enr_error_last()));
	enr_sandbox__json(resp, rc == 0 ? 200 : rc == ENR_E_NOTFOUND ? 404 : 400, obj);
}

static int control_fault(struct enr_sandbox *sb, json_object *body)
{
	const char *vendor = json_str(body, "vendor"), *kind = json_str(body, "kind");
	enum enr_sandbox_fault fault;
	long count = 1, retry_after = 0, ms = 0;
	int rc;

	if (kind && strcmp(kind, "latency") == 0) {
		if (!json_long(body, "ms", &ms))
			return enr_error_set(ENR_E_USAGE, "a latency fault needs \"ms\"");
		return enr_sandbox_set_latency(sb, vendor, ms);
	}
	rc = enr_sandbox_parse_fault(&fault, kind);
	if (rc < 0)
		return rc;
	json_long(body, "count", &count);
	json_long(body, "retry_after", &retry_after);
	return enr_sandbox_add_fault(sb, vendor, fault, (int)count, retry_after);
}

static int control_settings(struct enr_sandbox *sb, json_object *body)
{
	int rc = 0;

	json_object_object_foreach(body, key, value)
	{
		(void)value;
		long v;
		if (!json_long(body, key, &v))
			return enr_error_set(ENR_E_USAGE, "setting '%s' must be a number", key);
		rc = enr_sandbox_set(sb, key, v);
		if (rc < 0)
			return rc;
	}
	return rc;
}

void enr_sandbox__control(struct sb_req *req, struct sb_resp *resp)
{
	struct enr_sandbox *sb = req->sb;
	const char *rest = req->rest;
	bool post = strcmp(req->method, "POST") == 0;
	json_object *body = NULL;
	int rc;

	if (strcmp(req->method, "GET") == 0 && strcmp(rest, "/health") == 0) {
		control_result(resp, 0);
		return;
	}
	if (strcmp(req->method, "GET") == 0 && strcmp(rest, "/credentials") == 0) {
		enr_sandbox__json(resp, 200, credentials(sb));
		return;
	}
	if (strcmp(req->method, "DELETE") == 0 && strcmp(rest, "/faults") == 0) {
		enr_sandbox_clear_faults(sb);
		control_result(resp, 0);
		return;
	}
	if (!post) {
		enr_sandbox__not_found(resp);
		return;
	}
	body = req->body_len ? enr_sandbox__body_json(req) : json_object_new_object();
	if (!body || !json_object_is_type(body, json_type_object)) {
		json_object_put(body);
		control_result(resp, enr_error_set(ENR_E_USAGE, "the body must be a JSON object"));
		return;
	}
	if (strcmp(rest, "/faults") == 0) {
		rc = control_fault(sb, body);
	} else if (strcmp(rest, "/settings") == 0) {
		rc = control_settings(sb, body);
	} else if (strcmp(rest, "/revoke") == 0) {
		const char *token = json_str(body, "token");
		rc = token ? enr_sandbox_revoke(sb, token)
		           : enr_sandbox_revoke_account(sb, json_str(body, "vendor"),
		                                        json_str(body, "account"));
	} else if (strcmp(rest, "/expire") == 0) {
		rc = enr_sandbox_expire(sb, json_str(body, "vendor"), json_str(body, "token"));
	} else if (strcmp(rest, "/sma/decide") == 0) {
		const char *decision = json_str(body, "decision");
		if (!decision || (strcmp(decision, "accept") && strcmp(decision, "decline")))
			rc = enr_error_set(ENR_E_USAGE, "decision must be accept or decline");
		else
			rc = enr_sandbox_sma_decide(sb, json_str(body, "login_hint"),
			                            strcmp(decision, "accept") == 0);
	} else {
		json_object_put(body);
		enr_sandbox__not_found(resp);
		return;
	}
	json_object_put(body);
	control_result(resp, rc);
}
