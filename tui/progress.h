/* The progress line of `status` and `refresh` on a terminal. */
#ifndef DERENROLL_TUI_PROGRESS_H
#define DERENROLL_TUI_PROGRESS_H

#include <stdbool.h>

#include "derenroll/bulk.h"

struct progress {
	bool tty;                /* standard error is a terminal */
	bool shown;              /* a line is on it */
	long long started_ms;    /* the run began */
	long long last_drawn_ms; /* when the line was last drawn */
};

/* Starts timing a run; nothing is drawn when standard error is no terminal. */
void progress_init(struct progress *p);

/* An enr_bulk_progress_fn (ctx: the struct progress): draws "12 of 40 done,
 * 1 failed, waiting for SolarEdge's limit (20 s)" in place on standard error,
 * once the run has taken more than a second, a few times a second at most. */
void progress_update(const struct enr_bulk_progress *bp, void *ctx);

/* Clears the line, if one was drawn. */
void progress_done(struct progress *p);

#endif
