# Quick start: `make demo` and `make test`. Both create .venv and install when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint golden docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU torch first, pinned: pip must never resolve a newer (CUDA) build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/flockwatch demo

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# After a deliberate change to extraction or to a feature (with its version bumped): rewrite
# the golden files that tests/test_golden_files.py compares against, and commit them.
golden: $(STAMP)
	$(BIN)/python tests/golden/make_golden.py

# Rewrite the generated parts of docs/ (flow schema, feature families) from the code;
# tests/test_docs.py fails until they are up to date.
docs: $(STAMP)
	$(BIN)/python docs/generate.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
