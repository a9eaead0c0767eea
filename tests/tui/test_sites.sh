#!/bin/sh
# One customer, several sites: on the sites screen Space (or Tab) marks each
# of the customer's, Enter saves them. Keys and accounts are saved one record
# per site; credentials with a refresh token keep the sites in one record. A
# marked site that another customer's record holds is asked about first.
# Usage: test_sites.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
plan 19

. "$(dirname "$0")/wizlib.sh"

# sites CUSTOMER: the site ids of that customer's records, sorted, one a line.
sites() { "$RECORDS" "$STORE" | jq -r --arg c "$1" 'select(.customer == $c) | .sites[].id' | sort; }
count() { "$RECORDS" "$STORE" | grep -c "\"customer\":\"$1\""; }
# fresh CUSTOMER VENDOR: begin, after "enroll another" (the last customer kept,
# the vendor list has the focus): Tab to the customer, erase it, type the next.
fresh() {
	keys Tab C-u
	keys_text "$1"
	keys Enter
	keys_text "$2"
	keys Enter
}
flat() { printf '%s\n' "$1" | sed 's/^ *//' | tr -s ' \n' '  '; }

wiz --
# --- a portal account: two of three sites marked, a record each ---
begin "Two homes" solaredge
wait_screen "how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "sites found" >/dev/null
expect_in "several sites: the screen says they can be marked" "mark each of theirs with Space" "$(flat "$SCREEN")"
expect_in "the key line shows the mark key" "Space mark" "$SCREEN"
FIRST=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *> \[ \] \([0-9A-Za-z-]*\) .*/\1/p')
keys Space
wait_screen "1 marked" >/dev/null
check $? "Space marks the selected site" "$SCREEN"
keys Down
keys Tab
wait_screen "2 marked" >/dev/null
THIRD=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *>\{0,1\} *\[x\] \([0-9A-Za-z-]*\) .*/\1/p' | sed -n 2p)
[ -n "$FIRST" ] && [ -n "$THIRD" ] && [ "$FIRST" != "$THIRD" ] &&
	printf '%s\n' "$SCREEN" | grep -q '^ *\[ \] '
check $? "Tab marks too; the skipped site stays unmarked" "$SCREEN"
keys Enter
wait_screen "Saved 2 records" >/dev/null
check $? "Enter saves the marked sites: two records" "$SCREEN"
expect_in "the done screen lists both sites" "Sites:     2: $FIRST, $THIRD" "$SCREEN"
[ "$(count "Two homes")" = 2 ] && [ "$(sites "Two homes" | tr '\n' ' ')" = "$(printf '%s\n%s\n' "$FIRST" "$THIRD" | sort | tr '\n' ' ')" ]
check $? "the store holds a record for each marked site" "$("$RECORDS" "$STORE")"
keys Enter
wait_screen "Customer reference" >/dev/null
settle

# --- a refresh token: three sites marked, one record holds them ---
fresh "Three roofs" enphase
wait_screen "how does the customer authorize?" >/dev/null
keys_text partner
keys Enter
wait_screen "Partner access token" >/dev/null
settle
keys Enter
wait_screen "sites found" >/dev/null
keys Space Space Space
wait_screen "3 marked" >/dev/null
check $? "every site marked" "$SCREEN"
keys Enter
wait_screen "Enter: enroll another" >/dev/null
expect_in "one record" "Saved record" "$SCREEN"
expect_in "holding the three sites" "Sites:     3:" "$SCREEN"
[ "$(count "Three roofs")" = 1 ] && [ "$(sites "Three roofs" | wc -l)" = 3 ]
check $? "the store has one record with three sites" "$(record "Three roofs")"
keys Enter
wait_screen "Customer reference" >/dev/null
settle

# --- a marked site held by another customer is asked about first ---
fresh "Moved in" solaredge
wait_screen "how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "sites found" >/dev/null
# The unheld site comes first; the two held by "Two homes" follow.
keys Space Space
wait_screen "2 marked" >/dev/null
keys Enter
wait_screen "Replace it?" >/dev/null
check $? "a held site among the marked: asks first" "$SCREEN"
keys_text n
wait_gone "Replace it?" >/dev/null
[ "$(count "Moved in")" = 0 ] && [ "$(count "Two homes")" = 2 ]
check $? "n saves nothing" "$("$RECORDS" "$STORE")"
keys Enter
wait_screen "Replace it?" >/dev/null
keys_text y
wait_screen "Saved 2 records" >/dev/null
[ "$(count "Moved in")" = 2 ] && [ "$(count "Two homes")" = 1 ]
check $? "y: the held site's record is the new customer's, the other stays" "$("$RECORDS" "$STORE")"
keys q
expect_exit "q quits" 0
finish
