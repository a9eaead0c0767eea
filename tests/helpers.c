#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

extern char **environ;

static char tmp_root[256];

const char *test_env_setup(void)
{
	const char *base = getenv("TMPDIR");
	char path[512];

	/* Unset every DERENROLL_* variable the runner may have inherited. */
	for (;;) {
		char name[256] = "";
		for (char **e = environ; *e; e++) {
			if (strncmp(*e, "DERENROLL_", 10) == 0) {
				size_t len = strcspn(*e, "=");
				if (len < sizeof(name)) {
					memcpy(name, *e, len);
					name[len] = '\0';
				}
				break;
			}
		}
		if (!name[0])
			break;
		unsetenv(name);
	}
	snprintf(tmp_root, sizeof(tmp_root), "%s/derenroll-test-XXXXXX",
	         base && base[0] ? base : "/tmp");
	if (!mkdtemp(tmp_root)) {
		perror("mkdtemp");
		exit(1);
	}
	setenv("HOME", tmp_root, 1);
	snprintf(path, sizeof(path), "%s/config", tmp_root);
	setenv("XDG_CONFIG_HOME", path, 1);
	snprintf(path, sizeof(path), "%s/data", tmp_root);
	setenv("XDG_DATA_HOME", path, 1);
	snprintf(path, sizeof(path), "%s/state", tmp_root);
	setenv("XDG_STATE_HOME", path, 1);
	snprintf(path, sizeof(path), "%s/runtime", tmp_root);
	setenv("XDG_RUNTIME_DIR", path, 1);
	return tmp_root;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void test_env_cleanup(void)
{
	if (tmp_root[0])
		nftw(tmp_root, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	tmp_root[0] = '\0';
}

char *test_write_file(const char *dir, const char *name, const char *content, int mode)
{
	char *path = NULL;
	FILE *f;

	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return NULL;
	f = fopen(path, "w");
	if (!f) {
		free(path);
		return NULL;
	}
	fputs(content, f);
	fclose(f);
	chmod(path, (mode_t)mode);
	return path;
}

char *test_read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long len;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)len + 1);
	if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
		free(buf);
		buf = NULL;
	}
	if (buf)
		buf[len] = '\0';
	fclose(f);
	return buf;
}
