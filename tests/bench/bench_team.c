/*
 * Benchmark of the team store with 100,000 records in a real PostgreSQL
 * (not a test: `meson test -C build --benchmark team`). It fills a store,
 * then measures, each 5 times in a fresh handle:
 *   list:   open for a listing of columns (no key: no KDF), the database reading
 *           only what may be due in 7 days, and pick those due (`list --due 7`)
 *   json:   the same with every record's public part (`list --due 7 --json`)
 *   all:    open for a listing of every record's columns (what `list` does)
 *   open:   open with the credentials (KDF subtracted)
 *   put:    one enrollment's write (a put of a new record), the store open
 * and prints a Markdown section for tests/bench/RESULTS.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "pg_server.h"
#include "store/internal.h"

#define RUNS 5
#define PASS "benchmark passphrase"

static const struct enr_store_kdf kdf = {14, 8, 2}; /* the default */
static struct test_pg pg;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_team: %s: %s\n", what, enr_error_last());
	test_pg_stop(&pg);
	exit(1);
}

/* How a measure opens the store: with the credentials, for a listing of whole
 * records (`list --json`), for a listing of columns (`list`). */
enum opening { WITH_CREDENTIALS, LISTING, COLUMNS };

static struct enr_store *open_store(enum opening how, long long due_before)
{
	struct enr_store_options o = {.path = pg.url,
	                              .passphrase = PASS,
	                              .kdf = &kdf,
	                              .create = how == WITH_CREDENTIALS,
	                              .metadata_only = how != WITH_CREDENTIALS,
	                              .columns_only = how == COLUMNS,
	                              .due_before = due_before};
	struct enr_store *store = NULL;

	if (enr_store_open(&store, &o) < 0)
		die("open");
	return store;
}

static struct enr_record *record(int i, long long t)
{
	struct enr_record *rec = NULL;
	char buf[96];

	if (enr_record_new(&rec) < 0)
		die("record");
	snprintf(buf, sizeof(buf), "%010d", i);
	enr_record_set(&rec->id, buf);
	snprintf(buf, sizeof(buf), "Customer %d, job J-%06d", i, i);
	enr_record_set(&rec->customer, buf);
	enr_record_set(&rec->vendor, "enphase");
	enr_record_set(&rec->method, "oauth");
	rec->cred.type = ENR_CRED_OAUTH;
	snprintf(buf, sizeof(buf), "eyJhbGciOiJSUzI1NiJ9.access.%08d.aBcDeFgHiJkLmNoPqRsTuVwXyZ",
	         i);
	enr_record_set(&rec->cred.tokens.access_token, buf);
	snprintf(buf, sizeof(buf), "refresh-%08d-0123456789abcdef0123456789abcdef", i);
	enr_record_set(&rec->cred.tokens.refresh_token, buf);
	snprintf(buf, sizeof(buf), "%d", 4000000 + i);
	enr_record_add_site(rec, buf, "Home");
	rec->created_at = rec->updated_at = t;
	rec->access_expires_at = t + 86400;
	/* A spread of refresh expiries over two months: about 1 in 9 due within 7 days. */
	rec->refresh_expires_at = t + (long long)(i % 60) * 86400 + 3600;
	return rec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v)
{
	qsort(v, RUNS, sizeof(*v), cmp);
	return v[RUNS / 2];
}

int main(int argc, char **argv)
{
	bool serve = argc > 1 && strcmp(argv[1], "--serve") == 0;
	long n = argc > 1 + serve ? atol(argv[1 + serve]) : 100000;
	long long t = (long long)time(NULL);
	double list[RUNS], list_json[RUNS], all[RUNS], open_ms[RUNS], kdf_ms[RUNS], put[RUNS], fill;
	size_t due = 0;
	struct enr_store *store;
	struct enr_record **recs;
	struct rusage ru;

	if (test_pg_start(&pg) < 0)
		return 1;
	/* Filled in one transaction (a migration's way), then measured. */
	store = open_store(WITH_CREDENTIALS, 0);
	recs = calloc((size_t)n, sizeof(*recs));
	for (long i = 0; i < n; i++)
		recs[i] = record((int)i, t);
	fill = now();
	if (enr_store__bulk_insert(store, recs, (size_t)n) < 0)
		die("fill");
	fill = now() - fill;
	free(recs);
	enr_store_free(store);
	/* What autovacuum would do soon after such a fill (statistics, the visibility
	 * map): measured at rest, not while it runs. */
	if (test_pg_exec(&pg, NULL, "VACUUM ANALYZE") < 0)
		die("vacuum");
	if (serve) {
		/* For looking into it (psql, perf): the URL, then wait until stdin ends. */
		char line[64];
		printf("%s\n", pg.url);
		fflush(stdout);
		while (fgets(line, sizeof(line), stdin))
			;
		test_pg_stop(&pg);
		return 0;
	}

	for (int r = 0; r < RUNS; r++) {
		double start = now();
		store = open_store(COLUMNS, t + 7 * 86400);
		due = 0;
		for (size_t i = 0; i < enr_store_count(store); i++) {
			const struct enr_record *rec = enr_store_at(store, i);
			if (rec->refresh_expires_at && rec->refresh_expires_at < t + 7 * 86400)
				due++;
		}
		list[r] = (now() - start) * 1000;
		enr_store_free(store);

		start = now();
		store = open_store(LISTING, t + 7 * 86400);
		list_json[r] = (now() - start) * 1000;
		enr_store_free(store);

		start = now();
		store = open_store(COLUMNS, 0);
		all[r] = (now() - start) * 1000;
		enr_store_free(store);

		start = now();
		store = open_store(WITH_CREDENTIALS, 0);
		open_ms[r] = (now() - start) * 1000;
		kdf_ms[r] = enr_store__kdf_seconds(store) * 1000;
		open_ms[r] -= kdf_ms[r];
		{
			struct enr_record *rec = record((int)(n + r), t);
			enr_record_set(&rec->id, NULL);
			start = now();
			if (enr_store_put(NULL, store, rec) < 0)
				die("put");
			put[r] = (now() - start) * 1000;
			enr_record_free(rec);
		}
		enr_store_free(store);
	}
	getrusage(RUSAGE_SELF, &ru);
	printf(
	    "## Team store (PostgreSQL)\n\n`bench_team` (tests/bench/bench_team.c, `meson test -C "
	    "build --benchmark team`): %ld records in a real PostgreSQL 15 on a Unix socket, "
	    "filled in one transaction; medians of %d fresh handles.\n\n",
	    n, RUNS);
	printf("| measure | value | target |\n| --- | --- | --- |\n");
	printf("| fill (%ld records, one transaction) | %.1f s | - |\n", n, fill);
	printf(
	    "| `list --due 7` (open for a listing of columns, no KDF; %zu due) | %.0f ms | < 50 ms "
	    "beyond the KDF |\n",
	    due, median(list));
	printf("| `list --due 7 --json` (whole public parts, no KDF) | %.0f ms | - |\n",
	       median(list_json));
	printf("| `list` (every record, columns, no KDF) | %.0f ms | - |\n", median(all));
	printf("| open with credentials, beyond the KDF | %.0f ms | - |\n", median(open_ms));
	printf("| the KDF (scrypt N=2^14, r=8, p=2) | %.0f ms | - |\n", median(kdf_ms));
	printf("| one enrollment's write (put), store open | %.1f ms | < 10 ms |\n", median(put));
	printf("| peak memory of this process | %ld MB | - |\n", ru.ru_maxrss / 1024);
	test_pg_stop(&pg);
	return 0;
}
