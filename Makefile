# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench docs clean browser

# The editable install compiles the C++ CPU kernels (setup.py) against the venv's torch, so it is built without
# build isolation (which would fetch another torch, on Linux PyPI's CUDA build); setuptools and ninja come first.
# An edited kernel source re-runs the install (the kernels' build records would otherwise send them to a JIT build).
$(STAMP): pyproject.toml constraints.txt setup.py $(wildcard src/mambaseg/*/csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch==2.13.0 "setuptools>=77" ninja
	$(PIP) install --quiet -c constraints.txt --no-build-isolation -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mambaseg demo

test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# headless Chromium for the report's rendering test (Debian package; skipped quietly where it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
		echo "chromium not installed: the report rendering test will be skipped"

# the documentation site into site/, warnings as errors (tests/test_docs.py runs the same build in `make test`)
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(VENV)/bin/mambaseg bench scan

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info src/mambaseg/*/_*.so src/mambaseg/*/_*.build.json
