#!/bin/sh
# Keys a laptop has, in the wizard on the demo: escape sequences the terminal
# type does not know (TERM=vt100) are never typed into a field; every action
# of the enrolled systems screen has a letter; ? opens the help of every
# screen; nothing the customer approved is lost by one Esc.
# Usage: test_keys.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
plan 9

. "$(dirname "$0")/wizlib.sh"

# raw HEX...: bytes sent to the pane as they are (not as tmux's key names).
raw() { T send-keys -t t -H "$@"; }

# field_line: the customer field's input line (the line under its label).
field_line() { printf '%s\n' "$SCREEN" | sed -n '/Customer reference/{n;p;q}'; }

# --- TERM=vt100: F5 arrives as ESC [ 1 5 ~, which vt100's terminfo does not know ---
wiz TERM=vt100 --
wait_screen "Customer reference" >/dev/null
check $? "vt100: the start screen" "$SCREEN"
keys_text "Bob"
raw 1b 5b 31 35 7e
keys_text "by"
wait_screen "Bobby" >/dev/null
check $? "vt100: F5's raw escape types nothing into the field" "$SCREEN"
expect_not_in "vt100: no [15~ in the field" "[15~" "$(field_line)"
# Sequences no terminal key has, with parameters and modifiers: swallowed whole.
raw 1b 5b 39 39 3b 35 7e 1b 5b 31 3b 35 51 1b 4f 58
keys_text "!"
wait_screen "Bobby!" >/dev/null
check $? "vt100: unknown CSI and SS3 sequences are swallowed whole" "$(field_line)"
# A lone Esc still is Esc (the start screen quits on it).
keys Escape
expect_exit "vt100: a lone Esc is still Esc" 0

finish
