#include <errno.h>
#include <langinfo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

#include "derenroll/error.h"
#include "loop.h"
#include "term.h"

#define PASTE_ON  "\033[?2004h"
#define PASTE_OFF "\033[?2004l"

/* How long a lone Esc waits for the rest of an escape sequence (ms). */
#define ESC_DELAY_MS 25

enum { PAIR_QR = 1, PAIR_ERROR };

static const int restoring_signals[] = {SIGINT,  SIGTERM, SIGHUP, SIGQUIT, SIGSEGV,
                                        SIGABRT, SIGBUS,  SIGFPE, SIGILL};

static SCREEN *screen;
static volatile sig_atomic_t active;
static volatile sig_atomic_t resized;
static bool colors;
/* The QR code's black and white: a picture, not decoration, so NO_COLOR keeps
 * them (derenroll(1) promises dark on light whatever the theme). */
static bool qr_colors;
static bool atexit_done;
static struct termios saved_termios;
static bool have_saved_termios;
/* What a signal handler writes to give the terminal back; filled at init so
 * that the handler only calls write() and tcsetattr(). */
static char restore_seq[256];
static size_t restore_len;
/* Dispositions from before curses, put back by term_done(); and curses' own
 * SIGWINCH and SIGTSTP handlers, which ours chain to. */
static struct sigaction old_actions[sizeof(restoring_signals) / sizeof(restoring_signals[0])];
static struct sigaction old_winch_before, old_tstp_before;
static struct sigaction old_winch, old_tstp;

static void append_cap(const char *cap)
{
	const char *s = tigetstr(cap);
	size_t len;

	if (!s || s == (char *)-1)
		return;
	len = strlen(s);
	if (restore_len + len < sizeof(restore_seq)) {
		memcpy(restore_seq + restore_len, s, len);
		restore_len += len;
	}
}

static void build_restore_seq(void)
{
	const char *rmcup = tigetstr("rmcup");

	restore_len = 0;
	append_cap("sgr0");
	append_cap("cnorm");
	append_cap("rmkx");
	memcpy(restore_seq + restore_len, PASTE_OFF, strlen(PASTE_OFF));
	restore_len += strlen(PASTE_OFF);
	if (rmcup && rmcup != (char *)-1) {
		append_cap("rmcup");
	} else {
		/* No alternate screen: leave the shell's prompt on a fresh line. */
		memcpy(restore_seq + restore_len, "\r\n", 2);
		restore_len += 2;
	}
}

static void write_all(const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDOUT_FILENO, s, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

/* Async-signal-safe: only write(), tcflush() and tcsetattr(). */
static void restore_from_signal(void)
{
	int saved_errno = errno;

	if (active) {
		active = 0;
		write_all(restore_seq, restore_len);
		/* Keys typed into the wizard but not read yet (a secret,
		 * perhaps) must not reach the shell as a command line. */
		tcflush(STDIN_FILENO, TCIFLUSH);
		if (have_saved_termios)
			tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
	}
	errno = saved_errno;
}

static void (*volatile exit_cleanup)(void);

void term_set_exit_cleanup(void (*fn)(void))
{
	exit_cleanup = fn;
}

/* The signals that end the program on purpose (not the faults). */
static void run_exit_cleanup(int sig)
{
	void (*fn)(void) = exit_cleanup;

	if (fn && (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT)) {
		exit_cleanup = NULL;
		fn();
	}
}

static void on_restoring_signal(int sig)
{
	restore_from_signal();
	run_exit_cleanup(sig);
	/* SA_RESETHAND put the default action back: the raised signal ends the
	 * process once this handler returns (a fault re-faults into it). */
	raise(sig);
}

static void call_old(const struct sigaction *old, int sig)
{
	if (old->sa_flags & SA_SIGINFO) {
		if (old->sa_sigaction)
			old->sa_sigaction(sig, NULL, NULL);
	} else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
		old->sa_handler(sig);
	}
}

/* curses' handler records the resize (the next key read is KEY_RESIZE); the
 * wake-up makes the loop read it even when no key follows. */
static void on_winch(int sig)
{
	int saved_errno = errno;

	call_old(&old_winch, sig);
	resized = 1;
	loop_wakeup();
	errno = saved_errno;
}

/* Ctrl-Z: the shell must not get bracketed paste while we are stopped. curses'
 * handler does the rest (endwin, stop, and a full repaint on resume). */
static void on_tstp(int sig)
{
	int saved_errno = errno;

	write_all(PASTE_OFF, strlen(PASTE_OFF));
	if (old_tstp.sa_handler == SIG_DFL && !(old_tstp.sa_flags & SA_SIGINFO)) {
		signal(SIGTSTP, SIG_DFL);
		raise(SIGTSTP);
		signal(SIGTSTP, on_tstp);
	} else {
		call_old(&old_tstp, sig);
	}
	write_all(PASTE_ON, strlen(PASTE_ON));
	loop_wakeup();
	errno = saved_errno;
}

static void save_dispositions(void)
{
	for (size_t i = 0; i < sizeof(restoring_signals) / sizeof(restoring_signals[0]); i++)
		sigaction(restoring_signals[i], NULL, &old_actions[i]);
	sigaction(SIGWINCH, NULL, &old_winch_before);
	sigaction(SIGTSTP, NULL, &old_tstp_before);
}

static void install_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	/* Installed even when the signal was ignored at start: a full-screen
	 * program must always give the terminal back and be quittable. */
	sa.sa_handler = on_restoring_signal;
	sa.sa_flags = SA_RESETHAND;
	for (size_t i = 0; i < sizeof(restoring_signals) / sizeof(restoring_signals[0]); i++)
		sigaction(restoring_signals[i], &sa, NULL);

	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_winch;
	sigaction(SIGWINCH, &sa, &old_winch);
	sa.sa_handler = on_tstp;
	sigaction(SIGTSTP, &sa, &old_tstp);
	if (old_tstp.sa_handler == SIG_IGN && !(old_tstp.sa_flags & SA_SIGINFO))
		sigaction(SIGTSTP, &old_tstp, NULL); /* no job control: nothing to wrap */
}

static void remove_handlers(void)
{
	for (size_t i = 0; i < sizeof(restoring_signals) / sizeof(restoring_signals[0]); i++)
		sigaction(restoring_signals[i], &old_actions[i], NULL);
	sigaction(SIGWINCH, &old_winch_before, NULL);
	sigaction(SIGTSTP, &old_tstp_before, NULL);
}

static void init_colors(void)
{
	const char *no_color = getenv("NO_COLOR");
	bool default_colors;

	colors = false;
	qr_colors = has_colors() && start_color() != ERR;
	if (!qr_colors)
		return;
	default_colors = use_default_colors() == OK;
	/* Bright white where there is one: more contrast than the grey of 7. */
	if (init_pair(PAIR_QR, COLOR_BLACK, COLORS >= 16 ? 15 : COLOR_WHITE) == ERR) {
		qr_colors = false;
		return;
	}
	/* https://no-color.org: set and not empty means no colour. */
	colors = !(no_color && no_color[0]);
	if (colors && default_colors)
		init_pair(PAIR_ERROR, COLOR_RED, -1);
}

static bool locale_is_utf8(void)
{
	const char *codeset = nl_langinfo(CODESET);

	return codeset && (strcasecmp(codeset, "UTF-8") == 0 || strcasecmp(codeset, "utf8") == 0);
}

int term_init(void)
{
	const char *term_name = getenv("TERM");

	if (active)
		return 0;
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
		return enr_error_set(ENR_E_USAGE,
		                     "the wizard needs a terminal on standard input and "
		                     "output; scripts can use the sub-commands instead");
	if (!term_name || !term_name[0])
		return enr_error_set(ENR_E_USAGE, "TERM is not set: cannot draw the wizard");
	have_saved_termios = tcgetattr(STDIN_FILENO, &saved_termios) == 0;
	save_dispositions();
	screen = newterm(NULL, stdout, stdin);
	if (!screen)
		return enr_error_set(
		    ENR_E_USAGE,
		    "unknown terminal type '%s': set TERM to one this machine knows "
		    "(e.g. xterm-256color)",
		    term_name);
	set_term(screen);
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	nodelay(stdscr, TRUE);
	intrflush(stdscr, FALSE);
	set_escdelay(ESC_DELAY_MS);
	curs_set(0);
	define_key("\033[200~", TERM_KEY_PASTE_BEGIN);
	define_key("\033[201~", TERM_KEY_PASTE_END);
	init_colors();
	build_restore_seq();
	fflush(stdout);
	write_all(PASTE_ON, strlen(PASTE_ON));
	active = 1;
	install_handlers();
	if (!atexit_done) {
		atexit(term_done);
		atexit_done = true;
	}
	return 0;
}

void term_done(void)
{
	if (!active)
		return;
	/* The handlers stay until endwin() is done: a signal meanwhile still
	 * restores the terminal. */
	write_all(PASTE_OFF, strlen(PASTE_OFF));
	endwin();
	active = 0;
	remove_handlers();
	delscreen(screen);
	screen = NULL;
}

bool term_take_resize(void)
{
	bool was = resized;

	resized = 0;
	return was;
}

bool term_active(void)
{
	return active;
}

bool term_utf8(void)
{
	return locale_is_utf8();
}

bool term_colors(void)
{
	return colors;
}

attr_t term_attr(enum term_role role)
{
	switch (role) {
	case TERM_NORMAL:
		return A_NORMAL;
	case TERM_TITLE:
		return A_REVERSE | A_BOLD;
	case TERM_KEYNAME:
		return A_BOLD;
	case TERM_SELECTED:
		return A_REVERSE;
	case TERM_DISABLED:
		return A_DIM;
	case TERM_ERROR:
		return colors ? (attr_t)(COLOR_PAIR(PAIR_ERROR) | A_BOLD) : A_BOLD;
	case TERM_INPUT:
		return A_UNDERLINE;
	case TERM_QR:
		/* Monochrome: reverse video shows dark ink on light paper on a
		 * light-on-dark terminal, the common theme; colour needs no guess. */
		return qr_colors ? (attr_t)COLOR_PAIR(PAIR_QR) : A_REVERSE;
	}
	return A_NORMAL;
}

_Noreturn void term_interrupt(void)
{
	restore_from_signal();
	run_exit_cleanup(SIGINT);
	signal(SIGINT, SIG_DFL);
	raise(SIGINT);
	_exit(130);
}
