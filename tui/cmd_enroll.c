/* derenroll enroll / reauth: an enrollment session without the wizard. */
#include <errno.h>
#include <getopt.h>
#include <langinfo.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "derenroll/config.h"
#include "derenroll/enroll.h"
#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/qr.h"
#include "derenroll/store.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "cli.h"
#include "store_cli.h"

#define EXIT_USAGE 2
#define MAX_FDS    64
/* Vendors' and users' words as printed: made visible, cut at 256 characters. */
#define SHOWN_SIZE ENR_TEXT_VISIBLE_SIZE(256)

struct enroll_args {
	const char *vendor;
	const char *reauth_id;
	const char *customer;
	const char *method;
	const char *sites[64]; /* --site, as given (several: one customer's systems) */
	size_t n_sites;
	const char *api_key_file;
	const char *key_id;
	const char *key_secret_file;
	const char *token_file;
	const char *refresh_token_file;
	const char *owner_email;
	const char *code; /* "-": read it from stdin */
	enum enr_join_mode join_mode;
	long timeout_s;
	bool json;
	bool allow_account_change;
};

static void usage(FILE *out, bool reauth)
{
	if (reauth)
		fprintf(out, "Usage: derenroll reauth ID [--code -] [--json] [--timeout SECONDS]\n"
		             "         [--allow-account-change] [key options as for enroll:\n"
		             "         --api-key-file F, --key-id ID --key-secret-file F,\n"
		             "         --token-file F [--refresh-token-file F]]\n");
	else
		fprintf(
		    out,
		    "Usage: derenroll enroll VENDOR --customer REF [--method M] [--site ID]... "
		    "[--json]\n"
		    "  key (SolarEdge):  --api-key-file F\n"
		    "  key (Solis):      --key-id ID --key-secret-file F\n"
		    "  account:          --site ID\n"
		    "  partner:          --token-file F [--refresh-token-file F] --api-key-file F\n"
		    "  email (SMA):      --owner-email ADDR\n"
		    "  oauth:            prints the link on the first line, then waits for the\n"
		    "                    customer (relay or loopback), or reads the code from\n"
		    "                    stdin with --code -\n"
		    "  join (Derapi):    the flow's link on the first line (--join-mode flow,\n"
		    "                    the default), or the company's Join page with a\n"
		    "                    Join session (--join-mode session)\n"
		    "  --timeout SECONDS how long the customer has (default 900)\n"
		    "Secrets come from files ('-' for standard input), never from arguments.\n");
}

/* Reads a secret file into a field of the session. */
static int set_secret_field(struct enr_enroll *e, const char *field, const char *path)
{
	char *value = NULL;
	bool open_mode = false;
	int rc;

	rc = enr_config_read_secret_file(&value, path, &open_mode);
	if (rc < 0)
		return rc;
	if (open_mode)
		cli_error("warning: %s can be read by others: run 'chmod 600 %s'", path, path);
	rc = enr_enroll_set_field(e, field, value);
	enr_config_free_secret(value);
	return rc;
}

/* The command line's answers to the FIELDS step. */
static int fill_fields(struct enr_enroll *e, const struct enroll_args *a)
{
	const struct enr_method *m = enr_enroll_method(e);
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < enr_enroll_field_count(e); i++) {
		const struct enr_field *f = enr_enroll_field(e, i);
		const char *file = NULL, *value = NULL, *option = NULL;
		if (strcmp(f->name, "api_key") == 0) {
			file = a->api_key_file;
			option = "--api-key-file F";
		} else if (strcmp(f->name, "key_secret") == 0) {
			file = a->key_secret_file;
			option = "--key-secret-file F";
		} else if (strcmp(f->name, "access_token") == 0) {
			file = a->token_file;
			option = "--token-file F";
		} else if (strcmp(f->name, "refresh_token") == 0) {
			file = a->refresh_token_file;
			option = "--refresh-token-file F";
		} else if (strcmp(f->name, "key_id") == 0) {
			value = a->key_id;
			option = "--key-id ID";
		} else if (strcmp(f->name, "owner_email") == 0) {
			value = a->owner_email;
			option = "--owner-email ADDR";
		}
		if (file)
			rc = set_secret_field(e, f->name, file);
		else if (value)
			rc = enr_enroll_set_field(e, f->name, value);
		else if (!f->optional)
			rc = enr_error_set(ENR_E_USAGE, "%s %s needs %s (%s: %s)",
			                   enr_enroll_vendor(e)->name, m->id,
			                   option ? option : f->name, f->label, f->help);
	}
	return rc < 0 ? rc : enr_enroll_submit_fields(e);
}

/* The sites to choose from: those no record holds first, the others marked
 * with their customer (an app's token sees every customer who consented). */
static void print_sites(const struct enr_enroll *e)
{
	size_t n = enr_enroll_site_count(e), fresh = 0;

	while (fresh < n && !enr_enroll_site_holder(e, fresh))
		fresh++;
	cli_error(
	    "%s lists %zu site%s (%zu not enrolled yet); choose the customer's with --site ID:",
	    enr_enroll_vendor(e)->name, n, n == 1 ? "" : "s", fresh);
	for (size_t i = 0; i < n; i++) {
		const struct enr_site *s = enr_enroll_site(e, i);
		const char *holder = enr_enroll_site_holder(e, i);
		char id[SHOWN_SIZE], name[SHOWN_SIZE], who[SHOWN_SIZE];
		fprintf(stderr, "  %-14s %s%s%s%s\n", enr_text_visible(id, sizeof(id), s->id, 0),
		        enr_text_visible(name, sizeof(name), s->name, 0),
		        holder ? "  (enrolled already: " : "",
		        enr_text_visible(who, sizeof(who), holder, 0), holder ? ")" : "");
	}
}

/* One site, and not another customer's: nothing to choose. */
static bool only_site(const struct enr_enroll *e, const char *customer)
{
	const char *holder = enr_enroll_site_holder(e, 0);

	return enr_enroll_site_count(e) == 1 &&
	       (!holder || (customer && strcmp(holder, customer) == 0));
}

/* One line per record saved (several sites of a key or account: a record each). */
static void print_result(const struct enr_enroll *e, const struct enroll_args *a, long days)
{
	const struct enr_record *rec = NULL;

	for (size_t i = 0; (rec = enr_enroll_record_at(e, i)); i++) {
		char when[32], customer[SHOWN_SIZE], vendor[SHOWN_SIZE], method[SHOWN_SIZE];
		char site[SHOWN_SIZE], name[SHOWN_SIZE];
		if (a->json) {
			enr_record_view_write(stdout, rec, (long long)time(NULL), days, false);
			putchar('\n');
			continue;
		}
		enr_lifecycle_due_text(when, sizeof(when), rec, "never");
		printf(
		    "%s %s: %s, %s (%s) site %s %s%s; authorization expires: %s\n",
		    i == 0 && enr_enroll_updated(e) ? "Updated" : "Enrolled", rec->id,
		    enr_text_visible(customer, sizeof(customer), rec->customer, 0),
		    enr_text_visible(vendor, sizeof(vendor), enr_enroll_vendor(e)->name, 0),
		    enr_text_visible(method, sizeof(method), rec->method, 0),
		    enr_text_visible(site, sizeof(site), rec->n_sites ? rec->sites[0].id : "", 0),
		    enr_text_visible(name, sizeof(name), rec->n_sites ? rec->sites[0].name : "", 0),
		    rec->n_sites > 1 ? " and more" : "", when);
	}
	rec = enr_enroll_record(e);
	if (enr_enroll_warning(e))
		cli_error("warning: %s", enr_enroll_warning(e));
	if (enr_record_pending(rec))
		cli_error("saved on this laptop only: the team store cannot be reached; "
		          "`derenroll sync` pushes it (so does every start that reaches it)");
}

/* Module (x, y) of the code with its quiet zone. */
static bool qr_dark(const struct enr_qr *qr, int x, int y)
{
	int w = enr_qr_width(qr);

	x -= ENR_QR_QUIET_ZONE;
	y -= ENR_QR_QUIET_ZONE;
	return x >= 0 && y >= 0 && x < w && y < w && enr_qr_dark(qr, x, y);
}

/* The link as a QR code on stderr, black on white whatever the terminal's
 * colours: half blocks in a UTF-8 locale, else two cells a module. */
static void draw_qr(const char *link)
{
	bool utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
	struct enr_qr *qr = NULL;
	int side;

	if (enr_qr_encode(&qr, link) < 0)
		return;
	side = enr_qr_width(qr) + 2 * ENR_QR_QUIET_ZONE;
	for (int y = 0; y < side; y += utf8 ? 2 : 1) {
		fputs("\033[30;47m", stderr);
		for (int x = 0; x < side; x++) {
			bool top = qr_dark(qr, x, y);
			bool bottom = utf8 && y + 1 < side && qr_dark(qr, x, y + 1);
			if (utf8)
				fputs(top ? (bottom ? "\u2588" : "\u2580")
				          : (bottom ? "\u2584" : " "),
				      stderr);
			else
				fputs(top ? "\033[40m  \033[47m" : "  ", stderr);
		}
		fputs("\033[0m\n", stderr);
	}
	enr_qr_free(qr);
}

/* Runs the session to DONE or FAILED. Returns the exit status. */
/* On a terminal: how long the customer still has, in place on standard error
 * (the SMA owner's e-mail consent can take minutes). */
static bool time_shown;

static void time_left(const struct enr_enroll *e)
{
	static long long last = -1;
	long long left = enr_enroll_deadline(e) - (long long)time(NULL);

	if (!isatty(STDERR_FILENO) || enr_enroll_deadline(e) <= 0 || left == last)
		return;
	last = left;
	if (left < 0)
		left = 0;
	fprintf(stderr, "\r  %lld:%02lld left ", left / 60, left % 60);
	fflush(stderr);
	time_shown = true;
}

static void clear_time_left(void)
{
	if (time_shown)
		fputs("\r\033[K", stderr);
	time_shown = false;
}

/* What the session says when it says something new while it works or waits:
 * "SMA e-mailed owner@…: waiting for the owner to approve", "Checking with SMA...". */
static void say_progress(const struct enr_enroll *e)
{
	if (enr_enroll_state(e) != ENR_ENROLL_WAIT)
		return;
	clear_time_left();
	cli_error("%s", enr_enroll_message(e));
}

static int drive(struct enr_enroll *e, const struct enroll_args *a, long days)
{
	bool link_printed = false, code_read = false, fields_done = false;
	int rc;

	for (;;) {
		struct pollfd fds[MAX_FDS];
		size_t n;
		int stdin_slot = -1;

		switch (enr_enroll_state(e)) {
		case ENR_ENROLL_FIELDS:
			if (fields_done)
				break;
			fields_done = true;
			rc = fill_fields(e, a);
			if (rc < 0 && enr_enroll_state(e) != ENR_ENROLL_FAILED)
				return cli_fail(rc);
			continue;
		case ENR_ENROLL_LINK:
			if (!link_printed) {
				char *link = enr_text_visible_dup(enr_enroll_link(e));
				printf("%s\n", link ? link : "");
				free(link);
				fflush(stdout);
				if (isatty(STDERR_FILENO))
					draw_qr(enr_enroll_link(e));
				cli_error("%s", enr_enroll_message(e));
				link_printed = true;
			}
			/* The code is typed in: asked for, or the only way back. */
			if ((a->code || enr_enroll_consent(e) == ENR_CONSENT_PASTE) && !code_read)
				stdin_slot = 0;
			break;
		case ENR_ENROLL_SITES:
			if (a->n_sites > 1) {
				rc = enr_enroll_choose_sites(e, a->sites, a->n_sites);
			} else if (only_site(e, a->customer)) {
				rc = enr_enroll_choose_site(e, enr_enroll_site(e, 0)->id);
			} else {
				print_sites(e);
				return EXIT_USAGE;
			}
			if (rc < 0 && enr_enroll_state(e) != ENR_ENROLL_FAILED)
				return cli_fail(rc);
			continue;
		case ENR_ENROLL_DONE:
			clear_time_left();
			print_result(e, a, days);
			return 0;
		case ENR_ENROLL_FAILED:
			clear_time_left();
			cli_error("%s", enr_enroll_message(e));
			return enr_error_exit_code(enr_enroll_error(e));
		case ENR_ENROLL_WAIT:
			break;
		}
		n = 0;
		if (stdin_slot == 0) {
			fds[0].fd = STDIN_FILENO;
			fds[0].events = POLLIN;
			n = 1;
		}
		n += enr_enroll_poll_fds(e, fds + n, MAX_FDS - n);
		if (n > MAX_FDS)
			n = MAX_FDS;
		if (poll(fds, (nfds_t)n, (int)enr_enroll_timeout_ms(e)) < 0 && errno != EINTR)
			return cli_fail(enr_error_set(ENR_E_IO, "poll: %s", strerror(errno)));
		if (stdin_slot == 0 && (fds[0].revents & (POLLIN | POLLHUP))) {
			char line[4096];
			code_read = true;
			if (fgets(line, sizeof(line), stdin)) {
				rc = enr_enroll_submit_code(e, line);
				if (rc < 0 && enr_enroll_state(e) != ENR_ENROLL_FAILED)
					return cli_fail(rc);
			} else {
				return cli_fail(enr_error_set(ENR_E_USAGE,
				                              "--code -: standard input ended "
				                              "without a code"));
			}
		}
		if (enr_enroll_process(e) == 1)
			say_progress(e);
		else if (enr_enroll_state(e) == ENR_ENROLL_WAIT)
			time_left(e);
	}
}

static int run(struct cli_globals *g, int argc, char **argv, bool reauth)
{
	static const struct option options[] = {
	    {"customer", required_argument, NULL, 'c'},
	    {"method", required_argument, NULL, 'm'},
	    {"site", required_argument, NULL, 's'},
	    {"api-key-file", required_argument, NULL, 'a'},
	    {"key-id", required_argument, NULL, 'i'},
	    {"key-secret-file", required_argument, NULL, 'k'},
	    {"token-file", required_argument, NULL, 't'},
	    {"refresh-token-file", required_argument, NULL, 'r'},
	    {"owner-email", required_argument, NULL, 'e'},
	    {"code", required_argument, NULL, 'C'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"join-mode", required_argument, NULL, 'J'},
	    {"json", no_argument, NULL, 'j'},
	    {"allow-account-change", no_argument, NULL, 'A'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct enroll_args a = {0};
	struct enr_enroll_options opts = {0};
	struct enr_enroll *e = NULL;
	struct enr_store *store = NULL;
	long days = 7;
	char *end;
	int opt, rc, status;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			a.customer = optarg;
			break;
		case 'm':
			a.method = optarg;
			break;
		case 's':
			if (a.n_sites == (sizeof(a.sites) / sizeof(a.sites[0]))) {
				cli_error("enroll: at most %zu --site options",
				          (sizeof(a.sites) / sizeof(a.sites[0])));
				return EXIT_USAGE;
			}
			a.sites[a.n_sites++] = optarg;
			break;
		case 'a':
			a.api_key_file = optarg;
			break;
		case 'i':
			a.key_id = optarg;
			break;
		case 'k':
			a.key_secret_file = optarg;
			break;
		case 't':
			a.token_file = optarg;
			break;
		case 'r':
			a.refresh_token_file = optarg;
			break;
		case 'e':
			a.owner_email = optarg;
			break;
		case 'C':
			if (strcmp(optarg, "-") != 0) {
				cli_error("--code takes '-' (the code is read from standard input, "
				          "never from arguments)");
				return EXIT_USAGE;
			}
			a.code = optarg;
			break;
		case 'T':
			a.timeout_s = strtol(optarg, &end, 10);
			if (*end || a.timeout_s <= 0) {
				cli_error("--timeout takes a number of seconds");
				return EXIT_USAGE;
			}
			break;
		case 'j':
			a.json = true;
			break;
		case 'J':
			if (strcmp(optarg, "flow") == 0) {
				a.join_mode = ENR_JOIN_FLOW;
			} else if (strcmp(optarg, "session") == 0) {
				a.join_mode = ENR_JOIN_SESSION;
			} else {
				cli_error("--join-mode takes flow or session");
				return EXIT_USAGE;
			}
			break;
		case 'A':
			a.allow_account_change = true;
			break;
		case 'h':
			usage(stdout, reauth);
			return 0;
		default:
			cli_error(
			    "%s: unknown option or missing argument (try 'derenroll %s --help')",
			    argv[optind - 1], reauth ? "reauth" : "enroll");
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		cli_error(reauth ? "reauth takes one record ID" : "enroll takes one VENDOR (%s)",
		          "tesla, sma, enphase, solaredge, solis, enphasevpp");
		return EXIT_USAGE;
	}
	if (reauth)
		a.reauth_id = argv[optind];
	else
		a.vendor = argv[optind];
	if (a.code && a.api_key_file && strcmp(a.api_key_file, "-") == 0) {
		cli_error("--code - and a secret file '-' cannot both read standard input");
		return EXIT_USAGE;
	}

	rc = cli_load_config(g);
	if (rc == 0)
		rc = enr_config_get_long(&days, g->cfg, "ui", "expiring_days", 7, 0, 365);
	if (rc == 0)
		rc = cli_open_store_some(g, true, &store);
	if (rc < 0)
		return cli_fail(rc);

	opts.store = store;
	opts.cfg = g->cfg;
	opts.catalog = g->catalog;
	opts.vendor = a.vendor;
	opts.method = a.method;
	opts.customer = a.customer;
	/* One site is chosen as soon as it is found; several when all are listed. */
	opts.site_id = a.n_sites == 1 ? a.sites[0] : NULL;
	opts.reauth_id = a.reauth_id;
	opts.allow_account_change = a.allow_account_change;
	opts.consent = a.code ? ENR_CONSENT_PASTE : ENR_CONSENT_AUTO;
	opts.timeout_s = a.timeout_s;
	opts.join_mode = a.join_mode;
	rc = enr_enroll_new(&e, &opts);
	if (rc < 0) {
		status = cli_fail(rc);
		goto out;
	}
	status = drive(e, &a, days);
out:
	enr_enroll_free(e);
	cli_close_store(g, store);
	return status;
}

int cmd_enroll(struct cli_globals *g, int argc, char **argv)
{
	return run(g, argc, argv, false);
}

int cmd_reauth(struct cli_globals *g, int argc, char **argv)
{
	return run(g, argc, argv, true);
}
