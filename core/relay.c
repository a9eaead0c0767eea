#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <json-c/json.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/log.h"
#include "derenroll/relay.h"
#include "derenroll/vendor.h"
#include "util.h"

/*
 * One lock guards everything below the relay; nothing blocks while holding
 * it. Long polls are suspended libmicrohttpd connections (no thread each):
 * a poll waits in `waiters`; a callback for its state, the timer thread
 * (deadline, expiry) or enr_relay_quiesce() takes it off that list and
 * resumes the connection outside the lock, and libmicrohttpd then calls the
 * handler again to answer.
 */

#define STATE_MIN           16
#define STATE_MAX           128
#define CODE_LEN            7
#define CODE_MIN            6
#define CODE_MAX            8
#define TARGET_MAX          2048
#define VENDOR_MAX          64
#define BODY_MAX            8192
#define QUERY_MAX           4096 /* all callback parameters together */
#define PARAMS_MAX          32
#define RESULT_KEEP_SECONDS 600  /* an uncollected result is dropped after this */
#define TOMBSTONE_SECONDS   3600 /* finished or expired states still get the right page */
#define RATE_SLOTS          4096
#define WAITERS_MAX         100000
#define QUIESCE_WAIT_MS     1000
#define SESSION_MAX         128
#define PROXY_MAX           32 /* Join proxy calls in flight at once */
#define PROXY_ANSWER_MAX    (256 * 1024)
/* What the Join page's browser gets in place of the real fetch-token answer:
 * the widget only checks that access_token is there. */
#define KEPT_TOKEN_ANSWER "{\"access_token\":\"kept-by-the-relay\"}"

/* Upper case, without 0 O 1 I L: read aloud or typed from a screen. */
static const char code_alphabet[] = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";

enum page {
	PAGE_SUCCESS,
	PAGE_DECLINED,
	PAGE_EXPIRED,
	PAGE_ERROR,
	PAGE_NOTFOUND,
	PAGE_USED,
	PAGE_COUNT,
};

static const char *const page_files[PAGE_COUNT] = {
    "success.html", "declined.html", "expired.html", "error.html", "notfound.html", "used.html",
};

enum status {
	REC_PENDING, /* link registered, no callback yet (expired once past expires_at) */
	REC_ARRIVED, /* callback stored, result not handed out yet */
	REC_DONE,    /* handed out or dropped: remembered only for the customer's page */
};

struct param {
	char *key;
	char *value;
};

struct record {
	struct record *older, *newer;          /* creation order */
	struct record *state_next, *code_next; /* hash chains */
	enum status status;
	enum page outcome; /* for REC_ARRIVED / REC_DONE */
	bool has_code;     /* in the code table: the short link still redirects, or says
	                    * "done" once the code was taken by a pasted address */
	char state[STATE_MAX + 1];
	char code[CODE_MAX + 1];
	char *target;
	char *vendor;       /* display name, or NULL */
	char *join_session; /* the Derapi Join session its page may use, or NULL */
	bool join_kept;     /* the result is fetch-token's answer, kept by the proxy */
	long long expires_at;
	long long finished_at;
	struct param *params;
	size_t n_params;
};

enum req_phase {
	REQ_BODY,    /* reading a POST body */
	REQ_WAITING, /* a suspended result poll */
	REQ_RESUMED, /* taken off the waiters, connection resumed, not answered yet */
	REQ_ANSWERED,
	REQ_PROXY,      /* a Join proxy call upstream, connection suspended */
	REQ_PROXY_DONE, /* its answer is ready, connection resumed */
};

enum proxy_call { PROXY_VENDORS, PROXY_FETCH, PROXY_AUTH_GRANTED };

struct req {
	struct req *prev, *next;   /* every live request */
	struct req *wprev, *wnext; /* waiters */
	struct req *due_next;      /* a batch being resumed */
	enum req_phase phase;
	struct MHD_Connection *connection;
	char state[STATE_MAX + 1];
	long long deadline_ms;
	char *body;
	size_t body_len;
	bool body_too_large;
	/* The Join proxy. */
	struct enr_relay *relay;
	enum proxy_call call;
	char session[SESSION_MAX + 1];
	char vendor[VENDOR_MAX + 1];
	char *code; /* auth-granted: the customer's keys */
	unsigned status;
	const char *type;
	char *answer;
};

struct rate_slot {
	char ip[INET6_ADDRSTRLEN];
	double tokens;
	long long last_ms;
};

struct host_vendor {
	char *host;
	char *name;
};

struct enr_relay {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* the timer thread */
	pthread_cond_t idle; /* quiesce: resumed polls answered */
	pthread_t timer;
	bool timer_started, timer_stop;

	struct MHD_Daemon *daemon;
	unsigned port;
	char *public_url;
	unsigned char secret_digest[32];
	char **allowed_hosts;
	size_t n_allowed_hosts;
	struct host_vendor *vendor_ids; /* catalogue id -> display name */
	size_t n_vendor_ids;
	struct host_vendor *host_vendors; /* endpoint host -> display name */
	size_t n_host_vendors;
	char trusted_proxy[INET6_ADDRSTRLEN];
	char *pages[PAGE_COUNT];
	char *layout;
	char *style;
	char *join_page; /* the Join page, its script filled in; NULL when not installed */
	char *join_csp;
	/* The Join page's proxy to Derapi: on when [derapi] client_id is set. */
	const struct enr_config *join_cfg;
	const struct enr_vendor *derapi;
	size_t proxying; /* proxy calls in flight (their threads) */
	long max_ttl;
	size_t max_records;
	unsigned max_connections;
	unsigned rate_burst;
	double rate_per_second;
	long long (*clock)(void *ctx);
	void *clock_ctx;

	struct record *oldest, *newest;
	struct record **by_state, **by_code;
	size_t n_buckets;
	size_t n_records, n_pending, n_results, dropped;

	struct req *reqs;
	size_t n_reqs;
	struct req *waiters;
	size_t n_waiters;
	size_t unanswered; /* resumed polls not answered yet */
	size_t resuming;   /* batches being resumed outside the lock */
	bool stopping;

	struct rate_slot *rate;
};

/* ---- small helpers ---- */

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long wall_now(const struct enr_relay *relay)
{
	return relay->clock ? relay->clock(relay->clock_ctx) : (long long)time(NULL);
}

static bool valid_state(const char *s, size_t len)
{
	if (len < STATE_MIN || len > STATE_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* The first six characters of a state, for log lines. */
static const char *short_state(char *buf, size_t size, const char *state)
{
	snprintf(buf, size, "%.6s...", state);
	return buf;
}

static bool valid_utf8(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		unsigned cp;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		for (size_t k = 1; k <= n; k++) {
			if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void free_wiped(void *p)
{
	enr_util_free_secret(p);
}

/*
 * Splits an absolute URL into its scheme and lower-cased host. Refuses what
 * could make a browser go elsewhere than the host it shows: user info,
 * backslashes, white space and control characters, non-ASCII.
 */
static int parse_url_host(const char *url, bool *https, char *host, size_t host_size)
{
	const char *p, *end, *h, *h_end;
	size_t len = strlen(url);

	if (len > TARGET_MAX)
		return ENR_E_PARSE;
	for (const char *c = url; *c; c++)
		if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || *c == '\\' ||
		    *c == '"' || *c == '<' || *c == '>' || *c == '`')
			return ENR_E_PARSE;
	if (strncasecmp(url, "https://", 8) == 0) {
		*https = true;
		p = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		*https = false;
		p = url + 7;
	} else {
		return ENR_E_PARSE;
	}
	end = p + strcspn(p, "/?#");
	if (memchr(p, '@', (size_t)(end - p)))
		return ENR_E_PARSE;
	h = p;
	if (*p == '[') {
		h_end = memchr(p, ']', (size_t)(end - p));
		if (!h_end)
			return ENR_E_PARSE;
		h_end++;
	} else {
		h_end = memchr(p, ':', (size_t)(end - p));
		if (!h_end)
			h_end = end;
	}
	if (h_end == h || (size_t)(h_end - h) >= host_size)
		return ENR_E_PARSE;
	if (h_end < end) {
		const char *port = h_end;
		long n = 0;
		if (*port != ':' || port + 1 == end || end - port > 6)
			return ENR_E_PARSE;
		for (port++; port < end; port++) {
			if (*port < '0' || *port > '9')
				return ENR_E_PARSE;
			n = n * 10 + (*port - '0');
		}
		if (n < 1 || n > 65535)
			return ENR_E_PARSE;
	}
	for (size_t i = 0; i < (size_t)(h_end - h); i++) {
		char c = h[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '.' ||
		          (*h == '[' ? (c == ':' || c == '[' || c == ']') : c == '-');
		if (!ok)
			return ENR_E_PARSE;
		host[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	host[h_end - h] = '\0';
	return 0;
}

static bool is_loopback_host(const char *host)
{
	struct in_addr a4;

	if (strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0)
		return true;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* A numeric IPv4 or IPv6 address in its canonical text form (IPv4-mapped as IPv4). */
static bool normalize_ip(char *out, size_t size, const char *text)
{
	unsigned char addr[16];

	if (inet_pton(AF_INET, text, addr) == 1)
		return inet_ntop(AF_INET, addr, out, (socklen_t)size) != NULL;
	if (inet_pton(AF_INET6, text, addr) != 1)
		return false;
	if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)addr))
		return inet_ntop(AF_INET, addr + 12, out, (socklen_t)size) != NULL;
	return inet_ntop(AF_INET6, addr, out, (socklen_t)size) != NULL;
}

static void sha256(unsigned char out[32], const char *s, size_t len)
{
	unsigned int n = 32;

	if (EVP_Digest(s, len, out, &n, EVP_sha256(), NULL) != 1)
		memset(out, 0, 32);
}

/* ---- records ---- */

static struct record **state_bucket(struct enr_relay *relay, const char *state)
{
	return &relay->by_state[hash_str(state) & (relay->n_buckets - 1)];
}

static struct record **code_bucket(struct enr_relay *relay, const char *code)
{
	return &relay->by_code[hash_str(code) & (relay->n_buckets - 1)];
}

static struct record *find_state(struct enr_relay *relay, const char *state)
{
	for (struct record *r = *state_bucket(relay, state); r; r = r->state_next)
		if (strcmp(r->state, state) == 0)
			return r;
	return NULL;
}

static struct record *find_code(struct enr_relay *relay, const char *code)
{
	for (struct record *r = *code_bucket(relay, code); r; r = r->code_next)
		if (strcmp(r->code, code) == 0)
			return r;
	return NULL;
}

static void unlink_code(struct enr_relay *relay, struct record *rec)
{
	if (!rec->has_code)
		return;
	for (struct record **p = code_bucket(relay, rec->code); *p; p = &(*p)->code_next) {
		if (*p == rec) {
			*p = rec->code_next;
			break;
		}
	}
	rec->has_code = false;
}

static void free_params(struct record *rec)
{
	for (size_t i = 0; i < rec->n_params; i++) {
		enr_util_free_secret(rec->params[i].key);
		enr_util_free_secret(rec->params[i].value);
	}
	free(rec->params);
	rec->params = NULL;
	rec->n_params = 0;
}

/* The link no longer leads anywhere: forget the code and the target. */
static void retire_link(struct enr_relay *relay, struct record *rec)
{
	unlink_code(relay, rec);
	enr_util_free_secret(rec->target);
	rec->target = NULL;
}

static void set_status(struct enr_relay *relay, struct record *rec, enum status status)
{
	if (rec->status == REC_PENDING)
		relay->n_pending--;
	else if (rec->status == REC_ARRIVED)
		relay->n_results--;
	rec->status = status;
	if (status == REC_PENDING)
		relay->n_pending++;
	else if (status == REC_ARRIVED)
		relay->n_results++;
	if (status == REC_DONE)
		free_params(rec);
}

static void remove_record(struct enr_relay *relay, struct record *rec)
{
	struct record **p;

	retire_link(relay, rec);
	for (p = state_bucket(relay, rec->state); *p; p = &(*p)->state_next) {
		if (*p == rec) {
			*p = rec->state_next;
			break;
		}
	}
	if (rec->older)
		rec->older->newer = rec->newer;
	else
		relay->oldest = rec->newer;
	if (rec->newer)
		rec->newer->older = rec->older;
	else
		relay->newest = rec->older;
	set_status(relay, rec, REC_DONE);
	relay->n_records--;
	free(rec->vendor);
	free(rec->join_session);
	OPENSSL_cleanse(rec, sizeof(*rec));
	free(rec);
}

static bool link_expired(const struct record *rec, long long now)
{
	return rec->status == REC_PENDING && now >= rec->expires_at;
}

/* Retires what has outlived its time; removes tombstones. */
static void sweep(struct enr_relay *relay)
{
	long long now = wall_now(relay);
	struct record *rec = relay->oldest, *next;

	for (; rec; rec = next) {
		next = rec->newer;
		if (rec->status == REC_PENDING && now >= rec->expires_at) {
			/* The code stays known while its tombstone does: the customer who
			 * opens a lapsed link is told it expired, not that it never worked. */
			enr_util_free_secret(rec->target);
			rec->target = NULL;
			if (now >= rec->expires_at + TOMBSTONE_SECONDS)
				remove_record(relay, rec);
		} else if (rec->status == REC_ARRIVED &&
		           now >= rec->finished_at + RESULT_KEEP_SECONDS) {
			char s[16];
			enr_log_info("relay: result for state %s was never collected; dropped",
			             short_state(s, sizeof(s), rec->state));
			set_status(relay, rec, REC_DONE);
		} else if (rec->status == REC_DONE && now >= rec->finished_at + TOMBSTONE_SECONDS) {
			remove_record(relay, rec);
		}
	}
}

/* ---- waiters ---- */

static void waiter_unlink(struct enr_relay *relay, struct req *r)
{
	if (r->wprev)
		r->wprev->wnext = r->wnext;
	else
		relay->waiters = r->wnext;
	if (r->wnext)
		r->wnext->wprev = r->wprev;
	r->wprev = r->wnext = NULL;
	relay->n_waiters--;
}

/* Takes a waiter off the list for resuming; called under the lock. */
static void make_due(struct enr_relay *relay, struct req *r, struct req **due)
{
	waiter_unlink(relay, r);
	r->phase = REQ_RESUMED;
	r->due_next = *due;
	*due = r;
	relay->unanswered++;
}

/*
 * Resumes a batch taken off the waiters; called without the lock, with
 * relay->resuming counting the batch. A suspended connection cannot go
 * away before it is resumed, so each entry is valid until its own resume;
 * the next one is read first.
 */
static void resume_batch(struct enr_relay *relay, struct req *due)
{
	while (due) {
		struct req *next = due->due_next;
		MHD_resume_connection(due->connection);
		due = next;
	}
	pthread_mutex_lock(&relay->lock);
	relay->resuming--;
	pthread_cond_broadcast(&relay->idle);
	pthread_mutex_unlock(&relay->lock);
}

static struct timespec abs_monotonic(long long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	return ts;
}

static void *timer_main(void *arg)
{
	struct enr_relay *relay = arg;
	long long next_sweep = 0;

	pthread_mutex_lock(&relay->lock);
	while (!relay->timer_stop) {
		long long now = mono_ms(), wall = wall_now(relay), wake;
		struct req *due = NULL, *next;
		struct timespec ts;

		if (now >= next_sweep) {
			sweep(relay);
			next_sweep = now + 1000;
		}
		wake = next_sweep;
		for (struct req *w = relay->waiters; w; w = next) {
			struct record *rec = find_state(relay, w->state);
			next = w->wnext;
			if (now >= w->deadline_ms || !rec || rec->status != REC_PENDING ||
			    link_expired(rec, wall))
				make_due(relay, w, &due);
			else if (w->deadline_ms < wake)
				wake = w->deadline_ms;
		}
		if (due) {
			relay->resuming++;
			pthread_mutex_unlock(&relay->lock);
			resume_batch(relay, due);
			pthread_mutex_lock(&relay->lock);
			continue;
		}
		ts = abs_monotonic(wake);
		pthread_cond_timedwait(&relay->wake, &relay->lock, &ts);
	}
	pthread_mutex_unlock(&relay->lock);
	return NULL;
}

/* ---- rate limiting ---- */

/* Takes a token from the client's bucket; false (and when to retry) when empty. */
static bool rate_take(struct enr_relay *relay, const char *ip, unsigned *retry_after)
{
	struct rate_slot *slot = &relay->rate[hash_str(ip) & (RATE_SLOTS - 1)];
	long long now = mono_ms();

	/* A collision evicts the other address: it starts again with a full bucket. */
	if (strcmp(slot->ip, ip) != 0) {
		snprintf(slot->ip, sizeof(slot->ip), "%s", ip);
		slot->tokens = relay->rate_burst;
		slot->last_ms = now;
	}
	slot->tokens += (double)(now - slot->last_ms) / 1000.0 * relay->rate_per_second;
	if (slot->tokens > relay->rate_burst)
		slot->tokens = relay->rate_burst;
	slot->last_ms = now;
	if (slot->tokens >= 1.0) {
		slot->tokens -= 1.0;
		return true;
	}
	*retry_after = (unsigned)ceil((1.0 - slot->tokens) / relay->rate_per_second);
	return false;
}

static void client_ip(const struct enr_relay *relay, struct MHD_Connection *c, char *out,
                      size_t size)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	char peer[INET6_ADDRSTRLEN] = "unknown";
	const char *xff, *last;

	if (sa && sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, peer,
		          sizeof(peer));
	} else if (sa && sa->sa_family == AF_INET6) {
		char raw[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		          raw, sizeof(raw));
		if (!normalize_ip(peer, sizeof(peer), raw))
			snprintf(peer, sizeof(peer), "%s", raw);
	}
	snprintf(out, size, "%s", peer);
	if (!relay->trusted_proxy[0] || strcmp(peer, relay->trusted_proxy) != 0)
		return;
	/* The proxy appends the address it saw: only the last entry is its word. */
	xff = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Forwarded-For");
	if (!xff)
		return;
	last = strrchr(xff, ',');
	last = last ? last + 1 : xff;
	while (*last == ' ' || *last == '\t')
		last++;
	{
		char addr[INET6_ADDRSTRLEN + 8];
		size_t n = strcspn(last, " \t");
		if (n >= sizeof(addr))
			return;
		memcpy(addr, last, n);
		addr[n] = '\0';
		if (!normalize_ip(out, size, addr))
			snprintf(out, size, "%s", peer);
	}
}

/* ---- responses ---- */

static bool add_common_headers(struct MHD_Response *resp)
{
	return MHD_add_response_header(resp, "Cache-Control", "no-store") == MHD_YES &&
	       MHD_add_response_header(resp, "Referrer-Policy", "no-referrer") == MHD_YES &&
	       MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES;
}

/*
 * Queues a response with `body` (malloc'd, taken over; NULL for none) and
 * the headers every answer carries, plus one optional extra header.
 */
static int respond(struct MHD_Connection *c, unsigned status, const char *type, char *body,
                   bool wipe, const char *header, const char *value)
{
	struct MHD_Response *resp;
	int ret = MHD_NO;

	if (body)
		resp = MHD_create_response_from_buffer_with_free_callback(strlen(body), body,
		                                                          wipe ? free_wiped : free);
	else
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		if (body)
			wipe ? enr_util_free_secret(body) : free(body);
		return MHD_NO;
	}
	if (!add_common_headers(resp))
		goto out;
	if (type && MHD_add_response_header(resp, "Content-Type", type) != MHD_YES)
		goto out;
	if (type && strncmp(type, "text/html", 9) == 0 &&
	    (MHD_add_response_header(
	         resp, "Content-Security-Policy",
	         "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
	         "base-uri 'none'; form-action 'none'; "
	         "frame-ancestors 'none'") != MHD_YES ||
	     MHD_add_response_header(resp, "X-Frame-Options", "DENY") != MHD_YES))
		goto out;
	if (header && MHD_add_response_header(resp, header, value) != MHD_YES)
		goto out;
	ret = MHD_queue_response(c, status, resp);
out:
	MHD_destroy_response(resp);
	return ret;
}

static void html_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		const char *entity = *s == '&'    ? "&amp;"
		                     : *s == '<'  ? "&lt;"
		                     : *s == '>'  ? "&gt;"
		                     : *s == '"'  ? "&quot;"
		                     : *s == '\'' ? "&#39;"
		                                  : NULL;
		if (entity)
			fputs(entity, f);
		else
			fputc(*s, f);
	}
}

/* A placeholder's value: NULL gives the template's fallback text. */
struct slot {
	const char *name;
	const char *value;
	bool escape;
};

/*
 * Fills a template: {{name}} becomes the slot's value (HTML-escaped if the
 * slot says so), {{name|text}} the same or, when the value is NULL, the
 * template's own text (so that the fallback is translated with the page).
 * Unknown names give their fallback text or nothing. Values are not scanned
 * again.
 */
static char *render(const char *tpl, const struct slot *slots, size_t n_slots)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	while (*tpl) {
		const char *open = strstr(tpl, "{{"), *close, *bar, *name_end;
		const struct slot *slot = NULL;
		if (!open || !(close = strstr(open + 2, "}}"))) {
			fputs(tpl, f);
			break;
		}
		fwrite(tpl, 1, (size_t)(open - tpl), f);
		bar = memchr(open + 2, '|', (size_t)(close - open - 2));
		name_end = bar ? bar : close;
		for (size_t i = 0; i < n_slots && !slot; i++)
			if (strlen(slots[i].name) == (size_t)(name_end - open - 2) &&
			    memcmp(slots[i].name, open + 2, (size_t)(name_end - open - 2)) == 0)
				slot = &slots[i];
		if (slot && slot->value && slot->escape)
			html_escape(f, slot->value);
		else if (slot && slot->value)
			fputs(slot->value, f);
		else if (bar)
			fwrite(bar + 1, 1, (size_t)(close - bar - 1), f);
		tpl = close + 2;
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* A page in the layout, titled by its <h1>. */
static char *render_page(const struct enr_relay *relay, enum page page, const char *vendor)
{
	struct slot slots[] = {
	    {"vendor", vendor, true},
	    {"style", relay->style, false},
	    {"title", NULL, false},
	    {"content", NULL, false},
	};
	char *content = render(relay->pages[page], slots, 2), *title = NULL, *html = NULL;
	const char *h1, *h1_end;

	if (!content)
		return NULL;
	h1 = strstr(content, "<h1>");
	h1_end = h1 ? strstr(h1, "</h1>") : NULL;
	if (h1_end)
		title = strndup(h1 + 4, (size_t)(h1_end - h1 - 4));
	slots[2].value = title;
	slots[3].value = content;
	if (title || !h1_end)
		html = render(relay->layout, slots, ENR_ARRAY_SIZE(slots));
	free(title);
	free(content);
	return html;
}

static int respond_page(struct enr_relay *relay, struct MHD_Connection *c, unsigned status,
                        enum page page, const char *vendor, const char *header, const char *value)
{
	char *html = render_page(relay, page, vendor);

	if (!html)
		return respond(c, 500, "text/plain; charset=utf-8",
		               enr_util_strdup("out of memory\n"), false, NULL, NULL);
	return respond(c, status, "text/html; charset=utf-8", html, false, header, value);
}

static int respond_json(struct MHD_Connection *c, unsigned status, char *body, bool wipe,
                        const char *header, const char *value)
{
	return respond(c, status, "application/json", body, wipe, header, value);
}

/* Writes `s` as a JSON string (with quotes) at `o`; returns the end. */
static char *json_string(char *o, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	*o++ = '"';
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			*o++ = '\\';
			*o++ = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			*o++ = '\\';
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		} else {
			*o++ = (char)ch;
		}
	}
	*o++ = '"';
	return o;
}

/* A JSON object of string members, in one allocation (wiped when freed). */
static char *json_object_of(const char *const *kv, size_t n_pairs)
{
	size_t size = 3;
	char *buf, *o;

	for (size_t i = 0; i < 2 * n_pairs; i++)
		size += 6 * strlen(kv[i]) + 4;
	buf = malloc(size);
	if (!buf)
		return NULL;
	o = buf;
	*o++ = '{';
	for (size_t i = 0; i < n_pairs; i++) {
		if (i)
			*o++ = ',';
		o = json_string(o, kv[2 * i]);
		*o++ = ':';
		o = json_string(o, kv[2 * i + 1]);
	}
	*o++ = '}';
	*o = '\0';
	return buf;
}

static int respond_error(struct MHD_Connection *c, unsigned status, const char *error,
                         const char *message, const char *header, const char *value)
{
	const char *kv[] = {"error", error, "message", message};

	return respond_json(c, status, json_object_of(kv, 2), false, header, value);
}

/* ---- authentication ---- */

static bool authorized(const struct enr_relay *relay, struct MHD_Connection *c)
{
	const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	unsigned char digest[32];

	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
		return false;
	auth += 7;
	while (*auth == ' ')
		auth++;
	/* Comparing digests takes the same time whatever the length or content. */
	sha256(digest, auth, strlen(auth));
	return CRYPTO_memcmp(digest, relay->secret_digest, sizeof(digest)) == 0;
}

/*
 * Takes a token from the bucket of the request's client: true when the
 * request may go on, else `retry` says in how many seconds. `ip` gets the
 * client's address for log lines.
 */
static bool client_allowed(struct enr_relay *relay, struct MHD_Connection *c,
                           char ip[INET6_ADDRSTRLEN], char retry[16])
{
	unsigned retry_after = 1;
	bool allowed;

	client_ip(relay, c, ip, INET6_ADDRSTRLEN);
	pthread_mutex_lock(&relay->lock);
	allowed = rate_take(relay, ip, &retry_after);
	pthread_mutex_unlock(&relay->lock);
	snprintf(retry, 16, "%u", retry_after);
	return allowed;
}

/* 401, or 429 once the client has failed too often. */
static int refuse_unauthorized(struct enr_relay *relay, struct MHD_Connection *c)
{
	char ip[INET6_ADDRSTRLEN], retry[16];

	if (!client_allowed(relay, c, ip, retry))
		return respond_error(c, 429, "rate_limited", "too many failed attempts",
		                     "Retry-After", retry);
	enr_log_warn("relay: request from %s with a missing or wrong bearer secret", ip);
	return respond_error(c, 401, "unauthorized", "missing or wrong bearer secret",
	                     "WWW-Authenticate", "Bearer");
}

/* The rate limit of the public endpoints: true when the request may go on. */
static bool public_allowed(struct enr_relay *relay, struct MHD_Connection *c, int *ret)
{
	char ip[INET6_ADDRSTRLEN], retry[16];

	if (client_allowed(relay, c, ip, retry))
		return true;
	enr_log_warn("relay: %s is over the rate limit", ip);
	*ret = respond_page(relay, c, 429, PAGE_ERROR, NULL, "Retry-After", retry);
	return false;
}

/* ---- per-request state ---- */

/* *req between the two calls for a request without a body. */
static char headers_seen;

static struct req *req_new(struct enr_relay *relay, enum req_phase phase)
{
	struct req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->phase = phase;
	r->next = relay->reqs;
	if (relay->reqs)
		relay->reqs->prev = r;
	relay->reqs = r;
	relay->n_reqs++;
	return r;
}

/* Called under the lock. */
static void req_free(struct enr_relay *relay, struct req *r)
{
	if (r->phase == REQ_WAITING)
		waiter_unlink(relay, r);
	else if (r->phase == REQ_RESUMED && relay->unanswered > 0) {
		relay->unanswered--;
		pthread_cond_broadcast(&relay->idle);
	}
	if (r->prev)
		r->prev->next = r->next;
	else
		relay->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	relay->n_reqs--;
	free(r->body);
	enr_util_free_secret(r->code);
	enr_util_free_secret(r->answer);
	free(r);
}

bool enr_relay_request_done(struct enr_relay *relay, void **req)
{
	bool ours = false;

	if (!relay || !req || !*req)
		return false;
	if (*req == (void *)&headers_seen) {
		*req = NULL;
		return true;
	}
	pthread_mutex_lock(&relay->lock);
	for (struct req *r = relay->reqs; r; r = r->next) {
		if (r == *req) {
			ours = true;
			break;
		}
	}
	if (ours) {
		req_free(relay, *req);
		*req = NULL;
	}
	pthread_mutex_unlock(&relay->lock);
	return ours;
}

/* ---- POST /v1/links ---- */

static char *new_code(struct enr_relay *relay, char *code)
{
	unsigned char bytes[32];
	size_t n = 0;

	for (int attempt = 0; attempt < 100; attempt++) {
		n = 0;
		while (n < CODE_LEN) {
			if (enr_util_random(bytes, sizeof(bytes)) < 0)
				return NULL;
			/* 248 = 8 * 31: rejecting larger bytes keeps every character equally
			 * likely. */
			for (size_t i = 0; i < sizeof(bytes) && n < CODE_LEN; i++)
				if (bytes[i] < 248)
					code[n++] =
					    code_alphabet[bytes[i] % (sizeof(code_alphabet) - 1)];
		}
		code[n] = '\0';
		if (!find_code(relay, code))
			return code;
	}
	return NULL;
}

/* The display name for a registration's vendor field, or from the target's host. */
static char *vendor_name(const struct enr_relay *relay, const char *vendor, const char *host)
{
	if (vendor) {
		for (size_t i = 0; i < relay->n_vendor_ids; i++)
			if (strcmp(relay->vendor_ids[i].host, vendor) == 0)
				return enr_util_strdup(relay->vendor_ids[i].name);
		return enr_util_strdup(vendor);
	}
	for (size_t i = 0; i < relay->n_host_vendors; i++)
		if (strcmp(relay->host_vendors[i].host, host) == 0)
			return enr_util_strdup(relay->host_vendors[i].name);
	return NULL;
}

static bool host_allowed(const struct enr_relay *relay, const char *host)
{
	for (size_t i = 0; i < relay->n_allowed_hosts; i++)
		if (strcmp(relay->allowed_hosts[i], host) == 0)
			return true;
	return false;
}

static bool valid_vendor(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > VENDOR_MAX || !valid_utf8((const unsigned char *)s, len))
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* A Derapi Join session id as it may appear in a path. */
static bool valid_session(const char *s)
{
	size_t len = strlen(s);

	return len > 0 && len <= SESSION_MAX &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") ==
	           len &&
	       strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

struct link_request {
	const char *target;
	const char *state;
	const char *vendor;
	const char *join_session;
	long long ttl;
};

/* Checks the body; a message for a 400 answer, or NULL when it is good. */
static const char *parse_link_request(struct link_request *out, json_object **root,
                                      const char *body, size_t len)
{
	json_tokener *tok = json_tokener_new();
	json_object *v;
	size_t end;

	memset(out, 0, sizeof(*out));
	if (!tok)
		return "out of memory";
	*root = json_tokener_parse_ex(tok, body, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(*root);
		*root = NULL;
	}
	json_tokener_free(tok);
	if (!*root)
		return "the body is not JSON";
	for (; end < len; end++)
		if (body[end] != ' ' && body[end] != '\n' && body[end] != '\r' && body[end] != '\t')
			return "the body is not JSON";
	if (!json_object_is_type(*root, json_type_object))
		return "the body must be a JSON object";
	if (!json_object_object_get_ex(*root, "target", &v) ||
	    !json_object_is_type(v, json_type_string))
		return "target must be a string";
	out->target = json_object_get_string(v);
	if (!json_object_object_get_ex(*root, "state", &v) ||
	    !json_object_is_type(v, json_type_string))
		return "state must be a string";
	out->state = json_object_get_string(v);
	if (!valid_state(out->state, strlen(out->state)))
		return "state must be 16 to 128 characters of A-Z a-z 0-9 _ -";
	if (json_object_object_get_ex(*root, "ttl", &v)) {
		if (!json_object_is_type(v, json_type_int))
			return "ttl must be a whole number of seconds";
		out->ttl = json_object_get_int64(v);
		if (out->ttl <= 0)
			return "ttl must be a positive number of seconds";
	}
	if (json_object_object_get_ex(*root, "vendor", &v)) {
		if (!json_object_is_type(v, json_type_string) ||
		    !valid_vendor(json_object_get_string(v)))
			return "vendor must be a vendor id or a name of at most 64 characters";
		out->vendor = json_object_get_string(v);
	}
	if (json_object_object_get_ex(*root, "join_session", &v)) {
		if (!json_object_is_type(v, json_type_string) ||
		    !valid_session(json_object_get_string(v)))
			return "join_session must be 1 to 128 characters of A-Z a-z 0-9 _ - .";
		out->join_session = json_object_get_string(v);
	}
	return NULL;
}

/* Makes room for one more record by dropping the oldest ones. Under the lock. */
static void make_room(struct enr_relay *relay, struct req **due)
{
	while (relay->n_records >= relay->max_records && relay->oldest) {
		struct record *old = relay->oldest;
		char s[16];
		for (struct req *w = relay->waiters, *next; w; w = next) {
			next = w->wnext;
			if (strcmp(w->state, old->state) == 0)
				make_due(relay, w, due);
		}
		enr_log_warn("relay: %zu records held: dropped the oldest (state %s)",
		             relay->n_records, short_state(s, sizeof(s), old->state));
		remove_record(relay, old);
		relay->dropped++;
	}
}

/* A page of this relay (the Join page): always a valid target. */
static bool own_page(const struct enr_relay *relay, const char *target)
{
	size_t len = relay->public_url ? strlen(relay->public_url) : 0;

	return len && strncmp(target, relay->public_url, len) == 0 && target[len] == '/';
}

static int create_link(struct enr_relay *relay, struct MHD_Connection *c, struct req *r)
{
	struct link_request lr;
	json_object *root = NULL;
	const char *problem;
	char host[256], code[CODE_MAX + 1], expires[32], s[16], *url = NULL, *vendor = NULL;
	struct record *rec = NULL;
	struct req *due = NULL;
	bool https;
	int ret;

	if (r->body_too_large) {
		ret =
		    respond_error(c, 413, "too_large", "the body is larger than 8 KiB", NULL, NULL);
		goto out;
	}
	problem = parse_link_request(&lr, &root, r->body ? r->body : "", r->body_len);
	if (!problem && parse_url_host(lr.target, &https, host, sizeof(host)) < 0)
		problem = "target must be an absolute http or https URL of at most 2048 "
		          "characters, without user info";
	if (!problem && https && !host_allowed(relay, host) && !is_loopback_host(host) &&
	    !own_page(relay, lr.target))
		problem = "target host is not in allowed_target_hosts";
	if (!problem && !https && !is_loopback_host(host))
		problem = "target must use https (plain http only to a loopback address)";
	if (problem) {
		ret = respond_error(c, 400, "invalid_request", problem, NULL, NULL);
		goto out;
	}
	vendor = vendor_name(relay, lr.vendor, host);
	if (lr.ttl == 0 || lr.ttl > relay->max_ttl)
		lr.ttl = relay->max_ttl;

	pthread_mutex_lock(&relay->lock);
	if ((rec = find_state(relay, lr.state))) {
		/* The same link again, while it still works: renewed in place (the
		 * same short link, a later end). Anything else is another sign-in's. */
		long long now = wall_now(relay);
		bool renewal =
		    rec->status == REC_PENDING && !link_expired(rec, now) && rec->target &&
		    strcmp(rec->target, lr.target) == 0 && !rec->join_session == !lr.join_session &&
		    (!lr.join_session || strcmp(rec->join_session, lr.join_session) == 0);
		if (renewal) {
			if (now + lr.ttl > rec->expires_at)
				rec->expires_at = now + lr.ttl;
			snprintf(code, sizeof(code), "%s", rec->code);
			enr_util_rfc3339(expires, sizeof(expires), rec->expires_at);
			enr_log_info("relay: link for state %s renewed, expires %s",
			             short_state(s, sizeof(s), rec->state), expires);
		}
		rec = NULL;
		pthread_mutex_unlock(&relay->lock);
		if (!renewal) {
			ret =
			    respond_error(c, 409, "state_exists",
			                  "this state is registered for another link, or its link "
			                  "has ended",
			                  NULL, NULL);
			goto out;
		}
		goto answer;
	}
	rec = calloc(1, sizeof(*rec));
	if (rec)
		rec->target = enr_util_strdup(lr.target);
	if (rec && lr.join_session)
		rec->join_session = enr_util_strdup(lr.join_session);
	if (!rec || !rec->target || (lr.join_session && !rec->join_session) ||
	    !new_code(relay, code)) {
		pthread_mutex_unlock(&relay->lock);
		ret = respond_error(c, 500, "internal", "out of memory or randomness", NULL, NULL);
		goto out;
	}
	make_room(relay, &due);
	snprintf(rec->state, sizeof(rec->state), "%s", lr.state);
	snprintf(rec->code, sizeof(rec->code), "%s", code);
	rec->vendor = vendor;
	vendor = NULL;
	rec->expires_at = wall_now(relay) + lr.ttl;
	rec->status = REC_PENDING;
	relay->n_pending++;
	rec->has_code = true;
	rec->state_next = *state_bucket(relay, rec->state);
	*state_bucket(relay, rec->state) = rec;
	rec->code_next = *code_bucket(relay, rec->code);
	*code_bucket(relay, rec->code) = rec;
	rec->older = relay->newest;
	if (relay->newest)
		relay->newest->newer = rec;
	else
		relay->oldest = rec;
	relay->newest = rec;
	relay->n_records++;
	enr_util_rfc3339(expires, sizeof(expires), rec->expires_at);
	enr_log_info("relay: link for state %s to %s%s%s, expires %s",
	             short_state(s, sizeof(s), rec->state), host, rec->vendor ? " for " : "",
	             rec->vendor ? rec->vendor : "", expires);
	rec = NULL;
	if (due)
		relay->resuming++;
	pthread_mutex_unlock(&relay->lock);
	if (due)
		resume_batch(relay, due);
answer:
	url = enr_util_printf("%s/s/%s", relay->public_url, code);
	OPENSSL_cleanse(code, sizeof(code));
	if (!url) {
		ret = MHD_NO;
		goto out;
	}
	{
		const char *kv[] = {"url", url, "expires_at", expires};
		char *body = json_object_of(kv, 2);
		ret = body ? respond_json(c, 201, body, true, NULL, NULL) : MHD_NO;
	}
out:
	if (rec) {
		enr_util_free_secret(rec->target);
		free(rec->join_session);
		free(rec);
	}
	enr_util_free_secret(url);
	free(vendor);
	json_object_put(root);
	return ret;
}

static int links_endpoint(struct enr_relay *relay, struct MHD_Connection *c, const char *method,
                          const char *upload_data, size_t *upload_data_size, void **reqp)
{
	struct req *r = *reqp;

	if (!r) {
		const char *length;
		if (strcmp(method, "POST") != 0)
			return respond_error(c, 405, "method_not_allowed", "use POST", "Allow",
			                     "POST");
		if (!authorized(relay, c))
			return refuse_unauthorized(relay, c);
		length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
		if (length && strtoull(length, NULL, 10) > BODY_MAX)
			return respond_error(c, 413, "too_large", "the body is larger than 8 KiB",
			                     NULL, NULL);
		pthread_mutex_lock(&relay->lock);
		r = req_new(relay, REQ_BODY);
		pthread_mutex_unlock(&relay->lock);
		if (!r)
			return MHD_NO;
		*reqp = r;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (!r->body_too_large && r->body_len + *upload_data_size <= BODY_MAX) {
			char *grown = realloc(r->body, r->body_len + *upload_data_size + 1);
			if (!grown)
				return MHD_NO;
			r->body = grown;
			memcpy(r->body + r->body_len, upload_data, *upload_data_size);
			r->body_len += *upload_data_size;
			r->body[r->body_len] = '\0';
		} else {
			r->body_too_large = true;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	return create_link(relay, c, r);
}

/* ---- GET /s/<code> ---- */

static int short_link(struct enr_relay *relay, struct MHD_Connection *c, const char *method,
                      const char *code_in)
{
	char code[CODE_MAX + 1], *target = NULL, *vendor = NULL, s[16];
	size_t len = strlen(code_in);
	struct record *rec;
	bool done = false, lapsed = false;
	int ret;

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return respond_page(relay, c, 405, PAGE_NOTFOUND, NULL, "Allow", "GET, HEAD");
	if (!public_allowed(relay, c, &ret))
		return ret;
	if (len < CODE_MIN || len > CODE_MAX)
		return respond_page(relay, c, 404, PAGE_NOTFOUND, NULL, NULL, NULL);
	for (size_t i = 0; i <= len; i++)
		code[i] =
		    (code_in[i] >= 'a' && code_in[i] <= 'z') ? (char)(code_in[i] - 32) : code_in[i];
	pthread_mutex_lock(&relay->lock);
	rec = find_code(relay, code);
	if (rec && rec->status == REC_PENDING && !link_expired(rec, wall_now(relay))) {
		target = enr_util_strdup(rec->target);
		enr_log_info("relay: short link opened for state %s",
		             short_state(s, sizeof(s), rec->state));
	} else if (rec && (rec->status == REC_DONE ||
	                   (rec->status == REC_PENDING &&
	                    wall_now(relay) < rec->expires_at + TOMBSTONE_SECONDS))) {
		/* Still linked when done: only a code taken by a pasted address;
		 * pending and linked, a link whose time ran out. */
		done = rec->status == REC_DONE;
		lapsed = !done;
		vendor = enr_util_strdup(rec->vendor);
	}
	pthread_mutex_unlock(&relay->lock);
	OPENSSL_cleanse(code, sizeof(code));
	if (done || lapsed) {
		ret = respond_page(relay, c, done ? 200 : 410, done ? PAGE_USED : PAGE_EXPIRED,
		                   vendor, NULL, NULL);
		free(vendor);
		return ret;
	}
	if (!target)
		return respond_page(relay, c, 404, PAGE_NOTFOUND, NULL, NULL, NULL);
	ret = respond(c, 302, NULL, NULL, false, "Location", target);
	enr_util_free_secret(target);
	return ret;
}

/* ---- GET /join: the company's Join page ---- */

static int join_page(struct enr_relay *relay, struct MHD_Connection *c, const char *method)
{
	struct MHD_Response *resp;
	int ret = MHD_NO;

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return respond_page(relay, c, 405, PAGE_NOTFOUND, NULL, "Allow", "GET, HEAD");
	if (!public_allowed(relay, c, &ret))
		return ret;
	if (!relay->join_page)
		return respond_page(relay, c, 404, PAGE_NOTFOUND, NULL, NULL, NULL);
	resp = MHD_create_response_from_buffer(strlen(relay->join_page), relay->join_page,
	                                       MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	/* The widget's script, its calls and its popups; the session and state
	 * come in the query: nothing secret is in the page. */
	if (add_common_headers(resp) &&
	    MHD_add_response_header(resp, "Content-Type", "text/html; charset=utf-8") == MHD_YES &&
	    MHD_add_response_header(resp, "Content-Security-Policy", relay->join_csp) == MHD_YES &&
	    MHD_add_response_header(resp, "X-Frame-Options", "DENY") == MHD_YES)
		ret = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Loads assets/join/index.html with its script; a missing page is no error. */
static int load_join_page(struct enr_relay *relay, const struct enr_relay_options *opts)
{
	const char *script = opts->join_script_url;
	char *dir = NULL, *path = NULL, *tpl = NULL;
	/* The URL goes into a JavaScript string (an import): nothing that could
	 * end it or be read as markup. */
	struct slot slots[] = {{"script", NULL, false}};
	int rc = 0;

	if (!script && opts->catalog) {
		const struct enr_vendor *derapi = enr_catalog_find(opts->catalog, "derapi");
		script =
		    derapi ? enr_vendor_endpoint(derapi, opts->config, "join_script_url") : NULL;
	}
	enr_error_clear();
	if (!script || !script[0] || strpbrk(script, "\"'`<>\\; \t\r\n"))
		return 0;
	dir = enr_config_asset_path("join");
	path = dir ? enr_util_printf("%s/index.html", dir) : NULL;
	if (!path) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	if (enr_util_read_file(&tpl, NULL, path, 256 * 1024) < 0) {
		enr_log_info("relay: no Join page at %s", path);
		enr_error_clear();
		goto out;
	}
	slots[0].value = script;
	relay->join_page = render(tpl, slots, 1);
	/* A path is of this origin ('self'); a URL is named in the policy. */
	relay->join_csp = enr_util_printf(
	    "default-src 'none'; script-src 'self' 'unsafe-inline'%s%s; connect-src 'self' "
	    "https:; frame-src https:; img-src 'self' https: data:; style-src 'self' "
	    "'unsafe-inline' https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	    script[0] == '/' ? "" : " ", script[0] == '/' ? "" : script);
	if (!relay->join_page || !relay->join_csp)
		rc = enr_error_set(ENR_E_NOMEM, NULL);
out:
	free(tpl);
	free(path);
	free(dir);
	return rc;
}

/* ---- GET /callback ---- */

struct collect {
	struct param *params;
	size_t n;
	size_t total;
	bool too_long;
	bool bad;
};

static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
	struct collect *col = cls;

	(void)kind;
	if (!value)
		value_size = 0;
	col->total += key_size + value_size + 2;
	if (col->total > QUERY_MAX || col->n >= PARAMS_MAX) {
		col->too_long = true;
		return MHD_NO;
	}
	if (key_size == 0 || strlen(key) != key_size || (value && strlen(value) != value_size) ||
	    !valid_utf8((const unsigned char *)key, key_size) ||
	    (value && !valid_utf8((const unsigned char *)value, value_size))) {
		col->bad = true;
		return MHD_NO;
	}
	for (size_t i = 0; i < col->n; i++)
		if (strcmp(col->params[i].key, key) == 0)
			return MHD_YES; /* the first one counts */
	col->params[col->n].key = enr_util_strdup(key);
	col->params[col->n].value = enr_util_strdup(value ? value : "");
	if (!col->params[col->n].key || !col->params[col->n].value) {
		enr_util_free_secret(col->params[col->n].key);
		enr_util_free_secret(col->params[col->n].value);
		col->bad = true;
		return MHD_NO;
	}
	col->n++;
	return MHD_YES;
}

static const char *param_value(const struct param *params, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(params[i].key, key) == 0)
			return params[i].value;
	return NULL;
}

/* An error code worth logging: a short lower-case word such as access_denied. */
static bool loggable_error(const char *e)
{
	size_t len = strlen(e);

	if (len == 0 || len > 40)
		return false;
	for (; *e; e++)
		if (!((*e >= 'a' && *e <= 'z') || *e == '_'))
			return false;
	return true;
}

/* The record is no longer pending: it is `status` now, its polls wake. Under the lock. */
static void finish(struct enr_relay *relay, struct record *rec, enum status status,
                   struct req **due)
{
	rec->finished_at = wall_now(relay);
	set_status(relay, rec, status);
	for (struct req *w = relay->waiters, *next; w; w = next) {
		next = w->wnext;
		if (strcmp(w->state, rec->state) == 0)
			make_due(relay, w, due);
	}
	if (*due)
		relay->resuming++;
}

/* The record's result is in. Under the lock. */
static void arrive(struct enr_relay *relay, struct record *rec, enum page page, struct req **due)
{
	rec->outcome = page;
	finish(relay, rec, REC_ARRIVED, due);
}

static int callback(struct enr_relay *relay, struct MHD_Connection *c, const char *method)
{
	struct collect col = {0};
	struct record *rec;
	struct req *due = NULL;
	const char *state, *error;
	char *vendor = NULL, s[16];
	enum page page;
	unsigned status;
	int ret;

	if (strcmp(method, "GET") != 0)
		return respond_page(relay, c, 405, PAGE_ERROR, NULL, "Allow", "GET");
	if (!public_allowed(relay, c, &ret))
		return ret;
	col.params = calloc(PARAMS_MAX, sizeof(*col.params));
	if (!col.params)
		return MHD_NO;
	MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, collect_param, &col);
	if (col.too_long || col.bad) {
		enr_log_warn("relay: callback refused: %s",
		             col.too_long ? "query too long" : "malformed query");
		ret =
		    respond_page(relay, c, col.too_long ? 414 : 400, PAGE_ERROR, NULL, NULL, NULL);
		goto out;
	}
	state = param_value(col.params, col.n, "state");
	if (!state || !valid_state(state, strlen(state))) {
		enr_log_warn("relay: callback refused: %s state", state ? "malformed" : "missing");
		ret = respond_page(relay, c, 400, PAGE_ERROR, NULL, NULL, NULL);
		goto out;
	}
	error = param_value(col.params, col.n, "error");

	pthread_mutex_lock(&relay->lock);
	rec = find_state(relay, state);
	short_state(s, sizeof(s), state);
	if (!rec) {
		page = PAGE_EXPIRED;
		status = 404;
		enr_log_warn("relay: callback for unknown state %s", s);
	} else if (rec->status != REC_PENDING) {
		page = PAGE_USED;
		status = 409;
		enr_log_warn("relay: second callback for state %s refused", s);
	} else if (link_expired(rec, wall_now(relay))) {
		page = PAGE_EXPIRED;
		status = 200;
		enr_log_warn("relay: callback for expired state %s", s);
	} else {
		page = !error                                ? PAGE_SUCCESS
		       : strcmp(error, "access_denied") == 0 ? PAGE_DECLINED
		                                             : PAGE_ERROR;
		status = 200;
		retire_link(relay, rec);
		rec->params = col.params;
		rec->n_params = col.n;
		col.params = NULL;
		col.n = 0;
		arrive(relay, rec, page, &due);
		enr_log_info("relay: callback for state %s: %s%s%s", s,
		             page == PAGE_SUCCESS    ? "success"
		             : page == PAGE_DECLINED ? "declined"
		                                     : "error",
		             error && loggable_error(error) ? " " : "",
		             error && loggable_error(error) ? error : "");
	}
	if (rec)
		vendor = enr_util_strdup(rec->vendor);
	if (page == PAGE_USED && rec && rec->outcome != PAGE_SUCCESS)
		page = rec->outcome; /* a reload of a declined or error page shows it again */
	if (page == PAGE_USED && rec && rec->join_kept) {
		/* The Join page reports what its proxy already handed on. */
		page = rec->outcome;
		status = 200;
	}
	pthread_mutex_unlock(&relay->lock);
	if (due)
		resume_batch(relay, due);
	ret = respond_page(relay, c, status, page, vendor, NULL, NULL);
out:
	if (col.params) {
		struct record tmp = {.params = col.params, .n_params = col.n};
		free_params(&tmp);
	}
	free(vendor);
	return ret;
}

/* ---- GET /v1/results/<state> ---- */

/*
 * Answers a poll from the record's state. Called under the lock; unlocks.
 * A poll that waited closes its connection: libmicrohttpd zeroes a kept-alive
 * connection's whole memory pool for the next request, which for a thousand
 * polls answered at once is the relay's peak memory; a new connection for
 * the next poll costs nothing in comparison.
 */
static int answer_poll(struct enr_relay *relay, struct MHD_Connection *c, const char *state,
                       bool waited)
{
	const char *conn_header = waited ? "Connection" : NULL;
	struct record *rec = find_state(relay, state);
	const char **kv;
	char *body, s[16];

	if (rec && rec->status == REC_ARRIVED) {
		kv = calloc(2 * rec->n_params + 1, sizeof(*kv));
		if (!kv) {
			pthread_mutex_unlock(&relay->lock);
			return MHD_NO;
		}
		for (size_t i = 0; i < rec->n_params; i++) {
			kv[2 * i] = rec->params[i].key;
			kv[2 * i + 1] = rec->params[i].value;
		}
		body = json_object_of(kv, rec->n_params);
		free(kv);
		if (!body) {
			pthread_mutex_unlock(&relay->lock);
			return MHD_NO;
		}
		set_status(relay, rec, REC_DONE);
		enr_log_info("relay: result for state %s handed out",
		             short_state(s, sizeof(s), state));
		pthread_mutex_unlock(&relay->lock);
		return respond_json(c, 200, body, true, conn_header, "close");
	}
	if (rec && rec->status == REC_PENDING && !link_expired(rec, wall_now(relay))) {
		pthread_mutex_unlock(&relay->lock);
		return respond(c, 204, NULL, NULL, false, conn_header, "close");
	}
	pthread_mutex_unlock(&relay->lock);
	return respond_error(c, 404, "not_found", "no such state, or its result was handed out",
	                     conn_header, "close");
}

/*
 * DELETE /v1/results/<state>: the wizard took the state's code another way
 * (the address the installer pasted). The customer's later visits, to the
 * short link or a late callback, then say it is done rather than expired, and
 * the short link no longer leads to the vendor; a result not collected is
 * dropped. Idempotent.
 */
static int taken_elsewhere(struct enr_relay *relay, struct MHD_Connection *c, const char *state)
{
	struct record *rec;
	struct req *due = NULL;
	char s[16];

	pthread_mutex_lock(&relay->lock);
	rec = find_state(relay, state);
	if (!rec) {
		pthread_mutex_unlock(&relay->lock);
		return respond_error(c, 404, "not_found", "no such state", NULL, NULL);
	}
	if (rec->status == REC_PENDING) {
		rec->outcome = PAGE_SUCCESS;
		enr_util_free_secret(rec->target);
		rec->target = NULL; /* the code stays, for the done page */
	}
	if (rec->status != REC_DONE) {
		finish(relay, rec, REC_DONE, &due);
		enr_log_info("relay: state %s was completed with a pasted address",
		             short_state(s, sizeof(s), state));
	}
	pthread_mutex_unlock(&relay->lock);
	if (due)
		resume_batch(relay, due);
	return respond(c, 204, NULL, NULL, false, NULL, NULL);
}

static bool can_suspend(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_DAEMON);
	const union MHD_DaemonInfo *di =
	    ci ? MHD_get_daemon_info(ci->daemon, MHD_DAEMON_INFO_FLAGS) : NULL;

	return di && (di->flags & MHD_ALLOW_SUSPEND_RESUME) == MHD_ALLOW_SUSPEND_RESUME &&
	       !(di->flags & MHD_USE_THREAD_PER_CONNECTION);
}

static int results_endpoint(struct enr_relay *relay, struct MHD_Connection *c, const char *method,
                            const char *state, void **reqp)
{
	const char *wait_arg;
	long wait = 0;
	struct record *rec;
	struct req *r;

	if (strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0)
		return respond_error(c, 405, "method_not_allowed", "use GET or DELETE", "Allow",
		                     "GET, DELETE");
	if (!authorized(relay, c))
		return refuse_unauthorized(relay, c);
	if (!valid_state(state, strlen(state)))
		return respond_error(c, 400, "invalid_request",
		                     "state must be 16 to 128 characters of A-Z a-z 0-9 _ -", NULL,
		                     NULL);
	if (strcmp(method, "DELETE") == 0)
		return taken_elsewhere(relay, c, state);
	wait_arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
	if (wait_arg) {
		char *end;
		errno = 0;
		wait = strtol(wait_arg, &end, 10);
		if (errno || end == wait_arg || *end || wait < 0)
			return respond_error(c, 400, "invalid_request",
			                     "wait must be a number of seconds", NULL, NULL);
		if (wait > ENR_RELAY_MAX_WAIT)
			wait = ENR_RELAY_MAX_WAIT;
	}

	pthread_mutex_lock(&relay->lock);
	rec = find_state(relay, state);
	if (wait == 0 || relay->stopping || relay->n_waiters >= WAITERS_MAX || !rec ||
	    rec->status != REC_PENDING || link_expired(rec, wall_now(relay)) || !can_suspend(c))
		return answer_poll(relay, c, state, false);
	r = req_new(relay, REQ_WAITING);
	if (!r) {
		pthread_mutex_unlock(&relay->lock);
		return MHD_NO;
	}
	r->connection = c;
	snprintf(r->state, sizeof(r->state), "%s", state);
	r->deadline_ms = mono_ms() + wait * 1000;
	r->wnext = relay->waiters;
	if (relay->waiters)
		relay->waiters->wprev = r;
	relay->waiters = r;
	relay->n_waiters++;
	*reqp = r;
	/* Under the lock: nobody can resume it before it is suspended. */
	MHD_suspend_connection(c);
	pthread_cond_signal(&relay->wake);
	pthread_mutex_unlock(&relay->lock);
	return MHD_YES;
}

/* ---- GET /join/api/...: the Join page's proxy to Derapi ---- */

/*
 * Derapi's widget makes its calls to the `apiUrl` the page gives it: here.
 * Only a registered session's three widget calls pass; the company's Derapi
 * token is added here and never reaches the phone, and fetch-token's answer
 * is kept for the laptop: the browser gets a stand-in with access_token (all
 * the widget checks). Each call runs upstream on a thread of its own while
 * the connection is suspended.
 */

/* The pending record whose page may use `session`. Under the lock. */
static struct record *find_session(struct enr_relay *relay, const char *session)
{
	long long now = wall_now(relay);

	for (struct record *r = relay->newest; r; r = r->older)
		if (r->join_session && strcmp(r->join_session, session) == 0)
			return r->status == REC_PENDING && !link_expired(r, now) ? r : NULL;
	return NULL;
}

/* Hands fetch-token's answer to the laptop polling for `state`. */
static void keep_answer(struct enr_relay *relay, const char *state, const char *session,
                        const char *answer)
{
	struct param *params = calloc(2, sizeof(*params));
	struct req *due = NULL;
	struct record *rec;
	char s[16];

	if (params) {
		params[0].key = enr_util_strdup("state");
		params[0].value = enr_util_strdup(state);
		params[1].key = enr_util_strdup("join_fetch_token");
		params[1].value = enr_util_strdup(answer);
	}
	pthread_mutex_lock(&relay->lock);
	rec = find_state(relay, state);
	if (params && params[0].value && params[1].value && rec && rec->status == REC_PENDING &&
	    rec->join_session && strcmp(rec->join_session, session) == 0) {
		retire_link(relay, rec);
		rec->params = params;
		rec->n_params = 2;
		params = NULL;
		rec->join_kept = true;
		arrive(relay, rec, PAGE_SUCCESS, &due);
		enr_log_info("relay: Join session of state %s finished: its answer is kept",
		             short_state(s, sizeof(s), state));
	}
	pthread_mutex_unlock(&relay->lock);
	if (due)
		resume_batch(relay, due);
	if (params) {
		struct record tmp = {.params = params, .n_params = 2};
		free_params(&tmp);
	}
}

static void proxy_set(struct req *r, unsigned status, const char *type, char *answer)
{
	enr_util_free_secret(r->answer);
	r->status = status;
	r->type = type;
	r->answer = answer;
}

static void proxy_error(struct req *r, unsigned status, const char *error, const char *message)
{
	const char *kv[] = {"error", error, "message", message};

	proxy_set(r, status, "application/json", json_object_of(kv, 2));
}

/* Derapi's fetch-token for the session: kept for the laptop when it holds credentials. */
static bool fetch_and_keep(struct enr_relay *relay, struct req *r, const char *token,
                           unsigned *status)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	int rc = enr_join_fetch_request(&req, relay->derapi, relay->join_cfg, token, r->session);
	bool kept = false;

	if (rc == 0)
		rc = enr_http_perform(&resp, relay->join_cfg, req);
	*status = rc < 0 || resp->error ? 502 : (unsigned)resp->status;
	if (rc == 0 && !resp->error && resp->status == 401)
		enr_join_token_forget();
	/* Not parsed into credentials: this process keeps no customer secret
	 * beyond the result it holds for the laptop. */
	if (rc == 0 && !resp->error && resp->status >= 200 && resp->status < 300 &&
	    enr_join_fetch_holds_credentials(resp->body)) {
		keep_answer(relay, r->state, r->session, resp->body);
		kept = true;
	}
	enr_http_response_free(resp);
	enr_http_request_free(req);
	enr_error_clear();
	return kept;
}

/* The customer's keys to Derapi (no headers, as the widget sends them). */
static bool auth_granted(struct enr_relay *relay, struct req *r, unsigned *status)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *vendor = enr_util_urlencode(r->vendor), *session = enr_util_urlencode(r->session);
	char *code = enr_util_urlencode(r->code), *path = NULL, *base = NULL, *url = NULL;
	bool granted = false;
	int rc = ENR_E_NOMEM;

	path = vendor ? enr_util_printf("/join/%s/auth-granted", vendor) : NULL;
	base = path ? enr_vendor_url(relay->derapi, relay->join_cfg, "api_url", path) : NULL;
	url = base && session && code ? enr_util_printf("%s?state=%s&code=%s", base, session, code)
	                              : NULL;
	if (url)
		rc = enr_http_request_new(&req, "GET", url);
	if (rc == 0)
		rc = enr_http_perform(&resp, relay->join_cfg, req);
	*status = rc < 0 || resp->error ? 502 : (unsigned)resp->status;
	if (rc == 0 && !resp->error)
		granted = enr_join_auth_granted(resp->status, resp->body);
	enr_http_response_free(resp);
	enr_http_request_free(req);
	enr_util_free_secret(url);
	enr_util_free_secret(code);
	free(base);
	free(path);
	free(session);
	free(vendor);
	enr_error_clear();
	return granted;
}

static void proxy_call(struct enr_relay *relay, struct req *r)
{
	struct enr_http_request *req = NULL;
	struct enr_http_response *resp = NULL;
	char *token = NULL, *path = NULL, s[16];
	unsigned status = 502;
	int rc = enr_join_app_token(&token, relay->derapi, relay->join_cfg);

	short_state(s, sizeof(s), r->state);
	if (rc < 0) {
		enr_log_warn("relay: Join proxy: no Derapi token: %s", enr_error_last());
		enr_error_clear();
		proxy_error(r, 502, "derapi_unavailable", "the relay could not sign in to Derapi");
		return;
	}
	switch (r->call) {
	case PROXY_VENDORS:
		path = enr_util_printf("/join/session/%s/vendors", r->session);
		rc = path ? enr_join_request(&req, relay->derapi, relay->join_cfg, "GET", path,
		                             token)
		          : ENR_E_NOMEM;
		if (rc == 0)
			rc = enr_http_perform(&resp, relay->join_cfg, req);
		if (rc < 0 || resp->error || resp->body_len > PROXY_ANSWER_MAX) {
			proxy_error(r, 502, "derapi_unavailable", "Derapi did not answer");
		} else {
			status = (unsigned)resp->status;
			proxy_set(r, status < 200 ? 502 : status, "application/json",
			          enr_util_strdup(resp->body));
			if (status == 401)
				enr_join_token_forget();
		}
		break;
	case PROXY_FETCH:
		if (fetch_and_keep(relay, r, token, &status))
			proxy_set(r, 200, "application/json", enr_util_strdup(KEPT_TOKEN_ANSWER));
		else
			proxy_error(r, status >= 300 ? status : 409, "not_finished",
			            "Derapi holds no authorization for this session");
		break;
	case PROXY_AUTH_GRANTED:
		if (auth_granted(relay, r, &status)) {
			/* What Derapi now holds goes to the laptop; none of it to the phone. */
			fetch_and_keep(relay, r, token, &status);
			proxy_set(r, 200, "text/plain; charset=utf-8", enr_util_strdup("granted"));
		} else {
			proxy_set(r, status >= 200 && status < 300 ? 200 : status,
			          "text/plain; charset=utf-8", enr_util_strdup("failed"));
		}
		break;
	}
	enr_log_info("relay: Join proxy %s for state %s: %u",
	             r->call == PROXY_VENDORS ? "vendors"
	             : r->call == PROXY_FETCH ? "fetch-token"
	                                      : "auth-granted",
	             s, r->status);
	if (!r->answer)
		proxy_error(r, 500, "internal", "out of memory");
	enr_http_response_free(resp);
	enr_http_request_free(req);
	free(path);
	enr_config_free_secret(token);
}

static void *proxy_main(void *arg)
{
	struct req *r = arg;
	struct enr_relay *relay = r->relay;
	struct MHD_Connection *c = r->connection;

	proxy_call(relay, r);
	pthread_mutex_lock(&relay->lock);
	r->phase = REQ_PROXY_DONE;
	pthread_mutex_unlock(&relay->lock);
	/* From here on `r` may be gone. */
	MHD_resume_connection(c);
	pthread_mutex_lock(&relay->lock);
	relay->proxying--;
	pthread_cond_broadcast(&relay->idle);
	pthread_mutex_unlock(&relay->lock);
	return NULL;
}

/* Copies the path segment at `p` (up to '/' or the end) into `out`; the rest, or NULL. */
static const char *segment(const char *p, char *out, size_t size)
{
	size_t n = strcspn(p, "/");

	if (n == 0 || n >= size)
		return NULL;
	memcpy(out, p, n);
	out[n] = '\0';
	return p + n;
}

static bool valid_vendor_id(const char *s)
{
	return s[0] && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789") == strlen(s);
}

static int refuse_proxy(struct MHD_Connection *c, const char *why)
{
	return respond_error(c, 404, "not_found", why, NULL, NULL);
}

static int join_proxy(struct enr_relay *relay, struct MHD_Connection *c, const char *method,
                      const char *path, void **reqp)
{
	const char *tail = NULL, *code = NULL, *state = NULL;
	char session[SESSION_MAX + 1] = "", vendor[VENDOR_MAX + 1] = "";
	enum proxy_call call;
	struct record *rec;
	struct req *r;
	pthread_attr_t attr;
	pthread_t thread;
	int ret;

	if (strcmp(method, "GET") != 0)
		return respond_error(c, 405, "method_not_allowed", "use GET", "Allow", "GET");
	if (!public_allowed(relay, c, &ret))
		return ret;
	if (!relay->join_cfg)
		return refuse_proxy(c, "this relay has no Derapi credentials ([derapi] client_id)");
	if (strncmp(path, "/join/session/", 14) == 0 &&
	    (tail = segment(path + 14, session, sizeof(session))) &&
	    (strcmp(tail, "/vendors") == 0 || strcmp(tail, "/fetch-token") == 0)) {
		call = strcmp(tail, "/vendors") == 0 ? PROXY_VENDORS : PROXY_FETCH;
	} else if (strncmp(path, "/join/", 6) == 0 &&
	           (tail = segment(path + 6, vendor, sizeof(vendor))) &&
	           strcmp(tail, "/auth-granted") == 0 && valid_vendor_id(vendor)) {
		call = PROXY_AUTH_GRANTED;
		state = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "state");
		code = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "code");
		if (!state || !code || !code[0] || strlen(code) > 1024 ||
		    strlen(state) >= sizeof(session))
			return refuse_proxy(c, "auth-granted needs state and code");
		snprintf(session, sizeof(session), "%s", state);
	} else {
		return refuse_proxy(c, "only a Join session's vendors, fetch-token and "
		                       "auth-granted calls pass here");
	}
	if (!valid_session(session))
		return refuse_proxy(c, "no such Join session");
	if (!can_suspend(c))
		return respond_error(c, 503, "unavailable", "the Join proxy cannot run here", NULL,
		                     NULL);
	pthread_mutex_lock(&relay->lock);
	rec = find_session(relay, session);
	if (!rec || relay->proxying >= PROXY_MAX) {
		pthread_mutex_unlock(&relay->lock);
		if (!rec)
			return refuse_proxy(c,
			                    "this Join session is not registered with the relay, "
			                    "or its link has expired");
		return respond_error(c, 503, "busy", "too many Join calls at once", "Retry-After",
		                     "1");
	}
	r = req_new(relay, REQ_PROXY);
	if (r && code && !(r->code = enr_util_strdup(code))) {
		req_free(relay, r);
		r = NULL;
	}
	if (!r) {
		pthread_mutex_unlock(&relay->lock);
		return MHD_NO;
	}
	r->relay = relay;
	r->connection = c;
	r->call = call;
	snprintf(r->state, sizeof(r->state), "%s", rec->state);
	snprintf(r->session, sizeof(r->session), "%s", session);
	snprintf(r->vendor, sizeof(r->vendor), "%s", vendor);
	relay->proxying++;
	*reqp = r;
	MHD_suspend_connection(c);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&thread, &attr, proxy_main, r) != 0) {
		proxy_error(r, 503, "busy", "the relay cannot start a Join call now");
		r->phase = REQ_PROXY_DONE;
		relay->proxying--;
		pthread_mutex_unlock(&relay->lock);
		MHD_resume_connection(c);
	} else {
		pthread_mutex_unlock(&relay->lock);
	}
	pthread_attr_destroy(&attr);
	return MHD_YES;
}

/* The answer of a proxy call, once its thread resumed the connection. */
static int proxy_respond(struct enr_relay *relay, struct MHD_Connection *c, struct req *r)
{
	char *answer;

	pthread_mutex_lock(&relay->lock);
	if (r->phase != REQ_PROXY_DONE) {
		pthread_mutex_unlock(&relay->lock);
		return MHD_YES;
	}
	r->phase = REQ_ANSWERED;
	answer = r->answer;
	r->answer = NULL;
	pthread_mutex_unlock(&relay->lock);
	return respond(c, r->status, r->type, answer, true, NULL, NULL);
}

int enr_relay_set_derapi(struct enr_relay *relay, const struct enr_catalog *catalog,
                         const struct enr_config *cfg)
{
	const char *id = cfg ? enr_config_get(cfg, "derapi", "client_id") : NULL;
	const struct enr_vendor *derapi = catalog ? enr_catalog_find(catalog, "derapi") : NULL;

	relay->join_cfg = NULL;
	relay->derapi = NULL;
	if (!id || !id[0])
		return 0;
	if (!derapi)
		return enr_error_set(ENR_E_CONFIG, "vendors.json has no derapi entry");
	relay->derapi = derapi;
	relay->join_cfg = cfg;
	return 0;
}

/* ---- routing ---- */

int enr_relay_handle(struct enr_relay *relay, struct MHD_Connection *connection, const char *url,
                     const char *method, const char *upload_data, size_t *upload_data_size,
                     void **req)
{
	struct req *r = *req;
	int ret;

	/*
	 * A request without a body is answered on the second call: answered on
	 * the first, libmicrohttpd closes the connection instead of keeping it.
	 */
	if (!r && strcmp(method, "POST") != 0) {
		*req = (void *)&headers_seen;
		return MHD_YES;
	}
	if (r == (void *)&headers_seen) {
		*req = r = NULL;
	} else if (r) {
		char state[STATE_MAX + 1];
		if (r->phase == REQ_BODY)
			return links_endpoint(relay, connection, method, upload_data,
			                      upload_data_size, req);
		if (r->phase == REQ_PROXY || r->phase == REQ_PROXY_DONE)
			return proxy_respond(relay, connection, r);
		pthread_mutex_lock(&relay->lock);
		if (r->phase != REQ_RESUMED) {
			/* Not expected: a suspended request is called only once resumed. */
			pthread_mutex_unlock(&relay->lock);
			return MHD_YES;
		}
		snprintf(state, sizeof(state), "%s", r->state);
		ret = answer_poll(relay, connection, state, true);
		pthread_mutex_lock(&relay->lock);
		r->phase = REQ_ANSWERED;
		relay->unanswered--;
		pthread_cond_broadcast(&relay->idle);
		pthread_mutex_unlock(&relay->lock);
		return ret;
	}
	if (!url[0])
		url = "/";
	pthread_mutex_lock(&relay->lock);
	if (relay->stopping) {
		pthread_mutex_unlock(&relay->lock);
		return respond_error(connection, 503, "unavailable", "the relay is shutting down",
		                     NULL, NULL);
	}
	pthread_mutex_unlock(&relay->lock);

	if (strcmp(url, "/v1/links") == 0)
		return links_endpoint(relay, connection, method, upload_data, upload_data_size,
		                      req);
	if (strncmp(url, "/v1/results/", 12) == 0)
		return results_endpoint(relay, connection, method, url + 12, req);
	if (strncmp(url, "/v1/", 4) == 0 || strcmp(url, "/v1") == 0)
		return respond_error(connection, 404, "not_found", "no such endpoint", NULL, NULL);
	if (strncmp(url, "/s/", 3) == 0 || strncmp(url, "/S/", 3) == 0)
		return short_link(relay, connection, method, url + 3);
	if (strcmp(url, "/callback") == 0)
		return callback(relay, connection, method);
	if (strcmp(url, "/join") == 0)
		return join_page(relay, connection, method);
	if (strncmp(url, "/join/api/", 10) == 0)
		return join_proxy(relay, connection, method, url + 9, req);
	if (!public_allowed(relay, connection, &ret))
		return ret;
	return respond_page(relay, connection, 404, PAGE_NOTFOUND, NULL, NULL, NULL);
}

/* ---- setup ---- */

static int add_unique(char ***list, size_t *n, const char *s)
{
	char **grown;

	for (size_t i = 0; i < *n; i++)
		if (strcmp((*list)[i], s) == 0)
			return 0;
	grown = realloc(*list, (*n + 1) * sizeof(**list));
	if (!grown)
		return enr_error_set(ENR_E_NOMEM, NULL);
	*list = grown;
	(*list)[*n] = enr_util_strdup(s);
	if (!(*list)[*n])
		return ENR_E_NOMEM;
	(*n)++;
	return 0;
}

static int add_pair(struct host_vendor **list, size_t *n, const char *key, const char *name)
{
	struct host_vendor *grown;

	for (size_t i = 0; i < *n; i++)
		if (strcmp((*list)[i].host, key) == 0)
			return 0;
	grown = realloc(*list, (*n + 1) * sizeof(**list));
	if (!grown)
		return enr_error_set(ENR_E_NOMEM, NULL);
	*list = grown;
	(*list)[*n].host = enr_util_strdup(key);
	(*list)[*n].name = enr_util_strdup(name);
	if (!(*list)[*n].host || !(*list)[*n].name) {
		free((*list)[*n].host);
		free((*list)[*n].name);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	(*n)++;
	return 0;
}

/* Allowed hosts and vendor names from the catalogue (with config overrides). */
static int load_catalog(struct enr_relay *relay, const struct enr_relay_options *opts,
                        bool default_hosts)
{
	size_t n = opts->catalog ? enr_catalog_count(opts->catalog) : 0;
	char host[256];
	bool https;
	int rc;

	for (size_t i = 0; i < n; i++) {
		const struct enr_vendor *v = enr_catalog_at(opts->catalog, i);
		rc = add_pair(&relay->vendor_ids, &relay->n_vendor_ids, v->id, v->name);
		if (rc < 0)
			return rc;
		for (size_t e = 0; e < v->n_endpoints; e++) {
			const char *url =
			    enr_vendor_endpoint(v, opts->config, v->endpoints[e].name);
			if (!url || parse_url_host(url, &https, host, sizeof(host)) < 0)
				continue;
			/* Derapi's pages sign the customer in to another vendor: no name. */
			if (strcmp(v->id, "derapi") != 0)
				rc = add_pair(&relay->host_vendors, &relay->n_host_vendors, host,
				              v->name);
			if (rc == 0 && default_hosts)
				rc = add_unique(&relay->allowed_hosts, &relay->n_allowed_hosts,
				                host);
			if (rc < 0)
				return rc;
		}
	}
	enr_error_clear();
	return 0;
}

static int parse_host_list(struct enr_relay *relay, const char *list)
{
	char *copy = enr_util_strdup(list), *save = NULL;
	int rc = 0;

	if (!copy)
		return ENR_E_NOMEM;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		for (char *p = tok; *p; p++) {
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
			      *p == '-' || *p == '[' || *p == ']' || *p == ':')) {
				rc = enr_error_set(
				    ENR_E_CONFIG,
				    "[relay] allowed_target_hosts: '%s' is not a host "
				    "name",
				    tok);
				goto out;
			}
		}
		rc = add_unique(&relay->allowed_hosts, &relay->n_allowed_hosts, tok);
		if (rc < 0)
			goto out;
	}
out:
	free(copy);
	return rc;
}

static int load_pages(struct enr_relay *relay, const char *dir)
{
	const char *names[PAGE_COUNT + 2];
	char **outs[PAGE_COUNT + 2];
	char *default_dir = NULL, *path;
	int rc = 0;

	for (int i = 0; i < PAGE_COUNT; i++) {
		names[i] = page_files[i];
		outs[i] = &relay->pages[i];
	}
	names[PAGE_COUNT] = "layout.html";
	outs[PAGE_COUNT] = &relay->layout;
	names[PAGE_COUNT + 1] = "style.css";
	outs[PAGE_COUNT + 1] = &relay->style;
	if (!dir) {
		default_dir = enr_config_asset_path("relay");
		if (!default_dir)
			return ENR_E_NOMEM;
		dir = default_dir;
	}
	for (size_t i = 0; i < ENR_ARRAY_SIZE(names) && rc == 0; i++) {
		path = enr_util_printf("%s/%s", dir, names[i]);
		if (!path) {
			rc = ENR_E_NOMEM;
			break;
		}
		rc = enr_util_read_file(outs[i], NULL, path, 256 * 1024);
		if (rc < 0)
			rc =
			    enr_error_set(ENR_E_CONFIG, "relay page missing: %s", enr_error_last());
		free(path);
	}
	free(default_dir);
	return rc;
}

int enr_relay_set_public_url(struct enr_relay *relay, const char *url)
{
	char host[256];
	bool https;
	size_t len;

	if (parse_url_host(url, &https, host, sizeof(host)) < 0 || strchr(url, '?') ||
	    strchr(url, '#') || strlen(url) > 200)
		return enr_error_set(ENR_E_CONFIG,
		                     "public URL '%s' must be an http or https URL without query, "
		                     "at most 200 characters",
		                     url);
	free(relay->public_url);
	relay->public_url = enr_util_strdup(url);
	if (!relay->public_url)
		return ENR_E_NOMEM;
	len = strlen(relay->public_url);
	while (len > 0 && relay->public_url[len - 1] == '/')
		relay->public_url[--len] = '\0';
	return 0;
}

int enr_relay_new(struct enr_relay **out, const struct enr_relay_options *opts)
{
	struct enr_relay *relay = NULL;
	pthread_condattr_t attr;
	int rc = 0;

	*out = NULL;
	if (!opts->secret || strlen(opts->secret) < ENR_RELAY_MIN_SECRET_LEN)
		return enr_error_set(ENR_E_CONFIG,
		                     "the relay secret must be at least %d characters (make one "
		                     "with: openssl rand -base64 32)",
		                     ENR_RELAY_MIN_SECRET_LEN);
	relay = calloc(1, sizeof(*relay));
	if (!relay)
		return enr_error_set(ENR_E_NOMEM, NULL);
	pthread_mutex_init(&relay->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&relay->wake, &attr);
	pthread_cond_init(&relay->idle, &attr);
	pthread_condattr_destroy(&attr);

	enr_log_add_secret(opts->secret);
	sha256(relay->secret_digest, opts->secret, strlen(opts->secret));
	relay->max_ttl = opts->max_ttl > 0 && opts->max_ttl < ENR_RELAY_MAX_TTL ? opts->max_ttl
	                                                                        : ENR_RELAY_MAX_TTL;
	relay->max_records = opts->max_records ? opts->max_records : 2000;
	relay->max_connections = opts->max_connections ? opts->max_connections : 4096;
	relay->rate_burst = opts->rate_burst ? opts->rate_burst : 30;
	relay->rate_per_second = opts->rate_per_second > 0 ? opts->rate_per_second : 0.5;
	relay->clock = opts->clock;
	relay->clock_ctx = opts->clock_ctx;
	for (relay->n_buckets = 64; relay->n_buckets < 2 * relay->max_records;)
		relay->n_buckets *= 2;
	relay->by_state = calloc(relay->n_buckets, sizeof(*relay->by_state));
	relay->by_code = calloc(relay->n_buckets, sizeof(*relay->by_code));
	relay->rate = calloc(RATE_SLOTS, sizeof(*relay->rate));
	if (!relay->by_state || !relay->by_code || !relay->rate) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	if (opts->public_url && (rc = enr_relay_set_public_url(relay, opts->public_url)) < 0)
		goto out;
	if (opts->trusted_proxy && opts->trusted_proxy[0] &&
	    !normalize_ip(relay->trusted_proxy, sizeof(relay->trusted_proxy),
	                  opts->trusted_proxy)) {
		rc = enr_error_set(ENR_E_CONFIG,
		                   "[relay] trusted_proxy '%s' must be an IP address (127.0.0.1)",
		                   opts->trusted_proxy);
		goto out;
	}
	if (opts->allowed_target_hosts && opts->allowed_target_hosts[0])
		rc = parse_host_list(relay, opts->allowed_target_hosts);
	if (rc == 0)
		rc = load_catalog(relay, opts,
		                  !opts->allowed_target_hosts || !opts->allowed_target_hosts[0]);
	if (rc == 0)
		rc = load_pages(relay, opts->pages_dir);
	if (rc == 0)
		rc = load_join_page(relay, opts);
	if (rc == 0)
		rc = enr_relay_set_derapi(relay, opts->catalog, opts->config);
	if (rc < 0)
		goto out;
	if (pthread_create(&relay->timer, NULL, timer_main, relay) != 0) {
		rc = enr_error_set(ENR_E_NOMEM, "cannot start the relay's timer thread");
		goto out;
	}
	relay->timer_started = true;
	*out = relay;
	relay = NULL;
out:
	enr_relay_free(relay);
	return rc;
}

void enr_relay_quiesce(struct enr_relay *relay)
{
	struct req *due = NULL;
	long long deadline = mono_ms() + QUIESCE_WAIT_MS;

	if (!relay)
		return;
	pthread_mutex_lock(&relay->lock);
	relay->stopping = true;
	while (relay->waiters)
		make_due(relay, relay->waiters, &due);
	if (due) {
		relay->resuming++;
		pthread_mutex_unlock(&relay->lock);
		resume_batch(relay, due);
		pthread_mutex_lock(&relay->lock);
	}
	/* Resumes in flight elsewhere must finish before the daemon may stop. */
	while (relay->resuming > 0 || relay->proxying > 0 ||
	       (relay->unanswered > 0 && mono_ms() < deadline)) {
		struct timespec ts = abs_monotonic(
		    relay->resuming > 0 || relay->proxying > 0 ? mono_ms() + 100 : deadline);
		pthread_cond_timedwait(&relay->idle, &relay->lock, &ts);
	}
	pthread_mutex_unlock(&relay->lock);
}

void enr_relay_free(struct enr_relay *relay)
{
	if (!relay)
		return;
	if (relay->timer_started || relay->daemon)
		enr_relay_quiesce(relay);
	if (relay->daemon)
		MHD_stop_daemon(relay->daemon);
	if (relay->timer_started) {
		pthread_mutex_lock(&relay->lock);
		relay->timer_stop = true;
		pthread_cond_signal(&relay->wake);
		pthread_mutex_unlock(&relay->lock);
		pthread_join(relay->timer, NULL);
	}
	while (relay->oldest)
		remove_record(relay, relay->oldest);
	while (relay->reqs)
		req_free(relay, relay->reqs);
	for (size_t i = 0; i < relay->n_allowed_hosts; i++)
		free(relay->allowed_hosts[i]);
	free(relay->allowed_hosts);
	for (size_t i = 0; i < relay->n_vendor_ids; i++) {
		free(relay->vendor_ids[i].host);
		free(relay->vendor_ids[i].name);
	}
	free(relay->vendor_ids);
	for (size_t i = 0; i < relay->n_host_vendors; i++) {
		free(relay->host_vendors[i].host);
		free(relay->host_vendors[i].name);
	}
	free(relay->host_vendors);
	for (int i = 0; i < PAGE_COUNT; i++)
		free(relay->pages[i]);
	free(relay->layout);
	free(relay->join_page);
	free(relay->join_csp);
	free(relay->style);
	free(relay->by_state);
	free(relay->by_code);
	free(relay->rate);
	free(relay->public_url);
	pthread_cond_destroy(&relay->wake);
	pthread_cond_destroy(&relay->idle);
	pthread_mutex_destroy(&relay->lock);
	OPENSSL_cleanse(relay, sizeof(*relay));
	free(relay);
}

/* ---- the standalone daemon ---- */

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
	(void)version;
	return enr_relay_handle(cls, c, url, method, upload_data, upload_data_size, con_cls)
	           ? MHD_YES
	           : MHD_NO;
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
	(void)c;
	(void)toe;
	enr_relay_request_done(cls, con_cls);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t len;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	len = strlen(line);
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	enr_log_debug("relay: libmicrohttpd: %s", line);
}

/* "ADDR:PORT" into a socket address. */
static int parse_listen(struct sockaddr_storage *out, socklen_t *len, const char *listen)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon, *h = listen;
	size_t host_len;
	char *end;
	long port;

	memset(out, 0, sizeof(*out));
	if (*listen == '[') {
		const char *close = strchr(listen, ']');
		if (!close || close[1] != ':')
			goto bad;
		h = listen + 1;
		host_len = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(listen, ':');
		if (!colon)
			goto bad;
		host_len = (size_t)(colon - listen);
	}
	if (host_len >= sizeof(host))
		goto bad;
	memcpy(host, h, host_len);
	host[host_len] = '\0';
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
		goto bad;
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)out)->sin_addr) == 1) {
		((struct sockaddr_in *)out)->sin_family = AF_INET;
		((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)out)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
		*len = sizeof(struct sockaddr_in6);
		return 0;
	}
bad:
	return enr_error_set(ENR_E_USAGE,
	                     "listen address '%s' must be ADDRESS:PORT (127.0.0.1:8088, "
	                     "[::1]:8088)",
	                     listen);
}

int enr_relay_start(struct enr_relay *relay, const char *listen)
{
	struct sockaddr_storage addr;
	socklen_t addr_len = 0;
	const union MHD_DaemonInfo *info;
	unsigned flags;
	int rc;

	if (relay->daemon)
		return enr_error_set(ENR_E_USAGE, "the relay is already listening");
	rc = parse_listen(&addr, &addr_len, listen ? listen : ENR_RELAY_DEFAULT_LISTEN);
	if (rc < 0)
		return rc;
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
	        MHD_USE_ERROR_LOG;
	if (addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	relay->daemon = MHD_start_daemon(
	    flags, 0, NULL, NULL, access_handler, relay,
	    /* First, or libmicrohttpd keeps its own stderr logger for early messages. */
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, relay, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT, relay->max_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    (size_t)16 * 1024, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
	    MHD_OPTION_NOTIFY_COMPLETED, request_completed, relay, MHD_OPTION_END);
	if (!relay->daemon)
		return enr_error_set_errno(ENR_E_IO, errno, "cannot listen on %s",
		                           listen ? listen : ENR_RELAY_DEFAULT_LISTEN);
	info = MHD_get_daemon_info(relay->daemon, MHD_DAEMON_INFO_BIND_PORT);
	relay->port = info ? info->port : 0;
	if (!relay->public_url) {
		char host[INET6_ADDRSTRLEN];
		char *url;
		if (addr.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr)->sin6_addr, host,
			          sizeof(host));
		else
			inet_ntop(AF_INET, &((struct sockaddr_in *)&addr)->sin_addr, host,
			          sizeof(host));
		url =
		    enr_util_printf(addr.ss_family == AF_INET6 ? "http://[%s]:%u" : "http://%s:%u",
		                    host, relay->port);
		if (!url)
			return ENR_E_NOMEM;
		rc = enr_relay_set_public_url(relay, url);
		free(url);
		if (rc < 0)
			return rc;
	}
	enr_log_info("relay: listening on %s port %u (links as %s)",
	             listen ? listen : ENR_RELAY_DEFAULT_LISTEN, relay->port, relay->public_url);
	return 0;
}

unsigned enr_relay_port(const struct enr_relay *relay)
{
	return relay->port;
}

const char *enr_relay_public_url(const struct enr_relay *relay)
{
	return relay->public_url ? relay->public_url : "";
}

void enr_relay_get_stats(struct enr_relay_stats *out, struct enr_relay *relay)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&relay->lock);
	out->records = relay->n_records;
	out->pending = relay->n_pending;
	out->results = relay->n_results;
	out->waiters = relay->n_waiters;
	out->requests = relay->n_reqs;
	out->dropped = relay->dropped;
	for (size_t i = 0; i < RATE_SLOTS; i++)
		if (relay->rate[i].ip[0])
			out->rate_slots++;
	pthread_mutex_unlock(&relay->lock);
}

char *enr_relay_allowed_hosts(const struct enr_relay *relay)
{
	size_t len = 1;
	char *out, *o;

	for (size_t i = 0; i < relay->n_allowed_hosts; i++)
		len += strlen(relay->allowed_hosts[i]) + 1;
	out = malloc(len);
	if (!out) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	o = out;
	*o = '\0';
	for (size_t i = 0; i < relay->n_allowed_hosts; i++)
		o += sprintf(o, "%s%s", i ? "," : "", relay->allowed_hosts[i]);
	return out;
}
