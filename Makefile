# make test: set up .venv (if missing) and the Debian data packages, and run the whole suite.  make demo: set up and run the demo.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The pinned CPU build first, so that torch>=2.4 in pyproject pulls no multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	bash scripts/setup_data.sh || echo "Debian data packages not installed: the speech and image data tests skip"
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest

# The tour: every task trained briefly on its bundled data; one table and runs/tour/report.md.
demo: $(STAMP)
	bash scripts/setup_data.sh || echo "Debian data packages not installed: the tour skips the speech and image tasks"
	$(BIN)/python scripts/tour.py --out runs/tour

bench: $(STAMP)
	$(BIN)/python benchmarks/layers.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
