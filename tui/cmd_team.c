/* `derenroll store init`, `derenroll team add|remove|list` and `derenroll log`. */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "derenroll/text.h"
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
	             "       derenroll store copy --from STORE --to STORE\n"
	             "\n"
	             "init creates the credential store: for a team store ([store] url or --store\n"
	             "postgresql://...) its tables, or brings them up to date, and makes you its\n"
	             "first member (asking for your passphrase twice). Safe to run again.\n"
	             "copy copies every record and app secret from one store to another (a file\n"
	             "or a postgresql:// URL), each under its own id: run again, it copies what\n"
	             "is missing or changed and duplicates nothing. A record changed in the\n"
	             "destination since (a refreshed token) is left as it is there.\n");
}

/* What a copy did, record by record. */
struct copy_counts {
	size_t added, updated, unchanged, refused;
};

/* Puts a copy of `rec` (its id kept) into `to`, unless `to` holds that record as it is
 * or newer (changed there since: a refreshed token is never put back); counts it. */
static int put_copy(struct enr_store *to, const struct enr_record *rec, struct copy_counts *n)
{
	struct enr_record *copy = NULL, *there = NULL;
	bool was = false;
	int rc = enr_store_get(&there, to, rec->id);

	if (rc == 0 && there->updated_at >= rec->updated_at) {
		enr_record_free(there);
		n->unchanged++;
		return 0;
	}
	enr_record_free(there);
	if (rc < 0 && rc != ENR_E_NOTFOUND)
		return rc;
	if ((rc = enr_record_dup(&copy, rec)) == 0)
		rc = enr_store_put(&was, to, copy);
	enr_record_free(copy);
	if (rc == ENR_E_EXISTS || rc == ENR_E_USAGE) {
		cli_error("record %s not copied: %s", rec->id, enr_error_last());
		n->refused++;
		return 0;
	}
	if (rc == 0)
		(*(was ? &n->updated : &n->added))++;
	return rc;
}

static int store_copy(struct cli_globals *g, const char *from, const char *to)
{
	struct enr_store *src = NULL, *dst = NULL;
	struct copy_counts n = {0};
	size_t secrets = 0;
	char *value = NULL;
	int rc;

	g->no_outbox = true;
	if ((rc = cli_open_store_at(g, from, false, &src)) < 0 ||
	    (rc = cli_open_store_at(g, to, true, &dst)) < 0)
		goto out;
	if (strcmp(enr_store_path(src), enr_store_path(dst)) == 0) {
		rc = enr_error_set(ENR_E_USAGE, "--from and --to are the same store");
		goto out;
	}
	for (size_t i = 0; rc == 0 && i < enr_store_count(src); i++)
		rc = put_copy(dst, enr_store_at(src, i), &n);
	for (size_t i = 0; rc == 0 && i < enr_store_secret_count(src); i++) {
		const char *name = enr_store_secret_name(src, i);
		if ((rc = enr_store_secret_get(&value, src, name)) == 0 &&
		    (rc = enr_store_secret_set(dst, name, value)) == 0)
			secrets++;
		if (value)
			explicit_bzero(value, strlen(value));
		free(value);
		value = NULL;
	}
	printf("copied %zu records to %s: %zu added, %zu updated, %zu unchanged (the same or "
	       "newer there), %zu refused; %zu app secrets\n",
	       n.added + n.updated, enr_store_path(dst), n.added, n.updated, n.unchanged, n.refused,
	       secrets);
	if (rc == 0 && n.refused)
		rc = enr_error_set(ENR_E_EXISTS, "%zu record%s could not be copied (see above)",
		                   n.refused, n.refused == 1 ? "" : "s");
out:
	cli_close_store(g, dst);
	cli_close_store(g, src);
	return rc;
}

int cmd_store(struct cli_globals *g, int argc, char **argv)
{
	struct enr_store *store = NULL;
	int rc;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		store_usage(stdout);
		return 0;
	}
	if (argc == 6 && strcmp(argv[1], "copy") == 0) {
		const char *from = NULL, *to = NULL;
		for (int i = 2; i + 1 < argc; i += 2) {
			if (strcmp(argv[i], "--from") == 0)
				from = argv[i + 1];
			else if (strcmp(argv[i], "--to") == 0)
				to = argv[i + 1];
		}
		if (!from || !to)
			return usage_error(store_usage,
			                   "store copy: give --from STORE --to STORE%s", "");
		rc = store_copy(g, from, to);
		return rc < 0 ? cli_fail(rc) : 0;
	}
	if (argc != 2 || strcmp(argv[1], "init") != 0)
		return usage_error(store_usage, "store: expected init, or copy --from A --to B%s",
		                   "");
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
	/* Every field is the database's: any client may have written it. */
	char when[32], member[ENR_TEXT_VISIBLE_SIZE(64)], login[ENR_TEXT_VISIBLE_SIZE(64)],
	    who[2 * ENR_TEXT_VISIBLE_SIZE(64) + 16], action[ENR_TEXT_VISIBLE_SIZE(40)],
	    record[ENR_TEXT_VISIBLE_SIZE(40)], result[ENR_TEXT_VISIBLE_SIZE(200)];

	(void)ctx;
	format_time(when, sizeof(when), e->at);
	enr_text_visible(member, sizeof(member), e->member, 64);
	/* Who wrote it, by their database login too when the member name is another. */
	if (e->login)
		snprintf(who, sizeof(who), "%s (login %s)", member,
		         enr_text_visible(login, sizeof(login), e->login, 64));
	else
		snprintf(who, sizeof(who), "%s", member);
	printf("%-20s  %-16s  %-12s  %-10s  %s\n", when, who,
	       enr_text_visible(action, sizeof(action), e->action, 40),
	       enr_text_visible(record, sizeof(record), e->record ? e->record : "-", 40),
	       enr_text_visible(result, sizeof(result), e->result, 200));
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

/* ---- import ---- */

static void import_usage(FILE *out)
{
	fprintf(out, "Usage: derenroll import --json FILE   ('-': standard input)\n"
	             "\n"
	             "Reads what `derenroll export --json` wrote into the credential store, each\n"
	             "record under its own id: importing twice duplicates nothing.\n");
}

#define MAX_IMPORT (512L * 1024 * 1024)

static int read_all(char **out, const char *file)
{
	FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap + 1), *grown;
	int rc = 0;

	*out = NULL;
	if (!f) {
		free(buf);
		return enr_error_set(ENR_E_IO, "cannot read %s: %s", file, strerror(errno));
	}
	while (buf && rc == 0) {
		size_t n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
		if (len == cap) {
			if (cap >= (size_t)MAX_IMPORT) {
				rc = enr_error_set(ENR_E_USAGE, "%s is larger than 512 MiB", file);
				break;
			}
			if (!(grown = realloc(buf, cap * 2 + 1)))
				break;
			buf = grown;
			cap *= 2;
		}
	}
	if (!buf || (rc == 0 && ferror(f)))
		rc = !buf ? enr_error_set(ENR_E_NOMEM, NULL)
		          : enr_error_set(ENR_E_IO, "cannot read %s", file);
	if (f != stdin)
		fclose(f);
	if (rc < 0) {
		if (buf)
			explicit_bzero(buf, len);
		free(buf);
		return rc;
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

static int import_records(struct cli_globals *g, struct json_object *records, size_t n)
{
	struct enr_store *store = NULL;
	struct copy_counts c = {0};
	int rc = cli_open_store(g, true, &store);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct enr_record *rec = NULL;
		if ((rc = enr_record_from_export(&rec, json_object_array_get_idx(records, i))) <
		    0) {
			enr_error_set(rc, "record %zu of the export: %s", i + 1, enr_error_last());
			break;
		}
		rc = put_copy(store, rec, &c);
		enr_record_free(rec);
	}
	if (rc == 0)
		printf("imported %zu records into %s: %zu added, %zu updated, %zu unchanged (the "
		       "same or newer there), %zu refused\n",
		       c.added + c.updated, enr_store_path(store), c.added, c.updated, c.unchanged,
		       c.refused);
	if (rc == 0 && c.refused)
		rc = enr_error_set(ENR_E_EXISTS, "%zu record%s could not be imported (see above)",
		                   c.refused, c.refused == 1 ? "" : "s");
	cli_close_store(g, store);
	return rc;
}

int cmd_import(struct cli_globals *g, int argc, char **argv)
{
	struct json_object *doc = NULL, *v, *records;
	char *text = NULL;
	int rc;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		import_usage(stdout);
		return 0;
	}
	if (argc != 3 || strcmp(argv[1], "--json") != 0)
		return usage_error(import_usage, "import: expected --json FILE%s", "");
	if ((rc = read_all(&text, argv[2])) < 0)
		return cli_fail(rc);
	doc = json_tokener_parse(text);
	explicit_bzero(text, strlen(text));
	free(text);
	if (!doc || !json_object_object_get_ex(doc, "format", &v) ||
	    strcmp(json_object_get_string(v), "derenroll-export") != 0 ||
	    !json_object_object_get_ex(doc, "records", &records) ||
	    !json_object_is_type(records, json_type_array))
		rc = enr_error_set(ENR_E_PARSE, "%s is not what `derenroll export --json` writes",
		                   argv[2]);
	else if (json_object_object_get_ex(doc, "version", &v) && json_object_get_int(v) != 1)
		rc = enr_error_set(ENR_E_PARSE,
		                   "%s is an export of version %d; this derenroll reads 1", argv[2],
		                   json_object_get_int(v));
	else
		rc = import_records(g, records, json_object_array_length(records));
	if (doc)
		enr_json_wipe(doc);
	json_object_put(doc);
	return rc < 0 ? cli_fail(rc) : 0;
}
