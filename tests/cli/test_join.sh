#!/usr/bin/env bash
# derenroll join create-flow and derenroll enroll VENDOR --method join against
# `derenroll sandbox`, the customer played with curl. The sandbox is killed by
# the EXIT trap of lib.sh whatever happens.
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
plan 24

if ! command -v jq >/dev/null || ! command -v curl >/dev/null; then
	echo "Bail out! jq and curl are needed (packaging/setup.sh installs them)"
	exit 1
fi

CONF="$TMP/config.ini"
"$BIN" sandbox --listen 127.0.0.1:0 --write-config "$CONF" >"$TMP/line" 2>"$TMP/sandbox.err" &
CLEANUP_PIDS="$CLEANUP_PIDS $!"
for _ in $(seq 100); do
	[ -s "$TMP/line" ] && break
	sleep 0.1
done
URL=$(jq -r .url <"$TMP/line")
printf '\n[store]\npath = %s\nencryption = off\n' "$TMP/store" >>"$CONF"

# ---- no Derapi credentials: exit 2, naming what enables Join
printf '[relay]\nurl = %s/relay\n[store]\npath = %s\nencryption = off\n' "$URL" "$TMP/none-store" \
	>"$TMP/none.ini"
run "$BIN" --config "$TMP/none.ini" join create-flow --redirect-uri "$URL/relay/callback" --vendors tesla
expect_rc "create-flow without [derapi]" 2
expect_in "it names [derapi] client_id" "[derapi] client_id" "$ERR"
printf '[derapi]\nclient_id = someone\napi_url = %s/derapi\n' "$URL" >>"$TMP/none.ini"
run "$BIN" --config "$TMP/none.ini" join create-flow --redirect-uri "$URL/relay/callback" --vendors tesla
expect_rc "create-flow without the client secret" 2
expect_in "it names the secret command" "derenroll secret set derapi.client_secret" "$ERR"
run "$BIN" --config "$TMP/none.ini" enroll tesla --customer Ann --method join
expect_rc "enroll --method join without the client secret" 2

# ---- create-flow
run "$BIN" --config "$CONF" join create-flow --redirect-uri "$URL/relay/callback" --vendors tesla,sma --save
expect_rc "create-flow --save" 0
expect_one_line "it prints one line" "$OUT"
[[ "$OUT" =~ ^flow_[A-Za-z0-9_-]+$ ]]
check $? "the line is the flow ID" "$OUT"
FLOW=$OUT
grep -qxF "flow_id = $FLOW" "$CONF"
check $? "--save wrote [derapi] flow_id" "$(grep flow_id "$CONF")"
# ---- Tesla's flows name the company's stored credentials: [vendor.tesla] credentials_id
grep -v '^credentials_id' "$CONF" >"$TMP/nocreds.ini"
chmod 600 "$TMP/nocreds.ini"
run "$BIN" --config "$TMP/nocreds.ini" join create-flow --vendors tesla
expect_rc "create-flow for tesla without credentials_id" 2
expect_in "it names the key to set" "[vendor.tesla] credentials_id" "$ERR"
expect_one_line "in one line" "$ERR"
run "$BIN" --config "$TMP/nocreds.ini" join create-flow --vendors solis
expect_rc "solis needs no stored credentials" 0
run "$BIN" --config "$CONF" join create-flow --vendors tesla,nosuch
expect_rc "an unknown vendor" 2
run "$BIN" --config "$CONF" join frobnicate
expect_rc "an unknown sub-command" 2
run "$BIN" --config "$CONF" enroll tesla --customer Ann --method join --join-mode sometimes
expect_rc "a bad --join-mode" 2

# ---- enroll tesla --method join: the customer approves through the flow
"$BIN" --config "$CONF" enroll tesla --customer "Ann, job 7" --method join --json --timeout 60 \
	>"$TMP/enroll.out" 2>"$TMP/enroll.err" &
EPID=$!
CLEANUP_PIDS="$CLEANUP_PIDS $EPID"
for _ in $(seq 100); do
	[ -s "$TMP/enroll.out" ] && break
	sleep 0.1
done
LINK=$(head -n1 "$TMP/enroll.out")
expect_in "the first line is a relay short link" "$URL/relay/s/" "$LINK"
TARGET=$(curl -sS -o /dev/null -w '%{redirect_url}' "$LINK")
expect_in "it leads to the flow's authorize URL" "$URL/derapi/join/flows/$FLOW/authorize?vendor=tesla&state=" "$TARGET"
BACK=$(curl -sS -o /dev/null -w '%{redirect_url}' "$TARGET&sandbox_auto=approve")
expect_in "Derapi sends the phone to the relay" "$URL/relay/callback?state=" "$BACK"
curl -sS -o /dev/null "$BACK"
wait "$EPID"
RC=$?
ERR=$(cat "$TMP/enroll.err")
expect_rc "enroll --method join" 0
JSON=$(sed -n 2p "$TMP/enroll.out")
printf '%s' "$JSON" | jq -e '.method == "join" and .vendor == "tesla" and (.sites | length == 1)' >/dev/null
check $? "the record: tesla, join, one site" "$JSON"
printf '%s' "$JSON" | jq -e 'has("credentials") | not' >/dev/null
check $? "no credentials printed" "$JSON"
[ "${#LINK}" -lt 60 ]
check $? "the short link is short (a small QR code)" "$LINK"
expect_not_in "no token in the customer's link" "token" "$TARGET"

finish
