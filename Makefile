# Two entry points (README.md): `make run` sets up and runs the main job, `make test` sets up and runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-slow benchmarks clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build on disk; an unpinned torch pulls GBs of CUDA wheels.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,search]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/lightnn run

test: $(STAMP)
	@if [ -n "$$CI" ]; then sh scripts/ensure_postgres.sh; fi
	$(BIN)/python -m pytest -q -m "not slow"
	@if [ -n "$$CI" ] || [ -n "$$LIGHTNN_SLOW" ]; then $(BIN)/python -m pytest -q -m slow || test $$? -eq 5; fi

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/assemble.py

clean:
	rm -rf $(VENV) build *.egg-info
