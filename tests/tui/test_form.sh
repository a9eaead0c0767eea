#!/bin/sh
# The form: a masked field that takes typed and (bracketed) pasted text,
# edits it, shows it only when asked, trims it, and reports errors inline.
set -u
. "$(dirname "$0")/lib.sh"
plan 29

SECRET="s3cr3t-Key-123"

# --- typed, masked, revealed, hidden again ---
start 80 24 -- form
wait_screen "API key (hidden: ^R toggles)" >/dev/null
check $? "the field is drawn, masked" "$SCREEN"
expect_in "key-help line names Enter, ^R, Esc, ^C" "Enter save  ^R show/hide  Esc quit  ^C quit" "$SCREEN"
expect_in "help line says where the value comes from" "the vendor's portal" "$SCREEN"
keys_text "$SECRET"
wait_screen "**************" >/dev/null
check $? "typed: one '*' a character" "$SCREEN"
expect_not_in "typed: the secret is not on screen" "s3cr3t" "$SCREEN"
keys C-r
wait_screen "$SECRET" >/dev/null
check $? "^R shows it" "$SCREEN"
expect_in "^R: the label says so" "API key (shown: ^R toggles)" "$SCREEN"
keys C-r
wait_gone "$SECRET" >/dev/null
check $? "^R again hides it" "$SCREEN"
keys Enter
expect_exit "Enter saves" 0
expect_out "the typed value is written" "$SECRET"

# --- empty and blank: inline error, cleared by an edit ---
start 80 24 -- form
keys Enter
wait_screen "Enter the API key: it cannot be empty" >/dev/null
check $? "empty: inline error" "$SCREEN"
keys_text "   "
wait_gone "cannot be empty" >/dev/null
check $? "an edit clears the error" "$SCREEN"
keys Enter
wait_screen "cannot be empty" >/dev/null
check $? "blank (spaces only): the same error" "$SCREEN"
[ ! -e "$RUN/out" ]
check $? "nothing written for a blank value"

# --- bracketed paste: first non-blank line, trimmed on read ---
T set-buffer -b secret "$(printf '  \n\t  pasted-SECRET-value  \nsecond line')"
T paste-buffer -p -b secret -t t
wait_screen "**********************" >/dev/null
check $? "pasted: masked (the first line with text, after the 3 typed spaces)" "$SCREEN"
expect_not_in "pasted: the secret is not on screen" "pasted-SECRET" "$SCREEN"
expect_not_in "pasted: the second line is not taken" "second" "$SCREEN"
keys C-r
wait_screen "pasted-SECRET-value" >/dev/null
check $? "pasted: ^R shows it" "$SCREEN"
keys Enter
expect_out "pasted: the value arrives trimmed" "pasted-SECRET-value"

# --- editing keys, wide characters ---
start 80 24 -- form
keys_text "abcdef"
keys Left Left BSpace Home
keys_text "X"
keys End
keys_text "Y"
keys Home Right DC
keys C-r
wait_screen "XbcefY" >/dev/null
check $? "Left, Backspace, Home, End, Delete edit where the cursor is" "$SCREEN"
keys C-u
wait_gone "XbcefY" >/dev/null
expect_in "^U erases from the cursor to the start" " bcefY " "$SCREEN"
keys End C-u
wait_gone "bcefY" >/dev/null
check $? "^U at the end erases everything" "$SCREEN"
keys_text "ключ 密钥"
wait_screen "ключ 密钥" >/dev/null
check $? "wide and non-Latin characters are typed and shown" "$SCREEN"
keys Enter
expect_out "they arrive as UTF-8" "ключ 密钥"

# --- Esc: nothing written ---
start 80 24 -- form
keys_text "unsaved"
keys Escape
wait_screen "FIXTURE EXITED" >/dev/null
[ ! -e "$RUN/out" ]
check $? "Esc quits without writing"

finish
