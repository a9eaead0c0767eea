#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"

static char dir[512];

static int setup(void **state)
{
	static int n;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/cfg%d", getenv("HOME"), n++);
	return mkdir(dir, 0700);
}

static int teardown(void **state)
{
	(void)state;
	enr_log_clear_secrets();
	return 0;
}

static struct enr_config *load_ok(const char *content, int mode)
{
	char *path = test_write_file(dir, "config.ini", content, mode);
	struct enr_config *cfg = NULL;
	int rc = enr_config_load(&cfg, path);

	if (rc != 0)
		fail_msg("load failed: %s", enr_error_last());
	free(path);
	return cfg;
}

static int load_err(const char *content, int mode)
{
	char *path = test_write_file(dir, "config.ini", content, mode);
	struct enr_config *cfg = NULL;
	int rc = enr_config_load(&cfg, path);

	assert_null(cfg);
	free(path);
	return rc;
}

static void reads_sections_and_keys(void **state)
{
	struct enr_config *cfg;
	long days;
	bool enc;

	(void)state;
	cfg = load_ok("; comment\n[vendor.tesla]\nclient_id = abc\nauthorize_url = http://x/a\n"
	              "[ui]\nexpiring_days = 14\n[store]\nencryption = off\n",
	              0644);
	assert_string_equal(enr_config_get(cfg, "vendor.tesla", "client_id"), "abc");
	assert_string_equal(enr_config_file_name(cfg), enr_config_path(cfg));
	assert_null(enr_config_get(cfg, "vendor.tesla", "client_secret"));
	assert_null(enr_config_get(cfg, "vendor.sma", "client_id"));
	assert_int_equal(enr_config_get_long(&days, cfg, "ui", "expiring_days", 7, 0, 365), 0);
	assert_int_equal(days, 14);
	assert_int_equal(enr_config_get_bool(&enc, cfg, "store", "encryption", true), 0);
	assert_false(enc);
	assert_int_equal(enr_config_warning_count(cfg), 0);
	enr_config_free(cfg);
}

static void defaults_and_bad_numbers(void **state)
{
	struct enr_config *cfg;
	long days;
	bool b;

	(void)state;
	cfg = load_ok("[ui]\nexpiring_days = soon\n[store]\nencryption = maybe\n", 0600);
	assert_int_equal(enr_config_get_long(&days, cfg, "ui", "expiring_days", 7, 0, 365),
	                 ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "expiring_days"));
	assert_int_equal(enr_config_get_long(&days, cfg, "ui", "absent", 7, 0, 365), 0);
	assert_int_equal(days, 7);
	assert_int_equal(enr_config_get_bool(&b, cfg, "store", "encryption", true), ENR_E_CONFIG);
	enr_config_free(cfg);
}

static void unknown_keys_and_sections_warn_with_line(void **state)
{
	struct enr_config *cfg;

	(void)state;
	cfg = load_ok("[ui]\nexpiring_days = 3\ncolour = blue\n[frobnicate]\nx = 1\n", 0600);
	assert_int_equal(enr_config_warning_count(cfg), 2);
	assert_non_null(strstr(enr_config_warning(cfg, 0), "config.ini:3: unknown key 'colour'"));
	assert_non_null(
	    strstr(enr_config_warning(cfg, 1), "config.ini:5: unknown section [frobnicate]"));
	assert_null(enr_config_warning(cfg, 2));
	enr_config_free(cfg);
}

static void syntax_error_names_file_and_line(void **state)
{
	(void)state;
	assert_int_equal(load_err("[ui]\nexpiring_days = 3\nthis line is wrong\n", 0600),
	                 ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "config.ini:3:"));
	assert_int_equal(enr_error_exit_code(ENR_E_PARSE), 2);
}

static void overlong_line_is_refused(void **state)
{
	char content[600] = "[ui]\nexpiring_days = 3\n[derapi]\napi_url = https://";

	(void)state;
	memset(content + strlen(content), 'a', 400);
	strcat(content, "\n");
	assert_int_equal(load_err(content, 0600), ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "config.ini:4: line too long"));
}

/* A NUL would cut a line or a secret short without a word: refused, with the line. */
static void nul_bytes_are_refused(void **state)
{
	static const char content[] = "[ui]\nexpiring_days = 3\n[derapi]\napi_url = "
	                              "https://api.derapi.test\0.evil\n";
	struct enr_config *cfg = NULL;
	char *path = NULL, *secret = NULL;
	FILE *f;

	(void)state;
	assert_true(asprintf(&path, "%s/config.ini", dir) > 0);
	f = fopen(path, "w");
	assert_non_null(f);
	fwrite(content, 1, sizeof(content) - 1, f);
	fclose(f);
	assert_int_equal(enr_config_load(&cfg, path), ENR_E_PARSE);
	assert_null(cfg);
	assert_non_null(strstr(enr_error_last(), "config.ini:4: a NUL byte"));
	free(path);

	assert_true(asprintf(&path, "%s/nul.secret", dir) > 0);
	f = fopen(path, "w");
	assert_non_null(f);
	fwrite("secret-one\0tail", 1, 16, f);
	fclose(f);
	free(path);
	cfg = load_ok("[vendor.tesla]\nclient_secret_file = nul.secret\n", 0600);
	assert_int_equal(enr_config_get_secret(&secret, cfg, "vendor.tesla", "client_secret"),
	                 ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "NUL byte"));
	assert_null(secret);
	enr_config_free(cfg);
}

static void missing_explicit_file_is_an_error(void **state)
{
	struct enr_config *cfg = NULL;
	char path[600];

	(void)state;
	snprintf(path, sizeof(path), "%s/nope/config.ini", dir);
	assert_int_equal(enr_config_load(&cfg, path), ENR_E_NOTFOUND);
	assert_null(cfg);
	assert_non_null(strstr(enr_error_last(), "nope/config.ini"));
	assert_int_equal(enr_error_exit_code(ENR_E_NOTFOUND), 2);
}

static void directory_is_not_a_config(void **state)
{
	struct enr_config *cfg = NULL;

	(void)state;
	assert_int_equal(enr_config_load(&cfg, dir), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "not a regular file"));
}

static void missing_default_file_is_empty(void **state)
{
	struct enr_config *cfg = NULL;

	(void)state;
	assert_int_equal(enr_config_load(&cfg, NULL), 0);
	assert_non_null(cfg);
	assert_null(enr_config_path(cfg));
	assert_null(enr_config_get(cfg, "ui", "expiring_days"));
	/* Messages still name the file to create. */
	assert_non_null(strstr(enr_config_file_name(cfg), "derenroll/config.ini"));
	enr_config_free(cfg);
	/* One made in memory is just "config.ini". */
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_string_equal(enr_config_file_name(cfg), "config.ini");
	enr_config_free(cfg);
}

static void default_file_is_found_in_xdg_config_home(void **state)
{
	struct enr_config *cfg = NULL;
	char cdir[600];

	(void)state;
	snprintf(cdir, sizeof(cdir), "%s/derenroll", getenv("XDG_CONFIG_HOME"));
	mkdir(getenv("XDG_CONFIG_HOME"), 0700);
	mkdir(cdir, 0700);
	free(test_write_file(cdir, "config.ini", "[ui]\nexpiring_days = 9\n", 0600));
	assert_int_equal(enr_config_load(&cfg, NULL), 0);
	assert_string_equal(enr_config_get(cfg, "ui", "expiring_days"), "9");
	enr_config_free(cfg);
	snprintf(cdir, sizeof(cdir), "%s/derenroll/config.ini", getenv("XDG_CONFIG_HOME"));
	unlink(cdir);
}

static void readable_config_with_inline_secret_is_refused(void **state)
{
	(void)state;
	assert_int_equal(load_err("[vendor.tesla]\nclient_secret = s3cr3t-value\n", 0644),
	                 ENR_E_PERM);
	assert_non_null(strstr(enr_error_last(), "chmod 600"));
	assert_non_null(strstr(enr_error_last(), "client_secret"));
	assert_null(strstr(enr_error_last(), "s3cr3t-value"));
	assert_int_equal(load_err("[relay]\nsecret = abcdefgh\n", 0640), ENR_E_PERM);
}

static void readable_config_without_secrets_is_fine(void **state)
{
	struct enr_config *cfg;

	(void)state;
	cfg = load_ok("[vendor.tesla]\nclient_id = abc\nclient_secret_file = tesla.secret\n", 0644);
	enr_config_free(cfg);
}

static void secret_from_file_relative_to_config(void **state)
{
	struct enr_config *cfg;
	char *secret = NULL;

	(void)state;
	free(test_write_file(dir, "tesla.secret", "  file-secret-123\n\n", 0600));
	cfg = load_ok("[vendor.tesla]\nclient_secret_file = tesla.secret\n", 0644);
	assert_int_equal(enr_config_get_secret(&secret, cfg, "vendor.tesla", "client_secret"), 0);
	assert_string_equal(secret, "file-secret-123");
	enr_config_free_secret(secret);
	/* It is now registered for redaction. */
	enr_error_set(ENR_E_REJECTED, "got file-secret-123");
	assert_string_equal(enr_error_last(), "got [redacted]");
	enr_config_free(cfg);
}

static void empty_or_missing_secret_file_is_a_config_error(void **state)
{
	struct enr_config *cfg;
	char *secret = NULL;

	(void)state;
	free(test_write_file(dir, "empty.secret", " \n", 0600));
	cfg = load_ok("[vendor.tesla]\nclient_secret_file = empty.secret\n"
	              "[vendor.sma]\nclient_secret_file = /nonexistent/sma.secret\n",
	              0600);
	assert_int_equal(enr_config_get_secret(&secret, cfg, "vendor.tesla", "client_secret"),
	                 ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "empty"));
	assert_int_equal(enr_config_get_secret(&secret, cfg, "vendor.sma", "client_secret"),
	                 ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "/nonexistent/sma.secret"));
	assert_null(secret);
	enr_config_free(cfg);
}

static int fake_store(char **out, const char *name, void *ctx)
{
	int *calls = ctx;

	(*calls)++;
	if (strcmp(name, "derapi.client_secret") == 0) {
		*out = strdup("from-the-store-42");
		return 0;
	}
	return ENR_E_NOTFOUND;
}

static void secret_falls_back_to_the_store(void **state)
{
	struct enr_config *cfg;
	char *secret = NULL;
	int calls = 0;

	(void)state;
	cfg = load_ok("[derapi]\nclient_id = id\n", 0600);
	enr_config_set_secret_source(cfg, fake_store, &calls);
	assert_int_equal(enr_config_get_secret(&secret, cfg, "derapi", "client_secret"), 0);
	assert_string_equal(secret, "from-the-store-42");
	enr_config_free_secret(secret);
	secret = NULL;
	assert_int_equal(enr_config_get_secret(&secret, cfg, "relay", "secret"), ENR_E_NOTFOUND);
	assert_non_null(strstr(enr_error_last(), "derenroll secret set relay.secret"));
	assert_int_equal(calls, 2);
	enr_config_free(cfg);
}

static void inline_secret_wins_and_is_redacted(void **state)
{
	struct enr_config *cfg;
	char *secret = NULL;

	(void)state;
	cfg = load_ok("[vendor.enphase]\napi_key = inline-key-999\n", 0600);
	enr_error_set(ENR_E_REJECTED, "key inline-key-999");
	assert_string_equal(enr_error_last(), "key [redacted]");
	assert_int_equal(enr_config_get_secret(&secret, cfg, "vendor.enphase", "api_key"), 0);
	assert_string_equal(secret, "inline-key-999");
	enr_config_free_secret(secret);
	enr_config_free(cfg);
}

static void set_overrides_and_write_round_trips(void **state)
{
	struct enr_config *cfg = NULL, *back = NULL;
	char path[600];
	struct stat st;

	(void)state;
	assert_int_equal(enr_config_new(&cfg), 0);
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "client_id", "one"), 0);
	assert_int_equal(enr_config_set(cfg, "derapi", "flow_id", "flow-1"), 0);
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "client_secret", "sec-abc-123"), 0);
	assert_int_equal(enr_config_set(cfg, "vendor.tesla", "client_id", "two"), 0);
	assert_string_equal(enr_config_get(cfg, "vendor.tesla", "client_id"), "two");
	snprintf(path, sizeof(path), "%s/sub/written.ini", dir);
	assert_int_equal(enr_config_write(cfg, path), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(enr_config_load(&back, path), 0);
	assert_string_equal(enr_config_get(back, "vendor.tesla", "client_id"), "two");
	assert_string_equal(enr_config_get(back, "vendor.tesla", "client_secret"), "sec-abc-123");
	assert_string_equal(enr_config_get(back, "derapi", "flow_id"), "flow-1");
	assert_int_equal(enr_config_warning_count(back), 0);
	enr_config_free(back);
	enr_config_free(cfg);
}

/* Found by tests/fuzz (config): the loader's last assignment is the one that counts. */
static void save_key_sets_what_the_loader_reads(void **state)
{
	static const char *const files[] = {
	    "[http]\ntimeout = 5\n[ui]\nexpiring_days = 5\n[http]\ntimeout = 7\n",
	    "[http]\ntimeout = 5\n  7\n[ui]\n",
	    "[http]\ntimeout: 7\n",
	    /* The indented "[ui]" continues max_body's value: not a section. */
	    "[http]\nmax_body = 5\n  [ui]\n",
	};
	struct enr_config *cfg = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *path = test_write_file(dir, "set.ini", files[i], 0600);
		assert_int_equal(enr_config_save_key(path, "http", "timeout", "42"), 0);
		assert_int_equal(enr_config_load(&cfg, path), 0);
		if (strcmp(enr_config_get(cfg, "http", "timeout"), "42") != 0)
			fail_msg("file %zu: timeout is %s after setting it to 42", i,
			         enr_config_get(cfg, "http", "timeout"));
		if (i == 0)
			assert_string_equal(enr_config_get(cfg, "ui", "expiring_days"), "5");
		enr_config_free(cfg);
		free(path);
	}
}

/* A NUL would cut the rewritten file there: the file is left alone. */
static void save_key_refuses_a_file_with_a_nul(void **state)
{
	static const char text[] = "[ui]\n; a\0b\nexpiring_days = 5\n";
	char *path = test_write_file(dir, "nul.ini", "", 0600);
	char *back;
	FILE *f = fopen(path, "w");

	(void)state;
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, sizeof(text) - 1, f), sizeof(text) - 1);
	fclose(f);
	assert_int_equal(enr_config_save_key(path, "ui", "expiring_days", "7"), ENR_E_CONFIG);
	assert_non_null(strstr(enr_error_last(), "NUL"));
	back = test_read_file(path);
	assert_memory_equal(back, text, sizeof(text) - 1);
	free(back);
	free(path);
}

static void save_key_keeps_the_rest_of_the_file(void **state)
{
	const char *original = "; company settings\n[derapi]\nclient_id = cid ; inline comment\n"
	                       "flow_id = old\n\n[ui]\nexpiring_days = 5\n";
	char *path = test_write_file(dir, "keep.ini", original, 0640);
	struct enr_config *cfg = NULL;
	char *text;
	struct stat st;

	(void)state;
	assert_int_equal(enr_config_save_key(path, "derapi", "flow_id", "new-flow"), 0);
	assert_int_equal(enr_config_save_key(path, "derapi", "program_id", "prog"), 0);
	assert_int_equal(enr_config_save_key(path, "relay", "url", "https://r.example"), 0);
	text = test_read_file(path);
	assert_non_null(strstr(text, "; company settings\n"));
	assert_non_null(strstr(text, "client_id = cid ; inline comment\n"));
	assert_non_null(strstr(text, "flow_id = new-flow\n"));
	assert_null(strstr(text, "flow_id = old"));
	assert_non_null(strstr(text, "[relay]\nurl = https://r.example\n"));
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	assert_int_equal(enr_config_load(&cfg, path), 0);
	assert_string_equal(enr_config_get(cfg, "derapi", "flow_id"), "new-flow");
	assert_string_equal(enr_config_get(cfg, "derapi", "program_id"), "prog");
	assert_string_equal(enr_config_get(cfg, "ui", "expiring_days"), "5");
	enr_config_free(cfg);
	free(path);
}

static void datadir_prefers_the_environment(void **state)
{
	char *path;

	(void)state;
	setenv("DERENROLL_DATADIR", "/opt/somewhere", 1);
	assert_string_equal(enr_config_datadir(), "/opt/somewhere");
	path = enr_config_asset_path("vendors.json");
	assert_string_equal(path, "/opt/somewhere/vendors.json");
	free(path);
	unsetenv("DERENROLL_DATADIR");
	/* An uninstalled build falls back to the source tree's assets/. */
	path = enr_config_asset_path("vendors.json");
	assert_int_equal(access(path, R_OK), 0);
	free(path);
}

static void secret_keys_are_known(void **state)
{
	(void)state;
	assert_true(enr_config_is_secret_key("client_secret"));
	assert_true(enr_config_is_secret_key("api_key"));
	assert_true(enr_config_is_secret_key("secret"));
	assert_false(enr_config_is_secret_key("client_id"));
	assert_false(enr_config_is_secret_key("url"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
static const struct CMUnitTest tests[] = {
    T(reads_sections_and_keys),
    T(defaults_and_bad_numbers),
    T(unknown_keys_and_sections_warn_with_line),
    T(syntax_error_names_file_and_line),
    T(nul_bytes_are_refused),
    T(overlong_line_is_refused),
    T(missing_explicit_file_is_an_error),
    T(directory_is_not_a_config),
    T(missing_default_file_is_empty),
    T(default_file_is_found_in_xdg_config_home),
    T(readable_config_with_inline_secret_is_refused),
    T(readable_config_without_secrets_is_fine),
    T(secret_from_file_relative_to_config),
    T(empty_or_missing_secret_file_is_a_config_error),
    T(secret_falls_back_to_the_store),
    T(inline_secret_wins_and_is_redacted),
    T(set_overrides_and_write_round_trips),
    T(save_key_keeps_the_rest_of_the_file),
    T(save_key_sets_what_the_loader_reads),
    T(save_key_refuses_a_file_with_a_nul),
    T(datadir_prefers_the_environment),
    T(secret_keys_are_known),
};

TEST_MAIN(tests)
