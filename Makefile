# The two commands of the README: `make demo` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: demo test setup system bench train-weights clean

setup: system $(STAMP)

system:
	bash scripts/install-debian.sh

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m pipeline.demo --out $(DEMO)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/phase.py

# Reproduce the shipped weights (training corpora, stores, training; ~15 min per config).
train-weights: setup
	bash scripts/train-weights.sh

clean:
	rm -rf $(DEMO) .pytest_cache
