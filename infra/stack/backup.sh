#!/usr/bin/env bash
# make stack-backup: copies the running stack's state into a new timestamped folder on the host:
#   postgres/mlflow.dump, postgres/prefect.dump  pg_dump -Fc of the two databases (registry, runs,
#                                                Prefect deployments and history), each run
#                                                inside its PostgreSQL container;
#   s3/mlflow/..., s3/decflow/..., s3/s3.json    every object of the two buckets (MLflow
#                                                artifacts; source and labels), by s3_archive.py in
#                                                a one-off container of the decflow image;
#   home.tar.gz                                  the worker's volume /var/lib/decflow (reports,
#                                                configs written there, error files);
#   manifest.json                                what, when, from which project and images.
# The databases are dumped first, then the buckets: every model version in the dump has its
# artifacts in the copy (MLflow writes them before it registers the version). Take it between
# runs; a run in flight may leave labels of a version the dump does not hold yet.
# The folder holds no secret from infra/.env (keep that file in your secret store): a restore
# works on a stack with other passwords and keys.
#   infra/stack/backup.sh [DIR]   # default $STACK_BACKUP_ROOT/<project>-<UTC time>/
# Environment: STACK_BACKUP_ROOT (default backups/ in the checkout), STACK_ENV_FILE and
# COMPOSE_PROJECT_NAME (which stack, as for up.sh and compose.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
say() { printf '== %s\n' "$*"; }
die() { printf 'stack-backup: %s\n' "$*" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

need_data_services

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
dir="${1:-${STACK_BACKUP_ROOT:-$root/backups}/$project-$stamp}"
[ ! -e "$dir" ] || [ -z "$(ls -A "$dir")" ] || die "$dir exists and is not empty"
mkdir -p "$dir/postgres" "$dir/s3"
dir="$(cd "$dir" && pwd)"
start=$(date +%s.%N)

versions=()
for db in "${DATABASES[@]}"; do
  say "pg_dump $db (${DB_SERVICE[$db]}) -> $dir/postgres/$db.dump"
  "$DOCKER" exec -u postgres "${DB_CONTAINER[$db]}" pg_dump -Fc -d "$db" > "$dir/postgres/$db.dump"
  versions+=("\"$db\": \"$("$DOCKER" exec -u postgres "${DB_CONTAINER[$db]}" psql -Atc 'SHOW server_version')\"")
done

say "buckets ${BUCKETS[*]} -> $dir/s3/"
compose run --rm --no-deps -T -u "$(id -u):$(id -g)" \
  -v "$here/s3_archive.py:/opt/infra/s3_archive.py:ro" -v "$dir/s3:/backup/s3" \
  create-buckets python /opt/infra/s3_archive.py export /backup/s3 "${BUCKETS[@]}"

say "worker home (/var/lib/decflow) -> $dir/home.tar.gz"
compose run --rm --no-deps -T -u 0 -v "$dir:/backup" prefect-worker \
  sh -c "tar -C /var/lib/decflow -czf /backup/home.tar.gz . && chown $(id -u):$(id -g) /backup/home.tar.gz"

images="$(compose config 2>/dev/null | sed -n 's/^ *image: *//p' | sort -u | paste -sd, -)"
cat > "$dir/manifest.json" <<JSON
{
  "created": "$stamp",
  "project": "$project",
  "postgres_server_versions": {$(IFS=,; echo "${versions[*]}")},
  "databases": ["${DATABASES[0]}", "${DATABASES[1]}"],
  "buckets": ["${BUCKETS[0]}", "${BUCKETS[1]}"],
  "images": "$images"
}
JSON
seconds="$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')"
say "backup of project $project in $dir: $(du -sh "$dir" | cut -f1), $seconds s"
echo "restore: make stack-restore BACKUP=$dir"
