# shelfguard — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.shelfguard-installed

export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint typecheck pytest browser bench lock clean

# Creates the virtualenv and installs the pinned dependencies (only when the pins change).
$(STAMP): constraints.txt pyproject.toml training/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,production]" -e ./training
	touch $@

# Cosmos renders the dbt task groups from this manifest; rebuilt when the dbt project changes.
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := dbt_project/dbt_project.yml dbt_project/profiles.yml $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null)

$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(BIN)/python -c "from shelfguard.config import load_settings; from shelfguard.data.dbt_project import parse_project; parse_project(load_settings())"

demo: $(STAMP) $(MANIFEST)
	$(BIN)/shelfguard demo

test: $(STAMP) $(MANIFEST) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(MANIFEST) browser
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=40 $(PYTEST_ARGS)

# The console's browser tests drive Debian's Chromium through Playwright (Playwright's own
# browser download is not used). Installed with apt-get when missing and we are root;
# elsewhere those tests skip with the reason, and fail under CI=true.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "$(CHROMIUM) is missing: install Debian's chromium for the console's browser tests"; fi

# Benchmarks (BENCHMARKS.md): every stage against its baseline, printed as a table and
# written as JSON to BENCH_OUT. BENCH_SCALE=tiny is a quick smoke run.
BENCH_SCALE ?= full
BENCH_OUT ?= .shelfguard/bench.json

bench: $(STAMP) $(MANIFEST)
	BENCH_SCALE=$(BENCH_SCALE) BENCH_OUT=$(BENCH_OUT) $(BIN)/python -m benchmarks.run

# Refreshes constraints.txt from the current virtualenv (after changing a range in pyproject.toml).
lock: $(STAMP)
	{ echo "# Exact versions tested together (pip -c constraints.txt). Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+cpu/\1/'; } > constraints.txt

clean:
	rm -rf .shelfguard .mypy_cache .ruff_cache .pytest_cache
