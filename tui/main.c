#include <getopt.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/store.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "enr_build_config.h"
#include "cli.h"
#include "store_cli.h"
#include "wizard.h"

#define EXIT_USAGE 2

struct command {
	const char *name;
	const char *args;
	const char *summary;
	int (*run)(struct cli_globals *g, int argc, char **argv);
};

static int run_reauth(struct cli_globals *g, int argc, char **argv);
static int run_help(struct cli_globals *g, int argc, char **argv);

/* Every sub-command the product has; run == NULL: not in this build yet. */
static const struct command commands[] = {
    {"list", "[--json] [--due DAYS]", "list enrolled systems, most urgent first", cmd_list},
    {"show", "ID [--json] [--reveal]", "show one enrolled system", cmd_show},
    {"status", "[--json] [--deadline TIME] [ID...]", "check systems against the vendors now",
     cmd_status},
    {"refresh", "[--due DAYS | ID...] [--json] [--deadline TIME]",
     "refresh tokens before they expire", cmd_refresh},
    {"enroll", "VENDOR --customer REF [--method M] [--site ID] [--json]",
     "enroll a system without the wizard", cmd_enroll},
    {"remove", "ID [--yes]", "remove an enrolled system", cmd_remove},
    {"export", "--json [--force]", "export every record, secrets included", cmd_export},
    {"secret", "set|list|remove [NAME]", "keep the company's app secrets in the store", cmd_secret},
    {"sandbox", "[--listen ADDR:PORT] [--write-config FILE] [--latency-ms N] [--refresh-grace S]",
     "serve the offline world of every vendor on loopback", cmd_sandbox},
    {"relay", "--listen ADDR:PORT --public-url URL --secret-file FILE",
     "run the callback relay for phones", cmd_relay},
    {"join", "create-flow --redirect-uri URL --vendors LIST [--program ID] [--save]",
     "manage Derapi Join flows", cmd_join},
    {"tesla", "register --domain DOMAIN [--region na|eu|cn] [--key-url URL]",
     "register the company's Tesla app in a region", cmd_tesla},
    {"reauth", "ID", "re-authorize an enrolled system with the customer", run_reauth},
    {"doctor", "[--json]", "check the company's setup before the first customer", cmd_doctor},
    {"store", "init | copy --from A --to B", "create a credential store, copy one into another",
     cmd_store},
    {"import", "--json FILE", "read what export --json wrote into the store", cmd_import},
    {"team", "add|remove NAME | list", "the members of the team store", cmd_team},
    {"log", "[ID] [--limit N]", "who did what in the team store", cmd_log},
    {"sync", "", "push what was enrolled while the team store was out of reach", cmd_sync},
    {"help", "[COMMAND]", "show this help, or the help of one command", run_help},
};

void cli_error(const char *fmt, ...)
{
	char *msg = NULL, *shown = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	/* Messages carry vendors' words and users' names: made visible, never obeyed. */
	if (n < 0)
		msg = NULL; /* undefined after a failure */
	else
		shown = enr_text_visible_dup(msg);
	fprintf(stderr, "derenroll: %s\n", shown ? shown : "(out of memory)");
	free(shown);
	free(msg);
}

int cli_fail(int rc)
{
	const char *msg = enr_error_last();

	cli_error("%s", msg[0] ? msg : enr_error_default_message(rc));
	return enr_error_exit_code(rc);
}

/* The config's file, for messages about it ("the built-in defaults" without one). */
static const char *config_name(const struct enr_config *cfg)
{
	const char *path = cfg ? enr_config_path(cfg) : NULL;

	return path ? path : "the built-in defaults (no config file)";
}

static void print_config_warning(const char *msg, void *ctx)
{
	cli_error("warning: %s: %s", config_name(ctx), msg);
}

/*
 * The log goes to [log] file or $XDG_STATE_HOME/derenroll/derenroll.log at
 * [log] level (default info); when that file cannot be opened, only warnings
 * and errors go to stderr, so that scripts' output stays clean.
 */
static int open_log(const struct enr_config *cfg)
{
	const char *file = enr_config_get(cfg, "log", "file");
	const char *level_name = enr_config_get(cfg, "log", "level");
	enum enr_log_level level = ENR_LOG_INFO;
	char *default_path = NULL;
	int rc;

	if (level_name && (rc = enr_log_parse_level(&level, level_name)) < 0)
		return enr_error_set(ENR_E_CONFIG, "%s: [log] level: %s", config_name(cfg),
		                     enr_error_last());
	if (!file)
		file = default_path = enr_log_default_path();
	if (file && enr_log_open(file) == 0) {
		enr_log_set_level(level);
	} else {
		enr_log_set_level(level < ENR_LOG_WARN ? level : ENR_LOG_WARN);
	}
	free(default_path);
	return 0;
}

int cli_load_config(struct cli_globals *g)
{
	int rc;

	if (!g->cfg) {
		rc = enr_config_load(&g->cfg, g->config_path);
		if (rc < 0)
			return rc;
		for (size_t i = 0; i < enr_config_warning_count(g->cfg); i++)
			cli_error("warning: %s", enr_config_warning(g->cfg, i));
		rc = open_log(g->cfg);
		if (rc < 0)
			return rc;
	}
	if (!g->catalog) {
		rc = enr_catalog_load(&g->catalog, NULL);
		if (rc < 0)
			return rc;
		enr_catalog_check_config(g->catalog, g->cfg, print_config_warning, g->cfg);
	}
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: derenroll [GLOBAL OPTIONS] [COMMAND [ARGS]]\n"
	        "\n"
	        "Authorize a customer's solar and battery systems for API access.\n"
	        "Without a command, runs the enrollment wizard.\n"
	        "\n"
	        "Global options (before the command):\n"
	        "  --config FILE   read FILE instead of ~/.config/derenroll/config.ini\n"
	        "  --store FILE    use the credential store FILE (postgresql://...: a team store)\n"
	        "  --demo          run against the built-in sandbox with a throwaway store\n"
	        "  --customer REF  the wizard: the customer reference to enroll\n"
	        "  --vendor ID     the wizard: start at this vendor's authorization step\n"
	        "  --method M      the wizard: with --vendor, this method of the vendor\n"
	        "  -h, --help      show this help and exit\n"
	        "  -V, --version   show the version and exit\n"
	        "\n"
	        "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-8s %s\n           %s%s\n", commands[i].name, commands[i].args,
		        commands[i].summary, commands[i].run ? "" : " (not available yet)");
	fprintf(out, "\n"
	             "Exit codes: 0 ok; 1 needs a person (rejected, expired, declined, expiring);\n"
	             "2 usage or configuration error; 3 temporary or vendor failure, retry later;\n"
	             "4 credential store error.\n");
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* `derenroll help [COMMAND]`: the usage, or COMMAND's own --help. */
static int run_help(struct cli_globals *g, int argc, char **argv)
{
	const struct command *cmd;
	char help[] = "--help";
	char *args[3];

	if (argc == 1) {
		usage(stdout);
		return 0;
	}
	cmd = argc == 2 ? find_command(argv[1]) : NULL;
	if (!cmd || !cmd->run || cmd->run == run_help) {
		cli_error("help takes one command (try 'derenroll help')");
		return EXIT_USAGE;
	}
	args[0] = argv[1];
	args[1] = help;
	args[2] = NULL;
	optind = 0;
	return cmd->run(g, 2, args);
}

/* `derenroll reauth ID` on a terminal: the wizard at the record's authorization step. */
static int run_reauth(struct cli_globals *g, int argc, char **argv)
{
	struct wizard_options o = {0};

	if (argc == 2 && argv[1][0] != '-' && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
		o.reauth_id = argv[1];
		return wizard_run(g, &o);
	}
	return cmd_reauth(g, argc, argv);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"store", required_argument, NULL, 's'},
	    {"demo", no_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {"customer", required_argument, NULL, 'C'},
	    {"vendor", required_argument, NULL, 'v'},
	    {"method", required_argument, NULL, 'm'},
	    {NULL, 0, NULL, 0},
	};
	struct wizard_options wo = {0};
	struct cli_globals g = {0};
	const struct command *cmd;
	int opt, status;

	setlocale(LC_ALL, "");
	opterr = 0;
	/* '+': global options stop at the first operand (the command). */
	while ((opt = getopt_long(argc, argv, "+hV", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			g.config_path = optarg;
			break;
		case 's':
			g.store_path = optarg;
			break;
		case 'D':
			g.demo = true;
			break;
		case 'C':
			wo.customer = optarg;
			break;
		case 'v':
			wo.vendor = optarg;
			break;
		case 'm':
			wo.method = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("derenroll %s\n", ENR_VERSION);
			return 0;
		default:
			if (optopt && optopt != '?')
				cli_error("unknown option '-%c' (try 'derenroll --help')", optopt);
			else
				cli_error("unknown option '%s' (try 'derenroll --help')",
				          argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	/* Every user of this machine reads argv (ps): a password belongs elsewhere. */
	if (g.store_path && enr_store_url_has_password(g.store_path))
		cli_error("warning: the password in --store can be read by every user of this "
		          "machine (ps): keep it in ~/.pgpass or PGPASSWORD, or give the URL as "
		          "[store] url in config.ini");
	if ((wo.customer || wo.method) && !wo.vendor && optind >= argc) {
		cli_error("--customer and --method go with --vendor ID (try 'derenroll --help')");
		return EXIT_USAGE;
	}
	if (optind >= argc) {
		status = wizard_run(&g, &wo);
		goto out;
	}
	if (wo.customer || wo.vendor || wo.method) {
		cli_error(
		    "--customer, --vendor and --method start the wizard: they take no command "
		    "(for '%s', give its own options after it)",
		    argv[optind]);
		return EXIT_USAGE;
	}
	cmd = find_command(argv[optind]);
	if (!cmd) {
		cli_error("unknown command '%s' (try 'derenroll --help')", argv[optind]);
		return EXIT_USAGE;
	}
	if (!cmd->run) {
		cli_error("'%s' is not available in this build yet", cmd->name);
		return EXIT_USAGE;
	}
	/* Sub-commands parse their own options from argv[0] = their name. */
	argc -= optind;
	argv += optind;
	optind = 0;
	status = cmd->run(&g, argc, argv);
out:
	enr_config_free(g.cfg);
	enr_catalog_free(g.catalog);
	enr_log_close();
	enr_log_clear_secrets();
	return status;
}
