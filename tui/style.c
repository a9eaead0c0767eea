/* Colour and marks for the sub-commands' results; plain text off a terminal. */
#include <langinfo.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "style.h"

static bool locale_is_utf8(void)
{
	const char *codeset = nl_langinfo(CODESET);

	return codeset && (strcasecmp(codeset, "UTF-8") == 0 || strcasecmp(codeset, "utf8") == 0);
}

void style_init(struct style *s, FILE *out)
{
	const char *no_color = getenv("NO_COLOR"), *term = getenv("TERM");
	bool tty = isatty(fileno(out));

	/* https://no-color.org: set and not empty means no colour. */
	s->color = tty && !(no_color && no_color[0]) && term && term[0] && strcmp(term, "dumb");
	s->marks = tty && locale_is_utf8();
}

void style_word(const struct style *s, FILE *out, enum style_tone tone, const char *word, int width)
{
	static const char *const colors[] = {"", "\033[32m", "\033[33m", "\033[1;31m"};
	static const char *const marks[] = {" ", "\u2713", "!", "\u2717"};
	int len = (int)strlen(word);

	if (s->marks) {
		fprintf(out, "%s ", marks[tone]);
		width -= 2;
	}
	if (s->color && tone != STYLE_PLAIN)
		fprintf(out, "%s%s\033[0m", colors[tone], word);
	else
		fputs(word, out);
	if (len < width)
		fprintf(out, "%*s", width - len, "");
}
