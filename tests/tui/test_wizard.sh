#!/bin/sh
# The wizard in demo mode (the sandbox in-process, a store in the test's temp
# dir): every vendor and method enrolled end to end with keys, each record
# checked in the store; the QR code at 80x24 decodes to the relay's short link
# and survives resizes; --vendor starts at the QR code; reauth on a terminal;
# ^C on every screen leaves the terminal sane. Derapi Join is listed first when
# configured; Tesla and Enphase Grid Services are enrolled through it.
# Usage: test_wizard.sh DERENROLL QRCAP RECORDS
set -u
RECORDS=$3
. "$(dirname "$0")/lib.sh"
plan 298

. "$(dirname "$0")/wizlib.sh"

# expect_record NAME CUSTOMER VENDOR METHOD
expect_record() {
	_r=$(record "$2")
	case "$_r" in
	*"\"vendor\":\"$3\""*"\"method\":\"$4\""*) check 0 "$1: saved in the store" ;;
	*) check 1 "$1: saved in the store" "record: '$_r'" ;;
	esac
}

# expect_join_first NAME DIRECT-LABEL: on the method screen, Derapi Join is
# listed before the vendor's direct method.
expect_join_first() {
	_j=$(printf '%s\n' "$SCREEN" | grep -n "Derapi Join (recommended)" | head -1 | cut -d: -f1)
	_d=$(printf '%s\n' "$SCREEN" | grep -n "$2" | head -1 | cut -d: -f1)
	[ -n "$_j" ] && [ -n "$_d" ] && [ "$_j" -lt "$_d" ]
	check $? "$1: Derapi Join first on the method screen" "$SCREEN"
}

# finish_sites CUSTOMER NAME: confirms the first site, then checks the summary.
finish_sites() {
	wait_screen "sites found" >/dev/null
	check $? "$2: sites found" "$SCREEN"
	keys Enter
	# The summary's last line: the whole screen is drawn.
	wait_screen "Enter: enroll another" >/dev/null
	check $? "$2: saved" "$SCREEN"
	settle
	expect_in "$2: the summary names the customer" "Customer:  $1" "$SCREEN"
	expect_in "$2: the summary says when the authorization expires" "Authorization expires:" "$SCREEN"
	keys q
	expect_exit "$2: q quits" 0
}

# --- the start screen ---
wiz -- 
wait_screen "Enphase Grid Services" >/dev/null
check $? "start: every vendor is listed" "$SCREEN"
expect_in "start: the line about Derapi Join" "Derapi Join is available (recommended)" "$SCREEN"
expect_in "start: keys on the bottom line" "F2 enrolled systems" "$(printf '%s\n' "$SCREEN" | tail -1)"
keys Enter
wait_screen "Type the customer's name" >/dev/null
check $? "start: Enter without a customer asks for one" "$SCREEN"
keys_text "$(printf 'x%.0s' $(seq 201))"
keys Enter
wait_screen "201 characters, at most 200 are allowed" >/dev/null
check $? "start: a customer reference over 200 characters is refused there" "$SCREEN"
keys C-c
expect_exit "^C on the start screen" 130

# --- Tesla (OAuth through the relay): the QR code ---
wiz --
begin "Cust Tesla" tesla
wait_screen "Tesla: how does the customer authorize?" >/dev/null
check $? "tesla: the method screen (Join and OAuth)" "$SCREEN"
settle
expect_join_first tesla "Customer approves with their Tesla"
keys Down Enter
wait_screen "Tesla: the customer approves" >/dev/null
check $? "tesla: the QR code" "$SCREEN"
settle
LINK=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *Link: //p' | tr -d ' ')
expect_in "tesla: the link is the relay's short link" "/relay/s/" "$LINK"
expect_decodes "tesla: the QR code at 80x24 decodes to the link" "$LINK"
expect_in "tesla: a countdown" "Time left: 1" "$SCREEN"
resize 100 30
expect_decodes "tesla: resized to 100x30, redrawn, decodes" "$LINK"
resize 70 20
wait_screen "The QR code does not fit: need 1 more row" >/dev/null
check $? "tesla: at 70x20 the screen says what the code lacks" "$SCREEN"
# A status bar's row less, or one column less, is no cliff.
resize 80 23
expect_decodes "tesla: 80x23 decodes" "$LINK"
resize 79 24
expect_decodes "tesla: 79x24 decodes" "$LINK"
resize 60 24
expect_decodes "tesla: 60x24, the text below the code, decodes" "$LINK"
settle
expect_in "tesla: 60x24 keeps the countdown" "Time left: 1" "$SCREEN"
resize 80 24
expect_decodes "tesla: back at 80x24, decodes" "$LINK"
keys a
finish_sites "Cust Tesla" tesla
expect_record "tesla" "Cust Tesla" tesla oauth

# --- SMA: OAuth, and the e-mail wait ---
wiz --
begin "Cust SMA" sma
wait_screen "SMA: how does the customer authorize?" >/dev/null
check $? "sma: the method screen" "$SCREEN"
settle
expect_join_first sma "Customer approves with their SMA"
keys Down Enter
wait_screen "SMA: the customer approves" >/dev/null
keys a
finish_sites "Cust SMA" "sma oauth"
expect_record "sma oauth" "Cust SMA" sma oauth

wiz --
begin "Cust SMA mail" sma
wait_screen "SMA: how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "Demo: the sandbox's credentials" >/dev/null
check $? "sma email: the form shows the demo credentials" "$SCREEN"
keys Enter
wait_screen "SMA: waiting" >/dev/null
check $? "sma email: waiting for the owner" "$SCREEN"
finish_sites "Cust SMA mail" "sma email"
expect_record "sma email" "Cust SMA mail" sma email

# owner_email ADDRESS: on SMA's method screen, the e-mail method with that owner.
owner_email() {
	keys Down Down Enter
	wait_screen "Owner's e-mail" >/dev/null
	settle
	keys C-u
	keys_text "$1"
	keys Enter
}

# --- SMA e-mail, a second owner in the same run: the app's token sees both
# owners' plants; the one no record holds comes first, the other says whose ---
wiz --
begin "Mail One" sma
wait_screen "SMA: how does the customer authorize?" >/dev/null
owner_email owner-one@example.com
again
# The customer is kept and the list has the focus (the filter cleared): Tab,
# erase the customer, type the next, then the vendor.
keys Tab C-u
keys_text "Mail Two"
keys Enter
keys_text "sma"
keys Enter
wait_screen "SMA: how does the customer authorize?" >/dev/null
settle
owner_email owner-two@example.com
wait_screen "sites found" >/dev/null
settle
expect_in "sma email, second owner: both plants, one not enrolled yet" "2 sites, 1 not enrolled yet" "$SCREEN"
FIRST=$(printf '%s\n' "$SCREEN" | grep -n "> " | head -1)
expect_not_in "sma email, second owner: the plant no record holds is first and selected" "(enrolled:" "$FIRST"
expect_in "sma email, second owner: the first owner's plant is marked as theirs" "(enrolled: Mail One)" "$SCREEN"
keys Enter
wait_screen "Enter: enroll another" >/dev/null
check $? "sma email, second owner: Enter confirms the selected plant" "$SCREEN"
keys q
expect_exit "sma email, second owner: q quits" 0
expect_record "sma email, second owner" "Mail Two" sma email

# --- SolarEdge: the customer's key (masked, revealed), the company account ---
wiz --
begin "Cust SE" solaredge
wait_screen "SolarEdge: how does the customer authorize?" >/dev/null
settle
expect_join_first solaredge "Customer's v2 API key"
keys Down Enter
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
settle
expect_in "solaredge key: masked" "********" "$SCREEN"
keys C-r
settle
expect_not_in "solaredge key: ^R shows it" "********" "$SCREEN"
keys C-u
keys_text "short"
keys Enter
settle
expect_in "solaredge key: a key the pattern refuses gets an inline error" "API key does not look right" "$SCREEN"
expect_in "solaredge key: still on the form" "SolarEdge: Customer's v2 API key" "$SCREEN"
keys C-u
keys_text "invalid-key-123"
keys Enter
wait_screen "SolarEdge: not enrolled" >/dev/null
check $? "solaredge key: a rejected key fails with the vendor's message" "$SCREEN"
keys r
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
check $? "solaredge key: r tries again" "$SCREEN"
# r keeps the key typed, to be corrected; the method again fills in the demo's.
keys Escape
wait_screen "SolarEdge: how does the customer authorize?" >/dev/null
keys Enter
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
settle
keys Enter
finish_sites "Cust SE" "solaredge key"
expect_record "solaredge key" "Cust SE" solaredge key

wiz --
begin "Cust SE acct" solaredge
wait_screen "SolarEdge: how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "sites found" >/dev/null
expect_in "solaredge account: the company's sites are listed" "3 sites" "$SCREEN"
finish_sites "Cust SE acct" "solaredge account"
expect_record "solaredge account" "Cust SE acct" solaredge account

# --- Solis: key pair, company account ---
wiz --
begin "Cust Solis" solis
wait_screen "Solis: how does the customer authorize?" >/dev/null
settle
expect_join_first solis "Customer's KeyID"
keys Down Enter
wait_screen "Solis: Customer's KeyID" >/dev/null
keys Enter
finish_sites "Cust Solis" "solis key"
expect_record "solis key" "Cust Solis" solis key

wiz --
begin "Cust Solis acct" solis
wait_screen "Solis: how does the customer authorize?" >/dev/null
keys Down Down Enter
finish_sites "Cust Solis acct" "solis account"
expect_record "solis account" "Cust Solis acct" solis account

# --- Enphase: OAuth (the code comes back typed in), partner ---
wiz --
begin "Cust Enphase" enphase
wait_screen "Enphase: how does the customer authorize?" >/dev/null
settle
expect_join_first enphase "Customer approves with their Enphase"
keys Down Enter
wait_screen "Enphase: the customer approves" >/dev/null
check $? "enphase oauth: the QR code" "$SCREEN"
keys C-p
wait_screen "the code is typed in" >/dev/null
check $? "enphase oauth: the demo customer's code is typed in" "$SCREEN"
keys Enter
finish_sites "Cust Enphase" "enphase oauth"
expect_record "enphase oauth" "Cust Enphase" enphase oauth

wiz --
begin "Cust Enphase partner" enphase
wait_screen "Enphase: how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "Enphase: Installer" >/dev/null
keys Enter
finish_sites "Cust Enphase partner" "enphase partner"
expect_record "enphase partner" "Cust Enphase partner" enphase partner

# --- Derapi Join: Tesla, and Enphase Grid Services (Join only) ---
wiz --
begin "Cust Tesla Join" tesla
wait_screen "Tesla: how does the customer authorize?" >/dev/null
keys Enter
wait_screen "Tesla: the customer approves" >/dev/null
check $? "tesla join: the QR code" "$SCREEN"
settle
LINK=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *Link: //p' | tr -d ' ')
expect_in "tesla join: the link is the relay's short link" "/relay/s/" "$LINK"
expect_decodes "tesla join: the QR code decodes to the link" "$LINK"
keys a
finish_sites "Cust Tesla Join" "tesla join"
expect_record "tesla join" "Cust Tesla Join" tesla join

wiz --
begin "Cust VPP" "enphase grid"
wait_screen "Enphase Grid Services: the customer approves" >/dev/null
check $? "enphasevpp: Join only, straight to the QR code" "$SCREEN"
keys a
finish_sites "Cust VPP" "enphasevpp join"
expect_record "enphasevpp join" "Cust VPP" enphasevpp join

# --- --vendor: straight to the QR code; Esc cancels to the start screen ---
wiz -- --customer "Cust Direct" --vendor tesla
wait_screen "Tesla: the customer approves" >/dev/null
check $? "--vendor tesla --customer: straight to the QR code" "$SCREEN"
keys Escape
wait_screen "Discard this authorization?" >/dev/null
keys y
wait_screen "Customer reference" >/dev/null
check $? "Esc on the QR code, y: back to the start screen" "$SCREEN"
keys C-c
expect_exit "^C after --vendor" 130

wiz -- --customer "Cust Direct Join" --vendor tesla
wait_screen "Tesla: the customer approves" >/dev/null
keys a
finish_sites "Cust Direct Join" "--vendor tesla"
expect_record "--vendor tesla: Derapi Join (first when configured)" "Cust Direct Join" tesla join

# --- NO_COLOR and a monochrome terminal: the code still decodes ---
for envs in NO_COLOR=1 TERM=vt100; do
	wiz "$envs" -- --customer "Cust Mono" --vendor tesla
	wait_screen "Tesla: the customer approves" >/dev/null
	settle
	LINK=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *Link: //p' | tr -d ' ')
	expect_decodes "$envs: the QR code decodes" "$LINK"
	keys C-c
	expect_exit "$envs: ^C on the QR code" 130
done

# --- a non-UTF-8 locale at 80x24: the code does not fit, the link is text ---
wiz LC_ALL=C LANG=C -- --customer "Cust C locale" --vendor tesla
wait_screen "does not fit" >/dev/null
check $? "LANG=C: says the code does not fit" "$SCREEN"
expect_in "LANG=C: how many rows are missing" "more rows" "$SCREEN"
expect_in "LANG=C: and that a UTF-8 locale would fit it" "use a UTF-8 locale" \
	"$(printf '%s\n' "$SCREEN" | tr -s ' \n' '  ')"
expect_in "LANG=C: the link as text" "/relay/s/" "$SCREEN"
keys C-c
expect_exit "LANG=C: ^C" 130

# --- --demo without --store: ^C removes the throwaway store too ---
mkdir -p "$TMP/demotmp"
start 80 24 TMPDIR="$TMP/demotmp" -- --demo
wait_screen "Customer reference" >/dev/null
check $? "--demo without --store: the start screen" "$SCREEN"
keys C-c
expect_exit "--demo without --store: ^C" 130
[ -z "$(ls "$TMP/demotmp")" ]
check $? "--demo without --store: ^C leaves no throwaway store behind" "$(ls -la "$TMP/demotmp")"

# --- reauth on a terminal: the wizard at the QR code, the same record ---
ID=$(record "Cust Tesla" | sed -n 's/^{ *"id": *"\([^"]*\)".*/\1/p')
start 80 24 -- --demo --store "$STORE" reauth "$ID"
wait_screen "Tesla: the customer approves" >/dev/null
check $? "reauth: the QR code" "$SCREEN"
keys a
# The record's site is known: no site to choose.
wait_screen "Updated record $ID" >/dev/null
check $? "reauth: the same record is updated" "$SCREEN"
keys C-c
expect_exit "^C on the saved screen after reauth" 130
[ "$("$RECORDS" "$STORE" | grep -c '"customer":"Cust Tesla"')" = 1 ]
check $? "reauth: still one record for the customer"

start 80 24 -- --demo --store "$STORE" reauth "$ID"
wait_screen "Tesla: the customer approves" >/dev/null
keys C-c
expect_exit "^C on the reauth QR code" 130

# --- no demo, an empty configuration: what is not configured says how to fix it ---
: >"$TMP/empty.ini"
printf 'test passphrase\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
start 80 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" -- --config "$TMP/empty.ini" --store "$TMP/real"
wait_screen "Enphase Grid Services" >/dev/null
check $? "no demo: the start screen" "$SCREEN"
settle
ONELINE=$(printf '%s\n' "$SCREEN" | tr -s ' \n' '  ')
expect_in "no demo: Join cannot be used, with the key that enables it" \
	"Derapi Join (recommended: one link for every vendor) cannot be used. Derapi Join is not configured: set [derapi] client_id" \
	"$ONELINE"
expect_in "no demo: Enphase Grid Services (Join only) disabled with the reason" \
	"Enphase Grid Services (Derapi Join is not configured" "$ONELINE"
keys_text "Cust Real"
keys Enter
settle
expect_in "no demo: Tesla disabled with the config key that enables it" \
	"set client_id in [vendor.tesla]" "$SCREEN"
keys_text "solaredge"
wait_screen "1 of 6" >/dev/null
keys Enter
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
check $? "no demo: one usable method (the company account is not set up): no method screen" "$SCREEN"
expect_not_in "no demo: no demo credentials" "Demo:" "$SCREEN"
keys C-c
expect_exit "no demo: ^C on the form" 130

# --- no demo, a Derapi client ID without its secret: the command that sets it ---
printf '[derapi]\nclient_id = installer-app\n' >"$TMP/derapi.ini"
chmod 600 "$TMP/derapi.ini"
start 80 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" -- --config "$TMP/derapi.ini" --store "$TMP/real"
wait_screen "Enphase Grid Services" >/dev/null
settle
expect_in "no secret: Join disabled with the command that enables it" \
	"derenroll secret set derapi.client_secret" "$(printf '%s\n' "$SCREEN" | tr -s ' \n' '  ')"
keys C-c
expect_exit "no secret: ^C on the start screen" 130

# --- sign-in on this computer (loopback): o opens the browser ---
# A sandbox of its own without the relay, Tesla's redirect URI on loopback; the
# "browser" is a stand-in xdg-open that approves as the customer would.
"$DERENROLL" sandbox --listen 127.0.0.1:0 --write-config "$TMP/sb.ini" >"$TMP/sb.out" 2>&1 &
CLEANUP_PIDS="$CLEANUP_PIDS $!"
wait_file "$TMP/sb.out"
awk '/^\[relay\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' "$TMP/sb.ini" |
	sed '0,/^redirect_uri = .*/s||redirect_uri = http://127.0.0.1:1/callback|' >"$TMP/loopback.ini"
chmod 600 "$TMP/loopback.ini"
mkdir -p "$TMP/bin"
printf '#!/bin/sh\necho "$1" >"%s/opened"\nexec curl -s -o /dev/null -L "$1&sandbox_auto=approve"\n' \
	"$TMP" >"$TMP/bin/xdg-open"
chmod +x "$TMP/bin/xdg-open"
start 80 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" PATH="$TMP/bin:$PATH" -- \
	--config "$TMP/loopback.ini" --store "$TMP/real" --customer "Cust Loopback" --vendor tesla --method oauth
wait_screen "o open browser" >/dev/null
check $? "loopback: the QR screen offers to open this computer's browser" "$SCREEN"
expect_in "loopback: says where to sign in" "Sign in on this computer" "$SCREEN"
keys o
wait_screen "sites found" >/dev/null
check $? "loopback: xdg-open got the authorize URL and the listener took the answer" "$SCREEN"
expect_in "loopback: xdg-open was given the vendor's authorize URL" "/tesla/oauth2/v3/authorize?" \
	"$(cat "$TMP/opened" 2>/dev/null)"
keys C-c
expect_exit "loopback: ^C on the sites screen" 130

# --- the enrolled systems screen ---
wiz --
wait_screen "F2 enrolled systems" >/dev/null
keys F2
wait_screen "Enrolled systems" >/dev/null
check $? "systems: F2 opens the enrolled systems" "$SCREEN"
wait_screen "14 of 14" >/dev/null
check $? "systems: every record is listed" "$SCREEN"
keys_text "/Cust SE acct"
wait_screen "1 of 14" >/dev/null
check $? "systems: / filters" "$SCREEN"
keys Enter
expect_in "systems: the columns of derenroll list" "ID          STATUS    VENDOR     METHOD   DUE         CUSTOMER" "$SCREEN"
expect_in "systems: status, vendor, method, due, customer" \
	"ok        solaredge  account  -           Cust SE acct" "$SCREEN"
keys F5
wait_screen "checked ok" >/dev/null
check $? "systems: F5 checks now" "$SCREEN"
case "$(record "Cust SE acct")" in *'"last_check":{"at"'*'"result":"ok"'*) r=0 ;; *) r=1 ;; esac
check $r "systems: the check's result is saved" "$(record "Cust SE acct")"
keys Enter
wait_screen "customer                 Cust SE acct" >/dev/null
check $? "systems: Enter shows the record as show prints it" "$SCREEN"
expect_in "systems: with its sites" "sites" "$SCREEN"
keys C-r
wait_screen "(secrets shown)" >/dev/null
check $? "systems: ^R shows the secrets" "$SCREEN"
keys Escape
wait_screen "Enrolled systems" >/dev/null
keys F8
wait_screen "Remove " >/dev/null
check $? "systems: F8 asks to confirm" "$SCREEN"
keys y
wait_screen "Removed " >/dev/null
check $? "systems: y removes" "$SCREEN"
[ -z "$(record "Cust SE acct")" ]
check $? "systems: the record is gone from the store"
keys_text "/"
keys C-u
keys_text "Cust Solis acct"
wait_screen "1 of 13" >/dev/null
check $? "systems: ^U clears the filter, typing goes on filtering" "$SCREEN"
keys F7

wait_screen "Updated record" >/dev/null
check $? "systems: F7 re-authorizes (the company account: no customer needed)" "$SCREEN"
keys Enter
wait_screen "Enrolled systems" >/dev/null
check $? "systems: back to the list after the re-authorization" "$SCREEN"
# A token record: its secrets masked until ^R.
keys_text "/"
keys C-u
keys_text "Cust Tesla"
keys Enter
wait_screen "1 of 13" >/dev/null
keys Enter
wait_screen "customer                 Cust Tesla" >/dev/null
for _i in 1 2 3; do keys PageDown; done
wait_screen "access_token           ******** (^R shows it)" >/dev/null
check $? "systems: a token is masked, with the key that shows it" "$SCREEN"
keys C-r
wait_screen "(secrets shown)" >/dev/null
for _i in 1 2 3; do keys PageDown; done
settle
TOKEN_LINE=$(printf '%s\n' "$SCREEN" | grep ' access_token ')
case "$TOKEN_LINE" in *'********'* | '') r=1 ;; *) r=0 ;; esac
check $r "systems: ^R shows the token itself" "$SCREEN"
keys Escape
wait_screen "Enrolled systems" >/dev/null
keys C-c
expect_exit "^C on the systems screen" 130

# --- ^C on every other screen ---
wiz --
begin "Cust C" sma
wait_screen "SMA: how does the customer authorize?" >/dev/null
keys C-c
expect_exit "^C on the method screen" 130

wiz --
begin "Cust C" sma
wait_screen "SMA: how does the customer authorize?" >/dev/null
keys Down Down Enter
wait_screen "Demo: the sandbox's credentials" >/dev/null
keys Enter
wait_screen "SMA: waiting" >/dev/null
keys Escape
wait_screen "SMA: how does the customer authorize?" >/dev/null
check $? "Esc while waiting for the owner: cancelled, back to the method screen" "$SCREEN"
keys Enter
wait_screen "Demo: the sandbox's credentials" >/dev/null
keys Enter
wait_screen "SMA: waiting" >/dev/null
keys C-c
expect_exit "^C while waiting" 130

wiz --
begin "Cust C" solaredge
wait_screen "SolarEdge: how" >/dev/null
keys Down Enter
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
keys C-c
expect_exit "^C on the key form" 130

wiz --
begin "Cust C" solaredge
wait_screen "SolarEdge: how" >/dev/null
keys Down Down Enter
wait_screen "sites found" >/dev/null
keys C-c
expect_exit "^C on the sites screen" 130

wiz --
begin "Cust C" solaredge
wait_screen "SolarEdge: how" >/dev/null
keys Down Enter
wait_screen "SolarEdge: Customer's v2 API key" >/dev/null
keys Enter
wait_screen "sites found" >/dev/null
keys Enter
# Its one site is Cust SE's: asked first.
wait_screen "Replace it?" >/dev/null
check $? "a site another record holds: asked before replacing" "$SCREEN"
keys y
wait_screen "Enter: enroll another" >/dev/null
keys Enter
wait_screen "Customer reference" >/dev/null
check $? "saved: Enter enrolls another (the start screen)" "$SCREEN"
keys C-c
expect_exit "^C on the start screen after an enrollment" 130

finish
