#!/bin/sh
# TUI figures for tests/bench/RESULTS.md: time from start to the first drawn
# screen, and the memory of the test fixture (tests/tui/fixture.c) holding a
# screen, in tmux at 80x24. Figures only: nothing here passes or fails.
# Usage: tests/bench/tui_bench.sh [BUILD_DIR] [RUNS]   (default: build, 20)
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
TIMES=${2:-20}
# lib.sh takes the fixture and the converter as $1 and $2.
set -- "$BUILD/tests/tui/fixture" "$BUILD/tests/tui/qrcap"
. "$SRC/tests/tui/lib.sh"

SHORT="https://relay.example.com/s/K7Q2MX9P4TZA"
LONG="https://auth.tesla.com/oauth2/v3/authorize?response_type=code&client_id=0123456789abcdef0123456789abcdef&redirect_uri=https%3A%2F%2Frelay.example.com%2Fcb&scope=openid%20offline_access%20energy_device_data%20energy_cmds&state=Vw3k9Qx1Zt7Lp2Hn8Rc4Yb6Md0Fa5Je&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&prompt_missing_scopes=true"

# ms from the wrapper's timestamp (just before it starts the fixture) to the
# fixture's "first frame is on the terminal" timestamp.
startup_ms() {
	awk -v t0="$(cat "$RUN/t0")" '{ printf "%.1f\n", ($2 - t0) * 1000 }' "$RUN/ready"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# kB of a /proc/PID/status field
field_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

# memory LABEL W H ARGS...: after the first frame and 1 s at rest.
memory() {
	label=$1 w=$2 h=$3
	shift 3
	start "$w" "$h" -- "$@"
	sleep 1
	pid=$(fixture_pid)
	printf '| %s | %s | %s | %s | %s |\n' "$label" "$(field_kb VmRSS "$pid")" \
		"$(field_kb RssAnon "$pid")" "$(field_kb RssFile "$pid")" "$(field_kb VmHWM "$pid")"
	keys C-c
	wait_screen "FIXTURE EXITED" >/dev/null
}

echo "Startup to first frame (QR screen, short link, 80x24), $TIMES runs:"
i=0
: >"$TMP/startup"
while [ $i -lt "$TIMES" ]; do
	start 80 24 -- qr "$SHORT"
	startup_ms >>"$TMP/startup"
	keys q
	wait_screen "FIXTURE EXITED" >/dev/null
	i=$((i + 1))
done
printf 'median %s ms, min %s ms, max %s ms\n' "$(median <"$TMP/startup")" \
	"$(sort -n "$TMP/startup" | head -1)" "$(sort -n "$TMP/startup" | tail -1)"
echo
echo "| screen | VmRSS kB | RssAnon kB | RssFile kB | VmHWM kB |"
echo "|---|---|---|---|---|"
memory "QR, 40-char link, 80x24" 80 24 qr "$SHORT"
memory "QR, 370-char URL, 80x41" 80 41 qr "$LONG"
memory "QR, 370-char URL, 200x60" 200 60 qr "$LONG"
memory "form" 80 24 form
memory "list of 10,000 rows" 80 24 list 10000
