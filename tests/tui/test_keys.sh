#!/bin/sh
# Keys a laptop has, in the wizard on the demo: escape sequences the terminal
# type does not know (TERM=vt100) are never typed into a field; every action
# of the enrolled systems screen has a letter; ? opens the help of every
# screen; nothing the customer approved is lost by one Esc.
# Usage: test_keys.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
plan 118

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
# A terminal's OSC answer (ended by BEL, or by ESC \): swallowed too.
raw 1b 5d 31 31 3b 72 67 62 3a 30 2f 30 2f 30 07 1b 5d 32 3b 78 1b 5c
keys_text "?"
wait_screen "Bobby!?" >/dev/null
check $? "vt100: OSC strings are swallowed whole" "$(field_line)"
# A lone Esc still is Esc (the start screen quits on it).
keys Escape
expect_exit "vt100: a lone Esc is still Esc" 0

# help KEY-TEXT NAME [MORE...]: ? opens the help of this screen, listing
# KEY-TEXT (and each MORE); Esc closes it.
help() {
	keys_text "?"
	wait_screen "Keys of this screen" >/dev/null
	check $? "$2: ? opens the help" "$SCREEN"
	expect_in "$2: the help lists the screen's keys" "$1" "$SCREEN"
	_name=$2
	shift 2
	for _more in "$@"; do
		expect_in "$_name: the help lists '$_more'" "$_more" "$SCREEN"
	done
	keys Escape
	wait_gone "Keys of this screen" >/dev/null
	check $? "$_name: Esc closes the help" "$SCREEN"
}

# last_check CUSTOMER: the time of the record's last check ("" when none).
last_check() { record "$1" | sed -n 's/.*"last_check":{"at":"\([^"]*\)".*/\1/p'; }

# --- two records (company accounts: no customer to play), ? on every screen on the way ---
wiz --
wait_screen "Customer reference" >/dev/null
expect_in "start: ? help on the key line" "? help  ^C quit" "$(printf '%s\n' "$SCREEN" | tail -1)"
help "F2       enrolled systems" "start"
keys_text "Keys One"
keys Enter
keys_text "solaredge"
keys Enter
wait_screen "SolarEdge: how does the customer authorize?" >/dev/null
help "Enter    choose" "method"
keys Down Down Enter
wait_screen "sites found" >/dev/null
help "Space    mark" "sites"
keys Enter
wait_screen "Enter: enroll another" >/dev/null
help "Enter    enroll another" "saved"
keys Enter
wait_screen "Customer reference" >/dev/null
settle
# The customer is kept, the list has the focus: Tab, erase it, type the next.
keys Tab C-u
keys_text "Keys Two"
keys Enter
keys_text "solis"
keys Enter
wait_screen "Solis: how does the customer authorize?" >/dev/null
keys Down Down Enter
again

# --- the enrolled systems: a letter for every action ---
keys F2
wait_screen "2 of 2" >/dev/null
check $? "systems: both records listed" "$SCREEN"
settle
expect_in "systems: the letters on the key line" "c check  r refresh  a re-authorize  d remove" \
	"$(printf '%s\n' "$SCREEN" | tail -1)"
expect_in "systems: check all and refresh all due are told" "C checks all shown, R refreshes all due" "$SCREEN"
help "C            check all shown" "systems" "R            refresh all due" \
	"F5 F6 F7 F8  check, refresh, re-authorize, remove"
ONE=$(last_check "Keys One") TWO=$(last_check "Keys Two")
sleep 1.1 # the store's times are in whole seconds
keys_text "C"
wait_screen "Checked 2: 2 ok, 0 failed" >/dev/null
check $? "systems: C checks all shown" "$SCREEN"
[ -n "$(last_check "Keys One")" ] && [ "$(last_check "Keys One")" != "$ONE" ] &&
	[ -n "$(last_check "Keys Two")" ] && [ "$(last_check "Keys Two")" != "$TWO" ]
check $? "systems: C saved a check of each record" "$(record "Keys One") $(record "Keys Two")"
keys_text "R"
wait_screen "No system shown is due for a refresh in 7 days" >/dev/null
check $? "systems: R with nothing due says so" "$SCREEN"
# While the filter is typed, letters are text (solaredge has a, r and d in it).
keys_text "/solaredge"
wait_screen "1 of 2" >/dev/null
check $? "systems: / filters, its letters are text" "$SCREEN"
expect_not_in "systems: no action while filtering" "Remove " "$SCREEN"
# ^U clears what is typed, and filtering goes on (its letters still text).
keys C-u
keys_text "ard"
wait_screen "Filter: ard" >/dev/null
check $? "systems: ^U clears the filter, still filtering" "$SCREEN"
keys C-u
keys_text "solaredge"
wait_screen "1 of 2" >/dev/null
keys Enter
ONE=$(last_check "Keys One")
sleep 1.1
keys_text "c"
wait_screen "checked ok" >/dev/null
check $? "systems: c checks the selected record" "$SCREEN"
[ "$(last_check "Keys One")" != "$ONE" ] && [ -n "$(last_check "Keys One")" ]
check $? "systems: c saved the check" "$(record "Keys One")"
expect_in "systems: the filter stays after the check" "Filter: solaredge" "$SCREEN"
keys Enter
wait_screen "customer                 Keys One" >/dev/null
check $? "systems: Enter shows the record, a field a line as show prints it" "$SCREEN"
help "^R       show/hide secrets" "record shown"
keys Escape
wait_screen "Enrolled systems" >/dev/null
keys_text "d"
wait_screen "Remove " >/dev/null
check $? "systems: d asks to confirm the removal" "$SCREEN"
keys_text "n"
wait_gone "Remove " >/dev/null
[ -n "$(record "Keys One")" ]
check $? "systems: n keeps the record" "$(record "Keys One")"
keys_text "a"
wait_screen "Updated record" >/dev/null
check $? "systems: a re-authorizes" "$SCREEN"
keys Enter
wait_screen "Enrolled systems" >/dev/null
keys Escape
wait_screen "/ to filter" >/dev/null
check $? "systems: Esc clears the filter" "$SCREEN"
keys Escape
wait_screen "Customer reference" >/dev/null
check $? "systems: Esc again goes back to the start screen" "$SCREEN"
keys C-c
expect_exit "systems: ^C" 130

# --- TERM=vt100: F5 (ESC [ 1 5 ~ from tmux) still checks, as an alias of c ---
wiz TERM=vt100 --
wait_screen "Customer reference" >/dev/null
keys F2
wait_screen "2 of 2" >/dev/null
keys F5
wait_screen "checked ok" >/dev/null
check $? "vt100: F5 checks on the systems screen" "$SCREEN"
keys F1
wait_screen "Keys of this screen" >/dev/null
check $? "vt100: F1 (ESC O P) opens the help" "$SCREEN"
keys C-c
expect_exit "vt100: ^C" 130

# --- nothing approved is lost by one key: Esc on the QR code and on the sites ask first ---
wiz -- --customer "Keys QR" --vendor tesla
wait_screen "Tesla: the customer approves" >/dev/null
help "a        customer approves (demo)" "QR code"
keys Escape
wait_screen "Discard this authorization?" >/dev/null
check $? "QR code: Esc asks first" "$SCREEN"
expect_in "QR code: the question's keys" "y discard  n keep" "$(printf '%s\n' "$SCREEN" | tail -1)"
keys_text "n"
wait_gone "Discard this authorization?" >/dev/null
expect_in "QR code: n keeps it" "Tesla: the customer approves" "$SCREEN"
keys a
wait_screen "sites found" >/dev/null
check $? "QR code: after n the link still works" "$SCREEN"
keys Escape
wait_screen "Discard this authorization?" >/dev/null
check $? "sites: Esc after the customer approved asks first" "$SCREEN"
keys Escape
wait_gone "Discard this authorization?" >/dev/null
expect_in "sites: Esc on the question is no" "sites found" "$SCREEN"
keys Enter
wait_screen "Enter: enroll another" >/dev/null
expect_in "sites: the approval kept is saved" "Customer:  Keys QR" "$SCREEN"
keys q
expect_exit "QR code: q after saving" 0
[ -n "$(record "Keys QR")" ]
check $? "QR code: the record is in the store" "$(record "Keys QR")"

wiz -- --customer "Keys QR gone" --vendor tesla
wait_screen "Tesla: the customer approves" >/dev/null
keys Escape
wait_screen "Discard this authorization?" >/dev/null
keys_text "y"
wait_screen "Customer reference" >/dev/null
check $? "QR code: y discards, back to the start screen" "$SCREEN"
keys C-c
expect_exit "QR code: ^C after discarding" 130
[ -z "$(record "Keys QR gone")" ]
check $? "QR code: nothing saved for the discarded authorization" "$(record "Keys QR gone")"

# --- a site another record holds: asked before that record's customer is replaced ---
wiz --
wait_screen "Customer reference" >/dev/null
keys_text "Keys Three"
keys Enter
keys_text "solaredge"
keys Enter
wait_screen "SolarEdge: how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "(enrolled: Keys One)" >/dev/null
keys End Enter
wait_screen "Replace it?" >/dev/null
check $? "held site: asks before replacing" "$SCREEN"
expect_in "held site: names the other customer and this one" \
	'enrolled already, for "Keys One". Enrolling it here replaces that record'"'"'s customer reference with "Keys Three"' \
	"$(printf '%s\n' "$SCREEN" | sed 's/^ *//' | tr -s ' \n' '  ')"
keys_text "n"
wait_gone "Replace it?" >/dev/null
expect_in "held site: n goes back to the sites" "sites found" "$SCREEN"
[ -n "$(record "Keys One")" ] && [ -z "$(record "Keys Three")" ]
check $? "held site: n changes nothing in the store" "$(record "Keys One")"
keys Enter
wait_screen "Replace it?" >/dev/null
keys_text "y"
wait_screen "Updated record" >/dev/null
check $? "held site: y updates that record" "$SCREEN"
[ -z "$(record "Keys One")" ] && [ -n "$(record "Keys Three")" ]
check $? "held site: y replaced its customer reference" "$(record "Keys Three")"
keys q
expect_exit "held site: q" 0

# --- a re-authorization says whose: the record and its customer ---
ID=$(record "Keys QR" | sed -n 's/^{ *"id": *"\([^"]*\)".*/\1/p')
start 80 24 -- --demo --store "$STORE" reauth "$ID"
wait_screen "Tesla: the customer approves" >/dev/null
settle
expect_in "reauth: the title names the record and the customer" \
	"re-authorizing record $ID for \"Keys QR\"" "$(printf '%s\n' "$SCREEN" | head -1)"
expect_in "reauth: so does the text beside the code" "Tesla: re-authorizing record $ID" "$SCREEN"
LINK=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *Link: //p' | tr -d ' ')
expect_decodes "reauth: the QR code still decodes" "$LINK"
keys C-c
expect_exit "reauth: ^C" 130

# --- R refreshes what is due: a Tesla OAuth record, due within [ui] expiring_days = 365 ---
printf '[ui]\nexpiring_days = 365\n' >"$TMP/due.ini"
chmod 600 "$TMP/due.ini"
start 80 24 -- --demo --config "$TMP/due.ini" --store "$STORE" --customer "Keys Due" --vendor tesla --method oauth
wait_screen "Tesla: the customer approves" >/dev/null
keys a
again
# access_expires_at CUSTOMER
access_expires_at() { record "$1" | sed -n 's/.*"access_expires_at":"\([^"]*\)".*/\1/p'; }
BEFORE=$(access_expires_at "Keys Due")
sleep 1.1
keys F2
wait_screen "Enrolled systems" >/dev/null
keys_text "R"
wait_screen "Refreshed 1 of 1 due; 0 failed" >/dev/null
check $? "R: refreshes the one record due (and only it)" "$SCREEN"
[ -n "$BEFORE" ] && [ -n "$(access_expires_at "Keys Due")" ] && [ "$(access_expires_at "Keys Due")" != "$BEFORE" ]
check $? "R: its new access token is in the store" "before $BEFORE: $(record "Keys Due")"
keys C-c
expect_exit "R: ^C" 130

# --- the key form (the demo fills it in, so ? would be typed): F1 is help ---
wiz --
begin "Keys Form" solaredge
wait_screen "SolarEdge: how" >/dev/null
keys Down Enter
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
keys F1
wait_screen "Keys of this screen" >/dev/null
check $? "form: F1 opens the help in a field with text in it" "$SCREEN"
expect_in "form: the help lists the form's keys" "show/hide" "$SCREEN"
keys_text "q"
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
check $? "form: q closes the help" "$SCREEN"
keys C-c
expect_exit "form: ^C" 130

finish
