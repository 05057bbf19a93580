# Quick start: `make run` (main job on the built-in dataset), `make test` (the test suite;
# `make test-fast` leaves out the slow tests); `make docs` builds the documentation site
# (docs/, mkdocs.yml) into site/; `make viz` shows the pipelines; `make notebook` opens the
# notebooks. Each creates the virtual environment in .venv on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: run test test-fast viz viz-build docs parameters-doc mlflow-ui notebook notebook-html clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kedro run --pipelines=train_dual
	@$(BIN)/python -m debias_pipeline.experiments.summary

test: $(STAMP)
	$(BIN)/python -m pytest

# Without the tests marked slow: whole-pipeline runs, kedro in a child process, real data.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# One pipeline at a time (VIZ_PIPELINE; the whole project is 81 nodes); Ctrl-C stops it.
VIZ_PIPELINE ?= train_dual
viz: $(STAMP)
	$(BIN)/kedro viz run --pipeline=$(VIZ_PIPELINE)

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

# The notebooks (notebooks/): JupyterLab on them, or the comparison notebook executed into
# build/notebooks/ as HTML. They read the MLflow store: run the pipeline they show first.
NOTEBOOK_STAMP := $(VENV)/.notebook-stamp
NOTEBOOK ?= notebooks/reproduce_thesis_comparison.ipynb

$(NOTEBOOK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	touch $(NOTEBOOK_STAMP)

notebook: $(NOTEBOOK_STAMP)
	$(BIN)/jupyter lab notebooks

notebook-html: $(NOTEBOOK_STAMP)
	$(BIN)/jupyter nbconvert --to html --execute $(NOTEBOOK) --output-dir build/notebooks

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
