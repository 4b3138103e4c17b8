# `make test` and `make demo` work on a fresh machine: they build .venv and install FFmpeg when missing.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install ffmpeg test lint demo bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps laion_clap==1.1.7
	touch $@

install: $(VENV)/.installed ffmpeg

# torchcodec decodes through the system FFmpeg libraries.
ffmpeg:
	@command -v ffmpeg >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg)

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

demo: install
	$(PY) -m clapforge demo

bench: install
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) build *.egg-info
