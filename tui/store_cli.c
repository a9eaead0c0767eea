/* Opening the credential store from the command line, and `derenroll secret`. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <sys/stat.h>
#include <unistd.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/store.h"
#include "cli.h"
#include "store_cli.h"

#define EXIT_USAGE      2
#define MAX_PASSPHRASE  4096
#define MAX_SECRET      (64 * 1024)
#define DEMO_PASSPHRASE "derenroll-demo"

static void wipe_free(char *p, size_t size)
{
	if (p) {
		explicit_bzero(p, size);
		free(p);
	}
}

/* ---- reading without echo ---- */

static int tty_fd = -1;
static struct termios tty_saved;
static volatile sig_atomic_t tty_quiet;

/* A signal while echo is off: put the terminal back, then die of it as usual. */
static void restore_and_raise(int sig)
{
	if (tty_quiet)
		tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Shows `prompt` on `out` and reads one line from the terminal `in` with echo
 * off into `buf`. ENR_E_PASSPHRASE-style errors use `code`.
 */
static int read_hidden(int code, int in, int out, const char *prompt, char *buf, size_t size)
{
	static const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
	struct sigaction sa = {0}, old[sizeof(signals) / sizeof(signals[0])];
	struct termios quiet;
	size_t len = 0;
	bool too_long = false, got_line = false;
	ssize_t n;
	char c;

	if (tcgetattr(in, &tty_saved) < 0)
		return enr_error_set_errno(code, errno, "cannot use the terminal");
	quiet = tty_saved;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	tty_fd = in;
	sa.sa_handler = restore_and_raise;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		sigaction(signals[i], &sa, &old[i]);
	tty_quiet = 1;
	tcsetattr(in, TCSAFLUSH, &quiet);
	if (write(out, prompt, strlen(prompt)) < 0)
		enr_log_debug("cannot write the prompt");
	for (;;) {
		n = read(in, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (c == '\n') {
			got_line = true;
			break;
		}
		if (len + 1 < size)
			buf[len++] = c;
		else
			too_long = true;
	}
	buf[len] = '\0';
	tcsetattr(in, TCSAFLUSH, &tty_saved);
	tty_quiet = 0;
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		sigaction(signals[i], &old[i], NULL);
	if (!got_line && n <= 0 && len == 0)
		return enr_error_set(code, "nothing was entered");
	if (too_long)
		return enr_error_set(code, "what was entered is longer than %zu bytes", size - 1);
	if (len && buf[len - 1] == '\r')
		buf[--len] = '\0';
	return 0;
}

/* ---- the passphrase ---- */

/* Asks on the terminal for a passphrase (twice when `twice`) with `prompt`. */
static int ask_on_tty(char **out, bool twice, const char *prompt, const char *no_tty)
{
	char first[MAX_PASSPHRASE + 1], second[MAX_PASSPHRASE + 1];
	int fd, rc;

	*out = NULL;
	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return enr_error_set(ENR_E_PASSPHRASE, "%s", no_tty);
	rc = read_hidden(ENR_E_PASSPHRASE, fd, fd, prompt, first, sizeof(first));
	if (rc == 0 && !first[0])
		rc = enr_error_set(ENR_E_PASSPHRASE, "the passphrase is empty");
	if (rc == 0 && twice) {
		rc = read_hidden(ENR_E_PASSPHRASE, fd, fd, "The same passphrase again: ", second,
		                 sizeof(second));
		if (rc == 0 && strcmp(first, second) != 0)
			rc = enr_error_set(ENR_E_PASSPHRASE,
			                   "the two passphrases differ; nothing was changed");
	}
	close(fd);
	if (rc == 0 && !(*out = strdup(first)))
		rc = enr_error_set(ENR_E_NOMEM, NULL);
	explicit_bzero(first, sizeof(first));
	explicit_bzero(second, sizeof(second));
	return rc;
}

/* A passphrase file: warned about once when others can read it. */
static int passphrase_from_file(char **out, const char *file)
{
	static bool warned;
	struct stat st;

	/* Like a key file: whoever can read it can open the store. */
	if (!warned && stat(file, &st) == 0 && (st.st_mode & 077)) {
		warned = true;
		cli_error("warning: the passphrase file %s can be read by others: run "
		          "'chmod 600 %s'",
		          file, file);
	}
	return enr_store_read_passphrase_file(out, file);
}

static int ask_passphrase(char **out, bool new_store, const char *path, void *ctx)
{
	const char *file = getenv("DERENROLL_PASSPHRASE_FILE");
	char prompt[4200], no_tty[4300];

	(void)ctx;
	*out = NULL;
	if (file && file[0])
		return passphrase_from_file(out, file);
	snprintf(prompt, sizeof(prompt),
	         "%s for the credential store %s: ", new_store ? "New passphrase" : "Passphrase",
	         path);
	snprintf(no_tty, sizeof(no_tty),
	         "the credential store %s needs a passphrase and there is no terminal to ask for "
	         "it: set DERENROLL_PASSPHRASE_FILE to a file holding it",
	         path);
	return ask_on_tty(out, new_store, prompt, no_tty);
}

int cli_new_member_passphrase(char **out, const char *file, const char *name)
{
	char prompt[200];

	if (file)
		return passphrase_from_file(out, file);
	snprintf(prompt, sizeof(prompt), "New passphrase for team member %s: ", name);
	return ask_on_tty(out, true, prompt,
	                  "there is no terminal to ask for the new member's passphrase: give "
	                  "it with --passphrase-file FILE");
}

/* ---- the demo's throwaway store ---- */

static char demo_dir[256];

/* The throwaway store's files, named when the directory is made, so that
 * removing them needs no formatting: it may run in a signal handler. */
static const char *const demo_suffixes[] = {"", ".bak", ".tmp", ".bak.tmp", ".lock", ".rlock"};
static char demo_files[sizeof(demo_suffixes) / sizeof(demo_suffixes[0])][300];

/* Async-signal-safe: unlink() and rmdir() only. */
void cli_remove_demo_store(void)
{
	if (!demo_dir[0])
		return;
	for (size_t i = 0; i < sizeof(demo_files) / sizeof(demo_files[0]); i++)
		unlink(demo_files[i]);
	rmdir(demo_dir);
	demo_dir[0] = '\0';
}

static char *demo_store_path(void)
{
	const char *tmp = getenv("TMPDIR");
	char *path = NULL;

	if (!demo_dir[0]) {
		snprintf(demo_dir, sizeof(demo_dir), "%s/derenroll-demo-XXXXXX",
		         tmp && tmp[0] ? tmp : "/tmp");
		if (!mkdtemp(demo_dir)) {
			enr_error_set_errno(ENR_E_IO, errno,
			                    "cannot create a directory for the "
			                    "demo's store");
			demo_dir[0] = '\0';
			return NULL;
		}
		for (size_t i = 0; i < sizeof(demo_files) / sizeof(demo_files[0]); i++)
			snprintf(demo_files[i], sizeof(demo_files[i]), "%s/store%s", demo_dir,
			         demo_suffixes[i]);
		atexit(cli_remove_demo_store);
	}
	if (asprintf(&path, "%s/store", demo_dir) < 0) {
		enr_error_set(ENR_E_NOMEM, NULL);
		return NULL;
	}
	return path;
}

/* ---- opening ---- */

static char *store_path(struct cli_globals *g)
{
	const char *configured = enr_config_get(g->cfg, "store", "path");
	const char *url = enr_config_get(g->cfg, "store", "url");
	const char *home = getenv("HOME");
	char *path = NULL;

	if (g->store_path)
		configured = g->store_path;
	else if (g->demo)
		return demo_store_path();
	else if (url && url[0])
		configured = url; /* the team store */
	if (!configured || !configured[0])
		return enr_store_default_path();
	if (configured[0] == '~' && configured[1] == '/' && home && home[0]) {
		if (asprintf(&path, "%s/%s", home, configured + 2) < 0)
			path = NULL;
	} else {
		path = strdup(configured);
	}
	if (!path)
		enr_error_set(ENR_E_NOMEM, NULL);
	return path;
}

/* What was enrolled while the team store was away, pushed now; `loud`: say so when nothing. */
static int push_outbox(struct enr_store *team, bool loud)
{
	size_t pushed = 0, left = 0;
	int rc = enr_store_push(team, &pushed, &left);

	if (pushed || loud)
		cli_error("pushed %zu record%s enrolled offline to the team store %s", pushed,
		          pushed == 1 ? "" : "s", enr_store_path(team));
	if (left)
		cli_error("warning: %zu record%s could not be pushed and stay%s on this laptop "
		          "(see above)",
		          left, left == 1 ? "" : "s", left == 1 ? "s" : "");
	if (rc < 0 && !loud)
		cli_error("warning: %s", enr_error_last());
	return rc < 0 ? rc : left ? ENR_E_EXISTS : 0;
}

static int open_store(struct cli_globals *g, const char *at, bool create, enum cli_reads reads,
                      struct enr_store **out)
{
	bool listing = reads == CLI_READ_LISTING || reads == CLI_READ_COLUMNS;
	static const struct enr_store_kdf demo_kdf = {10, 8, 1};
	struct enr_store_options opts = {0};
	bool encryption = true;
	char *path = NULL, *outbox = NULL;
	int rc;

	*out = NULL;
	if ((rc = cli_load_config(g)) < 0)
		return rc;
	if ((rc = enr_config_get_bool(&encryption, g->cfg, "store", "encryption", true)) < 0)
		return rc;
	if (!(path = at ? strdup(at) : store_path(g)))
		return at ? enr_error_set(ENR_E_NOMEM, NULL) : enr_error_last_code();
	opts.path = path;
	opts.plaintext = !encryption;
	opts.create = create;
	opts.metadata_only = listing;
	opts.due_before = listing ? g->due_before : 0;
	opts.on_demand = reads == CLI_READ_SOME;
	opts.columns_only = reads == CLI_READ_COLUMNS;
	opts.member = enr_config_get(g->cfg, "store", "member");
	if (enr_store_url(path) && !g->no_outbox && !(outbox = enr_store_default_outbox())) {
		free(path);
		return enr_error_last_code();
	}
	opts.outbox = outbox;
	if (g->demo) {
		/* The demo never asks: its store is thrown away, or the user's own choice. */
		opts.passphrase = DEMO_PASSPHRASE;
		opts.kdf = &demo_kdf;
	} else {
		opts.passphrase_fn = ask_passphrase;
	}
	rc = enr_store_open(out, &opts);
	if (rc == 0 && enr_store_offline(*out))
		cli_error("warning: the team store %s cannot be reached: working on this laptop "
		          "(%s); what is enrolled now is pushed by `derenroll sync`",
		          enr_store_offline(*out), enr_store_path(*out));
	else if (rc == 0 && outbox && !listing && !g->quiet_push)
		push_outbox(*out, false);
	if (rc == 0) {
		if (!enr_store_encrypted(*out))
			cli_error("warning: the credential store %s is not encrypted%s", path,
			          encryption ? "; it will be at its next change"
			                     : " ([store] encryption = off)");
		if (!listing)
			enr_config_set_secret_source(g->cfg, enr_store_secret_lookup, *out);
	}
	free(path);
	free(outbox);
	return rc;
}

int cli_open_store(struct cli_globals *g, bool create, struct enr_store **out)
{
	return open_store(g, NULL, create, CLI_READ_ALL, out);
}

int cli_open_store_listing(struct cli_globals *g, struct enr_store **out)
{
	return open_store(g, NULL, false, CLI_READ_LISTING, out);
}

int cli_open_store_some(struct cli_globals *g, bool create, struct enr_store **out)
{
	return open_store(g, NULL, create, CLI_READ_SOME, out);
}

int cli_open_store_reading(struct cli_globals *g, enum cli_reads reads, bool create,
                           struct enr_store **out)
{
	return open_store(g, NULL, create, reads, out);
}

int cli_open_store_at(struct cli_globals *g, const char *path, bool create, struct enr_store **out)
{
	return open_store(g, path, create, CLI_READ_ALL, out);
}

void cli_close_store(struct cli_globals *g, struct enr_store *store)
{
	if (!store)
		return;
	if (g->cfg)
		enr_config_set_secret_source(g->cfg, NULL, NULL);
	enr_store_free(store);
}

/* ---- derenroll sync ---- */

int cmd_sync(struct cli_globals *g, int argc, char **argv)
{
	struct enr_store *store = NULL;
	int rc;

	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		printf(
		    "Usage: derenroll sync\n\nPushes what was enrolled on this laptop while the "
		    "team store\ncould not be reached (every start that reaches it does too).\n");
		return 0;
	}
	if (argc != 1) {
		cli_error("sync takes no argument");
		return EXIT_USAGE;
	}
	if ((rc = cli_load_config(g)) < 0)
		return cli_fail(rc);
	/* Opened without pushing, then pushed loudly. */
	g->quiet_push = true;
	rc = cli_open_store(g, false, &store);
	g->quiet_push = false;
	if (rc == 0 && enr_store_offline(store))
		rc = enr_error_set(ENR_E_OFFLINE,
		                   "nothing pushed: the team store %s cannot be reached",
		                   enr_store_offline(store));
	else if (rc == 0 && !enr_store_is_team(store))
		rc = enr_error_set(ENR_E_USAGE,
		                   "the credential store %s is not a team store: nothing to push",
		                   enr_store_path(store));
	else if (rc == 0)
		rc = push_outbox(store, true);
	cli_close_store(g, store);
	return rc < 0 ? cli_fail(rc) : 0;
}

/* ---- derenroll secret ---- */

static void secret_usage(FILE *out)
{
	fprintf(out, "Usage: derenroll secret set NAME    (the value is read from stdin)\n"
	             "       derenroll secret list\n"
	             "       derenroll secret remove NAME\n"
	             "\n"
	             "Keeps the company's app secrets in the encrypted credential store, where\n"
	             "config.ini finds them: NAME is <section>.<key>, e.g.\n"
	             "vendor.tesla.client_secret, derapi.client_secret, relay.secret.\n");
}

/* The value of a secret from stdin: typed (hidden) on a terminal, else all of it. */
static int read_value(char **out, const char *name)
{
	char *buf = malloc(MAX_SECRET + 2), prompt[200];
	size_t len = 0;
	ssize_t n;
	int rc = 0;

	*out = NULL;
	if (!buf)
		return enr_error_set(ENR_E_NOMEM, NULL);
	if (isatty(STDIN_FILENO)) {
		snprintf(prompt, sizeof(prompt), "Value of %s (not shown): ", name);
		rc = read_hidden(ENR_E_USAGE, STDIN_FILENO, STDERR_FILENO, prompt, buf,
		                 MAX_SECRET + 1);
		len = rc == 0 ? strlen(buf) : 0;
	} else {
		while (len <= MAX_SECRET) {
			n = read(STDIN_FILENO, buf + len, MAX_SECRET + 1 - len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rc = enr_error_set_errno(ENR_E_IO, errno, "cannot read stdin");
				break;
			}
			if (n == 0)
				break;
			len += (size_t)n;
		}
		if (rc == 0 && len > MAX_SECRET)
			rc = enr_error_set(ENR_E_USAGE, "the value of %s is longer than %d bytes",
			                   name, MAX_SECRET);
		buf[len < MAX_SECRET + 1 ? len : MAX_SECRET + 1] = '\0';
		if (rc == 0 && strlen(buf) != len)
			rc = enr_error_set(ENR_E_USAGE, "the value of %s holds a NUL byte", name);
		if (rc == 0 && len && buf[len - 1] == '\n')
			buf[--len] = '\0';
		if (rc == 0 && len && buf[len - 1] == '\r')
			buf[--len] = '\0';
	}
	if (rc == 0 && len == 0)
		rc = enr_error_set(ENR_E_USAGE,
		                   "the value of %s is empty: give it on stdin, e.g. "
		                   "'derenroll secret set %s < file'",
		                   name, name);
	if (rc < 0) {
		wipe_free(buf, MAX_SECRET + 2);
		return rc;
	}
	*out = buf;
	return 0;
}

static int secret_set(struct cli_globals *g, const char *name)
{
	struct enr_store *store = NULL;
	char *value = NULL;
	int rc;

	if ((rc = enr_store_secret_check_name(name)) < 0 || (rc = read_value(&value, name)) < 0)
		return rc;
	if ((rc = cli_open_store(g, true, &store)) == 0)
		rc = enr_store_secret_set(store, name, value);
	if (rc == 0 && isatty(STDIN_FILENO))
		cli_error("saved %s in %s", name, enr_store_path(store));
	wipe_free(value, MAX_SECRET + 2);
	cli_close_store(g, store);
	return rc;
}

static int secret_list(struct cli_globals *g)
{
	struct enr_store *store = NULL;
	int rc = cli_open_store(g, false, &store);

	if (rc == 0)
		for (size_t i = 0; i < enr_store_secret_count(store); i++)
			printf("%s\n", enr_store_secret_name(store, i));
	cli_close_store(g, store);
	return rc;
}

static int secret_remove(struct cli_globals *g, const char *name)
{
	struct enr_store *store = NULL;
	int rc;

	if ((rc = enr_store_secret_check_name(name)) < 0)
		return rc;
	if ((rc = cli_open_store(g, false, &store)) == 0)
		rc = enr_store_secret_remove(store, name);
	cli_close_store(g, store);
	return rc;
}

int cmd_secret(struct cli_globals *g, int argc, char **argv)
{
	static const struct option options[] = {{"help", no_argument, NULL, 'h'},
	                                        {NULL, 0, NULL, 0}};
	const char *sub;
	int opt, n, rc;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			secret_usage(stdout);
			return 0;
		}
		secret_usage(stderr);
		return EXIT_USAGE;
	}
	n = argc - optind;
	sub = n > 0 ? argv[optind] : "";
	if (strcmp(sub, "set") == 0 && n == 2)
		rc = secret_set(g, argv[optind + 1]);
	else if (strcmp(sub, "list") == 0 && n == 1)
		rc = secret_list(g);
	else if (strcmp(sub, "remove") == 0 && n == 2)
		rc = secret_remove(g, argv[optind + 1]);
	else {
		if (strcmp(sub, "set") == 0 && n > 2)
			cli_error("the value of a secret is read from stdin, never from the "
			          "command line");
		secret_usage(stderr);
		return EXIT_USAGE;
	}
	return rc < 0 ? cli_fail(rc) : 0;
}
