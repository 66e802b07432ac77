# One command to set up and run the example, one to set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline machines: use the shared VGG16 weights when they sit beside the repo;
# elsewhere Keras downloads the ImageNet VGG19 weights on first use.
SHARED_WEIGHTS := $(wildcard ../shared/weights/vgg16_imagenet_notop.weights.h5)
ifneq ($(SHARED_WEIGHTS),)
export NST_WEIGHTS ?= $(abspath $(SHARED_WEIGHTS))
export NST_TEST_WEIGHTS ?= $(abspath $(SHARED_WEIGHTS))
endif
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup setup-test run test lint format bench clean chromium

# What running needs: the package, the fast lane and HEIC/HEIF photos.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[tensorflow,fast,heif]"
	touch $@

# The test extras on top (pytest, moto, scikit-image, JAX): about 760 MB that running never imports.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[tensorflow,fast,heif,test]"
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

run: setup
	$(VENV)/bin/nst run manifests/example.csv --out out/example

# The report test opens the page in headless Chromium (Debian's package); it skips, saying so, if this fails.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: the report's browser test will be skipped"

# Everything on TensorFlow (the default backend), then the marked tests again on JAX in processes that
# cannot import TensorFlow (tests/no_tensorflow): the core, and the flow (bad file, resume, report, `nst run`).
JAX_TESTS := tests/test_losses.py tests/test_stylize.py tests/test_batch.py tests/test_backend.py tests/test_optimize.py \
	tests/test_pipeline.py tests/test_report.py tests/test_batches_flow.py tests/test_schedule.py tests/test_content_terms.py
# Two workers (pytest-xdist), each with its own Prefect server and moto; an idle worker takes tests
# from the other's queue (worksteal), so a long test near the end does not leave one waiting.
# The 15 slowest tests are listed: the suite should stay under 10 minutes on a 2-core machine.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist worksteal --durations=15
test: setup-test chromium lint
	$(PYTEST)
	NST_BLOCK_TENSORFLOW=1 KERAS_BACKEND=jax $(PYTEST) -m backends $(JAX_TESTS)

# Lint (pyflakes, pycodestyle, import order, likely bugs; pyproject.toml's [tool.ruff]) and check the
# formatting before the tests; `make format` formats.
lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup-test
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_flops.py
	$(PY) benchmarks/bench_pipeline.py

clean:
	rm -rf out .pytest_cache
