#ifndef DERENROLL_VENDOR_INTERNAL_H
#define DERENROLL_VENDOR_INTERNAL_H

/* Shared by the catalogue and its tests; not part of the public API. */

/* The failure class vendors.json names ("rejected", "transient",
 * "misconfigured", "badresponse", "declined", "expired") as an enr_error
 * code in `out`; -1 for another name. */
int enr_vendor__error_class(int *out, const char *name);

#endif
