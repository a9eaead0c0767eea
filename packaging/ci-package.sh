#!/usr/bin/env bash
# CI: builds the Debian packages from a clean copy of the tree, runs lintian
# (errors fail), unpacks every .deb into a scratch root with dpkg -x and runs
# the unpacked program from there: `derenroll --version`, then `derenroll
# sandbox`, which must print its JSON line and answer from the recordings using the unpacked assets (the
# source copy is deleted first, DERENROLL_DATADIR is unset, and strace shows
# which vendors.json was opened) and exit 0 on SIGTERM.
#
# Leaves nothing in the checkout: everything happens in a temp dir, removed on
# exit (KEEP=1 keeps it and prints where).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n "s/^ *version: *'\([^']*\)'.*/\1/p" "$here/meson.build" | head -n1)
scratch=$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/derenroll-package-XXXXXX")")
src=$scratch/derenroll-$version
root=$scratch/root
sandbox_pid=""
tracer_pid=""

# The sandbox's pid, to signal it directly: the child of strace (after the
# command name in /proc/PID/stat come the state and the parent's pid).
child_of() {
	local stat p
	for p in /proc/[0-9]*; do
		stat=$(cat "$p/stat" 2>/dev/null) || continue
		stat=${stat##*) }
		set -- $stat
		if [ "$2" = "$tracer_pid" ]; then
			echo "${p#/proc/}"
			return 0
		fi
	done
	return 1
}

cleanup() {
	local rc=$?
	# Only the processes this script started, by their id: the sandbox
	# first, as killing strace alone would leave it running.
	if [ -n "$tracer_pid" ] && [ -z "$sandbox_pid" ]; then
		sandbox_pid=$(child_of || true)
	fi
	[ -n "$sandbox_pid" ] && kill -KILL "$sandbox_pid" 2>/dev/null || true
	[ -n "$tracer_pid" ] && kill -KILL "$tracer_pid" 2>/dev/null || true
	if [ "${KEEP:-0}" = 1 ]; then
		echo "ci-package: kept $scratch"
	else
		rm -rf "$scratch"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "ci-package: FAILED: $*" >&2
	exit 1
}
step() { echo "== package: $*"; }

for v in $(compgen -e | grep '^DERENROLL_' || true); do unset "$v"; done
for tool in dpkg-buildpackage lintian strace; do
	command -v "$tool" >/dev/null || fail "$tool is missing: run packaging/setup.sh --tests"
done

step "clean copy of the tree in $src"
mkdir -p "$src"
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# Tracked and untracked-but-not-ignored files, as they are in the work
	# tree: no build directories, no debian/.
	(cd "$here" && git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
		tar --null -T - -cf -) | tar -xf - -C "$src"
else
	tar -C "$here" --exclude='./build*' --exclude=./debian -cf - . | tar -xf - -C "$src"
fi
cp -r "$src/packaging/debian" "$src/debian"

step "dpkg-buildpackage -us -uc -b"
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$scratch/build.log" 2>&1; then
	tail -n 60 "$scratch/build.log"
	fail "dpkg-buildpackage (log above)"
fi
changes=$(ls "$scratch"/derenroll_"$version"-*_*.changes)
debs=$(ls "$scratch"/*.deb)
printf '  %s\n' $debs

step "lintian (errors fail; warnings are listed)"
lintian_rc=0
lintian --fail-on error --display-info --tag-display-limit 0 "$changes" \
	>"$scratch/lintian.log" 2>&1 || lintian_rc=$?
sed 's/^/  /' "$scratch/lintian.log"
echo "  lintian: $(grep -c '^E:' "$scratch/lintian.log" || true) errors," \
	"$(grep -c '^W:' "$scratch/lintian.log" || true) warnings," \
	"$(grep -c '^I:' "$scratch/lintian.log" || true) notes"
[ "$lintian_rc" = 0 ] || fail "lintian reported errors"

step "dpkg -x into $root"
for deb in $debs; do
	dpkg -x "$deb" "$root"
done
bin=$root/usr/bin/derenroll
[ -x "$bin" ] || fail "no usr/bin/derenroll in the packages"
[ -f "$root/usr/share/derenroll/vendors.json" ] || fail "no usr/share/derenroll/vendors.json"

# Nothing may point at a source tree: delete the copy the packages were built
# from (its assets/ is what an uninstalled build would fall back to) and run
# from a directory and a HOME of our own.
rm -rf "$src"
mkdir -p "$scratch/home" "$scratch/run"
cd "$scratch/run"
run_env=(env -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_STATE_HOME -u LD_LIBRARY_PATH
	HOME="$scratch/home")

step "unpacked derenroll --version"
lib=$("${run_env[@]}" ldd "$bin" | awk '$1 ~ /^libderenroll\.so/ {print $3}')
case $lib in
"$root"/*) echo "  libderenroll: $lib" ;;
*) fail "the unpacked program does not load the unpacked libderenroll (got '$lib')" ;;
esac
out=$("${run_env[@]}" "$bin" --version) || fail "derenroll --version exited $?"
[ "$out" = "derenroll $version" ] || fail "derenroll --version printed '$out'"
echo "  $out"

step "unpacked derenroll sandbox --listen 127.0.0.1:0"
# strace records which files it opens; the sandbox runs as strace's child.
"${run_env[@]}" strace -f -qq -e trace=open,openat -o "$scratch/trace" \
	"$bin" sandbox --listen 127.0.0.1:0 >"$scratch/sandbox.out" 2>"$scratch/sandbox.err" &
tracer_pid=$!

line=""
for _ in $(seq 300); do
	line=$(head -n1 "$scratch/sandbox.out")
	[ -n "$line" ] && break
	if ! kill -0 "$tracer_pid" 2>/dev/null; then
		wait "$tracer_pid" && rc=0 || rc=$?
		tracer_pid=""
		fail "derenroll sandbox exited $rc without its JSON line: $(cat "$scratch/sandbox.err")"
	fi
	[ -z "$sandbox_pid" ] && sandbox_pid=$(child_of || true)
	sleep 0.1
done
[ -n "$sandbox_pid" ] || sandbox_pid=$(child_of) || fail "cannot find the sandbox's pid"
[ -n "$line" ] || fail "derenroll sandbox printed nothing in 30 s: $(cat "$scratch/sandbox.err")"
echo "  $line"
[ "$(wc -l <"$scratch/sandbox.out")" -le 1 ] || fail "the sandbox printed more than one line"
[[ $line =~ \"url\":\ *\"http://127\.0\.0\.1:[0-9]+\" ]] || fail "no \"url\" in the sandbox's line"
# A real answer: SolarEdge's site list is built from the installed recordings
# (share/derenroll/answers), so a package without them answers 500.
url=$(printf '%s' "$line" | jq -r .url)
key=$(printf '%s' "$line" | jq -r .credentials.solaredge.api_key)
sites=$(curl -sS -H "X-API-Key: $key" "$url/solaredge/v2/sites") ||
	fail "the unpacked sandbox did not answer GET /solaredge/v2/sites"
printf '%s' "$sites" | jq -e '.sites.count == 1 and (.sites.site | length) == 1' >/dev/null ||
	fail "the unpacked sandbox's SolarEdge answer is not the recorded shape: $sites"
echo "  GET /solaredge/v2/sites answered from the installed recordings"

kill -TERM "$sandbox_pid"
rc=0
wait "$tracer_pid" || rc=$?
tracer_pid=""
sandbox_pid=""
[ "$rc" = 0 ] || fail "the sandbox exited $rc on SIGTERM: $(cat "$scratch/sandbox.err")"
echo "  exited 0 on SIGTERM"

opened=$(grep -E 'open(at)?\(.*vendors\.json", [^)]*\) = [0-9]+$' "$scratch/trace" |
	sed 's/^[^"]*"\([^"]*\)".*/\1/' | sort -u)
[ -n "$opened" ] || fail "strace saw no vendors.json opened"
echo "  vendors.json from: $opened"
while IFS= read -r f; do
	case $(realpath -m "$f") in
	"$root"/usr/share/derenroll/vendors.json) ;;
	*) fail "the sandbox read $f, not the unpacked data dir" ;;
	esac
done <<<"$opened"
answers=$(grep -E 'open(at)?\(.*answers/solaredge/sites\.json", [^)]*\) = [0-9]+$' "$scratch/trace" |
	sed 's/^[^"]*"\([^"]*\)".*/\1/' | sort -u)
case $(realpath -m "$answers") in
"$root"/usr/share/derenroll/answers/solaredge/sites.json) echo "  recordings from: $answers" ;;
*) fail "the sandbox read its recordings from '$answers', not the unpacked data dir" ;;
esac

step "ok: packages build, lintian has no error, the unpacked program runs"
