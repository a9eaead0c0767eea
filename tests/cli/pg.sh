# A real PostgreSQL server for the CLI tests (the shell side of tests/pg_server.c).
# Usage, after lib.sh: . "$(dirname "$0")/pg.sh"; pg_start; ... --store "$PG_URL" ...; pg_stop
# pg_start sets PG_DIR (data in $PG_DIR/data, socket and logs there), PG_PORT and
# PG_URL. The EXIT trap set below stops the server before lib.sh's cleanup.
# As root, initdb and pg_ctl run as the postgres user (initdb refuses root).

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n1)
PG_DIR=""

pg_as_owner() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start: 0, or 1 with the logs on stderr.
pg_start() {
	[ -x "$PG_BIN/initdb" ] || { echo "pg_start: no PostgreSQL server (packaging/setup.sh)" >&2; return 1; }
	PG_DIR=$(mktemp -d /tmp/derenroll-pg-XXXXXX) || return 1
	[ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
	PG_PORT=$((20000 + ($$ * 7919 + $(date +%s)) % 40000))
	PG_URL="postgresql:///postgres?host=$PG_DIR&port=$PG_PORT&user=postgres"
	export PG_DIR PG_PORT PG_URL
	if ! pg_as_owner env -u PGDATA -u PGPORT -u PGHOST "$PG_BIN/initdb" -D "$PG_DIR/data" \
		-A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$PG_DIR/ctl.log" 2>&1; then
		cat "$PG_DIR/ctl.log" >&2
		return 1
	fi
	printf "\nlisten_addresses = ''\nunix_socket_directories = '%s'\nport = %s\nfsync = off\n" \
		"$PG_DIR" "$PG_PORT" >>"$PG_DIR/data/postgresql.conf"
	pg_resume
}

# pg_kill: the server goes down as if it crashed; pg_resume starts it again.
pg_kill() { pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >>"$PG_DIR/ctl.log" 2>&1; }
pg_resume() {
	pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
		>>"$PG_DIR/ctl.log" 2>&1 && return 0
	cat "$PG_DIR/ctl.log" "$PG_DIR/server.log" >&2
	return 1
}

# pg_stop: stops the server and removes PG_DIR; safe to call twice.
pg_stop() {
	[ -n "$PG_DIR" ] || return 0
	[ -f "$PG_DIR/data/postmaster.pid" ] && pg_kill
	rm -rf "$PG_DIR"
	PG_DIR=""
}

# Chain onto lib.sh's cleanup: the server goes with the test's temp dir.
trap 'pg_stop; cleanup' EXIT
trap 'exit 1' INT TERM HUP
