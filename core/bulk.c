#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "derenroll/bulk.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/vendor.h"
#include "bulk_internal.h"
#include "http_internal.h"
#include "util.h"

#define DEFAULT_MAX_TRIES      4
#define DEFAULT_BACKOFF_MS     1000
#define DEFAULT_MAX_BACKOFF_MS 60000
#define DEFAULT_MAX_IN_FLIGHT  64
#define DEFAULT_BATCH          200
#define DEFAULT_MAX_REFRESHING 2
#define REFRESH_GAP_MS         10
#define MAX_LIMITS             4   /* buckets per record */
#define BUSY_RETRY_MS          100 /* a record another machine holds: asked again after */

/* ---- pacing (pure) ---- */

void enr_bulk__bucket_init(struct enr_bulk__bucket *b, double requests, double per_seconds,
                           int concurrency, long long now_ms)
{
	b->capacity = requests > 0 && per_seconds > 0 ? requests : 0;
	b->rate_per_ms = b->capacity ? requests / (per_seconds * 1000.0) : 0;
	b->tokens = b->capacity;
	b->last_ms = now_ms;
	b->concurrency = concurrency > 0 ? concurrency : 0;
	b->in_flight = 0;
	b->max_in_flight = 0;
	b->blocked_until_ms = 0;
}

static double tokens_at(const struct enr_bulk__bucket *b, long long now_ms)
{
	double t = b->tokens;

	if (now_ms > b->last_ms)
		t += (double)(now_ms - b->last_ms) * b->rate_per_ms;
	return t < b->capacity ? t : b->capacity;
}

static double tokens_for(const struct enr_bulk__bucket *b, int calls)
{
	return calls < b->capacity ? (calls > 1 ? calls : 1) : b->capacity;
}

long long enr_bulk__bucket_wait(const struct enr_bulk__bucket *b, long long now_ms, int calls)
{
	double need = tokens_for(b, calls), tokens;
	long long wait = 0;

	if (b->concurrency && b->in_flight >= b->concurrency)
		return -1;
	if (b->blocked_until_ms > now_ms)
		wait = b->blocked_until_ms - now_ms;
	if (b->capacity) {
		tokens = tokens_at(b, now_ms + wait);
		if (tokens < need)
			wait += (long long)((need - tokens) / b->rate_per_ms) + 1;
	}
	return wait;
}

void enr_bulk__bucket_take(struct enr_bulk__bucket *b, long long now_ms, int calls)
{
	if (b->capacity) {
		b->tokens = tokens_at(b, now_ms) - tokens_for(b, calls);
		b->last_ms = now_ms;
	}
	b->in_flight++;
	if (b->in_flight > b->max_in_flight)
		b->max_in_flight = b->in_flight;
}

void enr_bulk__bucket_release(struct enr_bulk__bucket *b)
{
	if (b->in_flight > 0)
		b->in_flight--;
}

void enr_bulk__bucket_report(struct enr_bulk__bucket *b, long long now_ms, long remaining)
{
	double tokens;

	if (!b->capacity || remaining < 0)
		return;
	tokens = tokens_at(b, now_ms);
	b->tokens = (double)remaining < tokens ? (double)remaining : tokens;
	b->last_ms = now_ms;
}

void enr_bulk__bucket_window(struct enr_bulk__bucket *b, long long now_ms, long window)
{
	double tokens;

	if (!b->capacity || window < 1 || (double)window >= b->capacity)
		return;
	tokens = tokens_at(b, now_ms);
	b->rate_per_ms *= (double)window / b->capacity;
	b->capacity = (double)window;
	b->tokens = tokens < b->capacity ? tokens : b->capacity;
	b->last_ms = now_ms;
}

void enr_bulk__bucket_block(struct enr_bulk__bucket *b, long long until_ms)
{
	if (until_ms > b->blocked_until_ms)
		b->blocked_until_ms = until_ms;
}

long long enr_bulk__backoff_ms(int tries, long retry_after_s, long base_ms, long max_ms,
                               long long max_wait_ms)
{
	long long delay = base_ms;

	if (retry_after_s >= 0)
		return (long long)retry_after_s * 1000 <= max_wait_ms
		           ? (long long)retry_after_s * 1000
		           : -1;
	for (int i = 1; i < tries && delay < max_ms; i++)
		delay *= 2;
	if (delay > max_ms)
		delay = max_ms;
	return delay < max_wait_ms ? delay : max_wait_ms;
}

/* ---- the run ---- */

enum item_state { ITEM_WAITING, ITEM_RUNNING, ITEM_DONE };

struct item {
	char *id;
	const struct enr_vendor *vendor;
	size_t buckets[MAX_LIMITS];
	size_t n_buckets;
	int calls; /* requests its job will send */
	int tries;
	long long not_before_ms;
	enum item_state state;
	struct enr_bulk *bulk;
	struct enr_job *job;
};

struct enr_bulk {
	struct enr_store *store;
	const struct enr_config *cfg;
	const struct enr_catalog *catalog;
	struct enr_bulk_options opts;
	struct enr_http_multi *multi;
	struct item *items;
	size_t n_items, cap_items;
	size_t next_waiting; /* items before it are all running or done */
	struct enr_bulk__bucket *buckets;
	size_t n_buckets, cap_buckets;
	struct enr_job_result *results;
	size_t n_results, n_saved;
	size_t in_flight, retries, failed;
	size_t refreshing;         /* running jobs that spend a refresh token */
	bool fold_due;             /* a batch waits for the refreshes in flight to end */
	long long last_refresh_ms; /* when the last refresh started */
	bool reserved;             /* room for the new tokens was made in the store's journal */
	int store_error;     /* the first failure to write the store: no token is spent after it */
	char *store_message; /* what it said */
	long long started_ms, last_report_ms;
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int enr_bulk_new(struct enr_bulk **out, struct enr_store *store, const struct enr_config *cfg,
                 const struct enr_catalog *catalog, const struct enr_bulk_options *opts)
{
	struct enr_bulk *bulk = calloc(1, sizeof(*bulk));
	int rc;

	*out = NULL;
	if (!bulk)
		return enr_error_set(ENR_E_NOMEM, NULL);
	bulk->store = store;
	bulk->cfg = cfg;
	bulk->catalog = catalog;
	if (opts)
		bulk->opts = *opts;
	if (bulk->opts.max_tries <= 0)
		bulk->opts.max_tries = DEFAULT_MAX_TRIES;
	if (bulk->opts.backoff_ms <= 0)
		bulk->opts.backoff_ms = DEFAULT_BACKOFF_MS;
	if (bulk->opts.max_backoff_ms <= 0)
		bulk->opts.max_backoff_ms = DEFAULT_MAX_BACKOFF_MS;
	if (bulk->opts.max_in_flight <= 0)
		bulk->opts.max_in_flight = DEFAULT_MAX_IN_FLIGHT;
	if (bulk->opts.batch == 0)
		bulk->opts.batch = DEFAULT_BATCH;
	if (bulk->opts.max_refreshing <= 0)
		bulk->opts.max_refreshing = DEFAULT_MAX_REFRESHING;
	if (bulk->opts.max_wait_ms <= 0)
		bulk->opts.max_wait_ms = (long long)enr_http__max_wait_s(cfg) * 1000;
	bulk->started_ms = now_ms();
	rc = enr_http_multi_new(&bulk->multi, cfg);
	if (rc < 0) {
		free(bulk);
		return rc;
	}
	/* Several machines share a run over a team store: a record another one holds is
	 * skipped for now, not waited for (which would hold up the answers in flight). */
	enr_store_set_skip_locked(store, true);
	*out = bulk;
	return 0;
}

static void free_result(struct enr_job_result *r)
{
	free((char *)r->id);
	free((char *)r->vendor);
	free((char *)r->message);
}

void enr_bulk_free(struct enr_bulk *bulk)
{
	if (!bulk)
		return;
	for (size_t i = 0; i < bulk->n_items; i++) {
		if (bulk->items[i].job)
			enr_job_cancel(bulk->items[i].job);
		free(bulk->items[i].id);
	}
	enr_http_multi_free(bulk->multi);
	enr_store_set_skip_locked(bulk->store, false);
	for (size_t i = 0; i < bulk->n_buckets; i++)
		free(bulk->buckets[i].key);
	for (size_t i = 0; i < bulk->n_results; i++)
		free_result(&bulk->results[i]);
	free(bulk->results);
	free(bulk->store_message);
	free(bulk->buckets);
	free(bulk->items);
	free(bulk);
}

/* FNV-1a: buckets of keys are named by a hash, so no further copy of a secret exists. */
static uint64_t hash64(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; s && *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* The credential a per-key limit counts against. */
static const char *credential_of(const struct enr_record *rec)
{
	const struct enr_credentials *c = &rec->cred;

	switch (c->type) {
	case ENR_CRED_API_KEY:
		return c->api_key;
	case ENR_CRED_KEY_PAIR:
		return c->key_id;
	case ENR_CRED_ACCOUNT:
		return c->account.secret_name ? c->account.secret_name : "account";
	case ENR_CRED_PARTNER:
		return c->api_key ? c->api_key : c->tokens.refresh_token;
	default:
		return c->tokens.refresh_token ? c->tokens.refresh_token : c->tokens.access_token;
	}
}

/* "host[:port]" of the vendor's API the record talks to (its Tesla region's), into buf. */
static void api_host(char *buf, size_t size, const struct enr_vendor *v,
                     const struct enr_config *cfg, const struct enr_record *rec)
{
	const char *endpoint = enr_tesla_record_endpoint(rec);
	const char *url = enr_vendor_endpoint(v, cfg, endpoint ? endpoint : "api_url");
	const char *start = url ? strstr(url, "://") : NULL;
	size_t len;

	start = start ? start + 3 : (url ? url : "");
	len = strcspn(start, "/?#");
	snprintf(buf, size, "%.*s", (int)len, start);
}

static int bucket_for(size_t *out, struct enr_bulk *bulk, const struct enr_vendor *v,
                      const struct enr_rate_limit *lim, const struct enr_record *rec)
{
	char key[512], host[256];
	struct enr_bulk__bucket *b;

	switch (lim->scope) {
	case ENR_LIMIT_PER_KEY:
		snprintf(key, sizeof(key), "%s/key/%016llx", v->id,
		         (unsigned long long)hash64(credential_of(rec)));
		break;
	case ENR_LIMIT_PER_ADDRESS:
		api_host(host, sizeof(host), v, bulk->cfg, rec);
		snprintf(key, sizeof(key), "%s/address/%s", v->id, host);
		break;
	default:
		snprintf(key, sizeof(key), "%s/app", v->id);
		break;
	}
	/* One rate limit of a vendor per scope: the key names it. */
	for (size_t i = 0; i < bulk->n_buckets; i++)
		if (strcmp(bulk->buckets[i].key, key) == 0) {
			*out = i;
			return 0;
		}
	if (bulk->n_buckets == bulk->cap_buckets) {
		size_t cap = bulk->cap_buckets ? bulk->cap_buckets * 2 : 16;
		void *p = realloc(bulk->buckets, cap * sizeof(*bulk->buckets));
		if (!p)
			return enr_error_set(ENR_E_NOMEM, NULL);
		bulk->buckets = p;
		bulk->cap_buckets = cap;
	}
	b = &bulk->buckets[bulk->n_buckets];
	memset(b, 0, sizeof(*b));
	b->key = enr_util_strdup(key);
	if (!b->key)
		return ENR_E_NOMEM;
	b->vendor = v->id;
	b->scope = (int)lim->scope;
	enr_bulk__bucket_init(b, lim->requests, lim->per_seconds, lim->concurrency, now_ms());
	*out = bulk->n_buckets++;
	return 0;
}

/* The requests a job on `rec` sends: a refresh first (asked for, or an access
 * token within lifecycle.c's 120 s of its expiry), or the app's token for a
 * record enrolled through SMA's e-mail, then the check. */
static int calls_of(const struct enr_record *rec, const struct enr_catalog *catalog,
                    enum enr_job_kind kind)
{
	long long now = (long long)time(NULL);

	if (kind == ENR_JOB_REFRESH || rec->cred.type == ENR_CRED_EMAIL)
		return 2;
	if (rec->access_expires_at && rec->access_expires_at <= now + 120 &&
	    enr_lifecycle_can_refresh(rec, catalog, now))
		return 2;
	return 1;
}

int enr_bulk_add(struct enr_bulk *bulk, const char *id)
{
	assert(bulk->n_results == 0 && bulk->in_flight == 0); /* adds come before the first step */
	struct enr_record *rec = NULL;
	struct item *it;
	int rc;

	rc = enr_store_get(&rec, bulk->store, id);
	if (rc < 0)
		return rc;
	if (bulk->n_items == bulk->cap_items) {
		size_t cap = bulk->cap_items ? bulk->cap_items * 2 : 64;
		void *items = realloc(bulk->items, cap * sizeof(*bulk->items));
		if (items)
			bulk->items = items;
		void *results = items ? realloc(bulk->results, cap * sizeof(*bulk->results)) : NULL;
		if (!results) {
			rc = enr_error_set(ENR_E_NOMEM, NULL);
			goto out;
		}
		bulk->results = results;
		bulk->cap_items = cap;
	}
	it = &bulk->items[bulk->n_items];
	memset(it, 0, sizeof(*it));
	it->bulk = bulk;
	it->calls = calls_of(rec, bulk->catalog, bulk->opts.kind);
	it->vendor = enr_catalog_find(bulk->catalog, rec->vendor);
	for (size_t i = 0; it->vendor && i < it->vendor->n_rate_limits && i < MAX_LIMITS; i++) {
		rc = bucket_for(&it->buckets[it->n_buckets], bulk, it->vendor,
		                &it->vendor->rate_limits[i], rec);
		if (rc < 0)
			goto out;
		it->n_buckets++;
	}
	it->id = enr_util_strdup(rec->id);
	if (!it->id) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	bulk->n_items++;
out:
	enr_record_free(rec);
	return rc;
}

size_t enr_bulk_poll_fds(const struct enr_bulk *bulk, struct pollfd *fds, size_t cap)
{
	return enr_http_multi_poll_fds(bulk->multi, fds, cap);
}

/* Milliseconds until `it` may start (0: now), -1 while a slot it needs is taken. */
static long long item_wait(const struct enr_bulk *bulk, const struct item *it, long long now)
{
	long long wait = it->not_before_ms > now ? it->not_before_ms - now : 0;

	/* Refreshes start a little apart, so that their answers do not arrive
	 * together and wait on each other to be saved. */
	if (it->calls > 1 && bulk->last_refresh_ms &&
	    bulk->last_refresh_ms + REFRESH_GAP_MS - now > wait)
		wait = bulk->last_refresh_ms + REFRESH_GAP_MS - now;
	for (size_t i = 0; i < it->n_buckets; i++) {
		long long w = enr_bulk__bucket_wait(&bulk->buckets[it->buckets[i]], now, it->calls);
		if (w < 0)
			return -1;
		if (w > wait)
			wait = w;
	}
	return wait;
}

long enr_bulk_timeout_ms(const struct enr_bulk *bulk)
{
	long long now = now_ms(), best = -1;
	long multi = enr_http_multi_timeout_ms(bulk->multi);

	if (bulk->n_saved < bulk->n_results && bulk->n_results == bulk->n_items)
		return 0; /* the last batch is waiting to be saved */
	if (bulk->in_flight < (size_t)bulk->opts.max_in_flight)
		for (size_t i = bulk->next_waiting; i < bulk->n_items && best != 0; i++) {
			const struct item *it = &bulk->items[i];
			long long w;
			if (it->state != ITEM_WAITING)
				continue;
			w = item_wait(bulk, it, now);
			if (w >= 0 && (best < 0 || w < best))
				best = w;
		}
	if (multi >= 0 && (best < 0 || multi < best))
		best = multi;
	if (bulk->opts.deadline_ms > 0 && bulk->next_waiting < bulk->n_items) {
		long long left = bulk->started_ms + bulk->opts.deadline_ms - now;
		if (left < 0)
			left = 0;
		if (best < 0 || left < best)
			best = left;
	}
	return (long)best;
}

static bool is_retryable(int error)
{
	return error == ENR_E_TRANSIENT || error == ENR_E_TIMEOUT;
}

static bool past_deadline(const struct enr_bulk *bulk, long long now)
{
	return bulk->opts.deadline_ms > 0 && now >= bulk->started_ms + bulk->opts.deadline_ms;
}

static void report_progress(struct enr_bulk *bulk)
{
	struct enr_bulk_progress p;

	bulk->last_report_ms = now_ms();
	if (!bulk->opts.progress)
		return;
	enr_bulk_get_progress(bulk, &p);
	bulk->opts.progress(&p, bulk->opts.progress_ctx);
}

/* Notes the final outcome of `it` (a copy of `result`). */
static void finish_item(struct item *it, const struct enr_job_result *result)
{
	struct enr_bulk *bulk = it->bulk;
	struct enr_job_result *r;

	it->state = ITEM_DONE;
	/* One final result per item: room was made by enr_bulk_add(). */
	r = &bulk->results[bulk->n_results++];
	*r = *result;
	r->id = enr_util_strdup(result->id ? result->id : it->id);
	r->vendor =
	    enr_util_strdup(result->vendor ? result->vendor : (it->vendor ? it->vendor->id : NULL));
	r->message = enr_util_strdup(result->message);
	if (result->error)
		bulk->failed++;
	report_progress(bulk);
}

/* The longest a Retry-After still holds `it` back, in ms (0: none). */
static long long blocked_ms(const struct enr_bulk *bulk, const struct item *it, long long now)
{
	long long wait = 0;

	for (size_t i = 0; i < it->n_buckets; i++) {
		long long until = bulk->buckets[it->buckets[i]].blocked_until_ms;
		if (until - now > wait)
			wait = until - now;
	}
	return wait;
}

/* Ends, untried, the waiting records that the deadline or a Retry-After
 * beyond max_wait_ms keeps from starting. */
static void give_up_waiting(struct enr_bulk *bulk, long long now)
{
	bool deadline = past_deadline(bulk, now);

	for (size_t i = bulk->next_waiting; i < bulk->n_items; i++) {
		struct item *it = &bulk->items[i];
		struct enr_job_result r = {.error = ENR_E_TRANSIENT,
		                           .retry_after = -1,
		                           .rate_limit = -1,
		                           .rate_remaining = -1,
		                           .rate_window = -1,
		                           .skipped = true};
		char msg[160], when[80];
		long long wait;

		if (it->state != ITEM_WAITING)
			continue;
		wait = blocked_ms(bulk, it, now);
		if (!deadline && wait <= bulk->opts.max_wait_ms)
			continue;
		if (deadline) {
			snprintf(msg, sizeof(msg),
			         "not done: the run reached its deadline; try again");
		} else {
			r.retry_after = (long)((wait + 999) / 1000);
			enr_http__retry_text(when, sizeof(when), r.retry_after,
			                     (long long)time(NULL));
			snprintf(msg, sizeof(msg),
			         "not tried: %s is limiting the rate of requests; %s",
			         it->vendor ? it->vendor->name : "the vendor", when);
		}
		r.message = msg;
		finish_item(it, &r);
	}
}

/* The first failure to write the store, kept with its message. */
static void note_store_error(struct enr_bulk *bulk, int rc, const char *message)
{
	if (bulk->store_error)
		return;
	bulk->store_error = rc;
	bulk->store_message = enr_util_strdup(message);
}

/* Ends every item not started yet with `error` and `message`: nothing more is sent. */
static void stop_waiting(struct enr_bulk *bulk, int error, const char *message)
{
	struct enr_job_result r = {.error = error,
	                           .message = message,
	                           .retry_after = -1,
	                           .rate_limit = -1,
	                           .rate_remaining = -1,
	                           .rate_window = -1,
	                           .skipped = true};

	for (size_t i = bulk->next_waiting; i < bulk->n_items; i++)
		if (bulk->items[i].state == ITEM_WAITING)
			finish_item(&bulk->items[i], &r);
	bulk->next_waiting = bulk->n_items;
}

/*
 * Room in the store's journal for the tokens the run may receive before its
 * results are next folded in (a batch, and what is in flight around it), so
 * that a full disk stops it before the first token is spent.
 */
static int reserve(struct enr_bulk *bulk)
{
	size_t cap = bulk->opts.batch + 2 * (size_t)bulk->opts.max_in_flight, n = 0;
	const char **ids = calloc(cap, sizeof(*ids));
	int rc;

	if (!ids)
		return enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = 0; i < bulk->n_items && n < cap; i++)
		if (bulk->items[i].calls > 1)
			ids[n++] = bulk->items[i].id;
	rc = enr_store_reserve(bulk->store, ids, n);
	free(ids);
	return rc;
}

static void on_job_done(const struct enr_job_result *result, void *ctx)
{
	struct item *it = ctx;
	struct enr_bulk *bulk = it->bulk;
	long long now = now_ms(), delay;

	it->job = NULL;
	if (result->store_error)
		note_store_error(bulk, result->store_error, result->message);
	for (size_t i = 0; i < it->n_buckets; i++) {
		struct enr_bulk__bucket *b = &bulk->buckets[it->buckets[i]];
		enr_bulk__bucket_release(b);
		/* Retry-After speaks for the whole bucket, not just this record. */
		if (result->error && result->retry_after >= 0)
			enr_bulk__bucket_block(b, now + (long long)result->retry_after * 1000);
		/* So does what the vendor says of the limit (SolarEdge's
		 * x-ratelimit-limit-minute and x-ratelimit-remaining-minute): its
		 * window may be smaller than vendors.json says, and other machines
		 * and earlier runs spend the same window. */
		if (result->rate_limit >= 0 && (size_t)result->rate_limit == i) {
			enr_bulk__bucket_window(b, now, result->rate_window);
			enr_bulk__bucket_report(b, now, result->rate_remaining);
		}
	}
	bulk->in_flight--;
	if (it->calls > 1)
		bulk->refreshing--;
	/* Another machine holds the record (a team store): again a little later, not a try. */
	if (result->error == ENR_E_AGAIN && !past_deadline(bulk, now + BUSY_RETRY_MS) &&
	    !bulk->store_error) {
		it->tries--;
		it->not_before_ms = now + BUSY_RETRY_MS;
		it->state = ITEM_WAITING;
		if (bulk->next_waiting > (size_t)(it - bulk->items))
			bulk->next_waiting = (size_t)(it - bulk->items);
		return;
	}
	delay = enr_bulk__backoff_ms(it->tries, result->retry_after, bulk->opts.backoff_ms,
	                             bulk->opts.max_backoff_ms, bulk->opts.max_wait_ms);
	/* A try that would not start before the deadline is not made. */
	if (is_retryable(result->error) && it->tries < bulk->opts.max_tries && delay >= 0 &&
	    !past_deadline(bulk, now + delay) && !bulk->store_error) {
		enr_log_info("record %s: %s; trying again in %lld ms", it->id,
		             result->message ? result->message : "temporary failure", delay);
		it->not_before_ms = now + delay;
		it->state = ITEM_WAITING;
		if (bulk->next_waiting > (size_t)(it - bulk->items))
			bulk->next_waiting = (size_t)(it - bulk->items);
		bulk->retries++;
		return;
	}
	finish_item(it, result);
}

/*
 * With a team store, the vendors' per-app and per-key limits are shared by
 * every machine: the item takes its calls from the database's buckets too
 * (false: not now, it waits until they refill). A failure to ask leaves the
 * process's own pacing.
 */
static bool shared_take(struct enr_bulk *bulk, struct item *it, long long now)
{
	if (!enr_store_is_team(bulk->store))
		return true;
	for (size_t j = 0; j < it->n_buckets; j++) {
		const struct enr_bulk__bucket *b = &bulk->buckets[it->buckets[j]];
		long long wait = 0;
		if (!b->capacity || b->scope == ENR_LIMIT_PER_ADDRESS)
			continue;
		if (enr_store_take_rate(bulk->store, b->key, b->capacity, b->rate_per_ms * 1000.0,
		                        it->calls, &wait) < 0) {
			enr_log_debug("shared rate limit %s: %s", b->key, enr_error_last());
			continue;
		}
		if (wait > 0) {
			it->not_before_ms = now + wait;
			return false;
		}
	}
	return true;
}

static void start_ready(struct enr_bulk *bulk)
{
	long long now = now_ms();
	char *why;

	if (!bulk->reserved) {
		int rc;
		bulk->reserved = true;
		if ((rc = reserve(bulk)) < 0)
			note_store_error(bulk, rc, enr_error_last());
	}
	/* After a failure to write the store, no token is spent: it could be lost. */
	if (bulk->store_error) {
		why = enr_util_printf("not done: %s", bulk->store_message
		                                          ? bulk->store_message
		                                          : "the store cannot be written");
		stop_waiting(bulk, bulk->store_error, why);
		free(why);
		return;
	}
	give_up_waiting(bulk, now);
	while (bulk->next_waiting < bulk->n_items &&
	       bulk->items[bulk->next_waiting].state != ITEM_WAITING)
		bulk->next_waiting++;
	for (size_t i = bulk->next_waiting;
	     i < bulk->n_items && bulk->in_flight < (size_t)bulk->opts.max_in_flight; i++) {
		struct item *it = &bulk->items[i];
		if (it->state != ITEM_WAITING || item_wait(bulk, it, now) != 0 ||
		    (it->calls > 1 &&
		     (bulk->refreshing >= (size_t)bulk->opts.max_refreshing || bulk->fold_due)))
			continue;
		if (!shared_take(bulk, it, now))
			continue;
		for (size_t j = 0; j < it->n_buckets; j++)
			enr_bulk__bucket_take(&bulk->buckets[it->buckets[j]], now, it->calls);
		it->state = ITEM_RUNNING;
		it->tries++;
		bulk->in_flight++;
		if (it->calls > 1) {
			bulk->refreshing++;
			bulk->last_refresh_ms = now;
		}
		/* On a failure to start, on_job_done() has already run. */
		if (bulk->opts.kind == ENR_JOB_REFRESH && bulk->opts.only_due)
			enr_job_start_due(&it->job, bulk->store, bulk->cfg, bulk->catalog,
			                  bulk->multi, it->id, bulk->opts.due_days, on_job_done,
			                  it);
		else
			enr_job_start(&it->job, bulk->store, bulk->cfg, bulk->catalog, bulk->multi,
			              it->id, bulk->opts.kind, on_job_done, it);
	}
}

static void save_results(struct enr_bulk *bulk, bool all)
{
	size_t n = bulk->n_results - bulk->n_saved;
	int rc;

	if (n == 0 || (!all && n < bulk->opts.batch))
		return;
	/* A whole write of the store takes a while: not while the answers of
	 * refreshes (rotated tokens) may be waiting to be read. */
	bulk->fold_due = !all && bulk->refreshing > 0;
	if (bulk->fold_due)
		return;
	rc = enr_lifecycle_save_results(bulk->store, bulk->results + bulk->n_saved, n);
	if (rc < 0) {
		char *why =
		    enr_util_printf("the outcome of %zu checks could not be saved (%s); new "
		                    "tokens are safe in %s.journal, which the next write "
		                    "folds in",
		                    n, enr_error_last(), enr_store_path(bulk->store));
		enr_log_error("%s", why ? why : enr_error_last());
		note_store_error(bulk, rc, why ? why : enr_error_last());
		free(why);
	}
	bulk->n_saved = bulk->n_results;
}

int enr_bulk_step(struct enr_bulk *bulk)
{
	start_ready(bulk);
	enr_http_multi_step(bulk->multi);
	start_ready(bulk);
	save_results(bulk, bulk->n_results == bulk->n_items);
	return bulk->store_error;
}

bool enr_bulk_finished(const struct enr_bulk *bulk)
{
	return bulk->n_results == bulk->n_items && bulk->n_saved == bulk->n_results;
}

int enr_bulk_run(struct enr_bulk *bulk)
{
	struct pollfd *fds = NULL;
	size_t cap = 0;

	while (!enr_bulk_finished(bulk)) {
		size_t n;
		enr_bulk_step(bulk);
		if (enr_bulk_finished(bulk))
			break;
		/* After the step started what it could: what is left waits, and on what. */
		if (now_ms() - bulk->last_report_ms >= 1000)
			report_progress(bulk);
		while ((n = enr_bulk_poll_fds(bulk, fds, cap)) > cap) {
			void *p = realloc(fds, n * sizeof(*fds));
			if (!p) {
				free(fds);
				return enr_error_set(ENR_E_NOMEM, NULL);
			}
			fds = p;
			cap = n;
		}
		long timeout = enr_bulk_timeout_ms(bulk);
		poll(fds, n, timeout < 0 || timeout > 1000 ? 1000 : (int)timeout);
	}
	free(fds);
	if (bulk->store_error)
		enr_error_set(bulk->store_error, "%s",
		              bulk->store_message ? bulk->store_message
		                                  : "the outcome of the checks could not be saved");
	return bulk->store_error;
}

/* Which vendor's limit holds back the next record to start, into `out`: of
 * the first waiting records, the one a limit lets start soonest (a record
 * held back only by its own backoff holds back no other). */
static void waiting_on(const struct enr_bulk *bulk, struct enr_bulk_progress *out)
{
	long long now = now_ms();
	size_t seen = 0;

	for (size_t i = bulk->next_waiting; i < bulk->n_items && seen < 64; i++) {
		const struct item *it = &bulk->items[i];
		long long wait = 0;
		if (it->state != ITEM_WAITING)
			continue;
		seen++;
		for (size_t j = 0; j < it->n_buckets && wait >= 0; j++) {
			long long w =
			    enr_bulk__bucket_wait(&bulk->buckets[it->buckets[j]], now, it->calls);
			if (w < 0 || w > wait)
				wait = w;
		}
		if (wait == 0)
			continue;
		/* -1: every slot is taken; it starts when one is free. */
		if (!out->waiting_vendor ||
		    (wait >= 0 && (out->waiting_ms < 0 || wait < out->waiting_ms))) {
			out->waiting_vendor = it->vendor ? it->vendor->name : NULL;
			out->waiting_ms = wait;
		}
	}
}

void enr_bulk_get_progress(const struct enr_bulk *bulk, struct enr_bulk_progress *out)
{
	out->total = bulk->n_items;
	out->finished = bulk->n_results;
	out->failed = bulk->failed;
	out->in_flight = bulk->in_flight;
	out->retries = bulk->retries;
	out->waiting_vendor = NULL;
	out->waiting_ms = 0;
	waiting_on(bulk, out);
}

size_t enr_bulk_result_count(const struct enr_bulk *bulk)
{
	return bulk->n_results;
}

const struct enr_job_result *enr_bulk_result(const struct enr_bulk *bulk, size_t i)
{
	return i < bulk->n_results ? &bulk->results[i] : NULL;
}

int enr_bulk_max_in_flight(const struct enr_bulk *bulk, const char *vendor, int scope)
{
	int max = 0;

	for (size_t i = 0; i < bulk->n_buckets; i++) {
		const struct enr_bulk__bucket *b = &bulk->buckets[i];
		if (b->scope == scope && strcmp(b->vendor, vendor) == 0 && b->max_in_flight > max)
			max = b->max_in_flight;
	}
	return max;
}
