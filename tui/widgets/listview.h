#ifndef DERENROLL_TUI_LISTVIEW_H
#define DERENROLL_TUI_LISTVIEW_H

/*
 * A filterable list. Rows have a label, and a reason when they are disabled
 * (shown beside the label; a disabled row can be selected, so that its reason
 * can be read, but the caller should not act on it). Up/Down, PgUp/PgDn,
 * Home/End select; typing filters (case-insensitive substring of the label;
 * ? is left to the screen), Backspace and ^U edit the filter, Esc clears it
 * (and is left to the screen when it is empty). With filter-by-key, filtering
 * is a mode so that letters can be the screen's actions: / starts it, Enter
 * ends it (the filter stays), Esc ends it and clears the filter. Drawing and moving cost what is
 * visible, not the row count; narrowing the filter only searches the rows still shown.
 */

#include <stdbool.h>
#include <stddef.h>

#include "screen.h"

#define LISTVIEW_NONE ((size_t)-1)

struct listview;

int listview_new(struct listview **out);
void listview_free(struct listview *lv);

/* Appends a row (strings copied); `disabled_reason` NULL means enabled.
 * Returns 0 or ENR_E_NOMEM. */
int listview_add(struct listview *lv, const char *label, const char *disabled_reason, void *data);

/* Rows in the list, and rows the filter shows. */
size_t listview_count(const struct listview *lv);
size_t listview_shown(const struct listview *lv);

/* Returns SCREEN_REDRAW when it used the key, else SCREEN_IGNORED. */
int listview_handle_key(struct listview *lv, const struct keypress *k);

/* Draws the filter line on the area's first row, the rows below. */
void listview_draw(struct listview *lv, struct area a);

/* The selected row's index (in the order added), or LISTVIEW_NONE when the
 * filter shows nothing. */
size_t listview_selected(const struct listview *lv);

/* Selects row `index` if the filter shows it; returns whether it did. */
bool listview_select(struct listview *lv, size_t index);

const char *listview_label(const struct listview *lv, size_t index);
const char *listview_disabled_reason(const struct listview *lv, size_t index);
void *listview_data(const struct listview *lv, size_t index);

/* The index (in the order added) of the row shown at `pos` (0 to
 * listview_shown() - 1), or LISTVIEW_NONE. */
size_t listview_shown_at(const struct listview *lv, size_t pos);

/* Sets the filter (UTF-8; rows added later are filtered too). */
void listview_set_filter(struct listview *lv, const char *text);

/* Filtering as a mode (/ starts it), so that letters reach the screen. */
void listview_set_filter_by_key(struct listview *lv, bool on);

/* Column titles drawn under the filter line, over the labels (NULL: none).
 * Returns 0 or ENR_E_NOMEM. */
int listview_set_header(struct listview *lv, const char *text);

/* Marks: rows drawn with a box, Tab (and Space while no filter is typed)
 * marks or unmarks the selected row and selects the next, so that several
 * can be chosen at once. */
void listview_set_marks(struct listview *lv, bool on);
bool listview_marked(const struct listview *lv, size_t index);
size_t listview_mark_count(const struct listview *lv);

/* Whether typing goes to the filter now (always, without filter-by-key). */
bool listview_filtering(const struct listview *lv);

/* The filter as typed (UTF-8). */
const char *listview_filter(const struct listview *lv);

#endif
