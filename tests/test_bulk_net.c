/* The bulk runner against the in-process sandbox: limits, retries, rejections, saving. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "helpers.h"
#include "derenroll/bulk.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"

struct fixture {
	struct enr_catalog *catalog;
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	struct enr_store *store;
	char solis_secret[128];
	char partner_access[2048], partner_refresh[2048], partner_key[256];
	char path[512];
};

static void credential(struct json_object *all, const char *group, const char *name, char *out,
                       size_t size)
{
	struct json_object *g, *v;

	assert_true(json_object_object_get_ex(all, group, &g));
	assert_true(json_object_object_get_ex(g, name, &v));
	snprintf(out, size, "%s", json_object_get_string(v));
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct enr_sandbox_options o = {.sma_accept_ms = -1};
	struct enr_store_options so = {0};
	struct json_object *all;
	char *json = NULL;
	static int n;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	assert_int_equal(enr_catalog_load(&f->catalog, NULL), 0);
	o.catalog = f->catalog;
	assert_int_equal(enr_sandbox_start(&f->sb, &o), 0);
	assert_int_equal(enr_sandbox_config(&f->cfg, f->sb), 0);
	assert_int_equal(enr_sandbox_credentials_json(&json, f->sb), 0);
	all = json_tokener_parse(json);
	credential(all, "solis", "key_secret", f->solis_secret, sizeof(f->solis_secret));
	credential(all, "enphase_partner", "access_token", f->partner_access,
	           sizeof(f->partner_access));
	credential(all, "enphase_partner", "refresh_token", f->partner_refresh,
	           sizeof(f->partner_refresh));
	credential(all, "enphase_partner", "api_key", f->partner_key, sizeof(f->partner_key));
	json_object_put(all);
	free(json);
	snprintf(f->path, sizeof(f->path), "%s/store-%d", getenv("HOME"), n++);
	so.path = f->path;
	so.plaintext = true;
	assert_int_equal(enr_store_open(&f->store, &so), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	enr_store_free(f->store);
	enr_sandbox_stop(f->sb);
	enr_config_free(f->cfg);
	enr_catalog_free(f->catalog);
	remove(f->path);
	free(f);
	curl_global_cleanup();
	return 0;
}

/* A record of `vendor`/`method`; returns its id (static buffer rotated by the caller). */
static void put_key_record(struct fixture *f, const char *vendor, const char *key, char *id_out)
{
	struct enr_record *rec = NULL;

	assert_int_equal(enr_record_new(&rec), 0);
	enr_record_set(&rec->customer, key);
	enr_record_set(&rec->vendor, vendor);
	enr_record_set(&rec->method, "key");
	if (strcmp(vendor, "solis") == 0) {
		rec->cred.type = ENR_CRED_KEY_PAIR;
		enr_record_set(&rec->cred.key_id, key);
		enr_record_set(&rec->cred.key_secret, f->solis_secret);
	} else {
		rec->cred.type = ENR_CRED_API_KEY;
		enr_record_set(&rec->cred.api_key, key);
	}
	assert_int_equal(enr_store_put(NULL, f->store, rec), 0);
	strcpy(id_out, rec->id);
	enr_record_free(rec);
}

static void put_partner_record(struct fixture *f, char *id_out)
{
	struct enr_record *rec = NULL;

	assert_int_equal(enr_record_new(&rec), 0);
	enr_record_set(&rec->customer, "partner");
	enr_record_set(&rec->vendor, "enphase");
	enr_record_set(&rec->method, "partner");
	rec->cred.type = ENR_CRED_PARTNER;
	enr_record_set(&rec->cred.tokens.access_token, f->partner_access);
	enr_record_set(&rec->cred.tokens.refresh_token, f->partner_refresh);
	enr_record_set(&rec->cred.api_key, f->partner_key);
	rec->access_expires_at = (long long)time(NULL) + 86000;
	assert_int_equal(enr_store_put(NULL, f->store, rec), 0);
	strcpy(id_out, rec->id);
	enr_record_free(rec);
}

static struct enr_bulk *run(struct fixture *f, char ids[][16], size_t n, int max_tries,
                            long backoff_ms)
{
	struct enr_bulk_options o = {
	    .kind = ENR_JOB_CHECK, .max_tries = max_tries, .backoff_ms = backoff_ms, .batch = 4};
	struct enr_bulk *bulk = NULL;

	assert_int_equal(enr_bulk_new(&bulk, f->store, f->cfg, f->catalog, &o), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(enr_bulk_add(bulk, ids[i]), 0);
	assert_int_equal(enr_bulk_run(bulk), 0);
	assert_int_equal(enr_bulk_result_count(bulk), n);
	return bulk;
}

static const struct enr_job_result *result_of(const struct enr_bulk *bulk, const char *id)
{
	for (size_t i = 0; i < enr_bulk_result_count(bulk); i++)
		if (strcmp(enr_bulk_result(bulk, i)->id, id) == 0)
			return enr_bulk_result(bulk, i);
	fail_msg("no result for %s", id);
	return NULL;
}

static enum enr_record_outcome stored_outcome(struct fixture *f, const char *id)
{
	struct enr_record *rec = NULL;
	enum enr_record_outcome o;

	assert_int_equal(enr_store_get(&rec, f->store, id), 0);
	o = rec->last_check.outcome;
	enr_record_free(rec);
	return o;
}

static void test_concurrency_within_limit(void **state)
{
	struct fixture *f = *state;
	char ids[24][16];
	struct enr_bulk *bulk;
	struct enr_bulk_progress p;

	enr_sandbox_set_latency(f->sb, NULL, 60);
	/* The sandbox's minute is larger than vendors.json's, so it never refuses here. */
	assert_int_equal(enr_sandbox_set(f->sb, "solaredge_minute_limit", 1000), 0);
	for (int i = 0; i < 24; i++) {
		char key[32];
		snprintf(key, sizeof(key), "bulkkey%03d", i);
		put_key_record(f, "solaredge", key, ids[i]);
	}
	bulk = run(f, ids, 24, 0, 0);
	/* SolarEdge v2 has no per-address cap (v1's 3 at once is gone) ... */
	assert_int_equal(enr_bulk_max_in_flight(bulk, "solaredge", ENR_LIMIT_PER_ADDRESS), 0);
	/* ... and every answer said what was left of its key's minute. */
	for (int i = 0; i < 24; i++) {
		const struct enr_job_result *r = result_of(bulk, ids[i]);
		assert_int_equal(r->rate_limit, 0);
		assert_true(r->rate_remaining >= 0);
		/* ... and the size of that minute (x-ratelimit-limit-minute). */
		assert_int_equal(r->rate_window, 1000);
	}
	/* Each key was used once: its own bucket never had two. */
	assert_int_equal(enr_bulk_max_in_flight(bulk, "solaredge", ENR_LIMIT_PER_KEY), 1);
	enr_bulk_get_progress(bulk, &p);
	assert_int_equal(p.finished, 24);
	assert_int_equal(p.failed, 0);
	for (int i = 0; i < 24; i++) {
		assert_int_equal(result_of(bulk, ids[i])->error, 0);
		assert_int_equal(stored_outcome(f, ids[i]), ENR_OUTCOME_OK);
	}
	enr_bulk_free(bulk);
}

static void test_429_retry_after(void **state)
{
	struct fixture *f = *state;
	char ids[2][16];
	struct enr_bulk *bulk;
	struct enr_bulk_progress p;
	struct timespec a, b;

	put_key_record(f, "solis", "demo-bulk-a", ids[0]);
	put_key_record(f, "solis", "demo-bulk-b", ids[1]);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "solis", ENR_SANDBOX_FAULT_429, 1, 1), 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	/* The backoff alone would retry after 10 ms: only Retry-After explains a second. */
	bulk = run(f, ids, 2, 3, 10);
	clock_gettime(CLOCK_MONOTONIC, &b);
	enr_bulk_get_progress(bulk, &p);
	assert_int_equal(p.retries, 1);
	assert_int_equal(p.failed, 0);
	assert_int_equal(result_of(bulk, ids[0])->error, 0);
	assert_int_equal(result_of(bulk, ids[1])->error, 0);
	assert_true((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 >= 1000);
	enr_bulk_free(bulk);
}

/* A vendor asking to wait for years: no sleep; every record it holds back
 * ends transient with when to try again, and only the tried one is noted. */
static void test_429_retry_after_beyond_max_wait(void **state)
{
	struct fixture *f = *state;
	char ids[3][16];
	struct enr_bulk *bulk;
	const struct enr_job_result *r;

	/* One Solis key: one bucket, which the Retry-After pauses as a whole. */
	put_key_record(f, "solis", "demo-bulk-long", ids[0]);
	put_key_record(f, "solis", "demo-bulk-long", ids[1]);
	put_key_record(f, "solis", "demo-bulk-long", ids[2]);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "solis", ENR_SANDBOX_FAULT_429, 0, 99999999),
	                 0);
	bulk = run(f, ids, 3, 3, 10);
	for (size_t i = 0; i < 3; i++) {
		r = result_of(bulk, ids[i]);
		assert_int_equal(r->error, ENR_E_TRANSIENT);
		assert_non_null(strstr(r->message, "try again tomorrow"));
		assert_null(strstr(r->message, "99999999"));
		/* A record tried has the 429 as its outcome; one held back is untouched. */
		if (r->skipped) {
			assert_non_null(strstr(r->message, "not tried"));
			assert_int_equal(stored_outcome(f, ids[i]), ENR_OUTCOME_NONE);
		} else {
			assert_non_null(strstr(r->message, "HTTP 429"));
			assert_int_equal(stored_outcome(f, ids[i]), ENR_OUTCOME_TRANSIENT);
		}
	}
	enr_bulk_free(bulk);
}

/* At the deadline no job starts any more; the one in flight finishes. */
static void test_deadline(void **state)
{
	struct fixture *f = *state;
	struct enr_bulk_options o = {
	    .kind = ENR_JOB_CHECK, .max_in_flight = 1, .batch = 4, .deadline_ms = 100};
	char ids[4][16];
	struct enr_bulk *bulk = NULL;
	size_t done = 0, skipped = 0;

	for (size_t i = 0; i < 4; i++) {
		char key[32];
		snprintf(key, sizeof(key), "demo-deadline-%zu", i);
		put_key_record(f, "solis", key, ids[i]);
	}
	/* Each check takes longer than the whole deadline: one at a time, the
	 * second cannot start before it. */
	assert_int_equal(enr_sandbox_set_latency(f->sb, "solis", 300), 0);
	assert_int_equal(enr_bulk_new(&bulk, f->store, f->cfg, f->catalog, &o), 0);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(enr_bulk_add(bulk, ids[i]), 0);
	assert_int_equal(enr_bulk_run(bulk), 0);
	assert_int_equal(enr_bulk_result_count(bulk), 4);
	for (size_t i = 0; i < 4; i++) {
		const struct enr_job_result *r = result_of(bulk, ids[i]);
		if (r->error == 0) {
			done++;
			assert_int_equal(stored_outcome(f, ids[i]), ENR_OUTCOME_OK);
			continue;
		}
		skipped++;
		assert_int_equal(r->error, ENR_E_TRANSIENT);
		assert_non_null(strstr(r->message, "deadline"));
		assert_int_equal(stored_outcome(f, ids[i]), ENR_OUTCOME_NONE);
	}
	assert_true(done <= 1);
	assert_true(skipped >= 3);
	enr_bulk_free(bulk);
}

static void test_500_retried_then_transient(void **state)
{
	struct fixture *f = *state;
	char ids[1][16];
	struct enr_bulk *bulk;
	struct enr_bulk_progress p;
	const struct enr_job_result *r;

	put_key_record(f, "solaredge", "flakykey01", ids[0]);
	assert_int_equal(enr_sandbox_add_fault(f->sb, "solaredge", ENR_SANDBOX_FAULT_500, 0, 0), 0);
	bulk = run(f, ids, 1, 3, 10);
	enr_bulk_get_progress(bulk, &p);
	assert_int_equal(p.retries, 2); /* three tries in all */
	r = result_of(bulk, ids[0]);
	assert_int_equal(r->error, ENR_E_TRANSIENT);
	assert_non_null(r->message);
	assert_int_equal(stored_outcome(f, ids[0]), ENR_OUTCOME_TRANSIENT);
	enr_bulk_free(bulk);

	/* Once the vendor is back, the same record passes. */
	enr_sandbox_clear_faults(f->sb);
	bulk = run(f, ids, 1, 3, 10);
	assert_int_equal(result_of(bulk, ids[0])->error, 0);
	enr_bulk_free(bulk);
}

static void test_revoked_rejected(void **state)
{
	struct fixture *f = *state;
	char ids[3][16];
	struct enr_bulk *bulk;
	struct enr_bulk_progress p;

	put_partner_record(f, ids[0]);
	put_key_record(f, "solaredge", "revokedkey1", ids[1]);
	put_key_record(f, "solaredge", "goodkey0001", ids[2]);
	assert_int_equal(enr_sandbox_revoke(f->sb, f->partner_access), 0);
	assert_int_equal(enr_sandbox_revoke_account(f->sb, "solaredge", "revokedkey1"), 0);
	bulk = run(f, ids, 3, 3, 10);
	enr_bulk_get_progress(bulk, &p);
	assert_int_equal(p.retries, 0); /* a rejection is not tried again */
	assert_int_equal(p.failed, 2);
	assert_int_equal(result_of(bulk, ids[0])->error, ENR_E_REJECTED);
	assert_int_equal(result_of(bulk, ids[1])->error, ENR_E_REJECTED);
	assert_int_equal(result_of(bulk, ids[2])->error, 0);
	assert_int_equal(stored_outcome(f, ids[0]), ENR_OUTCOME_REJECTED);
	assert_int_equal(stored_outcome(f, ids[1]), ENR_OUTCOME_REJECTED);
	assert_int_equal(stored_outcome(f, ids[2]), ENR_OUTCOME_OK);
	enr_bulk_free(bulk);
}

static void test_unknown_id(void **state)
{
	struct fixture *f = *state;
	struct enr_bulk *bulk = NULL;

	assert_int_equal(enr_bulk_new(&bulk, f->store, f->cfg, f->catalog, NULL), 0);
	assert_int_equal(enr_bulk_add(bulk, "nosuchid00"), ENR_E_NOTFOUND);
	/* Nothing queued: finished at once. */
	assert_int_equal(enr_bulk_run(bulk), 0);
	assert_true(enr_bulk_finished(bulk));
	assert_int_equal(enr_bulk_result_count(bulk), 0);
	enr_bulk_free(bulk);
	enr_bulk_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_concurrency_within_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_429_retry_after, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_429_retry_after_beyond_max_wait, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_500_retried_then_transient, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_revoked_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_id, setup, teardown),
	};
	int failed;

	test_env_setup();
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_env_cleanup();
	return failed;
}
