# lightning-ae: every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp

.DEFAULT_GOAL := help
.PHONY: help install test test-fast train denoise similarity pretrain study report notebook tensorboard lint bench bench-gpu gpu-check clean

# TensorBoard listens on the loopback interface only; TB_HOST=0.0.0.0 exposes it to the network on purpose.
LOGDIR  ?= lightning_logs
TB_HOST ?= 127.0.0.1
TB_PORT ?= 6006

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ray,slurm]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install lightning-ae (editable, with dev tools and the Ray and SLURM engines); instant when up to date

test: $(STAMP) ## Run the whole test suite on the bundled MNIST; what CI runs (counts, times: docs/testing.md)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) ## The everyday tier: every test not marked slow; CI runs `make test`
	$(BIN)/python -m pytest -q -m "not slow"

EVALUATION := --config configs/fragments/evaluation.yaml
train: $(STAMP) ## Train the basic AE (configs/basic_ae.yaml + the evaluation fragment), test it, evaluate it; logs in lightning_logs/
	$(BIN)/lightning-ae fit --config configs/basic_ae.yaml $(EVALUATION) $(ARGS)

denoise: $(STAMP) ## Denoising AE, masking noise (configs/denoising_ae.yaml after basic_ae.yaml); run `make train` first for the plain-AE reference
	$(BIN)/lightning-ae fit --config configs/basic_ae.yaml --config configs/denoising_ae.yaml $(EVALUATION) $(ARGS)

similarity: $(STAMP) ## Similarity reconstruction (configs/similarity_ae.yaml after basic_ae.yaml)
	$(BIN)/lightning-ae fit --config configs/basic_ae.yaml --config configs/similarity_ae.yaml $(EVALUATION) $(ARGS)

ACT ?= sigmoid
pretrain: $(STAMP) ## Homework 2.4 for ACT=sigmoid|tanh|relu: classifier without pre-training, then the layer-wise pipeline
	$(BIN)/lightning-ae fit --config configs/basic_ae.yaml --config configs/classifier.yaml --model.init_args.activation $(ACT) $(ARGS)
	$(BIN)/lightning-ae pretrain --config configs/pretrain.yaml --config configs/pretrain_$(ACT).yaml

STUDY ?= configs/study/quick.yaml
study: $(STAMP) ## Run a whole study (STUDY=configs/study/quick.yaml) and write its report
	$(BIN)/lightning-ae study $(STUDY) $(ARGS)

report: $(STAMP) ## Write the report of STUDY from the results present (reports/<name>/report.md and .html)
	$(BIN)/lightning-ae report $(STUDY)

notebook: $(STAMP) ## Execute notebooks/homework.ipynb (homework 2.1-2.4) in its full setting into notebooks/runs/homework.ipynb; hours on 2 cores
	$(BIN)/python scripts/execute_notebook.py $(ARGS)

tensorboard: $(STAMP) ## Open TensorBoard on lightning_logs/ at http://127.0.0.1:6006 (scalars, images, projector)
	$(BIN)/tensorboard --logdir $(LOGDIR) --host $(TB_HOST) --port $(TB_PORT)

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check lightning_ae tests benchmarks scripts notebooks
	$(BIN)/ruff format --check lightning_ae tests benchmarks scripts notebooks

bench: $(STAMP) ## Run the benchmarks in benchmarks/ and print their tables
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

bench-gpu: $(STAMP) ## On a CUDA device: lightning-ae per epoch against the plain eager and CUDA-graph loops, a whole fit, make train's evaluation share
	$(BIN)/python benchmarks/bench_gpu.py $(BENCH_ARGS)

# No install step: on a GPU machine lightning_ae may only be on PYTHONPATH (see scripts/gpu_check.sh for its variables).
gpu-check: ## Every config for 1 epoch (fit + test, predict, pre-training, smoke study) on a CUDA device; GPU_CHECK_ARGS go to every fit
	bash scripts/gpu_check.sh

clean: ## Remove the venv, caches, logs and build outputs (not the bundled data)
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info lightning_logs benchmarks/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
