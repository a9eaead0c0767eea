#ifndef DERENROLL_HTTP_INTERNAL_H
#define DERENROLL_HTTP_INTERNAL_H

/* Internals of the http module shared with oauth and the tests. */

#include <stdbool.h>

/* scheme://host[:port]/path of `url`: no query, fragment or user info. malloc'd. */
char *enr_http__safe_url(const char *url);

/* Whether a URL host (as curl gives it: "[::1]" for IPv6) is a loopback address. */
bool enr_http__is_loopback_host(const char *host);

/* Seconds from a Retry-After value (delta-seconds or an HTTP date) at time
 * `now`, at most ENR_HTTP_MAX_RETRY_AFTER, or -1 when it cannot be read. */
long enr_http__parse_retry_after(const char *value, long long now);

struct enr_config;

/* [http] max_wait: the longest wait, in seconds, for a vendor's Retry-After or
 * a backoff (the default when unset or invalid; enr_http_multi_new() refuses
 * an invalid one). */
long enr_http__max_wait_s(const struct enr_config *cfg);

/* When to try again, `wait_s` seconds after `now`, for a message: "try again
 * in 20 s", "try again after 14:05" (local time; with the date when not
 * today), plainly "tomorrow" beyond a day; `wait_s` < 0: not said. */
void enr_http__retry_text(char *buf, size_t size, long wait_s, long long now);

#endif
