#!/bin/sh
# Leaving: ^C quits at once from every fixture screen (no confirmation), and
# SIGTERM and fatal signals restore the terminal too; each time the same pane
# is checked afterwards (stty -a, cursor, keypad, bracketed paste, echo).
set -u
. "$(dirname "$0")/lib.sh"
plan 41

SHORT="https://relay.example.com/s/K7Q2MX9P4TZA"

start 80 24 -- qr "$SHORT"
keys C-c
expect_exit "^C on the QR screen" 130

start 80 24 -- form
keys_text "half-typed-secret"
wait_screen "*****************" >/dev/null
keys C-c
expect_exit "^C on the form" 130
[ ! -e "$RUN/out" ]
check $? "^C on the form: nothing written"

start 80 24 -- list 3000
keys_text "household"
wait_screen "Filter: household" >/dev/null
keys C-c
expect_exit "^C on the list" 130

start 80 24 TERM=vt100 -- list 10
keys C-c
expect_exit "^C on a monochrome terminal without alternate screen" 130

start 30 15 -- qr "$SHORT"
wait_screen "Terminal too small" >/dev/null
keys C-c
expect_exit "^C while the terminal is too small" 130

start 80 24 -- qr "$SHORT"
kill -TERM "$(fixture_pid)"
expect_exit "SIGTERM" 143

start 80 24 -- form
kill -SEGV "$(fixture_pid)"
expect_exit "SIGSEGV (re-raised: killed by it)" 139

start 80 24 -- list 10
kill -ABRT "$(fixture_pid)"
expect_exit "SIGABRT (re-raised)" 134

finish
