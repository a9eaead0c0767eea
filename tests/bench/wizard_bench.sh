#!/bin/sh
# Wizard figures for tests/bench/RESULTS.md (## Wizard): time from start to
# the first drawn screen and the wizard's memory at rest, in tmux at 80x24;
# --demo (the sandbox in-process, the demo's light KDF) and a real store
# (default scrypt KDF, passphrase from a file) to show the KDF's peak apart.
# Figures only: nothing here passes or fails.
# Usage: tests/bench/wizard_bench.sh [BUILD_DIR] [RUNS]   (default: build, 10)
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
TIMES=${2:-10}
set -- "$BUILD/tui/derenroll" "$BUILD/tests/tui/qrcap"
. "$SRC/tests/tui/lib.sh"

# The pane runs the wizard through this: it reports its first frame where
# lib.sh's start() waits for it.
FIXTURE="$TMP/wizard.sh"
printf '#!/bin/sh\nDERENROLL_WIZARD_READY=$FIXTURE_READY exec "%s" "$@"\n' "$BUILD/tui/derenroll" >"$FIXTURE"
chmod +x "$FIXTURE"
printf 'bench passphrase\n' >"$TMP/pass"
chmod 600 "$TMP/pass"

startup_ms() {
	awk -v t0="$(cat "$RUN/t0")" '{ printf "%.1f\n", ($2 - t0) * 1000 }' "$RUN/ready"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

# startup LABEL ARGS...: median time to the first frame over $TIMES runs.
startup() {
	label=$1
	shift
	: >"$TMP/startup"
	i=0
	while [ $i -lt "$TIMES" ]; do
		rm -f "$TMP/store-demo"* "$TMP/store-kdf"*
		start 80 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" -- "$@"
		startup_ms >>"$TMP/startup"
		keys C-c
		wait_screen "FIXTURE EXITED" >/dev/null
		i=$((i + 1))
	done
	printf '| %s | %s | %s | %s |\n' "$label" "$(median <"$TMP/startup")" \
		"$(sort -n "$TMP/startup" | head -1)" "$(sort -n "$TMP/startup" | tail -1)"
}

# row LABEL: the memory of the wizard in the pane, 1 s at rest.
row() {
	sleep 1
	pid=$(fixture_pid)
	printf '| %s | %s | %s | %s | %s |\n' "$1" "$(field_kb VmRSS "$pid")" \
		"$(field_kb RssAnon "$pid")" "$(field_kb RssFile "$pid")" "$(field_kb VmHWM "$pid")"
}

echo "Start to the first drawn screen (ms), $TIMES runs:"
echo
echo "| wizard | median | min | max |"
echo "|---|---|---|---|"
startup "--demo (sandbox in-process, demo KDF)" --demo --store "$TMP/store-demo"
startup "new store, default scrypt KDF" --store "$TMP/store-kdf"
echo
echo "| wizard at rest | VmRSS kB | RssAnon kB | RssFile kB | VmHWM kB |"
echo "|---|---|---|---|---|"
rm -f "$TMP/store-demo"* "$TMP/store-kdf"*
start 80 24 -- --demo --store "$TMP/store-demo"
row "--demo, start screen"
keys_text "Bench"
keys Enter
keys_text "tesla"
keys Enter
wait_screen "Link: " >/dev/null
row "--demo, Tesla QR screen"
keys a
wait_screen "sites found" >/dev/null
keys Enter
wait_screen "Enter: enroll another" >/dev/null
row "--demo, saved"
keys Enter
keys F2
wait_screen "Enrolled systems" >/dev/null
row "--demo, enrolled systems"
keys C-c
wait_screen "FIXTURE EXITED" >/dev/null
start 80 24 DERENROLL_PASSPHRASE_FILE="$TMP/pass" -- --store "$TMP/store-kdf"
row "new store, default KDF, start screen (VmHWM: the KDF's peak)"
keys C-c
wait_screen "FIXTURE EXITED" >/dev/null
