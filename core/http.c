#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/crypto.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/vendor.h"
#include "enr_build_config.h"
#include "http_internal.h"
#include "util.h"

#define USER_AGENT "derenroll/" ENR_VERSION
#define DETAIL_MAX 160

struct field {
	char *name;
	char *value;
	bool secret;
};

struct fields {
	struct field *v;
	size_t n;
};

struct enr_http_request {
	char *method;
	char *url;
	struct fields query;
	struct fields form;
	struct fields headers;
	char *body;
	size_t body_len;
	char *content_type;
	bool has_body;
	char *authorization; /* full header value; always a secret */
	long connect_ms;
	long total_ms;
	size_t max_body;
	bool token_call;
	const struct enr_vendor *vendor;
	char *endpoint;
};

struct settings {
	char *ca_file;
	long connect_ms;
	long total_ms;
	size_t max_body;
};

struct transfer {
	struct transfer *next;
	uint64_t id;
	CURL *easy;
	struct curl_slist *headers;
	char *postfields; /* may hold secrets: wiped on free */
	size_t postfields_len;
	char method[16]; /* a copy: the request may be freed once the transfer started */
	char errbuf[CURL_ERROR_SIZE];
	size_t body_cap;
	size_t max_body;
	long total_ms;
	bool too_large;
	struct enr_http_response *resp;
	enr_http_done_fn done;
	void *ctx;
	CURLcode result;
	bool cancelled;
};

/* A call made at the end of a step, after the answers' callbacks. */
struct deferred {
	struct deferred *next;
	uint64_t id;
	enr_http_deferred_fn fn;
	void *ctx;
};

struct sock {
	curl_socket_t fd;
	int what; /* CURL_POLL_IN, _OUT, _INOUT */
};

struct enr_http_multi {
	CURLM *cm;
	struct settings settings;
	struct transfer *running;  /* in curl */
	struct transfer *finished; /* out of curl, callback not called yet */
	struct deferred *deferred; /* in order */
	size_t n_running;
	uint64_t next_id;
	struct sock *socks;
	size_t n_socks;
	size_t cap_socks;
	bool timer_set;
	long long timer_deadline; /* monotonic ms */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int ensure_curl(void)
{
	pthread_once(&curl_once, curl_init);
	if (curl_init_result != CURLE_OK)
		return enr_error_set(ENR_E_NOMEM, "libcurl could not be initialised: %s",
		                     curl_easy_strerror(curl_init_result));
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- requests ---------------------------------------------------------- */

static void fields_free(struct fields *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->v[i].name);
		if (f->v[i].secret)
			enr_util_free_secret(f->v[i].value);
		else
			free(f->v[i].value);
	}
	free(f->v);
	f->v = NULL;
	f->n = 0;
}

/* Registers a secret and its percent-encoded form (which is what a URL or a
 * form body carries). */
static int add_secret(const char *value)
{
	char *encoded;
	int rc;

	if ((rc = enr_log_add_secret(value)) < 0)
		return rc;
	encoded = enr_util_urlencode(value);
	if (!encoded)
		return ENR_E_NOMEM;
	rc = enr_log_add_secret(encoded);
	enr_util_free_secret(encoded);
	return rc;
}

static int fields_add(struct fields *f, const char *name, const char *value, unsigned flags)
{
	struct field *grown;
	char *n = NULL, *v = NULL;
	int rc;

	if (flags & ENR_HTTP_SECRET && (rc = add_secret(value)) < 0)
		return rc;
	n = enr_util_strdup(name);
	v = enr_util_strdup(value);
	grown = n && v ? realloc(f->v, (f->n + 1) * sizeof(*f->v)) : NULL;
	if (!grown) {
		free(n);
		enr_util_free_secret(v);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	f->v = grown;
	f->v[f->n++] = (struct field){n, v, (flags & ENR_HTTP_SECRET) != 0};
	return 0;
}

int enr_http_request_new(struct enr_http_request **out, const char *method, const char *url)
{
	struct enr_http_request *req = calloc(1, sizeof(*req));

	*out = NULL;
	if (!req)
		return enr_error_set(ENR_E_NOMEM, NULL);
	req->url = enr_util_strdup(url);
	req->method = method ? enr_util_strdup(method) : NULL;
	if (!req->url || (method && !req->method)) {
		enr_http_request_free(req);
		return ENR_E_NOMEM;
	}
	*out = req;
	return 0;
}

void enr_http_request_free(struct enr_http_request *req)
{
	if (!req)
		return;
	free(req->method);
	free(req->url);
	fields_free(&req->query);
	fields_free(&req->form);
	fields_free(&req->headers);
	if (req->body)
		OPENSSL_clear_free(req->body, req->body_len);
	free(req->content_type);
	enr_util_free_secret(req->authorization);
	free(req->endpoint);
	free(req);
}

int enr_http_request_add_query(struct enr_http_request *req, const char *name, const char *value,
                               unsigned flags)
{
	return fields_add(&req->query, name, value, flags);
}

static bool valid_header_name(const char *name)
{
	if (!*name)
		return false;
	for (const char *p = name; *p; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && !strchr("!#$%&'*+-.^_`|~", *p))
			return false;
	return true;
}

int enr_http_request_add_header(struct enr_http_request *req, const char *name, const char *value,
                                unsigned flags)
{
	if (!valid_header_name(name))
		return enr_error_set(ENR_E_USAGE, "'%s' is not a valid HTTP header name", name);
	if (strpbrk(value, "\r\n"))
		return enr_error_set(ENR_E_USAGE, "the value of header %s holds a line break",
		                     name);
	return fields_add(&req->headers, name, value, flags);
}

int enr_http_request_add_form(struct enr_http_request *req, const char *name, const char *value,
                              unsigned flags)
{
	if (req->has_body)
		return enr_error_set(ENR_E_USAGE, "a request has either form fields or a body");
	return fields_add(&req->form, name, value, flags);
}

int enr_http_request_set_body(struct enr_http_request *req, const char *content_type,
                              const void *body, size_t len)
{
	char *copy, *type = NULL;

	if (req->form.n)
		return enr_error_set(ENR_E_USAGE, "a request has either form fields or a body");
	copy = malloc(len + 1);
	if (!copy || (content_type && !(type = enr_util_strdup(content_type)))) {
		free(copy);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	if (len)
		memcpy(copy, body, len);
	copy[len] = '\0';
	if (req->body)
		OPENSSL_clear_free(req->body, req->body_len);
	free(req->content_type);
	req->body = copy;
	req->body_len = len;
	req->content_type = type;
	req->has_body = true;
	return 0;
}

static int set_authorization(struct enr_http_request *req, char *value)
{
	int rc;

	if (!value)
		return ENR_E_NOMEM;
	if ((rc = enr_log_add_secret(value)) < 0) {
		enr_util_free_secret(value);
		return rc;
	}
	enr_util_free_secret(req->authorization);
	req->authorization = value;
	return 0;
}

int enr_http_request_set_basic(struct enr_http_request *req, const char *user, const char *secret)
{
	char *pair = NULL, *encoded = NULL;
	int rc;

	if ((rc = enr_log_add_secret(secret)) < 0)
		return rc;
	pair = enr_util_printf("%s:%s", user, secret);
	if (!pair)
		return ENR_E_NOMEM;
	encoded = enr_util_base64_encode(pair, strlen(pair), false);
	enr_util_free_secret(pair);
	if (!encoded)
		return ENR_E_NOMEM;
	rc = enr_log_add_secret(encoded);
	if (rc == 0)
		rc = set_authorization(req, enr_util_printf("Basic %s", encoded));
	enr_util_free_secret(encoded);
	return rc;
}

int enr_http_request_set_bearer(struct enr_http_request *req, const char *token)
{
	int rc = enr_log_add_secret(token);

	if (rc < 0)
		return rc;
	return set_authorization(req, enr_util_printf("Bearer %s", token));
}

void enr_http_request_set_timeouts(struct enr_http_request *req, long connect_ms, long total_ms)
{
	req->connect_ms = connect_ms > 0 ? connect_ms : 0;
	req->total_ms = total_ms > 0 ? total_ms : 0;
}

void enr_http_request_set_max_body(struct enr_http_request *req, size_t max)
{
	req->max_body = max;
}

void enr_http_request_set_token_call(struct enr_http_request *req, bool token_call)
{
	req->token_call = token_call;
}

int enr_http_request_set_vendor(struct enr_http_request *req, const struct enr_vendor *vendor,
                                const char *endpoint)
{
	char *copy = NULL;

	if (endpoint && !(copy = enr_util_strdup(endpoint)))
		return ENR_E_NOMEM;
	free(req->endpoint);
	req->endpoint = copy;
	req->vendor = vendor;
	return 0;
}

/* ---- URLs -------------------------------------------------------------- */

/* The URL up to its query or fragment: what may be shown when it cannot be parsed. */
static char *url_prefix(const char *url)
{
	return enr_util_printf("%.*s", (int)strcspn(url, "?#"), url);
}

char *enr_http__safe_url(const char *url)
{
	CURLU *u = curl_url();
	char *parsed = NULL, *copy;

	if (!u)
		return url_prefix(url);
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &parsed, 0) != CURLUE_OK) {
		curl_url_cleanup(u);
		return url_prefix(url);
	}
	curl_url_cleanup(u);
	copy = enr_util_strdup(parsed);
	curl_free(parsed);
	return copy;
}

bool enr_http__is_loopback_host(const char *host)
{
	char buf[INET6_ADDRSTRLEN + 2];
	struct in6_addr a6;
	struct in_addr a4;
	size_t len = strlen(host);

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (host[0] != '[' || len < 3 || len - 2 >= sizeof(buf) || host[len - 1] != ']')
		return false;
	memcpy(buf, host + 1, len - 2);
	buf[len - 2] = '\0';
	if (inet_pton(AF_INET6, buf, &a6) != 1)
		return false;
	if (IN6_IS_ADDR_LOOPBACK(&a6))
		return true;
	return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
}

/* Checks a URL; `who` prefixes messages. Sets *loopback. */
static int check_url(const char *url, const char *who, bool *loopback)
{
	CURLU *u = NULL;
	char *scheme = NULL, *host = NULL, *shown = NULL;
	int rc = 0;

	*loopback = false;
	if ((rc = ensure_curl()) < 0)
		return rc;
	u = curl_url();
	if (!u)
		return enr_error_set(ENR_E_NOMEM, NULL);
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		shown = url_prefix(url);
		rc = enr_error_set(ENR_E_MISCONFIGURED, "%s%s'%s' is not a valid URL",
		                   who ? who : "", who ? ": " : "", shown ? shown : "");
		goto out;
	}
	*loopback = enr_http__is_loopback_host(host);
	if (strcasecmp(scheme, "https") == 0 || (strcasecmp(scheme, "http") == 0 && *loopback))
		goto out;
	if (strcasecmp(scheme, "http") == 0)
		rc = enr_error_set(ENR_E_MISCONFIGURED,
		                   "%s%srefusing plain http:// to %s: use https:// (plain http is "
		                   "only allowed to 127.0.0.1, ::1 and localhost)",
		                   who ? who : "", who ? ": " : "", host);
	else
		rc = enr_error_set(ENR_E_MISCONFIGURED,
		                   "%s%srefusing a %s:// URL for %s: only https:// is supported",
		                   who ? who : "", who ? ": " : "", scheme, host);
out:
	curl_free(scheme);
	curl_free(host);
	free(shown);
	curl_url_cleanup(u);
	return rc;
}

int enr_http_check_url(const char *url)
{
	bool loopback;
	return check_url(url, NULL, &loopback);
}

/*
 * `prefix`, then every field as name=value (both percent-encoded), the first
 * after `first_sep` (none when '\0'), the others after '&'. malloc'd; may hold
 * secrets.
 */
static char *encode_fields(const char *prefix, char first_sep, const struct fields *f,
                           size_t *len_out)
{
	size_t len = strlen(prefix) + 2;
	char *out, *o;

	for (size_t i = 0; i < f->n; i++)
		len += 3 * (strlen(f->v[i].name) + strlen(f->v[i].value)) + 2;
	out = malloc(len);
	if (!out) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	o = out + sprintf(out, "%s", prefix);
	for (size_t i = 0; i < f->n; i++) {
		char *n = enr_util_urlencode(f->v[i].name);
		char *v = enr_util_urlencode(f->v[i].value);
		char sep = i ? '&' : first_sep;
		if (!n || !v) {
			free(n);
			enr_util_free_secret(v);
			enr_util_free_secret(out);
			return NULL;
		}
		if (sep)
			*o++ = sep;
		o += sprintf(o, "%s=%s", n, v);
		free(n);
		enr_util_free_secret(v);
	}
	if (len_out)
		*len_out = (size_t)(o - out);
	return out;
}

/* ---- settings ---------------------------------------------------------- */

#define MAX_WAIT_LIMIT 86400L /* [http] max_wait: a day at most */

long enr_http__max_wait_s(const struct enr_config *cfg)
{
	long max_wait = ENR_HTTP_DEFAULT_MAX_WAIT;

	if (enr_config_get_long(&max_wait, cfg, "http", "max_wait", ENR_HTTP_DEFAULT_MAX_WAIT, 1,
	                        MAX_WAIT_LIMIT) < 0)
		max_wait = ENR_HTTP_DEFAULT_MAX_WAIT;
	return max_wait;
}

static void settings_done(struct settings *s)
{
	free(s->ca_file);
	s->ca_file = NULL;
}

static int settings_load(struct settings *s, const struct enr_config *cfg)
{
	const char *ca = cfg ? enr_config_get(cfg, "http", "ca_file") : NULL;
	const char *cfg_path = cfg ? enr_config_path(cfg) : NULL;
	const char *slash = cfg_path ? strrchr(cfg_path, '/') : NULL;
	long connect_s, total_s, max_body, max_wait;
	int rc;

	memset(s, 0, sizeof(*s));
	if ((rc = enr_config_get_long(&connect_s, cfg, "http", "connect_timeout",
	                              ENR_HTTP_DEFAULT_CONNECT_TIMEOUT, 1, 600)) < 0 ||
	    (rc = enr_config_get_long(&total_s, cfg, "http", "timeout", ENR_HTTP_DEFAULT_TIMEOUT, 1,
	                              3600)) < 0 ||
	    (rc = enr_config_get_long(&max_body, cfg, "http", "max_body", ENR_HTTP_DEFAULT_MAX_BODY,
	                              1024, 1024L * 1024 * 1024)) < 0 ||
	    (rc = enr_config_get_long(&max_wait, cfg, "http", "max_wait", ENR_HTTP_DEFAULT_MAX_WAIT,
	                              1, MAX_WAIT_LIMIT)) < 0)
		return rc;
	s->connect_ms = connect_s * 1000;
	s->total_ms = total_s * 1000;
	s->max_body = (size_t)max_body;
	if (ca && ca[0]) {
		/* A relative ca_file is relative to the config file, as *_file secrets are. */
		if (ca[0] != '/' && slash)
			s->ca_file =
			    enr_util_printf("%.*s/%s", (int)(slash - cfg_path), cfg_path, ca);
		else
			s->ca_file = enr_util_strdup(ca);
		if (!s->ca_file)
			return ENR_E_NOMEM;
	}
	return 0;
}

/* ---- transfers --------------------------------------------------------- */

void enr_http_response_free(struct enr_http_response *resp)
{
	if (!resp)
		return;
	if (resp->body)
		OPENSSL_clear_free(resp->body, resp->body_len);
	free(resp->content_type);
	free(resp->message);
	free(resp->endpoint);
	free(resp->where);
	free(resp->location);
	enr_util_free_secret(resp->redirect_url);
	free(resp);
}

static void transfer_free(struct transfer *t)
{
	if (!t)
		return;
	if (t->easy)
		curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	if (t->postfields)
		OPENSSL_clear_free(t->postfields, t->postfields_len);
	enr_http_response_free(t->resp);
	free(t);
}

long enr_http__parse_retry_after(const char *value, long long now)
{
	char *end;
	long long when;
	long n;

	while (*value == ' ' || *value == '\t')
		value++;
	if (*value >= '0' && *value <= '9') {
		errno = 0;
		n = strtol(value, &end, 10);
		while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
			end++;
		if (*end)
			return -1;
		if (errno) /* more digits than a long holds */
			n = ENR_HTTP_MAX_RETRY_AFTER;
		return n < ENR_HTTP_MAX_RETRY_AFTER ? n : ENR_HTTP_MAX_RETRY_AFTER;
	}
	when = (long long)curl_getdate(value, NULL);
	if (when < 0)
		return -1;
	if (when <= now)
		return 0;
	return when - now < ENR_HTTP_MAX_RETRY_AFTER ? (long)(when - now)
	                                             : ENR_HTTP_MAX_RETRY_AFTER;
}

/* The value of header `name` in the header line `data` as a count: 1 and `*n`,
 * 0 when the line is that header but not a count, -1 when it is another header. */
static int header_count(const char *data, size_t len, const char *name, long *n)
{
	size_t nlen = name ? strlen(name) : 0;
	char value[32];
	size_t vlen;
	char *end;

	if (!nlen || len <= nlen || strncasecmp(data, name, nlen) != 0 || data[nlen] != ':')
		return -1;
	vlen = len - nlen - 1 < sizeof(value) - 1 ? len - nlen - 1 : sizeof(value) - 1;
	memcpy(value, data + nlen + 1, vlen);
	value[vlen] = '\0';
	enr_util_trim(value);
	*n = strtol(value, &end, 10);
	return end != value && !*end && *n >= 0;
}

/* A header in which the vendor reports what is left of one of its rate limits,
 * or the size of its window. */
static bool rate_header(struct enr_http_response *resp, const char *data, size_t len)
{
	const struct enr_vendor *v = resp->vendor;

	for (size_t i = 0; v && i < v->n_rate_limits; i++) {
		const struct enr_rate_limit *lim = &v->rate_limits[i];
		long *field = &resp->rate_remaining, n = 0;
		int found = header_count(data, len, lim->remaining_header, &n);

		if (found < 0) {
			field = &resp->rate_window;
			found = header_count(data, len, lim->limit_header, &n);
		}
		if (found < 0)
			continue;
		if (found > 0) {
			*field = n;
			resp->rate_limit = (int)i;
		}
		return true;
	}
	return false;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
	struct transfer *t = userp;
	size_t len = size * n;

	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		t->resp->retry_after = -1; /* a new answer (after a 100 Continue, a proxy's) */
		t->resp->rate_limit = -1;
		t->resp->rate_remaining = -1;
		t->resp->rate_window = -1;
	} else if (rate_header(t->resp, data, len)) {
		/* kept in resp->rate_remaining */
	} else if (len > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		char value[128];
		size_t vlen = len - 12 < sizeof(value) - 1 ? len - 12 : sizeof(value) - 1;
		memcpy(value, data + 12, vlen);
		value[vlen] = '\0';
		enr_util_trim(value);
		t->resp->retry_after = enr_http__parse_retry_after(value, (long long)time(NULL));
	}
	return len;
}

static size_t on_write(char *data, size_t size, size_t n, void *userp)
{
	struct transfer *t = userp;
	struct enr_http_response *r = t->resp;
	size_t len = size * n;

	if (len > t->max_body - r->body_len) {
		t->too_large = true;
		return 0;
	}
	if (r->body_len + len + 1 > t->body_cap) {
		size_t cap = t->body_cap ? t->body_cap : 4096;
		char *grown;
		while (cap < r->body_len + len + 1)
			cap *= 2;
		grown = malloc(cap);
		if (!grown)
			return 0;
		/* Not realloc: the old buffer may hold a secret and is wiped. */
		memcpy(grown, r->body, r->body_len + 1);
		OPENSSL_clear_free(r->body, t->body_cap ? t->body_cap : 1);
		r->body = grown;
		t->body_cap = cap;
	}
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	r->body[r->body_len] = '\0';
	return len;
}

static bool has_header(const struct enr_http_request *req, const char *name)
{
	for (size_t i = 0; i < req->headers.n; i++)
		if (strcasecmp(req->headers.v[i].name, name) == 0)
			return true;
	return false;
}

static int append_header(struct curl_slist **list, const char *name, const char *value)
{
	char *line = enr_util_printf("%s: %s", name, value);
	struct curl_slist *grown;

	if (!line)
		return ENR_E_NOMEM;
	grown = curl_slist_append(*list, line);
	/* curl copied it; the copy is freed (unwiped) with the list. */
	enr_util_free_secret(line);
	if (!grown)
		return enr_error_set(ENR_E_NOMEM, NULL);
	*list = grown;
	return 0;
}

static int build_headers(struct transfer *t, const struct enr_http_request *req)
{
	int rc = 0;

	for (size_t i = 0; i < req->headers.n && rc == 0; i++)
		rc = append_header(&t->headers, req->headers.v[i].name, req->headers.v[i].value);
	if (rc == 0 && req->authorization && !has_header(req, "Authorization"))
		rc = append_header(&t->headers, "Authorization", req->authorization);
	if (rc == 0 && !has_header(req, "Accept"))
		rc = append_header(&t->headers, "Accept", "application/json");
	if (rc == 0 && !has_header(req, "Content-Type") && (req->form.n || req->content_type))
		rc = append_header(&t->headers, "Content-Type",
		                   req->form.n ? "application/x-www-form-urlencoded"
		                               : req->content_type);
	/* No "Expect: 100-continue" round trip on larger bodies. */
	if (rc == 0 && !has_header(req, "Expect")) {
		struct curl_slist *grown = curl_slist_append(t->headers, "Expect:");
		if (!grown)
			return enr_error_set(ENR_E_NOMEM, NULL);
		t->headers = grown;
	}
	return rc;
}

static const char *vendor_name(const struct enr_vendor *vendor)
{
	return vendor ? vendor->name : NULL;
}

/* Creates the easy handle of a request; nothing is sent yet. */
static int transfer_new(struct transfer **out, const struct settings *s,
                        const struct enr_http_request *req)
{
	struct transfer *t = NULL;
	char *url = NULL;
	bool loopback, post;
	CURL *e;
	int rc;

	*out = NULL;
	if ((rc = check_url(req->url, vendor_name(req->vendor), &loopback)) < 0)
		return rc;
	t = calloc(1, sizeof(*t));
	if (!t || !(t->resp = calloc(1, sizeof(*t->resp))) || !(t->resp->body = calloc(1, 1))) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	t->resp->retry_after = -1;
	t->resp->rate_limit = -1;
	t->resp->rate_remaining = -1;
	t->resp->rate_window = -1;
	t->resp->vendor = req->vendor;
	t->resp->token_call = req->token_call;
	t->max_body = req->max_body ? req->max_body : s->max_body;
	t->total_ms = req->total_ms ? req->total_ms : s->total_ms;
	if ((req->endpoint && !(t->resp->endpoint = enr_util_strdup(req->endpoint))) ||
	    !(t->resp->where = enr_http__safe_url(req->url)) ||
	    !(url =
	          encode_fields(req->url, strchr(req->url, '?') ? '&' : '?', &req->query, NULL))) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	if ((rc = build_headers(t, req)) < 0)
		goto out;
	post = req->has_body || req->form.n;
	snprintf(t->method, sizeof(t->method), "%s",
	         req->method ? req->method
	         : post      ? "POST"
	                     : "GET");
	if (post && (strcmp(t->method, "GET") == 0 || strcmp(t->method, "HEAD") == 0)) {
		rc = enr_error_set(ENR_E_USAGE, "a %s request cannot have a body", t->method);
		goto out;
	}
	if (req->form.n) {
		if (!(t->postfields = encode_fields("", '\0', &req->form, &t->postfields_len))) {
			rc = ENR_E_NOMEM;
			goto out;
		}
	} else if (req->has_body || strcmp(t->method, "POST") == 0 ||
	           strcmp(t->method, "PUT") == 0 || strcmp(t->method, "PATCH") == 0) {
		/* Always a body on POST, if only an empty one (Enphase's token call). */
		t->postfields_len = req->has_body ? req->body_len : 0;
		t->postfields = malloc(t->postfields_len + 1);
		if (!t->postfields) {
			rc = enr_error_set(ENR_E_NOMEM, NULL);
			goto out;
		}
		if (t->postfields_len)
			memcpy(t->postfields, req->body, t->postfields_len);
		t->postfields[t->postfields_len] = '\0';
	}

	e = t->easy = curl_easy_init();
	if (!e) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (s->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	                 req->connect_ms ? req->connect_ms : s->connect_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->total_ms);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max_body);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	if (loopback) /* a proxy's loopback is not ours */
		curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	if (strcmp(t->method, "GET") == 0) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(t->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (strcmp(t->method, "POST") != 0) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method);
	}
	if (t->postfields) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->postfields_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->postfields);
	}
	*out = t;
	t = NULL;
out:
	enr_util_free_secret(url);
	transfer_free(t);
	return rc;
}

/* "Tesla" or the URL's scheme://host/path when no vendor is named. */
static const char *who(const struct enr_http_response *resp)
{
	return resp->vendor ? resp->vendor->name : resp->where;
}

/* "[vendor.tesla] token_url", "[vendor.tesla]" or "the configured URL". */
static void setting_name(char *buf, size_t size, const struct enr_http_response *resp)
{
	if (resp->vendor && resp->endpoint)
		snprintf(buf, size, "[%s] %s", resp->vendor->config_section, resp->endpoint);
	else if (resp->vendor)
		snprintf(buf, size, "[%s]", resp->vendor->config_section);
	else
		snprintf(buf, size, "the configured URL");
}

static int transport_error(struct transfer *t, CURLcode cc)
{
	struct enr_http_response *r = t->resp;
	const char *detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(cc);
	const char *name = r->vendor ? r->vendor->name : "the server";
	char setting[96];

	setting_name(setting, sizeof(setting), r);
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s: cannot find %s (%s): check the internet connection, "
		                     "and %s if this persists",
		                     name, r->where, detail, setting);
	case CURLE_COULDNT_CONNECT:
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s: cannot connect to %s (%s): check the internet connection "
		                     "and try again",
		                     name, r->where, detail);
	case CURLE_OPERATION_TIMEDOUT:
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s did not answer in time at %s (%s): check the internet "
		                     "connection and try again",
		                     name, r->where, detail);
	case CURLE_FILESIZE_EXCEEDED:
		return enr_error_set(ENR_E_BADRESPONSE,
		                     "%s sent an answer larger than %zu bytes from %s: refused "
		                     "([http] max_body)",
		                     name, t->max_body, r->where);
	case CURLE_WRITE_ERROR:
		if (t->too_large)
			return transport_error(t, CURLE_FILESIZE_EXCEEDED);
		return enr_error_set(ENR_E_NOMEM, NULL);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s: the TLS certificate of %s cannot be verified (%s): a "
		                     "network that intercepts HTTPS (hotel, captive portal) needs "
		                     "signing in first; a private CA goes in [http] ca_file",
		                     name, r->where, detail);
	case CURLE_SSL_CACERT_BADFILE:
		return enr_error_set(
		    ENR_E_MISCONFIGURED,
		    "cannot use the CA file of [http] ca_file (%s): fix or remove it", detail);
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "%s: the URL %s cannot be used (%s): check %s", name, r->where,
		                     detail, setting);
	case CURLE_ABORTED_BY_CALLBACK:
		return enr_error_set(ENR_E_CANCELLED, NULL);
	case CURLE_OUT_OF_MEMORY:
		return enr_error_set(ENR_E_NOMEM, NULL);
	default:
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s: the connection to %s failed (%s): try again", name,
		                     r->where, detail);
	}
}

/* Fills the response from a finished easy handle. */
static void transfer_finish(struct transfer *t, CURLcode cc)
{
	struct enr_http_response *r = t->resp;
	char *content_type = NULL, *location = NULL;

	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r->status);
	if (cc != CURLE_OK) {
		r->status = 0;
		r->error = transport_error(t, cc);
		r->message = enr_util_strdup(enr_error_last());
		enr_log_debug("http: %s %s: %s", t->method, r->where, enr_error_last());
		return;
	}
	if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &content_type) == CURLE_OK &&
	    content_type)
		r->content_type = enr_util_strdup(content_type);
	if (r->status >= 300 && r->status < 400 &&
	    curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_URL, &location) == CURLE_OK && location) {
		r->location = enr_http__safe_url(location);
		r->redirect_url = enr_util_strdup(location);
	}
	enr_log_debug("http: %s %s: HTTP %ld, %zu bytes", t->method, r->where, r->status,
	              r->body_len);
}

int enr_http_perform(struct enr_http_response **out, const struct enr_config *cfg,
                     const struct enr_http_request *req)
{
	struct settings s;
	struct transfer *t = NULL;
	int rc;

	*out = NULL;
	if ((rc = ensure_curl()) < 0)
		return rc;
	if ((rc = settings_load(&s, cfg)) < 0)
		goto out;
	if ((rc = transfer_new(&t, &s, req)) < 0)
		goto out;
	transfer_finish(t, curl_easy_perform(t->easy));
	if (t->resp->error) {
		rc = enr_error_set(t->resp->error, "%s", t->resp->message ? t->resp->message : "");
		goto out;
	}
	*out = t->resp;
	t->resp = NULL;
out:
	transfer_free(t);
	settings_done(&s);
	return rc;
}

/* ---- classification ---------------------------------------------------- */

struct detail {
	char oauth_error[64];  /* the OAuth "error" code, or "" */
	char text[DETAIL_MAX]; /* ": <error>: <description>" or "", for messages */
};

/* Pulls what a person can use out of an error body: the OAuth error and
 * description, or a JSON "message" / "detail" / "title". */
static void read_detail(struct detail *d, const struct enr_http_response *resp)
{
	static const char *const keys[] = {"error_description", "message", "detail", "title",
	                                   "error_message"};
	json_object *root = NULL, *v;
	const char *error = NULL, *desc = NULL;

	memset(d, 0, sizeof(*d));
	if (resp->body_len == 0 || resp->body_len > 64 * 1024)
		return;
	root = json_tokener_parse(resp->body);
	if (!root || !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return;
	}
	/* Empty strings say nothing (Tesla sends "error_description": ""). */
	if (json_object_object_get_ex(root, "error", &v) &&
	    json_object_is_type(v, json_type_string) && json_object_get_string_len(v))
		error = json_object_get_string(v);
	for (size_t i = 0; i < ENR_ARRAY_SIZE(keys) && !desc; i++)
		if (json_object_object_get_ex(root, keys[i], &v) &&
		    json_object_is_type(v, json_type_string) && json_object_get_string_len(v))
			desc = json_object_get_string(v);
	if (error)
		snprintf(d->oauth_error, sizeof(d->oauth_error), "%s", error);
	if (error && desc)
		snprintf(d->text, sizeof(d->text), ": %s: %s", error, desc);
	else if (error || desc)
		snprintf(d->text, sizeof(d->text), ": %s", error ? error : desc);
	json_object_put(root);
}

void enr_http__retry_text(char *buf, size_t size, long wait_s, long long now)
{
	time_t when, today = (time_t)now;
	struct tm tm_when, tm_today;
	char clock[32];

	if (wait_s < 0) {
		snprintf(buf, size, "try again in a few minutes");
		return;
	}
	if (wait_s < 60) {
		snprintf(buf, size, "try again in %ld s", wait_s);
		return;
	}
	/* A wait of days is no time to name: the vendor is wrong, or down. */
	if (wait_s > 86400) {
		snprintf(buf, size, "try again tomorrow (the vendor asked to wait %ld days)",
		         wait_s / 86400);
		return;
	}
	when = (time_t)(now + wait_s + 59) / 60 * 60; /* the next whole minute */
	localtime_r(&when, &tm_when);
	localtime_r(&today, &tm_today);
	if (tm_when.tm_yday == tm_today.tm_yday && tm_when.tm_year == tm_today.tm_year)
		strftime(clock, sizeof(clock), "%H:%M", &tm_when);
	else
		strftime(clock, sizeof(clock), "%Y-%m-%d %H:%M", &tm_when);
	snprintf(buf, size, "try again after %s", clock);
}

/* OAuth token endpoint errors (RFC 6749 5.2 and the polling flows). */
static int classify_token_error(const struct enr_http_response *resp, const struct detail *d,
                                const char *setting)
{
	const char *code = d->oauth_error;
	const char *name = who(resp);

	/* A 403 there is the company's app too, unless the answer, JSON or not,
	 * speaks of the grant. */
	if (!code[0] && resp->status == 403 && resp->body && strstr(resp->body, "invalid_grant"))
		code = "invalid_grant";
	if (strcmp(code, "invalid_grant") == 0)
		return enr_error_set(
		    ENR_E_REJECTED,
		    "%s refused the authorization (HTTP %ld%s): it expired, was "
		    "revoked or was already used; the customer must authorize again",
		    name, resp->status, d->text);
	if (strcmp(code, "invalid_client") == 0 || strcmp(code, "unauthorized_client") == 0 ||
	    (!code[0] && (resp->status == 401 || resp->status == 403)))
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "%s refused the company's client ID or secret (HTTP %ld%s): "
		                     "check client_id and client_secret in [%s]",
		                     name, resp->status, d->text,
		                     resp->vendor ? resp->vendor->config_section : "config.ini");
	if (strcmp(code, "access_denied") == 0)
		return enr_error_set(ENR_E_DECLINED, "%s: the customer declined (HTTP %ld%s)", name,
		                     resp->status, d->text);
	if (strcmp(code, "authorization_pending") == 0 || strcmp(code, "slow_down") == 0)
		return enr_error_set(ENR_E_AGAIN, "%s: the customer has not answered yet", name);
	if (strcmp(code, "expired_token") == 0)
		return enr_error_set(ENR_E_EXPIRED,
		                     "%s: the request expired before the customer answered: start "
		                     "again",
		                     name);
	if (strcmp(code, "login_required") == 0 || strcmp(code, "consent_required") == 0 ||
	    strcmp(code, "interaction_required") == 0)
		return enr_error_set(ENR_E_REJECTED,
		                     "%s needs the customer to sign in again (HTTP %ld%s): "
		                     "re-authorize this system",
		                     name, resp->status, d->text);
	if (code[0] || resp->status == 400)
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "%s refused the token request (HTTP %ld%s): check %s and the "
		                     "redirect URI and scopes of the app",
		                     name, resp->status, d->text, setting);
	return 1; /* not a token error: classify as any answer */
}

int enr_http_classify(const struct enr_http_response *resp)
{
	const struct enr_guidance *g = NULL;
	const char *name = who(resp);
	char setting[96], retry[80];
	struct detail d;
	long status = resp->status;
	int rc;

	if (resp->error)
		return enr_error_set(resp->error, "%s", resp->message ? resp->message : "");
	if (status >= 200 && status < 300)
		return 0;
	setting_name(setting, sizeof(setting), resp);
	enr_http__retry_text(retry, sizeof(retry), resp->retry_after, (long long)time(NULL));
	read_detail(&d, resp);
	/* The vendor's own words first. A token call's 401 or 403 is about the
	 * company's app, not the customer: only text matches apply there. */
	if (resp->vendor)
		g = enr_vendor_guidance(resp->vendor, resp->token_call ? 0 : (int)status,
		                        resp->body);
	/* The guidance is the whole advice ("check this computer's clock"): a
	 * guess at when to try again would only mislead; the server's own
	 * Retry-After is worth adding. */
	if (g && g->error == ENR_E_TRANSIENT && resp->retry_after >= 0) {
		size_t len = strlen(g->message);
		retry[0] = (char)toupper((unsigned char)retry[0]);
		return enr_error_set(g->error, "%s%s %s.", g->message,
		                     len && g->message[len - 1] == '.' ? "" : ".", retry);
	}
	if (g)
		return enr_error_set(g->error, "%s", g->message);
	if (status == 429)
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s is limiting the rate of requests (HTTP 429): %s", name,
		                     retry);
	if (status >= 500 && status < 600)
		return enr_error_set(ENR_E_TRANSIENT, "%s had a server error (HTTP %ld%s): %s",
		                     name, status, d.text, retry);
	if (status == 408)
		return enr_error_set(ENR_E_TRANSIENT,
		                     "%s gave up waiting for the request (HTTP 408): try again",
		                     name);
	if (status >= 300 && status < 400)
		/* Where it points is the vendor's (or a proxy's) word, not an address
		 * to configure: only the vendor's documentation says that. */
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "%s answered %s with a redirect (HTTP %ld), which is not "
		                     "followed: check %s against the address in the vendor's "
		                     "documentation, or a proxy in between",
		                     name, resp->where, status, setting);
	if (resp->token_call &&
	    (status == 400 || status == 401 || status == 403 || d.oauth_error[0]) &&
	    (rc = classify_token_error(resp, &d, setting)) <= 0)
		return rc;
	if (status == 401)
		return enr_error_set(ENR_E_REJECTED,
		                     "%s refused the credentials (HTTP 401%s): refresh them or "
		                     "re-authorize this system with the customer",
		                     name, d.text);
	if (status == 403)
		return enr_error_set(ENR_E_REJECTED,
		                     "%s denied access (HTTP 403%s): the credentials lack a "
		                     "permission; re-authorize this system with the customer",
		                     name, d.text);
	if (status == 404 || status == 405 || status == 410)
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "%s has no such address: %s (HTTP %ld%s): check %s", name,
		                     resp->where, status, d.text, setting);
	if (status >= 400 && status < 500)
		return enr_error_set(ENR_E_MISCONFIGURED,
		                     "%s refused the request to %s (HTTP %ld%s): check %s", name,
		                     resp->where, status, d.text, setting);
	return enr_error_set(ENR_E_BADRESPONSE, "%s sent an unexpected HTTP %ld from %s", name,
	                     status, resp->where);
}

int enr_http_vendor_error(const struct enr_vendor *vendor, int status, const char *text,
                          int fallback, const char *fmt, ...)
{
	const struct enr_guidance *g = vendor ? enr_vendor_guidance(vendor, status, text) : NULL;
	va_list ap;

	if (g)
		return enr_error_set(g->error, "%s", g->message);
	va_start(ap, fmt);
	enr_error_setv(fallback, fmt, ap);
	va_end(ap);
	return fallback;
}

int enr_http_response_json(struct json_object **out, const struct enr_http_response *resp)
{
	json_tokener *tok = json_tokener_new();
	json_object *root = NULL;

	*out = NULL;
	if (!tok)
		return enr_error_set(ENR_E_NOMEM, NULL);
	root = json_tokener_parse_ex(tok, resp->body, (int)resp->body_len);
	if (!root || json_tokener_get_parse_end(tok) != resp->body_len) {
		json_object_put(root);
		json_tokener_free(tok);
		return enr_error_set(
		    ENR_E_BADRESPONSE,
		    "%s sent a malformed answer from %s (not JSON): try again later; "
		    "if it persists, the vendor's API may have changed",
		    who(resp), resp->where);
	}
	json_tokener_free(tok);
	*out = root;
	return 0;
}

int enr_http_badresponse(const struct enr_http_response *resp, const char *what)
{
	return enr_error_set(ENR_E_BADRESPONSE, "%s sent an unexpected answer from %s: %s",
	                     who(resp), resp->where, what);
}

/* ---- multi ------------------------------------------------------------- */

static struct sock *find_sock(struct enr_http_multi *m, curl_socket_t fd)
{
	for (size_t i = 0; i < m->n_socks; i++)
		if (m->socks[i].fd == fd)
			return &m->socks[i];
	return NULL;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct enr_http_multi *m = userp;
	struct sock *s = find_sock(m, fd);

	(void)easy;
	(void)socketp;
	if (what == CURL_POLL_REMOVE) {
		if (s)
			*s = m->socks[--m->n_socks];
		return 0;
	}
	if (!s) {
		if (m->n_socks == m->cap_socks) {
			size_t cap = m->cap_socks ? m->cap_socks * 2 : 8;
			struct sock *grown = realloc(m->socks, cap * sizeof(*grown));
			if (!grown)
				return -1;
			m->socks = grown;
			m->cap_socks = cap;
		}
		s = &m->socks[m->n_socks++];
		s->fd = fd;
	}
	s->what = what;
	return 0;
}

static int on_timer(CURLM *cm, long timeout_ms, void *userp)
{
	struct enr_http_multi *m = userp;

	(void)cm;
	m->timer_set = timeout_ms >= 0;
	if (m->timer_set)
		m->timer_deadline = now_ms() + timeout_ms;
	return 0;
}

int enr_http_multi_new(struct enr_http_multi **out, const struct enr_config *cfg)
{
	struct enr_http_multi *m = NULL;
	int rc;

	*out = NULL;
	if ((rc = ensure_curl()) < 0)
		return rc;
	m = calloc(1, sizeof(*m));
	if (!m)
		return enr_error_set(ENR_E_NOMEM, NULL);
	if ((rc = settings_load(&m->settings, cfg)) < 0) {
		enr_http_multi_free(m);
		return rc;
	}
	m->cm = curl_multi_init();
	if (!m->cm) {
		enr_http_multi_free(m);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	curl_multi_setopt(m->cm, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(m->cm, CURLMOPT_SOCKETDATA, m);
	curl_multi_setopt(m->cm, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(m->cm, CURLMOPT_TIMERDATA, m);
	m->next_id = 1;
	*out = m;
	return 0;
}

void enr_http_multi_free(struct enr_http_multi *multi)
{
	struct transfer *t, *next;

	if (!multi)
		return;
	for (t = multi->running; t; t = next) {
		next = t->next;
		curl_multi_remove_handle(multi->cm, t->easy);
		transfer_free(t);
	}
	for (t = multi->finished; t; t = next) {
		next = t->next;
		transfer_free(t);
	}
	while (multi->deferred) {
		struct deferred *d = multi->deferred;
		multi->deferred = d->next;
		free(d);
	}
	if (multi->cm)
		curl_multi_cleanup(multi->cm);
	free(multi->socks);
	settings_done(&multi->settings);
	free(multi);
}

int enr_http_multi_add(uint64_t *out, struct enr_http_multi *multi,
                       const struct enr_http_request *req, enr_http_done_fn done, void *ctx)
{
	struct transfer *t = NULL;
	CURLMcode mc;
	int rc;

	*out = 0;
	if ((rc = transfer_new(&t, &multi->settings, req)) < 0)
		return rc;
	t->id = multi->next_id++;
	t->done = done;
	t->ctx = ctx;
	mc = curl_multi_add_handle(multi->cm, t->easy);
	if (mc != CURLM_OK) {
		transfer_free(t);
		return enr_error_set(mc == CURLM_OUT_OF_MEMORY ? ENR_E_NOMEM : ENR_E_USAGE,
		                     "cannot start the transfer: %s", curl_multi_strerror(mc));
	}
	t->next = multi->running;
	multi->running = t;
	multi->n_running++;
	*out = t->id;
	return 0;
}

/* Unlinks the transfer with `id` from `*list`, or returns NULL. */
static struct transfer *unlink_id(struct transfer **list, uint64_t id)
{
	for (struct transfer **p = list; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct transfer *t = *p;
			*p = t->next;
			t->next = NULL;
			return t;
		}
	}
	return NULL;
}

int enr_http_multi_defer(uint64_t *out, struct enr_http_multi *multi, enr_http_deferred_fn fn,
                         void *ctx)
{
	struct deferred *d = calloc(1, sizeof(*d)), **tail = &multi->deferred;

	*out = 0;
	if (!d)
		return enr_error_set(ENR_E_NOMEM, NULL);
	d->id = ++multi->next_id;
	d->fn = fn;
	d->ctx = ctx;
	while (*tail)
		tail = &(*tail)->next;
	*tail = d;
	*out = d->id;
	return 0;
}

int enr_http_multi_cancel(struct enr_http_multi *multi, uint64_t id)
{
	struct transfer *t = unlink_id(&multi->running, id);

	for (struct deferred **p = &multi->deferred; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct deferred *d = *p;
			*p = d->next;
			free(d);
			return 0;
		}
	}

	if (t) {
		curl_multi_remove_handle(multi->cm, t->easy);
		multi->n_running--;
	} else {
		t = unlink_id(&multi->finished, id);
	}
	if (!t)
		return enr_error_set(ENR_E_NOTFOUND, "no transfer %llu is running",
		                     (unsigned long long)id);
	enr_log_debug("http: %s %s: cancelled", t->method, t->resp->where);
	transfer_free(t);
	return 0;
}

size_t enr_http_multi_running(const struct enr_http_multi *multi)
{
	size_t n = multi->n_running;

	for (const struct transfer *t = multi->finished; t; t = t->next)
		n++;
	for (const struct deferred *d = multi->deferred; d; d = d->next)
		n++;
	return n;
}

size_t enr_http_multi_poll_fds(const struct enr_http_multi *multi, struct pollfd *fds, size_t cap)
{
	for (size_t i = 0; i < multi->n_socks && i < cap; i++) {
		int what = multi->socks[i].what;
		fds[i].fd = multi->socks[i].fd;
		fds[i].events = (short)((what & CURL_POLL_IN ? POLLIN : 0) |
		                        (what & CURL_POLL_OUT ? POLLOUT : 0));
		fds[i].revents = 0;
	}
	return multi->n_socks;
}

int enr_http_multi_fdset(const struct enr_http_multi *multi, fd_set *read_set, fd_set *write_set,
                         fd_set *except_set, int *max_fd)
{
	for (size_t i = 0; i < multi->n_socks; i++) {
		int fd = multi->socks[i].fd;
		if (fd >= FD_SETSIZE)
			return enr_error_set(ENR_E_UNSUPPORTED,
			                     "socket %d does not fit in an fd_set: use poll", fd);
		if (multi->socks[i].what & CURL_POLL_IN)
			FD_SET(fd, read_set);
		if (multi->socks[i].what & CURL_POLL_OUT)
			FD_SET(fd, write_set);
		FD_SET(fd, except_set);
		if (fd > *max_fd)
			*max_fd = fd;
	}
	return 0;
}

long enr_http_multi_timeout_ms(const struct enr_http_multi *multi)
{
	long long left;

	if (multi->finished || multi->deferred)
		return 0;
	if (!multi->timer_set)
		return -1;
	left = multi->timer_deadline - now_ms();
	return left > 0 ? (long)left : 0;
}

/* Moves what curl finished from `running` to `finished`. */
static void collect_finished(struct enr_http_multi *m)
{
	struct transfer **tail = &m->finished;
	CURLMsg *msg;
	int left;

	while (*tail)
		tail = &(*tail)->next;
	while ((msg = curl_multi_info_read(m->cm, &left))) {
		struct transfer *t;
		CURLcode result = msg->data.result;
		CURL *easy = msg->easy_handle;
		char *priv = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		t = (struct transfer *)(void *)priv;
		curl_multi_remove_handle(m->cm, easy); /* msg is invalid from here */
		unlink_id(&m->running, t->id);
		m->n_running--;
		t->result = result;
		*tail = t;
		tail = &t->next;
	}
}

int enr_http_multi_step(struct enr_http_multi *multi)
{
	struct pollfd *fds = NULL;
	size_t n = multi->n_socks;
	int running, called = 0;

	if (n) {
		fds = calloc(n, sizeof(*fds));
		if (!fds)
			return enr_error_set(ENR_E_NOMEM, NULL);
		enr_http_multi_poll_fds(multi, fds, n);
		if (poll(fds, (nfds_t)n, 0) > 0) {
			for (size_t i = 0; i < n; i++) {
				int mask = 0;
				if (fds[i].revents & (POLLIN | POLLHUP))
					mask |= CURL_CSELECT_IN;
				if (fds[i].revents & POLLOUT)
					mask |= CURL_CSELECT_OUT;
				if (fds[i].revents & (POLLERR | POLLNVAL))
					mask |= CURL_CSELECT_ERR;
				if (mask)
					curl_multi_socket_action(multi->cm, fds[i].fd, mask,
					                         &running);
			}
		}
		free(fds);
	}
	if (multi->timer_set && now_ms() >= multi->timer_deadline) {
		multi->timer_set = false;
		curl_multi_socket_action(multi->cm, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	collect_finished(multi);
	/* One at a time: a callback may add or cancel transfers. */
	while (multi->finished) {
		struct transfer *t = multi->finished;
		struct enr_http_response *resp;

		multi->finished = t->next;
		transfer_finish(t, t->result);
		resp = t->resp;
		t->resp = NULL;
		t->done(resp, t->ctx);
		transfer_free(t);
		called++;
	}
	/* Then what the callbacks asked to do once all of them ran. */
	while (multi->deferred) {
		struct deferred *d = multi->deferred;
		multi->deferred = d->next;
		d->fn(d->ctx);
		free(d);
		called++;
	}
	return called;
}

int enr_http_multi_run_until_idle(struct enr_http_multi *multi)
{
	struct pollfd *fds = NULL;
	size_t cap = 0;
	int rc = 0;

	while (enr_http_multi_running(multi)) {
		size_t n = enr_http_multi_poll_fds(multi, fds, cap);
		long wait = enr_http_multi_timeout_ms(multi);

		if (n > cap) {
			struct pollfd *grown = realloc(fds, n * sizeof(*fds));
			if (!grown) {
				rc = enr_error_set(ENR_E_NOMEM, NULL);
				break;
			}
			fds = grown;
			cap = n;
			enr_http_multi_poll_fds(multi, fds, cap);
		}
		/* Never sleep long: a socket curl has not told us about yet must not
		 * hang the loop. */
		if (wait < 0 || wait > 1000)
			wait = 1000;
		if (poll(fds, (nfds_t)n, (int)wait) < 0 && errno != EINTR) {
			rc = enr_error_set_errno(ENR_E_IO, errno, "poll");
			break;
		}
		if ((rc = enr_http_multi_step(multi)) < 0)
			break;
		rc = 0;
	}
	free(fds);
	return rc;
}
