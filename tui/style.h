/* How the sub-commands mark results on a terminal: colour and ✓/✗. */
#ifndef DERENROLL_TUI_STYLE_H
#define DERENROLL_TUI_STYLE_H

#include <stdbool.h>
#include <stdio.h>

enum style_tone {
	STYLE_PLAIN,
	STYLE_GOOD, /* ok: green, ✓ */
	STYLE_WARN, /* expiring, unknown, temporary: yellow, ! */
	STYLE_BAD,  /* a person is needed, or the setup is wrong: red, ✗ */
};

struct style {
	bool color; /* ANSI colours */
	bool marks; /* ✓ ✗ ! before the status (a UTF-8 locale) */
};

/* For `out` (stdout): colour on a terminal unless NO_COLOR is set and not
 * empty or TERM is dumb; marks on a terminal in a UTF-8 locale. Pipes and
 * files get plain text. */
void style_init(struct style *s, FILE *out);

/* Prints `word` padded to `width` columns, marked and coloured by `tone`. */
void style_word(const struct style *s, FILE *out, enum style_tone tone, const char *word,
                int width);

#endif
