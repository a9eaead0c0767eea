#!/usr/bin/env bash
# Time is bounded: a vendor's absurd Retry-After is not slept on, a run's
# --deadline stops it, and a long run shows its progress on a terminal only.
# Against the real `derenroll sandbox`, with a vendors.json whose Solis limit
# is one call a second for the whole app, so that a run of a few records is
# slow. No timed assertion: the commands run under `timeout`, and what is
# checked is that they ended and what they said.
set -u
BIN=$1
ASSETS="$(cd "$(dirname "$0")/../../assets" && pwd)"
. "$(dirname "$0")/lib.sh"
plan 28

need_tools jq curl

# A slow Solis: 1 call a second, one bucket for every record.
cp -r "$ASSETS" "$TMP/assets"
jq '(.vendors[] | select(.id == "solis") | .rate_limits) = [{"requests": 1, "per_seconds": 1, "concurrency": 0, "per": "app"}]' \
	"$ASSETS/vendors.json" >"$TMP/assets/vendors.json"
export DERENROLL_DATADIR="$TMP/assets"

CONF="$TMP/config.ini"
D() { "$BIN" --config "$CONF" "$@"; }
fault() { curl -sS -o /dev/null -X POST -d "$1" "$URL/_sandbox/faults"; }
clear_faults() { curl -sS -o /dev/null -X DELETE "$URL/_sandbox/faults"; }
id_of() { jq -r --arg c "$1" '.[] | select(.customer == $c) | .id' <<<"$(D list --json)"; }
printf 'time is bounded\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
export DERENROLL_PASSPHRASE_FILE="$TMP/pass"
start_sandbox "$BIN" "$CONF"
URL=$(jq -r .url "$TMP/line")

# ---- records: six Solis key pairs and one Tesla OAuth record
jq -j .credentials.solis.key_secret "$TMP/line" >"$TMP/solis"
chmod 600 "$TMP/solis"
n=0
for i in 1 2 3 4 5 6; do
	D enroll solis --customer "Solis $i" --key-id "demo-time-$i" --key-secret-file "$TMP/solis" \
		>/dev/null 2>"$TMP/enroll.err" && n=$((n + 1))
done
[ "$n" = 6 ]
check $? "six Solis records" "$(cat "$TMP/enroll.err")"
enroll_tesla_approved "$BIN" "$CONF" "Tess Tesla"
check $? "a Tesla record" "$(cat "$TMP/enroll.err")"
TESLA=$(id_of "Tess Tesla")
SOLIS1=$(id_of "Solis 1")

# ---- Retry-After: 99999999 ends the run at once, saying when to try again
fault '{"vendor":"tesla","kind":"429","count":0,"retry_after":99999999}'
run timeout 60 "$BIN" --config "$CONF" refresh "$TESLA"
expect_rc "refresh against Retry-After: 99999999 ends, temporary" 3
expect_in "refresh says when to try again" "try again tomorrow" "$OUT"
expect_not_in "refresh never says 99999999 s" "99999999" "$OUT$ERR"
TOKEN_BEFORE=$(D show --json --reveal "$TESLA" | jq -r .credentials.refresh_token)
clear_faults
run D refresh "$TESLA"
expect_rc "refresh once the vendor is back" 0
[ "$(D show --json --reveal "$TESLA" | jq -r .credentials.refresh_token)" != "$TOKEN_BEFORE" ]
check $? "the refresh token was kept through the 429 and rotated after"

fault '{"vendor":"solis","kind":"429","count":0,"retry_after":99999999}'
run timeout 60 "$BIN" --config "$CONF" status --json
expect_rc "status against Retry-After: 99999999 ends, temporary" 3
[ -n "$OUT" ] && jq -e 'length == 7 and ([.[] | select(.vendor == "solis")] | length == 6 and all(.result == "transient" and (.message | test("try again tomorrow"))))' <<<"$OUT" >/dev/null
check $? "status: every Solis record is transient and says when to try again" "$OUT"
expect_not_in "status never says 99999999 s" "99999999" "$OUT$ERR"
[ -n "$OUT" ] && jq -e '[.[] | select(.vendor == "tesla")] | .[0].result == "ok"' <<<"$OUT" >/dev/null
check $? "status: the other vendor's record is checked all the same" "$OUT"
clear_faults

# Longer than [http] max_wait but within a day: a time of day (or a date).
fault '{"vendor":"solis","kind":"429","count":0,"retry_after":3600}'
run timeout 60 "$BIN" --config "$CONF" status "$SOLIS1"
expect_rc "status against Retry-After: 3600 ends, temporary" 3
grep -Eq 'try again after ([0-9]{4}-[0-9]{2}-[0-9]{2} )?[0-9]{2}:[0-9]{2}' <<<"$OUT"
check $? "status says try again after HH:MM" "$OUT"
clear_faults
# Within max_wait, the vendor is waited for.
(umask 077; printf "[http]\nmax_wait = 2\n" >"$TMP/short.ini")
cat "$CONF" >>"$TMP/short.ini"
fault '{"vendor":"solis","kind":"429","count":1,"retry_after":1}'
run timeout 60 "$BIN" --config "$TMP/short.ini" status "$SOLIS1"
expect_rc "a Retry-After within [http] max_wait is waited for" 0
fault '{"vendor":"solis","kind":"429","count":1,"retry_after":3}'
run timeout 60 "$BIN" --config "$TMP/short.ini" status "$SOLIS1"
expect_rc "one beyond [http] max_wait = 2 is not" 3
clear_faults
(umask 077; printf "[http]\nmax_wait = 0\n" >"$TMP/bad.ini")
cat "$CONF" >>"$TMP/bad.ini"
run "$BIN" --config "$TMP/bad.ini" status "$SOLIS1"
expect_in "[http] max_wait = 0 is refused, naming the key" "max_wait" "$ERR"

# A whole run (six seconds at Solis's pace), which also leaves every check ok.
run timeout 60 "$BIN" --config "$CONF" status
expect_rc "status of every record, at one a second" 0
expect_not_in "no progress when standard error is not a terminal" "done" "$ERR"

# ---- --deadline: six Solis records at one a second take five seconds
run timeout 60 "$BIN" --config "$CONF" status --deadline 1 --json
expect_rc "status --deadline 1 stops the run, temporary" 3
[ -n "$OUT" ] && jq -e '[.[] | select(.result == "transient" and (.message | test("deadline")))] | length >= 3' <<<"$OUT" >/dev/null
check $? "the records not started are 'not done' before the deadline" "$OUT"
[ -n "$OUT" ] && jq -e 'length == 7 and ([.[] | select(.result == "ok")] | length >= 1)' <<<"$OUT" >/dev/null
check $? "the records started are done" "$OUT"
SKIPPED=$(jq -r '[.[] | select(.message != null and (.message | test("deadline")))][0].id' <<<"$OUT")
[ -n "$SKIPPED" ] && [ "$SKIPPED" != null ] &&
	jq -e '.last_check.result == "ok"' <<<"$(D show --json "$SKIPPED")" >/dev/null
check $? "a record not checked keeps its last check" "$(D show --json "$SKIPPED")"
run timeout 60 "$BIN" --config "$CONF" refresh --deadline 10m "$TESLA"
expect_rc "refresh --deadline 10m" 0
BAD=""
for bad in 0 -5 10x 1.5m 8d 99999999999999999999 ""; do
	run D status --deadline "$bad"
	[ "$RC" = 2 ] && [ "$(head -n1 <<<"$ERR" | grep -c -- "--deadline takes a duration")" = 1 ] ||
		BAD="$BAD '$bad' (rc $RC: $ERR)"
done
[ -z "$BAD" ]
check $? "every bad --deadline is refused (exit 2, one clear line)" "$BAD"

# ---- progress: on a terminal, for a run longer than a second, then cleared
if command -v tmux >/dev/null 2>&1; then
	SOCK="derenroll-time-$$"
	export TMUX_TMPDIR="$TMP"
	Tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
	Tm new-session -d -x 100 -y 20 -s t \
		"env DERENROLL_DATADIR=$TMP/assets DERENROLL_PASSPHRASE_FILE=$TMP/pass $BIN --config $CONF status; echo EXITED \$?; sleep 600"
	seen=""
	for _ in $(seq 300); do
		screen=$(Tm capture-pane -p -t t)
		case "$screen" in *"EXITED"*) break ;; esac
		case "$screen" in *"of 7 done"*"waiting for Solis's limit"*) seen=$screen ;; esac
		sleep 0.1
	done
	[ -n "$seen" ]
	check $? "the progress line names records done and the vendor waited for" "$screen"
	[ -n "$seen" ] && grep "of 7 done" <<<"$seen" | sed 's/^/# seen: /' 
	for _ in $(seq 300); do
		screen=$(Tm capture-pane -p -t t)
		case "$screen" in *"EXITED"*) break ;; esac
		sleep 0.1
	done
	expect_in "status on a terminal ends" "EXITED 0" "$screen"
	expect_not_in "the progress line is cleared at the end" "of 7 done" "$screen"
	[ "$(grep -cE " ok( |$)" <<<"$screen")" = 7 ]
	check $? "the results follow on clean lines" "$screen"
	Tm kill-server >/dev/null 2>&1
else
	for _ in 1 2 3 4; do check 0 "# SKIP tmux is not installed"; done
fi
finish
