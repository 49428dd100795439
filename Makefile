# Two commands for a new machine: `make demo` and `make test` (each creates .venv when missing).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so the project's range does not pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test,bench]"

.PHONY: venv demo test bench
venv: $(BIN)/python

demo: $(BIN)/python
	$(BIN)/python benchmarks/quality.py --datasets digits --seeds 0 --methods decflow,kmeans --out .decflow/demo_quality

test: $(BIN)/python
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
		$(BIN)/python -m pytest tests

bench: $(BIN)/python
	$(BIN)/python benchmarks/quality.py
