/* The test PostgreSQL server (pg_server.h): start, data, restart, stop, two at once. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "pg_server.h"

/* Live (not zombie) processes whose command line mentions `dir`. */
static int processes_for(const char *dir)
{
	DIR *proc = opendir("/proc");
	struct dirent *e;
	int found = 0;

	assert_non_null(proc);
	while ((e = readdir(proc))) {
		char path[300], buf[4096], state = 0;
		size_t n;
		FILE *f;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		if (strrchr(buf, ')'))
			state = strrchr(buf, ')')[2];
		if (state == 'Z')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		for (size_t i = 0; i < n; i++)
			if (!buf[i])
				buf[i] = ' ';
		buf[n] = '\0';
		if (strstr(buf, dir))
			found++;
	}
	closedir(proc);
	return found;
}

static void data_survives_a_restart_and_stop_leaves_nothing(void **state)
{
	struct test_pg pg;
	struct timespec t0, t1;
	char dir[sizeof(pg.dir)], *v;
	struct stat st;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(test_pg_start(&pg), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("# initdb + start: %.2f s (%s)\n",
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, pg.url);
	strcpy(dir, pg.dir);
	assert_int_equal(test_pg_createdb(&pg, "t1"), 0);
	assert_int_equal(
	    test_pg_exec(&pg, "t1", "CREATE TABLE t(x int); INSERT INTO t VALUES (41), (1)"), 0);
	v = test_pg_value(&pg, "t1", "SELECT sum(x) FROM t");
	assert_string_equal(v, "42");
	free(v);
	assert_int_equal(test_pg_restart(&pg), 0);
	v = test_pg_value(&pg, "t1", "SELECT sum(x) FROM t");
	assert_string_equal(v, "42");
	free(v);
	assert_int_equal(test_pg_kill(&pg), 0);
	assert_null(test_pg_connect(&pg, "t1"));
	assert_int_equal(test_pg_resume(&pg), 0);
	v = test_pg_value(&pg, "t1", "SELECT count(*) FROM t");
	assert_string_equal(v, "2");
	free(v);
	assert_true(processes_for(dir) > 0);
	test_pg_stop(&pg);
	assert_int_equal(stat(dir, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(processes_for(dir), 0);
}

static void two_servers_run_at_once(void **state)
{
	struct test_pg a, b;
	char *v;

	assert_int_equal(test_pg_start(&a), 0);
	assert_int_equal(test_pg_start(&b), 0);
	assert_int_not_equal(a.port, b.port);
	assert_string_not_equal(a.dir, b.dir);
	assert_int_equal(test_pg_exec(&a, NULL, "CREATE TABLE only_a(x int)"), 0);
	v = test_pg_value(&b, NULL, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_a'");
	assert_string_equal(v, "0");
	free(v);
	test_pg_stop(&a);
	test_pg_stop(&b);
	assert_int_equal(processes_for(a.dir) + processes_for(b.dir), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(data_survives_a_restart_and_stop_leaves_nothing),
    cmocka_unit_test(two_servers_run_at_once),
};

TEST_MAIN(tests)
