#!/bin/sh
# Stand-in for the official postgres image's entrypoint (the image is built from Debian's
# postgresql-15 by scripts/build_images.sh standins; no registry is reachable here): on an
# empty data dir, initdb with POSTGRES_USER / POSTGRES_PASSWORD and create POSTGRES_DB, password
# (scram) auth over TCP; then run the server as `postgres`, listening on every interface of the
# container.
set -eu
# Like the official entrypoint: any other command (psql, pg_dump, sh) runs as given.
if [ "$#" -gt 0 ] && [ "$1" != postgres ]; then exec "$@"; fi
BIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
USER_NAME=${POSTGRES_USER:-postgres}
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" > "$pwfile"
  chown postgres "$pwfile"
  # UTF8 explicitly: with no locale set, initdb would pick SQL_ASCII, where psycopg returns
  # text as bytes (SQLAlchemy then fails on the server's version string).
  as_postgres "$BIN/initdb" -D "$PGDATA" -U "$USER_NAME" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
    as_postgres "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start
    as_postgres "$BIN/psql" -U "$USER_NAME" -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$POSTGRES_DB\""
    as_postgres "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*'
