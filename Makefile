# make demo / make test: each creates .venv if missing, installs cleanpose with its dependencies, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# A user with a GPU installs their own torch first; otherwise take the CPU-runnable pair that lies on
# this machine's disk (timm needs torchvision, which does not import beside the 2.13.0 CPU wheel).
$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cleanpose demo --out runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs
