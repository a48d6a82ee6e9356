# Two commands on a fresh machine:  make run  |  make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
ICE_HOST ?= 127.0.0.1

.PHONY: run test venv sysdeps lint bench clean

$(BIN)/hoinghi: pyproject.toml setup.py sfu/fastpath/_build.py sfu/fastpath/fanout.c sfu/fastpath/ingress.c
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

bench: venv
	$(BIN)/hoinghi bench forward --sweep 1,10,25

clean:
	rm -rf $(VENV) build *.egg-info
