# Provex developer commands. Every target installs what it needs into .venv (and .tools for buf).
#   make demo    install and run a local federation through a walkthrough (Ctrl-C stops it)
#   make test    install and run the test suite (the README's test command; CI runs it)
#   make lint    ruff, mypy --strict, buf lint
#   make proto   regenerate the committed code from proto/provex/v1/*.proto
#   make check   test + lint, as .ci/run does

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint proto check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Provex needs Python 3.11 or newer as $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# DEMO_ARGS=--exit-after-walkthrough stops once the walkthrough is done.
demo: $(STAMP)
	$(PY) deploy/federation.py $(DEMO_ARGS)

# The console test (tests/integration/test_console.py) drives Debian's Chromium; installed once.
test: $(STAMP)
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(PY) -m pytest

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy proto/provex registry node
	cd proto && ../$(BUF) lint

proto: $(STAMP)
	$(PY) proto/generate.py

check: test lint

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
