#!/bin/sh
# Team store figures for tests/bench/RESULTS.md (## Team store): `derenroll
# list --due 7` and `list` as fresh processes, and the wizard's enrolled
# systems screen (F2) in tmux at 80x24, on a real PostgreSQL holding N records
# (bench_team --serve fills it as bench_team does: Enphase OAuth records,
# refresh expiries over 60 days, about 12 % due within 7 days).
# Figures only: nothing here passes or fails.
# Usage: tests/bench/team_bench.sh [BUILD_DIR] [RUNS] [N]   (default: build, 7, 100000)
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
TIMES=${2:-7}
COUNT=${3:-100000}
set -- "$BUILD/tui/derenroll" "$BUILD/tests/tui/qrcap"
. "$SRC/tests/tui/lib.sh"
BIN=$BUILD/tui/derenroll

# The filled server, stopped when this script's end closes its standard input.
mkfifo "$TMP/serve.in" "$TMP/serve.out"
"$BUILD/tests/bench_team" --serve "$COUNT" <"$TMP/serve.in" >"$TMP/serve.out" 2>"$TMP/serve.err" &
exec 8>"$TMP/serve.in"
exec 9<"$TMP/serve.out"
echo "filling $COUNT records..." >&2
read -r URL <&9 || {
	cat "$TMP/serve.err" >&2
	exit 1
}

printf 'benchmark passphrase\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms_of() {
	_t0=$(date +%s%N)
	"$@" >/dev/null 2>&1
	echo $((($(date +%s%N) - _t0) / 100000)) | awk '{ printf "%.1f\n", $1 / 10 }'
}

# cli LABEL ARGS...: median wall time of a fresh `derenroll ARGS` over $TIMES runs.
cli() {
	_label=$1
	shift
	: >"$TMP/cli"
	"$BIN" --store "$URL" "$@" >/dev/null 2>&1 # the first run migrates, warms the cache
	_i=0
	while [ $_i -lt "$TIMES" ]; do
		ms_of "$BIN" --store "$URL" "$@" >>"$TMP/cli"
		_i=$((_i + 1))
	done
	printf '| %s | %s ms | %s-%s ms |\n' "$_label" "$(median <"$TMP/cli")" \
		"$(sort -n "$TMP/cli" | head -1)" "$(sort -n "$TMP/cli" | tail -1)"
}

echo "| \`derenroll --store URL ...\` ($COUNT records), fresh process | median | min-max |"
echo "|---|---|---|"
cli "--version (the bare program)" --version
cli "list --due 7 ($("$BIN" --store "$URL" list --due 7 2>/dev/null | tail -n +2 | wc -l) due)" list --due 7
cli "list --due 7 --json" list --due 7 --json
cli "list (every record)" list

# The wizard: its start (the whole team store is read, with the KDF), then F2.
FIXTURE="$TMP/wizard.sh"
printf '#!/bin/sh\nDERENROLL_WIZARD_READY=$FIXTURE_READY DERENROLL_SYSTEMS_READY=%s exec "%s" "$@"\n' \
	"$TMP/systems" "$BIN" >"$FIXTURE"
chmod +x "$FIXTURE"
: >"$TMP/start"
: >"$TMP/systems"
_i=0
while [ $_i -lt "$TIMES" ]; do
	start 80 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" -- --store "$URL"
	awk -v t0="$(cat "$RUN/t0")" '{ printf "%.1f\n", ($2 - t0) * 1000 }' "$RUN/ready" >>"$TMP/start"
	wait_screen "F2 enrolled systems" >/dev/null
	_before=$(wc -l <"$TMP/systems")
	keys F2
	_tries=0
	while [ "$(wc -l <"$TMP/systems")" -le "$_before" ] && [ $_tries -lt 300 ]; do
		sleep 0.05
		_tries=$((_tries + 1))
	done
	wait_screen "Enrolled systems" >/dev/null
	keys C-c
	wait_screen "FIXTURE EXITED" >/dev/null
	_i=$((_i + 1))
done
echo
echo "| wizard ($COUNT records, 80x24), $TIMES runs | median | min-max |"
echo "|---|---|---|"
printf '| start to the first frame (the team store read on demand, default KDF) | %s ms | %s-%s ms |\n' \
	"$(median <"$TMP/start")" "$(sort -n "$TMP/start" | head -1)" "$(sort -n "$TMP/start" | tail -1)"
cut -d' ' -f1 "$TMP/systems" >"$TMP/f2"
printf '| F2 to the enrolled systems list drawn (%s rows in it then) | %s ms | %s-%s ms |\n' \
	"$(head -1 "$TMP/systems" | cut -d' ' -f2)" "$(median <"$TMP/f2")" \
	"$(sort -n "$TMP/f2" | head -1)" "$(sort -n "$TMP/f2" | tail -1)"
# The panes hold the server's standard input too: they go first.
_run=0
while [ $_run -le "$RUNS" ]; do
	tmux -L "$SOCK_BASE-$_run" kill-server >/dev/null 2>&1
	_run=$((_run + 1))
done
exec 8>&-
wait
