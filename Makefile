# Two commands for a fresh machine (Python 3.11): `make demo` and `make test`. `make help` lists the rest.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,gcp,kfp,hf,embeddings,auth,team
DB     := $(CURDIR)/mlflow.db
QUESTION ?= How do I check whether a file exists in Python?

export MLFLOW_TRACKING_URI ?= sqlite:///$(DB)
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Every step is a new Python process: let it reuse compiled bytecode.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup setup-all demo test test-fast lint ui team clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"

setup: $(BIN)/python  ## venv with the core package (embedded defaults) from requirements.lock
	$(BIN)/pip install -q -c requirements.lock -e .

setup-all: $(BIN)/python  ## venv with every extra the tests use (torch CPU, transformers, GCP SDKs, kfp, auth)
	$(BIN)/pip install -q -c requirements.lock -e ".[$(EXTRAS)]"

demo: setup  ## run the whole loop on the embedded defaults, then answer a question by alias in a new process
	$(BIN)/mlflow run . --env-manager local --experiment-name llmops
	@echo "--- answer from models:/so-qa-assistant@staging (fresh process) ---"
	$(BIN)/llmops serve predict --model models:/so-qa-assistant@staging --question "$(QUESTION)"
	@echo "--- open the MLflow UI: $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000"

test: setup-all  ## run the test suite, files spread over 3 processes (the 15 slowest tests listed at the end)
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations=15

test-fast: setup-all  ## the test suite without the end-to-end loops (marker e2e)
	$(BIN)/python -m pytest -q -n 3 --dist loadfile -m "not e2e" --durations=15

$(BIN)/ruff: $(BIN)/python
	$(BIN)/pip install -q -c requirements.lock -e ".[dev]"

lint: $(BIN)/ruff  ## static checks
	$(BIN)/ruff check --select F,E9,B,I --ignore I001 llmops projects prompts backends evaluation registry serving monitoring feedback tests benchmarks tools

team: setup-all  ## the team tracking server: PostgreSQL + `mlflow server --app-name llmops-auth` (Ctrl-C stops)
	$(BIN)/llmops server start --team --data-dir $(CURDIR)/.llmops-team --port $(or $(PORT),5000)

ui:  ## start the MLflow UI on the local store
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000

clean:  ## remove the local store, artifacts and outputs (keeps the venv)
	rm -rf mlflow.db mlruns mlartifacts outputs
