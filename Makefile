# Quick start: `make train` then `make test`. Both create .venv and install the package on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[dev,sweep]"
	touch $(STAMP)

install: $(STAMP)

# A default run on the embedded procedural data: samples, plots and TensorBoard logs under outputs/.
train: $(STAMP)
	$(PY) train.py experiment=quickstart

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check artgan tests bench train.py generate.py

bench: $(STAMP)
	$(PY) bench/throughput.py
	$(PY) bench/data.py

clean:
	rm -rf outputs multirun .cache .pytest_cache
