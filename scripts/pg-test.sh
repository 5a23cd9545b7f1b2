#!/usr/bin/env bash
# A throwaway PostgreSQL server for the fleet tests (tests/fleet.rs), from Debian's postgresql
# package (scripts/setup-system.sh installs it):
#
#   scripts/pg-test.sh start DIR   initdb in DIR (SCRAM password auth), start on 127.0.0.1 at a
#                                  free port with its socket in DIR; prints the database URL
#   scripts/pg-test.sh stop DIR    stops that server (fast shutdown) and removes DIR
#
# As root, the server runs as the `postgres` user the package creates (PostgreSQL refuses to
# run as root). Nothing outside DIR is touched; the system's own cluster is not used.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi

bindir=""
for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && bindir="$d"
done
if [ -z "$bindir" ]; then
    echo "pg-test: no PostgreSQL server found (/usr/lib/postgresql/*/bin/initdb); run scripts/setup-system.sh" >&2
    exit 1
fi

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    as_owner=(runuser -u postgres --)
fi

case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s\n' "$password" > "$dir/pw"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pw"
    "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U facegate --auth=scram-sha-256 \
        --pwfile="$dir/pw" -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$dir/pw"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    PGPASSWORD="$password" "$bindir/psql" -h 127.0.0.1 -p "$port" -U facegate -d postgres -q \
        -c "CREATE DATABASE facegate" >/dev/null
    echo "postgres://facegate:$password@127.0.0.1:$port/facegate"
    ;;
stop)
    if [ -d "$dir/data" ]; then
        "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
