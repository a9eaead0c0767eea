#ifndef DERENROLL_ENROLL_INTERNAL_H
#define DERENROLL_ENROLL_INTERNAL_H

/* Parsers of the enrollment module, for its tests; not part of the public API. */

struct enr_http_response;

/*
 * An answer of SMA's consent poll (GET .../bc-authorize/{loginHint}): 1 when
 * the owner accepted, 0 while pending, else the failure with its one-line
 * message (a refusal or lapse as vendors.json's guidance says).
 */
int enr_enroll__bc_answer(const struct enr_http_response *resp);

#endif
