#!/bin/sh
# Enphase's own-account sign-in in the demo at 80x24: the phone gets the
# relay's short link as a QR code that fits and decodes (no "does not fit"),
# and the code Enphase's page shows is asked for as the code shown on the
# customer's phone, typed as it is read aloud: shown in groups of 4, spaces
# ignored, a wrong character said in a line without ending the session.
# Usage: test_enphase.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
plan 17

. "$(dirname "$0")/wizlib.sh"

# location URL: where the sandbox's answer to URL redirects.
location() { curl -sS --noproxy '*' -o /dev/null -w '%{redirect_url}' "$1"; }

wiz --
begin "Cust Enphase" enphase
wait_screen "Enphase: how does the customer authorize?" >/dev/null
keys Down Enter
wait_screen "Enphase: the customer approves" >/dev/null
check $? "the QR screen" "$SCREEN"
settle
LINK=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *Link: //p' | tr -d ' ')
[ -n "$LINK" ] || LINK="(no Link: line)"
expect_in "the link is the relay's short link" "/relay/s/" "$LINK"
expect_not_in "the QR code fits at 80x24" "does not fit" "$SCREEN"
expect_decodes "the QR code at 80x24 decodes to the short link" "$LINK"
expect_in "the field asks for the code on the customer's phone" \
	"Code shown on the customer's phone" "$SCREEN"

# The customer opens the short link, approves, and reads the code to us.
AUTHZ=$(location "$LINK")
PAGE=$(location "$AUTHZ&sandbox_auto=approve")
CODE=$(curl -sS --noproxy '*' "$PAGE" | sed -n 's/.*id="code">\([^<]*\)<.*/\1/p')
[ ${#CODE} -eq 32 ]
check $? "the sandbox's Enphase code has 32 characters" "code: '$CODE'"

# A character no Enphase code has: said there, the session goes on.
keys_text "$(printf '%.8s' "$CODE")!"
keys Enter
wait_screen "'!' is not in Enphase codes" >/dev/null
check $? "a wrong character is said in one line" "$SCREEN"
expect_in "the session still waits for the code" "Time left:" "$SCREEN"
keys C-u

# Typed as read: the first 16 without spaces (shown grouped), the rest in
# groups with spaces of its own.
keys_text "$(printf '%.16s' "$CODE")"
G1=$(printf '%s' "$CODE" | cut -c1-4) G2=$(printf '%s' "$CODE" | cut -c5-8)
G3=$(printf '%s' "$CODE" | cut -c9-12) G4=$(printf '%s' "$CODE" | cut -c13-16)
[ -n "$G4" ] && wait_screen "$G1 $G2 $G3 $G4" >/dev/null
check $? "what is typed is shown in groups of 4" "$SCREEN"
REST=$(printf '%s' "$CODE" | cut -c17-32 | sed 's/..../& /g')
keys_text " $REST"
keys Enter
wait_screen "sites found" >/dev/null
check $? "the code typed in groups is taken" "$SCREEN"
keys Enter
wait_screen "Enter: enroll another" >/dev/null
check $? "saved" "$SCREEN"
_r=$(record "Cust Enphase")
case "$_r" in
*'"vendor":"enphase"'*'"method":"oauth"'*) check 0 "the record is in the store" ;;
*) check 1 "the record is in the store" "record: '$_r'" ;;
esac
keys q
expect_exit "q quits" 0
finish
