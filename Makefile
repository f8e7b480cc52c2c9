# The two commands:
#   make run            the embedded broker on http://127.0.0.1:8000 (SQLite,
#                       in-memory channel layer, everything in one process)
#   make run DEMO=1     the same, after creating the demo accounts (printed)
#   make test           the whole suite on SQLite, then again on PostgreSQL
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LISTEN ?= 127.0.0.1:8000
# More runbroker options, e.g. `make run ARGS=--no-gateway`.
ARGS ?=
# Where `make run DEMO=1` runs the demo's simulated PLC, and its simulated
# HMI remote desktop (when the README's optional demo packages are installed).
DEMO_DEVICE ?= 127.0.0.1:2201
DEMO_RDP ?= 127.0.0.1:3390
# Extra arguments for both pytest passes, e.g. `make test PYTEST_ARGS=-x`.
PYTEST_ARGS ?=

.PHONY: run test venv test-venv vendor services lint

# --- Python: a virtualenv, re-installed only when the pins change -----------

$(VENV)/.runtime-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test-installed: $(VENV)/.runtime-installed requirements-test.txt
	$(PIP) install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

venv: $(VENV)/.runtime-installed
test-venv: $(VENV)/.test-installed

# --- Browser assets: npm packages copied into static/vendor/ -----------------
# Served by the broker itself (plants are often offline; never a CDN).

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "make: npm is needed for the portal's browser assets (Debian: apt-get install npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

static/vendor/.installed: node_modules/.installed
	rm -rf static/vendor
	mkdir -p static/vendor/xterm static/vendor/asciinema-player static/vendor/novnc
	cp node_modules/@xterm/xterm/lib/xterm.js node_modules/@xterm/xterm/lib/xterm.mjs \
	   node_modules/@xterm/xterm/css/xterm.css node_modules/@xterm/xterm/LICENSE static/vendor/xterm/
	cp node_modules/@xterm/addon-fit/lib/addon-fit.js node_modules/@xterm/addon-fit/lib/addon-fit.mjs \
	   static/vendor/xterm/
	cp node_modules/asciinema-player/dist/bundle/asciinema-player.min.js \
	   node_modules/asciinema-player/dist/bundle/asciinema-player.css \
	   node_modules/asciinema-player/LICENSE static/vendor/asciinema-player/
	cp -R node_modules/@novnc/novnc/core node_modules/@novnc/novnc/vendor \
	   node_modules/@novnc/novnc/LICENSE.txt static/vendor/novnc/
	touch $@

vendor: $(if $(wildcard package.json),static/vendor/.installed)

# --- make run ----------------------------------------------------------------

run: venv vendor
	bash .ci/services.sh install-run
	$(PY) manage.py migrate --noinput
ifneq ($(filter-out 0 no false,$(DEMO)),)
	$(PY) manage.py seed_demo
	$(PY) manage.py runbroker --listen $(LISTEN) --demo-device $(DEMO_DEVICE) --demo-rdp $(DEMO_RDP) $(ARGS)
else
	$(PY) manage.py runbroker --listen $(LISTEN) $(ARGS)
endif

# --- make test -----------------------------------------------------------------
# .ci/services.sh installs missing Debian packages (as root), starts
# PostgreSQL and Redis when they are installed but not running, and prints
# the PostgreSQL URL. Under CI=true a service that cannot be reached fails
# the run here, before any test. pytest's exit code 5 (no tests collected)
# is a failure too.

define pytest
	$(1) $(PY) -m pytest $(2) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests, which is a failure" >&2; exit 1; fi; \
	exit $$rc
endef

# ruff (lint and format) and the import-linter contracts in .importlinter:
# broker imports sessions only through the revocation seam, doors do not
# import each other, the session core and anomalies import no door.
lint: test-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

services:
	bash .ci/services.sh install
	bash .ci/services.sh start

test: lint services test-venv vendor
	@echo "== make test: pass 1 of 2, SQLite (the whole suite but tests that need PostgreSQL)"
	$(call pytest,DATABASE_URL=,-m "not postgres")
	@echo "== make test: pass 2 of 2, PostgreSQL (tests that need it, and every test but browser, sshd and rdp ones)"
	@url=$$(bash .ci/services.sh database-url) || exit 1; \
	if [ -z "$$url" ]; then echo "make test: PostgreSQL is not available; its pass is skipped (install postgresql, or set AIRLOCK_TEST_DATABASE_URL)"; exit 0; fi; \
	$(call pytest,DATABASE_URL="$$url",-m "postgres or not (browser or sshd or rdp)")
