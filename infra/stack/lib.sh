#!/usr/bin/env bash
# Sourced by backup.sh and restore.sh: which stack (infra/.env, project name), the compose
# wrapper, and where each database lives. Defines:
#   env_file, project       STACK_ENV_FILE (default infra/.env) and COMPOSE_PROJECT_NAME (default:
#                           the file's COMPOSE_PROJECT_NAME, else "infra"); both exported
#   compose ARGS...         infra/stack/compose.sh for that stack
#   running SERVICE         the id of the service's running container, or nothing (status 1)
#   need_data_services      fills DB_CONTAINER[db] with the running container of each database;
#                           dies unless those and seaweedfs are running
#   BUCKETS, DATABASES      the buckets and the databases of a backup; DB_SERVICE[db] is the
#                           PostgreSQL service holding database db
# The caller sets `here` (infra/stack), `root` (the checkout) and `die`.
# shellcheck disable=SC2034,SC2154  # the callers read BUCKETS, DATABASES, DB_CONTAINER, DOCKER
# and set here, root and die
DOCKER="${DOCKER:-docker}"
BUCKETS=(mlflow decflow)
DATABASES=(mlflow prefect)
declare -A DB_SERVICE=([mlflow]=mlflow-postgres [prefect]=prefect-postgres)

env_file="${STACK_ENV_FILE:-$root/infra/.env}"
[ -f "$env_file" ] || die "no $env_file: bring a stack up first (make stack-up)"
project="${COMPOSE_PROJECT_NAME:-$(sed -n 's/^COMPOSE_PROJECT_NAME=//p' "$env_file" | tail -n 1)}"
project="${project:-infra}"
export STACK_ENV_FILE="$env_file" COMPOSE_PROJECT_NAME="$project"

compose() { "$here/compose.sh" "$@"; }

running() {
  local id
  id="$(compose ps -q "$1" 2>/dev/null | head -n 1)"
  [ -n "$id" ] && [ "$("$DOCKER" inspect --format '{{.State.Running}}' "$id")" = true ] \
    && echo "$id"
}

declare -A DB_CONTAINER
need_data_services() {
  local db
  for db in "${DATABASES[@]}"; do
    DB_CONTAINER[$db]="$(running "${DB_SERVICE[$db]}")" \
      || die "${DB_SERVICE[$db]} of project $project is not running (make stack-up)"
  done
  running seaweedfs >/dev/null || die "seaweedfs of project $project is not running (make stack-up)"
}
