#!/usr/bin/env bash
# derenroll sandbox: the config file it writes, the ONE line it prints, a real
# call against it, and a clean exit on SIGTERM. The server is killed by the
# EXIT trap of lib.sh whatever happens.
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
plan 25

need_tools jq curl

CONF="$TMP/sandbox dir/config.ini"
start_sandbox "$BIN" "$CONF"
PID=$SANDBOX_PID
LINE=$(cat "$TMP/line")

expect_one_line "one line on stdout" "$LINE"
printf '%s' "$LINE" | jq -e . >/dev/null 2>&1
check $? "the line is JSON" "$LINE"
URL=$(printf '%s' "$LINE" | jq -r .url)
[[ "$URL" =~ ^http://127\.0\.0\.1:[0-9]+$ ]]
check $? "url is http://127.0.0.1:PORT without a trailing slash" "$URL"
[ "$(printf '%s' "$LINE" | jq -r .config)" = "$CONF" ]
check $? "config names the file"
for field in solaredge.api_key solis.key_id solis.key_secret enphase_partner.access_token \
	enphase_partner.refresh_token enphase_partner.api_key sma.owner_email \
	solaredge_account.api_key; do
	printf '%s' "$LINE" | jq -e ".credentials.$field | type == \"string\" and length > 0" >/dev/null
	check $? "credentials.$field"
done
printf '%s' "$LINE" | jq -e '.credentials.solaredge_account.site_ids | length == 3' >/dev/null
check $? "credentials.solaredge_account.site_ids has three sites"

[ -f "$CONF" ] && [ "$(stat -c %a "$CONF")" = 600 ]
check $? "the config file is mode 0600" "$(ls -l "$CONF" 2>&1)"
grep -qxF "api_url = $URL/tesla" "$CONF"
check $? "the config points Tesla at the sandbox"
grep -qxF "auth_url = $URL/derapi/oauth2/token" "$CONF"
check $? "the config points Derapi at the sandbox"

# A real call: the printed SolarEdge key lists its one site.
KEY=$(printf '%s' "$LINE" | jq -r .credentials.solaredge.api_key)
run curl -sS -H "X-API-Key: $KEY" "$URL/solaredge/v2/sites"
expect_rc "curl the SolarEdge sites" 0
printf '%s' "$OUT" | jq -e '.sites.count == 1 and (.sites.site | length == 1) and (.sites.site[0].siteId | type == "number")' >/dev/null
check $? "one site with a siteId, in v2's {sites: {count, site}} shape" "$OUT"

# A customer approving a Tesla link, as a script would.
CLIENT=$(sed -n '/^\[vendor.tesla\]/,/^\[/s/^client_id = //p' "$CONF")
run curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' \
	"$URL/tesla/oauth2/v3/authorize?response_type=code&client_id=$CLIENT&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&scope=openid&state=s1&sandbox_auto=approve"
expect_in "the approved link redirects with a code" "302 http://127.0.0.1:9/callback?code=" "$OUT"
expect_in "and the state" "&state=s1" "$OUT"

kill -TERM "$PID"
for _ in $(seq 100); do
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
wait "$PID"
RC=$?
expect_rc "SIGTERM stops it" 0
expect_one_line "still one line after the exit" "$(cat "$TMP/line")"

run "$BIN" sandbox --listen 0.0.0.0:0
expect_rc "a non-loopback address is refused" 2
expect_in "the refusal says loopback" "loopback" "$ERR"
[ -z "$OUT" ]
check $? "nothing on stdout when refused" "$OUT"

finish
