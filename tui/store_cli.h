#ifndef DERENROLL_TUI_STORE_CLI_H
#define DERENROLL_TUI_STORE_CLI_H

#include <stdbool.h>

struct cli_globals;
struct enr_store;

/*
 * Opens the credential store for a command: the file from --store, else
 * `[store] path`, else the default; the passphrase from the file named by
 * DERENROLL_PASSPHRASE_FILE, else asked on the terminal (twice for a new
 * store), never with --demo (a throwaway store with a fixed passphrase);
 * `[store] encryption`. Config secret lookups then fall back to the store.
 * `create`: the command will write, so a new store's passphrase is asked now.
 * Warns on stderr when the store is not encrypted. Returns 0 or a negative
 * enr_error (message set: pass it to cli_fail()).
 */
int cli_open_store(struct cli_globals *g, bool create, struct enr_store **out);

/* The same for commands that only list: no credentials or app secrets are read. */
int cli_open_store_listing(struct cli_globals *g, struct enr_store **out);

/* The same for a command about a few records (and the wizard): a team store reads
 * each record when it is asked for, not all at open (enr_store_options.on_demand). */
int cli_open_store_some(struct cli_globals *g, bool create, struct enr_store **out);

/* What a command reads of the store: the three above, chosen at run time. */
enum cli_reads {
	CLI_READ_ALL,     /* cli_open_store() */
	CLI_READ_LISTING, /* cli_open_store_listing() */
	CLI_READ_SOME,    /* cli_open_store_some() */
	CLI_READ_COLUMNS, /* a listing of what a team store keeps in columns (columns_only) */
};
int cli_open_store_reading(struct cli_globals *g, enum cli_reads reads, bool create,
                           struct enr_store **out);

/* cli_open_store() of the store at `path` (a file or a postgresql:// URL). */
int cli_open_store_at(struct cli_globals *g, const char *path, bool create, struct enr_store **out);

/* Unhooks the config from the store and frees it; NULL is a no-op. */
void cli_close_store(struct cli_globals *g, struct enr_store *store);

/* Removes --demo's throwaway store, if one was made (atexit does it too).
 * Async-signal-safe, for term_set_exit_cleanup(). */
void cli_remove_demo_store(void);

/* A new team member's passphrase: from `file` when given, else asked twice on the terminal. */
int cli_new_member_passphrase(char **out, const char *file, const char *name);

/* derenroll secret set NAME (value on stdin) | secret list | secret remove NAME */
int cmd_secret(struct cli_globals *g, int argc, char **argv);

#endif
