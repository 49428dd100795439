# Two commands for a new machine: `make demo` and `make test` (each creates .venv when missing).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

# torch first, so that the project's range does not pull a multi-GB CUDA build where no GPU is.
# TORCH=auto (default): a torch wheel pip already finds locally (its find-links) wins; else on a
# machine with an NVIDIA driver (nvidia-smi) the package index's build (CUDA on Linux); else the
# CPU build from PyTorch's CPU index (TORCH_CPU_INDEX), and where that index cannot be reached
# within a few seconds the package index's build, with a note. TORCH=cpu / TORCH=index force one.
TORCH ?= auto
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	TORCH=$(TORCH) TORCH_VERSION=$(TORCH_VERSION) TORCH_CPU_INDEX=$(TORCH_CPU_INDEX) \
		PIP="$(BIN)/pip" infra/install-torch.sh

# Reinstalls when pyproject.toml changes, so an existing .venv picks up new dependencies.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[test,bench,stack]"
	touch $@

.PHONY: venv demo test test-fast test-integration integration-deps infra-check bench
venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/decflow demo

TEST_ENV := MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
	GX_ANALYTICS_ENABLED=false PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120

# Every tier (unit, data, flows, integration): the CI command. The stack tier (containers) runs
# on its own: `make stack-test`. Two pytest workers (pytest-xdist), one module per worker at a
# time (module fixtures are built once), the longest modules first (tests/conftest.py): about
# 20 minutes on 2 cores (1204 s of tests measured in a fresh clone). TEST_WORKERS=0 runs in one process;
# more workers need more cores and about 2 GiB of memory each.
# A worker ended by a test's timeout (pyproject.toml) is replaced once; a second ends the run.
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(TEST_ENV) $(BIN)/python -m pytest tests --ignore=tests/stack --durations=15 \
		-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --max-worker-restart 1

# The edit-test loop: unit and data tests not marked `slow` (no servers, flows, process kills,
# Dask clusters or MLflow stores; see the marker in pyproject.toml): under a minute on 2 idle
# cores, about 2 minutes with both busy.
test-fast: $(VENV)/.installed
	$(TEST_ENV) $(BIN)/python -m pytest tests/unit tests/data -m "not slow" --durations=5

# Only the integration tier: real PostgreSQL, SeaweedFS (S3), MLflow, Prefect and Dask servers
# as processes on loopback (about 5 minutes here).
test-integration: $(VENV)/.installed
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
		GX_ANALYTICS_ENABLED=false $(BIN)/python -m pytest tests/integration

# What the integration tier needs beyond the venv (root or sudo): Debian's PostgreSQL server, and
# Debian's chromium for the headless-browser tests of the run report (tests/browser.py drives
# it over the DevTools pipe: no driver, no browser download).
integration-deps: $(VENV)/.installed
	@PKGS=""; \
	if command -v pg_ctlcluster >/dev/null || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; \
	then echo "PostgreSQL server present"; else PKGS="$$PKGS postgresql"; fi; \
	if [ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null; \
	then echo "Chromium present"; else PKGS="$$PKGS chromium"; fi; \
	if [ -n "$$PKGS" ]; then SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing:$$PKGS"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
		--no-install-recommends $$PKGS >/dev/null; fi

# Static checks of infra/ (hadolint, shellcheck, docker-compose config, Helm values, the lock).
infra-check: $(VENV)/.installed
	BIN=$(BIN) infra/check.sh

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/quality.py

# --- The container stack (infra/docker-compose.yml) on this machine, from the project's files
# alone: no Docker Hub, no PyTorch index (infra/stack/, infra/README.md "The stack here").
# Docker: Debian's docker.io (Engine 20.10) + mmdebstrap + docker-compose 1.29, started by
# infra/stack/ensure-docker.sh when no daemon answers (root or sudo).
.PHONY: stack-docker stack-build stack-up stack-down stack-clean stack-test
stack-docker:
	infra/stack/ensure-docker.sh

# The Debian base (mmdebstrap; skipped when built), decflow:<version>, decflow-postgres:15 and
# decflow-seaweedfs:4.48; prints build times and sizes.
stack-build: stack-docker
	infra/stack/build.sh

# Creates infra/.env with random secrets when missing, then `up -d` and waits until every
# service is healthy (prints the time to healthy).
stack-up: stack-docker
	infra/stack/up.sh

# The stack tier (tests/stack): the nightly, a backfill, a promotion and a rollback through the
# composed servers, worker and Dask workers, and the UIs in headless Chromium. Brings the stack
# up (infra/stack/up.sh) when it is not; needs the images (make stack-build) and Debian's
# chromium (make integration-deps). STACK_SCREENSHOT_DIR=docs refreshes docs/stack-*.png.
stack-test: $(VENV)/.installed stack-docker
	$(TEST_ENV) STACK_TEST=1 $(BIN)/python -m pytest tests/stack --durations=0 $(PYTEST_ARGS)

# Removes the containers and the network; the volumes (databases, buckets, worker home) stay.
stack-down:
	@if [ -f infra/.env ]; then infra/stack/compose.sh down --remove-orphans; \
	else echo "no infra/.env: no stack of this checkout to stop"; fi

# Also removes the volumes: every database, bucket and run is gone (infra/.env stays).
stack-clean:
	@if [ -f infra/.env ]; then infra/stack/compose.sh down --volumes --remove-orphans; \
	else echo "no infra/.env: no stack of this checkout to remove"; fi

# --- Operating the stack (infra/README.md "Operating the stack") -----------------------------
.PHONY: stack-backup stack-restore stack-test-backup
# The databases (pg_dump), the buckets and the worker's volume into backups/<project>-<UTC time>/
# (STACK_BACKUP_ROOT for another folder); the stack keeps running.
stack-backup:
	infra/stack/backup.sh

# Replaces the running stack's databases, buckets and worker volume with a backup's:
#   make stack-restore BACKUP=backups/decflow-20261121T031500Z
stack-restore:
	@[ -n "$(BACKUP)" ] || { echo "usage: make stack-restore BACKUP=<folder of make stack-backup>"; exit 2; }
	infra/stack/restore.sh "$(BACKUP)"

# The round trip on a second compose project (decflow-bk, its own ports and volumes): a night,
# backup, stack-clean, stack-up, restore, the registry and labels back, a second night.
stack-test-backup: $(VENV)/.installed
	STACK_TEST=1 $(TEST_ENV) $(BIN)/python -m pytest tests/stack/test_backup_restore.py --durations=5
