#!/usr/bin/env bash
# Builds the Debian bookworm base image of the local stack images (decflow, PostgreSQL,
# SeaweedFS) from Debian's own packages, with no registry: mmdebstrap writes the root file system
# as a tarball and `docker import` turns it into an image.
#   infra/stack/build-base.sh [IMAGE]        # default decflow-base:bookworm
# Skipped when IMAGE exists and was made from the same recipe (the label decflow.base.recipe is
# a hash of this file); STACK_BASE_REBUILD=1 forces a new one (e.g. for security updates).
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR
# (default http://deb.debian.org/debian-security), DOCKER (client, default docker).
set -euo pipefail
cd "$(dirname "$0")"

IMAGE="${1:-decflow-base:bookworm}"
DOCKER="${DOCKER:-docker}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# python3 (3.11) + venv: the decflow image's interpreter; ca-certificates: TLS to S3/PyPI;
# tini: PID 1; wget: the SeaweedFS health check; passwd (in minbase): useradd in the Dockerfiles.
PACKAGES=python3,python3-venv,ca-certificates,tini,wget
recipe="$(sha256sum "$(basename "$0")" | cut -c1-16)"

existing="$("$DOCKER" image inspect --format '{{ index .Config.Labels "decflow.base.recipe" }}' \
  "$IMAGE" 2>/dev/null || true)"
if [ "$existing" = "$recipe" ] && [ "${STACK_BASE_REBUILD:-0}" != 1 ]; then
  echo "build-base: $IMAGE exists (recipe $recipe), not rebuilt (STACK_BASE_REBUILD=1 forces it)"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "build-base: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }

start=$(date +%s)
echo "build-base: mmdebstrap bookworm ($PACKAGES) | docker import $IMAGE"
# minbase: Essential + Priority:required + apt, like debian:bookworm-slim. Documentation, man
# pages and translations are left out (as in the slim images); the apt lists are removed.
# root mode when run as root (the default "auto" picks unshare otherwise, which needs
# unprivileged user namespaces). The hook's $1 is the root directory, expanded by mmdebstrap.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --include="$PACKAGES" --format=tar \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
  bookworm - \
  "deb $MIRROR bookworm main" \
  "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY bookworm-security main" \
  | "$DOCKER" import \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      --change "LABEL decflow.base.recipe=$recipe" \
      --change "LABEL org.opencontainers.image.description=\"Debian bookworm, mmdebstrap minbase + $PACKAGES\"" \
      - "$IMAGE" >/dev/null
echo "build-base: $IMAGE built in $(( $(date +%s) - start )) s," \
  "$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
