#ifndef DERENROLL_ERROR_H
#define DERENROLL_ERROR_H

#include <stdarg.h>
#include "derenroll/export.h"

/*
 * Every error code of libderenroll, its name, the exit code the CLI uses for it
 * and a default message, in one table.
 *
 * Exit codes: 0 good; 1 needs a person (rejected, expired, declined, expiring);
 * 2 usage or configuration error (misconfigured included); 3 transient or bad
 * vendor response (retry later); 4 store error.
 */
#define ENR_ERRORS(X)                                                                              \
	X(OK, 0, 0, "success")                                                                     \
	X(NOMEM, -1, 4, "out of memory")                                                           \
	X(USAGE, -2, 2, "invalid argument")                                                        \
	X(CONFIG, -3, 2, "configuration error")                                                    \
	X(IO, -4, 2, "input/output error")                                                         \
	X(NOTFOUND, -5, 2, "not found")                                                            \
	X(EXISTS, -6, 2, "already exists")                                                         \
	X(PERM, -7, 2, "permissions too open")                                                     \
	X(PARSE, -8, 2, "malformed input")                                                         \
	X(UNSUPPORTED, -9, 2, "not supported")                                                     \
	X(STORE, -10, 4, "credential store error")                                                 \
	X(PASSPHRASE, -11, 4, "wrong passphrase")                                                  \
	X(CORRUPT, -12, 4, "credential store is corrupt")                                          \
	X(LOCKED, -13, 4, "credential store is locked by another process")                         \
	X(NOSPACE, -14, 4, "no space left on device")                                              \
	X(CRYPTO, -15, 4, "cryptography error")                                                    \
	X(REJECTED, -16, 1, "credentials rejected: the customer must authorize again")             \
	X(DECLINED, -17, 1, "the customer declined")                                               \
	X(EXPIRED, -18, 1, "authorization expired")                                                \
	X(MISCONFIGURED, -19, 2, "vendor app is misconfigured")                                    \
	X(TRANSIENT, -20, 3, "temporary failure: try again later")                                 \
	X(BADRESPONSE, -21, 3, "unexpected response from the vendor")                              \
	X(TIMEOUT, -22, 3, "timed out")                                                            \
	X(CANCELLED, -23, 3, "cancelled")                                                          \
	X(STATE, -24, 1, "authorization state mismatch")                                           \
	X(AGAIN, -25, 3, "not ready yet")                                                          \
	X(OFFLINE, -26, 4, "the team store cannot be reached")                                     \
	X(ACCOUNT, -27, 1, "the customer signed in with another account")

enum enr_error {
#define ENR_X_ENUM(name, value, exit_code, message) ENR_E_##name = value,
	ENR_ERRORS(ENR_X_ENUM)
#undef ENR_X_ENUM
};

/*
 * Sets the calling thread's last error to `code` with a one-line message
 * formatted from `fmt` (NULL: the table's default). Registered secrets are
 * redacted from the message. Returns `code`, so `return enr_error_set(...)`.
 */
ENR_API int enr_error_set(int code, const char *fmt, ...) ENR_PRINTF(2, 3);
ENR_API int enr_error_setv(int code, const char *fmt, va_list ap);

/* Same as enr_error_set(), but appends ": <strerror(errnum)>". */
ENR_API int enr_error_set_errno(int code, int errnum, const char *fmt, ...) ENR_PRINTF(3, 4);

/* The calling thread's last message (never NULL; "" when none), and its code. */
ENR_API const char *enr_error_last(void);
ENR_API int enr_error_last_code(void);
ENR_API void enr_error_clear(void);

/* Name ("REJECTED"), default message and CLI exit code of a code. */
ENR_API const char *enr_error_name(int code);
ENR_API const char *enr_error_default_message(int code);
ENR_API int enr_error_exit_code(int code);

#endif
