/* derenroll list / show / status / refresh / remove / export: the support staff's commands. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "derenroll/bulk.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "cli.h"
#include "progress.h"
#include "store_cli.h"
#include "style.h"

#define EXIT_USAGE   2
#define MAX_DAYS     3650
#define MAX_DEADLINE (7 * 86400L) /* seconds */

/* The options every command of this file may take; each accepts a subset. */
struct opts {
	bool json, reveal, yes, force, help;
	long due;      /* -1: not given */
	long deadline; /* seconds, 0: none */
	char **ids;
	int n_ids;
};

enum {
	OPT_JSON = 'j',
	OPT_DUE = 'd',
	OPT_REVEAL = 'r',
	OPT_YES = 'y',
	OPT_FORCE = 'f',
	OPT_DEADLINE = 't'
};

/* "90", "90s", "10m", "2h" as seconds into `out`; false when it is none of them. */
static bool parse_duration(long *out, const char *text)
{
	char *end = NULL;
	long n, unit = 1;

	if (*text < '0' || *text > '9')
		return false;
	errno = 0;
	n = strtol(text, &end, 10);
	if (errno || end == text)
		return false;
	if (*end == 'm')
		unit = 60;
	else if (*end == 'h')
		unit = 3600;
	else if (*end != 's' && *end)
		return false;
	if (*end && end[1])
		return false;
	if (n < 1 || n > MAX_DEADLINE / unit)
		return false;
	*out = n * unit;
	return true;
}

/* Parses argv for `allowed` (a string of the OPT_ letters). Returns 0, or the
 * exit code after a message. */
static int parse(struct opts *o, int argc, char **argv, const char *allowed, const char *usage)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"due", required_argument, NULL, OPT_DUE},
	    {"reveal", no_argument, NULL, OPT_REVEAL},
	    {"yes", no_argument, NULL, OPT_YES},
	    {"force", no_argument, NULL, OPT_FORCE},
	    {"deadline", required_argument, NULL, OPT_DEADLINE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->due = -1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			printf("Usage: derenroll %s %s\n", argv[0], usage);
			o->help = true;
			return 0;
		}
		if (c == '?' || !strchr(allowed, c)) {
			if (c != '?')
				cli_error("%s: option %s does not apply", argv[0],
				          argv[optind - 1]);
			fprintf(stderr, "Usage: derenroll %s %s\n", argv[0], usage);
			return EXIT_USAGE;
		}
		switch (c) {
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_REVEAL:
			o->reveal = true;
			break;
		case OPT_YES:
			o->yes = true;
			break;
		case OPT_FORCE:
			o->force = true;
			break;
		case OPT_DEADLINE:
			if (!parse_duration(&o->deadline, optarg)) {
				cli_error(
				    "--deadline takes a duration such as 600, 90s, 10m or 2h, "
				    "of at most 7 days, not '%s'",
				    optarg);
				return EXIT_USAGE;
			}
			break;
		case OPT_DUE: {
			char *end = NULL;
			errno = 0;
			o->due = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || o->due < 0 || o->due > MAX_DAYS) {
				cli_error("--due takes a number of days from 0 to %d, not '%s'",
				          MAX_DAYS, optarg);
				return EXIT_USAGE;
			}
			break;
		}
		}
	}
	o->ids = argv + optind;
	o->n_ids = argc - optind;
	return 0;
}

/* RFC 3339 UTC. */
static void format_time(char *buf, size_t size, long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A JSON string (valid UTF-8 whatever the vendor sent), or null. */
static void json_string(FILE *out, const char *s)
{
	enr_text_json_string(out, s);
}

/* Config, [ui] expiring_days (when `days` is wanted) and the store. */
static int prepare(struct cli_globals *g, enum cli_reads reads, long *days,
                   struct enr_store **store)
{
	int rc = cli_load_config(g);

	if (rc == 0 && days)
		rc = enr_config_get_long(days, g->cfg, "ui", "expiring_days", 7, 0, 365);
	if (rc == 0)
		rc = cli_open_store_reading(g, reads, false, store);
	return rc;
}

/* A copy of record `id`, or ENR_E_NOTFOUND saying where to look. */
static int get_record(struct enr_record **out, const struct enr_store *store, const char *id)
{
	int rc = enr_store_get(out, store, id);

	if (rc == ENR_E_NOTFOUND)
		rc = enr_error_set(ENR_E_NOTFOUND, "no record %s in %s (see derenroll list)", id,
		                   enr_store_path(store));
	return rc;
}

/* ---- list ---- */

struct row {
	const struct enr_record *rec;
	enum enr_status status;
	long long due;
};

static int row_cmp(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->status != y->status)
		return x->status < y->status ? -1 : 1;
	/* Sooner first; never (0) last. */
	if (x->due != y->due) {
		if (!x->due || !y->due)
			return x->due ? -1 : 1;
		return x->due < y->due ? -1 : 1;
	}
	return strcmp(x->rec->id, y->rec->id);
}

static void print_table(const struct row *rows, size_t n)
{
	char line[256];

	printf("%s\n", cli_list_header());
	for (size_t i = 0; i < n; i++)
		printf("%s\n",
		       cli_list_row(line, sizeof(line), rows[i].rec, rows[i].status, rows[i].due));
}

int cmd_list(struct cli_globals *g, int argc, char **argv)
{
	struct enr_store *store = NULL;
	struct row *rows = NULL;
	struct opts o;
	size_t n = 0, count;
	long days = 7;
	long long now = (long long)time(NULL);
	int rc;

	if ((rc = parse(&o, argc, argv, "jd", "[--json] [--due DAYS]")) || o.help)
		return rc;
	if (o.n_ids) {
		cli_error("list takes no operand ('%s'): see derenroll show ID", o.ids[0]);
		return EXIT_USAGE;
	}
	/* --due: a team store reads only what may be due (the database filters, superset). */
	if (o.due >= 0)
		g->due_before = now + (o.due > days ? o.due : days) * 86400LL;
	/* The table shows only what a team store keeps in columns; --json every field. */
	if ((rc = prepare(g, o.json ? CLI_READ_LISTING : CLI_READ_COLUMNS, &days, &store)) < 0)
		return cli_fail(rc);
	count = enr_store_count(store);
	rows = calloc(count ? count : 1, sizeof(*rows));
	if (!rows) {
		cli_close_store(g, store);
		return cli_fail(enr_error_set(ENR_E_NOMEM, NULL));
	}
	for (size_t i = 0; i < count; i++) {
		struct row *r = &rows[n];
		r->rec = enr_store_at(store, i);
		r->status = enr_status_of(r->rec, now, o.due >= 0 ? o.due : days, &r->due);
		/* --due: only what needs a person within DAYS. */
		if (o.due >= 0 && r->status > ENR_STATUS_EXPIRING)
			continue;
		n++;
	}
	qsort(rows, n, sizeof(*rows), row_cmp);
	if (o.json) {
		putchar('[');
		for (size_t i = 0; i < n && rc == 0; i++) {
			fputs(i ? ",\n" : "\n", stdout);
			rc = enr_record_view_write(stdout, rows[i].rec, now, days, false);
		}
		fputs(n ? "\n]\n" : "]\n", stdout);
	} else if (n) {
		print_table(rows, n);
	} else if (o.due >= 0) {
		printf("no systems due in %ld day%s\n", o.due, o.due == 1 ? "" : "s");
	} else {
		printf("no enrolled systems (in %s)\n", enr_store_path(store));
	}
	free(rows);
	cli_close_store(g, store);
	if (rc == 0 && fflush(stdout) != 0)
		rc = enr_error_set(ENR_E_IO, "cannot write the output: %s", strerror(errno));
	return rc < 0 ? cli_fail(rc) : 0;
}

/* ---- show ---- */

int cmd_show(struct cli_globals *g, int argc, char **argv)
{
	struct enr_store *store = NULL;
	struct enr_record *rec = NULL;
	struct opts o;
	long days = 7;
	long long now = (long long)time(NULL);
	int rc;

	if ((rc = parse(&o, argc, argv, "jr", "ID [--json] [--reveal]")) || o.help)
		return rc;
	if (o.n_ids != 1) {
		cli_error("show takes one record ID (see derenroll list)");
		return EXIT_USAGE;
	}
	rc = prepare(g, CLI_READ_SOME, &days, &store);
	if (rc == 0)
		rc = get_record(&rec, store, o.ids[0]);
	if (rc == 0 && o.json) {
		rc = enr_record_view_write(stdout, rec, now, days, o.reveal);
		putchar('\n');
	} else if (rc == 0) {
		rc = cli_show_text(stdout, rec, now, days, o.reveal, "--reveal shows it");
	}
	enr_record_free(rec);
	cli_close_store(g, store);
	return rc < 0 ? cli_fail(rc) : 0;
}

/* ---- status and refresh ---- */

/* The exit code of a bulk run: 1 when a person is needed (rejected, expired,
 * expiring), else 2 when the request or the company's setup is wrong, else 3
 * when temporary failures remain, else 0. */
static int bulk_exit(int person, int setup, int transient)
{
	return person ? 1 : setup ? 2 : transient ? 3 : 0;
}

static void print_result_json(const struct enr_job_result *r, const struct enr_record *rec,
                              enum enr_status status, bool first)
{
	fputs(first ? "\n{\"id\":" : ",\n{\"id\":", stdout);
	json_string(stdout, r->id);
	fputs(",\"vendor\":", stdout);
	json_string(stdout, r->vendor);
	fputs(",\"customer\":", stdout);
	json_string(stdout, rec ? rec->customer : NULL);
	printf(",\"result\":\"%s\",\"status\":\"%s\",\"refreshed\":%s,\"sites\":%zu,\"message\":",
	       r->error ? enr_record_outcome_name(enr_record_outcome_from_error(r->error)) : "ok",
	       enr_status_name(status), r->refreshed ? "true" : "false", r->n_sites);
	json_string(stdout, r->message);
	putchar('}');
}

/* The tone of a result: what needs a person or the setup red, temporary or soon yellow. */
static enum style_tone result_tone(int code, enum enr_status status)
{
	if (code == 3 || (code == 0 && status == ENR_STATUS_EXPIRING))
		return STYLE_WARN;
	if (code != 0 || status < ENR_STATUS_EXPIRING)
		return STYLE_BAD;
	return status == ENR_STATUS_OK ? STYLE_GOOD : STYLE_WARN;
}

/* One line of `status` or `refresh`: id, vendor, outcome, customer, details. */
static void print_result_text(const struct style *style, const struct enr_job_result *r,
                              const struct enr_record *rec, enum enr_status status, int code,
                              long long now, long days)
{
	char id[ENR_TEXT_VISIBLE_SIZE(10)], vendor[ENR_TEXT_VISIBLE_SIZE(9)];
	char customer[ENR_TEXT_VISIBLE_SIZE(20)], reason[1024];
	const char *details = "";

	if (r->error)
		details = r->message;
	else if (r->refreshed)
		details = "refreshed";
	else if (r->message)
		details = r->message; /* nothing to refresh */
	if (!r->error && rec && status != ENR_STATUS_OK) {
		enr_lifecycle_reason_text(reason, sizeof(reason), rec, now, days);
		if (reason[0])
			details = reason;
	}
	printf("%-10s  %-9s  ", enr_text_visible(id, sizeof(id), r->id, 10),
	       enr_text_visible(vendor, sizeof(vendor), r->vendor ? r->vendor : "-", 9));
	style_word(style, stdout, result_tone(code, status),
	           r->error ? enr_record_outcome_name(enr_record_outcome_from_error(r->error))
	                    : enr_status_name(status),
	           style->marks ? 10 : 8);
	printf("  %-20s  ",
	       enr_text_visible(customer, sizeof(customer), rec ? rec->customer : "-", 20));
	{
		char *shown = enr_text_visible_dup(details ? details : "");
		printf("%s\n", shown ? shown : "");
		free(shown);
	}
}

/* Runs the jobs and prints their outcomes; returns the exit code. */
static int run_bulk(struct cli_globals *g, struct enr_store *store, enum enr_job_kind kind,
                    const char *const *ids, size_t n, const struct opts *o, long days,
                    const char *empty_note)
{
	struct enr_bulk_options bo = {.kind = kind,
	                              .deadline_ms = o->deadline * 1000LL,
	                              .only_due = kind == ENR_JOB_REFRESH && o->due >= 0,
	                              .due_days = o->due};
	struct enr_bulk *bulk = NULL;
	char *store_message;
	struct progress progress;
	struct style style;
	bool json = o->json;
	long long now;
	int rc, store_error, person = 0, setup = 0, transient = 0;

	progress_init(&progress);
	bo.progress = progress_update;
	bo.progress_ctx = &progress;
	rc = enr_bulk_new(&bulk, store, g->cfg, g->catalog, &bo);
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = enr_bulk_add(bulk, ids[i]);
	if (rc == 0)
		rc = enr_bulk_run(bulk);
	progress_done(&progress);
	/* A store that could not be written: what was done is still told, then why it stopped. */
	if (rc < 0 && (!bulk || enr_bulk_result_count(bulk) == 0)) {
		enr_bulk_free(bulk);
		return cli_fail(rc);
	}
	store_error = rc;
	store_message = rc < 0 ? strdup(enr_error_last()) : NULL;
	now = (long long)time(NULL);
	style_init(&style, stdout);
	if (json)
		putchar('[');
	else if (enr_bulk_result_count(bulk))
		printf("%-10s  %-9s  %-*s  %-20s  %s\n", "ID", "VENDOR", style.marks ? 10 : 8,
		       "STATUS", "CUSTOMER", "DETAILS");
	else
		fputs(empty_note, stdout);
	for (size_t i = 0; i < enr_bulk_result_count(bulk); i++) {
		const struct enr_job_result *r = enr_bulk_result(bulk, i);
		struct enr_record *rec = NULL;
		enum enr_status status = ENR_STATUS_UNKNOWN;
		if (enr_store_get(&rec, store, r->id) == 0)
			status = enr_status_of(rec, now, days, NULL);
		int code = r->error ? enr_error_exit_code(r->error) : 0;
		if (code == 1 || status < ENR_STATUS_UNKNOWN)
			person++;
		else if (code == 3)
			transient++;
		else if (code != 0)
			setup++;
		if (json)
			print_result_json(r, rec, status, i == 0);
		else
			print_result_text(&style, r, rec, status, code, now, days);
		enr_record_free(rec);
	}
	if (json)
		fputs(enr_bulk_result_count(bulk) ? "\n]\n" : "]\n", stdout);
	enr_bulk_free(bulk);
	if (store_error < 0) {
		enr_error_set(store_error, "%s", store_message ? store_message : "");
		free(store_message);
		return cli_fail(store_error);
	}
	return bulk_exit(person, setup, transient);
}

/* The ids to work on: those given (each must exist), else every record that `want` keeps. */
static int pick(const char ***out, size_t *n, struct enr_store *store, const struct opts *o,
                bool (*want)(const struct enr_record *, void *), void *ctx)
{
	size_t count = o->n_ids ? (size_t)o->n_ids : enr_store_count(store);
	const char **ids = calloc(count ? count : 1, sizeof(*ids));

	*out = NULL;
	*n = 0;
	if (!ids)
		return enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = 0; i < count; i++) {
		if (o->n_ids) {
			struct enr_record *rec = NULL;
			int rc = get_record(&rec, store, o->ids[i]);
			if (rc < 0) {
				free(ids);
				return rc;
			}
			enr_record_free(rec);
			ids[(*n)++] = o->ids[i];
		} else {
			const struct enr_record *rec = enr_store_at(store, i);
			if (!want || want(rec, ctx))
				ids[(*n)++] = rec->id;
		}
	}
	*out = ids;
	return 0;
}

/* `empty_note`: the line printed (text only) when no record is worked on. */
static int bulk_command(struct cli_globals *g, const struct opts *o, enum enr_job_kind kind,
                        bool (*want)(const struct enr_record *, void *), void *want_ctx,
                        const char *empty_note)
{
	struct enr_store *store = NULL;
	const char **ids = NULL;
	size_t n = 0;
	long days = 7;
	int rc;

	/* The records given, or every one. */
	rc = prepare(g, o->n_ids ? CLI_READ_SOME : CLI_READ_ALL, &days, &store);
	if (rc == 0)
		rc = pick(&ids, &n, store, o, want, want_ctx);
	if (rc < 0) {
		cli_close_store(g, store);
		return cli_fail(rc);
	}
	rc = run_bulk(g, store, kind, ids, n, o, days, empty_note);
	free(ids);
	cli_close_store(g, store);
	return rc;
}

int cmd_status(struct cli_globals *g, int argc, char **argv)
{
	struct opts o;
	int rc;

	if ((rc = parse(&o, argc, argv, "jt", "[--json] [--deadline TIME] [ID...]")) || o.help)
		return rc;
	return bulk_command(g, &o, ENR_JOB_CHECK, NULL, NULL, "no enrolled systems\n");
}

struct refresh_filter {
	const struct enr_catalog *catalog;
	long long now;
	long due;
};

/* What can be refreshed (and, with --due, is due: enr_lifecycle_refresh_due()). */
static bool refreshable(const struct enr_record *rec, void *ctx)
{
	const struct refresh_filter *f = ctx;

	if (f->due >= 0)
		return enr_lifecycle_refresh_due(rec, f->catalog, f->now, f->due);
	return enr_lifecycle_can_refresh(rec, f->catalog, f->now);
}

int cmd_refresh(struct cli_globals *g, int argc, char **argv)
{
	struct refresh_filter f;
	struct opts o;
	char empty[96];
	int rc;

	if ((rc =
	         parse(&o, argc, argv, "jdt", "[--due DAYS | ID...] [--json] [--deadline TIME]")) ||
	    o.help)
		return rc;
	if (o.due >= 0 && o.n_ids) {
		cli_error("refresh takes either --due DAYS or record IDs, not both");
		return EXIT_USAGE;
	}
	if ((rc = cli_load_config(g)) < 0)
		return cli_fail(rc);
	f.catalog = g->catalog;
	f.now = (long long)time(NULL);
	f.due = o.due;
	if (o.due >= 0)
		snprintf(empty, sizeof(empty), "no systems due in %ld day%s\n", o.due,
		         o.due == 1 ? "" : "s");
	else
		snprintf(empty, sizeof(empty),
		         "nothing to refresh: no record holds a refresh token "
		         "its vendor accepts\n");
	return bulk_command(g, &o, ENR_JOB_REFRESH, refreshable, &f, empty);
}

/* ---- remove ---- */

static bool confirm(const struct enr_record *rec)
{
	char line[16], *customer = enr_text_visible_dup(rec->customer);
	char vendor[ENR_TEXT_VISIBLE_SIZE(32)];

	fprintf(stderr, "Remove %s (%s, %s)? Its credentials are lost. [y/N] ", rec->id,
	        customer ? customer : "", enr_text_visible(vendor, sizeof(vendor), rec->vendor, 0));
	free(customer);
	if (!fgets(line, sizeof(line), stdin))
		return false;
	return line[0] == 'y' || line[0] == 'Y';
}

int cmd_remove(struct cli_globals *g, int argc, char **argv)
{
	struct enr_store *store = NULL;
	struct enr_record *rec = NULL;
	struct opts o;
	int rc;

	if ((rc = parse(&o, argc, argv, "y", "ID [--yes]")) || o.help)
		return rc;
	if (o.n_ids != 1) {
		cli_error("remove takes one record ID (see derenroll list)");
		return EXIT_USAGE;
	}
	if (!o.yes && !(isatty(STDIN_FILENO) && isatty(STDERR_FILENO))) {
		cli_error("remove %s: not on a terminal, so nothing is asked: add --yes", o.ids[0]);
		return EXIT_USAGE;
	}
	rc = prepare(g, CLI_READ_SOME, NULL, &store);
	if (rc == 0)
		rc = get_record(&rec, store, o.ids[0]);
	if (rc == 0 && !o.yes && !confirm(rec)) {
		fprintf(stderr, "Nothing removed.\n");
		rc = ENR_E_CANCELLED;
		enr_error_set(rc, "remove %s cancelled", o.ids[0]);
	}
	if (rc == 0)
		rc = enr_store_remove(store, rec->id);
	if (rc == 0)
		fprintf(stderr, "Removed %s.\n", rec->id);
	enr_record_free(rec);
	cli_close_store(g, store);
	if (rc == ENR_E_CANCELLED)
		return 1;
	return rc < 0 ? cli_fail(rc) : 0;
}

/* ---- export ---- */

int cmd_export(struct cli_globals *g, int argc, char **argv)
{
	struct enr_store *store = NULL;
	struct opts o;
	long days = 7;
	char now_text[32];
	long long now = (long long)time(NULL);
	int rc;

	if ((rc = parse(&o, argc, argv, "jf", "--json [--force]")) || o.help)
		return rc;
	if (!o.json || o.n_ids) {
		cli_error("export writes JSON only and takes no operand: derenroll export --json");
		return EXIT_USAGE;
	}
	if (isatty(STDOUT_FILENO) && !o.force) {
		cli_error("export writes every secret: redirect it to a file or a pipe "
		          "(or add --force to print it on this terminal)");
		return EXIT_USAGE;
	}
	if ((rc = prepare(g, CLI_READ_ALL, &days, &store)) < 0)
		return cli_fail(rc);
	if (isatty(STDOUT_FILENO))
		cli_error("warning: printing every record's secrets (tokens and keys) on this "
		          "terminal: clear its scrollback afterwards");
	format_time(now_text, sizeof(now_text), now);
	printf(
	    "{\"format\":\"derenroll-export\",\"version\":1,\"exported_at\":\"%s\",\"records\":[",
	    now_text);
	for (size_t i = 0; rc == 0 && i < enr_store_count(store); i++) {
		fputs(i ? ",\n" : "\n", stdout);
		rc = enr_record_view_write(stdout, enr_store_at(store, i), now, days, true);
	}
	fputs("\n]}\n", stdout);
	cli_close_store(g, store);
	if (rc == 0 && fflush(stdout) != 0)
		rc = enr_error_set(ENR_E_IO, "cannot write the output: %s", strerror(errno));
	return rc < 0 ? cli_fail(rc) : 0;
}
