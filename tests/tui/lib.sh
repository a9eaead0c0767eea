# Shared by the tmux end-to-end tests of the TUI framework.
# Usage: . lib.sh FIXTURE QRCAP; plan N; start W H [VAR=value...] -- ARGS...; ...; finish
#
# Each test script runs its own tmux server (its own socket, no config file),
# killed on exit. The pane runs the fixture under a small shell that records
# `stty -a` before and after it, its exit status, and then waits, so that the
# terminal the fixture leaves behind can be inspected in the same pane.

FIXTURE=$1
QRCAP=$2
. "$(dirname "$0")/../cli/lib.sh"

SOCK_BASE="derenroll-tui-$$-$(basename "$0" .sh)"
SOCK="$SOCK_BASE-0"
export LC_ALL=C.UTF-8
# The servers' sockets live in the test's temporary directory, removed at exit.
export TMUX_TMPDIR="$TMP"
unset TMUX NO_COLOR FIXTURE_OUT FIXTURE_READY

tmux_cleanup() {
	_run=0
	while [ $_run -le "${RUNS:-0}" ]; do
		tmux -L "$SOCK_BASE-$_run" kill-server >/dev/null 2>&1
		_run=$((_run + 1))
	done
	cleanup
}
trap tmux_cleanup EXIT
# Killed or cut short (e.g. piped into head): still clean up through EXIT.
trap 'exit 1' HUP INT PIPE TERM

if ! command -v tmux >/dev/null 2>&1 || ! command -v zbarimg >/dev/null 2>&1; then
	echo "1..0 # SKIP tmux or zbarimg (zbar-tools) is not installed"
	exit 0
fi

if ! locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
	echo "1..0 # SKIP no C.UTF-8 locale (locale -a)"
	exit 0
fi

T() { tmux -u -L "$SOCK" -f /dev/null "$@"; }

cat >"$TMP/wrap.sh" <<'WRAP'
# The shell survives ^C (a trap, not an ignore: the fixture gets the default).
trap : INT TERM QUIT
ulimit -c 0
stty -a >"$RUN/stty.before"
date +%s.%N >"$RUN/t0"
"$@"
echo $? >"$RUN/rc"
stty -a >"$RUN/stty.after"
echo "FIXTURE EXITED"
# What a person types (or pastes) next, as the shell would read it.
IFS= read -r line
printf '%s\n' "$line" >"$RUN/typed"
exec sleep 600
WRAP

# start W H [VAR=value...] -- FIXTURE-ARGS...: a fresh session running the
# fixture at W x H; its files go to $RUN (out, ready, rc, stty.before/after).
RUNS=0
start() {
	_w=$1 _h=$2
	shift 2
	T kill-server >/dev/null 2>&1
	RUNS=$((RUNS + 1))
	# A socket per run: a server still exiting cannot take the next session.
	SOCK="$SOCK_BASE-$RUNS"
	RUN="$TMP/run$RUNS"
	mkdir -p "$RUN"
	_envs="RUN=$RUN FIXTURE_OUT=$RUN/out FIXTURE_READY=$RUN/ready"
	while [ "$1" != "--" ]; do
		_envs="$_envs $1"
		shift
	done
	shift
	# shellcheck disable=SC2086
	T new-session -d -x "$_w" -y "$_h" -s t env $_envs sh "$TMP/wrap.sh" "$FIXTURE" "$@"
	T set -g status off
	wait_file "$RUN/ready"
}

# has_sgr PATTERN: whether the pane's capture sets an SGR parameter that
# matches the extended regular expression PATTERN whole (e.g. '30|107').
ESC=$(printf '\033')
has_sgr() {
	T capture-pane -t t -p -e -N | grep -o "$ESC\[[0-9;]*m" | tr -d "$ESC[m" | tr ';' '\n' |
		grep -Eqx "$1"
}

# wait_file PATH: until it exists (at most 10 s).
wait_file() {
	_tries=0
	while [ ! -s "$1" ] && [ $_tries -lt 100 ]; do
		sleep 0.1
		_tries=$((_tries + 1))
	done
}

screen() { T capture-pane -t t -p -N; }

# wait_screen TEXT: until the pane shows TEXT (at most 10 s); SCREEN is the capture,
# taken once the frame is drawn whole: the same a moment later. A frame is written
# in pieces, and on a busy machine (a sanitizer build) a capture can fall between
# them. A screen that keeps changing (a countdown) is taken after a few looks; one
# that has moved on from TEXT meanwhile, as it first showed TEXT.
wait_screen() {
	_tries=0
	while :; do
		SCREEN=$(screen)
		case "$SCREEN" in *"$1"*)
			_first=$SCREEN
			_looks=0
			while [ $_looks -lt 5 ]; do
				sleep 0.05
				_again=$(screen)
				[ "$_again" = "$SCREEN" ] && break
				SCREEN=$_again
				_looks=$((_looks + 1))
			done
			case "$SCREEN" in *"$1"*) ;; *) SCREEN=$_first ;; esac
			return 0
			;;
		esac
		[ $_tries -ge 100 ] && return 1
		sleep 0.1
		_tries=$((_tries + 1))
	done
}

# wait_gone TEXT: until the pane no longer shows TEXT.
wait_gone() {
	_tries=0
	while :; do
		SCREEN=$(screen)
		case "$SCREEN" in *"$1"*) ;; *) return 0 ;; esac
		[ $_tries -ge 100 ] && return 1
		sleep 0.1
		_tries=$((_tries + 1))
	done
}

keys() { T send-keys -t t "$@"; }

# Sends text literally (no key names), e.g. keys_text 'q'.
keys_text() { T send-keys -t t -l "$1"; }

# decode [dark|light]: the QR code in the pane, as zbarimg reads it.
decode() {
	T capture-pane -t t -p -e -N >"$TMP/cap"
	"$QRCAP" -t "${1:-dark}" <"$TMP/cap" >"$TMP/cap.pgm" && zbarimg -q --raw "$TMP/cap.pgm" 2>/dev/null
}

# expect_decodes NAME TEXT [dark|light]: the pane's QR code reads as TEXT.
expect_decodes() {
	_read=$(decode "${3:-dark}")
	[ "$_read" = "$2" ]
	check $? "$1" "zbarimg read '$_read'"
}

# expect_out NAME VALUE: the fixture exits and has written VALUE.
expect_out() {
	wait_screen "FIXTURE EXITED" >/dev/null
	_out=$(cat "$RUN/out" 2>/dev/null)
	[ "$_out" = "$2" ]
	check $? "$1" "wrote '$_out'"
}

# resize W H: resizes the window, then waits for the fixture to redraw.
resize() {
	T resize-window -t t -x "$1" -y "$2"
	sleep 0.3
}

fixture_pid() { cut -d' ' -f1 "$RUN/ready"; }

# expect_exit NAME RC: the fixture ended with RC and left the terminal as it
# found it: same `stty -a`, canonical mode, echo, output processing, signals.
expect_exit() {
	wait_screen "FIXTURE EXITED" >/dev/null
	wait_file "$RUN/stty.after"
	_rc=$(cat "$RUN/rc" 2>/dev/null)
	[ "$_rc" = "$2" ]
	check $? "$1: exit status $2" "status was '$_rc'; screen: $SCREEN"
	_after=$(cat "$RUN/stty.after" 2>/dev/null)
	# The size may have changed (resize tests): compare everything else.
	sed 's/rows [0-9]*; columns [0-9]*;//' "$RUN/stty.before" >"$RUN/stty.before.cmp"
	sed 's/rows [0-9]*; columns [0-9]*;//' "$RUN/stty.after" >"$RUN/stty.after.cmp" 2>/dev/null
	cmp -s "$RUN/stty.before.cmp" "$RUN/stty.after.cmp"
	check $? "$1: stty -a unchanged" "$(diff "$RUN/stty.before" "$RUN/stty.after" 2>&1)"
	_sane=0
	for _flag in icanon echo opost isig icrnl; do
		printf '%s\n' "$_after" | tr ' ' '\n' | grep -qx -- "$_flag" || _sane=1
	done
	check $_sane "$1: terminal sane (icanon echo opost isig icrnl)" "$_after"
	_modes=$(T display -p -t t '#{alternate_on} #{cursor_flag} #{keypad_flag}')
	[ "$_modes" = "0 1 0" ]
	check $? "$1: main screen, cursor shown, keypad mode off" "alternate, cursor, keypad: $_modes"
	# Bracketed paste must be off: a paste reaches the shell as plain text,
	# echoed as it is typed.
	T set-buffer -b after "pasted after exit"
	T paste-buffer -p -b after -t t
	keys Enter
	wait_file "$RUN/typed"
	_typed=$(cat "$RUN/typed" 2>/dev/null)
	wait_screen "pasted after exit" >/dev/null
	_echoed=$?
	[ "$_typed" = "pasted after exit" ] && [ $_echoed -eq 0 ]
	check $? "$1: a paste afterwards arrives as plain text, echoed" "read: $(printf '%s' "$_typed" | od -c | head -2)"
}
