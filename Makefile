# noregret: two commands matter — `make train` (the default experiment) and `make test`.
# Everything else is set up on demand: a project-local .venv with torch 2.11.0 (libtorch for tch),
# the Python reference packages for the parity tests, then a release build of the binary.

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(abspath $(VENV))/bin/python
PIP := $(abspath $(VENV))/bin/pip
TORCH := torch==2.11.0
# The Python reference stack the parity tests compare against (pinned: numbers must not drift).
REFERENCE := transformers==5.24.0 peft==0.21.2 safetensors==0.8.0 tokenizers==0.23.3 numpy pytest math-verify==0.9.0

# A user's own libtorch (LIBTORCH=/path) wins; otherwise tch finds the venv's torch.
ifeq ($(origin LIBTORCH), undefined)
export LIBTORCH_USE_PYTORCH := 1
endif
export PATH := $(abspath $(VENV))/bin:$(PATH)

BIN := target/release/noregret
CARGO_BUILD := cargo build --release

.PHONY: build test train bench venv reference base-model gpu-check

venv: $(VENV)/.torch
$(VENV)/.torch:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check $(TORCH)
	@touch $@

reference: $(VENV)/.reference
$(VENV)/.reference: $(VENV)/.torch
	$(PIP) install --quiet --disable-pip-version-check $(REFERENCE)
	@touch $@

build: venv
	$(CARGO_BUILD) --bin noregret

test: build reference
	cargo test --release --workspace
	NOREGRET_BIN=$(abspath $(BIN)) $(PY) -m pytest -q tests/python

# The default experiment: rank-2 LoRA RL on the project's own base model (models/arith-base,
# made by `noregret sft configs/arith-base.toml`). Results in runs/arith/ (replaced each time).
train: build
	rm -rf runs/arith
	$(BIN) train configs/arith.toml

# Re-make the default experiment's base model from random weights (it is in the repo already).
base-model: build
	rm -rf runs/arith-base
	$(BIN) sft configs/arith-base.toml
	rm -rf models/arith-base && cp -r runs/arith-base/model models/arith-base

# The benchmarks' extra peer: TRL's GRPOTrainer (not needed by the tests).
BENCH_PEERS := trl==1.16.0

bench: build reference
	$(PIP) install --quiet --disable-pip-version-check $(BENCH_PEERS)
	NOREGRET_BIN=$(abspath $(BIN)) $(PY) bench/run_bench.py

# On a machine where torch sees CUDA: the parity tests (test_parity.py, test_lora.py) with noregret
# and the reference models on the GPU, and a 20-step run of the default experiment there; prints one
# JSON line of results (exit 1 if something failed). Without CUDA it says so and exits 0.
gpu-check: build reference
	NOREGRET_BIN=$(abspath $(BIN)) $(PY) bench/gpu_check.py
