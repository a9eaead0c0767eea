#!/usr/bin/env bash
# What reaches a terminal is text: vendors' site names, customer references and
# vendor messages with escape sequences are printed in their visible form
# ("\x1b", "\u009b") by enroll, list and show; --json is valid UTF-8 whatever
# bytes the store holds; customer references are checked when entered.
# The vendor is a hostile SolarEdge on loopback (text_vendor.py); the store is
# plain JSON so that the test can write hostile bytes into it.
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
plan 35

need_tools python3 jq

python3 "$(dirname "$0")/text_vendor.py" >"$TMP/port" 2>"$TMP/vendor.err" &
CLEANUP_PIDS="$CLEANUP_PIDS $!"
wait_for_output "$TMP/port"
PORT=$(head -n1 "$TMP/port")
CONF="$TMP/config.ini"
STORE="$TMP/plain/store"
printf '[store]\npath = %s\nencryption = off\n[vendor.solaredge]\napi_url = http://127.0.0.1:%s\n[vendor.solis]\napi_url = http://127.0.0.1:%s\n' \
	"$STORE" "$PORT" "$PORT" >"$CONF"
D() { "$BIN" --config "$CONF" "$@"; }
printf 'hostilekey01' >"$TMP/key"
chmod 600 "$TMP/key"

# safe NAME FILE: no control character but newline, no C1 control, valid UTF-8.
safe() {
	python3 - "$2" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read()
try:
    text = data.decode("utf-8")
except UnicodeDecodeError as e:
    sys.exit("not UTF-8: %s" % e)
bad = re.findall("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
sys.exit("raw control characters: %r" % bad if bad else 0)
PY
	check $? "$1" "$(cat "$2")"
}

# valid_json NAME FILE: parses as JSON from valid UTF-8.
valid_json() {
	python3 -c 'import json, sys; json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))' "$2" \
		2>"$TMP/json.err"
	check $? "$1" "$(cat "$TMP/json.err"; head -c 2000 "$2")"
}

# ---- enroll: the vendor's site name
D enroll solaredge --customer "Ann Adams" --api-key-file "$TMP/key" >"$TMP/out" 2>"$TMP/err"
RC=$?; ERR=$(cat "$TMP/err")
expect_rc "enroll a site with a hostile name" 0
safe "enroll: no raw control character on stdout" "$TMP/out"
expect_in "enroll shows the escape sequences visibly" 'Evil\x1b]0;pwned\x07 \x1b[2J\x0dHome\x07\u009b31m' "$(cat "$TMP/out")"
ID=$(jq -r '.[0].id' <<<"$(D list --json 2>/dev/null)")

D enroll solaredge --customer "Bob Brown" --api-key-file "$TMP/key" >"$TMP/out" 2>"$TMP/err"
RC=$?; ERR=$(cat "$TMP/err")
expect_rc "the site is held by another customer: a choice" 2
safe "enroll's site list: no raw control character" "$TMP/err"
expect_in "enroll's site list shows the name visibly" 'Evil\x1b]0;pwned\x07' "$ERR"

D enroll solaredge --customer "Ann Adams" --site "$(printf '99\302\233c')" --api-key-file "$TMP/key" \
	>"$TMP/out" 2>"$TMP/err"
RC=$?
safe "an error naming what the user typed: no raw C1 control" "$TMP/err"
expect_in "the error shows it visibly" '99\u009bc' "$(cat "$TMP/err")"

# ---- a vendor's message
run D enroll solis --customer "Cy Chen" --key-id demo-text-1 --key-secret-file "$TMP/key"
expect_rc "Solis refuses the key" 1
safe "the vendor's message reaches the terminal without a raw control character" "$TMP/err"
expect_in "it shows the message visibly" 'Denied' "$ERR"
expect_in "the C1 CSI and the bidi override visibly" '\u009b2J\u202eevil' "$ERR"

# ---- customer references are checked when entered
run D enroll solaredge --customer "$(printf 'Eve\033]0;pwned\007')" --api-key-file "$TMP/key"
expect_rc "a customer reference with an escape sequence is refused" 2
expect_in "it says why" "control characters are not allowed" "$ERR"
safe "the refusal prints no raw control character" "$TMP/err"
run D enroll solaredge --customer "$(printf 'Eve\r')" --api-key-file "$TMP/key"
expect_rc "a customer reference with a CR is refused" 2
run D enroll solaredge --customer "$(printf 'Eve\377')" --api-key-file "$TMP/key"
expect_rc "a customer reference that is not UTF-8 is refused" 2
expect_in "it says so" "not valid UTF-8" "$ERR"
run D enroll solaredge --customer "$(printf 'é%.0s' $(seq 201))" --api-key-file "$TMP/key"
expect_rc "a customer reference of 201 characters is refused" 2
expect_in "it gives the limit" "at most 200" "$ERR"
run "$BIN" --config "$CONF" --store "$TMP/other/store" enroll solaredge \
	--customer "$(printf 'é%.0s' $(seq 200))" --api-key-file "$TMP/key"
expect_rc "200 characters are accepted" 0

# ---- list and show: what the store holds (written here, as a damaged or old store might)
python3 - "$STORE" "$ID" <<'PY'
import json, sys
path, rid = sys.argv[1], sys.argv[2]
lines = open(path, "rb").read().split(b"\n")
for i, line in enumerate(lines):
    if not line.startswith(b"{") or b'"customer"' not in line:
        continue
    rec = json.loads(line)
    if rec.get("id") != rid:
        continue
    rec["customer"] = "Ann\x1b]0;pwned\x07\x1b[2J\r\x9b"
    rec["sites"][0]["name"] = "BADUTF8"
    rec["last_check"]["message"] = "vendor says \x1b[31mred\x1b[0m\x07"
    line = json.dumps(rec, ensure_ascii=False).encode()
    lines[i] = line.replace(b"BADUTF8", b"Caf\xe9 \xff\xfe\x9b1J \xc3")
open(path, "wb").write(b"\n".join(lines))
PY
D list >"$TMP/out" 2>"$TMP/err"
safe "list: no raw control character" "$TMP/out"
expect_in "list shows the customer's escape sequences visibly" 'Ann\x1b]0;pwned\x07' "$(cat "$TMP/out")"
[ "$(awk '{ if (length($0) > 80) n++ } END { print n + 0 }' "$TMP/out")" = 0 ]
check $? "list still fits 80 columns" "$(cat "$TMP/out")"
D show "$ID" >"$TMP/out" 2>"$TMP/err"
safe "show: no raw control character, valid UTF-8" "$TMP/out"
expect_in "show: the customer visibly" 'Ann\x1b]0;pwned\x07\x1b[2J\x0d\u009b' "$(cat "$TMP/out")"
expect_in "show: the vendor's message visibly" 'vendor says \x1b[31mred\x1b[0m\x07' "$(cat "$TMP/out")"
expect_in "show: bytes that are not UTF-8 become U+FFFD" "Caf� ���1J �" "$(cat "$TMP/out")"
D list --json >"$TMP/out" 2>"$TMP/err"
valid_json "list --json is valid UTF-8 JSON" "$TMP/out"
D show "$ID" --json >"$TMP/out" 2>"$TMP/err"
valid_json "show --json is valid UTF-8 JSON" "$TMP/out"
[ "$(jq -r '.sites[0].name' "$TMP/out")" = "Caf� ���1J �" ] &&
	[ "$(jq -r .customer "$TMP/out")" = "$(printf 'Ann\033]0;pwned\007\033[2J\r\302\233')" ] &&
	grep -q 'Ann\\u001b]0;pwned\\u0007\\u001b\[2J\\r\\u009b"' "$TMP/out"
check $? "show --json keeps the text, escaped, and replaces only the bad bytes" "$(cat "$TMP/out")"
D show "$ID" --json --reveal >"$TMP/out" 2>"$TMP/err"
valid_json "show --json --reveal is valid UTF-8 JSON" "$TMP/out"

# ---- status: a vendor's message on a result line (a Solis record, written into the store)
python3 - "$STORE" <<'PY'
import json, sys
path = sys.argv[1]
lines = open(path, "rb").read().split(b"\n")
head = json.loads(lines[0])
head["records"] += 1
lines[0] = json.dumps(head).encode()
rec = {"id": "s0115000aa", "customer": "Dee", "vendor": "solis", "method": "key",
       "credentials": {"type": "key_pair", "key_id": "demo-text-2"}}
sec = {"id": "s0115000aa", "credentials": {"key_secret": "hostilekey01"}}
if lines[-1] == b"":
    lines.pop()
lines += [json.dumps(rec).encode(), json.dumps(sec).encode(), b""]
open(path, "wb").write(b"\n".join(lines))
PY
run D status s0115000aa
expect_rc "status: Solis refuses the key" 1
safe "status: the vendor's message without a raw control character" "$TMP/out"
expect_in "status: the C1 CSI and the bidi override visibly" '\u009b2J\u202eevil' "$OUT"

finish
