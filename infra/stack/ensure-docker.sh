#!/usr/bin/env bash
# Makes sure a Docker daemon answers, installing and starting one when needed (root or sudo):
#   Debian's docker.io (Engine 20.10, with BuildKit built in), mmdebstrap (the base image) and
#   docker-compose 1.29 (runs infra/docker-compose.yml), then `dockerd` in the background when
#   no daemon answers (no systemd needed: containers and CI machines often have none).
#   infra/stack/ensure-docker.sh          # idempotent; a few seconds when all is there
# Environment: DOCKERD_LOG (default /tmp/dockerd.log).
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*"; }
die() { printf 'ensure-docker: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  sudo=(false)
fi

missing=()
[ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  [ "${sudo[0]:-}" != false ] || die "missing ${missing[*]}; installing needs root: apt-get install ${missing[*]}"
  log "installing ${missing[*]} (apt)"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

daemon_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if daemon_up; then
  log "daemon answers (Engine $(docker version --format '{{.Server.Version}}'))"
  exit 0
fi
[ "${sudo[0]:-}" != false ] || die "no Docker daemon answers and starting one needs root"
dockerd_bin="$(command -v dockerd || echo /usr/sbin/dockerd)"
log "starting $dockerd_bin (log ${DOCKERD_LOG:-/tmp/dockerd.log})"
# setsid + nohup: the daemon outlives this script and the make/CI step that ran it.
"${sudo[@]}" setsid nohup "$dockerd_bin" >"${DOCKERD_LOG:-/tmp/dockerd.log}" 2>&1 </dev/null &
for _ in $(seq 60); do
  daemon_up && break
  sleep 1
done
daemon_up || die "dockerd did not answer within 60 s; see ${DOCKERD_LOG:-/tmp/dockerd.log}"
log "daemon answers (Engine $(docker version --format '{{.Server.Version}}'), storage $(docker info --format '{{.Driver}}'))"
