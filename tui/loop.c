#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "derenroll/error.h"
#include "loop.h"
#include "mem.h"

struct watch {
	int fd;
	short events;
	bool removed; /* unwatched during this turn; compacted after dispatch */
	loop_fd_fn *fn;
	void *ctx;
};

struct timer {
	unsigned id;
	long long due_ms;
	loop_fn *fn;
	void *ctx;
};

struct post {
	loop_fn *fn;
	void *ctx;
	struct post *next;
};

static struct {
	int wake_pipe[2];
	struct watch *watches;
	size_t n_watches, cap_watches;
	struct timer *timers;
	size_t n_timers, cap_timers;
	unsigned next_timer_id;
	loop_fn *prepare;
	void *prepare_ctx;
	bool quit;
	int status;
	struct pollfd *pfds;
	size_t cap_pfds;
} L = {.wake_pipe = {-1, -1}};

static pthread_mutex_t post_lock = PTHREAD_MUTEX_INITIALIZER;
static struct post *post_head, *post_tail;

long long loop_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int loop_init(void)
{
	if (L.wake_pipe[0] >= 0)
		return 0;
	if (pipe2(L.wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		L.wake_pipe[0] = L.wake_pipe[1] = -1;
		return enr_error_set_errno(ENR_E_IO, errno, "cannot create the event loop's pipe");
	}
	L.quit = false;
	L.status = 0;
	return 0;
}

/* Takes every posted function, oldest first, out of the queue. */
static struct post *take_posts(void)
{
	struct post *p;

	pthread_mutex_lock(&post_lock);
	p = post_head;
	post_head = post_tail = NULL;
	pthread_mutex_unlock(&post_lock);
	return p;
}

/* Runs (when `run`) and frees the posted functions. */
static void flush_posts(bool run)
{
	struct post *p = take_posts();

	while (p) {
		struct post *next = p->next;
		if (run)
			p->fn(p->ctx);
		free(p);
		p = next;
	}
}

void loop_done(void)
{
	int r = L.wake_pipe[0], w = L.wake_pipe[1];

	if (r < 0)
		return;
	/* Signal handlers may still call loop_wakeup(): make it a no-op first. */
	L.wake_pipe[1] = -1;
	L.wake_pipe[0] = -1;
	close(w);
	close(r);
	flush_posts(false);
	free(L.watches);
	free(L.timers);
	free(L.pfds);
	L.watches = NULL;
	L.timers = NULL;
	L.pfds = NULL;
	L.n_watches = L.cap_watches = L.n_timers = L.cap_timers = L.cap_pfds = 0;
	L.prepare = NULL;
	L.prepare_ctx = NULL;
}

static struct watch *find_watch(int fd)
{
	for (size_t i = 0; i < L.n_watches; i++)
		if (L.watches[i].fd == fd && !L.watches[i].removed)
			return &L.watches[i];
	return NULL;
}

int loop_watch_fd(int fd, short events, loop_fd_fn *fn, void *ctx)
{
	struct watch *w = find_watch(fd);

	if (!w) {
		if (tui_grow((void **)&L.watches, &L.cap_watches, L.n_watches + 1, sizeof(*w), 8) <
		    0)
			return ENR_E_NOMEM;
		w = &L.watches[L.n_watches++];
		w->fd = fd;
		w->removed = false;
	}
	w->events = events;
	w->fn = fn;
	w->ctx = ctx;
	return 0;
}

void loop_unwatch_fd(int fd)
{
	struct watch *w = find_watch(fd);

	if (w)
		w->removed = true;
}

static void compact_watches(void)
{
	size_t j = 0;

	for (size_t i = 0; i < L.n_watches; i++)
		if (!L.watches[i].removed)
			L.watches[j++] = L.watches[i];
	L.n_watches = j;
}

unsigned loop_set_timer(long ms, loop_fn *fn, void *ctx)
{
	struct timer *t;

	if (tui_grow((void **)&L.timers, &L.cap_timers, L.n_timers + 1, sizeof(*t), 8) < 0)
		return 0;
	if (++L.next_timer_id == 0)
		L.next_timer_id = 1;
	t = &L.timers[L.n_timers++];
	t->id = L.next_timer_id;
	t->due_ms = loop_now_ms() + (ms > 0 ? ms : 0);
	t->fn = fn;
	t->ctx = ctx;
	return t->id;
}

void loop_cancel_timer(unsigned id)
{
	for (size_t i = 0; id && i < L.n_timers; i++)
		if (L.timers[i].id == id) {
			L.timers[i] = L.timers[--L.n_timers];
			return;
		}
}

void loop_set_prepare(loop_fn *fn, void *ctx)
{
	L.prepare = fn;
	L.prepare_ctx = ctx;
}

void loop_wakeup(void)
{
	int fd = L.wake_pipe[1];
	int saved_errno = errno;

	if (fd >= 0) {
		/* A full pipe already means "wake up": EAGAIN is fine. */
		ssize_t ignored = write(fd, "", 1);
		(void)ignored;
	}
	errno = saved_errno;
}

int loop_post(loop_fn *fn, void *ctx)
{
	struct post *p = malloc(sizeof(*p));

	if (!p)
		return enr_error_set(ENR_E_NOMEM, NULL);
	p->fn = fn;
	p->ctx = ctx;
	p->next = NULL;
	pthread_mutex_lock(&post_lock);
	if (post_tail)
		post_tail->next = p;
	else
		post_head = p;
	post_tail = p;
	pthread_mutex_unlock(&post_lock);
	loop_wakeup();
	return 0;
}

void loop_quit(int status)
{
	L.quit = true;
	L.status = status;
}

static void drain_wake_pipe(void)
{
	char buf[64];

	while (read(L.wake_pipe[0], buf, sizeof(buf)) > 0) {
	}
}

/* Milliseconds until the next timer is due: -1 (none) or 0 and up. */
static int poll_timeout(void)
{
	long long now = loop_now_ms(), soonest = -1;

	for (size_t i = 0; i < L.n_timers; i++) {
		long long left = L.timers[i].due_ms - now;
		if (left < 0)
			left = 0;
		if (soonest < 0 || left < soonest)
			soonest = left;
	}
	return soonest > 60000 ? 60000 : (int)soonest;
}

/* Fires each timer due now exactly once; timers set by a callback wait for
 * the next turn. */
static void run_timers(void)
{
	long long now = loop_now_ms();
	unsigned newest = L.next_timer_id;

	for (size_t i = 0; i < L.n_timers && !L.quit;) {
		struct timer t = L.timers[i];
		if (t.due_ms > now || t.id > newest) {
			i++;
			continue;
		}
		L.timers[i] = L.timers[--L.n_timers];
		t.fn(t.ctx);
		/* The callback may have cancelled or added timers: rescan from
		 * the start (fired ones are gone, so this ends). */
		i = 0;
	}
}

static int build_pollfds(size_t *n)
{
	if (tui_grow((void **)&L.pfds, &L.cap_pfds, L.n_watches + 1, sizeof(*L.pfds), 8) < 0)
		return ENR_E_NOMEM;
	L.pfds[0] = (struct pollfd){.fd = L.wake_pipe[0], .events = POLLIN};
	for (size_t i = 0; i < L.n_watches; i++)
		L.pfds[i + 1] =
		    (struct pollfd){.fd = L.watches[i].fd, .events = L.watches[i].events};
	*n = L.n_watches + 1;
	return 0;
}

int loop_run(void)
{
	L.quit = false;
	while (!L.quit) {
		size_t n = 0;
		int ready;

		if (L.prepare)
			L.prepare(L.prepare_ctx);
		if (L.quit)
			break;
		/* Watches removed outside a turn (their fd may be closed or reused). */
		compact_watches();
		if (build_pollfds(&n) < 0)
			return ENR_E_NOMEM;
		ready = poll(L.pfds, n, poll_timeout());
		if (ready < 0 && errno != EINTR)
			return enr_error_set_errno(ENR_E_IO, errno, "poll");
		if (ready > 0 && (L.pfds[0].revents & POLLIN))
			drain_wake_pipe();
		flush_posts(true);
		/* pfds[i + 1] was built from watches[i]; a watch added during
		 * dispatch comes after those, one removed is only marked. */
		for (size_t i = 0; ready > 0 && i + 1 < n && !L.quit; i++) {
			struct watch *w = &L.watches[i];
			short revents = L.pfds[i + 1].revents;
			if (revents && !w->removed)
				w->fn(w->ctx, w->fd, revents);
		}
		compact_watches();
		run_timers();
	}
	return L.status;
}
