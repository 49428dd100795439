#!/usr/bin/env bash
# make stack-restore BACKUP=DIR: puts a backup of backup.sh back into a running stack (the same
# one after a loss, or a fresh one: make stack-clean && make stack-up first). What the stack
# holds now is REPLACED: the databases mlflow and prefect are dropped and restored, the buckets
# mlflow and decflow emptied and refilled, the worker's volume emptied and refilled.
#   1. the PostgreSQL services (mlflow-postgres, prefect-postgres) and seaweedfs must be
#      running; every other service is stopped (no client writes during the restore; Dask
#      workers and the Prefect worker drop what they cached);
#   2. each database, in its own PostgreSQL container: DROP ... WITH (FORCE), CREATE ... OWNER
#      <its role>, pg_restore of the dump as the superuser (objects keep their owners: the roles
#      mlflow and prefect, which init-database.sh creates in every stack with that stack's
#      passwords). Backups taken when one container held both databases restore the same way;
#   3. the buckets: s3_archive.py import (counts and bytes checked against the backup);
#   4. the worker's volume from home.tar.gz;
#   5. up -d and wait until every service is healthy (wait_healthy.py).
# Environment: STACK_ENV_FILE and COMPOSE_PROJECT_NAME (which stack, as for up.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PYTHON="${STACK_PYTHON:-/usr/bin/python3}"
[ -x "$PYTHON" ] || PYTHON=python3

say() { printf '== %s\n' "$*"; }
die() { printf 'stack-restore: %s\n' "$*" >&2; exit 1; }

[ -n "${1:-}" ] || die "usage: restore.sh BACKUP_DIR (make stack-restore BACKUP=DIR)"
dir="$(cd "$1" 2>/dev/null && pwd)" || die "no folder $1"
for f in manifest.json s3/s3.json postgres/mlflow.dump postgres/prefect.dump; do
  [ -s "$dir/$f" ] || die "$dir/$f is missing or empty: not a backup of backup.sh"
done

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
need_data_services
start=$(date +%s.%N)

mapfile -t clients < <(compose config --services \
  | grep -vx -e mlflow-postgres -e prefect-postgres -e seaweedfs)
say "stopping ${clients[*]} (project $project)"
compose stop "${clients[@]}"

for db in "${DATABASES[@]}"; do
  say "database $db (${DB_SERVICE[$db]}) <- $dir/postgres/$db.dump"
  "$DOCKER" exec -u postgres "${DB_CONTAINER[$db]}" psql -q -v ON_ERROR_STOP=1 -d postgres \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db OWNER $db"
  "$DOCKER" exec -i -u postgres "${DB_CONTAINER[$db]}" pg_restore --exit-on-error -d "$db" < "$dir/postgres/$db.dump"
done

say "buckets ${BUCKETS[*]} <- $dir/s3/"
compose run --rm --no-deps -T -v "$here/s3_archive.py:/opt/infra/s3_archive.py:ro" \
  -v "$dir/s3:/backup/s3:ro" \
  create-buckets python /opt/infra/s3_archive.py import /backup/s3 "${BUCKETS[@]}"

if [ -s "$dir/home.tar.gz" ]; then
  say "worker home (/var/lib/decflow) <- $dir/home.tar.gz"
  compose run --rm --no-deps -T -u 0 -v "$dir/home.tar.gz:/backup/home.tar.gz:ro" prefect-worker \
    sh -c 'find /var/lib/decflow -mindepth 1 -delete && tar -C /var/lib/decflow -xzpf /backup/home.tar.gz'
fi

say "starting ${clients[*]}"
up_start="$(date +%s.%N)"
compose up -d --no-build
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
compose config > "$config"
"$PYTHON" "$here/wait_healthy.py" --project "$project" --since "$up_start" \
  --timeout "${STACK_UP_TIMEOUT:-600}" --compose-config "$config"
seconds="$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')"
say "restored project $project from $dir in $seconds s"
