/*
 * A bulk refresh on a full disk loses no customer: the in-process sandbox
 * (strict: a rotated-out refresh token is refused at once), SMA records whose
 * refresh tokens rotate, and the store's disk played by wrapped write(),
 * pwrite() and fdatasync(): regular files may grow by `free_bytes` more, or
 * only the journal may grow, or the journal's writes fail after some.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fixtures.h"
#include "sandbox_records.h"
#include "derenroll/bulk.h"
#include "derenroll/error.h"
#include "derenroll/lifecycle.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"

#define N_RECORDS 8
#define PASS      "disk full passphrase"

/* ---- the disk ---- */

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
ssize_t __real_pwrite64(int fd, const void *buf, size_t n, off_t at);
ssize_t __wrap_pwrite64(int fd, const void *buf, size_t n, off_t at);

enum disk {
	DISK_FREE,         /* no limit */
	DISK_FULL,         /* no file grows by a byte */
	DISK_JOURNAL_ONLY, /* only FILE.journal may grow (its room was reserved before) */
	DISK_JOURNAL_FAILS /* the journal's writes fail once `journal_writes` were made */
};

static enum disk disk = DISK_FREE;
static int journal_writes;

static bool is_journal(int fd)
{
	char link[64], target[512];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n <= 0)
		return false;
	target[n] = '\0';
	return n > 8 && strcmp(target + n - 8, ".journal") == 0;
}

/* Whether a write of `n` bytes at `at` (-1: the file position) may happen. */
static bool disk_allows(int fd, size_t n, off_t at)
{
	struct stat st;

	if (disk == DISK_FREE || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return true;
	if (disk == DISK_JOURNAL_FAILS) {
		if (!is_journal(fd))
			return true;
		if (journal_writes <= 0)
			return false;
		journal_writes--;
		return true;
	}
	if (at < 0)
		at = lseek(fd, 0, SEEK_CUR);
	/* Overwriting what the file holds takes no room. */
	if (at + (off_t)n <= st.st_size)
		return true;
	return disk == DISK_JOURNAL_ONLY && is_journal(fd);
}

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	if (!disk_allows(fd, n, -1)) {
		errno = disk == DISK_JOURNAL_FAILS ? EIO : ENOSPC;
		return -1;
	}
	return __real_write(fd, buf, n);
}

/* pwrite() is pwrite64() with 64-bit file offsets, as meson builds. */
ssize_t __wrap_pwrite64(int fd, const void *buf, size_t n, off_t at)
{
	if (!disk_allows(fd, n, at)) {
		errno = disk == DISK_JOURNAL_FAILS ? EIO : ENOSPC;
		return -1;
	}
	return __real_pwrite64(fd, buf, n, at);
}

/* ---- fixture ---- */

struct fixture {
	struct test_world w;
	struct enr_store *store;
	char path[512];
	char *ids[N_RECORDS];
};

static struct enr_store *open_store(const char *path)
{
	static const struct enr_store_kdf kdf = {10, 8, 1};
	struct enr_store_options o = {
	    .path = path, .passphrase = PASS, .kdf = &kdf, .create = true};
	struct enr_store *store = NULL;

	if (enr_store_open(&store, &o) < 0)
		fail_msg("open the store: %s", enr_error_last());
	return store;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	static int n;

	disk = DISK_FREE;
	test_world_start(&f->w, NULL);
	snprintf(f->path, sizeof(f->path), "%s/diskfull-%d/store", getenv("HOME"), n++);
	f->store = open_store(f->path);
	assert_int_equal(test_sandbox_sma_records(f->w.sb, f->store, N_RECORDS), 0);
	for (size_t i = 0; i < enr_store_count(f->store); i++)
		f->ids[i] = strdup(enr_store_at(f->store, i)->id);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	disk = DISK_FREE;
	enr_store_free(f->store);
	test_world_stop(&f->w);
	for (int i = 0; i < N_RECORDS; i++)
		free(f->ids[i]);
	free(f);
	return 0;
}

/* A bulk refresh of every record; its error, the bulk kept in *out. */
static int refresh_all(struct enr_bulk **out, struct fixture *f)
{
	struct enr_bulk_options o = {.kind = ENR_JOB_REFRESH, .max_tries = 1};

	assert_int_equal(enr_bulk_new(out, f->store, f->w.cfg, f->w.catalog, &o), 0);
	for (int i = 0; i < N_RECORDS; i++)
		assert_int_equal(enr_bulk_add(*out, f->ids[i]), 0);
	return enr_bulk_run(*out);
}

/* How many records hold a refresh token the vendor already spent: lost customers. */
static int lost(struct fixture *f)
{
	struct enr_store *fresh = open_store(f->path);
	int n = 0;

	for (int i = 0; i < N_RECORDS; i++)
		if (test_sandbox_token_spent(f->w.sb, fresh, f->ids[i], NULL, NULL) != 0)
			n++;
	enr_store_free(fresh);
	return n;
}

/* Once the disk has room again, a normal refresh works for every record. */
static void all_refresh_again(struct fixture *f)
{
	struct enr_store *fresh;
	struct enr_bulk *bulk = NULL;

	disk = DISK_FREE;
	enr_store_free(f->store);
	f->store = fresh = open_store(f->path);
	assert_int_equal(refresh_all(&bulk, f), 0);
	for (size_t i = 0; i < enr_bulk_result_count(bulk); i++) {
		const struct enr_job_result *r = enr_bulk_result(bulk, i);
		if (r->error || !r->refreshed)
			fail_msg("record %s: %s", r->id, r->message ? r->message : "not refreshed");
	}
	enr_bulk_free(bulk);
}

/* ---- tests ---- */

static void full_disk_stops_before_the_first_token(void **state)
{
	struct fixture *f = *state;
	struct enr_bulk *bulk = NULL;
	int rc;

	disk = DISK_FULL;
	rc = refresh_all(&bulk, f);
	assert_int_equal(rc, ENR_E_NOSPACE);
	assert_non_null(strstr(enr_error_last(), "nothing was refreshed"));
	assert_int_equal(enr_bulk_result_count(bulk), N_RECORDS);
	for (size_t i = 0; i < enr_bulk_result_count(bulk); i++) {
		const struct enr_job_result *r = enr_bulk_result(bulk, i);
		assert_int_equal(r->error, ENR_E_NOSPACE);
		assert_false(r->refreshed);
	}
	enr_bulk_free(bulk);
	/* No request was sent: every token is as it was, unspent. */
	assert_int_equal(lost(f), 0);
	all_refresh_again(f);
	assert_int_equal(lost(f), 0);
}

static void disk_full_after_the_reservation_keeps_every_token(void **state)
{
	struct fixture *f = *state;
	struct enr_bulk *bulk = NULL;
	int refreshed = 0;

	/* Room for the journal was reserved; the store itself cannot be rewritten. */
	disk = DISK_JOURNAL_ONLY;
	assert_int_equal(refresh_all(&bulk, f), ENR_E_NOSPACE);
	assert_non_null(strstr(enr_error_last(), ".journal"));
	for (size_t i = 0; i < enr_bulk_result_count(bulk); i++)
		refreshed += enr_bulk_result(bulk, i)->refreshed;
	assert_int_equal(refreshed, N_RECORDS);
	enr_bulk_free(bulk);
	/* Every new token is in the journal, which a fresh open reads. */
	assert_int_equal(lost(f), 0);
	all_refresh_again(f);
	assert_int_equal(lost(f), 0);
}

static void failing_journal_stops_spending_tokens(void **state)
{
	struct fixture *f = *state;
	struct enr_bulk *bulk = NULL;
	int refreshed = 0, stopped = 0, lost_now;

	disk = DISK_JOURNAL_FAILS;
	journal_writes = 1 + 3; /* the reservation, then three entries */
	assert_int_equal(refresh_all(&bulk, f), ENR_E_IO);
	for (size_t i = 0; i < enr_bulk_result_count(bulk); i++) {
		const struct enr_job_result *r = enr_bulk_result(bulk, i);
		refreshed += r->refreshed;
		stopped += r->error == ENR_E_IO && !r->refreshed;
	}
	assert_int_equal(refreshed, 3);
	enr_bulk_free(bulk);
	/* Only the refreshes in flight when the write failed are spent for nothing
	 * (at most 2 at once); no other token was spent after it. */
	lost_now = lost(f);
	assert_true(lost_now >= 1 && lost_now <= 2);
	assert_true(stopped >= N_RECORDS - 3 - 2);
	disk = DISK_FREE;
	print_message("# the journal failed after 3 saves: %d refreshed, %d lost, %d not tried\n",
	              refreshed, lost_now, N_RECORDS - refreshed - lost_now);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(full_disk_stops_before_the_first_token, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(disk_full_after_the_reservation_keeps_every_token,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(failing_journal_stops_spending_tokens, setup, teardown),
	};
	int failed;

	test_env_setup();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	test_catalog_free();
	test_env_cleanup();
	return failed;
}
