/* derenroll sandbox: serves the offline world of every vendor on loopback. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derenroll/error.h"
#include "derenroll/sandbox.h"
#include "cli.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: derenroll sandbox [--listen 127.0.0.1:PORT] [--write-config FILE]\n"
	        "                         [--latency-ms N] [--refresh-grace S] [--seed N]\n"
	        "\n"
	        "Serves Tesla, SMA, Enphase, SolarEdge, Solis and Derapi on a loopback address,\n"
	        "offline. Writes FILE (mode 0600) with a config.ini pointing every vendor at\n"
	        "it, prints ONE line of JSON (url, config, credentials) and runs until\n"
	        "SIGINT or SIGTERM.\n"
	        "\n"
	        "  --listen ADDR:PORT   loopback address and port (default 127.0.0.1:0 = any)\n"
	        "  --write-config FILE  write the config for the sandbox to FILE first\n"
	        "  --latency-ms N       delay every vendor answer by N ms\n"
	        "  --refresh-grace S    a rotated-out refresh token still works S seconds\n"
	        "  --seed N             derive client ids, secrets and keys from N\n");
}

static bool parse_number(const char *text, long long max, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(text, &end, 10);
	return !errno && end != text && !*end && *out >= 0 && *out <= max;
}

/* "127.0.0.1:8080", "[::1]:8080", "localhost:0" or a bare port. */
static bool parse_listen(const char *text, char *host, size_t size, unsigned *port)
{
	const char *colon = strrchr(text, ':');
	long long n;
	size_t len;

	if (!colon) {
		snprintf(host, size, "127.0.0.1");
		colon = text - 1;
	} else {
		len = (size_t)(colon - text);
		if (len >= 2 && text[0] == '[' && text[len - 1] == ']') {
			text++;
			len -= 2;
		}
		if (len == 0 || len >= size)
			return false;
		memcpy(host, text, len);
		host[len] = '\0';
	}
	if (!parse_number(colon + 1, 65535, &n))
		return false;
	*port = (unsigned)n;
	return true;
}

int cmd_sandbox(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"write-config", required_argument, NULL, 'w'},
	    {"latency-ms", required_argument, NULL, 'L'},
	    {"refresh-grace", required_argument, NULL, 'r'},
	    {"seed", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct enr_sandbox_options o = {0};
	struct enr_sandbox *sb = NULL;
	const char *config_path = NULL;
	char host[64] = "127.0.0.1", *line = NULL;
	sigset_t stop_signals;
	long long n;
	int opt, sig, rc;

	(void)g;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'l':
			if (!parse_listen(optarg, host, sizeof(host), &o.port)) {
				cli_error(
				    "sandbox: --listen wants ADDRESS:PORT, e.g. 127.0.0.1:8080, "
				    "not '%s'",
				    optarg);
				return EXIT_USAGE;
			}
			break;
		case 'w':
			config_path = optarg;
			break;
		case 'L':
			if (!parse_number(optarg, 600000, &n)) {
				cli_error("sandbox: --latency-ms wants 0 to 600000, not '%s'",
				          optarg);
				return EXIT_USAGE;
			}
			o.latency_ms = (long)n;
			break;
		case 'r':
			if (!parse_number(optarg, 90L * 86400, &n)) {
				cli_error(
				    "sandbox: --refresh-grace wants seconds (0 to 7776000), not "
				    "'%s'",
				    optarg);
				return EXIT_USAGE;
			}
			o.refresh_grace = (long)n;
			break;
		case 's':
			if (!parse_number(optarg, LLONG_MAX, &n) || n == 0) {
				cli_error("sandbox: --seed wants a positive number, not '%s'",
				          optarg);
				return EXIT_USAGE;
			}
			o.seed = (unsigned long long)n;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			cli_error("sandbox: unknown option '%s' (try 'derenroll sandbox --help')",
			          argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		cli_error("sandbox: unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	o.address = host;

	/* Blocked before the server's threads exist, so that they inherit the
	 * mask and only sigwait() below receives them. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = enr_sandbox_start(&sb, &o);
	if (rc < 0)
		return cli_fail(rc);
	if (config_path && (rc = enr_sandbox_write_config(sb, config_path)) < 0)
		goto out;
	rc = enr_sandbox_summary_json(&line, sb, config_path);
	if (rc < 0)
		goto out;
	printf("%s\n", line);
	fflush(stdout);
	free(line);
	do {
		rc = sigwait(&stop_signals, &sig);
	} while (rc == EINTR);
	rc = 0;
out:
	enr_sandbox_stop(sb);
	return rc < 0 ? cli_fail(rc) : 0;
}
