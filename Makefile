# One command to set up and run the quickstart study, one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart lint format test test-fast bench
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

bench: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done
