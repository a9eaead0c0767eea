#ifndef DERENROLL_HTTP_INTERNAL_H
#define DERENROLL_HTTP_INTERNAL_H

/* Internals of the http module shared with oauth and the tests. */

#include <stdbool.h>

/* scheme://host[:port]/path of `url`: no query, fragment or user info. malloc'd. */
char *enr_http__safe_url(const char *url);

/* Whether a URL host (as curl gives it: "[::1]" for IPv6) is a loopback address. */
bool enr_http__is_loopback_host(const char *host);

/* Seconds from a Retry-After value (delta-seconds or an HTTP date) at time
 * `now`, or -1 when it cannot be read. */
long enr_http__parse_retry_after(const char *value, long long now);

#endif
