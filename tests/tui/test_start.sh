#!/bin/sh
# The wizard's start screen on the demo: the focused part (customer field or
# vendor list) is marked in the text and holds the terminal's cursor; Esc does
# what the key line says (clear the filter, back to the field, quit), on the
# method screen too; a typed filter and Enter pick the first match; "enroll
# another" keeps the customer (Tab changes it) and clears the filter.
# Usage: test_start.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
plan 72

. "$(dirname "$0")/wizlib.sh"

# expect_record NAME CUSTOMER VENDOR METHOD
expect_record() {
	_r=$(record "$2")
	case "$_r" in
	*"\"vendor\":\"$3\""*"\"method\":\"$4\""*) check 0 "$1: saved in the store as $3 $4" ;;
	*) check 1 "$1: saved in the store as $3 $4" "record: '$_r'" ;;
	esac
}

keyline() { printf '%s\n' "$SCREEN" | tail -1; }
# line_with TEXT: the first line of the capture that holds TEXT.
line_with() { printf '%s\n' "$SCREEN" | grep -F -- "$1" | head -1 | sed 's/ *$//'; }

# expect_focus NAME customer|vendor: the marker is on that part's heading only.
expect_focus() {
	_c=$(line_with "Customer reference")
	_v=$(printf '%s\n' "$SCREEN" | grep -E '^[> ] Vendor *$' | head -1 | sed 's/ *$//')
	case "$2" in
	customer) [ "$_c" = "> Customer reference" ] && [ "$_v" = "  Vendor" ] ;;
	vendor) [ "$_v" = "> Vendor" ] && [ "$_c" = "  Customer reference" ] ;;
	esac
	check $? "$1: the marker is on the $2" "customer line: '$_c'; vendor line: '$_v'"
}

# expect_cursor NAME X Y: the terminal's cursor is shown at column X, row Y
# (waits until it is, at most 5 s: the frame is drawn before the cursor moves).
expect_cursor() {
	_tries=0
	while :; do
		_cur=$(T display -p -t t '#{cursor_flag} #{cursor_x} #{cursor_y}')
		[ "$_cur" = "1 $2 $3" ] && break
		[ $_tries -ge 50 ] && break
		sleep 0.1
		_tries=$((_tries + 1))
	done
	[ "$_cur" = "1 $2 $3" ]
	check $? "$1: the cursor is shown at column $2, row $3" "cursor (shown, x, y): $_cur"
}

# --- the customer field has the focus, then the vendor list ---
wiz --
wait_screen "Customer reference" >/dev/null
settle
expect_focus "start" customer
expect_cursor "start: in the empty customer field" 2 2
expect_in "start: Esc quits, says the key line" "Esc quit" "$(keyline)"
keys_text "Bob"
wait_screen "Bob" >/dev/null
expect_cursor "start: after the typed customer" 5 2
keys Enter
wait_screen "> Vendor" >/dev/null
settle
expect_focus "Enter on the customer" vendor
# The filter line: the field takes rows 1-4, the heading 5.
expect_cursor "vendor list: on the filter line" 2 6
expect_in "vendor list: Esc goes back, says the key line" "Esc back" "$(keyline)"
expect_not_in "vendor list: the key line does not say Esc quits" "Esc quit" "$(keyline)"
expect_in "vendor list: Tab goes to the customer" "Tab customer" "$(keyline)"

# --- Esc with a filter typed clears it, in the list and in the field ---
keys_text "sol"
wait_screen "Filter: sol" >/dev/null
settle
expect_in "filter typed: the key line says Esc clears it" "Esc clear filter" "$(keyline)"
expect_cursor "filter typed: at its end" 13 6
keys Escape
wait_gone "Filter: sol" >/dev/null
check $? "filter typed, list: Esc clears the filter" "$SCREEN"
settle
expect_in "filter cleared: every vendor again" "7 of 7" "$SCREEN"
expect_focus "filter cleared by Esc: the list keeps the focus" vendor
expect_in "filter cleared: Esc goes back again" "Esc back" "$(keyline)"
keys_text "sol"
wait_screen "Filter: sol" >/dev/null
keys Tab
wait_screen "> Customer reference" >/dev/null
settle
expect_focus "Tab from the list" customer
expect_in "filter typed, field: the key line says Esc clears it" "Esc clear filter" "$(keyline)"
keys Escape
wait_screen "Type to filter" >/dev/null
check $? "filter typed, field: Esc clears the filter (no quit)" "$SCREEN"
settle
expect_focus "filter cleared from the field" customer
expect_in "filter cleared, field: now Esc quits" "Esc quit" "$(keyline)"
keys Tab
wait_screen "> Vendor" >/dev/null
keys Escape
wait_screen "> Customer reference" >/dev/null
check $? "no filter, list: Esc goes back to the customer field" "$SCREEN"
expect_in "no filter, list: Esc kept the customer" "Bob" "$SCREEN"

# --- a typed filter and Enter pick the first match (Solis before SolarEdge) ---
keys Enter
wait_screen "> Vendor" >/dev/null
keys_text "sol"
wait_screen "2 of 7" >/dev/null
keys Enter
wait_screen "Solis: how does the customer authorize?" >/dev/null
check $? "filter 'sol' and Enter: the first match, Solis" "$SCREEN"

# --- the method screen's Esc ---
settle
expect_in "method: Esc goes back" "Esc back" "$(keyline)"
keys_text "acc"
wait_screen "Filter: acc" >/dev/null
settle
expect_in "method, filter typed: the key line says Esc clears it" "Esc clear filter" "$(keyline)"
keys Escape
wait_gone "Filter: acc" >/dev/null
check $? "method, filter typed: Esc clears the filter" "$SCREEN"
expect_in "method: Esc with a filter stays on the method screen" "Solis: how does the customer authorize?" "$SCREEN"
expect_in "method: then Esc goes back, says the key line" "Esc back" "$(keyline)"
keys Escape
wait_screen "Customer reference" >/dev/null
check $? "method, no filter: Esc goes back to the start screen" "$SCREEN"
settle
expect_focus "back from the method screen" vendor

# --- enroll another: the customer stays, the filter goes ---
keys Enter
wait_screen "Solis: how does the customer authorize?" >/dev/null
keys Down Down Enter
again
expect_in "enroll another: the customer reference is kept" "Bob" "$(printf '%s\n' "$SCREEN" | sed -n 3p)"
expect_in "enroll another: the vendor filter is cleared" "Type to filter" "$SCREEN"
expect_in "enroll another: every vendor shown" "7 of 7" "$SCREEN"
expect_focus "enroll another" vendor
expect_cursor "enroll another: on the filter line" 2 6
expect_in "enroll another: says how to change the customer" "Tab: change the customer" "$SCREEN"
keys_text "solaredge"
keys Enter
wait_screen "SolarEdge: how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "sites found" >/dev/null
keys Enter
wait_screen "Enter: enroll another" >/dev/null
check $? "the same customer's second system: saved" "$SCREEN"
expect_in "second system: the summary names the kept customer" "Customer:  Bob" "$SCREEN"
[ -n "$(record Bob | grep '"vendor":"solaredge"')" ] && [ "$("$RECORDS" "$STORE" | grep -c '"customer":"Bob"')" = 2 ]
check $? "the store: two records of Bob, Solis and SolarEdge" "$("$RECORDS" "$STORE")"
keys Enter
wait_screen "Tab: change the customer" >/dev/null
keys Tab
wait_screen "> Customer reference" >/dev/null
settle
expect_cursor "Tab: the cursor at the end of the kept customer" 5 2
expect_in "Tab: on the field, Esc quits" "Esc quit" "$(keyline)"
expect_in "Tab: the field says typing replaces the kept customer" "typing replaces it" "$SCREEN"
keys_text "Carol"
wait_screen "Carol" >/dev/null
settle
[ "$(printf '%s\n' "$SCREEN" | sed -n 3p | sed 's/^ *//; s/ *$//')" = "Carol" ]
check $? "a new customer typed over it: the field holds Carol alone" "$(printf '%s\n' "$SCREEN" | sed -n 3p)"
expect_not_in "a new customer typed: no note about the last customer" "Same customer as the last" "$SCREEN"
# An editing key edits the kept customer instead.
keys Enter
wait_screen "> Vendor" >/dev/null
keys_text "tesla"
keys Enter
wait_screen "Tesla: how does the customer authorize?" >/dev/null
keys Down Enter
wait_screen "Tesla: the customer approves" >/dev/null
keys a
again
keys Tab
wait_screen "typing replaces it" >/dev/null
keys BSpace
keys_text "line"
wait_screen "Caroline" >/dev/null
check $? "kept customer: Backspace edits it, typing then adds to it" "$SCREEN"
keys Escape
expect_exit "Esc on the customer field quits" 0

# --- Derapi Join (any vendor): a choice of its own; the customer chooses SMA in Join ---
wiz --
wait_screen "Customer reference" >/dev/null
settle
expect_in "join: the start screen says what the choice does" '"Derapi Join (any vendor)" (last; type join) the customer chooses theirs' \
	"$(printf '%s\n' "$SCREEN" | tr -s ' \n' '  ')"
keys_text "Join Cust"
keys Enter
wait_screen "> Vendor" >/dev/null
settle
expect_in "join: last in the list, after every vendor" "Enphase Grid Services" \
	"$(printf '%s\n' "$SCREEN" | grep -B1 'Derapi Join (any vendor)' | head -1)"
keys_text join
wait_screen "1 of 7" >/dev/null
expect_in "join: typing join selects it" "> Derapi Join (any vendor)" "$(line_with "Derapi Join (any vendor)")"
keys Enter
wait_screen "Derapi: the customer approves" >/dev/null
check $? "join: Enter starts the Join session, no vendor asked (no method screen)" "$SCREEN"
settle
LINK=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *Link: //p' | tr -d ' ')
expect_in "join: the link is the relay's short link" "/relay/s/" "$LINK"
_read=$(decode)
[ -n "$LINK" ] && [ "$_read" = "$LINK" ]
check $? "join: the QR code decodes to the link" "link '$LINK', zbarimg read '$_read'"
# The customer's phone: the short link leads to the company's Join page on the
# relay; there the customer picks SMA and approves (the sandbox's Join), and
# the page reports back to the relay.
PAGE=$(curl -s -o /dev/null -w '%{redirect_url}' "$LINK")
expect_in "join: the short link opens the Join page" "/relay/join?session=" "$PAGE"
SESSION=$(printf '%s' "$PAGE" | sed -n 's/.*[?&]session=\([^&]*\).*/\1/p')
PSTATE=$(printf '%s' "$PAGE" | sed -n 's/.*[?&]state=\([^&]*\).*/\1/p')
BASE=${PAGE%%/relay/*}
# What the page lists (through the relay's proxy): every vendor, not one.
VENDORS=$(curl -s "$BASE/relay/join/api/join/session/$SESSION/vendors")
_offered=0
for _v in tesla sma enphase solaredge solis; do
	case "$VENDORS" in *"\"id\":\"$_v\""* | *"\"id\": \"$_v\""*) ;; *) _offered=1 ;; esac
done
check $_offered "join: the Join page offers every vendor" "$VENDORS"
CODE=$(curl -s -o /dev/null -w '%{http_code}' \
	"$BASE/derapi/join/session/$SESSION/authorize?vendor=sma&sandbox_auto=approve&sandbox_account=join-cust")
[ "$CODE" = 200 ]
check $? "join: the customer approves SMA in the Join page" "status $CODE; vendors offered: $VENDORS"
curl -s -o /dev/null "$BASE/relay/callback?state=$PSTATE"
wait_screen "SMA: sites found" >/dev/null
check $? "join: the vendor the customer chose names the next screen" "$SCREEN"
keys Enter
wait_screen "Enter: enroll another" >/dev/null
check $? "join: saved" "$SCREEN"
expect_in "join: the summary names the vendor chosen" "Vendor:    SMA" "$SCREEN"
expect_record "join: the record" "Join Cust" sma join
# Enroll another: the same customer, Join again (still selected); the demo's
# customer picks Tesla in the Join page.
keys Enter
wait_screen "Tab: change the customer" >/dev/null
settle
expect_in "join, another: Derapi Join (any vendor) still selected" "> Derapi Join (any vendor)" "$(line_with "Derapi Join (any vendor)")"
keys Enter
wait_screen "Derapi: the customer approves" >/dev/null
keys a
wait_screen "Tesla: sites found" >/dev/null
check $? "join, demo: a plays the customer choosing Tesla in the Join page" "$SCREEN"
keys Enter
wait_screen "Enter: enroll another" >/dev/null
expect_in "join, demo: saved for Tesla" "Vendor:    Tesla" "$SCREEN"
[ -n "$("$RECORDS" "$STORE" | grep '"customer":"Join Cust"' | grep '"vendor":"tesla","method":"join"')" ]
check $? "join, demo: the store has the customer's Tesla record too" "$("$RECORDS" "$STORE")"
keys q
expect_exit "join: q quits" 0

finish
