#!/usr/bin/env bash
# derenroll enroll against the real `derenroll sandbox`: every key method from
# files, --json, the exit codes, the OAuth link on the first line with curl
# playing the customer, Enphase's code through stdin, and no secret in the
# output or in argv. The sandbox is killed by the EXIT trap of lib.sh.
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
plan 88

for tool in jq curl; do
	command -v "$tool" >/dev/null && continue
	echo "Bail out! $tool is needed (packaging/setup.sh --tests installs it)"
	exit 1
done

# Waits (30 s at most) until FILE has a line; prints the first.
first_line() {
	for _ in $(seq 300); do
		grep -q . "$1" 2>/dev/null && break
		sleep 0.1
	done
	head -n 1 "$1" 2>/dev/null
}

CONF="$TMP/config.ini"
STORE="$TMP/store"
"$BIN" sandbox --listen 127.0.0.1:0 --write-config "$CONF" >"$TMP/line" 2>"$TMP/sandbox.err" &
CLEANUP_PIDS="$CLEANUP_PIDS $!"
LINE=$(first_line "$TMP/line")
URL=$(printf '%s' "$LINE" | jq -r .url 2>/dev/null)
case "$URL" in http://127.0.0.1:*) ;; *)
	echo "Bail out! the sandbox did not start: $(cat "$TMP/sandbox.err")"
	exit 1
	;;
esac
cred() { printf '%s' "$LINE" | jq -r ".credentials.$1"; }

printf 'passphrase for the enroll tests\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
export DERENROLL_PASSPHRASE_FILE="$TMP/pass"
# Small scrypt parameters are not settable from the CLI: the store is created
# once, then reused.
D() { "$BIN" --config "$CONF" --store "$STORE" "$@"; }

# Secret files, mode 0600.
secret() {
	printf '%s\n' "$2" >"$TMP/$1"
	chmod 600 "$TMP/$1"
}
SE_KEY="CUSTOMERKEY$RANDOM$RANDOM"
SOLIS_SECRET=$(cred solis.key_secret)
P_TOKEN=$(cred enphase_partner.access_token)
P_REFRESH=$(cred enphase_partner.refresh_token)
P_KEY=$(cred enphase_partner.api_key)
secret se_key "$SE_KEY"
secret solis_secret "$SOLIS_SECRET"
secret p_token "$P_TOKEN"
secret p_refresh "$P_REFRESH"
secret p_key "$P_KEY"
: >"$TMP/empty"
chmod 600 "$TMP/empty"
ALL_OUT="$TMP/all-output"
: >"$ALL_OUT"
keep() { printf '%s\n%s\n' "$OUT" "$ERR" >>"$ALL_OUT"; }

# The store file's checksum: a failure writes nothing.
store_sum() { cksum <"$STORE"; }

# ---- key methods ----
run D enroll solaredge --customer "Hal, job 1" --api-key-file "$TMP/se_key" --json
keep
expect_rc "solaredge key" 0
printf '%s' "$OUT" | jq -e '.vendor == "solaredge" and .method == "key" and
	.customer == "Hal, job 1" and (.sites | length == 1) and (.id | length == 10) and
	.status == "ok" and .refresh_expires_at == null and .last_check.result == "ok"' >/dev/null
check $? "--json: id, vendor, method, customer, sites, status, last_check" "$OUT"
expect_not_in "--json holds no credentials" "credentials" "$OUT"

HAL_ID=$(printf '%s' "$OUT" | jq -r .id)
HAL_SITE=$(printf '%s' "$OUT" | jq -r '.sites[0].id')
run D enroll solaredge --customer "Hal again" --api-key-file "$TMP/se_key" --json
keep
expect_rc "another customer's site is not taken silently" 2
expect_in "it says whose the site is" "(enrolled already: Hal, job 1)" "$ERR"
run D enroll solaredge --customer "Hal again" --api-key-file "$TMP/se_key" --site "$HAL_SITE" \
	--json
keep
expect_rc "the same site again, confirmed with --site" 0
printf '%s' "$OUT" | jq -e --arg id "$HAL_ID" '.id == $id and .customer == "Hal again"' >/dev/null
check $? "the same record is updated" "$OUT"

run D reauth "$HAL_ID" --api-key-file "$TMP/se_key"
keep
expect_rc "reauth with the same key" 0
expect_in "says it updated the record" "Updated $HAL_ID" "$OUT"
run D reauth NOSUCHID00 --api-key-file "$TMP/se_key"
expect_rc "reauth of an unknown record" 2
# Another customer's key reaches other sites: a person is needed (exit 1), not a usage error.
secret se_key2 "CUSTOMERKEY2$RANDOM$RANDOM"
run D reauth "$HAL_ID" --api-key-file "$TMP/se_key2"
keep
expect_rc "reauth with another account's key" 1
expect_in "says it looks like another account" "another account" "$ERR"

run D enroll solis --customer Ida --key-id demo-4242424 --key-secret-file "$TMP/solis_secret"
keep
expect_rc "solis key" 0
expect_in "a line naming the record" "Enrolled" "$OUT"

run D enroll enphase --method partner --customer Gina --token-file "$TMP/p_token" \
	--refresh-token-file "$TMP/p_refresh" --api-key-file "$TMP/p_key"
keep
expect_rc "enphase partner with several sites and no --site" 2
SITE=$(printf '%s' "$ERR" | sed -n 's/^  \([0-9][0-9]*\) .*/\1/p' | sed -n 2p)
[ -n "$SITE" ] && [ "$(printf '%s' "$ERR" | grep -c '^  [0-9]')" = 3 ]
check $? "the three sites are listed on stderr" "$ERR"
run D enroll enphase --method partner --customer Gina --token-file "$TMP/p_token" \
	--refresh-token-file "$TMP/p_refresh" --api-key-file "$TMP/p_key" --site "$SITE" --json
keep
expect_rc "enphase partner with --site" 0
[ "$(printf '%s' "$OUT" | jq -r '.sites[0].id')" = "$SITE" ]
check $? "the chosen site is saved" "$OUT"

ACCOUNT_SITE=$(cred 'solaredge_account.site_ids[2]')
run D enroll solaredge --method account --customer Jo
keep
expect_rc "solaredge account without --site" 2
expect_in "its sites are listed" "$ACCOUNT_SITE" "$ERR"
run D enroll solaredge --method account --customer Jo --site "$ACCOUNT_SITE" --json
keep
expect_rc "solaredge account with --site" 0
printf '%s' "$OUT" | jq -e --arg s "$ACCOUNT_SITE" '.method == "account" and .sites[0].id == $s' \
	>/dev/null
check $? "the account record holds the site" "$OUT"

# One customer, two sites of the account: a record each, one JSON line each.
S0=$(cred 'solaredge_account.site_ids[0]')
S1=$(cred 'solaredge_account.site_ids[1]')
run D enroll solaredge --method account --customer "Two sites" --site "$S0" --site "$S1" --json
keep
expect_rc "solaredge account with two --site" 0
printf '%s' "$OUT" | jq -s -e --arg a "$S0" --arg b "$S1" \
	'length == 2 and .[0].sites[0].id == $a and .[1].sites[0].id == $b and
	 .[0].id != .[1].id and all(.[]; .customer == "Two sites" and (.sites | length) == 1)' \
	>/dev/null
check $? "two records, one site each, for the one customer" "$OUT"
run D list --json
printf '%s' "$OUT" | jq -e '[.[] | select(.customer == "Two sites")] | length == 2' >/dev/null
check $? "both are in the store" "$OUT"

secret open_key "OTHERKEY$RANDOM$RANDOM"
chmod 644 "$TMP/open_key"
run D enroll solaredge --customer Kim --api-key-file "$TMP/open_key"
keep
expect_rc "a key file others can read still works" 0
expect_in "with a warning" "chmod 600" "$ERR"

SUM_BEFORE=$(store_sum)

# ---- refusals ----
secret bad_key "invalidKEY0001"
run D enroll solaredge --customer Lee --api-key-file "$TMP/bad_key"
keep
expect_rc "a refused SolarEdge key" 1
expect_in "says where v2 keys are made" "developer.solaredge.com" "$ERR"

run D enroll solis --customer Lee --key-id demo-noapi-1 --key-secret-file "$TMP/solis_secret"
keep
expect_rc "Solis without API access" 1
expect_in "says to ask Solis support" "Solis support" "$ERR"

run D enroll sma --method email --customer Max --owner-email decline-max@example.com
keep
expect_rc "the owner declines SMA's e-mail" 1

curl -sS -o /dev/null -X POST -d '{"vendor":"solaredge","kind":"500","count":1}' \
	"$URL/_sandbox/faults"
run D enroll solaredge --customer Ned --api-key-file "$TMP/se_key"
keep
expect_rc "a 500 on the check" 3

run D enroll acme --customer Ned
expect_rc "an unknown vendor" 2
expect_in "the vendors are named" "solaredge" "$ERR"
run D enroll tesla --method key --customer Ned
expect_rc "a method the vendor lacks" 2
expect_in "its methods are listed" "oauth, join" "$ERR"
run D enroll enphasevpp --method oauth --customer Ned
expect_rc "enphasevpp oauth" 2
expect_in "only through Derapi Join" "only through Derapi Join" "$ERR"
run D enroll solaredge --api-key-file "$TMP/se_key"
expect_rc "no --customer" 2
run D enroll solaredge --customer Ned --api-key-file "$TMP/no-such-file"
expect_rc "an unreadable secret file" 2
run D enroll solaredge --customer Ned --api-key-file "$TMP/empty"
expect_rc "an empty secret file" 2
run D enroll tesla --customer Ned --code 12345
expect_rc "--code with a value" 2
expect_not_in "the value is not echoed" "12345" "$ERR"
[ "$(store_sum)" = "$SUM_BEFORE" ]
check $? "nothing was saved by a failure"

# ---- OAuth: the link, then curl plays the customer ----
# The redirect target of a GET.
location() { curl -sS -o /dev/null -w '%{redirect_url}' "$1"; }

# enroll_bg NAME ARGS...: `derenroll enroll ARGS` in the background, stdin from the
# FIFO $TMP/NAME.in (held open on fd 3 for type_in), output to $TMP/NAME.*;
# sets EPID and LINK (its first line of output).
enroll_bg() {
	local name=$1
	shift
	mkfifo "$TMP/$name.in"
	"$BIN" --config "$CONF" --store "$STORE" enroll "$@" <"$TMP/$name.in" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" &
	EPID=$!
	CLEANUP_PIDS="$CLEANUP_PIDS $EPID"
	exec 3>"$TMP/$name.in"
	LINK=$(first_line "$TMP/$name.out")
}
# type_in TEXT: a line on the background command's stdin, then end of input.
type_in() {
	printf '%s\n' "$1" >&3
	exec 3>&-
}
# bg_done NAME: waits for it; sets RC, OUT, ERR.
bg_done() {
	exec 3>&-
	wait "$EPID"
	RC=$?
	OUT=$(cat "$TMP/$1.out")
	ERR=$(cat "$TMP/$1.err")
	keep
}

enroll_bg tesla tesla --customer "Olga" --json
[[ "$LINK" =~ ^http://127\.0\.0\.1:[0-9]+/relay/s/[A-Za-z0-9_-]+$ ]]
check $? "the first stdout line is the short link, alone" "$LINK"
ARGS=$(ps -o args= -p "$EPID" 2>/dev/null)
expect_in "ps shows the waiting enroll" "enroll tesla" "$ARGS"
AUTHZ=$(location "$LINK")
curl -sS -o /dev/null "$(location "$AUTHZ&sandbox_auto=approve&sandbox_account=olga")"
bg_done tesla
expect_rc "tesla oauth through the relay" 0
[ "$(printf '%s\n' "$OUT" | sed -n 2p | jq -r '.vendor + " " + .method')" = "tesla oauth" ]
check $? "then the record as JSON" "$OUT"
REFRESH_AT=$(printf '%s\n' "$OUT" | sed -n 2p | jq -r .refresh_expires_at)
[ "$(date -u -d "$REFRESH_AT" +%s)" -gt "$(($(date +%s) + 89 * 86400))" ]
check $? "the refresh token lasts 90 days" "$REFRESH_AT"

enroll_bg deny tesla --customer Pam
curl -sS -o /dev/null "$(location "$(location "$LINK")&sandbox_auto=deny")"
bg_done deny
expect_rc "the customer declines" 1

run D enroll tesla --customer Pia --timeout 1
expect_rc "nobody answers the link in time" 1
expect_in "the link expired" "expired" "$ERR"

# On a terminal, stderr also gets the link as a QR code (script(1) gives the pty).
if command -v script >/dev/null; then
	LC_ALL=C.UTF-8 script -qec "'$BIN' --config '$CONF' --store '$STORE' enroll tesla \
		--customer Wes >'$TMP/qr.out'" /dev/null >"$TMP/qr.tty" 2>&1 </dev/null &
	EPID=$!
	CLEANUP_PIDS="$CLEANUP_PIDS $EPID"
	LINK=$(first_line "$TMP/qr.out")
	AUTHZ=$(location "$LINK")
	curl -sS -o /dev/null "$(location "$AUTHZ&sandbox_auto=approve&sandbox_account=wes")"
	wait "$EPID"
	RC=$?
	ERR=$(cat "$TMP/qr.tty")
	expect_rc "tesla oauth with stderr on a terminal" 0
	[ "$(grep -c $'\u2580\|\u2584\|\u2588' "$TMP/qr.tty")" -ge 10 ]
	check $? "the QR code is drawn on the terminal" "$(head -c 300 "$TMP/qr.tty")"
	! grep -q $'\u2580\|\u2584\|\u2588' "$TMP/tesla.err" "$TMP/tesla.out"
	check $? "and not when stderr is a file"
else
	check 0 "# SKIP script(1) is missing"
	check 0 "# SKIP script(1) is missing"
	check 0 "# SKIP script(1) is missing"
fi

# Enphase: the code from Enphase's page, typed in on stdin.
enroll_bg enphase enphase --customer Dan --json
PAGE=$(location "$(location "$LINK")&sandbox_auto=approve")
CODE=$(curl -sS "$PAGE" | sed -n 's/.*id="code">\([^<]*\)<.*/\1/p')
type_in "$CODE"
bg_done enphase
expect_rc "enphase oauth with the code on stdin" 0
expect_in "the link is the relay's short link, like every vendor's" "/relay/s/" \
	"$(printf '%s\n' "$OUT" | head -n 1)"
printf '%s\n' "$OUT" | sed -n 2p | jq -e '.vendor == "enphase" and (.sites | length == 1)' \
	>/dev/null
check $? "the Enphase record" "$OUT"
expect_not_in "the code is not echoed" "$CODE" "$OUT$ERR"

# Tesla with --code -: the final address pasted on stdin instead of the relay.
enroll_bg paste tesla --customer Quinn --code -
type_in "$(location "$LINK&sandbox_auto=approve&sandbox_account=quinn")"
bg_done paste
expect_rc "tesla with the address pasted on stdin (--code -)" 0
expect_in "the link is Tesla's authorize page" "/tesla/oauth2/v3/authorize?" "$LINK"

# A secret read from stdin ('-').
run sh -c 'printf "%s\n" "$1" | "$2" --config "$3" --store "$4" enroll solaredge \
	--customer Rob --api-key-file - --json' sh "STDINKEY$RANDOM$RANDOM" "$BIN" "$CONF" "$STORE"
keep
expect_rc "an API key from stdin" 0

# ---- SMA e-mail: the app's token sees the plants of every owner who consented ----
run D enroll sma --method email --customer Olga --owner-email owner-olga@example.com
keep
expect_rc "SMA e-mail: the first owner's one plant is enrolled" 0
run D enroll sma --method email --customer Pia --owner-email owner-pia@example.com
keep
expect_rc "SMA e-mail: two plants seen, so the installer chooses (nothing picked silently)" 2
expect_in "the listing counts the plants no record holds" "2 sites (1 not enrolled yet)" "$ERR"
# The plants follow the line that counts them (progress lines come before).
FIRST=$(printf '%s\n' "$ERR" | sed -n '/lists 2 sites/{n;p;q}')
SECOND=$(printf '%s\n' "$ERR" | sed -n '/lists 2 sites/{n;n;p;q}')
expect_in "the wait said what it was doing" "SMA e-mailed owner-pia@example.com: waiting for the owner to approve" "$ERR"
if command -v script >/dev/null; then
	LC_ALL=C.UTF-8 script -qec "'$BIN' --config '$CONF' --store '$STORE' enroll sma --method \
		email --customer Tia --owner-email owner-tia@example.com >'$TMP/sma.out'" /dev/null \
		>"$TMP/sma.tty" 2>&1 </dev/null
	grep -q '[0-9]:[0-5][0-9] left' "$TMP/sma.tty"
	check $? "on a terminal, the wait counts down the time the owner has" "$(cat -v "$TMP/sma.tty")"
else
	check 0 "# SKIP script(1) is not installed"
fi
expect_not_in "the plant no record holds comes first" "enrolled already" "$FIRST"
expect_in "Olga's plant comes second, named as hers" "(enrolled already: Olga)" "$SECOND"
PIA_PLANT=$(printf '%s' "$FIRST" | awk '{print $1}')
run D enroll sma --method email --customer Pia --owner-email owner-pia@example.com \
	--site "$PIA_PLANT" --json
keep
expect_rc "SMA e-mail: Pia's plant, confirmed with --site (SMA answers 409: consented before)" 0
expect_in "the record is Pia's" '"customer":"Pia"' "$OUT"
run D enroll sma --method email --customer Quinn --owner-email expire-quinn@example.com
keep
expect_rc "SMA e-mail: a request that lapsed" 1
expect_in "says it expired and what to do" "expired: send it again" "$ERR"

# ---- a provider as strict as the OAuth standards (POST /_sandbox/settings) ----
settings() { curl -sS -o /dev/null -w '%{http_code}' -X POST -d "$1" "$URL/_sandbox/settings"; }
# strict_tesla NAME ACCOUNT [ENROLL ARGS]: an enrollment the customer approves.
strict_tesla() {
	local name=$1 account=$2
	shift 2
	enroll_bg "$name" tesla --customer "Strict $account" "$@"
	curl -sS -o /dev/null "$(location "$(location "$LINK")&sandbox_auto=approve&sandbox_account=$account")"
	bg_done "$name"
}
[ "$(settings '{"refresh_needs_consent": 1}')" = 200 ]
check $? "the sandbox takes refresh_needs_consent"
before=$(store_sum)
strict_tesla consent1 sven
expect_rc "no refresh token without prompt=consent: the app's setup (exit 2)" 2
expect_in "enroll says what to set" "set [vendor.tesla] authorize_params = prompt=consent" "$ERR"
expect_not_in "and never says it enrolled" "Saved" "$OUT$ERR"
[ "$(store_sum)" = "$before" ]
check $? "nothing was stored"
printf '[vendor.tesla]\nauthorize_params = prompt=consent\n' >>"$CONF"
strict_tesla consent2 sven --json
expect_rc "with authorize_params = prompt=consent it enrolls" 0
printf '%s\n' "$OUT" | sed -n 2p | jq -e '.refresh_expires_at != null' >/dev/null
check $? "and the record has its refresh token's expiry" "$OUT"
[ "$(settings '{"refresh_needs_consent": 0, "iss": 2}')" = 200 ]
check $? "the sandbox sends another vendor's iss"
strict_tesla mixup tara
expect_rc "a mix-up (SMA's iss on Tesla's answer) is refused: start again (exit 1)" 1
expect_in "and says so" "the answer came from another sign-in server" "$ERR"
[ "$(settings '{"iss": 0, "id_token": 2}')" = 200 ]
check $? "the sandbox signs id_tokens with another key"
strict_tesla forged tara
expect_rc "a forged id_token fails the enrollment: start again (exit 1)" 1
expect_in "and says why" "signature matches no key" "$ERR"
settings '{"id_token": 0}' >/dev/null

# ---- no secret anywhere in what was printed, nor in argv ----
LEAK=0
for s in "$SE_KEY" "$SOLIS_SECRET" "$P_TOKEN" "$P_REFRESH" "$P_KEY" \
	$(sed -n 's/^\(client_secret\|api_key\|key_secret\|secret\) = //p' "$CONF"); do
	if grep -qF -- "$s" "$ALL_OUT"; then
		LEAK=1
		echo "# printed: ${s:0:6}..."
	fi
	case "$ARGS" in *"$s"*)
		LEAK=1
		echo "# in argv: ${s:0:6}..."
		;;
	esac
done
check $LEAK "no secret in any stdout, stderr or the waiting process's argv"

finish
