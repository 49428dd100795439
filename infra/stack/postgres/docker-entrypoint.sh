#!/usr/bin/env bash
# Entrypoint of the local PostgreSQL image (infra/stack/postgres/Dockerfile), the parts of the
# official postgres image's entrypoint that the stack uses:
#   - first start (no $PGDATA/PG_VERSION): initdb with POSTGRES_USER (default postgres) and
#     POSTGRES_PASSWORD (required), scram-sha-256 for TCP from anywhere (the compose network),
#     trust on the container's own socket; create POSTGRES_DB when it is not `postgres`; run
#     /docker-entrypoint-initdb.d/*.sh (executed when executable, else sourced) and *.sql on a
#     server that listens on its socket only;
#   - then `postgres -c listen_addresses=*` in the foreground (tini is PID 1).
# Any other command runs as given (e.g. `docker run --rm IMAGE psql --version`).
set -euo pipefail

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (first start of an empty data directory)}"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  echo "docker-entrypoint: initdb $PGDATA (superuser $user)"
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  printf '\n# the compose network (docker-entrypoint.sh)\nhost all all all scram-sha-256\n' \
    >> "$PGDATA/pg_hba.conf"
  # Socket only while the init scripts run: a TCP health check turns healthy only afterwards.
  pg_ctl --silent -w -o "-c listen_addresses=''" start
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -v db="$db" \
      <<<'CREATE DATABASE :"db";'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        echo "docker-entrypoint: running $f"
        if [ -x "$f" ]; then "$f"; else
          # shellcheck disable=SC1090
          . "$f"
        fi ;;
      *.sql)
        echo "docker-entrypoint: running $f"
        psql -v ON_ERROR_STOP=1 --username "$user" --dbname "$db" -f "$f" ;;
      *) if [ -e "$f" ]; then echo "docker-entrypoint: ignoring $f"; fi ;;
    esac
  done
  pg_ctl --silent -w -m fast stop
  echo "docker-entrypoint: initialised"
fi
exec "$@" -c listen_addresses='*'
