# The two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

export PHENOLENS_DATA_MIRROR ?= $(abspath ../shared/data)
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint install bench-small

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/phenolens demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# The seconds-to-minutes mode of the main benchmarks, as CI runs it: the pipelines behind the issues' figures
# still run end to end (the figures themselves need the full runs; see each script's docstring).
bench-small: $(STAMP)
	$(BIN)/python benchmarks/images_attribution_speed.py --small
	$(BIN)/python benchmarks/images_targets.py bbbc013 --small --out runs/bench-small/images
	$(BIN)/python benchmarks/counterfactual_benchmark.py --small
	$(BIN)/python benchmarks/echoes_benchmark.py --small --out runs/bench-small/echoes
	$(BIN)/python benchmarks/profiling_percent_replicating.py --small
	$(BIN)/python benchmarks/sign_memorisation.py --small --out runs/bench-small/sign-memorisation
	if [ -d /usr/share/datasets/fashion-mnist ]; then $(BIN)/python benchmarks/sign_dictionary_speed.py --small --out runs/bench-small/sign-dictionary; fi
