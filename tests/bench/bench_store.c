/*
 * Benchmark of the credential store with 10,000 records (not a test: run it
 * with `meson test -C build --benchmark store` or `build/tests/bench_store`).
 *
 * It makes two stores holding the same records, one with the default scrypt
 * parameters and one with small ones, then measures each operation in a fresh
 * process (so that the peak memory is that operation's alone):
 *   list: open without credentials + every record as JSON (what `list --json` does)
 *   put:  open + one put (what `enroll` does)
 *   kdf:  the key derivation alone, to subtract and to report apart.
 * Prints a Markdown section for tests/bench/RESULTS.md.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "store/internal.h"

#define RECORDS 10000
#define RUNS    5
#define PASS    "benchmark passphrase"

static const struct enr_store_kdf small_kdf = {10, 8, 1};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long maxrss_kb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_store: %s: %s\n", what, enr_error_last());
	exit(1);
}

/* Token-like text: base64url characters, dots every so often as in a JWT. */
static void token(char *buf, size_t len)
{
	static const char chars[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

	for (size_t i = 0; i < len; i++)
		buf[i] = chars[rand() % 64];
	if (len > 400) {
		buf[36] = '.';
		buf[len - 343] = '.';
	}
	buf[len] = '\0';
}

static void set_token(char **field, size_t len)
{
	char buf[2048];

	token(buf, len);
	enr_record_set(field, buf);
}

/*
 * A mix of what field installers enroll, with token sizes as the vendors issue
 * them: Tesla (JWT access token ~1.3 kB), SMA (JWT access ~1.2 kB, offline
 * refresh token ~0.8 kB), Enphase (JWTs ~0.8 kB), SolarEdge (API key), Solis
 * (key pair).
 */
static struct enr_record *realistic(int i)
{
	static const char *const vendors[] = {"tesla", "sma", "enphase", "solaredge", "solis"};
	struct enr_record *rec = NULL;
	char buf[128], site[32];
	long long t = 1780000000 + i;

	enr_record_new(&rec);
	snprintf(buf, sizeof(buf), "Customer %05d, Job J-2026-%05d", i, i);
	enr_record_set(&rec->customer, buf);
	enr_record_set(&rec->vendor, vendors[i % 5]);
	switch (i % 5) {
	case 0:
		enr_record_set(&rec->method, "oauth");
		rec->cred.type = ENR_CRED_OAUTH;
		set_token(&rec->cred.tokens.access_token, 1300);
		set_token(&rec->cred.tokens.refresh_token, 120);
		enr_record_set(&rec->cred.tokens.token_type, "Bearer");
		enr_record_set(&rec->cred.tokens.scope, "openid offline_access energy_device_data");
		set_token(&rec->account, 36);
		enr_record_set_extra(rec, "region", i % 2 ? "eu" : "na");
		rec->refresh_expires_at = t + 90 * 86400;
		rec->access_expires_at = t + 8 * 3600;
		break;
	case 1:
		enr_record_set(&rec->method, "email");
		rec->cred.type = ENR_CRED_EMAIL;
		snprintf(buf, sizeof(buf), "owner%05d@example.org", i);
		enr_record_set(&rec->cred.owner_email, buf);
		set_token(&rec->cred.tokens.access_token, 1200);
		set_token(&rec->cred.tokens.refresh_token, 800);
		rec->access_expires_at = t + 300;
		break;
	case 2:
		enr_record_set(&rec->method, "oauth");
		rec->cred.type = ENR_CRED_OAUTH;
		set_token(&rec->cred.tokens.access_token, 800);
		set_token(&rec->cred.tokens.refresh_token, 800);
		rec->refresh_expires_at = t + 30 * 86400;
		rec->access_expires_at = t + 86400;
		break;
	case 3:
		enr_record_set(&rec->method, "key");
		rec->cred.type = ENR_CRED_API_KEY;
		set_token(&rec->cred.api_key, 32);
		break;
	default:
		enr_record_set(&rec->method, "key");
		rec->cred.type = ENR_CRED_KEY_PAIR;
		snprintf(buf, sizeof(buf), "13000000000%08d", i);
		enr_record_set(&rec->cred.key_id, buf);
		set_token(&rec->cred.key_secret, 32);
		break;
	}
	snprintf(site, sizeof(site), "%d", 2000000 + i);
	snprintf(buf, sizeof(buf), "Home of customer %05d", i);
	enr_record_add_site(rec, site, buf);
	snprintf(buf, sizeof(buf), "b%09d", i);
	enr_record_set(&rec->id, buf);
	rec->created_at = rec->updated_at = t;
	rec->last_check.at = t + 60;
	rec->last_check.outcome = ENR_OUTCOME_OK;
	enr_record_set(&rec->last_check.message, "1 site found");
	return rec;
}

static struct enr_store *open_store(const char *path, const struct enr_store_kdf *kdf,
                                    bool metadata_only, bool create)
{
	struct enr_store_options o = {0};
	struct enr_store *store = NULL;

	o.path = path;
	o.passphrase = PASS;
	o.kdf = kdf;
	o.metadata_only = metadata_only;
	o.create = create;
	if (enr_store_open(&store, &o) < 0)
		die(path);
	return store;
}

static void make_store(const char *path, const struct enr_store_kdf *kdf)
{
	struct enr_store *store = open_store(path, kdf, false, true);
	struct enr_record **recs = malloc(RECORDS * sizeof(*recs));

	srand(1);
	for (int i = 0; i < RECORDS; i++)
		recs[i] = realistic(i);
	if (enr_store__bulk_insert(store, recs, RECORDS) < 0)
		die("bulk insert");
	free(recs);
	enr_store_free(store);
}

/* ---- the measured operations, each in its own process ---- */

static int child_list(const char *path)
{
	double t0 = now(), t1, t2;
	struct enr_store *store = open_store(path, NULL, true, false);
	FILE *out = fopen("/dev/null", "w");
	size_t bytes = 1;
	char *json;

	t1 = now();
	fputc('[', out);
	/* BENCH_LOAD_ONLY: for profiling the load alone. */
	for (size_t i = 0; !getenv("BENCH_LOAD_ONLY") && i < enr_store_count(store); i++) {
		if (enr_record_to_json(&json, enr_store_at(store, i), false) < 0)
			die("json");
		if (i)
			fputc(',', out);
		fputs(json, out);
		bytes += strlen(json) + 1;
		free(json);
	}
	fputs("]\n", out);
	fclose(out);
	t2 = now();
	printf("%f %f %f %ld %zu %zu\n", t1 - t0, enr_store__kdf_seconds(store), t2 - t1,
	       maxrss_kb(), enr_store_count(store), bytes);
	if (!getenv("BENCH_NO_FREE"))
		enr_store_free(store);
	return 0;
}

static int child_put(const char *path)
{
	double t0 = now(), t1, t2;
	struct enr_store *store = open_store(path, NULL, false, false);
	struct enr_record *rec;
	bool updated;

	t1 = now();
	srand((unsigned)getpid());
	rec = realistic(RECORDS + getpid() % 100000);
	enr_record_set(&rec->id, NULL);
	if (enr_store_put(&updated, store, rec) < 0)
		die("put");
	t2 = now();
	printf("%f %f %f %ld %zu\n", t1 - t0, enr_store__kdf_seconds(store), t2 - t1, maxrss_kb(),
	       enr_store_count(store));
	enr_record_free(rec);
	enr_store_free(store);
	return 0;
}

static int child_kdf(void)
{
	struct store_key key = {0};
	double t0;

	enr_store_kdf_default(&key.kdf);
	t0 = now();
	if (enr_store__derive(&key, PASS) < 0)
		die("kdf");
	printf("%f %ld\n", now() - t0, maxrss_kb());
	return 0;
}

static int child_baseline(void)
{
	printf("%ld\n", maxrss_kb());
	return 0;
}

/* Runs this program again with `args` and parses up to 6 numbers from its output. */
static void measure(double *out, int n, const char *self, const char *mode, const char *path)
{
	int fds[2], status;
	char buf[256] = "";
	ssize_t got;
	pid_t pid;

	if (pipe(fds) < 0 || (pid = fork()) < 0) {
		perror("bench_store");
		exit(1);
	}
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execl(self, self, "--child", mode, path, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	got = read(fds[0], buf, sizeof(buf) - 1);
	buf[got > 0 ? got : 0] = '\0';
	close(fds[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench_store: %s failed\n", mode);
		exit(1);
	}
	if (n > 6 || sscanf(buf, "%lf %lf %lf %lf %lf %lf", &out[0], &out[1], &out[2], &out[3],
	                    &out[4], &out[5]) < n) {
		fprintf(stderr, "bench_store: %s said '%s'\n", mode, buf);
		exit(1);
	}
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), by_value);
	return v[n / 2];
}

static const char *cpu_name(void)
{
	static char name[128] = "unknown CPU";
	char line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");

	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) == 0 && colon) {
			snprintf(name, sizeof(name), "%s", colon + 2);
			name[strcspn(name, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
	return name;
}

static const char *load_average(void)
{
	static char text[32] = "?";
	FILE *f = fopen("/proc/loadavg", "r");

	if (f && fscanf(f, "%31s", text) != 1)
		snprintf(text, sizeof(text), "?");
	if (f)
		fclose(f);
	return text;
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

int main(int argc, char **argv)
{
	char dir[256], big[300], small[300], self[4096];
	double r[6], list_ms[RUNS], list_small_ms[RUNS], put_open_ms[RUNS], put_ms[RUNS];
	double kdf_ms[RUNS], kdf_in_open_ms[RUNS], load_ms[RUNS], json_ms[RUNS];
	long list_kb = 0, list_small_kb = 0, put_kb = 0, kdf_kb = 0, base_kb = 0;
	size_t json_bytes = 0;
	const char *tmp = getenv("TMPDIR");
	struct enr_store_kdf def;
	ssize_t n;
	int status;

	/* For profiling: --make PATH [default], then --child list PATH. */
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "--make") == 0) {
		make_store(argv[2], argc == 4 ? NULL : &small_kdf);
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "--child") == 0) {
		if (strcmp(argv[2], "list") == 0)
			return child_list(argv[3]);
		if (strcmp(argv[2], "put") == 0)
			return child_put(argv[3]);
		if (strcmp(argv[2], "kdf") == 0)
			return child_kdf();
		return child_baseline();
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0) {
		perror("readlink");
		return 1;
	}
	self[n] = '\0';
	snprintf(dir, sizeof(dir), "%s/bench-store-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(big, sizeof(big), "%s/default/store", dir);
	snprintf(small, sizeof(small), "%s/small/store", dir);
	fprintf(stderr, "bench_store: making two stores of %d records in %s\n", RECORDS, dir);
	/* In a child: the measuring processes inherit this one's peak memory. */
	if (fork() == 0) {
		make_store(big, NULL);
		make_store(small, &small_kdf);
		_exit(0);
	}
	if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 1;

	for (int i = 0; i < RUNS; i++) {
		measure(r, 6, self, "list", big);
		list_ms[i] = (r[0] - r[1] + r[2]) * 1e3;
		load_ms[i] = (r[0] - r[1]) * 1e3;
		json_ms[i] = r[2] * 1e3;
		kdf_in_open_ms[i] = r[1] * 1e3;
		if ((long)r[3] > list_kb)
			list_kb = (long)r[3];
		json_bytes = (size_t)r[5];
		measure(r, 6, self, "list", small);
		list_small_ms[i] = (r[0] - r[1] + r[2]) * 1e3;
		if ((long)r[3] > list_small_kb)
			list_small_kb = (long)r[3];
		measure(r, 5, self, "put", big);
		put_open_ms[i] = (r[0] - r[1] + r[2]) * 1e3;
		put_ms[i] = r[2] * 1e3;
		if ((long)r[3] > put_kb)
			put_kb = (long)r[3];
		measure(r, 2, self, "kdf", "-");
		kdf_ms[i] = r[0] * 1e3;
		if ((long)r[1] > kdf_kb)
			kdf_kb = (long)r[1];
		measure(r, 1, self, "baseline", "-");
		base_kb = (long)r[0];
	}
	enr_store_kdf_default(&def);

	printf("## Store\n\n");
	printf("Machine: 2 cores (%s); 1-minute load average %s when done.\n", cpu_name(),
	       load_average());
	printf("%d records (a mix of Tesla, SMA, Enphase OAuth tokens of 0.1-1.3 kB, SolarEdge\n"
	       "API keys, Solis key pairs); store file %.1f MB. Median of %d runs, each in a\n"
	       "fresh process; peak memory is that process's ru_maxrss (the bare program: %.1f "
	       "MB).\n\n",
	       RECORDS, (double)file_size(big) / 1e6, RUNS, (double)base_kb / 1024);
	printf("| what | time beyond the KDF | peak memory | target |\n");
	printf("|---|---|---|---|\n");
	printf("| load + decrypt + list as JSON (%.1f MB), default KDF | %.1f ms | %.1f MB | "
	       "< 50 ms, < 30 MB |\n",
	       (double)json_bytes / 1e6, median(list_ms, RUNS), (double)list_kb / 1024);
	printf("| of which load + decrypt (no credentials) | %.1f ms | | |\n",
	       median(load_ms, RUNS));
	printf("| of which the JSON (enr_record_to_json) | %.1f ms | | |\n", median(json_ms, RUNS));
	printf("| the same, small KDF (peak without the KDF's) | %.1f ms | %.1f MB | |\n",
	       median(list_small_ms, RUNS), (double)list_small_kb / 1024);
	printf("| open (all credentials) + one put | %.1f ms | %.1f MB | < 150 ms |\n",
	       median(put_open_ms, RUNS), (double)put_kb / 1024);
	printf("| of which the put (write, fsync, rename) | %.1f ms | | |\n", median(put_ms, RUNS));
	printf("| KDF alone: scrypt N=2^%u r=%u p=%u (%u MiB) | %.1f ms (in open: %.1f ms) | "
	       "%.1f MB | |\n\n",
	       def.log2_n, def.r, def.p, 128U * def.r * (1U << def.log2_n) >> 20,
	       median(kdf_ms, RUNS), median(kdf_in_open_ms, RUNS), (double)kdf_kb / 1024);

	/* The stores are throwaway. */
	for (int i = 0; i < 2; i++) {
		const char *base = i ? small : big;
		const char *suffixes[] = {"", ".bak", ".lock", ".rlock"};
		char p[400];
		for (size_t s = 0; s < 4; s++) {
			snprintf(p, sizeof(p), "%s%s", base, suffixes[s]);
			unlink(p);
		}
		snprintf(p, sizeof(p), "%s/%s", dir, i ? "small" : "default");
		rmdir(p);
	}
	rmdir(dir);
	return 0;
}
