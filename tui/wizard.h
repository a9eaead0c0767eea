#ifndef DERENROLL_TUI_WIZARD_H
#define DERENROLL_TUI_WIZARD_H

struct cli_globals;

/* Where the wizard starts: the start screen, a vendor's authorization step
 * (--customer, --vendor, --method) or a record's re-authorization. */
struct wizard_options {
	const char *customer;
	const char *vendor;
	const char *method;
	const char *reauth_id;
};

/*
 * Runs the ncurses enrollment wizard (stdin and stdout must be terminals).
 * With --demo it starts the sandbox in-process and enrolls against it.
 * Returns the exit status.
 */
int wizard_run(struct cli_globals *g, const struct wizard_options *o);

#endif
