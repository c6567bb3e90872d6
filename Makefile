# The two front-door commands (see README): `make demo` and `make test`.
# Both create ./.venv on first use and install ggmnet into it (torch from this machine's local wheels).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ggmnet-installed

.PHONY: demo test test-fast lint bench install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash experiments/quickstart.sh

test: $(STAMP)
	$(BIN)/ruff check ggmnet tests benchmarks experiments
	$(BIN)/python -m pytest -q -m "not gpu" --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow and not distributed"

lint: $(STAMP)
	$(BIN)/ruff check ggmnet tests benchmarks experiments
