# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install the project with its pinned deps.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/raysearch run configs/autohas_nb201_digits.yaml

test: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q

test-all: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) runs
