/* Records of customers who authorized the sandbox (its internals issue the tokens). */
#include <stdio.h>
#include <time.h>

#include "derenroll/error.h"
#include "derenroll/store.h"
#include "sandbox_internal.h"
#include "sandbox_records.h"

int test_sandbox_sma_records(struct enr_sandbox *sb, struct enr_store *store, int n)
{
	long long now = (long long)time(NULL);
	int rc = 0;

	for (int i = 0; rc == 0 && i < n; i++) {
		struct sb_grant g = {.vendor = SB_SMA,
		                     .client_id = sb->clients[SB_SMA].id,
		                     .scope = "offline_access",
		                     .refresh = true,
		                     .refresh_ttl = enr_sandbox__refresh_ttl(sb, SB_SMA)};
		struct sb_tokens t = {0};
		struct enr_record *rec = NULL;
		char name[64];

		snprintf(name, sizeof(name), "storm-%03d", i);
		g.account = name;
		if ((rc = enr_sandbox__issue(sb, &t, &g)) < 0 || (rc = enr_record_new(&rec)) < 0)
			break;
		snprintf(name, sizeof(name), "Storm customer %d", i);
		rec->cred.type = ENR_CRED_OAUTH;
		rec->access_expires_at = now + t.expires_in;
		rec->refresh_expires_at = g.refresh_ttl ? now + g.refresh_ttl : 0;
		if ((rc = enr_record_set(&rec->customer, name)) == 0 &&
		    (rc = enr_record_set(&rec->vendor, "sma")) == 0 &&
		    (rc = enr_record_set(&rec->method, "oauth")) == 0 &&
		    (rc = enr_record_set(&rec->cred.tokens.access_token, t.access)) == 0 &&
		    (rc = enr_record_set(&rec->cred.tokens.refresh_token, t.refresh)) == 0)
			rc = enr_store_put(NULL, store, rec);
		enr_sandbox__tokens_done(&t);
		enr_record_free(rec);
	}
	return rc;
}

long long test_sandbox_token_spent(struct enr_sandbox *sb, struct enr_store *store, const char *id,
                                   long long *asked_ms, long long *answered_ms)
{
	struct enr_record *rec = NULL;
	long long used;

	if (enr_store_get(&rec, store, id) < 0)
		return -1;
	used =
	    enr_sandbox__refresh_used_ms(sb, rec->cred.tokens.refresh_token, asked_ms, answered_ms);
	enr_record_free(rec);
	return used;
}
