#!/usr/bin/env bash
# The support staff's commands (list, show, status, refresh, remove, export)
# against the real `derenroll sandbox` in the background: every command, every
# exit code, and bad input. Records are made with `derenroll enroll`: key
# methods directly, OAuth by playing the customer with curl.
set -u
BIN=$1
MODE=${2:-file} # team: the same against a team store on PostgreSQL
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
if [ "$MODE" = team ]; then plan 115; else plan 111; fi

need_tools jq curl

CONF="$TMP/config.ini"
start_sandbox "$BIN" "$CONF"
URL=$(jq -r .url "$TMP/line")
SOLIS_SECRET=$(jq -r .credentials.solis.key_secret "$TMP/line")
printf 'correct horse\n' >"$TMP/pass"
chmod 600 "$TMP/pass"
export DERENROLL_PASSPHRASE_FILE="$TMP/pass"
STORE="$XDG_DATA_HOME/derenroll/store"
STORE_ARGS=()
if [ "$MODE" = team ]; then
	pg_start
	STORE_ARGS=(--store "$PG_URL")
fi
D() { "$BIN" --config "$CONF" "${STORE_ARGS[@]}" "$@"; }
secret() { printf '%s' "$2" >"$TMP/$1"; chmod 600 "$TMP/$1"; }
fault() { curl -sS -o /dev/null -X POST -d "$1" "$URL/_sandbox/faults"; }
clear_faults() { curl -sS -o /dev/null -X DELETE "$URL/_sandbox/faults"; }
# on_tty CMD...: runs CMD with a terminal as stdin, stdout and stderr (input from $TTY_IN).
on_tty() { script -qec "$(printf '%q ' "$@")" /dev/null <<<"${TTY_IN:-}"; }
id_of() { jq -r --arg c "$1" '.[] | select(.customer == $c) | .id' <<<"$(D list --json)"; }

# ---- nothing yet
run D list
expect_rc "list with no store" 0
[ "$OUT" = "no enrolled systems (in ${PG_URL:-$XDG_DATA_HOME/derenroll/store})" ]
check $? "list with no store says so" "$OUT"
run D list --json
expect_rc "list --json with no store" 0
[ "$OUT" = "[]" ]
check $? "list --json with no store prints []" "$OUT"
if [ "$MODE" = file ]; then
	[ ! -e "$STORE" ]
	check $? "listing creates no store"
fi

# ---- records: keys need no browser
secret se1 "supportkey0001"
run D enroll solaredge --customer "Alice Adams" --api-key-file "$TMP/se1"
expect_rc "enroll a SolarEdge key" 0
secret se2 "supportkey0002"
run D enroll solaredge --customer "Bob Brown" --api-key-file "$TMP/se2"
expect_rc "enroll a second SolarEdge key" 0
secret solis "$SOLIS_SECRET"
run D enroll solis --customer "Carol Chen" --key-id demo-support-1 --key-secret-file "$TMP/solis"
expect_rc "enroll a Solis key pair" 0

# ---- an OAuth record: the customer approves the short link on "their phone"
D enroll tesla --customer "Dan Diaz" >"$TMP/enroll.out" 2>"$TMP/enroll.err" &
EPID=$!
CLEANUP_PIDS="$CLEANUP_PIDS $EPID"
for _ in $(seq 100); do
	[ -s "$TMP/enroll.out" ] && break
	sleep 0.1
done
LINK=$(head -n1 "$TMP/enroll.out")
AUTH=$(curl -sS -o /dev/null -w '%{redirect_url}' "$LINK")
CALLBACK=$(curl -sS -o /dev/null -w '%{redirect_url}' "$AUTH&sandbox_auto=approve")
curl -sS -o /dev/null "$CALLBACK"
wait "$EPID"
check $? "enroll tesla completes once the customer approves" "$(cat "$TMP/enroll.err")"
TESLA=$(id_of "Dan Diaz")
SE1=$(id_of "Alice Adams")
SE2=$(id_of "Bob Brown")
SOLIS=$(id_of "Carol Chen")
[ -n "$TESLA" ] && [ -n "$SE1" ] && [ -n "$SE2" ] && [ -n "$SOLIS" ]
check $? "four records" "$(D list 2>&1)"

# ---- list
run D list
expect_rc "list" 0
expect_in "list has a header" "ID          STATUS    VENDOR     METHOD   DUE         CUSTOMER" "$OUT"
expect_in "list names the customer" "Carol Chen" "$OUT"
[ "$(awk '{ if (length($0) > 80) n++ } END { print n + 0 }' <<<"$OUT")" = 0 ]
check $? "list fits 80 columns" "$OUT"
[ "$(wc -l <<<"$OUT")" = 5 ]
check $? "list has one line per record" "$OUT"
run D list --json
expect_rc "list --json" 0
jq -e 'length == 4 and all(.[]; (keys_unsorted == ["id","customer","vendor","method","account","region","sites","status","access_expires_at","refresh_expires_at","created_at","updated_at","last_check"]))' <<<"$OUT" >/dev/null
check $? "list --json has exactly the documented fields" "$OUT"
jq -e 'all(.[]; .created_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"))' <<<"$OUT" >/dev/null
check $? "times are RFC 3339 UTC" "$OUT"
expect_not_in "list --json holds no secret" "supportkey0001" "$OUT"
expect_not_in "list --json holds no Solis secret" "$SOLIS_SECRET" "$OUT"
run D list --due 30
expect_rc "list --due 30" 0
[ "$OUT" = "no systems due in 30 days" ]
check $? "list --due: nothing needs a person yet, and it says so" "$OUT"
run D list --due -1
expect_rc "list --due -1" 2
run D list --due soon
expect_rc "list --due soon" 2
run D list "$SE1"
expect_rc "list with an operand" 2

# ---- show
run D show "$SE1"
expect_rc "show" 0
expect_in "show names the customer" "Alice Adams" "$OUT"
expect_in "show masks the key" "********" "$OUT"
expect_not_in "show does not print the key" "supportkey0001" "$OUT"
run D show "$SE1" --reveal
expect_rc "show --reveal" 0
expect_in "show --reveal prints the key" "supportkey0001" "$OUT"
run D show --json "$SOLIS"
expect_rc "show --json" 0
jq -e '.id and (has("credentials") | not)' <<<"$OUT" >/dev/null
check $? "show --json has no credentials" "$OUT"
run D show --json --reveal "$SOLIS"
jq -e --arg s "$SOLIS_SECRET" '.credentials.key_secret == $s' <<<"$OUT" >/dev/null
check $? "show --json --reveal has the credentials" "$OUT"
run D show NOSUCHID00
expect_rc "show an unknown ID" 2
expect_in "the message names the ID" "NOSUCHID00" "$ERR"
run D show
expect_rc "show without an ID" 2
run D show "$SE1" --yes
expect_rc "show with an option of another command" 2

# ---- status
run D status
expect_rc "status, all good" 0
expect_in "status lists every record" "$SOLIS" "$OUT"
run D status --json
expect_rc "status --json" 0
jq -e 'length == 4 and all(.[]; .result == "ok" and .status == "ok" and (.sites | type == "number") and .message == null)' <<<"$OUT" >/dev/null
check $? "status --json: every result ok" "$OUT"
[ -z "$ERR" ]
check $? "no progress on stderr when it is not a terminal" "$ERR"
run D status "$SE2" "$SOLIS"
expect_rc "status of two IDs" 0
[ "$(wc -l <<<"$OUT")" = 3 ]
check $? "status ID ID reports two records under a header" "$OUT"
expect_in "status has a header" "ID          VENDOR     STATUS    CUSTOMER" "$OUT"
expect_in "status names the customer" "Carol Chen" "$OUT"
expect_not_in "status to a pipe: no colour" $'\033[' "$OUT"
expect_not_in "status to a pipe: no marks" "✓" "$OUT"
LC_ALL=C.UTF-8 TERM=xterm run on_tty "$BIN" --config "$CONF" "${STORE_ARGS[@]}" status "$SOLIS"
expect_in "status on a terminal: a ✓" "✓ " "$OUT"
expect_in "status on a terminal: colour" $'\033[32mok' "$OUT"
NO_COLOR=1 LC_ALL=C.UTF-8 TERM=xterm run on_tty "$BIN" --config "$CONF" "${STORE_ARGS[@]}" status "$SOLIS"
expect_not_in "NO_COLOR: no colour" $'\033[' "$OUT"
run D status NOSUCHID00
expect_rc "status of an unknown ID" 2
# A revoked key: the customer is needed.
curl -sS -o /dev/null -X POST -d '{"vendor":"solaredge","account":"supportkey0002"}' "$URL/_sandbox/revoke"
run D status --json
expect_rc "status with a revoked key" 1
jq -e --arg id "$SE2" '.[] | select(.id == $id) | .result == "rejected" and .status == "rejected" and (.message | length > 0)' <<<"$OUT" >/dev/null
check $? "the revoked record is rejected with a message" "$OUT"
run D list
[ "$(sed -n 2p <<<"$OUT" | awk '{print $1, $2}')" = "$SE2 rejected" ]
check $? "list shows the rejected record first" "$OUT"
[ "$(sed -n 2p <<<"$OUT" | awk '{print $5}')" = "now" ]
check $? "list: a rejected record is due now" "$OUT"
run D show "$SE2"
expect_in "show: a rejected record needs the customer now" "customer needed by       now" "$OUT"
run D list --due 0 --json
jq -e --arg id "$SE2" 'length == 1 and .[0].id == $id and .[0].last_check.result == "rejected"' <<<"$OUT" >/dev/null
check $? "list --due keeps the record that needs a person" "$OUT"
# The vendor failing: only temporary failures remain (each try is retried, then given up).
fault '{"vendor":"solis","kind":"500","count":0}'
run D status "$SOLIS"
expect_rc "status while Solis answers 500" 3
expect_in "the message says it is temporary" "$SOLIS" "$OUT"
clear_faults
fault '{"vendor":"solis","kind":"429","count":1,"retry_after":1}'
run D status --json "$SOLIS"
expect_rc "status after one 429 (retried after Retry-After)" 0
clear_faults
# The progress line (runs longer than a second) is tested in test_time_bounds.sh.
run on_tty "$BIN" --config "$CONF" "${STORE_ARGS[@]}" status "$SE1"
expect_in "status on a terminal prints the result" "$SE1" "$OUT"

# ---- refresh
run D refresh --json
expect_rc "refresh everything that can be refreshed" 0
jq -e --arg id "$TESLA" 'length == 1 and .[0].id == $id and .[0].refreshed == true' <<<"$OUT" >/dev/null
check $? "refresh refreshed the Tesla record only" "$OUT"
run D refresh "$TESLA"
expect_rc "refresh ID" 0
expect_in "refresh says so" "refreshed" "$OUT"
run D refresh --due 3 --json
expect_rc "refresh --due 3" 0
[ "$OUT" = "[]" ]
check $? "refresh --due 3: nothing expires within 3 days" "$OUT"
run D refresh --due 3 "$TESLA"
expect_rc "refresh --due with an ID conflicts" 2
run D refresh "$SE1"
expect_rc "refresh a key record: nothing to do" 0
expect_in "refresh says there is nothing to refresh" "nothing to refresh" "$OUT"
expect_not_in "a key record is not transient" "transient" "$OUT"
run D refresh --due 3
expect_in "refresh --due 3 says nothing is due" "no systems due in 3 days" "$OUT"
# Why a record is expiring: with a year's notice, Tesla's refresh token is.
cp "$CONF" "$TMP/year.ini"
printf '\n[ui]\nexpiring_days = 365\n' >>"$TMP/year.ini"
run "$BIN" --config "$TMP/year.ini" "${STORE_ARGS[@]}" status "$TESLA"
expect_rc "status of an expiring record" 1
expect_in "status says why it is expiring" "the refresh token expires" "$OUT"
# An access token that has expired: refresh --due includes it.
curl -sS -o /dev/null -X POST -d '{"access_ttl":1}' "$URL/_sandbox/settings"
run D refresh "$TESLA"
curl -sS -o /dev/null -X POST -d '{"access_ttl":0}' "$URL/_sandbox/settings"
sleep 2
run D refresh --due 3 --json
jq -e --arg id "$TESLA" 'length == 1 and .[0].id == $id and .[0].refreshed == true' <<<"$OUT" >/dev/null
check $? "refresh --due includes a record whose access token expired" "$OUT"
# Enphase partner tokens: an access token refused early is refreshed, not rejected ...
jq -r .credentials.enphase_partner.access_token "$TMP/line" >"$TMP/p_token"
jq -r .credentials.enphase_partner.refresh_token "$TMP/line" >"$TMP/p_refresh"
jq -r .credentials.enphase_partner.api_key "$TMP/line" >"$TMP/p_key"
chmod 600 "$TMP/p_token" "$TMP/p_refresh" "$TMP/p_key"
P_SITES=$(D enroll enphase --method partner --customer Pat --token-file "$TMP/p_token" \
	--api-key-file "$TMP/p_key" 2>&1 | sed -n 's/^  \([0-9][0-9]*\) .*/\1/p')
P_SITE=$(sed -n 1p <<<"$P_SITES")
run D enroll enphase --method partner --customer "Pat Partner" --token-file "$TMP/p_token" \
	--refresh-token-file "$TMP/p_refresh" --api-key-file "$TMP/p_key" --site "$P_SITE"
expect_rc "enroll an Enphase partner record" 0
PARTNER=$(id_of "Pat Partner")
run D enroll enphase --method partner --customer "Nora Norefresh" --token-file "$TMP/p_token" \
	--api-key-file "$TMP/p_key" --site "$(sed -n 2p <<<"$P_SITES")"
expect_rc "enroll an Enphase partner record without a refresh token" 0
NOREFRESH=$(id_of "Nora Norefresh")
curl -sS -o /dev/null -X POST -d "{\"token\":\"$(cat "$TMP/p_token")\"}" "$URL/_sandbox/expire"
run D status --json "$PARTNER"
expect_rc "status of an Enphase record whose access token expired" 0
jq -e '.[0].result == "ok" and .[0].refreshed == true' <<<"$OUT" >/dev/null
check $? "its valid refresh token renewed it: not rejected" "$OUT"
# ... and one without a refresh token needs the customer: rejected, not transient.
run D refresh --json "$NOREFRESH"
expect_rc "refresh a record without a refresh token" 1
jq -e '.[0].result == "rejected"' <<<"$OUT" >/dev/null
check $? "a record without a refresh token is rejected" "$OUT"
run D remove --yes "$PARTNER"
run D remove --yes "$NOREFRESH"
TOKEN=$(D show --json --reveal "$TESLA" | jq -r .credentials.refresh_token)
curl -sS -o /dev/null -X POST -d "{\"token\":\"$TOKEN\"}" "$URL/_sandbox/revoke"
run D refresh --json "$TESLA"
expect_rc "refresh a revoked token" 1
jq -e '.[0].result == "rejected"' <<<"$OUT" >/dev/null
check $? "the revoked refresh is rejected" "$OUT"

# ---- export
run D export --json
expect_rc "export --json to a pipe" 0
jq -e --arg s "$SOLIS_SECRET" '.format == "derenroll-export" and (.records | length == 4) and any(.records[]; .credentials.key_secret == $s)' <<<"$OUT" >/dev/null
check $? "export holds every record with its secrets" "$(head -c 300 <<<"$OUT")"
run D export
expect_rc "export without --json" 2
run on_tty "$BIN" --config "$CONF" "${STORE_ARGS[@]}" export --json
expect_in "export refuses a terminal" "redirect it" "$OUT"
expect_not_in "nothing secret reached the terminal" "$SOLIS_SECRET" "$OUT"
run on_tty "$BIN" --config "$CONF" "${STORE_ARGS[@]}" export --json --force
expect_in "export --force writes to a terminal" "$SOLIS_SECRET" "$OUT"
expect_in "export on a terminal warns that it prints secrets" "warning: printing every" "$OUT"

# ---- remove
run D remove "$SE2"
expect_rc "remove without --yes and without a terminal" 2
expect_in "remove says to add --yes" "--yes" "$ERR"
TTY_IN=n run on_tty "$BIN" --config "$CONF" "${STORE_ARGS[@]}" remove "$SE2"
expect_in "remove asks on a terminal" "[y/N]" "$OUT"
expect_rc "answering no" 1
[ -n "$(D show --json "$SE2" 2>/dev/null)" ]
check $? "answering no keeps the record"
TTY_IN=y run on_tty "$BIN" --config "$CONF" "${STORE_ARGS[@]}" remove "$SE2"
expect_in "answering yes removes it" "Removed $SE2" "$OUT"
run D remove "$SE1" --yes
expect_rc "remove --yes" 0
run D show "$SE1"
expect_rc "the removed record is gone" 2
run D remove "$SE1" --yes
expect_rc "remove an unknown ID" 2

# ---- the bash completion completes record ids and customers from the store
COMP_OUT=$(bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _derenroll
	printf "%s\n" "${COMPREPLY[@]}"' - "$(dirname "$0")/../../assets/completion/derenroll" \
	"$BIN" --config "$CONF" "${STORE_ARGS[@]}" show "")
expect_in "completion: 'show' completes record ids" "$SOLIS" "$COMP_OUT"
COMP_OUT=$(bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _derenroll
	printf "%s\n" "${COMPREPLY[@]}"' - "$(dirname "$0")/../../assets/completion/derenroll" \
	"$BIN" --config "$CONF" "${STORE_ARGS[@]}" enroll solis --customer "Car")
[ "$COMP_OUT" = "Carol Chen" ]
check $? "completion: '--customer' completes a customer, spaces and all" "$COMP_OUT"

# ---- bad input
run D enroll nosuchvendor --customer X
expect_rc "enroll an unknown vendor" 2
run D enroll solaredge --customer X --method bogus --api-key-file "$TMP/se1"
expect_rc "enroll with an unknown method" 2
printf 'wrong horse\n' >"$TMP/wrong"
# (A team store lists without the key: what opens the credentials is refused.)
if [ "$MODE" = team ]; then
	DERENROLL_PASSPHRASE_FILE="$TMP/wrong" run D show "$SOLIS" --reveal
else
	DERENROLL_PASSPHRASE_FILE="$TMP/wrong" run D list
fi
expect_rc "a wrong passphrase" 4
if [ "$MODE" = team ]; then
	# ---- store copy: out of the team store, again, and back; never rolled back
	COPY="$TMP/copy.store"
	C() { "$BIN" --config "$CONF" --store "$COPY" "$@"; }
	NREC=$(D list --json | jq length)
	run D store copy --from "$PG_URL" --to "$COPY"
	expect_rc "store copy to a file" 0
	expect_in "store copy: every record added" "$NREC added, 0 updated, 0 unchanged" "$OUT"
	run D store copy --from "$PG_URL" --to "$COPY"
	expect_rc "store copy again" 0
	expect_in "store copy again: nothing twice" "0 added, 0 updated, $NREC unchanged" "$OUT"
	# The file's copy is checked, later than the team store's record changed: a
	# copy from the team store leaves it, a copy back takes it there.
	sleep 1
	C status "$SOLIS" >/dev/null 2>&1
	AT=$(C show "$SOLIS" --json | jq -r .last_check.at)
	[ -n "$AT" ] && [ "$AT" != "$(D show "$SOLIS" --json | jq -r .last_check.at)" ]
	check $? "the copy's check is its own" "$AT"
	run D store copy --from "$PG_URL" --to "$COPY"
	expect_in "store copy: newer there is unchanged" "0 added, 0 updated, $NREC unchanged" "$OUT"
	[ "$(C show "$SOLIS" --json | jq -r .last_check.at)" = "$AT" ]
	check $? "store copy: the newer check is kept" "$(C show "$SOLIS" --json)"
	run D store copy --from "$COPY" --to "$PG_URL"
	expect_rc "store copy back" 0
	[ "$(D show "$SOLIS" --json | jq -r .last_check.at)" = "$AT" ]
	check $? "store copy back: the newer check reaches the team store" "$OUT"
	[ "$(D list --json | jq length)" = "$NREC" ]
	check $? "store copy back: no record twice" "$(D list)"
	finish
fi
# Another process holds the store's lock: wait, then name it.
(
	exec 9<>"$STORE.lock"
	flock 9
	printf '%-20s\n' "$BASHPID" >"$STORE.lock"
	sleep 60
) &
HOLDER=$!
CLEANUP_PIDS="$CLEANUP_PIDS $HOLDER"
sleep 0.5
run D remove "$SOLIS" --yes
expect_rc "a store locked by another process" 4
expect_in "the message names the holder" "process $HOLDER" "$ERR"
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null
cp "$STORE" "$TMP/store.good"
printf 'garbage' | dd of="$STORE" bs=1 seek=200 conv=notrunc 2>/dev/null
run D list
expect_rc "a corrupt store" 4
run D status
expect_rc "status on a corrupt store" 4
cp "$TMP/store.good" "$STORE"
run D list
expect_rc "the good store again" 0

finish
