#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/log.h"
#include "config_internal.h"
#include "enr_build_config.h"
#include "util.h"

struct entry {
	char *section;
	char *key;
	char *value;
	int line;
};

struct enr_config {
	char *path;
	char *file_name; /* the file read, or the default one that is not there */
	struct entry *entries;
	size_t n_entries;
	char **warnings;
	size_t n_warnings;
	enr_config_secret_fn secret_fn;
	void *secret_ctx;
};

static const char *const secret_keys[] = {
    "client_secret", "secret",      "api_key",
    "key_secret",    "account_key", "access_token",
    "refresh_token", "password",    "partner_client_secret",
};

static const char *const vendor_keys[] = {
    "authorize_url",
    "token_url",
    "api_url",
    "api_url_eu",
    "api_url_cn",
    "public_key_url",
    "domain",
    "regions",
    "bc_url",
    "client_id",
    "client_secret",
    "redirect_uri",
    "api_key",
    "account_key",
    "key_id",
    "key_secret",
    "audience",
    "scopes",
    "program_id",
    "partner_client_id",
    "partner_client_secret",
    "credentials_id",
    "issuer",
    "jwks_url",
    "strict_refresh",
    "authorize_params",
    "pkce",
};
static const char *const derapi_keys[] = {
    "auth_url", "api_url",    "client_id",   "client_secret",
    "flow_id",  "program_id", "api_version", "join_script_url",
};
static const char *const relay_keys[] = {
    "url",           "secret",      "listen",    "public_url", "allowed_target_hosts",
    "trusted_proxy", "max_pending", "pages_dir",
};
static const char *const store_keys[] = {"path", "encryption", "url", "member"};
static const char *const ui_keys[] = {"expiring_days"};
static const char *const http_keys[] = {"ca_file", "connect_timeout", "timeout", "max_body",
                                        "max_wait"};
static const char *const log_keys[] = {"level", "file"};

struct section_keys {
	const char *name;
	const char *const *keys;
	size_t n_keys;
};

#define SECTION(name, keys)                                                                        \
	{                                                                                          \
		name, keys, ENR_ARRAY_SIZE(keys)                                                   \
	}
static const struct section_keys known_sections[] = {
    SECTION("derapi", derapi_keys), SECTION("relay", relay_keys), SECTION("store", store_keys),
    SECTION("ui", ui_keys),         SECTION("http", http_keys),   SECTION("log", log_keys),
};
#undef SECTION

bool enr_config_is_secret_key(const char *key)
{
	for (size_t i = 0; i < ENR_ARRAY_SIZE(secret_keys); i++)
		if (strcmp(key, secret_keys[i]) == 0)
			return true;
	return false;
}

static bool in_list(const char *key, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(key, list[i]) == 0)
			return true;
	return false;
}

/* Whether `key` (or its `_file` form, for a secret) belongs in `section`. */
static bool known_key(const char *section, const char *key, bool *known_section)
{
	char base[128];
	size_t len = strlen(key);

	if (len > 5 && strcmp(key + len - 5, "_file") == 0 && len - 5 < sizeof(base)) {
		memcpy(base, key, len - 5);
		base[len - 5] = '\0';
		if (!enr_config_is_secret_key(base))
			base[0] = '\0';
		key = base;
	}
	*known_section = true;
	if (strncmp(section, "vendor.", 7) == 0 && section[7])
		return in_list(key, vendor_keys, ENR_ARRAY_SIZE(vendor_keys));
	for (size_t i = 0; i < ENR_ARRAY_SIZE(known_sections); i++)
		if (strcmp(section, known_sections[i].name) == 0)
			return in_list(key, known_sections[i].keys, known_sections[i].n_keys);
	*known_section = false;
	return false;
}

int enr_config__known_key(size_t i, const char **section, const char **key)
{
	if (i < ENR_ARRAY_SIZE(vendor_keys)) {
		*section = "vendor.<id>";
		*key = vendor_keys[i];
		return 0;
	}
	i -= ENR_ARRAY_SIZE(vendor_keys);
	for (size_t s = 0; s < ENR_ARRAY_SIZE(known_sections); s++) {
		if (i < known_sections[s].n_keys) {
			*section = known_sections[s].name;
			*key = known_sections[s].keys[i];
			return 0;
		}
		i -= known_sections[s].n_keys;
	}
	return ENR_E_NOTFOUND;
}

int enr_config_new(struct enr_config **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : enr_error_set(ENR_E_NOMEM, NULL);
}

void enr_config_free(struct enr_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_entries; i++) {
		free(cfg->entries[i].section);
		free(cfg->entries[i].key);
		/* Values are wiped, whatever their key: any of them may be a secret. */
		enr_util_free_secret(cfg->entries[i].value);
	}
	free(cfg->entries);
	for (size_t i = 0; i < cfg->n_warnings; i++)
		free(cfg->warnings[i]);
	free(cfg->warnings);
	free(cfg->path);
	free(cfg->file_name);
	free(cfg);
}

const char *enr_config_path(const struct enr_config *cfg)
{
	return cfg->path;
}

const char *enr_config_file_name(const struct enr_config *cfg)
{
	return cfg && cfg->file_name ? cfg->file_name : "config.ini";
}

char *enr_config_default_path(void)
{
	return enr_util_xdg_path("XDG_CONFIG_HOME", ".config", "config.ini");
}

size_t enr_config_warning_count(const struct enr_config *cfg)
{
	return cfg->n_warnings;
}

const char *enr_config_warning(const struct enr_config *cfg, size_t i)
{
	return i < cfg->n_warnings ? cfg->warnings[i] : NULL;
}

static int add_warning(struct enr_config *cfg, char *msg)
{
	char **grown;

	if (!msg)
		return ENR_E_NOMEM;
	grown = realloc(cfg->warnings, (cfg->n_warnings + 1) * sizeof(*grown));
	if (!grown) {
		free(msg);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	cfg->warnings = grown;
	cfg->warnings[cfg->n_warnings++] = msg;
	return 0;
}

static struct entry *find(const struct enr_config *cfg, const char *section, const char *key)
{
	/* The last assignment wins, as in most INI readers. */
	for (size_t i = cfg->n_entries; i-- > 0;)
		if (strcmp(cfg->entries[i].section, section) == 0 &&
		    strcmp(cfg->entries[i].key, key) == 0)
			return &cfg->entries[i];
	return NULL;
}

static int add_entry(struct enr_config *cfg, const char *section, const char *key,
                     const char *value, int line)
{
	struct entry *grown, *e;

	grown = realloc(cfg->entries, (cfg->n_entries + 1) * sizeof(*grown));
	if (!grown)
		return enr_error_set(ENR_E_NOMEM, NULL);
	cfg->entries = grown;
	e = &cfg->entries[cfg->n_entries];
	e->section = strdup(section);
	e->key = strdup(key);
	e->value = strdup(value);
	e->line = line;
	if (!e->section || !e->key || !e->value) {
		free(e->section);
		free(e->key);
		free(e->value);
		return enr_error_set(ENR_E_NOMEM, NULL);
	}
	cfg->n_entries++;
	return 0;
}

int enr_config_set(struct enr_config *cfg, const char *section, const char *key, const char *value)
{
	struct entry *e = find(cfg, section, key);
	char *copy;

	if (!e)
		return add_entry(cfg, section, key, value, 0);
	copy = enr_util_strdup(value);
	if (!copy)
		return ENR_E_NOMEM;
	enr_util_free_secret(e->value);
	e->value = copy;
	return 0;
}

const char *enr_config_get(const struct enr_config *cfg, const char *section, const char *key)
{
	const struct entry *e = cfg ? find(cfg, section, key) : NULL;
	return e ? e->value : NULL;
}

int enr_config_get_long(long *out, const struct enr_config *cfg, const char *section,
                        const char *key, long def, long min, long max)
{
	const char *v = enr_config_get(cfg, section, key);
	char *end;
	long n;

	*out = def;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max)
		return enr_error_set(ENR_E_CONFIG,
		                     "[%s] %s = '%s' must be a number from %ld to %ld", section,
		                     key, v, min, max);
	*out = n;
	return 0;
}

int enr_config_get_bool(bool *out, const struct enr_config *cfg, const char *section,
                        const char *key, bool def)
{
	static const char *const yes[] = {"on", "true", "yes", "1"};
	static const char *const no[] = {"off", "false", "no", "0"};
	const char *v = enr_config_get(cfg, section, key);

	*out = def;
	if (!v)
		return 0;
	for (size_t i = 0; i < ENR_ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return enr_error_set(ENR_E_CONFIG, "[%s] %s = '%s' must be on or off", section, key, v);
}

void enr_config_set_secret_source(struct enr_config *cfg, enr_config_secret_fn fn, void *ctx)
{
	cfg->secret_fn = fn;
	cfg->secret_ctx = ctx;
}

/* A `_file` path relative to the config file's directory. */
static char *resolve_path(const struct enr_config *cfg, const char *path)
{
	const char *slash;

	if (path[0] == '/' || !cfg->path || !(slash = strrchr(cfg->path, '/')))
		return enr_util_strdup(path);
	return enr_util_printf("%.*s/%s", (int)(slash - cfg->path), cfg->path, path);
}

int enr_config_get_secret(char **out, const struct enr_config *cfg, const char *section,
                          const char *key)
{
	char file_key[128], name[256];
	const char *inline_value, *file;
	char *value = NULL, *path = NULL;
	int rc;

	*out = NULL;
	inline_value = enr_config_get(cfg, section, key);
	snprintf(file_key, sizeof(file_key), "%s_file", key);
	file = enr_config_get(cfg, section, file_key);
	snprintf(name, sizeof(name), "%s.%s", section, key);

	if (inline_value) {
		value = enr_util_strdup(inline_value);
		if (!value)
			return ENR_E_NOMEM;
	} else if (file) {
		path = resolve_path(cfg, file);
		if (!path)
			return ENR_E_NOMEM;
		rc = enr_config_read_secret_file(&value, path, NULL);
		free(path);
		if (rc < 0)
			return enr_error_set(ENR_E_CONFIG, "[%s] %s: %s", section, file_key,
			                     enr_error_last());
	} else if (cfg && cfg->secret_fn) {
		rc = cfg->secret_fn(&value, name, cfg->secret_ctx);
		if (rc < 0 && rc != ENR_E_NOTFOUND)
			return rc;
	}
	if (!value)
		return enr_error_set(ENR_E_NOTFOUND,
		                     "%s is not set: run 'derenroll secret set %s' or set %s_file "
		                     "in [%s] of %s",
		                     name, name, key, section, enr_config_file_name(cfg));
	enr_log_add_secret(value);
	*out = value;
	return 0;
}

int enr_config_read_secret_file(char **out, const char *path, bool *others_can_read)
{
	char *value = NULL;
	size_t len = 0;
	struct stat st;
	int rc;

	*out = NULL;
	if (others_can_read)
		*others_can_read = false;
	if (strcmp(path, "-") == 0)
		rc = enr_util_read_file(&value, &len, "/dev/stdin", 64 * 1024);
	else
		rc = enr_util_read_file(&value, &len, path, 64 * 1024);
	if (rc < 0)
		return enr_error_set(ENR_E_USAGE, "%s", enr_error_last());
	if (strlen(value) != len) {
		/* Cut at the NUL, the secret would be wrong in a way no one could see. */
		enr_util_free_secret(value);
		return enr_error_set(ENR_E_USAGE, "%s holds a NUL byte: a secret file must be text",
		                     strcmp(path, "-") == 0 ? "standard input" : path);
	}
	enr_util_trim(value);
	if (!value[0]) {
		free(value);
		return enr_error_set(ENR_E_USAGE, "%s is empty",
		                     strcmp(path, "-") == 0 ? "standard input" : path);
	}
	if (others_can_read && strcmp(path, "-") != 0 && stat(path, &st) == 0)
		*others_can_read = (st.st_mode & 077) != 0;
	enr_log_add_secret(value);
	*out = value;
	return 0;
}

void enr_config_free_secret(char *secret)
{
	enr_util_free_secret(secret);
}

int enr_config_entry(const struct enr_config *cfg, size_t i, const char **section, const char **key,
                     const char **value)
{
	if (i >= cfg->n_entries)
		return ENR_E_NOTFOUND;
	*section = cfg->entries[i].section;
	*key = cfg->entries[i].key;
	*value = cfg->entries[i].value;
	return 0;
}

/* ---- parsing ---- */

struct parse_state {
	struct enr_config *cfg;
	FILE *file;
	int line;
	int overlong_line;
	int nul_line;
	int rc;
};

/* inih's reader: one line at a time, so that we know the line number (and
 * see NUL bytes, which fgets() would hide by cutting the line). */
static char *read_line(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	int c = EOF, len = 0;

	while (len < num - 1 && (c = getc(ps->file)) != EOF) {
		if (c == '\0' && !ps->nul_line)
			ps->nul_line = ps->line + 1;
		str[len++] = (char)c;
		if (c == '\n')
			break;
	}
	if (len == 0)
		return NULL;
	str[len] = '\0';
	ps->line++;
	if (len == num - 1 && str[len - 1] != '\n' && (c = getc(ps->file)) != EOF) {
		if (!ps->overlong_line)
			ps->overlong_line = ps->line;
		while (c != EOF && c != '\n')
			c = getc(ps->file);
		str[0] = '\0';
	}
	return str;
}

static int on_value(void *user, const char *section, const char *key, const char *value)
{
	struct parse_state *ps = user;
	bool known_section;

	if (ps->rc < 0)
		return 0;
	if (!known_key(section, key, &known_section)) {
		char *msg = known_section ? enr_util_printf("%s:%d: unknown key '%s' in [%s]",
		                                            ps->cfg->path, ps->line, key, section)
		                          : enr_util_printf("%s:%d: unknown section [%s]",
		                                            ps->cfg->path, ps->line, section);
		if (add_warning(ps->cfg, msg) < 0)
			ps->rc = ENR_E_NOMEM;
	}
	if (enr_config_is_secret_key(key))
		enr_log_add_secret(value);
	if (add_entry(ps->cfg, section, key, value, ps->line) < 0)
		ps->rc = ENR_E_NOMEM;
	return 1;
}

static bool has_inline_secret(const struct enr_config *cfg, const char **which)
{
	for (size_t i = 0; i < cfg->n_entries; i++) {
		if (enr_config_is_secret_key(cfg->entries[i].key) && cfg->entries[i].value[0]) {
			*which = cfg->entries[i].key;
			return true;
		}
	}
	return false;
}

int enr_config_load(struct enr_config **out, const char *path)
{
	struct parse_state ps = {0};
	struct enr_config *cfg = NULL;
	char *default_path = NULL;
	const char *secret_key;
	struct stat st;
	int rc, fd = -1;

	*out = NULL;
	rc = enr_config_new(&cfg);
	if (rc < 0)
		return rc;
	if (!path) {
		default_path = enr_config_default_path();
		if (!default_path) {
			rc = enr_error_last_code();
			goto out;
		}
		if (access(default_path, F_OK) < 0 && errno == ENOENT) {
			/* Messages name the file to create. */
			cfg->file_name = default_path;
			default_path = NULL;
			*out = cfg;
			cfg = NULL;
			goto out;
		}
		path = default_path;
	}
	cfg->path = enr_util_strdup(path);
	cfg->file_name = enr_util_strdup(path);
	if (!cfg->path || !cfg->file_name) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = enr_error_set_errno(errno == ENOENT ? ENR_E_NOTFOUND : ENR_E_CONFIG, errno,
		                         "cannot read config %s", path);
		goto out;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = enr_error_set(ENR_E_CONFIG, "config %s is not a regular file", path);
		goto out;
	}
	ps.file = fdopen(fd, "r");
	if (!ps.file) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	fd = -1;
	ps.cfg = cfg;
	rc = ini_parse_stream(read_line, &ps, on_value, &ps);
	if (ps.rc < 0) {
		rc = ps.rc;
		goto out;
	}
	if (ps.nul_line) {
		rc = enr_error_set(ENR_E_PARSE,
		                   "%s:%d: a NUL byte in the line (the config file must be text)",
		                   path, ps.nul_line);
		goto out;
	}
	if (ps.overlong_line) {
		rc = enr_error_set(ENR_E_PARSE, "%s:%d: line too long (at most %d characters)",
		                   path, ps.overlong_line, INI_MAX_LINE - 2);
		goto out;
	}
	if (rc != 0) {
		rc = enr_error_set(ENR_E_PARSE,
		                   "%s:%d: syntax error (expected [section] or key = value)", path,
		                   rc);
		goto out;
	}
	if ((st.st_mode & 077) && has_inline_secret(cfg, &secret_key)) {
		rc = enr_error_set(ENR_E_PERM,
		                   "%s holds %s inline and others can read it: run 'chmod 600 %s'",
		                   path, secret_key, path);
		goto out;
	}
	*out = cfg;
	cfg = NULL;
	rc = 0;
out:
	if (ps.file)
		fclose(ps.file);
	if (fd >= 0)
		close(fd);
	free(default_path);
	enr_config_free(cfg);
	return rc;
}

/* ---- writing ---- */

/* Writes `data` to `path` through a temporary file and a rename. */
static int write_atomically(const char *path, const char *data, size_t len, mode_t mode)
{
	char *tmp = enr_util_printf("%s.tmp.%d", path, (int)getpid());
	int fd, rc = 0;

	if (!tmp)
		return ENR_E_NOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		rc = enr_error_set_errno(ENR_E_IO, errno, "cannot write %s", tmp);
		goto out;
	}
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = enr_error_set_errno(errno == ENOSPC ? ENR_E_NOSPACE : ENR_E_IO, errno,
			                         "cannot write %s", tmp);
			break;
		}
		data += n;
		len -= (size_t)n;
	}
	if (rc == 0 && fsync(fd) < 0)
		rc = enr_error_set_errno(ENR_E_IO, errno, "cannot write %s", tmp);
	close(fd);
	if (rc == 0 && rename(tmp, path) < 0)
		rc = enr_error_set_errno(ENR_E_IO, errno, "cannot replace %s", path);
	if (rc < 0)
		unlink(tmp);
out:
	free(tmp);
	return rc;
}

int enr_config_write(const struct enr_config *cfg, const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);
	const char *current = NULL;
	int rc;

	if (!mem)
		return enr_error_set(ENR_E_NOMEM, NULL);
	/* Grouped by section in first-seen order. */
	for (size_t i = 0; i < cfg->n_entries; i++) {
		const char *section = cfg->entries[i].section;
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			if (strcmp(cfg->entries[j].section, section) == 0)
				seen = true;
		if (seen)
			continue;
		fprintf(mem, "%s[%s]\n", current ? "\n" : "", section);
		current = section;
		for (size_t j = i; j < cfg->n_entries; j++)
			if (strcmp(cfg->entries[j].section, section) == 0 &&
			    find(cfg, section, cfg->entries[j].key) == &cfg->entries[j])
				fprintf(mem, "%s = %s\n", cfg->entries[j].key,
				        cfg->entries[j].value);
	}
	fclose(mem);
	rc = enr_util_mkdir_parents(path, 0700);
	if (rc == 0)
		rc = write_atomically(path, buf, len, 0600);
	if (buf)
		memset(buf, 0, len);
	free(buf);
	return rc;
}

/* The lines that assign one key, as the loader reads them (continuations included). */
struct key_lines {
	struct parse_state ps;
	const char *section, *key;
	int *lines;
	size_t n;
	bool failed;
};

static int on_locate(void *user, const char *section, const char *key, const char *value)
{
	struct key_lines *kl = user;
	int *grown;

	(void)value;
	if (strcmp(section, kl->section) != 0 || strcmp(key, kl->key) != 0)
		return 1;
	grown = realloc(kl->lines, (kl->n + 1) * sizeof(*grown));
	if (!grown) {
		kl->failed = true;
		return 0;
	}
	kl->lines = grown;
	kl->lines[kl->n++] = kl->ps.line;
	return 1;
}

static bool is_key_line(const struct key_lines *kl, int line)
{
	for (size_t i = 0; i < kl->n; i++)
		if (kl->lines[i] == line)
			return true;
	return false;
}

/* Finds the lines of kl->key in `text` as the loader reads it. */
static int locate(struct key_lines *kl, const char *text, size_t len)
{
	kl->n = 0;
	kl->ps.line = 0;
	if (len) {
		kl->ps.file = fmemopen((void *)text, len, "r");
		if (!kl->ps.file)
			return enr_error_set(ENR_E_NOMEM, NULL);
		ini_parse_stream(read_line, &kl->ps, on_locate, kl);
		fclose(kl->ps.file);
	}
	return kl->failed ? enr_error_set(ENR_E_NOMEM, NULL) : 0;
}

/*
 * `old` with the key's lines (`kl`) given way to `key = value`: in place of
 * the last of them; else at the end of the section's first block, or, with
 * `new_block` (or no such section), in a block of its own at the end.
 * Returns the line the key is on.
 */
static int edit(FILE *mem, const char *old, const struct key_lines *kl, const char *section,
                const char *key, const char *value, bool new_block)
{
	bool in_section = false, done = false;
	int line = 0, out_line = 0, key_line = 0;
	char header[160];

	snprintf(header, sizeof(header), "[%s]", section);
	for (const char *at = old, *next; *at; at = next) {
		const char *nl = strchr(at, '\n');
		size_t line_len = nl ? (size_t)(nl - at) : strlen(at);
		char *copy = strndup(at, line_len);
		next = nl ? nl + 1 : at + line_len;
		line++;
		if (is_key_line(kl, line)) {
			if (line == kl->lines[kl->n - 1] && !new_block) {
				fprintf(mem, "%s = %s\n", key, value);
				key_line = ++out_line;
				done = true;
			}
			free(copy);
			continue;
		}
		if (!kl->n && !new_block && copy) {
			enr_util_trim(copy);
			if (copy[0] == '[') {
				if (in_section && !done) {
					fprintf(mem, "%s = %s\n", key, value);
					key_line = ++out_line;
					done = true;
				}
				in_section = strcmp(copy, header) == 0;
			}
		}
		free(copy);
		fprintf(mem, "%.*s\n", (int)line_len, at);
		out_line++;
	}
	if (!done && in_section) {
		fprintf(mem, "%s = %s\n", key, value);
		key_line = ++out_line;
	} else if (!done) {
		fprintf(mem, "%s\n%s = %s\n", header, key, value);
		key_line = out_line + 2;
	}
	return key_line;
}

int enr_config_save_key(const char *path, const char *section, const char *key, const char *value)
{
	char *old = NULL, *buf = NULL;
	size_t old_len = 0, len = 0;
	struct key_lines kl = {.section = section, .key = key};
	struct key_lines check = {.section = section, .key = key};
	FILE *mem = NULL;
	mode_t mode = 0600;
	struct stat st;
	int rc, key_line;

	rc = enr_util_read_file(&old, &old_len, path, 1024 * 1024);
	if (rc == ENR_E_NOTFOUND) {
		old = enr_util_strdup("");
		rc = old ? 0 : ENR_E_NOMEM;
	}
	if (rc < 0)
		return rc;
	/* The loader cuts a line at a NUL; rewriting would cut the file there. */
	if (memchr(old, '\0', old_len)) {
		free(old);
		return enr_error_set(ENR_E_CONFIG, "config %s holds a NUL byte: it was not changed",
		                     path);
	}
	if (stat(path, &st) == 0)
		mode = st.st_mode & 0777;
	/* The last assignment wins, in any of the section's blocks: that is the one to replace. */
	if ((rc = locate(&kl, old, old_len)) < 0)
		goto out;
	for (int new_block = 0; new_block < 2; new_block++) {
		free(buf);
		buf = NULL;
		if (!(mem = open_memstream(&buf, &len))) {
			rc = enr_error_set(ENR_E_NOMEM, NULL);
			goto out;
		}
		key_line = edit(mem, old, &kl, section, key, value, new_block);
		fclose(mem);
		/* Read as the loader would, the new line is the key's only one (an
		 * indented line after it would continue its value): else a block of its own. */
		if ((rc = locate(&check, buf, len)) < 0)
			goto out;
		if (check.n == 1 && check.lines[0] == key_line)
			break;
	}
	rc = write_atomically(path, buf, len, mode);
out:
	free(buf);
	free(old);
	free(kl.lines);
	free(check.lines);
	return rc;
}

/* ---- assets ---- */

static int is_datadir(const char *dir)
{
	char path[PATH_MAX + 32];
	int n = snprintf(path, sizeof(path), "%s/vendors.json", dir);

	return n > 0 && (size_t)n < sizeof(path) && access(path, R_OK) == 0;
}

/*
 * In order: $DERENROLL_DATADIR; the installed data dir relative to the
 * executable (an installed tree works wherever it is unpacked); the source
 * tree (an uninstalled build); the data dir of the configured prefix (a
 * program installed elsewhere that links libderenroll).
 */
const char *enr_config_datadir(void)
{
	static _Thread_local char dir[PATH_MAX + 64];
	const char *env = getenv("DERENROLL_DATADIR");
	const char *rel = ENR_INSTALLED_DATADIR_REL;
	char exe[PATH_MAX];
	ssize_t n;

	if (env && env[0])
		return env;
	n = rel[0] == '/' ? -1 : readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		char *slash;
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			int len = snprintf(dir, sizeof(dir), "%s/%s", exe, rel);
			if (len > 0 && (size_t)len < sizeof(dir) && is_datadir(dir))
				return dir;
		}
	}
	if (is_datadir(ENR_SOURCE_ASSETS))
		return ENR_SOURCE_ASSETS;
	return ENR_INSTALLED_DATADIR;
}

char *enr_config_asset_path(const char *name)
{
	return enr_util_printf("%s/%s", enr_config_datadir(), name);
}
