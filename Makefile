# `make demo` and `make test` work on a fresh machine with Python 3.11 and a package registry.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := $(VENV)/.installed-extras

.PHONY: demo test test-fast test-tools bench audit real clean

# what a run needs; the demo installs no more
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so nothing later pulls a CUDA build
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e .
	touch $(STAMP)

# the test tools and Ray (the suite runs a Ray cluster), for test, audit and bench
$(EXTRAS): $(STAMP)
	$(BIN)/pip install -e '.[test,ray]'
	touch $(EXTRAS)

demo: $(STAMP)
	$(BIN)/python -m scenarios.ecommerce_bank

# MovieLens-100K with and without the cold cut (downloads the data set once; docs/scenarios.md, "Scenarios that can show a failure")
real: $(STAMP)
	$(BIN)/python -m scenarios.movielens --dir runs/movielens
	$(BIN)/python -m scenarios.movielens --cold-cut --dir runs/movielens_cold

# the programs some tests start, where missing: Debian's chromium (tests/integration/test_docs_page.py opens A's /docs) and
# PostgreSQL server (tests/conftest.py starts a throwaway cluster for the SQL-source tests)
test-tools:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# one xdist worker per core, each test module whole on one worker, in the order tests/conftest.py gives
test: $(EXTRAS) test-tools
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

# the unit and property tests only (tests/unit: no test there is marked integration): under two minutes on two cores
test-fast: $(EXTRAS) test-tools
	$(BIN)/python -m pytest tests/unit -n auto --dist loadfile

bench: $(EXTRAS)
	$(BIN)/pip install -e '.[test,ray,bench]'
	$(BIN)/python -m bench.he
	$(BIN)/python -m bench.secure_step
	$(BIN)/python -m bench.psi
	$(BIN)/python -m bench.serve

audit: $(EXTRAS)
	$(BIN)/python -m audit --story ecommerce_bank --seeds 0 1 2 --targets 32 16 8 4 2 1
	$(BIN)/python -m audit --story bank_offers --users 1000 --seeds 0 1 2 --targets 32 16 8 4 2 1

clean:
	rm -rf $(VENV) runs work
