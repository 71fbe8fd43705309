# Every target works from a fresh clone: `make demo` and `make test` create the venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench kotlin lint clean

venv: $(STAMP)

# torch first, pinned to the build on this machine's disk (a bare `torch` would fetch a CUDA build).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# The offline demo on the embedded default corpus (see README).
demo: venv
	HF_HUB_OFFLINE=1 $(PY) -m codelora.demo

test: venv kotlin
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: venv
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py

# kotlinc + java for the execution-based Kotlin benchmark (Debian's `kotlin` package, kotlinc 1.3).
# A prerequisite of `test`, so the Kotlin execution tests run rather than skip (~30 s here).
# util-linux provides `unshare`, which the sandbox uses to cut generated programs off the network.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
kotlin:
	@command -v kotlinc >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq kotlin util-linux >/dev/null)

lint: venv
	$(PY) -m ruff check codelora tests bench

clean:
	rm -rf $(VENV) .pytest_cache
