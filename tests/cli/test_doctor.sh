#!/usr/bin/env bash
# derenroll doctor against `derenroll sandbox`: the sandbox's config passes; a
# wrong SMA or relay secret fails naming what to fix; --json is valid; a vendor
# without settings is skipped; no secret reaches any output.
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
need_tools jq
plan 37

CONF="$TMP/config.ini"
start_sandbox "$BIN" "$CONF"
[ -s "$TMP/line" ] || { echo "Bail out! the sandbox did not start: $(cat "$TMP/sandbox.err")"; exit 1; }
printf '\n[store]\npath = %s\nencryption = off\n' "$TMP/store" >>"$CONF"

# Every secret of the config, for the leak checks below.
SECRETS=$(sed -n 's/^\(client_secret\|secret\|api_key\|key_secret\) *= *//p' "$CONF")
ALL_OUT=""

# ini_set FILE SECTION KEY VALUE: a copy of $CONF with that one value changed.
ini_set() {
	awk -v s="[$2]" -v k="$3" -v v="$4" '
		/^\[/ {in_s = ($0 == s)}
		in_s && $1 == k {print k " = " v; next}
		{print}' "$CONF" >"$1"
	chmod 600 "$1"
}

# ---- the sandbox's config: every check passes
run "$BIN" --config "$CONF" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "doctor on the sandbox's config" 0
expect_in "SMA's client credentials pass" "✓ sma: client credentials" "$OUT"
expect_in "Derapi's client credentials pass" "✓ derapi: client credentials" "$OUT"
expect_in "the relay passes" "✓ relay: relay" "$OUT"
expect_in "the SolarEdge account passes" "✓ solaredge: company account" "$OUT"
expect_in "Tesla's redirect URI is the relay's" "✓ tesla: redirect URI: the relay's" "$OUT"
expect_not_in "nothing fails" "✗" "$OUT"
expect_in "a vendor without settings is skipped" "- enphasevpp: skipped" "$OUT"

# ---- --json
run "$BIN" --config "$CONF" doctor --json
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "doctor --json" 0
printf '%s' "$OUT" | jq -e 'type == "array" and length > 5 and
	all(.[]; (.vendor | type) == "string" and (.check | type) == "string" and
		(.ok | type) == "boolean" and (.message | type) == "string")' >/dev/null
check $? "--json is an array of {vendor, check, ok, message}" "$OUT"
printf '%s' "$OUT" | jq -e '[.[] | select(.vendor == "enphasevpp")] | length == 1 and
	.[0].ok and .[0].skipped' >/dev/null
check $? "--json: the unconfigured vendor is skipped, not failed" "$OUT"

# ---- an unconfigured vendor is skipped, not failed
awk '/^\[/ {skip = ($0 == "[vendor.solis]")} !skip' "$CONF" >"$TMP/nosolis.ini"
chmod 600 "$TMP/nosolis.ini"
run "$BIN" --config "$TMP/nosolis.ini" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "without [vendor.solis]" 0
expect_in "solis is listed as skipped" "- solis: skipped: not configured" "$OUT"

# ---- a wrong SMA secret: one ✗ line naming [vendor.sma], exit 1
ini_set "$TMP/badsma.ini" vendor.sma client_secret not-the-sma-secret-4711
run "$BIN" --config "$TMP/badsma.ini" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "a wrong SMA client secret" 1
LINE=$(grep '^✗' <<<"$OUT")
expect_in "the ✗ line is SMA's client credentials" "✗ sma: client credentials" "$LINE"
expect_in "it names [vendor.sma]" "[vendor.sma]" "$LINE"
expect_one_line "only that check fails" "$LINE"
expect_not_in "the wrong secret is not printed" "not-the-sma-secret-4711" "$OUT$ERR"

# ---- a wrong relay secret
ini_set "$TMP/badrelay.ini" relay secret not-the-relay-secret-0123456789abcdef
run "$BIN" --config "$TMP/badrelay.ini" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "a wrong relay secret" 1
expect_in "the relay's ✗ line names [relay] secret" "✗ relay: relay: the relay refused our secret: check [relay] secret" "$OUT"

# ---- Tesla: the partner token and the registration per region, the public key
run "$BIN" --config "$CONF" doctor
expect_in "Tesla NA: partner token and registration" "✓ tesla: partner registration NA: partner token, and derenroll-sandbox.example registered in region na" "$OUT"
ini_set "$TMP/cn.ini" vendor.tesla regions "na eu cn"
run "$BIN" --config "$TMP/cn.ini" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "Tesla serving China, where the app is not registered" 1
expect_in "the CN ✗ line says how to register" "✗ tesla: partner registration CN: the app is not registered in region cn, so every call there answers 412: run derenroll tesla register --domain derenroll-sandbox.example --region cn" "$OUT"
expect_in "EU still passes" "✓ tesla: partner registration EU" "$OUT"
ini_set "$TMP/nokey.ini" vendor.tesla domain nokey.example
run "$BIN" --config "$TMP/nokey.ini" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "Tesla's public key not served" 1
expect_in "the public key ✗ line names the URL" "✗ tesla: public key:" "$OUT"
ini_set "$TMP/badtesla.ini" vendor.tesla client_secret not-the-tesla-secret-99
run "$BIN" --config "$TMP/badtesla.ini" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "a wrong Tesla client secret" 1
expect_in "the partner token fails naming [vendor.tesla]" "✗ tesla: partner registration NA" "$OUT"
expect_in "... and the settings to check" "[vendor.tesla]" "$(grep '^✗ tesla: partner registration NA' <<<"$OUT")"
expect_not_in "the wrong Tesla secret is not printed" "not-the-tesla-secret-99" "$OUT$ERR"

# ---- a SolarEdge v1 key or URL: SolarEdge answers 410
URL=$(jq -r .url <"$TMP/line")
# A config still pointing at a v1 base: every path but /v2/... answers 410.
awk -v u="$URL" '/^api_url = .*\/solaredge$/ {print "api_url = " u "/solaredge/v1"; next} {print}' \
	"$CONF" >"$TMP/v1.ini"
chmod 600 "$TMP/v1.ini"
run "$BIN" --config "$TMP/v1.ini" doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "a SolarEdge v1 URL" 1
expect_in "it says SolarEdge retired v1 and v1 keys are dead" "v1 keys do not work on v2" "$OUT"

# ---- --demo: the built-in sandbox's setup
run "$BIN" --demo doctor
ALL_OUT="$ALL_OUT$OUT$ERR"
expect_rc "--demo doctor" 0
expect_in "it checks the demo's SMA app" "✓ sma: client credentials" "$OUT"
expect_not_in "nothing fails in the demo" "✗" "$OUT"

# ---- usage
run "$BIN" --config "$CONF" doctor --frobnicate
expect_rc "an unknown option" 2

leaked=""
for s in $SECRETS; do
	case "$ALL_OUT" in *"$s"*) leaked="$leaked ${s:0:4}..." ;; esac
done
[ -z "$leaked" ] && [ -n "$SECRETS" ]
check $? "no secret of the config in any output" "leaked:$leaked"

finish
