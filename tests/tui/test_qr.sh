#!/bin/sh
# The QR screen: the code at 80x24 decodes to the link whatever the terminal's
# theme; a long URL that does not fit says what is missing and shows the link
# as text; resizing redraws; NO_COLOR, a monochrome terminal and a non-UTF-8
# locale still give a code that decodes.
set -u
. "$(dirname "$0")/lib.sh"
plan 50

SHORT="https://relay.example.com/s/K7Q2MX9P4TZA"
LONG="https://auth.tesla.com/oauth2/v3/authorize?response_type=code&client_id=0123456789abcdef0123456789abcdef&redirect_uri=https%3A%2F%2Frelay.example.com%2Fcb&scope=openid%20offline_access%20energy_device_data%20energy_cmds&state=Vw3k9Qx1Zt7Lp2Hn8Rc4Yb6Md0Fa5Je&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&prompt_missing_scopes=true"

# Rows of the pane holding block characters: the code's height in cells.
code_rows() { printf '%s\n' "$SCREEN" | grep -c '[▀▄█]'; }

# --- the short link at 80x24 ---
start 80 24 -- qr "$SHORT"
wait_screen "Scan with the phone" >/dev/null
check $? "short link: the QR screen is drawn" "$SCREEN"
expect_in "title line" "Fixture: QR code" "$(printf '%s\n' "$SCREEN" | head -1)"
expect_in "key-help line names q and ^C" "q quit  Esc quit  ^C quit" "$(printf '%s\n' "$SCREEN" | tail -1)"
expect_in "caption names the level" "3, level M." "$SCREEN"
expect_decodes "80x24: decodes to the link (dark terminal theme)" "$SHORT" dark
expect_decodes "80x24: decodes to the link (light terminal theme)" "$SHORT" light
# 29 modules and the 4-module quiet zone: 37 columns, 19 rows; the code's
# 29 rows of modules span 15 rows of half blocks.
[ "$(code_rows)" -eq 15 ]
check $? "half blocks: two modules a cell (15 rows of blocks)" "$SCREEN"
# The swapped halves must not decode: the converter really reads each half.
T capture-pane -t t -p -e -N | sed 's/▀/X/g; s/▄/▀/g; s/X/▄/g' | "$QRCAP" >"$TMP/swapped.pgm"
zbarimg -q --raw "$TMP/swapped.pgm" >/dev/null 2>&1
[ $? -ne 0 ]
check $? "control: the code with its half blocks swapped does not decode"
# The code's cells are drawn black on white (bright white: 256 colours).
has_sgr 30 && has_sgr 107
check $? "colour: the QR pair is black on bright white"

# --- too small, then back ---
resize 70 20
wait_screen "The QR code does not fit: need 1 more row" >/dev/null
check $? "70x20: the screen says exactly what the code lacks (one row)" "$SCREEN"
expect_not_in "70x20: no partial code" "▀" "$SCREEN"
resize 39 24
wait_screen "Terminal too small: need at least 40x20" >/dev/null
check $? "39x24: below any screen's size, 'Terminal too small'" "$SCREEN"
resize 80 24
wait_screen "Scan with the phone" >/dev/null
expect_decodes "back at 80x24: redrawn and decodes" "$SHORT"
keys q
expect_exit "q quits the QR screen" 0

# --- the long URL at 80x24: does not fit, then a bigger window ---
start 80 24 -- qr "$LONG"
# 69 modules + 8 = 77 columns (fits 80) by 39 rows; 22 rows between the title
# and the key help: 17 missing.
wait_screen "The QR code does not fit: need 17 more rows" >/dev/null
check $? "370-char URL at 80x24: says 17 more rows are needed" "$SCREEN"
expect_not_in "370-char URL at 80x24: no partial code" "▀" "$SCREEN"
joined=$(printf '%s\n' "$SCREEN" | sed 's/^ *//; s/ *$//' | tr -d '\n')
expect_in "370-char URL at 80x24: the link is shown as text, whole" "$LONG" "$joined"
resize 60 24
wait_screen "need 17 more columns" >/dev/null
check $? "60x24: 17 more columns (and rows) needed" "$SCREEN"
resize 80 41
wait_screen "▄▄▄▄▄" >/dev/null
check $? "80x41: the big code appears" "$SCREEN"
expect_not_in "80x41: the message is gone" "does not fit" "$SCREEN"
expect_decodes "80x41: the 370-char URL decodes" "$LONG"
resize 100 30
wait_screen "does not fit: need 11 more rows" >/dev/null
check $? "100x30: back to the message, with the new count" "$SCREEN"
resize 70 41
wait_screen "does not fit: need 7 more columns" >/dev/null
check $? "70x41: 7 more columns needed" "$SCREEN"
keys Escape
expect_exit "Esc quits" 0

# --- NO_COLOR: the code stays black on white (derenroll(1)), whatever the theme ---
start 80 24 NO_COLOR=1 -- qr "$SHORT"
wait_screen "Scan with the phone" >/dev/null
expect_decodes "NO_COLOR=1: decodes (dark theme)" "$SHORT" dark
expect_decodes "NO_COLOR=1: decodes (light theme)" "$SHORT" light
has_sgr 30 && has_sgr 107
check $? "NO_COLOR=1: the code is still black on bright white"
keys q
wait_screen "FIXTURE EXITED" >/dev/null

# --- a monochrome terminal ---
start 80 24 TERM=vt100 -- qr "$SHORT"
wait_screen "Scan with the phone" >/dev/null
expect_decodes "TERM=vt100: decodes (reverse video)" "$SHORT" dark
keys q
expect_exit "TERM=vt100: q quits" 0

# --- a non-UTF-8 locale: two cells a module ---
start 80 24 LC_ALL=C LANG=C -- qr "$SHORT"
# 37 modules with the quiet zone: 74 columns by 37 rows; 22 rows: 15 missing.
wait_screen "The QR code does not fit: need 15 more rows" >/dev/null
check $? "LANG=C at 80x24: says 15 more rows are needed" "$SCREEN"
resize 80 40
wait_screen "Scan with the phone" >/dev/null
check $? "LANG=C at 80x40: the code is drawn" "$SCREEN"
expect_not_in "LANG=C: no half blocks" "▀" "$SCREEN"
expect_decodes "LANG=C: decodes (dark theme)" "$SHORT" dark
expect_decodes "LANG=C: decodes (light theme)" "$SHORT" light
has_sgr 30 && has_sgr 107
check $? "LANG=C: the code is in the QR colour pair"
keys q
wait_screen "FIXTURE EXITED" >/dev/null

start 80 40 LC_ALL=C LANG=C NO_COLOR=1 -- qr "$SHORT"
wait_screen "Scan with the phone" >/dev/null
expect_decodes "LANG=C NO_COLOR=1: decodes (dark theme)" "$SHORT" dark
expect_decodes "LANG=C NO_COLOR=1: decodes (light theme)" "$SHORT" light
keys q
wait_screen "FIXTURE EXITED" >/dev/null

# --- UTF-8 text is encoded as bytes ---
NAME="https://relay.example.com/s/Zoë-Müller"
start 80 24 -- qr "$NAME"
wait_screen "Scan with the phone" >/dev/null
expect_decodes "UTF-8 link decodes to the same bytes" "$NAME"
keys q
wait_screen "FIXTURE EXITED" >/dev/null

finish
