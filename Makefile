# The two commands of the README: `make demo` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: demo test test-unit test-fast lint types setup system test-system bench train-weights clean

setup: system $(STAMP)

system:
	bash scripts/install-debian.sh

# What the tests need beyond the demo: festival and one voice (the festival recipe's test).
test-system:
	bash scripts/install-debian.sh festival festvox-kallpc16k

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m pipeline.demo --out $(DEMO)

# Everything CI runs: lint, types, the whole test suite.
test: setup test-system lint types
	$(PY) -m pytest -q

# The unit tier: synthetic maths and plumbing checks, on a machine without the Debian packages
# (Python packages only; seconds).
test-unit: $(STAMP)
	$(PY) -m pytest -q -m unit

# The inner loop: the tests not marked slow (< 60 s on 2 cores).
test-fast: setup test-system
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check pipeline tests benchmarks scripts

types: setup
	$(VENV)/bin/mypy

# The maintained benchmark suite; each writes benchmarks/results/NAME.json (about 40 min).
bench: setup
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/invert.py
	$(PY) benchmarks/phase.py
	$(PY) benchmarks/e2e.py
	$(PY) benchmarks/routes.py --config mel80-16k --route pinv:mel:800 --route model:mag:100 --route pinv:mag:100
	$(PY) benchmarks/dask_scaling.py
	$(PY) benchmarks/joint_quality.py --config mel80-16k
	$(PY) benchmarks/phase_quality.py

# Reproduce the shipped weights (training corpora, stores, training; ~3.5 h on one thread).
train-weights: setup
	bash scripts/train-weights.sh

clean:
	rm -rf $(DEMO) .pytest_cache
