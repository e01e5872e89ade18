#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the store tests (tests/store) and print the
# shell lines that point them at it (two steps, so that a failure stops `set -e`):
#
#     pg_env=$(bash .ci/postgres.sh); eval "$pg_env"
#
# Installs Debian's postgresql package when no server binaries are found, then runs a
# new cluster in a temporary folder, listening on 127.0.0.1 only, on a free port, with
# trust authentication and fsync off (a test server: never use these settings for real
# data). Everything but the final lines goes to stderr. The printed lines export
# SHOAL_TEST_POSTGRES_URL and set an EXIT trap that stops the server when the calling
# shell exits.
set -euo pipefail

find_bin() {
    local d
    d=$(command -v initdb 2>/dev/null) && d=$(dirname "$(readlink -f "$d")")
    if [ -n "$d" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/createdb" ]; then
        echo "$d"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/createdb" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

if ! bin=$(find_bin); then
    echo "postgres.sh: installing postgresql (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    bin=$(find_bin)
fi

# initdb and postgres refuse to run as root: run them as postgres (or nobody).
as_user=()
if [ "$(id -u)" = 0 ]; then
    user=postgres
    id -u "$user" >/dev/null 2>&1 || user=nobody
    as_user=(runuser -u "$user" --)
fi

dir=$(mktemp -d /tmp/shoal-ci-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown "$user" "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

stop="${as_user[*]} $bin/pg_ctl -D $dir/data -m fast -w -t 60 stop >/dev/null 2>&1; rm -rf $dir"
trap 'echo "postgres.sh: failed; log: $dir/log" >&2; eval "$stop"' ERR

"${as_user[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >&2
"${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -F -c max_connections=300" start >&2
"${as_user[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres shoal_test >&2
trap - ERR

echo "export SHOAL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/shoal_test"
echo "trap '$stop' EXIT"
