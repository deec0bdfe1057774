# The two commands of the README: `make demo` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: demo test setup system bench train-corpora clean

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

# Training corpora (asterisk G.722 prompts), decoded to wav + manifests.
train-corpora: setup
	bash scripts/install-debian.sh asterisk-core-sounds-en-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-es-g722
	$(VENV)/bin/pipeline prepare asterisk --out data/asterisk

clean:
	rm -rf $(DEMO) .pytest_cache
