# The project's vocabulary. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
KERNEL_STAMP = $(VENV)/.kernel-stamp
PYTEST_ARGS ?=
# Test processes: model files are opened by real workers (a TensorFlow import each), so
# the suite runs on every core; it ends with its 25 slowest tests and its worker starts
# (pyproject.toml addopts, tests/conftest.py). TEST_WORKERS=0 runs it in one process.
# --dist loadfile keeps a test file on one process, so a module's shared worker run
# (a module-scoped fixture) starts TensorFlow once, not once per process.
TEST_WORKERS ?= auto
TEST_DIST ?= --dist loadfile
# make bench BENCH_ARGS="--quick" (2 runs, no 16x samples check) or "--runs 3"
BENCH_ARGS ?=

.PHONY: install demo test test-fast lint format bench bench-beam bench-attention bench-percentiles bench-one-read sample-models allowlist clean

install: $(STAMP) $(KERNEL_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The compiled engine's fused statistics kernel (kerinspect/engine/kernel), built with the
# system's C++ compiler for the installed TensorFlow. Optional: without a compiler kerinspect
# runs as before (TensorFlow's operations), its tests skip, and the next make tries again.
$(KERNEL_STAMP): $(STAMP) kerinspect/engine/kernel/activation_stats.cc kerinspect/engine/kernel/__init__.py
	@if $(BIN)/python -m kerinspect.engine.kernel >/dev/null; then touch $(KERNEL_STAMP); \
	else echo "kerinspect: going on without the fused statistics kernel (install g++ for it)" >&2; fi

demo: install  ## inspect a sample attention model
	$(BIN)/kerinspect summary sample_models/attention.keras

test: install  ## the whole suite (what CI runs)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(TEST_DIST) $(PYTEST_ARGS)

test-fast: install  ## skip the slow tests
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(TEST_DIST) -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check kerinspect tests sample_models scripts
	$(BIN)/ruff format --check kerinspect scripts
	$(BIN)/mypy

format: install
	$(BIN)/ruff format kerinspect
	$(BIN)/ruff check --fix kerinspect tests sample_models

bench: install  ## wall time and peak memory against a plain forward pass
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

bench-beam: install  ## summary over 8 TFRecord shards: one process against Beam's DirectRunner, 1 and 2 workers
	$(BIN)/python benchmarks/run.py --only beam $(BENCH_ARGS)

bench-attention: install  ## the softmax/attention hooks on a model without softmax: on vs off
	$(BIN)/python benchmarks/attention_hooks.py

bench-percentiles: install  ## what --percentiles costs the compiled engine: off vs on, cnn.keras
	$(BIN)/python benchmarks/percentiles_cost.py sample_models/cnn.keras $(BENCH_ARGS)

bench-one-read: install  ## the compiled engine's statistics against the plain model and the capture floor, one process
	$(BIN)/python benchmarks/one_read.py $(BENCH_ARGS)

sample-models: install  ## rebuild sample_models/ (deterministic)
	$(BIN)/python sample_models/make_samples.py

allowlist: install  ## regenerate kerinspect/scan/allowlist.py (and allowlist_hub.py) from the installed Keras (and keras-hub)
	$(BIN)/python scripts/gen_allowlist.py

clean:
	rm -rf $(VENV) build *.egg-info kerinspect/engine/kernel/build .pytest_cache .mypy_cache .ruff_cache
