/* The progress line of `status` and `refresh`: only on a terminal, only for
 * runs longer than a second, redrawn in place and cleared at the end, so that
 * the results printed on standard output stay clean. */
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

#define SHOW_AFTER_MS 1000
#define REDRAW_MS     200

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
		return ws.ws_col;
	return 80;
}

void progress_init(struct progress *p)
{
	memset(p, 0, sizeof(*p));
	p->tty = isatty(STDERR_FILENO);
	p->started_ms = now_ms();
}

void progress_update(const struct enr_bulk_progress *bp, void *ctx)
{
	struct progress *p = ctx;
	long long now = now_ms();
	char line[256];
	size_t len, width;
	int n;

	if (!p->tty || now - p->started_ms < SHOW_AFTER_MS || bp->finished == bp->total ||
	    (p->shown && now - p->last_drawn_ms < REDRAW_MS))
		return;
	n = snprintf(line, sizeof(line), "%zu of %zu done", bp->finished, bp->total);
	if (bp->failed && n > 0 && (size_t)n < sizeof(line))
		n += snprintf(line + n, sizeof(line) - (size_t)n, ", %zu failed", bp->failed);
	if (bp->waiting_vendor && n > 0 && (size_t)n < sizeof(line)) {
		n += snprintf(line + n, sizeof(line) - (size_t)n, ", waiting for %s's limit",
		              bp->waiting_vendor);
		if (bp->waiting_ms >= 1000 && n > 0 && (size_t)n < sizeof(line))
			n += snprintf(line + n, sizeof(line) - (size_t)n, " (%lld s)",
			              (bp->waiting_ms + 999) / 1000);
	}
	len = n > 0 ? strlen(line) : 0;
	/* One row: a line longer than the terminal would wrap and leave its
	 * first part behind at each redraw. */
	width = term_width() - 1;
	if (len > width)
		len = width;
	fprintf(stderr, "\r%.*s\033[K", (int)len, line);
	fflush(stderr);
	p->shown = true;
	p->last_drawn_ms = now;
}

void progress_done(struct progress *p)
{
	if (!p->shown)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	p->shown = false;
}
