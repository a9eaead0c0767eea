/*
 * Benchmark of `derenroll status` (the bulk runner) and `derenroll list --json`
 * (not a test: `meson test -C build --benchmark status`, or
 * `build/tests/bench_status build/tui/derenroll`). `--smoke N` checks N records
 * once and fails unless every one is ok (the test suite runs it with 20).
 *
 * status: N records (default 1000) spread over the vendors whose records the
 * sandbox makes without a browser (SolarEdge API keys and Solis key pairs,
 * one customer account each), the in-process sandbox answering after 100 ms.
 * It prints the bound the vendors' limits allow for this mix at this latency,
 * the wall time of one bulk run, and that of checking records one by one.
 *
 * list: `derenroll list --json` (the real program) over 10,000 records, in a
 * fresh process each time: the wall time and peak memory, and the time beyond
 * the KDF (the same command over a one-record store with the same KDF).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "derenroll/bulk.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "store/internal.h"

#define LATENCY_MS   100
#define LIST_RECORDS 10000
#define LIST_RUNS    5
#define PASS         "benchmark passphrase"
#define GLOBAL_CAP   64 /* enr_bulk's default max_in_flight */

static char dir[256];
static char solis_secret[128];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_status: %s: %s\n", what, enr_error_last());
	exit(1);
}

static struct enr_store *open_store(const char *path, bool plaintext)
{
	struct enr_store_options o = {
	    .path = path, .plaintext = plaintext, .passphrase = PASS, .create = true};
	struct enr_store *store = NULL;

	if (enr_store_open(&store, &o) < 0)
		die(path);
	return store;
}

/* Record i of the status mix: even SolarEdge, odd Solis. */
static struct enr_record *key_record(int i)
{
	struct enr_record *rec = NULL;
	char buf[64];

	enr_record_new(&rec);
	snprintf(buf, sizeof(buf), "bench%05d", i);
	enr_record_set(&rec->id, buf);
	snprintf(buf, sizeof(buf), "Customer %05d", i);
	enr_record_set(&rec->customer, buf);
	enr_record_set(&rec->method, "key");
	rec->created_at = rec->updated_at = (long long)time(NULL);
	if (i % 2 == 0) {
		enr_record_set(&rec->vendor, "solaredge");
		rec->cred.type = ENR_CRED_API_KEY;
		snprintf(buf, sizeof(buf), "benchkey%05d", i);
		enr_record_set(&rec->cred.api_key, buf);
	} else {
		enr_record_set(&rec->vendor, "solis");
		rec->cred.type = ENR_CRED_KEY_PAIR;
		snprintf(buf, sizeof(buf), "demo-bench-%05d", i);
		enr_record_set(&rec->cred.key_id, buf);
		enr_record_set(&rec->cred.key_secret, solis_secret);
	}
	return rec;
}

static void fill(struct enr_store *store, int n, struct enr_record *(*make)(int))
{
	struct enr_record **recs = malloc((size_t)n * sizeof(*recs));

	for (int i = 0; i < n; i++)
		recs[i] = make(i);
	if (enr_store__bulk_insert(store, recs, (size_t)n) < 0)
		die("bulk insert");
	free(recs);
}

/* ---- the bound ---- */

struct bucket_count {
	char key[96];
	const struct enr_rate_limit *lim;
	int n;
};

/*
 * The least time the limits allow for one bucket's n calls of `lat` seconds:
 * - rate: a token bucket of `requests` tokens refilled at r = requests /
 *   per_seconds lets the first `requests` calls start at once and the rest
 *   one every 1/r, so the last starts (n - requests) / r after the first and
 *   ends `lat` later;
 * - concurrency c: calls go in ceil(n / c) waves of `lat`;
 * the bucket needs the larger of the two (they overlap, so not the sum).
 * The whole run needs the slowest bucket, as buckets run side by side.
 */
static double bucket_bound(const struct enr_rate_limit *lim, int n, double lat)
{
	double rate_part = lat, conc_part = lat;

	if (lim->requests > 0 && lim->per_seconds > 0 && n > lim->requests)
		rate_part = (n - lim->requests) * lim->per_seconds / lim->requests + lat;
	if (lim->concurrency > 0)
		conc_part = ((n + lim->concurrency - 1) / lim->concurrency) * lat;
	return rate_part > conc_part ? rate_part : conc_part;
}

/* The least time the vendors' limits allow; *with_cap the same with
 * derenroll's own cap on transfers at once counted too. */
static double compute_bound(double *with_cap, const struct enr_catalog *catalog, int n_records,
                            double lat, bool print)
{
	struct bucket_count *b = calloc((size_t)n_records * 2 + 8, sizeof(*b));
	size_t nb = 0;
	double bound = lat, global;

	for (int i = 0; i < n_records; i++) {
		struct enr_record *rec = key_record(i);
		const struct enr_vendor *v = enr_catalog_find(catalog, rec->vendor);
		for (size_t l = 0; l < v->n_rate_limits; l++) {
			const struct enr_rate_limit *lim = &v->rate_limits[l];
			char key[96];
			size_t j;
			if (lim->scope == ENR_LIMIT_PER_KEY)
				snprintf(key, sizeof(key), "%s per key %s", v->id,
				         rec->cred.api_key ? rec->cred.api_key : rec->cred.key_id);
			else
				snprintf(key, sizeof(key), "%s per %s", v->id,
				         lim->scope == ENR_LIMIT_PER_APP ? "app" : "address");
			for (j = 0; j < nb && strcmp(b[j].key, key) != 0; j++)
				;
			if (j == nb) {
				snprintf(b[nb].key, sizeof(b[nb].key), "%s", key);
				b[nb++].lim = lim;
			}
			b[j].n++;
		}
		enr_record_free(rec);
	}
	for (size_t j = 0; j < nb; j++) {
		double t = bucket_bound(b[j].lim, b[j].n, lat);
		bool per_key = strstr(b[j].key, "per key") != NULL;
		/* Per-key buckets: the first of each vendor stands for all of them. */
		bool first_of_vendor = true;
		for (size_t k = 0; per_key && k < j; k++)
			if (b[k].lim == b[j].lim)
				first_of_vendor = false;
		if (print && first_of_vendor)
			printf("| %s%s | %d calls | %g per %g s, %d at once | %.2f s |\n", b[j].key,
			       per_key ? " (each key alike)" : "", b[j].n, b[j].lim->requests,
			       b[j].lim->per_seconds, b[j].lim->concurrency, t);
		if (t > bound)
			bound = t;
	}
	/* Our own cap on transfers at once (not a vendor's): the bound that also
	 * counts it is reported beside the vendors' own. */
	global = ((n_records + GLOBAL_CAP - 1) / GLOBAL_CAP) * lat;
	*with_cap = global > bound ? global : bound;
	if (print)
		printf("| (derenroll's own cap: %d transfers at once) | %d calls | - | %.2f s |\n",
		       GLOBAL_CAP, n_records, global);
	free(b);
	return bound;
}

/* ---- status ---- */

struct world {
	struct enr_catalog *catalog;
	struct enr_sandbox *sb;
	struct enr_config *cfg;
	struct enr_store *store;
};

static void start_world(struct world *w, int n_records)
{
	struct enr_sandbox_options o = {.latency_ms = LATENCY_MS, .sma_accept_ms = -1};
	struct json_object *all, *solis, *secret;
	char *json = NULL, path[512];

	if (enr_catalog_load(&w->catalog, NULL) < 0)
		die("catalog");
	o.catalog = w->catalog;
	if (enr_sandbox_start(&w->sb, &o) < 0 || enr_sandbox_config(&w->cfg, w->sb) < 0)
		die("sandbox");
	if (enr_sandbox_credentials_json(&json, w->sb) < 0)
		die("credentials");
	all = json_tokener_parse(json);
	if (!json_object_object_get_ex(all, "solis", &solis) ||
	    !json_object_object_get_ex(solis, "key_secret", &secret))
		die("solis secret");
	snprintf(solis_secret, sizeof(solis_secret), "%s", json_object_get_string(secret));
	json_object_put(all);
	free(json);
	snprintf(path, sizeof(path), "%s/status-store", dir);
	w->store = open_store(path, true);
	fill(w->store, n_records, key_record);
}

static void stop_world(struct world *w)
{
	enr_store_free(w->store);
	enr_sandbox_stop(w->sb);
	enr_config_free(w->cfg);
	enr_catalog_free(w->catalog);
}

/* One bulk CHECK of every record; the wall time, or -1 when one was not ok. */
static double run_status(struct world *w, int *max_address)
{
	struct enr_bulk *bulk = NULL;
	size_t bad = 0;
	double t0 = now(), t;

	if (enr_bulk_new(&bulk, w->store, w->cfg, w->catalog, NULL) < 0)
		die("bulk");
	for (size_t i = 0; i < enr_store_count(w->store); i++)
		if (enr_bulk_add(bulk, enr_store_at(w->store, i)->id) < 0)
			die("add");
	if (enr_bulk_run(bulk) < 0)
		die("run");
	t = now() - t0;
	for (size_t i = 0; i < enr_bulk_result_count(bulk); i++)
		if (enr_bulk_result(bulk, i)->error) {
			if (bad++ < 3)
				fprintf(stderr, "bench_status: %s: %s\n",
				        enr_bulk_result(bulk, i)->id,
				        enr_bulk_result(bulk, i)->message);
		}
	*max_address = enr_bulk_max_in_flight(bulk, "solaredge", ENR_LIMIT_PER_ADDRESS);
	enr_bulk_free(bulk);
	return bad ? -1 : t;
}

/* Records checked one after the other (enr_lifecycle_run, as a loop of
 * `derenroll status ID` would without the process start): seconds per record. */
static double run_one_by_one(struct world *w, int sample)
{
	double t0 = now();

	for (int i = 0; i < sample; i++)
		if (enr_lifecycle_run(w->store, w->cfg, w->catalog,
		                      enr_store_at(w->store, (size_t)i)->id, ENR_JOB_CHECK,
		                      NULL) < 0)
			die("one by one");
	return (now() - t0) / sample;
}

/* ---- list --json ---- */

static struct enr_record *list_record(int i)
{
	static const char *const vendors[] = {"tesla", "sma", "enphase", "solaredge", "solis"};
	struct enr_record *rec = key_record(i);
	char token[1400];

	enr_record_set(&rec->vendor, vendors[i % 5]);
	if (i % 5 < 3) {
		enr_record_set(&rec->method, "oauth");
		enr_record_set(&rec->cred.api_key, NULL);
		enr_record_set(&rec->cred.key_id, NULL);
		enr_record_set(&rec->cred.key_secret, NULL);
		rec->cred.type = ENR_CRED_OAUTH;
		memset(token, 'a' + i % 26, sizeof(token) - 1);
		token[sizeof(token) - 1] = '\0';
		enr_record_set(&rec->cred.tokens.access_token, token);
		token[120] = '\0';
		enr_record_set(&rec->cred.tokens.refresh_token, token);
		rec->access_expires_at = (long long)time(NULL) + 3600;
		rec->refresh_expires_at = (long long)time(NULL) + (i % 90) * 86400;
	}
	enr_record_add_site(rec, rec->id, "12 Long Street, Springfield");
	return rec;
}

/* Runs `derenroll --store path list --json` to /dev/null: seconds, peak kB. */
static double run_list(const char *bin, const char *config, const char *store, long *peak_kb)
{
	struct rusage ru;
	int status;
	double t0 = now();
	pid_t pid = fork();

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (config)
			execl(bin, bin, "--config", config, "--store", store, "list", "--json",
			      (char *)NULL);
		else
			execl(bin, bin, "--store", store, "list", "--json", (char *)NULL);
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("derenroll list --json failed");
	*peak_kb = ru.ru_maxrss;
	return now() - t0;
}

static void remove_dir(void)
{
	char cmd[300];

	if (getenv("BENCH_KEEP"))
		return; /* for profiling: the stores stay */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_status: could not remove %s\n", dir);
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median_list(const char *bin, const char *config, const char *store, long *peak_kb)
{
	double t[LIST_RUNS];

	*peak_kb = 0;
	for (int i = 0; i < LIST_RUNS; i++) {
		long kb;
		t[i] = run_list(bin, config, store, &kb);
		if (kb > *peak_kb)
			*peak_kb = kb;
	}
	qsort(t, LIST_RUNS, sizeof(t[0]), by_value);
	return t[LIST_RUNS / 2];
}

static void bench_list(FILE *out, const char *bin)
{
	char big[512], small[512], plain[512], plain_cfg[512], pass[512];
	struct enr_store *store;
	long big_kb, small_kb, plain_kb;
	double big_s, small_s, plain_s;
	FILE *f;

	snprintf(big, sizeof(big), "%s/list-10000", dir);
	snprintf(small, sizeof(small), "%s/list-1", dir);
	snprintf(plain, sizeof(plain), "%s/list-plain", dir);
	snprintf(plain_cfg, sizeof(plain_cfg), "%s/plain.ini", dir);
	snprintf(pass, sizeof(pass), "%s/pass", dir);
	f = fopen(plain_cfg, "w");
	fputs("[store]\nencryption = off\n", f);
	fclose(f);
	chmod(plain_cfg, 0600);
	f = fopen(pass, "w");
	fputs(PASS "\n", f);
	fclose(f);
	chmod(pass, 0600);
	setenv("DERENROLL_PASSPHRASE_FILE", pass, 1);
	/* The stores are made in a child: a fork copies this process's memory into
	 * the measured child's ru_maxrss until its exec, so this one stays small. */
	pid_t maker = fork();
	if (maker == 0) {
		store = open_store(plain, true);
		fill(store, LIST_RECORDS, list_record);
		enr_store_free(store);
		store = open_store(big, false);
		fill(store, LIST_RECORDS, list_record);
		enr_store_free(store);
		store = open_store(small, false);
		fill(store, 1, list_record);
		enr_store_free(store);
		_exit(0);
	}
	int status;
	if (waitpid(maker, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("making the stores");
	big_s = median_list(bin, NULL, big, &big_kb);
	small_s = median_list(bin, NULL, small, &small_kb);
	plain_s = median_list(bin, plain_cfg, plain, &plain_kb);
	fprintf(out,
	        "\n`derenroll list --json`, a fresh process each, median of %d (default scrypt "
	        "KDF):\n\n",
	        LIST_RUNS);
	fprintf(out, "| store | wall | peak memory (maxrss) |\n| --- | --- | --- |\n");
	fprintf(out, "| %d records | %.0f ms | %.1f MB |\n", LIST_RECORDS, big_s * 1000,
	        big_kb / 1024.0);
	fprintf(out, "| 1 record (process start + KDF) | %.0f ms | %.1f MB |\n", small_s * 1000,
	        small_kb / 1024.0);
	fprintf(out,
	        "| difference: time beyond the KDF for %d records | %.0f ms (target < 50 ms) | "
	        "%.1f MB (target < 30 MB in all) |\n",
	        LIST_RECORDS, (big_s - small_s) * 1000, (big_kb - small_kb) / 1024.0);
	fprintf(out, "| %d records, plain store (no KDF, no decryption) | %.0f ms | %.1f MB |\n",
	        LIST_RECORDS, plain_s * 1000, plain_kb / 1024.0);
}

int main(int argc, char **argv)
{
	const char *bin = NULL;
	int n = 1000, sample = 50, smoke = 0, max_address = 0;
	struct world w = {0};
	double bound, capped, wall, one;
	char *list_report = NULL;
	size_t list_len = 0;
	FILE *list_out;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--smoke") == 0 && i + 1 < argc)
			smoke = n = atoi(argv[++i]);
		else if (strcmp(argv[i], "--records") == 0 && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (strcmp(argv[i], "--serial") == 0 && i + 1 < argc)
			sample = atoi(argv[++i]);
		else
			bin = argv[i];
	}
	if (smoke)
		sample = 1;
	if (n < 2 || sample < 1 || sample > n) {
		fprintf(stderr,
		        "usage: bench_status [--smoke N | --records N --serial N] [DERENROLL]\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/bench-status-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		die("mkdtemp");
	atexit(remove_dir);
	/* First, while this process is small (see bench_list()). */
	if (bin && !smoke) {
		list_out = open_memstream(&list_report, &list_len);
		bench_list(list_out, bin);
		fclose(list_out);
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	start_world(&w, n);
	if (smoke) {
		wall = run_status(&w, &max_address);
		printf(
		    "1..1\n%s 1 - status of %d records at %d ms latency: %.2f s, SolarEdge at most "
		    "%d at once\n",
		    wall >= 0 && max_address <= 3 ? "ok" : "not ok", n, LATENCY_MS, wall,
		    max_address);
		stop_world(&w);
		curl_global_cleanup();
		return wall >= 0 && max_address <= 3 ? 0 : 1;
	}
	printf("## Support commands\n\n`bench_status` (tests/bench/bench_status.c, "
	       "`meson test -C build --benchmark status`): %d records, half SolarEdge API keys, "
	       "half Solis key pairs (one account each), the in-process sandbox answering after "
	       "%d ms.\n\n",
	       n, LATENCY_MS);
	printf(
	    "| bucket | calls | limit (vendors.json) | least time |\n| --- | --- | --- | --- |\n");
	bound = compute_bound(&capped, w.catalog, n, LATENCY_MS / 1000.0, true);
	wall = run_status(&w, &max_address);
	if (wall < 0)
		die("a record was not ok");
	one = run_one_by_one(&w, sample);
	printf("\n| measure | value |\n| --- | --- |\n");
	printf("| bound the vendors' limits allow | %.2f s |\n", bound);
	printf("| the same with derenroll's cap of %d at once | %.2f s |\n", GLOBAL_CAP, capped);
	printf("| `status` (one bulk run) | %.2f s (%.2fx the capped bound, %.2fx the vendors'; "
	       "goal 1.10x) |\n",
	       wall, wall / capped, wall / bound);
	printf("| one by one (%d timed, times %d) | %.1f s (%.0f ms each) |\n", sample, n, one * n,
	       one * 1000);
	printf("| SolarEdge calls at once per address, most | %d (v2 has no such limit; v1 had 3) "
	       "|\n",
	       max_address);
	stop_world(&w);
	curl_global_cleanup();
	if (list_report)
		fputs(list_report, stdout);
	free(list_report);
	return 0;
}
