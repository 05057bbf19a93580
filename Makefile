# Quick start: `make run` (main job on the built-in dataset), `make test` (the test suite).
# Both create the virtual environment in .venv on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: run test viz-build mlflow-ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kedro run --pipelines=train_dual
	@$(BIN)/python -m debias_pipeline.report

test: $(STAMP)
	$(BIN)/python -m pytest

viz-build: $(STAMP)
	$(BIN)/kedro viz build

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean:
	rm -rf $(VENV) build .pytest_cache

# Fast paths against the reference paths: one table (see benchmarks/run.py; not part of `make test`).
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
