# Two commands on a fresh machine with python3: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# gpu-check runs on a machine without the venv: the interpreter that is there
PYTHON_RUN ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo $(PYTHON))
STAMP := $(VENV)/.installed
# The CPU wheel first, so pip never resolves a plain `torch` to a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test bench gpu-check gpu-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# The main job on the embedded digits data: both families and the sanity baselines on two tasks,
# one seed each: CNN generalization (a real task) and INR classification on the shared-permuted
# SIREN zoo (a symmetry diagnostic: align-linear shows how far neuron matching alone gets).
DEMO_MODELS := '["pna","nfn-hnp","stat","flat-mlp","flat-mlp-aug","align-linear"]'
demo: $(STAMP)
	$(BIN)/python -m experiments.compare with task=cnn_generalization models=$(DEMO_MODELS) 'seeds=[0]'
	$(BIN)/python -m experiments.compare with task=inr_classification models=$(DEMO_MODELS) 'seeds=[0]'

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.conversion
	$(BIN)/python -m benchmarks.graph_models
	$(BIN)/python -m benchmarks.step_ratio
	$(BIN)/python -m benchmarks.statistics_cache
	$(BIN)/python -m benchmarks.resnet18_step
	$(BIN)/python -m benchmarks.paramshare
	$(BIN)/python -m benchmarks.zoo

# One prepared GPU run (under 8 minutes on an H100): tests/test_devices.py on CUDA, sparse vs dense
# attention, the step-time ratio, SIREN fitting throughput, a short INR classification run; writes
# benchmarks/results/gpu-*.json. `python -m benchmarks.gpu --quick` is its CPU dry run.
gpu-check:
	$(PYTHON_RUN) -m benchmarks.gpu

# What the lent GPU machines' image lacks (sacred and the pure-Python packages it needs, setuptools
# for its pkg_resources), installed into .gpu-deps/ (carry it with the tree; benchmarks.gpu puts it
# on sys.path). --no-deps: the image has the rest, built for its own Python.
gpu-deps: $(STAMP)
	$(BIN)/pip install --quiet --no-deps --target .gpu-deps sacred docopt-ng jsonpickle munch GitPython gitdb smmap "setuptools<81"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs zoos
