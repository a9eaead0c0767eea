#ifndef DERENROLL_HTTP_H
#define DERENROLL_HTTP_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/select.h>
#include "derenroll/export.h"

/*
 * HTTP on libcurl, with the project's rules built in:
 * - TLS certificates are always verified. Plain http:// is allowed only to
 *   loopback (127.0.0.0/8, ::1, localhost); any other http:// URL is refused
 *   before anything is sent (ENR_E_MISCONFIGURED). `[http] ca_file` is a PEM
 *   file of extra CAs: it takes the place of libcurl's CA bundle file while
 *   libcurl's CA directory (Debian: /etc/ssl/certs) stays trusted.
 * - `[http] connect_timeout` and `timeout` (seconds, default 10 and 30) and
 *   `max_body` (bytes, default 1 MiB) apply unless a request sets its own.
 * - Proxies come from the environment (http_proxy, https_proxy, no_proxy), as
 *   curl does by default; loopback URLs never go through a proxy.
 * - Redirects are never followed: a 3xx answer is ENR_E_MISCONFIGURED (the
 *   configured URL is out of date), named with the target's scheme, host and
 *   path. This covers both rules (no redirect on token calls, none to another
 *   scheme or host on API calls) with one simple behaviour.
 * - No URL with a query string ever reaches a message or the log: messages
 *   name scheme, host and path only. Secret values given to a request are
 *   registered for redaction (enr_log_add_secret) before the request is sent.
 *
 * Outcomes follow the failure model: 0; ENR_E_REJECTED (credentials invalid or
 * revoked); ENR_E_TRANSIENT (network, timeout, 408, 429, 5xx); ENR_E_MISCONFIGURED
 * (the company's client ID, secret or URL); ENR_E_BADRESPONSE (malformed or too
 * large); ENR_E_DECLINED, ENR_E_EXPIRED and ENR_E_AGAIN for the OAuth error
 * codes access_denied, expired_token and authorization_pending/slow_down.
 */

struct enr_config;
struct enr_vendor;
struct json_object;

/* A name and a value (query parameters, form fields, extra OAuth parameters). */
struct enr_http_field {
	const char *name;
	const char *value;
};

/* Flags of the request setters. */
enum {
	ENR_HTTP_SECRET = 1, /* the value is a secret: redacted everywhere, wiped on free */
};

#define ENR_HTTP_DEFAULT_MAX_BODY        (1024 * 1024)
#define ENR_HTTP_DEFAULT_CONNECT_TIMEOUT 10             /* seconds */
#define ENR_HTTP_DEFAULT_TIMEOUT         30             /* seconds */
#define ENR_HTTP_DEFAULT_MAX_WAIT        300            /* seconds, [http] max_wait */
#define ENR_HTTP_MAX_RETRY_AFTER         (366L * 86400) /* longer is read as this */

/* A request being described; every setter copies its arguments. */
struct enr_http_request;

/*
 * A finished transfer. `error` is the transport outcome: 0 when an HTTP answer
 * arrived (whatever its status), else the failure class with `message` (one
 * line, redacted). enr_http_classify() turns either into the final outcome.
 */
struct enr_http_response {
	long status;        /* HTTP status, 0 when none arrived */
	char *body;         /* NUL-terminated (also when empty), never NULL */
	size_t body_len;    /* bytes in body, without the NUL */
	char *content_type; /* as sent, or NULL */
	long retry_after;   /* seconds from Retry-After (429, 503), -1 when absent */
	/* Calls left in the window of the vendor's rate limit `rate_limit` (an
	 * index into vendor->rate_limits), from the header that limit names in
	 * vendors.json; rate_limit is -1 when the answer reported none.
	 * rate_window is the window's size from the limit's limit_header; either
	 * is -1 when the answer did not say it. */
	long rate_remaining;
	long rate_window;
	int rate_limit;
	int error;     /* 0, or the transport failure (see above) */
	char *message; /* the transport failure's message, or NULL */
	/* What classification needs to know about the request. */
	const struct enr_vendor *vendor; /* as set on the request, or NULL */
	char *endpoint;                  /* endpoint name set on the request, or NULL */
	char *where;    /* scheme://host[:port]/path, no query: safe for messages */
	char *location; /* a 3xx's target, scheme://host/path only, or NULL */
	bool token_call;
	/* A 3xx's whole target, query included, or NULL: what an OAuth redirect
	 * carries (code, state) for a caller that plays the browser (the demo's
	 * customer, a loopback hand-off). It may hold a code or a token: never
	 * show or log it. Wiped when the response is freed. */
	char *redirect_url;
};

/*
 * A new request: `method` ("GET", "POST", "PUT", "DELETE", ...; NULL = GET) to
 * `url`. The URL may hold a query already; enr_http_request_add_query() appends
 * to it. ENR_E_NOMEM only: the URL is checked when the request is sent.
 */
ENR_API int enr_http_request_new(struct enr_http_request **out, const char *method,
                                 const char *url);
/* Frees the request, wiping its secret values. NULL is a no-op. */
ENR_API void enr_http_request_free(struct enr_http_request *req);

/* Appends `name=value` (both percent-encoded) to the URL's query. */
ENR_API int enr_http_request_add_query(struct enr_http_request *req, const char *name,
                                       const char *value, unsigned flags);

/* Adds a header. ENR_E_USAGE when the name is not a header name or the value
 * holds a line break. `User-Agent`, `Accept: application/json` and
 * `Authorization` are set by the library unless given here. */
ENR_API int enr_http_request_add_header(struct enr_http_request *req, const char *name,
                                        const char *value, unsigned flags);

/* Adds a field to an application/x-www-form-urlencoded body (exclusive with
 * enr_http_request_set_body(): ENR_E_USAGE). */
ENR_API int enr_http_request_add_form(struct enr_http_request *req, const char *name,
                                      const char *value, unsigned flags);

/* Sets a raw body of `len` bytes with its Content-Type (sent exactly as given). */
ENR_API int enr_http_request_set_body(struct enr_http_request *req, const char *content_type,
                                      const void *body, size_t len);

/* `Authorization: Basic base64(user:secret)`; the secret is registered. */
ENR_API int enr_http_request_set_basic(struct enr_http_request *req, const char *user,
                                       const char *secret);

/* `Authorization: Bearer token`; the token is registered. */
ENR_API int enr_http_request_set_bearer(struct enr_http_request *req, const char *token);

/* Timeouts in milliseconds for this request; 0 keeps the configured one. */
ENR_API void enr_http_request_set_timeouts(struct enr_http_request *req, long connect_ms,
                                           long total_ms);

/* Largest body accepted, in bytes; 0 keeps the configured one. */
ENR_API void enr_http_request_set_max_body(struct enr_http_request *req, size_t max);

/* Marks an OAuth token call: OAuth error codes (invalid_grant, invalid_client)
 * classify it, and 400/401 without a known code mean the company's app. */
ENR_API void enr_http_request_set_token_call(struct enr_http_request *req, bool token_call);

/* The vendor messages name (it must outlive the request and its response), and
 * the name of the endpoint the URL came from ("token_url"), so that a message
 * can say which setting to fix. Either may be NULL. */
ENR_API int enr_http_request_set_vendor(struct enr_http_request *req,
                                        const struct enr_vendor *vendor, const char *endpoint);

/*
 * Whether `url` may be fetched: https://, or http:// to a loopback address.
 * 0, or ENR_E_MISCONFIGURED with a message (never showing the query).
 */
ENR_API int enr_http_check_url(const char *url);

/*
 * Sends the request and waits for the answer (blocking: not for the TUI's key
 * path; use the multi interface there). 0 and the response in `out` when an
 * HTTP answer arrived, whatever its status: pass it to enr_http_classify().
 * Otherwise the transport failure (ENR_E_TRANSIENT, ENR_E_BADRESPONSE,
 * ENR_E_MISCONFIGURED, ENR_E_CONFIG for a bad [http] setting) with its message,
 * and `out` NULL. `cfg` may be NULL (defaults).
 */
ENR_API int enr_http_perform(struct enr_http_response **out, const struct enr_config *cfg,
                             const struct enr_http_request *req);

ENR_API void enr_http_response_free(struct enr_http_response *resp);

/*
 * The outcome of a finished transfer: 0 for a 2xx answer; otherwise the failure
 * class, with the error message set to one line naming the vendor and what to
 * do (the vendor's guidance from vendors.json first, then generic text). A
 * response with `error` set returns that error and its message.
 */
ENR_API int enr_http_classify(const struct enr_http_response *resp);

/*
 * For failures found in a 2xx answer (Solis body codes, an empty site list):
 * the vendor's guidance for `status` and `text` (an error code, the body, or a
 * marker such as "empty_sites") when there is one, else `fallback` with the
 * message formatted from `fmt`. Sets the error and returns its code.
 */
ENR_API int enr_http_vendor_error(const struct enr_vendor *vendor, int status, const char *text,
                                  int fallback, const char *fmt, ...) ENR_PRINTF(5, 6);

/* Parses the body as JSON: 0 and the value in `out` (json_object_put() it), or
 * ENR_E_BADRESPONSE naming the vendor. */
ENR_API int enr_http_response_json(struct json_object **out, const struct enr_http_response *resp);

/* Sets ENR_E_BADRESPONSE: "<vendor> sent an unexpected answer from <where>: <what>". */
ENR_API int enr_http_badresponse(const struct enr_http_response *resp, const char *what);

/*
 * Many transfers at once, driven from an event loop without blocking.
 *
 *   enr_http_multi_add(&id, multi, req, done, ctx);
 *   loop: n = enr_http_multi_poll_fds(multi, fds, cap);   (plus the loop's own fds)
 *         poll(fds, n, min(enr_http_multi_timeout_ms(multi), ...));
 *         enr_http_multi_step(multi);                      (calls `done` for finished ones)
 *
 * Callbacks run only inside enr_http_multi_step() / _run_until_idle(), on the
 * calling thread; they may add and cancel transfers but must not free the multi.
 * A multi belongs to one thread.
 */
struct enr_http_multi;

/* Called once per finished transfer; takes ownership of `resp` (free it with
 * enr_http_response_free()). Never called for a cancelled transfer. */
typedef void (*enr_http_done_fn)(struct enr_http_response *resp, void *ctx);

/* A multi using the [http] settings of `cfg` (may be NULL). ENR_E_CONFIG for a
 * bad setting. */
ENR_API int enr_http_multi_new(struct enr_http_multi **out, const struct enr_config *cfg);

/* Cancels every transfer (no callback is called) and frees the multi. */
ENR_API void enr_http_multi_free(struct enr_http_multi *multi);

/*
 * Starts a transfer (the request may be freed right after). 0 and its id in
 * `out` (never 0), or ENR_E_MISCONFIGURED (URL refused), ENR_E_NOMEM; `done`
 * is then never called.
 */
ENR_API int enr_http_multi_add(uint64_t *out, struct enr_http_multi *multi,
                               const struct enr_http_request *req, enr_http_done_fn done,
                               void *ctx);

/* Stops a transfer; its callback is not called. ENR_E_NOTFOUND when it has
 * already finished or never existed. */
ENR_API int enr_http_multi_cancel(struct enr_http_multi *multi, uint64_t id);

/*
 * Calls fn(ctx) at the end of the current (or next) enr_http_multi_step(),
 * after the callbacks of every answer that step collected: so that work done
 * for many answers at once (one sync of the store's journal for all the new
 * tokens) waits for all of them. Counts as running until called; the id
 * cancels it like a transfer.
 */
typedef void (*enr_http_deferred_fn)(void *ctx);
ENR_API int enr_http_multi_defer(uint64_t *out, struct enr_http_multi *multi,
                                 enr_http_deferred_fn fn, void *ctx);

/* Transfers started and not yet finished or cancelled. */
ENR_API size_t enr_http_multi_running(const struct enr_http_multi *multi);

/*
 * Fills at most `cap` pollfds with the sockets to wait on and the events
 * wanted; returns how many there are (more than `cap` means call again with a
 * larger array).
 */
ENR_API size_t enr_http_multi_poll_fds(const struct enr_http_multi *multi, struct pollfd *fds,
                                       size_t cap);

/* The same for select(): adds to the sets and raises *max_fd. ENR_E_UNSUPPORTED
 * when a socket does not fit in an fd_set (use poll_fds). */
ENR_API int enr_http_multi_fdset(const struct enr_http_multi *multi, fd_set *read_set,
                                 fd_set *write_set, fd_set *except_set, int *max_fd);

/* Milliseconds until the multi needs enr_http_multi_step() even without socket
 * activity: 0 = now, -1 = only on socket activity (or nothing running). */
ENR_API long enr_http_multi_timeout_ms(const struct enr_http_multi *multi);

/*
 * Does whatever work is ready without waiting: reads and writes the sockets
 * that are ready, handles due timers, and calls the callbacks of finished
 * transfers. Safe to call at any time. Returns the number of callbacks called.
 */
ENR_API int enr_http_multi_step(struct enr_http_multi *multi);

/* Waits and steps until no transfer is left (for simple, blocking callers). */
ENR_API int enr_http_multi_run_until_idle(struct enr_http_multi *multi);

#endif
