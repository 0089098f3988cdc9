# Flex Agents — the two commands: `make run` and `make test`.
PORT ?= 8000
SPA_PORT ?= 5173
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Parallel test workers (pytest-xdist): one per core, at most 4; TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
PYTEST := $(VENV)/bin/pytest -q -p no:randomly -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --no-loadscope-reorder

.PHONY: setup run test test-fast bench migrate clean spa

$(STAMP): pyproject.toml clients/python/pyproject.toml scripts/bootstrap.sh
	PYTHON=$(PYTHON) bash scripts/bootstrap.sh
	touch $(STAMP)

setup: $(STAMP)

migrate: setup
	$(PY) manage.py migrate --noinput

# Serve API, admin, history pages, SSE and worker threads on SQLite. The demo's
# human capability (human.CopyEdit, done in the console's task inbox) comes from
# examples/capabilities/human.json unless FLEX_HUMAN_CAPABILITIES says otherwise.
run: migrate
	rm -rf db/prometheus  # metrics of earlier runs (PROMETHEUS_MULTIPROC_DIR default)
	DEBUG=1 $(PY) manage.py flex_demo --port $(PORT)
	DEBUG=1 FLEX_EMBEDDED_WORKERS=$${FLEX_EMBEDDED_WORKERS:-2} \
	  FLEX_HUMAN_CAPABILITIES="$${FLEX_HUMAN_CAPABILITIES:-$$(cat examples/capabilities/human.json)}" \
	  $(PY) -m flexagents.serve -b 127.0.0.1 -p $(PORT)

# The layering contracts and the types, then the whole suite (SQLite unless
# DATABASE_URL says otherwise), in parallel: each worker has its own test
# database and takes one test file at a time, the longest first
# (tests/conftest.py).
test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy planner/ flexagents/pagination.py runs/filters.py runs/engine/ runs/transitions.py runs/services.py runs/events.py runs/notify.py runs/grip.py runs/replanning.py runs/governance.py hitl/services.py hitl/presenters.py flexagents/startup.py flexagents/idempotency.py runs/notifications.py \
		runs/task_wait.py runs/task_forms.py runs/task_pages.py runs/human_tasks.py clients/python/src/flexagents_sdk examples/agents/hashtags.py
	PYTHON=$(PY) bash scripts/check-ts-client.sh
	bash scripts/ensure-browser.sh
	$(PYTEST)

# Everything but the multi-process and browser tests.
test-fast: setup
	$(PYTEST) -m "not slow and not browser"

# The reference SPA on its own origin, http://127.0.0.1:$(SPA_PORT)/spa/ (docs/spa.md; needs node).
spa:
	bash scripts/build-spa.sh
	$(PYTHON) -m http.server $(SPA_PORT) --bind 127.0.0.1 --directory examples

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) db artifacts staticfiles
