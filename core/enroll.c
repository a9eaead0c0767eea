#include <regex.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "derenroll/check.h"
#include "derenroll/config.h"
#include "derenroll/enroll.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/join.h"
#include "derenroll/log.h"
#include "derenroll/oauth.h"
#include "derenroll/relay.h"
#include "derenroll/store.h"
#include "derenroll/tesla.h"
#include "derenroll/text.h"
#include "derenroll/vendor.h"
#include "enroll_internal.h"
#include "http_internal.h"
#include "util.h"

#define DEFAULT_TIMEOUT_S (15 * 60)
#define RELAY_WAIT_S      25
/* A relay link lives as long as the session; renewed in place this long before
 * it would end (a relay may give a link less time than asked). */
#define RELAY_RENEW_S (RELAY_WAIT_S + 15)
#define BC_POLL_MS    3000
#define RETRY_MS      2000
#define FETCH_POLL_MS 1000
/* A Join session also asks Derapi itself between these shorter relay polls. */
#define JOIN_RELAY_WAIT_S 5
#define MAX_TEXT          4096

/* What the session is waiting for, within WAIT or LINK. */
enum pending {
	PENDING_NONE,
	PENDING_RELAY_LINK,   /* registering the short link */
	PENDING_RELAY_RESULT, /* long-polling the relay */
	PENDING_TOKEN,        /* code exchange or client credentials */
	PENDING_BC_START,     /* SMA: asking the owner by e-mail */
	PENDING_BC_POLL,      /* SMA: has the owner answered? */
	PENDING_JWKS,         /* the vendor's signing keys, to check an id_token */
	PENDING_CHECK,        /* the check call */
	PENDING_JOIN,         /* a Derapi call: app token, flow, session, fetch-token */
};

struct enr_enroll {
	struct enr_store *store;
	const struct enr_config *cfg;
	const struct enr_vendor *vendor;
	const struct enr_method *method;
	struct enr_http_multi *multi;
	bool own_multi;
	enum enr_enroll_state state;
	enum enr_consent consent;
	enum pending pending;
	uint64_t transfer;
	long long next_at_ms; /* when to send the next poll (relay retry, SMA poll) */
	long long deadline;
	long timeout_s;
	int error;
	char *message;
	char *warning;
	char *site_id; /* preselected */
	bool allow_account_change;

	/* OAuth */
	struct enr_oauth_flow *flow;
	struct enr_oauth_receiver *receiver;
	char *link;
	long long link_expires_at;
	long link_granted_s; /* the time the relay gave the link when last asked */
	char *redirect_uri;
	struct enr_oauth_tokens *tokens; /* held while the JWKS is fetched */

	/* FIELDS */
	char **values;

	/* What is being built. */
	struct enr_record *rec;
	struct enr_record *reauth; /* the record being re-authorized */
	char *cc_token;            /* SMA backchannel: the app's client-credentials token */
	struct enr_check_result *sites;
	char **holders;           /* per site: the customer of the record holding it, or NULL */
	struct enr_record **more; /* DONE: the records saved after `rec` (one per site) */
	size_t n_more;
	bool updated;
	bool message_changed; /* set_message() changed it during enr_enroll_process() */

	/* Derapi Join */
	const struct enr_vendor *derapi; /* set for method `join` */
	enum enr_join_mode join_mode;
	/* No vendor given: the customer chooses one in the Join page (a session);
	 * `vendor` is Derapi's entry until fetch-token names the one chosen. */
	bool any_vendor;
	const struct enr_catalog *catalog;
	char *derapi_token; /* the app's token */
	char *session_id;   /* Join session */
	bool fetching;      /* polling fetch-token */
	bool own_poll;      /* a fetch-token of our own between relay polls */
	char *join_problem; /* what Derapi last said when asked that way */
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_message(struct enr_enroll *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_message(struct enr_enroll *e, const char *fmt, ...)
{
	char buf[MAX_TEXT];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (e->message && strcmp(e->message, buf) == 0)
		return;
	free(e->message);
	e->message = enr_util_strdup(buf);
	e->message_changed = true;
}

/* Moves to FAILED with the last error's message. Returns `error`. */
static void free_holders(struct enr_enroll *e);

static int fail(struct enr_enroll *e, int error)
{
	if (e->transfer) {
		enr_http_multi_cancel(e->multi, e->transfer);
		e->transfer = 0;
	}
	if (e->receiver)
		enr_oauth_receiver_cancel(e->receiver);
	e->pending = PENDING_NONE;
	e->error = error;
	e->state = ENR_ENROLL_FAILED;
	set_message(e, "%s",
	            enr_error_last()[0] ? enr_error_last() : enr_error_default_message(error));
	return error;
}

static void free_values(struct enr_enroll *e)
{
	if (!e->values)
		return;
	for (size_t i = 0; i < e->method->n_fields; i++)
		enr_util_free_secret(e->values[i]);
	free(e->values);
	e->values = NULL;
}

void enr_enroll_free(struct enr_enroll *e)
{
	if (!e)
		return;
	if (e->transfer)
		enr_http_multi_cancel(e->multi, e->transfer);
	if (e->own_multi)
		enr_http_multi_free(e->multi);
	enr_oauth_receiver_free(e->receiver);
	enr_oauth_flow_free(e->flow);
	free_values(e);
	enr_record_free(e->rec);
	for (size_t i = 0; i < e->n_more; i++)
		enr_record_free(e->more[i]);
	free(e->more);
	enr_record_free(e->reauth);
	enr_util_free_secret(e->cc_token);
	enr_util_free_secret(e->derapi_token);
	free(e->session_id);
	free_holders(e);
	free(e->join_problem);
	enr_check_result_free(e->sites);
	free(e->link);
	free(e->redirect_uri);
	enr_oauth_tokens_free(e->tokens);
	free(e->site_id);
	free(e->message);
	free(e->warning);
	free(e);
}

static int start_transfer(struct enr_enroll *e, struct enr_http_request *req, enum pending what,
                          enr_http_done_fn done)
{
	int rc;

	if (!req)
		return enr_error_last_code();
	rc = enr_http_multi_add(&e->transfer, e->multi, req, done, e);
	enr_http_request_free(req);
	if (rc == 0)
		e->pending = what;
	return rc;
}

/* ---- the check and the sites ------------------------------------------- */

static void on_check(struct enr_http_response *resp, void *ctx);

static int start_check(struct enr_enroll *e)
{
	struct enr_http_request *req = NULL;
	struct enr_credentials cred = e->rec->cred;
	int rc;

	/* The SMA backchannel reads plants with the app's token. */
	if (e->cc_token)
		cred.tokens.access_token = e->cc_token;
	e->deadline = 0;
	if (e->derapi)
		rc = enr_join_check_request(&req, e->derapi, e->cfg, e->derapi_token, e->vendor,
		                            &cred);
	else
		rc =
		    enr_check_request_at(&req, e->vendor, e->cfg, enr_tesla_record_endpoint(e->rec),
		                         e->rec->method, &cred, (long long)time(NULL));
	if (rc < 0)
		return fail(e, rc);
	e->state = ENR_ENROLL_WAIT;
	set_message(e, "Checking with %s...", e->vendor->name);
	rc = start_transfer(e, req, PENDING_CHECK, on_check);
	return rc < 0 ? fail(e, rc) : 0;
}

/* The sites a re-authorization may see: those of the record, or a superset. */
static bool same_sites(const struct enr_record *old, const struct enr_check_result *found)
{
	for (size_t i = 0; i < old->n_sites; i++)
		if (!enr_check_find_site(found, old->sites[i].id))
			return false;
	return true;
}

static int save(struct enr_enroll *e, const struct enr_site *site);
static int save_sites(struct enr_enroll *e, const struct enr_site *const *sites, size_t n);

static void free_holders(struct enr_enroll *e)
{
	for (size_t i = 0; e->holders && e->sites && i < e->sites->n_sites; i++)
		free(e->holders[i]);
	free(e->holders);
	e->holders = NULL;
}

/*
 * Puts the sites that no stored record holds first (keeping the vendor's
 * order otherwise) and notes whose the others are: an app's token (SMA's
 * client credentials, a company portal account) sees the sites of every
 * customer who ever consented, and the installer must not take another
 * customer's by mistake.
 */
static int order_sites(struct enr_enroll *e, struct enr_check_result *result)
{
	size_t n = result->n_sites, next = 0;
	struct enr_site *sorted = calloc(n ? n : 1, sizeof(*sorted));
	char **by_site = calloc(n ? n : 1, sizeof(*by_site)), **holders = NULL;
	bool *held = calloc(n ? n : 1, sizeof(*held));
	int rc = 0;

	if (!sorted || !by_site || !held) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	for (size_t i = 0; e->store && i < n; i++) {
		struct enr_record *rec = NULL;
		if (enr_store_find_site(&rec, e->store, e->vendor->id, result->sites[i].id) == 0) {
			held[i] = true;
			by_site[i] = enr_util_strdup(
			    rec->customer && rec->customer[0] ? rec->customer : rec->id);
			enr_record_free(rec);
		}
	}
	holders = calloc(n ? n : 1, sizeof(*holders));
	if (!holders) {
		rc = enr_error_set(ENR_E_NOMEM, NULL);
		goto out;
	}
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < n; i++)
			if (held[i] == (pass == 1)) {
				sorted[next] = result->sites[i];
				holders[next++] = by_site[i];
				by_site[i] = NULL;
			}
	memcpy(result->sites, sorted, n * sizeof(*sorted));
	free_holders(e);
	e->holders = holders;
	holders = NULL;
out:
	for (size_t i = 0; by_site && i < n; i++)
		free(by_site[i]);
	free(by_site);
	free(holders);
	free(sorted);
	free(held);
	return rc;
}

static void on_check(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	struct enr_check_result *result = NULL;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	/* Join records are checked through Derapi, whose answer has its own shape. */
	rc = enr_check_response(&result, e->derapi ? e->derapi : e->vendor, resp);
	if (rc < 0 && e->derapi && !resp->error && resp->status == 401)
		enr_join_token_forget();
	enr_http_response_free(resp);
	if (rc < 0) {
		fail(e, rc);
		return;
	}
	if (result->n_sites == 0) {
		enr_check_result_free(result);
		enr_error_set(ENR_E_REJECTED,
		              "%s accepted the credentials but lists no sites for them: nothing to "
		              "enroll",
		              e->vendor->name);
		fail(e, ENR_E_REJECTED);
		return;
	}
	if (e->reauth && !e->allow_account_change && !e->reauth->account &&
	    !same_sites(e->reauth, result)) {
		enr_check_result_free(result);
		enr_error_set(
		    ENR_E_ACCOUNT,
		    "these credentials do not reach the sites of record %s (%s): it looks "
		    "like another account",
		    e->reauth->id, e->reauth->customer ? e->reauth->customer : "");
		fail(e, ENR_E_ACCOUNT);
		return;
	}
	free_holders(e);
	enr_check_result_free(e->sites);
	e->sites = result;
	if ((rc = order_sites(e, result)) < 0) {
		fail(e, rc);
		return;
	}
	e->state = ENR_ENROLL_SITES;
	set_message(e, "%s found %zu site%s", e->vendor->name, result->n_sites,
	            result->n_sites == 1 ? "" : "s");
	/* A preselected site, or the site of the record being re-authorized. */
	if (e->site_id || (e->reauth && e->reauth->n_sites == 1)) {
		const char *id = e->site_id ? e->site_id : e->reauth->sites[0].id;
		const struct enr_site *site = enr_check_find_site(result, id);
		/* Another account, allowed: its sites replace the record's. */
		if (!site && !e->site_id && e->allow_account_change)
			return;
		if (!site) {
			enr_error_set(ENR_E_USAGE, "%s lists no site %s for these credentials",
			              e->vendor->name, id);
			fail(e, ENR_E_USAGE);
			return;
		}
		save(e, site);
	}
}

/* ---- saving ------------------------------------------------------------ */

struct reauth_ctx {
	const struct enr_record *fresh;
	bool allow_account_change;
};

/* Whether `fresh` holds every site of `old`. */
static bool record_reaches(const struct enr_record *fresh, const struct enr_record *old)
{
	for (size_t i = 0; i < old->n_sites; i++) {
		bool found = false;
		for (size_t j = 0; j < fresh->n_sites && !found; j++)
			found = strcmp(fresh->sites[j].id, old->sites[i].id) == 0;
		if (!found)
			return false;
	}
	return true;
}

/* Re-authorization: new credentials into the stored record, same account. */
static int apply_reauth(struct enr_record *rec, void *ctx)
{
	const struct reauth_ctx *rc = ctx;
	const struct enr_record *fresh = rc->fresh;
	struct enr_record *copy = NULL;
	int err;

	if (rec->account && fresh->account && strcmp(rec->account, fresh->account) != 0 &&
	    !rc->allow_account_change)
		return enr_error_set(ENR_E_ACCOUNT,
		                     "the customer signed in with a different account than the "
		                     "one enrolled for record %s (%s): ask them to use the same "
		                     "account",
		                     rec->id, rec->customer ? rec->customer : "");
	err = enr_record_dup(&copy, fresh);
	if (err < 0)
		return err;
	/* Swap the credentials in, keep identity fields of the stored record. */
	{
		struct enr_credentials tmp = rec->cred;
		rec->cred = copy->cred;
		copy->cred = tmp;
	}
	/* An allowed change of account: the new account's sites, not the old ones. */
	if (rc->allow_account_change &&
	    ((rec->account && fresh->account && strcmp(rec->account, fresh->account) != 0) ||
	     !record_reaches(fresh, rec))) {
		struct enr_site *old_sites = rec->sites;
		size_t n_old = rec->n_sites;
		rec->sites = copy->sites;
		rec->n_sites = copy->n_sites;
		copy->sites = old_sites;
		copy->n_sites = n_old;
	}
	err = fresh->account ? enr_record_set(&rec->account, fresh->account) : 0;
	if (err == 0 && fresh->region)
		err = enr_record_set(&rec->region, fresh->region);
	rec->access_expires_at = fresh->access_expires_at;
	rec->refresh_expires_at = fresh->refresh_expires_at;
	/* The new check replaces the old one, a rejection's message included. */
	rec->last_check.at = fresh->last_check.at;
	rec->last_check.outcome = fresh->last_check.outcome;
	if (err == 0)
		err = enr_record_set(&rec->last_check.message, fresh->last_check.message);
	for (size_t i = 0; err == 0 && i < fresh->n_sites; i++)
		err = enr_record_add_site(rec, fresh->sites[i].id, fresh->sites[i].name);
	enr_record_free(copy);
	return err;
}

/* Saves the record, with `site` (NULL: a Join Flow enrollment Derapi lists no sites for). */
static int save(struct enr_enroll *e, const struct enr_site *site)
{
	return save_sites(e, site ? &site : NULL, site ? 1 : 0);
}

/* Saves `rec` holding `sites`: put (or, re-authorizing, update) it. */
static int save_record(struct enr_enroll *e, struct enr_record **rec,
                       const struct enr_site *const *sites, size_t n, bool *updated)
{
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++)
		rc = enr_record_add_site(*rec, sites[i]->id, sites[i]->name);
	if (rc < 0)
		return rc;
	if (n) {
		(*rec)->last_check.at = (long long)time(NULL);
		(*rec)->last_check.outcome = ENR_OUTCOME_OK;
	}
	if (!e->reauth)
		return enr_store_put(updated, e->store, *rec);
	struct reauth_ctx ctx = {*rec, e->allow_account_change};
	rc = enr_store_update(e->store, e->reauth->id, apply_reauth, &ctx);
	if (rc == 0) {
		enr_record_free(*rec);
		*rec = NULL;
		rc = enr_store_get(rec, e->store, e->reauth->id);
	}
	*updated = true;
	return rc;
}

/*
 * Whether the chosen sites go into one record: a re-authorization updates its
 * own, and credentials with a refresh token are one sign-in whose token each
 * record would spend (rotated, it would strand every other copy). Keys and
 * accounts are saved one record per site, each checked and shown on its own.
 */
static bool one_record(const struct enr_enroll *e)
{
	const struct enr_credentials *c = &e->rec->cred;

	return e->reauth || (c->tokens.refresh_token && c->tokens.refresh_token[0]);
}

static int save_sites(struct enr_enroll *e, const struct enr_site *const *sites, size_t n)
{
	char failed[MAX_TEXT] = "";
	size_t len = 0, saved = 0;
	int rc;

	if (n < 2 || one_record(e)) {
		if ((rc = save_record(e, &e->rec, sites, n, &e->updated)) < 0)
			return fail(e, rc);
		saved = 1;
	} else {
		struct enr_record *proto = e->rec;
		int first_error = 0;
		e->rec = NULL;
		if (!(e->more = calloc(n, sizeof(*e->more)))) {
			e->rec = proto;
			return fail(e, enr_error_set(ENR_E_NOMEM, NULL));
		}
		/* Each site is its own record: one that cannot be saved leaves the others saved. */
		for (size_t i = 0; i < n; i++) {
			struct enr_record *rec = NULL;
			bool updated = false;
			rc = enr_record_dup(&rec, proto);
			if (rc == 0 && rec->cred.type == ENR_CRED_ACCOUNT)
				rc = enr_record_set(&rec->cred.account.site_id, sites[i]->id);
			if (rc == 0)
				rc = save_record(e, &rec, &sites[i], 1, &updated);
			if (rc < 0) {
				enr_record_free(rec);
				first_error = first_error ? first_error : rc;
				if (len < sizeof(failed))
					len += (size_t)snprintf(failed + len, sizeof(failed) - len,
					                        "%ssite %s was not saved: %s",
					                        len ? "; " : "", sites[i]->id,
					                        enr_error_last());
				continue;
			}
			if (!e->rec) {
				e->rec = rec;
				e->updated = updated;
			} else {
				e->more[e->n_more++] = rec;
			}
			saved++;
		}
		if (!e->rec) {
			e->rec = proto;
			enr_error_set(first_error, "%s", failed);
			return fail(e, first_error);
		}
		enr_record_free(proto);
	}
	e->state = ENR_ENROLL_DONE;
	if (failed[0]) {
		free(e->warning);
		e->warning = enr_util_printf("%s: enroll it again", failed);
	}
	if (saved == 1)
		set_message(e, "%s %s for %s", e->updated ? "Updated" : "Saved", e->rec->id,
		            e->rec->customer ? e->rec->customer : "");
	else
		set_message(e, "Saved %zu records for %s", saved,
		            e->rec->customer ? e->rec->customer : "");
	return 0;
}

/* ---- OAuth ------------------------------------------------------------- */

/* The tokens of a code exchange, their id_token checked (`id_claims`, or NULL
 * when the answer had none): into the record, then the check call. */
static int take_tokens(struct enr_enroll *e, const struct enr_oauth_tokens *tokens,
                       struct json_object *id_claims)
{
	struct enr_oauth_identity *id = NULL;
	int rc;

	/* A refresh token asked for and not got: a record that needs the customer
	 * again within hours is no plain success. */
	rc = enr_oauth_check_refresh(e->flow, e->cfg, tokens);
	if (rc > 0) {
		free(e->warning);
		e->warning = enr_util_strdup(enr_error_last());
	}
	if (rc >= 0)
		rc = enr_record_set_tokens(e->rec, tokens);
	if (rc == 0)
		rc = enr_tesla_note_region(e->rec, tokens->refresh_token, tokens->access_token,
		                           NULL);
	if (!tokens->refresh_token)
		e->rec->refresh_expires_at = 0;
	if (rc == 0)
		rc = enr_oauth_identity_new(&id, e->vendor, tokens, id_claims);
	if (rc == 0) {
		rc = enr_record_set(&e->rec->account, id->account);
		if (id->warning && !e->warning)
			e->warning = enr_util_strdup(id->warning);
		if (e->reauth && e->reauth->account && id->account &&
		    strcmp(e->reauth->account, id->account) != 0 && !e->allow_account_change)
			rc = enr_error_set(
			    ENR_E_ACCOUNT,
			    "the customer signed in with a different %s account than "
			    "the one enrolled for record %s (%s): ask them to use the "
			    "same account",
			    e->vendor->name, e->reauth->id,
			    e->reauth->customer ? e->reauth->customer : "");
	}
	enr_oauth_identity_free(id);
	if (rc < 0)
		return rc;
	start_check(e); /* fails the session itself */
	return 0;
}

/* Checks the id_token (against `jwks` when the vendor publishes one) and
 * takes the tokens; frees them. */
static void verify_and_take(struct enr_enroll *e, struct enr_oauth_tokens *tokens, const char *jwks)
{
	struct json_object *claims = NULL;
	int rc = 0;

	if (tokens->id_token)
		rc = enr_oauth_verify_id_token(&claims, e->vendor, e->cfg, tokens->id_token, jwks);
	if (rc == 0)
		rc = take_tokens(e, tokens, claims);
	json_object_put(claims);
	enr_oauth_tokens_free(tokens);
	if (rc < 0)
		fail(e, rc);
}

static void on_jwks(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	struct enr_oauth_tokens *tokens = e->tokens;
	int rc = enr_http_classify(resp);

	e->transfer = 0;
	e->pending = PENDING_NONE;
	e->tokens = NULL;
	if (rc >= 0)
		verify_and_take(e, tokens, resp->body);
	else {
		enr_oauth_tokens_free(tokens);
		fail(e, rc);
	}
	enr_http_response_free(resp);
}

static void on_token(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	struct enr_oauth_tokens *tokens = NULL;
	struct enr_http_request *req = NULL;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	rc = enr_oauth_token_response(&tokens, resp);
	enr_http_response_free(resp);
	if (rc < 0) {
		fail(e, rc);
		return;
	}
	if (e->rec->cred.type == ENR_CRED_EMAIL) {
		/* The app's token for the backchannel, not the customer's. */
		e->cc_token = enr_util_strdup(tokens->access_token);
		enr_oauth_tokens_free(tokens);
		return;
	}
	/* Nothing in an id_token is believed before it is checked: with the
	 * vendor's published keys where there are some. */
	if (!tokens->id_token || (rc = enr_oauth_jwks_request(&req, e->vendor, e->cfg)) < 0 ||
	    !req) {
		if (rc < 0) {
			enr_oauth_tokens_free(tokens);
			fail(e, rc);
		} else {
			verify_and_take(e, tokens, NULL);
		}
		return;
	}
	e->tokens = tokens;
	set_message(e, "Checking %s's signature on the sign-in...", e->vendor->name);
	if ((rc = start_transfer(e, req, PENDING_JWKS, on_jwks)) < 0)
		fail(e, rc);
}

static int got_join_callback(struct enr_enroll *e, const char *text);

/* The customer's answer came back (relay, loopback or typed): exchange the code. */
static int got_callback(struct enr_enroll *e, const char *text)
{
	struct enr_oauth_callback *cb = NULL;
	struct enr_http_request *req = NULL;
	int rc;

	if (e->derapi)
		return got_join_callback(e, text);
	/* A bare code carries no state; anything else must carry ours. */
	rc = enr_oauth_callback_parse(&cb, e->vendor, text, e->flow->state);
	if (rc == 0 && (rc = enr_oauth_check_issuer(cb, e->vendor, e->cfg)) < 0)
		enr_oauth_callback_free(cb);
	if (rc < 0)
		return fail(e, rc);
	if (!cb->code) {
		enr_oauth_callback_free(cb);
		enr_error_set(ENR_E_BADRESPONSE, "%s sent the customer back without a code",
		              e->vendor->name);
		return fail(e, ENR_E_BADRESPONSE);
	}
	if (e->transfer) {
		enr_http_multi_cancel(e->multi, e->transfer);
		e->transfer = 0;
	}
	if (e->receiver)
		enr_oauth_receiver_cancel(e->receiver);
	e->next_at_ms = 0; /* no relay poll or link renewal from now on */
	/* Tesla's code names the customer's region (the tokens may confirm it). */
	rc = enr_tesla_note_region(e->rec, NULL, NULL, cb->code);
	if (rc == 0)
		rc = enr_oauth_code_request(&req, e->vendor, e->cfg, cb->code,
		                            e->flow->redirect_uri, e->flow->code_verifier);
	enr_oauth_callback_free(cb);
	if (rc < 0)
		return fail(e, rc);
	e->state = ENR_ENROLL_WAIT;
	e->deadline = 0;
	set_message(e, "The customer approved: getting the tokens from %s...", e->vendor->name);
	rc = start_transfer(e, req, PENDING_TOKEN, on_token);
	return rc < 0 ? fail(e, rc) : 0;
}

static void on_relay_result(struct enr_http_response *resp, void *ctx);

/* How long before the link's end it is renewed: RELAY_RENEW_S, or half the
 * time the relay gave it when that is short (a relay with a small cap). */
static long renew_before(const struct enr_enroll *e)
{
	return e->link_granted_s / 2 < RELAY_RENEW_S ? e->link_granted_s / 2 : RELAY_RENEW_S;
}

/* Whether the link ends before the customer's time does and is due for renewal. */
static bool link_needs_renewal(const struct enr_enroll *e)
{
	return e->link_expires_at && e->link_expires_at < e->deadline &&
	       e->link_expires_at - (long long)time(NULL) <= renew_before(e);
}

static int poll_relay(struct enr_enroll *e)
{
	struct enr_http_request *req = NULL;
	bool session = e->derapi && e->join_mode == ENR_JOIN_SESSION;
	long wait = session ? JOIN_RELAY_WAIT_S : RELAY_WAIT_S;
	int rc;

	/* A poll never outlasts the moment the link is to be renewed. */
	if (e->link_expires_at && e->link_expires_at < e->deadline) {
		long long until = e->link_expires_at - renew_before(e) - (long long)time(NULL);
		if (until < wait)
			wait = until > 1 ? (long)until : 1;
	}
	rc = enr_relay_result_request(&req, e->cfg, e->flow->state, wait);

	if (rc < 0)
		return fail(e, rc);
	rc = start_transfer(e, req, PENDING_RELAY_RESULT, on_relay_result);
	return rc < 0 ? fail(e, rc) : 0;
}

static void on_relay_link(struct enr_http_response *resp, void *ctx);

static void paste_message(struct enr_enroll *e)
{
	set_message(e, "After approving, type the code %s shows, or paste the final address",
	            e->vendor->name);
}

/* A typed code's short link: nothing comes back through the relay, so the
 * link is only renewed, at the moment a poll would have renewed it. */
static void renew_when_due(struct enr_enroll *e)
{
	long long at = e->link_expires_at - renew_before(e);
	long long now = (long long)time(NULL);

	e->next_at_ms = 0;
	if (e->link_expires_at && e->link_expires_at < e->deadline)
		e->next_at_ms = now_ms() + (at > now ? at - now : 0) * 1000;
}

static int register_link(struct enr_enroll *e)
{
	struct enr_http_request *req = NULL;
	/* One lifetime: the link lasts as long as the customer has (the relay
	 * may give less; it is then renewed). */
	long long left = e->deadline ? e->deadline - (long long)time(NULL) : e->timeout_s;
	long ttl = left < 60 ? 60 : left > ENR_RELAY_MAX_TTL ? ENR_RELAY_MAX_TTL : (long)left;
	int rc;

	rc = enr_relay_join_link_request(&req, e->cfg, e->flow->url, e->flow->state, ttl,
	                                 e->vendor->name, e->session_id);
	if (rc < 0)
		return fail(e, rc);
	rc = start_transfer(e, req, PENDING_RELAY_LINK, on_relay_link);
	return rc < 0 ? fail(e, rc) : 0;
}

static void on_relay_link(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	char *url = NULL;
	long long expires_at = 0;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	rc = enr_relay_link_response(&url, &expires_at, resp);
	enr_http_response_free(resp);
	if (rc == ENR_E_TRANSIENT && e->consent == ENR_CONSENT_PASTE && e->link) {
		/* A renewal the relay missed: the code is typed in meanwhile. */
		e->next_at_ms = now_ms() + RETRY_MS;
		return;
	}
	if (rc < 0 && e->consent == ENR_CONSENT_PASTE && !e->link) {
		/* The code is typed whatever the relay does: without its short link
		 * the phone gets the vendor's own address. */
		enr_log_info("no short link from the relay (%s): showing %s's address",
		             enr_error_last(), e->vendor->name);
		if (!(e->link = enr_util_strdup(e->flow->url))) {
			fail(e, ENR_E_NOMEM);
			return;
		}
		e->state = ENR_ENROLL_LINK;
		paste_message(e);
		return;
	}
	if (rc < 0) {
		fail(e, rc);
		return;
	}
	free(e->link);
	e->link = url;
	e->link_expires_at = expires_at ? expires_at : e->deadline;
	e->link_granted_s = (long)(e->link_expires_at - (long long)time(NULL));
	e->state = ENR_ENROLL_LINK;
	if (e->consent == ENR_CONSENT_PASTE) {
		paste_message(e);
		renew_when_due(e);
		return;
	}
	set_message(e, "Waiting for the customer to approve on their phone");
	poll_relay(e);
}

static int fetch_token(struct enr_enroll *e);

/* A Join session asks Derapi itself too: a failed widget or a closed tab
 * never tells the relay, and the page may not report what Derapi has. */
static void own_fetch(struct enr_enroll *e)
{
	e->own_poll = true;
	fetch_token(e);
}

static void on_relay_result(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	char *query = NULL;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	rc = enr_relay_result_response(&query, resp);
	enr_http_response_free(resp);
	if (rc == 0) {
		got_callback(e, query);
		enr_util_free_secret(query);
		return;
	}
	if (rc == ENR_E_AGAIN) {
		/* Nothing yet: the same short link renewed before it ends, while the
		 * customer still has time. */
		if (link_needs_renewal(e))
			register_link(e);
		else if (e->derapi && e->join_mode == ENR_JOIN_SESSION && e->session_id)
			own_fetch(e);
		else
			poll_relay(e);
		return;
	}
	if (rc == ENR_E_TRANSIENT) {
		/* A flaky connection: keep waiting, try again shortly. */
		set_message(e, "Waiting for the customer (connection to the relay lost, retrying)");
		e->next_at_ms = now_ms() + RETRY_MS;
		return;
	}
	if (rc == ENR_E_EXPIRED && e->deadline > (long long)time(NULL)) {
		register_link(e);
		return;
	}
	fail(e, rc);
}

/* Whether `url` starts with the configured relay's URL. */
static bool is_relay_url(const struct enr_config *cfg, const char *url)
{
	const char *relay = enr_config_get(cfg, "relay", "url");
	size_t len = relay ? strlen(relay) : 0;

	while (len > 0 && relay[len - 1] == '/')
		len--;
	return len && url && strncmp(url, relay, len) == 0 && (url[len] == '/' || !url[len]);
}

/* An RFC 8252 loopback redirect: http://127.0.0.1[:port]/callback (any port). */
static bool is_loopback_url(const char *url)
{
	static const char *const hosts[] = {"http://127.0.0.1", "http://localhost", "http://[::1]"};

	for (size_t i = 0; i < ENR_ARRAY_SIZE(hosts); i++) {
		size_t len = strlen(hosts[i]);
		const char *rest = url + len;
		if (strncmp(url, hosts[i], len) != 0)
			continue;
		if (*rest == ':')
			rest += strspn(rest + 1, "0123456789") + 1;
		return strcmp(rest, "/callback") == 0;
	}
	return false;
}

static int start_oauth(struct enr_enroll *e, enum enr_consent consent)
{
	struct enr_oauth_authorize_options opts = {0};
	const char *redirect = enr_vendor_setting(e->vendor, e->cfg, "redirect_uri");
	bool chosen = consent != ENR_CONSENT_AUTO; /* `--code`: the authorize URL itself */
	int rc;

	/* Configured, else the vendor's own (Enphase's code page), else the relay's. */
	if (!redirect)
		redirect = enr_vendor_default_endpoint(e->vendor, "redirect_uri");
	if (!redirect && enr_relay_client_configured(e->cfg)) {
		e->redirect_uri =
		    enr_util_printf("%s/callback", enr_config_get(e->cfg, "relay", "url"));
		if (!e->redirect_uri)
			return ENR_E_NOMEM;
		redirect = e->redirect_uri;
	}
	if (consent == ENR_CONSENT_AUTO) {
		/* A redirect URI that is neither the relay nor a loopback listener
		 * is a page that shows the code (Enphase's own): it is typed in. */
		if (redirect && is_relay_url(e->cfg, redirect))
			consent = ENR_CONSENT_RELAY;
		else if (!redirect || is_loopback_url(redirect))
			consent = ENR_CONSENT_LOOPBACK;
		else
			consent = ENR_CONSENT_PASTE;
	}
	if (consent == ENR_CONSENT_RELAY && !enr_relay_client_configured(e->cfg))
		return enr_error_set(ENR_E_CONFIG,
		                     "no relay is configured: set [relay] url in %s, or let the "
		                     "customer sign in on this computer",
		                     enr_config_file_name(e->cfg));
	if (consent != ENR_CONSENT_LOOPBACK)
		opts.redirect_uri = redirect;
	e->consent = consent;
	if (consent == ENR_CONSENT_LOOPBACK) {
		rc = enr_oauth_receiver_new(&e->receiver, e->timeout_s * 1000);
		if (rc < 0)
			return rc;
		opts.redirect_uri = enr_oauth_receiver_redirect_uri(e->receiver);
		opts.pkce = true; /* RFC 8252 8.1: every native app's loopback flow */
	}
	rc = enr_oauth_flow_new(&e->flow, e->vendor, e->cfg, &opts);
	if (rc == 0 && e->receiver) /* the browser's page can then tell another sign-in's answer */
		rc = enr_oauth_receiver_expect_state(e->receiver, e->flow->state);
	if (rc < 0)
		return rc;
	e->deadline = (long long)time(NULL) + e->timeout_s;
	/* The phone gets the relay's short link whenever there is a relay, also
	 * when the vendor's page shows a code to type (nothing is then polled for). */
	if (consent == ENR_CONSENT_RELAY ||
	    (consent == ENR_CONSENT_PASTE && !chosen && enr_relay_client_configured(e->cfg))) {
		e->state = ENR_ENROLL_WAIT;
		set_message(e, "Making a short link for the customer's phone...");
		return register_link(e);
	}
	e->link = enr_util_strdup(e->flow->url);
	if (!e->link)
		return ENR_E_NOMEM;
	e->state = ENR_ENROLL_LINK;
	if (consent == ENR_CONSENT_LOOPBACK)
		set_message(e, "Sign in to %s in this computer's browser", e->vendor->name);
	else
		paste_message(e);
	return 0;
}

/* ---- Derapi Join ------------------------------------------------------- */

static void on_join_fetch(struct enr_http_response *resp, void *ctx);

static int fetch_token(struct enr_enroll *e)
{
	struct enr_http_request *req = NULL;
	int rc = enr_join_fetch_request(&req, e->derapi, e->cfg, e->derapi_token, e->session_id);

	if (rc < 0)
		return fail(e, rc);
	rc = start_transfer(e, req, PENDING_JOIN, on_join_fetch);
	return rc < 0 ? fail(e, rc) : 0;
}

/* The vendor the customer chose in the Join page (`name` as Derapi spells
 * it) becomes the session's and the record's. */
static int take_chosen_vendor(struct enr_enroll *e, const char *name)
{
	for (size_t i = 0; name && i < enr_catalog_count(e->catalog); i++) {
		const struct enr_vendor *v = enr_catalog_at(e->catalog, i);
		const struct enr_method *m = enr_vendor_method(v, "join");
		if (!m || v == e->derapi || strcmp(enr_join_vendor_name(v), name) != 0)
			continue;
		e->vendor = v;
		e->method = m;
		e->any_vendor = false;
		return enr_record_set(&e->rec->vendor, v->id);
	}
	return enr_error_set(ENR_E_BADRESPONSE,
	                     name ? "Derapi handed over an authorization for vendor \"%.40s\", "
	                            "which derenroll does not know"
	                          : "Derapi did not say which vendor the customer chose%.0s",
	                     name ? name : "");
}

static int take_join_credentials(struct enr_enroll *e, const struct enr_join_credentials *c)
{
	struct enr_credentials *cred = &e->rec->cred;
	int rc = 0;

	if (e->any_vendor) {
		rc = take_chosen_vendor(e, c->vendor);
		if (rc < 0)
			return rc;
	}
	if (c->tokens) {
		rc = enr_record_set_tokens(e->rec, c->tokens);
		if (!c->tokens->refresh_token)
			e->rec->refresh_expires_at = 0;
	}
	if (rc == 0 && c->api_key)
		rc = enr_record_set(&cred->api_key, c->api_key);
	if (rc == 0 && c->key_id)
		rc = enr_record_set(&cred->key_id, c->key_id);
	if (rc == 0 && c->key_secret)
		rc = enr_record_set(&cred->key_secret, c->key_secret);
	/* Enphase Grid Services names the customer's site. */
	if (rc == 0 && c->site_id && !e->site_id && !(e->site_id = enr_util_strdup(c->site_id)))
		rc = enr_error_set(ENR_E_NOMEM, NULL);
	return rc;
}

static void on_join_fetch(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	struct enr_join_credentials *c = NULL;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	rc = enr_join_fetch_response(&c, resp);
	if (rc < 0 && !resp->error && resp->status == 401)
		enr_join_token_forget();
	enr_http_response_free(resp);
	if (e->own_poll) {
		e->own_poll = false;
		if (rc < 0) {
			/* Not (yet) done: the customer may still retry in the widget. */
			if (rc != ENR_E_AGAIN) {
				free(e->join_problem);
				e->join_problem = enr_util_strdup(enr_error_last());
			}
			enr_error_clear();
			poll_relay(e);
			return;
		}
		e->state = ENR_ENROLL_WAIT;
	}
	/* The customer may not have finished in the Join page yet: keep asking
	 * until the deadline. */
	if ((rc == ENR_E_AGAIN || rc == ENR_E_TRANSIENT) && e->deadline > (long long)time(NULL)) {
		set_message(e, "Waiting for Derapi to hand over the %s authorization",
		            e->vendor->name);
		e->next_at_ms = now_ms() + FETCH_POLL_MS;
		return;
	}
	if (rc == ENR_E_AGAIN)
		rc = enr_error_set(ENR_E_EXPIRED, "the customer did not finish in the Join page in "
		                                  "time: start again");
	if (rc == 0)
		rc = take_join_credentials(e, c);
	enr_join_credentials_free(c);
	if (rc < 0) {
		fail(e, rc);
		return;
	}
	e->fetching = false;
	start_check(e);
}

/* Derapi's redirect (Join Flows) or the Join page's report (sessions) came back. */
static int got_join_callback(struct enr_enroll *e, const char *text)
{
	struct enr_credentials *cred = &e->rec->cred;
	struct enr_oauth_callback *cb = NULL;
	const char *enrollment;
	int rc;

	rc = enr_oauth_callback_parse(&cb, e->vendor, text, e->flow->state);
	if (rc < 0)
		return fail(e, rc);
	if (e->transfer) {
		enr_http_multi_cancel(e->multi, e->transfer);
		e->transfer = 0;
	}
	e->state = ENR_ENROLL_WAIT;
	if (e->join_mode == ENR_JOIN_SESSION) {
		const char *kept = enr_oauth_callback_param(cb, "join_fetch_token");
		struct enr_join_credentials *c = NULL;
		if (kept) {
			/* The relay's proxy kept fetch-token's answer for us. */
			rc = enr_join_fetch_parse(&c, kept);
			if (rc == 0)
				rc = take_join_credentials(e, c);
			enr_join_credentials_free(c);
			enr_oauth_callback_free(cb);
			if (rc < 0)
				return fail(e, rc);
			set_message(e, "The customer approved: checking the %s authorization...",
			            e->vendor->name);
			return start_check(e);
		}
		enr_oauth_callback_free(cb);
		e->fetching = true;
		set_message(e, "The customer approved: getting the authorization from Derapi...");
		return fetch_token(e);
	}
	enrollment = enr_oauth_callback_param(cb, "enrollmentID");
	rc = enr_record_set(&cred->join.enrollment_id,
	                    enrollment && enrollment[0] ? enrollment : NULL);
	if (rc == 0)
		rc = enr_record_set(&cred->join.flow_id,
		                    enr_config_get(e->cfg, "derapi", "flow_id"));
	if (rc == 0)
		rc = enr_record_set(&cred->join.program_id, enr_join_program_id(e->vendor, e->cfg));
	enr_oauth_callback_free(cb);
	if (rc < 0)
		return fail(e, rc);
	/* Without a program Derapi names no enrollment: nothing to read back. */
	if (!cred->join.enrollment_id) {
		e->deadline = 0;
		return save(e, NULL);
	}
	return start_check(e);
}

/* Puts `url` (a Join link) behind a relay short link; takes url and state. */
static int join_link(struct enr_enroll *e, char *url, char *state)
{
	int rc;

	e->flow = calloc(1, sizeof(*e->flow));
	if (!e->flow) {
		free(url);
		free(state);
		return fail(e, enr_error_set(ENR_E_NOMEM, NULL));
	}
	e->flow->vendor = e->vendor;
	e->flow->url = url;
	e->flow->state = state;
	rc = enr_record_set(&e->rec->cred.join.state, state);
	if (rc < 0)
		return fail(e, rc);
	set_message(e, "Making a short link for the customer's phone...");
	return register_link(e);
}

static void on_join_flow(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	const char *flow_id = enr_config_get(e->cfg, "derapi", "flow_id");
	char *url = NULL, *state = NULL;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	rc = enr_join_flow_has_vendor(resp, flow_id, e->vendor);
	if (rc < 0 && !resp->error && resp->status == 401)
		enr_join_token_forget();
	enr_http_response_free(resp);
	if (rc == 0)
		rc = enr_join_authorize_url(&url, &state, e->derapi, e->cfg, flow_id, e->vendor);
	if (rc < 0) {
		fail(e, rc);
		return;
	}
	join_link(e, url, state);
}

static void on_join_session(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	const char *relay = enr_config_get(e->cfg, "relay", "url");
	size_t len = strlen(relay);
	char *state = NULL, *url = NULL, *session = NULL;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	rc = enr_join_session_response(&e->session_id, resp);
	if (rc < 0 && !resp->error && resp->status == 401)
		enr_join_token_forget();
	enr_http_response_free(resp);
	if (rc < 0) {
		fail(e, rc);
		return;
	}
	/* The company's Join page on the relay; the app token stays here. */
	while (len > 0 && relay[len - 1] == '/')
		len--;
	state = enr_util_random_token(16);
	session = enr_util_urlencode(e->session_id);
	if (state && session)
		url = enr_util_printf("%.*s/join?session=%s&state=%s", (int)len, relay, session,
		                      state);
	free(session);
	if (!url) {
		free(state);
		fail(e, enr_error_set(ENR_E_NOMEM, NULL));
		return;
	}
	join_link(e, url, state);
}

/* With the app token: read the flow, or start a Join session. */
static int join_begin(struct enr_enroll *e)
{
	struct enr_http_request *req = NULL;
	enr_http_done_fn done = on_join_session;
	char *flow = NULL, *path = NULL;
	int rc;

	if (e->join_mode == ENR_JOIN_FLOW) {
		flow = enr_util_urlencode(enr_config_get(e->cfg, "derapi", "flow_id"));
		path = flow ? enr_util_printf("/join/flows/%s", flow) : NULL;
		rc = path ? enr_join_request(&req, e->derapi, e->cfg, "GET", path, e->derapi_token)
		          : enr_error_set(ENR_E_NOMEM, NULL);
		done = on_join_flow;
		set_message(e, "Reading the Derapi Join flow...");
	} else {
		rc = e->any_vendor ? enr_join_session_request_any(&req, e->derapi, e->catalog,
		                                                  e->cfg, e->derapi_token)
		                   : enr_join_session_request(&req, e->derapi, e->cfg,
		                                              e->derapi_token, e->vendor);
		set_message(e, "Starting a Derapi Join session...");
	}
	free(path);
	free(flow);
	if (rc < 0)
		return fail(e, rc);
	rc = start_transfer(e, req, PENDING_JOIN, done);
	return rc < 0 ? fail(e, rc) : 0;
}

static void on_derapi_token(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	rc = enr_join_token_response(&e->derapi_token, e->cfg, resp);
	enr_http_response_free(resp);
	if (rc < 0)
		fail(e, rc);
	else
		join_begin(e);
}

static int start_join(struct enr_enroll *e, const struct enr_enroll_options *opts)
{
	struct enr_http_request *req = NULL;
	const char *flow_id = enr_config_get(e->cfg, "derapi", "flow_id");
	char *reason = NULL;
	int rc;

	e->derapi = enr_catalog_find(opts->catalog, "derapi");
	if (!e->derapi)
		return enr_error_set(ENR_E_CONFIG, "vendors.json has no derapi entry");
	e->catalog = opts->catalog;
	/* A flow's authorize link names the vendor: only a session lets the
	 * customer choose. */
	e->join_mode = e->any_vendor ? ENR_JOIN_SESSION : opts->join_mode;
	e->consent = ENR_CONSENT_RELAY;
	if (!enr_join_available(e->cfg, &reason)) {
		rc =
		    enr_error_set(ENR_E_CONFIG, "%s", reason ? reason : "Derapi is not configured");
		free(reason);
		return rc;
	}
	if (e->join_mode == ENR_JOIN_FLOW && (!flow_id || !flow_id[0]))
		return enr_error_set(
		    ENR_E_CONFIG,
		    "Derapi Join Flows need a flow: run derenroll join create-flow "
		    "--redirect-uri <relay url>/callback --vendors %s --save (or "
		    "use --join-mode session)",
		    enr_join_vendor_name(e->vendor));
	if (!enr_relay_client_configured(e->cfg))
		return enr_error_set(ENR_E_CONFIG,
		                     "Derapi Join brings the customer's answer back "
		                     "through the relay: set [relay] url in %s",
		                     enr_config_file_name(e->cfg));
	e->deadline = (long long)time(NULL) + e->timeout_s;
	e->state = ENR_ENROLL_WAIT;
	rc = enr_join_token_cached(&e->derapi_token, e->cfg);
	if (rc == 0)
		return join_begin(e);
	rc = enr_join_token_request(&req, e->derapi, e->cfg);
	if (rc < 0)
		return rc;
	set_message(e, "Signing in to Derapi...");
	rc = start_transfer(e, req, PENDING_JOIN, on_derapi_token);
	return rc < 0 ? fail(e, rc) : 0;
}

/* ---- SMA's backchannel (e-mail) ---------------------------------------- */

static void on_bc(struct enr_http_response *resp, void *ctx);

static int bc_request(struct enr_enroll *e, bool start)
{
	const struct enr_method *m = e->method;
	struct enr_http_request *req = NULL;
	char *url = NULL, *path = NULL, *hint = NULL;
	int rc;

	if (start) {
		url = enr_vendor_url(e->vendor, e->cfg, m->endpoint, m->path);
	} else {
		hint = enr_util_urlencode(e->rec->cred.owner_email);
		path = hint ? enr_util_printf("%s/%s", m->path, hint) : NULL;
		url = path ? enr_vendor_url(e->vendor, e->cfg, m->endpoint, path) : NULL;
	}
	if (!url) {
		rc = enr_error_last_code();
		goto out;
	}
	rc = enr_http_request_new(&req, start ? "POST" : "GET", url);
	if (rc == 0)
		rc = enr_http_request_set_vendor(req, e->vendor, m->endpoint);
	if (rc == 0)
		rc = enr_http_request_set_bearer(req, e->cc_token);
	if (rc == 0 && start) {
		json_object *body = json_object_new_object();
		const char *text;
		json_object_object_add(body, "loginHint",
		                       json_object_new_string(e->rec->cred.owner_email));
		text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
		rc = enr_http_request_set_body(req, "application/json", text, strlen(text));
		json_object_put(body);
	}
	if (rc == 0) {
		rc = start_transfer(e, req, start ? PENDING_BC_START : PENDING_BC_POLL, on_bc);
		req = NULL;
	}
out:
	enr_http_request_free(req);
	free(url);
	free(path);
	free(hint);
	return rc < 0 ? fail(e, rc) : 0;
}

/*
 * SMA's state of a consent request, as SMA spells it ("Pending", "Accepted",
 * "Rejected", ...: capitalised) whatever the case of the answer: 1 accepted,
 * 0 pending, else the failure, with the vendors.json guidance for the state
 * (the refusal names are unconfirmed: they live there, not here).
 */
static int bc_state(const struct enr_vendor *vendor, const char *state)
{
	char name[32];
	size_t len = strlen(state);

	if (len == 0 || len >= sizeof(name))
		return enr_error_set(ENR_E_BADRESPONSE,
		                     "%s sent a consent state it does not explain", vendor->name);
	for (size_t i = 0; i < len; i++)
		name[i] =
		    (char)(i ? tolower((unsigned char)state[i]) : toupper((unsigned char)state[i]));
	name[len] = '\0';
	if (strcmp(name, "Accepted") == 0)
		return 1;
	if (strcmp(name, "Pending") == 0)
		return 0;
	if (enr_vendor_guidance(vendor, 200, name))
		return enr_http_vendor_error(vendor, 200, name, ENR_E_DECLINED, "%s", name);
	return enr_error_set(ENR_E_BADRESPONSE,
	                     "%s answered consent state \"%.31s\", which derenroll does not know: "
	                     "ask the owner to check the e-mail, then try again",
	                     vendor->name, name);
}

/* A POST for an owner who consented before: SMA answers 400 or 409, and
 * that owner's plants are readable already. */
static bool bc_already_consented(const struct enr_http_response *resp, bool start)
{
	return start && !resp->error && (resp->status == 409 || resp->status == 400);
}

int enr_enroll__bc_answer(const struct enr_http_response *resp)
{
	json_object *root = NULL, *state = NULL;
	int rc = enr_http_classify(resp);

	if (rc == 0)
		rc = enr_http_response_json(&root, resp);
	if (rc == 0 && (!json_object_object_get_ex(root, "state", &state) ||
	                !json_object_is_type(state, json_type_string)))
		rc = enr_http_badresponse(resp, "no state in the consent answer");
	if (rc == 0)
		rc = bc_state(resp->vendor, json_object_get_string(state));
	json_object_put(root);
	return rc;
}

static void on_bc(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;
	bool start = e->pending == PENDING_BC_START;
	int rc;

	e->transfer = 0;
	e->pending = PENDING_NONE;
	if (bc_already_consented(resp, start)) {
		enr_http_response_free(resp);
		set_message(e, "SMA says %s consented before: reading the plants",
		            e->rec->cred.owner_email);
		start_check(e);
		return;
	}
	rc = enr_http_classify(resp);
	/* A Retry-After beyond [http] max_wait is not waited for: the message
	 * says when to try again. */
	if (rc == ENR_E_TRANSIENT && e->deadline > (long long)time(NULL) &&
	    resp->retry_after <= enr_http__max_wait_s(e->cfg)) {
		e->next_at_ms =
		    now_ms() + (resp->retry_after > 0 ? resp->retry_after * 1000 : RETRY_MS);
		enr_http_response_free(resp);
		return;
	}
	if (rc == 0)
		rc = enr_enroll__bc_answer(resp);
	enr_http_response_free(resp);
	if (rc < 0) {
		fail(e, rc);
		return;
	}
	if (rc == 1) {
		start_check(e);
		return;
	}
	e->state = ENR_ENROLL_WAIT;
	set_message(e, "SMA e-mailed %s: waiting for the owner to approve",
	            e->rec->cred.owner_email);
	e->next_at_ms = now_ms() + BC_POLL_MS;
}

static void on_cc_token(struct enr_http_response *resp, void *ctx)
{
	struct enr_enroll *e = ctx;

	on_token(resp, ctx);
	if (e->state != ENR_ENROLL_FAILED)
		bc_request(e, true);
}

static int start_email(struct enr_enroll *e)
{
	struct enr_http_request *req = NULL;
	int rc = enr_oauth_client_credentials_request(&req, e->vendor, e->cfg, NULL);

	if (rc < 0)
		return fail(e, rc);
	e->deadline = (long long)time(NULL) + e->timeout_s;
	e->state = ENR_ENROLL_WAIT;
	set_message(e, "Asking SMA to e-mail the owner...");
	rc = start_transfer(e, req, PENDING_TOKEN, on_cc_token);
	return rc < 0 ? fail(e, rc) : 0;
}

/* ---- fields ------------------------------------------------------------ */

static int field_index(const struct enr_enroll *e, const char *name)
{
	for (size_t i = 0; i < e->method->n_fields; i++)
		if (strcmp(e->method->fields[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int validate_field(const struct enr_enroll *e, const struct enr_field *f, const char *value)
{
	regex_t re;
	int match;

	if (!value || !value[0])
		return f->optional
		           ? 0
		           : enr_error_set(ENR_E_USAGE, "%s is required: %s", f->label, f->help);
	if (!f->pattern)
		return 0;
	if (regcomp(&re, f->pattern, REG_EXTENDED | REG_NOSUB) != 0)
		return enr_error_set(ENR_E_CONFIG, "vendors.json: bad pattern for %s", f->name);
	match = regexec(&re, value, 0, NULL, 0);
	regfree(&re);
	if (match != 0)
		return enr_error_set(ENR_E_USAGE, "%s does not look right: %s", f->label, f->help);
	(void)e;
	return 0;
}

int enr_enroll_set_field(struct enr_enroll *e, const char *name, const char *value)
{
	int i = field_index(e, name);
	char *copy;
	int rc;

	if (e->state != ENR_ENROLL_FIELDS)
		return enr_error_set(ENR_E_USAGE, "no fields are asked for now");
	if (i < 0)
		return enr_error_set(ENR_E_USAGE, "%s %s asks for no field '%s'", e->vendor->name,
		                     e->method->id, name);
	copy = enr_util_strdup(value ? value : "");
	if (!copy)
		return ENR_E_NOMEM;
	enr_util_trim(copy);
	if (e->method->fields[i].secret)
		enr_log_add_secret(copy);
	rc = validate_field(e, &e->method->fields[i], copy);
	if (rc < 0) {
		enr_util_free_secret(copy);
		return rc;
	}
	enr_util_free_secret(e->values[i]);
	e->values[i] = copy;
	return 0;
}

static const char *value_of(const struct enr_enroll *e, const char *name)
{
	int i = field_index(e, name);
	return i >= 0 && e->values[i] && e->values[i][0] ? e->values[i] : NULL;
}

int enr_enroll_submit_fields(struct enr_enroll *e)
{
	struct enr_credentials *c = &e->rec->cred;
	int rc = 0;

	if (e->state != ENR_ENROLL_FIELDS)
		return enr_error_set(ENR_E_USAGE, "no fields are asked for now");
	for (size_t i = 0; i < e->method->n_fields; i++) {
		rc = validate_field(e, &e->method->fields[i], e->values[i]);
		if (rc < 0)
			return rc;
	}
	switch (c->type) {
	case ENR_CRED_API_KEY:
		rc = enr_record_set(&c->api_key, value_of(e, "api_key"));
		break;
	case ENR_CRED_KEY_PAIR:
		rc = enr_record_set(&c->key_id, value_of(e, "key_id"));
		if (rc == 0)
			rc = enr_record_set(&c->key_secret, value_of(e, "key_secret"));
		break;
	case ENR_CRED_PARTNER:
		rc = enr_record_set(&c->tokens.access_token, value_of(e, "access_token"));
		if (rc == 0)
			rc = enr_record_set(&c->tokens.refresh_token, value_of(e, "refresh_token"));
		if (rc == 0)
			rc = enr_record_set(&c->api_key, value_of(e, "api_key"));
		break;
	case ENR_CRED_EMAIL:
		rc = enr_record_set(&c->owner_email, value_of(e, "owner_email"));
		break;
	default:
		break;
	}
	if (rc < 0)
		return fail(e, rc);
	free_values(e);
	if (c->type == ENR_CRED_EMAIL)
		return start_email(e);
	if (c->type == ENR_CRED_PARTNER) {
		/* Expiry and account come from the token itself when it is a JWT. */
		struct enr_oauth_tokens t = {.access_token = c->tokens.access_token};
		struct enr_oauth_identity *id = NULL;
		if (enr_oauth_identity_new(&id, e->vendor, &t, NULL) == 0) {
			e->rec->access_expires_at = id->expires_at;
			enr_record_set(&e->rec->account, id->account);
		}
		enr_oauth_identity_free(id);
		if (c->tokens.refresh_token && e->vendor->tokens.refresh_ttl)
			e->rec->refresh_expires_at =
			    (long long)time(NULL) + e->vendor->tokens.refresh_ttl;
	}
	return start_check(e);
}

static void on_relay_taken(struct enr_http_response *resp, void *ctx)
{
	(void)ctx;
	if (resp->error || resp->status != 204)
		enr_log_info("the relay was not told that the code was pasted (HTTP %ld): the "
		             "customer's link may say it expired",
		             resp->status);
	enr_http_response_free(resp);
}

/* The relay's link was answered by a pasted address: the customer's later
 * visits to it then say "done". Nobody waits for the answer. */
static void tell_relay_taken(struct enr_enroll *e)
{
	struct enr_http_request *req = NULL;
	uint64_t id;

	if (enr_relay_taken_request(&req, e->cfg, e->flow->state) == 0)
		enr_http_multi_add(&id, e->multi, req, on_relay_taken, NULL);
	enr_http_request_free(req);
}

int enr_enroll_submit_code(struct enr_enroll *e, const char *text)
{
	char *copy;
	int rc;

	if (e->state != ENR_ENROLL_LINK || !e->flow)
		return enr_error_set(ENR_E_USAGE, "no code is expected now");
	/* A code not in the vendor's shape is a typo: said here, the session waits
	 * for the right one. */
	rc = enr_oauth_normalize_code(&copy, e->derapi ? NULL : e->vendor, text);
	if (rc < 0)
		return rc;
	if (!copy[0]) {
		free(copy);
		return enr_error_set(ENR_E_USAGE, "type the code, or paste the address");
	}
	rc = got_callback(e, copy);
	enr_util_free_secret(copy);
	/* A relay link (e->link_expires_at set) answered another way says so. */
	if (rc == 0 && e->link_expires_at && !e->derapi &&
	    (e->consent == ENR_CONSENT_RELAY || e->consent == ENR_CONSENT_PASTE))
		tell_relay_taken(e);
	return rc;
}

/* ---- the session ------------------------------------------------------- */

static enum enr_cred_type cred_type_of(const char *method, const char *vendor)
{
	if (strcmp(method, "oauth") == 0)
		return ENR_CRED_OAUTH;
	if (strcmp(method, "email") == 0)
		return ENR_CRED_EMAIL;
	if (strcmp(method, "partner") == 0)
		return ENR_CRED_PARTNER;
	if (strcmp(method, "account") == 0)
		return ENR_CRED_ACCOUNT;
	if (strcmp(method, "join") == 0)
		return ENR_CRED_JOIN;
	/* "key": a key pair for Solis, one API key elsewhere. */
	return strcmp(vendor, "solis") == 0 ? ENR_CRED_KEY_PAIR : ENR_CRED_API_KEY;
}

static int start_account(struct enr_enroll *e)
{
	const char *secret_key = strcmp(e->vendor->id, "solis") == 0 ? "key_secret" : "api_key";
	char *name = enr_util_printf("%s.%s", e->vendor->config_section, secret_key);
	int rc;

	if (!name)
		return ENR_E_NOMEM;
	rc = enr_record_set(&e->rec->cred.account.secret_name, name);
	free(name);
	return rc < 0 ? rc : start_check(e);
}

int enr_enroll_check_customer(const char *customer)
{
	if (!customer || !customer[0])
		return enr_error_set(ENR_E_USAGE, "a customer reference is required (name, "
		                                  "address or job number)");
	return enr_text_check("the customer reference", customer, ENR_TEXT_CUSTOMER_MAX);
}

int enr_enroll_new(struct enr_enroll **out, const struct enr_enroll_options *opts)
{
	struct enr_enroll *e = NULL;
	const char *vendor_id = opts->vendor, *method_id = opts->method;
	int rc;

	*out = NULL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return enr_error_set(ENR_E_NOMEM, NULL);
	e->store = opts->store;
	e->cfg = opts->cfg;
	e->timeout_s = opts->timeout_s > 0 ? opts->timeout_s : DEFAULT_TIMEOUT_S;
	e->allow_account_change = opts->allow_account_change;
	e->state = ENR_ENROLL_WAIT;
	if (opts->reauth_id) {
		rc = enr_store_get(&e->reauth, opts->store, opts->reauth_id);
		if (rc < 0)
			goto out;
		vendor_id = e->reauth->vendor;
		method_id = e->reauth->method;
	}
	if (!vendor_id && method_id && strcmp(method_id, "join") == 0) {
		/* Derapi Join for any vendor: the customer chooses in the Join page. */
		e->any_vendor = true;
		vendor_id = "derapi";
	}
	if (!vendor_id) {
		rc = enr_error_set(ENR_E_USAGE, "no vendor given");
		goto out;
	}
	e->vendor = enr_catalog_find(opts->catalog, vendor_id);
	if (!e->vendor || (strcmp(e->vendor->id, "derapi") == 0 && !e->any_vendor)) {
		if (e->vendor)
			enr_error_set(ENR_E_USAGE, "Derapi is not a vendor: use --method join");
		rc = ENR_E_USAGE;
		goto out;
	}
	e->method = method_id ? enr_vendor_method(e->vendor, method_id) : &e->vendor->methods[0];
	if (!e->method) {
		rc = ENR_E_USAGE;
		goto out;
	}
	if (!opts->reauth_id && (rc = enr_enroll_check_customer(opts->customer)) < 0)
		goto out;
	if (opts->site_id && !(e->site_id = enr_util_strdup(opts->site_id))) {
		rc = ENR_E_NOMEM;
		goto out;
	}
	rc = enr_record_new(&e->rec);
	if (rc == 0)
		rc = enr_record_set(&e->rec->customer,
		                    opts->reauth_id ? e->reauth->customer : opts->customer);
	if (rc == 0)
		rc = enr_record_set(&e->rec->vendor, e->vendor->id);
	if (rc == 0)
		rc = enr_record_set(&e->rec->method, e->method->id);
	if (rc < 0)
		goto out;
	e->rec->cred.type = cred_type_of(e->method->id, e->vendor->id);
	if (opts->multi) {
		e->multi = opts->multi;
	} else {
		rc = enr_http_multi_new(&e->multi, opts->cfg);
		if (rc < 0)
			goto out;
		e->own_multi = true;
	}

	if (strcmp(e->method->id, "join") == 0) {
		rc = start_join(e, opts);
	} else if (e->method->n_fields) {
		e->values = calloc(e->method->n_fields, sizeof(*e->values));
		if (!e->values) {
			rc = enr_error_set(ENR_E_NOMEM, NULL);
			goto out;
		}
		e->state = ENR_ENROLL_FIELDS;
		set_message(e, "%s", e->method->help);
	} else if (strcmp(e->method->id, "oauth") == 0) {
		rc = start_oauth(e, opts->consent);
	} else if (strcmp(e->method->id, "account") == 0) {
		rc = start_account(e);
	} else {
		rc =
		    enr_error_set(ENR_E_UNSUPPORTED, "%s method %s needs fields vendors.json lacks",
		                  e->vendor->name, e->method->id);
	}
	if (rc < 0)
		goto out;
	*out = e;
	return 0;
out:
	enr_enroll_free(e);
	return rc;
}

enum enr_enroll_state enr_enroll_state(const struct enr_enroll *e)
{
	return e->state;
}

const struct enr_vendor *enr_enroll_vendor(const struct enr_enroll *e)
{
	return e->vendor;
}

const struct enr_method *enr_enroll_method(const struct enr_enroll *e)
{
	return e->method;
}

const char *enr_enroll_message(const struct enr_enroll *e)
{
	return e->message ? e->message : "";
}

int enr_enroll_error(const struct enr_enroll *e)
{
	return e->state == ENR_ENROLL_FAILED ? e->error : 0;
}

long long enr_enroll_deadline(const struct enr_enroll *e)
{
	return e->state == ENR_ENROLL_LINK || e->state == ENR_ENROLL_WAIT ? e->deadline : 0;
}

const char *enr_enroll_link(const struct enr_enroll *e)
{
	return e->state == ENR_ENROLL_LINK ? e->link : NULL;
}

const char *enr_enroll_authorize_url(const struct enr_enroll *e)
{
	return e->flow ? e->flow->url : NULL;
}

enum enr_consent enr_enroll_consent(const struct enr_enroll *e)
{
	return e->consent;
}

size_t enr_enroll_field_count(const struct enr_enroll *e)
{
	return e->state == ENR_ENROLL_FIELDS ? e->method->n_fields : 0;
}

const struct enr_field *enr_enroll_field(const struct enr_enroll *e, size_t i)
{
	return i < enr_enroll_field_count(e) ? &e->method->fields[i] : NULL;
}

size_t enr_enroll_site_count(const struct enr_enroll *e)
{
	return e->state == ENR_ENROLL_SITES && e->sites ? e->sites->n_sites : 0;
}

const struct enr_site *enr_enroll_site(const struct enr_enroll *e, size_t i)
{
	return i < enr_enroll_site_count(e) ? &e->sites->sites[i] : NULL;
}

const char *enr_enroll_site_holder(const struct enr_enroll *e, size_t i)
{
	return i < enr_enroll_site_count(e) && e->holders ? e->holders[i] : NULL;
}

int enr_enroll_choose_site(struct enr_enroll *e, const char *site_id)
{
	return enr_enroll_choose_sites(e, &site_id, 1);
}

int enr_enroll_choose_sites(struct enr_enroll *e, const char *const *site_ids, size_t n)
{
	const struct enr_site **chosen;
	size_t k = 0;
	int rc;

	if (e->state != ENR_ENROLL_SITES)
		return enr_error_set(ENR_E_USAGE, "no site is to be chosen now");
	if (n == 0)
		return enr_error_set(ENR_E_USAGE, "choose at least one site");
	if (!(chosen = calloc(n, sizeof(*chosen))))
		return enr_error_set(ENR_E_NOMEM, NULL);
	for (size_t i = 0; i < n; i++) {
		const struct enr_site *site = enr_check_find_site(e->sites, site_ids[i]);
		bool again = false;
		if (!site) {
			free(chosen);
			return enr_error_set(ENR_E_USAGE, "%s listed no site %s", e->vendor->name,
			                     site_ids[i]);
		}
		for (size_t j = 0; j < k; j++)
			again = again || chosen[j] == site;
		if (!again)
			chosen[k++] = site;
	}
	/* A single-site account names its site in the credentials too. */
	if (k == 1 && e->rec->cred.type == ENR_CRED_ACCOUNT &&
	    (rc = enr_record_set(&e->rec->cred.account.site_id, chosen[0]->id)) < 0) {
		free(chosen);
		return rc;
	}
	rc = save_sites(e, chosen, k);
	free(chosen);
	return rc;
}

const struct enr_record *enr_enroll_record(const struct enr_enroll *e)
{
	return e->state == ENR_ENROLL_DONE ? e->rec : NULL;
}

size_t enr_enroll_record_count(const struct enr_enroll *e)
{
	return e->state == ENR_ENROLL_DONE ? 1 + e->n_more : 0;
}

const struct enr_record *enr_enroll_record_at(const struct enr_enroll *e, size_t i)
{
	if (e->state != ENR_ENROLL_DONE || i > e->n_more)
		return NULL;
	return i == 0 ? e->rec : e->more[i - 1];
}

bool enr_enroll_updated(const struct enr_enroll *e)
{
	return e->updated;
}

const char *enr_enroll_warning(const struct enr_enroll *e)
{
	return e->warning;
}

void enr_enroll_cancel(struct enr_enroll *e)
{
	if (e->state == ENR_ENROLL_DONE || e->state == ENR_ENROLL_FAILED)
		return;
	enr_error_set(ENR_E_CANCELLED, "cancelled");
	fail(e, ENR_E_CANCELLED);
}

size_t enr_enroll_poll_fds(const struct enr_enroll *e, struct pollfd *fds, size_t cap)
{
	size_t n = e->own_multi ? enr_http_multi_poll_fds(e->multi, fds, cap) : 0;

	if (e->receiver && e->state == ENR_ENROLL_LINK) {
		if (n < cap) {
			fds[n].fd = enr_oauth_receiver_fd(e->receiver);
			fds[n].events = POLLIN;
			fds[n].revents = 0;
		}
		n++;
	}
	return n;
}

long enr_enroll_timeout_ms(const struct enr_enroll *e)
{
	long t = e->own_multi ? enr_http_multi_timeout_ms(e->multi) : -1;
	long long now = now_ms();

	if (e->next_at_ms) {
		long wait = e->next_at_ms > now ? (long)(e->next_at_ms - now) : 0;
		if (t < 0 || wait < t)
			t = wait;
	}
	/* The countdown and the deadline: wake once a second while waiting. */
	if (e->state == ENR_ENROLL_LINK || e->state == ENR_ENROLL_WAIT)
		if (t < 0 || t > 1000)
			t = 1000;
	return t;
}

int enr_enroll_process(struct enr_enroll *e)
{
	enum enr_enroll_state before = e->state;
	int changed;

	e->message_changed = false;
	if (e->own_multi)
		enr_http_multi_step(e->multi);
	if (e->state == ENR_ENROLL_LINK && e->receiver) {
		char *url = NULL;
		int rc = enr_oauth_receiver_poll(&url, e->receiver);
		if (rc == 0) {
			got_callback(e, url);
			enr_util_free_secret(url);
		} else if (rc != ENR_E_AGAIN && rc != ENR_E_CANCELLED) {
			fail(e, rc);
		}
	}
	if (e->next_at_ms && now_ms() >= e->next_at_ms && e->state != ENR_ENROLL_FAILED) {
		e->next_at_ms = 0;
		if (e->fetching)
			fetch_token(e);
		else if (e->consent == ENR_CONSENT_RELAY && e->flow)
			poll_relay(e);
		else if (e->consent == ENR_CONSENT_PASTE && e->flow && e->link_expires_at)
			register_link(e);
		else if (e->rec->cred.type == ENR_CRED_EMAIL)
			bc_request(e, false);
	}
	if ((e->state == ENR_ENROLL_LINK || e->state == ENR_ENROLL_WAIT) && e->deadline &&
	    (long long)time(NULL) >= e->deadline) {
		if (e->derapi && e->join_mode == ENR_JOIN_SESSION)
			enr_error_set(
			    ENR_E_EXPIRED,
			    "the customer did not finish in the Join page in time (the tab "
			    "was closed, or the Join widget failed%s%s): start again",
			    e->join_problem ? "; Derapi said: " : "",
			    e->join_problem ? e->join_problem : "");
		else
			enr_error_set(ENR_E_EXPIRED, "the customer did not answer in time: the "
			                             "link expired; start again");
		fail(e, ENR_E_EXPIRED);
	}
	changed = e->state != before || e->message_changed;
	e->message_changed = false;
	return changed;
}
