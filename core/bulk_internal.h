#ifndef DERENROLL_BULK_INTERNAL_H
#define DERENROLL_BULK_INTERNAL_H

#include <stdbool.h>

/*
 * The pacing of one bucket, pure logic over a clock given in milliseconds, so
 * that it can be tested with a fake clock.
 */
struct enr_bulk__bucket {
	char *key;          /* "vendor/app", "vendor/key/HASH", "vendor/address/HOST" */
	const char *vendor; /* borrowed from the catalogue */
	int scope;          /* enum enr_limit_scope */
	double capacity;    /* tokens when full; 0: no rate cap */
	double rate_per_ms; /* refill speed */
	double tokens;      /* as of last_ms */
	long long last_ms;
	int concurrency; /* 0: no cap */
	int in_flight;
	int max_in_flight;          /* the most ever seen */
	long long blocked_until_ms; /* Retry-After */
};

/* A full bucket for `requests` per `per_seconds` and `concurrency` at `now_ms`. */
void enr_bulk__bucket_init(struct enr_bulk__bucket *b, double requests, double per_seconds,
                           int concurrency, long long now_ms);

/* Milliseconds until a job of `calls` calls may start (0: now), -1 while every
 * slot is taken. A job holds one slot (its calls go one after the other) and
 * takes a token per call (at most `capacity`). */
long long enr_bulk__bucket_wait(const struct enr_bulk__bucket *b, long long now_ms, int calls);

/* A job starts: takes its tokens and a slot (only after a wait of 0). */
void enr_bulk__bucket_take(struct enr_bulk__bucket *b, long long now_ms, int calls);

/* A call ended: frees its slot. */
void enr_bulk__bucket_release(struct enr_bulk__bucket *b);

/* The vendor said "Retry-After: seconds": nothing starts before then. */
void enr_bulk__bucket_block(struct enr_bulk__bucket *b, long long until_ms);
/* The vendor reported `remaining` calls left in the window: the bucket holds no more. */
void enr_bulk__bucket_report(struct enr_bulk__bucket *b, long long now_ms, long remaining);
/* The vendor reported a window of `window` calls: a bucket that holds more
 * shrinks to it and refills at that pace. */
void enr_bulk__bucket_window(struct enr_bulk__bucket *b, long long now_ms, long window);

/* The delay before try number `tries + 1` (tries >= 1 made so far): the
 * vendor's Retry-After when it said one (>= 0), else base * 2^(tries-1)
 * capped at max_ms; never more than max_wait_ms: -1 when the vendor asks to
 * wait longer (no try then). */
long long enr_bulk__backoff_ms(int tries, long retry_after_s, long base_ms, long max_ms,
                               long long max_wait_ms);

#endif
