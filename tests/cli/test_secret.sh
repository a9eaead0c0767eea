#!/bin/sh
# `derenroll secret set/list/remove` through the real program (TAP).
# Usage: test_secret.sh PATH/TO/derenroll
set -u

DERENROLL=${1:?usage: test_secret.sh PATH/TO/derenroll}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/derenroll-secret-XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

export HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/home/.config" XDG_DATA_HOME="$TMP/home/.local/share"
export XDG_STATE_HOME="$TMP/home/.local/state" TMPDIR="$TMP"
unset DERENROLL_PASSPHRASE_FILE
mkdir -p "$HOME"
STORE="$XDG_DATA_HOME/derenroll/store"
printf 'a passphrase for tests\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
PASSFILE="$TMP/pass"

n=0
failed=0
ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=1
		[ -s "$TMP/err" ] && sed 's/^/# stderr: /' "$TMP/err"
	fi
}

# run [ENV=VALUE...] -- ARGS...: runs derenroll with the passphrase file, stdin from $TMP/in.
run() {
	env DERENROLL_PASSPHRASE_FILE="$PASSFILE" "$DERENROLL" "$@" <"$TMP/in" >"$TMP/out" 2>"$TMP/err"
}

echo "1..21"

printf 'tesla-secret-0f9a\n' >"$TMP/in"
run secret set vendor.tesla.client_secret
ok $? "secret set exits 0"

: >"$TMP/in"
run secret list
rc=$?
[ $rc -eq 0 ] && [ "$(cat "$TMP/out")" = "vendor.tesla.client_secret" ]
ok $? "secret list shows the name"

! grep -q tesla-secret "$TMP/out" "$TMP/err"
ok $? "the value is shown nowhere"

[ "$(stat -c %a "$STORE")" = 600 ] && [ "$(stat -c %a "$(dirname "$STORE")")" = 700 ]
ok $? "store 0600 in a 0700 directory"

! grep -q -e tesla-secret -e vendor.tesla "$STORE"
ok $? "neither value nor name in the file on disk"

printf 'derapi-value' >"$TMP/in"
run secret set derapi.client_secret && : >"$TMP/in" && run secret list &&
	[ "$(cat "$TMP/out")" = "derapi.client_secret
vendor.tesla.client_secret" ]
ok $? "a second secret, without a trailing newline; names sorted"

printf 'x\n' >"$TMP/in"
run secret set vendor.tesla.client_secret extra-value
[ $? -eq 2 ] && grep -q "stdin" "$TMP/err"
ok $? "a value on the command line is refused"

printf '\n' >"$TMP/in"
run secret set relay.secret
[ $? -eq 2 ] && grep -q "empty" "$TMP/err"
ok $? "an empty value is refused"

printf 'v\n' >"$TMP/in"
run secret set 'bad name'
[ $? -eq 2 ]
ok $? "an invalid name is refused"

cp "$STORE" "$TMP/before"
printf 'wrong\n' >"$TMP/wrongpass"
: >"$TMP/in"
env DERENROLL_PASSPHRASE_FILE="$TMP/wrongpass" "$DERENROLL" secret list <"$TMP/in" >"$TMP/out" 2>"$TMP/err"
[ $? -eq 4 ] && grep -q "wrong passphrase" "$TMP/err" && cmp -s "$STORE" "$TMP/before"
ok $? "wrong passphrase: exit 4, file untouched"

if command -v setsid >/dev/null 2>&1; then
	setsid -w "$DERENROLL" secret list <"$TMP/in" >"$TMP/out" 2>"$TMP/err"
	[ $? -eq 4 ] && grep -q DERENROLL_PASSPHRASE_FILE "$TMP/err"
	ok $? "no passphrase file and no terminal: exit 4 saying what to do"
else
	ok 0 "# SKIP setsid is missing"
fi

# A passphrase file others can read is warned about, like a key file.
chmod 600 "$PASSFILE"
run secret list
! grep -q "can be read by others" "$TMP/err"
ok $? "a private passphrase file: no warning"
chmod 644 "$PASSFILE"
run secret list
st=$?
chmod 600 "$PASSFILE"
[ $st -eq 0 ] && grep -q "warning: the passphrase file $PASSFILE can be read by others: run 'chmod 600 $PASSFILE'" "$TMP/err"
ok $? "a passphrase file others can read: a warning naming the fix"

run secret remove derapi.client_secret && run secret list &&
	[ "$(cat "$TMP/out")" = "vendor.tesla.client_secret" ]
ok $? "secret remove"

run secret remove derapi.client_secret
[ $? -eq 2 ] && grep -q "no app secret" "$TMP/err"
ok $? "removing a missing secret: exit 2"

run --store "$TMP/none/store" secret list
[ $? -eq 0 ] && [ ! -s "$TMP/out" ] && [ ! -e "$TMP/none" ]
ok $? "a store that does not exist lists nothing and is not created"

mkdir -p "$XDG_CONFIG_HOME/derenroll"
printf '[store]\npath = %s\nencryption = off\n' "$TMP/plain/store" >"$XDG_CONFIG_HOME/derenroll/config.ini"
printf 'relay-value\n' >"$TMP/in"
run secret set relay.secret
[ $? -eq 0 ] && grep -q "not encrypted" "$TMP/err" && head -c1 "$TMP/plain/store" | grep -q '{'
ok $? "[store] path and encryption = off: plain JSON with a warning"

: >"$TMP/in"
run secret list
[ $? -eq 0 ] && grep -q "not encrypted" "$TMP/err" && [ "$(cat "$TMP/out")" = relay.secret ]
ok $? "the warning comes every time"
rm -f "$XDG_CONFIG_HOME/derenroll/config.ini"

chmod 644 "$STORE"
run secret list
[ $? -eq 2 ] && grep -q "chmod 600 $STORE" "$TMP/err"
ok $? "a store others can read is refused with the chmod that fixes it"
chmod 600 "$STORE"

printf 'demo-value\n' >"$TMP/in"
"$DERENROLL" --demo secret set demo.secret <"$TMP/in" >"$TMP/out" 2>"$TMP/err"
ok $? "--demo never asks for a passphrase"

ls "$TMP" | grep -q derenroll-demo
[ $? -ne 0 ]
ok $? "--demo leaves no store behind"

exit $failed
