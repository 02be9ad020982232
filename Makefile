# Every target creates .venv and installs resdepth (with test extras) on first use.

# The venv's Python: 3.12 where it runs here, else 3.11. jax 0.12, whose CPU train step is the
# fastest (docs/benchmarks.md), needs 3.12 or newer, and the GPU machines run 3.12; 3.13 is not
# tried because the test suite has not been run on it. resdepth itself runs on 3.11.
# Each candidate is run, not only looked up: pyenv puts a shim for every installed version on
# the PATH, which fails unless that version is selected, so pyenv's own interpreters are tried
# too. `make PYTHON=/path/to/python install` picks one; an existing .venv is kept as it is.
PYENV_PYTHONS = $(shell ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[12].*/bin/python3.1[12] \
                  2>/dev/null | sort -r -V)
PYTHON ?= $(shell for candidate in python3.12 python3.11 $(PYENV_PYTHONS) python3; do \
            $$candidate -c 'import sys; minor = sys.version_info[1]; \
              sys.version_info[0] == 3 and 11 <= minor <= 12 and print(minor, sys.executable)' \
            2>/dev/null; done | sort -s -n -r -k 1,1 | head -n 1 | cut -d " " -f 2)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-gpu demo test info bench bench-compile bench-gpu bench-input clean \
        reproduce-table6 reproduce-table2 reproduce-table3 reproduce-table4

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || \
	  { echo "no Python 3.11 or 3.12 found: make PYTHON=/path/to/python3.12" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
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

# The offline quick study: plain/residual 20 and 56 on the embedded digits (3 min 17 s on 2 idle cores, measured 2026-12-01).
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

# Two workers, each taking whole test files (module fixtures train once): on two cores the
# suite's compiles and subprocess start-ups overlap with the other worker's training.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

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

# On CPU: the train step against the code before issue 9 (d3ca069, run in a git worktree),
# alternated in one sitting; then, in one process each, against resdepth's previous CPU
# convolution (per-tap) and lax.conv_general_dilated's own gradients (xla), in alternating rounds.
bench: install
	NEW_PYTHON=$(BIN)/python benchmarks/against_commit.sh d3ca069 3 20,56
	$(BIN)/python -m benchmarks.train_throughput --depths 20,56 --compare per-tap
	$(BIN)/python -m benchmarks.train_throughput --depths 110
	$(BIN)/python -m benchmarks.train_throughput --depths 20 --batch 32 --compare xla

bench-gpu: install
	@$(BIN)/python -c "import jax, sys; jax.default_backend() == 'gpu' or sys.exit('bench-gpu needs a GPU and a CUDA build of jax: make install-gpu')"
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh --variants
	$(BIN)/python -m benchmarks.compile_time

bench-input: install
	$(BIN)/python -m benchmarks.input_pipeline

clean:
	rm -rf $(VENV) build *.egg-info
