#!/usr/bin/env bash
# The command line: help, version, option parsing, and bad input (exit 2, one line).
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
plan 54

run "$BIN" --version
expect_rc "--version" 0
expect_in "--version names the version" "derenroll 0." "$OUT"

run "$BIN" --help
expect_rc "--help" 0
for c in list show status refresh enroll remove export secret sandbox relay join reauth; do
	expect_in "--help lists '$c'" "  $c " "$OUT"
done
for o in --config --store --demo; do
	expect_in "--help lists $o" "$o" "$OUT"
done

run "$BIN" --frobnicate
expect_rc "unknown long option" 2
expect_one_line "unknown option: one line" "$ERR"
expect_in "unknown option is named" "--frobnicate" "$ERR"

run "$BIN" -x
expect_rc "unknown short option" 2

run "$BIN" --config
expect_rc "--config without its argument" 2

run "$BIN" frobnicate
expect_rc "unknown command" 2
expect_in "unknown command is named" "unknown command 'frobnicate'" "$ERR"

run "$BIN" --config "$TMP/missing/config.ini" </dev/null
expect_rc "missing --config file" 2
expect_one_line "missing config: one line" "$ERR"
expect_in "missing config names the file" "$TMP/missing/config.ini" "$ERR"

printf '[vendor.tesla]\nclient_secret = hunter2-secret\n' >"$TMP/open.ini"
chmod 644 "$TMP/open.ini"
run "$BIN" --config "$TMP/open.ini" </dev/null
expect_rc "readable config with an inline secret" 2
expect_in "the fix is named" "chmod 600 $TMP/open.ini" "$ERR"
expect_not_in "the secret is not printed" "hunter2" "$ERR"

# A --store that is someone else's file: said so, no advice to change its mode.
printf 'root:x:0:0:root:/root:/bin/bash\n' >"$TMP/passwd"
chmod 644 "$TMP/passwd"
run "$BIN" --store "$TMP/passwd" list </dev/null
expect_rc "a file that is not a store" 4
expect_one_line "not a store: one line" "$ERR"
expect_in "it says what it is not" "is not a derenroll credential store" "$ERR"
expect_not_in "no chmod advice for it" "chmod" "$ERR"
# A damaged store with no previous generation names none.
printf 'DRNSTORE' >"$TMP/cut-store"
chmod 600 "$TMP/cut-store"
run "$BIN" --store "$TMP/cut-store" list </dev/null
expect_rc "a damaged store" 4
expect_in "it is damaged" "is damaged" "$ERR"
expect_in "there is no .bak to copy" "there is no previous generation" "$ERR"
expect_not_in "no advice to copy a .bak that is not there" "copy it over" "$ERR"

printf '[ui]\nexpiring_days = 3\nnot a setting\n' >"$TMP/syntax.ini"
run "$BIN" --config "$TMP/syntax.ini" </dev/null
expect_rc "config syntax error" 2
expect_in "syntax error names file and line" "syntax.ini:3:" "$ERR"

printf '[ui]\nexpiring_days = 3\ncolour = red\n[vendor.huawei]\nclient_id = x\n' >"$TMP/warn.ini"
run "$BIN" --config "$TMP/warn.ini" </dev/null
expect_in "unknown key warned with its line" "warn.ini:3: unknown key 'colour' in [ui]" "$ERR"
expect_in "unknown vendor section warned" "[vendor.huawei] names no known vendor" "$ERR"
expect_in "the vendor warning names the config's file" "$TMP/warn.ini: [vendor.huawei]" "$ERR"
printf '[log]\nlevel = loud\n' >"$TMP/level.ini"
run "$BIN" --config "$TMP/level.ini" list </dev/null
expect_rc "a bad [log] level" 2
expect_in "the [log] level error names the config's file" "$TMP/level.ini: [log] level" "$ERR"

mkdir -p "$TMP/data"
printf '{"schema": 1, "vendors": [' >"$TMP/data/vendors.json"
DERENROLL_DATADIR="$TMP/data" run "$BIN" </dev/null
expect_rc "truncated vendors.json" 2
expect_in "truncated vendors.json is named" "$TMP/data/vendors.json" "$ERR"

sed 's/"name": "Tesla",//' "$(dirname "$0")/../../assets/vendors.json" >"$TMP/data/vendors.json"
DERENROLL_DATADIR="$TMP/data" run "$BIN" </dev/null
expect_rc "vendor missing a field" 2
expect_in "vendor and field are named" "vendor 'tesla': field 'name' is missing" "$ERR"

# A password in --store (argv, which every user reads): warned about, never repeated.
run "$BIN" --store 'postgresql://ann:s3cret-pw@127.0.0.1:1/db?connect_timeout=1' list
expect_rc "a team store that cannot be reached is listed from the outbox" 0
expect_in "a password in --store is warned about" "the password in --store can be read" "$ERR"
expect_not_in "the password is in no message" "s3cret-pw" "$OUT$ERR"
run "$BIN" --store 'postgresql://ann@127.0.0.1:1/db?connect_timeout=1' list
expect_not_in "no password, no warning" "the password in --store" "$ERR"

finish
