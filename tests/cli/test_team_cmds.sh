#!/usr/bin/env bash
# The team store's own commands (store init, team add|list|remove, log) and
# reauth on a team store, against a real PostgreSQL (tests/pg_serve.c) and the
# real `derenroll sandbox`: every exit code, what each says, and that a removed
# member can no longer open the store. Members other than the database user are
# chosen with `[store] member = NAME` in their config file.
set -u
BIN=$1
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
plan 89

need_tools jq

CONF="$TMP/config.ini"
start_sandbox "$BIN" "$CONF"
pg_start
printf 'correct horse\n' >"$TMP/pass"
printf 'bob battery staple\n' >"$TMP/bob.pass"
printf 'carol cable tie\n' >"$TMP/carol.pass"
printf 'wrong horse\n' >"$TMP/wrong"
: >"$TMP/empty"
chmod 600 "$TMP/pass" "$TMP/bob.pass" "$TMP/carol.pass" "$TMP/wrong" "$TMP/empty"
export DERENROLL_PASSPHRASE_FILE="$TMP/pass"
# as_member NAME: a config of NAME's own; M NAME CMD...: NAME runs CMD with their passphrase.
as_member() { cp "$CONF" "$TMP/$1.ini" && printf '\n[store]\nmember = %s\n' "$1" >>"$TMP/$1.ini"; }
as_member bob
as_member carol
# D: the first member, the database user (postgres), who has no [store] member.
D() { "$BIN" --config "$CONF" --store "$PG_URL" "$@"; }
M() {
	local who=$1
	shift
	DERENROLL_PASSPHRASE_FILE="$TMP/$who.pass" "$BIN" --config "$TMP/$who.ini" \
		--store "$PG_URL" "$@"
}
secret() { printf '%s' "$2" >"$TMP/$1"; chmod 600 "$TMP/$1"; }
# members: the names `team list` prints, one a line, sorted.
members() { D team list | awk 'NR > 1 { print $1 }'; }
ALL_LOG="$TMP/all-log"
: >"$ALL_LOG"
keep_log() { printf '%s\n%s\n' "$OUT" "$ERR" >>"$ALL_LOG"; }
# log_line MEMBER ACTION RECORD RESULT: an ERE for one line of `log` (a member
# who is not the database user may be followed by the login they used).
log_line() { printf '^[0-9-]{10}T[0-9:]{8}Z +%s( \\(login [^)]*\\))? +%s +%s +%s$' "$@"; }

# ---- store --help, store init
run D store --help
expect_rc "store --help" 0
expect_in "store --help prints the usage" "Usage: derenroll store init" "$OUT"
expect_in "store --help says init is safe to run again" "Safe to run again." "$OUT"
run D store init
expect_rc "store init of an empty database" 0
[ "$OUT" = "team store $PG_URL is ready: 0 records" ]
check $? "store init says the team store is ready" "$OUT"
run D team list
expect_rc "team list after store init" 0
expect_in "team list has a header" "MEMBER                   ADDED                BY" "$OUT"
[ "$(members)" = postgres ]
check $? "the first member is the database user" "$OUT"
[ "$(awk 'NR == 2 { print $3 }' <<<"$OUT")" = postgres ]
check $? "added by the database user" "$OUT"
run D store init
expect_rc "store init again" 0
expect_in "store init again: still ready" "is ready: 0 records" "$OUT"
[ "$(members)" = postgres ]
check $? "store init again adds no member" "$(D team list 2>&1)"
run D store
expect_rc "store without a command" 2
run D store init now
expect_rc "store init with an operand" 2

# ---- team add
run D team add bob </dev/null
expect_rc "team add without --passphrase-file and no terminal" 4
expect_in "team add says to give --passphrase-file" "--passphrase-file FILE" "$ERR"
[ "$(members)" = postgres ]
check $? "a refused team add adds no one" "$(D team list 2>&1)"
run D team add bob --passphrase-file "$TMP/empty"
expect_rc "team add with an empty passphrase file" 4
expect_in "says the passphrase file is empty" "is empty" "$ERR"
run D team add bob --passphrase-file "$TMP/bob.pass"
expect_rc "team add" 0
[ "$OUT" = "added bob to the team store $PG_URL" ]
check $? "team add says whom it added" "$OUT"
run D team list
expect_rc "team list" 0
[ "$(members | tr '\n' ' ')" = "bob postgres " ]
check $? "team list names both members" "$OUT"
[ "$(awk '$1 == "bob" { print $3 }' <<<"$OUT")" = postgres ]
check $? "team list: bob was added by postgres" "$OUT"
run D team add bob --passphrase-file "$TMP/carol.pass"
expect_rc "team add of an existing member" 2
expect_in "says bob is already a member" "bob is already a member of the team store" "$ERR"
run D team add "bad name" --passphrase-file "$TMP/carol.pass"
expect_rc "team add of a bad name" 2
expect_in "says it is not a member name" "'bad name' is not a member name" "$ERR"
[ "$(members | tr '\n' ' ')" = "bob postgres " ]
check $? "refused adds change no member" "$(D team list 2>&1)"
run D team
expect_rc "team without a command" 2
expect_in "team without a command prints the usage" "Usage: derenroll team add NAME" "$ERR"
run D team list --passphrase-file "$TMP/bob.pass"
expect_rc "team list with --passphrase-file" 2

# ---- bob, a member of his own: [store] member and his passphrase
secret se1 "teamkey0001"
secret se2 "teamkey0002"
DERENROLL_PASSPHRASE_FILE="$TMP/wrong" run "$BIN" --config "$TMP/bob.ini" --store "$PG_URL" \
	enroll solaredge --customer "Alice Adams" --api-key-file "$TMP/se1"
expect_rc "a member with a wrong passphrase" 4
expect_in "says whose passphrase is wrong" "wrong passphrase for member bob" "$ERR"
run M bob enroll solaredge --customer "Alice Adams" --api-key-file "$TMP/se1" --json
expect_rc "bob enrolls a SolarEdge key" 0
SE1=$(jq -r .id <<<"$OUT")
run M bob enroll solaredge --customer "Bob Brown" --api-key-file "$TMP/se2" --json
expect_rc "bob enrolls a second SolarEdge key" 0
SE2=$(jq -r .id <<<"$OUT")
[ -n "$SE1" ] && [ -n "$SE2" ] && [ "$SE1" != "$SE2" ]
check $? "two records" "$SE1 $SE2"

# ---- reauth on the team store: the same account only
run M bob reauth "$SE1" --api-key-file "$TMP/se1"
expect_rc "reauth with the same key" 0
expect_in "reauth says it updated the record" "Updated $SE1" "$OUT"
secret other "TEAMOTHERKEY$RANDOM$RANDOM"
run M bob reauth "$SE1" --api-key-file "$TMP/other"
expect_rc "reauth with another account's key" 1
expect_in "says it looks like another account" "another account" "$ERR"
run D show --json --reveal "$SE1"
jq -e '.credentials.api_key == "teamkey0001"' <<<"$OUT" >/dev/null
check $? "the refused reauth kept the record's key" "$OUT"
run M bob reauth NOSUCHID00 --api-key-file "$TMP/se1"
expect_rc "reauth of an unknown record" 2

# ---- log: who did what, of one record or all
run D remove --yes "$SE2"
expect_rc "postgres removes a record" 0
run D log
keep_log
expect_rc "log" 0
expect_in "log has a header" "TIME                  MEMBER            ACTION        RECORD      RESULT" "$OUT"
grep -Eq "$(log_line postgres 'team create' - 'ok: postgres')" <<<"$OUT"
check $? "log: postgres created the team" "$OUT"
grep -Eq "$(log_line postgres 'team add' - 'ok: bob')" <<<"$OUT"
check $? "log: postgres added bob" "$OUT"
grep -Eq "$(log_line bob add "$SE2" ok)" <<<"$OUT"
check $? "log: bob added the second record" "$OUT"
grep -Eq "$(log_line postgres remove "$SE2" ok)" <<<"$OUT"
check $? "log: postgres removed it" "$OUT"
run D log "$SE2"
keep_log
expect_rc "log ID" 0
[ "$(wc -l <<<"$OUT")" = 3 ] && sed -n 2p <<<"$OUT" | grep -Eq "$(log_line bob add "$SE2" ok)" &&
	sed -n 3p <<<"$OUT" | grep -Eq "$(log_line postgres remove "$SE2" ok)"
check $? "log ID: that record's lines only, oldest first" "$OUT"
run M bob log "$SE1"
keep_log
expect_rc "log ID by another member" 0
[ "$(sed 1d <<<"$OUT" | grep -Evc " $SE1 +ok\$")" = 0 ] && [ "$(wc -l <<<"$OUT")" = 3 ]
check $? "log ID names no other record" "$OUT"
grep -Eq "$(log_line bob update "$SE1" ok)" <<<"$OUT"
check $? "log ID: bob's reauth is there" "$OUT"
run D log --limit 1
keep_log
expect_rc "log --limit 1" 0
[ "$(wc -l <<<"$OUT")" = 2 ] && grep -Eq "$(log_line postgres remove "$SE2" ok)" <<<"$OUT"
check $? "log --limit 1: the newest line only" "$OUT"
run D log --limit 0
expect_rc "log --limit 0" 2
run D log --limit lots
expect_rc "log --limit not a number" 2
run D log "$SE1" "$SE2"
expect_rc "log with two ids" 2
run D log NOSUCHID00
expect_rc "log of an unknown record" 0
[ "$(wc -l <<<"$OUT")" = 1 ]
check $? "log of an unknown record: the header alone" "$OUT"
run "$BIN" --config "$CONF" log
expect_rc "log on a file store" 2
expect_in "log: the log is the team store's" "team store" "$ERR"

# ---- team remove: the removed member can no longer open the store
run D team add carol --passphrase-file "$TMP/carol.pass"
expect_rc "team add carol" 0
run M carol show --json --reveal "$SE1"
expect_rc "carol opens the store" 0
run D team remove carol
expect_rc "team remove" 0
[ "$OUT" = "removed carol from the team store $PG_URL; the team key is new" ]
check $? "team remove says the team key is new" "$OUT"
[ "$(members | tr '\n' ' ')" = "bob postgres " ]
check $? "team list no longer names carol" "$(D team list 2>&1)"
run M carol show --json --reveal "$SE1"
expect_rc "the removed member cannot open the credentials" 4
expect_in "says carol is not a member" "carol is not a member of the team store" "$ERR"
expect_not_in "nothing secret reached the removed member" "teamkey0001" "$OUT$ERR"
secret se3 "teamkey0003"
run M carol enroll solaredge --customer "Carol Chen" --api-key-file "$TMP/se3"
expect_rc "the removed member cannot enroll" 4
[ "$(D list --json | jq length)" = 1 ]
check $? "nothing was enrolled by the removed member" "$(D list 2>&1)"
run D team remove carol
expect_rc "team remove of a non-member" 2
expect_in "says carol is not a member" "carol is not a member" "$ERR"
# bob removes the first member, the database user.
run M bob team remove postgres
expect_rc "bob removes postgres" 0
run D show --json --reveal "$SE1"
expect_rc "the removed database user cannot open the credentials" 4
expect_in "says postgres is not a member" "postgres is not a member" "$ERR"
run D store init
expect_rc "store init by a removed member" 4
expect_in "store init says who adds them" "derenroll team add postgres" "$ERR"
run M bob show --json --reveal "$SE1"
jq -e '.credentials.api_key == "teamkey0001"' <<<"$OUT" >/dev/null
check $? "the remaining member opens the record under the new team key" "$OUT"
run M bob team remove bob
expect_rc "removing the last member" 2
expect_in "says to add another one first" "only member: add another one first" "$ERR"
[ "$(members)" = bob ]
check $? "the last member stays" "$(D team list 2>&1)"
run M bob log
keep_log
grep -Eq "$(log_line postgres 'team remove' - 'ok: carol')" <<<"$OUT" &&
	grep -Eq "$(log_line bob 'team remove' - 'ok: postgres')" <<<"$OUT"
check $? "log: who removed whom" "$OUT"

# ---- no secret in any log output
FOUND=""
for s in teamkey0001 teamkey0002 teamkey0003 "$(cat "$TMP/other")" "correct horse" \
	"bob battery staple" "carol cable tie"; do
	grep -qF "$s" "$ALL_LOG" && FOUND="$FOUND '$s'"
done
[ -z "$FOUND" ] && [ -s "$ALL_LOG" ]
check $? "no key or passphrase in any log output" "found:$FOUND"

# ---- what another client wrote into the log reaches no terminal raw
psql -qX "$PG_URL" -c "INSERT INTO audit (member, action, record, result) VALUES \
	(E'eve\\x1b]0;pwned\\x07', E'add\\x1b[2J', 'x', E'ok\\r\\nforged')" >/dev/null
run M bob log --limit 1
expect_in "log: a control character in the log is shown escaped" 'eve\x1b]0;pwned\x07' "$OUT"
[ "$(printf '%s' "$OUT" | tr -d '\n' | LC_ALL=C grep -c "$(printf '[\033\007\r]')")" = 0 ]
check $? "log: no raw control character reaches the terminal" "$(printf '%s' "$OUT" | od -c | head)"

finish
