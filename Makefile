# Every target creates .venv and installs resdepth (with test extras) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test info bench bench-compile bench-input reproduce-table6 reproduce-table2 reproduce-table3 clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

info: install
	$(BIN)/resdepth info

demo: install
	$(BIN)/resdepth info

test: install
	$(BIN)/python -m pytest

bench-compile: install
	$(BIN)/python -m benchmarks.compile_time

clean:
	rm -rf $(VENV) build *.egg-info
