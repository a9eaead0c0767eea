#ifndef DERENROLL_RELAY_H
#define DERENROLL_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

/*
 * The callback relay (server side): turns a long authorize URL into a short
 * link for the customer's phone, receives the vendor's redirect, shows the
 * customer a page and hands the result once to the waiting wizard. Memory
 * only, bounded. The HTTP API is documented in docs/relay.md:
 *
 *   POST /v1/links            (bearer)  {"target","state","ttl","vendor"?} -> 201
 * {"url","expires_at"} GET  /s/<code>                      -> 302 to the target, or a 404 page GET
 * /callback?state=S&...          -> stores the parameters, 200 page GET  /v1/results/<state>?wait=N
 * (bearer) -> 200 {params} once, 204 pending, 404
 *
 * Two ways to serve it:
 *  - standalone: enr_relay_start() runs its own libmicrohttpd daemon;
 *  - mounted in another libmicrohttpd daemon (the sandbox) under a prefix:
 *    that daemon must be started with MHD_ALLOW_SUSPEND_RESUME and an
 *    internal polling thread or thread pool (not thread-per-connection), and
 *    forwards requests from its access handler and its completion callback:
 *
 *      // access handler, for url "/relay" or "/relay/...":
 *      return enr_relay_handle(relay, connection, url + strlen("/relay"), method,
 *                              upload_data, upload_data_size, con_cls);
 *      // MHD_OPTION_NOTIFY_COMPLETED callback, for every request:
 *      if (!enr_relay_request_done(relay, con_cls)) free_my_own_state(*con_cls);
 *      // shutdown:
 *      enr_relay_quiesce(relay); MHD_stop_daemon(daemon); enr_relay_free(relay);
 *
 *    with options.public_url (or enr_relay_set_public_url()) =
 *    "http://127.0.0.1:<port>/relay".
 */
struct enr_relay;
struct enr_catalog;
struct enr_config;
struct MHD_Connection;

#define ENR_RELAY_MAX_TTL        1800 /* seconds: the cap on a link's ttl */
#define ENR_RELAY_DEFAULT_LISTEN "127.0.0.1:8088"
#define ENR_RELAY_MIN_SECRET_LEN 16
#define ENR_RELAY_MAX_WAIT       60 /* seconds a result poll may wait */

struct enr_relay_options {
	/* Base of the short links ("https://relay.example.com", a path prefix allowed).
	 * NULL: "http://<address>:<port>" of enr_relay_start(). */
	const char *public_url;
	/* The bearer secret of the /v1 endpoints (at least 16 characters). Copied
	 * and registered for redaction. Required. */
	const char *secret;
	/* Hosts an https target may point at, comma separated. NULL or empty:
	 * the host of every endpoint of every vendor in `catalog` (Derapi
	 * included), as `config` overrides them. Plain http is allowed to
	 * loopback addresses only, whatever this says. */
	const char *allowed_target_hosts;
	/* Both optional: the default hosts above and vendor display names
	 * ("vendor": "tesla" shows "Tesla"). With [derapi] client_id in `config`
	 * they also serve the Join page's proxy: then both must outlive the relay
	 * (see enr_relay_set_derapi()). */
	const struct enr_catalog *catalog;
	const struct enr_config *config;
	/* The address of the reverse proxy whose X-Forwarded-For is believed
	 * ("127.0.0.1"), or NULL to use the peer address only. */
	const char *trusted_proxy;
	/* Directory of the page templates; NULL: enr_config_asset_path("relay"). */
	const char *pages_dir;
	long max_ttl;             /* seconds; 0: ENR_RELAY_MAX_TTL (never more) */
	size_t max_records;       /* links and results kept; 0: 2000; the oldest is dropped */
	unsigned max_connections; /* enr_relay_start() only; 0: 4096 */
	unsigned rate_burst;      /* per client IP on public endpoints; 0: 30 */
	double rate_per_second;   /* refill of that bucket; 0: 0.5 (30 a minute) */
	/* Wall clock in seconds since the epoch, for tests; NULL: time(). */
	long long (*clock)(void *ctx);
	void *clock_ctx;
	/* The company's Join page (GET /join?session=&state=, from assets/join/)
	 * loads Derapi's widget from here; NULL: [derapi] join_script_url, else
	 * vendors.json's. An absolute path serves a script of the same origin. */
	const char *join_script_url;
};

/*
 * The Join page's proxy to Derapi (GET /join/api/join/...): on when `cfg` has
 * [derapi] client_id (and the client secret); the relay then gets the
 * company's Derapi token itself and adds it to the widget's calls of a
 * registered session. `catalog` and `cfg` are borrowed and must outlive the
 * relay; enr_relay_new() calls it with its options' catalog and config. Call
 * it before requests arrive. ENR_E_CONFIG when the catalogue has no derapi.
 */
ENR_API int enr_relay_set_derapi(struct enr_relay *relay, const struct enr_catalog *catalog,
                                 const struct enr_config *cfg);

/* Counts for monitoring and tests (all under one lock, consistent). */
struct enr_relay_stats {
	size_t records;    /* links and results held (pending, arrived, finished) */
	size_t pending;    /* links waiting for their callback */
	size_t results;    /* callbacks waiting to be handed out */
	size_t waiters;    /* result polls suspended right now */
	size_t requests;   /* requests holding per-request state */
	size_t rate_slots; /* client addresses tracked by the rate limiter */
	size_t dropped;    /* records dropped to stay within max_records, ever */
};

/*
 * Creates a relay: validates the options, loads the page templates and
 * starts the thread that times out polls and forgets old records. Nothing
 * listens yet. ENR_E_CONFIG for a missing or short secret, a bad public URL
 * or proxy address, missing pages.
 */
ENR_API int enr_relay_new(struct enr_relay **out, const struct enr_relay_options *opts);

/* Stops serving (enr_relay_quiesce()), stops its own daemon if any, frees. */
ENR_API void enr_relay_free(struct enr_relay *relay);

/*
 * Listens on "ADDR:PORT" ("127.0.0.1:8088", "[::1]:8088", port 0 for any)
 * with its own libmicrohttpd daemon and thread. ENR_E_USAGE for a bad
 * address, ENR_E_IO when it cannot listen there.
 */
ENR_API int enr_relay_start(struct enr_relay *relay, const char *listen);

/* The port enr_relay_start() bound, or 0. */
ENR_API unsigned enr_relay_port(const struct enr_relay *relay);

/* The base of the short links, without a trailing slash. */
ENR_API const char *enr_relay_public_url(const struct enr_relay *relay);

/*
 * Sets the base of the short links, for a relay mounted in a daemon whose
 * port is known only once it runs. Call it before requests arrive.
 * ENR_E_CONFIG when it is not an http(s) URL without query.
 */
ENR_API int enr_relay_set_public_url(struct enr_relay *relay, const char *url);

/*
 * Serves one request of another libmicrohttpd daemon: `url` is the path
 * below the mount point ("/s/K7Q2MXA"; "" counts as "/"), the other
 * arguments those of the MHD access handler. `req` is a pointer slot the
 * relay owns for the request (con_cls, or a field of the caller's own
 * per-request state). Returns MHD_YES or MHD_NO (as int) for the handler to
 * return.
 */
ENR_API int enr_relay_handle(struct enr_relay *relay, struct MHD_Connection *connection,
                             const char *url, const char *method, const char *upload_data,
                             size_t *upload_data_size, void **req);

/*
 * Frees the per-request state in *req if the relay made it (then sets *req
 * to NULL and returns true); false and *req untouched otherwise. Call it
 * from MHD_OPTION_NOTIFY_COMPLETED for every request.
 */
ENR_API bool enr_relay_request_done(struct enr_relay *relay, void **req);

/*
 * Answers every waiting poll (204) and refuses new requests (503), so that
 * the daemon it is mounted in can be stopped: MHD_stop_daemon() must not
 * find suspended connections. Waits up to a second for the answers to go.
 */
ENR_API void enr_relay_quiesce(struct enr_relay *relay);

ENR_API void enr_relay_get_stats(struct enr_relay_stats *out, struct enr_relay *relay);

/* The allowed target hosts, comma separated (malloc'd), as the relay uses them. */
ENR_API char *enr_relay_allowed_hosts(const struct enr_relay *relay);

/* ---- the client (the wizard's side) ------------------------------------ */

/*
 * The wizard's side of the callback relay ([relay] url and secret): register
 * an authorize URL behind a short link, then long-poll for what the vendor's
 * redirect brought. Requests are built for the http module (blocking or multi).
 */

struct enr_http_request;
struct enr_http_response;

/* Whether [relay] url is set (the secret is looked up when a request is built). */
ENR_API bool enr_relay_client_configured(const struct enr_config *cfg);

/* POST {url}/v1/links {"target", "state", "ttl", "vendor"} with the bearer secret. */
ENR_API int enr_relay_link_request(struct enr_http_request **out, const struct enr_config *cfg,
                                   const char *target, const char *state, long ttl_s,
                                   const char *vendor_name);

/* The same for the Join page of a Derapi Join session: "join_session" lets
 * the page's widget use the relay's proxy for that session only. */
ENR_API int enr_relay_join_link_request(struct enr_http_request **out, const struct enr_config *cfg,
                                        const char *target, const char *state, long ttl_s,
                                        const char *vendor_name, const char *join_session);

/* 0 and the short link (malloc'd) and its expiry, or the failure class. */
ENR_API int enr_relay_link_response(char **url, long long *expires_at,
                                    const struct enr_http_response *resp);

/* GET {url}/v1/results/<state>?wait=<wait_s> with the bearer secret. */
ENR_API int enr_relay_result_request(struct enr_http_request **out, const struct enr_config *cfg,
                                     const char *state, long wait_s);

/* DELETE {url}/v1/results/<state> with the bearer secret: the state's code was
 * taken another way (a pasted address), so the customer's later visits to the
 * link say it is done. The relay answers 204 (404 for a state it does not know). */
ENR_API int enr_relay_taken_request(struct enr_http_request **out, const struct enr_config *cfg,
                                    const char *state);

/*
 * 0 and the callback's parameters as a query string (malloc'd, for
 * enr_oauth_callback_parse()); ENR_E_AGAIN when nothing came yet (204);
 * ENR_E_EXPIRED when the relay no longer knows the state (404).
 */
ENR_API int enr_relay_result_response(char **query, const struct enr_http_response *resp);

#endif
