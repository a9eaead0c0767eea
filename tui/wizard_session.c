/*
 * The wizard's method screen and its session screen: whatever the enrollment
 * session asks for (key form, QR code, wait, sites), then saved or failed.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "derenroll/enroll.h"
#include "derenroll/error.h"
#include "derenroll/join.h"
#include "derenroll/lifecycle.h"
#include "derenroll/qr.h"
#include "derenroll/store.h"
#include "derenroll/vendor.h"
#include "cli.h"
#include "widgets/qrview.h"
#include "wizard_int.h"

/* ---- method ------------------------------------------------------------ */

void wiz_methods_setup(void)
{
	struct wiz *w = wiz_state();
	const struct enr_method *ms[16];
	size_t n = wiz_methods(w->vendor, ms, 16);
	bool selected = false;

	listview_free(w->methods);
	w->methods = NULL;
	if (listview_new(&w->methods) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char buf[256];
		const char *why = wiz_method_unavailable(w->vendor, ms[i], buf, sizeof(buf));
		if (listview_add(w->methods, ms[i]->label, why, (void *)ms[i]) < 0)
			return;
		if (!why && !selected)
			selected = listview_select(w->methods, i);
	}
}

static const struct key_help *method_keys(struct screen *s)
{
	static struct key_help keys[] = {{"Enter", "choose"}, {"Esc", "back"}, {NULL, NULL}};
	struct wiz *w = wiz_state();

	(void)s;
	/* The list takes Esc first while a filter is typed. */
	keys[1].label = w->methods && listview_filter(w->methods)[0] ? "clear filter" : "back";
	return keys;
}

static void method_draw(struct screen *s)
{
	struct wiz *w = wiz_state();
	char title[160];
	struct area body, list;
	size_t sel;
	const struct enr_method *m;

	(void)s;
	snprintf(title, sizeof(title), "%s: how does the customer authorize?", w->vendor->name);
	body = screen_frame(title, method_keys(s));
	list = (struct area){body.y + 1, 2, (int)listview_count(w->methods) + 1, body.cols - 4};
	listview_draw(w->methods, list);
	sel = listview_selected(w->methods);
	if (sel == LISTVIEW_NONE)
		return;
	m = listview_data(w->methods, sel);
	draw_wrapped(
	    (struct area){list.y + list.rows + 1, 2, body.rows - list.rows - 3, body.cols - 4},
	    A_NORMAL, m->help ? m->help : "");
}

static int method_key(struct screen *s, const struct keypress *k)
{
	struct wiz *w = wiz_state();
	size_t sel = listview_selected(w->methods);
	int r;

	(void)s;
	if (keypress_is_enter(k)) {
		if (sel == LISTVIEW_NONE || listview_disabled_reason(w->methods, sel))
			return SCREEN_HANDLED;
		w->method = listview_data(w->methods, sel);
		screen_push(&wiz_session_screen);
		return SCREEN_HANDLED;
	}
	r = listview_handle_key(w->methods, k);
	if (r)
		return r;
	return keypress_is_escape(k) ? SCREEN_BACK : SCREEN_IGNORED;
}

struct screen wiz_method_screen = {
    .name = "method", .draw = method_draw, .handle_key = method_key, .keys = method_keys};

/* A re-authorization's record and customer ("re-authorizing record ID for
 * "CUSTOMER"", `verb` first), into buf; "" for a new enrollment. */
static const char *whose(char *buf, size_t size, const char *verb)
{
	struct wiz *w = wiz_state();
	char id[ENR_TEXT_VISIBLE_SIZE(32)], customer[ENR_TEXT_VISIBLE_SIZE(ENR_TEXT_CUSTOMER_MAX)];

	buf[0] = '\0';
	if (!w->reauth_id)
		return buf;
	enr_text_visible(id, sizeof(id), w->reauth_id, 32);
	if (w->customer_ref[0])
		snprintf(buf, size, "%s record %s for \"%s\"", verb, id,
		         enr_text_visible(customer, sizeof(customer), w->customer_ref, 0));
	else
		snprintf(buf, size, "%s record %s", verb, id);
	return buf;
}

/* ---- the key form (FIELDS) ---------------------------------------------- */

void wiz_fields_free(void)
{
	struct wiz *w = wiz_state();

	for (size_t i = 0; i < w->n_fields; i++)
		field_done(&w->fields[i]);
	free(w->fields);
	w->fields = NULL;
	w->n_fields = 0;
	w->focus = 0;
	w->form_error[0] = '\0';
}

void wiz_fields_setup(void)
{
	struct wiz *w = wiz_state();
	size_t n = enr_enroll_field_count(w->e);

	wiz_fields_free();
	w->fields = calloc(n ? n : 1, sizeof(*w->fields));
	if (!w->fields)
		return;
	w->n_fields = n;
	for (size_t i = 0; i < n; i++) {
		const struct enr_field *f = enr_enroll_field(w->e, i);
		const char *demo = wiz_demo_value(f->name);
		field_init(&w->fields[i], f->label, f->help, f->secret);
		/* The demo fills in the sandbox's credentials. */
		if (demo)
			field_set_text(&w->fields[i], demo);
	}
}

static void form_draw(struct area body)
{
	struct wiz *w = wiz_state();
	int y = body.y;

	char who[512];

	if (w->reauth_id) {
		whose(who, sizeof(who), "Re-authorizing");
		y += draw_wrapped((struct area){y, 2, 3, body.cols - 4}, A_BOLD, who);
	}
	/* What the method needs: whole where there is room (the fields take up to 3 rows each). */
	y += draw_wrapped((struct area){y, 2, body.rows >= 18 ? 4 : 2, body.cols - 4}, A_NORMAL,
	                  enr_enroll_message(w->e));
	if (w->creds)
		draw_text(y++, 2, body.cols - 4, A_BOLD,
		          "Demo: the sandbox's credentials are filled in; Enter submits them.");
	y++;
	for (size_t i = 0; i < w->n_fields; i++)
		y += field_draw(&w->fields[i], y, 2, body.cols - 4, i == w->focus);
	if (w->form_error[0])
		draw_wrapped((struct area){y, 2, body.y + body.rows - y, body.cols - 4},
		             term_attr(TERM_ERROR), w->form_error);
}

static int form_submit(void)
{
	struct wiz *w = wiz_state();
	bool bad = false;
	int rc;

	w->form_error[0] = '\0';
	for (size_t i = 0; i < w->n_fields; i++) {
		const struct enr_field *f = enr_enroll_field(w->e, i);
		char *value = NULL;
		if (field_is_blank(&w->fields[i])) {
			if (!f->optional) {
				field_set_error(&w->fields[i], "Required: %s", f->help);
				if (!bad)
					w->focus = i;
				bad = true;
			}
			continue;
		}
		rc = field_value(&value, &w->fields[i]);
		if (rc == 0)
			rc = enr_enroll_set_field(w->e, f->name, value);
		field_free_value(value);
		if (rc < 0) {
			field_set_error(&w->fields[i], "%s", enr_error_last());
			if (!bad)
				w->focus = i;
			bad = true;
		}
	}
	if (bad)
		return SCREEN_REDRAW;
	rc = enr_enroll_submit_fields(w->e);
	if (rc < 0 && enr_enroll_state(w->e) != ENR_ENROLL_FAILED)
		snprintf(w->form_error, sizeof(w->form_error), "%s", enr_error_last());
	wiz_session_sync();
	return SCREEN_REDRAW;
}

static int form_key(const struct keypress *k)
{
	struct wiz *w = wiz_state();

	if (keypress_is(k, '\t') || (k->kind == KP_FUNC && k->code == KEY_DOWN)) {
		w->focus = (w->focus + 1) % (w->n_fields ? w->n_fields : 1);
		return SCREEN_REDRAW;
	}
	if (k->kind == KP_FUNC && (k->code == KEY_BTAB || k->code == KEY_UP)) {
		w->focus = w->focus ? w->focus - 1 : (w->n_fields ? w->n_fields - 1 : 0);
		return SCREEN_REDRAW;
	}
	if (keypress_is_enter(k)) {
		/* Enter goes on to the next field while it is empty, else submits. */
		if (w->focus + 1 < w->n_fields && field_is_blank(&w->fields[w->focus + 1])) {
			w->focus++;
			return SCREEN_REDRAW;
		}
		return form_submit();
	}
	if (w->n_fields)
		return field_handle_key(&w->fields[w->focus], k);
	return SCREEN_IGNORED;
}

/* ---- the QR code (LINK) ------------------------------------------------- */

static const char *vendor_name(void)
{
	struct wiz *w = wiz_state();

	if (w->e)
		return enr_enroll_vendor(w->e)->name;
	return w->vendor ? w->vendor->name : "";
}

/* "Time left: 14:59", or "" when nobody is waited on. */
static void countdown(char *buf, size_t size)
{
	struct wiz *w = wiz_state();
	long long deadline = w->e ? enr_enroll_deadline(w->e) : 0;
	long long left = deadline - (long long)time(NULL);

	buf[0] = '\0';
	if (!deadline)
		return;
	if (left < 0)
		left = 0;
	snprintf(buf, size, "Time left: %lld:%02lld", left / 60, left % 60);
}

/* The vendor's code spec when its page shows a code to type, else NULL. */
static const struct enr_code_spec *code_spec(void)
{
	struct wiz *w = wiz_state();
	const struct enr_vendor *v = w->e ? enr_enroll_vendor(w->e) : NULL;

	return v && v->has_oauth && v->oauth.code.max_length ? &v->oauth.code : NULL;
}

/* The code field asks for what the customer's phone shows, where the
 * vendor's page shows a code; else for the code or the address, as set up. */
static void code_field_words(void)
{
	static const char *plain_label, *plain_help;
	struct wiz *w = wiz_state();
	const struct enr_code_spec *spec = code_spec();

	if (!plain_label) {
		plain_label = w->code.label;
		plain_help = w->code.help;
	}
	w->code.label = spec ? "Code shown on the customer's phone" : plain_label;
	w->code.help = !spec ? plain_help : spec->help ? spec->help : "As the customer reads it.";
}

/* A code being typed at the field's end shown in the vendor's groups, for
 * reading aloud ("aB3d E5fG 7h"); an address, or an edit inside, is left as it is. */
static void code_field_group(void)
{
	struct wiz *w = wiz_state();
	const struct enr_code_spec *spec = code_spec();
	const struct enr_vendor *v = w->e ? enr_enroll_vendor(w->e) : NULL;
	char *value = NULL, grouped[1024];
	size_t n = 0, chars = 0;

	if (!spec || spec->group <= 0 || w->code.cursor != w->code.len ||
	    field_value(&value, &w->code) < 0)
		return;
	for (const char *p = value; *p && n + 2 < sizeof(grouped); p++) {
		if (*p == ' ' || *p == '-')
			continue;
		if (enr_vendor_code_char(v, (unsigned char)*p) < 0) {
			n = 0; /* not a code: an address, or a typo the check will name */
			break;
		}
		if (chars && chars % (size_t)spec->group == 0)
			grouped[n++] = ' ';
		grouped[n++] = *p;
		chars++;
	}
	grouped[n] = '\0';
	if (n && strcmp(grouped, value) != 0)
		field_set_text(&w->code, grouped);
	field_free_value(value);
	explicit_bzero(grouped, sizeof(grouped));
}

static void link_caption(struct area a)
{
	struct wiz *w = wiz_state();
	enum enr_consent consent = enr_enroll_consent(w->e);
	char line[512], left[64];
	int y = a.y;

	if (w->reauth_id) {
		char who[512];
		snprintf(line, sizeof(line), "%s: %s", vendor_name(),
		         whose(who, sizeof(who), "re-authorizing"));
		y += draw_wrapped((struct area){y, a.x, 4, a.cols}, A_BOLD, line) + 1;
	} else {
		y += draw_wrapped((struct area){y, a.x, 2, a.cols}, A_BOLD, vendor_name()) + 1;
	}
	snprintf(line, sizeof(line),
	         consent == ENR_CONSENT_LOOPBACK
	             ? "Sign in on this computer: %s's page asks to approve access; then the "
	               "browser comes back here."
	         : consent == ENR_CONSENT_PASTE
	             ? "The customer scans the code, signs in to %s and approves; the page "
	               "then shows a code: type it below."
	             : "The customer scans the code with their phone, signs in to %s and "
	               "approves access. Nothing to type here.",
	         vendor_name());
	y += draw_wrapped((struct area){y, a.x, a.y + a.rows - y, a.cols}, A_NORMAL, line) + 1;
	countdown(left, sizeof(left));
	if (left[0])
		draw_text(y++, a.x, a.cols, A_BOLD, left);
	if (w->note[0])
		y += draw_wrapped((struct area){y, a.x, 3, a.cols}, A_NORMAL, w->note);
	y++;
	code_field_words();
	if (w->code_active && y + FIELD_ROWS <= a.y + a.rows)
		field_draw(&w->code, y, a.x, a.cols, true);
}

/* Columns the text beside the QR code needs; narrower, it goes below, and
 * in fewer rows than this only what matters most. */
#define CAPTION_MIN_COLS  28
#define CAPTION_FULL_ROWS 9

/* The caption in a few rows: the code field (when a code is typed in), the
 * time left, then the demo's note, as far as they go. */
static void link_caption_short(struct area a)
{
	struct wiz *w = wiz_state();
	int y = a.y, end = a.y + a.rows;
	char left[64];

	countdown(left, sizeof(left));
	code_field_words();
	if (w->code_active && y + FIELD_ROWS <= end) {
		field_draw(&w->code, y, a.x, a.cols, true);
		y += FIELD_ROWS;
	}
	if (left[0] && y < end)
		draw_text(y++, a.x, a.cols, A_BOLD, left);
	if (w->note[0] && y < end)
		draw_wrapped((struct area){y, a.x, end - y, a.cols}, A_NORMAL, w->note);
}

static void link_draw(struct area body)
{
	struct wiz *w = wiz_state();
	char msg[160], line[1024];
	int cols = 0, rows = 0;

	if (w->qr)
		qrview_size(w->qr, &cols, &rows);
	if (w->qr && qrview_draw(w->qr, body, msg, sizeof(msg))) {
		/* The text beside the code where there is room for it, else below. */
		bool beside = body.cols - cols - 2 >= CAPTION_MIN_COLS;
		struct area text =
		    beside ? (struct area){body.y + 1, body.x + cols + 1, rows - 1,
		                           body.cols - cols - 2}
		           : (struct area){body.y + rows, 1, body.rows - rows, body.cols - 2};
		snprintf(line, sizeof(line), "Link: %s", enr_enroll_link(w->e));
		if (!beside) {
			text.y += draw_wrapped(text, A_NORMAL, line);
			text.rows = body.y + body.rows - text.y;
			if (text.rows >= CAPTION_FULL_ROWS)
				link_caption(text);
			else if (text.rows > 0)
				link_caption_short(text);
			return;
		}
		link_caption(text);
		draw_wrapped((struct area){body.y + rows, 1, body.rows - rows, body.cols - 2},
		             A_NORMAL, line);
		return;
	}
	if (!w->qr)
		snprintf(msg, sizeof(msg), "The link cannot be shown as a QR code");
	{
		struct area text = {body.y, 1, body.rows, body.cols - 2};
		text.y += draw_wrapped(text, term_attr(TERM_ERROR), msg) + 1;
		text.rows = body.y + body.rows - text.y;
		text.y += draw_wrapped(text, A_NORMAL,
		                       enr_enroll_consent(w->e) == ENR_CONSENT_LOOPBACK
		                           ? "Open this link in a browser on this computer (o):"
		                           : "Open this link on the customer's phone:");
		text.rows = body.y + body.rows - text.y;
		text.y += draw_wrapped(text, A_BOLD, enr_enroll_link(w->e)) + 1;
		text.rows = body.y + body.rows - text.y;
		if (text.rows > 0)
			link_caption(text);
	}
}

/* The customer approving on their phone, played in the demo on a worker thread. */
struct approval {
	unsigned gen;
	char *link;
	char *authorize;
	char *account; /* the sandbox account the customer approves as */
	char *vendor;  /* in a Join session's page, the vendor the customer picks */
	char *final_url;
	char err[CURL_ERROR_SIZE];
};

static void approval_free(struct approval *a)
{
	free(a->link);
	free(a->authorize);
	free(a->account);
	free(a->vendor);
	free(a->final_url);
	free(a);
}

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
	(void)p;
	(void)ctx;
	return size * n;
}

static CURLcode get(CURL *c, const char *url, bool follow, char *errbuf)
{
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	return curl_easy_perform(c);
}

static void approval_done(void *ctx);

/* The value of `name` in the query of `url` (malloc'd), or NULL. */
static char *query_value(const char *url, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = strchr(url, '?'); p; p = strchr(p + 1, '&'))
		if (strncmp(p + 1, name, n) == 0 && p[1 + n] == '=')
			return strndup(p + 2 + n, strcspn(p + 2 + n, "&#"));
	return NULL;
}

/* The company's Join page (a Join session, `page` on the relay): the customer
 * picks the vendor and approves at the sandbox's Derapi, then the page tells
 * the relay. */
static bool join_page_customer(CURL *c, struct approval *a, const char *page, const char *account)
{
	const char *relay_end = strstr(page, "/join?");
	const char *base_end = strstr(page, "/relay/join?");
	char *session = query_value(page, "session"), *state = query_value(page, "state");
	char *url = NULL;
	bool ok = false;

	if (!session || !state || !relay_end || !base_end ||
	    asprintf(&url,
	             "%.*s/derapi/join/session/%s/authorize?vendor=%s&sandbox_auto=approve"
	             "&sandbox_account=%s",
	             (int)(base_end - page), page, session, a->vendor, account) < 0) {
		url = NULL;
		snprintf(a->err, sizeof(a->err), "out of memory");
		goto out;
	}
	if (get(c, url, true, a->err) != CURLE_OK)
		goto out;
	free(url);
	if (asprintf(&url, "%.*s/callback?state=%s", (int)(relay_end - page), page, state) < 0) {
		url = NULL;
		snprintf(a->err, sizeof(a->err), "out of memory");
		goto out;
	}
	ok = get(c, url, true, a->err) == CURLE_OK;
out:
	free(url);
	free(session);
	free(state);
	return ok;
}

static void *approve_thread(void *ctx)
{
	struct approval *a = ctx;
	CURL *c = curl_easy_init();
	char *target = NULL, *url = NULL, *where = NULL, *account = NULL;

	if (!c) {
		snprintf(a->err, sizeof(a->err), "out of memory");
		goto out;
	}
	/* The short link redirects to the vendor's authorize URL, or for Derapi Join
	 * to the sandbox's flow authorize URL (vendor and state in its query). */
	if (strcmp(a->link, a->authorize) != 0) {
		if (get(c, a->link, false, a->err) != CURLE_OK)
			goto out;
		curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &where);
	}
	target = strdup(where ? where : a->authorize);
	/* The same customer is the same account (a re-authorization passes the guard). */
	account = curl_easy_escape(c, a->account, 0);
	if (!target || !account ||
	    asprintf(&url, "%s%csandbox_auto=approve&sandbox_account=%s", target,
	             strchr(target, '?') ? '&' : '?', account) < 0) {
		url = NULL;
		snprintf(a->err, sizeof(a->err), "out of memory");
		goto out;
	}
	if (strstr(target, "/relay/join?")) {
		if (join_page_customer(c, a, target, account))
			a->final_url = strdup(target);
		goto out;
	}
	/* Approved at once: the vendor redirects to the relay, the listener or its code
	 * page; Derapi to the relay's callback with state and enrollmentID. */
	if (get(c, url, true, a->err) != CURLE_OK)
		goto out;
	where = NULL;
	curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &where);
	a->final_url = where ? strdup(where) : NULL;
out:
	free(target);
	free(url);
	curl_free(account);
	curl_easy_cleanup(c);
	if (loop_post(approval_done, a) < 0)
		approval_free(a);
	return NULL;
}

static void approval_done(void *ctx)
{
	struct approval *a = ctx;
	struct wiz *w = wiz_state();

	/* Its session's approval has ended, whoever came first (the relay's poll
	 * may have taken the answer already): `a` works again. */
	if (a->gen == w->gen)
		w->approving = false;
	if (a->gen == w->gen && w->e && enr_enroll_state(w->e) == ENR_ENROLL_LINK) {
		if (a->err[0] || !a->final_url) {
			snprintf(w->note, sizeof(w->note),
			         "The demo customer could not approve: %s",
			         a->err[0] ? a->err : "no answer");
		} else if (w->code_active) {
			/* The code page: read the code and type it in. */
			const char *code = strstr(a->final_url, "code=");
			char text[512];
			snprintf(text, sizeof(text), "%s", code ? code + 5 : a->final_url);
			text[strcspn(text, "&")] = '\0';
			field_set_text(&w->code, text);
			code_field_group();
			snprintf(w->note, sizeof(w->note),
			         "Approved; the code is typed in: press Enter.");
		} else {
			snprintf(w->note, sizeof(w->note), "The customer approved on their phone.");
		}
		screen_redraw();
	}
	approval_free(a);
}

static int demo_approve(void)
{
	struct wiz *w = wiz_state();
	struct approval *a;
	pthread_t t;

	if (!w->creds || w->approving)
		return SCREEN_HANDLED;
	a = calloc(1, sizeof(*a));
	if (!a)
		return SCREEN_HANDLED;
	a->gen = w->gen;
	a->account = strdup(w->customer_ref);
	/* In the Join page for any vendor the demo customer picks Tesla. */
	a->vendor = strdup(strcmp(enr_enroll_vendor(w->e)->id, "derapi") == 0
	                       ? "tesla"
	                       : enr_join_vendor_name(enr_enroll_vendor(w->e)));
	a->link = strdup(enr_enroll_link(w->e));
	a->authorize = strdup(enr_enroll_authorize_url(w->e) ? enr_enroll_authorize_url(w->e)
	                                                     : enr_enroll_link(w->e));
	if (!a->link || !a->authorize || !a->account || !a->vendor ||
	    pthread_create(&t, NULL, approve_thread, a) != 0) {
		approval_free(a);
		snprintf(w->note, sizeof(w->note), "Cannot play the customer: out of resources");
		return SCREEN_REDRAW;
	}
	pthread_detach(t);
	w->approving = true;
	snprintf(w->note, sizeof(w->note), "Demo: the customer opens the link and approves...");
	return SCREEN_REDRAW;
}

/* Opens this computer's browser on the authorize URL (loopback sign-in). */
static void open_browser(void)
{
	struct wiz *w = wiz_state();
	const char *url = enr_enroll_authorize_url(w->e);
	pid_t pid;

	if (!url)
		url = enr_enroll_link(w->e);
	pid = fork();
	if (pid == 0) {
		/* A grandchild, so that nobody has to wait for the browser. */
		if (fork() == 0) {
			int null = open("/dev/null", O_RDWR);
			if (null >= 0) {
				dup2(null, 0);
				dup2(null, 1);
				dup2(null, 2);
			}
			setsid();
			execlp("xdg-open", "xdg-open", url, (char *)NULL);
			_exit(127);
		}
		_exit(0);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	snprintf(w->note, sizeof(w->note),
	         pid > 0 ? "Opening this computer's browser (xdg-open)..."
	                 : "Cannot start xdg-open: open the link yourself");
}

static int submit_code(void)
{
	struct wiz *w = wiz_state();
	char *value = NULL;
	int rc;

	if (field_is_blank(&w->code)) {
		field_set_error(&w->code, code_spec()
		                              ? "Type the code shown on the customer's phone"
		                              : "Type the code the page shows, or paste its "
		                                "address");
		return SCREEN_REDRAW;
	}
	rc = field_value(&value, &w->code);
	if (rc == 0)
		rc = enr_enroll_submit_code(w->e, value);
	field_free_value(value);
	if (rc < 0 && enr_enroll_state(w->e) != ENR_ENROLL_FAILED)
		field_set_error(&w->code, "%s", enr_error_last());
	wiz_session_sync();
	return SCREEN_REDRAW;
}

static int link_key(const struct keypress *k)
{
	struct wiz *w = wiz_state();

	if (w->creds && (keypress_is(k, KEY_CTRL('p')) || (!w->code_active && keypress_is(k, 'a'))))
		return demo_approve();
	if (enr_enroll_consent(w->e) == ENR_CONSENT_LOOPBACK && keypress_is(k, 'o')) {
		open_browser();
		return SCREEN_REDRAW;
	}
	if (w->code_active) {
		int rc;
		if (keypress_is_enter(k))
			return submit_code();
		rc = field_handle_key(&w->code, k);
		if (rc == SCREEN_REDRAW)
			code_field_group();
		return rc;
	}
	return SCREEN_IGNORED;
}

/* ---- sites ------------------------------------------------------------- */

/* The ids of the sites the installer chose (the session's own strings, alive
 * while it is at SITES), while they are asked about their other records. */
static const char **chosen;
static size_t n_chosen;

void wiz_sites_setup(void)
{
	struct wiz *w = wiz_state();

	listview_free(w->sites);
	w->sites = NULL;
	free(chosen);
	chosen = NULL;
	n_chosen = 0;
	if (listview_new(&w->sites) < 0)
		return;
	for (size_t i = 0; i < enr_enroll_site_count(w->e); i++) {
		const struct enr_site *s = enr_enroll_site(w->e, i);
		const char *holder = enr_enroll_site_holder(w->e, i);
		char label[512];
		/* Sites no record holds come first; the others say whose they are. */
		snprintf(label, sizeof(label), "%-14s %s%s%s%s", s->id, s->name ? s->name : "",
		         holder ? "  (enrolled: " : "", holder ? holder : "", holder ? ")" : "");
		if (listview_add(w->sites, label, NULL, (void *)s) < 0)
			return;
	}
	/* One customer may have several systems: they can be marked and saved at once. */
	listview_set_marks(w->sites, enr_enroll_site_count(w->e) > 1);
}

static void sites_draw(struct area body)
{
	struct wiz *w = wiz_state();
	char line[256];
	size_t n = enr_enroll_site_count(w->e), fresh = 0;

	while (fresh < n && !enr_enroll_site_holder(w->e, fresh))
		fresh++;
	if (n == 1)
		snprintf(line, sizeof(line),
		         "%s lists one site. Is it the customer's? Enter confirms.", vendor_name());
	else
		snprintf(line, sizeof(line),
		         "%s lists %zu sites, %zu not enrolled yet (first). Choose the customer's "
		         "site, or mark each of theirs with Space (type to filter).",
		         vendor_name(), n, fresh);
	draw_wrapped((struct area){body.y, 2, 2, body.cols - 4}, A_NORMAL, line);
	if (w->sites)
		listview_draw(w->sites, (struct area){body.y + 2, 2, body.rows - 2, body.cols - 4});
}

static int choose_sites(void *ctx)
{
	struct wiz *w = wiz_state();
	int rc;

	(void)ctx;
	if (!w->e || enr_enroll_state(w->e) != ENR_ENROLL_SITES)
		return SCREEN_REDRAW;
	rc = enr_enroll_choose_sites(w->e, chosen, n_chosen);
	if (rc < 0 && enr_enroll_state(w->e) != ENR_ENROLL_FAILED)
		snprintf(w->note, sizeof(w->note), "%s", enr_error_last());
	wiz_session_sync();
	return SCREEN_REDRAW;
}

/* The record that holds `s` already, if another customer's. */
static const char *other_holder(const struct enr_site *s)
{
	struct wiz *w = wiz_state();

	for (size_t i = 0; i < enr_enroll_site_count(w->e); i++)
		if (enr_enroll_site(w->e, i) == s) {
			const char *holder = enr_enroll_site_holder(w->e, i);
			return holder && strcmp(holder, w->customer_ref) != 0 ? holder : NULL;
		}
	return NULL;
}

static void take_site(const struct enr_site *s)
{
	chosen[n_chosen++] = s->id;
}

static int sites_key(const struct keypress *k)
{
	struct wiz *w = wiz_state();
	const struct enr_site *s, *held = NULL;
	const char *holder = NULL;
	char question[1024], site[ENR_TEXT_VISIBLE_SIZE(40)], other[ENR_TEXT_VISIBLE_SIZE(60)],
	    mine[ENR_TEXT_VISIBLE_SIZE(60)];
	size_t sel, n_held = 0;

	if (!w->sites)
		return SCREEN_IGNORED;
	if (!keypress_is_enter(k))
		return listview_handle_key(w->sites, k);
	n_chosen = 0;
	free(chosen);
	if (!(chosen = calloc(enr_enroll_site_count(w->e) + 1, sizeof(*chosen))))
		return SCREEN_HANDLED;
	/* The marked sites, else the one selected. */
	for (size_t i = 0; i < listview_count(w->sites); i++)
		if (listview_marked(w->sites, i))
			take_site(listview_data(w->sites, i));
	if (!n_chosen) {
		sel = listview_selected(w->sites);
		if (sel == LISTVIEW_NONE)
			return SCREEN_HANDLED;
		take_site(listview_data(w->sites, sel));
	}
	/* Another customer's record holds a site: saving it renames that customer. */
	for (size_t i = 0; i < enr_enroll_site_count(w->e); i++) {
		s = enr_enroll_site(w->e, i);
		for (size_t j = 0; j < n_chosen; j++)
			if (chosen[j] == s->id && other_holder(s)) {
				held = held ? held : s;
				holder = holder ? holder : other_holder(s);
				n_held++;
			}
	}
	if (!held)
		return choose_sites(NULL);
	if (n_held == 1)
		snprintf(question, sizeof(question),
		         "Site %s is enrolled already, for \"%s\". Enrolling it here replaces that "
		         "record's customer reference with \"%s\". Replace it?",
		         enr_text_visible(site, sizeof(site), held->id, 40),
		         enr_text_visible(other, sizeof(other), holder, 60),
		         enr_text_visible(mine, sizeof(mine), w->customer_ref, 60));
	else
		snprintf(question, sizeof(question),
		         "%zu of these sites are enrolled already (%s for \"%s\", ...). Enrolling "
		         "them here replaces those records' customer reference with \"%s\". "
		         "Replace them?",
		         n_held, enr_text_visible(site, sizeof(site), held->id, 40),
		         enr_text_visible(other, sizeof(other), holder, 60),
		         enr_text_visible(mine, sizeof(mine), w->customer_ref, 60));
	screen_confirm(question, "replace", "choose again", choose_sites, NULL);
	return SCREEN_HANDLED;
}

/* ---- saved, failed, waiting -------------------------------------------- */

/* The sites of the records saved, as one line: "id name" or "3 sites: a, b, c". */
static void sites_line(char *line, size_t size)
{
	struct wiz *w = wiz_state();
	const struct enr_record *rec;
	size_t n = 0, len;

	for (size_t i = 0; (rec = enr_enroll_record_at(w->e, i)); i++)
		n += rec->n_sites;
	rec = enr_enroll_record(w->e);
	if (n <= 1) {
		snprintf(line, size, "Site:      %s %s", rec->n_sites ? rec->sites[0].id : "",
		         rec->n_sites && rec->sites[0].name ? rec->sites[0].name : "");
		return;
	}
	len = (size_t)snprintf(line, size, "Sites:     %zu:", n);
	for (size_t i = 0; (rec = enr_enroll_record_at(w->e, i)); i++)
		for (size_t j = 0; j < rec->n_sites && len < size; j++)
			len += (size_t)snprintf(line + len, size - len, "%s %s", i + j ? "," : "",
			                        rec->sites[j].id);
}

static void done_draw(struct area body)
{
	struct wiz *w = wiz_state();
	const struct enr_record *rec = enr_enroll_record(w->e);
	size_t n_records = enr_enroll_record_count(w->e);
	char line[512], when[64];
	int y = body.y + 1;

	enr_lifecycle_due_text(when, sizeof(when), rec, "does not expire");
	if (n_records > 1) {
		size_t len = (size_t)snprintf(line, sizeof(line), "Saved %zu records:", n_records);
		for (size_t i = 0; i < n_records && len < sizeof(line); i++)
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %s",
			                        enr_enroll_record_at(w->e, i)->id);
	} else {
		snprintf(line, sizeof(line), "%s record %s",
		         enr_enroll_updated(w->e) ? "Updated" : "Saved", rec->id);
	}
	snprintf(line + strlen(line), sizeof(line) - strlen(line), "%s.",
	         enr_record_pending(rec) ? " on this laptop only: the team store is out of reach "
	                                   "(pushed by `derenroll sync`)"
	                                 : "");
	y += draw_wrapped((struct area){y, 2, 3, body.cols - 4}, A_BOLD, line) + 1;
	snprintf(line, sizeof(line), "Vendor:    %s (%s)", vendor_name(),
	         enr_enroll_method(w->e)->label);
	draw_text(y++, 2, body.cols - 4, A_NORMAL, line);
	snprintf(line, sizeof(line), "Customer:  %s", rec->customer ? rec->customer : "");
	draw_text(y++, 2, body.cols - 4, A_NORMAL, line);
	sites_line(line, sizeof(line));
	draw_text(y++, 2, body.cols - 4, A_NORMAL, line);
	snprintf(line, sizeof(line), "Authorization expires: %s", when);
	draw_text(y++, 2, body.cols - 4, A_NORMAL, line);
	y++;
	if (enr_enroll_warning(w->e))
		y += draw_wrapped((struct area){y, 2, 4, body.cols - 4}, term_attr(TERM_ERROR),
		                  enr_enroll_warning(w->e)) +
		     1;
	draw_text(y, 2, body.cols - 4, A_NORMAL, "Enter: enroll another system.");
}

static void failed_draw(struct area body, const char *message)
{
	struct area a = {body.y + 1, 2, body.rows - 3, body.cols - 4};

	a.y += draw_wrapped(a, term_attr(TERM_ERROR), message) + 1;
	a.rows = body.y + body.rows - a.y;
	draw_wrapped(a, A_NORMAL, "r tries again; Esc goes back.");
}

static void wait_draw(struct area body)
{
	static const char spin[] = "|/-\\";
	struct wiz *w = wiz_state();
	char left[64];
	struct area a = {body.y + 1, 2, body.rows - 1, body.cols - 4};

	a.y += draw_wrapped(a, A_NORMAL, enr_enroll_message(w->e)) + 1;
	countdown(left, sizeof(left));
	draw_text(a.y++, 2, 3, A_BOLD, (char[]){spin[(time(NULL)) % 4], '\0'});
	if (left[0])
		draw_text(a.y++, 2, a.cols, A_BOLD, left);
	if (w->note[0])
		draw_wrapped((struct area){a.y + 1, 2, 3, a.cols}, A_NORMAL, w->note);
}

/* ---- the session screen ------------------------------------------------- */

/* The keys of the session screen in the session's state. */
static const struct key_help *session_keys(struct screen *s)
{
	static const struct key_help k_form[] = {{"Enter", "submit"},
	                                         {"Tab", "next field"},
	                                         {FIELD_REVEAL_KEY_NAME, "show/hide"},
	                                         {"Esc", "cancel"},
	                                         {NULL, NULL}};
	static const struct key_help k_wait[] = {{"Esc", "cancel"}, {NULL, NULL}};
	static const struct key_help k_site[] = {
	    {"Enter", "confirm site"}, {"Esc", "cancel"}, {NULL, NULL}};
	static const struct key_help k_sites[] = {{"Enter", "save"},
	                                          {"Space", "mark"},
	                                          {"type", "filter"},
	                                          {"Esc", "cancel"},
	                                          {NULL, NULL}};
	static const struct key_help k_done[] = {
	    {"Enter", "enroll another"}, {"q", "quit"}, {NULL, NULL}};
	static const struct key_help k_failed[] = {{"r", "retry"}, {"Esc", "back"}, {NULL, NULL}};
	static struct key_help k_link[6];
	struct wiz *w = wiz_state();
	size_t nk = 0;

	(void)s;
	if (!w->e)
		return k_failed;
	switch (enr_enroll_state(w->e)) {
	case ENR_ENROLL_FIELDS:
		return k_form;
	case ENR_ENROLL_LINK:
		if (w->code_active)
			k_link[nk++] = (struct key_help){"Enter", "submit code"};
		if (enr_enroll_consent(w->e) == ENR_CONSENT_LOOPBACK)
			k_link[nk++] = (struct key_help){"o", "open browser"};
		if (w->creds)
			k_link[nk++] = (struct key_help){w->code_active ? "^P" : "a",
			                                 "customer approves (demo)"};
		k_link[nk++] = (struct key_help){"Esc", "cancel"};
		k_link[nk] = (struct key_help){NULL, NULL};
		return k_link;
	case ENR_ENROLL_WAIT:
		return k_wait;
	case ENR_ENROLL_SITES:
		return enr_enroll_site_count(w->e) > 1 ? k_sites : k_site;
	case ENR_ENROLL_DONE:
		return k_done;
	case ENR_ENROLL_FAILED:
		break;
	}
	return k_failed;
}

static void session_draw(struct screen *s)
{
	const struct key_help *keys = session_keys(s);
	struct wiz *w = wiz_state();
	char title[1024], who[512];

	if (!w->e) {
		snprintf(title, sizeof(title), "%s: cannot start",
		         vendor_name()[0] ? vendor_name() : "Re-authorization");
		failed_draw(screen_frame(title, keys), w->start_error);
		return;
	}
	static const char *const doing[] = {[ENR_ENROLL_FIELDS] = NULL,
	                                    [ENR_ENROLL_LINK] = "the customer approves",
	                                    [ENR_ENROLL_WAIT] = "waiting",
	                                    [ENR_ENROLL_SITES] = "sites found"};
	enum enr_enroll_state st = enr_enroll_state(w->e);

	/* "Vendor: what is happening, re-authorizing record ID for "CUSTOMER"" */
	whose(who, sizeof(who), "re-authorizing");
	if (st <= ENR_ENROLL_SITES)
		snprintf(title, sizeof(title), "%s: %s%s%s", vendor_name(),
		         doing[st] ? doing[st] : enr_enroll_method(w->e)->label, who[0] ? ", " : "",
		         who);
	switch (st) {
	case ENR_ENROLL_FIELDS:
		form_draw(screen_frame(title, keys));
		break;
	case ENR_ENROLL_LINK:
		link_draw(screen_frame(title, keys));
		break;
	case ENR_ENROLL_WAIT:
		wait_draw(screen_frame(title, keys));
		break;
	case ENR_ENROLL_SITES:
		sites_draw(screen_frame(title, keys));
		break;
	case ENR_ENROLL_DONE:
		done_draw(screen_frame("Saved", keys));
		break;
	case ENR_ENROLL_FAILED:
		snprintf(title, sizeof(title), "%s: not enrolled", vendor_name());
		failed_draw(screen_frame(title, keys), enr_enroll_message(w->e));
		break;
	}
}

/* Back to where the installer came from (the start screen if nothing is below). */
static int go_back(void)
{
	struct wiz *w = wiz_state();

	if (w->session_first) {
		w->session_first = false;
		w->reauth_id = NULL;
		screen_replace(&wiz_start_screen);
		return SCREEN_HANDLED;
	}
	return SCREEN_BACK;
}

/* Cancels the session and goes back. */
static int discard_session(void *ctx)
{
	struct wiz *w = wiz_state();

	(void)ctx;
	if (w->e)
		enr_enroll_cancel(w->e);
	return go_back();
}

/* Starts the session again; a form keeps what was typed in it (a refused
 * key is corrected, not typed anew). */
static void retry(void)
{
	struct wiz *w = wiz_state();
	size_t n = w->n_fields;
	char **kept = n ? calloc(n, sizeof(*kept)) : NULL;

	for (size_t i = 0; kept && i < n; i++)
		if (field_value(&kept[i], &w->fields[i]) < 0)
			kept[i] = NULL;
	wiz_session_start();
	for (size_t i = 0; kept && i < n; i++) {
		if (kept[i] && w->n_fields == n)
			field_set_text(&w->fields[i], kept[i]);
		if (kept[i])
			field_free_value(kept[i]);
	}
	free(kept);
}

static int session_key(struct screen *s, const struct keypress *k)
{
	struct wiz *w = wiz_state();
	enum enr_enroll_state st = w->e ? enr_enroll_state(w->e) : ENR_ENROLL_FAILED;
	int r = SCREEN_IGNORED;

	(void)s;
	if (!w->e || st == ENR_ENROLL_FAILED) {
		if (keypress_is(k, 'r') || keypress_is_enter(k)) {
			retry();
			return SCREEN_REDRAW;
		}
		return keypress_is_escape(k) || keypress_is(k, 'q') ? go_back() : SCREEN_IGNORED;
	}
	if (st == ENR_ENROLL_DONE) {
		if (keypress_is(k, 'q'))
			return SCREEN_QUIT;
		if (keypress_is_enter(k) || keypress_is(k, 'n') || keypress_is_escape(k)) {
			/* The next system is often the same customer's: the reference
			 * stays (Tab changes it), the vendor filter goes. */
			listview_set_filter(w->vendors, "");
			w->customer_kept = !field_is_blank(&w->customer);
			w->start_focus = w->customer_kept ? 1 : 0;
			if (w->session_first || w->reauth_id)
				return go_back(); /* a re-authorization goes back to the systems */
			wiz_session_end();
			while (screen_top() != &wiz_start_screen)
				screen_pop();
			return SCREEN_REDRAW;
		}
		return SCREEN_IGNORED;
	}
	switch (st) {
	case ENR_ENROLL_FIELDS:
		r = form_key(k);
		break;
	case ENR_ENROLL_LINK:
		r = link_key(k);
		break;
	case ENR_ENROLL_SITES:
		r = sites_key(k);
		break;
	default:
		break;
	}
	if (r == SCREEN_IGNORED && keypress_is_escape(k)) {
		/* The customer has the link, or has approved: not lost by one key. */
		if (st == ENR_ENROLL_LINK)
			screen_confirm("Discard this authorization? The link stops working: the "
			               "customer would have to scan a new code.",
			               "discard", "keep", discard_session, NULL);
		else if (st == ENR_ENROLL_SITES)
			screen_confirm("Discard this authorization? The customer's approval is "
			               "saved only when a site is confirmed.",
			               "discard", "keep", discard_session, NULL);
		else
			return discard_session(NULL);
		return SCREEN_HANDLED;
	}
	return r;
}

static int session_event(struct screen *s, const struct screen_event *ev)
{
	struct wiz *w = wiz_state();

	(void)s;
	/* The countdown and the spinner. */
	if (ev->type == SCREEN_EV_TICK && w->e &&
	    (enr_enroll_state(w->e) == ENR_ENROLL_LINK ||
	     enr_enroll_state(w->e) == ENR_ENROLL_WAIT))
		return SCREEN_REDRAW;
	return SCREEN_IGNORED;
}

static void session_enter(struct screen *s)
{
	struct wiz *w = wiz_state();

	(void)s;
	if (!w->e && !w->start_error[0])
		wiz_session_start();
}

struct screen wiz_session_screen = {.name = "session",
                                    .draw = session_draw,
                                    .handle_key = session_key,
                                    .on_event = session_event,
                                    .on_enter = session_enter,
                                    .keys = session_keys};
