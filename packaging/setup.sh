#!/bin/sh
# Sets up a fresh Debian 12 machine for derenroll: installs every build and
# test dependency that is missing (apt-get, as root or through sudo), then
# configures and builds into build/. Safe to run again: with nothing to do it
# takes seconds.
set -eu

cd "$(dirname "$0")/.."

PACKAGES="
gcc
clang
libclang-rt-14-dev
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
libcmocka-dev
tmux
zbar-tools
xvfb
xterm
x11-apps
imagemagick
fonts-dejavu-core
curl
jq
ca-certificates
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

if [ ! -f build/build.ninja ]; then
	meson setup build
fi
meson compile -C build
