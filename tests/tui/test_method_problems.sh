#!/bin/sh
# Problems surface first: a vendor whose methods lack the company's setup is
# marked on the start screen, before any form, with what to set and in which
# file (SMA's e-mail consent needs the app's client ID and secret, as its
# sign-in does).
# Usage: test_method_problems.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
plan 23

. "$(dirname "$0")/wizlib.sh"

printf 'test passphrase\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
# sma_row: the SMA line of the vendor list.
sma_row() { printf '%s\n' "$SCREEN" | grep '^ *>\? *SMA ' | head -1; }

: >"$TMP/empty.ini"
start 200 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" -- --config "$TMP/empty.ini" --store "$TMP/real"
wait_screen "Customer reference" >/dev/null
check $? "no client_id: the start screen" "$SCREEN"
settle
expect_in "SMA is marked with the key to set and the config file" \
	"not configured: set client_id in [vendor.sma] of $TMP/empty.ini" "$(sma_row)"
keys_text "Cust Problems"
keys Enter
keys_text "sma"
keys Enter
settle
expect_in "Enter on SMA says why under the list" \
	"$(printf '  not configured: set client_id in [vendor.sma] of %s' "$TMP/empty.ini")" "$SCREEN"
expect_not_in "and stays on the start screen: no form" "SMA: " "$SCREEN"
keys C-c
expect_exit "^C on the start screen" 130

printf '[vendor.sma]\nclient_id = sma-app\n' >"$TMP/sma-id.ini"
start 200 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" -- --config "$TMP/sma-id.ini" --store "$TMP/real"
wait_screen "Customer reference" >/dev/null
check $? "client_id without its secret: the start screen" "$SCREEN"
settle
expect_in "SMA is marked with the command that sets the secret" \
	"not configured: derenroll secret set vendor.sma.client_secret" "$(sma_row)"
keys C-c
expect_exit "^C on the start screen" 130

# A refused key: r tries again with what was typed, to be corrected, not typed anew.
wiz --
begin "Refused key" solaredge
wait_screen "how does the customer authorize?" >/dev/null
keys Down Enter
wait_screen "v2 API key" >/dev/null
settle
keys C-u
keys_text "invalidKEY0001"
keys Enter
wait_screen "SolarEdge refused the API key" >/dev/null
check $? "a refused key fails the check" "$SCREEN"
keys r
wait_screen "v2 API key (hidden" >/dev/null
keys C-r
wait_screen "v2 API key (shown" >/dev/null
expect_in "r: the form keeps the key typed" "invalidKEY0001" "$SCREEN"
keys C-c
expect_exit "^C on the form" 130
finish
