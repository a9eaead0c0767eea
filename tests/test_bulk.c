/* The bulk scheduler's pacing, on a fake clock: pure logic, no sleeps. */
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "bulk_internal.h"

static void test_token_bucket_spacing(void **state)
{
	struct enr_bulk__bucket b = {0};

	(void)state;
	/* Solis: 2 requests per second. */
	enr_bulk__bucket_init(&b, 2, 1, 0, 1000);
	assert_int_equal(enr_bulk__bucket_wait(&b, 1000, 1), 0);
	enr_bulk__bucket_take(&b, 1000, 1);
	assert_int_equal(enr_bulk__bucket_wait(&b, 1000, 1), 0);
	enr_bulk__bucket_take(&b, 1000, 1);
	/* Empty: the next token comes 500 ms later. */
	long long w = enr_bulk__bucket_wait(&b, 1000, 1);
	assert_true(w >= 500 && w <= 501);
	assert_true(enr_bulk__bucket_wait(&b, 1250, 1) >= 250);
	assert_int_equal(enr_bulk__bucket_wait(&b, 1500, 1), 0);
	enr_bulk__bucket_take(&b, 1500, 1);
	assert_true(enr_bulk__bucket_wait(&b, 1500, 1) >= 500);
	/* A long pause refills to the capacity, not beyond. */
	assert_int_equal(enr_bulk__bucket_wait(&b, 100000, 1), 0);
	enr_bulk__bucket_take(&b, 100000, 1);
	enr_bulk__bucket_take(&b, 100000, 1);
	assert_true(enr_bulk__bucket_wait(&b, 100000, 1) >= 500);
}

/* What the vendor reports left in its window (x-ratelimit-remaining-minute)
 * caps the bucket: another machine may have spent the rest. */
static void test_vendor_reported_remaining(void **state)
{
	struct enr_bulk__bucket b = {0};

	(void)state;
	enr_bulk__bucket_init(&b, 100, 60, 0, 0);
	assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), 0);
	enr_bulk__bucket_report(&b, 0, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), 0);
		enr_bulk__bucket_take(&b, 0, 1);
	}
	/* Spent: the next call waits for the refill (100 a minute: 600 ms). */
	assert_true(enr_bulk__bucket_wait(&b, 0, 1) >= 599);
	/* Nothing left at all: the same wait, never a negative count. */
	enr_bulk__bucket_report(&b, 0, 0);
	assert_true(enr_bulk__bucket_wait(&b, 0, 1) >= 599);
	/* A report never adds calls the bucket has not earned. */
	enr_bulk__bucket_report(&b, 0, 50);
	assert_true(enr_bulk__bucket_wait(&b, 0, 1) >= 599);
	/* No report (-1) changes nothing. */
	enr_bulk__bucket_report(&b, 60000, -1);
	assert_int_equal(enr_bulk__bucket_wait(&b, 60000, 1), 0);
}

/* The window the vendor reports (x-ratelimit-limit-minute) shrinks a bucket
 * that vendors.json made larger, and its refill slows to the same pace; a
 * larger window or none changes nothing. */
static void test_vendor_reported_window(void **state)
{
	struct enr_bulk__bucket b = {0};

	(void)state;
	enr_bulk__bucket_init(&b, 100, 60, 0, 0);
	enr_bulk__bucket_window(&b, 0, 500);
	enr_bulk__bucket_window(&b, 0, -1);
	assert_true(b.capacity == 100);
	enr_bulk__bucket_window(&b, 0, 10);
	assert_true(b.capacity == 10);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), 0);
		enr_bulk__bucket_take(&b, 0, 1);
	}
	/* Spent: 10 a minute refill one call in 6 s, not vendors.json's 600 ms. */
	assert_true(enr_bulk__bucket_wait(&b, 0, 1) >= 5999);
	assert_int_equal(enr_bulk__bucket_wait(&b, 6001, 1), 0);
	/* A long pause refills to the reported window, not to vendors.json's 100. */
	enr_bulk__bucket_report(&b, 600000, 50);
	for (int i = 0; i < 10; i++)
		enr_bulk__bucket_take(&b, 600000, 1);
	assert_true(enr_bulk__bucket_wait(&b, 600000, 1) >= 5999);
}

static void test_jobs_of_two_calls(void **state)
{
	struct enr_bulk__bucket b = {0};

	(void)state;
	/* Tesla: 50 per minute. A refresh and a check take two tokens. */
	enr_bulk__bucket_init(&b, 50, 60, 0, 0);
	for (int i = 0; i < 25; i++) {
		assert_int_equal(enr_bulk__bucket_wait(&b, 0, 2), 0);
		enr_bulk__bucket_take(&b, 0, 2);
	}
	/* Two tokens come back after 2 x 1.2 s. */
	long long w = enr_bulk__bucket_wait(&b, 0, 2);
	assert_true(w >= 2400 && w <= 2401);
	assert_true(enr_bulk__bucket_wait(&b, 0, 1) <= 1201);
	/* More calls than the bucket holds: a full bucket lets the job start. */
	struct enr_bulk__bucket tiny = {0};
	enr_bulk__bucket_init(&tiny, 1, 1, 0, 0);
	assert_int_equal(enr_bulk__bucket_wait(&tiny, 0, 2), 0);
	enr_bulk__bucket_take(&tiny, 0, 2);
	assert_true(enr_bulk__bucket_wait(&tiny, 0, 2) >= 1000);
}

static void test_concurrency(void **state)
{
	struct enr_bulk__bucket b = {0};

	(void)state;
	/* SolarEdge: 3 at a time per address, no rate. */
	enr_bulk__bucket_init(&b, 0, 0, 3, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), 0);
		enr_bulk__bucket_take(&b, 0, 1);
	}
	assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), -1);
	assert_int_equal(enr_bulk__bucket_wait(&b, 999999, 1), -1);
	enr_bulk__bucket_release(&b);
	assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), 0);
	assert_int_equal(b.max_in_flight, 3);
	/* Releasing more than taken never goes negative. */
	for (int i = 0; i < 5; i++)
		enr_bulk__bucket_release(&b);
	assert_int_equal(b.in_flight, 0);
}

static void test_retry_after_blocks(void **state)
{
	struct enr_bulk__bucket b = {0};

	(void)state;
	enr_bulk__bucket_init(&b, 10, 60, 2, 0);
	enr_bulk__bucket_block(&b, 3000);
	assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), 3000);
	assert_int_equal(enr_bulk__bucket_wait(&b, 2500, 1), 500);
	assert_int_equal(enr_bulk__bucket_wait(&b, 3000, 1), 0);
	/* An earlier block does not shorten a later one. */
	enr_bulk__bucket_block(&b, 1000);
	assert_int_equal(enr_bulk__bucket_wait(&b, 0, 1), 3000);
}

static void test_backoff(void **state)
{
	(void)state;
	assert_int_equal(enr_bulk__backoff_ms(1, -1, 1000, 60000, 300000), 1000);
	assert_int_equal(enr_bulk__backoff_ms(2, -1, 1000, 60000, 300000), 2000);
	assert_int_equal(enr_bulk__backoff_ms(3, -1, 1000, 60000, 300000), 4000);
	assert_int_equal(enr_bulk__backoff_ms(30, -1, 1000, 60000, 300000), 60000);
	/* The vendor's Retry-After wins, also when shorter. */
	assert_int_equal(enr_bulk__backoff_ms(3, 1, 1000, 60000, 300000), 1000);
	assert_int_equal(enr_bulk__backoff_ms(1, 7, 1000, 60000, 300000), 7000);
	assert_int_equal(enr_bulk__backoff_ms(1, 0, 1000, 60000, 300000), 0);
	assert_int_equal(enr_bulk__backoff_ms(1, 300, 1000, 60000, 300000), 300000);
}

/* No wait is longer than max_wait: a vendor asking for more gets no try. */
static void test_backoff_capped(void **state)
{
	(void)state;
	assert_int_equal(enr_bulk__backoff_ms(1, 99999999, 1000, 60000, 300000), -1);
	assert_int_equal(enr_bulk__backoff_ms(1, 301, 1000, 60000, 300000), -1);
	assert_int_equal(enr_bulk__backoff_ms(1, 366L * 86400, 1000, 60000, 300000), -1);
	/* The exponential backoff stops at max_wait too. */
	assert_int_equal(enr_bulk__backoff_ms(30, -1, 1000, 600000, 5000), 5000);
	assert_int_equal(enr_bulk__backoff_ms(3, -1, 1000, 60000, 5000), 4000);
}

/*
 * A whole run on a fake clock: n calls of `latency_ms` through one bucket,
 * each started as soon as the bucket allows; returns when the last ends, and
 * the most in flight at once.
 */
static long long simulate(double requests, double per_s, int concurrency, int n, long latency_ms,
                          int *max_in_flight)
{
	struct enr_bulk__bucket b = {0};
	long long *ends = calloc((size_t)n, sizeof(*ends)), now = 0, last = 0;
	int started = 0, running = 0;

	enr_bulk__bucket_init(&b, requests, per_s, concurrency, 0);
	while (started < n || running) {
		long long next = -1, w;
		/* End what is due. */
		for (int i = 0; i < started; i++)
			if (ends[i] && ends[i] <= now) {
				last = ends[i];
				ends[i] = 0;
				running--;
				enr_bulk__bucket_release(&b);
			}
		while (started < n && (w = enr_bulk__bucket_wait(&b, now, 1)) == 0) {
			enr_bulk__bucket_take(&b, now, 1);
			ends[started++] = now + latency_ms;
			running++;
		}
		if (started < n && (w = enr_bulk__bucket_wait(&b, now, 1)) > 0)
			next = now + w;
		for (int i = 0; i < started; i++)
			if (ends[i] && (next < 0 || ends[i] < next))
				next = ends[i];
		if (next < 0)
			break;
		now = next;
	}
	*max_in_flight = b.max_in_flight;
	free(ends);
	return last;
}

static void test_simulated_runs(void **state)
{
	int max = 0;

	(void)state;
	/* 3 at a time, 100 ms each: 10 calls take ceil(10/3) rounds. */
	assert_int_equal(simulate(0, 0, 3, 10, 100, &max), 400);
	assert_int_equal(max, 3);
	/* 2 per second, bursting 2: starts at 0, 0, 500, 1000, ... 4000. */
	long long t2 = simulate(2, 1, 0, 10, 100, &max);
	assert_true(t2 >= 4100 && t2 <= 4110);
	assert_true(max <= 2);
	/* Both limits: 10/min with 2 at a time: 10 at once would break the cap. */
	long long t = simulate(10, 60, 2, 12, 100, &max);
	assert_int_equal(max, 2);
	assert_true(t >= 12000 && t <= 12200); /* the 11th and 12th wait for tokens */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_token_bucket_spacing),
	    cmocka_unit_test(test_concurrency),
	    cmocka_unit_test(test_retry_after_blocks),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_backoff_capped),
	    cmocka_unit_test(test_simulated_runs),
	    cmocka_unit_test(test_vendor_reported_remaining),
	    cmocka_unit_test(test_vendor_reported_window),
	    cmocka_unit_test(test_jobs_of_two_calls),
	};
	int failed;

	test_env_setup();
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_env_cleanup();
	return failed;
}
