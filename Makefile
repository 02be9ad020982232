# Every target creates .venv and installs resdepth (with test extras) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-gpu demo test info bench bench-compile bench-gpu bench-input clean \
        reproduce-table6 reproduce-table2 reproduce-table3 reproduce-table4

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The CUDA 12 build of the jax version already installed (Linux x86-64 or aarch64; NVIDIA driver
# >= 525.60.13). CUDA, cuDNN and NCCL come as pip wheels: no CUDA toolkit needed on the machine.
install-gpu: install
	$(BIN)/pip install --quiet "jax[cuda12]==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("jax"))')"
	@$(BIN)/python -c "import jax; b = jax.default_backend(); print('jax', jax.__version__, 'sees', jax.devices()); b == 'gpu' or print('no GPU visible here (a login node?): on a GPU node nvidia-smi must show driver >= 525.60.13')"

info: install
	$(BIN)/resdepth info

# The offline quick study: plain/residual 20 and 56 on the embedded digits (about 6 minutes on 2 cores).
demo: install
	$(BIN)/resdepth sweep --experiment demo --out results
	$(BIN)/resdepth analyze results/demo
	$(BIN)/resdepth plot results/demo
	$(BIN)/resdepth table results/demo
	$(BIN)/resdepth report results/demo

# Table 6, Figures 6 and 7 on CIFAR-10 (GPU hours: see `resdepth sweep --experiment table6 --dry-run`).
reproduce-table6: install
	$(BIN)/resdepth sweep --experiment table6 --out results
	$(BIN)/resdepth analyze results/table6
	$(BIN)/resdepth plot results/table6
	$(BIN)/resdepth table results/table6
	$(BIN)/resdepth report results/table6

test: install
	$(BIN)/python -m pytest

# ImageNet (needs the ILSVRC2012 archives; `resdepth train --dataset imagenet` says where they go).
reproduce-table2: install
	$(BIN)/resdepth sweep --experiment table2 --out results
	$(BIN)/resdepth evaluate results/table2/* --mode 10crop
	$(BIN)/resdepth plot results/table2
	$(BIN)/resdepth table results/table2

reproduce-table3: install
	$(BIN)/resdepth sweep --experiment table3 --out results --depths 34 --set model.shortcut=A
	$(BIN)/resdepth sweep --experiment table3 --out results --depths 34 --set model.shortcut=C
	$(BIN)/resdepth sweep --experiment table3 --out results
	$(BIN)/resdepth evaluate results/table3/* --mode 10crop
	$(BIN)/resdepth table results/table3

reproduce-table4: install
	$(BIN)/resdepth evaluate results/table3/* --mode multiscale
	$(BIN)/resdepth table results/table3

bench-compile: install
	$(BIN)/python -m benchmarks.compile_time

bench: install
	$(BIN)/python -m benchmarks.train_throughput
	$(BIN)/python -m benchmarks.train_throughput --depths 20 --batch 32 --xla-conv

bench-gpu: install
	@$(BIN)/python -c "import jax, sys; jax.default_backend() == 'gpu' or sys.exit('bench-gpu needs a GPU and a CUDA build of jax: make install-gpu')"
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh
	$(BIN)/python -m benchmarks.compile_time

bench-input: install
	$(BIN)/python -m benchmarks.input_pipeline

clean:
	rm -rf $(VENV) build *.egg-info
