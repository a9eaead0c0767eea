# Shared by the tmux tests of the wizard (after lib.sh): the wizard on the
# demo at 80x24, its store, and the keys that begin an enrollment.
# Usage: . lib.sh DERENROLL QRCAP; RECORDS=...; . wizlib.sh

# The pane runs the wizard through this, which reports its first frame where
# lib.sh's start() waits for it.
DERENROLL=$FIXTURE
FIXTURE="$TMP/wizard.sh"
printf '#!/bin/sh\nDERENROLL_WIZARD_READY=$FIXTURE_READY exec "%s" "$@"\n' "$DERENROLL" >"$FIXTURE"
chmod +x "$FIXTURE"

STORE="$TMP/store"

# wiz [VAR=value...] -- ARGS...: the wizard at 80x24 on the demo.
wiz() {
	_e=""
	while [ "$1" != "--" ]; do
		_e="$_e $1"
		shift
	done
	shift
	# shellcheck disable=SC2086
	start 80 24 $_e -- --demo --store "$STORE" "$@"
}

# record CUSTOMER: the store's record of that customer (one JSON line).
record() { "$RECORDS" "$STORE" | grep "\"customer\":\"$1\"" | tail -1; }

# settle: until two captures 0.2 s apart are the same (the frame is whole).
settle() {
	_tries=0
	SCREEN=$(screen)
	while [ $_tries -lt 50 ]; do
		sleep 0.2
		_next=$(screen)
		[ "$_next" = "$SCREEN" ] && return 0
		SCREEN=$_next
		_tries=$((_tries + 1))
	done
}

# begin CUSTOMER VENDOR-FILTER: types the customer and picks the vendor.
begin() {
	wait_screen "Customer reference" >/dev/null
	keys_text "$1"
	keys Enter
	keys_text "$2"
	keys Enter
}


# again: on the sites screen, confirms the selected site, then "enroll
# another" back to the start screen.
again() {
	wait_screen "sites found" >/dev/null
	keys Enter
	wait_screen "Enter: enroll another" >/dev/null
	keys Enter
	wait_screen "Customer reference" >/dev/null
	settle
}
