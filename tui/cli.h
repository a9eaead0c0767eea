#ifndef DERENROLL_TUI_CLI_H
#define DERENROLL_TUI_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "derenroll/lifecycle.h"

struct enr_config;
struct enr_catalog;
struct enr_sandbox;

/* What every sub-command gets: the global options, already parsed. */
struct cli_globals {
	const char *config_path; /* --config, or NULL for the default */
	const char *store_path;  /* --store, or NULL */
	bool demo;               /* --demo */
	bool quiet_push;         /* opening the store does not push its outbox (sync does) */
	bool no_outbox;          /* a team store out of reach is an error, not its outbox */
	long long due_before;    /* listing: only what may be due before this (list --due) */
	struct enr_config *cfg;  /* loaded lazily by cli_load_config() */
	struct enr_catalog *catalog;
};

/* Prints "derenroll: <message>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints the core's last error and returns the exit code for `rc`. */
int cli_fail(int rc);

/* Loads the config and the vendor catalogue once; prints config warnings. */
int cli_load_config(struct cli_globals *g);

/* --demo: starts the in-process sandbox (the same world every time) and points
 * every vendor, Derapi and the relay of g->cfg at it (loading it first). Stop
 * it with enr_sandbox_stop(). */
int cli_demo_sandbox(struct cli_globals *g, struct enr_sandbox **out);

/* A record as text, a "label value" line each (`derenroll show`): secrets
 * masked with `hidden` saying how to show them, unless `reveal`. */
struct enr_record;
int cli_show_text(FILE *out, const struct enr_record *r, long long now, long days, bool reveal,
                  const char *hidden);

/* `derenroll list`'s table, which the enrolled systems screen shows too: the
 * header, and a record's row (its status and due time as enr_status_of()
 * gives them) into buf. */
const char *cli_list_header(void);
char *cli_list_row(char *buf, size_t size, const struct enr_record *r, enum enr_status status,
                   long long due_at);

/* Sub-commands: run functions of the command table in main.c. */
int cmd_enroll(struct cli_globals *g, int argc, char **argv);
int cmd_join(struct cli_globals *g, int argc, char **argv);
int cmd_tesla(struct cli_globals *g, int argc, char **argv);
int cmd_reauth(struct cli_globals *g, int argc, char **argv);
int cmd_relay(struct cli_globals *g, int argc, char **argv);
int cmd_sandbox(struct cli_globals *g, int argc, char **argv);
int cmd_list(struct cli_globals *g, int argc, char **argv);
int cmd_show(struct cli_globals *g, int argc, char **argv);
int cmd_status(struct cli_globals *g, int argc, char **argv);
int cmd_refresh(struct cli_globals *g, int argc, char **argv);
int cmd_remove(struct cli_globals *g, int argc, char **argv);
int cmd_export(struct cli_globals *g, int argc, char **argv);
int cmd_doctor(struct cli_globals *g, int argc, char **argv);
int cmd_store(struct cli_globals *g, int argc, char **argv);
int cmd_team(struct cli_globals *g, int argc, char **argv);
int cmd_log(struct cli_globals *g, int argc, char **argv);
int cmd_sync(struct cli_globals *g, int argc, char **argv);
int cmd_import(struct cli_globals *g, int argc, char **argv);

#endif
