# Two commands, each setting itself up on a fresh machine with Python 3.11:
#   make tutorial   the document's 10000-step program, placed on three devices
#   make test       the whole test suite (builds the custom op first)
#   make ops        the optional custom concat op (CUDA kernel when nvcc is
#                   found; `make ops CUDA=no` for the CPU kernel alone)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CUDA ?= auto

.PHONY: tutorial test bench ops

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

tutorial: $(STAMP)
	$(PY) examples/tutorial.py

ops: $(STAMP)
	$(PY) tools/build_ops.py --cuda=$(CUDA)

test: $(STAMP) ops
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) tools/bench_tutorial.py
