#!/usr/bin/env bash
# Tesla's regions and the company's registration against the real
# `derenroll sandbox`: an EU customer enrolls and is checked in the EU,
# `show`/`list --json` name the region, a region where the app is not
# registered answers 412 with the command that fixes it, and
# `derenroll tesla register` registers it (or says plainly why not).
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
plan 23

need_tools jq curl

CONF="$TMP/config.ini"
start_sandbox "$BIN" "$CONF"
URL=$(jq -r .url "$TMP/line")
printf 'correct horse\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
export DERENROLL_PASSPHRASE_FILE="$TMP/pass"
D() { "$BIN" --config "$CONF" "$@"; }
id_of() { jq -r --arg c "$1" '.[] | select(.customer == $c) | .id' <<<"$(D list --json)"; }

# enroll_tesla CUSTOMER REGION: `derenroll enroll tesla`, the customer approving
# with an account of REGION on "their phone"; the exit code in $RC, stderr in $ERR.
enroll_tesla() {
	# A bounded wait: on a loaded machine the link may come late, and an
	# enrollment nobody answers must not hang the suite.
	D enroll tesla --customer "$1" --timeout 60 >"$TMP/enroll.out" 2>"$TMP/enroll.err" &
	local pid=$! auth callback
	CLEANUP_PIDS="$CLEANUP_PIDS $pid"
	for _ in $(seq 600); do
		[ -s "$TMP/enroll.out" ] && break
		sleep 0.1
	done
	auth=$(curl -sS -o /dev/null -w '%{redirect_url}' "$(head -n1 "$TMP/enroll.out")")
	callback=$(curl -sS -o /dev/null -w '%{redirect_url}' \
		"$auth&sandbox_auto=approve&sandbox_region=$2")
	curl -sS -o /dev/null "$callback"
	wait "$pid"
	RC=$?
	ERR=$(cat "$TMP/enroll.err")
}

# ---- the sandbox config names every region's host
grep -qxF "api_url_eu = $URL/tesla/eu" "$CONF"
check $? "the sandbox config sets api_url_eu" "$(cat "$CONF")"
grep -qxF "api_url_cn = $URL/tesla/cn" "$CONF"
check $? "the sandbox config sets api_url_cn"

# ---- an EU customer
enroll_tesla "Elsa Ek" eu
[ "$RC" = 0 ]
check $? "an EU customer enrolls" "$ERR"
EU=$(id_of "Elsa Ek")
run D show "$EU"
expect_rc "show the EU record" 0
expect_in "show names the region" "region                   eu" "$OUT"
run D list --json
jq -e --arg id "$EU" '.[] | select(.id == $id) | .region == "eu"' <<<"$OUT" >/dev/null
check $? "list --json has region eu" "$OUT"

# Its refresh and check go to the EU host: with NA's host unreachable they still work.
cp "$CONF" "$TMP/eu-only.ini"
sed -i "s|^api_url = $URL/tesla\$|api_url = http://127.0.0.1:9/no-na|" "$TMP/eu-only.ini"
grep -q "no-na" "$TMP/eu-only.ini"
check $? "a config whose NA host is unreachable"
run "$BIN" --config "$TMP/eu-only.ini" refresh "$EU" --json
expect_rc "refresh of the EU record" 0
jq -e '.[0].refreshed == true and .[0].error == null' <<<"$OUT" >/dev/null
check $? "the EU record was refreshed and checked in the EU" "$OUT $ERR"
run "$BIN" --config "$TMP/eu-only.ini" status "$EU" --json
expect_rc "status of the EU record" 0

# ---- a region where the app is not registered: 412, and how to fix it
enroll_tesla "Chen Wei" cn
[ "$RC" != 0 ]
check $? "a CN customer cannot enroll before the app is registered in CN" "$ERR"
expect_in "the 412 names the command" "derenroll tesla register --domain" "$ERR"

# ---- derenroll tesla register
run D tesla --help
expect_rc "tesla --help" 0
expect_in "--help names register" "tesla register --domain DOMAIN" "$OUT"
run D tesla register --region cn
expect_rc "register without --domain" 2
run D tesla register --domain nokey.example --region cn
[ "$RC" != 0 ]
check $? "a domain that serves no public key fails" "$OUT $ERR"
expect_in "with a clear ✗ line" "✗ public key: the app's public key is not served at $URL/tesla/_domains/nokey.example/" "$OUT"
run D tesla register --domain installer.example --region cn \
	--key-url "$URL/tesla/_domains/nokey.example/.well-known/appspecific/com.tesla.3p.public-key.pem"
[ "$RC" != 0 ]
check $? "--key-url is where the key is checked" "$OUT $ERR"
run D tesla register --domain installer.example --region cn
expect_rc "register in CN" 0
expect_in "the key is served" "✓ public key served at $URL/tesla/_domains/installer.example/" "$OUT"
expect_in "registered in CN" "✓ installer.example is registered in region cn" "$OUT"
enroll_tesla "Chen Wei" cn
[ "$RC" = 0 ]
check $? "the CN customer enrolls once the app is registered" "$ERR"
run D tesla register --domain derenroll-sandbox.example --region eu
expect_rc "register again where it is registered" 0

finish
