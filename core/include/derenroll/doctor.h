#ifndef DERENROLL_DOCTOR_H
#define DERENROLL_DOCTOR_H

#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

/*
 * The company's setup, checked before the first customer: for every
 * configured vendor, Derapi and the relay, what can be checked without a
 * customer (the app's client credentials where the vendor has a
 * client-credentials grant, redirect URIs as the methods need them, the
 * company portal accounts, the relay reachable with its secret). Vendors
 * without settings are skipped, not failed. Blocking: not for the TUI's key
 * path. Every message is one line; a failure's names the setting to change.
 */

struct enr_config;
struct enr_catalog;
struct enr_vendor;

enum enr_doctor_outcome {
	ENR_DOCTOR_OK,
	ENR_DOCTOR_FAILED,
	ENR_DOCTOR_SKIPPED,
};

struct enr_doctor_result {
	const char *vendor; /* a vendor id of the catalogue, or "relay" */
	const char *check;  /* "client credentials", "redirect URI", ... */
	enum enr_doctor_outcome outcome;
	char *message; /* one line, never a secret */
};

/*
 * One check: 0 when it passes (`note`, may stay NULL, says what was found,
 * malloc'd), ENR_DOCTOR_SKIP when it does not apply (`note` says why), or a
 * negative enr_error with the message set to the fix. `vendor` is NULL for
 * the relay.
 */
#define ENR_DOCTOR_SKIP 1
typedef int (*enr_doctor_fn)(char **note, const struct enr_vendor *vendor,
                             const struct enr_catalog *catalog, const struct enr_config *cfg);

struct enr_doctor_report;

/* Runs every check: 0 and the report (whatever the checks found), or
 * ENR_E_NOMEM. */
ENR_API int enr_doctor_run(struct enr_doctor_report **out, const struct enr_catalog *catalog,
                           const struct enr_config *cfg);

ENR_API size_t enr_doctor_count(const struct enr_doctor_report *report);
/* The i-th result, in the order they ran; borrowed from the report. */
ENR_API const struct enr_doctor_result *enr_doctor_at(const struct enr_doctor_report *report,
                                                      size_t i);
/* Whether no check failed. */
ENR_API bool enr_doctor_passed(const struct enr_doctor_report *report);
/* NULL is a no-op. */
ENR_API void enr_doctor_report_free(struct enr_doctor_report *report);

#endif
