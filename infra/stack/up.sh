#!/usr/bin/env bash
# make stack-up: starts the stack (infra/docker-compose.yml) on the locally built images and waits
# until every service is healthy, printing when each started and turned healthy.
#   1. infra/.env: created with random secrets when missing (env.sh), never rewritten;
#   2. the images must exist (make stack-build); nothing is pulled or built here;
#   3. docker-compose up -d (Debian's docker-compose 1.29, through compose.sh), which starts the
#      services in dependency order (depends_on: condition);
#   4. wait_healthy.py: all healthy, the one-shot create-buckets exited 0, the order checked.
# STACK_UP_TIMEOUT (default 600 s) bounds the wait. A second stack beside the first (tests,
# a restore rehearsal): STACK_ENV_FILE=FILE (its own secrets, COMPOSE_PROJECT_NAME and
# STACK_*_PORT lines) or those variables in the environment, which win over the env file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# shellcheck source=infra/stack/images.sh
. "$here/images.sh"
DOCKER="${DOCKER:-docker}"
PYTHON="${STACK_PYTHON:-/usr/bin/python3}"  # Debian's, with PyYAML (a docker-compose dependency)
[ -x "$PYTHON" ] || PYTHON=python3

env_file="${STACK_ENV_FILE:-$root/infra/.env}"
new_env=0
[ -f "$env_file" ] || new_env=1
"$here/env.sh" "$env_file"
export STACK_ENV_FILE="$env_file"  # compose.sh
project="${COMPOSE_PROJECT_NAME:-$(sed -n 's/^COMPOSE_PROJECT_NAME=//p' "$env_file" | tail -n 1)}"
project="${project:-infra}"

# Fresh secrets with volumes of an earlier stack of this project: their databases keep the
# passwords of that stack's env file, so PostgreSQL would refuse the new ones and the Prefect
# server restart forever ("password authentication failed"). Refuse before anything starts,
# and take back the env file just written.
if [ "$new_env" = 1 ]; then
  volumes="$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$project" \
             2>/dev/null | sort | tr '\n' ' ')"
  if [ -n "${volumes// /}" ]; then
    rm -f "$env_file"
    echo "stack-up: $env_file did not exist, but project $project has volumes of an earlier" \
      "stack: ${volumes% }. Their databases keep that stack's passwords: put its env file back" \
      "at $env_file, or remove them (every database, bucket and run is lost:" \
      "docker volume rm ${volumes% }). Nothing was started." >&2
    exit 1
  fi
fi

config="$(mktemp)"
trap 'rm -f "$config"' EXIT
# Validates the file and the secrets, and resolves the images (defaults of compose.sh).
"$here/compose.sh" config > "$config"
missing=()
while read -r image; do
  "$DOCKER" image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
done < <(sed -n 's/^ *image: *//p' "$config" | sort -u)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "stack-up: missing images: ${missing[*]} (make stack-build)" >&2
  exit 1
fi

# Published host ports: free, unless this project's containers hold them already (a second
# `make stack-up` on a running stack).
if [ -z "$("$DOCKER" ps -q --filter "label=com.docker.compose.project=$project")" ]; then
  busy=()
  while read -r port; do
    "$PYTHON" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' \
      "$port" 2>/dev/null || busy+=("$port")
  done < <(sed -n 's/^ *- *"\{0,1\}127\.0\.0\.1:\([0-9]*\):.*/\1/p' "$config" | sort -u)
  if [ "${#busy[@]}" -gt 0 ]; then
    echo "stack-up: host port(s) ${busy[*]} on 127.0.0.1 are taken by another process;" \
      "choose others in infra/.env (STACK_MLFLOW_PORT, STACK_PREFECT_PORT, STACK_S3_PORT," \
      "STACK_DASK_DASHBOARD_PORT)" >&2
    exit 1
  fi
fi

echo "== docker-compose up -d (project $project)"
start="$(date +%s.%N)"
"$here/compose.sh" up -d --no-build
echo "== waiting for every service to be healthy"
"$PYTHON" "$here/wait_healthy.py" --project "$project" --since "$start" \
  --timeout "${STACK_UP_TIMEOUT:-600}" --compose-config "$config" || {
  echo "stack-up: not healthy; last log lines:" >&2
  "$here/compose.sh" ps >&2 || true
  "$here/compose.sh" logs --tail 20 >&2 || true
  exit 1
}
"$here/compose.sh" ps
port() { "$here/compose.sh" port "$1" "$2" 2>/dev/null | tail -n 1; }
cat <<TXT
MLflow          http://$(port mlflow 5000)
Prefect UI/API  http://$(port prefect-server 4200)  (API /api)
S3 (SeaweedFS)  http://$(port seaweedfs 8333)  (keys: S3_ACCESS_KEY, S3_SECRET_KEY in infra/.env)
Dask dashboard  http://$(port dask-scheduler 8787)/status
TXT
