/*
 * The wizard's enrolled systems screen, for support staff: every record with
 * its status, most urgent first, filtered after /; check now, refresh,
 * re-authorize, show (secrets masked until asked) and remove, each on a letter
 * and an F-key; check every record shown, refresh every one that is due.
 *
 * On a team store the list comes from the database a page at a time, in its
 * order (most urgent first: schema 2's due_at, then the id): the first page
 * at once, the next when the selection nears the end of what is read, the
 * rest before End and before C or R (enr_store_team_page()). The filter is
 * asked of the database (a moment after the last key), which narrows the
 * list to the records whose id, customer, vendor or method holds it; the
 * list's own filter then shows what the label holds, as on a file store. A
 * filter the database cannot narrow by (a status, a date) reads every page,
 * in the background.
 */
#include <ctype.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "derenroll/bulk.h"
#include "derenroll/config.h"
#include "derenroll/error.h"
#include "derenroll/http.h"
#include "derenroll/lifecycle.h"
#include "derenroll/store.h"
#include "cli.h"
#include "wizard_int.h"

#define MAX_WATCH  32
#define FIRST_PAGE 100  /* records read before the first frame (team store) */
#define NEXT_PAGE  1000 /* then at a time */
#define FILTER_MS  150  /* the filter asked of the database this long after the last key */

enum systems_mode { SYS_LIST, SYS_SHOW, SYS_CONFIRM };

struct row {
	char *id;
	enum enr_status status;
	long long due;
};

struct systems {
	struct listview *lv;
	struct row *rows;
	size_t n_rows, cap_rows;
	/* A team store: the pages read so far, how many records there are. */
	bool team;
	struct enr_store_cursor cursor;
	size_t total;
	bool counted;
	bool read_all; /* every page, in the background: a filter the database cannot narrow by */
	unsigned page_timer, filter_timer;
	char *keep;         /* the record to select when it comes */
	unsigned store_gen; /* the wizard's store_gen the list was built from */
	enum systems_mode mode;
	char *current; /* the record shown or to remove */
	bool reveal;
	char *shown; /* the record as pretty JSON */
	int scroll;  /* its first line shown */
	struct enr_http_multi *multi;
	int watched[MAX_WATCH];
	size_t n_watched;
	unsigned timer;
	struct enr_job *job;   /* one at a time */
	struct enr_bulk *bulk; /* or many: check all, refresh all due */
	bool running, refreshing;
	char note[512];
	double opened; /* when F2 was pressed (CLOCK_MONOTONIC, ms), until first drawn */
};

static struct systems *S;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* For the benchmark (tests/bench/team_bench.sh): the milliseconds from F2 to
 * the list drawn, appended to the file $DERENROLL_SYSTEMS_READY names. */
static void report_drawn(void)
{
	const char *path = getenv("DERENROLL_SYSTEMS_READY");
	FILE *f;

	if (!S->opened || !path || !(f = fopen(path, "a"))) {
		S->opened = 0;
		return;
	}
	fprintf(f, "%.1f %zu\n", now_ms() - S->opened, S->n_rows);
	fclose(f);
	S->opened = 0;
}

static long expiring_days(void)
{
	long days = 7;

	enr_config_get_long(&days, wiz_state()->g->cfg, "ui", "expiring_days", 7, 0, 365);
	return days;
}

static void free_rows(void)
{
	for (size_t i = 0; i < S->n_rows; i++)
		free(S->rows[i].id);
	free(S->rows);
	S->rows = NULL;
	S->n_rows = S->cap_rows = 0;
	loop_cancel_timer(S->page_timer);
	loop_cancel_timer(S->filter_timer);
	S->page_timer = S->filter_timer = 0;
	free(S->keep);
	S->keep = NULL;
	listview_free(S->lv);
	S->lv = NULL;
}

static int by_urgency(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->status != y->status)
		return (int)x->status - (int)y->status;
	if (x->due != y->due)
		return x->due && (!y->due || x->due < y->due) ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* A row's line in the list. */
static int add_label(const struct enr_record *rec, size_t i)
{
	char label[512];

	cli_list_row(label, sizeof(label), rec, S->rows[i].status, S->rows[i].due);
	if (listview_add(S->lv, label, NULL, (void *)(uintptr_t)i) < 0)
		return -1;
	if (S->keep && strcmp(S->keep, S->rows[i].id) == 0)
		listview_select(S->lv, listview_count(S->lv) - 1);
	return 0;
}

static void on_page_timer(void *ctx);

/* The next page of a team store at the end of the list (taking the records). */
static int read_page(size_t max)
{
	struct wiz *w = wiz_state();
	struct enr_record **recs = NULL;
	long long now = (long long)time(NULL);
	long days = expiring_days();
	size_t n = 0, i = 0;
	int rc = enr_store_team_page(w->store, &S->cursor, max, &recs, &n);

	if (rc < 0) {
		snprintf(S->note, sizeof(S->note), "%s", enr_error_last());
		S->cursor.done = true; /* no retry loop; F2 again reads anew */
		return rc;
	}
	if (n && S->n_rows + n > S->cap_rows) {
		size_t cap = S->cap_rows ? S->cap_rows : 64;
		struct row *grown;
		while (cap < S->n_rows + n)
			cap *= 2;
		if (!(grown = realloc(S->rows, cap * sizeof(*S->rows))))
			rc = -1;
		else {
			S->rows = grown;
			S->cap_rows = cap;
		}
	}
	for (; rc == 0 && i < n; i++) {
		struct row *r = &S->rows[S->n_rows];
		if (!(r->id = strdup(recs[i]->id))) {
			rc = -1;
			break;
		}
		r->status = enr_status_of(recs[i], now, days, &r->due);
		S->n_rows++;
		if (add_label(recs[i], S->n_rows - 1) < 0)
			rc = -1;
	}
	for (i = 0; i < n; i++)
		enr_record_free(recs[i]);
	free(recs);
	if (rc < 0)
		S->cursor.done = true;
	return rc;
}

/* After the first frame, how many records there are; with read_all, the rest
 * of a team store, a page at a time while the wizard is idle. */
static void on_page_timer(void *ctx)
{
	struct wiz *w = wiz_state();

	(void)ctx;
	S->page_timer = 0;
	if (!S->counted) {
		S->counted = enr_store_team_count(w->store, S->cursor.match, &S->total) == 0;
		if (!S->counted)
			snprintf(S->note, sizeof(S->note), "%s", enr_error_last());
		S->counted = true;
	} else if (!S->cursor.done) {
		read_page(NEXT_PAGE);
	}
	if (S->read_all && !S->cursor.done)
		S->page_timer = loop_set_timer(1, on_page_timer, NULL);
	screen_redraw();
}

/*
 * Whether the database can narrow the list to the records that may show
 * `filter`: a text that can only be in a label's id, vendor, method or
 * customer. Part of a status or of a due date ("exp", "2026-12"), or what
 * spans two columns, is in no column of the database: every record then.
 */
static bool db_narrows(const char *filter)
{
	char low[sizeof(S->cursor.match)];
	size_t n = strlen(filter);

	if (n == 0 || n >= sizeof(low) || strstr(filter, "  "))
		return false;
	for (size_t i = 0; i <= n; i++)
		low[i] = (char)tolower((unsigned char)filter[i]);
	/* The STATUS column, and the DUE column's "now" (cli_list_row()). */
	for (int st = ENR_STATUS_REJECTED; st <= ENR_STATUS_OK; st++)
		if (strstr(enr_status_name((enum enr_status)st), low))
			return false;
	return !strstr("now", low) && strspn(low, "0123456789- ") < n;
}

/* A team store: the first page of what may show `filter` now, the count after the first frame. */
static void build_team_list(const char *filter)
{
	memset(&S->cursor, 0, sizeof(S->cursor));
	S->read_all = filter[0] && !db_narrows(filter);
	if (!S->read_all)
		snprintf(S->cursor.match, sizeof(S->cursor.match), "%s", filter);
	S->counted = false;
	S->total = 0;
	read_page(FIRST_PAGE);
	S->page_timer = loop_set_timer(1, on_page_timer, NULL);
}

/* Every page not read yet (before End, and before C or R act on all shown). */
static void read_rest(void)
{
	while (S->team && !S->cursor.done && read_page(NEXT_PAGE) == 0)
		;
}

/* With the selection within a page of the end of what is read, the next page now. */
static void read_ahead(void)
{
	size_t sel = S->lv ? listview_selected(S->lv) : LISTVIEW_NONE;

	if (!S->team || S->cursor.done || !S->lv)
		return;
	if (sel == LISTVIEW_NONE || sel + FIRST_PAGE >= listview_count(S->lv))
		read_page(NEXT_PAGE);
}

/* Builds the list from the store, keeping the selected record and the filter. */
static void build_list(void)
{
	struct wiz *w = wiz_state();
	size_t n = enr_store_count(w->store);
	long long now = (long long)time(NULL);
	long days = expiring_days();
	char *keep = NULL;
	size_t sel;

	char filter[1024] = "";
	bool filtering = false;

	if (S->lv && (sel = listview_selected(S->lv)) != LISTVIEW_NONE)
		keep = strdup(S->rows[(size_t)(uintptr_t)listview_data(S->lv, sel)].id);
	if (S->lv) {
		snprintf(filter, sizeof(filter), "%s", listview_filter(S->lv));
		filtering = listview_filtering(S->lv);
	}
	free_rows();
	S->store_gen = w->store_gen;
	S->team = enr_store_is_team(w->store);
	if (listview_new(&S->lv) < 0)
		goto out;
	listview_set_filter_by_key(S->lv, true);
	/* The columns of `derenroll list`. */
	listview_set_header(S->lv, cli_list_header());
	listview_set_filter(S->lv, filter);
	if (filtering)
		listview_handle_key(S->lv, &(struct keypress){.kind = KP_CHAR, .code = '/'});
	if (S->team) {
		S->keep = keep;
		build_team_list(filter);
		return;
	}
	S->rows = calloc(n ? n : 1, sizeof(*S->rows));
	S->cap_rows = S->rows ? (n ? n : 1) : 0;
	if (!S->rows)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const struct enr_record *rec = enr_store_at(w->store, i);
		S->rows[i].id = strdup(rec->id);
		S->rows[i].status = enr_status_of(rec, now, days, &S->rows[i].due);
		if (!S->rows[i].id)
			goto out;
		S->n_rows++;
	}
	qsort(S->rows, S->n_rows, sizeof(*S->rows), by_urgency);
	S->keep = keep;
	keep = NULL;
	for (size_t i = 0; i < S->n_rows; i++) {
		struct enr_record *rec = NULL;
		int rc;
		if (enr_store_get(&rec, w->store, S->rows[i].id) < 0)
			continue;
		rc = add_label(rec, i);
		enr_record_free(rec);
		if (rc < 0)
			break;
	}
	free(S->keep);
	S->keep = NULL;
out:
	free(keep);
}

/* The selected record. On a team store (opened on demand) a record written by
 * another machine since the wizard started is read when it is acted on. */
static const char *selected_id(void)
{
	size_t sel = S->lv ? listview_selected(S->lv) : LISTVIEW_NONE;

	return sel == LISTVIEW_NONE ? NULL
	                            : S->rows[(size_t)(uintptr_t)listview_data(S->lv, sel)].id;
}

/* ---- jobs on the multi ------------------------------------------------- */

static void multi_sync(void);
static void bulk_done(void);

static void step(void)
{
	if (S->bulk)
		enr_bulk_step(S->bulk);
	else if (S->multi)
		enr_http_multi_step(S->multi);
	multi_sync();
}

static void on_multi(void *ctx, int fd, short revents)
{
	(void)ctx;
	(void)fd;
	(void)revents;
	step();
}

static void on_multi_timer(void *ctx)
{
	(void)ctx;
	S->timer = 0;
	step();
}

static void multi_unwatch(void)
{
	for (size_t i = 0; i < S->n_watched; i++)
		loop_unwatch_fd(S->watched[i]);
	S->n_watched = 0;
	loop_cancel_timer(S->timer);
	S->timer = 0;
}

static void multi_sync(void)
{
	struct pollfd fds[MAX_WATCH];
	size_t n;
	long t;

	multi_unwatch();
	if (S->bulk && enr_bulk_finished(S->bulk)) {
		bulk_done();
		return;
	}
	if (!S->running || (!S->multi && !S->bulk))
		return;
	n = S->bulk ? enr_bulk_poll_fds(S->bulk, fds, MAX_WATCH)
	            : enr_http_multi_poll_fds(S->multi, fds, MAX_WATCH);
	for (size_t i = 0; i < n && i < MAX_WATCH; i++)
		if (loop_watch_fd(fds[i].fd, fds[i].events, on_multi, NULL) == 0)
			S->watched[S->n_watched++] = fds[i].fd;
	t = S->bulk ? enr_bulk_timeout_ms(S->bulk) : enr_http_multi_timeout_ms(S->multi);
	S->timer = loop_set_timer(t >= 0 && t < 1000 ? t : 1000, on_multi_timer, NULL);
}

static void job_done(const struct enr_job_result *r, void *ctx)
{
	struct wiz *w = wiz_state();
	bool refresh = S->refreshing;

	(void)ctx;
	S->running = false;
	S->job = NULL; /* it frees itself */
	enr_lifecycle_save_results(w->store, r, 1);
	if (r->error)
		snprintf(S->note, sizeof(S->note), "%s %s: %s", r->id,
		         refresh ? "not refreshed" : "check failed",
		         r->message ? r->message : enr_error_default_message(r->error));
	else
		snprintf(S->note, sizeof(S->note), "%s: %s%s, %zu site%s", r->id,
		         r->refreshed ? "refreshed, " : "", r->checked_at ? "checked ok" : "ok",
		         r->n_sites, r->n_sites == 1 ? "" : "s");
	w->store_gen++;
	screen_redraw();
}

static void start_job(enum enr_job_kind kind)
{
	struct wiz *w = wiz_state();
	const char *id = selected_id();
	struct enr_job *job = NULL;
	int rc;

	if (!id)
		return;
	if (S->running) {
		snprintf(S->note, sizeof(S->note), "Wait: the last check is still running");
		return;
	}
	if (!S->multi && enr_http_multi_new(&S->multi, w->g->cfg) < 0) {
		snprintf(S->note, sizeof(S->note), "%s", enr_error_last());
		return;
	}
	snprintf(S->note, sizeof(S->note), "%s %s...",
	         kind == ENR_JOB_REFRESH ? "Refreshing" : "Checking", id);
	/* Room for the new tokens before one is spent, as the refresh command does. */
	if (kind == ENR_JOB_REFRESH && enr_store_reserve(w->store, &id, 1) < 0) {
		snprintf(S->note, sizeof(S->note), "%s", enr_error_last());
		return;
	}
	S->running = true;
	S->refreshing = kind == ENR_JOB_REFRESH;
	rc = enr_job_start(&job, w->store, w->g->cfg, w->g->catalog, S->multi, id, kind, job_done,
	                   NULL);
	/* A job that cannot start has called job_done already. */
	if (rc == 0 && S->running)
		S->job = job;
	multi_sync();
}

/* A team store: the list built again for the filter now typed, which the
 * database narrows otherwise than the list was read. */
static void apply_filter(void)
{
	loop_cancel_timer(S->filter_timer);
	S->filter_timer = 0;
	build_list();
}

static void on_filter_timer(void *ctx)
{
	(void)ctx;
	S->filter_timer = 0;
	apply_filter();
	screen_redraw();
}

static void filter_changed(void)
{
	const char *filter;
	bool all;

	if (!S->team || !S->lv)
		return;
	filter = listview_filter(S->lv);
	all = filter[0] && !db_narrows(filter);
	if (all == S->read_all && strcmp(all ? "" : filter, S->cursor.match) == 0)
		return;
	if (all && !S->cursor.match[0]) {
		/* Every record was asked for already: the rest of them, in the background. */
		S->read_all = true;
		if (!S->page_timer && !S->cursor.done)
			S->page_timer = loop_set_timer(1, on_page_timer, NULL);
		return;
	}
	loop_cancel_timer(S->filter_timer);
	S->filter_timer = loop_set_timer(FILTER_MS, on_filter_timer, NULL);
}

/* Every record the filter shows (check all), or those of them due for a
 * refresh within [ui] expiring_days (refresh all due), as `status` and
 * `refresh --due` run them; on a team store, read to the end first. */
static void start_bulk(enum enr_job_kind kind)
{
	struct wiz *w = wiz_state();
	struct enr_bulk_options opts = {.kind = kind};
	long long now = (long long)time(NULL);
	size_t added = 0;
	int rc;

	if (S->running) {
		snprintf(S->note, sizeof(S->note), "Wait: the last check is still running");
		return;
	}
	read_rest();
	rc = enr_bulk_new(&S->bulk, w->store, w->g->cfg, w->g->catalog, &opts);
	for (size_t i = 0; rc == 0 && S->lv && i < listview_shown(S->lv); i++) {
		const char *id =
		    S->rows[(size_t)(uintptr_t)listview_data(S->lv, listview_shown_at(S->lv, i))]
		        .id;
		if (kind == ENR_JOB_REFRESH) {
			struct enr_record *rec = NULL;
			bool due =
			    enr_store_get(&rec, w->store, id) == 0 &&
			    enr_lifecycle_refresh_due(rec, w->g->catalog, now, expiring_days());
			enr_record_free(rec);
			if (!due)
				continue;
		}
		if ((rc = enr_bulk_add(S->bulk, id)) == 0)
			added++;
	}
	if (rc < 0 || added == 0) {
		if (rc < 0)
			snprintf(S->note, sizeof(S->note), "%s", enr_error_last());
		else if (kind == ENR_JOB_REFRESH)
			snprintf(S->note, sizeof(S->note),
			         "No system shown is due for a refresh in %ld days.",
			         expiring_days());
		else
			snprintf(S->note, sizeof(S->note), "No record to check.");
		enr_bulk_free(S->bulk);
		S->bulk = NULL;
		return;
	}
	snprintf(S->note, sizeof(S->note), "%s %zu record%s...",
	         kind == ENR_JOB_REFRESH ? "Refreshing" : "Checking", added, added == 1 ? "" : "s");
	S->running = true;
	S->refreshing = kind == ENR_JOB_REFRESH;
	step();
}

static void bulk_done(void)
{
	struct wiz *w = wiz_state();
	size_t n = enr_bulk_result_count(S->bulk), failed = 0, refreshed = 0;

	for (size_t i = 0; i < n; i++) {
		const struct enr_job_result *r = enr_bulk_result(S->bulk, i);
		if (r->error)
			failed++;
		else if (r->refreshed)
			refreshed++;
	}
	if (S->refreshing)
		snprintf(S->note, sizeof(S->note),
		         "Refreshed %zu of %zu due; %zu failed (see their status).", refreshed, n,
		         failed);
	else
		snprintf(S->note, sizeof(S->note),
		         "Checked %zu: %zu ok, %zu failed (see their status).", n, n - failed,
		         failed);
	enr_bulk_free(S->bulk);
	S->bulk = NULL;
	S->running = false;
	w->store_gen++;
	screen_redraw();
}

/* ---- show and remove ----------------------------------------------------- */

static void clear_shown(void)
{
	if (S->shown) {
		explicit_bzero(S->shown, strlen(S->shown));
		free(S->shown);
		S->shown = NULL;
	}
}

static void load_shown(void)
{
	struct wiz *w = wiz_state();
	struct enr_record *rec = NULL;
	size_t len = 0;
	FILE *f;

	clear_shown();
	if (enr_store_get(&rec, w->store, S->current) < 0) {
		snprintf(S->note, sizeof(S->note), "%s", enr_error_last());
		return;
	}
	/* As `derenroll show` prints it; the text holds secrets once revealed. */
	f = open_memstream(&S->shown, &len);
	if (f) {
		cli_show_text(f, rec, (long long)time(NULL), expiring_days(), S->reveal,
		              "^R shows it");
		fclose(f);
	}
	enr_record_free(rec);
}

/* ---- the screen ---------------------------------------------------------- */

enum action {
	ACT_NONE,
	ACT_CHECK,
	ACT_REFRESH,
	ACT_REAUTH,
	ACT_REMOVE,
	ACT_CHECK_ALL,
	ACT_REFRESH_DUE
};

/* The keys of the actions: a letter each (what the key line shows), and the
 * F-keys of old (and Delete) as aliases, which also work while filtering. */
static const struct {
	enum action action;
	wint_t letter;
	int fkey;
} bindings[] = {
    {ACT_CHECK, 'c', KEY_F(5)},  {ACT_REFRESH, 'r', KEY_F(6)}, {ACT_REAUTH, 'a', KEY_F(7)},
    {ACT_REMOVE, 'd', KEY_F(8)}, {ACT_REMOVE, 0, KEY_DC},      {ACT_CHECK_ALL, 'C', 0},
    {ACT_REFRESH_DUE, 'R', 0},
};

static enum action action_of(const struct keypress *k, bool typing)
{
	for (size_t i = 0; i < sizeof(bindings) / sizeof(bindings[0]); i++) {
		if (bindings[i].fkey && k->kind == KP_FUNC && k->code == (wint_t)bindings[i].fkey)
			return bindings[i].action;
		if (bindings[i].letter && !typing && keypress_is(k, bindings[i].letter))
			return bindings[i].action;
	}
	return ACT_NONE;
}

/* The screen's keys in its mode, for the key line and the help screen. */
static const struct key_help *systems_keys(struct screen *s)
{
	static const struct key_help k_list[] = {
	    {"c", "check"},
	    {"r", "refresh"},
	    {"a", "re-authorize"},
	    {"d", "remove"},
	    {"Enter", "show"},
	    {"/", "filter"},
	    {"C", "check all shown"},
	    {"R", "refresh all due"},
	    {"Esc", "back"},
	    {"F5 F6 F7 F8", "check, refresh, re-authorize, remove"},
	    {"Delete", "remove"},
	    {"Up/Down", "choose a record"},
	    {NULL, NULL}};
	static const struct key_help k_filter[] = {
	    {"type", "filter"},
	    {"Enter", "done"},
	    {"Esc", "clear"},
	    {"F5 F6 F7 F8", "check, refresh, re-authorize, remove"},
	    {"Up/Down", "choose a record"},
	    {NULL, NULL}};
	static const struct key_help k_show[] = {{FIELD_REVEAL_KEY_NAME, "show/hide secrets"},
	                                         {"Up/Down", "scroll"},
	                                         {"Esc", "back"},
	                                         {NULL, NULL}};
	static const struct key_help k_confirm[] = {{"y", "remove"}, {"n", "keep"}, {NULL, NULL}};

	(void)s;
	if (S->mode == SYS_SHOW)
		return k_show;
	if (S->mode == SYS_CONFIRM)
		return k_confirm;
	return S->lv && listview_filtering(S->lv) ? k_filter : k_list;
}

static void systems_draw(struct screen *s)
{
	struct wiz *w = wiz_state();
	struct area body;
	char line[512];

	if (S->store_gen != w->store_gen)
		build_list();
	if (S->mode == SYS_SHOW) {
		snprintf(line, sizeof(line), "Record %s%s", S->current,
		         S->reveal ? " (secrets shown)" : "");
		body = screen_frame(line, systems_keys(s));
		if (S->shown) {
			const char *from = S->shown;
			int lines = 1;
			for (const char *p = S->shown; (p = strchr(p, '\n')); p++)
				lines++;
			/* The last page stays in view. */
			if (S->scroll > lines - body.rows)
				S->scroll = lines - body.rows > 0 ? lines - body.rows : 0;
			for (int i = 0; i < S->scroll && strchr(from, '\n'); i++)
				from = strchr(from, '\n') + 1;
			draw_wrapped((struct area){body.y, 2, body.rows, body.cols - 4}, A_NORMAL,
			             from);
		}
		return;
	}
	body = screen_frame("Enrolled systems (most urgent first)", systems_keys(s));
	if (S->mode == SYS_CONFIRM) {
		snprintf(line, sizeof(line),
		         "Remove %s? Its credentials are deleted from the store; the customer's "
		         "authorization at the vendor stays until they revoke it.",
		         S->current);
		draw_wrapped((struct area){body.y, 2, 2, body.cols - 4}, term_attr(TERM_ERROR),
		             line);
	} else if (S->note[0]) {
		draw_text(body.y, 2, body.cols - 4, A_BOLD, S->note);
	} else if (S->team && !S->cursor.done) {
		if (S->counted)
			snprintf(
			    line, sizeof(line),
			    "%zu records%s, %zu read. C checks all shown, R refreshes all due.",
			    S->total, S->cursor.match[0] ? " match" : "", S->n_rows);
		else
			snprintf(line, sizeof(line),
			         "The first %zu records. C checks all shown, R refreshes all due.",
			         S->n_rows);
		draw_text(body.y, 2, body.cols - 4, A_NORMAL, line);
	} else {
		snprintf(line, sizeof(line),
		         "%zu record%s. C checks all shown, R refreshes all due.", S->n_rows,
		         S->n_rows == 1 ? "" : "s");
		draw_text(body.y, 2, body.cols - 4, A_NORMAL, line);
	}
	if (S->lv)
		listview_draw(S->lv, (struct area){body.y + 2, 1, body.rows - 2, body.cols - 2});
	report_drawn();
}

static int systems_key(struct screen *s, const struct keypress *k)
{
	struct wiz *w = wiz_state();
	const char *id;
	enum action action;
	int r;

	(void)s;
	if (S->mode == SYS_SHOW) {
		if (keypress_is(k, FIELD_REVEAL_KEY)) {
			S->reveal = !S->reveal;
			load_shown();
			return SCREEN_REDRAW;
		}
		if (k->kind == KP_FUNC && (k->code == KEY_DOWN || k->code == KEY_NPAGE)) {
			S->scroll += k->code == KEY_DOWN ? 1 : 10;
			return SCREEN_REDRAW;
		}
		if (k->kind == KP_FUNC && (k->code == KEY_UP || k->code == KEY_PPAGE)) {
			S->scroll -= k->code == KEY_UP ? 1 : 10;
			if (S->scroll < 0)
				S->scroll = 0;
			return SCREEN_REDRAW;
		}
		if (keypress_is_escape(k) || keypress_is(k, 'q')) {
			S->mode = SYS_LIST;
			S->reveal = false;
			clear_shown();
			return SCREEN_REDRAW;
		}
		return SCREEN_IGNORED; /* ? is help */
	}
	if (S->mode == SYS_CONFIRM) {
		if (keypress_is(k, 'y')) {
			if (enr_store_remove(w->store, S->current) < 0)
				snprintf(S->note, sizeof(S->note), "%s", enr_error_last());
			else
				snprintf(S->note, sizeof(S->note), "Removed %s.", S->current);
			w->store_gen++;
		}
		if (keypress_is(k, 'y') || keypress_is(k, 'n') || keypress_is_escape(k)) {
			S->mode = SYS_LIST;
			return SCREEN_REDRAW;
		}
		return SCREEN_IGNORED; /* ? is help */
	}
	/* A key that is not more of the filter acts on the list of the filter typed so far. */
	if (S->filter_timer && (k->kind != KP_CHAR || !listview_filtering(S->lv)))
		apply_filter();
	/* While the filter is typed, letters are text; the F-keys still act. */
	action = action_of(k, S->lv && listview_filtering(S->lv));
	if (action == ACT_CHECK_ALL || action == ACT_REFRESH_DUE) {
		start_bulk(action == ACT_CHECK_ALL ? ENR_JOB_CHECK : ENR_JOB_REFRESH);
		return SCREEN_REDRAW;
	}
	id = selected_id();
	if (!id)
		action = ACT_NONE;
	switch (action) {
	case ACT_CHECK:
		start_job(ENR_JOB_CHECK);
		return SCREEN_REDRAW;
	case ACT_REFRESH:
		start_job(ENR_JOB_REFRESH);
		return SCREEN_REDRAW;
	case ACT_REAUTH:
		free(S->current);
		S->current = strdup(id);
		w->reauth_id = S->current;
		screen_push(&wiz_session_screen);
		return SCREEN_HANDLED;
	case ACT_REMOVE:
		free(S->current);
		S->current = strdup(id);
		S->mode = S->current ? SYS_CONFIRM : SYS_LIST;
		return SCREEN_REDRAW;
	default:
		break;
	}
	if (k->kind == KP_FUNC && k->code == KEY_END)
		read_rest();
	r = S->lv ? listview_handle_key(S->lv, k) : SCREEN_IGNORED;
	read_ahead();
	filter_changed();
	if (r)
		return r;
	if (keypress_is_enter(k) && id) {
		free(S->current);
		S->current = strdup(id);
		S->reveal = false;
		S->scroll = 0;
		if (S->current) {
			S->mode = SYS_SHOW;
			load_shown();
		}
		return SCREEN_REDRAW;
	}
	return keypress_is_escape(k) ? SCREEN_BACK : SCREEN_IGNORED;
}

struct screen wiz_systems_screen = {
    .name = "systems", .draw = systems_draw, .handle_key = systems_key, .keys = systems_keys};

void wiz_systems_open(void)
{
	struct wiz *w = wiz_state();

	if (!S && !(S = calloc(1, sizeof(*S))))
		return;
	S->mode = SYS_LIST;
	S->note[0] = '\0';
	S->opened = now_ms();
	w->store_gen++; /* build the list anew */
	screen_push(&wiz_systems_screen);
}

void wiz_systems_free(void)
{
	if (!S)
		return;
	multi_unwatch();
	enr_job_cancel(S->job);
	enr_bulk_free(S->bulk);
	enr_http_multi_free(S->multi);
	free_rows();
	clear_shown();
	free(S->current);
	free(S);
	S = NULL;
}
