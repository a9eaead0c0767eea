/* The config file: the loader (inih and what config.c makes of it), the typed
 * getters, the catalogue's check of vendor sections, and the one-key edit of
 * a file (enr_config_save_key(), `join create-flow --save`): the key then
 * reads back with its new value. (enr_config_write() is left out: only the
 * sandbox writes whole configs, of keys it chose.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "derenroll/config.h"
#include "derenroll/log.h"
#include "derenroll/vendor.h"

static char in_path[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	fuzz_catalog();
	snprintf(in_path, sizeof(in_path), "%s/derenroll.ini", fuzz_tmpdir());
	return 0;
}

static void ignore_warning(const char *msg, void *ctx)
{
	(void)msg;
	(void)ctx;
}

/* `config set` edits the file in place; the key then has the new value. */
static void check_set(const uint8_t *data, size_t size)
{
	struct enr_config *back = NULL;
	const char *got;

	fuzz_write_file(in_path, data, size);
	if (enr_config_save_key(in_path, "http", "timeout", "42") < 0)
		return;
	if (enr_config_load(&back, in_path) == 0) {
		got = enr_config_get(back, "http", "timeout");
		if (!got || strcmp(got, "42") != 0) {
			fprintf(stderr, "fuzz: [http] timeout is '%s' after setting it to 42\n",
			        got ? got : "(none)");
			abort();
		}
	}
	enr_config_free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct enr_config *cfg = NULL;
	const char *section, *key, *value;

	fuzz_write_file(in_path, data, size);
	if (enr_config_load(&cfg, in_path) == 0) {
		for (size_t i = 0; i < enr_config_warning_count(cfg); i++)
			enr_config_warning(cfg, i);
		for (size_t i = 0; enr_config_entry(cfg, i, &section, &key, &value) == 0; i++) {
			long n;
			bool b;
			enr_config_get_long(&n, cfg, section, key, 0, -1000, 1000);
			enr_config_get_bool(&b, cfg, section, key, false);
			enr_config_is_secret_key(key);
		}
		enr_catalog_check_config(fuzz_catalog(), cfg, ignore_warning, NULL);
	}
	enr_config_free(cfg);
	check_set(data, size);
	enr_log_clear_secrets();
	return 0;
}
