#!/bin/bash
# Entrypoint of the stand-in PostgreSQL image (docker/base/postgres.Dockerfile), doing what the
# official image's does for the variables it documents:
#
# - POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (default
#   postgres), POSTGRES_DB (default: the user's name), POSTGRES_INITDB_ARGS,
#   POSTGRES_HOST_AUTH_METHOD (default scram-sha-256) are read on the first start only, when
#   PGDATA (/var/lib/postgresql/data) holds no cluster yet; *.sql and *.sh files in
#   /docker-entrypoint-initdb.d run then too.
# - Started as root, it hands PGDATA to the postgres user and runs the server as that user.
#
# While the first-start set-up runs, the temporary server listens on a private socket directory
# only, so neither clients nor the `pg_isready` health check see it before it is really ready.
set -Eeuo pipefail

if [ "${1:0:1}" = "-" ]; then
    set -- postgres "$@"
fi

if [ "$1" != "postgres" ]; then
    exec "$@"
fi

if [ "$(id -u)" = "0" ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    POSTGRES_USER="${POSTGRES_USER:-postgres}"
    POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != "trust" ]; then
        echo "error: the database is uninitialised and POSTGRES_PASSWORD is not set;" \
             "set it (or POSTGRES_HOST_AUTH_METHOD=trust to allow connections without one)" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    trap 'rm -f "$pwfile"' EXIT
    printf '%s' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options, split on purpose
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host="$auth" \
        --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    printf 'host all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

    setup_socket="$(mktemp -d)"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories='$setup_socket'" start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --host="$setup_socket" --username="$POSTGRES_USER")
    if [ "$POSTGRES_DB" != "postgres" ]; then
        "${psql[@]}" --dbname=postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; PGHOST="$setup_socket" PGUSER="$POSTGRES_USER" PGDATABASE="$POSTGRES_DB" bash "$f" ;;
            *.sql) echo "running $f"; "${psql[@]}" --dbname="$POSTGRES_DB" -f "$f" ;;
            *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    rmdir "$setup_socket"
    echo "PostgreSQL initialised: user $POSTGRES_USER, database $POSTGRES_DB"
fi

exec "$@"
