# Flex Agents — the two commands: `make run` and `make test`.
PORT ?= 8000
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench migrate clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	PYTHON=$(PYTHON) bash scripts/bootstrap.sh
	touch $(STAMP)

setup: $(STAMP)

migrate: setup
	$(PY) manage.py migrate --noinput

# Serve API, admin, history pages, SSE and worker threads on SQLite.
run: migrate
	rm -rf db/prometheus  # metrics of earlier runs (PROMETHEUS_MULTIPROC_DIR default)
	DEBUG=1 $(PY) manage.py flex_demo --port $(PORT)
	DEBUG=1 FLEX_EMBEDDED_WORKERS=$${FLEX_EMBEDDED_WORKERS:-2} $(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) flexagents.asgi:application

# The whole suite (SQLite unless DATABASE_URL says otherwise).
test: setup
	bash scripts/ensure-browser.sh
	$(VENV)/bin/pytest -q -p no:randomly

# Everything but the multi-process and browser tests.
test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow and not browser"

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) db artifacts staticfiles
