# `make test` and `make demo` work on a fresh machine: they build .venv and install FFmpeg when missing.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install ffmpeg chromium test test-fast lint demo space bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps laion_clap==1.1.7
	$(PY) -m pip install --quiet gradio==6.31.0 gradio_client==2.7.2 playwright==1.65.2
	touch $@

install: $(VENV)/.installed ffmpeg chromium

# torchcodec decodes through the system FFmpeg libraries.
ffmpeg:
	@command -v ffmpeg >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg)

# The Space's browser test drives Debian's chromium (Playwright's own browser download needs an unreachable CDN).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2

# The inner loop: everything but the tests marked slow (full-size models, compile, browser, two processes, demo, wheel).
test-fast: install
	$(PY) -m pytest -q -n 2 -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

demo: install
	$(PY) -m clapforge demo

MODEL ?= runs/demo/hub
space: install
	MODEL=$(MODEL) $(PY) spaces_demo/app.py

# Every benchmark in benchmarks/ (about 20 minutes); the figures go to benchmarks/RESULTS.md.
bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
