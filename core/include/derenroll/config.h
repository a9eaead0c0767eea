#ifndef DERENROLL_CONFIG_H
#define DERENROLL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

/*
 * config.ini: INI sections `[vendor.<id>]`, `[derapi]`, `[relay]`, `[store]`,
 * `[ui]`, `[http]`, `[log]`. Any secret key may be given as `<key>_file = path`
 * (relative paths are relative to the config file); a secret found neither
 * inline nor in a file is looked up through the secret source (the encrypted
 * store) under the name "<section>.<key>", e.g. "vendor.tesla.client_secret".
 */
struct enr_config;

/* Looks a secret up by name; 0 and a malloc'd value in `out`, ENR_E_NOTFOUND
 * when there is none, another code on failure. */
typedef int (*enr_config_secret_fn)(char **out, const char *name, void *ctx);

/* An empty configuration. */
ENR_API int enr_config_new(struct enr_config **out);

/*
 * Loads `path`, or the default $XDG_CONFIG_HOME/derenroll/config.ini when NULL.
 * A missing default file gives an empty configuration; a missing explicit one
 * is ENR_E_NOTFOUND. A file holding a secret inline that group or others can
 * read is ENR_E_PERM, with the chmod that fixes it. Syntax errors are
 * ENR_E_PARSE naming file and line. Unknown sections and keys are warnings.
 */
ENR_API int enr_config_load(struct enr_config **out, const char *path);
ENR_API void enr_config_free(struct enr_config *cfg);

/* The file it was loaded from, or NULL. */
ENR_API const char *enr_config_path(const struct enr_config *cfg);
/* The file messages name: the one loaded, else the default one to create,
 * else "config.ini" (a configuration made in memory). */
ENR_API const char *enr_config_file_name(const struct enr_config *cfg);

/* The default config path (malloc'd), or NULL with the error set. */
ENR_API char *enr_config_default_path(void);

/* Warnings collected while loading ("config.ini:12: unknown key 'foo' in [ui]"). */
ENR_API size_t enr_config_warning_count(const struct enr_config *cfg);
ENR_API const char *enr_config_warning(const struct enr_config *cfg, size_t i);

/* A value as written, or NULL. */
ENR_API const char *enr_config_get(const struct enr_config *cfg, const char *section,
                                   const char *key);

/* An integer value, `def` when absent; ENR_E_CONFIG when not a number in [min, max]. */
ENR_API int enr_config_get_long(long *out, const struct enr_config *cfg, const char *section,
                                const char *key, long def, long min, long max);

/* A boolean (on/off, true/false, yes/no, 1/0), `def` when absent. */
ENR_API int enr_config_get_bool(bool *out, const struct enr_config *cfg, const char *section,
                                const char *key, bool def);

/*
 * A secret: inline `key`, else the file named by `key_file`, else the secret
 * source under "<section>.<key>". The value is registered for redaction and
 * returned malloc'd in `out` (free with enr_config_free_secret()). ENR_E_NOTFOUND
 * with a message saying how to set it when it is nowhere.
 */
ENR_API int enr_config_get_secret(char **out, const struct enr_config *cfg, const char *section,
                                  const char *key);
ENR_API void enr_config_free_secret(char *secret);

/* Where secrets not in the file come from (the encrypted store). */
ENR_API void enr_config_set_secret_source(struct enr_config *cfg, enr_config_secret_fn fn,
                                          void *ctx);

/*
 * Reads a secret from a file given on the command line: "-" is standard input;
 * surrounding white space is stripped. ENR_E_USAGE when the file cannot be
 * read or holds nothing. `*others_can_read` (may be NULL) tells whether group
 * or others may read the file, for a warning. The value is registered for
 * redaction; free it with enr_config_free_secret().
 */
ENR_API int enr_config_read_secret_file(char **out, const char *path, bool *others_can_read);

/* Sets a value in memory (overrides from the command line, the demo). */
ENR_API int enr_config_set(struct enr_config *cfg, const char *section, const char *key,
                           const char *value);

/* Writes every value to `path` (mode 0600, atomically). */
ENR_API int enr_config_write(const struct enr_config *cfg, const char *path);

/* Sets one key in the file `path`, keeping the rest of it as it is (atomically). */
ENR_API int enr_config_save_key(const char *path, const char *section, const char *key,
                                const char *value);

/* True for keys that hold secrets (client_secret, api_key, secret, ...). */
ENR_API bool enr_config_is_secret_key(const char *key);

/* Iterates over the values: 0 and the fields of entry `i`, ENR_E_NOTFOUND past the end. */
ENR_API int enr_config_entry(const struct enr_config *cfg, size_t i, const char **section,
                             const char **key, const char **value);

/*
 * The directory holding vendors.json and the pages: $DERENROLL_DATADIR, else
 * ../share/derenroll next to the executable when installed, else the source
 * tree's assets/ (an uninstalled build), else the installed data dir of the
 * configured prefix (another program linking the library). Returned string is
 * static.
 */
ENR_API const char *enr_config_datadir(void);

/* datadir/name, malloc'd. */
ENR_API char *enr_config_asset_path(const char *name);

#endif
