#ifndef DERENROLL_TEST_SANDBOX_RECORDS_H
#define DERENROLL_TEST_SANDBOX_RECORDS_H

/* Records of customers who authorized the sandbox, for the kill-storm and disk-full tests. */

struct enr_sandbox;
struct enr_store;

/*
 * Stores `n` SMA OAuth records ("Storm customer I"), each with the tokens the
 * sandbox issues on a consent (its refresh token rotates). 0, or the store's
 * error (enr_error_last() says it).
 */
int test_sandbox_sma_records(struct enr_sandbox *sb, struct enr_store *store, int n);

/* When the sandbox spent the refresh token that record `id` holds now (0: not
 * spent, -1: unknown); `asked_ms` (may be NULL) gets when the request arrived,
 * `answered_ms` (may be NULL) when the answer was handed to the connection. */
long long test_sandbox_token_spent(struct enr_sandbox *sb, struct enr_store *store, const char *id,
                                   long long *asked_ms, long long *answered_ms);

#endif
