#ifndef DERENROLL_TEST_PG_SERVER_H
#define DERENROLL_TEST_PG_SERVER_H

#include <libpq-fe.h>
#include <sys/types.h>

/*
 * A real PostgreSQL server for tests: `initdb` into a fresh temp dir, started
 * with `pg_ctl` listening only on a Unix socket in that dir. Layout:
 *   DIR/data         the cluster (the postmaster runs with -D DIR/data)
 *   DIR/.s.PGSQL.N   the socket (port N, random, so parallel tests differ)
 *   DIR/server.log   the server's log; DIR/ctl.log initdb's and pg_ctl's
 * As root (CI), initdb and pg_ctl run as the `postgres` user and DIR belongs
 * to it; the test process still connects as root over the socket.
 *
 * A server never outlives its test process: a watchdog (a shell in a session
 * of its own, holding a pipe from the test process) stops it and removes DIR
 * when the pipe closes, which is test_pg_stop(), the exit of the process, or
 * its death by any signal, SIGKILL included. A postmaster left over anyway is
 * found by its `-D /tmp/derenroll-pg-…/data` argument.
 */
struct test_pg {
	char dir[128];      /* the temp dir */
	char datadir[160];  /* DIR/data */
	int port;           /* the socket's number */
	char conninfo[256]; /* host=DIR port=N user=postgres dbname=postgres */
	char url[256];      /* postgresql:///postgres?host=DIR&port=N&user=postgres */
	char bindir[128];   /* the newest /usr/lib/postgresql/<version>/bin */
	int running;        /* the server is up (test_pg_kill takes it down) */
	int watchdog_fd;    /* closing it stops the server and removes DIR */
	pid_t watchdog;
};

/* Creates DIR, runs initdb and starts the server. 0, or -1 (a message on stderr). */
int test_pg_start(struct test_pg *pg);

/* Stops the server (immediately) and removes DIR; waits for both. */
void test_pg_stop(struct test_pg *pg);

/* A clean restart (`pg_ctl -m fast stop`, then start): committed data survives. */
int test_pg_restart(struct test_pg *pg);

/* The server goes down as if it crashed (`pg_ctl -m immediate stop`); DIR stays. */
int test_pg_kill(struct test_pg *pg);

/* Starts the server again after test_pg_kill() (crash recovery runs). */
int test_pg_resume(struct test_pg *pg);

/* A connection to database `db` (NULL: postgres), or NULL (a message on stderr). */
PGconn *test_pg_connect(const struct test_pg *pg, const char *db);

/* CREATE DATABASE name. 0 or -1. */
int test_pg_createdb(const struct test_pg *pg, const char *name);

/* Runs `sql` (one or more statements) in database `db`. 0 or -1. */
int test_pg_exec(const struct test_pg *pg, const char *db, const char *sql);

/* The first column of the first row `sql` returns: malloc'd, or NULL (error, no row, NULL). */
char *test_pg_value(const struct test_pg *pg, const char *db, const char *sql);

/* pg->url with dbname `db` in place of postgres, into out (size n). 0, or -1 if too long. */
int test_pg_url(const struct test_pg *pg, const char *db, char *out, size_t n);

#endif
