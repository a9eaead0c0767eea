/*
 * A PostgreSQL server for the shell tests (tests/cli/lib.sh pg_start): starts
 * one (tests/pg_server.c), prints its URL on a line, and stops it when its
 * standard input ends (the test script exited, however it did). Lines on
 * standard input: "kill" (stop as a crash would), "resume" (start again).
 */
#include <stdio.h>
#include <string.h>

#include "pg_server.h"

int main(void)
{
	struct test_pg pg;
	char line[64];

	if (test_pg_start(&pg) < 0)
		return 1;
	printf("%s\n", pg.url);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		int rc = 0;
		if (strncmp(line, "kill", 4) == 0)
			rc = test_pg_kill(&pg);
		else if (strncmp(line, "resume", 6) == 0)
			rc = test_pg_resume(&pg);
		printf("%s\n", rc == 0 ? "ok" : "failed");
		fflush(stdout);
	}
	test_pg_stop(&pg);
	return 0;
}
