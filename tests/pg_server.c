/* A real PostgreSQL server for tests (pg_server.h). */
#include "pg_server.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The watchdog: waits for EOF on stdin (the test process closed its end or
 * died), then stops the server and removes DIR. Signals sent to the test's
 * process group must not stop it first. $1 pg_ctl, $2 DIR/data, $3 DIR. */
static const char watchdog_script[] = "trap '' HUP INT QUIT TERM PIPE\n"
                                      "read -r _\n"
                                      "\"$1\" -D \"$2\" -m immediate -w stop >/dev/null 2>&1\n"
                                      "rm -rf -- \"$3\"\n";

#define MAX_SERVERS 16

/* Watchdogs of servers not stopped yet, closed at exit (see pg_server.h). */
static struct {
	int fd;
	pid_t pid;
} live[MAX_SERVERS];
static pid_t live_owner;
static int servers_started;

static void stop_all_at_exit(void)
{
	if (getpid() != live_owner)
		return;
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (live[i].pid <= 0)
			continue;
		close(live[i].fd);
		while (waitpid(live[i].pid, NULL, 0) < 0 && errno == EINTR)
			;
		live[i].pid = 0;
	}
}

static int remember(int fd, pid_t pid)
{
	if (!live_owner) {
		live_owner = getpid();
		atexit(stop_all_at_exit);
	}
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (live[i].pid <= 0) {
			live[i].fd = fd;
			live[i].pid = pid;
			return 0;
		}
	}
	return -1;
}

static void forget(pid_t pid)
{
	for (int i = 0; i < MAX_SERVERS; i++)
		if (live[i].pid == pid)
			live[i].pid = 0;
}

/* The newest /usr/lib/postgresql/<version>/bin with an initdb. */
static int find_bindir(char *out, size_t n)
{
	glob_t g = {0};
	int best = -1, best_version = -1;

	if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			int version = atoi(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"));
			if (version > best_version) {
				best_version = version;
				best = (int)i;
			}
		}
	}
	if (best >= 0) {
		char *slash = strrchr(g.gl_pathv[best], '/');
		*slash = '\0';
		snprintf(out, n, "%s", g.gl_pathv[best]);
	}
	globfree(&g);
	if (best < 0) {
		fprintf(stderr, "test_pg: no PostgreSQL server in /usr/lib/postgresql "
		                "(packaging/setup.sh installs postgresql)\n");
		return -1;
	}
	return 0;
}

/* Who runs initdb, pg_ctl and the watchdog: the postgres user as root
 * (initdb refuses root), else ourselves. */
struct owner {
	int switch_user;
	uid_t uid;
	gid_t gid;
};

static int get_owner(struct owner *out)
{
	struct passwd *pw = NULL;

	out->switch_user = geteuid() == 0;
	if (!out->switch_user)
		return 0;
	pw = getpwnam("postgres");
	if (!pw) {
		fprintf(stderr, "test_pg: running as root needs the postgres user "
		                "(Debian's postgresql package creates it)\n");
		return -1;
	}
	out->uid = pw->pw_uid;
	out->gid = pw->pw_gid;
	return 0;
}

/* The environment without PG* variables (PGDATA, PGPORT, PGHOST... would
 * change what initdb and pg_ctl do). Only the array is malloc'd. */
static char **clean_environ(void)
{
	size_t n = 0, kept = 0;
	char **env = NULL;

	while (environ[n])
		n++;
	env = calloc(n + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "PG", 2) != 0)
			env[kept++] = environ[i];
	return env;
}

/* Starts argv as the owner with stdin from in_fd (-1: /dev/null) and stdout
 * and stderr appended to log; in a session of its own if asked. Between fork
 * and exec only async-signal-safe calls: tests may have threads. */
static pid_t spawn(const char *const argv[], int in_fd, const char *log, int new_session)
{
	struct owner owner;
	char **env = NULL;
	pid_t pid;

	if (get_owner(&owner) < 0)
		return -1;
	env = clean_environ();
	if (!env)
		return -1;
	pid = fork();
	if (pid == 0) {
		int fd;
		if (new_session)
			setsid();
		if (owner.switch_user &&
		    (setgroups(0, NULL) < 0 || setgid(owner.gid) < 0 || setuid(owner.uid) < 0))
			_exit(126);
		fd = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
		if (fd < 0 || dup2(fd, 0) < 0)
			_exit(126);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		/* Nothing of the test process's (sockets, the watchdog's pipe)
		 * may outlive it in a postmaster. */
		close_range(3, ~0U, 0);
		/* execve's argv is not const for historical reasons; it is not written. */
		execve(argv[0], (char *const *)argv, env);
		_exit(127);
	}
	free(env);
	if (pid < 0)
		perror("test_pg: fork");
	return pid;
}

static void print_tail(const char *path)
{
	char buf[2048];
	FILE *f = fopen(path, "r");
	long size;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof(buf) ? size - (long)sizeof(buf) : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	fprintf(stderr, "test_pg: --- %s ---\n%.*s\n", path, (int)n, buf);
}

/* Runs BINDIR/tool ARGS... as the owner, logging to DIR/ctl.log. 0 or -1. */
static int run_tool(const struct test_pg *pg, const char *tool, const char *const args[])
{
	char path[192], log[192];
	const char *argv[16] = {path};
	int status = 0, n = 1;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/%s", pg->bindir, tool);
	snprintf(log, sizeof(log), "%s/ctl.log", pg->dir);
	while (args[n - 1] && n < 15) {
		argv[n] = args[n - 1];
		n++;
	}
	argv[n] = NULL;
	pid = spawn(argv, -1, log, 0);
	if (pid < 0)
		return -1;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			perror("test_pg: waitpid");
			return -1;
		}
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char server_log[192];
		fprintf(stderr, "test_pg: %s %s failed (status %d)\n", tool, args[0], status);
		print_tail(log);
		snprintf(server_log, sizeof(server_log), "%s/server.log", pg->dir);
		print_tail(server_log);
		return -1;
	}
	return 0;
}

static int start_watchdog(struct test_pg *pg)
{
	char pg_ctl[192];
	const char *const argv[] = {"/bin/sh", "-c",        watchdog_script, "test_pg-watchdog",
	                            pg_ctl,    pg->datadir, pg->dir,         NULL};
	int fds[2];
	pid_t pid;

	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bindir);
	if (pipe2(fds, O_CLOEXEC) < 0) {
		perror("test_pg: pipe2");
		return -1;
	}
	pid = spawn(argv, fds[0], "/dev/null", 1);
	close(fds[0]);
	if (pid < 0 || remember(fds[1], pid) < 0) {
		fprintf(stderr, "test_pg: cannot start the watchdog\n");
		close(fds[1]);
		return -1;
	}
	pg->watchdog_fd = fds[1];
	pg->watchdog = pid;
	return 0;
}

static int configure(const struct test_pg *pg)
{
	char path[192];
	FILE *f = NULL;

	snprintf(path, sizeof(path), "%s/postgresql.conf", pg->datadir);
	f = fopen(path, "a");
	if (!f) {
		perror(path);
		return -1;
	}
	/* The socket only; fsync off is safe for a server that dies with its test. */
	fprintf(f,
	        "\n# test_pg\nlisten_addresses = ''\nunix_socket_directories = '%s'\nport = %d\n"
	        "fsync = off\n",
	        pg->dir, pg->port);
	return fclose(f) == 0 ? 0 : -1;
}

static int pg_ctl_start(struct test_pg *pg)
{
	char log[192];
	const char *const args[] = {"-D", pg->datadir, "-l", log, "-w", "-t", "60", "start", NULL};

	snprintf(log, sizeof(log), "%s/server.log", pg->dir);
	if (run_tool(pg, "pg_ctl", args) < 0)
		return -1;
	pg->running = 1;
	return 0;
}

static int pg_ctl_stop(struct test_pg *pg, const char *mode)
{
	const char *const args[] = {"-D", pg->datadir, "-m", mode, "-w", "-t", "60", "stop", NULL};

	if (run_tool(pg, "pg_ctl", args) < 0)
		return -1;
	pg->running = 0;
	return 0;
}

/* Random per process and distinct within it: 20000..59999. */
static int next_port(void)
{
	static unsigned base;

	if (!servers_started)
		base = (unsigned)getpid() * 7919u + (unsigned)time(NULL);
	return 20000 + (int)((base + (unsigned)servers_started++) % 40000u);
}

int test_pg_start(struct test_pg *pg)
{
	const char *tmp = getenv("TMPDIR");
	struct owner owner;
	const char *const initdb_args[] = {"-D",   pg->datadir,        "-A",        "trust",
	                                   "-U",   "postgres",         "--no-sync", "-E",
	                                   "UTF8", "--locale=C.UTF-8", NULL};

	memset(pg, 0, sizeof(*pg));
	pg->watchdog_fd = -1;
	if (find_bindir(pg->bindir, sizeof(pg->bindir)) < 0 || get_owner(&owner) < 0)
		return -1;
	/* The postgres user must reach DIR, and the socket's path must stay
	 * under sun_path's 108 bytes: /tmp unless TMPDIR is ours and short. */
	if (owner.switch_user || !tmp || !*tmp || strlen(tmp) > 60)
		tmp = "/tmp";
	snprintf(pg->dir, sizeof(pg->dir), "%s/derenroll-pg-XXXXXX", tmp);
	if (!mkdtemp(pg->dir)) {
		perror("test_pg: mkdtemp");
		return -1;
	}
	if (owner.switch_user && chown(pg->dir, owner.uid, owner.gid) < 0) {
		perror("test_pg: chown");
		rmdir(pg->dir);
		return -1;
	}
	snprintf(pg->datadir, sizeof(pg->datadir), "%s/data", pg->dir);
	/* From here on the watchdog removes DIR, whatever happens to us. */
	if (start_watchdog(pg) < 0) {
		rmdir(pg->dir);
		return -1;
	}
	pg->port = next_port();
	snprintf(pg->conninfo, sizeof(pg->conninfo),
	         "host=%s port=%d user=postgres dbname=postgres", pg->dir, pg->port);
	test_pg_url(pg, "postgres", pg->url, sizeof(pg->url));
	if (run_tool(pg, "initdb", initdb_args) < 0 || configure(pg) < 0 || pg_ctl_start(pg) < 0) {
		test_pg_stop(pg);
		return -1;
	}
	return 0;
}

void test_pg_stop(struct test_pg *pg)
{
	if (pg->watchdog <= 0)
		return;
	close(pg->watchdog_fd);
	while (waitpid(pg->watchdog, NULL, 0) < 0 && errno == EINTR)
		;
	forget(pg->watchdog);
	pg->watchdog = 0;
	pg->watchdog_fd = -1;
	pg->running = 0;
}

int test_pg_restart(struct test_pg *pg)
{
	if (pg->running && pg_ctl_stop(pg, "fast") < 0)
		return -1;
	return pg_ctl_start(pg);
}

int test_pg_kill(struct test_pg *pg)
{
	return pg_ctl_stop(pg, "immediate");
}

int test_pg_resume(struct test_pg *pg)
{
	return pg_ctl_start(pg);
}

int test_pg_url(const struct test_pg *pg, const char *db, char *out, size_t n)
{
	int len = snprintf(out, n, "postgresql:///%s?host=%s&port=%d&user=postgres", db, pg->dir,
	                   pg->port);
	return len < 0 || (size_t)len >= n ? -1 : 0;
}

PGconn *test_pg_connect(const struct test_pg *pg, const char *db)
{
	char port[16];
	const char *keys[] = {"host", "port", "user", "dbname", NULL};
	const char *values[] = {pg->dir, port, "postgres", db ? db : "postgres", NULL};
	PGconn *conn = NULL;

	snprintf(port, sizeof(port), "%d", pg->port);
	conn = PQconnectdbParams(keys, values, 0);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "test_pg: connecting to %s: %s", db ? db : "postgres",
		        conn ? PQerrorMessage(conn) : "out of memory\n");
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* PQexec's result if it succeeded, else NULL (the error on stderr). */
static PGresult *exec_checked(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType status = PQresultStatus(res);

	if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
		return res;
	fprintf(stderr, "test_pg: %s: %s", sql, PQerrorMessage(conn));
	PQclear(res);
	return NULL;
}

int test_pg_exec(const struct test_pg *pg, const char *db, const char *sql)
{
	PGconn *conn = test_pg_connect(pg, db);
	PGresult *res = NULL;

	if (!conn)
		return -1;
	res = exec_checked(conn, sql);
	PQclear(res);
	PQfinish(conn);
	return res ? 0 : -1;
}

char *test_pg_value(const struct test_pg *pg, const char *db, const char *sql)
{
	PGconn *conn = test_pg_connect(pg, db);
	PGresult *res = NULL;
	char *value = NULL;

	if (!conn)
		return NULL;
	res = exec_checked(conn, sql);
	if (res && PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0))
		value = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(conn);
	return value;
}

int test_pg_createdb(const struct test_pg *pg, const char *name)
{
	PGconn *conn = test_pg_connect(pg, NULL);
	char *ident = NULL, sql[256];
	PGresult *res = NULL;

	if (!conn)
		return -1;
	ident = PQescapeIdentifier(conn, name, strlen(name));
	if (ident) {
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", ident);
		res = exec_checked(conn, sql);
		PQfreemem(ident);
	}
	PQclear(res);
	PQfinish(conn);
	return res ? 0 : -1;
}
