# Two commands do all set-up on a fresh machine:
#   make demo   # venv + dependencies + the clipdet command, then score the bundled demo images
#               # (weights download on first use)
#   make test   # venv + dependencies, then lint and run the test suite offline on CPU
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench reproduce report-example clean

# The dependencies go in through tools/install.py (uv with pip's own settings, pip where uv
# fails; then byte-compiled on every core). clipdet itself is installed editable (no build
# isolation: setuptools comes with requirements-dev.txt), which puts `clipdet` in $(BIN).
$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml tools/install.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python tools/install.py -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: $(BIN)/.installed
	$(BIN)/clipdet score --in_csv data/demo/demo.csv --out_csv results.csv
	$(BIN)/clipdet metrics --in_csv data/demo/demo.csv --out_csv results.csv --metrics auc,acc

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

# Debian's Chromium, which the report's browser test drives (Playwright, no browser download).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

# The sources byte-compiled first: with PYTHONDONTWRITEBYTECODE set (as here and in CI), every
# subprocess and Ray worker of the tests would otherwise compile each module it imports.
COMPILE := $(BIN)/python -m compileall -q -j 0 clipdet networks tests > /dev/null

# pytest-xdist runs the suite in TEST_WORKERS processes (2: this machine's and CI's cores):
# every test on the Ray instance in one of them, the other test modules wherever a worker is
# free (tests/conftest.py). TEST_WORKERS=0 runs it in one process, as `pytest` alone does.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test: lint $(CHROMIUM)
	$(COMPILE)
	$(PYTEST)

# Everything but the tests marked slow (a few seconds to ~40 s each); CI runs them all.
test-fast: lint $(CHROMIUM)
	$(COMPILE)
	$(PYTEST) -m "not slow"

# The paper's Synthbuster table, clean and postprocessed (downloads the data and weights).
reproduce: $(BIN)/.installed
	$(BIN)/clipdet reproduce

# The README's screenshot of a report (demo images, random-weight models).
report-example: $(BIN)/.installed $(CHROMIUM)
	$(BIN)/python benchmarks/report_example.py

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_scoring.py
	$(BIN)/python benchmarks/bench_attribution.py
	$(BIN)/python benchmarks/bench_engines.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache clipdet.egg-info
