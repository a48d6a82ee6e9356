# Two commands on a fresh machine:  make run  |  make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
ICE_HOST ?= 127.0.0.1

.PHONY: run test test-system-python venv sysdeps lint bench clean

$(BIN)/hoinghi: pyproject.toml setup.py sfu/fastpath/_build.py sfu/fastpath/*.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/hoinghi

# Runs the server with in-memory state (no Redis needed).
run: venv
	HOINGHI_SECRET=$${HOINGHI_SECRET:-dev-secret-change-me} \
	  $(BIN)/hoinghi serve --host $(HOST) --port $(PORT) --ice-host $(ICE_HOST)

# What the tests need from Debian (redis-server, chromium), installed only where missing.
sysdeps:
	@./scripts/sysdeps.sh

test: venv sysdeps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The media path again on the distribution's own Python where it has one (Debian 12: 3.11.2,
# whose asyncio differs from later 3.11s in what DirectIngress uses); CI runs it after `test`.
SYSTEM_PY ?= /usr/bin/python3
test-system-python:
	@if $(SYSTEM_PY) -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then $(MAKE) --no-print-directory venv PY=$(SYSTEM_PY) VENV=.venv-system \
	  && .venv-system/bin/python -m pytest -q -p no:cacheprovider tests/contract \
	     tests/integration/test_router_media.py tests/integration/test_parking.py; \
	else echo "test-system-python: no Python >= 3.11 with venv at $(SYSTEM_PY), skipped"; fi

bench: venv
	$(BIN)/hoinghi bench forward --sweep 1,10,25

clean:
	rm -rf $(VENV) build *.egg-info
