# Two commands for a new machine: `make demo` and `make test` (each creates .venv when missing).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so the project's range does not pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"

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

# Every tier (unit, data, flows, integration): the CI command.
test: $(VENV)/.installed
	$(TEST_ENV) $(BIN)/python -m pytest tests --durations=15

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
