# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv, install torch first when the venv has none, then this package with its
# dev and interp extras, then run. Override the interpreter with `make PY=python3.12 test`, pass pytest
# options with `make test PYTEST_ARGS="-k demo"`, and pick torch's wheel index (for example
# the CPU-only one) with `make TORCH_INDEX=<URL of a PyTorch CPU wheel index> test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install demo demo-quick test bench clean

$(BIN)/pythia: pyproject.toml
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 needed, got " + sys.version' \
		|| { echo "set PY to a Python >= 3.10, e.g. make PY=python3.11 $(MAKECMDGOALS)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	-$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so the package's `torch>=2.4` never pulls another build
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev,interp]"
	touch $(BIN)/pythia

install: $(BIN)/pythia

demo: install
	$(BIN)/pythia demo $(DEMO_ARGS)

demo-quick: install
	$(BIN)/pythia demo --quick $(DEMO_ARGS)

# pytest exits non-zero on any failed or errored test, and 5 when it collected none.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-output demo-output-quick
