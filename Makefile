# deploykit: `make demo` and `make test` both create .venv if absent and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-all install kernels clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deploykit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

# nvcc fatbins for sm_75/86/87/90 (+PTX), architectures checked in the output.
kernels: $(STAMP)
	$(BIN)/python -m deploykit.kernels.build

clean:
	rm -rf build *.egg-info .pytest_cache
