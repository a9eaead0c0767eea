#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "helpers.h"
#include "loop.h"

static int setup(void **state)
{
	(void)state;
	return loop_init();
}

static int teardown(void **state)
{
	(void)state;
	loop_done();
	return 0;
}

/* Ends a test that would otherwise hang: the loop quits with -99. */
static void watchdog(void *ctx)
{
	(void)ctx;
	loop_quit(-99);
}

struct record {
	char order[32];
	int n;
};

static void note(struct record *r, char c)
{
	if (r->n + 1 < (int)sizeof(r->order))
		r->order[r->n++] = c;
}

static void fire_a(void *ctx)
{
	note(ctx, 'a');
}

static void fire_b(void *ctx)
{
	note(ctx, 'b');
}

static void fire_c_and_quit(void *ctx)
{
	note(ctx, 'c');
	loop_quit(7);
}

static void timers_fire_in_order_once(void **state)
{
	struct record r = {0};
	unsigned cancelled;

	(void)state;
	loop_set_timer(5000, watchdog, NULL);
	loop_set_timer(30, fire_b, &r);
	loop_set_timer(10, fire_a, &r);
	cancelled = loop_set_timer(20, fire_a, &r);
	loop_set_timer(60, fire_c_and_quit, &r);
	loop_cancel_timer(cancelled);
	loop_cancel_timer(0);
	assert_int_equal(loop_run(), 7);
	assert_string_equal(r.order, "abc");
}

static void rearm(void *ctx)
{
	struct record *r = ctx;

	note(r, 'r');
	if (r->n < 3)
		loop_set_timer(0, rearm, r);
	else
		loop_quit(0);
}

static void timer_set_in_a_callback_runs_on_a_later_turn(void **state)
{
	struct record r = {0};

	(void)state;
	loop_set_timer(5000, watchdog, NULL);
	loop_set_timer(0, rearm, &r);
	assert_int_equal(loop_run(), 0);
	assert_string_equal(r.order, "rrr");
}

struct pipe_ctx {
	int fds[2];
	int reads;
	char last;
};

static void on_readable(void *ctx, int fd, short revents)
{
	struct pipe_ctx *p = ctx;
	char c;

	assert_true(revents & POLLIN);
	assert_int_equal(read(fd, &c, 1), 1);
	p->last = c;
	if (++p->reads == 2) {
		/* Unwatching from inside the callback: no further calls. */
		loop_unwatch_fd(fd);
		loop_set_timer(50, watchdog, NULL);
	}
}

static void write_later(void *ctx)
{
	struct pipe_ctx *p = ctx;

	assert_int_equal(write(p->fds[1], "xy", 2), 2);
}

static void watched_fds_dispatch_until_unwatched(void **state)
{
	struct pipe_ctx p = {.reads = 0};

	(void)state;
	assert_int_equal(pipe(p.fds), 0);
	assert_int_equal(loop_watch_fd(p.fds[0], POLLIN, on_readable, &p), 0);
	loop_set_timer(10, write_later, &p);
	loop_set_timer(5000, watchdog, NULL);
	/* Bytes written after the unwatch are never read; the short watchdog
	 * set at the second read ends the run. */
	loop_set_timer(30, write_later, &p);
	assert_int_equal(loop_run(), -99);
	assert_int_equal(p.reads, 2);
	close(p.fds[0]);
	close(p.fds[1]);
}

struct post_ctx {
	pthread_t loop_thread;
	int ran;
	bool on_loop_thread;
	char order[8];
};

static void posted(void *ctx)
{
	struct post_ctx *p = ctx;

	p->on_loop_thread = pthread_equal(pthread_self(), p->loop_thread);
	p->order[p->ran] = (char)('0' + p->ran);
	if (++p->ran == 3)
		loop_quit(0);
}

static void *worker(void *ctx)
{
	usleep(20000);
	for (int i = 0; i < 3; i++)
		loop_post(posted, ctx);
	return NULL;
}

static void posts_from_a_thread_run_on_the_loop_in_order(void **state)
{
	struct post_ctx p = {.loop_thread = pthread_self()};
	pthread_t t;

	(void)state;
	/* No timer but the watchdog: only the wake-up can end poll() early. */
	loop_set_timer(5000, watchdog, NULL);
	assert_int_equal(pthread_create(&t, NULL, worker, &p), 0);
	assert_int_equal(loop_run(), 0);
	pthread_join(t, NULL);
	assert_int_equal(p.ran, 3);
	assert_true(p.on_loop_thread);
	assert_string_equal(p.order, "012");
}

static int prepares;

static void count_prepare(void *ctx)
{
	(void)ctx;
	if (++prepares == 2)
		loop_quit(0);
}

static void on_alarm(int sig)
{
	(void)sig;
	loop_wakeup();
}

static void wakeup_from_a_signal_handler_runs_prepare_again(void **state)
{
	struct sigaction sa;
	struct itimerval it = {.it_value = {.tv_usec = 20000}};

	(void)state;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	prepares = 0;
	loop_set_prepare(count_prepare, NULL);
	loop_set_timer(5000, watchdog, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	assert_int_equal(loop_run(), 0);
	assert_int_equal(prepares, 2);
	signal(SIGALRM, SIG_DFL);
}

static void done_drops_unrun_posts(void **state)
{
	struct post_ctx p = {.loop_thread = pthread_self()};

	(void)state;
	assert_int_equal(loop_post(posted, &p), 0);
	loop_done();
	assert_int_equal(loop_init(), 0);
	loop_set_timer(10, watchdog, NULL);
	assert_int_equal(loop_run(), -99);
	assert_int_equal(p.ran, 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(timers_fire_in_order_once, setup, teardown),
    cmocka_unit_test_setup_teardown(timer_set_in_a_callback_runs_on_a_later_turn, setup, teardown),
    cmocka_unit_test_setup_teardown(watched_fds_dispatch_until_unwatched, setup, teardown),
    cmocka_unit_test_setup_teardown(posts_from_a_thread_run_on_the_loop_in_order, setup, teardown),
    cmocka_unit_test_setup_teardown(wakeup_from_a_signal_handler_runs_prepare_again, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(done_drops_unrun_posts, setup, teardown),
};

TEST_MAIN(tests)
