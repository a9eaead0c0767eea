#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/relay.h"
#include "cli.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: derenroll relay [--listen ADDR:PORT] [--public-url URL] [--secret-file FILE]\n"
	    "\n"
	    "Runs the callback relay for phones until SIGTERM or SIGINT; see derenroll-relay(8).\n"
	    "Defaults come from [relay] in config.ini: listen (%s), public_url\n"
	    "(required), secret (or secret_file, or 'derenroll secret set relay.secret');\n"
	    "there also allowed_target_hosts, trusted_proxy, max_pending and pages_dir.\n"
	    "It logs to stderr unless [log] file is set.\n",
	    ENR_RELAY_DEFAULT_LISTEN);
}

/* The secret from --secret-file when given (it wins over config.ini), else from the config. */
static int load_secret(char **out, const struct enr_config *cfg, const char *secret_file)
{
	struct enr_config *only_file = NULL;
	int rc;

	if (!secret_file)
		return enr_config_get_secret(out, cfg, "relay", "secret");
	rc = enr_config_new(&only_file);
	if (rc == 0)
		rc = enr_config_set(only_file, "relay", "secret_file", secret_file);
	if (rc == 0)
		rc = enr_config_get_secret(out, only_file, "relay", "secret");
	if (rc < 0)
		enr_error_set(rc, "--secret-file %s: %s", secret_file, enr_error_last());
	enr_config_free(only_file);
	return rc;
}

/* A relay holds one descriptor per connection: allow as many as the hard limit does. */
static void raise_fd_limit(void)
{
	struct rlimit lim;

	if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
		lim.rlim_cur = lim.rlim_max;
		setrlimit(RLIMIT_NOFILE, &lim);
	}
}

/*
 * A daemon logs to stderr (the journal under systemd) unless [log] file says
 * otherwise, at [log] level or info.
 */
static int relay_log(const struct enr_config *cfg)
{
	const char *level = enr_config_get(cfg, "log", "level");
	const char *file = enr_config_get(cfg, "log", "file");
	enum enr_log_level parsed = ENR_LOG_INFO;
	int rc;

	if (level && (rc = enr_log_parse_level(&parsed, level)) < 0)
		return enr_error_set(ENR_E_CONFIG, "[log] level: %s", enr_error_last());
	if (file) {
		rc = enr_log_open(file);
		if (rc < 0)
			return rc;
	} else {
		enr_log_close();
	}
	enr_log_set_level(parsed);
	return 0;
}

int cmd_relay(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"public-url", required_argument, NULL, 'u'},
	    {"secret-file", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct enr_relay_options opts = {0};
	const char *listen = NULL, *secret_file = NULL;
	struct enr_relay *relay = NULL;
	char *secret = NULL;
	sigset_t stop_signals;
	long max_pending;
	int opt, rc, sig;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'l':
			listen = optarg;
			break;
		case 'u':
			opts.public_url = optarg;
			break;
		case 's':
			secret_file = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			cli_error("relay: unknown or incomplete option '%s' (try 'derenroll relay "
			          "--help')",
			          argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		cli_error("relay: unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	rc = cli_load_config(g);
	if (rc == 0)
		rc = relay_log(g->cfg);
	if (rc < 0)
		return cli_fail(rc);
	if (!listen)
		listen = enr_config_get(g->cfg, "relay", "listen");
	if (!opts.public_url)
		opts.public_url = enr_config_get(g->cfg, "relay", "public_url");
	if (!opts.public_url) {
		cli_error("relay: no public URL: set --public-url or [relay] public_url to the "
		          "https address phones reach the relay at");
		return EXIT_USAGE;
	}
	opts.allowed_target_hosts = enr_config_get(g->cfg, "relay", "allowed_target_hosts");
	opts.trusted_proxy = enr_config_get(g->cfg, "relay", "trusted_proxy");
	opts.pages_dir = enr_config_get(g->cfg, "relay", "pages_dir");
	rc = enr_config_get_long(&max_pending, g->cfg, "relay", "max_pending", 2000, 1, 1000000);
	if (rc < 0)
		return cli_fail(rc);
	opts.max_records = (size_t)max_pending;
	opts.catalog = g->catalog;
	opts.config = g->cfg;
	rc = load_secret(&secret, g->cfg, secret_file);
	if (rc < 0)
		return cli_fail(rc);
	opts.secret = secret;

	/* Block the stop signals in every thread; this one waits for them. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();

	rc = enr_relay_new(&relay, &opts);
	enr_config_free_secret(secret);
	if (rc == 0)
		rc = enr_relay_start(relay, listen ? listen : ENR_RELAY_DEFAULT_LISTEN);
	if (rc < 0) {
		enr_relay_free(relay);
		return cli_fail(rc);
	}
	if (!opts.trusted_proxy)
		enr_log_info("relay: no [relay] trusted_proxy: behind a reverse proxy, every phone "
		             "shares the proxy's rate limit");
	if (strncmp(enr_relay_public_url(relay), "https://", 8) != 0)
		enr_log_warn("relay: public URL %s is not https: phones will send codes in the "
		             "clear unless this is a test",
		             enr_relay_public_url(relay));
	while (sigwait(&stop_signals, &sig) != 0)
		;
	enr_log_info("relay: %s received, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	enr_relay_free(relay);
	enr_log_info("relay: stopped");
	return 0;
}
