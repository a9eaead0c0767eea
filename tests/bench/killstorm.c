/*
 * The kill storm: `derenroll refresh` of many records whose refresh tokens
 * rotate and die at once (SMA against the strict sandbox: no grace), SIGKILLed
 * at a uniformly random moment of a whole run, again and again; then one
 * normal refresh of every record. The sandbox tells, of every token the store
 * holds at the end, whether the vendor spent it and when the request that did
 * arrived, so each loss is put in one of two kinds: the answer with the new
 * token reached derenroll before the kill, which then lost it (what the
 * store's journal prevents), or the request was in flight and the vendor
 * answered after the process was gone (which no client can keep).
 *
 *   killstorm [--kills N] [--records N] [--latency MS] [--tap] DERENROLL
 *
 * --latency: how long each vendor request takes to arrive (default 100 ms, as
 * over the internet). With --tap (the suite: 100 kills of 50 records) it
 * passes when at most 2 records were lost after their answer arrived and
 * every loss is of one of the two kinds; without, it prints a section for
 * tests/bench/RESULTS.md. KILLSTORM_KEEP=1 keeps its directory and the runs'
 * output and debug log, for looking into a loss.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "derenroll/error.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "sandbox_internal.h"
#include "sandbox_records.h"

#define PASS       "kill storm passphrase"
#define MAX_LOST   2
#define LATENCY_MS 100

static char dir[256], store_path[300], config_path[300], pass_path[300];

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *what)
{
	printf("Bail out! %s: %s\n", what, enr_error_last());
	exit(2);
}

static struct enr_store *open_store(void)
{
	static const struct enr_store_kdf kdf = {10, 8, 1};
	struct enr_store_options o = {
	    .path = store_path, .passphrase = PASS, .kdf = &kdf, .create = true};
	struct enr_store *store = NULL;

	if (enr_store_open(&store, &o) < 0)
		die("open the store");
	return store;
}

/* `n` SMA customers, each with tokens the sandbox issued as a consent would. */
static void fill(struct enr_sandbox *sb, int n)
{
	struct enr_store *store = open_store();

	if (test_sandbox_sma_records(sb, store, n) < 0)
		die("store the records");
	enr_store_free(store);
}

/* `derenroll refresh` in the background, its output thrown away. */
static pid_t start_refresh(const char *bin)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char out[320];
		int null;
		snprintf(out, sizeof(out), "%s/out", dir);
		null = getenv("KILLSTORM_KEEP") ? open(out, O_WRONLY | O_CREAT | O_APPEND, 0600)
		                                : open("/dev/null", O_RDWR);
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		setenv("DERENROLL_PASSPHRASE_FILE", pass_path, 1);
		execl(bin, bin, "--config", config_path, "--store", store_path, "refresh",
		      (char *)NULL);
		_exit(127);
	}
	return pid;
}

static int wait_for(pid_t pid)
{
	int status = 0;

	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}

/*
 * What the storm did to the tokens the store holds now. A spent one was spent
 * by a run k (its request arrived between the start of run k and its kill).
 * Either the answer with its successor was on its way to run k before the
 * kill, and run k lost it (`after_answer`: what the journal is for), or the
 * vendor was still at work when the process died, its answer sent to no one
 * (`in_flight`: no client can keep those). `start` and `kill` are the runs'
 * moments.
 */
static void classify(struct enr_sandbox *sb, const double *start, const double *kill_at,
                     int n_kills, int *after_answer, int *in_flight)
{
	struct enr_store *store = open_store();

	*after_answer = *in_flight = 0;
	for (size_t i = 0; i < enr_store_count(store); i++) {
		const struct enr_record *rec = enr_store_at(store, i);
		long long used, asked = 0, answered = 0;
		int k = n_kills - 1;
		used = test_sandbox_token_spent(sb, store, rec->id, &asked, &answered);
		if (used <= 0)
			continue;
		/* The run that sent it: the last one started before its request arrived. */
		while (k > 0 && start[k] > (double)asked)
			k--;
		if (getenv("KILLSTORM_KEEP"))
			fprintf(stderr, "spent: run %d, answered %.1f ms before its kill\n", k,
			        kill_at[k] - (double)answered);
		if (!answered || (double)answered > kill_at[k])
			(*in_flight)++;
		else
			(*after_answer)++;
	}
	enr_store_free(store);
}

/* Records whose tokens the vendor refuses: lost to the storm. */
static int count_rejected(int *ok)
{
	struct enr_store *store = open_store();
	int lost = 0;

	*ok = 0;
	for (size_t i = 0; i < enr_store_count(store); i++) {
		const struct enr_record *rec = enr_store_at(store, i);
		if (rec->last_check.outcome == ENR_OUTCOME_REJECTED)
			lost++;
		else if (rec->last_check.outcome == ENR_OUTCOME_OK)
			(*ok)++;
	}
	enr_store_free(store);
	return lost;
}

static void remove_dir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (getenv("KILLSTORM_KEEP"))
		return;
	if (dir[0] && system(cmd) != 0)
		fprintf(stderr, "killstorm: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
	struct enr_sandbox_options so = {.sma_accept_ms = -1};
	struct enr_catalog *catalog = NULL;
	struct enr_sandbox *sb = NULL;
	const char *bin = NULL;
	long latency = LATENCY_MS;
	int kills = 100, records = 50, lost, ok, status, killed_mid = 0, after_answer, in_flight;
	bool tap = false;
	double *kill_at, *start_at;
	double start, run_ms, total_ms;
	FILE *f;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--kills") == 0 && i + 1 < argc)
			kills = atoi(argv[++i]);
		else if (strcmp(argv[i], "--records") == 0 && i + 1 < argc)
			records = atoi(argv[++i]);
		else if (strcmp(argv[i], "--latency") == 0 && i + 1 < argc)
			latency = atol(argv[++i]);
		else if (strcmp(argv[i], "--tap") == 0)
			tap = true;
		else
			bin = argv[i];
	}
	if (!bin || kills < 0 || records < 1) {
		fprintf(stderr, "usage: killstorm [--kills N] [--records N] [--latency MS] [--tap] "
		                "DERENROLL\n");
		return 2;
	}
	for (char **e = environ; *e;)
		if (strncmp(*e, "DERENROLL_", 10) == 0 &&
		    strncmp(*e, "DERENROLL_DATADIR=", 18) != 0) {
			char name[128];
			snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
			unsetenv(name);
		} else {
			e++;
		}
	snprintf(dir, sizeof(dir), "%s/killstorm-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		die("mkdtemp");
	atexit(remove_dir);
	snprintf(store_path, sizeof(store_path), "%s/store", dir);
	snprintf(config_path, sizeof(config_path), "%s/config.ini", dir);
	snprintf(pass_path, sizeof(pass_path), "%s/passphrase", dir);
	setenv("HOME", dir, 1);
	setenv("XDG_STATE_HOME", dir, 1);
	if (!(f = fopen(pass_path, "w")) || fputs(PASS "\n", f) < 0 || fclose(f) != 0)
		die("write the passphrase file");
	chmod(pass_path, 0600);

	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (enr_catalog_load(&catalog, NULL) < 0)
		die("load vendors.json");
	so.catalog = catalog;
	/* Strict: a rotated-out refresh token is refused at once. The vendor's
	 * requests take a while to arrive, as over the internet. */
	so.refresh_grace = 0;
	so.latency_ms = latency;
	if (enr_sandbox_start(&sb, &so) < 0 || enr_sandbox_write_config(sb, config_path) < 0)
		die("start the sandbox");
	fill(sb, records);
	if (getenv("KILLSTORM_KEEP")) { /* debugging: every request in the log */
		f = fopen(config_path, "a");
		fputs("\n[log]\nlevel = debug\n", f);
		fclose(f);
	}

	/* One whole run, to know how long one takes. */
	start = now_ms();
	status = wait_for(start_refresh(bin));
	run_ms = now_ms() - start;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("the first refresh did not succeed");

	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	kill_at = calloc((size_t)kills + 1, sizeof(*kill_at));
	start_at = calloc((size_t)kills + 1, sizeof(*start_at));
	if (!kill_at || !start_at)
		die("calloc");
	start = now_ms();
	for (int k = 0; k < kills; k++) {
		pid_t pid;
		long us = (long)((double)rand() / RAND_MAX * run_ms * 1000);
		struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
		start_at[k] = now_ms();
		pid = start_refresh(bin);
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		kill(pid, SIGKILL);
		kill_at[k] = now_ms();
		status = wait_for(pid);
		if (WIFSIGNALED(status))
			killed_mid++;
	}
	total_ms = now_ms() - start;

	/* The vendor answers what was in flight at the last kill (after its latency). */
	{
		long wait_ms = 2 * latency + 100;
		struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	/* Every record once more, normally: a lost one is refused now. */
	classify(sb, start_at, kill_at, kills, &after_answer, &in_flight);
	free(kill_at);
	free(start_at);
	status = wait_for(start_refresh(bin));
	lost = count_rejected(&ok);
	enr_sandbox_stop(sb);
	enr_catalog_free(catalog);
	curl_global_cleanup();

	if (tap) {
		bool pass = after_answer <= MAX_LOST && lost == after_answer + in_flight &&
		            lost + ok == records;
		printf("1..1\n");
		printf("# kill storm: %d of %d records lost in %d kills: %d after their new token "
		       "was sent to derenroll, %d with the refresh still with the vendor when the "
		       "process died (%d kills before the run ended; a whole run takes %.0f ms; "
		       "storm %.1f "
		       "s); %d ok after it\n",
		       lost, records, kills, after_answer, in_flight, killed_mid, run_ms,
		       total_ms / 1000, ok);
		printf("%s 1 - at most %d records lost after their answer arrived, in %d kills\n",
		       pass ? "ok" : "not ok", MAX_LOST, kills);
		return pass ? 0 : 1;
	}
	printf("## Kill storm\n\n`killstorm` (tests/bench/killstorm.c, `meson test -C build "
	       "--benchmark killstorm`): `derenroll refresh` of %d SMA records (rotating refresh "
	       "tokens, the sandbox strict: a rotated-out token is refused at once; each vendor "
	       "request arrives after %ld ms), SIGKILLed at a uniformly random moment of a whole "
	       "run, %d times; then one normal refresh of every record. The suite runs the same "
	       "with 100 kills (at most %d lost after their answer arrived).\n\n",
	       records, latency, kills, MAX_LOST);
	printf("| measure | value |\n| --- | --- |\n");
	printf("| records lost | %d of %d |\n", lost, records);
	printf("| of which after the answer with the new token was sent to derenroll | %d |\n",
	       after_answer);
	printf("| of which with the refresh still with the vendor when the process died | %d |\n",
	       in_flight);
	printf("| kills that landed before the run ended | %d of %d |\n", killed_mid, kills);
	printf("| one whole run | %.0f ms |\n", run_ms);
	printf("| records ok after the storm | %d |\n", ok);
	printf("| storm wall time | %.1f s |\n", total_ms / 1000);
	return 0;
}
