/*
 * The store's journal (enr_store__journal_read, core/store/journal.c) beside a
 * store of three records, plain or encrypted with the harness's key.
 *
 * The input's first line says how: "plain" or "sealed", then how many valid
 * entries the harness appends first through enr_store__journal_append() (0 to
 * 9), and the position the store's header says is folded in ("journal": N);
 * the rest of the input is written after those entries, as a torn or foreign
 * tail would be. Whatever it holds, a read never crashes, applies entries
 * only to records that exist, and the next entry appended is read back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "derenroll/error.h"
#include "derenroll/store.h"
#include "store/internal.h"
#include "util.h"

static struct store_key fuzz_key; /* fuzz_store_key() */
static char store_path[4200], journal_path[4300];
static struct store_data base; /* the three records, as a fresh read gives them */

static struct enr_record *make_record(int i)
{
	struct enr_record *rec = NULL;
	char id[16], token[32];

	snprintf(id, sizeof(id), "rec%07d", i);
	snprintf(token, sizeof(token), "refresh-%d", i);
	if (enr_record_new(&rec) < 0 || enr_record_set(&rec->id, id) < 0 ||
	    enr_record_set(&rec->vendor, "sma") < 0 || enr_record_set(&rec->method, "oauth") < 0 ||
	    enr_record_set(&rec->cred.tokens.refresh_token, token) < 0)
		abort();
	rec->cred.type = ENR_CRED_OAUTH;
	return rec;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	fuzz_store_key(&fuzz_key);
	snprintf(store_path, sizeof(store_path), "%s/store", fuzz_tmpdir());
	snprintf(journal_path, sizeof(journal_path), "%s.journal", store_path);
	base.schema = STORE_SCHEMA;
	for (int i = 0; i < 3; i++)
		if (enr_store__data_append(&base, make_record(i)) < 0)
			abort();
	return 0;
}

static void copy_base(struct store_data *d)
{
	memset(d, 0, sizeof(*d));
	d->schema = STORE_SCHEMA;
	for (size_t i = 0; i < base.n_records; i++) {
		struct enr_record *copy = NULL;
		if (enr_record_dup(&copy, base.records[i]) < 0 ||
		    enr_store__data_append(d, copy) < 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char words[3][FUZZ_WORD_MAX];
	const struct store_key *key;
	struct store_journal j = {0};
	struct store_data d;
	struct enr_record *rec;
	FILE *f;
	int entries;

	fuzz_words(words, 3, &data, &size);
	key = strcmp(words[0], "sealed") == 0 ? &fuzz_key : NULL;
	entries = atoi(words[1]) % 10;
	remove(journal_path);

	/* Valid entries first, numbered after the folded position. */
	copy_base(&d);
	d.journal_seq = strtoull(words[2], NULL, 10) % 1000;
	for (int i = 0; i < entries; i++) {
		rec = make_record(i % 3);
		if (enr_store__journal_append(&j, &d, store_path, key, rec, false) < 0)
			abort();
		enr_record_free(rec);
	}
	/* Then the input, where the next entry would go. */
	f = fopen(journal_path, "r+b");
	if (!f)
		f = fopen(journal_path, "w+b");
	if (!f || fseek(f, (long)j.end, SEEK_SET) != 0 ||
	    (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
		abort();
	enr_store__data_free(&d);

	/* A fresh read, whole and for a listing. */
	for (int metadata_only = 0; metadata_only < 2; metadata_only++) {
		struct store_journal fresh = {0};
		copy_base(&d);
		d.journal_seq = strtoull(words[2], NULL, 10) % 1000;
		if (enr_store__journal_read(&fresh, &d, store_path, key, metadata_only, false) <
		    0) {
			enr_store__data_free(&d);
			continue;
		}
		if (d.n_records != base.n_records)
			abort();
		/* The next entry goes where the journal ends, and is read back. */
		if (!metadata_only) {
			struct store_journal again = {0};
			struct store_data back;
			rec = make_record(1);
			if (enr_record_set(&rec->cred.tokens.refresh_token, "appended") < 0 ||
			    enr_store__journal_append(&fresh, &d, store_path, key, rec, false) < 0)
				abort();
			enr_record_free(rec);
			copy_base(&back);
			back.journal_seq = d.journal_seq;
			if (enr_store__journal_read(&again, &back, store_path, key, false, false) <
			        0 ||
			    strcmp(back.records[1]->cred.tokens.refresh_token, "appended") != 0) {
				fprintf(
				    stderr,
				    "fuzz: an entry appended to the journal is not read back\n");
				abort();
			}
			enr_store__data_free(&back);
		}
		enr_store__data_free(&d);
	}
	return 0;
}
