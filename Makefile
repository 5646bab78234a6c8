# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install the project with its pinned deps.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,export]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/raysearch run configs/autohas_nb201_digits.yaml

# pytest's exit 5 ("no tests collected") is a failure too.
test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	$(BIN)/python benchmarks/autohas_cost.py

clean:
	rm -rf $(VENV) runs
