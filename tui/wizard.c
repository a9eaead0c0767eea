/*
 * The enrollment wizard: start (customer + vendor), method, then one session
 * screen that shows what the core's enrollment session asks for (key form,
 * QR code, wait, sites, saved, failed). It holds no vendor logic: the session
 * decides, the screens show and forward keys.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>
#include <wctype.h>

#include <json-c/json.h>

#include "derenroll/config.h"
#include "derenroll/enroll.h"
#include "derenroll/error.h"
#include "derenroll/join.h"
#include "derenroll/qr.h"
#include "derenroll/sandbox.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "cli.h"
#include "ready.h"
#include "screen.h"
#include "store_cli.h"
#include "widgets/field.h"
#include "widgets/listview.h"
#include "widgets/qrview.h"
#include "wizard.h"
#include "wizard_int.h"

#define MAX_WATCH      32
#define JOIN_ANY_LABEL "Derapi Join (any vendor)"

static const char *const vendor_order[] = {"tesla",     "solis",   "sma",
                                           "solaredge", "enphase", "enphasevpp"};
#define N_VENDORS (sizeof(vendor_order) / sizeof(vendor_order[0]))

static struct wiz W;

/* ---- availability ------------------------------------------------------ */

/* Whether `v` is Derapi's entry: the row where the customer chooses the vendor in Join. */
static bool is_join_any(const struct enr_vendor *v)
{
	return v && strcmp(v->id, "derapi") == 0;
}

/* Why a method cannot be used with this configuration, or NULL. */
const char *wiz_method_unavailable(const struct enr_vendor *v, const struct enr_method *m,
                                   char *buf, size_t size)
{
	const struct enr_config *cfg = W.g->cfg;

	if (strcmp(m->id, "join") == 0)
		return W.join_ok ? NULL : W.join_reason;
	/* The company's app: the sign-in and SMA's e-mail consent (its backchannel). */
	if ((strcmp(m->id, "oauth") == 0 || strcmp(m->id, "email") == 0) &&
	    !enr_vendor_setting(v, cfg, "client_id")) {
		snprintf(buf, size, "not configured: set client_id in [%s] of %s",
		         v->config_section, enr_config_file_name(cfg));
		return buf;
	}
	if (strcmp(m->id, "oauth") == 0 || strcmp(m->id, "email") == 0) {
		char *secret = NULL;
		if (enr_vendor_secret(&secret, v, cfg, "client_secret") < 0 || !secret) {
			snprintf(buf, size, "not configured: derenroll secret set %s.client_secret",
			         v->config_section);
			return buf;
		}
		enr_config_free_secret(secret);
	}
	if (strcmp(m->id, "account") == 0) {
		const char *key = strcmp(v->id, "solis") == 0 ? "key_secret" : "api_key";
		char *secret = NULL;
		if (enr_vendor_secret(&secret, v, cfg, key) < 0 || !secret) {
			snprintf(buf, size, "not configured: derenroll secret set %s.%s",
			         v->config_section, key);
			return buf;
		}
		enr_config_free_secret(secret);
	}
	return NULL;
}

/* Whether Derapi Join can enroll ([derapi] client_id and client_secret). */
static void probe_join(void)
{
	char *reason = NULL;

	W.join_ok = enr_join_available(W.g->cfg, &reason);
	if (!W.join_ok)
		snprintf(W.join_reason, sizeof(W.join_reason), "%s",
		         reason ? reason
		                : "not configured: set client_id in [derapi] and run "
		                  "derenroll secret set derapi.client_secret");
	free(reason);
}

/* The methods of `v` in the order shown: Join first when usable, then the
 * vendor's direct methods (Join last, disabled, when not configured). */
size_t wiz_methods(const struct enr_vendor *v, const struct enr_method **out, size_t cap)
{
	size_t n = 0;
	const struct enr_method *join = NULL;

	for (size_t i = 0; i < v->n_methods; i++)
		if (strcmp(v->methods[i].id, "join") == 0)
			join = &v->methods[i];
	if (join && W.join_ok && n < cap)
		out[n++] = join;
	for (size_t i = 0; i < v->n_methods && n < cap; i++)
		if (&v->methods[i] != join)
			out[n++] = &v->methods[i];
	if (join && !W.join_ok && n < cap)
		out[n++] = join;
	return n;
}

/* ---- the session and the loop ------------------------------------------ */

static void on_session_fd(void *ctx, int fd, short revents)
{
	(void)ctx;
	(void)fd;
	(void)revents;
	if (W.e)
		enr_enroll_process(W.e);
	wiz_session_sync();
}

static void on_session_timer(void *ctx)
{
	(void)ctx;
	W.timer = 0;
	if (W.e)
		enr_enroll_process(W.e);
	wiz_session_sync();
}

static void unwatch_all(void)
{
	for (size_t i = 0; i < W.n_watched; i++)
		loop_unwatch_fd(W.watched[i]);
	W.n_watched = 0;
	loop_cancel_timer(W.timer);
	W.timer = 0;
}

/* What the screen needs when the session enters a state. */
static void enter_state(enum enr_enroll_state st)
{
	W.shown = st;
	if (st == ENR_ENROLL_LINK && !W.qr) {
		enr_qr_encode(&W.qr, enr_enroll_link(W.e));
		W.code_active = enr_enroll_consent(W.e) == ENR_CONSENT_PASTE;
	} else if (st == ENR_ENROLL_FIELDS && !W.fields) {
		wiz_fields_setup();
	} else if (st == ENR_ENROLL_SITES) {
		wiz_sites_setup();
	} else if (st == ENR_ENROLL_DONE) {
		W.store_gen++;
	}
}

/* Watches what the session waits on, and shows state changes. */
void wiz_session_sync(void)
{
	struct pollfd fds[MAX_WATCH];
	size_t n;
	long t;

	unwatch_all();
	if (!W.e)
		return;
	if (enr_enroll_state(W.e) != W.shown)
		enter_state(enr_enroll_state(W.e));
	n = enr_enroll_poll_fds(W.e, fds, MAX_WATCH);
	for (size_t i = 0; i < n && i < MAX_WATCH; i++) {
		if (loop_watch_fd(fds[i].fd, fds[i].events, on_session_fd, NULL) == 0)
			W.watched[W.n_watched++] = fds[i].fd;
	}
	t = enr_enroll_timeout_ms(W.e);
	if (t >= 0 || n > MAX_WATCH)
		W.timer =
		    loop_set_timer(t >= 0 && n <= MAX_WATCH ? t : 100, on_session_timer, NULL);
	screen_redraw();
}

void wiz_session_end(void)
{
	unwatch_all();
	enr_enroll_free(W.e);
	W.e = NULL;
	W.gen++;
	W.approving = false; /* an approval still on its way is for the session that ended */
	enr_qr_free(W.qr);
	W.qr = NULL;
	wiz_fields_free();
	listview_free(W.sites);
	W.sites = NULL;
	field_set_text(&W.code, "");
	field_set_error(&W.code, NULL);
	W.code_active = false;
	W.note[0] = '\0';
	W.start_error[0] = '\0';
	W.shown = (enum enr_enroll_state) - 1;
}

/* Starts a session for W.vendor / W.method (or W.reauth_id). */
void wiz_session_start(void)
{
	struct enr_enroll_options opts = {0};
	char *customer = NULL;
	int rc;

	wiz_session_end();
	if (!W.reauth_id && field_value(&customer, &W.customer) < 0)
		customer = NULL;
	opts.store = W.store;
	opts.cfg = W.g->cfg;
	opts.catalog = W.g->catalog;
	opts.vendor = W.vendor && !is_join_any(W.vendor) ? W.vendor->id : NULL;
	opts.method = W.method ? W.method->id : NULL;
	opts.customer = customer;
	snprintf(W.customer_ref, sizeof(W.customer_ref), "%s", customer ? customer : "");
	opts.reauth_id = W.reauth_id;
	opts.consent = ENR_CONSENT_AUTO;
	rc = enr_enroll_new(&W.e, &opts);
	if (customer)
		field_free_value(customer);
	if (rc < 0) {
		W.start_rc = rc;
		snprintf(W.start_error, sizeof(W.start_error), "%s", enr_error_last());
		screen_redraw();
		return;
	}
	if (W.reauth_id) {
		struct enr_record *rec = NULL;
		W.vendor = enr_enroll_vendor(W.e);
		if (enr_store_get(&rec, W.store, W.reauth_id) == 0 && rec->customer)
			snprintf(W.customer_ref, sizeof(W.customer_ref), "%s", rec->customer);
		enr_record_free(rec);
	}
	wiz_session_sync();
}

/* ---- the start screen --------------------------------------------------- */

/* Whether a vendor filter is typed (Esc clears it first, whichever has the focus). */
static bool filter_typed(void)
{
	return listview_filter(W.vendors)[0] != '\0';
}

static const struct key_help *start_keys(struct screen *s)
{
	static struct key_help keys[6];
	const char *esc = filter_typed() ? "clear filter" : W.start_focus ? "back" : "quit";
	size_t n = 0;

	(void)s;
	if (W.start_focus == 0) {
		keys[n++] = (struct key_help){"Enter", "next"};
		keys[n++] = (struct key_help){"Tab", "vendors"};
		keys[n++] = (struct key_help){"F2", "enrolled systems"};
		keys[n++] = (struct key_help){"Esc", esc};
	} else {
		keys[n++] = (struct key_help){"Enter", "choose"};
		keys[n++] = (struct key_help){"Tab", "customer"};
		keys[n++] = (struct key_help){"Esc", esc};
		keys[n++] = (struct key_help){"F2", "enrolled systems"};
	}
	keys[n] = (struct key_help){NULL, NULL};
	return keys;
}

/* Columns that the first `n` characters of `text` take. */
static int text_cols(const wchar_t *text, size_t n)
{
	int cols = 0;

	for (size_t i = 0; i < n; i++) {
		int w = wcwidth(text[i]);
		cols += w > 0 ? w : w < 0 ? 1 : 0;
	}
	return cols;
}

/* The heading of a part of the screen: "> " in the margin and drawn
 * underlined when it has the focus (a capture has no attributes). */
static void heading(int y, int cols, const char *text, bool focused)
{
	draw_text(y, 0, 2, A_BOLD, focused ? ">" : " ");
	draw_text(y, 2, cols, focused ? A_BOLD | A_UNDERLINE : A_NORMAL, text);
}

static void start_draw(struct screen *s)
{
	struct area body = screen_frame(W.g->demo ? "derenroll: enroll a system (demo)"
	                                          : "derenroll: enroll a system",
	                                start_keys(s));
	struct area list;
	char line[512];
	int y;
	size_t sel;

	(void)s;
	y = body.y + field_draw(&W.customer, body.y, 2, body.cols - 4, W.start_focus == 0);
	heading(body.y, body.cols - 4, W.customer.label, W.start_focus == 0);
	if (W.customer_kept && !W.customer.error[0])
		draw_text(body.y + 2, 2, body.cols - 4, A_BOLD,
		          W.start_focus
		              ? "Same customer as the last system. Tab: change the customer."
		              : "Same customer as the last system: typing replaces it.");
	heading(y, body.cols - 4, "Vendor", W.start_focus == 1);
	list = (struct area){y + 1, 2, (int)listview_count(W.vendors) + 1, body.cols - 4};
	listview_draw(W.vendors, list);
	if (W.start_focus == 0) {
		int x = 2 + text_cols(W.customer.text + W.customer.scroll,
		                      W.customer.cursor - W.customer.scroll);
		screen_show_cursor(body.y + 1, x);
	} else {
		/* Where typing goes: the end of the filter, or its line's start. */
		int x = list.x;
		if (filter_typed())
			x += draw_text_width("Filter: ") +
			     draw_text_width(listview_filter(W.vendors));
		screen_show_cursor(list.y, x < list.x + list.cols ? x : list.x + list.cols - 1);
	}
	y = list.y + list.rows + 1;
	if (W.join_ok)
		snprintf(line, sizeof(line),
		         "Derapi Join is available (recommended): one link for every vendor. With "
		         "\"" JOIN_ANY_LABEL "\" (last; type join) the customer chooses theirs.");
	else
		snprintf(line, sizeof(line),
		         "Derapi Join (recommended: one link for every vendor) cannot be used. %s",
		         W.join_reason);
	y += draw_wrapped((struct area){y, 2, 3, body.cols - 4}, A_NORMAL, line) + 1;
	sel = listview_selected(W.vendors);
	if (sel != LISTVIEW_NONE && listview_disabled_reason(W.vendors, sel))
		draw_wrapped((struct area){y, 2, body.y + body.rows - y, body.cols - 4},
		             term_attr(TERM_DISABLED), listview_disabled_reason(W.vendors, sel));
}

/* How many methods of W.vendor are usable; `out` gets the first in the order
 * shown (Derapi Join when configured), or NULL. */
static size_t first_usable(const struct enr_method **out)
{
	const struct enr_method *ms[16];
	size_t n = wiz_methods(W.vendor, ms, 16), usable = 0;
	char buf[256];

	*out = NULL;
	for (size_t i = 0; i < n; i++)
		if (!wiz_method_unavailable(W.vendor, ms[i], buf, sizeof(buf))) {
			usable++;
			if (!*out)
				*out = ms[i];
		}
	return usable;
}

/* Whether the customer field holds a usable reference; else says why on it. */
static bool customer_ok(void)
{
	char *customer = NULL;
	int rc;

	if (field_is_blank(&W.customer)) {
		field_set_error(&W.customer, "Type the customer's name, address or job number");
		return false;
	}
	if (field_value(&customer, &W.customer) < 0)
		return false;
	rc = enr_enroll_check_customer(customer);
	field_free_value(customer);
	if (rc < 0)
		field_set_error(&W.customer, "%s", enr_error_last());
	return rc == 0;
}

static int choose_vendor(void)
{
	size_t sel = listview_selected(W.vendors);

	if (sel == LISTVIEW_NONE || listview_disabled_reason(W.vendors, sel))
		return SCREEN_HANDLED;
	if (!customer_ok()) {
		W.start_focus = 0;
		return SCREEN_REDRAW;
	}
	W.vendor = listview_data(W.vendors, sel);
	if (is_join_any(W.vendor)) {
		/* No vendor yet: the customer chooses theirs in the Join page. */
		W.method = enr_vendor_method(W.vendor, "join");
		screen_push(&wiz_session_screen);
	} else if (first_usable(&W.method) > 1) {
		wiz_methods_setup();
		screen_push(&wiz_method_screen);
	} else {
		screen_push(&wiz_session_screen); /* its on_enter starts the session */
	}
	return SCREEN_HANDLED;
}

static int start_key(struct screen *s, const struct keypress *k)
{
	int r;

	(void)s;
	if (k->kind == KP_FUNC && k->code == KEY_F(2)) {
		wiz_systems_open();
		return SCREEN_HANDLED;
	}
	if (keypress_is(k, '\t') || (k->kind == KP_FUNC && k->code == KEY_BTAB)) {
		W.start_focus = !W.start_focus;
		return SCREEN_REDRAW;
	}
	/* Esc clears a filter first, then (as the key line says) goes back to
	 * the customer field from the list, and quits from the field. */
	if (keypress_is_escape(k) && filter_typed()) {
		listview_set_filter(W.vendors, "");
		return SCREEN_REDRAW;
	}
	if (W.start_focus == 0) {
		if (keypress_is_enter(k) || (k->kind == KP_FUNC && k->code == KEY_DOWN)) {
			if (keypress_is_enter(k) && !customer_ok())
				return SCREEN_REDRAW;
			W.start_focus = 1;
			return SCREEN_REDRAW;
		}
		if (keypress_is_escape(k))
			return SCREEN_QUIT;
		/* The kept customer goes when a new one is typed over it (as selected
		 * text would); the editing keys edit it. */
		if (W.customer_kept && (k->kind == KP_PASTE ||
		                        (k->kind == KP_CHAR && k->code >= 0x20 && k->code != 0x7f &&
		                         k->code != '?' && iswprint(k->code))))
			field_set_text(&W.customer, "");
		r = field_handle_key(&W.customer, k);
		if (r & SCREEN_REDRAW)
			W.customer_kept = false;
		return r;
	}
	if (keypress_is_enter(k))
		return choose_vendor();
	if (keypress_is_escape(k)) {
		W.start_focus = 0;
		return SCREEN_REDRAW;
	}
	return listview_handle_key(W.vendors, k);
}

static void start_enter(struct screen *s)
{
	(void)s;
	wiz_session_end();
}

struct screen wiz_start_screen = {.name = "start",
                                  .draw = start_draw,
                                  .handle_key = start_key,
                                  .on_enter = start_enter,
                                  .keys = start_keys};

static int fill_vendors(void)
{
	const struct enr_vendor *derapi = enr_catalog_find(W.g->catalog, "derapi");
	int rc = listview_new(&W.vendors);

	for (size_t i = 0; rc == 0 && i < N_VENDORS; i++) {
		const struct enr_vendor *v = enr_catalog_find(W.g->catalog, vendor_order[i]);
		const struct enr_method *ms[16];
		char buf[256], reason[300] = "";
		const char *why = NULL;
		size_t n;
		if (!v)
			continue;
		n = wiz_methods(v, ms, 16);
		for (size_t j = 0; j < n; j++) {
			const char *r = wiz_method_unavailable(v, ms[j], buf, sizeof(buf));
			if (!r) {
				why = NULL;
				break;
			}
			if (!why) {
				snprintf(reason, sizeof(reason), "%s", r);
				why = reason;
			}
		}
		rc = listview_add(W.vendors, v->name, why, (void *)v);
	}
	/* Derapi Join when it can enroll: one link, the customer's vendor chosen in
	 * Join's page. Last, so that no vendor costs a key more to reach (Join is
	 * each vendor's first method); typing "join" finds it. */
	if (rc == 0 && W.join_ok && derapi && enr_vendor_method(derapi, "join"))
		rc = listview_add(W.vendors, JOIN_ANY_LABEL, NULL, (void *)derapi);
	return rc;
}

/* ---- demo: the sandbox ------------------------------------------------- */

static int demo_start(void)
{
	char *creds = NULL;
	int rc = cli_demo_sandbox(W.g, &W.sb);

	if (rc == 0)
		rc = enr_sandbox_credentials_json(&creds, W.sb);
	if (rc == 0)
		W.creds = json_tokener_parse(creds);
	free(creds);
	return rc;
}

/* The demo credential for a field of the current method, or NULL. */
const char *wiz_demo_value(const char *field)
{
	struct json_object *vendor, *value;
	const char *key;

	if (!W.creds || !W.vendor || !W.method)
		return NULL;
	key = strcmp(W.method->id, "partner") == 0 ? "enphase_partner" : W.vendor->id;
	if (!json_object_object_get_ex(W.creds, key, &vendor) ||
	    !json_object_object_get_ex(vendor, field, &value))
		return NULL;
	return json_object_get_string(value);
}

/* ---- run --------------------------------------------------------------- */

static int navigate(void *ctx, struct screen *from, int flag)
{
	(void)ctx;
	if ((flag & SCREEN_BACK) && from == &wiz_session_screen) {
		wiz_session_end();
		W.reauth_id = NULL;
		return 0;
	}
	return 0;
}

int wizard_run(struct cli_globals *g, const struct wizard_options *o)
{
	struct screen *first = &wiz_start_screen;
	int rc, status = 0;

	memset(&W, 0, sizeof(W));
	W.g = g;
	W.shown = (enum enr_enroll_state) - 1;
	W.reauth_id = o->reauth_id;
	field_init(&W.customer, "Customer reference",
	           "The customer's name, address or job number: it names the record.", false);
	field_init(&W.code, "Code", "Paste the address the vendor's page ended on, or its code.",
	           false);
	rc = cli_load_config(g);
	if (rc == 0 && (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))) {
		cli_error("the wizard needs a terminal; without one use 'derenroll enroll' "
		          "(see 'derenroll --help')");
		status = 2;
		goto out;
	}
	if (rc == 0 && g->demo)
		rc = demo_start();
	if (rc == 0)
		rc = cli_open_store_some(g, true, &W.store);
	if (rc < 0) {
		status = cli_fail(rc);
		goto out;
	}
	probe_join();
	rc = fill_vendors();
	if (rc < 0) {
		status = cli_fail(rc);
		goto out;
	}
	if (o->customer)
		field_set_text(&W.customer, o->customer);
	if (o->vendor) {
		W.vendor = enr_catalog_find(g->catalog, o->vendor);
		if (!W.vendor ||
		    (o->method && !(W.method = enr_vendor_method(W.vendor, o->method)))) {
			status = cli_fail(ENR_E_USAGE);
			goto out;
		}
		/* No --method: the first usable one, as the method screen lists them. */
		if (!W.method)
			first_usable(&W.method);
		for (size_t i = 0; i < listview_count(W.vendors); i++)
			if (listview_data(W.vendors, i) == W.vendor)
				listview_select(W.vendors, i);
		W.start_focus = o->customer ? 1 : 0;
	}
	screen_set_navigator(navigate, NULL);
	ready_report_first_frame("DERENROLL_WIZARD_READY");
	rc = term_init();
	if (rc < 0) {
		status = cli_fail(rc);
		goto out;
	}
	/* ^C and SIGTERM end the process without atexit: the demo's store goes too. */
	term_set_exit_cleanup(cli_remove_demo_store);
	if (o->reauth_id || (W.vendor && o->customer)) {
		/* Straight to the authorization step (its on_enter starts the session). */
		first = &wiz_session_screen;
		W.session_first = true;
	}
	rc = screen_run(first);
	term_done();
	loop_done();
	status = rc < 0 ? cli_fail(rc) : rc;
out:
	wiz_session_end();
	wiz_systems_free();
	listview_free(W.vendors);
	listview_free(W.methods);
	field_done(&W.customer);
	field_done(&W.code);
	cli_close_store(g, W.store);
	if (W.creds)
		json_object_put(W.creds);
	enr_sandbox_stop(W.sb);
	return status;
}

struct wiz *wiz_state(void)
{
	return &W;
}
