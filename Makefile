# Two commands on a fresh machine (Python 3.11, pip, make): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench bench-litellm focus-validator clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The service on the default database file (data/metering.duckdb, or METERING_DB), with a demo's data
# built into it once when it is empty, and the dashboard; CLI commands in another terminal go through it.
run: $(BIN)/.installed
	$(BIN)/metering demo

lint: $(BIN)/.installed
	$(BIN)/ruff check metering tests benchmarks

# Two workers, a test file each at a time (pytest-xdist); the schemathesis fuzz test runs on its own
# after them, because under a file-at-a-time split its generated cases collapse into one.
test: lint
	$(BIN)/pytest -n 2 --dist loadfile --ignore=tests/api/test_fuzz.py
	$(BIN)/pytest tests/api/test_fuzz.py

# The benchmark suite (figures beside same-run references; writes test-artifacts/bench/results.{json,md}).
bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run --size $(or $(SIZE),quick)

# litellm, for the pricing benchmark's reference only, in an environment of its own.
bench-litellm:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/python -m pip install --quiet litellm

# The official FOCUS validator (focus-validator 2.x, FOCUS 1.2; it needs Python >= 3.12), in an environment
# of its own: tests/api/test_focus_validator.py runs it on our export when .venv-focus exists. pyarrow is
# held below 19 because the validator pins numpy < 2, which newer pyarrow wheels cannot load.
FOCUS_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3) python3.12)
focus-validator:
	$(FOCUS_PYTHON) -m venv .venv-focus
	.venv-focus/bin/python -m pip install --quiet 'focus-validator>=2.2,<3' 'pyarrow<19'

clean:
	rm -rf $(VENV) .venv-litellm .venv-focus .pytest_cache
