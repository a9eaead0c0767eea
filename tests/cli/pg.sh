# shellcheck shell=bash
# A PostgreSQL server for the bash tests (lib.sh stays POSIX sh: the tmux
# tests source it with /bin/sh). Source after lib.sh.
# pg_start: a PostgreSQL server of this test's own (tests/pg_serve.c), stopped
# when the script exits however it exits; its URL in PG_URL. pg_kill stops it
# as a crash would, pg_resume starts it again.
pg_start() {
	coproc PG_SERVE { "$(dirname "$BIN")/../tests/pg_serve"; }
	read -r PG_URL <&"${PG_SERVE[0]}" || {
		echo "Bail out! cannot start PostgreSQL"
		exit 1
	}
}
pg_ctl_line() {
	local answer
	echo "$1" >&"${PG_SERVE[1]}"
	read -r answer <&"${PG_SERVE[0]}"
	[ "$answer" = ok ]
}
pg_kill() { pg_ctl_line kill; }
pg_resume() { pg_ctl_line resume; }
