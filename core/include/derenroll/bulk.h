#ifndef DERENROLL_BULK_H
#define DERENROLL_BULK_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"
#include "derenroll/lifecycle.h"

/*
 * Checking or refreshing many records at once, on one curl multi, as fast as
 * each vendor allows: the `rate_limits` of vendors.json become buckets, one
 * per app (the vendor), per key (the record's API key, KeyID or token) or per
 * address (the vendor's API host). A bucket is a token bucket (`requests`
 * tokens, refilled at requests/per_seconds) plus a counter of calls in flight
 * (at most `concurrency`). A job starts only when every bucket of its record
 * has a token and a free slot.
 *
 * Transient failures are tried again after an exponential backoff, or after
 * the vendor's Retry-After when it said one (which also pauses the whole
 * bucket), up to `max_tries` times. No record waits longer than `max_wait_ms`
 * for a Retry-After or a backoff: when the vendor asks for more, the records
 * it holds back end at once, transient, with a message saying when to try
 * again. At the run's deadline no job starts any more: the jobs in flight
 * finish (a refresh that was sent keeps its answer), the others end
 * transient, "not done". Rotated tokens are saved by the jobs
 * themselves as they arrive; the outcomes of the checks are saved with
 * enr_lifecycle_save_results() in batches.
 *
 *   enr_bulk_new(&bulk, store, cfg, catalog, &opts);
 *   enr_bulk_add(bulk, id) ...;
 *   loop: n = enr_bulk_poll_fds(bulk, fds, cap);
 *         poll(fds, n, enr_bulk_timeout_ms(bulk));
 *         enr_bulk_step(bulk);            until enr_bulk_finished(bulk)
 * or simply enr_bulk_run(bulk).
 */

struct enr_store;
struct enr_config;
struct enr_catalog;
struct enr_bulk;

/* Where the work stands, for a progress display. */
struct enr_bulk_progress {
	size_t total;     /* records added */
	size_t finished;  /* with a final outcome */
	size_t failed;    /* of which not ok */
	size_t in_flight; /* jobs running now */
	size_t retries;   /* tries beyond the first, so far */
	/* The vendor (its name) whose rate limit or Retry-After holds back the
	 * next record, NULL when none does; and for how long (ms, -1: until one
	 * of its calls in flight ends). */
	const char *waiting_vendor;
	long long waiting_ms;
};

typedef void (*enr_bulk_progress_fn)(const struct enr_bulk_progress *progress, void *ctx);

struct enr_bulk_options {
	enum enr_job_kind kind;
	int max_tries;       /* tries per record, transient failures only; 0: 4 */
	long backoff_ms;     /* first backoff, doubled each try; 0: 1000 */
	long max_backoff_ms; /* 0: 60000 */
	int max_in_flight;   /* jobs at once over all vendors; 0: 64 */
	size_t batch;        /* results per store transaction; 0: 200 */
	/* Jobs that refresh at once; 0: 2. From the moment the vendor rotates a
	 * refresh token until its answer is in the store's journal, a crash loses
	 * that customer: few at a time keeps what a crash can take small. */
	int max_refreshing;
	/* Called after each final outcome and, in enr_bulk_run(), at least every
	 * second while it waits (may be NULL). */
	enr_bulk_progress_fn progress;
	void *progress_ctx;
	long long max_wait_ms; /* longest Retry-After or backoff to wait; 0: [http] max_wait */
	long long deadline_ms; /* how long the run may start jobs, from enr_bulk_new(); 0: ever */
	/* ENR_JOB_REFRESH: each record only while it is due within due_days, as it is
	 * under its lock (enr_job_start_due()): several machines' `refresh --due` over
	 * one team store refresh each record once. */
	bool only_due;
	long due_days;
};

/*
 * A bulk run over `store` (opened with credentials), borrowing cfg and catalog.
 * `opts` may be NULL (a CHECK with the defaults). ENR_E_CONFIG for a bad
 * [http] setting.
 */
ENR_API int enr_bulk_new(struct enr_bulk **out, struct enr_store *store,
                         const struct enr_config *cfg, const struct enr_catalog *catalog,
                         const struct enr_bulk_options *opts);

/* Cancels what still runs (nothing more is saved) and frees it; NULL is a no-op. */
ENR_API void enr_bulk_free(struct enr_bulk *bulk);

/* Queues record `id` (every add comes before the first step). ENR_E_NOTFOUND for an unknown record
 * (nothing is queued). */
ENR_API int enr_bulk_add(struct enr_bulk *bulk, const char *id);

/* The sockets to wait on (as enr_http_multi_poll_fds()). */
ENR_API size_t enr_bulk_poll_fds(const struct enr_bulk *bulk, struct pollfd *fds, size_t cap);

/* Milliseconds until enr_bulk_step() has work even without socket activity
 * (0: now; -1: only on socket activity). */
ENR_API long enr_bulk_timeout_ms(const struct enr_bulk *bulk);

/* Starts what the limits allow, handles finished transfers and saves full
 * batches. Never blocks. 0, or the first store error (the run goes on). */
ENR_API int enr_bulk_step(struct enr_bulk *bulk);

/* True when every record has its final outcome and all of them are saved. */
ENR_API bool enr_bulk_finished(const struct enr_bulk *bulk);

/* Blocking: steps until finished. 0, or the first store error. */
ENR_API int enr_bulk_run(struct enr_bulk *bulk);

ENR_API void enr_bulk_get_progress(const struct enr_bulk *bulk, struct enr_bulk_progress *out);

/* Final outcomes in the order they came; valid until enr_bulk_free(). */
ENR_API size_t enr_bulk_result_count(const struct enr_bulk *bulk);
ENR_API const struct enr_job_result *enr_bulk_result(const struct enr_bulk *bulk, size_t i);

/* The most calls that were ever in flight at once in the busiest bucket of
 * `vendor` with that scope (0 when it has no such limit). */
ENR_API int enr_bulk_max_in_flight(const struct enr_bulk *bulk, const char *vendor, int scope);

#endif
