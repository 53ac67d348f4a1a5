# The two entry points of the README: `make demo` and `make test`; `make docs` builds the user guide and API reference.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DOCS_STAMP := $(VENV)/.docs-installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

export PHENOLENS_DATA_MIRROR ?= $(abspath ../shared/data)
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint install docs bench-small

# The stamp's name carries pyproject.toml's hash, so an edit reinstalls and a checkout that only touches its time does not.
$(STAMP): | pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[docs]'
	rm -f $(VENV)/.docs-installed-*
	touch $(DOCS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/phenolens demo --out runs/demo --overwrite

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# docs/ (user guide, results) and the API reference read from the docstrings without importing phenolens
# (seconds). --strict: a warning (a broken link, a documented parameter missing from the signature) fails.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The seconds-to-minutes mode of the main benchmarks, as CI runs it. --check exits 1 on a missed target; the small
# modes check what does not depend on training length (the figures themselves need the full runs: docs/results.md):
#   images_attribution_speed  batched maps equal per-image Captum calls (max abs difference <= 1e-5)
#   images_targets            2-fold CV macro-F1 >= 0.40 and NuclearGFP - CytoplasmicGFP IG share >= 0.2
#   counterfactual_benchmark  the i-ResNet inverse reconstructs its input; network evaluations per counterfactual
#   echoes_benchmark          the small mode's detection and timing targets
#   profiling_percent_rep...  vectorised percent replicating equals the loop reference, and its speed-up
#   sign_memorisation         the HMM's cluster purity on memorised random labels
#   sign_dictionary_speed     held-out log-likelihood at least scikit-learn's, and the speed ratio
#   images_field_look         what a well probe reads of a field's look from crop statistics after each normalisation
#   images_scale              streamed scoring of a screen: speed and peak memory against in-memory
#   fuzz_readers              no malformed input escapes the readers as a traceback; memory stays bounded
#   profiling_bbbc021_options the BBBC021 representations' NSC / NSCB / percent replicating
#   sign_bow_quality          the SIGN bag-of-words quality on Fashion-MNIST (when the Debian package is installed)
bench-small: $(STAMP)
	$(BIN)/python benchmarks/images_attribution_speed.py --small --check
	$(BIN)/python benchmarks/images_targets.py bbbc013 --small --check --out runs/bench-small/images
	$(BIN)/python benchmarks/counterfactual_benchmark.py --small --check
	$(BIN)/python benchmarks/echoes_benchmark.py --small --check --out runs/bench-small/echoes
	$(BIN)/python benchmarks/profiling_percent_replicating.py --small --check
	$(BIN)/python benchmarks/profiling_row_order.py --shuffles 3 --check
	$(BIN)/python benchmarks/profiling_replicating_null.py --small --check
	$(BIN)/python benchmarks/profiling_aggregate.py --small --check
	$(BIN)/python benchmarks/profiling_scale.py --small --check
	$(BIN)/python benchmarks/profiling_batch_effects.py --small
	$(BIN)/python benchmarks/images_adversary.py --small --check --out runs/bench-small/images-adversary
	$(BIN)/python benchmarks/images_adversary.py --erasure --small --check --out runs/bench-small/images-erasure
	$(BIN)/python benchmarks/images_adversary.py --style-mixing --small --check --out runs/bench-small/images-style-mixing
	$(BIN)/python benchmarks/images_field_control.py --small --out runs/bench-small/images-field-control
	$(BIN)/python benchmarks/images_class_model.py --small --check --out runs/bench-small/images-class-model
	$(BIN)/python benchmarks/images_field_look.py --check
	$(BIN)/python benchmarks/images_scale.py --small --check
	$(BIN)/python benchmarks/fuzz_readers.py --small --check
	$(BIN)/python benchmarks/profiling_bbbc021_options.py --small --check
	if [ -d /usr/share/datasets/fashion-mnist ]; then $(BIN)/python benchmarks/sign_bow_quality.py --small --check --out runs/bench-small/sign-bow; fi
	if command -v chromium >/dev/null; then $(BIN)/python benchmarks/explorer_pages.py --small --check; fi
	$(BIN)/python benchmarks/sign_memorisation.py --small --check --out runs/bench-small/sign-memorisation
	if [ -d /usr/share/datasets/fashion-mnist ]; then $(BIN)/python benchmarks/sign_dictionary_speed.py --small --check --out runs/bench-small/sign-dictionary; fi
