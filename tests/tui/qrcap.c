/*
 * qrcap: renders a `tmux capture-pane -p -e` capture as a PGM image, the way a
 * terminal with an 8x16 font would show it, so that zbarimg can read a QR code
 * from it. Usage: qrcap [-t dark|light] < capture > image.pgm
 *
 * The theme is the terminal's default colours (dark: light text on black, the
 * common one; light: black text on white). SGR colours 30-37/90-97, 38;5;n
 * (and 40-47, 100-107, 48;5;n), 39/49, reverse (7/27) and reset are followed;
 * each cell is a space, a half block (U+2580 upper, U+2584 lower) or a full
 * block (U+2588); any other character is drawn as its background.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CELL_W     8
#define CELL_H     16
#define MAX_COLS   512
#define MAX_ROWS   256
#define BORDER     4 /* cells of the theme's background around the picture */
#define DEFAULT_FG -1
#define DEFAULT_BG -2

enum glyph { BLANK, UPPER, LOWER, FULL };

struct cell {
	enum glyph glyph;
	bool ink_light, paper_light;
};

static struct cell screen[MAX_ROWS][MAX_COLS];
static int n_rows, n_cols;
static bool dark_theme = true;

/* Whether colour `c` (0-255, or a default) is light. */
static bool light(int c)
{
	if (c == DEFAULT_FG)
		return dark_theme;
	if (c == DEFAULT_BG)
		return !dark_theme;
	if (c < 16) {
		static const bool basic[16] = {0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1};
		return basic[c];
	}
	if (c < 232) {
		int r = (c - 16) / 36, g = (c - 16) / 6 % 6, b = (c - 16) % 6;
		return 299 * r + 587 * g + 114 * b >= 2500; /* luma over half of 5 */
	}
	return c >= 244;
}

struct sgr {
	int fg, bg;
	bool reverse;
};

static void apply_sgr(struct sgr *st, const char *params)
{
	int p[32], n = 0;
	const char *s = params;

	while (n < 32) {
		char *end;
		p[n++] = (int)strtol(s, &end, 10);
		if (*end != ';')
			break;
		s = end + 1;
	}
	for (int i = 0; i < n; i++) {
		int v = p[i];
		if (v == 0) {
			*st = (struct sgr){DEFAULT_FG, DEFAULT_BG, false};
		} else if (v == 7) {
			st->reverse = true;
		} else if (v == 27) {
			st->reverse = false;
		} else if (v >= 30 && v <= 37) {
			st->fg = v - 30;
		} else if (v >= 90 && v <= 97) {
			st->fg = v - 90 + 8;
		} else if (v == 39) {
			st->fg = DEFAULT_FG;
		} else if (v >= 40 && v <= 47) {
			st->bg = v - 40;
		} else if (v >= 100 && v <= 107) {
			st->bg = v - 100 + 8;
		} else if (v == 49) {
			st->bg = DEFAULT_BG;
		} else if ((v == 38 || v == 48) && i + 2 < n && p[i + 1] == 5) {
			*(v == 38 ? &st->fg : &st->bg) = p[i + 2];
			i += 2;
		} else if ((v == 38 || v == 48) && i + 4 < n && p[i + 1] == 2) {
			int luma = 299 * p[i + 2] + 587 * p[i + 3] + 114 * p[i + 4];
			*(v == 38 ? &st->fg : &st->bg) = luma >= 128000 ? 15 : 0;
			i += 4;
		}
	}
}

static void put(int row, int col, enum glyph g, const struct sgr *st)
{
	int fg = st->reverse ? st->bg : st->fg, bg = st->reverse ? st->fg : st->bg;

	if (row >= MAX_ROWS || col >= MAX_COLS)
		return;
	screen[row][col] = (struct cell){g, light(fg), light(bg)};
	if (col + 1 > n_cols)
		n_cols = col + 1;
}

static void parse(FILE *in)
{
	struct sgr st = {DEFAULT_FG, DEFAULT_BG, false};
	int row = 0, col = 0, c;

	while ((c = fgetc(in)) != EOF) {
		if (c == '\n') {
			row++;
			col = 0;
		} else if (c == 0x1b) {
			char params[128];
			size_t n = 0;
			int final;
			if (fgetc(in) != '[')
				continue;
			while ((final = fgetc(in)) != EOF && (final < 0x40 || final > 0x7e))
				if (n + 1 < sizeof(params))
					params[n++] = (char) final;
			params[n] = '\0';
			if (final == 'm')
				apply_sgr(&st, params);
		} else if (c == 0xe2) {
			/* U+2580..U+259F are E2 96 80..9F. */
			int b1 = fgetc(in), b2 = fgetc(in);
			enum glyph g = BLANK;
			if (b1 == 0x96 && b2 == 0x80)
				g = UPPER;
			else if (b1 == 0x96 && b2 == 0x84)
				g = LOWER;
			else if (b1 == 0x96 && b2 == 0x88)
				g = FULL;
			put(row, col++, g, &st);
		} else if ((c & 0xc0) != 0x80) {
			/* One cell for any other character (continuation bytes skipped). */
			put(row, col++, BLANK, &st);
		}
	}
	n_rows = col > 0 ? row + 1 : row;
	if (n_rows > MAX_ROWS)
		n_rows = MAX_ROWS;
}

/* Cells never written (trimmed trailing blanks) are the theme's background. */
static bool pixel_light(int row, int col, bool top)
{
	const struct cell *c;

	if (row < 0 || col < 0 || row >= n_rows || col >= n_cols)
		return !dark_theme;
	c = &screen[row][col];
	switch (c->glyph) {
	case FULL:
		return c->ink_light;
	case UPPER:
		return top ? c->ink_light : c->paper_light;
	case LOWER:
		return top ? c->paper_light : c->ink_light;
	default:
		return c->paper_light;
	}
}

int main(int argc, char **argv)
{
	int width, height;

	if (argc == 3 && strcmp(argv[1], "-t") == 0 && strcmp(argv[2], "light") == 0)
		dark_theme = false;
	else if (!(argc == 1 ||
	           (argc == 3 && strcmp(argv[1], "-t") == 0 && strcmp(argv[2], "dark") == 0))) {
		fprintf(stderr, "usage: qrcap [-t dark|light] < capture > image.pgm\n");
		return 2;
	}
	/* Unwritten cells: the theme's default background. */
	for (int r = 0; r < MAX_ROWS; r++)
		for (int c = 0; c < MAX_COLS; c++)
			screen[r][c] = (struct cell){BLANK, dark_theme, !dark_theme};
	parse(stdin);
	if (n_rows == 0 || n_cols == 0) {
		fprintf(stderr, "qrcap: empty capture\n");
		return 1;
	}
	width = (n_cols + 2 * BORDER) * CELL_W;
	height = (n_rows + 2 * BORDER) * CELL_H;
	printf("P5\n%d %d\n255\n", width, height);
	for (int y = 0; y < height; y++) {
		int row = y / CELL_H - BORDER;
		bool top = y % CELL_H < CELL_H / 2;
		for (int x = 0; x < width; x++)
			putchar(pixel_light(row, x / CELL_W - BORDER, top) ? 255 : 0);
	}
	return 0;
}
