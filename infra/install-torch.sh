#!/usr/bin/env bash
# Installs torch into the venv before the project, choosing the build for this machine (see the
# Makefile's TORCH): a local wheel, the CUDA build where an NVIDIA driver is, else the CPU build.
# Prints which one it installed.
set -euo pipefail
: "${PIP:?pip of the venv}" "${TORCH_VERSION:?}" "${TORCH_CPU_INDEX:?}"
mode="${TORCH:-auto}"
want="torch==${TORCH_VERSION}"

from_index() {
  "$PIP" install -q "$want"
  note=""
  if [ "$(uname -s)" = Linux ]; then note=" (on Linux the CUDA build, GBs more than the CPU one)"; fi
  echo "torch: ${want} from the package index${note}"
}

from_cpu_index() {
  # Short timeout, one retry: an unreachable index costs seconds, not minutes.
  "$PIP" install -q --timeout 5 --retries 1 --index-url "$TORCH_CPU_INDEX" "$want"
}

case "$mode" in
  index) from_index; exit 0 ;;
  cpu)
    from_cpu_index
    echo "torch: ${want} CPU build from ${TORCH_CPU_INDEX}"; exit 0 ;;
  auto) ;;
  *) echo "TORCH=${mode}: expected auto, cpu or index" >&2; exit 2 ;;
esac

# A wheel pip finds without any index (its configured find-links, a wheelhouse): no download.
# (torch alone from there, then its small dependencies from the index.)
if "$PIP" install -q --no-index --no-deps "$want" 2>/dev/null; then
  "$PIP" install -q "$want"
  echo "torch: ${want} from a local wheel ($("$PIP" show torch | sed -n 's/^Version: //p'))"
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 || [ "$(uname -s)" != Linux ]; then
  from_index  # a GPU here, or macOS/Windows (whose index builds have no CUDA)
  exit 0
fi
if from_cpu_index 2>/dev/null; then
  echo "torch: ${want} CPU build from ${TORCH_CPU_INDEX} (no NVIDIA driver here)"
else
  echo "torch: ${TORCH_CPU_INDEX} cannot be reached; installing from the package index" >&2
  from_index
fi
