#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "derenroll/check.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/lifecycle.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "util.h"

/* An access token this close to its expiry is refreshed before a check. */
#define STALE_MARGIN 120
/* What start_refresh() returns when the job finished at once (and is freed). */
#define JOB_FINISHED 1

static const char *const status_names[] = {"rejected", "expired", "expiring", "unknown", "ok"};

const char *enr_status_name(enum enr_status status)
{
	return (unsigned)status < ENR_ARRAY_SIZE(status_names) ? status_names[status] : "unknown";
}

/* The token itself when the credentials were read, else what the store noted. */
static bool has_refresh_token(const struct enr_record *rec)
{
	if (rec->cred.tokens.refresh_token)
		return rec->cred.tokens.refresh_token[0] != '\0';
	return rec->cred.refreshable;
}

/* Credentials that a refresh renews (the others are keys, or renewed by someone else). */
static bool holds_own_tokens(const struct enr_record *rec)
{
	return rec->cred.type == ENR_CRED_OAUTH || rec->cred.type == ENR_CRED_PARTNER;
}

/* What only the customer can renew: the refresh token, else the access token. */
static long long customer_limit(const struct enr_record *rec)
{
	return has_refresh_token(rec) ? rec->refresh_expires_at : rec->access_expires_at;
}

enum enr_status enr_status_of(const struct enr_record *rec, long long now, long expiring_days,
                              long long *due)
{
	long long limit = customer_limit(rec);

	/* Refused: the customer is needed now, whatever the tokens' dates say. */
	if (rec->last_check.outcome == ENR_OUTCOME_REJECTED) {
		if (due)
			*due = now;
		return ENR_STATUS_REJECTED;
	}
	if (due)
		*due = limit;
	if (limit && limit <= now)
		return ENR_STATUS_EXPIRED;
	if (limit && limit <= now + (long long)expiring_days * 86400)
		return ENR_STATUS_EXPIRING;
	if (rec->last_check.outcome != ENR_OUTCOME_OK)
		return ENR_STATUS_UNKNOWN;
	return ENR_STATUS_OK;
}

void enr_lifecycle_due_text(char *buf, size_t size, const struct enr_record *rec, const char *never)
{
	long long due = 0;
	time_t t;
	struct tm tm;

	if (enr_status_of(rec, (long long)time(NULL), 0, &due) == ENR_STATUS_REJECTED) {
		snprintf(buf, size, "now");
		return;
	}
	if (!due) {
		snprintf(buf, size, "%s", never);
		return;
	}
	t = (time_t)due;
	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M UTC", &tm);
}

/* "2027-02-26 02:25 UTC" */
static void day_text(char *buf, size_t size, long long at)
{
	time_t t = (time_t)at;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M UTC", &tm);
}

void enr_lifecycle_reason_text(char *buf, size_t size, const struct enr_record *rec, long long now,
                               long expiring_days)
{
	enum enr_status status = enr_status_of(rec, now, expiring_days, NULL);
	long long limit = customer_limit(rec);
	const char *what = has_refresh_token(rec) ? "the refresh token"
	                                          : "the access token (no refresh token renews it)";
	char when[32];

	buf[0] = '\0';
	if (status == ENR_STATUS_REJECTED) {
		snprintf(buf, size,
		         "the vendor refused the credentials%s%s: re-authorize with the "
		         "customer",
		         rec->last_check.message ? ": " : "",
		         rec->last_check.message ? rec->last_check.message : "");
		return;
	}
	if (status != ENR_STATUS_EXPIRED && status != ENR_STATUS_EXPIRING)
		return;
	day_text(when, sizeof(when), limit);
	snprintf(buf, size, "%s %s %s: re-authorize with the customer%s", what,
	         status == ENR_STATUS_EXPIRED ? "expired" : "expires", when,
	         status == ENR_STATUS_EXPIRED ? "" : " before then");
}

static bool vendor_can_refresh(const struct enr_record *rec, const struct enr_vendor *vendor,
                               long long now)
{
	if (!vendor || !vendor->has_oauth || !has_refresh_token(rec))
		return false;
	if (strcmp(rec->method, "join") == 0)
		return false; /* Derapi keeps Join tokens fresh */
	return rec->refresh_expires_at == 0 || rec->refresh_expires_at > now;
}

bool enr_lifecycle_can_refresh(const struct enr_record *rec, const struct enr_catalog *catalog,
                               long long now)
{
	return vendor_can_refresh(rec, enr_catalog_find(catalog, rec->vendor), now);
}

static bool vendor_refresh_due(const struct enr_record *rec, const struct enr_vendor *vendor,
                               long long now, long days)
{
	long long horizon = now + (long long)days * 86400;

	if (!vendor_can_refresh(rec, vendor, now))
		return false;
	/* The authorization (the refresh token) lapses within DAYS: a refresh
	 * renews a rotating one. An access token that has already expired is
	 * renewed too: the record is unusable until then. Access tokens that are
	 * still valid are renewed when used. */
	return (rec->refresh_expires_at && rec->refresh_expires_at <= horizon) ||
	       (rec->access_expires_at && rec->access_expires_at <= now);
}

bool enr_lifecycle_refresh_due(const struct enr_record *rec, const struct enr_catalog *catalog,
                               long long now, long days)
{
	return vendor_refresh_due(rec, enr_catalog_find(catalog, rec->vendor), now, days);
}

static bool same_text(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool access_is_stale(const struct enr_record *rec, long long now)
{
	return rec->access_expires_at && rec->access_expires_at <= now + STALE_MARGIN;
}

struct enr_job {
	struct enr_store *store;
	const struct enr_config *cfg;
	const struct enr_vendor *vendor;
	const struct enr_vendor *derapi; /* Join records are checked through Derapi */
	struct enr_http_multi *multi;
	enum enr_job_kind kind;
	struct enr_record *rec;      /* our copy, updated after a refresh */
	struct enr_store_lock *lock; /* held while refreshing */
	uint64_t transfer;
	enr_job_done_fn done;
	void *ctx;
	struct enr_job_result result;
	char *message;
	char *app_token;      /* SMA backchannel records: the app's client-credentials token */
	bool region_asked;    /* Tesla answered 421 once: its users/region was asked */
	bool refresh_retried; /* a lost refresh answer was asked for again */
	bool access_refused;  /* the vendor refused the access token: refreshed, then checked */
	long due_days;        /* enr_job_start_due(); negative: refresh whatever its dates */
};

static void job_free(struct enr_job *job)
{
	if (!job)
		return;
	enr_store_unlock(job->lock);
	enr_record_free(job->rec);
	enr_util_free_secret(job->app_token);
	free(job->message);
	free(job);
}

/* Reports the outcome and frees the job. Returns `error`. */
static int finish(struct enr_job *job, int error)
{
	job->result.error = error;
	if (error) {
		free(job->message);
		job->message = enr_util_strdup(enr_error_last());
		job->result.message = job->message;
	}
	job->result.id = job->rec ? job->rec->id : NULL;
	job->result.vendor = job->rec ? job->rec->vendor : NULL;
	if (job->lock) {
		enr_store_unlock(job->lock);
		job->lock = NULL;
	}
	job->done(&job->result, job->ctx);
	job_free(job);
	return error;
}

/* Sends a request built with `rc` (0 or the builder's error) and frees it. */
static int send_request(struct enr_job *job, int rc, struct enr_http_request *req,
                        enr_http_done_fn done)
{
	if (rc == 0)
		rc = enr_http_multi_add(&job->transfer, job->multi, req, done, job);
	enr_http_request_free(req);
	return rc;
}

/* What every answer does first: the transfer is over; keep its Retry-After. */
static struct enr_job *answered(const struct enr_http_response *resp, void *ctx)
{
	struct enr_job *job = ctx;

	job->transfer = 0;
	job->result.retry_after = resp->retry_after;
	if (resp->rate_limit >= 0) {
		job->result.rate_limit = resp->rate_limit;
		job->result.rate_remaining = resp->rate_remaining;
		job->result.rate_window = resp->rate_window;
	}
	return job;
}

static int start_check(struct enr_job *job);
static int start_refresh(struct enr_job *job);
static void on_users_region(struct enr_http_response *resp, void *ctx);

/* Tesla's 421: the account lives in another region. Asks which (once). */
static bool ask_region(struct enr_job *job, const struct enr_http_response *resp)
{
	struct enr_http_request *req = NULL;
	int rc;

	if (job->derapi || job->region_asked || resp->error || resp->status != 421 ||
	    !enr_tesla_record_endpoint(job->rec))
		return false;
	job->region_asked = true;
	rc = enr_tesla_users_region_request(&req, job->vendor, job->cfg,
	                                    enr_tesla_region_of(job->rec->region),
	                                    job->rec->cred.tokens.access_token);
	if (send_request(job, rc, req, on_users_region) < 0)
		finish(job, enr_error_last_code());
	return true;
}

static int set_region(struct enr_record *rec, void *ctx)
{
	return enr_record_set(&rec->region, ctx);
}

static void on_users_region(struct enr_http_response *resp, void *ctx)
{
	struct enr_job *job = answered(resp, ctx);
	enum enr_tesla_region region = ENR_TESLA_NA;
	const char *name;
	int rc;

	rc = enr_tesla_users_region_response(&region, job->vendor, job->cfg, resp);
	enr_http_response_free(resp);
	name = enr_tesla_region_name(region);
	if (rc == 0 && region == enr_tesla_region_of(job->rec->region))
		rc =
		    enr_error_set(ENR_E_MISCONFIGURED,
		                  "Tesla answered HTTP 421 (wrong region) from the region it names "
		                  "for this account (%s): check [vendor.tesla] %s",
		                  name, enr_tesla_endpoint(region));
	/* The record remembers where its account lives, then the check goes there. */
	if (rc == 0 && (rc = enr_record_set(&job->rec->region, name)) == 0 &&
	    (rc = enr_store_update(job->store, job->rec->id, set_region, (void *)name)) == 0)
		rc = start_check(job);
	if (rc < 0)
		finish(job, rc);
}

static void on_check_done(struct enr_http_response *resp, void *ctx)
{
	struct enr_job *job = answered(resp, ctx);
	struct enr_check_result *result = NULL;
	int rc;

	if (ask_region(job, resp)) {
		enr_http_response_free(resp);
		return;
	}
	rc = enr_check_response(&result, job->derapi ? job->derapi : job->vendor, resp);
	/* An access token refused before its time (revoked, or expired early, as
	 * Enphase's do): what a valid refresh token renews is not the customer's
	 * to renew. Refreshed once, then checked again. */
	if (rc == ENR_E_REJECTED && !resp->error && resp->status == 401 && !job->derapi &&
	    !job->access_refused && !job->result.refreshed &&
	    vendor_can_refresh(job->rec, job->vendor, (long long)time(NULL))) {
		job->access_refused = true;
		enr_log_info("record %s: %s refused the access token (%s): refreshing it",
		             job->rec->id, job->vendor->name, enr_error_last());
		enr_check_result_free(result);
		enr_http_response_free(resp);
		if ((rc = start_refresh(job)) < 0)
			finish(job, rc);
		return;
	}
	if (rc < 0 && !resp->error && resp->status == 412 && enr_tesla_record_endpoint(job->rec)) {
		char *advice = enr_util_strdup(enr_error_last());
		enr_error_set(rc, "%s This record's region: %s.", advice ? advice : "",
		              enr_tesla_region_name(enr_tesla_region_of(job->rec->region)));
		free(advice);
	}
	if (rc < 0 && job->derapi && !resp->error && resp->status == 401)
		enr_join_token_forget();
	job->result.checked_at = (long long)time(NULL);
	if (rc == 0)
		job->result.n_sites = result->n_sites;
	/* The credentials work, but must still reach this customer's site. */
	if (rc == 0 && job->rec->n_sites) {
		bool found = false;
		for (size_t i = 0; i < job->rec->n_sites && !found; i++)
			found = enr_check_find_site(result, job->rec->sites[i].id) != NULL;
		if (!found)
			rc = enr_error_set(ENR_E_REJECTED,
			                   "%s no longer lists site %s for these credentials: "
			                   "re-authorize with the customer",
			                   job->vendor->name, job->rec->sites[0].id);
	}
	enr_check_result_free(result);
	enr_http_response_free(resp);
	finish(job, rc);
}

static void on_app_token(struct enr_http_response *resp, void *ctx);
static void on_derapi_token(struct enr_http_response *resp, void *ctx);

static int start_check(struct enr_job *job)
{
	struct enr_http_request *req = NULL;
	struct enr_credentials cred = job->rec->cred;
	int rc;

	/* A record enrolled through SMA's e-mail holds no token of its own: its
	 * plants are read with the app's client-credentials token. */
	if (cred.type == ENR_CRED_EMAIL) {
		if (!job->app_token) {
			rc =
			    enr_oauth_client_credentials_request(&req, job->vendor, job->cfg, NULL);
			return send_request(job, rc, req, on_app_token);
		}
		cred.tokens.access_token = job->app_token;
	}
	if (job->derapi) {
		/* Derapi's app token, cached per process across jobs. */
		if (!job->app_token && enr_join_token_cached(&job->app_token, job->cfg) < 0) {
			rc = enr_join_token_request(&req, job->derapi, job->cfg);
			return send_request(job, rc, req, on_derapi_token);
		}
		rc = enr_join_check_request(&req, job->derapi, job->cfg, job->app_token,
		                            job->vendor, &cred);
	} else {
		rc = enr_check_request_at(&req, job->vendor, job->cfg,
		                          enr_tesla_record_endpoint(job->rec), job->rec->method,
		                          &cred, (long long)time(NULL));
	}
	return send_request(job, rc, req, on_check_done);
}

static void on_app_token(struct enr_http_response *resp, void *ctx)
{
	struct enr_job *job = answered(resp, ctx);
	struct enr_oauth_tokens *tokens = NULL;
	int rc;

	rc = enr_oauth_token_response(&tokens, resp);
	enr_http_response_free(resp);
	if (rc == 0) {
		job->app_token = enr_util_strdup(tokens->access_token);
		rc = job->app_token ? start_check(job) : ENR_E_NOMEM;
	}
	enr_oauth_tokens_free(tokens);
	if (rc < 0)
		finish(job, rc);
}

static void on_derapi_token(struct enr_http_response *resp, void *ctx)
{
	struct enr_job *job = answered(resp, ctx);
	int rc;

	rc = enr_join_token_response(&job->app_token, job->cfg, resp);
	enr_http_response_free(resp);
	if (rc == 0)
		rc = start_check(job);
	if (rc < 0)
		finish(job, rc);
}

/* New tokens that could not be saved: no more are spent (the bulk stops). */
static void tokens_unsaved(struct enr_job *job, int rc)
{
	enr_log_error("record %s: new tokens could not be saved: %s", job->rec->id,
	              enr_error_last());
	job->result.store_error = rc;
	finish(job, rc);
}

/* After every answer of the step: the journal synced once for all their tokens. */
static void on_tokens_written(void *ctx)
{
	struct enr_job *job = ctx;
	struct enr_record *locked = enr_store_lock_record_get(job->lock);
	int rc;

	job->transfer = 0;
	if ((rc = enr_store_sync(job->store)) < 0) {
		tokens_unsaved(job, rc);
		return;
	}
	job->result.refreshed = true;
	enr_record_free(job->rec);
	job->rec = NULL;
	rc = enr_record_dup(&job->rec, locked);
	enr_store_unlock(job->lock);
	job->lock = NULL;
	if (rc == 0)
		rc = start_check(job);
	if (rc < 0)
		finish(job, rc);
}

static void on_refresh_done(struct enr_http_response *resp, void *ctx)
{
	struct enr_job *job = answered(resp, ctx);
	struct enr_oauth_tokens *tokens = NULL;
	struct enr_record *locked = enr_store_lock_record_get(job->lock);
	int rc;

	/* The answer was lost on the way (the vendor may have rotated the token):
	 * where the vendor keeps the previous one valid a while, ask again once. */
	if (resp->error && !job->refresh_retried && job->vendor->tokens.refresh_grace > 0) {
		struct enr_http_request *req = NULL;
		job->refresh_retried = true;
		enr_log_info("record %s: the refresh answer was lost (%s); %s keeps the previous "
		             "refresh token valid for %ld s: asking again",
		             locked->id, resp->message ? resp->message : "no answer",
		             job->vendor->name, job->vendor->tokens.refresh_grace);
		enr_http_response_free(resp);
		rc = enr_oauth_refresh_request(&req, job->vendor, job->cfg,
		                               locked->cred.tokens.refresh_token);
		if (send_request(job, rc, req, on_refresh_done) < 0)
			finish(job, enr_error_last_code());
		return;
	}
	rc = enr_oauth_token_response(&tokens, resp);
	enr_http_response_free(resp);
	if (rc == 0) {
		/* On disk (the store's journal) before the new access token is
		 * used: a rotated refresh token exists nowhere else. */
		rc = enr_record_set_tokens(locked, tokens);
		if (rc == 0 && !locked->region)
			rc = enr_tesla_note_region(locked, tokens->refresh_token,
			                           tokens->access_token, NULL);
		/* Written at once; synced with the other answers of this step. */
		if (rc == 0)
			rc = enr_store_lock_journal(job->store, job->lock, false);
		enr_oauth_tokens_free(tokens);
		if (rc == 0)
			rc = enr_http_multi_defer(&job->transfer, job->multi, on_tokens_written,
			                          job);
		if (rc < 0)
			tokens_unsaved(job, rc);
		return;
	}
	if (rc == ENR_E_REJECTED) {
		char *message = enr_util_strdup(enr_error_last());
		locked->last_check.at = (long long)time(NULL);
		locked->last_check.outcome = ENR_OUTCOME_REJECTED;
		enr_record_set(&locked->last_check.message, message);
		/* Through the journal: a whole write now would hold up the answers
		 * of the other refreshes in flight. */
		if (enr_store_lock_journal(job->store, job->lock, false) < 0)
			enr_log_error("record %s: could not note the rejection: %s", locked->id,
			              enr_error_last());
		enr_error_set(ENR_E_REJECTED, "%s", message ? message : "rejected");
		free(message);
	}
	finish(job, rc);
}

static int start_refresh(struct enr_job *job)
{
	struct enr_http_request *req = NULL;
	struct enr_record *locked;
	long long now = (long long)time(NULL);
	int rc;

	/* Under the record's lock, with the record as it is now: another
	 * process may have just rotated its refresh token. */
	rc = enr_store_lock_record(&job->lock, job->store, job->rec->id);
	if (rc < 0)
		return rc;
	locked = enr_store_lock_record_get(job->lock);
	/* After a refused access token: renewed already when another process
	 * refreshed the record meanwhile. */
	if (job->kind == ENR_JOB_CHECK &&
	    (job->access_refused
	         ? !same_text(locked->cred.tokens.access_token, job->rec->cred.tokens.access_token)
	         : !access_is_stale(locked, now))) {
		enr_record_free(job->rec);
		job->rec = NULL;
		rc = enr_record_dup(&job->rec, locked);
		enr_store_unlock(job->lock);
		job->lock = NULL;
		return rc == 0 ? start_check(job) : rc;
	}
	/* Due no more: refreshed by another process since this one chose it. */
	if (job->kind == ENR_JOB_REFRESH && job->due_days >= 0 &&
	    !vendor_refresh_due(locked, job->vendor, now, job->due_days)) {
		enr_record_free(job->rec);
		job->rec = NULL;
		if ((rc = enr_record_dup(&job->rec, locked)) < 0)
			return rc;
		free(job->message);
		job->message = enr_util_printf("refreshed meanwhile by another process: not due "
		                               "in %ld day%s any more",
		                               job->due_days, job->due_days == 1 ? "" : "s");
		job->result.message = job->message;
		finish(job, 0);
		return JOB_FINISHED;
	}
	if (!has_refresh_token(locked))
		return enr_error_set(ENR_E_EXPIRED, "%s: record %s holds no refresh token",
		                     job->vendor->name, locked->id);
	rc = enr_oauth_refresh_request(&req, job->vendor, job->cfg,
	                               locked->cred.tokens.refresh_token);
	return send_request(job, rc, req, on_refresh_done);
}

/* A refresh of a record that holds no token of its own: no failure, nothing noted. */
static int nothing_to_refresh(struct enr_job *job, const char *why)
{
	free(job->message);
	job->message = enr_util_printf("nothing to refresh: %s", why);
	job->result.message = job->message;
	return finish(job, 0);
}

/* Tokens that no refresh can renew: the customer is needed (a rejection). */
static int cannot_refresh(const struct enr_job *job)
{
	const struct enr_record *rec = job->rec;
	const char *customer = rec->customer ? rec->customer : "";
	char when[32];

	if (!has_refresh_token(rec))
		return enr_error_set(ENR_E_REJECTED,
		                     "record %s (%s) holds no refresh token: only the customer can "
		                     "renew its access (derenroll reauth %s)",
		                     rec->id, customer, rec->id);
	if (rec->refresh_expires_at && rec->refresh_expires_at <= (long long)time(NULL)) {
		day_text(when, sizeof(when), rec->refresh_expires_at);
		return enr_error_set(ENR_E_EXPIRED,
		                     "record %s (%s): its refresh token expired %s: re-authorize "
		                     "it with the customer (derenroll reauth %s)",
		                     rec->id, customer, when, rec->id);
	}
	return enr_error_set(ENR_E_REJECTED,
	                     "record %s (%s): %s takes no refresh token: re-authorize it with "
	                     "the customer (derenroll reauth %s)",
	                     rec->id, customer, job->vendor->name, rec->id);
}

static int job_start(struct enr_job **out, struct enr_store *store, const struct enr_config *cfg,
                     const struct enr_catalog *catalog, struct enr_http_multi *multi,
                     const char *id, enum enr_job_kind kind, long due_days, enr_job_done_fn done,
                     void *ctx)
{
	struct enr_job *job = calloc(1, sizeof(*job));
	long long now = (long long)time(NULL);
	int rc;

	if (out)
		*out = NULL;
	if (!job) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		struct enr_job_result r = {.id = id,
		                           .error = rc,
		                           .retry_after = -1,
		                           .rate_limit = -1,
		                           .rate_remaining = -1,
		                           .rate_window = -1,
		                           .message = enr_error_last()};
		done(&r, ctx);
		return rc;
	}
	job->store = store;
	job->cfg = cfg;
	job->multi = multi;
	job->kind = kind;
	job->due_days = due_days;
	job->done = done;
	job->ctx = ctx;
	job->result.retry_after = -1;
	job->result.rate_limit = -1;
	job->result.rate_remaining = -1;
	job->result.rate_window = -1;
	rc = enr_store_get(&job->rec, store, id);
	if (rc < 0)
		return finish(job, rc);
	job->vendor = enr_catalog_find(catalog, job->rec->vendor);
	if (!job->vendor)
		return finish(job, enr_error_set(ENR_E_CONFIG,
		                                 "record %s names vendor '%s', which "
		                                 "vendors.json does not know",
		                                 id, job->rec->vendor));
	if (strcmp(job->rec->method, "join") == 0) {
		job->derapi = enr_catalog_find(catalog, "derapi");
		if (!job->derapi)
			return finish(
			    job, enr_error_set(ENR_E_CONFIG, "vendors.json has no derapi entry"));
		if (kind == ENR_JOB_REFRESH)
			return nothing_to_refresh(job, "enrolled through Derapi Join: Derapi "
			                               "keeps its tokens fresh");
	}
	if (kind == ENR_JOB_REFRESH && !holds_own_tokens(job->rec))
		return nothing_to_refresh(job, "its credentials are a key, which does not expire");
	if (kind == ENR_JOB_REFRESH && !vendor_can_refresh(job->rec, job->vendor, now))
		return finish(job, cannot_refresh(job));
	if (kind == ENR_JOB_REFRESH ||
	    (access_is_stale(job->rec, now) && enr_lifecycle_can_refresh(job->rec, catalog, now)))
		rc = start_refresh(job);
	else
		rc = start_check(job);
	if (rc == JOB_FINISHED)
		return 0;
	if (rc < 0)
		return finish(job, rc);
	if (out)
		*out = job;
	return 0;
}

int enr_job_start(struct enr_job **out, struct enr_store *store, const struct enr_config *cfg,
                  const struct enr_catalog *catalog, struct enr_http_multi *multi, const char *id,
                  enum enr_job_kind kind, enr_job_done_fn done, void *ctx)
{
	return job_start(out, store, cfg, catalog, multi, id, kind, -1, done, ctx);
}

int enr_job_start_due(struct enr_job **out, struct enr_store *store, const struct enr_config *cfg,
                      const struct enr_catalog *catalog, struct enr_http_multi *multi,
                      const char *id, long due_days, enr_job_done_fn done, void *ctx)
{
	return job_start(out, store, cfg, catalog, multi, id, ENR_JOB_REFRESH, due_days, done, ctx);
}

void enr_job_cancel(struct enr_job *job)
{
	if (!job)
		return;
	if (job->transfer)
		enr_http_multi_cancel(job->multi, job->transfer);
	job_free(job);
}

struct save_ctx {
	const struct enr_job_result *results;
	size_t n;
};

static const struct enr_job_result *result_for(const struct save_ctx *sc, const char *id)
{
	for (size_t i = 0; i < sc->n; i++)
		if (sc->results[i].id && strcmp(sc->results[i].id, id) == 0)
			return &sc->results[i];
	return NULL;
}

static int note_result(struct enr_record *rec, void *ctx)
{
	const struct enr_job_result *r = result_for(ctx, rec->id);
	enum enr_record_outcome outcome;

	/* ENR_E_UNSUPPORTED: nothing to do for this record (a key record has no
	 * token to refresh): no check was made, none failed. */
	if (!r || r->skipped || (!r->checked_at && (!r->error || r->error == ENR_E_UNSUPPORTED)))
		return ENR_STORE_UNCHANGED;
	outcome = enr_record_outcome_from_error(r->error);
	/* A passing failure does not hide that the customer is needed. */
	if (rec->last_check.outcome == ENR_OUTCOME_REJECTED && outcome == ENR_OUTCOME_TRANSIENT)
		return ENR_STORE_UNCHANGED;
	rec->last_check.at = r->checked_at ? r->checked_at : (long long)time(NULL);
	rec->last_check.outcome = outcome;
	return enr_record_set(&rec->last_check.message, r->error ? r->message : NULL);
}

int enr_lifecycle_save_results(struct enr_store *store, const struct enr_job_result *results,
                               size_t n)
{
	struct save_ctx sc = {results, n};
	const char **ids = calloc(n ? n : 1, sizeof(*ids));
	size_t n_ids = 0;
	int rc;

	if (!ids)
		return enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = 0; i < n; i++)
		if (results[i].id)
			ids[n_ids++] = results[i].id;
	rc = enr_store_update_many(store, ids, n_ids, note_result, &sc);
	free(ids);
	return rc;
}

struct run_ctx {
	int error;
	bool refreshed;
	struct enr_job_result result;
	char *message;
	char *id;
};

static void on_run_done(const struct enr_job_result *result, void *ctx)
{
	struct run_ctx *rc = ctx;

	rc->error = result->error;
	rc->refreshed = result->refreshed;
	rc->result = *result;
	rc->message = enr_util_strdup(result->message);
	rc->id = enr_util_strdup(result->id);
	rc->result.message = rc->message;
	rc->result.id = rc->id;
	rc->result.vendor = NULL;
}

int enr_lifecycle_run(struct enr_store *store, const struct enr_config *cfg,
                      const struct enr_catalog *catalog, const char *id, enum enr_job_kind kind,
                      bool *refreshed)
{
	struct enr_http_multi *multi = NULL;
	struct run_ctx run = {0};
	int rc;

	if (refreshed)
		*refreshed = false;
	/* Room for the new tokens before any is spent. */
	if (kind == ENR_JOB_REFRESH && (rc = enr_store_reserve(store, &id, 1)) < 0)
		return rc;
	rc = enr_http_multi_new(&multi, cfg);
	if (rc < 0)
		return rc;
	enr_job_start(NULL, store, cfg, catalog, multi, id, kind, on_run_done, &run);
	enr_http_multi_run_until_idle(multi);
	enr_http_multi_free(multi);
	if (run.id && enr_lifecycle_save_results(store, &run.result, 1) < 0)
		enr_log_warn("record %s: could not note the check: %s", id, enr_error_last());
	if (run.error)
		enr_error_set(run.error, "%s", run.message ? run.message : "");
	if (refreshed)
		*refreshed = run.refreshed;
	rc = run.error;
	free(run.message);
	free(run.id);
	return rc;
}

static void write_time(FILE *out, const char *name, long long t)
{
	char buf[32];

	fprintf(out, ",\"%s\":", name);
	if (!t) {
		fputs("null", out);
		return;
	}
	enr_util_rfc3339(buf, sizeof(buf), t);
	fprintf(out, "\"%s\"", buf);
}

int enr_record_view_write(FILE *out, const struct enr_record *rec, long long now,
                          long expiring_days, bool reveal)
{
	enum enr_status status = enr_status_of(rec, now, expiring_days, NULL);

	fputs("{\"id\":", out);
	enr_util_json_string(out, rec->id);
	fputs(",\"customer\":", out);
	enr_util_json_string(out, rec->customer);
	fputs(",\"vendor\":", out);
	enr_util_json_string(out, rec->vendor);
	fputs(",\"method\":", out);
	enr_util_json_string(out, rec->method);
	fputs(",\"account\":", out);
	enr_util_json_string(out, rec->account);
	/* Only Tesla has regions; its records without one are NA. */
	fputs(",\"region\":", out);
	enr_util_json_string(out, strcmp(rec->vendor, "tesla") == 0
	                              ? enr_tesla_region_name(enr_tesla_region_of(rec->region))
	                              : NULL);
	fputs(",\"sites\":[", out);
	for (size_t i = 0; i < rec->n_sites; i++) {
		fputs(i ? ",{\"id\":" : "{\"id\":", out);
		enr_util_json_string(out, rec->sites[i].id);
		fputs(",\"name\":", out);
		enr_util_json_string(out, rec->sites[i].name);
		putc('}', out);
	}
	fprintf(out, "],\"status\":\"%s\"", enr_status_name(status));
	write_time(out, "access_expires_at", rec->access_expires_at);
	write_time(out, "refresh_expires_at", rec->refresh_expires_at);
	write_time(out, "created_at", rec->created_at);
	write_time(out, "updated_at", rec->updated_at);
	fputs(",\"last_check\":", out);
	if (rec->last_check.at || rec->last_check.outcome) {
		char buf[32];
		enr_util_rfc3339(buf, sizeof(buf), rec->last_check.at);
		fprintf(out, "{\"at\":\"%s\",\"result\":", buf);
		enr_util_json_string(out, rec->last_check.outcome
		                              ? enr_record_outcome_name(rec->last_check.outcome)
		                              : NULL);
		fputs(",\"message\":", out);
		enr_util_json_string(out, rec->last_check.message);
		putc('}', out);
	} else {
		fputs("null", out);
	}
	if (reveal && rec->n_extra) { /* what an import needs to give the record back whole */
		fputs(",\"extra\":{", out);
		for (size_t i = 0; i < rec->n_extra; i++) {
			if (i)
				putc(',', out);
			enr_util_json_string(out, rec->extra[i].key);
			putc(':', out);
			enr_util_json_string(out, rec->extra[i].value);
		}
		putc('}', out);
	}
	if (reveal) {
		struct json_object *full = NULL, *cred = NULL;
		int rc = enr_record_to_json_object(&full, rec, true);
		if (rc < 0)
			return rc;
		if (json_object_object_get_ex(full, "credentials", &cred)) {
			/* json-c passes bytes that are not UTF-8 through. */
			char *text = enr_text_utf8(
			    json_object_to_json_string_ext(cred, JSON_C_TO_STRING_PLAIN));
			if (!text) {
				json_object_put(full);
				return ENR_E_NOMEM;
			}
			fprintf(out, ",\"credentials\":%s", text);
			enr_util_free_secret(text);
		}
		json_object_put(full);
	}
	putc('}', out);
	return ferror(out) ? enr_error_set(ENR_E_IO, "cannot write the output") : 0;
}
