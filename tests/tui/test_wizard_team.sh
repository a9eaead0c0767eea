#!/usr/bin/env bash
# The wizard on a team store (PostgreSQL of the test's own, tests/pg_serve):
# an enrollment is saved there (not in the outbox), the enrolled systems screen
# lists and checks it from the database, and with the server down the next
# enrollment waits in the outbox until `derenroll sync` pushes it, once; the
# enrolled systems screen reads the team store a page at a time, what another
# machine added since the wizard started included, and scrolls past the first.
# Usage: test_wizard_team.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
BIN=$FIXTURE
. "$(dirname "$0")/../cli/pg.sh"
plan 43

. "$(dirname "$0")/wizlib.sh"
pg_start
STORE=$PG_URL
export XDG_DATA_HOME="$TMP/data"
# The demo's member passphrase, for the plain sub-commands.
printf 'derenroll-demo\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
D() { DERENROLL_PASSPHRASE_FILE="$TMP/pass" "$BIN" --demo --store "$PG_URL" "$@"; }
# team_record CUSTOMER: its line of `list --json` from the team store.
team_record() { D list --json 2>/dev/null | jq -c --arg c "$1" '.[] | select(.customer == $c)'; }

# enroll_key CUSTOMER VENDOR NAME: a customer's key enrollment (the demo's
# key), VENDOR typed as the filter, NAME as the screens say it; to the summary.
enroll_key() {
	begin "$1" "$2"
	wait_screen "$3: how does the customer authorize?" >/dev/null
	keys Down Enter
	wait_screen "$3: Customer's" >/dev/null
	keys Enter
	wait_screen "sites found" >/dev/null
	keys Enter
	wait_screen "Enter: enroll another" >/dev/null
}

wiz --
enroll_key "Team One" solaredge SolarEdge
check $? "team store: the summary" "$SCREEN"
expect_not_in "saved in the team store, not on the laptop" "on this laptop only" "$SCREEN"
[ "$(team_record "Team One" | jq -r .vendor)" = solaredge ]
check $? "the team store holds the record" "$(D list --json 2>&1)"
keys q
expect_exit "q quits" 0

# A new wizard reads no record at its start (the store opened on demand), yet
# knows the site the team store holds: it is read when the site is enrolled.
wiz --
begin "Team Three" solaredge
wait_screen "SolarEdge: how does the customer authorize?" >/dev/null
keys Down Enter
wait_screen "SolarEdge: Customer's" >/dev/null
keys Enter
wait_screen "sites found" >/dev/null
keys Enter
wait_screen "Replace it?" >/dev/null
check $? "a new wizard asks about the site the team store holds" "$SCREEN"
expect_in "naming who holds it" "Team One" "$SCREEN"
keys_text n
wait_gone "Replace it?" >/dev/null
[ "$(D list --json | jq '[.[] | select(.customer == "Team Three")] | length')" = 0 ] &&
	[ "$(D list --json | jq 'length')" = 1 ]
check $? "n: nothing saved, the record stays Team One's" "$(D list --json 2>&1)"
keys C-c
expect_exit "^C quits" 130

wiz --
wait_screen "F2 enrolled systems" >/dev/null
keys F2
wait_screen "1 of 1" >/dev/null
check $? "the enrolled systems screen lists the team store's record" "$SCREEN"
expect_in "with its customer" "Team One" "$SCREEN"
keys F5
wait_screen "checked ok" >/dev/null
check $? "F5 checks it" "$SCREEN"
[ "$(team_record "Team One" | jq -r .last_check.result)" = ok ]
check $? "the check is saved in the team store" "$(team_record "Team One")"
keys Escape
pg_kill
enroll_key "Team Two" solis Solis
check $? "server down: still saved" "$SCREEN"
expect_in "and the summary says where" "on this laptop only" "$SCREEN"
keys q
expect_exit "q quits" 0
pg_resume
OUT=$(D sync 2>&1)
check $? "derenroll sync pushes it" "$OUT"
OUT=$(D sync 2>&1)
check $? "a second sync has nothing to push" "$OUT"
[ "$(D list --json | jq '[.[] | select(.customer == "Team Two")] | length')" = 1 ]
check $? "pushed once, also when synced twice" "$(D list --json 2>&1)"

# Pages: 150 records more (ids zzzz000001...: after the others, in order),
# imported by another process while the wizard runs.
D export --json >"$TMP/export.json" 2>/dev/null
jq '.records[0] as $r | .records = [range(1; 151) as $i | $r
	| .id = ("zzzz" + ("00000" + ($i | tostring))[-6:])
	| .customer = ("Bulk " + ("00" + ($i | tostring))[-3:])
	| .sites = [{"id": ("bulk-" + ($i | tostring)), "name": "Bulk"}]]' \
	"$TMP/export.json" >"$TMP/bulk.json"
rm -f "$TMP/export.json"
wiz --
wait_screen "F2 enrolled systems" >/dev/null
OUT=$(D import --json "$TMP/bulk.json" 2>&1)
check $? "another process adds 150 records" "$OUT"
keys F2
wait_screen "152 records, 100 read" >/dev/null
check $? "the enrolled systems screen reads the first page and counts all" "$SCREEN"
expect_in "the list holds the first page" "100 of 100" "$SCREEN"
# The filter is asked of the database: it finds records not read yet.
keys /
keys_text "bulk 14"
wait_screen "10 of 10" >/dev/null
check $? "the filter finds records not read yet" "$SCREEN"
expect_in "Bulk 149 among them" "Bulk 149" "$SCREEN"
keys Escape
wait_screen "152 records, 100 read" >/dev/null
check $? "Esc clears the filter: the first page again" "$SCREEN"
keys End
wait_screen "Bulk 150" >/dev/null
check $? "End scrolls past the first page (100) to the last record" "$SCREEN"
keys Enter
wait_screen "Record zzzz000150" >/dev/null
check $? "Enter shows it (written by the other process)" "$SCREEN"
keys Escape
keys C-c
expect_exit "^C quits" 130
finish
