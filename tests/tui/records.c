/*
 * Test-only: prints every record of a --demo store (its fixed passphrase) as
 * `derenroll list --json` would, one JSON object a line.
 *   records STORE
 */
#include <stdio.h>
#include <time.h>

#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/store.h"

int main(int argc, char **argv)
{
	struct enr_store_options opts = {0};
	struct enr_store *store = NULL;
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: records STORE\n");
		return 2;
	}
	opts.path = argv[1];
	opts.passphrase = "derenroll-demo";
	opts.metadata_only = true;
	rc = enr_store_open(&store, &opts);
	if (rc < 0) {
		fprintf(stderr, "records: %s\n", enr_error_last());
		return 4;
	}
	for (size_t i = 0; i < enr_store_count(store); i++) {
		enr_record_view_write(stdout, enr_store_at(store, i), (long long)time(NULL), 7,
		                      false);
		putchar('\n');
	}
	enr_store_free(store);
	return 0;
}
