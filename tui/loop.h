#ifndef DERENROLL_TUI_LOOP_H
#define DERENROLL_TUI_LOOP_H

/*
 * The event loop: one poll() over watched file descriptors, one-shot timers,
 * and a self-pipe that signal handlers and other threads use to wake it. It
 * knows nothing of curses; screen.c watches stdin with it. Everything but
 * loop_wakeup() and loop_post() runs on the loop's thread only.
 */

#include <stdbool.h>

typedef void loop_fd_fn(void *ctx, int fd, short revents);
typedef void loop_fn(void *ctx);

/* Creates the self-pipe. Returns 0 or ENR_E_IO. */
int loop_init(void);

/* Closes the self-pipe, forgets every watch and timer, and drops posted
 * functions that never ran. Idempotent. */
void loop_done(void);

/*
 * Calls fn(ctx, fd, revents) from the loop whenever poll() reports `events`
 * (POLLIN, POLLOUT; POLLERR and POLLHUP always) on `fd`. Watching a watched fd
 * again replaces its events, function and context. Returns 0 or ENR_E_NOMEM.
 */
int loop_watch_fd(int fd, short events, loop_fd_fn *fn, void *ctx);

/* Stops watching `fd` (no-op if not watched); safe from inside a callback. */
void loop_unwatch_fd(int fd);

/* Calls fn(ctx) once, `ms` milliseconds from now (0: on the next turn).
 * Returns the timer's id (never 0), or 0 with ENR_E_NOMEM set. */
unsigned loop_set_timer(long ms, loop_fn *fn, void *ctx);

/* Cancels a timer that has not fired yet; 0 and spent ids are ignored. */
void loop_cancel_timer(unsigned id);

/* fn(ctx) runs before every poll(): where the screen redraws what changed. */
void loop_set_prepare(loop_fn *fn, void *ctx);

/* Wakes the loop out of poll(). Async-signal-safe and thread-safe. */
void loop_wakeup(void);

/* Makes the loop's thread call fn(ctx) on its next turn, in the order posted.
 * Thread-safe: how a worker hands results over. Returns 0 or ENR_E_NOMEM. */
int loop_post(loop_fn *fn, void *ctx);

/* Runs until loop_quit(); returns the status given to it. */
int loop_run(void);

/* Makes loop_run() return `status` once the current callback is done. */
void loop_quit(int status);

/* Milliseconds of the monotonic clock. */
long long loop_now_ms(void);

#endif
