# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates .venv and installs requirements.txt on first use (and again when it changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint replicas clean

$(VENV)/.installed: requirements.txt requirements-image.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -r requirements.txt
	touch $@

demo: $(VENV)/.installed  ## the main job: Redis + 3 replicas, then the original experiment
	$(BIN)/python -m benchmarks

test: $(VENV)/.installed lint  ## lint, then every test against real redis-server and gunicorn
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

replicas: $(VENV)/.installed  ## a local Redis + 3 replicas, until Ctrl-C
	$(BIN)/python -m harness.replicas --replicas 3

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .replica-logs results
