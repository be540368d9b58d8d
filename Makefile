# One command to set up and run the quickstart study, one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart lint format test test-fast bench bench-smoke bench-gpu
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

quickstart: install  ## pre-train baseline vs MTO on digits over Ray Tune, log to MLflow, write the report
	$(BIN)/python -m ablations.run studies/quickstart.yaml

PYTEST := $(BIN)/python -m pytest --durations=20  # the slowest tests, for the suite's time budget

lint: install  ## ruff: lint rules and formatting, checked (configured in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## ruff: apply the formatting and the safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install lint  ## the linter, then the whole suite, slow end-to-end tests included (what CI runs)
	$(PYTEST)

test-fast: install  ## unit tests only
	$(PYTEST) -m "not slow"

BENCHMARKS := $(shell grep -l '__main__' benchmarks/*.py)

bench: install  ## every benchmark at its full size (minutes to hours on a CPU)
	for b in $(BENCHMARKS); do $(BIN)/python $$b || exit 1; done

bench-smoke: install  ## every benchmark at its smallest size, one round: checks that none has rotted (CI runs it)
	for b in $(BENCHMARKS); do echo "== $$b"; PYTHONUNBUFFERED=1 $(BIN)/python $$b --smoke || exit 1; done

bench-gpu: install  ## every GPU figure of docs/performance.md in one run (about 8 minutes on one H200)
	PYTHONUNBUFFERED=1 $(BIN)/python benchmarks/gpu_report.py
