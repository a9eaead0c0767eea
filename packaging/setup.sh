#!/bin/sh
# Sets up a fresh Debian 12 machine for derenroll: installs what is missing
# (apt-get, as root or through sudo), then configures and builds into build/.
#
#   packaging/setup.sh          what the program needs to build and run (the demo)
#   packaging/setup.sh --tests  that, and what the test suite needs; build/ gets the tests
#
# Safe to run again: with nothing to do it takes seconds.
set -eu

cd "$(dirname "$0")/.."

# Building and running derenroll (the wizard, the CLI, the demo's sandbox).
RUN_PACKAGES="
gcc
meson
ninja-build
pkg-config
libncurses-dev
libcurl4-openssl-dev
libjson-c-dev
libqrencode-dev
libssl-dev
libmicrohttpd-dev
libinih-dev
libpq-dev
ca-certificates
"

# The test suite only: unit tests, the tmux and browser tests, the man pages
# (tests/docs), the Debian packages, the fuzz build.
TEST_PACKAGES="
libcmocka-dev
postgresql
clang
libclang-rt-14-dev
tmux
zbar-tools
xvfb
xterm
x11-apps
imagemagick
fonts-dejavu-core
curl
jq
scdoc
debhelper
dpkg-dev
lintian
strace
systemd
chromium
chromium-driver
python3-selenium
"

tests=false
case "${1:-}" in
"") ;;
--tests) tests=true ;;
-h | --help)
	sed -n '2,8s/^# \{0,1\}//p' "$0"
	exit 0
	;;
*)
	echo "setup.sh: unknown option '$1' (packaging/setup.sh [--tests])" >&2
	exit 2
	;;
esac

PACKAGES=$RUN_PACKAGES
if [ "$tests" = true ]; then
	PACKAGES="$RUN_PACKAGES $TEST_PACKAGES"
fi

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -n "$missing" ]; then
	echo "setup.sh: installing:$missing"
	if [ "$(id -u)" -eq 0 ]; then
		SUDO=""
	elif command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "setup.sh: need root or sudo to install:$missing" >&2
		exit 1
	fi
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

# A build without the tests needs no cmocka; --tests turns them on in an
# existing build, and a plain run never turns them off.
if [ ! -f build/build.ninja ]; then
	meson setup build -Dtests="$tests"
elif [ "$tests" = true ] && ! meson introspect build --buildoptions |
	grep -q '"name": "tests", "value": true'; then
	meson configure build -Dtests=true
fi
meson compile -C build
