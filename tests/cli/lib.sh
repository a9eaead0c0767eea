# Shared by the TAP shell tests: a clean environment, a temp dir, TAP output.
# Usage: . lib.sh; plan N; ok "name" cmd...; finish

for v in $(env | sed -n 's/^\(DERENROLL_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/derenroll-cli-XXXXXX")
export HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/home/.config" XDG_DATA_HOME="$TMP/home/.local/share"
export XDG_STATE_HOME="$TMP/home/.local/state"
mkdir -p "$HOME"
CLEANUP_PIDS=""
cleanup() {
	for p in $CLEANUP_PIDS; do kill "$p" 2>/dev/null; done
	rm -rf "$TMP"
}
trap cleanup EXIT

N=0
FAILED=0
plan() { echo "1..$1"; }

# pass/fail with a name; details on failure as TAP comments.
check() {
	N=$((N + 1))
	if [ "$1" = 0 ]; then
		echo "ok $N - $2"
	else
		echo "not ok $N - $2"
		FAILED=$((FAILED + 1))
		[ -n "${3:-}" ] && printf '%s\n' "$3" | sed 's/^/# /'
	fi
}

# run CMD...: sets OUT, ERR, RC.
run() {
	"$@" >"$TMP/out" 2>"$TMP/err"
	RC=$?
	OUT=$(cat "$TMP/out")
	ERR=$(cat "$TMP/err")
}

# expect_rc NAME CODE: checks RC of the last run.
expect_rc() {
	[ "$RC" = "$2" ]
	check $? "$1 (exit $2)" "exit was $RC; stderr: $ERR"
}

# expect_in NAME TEXT HAYSTACK
expect_in() {
	case "$3" in *"$2"*) check 0 "$1" ;; *) check 1 "$1" "'$2' not found in: $3" ;; esac
}

expect_not_in() {
	case "$3" in *"$2"*) check 1 "$1" "'$2' found in: $3" ;; *) check 0 "$1" ;; esac
}

# expect_one_line NAME TEXT
expect_one_line() {
	[ "$(printf '%s' "$2" | wc -l)" -eq 0 ] && [ -n "$2" ]
	check $? "$1" "not exactly one line: $2"
}

# need_tools TOOL...: bails out unless every tool is installed.
need_tools() {
	for t in "$@"; do
		command -v "$t" >/dev/null && continue
		echo "Bail out! $* are needed (packaging/setup.sh --tests installs them)"
		exit 1
	done
}

# wait_for_output FILE [TENTHS]: waits (10 s unless told) until FILE is not empty.
wait_for_output() {
	for _ in $(seq "${2:-100}"); do
		[ -s "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# enroll_tesla_approved BIN CONF CUSTOMER: `BIN enroll tesla` with the customer
# approving in the sandbox (curl plays the phone); its exit status, stderr in
# $TMP/enroll.err.
enroll_tesla_approved() {
	local pid auth callback
	"$1" --config "$2" enroll tesla --customer "$3" --timeout 60 >"$TMP/enroll.out" \
		2>"$TMP/enroll.err" &
	pid=$!
	CLEANUP_PIDS="$CLEANUP_PIDS $pid"
	wait_for_output "$TMP/enroll.out" 600
	auth=$(curl -sS -o /dev/null -w '%{redirect_url}' "$(head -n1 "$TMP/enroll.out")")
	callback=$(curl -sS -o /dev/null -w '%{redirect_url}' "$auth&sandbox_auto=approve")
	curl -sS -o /dev/null "$callback"
	wait "$pid"
}

# start_sandbox BIN CONF: `BIN sandbox` in the background (killed at exit), writing
# CONF; waits for its ONE line, left in $TMP/line. Its pid is in SANDBOX_PID.
start_sandbox() {
	"$1" sandbox --listen 127.0.0.1:0 --write-config "$2" >"$TMP/line" 2>"$TMP/sandbox.err" &
	SANDBOX_PID=$!
	CLEANUP_PIDS="$CLEANUP_PIDS $SANDBOX_PID"
	wait_for_output "$TMP/line"
}

finish() { exit $((FAILED > 0)); }

