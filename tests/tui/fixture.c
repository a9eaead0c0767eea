/*
 * Exercises the TUI framework in a real terminal before the wizard exists:
 *   fixture qr TEXT   the QR code of TEXT with a caption (or the link as text)
 *   fixture form      a masked field; Enter writes the trimmed value
 *   fixture list N    a filterable list of N rows; Enter writes the chosen label
 *   fixture text FILE the text in FILE (a vendor's, say) as a line, wrapped and
 *                     as a list row: its control characters are shown, not obeyed
 * Results go to the file $FIXTURE_OUT. After the first frame is on the
 * terminal, "PID SECONDS.NANOSECONDS" (CLOCK_REALTIME) goes to $FIXTURE_READY.
 * Esc quits everywhere, q on the QR screen (elsewhere q is text), ^C at once.
 */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "derenroll/error.h"
#include "derenroll/qr.h"
#include "ready.h"
#include "screen.h"
#include "widgets/field.h"
#include "widgets/listview.h"
#include "widgets/qrview.h"

/* A caption beside the code needs at least this many columns. */
#define CAPTION_MIN_COLS 24

static int write_out(const char *text)
{
	const char *path = getenv("FIXTURE_OUT");
	FILE *f;

	if (!path)
		return 0;
	f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "%s\n", text);
	return fclose(f);
}

/* --- qr --- */

struct qr_state {
	const char *text;
	struct enr_qr *qr;
};

static void qr_draw(struct screen *s)
{
	static const struct key_help keys[] = {{"q", "quit"}, {"Esc", "quit"}, {NULL, NULL}};
	struct qr_state *st = s->state;
	struct area body = screen_frame("Fixture: QR code", keys);
	char msg[128], caption[160];
	int cols, rows;

	qrview_size(st->qr, &cols, &rows);
	if (!qrview_draw(st->qr, body, msg, sizeof(msg))) {
		struct area text = {body.y + 2, body.x + 1, body.rows - 2, body.cols - 2};
		draw_text(body.y, body.x + 1, body.cols - 2, term_attr(TERM_ERROR), msg);
		text.y += draw_wrapped(text, A_NORMAL, "Open this link instead:") + 1;
		draw_wrapped(text, A_BOLD, st->text);
		return;
	}
	snprintf(caption, sizeof(caption), "Scan with the phone's camera. QR version %d, level %c.",
	         enr_qr_version(st->qr), enr_qr_level(st->qr));
	if (body.cols - cols - 2 >= CAPTION_MIN_COLS) {
		struct area beside = {body.y + 1, body.x + cols + 2, rows - 1,
		                      body.cols - cols - 2};
		beside.y += draw_wrapped(beside, A_BOLD, caption) + 1;
		draw_wrapped(beside, A_NORMAL, st->text);
	} else if (body.rows > rows) {
		draw_text(body.y + rows, body.x + 1, body.cols - 2, A_BOLD, caption);
	}
}

static int qr_key(struct screen *s, const struct keypress *k)
{
	(void)s;
	if (keypress_is(k, 'q') || keypress_is_escape(k))
		return SCREEN_QUIT;
	return SCREEN_IGNORED;
}

/* --- form --- */

static void form_draw(struct screen *s)
{
	static const struct key_help keys[] = {
	    {"Enter", "save"}, {FIELD_REVEAL_KEY_NAME, "show/hide"}, {"Esc", "quit"}, {NULL, NULL}};
	struct field *f = s->state;
	struct area body = screen_frame("Fixture: form", keys);
	int cols = body.cols - 4 < 72 ? body.cols - 4 : 72;

	draw_text(body.y + 1, 2, body.cols - 4, A_NORMAL,
	          "Paste or type the API key from the vendor's portal.");
	field_draw(f, body.y + 3, 2, cols, true);
}

static int form_key(struct screen *s, const struct keypress *k)
{
	struct field *f = s->state;
	char *value = NULL;
	int rc;

	if (keypress_is_escape(k))
		return SCREEN_QUIT;
	if (!keypress_is_enter(k))
		return field_handle_key(f, k);
	if (field_is_blank(f)) {
		field_set_error(f, "Enter the API key: it cannot be empty");
		return SCREEN_REDRAW;
	}
	rc = field_value(&value, f);
	if (rc < 0) {
		field_set_error(f, "%s", enr_error_last());
		return SCREEN_REDRAW;
	}
	rc = write_out(value);
	field_free_value(value);
	if (rc < 0) {
		field_set_error(f, "cannot write $FIXTURE_OUT");
		return SCREEN_REDRAW;
	}
	return SCREEN_NEXT;
}

/* --- list --- */

struct list_state {
	struct listview *lv;
	char note[320];
};

static void list_draw(struct screen *s)
{
	static const struct key_help keys[] = {
	    {"Enter", "choose"}, {"type", "filter"}, {"Esc", "clear/quit"}, {NULL, NULL}};
	struct list_state *st = s->state;
	struct area body = screen_frame("Fixture: list", keys);

	body.rows -= 1;
	listview_draw(st->lv, body);
	draw_text(body.y + body.rows, 1, body.cols - 2, term_attr(TERM_ERROR), st->note);
}

static int list_key(struct screen *s, const struct keypress *k)
{
	struct list_state *st = s->state;
	size_t sel;
	int flags;

	st->note[0] = '\0';
	if (!keypress_is_enter(k)) {
		flags = listview_handle_key(st->lv, k);
		if (!flags && keypress_is_escape(k))
			return SCREEN_QUIT;
		return flags | SCREEN_REDRAW;
	}
	sel = listview_selected(st->lv);
	if (sel == LISTVIEW_NONE)
		return SCREEN_REDRAW;
	if (listview_disabled_reason(st->lv, sel)) {
		snprintf(st->note, sizeof(st->note), "Cannot choose it: %s",
		         listview_disabled_reason(st->lv, sel));
		return SCREEN_REDRAW;
	}
	if (write_out(listview_label(st->lv, sel)) < 0) {
		snprintf(st->note, sizeof(st->note), "cannot write $FIXTURE_OUT");
		return SCREEN_REDRAW;
	}
	return SCREEN_NEXT;
}

static int fill_list(struct listview *lv, size_t n)
{
	static const char *const vendors[] = {"Tesla", "Solis", "SMA", "SolarEdge", "Enphase"};
	static const char *const ids[] = {"tesla", "solis", "sma", "solaredge", "enphase"};
	static const char *const names[] = {"Smith", "Müller", "Øster", "García", "Nguyen"};

	for (size_t i = 0; i < n; i++) {
		char label[128], reason[128];
		const char *vendor = vendors[i % 5];
		snprintf(label, sizeof(label), "Row %05zu  %-9s  %s household %zu", i + 1, vendor,
		         names[(i / 5) % 5], i + 1);
		snprintf(reason, sizeof(reason), "not configured: set [vendor.%s] client_id",
		         ids[i % 5]);
		if (listview_add(lv, label, (i + 1) % 7 == 0 ? reason : NULL, NULL) < 0)
			return -1;
	}
	return 0;
}

/* --- text --- */

struct text_state {
	char *text;
	struct listview *lv;
};

static void text_draw(struct screen *s)
{
	static const struct key_help keys[] = {{"Esc", "quit"}, {NULL, NULL}};
	struct text_state *st = s->state;
	struct area body = screen_frame("Fixture: text", keys);
	struct area wrapped = {body.y + 3, 1, 4, body.cols - 2};

	draw_text(body.y + 1, 1, body.cols - 2, A_NORMAL, st->text);
	draw_wrapped(wrapped, A_NORMAL, st->text);
	listview_draw(st->lv, (struct area){body.y + 8, 1, 4, body.cols - 2});
}

static int text_key(struct screen *s, const struct keypress *k)
{
	(void)s;
	return keypress_is_escape(k) ? SCREEN_QUIT : SCREEN_IGNORED;
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: fixture qr TEXT | fixture form | fixture list N | fixture text FILE\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct qr_state qr_state = {0};
	struct list_state list_state = {0};
	struct text_state text_state = {0};
	struct field field;
	struct screen screen = {0};
	int rc;

	setlocale(LC_ALL, "");
	field_init(&field, "API key", "Where it is: the vendor's portal, Settings > API access.",
	           true);
	if (argc == 3 && strcmp(argv[1], "qr") == 0) {
		qr_state.text = argv[2];
		if (enr_qr_encode(&qr_state.qr, argv[2]) < 0) {
			fprintf(stderr, "fixture: %s\n", enr_error_last());
			return 2;
		}
		screen = (struct screen){
		    .name = "qr", .draw = qr_draw, .handle_key = qr_key, .state = &qr_state};
	} else if (argc == 2 && strcmp(argv[1], "form") == 0) {
		screen = (struct screen){
		    .name = "form", .draw = form_draw, .handle_key = form_key, .state = &field};
	} else if (argc == 3 && strcmp(argv[1], "list") == 0) {
		if (listview_new(&list_state.lv) < 0 ||
		    fill_list(list_state.lv, strtoul(argv[2], NULL, 10)) < 0) {
			listview_free(list_state.lv);
			fprintf(stderr, "fixture: out of memory\n");
			return 2;
		}
		screen = (struct screen){.name = "list",
		                         .draw = list_draw,
		                         .handle_key = list_key,
		                         .state = &list_state};
	} else if (argc == 3 && strcmp(argv[1], "text") == 0) {
		FILE *f = fopen(argv[2], "r");
		size_t len = 0;
		if (!f || getdelim(&text_state.text, &len, '\0', f) < 0 ||
		    listview_new(&text_state.lv) < 0 ||
		    listview_add(text_state.lv, text_state.text, NULL, NULL) < 0) {
			fprintf(stderr, "fixture: cannot read %s\n", argv[2]);
			return 2;
		}
		fclose(f);
		screen = (struct screen){.name = "text",
		                         .draw = text_draw,
		                         .handle_key = text_key,
		                         .state = &text_state};
	} else {
		return usage();
	}
	rc = term_init();
	if (rc == 0) {
		ready_report_first_frame("FIXTURE_READY");
		rc = screen_run(&screen);
		term_done();
		loop_done();
	}
	if (rc < 0)
		fprintf(stderr, "fixture: %s\n", enr_error_last());
	enr_qr_free(qr_state.qr);
	listview_free(list_state.lv);
	listview_free(text_state.lv);
	free(text_state.text);
	field_done(&field);
	return rc < 0 ? 1 : rc;
}
