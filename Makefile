# One command to set up and run the quickstart study, one to set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart docs-quickstart lint format test test-fast test-gpu bench bench-smoke bench-gpu
install: $(VENV)/.installed

# what a study needs, then what the tests and the linter need beside it (the quickstart installs the first alone)
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

quickstart: $(VENV)/.runtime  ## pre-train baseline vs MTO on digits over Ray Tune, log to MLflow, write the report
	$(BIN)/python -m ablations.run studies/quickstart.yaml

docs-quickstart: $(VENV)/.runtime  ## run the quickstart afresh: its report into docs/quickstart/, its table into README.md
	$(BIN)/python docs/quickstart/refresh.py

# two processes, each taking whole test files (a file's tests share its fixtures, Ray starts and servers): the suite
# is mostly waiting on Ray, MLflow and subprocesses, so two share two cores well; --durations: the slowest tests
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile --durations=20

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

# On a GPU machine without network whose python3 has torch, the packages it lacks come from .gpu/site.tar.xz
# (see docs/performance.md, "The GPU checks"), unpacked once into $(GPU_SITE_DIR); without that file, from .venv.
GPU_SITE := .gpu/site.tar.xz
GPU_SITE_DIR := /tmp/mto-site
ifneq ($(wildcard $(GPU_SITE)),)
GPU_READY := $(GPU_SITE_DIR)/.unpacked
GPU_PYTHON := PYTHONPATH=$(GPU_SITE_DIR):$(CURDIR) PATH=$(GPU_SITE_DIR)/bin:$$PATH python3
else
GPU_READY := install
GPU_PYTHON := $(BIN)/python
endif

$(GPU_SITE_DIR)/.unpacked: $(GPU_SITE)
	rm -rf $(GPU_SITE_DIR) && mkdir -p $(GPU_SITE_DIR) && tar -C $(GPU_SITE_DIR) -xJf $(GPU_SITE) && touch $@

test-gpu: $(GPU_READY)  ## the tests that need CUDA (skipped without it), printing as they go
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m pytest -m gpu -v -s --durations=0 -p no:cacheprovider

bench-gpu: $(GPU_READY)  ## every GPU figure of docs/performance.md in one run (about 8 minutes on one H200)
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) benchmarks/gpu_report.py
