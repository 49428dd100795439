#!/usr/bin/env bash
# docker-compose on the stack with this machine's settings: infra/docker-compose.yml, the env file
# infra/.env, and the locally built images (infra/stack/images.sh) unless the environment or
# infra/.env names others (STACK_IMAGE, STACK_POSTGRES_IMAGE, STACK_SEAWEEDFS_IMAGE).
#   infra/stack/compose.sh ps
#   infra/stack/compose.sh logs --tail 50 mlflow
#   infra/stack/compose.sh run --rm prefect-worker decflow --help
# The compose tool is Debian's docker-compose 1.29 (COMPOSE overrides it, e.g. "docker compose").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=infra/stack/images.sh
. "$here/images.sh"

env_file="${STACK_ENV_FILE:-$root/infra/.env}"
[ -f "$env_file" ] || { echo "compose.sh: no $env_file (make stack-up creates it)" >&2; exit 1; }
use_local() {  # use_local VAR IMAGE: export VAR=IMAGE unless the environment or env file sets it
  if [ -z "${!1:-}" ] && ! grep -q "^$1=" "$env_file"; then
    export "$1=$2"
  fi
}
use_local STACK_IMAGE "$STACK_LOCAL_IMAGE"
use_local STACK_POSTGRES_IMAGE "$STACK_LOCAL_POSTGRES_IMAGE"
use_local STACK_SEAWEEDFS_IMAGE "$STACK_LOCAL_SEAWEEDFS_IMAGE"

read -r -a compose <<< "${COMPOSE:-docker-compose}"
exec "${compose[@]}" -f "$root/infra/docker-compose.yml" --env-file "$env_file" "$@"
