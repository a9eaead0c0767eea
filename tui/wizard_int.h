#ifndef DERENROLL_TUI_WIZARD_INT_H
#define DERENROLL_TUI_WIZARD_INT_H

/* The wizard's shared state and screens (wizard*.c only). */

#include <stdbool.h>
#include <stddef.h>

#include "derenroll/enroll.h"
#include "derenroll/text.h"
#include "screen.h"
#include "widgets/field.h"
#include "widgets/listview.h"

struct cli_globals;
struct enr_store;
struct enr_sandbox;
struct enr_qr;
struct json_object;
struct systems;

struct wiz {
	struct cli_globals *g;
	struct enr_store *store;
	struct enr_sandbox *sb;    /* --demo */
	struct json_object *creds; /* --demo: the sandbox's credentials */
	bool join_ok;
	char join_reason[256];
	/* start and method */
	struct field customer;
	struct listview *vendors;
	int start_focus;    /* 0: customer field, 1: vendor list */
	bool customer_kept; /* from the last system enrolled ("enroll another") */
	struct listview *methods;
	const struct enr_vendor *vendor;
	const struct enr_method *method;
	const char *reauth_id;
	bool session_first; /* started at the authorization step */
	/* the session */
	struct enr_enroll *e;
	unsigned gen; /* changes with every session: late results are dropped */
	enum enr_enroll_state shown;
	char customer_ref[ENR_TEXT_VISIBLE_SIZE(
	    ENR_TEXT_CUSTOMER_MAX)]; /* of this session (a re-authorization: the record's) */
	int watched[32];
	size_t n_watched;
	unsigned timer;
	int start_rc;
	char start_error[512];
	struct enr_qr *qr;
	struct field code; /* the code typed in (paste consent) */
	bool code_active;
	struct field *fields;
	size_t n_fields, focus;
	char form_error[512];
	struct listview *sites;
	char note[512];
	bool approving;
	unsigned store_gen; /* changes whenever the wizard writes the store */
};

struct wiz *wiz_state(void);

extern struct screen wiz_start_screen, wiz_method_screen, wiz_session_screen, wiz_systems_screen;

size_t wiz_methods(const struct enr_vendor *v, const struct enr_method **out, size_t cap);
const char *wiz_demo_value(const char *field);
/* Why a method cannot be used with this configuration (into buf), or NULL. */
const char *wiz_method_unavailable(const struct enr_vendor *v, const struct enr_method *m,
                                   char *buf, size_t size);
void wiz_session_start(void);
void wiz_session_end(void);
/* Watches what the session waits on; shows state changes. */
void wiz_session_sync(void);

void wiz_methods_setup(void);
void wiz_fields_setup(void);
void wiz_fields_free(void);
void wiz_sites_setup(void);

void wiz_systems_open(void);
void wiz_systems_free(void);

#endif
