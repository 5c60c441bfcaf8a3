# The two commands a newcomer needs: `make run` and `make test`. Everything else is for CI and us.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
WEB_PORT ?= 8000
PYTEST_ARGS ?= -n 2

# Local development defaults; production sets its own environment (see README).
export DEBUG ?= 1

.PHONY: install run test lint format bench bench-anchor migrate wheel-check fuzz chaos chaos-short

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable

run: export PUBLIC_BASE_URL ?= http://127.0.0.1:$(WEB_PORT)
run: migrate
	$(BIN)/python manage.py bootstrap_demo --base-url $(PUBLIC_BASE_URL)
	WEB_PORT=$(WEB_PORT) $(BIN)/honcho -f platform/Procfile.dev -d . start

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy tenants billing generation dashboard config tests

# The long form of the CI fuzzing (tests/test_fuzz_api.py): random, many cases per operation.
fuzz: $(STAMP)
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-200} FUZZ_RANDOM=1 $(BIN)/python -m pytest -p no:cacheprovider \
		tests/test_fuzz_api.py tests/test_input_battery.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python tests/bench/run.py $(BENCH_ARGS)
	$(BIN)/python tests/bench/compression.py
	$(BIN)/python tests/bench/batch_fairness.py
	$(BIN)/python tests/bench/billing_outbox.py $(BILLING_BENCH_ARGS)
	$(BIN)/python tests/bench/edits.py

# `make bench`'s run.py plus the LiteLLM proxy on the same fake upstream, in the same run, and the
# ratios (docs/performance.md). LiteLLM lives in its own venv (var/anchor-venv), never in .venv.
ANCHOR_STAMP := var/anchor-venv/.anchor-installed
$(ANCHOR_STAMP): | $(STAMP)
	$(BIN)/python tests/bench/anchor.py install

bench-anchor: $(STAMP) $(ANCHOR_STAMP)
	$(BIN)/python tests/bench/run.py --anchor $(BENCH_ARGS)

# The wheel ships the product only: no fake servers, no tests.
wheel-check: $(STAMP)
	rm -rf var/wheel build && $(BIN)/python -m pip wheel --quiet --no-deps -w var/wheel .
	$(BIN)/python -c "import sys, zipfile, glob; names = zipfile.ZipFile(glob.glob('var/wheel/*.whl')[0]).namelist(); bad = [n for n in names if n.startswith(('fakes/', 'tests/')) or 'fake' in n.split('/')[-1]]; print(len(names), 'files in the wheel;', 'fakes/tests:', bad or 'none'); sys.exit(1 if bad else 0)"

# Fault injection on the production profile with a private PostgreSQL and Redis (tests/chaos/).
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

chaos-short: $(STAMP)
	$(BIN)/python -m tests.chaos.run --short $(CHAOS_ARGS)
