#!/bin/sh
# The demo's `a` (the customer approves) in one run of the wizard, enrollment
# after enrollment: it must work every time, also when the relay's poll takes
# the answer before the demo's customer has finished (their race used to leave
# `a` ignored for good).
# Usage: test_demo_again.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
ROUNDS=6
plan $((ROUNDS * 3 + 1))

. "$(dirname "$0")/wizlib.sh"

wiz --
for i in $(seq $ROUNDS); do
	wait_screen "Customer reference" >/dev/null
	# After "enroll another" the list has the focus and the last customer
	# stays: Tab to the field and erase it, as a person would.
	[ "$i" -gt 1 ] && keys Tab
	keys C-u
	keys_text "Again $i"
	keys Enter C-u
	keys_text tesla
	keys Enter
	wait_screen "Tesla: how does the customer authorize?" >/dev/null
	keys Down Enter
	wait_screen "Tesla: the customer approves" >/dev/null
	check $? "round $i: the QR code" "$SCREEN"
	keys a
	wait_screen "sites found" >/dev/null
	check $? "round $i: a: the customer approved, the sites are found" "$SCREEN"
	keys Enter
	wait_screen "Enter: enroll another" >/dev/null
	check $? "round $i: saved" "$SCREEN"
	keys Enter
	[ "$i" = 1 ] || continue
	wait_screen "Customer reference" >/dev/null
	keys F2
	wait_screen "Enrolled systems" >/dev/null
	expect_in "one record is \"1 record\"" "  1 record. C checks all shown" "$SCREEN"
	keys Escape
done
keys C-c
finish
