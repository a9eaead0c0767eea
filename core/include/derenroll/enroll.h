#ifndef DERENROLL_ENROLL_H
#define DERENROLL_ENROLL_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include "derenroll/export.h"

/*
 * An enrollment session: one (vendor, method) taken from nothing to a checked,
 * saved record. It says what is needed next (ask for fields, show a link,
 * wait, choose a site), the caller feeds it answers and drives its network
 * work from an event loop; it never blocks. The wizard and `derenroll enroll`
 * both drive it.
 *
 *   enr_enroll_new(&e, &opts);
 *   loop: switch (enr_enroll_state(e)) { ... }
 *         poll(enr_enroll_poll_fds(e, ...), enr_enroll_timeout_ms(e));
 *         enr_enroll_process(e);
 */

struct enr_config;
struct enr_catalog;
struct enr_store;
struct enr_http_multi;
struct enr_vendor;
struct enr_method;
struct enr_field;
struct enr_site;
struct enr_record;
struct enr_enroll;

enum enr_enroll_state {
	ENR_ENROLL_FIELDS, /* fill enr_enroll_field()s, then enr_enroll_submit_fields() */
	ENR_ENROLL_LINK,   /* show enr_enroll_link() (QR code); a typed code is accepted too */
	ENR_ENROLL_WAIT,   /* network work or the customer's answer is awaited */
	ENR_ENROLL_SITES,  /* choose the customer's site: enr_enroll_choose_site() */
	ENR_ENROLL_DONE,   /* saved: enr_enroll_record() */
	ENR_ENROLL_FAILED, /* enr_enroll_error() and enr_enroll_message() */
};

/* How the customer's consent comes back from the vendor's page. */
enum enr_consent {
	ENR_CONSENT_AUTO,     /* the relay when configured, else loopback, else paste */
	ENR_CONSENT_RELAY,    /* a short link through [relay]; the relay hands the code back */
	ENR_CONSENT_LOOPBACK, /* sign-in on this computer: a listener on 127.0.0.1 */
	ENR_CONSENT_PASTE,    /* the code, or the final URL, is typed in */
};

/* Which Derapi Join path the method `join` takes. */
enum enr_join_mode {
	ENR_JOIN_FLOW =
	    0,            /* Join Flows: the flow's authorize link, Derapi redirects to the relay */
	ENR_JOIN_SESSION, /* Join session: the company's Join page (widget), then fetch-token */
};

struct enr_enroll_options {
	struct enr_store *store;
	const struct enr_config *cfg;
	const struct enr_catalog *catalog;
	const char *vendor;        /* vendor id (ignored for a re-authorization); NULL with
	                            * method "join": the customer chooses in the Join page */
	const char *method;        /* NULL: the vendor's first method */
	const char *customer;      /* customer reference (required for a new record) */
	const char *site_id;       /* preselected site, or NULL */
	const char *reauth_id;     /* re-authorize this record instead of adding one */
	bool allow_account_change; /* re-authorization may switch accounts */
	enum enr_consent consent;
	enum enr_join_mode join_mode; /* method `join` only */
	long timeout_s;               /* how long the customer has; 0: 15 minutes */
	struct enr_http_multi *multi; /* shared with the caller's loop; NULL: its own */
};

/*
 * Starts a session. ENR_E_USAGE for an unknown vendor or a method the vendor
 * lacks (the message lists its methods), ENR_E_CONFIG for what the method
 * needs and the configuration lacks (client_id, keys, relay; for `join` the
 * Derapi credentials and, for Join Flows, [derapi] flow_id), ENR_E_NOTFOUND
 * for an unknown record to re-authorize. The session may already be LINK,
 * FIELDS or WAIT when this returns.
 */
ENR_API int enr_enroll_new(struct enr_enroll **out, const struct enr_enroll_options *opts);

/* Checks a customer reference as typed: not blank, valid UTF-8, no control
 * character, at most ENR_TEXT_CUSTOMER_MAX characters. 0 or ENR_E_USAGE with a
 * one-line message. enr_enroll_new() checks its `customer` with it. */
ENR_API int enr_enroll_check_customer(const char *customer);
ENR_API void enr_enroll_free(struct enr_enroll *e);

ENR_API enum enr_enroll_state enr_enroll_state(const struct enr_enroll *e);
ENR_API const struct enr_vendor *enr_enroll_vendor(const struct enr_enroll *e);
ENR_API const struct enr_method *enr_enroll_method(const struct enr_enroll *e);

/* One line for the screen: what is happening, or why it failed. */
ENR_API const char *enr_enroll_message(const struct enr_enroll *e);
/* The failure class in FAILED, else 0. */
ENR_API int enr_enroll_error(const struct enr_enroll *e);
/* When the customer's time runs out (Unix seconds), 0 when not waiting on them. */
ENR_API long long enr_enroll_deadline(const struct enr_enroll *e);

/* LINK: the link for the customer (the relay's short link when there is one). */
ENR_API const char *enr_enroll_link(const struct enr_enroll *e);
/* LINK: the vendor's own authorize URL (to open this computer's browser). */
ENR_API const char *enr_enroll_authorize_url(const struct enr_enroll *e);
/* How the consent comes back in this session (never AUTO). */
ENR_API enum enr_consent enr_enroll_consent(const struct enr_enroll *e);

/* FIELDS: the fields asked for (vendors.json labels, help, validation). */
ENR_API size_t enr_enroll_field_count(const struct enr_enroll *e);
ENR_API const struct enr_field *enr_enroll_field(const struct enr_enroll *e, size_t i);
/* Sets a field (surrounding white space trimmed); ENR_E_USAGE with a message
 * for the field when the value is not valid. */
ENR_API int enr_enroll_set_field(struct enr_enroll *e, const char *name, const char *value);
/* Checks every field and starts the check; ENR_E_USAGE naming the first bad field. */
ENR_API int enr_enroll_submit_fields(struct enr_enroll *e);

/* LINK: a code, a redirect URL or its query string, typed or pasted. */
ENR_API int enr_enroll_submit_code(struct enr_enroll *e, const char *text);

/* SITES: the sites found, those that no stored record holds first. */
ENR_API size_t enr_enroll_site_count(const struct enr_enroll *e);
ENR_API const struct enr_site *enr_enroll_site(const struct enr_enroll *e, size_t i);
/* SITES: the customer reference (else the id) of the record that holds site
 * `i` already, or NULL when none does. Lives as long as the session's SITES. */
ENR_API const char *enr_enroll_site_holder(const struct enr_enroll *e, size_t i);
/* SITES: saves the record for that site; ENR_E_USAGE for an unknown id. */
ENR_API int enr_enroll_choose_site(struct enr_enroll *e, const char *site_id);
/*
 * SITES: saves the `n` sites chosen (one customer's several systems; an id
 * given twice counts once). Credentials with a refresh token, and a
 * re-authorization, keep them all in one record: one sign-in is one token,
 * which copies in several records would spend from under each other. Other
 * credentials (keys, accounts) are saved one record per site; when some of
 * them cannot be saved the others stay saved, DONE says so in
 * enr_enroll_warning(), and it fails only when none could be. ENR_E_USAGE for
 * an unknown id or none.
 */
ENR_API int enr_enroll_choose_sites(struct enr_enroll *e, const char *const *site_ids, size_t n);

/* DONE: the saved record (secrets included: mask them when showing it). */
ENR_API const struct enr_record *enr_enroll_record(const struct enr_enroll *e);
/* DONE: how many records were saved (1 unless several sites were chosen for
 * credentials saved one record per site), and each; 0 is enr_enroll_record(). */
ENR_API size_t enr_enroll_record_count(const struct enr_enroll *e);
ENR_API const struct enr_record *enr_enroll_record_at(const struct enr_enroll *e, size_t i);
/* DONE: true when an existing record was updated rather than added (the first). */
ENR_API bool enr_enroll_updated(const struct enr_enroll *e);
/* A warning for the installer (missing scope, ...), or NULL. */
ENR_API const char *enr_enroll_warning(const struct enr_enroll *e);

/* Stops whatever is in progress: FAILED with ENR_E_CANCELLED. */
ENR_API void enr_enroll_cancel(struct enr_enroll *e);

/* The event loop's side: descriptors to wait on, how long at most, and the
 * work to do when woken (never blocks). process returns 1 when the state or
 * the message changed, else 0. */
ENR_API size_t enr_enroll_poll_fds(const struct enr_enroll *e, struct pollfd *fds, size_t cap);
ENR_API long enr_enroll_timeout_ms(const struct enr_enroll *e);
ENR_API int enr_enroll_process(struct enr_enroll *e);

#endif
