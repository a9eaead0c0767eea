/* `derenroll store init`, `derenroll team add|remove|list` and `derenroll log`. */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "cli.h"
#include "store_cli.h"

#define EXIT_USAGE 2

static void format_time(char *buf, size_t size, long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, size, "%lld", t);
}

/* A usage error: the message, the usage on stderr, exit 2. */
static int usage_error(void (*usage)(FILE *), const char *fmt, const char *arg)
{
	cli_error(fmt, arg);
	usage(stderr);
	return EXIT_USAGE;
}

/* ---- store init ---- */

static void store_usage(FILE *out)
{
	fprintf(out, "Usage: derenroll store init\n"
	             "\n"
	             "Creates the credential store: for a team store ([store] url or --store\n"
	             "postgresql://...) its tables, or brings them up to date, and makes you its\n"
	             "first member (asking for your passphrase twice). Safe to run again.\n");
}

int cmd_store(struct cli_globals *g, int argc, char **argv)
{
	struct enr_store *store = NULL;
	int rc;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		store_usage(stdout);
		return 0;
	}
	if (argc != 2 || strcmp(argv[1], "init") != 0)
		return usage_error(store_usage, "store: expected 'init'%s", "");
	if ((rc = cli_open_store(g, true, &store)) == 0)
		printf("%s %s is ready: %zu record%s\n",
		       enr_store_is_team(store) ? "team store" : "credential store",
		       enr_store_path(store), enr_store_count(store),
		       enr_store_count(store) == 1 ? "" : "s");
	cli_close_store(g, store);
	return rc < 0 ? cli_fail(rc) : 0;
}

/* ---- team ---- */

static void team_usage(FILE *out)
{
	fprintf(out, "Usage: derenroll team add NAME [--passphrase-file FILE]\n"
	             "       derenroll team remove NAME\n"
	             "       derenroll team list\n"
	             "\n"
	             "The members of the team store, each opening it with a passphrase of\n"
	             "their own (NAME is their [store] member, by default their database\n"
	             "user). Removing a member rotates the team key.\n");
}

static int team_add(struct cli_globals *g, const char *name, const char *file)
{
	struct enr_store *store = NULL;
	char *pass = NULL;
	int rc;

	if ((rc = cli_open_store(g, true, &store)) == 0 &&
	    (rc = cli_new_member_passphrase(&pass, file, name)) == 0 &&
	    (rc = enr_store_team_add(store, name, pass)) == 0)
		printf("added %s to the team store %s\n", name, enr_store_path(store));
	if (pass) {
		explicit_bzero(pass, strlen(pass));
		free(pass);
	}
	cli_close_store(g, store);
	return rc;
}

static int team_remove(struct cli_globals *g, const char *name)
{
	struct enr_store *store = NULL;
	int rc;

	if ((rc = cli_open_store(g, false, &store)) == 0 &&
	    (rc = enr_store_team_remove(store, name)) == 0)
		printf("removed %s from the team store %s; the team key is new\n", name,
		       enr_store_path(store));
	cli_close_store(g, store);
	return rc;
}

static int team_list(struct cli_globals *g)
{
	struct enr_store *store = NULL;
	struct enr_team_member *m = NULL;
	size_t n = 0;
	char when[32];
	int rc;

	if ((rc = cli_open_store_listing(g, &store)) == 0 &&
	    (rc = enr_store_team_list(&m, &n, store)) == 0) {
		printf("%-24s %-20s %s\n", "MEMBER", "ADDED", "BY");
		for (size_t i = 0; i < n; i++) {
			format_time(when, sizeof(when), m[i].added_at);
			printf("%-24s %-20s %s\n", m[i].name, when, m[i].added_by);
		}
	}
	enr_store_team_list_free(m, n);
	cli_close_store(g, store);
	return rc;
}

int cmd_team(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {{"passphrase-file", required_argument, NULL, 'p'},
	                                        {"help", no_argument, NULL, 'h'},
	                                        {NULL, 0, NULL, 0}};
	const char *file = NULL, *sub;
	int opt, n, rc;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			team_usage(stdout);
			return 0;
		}
		if (opt == 'p')
			file = optarg;
		else
			return usage_error(team_usage, "team: unknown option%s", "");
	}
	n = argc - optind;
	sub = n > 0 ? argv[optind] : "";
	if (strcmp(sub, "add") == 0 && n == 2)
		rc = team_add(g, argv[optind + 1], file);
	else if (strcmp(sub, "remove") == 0 && n == 2 && !file)
		rc = team_remove(g, argv[optind + 1]);
	else if (strcmp(sub, "list") == 0 && n == 1 && !file)
		rc = team_list(g);
	else
		return usage_error(team_usage, "team: expected add NAME, remove NAME or list%s",
		                   "");
	return rc < 0 ? cli_fail(rc) : 0;
}

/* ---- log ---- */

static void log_usage(FILE *out)
{
	fprintf(out, "Usage: derenroll log [ID] [--limit N]\n"
	             "\n"
	             "Who did what in the team store, of one record or all, oldest first\n"
	             "(the newest N, 50 unless told).\n");
}

static int print_entry(const struct enr_audit_entry *e, void *ctx)
{
	char when[32];

	(void)ctx;
	format_time(when, sizeof(when), e->at);
	printf("%-20s  %-16s  %-12s  %-10s  %s\n", when, e->member, e->action,
	       e->record ? e->record : "-", e->result);
	return 0;
}

int cmd_log(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {{"limit", required_argument, NULL, 'n'},
	                                        {"help", no_argument, NULL, 'h'},
	                                        {NULL, 0, NULL, 0}};
	struct enr_store *store = NULL;
	const char *id = NULL;
	long limit = 50;
	char *end;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			log_usage(stdout);
			return 0;
		}
		if (opt != 'n')
			return usage_error(log_usage, "log: unknown option%s", "");
		limit = strtol(optarg, &end, 10);
		if (*end || limit < 1 || limit > 100000)
			return usage_error(log_usage, "log: --limit takes 1 to 100000, not '%s'",
			                   optarg);
	}
	if (argc - optind > 1)
		return usage_error(log_usage, "log: at most one record id%s", "");
	if (argc - optind == 1)
		id = argv[optind];
	if ((rc = cli_open_store_listing(g, &store)) == 0) {
		printf("%-20s  %-16s  %-12s  %-10s  %s\n", "TIME", "MEMBER", "ACTION", "RECORD",
		       "RESULT");
		rc = enr_store_log(store, id, (size_t)limit, print_entry, NULL);
	}
	cli_close_store(g, store);
	return rc < 0 ? cli_fail(rc) : 0;
}
