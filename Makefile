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
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $@

.PHONY: venv demo test bench
venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/decflow demo

test: $(VENV)/.installed
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
		GX_ANALYTICS_ENABLED=false PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 \
		$(BIN)/python -m pytest tests

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/quality.py
