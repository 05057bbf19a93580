# Quick start: `make run` (main job on the built-in dataset), `make test` (the test suite);
# `make docs` builds the documentation site (docs/, mkdocs.yml) into site/.
# Each creates the virtual environment in .venv on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: run test viz-build docs parameters-doc mlflow-ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kedro run --pipelines=train_dual
	@$(BIN)/python -m debias_pipeline.experiments.summary

test: $(STAMP)
	$(BIN)/python -m pytest

viz-build: $(STAMP)
	$(BIN)/kedro viz build

# --strict: a broken link or anchor, or a page missing from nav, fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# docs/parameters.md from the config classes and conf/base (tests/test_parameters.py fails when it is stale).
parameters-doc: $(STAMP)
	$(BIN)/python scripts/parameters_doc.py

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db

clean:
	rm -rf $(VENV) build site .pytest_cache

# The project against the peer libraries (RecBole, PyTorch Geometric, implicit), quiet and
# under load, in one table (benchmarks/peers.py); `bench-reference`: the fast paths against
# the reference paths (benchmarks/run.py). Neither is part of `make test`.
BENCH_STAMP := $(VENV)/.bench-stamp
.PHONY: bench bench-reference

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m pip install --quiet --no-deps recbole==1.2.1
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/peers.py --load $(BENCH_ARGS)

bench-reference: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
