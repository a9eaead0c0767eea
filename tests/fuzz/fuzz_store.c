/*
 * The store reader (enr_store__file_read): header, decryption and the JSON
 * lines behind it, whole and metadata only; then what it read is written
 * again (enr_store__file_write) and must read back the same.
 *
 * An input whose first line is "sealed" is the plaintext of an encrypted
 * store: it is encrypted with the harness's key first (else the fuzzer never
 * gets past the tag). Any other input is the file as it is, plain JSON lines
 * or an encrypted file (corpus/store/sealed-raw, made by running the harness
 * on corpus/store/sealed-two with FUZZ_STORE_WRITE_SEALED=FILE set).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/store.h"
#include "store/internal.h"
#include "util.h"

static struct store_key fuzz_key; /* fuzz_store_key() */
static char store_path[4200], again_path[4200], again_bak[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	fuzz_store_key(&fuzz_key);
	snprintf(store_path, sizeof(store_path), "%s/store", fuzz_tmpdir());
	snprintf(again_path, sizeof(again_path), "%s/again", fuzz_tmpdir());
	snprintf(again_bak, sizeof(again_bak), "%s.bak", again_path);
	return 0;
}

/* Asked for the key of a file whose header is not the harness's: only the harness's key. */
static int get_key(struct store_key *key, void *ctx)
{
	(void)ctx;
	if (key->kdf.log2_n == fuzz_key.kdf.log2_n && key->kdf.r == fuzz_key.kdf.r &&
	    key->kdf.p == fuzz_key.kdf.p && memcmp(key->salt, fuzz_key.salt, STORE_SALT_SIZE) == 0)
		*key = fuzz_key;
	return 0;
}

static void seal(const uint8_t *data, size_t size)
{
	static const char zero[STORE_HEADER_SIZE];
	struct store_buf b = {0};
	const char *save = getenv("FUZZ_STORE_WRITE_SEALED");

	enr_store__buf_add(&b, zero, sizeof(zero));
	enr_store__buf_add(&b, (const char *)data, size);
	if (b.failed || enr_store__encrypt(&b, &fuzz_key) < 0)
		abort();
	fuzz_write_file(store_path, (const uint8_t *)b.data, b.len);
	if (save && save[0])
		fuzz_write_file(save, (const uint8_t *)b.data, b.len);
	enr_store__buf_free(&b);
}

static char *record_json(const struct enr_record *rec)
{
	char *json = NULL;

	if (enr_record_to_json(&json, rec, true) < 0)
		abort();
	return json;
}

/* Written again, the store reads back with the same records and secrets. */
static void check_written(const struct store_data *d, bool encrypted)
{
	struct store_file_info info = {0};
	struct store_data back;
	struct store_key key = fuzz_key;

	if (enr_store__file_write(&info, again_path, d, encrypted ? &fuzz_key : NULL) < 0)
		return;
	if (enr_store__file_read(&back, &info, again_path, false, &key, get_key, NULL) < 0) {
		fprintf(stderr, "fuzz: the store written again does not read: %s\n",
		        enr_error_last());
		abort();
	}
	if (back.n_records != d->n_records || back.n_secrets != d->n_secrets) {
		fprintf(stderr, "fuzz: %zu records and %zu secrets written, %zu and %zu read\n",
		        d->n_records, d->n_secrets, back.n_records, back.n_secrets);
		abort();
	}
	for (size_t i = 0; i < d->n_records; i++) {
		char *want = record_json(d->records[i]), *got = record_json(back.records[i]);
		if (strcmp(want, got) != 0) {
			fprintf(stderr, "fuzz: record %zu changed when written and read again\n",
			        i);
			abort();
		}
		enr_util_free_secret(want);
		enr_util_free_secret(got);
	}
	for (size_t i = 0; i < d->n_secrets; i++)
		if (strcmp(d->secrets[i].name, back.secrets[i].name) != 0 ||
		    strcmp(d->secrets[i].value, back.secrets[i].value) != 0) {
			fprintf(stderr, "fuzz: secret %zu changed when written and read again\n",
			        i);
			abort();
		}
	enr_store__data_free(&back);
	remove(again_path);
	remove(again_bak);
}

static void read_store(bool metadata_only)
{
	struct store_file_info info;
	struct store_data d;
	struct store_key key = fuzz_key;

	if (enr_store__file_read(&d, &info, store_path, metadata_only, &key, get_key, NULL) < 0)
		return;
	for (size_t i = 0; i < d.n_records; i++) {
		char *json = record_json(d.records[i]);
		enr_store__record_check(d.records[i]);
		enr_util_free_secret(json);
	}
	if (!metadata_only)
		check_written(&d, info.encrypted);
	enr_store__data_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char words[1][FUZZ_WORD_MAX];
	const uint8_t *rest = data;
	size_t rest_size = size;

	fuzz_words(words, 1, &rest, &rest_size);
	if (strcmp(words[0], "sealed") == 0)
		seal(rest, rest_size);
	else
		fuzz_write_file(store_path, data, size);
	read_store(false);
	read_store(true);
	enr_log_clear_secrets();
	return 0;
}
