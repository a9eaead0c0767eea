#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "derenroll/error.h"
#include "derenroll/log.h"

#define ENR_ERROR_MAX 512

static _Thread_local char last_message[ENR_ERROR_MAX];
static _Thread_local int last_code;

struct error_entry {
	int code;
	int exit_code;
	const char *name;
	const char *message;
};

static const struct error_entry table[] = {
#define ENR_X_ENTRY(name, value, exit_code, message) {value, exit_code, #name, message},
    ENR_ERRORS(ENR_X_ENTRY)
#undef ENR_X_ENTRY
};

static const struct error_entry *lookup(int code)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].code == code)
			return &table[i];
	return NULL;
}

/* Messages are one line: newlines and control characters become spaces. */
static void flatten(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

int enr_error_setv(int code, const char *fmt, va_list ap)
{
	char buf[ENR_ERROR_MAX];

	if (fmt)
		vsnprintf(buf, sizeof(buf), fmt, ap);
	else
		snprintf(buf, sizeof(buf), "%s", enr_error_default_message(code));
	flatten(buf);
	enr_log_redact(last_message, sizeof(last_message), buf);
	last_code = code;
	return code;
}

int enr_error_set(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	enr_error_setv(code, fmt, ap);
	va_end(ap);
	return code;
}

int enr_error_set_errno(int code, int errnum, const char *fmt, ...)
{
	char buf[ENR_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return enr_error_set(code, "%s: %s", buf, strerror(errnum));
}

const char *enr_error_last(void)
{
	return last_message;
}

int enr_error_last_code(void)
{
	return last_code;
}

void enr_error_clear(void)
{
	last_message[0] = '\0';
	last_code = 0;
}

const char *enr_error_name(int code)
{
	const struct error_entry *e = lookup(code);
	return e ? e->name : "UNKNOWN";
}

const char *enr_error_default_message(int code)
{
	const struct error_entry *e = lookup(code);
	return e ? e->message : "unknown error";
}

int enr_error_exit_code(int code)
{
	const struct error_entry *e = lookup(code);
	return e ? e->exit_code : 2;
}
