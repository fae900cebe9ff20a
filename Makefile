# Two commands, each setting itself up on a fresh machine with Python 3.11:
#   make tutorial   the document's 10000-step program, placed on three devices
#   make test       the whole test suite; builds the optional custom op first
#                   when a C++ compiler works, else says in one line why not
#                   and its tests skip (`make ops test` to require the op, CI)
#   make ops        the optional custom concat op, into ~/.cache/tf_mp (CUDA
#                   kernel when nvcc works; `make ops CUDA=no` for the CPU
#                   kernel alone); fails when it cannot be built
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
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m tf_mp.ops.build --cuda=$(CUDA)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m tf_mp.ops.build --cuda=$(CUDA) --optional
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: $(STAMP)
	$(PY) tools/bench_tutorial.py
