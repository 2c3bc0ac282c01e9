# Two commands on a fresh machine (Python 3.11, pip, make): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The service on an embedded DuckDB file, with a demo's data (built once, then reused) and the
# dashboard; `metering serve --dev` runs it on an empty data/metering.duckdb instead.
run: $(BIN)/.installed
	$(BIN)/metering demo

lint: $(BIN)/.installed
	$(BIN)/ruff check metering tests benchmarks

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache
