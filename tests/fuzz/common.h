#ifndef DERENROLL_FUZZ_COMMON_H
#define DERENROLL_FUZZ_COMMON_H

/* Shared by the libFuzzer harnesses of tests/fuzz. */

#include <stddef.h>
#include <stdint.h>

struct enr_catalog;
struct enr_vendor;
struct enr_http_response;

/* Every harness's entry points (libFuzzer's). common.c has a weak
 * LLVMFuzzerInitialize(): fuzz_init() and the catalogue. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Once per process: log lines (all levels, so that their formatting and
 * redaction run too) go to /dev/null, not to the fuzzer's output.
 */
void fuzz_init(void);

/* The real catalogue (DERENROLL_DATADIR/vendors.json), loaded once; aborts when it cannot. */
const struct enr_catalog *fuzz_catalog(void);

/* `data` as a NUL-terminated string (cut at its first NUL); aborts when out of memory. */
char *fuzz_string(const uint8_t *data, size_t size);

/* A directory of the process's own, made once under $TMPDIR (else /dev/shm or /tmp) and
 * removed at exit. */
const char *fuzz_tmpdir(void);

struct store_key;

/* The harnesses' store key: weak scrypt parameters and a fixed salt, quick and
 * always the same (derived once; aborts when it cannot be). */
void fuzz_store_key(struct store_key *out);

/* Replaces the file at `path` (mode 0600) with `data`; aborts on failure. */
void fuzz_write_file(const char *path, const uint8_t *data, size_t size);

#define FUZZ_WORD_MAX 64

/*
 * The words of the input's first line (at most `n`, the last one the rest of
 * the line; each cut to FUZZ_WORD_MAX - 1 bytes; missing ones are ""), for harnesses whose inputs
 * start with a line saying what the rest is ("token sma 200 application/json").
 * `data` and `size` are moved past that line. Returns the number of words.
 */
size_t fuzz_words(char (*words)[FUZZ_WORD_MAX], size_t n, const uint8_t **data, size_t *size);

/* The vendor of the real catalogue named `id`, else the one at `id`'s hash. */
const struct enr_vendor *fuzz_vendor(const char *id);

/*
 * A response as the HTTP layer hands it over: `body` (copied) with `status`
 * and `content_type` (NULL: none), from `vendor`'s endpoint "api_url".
 */
struct enr_http_response *fuzz_response(const struct enr_vendor *vendor, long status,
                                        const char *content_type, const uint8_t *body,
                                        size_t body_len);

#endif
