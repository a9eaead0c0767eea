#!/bin/sh
# The QR code on real pixels: the wizard (--demo, Tesla through the relay) in
# tmux, shown by xterm under Xvfb in DejaVu Sans Mono at sizes 8 to 16, dark
# and light backgrounds, with and without NO_COLOR; the screenshot (xwd,
# ImageMagick) must decode (zbarimg) to the link the wizard shows as text.
# Block glyphs leave seams between rows in many fonts: the tmux capture alone
# cannot see them.
set -u
. "$(dirname "$0")/lib.sh"

for tool in Xvfb xterm xwd convert; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "1..0 # SKIP $tool is not installed (packaging/setup.sh installs it)"
		exit 0
	fi
done
if ! fc-list 2>/dev/null | grep -q "DejaVu Sans Mono"; then
	echo "1..0 # SKIP no DejaVu Sans Mono (fonts-dejavu-core)"
	exit 0
fi

SIZES="8 9 10 11 12 13 14 15 16"
plan $((2 * (2 + 9 * 2)))

DERENROLL=$FIXTURE
FIXTURE="$TMP/wizard.sh"
printf '#!/bin/sh\nDERENROLL_WIZARD_READY=$FIXTURE_READY exec "%s" "$@"\n' "$DERENROLL" >"$FIXTURE"
chmod +x "$FIXTURE"

XVFB_PID="" XTERM_PID=""
stop_xterm() {
	[ -n "$XTERM_PID" ] && kill "$XTERM_PID" 2>/dev/null && wait "$XTERM_PID" 2>/dev/null
	XTERM_PID=""
}
pixels_cleanup() {
	stop_xterm
	[ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null && wait "$XVFB_PID" 2>/dev/null
	tmux_cleanup
}
trap pixels_cleanup EXIT

# A display of its own: Xvfb picks a free number and writes it to fd 3.
Xvfb -displayfd 3 -screen 0 1400x1000x24 -nolisten tcp -noreset 3>"$TMP/display" \
	>"$TMP/xvfb.log" 2>&1 &
XVFB_PID=$!
wait_file "$TMP/display"
DISPLAY=":$(cat "$TMP/display")"
export DISPLAY
# xterm and tmux talk UTF-8 (lib.sh sets LC_ALL=C.UTF-8).

# shot NAME: the whole screen as PNG, decoded: $READ.
shot() {
	xwd -root -silent >"$TMP/$1.xwd" 2>/dev/null &&
		convert "xwd:$TMP/$1.xwd" "$TMP/$1.png" 2>/dev/null
	READ=$(zbarimg -q --raw "$TMP/$1.png" 2>/dev/null)
}

# show SIZE FG BG: xterm at font size SIZE attached to the wizard's session;
# READ is what the screenshot decodes to (a few tries while xterm draws).
show() {
	stop_xterm
	xterm -fa "DejaVu Sans Mono" -fs "$1" -fg "$2" -bg "$3" -geometry 80x24+0+0 \
		+sb -b 0 -bw 0 -e tmux -u -L "$SOCK" -f /dev/null attach -t t >/dev/null 2>&1 &
	XTERM_PID=$!
	_tries=0
	while [ "$(T list-clients -t t 2>/dev/null | wc -l)" -eq 0 ] && [ $_tries -lt 100 ]; do
		sleep 0.1
		_tries=$((_tries + 1))
	done
	_tries=0
	READ=""
	while [ $_tries -lt 4 ]; do
		sleep 0.5
		shot "s$1-$3"
		[ -n "$READ" ] && break
		_tries=$((_tries + 1))
	done
}

for nc in "" 1; do
	label=${nc:+NO_COLOR: }
	start 80 24 ${nc:+NO_COLOR=$nc} -- --demo --store "$TMP/store$nc" \
		--customer "Pixel Test" --vendor tesla --method oauth
	wait_screen "Tesla: the customer approves" >/dev/null
	check $? "${label}the wizard shows the QR screen" "$SCREEN"
	LINK=$(printf '%s\n' "$SCREEN" | sed -n 's/^ *Link: //p' | tr -d ' ')
	expect_in "${label}the link is the relay's short link" "/relay/s/" "$LINK"
	for size in $SIZES; do
		for theme in dark light; do
			if [ $theme = dark ]; then show "$size" white black; else show "$size" black white; fi
			[ "$READ" = "$LINK" ]
			check $? "${label}DejaVu Sans Mono $size, $theme background: decodes to the link" \
				"zbarimg read '$READ', the wizard shows '$LINK'"
		done
	done
	stop_xterm
	T kill-server >/dev/null 2>&1
done

finish
