/*
 * Benchmark of `derenroll status` on a team store from several processes at
 * once (not a test: `meson test -C build --benchmark team_status`, or
 * `build/tests/bench_team_status build/tui/derenroll [--records N] [--procs P]`).
 *
 * A real PostgreSQL (tests/pg_server.c) holds N records (default 1000), all
 * Solis key pairs on one key, so that every call of every process draws from
 * one per-key bucket of the vendors' limits, which a team store shares through
 * the database (enr_store_take_rate()). The in-process sandbox answers after
 * 100 ms. First one `derenroll status` alone, then P (default 3) at once, as
 * support staff on P machines would: each checks every record and reports all
 * of them, so the P runs make P x N calls together, and the least time the
 * shared limit allows for them is the bound they are measured against.
 *
 * Solis allows 2 calls a second per key (vendors.json): 3,000 calls would take
 * 25 minutes whatever derenroll does. The benchmark runs on a copy of the data
 * directory whose vendors.json gives Solis 100 a second (DERENROLL_DATADIR),
 * the same shape 50 times faster; the rest of the directory is linked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "pg_server.h"
#include "store/internal.h"

#define LATENCY_MS 100
#define PASS       "benchmark passphrase"
#define SOLIS_RATE 100 /* calls a second per key, for this benchmark (vendors.json: 2) */
#define SHARED_KEY "demo-bench-shared"
#define MAX_PROCS  8

static struct test_pg pg;
static char dir[256];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cleanup(void)
{
	char cmd[300];

	test_pg_stop(&pg);
	if (dir[0] && !getenv("BENCH_KEEP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "bench_team_status: could not remove %s\n", dir);
	}
}

static void die(const char *what)
{
	fprintf(stderr, "bench_team_status: %s: %s\n", what, enr_error_last());
	exit(1);
}

/* DIR, and DIR/data: the data directory with vendors.json's Solis limit at SOLIS_RATE a second. */
static void make_datadir(void)
{
	static const char *const linked[] = {"sql", "relay", "answers", "join"};
	const char *src = enr_config_datadir();
	char path[512], from[512];
	struct json_object *doc, *vendors, *limits;
	const char *tmp = getenv("TMPDIR");

	/* DIR itself, removed at the end with the server. */
	snprintf(dir, sizeof(dir), "%s/bench-team-status-XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		die("mkdtemp");
	atexit(cleanup);
	snprintf(path, sizeof(path), "%s/data", dir);
	if (mkdir(path, 0700) < 0)
		die("mkdir data");
	for (size_t i = 0; i < sizeof(linked) / sizeof(linked[0]); i++) {
		snprintf(from, sizeof(from), "%s/%s", src, linked[i]);
		snprintf(path, sizeof(path), "%s/data/%s", dir, linked[i]);
		if (access(from, F_OK) == 0 && symlink(from, path) < 0)
			die("symlink");
	}
	snprintf(from, sizeof(from), "%s/vendors.json", src);
	if (!(doc = json_object_from_file(from)) ||
	    !json_object_object_get_ex(doc, "vendors", &vendors))
		die("vendors.json");
	for (size_t i = 0; i < json_object_array_length(vendors); i++) {
		struct json_object *v = json_object_array_get_idx(vendors, i), *id, *lim;
		if (!json_object_object_get_ex(v, "id", &id) ||
		    strcmp(json_object_get_string(id), "solis") != 0 ||
		    !json_object_object_get_ex(v, "rate_limits", &limits))
			continue;
		lim = json_object_array_get_idx(limits, 0);
		json_object_object_add(lim, "requests", json_object_new_int(SOLIS_RATE));
		json_object_object_add(lim, "per_seconds", json_object_new_int(1));
	}
	snprintf(path, sizeof(path), "%s/data/vendors.json", dir);
	if (json_object_to_file_ext(path, doc, JSON_C_TO_STRING_PRETTY) < 0)
		die("writing vendors.json");
	json_object_put(doc);
	snprintf(path, sizeof(path), "%s/data", dir);
	setenv("DERENROLL_DATADIR", path, 1);
}

static struct enr_record *solis_record(int i, const char *secret)
{
	struct enr_record *rec = NULL;
	char id[16], customer[32];

	snprintf(id, sizeof(id), "bench%05d", i);
	snprintf(customer, sizeof(customer), "Customer %05d", i);
	if (enr_record_new(&rec) < 0)
		die("record");
	enr_record_set(&rec->id, id);
	enr_record_set(&rec->customer, customer);
	enr_record_set(&rec->vendor, "solis");
	enr_record_set(&rec->method, "key");
	rec->cred.type = ENR_CRED_KEY_PAIR;
	enr_record_set(&rec->cred.key_id, SHARED_KEY);
	enr_record_set(&rec->cred.key_secret, secret);
	rec->created_at = rec->updated_at = (long long)time(NULL);
	return rec;
}

struct run {
	pid_t pid;
	double started, wall;
	int status;
	char out[300];
	int ok, results;
};

/* Counts the results of a `status --json` output, and those that are ok. */
static void count_results(struct run *r)
{
	struct json_object *doc = json_object_from_file(r->out), *res;

	r->ok = r->results = 0;
	for (size_t i = 0; doc && i < json_object_array_length(doc); i++) {
		struct json_object *e = json_object_array_get_idx(doc, i);
		r->results++;
		if (json_object_object_get_ex(e, "result", &res) &&
		    strcmp(json_object_get_string(res), "ok") == 0)
			r->ok++;
	}
	json_object_put(doc);
}

/* P `derenroll status --json` at once; the wall time until the last ends. */
static double run_status(const char *bin, const char *config, int procs, struct run *runs)
{
	double t0 = now(), end = t0;

	for (int p = 0; p < procs; p++) {
		snprintf(runs[p].out, sizeof(runs[p].out), "%s/status-%d-of-%d.json", dir, p + 1,
		         procs);
		runs[p].started = now();
		runs[p].pid = fork();
		if (runs[p].pid == 0) {
			int out = open(runs[p].out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			int null = open("/dev/null", O_WRONLY);
			dup2(out, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
			execl(bin, bin, "--config", config, "--store", pg.url, "status", "--json",
			      (char *)NULL);
			_exit(127);
		}
	}
	for (int left = procs; left > 0; left--) {
		int status;
		pid_t pid = wait(&status);
		for (int p = 0; p < procs; p++)
			if (runs[p].pid == pid) {
				runs[p].wall = now() - runs[p].started;
				runs[p].status = status;
				end = now();
			}
	}
	for (int p = 0; p < procs; p++)
		count_results(&runs[p]);
	return end - t0;
}

/* The least time one bucket of `requests` a second (no limit at once) allows
 * for n calls of `lat` seconds: the first `requests` start at once, the rest
 * one every 1/requests s, the last ends `lat` after it starts. */
static double shared_bound(int n, double requests, double lat)
{
	return n > requests ? (n - requests) / requests + lat : lat;
}

static void report(const char *label, int procs, double wall, const struct run *runs, int n)
{
	int calls = 0, ok = 0;
	double bound;

	for (int p = 0; p < procs; p++) {
		calls += runs[p].results;
		ok += runs[p].ok;
	}
	bound = shared_bound(calls, SOLIS_RATE, LATENCY_MS / 1000.0);
	printf("| %s | %d x %d records: %d results, %d ok | %.2f s | %.2f s | %.2fx |\n", label,
	       procs, n, calls, ok, bound, wall, wall / bound);
	for (int p = 0; p < procs; p++)
		if (!WIFEXITED(runs[p].status) || WEXITSTATUS(runs[p].status) != 0)
			fprintf(stderr, "bench_team_status: %s, process %d: exit status %d\n",
			        label, p + 1,
			        WIFEXITED(runs[p].status) ? WEXITSTATUS(runs[p].status) : -1);
}

int main(int argc, char **argv)
{
	static const struct enr_store_kdf kdf = {10, 8, 1};
	const char *bin = NULL;
	int n = 1000, procs = 3;
	struct enr_catalog *catalog = NULL;
	struct enr_sandbox_options so = {.latency_ms = LATENCY_MS, .sma_accept_ms = -1};
	struct enr_sandbox *sb = NULL;
	struct json_object *all, *secret;
	struct enr_store *store = NULL;
	struct enr_record **recs;
	struct run runs[MAX_PROCS];
	char config[300], pass[300], path[300], *json = NULL, key_secret[128];
	double wall;
	FILE *f;

	for (int i = 1; i < argc; i++) {
		int *value = strcmp(argv[i], "--records") == 0 ? &n
		             : strcmp(argv[i], "--procs") == 0 ? &procs
		                                               : NULL;
		if (!value)
			bin = argv[i];
		else if (i + 1 < argc)
			*value = atoi(argv[++i]);
	}
	if (!bin || n < 1 || procs < 1 || procs > MAX_PROCS) {
		fprintf(stderr, "usage: bench_team_status DERENROLL [--records N] [--procs P]\n");
		return 2;
	}
	make_datadir();
	/* The children's own files (outbox, log) here too. */
	snprintf(path, sizeof(path), "%s/home", dir);
	mkdir(path, 0700);
	setenv("HOME", path, 1);
	setenv("XDG_DATA_HOME", path, 1);
	setenv("XDG_STATE_HOME", path, 1);
	setenv("XDG_CONFIG_HOME", path, 1);
	snprintf(pass, sizeof(pass), "%s/pass", dir);
	if (!(f = fopen(pass, "w")))
		die("pass");
	fputs(PASS "\n", f);
	fclose(f);
	chmod(pass, 0600);
	setenv("DERENROLL_PASSPHRASE_FILE", pass, 1);

	if (test_pg_start(&pg) < 0)
		return 1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (enr_catalog_load(&catalog, NULL) < 0)
		die("catalog");
	so.catalog = catalog;
	snprintf(config, sizeof(config), "%s/config.ini", dir);
	if (enr_sandbox_start(&sb, &so) < 0 || enr_sandbox_write_config(sb, config) < 0 ||
	    enr_sandbox_credentials_json(&json, sb) < 0)
		die("sandbox");
	/* The sandbox's Solis key secret: {"solis": {"key_secret": ...}, ...}. */
	secret = all = json_tokener_parse(json);
	free(json);
	for (const char *const *name = (const char *const[]){"solis", "key_secret", NULL}; *name;
	     name++)
		if (!json_object_object_get_ex(secret, *name, &secret))
			die("the sandbox's Solis credentials");
	snprintf(key_secret, sizeof(key_secret), "%s", json_object_get_string(secret));
	json_object_put(all);

	{
		struct enr_store_options o = {
		    .path = pg.url, .passphrase = PASS, .kdf = &kdf, .create = true};
		if (enr_store_open(&store, &o) < 0)
			die("open");
	}
	recs = calloc((size_t)n, sizeof(*recs));
	for (int i = 0; i < n; i++)
		recs[i] = solis_record(i, key_secret);
	if (enr_store__bulk_insert(store, recs, (size_t)n) < 0)
		die("fill");
	free(recs);
	enr_store_free(store);

	printf("| run | calls | bound of the shared limit | wall | ratio (goal <= 1.25x) |\n"
	       "| --- | --- | --- | --- | --- |\n");
	wall = run_status(bin, config, 1, runs);
	report("one `status`", 1, wall, runs, n);
	wall = run_status(bin, config, procs, runs);
	snprintf(path, sizeof(path), "%d `status` at once", procs);
	report(path, procs, wall, runs, n);
	printf("\nEach of the %d at once: ", procs);
	for (int p = 0; p < procs; p++)
		printf("%s%.2f s (%d ok)", p ? ", " : "", runs[p].wall, runs[p].ok);
	printf(".\n");
	enr_sandbox_stop(sb);
	enr_catalog_free(catalog);
	curl_global_cleanup();
	return 0;
}
