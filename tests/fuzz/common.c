/* Shared by the libFuzzer harnesses of tests/fuzz. */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "store/internal.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/log.h"
#include "derenroll/vendor.h"

static struct enr_catalog *catalog;
static char tmpdir[4096];

void fuzz_init(void)
{
	if (enr_log_open("/dev/null") < 0)
		abort();
	enr_log_set_level(ENR_LOG_DEBUG);
}

/* For the harnesses that need nothing else: libFuzzer calls it before the first input. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	fuzz_catalog();
	return 0;
}

const struct enr_catalog *fuzz_catalog(void)
{
	if (!catalog && enr_catalog_load(&catalog, NULL) < 0) {
		fprintf(stderr, "fuzz: cannot load the catalogue: %s\n", enr_error_last());
		abort();
	}
	return catalog;
}

char *fuzz_string(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

size_t fuzz_words(char (*words)[FUZZ_WORD_MAX], size_t n, const uint8_t **data, size_t *size)
{
	const uint8_t *p = *data, *end = *data + *size;
	const uint8_t *nl = memchr(p, '\n', *size);
	const uint8_t *line_end = nl ? nl : end;
	size_t count = 0;

	for (size_t i = 0; i < n; i++)
		words[i][0] = '\0';
	while (p < line_end && count < n) {
		size_t len = 0;
		while (p < line_end && *p == ' ')
			p++;
		if (p == line_end)
			break;
		/* The last word is the rest of the line: "application/json; charset=utf-8". */
		while (p < line_end && (*p != ' ' || count == n - 1)) {
			if (len < FUZZ_WORD_MAX - 1 && *p)
				words[count][len++] = (char)*p;
			p++;
		}
		words[count++][len] = '\0';
	}
	*data = nl ? nl + 1 : end;
	*size = (size_t)(end - *data);
	return count;
}

const struct enr_vendor *fuzz_vendor(const char *id)
{
	const struct enr_catalog *cat = fuzz_catalog();
	size_t hash = 0;

	for (size_t i = 0; i < enr_catalog_count(cat); i++)
		if (strcmp(enr_catalog_at(cat, i)->id, id) == 0)
			return enr_catalog_at(cat, i);
	for (const char *p = id; *p; p++)
		hash = hash * 31 + (unsigned char)*p;
	return enr_catalog_at(cat, hash % enr_catalog_count(cat));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_tmpdir(void)
{
	nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void fuzz_store_key(struct store_key *out)
{
	static struct store_key key = {.kdf = {.log2_n = 4, .r = 1, .p = 1},
	                               .salt = "derenroll-fuzz!"};

	if (!key.have && enr_store__derive(&key, "fuzz passphrase") < 0)
		abort();
	*out = key;
}

const char *fuzz_tmpdir(void)
{
	if (!tmpdir[0]) {
		/* Memory, where there is some: the config and store writes fsync. */
		const char *base = getenv("TMPDIR");
		if (!base || !base[0])
			base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(tmpdir, sizeof(tmpdir), "%s/derenroll-fuzz-XXXXXX", base);
		if (!mkdtemp(tmpdir))
			abort();
		atexit(remove_tmpdir);
	}
	return tmpdir;
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;

	if (fd < 0)
		abort();
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);
		if (n <= 0)
			abort();
		done += (size_t)n;
	}
	close(fd);
}

static char *dup_or_abort(const char *s)
{
	char *copy = strdup(s);

	if (!copy)
		abort();
	return copy;
}

struct enr_http_response *fuzz_response(const struct enr_vendor *vendor, long status,
                                        const char *content_type, const uint8_t *body,
                                        size_t body_len)
{
	struct enr_http_response *resp = calloc(1, sizeof(*resp));

	if (!resp)
		abort();
	resp->status = status;
	resp->body = malloc(body_len + 1);
	if (!resp->body)
		abort();
	memcpy(resp->body, body, body_len);
	resp->body[body_len] = '\0';
	resp->body_len = body_len;
	resp->content_type = content_type ? dup_or_abort(content_type) : NULL;
	resp->retry_after = -1;
	resp->rate_remaining = -1;
	resp->rate_window = -1;
	resp->rate_limit = -1;
	resp->vendor = vendor;
	resp->endpoint = dup_or_abort("api_url");
	resp->where = dup_or_abort("https://vendor.example/fuzz");
	return resp;
}
