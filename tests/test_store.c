#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "helpers.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "derenroll/store.h"
#include "store/internal.h"

#define PASS "correct horse battery staple"

static const struct enr_store_kdf fast_kdf = {4, 1, 1};
static char dir[512];
static char path[600];

/* ---- wrapped system calls: a disk that fills up ---- */

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __real_fsync(int fd);
int __wrap_fsync(int fd);

static long write_budget = -1; /* bytes that may still be written; -1: no limit */
static bool fsync_fails;

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	if (write_budget >= 0) {
		if (write_budget == 0) {
			errno = ENOSPC;
			return -1;
		}
		if ((size_t)write_budget < n)
			n = (size_t)write_budget;
		write_budget -= (long)n;
	}
	return __real_write(fd, buf, n);
}

int __wrap_fsync(int fd)
{
	if (fsync_fails) {
		errno = ENOSPC;
		return -1;
	}
	return __real_fsync(fd);
}

/* ---- helpers ---- */

static int setup(void **state)
{
	static int n;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/t%d/derenroll", getenv("HOME"), n++);
	snprintf(path, sizeof(path), "%s/store", dir);
	write_budget = -1;
	fsync_fails = false;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	enr_log_clear_secrets();
	return 0;
}

static struct enr_store_options options(const char *passphrase)
{
	struct enr_store_options o = {0};

	o.path = path;
	o.passphrase = passphrase;
	o.kdf = &fast_kdf;
	return o;
}

static struct enr_store *open_ok(const char *passphrase)
{
	struct enr_store_options o = options(passphrase);
	struct enr_store *store = NULL;
	int rc = enr_store_open(&store, &o);

	if (rc != 0)
		fail_msg("open: %s", enr_error_last());
	return store;
}

static unsigned char *read_bytes(const char *file, size_t *len)
{
	struct stat st;
	unsigned char *buf;
	int fd = open(file, O_RDONLY);

	if (fd < 0)
		return NULL;
	fstat(fd, &st);
	buf = malloc((size_t)st.st_size + 1);
	*len = (size_t)read(fd, buf, (size_t)st.st_size);
	close(fd);
	return buf;
}

static void write_bytes(const char *file, const void *data, size_t len)
{
	int fd = open(file, O_WRONLY | O_TRUNC | O_CREAT, 0600);

	assert_true(fd >= 0);
	assert_int_equal(__real_write(fd, data, len), (ssize_t)len);
	close(fd);
}

static bool exists(const char *file)
{
	struct stat st;

	return stat(file, &st) == 0;
}

static char *suffixed(const char *suffix)
{
	static char buf[700];

	snprintf(buf, sizeof(buf), "%s%s", path, suffix);
	return buf;
}

static void set(char **field, const char *fmt, int n)
{
	char buf[256];

	snprintf(buf, sizeof(buf), fmt, n);
	assert_int_equal(enr_record_set(field, buf), 0);
}

/* Vendor, method and credentials of a sample of each type; %1$d is its number. */
static const char *const sample_json[] = {
    [ENR_CRED_OAUTH] = "\"vendor\":\"tesla\",\"method\":\"oauth\",\"credentials\":{\"type\":"
                       "\"oauth\",\"access_token\":\"eyJhbGciOi.ACCESS-%1$d.sig\","
                       "\"refresh_token\":\"NA_REFRESH-%1$d\",\"token_type\":\"Bearer\","
                       "\"scope\":\"openid offline_access energy_device_data\","
                       "\"id_token\":\"eyJ.IDTOKEN-%1$d.x\"}",
    [ENR_CRED_API_KEY] = "\"vendor\":\"solaredge\",\"method\":\"key\",\"credentials\":{\"type\":"
                         "\"api_key\",\"api_key\":\"APIKEY-%1$d-L4QLVQ1LOKCQX2193VSEICXW61\","
                         "\"account_key\":\"ACCOUNTKEY-%1$d\"}",
    [ENR_CRED_KEY_PAIR] =
        "\"vendor\":\"solis\",\"method\":\"key\",\"credentials\":{\"type\":"
        "\"key_pair\",\"key_id\":\"130%1$d\",\"key_secret\":\"KEYSECRET-%1$d-6a\"}",
    [ENR_CRED_PARTNER] = "\"vendor\":\"enphase\",\"method\":\"partner\",\"credentials\":{\"type\":"
                         "\"partner\",\"access_token\":\"PARTNER-ACCESS-%1$d\",\"refresh_token\":"
                         "\"PARTNER-REFRESH-%1$d\",\"api_key\":\"PARTNER-APIKEY-%1$d\"}",
    [ENR_CRED_EMAIL] =
        "\"vendor\":\"sma\",\"method\":\"email\",\"credentials\":{\"type\":\"email\","
        "\"owner_email\":\"owner%1$d@example.org\",\"access_token\":\"SMA-ACCESS-%1$d\","
        "\"refresh_token\":\"SMA-REFRESH-%1$d\"}",
    [ENR_CRED_JOIN] =
        "\"vendor\":\"derapi\",\"method\":\"join\",\"credentials\":{\"type\":\"join\","
        "\"enrollment_id\":\"enr-%1$d\",\"state\":\"active\",\"program_id\":"
        "\"prog-%1$d\",\"flow_id\":\"flow-%1$d\",\"access_token\":\"JOIN-ACCESS-%1$d\"}",
    [ENR_CRED_ACCOUNT] =
        "\"vendor\":\"solaredge\",\"method\":\"account\",\"credentials\":{\"type\":"
        "\"account\",\"site_id\":\"acct-site-%1$d\",\"secret_name\":"
        "\"vendor.solaredge.api_key\"}",
};

/* A record of each credential type, every field filled, with values unique to `n`. */
static struct enr_record *sample(enum enr_cred_type type, int n)
{
	struct enr_record *rec = NULL;
	char site[32], name[64], body[1024], json[1100];

	snprintf(body, sizeof(body), sample_json[type], n);
	snprintf(json, sizeof(json), "{\"id\":\"new\",%s}", body);
	assert_int_equal(enr_record_from_json(&rec, json), 0);
	assert_int_equal(rec->cred.type, type);
	assert_int_equal(enr_record_set(&rec->id, NULL), 0);
	set(&rec->customer, "Customer \"Zoë\" %1$d\tjob\n#J-%1$d", n);
	set(&rec->account, "sub-%d-5f3e", n);
	snprintf(site, sizeof(site), "site-%d-%d", type, n);
	snprintf(name, sizeof(name), "Home \\ %d", n);
	assert_int_equal(enr_record_add_site(rec, site, name), 0);
	snprintf(site, sizeof(site), "site-%d-%d-b", type, n);
	assert_int_equal(enr_record_add_site(rec, site, NULL), 0);
	rec->access_expires_at = 1790000000 + n;
	rec->refresh_expires_at = type == ENR_CRED_OAUTH ? 1800000000 : 0;
	rec->last_check.at = 1780000000 + n;
	rec->last_check.outcome = ENR_OUTCOME_OK;
	set(&rec->last_check.message, "%d sites found", 2);
	assert_int_equal(enr_record_set_extra(rec, "region", "eu"), 0);
	assert_int_equal(enr_record_set_extra(rec, "n", "x"), 0);
	return rec;
}

static char *json_of(const struct enr_record *rec, bool secrets)
{
	char *json = NULL;

	assert_int_equal(enr_record_to_json(&json, rec, secrets), 0);
	return json;
}

static void assert_same_record(const struct enr_record *a, const struct enr_record *b)
{
	char *ja = json_of(a, true), *jb = json_of(b, true);

	assert_string_equal(ja, jb);
	free(ja);
	free(jb);
}

static void put_ok(struct enr_store *store, struct enr_record *rec, bool expect_updated)
{
	bool updated = !expect_updated;
	int rc = enr_store_put(&updated, store, rec);

	if (rc != 0)
		fail_msg("put: %s", enr_error_last());
	assert_int_equal(updated, expect_updated);
}

/* A small record that a child process can make from a number alone. */
static struct enr_record *numbered(const char *prefix, int i)
{
	struct enr_record *rec = NULL;
	char buf[64];

	enr_record_new(&rec);
	snprintf(buf, sizeof(buf), "%s%d", prefix, i);
	enr_record_set(&rec->customer, buf);
	enr_record_set(&rec->vendor, "solaredge");
	enr_record_set(&rec->method, "key");
	rec->cred.type = ENR_CRED_API_KEY;
	snprintf(buf, sizeof(buf), "key-%s%d", prefix, i);
	enr_record_set(&rec->cred.api_key, buf);
	snprintf(buf, sizeof(buf), "site-%s%d", prefix, i);
	enr_record_add_site(rec, buf, NULL);
	return rec;
}

static const struct enr_record *find_customer(const struct enr_store *store, const char *customer)
{
	for (size_t i = 0; i < enr_store_count(store); i++)
		if (strcmp(enr_store_at(store, i)->customer, customer) == 0)
			return enr_store_at(store, i);
	return NULL;
}

/* ---- tests ---- */

static void every_credential_type_round_trips(void **state)
{
	struct enr_record *recs[7];
	struct enr_store *store = open_ok(PASS);
	struct enr_record *got = NULL;

	(void)state;
	for (int t = 0; t < 7; t++) {
		recs[t] = sample((enum enr_cred_type)(t + 1), t);
		put_ok(store, recs[t], false);
		assert_non_null(recs[t]->id);
		assert_int_equal(strlen(recs[t]->id), 10);
		assert_true(recs[t]->created_at > 0);
	}
	enr_store_free(store);

	store = open_ok(PASS);
	assert_int_equal(enr_store_count(store), 7);
	for (int t = 0; t < 7; t++) {
		assert_int_equal(enr_store_get(&got, store, recs[t]->id), 0);
		assert_same_record(got, recs[t]);
		assert_int_equal(got->cred.type, t + 1);
		enr_record_free(got);
		/* Ids are case-insensitive. */
		for (char *p = recs[t]->id; *p; p++)
			*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		assert_int_equal(enr_store_get(&got, store, recs[t]->id), 0);
		enr_record_free(got);
	}
	assert_int_equal(enr_store_get(&got, store, "0000000000"), ENR_E_NOTFOUND);
	enr_store_free(store);
	for (int t = 0; t < 7; t++)
		enr_record_free(recs[t]);
}

static void metadata_only_leaves_secrets_out(void **state)
{
	struct enr_store_options o = options(NULL);
	struct enr_record *rec = sample(ENR_CRED_OAUTH, 1), *got = NULL;
	struct enr_store *store = open_ok(PASS);
	char *public_json, *got_json, *value = NULL;

	(void)state;
	put_ok(store, rec, false);
	assert_int_equal(enr_store_secret_set(store, "relay.secret", "relay-secret-value"), 0);
	enr_store_free(store);

	o.passphrase = PASS;
	o.metadata_only = true;
	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_int_equal(enr_store_count(store), 1);
	assert_int_equal(enr_store_get(&got, store, rec->id), 0);
	assert_null(got->cred.tokens.access_token);
	assert_null(got->cred.tokens.refresh_token);
	assert_null(got->cred.tokens.id_token);
	assert_string_equal(got->cred.tokens.scope, rec->cred.tokens.scope);
	assert_int_equal(got->cred.type, ENR_CRED_OAUTH);
	/* That it holds a refresh token is known without the token (for list's status). */
	assert_true(got->cred.refreshable);
	public_json = json_of(rec, false);
	got_json = json_of(got, false);
	assert_string_equal(got_json, public_json);
	assert_null(strstr(public_json, "ACCESS-1"));
	assert_null(strstr(public_json, "REFRESH-1"));
	assert_int_equal(enr_store_put(NULL, store, rec), ENR_E_USAGE);
	assert_int_equal(enr_store_secret_get(&value, store, "relay.secret"), ENR_E_USAGE);
	free(public_json);
	free(got_json);
	enr_record_free(got);
	enr_record_free(rec);
	enr_store_free(store);
}

static void record_json_round_trips_and_escapes(void **state)
{
	struct enr_record *rec = sample(ENR_CRED_JOIN, 3), *back = NULL, *bad = NULL;
	struct json_object *obj = NULL, *v;
	char *json;

	(void)state;
	assert_int_equal(enr_record_set(&rec->id, "abcdefgh12"), 0);
	assert_int_equal(enr_record_set(&rec->customer, "quote\" back\\ ctl\x01 nl\n é"), 0);
	json = json_of(rec, true);
	assert_null(strchr(json, '\n'));
	assert_int_equal(enr_record_from_json(&back, json), 0);
	assert_same_record(back, rec);
	assert_int_equal(enr_record_to_json_object(&obj, rec, false), 0);
	assert_true(json_object_object_get_ex(obj, "customer", &v));
	assert_string_equal(json_object_get_string(v), rec->customer);
	assert_true(json_object_object_get_ex(obj, "credentials", &v));
	assert_false(json_object_object_get_ex(v, "access_token", NULL));
	assert_true(json_object_object_get_ex(v, "enrollment_id", NULL));
	json_object_put(obj);
	assert_int_equal(enr_record_from_json(&bad, "{\"id\":\"x\",\"vendor\":3}"), ENR_E_PARSE);
	assert_non_null(strstr(enr_error_last(), "vendor"));
	assert_null(bad);
	free(json);
	enr_record_free(back);
	enr_record_free(rec);
}

static void wrong_passphrase_leaves_file_untouched(void **state)
{
	struct enr_store_options o = options("not the passphrase");
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_API_KEY, 1);
	unsigned char *before, *after;
	size_t before_len, after_len;

	(void)state;
	put_ok(store, rec, false);
	enr_store_free(store);
	before = read_bytes(path, &before_len);
	assert_non_null(before);

	store = NULL;
	assert_int_equal(enr_store_open(&store, &o), ENR_E_PASSPHRASE);
	assert_null(store);
	assert_non_null(strstr(enr_error_last(), "wrong passphrase"));
	assert_int_equal(enr_error_exit_code(ENR_E_PASSPHRASE), 4);
	o.passphrase = NULL; /* and no way to ask */
	assert_int_equal(enr_store_open(&store, &o), ENR_E_PASSPHRASE);

	after = read_bytes(path, &after_len);
	assert_int_equal(after_len, before_len);
	assert_memory_equal(after, before, before_len);
	assert_false(exists(suffixed(".tmp")));
	free(before);
	free(after);
	enr_record_free(rec);
}

static bool contains(const unsigned char *hay, size_t len, const char *needle)
{
	return needle && memmem(hay, len, needle, strlen(needle)) != NULL;
}

static void no_secret_or_name_on_disk(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *recs[7];
	const char *files[] = {path, suffixed(".bak")};
	unsigned char *bytes;
	size_t len;

	(void)state;
	for (int t = 0; t < 7; t++) {
		recs[t] = sample((enum enr_cred_type)(t + 1), 40 + t);
		assert_int_equal(enr_record_set(&recs[t]->customer, "Anneliese Sonnenschein"), 0);
		put_ok(store, recs[t], false);
	}
	assert_int_equal(
	    enr_store_secret_set(store, "vendor.tesla.client_secret", "ta-secret-93c1"), 0);
	enr_store_free(store);
	for (size_t f = 0; f < 2; f++) {
		char *copy = strdup(files[f]);
		bytes = read_bytes(copy, &len);
		assert_non_null(bytes);
		assert_false(contains(bytes, len, "Anneliese"));
		assert_false(contains(bytes, len, "ta-secret-93c1"));
		assert_false(contains(bytes, len, "vendor.tesla"));
		for (int t = 0; t < 7; t++) {
			const struct enr_credentials *c = &recs[t]->cred;
			assert_false(contains(bytes, len, c->tokens.access_token));
			assert_false(contains(bytes, len, c->tokens.refresh_token));
			assert_false(contains(bytes, len, c->tokens.id_token));
			assert_false(contains(bytes, len, c->api_key));
			assert_false(contains(bytes, len, c->account_key));
			assert_false(contains(bytes, len, c->key_secret));
			assert_false(contains(bytes, len, c->owner_email));
			assert_false(contains(bytes, len, recs[t]->account));
		}
		free(bytes);
		free(copy);
	}
	for (int t = 0; t < 7; t++)
		enr_record_free(recs[t]);
}

static void expect_open_fails(int code)
{
	struct enr_store_options o = options(PASS);
	struct enr_store *store = NULL;

	assert_int_equal(enr_store_open(&store, &o), code);
	assert_null(store);
	if (code == ENR_E_CORRUPT)
		assert_non_null(strstr(enr_error_last(), "store.bak"));
}

static void flipped_bytes_are_detected(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_OAUTH, 1);
	unsigned char *good, *bad, *now;
	size_t len, len2;
	size_t body[] = {STORE_HEADER_SIZE, STORE_HEADER_SIZE + 1, STORE_HEADER_SIZE + 100};

	(void)state;
	put_ok(store, rec, false);
	good = read_bytes(path, &len);
	assert_true(len > STORE_HEADER_SIZE + 200);

	/* Every byte of the header, some of the ciphertext, and the tag. */
	for (size_t i = 0; i < STORE_HEADER_SIZE + 3 + STORE_TAG_SIZE; i++) {
		size_t at = i < STORE_HEADER_SIZE       ? i
		            : i < STORE_HEADER_SIZE + 3 ? body[i - STORE_HEADER_SIZE]
		                                        : len - (i - STORE_HEADER_SIZE - 3) - 1;
		bad = malloc(len);
		memcpy(bad, good, len);
		bad[at] ^= 0x01;
		write_bytes(path, bad, len);
		/* Without its magic it is not known for a store (no advice about it). */
		expect_open_fails(at < 8 ? ENR_E_STORE : ENR_E_CORRUPT);
		/* Never overwritten: a store opened before sees the change and refuses to write. */
		if (i % 16 == 0 && at < STORE_HEADER_SIZE) {
			assert_int_equal(enr_store_secret_set(store, "x.y", "value"),
			                 at < 8 ? ENR_E_STORE : ENR_E_CORRUPT);
			now = read_bytes(path, &len2);
			assert_int_equal(len2, len);
			assert_memory_equal(now, bad, len);
			free(now);
		}
		free(bad);
	}
	write_bytes(path, good, len);
	enr_store_free(store);
	store = open_ok(PASS);
	assert_int_equal(enr_store_count(store), 1);
	enr_store_free(store);
	free(good);
	enr_record_free(rec);
}

static void truncated_files_are_refused(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_EMAIL, 1), *rec2 = sample(ENR_CRED_API_KEY, 2);
	struct enr_store_options plain = options(NULL);
	unsigned char *good, *now;
	size_t len, now_len, cut;
	char *nl;

	(void)state;
	put_ok(store, rec, false);
	put_ok(store, rec2, false);
	enr_store_free(store);
	good = read_bytes(path, &len);
	size_t cuts[] = {0,
	                 1,
	                 8,
	                 40,
	                 STORE_HEADER_SIZE - 1,
	                 STORE_HEADER_SIZE,
	                 STORE_HEADER_SIZE + STORE_TAG_SIZE - 1,
	                 len / 2,
	                 len - STORE_TAG_SIZE,
	                 len - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		write_bytes(path, good, cuts[i]);
		expect_open_fails(ENR_E_CORRUPT);
		now = read_bytes(path, &now_len);
		assert_int_equal(now_len, cuts[i]);
		free(now);
	}
	free(good);

	/* A plain store cut at a line boundary or inside a line. */
	unlink(path);
	plain.plaintext = true;
	assert_int_equal(enr_store_open(&store, &plain), 0);
	put_ok(store, rec, false);
	put_ok(store, rec2, false);
	enr_store_free(store);
	good = read_bytes(path, &len);
	good[len] = '\0';
	nl = strrchr((char *)good, '\n');
	*nl = '\0';
	nl = strrchr((char *)good, '\n');
	cut = (size_t)(nl - (char *)good) + 1;
	write_bytes(path, good, cut);
	expect_open_fails(ENR_E_CORRUPT);
	write_bytes(path, good, cut - 5);
	expect_open_fails(ENR_E_CORRUPT);
	write_bytes(path, "", 0);
	expect_open_fails(ENR_E_CORRUPT);
	write_bytes(path, "garbage", 7);
	expect_open_fails(ENR_E_STORE);
	assert_non_null(strstr(enr_error_last(), "is not a derenroll credential store"));
	free(good);
	enr_record_free(rec);
	enr_record_free(rec2);
}

static void header_with(unsigned char *h, unsigned log2_n, unsigned char version)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned dlen;

	h[8] = version;
	h[11] = (unsigned char)log2_n;
	EVP_Digest(h, 64, digest, &dlen, EVP_sha256(), NULL);
	memcpy(h + 64, digest, 16);
}

static void absurd_parameters_and_newer_formats_are_refused(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_KEY_PAIR, 1);
	unsigned char *good;
	size_t len;
	struct enr_store_options o = options(PASS);
	struct enr_store_kdf silly = {30, 8, 1};

	(void)state;
	put_ok(store, rec, false);
	enr_store_free(store);
	good = read_bytes(path, &len);
	header_with(good, 40, 1);
	write_bytes(path, good, len);
	expect_open_fails(ENR_E_CORRUPT);
	assert_non_null(strstr(enr_error_last(), "absurd"));
	header_with(good, 4, 2);
	write_bytes(path, good, len);
	expect_open_fails(ENR_E_STORE);
	assert_non_null(strstr(enr_error_last(), "newer"));

	/* A plain store of a newer schema. */
	write_bytes(
	    path, "{\"format\":\"derenroll-store\",\"schema\":2,\"records\":0}\n{\"secrets\":{}}\n",
	    68);
	expect_open_fails(ENR_E_STORE);
	o.kdf = &silly;
	assert_int_equal(enr_store_open(&store, &o), ENR_E_USAGE);
	free(good);
	enr_record_free(rec);
}

/* Found by tests/fuzz (store): a record without credentials (a hand-edited
 * plain store) reads, so writing it must not make the store unreadable. */
static void record_without_credentials_survives_a_write(void **state)
{
	static const char edited[] =
	    "{\"format\":\"derenroll-store\",\"schema\":1,\"records\":1}\n{\"secrets\":{}}\n"
	    "{\"id\":\"aaaaaaaaaa\",\"customer\":\"edited\",\"vendor\":\"solaredge\","
	    "\"method\":\"key\"}\n{\"id\":\"aaaaaaaaaa\",\"credentials\":{}}\n";
	struct enr_store_options o = options(NULL);
	struct enr_store *store = NULL;
	struct enr_record *rec = numbered("r", 1);

	(void)state;
	o.plaintext = true;
	assert_int_equal(enr_store_open(&store, &o), 0);
	put_ok(store, rec, false);
	enr_store_free(store);
	write_bytes(path, edited, sizeof(edited) - 1);

	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_int_equal(enr_store_count(store), 1);
	enr_record_free(rec);
	rec = numbered("r", 2);
	put_ok(store, rec, false);
	enr_store_free(store);

	if (enr_store_open(&store, &o) != 0)
		fail_msg("the store no longer opens: %s", enr_error_last());
	assert_int_equal(enr_store_count(store), 2);
	assert_string_equal(enr_store_at(store, 0)->customer, "edited");
	assert_int_equal(enr_store_at(store, 0)->cred.type, ENR_CRED_NONE);
	enr_store_free(store);
	enr_record_free(rec);
}

/* Found by tests/fuzz (store): an extra's key is written escaped, as its value is. */
static void extra_keys_with_quotes_and_newlines_survive(void **state)
{
	struct enr_store_options o = options(NULL);
	struct enr_store *store = NULL;
	struct enr_record *rec = numbered("r", 1);

	(void)state;
	o.plaintext = true;
	assert_int_equal(enr_record_set_extra(rec, "say \"hi\"\nthere\\", "v1"), 0);
	assert_int_equal(enr_record_set_extra(rec, "plain", "v2"), 0);
	assert_int_equal(enr_store_open(&store, &o), 0);
	put_ok(store, rec, false);
	enr_store_free(store);

	if (enr_store_open(&store, &o) != 0)
		fail_msg("the store no longer opens: %s", enr_error_last());
	assert_int_equal(enr_store_count(store), 1);
	assert_string_equal(enr_record_extra(enr_store_at(store, 0), "say \"hi\"\nthere\\"), "v1");
	assert_string_equal(enr_record_extra(enr_store_at(store, 0), "plain"), "v2");
	enr_store_free(store);
	enr_record_free(rec);
}

static void big_store_reads_on_two_threads(void **state)
{
	struct enr_store_options o = options(NULL);
	struct enr_record **recs = calloc(2101, sizeof(*recs));
	struct enr_store *store = NULL;
	unsigned char *bytes;
	char name[32], *bad;
	size_t len;

	(void)state;
	o.plaintext = true;
	assert_int_equal(enr_store_open(&store, &o), 0);
	for (int i = 0; i < 2101; i++) {
		recs[i] = numbered("r", i);
		snprintf(name, sizeof(name), "id%08d", i);
		enr_record_set(&recs[i]->id, name);
	}
	assert_int_equal(enr_store__bulk_insert(store, recs, 2101), 0);
	enr_store_free(store);
	for (int metadata_only = 0; metadata_only < 2; metadata_only++) {
		o.metadata_only = metadata_only;
		assert_int_equal(enr_store_open(&store, &o), 0);
		assert_int_equal(enr_store_count(store), 2101);
		for (int i = 0; i < 2101; i++) {
			const struct enr_record *rec = enr_store_at(store, (size_t)i);
			snprintf(name, sizeof(name), "r%d", i);
			assert_string_equal(rec->customer, name);
			snprintf(name, sizeof(name), "key-r%d", i);
			if (metadata_only)
				assert_null(rec->cred.api_key);
			else
				assert_string_equal(rec->cred.api_key, name);
		}
		enr_store_free(store);
	}
	/* A bad record in the half the second thread reads. */
	bytes = read_bytes(path, &len);
	bytes[len] = '\0';
	bad = strstr((char *)bytes, "\"customer\":\"r2050\"");
	assert_non_null(bad);
	memcpy(bad, "\"customer\":1234567", 18);
	write_bytes(path, bytes, len);
	o.metadata_only = false;
	assert_int_equal(enr_store_open(&store, &o), ENR_E_CORRUPT);
	assert_non_null(strstr(enr_error_last(), "'customer' must be a string"));
	assert_non_null(strstr(enr_error_last(), "store.bak"));
	free(bytes);
	free(recs);
}

/* ---- crash safety ---- */

static void crash_writer(int report_fd, int start)
{
	struct enr_store_options o = options(PASS);
	struct enr_store *store = NULL;
	char name[32];

	if (enr_store_open(&store, &o) < 0)
		_exit(1);
	/* The killed writer before may have stored its record and not its secret. */
	snprintf(name, sizeof(name), "%d", start - 1);
	if (start > 0 && enr_store_secret_set(store, "last", name) < 0)
		_exit(2);
	for (int i = start;; i++) {
		struct enr_record *rec = numbered("c", i);
		snprintf(name, sizeof(name), "%d", i);
		/* Two kinds of write: a record, then an app secret naming the latest. */
		if (enr_store_put(NULL, store, rec) < 0 ||
		    enr_store_secret_set(store, "last", name) < 0)
			_exit(2);
		enr_record_free(rec);
		if (__real_write(report_fd, &i, sizeof(i)) != sizeof(i))
			_exit(3);
	}
}

/* The store holds c0..c(n-1), each intact; returns n. */
static int check_prefix_state(struct enr_store *store)
{
	int n = (int)enr_store_count(store);
	char name[32], *last = NULL;

	for (int i = 0; i < n; i++) {
		const struct enr_record *rec = enr_store_at(store, (size_t)i);
		snprintf(name, sizeof(name), "c%d", i);
		assert_string_equal(rec->customer, name);
		snprintf(name, sizeof(name), "key-c%d", i);
		assert_string_equal(rec->cred.api_key, name);
	}
	/* The secret lags the records by at most the write in flight. */
	if (enr_store_secret_get(&last, store, "last") == 0) {
		assert_true(atoi(last) == n - 1 || atoi(last) == n - 2);
		free(last);
	} else {
		assert_true(n <= 1);
	}
	return n;
}

static void killed_writers_leave_old_or_new_state(void **state)
{
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	int committed = 0; /* records known to be written */
	int mid_write = 0; /* rounds killed between writing the new file and renaming it */

	(void)state;
	srand(seed);
	for (int round = 0; round < 220; round++) {
		struct enr_store *store;
		int fds[2], status, got, last = -1, n;
		pid_t pid;

		assert_int_equal(pipe(fds), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			crash_writer(fds[1], committed);
		}
		close(fds[1]);
		/* Let it reach a random point: from before its first write to a few writes in. */
		usleep((useconds_t)(rand() % 4000));
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status))
			fail_msg("round %d (seed %u): the writer exited with %d", round, seed,
			         WEXITSTATUS(status));
		while (read(fds[0], &got, sizeof(got)) == sizeof(got))
			last = got;
		close(fds[0]);

		store = open_ok(PASS);
		n = check_prefix_state(store);
		/* Everything reported written is there; at most the put in flight besides. */
		if (last >= 0)
			assert_true(n == last + 1 || n == last + 2);
		else
			assert_true(n == committed || n == committed + 1);
		if (exists(suffixed(".tmp")))
			mid_write++;
		committed = n;
		enr_store_free(store);
		if (exists(suffixed(".bak"))) {
			struct enr_store_options o = options(PASS);
			o.path = suffixed(".bak");
			assert_int_equal(enr_store_open(&store, &o), 0);
			enr_store_free(store);
		}
	}
	/* The kills did land inside writes, not only before or between them. */
	assert_true(committed > 0);
	assert_true(mid_write >= 10);
}

/* ---- concurrency ---- */

static void two_processes_add_500_each(void **state)
{
	pid_t pids[2];
	struct enr_store *store;
	char name[32];

	(void)state;
	for (int p = 0; p < 2; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			struct enr_store_options o = options(PASS);
			o.lock_timeout_ms = 120000;
			if (enr_store_open(&store, &o) < 0)
				_exit(1);
			for (int i = 0; i < 500; i++) {
				struct enr_record *rec = numbered(p ? "b" : "a", i);
				if (enr_store_put(NULL, store, rec) < 0) {
					fprintf(stderr, "child %d: %s\n", p, enr_error_last());
					_exit(2);
				}
				enr_record_free(rec);
			}
			enr_store_free(store);
			_exit(0);
		}
	}
	for (int p = 0; p < 2; p++) {
		int status;
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	store = open_ok(PASS);
	assert_int_equal(enr_store_count(store), 1000);
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "a%d", i);
		assert_non_null(find_customer(store, name));
		snprintf(name, sizeof(name), "b%d", i);
		assert_non_null(find_customer(store, name));
	}
	enr_store_free(store);
}

/* A refresh: spends refresh token rt-N and stores rt-N+1, as a rotating vendor does. */
static int refresh(struct enr_record *rec, void *ctx)
{
	const char *counter = enr_record_extra(rec, "n");
	char expected[32], next[32];
	int n = atoi(counter);

	(void)ctx;
	snprintf(expected, sizeof(expected), "rt-%d", n);
	if (strcmp(rec->cred.tokens.refresh_token, expected) != 0)
		return enr_error_set(ENR_E_REJECTED, "refresh token spent twice");
	usleep(500); /* the network call */
	snprintf(next, sizeof(next), "rt-%d", n + 1);
	enr_record_set(&rec->cred.tokens.refresh_token, next);
	snprintf(next, sizeof(next), "%d", n + 1);
	return enr_record_set_extra(rec, "n", next);
}

static void record_lock_serialises_refreshes(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_OAUTH, 1), *got = NULL;
	pid_t pids[2];

	(void)state;
	enr_record_set(&rec->cred.tokens.refresh_token, "rt-0");
	enr_record_set_extra(rec, "n", "0");
	put_ok(store, rec, false);
	for (int p = 0; p < 2; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			struct enr_store *mine;
			struct enr_store_options o = options(PASS);
			o.lock_timeout_ms = 60000;
			if (enr_store_open(&mine, &o) < 0)
				_exit(1);
			for (int i = 0; i < 40; i++) {
				if (enr_store_update(mine, rec->id, refresh, NULL) < 0) {
					fprintf(stderr, "child %d: %s\n", p, enr_error_last());
					_exit(2);
				}
			}
			enr_store_free(mine);
			_exit(0);
		}
	}
	for (int p = 0; p < 2; p++) {
		int status;
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(enr_store_reload(store), 0);
	assert_int_equal(enr_store_get(&got, store, rec->id), 0);
	assert_string_equal(got->cred.tokens.refresh_token, "rt-80");
	assert_string_equal(enr_record_extra(got, "n"), "80");
	enr_record_free(got);
	enr_record_free(rec);
	enr_store_free(store);
}

static int fail_update(struct enr_record *rec, void *ctx)
{
	(void)ctx;
	enr_record_set(&rec->customer, "changed but not saved");
	return enr_error_set(ENR_E_TRANSIENT, "network down");
}

static int keep_update(struct enr_record *rec, void *ctx)
{
	(void)ctx;
	enr_record_set(&rec->customer, "changed but not saved");
	return ENR_STORE_UNCHANGED;
}

static void locked_record_saves_in_steps(void **state)
{
	struct enr_store *store = open_ok(PASS), *other = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_OAUTH, 1), *rec2 = sample(ENR_CRED_EMAIL, 2);
	struct enr_record *got = NULL, *mine;
	struct enr_store_lock *lock = NULL;
	struct enr_store_options o = options(PASS);
	struct enr_store *impatient = NULL;

	(void)state;
	put_ok(store, rec, false);
	put_ok(store, rec2, false);
	assert_int_equal(enr_store_lock_record(&lock, store, rec->id), 0);
	mine = enr_store_lock_record_get(lock);
	/* The rotated refresh token is saved first, the check result later. */
	enr_record_set(&mine->cred.tokens.refresh_token, "rotated-1");
	assert_int_equal(enr_store_lock_save(store, lock), 0);
	assert_int_equal(enr_store_reload(other), 0);
	assert_int_equal(enr_store_get(&got, other, rec->id), 0);
	assert_string_equal(got->cred.tokens.refresh_token, "rotated-1");
	enr_record_free(got);

	/* While it is locked, another handle can neither update nor remove it ... */
	o.lock_timeout_ms = 200;
	assert_int_equal(enr_store_open(&impatient, &o), 0);
	assert_int_equal(enr_store_update(impatient, rec->id, keep_update, NULL), ENR_E_LOCKED);
	assert_non_null(strstr(enr_error_last(), "being changed"));
	assert_int_equal(enr_store_remove(impatient, rec->id), ENR_E_LOCKED);
	/* ... but other records are free. */
	assert_int_equal(enr_store_update(impatient, rec2->id, keep_update, NULL), 0);

	mine->last_check.outcome = ENR_OUTCOME_REJECTED;
	assert_int_equal(enr_store_lock_save(store, lock), 0);
	enr_store_unlock(lock);
	enr_store_unlock(NULL);

	assert_int_equal(enr_store_update(impatient, rec->id, fail_update, NULL), ENR_E_TRANSIENT);
	assert_int_equal(enr_store_update(impatient, rec->id, keep_update, NULL), 0);
	assert_int_equal(enr_store_get(&got, impatient, rec->id), 0);
	assert_string_equal(got->customer, rec->customer);
	assert_int_equal(got->last_check.outcome, ENR_OUTCOME_REJECTED);
	enr_record_free(got);
	assert_int_equal(enr_store_update(impatient, "zzzzzzzzzz", keep_update, NULL),
	                 ENR_E_NOTFOUND);
	enr_store_free(impatient);
	enr_store_free(other);
	enr_store_free(store);
	enr_record_free(rec);
	enr_record_free(rec2);
}

/* ---- the journal of new tokens ---- */

static int rename_update(struct enr_record *rec, void *ctx)
{
	return enr_record_set(&rec->customer, ctx);
}

static char *journal_file(void)
{
	static char jp[700];

	snprintf(jp, sizeof(jp), "%s.journal", path);
	return jp;
}

/* Saves `refresh` as the locked record's rotated token through the journal. */
static void save_tokens(struct enr_store *store, const char *id, const char *refresh,
                        long long expires)
{
	struct enr_store_lock *lock = NULL;
	struct enr_record *mine;

	assert_int_equal(enr_store_lock_record(&lock, store, id), 0);
	mine = enr_store_lock_record_get(lock);
	assert_int_equal(enr_record_set(&mine->cred.tokens.refresh_token, refresh), 0);
	mine->refresh_expires_at = expires;
	if (enr_store_lock_journal(store, lock, true) != 0)
		fail_msg("save tokens: %s", enr_error_last());
	enr_store_unlock(lock);
}

/* The refresh token of record `id` as a fresh open of the store sees it is (or is not) `want`. */
static void expect_token(const char *id, const char *want, bool equal)
{
	struct enr_store *fresh = open_ok(PASS);
	struct enr_record *got = NULL;

	assert_int_equal(enr_store_get(&got, fresh, id), 0);
	assert_non_null(got->cred.tokens.refresh_token);
	if (equal)
		assert_string_equal(got->cred.tokens.refresh_token, want);
	else
		assert_string_not_equal(got->cred.tokens.refresh_token, want);
	enr_record_free(got);
	enr_store_free(fresh);
}

static void new_tokens_go_to_the_journal_and_are_folded_in(void **state)
{
	struct enr_store *store = open_ok(PASS), *other, *list;
	struct enr_record *a = sample(ENR_CRED_OAUTH, 1), *b = sample(ENR_CRED_OAUTH, 2), *got;
	struct enr_store_options lo = options(PASS);
	unsigned char *before, *after;
	size_t before_len, after_len, jlen;

	(void)state;
	put_ok(store, a, false);
	put_ok(store, b, false);
	before = read_bytes(path, &before_len);
	save_tokens(store, a->id, "ROTATED-A-1", 1900000001);
	save_tokens(store, b->id, "ROTATED-B-1", 1900000002);
	save_tokens(store, a->id, "ROTATED-A-2", 1900000003);
	/* No rewrite of the store: its file is as it was. */
	after = read_bytes(path, &after_len);
	assert_int_equal(after_len, before_len);
	assert_memory_equal(after, before, before_len);
	free(after);
	/* Encrypted like the store: no token in the clear. */
	after = read_bytes(journal_file(), &jlen);
	assert_non_null(after);
	assert_null(memmem(after, jlen, "ROTATED", 7));
	free(after);

	/* A fresh open sees the newest tokens, a listing their expiry. */
	expect_token(a->id, "ROTATED-A-2", true);
	expect_token(b->id, "ROTATED-B-1", true);
	lo.metadata_only = true;
	assert_int_equal(enr_store_open(&list, &lo), 0);
	assert_int_equal(enr_store_get(&got, list, a->id), 0);
	assert_null(got->cred.tokens.refresh_token);
	assert_true(got->cred.refreshable);
	assert_int_equal(got->refresh_expires_at, 1900000003);
	enr_record_free(got);
	enr_store_free(list);

	/* The next write folds them in; the journal's entries are wiped. */
	other = open_ok(PASS);
	assert_int_equal(enr_store_update(other, b->id, rename_update, (void *)"Renamed"), 0);
	after = read_bytes(journal_file(), &jlen);
	for (size_t i = 0; i < jlen; i++)
		if (after[i])
			fail_msg("byte %zu of the journal was not wiped", i);
	free(after);
	expect_token(a->id, "ROTATED-A-2", true);
	/* And the journal goes on after the fold. */
	save_tokens(other, b->id, "ROTATED-B-2", 1900000004);
	expect_token(b->id, "ROTATED-B-2", true);
	expect_token(a->id, "ROTATED-A-2", true);

	enr_store_free(other);
	enr_store_free(store);
	free(before);
	enr_record_free(a);
	enr_record_free(b);
}

static void torn_journal_entry_is_ignored(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *a = sample(ENR_CRED_OAUTH, 1);
	unsigned char *j;
	size_t first, len;

	(void)state;
	put_ok(store, a, false);
	save_tokens(store, a->id, "ROTATED-1", 1900000001);
	free(read_bytes(journal_file(), &first));
	save_tokens(store, a->id, "ROTATED-2", 1900000002);
	j = read_bytes(journal_file(), &len);
	assert_true(len > first);
	/* Killed in the middle of writing the second entry. */
	write_bytes(journal_file(), j, first + (len - first) / 2);
	free(j);
	expect_token(a->id, "ROTATED-1", true);
	/* The next entry goes where the torn one was, and is read. */
	enr_store_free(store);
	store = open_ok(PASS);
	save_tokens(store, a->id, "ROTATED-3", 1900000003);
	expect_token(a->id, "ROTATED-3", true);
	/* A damaged byte ends the journal there too. */
	j = read_bytes(journal_file(), &len);
	j[40] ^= 1;
	write_bytes(journal_file(), j, len);
	free(j);
	expect_token(a->id, "ROTATED-3", false);
	enr_store_free(store);
	enr_record_free(a);
}

/* ---- permissions, duplicates, removal ---- */

static void files_are_private_and_open_ones_refused(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_API_KEY, 1);
	const char *suffixes[] = {"", ".bak", ".lock", ".rlock"};
	struct stat st;

	(void)state;
	put_ok(store, rec, false);
	assert_int_equal(enr_store_remove(store, rec->id), 0); /* makes .bak and .rlock */
	enr_store_free(store);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(stat(suffixed(suffixes[i]), &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
	}
	assert_int_equal(chmod(path, 0640), 0);
	expect_open_fails(ENR_E_PERM);
	assert_non_null(strstr(enr_error_last(), "chmod 600"));
	assert_int_equal(chmod(path, 0604), 0);
	expect_open_fails(ENR_E_PERM);
	assert_int_equal(chmod(path, 0600), 0);
	store = open_ok(PASS);
	enr_store_free(store);
	enr_record_free(rec);
}

static void same_site_updates_the_record(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *first = sample(ENR_CRED_OAUTH, 1), *again = sample(ENR_CRED_OAUTH, 1);
	struct enr_record *other_vendor = sample(ENR_CRED_EMAIL, 1), *thief = NULL, *got = NULL;
	struct enr_record *both = NULL;
	long long created;

	(void)state;
	put_ok(store, first, false);
	created = first->created_at;
	enr_record_set(&again->cred.tokens.access_token, "new-access");
	again->created_at = 0;
	/* Only one of its sites is the same: still the same system. */
	free(again->sites[1].id);
	again->sites[1].id = strdup("a-new-site");
	enr_record_set(&again->account, NULL); /* not told: the stored one stays */
	put_ok(store, again, true);
	assert_string_equal(again->id, first->id);
	assert_int_equal(again->created_at, created);
	assert_int_equal(enr_store_count(store), 1);
	assert_int_equal(enr_store_find_site(&got, store, "tesla", "a-new-site"), 0);
	assert_string_equal(got->cred.tokens.access_token, "new-access");
	assert_string_equal(got->account, first->account);
	enr_record_free(got);
	assert_int_equal(enr_store_find_site(&got, store, "sma", "a-new-site"), ENR_E_NOTFOUND);

	/* The same site id at another vendor is another system. */
	free(other_vendor->sites[0].id);
	other_vendor->sites[0].id = strdup(first->sites[0].id);
	put_ok(store, other_vendor, false);
	assert_int_equal(enr_store_count(store), 2);

	/* Another account for the same site is refused. */
	enr_record_set(&again->account, first->account);
	assert_int_equal(enr_record_dup(&thief, again), 0);
	enr_record_set(&thief->id, NULL);
	enr_record_set(&thief->account, "someone-else");
	assert_int_equal(enr_store_put(NULL, store, thief), ENR_E_EXISTS);
	assert_non_null(strstr(enr_error_last(), "another tesla account"));

	/* Sites held by two different records cannot become one. */
	both = sample(ENR_CRED_OAUTH, 9);
	put_ok(store, both, false);
	enr_record_set(&thief->account, NULL);
	assert_int_equal(enr_record_add_site(thief, both->sites[0].id, NULL), 0);
	assert_int_equal(enr_store_put(NULL, store, thief), ENR_E_EXISTS);
	assert_int_equal(enr_store_count(store), 3);
	enr_record_free(thief);
	enr_record_free(both);
	enr_record_free(first);
	enr_record_free(again);
	enr_record_free(other_vendor);
	enr_store_free(store);
}

/* The record holding `site` (solaredge), its customer, or NULL: by the index. */
static char *holder(const struct enr_store *store, const char *site)
{
	struct enr_record *got = NULL;
	char *customer;

	if (enr_store_find_site(&got, store, "solaredge", site) < 0)
		return NULL;
	customer = strdup(got->customer);
	enr_record_free(got);
	return customer;
}

static void expect_holder(const struct enr_store *store, const char *site, const char *customer)
{
	char *got = holder(store, site);

	if (customer ? !got || strcmp(got, customer) != 0 : got != NULL)
		fail_msg("site %s: held by %s, expected %s", site, got ? got : "nobody",
		         customer ? customer : "nobody");
	free(got);
}

static int add_site_999(struct enr_record *rec, void *ctx)
{
	(void)ctx;
	return enr_record_add_site(rec, "site-moved-999", NULL);
}

/* Lookups by id and site stay right through every kind of change, also those
 * another handle makes (the index is a cache of what was read). */
static void lookups_follow_every_change(void **state)
{
	struct enr_store *store = open_ok(PASS), *other;
	struct enr_record *rec, *got = NULL;
	char *ids[300];

	(void)state;
	for (int i = 0; i < 300; i++) {
		rec = numbered("c", i);
		put_ok(store, rec, false);
		ids[i] = strdup(rec->id);
		enr_record_free(rec);
	}
	for (int i = 0; i < 300; i++) {
		assert_int_equal(enr_store_get(&got, store, ids[i]), 0);
		assert_string_equal(got->id, ids[i]);
		enr_record_free(got);
	}
	expect_holder(store, "site-c299", "c299");
	expect_holder(store, "site-c300", NULL);
	/* A put without id but with a stored site updates that record. */
	rec = numbered("c", 150);
	enr_record_set(&rec->customer, "c150 again");
	put_ok(store, rec, true);
	assert_string_equal(rec->id, ids[150]);
	enr_record_free(rec);
	expect_holder(store, "site-c150", "c150 again");
	/* Replaced in place by a record with other sites: the old site is free. */
	rec = numbered("c", 20);
	enr_record_set(&rec->id, ids[20]);
	free(rec->sites[0].id);
	rec->sites[0].id = strdup("site-c20-new");
	put_ok(store, rec, true);
	enr_record_free(rec);
	expect_holder(store, "site-c20", NULL);
	expect_holder(store, "site-c20-new", "c20");
	rec = numbered("d", 20);
	free(rec->sites[0].id);
	rec->sites[0].id = strdup("site-c20");
	put_ok(store, rec, false);
	enr_record_free(rec);
	expect_holder(store, "site-c20", "d20");
	/* Removed: the others keep their places. */
	assert_int_equal(enr_store_remove(store, ids[10]), 0);
	expect_holder(store, "site-c10", NULL);
	assert_int_equal(enr_store_get(&got, store, ids[10]), ENR_E_NOTFOUND);
	expect_holder(store, "site-c11", "c11");
	expect_holder(store, "site-c299", "c299");
	rec = numbered("c", 10);
	put_ok(store, rec, false);
	assert_string_not_equal(rec->id, ids[10]);
	enr_record_free(rec);
	expect_holder(store, "site-c10", "c10");
	/* Another handle adds a site to a record and a record: this one sees both. */
	other = open_ok(PASS);
	assert_int_equal(enr_store_update(other, ids[30], add_site_999, NULL), 0);
	rec = numbered("e", 1);
	put_ok(other, rec, false);
	enr_record_free(rec);
	enr_store_free(other);
	assert_int_equal(enr_store_reload(store), 0);
	expect_holder(store, "site-moved-999", "c30");
	expect_holder(store, "site-e1", "e1");
	/* And a put here refuses what the other handle took. */
	rec = numbered("f", 1);
	enr_record_set(&rec->id, ids[31]);
	assert_int_equal(enr_record_add_site(rec, "site-moved-999", NULL), 0);
	assert_int_equal(enr_store_put(NULL, store, rec), ENR_E_EXISTS);
	enr_record_free(rec);
	for (int i = 0; i < 300; i++)
		free(ids[i]);
	enr_store_free(store);
}

static void remove_keeps_previous_generation(void **state)
{
	struct enr_store *store = open_ok(PASS), *bak = NULL;
	struct enr_record *rec = sample(ENR_CRED_PARTNER, 1), *got = NULL;
	struct enr_store_options o = options(PASS);

	(void)state;
	put_ok(store, rec, false);
	assert_int_equal(enr_store_remove(store, rec->id), 0);
	assert_int_equal(enr_store_count(store), 0);
	assert_int_equal(enr_store_remove(store, rec->id), ENR_E_NOTFOUND);
	assert_int_equal(enr_store_remove(store, "not an id!"), ENR_E_USAGE);
	o.path = suffixed(".bak");
	assert_int_equal(enr_store_open(&bak, &o), 0);
	assert_int_equal(enr_store_get(&got, bak, rec->id), 0);
	assert_same_record(got, rec);
	enr_record_free(got);
	enr_store_free(bak);
	enr_store_free(store);
	enr_record_free(rec);
}

static void invalid_records_are_refused(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_KEY_PAIR, 1);

	(void)state;
	enr_record_set(&rec->cred.key_secret, NULL);
	assert_int_equal(enr_store_put(NULL, store, rec), ENR_E_USAGE);
	assert_non_null(strstr(enr_error_last(), "key_secret"));
	enr_record_set(&rec->cred.key_secret, "s");
	rec->cred.type = ENR_CRED_NONE;
	assert_int_equal(enr_store_put(NULL, store, rec), ENR_E_USAGE);
	rec->cred.type = ENR_CRED_KEY_PAIR;
	enr_record_set(&rec->vendor, NULL);
	assert_int_equal(enr_store_put(NULL, store, rec), ENR_E_USAGE);
	enr_record_set(&rec->vendor, "solis");
	assert_int_equal(enr_record_add_site(rec, rec->sites[0].id, "renamed"), 0);
	assert_int_equal(rec->n_sites, 2);
	put_ok(store, rec, false);
	assert_int_equal(enr_store_count(store), 1);
	enr_store_free(store);
	enr_record_free(rec);
}

/* ---- locks, disk full ---- */

static void locked_store_times_out_naming_the_holder(void **state)
{
	struct enr_store_options o = options(PASS);
	struct enr_store *store = NULL;
	struct enr_record *rec = sample(ENR_CRED_API_KEY, 1);
	struct timespec t0, t1;
	char pid_text[32];
	int fds[2], status;
	pid_t pid;
	double waited;
	char c;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct enr_store *holder = NULL;
		if (enr_store_open(&holder, &o) < 0 || enr_store__lock(holder) < 0)
			_exit(1);
		__real_write(fds[1], "x", 1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(fds[0], &c, 1), 1);
	o.lock_timeout_ms = 400;
	assert_int_equal(enr_store_open(&store, &o), 0); /* reading needs no lock */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(enr_store_put(NULL, store, rec), ENR_E_LOCKED);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(waited >= 0.39);
	assert_true(waited < 5);
	snprintf(pid_text, sizeof(pid_text), "process %d", (int)pid);
	assert_non_null(strstr(enr_error_last(), pid_text));
	assert_int_equal(enr_error_exit_code(ENR_E_LOCKED), 4);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(fds[0]);
	close(fds[1]);
	/* The lock dies with its holder. */
	put_ok(store, rec, false);
	enr_store_free(store);
	enr_record_free(rec);
}

static void disk_full_leaves_the_old_store(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_record *rec = sample(ENR_CRED_OAUTH, 1), *rec2 = sample(ENR_CRED_EMAIL, 2);
	unsigned char *before, *after;
	size_t before_len, after_len;
	long budgets[] = {0, 1, 100, 1000};

	(void)state;
	put_ok(store, rec, false);
	before = read_bytes(path, &before_len);
	for (size_t i = 0; i < 5; i++) {
		if (i < 4)
			write_budget = budgets[i];
		else
			fsync_fails = true;
		assert_int_equal(enr_store_put(NULL, store, rec2), ENR_E_NOSPACE);
		assert_non_null(strstr(enr_error_last(), "no space"));
		write_budget = -1;
		fsync_fails = false;
		assert_int_equal(enr_store_count(store), 1);
		assert_false(exists(suffixed(".tmp")));
		after = read_bytes(path, &after_len);
		assert_int_equal(after_len, before_len);
		assert_memory_equal(after, before, before_len);
		free(after);
	}
	write_budget = 10;
	assert_int_equal(enr_store_secret_set(store, "a.b", "value"), ENR_E_NOSPACE);
	write_budget = -1;
	assert_int_equal(enr_store_secret_count(store), 0);
	enr_store_free(store);
	store = open_ok(PASS);
	assert_int_equal(enr_store_count(store), 1);
	assert_null(rec2->id);
	put_ok(store, rec2, false);
	assert_int_equal(enr_store_count(store), 2);
	enr_store_free(store);
	free(before);
	enr_record_free(rec);
	enr_record_free(rec2);
}

/* ---- opening, passphrases, encryption off ---- */

struct asked {
	int calls;
	bool new_store;
};

static int give_passphrase(char **out, bool new_store, const char *file, void *ctx)
{
	struct asked *asked = ctx;

	assert_string_equal(file, path);
	asked->calls++;
	asked->new_store = new_store;
	*out = strdup(PASS);
	return 0;
}

static void missing_store_is_empty_and_not_created(void **state)
{
	struct enr_store_options o = options(NULL);
	struct asked asked = {0};
	struct enr_store *store = NULL;
	struct enr_record *rec = sample(ENR_CRED_OAUTH, 1);

	(void)state;
	o.passphrase_fn = give_passphrase;
	o.passphrase_ctx = &asked;
	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_int_equal(enr_store_count(store), 0);
	assert_int_equal(enr_store_secret_count(store), 0);
	assert_true(enr_store_encrypted(store));
	assert_int_equal(asked.calls, 0);
	/* Nothing to remove or lock: said without asking or creating anything. */
	assert_int_equal(enr_store_remove(store, "abcdefghjk"), ENR_E_NOTFOUND);
	assert_int_equal(enr_store_secret_remove(store, "relay.secret"), ENR_E_NOTFOUND);
	assert_int_equal(enr_store_update(store, "abcdefghjk", keep_update, NULL), ENR_E_NOTFOUND);
	assert_int_equal(asked.calls, 0);
	assert_false(exists(dir));
	/* The first write asks, as for a new store. */
	put_ok(store, rec, false);
	assert_int_equal(asked.calls, 1);
	assert_true(asked.new_store);
	enr_store_free(store);

	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_int_equal(asked.calls, 2);
	assert_false(asked.new_store);
	enr_store_free(store);

	/* `create` asks at once. */
	unlink(path);
	o.create = true;
	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_int_equal(asked.calls, 3);
	assert_true(asked.new_store);
	enr_store_free(store);
	enr_record_free(rec);
}

static void encryption_off_writes_plain_json(void **state)
{
	struct enr_store_options o = options(NULL);
	struct enr_store *store = NULL;
	struct enr_record *rec = sample(ENR_CRED_API_KEY, 1);
	unsigned char *bytes;
	size_t len;

	(void)state;
	o.plaintext = true;
	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_false(enr_store_encrypted(store));
	put_ok(store, rec, false);
	enr_store_free(store);
	bytes = read_bytes(path, &len);
	assert_int_equal(bytes[0], '{');
	assert_true(contains(bytes, len, rec->cred.api_key));
	free(bytes);

	/* Encryption on again: readable without a passphrase, encrypted at the next write. */
	o.plaintext = false;
	o.passphrase = PASS;
	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_false(enr_store_encrypted(store));
	assert_int_equal(enr_store_count(store), 1);
	assert_int_equal(enr_store_secret_set(store, "relay.secret", "relay-value"), 0);
	assert_true(enr_store_encrypted(store));
	enr_store_free(store);
	bytes = read_bytes(path, &len);
	assert_memory_equal(bytes, "DRNSTORE", 8);
	assert_false(contains(bytes, len, rec->cred.api_key));
	free(bytes);

	/* And off: an encrypted store is read with its passphrase and written plain. */
	o.plaintext = true;
	assert_int_equal(enr_store_open(&store, &o), 0);
	assert_int_equal(enr_store_secret_remove(store, "relay.secret"), 0);
	assert_false(enr_store_encrypted(store));
	enr_store_free(store);
	bytes = read_bytes(path, &len);
	assert_int_equal(bytes[0], '{');
	free(bytes);
	enr_record_free(rec);
}

static void app_secrets_back_config_lookups(void **state)
{
	struct enr_store *store = open_ok(PASS);
	struct enr_config *cfg = NULL;
	char *value = NULL;

	(void)state;
	assert_int_equal(enr_store_secret_set(store, "vendor.tesla.client_secret", "ts-1"), 0);
	assert_int_equal(enr_store_secret_set(store, "derapi.client_secret", "ds-1"), 0);
	assert_int_equal(enr_store_secret_set(store, "vendor.tesla.client_secret", "ts-2"), 0);
	assert_int_equal(enr_store_secret_set(store, "bad name", "x"), ENR_E_USAGE);
	assert_int_equal(enr_store_secret_set(store, "ok.name", ""), ENR_E_USAGE);
	assert_int_equal(enr_store_secret_count(store), 2);
	assert_string_equal(enr_store_secret_name(store, 0), "derapi.client_secret");
	assert_string_equal(enr_store_secret_name(store, 1), "vendor.tesla.client_secret");
	assert_null(enr_store_secret_name(store, 2));
	enr_store_free(store);

	store = open_ok(PASS);
	assert_int_equal(enr_config_new(&cfg), 0);
	enr_config_set_secret_source(cfg, enr_store_secret_lookup, store);
	assert_int_equal(enr_config_get_secret(&value, cfg, "vendor.tesla", "client_secret"), 0);
	assert_string_equal(value, "ts-2");
	enr_config_free_secret(value);
	assert_int_equal(enr_config_get_secret(&value, cfg, "vendor.sma", "client_secret"),
	                 ENR_E_NOTFOUND);
	assert_int_equal(enr_store_secret_remove(store, "derapi.client_secret"), 0);
	assert_int_equal(enr_store_secret_remove(store, "derapi.client_secret"), ENR_E_NOTFOUND);
	assert_int_equal(enr_store_secret_get(&value, store, "derapi.client_secret"),
	                 ENR_E_NOTFOUND);
	enr_config_free(cfg);
	enr_store_free(store);
}

static void passphrase_file_loses_one_newline(void **state)
{
	char *pass = NULL, *file;

	(void)state;
	file = test_write_file(getenv("HOME"), "pass1", "secret words\n", 0600);
	assert_int_equal(enr_store_read_passphrase_file(&pass, file), 0);
	assert_string_equal(pass, "secret words");
	free(pass);
	free(file);
	file = test_write_file(getenv("HOME"), "pass2", " two lines \r\n\n", 0600);
	assert_int_equal(enr_store_read_passphrase_file(&pass, file), 0);
	assert_string_equal(pass, " two lines \r\n");
	free(pass);
	free(file);
	file = test_write_file(getenv("HOME"), "pass3", "\n", 0600);
	assert_int_equal(enr_store_read_passphrase_file(&pass, file), ENR_E_PASSPHRASE);
	assert_non_null(strstr(enr_error_last(), "empty"));
	free(file);
	assert_int_equal(enr_store_read_passphrase_file(&pass, "/nonexistent/pass"),
	                 ENR_E_PASSPHRASE);
	assert_null(pass);
}

static void token_answers_go_into_the_record(void **state)
{
	struct enr_record *rec = sample(ENR_CRED_OAUTH, 1);
	struct enr_oauth_tokens answer = {0};
	char access2[] = "access-2", refresh2[] = "refresh-2", access3[] = "access-3";
	char scope[] = "openid";

	(void)state;
	answer.access_token = access2;
	answer.refresh_token = refresh2;
	answer.access_expires_at = 1000;
	answer.refresh_expires_at = 2000;
	assert_int_equal(enr_record_set_tokens(rec, &answer), 0);
	assert_string_equal(rec->cred.tokens.access_token, "access-2");
	assert_string_equal(rec->cred.tokens.refresh_token, "refresh-2");
	assert_int_equal(rec->access_expires_at, 1000);
	assert_int_equal(rec->refresh_expires_at, 2000);
	assert_string_equal(rec->cred.tokens.token_type, "Bearer");
	/* No refresh token in the answer: the stored one and its expiry stay. */
	answer.access_token = access3;
	answer.refresh_token = NULL;
	answer.refresh_expires_at = 0;
	answer.scope = scope;
	assert_int_equal(enr_record_set_tokens(rec, &answer), 0);
	assert_string_equal(rec->cred.tokens.access_token, "access-3");
	assert_string_equal(rec->cred.tokens.refresh_token, "refresh-2");
	assert_int_equal(rec->refresh_expires_at, 2000);
	assert_string_equal(rec->cred.tokens.scope, "openid");
	enr_record_free(rec);
}

static void outcomes_and_types_have_names(void **state)
{
	enum enr_record_outcome outcome;
	enum enr_cred_type type;

	(void)state;
	assert_string_equal(enr_record_outcome_name(ENR_OUTCOME_BADRESPONSE), "badresponse");
	assert_int_equal(enr_record_outcome_parse(&outcome, "misconfigured"), 0);
	assert_int_equal(outcome, ENR_OUTCOME_MISCONFIGURED);
	assert_int_equal(enr_record_outcome_parse(&outcome, "fine"), ENR_E_PARSE);
	assert_int_equal(enr_record_outcome_from_error(ENR_E_EXPIRED), ENR_OUTCOME_REJECTED);
	assert_int_equal(enr_record_outcome_from_error(ENR_E_TIMEOUT), ENR_OUTCOME_TRANSIENT);
	assert_int_equal(enr_record_outcome_from_error(0), ENR_OUTCOME_OK);
	assert_string_equal(enr_record_cred_name(ENR_CRED_KEY_PAIR), "key_pair");
	assert_int_equal(enr_record_cred_parse(&type, "partner"), 0);
	assert_int_equal(type, ENR_CRED_PARTNER);
	assert_int_equal(enr_record_cred_parse(&type, "none"), ENR_E_PARSE);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
/* clang-format off */
static const struct CMUnitTest tests[] = {
    T(every_credential_type_round_trips),
    T(metadata_only_leaves_secrets_out),
    T(record_json_round_trips_and_escapes),
    T(wrong_passphrase_leaves_file_untouched),
    T(no_secret_or_name_on_disk),
    T(flipped_bytes_are_detected),
    T(truncated_files_are_refused),
    T(absurd_parameters_and_newer_formats_are_refused),
    T(big_store_reads_on_two_threads),
    T(record_without_credentials_survives_a_write),
    T(extra_keys_with_quotes_and_newlines_survive),
    T(killed_writers_leave_old_or_new_state),
    T(two_processes_add_500_each),
    T(record_lock_serialises_refreshes),
    T(locked_record_saves_in_steps),
    T(new_tokens_go_to_the_journal_and_are_folded_in),
    T(torn_journal_entry_is_ignored),
    T(files_are_private_and_open_ones_refused),
    T(same_site_updates_the_record),
    T(lookups_follow_every_change),
    T(remove_keeps_previous_generation),
    T(invalid_records_are_refused),
    T(locked_store_times_out_naming_the_holder),
    T(disk_full_leaves_the_old_store),
    T(missing_store_is_empty_and_not_created),
    T(encryption_off_writes_plain_json),
    T(app_secrets_back_config_lookups),
    T(passphrase_file_loses_one_newline),
    T(token_answers_go_into_the_record),
    T(outcomes_and_types_have_names),
};
/* clang-format on */

TEST_MAIN(tests)
