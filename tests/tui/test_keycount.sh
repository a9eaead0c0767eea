#!/bin/sh
# How many keys each demo enrollment takes, counted as a person presses them:
# from a fresh start screen, the customer reference typed (not counted: the
# same for every way), then every key until "Enter: enroll another" - arrows
# to the vendor and the method, Enter, the demo's customer approving (`a`, or
# ^P where a code is typed in), Enter on the sites. The driver reads the
# screen and reacts, so a screen that is added shows up as a count that grows.
# Each count must stay within its ceiling (what the wizard needed when these
# were first counted, 2026-12-03: 5 to 11); `test_keycount.sh ... --table`
# prints the figures for tests/bench/RESULTS.md instead of testing them.
# Usage: test_keycount.sh DERENROLL QRCAP RECORDS [--table]
set -u
RECORDS=$3
TABLE=${4:-}
. "$(dirname "$0")/lib.sh"

# vendor|method label (as the method screen shows it, "-" when there is none)|ceiling
FLOWS='Tesla|Derapi Join (recommended)|5
Tesla|Customer approves with their Tesla account|6
Solis|Derapi Join (recommended)|6
Solis|Customer'"'"'s KeyID and KeySecret|7
Solis|Company portal account|7
SMA|Derapi Join (recommended)|7
SMA|Customer approves with their SMA ID|8
SMA|SMA e-mails the owner|9
SolarEdge|Derapi Join (recommended)|8
SolarEdge|Customer'"'"'s v2 API key|9
SolarEdge|Company Fleet account|9
Enphase|Derapi Join (recommended)|9
Enphase|Customer approves with their Enphase account|11
Enphase|Installer / partner account|11
Enphase Grid Services|-|9
Derapi Join (any vendor)|-|10'
N_FLOWS=$(printf '%s\n' "$FLOWS" | wc -l)
[ -n "$TABLE" ] || plan $((N_FLOWS * 2))

. "$(dirname "$0")/wizlib.sh"

PRESSED=0
# press KEY...: sends the keys, counts them, and waits (10 s at most) for the
# screen to answer, as a person would before pressing again.
press() {
	_before=$(screen)
	keys "$@"
	PRESSED=$((PRESSED + $#))
	_tries=0
	while [ "$(screen)" = "$_before" ] && [ $_tries -lt 100 ]; do
		sleep 0.1
		_tries=$((_tries + 1))
	done
}

# rows: the list's rows on the screen (after its filter line), one a line.
rows() { printf '%s\n' "$SCREEN" | sed 's/ *$//' | sed -n '/Type to filter/,/^$/p' | sed '1d;/^$/d'; }

# pick LABEL: the arrows from the selected row to LABEL's, then Enter.
pick() {
	settle
	_at=$(rows | grep -n -F -x -e "  > $1" -e "    $1" | head -1 | cut -d: -f1)
	_sel=$(rows | grep -n '^  > ' | head -1 | cut -d: -f1)
	if [ -z "$_at" ] || [ -z "$_sel" ]; then
		return 1
	fi
	while [ "$_sel" -lt "$_at" ]; do
		press Down
		_sel=$((_sel + 1))
	done
	while [ "$_sel" -gt "$_at" ]; do
		press Up
		_sel=$((_sel - 1))
	done
	press Enter
}

# approved: as a person would after playing the customer, waits (10 s at
# most) for what the approval brings, instead of pressing the key again.
approved() {
	_tries=0
	while [ $_tries -lt 100 ]; do
		SCREEN=$(screen)
		case "$SCREEN" in
		*"sites found"* | *"Enter: enroll another"* | *": not enrolled"* | *"typed in: press"*) return 0 ;;
		esac
		sleep 0.1
		_tries=$((_tries + 1))
	done
}

# drive: reacts to each screen until the record is saved (60 steps at most).
drive() {
	_steps=0
	while [ $_steps -lt 60 ]; do
		settle
		case "$SCREEN" in
		*"Enter: enroll another"*) return 0 ;;
		*": not enrolled"* | *"Discard this"*) return 1 ;;
		*"sites found"*) press Enter ;;
		*"the code is typed in: press"*) press Enter ;;
		*"^P customer approves (demo)"*) press C-p && approved ;;
		*"a customer approves (demo)"*) press a && approved ;;
		*"Demo: the sandbox's credentials are filled in"*) press Enter ;;
		*) sleep 0.3 ;;
		esac
		_steps=$((_steps + 1))
	done
	return 1
}

i=0
printf '%s\n' "$FLOWS" >"$TMP/flows"
while IFS='|' read -r vendor method ceiling <&3; do
	i=$((i + 1))
	label="$vendor${method:+, }$method"
	[ "$method" = "-" ] && label=$vendor
	wiz --
	wait_screen "Customer reference" >/dev/null
	keys_text "Keys $i"
	PRESSED=0
	press Enter
	ok=0
	pick "$vendor" || ok=1
	if [ $ok = 0 ] && [ "$method" != "-" ]; then
		wait_screen "how does the customer authorize?" >/dev/null
		pick "$method" || ok=1
	fi
	[ $ok = 0 ] && drive || ok=1
	if [ -n "$TABLE" ]; then
		printf '| %s | %s | %s |\n' "$label" "$([ $ok = 0 ] && echo "$PRESSED" || echo failed)" "$ceiling"
		[ $ok = 0 ] || [ -z "${KEYCOUNT_DEBUG:-}" ] || printf '%s\n' "$SCREEN"
	else
		check $ok "$label: enrolled" "$SCREEN"
		[ $ok = 0 ] && [ "$PRESSED" -le "$ceiling" ]
		check $? "$label: $PRESSED keys (at most $ceiling)" "$SCREEN"
	fi
	keys C-c
	wait_screen "FIXTURE EXITED" >/dev/null
done 3<"$TMP/flows"
[ -n "$TABLE" ] || finish
