#!/usr/bin/env bash
# The documentation agrees with the program, in both directions:
# - derenroll(1) and the bash completion with `derenroll --help` (sub-commands,
#   their options, the global options) and with each other;
# - derenroll.ini(5) with the keys core/config.c knows (and which are secret);
# - derenroll-relay(8) with the relay's options, EXIT STATUS with error.h.
# Usage: test_docs.sh DERENROLL CONFIG_KEYS SOURCE_ROOT
set -u
BIN=$1
KEYS_BIN=$2
SRC=$3
. "$SRC/tests/cli/lib.sh"

MAN1=$SRC/assets/man/derenroll.1.scd
MAN5=$SRC/assets/man/derenroll.ini.5.scd
MAN8=$SRC/assets/man/derenroll-relay.8.scd
COMPLETION=$SRC/assets/completion/derenroll

words() { printf '%s\n' "$@" | sed '/^$/d' | sort -u; }

# same NAME "A" "B": the two word lists hold the same words.
same() {
	local a b only_a only_b
	a=$(words $2)
	b=$(words $3)
	only_a=$(comm -23 <(echo "$a") <(echo "$b") | tr '\n' ' ')
	only_b=$(comm -13 <(echo "$a") <(echo "$b") | tr '\n' ' ')
	[ -z "$only_a$only_b" ]
	check $? "$1" "only in the first: ${only_a:-none}; only in the second: ${only_b:-none}"
}

# subset NAME "A" "B": every word of A is in B.
subset() {
	local missing
	missing=$(comm -23 <(words $2) <(words $3) | tr '\n' ' ')
	[ -z "$missing" ]
	check $? "$1" "missing: $missing"
}

# nonempty NAME "A": a parser found something (so that `same` cannot pass on two empty lists).
nonempty() {
	[ -n "$(words $2)" ]
	check $? "$1" "nothing found: the parser and the document's layout disagree"
}

long_options() { grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }

# ---- the program

HELP=$("$BIN" --help)
help_commands=$(awk '/^Commands:/ {f = 1; next} f && /^$/ {exit} f && /^  [a-z]/ {print $1}' <<<"$HELP")
help_globals=$(awk '/^Global options/ {f = 1; next} f && /^$/ {exit} f' <<<"$HELP" | long_options)
help_options() { awk -v c="$1" '/^Commands:/ {f = 1; next} f && /^  [a-z]/ && $1 == c {print; exit}' <<<"$HELP" | long_options; }

# ---- derenroll(1): "# COMMANDS" holds one "## name" per sub-command, whose
# option definitions are lines starting with *--option*.

man1_commands=$(awk '/^# / {f = ($0 == "# COMMANDS")} f && /^## / {print $2}' "$MAN1")
man1_options() {
	awk -v c="$1" '/^# / {f = ($0 == "# COMMANDS"); s = 0} f && /^## / {s = ($2 == c)}
		s && /^\t*\*--/' "$MAN1" | long_options
}
man1_globals=$(awk '/^# / {f = ($0 == "# GLOBAL OPTIONS")} f && /^\*-/' "$MAN1" | long_options)
man1_exit_codes=$(awk '/^# / {f = ($0 == "# EXIT STATUS")} f && /^\*[0-9]+\*$/' "$MAN1" | tr -d '*')

# ---- the bash completion, run as bash runs it.

# shellcheck source=../../assets/completion/derenroll
. "$COMPLETION"
# comp WORD...: what completing the last WORD offers.
comp() {
	COMP_WORDS=("$@")
	COMP_CWORD=$(($# - 1))
	COMPREPLY=()
	_derenroll 2>/dev/null
	printf '%s\n' "${COMPREPLY[@]}"
}

# ---- checks

nonempty "--help lists commands" "$help_commands"
nonempty "derenroll(1) has a COMMANDS section with sub-sections" "$man1_commands"
same "sub-commands: --help and derenroll(1)" "$help_commands" "$man1_commands"
same "sub-commands: --help and the completion" "$help_commands" "$(comp derenroll '')"

nonempty "--help lists global options" "$help_globals"
subset "global options of --help are in derenroll(1)" "$help_globals" "$man1_globals"
same "global options: derenroll(1) and the completion" "$man1_globals" "$(comp derenroll --)"

for c in $help_commands; do
	subset "'$c': the options of --help are in derenroll(1)" "$(help_options "$c")" \
		"$(man1_options "$c")"
	same "'$c': options of derenroll(1) and the completion" "$(man1_options "$c")" \
		"$(comp derenroll "$c" --)"
done
# Each command's own --help names every option it takes (the summary may not).
for c in $help_commands; do
	[ "$c" = help ] && continue
	# (global options named in its text, such as --demo, are not its own)
	own=$(comm -23 <("$BIN" "$c" --help 2>/dev/null | long_options) <(words $help_globals))
	subset "'$c': the options of 'derenroll $c --help' are in derenroll(1)" "$own" \
		"$(man1_options "$c")"
done
nonempty "derenroll(1) documents options of 'enroll'" "$(man1_options enroll)"
nonempty "derenroll(1) documents options of 'reauth'" "$(man1_options reauth)"
expect_in "'help' completes the commands" "refresh" "$(comp derenroll help '')"
run "$BIN" help refresh
expect_in "'derenroll help refresh' prints refresh's usage" "Usage: derenroll refresh" "$OUT"
run "$BIN" help nosuchcommand
expect_rc "'derenroll help' of an unknown command" 2
# The demo's setup installs no test tool; --tests does.
run_packages=$(sed -n '/^RUN_PACKAGES="/,/^"/p' "$SRC/packaging/setup.sh")
test_packages=$(sed -n '/^TEST_PACKAGES="/,/^"/p' "$SRC/packaging/setup.sh")
expect_not_in "setup.sh's run packages hold no chromium" "chromium" "$run_packages"
expect_not_in "setup.sh's run packages hold no lintian" "lintian" "$run_packages"
expect_in "setup.sh's test packages hold selenium" "python3-selenium" "$test_packages"
expect_in "the README's demo command" "    packaging/setup.sh && build/tui/derenroll --demo" \
	"$(cat "$SRC/README.md")"
expect_in "the README's test command" "    packaging/setup.sh --tests && meson test" \
	"$(cat "$SRC/README.md")"

man8_options=$(awk '/^# / {f = ($0 == "# OPTIONS")} f && /^\*--/' "$MAN8" | long_options)
nonempty "derenroll-relay(8) has OPTIONS" "$man8_options"
same "relay options: derenroll(1) and derenroll-relay(8)" "$(man1_options relay)" "$man8_options"

error_exit_codes=$(sed -n 's/^[[:space:]]*X([A-Z_]*, *-*[0-9]*, *\([0-9]*\),.*/\1/p' \
	"$SRC/core/include/derenroll/error.h")
nonempty "error.h has exit codes" "$error_exit_codes"
same "exit codes: error.h and derenroll(1) EXIT STATUS" "$error_exit_codes" "$man1_exit_codes"

catalog_vendors=$(sed -n 's/.*"config_section": *"vendor\.\([a-z0-9_]*\)".*/\1/p' \
	"$SRC/assets/vendors.json")
nonempty "vendors.json has vendors" "$catalog_vendors"
same "'enroll VENDOR' completes the vendors of vendors.json" "$catalog_vendors" \
	"$(comp derenroll enroll '')"
same "'--vendor' completes the vendors of vendors.json" "$catalog_vendors" \
	"$(comp derenroll --vendor '')"
same "'secret' completes its verbs" "set list remove" "$(comp derenroll secret '')"
expect_in "'join' completes create-flow" "create-flow" "$(comp derenroll join '')"
expect_in "'--vendors' completes after a comma" "tesla,sma" "$(comp derenroll join create-flow --vendors tesla,s)"
expect_in "the command is found after a global option's value" "--reveal" \
	"$(comp derenroll --config x.ini show --r)"

mkdir -p "$TMP/files"
: >"$TMP/files/company.ini"
expect_in "'--config' completes file names" "$TMP/files/company.ini" \
	"$(comp derenroll --config "$TMP/files/comp")"
expect_in "'--api-key-file' completes file names" "$TMP/files/company.ini" \
	"$(comp derenroll enroll solaredge --api-key-file "$TMP/files/c")"
: >"$TMP/files/api key.txt"
comp derenroll enroll solaredge --api-key-file "$TMP/files/api" | grep -qxF "$TMP/files/api key.txt"
check $? "a file name with a space is one completion"

# ---- derenroll.ini(5): "# SECTIONS" holds one "## [section]" per section,
# whose keys are lines starting with *key*, marked "(secret)" when secret.

KEYS=$("$KEYS_BIN")
man5_keys=$(awk '/^# / {f = ($0 == "# SECTIONS"); s = ""}
	f && /^## \[.*\]$/ {s = substr($2, 2, length($2) - 2)}
	f && s != "" && /^\*[a-z0-9_]+\*/ {
		k = $1; gsub(/\*/, "", k)
		print s ":" k ":" (index($0, "(secret)") ? "secret" : "plain")
	}' "$MAN5")
code_keys=$(awk '{print $1 ":" $2 ":" $3}' <<<"$KEYS")
nonempty "core/config.c knows keys" "$code_keys"
nonempty "derenroll.ini(5) documents keys" "$man5_keys"
same "config keys (section:key:secret?): core/config.c and derenroll.ini(5)" \
	"$code_keys" "$man5_keys"
expect_in "derenroll.ini(5) explains <key>_file" "*key_file = path*" "$(cat "$MAN5")"
expect_in "derenroll.ini(5) explains the store fallback" "derenroll secret set" "$(cat "$MAN5")"
expect_in "derenroll.ini(5) explains the permission rule" "chmod 600" "$(cat "$MAN5")"

# Every secret name the completion offers is a secret key config.c knows.
bad_names=""
for name in $(comp derenroll secret set ''); do
	section=${name%.*}
	key=${name##*.}
	case $section in vendor.*) section="vendor.<id>" ;; esac
	grep -qx "$section $key secret" <<<"$KEYS" || bad_names="$bad_names $name"
done
[ -z "$bad_names" ] && [ -n "$(comp derenroll secret set '')" ]
check $? "'secret set NAME' completes known secret names only" "unknown:$bad_names"

plan "$N"
finish
