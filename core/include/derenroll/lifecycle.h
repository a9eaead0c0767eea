#ifndef DERENROLL_LIFECYCLE_H
#define DERENROLL_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "derenroll/export.h"

/*
 * Keeping enrolled systems alive: a record's status (what needs a person and
 * when), checking it against its vendor now, and refreshing its tokens. A
 * rotated refresh token is written to the store's journal the moment it
 * arrives (enr_store_lock_journal()), before the new access token is used,
 * under the record's lock, so two processes never both spend one refresh
 * token and a kill at any instant after the answer loses nothing.
 */

struct enr_config;
struct enr_catalog;
struct enr_store;
struct enr_record;
struct enr_http_multi;

enum enr_status {
	ENR_STATUS_REJECTED = 0, /* the vendor refused the credentials: the customer is needed */
	ENR_STATUS_EXPIRED,      /* what cannot be renewed without the customer has expired */
	ENR_STATUS_EXPIRING,     /* ... expires within [ui] expiring_days */
	ENR_STATUS_UNKNOWN,      /* never checked, or only transient failures */
	ENR_STATUS_OK,
};

/* "rejected", "expired", "expiring", "unknown", "ok". */
ENR_API const char *enr_status_name(enum enr_status status);

/*
 * The status of a record at `now`. `due` (may be NULL) gets the time at which
 * the customer will be needed (the refresh token's expiry, else the access
 * token's when nothing can renew it; `now` for a rejected record), 0 when
 * never. An access token that a valid refresh token can renew is not
 * "expiring".
 */
ENR_API enum enr_status enr_status_of(const struct enr_record *rec, long long now,
                                      long expiring_days, long long *due);

/*
 * When the customer will be needed (enr_status_of()'s `due`), for people:
 * "2027-02-26 02:25 UTC", "now" for a rejected record, or `never` when
 * nothing expires.
 */
ENR_API void enr_lifecycle_due_text(char *buf, size_t size, const struct enr_record *rec,
                                    const char *never);

/*
 * Why a record is rejected, expired or expiring at `now`, one line for
 * people ("the refresh token expires 2027-02-26 02:25 UTC: re-authorize with
 * the customer before then"); "" for the other statuses. The vendor's words
 * are included as they are: make them visible before printing.
 */
ENR_API void enr_lifecycle_reason_text(char *buf, size_t size, const struct enr_record *rec,
                                       long long now, long expiring_days);

/* Whether the record holds a refresh token its vendor can use now. */
ENR_API bool enr_lifecycle_can_refresh(const struct enr_record *rec,
                                       const struct enr_catalog *catalog, long long now);

/*
 * What `refresh --due DAYS` refreshes: a record that can be refreshed whose
 * refresh token expires within `days`, or whose access token has expired.
 */
ENR_API bool enr_lifecycle_refresh_due(const struct enr_record *rec,
                                       const struct enr_catalog *catalog, long long now, long days);

/* What a job does to a record. */
enum enr_job_kind {
	ENR_JOB_CHECK,   /* check it (refreshing first when the access token is stale) */
	ENR_JOB_REFRESH, /* refresh its tokens (then check with the new access token) */
};

/* The outcome of one record's job. */
struct enr_job_result {
	const char *id;
	const char *vendor;
	int error;           /* 0 or the failure class */
	const char *message; /* one line; NULL when ok, or what was not needed ("nothing to
	                        refresh: ...") */
	long retry_after;    /* seconds (429, 503), -1 when not said */
	int rate_limit;      /* the vendor's rate limit the answer reported on, or -1 */
	long rate_remaining; /* calls left in that limit's window, -1 when not said */
	long rate_window;    /* that window's size as the vendor reported it, -1 when not */
	bool refreshed;      /* new tokens were saved (at once, under the record's lock) */
	int store_error; /* new tokens arrived but could not be saved (the error): spend no more */
	long long checked_at; /* when the check answered, 0 when no check was made */
	size_t n_sites;       /* sites the check found */
	bool skipped;         /* not tried (a bulk run's deadline or a long Retry-After): nothing
	                         to note */
};

typedef void (*enr_job_done_fn)(const struct enr_job_result *result, void *ctx);

struct enr_job;

/*
 * Starts a job on record `id` on `multi`: locks the record (waiting up to the
 * store's lock timeout), re-reads it, and sends its first request. `done` is
 * called exactly once, from enr_http_multi_step() or, when the job could not
 * start, before this returns (the return value is then that error too). The
 * job frees itself after `done`. The record's lock is held only while its
 * tokens are being refreshed. New tokens and a rejected refresh are saved by
 * the job; the outcome of a check is not: record it with
 * enr_lifecycle_save_results(), which writes many in one transaction.
 * Transient failures leave the credentials as they were.
 */
ENR_API int enr_job_start(struct enr_job **out, struct enr_store *store,
                          const struct enr_config *cfg, const struct enr_catalog *catalog,
                          struct enr_http_multi *multi, const char *id, enum enr_job_kind kind,
                          enr_job_done_fn done, void *ctx);

/*
 * enr_job_start() of an ENR_JOB_REFRESH made only while the record is due
 * within `due_days` (enr_lifecycle_refresh_due()), as it is under its lock:
 * one that another process refreshed meanwhile (a second machine's
 * `refresh --due` over the same team store) is done without a vendor call,
 * its result saying so. A negative `due_days`: enr_job_start().
 */
ENR_API int enr_job_start_due(struct enr_job **out, struct enr_store *store,
                              const struct enr_config *cfg, const struct enr_catalog *catalog,
                              struct enr_http_multi *multi, const char *id, long due_days,
                              enr_job_done_fn done, void *ctx);

/* Stops a job (no callback), releasing its lock. */
ENR_API void enr_job_cancel(struct enr_job *job);

/*
 * Writes last_check {at, result, message} of each job result that made a check
 * or failed (one transaction for all of them). A rejected outcome stays until
 * the record is re-authorized; a transient one does not hide an earlier
 * rejection.
 */
ENR_API int enr_lifecycle_save_results(struct enr_store *store,
                                       const struct enr_job_result *results, size_t n);

/*
 * Writes the public JSON view of a record, one object, as `derenroll list
 * --json`, `show --json` and `enroll --json` print it (documented in the
 * JSON OUTPUT section of derenroll(1), kept stable): id, customer, vendor,
 * method, account, region (Tesla's "na", "eu" or "cn"; null for other
 * vendors), sites [{id, name}], status, access_expires_at,
 * refresh_expires_at (RFC 3339 UTC, null when none), created_at, updated_at,
 * last_check ({at, result, message} or null). No secret unless `reveal`,
 * which adds "credentials" with them.
 */
ENR_API int enr_record_view_write(FILE *out, const struct enr_record *rec, long long now,
                                  long expiring_days, bool reveal);

/* Blocking form for one record: runs a job on a private multi. */
ENR_API int enr_lifecycle_run(struct enr_store *store, const struct enr_config *cfg,
                              const struct enr_catalog *catalog, const char *id,
                              enum enr_job_kind kind, bool *refreshed);

#endif
