#!/bin/sh
# A vendor's text with escape sequences (a window title, clear screen, CR,
# BEL, a C1 CSI, bytes that are not UTF-8) drawn as a line, wrapped and as a
# list row: shown in its visible form ("\x1b"), never obeyed by the terminal.
set -u
. "$(dirname "$0")/lib.sh"
plan 11

printf 'Evil\033]0;pwned\007 \033[2J\rHome\007\302\233c \377end' >"$TMP/text"
start 80 24 -- text "$TMP/text"
wait_screen "Fixture: text" >/dev/null
check $? "the screen is drawn" "$SCREEN"
VISIBLE='Evil\x1b]0;pwned\x07 \x1b[2J\x0dHome\x07\u009bc �end'
expect_in "the line shows the escapes" "$VISIBLE" "$SCREEN"
[ "$(printf '%s\n' "$SCREEN" | grep -cF "$VISIBLE")" -ge 3 ]
check $? "so do the wrapped text and the list row" "$SCREEN"
_title=$(T display -p -t t '#{pane_title}')
[ "$_title" != "pwned" ]
check $? "the window title is not set by the text" "title: $_title"
expect_in "the frame is still there (no clear screen)" "Esc quit" "$SCREEN"
T capture-pane -t t -p -e -N >"$TMP/cap"
! grep -q "$(printf '\302\233')" "$TMP/cap"
check $? "no C1 control reaches the terminal" "$(od -c "$TMP/cap" | head)"
keys Escape
expect_exit "Esc quits" 0
