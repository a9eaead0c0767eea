/*
 * 1,000 concurrent long polls against a real `derenroll relay` process on
 * loopback: every result must be delivered, and the relay's peak memory
 * (VmHWM from /proc) must stay under 50 MB. Prints a Markdown section for
 * tests/bench/RESULTS.md. Usage: bench_relay DERENROLL [POLLS]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <curl/curl.h>

#include "../helpers.h"

#define SECRET       "bench-relay-secret-0123456789abcdefghij"
#define LIMIT_MB     50.0
#define CB_IN_FLIGHT 32

static pid_t relay_pid = -1;
static const char *tmp_dir;

static void cleanup(void)
{
	if (relay_pid > 0) {
		kill(relay_pid, SIGKILL);
		waitpid(relay_pid, NULL, 0);
		relay_pid = -1;
	}
	if (tmp_dir) {
		test_env_cleanup();
		tmp_dir = NULL;
	}
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("bench_relay: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup();
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A field of /proc/<pid>/status in kB, or -1. */
static long proc_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t len = strlen(field);
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, len) == 0 && line[len] == ':')
			kb = strtol(line + len + 1, NULL, 10);
	fclose(f);
	return kb;
}

static int count_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* A port nothing listens on right now: the relay needs it for its public URL. */
static unsigned free_port(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port = 0;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
		port = ntohs(addr.sin_port);
	if (fd >= 0)
		close(fd);
	if (!port)
		die("no free port");
	return port;
}

static void start_relay(const char *exe, unsigned port)
{
	char secret_path[512], config_path[512], err_path[512], listen[32], public_url[64];
	FILE *f;

	/* A fresh HOME and XDG directories, no DERENROLL_* from the caller. */
	tmp_dir = test_env_setup();
	snprintf(secret_path, sizeof(secret_path), "%s/secret", tmp_dir);
	snprintf(config_path, sizeof(config_path), "%s/config.ini", tmp_dir);
	snprintf(err_path, sizeof(err_path), "%s/relay.err", tmp_dir);
	f = fopen(secret_path, "w");
	if (!f)
		die("cannot write %s", secret_path);
	fputs(SECRET "\n", f);
	fclose(f);
	chmod(secret_path, 0600);
	/* Phones come through the proxy, each from its own address. */
	f = fopen(config_path, "w");
	if (!f)
		die("cannot write %s", config_path);
	fputs("[relay]\ntrusted_proxy = 127.0.0.1\n", f);
	fclose(f);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	snprintf(public_url, sizeof(public_url), "http://127.0.0.1:%u", port);
	relay_pid = fork();
	if (relay_pid < 0)
		die("fork: %s", strerror(errno));
	if (relay_pid == 0) {
		int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the bench, even on a crash */
		dup2(fd, 2);
		execl(exe, "derenroll", "--config", config_path, "relay", "--listen", listen,
		      "--public-url", public_url, "--secret-file", secret_path, (char *)NULL);
		_exit(127);
	}
	for (int i = 0;; i++) {
		char buf[4096] = "";
		size_t n = 0;
		f = fopen(err_path, "r");
		if (f) {
			n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
		}
		buf[n] = '\0';
		if (strstr(buf, " port "))
			return;
		if (i == 500 || waitpid(relay_pid, NULL, WNOHANG) == relay_pid) {
			fputs(buf, stderr);
			die("the relay did not start");
		}
		usleep(10000);
	}
}

struct body {
	char data[512];
	size_t len;
};

static size_t keep(char *data, size_t size, size_t n, void *ud)
{
	struct body *b = ud;
	size_t len = size * n;

	if (len > sizeof(b->data) - 1 - b->len)
		len = sizeof(b->data) - 1 - b->len;
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return size * n;
}

struct transfer {
	CURL *easy;
	struct curl_slist *headers;
	struct body body;
	int index;
	bool is_poll;
	double started;
};

static void transfer_init(struct transfer *t, const char *url, bool auth)
{
	memset(&t->body, 0, sizeof(t->body));
	t->easy = curl_easy_init();
	curl_easy_setopt(t->easy, CURLOPT_URL, url);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, keep);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, &t->body);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT, 120L);
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	if (auth) {
		t->headers = curl_slist_append(NULL, "Authorization: Bearer " SECRET);
		curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	}
}

static void transfer_done(struct transfer *t)
{
	curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	t->easy = NULL;
	t->headers = NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int polls = argc > 2 ? atoi(argv[2]) : 1000;
	struct transfer *pt, *ct;
	double *latency, t0, t_links, t_all_waiting, t_done;
	long rss_start, rss_waiting, hwm, status;
	int delivered = 0, next_cb = 0, cb_running = 0, done_polls = 0, fds_start, rc = 0;
	unsigned port;
	char url[256], xff[64];
	struct rlimit lim;
	CURLM *multi;
	CURL *easy;

	if (argc < 2 || polls < 1) {
		fprintf(stderr, "usage: bench_relay DERENROLL [POLLS]\n");
		return 2;
	}
	/* Both sides hold one descriptor per poll. */
	if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
		lim.rlim_cur = lim.rlim_max;
		setrlimit(RLIMIT_NOFILE, &lim);
	}
	if (lim.rlim_cur < (rlim_t)polls + 64)
		die("ulimit -n is %lu, %d polls need more", (unsigned long)lim.rlim_cur, polls);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	port = free_port();
	start_relay(argv[1], port);
	usleep(200000);
	rss_start = proc_status_kb(relay_pid, "VmRSS");
	fds_start = count_fds(relay_pid);
	pt = calloc((size_t)polls, sizeof(*pt));
	ct = calloc((size_t)polls, sizeof(*ct));
	latency = calloc((size_t)polls, sizeof(*latency));
	if (!pt || !ct || !latency)
		die("out of memory");

	/* Register the links, one connection, kept alive. */
	t0 = now_s();
	easy = curl_easy_init();
	for (int i = 0; i < polls; i++) {
		struct body b = {0};
		char json[256];
		struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer " SECRET);
		snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/links", port);
		snprintf(json, sizeof(json),
		         "{\"target\":\"https://auth.tesla.com/oauth2/v3/authorize?n=%d\","
		         "\"state\":\"benchstate%010d\",\"ttl\":900}",
		         i, i);
		curl_easy_reset(easy);
		curl_easy_setopt(easy, CURLOPT_URL, url);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, json);
		curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, keep);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, &b);
		if (curl_easy_perform(easy) != CURLE_OK)
			die("POST /v1/links failed");
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
		curl_slist_free_all(h);
		if (status != 201)
			die("POST /v1/links: %ld %s", status, b.data);
	}
	curl_easy_cleanup(easy);
	t_links = now_s() - t0;

	/* Every poll waiting at once. */
	multi = curl_multi_init();
	for (int i = 0; i < polls; i++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/results/benchstate%010d?wait=60",
		         port, i);
		transfer_init(&pt[i], url, true);
		pt[i].index = i;
		pt[i].is_poll = true;
		curl_multi_add_handle(multi, pt[i].easy);
	}
	t0 = now_s();
	for (;;) {
		int running;
		curl_multi_perform(multi, &running);
		curl_multi_poll(multi, NULL, 0, 50, NULL);
		if (count_fds(relay_pid) >= fds_start + polls)
			break;
		if (now_s() - t0 > 30)
			die("only %d of %d polls reached the relay",
			    count_fds(relay_pid) - fds_start, polls);
	}
	/* Let the relay read and suspend them all. */
	for (double until = now_s() + 1.0; now_s() < until;) {
		int running;
		curl_multi_perform(multi, &running);
		curl_multi_poll(multi, NULL, 0, 50, NULL);
	}
	t_all_waiting = now_s() - t0;
	rss_waiting = proc_status_kb(relay_pid, "VmRSS");

	/* The callbacks, CB_IN_FLIGHT at a time, while the polls are being answered. */
	t0 = now_s();
	while (done_polls < polls) {
		int running, left;
		CURLMsg *msg;
		while (cb_running < CB_IN_FLIGHT && next_cb < polls) {
			struct transfer *t = &ct[next_cb];
			snprintf(url, sizeof(url),
			         "http://127.0.0.1:%u/"
			         "callback?state=benchstate%010d&code=code-%d&iss=bench",
			         port, next_cb, next_cb);
			transfer_init(t, url, false);
			snprintf(xff, sizeof(xff), "X-Forwarded-For: 10.%d.%d.%d",
			         next_cb >> 16 & 255, next_cb >> 8 & 255, next_cb & 255);
			t->headers = curl_slist_append(NULL, xff);
			curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
			t->index = next_cb++;
			t->started = now_s();
			curl_multi_add_handle(multi, t->easy);
			cb_running++;
		}
		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct transfer *t;
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result != CURLE_OK)
				die("%s %d: %s", t->is_poll ? "poll" : "callback", t->index,
				    curl_easy_strerror(msg->data.result));
			if (t->is_poll) {
				char expect[64];
				snprintf(expect, sizeof(expect), "\"code\":\"code-%d\"", t->index);
				if (status == 200 && strstr(t->body.data, expect))
					delivered++;
				else if (done_polls - delivered < 5)
					fprintf(stderr, "poll %d: %ld %s\n", t->index, status,
					        t->body.data);
				latency[done_polls++] = now_s() - ct[t->index].started;
			} else {
				if (status != 200)
					die("callback %d: %ld", t->index, status);
				cb_running--;
			}
			curl_multi_remove_handle(multi, t->easy);
			transfer_done(t);
		}
		curl_multi_poll(multi, NULL, 0, 50, NULL);
		if (now_s() - t0 > 120)
			die("timed out: %d of %d polls answered", done_polls, polls);
	}
	t_done = now_s() - t0;
	curl_multi_cleanup(multi);
	hwm = proc_status_kb(relay_pid, "VmHWM");

	kill(relay_pid, SIGTERM);
	if (waitpid(relay_pid, &rc, 0) != relay_pid || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		die("the relay did not exit 0 on SIGTERM");
	relay_pid = -1;
	qsort(latency, (size_t)polls, sizeof(*latency), cmp_double);

	printf("## Relay\n\n");
	printf("`bench_relay` (tests/bench/bench_relay.c): %d long polls (`wait=60`) held at once "
	       "against a `derenroll relay` process on loopback (libcurl multi, one connection "
	       "each), then one callback each, %d at a time, each from its own address through "
	       "`trusted_proxy = 127.0.0.1`.\n\n",
	       polls, CB_IN_FLIGHT);
	printf("| measure | value |\n| --- | --- |\n");
	printf("| results delivered | %d / %d |\n", delivered, polls);
	printf("| relay peak memory (VmHWM) | %.1f MB (limit %.0f MB) |\n", (double)hwm / 1024.0,
	       LIMIT_MB);
	printf("| relay RSS at start / with all polls waiting | %.1f MB / %.1f MB |\n",
	       (double)rss_start / 1024.0, (double)rss_waiting / 1024.0);
	printf("| memory per waiting poll | %.1f kB |\n",
	       (double)(rss_waiting - rss_start) / polls);
	printf("| %d links registered | %.2f s |\n", polls, t_links);
	printf("| all polls connected and suspended | %.2f s |\n", t_all_waiting);
	printf("| all callbacks and results | %.2f s |\n", t_done);
	printf("| callback to result, median / p99 / max | %.1f / %.1f / %.1f ms |\n",
	       latency[polls / 2] * 1000, latency[polls * 99 / 100] * 1000,
	       latency[polls - 1] * 1000);
	printf("| relay exit on SIGTERM | 0 |\n");

	free(pt);
	free(ct);
	free(latency);
	curl_global_cleanup();
	cleanup();
	if (delivered != polls || (double)hwm / 1024.0 >= LIMIT_MB) {
		fprintf(stderr, "bench_relay: FAILED\n");
		return 1;
	}
	return 0;
}
